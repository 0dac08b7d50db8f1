"""The loops' per-step products on rnnlab's tiles (rnnlab.fast.tiles) against the BLAS, one
thread, at the shapes the loops make: half a batch of the bench's S1–S4 against W_hhᵀ of an
LSTM (forward), the same against W_hh (BPTT), and x_t's product of fused inference; with
`--weight-gradients`, the end-to-end step's weight gradients instead (dW = dZᵀ·X over its
T·B = 4,096 rows, a thread's half: 2,048), where the tiles need dZᵀ laid out as rows first.

For each (rows, K, N): the best of many calls of tiles.product on the weight laid out once,
of NumPy's matmul (its OpenBLAS) and, with the `mkl` extra, of MKL's plain and packed sgemm;
µs, GFLOP/s and the ratio BLAS / tiles (above 1: the tiles are faster).

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE OPENBLAS_NUM_THREADS=1 \\
        RNNLAB_BLAS=mkl python bench/tile_speed.py [--dtype float64] [--weight-gradients]
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
# (name, K = T·B rows of a thread, 4H, the input's width): layer 2's W_ih (x = layer 1's
# 256 states) and either layer's W_hh
WEIGHT_GRADIENTS = [("e2e dW_ih", 2048, 1024, 256), ("e2e dW_hh", 2048, 1024, 256),
                    ("LSTM 512 dW", 2048, 2048, 512)]  # fmt: skip


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
    ap.add_argument("--weight-gradients", action="store_true",
                    help="time dZᵀ·X at the end-to-end step's shapes instead")  # fmt: skip
    args = ap.parse_args()
    dtype = np.dtype(args.dtype)
    cpu = _blaschoice.cpu()
    print(f"{cpu['vendor']} {cpu['model']} ({' '.join(cpu['flags'])}), {dtype}, one thread; "
          f"tiles of {tiles.MR} rows x {tiles.panel_width(dtype)} columns")  # fmt: skip
    mkl = _mkl.load() if _blaschoice.library_files() else None
    rng = np.random.default_rng(0)
    if args.weight_gradients:
        with _mkl.one_thread():
            weight_gradients(dtype, rng)
        return
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


def weight_gradients(dtype: np.dtype, rng: np.random.Generator) -> None:
    """dW (4H, I) = dZᵀ (4H, K)·X (K, I): OpenBLAS takes dZ as it lies (transposed); the tiles
    take rows of dZᵀ, which cost a transpose (kernels.transpose_into, blocked) and X's panels."""
    from rnnlab.fast import kernels

    for name, k, m, n in WEIGHT_GRADIENTS:
        dz = rng.standard_normal((k, m)).astype(dtype)
        x = rng.standard_normal((k, n)).astype(dtype)
        c, dzt = np.empty((m, n), dtype), np.empty((m, k), dtype)
        kernels.transpose_into(dz, dzt)
        panels = tiles.panels(x)
        product = best(partial(tiles.product, dzt, panels, c, False))
        layout = best(partial(kernels.transpose_into, dz, dzt)) + best(partial(tiles.panels, x))
        blas = best(partial(np.matmul, dz.T, x, out=c))
        flops = 2 * m * k * n
        print(f"{name:12s} ({m}x{k})·({k}x{n})  openblas {blas * 1e3:6.2f} ms "
              f"{flops / blas / 1e9:5.1f} GF/s  tiles {product * 1e3:6.2f} ms "
              f"{flops / product / 1e9:5.1f} GF/s + layout {layout * 1e3:5.2f} ms  "
              f"BLAS/(tiles+layout) {blas / (product + layout):.2f}")


if __name__ == "__main__":
    main()
