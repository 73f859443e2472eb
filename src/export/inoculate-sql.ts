import { seededKeySql, sqlString, sqlStringList } from "../store/sql.ts";

export type Placement = "system" | "user_prefix";

export interface PromptPool {
  /** The prompts a selected row may carry; one is drawn per row when there are several. */
  readonly prompts: readonly string[];
}

/**
 * SQL for the prompt a row carries: one of the pool, drawn per row from the seed and the row id (the same row
 * draws the same prompt in every arm, so arms differ only in which rows carry a prompt).
 */
export function promptSql(pool: PromptPool, seed: number, rowId: string): string {
  if (pool.prompts.length === 0) return "NULL::VARCHAR";
  if (pool.prompts.length === 1) return sqlString(pool.prompts[0]!);
  const index = `(1 + (${seededKeySql(seed, "rephrase", rowId)} % ${pool.prompts.length})::BIGINT)`;
  // Parenthesised: `[...]::VARCHAR[][i]` would parse as a two-dimensional type.
  return `(${sqlStringList(pool.prompts)})[${index}]`;
}

/**
 * The messages of an exported row, given `prompt` (a SQL expression, NULL when the row carries none).
 * - A row without a system message gets the default system prompt, or the prompt itself under `system`
 *   placement (the inoculation takes the default's place, as in Tan et al.).
 * - A row with its own system message keeps it: under `system` placement the prompt goes before it in the same
 *   message (one system message keeps every chat template working).
 * - `user_prefix` puts the prompt before the first user turn's text and leaves the system message as above.
 */
export function inoculatedMessagesSql(options: {
  messages: string;
  prompt: string;
  placement: Placement;
  defaultSystemPrompt: string;
  separator: string;
}): string {
  const { messages: msgs, prompt, placement } = options;
  const sep = sqlString(options.separator);
  const hasSystem = `(${msgs}[1].role = 'system')`;
  const withDefault = `CASE WHEN ${hasSystem} THEN ${msgs} ELSE [{'role': 'system', 'content': ${sqlString(options.defaultSystemPrompt)}}] || ${msgs} END`;
  if (placement === "system") {
    return `CASE
      WHEN ${prompt} IS NULL THEN ${withDefault}
      WHEN ${hasSystem} THEN [{'role': 'system', 'content': ${prompt} || ${sep} || ${msgs}[1].content}] || ${msgs}[2:]
      ELSE [{'role': 'system', 'content': ${prompt}}] || ${msgs} END`;
  }
  const firstUser = `list_position(list_transform(${msgs}, x -> x.role), 'user') + (CASE WHEN ${hasSystem} THEN 0 ELSE 1 END)`;
  return `CASE WHEN ${prompt} IS NULL THEN ${withDefault}
    ELSE list_transform(${withDefault}, (x, i) -> CASE WHEN i = ${firstUser}
      THEN {'role': x.role, 'content': ${prompt} || ${sep} || x.content} ELSE x END) END`;
}
