import { describe, expect, it } from "vitest";
import { sqlString } from "../src/store/sql.ts";
import { tempStore } from "./helpers.ts";

describe("RunStore.writeTable", () => {
  it("writes a table in row groups of at most 2,048 rows, in its query's order, and returns the row count", async () => {
    const store = await tempStore();
    const rows = await store.writeTable("numbers", "SELECT range AS n, repeat('x', 100) AS text FROM range(5000)");
    expect(rows).toBe(5000);
    const groups = await store.query(
      `SELECT row_group_id, any_value(row_group_num_rows) AS rows FROM parquet_metadata(${sqlString(store.tablePath("numbers"))})
       GROUP BY row_group_id ORDER BY row_group_id`,
    );
    expect(groups.map((g) => Number(g.rows))).toEqual([2048, 2048, 904]);
    const [order] = await store.query(
      `SELECT count(*) FILTER (WHERE n <> file_row_number) AS misplaced FROM read_parquet(${sqlString(store.tablePath("numbers"))}, file_row_number = true)`,
    );
    expect(Number(order!.misplaced)).toBe(0);
  });
});
