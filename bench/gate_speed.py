"""What an LSTM's gates cost in the compiled loops without the step's product: the cell's own
forward and backward stages (rnnlab.cells.lstm, compiled through rnnlab.fast.rows as the loops
compile them) over `rows` batch rows and T steps, one thread; the best of 50 calls, µs a step
and ns a unit. "streamed": each step writes its own tape rows, as training does; "one row":
every step the same (the tape in cache).

The vector width is numba's, i.e. LLVM's tuning for the host CPU: on Intel server cores it
prefers 256-bit vectors even with AVX-512. To time 512-bit vectors, run with the host's
features plus `-prefer-256-bit` (a process-wide setting; its own cache directory):

    F=$(python -c "import llvmlite.binding as b; print(b.get_host_cpu_features().flatten())")
    NUMBA_CPU_FEATURES="$F,-prefer-256-bit" NUMBA_CACHE_DIR=/tmp/nc512 python bench/gate_speed.py

    python bench/gate_speed.py [--rows 16] [--hidden 256] [--steps 128]
"""

from __future__ import annotations

import argparse
import time
from functools import partial

import numba
import numpy as np
from numba import njit

import rnnlab.fast.rows  # noqa: F401  (numba's versions of the cells' vocabulary)
from rnnlab.cells.lstm import _steps

_JIT = {"error_model": "numpy", "fastmath": {"contract"}, "_nrt": False}
(_forward,), (_backward,) = _steps(False, False, None)
_fwd = njit(inline="always", **_JIT)(_forward)
_bwd = njit(inline="always", **_JIT)(_backward)


@njit(nogil=True, **_JIT)
def _forward_loop(XA, b_ih, HA, b_hh, q, hs, cs, tape, streamed):
    T, B = XA.shape[0], HA.shape[0]
    for t in range(T):
        row = t if streamed else 0
        for b in range(B):
            _fwd(XA[t, b], b_ih, HA[b], b_hh, q, hs[t, b], cs[t, b], hs[t + 1, b], cs[t + 1, b],
                 tape[row, b])  # fmt: skip


@njit(nogil=True, **_JIT)
def _backward_loop(dh, dc, dsrc, q, hs, cs, tape, dq, streamed):
    T, B = tape.shape[0], dh.shape[0]
    for s in range(T):
        t = T - 1 - s
        row = t if streamed else 0
        for b in range(B):
            _bwd(dh[b], dc[b], dsrc[b], q, hs[t, b], cs[t, b], hs[t + 1, b], cs[t + 1, b],
                 tape[row, b], tape[row, b], dsrc[b], dq[b])  # fmt: skip


def _best(call, repeats: int = 50) -> float:
    call()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=16)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--steps", type=int, default=128)
    args = parser.parse_args()
    T, B, H = args.steps, args.rows, args.hidden
    rng = np.random.default_rng(0)
    f32 = np.float32
    XA = rng.standard_normal((T, B, 4 * H)).astype(f32)
    HA = rng.standard_normal((B, 4 * H)).astype(f32)
    bias, q = np.zeros(4 * H, f32), np.zeros(0, f32)
    hs, cs = np.zeros((T + 1, B, H), f32), np.zeros((T + 1, B, H), f32)
    tape = np.zeros((T, B, 4 * H), f32)
    dh = (rng.standard_normal((B, H)) * 0.01).astype(f32)
    dc, dsrc, dq = dh.copy(), np.zeros((B, H), f32), np.zeros((B, 1), f32)
    print(f"LSTM gates, {B} rows x {H} units, {T} steps, float32, one thread (numba "
          f"{numba.__version__})")  # fmt: skip
    for streamed in (True, False):
        label = "streamed" if streamed else "one row "
        for name, call in (
            ("forward ", partial(_forward_loop, XA, bias, HA, bias, q, hs, cs, tape, streamed)),
            ("backward", partial(_backward_loop, dh, dc, dsrc, q, hs, cs, tape, dq, streamed)),
        ):
            s = _best(call)
            print(f"{name} {label}: {s / T * 1e6:6.2f} µs a step, {s / (T * B * H) * 1e9:.3f} ns "
                  "a unit")  # fmt: skip


if __name__ == "__main__":
    main()
