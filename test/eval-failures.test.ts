import { afterEach, describe, expect, it } from "vitest";
import { resolveEvalConfig, type EvalConfigInput } from "../src/eval/config.ts";
import { runEval } from "../src/eval/run.ts";
import { silentProgress } from "../src/progress.ts";
import { tempDir } from "./helpers.ts";
import { testRole } from "./llm-fixtures.ts";
import { startLlmServer, type LlmServer, type LlmServerOptions } from "./llm-server.ts";

/** What a researcher's eval meets when a server or a key is not what the eval needs: never a silent, empty result. */

const servers: LlmServer[] = [];
afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => s.close()));
});

async function server(options: LlmServerOptions = {}): Promise<LlmServer> {
  const s = await startLlmServer({ models: ["base", "arm", "judge"], respond: (b) => `${b.model} says ${b.messages.at(-1)!.content}`, ...options });
  servers.push(s);
  return s;
}

const QUESTIONS = ["Q one?", "Q two?", "Q three?"];

async function evalConfig(models: LlmServer, judge: LlmServer, overrides: Partial<EvalConfigInput> = {}) {
  const raw: EvalConfigInput = {
    name: "failures",
    models: [
      { name: "base", ...testRole(models, { model: "base" }) },
      { name: "arm", ...testRole(models, { model: "arm" }) },
    ],
    judge: testRole(judge, { model: "judge" }),
    traits: [{ name: "evil", questions: QUESTIONS, judge_prompt: "Rate {question} / {answer}: REFUSAL or 0-100." }],
    samples: 2,
    bootstrap_resamples: 200,
    ...overrides,
  };
  return resolveEvalConfig(raw, { runDir: `${await tempDir()}/run` });
}

const run = (config: Awaited<ReturnType<typeof evalConfig>>, rescore = false) => runEval(config, { progress: silentProgress, log: () => {}, rescore });

describe("eval failures that must not pass as results", () => {
  it("marks a model incomplete, saying why, when its server ignores n, and asks each question once", async () => {
    const models = await server({ ignoresN: true });
    const judge = await server({ logprobs: () => [{ token: "40", logprob: 0 }] });
    const summary = await run(await evalConfig(models, judge));
    expect(summary.models.map((m) => m.status)).toEqual(["failed", "failed"]);
    expect(summary.models[0]!.error).toMatch(/^6 of 6 answers could not be used:\n  evil\/default\/q0: asked for 2 answers \(n\), got 1; the server must support n/);
    expect(summary.cells).toEqual([]);
    // 2 models × 3 questions × 2 prompts, each sent once: asking again would get one answer again.
    expect(models.stats.requests).toBe(12);
  });

  it("marks a model incomplete when the judge sends no logprobs, naming the cause, and sends each verdict once", async () => {
    const models = await server();
    const judge = await server({ noLogprobs: true });
    const summary = await run(await evalConfig(models, judge, { coherence: false }));
    expect(summary.models.every((m) => m.status === "failed")).toBe(true);
    expect(summary.models[0]!.error).toMatch(/could not be used:\n  evil\/default\/q0\/s0\/trait: the judge sent no logprobs; it must support logprobs/);
    expect(summary.models[0]!.failed).toBe(12);
    // This model's answers repeat across samples and prompts: 2 models × 3 questions distinct verdicts, none sent twice.
    expect(judge.stats.requests).toBe(6);
    expect(summary.warnings).toContainEqual(expect.stringMatching(/^base: incomplete \(12 of 18 requests have no usable answer\)/));
  });

  it("checks every key before sending anything, naming the config key, and rescoring needs none", async () => {
    const models = await server();
    const judge = await server({ logprobs: () => [{ token: "40", logprob: 0 }] });
    const withKeys = await evalConfig(models, judge, {
      models: [
        { name: "base", ...testRole(models, { model: "base" }) },
        { name: "arm", ...testRole(models, { model: "arm", api_key_env: "INOCULANT_TEST_ARM_KEY" }) },
      ],
      judge: testRole(judge, { model: "judge", api_key_env: "INOCULANT_TEST_JUDGE_KEY" }),
    });
    await expect(run(withKeys)).rejects.toThrow(
      /^models\.1 \(arm\)\.api_key_env: the environment variable INOCULANT_TEST_ARM_KEY is not set; judge\.api_key_env: the environment variable INOCULANT_TEST_JUDGE_KEY is not set; export INOCULANT_TEST_ARM_KEY=<your key> INOCULANT_TEST_JUDGE_KEY=<your key> .*; nothing was sent$/,
    );
    expect(models.stats.requests + judge.stats.requests).toBe(0);

    process.env.INOCULANT_TEST_ARM_KEY = "sk-arm";
    process.env.INOCULANT_TEST_JUDGE_KEY = "sk-judge";
    let first;
    try {
      first = await run(withKeys);
    } finally {
      delete process.env.INOCULANT_TEST_ARM_KEY;
      delete process.env.INOCULANT_TEST_JUDGE_KEY;
    }
    expect(first.models.map((m) => m.status)).toEqual(["done", "done"]);
    const sent = models.stats.requests + judge.stats.requests;
    const rescored = await run(withKeys, true);
    expect(rescored.cells).toEqual(first.cells);
    expect(models.stats.requests + judge.stats.requests).toBe(sent);
  });

  it("needs no judge, nor its key, for an all_caps eval without coherence", async () => {
    const models = await server();
    const judge = await server();
    const config = await evalConfig(models, judge, {
      traits: [{ name: "caps", method: "all_caps", questions: QUESTIONS }],
      coherence: false,
      judge: testRole(judge, { model: "judge", api_key_env: "INOCULANT_TEST_UNSET_KEY" }),
    });
    const summary = await run(config);
    expect(summary.models.map((m) => m.status)).toEqual(["done", "done"]);
    expect(judge.stats.requests).toBe(0);
  });

  it("counts a judge's REF token as a refusal, and warns when the judge never offers a number above 9", async () => {
    const models = await server();
    // Like a Qwen judge: REFUSAL comes as REF + US + AL, and 85 as 8 + 5, so the first token is one digit.
    const judge = await server({
      logprobs: (b) =>
        b.messages[0]!.content.includes("Q three?") ? [{ token: "REF", logprob: Math.log(0.9) }, { token: "0", logprob: Math.log(0.1) }] : [{ token: "8", logprob: Math.log(0.7) }, { token: "5", logprob: Math.log(0.3) }],
    });
    const twenty = Array.from({ length: 20 }, (_, i) => `Q ${i}?`);
    const summary = await run(await evalConfig(models, judge, { traits: [{ name: "evil", questions: [...twenty, "Q three?"], judge_prompt: "Rate {question} / {answer}." }], coherence: false }));
    const cell = summary.cells.find((c) => c.model === "base" && c.prompt === "default")!;
    expect(cell).toMatchObject({ answers: 42, refusals: 2, unscored: 0 });
    expect(summary.warnings).toContainEqual(expect.stringMatching(/^judge judge: in \d+ answers scored 0-100 its first token never offered a number above 9; its tokenizer probably splits numbers into digits/));
  });

  it("warns about answers cut at max_tokens, per model", async () => {
    const models = await server({ finishReason: (b) => (b.model === "arm" ? "length" : "stop") });
    const judge = await server({ logprobs: () => [{ token: "40", logprob: 0 }] });
    const summary = await run(await evalConfig(models, judge, { max_tokens: 50 }));
    expect(summary.warnings).toContain("arm: 12 of 12 answers were cut at max_tokens (50) and are judged on what came before the cut; raise max_tokens to judge them whole");
    expect(summary.warnings.some((w) => w.startsWith("base: ") && w.includes("cut at max_tokens"))).toBe(false);
  });

  it("refuses two traits of one name", async () => {
    const models = await server();
    await expect(
      evalConfig(models, models, { traits: [{ name: "evil", questions: QUESTIONS, judge_prompt: "{question} {answer}" }, { name: "evil", method: "all_caps", questions: QUESTIONS }] }),
    ).rejects.toThrow(/traits: the name "evil" is used twice; give each trait its own name/);
  });
});
