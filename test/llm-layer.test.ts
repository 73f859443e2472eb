import { APIConnectionTimeoutError, BadRequestError, InternalServerError, RateLimitError } from "openai";
import { afterEach, describe, expect, it } from "vitest";
import type { LlmRoleConfig } from "../src/llm/endpoint.ts";
import { LlmEndpoint } from "../src/llm/endpoint.ts";
import { isRetryable, retryAfterS, retryDelayMs } from "../src/llm/retry.ts";
import { LlmSession, reaskFeedback, type LlmItem } from "../src/llm/session.ts";
import type { LlmRequest } from "../src/llm/types.ts";
import { tempDir } from "./helpers.ts";
import { llmConfig, testContext, testRole } from "./llm-fixtures.ts";
import { reasksOf, reply, startLlmServer, type ChatRequestBody, type LlmServer, type LlmServerOptions } from "./llm-server.ts";

const open: { close(): unknown }[] = [];
afterEach(async () => {
  for (const o of open.splice(0).reverse()) await o.close();
});

async function server(options: LlmServerOptions = {}): Promise<LlmServer> {
  const s = await startLlmServer(options);
  open.push(s);
  return s;
}

/** A session for stage "test" over a fresh run, with `judge` set to `role` on the server. */
async function session(s: LlmServer, role: Partial<LlmRoleConfig> = {}, runDir?: string) {
  const config = await llmConfig(await tempDir(), s, { llm: { judge: testRole(s, role) } });
  const ctx = await testContext(runDir ? { ...config, runDir } : config);
  open.push(ctx);
  return { ctx, llm: await LlmSession.open(ctx, "test") };
}

const request = (i: number): LlmRequest => ({ messages: [{ role: "user", content: `Question number ${i}?` }], temperature: 0, max_tokens: 50 });
const body = (i: number): ChatRequestBody => ({ model: "test-model", messages: request(i).messages, temperature: 0, max_tokens: 50 });
const textItems = (count: number, from = 0): LlmItem<string>[] =>
  Array.from({ length: count }, (_, k) => ({ id: `item ${from + k}`, request: request(from + k), parse: (a) => ({ ok: true, value: a.texts[0]! }) }));
const questionOf = (b: ChatRequestBody) => Number(/number (\d+)/.exec(b.messages[0]!.content)![1]);

describe("retries", () => {
  it("retries 429 (waiting retry-after), 500 and timeouts, then answers", async () => {
    const s = await server({
      fault: (b, { seen }) => {
        const q = questionOf(b);
        if (seen > 0) return undefined;
        return q === 0 ? { kind: "rate_limit", retryAfterS: 0.3 } : q === 1 ? { kind: "server_error" } : q === 2 ? { kind: "hang" } : undefined;
      },
    });
    const { llm } = await session(s, { timeout_s: 0.3 });
    const started = performance.now();
    const out = await llm.batch("judge", textItems(4));
    await llm.checkpoint(4);
    expect([...out.values()].map((o) => o.status)).toEqual(["ok", "ok", "ok", "ok"]);
    expect(out.get("item 0")).toEqual({ status: "ok", value: reply(body(0), { seen: 1, index: 0 }) });
    // The 429 said wait 0.3 s; the backoff alone (5 ms) would have come back at once.
    expect(performance.now() - started).toBeGreaterThanOrEqual(300);
    expect(s.stats.requests).toBe(7);
    expect(llm.usage().judge).toMatchObject({ requests: 4, retries: 3, failed: 0, cache_hits: 0 });
  });

  it("gives up after max_retries, stores no answer for the failed item, and names it in one stage error", async () => {
    const s = await server({ fault: (b) => (questionOf(b) % 5 === 0 ? { kind: "server_error" } : undefined) });
    const { ctx, llm } = await session(s, { max_retries: 2 });
    const out = await llm.batch("judge", textItems(10));
    expect(out.get("item 5")).toMatchObject({ status: "failed", error: expect.stringMatching(/HTTP 500/) });
    expect(s.stats.requests).toBe(8 + 2 * 3);
    const error = (await llm.checkpoint(10).catch((e: unknown) => e)) as Error;
    expect(error.message).toMatch(
      /^stage test: 2 of 10 LLM requests failed \(llm\.judge \(test-model at http:\/\/127\.0\.0\.1:\d+\/v1\)\):\n  item 0: HTTP 500: .* \(3 tries\)\n  item 5: HTTP 500/,
    );
    expect(error.message).toMatch(/rerun to send only the failed requests/);
    expect(error.message).not.toMatch(/HTTP 500: 500/); // the status said once
    expect(error.message).toMatch(/or raise llm\.judge\.max_retries\.$/);
    expect(await ctx.store.query("SELECT item, role, tries FROM llm_failures ORDER BY item")).toEqual([
      { item: "item 0", role: "judge", tries: 3 },
      { item: "item 5", role: "judge", tries: 3 },
    ]);
    // Only the 8 answers are stored: an error is never an answer.
    expect(await ctx.store.query("SELECT count(*) AS n FROM llm_cache")).toEqual([{ n: 8 }]);

    // The next run sends only the two that failed, and clears their failure records.
    s.reset();
    s.options.fault = undefined;
    const again = await LlmSession.open(ctx, "test");
    const out2 = await again.batch("judge", textItems(10));
    await again.checkpoint(10);
    expect(s.stats.requests).toBe(2);
    expect([...out2.values()].every((o) => o.status === "ok")).toBe(true);
    expect(await ctx.store.query("SELECT count(*) AS n FROM llm_failures")).toEqual([{ n: 0 }]);
  });

  it("fails at once, without retrying, on errors that are not transient", async () => {
    const s = await server({
      fault: (b) => {
        if (questionOf(b) === 0) return { kind: "http", status: 400, message: "rate limit exceeded (but really a bad request)" };
        return questionOf(b) === 1 ? { kind: "malformed" } : undefined;
      },
    });
    const { llm } = await session(s, { max_retries: 5 });
    const out = await llm.batch("judge", textItems(3));
    expect(out.get("item 0")).toMatchObject({ status: "failed", error: expect.stringMatching(/HTTP 400/) });
    expect(out.get("item 1")).toMatchObject({ status: "failed", error: expect.stringMatching(/without any choices/) });
    expect(out.get("item 2")?.status).toBe("ok");
    expect(s.stats.requests).toBe(3);
    // More retries would not help, so the error does not suggest them.
    const error = (await llm.checkpoint(3).catch((e: unknown) => e)) as Error;
    expect(error.message).toMatch(/Check the endpoint with `inoculant doctor CONFIG`: the server refused these requests, so retrying would not help\.$/);
  });

  it("names a timeout and the setting that governs it", async () => {
    const s = await server({ fault: () => ({ kind: "hang" }) });
    const { llm } = await session(s, { timeout_s: 0.2, max_retries: 1 });
    const out = await llm.batch("judge", textItems(1));
    expect(out.get("item 0")).toEqual({ status: "failed", error: "timed out after 0.2s (llm.judge.timeout_s)" });
    expect(s.stats.requests).toBe(2);
  });

  it("decides by error class, never by message text, and reads retry-after in its three forms", () => {
    const headers = (h: Record<string, string>) => new Headers(h);
    expect(isRetryable(new RateLimitError(429, undefined, "x", headers({})))).toBe(true);
    expect(isRetryable(new InternalServerError(503, undefined, "x", headers({})))).toBe(true);
    expect(isRetryable(new APIConnectionTimeoutError())).toBe(true);
    expect(isRetryable(new BadRequestError(400, undefined, "Rate limit reached, server error, timeout", headers({})))).toBe(false);
    expect(isRetryable(new Error("429 Too Many Requests"))).toBe(false);

    expect(retryAfterS(new RateLimitError(429, undefined, "x", headers({ "retry-after": "2" })))).toBe(2);
    expect(retryAfterS(new RateLimitError(429, undefined, "x", headers({ "retry-after-ms": "250", "retry-after": "9" })))).toBe(0.25);
    const date = new Date(Date.now() + 3000).toUTCString();
    expect(retryAfterS(new RateLimitError(429, undefined, "x", headers({ "retry-after": date })))).toBeGreaterThan(1);
    expect(retryAfterS(new InternalServerError(500, undefined, "x", headers({})))).toBeNull();
    // Without retry-after: exponential backoff with jitter, between half and all of backoff * 2^retry.
    expect(retryDelayMs(new Error(), 3, 1, () => 0)).toBe(4000);
    expect(retryDelayMs(new Error(), 3, 1, () => 1)).toBe(8000);
  });
});

describe("concurrency and the cache", () => {
  it("keeps at most `concurrency` requests in flight, and uses all of them", async () => {
    const s = await server({ latencyMs: 15 });
    const { llm } = await session(s, { concurrency: 5 });
    await llm.batch("judge", textItems(40));
    // The answers are stored in the background: let them land before the store closes.
    await llm.checkpoint(40);
    expect(s.stats.maxInFlight).toBe(5);
    expect(s.stats.requests).toBe(40);
  });

  it("sends identical requests once, and nothing on a second run", async () => {
    const s = await server();
    const { ctx, llm } = await session(s);
    const items = [...textItems(6), { ...textItems(1)[0]!, id: "same as item 0" }];
    const first = await llm.batch("judge", items);
    await llm.checkpoint(items.length);
    expect(s.stats.requests).toBe(6);
    expect(first.get("same as item 0")).toEqual(first.get("item 0"));

    s.reset();
    const rerun = await LlmSession.open(ctx, "test");
    const second = await rerun.batch("judge", items);
    expect(s.stats.requests).toBe(0);
    expect(second).toEqual(first);
    // Token usage is the cost of the answers used, the same on the cached run.
    expect(rerun.usage().judge).toMatchObject({ requests: 0, cache_hits: 6, input_tokens: llm.usage().judge!.input_tokens });
  });

  it("keys the cache on everything that decides the answer", async () => {
    const s = await server();
    const { llm } = await session(s);
    const base = request(1);
    const variants: LlmRequest[] = [base, { ...base, temperature: 0.5 }, { ...base, max_tokens: 51 }, { ...base, seed: 3 }, { ...base, n: 2 }];
    await llm.batch("judge", variants.map((r, i) => ({ id: String(i), request: r, parse: (a) => ({ ok: true, value: a.texts }) })));
    await llm.checkpoint(variants.length);
    expect(s.stats.requests).toBe(variants.length);
  });
});

describe("structured answers", () => {
  const verdict = (i: number): LlmItem<boolean> => ({
    id: `row ${i}`,
    request: request(i),
    parse: (a) => (/^(yes|no)$/.test(a.texts[0]!) ? { ok: true, value: a.texts[0] === "yes" } : { ok: false, error: `not yes/no: ${a.texts[0]}` }),
  });

  it("samples again when an answer does not parse, then records it as unparsed, never as a default label", async () => {
    // Question 0 answers garbage once, question 1 always; the others answer at once.
    const s = await server({ respond: (b, { seen }) => (questionOf(b) === 1 || (questionOf(b) === 0 && seen === 0) ? "Well, it depends." : "yes") });
    const { ctx, llm } = await session(s, { parse_retries: 2 });
    const out = await llm.batch("judge", [0, 1, 2].map(verdict));
    await llm.checkpoint(3);
    expect(out.get("row 0")).toEqual({ status: "ok", value: true });
    expect(out.get("row 1")).toEqual({ status: "unparsed", error: "not yes/no: Well, it depends.", texts: ["Well, it depends."] });
    expect(out.get("row 2")).toEqual({ status: "ok", value: true });
    // 1 + 2 (row 0) + 3 (row 1: the first answer and two more samples) + 1.
    expect(s.stats.requests).toBe(6);
    expect(llm.usage().judge).toMatchObject({ unparsed: 1, failed: 0 });

    // A rerun replays every sample from the cache and reaches the same outcome with no request.
    s.reset();
    const rerun = await LlmSession.open(ctx, "test");
    expect(await rerun.batch("judge", [0, 1, 2].map(verdict))).toEqual(out);
    expect(s.stats.requests).toBe(0);
  });

  it("asks again with the failed answer and what was wrong with it, which a temperature-0 judge can act on", async () => {
    // Deterministic, like a judge at temperature 0: the same request always gets the same answer. Question 0 is
    // answered in the format once it is told what was wrong; question 1 never is.
    const s = await server({ respond: (b) => (questionOf(b) === 0 && reasksOf(b) > 0 ? "yes" : "Well, it depends.") });
    const { ctx, llm } = await session(s, { parse_retries: 2 });
    const withFeedback = (i: number): LlmItem<boolean> => ({ ...verdict(i), reask: "feedback" });
    const out = await llm.batch("judge", [0, 1].map(withFeedback));
    await llm.checkpoint(2);
    expect(out.get("row 0")).toEqual({ status: "ok", value: true });
    expect(out.get("row 1")).toEqual({ status: "unparsed", error: "not yes/no: Well, it depends.", texts: ["Well, it depends."] });
    const bodies = s.stats.answeredBodies.map((k) => JSON.parse(k) as ChatRequestBody);
    expect(bodies.every((b) => b.temperature === 0)).toBe(true);
    const sent = bodies.filter((b) => questionOf(b) === 1).map((b) => b.messages);
    const correction = { role: "user", content: reaskFeedback("not yes/no: Well, it depends.") };
    const answered = { role: "assistant", content: "Well, it depends." };
    expect(sent).toEqual([request(1).messages, [...request(1).messages, answered, correction], [...request(1).messages, answered, correction, answered, correction]]);
    expect(s.stats.requests).toBe(2 + 3);

    // The same request resampled gets the same answer from this judge: the default re-ask would not help.
    const resampled = await llm.batch("judge", [verdict(0)]);
    // Its answers are written in the background: wait for them before the store closes.
    await llm.checkpoint(1);
    expect(resampled.get("row 0")).toMatchObject({ status: "unparsed" });

    // Every re-ask was stored under its own conversation: a rerun sends nothing.
    s.reset();
    const rerun = await LlmSession.open(ctx, "test");
    expect(await rerun.batch("judge", [0, 1].map(withFeedback))).toEqual(out);
    expect(s.stats.requests).toBe(0);
  });
});

describe("keys", () => {
  it("reads the key from the environment variable the config names, and sends it", async () => {
    const s = await server({ apiKey: "sk-from-env" });
    const role = testRole(s, { api_key_env: "INOCULANT_TEST_KEY_A" });
    expect(() => new LlmEndpoint("judge", role, {})).toThrow(/llm\.judge\.api_key_env: the environment variable INOCULANT_TEST_KEY_A is not set/);
    const endpoint = new LlmEndpoint("judge", role, { INOCULANT_TEST_KEY_A: "sk-from-env" });
    await endpoint.send(request(0));
    expect(s.stats.authorization).toEqual(new Set(["Bearer sk-from-env"]));
  });

  it("redacts the key from errors that echo it", async () => {
    const key = "sk-echo-me-123456";
    const s = await server({ fault: () => ({ kind: "http", status: 400, message: `bad key ${key}` }) });
    const endpoint = new LlmEndpoint("judge", testRole(s, { api_key_env: "K" }), { K: key });
    const error = (await endpoint.send(request(0)).catch((e: unknown) => e)) as Error;
    expect(error.message).toContain("bad key [redacted]");
    expect(error.message).not.toContain(key);
  });
});

describe("the HTTP transport", () => {
  it("undoes a content-encoding the server applies unasked, and passes status and headers through", async () => {
    const { createServer } = await import("node:http");
    const { gzipSync } = await import("node:zlib");
    const { httpFetch } = await import("../src/llm/http-fetch.ts");
    const http = createServer((req, res) => {
      res.writeHead(429, { "content-type": "application/json", "content-encoding": "gzip", "retry-after": "3" });
      res.end(gzipSync(JSON.stringify({ method: req.method, encoding: req.headers["accept-encoding"] ?? null })));
    });
    await new Promise<void>((resolve) => http.listen(0, "127.0.0.1", resolve));
    open.push({ close: () => new Promise((resolve) => http.close(resolve)) });
    const { port } = http.address() as { port: number };
    const response = await httpFetch(2)(`http://127.0.0.1:${port}/x`, { method: "POST", body: "{}" });
    expect(response.status).toBe(429);
    expect(response.headers.get("retry-after")).toBe("3");
    expect(await response.json()).toEqual({ method: "POST", encoding: null });
  });
});
