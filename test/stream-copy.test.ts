import { readdir } from "node:fs/promises";
import { describe, expect, it } from "vitest";
import type { RunStore } from "../src/store/run-store.ts";
import { streamCopy } from "../src/store/stream-copy.ts";
import { tempStore } from "./helpers.ts";

const LINES = "FORMAT csv, HEADER false, QUOTE '', ESCAPE '', DELIMITER '\x01', USE_TMP_FILE false";

/** The stream as text, from a consumer that copies each chunk (the stream reuses their memory). */
async function collect(store: RunStore, select: string, pipeBytes?: number): Promise<{ text: string; rows: number }> {
  const chunks: Buffer[] = [];
  const rows = await streamCopy(store, select, LINES, (chunk) => {
    chunks.push(Buffer.from(chunk));
  }, { pipeBytes });
  return { text: Buffer.concat(chunks).toString("utf8"), rows };
}

// The grown pipe (where Linux and the FFI allow it) and the pipe at its default size are read by different code.
describe.each([
  { pipe: "a grown pipe", pipeBytes: undefined },
  { pipe: "a pipe of the default size", pipeBytes: 0 },
])("streamCopy through $pipe", ({ pipeBytes }) => {
  it("hands over every line DuckDB writes, in order, and the row count", async () => {
    const store = await tempStore();
    // Several MB: many pipe-sized chunks, lines cut across them.
    const { text, rows } = await collect(store, "SELECT i, repeat('é', i % 97) FROM range(200000) t(i)", pipeBytes);
    expect(rows).toBe(200000);
    const lines = text.split("\n");
    expect(lines.pop()).toBe("");
    expect(lines).toHaveLength(200000);
    expect(lines[0]).toBe("0\x01");
    expect(lines[123456]).toBe(`123456\x01${"é".repeat(123456 % 97)}`);
    expect(await readdir(store.dir)).not.toContainEqual(expect.stringMatching(/^\.stream-/));
  });

  it("rejects with DuckDB's error, without hanging, when the query fails before or while writing", async () => {
    const store = await tempStore();
    await expect(collect(store, "SELECT * FROM no_such_table", pipeBytes)).rejects.toThrow(/no_such_table/);
    await expect(
      collect(store, "SELECT CASE WHEN i < 150000 THEN i::VARCHAR ELSE error('boom at ' || i) END FROM range(200000) t(i)", pipeBytes),
    ).rejects.toThrow(/boom at/);
    // The store is still usable.
    expect(await store.query("SELECT 42 AS x")).toEqual([{ x: 42 }]);
  });

  it("rejects with the consumer's error, and DuckDB's COPY ends", async () => {
    const store = await tempStore();
    let seen = 0;
    const run = streamCopy(store, "SELECT i FROM range(3000000) t(i)", LINES, (chunk) => {
      seen += chunk.length;
      if (seen > 100_000) throw new Error("consumer gave up");
    }, { pipeBytes });
    await expect(run).rejects.toThrow(/consumer gave up/);
    expect(await store.query("SELECT 1 AS x")).toEqual([{ x: 1 }]);
  });

});

describe("streamCopy without named pipes", () => {
  it("falls back to a temporary file where no named pipe can be made", async () => {
    const store = await tempStore();
    const path = process.env.PATH;
    process.env.PATH = "/nonexistent";
    try {
      const { text, rows } = await collect(store, "SELECT i FROM range(5) t(i)");
      expect(rows).toBe(5);
      expect(text).toBe("0\n1\n2\n3\n4\n");
    } finally {
      process.env.PATH = path;
    }
  });
});
