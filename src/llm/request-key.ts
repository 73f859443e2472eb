import { canonicalJson, sha256 } from "../util/hash.ts";
import type { LlmRequest } from "./types.ts";

/**
 * The cache key of a request: sha256 of its canonical form (model, messages, sampling parameters, seed,
 * response format), with defaults spelled out so that equal requests always hash equally. `resample` > 0 asks
 * for a fresh sample of the same request (after an answer did not parse); it is not sent, only keyed.
 */
export function requestKey(model: string, request: LlmRequest, resample = 0): string {
  return sha256(
    canonicalJson({
      model,
      messages: request.messages.map((m) => ({ role: m.role, content: m.content })),
      temperature: request.temperature,
      max_tokens: request.max_tokens,
      n: request.n ?? 1,
      seed: request.seed ?? null,
      response_format: request.response_format ?? null,
      // Only when asked for, so the keys of every request without logprobs stay as they were.
      ...(request.top_logprobs !== undefined ? { top_logprobs: request.top_logprobs } : {}),
      ...(resample > 0 ? { resample } : {}),
    }),
  );
}
