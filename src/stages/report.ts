import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { userConfig } from "../config/load.ts";
import type { Stage, StageContext, StageOutcome } from "../pipeline/stage.ts";
import { collectReportData } from "../report/collect.ts";
import { renderReport, REPORT_TEMPLATE } from "../report/render.ts";
import { writeAtomically } from "../util/fs.ts";
import { configHash } from "./export.ts";
import { flagRule } from "./flag.ts";

/** `report.html`: one self-contained page a researcher opens after a run (see src/report/). */
export const reportStage: Stage = {
  name: "report",
  description: "write report.html",
  version: 1,
  // Every stage whose tables the page shows.
  after: ["mix", "activations", "harvest", "classify", "synthesize", "flag", "audit", "rephrase", "export"],
  enabled: () => true,
  configSlice: (c) => ({ report: c.report, config: configHash(c) }),
  inputFiles: () => [REPORT_TEMPLATE],
  outputs: () => ["report.html"],
  run: runReport,
};

async function runReport({ config, store }: StageContext): Promise<StageOutcome> {
  const data = await collectReportData(store, {
    title: config.name,
    config: userConfig(config),
    flagRule: config.sae ? flagRule(config) : null,
    highlightShare: config.explain.share,
    contextsPerLatent: config.report.contexts_per_latent,
  });
  const html = renderReport(data);
  await writeAtomically(join(store.dir, "report.html"), (tmp) => writeFile(tmp, html));
  return { rows: 1, counts: { bytes: Buffer.byteLength(html) } };
}
