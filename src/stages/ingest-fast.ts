import type { SourceSpec } from "../config/load.ts";
import { StageError } from "../errors.ts";
import { fillTempTable } from "../llm/temp-table.ts";
import type { RunStore } from "../store/run-store.ts";
import { sqlIdent, sqlString } from "../store/sql.ts";
import { readLinesAt, type LineScan } from "../util/line-scan.ts";
import {
  fastBadLinesSql,
  fastCheckSql,
  fastRowsSql,
  oneReadRowsSql,
  parquetBadLinesSql,
  parquetCheckSql,
  parquetRowsSql,
  parquetTypesSql,
  validatedSql,
} from "./ingest-sql.ts";

/** The most bad rows a fast read of a JSONL file hands to the exact validator, and the most text they may hold. */
export const MAX_FAST_BAD_ROWS = 5000;
const MAX_FAST_BAD_BYTES = 256 << 20;

/** A source read by DuckDB's typed reader instead of line by line. */
export interface FastRead {
  /** Rows read (non-blank lines, or Parquet rows): kept + rejected. */
  records: number;
  blankLines: number;
  /** How many rows failed validation; their verdicts are in the bad-lines table given to fastRead. */
  bad: number;
  /**
   * SQL for the source's valid rows (line, messages, label, has_negative), or null where the read already wrote
   * them to the context's `table` (see oneReadRowsSql).
   */
  rows: string | null;
}

/** What a fast read needs: the store, the source (and its index among the sources), where verdicts go. */
export interface FastReadContext {
  store: RunStore;
  source: SourceSpec;
  index: number;
  /** The table the exact validator's verdicts on bad rows are inserted into. */
  verdicts: string;
  /** The stored table of the source's rows, which a JSONL read may write as it goes (see FastRead.rows). */
  table: string;
  onProgress: (percent: number) => void;
  /** The scan of a JSONL source's lines, started by the caller so that it runs while DuckDB reads the records. */
  scanned: Promise<LineScan> | null;
}

/**
 * Reads `source` with DuckDB's typed reader when that gives exactly what the line-by-line validator would, or
 * returns null when only the exact validator can (malformed JSON, a shape the typed reader cannot hold, lines of
 * odd whitespace, a Parquet column of other types). The typed reader is several times faster, so on a large file
 * with a few bad rows only those rows go through the exact validator, whose verdicts (source, line, blank, reason,
 * excerpt) are inserted into `verdicts`.
 */
export async function fastRead(ctx: FastReadContext): Promise<FastRead | null> {
  return ctx.source.format === "jsonl" ? fastJsonl(ctx) : fastParquet(ctx);
}

async function fastJsonl({ store, source, index, verdicts, table, onProgress, scanned }: FastReadContext): Promise<FastRead | null> {
  // Most files are clean: one read writes the rows and says whether it can vouch for all of them.
  try {
    await store.writeTable(table, oneReadRowsSql(source), onProgress);
  } catch {
    // Malformed JSON somewhere, or a shape the typed reader cannot hold: the exact validator will say where.
    return null;
  }
  const [read] = await store.query(
    `SELECT count(*) AS records, count(*) FILTER (WHERE NOT typed_check) AS unsure FROM ${store.table(table)}`,
  );
  const scan = await scanned!;
  const records = Number(read?.records);
  // read_json skips blank lines, so each record is a non-blank line, in order; anything else means the two
  // readers do not see the same lines.
  if (scan.irregular !== null || records + scan.blank.length !== scan.lines) return null;
  const dense = scan.blank.length === 0;
  const unsure = Number(read?.unsure);
  /** The rows the read wrote, when they are the right ones. */
  const written: FastRead = { records, blankLines: 0, bad: 0, rows: null };
  if (dense && unsure === 0) return written;
  if (dense && unsure <= MAX_FAST_BAD_ROWS) {
    // Each record is on its row's line, so the rows the read could not vouch for are found in what it wrote.
    const bad = await settleUnsure(store, source, table, verdicts);
    if (bad === 0) return written;
    if (bad !== null) {
      // Reading back what was written costs less than reading the JSON again (measured at 1M rows with one bad
      // row: 11.4-12.6 s for the whole ingest, against 19-24 s).
      const rows = `SELECT file_row_number + 1 AS line, messages, has_negative, label FROM ${store.table(table, { rowNumbers: true })}
        WHERE file_row_number + 1 NOT IN (SELECT line FROM ${verdicts} WHERE source = ${sqlString(source.name)})`;
      return { records, blankLines: 0, bad, rows };
    }
  }

  const [check] = await store.runWithProgress(fastCheckSql(source));
  const bad = Number(check?.bad);
  if (Number(check?.records) !== records) throw new Error(`ingest: ${source.path}: ${records} records read once, ${Number(check?.records)} checked`);
  // The rows written are the right ones when none was bad and each is on the line after the one before.
  if (dense && bad === 0) return written;
  // The bad rows' text is fetched in Node for the exact validator; past a few thousand (a whole file in another
  // format, say) the line-by-line validator, which keeps everything in DuckDB, is the better way.
  if (bad > MAX_FAST_BAD_ROWS) return null;

  let recordLines = `SELECT range + 1 AS line FROM range(${records})`;
  if (scan.blank.length > 0) {
    const table = `ingest_record_lines_${index}`;
    await fillTempTable(store, `${table}_blank`, { line: "INTEGER" }, scan.blank.map((line) => [line]));
    await store.run(`CREATE OR REPLACE TEMP TABLE ${sqlIdent(table)} AS
      SELECT range AS line FROM range(1, ${scan.lines + 1}) WHERE range NOT IN (SELECT line FROM ${sqlIdent(`${table}_blank`)})
      ORDER BY line`);
    recordLines = `SELECT line FROM ${sqlIdent(table)}`;
  }
  if (bad > 0) {
    const lines = (await store.query(fastBadLinesSql(source, recordLines))).map((r) => Number(r.line));
    if (lines.length !== bad) throw new Error(`ingest: ${source.path}: ${bad} bad records counted, ${lines.length} found`);
    const raw = await readLinesAt(source.path, lines, MAX_FAST_BAD_BYTES);
    if (raw === null) return null;
    await fillTempTable(store, "ingest_raw_bad", { line: "INTEGER", raw: "VARCHAR" }, lines.map((line, i) => [line, raw[i]!]));
    await insertVerdicts(store, source, verdicts, `SELECT line, raw FROM ingest_raw_bad`, bad);
  }
  const exclude = bad > 0 ? `SELECT line FROM ${verdicts} WHERE source = ${sqlString(source.name)}` : null;
  return { records, blankLines: scan.blank.length, bad, rows: fastRowsSql(source, recordLines, exclude) };
}

async function fastParquet({ store, source, verdicts, onProgress }: FastReadContext): Promise<FastRead | null> {
  let types: Map<string, string>;
  try {
    types = new Map((await store.query(parquetTypesSql(source))).map((r) => [String(r.column_name), String(r.column_type)]));
  } catch {
    // A file without the column at all is wrong as a whole: one message, not one verdict per row.
    const columns = await store
      .query(`DESCRIBE SELECT * FROM read_parquet(${sqlString(source.path)})`)
      .then((rows) => rows.map((r) => String(r.column_name)), () => null);
    if (columns && !columns.includes("messages")) {
      throw new StageError(
        "ingest",
        `${source.path}: no "messages" column (its columns: ${columns.join(", ")}); each row needs a messages list of ` +
          `{role, content}: write the conversations into a column of that name`,
      );
    }
    return null; // no messages list of structs with a role and a content: the exact validator says what is wrong
  }
  const typed = types.get("role") === "VARCHAR" && types.get("content") === "VARCHAR" && types.get("messages")!.endsWith("[]");
  if (!typed || (types.has("label") && types.get("label") !== "VARCHAR")) return null;
  const [check] = await store.runWithProgress(parquetCheckSql(source), onProgress);
  const records = Number(check?.records);
  const bad = Number(check?.bad);
  if (bad > 0) await insertVerdicts(store, source, verdicts, parquetBadLinesSql(source), bad);
  return { records, blankLines: 0, bad, rows: parquetRowsSql(source) };
}

/**
 * Runs the exact validator over the rows of a densely written JSONL `table` that the one read could not vouch
 * for, and stores the verdicts on those it rejects. Returns how many it rejects, or null when their text is too
 * big to fetch.
 */
async function settleUnsure(store: RunStore, source: SourceSpec, table: string, verdicts: string): Promise<number | null> {
  const lines = (
    await store.query(`SELECT file_row_number + 1 AS line FROM ${store.table(table, { rowNumbers: true })} WHERE NOT typed_check ORDER BY line`)
  ).map((r) => Number(r.line));
  const raw = await readLinesAt(source.path, lines, MAX_FAST_BAD_BYTES);
  if (raw === null) return null;
  await fillTempTable(store, "ingest_raw_unsure", { line: "INTEGER", raw: "VARCHAR" }, lines.map((line, i) => [line, raw[i]!]));
  return insertRejections(store, source, verdicts, "SELECT line, raw FROM ingest_raw_unsure");
}

/** Runs the exact validator over the bad rows' (line, raw) and stores its verdicts; each must name a reason. */
async function insertVerdicts(store: RunStore, source: SourceSpec, verdicts: string, lines: string, bad: number): Promise<void> {
  const explained = await insertRejections(store, source, verdicts, lines);
  if (explained !== bad) {
    throw new Error(`ingest: ${source.path}: the fast check found ${bad} bad rows, the exact validator explained ${explained}`);
  }
}

/**
 * Runs the exact validator over (line, raw) rows and stores the verdicts on those it rejects; returns how many
 * the source has rejected so far.
 */
async function insertRejections(store: RunStore, source: SourceSpec, verdicts: string, lines: string): Promise<number> {
  await store.run(`INSERT INTO ${verdicts} SELECT ${sqlString(source.name)}, line, blank, reason, left(raw, 200)
    FROM (${validatedSql(source, lines)}) WHERE reason IS NOT NULL`);
  const [row] = await store.query(`SELECT count(*) AS rejected FROM ${verdicts} WHERE source = ${sqlString(source.name)}`);
  return Number(row?.rejected);
}
