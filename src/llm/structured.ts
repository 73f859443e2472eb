import { z } from "zod";
import type { JsonSchemaFormat, Parsed } from "./types.ts";

/**
 * Structured answers: a JSON schema the endpoint enforces where it can (OpenAI structured outputs, vLLM guided
 * decoding), and a check of our own on every answer, because not every server enforces it.
 *
 * Keep the zod schemas to plain types (no length or range checks): OpenAI's strict mode rejects some JSON
 * schema keywords. Check such things in the parse function instead.
 */
export function jsonSchemaFormat(name: string, schema: z.ZodObject): JsonSchemaFormat {
  const { $schema: _drop, ...json } = z.toJSONSchema(schema) as Record<string, unknown>;
  return { type: "json_schema", json_schema: { name, strict: true, schema: json } };
}

/** Parses a JSON answer against `schema` (tolerating a ```json fence around it). */
export function parseJsonAnswer<T>(text: string, schema: z.ZodType<T>): Parsed<T> {
  const body = text.trim().replace(/^```(?:json)?\s*\n?([\s\S]*?)\n?```$/, "$1");
  let data: unknown;
  try {
    data = JSON.parse(body);
  } catch {
    return { ok: false, error: `not JSON: ${excerpt(text)}` };
  }
  const result = schema.safeParse(data);
  if (!result.success) {
    const issue = result.error.issues[0]!;
    return { ok: false, error: `JSON does not match the schema (${issue.path.join(".") || "answer"}: ${issue.message}): ${excerpt(text)}` };
  }
  return { ok: true, value: result.data };
}

/** The text inside the last `<tag>…</tag>` of an answer, which must not be empty. */
export function parseTagged(text: string, tag: string): Parsed<string> {
  const matches = [...text.matchAll(new RegExp(`<${tag}>([\\s\\S]*?)</${tag}>`, "g"))];
  const inner = matches.at(-1)?.[1]?.trim();
  if (inner === undefined) return { ok: false, error: `no <${tag}>…</${tag}> in the answer: ${excerpt(text)}` };
  if (inner.length === 0) return { ok: false, error: `empty <${tag}></${tag}>` };
  return { ok: true, value: inner };
}

function excerpt(text: string): string {
  const flat = text.replace(/\s+/g, " ").trim();
  return flat.length === 0 ? "(empty answer)" : JSON.stringify(flat.length > 120 ? `${flat.slice(0, 120)}…` : flat);
}
