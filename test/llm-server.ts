import { createHash } from "node:crypto";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { canonicalJson } from "../src/util/hash.ts";

/**
 * A local OpenAI-compatible server for tests and benchmarks: `/v1/chat/completions` answers deterministically
 * from the request, `/v1/models` lists the models. Latency and faults (429 with retry-after, 500, hangs that
 * time out, malformed bodies, any status) are injected per request, deterministically from the request and how
 * many times the same request came before.
 */

export interface ChatRequestBody {
  model: string;
  messages: { role: string; content: string }[];
  temperature?: number;
  max_tokens?: number;
  n?: number;
  seed?: number;
  response_format?: { type: string; json_schema?: { name: string; schema: unknown } };
  logprobs?: boolean;
  top_logprobs?: number;
}

export type Fault =
  | { kind: "rate_limit"; retryAfterS?: number }
  | { kind: "server_error" }
  /** Never answers: the client's timeout fires. */
  | { kind: "hang" }
  /** 200 with a JSON body that is not a chat completion. */
  | { kind: "malformed" }
  | { kind: "http"; status: number; message: string };

export interface RequestInfo {
  /** How many times this exact request arrived before (0 the first time). */
  seen: number;
  /** The choice being written (0 … n-1). */
  index: number;
}

export interface LlmServerOptions {
  latencyMs?: number;
  models?: string[];
  /** The text of one choice; default: `reply()`. */
  respond?: (body: ChatRequestBody, info: RequestInfo) => string;
  /**
   * The top candidates of a choice's first token, sent when the request asks for logprobs (cut to its
   * `top_logprobs`); default: the choice's first word with logprob 0.
   */
  logprobs?: (body: ChatRequestBody, info: RequestInfo) => { token: string; logprob: number }[];
  /** Like servers that ignore `n`: one choice per request, whatever was asked. */
  ignoresN?: boolean;
  /** Like servers without logprob support: `logprobs: null` even when asked for. */
  noLogprobs?: boolean;
  /** A choice's finish_reason (default "stop"; "length" for an answer cut at max_tokens). */
  finishReason?: (body: ChatRequestBody, info: RequestInfo) => string;
  fault?: (body: ChatRequestBody, info: { seen: number }) => Fault | undefined;
  /** When set, every request must carry `Authorization: Bearer <apiKey>` (else 401). */
  apiKey?: string;
}

export interface LlmServerStats {
  /** Chat requests received (faulty ones included). */
  requests: number;
  /** Chat requests answered 200 with a completion. */
  answered: number;
  inFlight: number;
  maxInFlight: number;
  /** Per request body (canonical JSON), how many times it arrived. */
  seen: Map<string, number>;
  /** Bodies answered 200, in order. */
  answeredBodies: string[];
  authorization: Set<string>;
}

export interface LlmServer {
  /** Base URL for the OpenAI client, ending in /v1. */
  readonly url: string;
  readonly stats: LlmServerStats;
  options: LlmServerOptions;
  /** Called after each answered request with the running count. */
  onAnswered?: (answered: number) => void;
  /** Forgets what it saw (stats), keeping options. */
  reset(): void;
  close(): Promise<void>;
}

/** The default answer: names the last user turn and a hash of the request, so equal requests answer equally. */
/**
 * The request's own last user turn. A `feedback` re-ask appends the failed answer and a correction after it, and
 * the prompt templates hold no assistant turns, so that turn is the last user one before the first assistant one.
 */
export function taskOf(body: ChatRequestBody): string {
  const firstAnswer = body.messages.findIndex((m) => m.role === "assistant");
  const own = firstAnswer < 0 ? body.messages : body.messages.slice(0, firstAnswer);
  return [...own].reverse().find((m) => m.role === "user")?.content ?? "";
}

/** How many times this request was asked again with feedback (the failed answers it carries). */
export function reasksOf(body: ChatRequestBody): number {
  return body.messages.filter((m) => m.role === "assistant").length;
}

export function reply(body: ChatRequestBody, info: RequestInfo): string {
  const lastUser = [...body.messages].reverse().find((m) => m.role === "user")?.content ?? "";
  const digest = createHash("sha256").update(canonicalJson({ m: body.messages, t: body.temperature, s: body.seed })).digest("hex").slice(0, 8);
  return `Answer to "${lastUser.slice(0, 60)}" [${digest}]${info.index > 0 ? ` #${info.index}` : ""}`;
}

const words = (text: string) => text.split(/\s+/).filter(Boolean).length;

export async function startLlmServer(options: LlmServerOptions = {}): Promise<LlmServer> {
  const fresh = (): LlmServerStats => ({
    requests: 0,
    answered: 0,
    inFlight: 0,
    maxInFlight: 0,
    seen: new Map(),
    answeredBodies: [],
    authorization: new Set(),
  });
  const state: { stats: LlmServerStats } = { stats: fresh() };
  let server: LlmServer;

  const handle = async (req: IncomingMessage, res: ServerResponse) => {
    const stats = state.stats;
    const opts = server.options;
    const auth = req.headers.authorization ?? "";
    stats.authorization.add(auth);
    if (opts.apiKey !== undefined && auth !== `Bearer ${opts.apiKey}`) {
      return json(res, 401, { error: { message: "Incorrect API key provided.", type: "invalid_request_error", code: "invalid_api_key" } });
    }
    if (req.method === "GET" && req.url === "/v1/models") {
      return json(res, 200, { object: "list", data: (opts.models ?? ["test-model"]).map((id) => ({ id, object: "model", created: 0, owned_by: "test" })) });
    }
    if (req.method !== "POST" || req.url !== "/v1/chat/completions") return json(res, 404, { error: { message: `no route ${req.method} ${req.url}` } });

    const body = JSON.parse(await readBody(req)) as ChatRequestBody;
    const key = canonicalJson(body);
    const seen = stats.seen.get(key) ?? 0;
    stats.seen.set(key, seen + 1);
    stats.requests += 1;
    stats.inFlight += 1;
    stats.maxInFlight = Math.max(stats.maxInFlight, stats.inFlight);
    try {
      const fault = opts.fault?.(body, { seen });
      if (fault?.kind === "hang") {
        // Hold the request until the client gives up and closes the socket.
        await new Promise<void>((resolve) => res.on("close", resolve));
        return;
      }
      if (opts.latencyMs) await new Promise((r) => setTimeout(r, opts.latencyMs));
      if (!models(opts).includes(body.model)) return json(res, 404, { error: { message: `The model ${body.model} does not exist`, code: "model_not_found" } });
      switch (fault?.kind) {
        case "rate_limit":
          return json(
            res,
            429,
            { error: { message: "Rate limit reached", type: "requests" } },
            fault.retryAfterS !== undefined ? { "retry-after": String(fault.retryAfterS) } : {},
          );
        case "server_error":
          return json(res, 500, { error: { message: "The server had an error while processing your request." } });
        case "malformed":
          return json(res, 200, { id: "broken", object: "chat.completion" });
        case "http":
          return json(res, fault.status, { error: { message: fault.message } });
      }
      const n = opts.ignoresN ? 1 : (body.n ?? 1);
      const texts = Array.from({ length: n }, (_, index) => (opts.respond ?? reply)(body, { seen, index }));
      const inputTokens = body.messages.reduce((sum, m) => sum + words(m.content), 0);
      await json(res, 200, {
        id: `chatcmpl-${stats.requests}`,
        object: "chat.completion",
        created: 0,
        model: body.model,
        choices: texts.map((content, index) => ({
          index,
          message: { role: "assistant", content },
          finish_reason: opts.finishReason?.(body, { seen, index }) ?? "stop",
          logprobs: body.logprobs && !opts.noLogprobs ? { content: [firstToken(body, { seen, index }, content, opts)] } : null,
        })),
        usage: { prompt_tokens: inputTokens * n, completion_tokens: texts.reduce((s, t) => s + words(t), 0), total_tokens: 0 },
      });
      stats.answered += 1;
      stats.answeredBodies.push(key);
      server.onAnswered?.(stats.answered);
    } finally {
      stats.inFlight -= 1;
    }
  };

  const http = createServer((req, res) => {
    handle(req, res).catch((error: unknown) => {
      if (!res.headersSent) res.writeHead(500);
      res.end(String(error));
    });
  });
  // Many concurrent clients in the benchmark: do not let the default backlog or keep-alive get in the way.
  http.keepAliveTimeout = 60_000;
  await new Promise<void>((resolve) => http.listen(0, "127.0.0.1", resolve));
  const port = (http.address() as AddressInfo).port;
  server = {
    url: `http://127.0.0.1:${port}/v1`,
    get stats() {
      return state.stats;
    },
    options,
    reset: () => {
      state.stats = fresh();
    },
    close: () =>
      new Promise<void>((resolve) => {
        http.closeAllConnections();
        http.close(() => resolve());
      }),
  };
  return server;
}

function firstToken(body: ChatRequestBody, info: RequestInfo, content: string, opts: LlmServerOptions) {
  const top = (opts.logprobs?.(body, info) ?? [{ token: content.split(/\s+/)[0] ?? "", logprob: 0 }]).slice(0, body.top_logprobs ?? 0);
  const first = top[0] ?? { token: "", logprob: 0 };
  return { token: first.token, logprob: first.logprob, bytes: null, top_logprobs: top.map((t) => ({ ...t, bytes: null })) };
}

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on("data", (chunk: Buffer) => chunks.push(chunk));
    req.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")));
    req.on("error", reject);
  });
}

function models(options: LlmServerOptions): string[] {
  return options.models ?? ["test-model"];
}

function json(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): Promise<void> {
  return new Promise((resolve) => {
    res.writeHead(status, { "content-type": "application/json", ...headers });
    res.end(JSON.stringify(body), () => resolve());
  });
}
