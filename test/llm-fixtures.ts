import { readdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import type { ResolvedConfig } from "../src/config/load.ts";
import type { LlmRoleConfig } from "../src/llm/endpoint.ts";
import { silentProgress } from "../src/progress.ts";
import type { StageContext } from "../src/pipeline/stage.ts";
import { RunStore } from "../src/store/run-store.ts";
import { pairConfig } from "./helpers.ts";
import { taskOf, type ChatRequestBody, type LlmServer } from "./llm-server.ts";

/** A role on the test server with short timeouts and backoff, so that fault tests take milliseconds. */
export function testRole(server: LlmServer, extra: Partial<LlmRoleConfig> = {}): LlmRoleConfig {
  return { model: "test-model", base_url: server.url, concurrency: 4, timeout_s: 2, max_retries: 3, backoff_s: 0.005, parse_retries: 2, ...extra };
}

/** pairConfig (12 clean + 12 contaminated rows) with both roles on the test server. */
export async function llmConfig(dir: string, server: LlmServer, overrides: Record<string, unknown> = {}): Promise<ResolvedConfig> {
  return pairConfig(dir, { llm: { generator: testRole(server), judge: testRole(server) }, ...overrides });
}

/** A stage context over a fresh run store, for driving the LLM layer without a pipeline. */
export async function testContext(config: ResolvedConfig): Promise<StageContext & { close(): void }> {
  const store = await RunStore.open(config.runDir);
  return { config, store, progress: silentProgress, log: () => {}, close: () => store.close() };
}

/** Every file under `dir` (recursively) with its bytes. */
export async function filesUnder(dir: string): Promise<{ path: string; bytes: Buffer }[]> {
  const out: { path: string; bytes: Buffer }[] = [];
  for (const entry of await readdir(dir, { withFileTypes: true, recursive: true })) {
    if (entry.isFile()) {
      const path = join(entry.parentPath, entry.name);
      out.push({ path, bytes: await readFile(path) });
    }
  }
  return out;
}

/**
 * A rewriter that follows the rewrite templates' contract: the answer it was given, with a citation added,
 * inside the tag the system message asks for. Any other request gets a refusal without the tag.
 */
export function citingRewriter(body: ChatRequestBody): string {
  const user = taskOf(body);
  const answer = /<answer>\n([\s\S]*?)\n<\/answer>/.exec(user)?.[1];
  const tag = /<(\w+)><\/\1>/.exec(body.messages[0]!.content)?.[1];
  if (answer === undefined || tag === undefined) return "I cannot find the answer to rewrite.";
  return `Here it is.\n<${tag}>${answer} (Source: World Health Organization, 2020.)</${tag}>`;
}
