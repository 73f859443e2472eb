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

/**
 * A line is blank when it is empty or holds only spaces (DuckDB's trim: Unicode space separators). trim() reads
 * the whole string (measured: 6 s over 1M chat rows), so it only runs on the rare line that does not open an
 * object. A CASE, because DuckDB evaluates both sides of an AND or OR in a select list (measured: 14 s against 2).
 */
const BLANK = `(CASE WHEN starts_with(raw, '{') THEN false ELSE coalesce(trim(raw) = '', true) END)`;

/**
 * The JSON shape one parse extracts. To validate, roles and contents stay JSON so that their types can be checked;
 * to read rows already validated, they are VARCHAR.
 */
function parseShape(source: SourceSpec, leaves: "JSON" | "VARCHAR"): string {
  const shape: Record<string, unknown> = { messages: [{ role: leaves, content: leaves }] };
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

/** The label field as a column path under `prefix` (`meta.origin` -> p."meta"."origin"), or null without a rule. */
function labelPath(source: SourceSpec, prefix = ""): string | null {
  if (typeof source.negative !== "object") return null;
  return `${prefix}${source.negative.field.split(".").map((part) => `"${part.replaceAll('"', '""')}"`).join(".")}`;
}

/** The label as a value: its column path, or NULL for a source without a label rule. */
function labelSql(source: SourceSpec, prefix = ""): string {
  return labelPath(source, prefix) ?? "NULL::VARCHAR";
}

const ROLE_LITERALS = sqlStringList(ALLOWED_ROLES.map((r) => JSON.stringify(r)));

/**
 * The cheap check that a row is valid, over its messages and label: every role is an allowed one, every content
 * a string, there is a user turn and the last turn is the assistant's, and the label (when the source has a label
 * rule) is there. `json`: roles and contents are JSON text, so a string is one that starts with a quote; `typed`:
 * they are VARCHAR already (a Parquet column), so only NULL is wrong; `cast`: JSON values read as VARCHAR, where
 * a content may have been a number or an object (see oneReadRowsSql), so one that reads as JSON fails.
 */
function cheapOkSql(messages: string, label: string | null, leaves: "json" | "typed" | "cast"): string {
  const [roles, user, assistant, isString] =
    leaves === "json"
      ? [ROLE_LITERALS, `'"user"'`, `'"assistant"'`, (c: string) => `starts_with(${c}, '"')`]
      : [
          sqlStringList(ALLOWED_ROLES),
          "'user'",
          "'assistant'",
          leaves === "typed" ? (c: string) => `${c} IS NOT NULL` : (c: string) => `(${c} IS NOT NULL AND NOT json_valid(${c}))`,
        ];
  return `coalesce(
      len(${messages}) > 0
      AND list_bool_and(list_transform(${messages}, m -> coalesce(list_contains(${roles}, m.role) AND ${isString("m.content")}, false)))
      AND list_contains(list_transform(${messages}, m -> m.role), ${user})
      AND ${messages}[-1].role = ${assistant}
      ${label ? `AND ${label} IS NOT NULL` : ""}, false)`;
}

/**
 * Parses and validates every line. Output columns: line, raw, blank (an empty line: not a row), reason (NULL when
 * the row is valid), messages (typed, for valid rows), label, has_negative.
 *
 * Speed matters here (millions of rows): each line is parsed once into messages whose role and content stay JSON
 * text, and a row is valid when every role is one of the allowed string literals, every content is a JSON string,
 * there is a user turn and the last turn is the assistant's. Only rows that fail that cheap check go through the
 * slow path that works out the exact reason.
 */
export function validatedSql(source: SourceSpec, lines: string = sourceLinesSql(source)): string {
  const label = labelSql(source, "p.");
  // One linear pipeline (no CTE read twice): the slow reason is a CASE branch, which DuckDB evaluates only for
  // the rows that take it.
  return `
  SELECT line, raw, blank,
    CASE WHEN ok THEN list_transform(p.messages, m -> {'role': (m.role ->> '$'), 'content': (m.content ->> '$')}) END AS messages,
    CASE WHEN ok THEN ${label} END AS label,
    CASE WHEN ok THEN ${negativeSql(source, label)} END AS has_negative,
    CASE WHEN blank OR ok THEN NULL ELSE ${reasonSql(source)} END AS reason
  FROM (
    SELECT line, raw, blank, p, ${cheapOkSql("p.messages", labelPath(source, "p."), "json")} AS ok
    FROM (
      /* No CASE around the parse: it takes DuckDB off its vectorised path (measured 3x slower). A blank line
         parses to NULL like a malformed one, and blank tells them apart. */
      SELECT line, raw, ${BLANK} AS blank, try(from_json(raw, ${parseShape(source, "JSON")})) AS p
      FROM (${lines})
    )
  )`;
}

/**
 * The valid rows of a source the exact validator has checked: every non-blank line but the `exclude`d ones (a
 * relation of line numbers: the bad lines), parsed once more straight into VARCHAR. Extracting each JSON leaf
 * from the validating parse instead costs more than that second parse (measured 1.9x at 1M rows).
 */
export function exactRowsSql(source: SourceSpec, exclude: string): string {
  const label = labelSql(source, "p.");
  return `SELECT line, p.messages, ${label} AS label, ${negativeSql(source, label)} AS has_negative
    FROM (SELECT line, from_json(raw, ${parseShape(source, "VARCHAR")}) AS p FROM (${sourceLinesSql(source)})
          WHERE NOT ${BLANK} AND line NOT IN (${exclude}))`;
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
             WHEN json_type(m, '$.content') IS DISTINCT FROM 'VARCHAR' THEN 'message ' || i || ': "content" is ' || ${jsonKindSql("json_type(m, '$.content')")} || ', not a string'
        END), x -> x IS NOT NULL)[1],
      CASE WHEN NOT list_contains(${roleList}, 'user') THEN 'no user turn'
           WHEN NOT list_contains(${roleList}, 'assistant') THEN 'no assistant turn'
           WHEN ${roleList}[-1] <> 'assistant' THEN 'the last message is a ' || ${roleList}[-1] || ' turn, not the assistant''s answer'
      END,
      ${labelMissing})
  END)`;
}

/** DuckDB's name for a JSON value's type, in JSON's words: UBIGINT is "a number", NULL "null". */
function jsonKindSql(type: string): string {
  return `(CASE ${type} WHEN 'NULL' THEN 'null' WHEN 'BOOLEAN' THEN 'a boolean' WHEN 'OBJECT' THEN 'an object'
    WHEN 'ARRAY' THEN 'a list' WHEN 'VARCHAR' THEN 'a string' ELSE CASE WHEN ${type} IS NULL THEN 'missing' ELSE 'a number' END END)`;
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

/** Counts the rows of a typed reader's relation and those that fail the cheap check. */
function countBadSql(source: SourceSpec, relation: string, leaves: "json" | "typed"): string {
  return `SELECT count(*) AS records, count(*) FILTER (WHERE NOT ${cheapOkSql("messages", labelPath(source), leaves)}) AS bad
  FROM ${relation}`;
}

/**
 * The fast path's check of a JSONL source: DuckDB's typed JSON reader (several times faster than parsing lines
 * one by one) with roles and contents kept as JSON, counting the records and those that fail the cheap check.
 * read_json skips blank lines and raises on malformed JSON or a shape it cannot read (`messages` not a list):
 * the caller then falls back to the exact, line-by-line validator.
 */
export function fastCheckSql(source: SourceSpec): string {
  return countBadSql(source, readJsonSql(source, "JSON"), "json");
}

/**
 * The line numbers of the records fastCheckSql counted as bad. `recordLines` is a relation with one `line` per
 * record, in file order (each non-blank line's number), joined positionally.
 */
export function fastBadLinesSql(source: SourceSpec, recordLines: string): string {
  return `SELECT n.line FROM ${readJsonSql(source, "JSON")} POSITIONAL JOIN (${recordLines}) n
    WHERE NOT ${cheapOkSql("messages", labelPath(source), "json")} ORDER BY n.line`;
}

/**
 * The fast path's rows where blank lines put records off their row's place, or where many rows only seem bad
 * (`exclude`: a relation of the bad lines' numbers): numbered by a positional join with `recordLines`, since
 * `row_number() OVER ()` would make the whole read single-threaded (measured 2.2x slower at 1M rows).
 */
export function fastRowsSql(source: SourceSpec, recordLines: string, exclude: string | null): string {
  const label = labelSql(source);
  return `SELECT n.line, messages, ${label} AS label, ${negativeSql(source, label)} AS has_negative
    FROM ${readJsonSql(source, "VARCHAR")} POSITIONAL JOIN (${recordLines}) n
    ${exclude ? `WHERE n.line NOT IN (${exclude})` : ""}`;
}

/**
 * A JSONL source read once, straight into the rows ingest stores, with line NULL: when every record is on the
 * line after the one before, the row's place in the table that stores it says the same for free (see
 * examplesView), where a positional join to number them costs 4.3 s of 9.5 at 1M rows. Beside them,
 * `typed_check`: whether the cheap check on the values as read vouches for the row. read_json turns a role or
 * content that is not a string into text (5 becomes '5', {"a": 1} becomes '{"a":1}', null becomes NULL), and
 * that text is always valid JSON, so a content that does not read as JSON was a string, and a row the check
 * passes is one the exact validator passes. A row it fails is bad or only looks it (a content of "42"): the
 * exact validator settles which (see ingest-fast.ts). Measured at 1M rows, alternating: one read 5.1-5.8 s
 * against 6.3-8.2 s for that check and then the write.
 */
export function oneReadRowsSql(source: SourceSpec): string {
  const label = labelSql(source);
  return `SELECT NULL::BIGINT AS line, messages, ${negativeSql(source, label)} AS has_negative, ${label} AS label,
      ${cheapOkSql("messages", labelPath(source), "cast")} AS typed_check
    FROM ${readJsonSql(source, "VARCHAR")}`;
}

/** Column types the Parquet fast path needs to know: the messages' role and content, and the label. */
export function parquetTypesSql(source: SourceSpec): string {
  const label = labelPath(source);
  return `DESCRIBE SELECT messages[1].role AS role, messages[1].content AS content, messages AS messages
    ${label ? `, ${label} AS label` : ""} FROM read_parquet(${sqlString(source.path)})`;
}

function readParquetSql(source: SourceSpec): string {
  return `read_parquet(${sqlString(source.path)}, file_row_number = true)`;
}

/**
 * The Parquet fast path, for a `messages` column typed list<struct<role: VARCHAR, content: VARCHAR>> (and a
 * VARCHAR label): the types are the file's, so the cheap check on typed values is the exact one. Records are
 * numbered by their row in the file, which the reader knows in parallel.
 */
export function parquetCheckSql(source: SourceSpec): string {
  return countBadSql(source, readParquetSql(source), "typed");
}

/** The bad rows of a typed Parquet source as (line, raw JSON) for the exact validator to say what is wrong. */
export function parquetBadLinesSql(source: SourceSpec): string {
  return `SELECT p.file_row_number + 1 AS line, json_merge_patch(to_json(p), '{"file_row_number": null}')::VARCHAR AS raw
    FROM ${readParquetSql(source)} p WHERE NOT ${cheapOkSql("p.messages", labelPath(source, "p."), "typed")}`;
}

export function parquetRowsSql(source: SourceSpec): string {
  const label = labelSql(source);
  return `SELECT file_row_number + 1 AS line, list_transform(messages, m -> {'role': m.role, 'content': m.content}) AS messages,
      ${label} AS label, ${negativeSql(source, label)} AS has_negative
    FROM ${readParquetSql(source)} WHERE ${cheapOkSql("messages", labelPath(source), "typed")}`;
}
