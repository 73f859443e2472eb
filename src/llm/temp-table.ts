import type { RunStore } from "../store/run-store.ts";
import { sqlIdent } from "../store/sql.ts";

export type ColumnType = "VARCHAR" | "INTEGER" | "BOOLEAN" | "DOUBLE";
type Cell = string | number | boolean | null;

/**
 * Fills a temporary table (gone when the store closes) with rows computed in TypeScript, through DuckDB's
 * appender, so a stage can write its Parquet table with one SQL statement that joins them to its inputs.
 */
export async function fillTempTable(
  store: RunStore,
  name: string,
  columns: Readonly<Record<string, ColumnType>>,
  rows: Iterable<readonly Cell[]>,
): Promise<void> {
  const types = Object.values(columns);
  const spec = Object.entries(columns).map(([column, type]) => `${sqlIdent(column)} ${type}`);
  await store.run(`CREATE OR REPLACE TEMP TABLE ${sqlIdent(name)} (${spec.join(", ")})`);
  const appender = await store.db.createAppender(name, "main", "temp");
  try {
    for (const row of rows) {
      types.forEach((type, i) => {
        const value = row[i] ?? null;
        if (value === null) appender.appendNull();
        else if (type === "VARCHAR") appender.appendVarchar(String(value));
        else if (type === "INTEGER") appender.appendInteger(Number(value));
        else if (type === "DOUBLE") appender.appendDouble(Number(value));
        else appender.appendBoolean(Boolean(value));
      });
      appender.endRow();
    }
    appender.flushSync();
  } finally {
    appender.closeSync();
  }
}
