import type { ResolvedConfig } from "../config/load.ts";
import type { RunStore } from "../store/run-store.ts";
import { ARMS, type ArmPrompt } from "./arms.ts";
import type { PromptPool } from "./line-parts.ts";

/**
 * Where a prompt comes from: the config (the inoculation prompt, and the irrelevant control's), the LLM audit,
 * or the SAE pipeline (synthesize).
 */
export type PromptOrigin = "general" | "irrelevant" | "llm_audit" | "sae";

export interface InoculationPrompt {
  origin: PromptOrigin;
  prompt: string;
}

/** Whether an exported arm carries the irrelevant prompt. */
export function exportsIrrelevant(config: ResolvedConfig): boolean {
  return config.export.arms.some((arm) => ARMS[arm].prompt === "irrelevant");
}

/**
 * The prompts `rephrase` rephrases, each once: the inoculation prompt, unless the config lists its rephrasings
 * itself (`inoculation.rephrasings` is then the whole pool); the irrelevant prompt when an irrelevant arm is
 * exported, so that the control draws from as many wordings as the inoculated arms and differs from them in
 * content alone; and the prompts the LLM audit and synthesize wrote.
 */
export async function promptsToRephrase(config: ResolvedConfig, store: RunStore): Promise<InoculationPrompt[]> {
  const prompts: InoculationPrompt[] = [];
  const { prompt, rephrasings, irrelevant_prompt } = config.inoculation;
  if (prompt !== undefined && rephrasings.length === 0) prompts.push({ origin: "general", prompt });
  if (exportsIrrelevant(config)) prompts.push({ origin: "irrelevant", prompt: irrelevant_prompt });
  return [...prompts, ...(await writtenPrompts(config, store))];
}

/** The prompts this run wrote: the LLM audit's and synthesize's, when they wrote one. */
async function writtenPrompts(config: ResolvedConfig, store: RunStore): Promise<InoculationPrompt[]> {
  const prompts: InoculationPrompt[] = [];
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
 * prompt), the irrelevant prompt, or a prompt the run wrote, each followed by its rephrasings from `rephrase`
 * when that stage rephrased it. Duplicates are dropped, first occurrence kept, so the draw is not weighted
 * towards a repeated text.
 */
export async function promptPools(config: ResolvedConfig, store: RunStore): Promise<Record<ArmPrompt, PromptPool>> {
  const rephrased = new Map<PromptOrigin, string[]>();
  if (config.rephrase.k > 0) {
    for (const row of await store.query(`SELECT origin, rephrasing FROM ${store.table("rephrasings")} ORDER BY origin, idx`)) {
      const origin = row.origin as PromptOrigin;
      rephrased.set(origin, [...(rephrased.get(origin) ?? []), String(row.rephrasing)]);
    }
  }
  const written = await writtenPrompts(config, store);
  const { prompt, rephrasings, irrelevant_prompt } = config.inoculation;
  const base = (origin: PromptOrigin): string[] => {
    if (origin === "general") return rephrasings.length > 0 ? rephrasings : prompt !== undefined ? [prompt] : [];
    if (origin === "irrelevant") return [irrelevant_prompt];
    return written.filter((p) => p.origin === origin).map((p) => p.prompt);
  };
  const pool = (origin: PromptOrigin): PromptPool => {
    const own = base(origin);
    return { prompts: own.length === 0 ? [] : [...new Set([...own, ...(rephrased.get(origin) ?? [])])] };
  };
  return {
    none: { prompts: [] },
    irrelevant: pool("irrelevant"),
    inoculation: pool("general"),
    llm_audit: pool("llm_audit"),
    sae: pool("sae"),
  };
}
