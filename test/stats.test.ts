import { describe, expect, it } from "vitest";
import { flagMetrics } from "../src/stats/flag-metrics.ts";
import { wilson } from "../src/stats/wilson.ts";

describe("Wilson score interval (95%)", () => {
  // Reference values: Newcombe (1998), Table I, method 3 (the score interval), and the textbook 8/10 and 10/10.
  it.each([
    [81, 263, 0.2553, 0.3662],
    [15, 148, 0.0624, 0.1605],
    [0, 20, 0, 0.1611],
    [1, 29, 0.0061, 0.1718],
    [8, 10, 0.4902, 0.9433],
    [10, 10, 0.7225, 1],
  ])("%i of %i: [%f, %f]", (k, n, low, high) => {
    const p = wilson(k, n);
    expect(p.value).toBe(k / n);
    expect(p.low).toBeCloseTo(low, 4);
    expect(p.high).toBeCloseTo(high, 4);
  });

  it("has no value and no interval for n = 0, and rejects impossible counts", () => {
    expect(wilson(0, 0)).toEqual({ k: 0, n: 0, value: null, low: null, high: null });
    expect(() => wilson(3, 2)).toThrow(/0 <= k <= n/);
    expect(() => wilson(1.5, 4)).toThrow(/integers/);
  });
});

describe("flag metrics", () => {
  it("counts the confusion matrix over judged rows and leaves unjudged rows out of the rates", () => {
    const rows = [
      { flagged: true, truth: true },
      { flagged: true, truth: true },
      { flagged: true, truth: false },
      { flagged: false, truth: true },
      { flagged: false, truth: false },
      { flagged: null, truth: true },
    ];
    const m = flagMetrics(rows);
    expect(m).toMatchObject({ judged: 5, unjudged: 1, confusion: { tp: 2, fp: 1, fn: 1, tn: 1 } });
    expect(m.precision).toEqual(wilson(2, 3));
    expect(m.recall).toEqual(wilson(2, 3));
  });
});
