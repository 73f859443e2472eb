import type { LlmRoleName } from "../config/llm-schema.ts";
import { LlmSession, type LlmItem } from "../llm/session.ts";
import type { ChatMessage } from "../llm/types.ts";
import type { StageContext } from "../pipeline/stage.ts";
import type { LlmTrait, TurnToRewrite } from "./positive-trait.ts";

export interface RewriteOptions {
  role: LlmRoleName;
  temperature: number;
  max_tokens: number;
}

export interface RewrittenTurns {
  /** (row id, 1-based position of the turn in the row's messages, rewritten text) for every row kept whole. */
  turns: [string, number, string][];
  /** Rows with a turn whose rewrite never came back usable, with why. */
  bad: { rowId: string; reason: string }[];
  usage: ReturnType<LlmSession["usage"]>;
}

/**
 * Rewrites every assistant turn of `rows` with an LLM trait, each turn with the user turn it answers. Requests
 * that fail for good stop the stage (their answers are not the row's fault; a rerun retries them); a turn whose
 * answers never parse makes its row bad, and the caller fails or drops it. A bad row contributes no turn, so no
 * row ever goes through with a turn lacking the trait.
 */
export async function rewriteTurns(
  ctx: StageContext,
  trait: LlmTrait,
  rows: readonly { rowId: string; messages: readonly ChatMessage[] }[],
  options: RewriteOptions,
): Promise<RewrittenTurns> {
  const items: (LlmItem<string> & { rowId: string; turn: number })[] = [];
  for (const { rowId, messages } of rows) {
    let question = "";
    messages.forEach((m, i) => {
      if (m.role === "user") question = m.content;
      if (m.role !== "assistant") return;
      const turn: TurnToRewrite = { question, answer: m.content };
      items.push({
        id: `${rowId} turn ${i + 1}`,
        rowId,
        turn: i + 1,
        request: { messages: trait.rewriteMessages(turn), temperature: options.temperature, max_tokens: options.max_tokens },
        reask: "feedback",
        parse: (answer) => trait.parseRewrite(answer.texts[0] ?? "", turn),
      });
    });
  }
  const llm = await LlmSession.open(ctx, "mix");
  const outcomes = await llm.batch(options.role, items, ctx.progress.task(`mix: rewrite (${trait.name})`, items.length, "turns"));
  await llm.checkpoint(items.length);

  const bad = new Map<string, string>();
  for (const item of items) {
    const outcome = outcomes.get(item.id)!;
    if (outcome.status !== "ok" && !bad.has(item.rowId)) bad.set(item.rowId, `turn ${item.turn}: ${outcome.error}`);
  }
  const turns: [string, number, string][] = [];
  for (const item of items) {
    const outcome = outcomes.get(item.id)!;
    if (outcome.status === "ok" && !bad.has(item.rowId)) turns.push([item.rowId, item.turn, outcome.value]);
  }
  return { turns, bad: [...bad].map(([rowId, reason]) => ({ rowId, reason })), usage: llm.usage() };
}
