import { existsSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { SequentialFileWriter } from "../src/util/sequential-writer.ts";
import { WholeFileReader } from "../src/util/whole-file-reader.ts";
import { pattern, tempDir } from "./helpers.ts";

async function written(path: string, data: Buffer, direct: boolean): Promise<boolean> {
  const writer = await SequentialFileWriter.create(path, { bufferBytes: 64 << 10, buffers: 2, direct });
  writer.put(data);
  await writer.close();
  return writer.direct;
}

describe("WholeFileReader", () => {
  const sizes = [0, 1, 4095, 4096, 4097, 65536 * 3 + 17, 300_001];

  for (const direct of [true, false]) {
    it(`reads back exactly the bytes written, at every size (${direct ? "O_DIRECT" : "plain reads"})`, async () => {
      const dir = await tempDir();
      const reader = new WholeFileReader();
      // Largest first and then smaller: a reused buffer must never hand back bytes of the file before.
      for (const [i, size] of [...sizes].reverse().entries()) {
        const data = pattern(size, i);
        const path = join(dir, `f${i}`);
        const wroteDirect = await written(path, data, direct);
        const got = await reader.read(path, size, wroteDirect);
        expect(got.length).toBe(size);
        expect(got.equals(data), `size ${size}`).toBe(true);
      }
    });
  }

  it("reuses one page-aligned buffer for files that fit it", async () => {
    const dir = await tempDir();
    const reader = new WholeFileReader();
    await writeFile(join(dir, "big"), pattern(200_000, 1));
    await writeFile(join(dir, "small"), pattern(5_000, 2));
    const big = await reader.read(join(dir, "big"), 200_000, true);
    const small = await reader.read(join(dir, "small"), 5_000, true);
    expect(small.buffer).toBe(big.buffer);
    expect(small.byteOffset % 4096).toBe(0);
    expect(small.equals(pattern(5_000, 2))).toBe(true);
  });

  it("refuses a file that ends before the length it was promised, naming it", async () => {
    const dir = await tempDir();
    const path = join(dir, "short");
    await writeFile(path, pattern(10_000, 3));
    for (const direct of [true, false]) {
      await expect(new WholeFileReader().read(path, 10_001, direct)).rejects.toThrow(`${path} ended after 10000 of 10001 bytes`);
    }
  });

  it("reads the same bytes on tmpfs, where O_DIRECT may be refused", async () => {
    if (!existsSync("/dev/shm")) return;
    const dir = await mkdtemp("/dev/shm/inoculant-test-");
    try {
      const data = pattern(300_001, 4);
      await writeFile(join(dir, "f"), data);
      expect((await new WholeFileReader().read(join(dir, "f"), data.length, true)).equals(data)).toBe(true);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
