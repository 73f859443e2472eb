import type { FlagMetrics } from "./flag-metrics.ts";
import { wilson, type Proportion } from "./wilson.ts";

/**
 * Flags against ground truth beyond precision and recall (src/stats/flag-metrics.ts): F1 with an interval, and
 * the precision-recall curve of a continuous score with its average precision.
 */

export type Confusion = FlagMetrics["confusion"];

/** F1 with a 95% interval. `k`/`n` are those of the Jaccard proportion the interval comes from (see f1Score). */
export interface F1 {
  value: number | null;
  low: number | null;
  high: number | null;
  jaccard: Proportion;
}

/**
 * F1 = 2TP / (2TP + FP + FN). F1 is not itself a proportion of trials, but it is a monotone function of one:
 * among the rows that are contaminated or flagged (TP + FP + FN of them), the share that are both, J = TP / (TP +
 * FP + FN), and F1 = 2J / (1 + J). So the interval is the Wilson 95% interval of J mapped through that function,
 * which keeps Wilson's behaviour at small counts and at 0 and 1. Null when no row is contaminated or flagged.
 */
export function f1Score(confusion: Confusion): F1 {
  const jaccard = wilson(confusion.tp, confusion.tp + confusion.fp + confusion.fn);
  const toF1 = (j: number | null) => (j === null ? null : (2 * j) / (1 + j));
  return { value: toF1(jaccard.value), low: toF1(jaccard.low), high: toF1(jaccard.high), jaccard };
}

/** flagMetrics plus F1: everything a report shows for one set of boolean flags. */
export interface FlagEvaluation extends FlagMetrics {
  f1: F1;
}

/**
 * The same numbers as flagMetrics, from counts rather than rows: on a big table the counts come from one SQL
 * aggregate, and the rows never need to reach JS.
 */
export function evaluateConfusion(confusion: Confusion, unjudged = 0): FlagEvaluation {
  const { tp, fp, fn, tn } = confusion;
  return {
    judged: tp + fp + fn + tn,
    unjudged,
    confusion: { tp, fp, fn, tn },
    precision: wilson(tp, tp + fp),
    recall: wilson(tp, tp + fn),
    f1: f1Score(confusion),
  };
}

/** Rows that share one score value, by ground truth. */
export interface ScoreGroup {
  score: number;
  positives: number;
  negatives: number;
}

/** One threshold of the curve: rows with score >= threshold are predicted contaminated. */
export interface PrPoint {
  threshold: number;
  tp: number;
  fp: number;
  precision: number;
  recall: number;
}

export interface PrCurve {
  /** One point per distinct score, highest threshold first (recall rises along the list). */
  points: PrPoint[];
  positives: number;
  negatives: number;
  /**
   * Average precision: the sum over thresholds of (recall gained) x (precision there), the step-wise area under
   * the curve without interpolation (as scikit-learn computes it). Null when no row is contaminated.
   */
  averagePrecision: number | null;
}

/** Groups row scores by value, for precisionRecallCurve (SQL can produce the groups directly on big tables). */
export function scoreGroups(rows: Iterable<{ score: number; truth: boolean }>): ScoreGroup[] {
  const groups = new Map<number, ScoreGroup>();
  for (const { score, truth } of rows) {
    const g = groups.get(score) ?? { score, positives: 0, negatives: 0 };
    if (truth) g.positives += 1;
    else g.negatives += 1;
    groups.set(score, g);
  }
  return [...groups.values()];
}

/**
 * The precision-recall curve of a score over all thresholds. Rows with equal scores are one step: a threshold
 * cannot separate them, so the curve never pretends an order among ties. The curve needs at least one
 * contaminated row (recall is undefined otherwise): with none, it has no points.
 */
export function precisionRecallCurve(groups: Iterable<ScoreGroup>): PrCurve {
  const merged = new Map<number, ScoreGroup>();
  for (const g of groups) {
    if (!Number.isFinite(g.score)) throw new Error(`precision-recall curve: score ${g.score} is not a finite number`);
    if (!isCount(g.positives) || !isCount(g.negatives)) throw new Error(`precision-recall curve: bad counts at score ${g.score}`);
    const m = merged.get(g.score) ?? { score: g.score, positives: 0, negatives: 0 };
    merged.set(g.score, { score: g.score, positives: m.positives + g.positives, negatives: m.negatives + g.negatives });
  }
  const sorted = [...merged.values()].filter((g) => g.positives + g.negatives > 0).sort((a, b) => b.score - a.score);
  const positives = sorted.reduce((n, g) => n + g.positives, 0);
  const negatives = sorted.reduce((n, g) => n + g.negatives, 0);
  if (positives === 0) return { points: [], positives, negatives, averagePrecision: null };
  const points: PrPoint[] = [];
  let tp = 0;
  let fp = 0;
  let ap = 0;
  for (const g of sorted) {
    tp += g.positives;
    fp += g.negatives;
    const precision = tp / (tp + fp);
    ap += (g.positives / positives) * precision;
    points.push({ threshold: g.score, tp, fp, precision, recall: tp / positives });
  }
  return { points, positives, negatives, averagePrecision: ap };
}

function isCount(n: number): boolean {
  return Number.isInteger(n) && n >= 0;
}
