import { APIConnectionError, InternalServerError, RateLimitError, type APIError } from "openai";

/** The longest wait a server's retry-after may impose before the layer gives up honouring it. */
const MAX_RETRY_AFTER_S = 120;
/** Backoff never grows past this. */
const MAX_BACKOFF_S = 60;

/**
 * Whether a failed request is worth sending again. Decided by the error's class, never its message text:
 * rate limits, server errors (5xx), unreachable servers and timeouts (APIConnectionTimeoutError is an
 * APIConnectionError). Everything else (bad request, auth, not found, a malformed answer) fails at once.
 */
export function isRetryable(error: unknown): boolean {
  return error instanceof RateLimitError || error instanceof InternalServerError || error instanceof APIConnectionError;
}

/**
 * Milliseconds to wait before retry number `retry` (0 for the first retry): the server's retry-after when it
 * sends one, else an exponential backoff from `backoffS` with full jitter (so many workers that hit a limit
 * together do not come back together).
 */
export function retryDelayMs(error: unknown, retry: number, backoffS: number, random: () => number = Math.random): number {
  const after = retryAfterS(error);
  if (after !== null) return Math.min(after, MAX_RETRY_AFTER_S) * 1000;
  const ceiling = Math.min(backoffS * 2 ** retry, MAX_BACKOFF_S);
  return (ceiling / 2 + (random() * ceiling) / 2) * 1000;
}

/** The server's requested wait in seconds: `retry-after-ms`, or `retry-after` as seconds or an HTTP date. */
export function retryAfterS(error: unknown): number | null {
  const headers = (error as APIError | undefined)?.headers;
  if (!(headers instanceof Headers)) return null;
  const ms = Number.parseFloat(headers.get("retry-after-ms") ?? "");
  if (Number.isFinite(ms) && ms >= 0) return ms / 1000;
  const value = headers.get("retry-after");
  if (value === null) return null;
  const seconds = Number.parseFloat(value);
  if (Number.isFinite(seconds) && seconds >= 0) return seconds;
  const date = Date.parse(value);
  return Number.isFinite(date) ? Math.max(0, (date - Date.now()) / 1000) : null;
}
