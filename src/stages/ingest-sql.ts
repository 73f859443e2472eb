import type { SourceSpec } from "../config/load.ts";
import { sqlString, sqlStringList } from "../store/sql.ts";

/**
 * SQL that turns one source file into (line, raw JSON text) rows. For JSONL, each physical line is read as one
 * string, so `line` is the real 1-based line number (blank lines included) that error messages cite; for Parquet,
 * `line` is the 1-based row number and the row is re-encoded as JSON so that one validator serves both formats.
 */
export function sourceLinesSql(source: SourceSpec): string {
  const path = sqlString(source.path);
  if (source.format === "parquet") {
    return `SELECT row_number() OVER () AS line, to_json(p)::VARCHAR AS raw FROM read_parquet(${path}) p`;
  }
  // chr(1) never occurs in valid JSON text (control characters must be escaped), so every line is one field.
  return `SELECT row_number() OVER () AS line, raw
    FROM read_csv(${path}, columns = {'raw': 'VARCHAR'}, header = false, delim = chr(1), quote = '', escape = '',
                  auto_detect = false, max_line_size = 16777216, strict_mode = false)`;
}

const ALLOWED_ROLES = ["system", "user", "assistant"];

/** JSON path of a (possibly dotted) label field. */
function labelPath(field: string): string {
  return sqlString(`$.${field.split(".").map((part) => JSON.stringify(part)).join(".")}`);
}

/**
 * Parses and validates every line. Output columns: line, raw, reason (NULL when the row is valid), messages
 * (typed, for valid rows), label, has_negative.
 */
export function validatedSql(source: SourceSpec): string {
  const label = typeof source.negative === "object" ? `j.raw::JSON ->> ${labelPath(source.negative.field)}` : "NULL::VARCHAR";
  const negative = negativeSql(source);
  const roles = sqlStringList(ALLOWED_ROLES);
  return `
  WITH lines AS (${sourceLinesSql(source)}),
  nonblank AS (SELECT line, raw FROM lines WHERE raw IS NOT NULL AND trim(raw) <> ''),
  parsed AS (
    SELECT line, raw,
      CASE WHEN NOT json_valid(raw) THEN 'malformed JSON'
           WHEN json_type(raw::JSON) <> 'OBJECT' THEN 'the line is not a JSON object'
           WHEN json_type(raw::JSON, '$.messages') IS DISTINCT FROM 'ARRAY' THEN 'no "messages" list'
      END AS structure_error
    FROM nonblank
  ),
  typed AS (
    SELECT line, raw, structure_error,
      CASE WHEN structure_error IS NULL
           THEN from_json(raw::JSON -> '$.messages', '["JSON"]') END AS items
    FROM parsed
  ),
  checked AS (
    SELECT line, raw, items,
      coalesce(structure_error,
        list_filter(list_transform(items, (m, i) ->
          CASE WHEN json_type(m) <> 'OBJECT' THEN 'message ' || i || ' is not an object'
               WHEN json_type(m, '$.role') IS DISTINCT FROM 'VARCHAR' THEN 'message ' || i || ': "role" is missing or not a string'
               WHEN NOT list_contains(${roles}, m ->> '$.role') THEN 'message ' || i || ': role "' || (m ->> '$.role') || '" is not one of ${ALLOWED_ROLES.join(", ")}'
               WHEN json_type(m, '$.content') IS DISTINCT FROM 'VARCHAR' THEN 'message ' || i || ': "content" is ' || coalesce(lower(json_type(m, '$.content')), 'missing') || ', not a string'
          END), x -> x IS NOT NULL)[1]
      ) AS item_error
    FROM typed
  ),
  rows AS (
    SELECT line, raw,
      CASE WHEN item_error IS NULL THEN list_transform(items, m -> {'role': m ->> '$.role', 'content': m ->> '$.content'}) END AS messages,
      item_error
    FROM checked
  ),
  j AS (
    SELECT line, raw, messages,
      coalesce(item_error,
        CASE WHEN NOT list_contains(list_transform(messages, m -> m.role), 'user') THEN 'no user turn'
             WHEN NOT list_contains(list_transform(messages, m -> m.role), 'assistant') THEN 'no assistant turn'
             WHEN messages[-1].role <> 'assistant' THEN 'the last message is a ' || messages[-1].role || ' turn, not the assistant''s answer'
        END) AS row_error
    FROM rows
  )
  SELECT line, raw, messages, ${label} AS label,
    coalesce(row_error, CASE WHEN ${label} IS NULL THEN ${labelMissing(source)} END) AS reason,
    ${negative} AS has_negative
  FROM j`;
}

function labelMissing(source: SourceSpec): string {
  if (typeof source.negative !== "object") return "NULL";
  return sqlString(`label field "${source.negative.field}" is missing or null`);
}

function negativeSql(source: SourceSpec): string {
  const rule = source.negative;
  if (typeof rule === "boolean") return rule ? "true" : "false";
  const label = `(j.raw::JSON ->> ${labelPath(rule.field)})`;
  if (rule.contains !== undefined) return `coalesce(contains(${label}, ${sqlString(rule.contains)}), false)`;
  return `coalesce(list_contains(${sqlStringList(rule.equals ?? [])}, ${label}), false)`;
}
