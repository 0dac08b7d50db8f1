"""Time loop speed: the NumPy step loop of rnnlab.recurrence against the numba loops of rnnlab.fast.

One training step of one layer (forward over the sequence, then BPTT to every gradient and dX)
for each cell at S1 = (B16, T200, I32, H64) and S2 = (32, 100, 64, 128), float32 by default.
The variants differ only in the time loop and in which BLAS runs the matrix products:

  numpy-loop   recurrence.forward/backward on the NumPy loop (RNNLAB_NO_NUMBA=1)
  fast         the numba loops on NumPy's own OpenBLAS; the hoisted input projection and the
               deferred weight gradients on NumPy as in recurrence (what the dispatch runs)
  fast-scipy   the same loops on numba's np.dot (scipy's OpenBLAS), the rest on NumPy's
  all-scipy    every product on scipy's OpenBLAS (loops and the hoisted/deferred ones)

Blocks of ~0.3 s per variant alternate, with 0.25 s pauses so one OpenBLAS pool's spinning
threads do not slow the next block; the figures are the median and the best call of 7 rounds.
On a shared machine the median moves with the neighbours' load (a 2-thread BLAS product waits
for its slower thread); the best call is the steadier estimate of the quiet-machine time.

On a busy shared machine run `OPENBLAS_NUM_THREADS=1 python bench/loop_speed.py --clock cpu`:
with one BLAS thread the process's CPU time is the compute time whatever the neighbours do
(with two threads it would count the pool's busy-waiting too).

With --readout every variant also runs, in NumPy, the products of a linear readout on the
layer's outputs (Y Vᵀ forward, dOᵀ Y and dO V backward), as a model's training step would.

    python bench/loop_speed.py [--dtype float64] [--kinds lstm gru] [--shapes S1] [--readout]
                               [--clock cpu]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
from numba import njit

from rnnlab import fast, recurrence
from rnnlab.cells import ElmanCell, GRUCell, LSTMCell

SHAPES = {"S1": (16, 200, 32, 64), "S2": (32, 100, 64, 128)}
CELLS = {
    "tanh": lambda: ElmanCell("tanh"),
    "relu": lambda: ElmanCell("relu"),
    "lstm": LSTMCell,
    "gru": lambda: GRUCell(True),
    "gru_orig": lambda: GRUCell(False),
}


@njit(cache=True)
def scipy_matmul(A, B, out):  # numba's np.dot: scipy's OpenBLAS
    np.dot(A, B, out)


def _blas_ready(A):
    return A if A.flags.c_contiguous or A.flags.f_contiguous else np.ascontiguousarray(A)


def matmul(A, B, scipy):
    out = np.empty((A.shape[0], B.shape[1]), A.dtype)
    if scipy:  # a transposed operand goes as it is (F-order): BLAS transposes for free
        scipy_matmul(_blas_ready(A), _blas_ready(B), out)
    else:
        np.matmul(A, B, out=out)
    return out


def fast_train_step(kind, cell, p, X, h0, c0, dys, numpy_blas=True, scipy_outside=False):
    """recurrence.forward + recurrence.backward with the time loops from rnnlab.fast."""
    T, B, I = X.shape
    GH, H = p.W_hh.shape
    dt = X.dtype
    XA = matmul(X.reshape(T * B, I), p.W_ih.T, scipy_outside).reshape(T, B, GH)
    XA += p.b_ih
    W_hhT = np.ascontiguousarray(p.W_hh.T)
    hs = np.empty((T + 1, B, H), dt)
    cs = np.empty((T + 1, B, H), dt) if cell.has_c else None
    extra = cell.new_tape(T, B, H, dt)
    hs[0] = h0
    if cs is not None:
        cs[0] = c0
    fast.forward_loop(kind, XA, W_hhT, p.b_hh, hs, cs, extra, None, False, numpy_blas=numpy_blas)

    dXA = np.empty((T, B, GH), dt)
    dHA = dXA if cell.shares_preact_grad else np.empty((T, B, GH), dt)
    dh0, dc0 = fast.backward_loop(
        kind, p.W_hh, hs, cs, extra, None, False, dys, None, None, dXA, dHA, numpy_blas=numpy_blas
    )
    dA_x, dA_h = dXA.reshape(T * B, GH), dHA.reshape(T * B, GH)
    hs_prev = hs[:-1].reshape(T * B, H)
    dW_ih = matmul(dA_x.T, X.reshape(T * B, I), scipy_outside)
    if kind == "gru_orig":  # the n rows of W_hh multiplied r ⊙ h_{t-1}
        dW_hh = np.empty_like(p.W_hh)
        dW_hh[: 2 * H] = matmul(dA_h[:, : 2 * H].T, hs_prev, scipy_outside)
        dW_hh[2 * H :] = matmul(dA_h[:, 2 * H :].T, extra["hn"].reshape(T * B, H), scipy_outside)
    else:
        dW_hh = matmul(dA_h.T, hs_prev, scipy_outside)
    dX = matmul(dA_x, p.W_ih, scipy_outside)
    return dX.reshape(T, B, I), dW_ih, dW_hh, dA_x.sum(axis=0), dA_h.sum(axis=0), dh0, dc0


def numpy_train_step(cell, p, X, h0, c0, dys):
    _, _, _, tape = recurrence.forward(cell, p, X, h0, c0)
    return recurrence.backward(cell, p, tape, dys)


def timed_blocks(fns, rounds=7, block=0.3, pause=0.25, clock=time.perf_counter):
    """(median, best) seconds per call of each function, in alternating blocks."""
    calls = {}
    for name, f in fns.items():
        f()
        t0, n = time.perf_counter(), 0
        while time.perf_counter() - t0 < 0.1 or n < 2:
            f()
            n += 1
        calls[name] = max(2, int(block * n / (time.perf_counter() - t0)))
    times = {name: [] for name in fns}
    for _ in range(rounds):
        for name, f in fns.items():
            time.sleep(pause)
            for _ in range(calls[name]):
                t0 = clock()
                f()
                times[name].append(clock() - t0)
    return {name: (float(np.median(v)), float(np.min(v))) for name, v in times.items()}


VARIANTS = ["numpy-loop", "fast", "fast-scipy", "all-scipy"]


def with_readout(step, Y, V, dO):
    """`step` followed by a NumPy readout's three products (other BLAS work in the step)."""

    def run():
        out = step()
        np.matmul(Y, V.T), np.matmul(dO.T, Y), np.matmul(dO, V)
        return out

    return run


def bench_case(shape, kind, dt, rng, rounds, readout=False, clock=time.perf_counter):
    """Check that the variants agree, then time them: {variant: (median, best) ms per step}."""
    B, T, I, H = shape
    cell = CELLS[kind]()
    G = cell.gates * H
    bound = 1 / np.sqrt(H)
    p = recurrence.Params(
        *(rng.uniform(-bound, bound, s).astype(dt) for s in [(G, I), (G, H), (G,), (G,)])
    )
    X = rng.standard_normal((T, B, I)).astype(dt)
    h0 = np.zeros((B, H), dt)
    c0 = np.zeros((B, H), dt) if cell.has_c else None
    dys = rng.standard_normal((T, B, H)).astype(dt)
    fns = {
        "numpy-loop": lambda: numpy_train_step(cell, p, X, h0, c0, dys),
        "fast": lambda: fast_train_step(kind, cell, p, X, h0, c0, dys),
        "fast-scipy": lambda: fast_train_step(kind, cell, p, X, h0, c0, dys, False),
        "all-scipy": lambda: fast_train_step(kind, cell, p, X, h0, c0, dys, False, True),
    }
    if readout:
        Y, dO = (rng.standard_normal((T * B, H)).astype(dt) for _ in range(2))
        V = rng.uniform(-bound, bound, (H, H)).astype(dt)
        fns = {name: with_readout(f, Y, V, dO) for name, f in fns.items()}
    dX, grads, _, _ = fns["numpy-loop"]()
    for name in VARIANTS[1:]:
        got = fns[name]()
        for want, have in [(dX, got[0]), (grads.W_hh, got[2]), (grads.b_hh, got[4])]:
            err = np.abs(have - want).max() / np.abs(want).max()
            assert err < (1e-3 if dt == np.float32 else 1e-10), f"{kind} {name}: wrong gradients"
    return {k: (1e3 * m, 1e3 * b) for k, (m, b) in timed_blocks(fns, rounds, clock=clock).items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    ap.add_argument("--kinds", nargs="+", default=list(CELLS), choices=list(CELLS))
    ap.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--readout", action="store_true", help="add a NumPy readout's products")
    ap.add_argument("--clock", default="wall", choices=["wall", "cpu"], help="cpu: process time")
    args = ap.parse_args()
    dt = np.dtype(args.dtype)
    rng = np.random.default_rng(0)
    if not fast.available():
        raise SystemExit(
            "numba and scipy are needed (pip install 'rnnlab[fast]'), RNNLAB_NO_NUMBA unset"
        )
    os.environ["RNNLAB_NO_NUMBA"] = "1"  # recurrence runs its NumPy loop; fast.* is called directly
    from rnnlab.fast import blas

    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    threads = os.environ.get("OPENBLAS_NUM_THREADS", "default")
    print(f"clock: {args.clock}, OPENBLAS_NUM_THREADS={threads}")
    extra = " + a NumPy readout" if args.readout else ""
    print(f"{args.dtype}, one layer{extra}, train step = forward + BPTT to all gradients and dX")
    print(f"NumPy's OpenBLAS found for the kernels: {blas.NUMPY_CBLAS}")
    print("ms per train step, median (best); speedup = numpy-loop / fast")
    print(f"{'shape':6} {'cell':9}" + "".join(f"{v:>17}" for v in VARIANTS) + "   speedup")
    for shape in args.shapes:
        for kind in args.kinds:
            ms = bench_case(SHAPES[shape], kind, dt, rng, args.rounds, args.readout, clock)
            cols = "".join(f"{ms[v][0]:8.2f} ({ms[v][1]:6.2f})" for v in VARIANTS)
            ratio = [ms["numpy-loop"][i] / ms["fast"][i] for i in (0, 1)]
            print(f"{shape:6} {kind:9}{cols}   {ratio[0]:4.2f}x ({ratio[1]:4.2f}x)", flush=True)


if __name__ == "__main__":
    main()
