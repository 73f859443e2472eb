import { constants, promises as fsp } from "node:fs";
import { alignedBuffers, BLOCK } from "./sequential-writer.ts";

/**
 * Reads whole files into one page-aligned buffer that is reused from file to file, with O_DIRECT where asked and
 * the filesystem takes it: the export's bucket files, written with O_DIRECT by SequentialFileWriter, come back
 * without passing through the page cache.
 *
 * Why: on the project's VMs, memory the kernel has not handed out for a while is slow to touch again (measured:
 * a first fill of 2 GB 1.2 s against 0.08 s for the same buffer again; fresh page-cache pages at 0.44 GB/s and,
 * once the host is short of memory, near 0.1 GB/s). A file read through the cache costs its size in fresh
 * pages; read directly into a buffer that is already mapped, it costs none.
 */
export class WholeFileReader {
  private buffer: Buffer = Buffer.alloc(0);

  /**
   * The file's `length` bytes (the whole file: a file that ends sooner is an error), as a view of this reader's
   * buffer that the next read overwrites.
   */
  async read(path: string, length: number, direct: boolean): Promise<Buffer> {
    const padded = Math.ceil(length / BLOCK) * BLOCK;
    // Fresh allocations of this size cost more than the reads into them: grow by a quarter more than asked.
    if (this.buffer.length < padded) this.buffer = alignedBuffers(1, padded * 1.25)[0]!;
    const target = this.buffer;
    let got = 0;
    // O_DIRECT reads whole blocks at block offsets: ask for the padded length (the file's end cuts it short), and
    // stop at an offset it cannot take; plain reads ask for exactly what is left.
    const fill = async (file: fsp.FileHandle, blocks: boolean) => {
      while (got < length && (!blocks || got % BLOCK === 0)) {
        const { bytesRead } = await file.read(target, got, (blocks ? padded : length) - got, got);
        if (bytesRead === 0) break;
        got += bytesRead;
      }
    };
    if (direct && constants.O_DIRECT !== undefined) {
      const file = await fsp.open(path, constants.O_RDONLY | constants.O_DIRECT).catch(() => null);
      if (file) {
        try {
          await fill(file, true);
        } catch {
          // Some filesystems take the flag at open and refuse the reads: the plain reads below redo what is
          // left, and an error that is not about O_DIRECT comes back from them.
        } finally {
          await file.close();
        }
      }
    }
    if (got < length) {
      const file = await fsp.open(path, "r");
      try {
        await fill(file, false);
      } finally {
        await file.close();
      }
    }
    if (got < length) throw new Error(`${path} ended after ${got} of ${length} bytes`);
    return target.subarray(0, length);
  }
}
