import type { PrCurve, PrPoint } from "../stats/metrics.ts";
import { esc, fmtRate } from "./html.ts";

/**
 * The precision-recall plot as inline SVG (no script, no external resource). Each method's curve is drawn as the
 * step function that average precision integrates (precision P_k over the recall gained at step k), and its
 * chosen operating point (the SAE rule's N/M, the LLM audit's verdicts) is marked on it.
 */
export interface PlotSeries {
  /** Short key for element ids: `sae`, `llm`. */
  key: string;
  name: string;
  color: string;
  curve: PrCurve | null;
  point: { precision: number; recall: number; label: string } | null;
}

const W = 460;
const H = 340;
const M = { left: 52, right: 16, top: 16, bottom: 44 };
const PW = W - M.left - M.right;
const PH = H - M.top - M.bottom;
/** Curves with more points than this are thinned for drawing (the page stays small); the numbers are unaffected. */
const MAX_DRAWN_POINTS = 1500;

const x = (recall: number) => (M.left + recall * PW).toFixed(1);
const y = (precision: number) => (M.top + (1 - precision) * PH).toFixed(1);

/** `prevalence`: the share of contaminated rows, the precision of flagging at random (drawn dashed). */
export function prPlotSvg(series: readonly PlotSeries[], prevalence: number | null): string {
  const grid = [0, 0.2, 0.4, 0.6, 0.8, 1]
    .map(
      (t) =>
        `<line class="grid" x1="${x(t)}" y1="${y(0)}" x2="${x(t)}" y2="${y(1)}"/><line class="grid" x1="${x(0)}" y1="${y(t)}" x2="${x(1)}" y2="${y(t)}"/>` +
        `<text class="tick" x="${x(t)}" y="${(M.top + PH + 16).toFixed(1)}" text-anchor="middle">${t.toFixed(1)}</text>` +
        `<text class="tick" x="${(M.left - 8).toFixed(1)}" y="${(Number(y(t)) + 4).toFixed(1)}" text-anchor="end">${t.toFixed(1)}</text>`,
    )
    .join("");
  const axes =
    `<rect class="frame" x="${M.left}" y="${M.top}" width="${PW}" height="${PH}"/>` +
    `<text class="axis" x="${(M.left + PW / 2).toFixed(1)}" y="${H - 6}" text-anchor="middle">recall</text>` +
    `<text class="axis" transform="translate(14 ${(M.top + PH / 2).toFixed(1)}) rotate(-90)" text-anchor="middle">precision</text>`;
  const base =
    prevalence === null
      ? ""
      : `<line class="baseline" x1="${x(0)}" y1="${y(prevalence)}" x2="${x(1)}" y2="${y(prevalence)}"><title>random flags: precision ${fmtRate(prevalence)}</title></line>`;
  const curves = series
    .filter((s) => s.curve && s.curve.points.length > 0)
    .map((s) => `<path id="pr-curve-${esc(s.key)}" class="curve" stroke="${s.color}" d="${stepPath(thin(s.curve!.points))}"><title>${esc(s.name)}</title></path>`)
    .join("");
  const points = series
    .filter((s) => s.point)
    .map((s) => {
      const p = s.point!;
      return (
        `<g id="pr-point-${esc(s.key)}" data-precision="${p.precision}" data-recall="${p.recall}">` +
        `<circle cx="${x(p.recall)}" cy="${y(p.precision)}" r="6" fill="${s.color}" stroke="#fff" stroke-width="2"/>` +
        `<title>${esc(s.name)}: ${esc(p.label)}: precision ${fmtRate(p.precision)}, recall ${fmtRate(p.recall)}</title></g>`
      );
    })
    .join("");
  const legend = series
    .map(
      (s, i) =>
        `<g transform="translate(${M.left + 10} ${M.top + PH - 14 - 18 * (series.length - 1 - i)})"><line x1="0" y1="0" x2="18" y2="0" stroke="${s.color}" stroke-width="2.5"/>` +
        `<circle cx="9" cy="0" r="4" fill="${s.color}"/><text class="legend" x="24" y="4">${esc(s.name)}${s.point ? ` (dot: ${esc(s.point.label)})` : ""}</text></g>`,
    )
    .join("");
  return (
    `<svg id="pr-plot" class="plot" viewBox="0 0 ${W} ${H}" width="${W}" height="${H}" role="img" aria-label="precision-recall curves">` +
    grid + axes + base + curves + points + legend +
    `</svg>`
  );
}

/** From (recall 0, first precision) across each recall step at that step's precision. */
function stepPath(points: readonly PrPoint[]): string {
  let d = `M${x(0)} ${y(points[0]!.precision)}`;
  for (const p of points) d += `V${y(p.precision)}H${x(p.recall)}`;
  return d;
}

/** Keeps a point only when the curve moved visibly (a thousandth of the plot) since the last kept one. */
function thin(points: readonly PrPoint[]): PrPoint[] {
  if (points.length <= MAX_DRAWN_POINTS) return [...points];
  const kept: PrPoint[] = [points[0]!];
  for (const p of points.slice(1, -1)) {
    const last = kept.at(-1)!;
    if (Math.abs(p.recall - last.recall) >= 1e-3 || Math.abs(p.precision - last.precision) >= 1e-3) kept.push(p);
  }
  kept.push(points.at(-1)!);
  return kept;
}
