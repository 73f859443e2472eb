/**
 * The user-error / bug split: a UserError is something the user can fix (a bad config, a bad input row, a
 * missing file). The CLI prints its message alone; anything else is a bug and is printed with its stack.
 */
export class UserError extends Error {
  override readonly name = "UserError";
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
  }
}

/** A stage failed: carries the stage name so messages say where it happened. */
export class StageError extends UserError {
  constructor(
    readonly stage: string,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(`stage ${stage}: ${message}`, options);
  }
}

export function isUserError(error: unknown): error is UserError {
  return error instanceof UserError;
}
