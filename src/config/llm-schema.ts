import { z } from "zod";

/** Config sections of the LLM layer (roles) and of the stages that call it (generate, audit, rephrase). */

/**
 * One OpenAI-compatible endpoint and how to talk to it. The key itself never appears here: `api_key_env` names
 * the environment variable that holds it, read when a call is made.
 */
export const llmRoleSchema = z.strictObject({
  model: z.string().min(1),
  base_url: z
    .url({ protocol: /^https?$/, error: "must be an http:// or https:// URL, such as http://localhost:8000/v1" })
    .default("https://api.openai.com/v1"),
  /** Absent for a local server that wants no key (vLLM without --api-key). */
  api_key_env: z
    .string()
    .regex(/^[A-Za-z_][A-Za-z0-9_]*$/, "the name of an environment variable, e.g. OPENAI_API_KEY")
    .optional(),
  /** Requests in flight at once. */
  concurrency: z.number().int().positive().default(16),
  timeout_s: z.number().positive().default(120),
  /** Retries of a rate-limited, failed (5xx), unreachable or timed-out request. */
  max_retries: z.number().int().nonnegative().default(5),
  /** First backoff; it doubles with each retry (a server's retry-after wins). */
  backoff_s: z.number().positive().default(1),
  /** New samples asked for when an answer does not parse, before it is recorded as unparsed. */
  parse_retries: z.number().int().nonnegative().default(2),
  /** USD per million tokens; with both set, usage comes with a cost estimate. */
  price_per_million_input: z.number().nonnegative().optional(),
  price_per_million_output: z.number().nonnegative().optional(),
});

export const LLM_ROLE_NAMES = ["generator", "judge"] as const;
export type LlmRoleName = (typeof LLM_ROLE_NAMES)[number];

export const llmSchema = z.strictObject({
  /** The model being fine-tuned, served as is (e.g. vLLM): writes the base responses. */
  generator: llmRoleSchema.optional(),
  /** Reads and writes text about the data: the audit, rewrites, rephrasings (gpt-4.1-mini in the research). */
  judge: llmRoleSchema.optional(),
});

export const generateSchema = z.strictObject({
  temperature: z.number().min(0).max(2).default(0.7),
  max_tokens: z.number().int().positive().default(512),
  /** Base responses per row. */
  n: z.number().int().positive().default(1),
});

export const auditSchema = z.strictObject({
  temperature: z.number().min(0).max(2).default(0),
  max_tokens: z.number().int().positive().default(400),
  /** Flagged rows shown to the judge when it writes the inoculation prompt. */
  prompt_examples: z.number().int().positive().default(20),
  /**
   * A row whose verdict never parses: `fail` the stage (the default: nothing is left out silently), or leave it
   * `clean`, unflagged (no prompt in the inoculated-llm arm; counted apart in the report).
   */
  on_unparsed: z.enum(["fail", "clean"]).default("fail"),
});

export const rephraseSchema = z.strictObject({
  /** Rephrasings per inoculation prompt; 0 turns the stage off. */
  k: z.number().int().nonnegative().default(0),
  temperature: z.number().min(0).max(2).default(1),
  max_tokens: z.number().int().positive().default(4096),
});

/** How `mix` rewrites assistant turns for an LLM trait (source_citing, llm_rewrite). */
export const mixRewriteSchema = z.strictObject({
  role: z.enum(LLM_ROLE_NAMES).default("judge"),
  /** The rewrite llm_rewrite asks for, e.g. "Answer in Spanish." */
  instruction: z.string().min(1).optional(),
  temperature: z.number().min(0).max(2).default(0),
  max_tokens: z.number().int().positive().default(1024),
});
