"""Intel's MKL from the optional `mkl` package: found, held at one thread in rnnlab's threads,
and called.

rnnlab runs its own threads (rnnlab.fast.parallel), so each of them calls MKL on one thread for its
own part of a product (`one_thread`: MKL's thread-local setting, which rnnlab.fast.parallel sets
in its workers and around every split call). MKL as a whole stays in the GNU OpenMP threading
layer with its default thread count, not the sequential one: `libmkl_rt` loads its parts into
the process's global symbol scope, so a PyTorch imported afterwards binds its own MKL calls
to this MKL (seen with LD_DEBUG=bindings) and sizes its thread pool by
`mkl_get_max_threads()`. In the sequential layer that made PyTorch run on one thread
(docs/design.md, "Using the cores", has the measurement). The GNU runtime (libgomp) is
PyTorch's own copy when PyTorch is installed, so that both share one. Where no libgomp can
be loaded, MKL runs sequential, and PyTorch should be imported before rnnlab's first
forward pass.

The compiled loops call MKL's `cblas_?gemm_64` from machine code (rnnlab.fast.blas); the
large products before and after the loops call `gemm` below through ctypes (whose call
overhead only products of ≥ 4 MFLOP repay). Whether MKL is faster than NumPy's OpenBLAS
depends on the host (docs/design.md, "Using the cores").

RNNLAB_BLAS=numpy leaves MKL unloaded and RNNLAB_BLAS=mkl uses it when the `mkl` package is
installed; RNNLAB_BLAS=auto (the default) uses it where it measured faster than NumPy's
OpenBLAS on this host (rnnlab._blaschoice, which finds the library; `measure` below times it).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import glob
import importlib.util
import os
import sys
from collections.abc import Iterator

import numpy as np

from rnnlab import _blaschoice

ROW_MAJOR, NO_TRANS, TRANS = 101, 111, 112
PACKED, B_MATRIX = 151, 162  # CblasPacked (gemm_compute's flag), CblasBMatrix (gemm_pack's)
SEQUENTIAL, GNU = 1, 3  # MKL_THREADING_SEQUENTIAL, MKL_THREADING_GNU


def wanted(large: bool = False) -> bool:
    """Whether the loops' per-step products (or, if `large`, the large products made outside
    the loops) use MKL: RNNLAB_BLAS=mkl, or (auto) MKL is installed and measured faster than
    NumPy's OpenBLAS at such products on this host (rnnlab._blaschoice)."""
    made = _blaschoice.choice()
    return (made.large if large else made.blas) == "mkl"


class MKL:
    """The loaded library: gemm addresses, version, and a ctypes gemm."""

    def __init__(self, lib: ctypes.CDLL):
        lib.MKL_Set_Threading_Layer.argtypes = [ctypes.c_int]
        self.layer = GNU if _gnu_openmp() else SEQUENTIAL
        lib.MKL_Set_Threading_Layer(self.layer)
        lib.MKL_Set_Num_Threads_Local.argtypes = [ctypes.c_int]
        lib.MKL_Set_Num_Threads_Local.restype = ctypes.c_int
        lib.MKL_Get_Max_Threads.restype = ctypes.c_int
        self._lib = lib
        buf = ctypes.create_string_buffer(256)
        lib.MKL_Get_Version_String(buf, len(buf))
        self.version = buf.value.decode(errors="replace").strip()
        i32, i64, ptr = ctypes.c_int, ctypes.c_int64, ctypes.c_void_p
        self._fns = {}
        for dtype, name, real in (
            (np.dtype(np.float32), "cblas_sgemm_64", ctypes.c_float),
            (np.dtype(np.float64), "cblas_dgemm_64", ctypes.c_double),
        ):
            fn = getattr(lib, name)
            fn.restype = None
            fn.argtypes = [i32, i32, i32, i64, i64, i64, real, ptr, i64, ptr, i64, real, ptr, i64]
            self._fns[dtype] = fn
        self.sgemm = ctypes.cast(self._fns[np.dtype(np.float32)], ctypes.c_void_p).value
        self.dgemm = ctypes.cast(self._fns[np.dtype(np.float64)], ctypes.c_void_p).value
        self._pack_fns = {}
        reals = (
            (np.dtype(np.float32), "s", ctypes.c_float),
            (np.dtype(np.float64), "d", ctypes.c_double),
        )
        for dtype, p, real in reals:
            size = getattr(lib, f"cblas_{p}gemm_pack_get_size_64")
            size.restype, size.argtypes = ctypes.c_size_t, [i32, i64, i64, i64]
            pack = getattr(lib, f"cblas_{p}gemm_pack_64")
            pack.restype = None
            pack.argtypes = [i32, i32, i32, i64, i64, i64, real, ptr, i64, ptr]
            compute = getattr(lib, f"cblas_{p}gemm_compute_64")
            compute.restype = None
            compute.argtypes = [i32, i64, i64, i64, i64, i64, ptr, i64, ptr, i64, real, ptr, i64]
            self._pack_fns[dtype] = (size, pack, compute)
        self.sgemm_compute = ctypes.cast(self._pack_fns[np.dtype(np.float32)][2], ptr).value
        self.dgemm_compute = ctypes.cast(self._pack_fns[np.dtype(np.float64)][2], ptr).value

    def set_local_threads(self, n: int) -> int:
        """MKL's threads for the calls of this thread (0: its global setting); returns the
        value before."""
        return int(self._lib.MKL_Set_Num_Threads_Local(n))

    def max_threads(self) -> int:
        """The threads MKL would use for a call from this thread."""
        return int(self._lib.MKL_Get_Max_Threads())

    def gemm(self, a: np.ndarray, b: np.ndarray, out: np.ndarray, beta: float = 0.0) -> bool:
        """out = a @ b (+ beta·out) with MKL when all three share a float dtype, a and b are
        row-major or transposed row-major views and out's rows are contiguous; False
        (nothing done) otherwise."""
        fn = self._fns.get(out.dtype)
        if fn is None or a.dtype != out.dtype or b.dtype != out.dtype:
            return False
        op_a, op_b, op_out = operand(a), operand(b), operand(out)
        if op_a is None or op_b is None or op_out is None or op_out[0] != NO_TRANS:
            return False
        m, k = a.shape
        n = b.shape[1]
        if m == 0 or n == 0:
            return True
        if k == 0:
            out[...] = 0 if beta == 0 else beta * out
            return True
        fn(ROW_MAJOR, op_a[0], op_b[0], m, n, k, 1.0, a.ctypes.data, op_a[1], b.ctypes.data,
           op_b[1], beta, out.ctypes.data, op_out[1])  # fmt: skip
        return True

    def pack(self, b: np.ndarray, rows: int) -> np.ndarray | None:
        """The right factor b (K, N) of products A·b (A of `rows` rows) in MKL's packed format,
        for gemm_compute with the flag PACKED (the kernels' per-step products), or None
        where b does not suit (dtype, layout). b may be a transposed view. The packing runs
        on one thread, as the products that use it will (MKL asks for the same count).

        MKL asks for the buffer's size beforehand (several times b's size, and megabytes
        however small b is), but writes about b's own size of it: untouched pages cost no
        memory. The buffer must not move (MKL's data inside it depends on its
        address); a NumPy array never does."""
        fns = self._pack_fns.get(b.dtype)
        op = operand(b) if b.ndim == 2 else None
        if fns is None or op is None or 0 in b.shape:
            return None
        size, pack, _ = fns
        K, N = b.shape
        M = max(int(rows), 1)
        buf = np.empty(size(B_MATRIX, M, N, K), np.uint8)
        with one_thread():
            pack(ROW_MAJOR, B_MATRIX, op[0], M, N, K, 1.0, b.ctypes.data, op[1], buf.ctypes.data)
        return buf

    def gemm_packed(self, a: np.ndarray, packed: np.ndarray, out: np.ndarray) -> None:
        """out = a · b for b packed by `pack` (a C-contiguous, out (M, N) C-contiguous): for
        tests; the kernels call MKL's gemm_compute themselves."""
        _, _, compute = self._pack_fns[out.dtype]
        M, K = a.shape
        N = out.shape[1]
        compute(ROW_MAJOR, NO_TRANS, PACKED, M, N, K, a.ctypes.data, K, packed.ctypes.data, N,
                0.0, out.ctypes.data, N)  # fmt: skip


class _Version(ctypes.Structure):
    """MKL's MKLVersion (mkl_types.h), as MKL_Get_Version fills it."""

    _fields_ = [("major", ctypes.c_int), ("minor", ctypes.c_int), ("update", ctypes.c_int),
                ("product_status", ctypes.c_char_p), ("build", ctypes.c_char_p),
                ("processor", ctypes.c_char_p), ("platform", ctypes.c_char_p)]  # fmt: skip


def code_path(lib: ctypes.CDLL) -> str | None:
    """The instruction set whose code the loaded MKL `lib` runs (MKL_Get_Version's processor
    field, e.g. "Intel(R) Advanced Vector Extensions 2 (Intel(R) AVX2) enabled processors"),
    or None where it has no MKL_Get_Version. threadpoolctl names OpenBLAS's kernel only, and
    MKL's is the one that differs from the CPU's best: what MKL_ENABLE_INSTRUCTIONS caps it
    to, say. On an AMD EPYC (Zen 4, 2026-12-06) MKL names no instruction set, capped or not
    ("Intel(R) Architecture processors"), and that is what is said: which code it runs there
    shows only in its speed (issue #21: half of OpenBLAS's AVX-512 GEMM on one such host)."""
    try:
        get = lib.MKL_Get_Version
    except AttributeError:
        return None
    get.restype, get.argtypes = None, [ctypes.POINTER(_Version)]
    found = _Version()
    get(ctypes.byref(found))
    return found.processor.decode(errors="replace").strip() or None if found.processor else None


def _gnu_openmp() -> bool:
    """Whether the GNU OpenMP runtime (PyTorch's too) loads here. PyTorch's own copy comes
    first when PyTorch is installed (found, not imported): MKL and a PyTorch imported later
    then share it, where the system's could be older than the one PyTorch was built with."""
    if not sys.platform.startswith("linux"):
        return False
    candidates = []
    spec = importlib.util.find_spec("torch") if "torch" not in sys.modules else None
    for folder in (spec.submodule_search_locations or []) if spec else []:
        candidates += sorted(glob.glob(os.path.join(folder, "lib", "libgomp.so.1")))
    for name in (*candidates, "libgomp.so.1"):
        try:
            ctypes.CDLL(name)
        except OSError:
            continue
        return True
    return False


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """MKL on one thread for the calls this thread makes inside the block (the setting before
    is restored after it); nothing without MKL."""
    mkl = load() or load(large=True)
    if mkl is None:
        yield
        return
    before = mkl.set_local_threads(1)
    try:
        yield
    finally:
        mkl.set_local_threads(before)


def one_thread_here() -> None:
    """MKL on one thread for every call of this thread from now on (rnnlab's workers)."""
    mkl = load() or load(large=True)
    if mkl is not None:
        mkl.set_local_threads(1)


def operand(x: np.ndarray) -> tuple[int, int] | None:
    """(transpose flag, leading dimension) of a 2-D array for a row-major CBLAS call."""
    item = x.itemsize
    rows, cols = x.shape
    s0, s1 = x.strides
    if (s1 == item or cols == 1) and s0 % item == 0 and s0 // item >= max(cols, 1):
        return NO_TRANS, s0 // item
    if (s0 == item or rows == 1) and s1 % item == 0 and s1 // item >= max(rows, 1):
        return TRANS, s1 // item
    return None


@functools.cache
def load(large: bool = False) -> MKL | None:
    """The MKL of the `mkl` package for the loops' per-step products (or, if `large`, for the
    large products outside them), or None: not installed, or not chosen (`wanted`). Both
    uses share one loaded library."""
    return _library() if wanted(large) else None


@functools.cache
def _library() -> MKL | None:
    """The library, loaded and set up once (its threading layer is process-wide). One that is
    there and does not load (a broken or foreign installation) is warned about: the products
    then ran on NumPy's OpenBLAS without a word, under RNNLAB_BLAS=mkl too, while `rnnlab
    info` said MKL."""
    problems = []
    for path in _blaschoice.library_files():
        try:
            lib = ctypes.CDLL(path)
        except OSError as exc:
            problems.append(f"{path!r} does not load: {exc}")
            continue
        needed = ("cblas_sgemm_64", "cblas_dgemm_64", "cblas_sgemm_compute_64",
                  "MKL_Set_Threading_Layer")  # fmt: skip
        missing = [name for name in needed if not hasattr(lib, name)]
        if not missing:
            return MKL(lib)
        problems.append(f"{path!r} lacks {', '.join(missing)}")
    if problems:
        import warnings

        warnings.warn(f"rnnlab: the mkl package is installed, but its library cannot be used "
                      f"({'; '.join(problems)}); the products run on NumPy's OpenBLAS",
                      stacklevel=3)  # fmt: skip
    return None
