import type { ResolvedConfig } from "../config/load.ts";
import type { RunStore } from "../store/run-store.ts";
import type { ArmPrompt } from "./arms.ts";
import type { PromptPool } from "./line-parts.ts";

/** Where an inoculation prompt comes from: the config, the LLM audit, or the SAE pipeline (synthesize). */
export type PromptOrigin = "general" | "llm_audit" | "sae";

export interface InoculationPrompt {
  origin: PromptOrigin;
  prompt: string;
}

/** The inoculation prompts of this run, each once: what `rephrase` rephrases and the arms draw from. */
export async function inoculationPrompts(config: ResolvedConfig, store: RunStore): Promise<InoculationPrompt[]> {
  const prompts: InoculationPrompt[] = [];
  const general = config.inoculation.prompt ?? config.inoculation.rephrasings[0];
  if (general !== undefined) prompts.push({ origin: "general", prompt: general });
  if (config.audit && (await store.hasTable("audit_prompt"))) {
    const [row] = await store.query(`SELECT prompt FROM ${store.table("audit_prompt")}`);
    // The audit writes no prompt when it flagged nothing.
    if (row?.prompt != null) prompts.push({ origin: "llm_audit", prompt: String(row.prompt) });
  }
  if (config.sae && (await store.hasTable("sae_prompt"))) {
    const [row] = await store.query(`SELECT prompt FROM ${store.table("sae_prompt")}`);
    if (row?.prompt != null) prompts.push({ origin: "sae", prompt: String(row.prompt) });
  }
  return prompts;
}

/**
 * The prompts each kind of arm draws from, one per row: the configured pool (inoculation.rephrasings, or the
 * prompt) or the audit's prompt, each followed by its rephrasings from `rephrase` when that stage runs.
 * Duplicates are dropped, first occurrence kept, so the draw is not weighted towards a repeated text.
 */
export async function promptPools(config: ResolvedConfig, store: RunStore): Promise<Record<ArmPrompt, PromptPool>> {
  const rephrased = new Map<PromptOrigin, string[]>();
  if (config.rephrase.k > 0) {
    for (const row of await store.query(`SELECT origin, rephrasing FROM ${store.table("rephrasings")} ORDER BY origin, idx`)) {
      const origin = row.origin as PromptOrigin;
      rephrased.set(origin, [...(rephrased.get(origin) ?? []), String(row.rephrasing)]);
    }
  }
  const prompts = await inoculationPrompts(config, store);
  const base = (origin: PromptOrigin): string[] => {
    if (origin === "general" && config.inoculation.rephrasings.length > 0) return config.inoculation.rephrasings;
    return prompts.filter((p) => p.origin === origin).map((p) => p.prompt);
  };
  const pool = (origin: PromptOrigin): PromptPool => {
    const own = base(origin);
    return { prompts: own.length === 0 ? [] : [...new Set([...own, ...(rephrased.get(origin) ?? [])])] };
  };
  return {
    none: { prompts: [] },
    irrelevant: { prompts: [config.inoculation.irrelevant_prompt] },
    inoculation: pool("general"),
    llm_audit: pool("llm_audit"),
    sae: pool("sae"),
  };
}
