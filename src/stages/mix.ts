import { StageError } from "../errors.ts";
import type { Stage, StageContext, StageOutcome } from "../pipeline/stage.ts";
import { seededKeySql, sqlString } from "../store/sql.ts";
import { positiveTrait } from "../traits/registry.ts";

/**
 * Draws the requested number of contaminated and clean rows without replacement (reproducibly from the seed),
 * shuffles them into one order, and applies the wanted trait A to every assistant turn. Keeps the ground truth
 * (`has_negative`), the source and the original messages of every row.
 */
export const mixStage: Stage = {
  name: "mix",
  description: "draw clean and contaminated rows and inject the wanted trait",
  version: 1,
  after: ["ingest"],
  enabled: () => true,
  configSlice: (c) => ({ seed: c.seed, mix: c.mix }),
  inputFiles: () => [],
  outputs: () => ["tables/mixed.parquet"],
  run: runMix,
};

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

async function runMix({ config, store, progress }: StageContext): Promise<StageOutcome> {
  const examples = store.table("examples");
  const [avail] = await store.query(
    `SELECT count(*) FILTER (WHERE has_negative) AS negative, count(*) FILTER (WHERE NOT has_negative) AS clean FROM ${examples}`,
  );
  const available = { negative: Number(avail?.negative ?? 0), clean: Number(avail?.clean ?? 0) };
  const plan = planDraw(available, config.mix.negative_fraction, config.mix.rows);
  if (plan.rows === 0) {
    throw new StageError("mix", `nothing to draw: the sources have ${available.negative} contaminated and ${available.clean} clean rows`);
  }
  const trait = positiveTrait(config.mix.positive_trait);
  const seed = config.seed;
  const task = progress.task("mix", 100);
  // Narrow first (ids and keys only), then one join and one sort of the wide rows.
  const rows = await store.writeTable(
    "mixed",
    `WITH keyed AS (
       SELECT row_id, has_negative,
         row_number() OVER (PARTITION BY has_negative ORDER BY ${seededKeySql(seed, "draw", "row_id")}, row_id) AS draw_rank
       FROM ${examples}
     ),
     picked AS (
       SELECT row_id, ${seededKeySql(seed, "order", "row_id")} AS order_key FROM keyed
       WHERE (has_negative AND draw_rank <= ${plan.negative}) OR (NOT has_negative AND draw_rank <= ${plan.clean})
     )
     SELECT row_number() OVER (ORDER BY p.order_key, e.row_id) - 1 AS position,
       e.row_id, e.source, e.line, e.has_negative, e.label,
       list_transform(e.messages, m -> CASE WHEN m.role = 'assistant'
         THEN {'role': m.role, 'content': ${trait.sqlTransform("m.content")}} ELSE m END) AS messages,
       e.messages AS original_messages,
       ${sqlString(trait.name)} AS positive_trait
     FROM ${examples} e JOIN picked p USING (row_id)
     ORDER BY position`,
    (p) => task.percent(p),
  );
  task.finish();
  return {
    rows,
    counts: {
      available_negative: available.negative,
      available_clean: available.clean,
      drawn_negative: plan.negative,
      drawn_clean: plan.clean,
    },
    details: { positive_trait: trait.name, negative_fraction: config.mix.negative_fraction },
  };
}
