import type { RoleUsage } from "../llm/usage.ts";
import type { Interval } from "./bootstrap.ts";
import type { Metric } from "./summarize.ts";

/** How figures read in the terminal and the report: scores on 0-100, rates as shares. */

export const METRIC_LABELS: Record<Metric, string> = {
  mean_score: "mean score (0-100)",
  trait_rate: "trait rate (score > threshold)",
  coherent_rate: "coherent rate",
  coherent_trait_rate: "trait rate among coherent answers",
};

export function fmtFigure(metric: Metric, x: number): string {
  return metric === "mean_score" ? x.toFixed(1) : x.toFixed(3);
}

/** `42.1 [38.0, 46.3] (n=20 q)`: the number of independent questions is printed beside every figure. */
export function fmtInterval(metric: Metric, f: Interval): string {
  return `${fmtFigure(metric, f.mean)} [${fmtFigure(metric, f.lo)}, ${fmtFigure(metric, f.hi)}] (n=${f.questions} q)`;
}

/** The terminal summary of `inoculant eval`: every figure with its interval and question count, then warnings. */
export function formatEvalSummary(summary: {
  report: string;
  models: readonly { model: string; status: string; requests: number; failed: number; usage: Partial<Record<string, RoleUsage>> }[];
  cells: readonly { model: string; prompt: string; trait: string; answers: number; unscored: number; refusals: number; figures: Partial<Record<Metric, Interval>> }[];
  differences: readonly { model: string; reference: string; prompt: string; trait: string; metric: Metric; interval: Interval }[];
  checks: readonly { model: string; trait: string; metric: Metric; interval: Interval }[];
  warnings: readonly string[];
}): string {
  const lines: string[] = [];
  for (const c of summary.cells) {
    const figures = (Object.entries(c.figures) as [Metric, Interval][]).map(([m, f]) => `${m} ${fmtInterval(m, f)}`);
    lines.push(`${c.trait}  ${c.model}  ${c.prompt}: ${figures.length > 0 ? `${figures.join("; ")}; ` : "no figures (no answer scored); "}${c.answers} answers, ${c.unscored} unscored, ${c.refusals} refusals`);
  }
  for (const d of summary.differences) {
    lines.push(`${d.trait}  ${d.model} − ${d.reference}  ${d.prompt}: ${d.metric} ${fmtInterval(d.metric, d.interval)}`);
  }
  for (const c of summary.checks) {
    lines.push(`${c.trait}  judge check (${c.model} instructed for − against the trait): ${c.metric} ${fmtInterval(c.metric, c.interval)}`);
  }
  for (const m of summary.models) {
    const usage = Object.entries(m.usage).map(([role, u]) => `${role} ${u!.model} ${u!.requests} sent, ${u!.cache_hits} stored, ${u!.input_tokens} in / ${u!.output_tokens} out tokens${u!.cost_usd !== undefined ? `, $${u!.cost_usd.toFixed(2)}` : ""}`);
    lines.push(`model ${m.model}: ${m.status === "done" ? "complete" : `incomplete (${m.failed} of ${m.requests} requests without a usable answer)`}; ${usage.join("; ")}`);
  }
  for (const w of summary.warnings) lines.push(`warning: ${w}`);
  lines.push(`report: ${summary.report}`);
  return `${lines.join("\n")}\n`;
}
