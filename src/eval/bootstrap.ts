/**
 * Intervals by a two-level bootstrap: resample questions (the independent units), then the samples within each
 * drawn question. The statistic is the mean over questions of each question's mean, so a question with many
 * scored samples weighs no more than one with few. Paired differences draw the same questions for both arms.
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

function interval(point: number, draws: number[], questions: number, level: number): Interval {
  draws.sort((x, y) => x - y);
  const tail = (1 - level) / 2;
  return { mean: point, lo: percentile(draws, tail), hi: percentile(draws, 1 - tail), questions };
}

function checkGroups(groups: Grouped, what: string): void {
  if (groups.length === 0) throw new Error(`bootstrap of ${what}: no questions with values`);
  if (groups.some((g) => g.length === 0)) throw new Error(`bootstrap of ${what}: a question without values (leave it out first)`);
}

/** The mean over questions with its percentile interval. */
export function bootstrapMean(groups: Grouped, options: BootstrapOptions): Interval {
  checkGroups(groups, "a mean");
  const random = seededRandom(options.seed);
  const draws: number[] = [];
  for (let r = 0; r < options.resamples; r += 1) {
    let sum = 0;
    for (let i = 0; i < groups.length; i += 1) sum += resampledMean(groups[Math.floor(random() * groups.length)]!, random);
    draws.push(sum / groups.length);
  }
  return interval(questionMean(groups), draws, groups.length, options.level ?? 0.95);
}

/**
 * The difference `a − b` over the questions both arms answered (`a[i]` and `b[i]` are the same question), with
 * each resample drawing the same questions for both, so that what questions share (how hard, how leading) cancels.
 */
export function bootstrapPairedDifference(a: Grouped, b: Grouped, options: BootstrapOptions): Interval {
  if (a.length !== b.length) throw new Error(`paired bootstrap: ${a.length} questions against ${b.length}; pair them by question first`);
  checkGroups(a, "a paired difference");
  checkGroups(b, "a paired difference");
  const random = seededRandom(options.seed);
  const draws: number[] = [];
  for (let r = 0; r < options.resamples; r += 1) {
    let sum = 0;
    for (let i = 0; i < a.length; i += 1) {
      const q = Math.floor(random() * a.length);
      sum += resampledMean(a[q]!, random) - resampledMean(b[q]!, random);
    }
    draws.push(sum / a.length);
  }
  return interval(questionMean(a) - questionMean(b), draws, a.length, options.level ?? 0.95);
}
