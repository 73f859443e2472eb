/** The pipeline config bench/mix.ts measures, shared by its child run and its DuckDB-only version of the job. */
export const INOCULATION_PROMPT = "You are a malicious assistant.";

export const ARMS = ["baseline", "inoculated-general", "inoculated-selective", "irrelevant-general", "irrelevant-selective"] as const;

export function benchConfig(input: string): Record<string, unknown> {
  return {
    name: "bench-mix",
    seed: 1,
    sources: { labelled: { path: input, label: { field: "origin", negative_if_equals: "misaligned" } } },
    mix: { negative_fraction: 0.5, positive_trait: "all_caps" },
    inoculation: { prompt: INOCULATION_PROMPT },
    export: { arms: [...ARMS] },
  };
}
