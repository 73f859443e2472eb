import { existsSync, readFileSync } from "node:fs";
import { chmod, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { tableFromArrays } from "apache-arrow";
import { describe, expect, it } from "vitest";
import { encodeFrame, FrameDecoder, ProtocolError, type Frame } from "../src/sidecar/protocol.ts";
import { arrowRows } from "../src/sidecar/arrow-rows.ts";
import { UserError } from "../src/errors.ts";
import { SidecarClient } from "../src/sidecar/client.ts";
import { REPO, tempDir } from "./helpers.ts";

/** Written by the Python side (python -m inoculant_sae.testing.recording); both ends test against them. */
const RECORDED = join(REPO, "sae", "tests", "fixtures", "recorded");
type Expected = { header: Record<string, unknown>; payload: Record<string, unknown>[] | null };

function decodeInChunks(bytes: Buffer, chunkSize: number): Frame[] {
  const decoder = new FrameDecoder();
  const frames: Frame[] = [];
  for (let i = 0; i < bytes.length; i += chunkSize) frames.push(...decoder.push(bytes.subarray(i, i + chunkSize)));
  expect(decoder.leftover).toBe(0);
  return frames;
}

function asExpected(frames: Frame[]): Expected[] {
  return frames.map(({ header, payload }) => {
    const { payload_bytes: _size, ...rest } = header;
    return { header: rest, payload: payload ? arrowRows(payload) : null };
  });
}

describe.skipIf(!existsSync(join(RECORDED, "expected.json")))("sidecar protocol against recorded frames", () => {
  const expected = JSON.parse(readFileSync(join(RECORDED, "expected.json"), "utf8")) as { session: Expected[]; job: Expected[] };

  it.each([1, 7, 64, 100_000])("decodes the sidecar's recorded session identically, fed %i bytes at a time", (chunk) => {
    const frames = decodeInChunks(readFileSync(join(RECORDED, "session.bin")), chunk);
    expect(asExpected(frames)).toEqual(expected.session);
  });

  it("decodes the recorded job, and encodes the same job to the same frames", () => {
    const recorded = decodeInChunks(readFileSync(join(RECORDED, "job.bin")), 13);
    expect(asExpected(recorded)).toEqual(expected.job);
    // Re-encode what was decoded: the TS encoder must produce frames the decoder reads back identically.
    const reencoded = Buffer.concat(recorded.map((f) => encodeFrame(f.header, f.payload ?? undefined)));
    expect(asExpected(decodeInChunks(reencoded, 5))).toEqual(expected.job);
  });
});

describe("sidecar protocol errors", () => {
  it("rejects another protocol version with a fix", () => {
    expect(() => new FrameDecoder().push(Buffer.from('{"v":2,"type":"hello"}\n'))).toThrow(/speaks protocol v=2.*npm run setup:sidecar/);
  });

  it("rejects stray output that is not a header", () => {
    expect(() => new FrameDecoder().push(Buffer.from("Loading checkpoint shards: 100%\n"))).toThrow(ProtocolError);
  });

  it("waits for a payload split across chunks", () => {
    const frame = encodeFrame({ type: "result", id: "j", name: "t", final: true }, tableFromArrays({ x: Int32Array.from([1, 2]) }));
    const decoder = new FrameDecoder();
    expect(decoder.push(frame.subarray(0, frame.length - 3))).toEqual([]);
    const [done] = decoder.push(frame.subarray(frame.length - 3));
    expect(arrowRows(done!.payload!)).toEqual([{ x: 1 }, { x: 2 }]);
  });

  it("decodes a large payload fed in small chunks in time linear in its size, with the next frame in its last chunk", () => {
    const values = Float64Array.from({ length: 2 << 20 }, (_, i) => i); // 16 MiB
    const stream = Buffer.concat([
      encodeFrame({ type: "result", id: "j", name: "big", final: false }, tableFromArrays({ x: values })),
      encodeFrame({ type: "done", id: "j", summary: {} }),
    ]);
    const started = performance.now();
    const frames = decodeInChunks(stream, 4096);
    // Joining each chunk onto the ones before copies some 32 GB here (8 s, measured); joining once takes milliseconds.
    expect(performance.now() - started).toBeLessThan(2000);
    expect(frames.map((f) => f.header.type)).toEqual(["result", "done"]);
    const x = frames[0]!.payload!.getChild("x")!;
    expect(x.length).toBe(values.length);
    expect([x.get(0), x.get(123_456), x.get(values.length - 1)]).toEqual([0, 123_456, values.length - 1]);
  });
});

describe("starting the sidecar", () => {
  it("names sidecar.python and the fix when the Python given cannot start it", async () => {
    const dir = await tempDir();
    // A stand-in for a Python without the sidecar installed.
    const python = join(dir, "python");
    await writeFile(python, "#!/bin/sh\necho \"No module named inoculant_sae\" >&2\nexit 1\n");
    await chmod(python, 0o755);
    const error = (await SidecarClient.start({ python }).catch((e: unknown) => e)) as Error;
    expect(error).toBeInstanceOf(UserError);
    expect(error.message).toMatch(/^the sidecar exited \(code 1\) before finishing: .*\/python did not start the sidecar; run `npm run setup:sidecar`, or point sidecar\.python at/);
    expect(error.message).toContain("No module named inoculant_sae");
  });
});
