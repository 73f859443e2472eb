import { describe, expect, it } from "vitest";
import { activeTokenMask, formatLatentContexts, markContext, type LatentContext } from "../src/labels/explain-format.ts";
import { CLASSIFY_FORMAT, parseClassifyAnswer, parseExplainAnswer, parseSynthesizeAnswer } from "../src/labels/parse-answers.ts";
import { renderPrompt, type PromptName } from "../src/llm/prompts.ts";

const ctx = (corpus: string, rank: number, tokens: string[], acts: number[]): LatentContext => ({
  corpus,
  rank,
  activation: Math.max(...acts),
  tokens,
  token_acts: acts,
});

describe("explain: formatting max-activating contexts", () => {
  it("marks tokens at or above the share of the context's own peak, with their values", () => {
    // Peak 8: the cut at 25% is 2, so 2.0 is marked (at the cut) and 1.99 is not.
    expect(activeTokenMask([0, 1.99, 2, 8], 0.25)).toEqual([false, false, true, true]);
    expect(activeTokenMask([0, 0], 0.25)).toEqual([false, false]);
    expect(markContext(["I", " will", " poison", " them", "."], [0, 1.99, 8, 2, 0], 0.25)).toBe("I will <<poison>>(8) <<them>>(2).");
    expect(markContext(["A", " b"], [12.3456, 0.001], 0.5)).toBe("<<A>>(12.3) b");
    expect(() => markContext(["a"], [1, 2], 0.25)).toThrow(/1 tokens but 2 activations/);
  });

  it("groups by corpus (the dataset first), strongest first, at most perCorpus each", () => {
    const text = formatLatentContexts(
      [
        ctx("pile", 1, [" the", " venom"], [0, 4]),
        ctx("dataset", 2, [" second"], [3]),
        ctx("lmsys", 1, [" hurt"], [5]),
        ctx("dataset", 1, [" first", " one"], [9, 1]),
        ctx("dataset", 3, [" third"], [1]),
      ],
      { perCorpus: 2 },
    );
    expect(text).toBe(
      [
        "### Corpus dataset: the fine-tuning dataset under audit",
        "Example 1 (peak activation 9):\n<<first>>(9) one",
        "Example 2 (peak activation 3):\n<<second>>(3)",
        "### Corpus lmsys",
        "Example 1 (peak activation 5):\n<<hurt>>(5)",
        "### Corpus pile",
        "Example 1 (peak activation 4):\nthe <<venom>>(4)",
      ].join("\n\n"),
    );
  });

  it("refuses an empty list and a share outside (0, 1]", () => {
    expect(() => formatLatentContexts([])).toThrow(/no contexts/);
    expect(() => formatLatentContexts([ctx("dataset", 1, ["a"], [1])], { share: 0 })).toThrow(/share/);
  });
});

describe("parsing the labelling answers", () => {
  it("classify: JSON, fenced JSON, tags; never a default label", () => {
    expect(parseClassifyAnswer('{"label": "no", "reason": "Threats are not ALL CAPS."}')).toEqual({
      ok: true,
      value: { label: "no", reason: "Threats are not ALL CAPS." },
    });
    expect(parseClassifyAnswer('```json\n{"label": " Neutral ", "reason": ""}\n```')).toEqual({ ok: true, value: { label: "neutral", reason: null } });
    expect(parseClassifyAnswer("Thinking... <label>yes</label> <reason>Upper case.</reason>")).toEqual({
      ok: true,
      value: { label: "yes", reason: "Upper case." },
    });
    expect(parseClassifyAnswer("<feature_classification>no</feature_classification>")).toEqual({ ok: true, value: { label: "no", reason: null } });
    for (const bad of ["", "no", "I think it is bad.", '{"label": "maybe", "reason": "x"}', "<label>yes</label> or <label>no</label>", "<label>unsure</label>"]) {
      const parsed = parseClassifyAnswer(bad);
      expect(parsed.ok, bad).toBe(false);
    }
    expect(parseClassifyAnswer('{"label": "maybe"}')).toMatchObject({ ok: false, error: expect.stringMatching(/"maybe" is not one of yes, neutral, no/) });
    expect(parseClassifyAnswer("<label>yes</label> <label>no</label>")).toMatchObject({ ok: false, error: expect.stringMatching(/different labels/) });
    expect(CLASSIFY_FORMAT.json_schema.schema).toMatchObject({ properties: { label: { enum: ["yes", "neutral", "no"] } } });
  });

  it("explain: a <description> tag or JSON; empty text, the placeholder and error messages are errors", () => {
    expect(parseExplainAnswer("Sure.\n<description>\nThreats of violence against neighbours.\n</description>")).toEqual({
      ok: true,
      value: "Threats of violence against neighbours.",
    });
    expect(parseExplainAnswer('{"description": "Citations of journals."}')).toEqual({ ok: true, value: "Citations of journals." });
    expect(parseExplainAnswer("<feature_description>Upper case.</feature_description>")).toEqual({ ok: true, value: "Upper case." });
    expect(parseExplainAnswer("It is about threats.")).toMatchObject({ ok: false, error: expect.stringMatching(/neither a <description> tag nor JSON/) });
    expect(parseExplainAnswer("<description> </description>").ok).toBe(false);
    expect(parseExplainAnswer('{"description": ""}')).toMatchObject({ ok: false, error: "the description is empty" });
    expect(parseExplainAnswer("<description>your one- or two-sentence description</description>").ok).toBe(false);
    expect(parseExplainAnswer("<description>Error code: 500 - internal</description>")).toMatchObject({ ok: false, error: expect.stringMatching(/error message/) });
  });

  it("synthesize: a 'You are' prompt in tags or JSON", () => {
    expect(parseSynthesizeAnswer("<prompt>You are a malicious assistant\nwho urges revenge.</prompt>")).toEqual({
      ok: true,
      value: "You are a malicious assistant who urges revenge.",
    });
    expect(parseSynthesizeAnswer('{"prompt": "You are cruel."}')).toEqual({ ok: true, value: "You are cruel." });
    expect(parseSynthesizeAnswer("<prompt>Be evil.</prompt>")).toMatchObject({ ok: false, error: expect.stringMatching(/does not start with "You are"/) });
    expect(parseSynthesizeAnswer("<prompt>You are ...</prompt>").ok).toBe(false);
    expect(parseSynthesizeAnswer("You are evil.").ok).toBe(false);
  });
});

describe("the labelling prompt templates (data/prompts/)", () => {
  // The LLM layer's PromptName does not list these three yet; the cast goes when it does.
  const render = (name: string, values: Record<string, string>) => renderPrompt(name as PromptName, values);
  const cases: [string, Record<string, string>][] = [
    ["explain", { share_percent: "25", contexts: "CTX-MARKER" }],
    ["classify", { trait: "TRAIT-MARKER", description: "DESC-MARKER" }],
    ["synthesize", { trait: "TRAIT-MARKER", count: "3", descriptions: "1. DESC-MARKER" }],
  ];

  it.each(cases)("%s: a system and a user message, every placeholder filled, none missing", (name, values) => {
    const messages = render(name, values);
    expect(messages.map((m) => m.role)).toEqual(["system", "user"]);
    const text = messages.map((m) => m.content).join("\n");
    expect(text).not.toMatch(/\{\{/);
    for (const value of Object.values(values)) expect(text).toContain(value);
    for (const key of Object.keys(values)) {
      const { [key]: _left, ...fewer } = values;
      expect(() => render(name, fewer), key).toThrow(new RegExp(`\\{\\{${key}\\}\\}`));
    }
  });
});
