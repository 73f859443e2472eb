import type { ChatMessage } from "./types.ts";

/**
 * A conversation as plain text for a judge to read: each turn under its role, inside <conversation> tags.
 * `maxChars` shortens each turn (for prompts that show many rows at once), marking the cut.
 */
export function renderConversation(messages: readonly ChatMessage[], maxChars = Infinity): string {
  const turns = messages.map((m) => {
    const text = m.content.length > maxChars ? `${m.content.slice(0, maxChars)} […]` : m.content;
    return `[${m.role}]\n${text}`;
  });
  return `<conversation>\n${turns.join("\n\n")}\n</conversation>`;
}
