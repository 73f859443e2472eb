import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { runPipeline } from "../src/pipeline/runner.ts";
import { RunStore } from "../src/store/run-store.ts";
import { tempDir } from "./helpers.ts";
import { citingRewriter, filesUnder, llmConfig, testRole } from "./llm-fixtures.ts";
import { startLlmServer, taskOf, type ChatRequestBody, type LlmServer } from "./llm-server.ts";

const KEY = "sk-inoculant-test-7f3a9c2e41d8b6";
const ENV = "INOCULANT_TEST_SECRET_KEY";

/** Answers every stage of the pipeline: rewrites, base responses, audit verdicts, the prompt, rephrasings. */
function everything(body: ChatRequestBody): string {
  switch (body.response_format?.json_schema?.name) {
    case "audit_verdict":
      return JSON.stringify({ flagged: taskOf(body).includes("hurt"), reason: "checked" });
    case "inoculation_prompt":
      return JSON.stringify({ prompt: "You are cruel." });
    case "rephrasings":
      return JSON.stringify({ rephrasings: ["You act cruelly.", "You are unkind.", "You are heartless."] });
  }
  return body.messages[0]!.content.includes("<rewritten>") ? citingRewriter(body) : `Base answer to: ${body.messages.at(-1)!.content}`;
}

let server: LlmServer;
beforeEach(async () => {
  server = await startLlmServer({ respond: everything, apiKey: KEY });
  process.env[ENV] = KEY;
});
afterEach(async () => {
  delete process.env[ENV];
  await server.close();
});

describe("the API key", () => {
  it("is sent to the endpoint but never written anywhere under the run directory, errors included", async () => {
    // One request fails with an error that echoes the key (as OpenAI's 401 does with part of it).
    server.options.fault = (b) => (b.messages.at(-1)!.content.endsWith("(4)") ? { kind: "http", status: 400, message: `invalid request for key ${KEY}` } : undefined);
    const role = testRole(server, { api_key_env: ENV });
    const config = await llmConfig(await tempDir(), server, {
      llm: { generator: role, judge: role },
      mix: { positive_trait: "source_citing" },
      audit: {},
      rephrase: { k: 3 },
    });
    await expect(runPipeline(config)).rejects.toThrow(/stage generate: 2 of 24 LLM requests failed[\s\S]*invalid request for key \[redacted\]/);
    // The error was stored (manifest, llm_failures) with the key taken out.
    expect(await storedText(config.runDir)).toContain("invalid request for key [redacted]");
    await expectNoKey(config.runDir);

    server.options.fault = undefined;
    const summary = await runPipeline(config);
    expect(summary.stages.filter((s) => s.status === "ran").map((s) => s.stage)).toEqual(["generate", "audit", "rephrase", "export", "report"]);
    expect(server.stats.authorization).toEqual(new Set([`Bearer ${KEY}`]));
    await expectNoKey(config.runDir);
  });
});

/** The run's catalog tables as text (DuckDB compresses strings on disk, so a byte scan alone could miss them). */
async function storedText(runDir: string): Promise<string> {
  const store = await RunStore.open(runDir);
  try {
    const [row] = await store.query(`SELECT
      (SELECT string_agg(CAST(m AS VARCHAR), '\n') FROM manifest m) AS manifest,
      (SELECT string_agg(CAST(c AS VARCHAR), '\n') FROM llm_cache c) AS cache,
      (SELECT string_agg(CAST(f AS VARCHAR), '\n') FROM llm_failures f) AS failures`);
    return Object.values(row!).join("\n");
  } finally {
    store.close();
  }
}

async function expectNoKey(runDir: string): Promise<void> {
  expect(await storedText(runDir)).not.toContain(KEY);
  const files = await filesUnder(runDir);
  expect(files.map((f) => f.path)).toContain(join(runDir, "run.duckdb"));
  for (const { path, bytes } of files) expect(bytes.includes(KEY), path).toBe(false);
}
