import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { Table, Utf8, vectorFromArray } from "apache-arrow";
import type { ResolvedConfig } from "../config/load.ts";
import { StageError } from "../errors.ts";
import type { Stage, StageContext, StageOutcome } from "../pipeline/stage.ts";
import { sidecarJobBase } from "../sidecar/artifacts.ts";
import { runSidecarJob } from "../sidecar/run-job.ts";
import { sqlString } from "../store/sql.ts";
import type { RunStore } from "../store/run-store.ts";
import { folderFiles } from "../util/fs.ts";

/**
 * The SAE diff: for every row, the pooled SAE latents of (prompt + target response) and (prompt + base response),
 * computed by the Python sidecar; writes `features` (the top-N latents by mean increase), `example_features` (every
 * row's values on them), `row_top` (each row's most divergent latents) and `activation_tokens`.
 */
export const activationsStage: Stage = {
  name: "activations",
  description: "SAE latents of target vs base responses (GPU sidecar)",
  version: 1,
  after: ["mix", "generate"],
  enabled: (c) => c.sae !== undefined,
  enableWith: "add an `sae` section",
  configSlice: (c) => ({
    model: modelSlice(c),
    sae: c.sae,
    activations: c.activations,
    device: c.sidecar.device,
    system_prompt: c.model.default_system_prompt,
  }),
  inputFiles: (c) => [...(c.activations.base_responses ? [c.activations.base_responses] : []), ...modelAndSaeFiles(c)],
  outputs: () => ["tables/features.parquet", "tables/example_features.parquet", "tables/row_top.parquet", "tables/activation_tokens.parquet"],
  run: runActivations,
};

/**
 * The local files the sidecar loads: a model plug-in or snapshot folder, and the SAE folder. Their sizes and
 * times join the fingerprint, so an SAE or model changed in place reruns the stages that read it. hf:// artifacts
 * are named by repo and revision in the config slice instead.
 */
export function modelAndSaeFiles(c: ResolvedConfig): string[] {
  const local = (p: string | undefined) => (p !== undefined && !p.startsWith("hf://") ? [p] : []);
  return [...local(c.model.python_file), ...local(c.model.path).flatMap(folderFiles), ...local(c.sae?.path).flatMap(folderFiles)];
}

export function modelSlice(c: ResolvedConfig): unknown {
  const m = c.model;
  return { id: m.id, revision: m.revision, path: m.path, python_file: m.python_file, python_options: m.python_options, dtype: m.dtype };
}

/**
 * Reads a user's base responses file into the temporary table `user_base_responses`, or says in one line what is
 * wrong with it: a file DuckDB cannot read (with its line), a missing `row_id` or `response`, a row id given twice.
 */
async function loadBaseResponsesFile(store: RunStore, file: string): Promise<void> {
  const key = `activations.base_responses: ${file}`;
  const parquet = file.endsWith(".parquet");
  const reader = parquet ? `read_parquet(${sqlString(file)})` : `read_json(${sqlString(file)}, format = 'newline_delimited')`;
  try {
    await store.run(`CREATE OR REPLACE TEMP TABLE user_base_responses_raw AS SELECT * FROM ${reader}`);
  } catch (error) {
    // DuckDB counts lines its own way (an unterminated string is reported on the line after it): find the line.
    const bad = parquet ? null : await firstBadJsonLine(file);
    if (bad) throw new StageError("activations", `${key}:${bad.line}: line ${bad.line} is not JSON (${bad.error}); each line must be one JSON object with row_id and response`);
    const first = ((error as Error).message.split("\n")[0] ?? "").replace(/^[A-Za-z ]+Error: /, "");
    throw new StageError("activations", 
      `${key}: cannot be read as ${parquet ? "Parquet" : "JSONL"} (${first}); ${parquet ? "give a Parquet file" : "each line must be one JSON object"} with row_id and response`,
    );
  }
  const columns = (await store.query("SELECT column_name FROM (DESCRIBE user_base_responses_raw)")).map((r) => String(r.column_name));
  const lacking = ["row_id", "response"].filter((c) => !columns.includes(c));
  if (lacking.length > 0) {
    throw new StageError("activations", `${key}: no ${lacking.join(" or ")} ${parquet ? "column" : "field"} (it has ${columns.join(", ") || "none"}); each row needs row_id and response`);
  }
  await store.run("CREATE OR REPLACE TEMP TABLE user_base_responses AS SELECT row_id::VARCHAR AS row_id, response::VARCHAR AS response FROM user_base_responses_raw");
  const twice = await store.query("SELECT row_id, count(*) AS n FROM user_base_responses GROUP BY row_id HAVING count(*) > 1 ORDER BY row_id LIMIT 3");
  if (twice.length > 0) {
    const listed = twice.map((r) => `${r.row_id} (${r.n} times)`).join(", ");
    throw new StageError("activations", `${key}: rows with more than one response: ${listed}; give each row_id one response`);
  }
}

/** The first non-blank line of a JSONL file that is not a JSON object, if any. */
async function firstBadJsonLine(file: string): Promise<{ line: number; error: string } | null> {
  const lines = (await readFile(file, "utf8")).split("\n");
  for (const [i, text] of lines.entries()) {
    if (text.trim() === "") continue;
    try {
      const value: unknown = JSON.parse(text);
      if (value === null || typeof value !== "object" || Array.isArray(value)) return { line: i + 1, error: "not an object" };
    } catch (error) {
      return { line: i + 1, error: (error as Error).message };
    }
  }
  return null;
}

/** Where the base responses come from: a user's file (loaded by loadBaseResponsesFile), or the generate stage's table. */
function baseResponsesSql(config: ResolvedConfig, store: RunStore): string {
  if (config.activations.base_responses) return "user_base_responses";
  // One answer per row (the first sample when generate.n > 1).
  return `(SELECT row_id, response FROM ${store.table("base_responses")} QUALIFY row_number() OVER (PARTITION BY row_id ORDER BY sample) = 1)`;
}

async function runActivations(ctx: StageContext): Promise<StageOutcome> {
  const { config, store } = ctx;
  const sae = config.sae!;
  if (!config.activations.base_responses && !(await store.hasTable("base_responses"))) {
    throw new StageError("activations", "no base responses: configure llm.generator (the generate stage) or set activations.base_responses to a file of {row_id, response}");
  }
  if (config.activations.base_responses) await loadBaseResponsesFile(store, config.activations.base_responses);
  const rows = await store.query(`
    SELECT m.row_id, to_json(m.messages[1 : len(m.messages) - 1])::VARCHAR AS prompt, m.messages[-1].content AS target, b.response AS base
    FROM ${store.table("mixed")} m LEFT JOIN ${baseResponsesSql(config, store)} b USING (row_id)
    ORDER BY m.position`);
  const missing = rows.filter((r) => r.base === null || r.base === undefined);
  if (missing.length > 0) {
    throw new StageError(
      "activations",
      `${missing.length} of ${rows.length} rows have no base response (first: ${missing.slice(0, 3).map((r) => r.row_id).join(", ")}); ` +
        `rerun generate, or complete activations.base_responses`,
    );
  }
  // Plain utf8 columns (tableFromArrays would dictionary-encode strings, which the protocol does not take).
  const utf8 = (key: string) => vectorFromArray(rows.map((r) => String(r[key])), new Utf8());
  const payload = new Table({ row_id: utf8("row_id"), prompt: utf8("prompt"), target: utf8("target"), base: utf8("base") });
  const params = {
    ...(await sidecarJobBase(ctx)),
    pooling: config.activations.pooling,
    token_budget: config.sidecar.token_budget,
    top_n: config.activations.top_n,
    row_top_k: config.activations.row_top_k,
    // Per-shard pooled vectors live here: a killed run resumes at its last finished shard, and a new top_n
    // needs no forward pass.
    cache_dir: join(store.dir, "cache", "activations"),
    shard_rows: config.activations.shard_rows,
  };
  const result = await runSidecarJob(ctx, {
    job: "diff",
    params,
    payload,
    shardDir: join(store.dir, "shards", "activations"),
    python: config.sidecar.python,
    idleTimeoutMs: config.sidecar.idle_timeout_s * 1000,
  });
  const shards = (name: string) => {
    const files = result.shards[name];
    if (!files || files.length === 0) throw new StageError("activations", `the sidecar returned no ${name} table`);
    return `read_parquet([${files.map(sqlString).join(", ")}])`;
  };
  const recorded = `${sqlString(sae.encode)} AS encode, ${sqlString(JSON.stringify(config.activations.pooling))} AS pooling`;
  const features = await store.writeTable("features", `SELECT *, ${recorded} FROM ${shards("features")} ORDER BY rank`);
  const exampleRows = await store.writeTable("example_features", `SELECT * FROM ${shards("example_features")} ORDER BY row_id, latent`);
  await store.writeTable("row_top", `SELECT * FROM ${shards("row_top")} ORDER BY row_id, rank`);
  await store.writeTable("activation_tokens", `SELECT * FROM ${shards("tokens")} ORDER BY row_id`);
  await result.discard();
  return {
    rows: features,
    counts: { rows: rows.length, features, example_features: exampleRows },
    details: { encode: sae.encode, pooling: config.activations.pooling, sidecar: result.hello, summary: result.summary },
  };
}
