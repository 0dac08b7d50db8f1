"""The `rnnlab` program: the script pip makes of [project.scripts] in pyproject.toml
(`rnnlab = "rnnlab.__main__:run"`), and `python -m rnnlab` for an environment whose scripts
are not on PATH.

`run` takes a Ctrl-C or SIGTERM in the program's first fraction of a second, while Python
imports NumPy and the command's modules (~0.3 s), as the commands take them later: one line
and exit status 130 (Ctrl-C) or 143 (SIGTERM), not a KeyboardInterrupt's traceback or a
death by the signal. It can only because this module and `rnnlab` itself import nothing
heavy (its __init__ imports its names when they are first used): the command's modules are
imported inside `run`, once it is in place. (`python -m rnnlab.cli` imports them first.)"""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # (typing's, which mypy reads the same: typing costs ~6 ms to import)
if TYPE_CHECKING:
    from types import FrameType

# rnnlab.cli._base's EXIT_INTERRUPTED and EXIT_TERMINATED (importing them would import the
# command's modules, which `run` must hold the signals for first)
_EXIT_INTERRUPTED = 130
_EXIT_TERMINATED = 143


class _Terminated(BaseException):
    """SIGTERM before the command began (a BaseException, as KeyboardInterrupt is: no
    `except Exception` of an import on the way catches it)."""


def _terminated(signum: int, frame: FrameType | None) -> None:
    raise _Terminated


def run() -> int:
    """The rnnlab command (rnnlab.cli.run), a Ctrl-C or SIGTERM before it began said in one
    line. A Ctrl-C raises KeyboardInterrupt (Python's own handler), caught here around the
    imports and anything the command's own handling does not cover; SIGTERM, which kills
    by default, raises _Terminated until the command's modules are imported, and is then
    given back (training takes it over; any other command dies of it, as before). Every
    import is in here, `signal`'s too (~4 ms with its enum): a Ctrl-C during one is caught."""
    before = None
    try:
        import signal

        try:
            if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:  # (ignored: left so)
                before = signal.signal(signal.SIGTERM, _terminated)
        except ValueError:  # not the main thread, which alone may set a handler
            pass
        try:
            from rnnlab.cli import run as command
        finally:
            if before is not None:
                signal.signal(signal.SIGTERM, before)
        return command()
    except KeyboardInterrupt:
        print("rnnlab: interrupted", file=sys.stderr)
        return _EXIT_INTERRUPTED
    except _Terminated:
        print("rnnlab: terminated by SIGTERM", file=sys.stderr)
        return _EXIT_TERMINATED


if __name__ == "__main__":
    sys.exit(run())
