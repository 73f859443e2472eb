import { z } from "zod";
import type { ResolvedConfig } from "../config/load.ts";
import { StageError } from "../errors.ts";
import { renderConversation } from "../llm/conversation.ts";
import { promptPath, renderPrompt } from "../llm/prompts.ts";
import { LlmSession, type ItemOutcome, type LlmItem } from "../llm/session.ts";
import { jsonSchemaFormat, parseJsonAnswer } from "../llm/structured.ts";
import { fillTempTable } from "../llm/temp-table.ts";
import type { ChatMessage, Parsed } from "../llm/types.ts";
import type { Stage, StageContext, StageOutcome } from "../pipeline/stage.ts";
import { flagMetrics } from "../stats/flag-metrics.ts";
import { positiveTrait } from "../traits/registry.ts";
import { sha256 } from "../util/hash.ts";
import { plural } from "../util/plural.ts";

/** Longest turn shown per example when the judge writes the prompt (keeps that one request bounded). */
const EXAMPLE_TURN_CHARS = 1500;
/** Longest inoculation prompt accepted: a system prompt of a sentence or two, not an essay. */
const MAX_PROMPT_CHARS = 1000;

const verdictSchema = z.strictObject({ flagged: z.boolean(), reason: z.string() });
const promptSchema = z.strictObject({ prompt: z.string() });
type Verdict = z.infer<typeof verdictSchema>;

/**
 * The LLM audit: `llm.judge` reads each row of `mixed` and answers flagged yes/no with a reason, told the wanted
 * trait A so that A alone is never a reason to flag; then writes one inoculation prompt from a sample of the
 * flagged rows. Writes `audit_flags` (row_id, status flagged|clean|unparsed, flagged, reason, error) and
 * `audit_prompt`; reports precision and recall against the ground truth that `mix` kept.
 */
export const auditStage: Stage = {
  name: "audit",
  description: "the LLM audit: llm.judge flags rows and writes an inoculation prompt",
  version: 1,
  after: ["mix"],
  enabled: (c) => c.audit !== undefined,
  enableWith: "add an `audit` section (`audit: {}` takes the defaults)",
  configSlice: (c) => ({ model: c.llm.judge?.model, audit: c.audit, seed: c.seed, trait: wantedTrait(c) }),
  inputFiles: () => [promptPath("audit-row"), promptPath("audit-prompt")],
  outputs: () => ["tables/audit_flags.parquet", "tables/audit_prompt.parquet"],
  run: runAudit,
};

/** The text of trait A the judge is told about. */
function wantedTrait(config: ResolvedConfig): string {
  return positiveTrait(config.mix.positive_trait, { instruction: config.mix.rewrite.instruction }).description;
}

async function runAudit(ctx: StageContext): Promise<StageOutcome> {
  const { config, store, progress } = ctx;
  const audit = config.audit!;
  const trait = wantedTrait(config);
  const mixed = await store.query(
    `SELECT row_id, has_negative, to_json(messages)::VARCHAR AS messages FROM ${store.table("mixed")} ORDER BY position`,
  );
  const rows = mixed.map((r) => ({
    rowId: String(r.row_id),
    truth: Boolean(r.has_negative),
    messages: JSON.parse(String(r.messages)) as ChatMessage[],
  }));

  const llm = await LlmSession.open(ctx, "audit");
  const verdictFormat = jsonSchemaFormat("audit_verdict", verdictSchema);
  const items: LlmItem<Verdict>[] = rows.map((row) => ({
    id: row.rowId,
    request: {
      messages: renderPrompt("audit-row", { trait, conversation: renderConversation(row.messages) }),
      temperature: audit.temperature,
      max_tokens: audit.max_tokens,
      response_format: verdictFormat,
    },
    reask: "feedback",
    parse: (answer) => parseVerdict(answer.texts[0] ?? ""),
  }));
  const verdicts = await llm.batch("judge", items, progress.task("audit: rows", items.length, "rows"));
  await llm.checkpoint(items.length);
  if (audit.on_unparsed === "fail") failOnUnparsed(rows.map((row) => [row.rowId, verdicts.get(row.rowId)!] as const), config);

  const flagged = rows.filter((row) => isFlagged(verdicts.get(row.rowId)!));
  const examples = sampleExamples(flagged.map((r) => r.rowId), config.seed, audit.prompt_examples);
  const prompt = examples.length > 0 ? await writePrompt(llm, rows, verdicts, examples, trait, config) : null;

  await fillTempTable(
    store,
    "audit_verdicts",
    { row_id: "VARCHAR", status: "VARCHAR", flagged: "BOOLEAN", reason: "VARCHAR", error: "VARCHAR" },
    rows.map((row) => verdictRow(row.rowId, verdicts.get(row.rowId)!)),
  );
  await store.writeTable(
    "audit_flags",
    `SELECT v.* FROM audit_verdicts v JOIN ${store.table("mixed")} m USING (row_id) ORDER BY m.position`,
  );
  await fillTempTable(store, "audit_examples", { ord: "INTEGER", row_id: "VARCHAR" }, examples.map((id, i) => [i, id]));
  await fillTempTable(store, "audit_prompt_text", { prompt: "VARCHAR" }, [[prompt]]);
  await store.writeTable(
    "audit_prompt",
    `SELECT p.prompt, coalesce((SELECT list(row_id ORDER BY ord) FROM audit_examples), []::VARCHAR[]) AS example_row_ids
     FROM audit_prompt_text p`,
  );

  const metrics = flagMetrics(rows.map((row) => ({ flagged: verdictOf(verdicts.get(row.rowId)!), truth: row.truth })));
  const unparsed = metrics.unjudged;
  return {
    rows: rows.length,
    counts: { rows: rows.length, flagged: flagged.length, clean: rows.length - flagged.length - unparsed, unparsed },
    details: {
      llm: llm.usage(),
      audit: {
        ...metrics,
        prompt,
        ...(prompt === null ? { warning: "no row was flagged: the inoculated-llm arm carries no prompt" } : {}),
      },
    },
  };
}

/** How many unparsed rows a failing audit quotes. */
const QUOTED_UNPARSED = 5;

/**
 * An audit that left rows without a verdict would export an inoculated-llm arm that silently treats them as
 * clean, so by default it stops and says what to do. Every answer is already stored, so a rerun with more
 * parse_retries asks only for the new samples.
 */
function failOnUnparsed(outcomes: readonly (readonly [string, ItemOutcome<Verdict>])[], config: ResolvedConfig): void {
  const unparsed = outcomes.flatMap(([rowId, outcome]) => (outcome.status === "unparsed" ? [`${rowId}: ${outcome.error}`] : []));
  if (unparsed.length === 0) return;
  const answers = 1 + config.llm.judge!.parse_retries;
  const quoted = unparsed.slice(0, QUOTED_UNPARSED).map((line) => `  ${line}`);
  const more = unparsed.length > QUOTED_UNPARSED ? `\n  … and ${unparsed.length - QUOTED_UNPARSED} more` : "";
  throw new StageError(
    "audit",
    `${unparsed.length} of ${outcomes.length} rows got no verdict that parses (${plural(answers, "answer")} each):\n` +
      `${quoted.join("\n")}${more}\n` +
      `Every answer is stored: raise llm.judge.parse_retries and rerun to ask only for new samples, or set ` +
      `audit.on_unparsed: clean to leave those rows unflagged (no prompt in inoculated-llm; counted apart in the report).`,
  );
}

function parseVerdict(text: string): Parsed<Verdict> {
  const parsed = parseJsonAnswer(text, verdictSchema);
  if (parsed.ok && parsed.value.reason.trim() === "") return { ok: false, error: "the verdict gives no reason" };
  return parsed;
}

/** true / false, or null when the judge's answers never parsed: never a default label. */
function verdictOf(outcome: ItemOutcome<Verdict>): boolean | null {
  return outcome.status === "ok" ? outcome.value.flagged : null;
}

function isFlagged(outcome: ItemOutcome<Verdict>): boolean {
  return verdictOf(outcome) === true;
}

function verdictRow(rowId: string, outcome: ItemOutcome<Verdict>): [string, string, boolean | null, string | null, string | null] {
  if (outcome.status === "ok") return [rowId, outcome.value.flagged ? "flagged" : "clean", outcome.value.flagged, outcome.value.reason, null];
  // Failed items stopped the stage at the checkpoint, so what is left is unparsed.
  return [rowId, "unparsed", null, null, outcome.error];
}

/** Up to `count` flagged rows, drawn reproducibly from the seed (the same flags give the same sample). */
export function sampleExamples(rowIds: readonly string[], seed: number, count: number): string[] {
  return rowIds
    .map((id) => ({ id, key: sha256(`${seed}:audit-prompt:${id}`) }))
    .sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0))
    .slice(0, count)
    .map((x) => x.id);
}

async function writePrompt(
  llm: LlmSession,
  rows: readonly { rowId: string; messages: ChatMessage[] }[],
  verdicts: Map<string, ItemOutcome<Verdict>>,
  examples: readonly string[],
  trait: string,
  config: ResolvedConfig,
): Promise<string> {
  const byId = new Map(rows.map((r) => [r.rowId, r]));
  const shown = examples.map((id) => {
    const verdict = verdicts.get(id)!;
    const reason = verdict.status === "ok" ? verdict.value.reason : "";
    return `<row>\n${renderConversation(byId.get(id)!.messages, EXAMPLE_TURN_CHARS)}\n<reason>${reason}</reason>\n</row>`;
  });
  const item: LlmItem<string> = {
    id: "inoculation prompt",
    request: {
      messages: renderPrompt("audit-prompt", { trait, examples: shown.join("\n\n") }),
      temperature: config.audit!.temperature,
      max_tokens: config.audit!.max_tokens,
      response_format: jsonSchemaFormat("inoculation_prompt", promptSchema),
    },
    reask: "feedback",
    parse: (answer) => {
      const parsed = parseJsonAnswer(answer.texts[0] ?? "", promptSchema);
      if (!parsed.ok) return parsed;
      const prompt = parsed.value.prompt.trim();
      if (prompt === "") return { ok: false, error: "the prompt is empty" };
      if (prompt.length > MAX_PROMPT_CHARS) return { ok: false, error: `the prompt has ${prompt.length} characters (at most ${MAX_PROMPT_CHARS})` };
      return { ok: true, value: prompt };
    },
  };
  const outcome = (await llm.batch("judge", [item])).get(item.id)!;
  await llm.checkpoint(1);
  if (outcome.status !== "ok") {
    throw new StageError(
      "audit",
      `llm.judge wrote no usable inoculation prompt from ${examples.length} flagged rows: ${outcome.error}. ` +
        `Raise llm.judge.parse_retries and rerun to sample more (the answers so far are cached).`,
    );
  }
  return outcome.value;
}
