import { existsSync, readdirSync } from "node:fs";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { DuckDBInstance } from "@duckdb/node-api";
import { featureLabelsSql } from "../src/labels/feature-labels.ts";
import { importLabelFile, importedLabelRows, looksLikeErrorMessage, parseLabelMap } from "../src/labels/import.ts";
import { REFERENCE_DIR, tempDir } from "./helpers.ts";

const EXPLANATIONS = join(REFERENCE_DIR, "feature_explanations");
const haveReference = existsSync(EXPLANATIONS);

describe("importing feature labels", () => {
  it("maps the reference format: desirable -> yes, undesirable -> no, no tag -> unlabelled", () => {
    const { labels, rejected } = parseLabelMap({
      "12": "<feature_description>\nUpper-case assistant replies.\n</feature_description>\n<feature_classification>desirable</feature_classification>",
      "7": "<feature_description>Instructions for hurting people.</feature_description><feature_classification>undesirable</feature_classification>",
      "30": "<feature_description>Polite greetings.</feature_description>",
      "31": "<feature_description>Lists.</feature_description><feature_classification> Neutral </feature_classification>",
    });
    expect(rejected).toEqual([]);
    expect(labels).toEqual([
      { latent: 7, description: "Instructions for hurting people.", label: "no", reason: null },
      { latent: 12, description: "Upper-case assistant replies.", label: "yes", reason: null },
      { latent: 30, description: "Polite greetings.", label: null, reason: null },
      { latent: 31, description: "Lists.", label: "neutral", reason: null },
    ]);
  });

  it("accepts plain text and the object form", () => {
    const { labels, rejected } = parseLabelMap({
      "1": "  Citations of journal articles.  ",
      "2": { description: "Threats of violence.", label: "no", reason: "not the wanted trait" },
      "3": { description: "Markdown headings.", label: null },
    });
    expect(rejected).toEqual([]);
    expect(labels).toEqual([
      { latent: 1, description: "Citations of journal articles.", label: null, reason: null },
      { latent: 2, description: "Threats of violence.", label: "no", reason: "not the wanted trait" },
      { latent: 3, description: "Markdown headings.", label: null, reason: null },
    ]);
  });

  it("rejects entries that are not descriptions, each with its latent id and the reason", () => {
    const { labels, rejected } = parseLabelMap({
      "1": "",
      "2": "<feature_description>   </feature_description>",
      "3": "<feature_classification>undesirable</feature_classification>",
      "4": "Error calling LLM: Error code: 429 - {'error': {'message': 'Rate limit reached', 'type': 'requests_error'}}",
      "5": "<feature_description>Threats.</feature_description><feature_classification>maybe</feature_classification>",
      "6": "<feature_description>Threats.",
      "7": { description: "Threats.", label: "bad" },
      "8": 42,
      "x9": "A fine description.",
      "10": { label: "no" },
      "11": "<feature_description>Traceback (most recent call last):\n  File \"x.py\"</feature_description>",
      "2147483648": "Too large an id.",
    });
    expect(labels).toEqual([]);
    const reasons = Object.fromEntries(rejected.map((r) => [r.latent, r.reason]));
    expect(Object.keys(reasons).sort()).toEqual(["1", "10", "11", "2", "2147483648", "3", "4", "5", "6", "7", "8", "x9"]);
    expect(reasons["2147483648"]).toMatch(/not a latent id/);
    expect(reasons["1"]).toMatch(/empty/);
    expect(reasons["2"]).toMatch(/empty/);
    expect(reasons["3"]).toMatch(/no <feature_description>/);
    expect(reasons["4"]).toMatch(/error message/);
    expect(reasons["5"]).toMatch(/"maybe" is not one of/);
    expect(reasons["6"]).toMatch(/1 times opened and 0 times closed/);
    expect(reasons["7"]).toMatch(/"bad" is not one of/);
    expect(reasons["8"]).toMatch(/got number/);
    expect(reasons["x9"]).toMatch(/not a latent id/);
    expect(reasons["10"]).toMatch(/no description/);
    expect(reasons["11"]).toMatch(/error message/);
  });

  it("keeps the first of two keys that name one latent", () => {
    const { labels, rejected } = parseLabelMap({ "7": "First.", "007": "Second." });
    expect(labels).toEqual([{ latent: 7, description: "First.", label: null, reason: null }]);
    expect(rejected).toEqual([{ latent: "007", reason: "latent 7 appears twice in the file" }]);
  });

  it("does not mistake descriptions that talk about errors for error messages", () => {
    for (const text of [
      "Error messages and stack traces in Python code.",
      "Text that corrects the user's factual errors politely.",
      "Exceptions to grammatical rules in language-learning answers.",
    ]) {
      expect(looksLikeErrorMessage(text), text).toBe(false);
      expect(parseLabelMap({ "5": text }).labels).toHaveLength(1);
    }
  });

  it("turns imports into feature_labels rows that DuckDB reads with the table's types", async () => {
    const { labels } = parseLabelMap({ "9": "<feature_description>It's quoted: 'x'.</feature_description>", "3": { description: "B", label: "no" } });
    const instance = await DuckDBInstance.create(":memory:");
    const db = await instance.connect();
    try {
      const reader = await db.runAndReadAll(`SELECT latent, description, label, label_source, typeof(latent) AS t FROM (${featureLabelsSql(importedLabelRows(labels))})`);
      expect(reader.getRowObjectsJS()).toEqual([
        { latent: 3, description: "B", label: "no", label_source: "import", t: "INTEGER" },
        { latent: 9, description: "It's quoted: 'x'.", label: null, label_source: "import", t: "INTEGER" },
      ]);
      const empty = await db.runAndReadAll(`SELECT count(*)::INTEGER AS n FROM (${featureLabelsSql([])})`);
      expect(empty.getRowObjectsJS()).toEqual([{ n: 0 }]);
    } finally {
      db.closeSync();
      instance.closeSync();
    }
    expect(() => featureLabelsSql([...importedLabelRows(labels), ...importedLabelRows(labels)])).toThrow(/appears twice/);
  });

  it("names the file when it is not JSON", async () => {
    const path = join(await tempDir(), "labels.json");
    await writeFile(path, "{not json");
    await expect(importLabelFile(path)).rejects.toThrow(/labels\.json/);
    await writeFile(path, "[1, 2]");
    await expect(importLabelFile(path)).rejects.toThrow(/labels\.json: .*expected a JSON object/);
  });

  describe.skipIf(!haveReference)("the reference study's feature explanations", () => {
    it("evil_cap: 199 labelled latents (130 yes, 69 no), and latent 72174, an API error, rejected", async () => {
      const { labels, rejected } = await importLabelFile(join(EXPLANATIONS, "evil_cap_error_50_50.json"));
      expect(labels).toHaveLength(199);
      expect(labels.every((l) => l.label !== null && l.description.length > 0)).toBe(true);
      expect(labels.filter((l) => l.label === "yes")).toHaveLength(130);
      expect(labels.filter((l) => l.label === "no")).toHaveLength(69);
      expect(labels.some((l) => l.latent === 72174)).toBe(false);
      expect(rejected).toEqual([{ latent: "72174", reason: expect.stringMatching(/^an error message, not a description: Error calling LLM/) }]);
      expect(labels.some((l) => /<\/?feature_/.test(l.description))).toBe(false);
    });

    it("the other five mixes: 200 descriptions each, unlabelled (they carry no classification)", async () => {
      const others = readdirSync(EXPLANATIONS).filter((f) => f.endsWith(".json") && !f.startsWith("evil_cap"));
      expect(others).toHaveLength(5);
      for (const file of others) {
        const { labels, rejected } = await importLabelFile(join(EXPLANATIONS, file));
        expect(rejected, file).toEqual([]);
        expect(labels, file).toHaveLength(200);
        expect(labels.every((l) => l.label === null && l.description.length > 20), file).toBe(true);
      }
    });
  });
});
