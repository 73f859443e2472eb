import { mkdir, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { userConfig, type ResolvedConfig } from "../config/load.ts";
import { ARMS, armRowsSql, type ArmDefinition, type ArmPrompt } from "../export/arms.ts";
import { inoculatedMessagesSql, promptSql, type PromptPool } from "../export/inoculate-sql.ts";
import { promptPools } from "../export/prompt-pools.ts";
import type { Stage, StageContext, StageOutcome } from "../pipeline/stage.ts";
import type { RunStore } from "../store/run-store.ts";
import { auditStage } from "./audit.ts";
import { generateStage } from "./generate.ts";
import { mixStage } from "./mix.ts";
import { rephraseStage } from "./rephrase.ts";
import { writeAtomically } from "../util/fs.ts";
import { hashValue } from "../util/hash.ts";

/**
 * Writes one OpenAI chat-format JSONL file per arm (`{"messages": [...]}`, usable as is by OpenAI fine-tuning and
 * TRL's SFTTrainer), in the mixed order, and `exports/manifest.json`. Same config and seed, same bytes.
 */
export const exportStage: Stage = {
  name: "export",
  description: "write the training files of every arm",
  version: 2,
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
  prompts: { kind: ArmPrompt | "default_system_prompt" | "own_system_prompt"; prompt: string | null; rows: number }[];
}

async function runExport({ config, store, progress }: StageContext): Promise<StageOutcome> {
  const mixed = store.table("mixed");
  const arms: Record<string, ArmManifest> = {};
  const counts: Record<string, number> = {};
  const task = progress.task("export", config.export.arms.length * 100);
  await mkdir(join(store.dir, "exports"), { recursive: true });
  const pools = await promptPools(config, store);
  for (const [i, name] of config.export.arms.entries()) {
    const arm = ARMS[name];
    const prompt = armPromptSql(config, store, arm, pools[arm.prompt]);
    const file = `${name}.jsonl`;
    const path = join(store.dir, "exports", file);
    const messages = inoculatedMessagesSql({
      messages: "m.messages",
      prompt,
      placement: config.inoculation.placement,
      defaultSystemPrompt: config.model.default_system_prompt,
      separator: config.inoculation.separator,
    });
    // mixed.parquet is stored in `position` order and DuckDB preserves insertion order, so no sort is needed.
    const rows = await store.copyAtomically(path, jsonLinesSelect(`SELECT ${messages} AS messages FROM ${mixed} m`), JSON_LINES, (p) =>
      task.percent((100 * i + p) / config.export.arms.length),
    );
    const prompts = await store.query(
      `SELECT CASE WHEN p IS NOT NULL THEN 'prompt' WHEN own THEN 'own_system_prompt' ELSE 'default_system_prompt' END AS kind,
         p AS prompt, count(*) AS rows
       FROM (SELECT ${prompt} AS p, m.messages[1].role = 'system' AS own FROM ${mixed} m)
       GROUP BY ALL ORDER BY kind, prompt`,
    );
    arms[name] = {
      file,
      description: arm.description,
      rows,
      bytes: (await stat(path)).size,
      prompts: prompts.map((r) => ({
        kind: r.kind === "prompt" ? arm.prompt : (r.kind as "default_system_prompt" | "own_system_prompt"),
        prompt: r.kind === "prompt" ? String(r.prompt) : r.kind === "default_system_prompt" ? config.model.default_system_prompt : null,
        rows: Number(r.rows),
      })),
    };
    counts[`rows_${name}`] = rows;
    counts[`prompted_${name}`] = arms[name].prompts.filter((p) => p.kind === arm.prompt).reduce((n, p) => n + p.rows, 0);
  }
  task.finish();
  const manifest = {
    name: config.name,
    config_hash: configHash(config),
    seed: config.seed,
    placement: config.inoculation.placement,
    default_system_prompt: config.model.default_system_prompt,
    arms,
    ...(await llmFacts(config, store)),
  };
  await writeAtomically(join(store.dir, "exports", "manifest.json"), (tmp) =>
    writeFile(tmp, `${JSON.stringify(manifest, null, 2)}\n`),
  );
  return { rows: Object.values(arms).reduce((n, a) => n + a.rows, 0), counts, details: { config_hash: manifest.config_hash } };
}

function armPromptSql(config: ResolvedConfig, store: RunStore, arm: ArmDefinition, pool: PromptPool): string {
  const prompt = promptSql(pool, config.seed, "m.row_id");
  return `(CASE WHEN ${armRowsSql(arm.rows, (name) => store.table(name), config.seed)} THEN ${prompt} END)`;
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
  for (const stage of [mixStage, generateStage, auditStage, rephraseStage].filter((s) => s.enabled(config)).map((s) => s.name)) {
    const entry = manifest.get(stage);
    if (!entry) continue;
    const usage = entry.details.llm as Record<string, Record<string, unknown>> | undefined;
    for (const [role, u] of Object.entries(usage ?? {})) {
      const { model, input_tokens, output_tokens, cost_usd } = u;
      (llmUsage[stage] ??= {})[role] = { model, input_tokens, output_tokens, ...(cost_usd !== undefined ? { cost_usd } : {}) };
    }
    if (stage === "audit") llmAudit = entry.details.audit;
  }
  return {
    ...(Object.keys(llmUsage).length > 0 ? { llm_usage: llmUsage } : {}),
    ...(llmAudit !== undefined ? { llm_audit: llmAudit } : {}),
  };
}

/**
 * The same bytes as DuckDB's `FORMAT json` writes for a `messages` column, about a third faster: each line is
 * built as a string and written raw. to_json escapes every control character, so a JSON line never holds the
 * chr(1) delimiter or a raw newline, and with no quote character nothing is quoted.
 */
const JSON_LINES = "FORMAT csv, HEADER false, QUOTE '', ESCAPE '', DELIMITER '\x01'";

function jsonLinesSelect(select: string): string {
  return `SELECT '{"messages":' || to_json(messages) || '}' AS line FROM (${select})`;
}

/** Hash of the config as the user wrote it (resolved paths and the run directory left out: they move). */
export function configHash(config: ResolvedConfig): string {
  return hashValue(userConfig(config));
}
