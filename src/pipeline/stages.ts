import { activationsStage } from "../stages/activations.ts";
import { exportStage } from "../stages/export.ts";
import { harvestStage } from "../stages/harvest.ts";
import { ingestStage } from "../stages/ingest.ts";
import { mixStage } from "../stages/mix.ts";
import type { Stage } from "./stage.ts";

/** The pipeline, in order. Later stages are added here and nowhere else. */
export const STAGES: readonly Stage[] = [ingestStage, mixStage, activationsStage, harvestStage, exportStage];

export function stageNames(): string[] {
  return STAGES.map((s) => s.name);
}
