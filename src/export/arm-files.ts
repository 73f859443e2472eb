import { mkdir, rename, rm } from "node:fs/promises";
import { join } from "node:path";
import type { RunStore } from "../store/run-store.ts";
import { streamCopy } from "../store/stream-copy.ts";
import { tempPathFor } from "../util/fs.ts";
import { SequentialFileWriter } from "../util/sequential-writer.ts";
import { WholeFileReader } from "../util/whole-file-reader.ts";
import { insertPointByte, type InsertTable, type Placement } from "./line-parts.ts";

/**
 * Writes every arm's JSONL file in one pass over the rows. DuckDB renders each row once, as a record
 *
 *     position \x01 own \x01 at \x01 prompt index of arm 1 \x01 … \x01 prompt index of arm A \x01 line \n
 *
 * (`own`: the row has its own system message; `at`: where the insert goes in `line`; an index is -1 where the arm
 * puts no prompt on the row; `line` is JSON text, which never holds a raw control character, so \x01 and \n
 * delimit safely), and each arm's line is `line` with the arm's insert at `at` (see line-parts.ts).
 *
 * Lines go out in `position` order, but `mixed` is stored in the order its rows were read: sorting 1M wide rows
 * in DuckDB either runs out of a bounded memory or spills for tens of seconds. Positions are dense (0 … rows-1),
 * so records are scattered by position range into buckets of bounded size (temporary files when there is more
 * than one), and each bucket is put in order by placing every record in its slot, without a comparison sort.
 * The bucket files are written and read back with O_DIRECT, never through the page cache: on the project's VMs
 * fresh page-cache pages cost far more than the disk's time for the same bytes (see whole-file-reader.ts), and
 * the disk is idle while the buckets fill. Measured at 1M rows, export alone, three alternating runs each: with a
 * host short of memory 33.3-34.4 s through the page cache against 23.1-24.0 s direct; on a quiet host both
 * 15.6-16.9 s.
 */

export interface ArmTarget {
  /** The arm's final file; written under a temporary name and renamed when every arm is whole. */
  path: string;
  inserts: InsertTable;
}

export interface ArmWritten {
  bytes: number;
  /** `counts[own][index + 1]`: rows with (1) or without (0) their own system message by prompt index (-1: none). */
  counts: [number[], number[]];
}

export interface ArmFilesOptions {
  /** SQL producing the records above, one per row, in any order. */
  select: string;
  rows: number;
  arms: readonly ArmTarget[];
  placement: Placement;
  /** Roughly how many bytes the records take, to size the buckets. */
  estimatedBytes: number;
  /** Most bytes one bucket should hold in memory (default 256 MiB). */
  bucketBytes?: number;
  /** Where temporary bucket files go. */
  scratchDir: string;
  onProgress?: (percent: number) => void;
}

const SEP = 1;
const NL = 10;
/** How many lines go out between waits for the disk, which bound the memory held by queued writes. */
const SETTLE_EVERY = 256;

const FORMAT = "FORMAT csv, HEADER false, QUOTE '', ESCAPE '', DELIMITER '\x01', USE_TMP_FILE false";

export async function writeArmFiles(store: RunStore, options: ArmFilesOptions): Promise<ArmWritten[]> {
  const { rows, arms } = options;
  const rowsPerBucket = Math.max(1, Math.floor((rows * (options.bucketBytes ?? 256 << 20)) / Math.max(1, options.estimatedBytes)));
  const bucketCount = Math.max(1, Math.ceil(rows / rowsPerBucket));
  const scratch = join(options.scratchDir, `.buckets-${process.pid}`);
  const progress = options.onProgress ?? (() => undefined);
  const sinks: BucketSink[] = [];
  const writers: SequentialFileWriter[] = [];
  let reading: Promise<unknown> = Promise.resolve();
  try {
    if (bucketCount > 1) await mkdir(scratch, { recursive: true });
    for (let b = 0; b < bucketCount; b += 1) {
      sinks.push(bucketCount === 1 ? new MemorySink() : await FileSink.create(join(scratch, `${b}.records`)));
    }
    const scatter = new Scatter(sinks, rowsPerBucket);
    // Records carry their position, so DuckDB need not keep their order: without it the COPY runs on every
    // thread end to end (measured 1.45x faster at 1M rows).
    await store.run("SET preserve_insertion_order = false");
    const streamed = await streamCopy(store, options.select, FORMAT, (chunk) => scatter.push(chunk), {
      onProgress: (p) => progress(p / 2),
    }).finally(() => store.run("RESET preserve_insertion_order"));
    scatter.end();
    if (streamed !== rows || scatter.lines !== rows) {
      throw new Error(`export: expected ${rows} records, DuckDB wrote ${streamed} and ${scatter.lines} arrived`);
    }

    for (const arm of arms) writers.push(await SequentialFileWriter.create(tempPathFor(arm.path)));
    const counts = arms.map((arm) => [arm.inserts[0].map(() => 0), arm.inserts[1].map(() => 0)] as [number[], number[]]);
    const gather = new Gather(arms.length);
    const expected = [insertPointByte(options.placement, false), insertPointByte(options.placement, true)];
    let done = 0;
    // While one bucket is written out, the next is read in.
    const readInto = [new WholeFileReader(), new WholeFileReader()];
    let next = sinks[0]!.readBack(readInto[0]!);
    reading = next;
    for (let b = 0; b < sinks.length; b += 1) {
      const base = b * rowsPerBucket;
      const data = await next;
      if (b + 1 < sinks.length) reading = next = sinks[b + 1]!.readBack(readInto[(b + 1) % 2]!);
      const slots = gather.place(data, base, Math.min(rowsPerBucket, rows - base));
      for (let s = 0; s < slots.length; s += 1) {
        const r = gather.parse(data, slots[s]!);
        const cut = r.lineStart + r.at;
        if (data[cut - 1] !== expected[r.own]) throw new Error(`export: the JSON of the row at position ${base + s} is not laid out as expected`);
        for (let a = 0; a < arms.length; a += 1) {
          const index = r.indexes[a]!;
          const w = writers[a]!;
          w.put(data, r.lineStart, cut);
          w.put(arms[a]!.inserts[r.own]![index + 1]!);
          w.put(data, cut, r.newline + 1);
          counts[a]![r.own]![index + 1]! += 1;
        }
        if (s % SETTLE_EVERY === SETTLE_EVERY - 1) {
          for (const w of writers) await w.settle();
        }
      }
      done += slots.length;
      progress(50 + (50 * done) / rows);
    }
    const bytes = await Promise.all(writers.map((w) => w.close()));
    await Promise.all(arms.map((arm, a) => rename(writers[a]!.path, arm.path)));
    return arms.map((_, a) => ({ bytes: bytes[a]!, counts: counts[a]! }));
  } catch (error) {
    await Promise.all(writers.map(async (w) => {
      await w.abort();
      await rm(w.path, { force: true });
    }));
    throw error;
  } finally {
    await reading.catch(() => undefined);
    await Promise.all(sinks.map((s) => s.discard()));
    await rm(scratch, { recursive: true, force: true });
  }
}

/** Where one bucket's records wait for their turn. */
interface BucketSink {
  put(bytes: Buffer, start: number, end: number): void;
  /** Lets queued writes catch up (bounds memory). */
  settle(): Promise<void>;
  /** The bucket's records, read into `into`'s buffer when they are on disk; the bucket is spent. */
  readBack(into: WholeFileReader): Promise<Buffer>;
  discard(): Promise<void>;
}

/** The single bucket of a run small enough to hold: no temporary file. */
class MemorySink implements BucketSink {
  private parts: Buffer[] = [];
  put(bytes: Buffer, start: number, end: number): void {
    this.parts.push(Buffer.from(bytes.subarray(start, end)));
  }
  async settle(): Promise<void> {}
  async readBack(): Promise<Buffer> {
    const all = Buffer.concat(this.parts);
    this.parts = [];
    return all;
  }
  async discard(): Promise<void> {
    this.parts = [];
  }
}

/** A bucket in a temporary file, removed once read back (or with the scratch folder). */
class FileSink implements BucketSink {
  private closed = false;
  private removed: Promise<void> = Promise.resolve();
  private constructor(private readonly writer: SequentialFileWriter) {}
  static async create(path: string): Promise<FileSink> {
    // Three buffers, so that one is free while two are on their way to disk. With two, every bucket whose last
    // write was still in flight made the scatter wait: 2.1-2.4 s of a 7.6-8.9 s scatter at 1M rows, against 0.03 s.
    return new FileSink(await SequentialFileWriter.create(path, { bufferBytes: 1 << 20, buffers: 3 }));
  }
  put(bytes: Buffer, start: number, end: number): void {
    this.writer.put(bytes, start, end);
  }
  settle(): Promise<void> {
    return this.writer.settle();
  }
  async readBack(into: WholeFileReader): Promise<Buffer> {
    this.closed = true;
    const length = await this.writer.close();
    const data = await into.read(this.writer.path, length, this.writer.direct);
    // Removed while the next bucket is worked on. A failure here is not lost: removing the scratch folder at the
    // end tries again, and its error is the caller's.
    this.removed = rm(this.writer.path, { force: true }).catch(() => undefined);
    return data;
  }
  async discard(): Promise<void> {
    if (!this.closed) await this.writer.abort();
    await this.removed;
  }
}

/** Splits the record stream into lines and sends each to the bucket of its position range. */
class Scatter {
  lines = 0;
  private carry: Buffer | null = null;

  constructor(
    private readonly sinks: readonly BucketSink[],
    private readonly rowsPerBucket: number,
  ) {}

  async push(chunk: Buffer): Promise<void> {
    let start = 0;
    if (this.carry) {
      const nl = chunk.indexOf(NL);
      if (nl === -1) {
        this.carry = Buffer.concat([this.carry, chunk]);
        return;
      }
      const line = Buffer.concat([this.carry, chunk.subarray(0, nl + 1)]);
      this.carry = null;
      this.route(line, 0, line.length);
      start = nl + 1;
    }
    if (this.sinks.length === 1) {
      // One bucket: whole runs of lines go in at once.
      const last = chunk.lastIndexOf(NL);
      if (last >= start) {
        for (let i = chunk.indexOf(NL, start); i !== -1 && i <= last; i = chunk.indexOf(NL, i + 1)) this.lines += 1;
        this.sinks[0]!.put(chunk, start, last + 1);
        start = last + 1;
      }
    } else {
      for (let end = chunk.indexOf(NL, start); end !== -1; end = chunk.indexOf(NL, start)) {
        this.route(chunk, start, end + 1);
        start = end + 1;
      }
    }
    // The chunk's memory is reused by the stream: keep a copy of the unfinished line.
    if (start < chunk.length) this.carry = Buffer.from(chunk.subarray(start));
    if (this.sinks.length > 1) await Promise.all(this.sinks.map((s) => s.settle()));
  }

  private route(data: Buffer, start: number, end: number): void {
    const bucket = this.sinks.length === 1 ? 0 : Math.floor(leadingInt(data, start) / this.rowsPerBucket);
    const sink = this.sinks[bucket];
    if (!sink) throw new Error(`export: a record's position is past the last row (bucket ${bucket})`);
    sink.put(data, start, end);
    this.lines += 1;
  }

  end(): void {
    if (this.carry) throw new Error("export: the record stream ended inside a line");
  }
}

interface ParsedRecord {
  own: 0 | 1;
  at: number;
  indexes: Int32Array;
  lineStart: number;
  /** The record's newline, which ends the exported line too. */
  newline: number;
}

/** Puts a bucket's records in position order and reads their fields. */
class Gather {
  private readonly record: ParsedRecord;

  constructor(arms: number) {
    this.record = { own: 0, at: 0, indexes: new Int32Array(arms), lineStart: 0, newline: 0 };
  }

  /** Each record's offset, in position order: slot `position - base`. */
  place(data: Buffer, base: number, count: number): Float64Array {
    const slots = new Float64Array(count).fill(-1);
    let start = 0;
    while (start < data.length) {
      const slot = leadingInt(data, start) - base;
      if (slot < 0 || slot >= count || slots[slot] !== -1) throw new Error(`export: position ${slot + base} is out of its bucket or repeated`);
      slots[slot] = start;
      start = data.indexOf(NL, start) + 1;
      if (start === 0) throw new Error("export: a bucket ends inside a line");
    }
    const missing = slots.indexOf(-1);
    if (missing !== -1) throw new Error(`export: no record for position ${base + missing}`);
    return slots;
  }

  /** The fields of the record at `start` (reusing one object: read it before the next call). */
  parse(data: Buffer, start: number): ParsedRecord {
    const r = this.record;
    let i = data.indexOf(SEP, start) + 1; // past the position
    r.own = data[i] === 0x31 ? 1 : 0;
    i += 2;
    let at = 0;
    while (data[i] !== SEP) at = at * 10 + data[i++]! - 0x30;
    r.at = at;
    i += 1;
    for (let a = 0; a < r.indexes.length; a += 1) {
      const negative = data[i] === 0x2d;
      if (negative) i += 1;
      let value = 0;
      while (data[i] !== SEP) value = value * 10 + data[i++]! - 0x30;
      r.indexes[a] = negative ? -value : value;
      i += 1;
    }
    r.lineStart = i;
    r.newline = data.indexOf(NL, i);
    return r;
  }
}

/** The non-negative integer at the start of a record. */
function leadingInt(data: Buffer, start: number): number {
  let value = 0;
  let i = start;
  for (; data[i] !== SEP; i += 1) {
    const digit = data[i]! - 0x30;
    if (!(digit >= 0 && digit <= 9)) throw new Error(`export: a record does not start with its position (byte ${data[i]} at ${i - start})`);
    value = value * 10 + digit;
  }
  if (i === start) throw new Error("export: a record has no position");
  return value;
}
