import { mkdir, rm } from "node:fs/promises";
import { dirname, join } from "node:path";
import type { ResolvedConfig } from "../config/load.ts";
import { StageError, UserError } from "../errors.ts";
import { parseHubRef, resolveHubFiles } from "../hub/resolve.ts";
import type { Stage, StageContext, StageOutcome } from "../pipeline/stage.ts";
import { downloadLogger, sidecarJobBase } from "../sidecar/artifacts.ts";
import { runSidecarJob } from "../sidecar/run-job.ts";
import { TABLE_FORMAT } from "../store/run-store.ts";
import { sqlString } from "../store/sql.ts";
import { exists } from "../util/fs.ts";
import { modelAndSaeFiles, modelSlice } from "./activations.ts";

/**
 * Max-activating contexts of every top latent, per corpus (the dataset itself and configured corpora such as
 * LMSYS-Chat-1M or The Pile samples): the token window around each of the top-k peaks, with per-token activations.
 */
export const harvestStage: Stage = {
  name: "harvest",
  description: "max-activating contexts of the top latents (GPU sidecar)",
  version: 1,
  after: ["activations"],
  enabled: (c) => c.sae !== undefined,
  enableWith: "add an `sae` section",
  configSlice: (c) => ({ model: modelSlice(c), sae: c.sae, harvest: c.harvest, device: c.sidecar.device, system_prompt: c.model.default_system_prompt }),
  inputFiles: (c) => [...c.harvest.corpora.map((k) => k.path).filter((p) => !p.startsWith("hf://")), ...modelAndSaeFiles(c)],
  outputs: () => ["tables/feature_examples.parquet"],
  run: runHarvest,
};

async function corpusPath(path: string, onDownload: (repo: string, file: string) => void): Promise<string> {
  const ref = parseHubRef(path);
  if (!ref) {
    if (!(await exists(path))) throw new UserError(`harvest.corpora: ${path} does not exist`);
    return path;
  }
  if (!ref.path) throw new UserError(`harvest.corpora: ${path} names no file; use hf://datasets/REPO/FILE`);
  const snapshot = await resolveHubFiles(ref.repo, [ref.path], { key: "harvest.corpora", type: ref.type, revision: ref.revision, onDownload });
  return join(snapshot, ref.path);
}

/** Where the dataset's rows wait for the sidecar to read them (the `mixed` view is no file of its own). */
function datasetPath(ctx: StageContext): string {
  return join(ctx.store.dir, "shards", "harvest-dataset.parquet");
}

async function corpora(config: ResolvedConfig, ctx: StageContext) {
  const onDownload = downloadLogger(ctx);
  const list: Record<string, unknown>[] = [];
  if (config.harvest.include_dataset) {
    // The dataset's own rows as the model saw them in the diff: the mixed conversations, in training order.
    const path = datasetPath(ctx);
    await mkdir(dirname(path), { recursive: true });
    await ctx.store.copyAtomically(path, `SELECT row_id, messages FROM ${ctx.store.table("mixed")} ORDER BY position`, TABLE_FORMAT);
    list.push({ name: "dataset", path, text_field: null, messages_field: "messages", max_rows: null });
  }
  for (const c of config.harvest.corpora) {
    list.push({
      name: c.name,
      path: await corpusPath(c.path, onDownload),
      text_field: c.text_field ?? null,
      messages_field: c.messages_field ?? null,
      max_rows: c.max_rows ?? null,
      on_bad_row: c.on_bad_row,
    });
  }
  if (list.length === 0) throw new StageError("harvest", "no corpus: set harvest.include_dataset or list harvest.corpora");
  return list;
}

/** What the sidecar counted for one corpus (PROTOCOL.md). */
interface CorpusCounts {
  rows: number;
  empty_rows: number;
  truncated_rows: number;
  bad_rows?: number;
  bad_row_examples?: string[];
}

/**
 * Says what a user should look at: rows skipped as unreadable, and a corpus that gave no context at all, most
 * likely a mistake (an empty file, max_tokens cutting every row short), rather than leave it out of the counts.
 */
function logCorpus(ctx: StageContext, name: string, c: CorpusCounts | undefined, contexts: number): void {
  if (c?.bad_rows) ctx.log(`harvest: corpus ${name}: skipped ${c.bad_rows} of ${c.rows} rows that cannot be read (on_bad_row: skip); first: ${c.bad_row_examples?.[0] ?? ""}`);
  if (contexts > 0) return;
  ctx.log(
    `harvest: corpus ${name} gave no context${c ? ` (${c.rows} rows read, ${c.empty_rows} empty, ${c.truncated_rows} cut at harvest.max_tokens)` : ""}: ` +
      `no top latent fires on it; check the file, its field, and harvest.max_tokens`,
  );
}

async function runHarvest(ctx: StageContext): Promise<StageOutcome> {
  const { config, store } = ctx;
  const sae = config.sae!;
  const latents = (await store.query(`SELECT latent FROM ${store.table("features")} ORDER BY rank`)).map((r) => Number(r.latent));
  const list = await corpora(config, ctx);
  const params = {
    ...(await sidecarJobBase(ctx)),
    latents,
    top_k: config.harvest.top_k,
    window: config.harvest.window,
    token_budget: config.sidecar.token_budget,
    max_tokens: config.harvest.max_tokens,
    exclude_first: config.activations.pooling.exclude_first,
    exclude_special: config.activations.pooling.exclude_special,
    outlier_norm_multiple: config.activations.pooling.outlier_norm_multiple,
    corpora: list,
    cache_dir: join(store.dir, "cache", "harvest"),
    shard_rows: config.harvest.shard_rows,
  };
  const result = await runSidecarJob(ctx, {
    job: "harvest",
    params,
    shardDir: join(store.dir, "shards", "harvest"),
    python: config.sidecar.python,
    idleTimeoutMs: config.sidecar.idle_timeout_s * 1000,
  }).finally(() => rm(datasetPath(ctx), { force: true }));
  const files = result.shards.feature_examples ?? [];
  if (files.length === 0) throw new StageError("harvest", "the sidecar returned no feature_examples table");
  const rows = await store.writeTable(
    "feature_examples",
    `SELECT * FROM read_parquet([${files.map(sqlString).join(", ")}]) ORDER BY latent, corpus, rank`,
  );
  await result.discard();
  const found = new Map((await store.query(`SELECT corpus, count(*) AS n FROM ${store.table("feature_examples")} GROUP BY corpus`)).map((r) => [String(r.corpus), Number(r.n)]));
  const read = (result.summary.corpora ?? {}) as Record<string, CorpusCounts | undefined>;
  const names = list.map((c) => String(c.name));
  for (const name of names) logCorpus(ctx, name, read[name], found.get(name) ?? 0);
  return {
    rows,
    counts: Object.fromEntries([["latents", latents.length], ...names.map((name) => [`contexts_${name}`, found.get(name) ?? 0])]),
    details: { encode: sae.encode, summary: result.summary },
  };
}
