import { setTimeout as sleep } from "node:timers/promises";
import type { RunStore } from "../store/run-store.ts";
import { sqlString, sqlStringList } from "../store/sql.ts";
import type { LlmAnswer } from "./types.ts";

/** Keys per lookup query (keeps each statement's text well under a megabyte). */
const LOOKUP_CHUNK = 5000;
/**
 * How long a queued answer waits for others to share its commit. Each commit costs DuckDB a millisecond or
 * more of CPU; at hundreds of answers a second, committing each alone takes CPU the requests need.
 */
const GROUP_COMMIT_MS = 20;

export interface CacheEntry {
  key: string;
  model: string;
  /** The stage that first asked: for people reading the table. */
  stage: string;
  answer: LlmAnswer;
}

/**
 * The persistent request cache: table `llm_cache` in run.duckdb, one row per answered request, keyed by
 * requestKey. Only answers are stored, never errors.
 *
 * Writes are group commits: an answer is queued when it arrives and committed with the others that arrive
 * within GROUP_COMMIT_MS, so a killed run loses the requests in flight and at most the last 20 ms of answers
 * (less than one request's latency for any real model), and a rerun sends only those again.
 *
 * The key has no index: a PRIMARY KEY makes each commit several times dearer. A key is written at most once,
 * because requests are looked up before they are sent and `put` ignores a key it has already queued. The
 * request itself is not stored (its hash is the key): it would double the table and the cost of each commit.
 *
 * The store's connection is shared, so every statement of the cache runs through one queue.
 */
export class LlmCache {
  private pending: CacheEntry[] = [];
  private readonly written = new Set<string>();
  private writing: Promise<void> | null = null;
  private writeError: unknown = null;
  private queue: Promise<unknown> = Promise.resolve();

  private constructor(private readonly store: RunStore) {}

  static async open(store: RunStore): Promise<LlmCache> {
    await store.run(`CREATE TABLE IF NOT EXISTS llm_cache (
      key VARCHAR NOT NULL, model VARCHAR NOT NULL, stage VARCHAR NOT NULL,
      texts VARCHAR[] NOT NULL, finish_reasons VARCHAR[] NOT NULL, input_tokens BIGINT NOT NULL,
      output_tokens BIGINT NOT NULL, created_at TIMESTAMP)`);
    // Added after the table's first version: run.duckdb files made before it gain the column here.
    await store.run("ALTER TABLE llm_cache ADD COLUMN IF NOT EXISTS first_token_logprobs JSON");
    await store.checkpoint();
    return new LlmCache(store);
  }

  /** The stored answers among `keys`. */
  async getMany(keys: readonly string[]): Promise<Map<string, LlmAnswer>> {
    const found = new Map<string, LlmAnswer>();
    for (let i = 0; i < keys.length; i += LOOKUP_CHUNK) {
      const chunk = keys.slice(i, i + LOOKUP_CHUNK);
      // Oldest first, so that an answer asked for again (`--resend`) replaces the one before it.
      const rows = await this.serially(() =>
        this.store.query(`SELECT key, texts, finish_reasons, input_tokens, output_tokens, first_token_logprobs FROM llm_cache
          WHERE key IN (SELECT unnest(${sqlStringList(chunk)})) ORDER BY created_at NULLS FIRST`),
      );
      for (const row of rows) found.set(String(row.key), answerOf(row));
    }
    return found;
  }

  async get(key: string): Promise<LlmAnswer | undefined> {
    return (await this.getMany([key])).get(key);
  }

  /** Queues an answer for the next write; `flush` waits for it. */
  put(entry: CacheEntry): void {
    if (this.written.has(entry.key)) return;
    this.written.add(entry.key);
    this.pending.push(entry);
    this.writing ??= this.drain();
  }

  /** Waits until every queued answer is written; throws when a write failed. */
  async flush(): Promise<void> {
    while (this.writing) await this.writing;
    if (this.writeError) throw this.writeError;
  }

  private async drain(): Promise<void> {
    try {
      while (this.pending.length > 0 && !this.writeError) {
        await sleep(GROUP_COMMIT_MS);
        const batch = this.pending.splice(0);
        await this.serially(() => this.insert(batch));
      }
    } catch (error) {
      this.writeError = new Error(`could not store LLM answers in run.duckdb: ${(error as Error).message}`, { cause: error });
    } finally {
      this.writing = null;
    }
  }

  /** One statement, one commit. DuckDB parses it on its own thread, leaving the event loop to the requests. */
  private async insert(batch: readonly CacheEntry[]): Promise<void> {
    const values = batch.map((e) => {
      const { texts, finish_reasons, usage, first_token_logprobs } = e.answer;
      const cells = [sqlString(e.key), sqlString(e.model), sqlString(e.stage), sqlStringList(texts), sqlStringList(finish_reasons)];
      const logprobs = first_token_logprobs ? sqlString(JSON.stringify(first_token_logprobs)) : "NULL";
      return `(${cells.join(", ")}, ${usage.input_tokens}, ${usage.output_tokens}, ${logprobs}, current_timestamp)`;
    });
    await this.store.run(`INSERT INTO llm_cache (key, model, stage, texts, finish_reasons, input_tokens, output_tokens, first_token_logprobs, created_at)
      VALUES ${values.join(", ")}`);
  }

  private serially<T>(task: () => Promise<T>): Promise<T> {
    const result = this.queue.then(task);
    this.queue = result.catch(() => undefined);
    return result;
  }
}

function answerOf(row: Record<string, unknown>): LlmAnswer {
  const logprobs = row.first_token_logprobs;
  return {
    texts: (row.texts as unknown[]).map(String),
    finish_reasons: (row.finish_reasons as unknown[]).map(String),
    usage: { input_tokens: Number(row.input_tokens), output_tokens: Number(row.output_tokens) },
    ...(logprobs === null || logprobs === undefined ? {} : { first_token_logprobs: JSON.parse(String(logprobs)) as LlmAnswer["first_token_logprobs"] }),
  };
}
