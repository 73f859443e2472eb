import { sqlString } from "../store/sql.ts";

/**
 * The `feature_labels` table: one row per latent (unique), its description and its label against the wanted
 * trait A. A NULL label means unlabelled (the LLM failed or its answer would not parse after the retries, or an
 * imported entry carried no classification); it is shown as such and never read as `no` by accident: the flag
 * rule decides how it counts (`unlabelled_as`).
 */
export const LABELS = ["yes", "neutral", "no"] as const;
export type Label = (typeof LABELS)[number];

export function isLabel(value: unknown): value is Label {
  return typeof value === "string" && (LABELS as readonly string[]).includes(value);
}

export type LabelSource = "llm" | "import";

export interface FeatureLabelRow {
  latent: number;
  /** NULL when the latent could not be explained. */
  description: string | null;
  label: Label | null;
  label_source: LabelSource;
  /** The classifier's one-sentence reason, when it gave one. */
  reason: string | null;
  /** Why the description or the label is missing (the last parse error or call failure), else NULL. */
  error: string | null;
}

/** Column types of `feature_labels`, in order; the SQL below and every reader agree on them. */
export const FEATURE_LABELS_COLUMNS = {
  latent: "INTEGER",
  description: "VARCHAR",
  label: "VARCHAR",
  label_source: "VARCHAR",
  reason: "VARCHAR",
  error: "VARCHAR",
} as const satisfies Record<keyof FeatureLabelRow, string>;

/**
 * A SELECT yielding `rows` as the `feature_labels` table with its exact column types, ordered by latent, for
 * `store.writeTable("feature_labels", …)`. A few hundred rows: literal VALUES are fine. Throws on a duplicate
 * latent, since the flag rule joins on latent and a duplicate would count one latent twice.
 */
export function featureLabelsSql(rows: readonly FeatureLabelRow[]): string {
  const seen = new Set<number>();
  for (const r of rows) {
    if (!Number.isInteger(r.latent) || r.latent < 0) throw new Error(`feature_labels: bad latent id ${r.latent}`);
    if (seen.has(r.latent)) throw new Error(`feature_labels: latent ${r.latent} appears twice`);
    seen.add(r.latent);
  }
  const names = Object.keys(FEATURE_LABELS_COLUMNS) as (keyof FeatureLabelRow)[];
  const casts = names.map((n) => `${n}::${FEATURE_LABELS_COLUMNS[n]} AS ${n}`).join(", ");
  if (rows.length === 0) {
    return `SELECT ${names.map((n) => `NULL::${FEATURE_LABELS_COLUMNS[n]} AS ${n}`).join(", ")} WHERE false`;
  }
  const literal = (v: string | number | null) => (v === null ? "NULL" : typeof v === "number" ? String(v) : sqlString(v));
  const values = rows.map((r) => `(${names.map((n) => literal(r[n])).join(", ")})`).join(",\n");
  return `SELECT ${casts} FROM (VALUES ${values}) AS t(${names.join(", ")}) ORDER BY latent`;
}
