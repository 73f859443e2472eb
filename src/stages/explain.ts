import { StageError } from "../errors.ts";
import { formatLatentContexts, type LatentContext } from "../labels/explain-format.ts";
import { parseExplainAnswer } from "../labels/parse-answers.ts";
import { promptPath, renderPrompt } from "../llm/prompts.ts";
import { LlmSession, type LlmItem } from "../llm/session.ts";
import { fillTempTable } from "../llm/temp-table.ts";
import type { Stage, StageContext, StageOutcome } from "../pipeline/stage.ts";

/**
 * One llm.judge call per top latent: it sees the latent's max-activating contexts from every harvested corpus,
 * the active tokens marked with their values, and writes a short description. Writes `feature_descriptions`
 * (latent, description, error): a latent the judge could not describe keeps a NULL description and the reason.
 */
export const explainStage: Stage = {
  name: "explain",
  description: "describe each top latent from its contexts (llm.judge)",
  version: 1,
  after: ["harvest"],
  enabled: (c) => c.sae !== undefined && c.labels.import === undefined,
  enableWith: "add an `sae` section (and no `labels.import`, whose labels stand in for the descriptions)",
  configSlice: (c) => ({ model: c.llm.judge?.model, explain: c.explain }),
  inputFiles: () => [promptPath("explain")],
  outputs: () => ["tables/feature_descriptions.parquet"],
  run: runExplain,
};

async function runExplain(ctx: StageContext): Promise<StageOutcome> {
  const { config, store, progress } = ctx;
  const { share, per_corpus, temperature, max_tokens } = config.explain;
  const latents = (await store.query(`SELECT latent FROM ${store.table("features")} ORDER BY rank`)).map((r) => Number(r.latent));
  const rows = await store.query(
    `SELECT latent, corpus, rank, activation, tokens, token_acts FROM ${store.table("feature_examples")}
     WHERE rank <= ${per_corpus} ORDER BY latent, corpus, rank`,
  );
  const byLatent = new Map<number, LatentContext[]>();
  for (const r of rows) {
    const list = byLatent.get(Number(r.latent)) ?? [];
    list.push({
      corpus: String(r.corpus),
      rank: Number(r.rank),
      activation: Number(r.activation),
      tokens: [...(r.tokens as string[])],
      token_acts: [...(r.token_acts as number[])].map(Number),
    });
    byLatent.set(Number(r.latent), list);
  }
  const items: LlmItem<string>[] = [];
  const unexplained = new Map<number, string>();
  for (const latent of latents) {
    const contexts = byLatent.get(latent) ?? [];
    if (contexts.length === 0) {
      // Nothing to show the judge: asking it anyway would only invite a made-up description.
      unexplained.set(latent, "no max-activating contexts were harvested for this latent");
      continue;
    }
    items.push({
      id: String(latent),
      request: {
        messages: renderPrompt("explain", { share_percent: String(Math.round(share * 100)), contexts: formatLatentContexts(contexts, { share, perCorpus: per_corpus }) }),
        temperature,
        max_tokens,
      },
      reask: "feedback",
      parse: (answer) => parseExplainAnswer(answer.texts[0] ?? ""),
    });
  }
  const llm = await LlmSession.open(ctx, "explain");
  const outcomes = await llm.batch("judge", items, progress.task("explain", items.length, "latents"));
  await llm.checkpoint(items.length);
  const out: [number, string | null, string | null][] = latents.map((latent) => {
    const o = outcomes.get(String(latent));
    if (!o) return [latent, null, unexplained.get(latent) ?? "not explained"];
    return o.status === "ok" ? [latent, o.value, null] : [latent, null, `${o.status}: ${o.error}`];
  });
  await fillTempTable(store, "explain_rows", { latent: "INTEGER", description: "VARCHAR", error: "VARCHAR" }, out);
  const written = await store.writeTable("feature_descriptions", "SELECT * FROM explain_rows ORDER BY latent");
  const described = out.filter((r) => r[1] !== null).length;
  if (described === 0 && latents.length > 0) throw new StageError("explain", "no latent could be described; see feature_descriptions.error");
  return { rows: written, counts: { latents: latents.length, described, undescribed: latents.length - described }, details: { llm: llm.usage() } };
}
