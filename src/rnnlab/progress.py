"""The training loop's progress display: a one-line bar on a terminal, plain lines otherwise.

On a terminal the bar is redrawn in place at most five times a second, cut to the terminal's
width (a line that wraps cannot be redrawn: `\r` goes back to the start of its last row, and
an 80-column terminal got a new line at every redraw); into a file or a pipe
(a batch job's log) a plain line goes every ten seconds, so that a log stays readable. The
last step is always shown. Messages (validation results, early stopping) go on a line of their
own. Why it is our own and not rich's or tqdm's bar: see docs/design.md ("The progress
display").

Where the stream's reader goes away (`rnnlab train ... 2>&1 | head`, a log pipe whose reader
died), the display says nothing more and `gone` is set: the training loop then stops after its
step and saves, as at a Ctrl-C (rnnlab.train). Before, the write's BrokenPipeError went up
through the loop, and every step since the last checkpoint was lost.
"""

from __future__ import annotations

import os
import sys
import time
from typing import TextIO


class Progress:
    """A one-line progress bar on a terminal; plain lines every few seconds otherwise."""

    def __init__(self, total: int, start: int, stream: TextIO | None = None,
                 quiet: bool = False) -> None:
        self.total, self.start = total, start
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.quiet = quiet
        self.t0 = time.perf_counter()
        self.last_print = 0.0
        self.items = 0
        self.drawn = 0  # characters of the bar on the terminal now (to be blanked)
        self.gone = False  # the stream's reader went away (a broken pipe): nothing is written

    def update(self, step: int, loss: float, items: int, extra: str = "") -> None:
        self.items += items
        if self.quiet:
            return
        now = time.perf_counter()
        elapsed = now - self.t0
        interval = 0.2 if self.tty else 10.0
        if now - self.last_print < interval and step + 1 < self.total:
            return
        self.last_print = now
        done = step + 1 - self.start
        rate = self.items / elapsed if elapsed > 0 else 0.0
        eta = elapsed / done * (self.total - step - 1) if done > 0 else 0.0
        frac = (step + 1) / self.total
        if self.tty:
            bar = "#" * int(24 * frac) + "-" * (24 - int(24 * frac))
            width = _columns(self.stream) - 1  # (not the last column: some terminals wrap)
            line = (
                f"[{bar}] {step + 1}/{self.total} loss {loss:.4f} "
                f"{rate:,.0f} items/s ETA {_fmt(eta)} {extra}"
            ).rstrip()[:width]
            # padded over what the last one left, so that a shorter line leaves no tail
            self._write("\r" + line.ljust(min(self.drawn, width)))
            self.drawn = len(line)
        else:
            self._write(
                f"step {step + 1}/{self.total} loss {loss:.4f} {rate:,.0f} items/s "
                f"elapsed {_fmt(elapsed)} ETA {_fmt(eta)} {extra}\n"
            )

    def message(self, text: str) -> None:
        if self.tty and not self.quiet and self.drawn:
            self._write("\r" + " " * self.drawn + "\r")
            self.drawn = 0
        self._write(text + "\n")

    def close(self) -> None:
        if self.tty and not self.quiet and self.drawn:  # (a message ended its line)
            self.drawn = 0
            self._write("\n")

    def _write(self, text: str) -> None:
        if self.gone:
            return
        try:
            self.stream.write(text)
            self.stream.flush()
        except BrokenPipeError:
            self.gone = True
            silence(self.stream)


def silence(stream: TextIO) -> None:
    """Point `stream`'s file descriptor at os.devnull, after a write found its reader gone:
    what its buffer still holds, and whatever is written to it later (Python's flush of
    sys.stderr at exit too), then goes nowhere instead of raising BrokenPipeError again (as
    Python's documentation of SIGPIPE advises). A stream without a descriptor stays as it
    is."""
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):  # (io.UnsupportedOperation is both)
        return
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, fd)
    finally:
        os.close(null)


def _columns(stream: TextIO) -> int:
    """The width of the terminal `stream` writes to: its own (the size of stdout, which
    shutil.get_terminal_size asks, is not stderr's where stdout is piped), else $COLUMNS,
    else 80."""
    try:
        columns = os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, OSError, ValueError):  # (io.UnsupportedOperation is both)
        columns = 0
    if columns <= 0:
        env = os.environ.get("COLUMNS", "")
        columns = int(env) if env.isascii() and env.isdigit() and int(env) > 0 else 80
    return max(columns, 2)


def _fmt(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 60}:{seconds % 60:02d}"
