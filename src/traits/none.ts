import type { SqlTrait } from "./positive-trait.ts";

export const noTrait: SqlTrait = {
  kind: "sql",
  name: "none",
  description: "No particular wanted trait: ordinary helpful assistant responses.",
  sqlTransform: (content) => content,
};
