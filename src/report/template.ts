/**
 * `{{name}}` placeholders of the report's page template (`reports/report.html`). Filling is strict: a placeholder
 * without a value and a value without a placeholder are both errors, so a renamed section never silently drops
 * out of the page. (LLM prompt templates have their own loader, src/llm/prompts.ts.)
 */

const PLACEHOLDER = /\{\{([a-z][a-z0-9_]*)\}\}/g;

/** The placeholder names of a template, each once, in order of first use. */
export function placeholders(template: string): string[] {
  return [...new Set(Array.from(template.matchAll(PLACEHOLDER), (m) => m[1]!))];
}

/**
 * Replaces every `{{name}}` with `values[name]`. One pass over the template: text inside a value (a context that
 * happens to contain `{{x}}`) is never substituted again. `what` names the template in error messages.
 */
export function fillTemplate(template: string, values: Readonly<Record<string, string>>, what: string): string {
  const wanted = placeholders(template);
  const missing = wanted.filter((name) => !Object.hasOwn(values, name));
  if (missing.length > 0) throw new Error(`${what}: no value for ${missing.map((n) => `{{${n}}}`).join(", ")}`);
  const unused = Object.keys(values).filter((name) => !wanted.includes(name));
  if (unused.length > 0) throw new Error(`${what}: no placeholder for ${unused.map((n) => `{{${n}}}`).join(", ")}`);
  return template.replace(PLACEHOLDER, (_, name: string) => values[name]!);
}
