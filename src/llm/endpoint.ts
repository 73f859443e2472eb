import { setTimeout as sleep } from "node:timers/promises";
import OpenAI, { APIConnectionError, APIConnectionTimeoutError, APIError } from "openai";
import type { z } from "zod";
import type { llmRoleSchema, LlmRoleName } from "../config/llm-schema.ts";
import { UserError } from "../errors.ts";
import { httpFetch } from "./http-fetch.ts";
import { Limiter } from "./limiter.ts";
import { isRetryable, retryDelayMs } from "./retry.ts";
import type { LlmAnswer, LlmRequest } from "./types.ts";

export type LlmRoleConfig = z.infer<typeof llmRoleSchema>;

/** A 200 answer that is not a chat completion: a broken server or proxy. Not retried (it is not transient). */
export class MalformedAnswerError extends Error {
  override readonly name = "MalformedAnswerError";
}

/** A request that failed for good: its last error, described without the key, and how many tries it took. */
export class LlmCallError extends Error {
  override readonly name = "LlmCallError";
  constructor(
    message: string,
    readonly tries: number,
    /** Whether more tries could have helped (a transient error), as opposed to a refusal such as a 401. */
    readonly retryable: boolean,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/**
 * One configured role (`llm.generator`, `llm.judge`): an OpenAI client for its endpoint, its concurrency limit,
 * and the retry policy. The key is read from the environment here, when calls are about to be made, and only
 * the client holds it.
 */
export class LlmEndpoint {
  private readonly limiter: Limiter;
  private readonly client: OpenAI;
  private readonly key: string | null;

  constructor(
    readonly role: LlmRoleName,
    readonly config: LlmRoleConfig,
    env: NodeJS.ProcessEnv = process.env,
    /** false for an endpoint that will send nothing (answers from the cache alone): a missing key is no error. */
    { keyRequired = true }: { keyRequired?: boolean } = {},
  ) {
    this.key = keyRequired ? roleKey(role, config, env) : config.api_key_env === undefined ? null : (env[config.api_key_env] || null);
    this.limiter = new Limiter(config.concurrency);
    this.client = new OpenAI({
      // The client insists on a key; a keyless local server ignores the placeholder.
      apiKey: this.key ?? "no-key",
      baseURL: config.base_url,
      timeout: config.timeout_s * 1000,
      // Retries are ours: by error class, with the role's policy, outside the concurrency slot.
      maxRetries: 0,
      fetch: httpFetch(config.concurrency),
    });
  }

  /** `llm.judge (gpt-4.1-mini at https://…)`: how errors name the endpoint. */
  get label(): string {
    return `llm.${this.role} (${this.config.model} at ${this.config.base_url})`;
  }

  /** Removes the key from text that is about to be shown or stored (a server may echo it in an error). */
  redact(text: string): string {
    return this.key ? text.replaceAll(this.key, "[redacted]") : text;
  }

  /**
   * Sends a request, retrying transient failures with backoff; `onRetry` hears of each retry. Holds a
   * concurrency slot only while a request is in flight, not while it waits to retry.
   */
  async send(request: LlmRequest, onRetry?: (error: unknown) => void): Promise<LlmAnswer> {
    for (let retry = 0; ; retry += 1) {
      try {
        return await this.limiter.run(() => this.complete(request));
      } catch (error) {
        if (!isRetryable(error) || retry >= this.config.max_retries) {
          throw new LlmCallError(this.redact(describeError(error, this.role, this.config)), retry + 1, isRetryable(error), { cause: error });
        }
        onRetry?.(error);
        await sleep(retryDelayMs(error, retry, this.config.backoff_s));
      }
    }
  }

  /** One request, no retry. */
  private async complete(request: LlmRequest): Promise<LlmAnswer> {
    const response = await this.client.chat.completions.create({
      model: this.config.model,
      messages: request.messages,
      temperature: request.temperature,
      max_tokens: request.max_tokens,
      ...(request.n !== undefined && request.n !== 1 ? { n: request.n } : {}),
      ...(request.seed !== undefined ? { seed: request.seed } : {}),
      ...(request.response_format ? { response_format: request.response_format } : {}),
      ...(request.top_logprobs !== undefined ? { logprobs: true, top_logprobs: request.top_logprobs } : {}),
    });
    const choices = (response as { choices?: unknown }).choices;
    if (!Array.isArray(choices) || choices.length === 0) {
      throw new MalformedAnswerError("the server answered 200 without any choices: not an OpenAI-compatible chat completion");
    }
    const sorted = [...response.choices].sort((a, b) => a.index - b.index);
    return {
      // A refusal (structured outputs) or a tool call has no content: an empty text, which no parser accepts.
      texts: sorted.map((c) => c.message?.content ?? ""),
      finish_reasons: sorted.map((c) => String(c.finish_reason ?? "")),
      usage: { input_tokens: response.usage?.prompt_tokens ?? 0, output_tokens: response.usage?.completion_tokens ?? 0 },
      ...(request.top_logprobs !== undefined
        ? {
            first_token_logprobs: sorted.map((c) =>
              (c.logprobs?.content?.[0]?.top_logprobs ?? []).map((t) => ({ token: t.token, logprob: t.logprob })),
            ),
          }
        : {}),
    };
  }

  /** The model ids the endpoint serves (`GET /models`). */
  async listModels(): Promise<string[]> {
    const ids: string[] = [];
    for await (const model of this.client.models.list()) ids.push(model.id);
    return ids;
  }
}

/** The role's key from the environment; a missing one is the user's to fix before any call is made. */
function roleKey(role: LlmRoleName, config: LlmRoleConfig, env: NodeJS.ProcessEnv): string | null {
  if (config.api_key_env === undefined) return null;
  const key = env[config.api_key_env];
  if (!key) throw new UserError(missingKeys([{ key: `llm.${role}.api_key_env`, variable: config.api_key_env }]));
  return key;
}

/** The error for keys whose environment variables are not set, each named by the config key that asks for it. */
export function missingKeys(missing: readonly { key: string; variable: string }[]): string {
  const lines = missing.map((m) => `${m.key}: the environment variable ${m.variable} is not set`);
  const exports = [...new Set(missing.map((m) => `${m.variable}=<your key>`))].join(" ");
  return `${lines.join("; ")}; export ${exports} (keys never go in the config)`;
}

/** A short description of why a request failed, by error class. */
/** The messages of an error's causes, innermost last: "fetch failed" alone does not say ECONNREFUSED. */
function causes(error: Error): string {
  const parts: string[] = [];
  for (let cause = error.cause; cause instanceof Error && parts.length < 4; cause = cause.cause) parts.push(cause.message);
  return parts.length > 0 ? `: ${parts.join(": ")}` : "";
}

export function describeError(error: unknown, role: LlmRoleName, config: LlmRoleConfig): string {
  if (error instanceof APIConnectionTimeoutError) return `timed out after ${config.timeout_s}s (llm.${role}.timeout_s)`;
  if (error instanceof APIConnectionError) return `cannot connect to ${config.base_url}${causes(error)}`;
  if (error instanceof APIError) {
    // The library's message already starts with the status ("500 …"): say it once.
    const message = error.status !== undefined ? error.message.replace(new RegExp(`^${error.status}\\s*`), "") : error.message;
    return `HTTP ${error.status ?? "?"}: ${message || "(no message)"}`;
  }
  if (error instanceof Error) return `${error.name}: ${error.message}`;
  return String(error);
}
