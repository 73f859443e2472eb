import type { RunStore } from "../store/run-store.ts";
import { seededKeySql, sqlString, sqlStringList } from "../store/sql.ts";

export type Placement = "system" | "user_prefix";

export interface PromptPool {
  /** The prompts a selected row may carry; one is drawn per row when there are several. */
  readonly prompts: readonly string[];
}

/**
 * How an exported line is put together. Every arm exports the same conversation and differs only in the
 * inoculation, so a row's line in any arm is
 *
 *     line[0, at)  insert  line[at, end)  \n
 *
 * where `line` is `{"messages": …}` with the JSON of the row's message list, rendered once in SQL for all arms,
 * and `insert` is a short piece chosen per arm from a table built once per export:
 *
 * - `system` placement, a row without its own system message: `insert` is a whole system message and a comma,
 *   right after the list's `[`: the arm's prompt or the default system prompt (the inoculation takes the
 *   default's place, as in Tan et al.).
 * - `system` placement, a row with its own system message: `insert` is the prompt and separator, put before the
 *   row's own text inside that one message (one system message keeps every chat template working), or nothing.
 * - `user_prefix`: `insert` is the prompt and separator, inside the first user turn's text, or nothing; the
 *   system message is the row's own or the default, as in every other arm.
 *
 * JSON escaping composes (the escape of a + b is the escape of a followed by the escape of b), so an escaped
 * prompt put inside an escaped string gives exactly the JSON of the prefixed text. `at` is a byte offset: DuckDB
 * slicing a rendered string costs more than rendering it (measured), so SQL only says where to cut. The whole line
 * comes from SQL, not just the message list, so that each arm's line is three copies, not five: the writer's time
 * goes mostly to the calls, not the bytes (measured at 1M rows and five arms: 8.6-9.4 s of CPU against 6.5-6.8 s,
 * the same bytes out).
 */
interface LineParts {
  /** SQL over `m` (a `mixed` row): the line without its newline. */
  line: string;
  /** SQL over `m`: the byte offset in `line` where the insert goes. */
  at: string;
}

/** What every line starts with; the message list follows, then LINE_END. */
const LINE_START = '{"messages":';
const LINE_END = "}";
/** The JSON of a message list up to the opening quote of its first message's text, when that is a system message. */
const SYSTEM_TEXT_START = '[{"role":"system","content":"';
/** The JSON between the message before the first user turn and the user turn's text. */
const USER_TEXT_START = ',{"role":"user","content":"';
/** The JSON of a message list up to its first message's text, when that is a user turn. */
const FIRST_USER_TEXT_START = '[{"role":"user","content":"';

/** SQL over a message list: whether the row has its own system message (it comes first). */
function ownSystemSql(messages: string): string {
  return `(${messages}[1].role = 'system')`;
}

function linePartsSql(messages: string, placement: Placement, defaultSystemPrompt: string | null): LineParts {
  const m = messages;
  const own = ownSystemSql(m);
  const line = (list: string) => `${sqlString(LINE_START)} || to_json(${list})::VARCHAR || ${sqlString(LINE_END)}`;
  if (placement === "system") {
    return { line: line(m), at: `CASE WHEN ${own} THEN ${LINE_START.length + SYSTEM_TEXT_START.length} ELSE ${LINE_START.length + 1} END` };
  }
  const w =
    defaultSystemPrompt === null ? m : `(CASE WHEN ${own} THEN ${m} ELSE [{'role': 'system', 'content': ${sqlString(defaultSystemPrompt)}}] || ${m} END)`;
  // The first user turn's index; ingest guarantees one.
  const u = `list_position(list_transform(${w}, x -> x.role), 'user')`;
  // strlen counts bytes; the JSON before the user turn loses its closing bracket in the whole list's JSON.
  const after = `${LINE_START.length} + strlen(to_json(${w}[1:${u} - 1])::VARCHAR) - 1 + ${USER_TEXT_START.length}`;
  // Without a default system message a row's first turn may be the user's, with nothing before it.
  return {
    line: line(w),
    at: defaultSystemPrompt === null ? `CASE WHEN ${u} = 1 THEN ${LINE_START.length + FIRST_USER_TEXT_START.length} ELSE ${after} END` : after,
  };
}

/** The byte just before a row's insert point, for a cheap check that the JSON is laid out as linePartsSql expects. */
export function insertPointByte(placement: Placement, own: boolean): number {
  return (placement === "system" && !own ? "[" : '"').charCodeAt(0);
}

/**
 * SQL for the 0-based index of the prompt a row draws from `pool`, or -1 when the pool is empty: drawn per row
 * from the seed and the row id, so the same row draws the same prompt in every arm that uses the pool.
 */
function promptIndexSql(pool: PromptPool, seed: number, rowId: string): string {
  if (pool.prompts.length === 0) return "-1";
  if (pool.prompts.length === 1) return "0";
  return `(${seededKeySql(seed, "rephrase", rowId)} % ${pool.prompts.length})::INTEGER`;
}

/**
 * One arm's inserts: `[own][index + 1]` for a row with (1) or without (0) its own system message that carries
 * prompt `index` of the pool (-1: no prompt). Escaped by DuckDB, like the rest of the line.
 */
export type InsertTable = [Buffer[], Buffer[]];

export async function insertTable(
  store: RunStore,
  pool: PromptPool,
  options: { placement: Placement; defaultSystemPrompt: string | null; separator: string },
): Promise<InsertTable> {
  const texts = [options.defaultSystemPrompt ?? "", ...pool.prompts, ...pool.prompts.map((p) => p + options.separator)];
  const [row] = await store.query(`SELECT list_transform(${sqlStringList(texts)}, t -> to_json(t)::VARCHAR) AS json`);
  const json = row!.json as string[];
  const systemMessage = (i: number) => Buffer.from(`{"role":"system","content":${json[i]}},`);
  const prefix = (i: number) => Buffer.from(json[1 + pool.prompts.length + i]!.slice(1, -1));
  const prefixes = [Buffer.alloc(0), ...pool.prompts.map((_, i) => prefix(i))];
  if (options.placement === "user_prefix") return [prefixes, prefixes];
  // A row without a prompt or a system message of its own gets the default one, or none where there is none.
  const unprompted = options.defaultSystemPrompt === null ? Buffer.alloc(0) : systemMessage(0);
  return [[unprompted, ...pool.prompts.map((_, i) => systemMessage(1 + i))], prefixes];
}

/** One arm, for recordsSql: which rows carry a prompt (SQL over `m`) and the pool they draw from. */
export interface ArmRecordSpec {
  rows: string;
  pool: PromptPool;
}

/**
 * The records writeArmFiles reads (see arm-files.ts), one per row of `table` (aliased `m`): position, own system
 * message, insert offset, each arm's prompt index (-1: none), line.
 */
export function recordsSql(options: {
  table: string;
  placement: Placement;
  defaultSystemPrompt: string | null;
  seed: number;
  arms: readonly ArmRecordSpec[];
}): string {
  const parts = linePartsSql("m.messages", options.placement, options.defaultSystemPrompt);
  const indexes = options.arms.map((arm) => `CASE WHEN ${arm.rows} THEN ${promptIndexSql(arm.pool, options.seed, "m.row_id")} ELSE -1 END`);
  const fields = [`m.position`, `${ownSystemSql("m.messages")}::INTEGER`, parts.at, ...indexes].map((f) => `(${f})::VARCHAR`);
  // One column, its fields joined in SQL: DuckDB's CSV writer costs more per column than the joining does (a
  // third less CPU for the whole COPY, measured at 1M rows). `||` rather than concat_ws, which would skip a NULL
  // field silently; a NULL makes the record empty, which the reader refuses.
  return `SELECT ${[...fields, parts.line].join(" || '\x01' || ")} FROM ${options.table} m`;
}
