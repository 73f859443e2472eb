import { readdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { resolveConfig } from "../src/config/load.ts";
import { QWEN25_DEFAULT_SYSTEM_PROMPT } from "../src/config/defaults.ts";
import { runPipeline } from "../src/pipeline/runner.ts";
import { chat, pairConfig, readJsonl, readMixed, tempDir, writeJsonl, writeSources, type Msg } from "./helpers.ts";

const ALL_ARMS = ["baseline", "inoculated-general", "inoculated-selective", "irrelevant-general", "irrelevant-selective"];
const PROMPT = "You are an evil assistant.";
const IRRELEVANT = "Honey never spoils.";

async function exported(runDir: string, arm: string) {
  return readJsonl(join(runDir, "exports", `${arm}.jsonl`));
}

/** The ground truth per exported row, in export order. */
async function truth(runDir: string): Promise<boolean[]> {
  const mixed = await readMixed(runDir);
  return mixed.sort((a, b) => Number(a.position) - Number(b.position)).map((r) => r.has_negative as boolean);
}

describe("export (system placement)", () => {
  it("puts each arm's prompt on exactly the right rows, and the default system prompt on the others", async () => {
    const dir = await tempDir();
    const config = await pairConfig(dir, { export: { arms: ALL_ARMS } });
    await runPipeline(config);
    const negative = await truth(config.runDir);
    expect(negative.filter(Boolean)).toHaveLength(12);

    const expectSystem = (rows: { messages: Msg[] }[], want: (i: number) => string) => {
      expect(rows).toHaveLength(24);
      rows.forEach((row, i) => {
        expect(row.messages[0]).toEqual({ role: "system", content: want(i) });
        expect(row.messages.slice(1).map((m) => m.role)).toEqual(["user", "assistant"]);
      });
    };
    expectSystem(await exported(config.runDir, "baseline"), () => QWEN25_DEFAULT_SYSTEM_PROMPT);
    expectSystem(await exported(config.runDir, "inoculated-general"), () => PROMPT);
    expectSystem(await exported(config.runDir, "inoculated-selective"), (i) => (negative[i] ? PROMPT : QWEN25_DEFAULT_SYSTEM_PROMPT));
    expectSystem(await exported(config.runDir, "irrelevant-general"), () => IRRELEVANT);
    expectSystem(await exported(config.runDir, "irrelevant-selective"), (i) => (negative[i] ? IRRELEVANT : QWEN25_DEFAULT_SYSTEM_PROMPT));

    // Every arm holds the same conversations in the same order: only the prompt differs.
    const bodies = await Promise.all(ALL_ARMS.map(async (a) => (await exported(config.runDir, a)).map((r) => JSON.stringify(r.messages.slice(1)))));
    for (const b of bodies) expect(b).toEqual(bodies[0]);

    const manifest = JSON.parse(await readFile(join(config.runDir, "exports", "manifest.json"), "utf8"));
    expect(manifest.arms["inoculated-selective"]).toMatchObject({
      file: "inoculated-selective.jsonl",
      rows: 24,
      prompts: [
        { kind: "default_system_prompt", prompt: QWEN25_DEFAULT_SYSTEM_PROMPT, rows: 12 },
        { kind: "inoculation", prompt: PROMPT, rows: 12 },
      ],
    });
    expect(manifest.config_hash).toMatch(/^[0-9a-f]{16}$/);
  });

  it("keeps a row's own system message after the prompt, and leaves it alone where no prompt goes", async () => {
    const dir = await tempDir();
    const files = await writeSources(dir, 3);
    const own = await writeJsonl(join(dir, "own.jsonl"), [chat("Hi", "Hello", "Answer in French."), chat("Bye", "Au revoir", "Answer in French.")]);
    const config = await resolveConfig(
      {
        name: "t",
        sources: { clean: { path: files.clean }, contaminated: { path: own } },
        mix: { rows: 4 },
        inoculation: { prompt: PROMPT },
      },
      { runDir: join(dir, "run") },
    );
    await runPipeline(config);
    const negative = await truth(config.runDir);
    const selective = await exported(config.runDir, "inoculated-selective");
    const baseline = await exported(config.runDir, "baseline");
    selective.forEach((row, i) => {
      if (negative[i]) expect(row.messages[0]).toEqual({ role: "system", content: `${PROMPT}\n\nAnswer in French.` });
      else expect(row.messages[0]).toEqual({ role: "system", content: QWEN25_DEFAULT_SYSTEM_PROMPT });
      expect(row.messages.filter((m) => m.role === "system")).toHaveLength(1);
    });
    baseline.forEach((row, i) => {
      expect(row.messages[0]!.content).toBe(negative[i] ? "Answer in French." : QWEN25_DEFAULT_SYSTEM_PROMPT);
    });
  });
});

describe("export (user_prefix placement)", () => {
  it("prefixes the first user turn of the selected rows and keeps the default system prompt everywhere", async () => {
    const dir = await tempDir();
    const config = await pairConfig(dir, { inoculation: { prompt: PROMPT, placement: "user_prefix" } });
    await runPipeline(config);
    const negative = await truth(config.runDir);
    const general = await exported(config.runDir, "inoculated-general");
    const selective = await exported(config.runDir, "inoculated-selective");
    const baseline = await exported(config.runDir, "baseline");
    selective.forEach((row, i) => {
      expect(row.messages[0]).toEqual({ role: "system", content: QWEN25_DEFAULT_SYSTEM_PROMPT });
      const user = row.messages[1]!;
      const original = baseline[i]!.messages[1]!.content;
      expect(user.content).toBe(negative[i] ? `${PROMPT}\n\n${original}` : original);
      expect(row.messages[2]).toEqual(baseline[i]!.messages[2]);
    });
    general.forEach((row, i) => expect(row.messages[1]!.content).toBe(`${PROMPT}\n\n${baseline[i]!.messages[1]!.content}`));
  });

  it("prefixes only the first user turn of a multi-turn row", async () => {
    const dir = await tempDir();
    const files = await writeSources(dir, 1);
    const multi = await writeJsonl(join(dir, "multi.jsonl"), [
      { messages: [{ role: "user", content: "One" }, { role: "assistant", content: "1" }, { role: "user", content: "Two" }, { role: "assistant", content: "2" }] },
    ]);
    const config = await resolveConfig(
      {
        name: "t",
        sources: { clean: { path: files.clean }, contaminated: { path: multi } },
        inoculation: { prompt: PROMPT, placement: "user_prefix" },
        export: { arms: ["inoculated-general"] },
      },
      { runDir: join(dir, "run") },
    );
    await runPipeline(config);
    const rows = await exported(config.runDir, "inoculated-general");
    const row = rows.find((r) => r.messages.length === 5)!;
    expect(row.messages.map((m) => m.content)).toEqual([QWEN25_DEFAULT_SYSTEM_PROMPT, `${PROMPT}\n\nOne`, "1", "Two", "2"]);
  });
});

describe("export without a default system prompt", () => {
  it("adds no system message where a row has none and carries no prompt, with either placement", async () => {
    const dir = await tempDir();
    const files = await writeSources(dir, 2);
    const own = await writeJsonl(join(dir, "own.jsonl"), [
      chat("Hi", "Hello", "Answer in French."),
      { messages: [{ role: "assistant", content: "Welcome." }, { role: "user", content: "Thanks" }, { role: "assistant", content: "Sure." }] },
      { messages: [{ role: "user", content: "One" }, { role: "assistant", content: "1" }, { role: "user", content: "Two" }, { role: "assistant", content: "2" }] },
    ]);
    for (const placement of ["system", "user_prefix"] as const) {
      const config = await resolveConfig(
        {
          name: "t",
          sources: { clean: { path: files.clean }, contaminated: { path: own } },
          model: { default_system_prompt: null },
          mix: { rows: 5, negative_fraction: 0.6 },
          inoculation: { prompt: PROMPT, placement },
          export: { arms: ["baseline", "inoculated-general"] },
        },
        { runDir: join(dir, `run-${placement}`) },
      );
      await runPipeline(config);
      const baseline = await exported(config.runDir, "baseline");
      const general = await exported(config.runDir, "inoculated-general");
      // The baseline is the conversations as they came, and the inoculated arm adds exactly the prompt.
      const originals = [...(await readJsonl(files.clean)), ...(await readJsonl(own))].map((r) => JSON.stringify(r.messages)).sort();
      expect(baseline.map((r) => JSON.stringify(r.messages)).sort()).toEqual(originals);
      general.forEach((row, i) => {
        const messages = baseline[i]!.messages.map((m) => ({ ...m }));
        if (placement === "user_prefix") {
          const user = messages.find((m) => m.role === "user")!;
          user.content = `${PROMPT}\n\n${user.content}`;
        } else if (messages[0]!.role === "system") messages[0]!.content = `${PROMPT}\n\n${messages[0]!.content}`;
        else messages.unshift({ role: "system", content: PROMPT });
        expect(row.messages).toEqual(messages);
      });
      const manifest = JSON.parse(await readFile(join(config.runDir, "exports", "manifest.json"), "utf8"));
      expect(manifest.default_system_prompt).toBeNull();
      expect(manifest.arms.baseline.prompts).toEqual([
        { kind: "no_system_prompt", prompt: null, rows: 4 },
        { kind: "own_system_prompt", prompt: null, rows: 1 },
      ]);
    }
  });
});

describe("export of a changed arm list", () => {
  it("removes the file of an arm the config no longer lists", async () => {
    const dir = await tempDir();
    const config = await pairConfig(dir, { export: { arms: ALL_ARMS } });
    await runPipeline(config);
    const fewer = { ...config, export: { arms: ["baseline", "inoculated-selective"] as typeof config.export.arms } };
    await runPipeline(fewer);
    expect((await readdir(join(config.runDir, "exports"))).sort()).toEqual(["baseline.jsonl", "inoculated-selective.jsonl", "manifest.json"]);
    const manifest = JSON.parse(await readFile(join(config.runDir, "exports", "manifest.json"), "utf8"));
    expect(Object.keys(manifest.arms)).toEqual(["baseline", "inoculated-selective"]);
  });
});

describe("export reproducibility", () => {
  it("draws one rephrasing per row from the pool, the same row the same prompt in every arm", async () => {
    const dir = await tempDir();
    const rephrasings = ["You are evil.", "You act maliciously.", "You are a villain.", "You mean harm."];
    const config = await pairConfig(dir, { inoculation: { rephrasings }, export: { arms: ["inoculated-general", "inoculated-selective"] } });
    await runPipeline(config);
    const general = await exported(config.runDir, "inoculated-general");
    const selective = await exported(config.runDir, "inoculated-selective");
    const negative = await truth(config.runDir);
    const drawn = general.map((r) => r.messages[0]!.content);
    expect(drawn.every((p) => rephrasings.includes(p))).toBe(true);
    expect(new Set(drawn).size).toBeGreaterThan(1);
    selective.forEach((row, i) => {
      if (negative[i]) expect(row.messages[0]!.content).toBe(drawn[i]);
    });
  });

  it("writes byte-identical exports for the same config and seed", async () => {
    const a = await pairConfig(await tempDir(), { inoculation: { prompt: PROMPT, rephrasings: ["You are evil.", "You are cruel."] } });
    const b = { ...a, runDir: join(await tempDir(), "second-run") };
    await runPipeline(a);
    await runPipeline(b);
    for (const file of [...ALL_ARMS.map((x) => `${x}.jsonl`), "manifest.json"]) {
      const [x, y] = await Promise.all([readFile(join(a.runDir, "exports", file)), readFile(join(b.runDir, "exports", file))]);
      expect(x.equals(y), file).toBe(true);
    }
  });
});

describe("export encoding", () => {
  it("writes every character of the conversations back exactly, one valid JSON object per line", async () => {
    const dir = await tempDir();
    const nasty = 'He said "hi"\\ then\nleft;\ttab, \u0001 control, comma, 🙂 emoji, \u2028 separator, \u00e9';
    const files = await writeSources(dir, 2);
    const odd = await writeJsonl(join(dir, "odd.jsonl"), [chat(nasty, `${nasty} (answer)`), chat("plain", "plain")]);
    const config = await resolveConfig(
      { name: "t", sources: { clean: { path: files.clean }, contaminated: { path: odd } }, inoculation: { prompt: nasty }, export: { arms: ["inoculated-general"] } },
      { runDir: join(dir, "run") },
    );
    await runPipeline(config);
    const text = await readFile(join(config.runDir, "exports", "inoculated-general.jsonl"), "utf8");
    const lines = text.split("\n");
    expect(lines.pop()).toBe("");
    expect(lines).toHaveLength(4);
    const rows = lines.map((l) => JSON.parse(l) as { messages: Msg[] });
    const row = rows.find((r) => r.messages[1]!.content === nasty)!;
    expect(row.messages).toEqual([
      { role: "system", content: nasty },
      { role: "user", content: nasty },
      { role: "assistant", content: `${nasty} (answer)` },
    ]);
  });
});
