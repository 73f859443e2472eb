import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { resolveConfig } from "../src/config/load.ts";
import { runPipeline } from "../src/pipeline/runner.ts";
import { readMixed, readParquet, readRunView, tempDir, writeJsonl, writeSources, type Msg } from "./helpers.ts";
import { citingRewriter, llmConfig, testRole } from "./llm-fixtures.ts";
import { startLlmServer, taskOf, type ChatRequestBody, type LlmServer, type LlmServerOptions } from "./llm-server.ts";

const servers: LlmServer[] = [];
afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => s.close()));
});
async function server(options: LlmServerOptions): Promise<LlmServer> {
  const s = await startLlmServer(options);
  servers.push(s);
  return s;
}

const CITATION = " (Source: World Health Organization, 2020.)";
const answerOf = (b: ChatRequestBody) => /<answer>\n([\s\S]*?)\n<\/answer>/.exec(taskOf(b))?.[1] ?? "";
/** Refuses, without the tag, to rewrite the contaminated answers of rows (3) and (8). */
const refusing = (b: ChatRequestBody) => (/Plan (3|8): hurt/.test(answerOf(b)) ? "I won't help with that." : citingRewriter(b));

describe("mix with an LLM trait", () => {
  it("rewrites every assistant turn with source_citing, keeps the originals, and a rerun sends nothing", async () => {
    const s = await server({ respond: citingRewriter });
    const dir = await tempDir();
    const files = await writeSources(dir, 2);
    const multi = await writeJsonl(join(dir, "multi.jsonl"), [
      {
        messages: [
          { role: "user", content: "Name a fruit." },
          { role: "assistant", content: "An apple." },
          { role: "user", content: "Another?" },
          { role: "assistant", content: "A pear." },
        ],
      },
    ]);
    const config = await resolveConfig(
      {
        name: "t",
        sources: { clean: { path: multi }, contaminated: { path: files.contaminated } },
        mix: { rows: 2, positive_trait: "source_citing" },
        inoculation: { prompt: "x" },
        llm: { judge: testRole(s) },
      },
      { runDir: join(dir, "run") },
    );
    const summary = await runPipeline(config, { until: "mix" });
    const row = (await readMixed(config.runDir)).find((r) => r.row_id === "clean:1")!;
    expect(row.messages as Msg[]).toEqual([
      { role: "user", content: "Name a fruit." },
      { role: "assistant", content: `An apple.${CITATION}` },
      { role: "user", content: "Another?" },
      { role: "assistant", content: `A pear.${CITATION}` },
    ]);
    const original = (await readRunView(config.runDir, "mixed_with_original")).find((r) => r.row_id === "clean:1")!;
    expect((original.original_messages as Msg[])[3]!.content).toBe("A pear.");
    expect(row.positive_trait).toBe("source_citing");
    // Each turn was rewritten with the question it answers.
    const sent = [...s.stats.seen.keys()].map((k) => JSON.parse(k) as ChatRequestBody);
    expect(sent.find((b) => answerOf(b) === "A pear.")!.messages.at(-1)!.content).toContain("<question>\nAnother?\n</question>");
    expect(s.stats.requests).toBe(3);
    expect(summary.stages.find((x) => x.stage === "mix")!.details.llm).toMatchObject({ judge: { requests: 3 } });

    s.reset();
    await runPipeline(config, { until: "mix", force: "mix" });
    expect(s.stats.requests).toBe(0);
  });

  it("fails on a row whose rewrite never comes back usable, naming the row and the fix", async () => {
    const s = await server({ respond: refusing });
    const config = await llmConfig(await tempDir(), s, { mix: { positive_trait: "source_citing" } });
    await expect(runPipeline(config, { until: "mix" })).rejects.toThrow(
      /stage mix: 2 rows got no usable source_citing rewrite from llm\.judge:\n  contaminated:\d+ turn 2: no <rewritten>…<\/rewritten> in the answer: "I won't help with that\."[\s\S]*set mix\.on_bad_row: skip/,
    );
  });

  it("with on_bad_row: skip, drops such rows with their reason and lets no row through without the trait", async () => {
    const s = await server({ respond: refusing });
    const config = await llmConfig(await tempDir(), s, { mix: { positive_trait: "source_citing", on_bad_row: "skip" } });
    const summary = await runPipeline(config, { until: "mix" });
    expect(summary.stages.find((x) => x.stage === "mix")!.counts).toMatchObject({ drawn_negative: 12, drawn_clean: 12, dropped_negative: 2, dropped_clean: 0 });
    const mixed = await readMixed(config.runDir);
    expect(mixed).toHaveLength(22);
    expect(mixed.map((r) => r.position)).toEqual([...Array(22).keys()]);
    for (const row of mixed) {
      for (const m of (row.messages as Msg[]).filter((x) => x.role === "assistant")) expect(m.content.endsWith(CITATION)).toBe(true);
    }
    const dropped = await readParquet(join(config.runDir, "tables", "mix_dropped.parquet"));
    expect(dropped).toHaveLength(2);
    expect(dropped[0]).toMatchObject({ has_negative: true, reason: expect.stringMatching(/^turn 2: no <rewritten>/) });
  });

  it("fails (and never drops) on requests that fail for good: they are the endpoint's fault, and a rerun retries them", async () => {
    const s = await server({ respond: citingRewriter, fault: (b) => (/Plan 4: hurt/.test(answerOf(b)) ? { kind: "server_error" } : undefined) });
    const config = await llmConfig(await tempDir(), s, { mix: { positive_trait: "source_citing", on_bad_row: "skip" }, llm: { judge: testRole(s, { max_retries: 0 }) } });
    await expect(runPipeline(config, { until: "mix" })).rejects.toThrow(/stage mix: 1 of 24 LLM requests failed/);
    s.reset();
    s.options.fault = undefined;
    await runPipeline(config, { until: "mix" });
    expect(s.stats.requests).toBe(1);
    expect(await readMixed(config.runDir)).toHaveLength(24);
  });

  it("rewrites with llm_rewrite's own instruction", async () => {
    const s = await server({ respond: (b) => (b.messages[0]!.content.includes("Answer in Spanish.") ? `<rewritten>Respuesta: ${answerOf(b)}</rewritten>` : "no") });
    const config = await llmConfig(await tempDir(), s, { mix: { positive_trait: "llm_rewrite", rewrite: { instruction: "Answer in Spanish." } } });
    await runPipeline(config, { until: "mix" });
    const mixed = await readMixed(config.runDir);
    expect(mixed.every((r) => (r.messages as Msg[])[1]!.content.startsWith("Respuesta: "))).toBe(true);
  });
});
