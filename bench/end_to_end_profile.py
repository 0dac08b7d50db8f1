"""Where the time of rnnlab's end-to-end training step goes (the character LM of `rnnlab bench
--end-to-end`): 12 steps after 3 warm-up steps, timed part by part (each module's forward and
backward, the loss, the clipping, the update: wall time on the main thread) and under cProfile
(the worker thread's share of a split shows as the main thread's wait for it, `acquire`),
and by the call site of each split (`Team.run`): its time on the main thread, the main
thread's own part of it and its wait for the workers' parts.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/end_to_end_profile.py
    RNNLAB_BLAS=mkl ... (the loops' products on MKL), RNNLAB_NUM_THREADS=1 ... (one thread)
"""

from __future__ import annotations

import collections
import cProfile
import io
import pstats
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rnnlab import optim
from rnnlab.bench.end_to_end import Model, rnnlab_trainer
from rnnlab.fast import parallel, team

STEPS = 12


def _timed(owner: Any, name: str, label: str, spent: dict[str, float]) -> None:
    """Replace owner.name by a wrapper that adds its wall time to spent[label]."""
    inner: Callable[..., Any] = getattr(owner, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            spent[label] += time.perf_counter() - t0

    setattr(owner, name, wrapper)


def _sites(spent: dict[str, list[float]]) -> None:
    """Wrap Team.run so that each call adds, under its caller's caller (the function that
    split the work: parallel.run_parts is in between), [calls, wall time, own part]."""
    inner = team.Team.run

    def run(self: team.Team, fn: Callable[[int, int], object], parts: list[tuple[int, int]]
            ) -> None:  # fmt: skip
        caller = sys._getframe(2).f_code
        own = [0.0]

        def timed(a: int, b: int) -> None:
            t0 = time.perf_counter()
            fn(a, b)
            if (a, b) == parts[0]:  # the part the calling thread runs itself
                own[0] += time.perf_counter() - t0

        t0 = time.perf_counter()
        inner(self, timed, parts)
        site = spent[f"{caller.co_name} ({Path(caller.co_filename).name})"]
        site[0] += 1
        site[1] += time.perf_counter() - t0
        site[2] += own[0]

    team.Team.run = run  # type: ignore[method-assign]


def main() -> None:
    with tempfile.TemporaryDirectory() as d:
        trainer = rnnlab_trainer(Model(), Path(d) / "run", 40)
        for s in range(3):
            trainer.train_step(s)
        spent: dict[str, float] = collections.defaultdict(float)
        for i, module in enumerate(trainer.model.modules):
            kind = type(module).__name__
            _timed(module, "forward", f"forward {i} {kind}", spent)
            _timed(module, "backward", f"backward {i} {kind}", spent)
        _timed(trainer.task, "loss", "loss", spent)
        _timed(optim, "clip_gradients", "clipping", spent)
        _timed(trainer.opt, "update", "update", spent)
        sites: dict[str, list[float]] = collections.defaultdict(lambda: [0.0, 0.0, 0.0])
        _sites(sites)
        times = []
        profile = cProfile.Profile()
        for s in range(3, 3 + STEPS):
            t0 = time.perf_counter()
            profile.enable()
            trainer.train_step(s)
            profile.disable()
            times.append(time.perf_counter() - t0)
        print("threads", parallel.num_threads(), "seconds a step:",
              " ".join(f"{t:.3f}" for t in times))  # fmt: skip
        parts = ", ".join(f"{k} {v / STEPS * 1e3:.1f}" for k, v in spent.items())
        print("ms a step, by part:", parts)
        print(
            "splits over the threads, by call site (ms a step: in all / the main thread's own "
            "part / its wait for the workers):"
        )
        for site, (n, total, own) in sorted(sites.items(), key=lambda kv: -kv[1][1]):
            print(
                f"  {site:44s} {n / STEPS:4.1f} calls  {total / STEPS * 1e3:6.2f} / "
                f"{own / STEPS * 1e3:6.2f} / {(total - own) / STEPS * 1e3:5.2f}"
            )
        out = io.StringIO()
        pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(15)
        print(out.getvalue())


if __name__ == "__main__":
    main()
