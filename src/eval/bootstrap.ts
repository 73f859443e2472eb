import jstat from "jstat";

const { jStat } = jstat;

/**
 * Intervals by a two-level bootstrap: resample questions (the independent units), then the samples within each
 * drawn question. The statistic is the mean over questions of each question's mean, so a question with many
 * scored samples weighs no more than one with few. Paired differences draw the same questions for both arms.
 *
 * Resampled as they are, the two levels count the samples' noise twice: the spread of the question means already
 * holds it, and the second level adds it again, so intervals come out too wide (95% intervals covered 97-99% in
 * our simulations). As Davison & Hinkley (Bootstrap Methods and their Application, 1997, section 3.8) do for
 * two-stage data, each question's values are first shifted so that its mean moves towards the overall mean by
 * the factor k = sqrt(Q/(Q-1) - W/B) (B: the spread of the Q question means, W: the mean variance the second
 * level adds); the two levels together then vary as the unbiased variance of the question means says, and 95%
 * intervals cover as they should (with the expanded tails of `interval`: 92-97% at 20 questions).
 */

/** A question's values (scores, or 0/1 for rates); questions without values are left out by the caller. */
export type Grouped = readonly (readonly number[])[];

export interface Interval {
  mean: number;
  lo: number;
  hi: number;
  /** Independent questions behind the figure. */
  questions: number;
}

export interface BootstrapOptions {
  resamples: number;
  seed: number;
  /** Two-sided coverage; 0.95 by default. */
  level?: number;
}

/** mulberry32: a small seeded generator, so the same data and seed give the same interval on every run. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const mean = (xs: readonly number[]) => xs.reduce((s, x) => s + x, 0) / xs.length;

/** The mean over questions of per-question means. */
export function questionMean(groups: Grouped): number {
  return mean(groups.map(mean));
}

/** The variance of the empirical distribution of `xs` (what resampling draws from). */
function spread(xs: readonly number[], centre = mean(xs)): number {
  return xs.reduce((s, x) => s + (x - centre) ** 2, 0) / xs.length;
}

/**
 * How far each question's mean is shrunk towards the overall mean (see the top of this file): `means` are the
 * per-question statistics, `added` the variance the second level adds to each.
 */
function shrinkFactor(means: readonly number[], added: readonly number[]): number {
  const between = spread(means);
  if (between === 0) return 1;
  // The target is the unbiased variance of the question means (n/(n-1) of their spread), not the spread itself.
  const unbiased = means.length > 1 ? means.length / (means.length - 1) : 1;
  return Math.sqrt(Math.max(0, unbiased - mean(added) / between));
}

/** Each question's values shifted so that its mean sits where the shrink factor puts it. */
function shrunk(groups: Grouped, centres: readonly number[], overall: number, k: number): number[][] {
  return groups.map((g, i) => {
    const shift = (k - 1) * (centres[i]! - overall);
    return g.map((x) => x + shift);
  });
}

function resampledMean(group: readonly number[], random: () => number): number {
  let sum = 0;
  for (let i = 0; i < group.length; i += 1) sum += group[Math.floor(random() * group.length)]!;
  return sum / group.length;
}

function percentile(sorted: readonly number[], q: number): number {
  const pos = q * (sorted.length - 1);
  const lower = Math.floor(pos);
  const upper = Math.ceil(pos);
  return sorted[lower]! + (sorted[upper]! - sorted[lower]!) * (pos - lower);
}

/**
 * The percentile interval, expanded for few questions (Hesterberg's expanded percentile interval, "What Teachers
 * Should Know About the Bootstrap", 2015): the tails are read at Φ(t⁻¹(tail; Q-1)) instead of `tail`, as a t
 * interval would widen; with the n/(n-1) variance of shrinkFactor that is his method. Without it, 95% intervals
 * over 20 questions covered 90-94% in our simulations; with it, 92-97%.
 */
function interval(point: number, draws: number[], questions: number, level: number): Interval {
  draws.sort((x, y) => x - y);
  const nominal = (1 - level) / 2;
  const tail = questions > 1 ? jStat.normal.cdf(jStat.studentt.inv(nominal, questions - 1), 0, 1) : nominal;
  return { mean: point, lo: percentile(draws, tail), hi: percentile(draws, 1 - tail), questions };
}

function checkGroups(groups: Grouped, what: string): void {
  if (groups.length === 0) throw new Error(`bootstrap of ${what}: no questions with values`);
  if (groups.some((g) => g.length === 0)) throw new Error(`bootstrap of ${what}: a question without values (leave it out first)`);
}

/** The mean over questions with its percentile interval. */
export function bootstrapMean(groups: Grouped, options: BootstrapOptions): Interval {
  checkGroups(groups, "a mean");
  const centres = groups.map(mean);
  const overall = mean(centres);
  const k = shrinkFactor(centres, groups.map((g, i) => spread(g, centres[i]) / g.length));
  const values = shrunk(groups, centres, overall, k);
  const random = seededRandom(options.seed);
  const draws: number[] = [];
  for (let r = 0; r < options.resamples; r += 1) {
    let sum = 0;
    for (let i = 0; i < values.length; i += 1) sum += resampledMean(values[Math.floor(random() * values.length)]!, random);
    draws.push(sum / values.length);
  }
  return interval(overall, draws, groups.length, options.level ?? 0.95);
}

/**
 * The difference `a − b` over the questions both arms answered (`a[i]` and `b[i]` are the same question), with
 * each resample drawing the same questions for both, so that what questions share (how hard, how leading) cancels.
 * The per-question differences are what is shrunk; both arms' samples add the second level's variance.
 */
export function bootstrapPairedDifference(a: Grouped, b: Grouped, options: BootstrapOptions): Interval {
  if (a.length !== b.length) throw new Error(`paired bootstrap: ${a.length} questions against ${b.length}; pair them by question first`);
  checkGroups(a, "a paired difference");
  checkGroups(b, "a paired difference");
  const ca = a.map(mean);
  const cb = b.map(mean);
  const differences = ca.map((x, i) => x - cb[i]!);
  const overall = mean(differences);
  const k = shrinkFactor(differences, a.map((g, i) => spread(g, ca[i]) / g.length + spread(b[i]!, cb[i]) / b[i]!.length));
  // Arm a's values carry the whole shift of their question's difference; arm b's stay as they are.
  const va = shrunk(a, differences, overall, k);
  const random = seededRandom(options.seed);
  const draws: number[] = [];
  for (let r = 0; r < options.resamples; r += 1) {
    let sum = 0;
    for (let i = 0; i < a.length; i += 1) {
      const q = Math.floor(random() * a.length);
      sum += resampledMean(va[q]!, random) - resampledMean(b[q]!, random);
    }
    draws.push(sum / a.length);
  }
  return interval(overall, draws, a.length, options.level ?? 0.95);
}
