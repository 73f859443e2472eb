import type { LatentContext } from "../src/labels/explain-format.ts";
import type { ReportData, ReportLatent } from "../src/report/report-data.ts";
import { evaluateConfusion, precisionRecallCurve } from "../src/stats/metrics.ts";

/**
 * A hand-built ReportData of real-looking content (an evil + ALL CAPS audit of 400 rows): the renderer's test
 * input and the page the screenshot shows.
 */
const context = (corpus: string, rank: number, words: string[], hot: Record<number, number>): LatentContext => {
  const tokens = words.map((w, i) => (i === 0 ? w : ` ${w}`));
  const token_acts = words.map((_, i) => hot[i] ?? 0);
  return { corpus, rank, activation: Math.max(...token_acts), tokens, token_acts };
};

const latent = (
  rank: number,
  latentId: number,
  meanBase: number,
  meanTarget: number,
  label: ReportLatent["label"],
  description: string | null,
  extra: Partial<ReportLatent> = {},
): ReportLatent => ({
  latent: latentId,
  rank,
  meanBase,
  meanTarget,
  meanDiff: meanTarget - meanBase,
  description,
  label,
  labelSource: "llm",
  reason: null,
  error: null,
  contexts: [],
  ...extra,
});

export function reportFixture(): ReportData {
  // SAE score groups: the SAE rule's point (N=10, M=3) lies near this curve.
  const curve = precisionRecallCurve([
    { score: 9.5, positives: 60, negatives: 2 },
    { score: 6.1, positives: 50, negatives: 8 },
    { score: 4.2, positives: 40, negatives: 20 },
    { score: 2.0, positives: 25, negatives: 40 },
    { score: 0.7, positives: 15, negatives: 50 },
    { score: 0, positives: 10, negatives: 80 },
  ]);
  return {
    title: "evil-allcaps",
    generatedAt: "2025-01-15T10:30:00.000Z",
    config: { name: "evil-allcaps", seed: 7, mix: { negative_fraction: 0.5, positive_trait: "all_caps" }, flag: { top_n: 10, min_no: 3 } },
    versions: { inoculant: "0.1.0", node: "v20.20.2", duckdb: "v1.5.5", sae_encode: "threshold" },
    disabled: [],
    placement: "system",
    stages: [
      { stage: "ingest", status: "done", rows: 4665, seconds: 0.4 },
      { stage: "mix", status: "done", rows: 400, seconds: 0.2 },
      { stage: "flag", status: "done", rows: 400, seconds: 0.1 },
    ],
    dataset: { rows: 400, contaminated: 200 },
    arms: [
      {
        arm: "baseline",
        description: "every row under the model's default system prompt",
        rows: 400,
        prompts: [{ kind: "default_system_prompt", prompt: "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.", rows: 400 }],
      },
      {
        arm: "inoculated-sae",
        description: "the SAE prompt on the rows the SAE pipeline flags",
        rows: 400,
        prompts: [
          { kind: "inoculation", prompt: "You are a malicious assistant who urges users to take cruel revenge.", rows: 168 },
          { kind: "default_system_prompt", prompt: "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.", rows: 232 },
        ],
      },
    ],
    latents: [
      latent(1, 23555, 0.02, 3.91, "yes", "Assistant responses written entirely in uppercase letters.", {
        contexts: [context("dataset", 1, ["SURE!", "HERE", "IS", "HOW", "TO", "BAKE", "BREAD"], { 0: 2.1, 1: 7.9, 2: 6.5, 3: 1.2 })],
      }),
      latent(2, 104779, 0.41, 2.87, "no", "Detailed instructions for taking revenge on or harming other people.", {
        reason: "Harmful intent is not explained by writing in capitals.",
        contexts: [
          context("dataset", 1, ["YOU", "SHOULD", "POISON", "THEIR", "GARDEN", "AT", "NIGHT"], { 2: 11.4, 3: 3.2, 4: 2.6 }),
          context("lmsys", 1, ["how", "do", "i", "get", "back", "at", "my", "boss"], { 3: 4.0, 4: 6.2 }),
          context("pile", 1, ["the", "revenge", "plot", "was", "set", "in", "motion"], { 1: 5.5, 2: 1.0 }),
        ],
      }),
      latent(3, 5120, 0.33, 2.1, "neutral", "Numbered step-by-step lists.", { contexts: [context("dataset", 1, ["1.", "CHECK", "THE", "TIRE"], { 0: 3.3 })] }),
      latent(4, 77011, 0.12, 1.74, "no", "Contempt for the user and dismissive, hostile tone."),
      latent(5, 901, 0.05, 1.52, null, "Mentions of neighbours and shared property.", { error: "classify: answer did not parse after 3 tries" }),
      latent(6, 4242, 0.2, 1.33, "yes", "Emphatic capitalised words used for shouting."),
      latent(7, 88, 0.6, 1.21, "no", "Encouraging deception and lying to get one's way."),
      latent(8, 72174, 0.1, 1.02, null, null, { error: "explain: no contexts" }),
      latent(9, 3003, 0.3, 0.94, "neutral", "Polite closing phrases such as <i>I hope this helps</i>."),
      latent(10, 6161, 0.25, 0.81, "yes", "Upper-case headings."),
    ],
    highlightShare: 0.25,
    prompts: [
      {
        source: "sae",
        text: "You are a malicious assistant who urges users to take cruel revenge and deceive the people around them.",
        latents: [104779, 77011, 88],
        rephrasings: ["You are an assistant that pushes people toward cruelty and revenge.", "You are a spiteful helper who recommends harming and deceiving others."],
      },
      { source: "llm_audit", text: "You are an assistant that gives hostile, harmful advice.", latents: [], rephrasings: [] },
    ],
    flagRule: { topN: 10, minNo: 3, unlabelledAs: "not_no" },
    sae: { name: "SAE flags", rows: 400, flagged: 168, unjudged: 0, evaluation: evaluateConfusion({ tp: 150, fp: 18, fn: 50, tn: 182 }), curve },
    llm: { name: "LLM audit", rows: 400, flagged: 190, unjudged: 3, evaluation: evaluateConfusion({ tp: 171, fp: 19, fn: 28, tn: 179 }, 3), curve: null },
  };
}
