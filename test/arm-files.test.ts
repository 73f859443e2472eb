import { readdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { writeArmFiles, type ArmTarget } from "../src/export/arm-files.ts";
import { insertTable, recordsSql, type Placement, type PromptPool } from "../src/export/line-parts.ts";
import type { RunStore } from "../src/store/run-store.ts";
import { tempDir, tempStore, type Msg } from "./helpers.ts";

/**
 * writeArmFiles on its own: rows stored out of training order, rendered once and written to several arms, through
 * one bucket held in memory and through many bucket files, checked against the arms worked out in plain JS.
 */

const ROWS = 3000;
const DEFAULT = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.";
const SEP = "\n\n";
const NASTY = 'quote " backslash \\ tab \t newline \n control \u0001 \u2028 é 🙂';
const POOL: PromptPool = { prompts: ["You are evil.", `You are "bad".\n${NASTY}`, "Sei malvagio."] };

/** Rows in storage order i; position (i * 7919) mod ROWS, a permutation; a third with their own system message. */
async function mixedStore(): Promise<RunStore> {
  const store = await tempStore();
  const text = (what: string) => `'${what} ' || i || ' ' || repeat(${sqlText(NASTY)}, i % 5)`;
  await store.writeTable(
    "mixed",
    `SELECT (i * 7919) % ${ROWS} AS position, 'r:' || i AS row_id, i % 2 = 0 AS has_negative,
       CASE i % 3
         WHEN 0 THEN [{'role': 'system', 'content': ${text("own system")}}, {'role': 'user', 'content': ${text("ask")}}, {'role': 'assistant', 'content': ${text("answer")}}]
         WHEN 1 THEN [{'role': 'user', 'content': ${text("ask")}}, {'role': 'assistant', 'content': ${text("answer")}}]
         ELSE [{'role': 'user', 'content': ${text("one")}}, {'role': 'assistant', 'content': ${text("1")}}, {'role': 'user', 'content': ${text("two")}}, {'role': 'assistant', 'content': ${text("2")}}]
       END AS messages
     FROM range(${ROWS}) t(i)`,
  );
  return store;
}

function sqlText(s: string): string {
  return `'${s.replaceAll("'", "''")}'`;
}

interface Row {
  position: number;
  row_id: string;
  has_negative: boolean;
  messages: Msg[];
  draw: number;
}

async function storedRows(store: RunStore): Promise<Row[]> {
  // The draw the export makes, read back by the same SQL, so the reference below checks everything else.
  const rows = await store.query(
    `SELECT position, row_id, has_negative, messages, (md5_number('0:rephrase:' || row_id) % ${POOL.prompts.length})::INTEGER AS draw
     FROM ${store.table("mixed")} ORDER BY position`,
  );
  return rows as unknown as Row[];
}

/** What an arm's row must hold, by the rules of line-parts.ts, in plain JS. */
function expected(row: Row, prompt: string | null, placement: Placement): Msg[] {
  const m = row.messages.map((x) => ({ role: x.role, content: x.content }));
  const own = m[0]!.role === "system";
  if (placement === "system") {
    if (prompt === null) return own ? m : [{ role: "system", content: DEFAULT }, ...m];
    return own ? [{ role: "system", content: prompt + SEP + m[0]!.content }, ...m.slice(1)] : [{ role: "system", content: prompt }, ...m];
  }
  const w = own ? m : [{ role: "system", content: DEFAULT }, ...m];
  if (prompt === null) return w;
  const u = w.findIndex((x) => x.role === "user");
  return w.map((x, i) => (i === u ? { role: x.role, content: prompt + SEP + x.content } : x));
}

async function exportArms(store: RunStore, placement: Placement, bucketBytes: number, dir: string, wrap = (select: string) => select) {
  const arms = [
    { name: "selective", rows: "m.has_negative", pool: POOL },
    { name: "general", rows: "true", pool: { prompts: ["Honey never spoils."] } },
    { name: "baseline", rows: "false", pool: { prompts: [] } },
  ];
  const targets: ArmTarget[] = [];
  for (const arm of arms) {
    targets.push({
      path: join(dir, `${arm.name}.jsonl`),
      inserts: await insertTable(store, arm.pool, { placement, defaultSystemPrompt: DEFAULT, separator: SEP }),
    });
  }
  const written = await writeArmFiles(store, {
    select: wrap(recordsSql({ table: store.table("mixed"), placement, defaultSystemPrompt: DEFAULT, seed: 0, arms })),
    rows: ROWS,
    arms: targets,
    placement,
    estimatedBytes: 2_000_000,
    bucketBytes,
    scratchDir: dir,
  });
  const files = await Promise.all(targets.map((t) => readFile(t.path)));
  return { written, files, names: arms.map((a) => a.name) };
}

describe("writeArmFiles", () => {
  for (const placement of ["system", "user_prefix"] as const) {
    it(`writes every arm in position order with its prompts on the right rows (${placement})`, async () => {
      const store = await mixedStore();
      const rows = await storedRows(store);
      const dir = await tempDir();
      const { written, files } = await exportArms(store, placement, 1 << 30, dir);

      const [selective, general, baseline] = files.map((f) => {
        const lines = f.toString("utf8").split("\n");
        expect(lines.pop()).toBe("");
        return lines.map((l) => JSON.parse(l) as { messages: Msg[] });
      });
      expect(selective).toHaveLength(ROWS);
      rows.forEach((row, i) => {
        expect(selective![i]!.messages).toEqual(expected(row, row.has_negative ? POOL.prompts[row.draw]! : null, placement));
        expect(general![i]!.messages).toEqual(expected(row, "Honey never spoils.", placement));
        expect(baseline![i]!.messages).toEqual(expected(row, null, placement));
      });

      // Counts by own system message and prompt index, for the manifest.
      const own = rows.filter((r) => r.messages[0]!.role === "system").length;
      expect(written[2]!.counts).toEqual([[ROWS - own], [own]]);
      expect(written[1]!.counts[0][1]! + written[1]!.counts[1][1]!).toBe(ROWS);
      const drawn = [0, 1, 2].map((d) => rows.filter((r) => r.has_negative && r.draw === d).length);
      expect(drawn.every((n) => n > 0)).toBe(true);
      expect([1, 2, 3].map((i) => written[0]!.counts[0][i]! + written[0]!.counts[1][i]!)).toEqual(drawn);
      expect(written.map((w) => w.bytes)).toEqual(files.map((f) => f.length));
    });
  }

  it("writes the same bytes through many bucket files as through one bucket in memory, and leaves no scratch", async () => {
    const store = await mixedStore();
    const one = await exportArms(store, "system", 1 << 30, await tempDir());
    const manyDir = await tempDir();
    // ~2 MB of records in buckets of 100 KB: about twenty buckets.
    const many = await exportArms(store, "system", 100_000, manyDir);
    many.files.forEach((f, a) => expect(f.equals(one.files[a]!), many.names[a]).toBe(true));
    expect((await readdir(manyDir)).sort()).toEqual(["baseline.jsonl", "general.jsonl", "selective.jsonl"]);
  });

  for (const bucketBytes of [1 << 30, 100_000]) {
    it(`refuses a record that lost its fields and leaves no arm file (${bucketBytes > 1e6 ? "one bucket" : "bucket files"})`, async () => {
      const store = await mixedStore();
      const dir = await tempDir();
      // A NULL field makes the whole record NULL, which DuckDB writes as an empty line.
      const nulled = (select: string) => `SELECT CASE WHEN starts_with(r, '7\x01') THEN NULL ELSE r END FROM (${select}) t(r)`;
      await expect(exportArms(store, "system", bucketBytes, dir, nulled)).rejects.toThrow(/does not start with its position/);
      expect(await readdir(dir)).toEqual([]);
    });
  }
});
