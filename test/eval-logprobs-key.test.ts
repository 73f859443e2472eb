import { describe, expect, it } from "vitest";
import { requestKey } from "../src/llm/request-key.ts";
import type { LlmRequest } from "../src/llm/types.ts";
import { canonicalJson, sha256 } from "../src/util/hash.ts";

describe("requestKey with logprobs", () => {
  const request: LlmRequest = { messages: [{ role: "user", content: "Rate: 0-100" }], temperature: 0, max_tokens: 1 };

  it("keys top_logprobs, so a judge call never reuses an answer stored without them", () => {
    expect(requestKey("judge", { ...request, top_logprobs: 20 })).not.toBe(requestKey("judge", request));
    expect(requestKey("judge", { ...request, top_logprobs: 20 })).not.toBe(requestKey("judge", { ...request, top_logprobs: 5 }));
  });

  it("leaves the keys of requests without logprobs as they were (existing caches stay valid)", () => {
    const before = sha256(
      canonicalJson({ model: "judge", messages: request.messages, temperature: 0, max_tokens: 1, n: 1, seed: null, response_format: null }),
    );
    expect(requestKey("judge", request)).toBe(before);
  });
});
