import type { LlmRoleName } from "../config/llm-schema.ts";
import { StageError } from "../errors.ts";
import type { ProgressTask } from "../progress.ts";
import type { RunStore } from "../store/run-store.ts";
import { sqlString } from "../store/sql.ts";
import { LlmCache } from "./cache.ts";
import { LlmCallError, LlmEndpoint, type LlmRoleConfig } from "./endpoint.ts";
import { requestKey } from "./request-key.ts";
import { UsageMeter, type RoleUsage } from "./usage.ts";
import type { LlmAnswer, LlmRequest, Parsed } from "./types.ts";

/**
 * What a session needs from its caller: the roles' endpoints and the run's store. A pipeline stage passes its
 * StageContext; `inoculant eval` passes one per model under test, with that model as the generator.
 */
export interface LlmSessionContext {
  readonly config: { readonly llm: Readonly<Partial<Record<LlmRoleName, LlmRoleConfig>>> };
  readonly store: RunStore;
  /** Send every request again, storing the new answers over the old (`--force STAGE --resend`). */
  readonly resendLlm?: boolean;
}

export interface LlmSessionOptions {
  /**
   * Answer from stored answers alone and send nothing; an item without one fails, saying so (for recomputing
   * results from what a run already paid for).
   */
  cacheOnly?: boolean;
  /**
   * Key stored answers by endpoint and model, not model alone: where two servers serve different weights under
   * one name (two fine-tuned arms, each `vllm serve … --served-model-name qwen`), their answers must not mix.
   */
  keyByEndpoint?: boolean;
  /**
   * What the error of a failed checkpoint tells the user to check first (default: `inoculant doctor CONFIG`);
   * whether more retries could help is added to it.
   */
  check?: string;
  /** The config key of each role, for advice (default `llm.<role>`; an eval's models and judge live elsewhere). */
  roleKeys?: Partial<Record<LlmRoleName, string>>;
}

/** How many failed items a stage's error quotes. */
const QUOTED_FAILURES = 5;

/** One unit of LLM work: a request, and how its answer becomes the item's value. */
export interface LlmItem<T> {
  /** Names the item in results and errors (a row id, a row id and turn, a prompt's origin). */
  readonly id: string;
  readonly request: LlmRequest;
  readonly parse: (answer: LlmAnswer) => Parsed<T>;
  /**
   * How an answer that does not parse is asked again. `resample` (default) sends the same request for a fresh
   * sample: right where the answer must be the model's own reply to the prompt (base responses, an eval's
   * answers). `feedback` adds the answer and what was wrong with it to the conversation and asks again, which
   * also works at temperature 0, where a fresh sample of the same request is usually the same answer. `none`:
   * the answer is taken as it is, for failures no new answer can fix (a server that ignores `n`, a judge that
   * sends no logprobs), which would only pay `parse_retries` times for the same result.
   */
  readonly reask?: "resample" | "feedback" | "none";
}

/** The user turn a `feedback` re-ask adds after an answer that did not parse. */
export function reaskFeedback(error: string): string {
  return `That reply could not be used: ${error}. Answer the request above again, in exactly the format it asks for.`;
}

/**
 * The request of the next try after `answer` failed to parse with `error`, and whether it is a fresh sample of
 * the same request (keyed by its try number) rather than a request of its own.
 */
function nextTry(item: LlmItem<unknown>, sent: LlmRequest, answer: LlmAnswer, error: string): { request: LlmRequest; resample: boolean } {
  // With several choices there is no one answer to correct.
  if (item.reask !== "feedback" || answer.texts.length !== 1) return { request: item.request, resample: true };
  const messages = [...sent.messages, { role: "assistant" as const, content: answer.texts[0]! }, { role: "user" as const, content: reaskFeedback(error) }];
  return { request: { ...sent, messages }, resample: false };
}

export type ItemOutcome<T> =
  | { status: "ok"; value: T }
  /** Every sample failed to parse: the last error and texts, kept for people to read. */
  | { status: "unparsed"; error: string; texts: string[] }
  | { status: "failed"; error: string };

interface Failure {
  role: LlmRoleName;
  item: string;
  error: string;
  tries: number;
  retryable: boolean;
}

/**
 * The LLM layer as a stage sees it: one endpoint per role, the run's request cache, usage per role, and the
 * failures of this stage run. A stage runs batches of items, then `checkpoint()`s: answers are all stored, and
 * items that failed are recorded in `llm_failures` and reported in one StageError. Because every answer is in
 * the cache, the next run sends only what failed or was never sent.
 */
export class LlmSession {
  private readonly endpoints = new Map<LlmRoleName, LlmEndpoint>();
  private readonly meters = new Map<LlmRoleName, UsageMeter>();
  private readonly failures: Failure[] = [];

  private constructor(
    private readonly ctx: LlmSessionContext,
    readonly stage: string,
    private readonly cache: LlmCache,
    private readonly options: LlmSessionOptions,
  ) {}

  static async open(ctx: LlmSessionContext, stage: string, options: LlmSessionOptions = {}): Promise<LlmSession> {
    const cache = await LlmCache.open(ctx.store);
    await ensureFailuresTable(ctx.store);
    // This run's failures replace the last run's: an item that now succeeds is no longer failed.
    await ctx.store.run(`DELETE FROM llm_failures WHERE stage = ${sqlString(stage)}`);
    return new LlmSession(ctx, stage, cache, options);
  }

  endpoint(role: LlmRoleName): LlmEndpoint {
    let endpoint = this.endpoints.get(role);
    if (!endpoint) {
      const config = this.ctx.config.llm[role];
      if (!config) throw new StageError(this.stage, `needs llm.${role}; add it to the config`);
      // A session that sends nothing needs no key: rescoring stored answers works without one.
      endpoint = new LlmEndpoint(role, config, process.env, { keyRequired: !this.options.cacheOnly });
      this.endpoints.set(role, endpoint);
      this.meters.set(role, new UsageMeter(config));
    }
    return endpoint;
  }

  /**
   * Answers every item through `role`: stored answers first, then requests for the rest, at most the role's
   * concurrency at once. Identical requests are sent once. An answer that does not parse is asked again (see
   * `LlmItem.reask`) up to `parse_retries` times, then the item is `unparsed`; an item whose request fails for
   * good is `failed`.
   */
  async batch<T>(role: LlmRoleName, items: readonly LlmItem<T>[], task?: ProgressTask): Promise<Map<string, ItemOutcome<T>>> {
    // Nothing to ask: the role's endpoint (and its key) is not needed.
    if (items.length === 0) return new Map();
    const endpoint = this.endpoint(role);
    const meter = this.meters.get(role)!;
    const keyed = this.cacheModel(endpoint);
    const model = endpoint.config.model;
    const firstKeys = items.map((item) => requestKey(keyed, item.request));
    const stored = this.ctx.resendLlm ? new Map<string, LlmAnswer>() : await this.cache.getMany([...new Set(firstKeys)]);
    const inFlight = new Map<string, Promise<LlmAnswer>>();

    // First tries' keys were looked up in one query above; a re-ask's key is looked up on its own.
    const answer = async (key: string, request: LlmRequest, attempt: number): Promise<LlmAnswer> => {
      const hit = stored.get(key) ?? (attempt > 0 && !this.ctx.resendLlm ? await this.cache.get(key) : undefined);
      if (hit) {
        meter.answered(key, hit.usage, false);
        return hit;
      }
      if (this.options.cacheOnly) throw new LlmCallError("no stored answer, and this run sends no requests", 0, false);
      let pending = inFlight.get(key);
      if (!pending) {
        pending = endpoint.send(request, () => meter.retried()).then((fresh) => {
          this.cache.put({ key, model, stage: this.stage, answer: fresh });
          meter.answered(key, fresh.usage, true);
          return fresh;
        });
        inFlight.set(key, pending);
      }
      return pending;
    };

    const failed = new Map<string, Failure>();
    const answerItem = async (item: LlmItem<T>, firstKey: string): Promise<ItemOutcome<T>> => {
      let last = { error: "", texts: [] as string[] };
      let next = { request: item.request, resample: false };
      const tries = item.reask === "none" ? 1 : 1 + endpoint.config.parse_retries;
      try {
        for (let attempt = 0; attempt < tries; attempt += 1) {
          const key = attempt === 0 ? firstKey : requestKey(keyed, next.request, next.resample ? attempt : 0);
          const got = await answer(key, next.request, attempt);
          const parsed = item.parse(got);
          if (parsed.ok) return { status: "ok", value: parsed.value };
          last = { error: parsed.error, texts: got.texts };
          next = nextTry(item, next.request, got, parsed.error);
        }
      } catch (error) {
        if (!(error instanceof LlmCallError)) throw error;
        meter.failed();
        failed.set(item.id, { role, item: item.id, error: error.message, tries: error.tries, retryable: error.retryable });
        return { status: "failed", error: error.message };
      }
      meter.unparsed();
      return { status: "unparsed", ...last };
    };

    const outcomes = new Map<string, ItemOutcome<T>>();
    let done = 0;
    task?.update(0, items.length);
    await Promise.all(
      items.map(async (item, index) => {
        outcomes.set(item.id, await answerItem(item, firstKeys[index]!));
        task?.update(++done);
      }),
    );
    task?.finish();
    // In the items' order, not the order they failed in, so the stage's error reads the same on every run.
    for (const item of items) {
      const failure = failed.get(item.id);
      if (failure) this.failures.push(failure);
    }
    return outcomes;
  }

  /** The distinct requests among `items` that have no stored answer: what `batch` is about to send, re-asks aside. */
  async unsent(role: LlmRoleName, items: readonly LlmItem<unknown>[]): Promise<LlmRequest[]> {
    if (items.length === 0) return [];
    const keyed = this.cacheModel(this.endpoint(role));
    const byKey = new Map(items.map((item) => [requestKey(keyed, item.request), item.request]));
    const stored = this.ctx.resendLlm ? new Map() : await this.cache.getMany([...byKey.keys()]);
    return [...byKey].filter(([key]) => !stored.has(key)).map(([, request]) => request);
  }

  /** What stored answers are keyed by besides the request: the model, and with keyByEndpoint its endpoint. */
  private cacheModel(endpoint: LlmEndpoint): string {
    const model = endpoint.config.model;
    return this.options.keyByEndpoint ? `${endpoint.config.base_url ?? "(default endpoint)"} ${model}` : model;
  }

  /**
   * Waits until every answer is stored; then, when items failed, records them in `llm_failures` and throws a
   * StageError that says how many, why (the first few), and what the next run will do.
   */
  async checkpoint(total: number): Promise<void> {
    await this.cache.flush();
    if (this.failures.length === 0) return;
    await recordFailures(this.ctx.store, this.stage, this.failures);
    const roles = [...new Set(this.failures.map((f) => f.role))];
    const quoted = this.failures.slice(0, QUOTED_FAILURES).map((f) => `  ${f.item}: ${f.error} (${f.tries} ${f.tries === 1 ? "try" : "tries"})`);
    const rest = this.failures.length - QUOTED_FAILURES;
    const more = rest > 0 ? `\n  … and ${rest} more (table llm_failures in run.duckdb)` : "";
    const where = roles.map((r) => this.endpoints.get(r)!.label).join(", ");
    throw new StageError(
      this.stage,
      `${this.failures.length} of ${total} LLM requests failed (${where}):\n${quoted.join("\n")}${more}\n` +
        `Every answer that arrived is stored; rerun to send only the failed requests. ` +
        this.fix(roles),
    );
  }

  /** More retries help with transient errors only; a refusal (a 401, a 404 for the model) needs the endpoint fixed. */
  private fix(roles: readonly LlmRoleName[]): string {
    const check = this.options.check ?? "Check the endpoint with `inoculant doctor CONFIG`";
    if (!this.failures.some((f) => f.retryable)) return `${check}: the server refused these requests, so retrying would not help.`;
    const keys = roles.map((r) => `${this.options.roleKeys?.[r] ?? `llm.${r}`}.max_retries`);
    return `${check}, or raise ${keys.join(" / ")}.`;
  }

  /** Usage by role, for the stage's details. */
  usage(): Partial<Record<LlmRoleName, RoleUsage>> {
    return Object.fromEntries([...this.meters].map(([role, meter]) => [role, meter.summary()]));
  }
}

async function ensureFailuresTable(store: RunStore): Promise<void> {
  await store.run(`CREATE TABLE IF NOT EXISTS llm_failures (
    stage VARCHAR NOT NULL, role VARCHAR NOT NULL, item VARCHAR NOT NULL, error VARCHAR NOT NULL, tries INTEGER NOT NULL,
    failed_at TIMESTAMP NOT NULL)`);
  await store.checkpoint();
}

async function recordFailures(store: RunStore, stage: string, failures: readonly Failure[]): Promise<void> {
  const values = failures.map(
    (f) => `(${sqlString(stage)}, ${sqlString(f.role)}, ${sqlString(f.item)}, ${sqlString(f.error)}, ${f.tries}, current_timestamp)`,
  );
  await store.run(`INSERT INTO llm_failures VALUES ${values.join(", ")}`);
}
