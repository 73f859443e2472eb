import { readdir, rm, stat } from "node:fs/promises";
import { join } from "node:path";
import { UserError } from "../errors.ts";
import { RunStore } from "../store/run-store.ts";

/**
 * `inoculant clean RUN_DIR`: removes the sidecar's cached shards that the run's last finished activations and
 * harvest did not use: those of earlier configs (another SAE, other latents, another system prompt…). They only
 * matter to a run that goes back to such a config, which then recomputes them. The entries in use, the stage
 * tables, the exports and the LLM answers (paid for) are kept.
 */

/** The sidecar cache folder of each stage, and the prefix its entries are named with (`diff-<key>-…`). */
const CACHES = [
  { stage: "activations", folder: "activations", prefix: "diff" },
  { stage: "harvest", folder: "harvest", prefix: "harvest" },
] as const;

export interface CleanResult {
  removedFiles: number;
  removedBytes: number;
  /** Per cache folder: the key kept (null when the stage has no finished run, so nothing was kept). */
  kept: Record<string, string | null>;
}

export async function cleanRun(runDir: string): Promise<CleanResult> {
  if (!(await RunStore.existsAt(runDir))) throw new UserError(`${runDir} is not a run directory (no run.duckdb)`);
  // Opening the catalog also tells a run in progress apart: its caches are in use.
  const store = await RunStore.open(runDir);
  const manifest = await store.readManifest().finally(() => store.close());
  const result: CleanResult = { removedFiles: 0, removedBytes: 0, kept: {} };
  for (const cache of CACHES) {
    const entry = manifest.get(cache.stage);
    const summary = entry?.status === "done" ? (entry.details.summary as { cache_key?: unknown } | undefined) : undefined;
    const key = typeof summary?.cache_key === "string" ? summary.cache_key : null;
    result.kept[cache.folder] = key;
    const folder = join(runDir, "cache", cache.folder);
    const names = await readdir(folder).catch(() => [] as string[]);
    for (const name of names) {
      // Without a finished run of the stage nothing is known to be in use, and nothing is known to be stale.
      if (key === null || name.startsWith(`${cache.prefix}-${key}`)) continue;
      const path = join(folder, name);
      result.removedBytes += (await stat(path)).size;
      await rm(path, { force: true });
      result.removedFiles += 1;
    }
  }
  return result;
}
