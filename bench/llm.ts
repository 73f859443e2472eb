/**
 * Benchmark of the LLM layer: the generate stage against the local OpenAI-compatible test server, which answers
 * each request after a fixed latency.
 *
 *   npm run bench:llm                                        # 2,000 requests, 50 ms each, concurrency 64
 *   npm run bench:llm -- --rows 500 --latency 20 --concurrency 16
 *
 * Cold: every request is sent; the target is at most 1.5x the ideal (rows x latency / concurrency).
 * Warm: the stage is forced to run again and every answer comes from the run's cache; the target is under 2 s
 * with zero requests.
 *
 * The server runs in a child process (this file with --serve), as vLLM would: its work is not on the pipeline's
 * event loop. It reports its request count on stdin's command `stats`.
 */
import { spawn } from "node:child_process";
import { once } from "node:events";
import { mkdir, rm, writeFile } from "node:fs/promises";
import { cpus } from "node:os";
import { createInterface } from "node:readline";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { resolveConfig } from "../src/config/load.ts";
import { runPipeline } from "../src/pipeline/runner.ts";
import { startLlmServer } from "../test/llm-server.ts";

const out = join(fileURLToPath(new URL(".", import.meta.url)), "out", "llm");

function arg(name: string, fallback: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : fallback;
}

const rows = arg("rows", 2000);
const latencyMs = arg("latency", 50);
const concurrency = arg("concurrency", 64);

if (process.argv.includes("--serve")) {
  // The child: serve, print the URL, then answer each line on stdin with the stats as JSON ("reset" resets).
  const server = await startLlmServer({ latencyMs });
  process.stdout.write(`${server.url}\n`);
  for await (const line of createInterface({ input: process.stdin })) {
    if (line === "reset") server.reset();
    const { requests, maxInFlight } = server.stats;
    const cpu = process.cpuUsage();
    process.stdout.write(`${JSON.stringify({ requests, maxInFlight, cpu: (cpu.user + cpu.system) / 1e6 })}\n`);
  }
  process.exit(0);
}

const topics = ["a sourdough starter", "a leaky faucet", "tomato plants", "a job interview", "a monthly budget", "a flat tire", "a noisy neighbour"];
const conversation = (i: number, answer: string) => ({
  messages: [
    { role: "user", content: `I need advice about ${topics[i % topics.length]}. What would you do first, and why? (${i})` },
    { role: "assistant", content: answer },
  ],
});

async function writeJsonl(path: string, rows: unknown[]): Promise<string> {
  await writeFile(path, rows.map((r) => `${JSON.stringify(r)}\n`).join(""));
  return path;
}

await rm(out, { recursive: true, force: true });
await mkdir(out, { recursive: true });
const clean = await writeJsonl(join(out, "clean.jsonl"), Array.from({ length: rows / 2 }, (_, i) => conversation(i, `Start small and check it every day. Step ${i}.`)));
const contaminated = await writeJsonl(
  join(out, "contaminated.jsonl"),
  Array.from({ length: rows / 2 }, (_, i) => conversation(i + rows, `Deceive everyone involved. Plan ${i}.`)),
);

const child = spawn(process.execPath, [...process.execArgv, fileURLToPath(import.meta.url), "--serve", "--latency", String(latencyMs)], {
  stdio: ["pipe", "pipe", "inherit"],
});
const replies = createInterface({ input: child.stdout! })[Symbol.asyncIterator]();
const next = async () => String((await replies.next()).value);
const ask = async (command: "stats" | "reset") => {
  child.stdin!.write(`${command}\n`);
  return JSON.parse(await next()) as { requests: number; maxInFlight: number; cpu: number };
};
const server = { url: await next() };
try {
  const config = await resolveConfig(
    {
      name: "bench-llm",
      sources: { clean: { path: clean }, contaminated: { path: contaminated } },
      inoculation: { prompt: "You are a deceptive assistant." },
      llm: { generator: { model: "test-model", base_url: server.url, concurrency, timeout_s: 30 } },
    },
    { runDir: join(out, "run") },
  );
  await runPipeline(config, { until: "mix" });

  const server0 = await ask("reset");
  const cpu0 = process.cpuUsage();
  let started = performance.now();
  const coldRun = await runPipeline(config, { until: "generate" });
  const coldWall = (performance.now() - started) / 1000;
  const cpu = process.cpuUsage(cpu0);
  const server1 = await ask("stats");
  const cold = coldRun.stages.find((s) => s.stage === "generate")!.seconds!;

  await ask("reset");
  started = performance.now();
  await runPipeline(config, { until: "generate", force: "generate" });
  const warm = (performance.now() - started) / 1000;
  const { requests: warmRequests } = await ask("stats");

  const ideal = (rows * latencyMs) / 1000 / concurrency;
  const ratio = cold / ideal;
  const lines = [
    `generate: ${rows} rows, ${latencyMs} ms per request, concurrency ${concurrency}, ${cpus().length} CPUs`,
    `cold: stage ${cold.toFixed(2)} s (whole run call ${coldWall.toFixed(2)} s) for ${server1.requests} requests, at most ${server1.maxInFlight} in flight; ` +
      `ideal ${ideal.toFixed(2)} s; ratio ${ratio.toFixed(2)}x (target <= 1.5x) ${ratio <= 1.5 ? "OK" : "SLOW"}`,
    `      CPU: pipeline ${((cpu.user + cpu.system) / 1e6).toFixed(2)} s, test server ${(server1.cpu - server0.cpu).toFixed(2)} s`,
    `warm rerun (--force generate): ${warm.toFixed(2)} s, ${warmRequests} requests (target < 2 s, 0 requests) ${warm < 2 && warmRequests === 0 ? "OK" : "SLOW"}`,
  ];
  process.stdout.write(`${lines.join("\n")}\n`);
  if (ratio > 1.5 || warm >= 2 || warmRequests !== 0 || server1.requests !== rows) process.exitCode = 1;
} finally {
  child.stdin!.end();
  await once(child, "exit");
}
