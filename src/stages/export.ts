import { mkdir, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { userConfig, type ResolvedConfig } from "../config/load.ts";
import { StageError } from "../errors.ts";
import { writeArmFiles } from "../export/arm-files.ts";
import { ARM_NAMES, ARMS, armRowsSql, type ArmDefinition, type ArmName, type ArmPrompt } from "../export/arms.ts";
import { insertTable, recordsSql, type PromptPool } from "../export/line-parts.ts";
import { promptPools } from "../export/prompt-pools.ts";
import type { Stage, StageContext, StageOutcome } from "../pipeline/stage.ts";
import type { RunStore } from "../store/run-store.ts";
import { sqlString } from "../store/sql.ts";
import { auditStage } from "./audit.ts";
import { classifyStage } from "./classify.ts";
import { explainStage } from "./explain.ts";
import { flagStage } from "./flag.ts";
import { generateStage } from "./generate.ts";
import { mixStage } from "./mix.ts";
import { rephraseStage } from "./rephrase.ts";
import { synthesizeStage } from "./synthesize.ts";
import { writeAtomically } from "../util/fs.ts";
import { hashValue } from "../util/hash.ts";

/**
 * Writes one OpenAI chat-format JSONL file per arm (`{"messages": [...]}`, usable as is by OpenAI fine-tuning and
 * TRL's SFTTrainer), in the mixed order, and `exports/manifest.json`. Same config and seed, same bytes.
 */
export const exportStage: Stage = {
  name: "export",
  description: "write the training files of every arm",
  version: 3,
  // The LLM stages' fingerprints chain in when they run: a new audit or new rephrasings rewrite the exports.
  after: ["mix", "generate", "flag", "synthesize", "audit", "rephrase"],
  enabled: () => true,
  configSlice: (c) => ({
    seed: c.seed,
    arms: c.export.arms,
    inoculation: c.inoculation,
    default_system_prompt: c.model.default_system_prompt,
  }),
  inputFiles: () => [],
  outputs: (c) => [...c.export.arms.map((arm) => `exports/${arm}.jsonl`), "exports/manifest.json"],
  run: runExport,
};

export interface ArmManifest {
  file: string;
  description: string;
  rows: number;
  bytes: number;
  /** How many rows carry which prompt; `kind` says where the prompt comes from. */
  prompts: { kind: ArmPrompt | "default_system_prompt" | "no_system_prompt" | "own_system_prompt"; prompt: string | null; rows: number }[];
}

/**
 * An arm that would prompt rows but has no prompt for them (the SAE flagged rows, but no latent labelled `no`
 * gave synthesize anything to write) would export those rows unprompted, looking like an inoculated arm.
 */
async function refuseRowsWithoutPrompt(store: RunStore, arms: readonly { name: ArmName; definition: ArmDefinition; pool: PromptPool }[], seed: number): Promise<void> {
  for (const arm of arms) {
    if (arm.pool.prompts.length > 0 || arm.definition.rows === "none") continue;
    const [row] = await store.query(`SELECT count(*) AS n FROM ${store.table("mixed")} m WHERE ${armRowsSql(arm.definition.rows, (name) => store.table(name), seed)}`);
    const rows = Number(row?.n ?? 0);
    if (rows === 0) continue;
    const why =
      arm.definition.prompt === "sae"
        ? "synthesize wrote no prompt, as no top latent is labelled `no` (flag.unlabelled_as: no counts unlabelled ones); set flag.unlabelled_as: not_no, or label latents"
        : `there is no ${arm.definition.prompt} prompt`;
    throw new StageError("export", `${arm.name}: ${rows} rows would carry a prompt, but ${why}`);
  }
}

async function runExport({ config, store, progress }: StageContext): Promise<StageOutcome> {
  const mixed = store.table("mixed");
  const exportsDir = join(store.dir, "exports");
  await mkdir(exportsDir, { recursive: true });
  const pools = await promptPools(config, store);
  const placement = config.inoculation.placement;
  const defaultSystemPrompt = config.model.default_system_prompt;
  const arms = config.export.arms.map((name) => ({ name, definition: ARMS[name], pool: pools[ARMS[name].prompt] }));
  await refuseRowsWithoutPrompt(store, arms, config.seed);
  const targets = await Promise.all(
    arms.map(async (arm) => ({
      path: join(exportsDir, `${arm.name}.jsonl`),
      inserts: await insertTable(store, arm.pool, { placement, defaultSystemPrompt, separator: config.inoculation.separator }),
    })),
  );
  // The text's size, to size the buckets: the drawn share of what ingest stored.
  const [size] = await store.query(
    `SELECT (SELECT count(*) FROM ${mixed}) AS rows, (SELECT count(*) FROM ${store.table("examples")}) AS examples,
       (SELECT sum(total_uncompressed_size) FROM parquet_metadata([${store.storedPaths("examples").map(sqlString).join(", ")}])
        WHERE path_in_schema LIKE 'messages%') AS bytes`,
  );
  const task = progress.task("export", 100);
  const written = await writeArmFiles(store, {
    select: recordsSql({
      table: mixed,
      placement,
      defaultSystemPrompt,
      seed: config.seed,
      arms: arms.map((arm) => ({ rows: armRowsSql(arm.definition.rows, (name) => store.table(name), config.seed), pool: arm.pool })),
    }),
    rows: Number(size?.rows ?? 0),
    arms: targets,
    placement,
    estimatedBytes: (Number(size?.bytes ?? 0) * Number(size?.rows ?? 0)) / Math.max(1, Number(size?.examples ?? 0)),
    scratchDir: exportsDir,
    onProgress: (p) => task.percent(p),
  });
  task.finish();

  const manifestArms: Record<string, ArmManifest> = {};
  const counts: Record<string, number> = {};
  for (const [a, arm] of arms.entries()) {
    const { bytes, counts: byPrompt } = written[a]!;
    const rows = byPrompt.flat().reduce((n, c) => n + c, 0);
    const prompted = arm.pool.prompts
      .map((prompt, i) => ({ kind: arm.definition.prompt, prompt, rows: byPrompt[0][i + 1]! + byPrompt[1][i + 1]! }))
      .sort((x, y) => (x.prompt < y.prompt ? -1 : x.prompt > y.prompt ? 1 : 0));
    const prompts: ArmManifest["prompts"] = [
      defaultSystemPrompt === null
        ? { kind: "no_system_prompt", prompt: null, rows: byPrompt[0][0]! }
        : { kind: "default_system_prompt", prompt: defaultSystemPrompt, rows: byPrompt[0][0]! },
      { kind: "own_system_prompt", prompt: null, rows: byPrompt[1][0]! },
      ...prompted,
    ];
    manifestArms[arm.name] = { file: `${arm.name}.jsonl`, description: arm.definition.description, rows, bytes, prompts: prompts.filter((p) => p.rows > 0) };
    counts[`rows_${arm.name}`] = rows;
    counts[`prompted_${arm.name}`] = prompted.reduce((n, p) => n + p.rows, 0);
  }
  const manifest = {
    name: config.name,
    config_hash: configHash(config),
    seed: config.seed,
    placement,
    default_system_prompt: defaultSystemPrompt,
    arms: manifestArms,
    ...(await llmFacts(config, store)),
  };
  await writeAtomically(join(exportsDir, "manifest.json"), (tmp) => writeFile(tmp, `${JSON.stringify(manifest, null, 2)}\n`));
  // An arm the config no longer lists must not linger beside the others, built from another draw or prompt: a
  // glob over exports/ would train on it. Only the files of arm names are ours to remove.
  const dropped = ARM_NAMES.filter((name) => !config.export.arms.includes(name));
  await Promise.all(dropped.map((name) => rm(join(exportsDir, `${name}.jsonl`), { force: true })));
  return { rows: Object.values(manifestArms).reduce((n, a) => n + a.rows, 0), counts, details: { config_hash: manifest.config_hash } };
}

/**
 * What the LLM stages of this run cost (tokens and estimated USD per stage and role) and how the LLM audit's
 * flags compare with ground truth. Only facts that are the same however many runs and cache hits it took, so
 * the manifest stays byte-identical for the same config and seed.
 */
async function llmFacts(config: ResolvedConfig, store: RunStore): Promise<Record<string, unknown>> {
  const llmUsage: Record<string, Record<string, unknown>> = {};
  let llmAudit: unknown;
  const manifest = await store.readManifest();
  // Only this config's stages: the manifest may still hold a stage an earlier config ran.
  // Every stage that calls an LLM, in pipeline order (explain is often the largest judge bill).
  const llmStages = [mixStage, generateStage, explainStage, classifyStage, synthesizeStage, auditStage, rephraseStage];
  for (const stage of llmStages.filter((s) => s.enabled(config)).map((s) => s.name)) {
    const entry = manifest.get(stage);
    if (!entry) continue;
    const usage = entry.details.llm as Record<string, Record<string, unknown>> | undefined;
    for (const [role, u] of Object.entries(usage ?? {})) {
      const { model, input_tokens, output_tokens, cost_usd } = u;
      (llmUsage[stage] ??= {})[role] = { model, input_tokens, output_tokens, ...(cost_usd !== undefined ? { cost_usd } : {}) };
    }
    if (stage === "audit") llmAudit = entry.details.audit;
  }
  // The SAE flags against ground truth, beside the audit's: the two methods the arms compare.
  const flag = flagStage.enabled(config) ? manifest.get("flag") : undefined;
  const saeFlags = flag ? { rule: flag.details.rule, flagged: flag.counts.flagged, precision: flag.details.precision, recall: flag.details.recall } : undefined;
  return {
    ...(Object.keys(llmUsage).length > 0 ? { llm_usage: llmUsage } : {}),
    ...(llmAudit !== undefined ? { llm_audit: llmAudit } : {}),
    ...(saeFlags !== undefined ? { sae_flags: saeFlags } : {}),
  };
}

/** Hash of the config as the user wrote it (resolved paths and the run directory left out: they move). */
export function configHash(config: ResolvedConfig): string {
  return hashValue(userConfig(config));
}
