"""Whether an LSTM's inference loop gains when each step's gates run while the product's
result is still in the core's first-level cache: issue #21's lever "compute the gates while
the GEMM's output tile is still in registers", tried without writing the cell a second time.

The loop of `projecting_loop`, one thread, inference (the tape one row), as shipped: at every
step x_t·W_ihᵀ and h_{t−1}·W_hhᵀ on the tiles into two (rows, 4H) buffers, then the cell's
own step (rnnlab.cells.lstm, compiled as the loops compile it) over each row's 4H values.
Chunked: the weights' columns reordered by U units, [i, f, g, o] of units u·U … u·U + U − 1
side by side, so that for each chunk the tiles make a (rows, 4U) block (x_t's product, then
h_{t−1}'s added) and the same step runs on it with H = U while the block is in cache (16 KB
at 32 rows and U = 32). Both compute the same outputs (checked; the chunked rows add x_t's
and h's products before the biases, so equal to float32 rounding).

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/gates_in_cache.py \\
        [--rows 32] [--input 128] [--hidden 256] [--steps 100] [--units 32,64,128]
"""

from __future__ import annotations

import argparse
import time
from functools import partial

import numpy as np
from numba import njit

import rnnlab.fast.rows  # noqa: F401  (numba's versions of the cells' vocabulary)
from rnnlab import _blaschoice
from rnnlab.cells.lstm import _steps
from rnnlab.fast import tiles

_JIT = {"error_model": "numpy", "fastmath": {"contract"}, "_nrt": False}
(_forward,), _ = _steps(False, False, None)
_step = njit(inline="always", **_JIT)(_forward)
_product = tiles.product


@njit(nogil=True, **_JIT)
def _as_shipped(X, Px, Ph, b_ih, b_hh, q, hs, cs, tape, xa, ha):
    T, B = X.shape[0], X.shape[1]
    for t in range(T):
        _product(X[t], Px, xa, False)
        _product(hs[t], Ph, ha, False)
        for b in range(B):
            _step(xa[b], b_ih, ha[b], b_hh, q, hs[t, b], cs[t % 2, b], hs[t + 1, b],
                  cs[(t + 1) % 2, b], tape[b])  # fmt: skip


@njit(nogil=True, **_JIT)
def _chunked(X, Pxc, Phc, zeros, b_c, q, hs, cs, tape, block, U):
    T, B, H = X.shape[0], X.shape[1], hs.shape[2]
    for t in range(T):
        for u in range(H // U):
            _product(X[t], Pxc[u], block, False)
            _product(hs[t], Phc[u], block, True)
            lo, hi = u * U, (u + 1) * U
            for b in range(B):
                _step(zeros[b], b_c[u], block[b], zeros[0, : 4 * U], q, hs[t, b, lo:hi],
                      cs[t % 2, b, lo:hi], hs[t + 1, b, lo:hi], cs[(t + 1) % 2, b, lo:hi],
                      tape[b])  # fmt: skip


def _by_chunks(W: np.ndarray, U: int) -> np.ndarray:
    """W (K, 4H) as (H/U, panels of the (K, 4U) block of chunk u)."""
    K, H = W.shape[0], W.shape[1] // 4
    blocks = W.reshape(K, 4, H // U, U).transpose(2, 0, 1, 3).reshape(H // U, K, 4 * U)
    return np.stack([tiles.panels(blocks[u]) for u in range(H // U)])


def _best(call, repeats: int = 40) -> float:
    call()
    fastest = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        call()
        fastest = min(fastest, time.perf_counter() - t0)
    return fastest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=32)
    ap.add_argument("--input", type=int, default=128)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--units", default="32,64,128", help="chunk sizes U, multiples of 8")
    args = ap.parse_args()
    T, B, I, H = args.steps, args.rows, args.input, args.hidden
    f32, rng = np.float32, np.random.default_rng(0)
    X = rng.standard_normal((T, B, I)).astype(f32)
    W_ih = (rng.standard_normal((I, 4 * H)) * 0.05).astype(f32)
    W_hh = (rng.standard_normal((H, 4 * H)) * 0.05).astype(f32)
    b_ih, b_hh = (rng.standard_normal((2, 4 * H)) * 0.1).astype(f32)
    q = np.zeros(0, f32)

    def states() -> tuple[np.ndarray, np.ndarray]:
        return np.zeros((T + 1, B, H), f32), np.zeros((2, B, H), f32)

    hs, cs = states()
    buffers = [np.zeros((B, 4 * H), f32) for _ in range(3)]
    shipped = partial(_as_shipped, X, tiles.panels(W_ih), tiles.panels(W_hh), b_ih, b_hh, q, hs,
                      cs, buffers[0], buffers[1], buffers[2])  # fmt: skip
    shipped()
    reference = hs.copy()
    cpu = _blaschoice.cpu()
    flops = 2 * T * B * (I + H) * 4 * H
    print(f"{cpu['vendor']} {cpu['model']}; LSTM inference loop, {B} rows, I = {I}, H = {H}, "
          f"{T} steps, float32, one thread; {flops / 1e9:.2f} GFLOP")  # fmt: skip
    for U in (int(u) for u in args.units.split(",")):
        if H % U or U % 8:
            raise SystemExit(f"--units: {U} does not divide H = {H} in multiples of 8")
        hs_c, cs_c = states()
        b_c = (b_ih + b_hh).reshape(4, H // U, U).transpose(1, 0, 2).reshape(H // U, 4 * U)
        chunked = partial(_chunked, X, _by_chunks(W_ih, U), _by_chunks(W_hh, U),
                          np.zeros((B, 4 * U), f32), np.ascontiguousarray(b_c), q, hs_c, cs_c,
                          np.zeros((B, 4 * U), f32), np.zeros((B, 4 * U), f32), U)  # fmt: skip
        chunked()
        gap = float(np.abs(hs_c - reference).max())
        # (each call starts from the c the last one left in cs' two rows: the timed calls
        # compute what they would, the check above is of the first)
        a, c = _best(shipped), _best(chunked)
        print(f"U = {U:3d}: as shipped {a * 1e3:6.2f} ms ({flops / a / 1e9:5.1f} GFLOP/s), "
              f"chunked {c * 1e3:6.2f} ms ({flops / c / 1e9:5.1f}); chunked/shipped "
              f"{c / a:.3f}; largest |Δh| {gap:.1e}")  # fmt: skip


if __name__ == "__main__":
    main()
