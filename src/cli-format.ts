import { llmDetailLines } from "./llm/details-lines.ts";
import type { PipelineSummary, StageStatusLine } from "./pipeline/runner.ts";

function formatCounts(counts: Record<string, number>): string {
  return Object.entries(counts)
    .map(([k, v]) => `${k}=${v}`)
    .join(" ");
}

function seconds(s: number | null): string {
  return s === null ? "-" : `${s.toFixed(1)}s`;
}

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? "").length)));
  return rows.map((r) => r.map((cell, i) => (i === r.length - 1 ? cell : cell.padEnd(widths[i]!))).join("  ")).join("\n") + "\n";
}

export function formatSummary(summary: PipelineSummary): string {
  const rows = [["stage", "result", "rows", "time", "counts"]];
  // Stages the config does not ask for are left out here (they are in --json and in `status`).
  for (const s of summary.stages.filter((x) => x.status !== "disabled")) {
    rows.push([s.stage, s.status, s.rows === null ? "-" : String(s.rows), seconds(s.seconds), formatCounts(s.counts)]);
  }
  return `run directory: ${summary.runDir}\n${table(rows)}${detailLines(summary.stages)}`;
}

export function formatStatus(lines: StageStatusLine[]): string {
  const rows = [["stage", "status", "rows", "time", "counts"]];
  for (const l of lines) {
    const upstream = l.stale_after ? lines.find((x) => x.stage === l.stale_after)?.status : undefined;
    const why = upstream === "done" ? "has run since" : upstream === "running" ? "is running" : "did not finish";
    const status = l.stale_after ? `done, stale (${l.stale_after} ${why})` : l.status;
    rows.push([l.stage, status, l.rows === null ? "-" : String(l.rows), seconds(l.seconds), l.error ? `error: ${l.error.split("\n")[0]}` : formatCounts(l.counts)]);
  }
  return table(rows) + detailLines(lines);
}

/**
 * Usage and audit figures of the LLM stages, under the table: `stage: line`. A stage this run skipped shows what
 * its last run recorded, and says so: its requests were not sent now.
 */
function detailLines(stages: readonly { stage: string; status?: string; details: Record<string, unknown> }[]): string {
  return stages
    .flatMap((s) => llmDetailLines(s.details).map((line) => `${s.stage}${s.status === "skipped" ? " (its last run)" : ""}: ${line}\n`))
    .join("");
}
