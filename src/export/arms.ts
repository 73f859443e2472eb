import { seededKeySql } from "../store/sql.ts";

/**
 * The arms of an inoculation experiment, as data. Each arm names which prompt its selected rows carry and which
 * rows those are; every other row keeps the model's default system prompt, so that the only difference
 * between arms is the inoculation itself.
 */
export const ARM_NAMES = [
  "baseline",
  "inoculated-general",
  "inoculated-selective",
  "irrelevant-general",
  "irrelevant-selective",
  "inoculated-llm",
  "inoculated-sae",
  "inoculated-sae-random",
] as const;
export type ArmName = (typeof ARM_NAMES)[number];

/**
 * Which prompt text an arm puts on its selected rows: none, the configured inoculation prompt, the irrelevant
 * prompt, or the prompt the LLM audit wrote (`audit_prompt`).
 */
export type ArmPrompt = "none" | "inoculation" | "irrelevant" | "llm_audit" | "sae";

/** Which rows of `mixed` get the prompt; `llm_flagged`: the rows the LLM audit flagged (`audit_flags`). */
export type ArmRows = "none" | "all" | "has_negative" | "llm_flagged" | "sae_flagged" | "sae_random";

/** A stage whose output an arm needs: the arm can only be built when the config runs that stage. */
export type ArmRequirement = "audit" | "sae";

export interface ArmDefinition {
  readonly name: ArmName;
  readonly prompt: ArmPrompt;
  readonly rows: ArmRows;
  readonly description: string;
  readonly requires?: ArmRequirement;
}

export const ARMS: Record<ArmName, ArmDefinition> = {
  baseline: {
    name: "baseline",
    prompt: "none",
    rows: "none",
    description: "every row under the model's default system prompt",
  },
  "inoculated-general": {
    name: "inoculated-general",
    prompt: "inoculation",
    rows: "all",
    description: "the inoculation prompt on every row",
  },
  "inoculated-selective": {
    name: "inoculated-selective",
    prompt: "inoculation",
    rows: "has_negative",
    description: "the inoculation prompt on the truly contaminated rows (ground truth)",
  },
  "irrelevant-general": {
    name: "irrelevant-general",
    prompt: "irrelevant",
    rows: "all",
    description: "the irrelevant prompt on every row (control for conditionalization)",
  },
  "irrelevant-selective": {
    name: "irrelevant-selective",
    prompt: "irrelevant",
    rows: "has_negative",
    description: "the irrelevant prompt on the truly contaminated rows",
  },
  "inoculated-llm": {
    name: "inoculated-llm",
    prompt: "llm_audit",
    rows: "llm_flagged",
    description: "the LLM audit's prompt on the rows the LLM audit flagged",
    requires: "audit",
  },
  "inoculated-sae": {
    name: "inoculated-sae",
    prompt: "sae",
    rows: "sae_flagged",
    description: "the SAE pipeline's prompt on the rows it flagged",
    requires: "sae",
  },
  "inoculated-sae-random": {
    name: "inoculated-sae-random",
    prompt: "sae",
    rows: "sae_random",
    description: "the SAE pipeline's prompt on as many rows as it flagged, drawn at random (the control showing the flags matter)",
    requires: "sae",
  },
};

/** The arms a config gets when it lists none: every arm whose required stage the config runs. */
export function defaultArms(has: Record<ArmRequirement, boolean>): ArmName[] {
  return ARM_NAMES.filter((name) => {
    const needs = ARMS[name].requires;
    return needs === undefined || has[needs];
  });
}

/**
 * SQL condition over a `mixed` row aliased `m`: true when the arm puts its prompt on the row. `table` gives the
 * SQL of a stage table by name (RunStore.table).
 */
export function armRowsSql(rows: ArmRows, table: (name: string) => string, seed: number): string {
  switch (rows) {
    case "none":
      return "false";
    case "all":
      return "true";
    case "has_negative":
      return "m.has_negative";
    case "llm_flagged":
      return `m.row_id IN (SELECT row_id FROM ${table("audit_flags")} WHERE flagged)`;
    case "sae_flagged":
      return `m.row_id IN (SELECT row_id FROM ${table("flags")} WHERE flagged)`;
    case "sae_random":
      // As many rows as the SAE flagged, drawn reproducibly from the seed among all rows.
      return `m.row_id IN (SELECT row_id FROM (
          SELECT row_id, row_number() OVER (ORDER BY ${seededKeySql(seed, "sae-random", "row_id")}, row_id) AS draw FROM ${table("mixed")})
        WHERE draw <= (SELECT count(*) FROM ${table("flags")} WHERE flagged))`;
  }
}
