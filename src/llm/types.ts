/** The shapes every part of the LLM layer shares. */

export interface ChatMessage {
  role: "system" | "user" | "assistant";
  content: string;
}

/** A JSON schema the answer must follow (OpenAI structured outputs; vLLM guided decoding). */
export interface JsonSchemaFormat {
  type: "json_schema";
  json_schema: { name: string; strict: true; schema: Record<string, unknown> };
}

/**
 * One chat completion request, without the model (the role supplies it). Everything here decides the answer,
 * so all of it goes into the cache key.
 */
export interface LlmRequest {
  messages: ChatMessage[];
  temperature: number;
  max_tokens: number;
  /** Choices per request. */
  n?: number;
  seed?: number;
  response_format?: JsonSchemaFormat;
  /** Asks for the top logprobs of each choice's first token (`logprobs: true, top_logprobs: k`): judges that score by them. */
  top_logprobs?: number;
}

/** One candidate token and its log probability. */
export interface TokenLogprob {
  token: string;
  logprob: number;
}

export interface TokenUsage {
  input_tokens: number;
  output_tokens: number;
}

/** A stored answer: one text per choice. Never an error. */
export interface LlmAnswer {
  texts: string[];
  finish_reasons: string[];
  usage: TokenUsage;
  /** Per choice, the top candidates for its first token; present only when the request asked for `top_logprobs`. */
  first_token_logprobs?: TokenLogprob[][];
}

/** What a stage makes of an answer: a value, or the reason it is not one (the answer is then sampled again). */
export type Parsed<T> = { ok: true; value: T } | { ok: false; error: string };
