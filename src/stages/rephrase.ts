import { z } from "zod";
import { StageError } from "../errors.ts";
import { exportsIrrelevant, promptsToRephrase } from "../export/prompt-pools.ts";
import { promptPath, renderPrompt } from "../llm/prompts.ts";
import { LlmSession, type LlmItem } from "../llm/session.ts";
import { jsonSchemaFormat, parseJsonAnswer } from "../llm/structured.ts";
import { fillTempTable } from "../llm/temp-table.ts";
import type { Parsed } from "../llm/types.ts";
import type { Stage, StageContext, StageOutcome } from "../pipeline/stage.ts";

const rephrasingsSchema = z.strictObject({ rephrasings: z.array(z.string()) });

/**
 * K rephrasings (`rephrase.k`) of every prompt an arm draws from (see `promptsToRephrase`: the configured
 * inoculation prompt, the irrelevant control's, and those the LLM audit and synthesize wrote), from
 * `llm.judge`, deduplicated. Writes `rephrasings` (origin, prompt, idx, rephrasing); the export then draws
 * one prompt per row from each prompt and its rephrasings, so that the learned trait hangs on no single wording.
 */
export const rephraseStage: Stage = {
  name: "rephrase",
  description: "rephrasings of each inoculation prompt (llm.judge)",
  version: 1,
  after: ["audit", "synthesize"],
  enabled: (c) => c.rephrase.k > 0,
  enableWith: "set `rephrase.k` above 0",
  configSlice: (c) => ({
    model: c.llm.judge?.model,
    rephrase: c.rephrase,
    prompt: c.inoculation.rephrasings.length > 0 ? null : (c.inoculation.prompt ?? null),
    irrelevant: exportsIrrelevant(c) ? c.inoculation.irrelevant_prompt : null,
  }),
  inputFiles: () => [promptPath("rephrase")],
  outputs: () => ["tables/rephrasings.parquet"],
  run: runRephrase,
};

/**
 * The distinct rephrasings in an answer, in order: whitespace trimmed, and a text that differs from the prompt
 * or an earlier one only in case, spacing or final punctuation counts as the same.
 */
export function distinctRephrasings(candidates: readonly string[], prompt: string): string[] {
  const norm = (s: string) => s.toLowerCase().replace(/\s+/g, " ").replace(/[.!\s]+$/, "").trim();
  const seen = new Set([norm(prompt)]);
  const out: string[] = [];
  for (const raw of candidates) {
    const text = raw.trim();
    const key = norm(text);
    if (key === "" || seen.has(key)) continue;
    seen.add(key);
    out.push(text);
  }
  return out;
}

async function runRephrase(ctx: StageContext): Promise<StageOutcome> {
  const { config, store, progress } = ctx;
  const { k, temperature, max_tokens } = config.rephrase;
  const prompts = await promptsToRephrase(config, store);
  const format = jsonSchemaFormat("rephrasings", rephrasingsSchema);
  const items: LlmItem<string[]>[] = prompts.map(({ origin, prompt }) => ({
    id: origin,
    request: { messages: renderPrompt("rephrase", { k: String(k), prompt }), temperature, max_tokens, response_format: format },
    reask: "feedback",
    parse: (answer): Parsed<string[]> => {
      const parsed = parseJsonAnswer(answer.texts[0] ?? "", rephrasingsSchema);
      if (!parsed.ok) return parsed;
      const distinct = distinctRephrasings(parsed.value.rephrasings, prompt);
      if (distinct.length < k) return { ok: false, error: `${distinct.length} distinct rephrasings where rephrase.k is ${k}` };
      return { ok: true, value: distinct.slice(0, k) };
    },
  }));

  const llm = await LlmSession.open(ctx, "rephrase");
  const outcomes = await llm.batch("judge", items, progress.task("rephrase", items.length, "prompts"));
  await llm.checkpoint(items.length);
  const rows: [string, string, number, string][] = [];
  for (const { origin, prompt } of prompts) {
    const outcome = outcomes.get(origin)!;
    if (outcome.status !== "ok") {
      throw new StageError(
        "rephrase",
        `llm.judge gave no usable rephrasings of the ${origin} prompt ${JSON.stringify(prompt)}: ${outcome.error}. ` +
          `Lower rephrase.k, or raise llm.judge.parse_retries (or rephrase.temperature) and rerun.`,
      );
    }
    outcome.value.forEach((text, idx) => rows.push([origin, prompt, idx, text]));
  }
  await fillTempTable(store, "rephrase_rows", { origin: "VARCHAR", prompt: "VARCHAR", idx: "INTEGER", rephrasing: "VARCHAR" }, rows);
  const written = await store.writeTable("rephrasings", "SELECT * FROM rephrase_rows ORDER BY origin, idx");
  return {
    rows: written,
    counts: { prompts: prompts.length, rephrasings: written },
    details: { llm: llm.usage() },
  };
}
