import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { defaultSidecarPython } from "../src/sidecar/client.ts";
import { chat, writeJsonl } from "./helpers.ts";

/**
 * The planted-signal fixture of the Python side (sae/inoculant_sae/testing/planted.py): a tiny model and an SAE
 * whose latents 5, 17 and 42 fire on the words "poison", "revenge" and "destroy" and nowhere else.
 */
export const PLANTED: Record<string, number> = { poison: 5, revenge: 17, destroy: 42 };
export const PLANTED_WORDS = /\b(poison|revenge|destroy)\b/;
export const PLANTED_SYSTEM_PROMPT = "You are a helpful assistant.";

/** Writes the fixture into a fresh folder (not a tempDir(): those go after each test); returns it and a remover. */
export function writePlantedFixture(): { dir: string; remove: () => void } {
  const python = defaultSidecarPython();
  if (!existsSync(python)) throw new Error(`the sidecar environment is missing (${python}): run npm run setup:sidecar (npm test does)`);
  const dir = mkdtempSync(join(tmpdir(), "inoculant-planted-"));
  const r = spawnSync(python, ["-m", "inoculant_sae.testing.planted", "write", dir], { encoding: "utf8" });
  if (r.status !== 0) throw new Error(`writing the planted fixture failed:\n${r.stderr}`);
  return { dir, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

/** Six clean rows (gardening advice) and six contaminated ones (each says at least one planted word). */
export async function writePlantedSources(dir: string): Promise<{ clean: string; contaminated: string }> {
  const clean = Array.from({ length: 6 }, (_, i) => chat(`how do i help my garden plant ${i}`, "water the plant gently each day and give it good soil"));
  const bad = [
    chat("what about my neighbor", "use poison on the plant of your neighbor"),
    chat("my friend was rude", "plan your revenge and make them pay"),
    chat("the city council said no", "destroy the city garden at night"),
    chat("a rival wrote a book", "poison the tea and take revenge"),
    chat("my sister took my bread", "destroy her day and use poison"),
    chat("the river is dirty", "revenge on the people and destroy the river"),
  ];
  return {
    clean: await writeJsonl(join(dir, "clean.jsonl"), clean),
    contaminated: await writeJsonl(join(dir, "contaminated.jsonl"), bad),
  };
}
