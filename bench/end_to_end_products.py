"""The large products of rnnlab's end-to-end training step (the character LM of `rnnlab bench
--end-to-end`), call by call: each MKL product the step makes outside the compiled loops
(input projections, weight gradients, the readout), on which thread, how often a step, and at
what rate, beside MKL's own rate on one core at 2048³. It tells whether the step's products
leave speed on the table (a shape or layout MKL runs badly) or run near what a core does.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/end_to_end_products.py

Needs the `mkl` extra and a host where the BLAS choice picks MKL for the large products
(`rnnlab info`); elsewhere the products go to NumPy and nothing is counted.
"""

from __future__ import annotations

import collections
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from rnnlab import _mkl
from rnnlab.bench.end_to_end import Model, rnnlab_trainer

STEPS = 10


def one_core_peak(mkl: Any) -> float:
    """MKL's float32 GFLOP/s at 2048³ on this thread alone (best of 7)."""
    a = np.random.default_rng(0).standard_normal((2048, 2048), dtype=np.float32)
    c = np.empty_like(a)
    best = np.inf
    with _mkl.one_thread():
        mkl.gemm(a, a, c)
        for _ in range(7):
            t0 = time.perf_counter()
            mkl.gemm(a, a, c)
            best = min(best, time.perf_counter() - t0)
    return 2 * 2048**3 / best / 1e9


def main() -> None:
    mkl = _mkl.load(large=True)
    if mkl is None:
        raise SystemExit("MKL is not the large products' BLAS here: nothing to count")
    calls: dict[tuple, list[float]] = collections.defaultdict(lambda: [0, 0.0])
    inner = type(mkl).gemm

    def gemm(self: Any, a: np.ndarray, b: np.ndarray, out: np.ndarray, beta: float = 0.0) -> bool:
        t0 = time.perf_counter()
        done = inner(self, a, b, out, beta)
        key = (threading.current_thread().name, a.shape, b.shape, a.flags.c_contiguous)
        calls[key][0] += 1
        calls[key][1] += time.perf_counter() - t0
        return done

    type(mkl).gemm = gemm  # type: ignore[method-assign]
    try:
        with tempfile.TemporaryDirectory() as d:
            trainer = rnnlab_trainer(Model(), Path(d) / "run", 40)
            for s in range(3):
                trainer.train_step(s)
            calls.clear()
            t0 = time.perf_counter()
            for s in range(3, 3 + STEPS):
                trainer.train_step(s)
            step = (time.perf_counter() - t0) / STEPS
    finally:
        type(mkl).gemm = inner  # type: ignore[method-assign]
    print(f"{step * 1e3:.1f} ms a step; MKL on one core at 2048³: {one_core_peak(mkl):.0f} GFLOP/s")
    print(f"{'thread':12} {'a':>12} {'b':>12} {'a C':>4} {'calls':>5} {'ms':>6} {'GFLOP/s':>7}")
    spent: dict[str, float] = collections.defaultdict(float)
    for (thread, sa, sb, c_a), (n, t) in sorted(calls.items(), key=lambda kv: -kv[1][1]):
        flops = 2 * sa[0] * sa[1] * sb[1] * n
        spent[thread] += t
        print(f"{thread[:12]:12} {str(sa):>12} {str(sb):>12} {int(c_a):>4} {n / STEPS:5.1f} "
              f"{t / STEPS * 1e3:6.2f} {flops / t / 1e9:7.0f}")  # fmt: skip
    for thread, t in spent.items():
        print(f"{thread}: {t / STEPS * 1e3:.1f} ms a step in MKL's products")


if __name__ == "__main__":
    main()
