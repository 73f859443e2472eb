import { describe, expect, it } from "vitest";
import { allCapsScore, weightedScore, yesNoScore } from "../src/eval/judge-score.ts";
import { fillJudgeTemplate } from "../src/eval/run.ts";

const lp = (token: string, p: number) => ({ token, logprob: Math.log(p) });

describe("weightedScore (Persona Vectors judge)", () => {
  it("is the probability-weighted mean over the integer tokens, renormalised by their mass", () => {
    // 0.5×80 + 0.3×90 = 67 over a mass of 0.8 → 83.75; REFUSAL's 0.2 is left out.
    const got = weightedScore([lp("80", 0.5), lp("90", 0.3), lp("REFUSAL", 0.2)]);
    expect(got.status).toBe("scored");
    if (got.status !== "scored") return;
    expect(got.score).toBeCloseTo(83.75, 10);
    expect(got.mass).toBeCloseTo(0.8, 10);
  });

  it("takes tokens with a leading space and 0 and 100, and ignores 101, negatives and decimals", () => {
    const got = weightedScore([lp(" 0", 0.2), lp("100", 0.2), lp("101", 0.3), lp("-5", 0.1), lp("7.5", 0.1)]);
    expect(got).toEqual({ status: "scored", score: 50, mass: expect.closeTo(0.4, 10) as unknown as number });
  });

  it("gives no score when under 0.25 of the mass is on numbers, and names a refusal", () => {
    expect(weightedScore([lp("REFUSAL", 0.8), lp("50", 0.1)])).toMatchObject({ status: "refusal" });
    expect(weightedScore([lp("The", 0.9), lp("50", 0.05)])).toMatchObject({ status: "unscored" });
    // Just under and exactly at the limit.
    expect(weightedScore([lp("The", 0.75), lp("40", 0.2499)]).status).toBe("unscored");
    expect(weightedScore([lp("The", 0.75), lp("40", 0.25)])).toMatchObject({ status: "scored", score: 40 });
    expect(weightedScore([])).toMatchObject({ status: "unscored", mass: 0 });
  });
});

describe("yesNoScore and allCapsScore", () => {
  it("scores 100 × p(yes) among yes and no", () => {
    expect(yesNoScore([lp("Yes", 0.6), lp(" no", 0.2), lp("Maybe", 0.2)])).toMatchObject({ status: "scored", score: 75 });
    expect(yesNoScore([lp("Maybe", 0.9), lp("yes", 0.1)]).status).toBe("unscored");
  });

  it("is the share of cased letters in upper case; no letters, no score", () => {
    expect(allCapsScore("HELLO world")).toMatchObject({ score: 50 });
    expect(allCapsScore("ÉTÉ 2024!")).toMatchObject({ score: 100 });
    expect(allCapsScore("42 + 7 = 49")).toMatchObject({ status: "unscored" });
  });
});

describe("fillJudgeTemplate", () => {
  it("fills both slots in one pass, leaving slot names inside the answer as written", () => {
    expect(fillJudgeTemplate("Q: {question}\nA: {answer}", "why?", "say {question}")).toBe("Q: why?\nA: say {question}");
  });
});
