import type { ChatMessage, Parsed } from "../llm/types.ts";

/**
 * A wanted trait A that `mix` injects into every assistant turn. A trait either rewrites text in SQL (fast,
 * runs inside DuckDB over millions of rows) or, for traits that need an LLM, turn by turn through the LLM layer.
 */
export type PositiveTrait = SqlTrait | LlmTrait;

interface TraitText {
  readonly name: string;
  /** The text of trait A: the audit and later stages judge rows and latents against it. */
  readonly description: string;
}

export interface SqlTrait extends TraitText {
  readonly kind: "sql";
  /**
   * SQL expression that rewrites one assistant turn. `content` is a SQL expression of type VARCHAR.
   * The same input must always give the same output (exports are byte-identical across runs).
   */
  sqlTransform(content: string): string;
}

/** One assistant turn to rewrite, with the user turn it answers. */
export interface TurnToRewrite {
  readonly question: string;
  readonly answer: string;
}

export interface LlmTrait extends TraitText {
  readonly kind: "llm";
  /** The prompt template files the rewrite reads (a stage input: editing one reruns mix). */
  readonly inputFiles: readonly string[];
  /** The messages that ask for the rewrite; the same turn always gives the same messages (so it is cached). */
  rewriteMessages(turn: TurnToRewrite): ChatMessage[];
  /** The rewritten turn from an answer, or why the answer is unusable (it is then sampled again). */
  parseRewrite(text: string, turn: TurnToRewrite): Parsed<string>;
}
