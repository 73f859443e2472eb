import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { readLinesAt, scanLines } from "../src/util/line-scan.ts";
import { tempDir } from "./helpers.ts";

describe("scanLines", () => {
  it("counts lines as a line reader does and finds the blank ones", async () => {
    const dir = await tempDir();
    const cases: [string, number, number[], number | null][] = [
      ["", 0, [], null],
      ["a", 1, [], null],
      ["a\n", 1, [], null],
      ["a\nb", 2, [], null],
      ["a\n\nb\n", 3, [2], null],
      ["\n", 1, [1], null],
      ["   \na\n  ", 3, [1, 3], null],
      ["a\r\nb\r\n", 2, [], null],
      [" {\"x\": 1}\n", 1, [], null],
      ["a\n\t\nb\n \r\n", 4, [], 2],
    ];
    for (const [i, [text, lines, blank, irregular]] of cases.entries()) {
      await writeFile(join(dir, `c${i}`), text);
      expect(await scanLines(join(dir, `c${i}`)), JSON.stringify(text)).toEqual({ lines, blank, irregular });
    }
  });

  it("sees lines that cross its read blocks", async () => {
    const dir = await tempDir();
    const long = "x".repeat(9 << 20); // longer than one 8 MiB block
    const path = join(dir, "long.jsonl");
    await writeFile(path, `${long}\n\n${" ".repeat(5)}\n${long}\nend`);
    expect(await scanLines(path)).toEqual({ lines: 5, blank: [2, 3], irregular: null });
    expect(await readLinesAt(path, [1, 2, 5])).toEqual([long, "", "end"]);
  });
});

describe("readLinesAt", () => {
  it("returns the asked lines without their line endings, and fails on a line the file does not have", async () => {
    const dir = await tempDir();
    const path = join(dir, "f.jsonl");
    await writeFile(path, "one\r\ntwo\n\nfour\nfive");
    expect(await readLinesAt(path, [1, 3, 4, 5])).toEqual(["one", "", "four", "five"]);
    expect(await readLinesAt(path, [])).toEqual([]);
    await expect(readLinesAt(path, [6])).rejects.toThrow(/has no line 6/);
    expect(await readLinesAt(path, [1, 4], 8)).toEqual(["one", "four"]); // "one\r" and "four"
    expect(await readLinesAt(path, [1, 4], 7)).toBeNull();
  });
});
