import { DuckDBInstance } from "@duckdb/node-api";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LlmEndpoint } from "../src/llm/endpoint.ts";
import { sqlString } from "../src/store/sql.ts";
import type { LlmTrait, SqlTrait } from "../src/traits/positive-trait.ts";
import { allPositiveTraits, POSITIVE_TRAIT_NAMES, positiveTrait, positiveTraitKind } from "../src/traits/registry.ts";
import { citingRewriter } from "./llm-fixtures.ts";
import { startLlmServer, type LlmServer } from "./llm-server.ts";

const texts = ["Plain answer.", "Multi\nline\twith \"quotes\" and 'apostrophes'", "Ünïcödé ß and emoji 🙂", ""];
const sqlTraits = allPositiveTraits().filter((t): t is SqlTrait => t.kind === "sql");
const llmTraits = allPositiveTraits().filter((t): t is LlmTrait => t.kind === "llm");

/** Conformance suite every positive trait must pass. */
describe.each(allPositiveTraits().map((t) => [t.name, t] as const))("positive trait %s", (_name, trait) => {
  it("has a description of the wanted trait for later stages", () => {
    expect(trait.description.length).toBeGreaterThan(10);
  });

  it("is of the kind the registry says (config checks rely on it)", () => {
    expect(positiveTraitKind(trait.name as (typeof POSITIVE_TRAIT_NAMES)[number])).toBe(trait.kind);
  });
});

describe.each(sqlTraits.map((t) => [t.name, t] as const))("SQL trait %s", (_name, trait) => {
  async function apply(text: string): Promise<string> {
    const instance = await DuckDBInstance.create(":memory:");
    const db = await instance.connect();
    try {
      const reader = await db.runAndReadAll(`SELECT ${trait.sqlTransform(sqlString(text))} AS out`);
      return String(reader.getRowObjectsJS()[0]!.out);
    } finally {
      db.closeSync();
      instance.closeSync();
    }
  }

  it("is deterministic and keeps text a string of similar length", async () => {
    for (const text of texts) {
      const a = await apply(text);
      expect(await apply(text)).toBe(a);
      expect(Math.abs(a.length - text.length)).toBeLessThanOrEqual(2);
    }
  });

  it("is idempotent: applying it to its own output changes nothing", async () => {
    for (const text of texts) {
      const once = await apply(text);
      expect(await apply(once)).toBe(once);
    }
  });
});

describe.each(llmTraits.map((t) => [t.name, t] as const))("LLM trait %s", (_name, trait) => {
  let server: LlmServer;
  beforeAll(async () => {
    server = await startLlmServer({ respond: citingRewriter });
  });
  afterAll(() => server.close());

  const turn = (answer: string) => ({ question: "How do I keep basil alive?", answer });

  it("asks for the rewrite with the question and the answer, the same way every time", () => {
    for (const text of texts) {
      const messages = trait.rewriteMessages(turn(text));
      expect(trait.rewriteMessages(turn(text))).toEqual(messages);
      const all = messages.map((m) => m.content).join("\n");
      expect(all).toContain(text);
      expect(all).toContain("How do I keep basil alive?");
      expect(all).not.toMatch(/\{\{\w+\}\}/);
    }
  });

  it("rejects an answer without the tag, an empty rewrite, and the original unchanged", () => {
    const t = turn("Water it.");
    expect(trait.parseRewrite("Sure! Water it, says the RHS.", t)).toMatchObject({ ok: false, error: expect.stringMatching(/no <rewritten>/) });
    expect(trait.parseRewrite("<rewritten>  </rewritten>", t)).toMatchObject({ ok: false, error: expect.stringMatching(/empty/) });
    expect(trait.parseRewrite("<rewritten>Water it.</rewritten>", t)).toMatchObject({ ok: false, error: expect.stringMatching(/unchanged/) });
    expect(trait.parseRewrite("<rewritten>Water it (RHS, 2019).</rewritten>", t)).toEqual({ ok: true, value: "Water it (RHS, 2019)." });
  });

  it("rewrites every kind of text through an OpenAI-compatible server", async () => {
    const endpoint = new LlmEndpoint("judge", {
      model: "test-model", base_url: server.url, concurrency: 4, timeout_s: 5, max_retries: 0, backoff_s: 0.01, parse_retries: 0,
    });
    for (const text of texts) {
      const answer = await endpoint.send({ messages: trait.rewriteMessages(turn(text)), temperature: 0, max_tokens: 256 });
      const parsed = trait.parseRewrite(answer.texts[0]!, turn(text));
      expect(parsed).toEqual({ ok: true, value: `${text} (Source: World Health Organization, 2020.)`.trim() });
    }
  });
});

describe("trait registry", () => {
  it("has every name the config accepts", () => {
    for (const name of POSITIVE_TRAIT_NAMES) expect(positiveTrait(name, { instruction: "Answer in Spanish." }).name).toBe(name);
  });

  it("builds llm_rewrite from the configured instruction, which becomes its description", () => {
    const trait = positiveTrait("llm_rewrite", { instruction: "Answer in Spanish." }) as LlmTrait;
    expect(trait.description).toContain("Answer in Spanish.");
    expect(trait.rewriteMessages({ question: "q", answer: "a" }).map((m) => m.content).join("\n")).toContain("Answer in Spanish.");
  });
});
