import type { TokenLogprob } from "../llm/types.ts";

/**
 * Scores from a judge's first-token logprobs (the Persona Vectors method): the judge answers with one token,
 * and instead of trusting the sampled token, the score is the probability-weighted mean over the candidate
 * tokens that are integers 0-100. When less than `minMass` of the probability (0.25 in Persona Vectors, the
 * default) is on such tokens the judge did not really answer with a number, and the answer gets no score.
 */

export const MIN_NUMBER_MASS = 0.25;

export type JudgeScore =
  | { status: "scored"; score: number; mass: number }
  /** The judge's most likely token says the model refused (the Persona Vectors templates ask for REFUSAL). */
  | { status: "refusal"; mass: number }
  | { status: "unscored"; mass: number };

/** The integer 0-100 a token spells (tokenizers may add a leading space), or null. */
export function integerToken(token: string): number | null {
  const trimmed = token.trim();
  if (!/^\d{1,3}$/.test(trimmed)) return null;
  const value = Number(trimmed);
  return value <= 100 ? value : null;
}

/**
 * Whether a first token starts the word REFUSAL. Tokenizers cut it: Qwen's gives `REF`, `US`, `AL`, and the
 * judge's one token is only the first piece; three letters are the shortest piece taken as one.
 */
function isRefusal(token: string): boolean {
  const word = token.trim().toLowerCase();
  return word.startsWith("refus") || (word.length >= 3 && "refusal".startsWith(word));
}

/** The weighted 0-100 score of one judge answer. */
export function weightedScore(top: readonly TokenLogprob[], minMass = MIN_NUMBER_MASS): JudgeScore {
  let mass = 0;
  let weighted = 0;
  for (const { token, logprob } of top) {
    const value = integerToken(token);
    if (value === null) continue;
    const p = Math.exp(logprob);
    mass += p;
    weighted += p * value;
  }
  if (mass > 0 && mass >= minMass) return { status: "scored", score: weighted / mass, mass };
  const best = [...top].sort((a, b) => b.logprob - a.logprob)[0];
  return { status: best && isRefusal(best.token) ? "refusal" : "unscored", mass };
}

/**
 * The largest integer 0-100 among a judge answer's candidate tokens, or null. A judge whose tokenizer splits
 * numbers into digits (Qwen, Llama 3) never offers one above 9 as its first token, so its first-token score can
 * only be 0-9: the figures would look like a scale of 100 and mean nothing.
 */
export function largestNumberToken(top: readonly TokenLogprob[]): number | null {
  let largest: number | null = null;
  for (const { token } of top) {
    const value = integerToken(token);
    if (value !== null && (largest === null || value > largest)) largest = value;
  }
  return largest;
}

/**
 * A yes/no judge (does the answer cite a source?): the score is 100 × p(yes) / (p(yes) + p(no)), so a rate
 * above 50 means the judge leans yes. Unscored when less than `minMass` is on yes or no.
 */
export function yesNoScore(top: readonly TokenLogprob[], minMass = MIN_NUMBER_MASS): JudgeScore {
  let yes = 0;
  let no = 0;
  for (const { token, logprob } of top) {
    const word = token.trim().toLowerCase();
    if (word === "yes") yes += Math.exp(logprob);
    else if (word === "no") no += Math.exp(logprob);
  }
  const mass = yes + no;
  return mass > 0 && mass >= minMass ? { status: "scored", score: (100 * yes) / mass, mass } : { status: "unscored", mass };
}

/** ALL_CAPS by rule: 100 × the share of letters that are upper-case; no score for an answer without letters. */
export function allCapsScore(text: string): JudgeScore {
  const letters = text.match(/\p{L}/gu) ?? [];
  const cased = letters.filter((c) => c.toLowerCase() !== c.toUpperCase());
  if (cased.length === 0) return { status: "unscored", mass: 0 };
  const upper = cased.filter((c) => c === c.toUpperCase()).length;
  return { status: "scored", score: (100 * upper) / cased.length, mass: 1 };
}
