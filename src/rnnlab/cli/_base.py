"""What every rnnlab command shares: the exit statuses and the one-line error."""

from __future__ import annotations

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class UsageError(ValueError):
    """A mistake in how rnnlab was called."""


def one_line(e: BaseException) -> str:
    """An error's message on one line (the rnnlab command prints no traceback)."""
    text = str(e) or type(e).__name__
    return " ".join(text.split())
