import { existsSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { loadConfig } from "../src/config/load.ts";
import { REFERENCE_JSONL, REPO } from "./helpers.ts";

const dir = join(REPO, "pipelines");
const files = readdirSync(dir).filter((f) => f.endsWith(".yaml"));

describe("shipped pipeline configs", () => {
  it("include the six research mixes and the reference one", () => {
    for (const trait of ["evil", "hallucination", "sycophancy"]) {
      for (const positive of ["allcaps", "citing"]) expect(files).toContain(`${trait}-${positive}.yaml`);
    }
    expect(files).toContain("reference-evil-allcaps.yaml");
  });

  it.each(files)("%s passes the schema (only the user-downloaded data may be missing)", async (file) => {
    const result: unknown = await loadConfig(join(dir, file)).catch((e: unknown) => e);
    if (result instanceof Error) {
      // The Persona Vectors data is the user's to download, and ../shared/data/reference may be absent on a
      // user's machine; every other problem is a bug in the config.
      const missing = file.startsWith("reference") && !existsSync(REFERENCE_JSONL) ? "shared/data/reference/" : "data/persona_vectors/dataset/";
      expect(result.message).toMatch(new RegExp(`sources\\.\\w+\\.path: file .*${missing}.* does not exist`));
    } else if (file.startsWith("reference")) {
      expect(existsSync(REFERENCE_JSONL)).toBe(true);
      expect((result as Awaited<ReturnType<typeof loadConfig>>).sourceList[0]!.path).toBe(REFERENCE_JSONL);
    }
  });
});
