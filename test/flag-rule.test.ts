import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DuckDBInstance, type DuckDBConnection } from "@duckdb/node-api";
import { FLAG_COLUMNS, flagRowsSql, type FlagRuleOptions } from "../src/labels/flag-rule.ts";

/**
 * The flag rule on hand-built tables. Latent labels: 1, 2, 3, 8, 10 `no`; 4, 9 `yes`; 5 `neutral`; 6 unlabelled
 * (NULL); 7 has no feature_labels row; 99 is `no` but not among the run's top latents. Every expectation below
 * was worked out by hand from the tables.
 */
let instance: DuckDBInstance;
let db: DuckDBConnection;

beforeAll(async () => {
  instance = await DuckDBInstance.create(":memory:");
  db = await instance.connect();
  await db.run(`
    CREATE TABLE mixed AS SELECT * FROM (VALUES ('r3', 0), ('r1', 1), ('r7', 2), ('r2', 3), ('r4', 4), ('r6', 5), ('r5', 6)) t(row_id, position);
    CREATE TABLE features AS SELECT range::INTEGER AS latent FROM range(1, 13);
    CREATE TABLE feature_labels AS SELECT * FROM (VALUES
      (1, 'no'), (2, 'no'), (3, 'no'), (4, 'yes'), (5, 'neutral'), (6, NULL), (8, 'no'), (9, 'yes'), (10, 'no'), (99, 'no')
    ) t(latent, label);
    CREATE TABLE example_features (row_id VARCHAR, latent INTEGER, diff FLOAT);
    INSERT INTO example_features VALUES
      -- r1: top 3 by diff are 4 (yes), 1 (no), 2 (no)
      ('r1', 4, 5.0), ('r1', 1, 4.0), ('r1', 2, 3.0), ('r1', 5, 2.0), ('r1', 3, 1.0),
      -- r2: a four-way tie; the latent id breaks it (1, 2, 4 before 9)
      ('r2', 9, 2.0), ('r2', 4, 2.0), ('r2', 2, 2.0), ('r2', 1, 2.0),
      -- r3: two unlabelled latents on top, then one no
      ('r3', 6, 3.0), ('r3', 7, 2.0), ('r3', 1, 1.0),
      -- r4: fewer latents than N
      ('r4', 3, 1.5), ('r4', 8, 0.5),
      -- r5: decreases and a zero do not count; only latent 4 rose
      ('r5', 1, -2.0), ('r5', 2, -1.0), ('r5', 10, 0.0), ('r5', 4, 1.0),
      -- r6: latent 99 is not a top latent
      ('r6', 99, 9.0), ('r6', 3, 1.0),
      -- a row that is not in mixed is ignored
      ('ghost', 1, 7.0);
  `);
});

afterAll(() => {
  db.closeSync();
  instance.closeSync();
});

const TABLES = { mixed: "mixed", exampleFeatures: "example_features", features: "features", featureLabels: "feature_labels" };

async function flags(rule: FlagRuleOptions): Promise<Record<string, unknown>[]> {
  const reader = await db.runAndReadAll(flagRowsSql(TABLES, rule));
  return reader.getRowObjectsJS().map((r) => ({ ...r, no_latents: (r.no_latents as unknown[]).map(Number) }));
}

const row = (row_id: string, flagged: boolean, no_count: number, top_count: number, unlabelled_count: number, score: number, no_latents: number[]) => ({
  row_id, flagged, no_count, top_count, unlabelled_count, score, no_latents,
});

describe("flag rule (SQL)", () => {
  it("N=3, M=2: ties by latent id, unlabelled as not-no, short rows, decreases left out, every mixed row in position order", async () => {
    expect(await flags({ topN: 3, minNo: 2, unlabelledAs: "not_no" })).toEqual([
      row("r3", false, 1, 3, 2, 1, [1]),
      row("r1", true, 2, 3, 0, 8, [1, 2]),
      row("r7", false, 0, 0, 0, 0, []),
      row("r2", true, 2, 3, 0, 4, [1, 2]),
      row("r4", true, 2, 2, 0, 2, [3, 8]),
      row("r6", false, 1, 1, 0, 1, [3]),
      row("r5", false, 0, 1, 0, 0, []),
    ]);
  });

  it("unlabelled as no: counts in the top N and in the score", async () => {
    const byId = Object.fromEntries((await flags({ topN: 3, minNo: 2, unlabelledAs: "no" })).map((r) => [r.row_id, r]));
    expect(byId.r3).toEqual(row("r3", true, 3, 3, 2, 6, [6, 7, 1]));
    expect(byId.r1).toEqual(row("r1", true, 2, 3, 0, 8, [1, 2]));
  });

  it("N=1: only each row's largest increase counts", async () => {
    const flagged = (await flags({ topN: 1, minNo: 1, unlabelledAs: "not_no" })).filter((r) => r.flagged).map((r) => r.row_id);
    // r1's largest is 4 (yes); r2's tie goes to latent 1 (no); r3's is 6 (unlabelled); r4's 3, r6's 3 (no).
    expect(flagged).toEqual(["r2", "r4", "r6"]);
  });

  it("M=0 flags every row, even one without latents", async () => {
    const all = await flags({ topN: 10, minNo: 0, unlabelledAs: "not_no" });
    expect(all.map((r) => r.flagged)).toEqual(Array(7).fill(true));
  });

  it("N larger than every row's latents: each row uses what it has", async () => {
    const byId = Object.fromEntries((await flags({ topN: 50, minNo: 3, unlabelledAs: "not_no" })).map((r) => [r.row_id, r]));
    expect(byId.r1).toEqual(row("r1", true, 3, 5, 0, 8, [1, 2, 3]));
    expect(byId.r2).toEqual(row("r2", false, 2, 4, 0, 4, [1, 2]));
    expect(byId.r4).toEqual(row("r4", false, 2, 2, 0, 2, [3, 8]));
  });

  it("gives the columns and types of its contract", async () => {
    const reader = await db.runAndReadAll(`DESCRIBE ${flagRowsSql(TABLES, { topN: 3, minNo: 2, unlabelledAs: "not_no" })}`);
    const described = reader.getRowObjectsJS().map((r) => [r.column_name, r.column_type]);
    expect(described).toEqual(Object.entries(FLAG_COLUMNS));
  });

  it("rejects rules that make no sense", () => {
    expect(() => flagRowsSql(TABLES, { topN: 0, minNo: 0, unlabelledAs: "no" })).toThrow(/N must be a positive integer/);
    expect(() => flagRowsSql(TABLES, { topN: 3, minNo: 4, unlabelledAs: "no" })).toThrow(/M \(4\) is larger than N \(3\)/);
    expect(() => flagRowsSql(TABLES, { topN: 3, minNo: 1.5, unlabelledAs: "no" })).toThrow(/M must be a non-negative integer/);
  });
});
