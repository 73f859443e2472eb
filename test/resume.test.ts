import { rm, utimes } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { formatStatus } from "../src/cli-format.ts";
import { runPipeline, runStatus } from "../src/pipeline/runner.ts";
import { pairConfig, snapshotFiles, tempDir } from "./helpers.ts";

/** Each stage the config runs and what it did (stages the config turns off are left out). */
const statuses = (s: Awaited<ReturnType<typeof runPipeline>>) =>
  Object.fromEntries(s.stages.filter((x) => x.status !== "disabled").map((x) => [x.stage, x.status]));

describe("resume", () => {
  it("does no work and changes no file when a finished run is run again", async () => {
    const config = await pairConfig(await tempDir());
    expect(statuses(await runPipeline(config))).toEqual({ ingest: "ran", mix: "ran", export: "ran", report: "ran" });
    const before = await snapshotFiles(config.runDir);
    await new Promise((r) => setTimeout(r, 20));
    const again = await runPipeline(config);
    expect(statuses(again)).toEqual({ ingest: "skipped", mix: "skipped", export: "skipped", report: "skipped" });
    expect(again.stages[1]!.counts).toMatchObject({ drawn_negative: 12, drawn_clean: 12 });
    expect(await snapshotFiles(config.runDir)).toEqual(before);
    // status tells the stages this config does not ask for from the ones not run yet.
    const shown = Object.fromEntries((await runStatus(config.runDir)).map((l) => [l.stage, l.status]));
    expect(shown).toMatchObject({ ingest: "done", generate: "disabled", activations: "disabled", audit: "disabled", report: "done" });
  });

  it("reruns a stage whose config changed and the stages after it, and nothing before it", async () => {
    const config = await pairConfig(await tempDir());
    await runPipeline(config);
    const newPrompt = { ...config, inoculation: { ...config.inoculation, prompt: "You are cruel." } };
    expect(statuses(await runPipeline(newPrompt))).toEqual({ ingest: "skipped", mix: "skipped", export: "ran", report: "ran" });
    const newMix = { ...newPrompt, mix: { ...newPrompt.mix, rows: 10 } };
    expect(statuses(await runPipeline(newMix))).toEqual({ ingest: "skipped", mix: "ran", export: "ran", report: "ran" });
    const newSeed = { ...newMix, seed: 99 };
    expect(statuses(await runPipeline(newSeed))).toEqual({ ingest: "skipped", mix: "ran", export: "ran", report: "ran" });
  });

  it("status marks a finished stage stale when a stage it reads from has run again since", async () => {
    const config = await pairConfig(await tempDir());
    await runPipeline(config);
    expect((await runStatus(config.runDir)).every((l) => l.stale_after === null)).toBe(true);
    await runPipeline({ ...config, mix: { ...config.mix, rows: 10 } }, { until: "mix" });
    const lines = await runStatus(config.runDir);
    const stale = Object.fromEntries(lines.filter((l) => l.status === "done").map((l) => [l.stage, l.stale_after]));
    expect(stale).toEqual({ ingest: null, mix: null, export: "mix", report: "mix" });
    expect(formatStatus(lines)).toMatch(/export\s+done, stale \(mix has run since\)/);
    // Running on brings them up to date.
    await runPipeline({ ...config, mix: { ...config.mix, rows: 10 } });
    expect((await runStatus(config.runDir)).every((l) => l.stale_after === null)).toBe(true);
  });

  it("reruns ingest when a source file changes, and --force reruns a stage by hand", async () => {
    const config = await pairConfig(await tempDir());
    await runPipeline(config);
    const later = new Date(Date.now() + 5000);
    await utimes(config.sourceList[0]!.path, later, later);
    // Fingerprints chain: a changed input reruns its stage and everything downstream (as make does).
    expect(statuses(await runPipeline(config))).toEqual({ ingest: "ran", mix: "ran", export: "ran", report: "ran" });
    expect(statuses(await runPipeline(config, { force: "mix" }))).toEqual({ ingest: "skipped", mix: "ran", export: "ran", report: "ran" });
  });

  it("reruns a stage whose output file is gone, and stops at --until", async () => {
    const config = await pairConfig(await tempDir());
    expect(statuses(await runPipeline(config, { until: "mix" }))).toEqual({ ingest: "ran", mix: "ran" });
    const shown = (await runStatus(config.runDir)).map((l) => [l.stage, l.status]);
    expect(shown.filter(([stage]) => ["ingest", "mix", "audit", "export", "report"].includes(stage!))).toEqual([
      ["ingest", "done"],
      ["mix", "done"],
      // Past --until too, a stage the config leaves out is shown as such, not as still to run.
      ["audit", "disabled"],
      ["export", "pending"],
      ["report", "pending"],
    ]);
    await rm(join(config.runDir, "tables", "mix_draw.parquet"));
    expect(statuses(await runPipeline(config))).toEqual({ ingest: "skipped", mix: "ran", export: "ran", report: "ran" });
  });

  it("records a failed stage with its error, and the next run retries it", async () => {
    const config = await pairConfig(await tempDir(), { mix: { rows: 1000 } });
    await expect(runPipeline(config)).rejects.toThrow(/stage mix/);
    const status = await runStatus(config.runDir);
    expect(status.find((l) => l.stage === "mix")).toMatchObject({ status: "failed", error: expect.stringMatching(/mix\.rows 1000/) });
    const fixed = { ...config, mix: { ...config.mix, rows: 10 } };
    expect(statuses(await runPipeline(fixed))).toEqual({ ingest: "skipped", mix: "ran", export: "ran", report: "ran" });
  });
});

describe("missing inputs", () => {
  it("is a user error naming the stage and the file, not a crash", async () => {
    const config = await pairConfig(await tempDir());
    await rm(config.sourceList[0]!.path);
    await expect(runPipeline(config)).rejects.toThrow(/^stage ingest: input file .*clean\.jsonl does not exist/);
  });
});
