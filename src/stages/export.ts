import { mkdir, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { ResolvedConfig } from "../config/load.ts";
import { ARMS, armRowsSql, type ArmDefinition, type ArmPrompt } from "../export/arms.ts";
import { inoculatedMessagesSql, promptSql, type PromptPool } from "../export/inoculate-sql.ts";
import type { Stage, StageContext, StageOutcome } from "../pipeline/stage.ts";
import { writeAtomically } from "../util/fs.ts";
import { hashValue } from "../util/hash.ts";

/**
 * Writes one OpenAI chat-format JSONL file per arm (`{"messages": [...]}`, usable as is by OpenAI fine-tuning and
 * TRL's SFTTrainer), in the mixed order, and `exports/manifest.json`. Same config and seed, same bytes.
 */
export const exportStage: Stage = {
  name: "export",
  description: "write the training files of every arm",
  version: 1,
  after: ["mix"],
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

export function promptPool(config: ResolvedConfig, prompt: ArmPrompt): PromptPool {
  switch (prompt) {
    case "none":
      return { prompts: [] };
    case "irrelevant":
      return { prompts: [config.inoculation.irrelevant_prompt] };
    case "inoculation":
      return {
        prompts:
          config.inoculation.rephrasings.length > 0 ? config.inoculation.rephrasings : [config.inoculation.prompt!],
      };
  }
}

async function runExport({ config, store, progress }: StageContext): Promise<StageOutcome> {
  const mixed = store.table("mixed");
  const arms: Record<string, ArmManifest> = {};
  const counts: Record<string, number> = {};
  const task = progress.task("export", config.export.arms.length * 100);
  await mkdir(join(store.dir, "exports"), { recursive: true });
  for (const [i, name] of config.export.arms.entries()) {
    const arm = ARMS[name];
    const prompt = armPromptSql(config, arm);
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
    const rows = await store.copyAtomically(path, `SELECT ${messages} AS messages FROM ${mixed} m`, "FORMAT json", (p) =>
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
  };
  await writeAtomically(join(store.dir, "exports", "manifest.json"), (tmp) =>
    writeFile(tmp, `${JSON.stringify(manifest, null, 2)}\n`),
  );
  return { rows: Object.values(arms).reduce((n, a) => n + a.rows, 0), counts, details: { config_hash: manifest.config_hash } };
}

function armPromptSql(config: ResolvedConfig, arm: ArmDefinition): string {
  const prompt = promptSql(promptPool(config, arm.prompt), config.seed, "m.row_id");
  return `(CASE WHEN ${armRowsSql(arm.rows)} THEN ${prompt} END)`;
}

/** Hash of the config as the user wrote it (resolved paths and the run directory left out: they move). */
export function configHash(config: ResolvedConfig): string {
  const { configPath: _c, runDir: _r, sourceList: _s, ...rest } = config;
  return hashValue(rest);
}
