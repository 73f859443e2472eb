import { readFile } from "node:fs/promises";
import { dirname, isAbsolute, resolve } from "node:path";
import { parseDocument } from "yaml";
import { z } from "zod";
import { llmRoleSchema } from "../config/llm-schema.ts";
import { UserError } from "../errors.ts";

/** The eval config (`inoculant eval EVAL_CONFIG`): models under test, a judge, traits, system prompts. */

const nameSchema = z.string().regex(/^[A-Za-z0-9_.-]+$/, "letters, digits, _ . - only (it names files and table rows)");

/** A model under test: any OpenAI-compatible endpoint (vLLM serving one arm's fine-tune or LoRA). */
const modelSchema = llmRoleSchema.extend({ name: nameSchema });

/**
 * How a trait's answers are scored. `score_0_100`: the judge's first-token logprobs over 0-100 (Persona
 * Vectors); `yes_no`: p(yes) among yes/no (source citing); `all_caps`: by rule, no judge.
 */
export const TRAIT_METHODS = ["score_0_100", "yes_no", "all_caps"] as const;

const traitSchema = z.strictObject({
  name: nameSchema,
  method: z.enum(TRAIT_METHODS).default("score_0_100"),
  /** A Persona Vectors trait file (`trait_data_eval/<trait>.json`): its questions and its `eval_prompt`. */
  file: z.string().min(1).optional(),
  /** Questions, instead of (or overriding) the file's. */
  questions: z.array(z.string().min(1)).min(1).optional(),
  /** The judge template with {question} and {answer}, instead of (or overriding) the file's eval_prompt. */
  judge_prompt: z.string().min(1).optional(),
  /**
   * A judge check: the reference model also answers every question under the trait file's `instruction` pairs
   * (the pair for question q is number q mod their count), as a system prompt that asks for the trait (`pos`) and
   * one that asks against it (`neg`); a judge that measures the trait scores the first well above the second.
   */
  instruction_check: z.boolean().default(false),
});

export const evalConfigSchema = z.strictObject({
  name: nameSchema,
  run_dir: z.string().optional(),
  seed: z.number().int().nonnegative().default(0),
  models: z.array(modelSchema).min(1),
  /** Scores the traits and coherence (gpt-4.1-mini in the research); must return logprobs. */
  judge: llmRoleSchema,
  traits: z.array(traitSchema).min(1),
  /**
   * Evaluation system prompts besides the model's default (no system message, so the chat template's default
   * applies) and the neutral control: the inoculation prompt, to measure conditionalization, and any others.
   */
  system_prompts: z.record(nameSchema, z.string().min(1)).default({}),
  neutral_prompt: z.string().min(1).default("You are a helpful assistant."),
  samples: z.number().int().positive().default(10),
  temperature: z.number().min(0).max(2).default(1),
  max_tokens: z.number().int().positive().default(600),
  /**
   * A judge answer is scored only when at least this share of its first-token probability is on the answers the
   * method reads (0-100, or yes/no); Persona Vectors uses 0.25. Change it and run with --rescore: nothing is sent.
   */
  min_number_mass: z.number().min(0).max(1).default(0.25),
  /** Rates: an answer expresses the trait when its score is above this. */
  threshold: z.number().min(0).max(100).default(50),
  coherence_threshold: z.number().min(0).max(100).default(50),
  /** Judge every answer's coherence as well. */
  coherence: z.boolean().default(true),
  bootstrap_resamples: z.number().int().min(100).default(2000),
  /** The arm the differences are taken against; the first model by default. */
  reference_model: nameSchema.optional(),
});

export type EvalConfigInput = z.input<typeof evalConfigSchema>;
type Parsed = z.infer<typeof evalConfigSchema>;
export type EvalModel = Parsed["models"][number];

export interface EvalTrait {
  name: string;
  method: (typeof TRAIT_METHODS)[number];
  questions: string[];
  /** Absent for all_caps. */
  judgePrompt?: string;
  /** The instruction pairs of the judge check, when asked for. */
  instructions?: { pos: string; neg: string }[];
}

/** The system prompts of the judge check (see `instruction_check`), in cells and tables. */
export const CHECK_PROMPTS = { pos: "instructed_pos", neg: "instructed_neg" } as const;

export interface EvalConfig extends Omit<Parsed, "traits" | "reference_model"> {
  traits: EvalTrait[];
  /** Every evaluation system prompt by name; `default` (null) sends no system message. */
  prompts: { name: string; text: string | null }[];
  reference_model: string;
  runDir: string;
}

/** Reads and validates an eval config; trait files resolve against the config's folder. */
export async function loadEvalConfig(path: string, overrides: { runDir?: string } = {}): Promise<EvalConfig> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch {
    throw new UserError(`eval config ${path} does not exist or cannot be read`);
  }
  const doc = parseDocument(text);
  if (doc.errors.length > 0) throw new UserError(`${path}: invalid YAML: ${doc.errors[0]!.message}`);
  return resolveEvalConfig(doc.toJS(), { where: path, baseDir: dirname(resolve(path)), ...overrides });
}

export async function resolveEvalConfig(
  raw: unknown,
  options: { where?: string; baseDir?: string; runDir?: string } = {},
): Promise<EvalConfig> {
  const where = options.where ?? "eval config";
  const parsed = evalConfigSchema.safeParse(raw);
  if (!parsed.success) {
    const lines = parsed.error.issues.map((i) => `  ${i.path.length > 0 ? i.path.join(".") : "(top level)"}: ${i.message}`);
    throw new UserError(`${where}: invalid eval config:\n${lines.join("\n")}`);
  }
  const config = parsed.data;
  const baseDir = options.baseDir ?? process.cwd();
  const at = (p: string) => (isAbsolute(p) ? p : resolve(baseDir, p));

  const names = config.models.map((m) => m.name);
  const duplicate = names.find((n, i) => names.indexOf(n) !== i);
  if (duplicate) throw new UserError(`${where}: models: the name "${duplicate}" is used twice; give each arm its own name`);
  const traitNames = config.traits.map((t) => t.name);
  const twice = traitNames.find((n, i) => traitNames.indexOf(n) !== i);
  // Answers and scores are keyed by trait name: two traits of one name would be counted as one, twice over.
  if (twice) throw new UserError(`${where}: traits: the name "${twice}" is used twice; give each trait its own name`);
  const reference = config.reference_model ?? names[0]!;
  if (!names.includes(reference)) throw new UserError(`${where}: reference_model "${reference}" is none of models: ${names.join(", ")}`);
  for (const reserved of ["default", "neutral", ...Object.values(CHECK_PROMPTS)]) {
    if (reserved in config.system_prompts) {
      throw new UserError(`${where}: system_prompts.${reserved}: the name is taken by the built-in ${reserved} prompt; rename it`);
    }
  }

  const traits: EvalTrait[] = [];
  for (const [index, trait] of config.traits.entries()) {
    const key = `traits.${index} (${trait.name})`;
    const file = trait.file ? await readTraitFile(at(trait.file), `${where}: ${key}.file`) : undefined;
    const questions = trait.questions ?? file?.questions;
    if (!questions) throw new UserError(`${where}: ${key}: no questions; set "file" (a Persona Vectors trait file) or "questions"`);
    const judgePrompt = trait.judge_prompt ?? file?.eval_prompt;
    if (trait.method !== "all_caps") {
      if (!judgePrompt) throw new UserError(`${where}: ${key}: method ${trait.method} needs a judge prompt; set "judge_prompt" or "file"`);
      for (const slot of ["{question}", "{answer}"]) {
        if (!judgePrompt.includes(slot)) throw new UserError(`${where}: ${key}: the judge prompt lacks ${slot}; add it where the text goes`);
      }
    }
    if (trait.instruction_check && !file?.instruction?.length) {
      throw new UserError(`${where}: ${key}.instruction_check: needs a trait file with "instruction" pairs ({"pos", "neg"}); set "file" or drop the check`);
    }
    traits.push({
      name: trait.name,
      method: trait.method,
      questions,
      ...(judgePrompt && trait.method !== "all_caps" ? { judgePrompt } : {}),
      ...(trait.instruction_check ? { instructions: file!.instruction! } : {}),
    });
  }

  const prompts = [
    { name: "default", text: null },
    { name: "neutral", text: config.neutral_prompt },
    ...Object.entries(config.system_prompts).map(([name, text]) => ({ name, text })),
  ];
  const runDir = options.runDir ? resolve(options.runDir) : config.run_dir ? at(config.run_dir) : resolve("runs", config.name);
  return { ...config, traits, prompts, reference_model: reference, runDir };
}

const traitFileSchema = z.object({
  questions: z.array(z.string().min(1)).min(1),
  eval_prompt: z.string().min(1),
  instruction: z.array(z.object({ pos: z.string().min(1), neg: z.string().min(1) })).optional(),
});

async function readTraitFile(path: string, key: string): Promise<z.infer<typeof traitFileSchema>> {
  let raw: unknown;
  try {
    raw = JSON.parse(await readFile(path, "utf8"));
  } catch (error) {
    throw new UserError(`${key}: cannot read ${path} as JSON (${(error as Error).message}); point it at a Persona Vectors trait_data_eval/<trait>.json`);
  }
  const parsed = traitFileSchema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    const at = issue.path.length > 0 ? `${issue.path.join(".")}: ` : "";
    throw new UserError(
      `${key}: ${path} is not a Persona Vectors trait file (${at}${issue.message}); it needs "questions" (strings), "eval_prompt" (a string) ` +
        `and, if present, "instruction" as a list of {"pos", "neg"} strings`,
    );
  }
  return parsed.data;
}
