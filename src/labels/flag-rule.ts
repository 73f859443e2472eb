import { UserError } from "../errors.ts";

/**
 * The SAE flag rule, in SQL: a row is flagged when at least M of its top N latents are labelled `no`.
 *
 * A row's top N: its latents among the run's top latents (`features`) whose activation rose on this row
 * (diff = target - base > 0), ranked by that diff, largest first; ties are broken by latent id, smallest first,
 * so the same tables always give the same flags. A row with fewer such latents than N uses the ones it has.
 * Latents whose activation fell on a row are left out: a decrease is no evidence that the row carries the trait.
 * (The reference code took a plain top-N of the row's diffs, which on a row with few increases also picks up
 * zeros and decreases.)
 *
 * Unlabelled latents (label NULL, or no feature_labels row at all) count as not-`no` by default; with
 * `unlabelledAs: "no"` they count as `no`, in the top-N count and in the score alike.
 *
 * Besides the boolean, each row gets a continuous score, the summed diff of its `no` latents (all of them, not
 * only its top N), so that a report can draw the whole precision-recall curve rather than one point.
 *
 * Every row of `mixed` appears exactly once, in `position` order; a row without any latent is not flagged
 * (unless M = 0, which flags every row) and scores 0.
 */
export interface FlagRuleOptions {
  /** N: how many of a row's latents to look at. */
  topN: number;
  /** M: how many of them must be `no`. */
  minNo: number;
  unlabelledAs: "not_no" | "no";
}

/** The write-up's rule (N=10, M=3). The reference code's committed run used M=1. */
export const DEFAULT_FLAG_RULE: FlagRuleOptions = { topN: 10, minNo: 3, unlabelledAs: "not_no" };

/** SQL relations (for example `store.table("mixed")`) that the rule reads. */
export interface FlagRuleTables {
  /** row_id, position. */
  mixed: string;
  /** row_id, latent, diff. */
  exampleFeatures: string;
  /** latent: the run's top latents. */
  features: string;
  /** latent, label (unique per latent). */
  featureLabels: string;
}

/** Columns of the flag output, in order. */
export const FLAG_COLUMNS = {
  row_id: "VARCHAR",
  flagged: "BOOLEAN",
  /** `no` latents among the row's top N. */
  no_count: "INTEGER",
  /** Latents in the row's top N (N, or fewer when the row has fewer). */
  top_count: "INTEGER",
  /** Unlabelled latents among the row's top N. */
  unlabelled_count: "INTEGER",
  /** Summed diff of the row's `no` latents (all of them); 0 when none. */
  score: "DOUBLE",
  /** The `no` latents of the row's top N, in the row's rank order. */
  no_latents: "INTEGER[]",
} as const;

export function validateFlagRule(rule: FlagRuleOptions): void {
  if (!Number.isInteger(rule.topN) || rule.topN < 1) throw new UserError(`flag rule: N must be a positive integer, got ${rule.topN}`);
  if (!Number.isInteger(rule.minNo) || rule.minNo < 0) throw new UserError(`flag rule: M must be a non-negative integer, got ${rule.minNo}`);
  if (rule.minNo > rule.topN) throw new UserError(`flag rule: M (${rule.minNo}) is larger than N (${rule.topN}), so no row could be flagged`);
}

/** A SELECT giving one row per `mixed` row with the columns of FLAG_COLUMNS. */
export function flagRowsSql(tables: FlagRuleTables, rule: FlagRuleOptions = DEFAULT_FLAG_RULE): string {
  validateFlagRule(rule);
  const isNo = rule.unlabelledAs === "no" ? "coalesce(l.label, 'no') = 'no'" : "coalesce(l.label = 'no', false)";
  const n = rule.topN;
  return `WITH ranked AS (
  SELECT ef.row_id, ef.latent, ef.diff::DOUBLE AS diff, ${isNo} AS is_no, l.label IS NULL AS unlabelled,
    row_number() OVER (PARTITION BY ef.row_id ORDER BY ef.diff DESC, ef.latent ASC) AS row_rank
  FROM ${tables.exampleFeatures} ef
  LEFT JOIN ${tables.featureLabels} l ON l.latent = ef.latent
  WHERE ef.diff > 0 AND ef.latent IN (SELECT latent FROM ${tables.features})
),
per_row AS (
  SELECT row_id,
    count(*) FILTER (WHERE row_rank <= ${n} AND is_no) AS no_count,
    count(*) FILTER (WHERE row_rank <= ${n}) AS top_count,
    count(*) FILTER (WHERE row_rank <= ${n} AND unlabelled) AS unlabelled_count,
    coalesce(sum(diff) FILTER (WHERE is_no), 0) AS score,
    coalesce(list(latent ORDER BY row_rank) FILTER (WHERE row_rank <= ${n} AND is_no), []) AS no_latents
  FROM ranked GROUP BY row_id
)
SELECT m.row_id::VARCHAR AS row_id,
  coalesce(p.no_count, 0) >= ${rule.minNo} AS flagged,
  coalesce(p.no_count, 0)::INTEGER AS no_count,
  coalesce(p.top_count, 0)::INTEGER AS top_count,
  coalesce(p.unlabelled_count, 0)::INTEGER AS unlabelled_count,
  coalesce(p.score, 0)::DOUBLE AS score,
  coalesce(p.no_latents, [])::INTEGER[] AS no_latents
FROM ${tables.mixed} m LEFT JOIN per_row p ON p.row_id = m.row_id
ORDER BY m.position`;
}
