"""The machine under the benchmark: its CPU, the BLAS libraries and rnnlab's loops in use, the
float32 GEMM peak measured at start-up, and whether the environment forces a BLAS kernel.

Ratios carry over between machines, milliseconds do not: every report says which machine,
libraries and kernels produced it, and what fraction of this machine's own GEMM speed the
products reached.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from types import ModuleType
from typing import Any

import numpy as np

from rnnlab import _blaschoice
from rnnlab.bench import environment
from rnnlab.bench.timing import PAUSE_S, call_seconds

GEMM_N = 2048


def gemm_gflops(matmul: Callable[[], Any], n: int, repeats: int = 5) -> float:
    """GFLOP/s of the best of `repeats` (n×n)·(n×n) products after one warm-up: 2n³ / t."""
    matmul()
    best = min(call_seconds(matmul) for _ in range(repeats))
    return 2.0 * n**3 / best / 1e9


def measured_peaks(
    torch: ModuleType, n: int = GEMM_N, pause_s: float = PAUSE_S
) -> dict[str, float]:
    """float32 GEMM speed of numpy's BLAS, of torch's and, where rnnlab's products run on it
    (the `mkl` extra, chosen by `rnnlab info`'s measurement), of the `mkl` package's: the
    machine's peak is the fastest of them, so a library rnnlab runs on is never left out."""
    from rnnlab import _mkl

    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    c = np.empty((n, n), np.float32)
    numpy_peak = gemm_gflops(lambda: np.matmul(a, b, out=c), n)
    time.sleep(pause_s)
    at, bt, ct = torch.from_numpy(a), torch.from_numpy(b), torch.empty(n, n)
    torch_peak = gemm_gflops(lambda: torch.mm(at, bt, out=ct), n)
    time.sleep(pause_s)
    peaks = {"numpy": numpy_peak, "torch": torch_peak}
    mkl = _mkl.load() or _mkl.load(large=True)
    if mkl is not None:  # (its own threads: all of the process's, as rnnlab's large products)
        peaks["mkl"] = gemm_gflops(lambda: mkl.gemm(a, b, c), n)
        time.sleep(pause_s)
    return peaks


UNFORCED_CHILD = """
import json, sys
import torch
from rnnlab.bench import host
torch.set_num_threads(int(sys.argv[2]))
print(json.dumps(host.measured_peaks(torch, int(sys.argv[1]), 0.0)))
"""
"""The child of `unforced_peaks`: the GEMM speeds, as measured_peaks takes them here."""


def warn_unequal_threads(torch: ModuleType, log: Callable[[str], None]) -> bool:
    """Say when PyTorch and rnnlab would run on different numbers of threads (OMP_NUM_THREADS
    or MKL_NUM_THREADS hold PyTorch to 1, RNNLAB_NUM_THREADS rnnlab): the ratios then compare
    a library on one core with one on two, and the GEMM peak is measured at PyTorch's
    count. True when they differ."""
    from rnnlab.fast import parallel

    mine, theirs = parallel.num_threads(), torch.get_num_threads()
    if mine == theirs:
        return False
    log(f"warning: PyTorch runs on {theirs} thread(s) and rnnlab on {mine}: the ratios compare "
        "unequal shares of the machine (OMP_NUM_THREADS, MKL_NUM_THREADS and "
        "RNNLAB_NUM_THREADS set them); unset them or set them alike for a benchmark")
    return True


def unforced_peaks(n: int = GEMM_N, torch_threads: int = 1) -> dict[str, float] | None:
    """NumPy's and PyTorch's float32 GEMM speeds (PyTorch's at `torch_threads`, as in the run)
    in a child process without the environment variables that hold a BLAS to another kernel
    (rnnlab.info.FORCING), when any is set here; else None, or {} if the child fails. The
    machine's peak is its fastest kernel's, not the one this environment forces: an MKL_*
    variable slows PyTorch's MKL, not NumPy's OpenBLAS, so both are measured."""
    if not environment.forced_kernels():
        return None
    env = environment.without_forcing()
    try:
        done = subprocess.run(
            [sys.executable, "-c", UNFORCED_CHILD, str(n), str(torch_threads)],
            env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        found = json.loads(done.stdout.strip().splitlines()[-1])
    except (OSError, ValueError, IndexError, subprocess.TimeoutExpired):
        return {}
    return {k: float(v) for k, v in found.items() if k in ("numpy", "torch")}


def _cpuinfo() -> dict[str, Any]:
    info: dict[str, Any] = {
        "model": _blaschoice.cpu()["model"],  # (ARM's cpuinfo has no model name)
        "mhz": None,
        "flags": [],
    }
    with contextlib.suppress(OSError), open(_blaschoice.CPUINFO) as f:
        for line in f:
            key, _, value = line.partition(":")
            key, value = key.strip(), value.strip()
            if key == "model name":
                info["model"] = value
            elif key == "cpu MHz" and info["mhz"] is None:
                info["mhz"] = float(value)
            elif key == "flags" and not info["flags"]:
                info["flags"] = value.split()
    return info


def fma_peak(cpu: dict[str, Any], cores: int) -> dict[str, Any] | None:
    """The FMA-throughput notion of peak, for context only: it assumes 2 FMA ports per core
    and the nominal clock of /proc/cpuinfo (turbo clocks run higher, AVX-512 ones lower)."""
    flags = set(cpu["flags"])
    lanes = 16 if "avx512f" in flags else 8 if {"avx2", "fma"} <= flags else None
    if lanes is None or not cpu["mhz"]:
        return None
    gflops = cores * 2 * lanes * 2 * cpu["mhz"] / 1e3
    return {
        "gflops": gflops,
        "assumes": f"{cores} cores x 2 FMA ports x {lanes} float32 lanes "
        f"x 2 flop x {cpu['mhz']:.0f} MHz (nominal)",
    }


def _version(package: str) -> str | None:
    from rnnlab._blaschoice import version

    return version(package)


def _blas_info() -> Any:
    """The BLAS libraries loaded in this process (threadpoolctl), or numpy's build config."""
    try:
        import threadpoolctl
    except ImportError:
        config = np.show_config(mode="dicts")
        return {"numpy_build": config.get("Build Dependencies", {}).get("blas")}
    keep = (
        "user_api",
        "internal_api",
        "prefix",
        "version",
        "num_threads",
        "threading_layer",
        "architecture",
        "filepath",
    )
    return [{k: lib.get(k) for k in keep} for lib in threadpoolctl.threadpool_info()]


def fast_path_active() -> bool:
    """Whether rnnlab's compiled time loop (the `fast` extra) runs, else the NumPy loop."""
    try:
        from rnnlab import fast
    except ImportError:
        return False
    return bool(fast.available())


def loop_setup() -> dict[str, Any]:
    """How rnnlab's loops run here: the BLAS of their per-step products, whether rnnlab's own
    kernel (the tiles) takes them where a weight fits, the BLAS of the large products outside
    the loops, and the threads (and how long a worker waits busily for its next part)."""
    from rnnlab.fast import parallel

    setup: dict[str, Any] = {"threads": parallel.num_threads(), "split": parallel.enabled(),
                             "spin_seconds": parallel.spin_seconds()}  # fmt: skip
    if fast_path_active():
        from rnnlab import fast
        from rnnlab.fast import blas

        setup["kernel_blas"] = blas.NAME
        setup["tiles"] = fast.tiles_on()
        setup["large_blas"] = {"mkl": "MKL", "numpy": "NumPy's OpenBLAS"}.get(
            _blaschoice.choice().large, "NumPy's OpenBLAS")
    return setup


def source_commit() -> dict[str, Any] | None:
    """The git commit rnnlab's source was run from, and whether tracked files differ from it
    ({"commit": 40 hex digits, "modified": bool}), or None when rnnlab does not run from a
    git checkout (an installed wheel, no git). The version string stays 0.1.0 from commit to
    commit, so without this a result names no code: only its file name did, by hand. A
    package installed into a virtual environment inside a checkout is not that checkout's
    code: the package's own __init__.py must be a file git tracks."""
    import rnnlab

    init = os.path.realpath(rnnlab.__file__)
    where = os.path.dirname(init)

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", where, *args], capture_output=True, text=True,
                                  timeout=30)  # fmt: skip
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    if git("ls-files", "--error-unmatch", init) is None:
        return None
    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    if commit is None or status is None:
        return None
    return {"commit": commit, "modified": bool(status)}


def machine_info(torch: ModuleType) -> dict[str, Any]:
    cpu = _cpuinfo()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    interesting = {"avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16", "amx_tile"}
    env = environment.recorded()
    choice = _blaschoice.choice()
    ids = _blaschoice.cpu()
    return {
        "cpu_vendor": ids["vendor"],
        "cpu_model": cpu["model"],
        "cpu_family": ids["family"],  # with the model number: which generation ("AMD EPYC"
        "cpu_model_number": ids["model_number"],  # alone is any of them under a hypervisor)
        "loops_blas_choice": {"blas": choice.blas, "why": choice.why, "tiles": choice.tiles,
                              "tiles_why": choice.tiles_why, "large": choice.large,
                              "large_why": choice.large_why},
        "cpu_mhz_nominal": cpu["mhz"],
        "cpu_flags": sorted(interesting & set(cpu["flags"])),
        "cores": cores,
        "logical_cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch.__version__,
        "numba": _version("numba"),
        "onnxruntime": _version("onnxruntime"),
        "scipy": _version("scipy"),
        "rnnlab": _version("rnnlab"),
        "rnnlab_source": source_commit(),
        "rnnlab_fast_path": fast_path_active(),
        "rnnlab_loops": loop_setup(),
        "mkl": _version("mkl"),
        "torch_threads": torch.get_num_threads(),
        "torch_mkldnn": bool(torch.backends.mkldnn.is_available()),
        "blas": _blas_info(),
        "env": env,
        "fma_peak": fma_peak(cpu, cores or 1),
    }
