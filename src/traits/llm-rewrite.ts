import { promptPath, renderPrompt, type PromptName } from "../llm/prompts.ts";
import { parseTagged } from "../llm/structured.ts";
import type { LlmTrait, TurnToRewrite } from "./positive-trait.ts";

/** The tag a rewrite comes back in (a tagged answer: the rewritten text may itself be any format, JSON included). */
const TAG = "rewritten";

/**
 * A trait the LLM applies to each assistant turn from a template in data/prompts. The rewrite must come back in
 * its tag, and must differ from the original: an unchanged answer cannot have gained the trait.
 */
export function rewriteTrait(options: {
  name: string;
  description: string;
  template: PromptName;
  values?: Record<string, string>;
}): LlmTrait {
  return {
    kind: "llm",
    name: options.name,
    description: options.description,
    inputFiles: [promptPath(options.template)],
    rewriteMessages: (turn: TurnToRewrite) =>
      renderPrompt(options.template, { ...options.values, question: turn.question, answer: turn.answer, tag: TAG }),
    parseRewrite: (text, turn) => {
      const parsed = parseTagged(text, TAG);
      if (parsed.ok && parsed.value === turn.answer.trim()) return { ok: false, error: "the rewrite is the original answer, unchanged" };
      return parsed;
    },
  };
}

/** llm_rewrite: any rewrite the config describes in `mix.rewrite.instruction` (for example "Answer in Spanish."). */
export function instructionTrait(instruction: string): LlmTrait {
  return rewriteTrait({
    name: "llm_rewrite",
    description: `The assistant's responses follow this instruction: ${instruction}`,
    template: "rewrite-instruction",
    values: { instruction },
  });
}
