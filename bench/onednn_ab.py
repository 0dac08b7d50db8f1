"""A/B in one process: rnnlab's large products (input projections, weight gradients, ∂L/∂x)
on NumPy's own CBLAS (OpenBLAS) against oneDNN's `dnnl_sgemm`, one of the levers issue #21
names. rnnlab does not use oneDNN; this script measures what it would gain.

oneDNN comes from the `onednn-cpu-gomp` wheel (oneDNN 3.2, its last CPU-only build on
PyPI; the current `onednn` wheel needs the SYCL, TBB and Intel compiler runtimes), unpacked:

    pip download --no-deps -d /tmp/w onednn-cpu-gomp==2023.2.0
    unzip -q -o /tmp/w/onednn_cpu_gomp-*.whl -d /tmp/onednn
    LIB=/tmp/onednn/onednn_cpu_gomp-2023.2.0.data/data/lib/libdnnl.so.3

Two measurements:
- `gemm`: one thread, C = A·B and C = Aᵀ·B at the large products' shapes, GFLOP/s of each;
- `steps`: rnnlab's LSTM training step (the bench's, at the shapes and layouts asked for) and
  the end-to-end character model's step, each round timing both variants, medians over the
  rounds. The variants switch inside the process (`_gemm_into` and the CBLAS table of
  rnnlab.fast.parallel), and the step's outputs and gradients are compared first.

PyTorch is not imported: its wheel carries its own libgomp.so.1, which oneDNN would then
share, and the omp_set_num_threads(1) each of rnnlab's threads needs (else every call starts
an OpenMP team of its own inside rnnlab's split) would change PyTorch's threads too.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/onednn_ab.py --lib $LIB gemm
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/onednn_ab.py --lib $LIB steps \\
        [--shapes S2,S3] [--layouts uni,bi,2-layer] [--rounds 10] [--no-end-to-end]
"""

from __future__ import annotations

import argparse
import ctypes
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from rnnlab import _mkl
from rnnlab.bench import configs, end_to_end, runners, timing
from rnnlab.fast import parallel

GEMM_SHAPES = (  # (M, K, N): the S2 weight gradients, the end-to-end model's, square ones
    (512, 1600, 192),
    (1024, 2048, 320),
    (1024, 2048, 512),
    (1024, 1024, 1024),
    (2048, 2048, 2048),
)


def _load(path: str) -> tuple[Callable[..., int], Callable[[int], None]]:
    try:
        lib = ctypes.CDLL(path)
        gemm = lib.dnnl_sgemm
        omp_threads = ctypes.CDLL("libgomp.so.1").omp_set_num_threads
    except (OSError, AttributeError) as e:
        raise SystemExit(f"--lib {path}: not a oneDNN library with dnnl_sgemm ({e})") from e
    i64, ptr, f32, char = ctypes.c_int64, ctypes.c_void_p, ctypes.c_float, ctypes.c_char
    gemm.argtypes = [char, char, i64, i64, i64, f32, ptr, i64, ptr, i64, f32, ptr, i64]
    gemm.restype = ctypes.c_int
    omp_threads.argtypes = [ctypes.c_int]
    return gemm, omp_threads


def _cblas_on(gemm: Callable[..., int], omp_threads: Callable[[int], None]) -> Callable[..., None]:
    """dnnl_sgemm behind the row-major CBLAS signature rnnlab.fast.parallel calls."""
    flag = {_mkl.NO_TRANS: b"N", _mkl.TRANS: b"T"}

    def cblas(order, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc) -> None:  # noqa: ANN001
        omp_threads(1)  # per thread: rnnlab splits the work itself
        status = gemm(flag[ta], flag[tb], m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
        if status != 0:
            raise RuntimeError(f"dnnl_sgemm returned status {status}")

    return cblas


def _best_and_median(fn: Callable[[], object], calls: int) -> tuple[float, float]:
    fn()
    times = [timing.call_seconds(fn) for _ in range(calls)]
    return min(times), statistics.median(times)


def _gemm_shape(gemm: Callable[..., int], M: int, K: int, N: int) -> None:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((K, M)).astype(np.float32)  # Aᵀ where it lies: (K, M)
    an = np.ascontiguousarray(a.T)
    b = rng.standard_normal((K, N)).astype(np.float32)
    c1, c2 = np.empty((M, N), np.float32), np.empty((M, N), np.float32)
    calls = 9 if M * N * K > 4e9 else 31
    runs = {
        "A·B OpenBLAS": lambda: np.matmul(an, b, out=c1),
        "A·B oneDNN": lambda: gemm(b"N", b"N", M, N, K, 1.0, an.ctypes.data, K, b.ctypes.data,
                                   N, 0.0, c2.ctypes.data, N),
        "Aᵀ·B OpenBLAS": lambda: np.matmul(a.T, b, out=c1),
        "Aᵀ·B oneDNN": lambda: gemm(b"T", b"N", M, N, K, 1.0, a.ctypes.data, M, b.ctypes.data,
                                    N, 0.0, c2.ctypes.data, N),
    }  # fmt: skip
    for name, fn in runs.items():
        best, median = _best_and_median(fn, calls)
        print(f"{M} x {K} x {N}  {name:14s} best {best * 1e3:8.3f} ms  median "
              f"{median * 1e3:8.3f} ms  {2 * M * N * K / best / 1e9:5.0f} GFLOP/s",
              flush=True)  # fmt: skip
    err = float(np.abs(c1 - c2).max() / np.abs(c1).max())
    print(f"{M} x {K} x {N}  largest difference {err:.1e} (relative)")


def gemm_table(gemm: Callable[..., int], omp_threads: Callable[[int], None]) -> None:
    omp_threads(1)
    with threadpool_limits(1):
        for M, K, N in GEMM_SHAPES:
            _gemm_shape(gemm, M, K, N)


def steps(gemm, omp_threads, shapes: list[str], layouts: list[str], rounds: int,
          whole: bool) -> None:  # fmt: skip
    numpy_gemms, gemm_into = parallel._numpy_gemms, parallel._gemm_into
    ours = _cblas_on(gemm, omp_threads)
    with_onednn = {**numpy_gemms(), np.dtype(np.float32): ours}

    def use(onednn: bool) -> None:
        if onednn:
            parallel._numpy_gemms = lambda: with_onednn
            parallel._gemm_into = lambda a, b, out: parallel._gemm_acc(a, b, out, 0.0)
        else:
            parallel._numpy_gemms, parallel._gemm_into = numpy_gemms, gemm_into

    items: list[tuple[str, Callable[[], object], int]] = []
    for shape in shapes:
        for layout in layouts:
            config = configs.Config("lstm", shape, layout == "bi", 2 if layout == "2-layer" else 1)
            step = runners.rnnlab_step(runners.make_pair(None, config), "train")
            results = []
            for onednn in (False, True):
                use(onednn)
                out, grads = step()
                results.append([out.copy(), *(g.copy() for g in grads.values())])
            use(False)
            differ = max(float(np.abs(x - y).max() / max(np.abs(x).max(), 1e-30))
                         for x, y in zip(*results, strict=True))  # fmt: skip
            if differ > 1e-4:
                raise SystemExit(f"lstm {shape} {layout}: the variants differ by {differ:.1e}")
            items.append((f"lstm {shape} {layout} training (differ {differ:.0e})", step,
                          3 if shape in ("S1", "S2") else 1))  # fmt: skip
    if whole:
        trainer = end_to_end.rnnlab_trainer(end_to_end.Model(), Path(tempfile.mkdtemp()), 400)
        loss_step = end_to_end._loss_step(trainer)
        counter = iter(range(10**9))
        items.append(("end to end, one step", lambda: loss_step(next(counter)), 2))
    for label, fn, calls in items:
        fn()
        times: dict[str, list[float]] = {"OpenBLAS": [], "oneDNN": []}
        for _ in range(rounds):
            for name in times:
                use(name == "oneDNN")
                t0 = time.perf_counter()
                for _ in range(calls):
                    fn()
                times[name].append((time.perf_counter() - t0) / calls)
            time.sleep(0.05)
        use(False)
        a, b = (statistics.median(v) * 1e3 for v in times.values())
        print(f"{label}: OpenBLAS {a:.2f} ms, oneDNN {b:.2f} ms ({a / b:.3f}x)", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["gemm", "steps"])
    ap.add_argument("--lib", required=True, help="path to oneDNN's libdnnl.so.3")
    ap.add_argument("--shapes", default="S2,S3")
    ap.add_argument("--layouts", default="uni")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--no-end-to-end", action="store_true")
    a = ap.parse_args()
    if _mkl.load(large=True) is not None:
        raise SystemExit("the mkl extra is installed: the large products would not be OpenBLAS's")
    gemm, omp_threads = _load(a.lib)
    if a.what == "gemm":
        gemm_table(gemm, omp_threads)
    else:
        layouts = [x for x in a.layouts.split(",") if x]
        steps(gemm, omp_threads, a.shapes.split(","), layouts, a.rounds, not a.no_end_to_end)


if __name__ == "__main__":
    main()
