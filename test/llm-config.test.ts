import { describe, expect, it } from "vitest";
import { resolveConfig } from "../src/config/load.ts";
import { tempDir, writeSources } from "./helpers.ts";

async function base() {
  const files = await writeSources(await tempDir(), 2);
  return { name: "t", sources: { clean: { path: files.clean }, contaminated: { path: files.contaminated } }, inoculation: { prompt: "x" } };
}
const judge = { model: "gpt-4.1-mini", api_key_env: "OPENAI_API_KEY" };

describe("LLM config", () => {
  it("fills role defaults, and adds the inoculated-llm arm to the default arms when the audit runs", async () => {
    const config = await resolveConfig({ ...(await base()), llm: { judge }, audit: {} });
    expect(config.llm.judge).toMatchObject({ base_url: "https://api.openai.com/v1", concurrency: 16, max_retries: 5, parse_retries: 2 });
    expect(config.generate).toEqual({ temperature: 0.7, max_tokens: 512, n: 1 });
    expect(config.rephrase.k).toBe(0);
    expect(config.export.arms).toContain("inoculated-llm");
    expect((await resolveConfig(await base())).export.arms).not.toContain("inoculated-llm");
  });

  it("rejects a key written into the config, naming the key to use instead", async () => {
    await expect(resolveConfig({ ...(await base()), llm: { judge: { ...judge, api_key: "sk-123" } } })).rejects.toThrow(
      /llm\.judge: unknown key "api_key"; allowed: model, base_url, api_key_env/,
    );
  });

  it("wants an http(s) base_url: one without a scheme would only fail at the first request, retried per row", async () => {
    for (const base_url of ["localhost:8000/v1", "ftp://example.org/v1"]) {
      await expect(resolveConfig({ ...(await base()), llm: { judge: { ...judge, base_url } } })).rejects.toThrow(
        /llm\.judge\.base_url: must be an http:\/\/ or https:\/\/ URL, such as http:\/\/localhost:8000\/v1/,
      );
    }
    const local = await resolveConfig({ ...(await base()), llm: { judge: { ...judge, base_url: "http://127.0.0.1:8000/v1" } } });
    expect(local.llm.judge!.base_url).toBe("http://127.0.0.1:8000/v1");
  });

  it("says which role or section each LLM stage, trait and arm needs", async () => {
    const b = await base();
    await expect(resolveConfig({ ...b, audit: {} })).rejects.toThrow(/llm\.judge: required by audit; add llm\.judge/);
    await expect(resolveConfig({ ...b, rephrase: { k: 3 } })).rejects.toThrow(/llm\.judge: required by rephrase\.k 3/);
    await expect(resolveConfig({ ...b, mix: { positive_trait: "source_citing", rewrite: { role: "generator" } } })).rejects.toThrow(
      /llm\.generator: required by mix\.positive_trait source_citing \(mix\.rewrite\.role\)/,
    );
    await expect(resolveConfig({ ...b, llm: { judge }, mix: { positive_trait: "llm_rewrite" } })).rejects.toThrow(
      /mix\.rewrite\.instruction: required by mix\.positive_trait llm_rewrite/,
    );
    await expect(resolveConfig({ ...b, mix: { rewrite: { instruction: "Answer in Spanish." } } })).rejects.toThrow(/mix\.rewrite\.instruction: only llm_rewrite uses it/);
    await expect(resolveConfig({ ...b, llm: { judge }, export: { arms: ["inoculated-llm"] } })).rejects.toThrow(/export\.arms: inoculated-llm needs the LLM audit/);
  });
});
