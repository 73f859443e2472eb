"""The user-error / bug split: a `UserError` is a bad input or config that the user can fix, and its message
says what to fix; any other exception is a bug and travels with its traceback."""


class UserError(Exception):
    """Bad input or configuration; the message names the file or field and the fix."""
