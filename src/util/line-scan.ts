import { open } from "node:fs/promises";

const NL = 10;
const SPACE = 32;
/** JSON's other whitespace: a line of only these (and spaces) is one DuckDB's readers disagree on. */
const OTHER_WHITESPACE = new Set([9, 11, 12, 13]);
const BLOCK = 8 << 20;

export interface LineScan {
  /** Lines as a line reader counts them: every newline ends one, and a last line without a newline counts too. */
  lines: number;
  /** The 1-based numbers of the lines that are empty or hold only spaces. */
  blank: number[];
  /**
   * A line that holds only whitespace other than plain spaces (a tab, a lone carriage return): DuckDB's JSON
   * reader skips it while the line-by-line validator rejects it, so a fast read of this file cannot be numbered.
   */
  irregular: number | null;
}

/**
 * Counts a text file's lines and finds its blank ones in one pass over large blocks. Only a line's first bytes
 * are looked at: the rest is skipped with a newline search (memchr speed), so a JSONL file costs about what
 * counting its newlines does.
 */
export async function scanLines(path: string): Promise<LineScan> {
  const file = await open(path, "r");
  const blank: number[] = [];
  let irregular: number | null = null;
  let lines = 0;
  // Where the current line is: at its start, in leading whitespace (`other`: not only spaces), or past it.
  let inContent = false;
  let started = false;
  let other = false;
  const endLine = () => {
    lines += 1;
    if (!inContent) {
      if (other) irregular ??= lines;
      else blank.push(lines);
    }
    inContent = false;
    started = false;
    other = false;
  };
  try {
    const buffer = Buffer.allocUnsafe(BLOCK);
    for (;;) {
      const { bytesRead } = await file.read(buffer, 0, buffer.length, null);
      if (bytesRead === 0) break;
      let i = 0;
      while (i < bytesRead) {
        if (inContent) {
          const nl = buffer.indexOf(NL, i);
          if (nl === -1 || nl >= bytesRead) {
            i = bytesRead;
            break;
          }
          endLine();
          i = nl + 1;
          continue;
        }
        const byte = buffer[i]!;
        if (byte === NL) endLine();
        else if (byte === SPACE) started = true;
        else if (OTHER_WHITESPACE.has(byte)) started = other = true;
        else inContent = started = true;
        i += 1;
      }
    }
    if (started) endLine();
    return { lines, blank, irregular };
  } finally {
    await file.close();
  }
}

/**
 * The text of the given lines (1-based, ascending), without their line ending: for quoting a few rows of a
 * large file without reading it line by line. Null when they hold more than `maxBytes` together.
 */
export async function readLinesAt(path: string, wanted: readonly number[], maxBytes = Infinity): Promise<string[] | null> {
  const file = await open(path, "r");
  const out: string[] = [];
  try {
    const buffer = Buffer.allocUnsafe(BLOCK);
    let line = 1;
    let next = 0;
    let parts: Buffer[] = [];
    let taken = 0;
    const finish = () => {
      const text = Buffer.concat(parts).toString("utf8");
      out.push(text.endsWith("\r") ? text.slice(0, -1) : text);
      parts = [];
      next += 1;
    };
    while (next < wanted.length) {
      const { bytesRead } = await file.read(buffer, 0, buffer.length, null);
      if (bytesRead === 0) break;
      let i = 0;
      while (i < bytesRead && next < wanted.length) {
        const nl = buffer.indexOf(NL, i);
        const end = nl === -1 || nl >= bytesRead ? bytesRead : nl;
        if (line === wanted[next]) {
          parts.push(Buffer.from(buffer.subarray(i, end)));
          taken += end - i;
          if (taken > maxBytes) return null;
        }
        if (end === bytesRead) break;
        if (line === wanted[next]) finish();
        line += 1;
        i = end + 1;
      }
    }
    if (next < wanted.length && line === wanted[next] && parts.length > 0) finish();
    if (next < wanted.length) throw new Error(`${path} has no line ${wanted[next]}`);
    return out;
  } finally {
    await file.close();
  }
}
