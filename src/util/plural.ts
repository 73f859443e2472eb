/** `1 trait`, `3 traits`: a count and its noun, for messages. */
export function plural(n: number, noun: string): string {
  return `${n} ${noun}${n === 1 ? "" : "s"}`;
}
