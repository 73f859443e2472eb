import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import { describe, expect, it } from "vitest";
import { renderReport } from "../src/report/render.ts";
import type { ReportData } from "../src/report/report-data.ts";
import { fillTemplate } from "../src/report/template.ts";
import { reportWarnings } from "../src/report/warnings.ts";
import { precisionRecallCurve } from "../src/stats/metrics.ts";
import { reportFixture } from "./report-fixture.ts";
import { tempDir } from "./helpers.ts";

const run = promisify(execFile);
const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
const haveChromium = existsSync(CHROMIUM);

/** Every `data-metric` number on a page: name -> [data-value, shown text]. */
function metrics(html: string): Map<string, [string, string]> {
  const found = new Map<string, [string, string]>();
  for (const m of html.matchAll(/<span class="num" data-metric="([^"]+)" data-value="([^"]*)">([^<]*)<\/span>/g)) {
    expect(found.has(m[1]!), `metric ${m[1]} appears twice`).toBe(false);
    found.set(m[1]!, [m[2]!, m[3]!]);
  }
  return found;
}

/** The numbers the fixture's page must show, worked out from the fixture's counts by hand. */
function expectedNumbers(f: ReportData): Record<string, { value: number; shown: string }> {
  const count = (n: number) => ({ value: n, shown: n.toLocaleString("en-US") });
  const rate = (x: number) => ({ value: x, shown: x.toFixed(3) });
  const out: Record<string, { value: number; shown: string }> = {
    "dataset.rows": count(400),
    "dataset.contaminated": count(200),
    "latents.no": count(3),
    "labels.yes": count(3),
    "labels.neutral": count(2),
    "labels.unlabelled": count(2),
    "sae.tp": count(150),
    "sae.fp": count(18),
    "sae.fn": count(50),
    "sae.tn": count(182),
    "sae.flagged": count(168),
    "sae.precision": rate(150 / 168),
    "sae.recall": rate(150 / 200),
    "sae.f1": rate((2 * 150) / (2 * 150 + 18 + 50)),
    "sae.average_precision": rate(f.sae!.curve!.averagePrecision!),
    "summary.sae.precision": rate(150 / 168),
    "llm.tp": count(171),
    "llm.unjudged": count(3),
    "llm.precision": rate(171 / 190),
    "llm.recall": rate(171 / 199),
    "llm.f1": rate((2 * 171) / (2 * 171 + 19 + 28)),
    "arm.inoculated-sae.rows": count(400),
    "arm.inoculated-sae.prompt.0": count(168),
    "arm.inoculated-sae.prompt.1": count(232),
  };
  for (const l of f.latents) {
    out[`latent.${l.latent}.rank`] = { value: l.rank, shown: String(l.rank) };
    out[`latent.${l.latent}.mean_base`] = { value: l.meanBase, shown: l.meanBase.toFixed(3) };
    out[`latent.${l.latent}.mean_target`] = { value: l.meanTarget, shown: l.meanTarget.toFixed(3) };
    out[`latent.${l.latent}.mean_diff`] = { value: l.meanDiff, shown: l.meanDiff.toFixed(3) };
  }
  return out;
}

function expectNumbers(html: string, f: ReportData): void {
  const found = metrics(html);
  for (const [name, { value, shown }] of Object.entries(expectedNumbers(f))) {
    const got = found.get(name);
    expect(got, `metric ${name} is missing`).toBeDefined();
    expect(Number(got![0]), name).toBeCloseTo(value, 12);
    expect(got![1], name).toBe(shown);
  }
}

describe("report.html (rendering)", () => {
  it("is one self-contained file: no script, no external resource, every section present", () => {
    const html = renderReport(reportFixture());
    expect(html).not.toMatch(/<script|<link|<img|<iframe|\bsrc=|url\(|https?:\/\//i);
    for (const id of ["warnings", "flags", "prompt", "latents", "arms", "run"]) expect(html).toContain(`id="section-${id}"`);
    expect(html).toMatch(/<svg id="pr-plot"/);
    expect(html).not.toMatch(/\{\{/);
  });

  it("shows the input's numbers with their raw values", () => {
    const f = reportFixture();
    expectNumbers(renderReport(f), f);
  });

  it("escapes every piece of text from the run", () => {
    const f = reportFixture();
    f.title = "<b>x</b>";
    f.latents[0]!.description = `<script>alert("x")</script>`;
    f.prompts[0]!.text = "You are <evil> & 'sly'.";
    f.latents[1]!.contexts[0]!.tokens = ["<|im_start|>", " <b>", " a"];
    f.latents[1]!.contexts[0]!.token_acts = [0, 5, 0];
    const html = renderReport(f);
    expect(html).toContain("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;");
    expect(html).toContain("You are &lt;evil&gt; &amp; &#39;sly&#39;.");
    expect(html).toContain("&lt;|im_start|&gt; <mark");
    expect(html).toContain(">&lt;b&gt;</mark>");
    expect(html).not.toMatch(/<script|<b>x<\/b>/);
  });

  it("says what has not run instead of leaving sections empty, and scores nothing without ground truth", () => {
    const bare: ReportData = {
      ...reportFixture(),
      stages: [],
      arms: [],
      latents: [],
      prompts: [],
      flagRule: null,
      sae: null,
      llm: null,
    };
    const html = renderReport(bare);
    expect(html).toContain("No flags yet: <code>flag</code> and <code>audit</code> have not run.");
    expect(html).toContain("No inoculation prompt written by this run: synthesize writes one");
    expect(html).toContain("No top latents yet: <code>activations</code> has not run.");
    expect(html).toContain("No training files yet: <code>export</code> has not run.");
    expect(html).not.toContain("<svg");
    // Stages the config leaves off are said to be off, with what turns them on; not "not yet".
    const sae = "add an `sae` section";
    const off = renderReport({
      ...bare,
      disabled: [
        { stage: "activations", enableWith: sae },
        { stage: "synthesize", enableWith: "add an `sae` section and `llm.judge`" },
        { stage: "flag", enableWith: sae },
        { stage: "audit", enableWith: "add an `audit` section" },
      ],
    });
    expect(off).toContain("No flags: the stages <code>flag</code> and <code>audit</code> are off in this config (to turn them on: add an <code>sae</code> section; or add an <code>audit</code> section).");
    expect(off).toContain("No top latents: the stage <code>activations</code> is off in this config (to turn it on: add an <code>sae</code> section).");
    expect(off).toContain("No inoculation prompt written by this run: the stages <code>synthesize</code> and <code>audit</code> are off");
    expect(off).not.toContain("Top latents labelled no");
    expect(html).toContain("Top latents labelled no");
    const f = reportFixture();
    const noTruth = renderReport({
      ...f,
      dataset: { rows: 400, contaminated: null },
      sae: { ...f.sae!, evaluation: null, curve: null },
      llm: null,
    });
    expect(noTruth).toContain("no ground truth");
    expect(metrics(noTruth).get("sae.flagged")).toEqual(["168", "168"]);
    expect(metrics(noTruth).has("sae.precision")).toBe(false);
    expect(noTruth).not.toContain("<svg");
  });

  it("draws a curve of many thresholds with fewer points, keeping both ends, without changing the numbers", () => {
    const f = reportFixture();
    // 20,000 distinct scores, alternating contaminated and clean rows.
    const curve = precisionRecallCurve(Array.from({ length: 20_000 }, (_, i) => ({ score: 20_000 - i, positives: i % 2 === 0 ? 1 : 0, negatives: i % 2 })));
    const html = renderReport({ ...f, sae: { ...f.sae!, curve } });
    const d = /<path id="pr-curve-sae"[^>]* d="([^"]+)"/.exec(html)![1]!;
    const xs = [...d.matchAll(/H([\d.]+)/g)].map((m) => Number(m[1]));
    expect(xs.length).toBeGreaterThan(100);
    expect(xs.length).toBeLessThan(1500);
    // The last step still ends at recall 1, the right edge: the largest x of the path.
    expect(xs.at(-1)).toBe(Math.max(...xs));
    const full = renderReport({ ...f, sae: { ...f.sae!, curve: precisionRecallCurve([{ score: 1, positives: 1, negatives: 0 }]) } });
    expect(Number(/<path id="pr-curve-sae"[^>]* d="[^"]*H([\d.]+)"/.exec(full)![1])).toBe(xs.at(-1));
    expect(metrics(html).get("sae.average_precision")![0]).toBe(String(curve.averagePrecision));
  });

  it("the page template: a placeholder without a value, or a value without a placeholder, is an error", () => {
    expect(fillTemplate("a {{x}} b {{x}}", { x: "{{y}}" }, "t")).toBe("a {{y}} b {{y}}");
    expect(() => fillTemplate("{{x}} {{y}}", { x: "1" }, "page.html")).toThrow("page.html: no value for {{y}}");
    expect(() => fillTemplate("{{x}}", { x: "1", z: "2" }, "page.html")).toThrow("page.html: no placeholder for {{z}}");
    expect(() => renderReport(reportFixture(), "<html>{{title}}</html>")).toThrow(/no placeholder for \{\{subtitle\}\}/);
  });
});

describe("report warnings", () => {
  const codes = (d: ReportData) => reportWarnings(d).map((w) => w.code);

  it("few contaminated rows: under 50", () => {
    const f = reportFixture();
    expect(codes({ ...f, dataset: { rows: 400, contaminated: 49 } })).toContain("few_contaminated");
    expect(codes({ ...f, dataset: { rows: 400, contaminated: 50 } })).not.toContain("few_contaminated");
    expect(codes({ ...f, dataset: { rows: 400, contaminated: null } })).not.toContain("few_contaminated");
  });

  it("many unlabelled latents: over 10%", () => {
    const f = reportFixture();
    // The fixture has 2 unlabelled of 10 (20%).
    expect(codes(f)).toContain("many_unlabelled");
    const one = { ...f, latents: f.latents.map((l) => (l.latent === 901 ? { ...l, label: "no" as const } : l)) };
    expect(codes(one)).not.toContain("many_unlabelled");
  });

  it("one label crowding the top latents: 75% of the 20 highest-ranked labelled ones", () => {
    const f = reportFixture();
    const labelled = (labels: ("yes" | "no" | "neutral")[]) =>
      labels.map((label, i) => ({ ...f.latents[0]!, latent: 1000 + i, rank: i + 1, label }));
    const crowdedYes = { ...f, latents: [...labelled(Array(15).fill("yes")), ...labelled(Array(5).fill("no")).map((l, i) => ({ ...l, latent: 2000 + i, rank: 16 + i }))] };
    expect(reportWarnings(crowdedYes).find((w) => w.code === "crowded_top")?.message).toMatch(/^15 of the 20 .* wanted trait/);
    const fourteen = { ...crowdedYes, latents: crowdedYes.latents.map((l, i) => (i === 0 ? { ...l, label: "neutral" as const } : l)) };
    expect(codes(fourteen)).not.toContain("crowded_top");
    const crowdedNo = { ...f, latents: labelled([...Array(16).fill("no"), ...Array(4).fill("yes")]) };
    expect(reportWarnings(crowdedNo).find((w) => w.code === "crowded_top")?.message).toMatch(/^16 of the 20 .* labelled no/);
  });

  it("fewer no latents than M: nothing can be flagged", () => {
    const f = reportFixture();
    expect(codes({ ...f, flagRule: { topN: 10, minNo: 3, unlabelledAs: "not_no" } })).not.toContain("too_few_no_latents");
    expect(codes({ ...f, flagRule: { topN: 10, minNo: 4, unlabelledAs: "not_no" } })).toContain("too_few_no_latents");
    // Counting the 2 unlabelled latents as no makes 5.
    expect(codes({ ...f, flagRule: { topN: 10, minNo: 5, unlabelledAs: "no" } })).not.toContain("too_few_no_latents");
  });

  it("a method that flagged no row: its arms are the baseline", () => {
    const f = reportFixture();
    const none = { ...f, sae: { ...f.sae!, flagged: 0 }, llm: { ...f.llm!, flagged: 0 } };
    const messages = reportWarnings(none).filter((w) => w.code === "no_rows_flagged").map((w) => w.message);
    expect(messages).toEqual([
      `The ${f.sae!.name} flagged no row: the inoculated-sae and inoculated-sae-random arms are the baseline.`,
      `The ${f.llm!.name} flagged no row: the inoculated-llm arm is the baseline.`,
    ]);
    expect(codes(f)).not.toContain("no_rows_flagged");
  });

  it("an irrelevant control with fewer wordings than the inoculated arm", () => {
    const f = reportFixture();
    const arm = (name: string, kind: string, wordings: number) => ({
      arm: name,
      description: "",
      rows: 400,
      prompts: Array.from({ length: wordings }, (_, i) => ({ kind, prompt: `${kind} ${i}`, rows: 400 / wordings })),
    });
    const uneven = { ...f, arms: [arm("inoculated-general", "inoculation", 4), arm("irrelevant-general", "irrelevant", 1)] };
    expect(reportWarnings(uneven).find((w) => w.code === "uneven_control")?.message).toBe(
      "irrelevant-general draws from 1 wording and inoculated-general from 4: the control differs in prompt variety as well as content. Set rephrase.k to at least 3 so that the irrelevant prompt gets as many.",
    );
    expect(codes({ ...f, arms: [arm("inoculated-general", "inoculation", 4), arm("irrelevant-general", "irrelevant", 4)] })).not.toContain("uneven_control");
    expect(codes({ ...f, arms: [arm("inoculated-general", "inoculation", 4)] })).not.toContain("uneven_control");
  });
});

describe.skipIf(!haveChromium)(`report.html in headless Chromium (skipped without ${CHROMIUM}; apt-get install chromium)`, () => {
  const flags = (dir: string) => [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    `--user-data-dir=${join(dir, "profile")}`,
    "--window-size=1200,2000",
  ];

  it("renders: sections laid out, the plot drawn, nothing wider than the window, and the numbers match the input", async () => {
    const dir = await tempDir();
    const f = reportFixture();
    const html = renderReport(f);
    // A copy with a measuring script: the report itself has none, the test reads the browser's layout through it.
    const probe = `<script>
      const size = (el) => { if (!el) return null; const b = el.getBoundingClientRect(); return [Math.round(b.width), Math.round(b.height)]; };
      document.body.setAttribute("data-layout", JSON.stringify({
        scrollWidth: document.documentElement.scrollWidth,
        innerWidth: window.innerWidth,
        plot: size(document.getElementById("pr-plot")),
        curveLength: document.getElementById("pr-curve-sae").getTotalLength(),
        sections: [...document.querySelectorAll("section")].map((s) => [s.id, size(s)[1]]),
        latentRows: document.querySelectorAll("#latents tr[data-latent]").length,
        marks: document.querySelectorAll("mark").length,
      }));
    </script>`;
    const page = join(dir, "report.html");
    await writeFile(page, html.replace("</body>", `${probe}</body>`));
    const { stdout: dom } = await run(CHROMIUM, [...flags(dir), "--dump-dom", `file://${page}`], { maxBuffer: 64 * 1024 * 1024 });

    const layout = JSON.parse(
      /data-layout="([^"]*)"/.exec(dom)![1]!.replaceAll("&quot;", '"'),
    ) as { scrollWidth: number; innerWidth: number; plot: [number, number]; curveLength: number; sections: [string, number][]; latentRows: number; marks: number };
    expect(layout.scrollWidth).toBeLessThanOrEqual(layout.innerWidth);
    expect(layout.plot[0]).toBeGreaterThan(300);
    expect(layout.plot[1]).toBeGreaterThan(200);
    expect(layout.curveLength).toBeGreaterThan(100);
    expect(layout.sections.map(([id]) => id)).toEqual(["section-warnings", "section-flags", "section-prompt", "section-latents", "section-arms", "section-run"]);
    for (const [id, height] of layout.sections) expect(height, id).toBeGreaterThan(40);
    expect(layout.latentRows).toBe(f.latents.length);
    expect(layout.marks).toBeGreaterThan(0);

    expectNumbers(dom, f);
    const point = /<g id="pr-point-sae" data-precision="([^"]+)" data-recall="([^"]+)"/.exec(dom)!;
    expect(Number(point[1])).toBeCloseTo(150 / 168, 12);
    expect(Number(point[2])).toBeCloseTo(0.75, 12);
    expect(dom).toContain('id="pr-point-llm"');
    expect(dom).not.toContain('id="pr-curve-llm"');
    expect(dom).toContain('data-warning="many_unlabelled"');
  });

  it("takes a screenshot of the whole first screen", async () => {
    const dir = await tempDir();
    const page = join(dir, "report.html");
    await writeFile(page, renderReport(reportFixture()));
    const shot = join(dir, "report.png");
    await run(CHROMIUM, [...flags(dir), `--screenshot=${shot}`, `file://${page}`]);
    const png = await readFile(shot);
    expect(png.subarray(1, 4).toString()).toBe("PNG");
    // IHDR: width and height, big-endian, at bytes 16 and 20.
    expect([png.readUInt32BE(16), png.readUInt32BE(20)]).toEqual([1200, 2000]);
    // A blank page of that size compresses to about 11 kB; the report's first screen is ten times that.
    expect(png.length).toBeGreaterThan(60_000);
  });
});
