import { execFile } from "node:child_process";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { REPO, tempDir } from "./helpers.ts";
import { startLlmServer, type LlmServer } from "./llm-server.ts";

/** Asynchronous, so the test server in this process can answer the CLI's requests. */
async function cli(args: string[], cwd: string): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await promisify(execFile)(process.execPath, [join(REPO, "bin", "inoculant.cjs"), ...args], { cwd, encoding: "utf8" });
    return { code: 0, stdout, stderr };
  } catch (error) {
    const e = error as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

describe("inoculant eval (CLI)", () => {
  let server: LlmServer;
  beforeAll(async () => {
    server = await startLlmServer({ models: ["m", "j"], logprobs: () => [{ token: "30", logprob: 0 }] });
  });
  afterAll(() => server.close());

  it("prints every figure with its question count and the report's path; --json gives the same figures", async () => {
    const dir = await tempDir();
    await writeFile(
      join(dir, "eval.yaml"),
      `name: cli-eval
models: [{ name: arm, model: m, base_url: "${server.url}" }]
judge: { model: j, base_url: "${server.url}" }
traits: [{ name: evil, questions: ["q1?", "q2?"], judge_prompt: "Rate {question} / {answer}: 0-100" }]
samples: 2
bootstrap_resamples: 100
`,
    );
    const r = await cli(["eval", "eval.yaml"], dir);
    expect(r.stderr).not.toMatch(/error/i);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain("evil  arm  neutral: mean_score 30.0 [30.0, 30.0] (n=2 q)");
    expect(r.stdout).toContain("warning: arm / default / evil: only 2 independent questions (under 20)");
    expect(r.stdout).toContain(join(dir, "runs", "cli-eval", "eval-report.html"));
    const json = await cli(["eval", "eval.yaml", "--json"], dir);
    expect(JSON.parse(json.stdout).cells).toHaveLength(2);
  });

  it("prints the complete models' figures, then exits 1 naming the model whose server failed", async () => {
    const dir = await tempDir();
    await writeFile(
      join(dir, "eval.yaml"),
      `name: cli-eval-down
models:
  - { name: arm, model: m, base_url: "${server.url}" }
  - { name: gone, model: m, base_url: "http://127.0.0.1:9/v1", max_retries: 0, timeout_s: 1 }
judge: { model: j, base_url: "${server.url}" }
traits: [{ name: evil, questions: ["q1?", "q2?"], judge_prompt: "Rate {question} / {answer}: 0-100" }]
samples: 2
bootstrap_resamples: 100
`,
    );
    const r = await cli(["eval", "eval.yaml"], dir);
    expect(r.code).toBe(1);
    expect(r.stdout).toContain("evil  arm  neutral: mean_score 30.0 [30.0, 30.0] (n=2 q)");
    expect(r.stdout).toMatch(/model gone: incomplete \(4 of 4 requests without a usable answer\)/);
    expect(r.stderr).toMatch(/inoculant: eval: 1 of 2 models incomplete, left out of the figures:\n  gone: 4 of 4 LLM requests failed/);
    const status = await cli(["status", join("runs", "cli-eval-down")], dir);
    expect(status.stdout).toMatch(/eval:gone\s+failed/);
    expect(status.stdout).toMatch(/eval:arm\s+done/);
    expect(status.stdout).not.toMatch(/^ingest/m);
  });

  it("exits 1 with the key and the fix for a bad config", async () => {
    const dir = await tempDir();
    await writeFile(join(dir, "eval.yaml"), `name: bad\nmodels: [{ name: a, model: m }]\njudge: { model: j }\ntraits: [{ name: t, file: missing.json }]\n`);
    const r = await cli(["eval", "eval.yaml"], dir);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^inoculant: .*traits\.0 \(t\)\.file: cannot read .*missing\.json.*Persona Vectors/);
  });
});
