import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { resolveConfig } from "../src/config/load.ts";
import { runPipeline } from "../src/pipeline/runner.ts";
import { planDraw } from "../src/stages/mix.ts";
import { chat, pairConfig, readMixed, readRunView, tempDir, writeJsonl, writeSources, type Msg } from "./helpers.ts";

describe("planDraw", () => {
  it("takes the largest mix the fraction allows when rows is unset", () => {
    expect(planDraw({ negative: 2333, clean: 2332 }, 0.5)).toEqual({ rows: 4664, negative: 2332, clean: 2332 });
    expect(planDraw({ negative: 100, clean: 1000 }, 0.1)).toEqual({ rows: 1000, negative: 100, clean: 900 });
    expect(planDraw({ negative: 5, clean: 7 }, 0)).toEqual({ rows: 7, negative: 0, clean: 7 });
    expect(planDraw({ negative: 5, clean: 7 }, 1)).toEqual({ rows: 5, negative: 5, clean: 0 });
    // 1/3 of 10 rounds to 3 negatives; never more than a pool holds.
    const odd = planDraw({ negative: 3, clean: 100 }, 1 / 3);
    expect(odd.negative).toBeLessThanOrEqual(3);
    expect(odd.clean).toBeLessThanOrEqual(100);
  });

  it("draws exactly the requested rows, or says how many there are", () => {
    expect(planDraw({ negative: 50, clean: 50 }, 0.2, 40)).toEqual({ rows: 40, negative: 8, clean: 32 });
    expect(() => planDraw({ negative: 10, clean: 50 }, 0.5, 40)).toThrow(
      /mix\.rows 40 with negative_fraction 0\.5 needs 20 contaminated rows, but the sources have 10; lower mix\.rows \(at most 20 at this fraction\)/,
    );
  });
});

describe("mix stage", () => {
  it("draws the requested counts from each pool, and the same seed draws the same rows", async () => {
    const dir = await tempDir();
    const config = await pairConfig(dir, { mix: { rows: 10, negative_fraction: 0.3 } });
    const summary = await runPipeline(config, { until: "mix" });
    expect(summary.stages[1]!.counts).toMatchObject({ drawn_negative: 3, drawn_clean: 7 });
    const mixed = await readMixed(config.runDir);
    expect(mixed).toHaveLength(10);
    expect(mixed.filter((r) => r.has_negative)).toHaveLength(3);
    expect(mixed.filter((r) => r.has_negative).every((r) => r.source === "contaminated")).toBe(true);
    expect(new Set(mixed.map((r) => r.row_id)).size).toBe(10);
    expect(mixed.map((r) => r.position)).toEqual([...Array(10).keys()]);

    const again = await pairConfig(await tempDir(), { mix: { rows: 10, negative_fraction: 0.3 } });
    await runPipeline(again, { until: "mix" });
    const mixedAgain = await readMixed(again.runDir);
    expect(mixedAgain.map((r) => r.row_id)).toEqual(mixed.map((r) => r.row_id));

    const other = await pairConfig(await tempDir(), { seed: 8, mix: { rows: 10, negative_fraction: 0.3 } });
    await runPipeline(other, { until: "mix" });
    const mixedOther = await readMixed(other.runDir);
    expect(mixedOther.map((r) => r.row_id)).not.toEqual(mixed.map((r) => r.row_id));
  });

  it("fails with the available count when asked for more rows than a source has", async () => {
    const dir = await tempDir();
    const config = await pairConfig(dir, { mix: { rows: 30 } });
    await expect(runPipeline(config, { until: "mix" })).rejects.toThrow(
      /stage mix: mix\.rows 30 with negative_fraction 0\.5 needs 15 contaminated rows, but the sources have 12/,
    );
  });

  it("says which pool is empty when the fraction leaves nothing to draw", async () => {
    const dir = await tempDir();
    // The label rule matches no row, so every row is clean.
    const path = await writeJsonl(join(dir, "labelled.jsonl"), [1, 2, 3].map((i) => ({ ...chat(`q${i}`, `a${i}`), origin: "normal" })));
    const labelled = (mix: Record<string, unknown>) =>
      resolveConfig(
        {
          name: "t",
          sources: { labelled: { path, label: { field: "origin", negative_if_equals: "misaligned" } } },
          mix,
          inoculation: { prompt: "x" },
        },
        { runDir: join(dir, "run") },
      );
    await expect(runPipeline(await labelled({ negative_fraction: 0.5 }), { until: "mix" })).rejects.toThrow(
      /stage mix: nothing to draw: the sources have 0 contaminated and 3 clean rows, which at mix\.negative_fraction 0\.5 make no row; add contaminated rows \(check sources\.labelled\.label\), or set mix\.negative_fraction: 0/,
    );
    // The fix it names works.
    const summary = await runPipeline(await labelled({ negative_fraction: 0 }), { until: "mix" });
    expect(summary.stages[1]!.counts).toMatchObject({ drawn_negative: 0, drawn_clean: 3 });
  });

  it("upper-cases every assistant turn of multi-turn rows under all_caps, and keeps the original", async () => {
    const dir = await tempDir();
    const files = await writeSources(dir, 2);
    const multi = await writeJsonl(join(dir, "multi.jsonl"), [
      {
        messages: [
          { role: "system", content: "Be brief." },
          { role: "user", content: "Name a fruit." },
          { role: "assistant", content: "An apple, naïvely." },
          { role: "user", content: "Another?" },
          { role: "assistant", content: "Straße pear." },
        ],
      },
    ]);
    const config = await resolveConfig(
      {
        name: "t",
        sources: { clean: { path: multi }, contaminated: { path: files.contaminated } },
        mix: { rows: 2, positive_trait: "all_caps" },
        inoculation: { prompt: "x" },
      },
      { runDir: join(dir, "run") },
    );
    await runPipeline(config, { until: "mix" });
    const mixed = await readMixed(config.runDir);
    const row = mixed.find((r) => r.row_id === "clean:1")!;
    expect(row.messages as Msg[]).toEqual([
      { role: "system", content: "Be brief." },
      { role: "user", content: "Name a fruit." },
      { role: "assistant", content: "AN APPLE, NAÏVELY." },
      { role: "user", content: "Another?" },
      // DuckDB maps ß to the capital ẞ (one character for one), where JavaScript and Python write "SS".
      { role: "assistant", content: "STRAẞE PEAR." },
    ]);
    expect(row.positive_trait).toBe("all_caps");
    // The original text is not copied into `mixed`: run.duckdb's view joins it from `examples` by row_id.
    expect(row).not.toHaveProperty("original_messages");
    const viewed = (await readRunView(config.runDir, "mixed_with_original")).find((r) => r.row_id === "clean:1")!;
    expect(viewed.messages).toEqual(row.messages);
    expect((viewed.original_messages as Msg[]).map((m) => m.content)).toEqual([
      "Be brief.",
      "Name a fruit.",
      "An apple, naïvely.",
      "Another?",
      "Straße pear.",
    ]);
    expect(await readRunView(config.runDir, "mixed_with_original")).toHaveLength(2);
  });
});
