/** The programmatic API: the CLI is a thin layer over these. */
export { loadConfig, resolveConfig, type ResolvedConfig } from "./config/load.ts";
export { runPipeline, runStatus, type PipelineSummary, type RunOptions } from "./pipeline/runner.ts";
export { STAGES, stageNames } from "./pipeline/stages.ts";
export { UserError, StageError } from "./errors.ts";
