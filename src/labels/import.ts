import { readFile } from "node:fs/promises";
import { UserError } from "../errors.ts";
import type { FeatureLabelRow, Label } from "./feature-labels.ts";

/**
 * Imports latent descriptions and labels from a JSON map of latent id -> entry, so a run can reuse the labels of
 * an earlier run or of someone else's (the format of the reference study's `feature_explanations/<mix>.json`).
 * An entry is one of:
 * - text with `<feature_description>…</feature_description>` and optionally
 *   `<feature_classification>…</feature_classification>` (the reference format);
 * - plain text (a bare description, no label);
 * - an object `{description, label?, reason?}`.
 *
 * Classifications map to our labels: `desirable` meant "explained by the wanted trait" in the reference run
 * (= `yes`) and `undesirable` meant "not explained" (= `no`); it had no neutral class. `yes`, `neutral` and
 * `no` are taken as they are. An entry that is not a description (an API error message saved in its place,
 * empty text, tags without a description) is rejected with its latent id and the reason, never imported.
 */

/** One imported latent: it becomes a `feature_labels` row with label_source `import`. */
export interface ImportedLabel {
  latent: number;
  description: string;
  /** NULL when the entry carried no classification: the latent is described but unlabelled. */
  label: Label | null;
  reason: string | null;
}

export interface RejectedEntry {
  /** The key as written in the file (it may not even be a number). */
  latent: string;
  reason: string;
}

export interface LabelImport {
  labels: ImportedLabel[];
  rejected: RejectedEntry[];
}

/** feature_labels.latent is an INTEGER, like the SAE stages' latent columns. */
const MAX_LATENT_ID = 2 ** 31 - 1;

const CLASSIFICATIONS: Record<string, Label> = { desirable: "yes", undesirable: "no", yes: "yes", neutral: "neutral", no: "no" };

/** Signatures of an error saved in place of a description: API error payloads and exception text. */
const ERROR_SIGNATURES: readonly RegExp[] = [
  /^\s*error\s+(calling|code|from|while)\b/i,
  /^\s*(error|exception)\s*:/i,
  /^\s*traceback \(most recent call last\)/i,
  /\berror code:?\s*\d{3}\b/i,
  /['"]type['"]\s*:\s*['"][a-z_]*_error['"]/i,
];

export function looksLikeErrorMessage(text: string): boolean {
  return ERROR_SIGNATURES.some((re) => re.test(text));
}

/** Parses an already-decoded JSON value. */
export function parseLabelMap(map: unknown): LabelImport {
  if (typeof map !== "object" || map === null || Array.isArray(map)) {
    throw new UserError("feature labels: expected a JSON object mapping latent id to description");
  }
  const labels: ImportedLabel[] = [];
  const rejected: RejectedEntry[] = [];
  const seen = new Set<number>();
  for (const [key, value] of Object.entries(map)) {
    const latent = Number(key);
    if (!/^\d+$/.test(key) || latent > MAX_LATENT_ID) {
      rejected.push({ latent: key, reason: "the key is not a latent id (an integer from 0 to 2^31 - 1)" });
      continue;
    }
    if (seen.has(latent)) {
      // "7" and "007" are one latent: keep the first rather than guess which one the file meant.
      rejected.push({ latent: key, reason: `latent ${latent} appears twice in the file` });
      continue;
    }
    seen.add(latent);
    const entry = parseEntry(value);
    if (isError(entry)) rejected.push({ latent: key, reason: entry.error });
    else labels.push({ latent, ...entry });
  }
  labels.sort((a, b) => a.latent - b.latent);
  return { labels, rejected };
}

/** The imported latents as `feature_labels` rows (see featureLabelsSql). */
export function importedLabelRows(labels: readonly ImportedLabel[]): FeatureLabelRow[] {
  return labels.map((l) => ({ latent: l.latent, description: l.description, label: l.label, label_source: "import", reason: l.reason, error: null }));
}

/** Reads and parses a label file; a file that is not JSON is a user error naming the file. */
export async function importLabelFile(path: string): Promise<LabelImport> {
  let map: unknown;
  try {
    map = JSON.parse(await readFile(path, "utf8"));
  } catch (error) {
    throw new UserError(`feature labels ${path}: ${error instanceof Error ? error.message : String(error)}`, { cause: error });
  }
  try {
    return parseLabelMap(map);
  } catch (error) {
    if (error instanceof UserError) throw new UserError(`${path}: ${error.message}`, { cause: error });
    throw error;
  }
}

type Failure = { error: string };
type Parsed = Omit<ImportedLabel, "latent"> | Failure;

function isError(value: unknown): value is Failure {
  return typeof value === "object" && value !== null && "error" in value;
}

function parseEntry(value: unknown): Parsed {
  if (typeof value === "string") return parseText(value);
  if (typeof value === "object" && value !== null && !Array.isArray(value)) return parseObject(value as Record<string, unknown>);
  return { error: `expected text or {description, label}, got ${value === null ? "null" : Array.isArray(value) ? "an array" : typeof value}` };
}

function parseObject(obj: Record<string, unknown>): Parsed {
  const { description, label, reason } = obj;
  if (typeof description !== "string") return { error: "the object has no description text" };
  const checked = checkDescription(description);
  if (isError(checked)) return checked;
  let mapped: Label | null = null;
  if (label !== undefined && label !== null) {
    if (typeof label !== "string" || CLASSIFICATIONS[label.trim().toLowerCase()] === undefined) {
      return { error: `label ${JSON.stringify(label)} is not one of ${Object.keys(CLASSIFICATIONS).join(", ")}` };
    }
    mapped = CLASSIFICATIONS[label.trim().toLowerCase()]!;
  }
  if (reason !== undefined && reason !== null && typeof reason !== "string") return { error: "reason is not text" };
  return { description: checked, label: mapped, reason: typeof reason === "string" && reason.trim() !== "" ? reason.trim() : null };
}

function parseText(text: string): Parsed {
  const description = tagged(text, "feature_description");
  const classification = tagged(text, "feature_classification");
  if (isError(description)) return description;
  if (isError(classification)) return classification;
  let body: string;
  if (description !== null) {
    body = description;
  } else if (classification !== null || /<\/?feature_[a-z_]*>/.test(text)) {
    // Tags, but none of them a description: a classification alone says nothing about what the latent is.
    return { error: "the entry has tags but no <feature_description>" };
  } else {
    body = text;
  }
  const checked = checkDescription(body);
  if (isError(checked)) return checked;
  let label: Label | null = null;
  if (classification !== null) {
    const mapped = CLASSIFICATIONS[classification.toLowerCase()];
    if (mapped === undefined) {
      return { error: `classification "${classification}" is not one of ${Object.keys(CLASSIFICATIONS).join(", ")}` };
    }
    label = mapped;
  }
  return { description: checked, label, reason: null };
}

/** The trimmed text inside `<tag>…</tag>`, null when the tag is absent, an error when it is broken or repeated. */
function tagged(text: string, tag: string): string | null | Failure {
  const opens = text.split(`<${tag}>`).length - 1;
  const closes = text.split(`</${tag}>`).length - 1;
  if (opens === 0 && closes === 0) return null;
  if (opens !== 1 || closes !== 1) return { error: `<${tag}> appears ${opens} times opened and ${closes} times closed` };
  const match = new RegExp(`<${tag}>([\\s\\S]*)</${tag}>`).exec(text);
  if (!match) return { error: `</${tag}> comes before <${tag}>` };
  return match[1]!.trim();
}

function checkDescription(text: string): string | Failure {
  const trimmed = text.trim();
  if (trimmed === "") return { error: "the description is empty" };
  if (looksLikeErrorMessage(trimmed)) return { error: `an error message, not a description: ${clip(trimmed, 120)}` };
  return trimmed;
}

function clip(text: string, n: number): string {
  const one = text.replace(/\s+/g, " ");
  return one.length <= n ? one : `${one.slice(0, n - 1)}…`;
}
