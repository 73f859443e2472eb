import { readFile } from "node:fs/promises";
import { join } from "node:path";
import type { ArmManifest } from "../stages/export.ts";
import { isLabel, type Label } from "../labels/feature-labels.ts";
import type { LatentContext } from "../labels/explain-format.ts";
import type { FlagRuleOptions } from "../labels/flag-rule.ts";
import { evaluateConfusion, precisionRecallCurve } from "../stats/metrics.ts";
import type { RunStore } from "../store/run-store.ts";
import { exists } from "../util/fs.ts";
import { packageVersion } from "../util/version.ts";
import type { ArmLine, DatasetSummary, DisabledStage, FlagSide, Placement, ReportData, ReportLatent, ReportPrompt, StageLine } from "./report-data.ts";

/**
 * Builds ReportData from a run directory's tables. Every table is optional (a report after `mix` alone shows the
 * rows and the arms); a table that exists but lacks the columns its contract names is a bug and fails loudly.
 *
 * Contracts read here:
 * - `mixed` (row_id, has_negative), `features` (latent, rank, mean_base, mean_target, mean_diff),
 *   `feature_labels` (src/labels/feature-labels.ts), `feature_examples` (latent, corpus, rank, activation,
 *   tokens, token_acts);
 * - flags of a method (`flags` from the SAE rule, `audit_flags` from the LLM audit): row_id, flagged (NULL = no
 *   verdict), and optionally score (a continuous score, for the precision-recall curve);
 * - a method's prompt (`sae_prompt` from synthesize, `audit_prompt` from the audit): prompt (NULL when none was
 *   written), and optionally latents INTEGER[] (the latents it was written from);
 * - `rephrasings` (origin, idx, rephrasing), origin `sae` or `llm_audit` for those prompts;
 * - `exports/manifest.json` (the export stage) and the run manifest (stage status, rows, time, details).
 */
export interface ReportTables {
  saeFlags: string;
  llmFlags: string;
  saePrompt: string;
  llmPrompt: string;
  rephrasings: string;
}

export const DEFAULT_REPORT_TABLES: ReportTables = {
  saeFlags: "flags",
  llmFlags: "audit_flags",
  saePrompt: "sae_prompt",
  llmPrompt: "audit_prompt",
  rephrasings: "rephrasings",
};

/** The `origin` of each method's prompt in `rephrasings` (and ReportPrompt.source). */
const PROMPT_ORIGINS = { sae: "sae", llm: "llm_audit" } as const;

export interface CollectOptions {
  title: string;
  /** The resolved config, shown on the page. */
  config: unknown;
  /** The rule that made the SAE flags; null when the flag stage is not part of the run. */
  flagRule: FlagRuleOptions | null;
  /** Share of a context's peak at or above which tokens are highlighted (as in explain). Default 0.25. */
  highlightShare?: number;
  /** Contexts shown per latent, one per corpus first. Default 3. */
  contextsPerLatent?: number;
  tables?: Partial<ReportTables>;
  /**
   * Tables this run's config does not produce (the outputs of its disabled stages): a copy an earlier config left
   * in the run directory is not this run's, so the page leaves it out, as the exports' manifest does.
   */
  notInRun?: readonly string[];
  /** The pipeline's stages in order, for the stage table (the manifest holds them in the order they were saved). */
  stageOrder?: readonly string[];
  /** The stages this config leaves off, with what turns each on, so that the page says "off" and not "not yet". */
  disabled?: readonly DisabledStage[];
  now?: Date;
}

/** Whether the run has a table, as far as the report is concerned. */
type HasTable = (table: string) => Promise<boolean>;

export async function collectReportData(store: RunStore, options: CollectOptions): Promise<ReportData> {
  const tables = { ...DEFAULT_REPORT_TABLES, ...options.tables };
  const absent = new Set(options.notInRun ?? []);
  const has: HasTable = async (table) => !absent.has(table) && (await store.hasTable(table));
  const dataset = await datasetSummary(store, has);
  const truthKnown = dataset.contaminated !== null;
  return {
    title: options.title,
    generatedAt: (options.now ?? new Date()).toISOString(),
    config: options.config,
    versions: await versions(store),
    stages: await stages(store, options.stageOrder ?? []),
    disabled: [...(options.disabled ?? [])],
    dataset,
    ...(await trainingFiles(store)),
    latents: await latents(store, has, options.contextsPerLatent ?? 3),
    highlightShare: options.highlightShare ?? 0.25,
    prompts: await prompts(store, has, tables),
    flagRule: options.flagRule,
    sae: await flagSide(store, has, tables.saeFlags, "SAE flags", truthKnown),
    llm: await flagSide(store, has, tables.llmFlags, "LLM audit", truthKnown),
  };
}

async function columnsOf(store: RunStore, table: string): Promise<Set<string>> {
  const rows = await store.query(`DESCRIBE SELECT * FROM ${store.table(table)}`);
  return new Set(rows.map((r) => String(r.column_name)));
}

async function requireColumns(store: RunStore, table: string, needed: readonly string[]): Promise<Set<string>> {
  const have = await columnsOf(store, table);
  const missing = needed.filter((c) => !have.has(c));
  if (missing.length > 0) throw new Error(`report: table ${table} has no column ${missing.join(", ")}`);
  return have;
}

async function versions(store: RunStore): Promise<Record<string, string>> {
  const [duck] = await store.query("SELECT version() AS v");
  const out: Record<string, string> = { inoculant: packageVersion(), node: process.version, duckdb: String(duck?.v) };
  // What the SAE stages recorded about how they encoded (faithful threshold or reference-compatible relu).
  for (const entry of (await store.readManifest()).values()) {
    if (typeof entry.details.encode === "string") out[`${entry.stage}: SAE encode`] = entry.details.encode;
  }
  return out;
}

async function stages(store: RunStore, order: readonly string[]): Promise<StageLine[]> {
  const rank = (stage: string) => (order.includes(stage) ? order.indexOf(stage) : order.length);
  // Not the report stage itself: it is the one writing this, and would always read "running".
  return [...(await store.readManifest()).values()]
    .filter((e) => e.stage !== "report")
    .sort((a, b) => rank(a.stage) - rank(b.stage))
    .map((e) => ({ stage: e.stage, status: e.status, rows: e.rows, seconds: e.seconds }));
}

async function datasetSummary(store: RunStore, has: HasTable): Promise<DatasetSummary> {
  if (!(await has("mixed"))) return { rows: 0, contaminated: null };
  const [r] = await store.query(
    `SELECT count(*) AS rows, count(has_negative) AS known, count(*) FILTER (WHERE has_negative) AS contaminated FROM ${store.table("mixed")}`,
  );
  return { rows: Number(r!.rows), contaminated: Number(r!.known) === 0 ? null : Number(r!.contaminated) };
}

/** The exports' manifest: each arm's prompts, and where the prompts were placed. */
async function trainingFiles(store: RunStore): Promise<{ arms: ArmLine[]; placement: Placement | null }> {
  const path = join(store.dir, "exports", "manifest.json");
  if (!(await exists(path))) return { arms: [], placement: null };
  const manifest = JSON.parse(await readFile(path, "utf8")) as { arms: Record<string, ArmManifest>; placement?: Placement };
  return {
    arms: Object.entries(manifest.arms).map(([arm, a]) => ({ arm, description: a.description, rows: a.rows, prompts: a.prompts })),
    placement: manifest.placement ?? null,
  };
}

async function latents(store: RunStore, has: HasTable, perLatent: number): Promise<ReportLatent[]> {
  if (!(await has("features"))) return [];
  const labelled = await has("feature_labels");
  const labelCols = labelled
    ? "l.description, l.label, l.label_source, l.reason, l.error"
    : "NULL AS description, NULL AS label, NULL AS label_source, NULL AS reason, NULL AS error";
  const rows = await store.query(
    `SELECT f.latent, f.rank, f.mean_base, f.mean_target, f.mean_diff, ${labelCols}
     FROM ${store.table("features")} f ${labelled ? `LEFT JOIN ${store.table("feature_labels")} l ON l.latent = f.latent` : ""}
     ORDER BY f.rank`,
  );
  const contexts = await latentContexts(store, has, perLatent);
  return rows.map((r) => ({
    latent: Number(r.latent),
    rank: Number(r.rank),
    meanBase: Number(r.mean_base),
    meanTarget: Number(r.mean_target),
    meanDiff: Number(r.mean_diff),
    description: nullableString(r.description),
    label: label(r.label, Number(r.latent)),
    labelSource: nullableString(r.label_source),
    reason: nullableString(r.reason),
    error: nullableString(r.error),
    contexts: contexts.get(Number(r.latent)) ?? [],
  }));
}

/** Each latent's strongest contexts: the best of every corpus first (the dataset's leading), then the next best. */
async function latentContexts(store: RunStore, has: HasTable, perLatent: number): Promise<Map<number, LatentContext[]>> {
  const out = new Map<number, LatentContext[]>();
  if (perLatent === 0 || !(await has("feature_examples"))) return out;
  const rows = await store.query(
    `SELECT latent, corpus, rank, activation, tokens, token_acts FROM ${store.table("feature_examples")}
     QUALIFY row_number() OVER (PARTITION BY latent ORDER BY rank, corpus <> 'dataset', corpus) <= ${perLatent}
     ORDER BY latent, rank, corpus <> 'dataset', corpus`,
  );
  for (const r of rows) {
    const latent = Number(r.latent);
    out.set(latent, [
      ...(out.get(latent) ?? []),
      {
        corpus: String(r.corpus),
        rank: Number(r.rank),
        activation: Number(r.activation),
        tokens: (r.tokens as unknown[]).map(String),
        token_acts: (r.token_acts as unknown[]).map(Number),
      },
    ]);
  }
  return out;
}

async function prompts(store: RunStore, has: HasTable, tables: ReportTables): Promise<ReportPrompt[]> {
  const rephrased = new Map<string, string[]>();
  if (await has(tables.rephrasings)) {
    await requireColumns(store, tables.rephrasings, ["origin", "idx", "rephrasing"]);
    for (const r of await store.query(`SELECT origin, rephrasing FROM ${store.table(tables.rephrasings)} ORDER BY origin, idx`)) {
      rephrased.set(String(r.origin), [...(rephrased.get(String(r.origin)) ?? []), String(r.rephrasing)]);
    }
  }
  const out: ReportPrompt[] = [];
  for (const [table, source] of [
    [tables.saePrompt, PROMPT_ORIGINS.sae],
    [tables.llmPrompt, PROMPT_ORIGINS.llm],
  ] as const) {
    if (!(await has(table))) continue;
    const cols = await requireColumns(store, table, ["prompt"]);
    const rows = await store.query(`SELECT prompt, ${cols.has("latents") ? "latents" : "NULL::INTEGER[] AS latents"} FROM ${store.table(table)}`);
    if (rows.length !== 1) throw new Error(`report: table ${table} has ${rows.length} rows, expected one`);
    const [r] = rows;
    // A method that flagged nothing writes no prompt.
    if (r!.prompt === null) continue;
    out.push({ source, text: String(r!.prompt), latents: ((r!.latents as unknown[] | null) ?? []).map(Number), rephrasings: rephrased.get(source) ?? [] });
  }
  return out;
}

async function flagSide(store: RunStore, has: HasTable, table: string, name: string, truthKnown: boolean): Promise<FlagSide | null> {
  if (!(await has(table))) return null;
  const cols = await requireColumns(store, table, ["row_id", "flagged"]);
  const joined = `${store.table(table)} f JOIN ${store.table("mixed")} m ON m.row_id = f.row_id`;
  const [c] = await store.query(
    `SELECT count(*) AS rows, count(*) FILTER (WHERE f.flagged) AS flagged, count(*) FILTER (WHERE f.flagged IS NULL) AS unjudged,
       count(*) FILTER (WHERE f.flagged AND m.has_negative) AS tp, count(*) FILTER (WHERE f.flagged AND NOT m.has_negative) AS fp,
       count(*) FILTER (WHERE NOT f.flagged AND m.has_negative) AS fn, count(*) FILTER (WHERE NOT f.flagged AND NOT m.has_negative) AS tn
     FROM ${joined}`,
  );
  const n = (k: string) => Number(c![k]);
  const side: FlagSide = { name, rows: n("rows"), flagged: n("flagged"), unjudged: n("unjudged"), evaluation: null, curve: null };
  if (!truthKnown) return side;
  side.evaluation = evaluateConfusion({ tp: n("tp"), fp: n("fp"), fn: n("fn"), tn: n("tn") }, side.unjudged);
  if (cols.has("score")) {
    // Grouped in SQL: the curve needs one row per distinct score, not one per dataset row.
    const groups = await store.query(
      `SELECT f.score::DOUBLE AS score, count(*) FILTER (WHERE m.has_negative) AS positives, count(*) FILTER (WHERE NOT m.has_negative) AS negatives
       FROM ${joined} WHERE f.score IS NOT NULL AND m.has_negative IS NOT NULL GROUP BY 1`,
    );
    side.curve = precisionRecallCurve(groups.map((g) => ({ score: Number(g.score), positives: Number(g.positives), negatives: Number(g.negatives) })));
  }
  return side;
}

function nullableString(v: unknown): string | null {
  return v === null || v === undefined ? null : String(v);
}

function label(v: unknown, latent: number): Label | null {
  if (v === null || v === undefined) return null;
  if (!isLabel(v)) throw new Error(`report: feature_labels has label ${JSON.stringify(v)} for latent ${latent} (expected yes, neutral, no or NULL)`);
  return v;
}
