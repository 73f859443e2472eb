import { tableFromIPC, tableToIPC, type Table } from "apache-arrow";

/**
 * The sidecar's wire format (sae/PROTOCOL.md): one JSON header line per message, optionally followed by exactly
 * `payload_bytes` bytes holding one Arrow IPC stream. Both ends are tested against the same recorded frames.
 */
export const PROTOCOL_VERSION = 1;

export type Header = { v: number; type: string; payload_bytes?: number } & Record<string, unknown>;

export interface Frame {
  header: Header;
  payload: Table | null;
}

export class ProtocolError extends Error {
  override readonly name = "ProtocolError";
}

export function encodeFrame(header: Record<string, unknown> & { type: string }, payload?: Table): Buffer {
  const full: Record<string, unknown> = { v: PROTOCOL_VERSION, ...header };
  delete full.payload_bytes;
  let body: Uint8Array | null = null;
  if (payload) {
    body = tableToIPC(payload, "stream");
    full.payload_bytes = body.byteLength;
  }
  // JSON.stringify escapes newlines inside strings, so the header is always one line.
  const line = Buffer.from(`${JSON.stringify(full)}\n`, "utf8");
  return body ? Buffer.concat([line, body]) : line;
}

/**
 * Incremental decoder: feed it stdout chunks as they come, take whole frames out. A payload's chunks are kept
 * apart until all of its bytes are there and joined once: joining each chunk onto what came before copied the
 * payload once per chunk (a 64 MB result in 64 KiB chunks took 18 s to decode that way).
 */
export class FrameDecoder {
  private buffer: Buffer = Buffer.alloc(0);
  private pending: Header | null = null;
  /** The chunks of the pending payload while it is incomplete, and their length. */
  private parts: Buffer[] = [];
  private partBytes = 0;

  push(chunk: Buffer): Frame[] {
    if (this.parts.length > 0) {
      this.parts.push(chunk);
      this.partBytes += chunk.length;
      if (this.partBytes < this.pending!.payload_bytes!) return [];
      this.buffer = Buffer.concat(this.parts);
      this.parts = [];
      this.partBytes = 0;
    } else {
      this.buffer = this.buffer.length === 0 ? chunk : Buffer.concat([this.buffer, chunk]);
    }
    const frames: Frame[] = [];
    for (;;) {
      if (!this.pending) {
        const newline = this.buffer.indexOf(0x0a);
        if (newline < 0) break;
        const line = this.buffer.subarray(0, newline).toString("utf8");
        this.buffer = this.buffer.subarray(newline + 1);
        const header = parseHeader(line);
        if (header.payload_bytes === undefined) {
          frames.push({ header, payload: null });
          continue;
        }
        this.pending = header;
      }
      const size = this.pending.payload_bytes!;
      if (this.buffer.length < size) {
        if (this.buffer.length > 0) {
          this.parts = [this.buffer];
          this.partBytes = this.buffer.length;
          this.buffer = Buffer.alloc(0);
        }
        break;
      }
      const body = this.buffer.subarray(0, size);
      this.buffer = this.buffer.subarray(size);
      let payload: Table;
      try {
        payload = tableFromIPC(body);
      } catch (error) {
        throw new ProtocolError(`payload of a ${this.pending.type} message is not an Arrow IPC stream: ${(error as Error).message}`);
      }
      frames.push({ header: this.pending, payload });
      this.pending = null;
    }
    return frames;
  }

  /** Bytes received but not yet a whole frame (at the end of a stream this means it was cut short). */
  get leftover(): number {
    return this.buffer.length + this.partBytes;
  }
}

function parseHeader(line: string): Header {
  let header: unknown;
  try {
    header = JSON.parse(line);
  } catch {
    throw new ProtocolError(`sidecar wrote a line that is not a protocol header: ${JSON.stringify(line.slice(0, 120))}`);
  }
  if (!header || typeof header !== "object" || typeof (header as Header).type !== "string") {
    throw new ProtocolError(`header must be a JSON object with a "type": ${line.slice(0, 120)}`);
  }
  const h = header as Header;
  if (h.v !== PROTOCOL_VERSION) {
    throw new ProtocolError(
      `the sidecar speaks protocol v=${String(h.v)}, this inoculant speaks v=${PROTOCOL_VERSION}; reinstall it with npm run setup:sidecar`,
    );
  }
  if (h.payload_bytes !== undefined && (!Number.isInteger(h.payload_bytes) || h.payload_bytes <= 0)) {
    throw new ProtocolError(`payload_bytes must be a positive integer, got ${String(h.payload_bytes)}`);
  }
  return h;
}
