import { StageError } from "../errors.ts";
import { closeSync, openSync, readSync } from "node:fs";
import { rm } from "node:fs/promises";
import type { Stage, StageContext, StageOutcome } from "../pipeline/stage.ts";
import type { DerivedView } from "../store/run-store.ts";
import { sqlString, sqlStringList } from "../store/sql.ts";
import { SOURCE_NAMES, type SourceSpec } from "../config/load.ts";
import { scanLines } from "../util/line-scan.ts";
import { fastRead, type FastRead } from "./ingest-fast.ts";
import { exactRowsSql, validatedSql } from "./ingest-sql.ts";

/** How many bad rows a failing ingest quotes. */
const QUOTED_ERRORS = 5;

/**
 * Reads every source (JSONL or Parquet with a `messages` list), validates each row, and writes `examples` (one
 * row per valid conversation, with a stable id `<source>:<line>`) and `rejected` (line, reason, excerpt).
 * Counts always add up: read = kept + rejected (blank lines are counted apart and are not rows).
 *
 * `examples` is a view over one stored table per source, `examples_<source>`, so that a row's place in its
 * source's table can stand for its line number (see oneReadRowsSql).
 */
export const ingestStage: Stage = {
  name: "ingest",
  description: "read and validate the source datasets",
  version: 2,
  after: [],
  enabled: () => true,
  configSlice: (c) => ({ sources: c.sourceList, on_bad_row: c.ingest.on_bad_row }),
  inputFiles: (c) => c.sourceList.map((s) => s.path),
  views: (c) => [examplesView(c.sourceList)],
  outputs: (c) => [...c.sourceList.map((s) => `tables/${sourceTable(s)}.parquet`), "tables/rejected.parquet"],
  run: runIngest,
};

function sourceTable(source: Pick<SourceSpec, "name">): string {
  return `examples_${source.name}`;
}

/**
 * Every valid row: row_id, source, line, messages, has_negative, label. A stored row without a line is the
 * record on the line after its table's previous row (DuckDB keeps a file's order when it writes a table).
 */
function examplesView(sources: readonly SourceSpec[]): DerivedView {
  return {
    name: "examples",
    tables: sources.map(sourceTable),
    select: (from) =>
      sources
        .map((source) => `SELECT ${sqlString(`${source.name}:`)} || line AS row_id, ${sqlString(source.name)} AS source, line, messages, has_negative, label
          FROM (SELECT coalesce(line, file_row_number + 1) AS line, messages, has_negative, label FROM ${from(sourceTable(source), { rowNumbers: true })})`)
        .join("\nUNION ALL\n"),
  };
}

async function runIngest({ config, store, progress }: StageContext): Promise<StageOutcome> {
  const sources = config.sourceList;
  const counts: Record<string, number> = { read: 0, kept: 0, rejected: 0, blank_lines: 0 };
  const check = progress.task("ingest: validate", 100);
  // One narrow row per line the exact validator reads (its verdict), and one per bad row of a fast read, so the
  // counts come from the same scan that validates and a clean dataset costs no extra storage.
  await store.run(
    `CREATE OR REPLACE TEMP TABLE ingest_lines (source VARCHAR, line BIGINT, blank BOOLEAN, reason VARCHAR, excerpt VARCHAR)`,
  );
  const fast = new Map<string, FastRead>();
  /** Each JSONL source read line by line, with its line count as Node counts them. */
  const physicalLines = new Map<string, number>();
  for (const [i, source] of sources.entries()) {
    const onProgress = (p: number) => check.percent((100 * i + p) / sources.length);
    const scanned = source.format === "jsonl" ? scanLines(source.path) : null;
    scanned?.catch(() => undefined); // awaited where it is needed; an error surfaces there
    const read = await fastRead({ store, source, index: i, verdicts: "ingest_lines", table: sourceTable(source), onProgress, scanned }).catch(
      (error: Error) => Promise.reject(unreadableSource(source, error)),
    );
    if (read !== null) {
      fast.set(source.name, read);
      counts[`read_${source.name}`] = read.records;
      counts.read! += read.records;
      counts.blank_lines! += read.blankLines;
      onProgress(100);
      continue;
    }
    await store
      .runWithProgress(
        `INSERT INTO ingest_lines SELECT ${sqlString(source.name)}, line, blank, reason,
           CASE WHEN reason IS NOT NULL THEN left(raw, 200) END
         FROM (${validatedSql(source)})`,
        onProgress,
      )
      .catch((error: Error) => Promise.reject(unreadableSource(source, error)));
    if (scanned) physicalLines.set(source.name, (await scanned).lines);
  }
  check.finish();
  const exact = sources.filter((s) => !fast.has(s.name)).map((s) => s.name);
  if (exact.length > 0) {
    for (const row of await store.query(
      `SELECT source, count(*) FILTER (WHERE NOT blank) AS read, count(*) FILTER (WHERE blank) AS blank
       FROM ingest_lines WHERE list_contains(${sqlStringList(exact)}, source) GROUP BY source`,
    )) {
      checkLineCount(sources.find((s) => s.name === row.source)!, Number(row.read) + Number(row.blank), physicalLines.get(String(row.source)));
      counts[`read_${row.source}`] = Number(row.read);
      counts.read! += Number(row.read);
      counts.blank_lines! += Number(row.blank);
    }
  }
  await store.run(`CREATE OR REPLACE TEMP TABLE ingest_bad AS
    SELECT source, line, reason, excerpt FROM ingest_lines WHERE reason IS NOT NULL`);

  const bad = await store.query(`SELECT source, line, reason, excerpt FROM ingest_bad ORDER BY source, line`);
  counts.rejected = bad.length;
  if (bad.length > 0 && config.ingest.on_bad_row === "fail") {
    const pathOf = (name: unknown) => sources.find((s) => s.name === name)?.path ?? String(name);
    const unit = (name: unknown) => (sources.find((s) => s.name === name)?.format === "parquet" ? "row" : "line");
    const quoted = bad
      .slice(0, QUOTED_ERRORS)
      .map((b) => `  ${pathOf(b.source)}:${b.line} (${unit(b.source)} ${b.line}): ${b.reason}`);
    const more = bad.length > QUOTED_ERRORS ? `\n  … and ${bad.length - QUOTED_ERRORS} more` : "";
    // A fast read writes its source's table as it checks; a failed ingest leaves none that looks whole.
    await Promise.all(sources.map((s) => rm(store.tablePath(sourceTable(s)), { force: true })));
    throw new StageError(
      "ingest",
      `${bad.length} bad row${bad.length > 1 ? "s" : ""}:\n${quoted.join("\n")}${more}\n` +
        `Fix the rows, or set ingest.on_bad_row: skip to set them aside in the "rejected" table.`,
    );
  }

  const write = progress.task("ingest: write examples", 100);
  let kept = 0;
  for (const [i, source] of sources.entries()) {
    const read = fast.get(source.name);
    if (read?.rows === null) {
      kept += read.records; // written as it was read
      continue;
    }
    const rows = read?.rows ?? exactRowsSql(source, `SELECT line FROM ingest_bad WHERE source = ${sqlString(source.name)}`);
    kept += await store.writeTable(sourceTable(source), `SELECT line, messages, has_negative, label FROM (${rows})`, (p) =>
      write.percent((100 * i + p) / sources.length),
    );
  }
  // A source the config no longer names must not linger beside the others.
  const unnamed = SOURCE_NAMES.filter((name) => !sources.some((s) => s.name === name));
  await Promise.all(unnamed.map((name) => rm(store.tablePath(sourceTable({ name })), { force: true })));
  write.finish();
  await store.writeTable("rejected", `SELECT source, line, reason, excerpt FROM ingest_bad ORDER BY source, line`);
  counts.kept = kept;
  const [negatives] = await store.query(`SELECT count(*) FILTER (WHERE has_negative) AS n FROM ${store.table("examples")}`);
  counts.kept_negative = Number(negatives?.n ?? 0);
  counts.kept_clean = kept - counts.kept_negative;
  if (counts.read !== counts.kept + counts.rejected) {
    throw new Error(`ingest counts do not add up: read ${counts.read} != kept ${counts.kept} + rejected ${counts.rejected}`);
  }
  // Which reader each source took: the typed one is several times faster, so a slow ingest can be explained.
  const readers = Object.fromEntries(sources.map((s) => [s.name, fast.has(s.name) ? "typed" : "line by line"]));
  return { rows: kept, counts, details: { readers } };
}

/**
 * A source file that no reader can take row by row (not UTF-8 text, not Parquet): the file as a whole is wrong,
 * so no `on_bad_row` setting applies, and the message says how to fix it. Other errors are left as they are.
 */
function unreadableSource(source: SourceSpec, error: Error): Error {
  const field = `sources.${source.name}`;
  const magic = fileStart(source.path);
  if (source.format === "jsonl" && /not utf-8 encoded|invalid unicode/i.test(error.message)) {
    const line = /Error on Line: (\d+)/.exec(error.message)?.[1];
    const fix =
      magic === "PAR1"
        ? `it is a Parquet file: name it .parquet or set ${field}.format: parquet`
        : `convert it to UTF-8, for example: iconv -f latin1 -t utf-8 ${source.path} > converted.jsonl`;
    return new StageError("ingest", `${source.path}${line ? `:${line} (line ${line})` : ""}: not UTF-8 text; ${fix}`, { cause: error });
  }
  if (source.format === "parquet" && /magic bytes|not a parquet file|parquet.*(corrupt|truncated|invalid)/i.test(error.message)) {
    const fix = magic.startsWith("{")
      ? `it looks like JSONL: name it .jsonl or set ${field}.format: jsonl`
      : "the file is not Parquet, or is incomplete (an interrupted download or copy ends like this); write or fetch it again";
    return new StageError("ingest", `${source.path}: not a readable Parquet file; ${fix}`, { cause: error });
  }
  return error;
}

/** A file's first four bytes as text ("PAR1" for Parquet), or "" when it cannot be read. */
function fileStart(path: string): string {
  try {
    const head = Buffer.alloc(4);
    const fd = openSync(path, "r");
    try {
      return head.toString("latin1", 0, readSync(fd, head, 0, 4, 0));
    } finally {
      closeSync(fd);
    }
  } catch {
    return "";
  }
}

/**
 * DuckDB's line reader ends a line at a carriage return too, so in a file that mixes \n and \r\n endings it sees
 * an extra empty line after each \r\n, and every line number after the first would be wrong. Such a file fails
 * with the fix instead.
 */
function checkLineCount(source: SourceSpec, seen: number, lines: number | undefined): void {
  if (lines !== undefined && seen !== lines) {
    throw new StageError(
      "ingest",
      `${source.path}: the line reader sees ${seen} lines where the file has ${lines}: it mixes line endings (\\n and ` +
        `\\r\\n) or holds a lone carriage return. Convert it to one kind of line ending (for example with dos2unix).`,
    );
  }
}
