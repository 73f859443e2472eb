import { rewriteTrait } from "./llm-rewrite.ts";

/** source_citing: the answer, its content kept, cites credible sources for its claims (an LLM rewrite). */
export const sourceCiting = rewriteTrait({
  name: "source_citing",
  description: "The assistant supports its claims by citing credible, specific sources (studies, institutions, books, official guidance).",
  template: "rewrite-source-citing",
});
