import { writeFile } from "node:fs/promises";
import { esc } from "../report/html.ts";
import { writeAtomically } from "../util/fs.ts";
import type { Interval } from "./bootstrap.ts";
import type { EvalConfig } from "./config.ts";
import { fmtFigure, fmtInterval, METRIC_LABELS } from "./format.ts";
import type { ModelOutcome } from "./run.ts";
import { METRICS, MIN_QUESTIONS, type Cell, type Difference, type JudgeCheck, type Metric } from "./summarize.ts";

/**
 * `eval-report.html`: one self-contained page (inline CSS and SVG, no scripts, nothing fetched). Per trait: a
 * plot of each model's mean score with its interval under each system prompt, the table of every figure with
 * its counts, and the arms' paired differences from the reference model.
 */

export interface EvalReportData {
  config: EvalConfig;
  cells: readonly Cell[];
  differences: readonly Difference[];
  checks: readonly JudgeCheck[];
  warnings: readonly string[];
  models: readonly ModelOutcome[];
}

const STYLE = `body{font:14px/1.4 system-ui,sans-serif;margin:2em;max-width:1100px}table{border-collapse:collapse;margin:1em 0}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#f4f4f4}td.l,th.l{text-align:left}
.warn{color:#a40}.few{background:#fff3e0}svg text{font:11px system-ui,sans-serif}`;

const PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"];

function figureCell(metric: Metric, f: Interval | undefined): string {
  if (!f) return `<td>—</td>`;
  const few = f.questions < MIN_QUESTIONS ? ` class="few" title="under ${MIN_QUESTIONS} questions"` : "";
  return `<td${few} data-metric="${metric}" data-value="${f.mean}">${esc(fmtInterval(metric, f))}</td>`;
}

/** The plotted figures: the mean score on 0-100, and the trait rate on 0-1. */
const PLOTTED: readonly Metric[] = ["mean_score", "trait_rate"];

/** One figure per prompt (groups on the x axis) and model (colour), with the 95% interval as a bar. */
function plot(cells: readonly Cell[], models: readonly string[], prompts: readonly string[], metric: Metric): string {
  // Groups from x=60, then 110 px on the right for the legend.
  const width = 170 + prompts.length * (models.length * 26 + 30);
  const height = 240;
  const top = 20;
  const bottom = 200;
  const scale = metric === "mean_score" ? 100 : 1;
  const y = (v: number) => bottom - ((bottom - top) * v) / scale;
  const parts: string[] = [`<text x="50" y="12">${esc(METRIC_LABELS[metric])}</text>`];
  for (const tick of [0, 0.25, 0.5, 0.75, 1]) {
    const v = tick * scale;
    parts.push(`<line x1="50" x2="${width - 110}" y1="${y(v)}" y2="${y(v)}" stroke="#eee"/><text x="44" y="${y(v) + 4}" text-anchor="end">${fmtFigure(metric, v)}</text>`);
  }
  prompts.forEach((prompt, p) => {
    const x0 = 60 + p * (models.length * 26 + 30);
    parts.push(`<text x="${x0 + (models.length * 26) / 2}" y="${bottom + 18}" text-anchor="middle">${esc(prompt)}</text>`);
    models.forEach((model, m) => {
      const f = cells.find((c) => c.model === model && c.prompt === prompt)?.figures[metric];
      if (!f) return;
      const x = x0 + m * 26 + 13;
      const colour = PALETTE[m % PALETTE.length]!;
      parts.push(
        `<line x1="${x}" x2="${x}" y1="${y(f.lo)}" y2="${y(f.hi)}" stroke="${colour}" stroke-width="2"/>` +
          `<circle cx="${x}" cy="${y(f.mean)}" r="4" fill="${colour}"><title>${esc(`${model} / ${prompt}: ${fmtInterval(metric, f)}`)}</title></circle>`,
      );
    });
  });
  models.forEach((model, m) => {
    parts.push(`<rect x="${width - 105}" y="${top + m * 16}" width="10" height="10" fill="${PALETTE[m % PALETTE.length]}"/><text x="${width - 90}" y="${top + m * 16 + 9}">${esc(model)}</text>`);
  });
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" role="img" aria-label="${esc(METRIC_LABELS[metric])} by model and prompt" data-metric="${metric}">${parts.join("")}</svg>`;
}

/** The judge check: the reference model instructed for the trait minus instructed against it. */
function checkTable(checks: readonly JudgeCheck[]): string {
  if (checks.length === 0) return "";
  const rows = checks.map((c) => {
    const passed = c.interval.lo > 0;
    return `<tr><td class="l">${esc(c.model)}</td><td class="l">${esc(METRIC_LABELS[c.metric])}</td>${figureCell(c.metric, c.interval)}` +
      `<td class="l">${passed ? "passed" : `<span class="warn">failed</span>`}</td></tr>`;
  });
  return `<h3>Judge check: instructed for the trait − instructed against it (paired over questions)</h3>
<table><tr><th class="l">model</th><th class="l">figure</th><th>difference [95% CI]</th><th class="l">above 0</th></tr>\n${rows.join("\n")}</table>`;
}

/** Each model's requests, failures and LLM usage (tokens, and dollars where prices are configured). */
function modelsTable(models: readonly ModelOutcome[]): string {
  const rows = models.map((m) => {
    const usage = Object.values(m.usage);
    const tokens = (k: "input_tokens" | "output_tokens") => usage.reduce((n, u) => n + (u?.[k] ?? 0), 0);
    const costs = usage.map((u) => u?.cost_usd).filter((c): c is number => c !== undefined);
    return `<tr><td class="l">${esc(m.model)}</td><td class="l">${m.status === "done" ? "complete" : `<span class="warn">incomplete</span>`}</td>` +
      `<td>${m.requests}</td><td>${m.failed}</td><td>${tokens("input_tokens")}</td><td>${tokens("output_tokens")}</td>` +
      `<td>${costs.length > 0 ? `$${costs.reduce((a, b) => a + b, 0).toFixed(2)}` : "—"}</td></tr>`;
  });
  return `<table><tr><th class="l">model</th><th class="l">answers</th><th>requests</th><th>without answer</th><th>input tokens</th><th>output tokens</th><th>cost</th></tr>
${rows.join("\n")}</table>`;
}

function traitSection(data: EvalReportData, trait: string): string {
  const complete = new Set(data.models.filter((m) => m.status === "done").map((m) => m.model));
  const models = data.config.models.map((m) => m.name).filter((m) => complete.has(m));
  const prompts = data.config.prompts.map((p) => p.name);
  const cells = data.cells.filter((c) => c.trait === trait);
  const rows = cells.map(
    (c) =>
      `<tr><td class="l">${esc(c.model)}</td><td class="l">${esc(c.prompt)}</td>${METRICS.map((m) => figureCell(m, c.figures[m])).join("")}` +
      `<td>${c.answers}</td><td>${c.scored}</td><td>${c.unscored}</td><td>${c.refusals}</td></tr>`,
  );
  const diffs = data.differences.filter((d) => d.trait === trait);
  const diffRows = diffs.map((d) => {
    const excludesZero = d.interval.lo > 0 || d.interval.hi < 0;
    return `<tr><td class="l">${esc(d.model)} − ${esc(d.reference)}</td><td class="l">${esc(d.prompt)}</td><td class="l">${esc(METRIC_LABELS[d.metric])}</td>` +
      `${figureCell(d.metric, d.interval)}<td>${excludesZero ? "yes" : "no"}</td></tr>`;
  });
  return `<h2>${esc(trait)}</h2>${PLOTTED.map((m) => plot(cells, models, prompts, m)).join("")}
<table><tr><th class="l">model</th><th class="l">system prompt</th>${METRICS.map((m) => `<th>${esc(METRIC_LABELS[m])}</th>`).join("")}<th>answers</th><th>scored</th><th>unscored</th><th>refusals</th></tr>
${rows.join("\n")}</table>
${checkTable(data.checks.filter((c) => c.trait === trait))}
<h3>Differences from ${esc(data.config.reference_model)} (paired over questions)</h3>
${diffRows.length > 0 ? `<table><tr><th class="l">arms</th><th class="l">system prompt</th><th class="l">figure</th><th>difference [95% CI]</th><th>interval excludes 0</th></tr>\n${diffRows.join("\n")}</table>` : "<p>Only one model: no differences.</p>"}`;
}

export function renderEvalReport(data: EvalReportData): string {
  const c = data.config;
  const warnings = data.warnings.length > 0 ? `<h2>Warnings</h2><ul class="warn">${data.warnings.map((w) => `<li>${esc(w)}</li>`).join("")}</ul>` : "";
  const prompts = c.prompts.map((p) => `<li><b>${esc(p.name)}</b>: ${p.text === null ? "(no system message: the model's default)" : esc(p.text)}</li>`).join("");
  return `<!doctype html><html><head><meta charset="utf-8"><title>${esc(c.name)}: trait evaluation</title><style>${STYLE}</style></head><body>
<h1>${esc(c.name)}: trait evaluation</h1>
<p>${c.samples} answers per question at temperature ${c.temperature}; judge ${esc(c.judge.model)}. Figures are means over questions with
95% intervals from a bootstrap over questions (then samples within a question), ${c.bootstrap_resamples} resamples;
n is the number of independent questions (under ${MIN_QUESTIONS} is shaded). Rates: score above ${fmtFigure("mean_score", c.threshold)};
coherence above ${fmtFigure("mean_score", c.coherence_threshold)}; the trait rate among coherent answers counts only those. A judge answer
is scored when at least ${c.min_number_mass} of its first-token probability is on a score.</p>
<ul>${prompts}</ul>${warnings}
${modelsTable(data.models)}
${c.traits.map((t) => traitSection(data, t.name)).join("\n")}
</body></html>
`;
}

export async function writeEvalReport(path: string, data: EvalReportData): Promise<void> {
  await writeAtomically(path, (tmp) => writeFile(tmp, renderEvalReport(data)));
}
