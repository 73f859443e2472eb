import type { Table } from "apache-arrow";

/** Plain JS rows from an Arrow table: 64-bit integers as numbers, list cells as arrays. For tests and small tables. */
export function arrowRows(table: Table): Record<string, unknown>[] {
  return table.toArray().map((row) => {
    const out: Record<string, unknown> = {};
    for (const [key, value] of Object.entries(row.toJSON() as Record<string, unknown>)) out[key] = plain(value);
    return out;
  });
}

function plain(value: unknown): unknown {
  if (typeof value === "bigint") return Number(value);
  if (value && typeof value === "object" && "toArray" in value && typeof value.toArray === "function") {
    return Array.from(value.toArray() as ArrayLike<unknown>, plain);
  }
  return value;
}
