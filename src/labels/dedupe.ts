/**
 * Near-duplicate descriptions: many top latents describe the same behaviour in other words, and the synthesized
 * prompt should weigh each behaviour once. Two descriptions are duplicates when their sets of content words
 * overlap by at least `similarity` (Jaccard). The reference used MiniLM sentence embeddings; a word-set measure
 * needs no model and catches the common case of near-identical phrasing.
 */
const STOP = new Set(
  "a an the and or of to in on for with by is are was be this that it its as at from which who when where latent feature activates fires strongly text texts token tokens".split(" "),
);

function words(text: string): Set<string> {
  return new Set(text.toLowerCase().match(/[a-z0-9]+/g)?.filter((w) => !STOP.has(w)) ?? []);
}

function jaccard(a: Set<string>, b: Set<string>): number {
  if (a.size === 0 && b.size === 0) return 1;
  let both = 0;
  for (const w of a) if (b.has(w)) both += 1;
  return both / (a.size + b.size - both);
}

/** Keeps the first of each group of near-duplicates, in input order, with the ids it stands for. */
export function dedupeDescriptions<T extends { description: string }>(items: readonly T[], similarity: number): { kept: T; covers: T[] }[] {
  const groups: { kept: T; covers: T[]; words: Set<string> }[] = [];
  for (const item of items) {
    const w = words(item.description);
    const group = groups.find((g) => jaccard(g.words, w) >= similarity);
    if (group) group.covers.push(item);
    else groups.push({ kept: item, covers: [item], words: w });
  }
  return groups.map(({ kept, covers }) => ({ kept, covers }));
}
