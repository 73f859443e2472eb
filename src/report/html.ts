/** HTML text helpers of the report. Every piece of data reaches the page through esc() or a number formatter. */

export function esc(text: string): string {
  return text.replaceAll("&", "&amp;").replaceAll("<", "&lt;").replaceAll(">", "&gt;").replaceAll('"', "&quot;").replaceAll("'", "&#39;");
}

/** Shown where a number is undefined (no ground truth, nothing flagged). */
export const NONE = "—";

export function fmtCount(n: number): string {
  return n.toLocaleString("en-US");
}

/** Proportions and rates: three decimals. */
export function fmtRate(x: number | null): string {
  return x === null ? NONE : x.toFixed(3);
}

/** Activations and differences: three significant digits, no exponent for ordinary magnitudes. */
export function fmtValue(x: number): string {
  if (x === 0) return "0";
  const abs = Math.abs(x);
  return abs >= 1000 || abs < 0.001 ? x.toPrecision(3) : String(Number(x.toPrecision(3)));
}

/** Mean activations in a table column: fixed decimals, so the column lines up. */
export function fmtMean(x: number): string {
  return x.toFixed(3);
}

export function fmtInterval(low: number | null, high: number | null): string {
  return low === null || high === null ? "" : `[${fmtRate(low)}, ${fmtRate(high)}]`;
}

/**
 * A number as the page shows it, with a stable `data-metric` name and the raw value in `data-value`, so a test
 * (or a script) can read every number back from the DOM and compare it with the run's tables.
 */
export function metric(name: string, value: number | null, shown: string): string {
  return `<span class="num" data-metric="${esc(name)}" data-value="${value === null ? "" : String(value)}">${esc(shown)}</span>`;
}
