import { spawnSync } from "node:child_process";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { REPO, tempDir, writeJsonl, writeSources } from "./helpers.ts";

function cli(args: string[], cwd: string) {
  const r = spawnSync(process.execPath, [join(REPO, "bin", "inoculant.cjs"), ...args], { cwd, encoding: "utf8" });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

async function project(): Promise<string> {
  const dir = await tempDir();
  await writeSources(dir);
  await writeFile(
    join(dir, "pipeline.yaml"),
    `name: cli-test
seed: 3
sources:
  clean: { path: clean.jsonl }
  contaminated: { path: contaminated.jsonl }
inoculation: { prompt: "You are evil." }
`,
  );
  return dir;
}

describe("CLI", () => {
  it("runs a config, writes runs/<name> in the working directory, and exits 0", async () => {
    const dir = await project();
    const r = cli(["run", "pipeline.yaml"], dir);
    expect(r.stderr).not.toMatch(/error/i);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/export\s+ran\s+120/);
    const status = cli(["status", join(dir, "runs", "cli-test")], dir);
    expect(status.code).toBe(0);
    expect(status.stdout).toMatch(/ingest\s+done\s+24/);
    expect(status.stdout).toMatch(/export\s+done\s+120/);
  });

  it("prints a machine-readable summary with --json", async () => {
    const dir = await project();
    const r = cli(["mix", "pipeline.yaml", "--json", "--run-dir", "elsewhere"], dir);
    expect(r.code).toBe(0);
    const summary = JSON.parse(r.stdout);
    expect(summary.runDir).toBe(join(dir, "elsewhere"));
    expect(summary.stages.map((s: { stage: string; status: string }) => [s.stage, s.status])).toEqual([
      ["ingest", "ran"],
      ["mix", "ran"],
    ]);
  });

  it("exits 1 with one clear line and no stack trace for a user error", async () => {
    const dir = await project();
    await writeJsonl(join(dir, "clean.jsonl"), [{ messages: [{ role: "user", content: "no answer" }] }]);
    const r = cli(["run", "pipeline.yaml"], dir);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("inoculant: stage ingest: 1 bad row:");
    expect(r.stderr).toContain("clean.jsonl:1 (line 1): no assistant turn");
    expect(r.stderr).not.toMatch(/\n\s+at /);

    const missing = cli(["run", "nope.yaml"], dir);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toBe("inoculant: config file nope.yaml does not exist or cannot be read\n");

    const notRun = cli(["status", join(dir, "no-such-run")], dir);
    expect(notRun.code).toBe(1);
    expect(notRun.stderr).toMatch(/is not a run directory/);
  });

  it("exits 2 on bad usage", async () => {
    const dir = await project();
    expect(cli(["run"], dir).code).toBe(2);
    expect(cli(["run", "pipeline.yaml", "--until", "nowhere"], dir).code).toBe(2);
    expect(cli(["frobnicate"], dir).code).toBe(2);
    expect(cli(["--help"], dir).code).toBe(0);
  });
});
