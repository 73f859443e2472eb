import { describe, expect, it } from "vitest";
import { STAGES } from "../src/pipeline/stages.ts";
import { pairConfig, tempDir } from "./helpers.ts";

/** The Stage interface's contract, checked on every stage the pipeline lists. */
describe("every stage", () => {
  it("has a unique name and reads only stages that come before it", () => {
    const names = STAGES.map((s) => s.name);
    expect(new Set(names).size).toBe(names.length);
    STAGES.forEach((stage, i) => {
      for (const upstream of stage.after) expect(names.slice(0, i), `${stage.name} reads ${upstream}`).toContain(upstream);
    });
  });

  it("names its outputs inside the run directory, and says what enables it when a config leaves it out", async () => {
    // The smallest config: no model server, no SAE, no audit, so every optional stage is off.
    const config = await pairConfig(await tempDir());
    const disabled = STAGES.filter((s) => !s.enabled(config)).map((s) => s.name);
    expect(disabled).toEqual(["generate", "activations", "harvest", "explain", "classify", "synthesize", "flag", "audit", "rephrase"]);
    for (const stage of STAGES) {
      if (!stage.enabled(config)) expect(stage.enableWith, stage.name).toMatch(/^(set|add) /);
      for (const output of stage.outputs(config)) expect(output, stage.name).toMatch(/^(tables\/[a-z_]+\.parquet|exports\/[a-z-]+\.(jsonl|json)|report\.html)$/);
    }
  });
});
