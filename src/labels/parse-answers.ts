import { z } from "zod";
import { jsonSchemaFormat, parseJsonAnswer, parseTagged } from "../llm/structured.ts";
import type { JsonSchemaFormat, Parsed } from "../llm/types.ts";
import { isLabel, LABELS, type Label } from "./feature-labels.ts";
import { looksLikeErrorMessage } from "./import.ts";

/**
 * Parsers of the labelling stages' LLM answers (templates in data/prompts/{explain,classify,synthesize}.md). Each
 * returns a value or the reason the answer is unusable, never a default: the stage samples again and, when the
 * retries run out, records the latent as unexplained or unlabelled. (The reference code read an unparsable
 * classification as `no`, which silently inflated the flags.)
 */

export interface ClassifyAnswer {
  label: Label;
  /** The model's one-sentence reason; null when a tagged answer gave none. */
  reason: string | null;
}

/** The JSON schema the classify request asks the endpoint to enforce. */
export const CLASSIFY_FORMAT: JsonSchemaFormat = jsonSchemaFormat(
  "latent_label",
  z.object({ label: z.enum(LABELS), reason: z.string() }),
);

// Parsing is more lenient than the schema (label case and spacing), since not every endpoint enforces it.
const classifyJson = z.object({ label: z.string(), reason: z.string().optional() });

/**
 * `{"label": "yes"|"neutral"|"no", "reason": "…"}` (optionally in a ```json fence), or, from endpoints that ignore
 * the schema, tags: `<label>no</label>` (or the reference's `<feature_classification>no</feature_classification>`)
 * with an optional `<reason>…</reason>`. Two different tagged labels in one answer are an error, not a pick.
 */
export function parseClassifyAnswer(text: string): Parsed<ClassifyAnswer> {
  const json = parseJsonAnswer(text, classifyJson);
  if (json.ok) {
    const label = normalizeLabel(json.value.label);
    if (label === null) return { ok: false, error: `label ${JSON.stringify(json.value.label)} is not one of ${LABELS.join(", ")}` };
    const reason = json.value.reason?.trim();
    return { ok: true, value: { label, reason: reason ? reason : null } };
  }
  const tagged = [...text.matchAll(/<(label|feature_classification)>([\s\S]*?)<\/\1>/g)].map((m) => m[2]!.trim());
  if (tagged.length === 0) return { ok: false, error: `neither JSON nor a <label> tag: ${json.error}` };
  const labels = new Set(tagged.map(normalizeLabel));
  if (labels.size > 1) return { ok: false, error: `the answer gives different labels: ${tagged.join(", ")}` };
  const [label] = labels;
  if (label === null || label === undefined) {
    return { ok: false, error: `label ${JSON.stringify(tagged[0])} is not one of ${LABELS.join(", ")}` };
  }
  const reason = parseTagged(text, "reason");
  return { ok: true, value: { label, reason: reason.ok ? reason.value : null } };
}

function normalizeLabel(raw: string): Label | null {
  const label = raw.trim().toLowerCase().replace(/^[`'"]+|[`'".]+$/g, "");
  return isLabel(label) ? label : null;
}

/** What explain.md shows as the answer's shape: an answer that repeats it has not described anything. */
const EXPLAIN_PLACEHOLDER = "your one- or two-sentence description";

/** `<description>…</description>` (or the reference's `<feature_description>`), or JSON `{"description": "…"}`. */
export function parseExplainAnswer(text: string): Parsed<string> {
  let description: Parsed<string> = parseTagged(text, "description");
  if (!description.ok && text.includes("<feature_description>")) description = parseTagged(text, "feature_description");
  if (!description.ok) {
    const json = parseJsonAnswer(text, z.object({ description: z.string() }));
    if (!json.ok) return { ok: false, error: `neither a <description> tag nor JSON: ${description.error}` };
    description = { ok: true, value: json.value.description.trim() };
  }
  const value = description.value;
  if (value === "") return { ok: false, error: "the description is empty" };
  if (value.toLowerCase() === EXPLAIN_PLACEHOLDER) return { ok: false, error: "the answer repeats the template's placeholder" };
  if (looksLikeErrorMessage(value)) return { ok: false, error: `an error message, not a description: ${value.slice(0, 120)}` };
  return { ok: true, value };
}

/** `<prompt>You are …</prompt>`, or JSON `{"prompt": "You are …"}`: an inoculation system prompt. */
export function parseSynthesizeAnswer(text: string): Parsed<string> {
  let prompt = parseTagged(text, "prompt");
  if (!prompt.ok) {
    const json = parseJsonAnswer(text, z.object({ prompt: z.string() }));
    if (!json.ok) return { ok: false, error: `neither a <prompt> tag nor JSON: ${prompt.error}` };
    prompt = { ok: true, value: json.value.prompt.trim() };
  }
  const value = prompt.value.replace(/\s+/g, " ");
  if (!/^you are\b/i.test(value)) return { ok: false, error: `the prompt does not start with "You are": ${value.slice(0, 80)}` };
  if (/^you are\s*(\.\.\.|…)$/i.test(value)) return { ok: false, error: "the answer repeats the template's placeholder" };
  return { ok: true, value };
}
