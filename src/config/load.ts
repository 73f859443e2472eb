import { readFile, stat } from "node:fs/promises";
import { dirname, extname, isAbsolute, join, resolve } from "node:path";
import { parseDocument } from "yaml";
import { z } from "zod";
import { UserError } from "../errors.ts";
import { parseHubRef, resolveHubFiles } from "../hub/resolve.ts";
import { ARMS, defaultArms, type ArmName } from "../export/arms.ts";
import { positiveTraitKind } from "../traits/registry.ts";
import type { LlmRoleName } from "./llm-schema.ts";
import { configSchema, type PipelineConfig } from "./schema.ts";

/** The sources a config may name; each is also the prefix of every row id from that source. */
export const SOURCE_NAMES = ["clean", "contaminated", "labelled"] as const;

export interface SourceSpec {
  readonly name: (typeof SOURCE_NAMES)[number];
  readonly path: string;
  readonly format: "jsonl" | "parquet";
  /** Fixed ground truth for clean/contaminated; a rule for labelled sources. */
  readonly negative: boolean | { field: string; contains?: string; equals?: string[] };
}

export interface ResolvedConfig extends Omit<PipelineConfig, "export"> {
  /** The arms listed, or the default ones (every arm the config can build). */
  readonly export: { arms: ArmName[] };
  /** Absolute path of the config file, or null for configs built in code. */
  readonly configPath: string | null;
  readonly runDir: string;
  readonly sourceList: readonly SourceSpec[];
}

/** Reads, validates and resolves a pipeline config file. Every problem is a UserError naming the key. */
export async function loadConfig(path: string, overrides: { runDir?: string } = {}): Promise<ResolvedConfig> {
  const configPath = resolve(path);
  let text: string;
  try {
    text = await readFile(configPath, "utf8");
  } catch {
    throw new UserError(`config file ${path} does not exist or cannot be read`);
  }
  const doc = parseDocument(text, { prettyErrors: true });
  if (doc.errors.length > 0) {
    throw new UserError(`${path}: invalid YAML: ${doc.errors[0]!.message}`);
  }
  return resolveConfig(doc.toJS(), { configPath, ...overrides });
}

/** Validates a config object (from YAML or from code); relative paths resolve against the config's folder. */
export async function resolveConfig(
  raw: unknown,
  options: { configPath?: string | null; baseDir?: string; runDir?: string } = {},
): Promise<ResolvedConfig> {
  const configPath = options.configPath ?? null;
  const where = configPath ?? "config";
  const parsed = configSchema.safeParse(raw);
  if (!parsed.success) throw new UserError(formatIssues(where, parsed.error, raw));
  const config = parsed.data;
  const baseDir = options.baseDir ?? (configPath ? dirname(configPath) : process.cwd());
  const at = (p: string) => (isAbsolute(p) ? p : resolve(baseDir, p));
  const sourcePath = (p: string, key: string) => (p.startsWith("hf://") ? hubSourceFile(p, key, where) : Promise.resolve(at(p)));

  const sourceList: SourceSpec[] = [];
  const s = config.sources;
  if (s.labelled) {
    const rule = s.labelled.label;
    const equals = rule.negative_if_equals;
    sourceList.push({
      name: "labelled",
      path: await sourcePath(s.labelled.path, "sources.labelled"),
      format: s.labelled.format ?? formatOf(s.labelled.path, "sources.labelled", where),
      negative: {
        field: rule.field,
        ...(rule.negative_if_contains !== undefined ? { contains: rule.negative_if_contains } : {}),
        ...(equals !== undefined ? { equals: Array.isArray(equals) ? equals : [equals] } : {}),
      },
    });
  } else {
    for (const name of ["clean", "contaminated"] as const) {
      const src = s[name]!;
      sourceList.push({
        name,
        path: await sourcePath(src.path, `sources.${name}`),
        format: src.format ?? formatOf(src.path, `sources.${name}`, where),
        negative: name === "contaminated",
      });
    }
  }
  await checkLocalPaths(
    where,
    sourceList.map((src) => [`sources.${src.name}.path`, src.path, "file", "a .jsonl or .parquet file"] as const),
  );

  const arms = config.export.arms ?? defaultArms({ audit: config.audit !== undefined, sae: config.sae !== undefined && config.llm.judge !== undefined });
  checkLlmSections(config, arms, where);
  const needsPrompt = arms.filter((arm) => ARMS[arm].prompt === "inoculation");
  if (needsPrompt.length > 0 && !config.inoculation.prompt && config.inoculation.rephrasings.length === 0) {
    throw new UserError(
      `${where}: inoculation.prompt: required by export.arms ${needsPrompt.join(", ")}; ` +
        `set inoculation.prompt (or inoculation.rephrasings), or drop those arms`,
    );
  }

  // Every other path in the config is relative to the config file too (hf:// references are not paths).
  const local = (p: string | undefined) => (p === undefined || p.startsWith("hf://") ? p : at(p));
  const model = { ...config.model, path: local(config.model.path), python_file: local(config.model.python_file) };
  const sae = config.sae ? { ...config.sae, path: local(config.sae.path)! } : undefined;
  const sidecar = { ...config.sidecar, python: local(config.sidecar.python) };
  const activations = { ...config.activations, base_responses: local(config.activations.base_responses) };
  const harvest = { ...config.harvest, corpora: config.harvest.corpora.map((c) => ({ ...c, path: local(c.path)! })) };
  const labels = { ...config.labels, import: local(config.labels.import) };
  // Checked now, not when their stage comes: with a real model that can be hours into the run.
  await checkLocalPaths(where, [
    ["model.path", model.path, "folder"],
    ["model.python_file", model.python_file, "file"],
    ["sae.path", sae?.path, "folder"],
    ["sidecar.python", sidecar.python, "file"],
    ["activations.base_responses", activations.base_responses, "file"],
    ["labels.import", labels.import, "file"],
    ...harvest.corpora.map((c, i) => [`harvest.corpora.${i}.path`, c.path, "file"] as const),
  ]);

  const runDir = options.runDir
    ? resolve(options.runDir)
    : config.run_dir
      ? at(config.run_dir)
      : resolve("runs", config.name);
  return { ...config, export: { arms }, model, sae, sidecar, activations, harvest, labels, configPath, runDir, sourceList };
}

/** The LLM stages and arms each need a role (and sometimes a section); say which key to add. */
function checkLlmSections(config: PipelineConfig, arms: readonly ArmName[], where: string): void {
  const problems: string[] = [];
  const needRole = (role: LlmRoleName, by: string) => {
    if (!config.llm[role]) problems.push(`llm.${role}: required by ${by}; add llm.${role} with at least model and base_url`);
  };
  if (config.audit) needRole("judge", "audit");
  if (config.rephrase.k > 0) needRole("judge", `rephrase.k ${config.rephrase.k}`);
  const trait = config.mix.positive_trait;
  if (positiveTraitKind(trait) === "llm") needRole(config.mix.rewrite.role, `mix.positive_trait ${trait} (mix.rewrite.role)`);
  if (trait === "llm_rewrite" && config.mix.rewrite.instruction === undefined) {
    problems.push(`mix.rewrite.instruction: required by mix.positive_trait llm_rewrite, e.g. "Answer in Spanish."`);
  }
  if (trait !== "llm_rewrite" && config.mix.rewrite.instruction !== undefined) {
    problems.push(`mix.rewrite.instruction: only llm_rewrite uses it, and mix.positive_trait is ${trait}`);
  }
  for (const arm of arms) {
    if (ARMS[arm].requires === "audit" && !config.audit) {
      problems.push(`export.arms: ${arm} needs the LLM audit; add an audit section (audit: {}) or drop the arm`);
    }
    if (ARMS[arm].requires === "sae" && (!config.sae || !config.llm.judge)) {
      problems.push(`export.arms: ${arm} needs the SAE pipeline; set sae (the SAE to use) and llm.judge (it writes the prompt), or drop the arm`);
    }
  }
  if (config.sae && !config.labels.import) needRole("judge", "sae (the explain and classify stages)");
  if (problems.length > 0) throw new UserError(`${where}: invalid config:\n  ${problems.join("\n  ")}`);
}

/** The config as the user wrote it: the resolved paths and the run directory left out (they move with the files). */
export function userConfig(config: ResolvedConfig): Omit<ResolvedConfig, "configPath" | "runDir" | "sourceList"> {
  const { configPath: _c, runDir: _r, sourceList: _s, ...rest } = config;
  return rest;
}

/** A config key's path, whether it names a file or a folder, and (for a file) what kind of file to give instead. */
type LocalPath = readonly [key: string, path: string | undefined, kind: "file" | "folder", wanted?: string];

/** Each set local path (hf:// references are fetched later) must exist, as a regular file or a folder. */
async function checkLocalPaths(where: string, paths: readonly LocalPath[]): Promise<void> {
  for (const [key, path, kind, wanted] of paths) {
    if (path === undefined || path.startsWith("hf://")) continue;
    const found = await stat(path).catch(() => null);
    if (!found) throw new UserError(`${where}: ${key}: ${kind} ${path} does not exist`);
    if (kind === "folder" && !found.isDirectory()) throw new UserError(`${where}: ${key}: ${path} is not a folder`);
    if (kind === "file" && !found.isFile()) {
      // A pipe or device is no file either: ingest and the fingerprints read a file more than once.
      const what = found.isDirectory() ? "a folder" : "not a regular file";
      throw new UserError(`${where}: ${key}: ${path} is ${what}; give the path of ${wanted ?? "a file"}`);
    }
  }
}

/**
 * The local file of a source given as `hf://datasets/REPO[@REV]/FILE`, fetched into the Hugging Face cache now
 * (a cached file costs no request), so that ingest reads, and fingerprints, a file like any other.
 */
async function hubSourceFile(ref: string, key: string, where: string): Promise<string> {
  const hub = parseHubRef(ref);
  if (!hub?.path) throw new UserError(`${where}: ${key}.path: ${ref} names no file; use hf://datasets/REPO[@REVISION]/FILE.jsonl`);
  const snapshot = await resolveHubFiles(hub.repo, [hub.path], {
    key: `${key}.path`,
    type: hub.type,
    revision: hub.revision,
    onDownload: (repo, file) => process.stderr.write(`downloading ${file} from ${repo}\n`),
  });
  return join(snapshot, hub.path);
}

function formatOf(path: string, key: string, where: string): "jsonl" | "parquet" {
  const ext = extname(path).toLowerCase();
  if (ext === ".jsonl" || ext === ".json" || ext === ".ndjson") return "jsonl";
  if (ext === ".parquet") return "parquet";
  throw new UserError(`${where}: ${key}.path: cannot tell the format of ${path}; set ${key}.format to jsonl or parquet`);
}

/** One line per problem, each naming the key path and, where there is a closed set, the allowed values. */
export function formatIssues(where: string, error: z.ZodError, raw?: unknown): string {
  const lines = error.issues.map((issue) => {
    const key = issue.path.length > 0 ? issue.path.join(".") : "(top level)";
    switch (issue.code) {
      case "unrecognized_keys":
        return `${key}: unknown key${issue.keys.length > 1 ? "s" : ""} ${issue.keys.map((k) => `"${k}"`).join(", ")}; allowed: ${allowedKeys(issue.path).join(", ")}`;
      case "invalid_value": {
        const given = valueAt(raw, issue.path);
        return `${key}: ${given === undefined ? "must be" : `${JSON.stringify(given)} is not`} one of: ${issue.values.map(String).join(", ")}`;
      }
      case "invalid_type": {
        const received = /received (\w+)/.exec(issue.message)?.[1];
        return received === "undefined" ? `${key}: required (${issue.expected})` : `${key}: must be ${issue.expected}${received ? `, got ${received}` : ""}`;
      }
      case "too_small":
      case "too_big":
        // A message the schema wrote itself says more than the bound alone; zod's own begins "Too small/big".
        return `${key}: ${/^Too (small|big)/.test(issue.message) ? boundText(issue) : issue.message}`;
      default:
        return `${key}: ${issue.message}`;
    }
  });
  return `${where}: invalid config:\n  ${lines.join("\n  ")}`;
}

/** The value the user gave at `path`, if the raw config has one. */
function valueAt(raw: unknown, path: readonly PropertyKey[]): unknown {
  let value = raw;
  for (const step of path) {
    if (value === null || typeof value !== "object") return undefined;
    value = (value as Record<PropertyKey, unknown>)[step];
  }
  return value;
}

/** A size or range bound in words: "must be >= 0", "must not be empty", "must have at most 3 items". */
function boundText(issue: z.core.$ZodIssueTooSmall | z.core.$ZodIssueTooBig): string {
  const small = issue.code === "too_small";
  const limit = Number(small ? (issue as z.core.$ZodIssueTooSmall).minimum : (issue as z.core.$ZodIssueTooBig).maximum);
  const inclusive = issue.inclusive !== false;
  if (issue.origin === "string" || issue.origin === "array") {
    const unit = issue.origin === "string" ? "character" : "item";
    if (small && limit === 1 && inclusive) return issue.origin === "string" ? "must not be empty" : "must list at least one item";
    return `must have ${small ? "at least" : "at most"} ${limit} ${unit}${limit === 1 ? "" : "s"}`;
  }
  if (!small && limit === Number.MAX_SAFE_INTEGER) return "must be a whole number no larger than 2^53 - 1";
  return `must be ${small ? ">" : "<"}${inclusive ? "=" : ""} ${limit}`;
}

/** The keys an object schema accepts at `path`, for "unknown key" messages. */
function allowedKeys(path: readonly PropertyKey[]): string[] {
  let schema: z.core.$ZodType | undefined = configSchema;
  for (const segment of [...path, null]) {
    // Unwrap defaults, optionals, refinements and pipes down to the object.
    for (let i = 0; i < 10 && schema; i++) {
      const def = schema._zod.def as { innerType?: z.core.$ZodType; in?: z.core.$ZodType };
      if (schema instanceof z.ZodObject) break;
      schema = def.innerType ?? def.in;
    }
    if (!(schema instanceof z.ZodObject)) return [];
    if (segment === null) return Object.keys(schema.shape);
    if (typeof segment === "number") return [];
    schema = (schema.shape as Record<string, z.core.$ZodType>)[String(segment)];
  }
  return [];
}
