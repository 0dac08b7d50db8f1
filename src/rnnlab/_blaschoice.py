"""The BLAS libraries found here (MKL's, NumPy's OpenBLAS) and which of them the compiled
loops' per-step products call, chosen on this host by measurement.

MKL (the `mkl` extra) was 1.2–1.9x faster than NumPy's OpenBLAS at the loops' per-step
shapes on the Intel host it was first measured on; on an AMD EPYC with AVX-512, MKL runs its
AVX2 code and NumPy's OpenBLAS its AVX-512 kernel, and the same products ran at about half
the speed on MKL (issue #21). A vendor rule would be a guess, so the choice is a measurement:
at first use, a child process times both libraries on the products the loops make (one
thread per call, as rnnlab's threads call them: rnnlab.fast.calibration) and the faster one
is kept. The child keeps MKL out of this process when MKL loses (MKL loaded into the global
symbol scope changes which BLAS a PyTorch imported later binds to; rnnlab._mkl).

The products outside the loops (the hoisted input projection, the weight gradients, dX: many
rows, one call each) have a library of their own, measured on such products (`Choice.large`):
on an AMD EPYC with AVX-512 (Zen 4) MKL was 1.05-1.10x as fast as OpenBLAS at the loops'
shapes and 0.94x at these.

The same child times rnnlab's own kernel for those products (rnnlab.fast.tiles: the weight
laid out once, each step's product as register tiles), and the loops use it where it is
faster than the chosen library by the same margin (`Choice.tiles`). It needs numba only, so
it is measured where MKL is not installed too.

The result is cached on disk (`cache_path()`, a file per key), keyed by what could change
it: the CPU model (on ARM its implementer and part) and its vector extensions, the versions
of NumPy, numba and MKL, the thread count, whether the tiles could be timed (numba there and
not turned off), RNNLAB_PACKED, and the environment variables that hold either library to
another kernel (OPENBLAS_CORETYPE, OPENBLAS_L2_SIZE, MKL_ENABLE_INSTRUCTIONS, MKL_CBWR,
MKL_DEBUG_CPU_TYPE; set to a value). A cache that does not parse or holds another key is
ignored with a warning and made again, never trusted; one that cannot be written is warned
about (the choice is then measured in every process). Processes that start at once on a fresh
machine measure one at a time (a lock beside the cache): one measures, the others read.
RNNLAB_BLAS=mkl or numpy and RNNLAB_TILES=on or off override the measurement (with both set,
nothing is measured; RNNLAB_BLAS=mkl without the mkl package is an error); `rnnlab info`
shows the choice and why.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import glob
import importlib.metadata
import json
import os
import stat
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np

from rnnlab import _checks, settings

if TYPE_CHECKING:
    from _ctypes import CFuncPtr

FORMAT = 6  # 2: the tiles' timings and choice; 3: the large products' timings; 4: the key
# holds whether the tiles could be timed and RNNLAB_PACKED, and MKL's time is packed only
# where the loops pack; 5: BPTT's products on W_hh where it lies (IN_PLACE_SHAPES); 6: the
# per-step products timed from compiled code (a cache of 5 held each library's call overhead)
SHAPES = ((16, 128, 512), (32, 256, 1024), (64, 512, 2048))
"""(rows, K, N) of the timed products: half a batch of 32, 64 or 128 rows against W_hhᵀ of
an LSTM with H = 128, 256, 512 — the per-step products of the bench's shapes."""
LARGE_SHAPES = ((1600, 64, 512, False), (512, 1600, 128, True))
"""(rows, K, N, A transposed) of the timed large products, made outside the time loop on one
thread's share of the rows: half the hoisted input projection X·W_ihᵀ of an LSTM (B·T = 3200,
I = 64, H = 128), and half of its weight gradient dAᵀ·H_prev (A = dAᵀ, a transposed view)."""
IN_PLACE_SHAPES = ((16, 512, 128), (32, 1024, 256), (64, 2048, 512))
"""(rows, K, N) of BPTT's per-step products on W_hh as it lies (C-contiguous, K = 4H, N = H):
half a batch of 32, 64 or 128 rows against an LSTM's W_hh with H = 128, 256, 512."""
IN_PLACE_MARGIN = 1.15
"""BPTT takes a large W_hh (fast.MIN_TILED_IN_PLACE values and up) on the tiles, at the cost of
a copy into their panels, for loops of as many rows a thread as the tiles beat the chosen
library by this factor at IN_PLACE_SHAPES (`Choice.tiles_in_place_rows`: the most rows up to
which every timed shape did). Their lead shrinks with the rows, where the BLAS's per-call work
is spread over more of them: on an AMD EPYC with AVX2, against OpenBLAS, 1.61x at 16 rows,
1.24x at 32, 1.04x at 64, and the character LM's training step (16 rows a thread) 7 % shorter
on them; on one with AVX-512 1.35x against MKL at 64 rows, and an LSTM's training step at H =
256 and 512 7-14 % shorter (bench/README.md, "BPTT's weights by the rows a thread")."""
KERNEL_VARIABLES = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "MKL_ENABLE_INSTRUCTIONS",
                    "MKL_CBWR", "MKL_DEBUG_CPU_TYPE")  # fmt: skip
MAX_TIMING_US = 1e7
"""No product of SHAPES or LARGE_SHAPES takes 10 s: a cached timing from there up (or NaN, or
infinity) is not a measurement."""
MEASURE_TIMEOUT = 60.0
"""Seconds the measuring child may take before it is given up (the choice falls back)."""
LOCK_WAIT = MEASURE_TIMEOUT + 30.0
"""Seconds a process waits for another's measurement (the lock beside the cache) before it
measures on its own: the holder is done within MEASURE_TIMEOUT unless it is not running at
all (stopped with Ctrl-Z, held in a debugger), and then the wait would have no end."""
MARGIN = 0.97
"""MKL is chosen when its time is below MARGIN × OpenBLAS's (geometric mean over SHAPES):
a tie keeps one library in the process (NumPy's is loaded anyway). The same margin holds
for rnnlab's tiles against the chosen library: a tie keeps the BLAS."""


@dataclass
class Choice:
    blas: str  # "mkl" or "numpy"
    why: str
    timings: dict | None = None  # {"mkl": [µs per shape], "numpy": [...], "tiles": [...]}
    cache: str | None = None  # the cache file read or written
    cache_error: str = ""  # why a measurement could not be cached (then made in every process)
    tiles: bool = False  # the per-step products on rnnlab.fast.tiles where a weight fits
    tiles_why: str = ""
    large: str = ""  # the library of the products outside the loops: "mkl" or "numpy"
    large_why: str = ""
    tiles_in_place_rows: int = 0  # BPTT's large W_hh on the tiles up to this many rows a thread


def library_files() -> list[str]:
    """Where the `mkl` wheel puts Intel's single dynamic library (the environment's lib/)."""
    found: list[str] = []
    for prefix in dict.fromkeys((sys.prefix, sys.base_prefix)):
        found += sorted(glob.glob(os.path.join(prefix, "lib", "libmkl_rt.so*")))
        found += sorted(glob.glob(os.path.join(prefix, "Library", "bin", "mkl_rt*.dll")))
    return found


def numpy_blas_files() -> list[str]:
    """The OpenBLAS libraries bundled with NumPy's wheels (numpy.libs/ or .dylibs/)."""
    root = os.path.dirname(np.__file__)
    found: list[str] = []
    for folder in (os.path.join(root, os.pardir, "numpy.libs"), os.path.join(root, ".dylibs")):
        found += sorted(glob.glob(os.path.join(folder, "*openblas*")))
    return found


CBLAS_GEMM_NAMES = (
    ("scipy_cblas_sgemm64_", "scipy_cblas_dgemm64_"),
    ("cblas_sgemm64_", "cblas_dgemm64_"),
)
"""NumPy's bundled (ILP64) cblas_sgemm and cblas_dgemm, by the names NumPy ≥ 2.0 and the
wheels before it give them."""


def cblas_gemm_type(real: type) -> type:
    """The ctypes prototype of an ILP64 cblas_?gemm: (layout, transA, transB, M, N, K, alpha,
    A, lda, B, ldb, beta, C, ldc)."""
    i32, i64, ptr = ctypes.c_int, ctypes.c_int64, ctypes.c_void_p
    proto: type = ctypes.CFUNCTYPE(
        None, i32, i32, i32, i64, i64, i64, real, ptr, i64, ptr, i64, real, ptr, i64
    )
    return proto


def numpy_blas_symbols(
    candidates: tuple[tuple[str, str], ...],
) -> tuple[CFuncPtr, CFuncPtr] | None:
    """The first pair of `candidates` whose two symbols NumPy's OpenBLAS exports, as ctypes
    functions of the library NumPy already loaded (the same handle, the same thread pool)."""
    for path in numpy_blas_files():
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for first, second in candidates:
            if hasattr(lib, first) and hasattr(lib, second):
                return getattr(lib, first), getattr(lib, second)
    return None


def cache_path(want: dict | None = None) -> str:
    """In settings.current().cache_dir (RNNLAB_CACHE_DIR, else $XDG_CACHE_HOME/rnnlab, else
    ~/.cache/rnnlab), one file per key (a machine with two setups, e.g. with and without
    OPENBLAS_CORETYPE, keeps both)."""
    import hashlib

    folder = settings.current().cache_dir
    want = key() if want is None else want
    digest = hashlib.sha256(json.dumps(want, sort_keys=True).encode()).hexdigest()[:16]
    return os.path.join(folder, f"blas-choice-{digest}.json")


CPUINFO = "/proc/cpuinfo"
ARM_IMPLEMENTERS = {"0x41": "Arm", "0x42": "Broadcom", "0x43": "Cavium", "0x46": "Fujitsu",
                    "0x48": "HiSilicon", "0x4e": "NVIDIA", "0x51": "Qualcomm", "0x61": "Apple",
                    "0xc0": "Ampere"}  # fmt: skip
"""The `CPU implementer` codes of /proc/cpuinfo on ARM (Arm's Architecture Reference Manual)."""


def cpu() -> dict:
    """The first processor's vendor, model name, family and model number (/proc/cpuinfo),
    and the vector extensions that matter to the BLAS kernels. On ARM, where cpuinfo has no
    model name, the implementer and part codes stand for them (an aarch64 host is otherwise
    indistinguishable from any other, and its cache and its benchmark would not name it)."""
    info: dict[str, object] = {"vendor": None, "model": None, "family": None,
                               "model_number": None, "flags": []}  # fmt: skip
    names = {"vendor_id": "vendor", "model name": "model", "cpu family": "family",
             "model": "model_number", "CPU implementer": "vendor", "CPU architecture": "family",
             "CPU part": "model_number"}  # fmt: skip
    wanted = {"avx2", "fma", "avx512f", "avx512_bf16", "amx_tile",  # x86
              "asimd", "sve", "sve2", "bf16", "i8mm"}  # ARM  # fmt: skip
    with contextlib.suppress(OSError), open(CPUINFO) as f:
        for line in f:
            if not line.strip():
                if info["vendor"] is None and info["model"] is None:
                    continue  # (a header block before the first processor's)
                break  # the first processor is enough
            key, _, value = line.partition(":")
            key = key.strip()
            if key in names:
                info[names[key]] = value.strip()
            elif key in ("flags", "Features"):
                info["flags"] = sorted(wanted & set(value.split()))
    if info["model"] is None and info["model_number"] is not None:  # ARM
        vendor = str(info["vendor"])
        info["vendor"] = ARM_IMPLEMENTERS.get(vendor.lower(), vendor)
        info["model"] = f"{info['vendor']} CPU part {info['model_number']}"
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
    return {
        "format": FORMAT,
        "cpu": cpu(),
        "numpy": version("numpy"),
        "numba": version("numba"),
        "mkl": version("mkl"),
        "threads": settings.current().threads,
        "env": forcing(),
        # a measurement made where the tiles could not run (numba missing or turned off)
        # says nothing about them; MKL's time counts its packed product only where allowed
        "tiles_measurable": tiles_measurable(),
        "packed": settings.current().packed,
    }


def forcing() -> dict[str, str]:
    """The variables of KERNEL_VARIABLES set here to a value (an empty one forces nothing)."""
    return {k: os.environ[k] for k in KERNEL_VARIABLES if os.environ.get(k, "").strip()}


def _read_cache(path: str, want: dict) -> Choice | None:
    """The cached choice for this key, or None (missing: silently; unreadable or for another
    key: with a warning)."""
    try:  # (without blocking: a FIFO there waited for a writer, and the first forward with it)
        with _checks.open_file(path) as f:
            raw = f.read(1 << 16)
    except (FileNotFoundError, NotADirectoryError):  # not there (the write says if it can't be)
        return None
    except _checks.NotRegularFile as exc:
        warnings.warn(f"rnnlab: the BLAS choice cache {path!r} is not a regular file "
                      f"({exc.kind}); measuring again", stacklevel=3)  # fmt: skip
        return None
    except OSError as exc:
        warnings.warn(f"rnnlab: the BLAS choice cache {path!r} cannot be read ({exc}); "
                      "measuring again", stacklevel=3)  # fmt: skip
        return None
    try:
        data = json.loads(raw)
        if not isinstance(data, dict) or not _timings_ok(data.get("timings")):
            raise ValueError("no timings in it")
        found_key = data.get("key")
        timings = data["timings"]
    except (ValueError, RecursionError) as exc:  # (a deeply nested file: RecursionError)
        warnings.warn(f"rnnlab: the BLAS choice cache {path!r} is corrupt ({exc}); "
                      "measuring again", stacklevel=3)  # fmt: skip
        return None
    if found_key != want:  # copied from elsewhere, or edited
        warnings.warn(f"rnnlab: the BLAS choice cache {path!r} holds the measurement of another "
                      "machine or setup; measuring again", stacklevel=3)  # fmt: skip
        return None
    made = decide(timings)
    made.cache = path
    return made


def _timings_ok(timings: object) -> bool:
    """Timings as `measure` makes them: NumPy's, and MKL's and the tiles' where measured,
    each a finite number of µs above 0 and under MAX_TIMING_US for every shape (not a JSON
    true, which Python reads as the number 1)."""
    return (
        isinstance(timings, dict)
        and "numpy" in timings
        and set(timings) <= {lib + suffix for lib in ("mkl", "numpy", "tiles")
                             for suffix in ("", " large", " in place")} - {"tiles large"}
        and all(isinstance(ts, list) and len(ts) == len(_shapes_of(name))
                and all(type(t) in (int, float) and 0 < t < MAX_TIMING_US for t in ts)
                for name, ts in timings.items())
    )  # fmt: skip


def _shapes_of(timings_name: str) -> tuple[tuple[int, ...], ...]:
    """The shapes a list of timings was measured at, by its name's suffix."""
    if timings_name.endswith(" large"):
        return LARGE_SHAPES
    return IN_PLACE_SHAPES if timings_name.endswith(" in place") else SHAPES


def _write_cache(path: str, want: dict, choice: Choice) -> str:
    """Atomically (a reader sees the old file or the new one, never half of one), readable by
    whoever may read the folder (the umask's mode, as open() would make it, not mkstemp's
    0600: a cache folder shared by users or made while building an image); "" once written,
    else why not (the choice then holds for this process only)."""
    record = {"key": want, **asdict(choice), "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
    record.pop("cache", None)
    record.pop("cache_error", None)
    tmp = None
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".blas-choice-")
        with os.fdopen(fd, "w") as f:
            json.dump(record, f, indent=1)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
        tmp = None
        return ""
    except OSError as exc:
        return str(exc)
    finally:  # also when interrupted: no temporary file left behind
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def _geomean(xs: list[float]) -> float:
    import math

    return math.exp(sum(math.log(x) for x in xs) / len(xs))


def decide(timings: dict, blas: str = "auto", tiles: str = "auto") -> Choice:
    """The choice from a measurement (`timings`, possibly empty) and the settings: the faster
    library by the geometric mean of its times over SHAPES (MKL by MARGIN; NumPy's where MKL
    was not measured), the same over LARGE_SHAPES for the products outside the loops, then
    the tiles where they beat the loops' library by MARGIN (and BPTT's large weights on them
    for as many rows a thread as they beat it by IN_PLACE_MARGIN). RNNLAB_BLAS sets both
    libraries."""
    if blas != "auto":
        made = Choice(blas, f"RNNLAB_BLAS={blas}", timings or None)
    elif "mkl" not in timings:  # (not installed, or its library did not load where measured)
        made = Choice("numpy", "the `mkl` package is installed, but MKL did not load to be "
                      "measured" if library_files() else "the `mkl` package is not installed",
                      timings or None)  # fmt: skip
    else:
        mkl, numpy = _geomean(timings["mkl"]), _geomean(timings["numpy"])
        ratio = numpy / mkl
        if mkl < MARGIN * numpy:
            made = Choice("mkl", f"measured: MKL {ratio:.2f}x as fast as NumPy's OpenBLAS",
                          timings)  # fmt: skip
        else:
            made = Choice("numpy", f"measured: MKL {ratio:.2f}x as fast as NumPy's OpenBLAS "
                          f"(chosen only above {1 / MARGIN:.2f}x)", timings)  # fmt: skip
    if blas != "auto" or "mkl large" not in timings or "numpy large" not in timings:
        made.large, made.large_why = made.blas, made.why
    else:
        mkl, numpy = _geomean(timings["mkl large"]), _geomean(timings["numpy large"])
        made.large = "mkl" if mkl < MARGIN * numpy else "numpy"
        made.large_why = f"measured: MKL {numpy / mkl:.2f}x as fast as NumPy's OpenBLAS" + (
            "" if made.large == "mkl" else f" (chosen only above {1 / MARGIN:.2f}x)")
    if tiles != "auto":
        made.tiles, made.tiles_why = tiles == "on", f"RNNLAB_TILES={tiles}"
    elif "tiles" not in timings or made.blas not in timings:
        made.tiles, made.tiles_why = False, "not measured (the compiled loops are off)"
    else:
        ratio = _geomean(timings[made.blas]) / _geomean(timings["tiles"])
        made.tiles = ratio > 1 / MARGIN
        library = "MKL" if made.blas == "mkl" else "NumPy's OpenBLAS"
        made.tiles_why = f"measured: {ratio:.2f}x as fast as {library}" + (
            "" if made.tiles else f" (chosen only above {1 / MARGIN:.2f}x)")
    theirs = f"{made.blas} in place"
    if made.tiles and "tiles in place" in timings and theirs in timings:
        leads = [lib / ours for lib, ours in zip(timings[theirs], timings["tiles in place"],
                                                 strict=True)]  # fmt: skip
        for (rows, _, _), lead in zip(IN_PLACE_SHAPES, leads, strict=True):
            if lead < IN_PLACE_MARGIN:
                break
            made.tiles_in_place_rows = rows
        made.tiles_why += (
            "; BPTT's weights where they lie: "
            + " / ".join(f"{lead:.2f}x" for lead in leads) + " at "
            + " / ".join(str(rows) for rows, _, _ in IN_PLACE_SHAPES) + " rows a thread, so "
            + (f"on the tiles up to {made.tiles_in_place_rows} rows"
               if made.tiles_in_place_rows else "on the BLAS")
            + f" (the tiles from {IN_PLACE_MARGIN:.2f}x)"
        )  # fmt: skip
    return made


def tiles_measurable() -> bool:
    """Whether the tiles can be timed here: numba is installed and not turned off
    (RNNLAB_NO_NUMBA). Not rnnlab.fast's own probe: that imports the kernels, which ask for
    this choice while they load."""
    import importlib.util

    return not settings.current().no_numba and importlib.util.find_spec("numba") is not None


def _measure_in_child(timeout: float = MEASURE_TIMEOUT) -> dict:
    """Run rnnlab.fast.calibration.measure in a fresh process (one thread for each library;
    MKL loaded there only where it is installed) and return its timings; raises RuntimeError
    with the child's last words if it fails."""
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1",
               RNNLAB_BLAS="mkl" if library_files() else "numpy",
               RNNLAB_TILES="off")  # the child decides nothing: no measurement of its own
    # (by name in a child: rnnlab.fast, above this module, imports it)
    code = ("import json; from rnnlab.fast import calibration; "
            "print(json.dumps(calibration.measure()))")
    try:
        done = subprocess.run([sys.executable, "-c", code], env=env,
                              capture_output=True, text=True, timeout=timeout)  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RuntimeError(str(exc)) from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise RuntimeError(last)
    lines = done.stdout.strip().splitlines()
    if not lines:
        raise RuntimeError("the measuring process printed nothing")
    return json.loads(lines[-1])


@functools.cache
def choice() -> Choice:
    """The BLAS for this process and whether the loops use rnnlab's tiles: RNNLAB_BLAS and
    RNNLAB_TILES where they name a choice, else the cached or a fresh measurement (nothing
    is measured that could not change the outcome: MKL not installed and the tiles set or
    unavailable)."""
    s = settings.current()
    if s.blas == "mkl" and not library_files():
        _checks.fail("RNNLAB_BLAS", "'auto', 'numpy', or 'mkl' where the mkl package is "
                     "installed", "'mkl', and the mkl package is not installed here",
                     "Install rnnlab[mkl], or unset RNNLAB_BLAS.")  # fmt: skip
    blas_open = s.blas == "auto" and bool(library_files())
    tiles_open = s.tiles == "auto" and tiles_measurable()
    if not blas_open and not tiles_open:
        made = decide({}, s.blas, "off" if s.tiles == "auto" else s.tiles)
        if s.tiles == "auto":
            made.tiles_why = "the compiled loops are off"
        return made
    want = key()
    path = cache_path(want)
    cached = _read_cache(path, want)
    if cached is None:
        with _one_at_a_time(path):
            cached = _read_cache(path, want)  # another process may have measured meanwhile
            if cached is None:
                return _measured(path, want, s, blas_open)
    return _overridden(cached, s.blas, s.tiles)


@contextlib.contextmanager
def _one_at_a_time(path: str) -> Iterator[None]:
    """Processes that start at once on a fresh machine (MPI ranks, pytest's workers) measure
    one after the other: the first measures and writes the cache while the others wait on a
    lock beside it, then read what it wrote. Measuring side by side would time a shared
    machine, and the processes could choose differently. The wait is bounded (LOCK_WAIT: the
    measurement's own timeout and a margin, then a warning and a measurement of its own);
    where no lock can be had (no fcntl, a folder that cannot be made or written), each
    process measures on its own."""
    try:
        import fcntl

        os.makedirs(os.path.dirname(path), exist_ok=True)
        # without blocking, and only a regular file: opening a FIFO to write waits for a
        # reader (O_NONBLOCK makes that ENXIO), and a device is no lock
        name = os.path.join(os.path.dirname(path), "." + os.path.basename(path) + ".lock")
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_NONBLOCK", 0)
        fd = os.open(name, flags, 0o644)
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise OSError("the lock is not a regular file")
        lock = os.fdopen(fd, "ab")
    except (ImportError, OSError):
        yield
        return
    with lock:
        deadline, pause = time.monotonic() + LOCK_WAIT, 0.01
        while True:  # (polled: a blocking flock waited for good on a stopped holder)
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if time.monotonic() < deadline:
                    time.sleep(pause)
                    pause = min(2 * pause, 0.25)
                    continue
                warnings.warn(f"rnnlab: another process has held the BLAS choice's lock "
                              f"{name!r} for {LOCK_WAIT:g} s; measuring without it",
                              stacklevel=4)  # fmt: skip
            except OSError:  # (a file system without locks)
                pass
            break
        yield  # (closing the file releases the lock)


def _measured(path: str, want: dict, s: settings.Settings, blas_open: bool) -> Choice:
    """A fresh measurement's choice, written to the cache at `path` where it can be."""
    try:
        timings = _measure_in_child()
        if not _timings_ok(timings):
            raise ValueError(f"the measurement came back as {timings!r}")
    except (RuntimeError, ValueError, KeyError) as exc:
        library = "MKL, as installed" if blas_open else "NumPy's OpenBLAS"
        warnings.warn(f"rnnlab: could not time the per-step products ({exc}); using "
                      f"{library}, without the tiles", stacklevel=3)  # fmt: skip
        made = decide({}, "mkl" if blas_open else s.blas, "off" if s.tiles == "auto" else s.tiles)
        made.why = f"installed; the measurement failed: {exc}" if blas_open else made.why
        if s.tiles == "auto":
            made.tiles_why = f"the measurement failed: {exc}"
        return made
    made = decide(timings)
    error = _write_cache(path, want, made)
    if error:
        made.cache_error = f"{path}: {error}"
        warnings.warn(f"rnnlab: the BLAS choice cannot be cached in {path!r} ({error}); it "
                      "is measured again in every process (set RNNLAB_CACHE_DIR to a "
                      "writable folder)", stacklevel=3)  # fmt: skip
    else:
        made.cache = path
    return _overridden(made, s.blas, s.tiles)


def _overridden(made: Choice, blas: str, tiles: str) -> Choice:
    """The measured choice with what RNNLAB_BLAS and RNNLAB_TILES set put over it."""
    if blas == "auto" and tiles == "auto":
        return made
    again = decide(made.timings or {}, blas, tiles)
    again.cache, again.cache_error = made.cache, made.cache_error
    return again
