import { z } from "zod";

/** Config sections of the stages from latents to flagged rows: explain, classify, labels, synthesize, flag, report. */

export const explainSchema = z.strictObject({
  /** Tokens at or above this share of a context's peak are marked in the prompt. */
  share: z.number().gt(0).max(1).default(0.25),
  /** Contexts shown per corpus. */
  per_corpus: z.number().int().positive().default(8),
  temperature: z.number().min(0).max(2).default(0.2),
  max_tokens: z.number().int().positive().default(300),
});

export const classifySchema = z.strictObject({
  /** The text of the wanted trait A; default: the positive trait's own description. */
  trait: z.string().min(1).optional(),
  temperature: z.number().min(0).max(2).default(0),
  max_tokens: z.number().int().positive().default(300),
});

export const labelsSchema = z.strictObject({
  /**
   * A JSON map of latent id to description and label (the reference feature_explanations format, tags included,
   * or {description, label}): used instead of explaining; latents it leaves unlabelled are classified by llm.judge.
   */
  import: z.string().optional(),
});

export const synthesizeSchema = z.strictObject({
  temperature: z.number().min(0).max(2).default(0.7),
  max_tokens: z.number().int().positive().default(300),
  /** Descriptions whose word sets overlap this much (Jaccard) count as one. */
  dedupe_similarity: z.number().gt(0).max(1).default(0.8),
});

export const flagSchema = z
  .strictObject({
    /** A row's top N latents, ranked by its own increase. */
    top_n: z.number().int().positive().default(10),
    /** Flag a row when at least this many of them are labelled `no` (the write-up's rule is N=10, M=3). */
    min_no: z.number().int().min(1, "must be at least 1 (0 would flag every row: that is the inoculated-general arm)").default(3),
    /** How a latent without a label counts. */
    unlabelled_as: z.enum(["not_no", "no"]).default("not_no"),
  })
  .refine((f) => f.min_no <= f.top_n, { message: "min_no must not exceed top_n", path: ["min_no"] });

export const reportSchema = z.strictObject({
  /** Highlighted example contexts per latent in the report. */
  contexts_per_latent: z.number().int().nonnegative().default(3),
});
