"""Which BLAS the compiled loops' per-step products call, chosen on this host by measurement.

MKL (the `mkl` extra) was 1.2–1.9x faster than NumPy's OpenBLAS at the loops' per-step
shapes on the Intel host it was first measured on; on an AMD EPYC with AVX-512, MKL runs its
AVX2 code and NumPy's OpenBLAS its AVX-512 kernel, and the same products ran at about half
the speed on MKL (issue #21). A vendor rule would be a guess, so the choice is a measurement:
at first use, a child process times both libraries on the products the loops make (one
thread per call, as rnnlab's threads call them) and the faster one is kept. The child keeps
MKL out of this process when MKL loses (MKL loaded into the global symbol scope changes
which BLAS a PyTorch imported later binds to; rnnlab._mkl).

The result is cached on disk (`cache_path()`, a file per key), keyed by what could change
it: the CPU model and its vector extensions, the versions of NumPy and MKL, the thread
count, and the environment variables that hold either library to another kernel
(OPENBLAS_CORETYPE, OPENBLAS_L2_SIZE, MKL_ENABLE_INSTRUCTIONS, MKL_CBWR, MKL_DEBUG_CPU_TYPE).
A cache that does not parse or holds another key is ignored with a warning and made again,
never trusted. RNNLAB_BLAS=mkl or numpy overrides the measurement; `rnnlab info` shows the
choice and why.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass

FORMAT = 1
SHAPES = ((16, 128, 512), (32, 256, 1024), (64, 512, 2048))
"""(rows, K, N) of the timed products: half a batch of 32, 64 or 128 rows against W_hhᵀ of
an LSTM with H = 128, 256, 512 — the per-step products of the bench's shapes."""
KERNEL_VARIABLES = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "MKL_ENABLE_INSTRUCTIONS",
                    "MKL_CBWR", "MKL_DEBUG_CPU_TYPE")  # fmt: skip
MARGIN = 0.97
"""MKL is chosen when its time is below MARGIN × OpenBLAS's (geometric mean over SHAPES):
a tie keeps one library in the process (NumPy's is loaded anyway)."""


@dataclass
class Choice:
    blas: str  # "mkl" or "numpy"
    why: str
    timings: dict | None = None  # {"mkl": [µs per shape], "numpy": [...]}, when measured
    cache: str | None = None  # the cache file read or written


def cache_path(want: dict | None = None) -> str:
    """RNNLAB_CACHE_DIR, else $XDG_CACHE_HOME/rnnlab, else ~/.cache/rnnlab; in it one file per
    key (a machine with two setups, e.g. with and without OPENBLAS_CORETYPE, keeps both)."""
    import hashlib

    folder = os.environ.get("RNNLAB_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
        "rnnlab",
    )
    want = key() if want is None else want
    digest = hashlib.sha256(json.dumps(want, sort_keys=True).encode()).hexdigest()[:16]
    return os.path.join(folder, f"blas-choice-{digest}.json")


def cpu() -> dict:
    """The first processor's vendor, model name, family and model number (/proc/cpuinfo),
    and the vector extensions that matter to the BLAS kernels."""
    info = {"vendor": None, "model": None, "family": None, "model_number": None, "flags": []}
    names = {"vendor_id": "vendor", "model name": "model", "cpu family": "family",
             "model": "model_number"}  # fmt: skip
    wanted = {"avx2", "fma", "avx512f", "avx512_bf16", "amx_tile"}
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if not line.strip():
                break  # the first processor is enough
            key, _, value = line.partition(":")
            key = key.strip()
            if key in names:
                info[names[key]] = value.strip()
            elif key == "flags":
                info["flags"] = sorted(wanted & set(value.split()))
    if info["model"] is None:
        import platform

        info["model"] = platform.processor() or platform.machine()
    return info


def version(package: str) -> str | None:
    """The installed distribution's version, or None."""
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def key() -> dict:
    """What the measurement depends on."""
    from rnnlab import parallel

    return {
        "format": FORMAT,
        "cpu": cpu(),
        "numpy": version("numpy"),
        "mkl": version("mkl"),
        "threads": parallel.num_threads(),
        "env": {k: os.environ[k] for k in KERNEL_VARIABLES if k in os.environ},
    }


def _read_cache(path: str, want: dict) -> Choice | None:
    """The cached choice for this key, or None (missing: silently; unreadable or for another
    key: with a warning)."""
    try:
        with open(path, "rb") as f:
            raw = f.read(1 << 16)
    except FileNotFoundError:
        return None
    except OSError as exc:
        warnings.warn(f"rnnlab: the BLAS choice cache {path!r} cannot be read ({exc}); "
                      "measuring again", stacklevel=3)  # fmt: skip
        return None
    try:
        data = json.loads(raw)
        if not isinstance(data, dict) or data.get("blas") not in ("mkl", "numpy"):
            raise ValueError("no choice in it")
        found_key = data.get("key")
        timings = data.get("timings")
    except ValueError as exc:
        warnings.warn(f"rnnlab: the BLAS choice cache {path!r} is corrupt ({exc}); "
                      "measuring again", stacklevel=3)  # fmt: skip
        return None
    if found_key != want:  # copied from elsewhere, or edited
        warnings.warn(f"rnnlab: the BLAS choice cache {path!r} holds the measurement of another "
                      "machine or setup; measuring again", stacklevel=3)  # fmt: skip
        return None
    return Choice(data["blas"], str(data.get("why", "measured")), timings, path)


def _write_cache(path: str, want: dict, choice: Choice) -> bool:
    """Atomically; False when the folder is not writable (the choice then holds for this
    process only)."""
    record = {"key": want, **asdict(choice), "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
    record.pop("cache", None)
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".blas-choice-")
        with os.fdopen(fd, "w") as f:
            json.dump(record, f, indent=1)
        os.replace(tmp, path)
        return True
    except OSError:
        with contextlib.suppress(OSError, UnboundLocalError):
            os.unlink(tmp)
        return False


def decide(timings: dict) -> Choice:
    """The faster library by the geometric mean of its times over SHAPES (MKL by MARGIN)."""
    import math

    def geomean(xs):
        return math.exp(sum(math.log(x) for x in xs) / len(xs))

    mkl, numpy = geomean(timings["mkl"]), geomean(timings["numpy"])
    ratio = numpy / mkl
    if mkl < MARGIN * numpy:
        return Choice("mkl", f"measured: MKL {ratio:.2f}x as fast as NumPy's OpenBLAS", timings)
    return Choice("numpy", f"measured: MKL {ratio:.2f}x as fast as NumPy's OpenBLAS "
                  f"(chosen only above {1 / MARGIN:.2f}x)", timings)  # fmt: skip


def _measure_in_child(timeout: float = 60.0) -> dict:
    """Run `measure` in a fresh process (one thread for each library) and return its
    timings; raises RuntimeError with the child's last words if it fails."""
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", RNNLAB_BLAS="mkl")
    try:
        done = subprocess.run([sys.executable, "-m", "rnnlab._blaschoice"], env=env,
                              capture_output=True, text=True, timeout=timeout)  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RuntimeError(str(exc)) from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise RuntimeError(last)
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(repeats: int = 15) -> dict:
    """µs per product (best of `repeats` after a warm-up) for each of SHAPES, float32, with
    MKL on one thread (the faster of its plain and its packed product: the loops pack the
    weights where that pays, rnnlab.fast.packs) and NumPy's matmul (run this with
    OPENBLAS_NUM_THREADS=1)."""
    import numpy as np

    from rnnlab import _mkl

    mkl = _mkl.load()
    if mkl is None:
        raise RuntimeError("MKL does not load")
    rng = np.random.default_rng(0)
    out: dict[str, list[float]] = {"mkl": [], "numpy": []}
    for m, k, n in SHAPES:
        a = rng.standard_normal((m, k)).astype(np.float32)
        b = rng.standard_normal((k, n)).astype(np.float32)
        c = np.empty((m, n), np.float32)
        packed = mkl.pack(b, rows=m)
        runs = {"mkl": functools.partial(mkl.gemm, a, b, c),
                "mkl-packed": functools.partial(mkl.gemm_packed, a, packed, c),
                "numpy": functools.partial(np.matmul, a, b, out=c)}  # fmt: skip
        best = {name: float("inf") for name in runs}
        with _mkl.one_thread():
            for fn in runs.values():
                fn()
            for _ in range(repeats):  # alternating, so a neighbour's burst hits both alike
                for name, fn in runs.items():
                    t0 = time.perf_counter()
                    fn()
                    best[name] = min(best[name], time.perf_counter() - t0)
        out["mkl"].append(min(best["mkl"], best["mkl-packed"]) * 1e6)
        out["numpy"].append(best["numpy"] * 1e6)
    return out


@functools.cache
def choice() -> Choice:
    """The BLAS for this process: RNNLAB_BLAS if it names one, NumPy's where MKL is not
    installed, else the cached or a fresh measurement."""
    from rnnlab import _mkl

    asked = os.environ.get("RNNLAB_BLAS", "auto").strip().lower()
    if asked in ("mkl", "numpy"):
        return Choice(asked, f"RNNLAB_BLAS={asked}")
    if asked not in ("", "auto"):
        from rnnlab import _checks

        _checks.fail("RNNLAB_BLAS", "'auto', 'mkl' or 'numpy'", repr(asked))
    if not _mkl.library_files():
        return Choice("numpy", "the `mkl` package is not installed")
    want = key()
    path = cache_path(want)
    cached = _read_cache(path, want)
    if cached is not None:
        return cached
    try:
        made = decide(_measure_in_child())
    except (RuntimeError, ValueError, KeyError) as exc:
        warnings.warn(f"rnnlab: could not time MKL against NumPy's OpenBLAS ({exc}); using "
                      "MKL, as installed", stacklevel=2)  # fmt: skip
        return Choice("mkl", f"installed; the measurement failed: {exc}")
    if _write_cache(path, want, made):
        made.cache = path
    return made


if __name__ == "__main__":  # the child of _measure_in_child
    print(json.dumps(measure()))
