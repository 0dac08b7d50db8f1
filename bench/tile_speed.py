"""The loops' per-step products on rnnlab's tiles (rnnlab.fast.tiles) against the BLAS, one
thread, at the shapes the loops make: half a batch of the bench's S1–S4 against W_hhᵀ of an
LSTM (forward), the same against W_hh (BPTT), and x_t's product of fused inference.

For each (rows, K, N): the best of many calls of tiles.product on the weight laid out once,
of NumPy's matmul (its OpenBLAS) and, with the `mkl` extra, of MKL's plain and packed sgemm;
µs, GFLOP/s and the ratio BLAS / tiles (above 1: the tiles are faster).

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE OPENBLAS_NUM_THREADS=1 \\
        RNNLAB_BLAS=mkl python bench/tile_speed.py [--dtype float64]
"""

from __future__ import annotations

import argparse
import time
from functools import partial

import numpy as np

from rnnlab import _blaschoice, _mkl
from rnnlab.fast import tiles

SHAPES = [
    ("S1 forward", 8, 64, 256), ("S2 forward", 16, 128, 512),
    ("S3 forward", 32, 256, 1024), ("S4 forward", 64, 512, 2048),
    ("S1 BPTT", 8, 256, 64), ("S2 BPTT", 16, 512, 128),
    ("S3 BPTT", 32, 1024, 256), ("S4 BPTT", 64, 2048, 512),
    ("S2 x_t", 16, 64, 512), ("S3 x_t", 32, 128, 1024),
]  # fmt: skip


def best(fn, seconds: float = 0.3) -> float:
    fn()
    fastest, end = float("inf"), time.perf_counter() + seconds
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        fn()
        fastest = min(fastest, time.perf_counter() - t0)
    return fastest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    dtype = np.dtype(ap.parse_args().dtype)
    cpu = _blaschoice.cpu()
    print(f"{cpu['vendor']} {cpu['model']} ({' '.join(cpu['flags'])}), {dtype}, one thread; "
          f"tiles of {tiles.MR} rows x {tiles.panel_width(dtype)} columns")  # fmt: skip
    mkl = _mkl.load() if _blaschoice.library_files() else None
    rng = np.random.default_rng(0)
    with _mkl.one_thread():
        for name, m, k, n in SHAPES:
            a = rng.standard_normal((m, k)).astype(dtype)
            b = rng.standard_normal((k, n)).astype(dtype)
            c = np.empty((m, n), dtype)
            panels = tiles.panels(b)
            times = {"tiles": best(partial(tiles.product, a, panels, c, False)),
                     "openblas": best(partial(np.matmul, a, b, out=c))}  # fmt: skip
            if mkl is not None:
                packed = mkl.pack(b, rows=m)
                times["mkl"] = best(partial(mkl.gemm, a, b, c))
                if packed is not None:
                    times["mkl packed"] = best(partial(mkl.gemm_packed, a, packed, c))
            flops = 2 * m * k * n
            row = "  ".join(f"{lib} {t * 1e6:7.1f} µs {flops / t / 1e9:5.1f} GF/s"
                            for lib, t in times.items())  # fmt: skip
            blas = min(t for lib, t in times.items() if lib != "tiles")
            print(f"{name:10s} {m:3d}x{k:4d}x{n:4d}  {row}  BLAS/tiles {blas / times['tiles']:.2f}")


if __name__ == "__main__":
    main()
