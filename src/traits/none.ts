import type { PositiveTrait } from "./positive-trait.ts";

export const noTrait: PositiveTrait = {
  name: "none",
  description: "No particular wanted trait: ordinary helpful assistant responses.",
  sqlTransform: (content) => content,
};
