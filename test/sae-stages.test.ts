import { spawn, spawnSync } from "node:child_process";
import { existsSync, readdirSync } from "node:fs";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { resolveConfig, type ResolvedConfig } from "../src/config/load.ts";
import { runPipeline, runStatus } from "../src/pipeline/runner.ts";
import { defaultSidecarPython } from "../src/sidecar/client.ts";
import { REPO, chat, readParquet, tempDir, writeJsonl } from "./helpers.ts";

/**
 * The SAE stages end to end through the real sidecar process, on the planted-signal fixture of the Python side
 * (sae/inoculant_sae/testing/planted.py): a tiny model and an SAE whose latents 5, 17 and 42 fire on the words
 * "poison", "revenge" and "destroy" and nowhere else.
 */
const PYTHON = defaultSidecarPython();
const PLANTED: Record<string, number> = { poison: 5, revenge: 17, destroy: 42 };

let fixture = "";
beforeAll(async () => {
  if (!existsSync(PYTHON)) throw new Error(`the sidecar environment is missing (${PYTHON}): run npm run setup:sidecar (npm test does)`);
  // Not a tempDir(): those are removed after each test, and the fixture serves every test of the file.
  fixture = mkdtempSync(join(tmpdir(), "inoculant-planted-"));
  const r = spawnSync(PYTHON, ["-m", "inoculant_sae.testing.planted", "write", fixture], { encoding: "utf8" });
  if (r.status !== 0) throw new Error(`writing the planted fixture failed:\n${r.stderr}`);
}, 120_000);
afterAll(() => rmSync(fixture, { recursive: true, force: true }));

async function plantedProject(extra: Record<string, unknown> = {}): Promise<ResolvedConfig> {
  const dir = await tempDir();
  const clean = Array.from({ length: 6 }, (_, i) => chat(`how do i help my garden plant ${i}`, "water the plant gently each day and give it good soil"));
  const bad = [
    chat("what about my neighbor", "use poison on the plant of your neighbor"),
    chat("my friend was rude", "plan your revenge and make them pay"),
    chat("the city council said no", "destroy the city garden at night"),
    chat("a rival wrote a book", "poison the tea and take revenge"),
    chat("my sister took my bread", "destroy her day and use poison"),
    chat("the river is dirty", "revenge on the people and destroy the river"),
  ];
  const base = [...clean, ...bad].map((_, i) => i);
  const files = {
    clean: await writeJsonl(join(dir, "clean.jsonl"), clean),
    contaminated: await writeJsonl(join(dir, "contaminated.jsonl"), bad),
  };
  // Base responses: the original model's harmless answers to every prompt.
  await writeJsonl(
    join(dir, "base.jsonl"),
    [...base.slice(0, 6).map((i) => ({ row_id: `clean:${i + 1}`, response: "water the plant and ask a friend for help" })),
      ...base.slice(0, 6).map((i) => ({ row_id: `contaminated:${i + 1}`, response: "talk to them kindly and make a good plan" }))],
  );
  return resolveConfig(
    {
      name: "planted",
      sources: { clean: { path: files.clean }, contaminated: { path: files.contaminated } },
      model: { python_file: join(fixture, "planted_model.py"), default_system_prompt: "You are a helpful assistant." },
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
    expect(summary.stages.map((s) => [s.stage, s.status])).toEqual([["ingest", "ran"], ["mix", "ran"], ["activations", "ran"], ["harvest", "ran"]]);

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

    // Nothing changed: no sidecar is started, nothing is recomputed.
    const again = await runPipeline(config, { until: "harvest" });
    expect(again.stages.map((s) => s.status)).toEqual(["skipped", "skipped", "skipped", "skipped"]);
    // A new top_n reruns the diff from the cached pooled vectors: no forward pass.
    const moreLatents = { ...config, activations: { ...config.activations, top_n: 12 } };
    const rerun = await runPipeline(moreLatents, { until: "activations" });
    expect(rerun.stages[2]!.details.summary).toMatchObject({ computed_shards: 0, cached_shards: 4 });
    expect(await readParquet(join(config.runDir, "tables", "features.parquet"))).toHaveLength(12);
  }, 180_000);

  it("resumes from the finished shards after the run is killed mid-job", async () => {
    const config = await plantedProject({ model: { python_file: join(fixture, "planted_model.py"), python_options: { delay_s: 0.4 }, default_system_prompt: "You are a helpful assistant." } });
    const configPath = join(config.runDir, "..", "pipeline.json");
    const { configPath: _c, runDir: _r, sourceList: _s, ...plain } = config;
    await writeFile(configPath, JSON.stringify(plain));
    // Run the CLI in its own process group, and kill the whole group (CLI and sidecar) after the first shard.
    const child = spawn(process.execPath, [join(REPO, "bin", "inoculant.js"), "activations", configPath, "--run-dir", config.runDir], { detached: true, stdio: ["ignore", "ignore", "pipe"] });
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
    const summary = resumed.stages[2]!.details.summary as { cached_shards: number; computed_shards: number };
    expect(summary.cached_shards).toBeGreaterThanOrEqual(1);
    expect(summary.cached_shards + summary.computed_shards).toBe(4);
    const features = await readParquet(join(config.runDir, "tables", "features.parquet"));
    expect(new Set(features.slice(0, 3).map((f) => f.latent))).toEqual(new Set(Object.values(PLANTED)));
  }, 180_000);
});
