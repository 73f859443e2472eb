import type { ResolvedConfig } from "../config/load.ts";
import type { Progress } from "../progress.ts";
import type { DerivedView, RunStore } from "../store/run-store.ts";

export interface StageContext {
  readonly config: ResolvedConfig;
  readonly store: RunStore;
  readonly progress: Progress;
  readonly log: (line: string) => void;
  /** Ask the LLM again rather than reuse stored answers (`--force STAGE --resend`, for the forced stage). */
  readonly resendLlm?: boolean;
}

/** What a finished stage reports; it lands in the manifest and in `status`. */
export interface StageOutcome {
  /** Rows of the stage's main output. */
  rows: number;
  /** Uniform counters (`read`, `kept`, `rejected`, `drawn_negative`, …): they must add up. */
  counts: Record<string, number>;
  details?: Record<string, unknown>;
}

/**
 * One step of the pipeline. A stage is skipped when its fingerprint (its config slice, the files it reads and the
 * fingerprints of the stages it reads from) matches the last finished run and its outputs exist.
 */
export interface Stage {
  readonly name: string;
  readonly description: string;
  /** Bump when the stage's output for the same inputs changes, so old outputs are not reused. */
  readonly version: number;
  /** Stages whose outputs this one reads. */
  readonly after: readonly string[];
  /** Whether the config asks for this stage at all. */
  enabled(config: ResolvedConfig): boolean;
  /** For a stage that can be disabled: what in the config enables it, for the error when one is asked for. */
  readonly enableWith?: string;
  /** The part of the config that decides this stage's output. */
  configSlice(config: ResolvedConfig): unknown;
  /** Files outside the run directory that the stage reads. */
  inputFiles(config: ResolvedConfig): string[];
  /** Paths (relative to the run directory) that must exist for the stage to count as done. */
  outputs(config: ResolvedConfig): string[];
  /**
   * Tables the stage keeps as views over stored tables (read through `store.table` like the others), and views it
   * adds to run.duckdb for users; each comes after those it reads.
   */
  views?(config: ResolvedConfig): readonly DerivedView[];
  run(ctx: StageContext): Promise<StageOutcome>;
}
