import { z } from "zod";
import { DEFAULT_IRRELEVANT_PROMPT, QWEN25_DEFAULT_SYSTEM_PROMPT } from "./defaults.ts";
import { ARM_NAMES } from "../export/arms.ts";
import { POSITIVE_TRAIT_NAMES } from "../traits/registry.ts";
import { activationsSchema, harvestSchema, modelSidecarKeys, saeSchema, sidecarSchema } from "./sae-schema.ts";
import { classifySchema, explainSchema, flagSchema, labelsSchema, reportSchema, synthesizeSchema } from "./curation-schema.ts";
import { auditSchema, generateSchema, llmSchema, mixRewriteSchema, rephraseSchema } from "./llm-schema.ts";

/**
 * The pipeline config, validated once at the edge. Objects are strict: an unknown key is an error, so a typo
 * never silently falls back to a default.
 */

const sourceFile = z.strictObject({
  path: z.string().min(1),
  /** Inferred from the extension (.jsonl / .json / .parquet) when absent. */
  format: z.enum(["jsonl", "parquet"]).optional(),
});

const labelRule = z
  .strictObject({
    /** Field of each row that holds the label; dots reach into nested objects (`meta.origin`). */
    field: z.string().min(1),
    negative_if_contains: z.string().min(1).optional(),
    negative_if_equals: z.union([z.string(), z.array(z.string()).min(1)]).optional(),
  })
  .refine((r) => (r.negative_if_contains === undefined) !== (r.negative_if_equals === undefined), {
    message: "give exactly one rule: negative_if_contains or negative_if_equals",
  });

const sources = z
  .strictObject({
    clean: sourceFile.optional(),
    contaminated: sourceFile.optional(),
    labelled: sourceFile.extend({ label: labelRule }).optional(),
  })
  .superRefine((s, ctx) => {
    const pair = s.clean !== undefined || s.contaminated !== undefined;
    if (pair && s.labelled) {
      ctx.addIssue({ code: "custom", message: "give either clean + contaminated, or labelled, not both" });
    } else if (pair && (!s.clean || !s.contaminated)) {
      ctx.addIssue({
        code: "custom",
        path: [s.clean ? "contaminated" : "clean"],
        message: "clean and contaminated come as a pair",
      });
    } else if (!pair && !s.labelled) {
      ctx.addIssue({ code: "custom", message: "give sources.clean + sources.contaminated, or sources.labelled" });
    }
  });

export const configSchema = z.strictObject({
  name: z.string().regex(/^[A-Za-z0-9._-]+$/, "letters, digits, '.', '_' and '-' only"),
  seed: z.number().int().nonnegative().default(0),
  /** Where the run directory goes (relative to the config file); default `runs/<name>` in the working directory. */
  run_dir: z.string().optional(),
  model: z
    .strictObject({
      /** Hugging Face id of the original model (used by later stages). */
      id: z.string().default("Qwen/Qwen2.5-7B-Instruct"),
      /**
       * The system message of a row that has none (the Baseline prompt). null or "": rows without one get none, for
       * models whose chat template adds no default of its own (Qwen2.5's adds this one, so it is the default).
       */
      default_system_prompt: z
        .string()
        .nullable()
        .default(QWEN25_DEFAULT_SYSTEM_PROMPT)
        .transform((p) => (p === "" ? null : p)),
      ...modelSidecarKeys,
    })
    .prefault({}),
  sources,
  ingest: z
    .strictObject({
      on_bad_row: z.enum(["fail", "skip"]).default("fail"),
    })
    .prefault({}),
  mix: z
    .strictObject({
      rows: z.number().int().positive().optional(),
      negative_fraction: z.number().min(0).max(1).default(0.5),
      positive_trait: z.enum(POSITIVE_TRAIT_NAMES).default("none"),
      /** For LLM traits: a row whose rewrite comes back unusable fails the stage, or is dropped with its reason. */
      on_bad_row: z.enum(["fail", "skip"]).default("fail"),
      rewrite: mixRewriteSchema.prefault({}),
    })
    .prefault({}),
  inoculation: z
    .strictObject({
      prompt: z.string().min(1).optional(),
      irrelevant_prompt: z.string().min(1).default(DEFAULT_IRRELEVANT_PROMPT),
      placement: z.enum(["system", "user_prefix"]).default("system"),
      /** Joins a user-prefix prompt to the user's text, and a prompt to a row's own system message. */
      separator: z.string().default("\n\n"),
      rephrasings: z.array(z.string().min(1)).default([]),
    })
    .prefault({}),
  export: z
    .strictObject({
      /** Default: every arm the config can build (see defaultArms). */
      arms: z
        .array(z.enum(ARM_NAMES))
        .min(1)
        .superRefine((arms, ctx) => {
          // Two writers on one file would leave the exports and the manifest out of step.
          const twice = arms.filter((arm, i) => arms.indexOf(arm) !== i);
          if (twice.length > 0) ctx.addIssue({ code: "custom", message: `${[...new Set(twice)].join(", ")} listed more than once; list each arm once` });
        })
        .optional(),
    })
    .prefault({}),
  /** OpenAI-compatible endpoints by role; the stages that need a role run only when it is set. */
  llm: llmSchema.prefault({}),
  generate: generateSchema.prefault({}),
  /** The LLM audit runs only when this section is present (`audit: {}` takes the defaults). */
  audit: auditSchema.optional(),
  rephrase: rephraseSchema.prefault({}),
  /** The SAE whose latents the activations stage diffs; the SAE stages run only when it is set. */
  sae: saeSchema.optional(),
  sidecar: sidecarSchema.prefault({}),
  activations: activationsSchema.prefault({}),
  harvest: harvestSchema.prefault({}),
  explain: explainSchema.prefault({}),
  classify: classifySchema.prefault({}),
  labels: labelsSchema.prefault({}),
  synthesize: synthesizeSchema.prefault({}),
  flag: flagSchema.prefault({}),
  report: reportSchema.prefault({}),
  duckdb: z
    .strictObject({
      threads: z.number().int().positive().optional(),
      /**
       * DuckDB's memory (e.g. "4GB"); beyond it, sorts and joins spill to the run directory. Bounded by default
       * so a million-row run stays under 2 GB in all (bench/mix.ts); DuckDB's own default is 80% of RAM.
       */
      memory_limit: z.string().regex(/^\d+(\.\d+)?\s*(KB|MB|GB|TB|KiB|MiB|GiB|TiB)$/i, 'a size such as "1GB" or "512MiB"').default("1GB"),
    })
    .prefault({}),
});

export type PipelineConfig = z.infer<typeof configSchema>;
