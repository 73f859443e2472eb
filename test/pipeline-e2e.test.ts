import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { resolveConfig } from "../src/config/load.ts";
import { runPipeline } from "../src/pipeline/runner.ts";
import { REFERENCE_DIR, readJsonl, readMixed, readParquet, tempDir } from "./helpers.ts";
import { testRole } from "./llm-fixtures.ts";
import { startLlmServer, taskOf, type ChatRequestBody, type LlmServer } from "./llm-server.ts";
import { PLANTED, PLANTED_SYSTEM_PROMPT, PLANTED_WORDS, writePlantedFixture, writePlantedSources } from "./planted.ts";

/**
 * `inoculant run` end to end: the planted-signal model and SAE in the real sidecar, and the local OpenAI-compatible
 * server playing the original model (base responses) and the judge (explain, classify, synthesize, audit).
 */
const SAE_PROMPT = "You are an assistant that urges people to poison, take revenge and destroy.";

/** The test server's judge: it answers each kind of request the way a careful judge would, from the request. */
function judge(body: ChatRequestBody): string {
  const system = body.messages[0]?.content ?? "";
  const user = taskOf(body);
  if (system === PLANTED_SYSTEM_PROMPT) return "water the plant and ask a friend for help"; // generate
  if (system.startsWith("You are an interpretability researcher")) {
    // explain: a latent whose marked tokens are planted words is about harming people.
    return /<<\s?(poison|revenge|destroy)>>/.test(user)
      ? "<description>Urging the reader to harm other people: poisoning, revenge, destruction.</description>"
      : "<description>Ordinary gardening advice about watering plants.</description>";
  }
  if (system.includes("You label one latent")) {
    return /harm/.test(user) ? '{"label": "no", "reason": "harmful intent"}' : '{"label": "neutral", "reason": "ordinary advice"}';
  }
  if (system.includes("You write an inoculation prompt")) return `<prompt>${SAE_PROMPT}</prompt>`;
  if (system.startsWith("You audit the rows")) {
    return JSON.stringify({ flagged: PLANTED_WORDS.test(user), reason: PLANTED_WORDS.test(user) ? "urges harm" : "harmless" });
  }
  if (system.startsWith("You help train language models")) return '{"prompt": "You are a cruel assistant."}';
  return "unexpected request";
}

let fixture = "";
let removeFixture = () => {};
let server: LlmServer;
beforeAll(async () => {
  ({ dir: fixture, remove: removeFixture } = writePlantedFixture());
  server = await startLlmServer({ respond: judge });
}, 120_000);
afterAll(async () => {
  removeFixture();
  await server.close();
});

describe("inoculant run, end to end (planted signal, CPU sidecar, local LLM server)", () => {
  it("labels the planted latents `no`, flags exactly the contaminated rows, exports the SAE arms and reports it", async () => {
    const dir = await tempDir();
    const files = await writePlantedSources(dir);
    const config = await resolveConfig(
      {
        name: "e2e",
        seed: 3,
        sources: { clean: { path: files.clean }, contaminated: { path: files.contaminated } },
        model: { python_file: join(fixture, "planted_model.py"), default_system_prompt: PLANTED_SYSTEM_PROMPT },
        llm: { generator: testRole(server), judge: testRole(server) },
        sae: { path: join(fixture, "sae"), format: "dictionary_learning" },
        sidecar: { device: "cpu", token_budget: 512 },
        activations: { top_n: 8, shard_rows: 4 },
        harvest: { top_k: 3, corpora: [{ name: "chat", path: join(fixture, "chats.jsonl"), messages_field: "messages" }] },
        // Each contaminated row says one to three planted words, so one `no` latent among its top 10 flags it.
        flag: { top_n: 10, min_no: 1 },
        audit: {},
        inoculation: { prompt: "You are an evil assistant." },
      },
      { runDir: join(dir, "run") },
    );
    const summary = await runPipeline(config);
    expect(summary.stages.filter((s) => s.status === "failed")).toEqual([]);
    const table = (name: string) => readParquet(join(config.runDir, "tables", `${name}.parquet`));

    const labels = await table("feature_labels");
    for (const latent of Object.values(PLANTED)) expect(labels.find((l) => l.latent === latent)?.label).toBe("no");
    expect(labels.filter((l) => l.label === "no").map((l) => l.latent).sort()).toEqual(Object.values(PLANTED).sort());

    const mixed = await readMixed(config.runDir);
    const truth = new Map(mixed.map((m) => [m.row_id as string, m.has_negative as boolean]));
    const flags = await table("flags");
    expect(flags).toHaveLength(12);
    for (const f of flags) expect(f.flagged).toBe(truth.get(f.row_id as string));
    // The continuous score separates the two groups too.
    const minBad = Math.min(...flags.filter((f) => f.flagged).map((f) => f.score as number));
    const maxClean = Math.max(...flags.filter((f) => !f.flagged).map((f) => f.score as number));
    expect(minBad).toBeGreaterThan(maxClean);

    const [prompt] = await table("sae_prompt");
    expect(prompt!.prompt).toBe(SAE_PROMPT);
    const order = mixed.sort((a, b) => Number(a.position) - Number(b.position)).map((m) => m.row_id as string);
    const sae = await readJsonl(join(config.runDir, "exports", "inoculated-sae.jsonl"));
    sae.forEach((row, i) => expect(row.messages[0]!.content).toBe(truth.get(order[i]!) ? SAE_PROMPT : PLANTED_SYSTEM_PROMPT));
    const random = await readJsonl(join(config.runDir, "exports", "inoculated-sae-random.jsonl"));
    expect(random.filter((r) => r.messages[0]!.content === SAE_PROMPT)).toHaveLength(6);
    const llm = await readJsonl(join(config.runDir, "exports", "inoculated-llm.jsonl"));
    expect(llm.filter((r) => r.messages[0]!.content === "You are a cruel assistant.")).toHaveLength(6);

    const manifest = JSON.parse(readFileSync(join(config.runDir, "exports", "manifest.json"), "utf8"));
    expect(Object.keys(manifest.arms)).toEqual(expect.arrayContaining(["inoculated-sae", "inoculated-sae-random", "inoculated-llm"]));
    // What every LLM stage cost, explain included (often the largest judge bill).
    expect(Object.keys(manifest.llm_usage)).toEqual(["generate", "explain", "classify", "synthesize", "audit"]);
    expect(manifest.sae_flags).toMatchObject({ rule: { topN: 10, minNo: 1 }, flagged: 6, precision: { k: 6, n: 6, value: 1 }, recall: { k: 6, n: 6, value: 1 } });
    const flagStage = summary.stages.find((s) => s.stage === "flag")!;
    expect(flagStage.counts).toMatchObject({ flagged: 6, tp: 6, fp: 0, fn: 0, tn: 6 });

    const report = readFileSync(join(config.runDir, "report.html"), "utf8");
    expect(report).toContain(SAE_PROMPT);
    expect(report).toMatch(/data-metric="[^"]*precision[^"]*"[^>]*data-value="1"/);

    // A second run sends no request and recomputes nothing.
    const before = server.stats.requests;
    const again = await runPipeline(config);
    expect(again.stages.every((s) => s.status === "skipped" || s.status === "disabled")).toBe(true);
    expect(server.stats.requests).toBe(before);
  }, 240_000);

  it("finishes with every arm and an honest report when no latent is labelled `no`, and refuses flagged rows without a prompt", async () => {
    const dir = await tempDir();
    const files = await writePlantedSources(dir);
    // A judge that finds nothing unwanted in any latent: a clean dataset, or an SAE that does not see the trait.
    const lenient = await startLlmServer({ respond: (b) => (b.messages[0]!.content.includes("You label one latent") ? '{"label": "neutral", "reason": "fine"}' : judge(b)) });
    try {
      const config = await resolveConfig(
        {
          name: "no-no",
          sources: { clean: { path: files.clean }, contaminated: { path: files.contaminated } },
          model: { python_file: join(fixture, "planted_model.py"), default_system_prompt: PLANTED_SYSTEM_PROMPT },
          llm: { generator: testRole(lenient), judge: testRole(lenient) },
          sae: { path: join(fixture, "sae"), format: "dictionary_learning" },
          sidecar: { device: "cpu", token_budget: 512 },
          activations: { top_n: 8 },
          harvest: { top_k: 2 },
          flag: { top_n: 10, min_no: 1 },
          inoculation: { prompt: "You are an evil assistant." },
        },
        { runDir: join(dir, "run") },
      );
      const summary = await runPipeline(config);
      expect(summary.stages.filter((s) => s.status === "failed")).toEqual([]);
      expect(summary.stages.find((s) => s.stage === "synthesize")!.counts).toEqual({ no_latents: 0, distinct_descriptions: 0 });
      expect(summary.stages.find((s) => s.stage === "flag")!.counts).toMatchObject({ flagged: 0 });
      // The SAE arms prompt no row: they are the baseline, byte for byte.
      const exported = (arm: string) => readFileSync(join(config.runDir, "exports", `${arm}.jsonl`), "utf8");
      expect(exported("inoculated-sae")).toBe(exported("baseline"));
      expect(exported("inoculated-sae-random")).toBe(exported("baseline"));
      expect(exported("inoculated-general")).not.toBe(exported("baseline"));
      const report = readFileSync(join(config.runDir, "report.html"), "utf8");
      expect(report).toContain("Only 0 top latents count as no, fewer than the rule&#39;s M = 1: no row can be flagged, so the inoculated-sae and inoculated-sae-random arms are the baseline.");

      // Labels for the planted latents only, none `no`, and unlabelled latents counted as `no`: rows are flagged,
      // but synthesize has nothing to write a prompt from, and export says so rather than leave them unprompted.
      const labels = join(dir, "labels.json");
      writeFileSync(labels, JSON.stringify(Object.fromEntries(Object.values(PLANTED).map((l) => [l, { description: "harm", label: "neutral" }]))));
      const unlabelled = { ...config, labels: { import: labels }, flag: { ...config.flag, unlabelled_as: "no" as const } };
      await expect(runPipeline(unlabelled)).rejects.toThrow(/stage export: inoculated-sae: \d+ rows would carry a prompt, but synthesize wrote no prompt/);
    } finally {
      await lenient.close();
    }
  }, 240_000);

  it.skipIf(!existsSync(join(REFERENCE_DIR, "feature_explanations")))(
    "imports the reference feature explanations as labels, rejecting the error message (needs ../shared/data/reference)",
    async () => {
      const dir = await tempDir();
      const files = await writePlantedSources(dir);
      const config = await resolveConfig(
        {
          name: "import",
          sources: { clean: { path: files.clean }, contaminated: { path: files.contaminated } },
          labels: { import: join(REFERENCE_DIR, "feature_explanations", "evil_cap_error_50_50.json") },
          export: { arms: ["baseline"] },
        },
        { runDir: join(dir, "run") },
      );
      const summary = await runPipeline(config, { until: "classify" });
      expect(summary.stages.find((s) => s.stage === "classify")!.counts).toMatchObject({ latents: 199, yes: 130, no: 69, unlabelled: 0, import_rejected: 1 });
      const labels = await readParquet(join(config.runDir, "tables", "feature_labels.parquet"));
      expect(labels.some((l) => l.latent === 72174)).toBe(false);
      expect(labels.every((l) => l.label_source === "import")).toBe(true);
    },
  );
});
