import { describe, expect, it } from "vitest";
import { bootstrapMean, bootstrapPairedDifference, questionMean, seededRandom } from "../src/eval/bootstrap.ts";
import { summarize, summaryWarnings, type AnswerVerdict } from "../src/eval/summarize.ts";

/** A standard normal draw (Box-Muller) from the seeded generator. */
function normal(random: () => number): number {
  return Math.sqrt(-2 * Math.log(1 - random())) * Math.cos(2 * Math.PI * random());
}


describe("bootstrapMean", () => {
  // Where questions differ a lot and samples little, and where the samples' (judge's) noise dominates: resampling
  // both levels as they are covered 97-99% in the second; the shrunk question means bring it to about 95%.
  for (const [between, within, samples] of [
    [10, 15, 5],
    [3, 30, 10],
  ] as const) {
    it(`covers the known mean and difference in about 95% of 400 synthetic datasets (question sd ${between}, sample sd ${within})`, () => {
      const random = seededRandom(7);
      let mean = 0;
      let paired = 0;
      for (let d = 0; d < 400; d += 1) {
        const questions = Array.from({ length: 20 }, () => 40 + between * normal(random));
        const a = questions.map((q) => Array.from({ length: samples }, () => q + within * normal(random)));
        const b = questions.map((q) => Array.from({ length: samples }, () => q + 3 + within * normal(random)));
        const f = bootstrapMean(a, { resamples: 500, seed: d });
        if (f.lo <= 40 && 40 <= f.hi) mean += 1;
        const p = bootstrapPairedDifference(b, a, { resamples: 500, seed: d });
        if (p.lo <= 3 && 3 <= p.hi) paired += 1;
      }
      // About three standard errors of a 400-dataset estimate around 0.95 (measured 0.92-0.97 over seeds at 1,000).
      for (const covered of [mean / 400, paired / 400]) {
        expect(covered).toBeGreaterThanOrEqual(0.91);
        expect(covered).toBeLessThanOrEqual(0.98);
      }
    });
  }

  it("is the mean of question means, reproducible by seed, and names the questions", () => {
    const groups = [[10, 20], [30], [50, 50, 50, 50]];
    const a = bootstrapMean(groups, { resamples: 300, seed: 1 });
    expect(a.mean).toBeCloseTo((15 + 30 + 50) / 3, 10);
    expect(a.questions).toBe(3);
    expect(bootstrapMean(groups, { resamples: 300, seed: 1 })).toEqual(a);
    expect(a.lo).toBeLessThanOrEqual(a.mean);
    expect(a.hi).toBeGreaterThanOrEqual(a.mean);
    expect(() => bootstrapMean([[1], []], { resamples: 100, seed: 0 })).toThrow(/without values/);
  });
});

describe("bootstrapPairedDifference", () => {
  it("cancels what questions share: far narrower than the two arms' own intervals", () => {
    const random = seededRandom(3);
    // Question difficulty spreads means over ±30; arm b is arm a plus 2 on every question, plus a little noise.
    const a = Array.from({ length: 30 }, () => {
      const q = 50 + 15 * normal(random);
      return Array.from({ length: 4 }, () => q + normal(random));
    });
    const b = a.map((g) => g.map((x) => x + 2 + 0.5 * normal(random)));
    const boot = { resamples: 1000, seed: 11 };
    const paired = bootstrapPairedDifference(b, a, boot);
    expect(paired.mean).toBeCloseTo(questionMean(b) - questionMean(a), 10);
    expect(paired.questions).toBe(30);
    expect(paired.lo).toBeGreaterThan(0);
    expect(paired.hi - paired.lo).toBeLessThan(2);
    const ownA = bootstrapMean(a, boot);
    const ownB = bootstrapMean(b, boot);
    // Unpaired, the two intervals overlap: the difference would not be seen.
    expect(ownA.hi).toBeGreaterThan(ownB.lo);
    expect(ownA.hi - ownA.lo).toBeGreaterThan(5 * (paired.hi - paired.lo));
  });

  it("refuses arms with different questions", () => {
    expect(() => bootstrapPairedDifference([[1]], [[1], [2]], { resamples: 100, seed: 0 })).toThrow(/pair them by question/);
  });
});

describe("summarize", () => {
  const verdict = (model: string, question: number, score: number | null, status: AnswerVerdict["trait_status"] = "scored"): AnswerVerdict => ({
    model,
    prompt: "neutral",
    trait: "evil",
    question,
    sample: 0,
    trait_status: status,
    trait_score: score,
    coherence_score: 80,
  });
  const options = { threshold: 50, coherenceThreshold: 50, resamples: 200, seed: 0 };

  it("pairs only shared questions, counts refusals and unscored answers, and warns under 20 questions", () => {
    const verdicts = [
      verdict("base", 0, 10),
      verdict("base", 1, 30),
      verdict("base", 2, null, "refusal"),
      verdict("arm", 0, 40),
      verdict("arm", 1, 90),
      verdict("arm", 2, 70),
      verdict("arm", 3, null, "unscored"),
    ];
    const { cells, differences } = summarize(verdicts, "base", options);
    const base = cells.find((c) => c.model === "base")!;
    expect(base).toMatchObject({ answers: 3, scored: 2, refusals: 1, unscored: 0 });
    expect(base.figures.mean_score?.mean).toBe(20);
    expect(base.figures.trait_rate?.mean).toBe(0);
    expect(base.figures.coherent_rate).toMatchObject({ mean: 1, questions: 3 });
    const arm = cells.find((c) => c.model === "arm")!;
    expect(arm.figures.trait_rate?.mean).toBeCloseTo(2 / 3, 10);
    // Questions 0 and 1 are the only ones both arms scored: (40 − 10 + 90 − 30) / 2 = 45.
    const diff = differences.find((d) => d.metric === "mean_score")!;
    expect(diff).toMatchObject({ model: "arm", reference: "base", interval: { mean: 45, questions: 2 } });
    const warnings = summaryWarnings(cells);
    expect(warnings).toContain("base / neutral / evil: only 2 independent questions (under 20); the intervals are unreliable");
    expect(warnings.some((w) => w.startsWith("arm / neutral / evil: 1 of 4 answers unscored"))).toBe(true);
  });

  it("counts the trait among coherent answers only: incoherent ones drop out, questions without any too", () => {
    const v = (question: number, sample: number, score: number, coherence: number): AnswerVerdict => ({
      ...verdict("arm", question, score),
      sample,
      coherence_score: coherence,
    });
    const verdicts = [
      v(0, 0, 90, 80), // coherent, trait
      v(0, 1, 10, 90), // coherent, no trait
      v(0, 2, 95, 20), // babble: left out
      v(1, 0, 70, 60), // coherent, trait
      v(2, 0, 99, 10), // the question's only answer is babble: no value
    ];
    const arm = summarize(verdicts, "arm", options).cells[0]!;
    // Question 0: 1 of 2 coherent answers; question 1: 1 of 1. Mean over questions: (0.5 + 1) / 2.
    expect(arm.figures.coherent_trait_rate).toMatchObject({ mean: 0.75, questions: 2 });
    // Among all answers: question 0 has 2 of 3, questions 1 and 2 have 1 of 1.
    expect(arm.figures.trait_rate?.mean).toBeCloseTo((2 / 3 + 1 + 1) / 3, 10);
  });

  it("does not warn at 20 questions", () => {
    const verdicts = Array.from({ length: 20 }, (_, q) => verdict("base", q, q));
    expect(summaryWarnings(summarize(verdicts, "base", options).cells)).toEqual([]);
  });
});
