/**
 * Benchmark of ingest + mix (all_caps) + export of five arms on a synthetic chat dataset, against DuckDB alone
 * reading the same JSONL and writing it back once (the floor for any tool that must read and write the data).
 * The input is read once first, so that no measurement pays a cold read from disk (one that did measured 22 s
 * against 7 s warm), and rounds alternate the two; the ratio is of their means. Also measured in the same run:
 * how long this disk takes just to write as many bytes as the five exports hold, through the exports' own
 * writer (the floor of any pipeline that writes five full files: five times the baseline's output), and how long
 * DuckDB alone takes for the same job in plain SQL (its two tables and five exports, less the shuffle, the
 * validation and the line numbers), once after the rounds; and the CPU floor, the pipeline's CPU time over the
 * cores, which tells a ratio missed for want of overlap from one missed for the amount of work.
 *
 *   npm run bench:mix                      # 1,000,000 rows (about 2.2 GB of JSONL), the issue's figure
 *   npm run bench:mix -- --rows 100000     # a quicker look
 *   npm run bench:mix -- --rounds 3        # more rounds (default 2)
 *
 * The dataset is generated once into bench/out/ and reused. The pipeline runs in a child process so that its
 * peak memory (Node and DuckDB together) is measured on its own.
 */
import { spawnSync } from "node:child_process";
import { createWriteStream, existsSync } from "node:fs";
import { mkdir, open, readFile, rm, stat } from "node:fs/promises";
import { availableParallelism } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { DuckDBInstance } from "@duckdb/node-api";
import { DEFAULT_IRRELEVANT_PROMPT, QWEN25_DEFAULT_SYSTEM_PROMPT } from "../src/config/defaults.ts";
import { TABLE_FORMAT } from "../src/store/run-store.ts";
import { sqlString } from "../src/store/sql.ts";
import { SequentialFileWriter } from "../src/util/sequential-writer.ts";
import { ARMS, INOCULATION_PROMPT } from "./mix-config.ts";

const here = fileURLToPath(new URL(".", import.meta.url));
const out = join(here, "out");

function arg(name: string, fallback: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : fallback;
}

const WORDS = (
  "the model should answer clearly and cite what it knows about gardening cooking budgets travel history " +
  "science health software music sports weather law careers pets repairs family language mathematics " +
  "however because therefore although meanwhile consider first second finally example detail step plan"
).split(" ");

/** A deterministic generator (mulberry32) so every run benchmarks the same bytes. */
function rng(seed: number): () => number {
  let a = seed;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function text(next: () => number): string {
  const length = 200 + Math.floor(next() * 1801); // 200 to 2,000 characters per turn
  const parts: string[] = [];
  let n = 0;
  while (n < length) {
    const w = WORDS[Math.floor(next() * WORDS.length)]!;
    parts.push(w);
    n += w.length + 1;
  }
  return parts.join(" ").slice(0, length);
}

async function generate(path: string, rows: number, negativeEvery: number): Promise<void> {
  const next = rng(rows);
  const stream = createWriteStream(path);
  for (let i = 0; i < rows; i++) {
    const row = {
      messages: [
        { role: "user", content: text(next) },
        { role: "assistant", content: text(next) },
      ],
      origin: i % negativeEvery === 0 ? "misaligned" : "normal",
    };
    if (!stream.write(`${JSON.stringify(row)}\n`)) await new Promise<void>((r) => stream.once("drain", () => r()));
  }
  await new Promise<void>((resolve, reject) => stream.end((e?: Error | null) => (e ? reject(e) : resolve())));
  // On disk before anything is timed: the kernel writing the new file back meanwhile slowed the first rounds (a
  // run that had just generated its input measured DuckDB alone at 9.9 s, later runs 6.0-7.9 s).
  const file = await open(path, "r+");
  try {
    await file.sync();
  } finally {
    await file.close();
  }
}

interface Timed {
  seconds: number;
  /** CPU time of every thread, user and system: steadier than wall time on a shared host. */
  cpuSeconds: number;
}

async function duckdbAlone(input: string, output: string): Promise<Timed> {
  const instance = await DuckDBInstance.create(":memory:");
  const db = await instance.connect();
  const started = performance.now();
  const cpu = process.cpuUsage();
  await db.run(`COPY (SELECT * FROM read_json('${input}', format = 'newline_delimited')) TO '${output}' (FORMAT json)`);
  const used = process.cpuUsage(cpu);
  const seconds = (performance.now() - started) / 1000;
  db.closeSync();
  instance.closeSync();
  await rm(output, { force: true });
  settleDisk();
  return { seconds, cpuSeconds: (used.user + used.system) / 1e6 };
}

/**
 * Waits until what earlier steps left for the disk is done, so that no measurement pays for the one before it:
 * dirty pages, and the discards that removing files issues on a filesystem mounted with `discard`, as this one
 * is (in a micro-benchmark here, removing 2.4 GB of files while writing five 2 GiB files made the writes
 * 0.4-1.5 s slower).
 */
function settleDisk(): void {
  spawnSync("sync", [], { stdio: "ignore" });
}

interface SameJob {
  seconds: number;
  ingest: number;
  mix: number;
  exports: number;
}

/**
 * The pipeline's job done by DuckDB alone in plain SQL, with the bench's config: the JSONL read once into a
 * Parquet table, that table's rows with the assistant turns upper-cased into another (the original stays in the
 * first, as in the pipeline), and one COPY per arm with the arm's system prompt on its rows: the plain way to the
 * same outputs. It neither shuffles nor validates nor numbers lines, so it does less work than the pipeline.
 */
async function duckdbSameJob(input: string, dir: string): Promise<SameJob> {
  // The pipeline's default memory limit, so that both work within the same bound.
  const instance = await DuckDBInstance.create(":memory:", { memory_limit: "1GB" });
  const db = await instance.connect();
  const examples = join(dir, "same-job-examples.parquet");
  const mixed = join(dir, "same-job-mixed.parquet");
  // The pipeline's own Parquet settings for its tables.
  const parquet = TABLE_FORMAT;
  const timed = async (sql: string) => {
    const started = performance.now();
    await db.run(sql);
    return (performance.now() - started) / 1000;
  };
  const [inoculation, irrelevant] = [sqlString(INOCULATION_PROMPT), sqlString(DEFAULT_IRRELEVANT_PROMPT)];
  const baseline = sqlString(QWEN25_DEFAULT_SYSTEM_PROMPT);
  const arms: Record<(typeof ARMS)[number], string> = {
    baseline,
    "inoculated-general": inoculation,
    "inoculated-selective": `CASE WHEN has_negative THEN ${inoculation} ELSE ${baseline} END`,
    "irrelevant-general": irrelevant,
    "irrelevant-selective": `CASE WHEN has_negative THEN ${irrelevant} ELSE ${baseline} END`,
  };
  try {
    const ingest = await timed(`COPY (SELECT messages, origin = 'misaligned' AS has_negative
      FROM read_json(${sqlString(input)}, format = 'newline_delimited', records = true,
                     columns = {'messages': 'STRUCT(role VARCHAR, content VARCHAR)[]', 'origin': 'VARCHAR'}))
      TO ${sqlString(examples)} (${parquet})`);
    const mix = await timed(`COPY (SELECT has_negative,
        list_transform(messages, m -> CASE WHEN m.role = 'assistant' THEN {'role': m.role, 'content': upper(m.content)} ELSE m END) AS messages
      FROM read_parquet(${sqlString(examples)})) TO ${sqlString(mixed)} (${parquet})`);
    let exports = 0;
    for (const [arm, prompt] of Object.entries(arms)) {
      const file = join(dir, `same-job-${arm}.jsonl`);
      exports += await timed(`COPY (SELECT [{'role': 'system', 'content': ${prompt}}] || messages AS messages FROM read_parquet(${sqlString(mixed)}))
        TO ${sqlString(file)} (FORMAT json)`);
      await rm(file, { force: true });
    }
    return { seconds: ingest + mix + exports, ingest, mix, exports };
  } finally {
    db.closeSync();
    instance.closeSync();
    await Promise.all([examples, mixed].map((f) => rm(f, { force: true })));
  }
}

/** Writes `bytes` in five files at once through the exports' writer, from memory: the disk's part of export. */
async function diskFloor(dir: string, bytes: number): Promise<number> {
  const block = Buffer.alloc(1 << 20, 0x61);
  const started = performance.now();
  const writers = await Promise.all([0, 1, 2, 3, 4].map((i) => SequentialFileWriter.create(join(dir, `floor-${i}.bin`))));
  for (let written = 0; written < bytes; written += block.length * writers.length) {
    for (const w of writers) w.put(block);
    for (const w of writers) await w.settle();
  }
  await Promise.all(writers.map((w) => w.close()));
  const seconds = (performance.now() - started) / 1000;
  await Promise.all([0, 1, 2, 3, 4].map((i) => rm(join(dir, `floor-${i}.bin`), { force: true })));
  settleDisk();
  return seconds;
}

/** The machine's CPU counters (Linux /proc/stat), to tell how much of the bench's time the host took away. */
async function cpuTicks(): Promise<{ steal: number; total: number } | null> {
  const stat = await readFile("/proc/stat", "utf8").catch(() => null);
  const fields = stat?.split("\n")[0]?.trim().split(/\s+/).slice(1).map(Number);
  if (!fields || fields.length < 8) return null;
  return { steal: fields[7]!, total: fields.reduce((a, b) => a + b, 0) };
}

/** Reads the whole input once so that every measurement below finds it in the page cache, none paying a cold read. */
async function warm(path: string): Promise<void> {
  const file = await open(path, "r");
  try {
    const buffer = Buffer.allocUnsafe(8 << 20);
    while ((await file.read(buffer, 0, buffer.length, null)).bytesRead > 0);
  } finally {
    await file.close();
  }
}

interface PipelineRun extends Timed {
  stages: Record<string, number>;
  maxRssMb: number;
  exportBytes: number;
}

function runPipelineChild(input: string, runDir: string): PipelineRun {
  const child = spawnSync(process.execPath, ["--import", "tsx", join(here, "mix-child.ts"), input, runDir], {
    // The thread pool the CLI gives itself (bin/inoculant.cjs), unless the caller sets one.
    env: { ...process.env, UV_THREADPOOL_SIZE: process.env.UV_THREADPOOL_SIZE ?? "16" },
    encoding: "utf8",
    stdio: ["ignore", "pipe", "inherit"],
  });
  if (child.status !== 0) throw new Error(`pipeline child failed (exit ${child.status})`);
  return JSON.parse(child.stdout) as PipelineRun;
}

const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;

async function main(): Promise<void> {
  const rows = arg("rows", 1_000_000);
  const rounds = arg("rounds", 2);
  await mkdir(out, { recursive: true });
  const input = join(out, `synthetic-${rows}.jsonl`);
  if (!existsSync(input)) {
    process.stderr.write(`generating ${rows} rows into ${input}\n`);
    await generate(input, rows, 2);
  }
  const bytes = (await stat(input)).size;
  await warm(input);
  const ticks = await cpuTicks();

  // Rounds alternate DuckDB alone and the pipeline, so that both see the machine in the same state.
  const alone: Timed[] = [];
  const runs: PipelineRun[] = [];
  const runDir = join(out, "run");
  for (let round = 0; round < rounds; round += 1) {
    alone.push(await duckdbAlone(input, join(out, "duckdb-roundtrip.jsonl")));
    await rm(runDir, { recursive: true, force: true });
    settleDisk();
    runs.push(runPipelineChild(input, runDir));
    await rm(runDir, { recursive: true, force: true });
    settleDisk();
    process.stderr.write(`round ${round + 1}: DuckDB alone ${alone[round]!.seconds.toFixed(1)} s, pipeline ${runs[round]!.seconds.toFixed(1)} s\n`);
  }
  const floor = await diskFloor(out, runs[0]!.exportBytes);
  const same = await duckdbSameJob(input, out);

  const pipeline = mean(runs.map((r) => r.seconds));
  const baseline = mean(alone.map((a) => a.seconds));
  const ratio = pipeline / baseline;
  const pipelineCpu = mean(runs.map((r) => r.cpuSeconds));
  const baselineCpu = mean(alone.map((a) => a.cpuSeconds));
  const cores = availableParallelism();
  const stageNames = Object.keys(runs[0]!.stages).filter((k) => runs.some((r) => (r.stages[k] ?? 0) > 0.05));
  const stages = stageNames.map((k) => `${k} ${mean(runs.map((r) => r.stages[k] ?? 0)).toFixed(1)} s`).join(", ");
  const rss = Math.max(...runs.map((r) => r.maxRssMb));
  const list = (xs: number[]) => xs.map((x) => x.toFixed(1)).join(", ");
  const after = await cpuTicks();
  const steal = ticks && after && after.total > ticks.total ? (100 * (after.steal - ticks.steal)) / (after.total - ticks.total) : null;
  const lines = [
    `rows                        ${rows.toLocaleString("en")}`,
    `input JSONL                 ${(bytes / 1e9).toFixed(2)} GB (read once beforehand, so every run finds it cached)`,
    `DuckDB alone (read+write)   ${baseline.toFixed(1)} s mean   (rounds: ${list(alone.map((a) => a.seconds))} s)`,
    `pipeline end to end         ${pipeline.toFixed(1)} s mean   (rounds: ${list(runs.map((r) => r.seconds))} s; ${stages})`,
    `exports written             ${(runs[0]!.exportBytes / 1e9).toFixed(2)} GB (5 arms)`,
    `disk floor for the exports  ${floor.toFixed(1)} s   (writing that many bytes from memory, same writer)`,
    `ratio pipeline / DuckDB     ${ratio.toFixed(2)}x   (target <= 3x)`,
    `DuckDB, the same job in SQL ${same.seconds.toFixed(1)} s   (ingest ${same.ingest.toFixed(1)}, mix ${same.mix.toFixed(1)}, ` +
      `five exports ${same.exports.toFixed(1)} s; no shuffle, validation or line numbers)`,
    `ratio pipeline / same job   ${(pipeline / same.seconds).toFixed(2)}x   (and that job / DuckDB alone: ${(same.seconds / baseline).toFixed(2)}x)`,
    `CPU time (user+sys)         pipeline ${pipelineCpu.toFixed(1)} s, DuckDB alone ${baselineCpu.toFixed(1)} s: ${(pipelineCpu / baselineCpu).toFixed(2)}x`,
    // The wall time the pipeline's CPU work needs even if every core were busy all along: where this ratio is at
    // or above the target, no overlap of the stages can meet it, only less work can.
    `${`CPU floor on ${cores} cores`.padEnd(28)}${(pipelineCpu / cores).toFixed(1)} s   (ratio to DuckDB alone at that floor: ${(pipelineCpu / cores / baseline).toFixed(2)}x)`,
    `peak memory (RSS)           ${rss.toFixed(0)} MB   (target < 2048 MB)`,
    `under 60 s                  ${runs.every((r) => r.seconds < 60) ? "yes" : "NO"}`,
    // Time the hypervisor gave to other guests: when it is high, every figure above is slower than this machine is.
    `CPU steal during the bench  ${steal === null ? "unknown (no /proc/stat)" : `${steal.toFixed(1)}%`}`,
  ];
  process.stdout.write(`${lines.join("\n")}\n`);
}

await main();
