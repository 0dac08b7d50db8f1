"""How a comparison is timed: interleaved blocks of each implementation with pauses between.

Both libraries keep thread pools that spin for a while after a call and steal the cores of
whoever runs next; alternating blocks, rotating who goes first and pausing after each block
spreads the machine's noise over both sides alike (bench/README.md, "How it is timed").
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

ROUNDS = 7
BLOCK_S = 0.3  # each block runs ~this long, so a block holds many calls of a fast config
PAUSE_S = 0.25  # longer than a BLAS pool spins after a call, so the pools never overlap
QUICK_ROUNDS = 3
QUICK_BLOCK_S = 0.1


def call_seconds(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


@dataclass(frozen=True)
class Timing:
    """How each comparison is timed: `rounds` rounds of blocks of ~`block_s` seconds per
    implementation, with a pause of `pause_s` after every block."""

    rounds: int = ROUNDS
    block_s: float = BLOCK_S
    pause_s: float = PAUSE_S


def interleaved(
    fns: dict[str, Callable[[], Any]], timing: Timing = Timing()
) -> dict[str, np.ndarray]:
    """Seconds per call of each function, from `rounds` rounds of interleaved blocks.

    Each function is warmed up (two calls: the first may compile or allocate) and gets a
    block size n = max(1, round(block_s / t_call)) from a third, timed call. A round runs one
    block of each function, rotating who goes first, with a pause after every block. Every
    call is timed on its own.
    """
    names = list(fns)
    n = {}
    for name in names:  # no pause in between: only the block sizes come from these calls
        fns[name]()
        fns[name]()
        n[name] = max(1, round(timing.block_s / max(call_seconds(fns[name]), 1e-9)))
    time.sleep(timing.pause_s)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(timing.rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            fn, out = fns[name], times[name]
            for _ in range(n[name]):
                out.append(call_seconds(fn))
            time.sleep(timing.pause_s)
    return {name: np.array(t) for name, t in times.items()}


def ms_stats(seconds: np.ndarray) -> dict[str, float]:
    ms = seconds * 1e3
    return {
        "median": float(np.median(ms)),
        "mean": float(ms.mean()),
        "p10": float(np.percentile(ms, 10)),
        "p90": float(np.percentile(ms, 90)),
        "calls": int(ms.size),
    }
