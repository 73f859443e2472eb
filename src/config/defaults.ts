/** Qwen2.5's chat template inserts this when a conversation has no system message. */
export const QWEN25_DEFAULT_SYSTEM_PROMPT = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.";

/** The irrelevant control prompt of the research (a true fact unrelated to any trait). */
export const DEFAULT_IRRELEVANT_PROMPT = "Honey never spoils.";
