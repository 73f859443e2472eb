import { spawn, spawnSync } from "node:child_process";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { REPO, tempDir, writeJsonl, writeSources } from "./helpers.ts";
import { startLlmServer } from "./llm-server.ts";

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
    const notRunClean = cli(["clean", join(dir, "no-such-run")], dir);
    expect(notRunClean.code).toBe(1);
    expect(notRunClean.stderr).toMatch(/^inoculant: .*no-such-run is not a run directory \(no run\.duckdb\)\n$/);
  });

  it("refuses a stage the config does not enable, or a --force past the last stage, naming the fix", async () => {
    const dir = await project();
    const generate = cli(["generate", "pipeline.yaml"], dir);
    expect(generate.code).toBe(1);
    expect(generate.stderr).toBe("inoculant: this config does not enable stage generate; to run it, set `llm.generator`\n");
    const until = cli(["run", "pipeline.yaml", "--until", "audit"], dir);
    expect(until.stderr).toMatch(/this config does not enable stage audit; to run it, add an `audit` section/);
    const past = cli(["mix", "pipeline.yaml", "--force", "export"], dir);
    expect(past.code).toBe(1);
    expect(past.stderr).toMatch(/--force export: stage export comes after mix, the last stage this command runs/);
  });

  it("shows the stages a failed run got through, as JSON with --json, with the error", async () => {
    const dir = await project();
    await writeFile(join(dir, "pipeline.yaml"), `${await readFile(join(dir, "pipeline.yaml"), "utf8")}mix: { rows: 1000 }\n`);
    const r = cli(["run", "pipeline.yaml", "--json"], dir);
    expect(r.code).toBe(1);
    const out = JSON.parse(r.stdout);
    expect(out.stages.map((s: { stage: string; status: string }) => [s.stage, s.status])).toEqual([["ingest", "ran"], ["mix", "failed"]]);
    expect(out.error).toEqual({ message: expect.stringMatching(/^stage mix: mix\.rows 1000 .* the sources have 12/), user_error: true });
    expect(r.stderr).toContain("inoculant: stage mix: mix.rows 1000");
    // Without --json, the table of what it got through, as on success.
    const text = cli(["run", "pipeline.yaml"], dir);
    expect(text.code).toBe(1);
    expect(text.stdout).toMatch(/\ningest\s+skipped\s+24 .*\nmix\s+failed\s+-/);
    const bad = cli(["run", "nope.yaml", "--json"], dir);
    expect(JSON.parse(bad.stdout)).toEqual({ runDir: null, stages: [], error: { message: expect.stringMatching(/nope\.yaml does not exist/), user_error: true } });
  });

  it("says what is wrong with a run directory that is a file, holds no catalog, or is in use; status works during a run", async () => {
    const dir = await project();
    const file = cli(["run", "pipeline.yaml", "--run-dir", "pipeline.yaml"], dir);
    expect(file.code).toBe(1);
    expect(file.stderr).toMatch(/pipeline\.yaml: not a folder; give the run directory \(--run-dir or run_dir\) a folder's path/);

    await mkdir(join(dir, "junk"));
    await writeFile(join(dir, "junk", "run.duckdb"), "not a database\n");
    for (const args of [["run", "pipeline.yaml", "--run-dir", "junk"], ["status", "junk"]]) {
      const r = cli(args, dir);
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(/junk\/run\.duckdb is not a catalog this DuckDB can open .*; move the run directory aside/);
      expect(r.stderr).not.toMatch(/\n\s+at /);
    }

    expect(cli(["run", "pipeline.yaml", "--run-dir", "busy"], dir).code).toBe(0);
    // Another process holds the catalog, as a run in progress does, and is on export.
    const holder = spawn(process.execPath, ["--import", "tsx", "--input-type=module", "-e", `
      const { RunStore, runningEntry } = await import("./src/store/run-store.ts");
      const store = await RunStore.open(${JSON.stringify(join(dir, "busy"))});
      await store.saveManifestEntry(runningEntry("export"));
      process.stdout.write("holding\\n");
      setInterval(() => {}, 1000);`], { cwd: REPO, stdio: ["ignore", "pipe", "inherit"] });
    try {
      await new Promise<void>((resolve, reject) => {
        holder.stdout.on("data", (d: Buffer) => d.toString().includes("holding") && resolve());
        holder.on("exit", (code) => reject(new Error(`holder exited ${code}`)));
      });
      const r = cli(["run", "pipeline.yaml", "--run-dir", "busy", "--force", "export"], dir);
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(/^inoculant: a run is in progress in .*busy \(run\.duckdb is locked\); wait for it, or stop it\n$/);
      // `status` cannot open the catalog either, so it shows the copy the run keeps of it.
      const status = cli(["status", "busy", "--json"], dir);
      expect(status.code).toBe(0);
      const lines = JSON.parse(status.stdout) as { stage: string; status: string; rows: number | null; seconds: number | null }[];
      expect(lines.find((l) => l.stage === "mix")).toMatchObject({ status: "done", rows: 24 });
      expect(lines.find((l) => l.stage === "export")).toMatchObject({ status: "running", rows: null });
      expect(lines.find((l) => l.stage === "export")!.seconds).toBeGreaterThanOrEqual(0);
    } finally {
      holder.kill();
    }
  });

  it("says how to go on when a run is stopped with SIGTERM, and exits 143", async () => {
    const dir = await project();
    const server = await startLlmServer({ fault: () => ({ kind: "hang" }) });
    try {
      await writeFile(
        join(dir, "pipeline.yaml"),
        `${await readFile(join(dir, "pipeline.yaml"), "utf8")}llm: { generator: { model: test-model, base_url: "${server.url}" } }\n`,
      );
      const child = spawn(process.execPath, [join(REPO, "bin", "inoculant.cjs"), "run", "pipeline.yaml"], { cwd: dir, stdio: ["ignore", "pipe", "pipe"] });
      let stderr = "";
      const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
      // Stopped once it is waiting on the model server.
      await new Promise<void>((resolve) => child.stderr.on("data", (d: Buffer) => (stderr += d.toString()).includes("generate:") && resolve()));
      child.kill("SIGTERM");
      expect(await exited).toBe(143);
      expect(stderr).toContain("inoculant: stopped by SIGTERM; finished stages and shards are kept: rerun the same command to resume\n");
      expect(cli(["status", join(dir, "runs", "cli-test")], dir).stdout).toMatch(/mix\s+done[\s\S]*generate\s+interrupted/);
    } finally {
      await server.close();
    }
  });

  it("exits 2 on bad usage", async () => {
    const dir = await project();
    expect(cli(["run"], dir).code).toBe(2);
    expect(cli(["run", "pipeline.yaml", "--until", "nowhere"], dir).code).toBe(2);
    expect(cli(["frobnicate"], dir).code).toBe(2);
    expect(cli(["--help"], dir).code).toBe(0);
    const { version } = JSON.parse(await readFile(join(REPO, "package.json"), "utf8")) as { version: string };
    expect(cli(["--version"], dir)).toMatchObject({ code: 0, stdout: `${version}\n` });
  });
});
