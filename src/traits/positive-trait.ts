/**
 * A wanted trait A that `mix` injects into every assistant turn. A trait either rewrites text in SQL (fast,
 * runs inside DuckDB over millions of rows) or, for traits that need an LLM, row by row (the LLM layer).
 */
export interface PositiveTrait {
  readonly name: string;
  /** The text of trait A: later stages classify latents against it. */
  readonly description: string;
  /**
   * SQL expression that rewrites one assistant turn. `content` is a SQL expression of type VARCHAR.
   * The same input must always give the same output (exports are byte-identical across runs).
   */
  sqlTransform(content: string): string;
}
