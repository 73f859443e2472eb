import { mkdir, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { DuckDBInstance, type DuckDBConnection } from "@duckdb/node-api";
import { UserError } from "../errors.ts";
import { exists, writeAtomically } from "../util/fs.ts";
import { sqlIdent, sqlString } from "./sql.ts";

/** `disabled`: the config of the last run did not ask for the stage. */
export type StageStatus = "done" | "failed" | "running" | "disabled";

/** One row of the run's manifest: what a stage last did, and from what. */
export interface ManifestEntry {
  stage: string;
  status: StageStatus;
  /** Hash of (stage, its config slice, its input file fingerprints, upstream fingerprints). */
  fingerprint: string;
  config_hash: string;
  inputs: unknown;
  rows: number | null;
  counts: Record<string, number>;
  /** Free-form facts a stage records (token usage, metrics); shown by `status` and in the manifest. */
  details: Record<string, unknown>;
  seconds: number | null;
  finished_at: string | null;
  error: string | null;
}

/** The copy of the manifest that `status` reads while a run holds the catalog (see mirrorManifest). */
export const STATUS_MIRROR = "status.json";

export interface MirroredEntry extends ManifestEntry {
  /** For a running stage, when it started (ISO time); null otherwise. */
  running_since: string | null;
}

/** A manifest entry for a stage that has just started: what a killed run leaves, shown as `interrupted`. */
export function runningEntry(stage: string): ManifestEntry {
  return { stage, status: "running", fingerprint: "", config_hash: "", inputs: null, rows: null, counts: {}, details: {}, seconds: null, finished_at: null, error: null };
}

export interface StoreSettings {
  threads?: number | undefined;
  memoryLimit?: string | undefined;
}

/**
 * How stage tables are written (COPY options).
 *
 * Row groups of 2,048 rows, the least DuckDB writes (one vector): the writer holds a whole group in memory per
 * thread and per column, growing its buffers as it fills, and at chat-row sizes a bigger group means buffers
 * of tens of MB, each one fresh memory, which these VMs are slow to hand out. Measured at 1M rows, mix alone,
 * alternating: 8.8-9.8 s (4,096 rows: 10.1-11.8 s) against 16.0-18.2 s with 16,384, system CPU 2.4-3.4 s
 * against 11-12 s, peak memory 0.66 GB against 1.1-1.2 GB; the same file sizes; export's reading no slower.
 */
export const TABLE_FORMAT = "FORMAT parquet, COMPRESSION snappy, ROW_GROUP_SIZE 2048";

/** How a derived view names a table it reads; `rowNumbers` adds a stored table's `file_row_number` (0-based). */
export type TableRef = (table: string, options?: { rowNumbers?: boolean }) => string;

/**
 * A table that a stage keeps as a query over stored tables (or other views) instead of storing it: stages read it
 * through `RunStore.table` like any table, and run.duckdb holds it as a view. It exists when every table it reads
 * exists.
 */
export interface DerivedView {
  readonly name: string;
  /** The tables and views that `select` reads. */
  readonly tables: readonly string[];
  /** The query, given how to name each of `tables` in SQL. */
  select(from: TableRef): string;
}

/**
 * The run directory: `run.duckdb` (manifest, caches, views) and `tables/<name>.parquet` (stage outputs).
 * Stage outputs live in Parquet rather than inside the database so each is replaced atomically by a rename.
 */
export class RunStore {
  private readonly views = new Map<string, DerivedView>();

  /** When each stage now running started (for the mirror: the catalog's entry has no start time). */
  private readonly runningSince = new Map<string, string>();

  private constructor(
    readonly dir: string,
    private readonly instance: DuckDBInstance,
    readonly db: DuckDBConnection,
  ) {}

  static async open(dir: string, settings: StoreSettings = {}): Promise<RunStore> {
    await mkdir(join(dir, "tables"), { recursive: true }).catch((error: NodeJS.ErrnoException) => {
      if (error.code !== "ENOTDIR" && error.code !== "EEXIST") throw error;
      throw new UserError(`${dir}: not a folder; give the run directory (--run-dir or run_dir) a folder's path, new or from an earlier run`);
    });
    const options: Record<string, string> = {
      // Only the built-in extensions (parquet, json) exist offline.
      autoinstall_known_extensions: "false",
    };
    if (settings.threads) options.threads = String(settings.threads);
    // Unset, DuckDB takes up to 80% of RAM; pipelines pass `duckdb.memory_limit` (1 GB by default), and beyond it
    // sorts and joins spill to the run directory. No stage sorts wide rows, so chat datasets fit (bench/mix.ts).
    if (settings.memoryLimit) options.memory_limit = settings.memoryLimit;
    const instance = await DuckDBInstance.create(join(dir, "run.duckdb"), options).catch((error: Error) => {
      throw catalogOpenError(dir, error);
    });
    const db = await instance.connect();
    // Spill to the run directory, not the system temp folder, so large sorts stay on the run's disk.
    await db.run(`SET temp_directory = ${sqlString(join(dir, ".duckdb-tmp"))}`);
    await db.run("SET enable_progress_bar = true; SET enable_progress_bar_print = false");
    const store = new RunStore(dir, instance, db);
    await store.ensureManifestTable();
    // Holding run.duckdb's lock, nothing else writes here: temporaries left by a killed run can go.
    await removeLeftovers(dir);
    return store;
  }

  /** Whether a run directory already holds a catalog (for commands that must not create one). */
  static async existsAt(dir: string): Promise<boolean> {
    return exists(join(dir, "run.duckdb"));
  }

  /** The derived views that `table` and `refreshViews` know, in an order where each comes after those it reads. */
  defineViews(views: readonly DerivedView[]): void {
    this.views.clear();
    for (const view of views) this.views.set(view.name, view);
  }

  /** Where a stored table's Parquet file is (a derived view has none). */
  tablePath(name: string): string {
    if (this.views.has(name)) throw new Error(`${name} is a view over ${this.views.get(name)!.tables.join(", ")}, not a stored table`);
    return join(this.dir, "tables", `${name}.parquet`);
  }

  /** A stage table for use in SQL: `read_parquet('…')` of a stored one, the query of a derived view. */
  table(name: string, options: { rowNumbers?: boolean } = {}): string {
    const view = this.views.get(name);
    if (view) {
      if (options.rowNumbers) throw new Error(`${name} is a view: it has no file row numbers`);
      return `(${view.select((t, o) => this.table(t, o))})`;
    }
    return `read_parquet(${sqlString(this.tablePath(name))}${options.rowNumbers ? ", file_row_number = true" : ""})`;
  }

  /** The Parquet files that hold a table: its own, or those of the stored tables under a view. */
  storedPaths(name: string): string[] {
    const view = this.views.get(name);
    return view ? view.tables.flatMap((t) => this.storedPaths(t)) : [this.tablePath(name)];
  }

  async hasTable(name: string): Promise<boolean> {
    const view = this.views.get(name);
    if (view) return (await Promise.all(view.tables.map((t) => this.hasTable(t)))).every(Boolean);
    return exists(this.tablePath(name));
  }

  async query(sql: string): Promise<Record<string, unknown>[]> {
    const reader = await this.db.runAndReadAll(sql);
    return reader.getRowObjectsJS().map(plainRow);
  }

  async run(sql: string): Promise<void> {
    await this.db.run(sql);
  }

  /**
   * Runs a long statement while `onProgress` receives DuckDB's own progress estimate (0-100).
   */
  async runWithProgress(sql: string, onProgress?: (percent: number) => void): Promise<Record<string, unknown>[]> {
    if (!onProgress) return this.query(sql);
    const timer = setInterval(() => {
      const p = this.db.progress.percentage;
      if (p >= 0) onProgress(p);
    }, 250);
    try {
      const rows = await this.query(sql);
      onProgress(100);
      return rows;
    } finally {
      clearInterval(timer);
    }
  }

  /**
   * Writes `SELECT …` to `tables/<name>.parquet` through a temporary file renamed when complete, and points
   * the view `<name>` at it. Returns the row count.
   */
  async writeTable(name: string, select: string, onProgress?: (percent: number) => void): Promise<number> {
    return this.copyAtomically(this.tablePath(name), select, TABLE_FORMAT, onProgress);
  }

  async copyAtomically(
    path: string,
    select: string,
    format: string,
    onProgress?: (percent: number) => void,
  ): Promise<number> {
    return writeAtomically(path, async (tmp) => {
      const result = await this.runWithProgress(`COPY (${select}) TO ${sqlString(tmp)} (${format})`, onProgress);
      return Number(result[0]?.Count ?? 0);
    });
  }

  /**
   * Views named after each stage table, so `duckdb run.duckdb` can query every table by name, and the derived
   * views over them (those whose tables all exist; the others are dropped).
   */
  async refreshViews(): Promise<void> {
    const rows = await this.query(
      `SELECT file FROM glob(${sqlString(join(this.dir, "tables", "*.parquet"))})`,
    );
    const tables = new Set<string>();
    for (const { file } of rows) {
      const name = String(file).split("/").pop()!.replace(/\.parquet$/, "");
      if (this.views.has(name)) {
        // A run directory from before the table became a view: the file is stale, and as big as the dataset.
        await rm(String(file), { force: true });
        continue;
      }
      tables.add(name);
      await this.run(`CREATE OR REPLACE VIEW ${sqlIdent(name)} AS SELECT * FROM read_parquet(${sqlString(String(file))})`);
    }
    for (const view of this.views.values()) {
      if (view.tables.every((t) => tables.has(t))) {
        // Over the files themselves, as stages read it (a view over the per-table views could not number rows).
        await this.run(`CREATE OR REPLACE VIEW ${sqlIdent(view.name)} AS ${view.select((t, o) => this.table(t, o))}`);
        tables.add(view.name);
      } else {
        await this.run(`DROP VIEW IF EXISTS ${sqlIdent(view.name)}`);
      }
    }
    await this.checkpoint();
  }

  async readManifest(): Promise<Map<string, ManifestEntry>> {
    const rows = await this.query("SELECT * FROM manifest");
    const entries = new Map<string, ManifestEntry>();
    for (const row of rows) {
      entries.set(String(row.stage), {
        stage: String(row.stage),
        status: row.status as StageStatus,
        fingerprint: String(row.fingerprint),
        config_hash: String(row.config_hash),
        inputs: JSON.parse(String(row.inputs ?? "null")),
        rows: row.rows === null ? null : Number(row.rows),
        counts: JSON.parse(String(row.counts ?? "{}")),
        details: JSON.parse(String(row.details ?? "{}")),
        seconds: row.seconds === null ? null : Number(row.seconds),
        finished_at: row.finished_at === null ? null : String(row.finished_at),
        error: row.error === null ? null : String(row.error),
      });
    }
    return entries;
  }

  async saveManifestEntry(e: ManifestEntry): Promise<void> {
    const values = [
      sqlString(e.stage),
      sqlString(e.status),
      sqlString(e.fingerprint),
      sqlString(e.config_hash),
      sqlString(JSON.stringify(e.inputs ?? null)),
      e.rows === null ? "NULL" : String(e.rows),
      sqlString(JSON.stringify(e.counts)),
      sqlString(JSON.stringify(e.details)),
      e.seconds === null ? "NULL" : String(e.seconds),
      e.finished_at === null ? "NULL" : sqlString(e.finished_at),
      e.error === null ? "NULL" : sqlString(e.error),
    ];
    await this.run(`INSERT OR REPLACE INTO manifest VALUES (${values.join(", ")})`);
    if (e.status === "running") this.runningSince.set(e.stage, new Date().toISOString());
    else this.runningSince.delete(e.stage);
    await this.mirrorManifest();
  }

  /**
   * Copies the manifest into status.json after every change. While a run holds run.duckdb, DuckDB lets no other
   * process open it, not even to read, so `status` reads this copy instead.
   */
  private async mirrorManifest(): Promise<void> {
    const entries = [...(await this.readManifest()).values()].map((e) => ({ ...e, running_since: this.runningSince.get(e.stage) ?? null }));
    const text = `${JSON.stringify({ format: 1, entries }, null, 2)}\n`;
    await writeAtomically(join(this.dir, STATUS_MIRROR), (tmp) => writeFile(tmp, text));
  }

  /** The manifest as the run holding `dir` last mirrored it, or null where there is no mirror. */
  static async readMirror(dir: string): Promise<MirroredEntry[] | null> {
    const text = await readFile(join(dir, STATUS_MIRROR), "utf8").catch(() => null);
    if (text === null) return null;
    return (JSON.parse(text) as { entries: MirroredEntry[] }).entries;
  }

  /**
   * Writes the WAL into run.duckdb. Called after creating catalog objects: a WAL that still holds a CREATE is
   * replayed when the next process opens a killed run, and DuckDB cannot replay every kind of DDL (seen: a table
   * with a column default), which would leave the run unopenable.
   */
  async checkpoint(): Promise<void> {
    await this.run("CHECKPOINT");
  }

  private async ensureManifestTable(): Promise<void> {
    const found = await this.query(
      "SELECT 1 FROM information_schema.tables WHERE table_name = 'manifest' AND table_schema = 'main'",
    );
    // Only create when missing: a rerun that does no work must not touch run.duckdb.
    if (found.length > 0) return;
    await this.run(`CREATE TABLE manifest (
      stage VARCHAR PRIMARY KEY, status VARCHAR NOT NULL, fingerprint VARCHAR NOT NULL, config_hash VARCHAR NOT NULL,
      inputs JSON, rows BIGINT, counts JSON, details JSON, seconds DOUBLE, finished_at VARCHAR, error VARCHAR)`);
    await this.checkpoint();
  }

  close(): void {
    this.db.closeSync();
    this.instance.closeSync();
  }
}

/**
 * What a killed run leaves behind: temporary files and folders of writes that never finished (a stage table or
 * export under its temporary name, export buckets, a stream's pipe). Never a finished output.
 */
const LEFTOVERS: readonly (readonly [string, RegExp])[] = [
  [".", /^\.stream-|^\.status\.json\.tmp-\d+$/],
  ["tables", /^\..+\.tmp-\d+$/],
  ["exports", /^\..+\.tmp-\d+$|^\.buckets-\d+$/],
];

async function removeLeftovers(dir: string): Promise<void> {
  for (const [sub, pattern] of LEFTOVERS) {
    const names = await readdir(join(dir, sub)).catch(() => [] as string[]);
    await Promise.all(names.filter((n) => pattern.test(n)).map((n) => rm(join(dir, sub, n), { recursive: true, force: true })));
  }
}

/** DuckDB BIGINT/HUGEINT arrive as bigint; the store's callers want plain numbers. */
function plainRow(row: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(row)) out[k] = typeof v === "bigint" ? Number(v) : v;
  return out;
}

/** What a user can do about a catalog that does not open; any other failure is a bug and keeps its own error. */
function catalogOpenError(dir: string, error: Error): Error {
  if (/Could not set lock|Conflicting lock/i.test(error.message)) return new CatalogLockedError(dir, { cause: error });
  if (/not a valid DuckDB database|created with an? (older|newer)|storage version/i.test(error.message)) {
    return new UserError(
      `${join(dir, "run.duckdb")} is not a catalog this DuckDB can open (${error.message.replace(/^\w+ Error: /, "")}); ` +
        `move the run directory aside and run again, or choose another run directory`,
      { cause: error },
    );
  }
  return error;
}

/** Another process (a run in progress) holds run.duckdb. */
export class CatalogLockedError extends UserError {
  constructor(dir: string, options?: { cause?: unknown }) {
    super(`a run is in progress in ${dir} (run.duckdb is locked); wait for it, or stop it`, options);
  }
}
