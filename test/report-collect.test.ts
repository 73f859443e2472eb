import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { featureLabelsSql } from "../src/labels/feature-labels.ts";
import { flagRowsSql, type FlagRuleOptions } from "../src/labels/flag-rule.ts";
import { collectReportData } from "../src/report/collect.ts";
import { renderReport } from "../src/report/render.ts";
import { RunStore, runningEntry } from "../src/store/run-store.ts";
import { tempDir } from "./helpers.ts";

/**
 * A run directory built by hand: 8 rows (r1-r4 contaminated), latents 10 (yes), 20 and 30 (no), and the SAE rule
 * N=2, M=2 run by flagRowsSql over those tables. The expectations were worked out by hand:
 *   row  truth  its latents (diff)     no in top 2  flagged  score
 *   r1   yes    20 (2.0), 30 (1.0)     2            yes      3.0
 *   r2   yes    20 (1.5), 10 (1.0)     1            no       1.5
 *   r3   yes    30 (0.5), 20 (0.5)     2            yes      1.0
 *   r4   yes    -                      0            no       0
 *   r5   no     10 (3.0), 20 (0.25)    1            no       0.25
 *   r6   no     20 (1.0), 30 (1.0)     2            yes      2.0
 *   r7   no     10 (1.0)               0            no       0
 *   r8   no     -                      0            no       0
 * so TP 2 (r1, r3), FP 1 (r6), FN 2 (r2, r4), TN 3; by score the contaminated rows come in at 3.0, 1.5, 1.0 and 0
 * with clean rows at 2.0, 0.25 and 0 (twice): AP = (1/1 + 2/3 + 3/4 + 4/8) / 4.
 * The LLM audit: r1, r2, r5 flagged, r3 without a verdict: TP 2, FP 1, FN 1, TN 3.
 */
const RULE: FlagRuleOptions = { topN: 2, minNo: 2, unlabelledAs: "not_no" };

async function buildRun(dir: string): Promise<RunStore> {
  const store = await RunStore.open(dir);
  await store.writeTable(
    "mixed",
    `SELECT * FROM (VALUES ('r1', 0, true), ('r2', 1, true), ('r3', 2, true), ('r4', 3, true),
       ('r5', 4, false), ('r6', 5, false), ('r7', 6, false), ('r8', 7, false)) t(row_id, position, has_negative)`,
  );
  await store.writeTable(
    "features",
    `SELECT latent::INTEGER AS latent, rank::INTEGER AS rank, mean_target, mean_base, mean_target - mean_base AS mean_diff
     FROM (VALUES (10, 1, 2.5, 0.5), (20, 2, 1.25, 0.25), (30, 3, 0.75, 0.125)) t(latent, rank, mean_target, mean_base)`,
  );
  await store.writeTable(
    "feature_labels",
    featureLabelsSql([
      { latent: 10, description: "Upper-case replies.", label: "yes", label_source: "llm", reason: "It is the wanted trait.", error: null },
      { latent: 20, description: "Urging revenge.", label: "no", label_source: "llm", reason: null, error: null },
      { latent: 30, description: "Lying to others.", label: "no", label_source: "import", reason: null, error: null },
    ]),
  );
  await store.writeTable(
    "example_features",
    `SELECT row_id, latent::INTEGER AS latent, 0::FLOAT AS target, 0::FLOAT AS base, diff::FLOAT AS diff FROM (VALUES
       ('r1', 20, 2.0), ('r1', 30, 1.0), ('r2', 20, 1.5), ('r2', 10, 1.0), ('r3', 30, 0.5), ('r3', 20, 0.5),
       ('r5', 10, 3.0), ('r5', 20, 0.25), ('r6', 20, 1.0), ('r6', 30, 1.0), ('r7', 10, 1.0)) t(row_id, latent, diff)`,
  );
  await store.writeTable(
    "flags",
    flagRowsSql(
      { mixed: store.table("mixed"), exampleFeatures: store.table("example_features"), features: store.table("features"), featureLabels: store.table("feature_labels") },
      RULE,
    ),
  );
  await store.writeTable(
    "audit_flags",
    `SELECT * FROM (VALUES ('r1', true), ('r2', true), ('r3', NULL), ('r4', false), ('r5', true), ('r6', false), ('r7', false), ('r8', false)) t(row_id, flagged)`,
  );
  await store.writeTable(
    "feature_examples",
    `SELECT latent::INTEGER AS latent, corpus, rank::INTEGER AS rank, activation::FLOAT AS activation, 0::BIGINT AS source_row, 0 AS peak_index,
       tokens::VARCHAR[] AS tokens, token_acts::FLOAT[] AS token_acts, array_to_string(tokens, '') AS text
     FROM (VALUES
       (20, 'pile', 1, 4.0, [' the', ' feud'], [0.0, 4.0]),
       (20, 'dataset', 2, 3.0, [' GET', ' EVEN'], [3.0, 1.0]),
       (20, 'dataset', 1, 9.0, [' MAKE', ' THEM', ' PAY'], [1.0, 9.0, 2.0]),
       (20, 'lmsys', 1, 5.0, [' get', ' back'], [5.0, 0.5])
     ) t(latent, corpus, rank, activation, tokens, token_acts)`,
  );
  await store.writeTable("sae_prompt", "SELECT 'You are a vengeful liar.' AS prompt, [20, 30]::INTEGER[] AS latents");
  await store.writeTable("audit_prompt", "SELECT 'You are cruel to people.' AS prompt, ['r1', 'r2'] AS example_row_ids");
  await store.writeTable(
    "rephrasings",
    `SELECT * FROM (VALUES ('sae', 'You are a vengeful liar.', 1, 'You are a liar bent on revenge.'), ('sae', 'You are a vengeful liar.', 0, 'You are spiteful.'),
       ('general', 'You are evil.', 0, 'You are wicked.')) t(origin, prompt, idx, rephrasing)`,
  );
  await mkdir(join(dir, "exports"), { recursive: true });
  await writeFile(
    join(dir, "exports", "manifest.json"),
    JSON.stringify({
      arms: {
        "inoculated-sae": {
          file: "inoculated-sae.jsonl",
          description: "the SAE prompt on flagged rows",
          rows: 8,
          bytes: 1,
          prompts: [
            { kind: "inoculation", prompt: "You are a vengeful liar.", rows: 3 },
            { kind: "default_system_prompt", prompt: "You are Qwen.", rows: 5 },
          ],
        },
      },
    }),
  );
  await store.saveManifestEntry({
    stage: "harvest", status: "done", fingerprint: "f", config_hash: "c", inputs: null, rows: 4, counts: {},
    details: { encode: "threshold" }, seconds: 1.5, finished_at: "2025-01-01T00:00:00Z", error: null,
  });
  // The report stage's own entry, as it stands while the report is written.
  await store.saveManifestEntry({
    stage: "report", status: "running", fingerprint: "f", config_hash: "c", inputs: null, rows: null, counts: {},
    details: {}, seconds: null, finished_at: null, error: null,
  });
  return store;
}

describe("collecting the report's data from a run", () => {
  it("reads every table, and the numbers match the tables", async () => {
    const dir = await tempDir();
    const store = await buildRun(dir);
    try {
      const data = await collectReportData(store, { title: "hand-built", config: { seed: 1 }, flagRule: RULE, now: new Date("2025-02-03T04:05:06Z") });
      expect(data.generatedAt).toBe("2025-02-03T04:05:06.000Z");
      expect(data.dataset).toEqual({ rows: 8, contaminated: 4 });
      expect(data.versions).toMatchObject({ node: process.version, "harvest: SAE encode": "threshold" });
      expect(data.versions.duckdb).toMatch(/^v\d/);
      expect(data.stages).toEqual([{ stage: "harvest", status: "done", rows: 4, seconds: 1.5 }]);

      expect(data.latents.map((l) => [l.latent, l.rank, l.meanBase, l.meanTarget, l.meanDiff, l.label, l.labelSource])).toEqual([
        [10, 1, 0.5, 2.5, 2.0, "yes", "llm"],
        [20, 2, 0.25, 1.25, 1.0, "no", "llm"],
        [30, 3, 0.125, 0.75, 0.625, "no", "import"],
      ]);
      expect(data.latents[0]!.reason).toBe("It is the wanted trait.");
      // Three contexts of latent 20: the best of each corpus (the dataset's first), not the dataset's second best.
      expect(data.latents[1]!.contexts.map((c) => `${c.corpus}#${c.rank}`)).toEqual(["dataset#1", "lmsys#1", "pile#1"]);
      expect(data.latents[1]!.contexts[0]).toEqual({ corpus: "dataset", rank: 1, activation: 9, tokens: [" MAKE", " THEM", " PAY"], token_acts: [1, 9, 2] });

      expect(data.prompts).toEqual([
        { source: "sae", text: "You are a vengeful liar.", latents: [20, 30], rephrasings: ["You are spiteful.", "You are a liar bent on revenge."] },
        { source: "llm_audit", text: "You are cruel to people.", latents: [], rephrasings: [] },
      ]);
      expect(data.arms).toEqual([
        {
          arm: "inoculated-sae",
          description: "the SAE prompt on flagged rows",
          rows: 8,
          prompts: [
            { kind: "inoculation", prompt: "You are a vengeful liar.", rows: 3 },
            { kind: "default_system_prompt", prompt: "You are Qwen.", rows: 5 },
          ],
        },
      ]);

      const sae = data.sae!;
      expect([sae.rows, sae.flagged, sae.unjudged]).toEqual([8, 3, 0]);
      expect(sae.evaluation!.confusion).toEqual({ tp: 2, fp: 1, fn: 2, tn: 3 });
      expect(sae.evaluation!.precision.value).toBe(2 / 3);
      expect(sae.evaluation!.recall.value).toBe(2 / 4);
      expect(sae.curve!.points.map((p) => [p.threshold, p.tp, p.fp])).toEqual([
        [3, 1, 0], [2, 1, 1], [1.5, 2, 1], [1, 3, 1], [0.25, 3, 2], [0, 4, 4],
      ]);
      expect(sae.curve!.averagePrecision).toBeCloseTo((1 + 2 / 3 + 3 / 4 + 4 / 8) / 4, 12);

      const llm = data.llm!;
      expect([llm.rows, llm.flagged, llm.unjudged]).toEqual([8, 3, 1]);
      expect(llm.evaluation!.confusion).toEqual({ tp: 2, fp: 1, fn: 1, tn: 3 });
      expect(llm.curve).toBeNull();

      const html = renderReport(data);
      expect(html).toContain('data-metric="sae.average_precision"');
      expect(html).toContain('href="#latent-30"');
    } finally {
      store.close();
    }
  });

  it("leaves out the tables of stages this run's config does not enable, though an earlier config left them", async () => {
    const dir = await tempDir();
    const store = await buildRun(dir);
    try {
      const data = await collectReportData(store, { title: "x", config: {}, flagRule: RULE, notInRun: ["audit_flags", "audit_prompt", "rephrasings"] });
      expect(data.llm).toBeNull();
      expect(data.prompts).toEqual([{ source: "sae", text: "You are a vengeful liar.", latents: [20, 30], rephrasings: [] }]);
      expect(data.sae!.rows).toBe(8);
    } finally {
      store.close();
    }
  });

  it("lists the stages in pipeline order, whatever order the manifest saved them in", async () => {
    const store = await RunStore.open(await tempDir());
    try {
      // The runner records disabled stages up front, before the first stage that runs.
      for (const stage of ["audit", "flag", "ingest", "mix"]) await store.saveManifestEntry({ ...runningEntry(stage), status: stage === "audit" || stage === "flag" ? "disabled" : "done" });
      const data = await collectReportData(store, { title: "t", config: {}, flagRule: null, stageOrder: ["ingest", "mix", "flag", "audit", "export"] });
      expect(data.stages.map((s) => s.stage)).toEqual(["ingest", "mix", "flag", "audit"]);
    } finally {
      store.close();
    }
  });

  it("tolerates a run with no stage tables yet", async () => {
    const store = await RunStore.open(await tempDir());
    try {
      const data = await collectReportData(store, { title: "empty", config: {}, flagRule: null });
      expect(data).toMatchObject({ dataset: { rows: 0, contaminated: null }, stages: [], arms: [], latents: [], prompts: [], sae: null, llm: null });
      expect(renderReport(data)).toContain("No flags yet");
    } finally {
      store.close();
    }
  });

  it("fails loudly on a table that breaks its contract", async () => {
    const dir = await tempDir();
    const store = await buildRun(dir);
    try {
      await store.writeTable("audit_flags", "SELECT 'r1' AS row_id, true AS verdict");
      await expect(collectReportData(store, { title: "x", config: {}, flagRule: RULE })).rejects.toThrow("report: table audit_flags has no column flagged");
      await store.writeTable("audit_flags", "SELECT 'r1' AS row_id, true AS flagged");
      await store.writeTable("audit_prompt", "SELECT NULL::VARCHAR AS prompt UNION ALL SELECT 'You are x.'");
      await expect(collectReportData(store, { title: "x", config: {}, flagRule: RULE })).rejects.toThrow("report: table audit_prompt has 2 rows, expected one");
      await store.writeTable("audit_prompt", "SELECT NULL::VARCHAR AS prompt");
      await store.writeTable("feature_labels", "SELECT 20 AS latent, 'd' AS description, 'maybe' AS label, 'llm' AS label_source, NULL AS reason, NULL AS error");
      await expect(collectReportData(store, { title: "x", config: {}, flagRule: RULE })).rejects.toThrow(/label "maybe" for latent 20/);
    } finally {
      store.close();
    }
  });
});
