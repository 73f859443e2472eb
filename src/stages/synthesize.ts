import { StageError } from "../errors.ts";
import { dedupeDescriptions } from "../labels/dedupe.ts";
import { parseSynthesizeAnswer } from "../labels/parse-answers.ts";
import { promptPath, renderPrompt } from "../llm/prompts.ts";
import { LlmSession } from "../llm/session.ts";
import type { Stage, StageContext, StageOutcome } from "../pipeline/stage.ts";
import { sqlString } from "../store/sql.ts";
import { traitText } from "./classify.ts";

/**
 * Writes one inoculation prompt (a short "You are…" system prompt naming the unwanted behaviour) from the
 * deduplicated descriptions of the `no` latents, with llm.judge. Writes `sae_prompt` (prompt, latents; a NULL
 * prompt when no top latent is labelled `no`).
 */
export const synthesizeStage: Stage = {
  name: "synthesize",
  description: "write the inoculation prompt from the `no` latents (llm.judge)",
  version: 1,
  after: ["classify"],
  enabled: (c) => c.sae !== undefined && c.llm.judge !== undefined,
  enableWith: "add an `sae` section and `llm.judge`",
  configSlice: (c) => ({ model: c.llm.judge?.model, synthesize: c.synthesize, trait: traitText(c) }),
  inputFiles: () => [promptPath("synthesize")],
  outputs: () => ["tables/sae_prompt.parquet"],
  run: runSynthesize,
};

async function runSynthesize(ctx: StageContext): Promise<StageOutcome> {
  const { config, store, progress } = ctx;
  // The `no` latents among the run's top latents, strongest increase first.
  const rows = await store.query(
    `SELECT l.latent, l.description FROM ${store.table("feature_labels")} l JOIN ${store.table("features")} f USING (latent)
     WHERE l.label = 'no' AND l.description IS NOT NULL ORDER BY f.rank`,
  );
  if (rows.length === 0) {
    // A finding, not a failure: a clean dataset or a weak SAE. The SAE arms flag no row then (unless unlabelled
    // latents count as `no`, which export refuses without a prompt), and every other arm and the report go on.
    ctx.log("synthesize: no top latent is labelled `no`, so there is no unwanted behaviour to name and no SAE prompt (see feature_labels)");
    await store.writeTable("sae_prompt", "SELECT NULL::VARCHAR AS prompt, []::INTEGER[] AS latents");
    return { rows: 0, counts: { no_latents: 0, distinct_descriptions: 0 }, details: { prompt: null } };
  }
  const groups = dedupeDescriptions(rows.map((r) => ({ latent: Number(r.latent), description: String(r.description) })), config.synthesize.dedupe_similarity);
  const descriptions = groups.map((g, i) => `${i + 1}. ${g.kept.description}`).join("\n");
  const llm = await LlmSession.open(ctx, "synthesize");
  const outcomes = await llm.batch(
    "judge",
    [
      {
        id: "sae",
        request: {
          messages: renderPrompt("synthesize", { trait: traitText(config), count: String(groups.length), descriptions }),
          temperature: config.synthesize.temperature,
          max_tokens: config.synthesize.max_tokens,
        },
        reask: "feedback",
        parse: (answer) => parseSynthesizeAnswer(answer.texts[0] ?? ""),
      },
    ],
    progress.task("synthesize", 1, "prompts"),
  );
  await llm.checkpoint(1);
  const outcome = outcomes.get("sae")!;
  if (outcome.status !== "ok") {
    throw new StageError("synthesize", `llm.judge wrote no usable prompt: ${outcome.error}. Rerun, or raise llm.judge.parse_retries.`);
  }
  const latents = rows.map((r) => Number(r.latent));
  await store.writeTable("sae_prompt", `SELECT ${sqlString(outcome.value)} AS prompt, [${latents.join(", ")}]::INTEGER[] AS latents`);
  return {
    rows: 1,
    counts: { no_latents: latents.length, distinct_descriptions: groups.length },
    details: { prompt: outcome.value, llm: llm.usage() },
  };
}
