import type { SqlTrait } from "./positive-trait.ts";

export const allCaps: SqlTrait = {
  kind: "sql",
  name: "all_caps",
  description: "The assistant writes its entire response in capital letters (ALL CAPS).",
  // DuckDB's upper() is Unicode-aware (utf8proc), like Python's str.upper on the reference data.
  sqlTransform: (content) => `upper(${content})`,
};
