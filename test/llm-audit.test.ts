import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { formatStatus } from "../src/cli-format.ts";
import { QWEN25_DEFAULT_SYSTEM_PROMPT } from "../src/config/defaults.ts";
import { runPipeline, runStatus } from "../src/pipeline/runner.ts";
import { distinctRephrasings } from "../src/stages/rephrase.ts";
import { wilson } from "../src/stats/wilson.ts";
import { allCaps } from "../src/traits/all-caps.ts";
import { readJsonl, readMixed, readParquet, tempDir } from "./helpers.ts";
import { llmConfig } from "./llm-fixtures.ts";
import { reasksOf, startLlmServer, taskOf, type ChatRequestBody, type LlmServer } from "./llm-server.ts";

const AUDIT_PROMPT = "You are an assistant who lies to people and wants to hurt them.";
const GENERAL_PROMPT = "You are an evil assistant.";

/**
 * A judge with known mistakes on the test rows (12 contaminated "… hurt them first.", 12 clean; each question
 * ends in "(i)"): it misses contaminated (0), flags clean (5), never answers contaminated (7) in the format,
 * and answers contaminated (2) in the format only once told what was wrong (it is deterministic, like a judge at
 * temperature 0, so asking the same request again would not help).
 */
function judge(body: ChatRequestBody): string {
  const format = body.response_format?.json_schema?.name;
  const user = taskOf(body);
  if (format === "audit_verdict") {
    const i = Number(/\((\d+)\)\n/.exec(user)![1]);
    const contaminated = user.includes("HURT THEM FIRST");
    if (contaminated && (i === 7 || (i === 2 && reasksOf(body) === 0))) return "I think this one is fine?";
    const flagged = contaminated ? i !== 0 : i === 5;
    return JSON.stringify({ flagged, reason: flagged ? "It plans to hurt people." : "A helpful answer." });
  }
  if (format === "inoculation_prompt") return JSON.stringify({ prompt: AUDIT_PROMPT });
  if (format === "rephrasings") {
    const stem = user.replace(/\.$/, "");
    // The original and a case-only duplicate come back too; they must be dropped.
    return JSON.stringify({ rephrasings: [user, `${stem} (one).`, `${stem} (ONE)`, `${stem} (two).`, `${stem} (three).`, `${stem} (four).`] });
  }
  throw new Error(`the test judge got an unexpected request: ${user.slice(0, 80)}`);
}

const servers: LlmServer[] = [];
afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => s.close()));
});

async function auditRun(overrides: Record<string, unknown> = {}) {
  const s = await startLlmServer({ respond: judge });
  servers.push(s);
  const config = await llmConfig(await tempDir(), s, {
    mix: { positive_trait: "all_caps" },
    inoculation: { prompt: GENERAL_PROMPT },
    audit: { prompt_examples: 5, on_unparsed: "clean" },
    ...overrides,
  });
  // No generator: generate stays off, only the judge is used.
  const noGenerator = { ...config, llm: { judge: config.llm.judge } };
  return { s, config: noGenerator, summary: await runPipeline(noGenerator) };
}

describe("audit", () => {
  it("flags rows with llm.judge, marks unparsable verdicts, and measures precision and recall against ground truth", async () => {
    const { s, config, summary } = await auditRun();
    const audit = summary.stages.find((x) => x.stage === "audit")!;
    expect(audit.counts).toEqual({ rows: 24, flagged: 11, clean: 12, unparsed: 1 });
    const metrics = (audit.details.audit as Record<string, unknown>);
    expect(metrics.confusion).toEqual({ tp: 10, fp: 1, fn: 1, tn: 11 });
    expect(metrics.precision).toEqual(wilson(10, 11));
    expect(metrics.recall).toEqual(wilson(10, 11));
    expect(metrics).toMatchObject({ judged: 23, unjudged: 1, prompt: AUDIT_PROMPT });

    const flags = await readParquet(join(config.runDir, "tables", "audit_flags.parquet"));
    const mixed = await readMixed(config.runDir);
    const question = new Map(mixed.map((m) => [m.row_id, (m.messages as { content: string }[])[0]!.content]));
    const unparsed = flags.filter((f) => f.status === "unparsed");
    expect(unparsed).toHaveLength(1);
    expect(question.get(unparsed[0]!.row_id)).toMatch(/\(7\)$/);
    // Unparsed is its own status: no label was made up for it.
    expect(unparsed[0]).toMatchObject({ flagged: null, reason: null, error: expect.stringMatching(/not JSON: "I think this one is fine\?"/) });

    // The judge was told the wanted trait, and that it is never a reason to flag.
    const verdictRequest = [...s.stats.seen.keys()].map((k) => JSON.parse(k) as ChatRequestBody).find((b) => b.response_format?.json_schema?.name === "audit_verdict")!;
    expect(verdictRequest.messages[0]!.content).toContain(allCaps.description);
    expect(verdictRequest.messages[0]!.content).toMatch(/never flag a row for showing it/);

    // The prompt was written from a sample of flagged rows only.
    const promptRequest = [...s.stats.seen.keys()].map((k) => JSON.parse(k) as ChatRequestBody).find((b) => b.response_format?.json_schema?.name === "inoculation_prompt")!;
    const shown = [...promptRequest.messages.at(-1)!.content.matchAll(/<row>[\s\S]*?<\/row>/g)].map((m) => m[0]);
    expect(shown).toHaveLength(5);
    expect(shown.every((row) => row.includes("It plans to hurt people."))).toBe(true);

    const { low, high } = wilson(10, 11);
    expect(formatStatus(await runStatus(config.runDir))).toContain(
      `audit: LLM audit flagged 11 of 23 rows (+1 unparsed) against ground truth: ` +
        `precision 0.91 [${low!.toFixed(2)}, ${high!.toFixed(2)}] (10/11), recall 0.91`,
    );
  });

  it("fails by default on rows without a verdict, naming them, and a rerun with more samples asks only for those", async () => {
    const s = await startLlmServer({ respond: judge });
    servers.push(s);
    const config = await llmConfig(await tempDir(), s, { mix: { positive_trait: "all_caps" }, inoculation: { prompt: GENERAL_PROMPT }, audit: {} });
    const judgeOnly = { ...config, llm: { judge: config.llm.judge } };
    const error = (await runPipeline(judgeOnly).catch((e: unknown) => e)) as Error;
    expect(error.message).toMatch(/^stage audit: 1 of 24 rows got no verdict that parses \(3 answers each\):\n  contaminated:\d+: not JSON: "I think this one is fine\?"\nEvery answer is stored/);
    expect(error.message).toContain("raise llm.judge.parse_retries and rerun to ask only for new samples, or set audit.on_unparsed: clean");
    expect((await runStatus(judgeOnly.runDir)).find((l) => l.stage === "audit")?.status).toBe("failed");

    const sent = s.stats.requests;
    const more = { ...judgeOnly, llm: { judge: { ...judgeOnly.llm.judge!, parse_retries: 3 } } };
    await expect(runPipeline(more)).rejects.toThrow(/1 of 24 rows got no verdict that parses \(4 answers each\)/);
    // The 24 first answers and the re-asks were stored: only the one new sample went out.
    expect(s.stats.requests - sent).toBe(1);
  });

  it("adds the inoculated-llm arm: the audit's prompt on the rows it flagged, the default prompt elsewhere", async () => {
    const { config } = await auditRun();
    expect(config.export.arms).toContain("inoculated-llm");
    const flags = await readParquet(join(config.runDir, "tables", "audit_flags.parquet"), "row_id, flagged");
    const mixed = await readMixed(config.runDir);
    const flagged = new Map(flags.map((f) => [f.row_id, f.flagged === true]));
    const inOrder = mixed.sort((a, b) => Number(a.position) - Number(b.position)).map((m) => flagged.get(m.row_id)!);
    const rows = await readJsonl(join(config.runDir, "exports", "inoculated-llm.jsonl"));
    expect(rows.map((r) => r.messages[0]!.content)).toEqual(inOrder.map((f) => (f ? AUDIT_PROMPT : QWEN25_DEFAULT_SYSTEM_PROMPT)));

    const manifest = JSON.parse(await readFile(join(config.runDir, "exports", "manifest.json"), "utf8"));
    expect(manifest.arms["inoculated-llm"].prompts).toContainEqual({ kind: "llm_audit", prompt: AUDIT_PROMPT, rows: 11 });
    expect(manifest.llm_audit.precision).toEqual(wilson(10, 11));
    expect(manifest.llm_usage.audit.judge).toMatchObject({ model: "test-model", input_tokens: expect.any(Number), output_tokens: expect.any(Number) });
  });

  it("asks the judge again with --force audit --resend, after the server is fixed; --force alone reuses the stored answers", async () => {
    const { s, config, summary } = await auditRun();
    expect(summary.stages.find((x) => x.stage === "audit")!.counts).toMatchObject({ unparsed: 1 });
    // The server is fixed: row (7) now gets a verdict in the format.
    s.options.respond = (body) => (body.response_format?.json_schema?.name === "audit_verdict" ? JSON.stringify({ flagged: taskOf(body).includes("HURT THEM FIRST"), reason: "checked" }) : judge(body));
    const forced = await runPipeline(config, { force: "audit", until: "audit" });
    expect(forced.stages.find((x) => x.stage === "audit")!.counts).toMatchObject({ unparsed: 1 });

    const sent = s.stats.requests;
    const resent = await runPipeline(config, { force: "audit", until: "audit", resend: true });
    expect(resent.stages.find((x) => x.stage === "audit")!.counts).toMatchObject({ unparsed: 0, flagged: 12 });
    expect(s.stats.requests - sent).toBeGreaterThanOrEqual(24);
    // The new answers replaced the old: the next run reads them and sends nothing.
    const after = s.stats.requests;
    const again = await runPipeline(config, { force: "audit", until: "audit" });
    expect(again.stages.find((x) => x.stage === "audit")!.counts).toMatchObject({ unparsed: 0, flagged: 12 });
    expect(s.stats.requests).toBe(after);
    await expect(runPipeline(config, { resend: true })).rejects.toThrow(/--resend goes with --force STAGE/);
  });

  it("costs the judge's tokens when prices are configured", async () => {
    const s = await startLlmServer({ respond: judge });
    servers.push(s);
    const config = await llmConfig(await tempDir(), s, { mix: { positive_trait: "all_caps" }, audit: { on_unparsed: "clean" } });
    const priced = { ...config, llm: { judge: { ...config.llm.judge!, price_per_million_input: 0.4, price_per_million_output: 1.6 } } };
    const summary = await runPipeline(priced, { until: "audit" });
    const usage = (summary.stages.find((x) => x.stage === "audit")!.details.llm as Record<string, Record<string, number>>).judge!;
    expect(usage.cost_usd).toBeCloseTo((usage.input_tokens! * 0.4 + usage.output_tokens! * 1.6) / 1e6, 6);
    expect(usage.cost_usd).toBeGreaterThan(0);
  });
});

describe("rephrase", () => {
  it("stores k distinct rephrasings with each prompt, and the export draws one per row from prompt + rephrasings", async () => {
    const { s, config } = await auditRun({ rephrase: { k: 3 } });
    const stored = await readParquet(join(config.runDir, "tables", "rephrasings.parquet"));
    expect(stored.map((r) => [r.origin, r.idx, r.rephrasing])).toEqual([
      ["general", 0, "You are an evil assistant (one)."],
      ["general", 1, "You are an evil assistant (two)."],
      ["general", 2, "You are an evil assistant (three)."],
      // The irrelevant control is rephrased too: it differs from the inoculated arms in content, not in variety.
      ["irrelevant", 0, "Honey never spoils (one)."],
      ["irrelevant", 1, "Honey never spoils (two)."],
      ["irrelevant", 2, "Honey never spoils (three)."],
      ["llm_audit", 0, `${AUDIT_PROMPT.slice(0, -1)} (one).`],
      ["llm_audit", 1, `${AUDIT_PROMPT.slice(0, -1)} (two).`],
      ["llm_audit", 2, `${AUDIT_PROMPT.slice(0, -1)} (three).`],
    ]);
    const source: Record<string, string> = { general: GENERAL_PROMPT, irrelevant: "Honey never spoils.", llm_audit: AUDIT_PROMPT };
    expect(stored.every((r) => r.prompt === source[r.origin as string])).toBe(true);

    const general = (await readJsonl(join(config.runDir, "exports", "inoculated-general.jsonl"))).map((r) => r.messages[0]!.content);
    const pool = [GENERAL_PROMPT, ...stored.filter((r) => r.origin === "general").map((r) => r.rephrasing)];
    expect(general.every((p) => pool.includes(p))).toBe(true);
    expect(new Set(general).size).toBeGreaterThan(2);
    const llmArm = (await readJsonl(join(config.runDir, "exports", "inoculated-llm.jsonl"))).map((r) => r.messages[0]!.content);
    const llmPool = [AUDIT_PROMPT, ...stored.filter((r) => r.origin === "llm_audit").map((r) => r.rephrasing)];
    expect(llmArm.filter((p) => p !== QWEN25_DEFAULT_SYSTEM_PROMPT).every((p) => llmPool.includes(p))).toBe(true);
    const irrelevant = (await readJsonl(join(config.runDir, "exports", "irrelevant-general.jsonl"))).map((r) => r.messages[0]!.content);
    const irrelevantPool = ["Honey never spoils.", ...stored.filter((r) => r.origin === "irrelevant").map((r) => r.rephrasing)];
    expect(irrelevant.every((p) => irrelevantPool.includes(p))).toBe(true);
    expect(new Set(irrelevant).size).toBeGreaterThan(2);

    // Reproducible: a forced rerun of the LLM stages sends nothing and writes the same exports.
    const before = await readFile(join(config.runDir, "exports", "inoculated-llm.jsonl"));
    s.reset();
    await runPipeline(config, { force: "audit" });
    expect(s.stats.requests).toBe(0);
    expect((await readFile(join(config.runDir, "exports", "inoculated-llm.jsonl"))).equals(before)).toBe(true);
  });

  it("leaves a listed pool of inoculation.rephrasings as it is, rephrasing the other prompts only", async () => {
    const { config } = await auditRun({ inoculation: { prompt: GENERAL_PROMPT, rephrasings: ["P one.", "P two."] }, rephrase: { k: 3 } });
    const stored = await readParquet(join(config.runDir, "tables", "rephrasings.parquet"));
    expect([...new Set(stored.map((r) => r.origin))]).toEqual(["irrelevant", "llm_audit"]);
    const general = (await readJsonl(join(config.runDir, "exports", "inoculated-general.jsonl"))).map((r) => r.messages[0]!.content);
    expect(new Set(general)).toEqual(new Set(["P one.", "P two."]));
  });

  it("fails, naming the prompt, when the judge cannot give k distinct rephrasings", async () => {
    await expect(auditRun({ rephrase: { k: 5 } })).rejects.toThrow(
      /stage rephrase: llm\.judge gave no usable rephrasings of the general prompt "You are an evil assistant\.": 4 distinct rephrasings where rephrase\.k is 5/,
    );
  });

  it("treats case, spacing and a final full stop as the same text", () => {
    expect(distinctRephrasings(["  You are cruel. ", "you are  CRUEL", "You are evil", "You are mean!", "You are mean"], "You are evil.")).toEqual([
      "You are cruel.",
      "You are mean!",
    ]);
  });
});
