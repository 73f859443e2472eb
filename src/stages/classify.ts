import { StageError } from "../errors.ts";
import { featureLabelsSql, type FeatureLabelRow } from "../labels/feature-labels.ts";
import { importLabelFile, importedLabelRows } from "../labels/import.ts";
import { CLASSIFY_FORMAT, parseClassifyAnswer, type ClassifyAnswer } from "../labels/parse-answers.ts";
import { promptPath, renderPrompt } from "../llm/prompts.ts";
import { LlmSession, type LlmItem } from "../llm/session.ts";
import type { Stage, StageContext, StageOutcome } from "../pipeline/stage.ts";
import type { ResolvedConfig } from "../config/load.ts";
import { positiveTrait } from "../traits/registry.ts";

/**
 * Labels each latent's description against the wanted trait A: `yes` (explained by A), `neutral` (ordinary
 * assistant behaviour, formatting, harmless artefacts) or `no` (anything else). Descriptions come from `explain`,
 * or from an imported label file (`labels.import`), whose labels are kept as they are. An answer that never
 * parses leaves the latent unlabelled (label NULL, the reason in `error`): it is never counted as `no` by
 * accident. Writes `feature_labels`.
 */
export const classifyStage: Stage = {
  name: "classify",
  description: "label each latent description against the wanted trait (llm.judge)",
  version: 1,
  // activations too: with imported labels explain does not run, and the counts are over the run's top latents.
  after: ["activations", "explain"],
  enabled: (c) => c.sae !== undefined || c.labels.import !== undefined,
  enableWith: "add an `sae` section, or `labels.import`",
  configSlice: (c) => ({ model: c.llm.judge?.model, classify: c.classify, trait: traitText(c), import: c.labels.import ?? null }),
  inputFiles: (c) => [promptPath("classify"), ...(c.labels.import ? [c.labels.import] : [])],
  outputs: () => ["tables/feature_labels.parquet"],
  run: runClassify,
};

/** The text of trait A the descriptions are judged against. */
export function traitText(c: ResolvedConfig): string {
  return c.classify.trait ?? positiveTrait(c.mix.positive_trait).description;
}

async function descriptions(ctx: StageContext): Promise<{ rows: FeatureLabelRow[]; rejected: number }> {
  const { config, store } = ctx;
  if (config.labels.import) {
    const imported = await importLabelFile(config.labels.import);
    for (const r of imported.rejected) ctx.log(`classify: not imported: latent ${r.latent}: ${r.reason}`);
    return { rows: importedLabelRows(imported.labels), rejected: imported.rejected.length };
  }
  const rows = await store.query(`SELECT latent, description, error FROM ${store.table("feature_descriptions")} ORDER BY latent`);
  return {
    rows: rows.map((r) => ({
      latent: Number(r.latent),
      description: (r.description as string | null) ?? null,
      label: null,
      label_source: "llm",
      reason: null,
      error: (r.error as string | null) ?? null,
    })),
    rejected: 0,
  };
}

async function runClassify(ctx: StageContext): Promise<StageOutcome> {
  const { config, store, progress } = ctx;
  const { rows, rejected } = await descriptions(ctx);
  const top = config.sae && (await store.hasTable("features")) ? (await store.query(`SELECT latent FROM ${store.table("features")}`)).map((r) => Number(r.latent)) : null;
  // Before any request: a file for another SAE is a mistake to fix, not latents to label.
  if (config.labels.import && top !== null && rows.length > 0 && !rows.some((r) => top.includes(r.latent))) {
    throw new StageError(
      "classify",
      `labels.import: none of the ${rows.length} latents labelled in ${config.labels.import} is among this run's ${top.length} top latents ` +
        `(${top.slice(0, 5).join(", ")}${top.length > 5 ? ", …" : ""}): the file labels another SAE's latents, or another run's. ` +
        `Import labels for this SAE, or leave labels.import out to have llm.judge describe and label the top latents.`,
    );
  }
  const trait = traitText(config);
  const todo = rows.filter((r) => r.label === null && r.description !== null);
  let usage = {};
  if (todo.length > 0) {
    if (!config.llm.judge) {
      throw new StageError("classify", `${todo.length} latents have a description but no label; configure llm.judge to classify them`);
    }
    const items: LlmItem<ClassifyAnswer>[] = todo.map((r) => ({
      id: String(r.latent),
      request: {
        messages: renderPrompt("classify", { trait, description: r.description! }),
        temperature: config.classify.temperature,
        max_tokens: config.classify.max_tokens,
        response_format: CLASSIFY_FORMAT,
      },
      reask: "feedback",
      parse: (answer) => parseClassifyAnswer(answer.texts[0] ?? ""),
    }));
    const llm = await LlmSession.open(ctx, "classify");
    const outcomes = await llm.batch("judge", items, progress.task("classify", items.length, "latents"));
    await llm.checkpoint(items.length);
    for (const r of todo) {
      const o = outcomes.get(String(r.latent))!;
      if (o.status === "ok") {
        r.label = o.value.label;
        r.reason = o.value.reason ?? null;
      } else {
        r.error = `${o.status}: ${o.error}`;
      }
    }
    usage = llm.usage();
  }
  const written = await store.writeTable("feature_labels", featureLabelsSql(rows));
  return { rows: written, counts: labelCounts(rows, top, rejected), details: { trait, llm: usage } };
}

/**
 * The labels over the latents the flag rule reads: the run's top latents where there are any (an imported file
 * may label others, or miss some), else every labelled latent.
 */
function labelCounts(rows: readonly FeatureLabelRow[], top: readonly number[] | null, rejected: number): Record<string, number> {
  const byLatent = new Map(rows.map((r) => [r.latent, r.label]));
  const labels = top === null ? rows.map((r) => r.label) : top.map((latent) => byLatent.get(latent) ?? null);
  const count = (label: string | null) => labels.filter((l) => l === label).length;
  const topSet = new Set(top ?? []);
  return {
    latents: labels.length,
    yes: count("yes"),
    neutral: count("neutral"),
    no: count("no"),
    unlabelled: count(null),
    ...(top !== null ? { labels_outside_top: rows.filter((r) => !topSet.has(r.latent)).length } : {}),
    import_rejected: rejected,
  };
}
