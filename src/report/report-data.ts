import type { Label } from "../labels/feature-labels.ts";
import type { LatentContext } from "../labels/explain-format.ts";
import type { FlagRuleOptions } from "../labels/flag-rule.ts";
import type { FlagEvaluation, PrCurve } from "../stats/metrics.ts";

/**
 * Everything `report.html` shows, as plain data: collect.ts builds it from a run's tables, tests build it by hand,
 * and render.ts turns it into one HTML file. Numbers are raw (render formats them); absent parts are null or empty
 * and render says so on the page instead of leaving a section out.
 */
export interface ReportData {
  /** The run's name. */
  title: string;
  /** ISO time the report was made. */
  generatedAt: string;
  /** The resolved config, shown as JSON. */
  config: unknown;
  /** Name -> version: inoculant, Node, DuckDB, and what the stages recorded (SAE encode, models). */
  versions: Record<string, string>;
  /** The run's manifest: what each stage last did, in pipeline order. */
  stages: StageLine[];
  /** The stages the config leaves off, and what turns each on. */
  disabled: DisabledStage[];
  dataset: DatasetSummary;
  arms: ArmLine[];
  /** Where the training files put the prompts (null before export). */
  placement: Placement | null;
  /** The top latents, by rank. */
  latents: ReportLatent[];
  /** Share of a context's peak at or above which its tokens are highlighted. */
  highlightShare: number;
  /** Synthesized prompts (SAE, LLM audit), each with its source latents and rephrasings. */
  prompts: ReportPrompt[];
  /** The SAE flag rule that made `sae` (null when the flag stage has not run). */
  flagRule: FlagRuleOptions | null;
  sae: FlagSide | null;
  llm: FlagSide | null;
}

export type Placement = "system" | "user_prefix";

export interface DisabledStage {
  stage: string;
  /** What in the config turns it on (`add an \`sae\` section`). */
  enableWith: string;
}

export interface StageLine {
  stage: string;
  status: string;
  rows: number | null;
  seconds: number | null;
}

export interface DatasetSummary {
  rows: number;
  /** Rows with ground truth `has_negative` true; null when the dataset has no ground truth. */
  contaminated: number | null;
}

export interface ArmLine {
  arm: string;
  description: string;
  rows: number;
  /** Which prompt how many rows of the arm carry. */
  prompts: { kind: string; prompt: string | null; rows: number }[];
}

export interface ReportLatent {
  latent: number;
  rank: number;
  meanBase: number;
  meanTarget: number;
  meanDiff: number;
  description: string | null;
  /** null: unlabelled (the classifier failed, or an import carried no label). */
  label: Label | null;
  labelSource: string | null;
  reason: string | null;
  /** Why the description or label is missing. */
  error: string | null;
  /** A few of the strongest contexts, across corpora. */
  contexts: LatentContext[];
}

export interface ReportPrompt {
  /** Who wrote it: `sae` (synthesize) or `llm_audit` (the audit), as `origin` in the `rephrasings` table. */
  source: string;
  text: string;
  /** The latents whose descriptions it was written from (empty for non-SAE prompts). */
  latents: number[];
  rephrasings: string[];
}

/** One flagging method (the SAE rule, or the LLM audit) against ground truth. */
export interface FlagSide {
  /** What to call it on the page: "SAE flags (N=10, M=3)". */
  name: string;
  rows: number;
  flagged: number;
  /** Rows the method gave no verdict on (an LLM answer that never parsed). */
  unjudged: number;
  /** Against ground truth; null without ground truth. */
  evaluation: FlagEvaluation | null;
  /** The curve of its continuous score; null without ground truth or without a score. */
  curve: PrCurve | null;
}
