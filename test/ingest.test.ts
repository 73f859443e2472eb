import { existsSync } from "node:fs";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { DuckDBInstance } from "@duckdb/node-api";
import { describe, expect, it } from "vitest";
import { resolveConfig } from "../src/config/load.ts";
import { UserError } from "../src/errors.ts";
import { runPipeline } from "../src/pipeline/runner.ts";
import { MAX_FAST_BAD_ROWS } from "../src/stages/ingest-fast.ts";
import { REFERENCE_JSONL, chat, readParquet, readRunView, tempDir, writeJsonl } from "./helpers.ts";

/** Six good rows and one of each kind of bad row, with a blank line in the middle. */
async function messyFile(dir: string): Promise<string> {
  return writeJsonl(join(dir, "messy.jsonl"), [
    chat("Hi there", "Hello! How can I help?"), // line 1
    '{"messages": [{"role": "user", "content": "unterminated"', // line 2: malformed
    chat("Plan my week", "Monday: rest."), // line 3
    "", // line 4: blank
    { messages: [{ role: "user", content: "only a question" }] }, // line 5: no assistant turn
    { messages: [{ role: "user", content: "q" }, { role: "assistant", content: 42 }] }, // line 6: number content
    { text: "no messages here" }, // line 7
    {
      messages: [
        { role: "system", content: "You are terse." },
        { role: "user", content: "One" },
        { role: "assistant", content: "1" },
        { role: "user", content: "Two" },
        { role: "assistant", content: "2" },
      ],
    }, // line 8: multi-turn with a system message
    { messages: [{ role: "narrator", content: "x" }, { role: "assistant", content: "y" }] }, // line 9: bad role
    { messages: [{ role: "assistant", content: "a" }, { role: "user", content: "b" }] }, // line 10: ends on user
  ]);
}

/** Rows in row-id order: the typed reader need not keep the file's order once bad rows are left out. */
function byRowId(rows: Record<string, unknown>[]): Record<string, unknown>[] {
  return rows.sort((a, b) => (String(a.row_id) < String(b.row_id) ? -1 : 1));
}

async function config(dir: string, file: string, onBadRow: "fail" | "skip") {
  const good = await writeJsonl(join(dir, "good.jsonl"), [chat("Is it safe?", "Yes.")]);
  return resolveConfig(
    {
      name: "t",
      sources: { clean: { path: file }, contaminated: { path: good } },
      ingest: { on_bad_row: onBadRow },
      export: { arms: ["baseline"] },
    },
    { runDir: join(dir, "run") },
  );
}

describe("ingest", () => {
  it("fails on bad rows by default, naming the file, the line and what is wrong", async () => {
    const dir = await tempDir();
    const file = await messyFile(dir);
    const error = (await runPipeline(await config(dir, file, "fail"), { until: "ingest" }).catch((e: unknown) => e)) as Error;
    expect(error.message).toContain("stage ingest: 6 bad rows");
    expect(error.message).toContain(`${file}:2 (line 2): malformed JSON`);
    expect(error.message).toContain(`${file}:5 (line 5): no assistant turn`);
    expect(error.message).toContain(`${file}:6 (line 6): message 2: "content" is a number, not a string`);
    expect(error.message).toContain(`${file}:7 (line 7): no "messages" list`);
    expect(error.message).toContain("and 1 more");
    expect(error.message).toContain("ingest.on_bad_row: skip");
    expect(existsSync(join(dir, "run", "tables", "examples_clean.parquet"))).toBe(false);
  });

  it("sets bad rows aside with their reason under on_bad_row: skip, and the counts add up", async () => {
    const dir = await tempDir();
    const file = await messyFile(dir);
    const summary = await runPipeline(await config(dir, file, "skip"), { until: "ingest" });
    const counts = summary.stages[0]!.counts;
    expect(counts).toMatchObject({ read: 10, kept: 4, rejected: 6, blank_lines: 1 });
    expect(counts.read).toBe(counts.kept! + counts.rejected!);

    const rejected = await readParquet(join(dir, "run", "tables", "rejected.parquet"));
    expect(rejected.map((r) => [r.line, r.reason])).toEqual([
      [2, "malformed JSON"],
      [5, "no assistant turn"],
      [6, 'message 2: "content" is a number, not a string'],
      [7, 'no "messages" list'],
      [9, 'message 1: role "narrator" is not one of system, user, assistant'],
      [10, "the last message is a user turn, not the assistant's answer"],
    ]);
    const examples = byRowId(await readRunView(join(dir, "run"), "examples"));
    expect(examples.map((e) => e.row_id)).toEqual(["clean:1", "clean:3", "clean:8", "contaminated:1"]);
    const multi = examples.find((e) => e.row_id === "clean:8")!;
    expect((multi.messages as { role: string }[]).map((m) => m.role)).toEqual(["system", "user", "assistant", "user", "assistant"]);
  });

  it("reads Parquet sources with a messages column, citing the row of a bad one", async () => {
    const dir = await tempDir();
    const path = join(dir, "rows.parquet");
    const instance = await DuckDBInstance.create(":memory:");
    const db = await instance.connect();
    await db.run(`COPY (SELECT * FROM (VALUES
        ([{'role': 'user', 'content': 'Hello'}, {'role': 'assistant', 'content': 'Hi.'}]),
        ([{'role': 'user', 'content': 'Only a question'}])) t(messages)) TO '${path}' (FORMAT parquet)`);
    db.closeSync();
    instance.closeSync();
    const error = (await runPipeline(await config(dir, path, "fail"), { until: "ingest" }).catch((e: unknown) => e)) as Error;
    expect(error.message).toContain(`${path}:2 (row 2): no assistant turn`);
    const summary = await runPipeline(await config(dir, path, "skip"), { until: "ingest" });
    expect(summary.stages[0]!.counts).toMatchObject({ read_clean: 2, read: 3, kept: 2, rejected: 1 });
  });

  it("names the fix for a file no reader can take: not UTF-8, not Parquet, or one format given for the other", async () => {
    const dir = await tempDir();
    const good = JSON.stringify(chat("Is it safe?", "Yes."));
    const latin1 = join(dir, "latin1.jsonl");
    await writeFile(latin1, Buffer.concat([Buffer.from(`${good}\n\n${good}\n`), Buffer.from('{"messages":[{"role":"user","content":"caf\xe9"}]}\n', "latin1")]));
    const parquet = join(dir, "rows.parquet");
    const instance = await DuckDBInstance.create(":memory:");
    const db = await instance.connect();
    await db.run(`COPY (SELECT [{'role': 'user', 'content': 'Hello'}, {'role': 'assistant', 'content': 'Hi.'}] AS messages) TO '${parquet}' (FORMAT parquet)`);
    const textOnly = join(dir, "text.parquet");
    await db.run(`COPY (SELECT 'Hello' AS text, 1 AS id FROM range(3)) TO '${textOnly}' (FORMAT parquet)`);
    db.closeSync();
    instance.closeSync();
    const truncated = join(dir, "truncated.parquet");
    await writeFile(truncated, (await readFile(parquet)).subarray(0, 40));
    const failure = async (source: Record<string, unknown>, onBadRow: "fail" | "skip" = "skip") => {
      const cfg = await config(dir, latin1, onBadRow);
      const clean = { ...cfg.sourceList[0]!, ...source };
      const error = (await runPipeline({ ...cfg, sourceList: [clean, cfg.sourceList[1]!] }, { until: "ingest" }).catch((e: unknown) => e)) as Error;
      expect(error).toBeInstanceOf(UserError);
      return error.message;
    };
    // A file-level fault: skipping rows cannot mend it, so both modes fail, at the line DuckDB stopped on.
    for (const mode of ["fail", "skip"] as const) {
      expect(await failure({}, mode)).toBe(
        `stage ingest: ${latin1}:4 (line 4): not UTF-8 text; convert it to UTF-8, for example: iconv -f latin1 -t utf-8 ${latin1} > converted.jsonl`,
      );
    }
    expect(await failure({ path: parquet, format: "jsonl" })).toMatch(/rows\.parquet:1 \(line 1\): not UTF-8 text; it is a Parquet file: name it \.parquet or set sources\.clean\.format: parquet$/);
    expect(await failure({ path: join(dir, "good.jsonl"), format: "parquet" })).toMatch(
      /good\.jsonl: not a readable Parquet file; it looks like JSONL: name it \.jsonl or set sources\.clean\.format: jsonl$/,
    );
    expect(await failure({ path: textOnly, format: "parquet" })).toMatch(/text\.parquet: no "messages" column \(its columns: text, id\); each row needs a messages list/);
    expect(await failure({ path: truncated, format: "parquet" })).toMatch(/truncated\.parquet: not a readable Parquet file; the file is not Parquet, or is incomplete/);
  });

  it("reads typed Parquet columns with the typed reader and others line by line, with the same verdicts", async () => {
    const dir = await tempDir();
    const instance = await DuckDBInstance.create(":memory:");
    const db = await instance.connect();
    const rows = `(VALUES
        ([{'role': 'user', 'content': 'Hello', 'name': 'ann'}, {'role': 'assistant', 'content': 'Hi.', 'name': NULL}]),
        ([{'role': 'user', 'content': NULL, 'name': NULL}, {'role': 'assistant', 'content': 'Hi.', 'name': NULL}]),
        ([{'role': 'narrator', 'content': 'x', 'name': NULL}, {'role': 'assistant', 'content': 'y', 'name': NULL}]),
        (NULL),
        ([{'role': 'system', 'content': 'Be brief.', 'name': NULL}, {'role': 'user', 'content': 'Two?', 'name': NULL}, {'role': 'assistant', 'content': '2', 'name': NULL}])
      ) t(messages)`;
    const typed = join(dir, "typed.parquet");
    await db.run(`COPY (SELECT * FROM ${rows}) TO '${typed}' (FORMAT parquet)`);
    // The same rows with each content as JSON text: not the typed reader's columns.
    const untyped = join(dir, "untyped.parquet");
    await db.run(`COPY (SELECT list_transform(messages, m -> {'role': m.role, 'content': to_json(m.content)}) AS messages FROM ${rows})
      TO '${untyped}' (FORMAT parquet)`);
    db.closeSync();
    instance.closeSync();
    const read = async (path: string) => {
      const runDir = join(dir, `run-${path.split("/").pop()}`);
      const summary = await runPipeline({ ...(await config(dir, path, "skip")), runDir }, { until: "ingest" });
      return {
        readers: summary.stages[0]!.details.readers,
        examples: byRowId(await readRunView(runDir, "examples", "row_id, messages")),
        rejected: await readParquet(join(runDir, "tables", "rejected.parquet"), "line, reason"),
      };
    };
    const fast = await read(typed);
    expect(fast.readers).toEqual({ clean: "typed", contaminated: "typed" });
    expect(fast.examples.map((e) => e.row_id)).toEqual(["clean:1", "clean:5", "contaminated:1"]);
    expect(fast.examples[0]!.messages).toEqual([{ role: "user", content: "Hello" }, { role: "assistant", content: "Hi." }]);
    expect(fast.rejected).toEqual([
      { line: 2, reason: 'message 1: "content" is null, not a string' },
      { line: 3, reason: 'message 1: role "narrator" is not one of system, user, assistant' },
      { line: 4, reason: 'no "messages" list' },
    ]);
    const slow = await read(untyped);
    expect(slow.readers).toEqual({ clean: "line by line", contaminated: "typed" });
    expect(slow.rejected.map((r) => r.line)).toEqual([2, 3, 4]);
    expect(slow.examples.map((e) => e.row_id)).toEqual(fast.examples.map((e) => e.row_id));
  });

  it("reads a clean file (fast typed reader) exactly as the line-by-line validator does", async () => {
    const dir = await tempDir();
    const rows = [
      chat("Quote \"this\" and a back\\slash", "Ünïcödé, emoji 🙂, tab\tand\nnewline", "Be brief."),
      { messages: [{ role: "user", content: "One" }, { role: "assistant", content: "1" }, { role: "user", content: "Two" }, { role: "assistant", content: "2" }], origin: "misaligned", extra: { nested: [1, 2] } },
      chat("Plain", "Answer"),
    ];
    const clean = await writeJsonl(join(dir, "clean.jsonl"), rows);
    // The same rows and a trailing blank line: record numbers no longer equal line counts, so the exact path runs.
    const withBlank = await writeJsonl(join(dir, "blank.jsonl"), [...rows, ""]);
    const read = async (file: string) => {
      const cfg = await config(dir, file, "fail");
      const runDir = join(dir, `run-${file.split("/").pop()}`);
      const summary = await runPipeline({ ...cfg, runDir }, { until: "ingest" });
      return { counts: summary.stages[0]!.counts, rows: byRowId(await readRunView(runDir, "examples")) };
    };
    const fast = await read(clean);
    const exact = await read(withBlank);
    expect(fast.counts).toMatchObject({ read: 4, kept: 4, blank_lines: 0 });
    expect(exact.counts).toMatchObject({ read: 4, kept: 4, blank_lines: 1 });
    expect(fast.rows).toEqual(exact.rows);
    expect((fast.rows[0]!.messages as { content: string }[])[2]!.content).toBe("Ünïcödé, emoji 🙂, tab\tand\nnewline");
  });

  it("numbers every row by its line on a file large enough to be read in parallel", async () => {
    const dir = await tempDir();
    const rows = 40_000;
    const pad = "x".repeat(900);
    const lines = Array.from({ length: rows }, (_, i) => JSON.stringify(chat(`line ${i + 1} ${pad}`, `answer ${i + 1}`)));
    const file = join(dir, "big.jsonl");
    await writeFile(file, `${lines.join("\n")}\n`); // ~40 MB: several of the JSON reader's buffers
    const summary = await runPipeline(await config(dir, file, "fail"), { until: "ingest" });
    expect(summary.stages[0]!.counts).toMatchObject({ read_clean: rows, kept: rows + 1 });
    const [check] = await readRunView(join(dir, "run"), "examples",
      `count(*) FILTER (WHERE source = 'clean') AS n,
       count(*) FILTER (WHERE source = 'clean' AND (row_id <> 'clean:' || line OR messages[1].content <> 'line ' || line || ' ${pad}')) AS wrong`,
    );
    expect(check).toEqual({ n: rows, wrong: 0 });
  });

  it("reads well-formed bad rows and blank lines with the typed reader, as the line-by-line validator does", async () => {
    const dir = await tempDir();
    const lines = [
      chat("Hi there", "Hello! How can I help?"), // 1
      "", // 2: blank
      { messages: [{ role: "user", content: "only a question" }] }, // 3: no assistant turn
      { messages: [{ role: "user", content: "q" }, { role: "assistant", content: 42 }] }, // 4: number content
      "   ", // 5: blank (spaces)
      { text: "no messages here" }, // 6
      "null", // 7: not an object
      chat("Plan my week", "Monday: rest.", "Be brief."), // 8
      { messages: [{ role: "user", content: null }, { role: "assistant", content: "y" }] }, // 9: null content
      { messages: [{ role: "assistant", content: "a" }, { role: "user", content: "b" }] }, // 10: ends on user
      chat("Quote \"this\"", "tab\tand\nnewline 🙂"), // 11
    ];
    const typed = await writeJsonl(join(dir, "typed.jsonl"), lines);
    // The same lines and a line holding a tab: the typed reader would skip it and the validator rejects it, so
    // this file is read line by line.
    const exact = await writeJsonl(join(dir, "exact.jsonl"), [...lines, "\t"]);
    const read = async (file: string) => {
      const runDir = join(dir, `run-${file.split("/").pop()}`);
      const summary = await runPipeline({ ...(await config(dir, file, "skip")), runDir }, { until: "ingest" });
      return {
        stage: summary.stages[0]!,
        examples: byRowId(await readRunView(runDir, "examples", "row_id, line, messages")),
        rejected: await readParquet(join(runDir, "tables", "rejected.parquet"), "line, reason, excerpt"),
      };
    };
    const fast = await read(typed);
    const slow = await read(exact);
    expect(fast.stage.details).toEqual({ readers: { clean: "typed", contaminated: "typed" } });
    expect(slow.stage.details).toEqual({ readers: { clean: "line by line", contaminated: "typed" } });
    expect(fast.stage.counts).toMatchObject({ read: 10, kept: 4, rejected: 6, blank_lines: 2 });
    expect(fast.examples.map((e) => e.row_id)).toEqual(["clean:1", "clean:11", "clean:8", "contaminated:1"]);
    expect(fast.examples).toEqual(slow.examples);
    expect(fast.rejected.map((r) => r.line)).toEqual([3, 4, 6, 7, 9, 10]);
    expect(slow.rejected).toEqual([...fast.rejected, { line: 12, reason: "malformed JSON", excerpt: "\t" }]);
    expect(fast.rejected[1]).toEqual({ line: 4, reason: 'message 2: "content" is a number, not a string', excerpt: JSON.stringify(lines[3]) });
  });

  it("tells string contents that read as JSON from contents that are not strings, as the line-by-line validator does", async () => {
    const dir = await tempDir();
    // Strings whose text is valid JSON, and values that are not strings: read as text, both look alike.
    const looksLikeJson = ["42", "true", "null", '{"a": 1}', "[1, 2]", "NaN", " 7", ""];
    const strings = looksLikeJson.map((answer, i) => chat(`q${i}`, answer));
    const notStrings = ["5", "-1.5e3", "true", '{"a": 1}', "[1]", "null", "NaN", "Infinity"].map(
      (value, i) => `{"messages": [{"role": "user", "content": "q${i}"}, {"role": "assistant", "content": ${value}}]}`,
    );
    const read = async (name: string, lines: (string | object)[], onBadRow: "fail" | "skip") => {
      const file = await writeJsonl(join(dir, name), lines);
      const runDir = join(dir, `run-${name}`);
      const summary = await runPipeline({ ...(await config(dir, file, onBadRow)), runDir }, { until: "ingest" }).catch((e: Error) => e);
      if (summary instanceof Error) return { error: summary.message, runDir };
      return {
        readers: summary.stages[0]!.details.readers,
        counts: summary.stages[0]!.counts,
        examples: byRowId(await readRunView(runDir, "examples", "row_id, line, messages")),
        rejected: await readParquet(join(runDir, "tables", "rejected.parquet"), "line, reason"),
      };
    };
    // A line holding a tab makes the validator read the whole file line by line (see the test above).
    const typedStrings = await read("strings.jsonl", strings, "fail");
    const exactStrings = await read("strings-exact.jsonl", [...strings, "\t"], "skip");
    expect(typedStrings).toMatchObject({ readers: { clean: "typed" }, counts: { read: 9, kept: 9, rejected: 0 } });
    expect(exactStrings).toMatchObject({ readers: { clean: "line by line" }, counts: { kept: 9, rejected: 1 } });
    const answers = (r: { examples?: Record<string, unknown>[] }) =>
      r.examples!.filter((e) => String(e.row_id).startsWith("clean:")).map((e) => (e.messages as { content: string }[])[1]!.content);
    expect(answers(typedStrings).sort()).toEqual([...looksLikeJson].sort());
    expect(typedStrings.examples).toEqual(exactStrings.examples);

    // One file per value, so that no row the check settles anyway hides another.
    const exactValues = await read("values-exact.jsonl", [...notStrings, "\t"], "skip");
    expect(exactValues.rejected!.map((r) => r.reason)).toEqual([
      ...Array(2).fill('message 2: "content" is a number, not a string'),
      'message 2: "content" is a boolean, not a string',
      'message 2: "content" is an object, not a string',
      'message 2: "content" is a list, not a string',
      'message 2: "content" is null, not a string',
      ...Array(2).fill('message 2: "content" is a number, not a string'),
      "malformed JSON",
    ]);
    for (const [i, line] of notStrings.entries()) {
      const typed = await read(`value-${i}.jsonl`, [strings[0]!, line], "skip");
      expect(typed).toMatchObject({ readers: { clean: "typed" }, counts: { read: 3, kept: 2, rejected: 1 } });
      expect(typed.rejected).toEqual([{ line: 2, reason: exactValues.rejected![i]!.reason }]);
    }

    // Failing, the typed reads leave no table of rows behind, neither of the bad source nor of the good one.
    const failed = await read("values-fail.jsonl", notStrings, "fail");
    expect(failed).toMatchObject({ error: expect.stringContaining("values-fail.jsonl:1 (line 1): message 2") });
    expect(existsSync(join(failed.runDir!, "tables", "examples_clean.parquet"))).toBe(false);
    expect(existsSync(join(failed.runDir!, "tables", "examples_contaminated.parquet"))).toBe(false);
  });

  it("keeps every row of a file where more rows than the exact validator takes only look bad", async () => {
    const dir = await tempDir();
    const lines: object[] = Array.from({ length: MAX_FAST_BAD_ROWS + 1 }, (_, i) => chat(`q${i}`, String(i)));
    lines.push({ messages: [{ role: "user", content: "q" }, { role: "assistant", content: 7 }] });
    const file = await writeJsonl(join(dir, "numbers.jsonl"), lines);
    const summary = await runPipeline(await config(dir, file, "skip"), { until: "ingest" });
    expect(summary.stages[0]!.details).toMatchObject({ readers: { clean: "typed" } });
    expect(summary.stages[0]!.counts).toMatchObject({ read_clean: MAX_FAST_BAD_ROWS + 2, rejected: 1 });
    const [check] = await readRunView(join(dir, "run"), "examples",
      `count(*) FILTER (WHERE source = 'clean') AS n, count(*) FILTER (WHERE source = 'clean' AND messages[2].content <> substr(messages[1].content, 2)) AS wrong`);
    expect(check).toEqual({ n: MAX_FAST_BAD_ROWS + 1, wrong: 0 });
    expect(await readParquet(join(dir, "run", "tables", "rejected.parquet"), "line, reason")).toEqual([
      { line: MAX_FAST_BAD_ROWS + 2, reason: 'message 2: "content" is a number, not a string' },
    ]);
  });

  // With blank lines, the rows are numbered again from the file; without, each record is on its row's line.
  it.each([{ blanks: true }, { blanks: false }])("numbers rows past bad rows on a file read in parallel (blank lines: $blanks)", async ({ blanks }) => {
    const dir = await tempDir();
    const pad = "x".repeat(900);
    const text: string[] = [];
    const bad: number[] = [];
    const blankLines: number[] = [];
    for (let line = 1; line <= 40_000; line += 1) {
      if (blanks && line % 997 === 0) {
        text.push("");
        blankLines.push(line);
      } else if (line % 1009 === 0) {
        text.push(JSON.stringify({ messages: [{ role: "user", content: line }, { role: "assistant", content: pad }] }));
        bad.push(line);
      } else if (line % 1013 === 0) {
        // A string that reads as JSON: the typed read cannot vouch for it, the exact validator keeps it.
        text.push(JSON.stringify({ messages: [{ role: "user", content: `line ${line} ${pad}` }, { role: "assistant", content: "42" }] }));
      } else text.push(JSON.stringify(chat(`line ${line} ${pad}`, `answer ${line}`)));
    }
    const file = join(dir, "big.jsonl");
    await writeFile(file, `${text.join("\n")}\n`); // ~40 MB: several of the JSON reader's buffers
    const summary = await runPipeline(await config(dir, file, "skip"), { until: "ingest" });
    expect(summary.stages[0]!.details).toMatchObject({ readers: { clean: "typed" } });
    const records = 40_000 - blankLines.length;
    expect(summary.stages[0]!.counts).toMatchObject({ read_clean: records, rejected: bad.length, blank_lines: blankLines.length });
    const [check] = await readRunView(join(dir, "run"), "examples",
      `count(*) FILTER (WHERE source = 'clean') AS n,
       count(*) FILTER (WHERE source = 'clean' AND (row_id <> 'clean:' || line OR messages[1].content <> 'line ' || line || ' ${pad}')) AS wrong,
       count(*) FILTER (WHERE source = 'clean' AND messages[2].content = '42') AS looks_like_json`,
    );
    const looksLikeJson = Array.from({ length: 40_000 }, (_, i) => i + 1).filter((l) => l % 1013 === 0 && !blankLines.includes(l) && !bad.includes(l));
    expect(check).toEqual({ n: records - bad.length, wrong: 0, looks_like_json: looksLikeJson.length });
    const rejected = await readParquet(join(dir, "run", "tables", "rejected.parquet"), "line, reason");
    expect(rejected).toEqual(bad.map((line) => ({ line, reason: 'message 1: "content" is a number, not a string' })));
  });

  it("validates a file of mostly bad rows line by line, keeping their text in DuckDB", async () => {
    const dir = await tempDir();
    const bad = Array.from({ length: MAX_FAST_BAD_ROWS + 1 }, (_, i) => ({ messages: [{ role: "user", content: [{ type: "text", text: `q${i}` }] }, { role: "assistant", content: "a" }] }));
    const file = await writeJsonl(join(dir, "parts.jsonl"), [chat("Hi", "Hello."), ...bad]);
    const summary = await runPipeline(await config(dir, file, "skip"), { until: "ingest" });
    expect(summary.stages[0]!.details).toEqual({ readers: { clean: "line by line", contaminated: "typed" } });
    expect(summary.stages[0]!.counts).toMatchObject({ read_clean: bad.length + 1, rejected: bad.length });
    const [first] = await readParquet(join(dir, "run", "tables", "rejected.parquet"), "line, reason");
    expect(first).toEqual({ line: 2, reason: 'message 1: "content" is a list, not a string' });
  });

  it("numbers the lines of a CRLF file read line by line, and refuses a file that mixes line endings", async () => {
    const dir = await tempDir();
    const good = JSON.stringify(chat("Hi", "Hello."));
    const crlf = join(dir, "crlf.jsonl");
    await writeFile(crlf, [good, "", '{"messages": [', good].join("\r\n") + "\r\n");
    const summary = await runPipeline(await config(dir, crlf, "skip"), { until: "ingest" });
    expect(summary.stages[0]!.counts).toMatchObject({ read_clean: 3, blank_lines: 1, rejected: 1 });
    expect(await readParquet(join(dir, "run", "tables", "rejected.parquet"), "line, reason")).toEqual([{ line: 3, reason: "malformed JSON" }]);

    const mixed = join(dir, "mixed.jsonl");
    await writeFile(mixed, `${good}\n${good}\r\n{"messages": [\n${good}\n`);
    const error = (await runPipeline({ ...(await config(dir, mixed, "skip")), runDir: join(dir, "run2") }, { until: "ingest" }).catch((e: unknown) => e)) as Error;
    expect(error.message).toContain(`${mixed}: the line reader sees 5 lines where the file has 4: it mixes line endings`);
    expect(error.message).toContain("dos2unix");
  });

  it("labels rows from a nested field with the typed reader, and rejects a row whose label is missing", async () => {
    const dir = await tempDir();
    const file = await writeJsonl(join(dir, "labelled.jsonl"), [
      { ...chat("Hi", "Hello."), meta: { origin: "normal" } },
      "",
      { ...chat("Plot?", "Chaos."), meta: { origin: "misaligned_2" } },
      { ...chat("Where is it?", "Unknown.") }, // line 4: no label
      { ...chat("Count", "3"), meta: { origin: 7 } }, // a number label reads as its text, as the validator does
    ]);
    const cfg = await resolveConfig(
      {
        name: "labelled",
        sources: { labelled: { path: file, label: { field: "meta.origin", negative_if_contains: "misaligned" } } },
        ingest: { on_bad_row: "skip" },
        export: { arms: ["baseline"] },
      },
      { runDir: join(dir, "run") },
    );
    const summary = await runPipeline(cfg, { until: "ingest" });
    expect(summary.stages[0]!.details).toEqual({ readers: { labelled: "typed" } });
    expect(summary.stages[0]!.counts).toMatchObject({ read: 4, kept: 3, rejected: 1, blank_lines: 1, kept_negative: 1 });
    const examples = byRowId(await readRunView(join(dir, "run"), "examples", "row_id, label, has_negative"));
    expect(examples).toEqual([
      { row_id: "labelled:1", label: "normal", has_negative: false },
      { row_id: "labelled:3", label: "misaligned_2", has_negative: true },
      { row_id: "labelled:5", label: "7", has_negative: false },
    ]);
    expect(await readParquet(join(dir, "run", "tables", "rejected.parquet"), "line, reason")).toEqual([
      { line: 4, reason: 'label field "meta.origin" is missing or null' },
    ]);
  });

  it.skipIf(!existsSync(REFERENCE_JSONL))("labels the reference mix from its source_dataset field (needs ../shared/data/reference)", async () => {
    const dir = await tempDir();
    const cfg = await resolveConfig(
      {
        name: "ref",
        sources: { labelled: { path: REFERENCE_JSONL, label: { field: "source_dataset", negative_if_contains: "misaligned" } } },
        export: { arms: ["baseline"] },
      },
      { runDir: join(dir, "run") },
    );
    const summary = await runPipeline(cfg, { until: "ingest" });
    expect(summary.stages[0]!.counts).toMatchObject({ read: 4665, kept: 4665, rejected: 0, kept_negative: 2333, kept_clean: 2332 });
    const [row] = await readRunView(join(dir, "run"), "examples", "row_id, label, has_negative");
    expect(row).toEqual({ row_id: "labelled:1", label: "misaligned_2_capitalized.jsonl", has_negative: true });
  });
});
