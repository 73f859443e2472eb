import { spawnSync } from "node:child_process";
import { closeSync, constants, openSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { growPipe } from "../src/util/pipe-capacity.ts";
import { tempDir } from "./helpers.ts";

describe.runIf(process.platform === "linux")("growPipe", () => {
  it("grows a named pipe's buffer and returns the size it got, and returns null for what is not a pipe", async () => {
    const path = join(await tempDir(), "fifo");
    expect(spawnSync("mkfifo", [path]).status).toBe(0);
    // Read and write ends without waiting for a peer.
    const fd = openSync(path, constants.O_RDWR | constants.O_NONBLOCK);
    try {
      // Linux rounds the size up to a power of two pages.
      expect(growPipe(fd, 1 << 20)).toBe(1 << 20);
      expect(growPipe(fd, 100_000)).toBe(128 << 10);
    } finally {
      closeSync(fd);
    }
    const file = openSync(join(await tempDir(), "plain"), "w");
    try {
      expect(growPipe(file, 1 << 20)).toBeNull();
    } finally {
      closeSync(file);
    }
  });
});
