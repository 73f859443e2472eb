import { z } from "zod";

/** Config sections of the SAE stages (activations, harvest) and the sidecar that runs them. */

export const saeSchema = z.strictObject({
  /** A local folder, or `hf://REPO[@REV]/FOLDER`, e.g. hf://andyrdt/saes-qwen2.5-7b-instruct/resid_post_layer_15/trainer_1 */
  path: z.string().min(1),
  format: z.enum(["dictionary_learning", "saelens"]).default("dictionary_learning"),
  /** `threshold`: faithful BatchTopK encode; `relu`: as SAELens loads the andyrdt SAEs (reproduces the reference). */
  encode: z.enum(["threshold", "relu"]).default("threshold"),
  /** The 0-indexed block whose output is hooked (hidden_states[block + 1]); default: the SAE config's layer. */
  block: z.number().int().nonnegative().optional(),
});

export const sidecarSchema = z.strictObject({
  /** The sidecar's interpreter; default the environment `npm run setup:sidecar` creates. */
  python: z.string().optional(),
  device: z.string().regex(/^(auto|cpu|cuda|cuda:\d+)$/, "auto, cpu, cuda or cuda:N").default("auto"),
  /** Tokens per forward batch (padding included). */
  token_budget: z.number().int().positive().default(16384),
  /** A sidecar silent for this long is considered hung and stopped. */
  idle_timeout_s: z.number().positive().default(900),
});

export const poolingSchema = z.strictObject({
  tokens: z.enum(["all", "response"]).default("all"),
  exclude_first: z.boolean().default(true),
  exclude_special: z.boolean().default(true),
  /** Tokens whose residual norm is over this multiple of the median are left out; null keeps them. */
  outlier_norm_multiple: z.number().positive().nullable().default(100),
  /** Reference-compatible: truncate target and base to the shorter length before pooling. */
  truncate_to_shorter: z.boolean().default(false),
});

export const activationsSchema = z.strictObject({
  top_n: z.number().int().positive().default(200),
  /** Per row, its most divergent latents over the whole dictionary. */
  row_top_k: z.number().int().positive().default(20),
  shard_rows: z.number().int().positive().default(256),
  pooling: poolingSchema.prefault({}),
  /**
   * Base responses from elsewhere: a JSONL or Parquet file of {row_id, response}. Without it, the `generate`
   * stage's base_responses are used.
   */
  base_responses: z.string().optional(),
});

const corpusSchema = z
  .strictObject({
    name: z.string().regex(/^[A-Za-z0-9._-]+$/),
    /** A local .jsonl/.parquet file, or hf://datasets/REPO[@REV]/FILE. */
    path: z.string().min(1),
    text_field: z.string().optional(),
    messages_field: z.string().optional(),
    max_rows: z.number().int().positive().optional(),
    /** `skip`: a row that cannot be read (not JSON or UTF-8, no such field, not a string) is counted and left out. */
    on_bad_row: z.enum(["fail", "skip"]).default("fail"),
  })
  .refine((c) => (c.text_field === undefined) !== (c.messages_field === undefined), {
    message: "give exactly one of text_field or messages_field",
  });

export const harvestSchema = z
  .strictObject({
    top_k: z.number().int().positive().default(8),
    window: z.strictObject({ before: z.number().int().nonnegative().default(24), after: z.number().int().nonnegative().default(8) }).prefault({}),
    /** The dataset's own rows are one corpus, named `dataset`. */
    include_dataset: z.boolean().default(true),
    corpora: z.array(corpusSchema).default([]),
    /** Longest sequence (tokens) read from any corpus row. */
    max_tokens: z.number().int().positive().default(512),
    /** Rows per cached shard: a killed harvest resumes at the first shard it had not finished. */
    shard_rows: z.number().int().positive().default(1024),
  })
  // Checked here, not when harvest starts: by then activations may have run on a GPU for hours.
  .superRefine((h, ctx) => {
    const seen = new Set<string>(h.include_dataset ? ["dataset"] : []);
    h.corpora.forEach((c, i) => {
      if (seen.has(c.name)) {
        const taken = c.name === "dataset" && h.include_dataset ? "is the dataset's own corpus (include_dataset)" : "is used by another corpus";
        ctx.addIssue({ code: "custom", path: ["corpora", i, "name"], message: `"${c.name}" ${taken}; give each corpus its own name` });
      }
      seen.add(c.name);
    });
    if (!h.include_dataset && h.corpora.length === 0) {
      ctx.addIssue({ code: "custom", path: ["include_dataset"], message: "false with no corpora leaves harvest nothing to read; list harvest.corpora or keep the dataset" });
    }
  });

/** Extra keys of `model` for the sidecar. */
export const modelSidecarKeys = {
  revision: z.string().optional(),
  /** A local Hugging Face snapshot folder, used instead of downloading `id`. */
  path: z.string().optional(),
  /** A Python file defining load_backend(options), for custom models (see sae/README.md). */
  python_file: z.string().optional(),
  python_options: z.record(z.string(), z.unknown()).optional(),
  dtype: z.enum(["auto", "bfloat16", "float16", "float32"]).default("auto"),
};
