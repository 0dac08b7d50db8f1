"""Which BLAS the kernels' matrix products call: Intel's MKL when the optional `mkl` package is
installed and measured faster on this host (rnnlab._blaschoice), else NumPy's own OpenBLAS
when it can be found.

Whether MKL (the `mkl` extra) beats NumPy's OpenBLAS at the per-step shapes the time loops
spend most of their time in depends on the host (docs/design.md, "Using the cores"). It runs
on one thread per call: rnnlab's own threads split the batch (rnnlab.fast.parallel, rnnlab._mkl).
RNNLAB_BLAS=numpy or mkl overrides the measurement.

numba's `np.dot` calls scipy's BLAS, and the NumPy and SciPy wheels each bundle a separate
OpenBLAS with its own thread pool. The caller's products (the hoisted input projection, the
deferred weight gradients, a readout, the loss) run on NumPy's; an idle OpenBLAS pool
busy-waits after each call, so the two pools took turns stealing the second core and a
training step with the time loop on scipy's BLAS and the rest on NumPy's was several times
slower than with one of them (docs/design.md, "Measurements behind small choices"). Calling
NumPy's own `cblas_?gemm` from the kernels keeps one pool in the process, whatever else the
training step computes with NumPy.

The wheels of NumPy ≥ 1.22 (Linux, Windows, macOS x86-64) bundle a 64-bit-integer OpenBLAS
whose CBLAS symbols carry a `64_` suffix (`scipy_cblas_sgemm64_` since NumPy 2.0). Where none
is found (conda, Accelerate, a distribution's NumPy) the kernels use numba's `np.dot`.

With MKL the per-step products can also take their weight in MKL's packed format
(`cblas_?gemm_pack` once per loop, `cblas_?gemm_compute` at every step; see rnnlab.fast.packs):
a plain product repacks the weight's panels at every call.

The kernels reach the functions through the link-time symbols `rnnlab_cblas_sgemm`,
`rnnlab_cblas_dgemm` and the two `..._compute`, registered here at import, so their cached
machine code holds no process-specific address. Without NumPy's library (or MKL) the symbols
point at a no-op stand-in that the kernels never call (`NUMPY_CBLAS` or `PACKS` is then
False and they take another branch).
"""

from __future__ import annotations

import ctypes
from typing import TYPE_CHECKING

import llvmlite.binding as ll

from rnnlab import _blaschoice, _mkl

if TYPE_CHECKING:
    from _ctypes import CFuncPtr

SGEMM = "rnnlab_cblas_sgemm"
DGEMM = "rnnlab_cblas_dgemm"
SGEMM_COMPUTE = "rnnlab_cblas_sgemm_compute"  # MKL's products on a packed right factor
DGEMM_COMPUTE = "rnnlab_cblas_dgemm_compute"

# CBLAS constants
ROW_MAJOR = 101
NO_TRANS = 111
PACKED = _mkl.PACKED

_NAMES = _blaschoice.CBLAS_GEMM_NAMES
_cblas_type = _blaschoice.cblas_gemm_type


def find_numpy_cblas() -> tuple[int, int] | None:
    """Addresses of NumPy's bundled (ILP64) cblas_sgemm and cblas_dgemm, or None."""
    found = _blaschoice.numpy_blas_symbols(_NAMES)
    if found is None:
        return None
    s, d = (ctypes.cast(f, ctypes.c_void_p).value for f in found)
    return (s, d) if s and d else None


def _compute_type(real):
    # cblas_?gemm_compute(layout, transa, transb, M, N, K, A, lda, B, ldb, beta, C, ldc), ILP64
    i32, i64, ptr = ctypes.c_int, ctypes.c_int64, ctypes.c_void_p
    return ctypes.CFUNCTYPE(None, i32, i64, i64, i64, i64, i64, ptr, i64, ptr, i64, real, ptr, i64)


def _never_called(*args):  # pragma: no cover - the kernels test NUMPY_CBLAS first
    raise RuntimeError("rnnlab.fast: the stand-in for NumPy's BLAS was called")


_MKL = _mkl.load()
_FOUND = find_numpy_cblas() if _MKL is None else (_MKL.sgemm, _MKL.dgemm)
NUMPY_CBLAS: bool = _FOUND is not None
"""True when the kernels call a CBLAS directly (MKL's or NumPy's), not numba's np.dot."""
NAME: str = (
    f"MKL ({_MKL.version})" if _MKL else "NumPy's OpenBLAS" if _FOUND else "numba's np.dot (SciPy)"
)
"""Which BLAS the kernels' per-step products run on."""
if _FOUND is not None:
    _s_addr, _d_addr = _FOUND
    _standins: tuple[CFuncPtr, ...] = ()
else:
    _standins = (
        _cblas_type(ctypes.c_float)(_never_called),
        _cblas_type(ctypes.c_double)(_never_called),
    )  # kept alive with the module
    _s_addr, _d_addr = (ctypes.cast(f, ctypes.c_void_p).value for f in _standins)
ll.add_symbol(SGEMM, _s_addr)
ll.add_symbol(DGEMM, _d_addr)

PACKS: bool = _MKL is not None
"""True when the per-step products can take a weight in MKL's packed format (rnnlab.fast)."""
if _MKL is not None:
    _sc_addr, _dc_addr = _MKL.sgemm_compute, _MKL.dgemm_compute
else:
    _compute_standins = (
        _compute_type(ctypes.c_float)(_never_called),
        _compute_type(ctypes.c_double)(_never_called),
    )
    _sc_addr, _dc_addr = (ctypes.cast(f, ctypes.c_void_p).value for f in _compute_standins)
ll.add_symbol(SGEMM_COMPUTE, _sc_addr)
ll.add_symbol(DGEMM_COMPUTE, _dc_addr)
