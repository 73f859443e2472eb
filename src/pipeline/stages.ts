import { activationsStage } from "../stages/activations.ts";
import { auditStage } from "../stages/audit.ts";
import { classifyStage } from "../stages/classify.ts";
import { explainStage } from "../stages/explain.ts";
import { flagStage } from "../stages/flag.ts";
import { reportStage } from "../stages/report.ts";
import { synthesizeStage } from "../stages/synthesize.ts";
import { exportStage } from "../stages/export.ts";
import { generateStage } from "../stages/generate.ts";
import { harvestStage } from "../stages/harvest.ts";
import { ingestStage } from "../stages/ingest.ts";
import { mixStage } from "../stages/mix.ts";
import { rephraseStage } from "../stages/rephrase.ts";
import type { Stage } from "./stage.ts";

/** The pipeline, in order. Later stages are added here and nowhere else. */
export const STAGES: readonly Stage[] = [
  ingestStage,
  mixStage,
  generateStage,
  activationsStage,
  harvestStage,
  explainStage,
  classifyStage,
  synthesizeStage,
  flagStage,
  auditStage,
  rephraseStage,
  exportStage,
  reportStage,
];

export function stageNames(): string[] {
  return STAGES.map((s) => s.name);
}
