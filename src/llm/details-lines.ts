import type { FlagMetrics } from "../stats/flag-metrics.ts";
import type { Proportion } from "../stats/wilson.ts";
import type { RoleUsage } from "./usage.ts";

/**
 * Human lines for what the LLM stages put in a manifest entry's details: usage per role (`details.llm`) and the
 * LLM audit's agreement with ground truth (`details.audit`). `status` and the run summary print them.
 */
export function llmDetailLines(details: Record<string, unknown>): string[] {
  const lines: string[] = [];
  const usage = details.llm as Record<string, RoleUsage> | undefined;
  for (const [role, u] of Object.entries(usage ?? {})) {
    const cost = u.cost_usd !== undefined ? `, ~$${u.cost_usd.toFixed(4)}` : "";
    const problems = [
      u.retries ? `${u.retries} retries` : "",
      u.failed ? `${u.failed} failed` : "",
      u.unparsed ? `${u.unparsed} unparsed` : "",
    ].filter(Boolean);
    lines.push(
      `llm.${role} ${u.model}: ${u.requests} sent, ${u.cache_hits} cached${problems.length ? `, ${problems.join(", ")}` : ""}; ` +
        `${u.input_tokens.toLocaleString("en-US")} in / ${u.output_tokens.toLocaleString("en-US")} out tokens${cost}`,
    );
  }
  const audit = details.audit as (FlagMetrics & { prompt: string | null }) | undefined;
  if (audit) {
    const { tp, fp } = audit.confusion;
    lines.push(
      `LLM audit flagged ${tp + fp} of ${audit.judged} rows${audit.unjudged ? ` (+${audit.unjudged} unparsed)` : ""} against ground truth: ` +
        `precision ${rate(audit.precision)}, recall ${rate(audit.recall)} (Wilson 95%)`,
    );
  }
  return lines;
}

function rate(p: Proportion): string {
  if (p.value === null) return "n/a (0/0)";
  return `${p.value.toFixed(2)} [${p.low!.toFixed(2)}, ${p.high!.toFixed(2)}] (${p.k}/${p.n})`;
}
