/** The measured side of bench/mix.ts: one pipeline run in its own process, reporting time and peak memory. */
import { readdir, stat } from "node:fs/promises";
import { join } from "node:path";
import { resolveConfig } from "../src/config/load.ts";
import { runPipeline } from "../src/pipeline/runner.ts";
import { benchConfig } from "./mix-config.ts";

const [input, runDir] = process.argv.slice(2) as [string, string];
const config = await resolveConfig(benchConfig(input), { runDir });
const started = performance.now();
const summary = await runPipeline(config);
const seconds = (performance.now() - started) / 1000;
// Every thread of the process (Node's and DuckDB's, start-up included), user and system.
const cpu = process.cpuUsage();
const cpuSeconds = (cpu.user + cpu.system) / 1e6;
let exportBytes = 0;
for (const f of await readdir(join(runDir, "exports"))) exportBytes += (await stat(join(runDir, "exports", f))).size;
process.stdout.write(
  JSON.stringify({
    seconds,
    stages: Object.fromEntries(summary.stages.map((s) => [s.stage, s.seconds ?? 0])),
    maxRssMb: process.resourceUsage().maxRSS / 1024,
    cpuSeconds,
    exportBytes,
  }),
);
