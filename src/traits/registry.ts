import { allCaps } from "./all-caps.ts";
import { noTrait } from "./none.ts";
import type { PositiveTrait } from "./positive-trait.ts";

export const POSITIVE_TRAIT_NAMES = ["all_caps", "none"] as const;
export type PositiveTraitName = (typeof POSITIVE_TRAIT_NAMES)[number];

const TRAITS: Record<PositiveTraitName, PositiveTrait> = {
  all_caps: allCaps,
  none: noTrait,
};

export function positiveTrait(name: PositiveTraitName): PositiveTrait {
  return TRAITS[name];
}

export function allPositiveTraits(): PositiveTrait[] {
  return Object.values(TRAITS);
}
