import type { ResolvedConfig } from "../config/load.ts";
import { StageError } from "../errors.ts";
import { LlmSession, type LlmItem } from "../llm/session.ts";
import { fillTempTable } from "../llm/temp-table.ts";
import type { ChatMessage, LlmAnswer, Parsed } from "../llm/types.ts";
import type { Stage, StageContext, StageOutcome } from "../pipeline/stage.ts";

/** How many rows without a usable answer a failing stage quotes. */
const QUOTED_ROWS = 5;

/**
 * The original model's own answers: for each row of `mixed`, `generate.n` responses from `llm.generator` to the
 * row's last user turn, with the conversation before it, under the model's default system prompt (or the row's
 * own system message). Writes `base_responses` (row_id, sample, response, finish_reason), matched to rows by
 * row id. Rows with the same conversation make the same request, so they are sent once and share the answers.
 */
export const generateStage: Stage = {
  name: "generate",
  description: "the original model's own responses (llm.generator)",
  version: 1,
  after: ["mix"],
  enabled: (c) => c.llm.generator !== undefined,
  enableWith: "set `llm.generator`",
  configSlice: (c) => ({
    model: c.llm.generator?.model,
    generate: c.generate,
    seed: c.seed,
    default_system_prompt: c.model.default_system_prompt,
  }),
  inputFiles: () => [],
  outputs: () => ["tables/base_responses.parquet"],
  run: runGenerate,
};

/**
 * The request's messages: the row up to and including its last user turn, with the default system prompt put
 * first when the row has no system message (sent explicitly, so every server answers under the same prompt).
 */
export function generationMessages(messages: readonly ChatMessage[], defaultSystemPrompt: string | null): ChatMessage[] {
  const lastUser = messages.map((m) => m.role).lastIndexOf("user");
  const prompt = messages.slice(0, lastUser + 1);
  if (prompt[0]?.role === "system" || defaultSystemPrompt === null) return prompt;
  return [{ role: "system", content: defaultSystemPrompt }, ...prompt];
}

async function runGenerate(ctx: StageContext): Promise<StageOutcome> {
  const { config, store, progress } = ctx;
  const rows = await store.query(`SELECT row_id, to_json(messages)::VARCHAR AS messages FROM ${store.table("mixed")} ORDER BY position`);
  const items = rows.map((row) => generationItem(String(row.row_id), JSON.parse(String(row.messages)) as ChatMessage[], config));

  const llm = await LlmSession.open(ctx, "generate");
  const outcomes = await llm.batch("generator", items, progress.task("generate", items.length, "rows"));
  await llm.checkpoint(items.length);

  const answered: [string, number, string, string][] = [];
  const unusable: string[] = [];
  for (const item of items) {
    const outcome = outcomes.get(item.id)!;
    if (outcome.status !== "ok") {
      unusable.push(`${item.id}: ${outcome.error}`);
      continue;
    }
    const { texts, finish_reasons } = outcome.value;
    texts.forEach((text, sample) => answered.push([item.id, sample, text, finish_reasons[sample] ?? ""]));
  }
  if (unusable.length > 0) {
    const more = unusable.length > QUOTED_ROWS ? `\n  … and ${unusable.length - QUOTED_ROWS} more` : "";
    throw new StageError(
      "generate",
      `${unusable.length} rows got no usable answer from llm.generator:\n  ${unusable.slice(0, QUOTED_ROWS).join("\n  ")}${more}\n` +
        `Check that llm.generator serves a chat model that honours n (generate.n ${config.generate.n}).`,
    );
  }

  await fillTempTable(store, "generate_answers", { row_id: "VARCHAR", sample: "INTEGER", response: "VARCHAR", finish_reason: "VARCHAR" }, answered);
  const written = await store.writeTable(
    "base_responses",
    `SELECT a.row_id, a.sample, a.response, a.finish_reason
     FROM generate_answers a JOIN ${store.table("mixed")} m USING (row_id)
     ORDER BY m.position, a.sample`,
  );
  return {
    rows: written,
    counts: { rows: items.length, responses: written, truncated: answered.filter((a) => a[3] === "length").length },
    details: { llm: llm.usage() },
  };
}

function generationItem(rowId: string, messages: ChatMessage[], config: ResolvedConfig): LlmItem<LlmAnswer> {
  const n = config.generate.n;
  return {
    id: rowId,
    request: {
      messages: generationMessages(messages, config.model.default_system_prompt),
      temperature: config.generate.temperature,
      max_tokens: config.generate.max_tokens,
      n,
      seed: config.seed,
    },
    parse: (answer): Parsed<LlmAnswer> => {
      if (answer.texts.length !== n) return { ok: false, error: `${answer.texts.length} choices where generate.n is ${n}` };
      // No content (a refusal or a tool call) or only whitespace: no base response to diff against, so it is
      // sampled again, and never stored as one.
      const empty = answer.texts.findIndex((text) => text.trim() === "");
      if (empty !== -1) return { ok: false, error: `choice ${empty} has no text (finish_reason ${answer.finish_reasons[empty] || "none"})` };
      return { ok: true, value: answer };
    },
  };
}
