import { flagRowsSql, validateFlagRule, type FlagRuleOptions } from "../labels/flag-rule.ts";
import type { ResolvedConfig } from "../config/load.ts";
import type { Stage, StageContext, StageOutcome } from "../pipeline/stage.ts";
import { flagMetrics } from "../stats/flag-metrics.ts";

/**
 * Flags a row when at least M of its top N latents (ranked by its own increase, among the top latents) are
 * labelled `no`, and scores every row (the summed increase on its `no` latents) for the precision-recall curve.
 * Writes `flags`; with the ground truth `mix` keeps, reports precision and recall with Wilson 95% intervals.
 */
export const flagStage: Stage = {
  name: "flag",
  description: "flag rows whose top latents are unwanted",
  version: 1,
  after: ["activations", "classify"],
  enabled: (c) => c.sae !== undefined,
  enableWith: "add an `sae` section",
  configSlice: (c) => c.flag,
  inputFiles: () => [],
  outputs: () => ["tables/flags.parquet"],
  run: runFlag,
};

export function flagRule(c: ResolvedConfig): FlagRuleOptions {
  return { topN: c.flag.top_n, minNo: c.flag.min_no, unlabelledAs: c.flag.unlabelled_as };
}

async function runFlag({ config, store }: StageContext): Promise<StageOutcome> {
  const rule = flagRule(config);
  validateFlagRule(rule);
  const rows = await store.writeTable(
    "flags",
    flagRowsSql(
      { mixed: store.table("mixed"), exampleFeatures: store.table("example_features"), features: store.table("features"), featureLabels: store.table("feature_labels") },
      rule,
    ),
  );
  const truth = await store.query(
    `SELECT f.flagged, m.has_negative AS truth FROM ${store.table("flags")} f JOIN ${store.table("mixed")} m USING (row_id)`,
  );
  const metrics = flagMetrics(truth.map((r) => ({ flagged: r.flagged as boolean, truth: r.truth as boolean })));
  const flagged = truth.filter((r) => r.flagged).length;
  return {
    rows,
    counts: { rows, flagged, ...metrics.confusion },
    details: { rule, precision: metrics.precision, recall: metrics.recall },
  };
}
