import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import type { ChatMessage } from "./types.ts";

/** Where the prompt templates live: `data/prompts/<name>.md` in the package. */
export const PROMPTS_DIR = fileURLToPath(new URL("../../data/prompts/", import.meta.url));

export type PromptName =
  | "audit-row"
  | "audit-prompt"
  | "rephrase"
  | "rewrite-source-citing"
  | "rewrite-instruction"
  | "explain"
  | "classify"
  | "synthesize";

/** The template files a stage reads: its `inputFiles`, so editing a template reruns the stage. */
export function promptPath(name: PromptName): string {
  return `${PROMPTS_DIR}${name}.md`;
}

const cache = new Map<PromptName, { role: ChatMessage["role"]; text: string }[]>();

const PLACEHOLDER = /\{\{(\w+)\}\}/g;

/**
 * A template is markdown split into messages by marker lines `<!-- system -->` and `<!-- user -->` (text before
 * the first marker is a comment for people), with `{{name}}` placeholders. Values are inserted once (a value
 * that contains `{{x}}` stays as it is). A placeholder without a value, or a value without a placeholder, is a
 * bug: a renamed placeholder must never send a prompt with a hole in it.
 */
export function renderPrompt(name: PromptName, values: Readonly<Record<string, string>>): ChatMessage[] {
  let sections = cache.get(name);
  if (!sections) {
    sections = parseTemplate(name, readFileSync(promptPath(name), "utf8"));
    cache.set(name, sections);
  }
  const used = new Set(sections.flatMap(({ text }) => Array.from(text.matchAll(PLACEHOLDER), (m) => m[1]!)));
  const unused = Object.keys(values).filter((key) => !used.has(key));
  if (unused.length > 0) {
    throw new Error(`prompt template ${name}.md has no placeholder for ${unused.map((k) => `{{${k}}}`).join(", ")}`);
  }
  return sections.map(({ role, text }) => ({
    role,
    content: text.replace(PLACEHOLDER, (_, key: string) => {
      const value = values[key];
      if (value === undefined) throw new Error(`prompt template ${name}.md uses {{${key}}}, which was not given`);
      return value;
    }),
  }));
}

function parseTemplate(name: string, text: string): { role: ChatMessage["role"]; text: string }[] {
  // split() with a capture group gives [before, role, body, role, body, …]; text before the first marker is a comment.
  const parts = text.split(/^<!-- (system|user) -->[ \t]*$/m);
  const sections: { role: ChatMessage["role"]; text: string }[] = [];
  for (let i = 1; i + 1 < parts.length; i += 2) {
    sections.push({ role: parts[i] as ChatMessage["role"], text: parts[i + 1]!.trim() });
  }
  if (sections.length === 0) throw new Error(`prompt template ${name}.md has no <!-- system --> or <!-- user --> section`);
  return sections;
}
