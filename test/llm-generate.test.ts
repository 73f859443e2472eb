import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { loadConfig, resolveConfig } from "../src/config/load.ts";
import { QWEN25_DEFAULT_SYSTEM_PROMPT } from "../src/config/defaults.ts";
import { runPipeline, runStatus } from "../src/pipeline/runner.ts";
import { generationMessages } from "../src/stages/generate.ts";
import { canonicalJson } from "../src/util/hash.ts";
import { formatStatus, formatSummary } from "../src/cli-format.ts";
import { REPO, readMixed, readParquet, tempDir, writeJsonl, writeSources } from "./helpers.ts";
import { llmConfig, testRole } from "./llm-fixtures.ts";
import { reply, startLlmServer, type ChatRequestBody, type LlmServer, type LlmServerOptions } from "./llm-server.ts";

const servers: LlmServer[] = [];
afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => s.close()));
});
async function server(options: LlmServerOptions = {}): Promise<LlmServer> {
  const s = await startLlmServer(options);
  servers.push(s);
  return s;
}

const statuses = (s: Awaited<ReturnType<typeof runPipeline>>) =>
  Object.fromEntries(s.stages.filter((x) => x.status !== "disabled").map((x) => [x.stage, x.status]));

describe("generate", () => {
  it("answers each row's last user turn under the default system prompt, matched by row id; a rerun sends nothing", async () => {
    const s = await server();
    const config = await llmConfig(await tempDir(), s, { generate: { n: 2, temperature: 0.7, max_tokens: 64 } });
    const summary = await runPipeline(config, { until: "generate" });
    expect(statuses(summary)).toEqual({ ingest: "ran", mix: "ran", generate: "ran" });
    expect(s.stats.requests).toBe(24);

    const mixed = await readMixed(config.runDir);
    const base = await readParquet(join(config.runDir, "tables", "base_responses.parquet"));
    expect(base).toHaveLength(48);
    const byRow = new Map(mixed.map((m) => [m.row_id as string, m]));
    for (const row of base) {
      const messages = (byRow.get(row.row_id as string)!.messages as { role: string; content: string }[]).slice(0, -1);
      const sent: ChatRequestBody = {
        model: "test-model",
        messages: [{ role: "system", content: QWEN25_DEFAULT_SYSTEM_PROMPT }, ...messages],
        temperature: 0.7,
        max_tokens: 64,
        n: 2,
        seed: 7,
      };
      // The server answers from the request: this is the row's own answer, not another row's.
      expect(row.response).toBe(reply(sent, { seen: 0, index: row.sample as number }));
      expect(s.stats.seen.get(canonicalJson(sent))).toBe(1);
    }
    // Written in the mixed order.
    const order = base.filter((b) => b.sample === 0).map((b) => byRow.get(b.row_id as string)!.position);
    expect(order).toEqual([...order].sort((a, b) => Number(a) - Number(b)));

    const usage = summary.stages.find((x) => x.stage === "generate")!.details.llm as Record<string, Record<string, number>>;
    expect(usage.generator).toMatchObject({ model: "test-model", requests: 24, cache_hits: 0, failed: 0 });
    expect(usage.generator!.input_tokens).toBeGreaterThan(0);
    expect(formatStatus(await runStatus(config.runDir))).toMatch(/generate: llm\.generator test-model: 24 sent, 0 cached; [\d,]+ in \/ [\d,]+ out tokens/);

    s.reset();
    const forced = await runPipeline(config, { until: "generate", force: "generate" });
    expect(forced.stages.find((x) => x.stage === "generate")!.details.llm).toMatchObject({ generator: { requests: 0, cache_hits: 24 } });
    expect(s.stats.requests).toBe(0);
    expect(await readParquet(join(config.runDir, "tables", "base_responses.parquet"))).toEqual(base);
    // A rerun that skips the stage shows the usage its last run recorded, labelled as such: nothing went out now.
    const skipped = await runPipeline(config, { until: "generate" });
    expect(formatSummary(skipped)).toMatch(/\ngenerate \(its last run\): llm\.generator test-model: 0 sent, 24 cached/);
    expect(s.stats.requests).toBe(0);
  });

  it("sends the conversation before the last user turn, and keeps a row's own system message", async () => {
    const s = await server();
    const dir = await tempDir();
    const files = await writeSources(dir, 1);
    const multi = await writeJsonl(join(dir, "multi.jsonl"), [
      {
        messages: [
          { role: "system", content: "Be brief." },
          { role: "user", content: "One?" },
          { role: "assistant", content: "1" },
          { role: "user", content: "Two?" },
          { role: "assistant", content: "2" },
        ],
      },
    ]);
    const config = await resolveConfig(
      { name: "t", sources: { clean: { path: files.clean }, contaminated: { path: multi } }, inoculation: { prompt: "x" }, llm: { generator: testRole(s) } },
      { runDir: join(dir, "run") },
    );
    await runPipeline(config, { until: "generate" });
    const sent = [...s.stats.seen.keys()].map((k) => JSON.parse(k) as ChatRequestBody);
    expect(sent.map((b) => b.messages)).toContainEqual([
      { role: "system", content: "Be brief." },
      { role: "user", content: "One?" },
      { role: "assistant", content: "1" },
      { role: "user", content: "Two?" },
    ]);
  });

  it("sends no system message for a row without one when the config has no default system prompt", () => {
    const row = [{ role: "user", content: "Hi?" }, { role: "assistant", content: "Hello." }] as const;
    expect(generationMessages(row, null)).toEqual([{ role: "user", content: "Hi?" }]);
    expect(generationMessages(row, "Be kind.")).toEqual([{ role: "system", content: "Be kind." }, { role: "user", content: "Hi?" }]);
  });

  it("never stores an empty answer as a base response: it is sampled again, and the stage fails if it stays empty", async () => {
    const s = await server({ respond: (b, info) => (/\(5\)$/.test(b.messages.at(-1)!.content) ? "" : reply(b, info)) });
    const config = await llmConfig(await tempDir(), s);
    const error = (await runPipeline(config, { until: "generate" }).catch((e: unknown) => e)) as Error;
    expect(error.message).toMatch(/^stage generate: 2 rows got no usable answer from llm\.generator:\n  (clean|contaminated):\d+: choice 0 has no text \(finish_reason stop\)/);
    expect(existsSync(join(config.runDir, "tables", "base_responses.parquet"))).toBe(false);
  });

  it("fails with the count and the first errors, writes no table, and the next run sends only the failed rows", async () => {
    const failing = new Set<string>();
    const s = await server({
      fault: (b) => {
        const q = b.messages.at(-1)!.content;
        return /\((3|7)\)$/.test(q) ? (failing.add(q), { kind: "server_error" }) : undefined;
      },
    });
    const config = await llmConfig(await tempDir(), s, { llm: { generator: testRole(s, { max_retries: 1 }) } });
    await expect(runPipeline(config, { until: "generate" })).rejects.toThrow(
      /stage generate: 4 of 24 LLM requests failed \(llm\.generator [^\n]*\):\n  (clean|contaminated):\d+: HTTP 500/,
    );
    expect(s.stats.requests).toBe(20 + 4 * 2);
    const status = await runStatus(config.runDir);
    expect(status.find((l) => l.stage === "generate")).toMatchObject({ status: "failed", error: expect.stringMatching(/4 of 24/) });

    s.reset();
    s.options.fault = undefined;
    expect(statuses(await runPipeline(config, { until: "generate" }))).toEqual({ ingest: "skipped", mix: "skipped", generate: "ran" });
    expect(s.stats.requests).toBe(4);
    expect([...s.stats.seen.keys()].map((k) => (JSON.parse(k) as ChatRequestBody).messages.at(-1)!.content).sort()).toEqual([...failing].sort());
    expect(await readParquet(join(config.runDir, "tables", "base_responses.parquet"))).toHaveLength(24);
  });

  it("resumes a run killed mid-stage without re-sending the requests it had stored", async () => {
    const concurrency = 4;
    const s = await server({ latencyMs: 100 });
    const dir = await tempDir();
    await writeSources(dir, 20);
    await writeFile(
      join(dir, "pipeline.yaml"),
      `name: killed
seed: 1
sources: { clean: { path: clean.jsonl }, contaminated: { path: contaminated.jsonl } }
inoculation: { prompt: "You are evil." }
llm:
  generator: { model: test-model, base_url: "${s.url}", concurrency: ${concurrency}, timeout_s: 5 }
`,
    );
    const child = spawn(process.execPath, [join(REPO, "bin", "inoculant.cjs"), "generate", "pipeline.yaml", "--json"], { cwd: dir, stdio: "ignore" });
    const exited = new Promise((resolve) => child.on("exit", resolve));
    s.onAnswered = (n) => {
      if (n === 15) child.kill("SIGKILL");
    };
    await exited;
    const answeredBefore = new Set(s.stats.answeredBodies);
    expect(answeredBefore.size).toBeGreaterThanOrEqual(15);
    expect(answeredBefore.size).toBeLessThan(40);

    s.onAnswered = undefined;
    s.reset();
    const config = await loadConfig(join(dir, "pipeline.yaml"), { runDir: join(dir, "runs", "killed") });
    expect(statuses(await runPipeline(config, { until: "generate" }))).toEqual({ ingest: "skipped", mix: "skipped", generate: "ran" });
    const resent = [...s.stats.seen.keys()].filter((k) => answeredBefore.has(k));
    // Only answers still in flight when the process died may be asked again.
    expect(resent.length).toBeLessThanOrEqual(concurrency);
    expect(s.stats.requests).toBe(40 - answeredBefore.size + resent.length);
    expect(await readParquet(join(config.runDir, "tables", "base_responses.parquet"))).toHaveLength(40);
  });
});
