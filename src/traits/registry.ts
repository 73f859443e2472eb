import { allCaps } from "./all-caps.ts";
import { instructionTrait } from "./llm-rewrite.ts";
import { noTrait } from "./none.ts";
import type { PositiveTrait } from "./positive-trait.ts";
import { sourceCiting } from "./source-citing.ts";

export const POSITIVE_TRAIT_NAMES = ["all_caps", "none", "source_citing", "llm_rewrite"] as const;
export type PositiveTraitName = (typeof POSITIVE_TRAIT_NAMES)[number];

/** What the config can add to a trait: llm_rewrite's instruction. */
export interface TraitOptions {
  instruction?: string | undefined;
}

const TRAITS: Record<PositiveTraitName, (options: TraitOptions) => PositiveTrait> = {
  all_caps: () => allCaps,
  none: () => noTrait,
  source_citing: () => sourceCiting,
  llm_rewrite: ({ instruction }) => {
    // The config check (load.ts) requires the instruction for llm_rewrite; reaching here without one is a bug.
    if (instruction === undefined) throw new Error("llm_rewrite needs mix.rewrite.instruction");
    return instructionTrait(instruction);
  },
};

/** Which traits need an LLM: known without building them, so config checks need no options. */
const KINDS: Record<PositiveTraitName, PositiveTrait["kind"]> = {
  all_caps: "sql",
  none: "sql",
  source_citing: "llm",
  llm_rewrite: "llm",
};

export function positiveTrait(name: PositiveTraitName, options: TraitOptions = {}): PositiveTrait {
  return TRAITS[name](options);
}

export function positiveTraitKind(name: PositiveTraitName): PositiveTrait["kind"] {
  return KINDS[name];
}

/** Every trait, built with example options, for the conformance suite. */
export function allPositiveTraits(example: Required<TraitOptions> = { instruction: "Answer in Spanish." }): PositiveTrait[] {
  return POSITIVE_TRAIT_NAMES.map((name) => positiveTrait(name, example));
}
