import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { userConfig } from "../config/load.ts";
import type { Stage, StageContext, StageOutcome } from "../pipeline/stage.ts";
import { collectReportData } from "../report/collect.ts";
import { renderReport, REPORT_TEMPLATE } from "../report/render.ts";
import { writeAtomically } from "../util/fs.ts";
import { activationsStage } from "./activations.ts";
import { auditStage } from "./audit.ts";
import { classifyStage } from "./classify.ts";
import { configHash } from "./export.ts";
import { flagRule, flagStage } from "./flag.ts";
import { harvestStage } from "./harvest.ts";
import { rephraseStage } from "./rephrase.ts";
import { synthesizeStage } from "./synthesize.ts";

/** The stages whose tables the page shows (besides mix and export, which every run has). */
const SHOWN = [activationsStage, harvestStage, classifyStage, synthesizeStage, flagStage, auditStage, rephraseStage];

/** `report.html`: one self-contained page a researcher opens after a run (see src/report/). */
export const reportStage: Stage = {
  name: "report",
  description: "write report.html",
  version: 1,
  // Every stage whose tables the page shows.
  after: ["mix", ...SHOWN.map((stage) => stage.name), "export"],
  enabled: () => true,
  configSlice: (c) => ({ report: c.report, config: configHash(c) }),
  inputFiles: () => [REPORT_TEMPLATE],
  outputs: () => ["report.html"],
  run: runReport,
};

async function runReport({ config, store }: StageContext): Promise<StageOutcome> {
  // Imported here, not at the top: the stage list imports this stage.
  const { STAGES } = await import("../pipeline/stages.ts");
  const data = await collectReportData(store, {
    stageOrder: STAGES.map((stage) => stage.name),
    disabled: STAGES.filter((stage) => !stage.enabled(config)).map((stage) => ({ stage: stage.name, enableWith: stage.enableWith ?? "" })),
    title: config.name,
    config: userConfig(config),
    flagRule: config.sae ? flagRule(config) : null,
    highlightShare: config.explain.share,
    contextsPerLatent: config.report.contexts_per_latent,
    notInRun: SHOWN.filter((stage) => !stage.enabled(config))
      .flatMap((stage) => stage.outputs(config))
      .flatMap((output) => /^tables\/(\w+)\.parquet$/.exec(output)?.[1] ?? []),
  });
  const html = renderReport(data);
  await writeAtomically(join(store.dir, "report.html"), (tmp) => writeFile(tmp, html));
  return { rows: 1, counts: { bytes: Buffer.byteLength(html) } };
}
