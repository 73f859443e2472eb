/** z for a two-sided 95% interval. */
const Z95 = 1.959963984540054;

/** A proportion with its Wilson score interval; all null when there is nothing to measure (n = 0). */
export interface Proportion {
  /** Successes and trials, so a reader can recompute or pool. */
  k: number;
  n: number;
  value: number | null;
  low: number | null;
  high: number | null;
}

/**
 * k successes in n trials with the Wilson score interval (Wilson 1927), which, unlike the normal
 * approximation, stays inside [0, 1] and keeps its coverage for small n and for proportions near 0 or 1 (a
 * precision of 12/12 is not "1 ± 0").
 */
export function wilson(k: number, n: number, z = Z95): Proportion {
  if (!Number.isInteger(k) || !Number.isInteger(n) || k < 0 || n < 0 || k > n) {
    throw new Error(`wilson: need integers 0 <= k <= n, got k=${k}, n=${n}`);
  }
  if (n === 0) return { k, n, value: null, low: null, high: null };
  const p = k / n;
  const z2 = z * z;
  const denominator = 1 + z2 / n;
  const center = (p + z2 / (2 * n)) / denominator;
  const half = (z * Math.sqrt((p * (1 - p)) / n + z2 / (4 * n * n))) / denominator;
  // Clamp rounding dust: at k = 0 or k = n the bound is exactly 0 or 1.
  return { k, n, value: p, low: k === 0 ? 0 : Math.max(0, center - half), high: k === n ? 1 : Math.min(1, center + half) };
}
