import { spawnSync } from "node:child_process";
import { constants, promises as fsp, readSync } from "node:fs";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import type { RunStore } from "./run-store.ts";
import { sqlString } from "./sql.ts";

/** Receives the stream chunk by chunk; the chunk's memory is reused after the call, so copy what you keep. */
export type ChunkConsumer = (chunk: Buffer) => void | Promise<void>;

/**
 * Streams the text DuckDB's `COPY (select) TO … (format)` writes into `consume` through a named pipe: the bytes
 * never land in a file or become JS strings, and DuckDB renders on its threads while the caller works on the
 * chunks. Where no named pipe can be made (Windows), DuckDB writes a temporary file that is read back afterwards.
 * Returns the row count. A failed COPY or a throwing consumer rejects, and the caller must treat what it was
 * given as incomplete.
 */
export async function streamCopy(
  store: RunStore,
  select: string,
  format: string,
  consume: ChunkConsumer,
  onProgress?: (percent: number) => void,
): Promise<number> {
  const dir = await fsp.mkdtemp(join(store.dir, ".stream-"));
  const path = join(dir, "rows");
  try {
    const piped = spawnSync("mkfifo", [path]).status === 0;
    const copy = store.runWithProgress(`COPY (${select}) TO ${sqlString(path)} (${format})`, onProgress);
    if (!piped) {
      const [row] = await copy;
      await readAll(path, consume, () => undefined);
      return Number(row?.Count ?? 0);
    }
    let readerOpen = false;
    // Opening a pipe waits for its other end. Should DuckDB fail before it opens the pipe, a writer of our own ends
    // that wait (retrying until the reader is there to meet it), so the reader sees end-of-stream and the COPY's
    // error is what the caller gets.
    const failed = copy.then(
      () => null,
      async (error: unknown) => {
        while (!readerOpen) {
          const unblock = await fsp.open(path, constants.O_WRONLY | constants.O_NONBLOCK).catch(() => null);
          if (unblock) {
            await unblock.close();
            break;
          }
          await sleep(10);
        }
        return error;
      },
    );
    try {
      await readAll(path, consume, () => {
        readerOpen = true;
      });
    } catch (error) {
      // The reader stopped: DuckDB's next write into the closed pipe fails, which ends its COPY. Keep our error.
      readerOpen = true;
      await failed;
      throw error;
    }
    const error = await failed;
    if (error) throw error;
    const [row] = await copy;
    return Number(row?.Count ?? 0);
  } finally {
    await fsp.rm(dir, { recursive: true, force: true });
  }
}

async function readAll(path: string, consume: ChunkConsumer, opened: () => void): Promise<void> {
  // Opened asynchronously (that waits for DuckDB to open its end), then read synchronously: a pipe hands over at
  // most 64 KiB a read, and a thread-pool round trip per read cost a fifth of the stream's time (measured).
  const file = await fsp.open(path, "r");
  opened();
  try {
    const buffer = Buffer.allocUnsafe(1 << 20);
    for (;;) {
      const bytesRead = readSync(file.fd, buffer, 0, buffer.length, null);
      if (bytesRead === 0) return;
      await consume(buffer.subarray(0, bytesRead));
    }
  } finally {
    await file.close();
  }
}
