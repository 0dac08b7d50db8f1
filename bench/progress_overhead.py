"""What a progress display costs the training loop: import time and time per update.

rnnlab's own `Progress` against rich's and tqdm's bars (each skipped when not installed),
showing the same fields (step/total, loss, items/s, ETA) into an in-memory stream that says
it is a terminal, once per step as the Trainer calls it. Import times are measured in a fresh
interpreter after numpy and rnnlab.train, as the CLI has them. Run:

    PYTHONPATH=src python bench/progress_overhead.py
"""

from __future__ import annotations

import importlib.util
import io
import statistics
import subprocess
import sys
import time

STEPS = 20_000


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def ours(stream):
    from rnnlab.progress import Progress

    bar = Progress(STEPS, 0, stream)
    for step in range(STEPS):
        bar.update(step, 0.5, 32)
    bar.close()


def tqdm_bar(stream):
    from tqdm import tqdm

    with tqdm(total=STEPS, file=stream, unit="step") as bar:
        for _ in range(STEPS):
            bar.set_postfix_str("loss 0.5000", refresh=False)
            bar.update(1)


def rich_bar(stream):
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    console = Console(file=stream, force_terminal=True, width=100)
    columns = (BarColumn(), TextColumn("{task.completed}/{task.total} loss {task.fields[loss]}"),
               TimeRemainingColumn())  # fmt: skip
    with Progress(*columns, console=console) as bar:
        task = bar.add_task("train", total=STEPS, loss="")
        for _ in range(STEPS):
            bar.update(task, advance=1, loss="0.5000")


def import_ms(module: str, rounds: int = 7) -> float:
    code = ("import time, numpy, rnnlab.train; t = time.perf_counter(); "
            f"import {module}; print(time.perf_counter() - t)")  # fmt: skip
    runs = [float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                 check=True).stdout) for _ in range(rounds)]  # fmt: skip
    return 1e3 * statistics.median(runs)


def main() -> None:
    cases = [("rnnlab.progress", "rnnlab.progress", ours), ("tqdm", "tqdm", tqdm_bar),
             ("rich", "rich.progress", rich_bar)]  # fmt: skip
    print(f"{'display':16s} {'import ms':>10s} {'µs per update':>14s}")
    for name, module, run in cases:
        if importlib.util.find_spec(module.split(".")[0]) is None:
            print(f"{name:16s} not installed")
            continue
        run(Terminal())  # warm-up
        times = []
        for _ in range(5):
            start = time.perf_counter()
            run(Terminal())
            times.append((time.perf_counter() - start) / STEPS)
        print(f"{name:16s} {import_ms(module):10.1f} {1e6 * min(times):14.2f}")


if __name__ == "__main__":
    main()
