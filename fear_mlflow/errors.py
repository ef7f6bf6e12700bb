"""One exception type for problems the user can fix.

The CLI turns a `UserError` into a single `error: ...` line and a non-zero exit code,
so every message should name the problem *and* the fix.
"""


class UserError(Exception):
    """Bad input or environment: reported as one line, never as a traceback."""
