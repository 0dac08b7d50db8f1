"""A/B in one process: rnnlab's worker threads asleep between parts (RNNLAB_SPIN=0) against
waiting busily for them (the default, rnnlab.fast.team), interleaved with PyTorch.

Two measurements:
- `handover`: how late a part handed to a worker starts after the worker has been idle for
  a given gap, and how long the whole hand-over of two parts takes (the caller's part
  300 µs and the worker's 400 µs of GIL-free work), 200 hand-overs per gap and setting;
- `steps` (the default): the end-to-end training step (`rnnlab bench --end-to-end`'s model)
  and the bench's rows for the cells and shapes asked for, each round timing the step
  under both settings and PyTorch's, medians over the rounds (ratios: PyTorch's median
  over each, above 1 rnnlab is faster).

The settings switch inside the process (rnnlab.settings.override), so both see the same host
minute by minute. The script stops where rnnlab does not split work here (one thread, or no
numba) or the CPU has no clock to spin by (not x86): both settings would be the same code.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/spin_ab.py \\
        [handover] [--cells lstm] [--shapes S1,S2,S3,S4] [--modes infer,train] \\
        [--rounds 9] [--no-end-to-end]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from rnnlab import settings
from rnnlab.bench import configs, end_to_end, runners
from rnnlab.fast import parallel, team

SETTINGS = ("asleep", "busy")


@contextlib.contextmanager
def _setting(name: str) -> Iterator[None]:
    if name == "asleep":
        with settings.override(spin=0.0):
            yield
    else:
        yield


def _median_ms(fn: Callable[[], object], calls: int = 9) -> float:
    fn()
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def _report(label: str, times: dict[str, list[float]]) -> None:
    reference = statistics.median(times["torch"])
    print(label, "  ".join(f"{k} {statistics.median(v):.2f} ms "
                           f"({reference / statistics.median(v):.2f}x)"
                           for k, v in times.items()), flush=True)  # fmt: skip


def handover() -> None:
    from numba import njit

    @njit(nogil=True)
    def work(n):  # GIL-free, as the loops' parts are
        s = 0.0
        for i in range(n):
            s += np.sqrt(i + s * 1e-9)
        return s

    work(10)
    t0 = time.perf_counter()
    work(10**7)
    per = (time.perf_counter() - t0) / 1e7
    started: dict[int, float] = {}

    def part(a: int, b: int) -> None:
        started[a] = time.perf_counter()
        work(int((300e-6 if a == 0 else 400e-6) / per))

    for name in SETTINGS:
        with _setting(name), parallel.session():
            for gap in (50e-6, 1e-3, 3e-3, 10e-3, 20e-3):
                rows = []
                for _ in range(200):
                    until = time.perf_counter() + gap
                    while time.perf_counter() < until:  # the caller busy, as between parts
                        pass
                    t0 = time.perf_counter()
                    parallel.run_parts(part, [(0, 1), (1, 2)])
                    rows.append(((started[1] - t0) * 1e6, (time.perf_counter() - t0) * 1e6))
                late, whole = np.array(rows).T
                lq, wq = np.percentile(late, [50, 90]), np.percentile(whole, [50, 90])
                print(f"{name:6s} idle {gap * 1e3:5.2f} ms: the worker's part started "
                      f"{lq[0]:4.0f} µs late (slowest tenth {lq[1]:4.0f}), "
                      f"hand-over {wq[0]:4.0f} µs ({wq[1]:4.0f})", flush=True)  # fmt: skip


def steps(a: argparse.Namespace) -> None:
    torch = runners.import_torch()
    torch.set_num_threads(2)
    if not a.no_end_to_end:
        with tempfile.TemporaryDirectory() as d:
            trainer = end_to_end.rnnlab_trainer(end_to_end.Model(), Path(d), 400)
            ours, theirs = end_to_end._loss_step(trainer), end_to_end.torch_loop(torch, trainer)
            for s in range(3):
                ours(s)
                theirs(s)
            times: dict[str, list[float]] = {k: [] for k in (*SETTINGS, "torch")}
            step = 3
            for _ in range(a.rounds):
                for name in times:
                    with _setting(name):
                        for _ in range(4):
                            t0 = time.perf_counter()
                            (theirs if name == "torch" else ours)(step)
                            times[name].append((time.perf_counter() - t0) * 1e3)
                            step += 1
            _report("end to end", times)
    for shape in a.shapes.split(","):
        for cell in a.cells.split(","):
            for mode in a.modes.split(","):
                pair = runners.make_pair(torch, configs.Config(cell, shape, False, 1))
                ours = runners.rnnlab_step(pair, mode)
                theirs = runners.torch_step(torch, pair, mode)
                times = {k: [] for k in (*SETTINGS, "torch")}
                for _ in range(a.rounds):
                    for name in times:
                        with _setting(name):
                            times[name].append(_median_ms(theirs if name == "torch" else ours))
                _report(f"{cell} {shape} {mode}", times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", nargs="?", default="steps", choices=["steps", "handover"])
    ap.add_argument("--cells", default="lstm")
    ap.add_argument("--shapes", default="S1,S2,S3,S4")
    ap.add_argument("--modes", default="infer,train")
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--no-end-to-end", action="store_true")
    a = ap.parse_args()
    if not parallel.enabled():
        raise SystemExit("rnnlab does not split work here (one thread, or no numba): "
                         "both settings would run the same code")  # fmt: skip
    if team.ticks_per_second() == 0:
        raise SystemExit("no time-stamp counter here (not x86): the threads never spin")
    print(f"ticks per second {team.ticks_per_second():.3g}; RNNLAB_SPIN default "
          f"{settings.DEFAULT_SPIN} s")  # fmt: skip
    handover() if a.what == "handover" else steps(a)


if __name__ == "__main__":
    main()
