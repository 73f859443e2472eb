import { afterEach, describe, expect, it } from "vitest";
import { terminalProgress } from "../src/progress.ts";

/** Log lines during a run must reach the terminal whole, not be dropped or written into a bar. */
describe("terminal progress", () => {
  const stderr = process.stderr as NodeJS.WriteStream & { isTTY: boolean };
  const original = { isTTY: stderr.isTTY, write: stderr.write, columns: stderr.columns };
  afterEach(() => {
    stderr.isTTY = original.isTTY;
    stderr.write = original.write;
    stderr.columns = original.columns;
  });

  it("prints a log line above the bars while they are drawn, and after them once stopped", () => {
    let out = "";
    stderr.isTTY = true;
    stderr.columns = 120;
    stderr.write = ((chunk: string | Uint8Array) => {
      out += String(chunk);
      return true;
    }) as typeof stderr.write;
    const progress = terminalProgress();
    const task = progress.task("export", 10, "rows");
    task.update(3);
    progress.log("export: a line while the bar is drawn");
    expect(out).toContain("export: a line while the bar is drawn\n");
    const before = out.indexOf("export: a line while");
    expect(out.slice(before)).toMatch(/export\s+\|/); // the bar is drawn again below the line
    task.finish();
    progress.stop();
    progress.log("after the bars");
    expect(out.endsWith("after the bars\n")).toBe(true);
  });
});
