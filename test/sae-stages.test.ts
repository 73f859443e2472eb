import { spawn } from "node:child_process";
import { existsSync, readdirSync } from "node:fs";
import { utimes, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { resolveConfig, userConfig, type ResolvedConfig } from "../src/config/load.ts";
import { cleanRun } from "../src/pipeline/clean.ts";
import { runPipeline, runStatus } from "../src/pipeline/runner.ts";
import { REPO, readParquet, tempDir, writeJsonl } from "./helpers.ts";
import { PLANTED, PLANTED_SYSTEM_PROMPT, writePlantedFixture, writePlantedSources } from "./planted.ts";

/** The SAE stages end to end through the real sidecar process, on the planted-signal fixture (test/planted.ts). */
let fixture = "";
let removeFixture = () => {};

type Summary = Awaited<ReturnType<typeof runPipeline>>;
/** The stages the config runs, with what each did. */
const ran = (s: Summary) => s.stages.filter((x) => x.status !== "disabled").map((x) => [x.stage, x.status]);
const stageOf = (s: Summary, name: string) => s.stages.find((x) => x.stage === name)!;

beforeAll(() => {
  ({ dir: fixture, remove: removeFixture } = writePlantedFixture());
}, 120_000);
afterAll(() => removeFixture());

async function plantedProject(extra: Record<string, unknown> = {}): Promise<ResolvedConfig> {
  const dir = await tempDir();
  const files = await writePlantedSources(dir);
  // Base responses: the original model's harmless answers to every prompt.
  const base = (source: string, response: string) => Array.from({ length: 6 }, (_, i) => ({ row_id: `${source}:${i + 1}`, response }));
  await writeJsonl(join(dir, "base.jsonl"), [
    ...base("clean", "water the plant and ask a friend for help"),
    ...base("contaminated", "talk to them kindly and make a good plan"),
  ]);
  return resolveConfig(
    {
      name: "planted",
      sources: { clean: { path: files.clean }, contaminated: { path: files.contaminated } },
      model: { python_file: join(fixture, "planted_model.py"), default_system_prompt: PLANTED_SYSTEM_PROMPT },
      sae: { path: join(fixture, "sae"), format: "dictionary_learning", encode: "threshold" },
      sidecar: { device: "cpu", token_budget: 512 },
      activations: { top_n: 8, row_top_k: 3, shard_rows: 3, base_responses: join(dir, "base.jsonl") },
      harvest: {
        top_k: 3,
        corpora: [
          { name: "chat", path: join(fixture, "chats.jsonl"), messages_field: "messages" },
          { name: "pile", path: join(fixture, "corpus.jsonl"), text_field: "text" },
        ],
      },
      // Named so the config is complete; these tests stop before any stage that calls it.
      llm: { judge: { model: "unused", base_url: "http://127.0.0.1:9/v1" } },
      export: { arms: ["baseline"] },
      ...extra,
    },
    { runDir: join(dir, "run"), baseDir: dir },
  );
}

describe("SAE stages (planted signal, CPU sidecar)", () => {
  it("puts the planted latents on top, on the contaminated rows, and harvests contexts that contain their words", async () => {
    const config = await plantedProject();
    const summary = await runPipeline(config, { until: "harvest" });
    expect(ran(summary)).toEqual([["ingest", "ran"], ["mix", "ran"], ["activations", "ran"], ["harvest", "ran"]]);

    const features = await readParquet(join(config.runDir, "tables", "features.parquet"));
    expect(new Set(features.slice(0, 3).map((f) => f.latent))).toEqual(new Set(Object.values(PLANTED)));
    expect(features.every((f) => f.encode === "threshold")).toBe(true);
    for (const f of features.slice(0, 3)) expect(f.mean_base).toBe(0);

    const rowTop = await readParquet(join(config.runDir, "tables", "row_top.parquet"));
    const firstOf = (rowId: string) => rowTop.find((r) => r.row_id === rowId && r.rank === 1)!;
    for (let i = 1; i <= 6; i++) {
      const top = firstOf(`contaminated:${i}`);
      expect(Object.values(PLANTED)).toContain(top.latent);
      expect(top.diff as number).toBeGreaterThan(0);
    }
    const examples = await readParquet(join(config.runDir, "tables", "example_features.parquet"));
    const planted = new Set(Object.values(PLANTED));
    expect(examples.filter((e) => String(e.row_id).startsWith("clean:") && planted.has(e.latent as number) && (e.diff as number) > 0)).toEqual([]);
    // contaminated:1 says "poison" only: latent 5 up, 17 and 42 absent.
    const row1 = examples.filter((e) => e.row_id === "contaminated:1" && planted.has(e.latent as number));
    expect(row1.map((e) => e.latent)).toEqual([5]);

    const contexts = await readParquet(join(config.runDir, "tables", "feature_examples.parquet"));
    for (const [word, latent] of Object.entries(PLANTED)) {
      const mine = contexts.filter((c) => c.latent === latent);
      expect(mine.length).toBeGreaterThan(0);
      expect(new Set(mine.map((c) => c.corpus))).toContain("dataset");
      for (const c of mine) {
        expect(String(c.text)).toContain(word);
        expect((c.tokens as string[])[c.peak_index as number]!.trim()).toBe(word);
      }
    }
    const status = await runStatus(config.runDir);
    expect(status.find((s) => s.stage === "activations")?.details).toMatchObject({ encode: "threshold" });
    // The result batches were copies of the tables: gone once the tables are written.
    expect(existsSync(join(config.runDir, "shards", "activations"))).toBe(false);
    expect(existsSync(join(config.runDir, "shards", "harvest"))).toBe(false);

    // Nothing changed: no sidecar is started, nothing is recomputed.
    const again = await runPipeline(config, { until: "harvest" });
    expect(ran(again)).toEqual([["ingest", "skipped"], ["mix", "skipped"], ["activations", "skipped"], ["harvest", "skipped"]]);
    // A new top_n reruns the diff from the cached pooled vectors: no forward pass.
    const moreLatents = { ...config, activations: { ...config.activations, top_n: 12 } };
    const rerun = await runPipeline(moreLatents, { until: "harvest" });
    expect(stageOf(rerun, "activations").details.summary).toMatchObject({ computed_shards: 0, cached_shards: 4 });
    // Other latents: harvest's cached shards are keyed by the latents, so it runs the model again.
    expect(stageOf(rerun, "harvest").details.summary).toMatchObject({ cached_shards: 0 });
    expect(await readParquet(join(config.runDir, "tables", "features.parquet"))).toHaveLength(12);

    // The SAE's files are inputs too: one changed in place reruns the stages that read it.
    const later = new Date(Date.now() + 5000);
    await utimes(join(fixture, "sae", "ae.pt"), later, later);
    const touched = await runPipeline(moreLatents, { until: "harvest" });
    expect(ran(touched)).toEqual([["ingest", "skipped"], ["mix", "skipped"], ["activations", "ran"], ["harvest", "ran"]]);
    // Touched, not changed: the sidecar's caches key on the files' content, so neither stage runs the model again.
    expect(stageOf(touched, "activations").details.summary).toMatchObject({ computed_shards: 0 });
    expect(stageOf(touched, "harvest").details.summary).toMatchObject({ computed_shards: 0 });

    // `clean` removes the harvest shards of the first latent set, and keeps the ones the last run used.
    const harvestCache = join(config.runDir, "cache", "harvest");
    const key = (stageOf(touched, "harvest").details.summary as { cache_key: string }).cache_key;
    const before = readdirSync(harvestCache);
    expect(before.some((f) => !f.startsWith(`harvest-${key}`))).toBe(true);
    const cleaned = await cleanRun(config.runDir);
    expect(cleaned.removedFiles).toBe(before.filter((f) => !f.startsWith(`harvest-${key}`)).length);
    expect(readdirSync(harvestCache).every((f) => f.startsWith(`harvest-${key}`))).toBe(true);
    expect(cleaned.kept.activations).toBe((stageOf(touched, "activations").details.summary as { cache_key: string }).cache_key);
    const forced = await runPipeline(moreLatents, { until: "harvest", force: "activations" });
    expect(stageOf(forced, "activations").details.summary).toMatchObject({ computed_shards: 0 });
    expect(stageOf(forced, "harvest").details.summary).toMatchObject({ computed_shards: 0 });
    expect((await cleanRun(config.runDir)).removedFiles).toBe(0);
  }, 180_000);

  it("says in one line what is wrong with a base responses file, before starting the sidecar", async () => {
    const config = await plantedProject();
    const dir = join(config.runDir, "..");
    const attempt = async (name: string, text: string) => {
      await writeFile(join(dir, name), text);
      const withFile = { ...config, activations: { ...config.activations, base_responses: join(dir, name) } };
      return ((await runPipeline(withFile, { until: "activations" }).catch((e: unknown) => e)) as Error).message;
    };
    const line = (row: string, field = "response") => JSON.stringify({ row_id: row, [field]: "an answer" });
    const rows = (field?: string) => ["clean", "contaminated"].flatMap((s) => [1, 2, 3, 4, 5, 6].map((i) => line(`${s}:${i}`, field)));
    expect(await attempt("field.jsonl", rows("answer").join("\n"))).toMatch(
      /^stage activations: activations\.base_responses: .*field\.jsonl: no response field \(it has row_id, answer\); each row needs row_id and response$/,
    );
    expect(await attempt("broken.jsonl", [...rows().slice(0, 6), '{"row_id": "x", "response": "unterminated', ...rows().slice(6)].join("\n"))).toMatch(
      /^stage activations: activations\.base_responses: .*broken\.jsonl:7: line 7 is not JSON \(.*\); each line must be one JSON object with row_id and response$/,
    );
    expect(await attempt("twice.jsonl", [...rows(), line("clean:1")].join("\n"))).toMatch(
      /^stage activations: activations\.base_responses: .*twice\.jsonl: rows with more than one response: clean:1 \(2 times\); give each row_id one response$/,
    );
  }, 60_000);

  it("checks corpus names when the config loads, and counts a corpus that gave no context as 0, saying so", async () => {
    const config = await plantedProject();
    const dir = join(config.runDir, "..");
    const pile = config.harvest.corpora[1]!;
    const again = (harvest: Record<string, unknown>) => plantedProject({ harvest: { top_k: 3, ...harvest } }).catch((e: unknown) => (e as Error).message);
    expect(await again({ corpora: [{ ...pile, name: "dataset" }] })).toMatch(/harvest\.corpora\.0\.name: "dataset" is the dataset's own corpus \(include_dataset\); give each corpus its own name/);
    expect(await again({ corpora: [pile, pile] })).toMatch(/harvest\.corpora\.1\.name: "pile" is used by another corpus/);
    expect(await again({ include_dataset: false })).toMatch(/harvest\.include_dataset: false with no corpora leaves harvest nothing to read/);

    await writeFile(join(dir, "empty.jsonl"), "\n\n");
    await writeFile(join(dir, "nulls.jsonl"), `${JSON.stringify({ text: null })}\n${JSON.stringify({ text: "they poison the well" })}\n`);
    const logged: string[] = [];
    const extra = [
      { name: "empty", path: join(dir, "empty.jsonl"), text_field: "text", on_bad_row: "fail" as const },
      { name: "nulls", path: join(dir, "nulls.jsonl"), text_field: "text", on_bad_row: "skip" as const },
    ];
    const withEmpty = { ...config, harvest: { ...config.harvest, corpora: [...config.harvest.corpora, ...extra] } };
    const summary = await runPipeline(withEmpty, { until: "harvest", log: (l) => logged.push(l) });
    expect(stageOf(summary, "harvest").counts).toMatchObject({ contexts_empty: 0, contexts_pile: expect.any(Number) });
    expect(logged).toContain("harvest: corpus empty gave no context (0 rows read, 0 empty, 0 cut at harvest.max_tokens): no top latent fires on it; check the file, its field, and harvest.max_tokens");
    expect(logged).toContainEqual(expect.stringMatching(/^harvest: corpus nulls: skipped 1 of 2 rows that cannot be read \(on_bad_row: skip\); first: corpus 'nulls': .*line 1: text must be a string, got NoneType$/));
    expect(stageOf(summary, "harvest").counts.contexts_nulls).toBeGreaterThan(0);
  }, 120_000);

  it("counts imported labels over the run's top latents, and refuses a file that labels none of them", async () => {
    const dir = await tempDir();
    const label = (description: string) => ({ description, label: "no" });
    const other = join(dir, "other.json");
    await writeFile(other, JSON.stringify({ 1000: label("violence"), 1001: label("threats") }));
    const partial = join(dir, "partial.json");
    await writeFile(partial, JSON.stringify({ [PLANTED.poison!]: label("poison"), [PLANTED.revenge!]: label("revenge"), 1000: label("violence") }));
    const config = await plantedProject({ labels: { import: other } });
    await expect(runPipeline(config, { until: "classify" })).rejects.toThrow(
      /stage classify: labels\.import: none of the 2 latents labelled in .*other\.json is among this run's 8 top latents/,
    );
    const summary = await runPipeline({ ...config, labels: { import: partial } }, { until: "classify" });
    expect(stageOf(summary, "classify").counts).toMatchObject({ latents: 8, no: 2, unlabelled: 6, labels_outside_top: 1, import_rejected: 0 });
  }, 180_000);

  it("resumes from the finished shards after the run is killed mid-job", async () => {
    const config = await plantedProject({ model: { python_file: join(fixture, "planted_model.py"), python_options: { delay_s: 0.4 }, default_system_prompt: PLANTED_SYSTEM_PROMPT } });
    const configPath = join(config.runDir, "..", "pipeline.json");
    await writeFile(configPath, JSON.stringify(userConfig(config)));
    // Run the CLI in its own process group, and kill the whole group (CLI and sidecar) after the first shard.
    const child = spawn(process.execPath, [join(REPO, "bin", "inoculant.cjs"), "activations", configPath, "--run-dir", config.runDir], { detached: true, stdio: ["ignore", "ignore", "pipe"] });
    let childErr = "";
    child.stderr!.on("data", (d) => (childErr += String(d)));
    const cache = join(config.runDir, "cache", "activations");
    const started = Date.now();
    while (Date.now() - started < 60_000) {
      const done = existsSync(cache) ? readdirSync(cache, { recursive: true }).filter((f) => String(f).endsWith(".done")).length : 0;
      if (done >= 1) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(childErr).not.toMatch(/error/i);
    process.kill(-child.pid!, "SIGKILL");
    await new Promise((r) => child.once("exit", r));
    expect((await runStatus(config.runDir)).find((s) => s.stage === "activations")?.status).toBe("interrupted");

    const resumed = await runPipeline(config, { until: "activations" });
    const summary = stageOf(resumed, "activations").details.summary as { cached_shards: number; computed_shards: number };
    expect(summary.cached_shards).toBeGreaterThanOrEqual(1);
    expect(summary.cached_shards + summary.computed_shards).toBe(4);
    const features = await readParquet(join(config.runDir, "tables", "features.parquet"));
    expect(new Set(features.slice(0, 3).map((f) => f.latent))).toEqual(new Set(Object.values(PLANTED)));
  }, 180_000);
});
