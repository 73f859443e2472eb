import type { ResolvedConfig } from "../config/load.ts";
import { StageError } from "../errors.ts";
import { fillTempTable } from "../llm/temp-table.ts";
import type { ChatMessage } from "../llm/types.ts";
import type { Stage, StageContext, StageOutcome } from "../pipeline/stage.ts";
import type { DerivedView } from "../store/run-store.ts";
import { seededKeySql, sqlString } from "../store/sql.ts";
import type { LlmTrait, PositiveTrait } from "../traits/positive-trait.ts";
import { positiveTrait } from "../traits/registry.ts";
import { rewriteTurns, type RewrittenTurns } from "../traits/rewrite-turns.ts";

/** How many bad rows a failing mix quotes. */
const QUOTED_ROWS = 5;

/**
 * Draws the requested number of contaminated and clean rows without replacement (reproducibly from the seed),
 * shuffles them into one order, and applies the wanted trait A to every assistant turn: in SQL, or through the
 * LLM layer for LLM traits (a row whose rewrite is unusable fails the stage or, with `mix.on_bad_row: skip`, is
 * left out and listed in `mix_dropped`). Keeps the ground truth (`has_negative`) and the source of every row, and
 * its `row_id` into `examples`, which holds the original messages (the view `mixed_with_original` joins them).
 *
 * What mix stores is narrow: `mix_draw` (each drawn row's `row_id` and `position`) and, for an LLM trait, the
 * rewritten turns (`mix_rewrites`). The table the later stages read, `mixed`, is a view that joins them with
 * `examples` and applies the trait as it reads. Storing every row's text again cost more than all the rest:
 * at 1M rows mix took 6.8-7.0 s writing it against 0.4 s for the draw alone, while export renders its lines
 * through the view in the same time as from a stored table (6.1-6.8 s against 6.2-7.6 s, alternating runs).
 */
export const mixStage: Stage = {
  name: "mix",
  description: "draw clean and contaminated rows and inject the wanted trait",
  version: 4,
  after: ["ingest"],
  enabled: () => true,
  configSlice: (c) => {
    const trait = traitOf(c);
    const { rewrite, on_bad_row, ...draw } = c.mix;
    if (trait.kind === "sql") return { seed: c.seed, mix: draw };
    return { seed: c.seed, mix: { ...draw, on_bad_row, rewrite }, rewrite_model: c.llm[rewrite.role]?.model };
  },
  inputFiles: (c) => {
    const trait = traitOf(c);
    return trait.kind === "llm" ? [...trait.inputFiles] : [];
  },
  views: (c) => [mixedView(traitOf(c)), MIXED_WITH_ORIGINAL],
  outputs: (c) => ["tables/mix_draw.parquet", ...(traitOf(c).kind === "llm" ? ["tables/mix_rewrites.parquet", "tables/mix_dropped.parquet"] : [])],
  run: runMix,
};

/** The mixed rows, the trait applied: position, row_id, source, line, has_negative, label, messages, positive_trait. */
function mixedView(trait: PositiveTrait): DerivedView {
  const content =
    trait.kind === "sql"
      ? `list_transform(e.messages, m -> CASE WHEN m.role = 'assistant'
           THEN {'role': m.role, 'content': ${trait.sqlTransform("m.content")}} ELSE m END)`
      : `list_transform(e.messages, (m, i) -> CASE WHEN m.role = 'assistant'
           THEN {'role': m.role, 'content': r.turns[i]} ELSE m END)`;
  return {
    name: "mixed",
    tables: ["mix_draw", "examples", ...(trait.kind === "llm" ? ["mix_rewrites"] : [])],
    // For an LLM trait the draw holds only the rows with a usable rewrite, so the inner joins agree.
    select: (from) => `SELECT d.position, d.row_id, e.source, e.line, e.has_negative, e.label, ${content} AS messages,
        ${sqlString(trait.name)} AS positive_trait
      FROM ${from("mix_draw")} d JOIN ${from("examples")} e USING (row_id)
      ${trait.kind === "llm" ? `JOIN (SELECT row_id, map(list(turn), list(content)) AS turns FROM ${from("mix_rewrites")} GROUP BY row_id) r USING (row_id)` : ""}`,
  };
}

const MIXED_WITH_ORIGINAL: DerivedView = {
  name: "mixed_with_original",
  tables: ["mixed", "examples"],
  select: (from) => `SELECT m.*, e.messages AS original_messages FROM ${from("mixed")} m JOIN ${from("examples")} e USING (row_id)`,
};

function traitOf(config: ResolvedConfig): PositiveTrait {
  return positiveTrait(config.mix.positive_trait, { instruction: config.mix.rewrite.instruction });
}

export interface DrawPlan {
  rows: number;
  negative: number;
  clean: number;
}

/**
 * How many rows of each kind to draw. With `rows` unset, the largest mix the fraction allows from what is
 * available; with `rows` set, exactly that many, or an error saying how many there are.
 */
export function planDraw(available: { negative: number; clean: number }, fraction: number, rows?: number): DrawPlan {
  const split = (total: number) => {
    const negative = Math.round(total * fraction);
    return { rows: total, negative, clean: total - negative };
  };
  if (rows !== undefined) {
    const plan = split(rows);
    const short =
      plan.negative > available.negative
        ? `${plan.negative} contaminated rows, but the sources have ${available.negative}`
        : plan.clean > available.clean
          ? `${plan.clean} clean rows, but the sources have ${available.clean}`
          : null;
    if (short) {
      const most = planDraw(available, fraction).rows;
      throw new StageError(
        "mix",
        `mix.rows ${rows} with negative_fraction ${fraction} needs ${short}; ` +
          `lower mix.rows (at most ${most} at this fraction) or change mix.negative_fraction`,
      );
    }
    return plan;
  }
  let total =
    fraction === 0
      ? available.clean
      : fraction === 1
        ? available.negative
        : Math.floor(Math.min(available.negative / fraction, available.clean / (1 - fraction)));
  // Rounding the split can ask for one row more than a pool has; step down until it fits.
  while (total > 0) {
    const plan = split(total);
    if (plan.negative <= available.negative && plan.clean <= available.clean) return plan;
    total -= 1;
  }
  return split(0);
}

/**
 * The error for a draw of no rows: which pool runs dry at this fraction, and where its rows come from, so the fix
 * it names is the one that applies.
 */
function emptyDrawError(config: ResolvedConfig, available: { negative: number; clean: number }): StageError {
  const fraction = config.mix.negative_fraction;
  const from = (kind: "contaminated" | "clean") => (config.sources.labelled ? "check sources.labelled.label" : `sources.${kind}`);
  const fix =
    available.negative + available.clean === 0
      ? "add rows to the sources"
      : fraction > 0 && available.negative === 0
        ? `add contaminated rows (${from("contaminated")}), or set mix.negative_fraction: 0 to take clean rows only`
        : fraction < 1 && available.clean === 0
          ? `add clean rows (${from("clean")}), or set mix.negative_fraction: 1 to take contaminated rows only`
          : "change mix.negative_fraction";
  return new StageError(
    "mix",
    `nothing to draw: the sources have ${available.negative} contaminated and ${available.clean} clean rows, ` +
      `which at mix.negative_fraction ${fraction} make no row; ${fix}`,
  );
}

async function runMix(ctx: StageContext): Promise<StageOutcome> {
  const { config, store, progress } = ctx;
  const examples = store.table("examples");
  const [avail] = await store.query(
    `SELECT count(*) FILTER (WHERE has_negative) AS negative, count(*) FILTER (WHERE NOT has_negative) AS clean FROM ${examples}`,
  );
  const available = { negative: Number(avail?.negative ?? 0), clean: Number(avail?.clean ?? 0) };
  const plan = planDraw(available, config.mix.negative_fraction, config.mix.rows);
  if (plan.rows === 0) throw emptyDrawError(config, available);
  const trait = traitOf(config);
  const seed = config.seed;
  // Narrow first (ids and keys only), then one join and one sort of the wide rows.
  await store.run(`CREATE OR REPLACE TEMP TABLE mix_picked AS
    WITH keyed AS (
      SELECT row_id, has_negative,
        row_number() OVER (PARTITION BY has_negative ORDER BY ${seededKeySql(seed, "draw", "row_id")}, row_id) AS draw_rank
      FROM ${examples}
    )
    SELECT row_id, ${seededKeySql(seed, "order", "row_id")} AS order_key FROM keyed
    WHERE (has_negative AND draw_rank <= ${plan.negative}) OR (NOT has_negative AND draw_rank <= ${plan.clean})`);

  const rewritten = trait.kind === "llm" ? await rewriteRows(ctx, trait) : null;
  const task = progress.task("mix", 100);
  // Positions are numbered on the narrow id list; the wide rows stay where ingest stored them (see mixedView).
  const rows = await store.writeTable(
    "mix_draw",
    `SELECT row_number() OVER (ORDER BY order_key, row_id) - 1 AS position, row_id FROM mix_picked
     ${rewritten ? "WHERE row_id IN (SELECT row_id FROM mix_rewritten)" : ""}
     ORDER BY position`,
    (p) => task.percent(p),
  );
  task.finish();
  const dropped = rewritten?.dropped ?? { negative: 0, clean: 0 };
  return {
    rows,
    counts: {
      available_negative: available.negative,
      available_clean: available.clean,
      drawn_negative: plan.negative,
      drawn_clean: plan.clean,
      ...(rewritten ? { dropped_negative: dropped.negative, dropped_clean: dropped.clean } : {}),
    },
    details: {
      positive_trait: trait.name,
      negative_fraction: config.mix.negative_fraction,
      ...(rewritten ? { llm: rewritten.usage } : {}),
    },
  };
}

/**
 * Rewrites the picked rows' assistant turns into the `mix_rewrites` table (row_id, turn, content; temp table
 * `mix_rewritten` while the stage runs), and writes the rows whose rewrite is unusable to `mix_bad` and the
 * `mix_dropped` table, or fails on them.
 */
async function rewriteRows(ctx: StageContext, trait: LlmTrait): Promise<{ usage: RewrittenTurns["usage"]; dropped: { negative: number; clean: number } }> {
  const { config, store } = ctx;
  const picked = await store.query(
    `SELECT e.row_id, to_json(e.messages)::VARCHAR AS messages FROM ${store.table("examples")} e JOIN mix_picked p USING (row_id)
     ORDER BY p.order_key, e.row_id`,
  );
  const rows = picked.map((r) => ({ rowId: String(r.row_id), messages: JSON.parse(String(r.messages)) as ChatMessage[] }));
  const { turns, bad, usage } = await rewriteTurns(ctx, trait, rows, config.mix.rewrite);
  if (bad.length > 0 && config.mix.on_bad_row === "fail") {
    const quoted = bad.slice(0, QUOTED_ROWS).map((b) => `  ${b.rowId} ${b.reason}`);
    const more = bad.length > QUOTED_ROWS ? `\n  … and ${bad.length - QUOTED_ROWS} more` : "";
    const role = `llm.${config.mix.rewrite.role}`;
    throw new StageError(
      "mix",
      `${bad.length} row${bad.length > 1 ? "s" : ""} got no usable ${trait.name} rewrite from ${role}:\n${quoted.join("\n")}${more}\n` +
        `Raise ${role}.parse_retries, or set mix.on_bad_row: skip to drop such rows (listed in the "mix_dropped" table).`,
    );
  }
  await fillTempTable(store, "mix_rewritten", { row_id: "VARCHAR", turn: "INTEGER", content: "VARCHAR" }, turns);
  await store.writeTable("mix_rewrites", "SELECT row_id, turn, content FROM mix_rewritten ORDER BY row_id, turn");
  await fillTempTable(store, "mix_bad", { row_id: "VARCHAR", reason: "VARCHAR" }, bad.map((b) => [b.rowId, b.reason]));
  await store.writeTable(
    "mix_dropped",
    `SELECT b.row_id, e.has_negative, b.reason FROM mix_bad b JOIN ${store.table("examples")} e USING (row_id) ORDER BY b.row_id`,
  );
  const [counts] = await store.query(
    `SELECT count(*) FILTER (WHERE has_negative) AS negative, count(*) FILTER (WHERE NOT has_negative) AS clean FROM ${store.table("mix_dropped")}`,
  );
  return { usage, dropped: { negative: Number(counts?.negative ?? 0), clean: Number(counts?.clean ?? 0) } };
}
