import { StageError } from "../errors.ts";
import type { Stage, StageContext, StageOutcome } from "../pipeline/stage.ts";
import { sqlString } from "../store/sql.ts";
import { fastCheckSql, fastRowsSql, validatedSql } from "./ingest-sql.ts";
import type { SourceSpec } from "../config/load.ts";
import type { RunStore } from "../store/run-store.ts";
import { countLines } from "../util/fs.ts";

/** How many bad rows a failing ingest quotes. */
const QUOTED_ERRORS = 5;

/**
 * Reads every source (JSONL or Parquet with a `messages` list), validates each row, and writes `examples` (one
 * row per valid conversation, with a stable id `<source>:<line>`) and `rejected` (line, reason, excerpt).
 * Counts always add up: read = kept + rejected (blank lines are counted apart and are not rows).
 */
export const ingestStage: Stage = {
  name: "ingest",
  description: "read and validate the source datasets",
  version: 1,
  after: [],
  enabled: () => true,
  configSlice: (c) => ({ sources: c.sourceList, on_bad_row: c.ingest.on_bad_row }),
  inputFiles: (c) => c.sourceList.map((s) => s.path),
  outputs: () => ["tables/examples.parquet", "tables/rejected.parquet"],
  run: runIngest,
};

async function runIngest({ config, store, progress }: StageContext): Promise<StageOutcome> {
  const sources = config.sourceList;
  const counts: Record<string, number> = { read: 0, kept: 0, rejected: 0, blank_lines: 0 };
  const check = progress.task("ingest: validate", 100);
  // Pass 1 keeps one narrow row per line (its verdict), so counts come from the same scan that validates and a
  // clean dataset costs no extra storage.
  await store.run(
    `CREATE OR REPLACE TEMP TABLE ingest_lines (source VARCHAR, line BIGINT, blank BOOLEAN, reason VARCHAR, excerpt VARCHAR)`,
  );
  const fast = new Map<string, number>();
  for (const [i, source] of sources.entries()) {
    const onProgress = (p: number) => check.percent((100 * i + p) / sources.length);
    const records = await fastCheck(store, source);
    if (records !== null) {
      fast.set(source.name, records);
      counts[`read_${source.name}`] = records;
      counts.read! += records;
      onProgress(100);
      continue;
    }
    await store.runWithProgress(
      `INSERT INTO ingest_lines SELECT ${sqlString(source.name)}, line, blank, reason,
         CASE WHEN reason IS NOT NULL THEN left(raw, 200) END
       FROM (${validatedSql(source)})`,
      onProgress,
    );
  }
  check.finish();
  for (const row of await store.query(
    `SELECT source, count(*) FILTER (WHERE NOT blank) AS read, count(*) FILTER (WHERE blank) AS blank
     FROM ingest_lines GROUP BY source`,
  )) {
    counts[`read_${row.source}`] = Number(row.read);
    counts.read! += Number(row.read);
    counts.blank_lines! += Number(row.blank);
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
    throw new StageError(
      "ingest",
      `${bad.length} bad row${bad.length > 1 ? "s" : ""}:\n${quoted.join("\n")}${more}\n` +
        `Fix the rows, or set ingest.on_bad_row: skip to set them aside in the "rejected" table.`,
    );
  }

  const write = progress.task("ingest: write examples", 100);
  const selects = sources.map((source) => {
    const records = fast.get(source.name);
    const rows = records !== undefined ? fastRowsSql(source, records) : `${validatedSql(source)} WHERE reason IS NULL AND NOT blank`;
    return `SELECT ${sqlString(source.name)} || ':' || v.line AS row_id, ${sqlString(source.name)} AS source,
        v.line, v.messages, v.has_negative, v.label
      FROM (${rows}) v`;
  });
  const kept = await store.writeTable("examples", selects.join("\nUNION ALL\n"), (p) => write.percent(p));
  write.finish();
  await store.writeTable("rejected", `SELECT source, line, reason, excerpt FROM ingest_bad ORDER BY source, line`);
  counts.kept = kept;
  const [negatives] = await store.query(`SELECT count(*) FILTER (WHERE has_negative) AS n FROM ${store.table("examples")}`);
  counts.kept_negative = Number(negatives?.n ?? 0);
  counts.kept_clean = kept - counts.kept_negative;
  if (counts.read !== counts.kept + counts.rejected) {
    throw new Error(`ingest counts do not add up: read ${counts.read} != kept ${counts.kept} + rejected ${counts.rejected}`);
  }
  return { rows: kept, counts };
}

/**
 * The number of rows when DuckDB's typed JSON reader can read this source as is (see fastCheckSql), or null
 * when the exact validator must. The file's lines are counted in Node while DuckDB checks the records.
 */
async function fastCheck(store: RunStore, source: SourceSpec): Promise<number | null> {
  if (source.format !== "jsonl") return null;
  const lines = countLines(source.path);
  try {
    const [row] = await store.query(fastCheckSql(source));
    return Number(row?.bad) === 0 && (await lines) === Number(row?.records) ? Number(row?.records) : null;
  } catch {
    // Malformed JSON somewhere: the exact validator will say where.
    return null;
  } finally {
    await lines.catch(() => undefined);
  }
}
