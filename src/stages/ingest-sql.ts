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

/** The JSON shape one parse extracts: roles and contents stay JSON so their types can be checked. */
function parseShape(source: SourceSpec): string {
  const shape: Record<string, unknown> = { messages: [{ role: "JSON", content: "JSON" }] };
  if (typeof source.negative === "object") {
    // A dotted label field becomes nested objects: meta.origin -> {"meta": {"origin": "VARCHAR"}}.
    const parts = source.negative.field.split(".");
    let node = shape;
    parts.forEach((part, i) => {
      node[part] = i === parts.length - 1 ? "VARCHAR" : (node[part] as Record<string, unknown>) ?? {};
      if (i < parts.length - 1) node = node[part] as Record<string, unknown>;
    });
  }
  return sqlString(JSON.stringify(shape));
}

function labelSql(source: SourceSpec): string {
  if (typeof source.negative !== "object") return "NULL::VARCHAR";
  return `p.${source.negative.field.split(".").map((part) => `"${part.replaceAll('"', '""')}"`).join(".")}`;
}

const ROLE_LITERALS = sqlStringList(ALLOWED_ROLES.map((r) => JSON.stringify(r)));

/**
 * Parses and validates every line. Output columns: line, raw, blank (an empty line: not a row), reason (NULL when
 * the row is valid), messages (typed, for valid rows), label, has_negative.
 *
 * Speed matters here (millions of rows): each line is parsed once into messages whose role and content stay JSON
 * text, and a row is valid when every role is one of the allowed string literals, every content is a JSON string,
 * there is a user turn and the last turn is the assistant's. Only rows that fail that cheap check go through the
 * slow path that works out the exact reason.
 */
export function validatedSql(source: SourceSpec): string {
  const label = labelSql(source);
  const requireLabel = typeof source.negative === "object" ? `AND ${label} IS NOT NULL` : "";
  // One linear pipeline (no CTE read twice): the slow reason is a CASE branch, which DuckDB evaluates only for
  // the rows that take it.
  return `
  SELECT line, raw, blank,
    CASE WHEN ok THEN list_transform(p.messages, m -> {'role': (m.role ->> '$'), 'content': (m.content ->> '$')}) END AS messages,
    CASE WHEN ok THEN ${label} END AS label,
    CASE WHEN ok THEN ${negativeSql(source, label)} END AS has_negative,
    CASE WHEN blank OR ok THEN NULL ELSE ${reasonSql(source)} END AS reason
  FROM (
    SELECT line, raw, blank, p, coalesce(
      len(p.messages) > 0
      AND list_bool_and(list_transform(p.messages, m -> coalesce(list_contains(${ROLE_LITERALS}, m.role) AND starts_with(m.content, '"'), false)))
      AND list_contains(list_transform(p.messages, m -> m.role), '"user"')
      AND p.messages[-1].role = '"assistant"'
      ${requireLabel}, false) AS ok
    FROM (
      SELECT line, raw, raw IS NULL OR trim(raw) = '' AS blank,
        CASE WHEN raw IS NOT NULL AND trim(raw) <> '' THEN try(from_json(raw, ${parseShape(source)})) END AS p
      FROM (${sourceLinesSql(source)})
    )
  )`;
}

/** The slow path, as one expression over `raw`: the exact reason a row failed the cheap check. */
function reasonSql(source: SourceSpec): string {
  const roles = sqlStringList(ALLOWED_ROLES);
  const items = `from_json(raw::JSON -> '$.messages', '["JSON"]')`;
  const roleList = `list_transform(${items}, m -> (m ->> '$.role'))`;
  const labelMissing =
    typeof source.negative === "object" ? sqlString(`label field "${source.negative.field}" is missing or null`) : "'unknown problem'";
  return `(CASE
    WHEN NOT json_valid(raw) THEN 'malformed JSON'
    WHEN json_type(raw::JSON) <> 'OBJECT' THEN 'the line is not a JSON object'
    WHEN json_type(raw::JSON, '$.messages') IS DISTINCT FROM 'ARRAY' THEN 'no "messages" list'
    ELSE coalesce(
      list_filter(list_transform(${items}, (m, i) ->
        CASE WHEN json_type(m) <> 'OBJECT' THEN 'message ' || i || ' is not an object'
             WHEN json_type(m, '$.role') IS DISTINCT FROM 'VARCHAR' THEN 'message ' || i || ': "role" is missing or not a string'
             WHEN NOT list_contains(${roles}, m ->> '$.role') THEN 'message ' || i || ': role "' || (m ->> '$.role') || '" is not one of ${ALLOWED_ROLES.join(", ")}'
             WHEN json_type(m, '$.content') IS DISTINCT FROM 'VARCHAR' THEN 'message ' || i || ': "content" is ' || coalesce(lower(json_type(m, '$.content')), 'missing') || ', not a string'
        END), x -> x IS NOT NULL)[1],
      CASE WHEN NOT list_contains(${roleList}, 'user') THEN 'no user turn'
           WHEN NOT list_contains(${roleList}, 'assistant') THEN 'no assistant turn'
           WHEN ${roleList}[-1] <> 'assistant' THEN 'the last message is a ' || ${roleList}[-1] || ' turn, not the assistant''s answer'
      END,
      ${labelMissing})
  END)`;
}

function negativeSql(source: SourceSpec, label: string): string {
  const rule = source.negative;
  if (typeof rule === "boolean") return rule ? "true" : "false";
  if (rule.contains !== undefined) return `coalesce(contains(${label}, ${sqlString(rule.contains)}), false)`;
  return `coalesce(list_contains(${sqlStringList(rule.equals ?? [])}, ${label}), false)`;
}

/** read_json's `columns` for the label field: `meta.origin` becomes {'meta': 'STRUCT("origin" VARCHAR)'}. */
function labelColumns(source: SourceSpec): string {
  if (typeof source.negative !== "object") return "";
  const [head, ...rest] = source.negative.field.split(".");
  const type = rest.reduceRight((inner, part) => `STRUCT("${part.replaceAll('"', '""')}" ${inner})`, "VARCHAR");
  return `, ${sqlString(head!)}: ${sqlString(type)}`;
}

function readJsonSql(source: SourceSpec, leafType: "VARCHAR" | "JSON"): string {
  return `read_json(${sqlString(source.path)}, format = 'newline_delimited', records = true,
    columns = {'messages': 'STRUCT(role ${leafType}, content ${leafType})[]'${labelColumns(source)}})`;
}

/**
 * The fast path's check for a JSONL source: DuckDB's typed JSON reader (several times faster than parsing lines
 * one by one) with roles and contents kept as JSON, counting records and those that would fail validation. When
 * no record fails and there are as many records as physical lines (no blank lines, so a record's number is its
 * line number; the caller counts the lines), the fast reader gives the same rows as the exact validator;
 * otherwise the ingest falls back to the exact, line-by-line validator. read_json raising (malformed JSON) also
 * means: fall back.
 */
export function fastCheckSql(source: SourceSpec): string {
  const label = typeof source.negative === "object" ? labelSql(source).replace(/^p\./, "") : null;
  return `SELECT count(*) AS records,
    count(*) FILTER (WHERE NOT coalesce(
      len(messages) > 0
      AND list_bool_and(list_transform(messages, m -> coalesce(list_contains(${ROLE_LITERALS}, m.role) AND starts_with(m.content, '"'), false)))
      AND list_contains(list_transform(messages, m -> m.role), '"user"')
      AND messages[-1].role = '"assistant"'
      ${label ? `AND ${label} IS NOT NULL` : ""}, false)) AS bad
  FROM ${readJsonSql(source, "JSON")}`;
}

/**
 * The fast path's rows, valid once fastCheckSql found no bad record and no blank line. The line numbers come
 * from a positional join with a range: `row_number() OVER ()` would make the whole read single-threaded (measured
 * 2.2x slower at 1M rows), while the positional join keeps the reader parallel and its rows in file order.
 */
export function fastRowsSql(source: SourceSpec, records: number): string {
  const label = typeof source.negative === "object" ? labelSql(source).replace(/^p\./, "") : "NULL::VARCHAR";
  return `SELECT n.line, messages, ${label} AS label, ${negativeSql(source, label)} AS has_negative
    FROM ${readJsonSql(source, "VARCHAR")} POSITIONAL JOIN (SELECT range + 1 AS line FROM range(${records})) n`;
}
