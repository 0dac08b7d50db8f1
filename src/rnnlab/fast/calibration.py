"""The measurement behind the per-host choice of the loops' per-step products
(rnnlab._blaschoice): NumPy's OpenBLAS, MKL and rnnlab's tiles timed on the products the
loops make, and the two libraries on the large products made outside them, one thread each,
in a child process that _blaschoice starts and reads.

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
    float32, one thread: NumPy's matmul; MKL where it loads (its plain product, or the faster of
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
    """µs per product at each (rows, K, N) of `shapes` for NumPy, MKL and the tiles (measure)."""
    out: dict[str, list[float]] = {"numpy": []}
    if mkl is not None:
        out["mkl"] = []
    if tiles is not None:
        out["tiles"] = []
    for m, k, n in shapes:
        a = rng.standard_normal((m, k)).astype(np.float32)
        b = rng.standard_normal((k, n)).astype(np.float32)
        c = np.empty((m, n), np.float32)
        runs: dict[str, Callable[[], object]] = {
            "numpy": functools.partial(np.matmul, a, b, out=c)
        }
        if mkl is not None:
            packed = mkl.pack(b, rows=m)
            if packed is None:
                raise RuntimeError("MKL does not pack a float32 factor")
            runs["mkl"] = functools.partial(mkl.gemm, a, b, c)
            runs["mkl-packed"] = functools.partial(mkl.gemm_packed, a, packed, c)
        if tiles is not None:
            runs["tiles"] = functools.partial(tiles.product, a, tiles.panels(b), c, False)
        best = _best(runs, repeats)
        out["numpy"].append(best["numpy"] * 1e6)
        if mkl is not None:
            packs = settings.current().packed and k * n >= MIN_PACKED_VALUES
            mkl_s = min(best["mkl"], best["mkl-packed"]) if packs else best["mkl"]
            out["mkl"].append(mkl_s * 1e6)
        if tiles is not None:
            out["tiles"].append(best["tiles"] * 1e6)
    return out


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
