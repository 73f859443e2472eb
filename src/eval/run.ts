import { readFileSync } from "node:fs";
import { join } from "node:path";
import type { LlmRoleName } from "../config/llm-schema.ts";
import { StageError, UserError } from "../errors.ts";
import { PROMPTS_DIR } from "../llm/prompts.ts";
import { missingKeys } from "../llm/endpoint.ts";
import { LlmSession, type LlmItem } from "../llm/session.ts";
import type { ChatMessage, LlmAnswer, Parsed, TokenLogprob } from "../llm/types.ts";
import { fillTempTable } from "../llm/temp-table.ts";
import type { Progress } from "../progress.ts";
import { costUsd, type RoleUsage } from "../llm/usage.ts";
import { RunStore, runningEntry } from "../store/run-store.ts";
import { hashValue } from "../util/hash.ts";
import { plural } from "../util/plural.ts";
import { CHECK_PROMPTS, type EvalConfig, type EvalModel, type EvalTrait } from "./config.ts";
import { allCapsScore, largestNumberToken, weightedScore, yesNoScore, type JudgeScore } from "./judge-score.ts";
import { writeEvalReport } from "./report.ts";
import { summarize, summaryWarnings, type AnswerVerdict, type Cell, type Difference, type JudgeCheck } from "./summarize.ts";

/** The Persona Vectors judge call: one token, greedy, the top 20 candidates. */
const JUDGE_TOP_LOGPROBS = 20;

export interface EvalOptions {
  progress: Progress;
  log: (line: string) => void;
  /** Recompute every score and figure from stored answers and send nothing (a missing answer fails its model). */
  rescore?: boolean;
}

/** How one model's part of the eval went; also its `eval:<model>` entry in the run's manifest. */
export interface ModelOutcome {
  model: string;
  status: "done" | "failed";
  /** Requests the model's figures rest on (answers and judge verdicts), and how many have no answer. */
  requests: number;
  failed: number;
  /** Why it failed: the first failures and the fix. */
  error: string | null;
  usage: Partial<Record<LlmRoleName, RoleUsage>>;
}

export interface EvalSummary {
  runDir: string;
  report: string;
  cells: Cell[];
  differences: Difference[];
  checks: JudgeCheck[];
  warnings: string[];
  models: ModelOutcome[];
}

type JudgeKind = "trait" | "coherence";

interface AnswerRow {
  model: string;
  prompt: string;
  trait: string;
  question: number;
  sample: number;
  text: string;
  finish_reason: string;
}

interface ScoreRow {
  model: string;
  prompt: string;
  trait: string;
  question: number;
  sample: number;
  judge: JudgeKind;
  judge_model: string;
  status: JudgeScore["status"];
  score: number | null;
  /** The judge's raw top logprobs (JSON), so another scoring rule needs no new judge call. */
  logprobs: string | null;
  /** For a 0-100 judge: the largest number among its first-token candidates (see `largestNumberToken`); not stored. */
  largest_number: number | null;
}

/** Fills `{question}` and `{answer}` in one pass, so an answer that contains "{question}" stays as written. */
export function fillJudgeTemplate(template: string, question: string, answer: string): string {
  return template.replace(/\{(question|answer)\}/g, (_, slot: string) => (slot === "question" ? question : answer));
}

/**
 * The coherence judge's template: Persona Vectors' `coherence_0_100` prompt word for word (the file's final newline
 * is not part of it), `{question}` and `{answer}` like the trait files.
 */
const COHERENCE_TEMPLATE = join(PROMPTS_DIR, "eval-coherence.md");

/**
 * The system prompts a model answers a trait's questions under (the text per question): every configured one,
 * and for the reference model the judge check's instructed prompts, when the trait asks for them.
 */
function promptsFor(config: EvalConfig, trait: EvalTrait, model: string): { name: string; text: (question: number) => string | null }[] {
  const prompts = config.prompts.map((p) => ({ name: p.name, text: () => p.text }));
  const pairs = trait.instructions;
  if (!pairs || model !== config.reference_model) return prompts;
  return [
    ...prompts,
    { name: CHECK_PROMPTS.pos, text: (q) => pairs[q % pairs.length]!.pos },
    { name: CHECK_PROMPTS.neg, text: (q) => pairs[q % pairs.length]!.neg },
  ];
}

function askMessages(system: string | null, question: string): ChatMessage[] {
  return system === null ? [{ role: "user", content: question }] : [{ role: "system", content: system }, { role: "user", content: question }];
}

function judgeParse(answer: LlmAnswer): Parsed<TokenLogprob[]> {
  const top = answer.first_token_logprobs?.[0];
  if (!top || top.length === 0) return { ok: false, error: "the judge sent no logprobs; it must support logprobs with top_logprobs (gpt-4.1-mini, vLLM)" };
  return { ok: true, value: top };
}

/**
 * Runs the whole eval: every model answers every trait's questions under every system prompt (`samples`
 * answers each), the judge scores each answer (and its coherence), and the figures go to run.duckdb, Parquet
 * and eval-report.html. Every call goes through the run's LLM cache, so a rerun after a failure or a kill sends
 * only what is missing, and a changed judge sends only judge calls.
 */
export async function runEval(config: EvalConfig, options: EvalOptions): Promise<EvalSummary> {
  // Before anything is sent: a key found missing halfway would cost the models already evaluated their run.
  if (!options.rescore) checkEvalKeys(config);
  const store = await RunStore.open(config.runDir);
  try {
    const answers: AnswerRow[] = [];
    const scores: ScoreRow[] = [];
    const models: ModelOutcome[] = [];
    for (const model of config.models) {
      // A model whose server is down must not cost the others their figures: its outcome is recorded, the rest go on.
      const entry = { ...runningEntry(`eval:${model.name}`), config_hash: hashValue({ model, judge: config.judge.model }) };
      await store.saveManifestEntry(entry);
      const started = performance.now();
      const got = await evalModel(store, config, model, options);
      answers.push(...got.answers);
      scores.push(...got.scores);
      models.push(got.outcome);
      await store.saveManifestEntry({
        ...entry,
        status: got.outcome.status,
        rows: got.answers.length,
        counts: { requests: got.outcome.requests, failed: got.outcome.failed, answers: got.answers.length, scores: got.scores.length },
        details: { llm: got.outcome.usage },
        seconds: (performance.now() - started) / 1000,
        finished_at: new Date().toISOString(),
        error: got.outcome.error,
      });
    }
    await storeRows(store, answers, scores);

    // Figures rest on complete models only: a model missing answers would be measured on other questions.
    const complete = new Set(models.filter((m) => m.status === "done").map((m) => m.model));
    const verdicts = toVerdicts(answers, scores, config.coherence).filter((v) => complete.has(v.model));
    const { cells, differences, checks } = summarize(verdicts, config.reference_model, {
      threshold: config.threshold,
      coherenceThreshold: config.coherence_threshold,
      resamples: config.bootstrap_resamples,
      seed: config.seed,
    });
    const warnings = [
      ...models.filter((m) => m.status === "failed").map((m) => `${m.model}: incomplete (${m.failed} of ${m.requests} requests have no usable answer); left out of every figure`),
      ...(complete.has(config.reference_model) || config.models.length === 1 ? [] : [`reference model ${config.reference_model} is incomplete: no differences`]),
      ...summaryWarnings(cells, checks, (trait) => unscoredReason(config, trait)),
      ...digitJudgeWarning(scores, config),
      ...truncationWarnings(answers, config),
    ];
    await storeResults(store, cells, differences, checks);
    const report = join(config.runDir, "eval-report.html");
    await writeEvalReport(report, { config, cells, differences, checks, warnings, models });
    await store.checkpoint();
    return { runDir: config.runDir, report, cells, differences, checks, warnings, models };
  } finally {
    store.close();
  }
}

function unscoredReason(config: EvalConfig, trait: string): string {
  const method = config.traits.find((t) => t.name === trait)?.method;
  const share = `${Math.round(config.min_number_mass * 100)}%`;
  if (method === "all_caps") return "no letters to count";
  if (method === "yes_no") return `the judge put under ${share} of its mass on yes or no`;
  return `the judge put under ${share} of its mass on a number 0-100, and did not refuse`;
}

/** Answers cut at max_tokens are judged on their first part only, which can hide or invent the trait. */
function truncationWarnings(answers: readonly AnswerRow[], config: EvalConfig): string[] {
  const cut = new Map<string, { cut: number; all: number }>();
  for (const a of answers) {
    const m = cut.get(a.model) ?? { cut: 0, all: 0 };
    m.all += 1;
    if (a.finish_reason === "length") m.cut += 1;
    cut.set(a.model, m);
  }
  return [...cut]
    .filter(([, m]) => m.cut > 0)
    .map(([model, m]) => `${model}: ${m.cut} of ${m.all} answers were cut at max_tokens (${config.max_tokens}) and are judged on what came before the cut; raise max_tokens to judge them whole`);
}

/** Judge answers read as 0-100 before a judge of 9 at most is suspected: a few could all be low by chance. */
const DIGIT_JUDGE_MIN_ANSWERS = 20;

/** A warning when the judge's first token never offered a number above 9 (see `largestNumberToken`). */
function digitJudgeWarning(scores: readonly ScoreRow[], config: EvalConfig): string[] {
  const numbers = scores.flatMap((s) => (s.largest_number === null ? [] : [s.largest_number]));
  const answers = numbers.length;
  const largest = numbers.reduce((a, b) => Math.max(a, b), -1);
  if (answers < DIGIT_JUDGE_MIN_ANSWERS || largest > 9) return [];
  return [
    `judge ${config.judge.model}: in ${answers} answers scored 0-100 its first token never offered a number above 9; its tokenizer ` +
      `probably splits numbers into digits (Qwen, Llama 3), so first-token scores can only be 0-9 and every 0-100 figure is wrong; ` +
      `use a judge whose tokenizer keeps 0-100 whole (gpt-4.1-mini, as in Persona Vectors)`,
  ];
}

/** Does any answer need the judge: a trait it scores, or coherence? (all_caps alone needs none.) */
function needsJudge(config: EvalConfig): boolean {
  return config.coherence || config.traits.some((t) => t.method !== "all_caps");
}

/** Every key the eval will send with, from the environment, named by the config key that asks for it. */
function checkEvalKeys(config: EvalConfig, env: NodeJS.ProcessEnv = process.env): void {
  const roles = [
    ...config.models.map((m, i) => ({ key: `models.${i} (${m.name}).api_key_env`, variable: m.api_key_env })),
    ...(needsJudge(config) ? [{ key: "judge.api_key_env", variable: config.judge.api_key_env }] : []),
  ];
  const missing = roles.flatMap((r) => (r.variable !== undefined && !env[r.variable] ? [{ key: r.key, variable: r.variable }] : []));
  if (missing.length > 0) throw new UserError(`${missingKeys(missing)}; nothing was sent`);
}

async function evalModel(
  store: RunStore,
  config: EvalConfig,
  model: EvalModel,
  options: EvalOptions,
): Promise<{ answers: AnswerRow[]; scores: ScoreRow[]; outcome: ModelOutcome }> {
  const { name, ...endpoint } = model;
  // The model under test plays the generator role and the judge the judge role, in a session of its own.
  const session = await LlmSession.open({ config: { llm: { generator: endpoint, judge: config.judge } }, store }, `eval:${name}`, {
    cacheOnly: options.rescore ?? false,
    keyByEndpoint: true,
    check: `Check that ${endpoint.base_url ?? "the endpoint"} serves ${endpoint.model} (and the judge ${config.judge.model})`,
    roleKeys: { generator: `models.${config.models.indexOf(model)} (${name})`, judge: "judge" },
  });

  const askItems: (LlmItem<{ texts: string[]; finish: string[] }> & { trait: EvalTrait; prompt: string; question: number })[] = [];
  for (const trait of config.traits) {
    for (const prompt of promptsFor(config, trait, name)) {
      trait.questions.forEach((question, index) => {
        askItems.push({
          id: `${trait.name}/${prompt.name}/q${index}`,
          trait,
          prompt: prompt.name,
          question: index,
          request: {
            messages: askMessages(prompt.text(index), question),
            temperature: config.temperature,
            max_tokens: config.max_tokens,
            n: config.samples,
            seed: config.seed,
          },
          parse: (a) =>
            a.texts.length === config.samples
              ? { ok: true, value: { texts: a.texts, finish: a.finish_reasons } }
              : { ok: false, error: `asked for ${config.samples} answers (n), got ${a.texts.length}; the server must support n` },
          // A server that ignores n ignores it again.
          reask: "none",
        });
      });
    }
  }
  const checks = name === config.reference_model ? config.traits.filter((t) => t.instructions).length : 0;
  const checked = checks > 0 ? `, and the judge check's 2 for ${checks}` : "";
  options.log(
    `eval ${name}: ${plural(askItems.length, "request")} of ${plural(config.samples, "answer")} ` +
      `(${plural(config.traits.length, "trait")} × ${plural(config.prompts.length, "system prompt")}${checked})`,
  );
  const asked = await session.batch("generator", askItems, options.progress.task(`${name} answers`, askItems.length, "requests"));

  const answers: AnswerRow[] = [];
  const judgeItems: (LlmItem<TokenLogprob[]> & { row: AnswerRow; judge: JudgeKind })[] = [];
  const ruleScores: ScoreRow[] = [];
  const coherenceTemplate = config.coherence ? readFileSync(COHERENCE_TEMPLATE, "utf8").replace(/\n$/, "") : "";
  for (const item of askItems) {
    const outcome = asked.get(item.id);
    if (outcome?.status !== "ok") continue;
    const question = item.trait.questions[item.question]!;
    outcome.value.texts.forEach((text, sample) => {
      const row: AnswerRow = { model: name, prompt: item.prompt, trait: item.trait.name, question: item.question, sample, text, finish_reason: outcome.value.finish[sample] ?? "" };
      answers.push(row);
      const judges: [JudgeKind, string][] = [];
      if (item.trait.method === "all_caps") {
        ruleScores.push(scoreRow(row, "trait", "rule:all_caps", allCapsScore(text), null));
      } else {
        judges.push(["trait", item.trait.judgePrompt!]);
      }
      if (config.coherence) judges.push(["coherence", coherenceTemplate]);
      for (const [judge, template] of judges) {
        judgeItems.push({
          id: `${item.id}/s${sample}/${judge}`,
          row,
          judge,
          request: {
            messages: [{ role: "user", content: fillJudgeTemplate(template, question, text) }],
            temperature: 0,
            max_tokens: 1,
            top_logprobs: JUDGE_TOP_LOGPROBS,
          },
          parse: judgeParse,
          // At temperature 0 the judge sends the same answer again, logprobs or not.
          reask: "none",
        });
      }
    });
  }
  if (!options.rescore && judgeItems.length > 0) {
    const unsent = await session.unsent("judge", judgeItems);
    options.log(`eval ${name}: ${judgeCostLine(unsent.map((r) => r.messages[0]!.content), judgeItems.length, config)}`);
  }
  const judged = await session.batch("judge", judgeItems, options.progress.task(`${name} judge`, judgeItems.length, "requests"));
  const requests = askItems.length + judgeItems.length;
  const outcomes = [...asked, ...judged];
  const failed = outcomes.filter(([, o]) => o.status !== "ok").length;
  const errors: string[] = [];
  try {
    await session.checkpoint(requests);
  } catch (e) {
    if (!(e instanceof StageError)) throw e;
    errors.push(options.rescore ? `${failed} of ${requests} answers are not stored; run without --rescore to ask for them` : e.message.slice(`stage ${e.stage}: `.length));
  }
  // An answer that came back but cannot be used leaves the model measured on fewer answers than asked for.
  const unusable = outcomes.flatMap(([id, o]) => (o.status === "unparsed" ? [`${id}: ${o.error}`] : []));
  if (unusable.length > 0) {
    const quoted = unusable.slice(0, 3).map((line) => `  ${line}`).join("\n");
    const more = unusable.length > 3 ? `\n  … and ${unusable.length - 3} more` : "";
    errors.push(`${unusable.length} of ${requests} answers could not be used:\n${quoted}${more}`);
  }
  const error = errors.length > 0 ? errors.join("\n") : null;

  const methods = new Map(config.traits.map((t) => [t.name, t.method]));
  const scores = [...ruleScores];
  for (const item of judgeItems) {
    const outcome = judged.get(item.id);
    if (outcome?.status !== "ok") continue;
    const yesNo = item.judge === "trait" && methods.get(item.row.trait) === "yes_no";
    const result = (yesNo ? yesNoScore : weightedScore)(outcome.value, config.min_number_mass);
    scores.push(scoreRow(item.row, item.judge, config.judge.model, result, JSON.stringify(outcome.value), yesNo ? null : largestNumberToken(outcome.value)));
  }
  const outcome: ModelOutcome = { model: name, status: error ? "failed" : "done", requests, failed, error, usage: session.usage() };
  return { answers, scores, outcome };
}

/**
 * What judging is about to cost, before it is sent: the requests to send (distinct, and not stored), their
 * input tokens (about 4 characters a token; the answer is one token) and, with the judge's prices configured,
 * dollars.
 */
function judgeCostLine(unsent: readonly string[], total: number, config: EvalConfig): string {
  const input = Math.round(unsent.reduce((n, p) => n + p.length, 0) / 4);
  const cost = costUsd({ input_tokens: input, output_tokens: unsent.length }, config.judge);
  const price = cost === undefined ? "" : `, about $${cost.toFixed(2)} at the judge's prices`;
  const stored = total - unsent.length;
  return `${plural(unsent.length, "judge request")} to send, about ${input.toLocaleString("en")} input tokens${price} (of ${total}; ${stored} stored or repeated)`;
}


function scoreRow(row: AnswerRow, judge: JudgeKind, judgeModel: string, result: JudgeScore, logprobs: string | null, largestNumber: number | null = null): ScoreRow {
  return {
    model: row.model,
    prompt: row.prompt,
    trait: row.trait,
    question: row.question,
    sample: row.sample,
    judge,
    judge_model: judgeModel,
    status: result.status,
    score: result.status === "scored" ? result.score : null,
    logprobs,
    largest_number: largestNumber,
  };
}

const answerKey = (r: { model: string; prompt: string; trait: string; question: number; sample: number }) =>
  `${r.model}\u0000${r.prompt}\u0000${r.trait}\u0000${r.question}\u0000${r.sample}`;

function toVerdicts(answers: readonly AnswerRow[], scores: readonly ScoreRow[], withCoherence: boolean): AnswerVerdict[] {
  const byAnswer = new Map<string, Partial<Record<JudgeKind, ScoreRow>>>();
  for (const s of scores) {
    const key = answerKey(s);
    byAnswer.set(key, { ...byAnswer.get(key), [s.judge]: s });
  }
  return answers.map((a) => {
    const got = byAnswer.get(answerKey(a)) ?? {};
    return {
      model: a.model,
      prompt: a.prompt,
      trait: a.trait,
      question: a.question,
      sample: a.sample,
      trait_status: got.trait?.status ?? "unscored",
      trait_score: got.trait?.score ?? null,
      coherence_score: withCoherence ? (got.coherence?.score ?? null) : null,
    };
  });
}

/** `eval_answers` and `eval_scores` in run.duckdb, rebuilt from the cache on every run. */
async function storeRows(store: RunStore, answers: readonly AnswerRow[], scores: readonly ScoreRow[]): Promise<void> {
  await fillTempTable(
    store,
    "eval_answers_new",
    { model: "VARCHAR", prompt: "VARCHAR", trait: "VARCHAR", question: "INTEGER", sample: "INTEGER", text: "VARCHAR", finish_reason: "VARCHAR" },
    answers.map((a) => [a.model, a.prompt, a.trait, a.question, a.sample, a.text, a.finish_reason]),
  );
  await store.run("CREATE OR REPLACE TABLE eval_answers AS SELECT * FROM eval_answers_new");
  await fillTempTable(
    store,
    "eval_scores_new",
    {
      model: "VARCHAR",
      prompt: "VARCHAR",
      trait: "VARCHAR",
      question: "INTEGER",
      sample: "INTEGER",
      judge: "VARCHAR",
      judge_model: "VARCHAR",
      status: "VARCHAR",
      score: "DOUBLE",
      logprobs: "VARCHAR",
    },
    scores.map((s) => [s.model, s.prompt, s.trait, s.question, s.sample, s.judge, s.judge_model, s.status, s.score, s.logprobs]),
  );
  await store.run("CREATE OR REPLACE TABLE eval_scores AS SELECT * EXCLUDE (logprobs), logprobs::JSON AS logprobs FROM eval_scores_new");
}

/** `tables/eval_results.parquet`, `eval_differences.parquet` and `eval_checks.parquet`: one row per figure. */
async function storeResults(store: RunStore, cells: readonly Cell[], differences: readonly Difference[], checks: readonly JudgeCheck[]): Promise<void> {
  const figureColumns = { mean: "DOUBLE", lo: "DOUBLE", hi: "DOUBLE", questions: "INTEGER" } as const;
  await fillTempTable(
    store,
    "eval_results_new",
    { model: "VARCHAR", prompt: "VARCHAR", trait: "VARCHAR", metric: "VARCHAR", ...figureColumns, answers: "INTEGER", scored: "INTEGER", unscored: "INTEGER", refusals: "INTEGER" },
    cells.flatMap((c) =>
      Object.entries(c.figures).map(([metric, f]) => [c.model, c.prompt, c.trait, metric, f.mean, f.lo, f.hi, f.questions, c.answers, c.scored, c.unscored, c.refusals]),
    ),
  );
  await store.writeTable("eval_results", "SELECT * FROM eval_results_new ORDER BY ALL");
  await fillTempTable(
    store,
    "eval_differences_new",
    { model: "VARCHAR", reference: "VARCHAR", prompt: "VARCHAR", trait: "VARCHAR", metric: "VARCHAR", ...figureColumns },
    differences.map((d) => [d.model, d.reference, d.prompt, d.trait, d.metric, d.interval.mean, d.interval.lo, d.interval.hi, d.interval.questions]),
  );
  await store.writeTable("eval_differences", "SELECT * FROM eval_differences_new ORDER BY ALL");
  await fillTempTable(
    store,
    "eval_checks_new",
    { model: "VARCHAR", trait: "VARCHAR", metric: "VARCHAR", ...figureColumns },
    checks.map((c) => [c.model, c.trait, c.metric, c.interval.mean, c.interval.lo, c.interval.hi, c.interval.questions]),
  );
  await store.writeTable("eval_checks", "SELECT * FROM eval_checks_new ORDER BY ALL");
}
