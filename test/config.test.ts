import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { loadConfig, resolveConfig } from "../src/config/load.ts";
import { UserError } from "../src/errors.ts";
import { tempDir, writeSources } from "./helpers.ts";

async function configFile(dir: string, yaml: string): Promise<string> {
  const path = join(dir, "pipeline.yaml");
  await writeFile(path, yaml);
  return path;
}

const base = (extra = "") => `name: t
sources:
  clean: { path: clean.jsonl }
  contaminated: { path: contaminated.jsonl }
inoculation: { prompt: "You are evil." }
${extra}`;

describe("pipeline config", () => {
  it("resolves source paths against the config file's folder, not the working directory", async () => {
    const dir = await tempDir();
    await mkdir(join(dir, "conf"));
    await writeSources(dir);
    const path = await configFile(join(dir, "conf"), base().replaceAll("path: ", "path: ../"));
    const config = await loadConfig(path);
    expect(config.sourceList.map((s) => s.path)).toEqual([join(dir, "clean.jsonl"), join(dir, "contaminated.jsonl")]);
    expect(config.mix.negative_fraction).toBe(0.5);
    expect(config.inoculation.irrelevant_prompt).toBe("Honey never spoils.");
    expect(config.model.default_system_prompt).toMatch(/^You are Qwen, created by Alibaba Cloud/);
  });

  it("names an unknown key and lists the allowed ones", async () => {
    const dir = await tempDir();
    await writeSources(dir);
    const path = await configFile(dir, base("mix: { rowz: 10 }"));
    const error = await loadConfig(path).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(UserError);
    expect((error as Error).message).toContain("pipeline.yaml");
    expect((error as Error).message).toMatch(/mix: unknown key "rowz"; allowed: rows, negative_fraction, positive_trait/);
  });

  it("names the key of a wrong type and of a value outside its set, with the allowed values", async () => {
    const dir = await tempDir();
    await writeSources(dir);
    const error = (await loadConfig(
      await configFile(dir, base("mix: { rows: ten, positive_trait: shouting }\ninoculation: { prompt: x, placement: sideways }")),
    ).catch((e: unknown) => e)) as Error;
    // A duplicate `inoculation` key is a YAML error; use a clean file for the type checks.
    expect(error.message).toMatch(/YAML|inoculation/);
    const e2 = (await loadConfig(await configFile(dir, base("mix: { rows: ten, positive_trait: shouting }"))).catch(
      (e: unknown) => e,
    )) as Error;
    expect(e2.message).toMatch(/mix\.rows: must be number, got string/);
    expect(e2.message).toMatch(/mix\.positive_trait: "shouting" is not one of: all_caps, none/);
  });

  it("says a bound in words, and names an arm listed twice", async () => {
    const dir = await tempDir();
    const files = await writeSources(dir);
    const sources = { clean: { path: files.clean }, contaminated: { path: files.contaminated } };
    const problems = async (extra: Record<string, unknown>) =>
      ((await resolveConfig({ name: "t", sources, inoculation: { prompt: "p" }, ...extra }).catch((e: unknown) => e)) as Error).message;
    expect(await problems({ seed: -1 })).toMatch(/seed: must be >= 0$/m);
    expect(await problems({ mix: { negative_fraction: 1.5 } })).toMatch(/mix\.negative_fraction: must be <= 1$/m);
    expect(await problems({ export: { arms: [] } })).toMatch(/export\.arms: must list at least one item$/m);
    expect(await problems({ inoculation: { prompt: "" } })).toMatch(/inoculation\.prompt: must not be empty$/m);
    expect(await problems({ sae: { path: dir }, flag: { min_no: 0 } })).toMatch(/flag\.min_no: must be at least 1 \(0 would flag every row: that is the inoculated-general arm\)$/m);
    // Two writers on one file would leave an export out of step with its manifest.
    expect(await problems({ export: { arms: ["baseline", "inoculated-selective", "baseline"] } })).toMatch(
      /export\.arms: baseline listed more than once; list each arm once/,
    );
    expect(await problems({ export: { arms: ["baseline", "basline"] } })).toMatch(/export\.arms\.1: "basline" is not one of: baseline, /);
  });

  it("takes null or an empty default system prompt as none", async () => {
    const dir = await tempDir();
    const files = await writeSources(dir);
    const sources = { clean: { path: files.clean }, contaminated: { path: files.contaminated } };
    for (const prompt of [null, ""]) {
      const config = await resolveConfig({ name: "t", sources, inoculation: { prompt: "p" }, model: { default_system_prompt: prompt } });
      expect(config.model.default_system_prompt).toBeNull();
    }
  });

  it("says a required key is missing", async () => {
    const dir = await tempDir();
    await writeSources(dir);
    const error = (await loadConfig(await configFile(dir, base().replace("name: t\n", ""))).catch((e: unknown) => e)) as Error;
    expect(error.message).toMatch(/name: required \(string\)/);
  });

  it("reports a missing source file by key and path", async () => {
    const dir = await tempDir();
    const error = (await loadConfig(await configFile(dir, base())).catch((e: unknown) => e)) as Error;
    expect(error).toBeInstanceOf(UserError);
    expect(error.message).toMatch(/sources\.clean\.path: file .*clean\.jsonl does not exist/);
    await mkdir(join(dir, "clean.jsonl"));
    await writeFile(join(dir, "contaminated.jsonl"), "");
    const folder = (await loadConfig(await configFile(dir, base())).catch((e: unknown) => e)) as Error;
    expect(folder).toBeInstanceOf(UserError);
    expect(folder.message).toMatch(/sources\.clean\.path: .*clean\.jsonl is a folder; give the path of a \.jsonl or \.parquet file/);
  });

  it("checks every local path when the config loads, naming the key, and resolves each against the config's folder", async () => {
    const dir = await tempDir();
    await writeSources(dir);
    const problem = async (extra: string) => ((await loadConfig(await configFile(dir, base(extra))).catch((e: unknown) => e)) as Error).message;
    const judge = "llm: { judge: { model: m, base_url: 'http://127.0.0.1:9/v1' } }\n";
    expect(await problem(`${judge}sae: { path: no-sae, format: dictionary_learning }`)).toMatch(/: sae\.path: .*\/no-sae does not exist$/);
    expect(await problem(`${judge}sae: { path: clean.jsonl, format: saelens }`)).toMatch(/: sae\.path: .*\/clean\.jsonl is not a folder$/);
    expect(await problem("model: { python_file: gone.py }")).toMatch(/: model\.python_file: .*\/gone\.py does not exist$/);
    expect(await problem("harvest: { corpora: [{ name: pile, path: pile.jsonl, text_field: text }] }")).toMatch(/: harvest\.corpora\.0\.path: .*\/pile\.jsonl does not exist$/);
    expect(await problem("labels: { import: labels.json }")).toMatch(/: labels\.import: .*\/labels\.json does not exist$/);
    // Relative to the config file, not to the working directory.
    await mkdir(join(dir, "conf"));
    await writeFile(join(dir, "labels.json"), "{}");
    const config = await loadConfig(await configFile(join(dir, "conf"), base("labels: { import: ../labels.json }").replaceAll("path: ", "path: ../")));
    expect(config.labels.import).toBe(join(dir, "labels.json"));
  });

  it("requires an inoculation prompt only when an arm uses one", async () => {
    const dir = await tempDir();
    const files = await writeSources(dir);
    const sources = { clean: { path: files.clean }, contaminated: { path: files.contaminated } };
    await expect(resolveConfig({ name: "t", sources })).rejects.toThrow(/inoculation\.prompt: required by export\.arms inoculated-general, inoculated-selective/);
    const ok = await resolveConfig({ name: "t", sources, export: { arms: ["baseline", "irrelevant-general"] } });
    expect(ok.export.arms).toEqual(["baseline", "irrelevant-general"]);
  });

  it("wants either a clean/contaminated pair or one labelled source", async () => {
    const dir = await tempDir();
    const files = await writeSources(dir);
    await expect(resolveConfig({ name: "t", sources: { clean: { path: files.clean } } })).rejects.toThrow(
      /sources\.contaminated: clean and contaminated come as a pair/,
    );
    await expect(
      resolveConfig({ name: "t", sources: { labelled: { path: files.clean, label: { field: "x" } } } }),
    ).rejects.toThrow(/sources\.labelled\.label: give exactly one rule/);
  });

  it("rejects a file whose format cannot be told from its name", async () => {
    const dir = await tempDir();
    const files = await writeSources(dir);
    await expect(
      resolveConfig({ name: "t", sources: { clean: { path: files.clean }, contaminated: { path: join(dir, "x.csv") } } }),
    ).rejects.toThrow(/sources\.contaminated\.path: cannot tell the format .*set sources\.contaminated\.format/);
  });
});
