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
] as const;
export type ArmName = (typeof ARM_NAMES)[number];

export const DEFAULT_ARMS: readonly ArmName[] = ARM_NAMES;

/** Which prompt text an arm puts on its selected rows. */
export type ArmPrompt = "none" | "inoculation" | "irrelevant";

/** Which rows of `mixed` get the prompt. */
export type ArmRows = "none" | "all" | "has_negative";

export interface ArmDefinition {
  readonly name: ArmName;
  readonly prompt: ArmPrompt;
  readonly rows: ArmRows;
  readonly description: string;
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
};

/** SQL condition over a `mixed` row aliased `m`: true when the arm puts its prompt on the row. */
export function armRowsSql(rows: ArmRows): string {
  switch (rows) {
    case "none":
      return "false";
    case "all":
      return "true";
    case "has_negative":
      return "m.has_negative";
  }
}
