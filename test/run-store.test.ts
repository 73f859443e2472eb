import { describe, expect, it } from "vitest";
import { rm } from "node:fs/promises";
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

describe("RunStore.refreshViews", () => {
  it("makes a view per table and each derived view whose tables all exist, and drops one whose table went", async () => {
    const store = await tempStore();
    await store.writeTable("fruits", "SELECT range AS id, 'l' || range AS l FROM range(3)");
    await store.writeTable("colours", "SELECT range AS id, 'r' || range AS r FROM range(2)");
    const joined = { name: "joined", tables: ["fruits", "colours"], select: "SELECT * FROM fruits JOIN colours USING (id)" };
    const orphan = { name: "orphan", tables: ["fruits", "missing"], select: "SELECT * FROM fruits" };
    await store.refreshViews([joined, orphan]);
    expect(await store.query("SELECT id, l, r FROM joined ORDER BY id")).toEqual([
      { id: 0, l: "l0", r: "r0" },
      { id: 1, l: "l1", r: "r1" },
    ]);
    const views = async () => (await store.query("SELECT view_name FROM duckdb_views() WHERE NOT internal ORDER BY 1")).map((v) => v.view_name);
    expect(await views()).toEqual(["colours", "fruits", "joined"]);

    await store.run("DROP VIEW colours");
    await rm(store.tablePath("colours"));
    await store.refreshViews([joined]);
    expect(await views()).toEqual(["fruits"]);
  });
});
