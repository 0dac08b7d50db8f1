"""The measurement behind the per-host choice of the loops' per-step products
(rnnlab._blaschoice): NumPy's OpenBLAS, MKL and rnnlab's tiles timed on the products the
loops make, and the two libraries on the large products made outside them, one thread each,
in a child process that _blaschoice starts and reads.

The per-step products are timed as the loops make them: called from compiled code, through
the same kernel (rnnlab.fast.kernels.gemm, and NumPy's own CBLAS symbol for OpenBLAS), a few
calls per timed block. Timed from Python, each call carried its caller's overhead, and that
differs by library: ~0.4 µs for the tiles' dispatcher, ~0.7 µs for NumPy's matmul and ~5 µs
for MKL through ctypes, on an Intel Xeon (model 167) where MKL's whole product at 16 × 128 ×
512 takes ~13 µs: it read 19 µs against the tiles' 12, and the tiles lost in the loops
(bench/README.md, "The calibration timed from compiled code"). The large products are called
from Python in use as here, so they are timed so.

It lives above _blaschoice because it runs the tiles (rnnlab.fast.tiles); _blaschoice names
it only in the child's command line.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from rnnlab import _blaschoice, _mkl, settings
from rnnlab.fast import MIN_PACKED_VALUES


def measure(repeats: int = 15) -> dict[str, list[float]]:
    """µs per product (best of `repeats` after a warm-up) for each of _blaschoice.SHAPES,
    float32, one thread: NumPy's OpenBLAS; MKL where it loads (its plain product, or the faster of
    that and its packed one where a training loop packs such a weight: rnnlab.fast.packs,
    RNNLAB_PACKED); rnnlab's tiles where the compiled loops run (the weight laid out once, as
    the loops do). The same at IN_PLACE_SHAPES, BPTT's products on W_hh as it lies ("numpy in
    place", ...). Then NumPy's and MKL's at LARGE_SHAPES ("numpy large", "mkl large"). Run by
    _blaschoice._measure_in_child in a process of its own with OPENBLAS_NUM_THREADS=1."""
    mkl = _mkl.load()
    tiles: Any = None
    if _blaschoice.tiles_measurable():
        try:
            from rnnlab.fast import tiles
        except Exception:  # noqa: BLE001  (any failure to load: the tiles are not timed)
            tiles = None
    rng = np.random.default_rng(0)
    out: dict[str, list[float]] = {}
    for suffix, shapes in (("", _blaschoice.SHAPES), (" in place", _blaschoice.IN_PLACE_SHAPES)):
        for name, times in _per_step(mkl, tiles, rng, shapes, repeats).items():
            out[name + suffix] = times
    out.update(_large(mkl, rng, max(3, repeats // 3)))
    return out


def _per_step(mkl: Any, tiles: Any, rng: np.random.Generator,
              shapes: tuple[tuple[int, int, int], ...], repeats: int) -> dict[str, list[float]]:
    """µs per product at each (rows, K, N) of `shapes` for NumPy, MKL and the tiles (measure),
    each called from compiled code as the loops call it (the module's docstring); from
    Python where numba is missing or turned off (the loops do not run then: the times only
    inform `rnnlab info`)."""
    compiled = _blaschoice.tiles_measurable()
    numpy_calls = _numpy_calls() if compiled else None
    out: dict[str, list[float]] = {"numpy": []}
    if mkl is not None:
        out["mkl"] = []
    if tiles is not None:
        out["tiles"] = []
    plain = np.empty(0, np.uint8)  # "no packed factor", as the loops pass it
    for m, k, n in shapes:
        a = rng.standard_normal((m, k)).astype(np.float32)
        b = rng.standard_normal((k, n)).astype(np.float32)
        c = np.empty((m, n), np.float32)
        calls = _calls_per_block(m, k, n) if compiled else 1
        packed = mkl.pack(b, rows=m) if mkl is not None else None
        if mkl is not None and packed is None:
            raise RuntimeError("MKL does not pack a float32 factor")
        runs: dict[str, Callable[[], object]] = {}
        if not compiled:
            runs["numpy"] = functools.partial(np.matmul, a, b, out=c)
            if mkl is not None:
                runs["mkl"] = functools.partial(mkl.gemm, a, b, c)
                runs["mkl-packed"] = functools.partial(mkl.gemm_packed, a, packed, c)
        else:  # the kernels' CBLAS symbols are MKL's in the measuring child where it loads
            runs["numpy"] = (
                functools.partial(numpy_calls, a, b, c, calls) if numpy_calls is not None
                else functools.partial(_kernel_calls, a, (b, plain), c, False, calls)
            )  # (without NumPy's CBLAS symbol the loops' own fallback: numba's np.dot)
            if mkl is not None:
                runs["mkl"] = functools.partial(_kernel_calls, a, (b, plain), c, True, calls)
                runs["mkl-packed"] = functools.partial(
                    _kernel_calls, a, (np.empty((0, 0), np.float32), packed), c, True, calls)
            if tiles is not None:
                runs["tiles"] = functools.partial(
                    _kernel_calls, a, (tiles.panels(b), plain), c, True, calls)
        for run in runs.values():  # each product checked once: a wrong call is not timed
            c[...] = np.nan
            run()
            if not np.allclose(c, a @ b, rtol=1e-4, atol=1e-4 * np.sqrt(k)):
                raise RuntimeError(f"a product timed at {m}x{k}x{n} computed something else")
        best = {name: t / calls for name, t in _best(runs, repeats).items()}
        out["numpy"].append(best["numpy"] * 1e6)
        if mkl is not None:
            packs = settings.current().packed and k * n >= MIN_PACKED_VALUES
            mkl_s = min(best["mkl"], best["mkl-packed"]) if packs else best["mkl"]
            out["mkl"].append(mkl_s * 1e6)
        if tiles is not None:
            out["tiles"].append(best["tiles"] * 1e6)
    return out


BLOCK_PRODUCTS = 4_000_000
"""Multiply-adds in one timed block of per-step products: a few calls of the small ones (16
at 8 × 64 × 256, 4 at 16 × 128 × 512), one of the larger; a dispatch from Python (~0.3 µs)
is then well under 1 % of a block."""


def _calls_per_block(m: int, k: int, n: int) -> int:
    return max(1, min(16, round(BLOCK_PRODUCTS / max(m * k * n, 1))))


_NUMPY_SGEMM = "rnnlab_calibration_numpy_sgemm"


@functools.cache
def _numpy_calls() -> Callable[..., None] | None:
    """A compiled runner of `calls` products C = A·B (float32, C-contiguous) on NumPy's own
    OpenBLAS, called through its CBLAS symbol as the loops call it where NumPy's library is
    the choice; None where that symbol is not found (the loops then use numba's np.dot)."""
    import llvmlite.binding as ll
    from numba import njit

    from rnnlab.fast import blas, kernels

    found = blas.find_numpy_cblas()
    if found is None:
        return None
    ll.add_symbol(_NUMPY_SGEMM, found[0])
    sgemm = kernels.external(_NUMPY_SGEMM, kernels.SGEMM_TYPE)
    head = (blas.ROW_MAJOR, blas.NO_TRANS, blas.NO_TRANS)

    def calls_(A: Any, B: Any, C: Any, calls: int) -> None:
        M, K = A.shape
        N = B.shape[1]
        for _ in range(calls):
            sgemm(*head, M, N, K, 1.0, A.ctypes.data, K, B.ctypes.data, N, 0.0, C.ctypes.data, N)

    # not cached on disk: compiled in the measuring child only, always from today's sources
    compiled: Callable[..., None] = kernels.scoped(njit(nogil=True)(calls_))
    return compiled


def _kernel_calls(A: Any, W: Any, C: Any, numpy_blas: bool, calls: int) -> None:
    """`calls` products C = A·W through rnnlab.fast.kernels.gemm, W as the loops pass it
    (compiled at first use: `_compiled_kernel_calls`)."""
    _compiled_kernel_calls()(A, W, C, numpy_blas, calls)


@functools.cache
def _compiled_kernel_calls() -> Callable[..., None]:
    from numba import njit

    from rnnlab.fast import kernels

    def calls_(A: Any, W: Any, C: Any, numpy_blas: bool, calls: int) -> None:
        for _ in range(calls):
            kernels.gemm(A, W, C, numpy_blas)  # type: ignore[no-untyped-call]  # (fast.kernels: not annotated)

    compiled: Callable[..., None] = kernels.scoped(njit(nogil=True)(calls_))
    return compiled


def _best(runs: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """The best time in seconds of each run, on one thread, after a warm-up call each."""
    best = {name: float("inf") for name in runs}
    with _mkl.one_thread():
        for fn in runs.values():
            fn()
        for _ in range(repeats):  # alternating, so a neighbour's burst hits all alike
            for name, fn in runs.items():
                t0 = time.perf_counter()
                fn()
                best[name] = min(best[name], time.perf_counter() - t0)
    return best


def _large(mkl: Any, rng: np.random.Generator, repeats: int) -> dict[str, list[float]]:
    """µs per product for each of _blaschoice.LARGE_SHAPES, float32, one thread: NumPy's
    matmul and MKL's gemm where it loads (best of `repeats`, alternating)."""
    out: dict[str, list[float]] = {"numpy large": []}
    if mkl is not None:
        out["mkl large"] = []
    for m, k, n, transposed in _blaschoice.LARGE_SHAPES:
        a = rng.standard_normal((k, m) if transposed else (m, k)).astype(np.float32)
        a = a.T if transposed else a
        b = rng.standard_normal((k, n)).astype(np.float32)
        c = np.empty((m, n), np.float32)
        runs: dict[str, Callable[[], object]] = {
            "numpy large": functools.partial(np.matmul, a, b, out=c)
        }
        if mkl is not None:
            runs["mkl large"] = functools.partial(mkl.gemm, a, b, c)
        best = _best(runs, repeats)
        for name in runs:
            out[name].append(best[name] * 1e6)
    return out
