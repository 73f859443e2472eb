import { describe, expect, it } from "vitest";
import { existsSync } from "node:fs";
import { rm } from "node:fs/promises";
import { join } from "node:path";
import type { TableRef } from "../src/store/run-store.ts";
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

describe("RunStore derived views", () => {
  const joined = { name: "joined", tables: ["fruits", "colours"], select: (from: (t: string) => string) => `SELECT * FROM ${from("fruits")} f JOIN ${from("colours")} c USING (id)` };
  const firstJoined = { name: "first_joined", tables: ["joined"], select: (from: (t: string) => string) => `SELECT * FROM ${from("joined")} WHERE id = 0` };
  const orphan = { name: "orphan", tables: ["fruits", "missing"], select: (from: (t: string) => string) => `SELECT * FROM ${from("fruits")}` };

  it("reads a view, and a view over it, through table() like a stored table, and has it when its tables exist", async () => {
    const store = await tempStore();
    store.defineViews([joined, firstJoined, orphan]);
    await store.writeTable("fruits", "SELECT range AS id, 'l' || range AS l FROM range(3)");
    expect(await store.hasTable("joined")).toBe(false);
    await store.writeTable("colours", "SELECT range AS id, 'r' || range AS r FROM range(2)");
    expect(await store.hasTable("joined")).toBe(true);
    expect(await store.hasTable("first_joined")).toBe(true);
    expect(await store.hasTable("orphan")).toBe(false);
    expect(await store.query(`SELECT id, l, r FROM ${store.table("joined")} ORDER BY id`)).toEqual([
      { id: 0, l: "l0", r: "r0" },
      { id: 1, l: "l1", r: "r1" },
    ]);
    expect(await store.query(`SELECT id, r FROM ${store.table("first_joined")}`)).toEqual([{ id: 0, r: "r0" }]);
    expect(() => store.tablePath("joined")).toThrow(/joined is a view over fruits, colours/);
    expect(store.storedPaths("first_joined")).toEqual([store.tablePath("fruits"), store.tablePath("colours")]);
  });

  it("numbers a stored table's rows by their place in its file", async () => {
    const store = await tempStore();
    const numbered = { name: "numbered", tables: ["letters"], select: (from: TableRef) => `SELECT file_row_number AS n, c FROM ${from("letters", { rowNumbers: true })}` };
    store.defineViews([numbered]);
    await store.writeTable("letters", "SELECT chr(100 - range::INTEGER) AS c FROM range(3)");
    expect(await store.query(`SELECT n, c FROM ${store.table("numbered")} ORDER BY n`)).toEqual([
      { n: 0, c: "d" },
      { n: 1, c: "c" },
      { n: 2, c: "b" },
    ]);
    expect(() => store.table("numbered", { rowNumbers: true })).toThrow(/numbered is a view/);
  });

  it("puts a view per table and each derived view whose tables all exist in run.duckdb, and drops one whose table went", async () => {
    const store = await tempStore();
    store.defineViews([joined, firstJoined, orphan]);
    await store.writeTable("fruits", "SELECT range AS id, 'l' || range AS l FROM range(3)");
    await store.writeTable("colours", "SELECT range AS id, 'r' || range AS r FROM range(2)");
    // A stored file of a table that is now a view is stale: it goes, and the view takes its name.
    await store.run(`COPY (SELECT 'stale' AS stale) TO ${sqlString(join(store.dir, "tables", "first_joined.parquet"))}`);
    await store.refreshViews();
    expect(await store.query("SELECT id, l, r FROM joined ORDER BY id")).toEqual([
      { id: 0, l: "l0", r: "r0" },
      { id: 1, l: "l1", r: "r1" },
    ]);
    expect(await store.query("SELECT id, l FROM first_joined")).toEqual([{ id: 0, l: "l0" }]);
    const views = async () => (await store.query("SELECT view_name FROM duckdb_views() WHERE NOT internal ORDER BY 1")).map((v) => v.view_name);
    expect(await views()).toEqual(["colours", "first_joined", "fruits", "joined"]);
    expect(existsSync(join(store.dir, "tables", "first_joined.parquet"))).toBe(false);

    await store.run("DROP VIEW colours");
    await rm(store.tablePath("colours"));
    await store.refreshViews();
    expect(await views()).toEqual(["fruits"]);
  });
});
