import { join } from "node:path";
import type { ResolvedConfig } from "../config/load.ts";
import { StageError, UserError, isUserError } from "../errors.ts";
import { silentProgress, type Progress } from "../progress.ts";
import { CatalogLockedError, RunStore, runningEntry, type ManifestEntry } from "../store/run-store.ts";
import { exists, fileFingerprint } from "../util/fs.ts";
import { hashValue } from "../util/hash.ts";
import type { Stage } from "./stage.ts";
import { STAGES, stageNames } from "./stages.ts";

export interface RunOptions {
  /** Stop after this stage. */
  until?: string | undefined;
  /** Rerun this stage and every enabled stage after it, even when up to date. */
  force?: string | undefined;
  /** With `force`: the forced stage sends its LLM requests again instead of reusing stored answers. */
  resend?: boolean | undefined;
  progress?: Progress;
  log?: (line: string) => void;
  /** Called with each stage's report as soon as it is known (a failed run still tells what it did). */
  onStage?: (report: StageReport) => void;
  /** The stage list; tests may pass their own. */
  stages?: readonly Stage[];
}

export type StageRunStatus = "ran" | "skipped" | "disabled" | "failed";

export interface StageReport {
  stage: string;
  status: StageRunStatus;
  rows: number | null;
  seconds: number | null;
  counts: Record<string, number>;
  details: Record<string, unknown>;
}

export interface PipelineSummary {
  runDir: string;
  stages: StageReport[];
}

/**
 * A stage asked for by name that would not run is an error, not a run that quietly stops short: a disabled stage
 * (say what enables it), or a `--force` of a stage after the last one to run.
 */
function checkAskedStages(config: ResolvedConfig, stages: readonly Stage[], options: RunOptions, untilIndex: number, forceIndex: number): void {
  for (const [flag, name] of [["--until", options.until], ["--force", options.force]] as const) {
    const stage = stages.find((s) => s.name === name);
    if (stage && !stage.enabled(config)) {
      const asked = flag === "--force" ? `--force ${name}: ` : "";
      throw new UserError(`${asked}this config does not enable stage ${name}${stage.enableWith ? `; to run it, ${stage.enableWith}` : ""}`);
    }
  }
  if (options.resend && options.force === undefined) {
    throw new UserError("--resend goes with --force STAGE: it makes the forced stage ask its LLM again instead of reusing stored answers");
  }
  if (forceIndex !== Infinity && forceIndex > untilIndex) {
    throw new UserError(`--force ${options.force}: stage ${options.force} comes after ${options.until}, the last stage this command runs; force ${options.until} or an earlier stage, or run further`);
  }
}

/** Runs the pipeline's stages in order, skipping the ones whose fingerprint is unchanged. */
export async function runPipeline(config: ResolvedConfig, options: RunOptions = {}): Promise<PipelineSummary> {
  const stages = options.stages ?? STAGES;
  const names = stages.map((s) => s.name);
  for (const [flag, value] of [["--until", options.until], ["--force", options.force]] as const) {
    if (value !== undefined && !names.includes(value)) {
      throw new UserError(`${flag} ${value}: no such stage; stages are ${names.join(", ")}`);
    }
  }
  const untilIndex = options.until ? names.indexOf(options.until) : stages.length - 1;
  const forceIndex = options.force ? names.indexOf(options.force) : Infinity;
  checkAskedStages(config, stages, options, untilIndex, forceIndex);
  const progress = options.progress ?? silentProgress;
  const log = options.log ?? (() => {});

  const store = await RunStore.open(config.runDir, { threads: config.duckdb.threads, memoryLimit: config.duckdb.memory_limit });
  store.defineViews(stages.filter((s) => s.enabled(config)).flatMap((s) => s.views?.(config) ?? []));
  const reports: StageReport[] = [];
  const record = (r: StageReport) => {
    reports.push(r);
    options.onStage?.(r);
  };
  let anyRan = false;
  try {
    const manifest = await store.readManifest();
    // Recorded first, for every stage (past --until, or past a stage that fails, too), so that `status` can tell
    // "not asked for" from "not run yet"; written only when it changes, so a rerun that does nothing touches no file.
    for (const stage of stages.filter((s) => !s.enabled(config) && manifest.get(s.name)?.status !== "disabled")) {
      await store.saveManifestEntry({ ...runningEntry(stage.name), status: "disabled" });
    }
    const fingerprints = new Map<string, string>();
    for (const [index, stage] of stages.entries()) {
      if (index > untilIndex) break;
      if (!stage.enabled(config)) {
        record(report(stage.name, "disabled"));
        continue;
      }
      const configHash = hashValue(stage.configSlice(config));
      const inputs = await Promise.all(
        stage.inputFiles(config).map((path) =>
          fileFingerprint(path).catch(() => {
            throw new StageError(stage.name, `input file ${path} does not exist or cannot be read`);
          }),
        ),
      );
      const upstream = stage.after.filter((name) => fingerprints.has(name)).map((name) => [name, fingerprints.get(name)]);
      const fingerprint = hashValue({ stage: stage.name, version: stage.version, configHash, inputs, upstream });
      fingerprints.set(stage.name, fingerprint);

      const previous = manifest.get(stage.name);
      if (index < forceIndex && previous && (await isUpToDate(store, stage, config, previous, fingerprint))) {
        record({ ...report(stage.name, "skipped"), rows: previous.rows, counts: previous.counts, details: previous.details });
        continue;
      }

      anyRan = true;
      log(`${stage.name}: ${stage.description}`);
      const started = performance.now();
      const entry: ManifestEntry = { ...runningEntry(stage.name), fingerprint, config_hash: configHash, inputs };
      await store.saveManifestEntry(entry);
      try {
        const outcome = await stage.run({ config, store, progress, log, resendLlm: options.resend === true && index === forceIndex });
        const seconds = (performance.now() - started) / 1000;
        Object.assign(entry, {
          status: "done",
          rows: outcome.rows,
          counts: outcome.counts,
          details: outcome.details ?? {},
          seconds,
          finished_at: new Date().toISOString(),
        });
        await store.saveManifestEntry(entry);
        record({ stage: stage.name, status: "ran", rows: outcome.rows, seconds, counts: outcome.counts, details: entry.details });
      } catch (error) {
        const seconds = (performance.now() - started) / 1000;
        const message = error instanceof Error ? error.message : String(error);
        // The error may carry counters (for example rows that failed); keep them beside the message.
        Object.assign(entry, { status: "failed", seconds, error: message, finished_at: new Date().toISOString() });
        await store.saveManifestEntry(entry);
        record({ ...report(stage.name, "failed"), seconds });
        if (isUserError(error)) {
          throw error instanceof StageError ? error : new StageError(stage.name, error.message, { cause: error });
        }
        throw error;
      }
    }
    if (anyRan) await store.refreshViews();
  } finally {
    progress.stop();
    store.close();
  }
  return { runDir: config.runDir, stages: reports };
}

async function isUpToDate(
  store: RunStore,
  stage: Stage,
  config: ResolvedConfig,
  previous: ManifestEntry,
  fingerprint: string,
): Promise<boolean> {
  if (previous.status !== "done" || previous.fingerprint !== fingerprint) return false;
  for (const output of stage.outputs(config)) {
    if (!(await exists(join(store.dir, output)))) return false;
  }
  return true;
}

function report(stage: string, status: StageRunStatus): StageReport {
  return { stage, status, rows: null, seconds: null, counts: {}, details: {} };
}

export interface StageStatusLine {
  stage: string;
  /**
   * `interrupted`: the last run of the stage was killed before it finished. `running`: a run in progress is on it
   * (its time so far in `seconds`).
   */
  status: "done" | "pending" | "failed" | "interrupted" | "disabled" | "running";
  rows: number | null;
  seconds: number | null;
  counts: Record<string, number>;
  details: Record<string, unknown>;
  error: string | null;
  /**
   * For a `done` stage: an earlier stage it reads from that has run again since, or did not finish its last run
   * (named here), so this stage's outputs may not match it; the next run redoes it if so. Null otherwise.
   */
  stale_after: string | null;
}

/** The stages a stage reads from, directly or through others. */
function upstreamOf(name: string, byName: ReadonlyMap<string, Stage>): Set<string> {
  const found = new Set<string>();
  const visit = (n: string) => {
    for (const dep of byName.get(n)?.after ?? []) {
      if (!found.has(dep)) {
        found.add(dep);
        visit(dep);
      }
    }
  };
  visit(name);
  return found;
}

/** The first upstream stage of a done `line` that ran again after it or did not finish its last run, if any. */
function staleAfter(
  line: StageStatusLine,
  lines: readonly StageStatusLine[],
  finished: ReadonlyMap<string, string | null>,
  byName: ReadonlyMap<string, Stage>,
): string | null {
  if (line.status !== "done") return null;
  const upstream = upstreamOf(line.stage, byName);
  const mine = finished.get(line.stage) ?? null;
  for (const other of lines) {
    if (!upstream.has(other.stage)) continue;
    if (other.status === "failed" || other.status === "interrupted" || other.status === "running") return other.stage;
    const theirs = finished.get(other.stage) ?? null;
    if (other.status === "done" && mine !== null && theirs !== null && theirs > mine) return other.stage;
  }
  return null;
}

/** What `inoculant status RUN_DIR` shows: each known stage and what its last run left. */
export async function runStatus(runDir: string): Promise<StageStatusLine[]> {
  if (!(await RunStore.existsAt(runDir))) {
    throw new UserError(`${runDir} is not a run directory (no run.duckdb); run \`inoculant run CONFIG\` first`);
  }
  let store: RunStore;
  try {
    store = await RunStore.open(runDir);
  } catch (error) {
    // A run in progress holds the catalog: show what it last mirrored, with the stage it is on as running.
    const mirror = error instanceof CatalogLockedError ? await RunStore.readMirror(runDir) : null;
    if (!mirror) throw error;
    const now = Date.now();
    return statusLines(new Map(mirror.map((e) => [e.stage, e])), (e) => ({
      status: "running",
      seconds: e.running_since ? (now - Date.parse(e.running_since)) / 1000 : null,
    }));
  }
  try {
    // Holding the lock ourselves, no run is in progress: a "running" entry was left by a killed run.
    return statusLines(await store.readManifest(), () => ({ status: "interrupted", seconds: null }));
  } finally {
    store.close();
  }
}

/**
 * Each known stage's line, and each other entry's (an eval's models); `running` says how to show an entry still
 * marked running.
 */
function statusLines<E extends ManifestEntry>(
  manifest: Map<string, E>,
  running: (entry: E) => Pick<StageStatusLine, "status" | "seconds">,
): StageStatusLine[] {
  const known = new Set(stageNames());
  // An eval's run directory holds one `eval:<model>` entry a model and no pipeline stage: show just those.
  const pipeline = manifest.size === 0 || [...manifest.keys()].some((n) => known.has(n));
  const lines: StageStatusLine[] = [];
  for (const name of [...(pipeline ? stageNames() : []), ...[...manifest.keys()].filter((n) => !known.has(n))]) {
    const e = manifest.get(name);
    lines.push({
      stage: name,
      status: !e ? "pending" : e.status,
      rows: e?.rows ?? null,
      seconds: e?.seconds ?? null,
      counts: e?.counts ?? {},
      details: e?.details ?? {},
      error: e?.error ?? null,
      stale_after: null,
      ...(e?.status === "running" ? running(e) : {}),
    });
  }
  const finished = new Map([...manifest.values()].map((e) => [e.stage, e.finished_at]));
  const byName = new Map(STAGES.map((s) => [s.name, s]));
  return lines.map((l) => ({ ...l, stale_after: staleAfter(l, lines, finished, byName) }));
}
