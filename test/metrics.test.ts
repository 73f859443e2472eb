import { describe, expect, it } from "vitest";
import { flagMetrics } from "../src/stats/flag-metrics.ts";
import { evaluateConfusion, f1Score, precisionRecallCurve, scoreGroups } from "../src/stats/metrics.ts";

describe("F1 with a Wilson-based interval", () => {
  it("8 TP, 2 FP, 2 FN: F1 0.8; interval from Wilson(8 of 12) = [0.3906, 0.8619] mapped by 2J/(1+J)", () => {
    const f1 = f1Score({ tp: 8, fp: 2, fn: 2, tn: 100 });
    expect(f1.value).toBeCloseTo(0.8, 12);
    expect(f1.jaccard).toMatchObject({ k: 8, n: 12 });
    expect(f1.jaccard.low).toBeCloseTo(0.390622, 5);
    expect(f1.jaccard.high).toBeCloseTo(0.86188, 5);
    expect(f1.low).toBeCloseTo(0.561795, 5);
    expect(f1.high).toBeCloseTo(0.925817, 5);
  });

  it("no true positive: F1 0 with an upper bound; nothing flagged or contaminated: undefined", () => {
    const zero = f1Score({ tp: 0, fp: 3, fn: 2, tn: 5 });
    expect(zero.value).toBe(0);
    expect(zero.low).toBe(0);
    expect(zero.high).toBeCloseTo(0.605769, 5);
    expect(f1Score({ tp: 0, fp: 0, fn: 0, tn: 9 })).toMatchObject({ value: null, low: null, high: null });
  });

  it("evaluateConfusion gives flagMetrics' numbers from counts, plus F1", () => {
    const rows = [
      ...Array(6).fill({ flagged: true, truth: true }),
      ...Array(2).fill({ flagged: true, truth: false }),
      ...Array(3).fill({ flagged: false, truth: true }),
      ...Array(9).fill({ flagged: false, truth: false }),
      { flagged: null, truth: true },
    ];
    const fromRows = flagMetrics(rows);
    const e = evaluateConfusion({ tp: 6, fp: 2, fn: 3, tn: 9 }, 1);
    expect(e).toEqual({ ...fromRows, f1: e.f1 });
    expect(e.precision.value).toBe(6 / 8);
    expect(e.recall.value).toBe(6 / 9);
    expect(e.f1.value).toBeCloseTo(12 / 17, 12);
  });
});

describe("precision-recall curve", () => {
  // Scores with ground truth; 0.8 and 0.0 are ties of one contaminated and one clean row.
  const rows = [
    { score: 0.9, truth: true },
    { score: 0.8, truth: false },
    { score: 0.8, truth: true },
    { score: 0.5, truth: true },
    { score: 0.3, truth: false },
    { score: 0.0, truth: false },
    { score: 0.0, truth: true },
  ];

  it("one point per distinct score, ties as one step, and the step-wise average precision", () => {
    const curve = precisionRecallCurve(scoreGroups(rows));
    expect(curve.positives).toBe(4);
    expect(curve.negatives).toBe(3);
    expect(curve.points).toEqual([
      { threshold: 0.9, tp: 1, fp: 0, precision: 1, recall: 0.25 },
      { threshold: 0.8, tp: 2, fp: 1, precision: 2 / 3, recall: 0.5 },
      { threshold: 0.5, tp: 3, fp: 1, precision: 0.75, recall: 0.75 },
      { threshold: 0.3, tp: 3, fp: 2, precision: 0.6, recall: 0.75 },
      { threshold: 0.0, tp: 4, fp: 3, precision: 4 / 7, recall: 1 },
    ]);
    // (1 + 2/3 + 3/4 + 4/7) / 4: precision at each recall step, weighted by the recall gained there.
    expect(curve.averagePrecision).toBeCloseTo(0.747024, 6);
  });

  it("the row order does not matter, groups of the same score merge, and a perfect score has AP 1", () => {
    const shuffled = precisionRecallCurve(scoreGroups([...rows].reverse()));
    expect(shuffled).toEqual(precisionRecallCurve(scoreGroups(rows)));
    const split = precisionRecallCurve([
      { score: 2, positives: 1, negatives: 0 },
      { score: 2, positives: 1, negatives: 0 },
      { score: 1, positives: 0, negatives: 5 },
    ]);
    expect(split.points[0]).toEqual({ threshold: 2, tp: 2, fp: 0, precision: 1, recall: 1 });
    expect(split.averagePrecision).toBe(1);
  });

  it("no contaminated row: no curve; a non-finite score is an error", () => {
    expect(precisionRecallCurve(scoreGroups([{ score: 1, truth: false }]))).toEqual({ points: [], positives: 0, negatives: 1, averagePrecision: null });
    expect(() => precisionRecallCurve([{ score: Number.NaN, positives: 1, negatives: 0 }])).toThrow(/not a finite number/);
  });
});
