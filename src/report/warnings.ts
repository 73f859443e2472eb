import { plural } from "../util/plural.ts";
import type { ReportData } from "./report-data.ts";

/**
 * Where the data make the results weak, as warnings at the top of the report. The thresholds are deliberately
 * simple, so a reader can check them by hand:
 * - few contaminated rows: under 50, the Wilson 95% interval of a recall near 0.8 is wider than ±0.11, so the
 *   flags cannot be told apart from each other (or from the random control) with any confidence;
 * - many unlabelled latents: over 10% of the top latents unlabelled, the flag rule is deciding on partial labels;
 * - one label crowding the top latents: 75% or more of the 20 highest-ranked labelled latents share a label. When
 *   that is `yes`, the wanted trait fills each row's top N and leaves few places for the unwanted one (raise N or
 *   lower M); when it is `no`, check the wanted trait's text: if the latents of A were labelled `no`, nearly every
 *   row is flagged;
 * - fewer `no` latents than M: no row can reach the rule's threshold;
 * - a method that flagged no row at all: its arms are the baseline;
 * - rows a method gave no verdict on (any at all): its arm leaves them unprompted, and its precision and recall
 *   leave them out, so the arm covers less than those figures say;
 * - an irrelevant control drawing from fewer wordings than the inoculated arm: the two then differ in prompt
 *   variety as well as content, and variety changes how much a model conditions on a prompt.
 */
export const WARNING_THRESHOLDS = {
  minContaminatedRows: 50,
  maxUnlabelledShare: 0.1,
  crowdingTop: 20,
  crowdingShare: 0.75,
} as const;

export type WarningCode =
  | "few_contaminated"
  | "many_unlabelled"
  | "crowded_top"
  | "too_few_no_latents"
  | "no_rows_flagged"
  | "unjudged_rows"
  | "uneven_control";

export interface ReportWarning {
  code: WarningCode;
  message: string;
}

export function reportWarnings(data: ReportData): ReportWarning[] {
  const t = WARNING_THRESHOLDS;
  const warnings: ReportWarning[] = [];
  const contaminated = data.dataset.contaminated;
  if (contaminated !== null && contaminated < t.minContaminatedRows) {
    warnings.push({
      code: "few_contaminated",
      message: `Only ${contaminated} of ${data.dataset.rows} rows are contaminated (fewer than ${t.minContaminatedRows}): precision and recall have wide intervals, so small differences between arms mean little.`,
    });
  }
  const latents = data.latents;
  const unlabelled = latents.filter((l) => l.label === null).length;
  if (latents.length > 0 && unlabelled / latents.length > t.maxUnlabelledShare) {
    warnings.push({
      code: "many_unlabelled",
      message: `${unlabelled} of ${latents.length} top latents are unlabelled (over ${pct(t.maxUnlabelledShare)}): the flag rule counts them as ${data.flagRule?.unlabelledAs === "no" ? "no" : "not no"}, so the flags rest on partial labels.`,
    });
  }
  const top = [...latents].sort((a, b) => a.rank - b.rank).filter((l) => l.label !== null).slice(0, t.crowdingTop);
  for (const label of ["yes", "no"] as const) {
    const n = top.filter((l) => l.label === label).length;
    if (top.length >= 5 && n / top.length >= t.crowdingShare) {
      warnings.push({
        code: "crowded_top",
        message:
          label === "yes"
            ? `${n} of the ${top.length} highest-ranked labelled latents are explained by the wanted trait: it crowds each row's top N and leaves few places for the unwanted trait's latents (consider a larger N or a smaller M).`
            : `${n} of the ${top.length} highest-ranked labelled latents are labelled no: check that the wanted trait's text matches the data, since latents of the wanted trait labelled no would flag nearly every row.`,
      });
    }
  }
  const rule = data.flagRule;
  if (rule && latents.length > 0) {
    const counted = latents.filter((l) => l.label === "no" || (l.label === null && rule.unlabelledAs === "no")).length;
    if (counted < rule.minNo) {
      warnings.push({
        code: "too_few_no_latents",
        message: `Only ${counted} top latents count as no, fewer than the rule's M = ${rule.minNo}: no row can be flagged, so the inoculated-sae and inoculated-sae-random arms are the baseline.`,
      });
    }
  }
  const unreachable = warnings.some((w) => w.code === "too_few_no_latents");
  for (const [side, arms] of [
    [unreachable ? null : data.sae, "the inoculated-sae and inoculated-sae-random arms are"],
    [data.llm, "the inoculated-llm arm is"],
  ] as const) {
    if (side && side.rows > 0 && side.flagged === 0) {
      warnings.push({ code: "no_rows_flagged", message: `The ${side.name} flagged no row: ${arms} the baseline.` });
    }
  }
  for (const side of [data.sae, data.llm]) {
    if (side && side.unjudged > 0) {
      warnings.push({
        code: "unjudged_rows",
        message: `${side.unjudged} of ${side.rows} rows got no verdict from the ${side.name}: they carry no prompt in its arm, and its precision and recall leave them out.`,
      });
    }
  }
  const wordings = (arm: string, kind: string) => data.arms.find((a) => a.arm === arm)?.prompts.filter((p) => p.kind === kind).length;
  const inoculated = wordings("inoculated-general", "inoculation");
  const irrelevant = wordings("irrelevant-general", "irrelevant");
  if (inoculated !== undefined && irrelevant !== undefined && irrelevant < inoculated) {
    warnings.push({
      code: "uneven_control",
      message: `irrelevant-general draws from ${plural(irrelevant, "wording")} and inoculated-general from ${inoculated}: the control differs in prompt variety as well as content. Set rephrase.k to at least ${inoculated - 1} so that the irrelevant prompt gets as many.`,
    });
  }
  return warnings;
}

function pct(share: number): string {
  return `${Math.round(share * 100)}%`;
}
