/**
 * Formats a latent's max-activating contexts (rows of `feature_examples`) for the explain prompt: grouped by
 * corpus, strongest first, each context's tokens at or above a share of that context's peak marked
 * `<<token>>(value)`. The share is relative to each context's own peak (as in the reference), so a weak context
 * still shows where the latent fired in it.
 */
export interface LatentContext {
  corpus: string;
  /** 1 = the corpus's strongest context for this latent. */
  rank: number;
  /** The peak activation in the context. */
  activation: number;
  /** Decoded token strings, as the sidecar wrote them (leading spaces included). */
  tokens: readonly string[];
  token_acts: readonly number[];
}

export interface ExplainFormatOptions {
  /** Tokens at or above this share of the context's peak are marked. */
  share: number;
  /** At most this many contexts per corpus (the strongest). */
  perCorpus: number;
  /** Corpus order; corpora not listed follow in name order. The fine-tuning data (`dataset`) comes first by default. */
  corpusOrder: readonly string[];
  /** A heading per corpus name; a corpus without one is headed by its name. */
  corpusTitles: Readonly<Record<string, string>>;
}

export const DEFAULT_EXPLAIN_FORMAT: ExplainFormatOptions = {
  share: 0.25,
  perCorpus: 8,
  corpusOrder: ["dataset"],
  corpusTitles: { dataset: "the fine-tuning dataset under audit" },
};

/** Which tokens are marked: those at or above `share` of the context's peak (none when it never fired). */
export function activeTokenMask(acts: readonly number[], share: number): boolean[] {
  const peak = acts.reduce((m, a) => Math.max(m, a), 0);
  return acts.map((a) => peak > 0 && a >= share * peak);
}

/** Three significant digits: enough to compare activations, short enough to keep the prompt small. */
export function formatActivation(value: number): string {
  return String(Number(value.toPrecision(3)));
}

/** One context as text; leading whitespace stays outside the marks so the words read naturally. */
export function markContext(tokens: readonly string[], acts: readonly number[], share: number): string {
  if (tokens.length !== acts.length) throw new Error(`a context has ${tokens.length} tokens but ${acts.length} activations`);
  const mask = activeTokenMask(acts, share);
  return tokens
    .map((token, i) => {
      if (!mask[i]) return token;
      const [, space, word] = /^(\s*)([\s\S]*)$/.exec(token)!;
      return `${space}<<${word}>>(${formatActivation(acts[i]!)})`;
    })
    .join("");
}

/**
 * The `{{contexts}}` value of explain.md. A latent without any context cannot be explained: the caller records it
 * as unexplained instead of calling the LLM, so an empty list is an error here.
 */
export function formatLatentContexts(contexts: readonly LatentContext[], options: Partial<ExplainFormatOptions> = {}): string {
  const o = { ...DEFAULT_EXPLAIN_FORMAT, ...options };
  if (contexts.length === 0) throw new Error("explain: no contexts to format");
  if (!(o.share > 0 && o.share <= 1)) throw new Error(`explain: the marking share must be in (0, 1], got ${o.share}`);
  const byCorpus = new Map<string, LatentContext[]>();
  for (const c of contexts) byCorpus.set(c.corpus, [...(byCorpus.get(c.corpus) ?? []), c]);
  const order = [
    ...o.corpusOrder.filter((name) => byCorpus.has(name)),
    ...[...byCorpus.keys()].filter((name) => !o.corpusOrder.includes(name)).sort(),
  ];
  const sections = order.map((corpus) => {
    const shown = byCorpus
      .get(corpus)!
      .sort((a, b) => a.rank - b.rank)
      .slice(0, o.perCorpus);
    const title = o.corpusTitles[corpus] ? `${corpus}: ${o.corpusTitles[corpus]}` : corpus;
    const body = shown.map(
      (c, i) => `Example ${i + 1} (peak activation ${formatActivation(c.activation)}):\n${markContext(c.tokens, c.token_acts, o.share).trim()}`,
    );
    return [`### Corpus ${title}`, ...body].join("\n\n");
  });
  return sections.join("\n\n");
}
