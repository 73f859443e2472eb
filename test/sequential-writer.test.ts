import { existsSync } from "node:fs";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { alignedBuffers, SequentialFileWriter } from "../src/util/sequential-writer.ts";
import { pattern, tempDir } from "./helpers.ts";

async function writeInPieces(path: string, data: Buffer, options: Parameters<typeof SequentialFileWriter.create>[1]) {
  const writer = await SequentialFileWriter.create(path, options);
  // Odd piece sizes cross buffer boundaries in every way.
  let at = 0;
  for (let piece = 1; at < data.length; piece = (piece * 7 + 3) % 9001) {
    const end = Math.min(data.length, at + piece);
    writer.put(data, at, end);
    at = end;
    await writer.settle();
  }
  const length = await writer.close();
  return { writer, length };
}

describe("SequentialFileWriter", () => {
  const sizes = [0, 1, 4095, 4096, 4097, 65536 * 3 + 17, (1 << 20) * 2 + 5];

  for (const direct of [true, false]) {
    it(`writes exactly the bytes put, at every size (${direct ? "O_DIRECT where the filesystem takes it" : "plain writes"})`, async () => {
      const dir = await tempDir();
      for (const [i, size] of sizes.entries()) {
        const data = pattern(size, i);
        const path = join(dir, `f${i}`);
        const { writer, length } = await writeInPieces(path, data, { bufferBytes: 64 << 10, buffers: 2, direct });
        expect(length).toBe(size);
        expect((await readFile(path)).equals(data), `size ${size}`).toBe(true);
        if (!direct) expect(writer.direct).toBe(false);
      }
    });
  }

  it("writes the same bytes on tmpfs (which takes O_DIRECT only on recent kernels)", async () => {
    if (!existsSync("/dev/shm")) return;
    const dir = await mkdtemp("/dev/shm/inoculant-test-");
    try {
      const data = pattern(300_001, 9);
      await writeInPieces(join(dir, "f"), data, { bufferBytes: 64 << 10 });
      expect((await readFile(join(dir, "f"))).equals(data)).toBe(true);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("reports a failed write instead of losing it", async () => {
    if (!existsSync("/dev/full")) return;
    const writer = await SequentialFileWriter.create("/dev/full", { bufferBytes: 64 << 10, direct: false });
    writer.put(pattern(200_000, 1));
    await expect(writer.close()).rejects.toThrow(/ENOSPC/);
  });

  it("hands out page-aligned buffers of whole 64 KiB pages", () => {
    const buffers = alignedBuffers(3, 100_000);
    expect(buffers.map((b) => b.length)).toEqual([131072, 131072, 131072]);
    expect(buffers.map((b) => b.byteOffset % 65536)).toEqual([0, 0, 0]);
  });
});
