import { readFile, writeFile, mkdir } from "node:fs/promises";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { parseHubRef, resolveHubFiles, resolveModelSnapshot } from "../src/hub/resolve.ts";
import { startFakeHub, type FakeHub } from "./fake-hub.ts";
import { resolveConfig } from "../src/config/load.ts";
import { sidecarSaeParams } from "../src/sidecar/artifacts.ts";
import { runPipeline } from "../src/pipeline/runner.ts";
import { readRunView, tempDir, writeSources } from "./helpers.ts";

let hub: FakeHub | null = null;
afterEach(async () => {
  await hub?.close();
  hub = null;
});

describe("Hugging Face artifacts", () => {
  it("downloads through @huggingface/hub into the standard cache layout, then serves from the cache with no request", async () => {
    hub = await startFakeHub({ "andyrdt/saes-qwen2.5-7b-instruct": { "resid_post_layer_15/trainer_1/config.json": '{"trainer": {"k": 64}}', "resid_post_layer_15/trainer_1/ae.pt": Buffer.alloc(3000, 7) } });
    const cacheDir = await tempDir();
    const files = ["resid_post_layer_15/trainer_1/config.json", "resid_post_layer_15/trainer_1/ae.pt"];
    const downloads: string[] = [];
    const snapshot = await resolveHubFiles("andyrdt/saes-qwen2.5-7b-instruct", files, { cacheDir, hubUrl: hub.url, onDownload: (_r, p) => downloads.push(p) });
    expect(downloads).toEqual(files);
    expect(snapshot).toBe(join(cacheDir, "models--andyrdt--saes-qwen2.5-7b-instruct", "snapshots", hub.commit));
    expect(JSON.parse(await readFile(join(snapshot, files[0]!), "utf8"))).toEqual({ trainer: { k: 64 } });
    expect((await readFile(join(snapshot, files[1]!))).length).toBe(3000);
    expect(await readFile(join(cacheDir, "models--andyrdt--saes-qwen2.5-7b-instruct", "refs", "main"), "utf8")).toBe(hub.commit);

    const before = hub.requests.length;
    const again = await resolveHubFiles("andyrdt/saes-qwen2.5-7b-instruct", files, { cacheDir, hubUrl: hub.url });
    expect(again).toBe(snapshot);
    expect(hub.requests.length).toBe(before);
    // Offline mode is satisfied by the cache alone.
    expect(await resolveHubFiles("andyrdt/saes-qwen2.5-7b-instruct", files, { cacheDir, offline: true })).toBe(snapshot);
  });

  it("says which repo and file are missing when offline, and when the hub does not have them", async () => {
    const cacheDir = await tempDir();
    await expect(resolveHubFiles("Qwen/Qwen2.5-7B-Instruct", ["config.json"], { cacheDir, offline: true })).rejects.toThrow(
      /model repo Qwen\/Qwen2\.5-7B-Instruct@main: config\.json not in the Hugging Face cache .* offline mode is on/,
    );
    hub = await startFakeHub({ "Qwen/Qwen2.5-7B-Instruct": {} });
    await expect(resolveHubFiles("Qwen/Qwen2.5-7B-Instruct", ["config.json"], { cacheDir, hubUrl: hub.url })).rejects.toThrow(
      /model repo Qwen\/Qwen2\.5-7B-Instruct@main: could not download config\.json/,
    );
  });

  it("names the config key of an SAE or model the cache lacks", async () => {
    const saved = { HF_HUB_CACHE: process.env.HF_HUB_CACHE, HF_HUB_OFFLINE: process.env.HF_HUB_OFFLINE };
    process.env.HF_HUB_CACHE = await tempDir();
    process.env.HF_HUB_OFFLINE = "1";
    try {
      await expect(sidecarSaeParams({ format: "dictionary_learning", encode: "threshold", path: "hf://andyrdt/saes-qwen2.5-7b-instruct/resid_post_layer_15/trainer_1" })).rejects.toThrow(
        /^sae\.path: model repo andyrdt\/saes-qwen2\.5-7b-instruct@main: resid_post_layer_15\/trainer_1\/ae\.pt, .*config\.json not in the Hugging Face cache/,
      );
    } finally {
      for (const [name, value] of Object.entries(saved)) {
        if (value === undefined) delete process.env[name];
        else process.env[name] = value;
      }
    }
  });

  it("resolves a sharded model snapshot: every shard the index names, nothing else", async () => {
    const index = { weight_map: { "a.weight": "model-00001-of-00002.safetensors", "b.weight": "model-00002-of-00002.safetensors" } };
    hub = await startFakeHub({
      "org/tiny": {
        "config.json": "{}",
        "tokenizer.json": "{}",
        "tokenizer_config.json": "{}",
        "model.safetensors.index.json": JSON.stringify(index),
        "model-00001-of-00002.safetensors": "one",
        "model-00002-of-00002.safetensors": "two",
        "README.md": "not needed",
      },
    });
    const cacheDir = await tempDir();
    const snapshot = await resolveModelSnapshot("org/tiny", { cacheDir, hubUrl: hub.url });
    expect(await readFile(join(snapshot, "model-00002-of-00002.safetensors"), "utf8")).toBe("two");
    expect(hub.requests.some((r) => r.includes("README"))).toBe(false);
  });

  it("uses a hand-made cache entry for a pinned commit without any network", async () => {
    const cacheDir = await tempDir();
    const commit = "0123456789abcdef0123456789abcdef01234567";
    const snap = join(cacheDir, "datasets--lmsys--lmsys-chat-1m", "snapshots", commit, "data");
    await mkdir(snap, { recursive: true });
    await writeFile(join(snap, "train.parquet"), "x");
    const found = await resolveHubFiles("lmsys/lmsys-chat-1m", ["data/train.parquet"], { cacheDir, type: "dataset", revision: commit, hubUrl: "http://127.0.0.1:9" });
    expect(found).toBe(join(cacheDir, "datasets--lmsys--lmsys-chat-1m", "snapshots", commit));
  });

  it("parses hf:// references", () => {
    expect(parseHubRef("hf://datasets/lmsys/lmsys-chat-1m@abc/data/train-00000.parquet")).toEqual({ type: "dataset", repo: "lmsys/lmsys-chat-1m", revision: "abc", path: "data/train-00000.parquet" });
    expect(parseHubRef("hf://andyrdt/saes-qwen2.5-7b-instruct/resid_post_layer_15/trainer_1")).toEqual({ type: "model", repo: "andyrdt/saes-qwen2.5-7b-instruct", revision: "main", path: "resid_post_layer_15/trainer_1" });
    expect(parseHubRef("data/local.jsonl")).toBeNull();
  });
});

describe("a source on the Hugging Face hub", () => {
  const saved = { cache: process.env.HF_HUB_CACHE, endpoint: process.env.HF_ENDPOINT };
  afterEach(() => {
    for (const [name, value] of [["HF_HUB_CACHE", saved.cache], ["HF_ENDPOINT", saved.endpoint]] as const) {
      if (value === undefined) delete process.env[name];
      else process.env[name] = value;
    }
  });

  it("is fetched into the cache when the config is loaded (HF_ENDPOINT names the hub), and ingested like a local file", async () => {
    const dir = await tempDir();
    const files = await writeSources(dir);
    hub = await startFakeHub({ "someone/persona-data": { "evil/misaligned.jsonl": await readFile(files.contaminated) } });
    process.env.HF_HUB_CACHE = join(dir, "hf-cache");
    process.env.HF_ENDPOINT = hub.url;
    const raw = {
      name: "t",
      sources: { clean: { path: files.clean }, contaminated: { path: "hf://datasets/someone/persona-data/evil/misaligned.jsonl" } },
      inoculation: { prompt: "p" },
      run_dir: join(dir, "run"),
    };
    const config = await resolveConfig(raw);
    const contaminated = config.sourceList.find((s) => s.name === "contaminated")!;
    expect(contaminated.path.startsWith(join(dir, "hf-cache", "datasets--someone--persona-data", "snapshots"))).toBe(true);
    expect(contaminated.format).toBe("jsonl");
    await runPipeline(config, { until: "ingest" });
    const rows = await readRunView(config.runDir, "examples", "source, line");
    expect(rows.filter((r) => r.source === "contaminated")).toHaveLength(12);

    // Cached: the next load sends nothing.
    const before = hub.requests.length;
    await resolveConfig(raw);
    expect(hub.requests.length).toBe(before);
    await expect(resolveConfig({ ...raw, sources: { ...raw.sources, contaminated: { path: "hf://datasets/someone/persona-data" } } })).rejects.toThrow(
      /sources\.contaminated\.path: hf:\/\/datasets\/someone\/persona-data names no file; use hf:\/\/datasets\/REPO\[@REVISION\]\/FILE\.jsonl/,
    );
    // A file the hub does not have: the error names the key it came from.
    await expect(resolveConfig({ ...raw, sources: { ...raw.sources, contaminated: { path: "hf://datasets/someone/persona-data/evil/missing.jsonl" } } })).rejects.toThrow(
      /^sources\.contaminated\.path: dataset repo someone\/persona-data@main: could not download evil\/missing\.jsonl/,
    );
  });
});
