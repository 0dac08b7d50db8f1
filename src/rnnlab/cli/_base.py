"""What every rnnlab command shares: the exit statuses and the one-line error."""

from __future__ import annotations

import sys
from typing import Any

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143  # 128 + SIGTERM's 15: the shell's status of a process SIGTERM ended
EXIT_PIPE = 141  # 128 + SIGPIPE's 13: the status of a process whose output's reader went away


class UsageError(ValueError):
    """A mistake in how rnnlab was called."""


def one_line(e: BaseException) -> str:
    """An error's message on one line (the rnnlab command prints no traceback)."""
    text = str(e) or type(e).__name__
    return " ".join(text.split())


def finite_result(result: dict[str, Any], cause: str) -> dict[str, Any]:
    """An evaluation as JSON holds it: a value that is not finite (a model whose outputs
    overflow) as null, said in "non_finite" (with `cause`) and warned about on stderr; JSON
    has no NaN. For `rnnlab evaluate --json` and a run's result.json alike."""
    from rnnlab import io

    clean, bad = io.finite_or_null(result)
    if bad:
        why = f"{', '.join(bad)} not finite (NaN or inf): {cause}"
        clean["non_finite"] = why
        print(f"rnnlab: warning: {why}", file=sys.stderr)
    out: dict[str, Any] = clean
    return out
