import { wilson, type Proportion } from "./wilson.ts";

/** How flags compare with ground truth (`has_negative`), with Wilson 95% intervals. */
export interface FlagMetrics {
  /** Rows with a verdict; rows without one (unparsed) are counted apart and left out of the rates. */
  judged: number;
  unjudged: number;
  confusion: { tp: number; fp: number; fn: number; tn: number };
  /** Of the flagged rows, the share truly contaminated. */
  precision: Proportion;
  /** Of the truly contaminated rows, the share flagged. */
  recall: Proportion;
}

export function flagMetrics(rows: Iterable<{ flagged: boolean | null; truth: boolean }>): FlagMetrics {
  const confusion = { tp: 0, fp: 0, fn: 0, tn: 0 };
  let unjudged = 0;
  for (const { flagged, truth } of rows) {
    if (flagged === null) unjudged += 1;
    else if (flagged) confusion[truth ? "tp" : "fp"] += 1;
    else confusion[truth ? "fn" : "tn"] += 1;
  }
  const { tp, fp, fn, tn } = confusion;
  return {
    judged: tp + fp + fn + tn,
    unjudged,
    confusion,
    precision: wilson(tp, tp + fp),
    recall: wilson(tp, tp + fn),
  };
}
