import type { LlmRoleConfig } from "./endpoint.ts";
import type { TokenUsage } from "./types.ts";

/** What one role did for one stage; lands in the manifest's details (`details.llm.<role>`) and in `status`. */
export interface RoleUsage {
  model: string;
  /** Requests sent by this run (retries not counted). */
  requests: number;
  /** Answers this run took from the cache instead of sending. */
  cache_hits: number;
  retries: number;
  /** Items that failed after their retries. */
  failed: number;
  /** Items whose answers never parsed. */
  unparsed: number;
  /**
   * Tokens of every answer the stage's output rests on, sent now or earlier (cached): the cost of the output,
   * the same however many runs it took.
   */
  input_tokens: number;
  output_tokens: number;
  /** Estimate in USD, when the role's prices are configured. */
  cost_usd?: number;
}

/** Counts one role's calls within one stage. An answer's tokens count once, however many items share it. */
export class UsageMeter {
  private readonly counted = new Set<string>();
  private readonly usage: RoleUsage;

  constructor(private readonly config: LlmRoleConfig) {
    this.usage = { model: config.model, requests: 0, cache_hits: 0, retries: 0, failed: 0, unparsed: 0, input_tokens: 0, output_tokens: 0 };
  }

  /** An answer used by an item; `sent` when this run asked for it, else it came from the cache. */
  answered(key: string, tokens: TokenUsage, sent: boolean): void {
    if (this.counted.has(key)) return;
    this.counted.add(key);
    if (sent) this.usage.requests += 1;
    else this.usage.cache_hits += 1;
    this.usage.input_tokens += tokens.input_tokens;
    this.usage.output_tokens += tokens.output_tokens;
  }

  retried(): void {
    this.usage.retries += 1;
  }

  failed(): void {
    this.usage.failed += 1;
  }

  unparsed(): void {
    this.usage.unparsed += 1;
  }

  summary(): RoleUsage {
    const cost = costUsd(this.usage, this.config);
    return cost === undefined ? { ...this.usage } : { ...this.usage, cost_usd: cost };
  }
}

export function costUsd(tokens: TokenUsage, config: LlmRoleConfig): number | undefined {
  const { price_per_million_input: input, price_per_million_output: output } = config;
  if (input === undefined || output === undefined) return undefined;
  return Math.round(((tokens.input_tokens * input + tokens.output_tokens * output) / 1e6) * 1e6) / 1e6;
}
