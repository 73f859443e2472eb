import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { describe, expect, it } from "vitest";
import { LlmCache } from "../src/llm/cache.ts";
import { RunStore } from "../src/store/run-store.ts";
import { REPO, tempDir } from "./helpers.ts";

/**
 * A process killed right after it created the catalog and stored an answer must leave a run directory the next
 * process can open (DuckDB replays the WAL on open, and it cannot replay every kind of DDL).
 */
describe("a run killed with SIGKILL", () => {
  it("leaves run.duckdb openable, with the answers it had stored", async () => {
    const dir = await tempDir();
    const script = join(dir, "crash.mts");
    await writeFile(
      script,
      `import { RunStore } from ${JSON.stringify(join(REPO, "src/store/run-store.ts"))};
import { LlmCache } from ${JSON.stringify(join(REPO, "src/llm/cache.ts"))};
const store = await RunStore.open(${JSON.stringify(join(dir, "run"))});
const cache = await LlmCache.open(store);
cache.put({ key: "k1", model: "m", stage: "generate", answer: { texts: ["stored"], finish_reasons: ["stop"], usage: { input_tokens: 1, output_tokens: 1 } } });
await cache.flush();
await store.saveManifestEntry({ stage: "generate", status: "running", fingerprint: "f", config_hash: "c", inputs: null, rows: null, counts: {}, details: {}, seconds: null, finished_at: null, error: null });
process.kill(process.pid, "SIGKILL");
`,
    );
    const r = spawnSync(process.execPath, ["--import", "tsx", script], { cwd: REPO, encoding: "utf8" });
    expect(r.signal, r.stderr).toBe("SIGKILL");

    const store = await RunStore.open(join(dir, "run"));
    try {
      expect((await store.readManifest()).get("generate")?.status).toBe("running");
      const cache = await LlmCache.open(store);
      expect((await cache.get("k1"))?.texts).toEqual(["stored"]);
    } finally {
      store.close();
    }
  });
});

describe("opening a run directory", () => {
  it("removes what a killed run's unfinished writes left, and keeps every finished output", async () => {
    const run = join(await tempDir(), "run");
    const first = await RunStore.open(run);
    first.close();
    const leftovers = [
      "tables/.mixed.parquet.tmp-4242",
      "exports/.baseline.jsonl.tmp-4242",
      "exports/.buckets-4242/3.records",
      ".stream-Ab12/rows",
      ".status.json.tmp-4242",
    ];
    const kept = ["tables/mixed.parquet", "exports/baseline.jsonl", "exports/manifest.json", "status.json"];
    for (const path of [...leftovers, ...kept]) {
      await mkdir(dirname(join(run, path)), { recursive: true });
      await writeFile(join(run, path), "x");
    }
    const store = await RunStore.open(run);
    store.close();
    for (const path of leftovers) expect(existsSync(join(run, path)), path).toBe(false);
    expect(existsSync(join(run, "exports", ".buckets-4242"))).toBe(false);
    for (const path of kept) expect(existsSync(join(run, path)), path).toBe(true);
  });
});
