import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { activeTokenMask, type LatentContext } from "../labels/explain-format.ts";
import { esc, fmtCount, fmtInterval, fmtMean, fmtRate, fmtValue, metric, NONE } from "./html.ts";
import { prPlotSvg, type PlotSeries } from "./pr-plot.ts";
import type { FlagSide, ReportData, ReportLatent } from "./report-data.ts";
import { fillTemplate } from "./template.ts";
import { reportWarnings } from "./warnings.ts";

/**
 * Renders `report.html`: one self-contained file (inline CSS and SVG, no script, nothing fetched) that a person
 * opens after a run. The page layout and style live in `reports/report.html`; this file fills its sections. Every
 * number carries `data-metric` / `data-value` (see html.ts) so tests read them back from a real browser's DOM.
 */
export const REPORT_TEMPLATE = fileURLToPath(new URL("../../reports/report.html", import.meta.url));

export function renderReport(data: ReportData, template = readFileSync(REPORT_TEMPLATE, "utf8")): string {
  return fillTemplate(
    template,
    {
      title: esc(data.title),
      subtitle: esc(`Generated ${data.generatedAt}${data.versions.inoculant ? ` by inoculant ${data.versions.inoculant}` : ""}`),
      summary: summaryCards(data),
      warnings: warningsSection(data),
      flags: flagsSection(data),
      prompt: promptSection(data),
      latents: latentsSection(data),
      arms: armsSection(data),
      run: runSection(data),
    },
    REPORT_TEMPLATE,
  );
}

const COLORS = { sae: "#1f6feb", llm: "#d1670a" } as const;

function sides(data: ReportData): { key: "sae" | "llm"; side: FlagSide }[] {
  const out: { key: "sae" | "llm"; side: FlagSide }[] = [];
  if (data.sae) out.push({ key: "sae", side: data.sae });
  if (data.llm) out.push({ key: "llm", side: data.llm });
  return out;
}

function card(label: string, value: string, extra = ""): string {
  return `<div class="card"><div class="k">${esc(label)}</div><div class="v">${value}</div>${extra ? `<div class="ci">${extra}</div>` : ""}</div>`;
}

/** One card per flagging method: rows flagged, and precision and recall where there is ground truth. */
function methodCard(key: string, side: FlagSide): string {
  const cell = (label: string, value: string, extra = "") =>
    `<div><div class="v">${value}</div><div class="k">${label}</div>${extra ? `<div class="ci">${extra}</div>` : ""}</div>`;
  const cells = [cell("rows flagged", metric(`summary.${key}.flagged`, side.flagged, fmtCount(side.flagged)))];
  const e = side.evaluation;
  if (e) {
    cells.push(
      cell("precision", metric(`summary.${key}.precision`, e.precision.value, fmtRate(e.precision.value)), fmtInterval(e.precision.low, e.precision.high)),
      cell("recall", metric(`summary.${key}.recall`, e.recall.value, fmtRate(e.recall.value)), fmtInterval(e.recall.low, e.recall.high)),
    );
  }
  return `<div class="card wide"><div class="k"><b>${esc(side.name)}</b></div><div class="trio">${cells.join("")}</div></div>`;
}

function summaryCards(data: ReportData): string {
  const cards = [card("Rows", metric("dataset.rows", data.dataset.rows, fmtCount(data.dataset.rows)))];
  const c = data.dataset.contaminated;
  cards.push(
    card(
      "Contaminated (ground truth)",
      c === null ? `<span class="muted">unknown</span>` : metric("dataset.contaminated", c, fmtCount(c)),
      c === null || data.dataset.rows === 0 ? "" : `${fmtRate(c / data.dataset.rows)} of rows`,
    ),
  );
  // Without the SAE stages there are no latents to count: no card, rather than a "0 / 0".
  if (!data.disabled.some((d) => d.stage === "activations")) {
    const no = data.latents.filter((l) => l.label === "no").length;
    cards.push(card("Top latents labelled no", `${metric("latents.no", no, fmtCount(no))} <span class="muted">/ ${fmtCount(data.latents.length)}</span>`));
  }
  for (const { key, side } of sides(data)) cards.push(methodCard(key, side));
  return `<div class="cards">${cards.join("")}</div>`;
}

function warningsSection(data: ReportData): string {
  const warnings = reportWarnings(data);
  if (warnings.length === 0) return `<p class="ok" id="no-warnings">Nothing in the data makes these results weak by the report's checks.</p>`;
  return warnings.map((w) => `<div class="warning" data-warning="${w.code}">${esc(w.message)}</div>`).join("");
}

function ruleText(data: ReportData): string {
  const r = data.flagRule;
  if (!r) return "";
  return (
    `<p>SAE rule: a row is flagged when at least <b>M = ${r.minNo}</b> of its top <b>N = ${r.topN}</b> latents (among the run's top latents below, ` +
    `the ones with the largest increase on that row, ties by latent id; not the row's own top over every SAE latent in ` +
    `<code>row_top</code>) are labelled <span class="badge no">no</span>; unlabelled latents count as ` +
    `${r.unlabelledAs === "no" ? "no" : "not no"}. Its score for the curve: the summed increase of the row's <i>no</i> latents.</p>`
  );
}

/**
 * Why a section is empty: the stages that fill it are off in this config (with what turns them on), or have not
 * run yet.
 */
function emptyNote(data: ReportData, what: string, stages: readonly string[]): string {
  const off = data.disabled.filter((d) => stages.includes(d.stage));
  if (off.length === stages.length) {
    const how = [...new Set(off.map((d) => d.enableWith).filter(Boolean))].join("; or ");
    return `<p class="note">${what}: ${stages.length === 1 ? "the stage" : "the stages"} ${stages.map((s) => `<code>${s}</code>`).join(" and ")} ${stages.length === 1 ? "is" : "are"} off in this config${how ? ` (to turn ${stages.length === 1 ? "it" : "them"} on: ${esc(how).replace(/`([^`]+)`/g, "<code>$1</code>")})` : ""}.</p>`;
  }
  return `<p class="note">${what} yet: ${stages.map((s) => `<code>${s}</code>`).join(" and ")} ${stages.length === 1 ? "has" : "have"} not run.</p>`;
}

function flagsSection(data: ReportData): string {
  const all = sides(data);
  if (all.length === 0) return emptyNote(data, "No flags", ["flag", "audit"]);
  const parts = [ruleText(data)];
  const evaluated = all.filter((s) => s.side.evaluation !== null);
  const header = all.map(({ side }) => `<th class="r">${esc(side.name)}</th>`).join("");
  const row = (label: string, cell: (key: string, s: FlagSide) => string) =>
    `<tr><th>${label}</th>${all.map(({ key, side }) => `<td class="r">${cell(key, side)}</td>`).join("")}</tr>`;
  const rate = (name: string, p: { value: number | null; low: number | null; high: number | null } | undefined, key: string) =>
    p ? `${metric(`${key}.${name}`, p.value, fmtRate(p.value))} <span class="muted">${fmtInterval(p.low, p.high)}</span>` : NONE;
  const rows = [
    row("Rows", (k, s) => metric(`${k}.rows`, s.rows, fmtCount(s.rows))),
    row("Flagged", (k, s) => metric(`${k}.flagged`, s.flagged, fmtCount(s.flagged))),
    row("No verdict", (k, s) => metric(`${k}.unjudged`, s.unjudged, fmtCount(s.unjudged))),
  ];
  const table = () => `<table class="compact" id="flag-metrics"><tr><th></th>${header}</tr>${rows.join("")}</table>`;
  if (evaluated.length === 0) {
    parts.push(`<p class="note">The dataset has no ground truth (<code>has_negative</code>), so flags cannot be scored; only their counts are shown.</p>`, table());
    return parts.join("\n");
  }
  rows.push(
    row("Precision [95% CI]", (k, s) => rate("precision", s.evaluation?.precision, k)),
    row("Recall [95% CI]", (k, s) => rate("recall", s.evaluation?.recall, k)),
    row("F1 [95% CI]", (k, s) => rate("f1", s.evaluation?.f1, k)),
    row("Average precision (score)", (k, s) => {
      const ap = s.curve?.averagePrecision ?? null;
      return ap === null ? NONE : metric(`${k}.average_precision`, ap, fmtRate(ap));
    }),
  );
  const series: PlotSeries[] = evaluated.map(({ key, side }) => {
    const { precision, recall } = side.evaluation!;
    const label = key === "sae" && data.flagRule ? `N=${data.flagRule.topN}, M=${data.flagRule.minNo}` : "its flags";
    return {
      key,
      name: side.name,
      color: COLORS[key],
      curve: side.curve,
      point: precision.value === null || recall.value === null ? null : { precision: precision.value, recall: recall.value, label },
    };
  });
  const c = data.dataset.contaminated;
  const prevalence = c === null || data.dataset.rows === 0 ? null : c / data.dataset.rows;
  parts.push(
    `<div class="side-by-side"><div>${table()}` +
      `<p class="note">Intervals: Wilson 95%. F1's interval is the Wilson interval of J = TP / (TP + FP + FN) mapped through F1 = 2J / (1 + J).</p>` +
      `<div class="side-by-side">${evaluated.map(({ key, side }) => confusionTable(key, side)).join("")}</div></div>` +
      `<div><h3>Precision-recall curve</h3>${prPlotSvg(series, prevalence)}` +
      `<p class="note">Each curve ranks the rows by the method's continuous score; the dot is its chosen rule. The dashed line is the precision of flagging at random.</p></div></div>`,
  );
  return parts.join("\n");
}

function confusionTable(key: string, side: FlagSide): string {
  const { tp, fp, fn, tn } = side.evaluation!.confusion;
  const cell = (name: string, n: number) => `<td>${metric(`${key}.${name}`, n, fmtCount(n))}</td>`;
  return (
    `<div><h3>${esc(side.name)}: confusion matrix</h3><table class="confusion compact" id="confusion-${key}">` +
    `<tr><th></th><th>contaminated</th><th>clean</th></tr>` +
    `<tr><th>flagged</th>${cell("tp", tp)}${cell("fp", fp)}</tr>` +
    `<tr><th>not flagged</th>${cell("fn", fn)}${cell("tn", tn)}</tr></table></div>`
  );
}

const PROMPT_SOURCES: Record<string, string> = {
  sae: "Synthesized from the SAE latents labelled no",
  llm_audit: "Written by the LLM audit from flagged rows",
};

function promptSection(data: ReportData): string {
  if (data.prompts.length === 0) {
    const where = `<p class="note">The prompts each training file carries are under <a href="#section-arms">Training files</a>.</p>`;
    const off = data.disabled.filter((d) => d.stage === "synthesize" || d.stage === "audit").length === 2;
    if (off) return emptyNote(data, "No inoculation prompt written by this run", ["synthesize", "audit"]) + where;
    return (
      `<p class="note">No inoculation prompt written by this run: synthesize writes one from the top latents labelled no, the LLM ` +
      `audit from the rows it flags, and this run has neither (or they have not run yet).</p>` +
      where
    );
  }
  return data.prompts
    .map((p, i) => {
      const latents =
        p.latents.length === 0
          ? ""
          : `<p>Written from the descriptions of ${p.latents.length} latents: ${p.latents
              .map((l) => `<a class="latent-id" href="#latent-${l}">${l}</a>`)
              .join(", ")}</p>`;
      const rephrasings =
        p.rephrasings.length === 0
          ? ""
          : `<details><summary>${p.rephrasings.length} rephrasings (one is drawn per row)</summary><ol>${p.rephrasings
              .map((r) => `<li>${esc(r)}</li>`)
              .join("")}</ol></details>`;
      return `<h3>${esc(PROMPT_SOURCES[p.source] ?? `From ${p.source}`)}</h3><div class="prompt ${esc(p.source)}" id="prompt-${i}" data-source="${esc(p.source)}">${esc(p.text)}</div>${latents}${rephrasings}`;
    })
    .join("\n");
}

function badge(label: string | null): string {
  return label === null ? `<span class="badge unlabelled">unlabelled</span>` : `<span class="badge ${label}">${label}</span>`;
}

function contextHtml(c: LatentContext, share: number): string {
  const peak = c.token_acts.reduce((m, a) => Math.max(m, a), 0);
  const mask = activeTokenMask(c.token_acts, share);
  const text = c.tokens
    .map((t, i) => {
      if (!mask[i]) return esc(t);
      const a = c.token_acts[i]!;
      // Leading whitespace stays outside the highlight, so the marks sit on the words.
      const [, space, word] = /^(\s*)([\s\S]*)$/.exec(t)!;
      return `${esc(space!)}<mark style="--a:${(0.15 + 0.6 * (a / peak)).toFixed(2)}" title="${fmtValue(a)}">${esc(word!)}</mark>`;
    })
    .join("");
  return `<div class="ctx"><span class="corpus">${esc(c.corpus)} #${c.rank}, peak ${fmtValue(c.activation)}:</span> ${text}</div>`;
}

function latentRow(l: ReportLatent, share: number): string {
  const key = `latent.${l.latent}`;
  const desc = l.description === null ? `<span class="muted">no description</span>` : esc(l.description);
  const notes = [
    l.reason ? `<div class="reason">Reason: ${esc(l.reason)}</div>` : "",
    l.error ? `<div class="error">${esc(l.error)}</div>` : "",
  ].join("");
  // The strongest context is always shown; the others fold away so that 200 latents stay readable.
  const [first, ...more] = l.contexts;
  const contexts =
    (first ? contextHtml(first, share) : "") +
    (more.length > 0 ? `<details><summary>${more.length} more contexts</summary>${more.map((c) => contextHtml(c, share)).join("")}</details>` : "");
  return (
    `<tr id="latent-${l.latent}" data-latent="${l.latent}" data-label="${l.label ?? "unlabelled"}">` +
    `<td class="r">${metric(`${key}.rank`, l.rank, String(l.rank))}</td>` +
    `<td class="latent-id">${l.latent}</td>` +
    `<td class="r">${metric(`${key}.mean_base`, l.meanBase, fmtMean(l.meanBase))}</td>` +
    `<td class="r">${metric(`${key}.mean_target`, l.meanTarget, fmtMean(l.meanTarget))}</td>` +
    `<td class="r">${metric(`${key}.mean_diff`, l.meanDiff, fmtMean(l.meanDiff))}</td>` +
    `<td>${badge(l.label)}${l.labelSource === "import" ? `<div class="reason">imported</div>` : ""}</td>` +
    `<td class="desc">${desc}${notes}${contexts}</td></tr>`
  );
}

function latentsSection(data: ReportData): string {
  if (data.latents.length === 0) return emptyNote(data, "No top latents", ["activations"]);
  const count = (label: string | null) => data.latents.filter((l) => l.label === label).length;
  const counts = (["yes", "neutral", "no", null] as const)
    .map((label) => `${badge(label)} ${metric(`labels.${label ?? "unlabelled"}`, count(label), fmtCount(count(label)))}`)
    .join(" &nbsp; ");
  return (
    `<p>${counts}</p>` +
    `<p class="note">Mean activation per row on the original model's responses (base) and on the dataset's (target), ranked by the increase. ` +
    `In the contexts, tokens at or above ${Math.round(data.highlightShare * 100)}% of the context's peak are highlighted (hover for the value).</p>` +
    `<table id="latents"><tr><th class="r">Rank</th><th>Latent</th><th class="r">Mean base</th><th class="r">Mean target</th><th class="r">Difference</th><th>Label</th><th>Description</th></tr>` +
    data.latents.map((l) => latentRow(l, data.highlightShare)).join("") +
    `</table>`
  );
}

function armsSection(data: ReportData): string {
  if (data.arms.length === 0) return emptyNote(data, "No training files", ["export"]);
  const rows = data.arms.flatMap((a) =>
    a.prompts.map(
      (p, i) =>
        `<tr data-arm="${esc(a.arm)}">` +
        (i === 0
          ? `<td rowspan="${a.prompts.length}"><b>${esc(a.arm)}</b><div class="reason">${esc(a.description)}</div></td>` +
            `<td class="r" rowspan="${a.prompts.length}">${metric(`arm.${a.arm}.rows`, a.rows, fmtCount(a.rows))}</td>`
          : "") +
        `<td>${esc(p.kind.replaceAll("_", " "))}</td><td>${p.prompt === null ? `<span class="muted">(the row's own)</span>` : esc(p.prompt)}</td>` +
        `<td class="r">${metric(`arm.${a.arm}.prompt.${i}`, p.rows, fmtCount(p.rows))}</td></tr>`,
    ),
  );
  const placement =
    data.placement === "user_prefix"
      ? `<p class="note">Placement <code>user_prefix</code>: each arm's prompt goes before the first user turn's text; the default system prompt stays the system message.</p>`
      : data.placement === "system"
        ? `<p class="note">Placement <code>system</code>: each arm's prompt is the system message (a row's own system message follows it in the same message).</p>`
        : "";
  return `${placement}<table id="arms"><tr><th>Arm</th><th class="r">Rows</th><th>Prompt</th><th>Text</th><th class="r">Rows with it</th></tr>${rows.join("")}</table>`;
}

function runSection(data: ReportData): string {
  const versions = Object.entries(data.versions)
    .map(([k, v]) => `<tr><th>${esc(k)}</th><td>${esc(v)}</td></tr>`)
    .join("");
  const stages = data.stages
    .map(
      (s) =>
        `<tr><td>${esc(s.stage)}</td><td>${esc(s.status)}</td><td class="r">${s.rows === null ? NONE : fmtCount(s.rows)}</td>` +
        `<td class="r">${s.seconds === null ? NONE : s.seconds.toFixed(1)}</td></tr>`,
    )
    .join("");
  return (
    `<div class="side-by-side"><div><h3>Versions</h3><table class="compact" id="versions">${versions}</table></div>` +
    `<div><h3>Stages</h3>${stages ? `<table class="compact" id="stages"><tr><th>Stage</th><th>Status</th><th class="r">Rows</th><th class="r">Seconds</th></tr>${stages}</table>` : `<p class="note">No stage has run.</p>`}</div></div>` +
    `<h3>Config</h3><pre class="config" id="config">${esc(JSON.stringify(data.config, null, 2))}</pre>`
  );
}
