"""numba building blocks of the compiled loops: the scalar tanh, σ and exp that the cells'
steps compile to, the per-step products (on rnnlab.fast.tiles, MKL or NumPy's BLAS), row
helpers, a blocked transpose and the passes of two losses (mean squared error, softmax
cross-entropy). No cell's equations live here: the loops are made per cell from the cell's
own steps (rnnlab.fast.loops).

At small H a NumPy time step is some 28 NumPy calls, whose overhead outweighs the arithmetic
they do; the compiled loops run the loop over time in one `@njit` function per cell and
direction of travel (forward pass or BPTT), so a step costs one or two BLAS products into
preallocated buffers plus a few short pointwise loops.

Rules that measurements impose on compiled code (docs/design.md, "Two paths for the time
loop" and "Using the cores", has the measurements); the steps of the cells keep them too
(rnnlab.cells.pointwise):
- pointwise loops are `for j in range(n)` over 1-D row views and touch few arrays each (LLVM
  vectorises them; a nonzero range start or more than ~8 alias checks keeps them scalar);
  slices are assigned by explicit loops (`x[:] = y` may allocate a temporary copy);
- `error_model="numpy"` so divisions vectorise; `fastmath=False` so results stay exact, except
  that tanh, σ and exp below may fuse a product and a sum into one FMA (`contract` alone: one
  rounding instead of two, nothing reordered or approximated);
- `_nrt=False`: no reference counting. Each row view made in a loop otherwise costs two
  atomic calls, a large share of a small LSTM's step; the price is that kernels allocate
  nothing, so rnnlab.fast passes every buffer in;
- every array given to a product has contiguous rows; all but the states are C-contiguous.
  The states hs may be the first H columns of wider rows (rnnlab.fast passes the kernels a
  C-contiguous (T+1, B, W) view, W ≥ H, and they read and write hs[t, b, :H] only): in a
  bidirectional layer each direction writes its states straight into its half of the
  layer's output.

tanh and σ: numba has no vectorised tanh or exp (without Intel's SVML each is a scalar libm
call, which at H = 64 costs more than the matrix products). The functions below are Cephes'
exp and tanh, evaluated in the array's own precision, which vectorise:

    e^t  = 2^k · e^r,  k = round(t / ln2),  |r| ≤ ln2/2   (Padé in float64, degree 7 in float32)
    tanh(x) = sign(x) · (|x| + |x|·x²·P(x²)/Q(x²))       for |x| < 0.625 (float32: polynomial)
    tanh(x) = sign(x) · (1 − 2 / (e^{2|x|} + 1))           otherwise
    σ(x) = e^{|x|} / (e^{|x|} + 1)  for x ≥ 0,   1 / (e^{|x|} + 1)  for x < 0

with |x| clamped where the result has rounded to its limit (tanh: 20 in float64, 10 in float32;
σ: 40, where σ(−x) < 5e-18), which keeps 2^k an exact power of two, built from its bits
(exponent field k + bias, a bitcast that vectorises, where an int64 shift and int-to-float
convert was slower for the same results). Against a long-double
oracle tanh is within 1.4 ulp in both precisions and σ within 2.5 ulp; NumPy's own tanh is
within 1.2 (float64) and 1.3 ulp (float32). This is not the 4e-7 rational approximation of
Eigen or XLA, which would break the float64 gradient checks. (σ = 0.5·tanh(x/2) + 0.5 as in
rnnlab.ops would cost a tanh; the exp form is cheaper and more accurate for x ≪ 0.)
"""

from __future__ import annotations

import functools
import math
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import llvmlite.binding as ll
import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core.caching import FunctionCache
from numba.core.compiler_lock import global_compiler_lock
from numba.core.dispatcher import Dispatcher
from numba.core.typing.templates import Signature
from numba.extending import intrinsic, overload

from rnnlab import settings
from rnnlab.fast import blas, tiles

# The options every kernel compiles with. Typed as a plain dict: numba's stubs type its options
# (numba.core.decorators._JITOptions) without the private `_nrt`, which the kernels need.
JIT: dict[str, Any] = {
    "cache": True,
    "error_model": "numpy",
    "fastmath": False,
    "nogil": True,
    "_nrt": False,
}


def _vector_width() -> int:
    """The width LLVM's loop vectoriser is forced to while rnnlab's kernels compile, 0 for its
    own choice. 16 float32 lanes (one AVX-512 register) where the CPU has AVX-512, where its
    cost model otherwise prefers 8 lanes, slower there (docs/design.md has the measurement);
    results are bit for bit the same (the lanes do the same arithmetic).
    RNNLAB_VECTOR_WIDTH=default leaves LLVM's choice; =N (a power of two up to 64) forces N
    lanes on any CPU (for tests, and for trying a width on another machine)."""
    asked = settings.current().vector_width
    if asked is not None:
        return asked
    return 16 if "+avx512f" in ll.get_host_cpu_features().flatten() else 0


VECTOR_WIDTH = _vector_width()
WIDE_VECTORS = VECTOR_WIDTH > 1

# LLVM's options are process-wide (`llvmlite.binding.set_option`), and LLVM reads
# -force-vector-width each time its vectoriser runs; so rnnlab sets it only while one of its
# own kernels compiles (every dispatcher of rnnlab.fast is `scoped`), under numba's compiler
# lock, and puts back LLVM's default (0: not forced) afterwards. Numba functions of the user's
# compile with LLVM's choice, before and after. Two things come with the forced width:
# - LLVM reports every loop it then cannot vectorise (a reduction, a loop with a call...) as a
#   remark printed straight to file descriptor 2 ("remark: <unknown>:0:0: loop not
#   vectorized: ...", 47 for an LSTM's first forward and backward), and llvmlite offers no
#   diagnostic handler to catch them. So while rnnlab's kernels compile with a forced width,
#   fd 2 goes to a temporary file; afterwards the vectoriser's remarks are dropped and anything
#   else written there in the meantime (by any thread) is copied to the real stderr, late by
#   the compile's seconds.
# - a width set by the user's own `ll.set_option(..., "-force-vector-width=N")` is reset to
#   LLVM's default the first time rnnlab compiles a kernel (LLVM's options cannot be read).
_scope_depth = 0
_REMARK = re.compile(rb"remark: .*(vectoriz|interleav)")


@contextmanager
def llvm_options() -> Iterator[None]:
    """rnnlab's LLVM options (VECTOR_WIDTH) for the compiles inside the block only."""
    global _scope_depth
    with global_compiler_lock, ExitStack() as stack:
        if _scope_depth == 0 and VECTOR_WIDTH:
            stack.enter_context(_vectoriser_remarks_dropped())
            ll.set_option("rnnlab", f"-force-vector-width={VECTOR_WIDTH}")
            stack.callback(ll.set_option, "rnnlab", "-force-vector-width=0")
        _scope_depth += 1
        try:
            yield
        finally:
            _scope_depth -= 1


@contextmanager
def _vectoriser_remarks_dropped() -> Iterator[None]:
    """File descriptor 2 into a temporary file for the block; then what was written there,
    but for the loop vectoriser's remarks, to the real fd 2 (see above)."""
    try:
        saved = os.dup(2)
    except OSError:  # no fd 2 (a daemon): nothing is printed anyway
        yield
        return
    try:
        tmp = tempfile.TemporaryFile()
    except OSError:
        os.close(saved)
        yield
        return
    with tmp:
        _flush_stderr()
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            _flush_stderr()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            kept = b"".join(line for line in tmp.read().splitlines(keepends=True)
                            if not _REMARK.match(line))  # fmt: skip
            try:
                while kept:
                    kept = kept[os.write(2, kept) :]
            except OSError:  # stderr closed meanwhile: there is nowhere to say it
                pass


def _flush_stderr() -> None:
    try:
        sys.stderr.flush()
    except (AttributeError, OSError, ValueError):  # None, closed, or not a file
        pass


class _WidthKeyedCache(FunctionCache):
    """numba's on-disk cache with the forced width in the key: machine code compiled at one
    width is not loaded by a process that asked for another (RNNLAB_VECTOR_WIDTH=default)."""

    def _index_key(self, sig, codegen):
        return (*super()._index_key(sig, codegen), ("force-vector-width", VECTOR_WIDTH))


def scoped(dispatcher: Dispatcher) -> Dispatcher:
    """`dispatcher`, compiling (and loading from its cache) inside `llvm_options`."""
    # The type: ignores: numba's stubs leave out the dispatcher's private cache, and type
    # `compile` as a method, which is replaced here on the instance.
    if type(dispatcher._cache) is FunctionCache:  # type: ignore[attr-defined]  # (cache=True; the loops have their own)
        dispatcher._cache = _WidthKeyedCache(dispatcher.py_func)  # type: ignore[attr-defined]
    compile_ = dispatcher.compile

    @functools.wraps(compile_)
    def compile_with_options(sig):
        with llvm_options():
            return compile_(sig)

    dispatcher.compile = compile_with_options  # type: ignore[method-assign]
    return dispatcher


# The scalar functions are inlined into the loops with their own fast-math flags: `contract`
# lets LLVM turn each Horner step p·x + c (and the range reduction t − k·ln2) into one FMA.
# Faster, with the largest errors unchanged (docs/design.md has the measurement); `contract`
# on the whole loops gained nothing more.
# Typed Any: it is also overload()'s `jit_options`, which numba's stubs type as their
# _JITOptions, without `_nrt`.
SCALAR: Any = {"error_model": "numpy", "fastmath": {"contract"}, "_nrt": False}


# --------------------------------------------------------------------------- exp, tanh, σ
def _f32(*cs):
    return tuple(np.float32(c) for c in cs)


# Cephes expf (r ≤ ln2/2: e^r = 1 + r + r²·P(r)) and tanhf (|x| < 0.625: x + x³·P(x²))
_EXP32 = _f32(1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2,
              1.6666665459e-1, 5.0000001201e-1)  # fmt: skip
_TANH32 = _f32(-5.70498872745e-3, 2.06390887954e-2, -5.37397155531e-2, 1.33314422036e-1,
               -3.33332819422e-1)  # fmt: skip
_LN2_32 = _f32(0.693359375, -2.12194440e-4)  # ln 2 = hi + lo, hi exact in few bits
# Cephes exp (e^r = 1 + 2r·P(r²) / (Q(r²) − r·P(r²))) and tanh (x + x³·P(x²)/Q(x²))
_EXP64_P = (1.26177193074810590878e-4, 3.02994407707441961300e-2, 9.99999999999999999910e-1)
_EXP64_Q = (3.00198505138664455042e-6, 2.52448340349684104192e-3, 2.27265548208155028766e-1,
            2.00000000000000000009e0)  # fmt: skip
_TANH64_P = (-9.64399179425052238628e-1, -9.92877231001918586564e1, -1.61468768441708447952e3)
_TANH64_Q = (1.0, 1.12811678491632931402e2, 2.23548839060100448583e3, 4.84406305325125486048e3)
_LN2_64 = (6.93145751953125e-1, 1.42860682030941723212e-6)
_LOG2E = 1.4426950408889634


@njit(**SCALAR)
def _horner(x, coeffs):
    p = coeffs[0]
    for c in coeffs[1:]:
        p = p * x + c
    return p


@intrinsic
def _f32_bits(typingctx, bits):
    """The float32 whose IEEE-754 bits are the int32 `bits` (a plain LLVM bitcast)."""

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return types.float32(types.int32), codegen


@intrinsic
def _f64_bits(typingctx, bits):
    """The float64 whose IEEE-754 bits are the int64 `bits`."""

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.DoubleType())

    return types.float64(types.int64), codegen


@njit(**SCALAR)
def _exp_f32(t):
    """e^t for 0 ≤ t ≤ 40, float32."""
    k = np.floor(t * np.float32(_LOG2E) + np.float32(0.5))
    r = t - k * _LN2_32[0]
    r = r - k * _LN2_32[1]
    er = _horner(r, _EXP32) * (r * r) + r + np.float32(1.0)
    # (type: ignore: numba's stubs type an intrinsic's call with the typing context that
    # numba passes it when it compiles the call, and which compiled code does not pass)
    return er * _f32_bits((np.int32(k) + np.int32(127)) << np.int32(23))  # type: ignore[call-arg]


@njit(**SCALAR)
def _exp_f64(t):
    """e^t for 0 ≤ t ≤ 40, float64."""
    k = math.floor(t * _LOG2E + 0.5)
    r = t - k * _LN2_64[0]
    r = r - k * _LN2_64[1]
    rr = r * r
    px = r * _horner(rr, _EXP64_P)
    er = 1.0 + 2.0 * (px / (_horner(rr, _EXP64_Q) - px))
    return er * _f64_bits((np.int64(k) + np.int64(1023)) << np.int64(52))  # type: ignore[call-arg]  # as above


def _tanh_f32(v):
    one = np.float32(1.0)
    a = abs(v)
    t = a if a < np.float32(10.0) else np.float32(10.0)  # tanh rounds to 1 beyond 9.01; NaN too
    z = t * t
    small = _horner(z, _TANH32) * z * t + t
    big = one - np.float32(2.0) / (_exp_f32(t + t) + one)
    res = small if t < np.float32(0.625) else big
    res = res if a == a else a  # NaN in, NaN out
    return res if v >= np.float32(0.0) else -res


def _tanh_f64(v):
    a = abs(v)
    t = a if a < 20.0 else 20.0  # tanh rounds to 1 beyond 19.1; NaN too
    z = t * t
    small = t < 0.625
    # one division for both branches: base + num / den
    num = t * z * _horner(z, _TANH64_P) if small else -2.0
    den = _horner(z, _TANH64_Q) if small else _exp_f64(t + t) + 1.0
    res = (t if small else 1.0) + num / den
    res = res if a == a else a
    return res if v >= 0.0 else -res


def _sigmoid_f32(v):
    one = np.float32(1.0)
    a = abs(v)
    e = _exp_f32(a if a < np.float32(40.0) else np.float32(40.0))
    s = (e if v >= np.float32(0.0) else one) / (e + one)
    return s if a == a else a


def _sigmoid_f64(v):
    a = abs(v)
    e = _exp_f64(a if a < 40.0 else 40.0)
    s = (e if v >= 0.0 else 1.0) / (e + 1.0)
    return s if a == a else a


def tanh_scalar(v):
    """tanh of one float32 or float64 scalar inside a kernel (compiled by the overload)."""
    return np.tanh(v)


def sigmoid_scalar(v):
    """σ of one float32 or float64 scalar inside a kernel (compiled by the overload)."""
    return 1.0 / (1.0 + np.exp(-v))


@overload(tanh_scalar, jit_options=SCALAR)
def _tanh_overload(v):
    return {types.float32: _tanh_f32, types.float64: _tanh_f64}.get(v)


@overload(sigmoid_scalar, jit_options=SCALAR)
def _sigmoid_overload(v):
    return {types.float32: _sigmoid_f32, types.float64: _sigmoid_f64}.get(v)


def _exp_below_f32(v):
    """e^v for v ≤ 0 (a softmax's shifted logit): 0 below −87, where e^v leaves float32's
    normal range (NumPy's would be a subnormal under 1.2e-38); NaN in, NaN out."""
    inside = v > np.float32(-87.0)
    e = _exp_f32(v if inside else np.float32(-87.0))
    return (e if inside else np.float32(0.0)) if v == v else v


def _exp_below_f64(v):
    """e^v for v ≤ 0: 0 below −708 (under 3.3e-308, float64's normal range)."""
    inside = v > -708.0
    e = _exp_f64(v if inside else -708.0)
    return (e if inside else 0.0) if v == v else v


def exp_below_scalar(v):
    """e^v for v ≤ 0 inside a kernel (compiled by the overload): Cephes' exp as above."""
    return np.exp(v)


@overload(exp_below_scalar, jit_options=SCALAR)
def _exp_below_overload(v):
    return {types.float32: _exp_below_f32, types.float64: _exp_below_f64}.get(v)


# --------------------------------------------------------------------------- row helpers
@njit(**JIT)
def tanh_into(x, out):
    """out = tanh(x); 1-D arrays that do not overlap."""
    for j in range(x.shape[0]):
        out[j] = tanh_scalar(x[j])


@njit(**JIT)
def tanh_inplace(a):
    """a = tanh(a) (a loop over one array needs no alias check to vectorise)."""
    for j in range(a.shape[0]):
        a[j] = tanh_scalar(a[j])


@njit(**JIT)
def sigmoid_into(x, out):
    """out = σ(x); 1-D arrays that do not overlap."""
    for j in range(x.shape[0]):
        out[j] = sigmoid_scalar(x[j])


@njit(**JIT)
def sigmoid_inplace(a):
    for j in range(a.shape[0]):
        a[j] = sigmoid_scalar(a[j])


@njit(**JIT)
def copy_into(src, dst):
    for j in range(src.shape[0]):
        dst[j] = src[j]


@njit(**JIT)
def fill(dst, value):
    for j in range(dst.shape[0]):
        dst[j] = value


@njit(**JIT)
def add_into(dst, src):
    """dst += src."""
    for j in range(dst.shape[0]):
        dst[j] = dst[j] + src[j]


@njit(**JIT)
def keep_valid_rows(dst, src, mask, has_mask, t, b0, b1):
    """dst[b] = src[b] for the rows b0 ≤ b < b1 valid at step t; a masked step passes dst[b]
    through."""
    for b in range(b0, b1):
        if not has_mask or mask[t, b]:
            copy_into(src[b], dst[b])


TILE = 32  # transpose_into's block: 32 x 32 float32 rows of 128 bytes, two cache lines each


@njit(**JIT)
def transpose_into(a, out):
    """out = aᵀ for C-contiguous 2-D arrays, block by block: NumPy's copy of a.T walks one of
    the two arrays down its columns, one cache line per element (several times slower for a
    large W_hh; bit for bit the same, it only moves values)."""
    n, m = a.shape
    for i0 in range(0, n, TILE):
        i1 = min(i0 + TILE, n)
        for j0 in range(0, m, TILE):
            for j in range(j0, min(j0 + TILE, m)):
                row = out[j]
                for i in range(i0, i1):
                    row[i] = a[i, j]


# --------------------------------------------------------------------------- products
_CBLAS_HEAD = (types.int32, types.int32, types.int32, types.int64, types.int64, types.int64)
_CBLAS_TAIL = (types.intp, types.int64, types.intp, types.int64)


def external(name: str, signature: Signature) -> Any:
    """The C function `name` (added to LLVM's symbols by rnnlab.fast.blas) for compiled code to
    call. Typed Any: numba's stubs know a types.ExternalFunction as a numba type, not as the
    function it is in compiled code."""
    return types.ExternalFunction(name, signature)


SGEMM_TYPE = types.void(
    *_CBLAS_HEAD, types.float32, *_CBLAS_TAIL, types.float32, types.intp, types.int64
)
"""cblas_sgemm's signature with 64-bit integers (NumPy's OpenBLAS, MKL's ILP64 interface)."""
_sgemm = external(blas.SGEMM, SGEMM_TYPE)
_dgemm = external(
    blas.DGEMM,
    types.void(*_CBLAS_HEAD, types.float64, *_CBLAS_TAIL, types.float64, types.intp, types.int64),
)


_COMPUTE_HEAD = (types.int32, types.int64, types.int64, types.int64, types.int64, types.int64)
_sgemm_compute = external(
    blas.SGEMM_COMPUTE,
    types.void(*_COMPUTE_HEAD, *_CBLAS_TAIL, types.float32, types.intp, types.int64),
)
_dgemm_compute = external(
    blas.DGEMM_COMPUTE,
    types.void(*_COMPUTE_HEAD, *_CBLAS_TAIL, types.float64, types.intp, types.int64),
)


def gemm(A, W, C, numpy_blas):
    """C = A·Wm for a weight W = (Wm, packed) as rnnlab.fast passes the loops' weights:
    - Wm (N/NR, K, NR), laid out in panels (rnnlab.fast.tiles), with `packed` empty: the
      loops' own kernel;
    - Wm C-contiguous (K, N) with `packed` empty: NumPy's BLAS (or MKL) when `numpy_blas`
      (see .blas), else numba's np.dot;
    - `packed` holding the factor in MKL's packed format (and Wm empty), which MKL's
      gemm_compute multiplies without repacking it at every step.
    A has contiguous rows that may lie further apart (the first H columns of wider rows: a
    direction's states inside a bidirectional layer's output; x_t in a batch-first input),
    evenly spaced at least a row apart (a leading dimension ≥ K: M = 1 aside, a reversed,
    broadcast or overlapping view must be copied first); C is C-contiguous. Compiled code
    only (the overload below picks the kernel by Wm's type)."""
    raise NotImplementedError("kernels.gemm runs in compiled code only")


def gemm_acc(A, W, C, numpy_blas, tmp):
    """C += A·Wm for a weight W as gemm takes it; A and C as in gemm. `tmp`, C's shape, is
    used only by numba's np.dot (no CBLAS: no beta = 1). Compiled code only."""
    raise NotImplementedError("kernels.gemm_acc runs in compiled code only")


# numba's np.dot(a, b, out) returns `out`, which needs NRT (typed Any as SCALAR below is)
_WITH_NRT: Any = {**JIT, "_nrt": True}


@overload(gemm, jit_options=_WITH_NRT)
def _gemm_overload(A, W, C, numpy_blas):
    if W.types[0].ndim == 3:
        return lambda A, W, C, numpy_blas: tiles.product(A, W[0], C, False)

    def dense(A, W, C, numpy_blas):
        Bm, packed = W
        if packed.shape[0] > 0:
            _packed_product(A, packed, C, 0.0)
        elif not numpy_blas:
            np.dot(np.ascontiguousarray(A), Bm, C)
        else:
            _dense_product(A, Bm, C, 0.0)

    return dense


@overload(gemm_acc, jit_options=_WITH_NRT)
def _gemm_acc_overload(A, W, C, numpy_blas, tmp):
    if W.types[0].ndim == 3:
        return lambda A, W, C, numpy_blas, tmp: tiles.product(A, W[0], C, True)

    def dense(A, W, C, numpy_blas, tmp):
        Bm, packed = W
        if packed.shape[0] > 0:
            _packed_product(A, packed, C, 1.0)
        elif not numpy_blas:
            np.dot(np.ascontiguousarray(A), Bm, tmp)
            for i in range(A.shape[0]):
                add_into(C[i], tmp[i])
        else:
            _dense_product(A, Bm, C, 1.0)

    return dense


@njit(**JIT)
def _dense_product(A, Bm, C, beta):
    """C = A · Bm + beta C on the CBLAS (Bm C-contiguous; A's and C's rows contiguous, spaced
    by their leading dimensions)."""
    M, K = A.shape
    N = C.shape[1]
    lda = A.strides[0] // A.itemsize if M > 1 else K
    ldc = C.strides[0] // C.itemsize if M > 1 else N
    lda, ldb, ldc = max(lda, 1), max(N, 1), max(ldc, 1)
    head = (blas.ROW_MAJOR, blas.NO_TRANS, blas.NO_TRANS, M, N, K)
    if A.itemsize == 4:
        _sgemm(*head, 1.0, A.ctypes.data, lda, Bm.ctypes.data, ldb, beta, C.ctypes.data, ldc)
    else:
        _dgemm(*head, 1.0, A.ctypes.data, lda, Bm.ctypes.data, ldb, beta, C.ctypes.data, ldc)


@njit(**JIT)
def _packed_product(A, packed, C, beta):
    """C = A · (the factor in `packed`) + beta C on MKL's gemm_compute."""
    M, K = A.shape
    N = C.shape[1]
    lda = A.strides[0] // A.itemsize if M > 1 else K
    lda, ldc = max(lda, 1), max(N, 1)
    head = (blas.ROW_MAJOR, blas.NO_TRANS, blas.PACKED, M, N, K)
    p = packed.ctypes.data
    if A.itemsize == 4:
        _sgemm_compute(*head, A.ctypes.data, lda, p, ldc, beta, C.ctypes.data, ldc)
    else:
        _dgemm_compute(*head, A.ctypes.data, lda, p, ldc, beta, C.ctypes.data, ldc)


# --------------------------------------------------------------------------- losses
LOSS_BLOCK = 8  # batch rows squared_error_rows takes per step


@njit(**JIT)
def squared_error_rows(pred, targets, grad, mask, has_mask, count, sums, b0, b1):
    """For the rows b0 ≤ b < b1 of (B, T, C) arrays whose last axis is contiguous:
    grad = 2 (pred − targets) / count, zero where mask[b, t] is False, and
    sums[b] += Σ_t (pred − targets)² over row b's valid entries, each square rounded to the
    arrays' dtype and accumulated in float64 (the arithmetic of rnnlab.losses' NumPy path).
    A masked entry adds nothing whatever its target holds (NaN, inf, a square that would
    overflow), as in the NumPy path; a NaN or inf prediction there makes the sum NaN, for the
    caller to name (p · 0 is 0 for any finite p). One pass over the data where NumPy's
    takes five. Rows go LOSS_BLOCK batch rows at a time, step by step: a prediction that is
    a batch-first view of a time-major output then reads LOSS_BLOCK neighbouring rows per
    step instead of one row every B·C values."""
    _, T, C = pred.shape
    two, zero = pred.dtype.type(2.0), pred.dtype.type(0.0)
    for first in range(b0, b1, LOSS_BLOCK):
        for t in range(T):
            for b in range(first, min(first + LOSS_BLOCK, b1)):
                g, p, y = grad[b, t], pred[b, t], targets[b, t]
                acc = 0.0
                if has_mask and not mask[b, t]:
                    for j in range(C):
                        g[j] = zero
                        acc += np.float64(p[j] * zero)  # 0, or NaN from a NaN or inf
                    sums[b] += acc
                    continue
                for j in range(C):
                    r = p[j] - y[j]
                    acc += np.float64(r * r)
                    g[j] = (r * two) / count
                sums[b] += acc


@njit(inline="always", **JIT)
def _extremes(o):
    """(max, min) of a row, in eight running pairs: one pair waits on each comparison, and
    an LSTM's 104 logits took as long as the exps after them (a NaN may be missed here; it
    reaches the sum of the exps all the same)."""
    K = o.shape[0]
    a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = o[0]
    b0 = b1 = b2 = b3 = b4 = b5 = b6 = b7 = o[0]
    j = 0
    while j + 8 <= K:
        a0, b0 = max(a0, o[j]), min(b0, o[j])
        a1, b1 = max(a1, o[j + 1]), min(b1, o[j + 1])
        a2, b2 = max(a2, o[j + 2]), min(b2, o[j + 2])
        a3, b3 = max(a3, o[j + 3]), min(b3, o[j + 3])
        a4, b4 = max(a4, o[j + 4]), min(b4, o[j + 4])
        a5, b5 = max(a5, o[j + 5]), min(b5, o[j + 5])
        a6, b6 = max(a6, o[j + 6]), min(b6, o[j + 6])
        a7, b7 = max(a7, o[j + 7]), min(b7, o[j + 7])
        j += 8
    while j < K:
        a0, b0 = max(a0, o[j]), min(b0, o[j])
        j += 1
    top = max(max(max(a0, a1), max(a2, a3)), max(max(a4, a5), max(a6, a7)))
    low = min(min(min(b0, b1), min(b2, b3)), min(min(b4, b5), min(b6, b7)))
    return top, low


@njit(inline="always", **JIT)
def _total64(e):
    """Σ e in float64, in eight running sums (as _extremes: one waits on each add)."""
    K = e.shape[0]
    s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = 0.0
    j = 0
    while j + 8 <= K:
        s0 += np.float64(e[j])
        s1 += np.float64(e[j + 1])
        s2 += np.float64(e[j + 2])
        s3 += np.float64(e[j + 3])
        s4 += np.float64(e[j + 4])
        s5 += np.float64(e[j + 5])
        s6 += np.float64(e[j + 6])
        s7 += np.float64(e[j + 7])
        j += 8
    while j < K:
        s0 += np.float64(e[j])
        j += 1
    return ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))


@njit(**JIT)
def softmax_cross_entropy_rows(logits, targets, grad, mask, has_mask, count, sums, b0, b1):
    """For the rows b0 ≤ b < b1 of (B, T, K) logits whose last axis is contiguous and (B, T)
    class ids: grad = (softmax(o_bt) − [k = y_bt]) / count, zero where mask[b, t] is False,
    and sums[b] += Σ_t (log Σ_k e^{o_btk} − o_bt,y) over row b's valid steps, in float64:
    e = e^{o − max o}, s = Σ_k e in float64, the loss log s − (o_y − max o) with o_y − max o
    taken in float64 (in float32 it overflowed to −inf for a row whose logits lie more than
    float32's largest value apart, ±3e38: an inf loss where the loss, 6e38, is a float64;
    such an e is 0 as it should be), the gradient
    e · (1 / (s · count)) (a product where the NumPy path divides twice; the target's entry
    as there, (e_y / s − 1) / count), within a few ulp of that path's. A NaN or ±inf logit
    at a valid step makes the sum NaN (for the caller to name); at a masked step it adds
    o · 0, as squared_error_rows does. One pass where NumPy's takes eight; rows LOSS_BLOCK
    batch rows at a time, as there."""
    _, T, K = logits.shape
    one, zero = logits.dtype.type(1.0), logits.dtype.type(0.0)
    for first in range(b0, b1, LOSS_BLOCK):
        for t in range(T):
            for b in range(first, min(first + LOSS_BLOCK, b1)):
                o, g = logits[b, t], grad[b, t]
                if has_mask and not mask[b, t]:
                    acc = 0.0
                    for j in range(K):
                        g[j] = zero
                        acc += np.float64(o[j] * zero)  # 0, or NaN from a NaN or inf
                    sums[b] += acc
                    continue
                top, low = _extremes(o)
                if not (-np.inf < low and top < np.inf):
                    sums[b] += np.nan  # a logit of ±inf: refused as the NumPy path does
                for j in range(K):
                    g[j] = exp_below_scalar(o[j] - top)
                s = _total64(g)
                y = targets[b, t]
                sums[b] += np.log(s) - (np.float64(o[y]) - np.float64(top))
                at_y = g[y]
                scale = logits.dtype.type(1.0 / (s * count))
                for j in range(K):
                    g[j] = g[j] * scale
                g[y] = (at_y / logits.dtype.type(s) - one) / count


@njit(**JIT)
def squares_by_chunk(x, chunk, out, c0, c1):
    """out[c] = Σ x_i² over x's chunk c (the values c·chunk ≤ i < (c + 1)·chunk), each square
    taken in float64 and summed in eight running sums (one waits on each add), for the
    chunks c0 ≤ c < c1 of a 1-D array (the gradient norm of rnnlab.optim)."""
    n = x.shape[0]
    for c in range(c0, c1):
        lo = c * chunk
        hi = min(lo + chunk, n)
        s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = 0.0
        j = lo
        while j + 8 <= hi:
            v0, v1, v2, v3 = np.float64(x[j]), np.float64(x[j + 1]), np.float64(x[j + 2]), \
                np.float64(x[j + 3])
            v4, v5, v6, v7 = np.float64(x[j + 4]), np.float64(x[j + 5]), np.float64(x[j + 6]), \
                np.float64(x[j + 7])
            s0 += v0 * v0
            s1 += v1 * v1
            s2 += v2 * v2
            s3 += v3 * v3
            s4 += v4 * v4
            s5 += v5 * v5
            s6 += v6 * v6
            s7 += v7 * v7
            j += 8
        while j < hi:
            v = np.float64(x[j])
            s0 += v * v
            j += 1
        out[c] = ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))


# --------------------------------------------------------------------------- optimizers
PLAIN, L2, DECOUPLED = 0, 1, 2  # adam_pass's weight decay: none, Adam's L2 term, AdamW's


# (JIT's rules, inlined into its caller: no FMA, as in adam_pass itself)
_ELEMENT: Any = {"inline": "always", "error_model": "numpy", "fastmath": False, "_nrt": False}


@njit(**_ELEMENT)
def _adam_one(p, g, m, v, c1, small, rest, beta2, c2, bias2, eps, step, inf):
    """(p, m, v) after Adam's step on one element whose gradient g already holds any L2 term
    and p any decoupled decay (adam_pass's three loops differ only there), every operation
    rounded once, in the NumPy path's order (its lerp's two forms: optim._lerp)."""
    if small:
        m = m + c1 * (g - m)
    else:
        m = g - (g - m) * rest
    s = c2 * (g * g)
    if s == inf:
        s = (c2 * g) * g
    v = v * beta2 + s
    return p - step * (m / (np.sqrt(v) / bias2 + eps)), m, v


@njit(**JIT)
def adam_pass(p, g, m, v, scale, c1, beta2, c2, bias2, eps, step, decay, decay_kind):
    """Adam's step on 1-D contiguous arrays of one dtype in one pass, with the arithmetic and
    rounding of rnnlab.optim's NumPy path, operation by operation. The scalars come as that
    path's Python floats and are first rounded to the arrays' dtype, as NumPy rounds a Python
    float that meets an array (NEP 50; numba would compute `c1 * x` in float64). `scale`
    multiplies each gradient first, as a global-norm clip's `g *= c` in place would (g is
    not written):

        g' = g·scale + decay·p (L2) | g·scale;      p' = p·decay (DECOUPLED) | p
        m = m + c1·(g' − m) where c1 < 0.5, else g' − (g' − m)·(1 − c1)   (torch's lerp)
        v = v·β2 + s,  s = c2·(g'·g'), or (c2·g')·g' where g'·g' overflows
        p = p' − step·(m / (√v / bias2 + eps))

    (c1 = 1 − β1, c2 = 1 − β2, bias2 = √(1 − β2^t), step = lr / (1 − β1^t)). Each operation
    rounds once: no FMA (`fastmath=False`), and LLVM contracts nothing without its flag.
    Where c2·(g'·g') is inf, g' is finite (then (c2·g')·g' is NumPy's fallback) or ±inf (then
    that is inf as well): the one test `s == inf` is _scaled_square's rule.
    Returns 0, having written nothing, where two of the arrays overlap in memory: NumPy's
    eight passes then read what an earlier pass wrote (a gradient that is v itself reads the
    v of v·β2), which one pass per element would not. Else 1 where every new p and v is
    finite, 2 where one is not: the pass sees each value it writes, so the caller need not
    read them again to know (x − x is 0 for a finite x, NaN for ±inf and NaN; an and over
    booleans, which LLVM may reorder, not a float sum, which it may not)."""
    nbytes = p.size * p.itemsize
    starts = (p.ctypes.data, g.ctypes.data, m.ctypes.data, v.ctypes.data)
    for a in range(4):
        for b in range(a + 1, 4):
            if nbytes and max(starts[a], starts[b]) < min(starts[a], starts[b]) + nbytes:
                return 0
    dt = p.dtype.type
    scale, c1, beta2, c2, bias2, eps, step, decay = (
        dt(scale), dt(c1), dt(beta2), dt(c2), dt(bias2), dt(eps), dt(step), dt(decay)
    )  # fmt: skip
    inf, zero = dt(np.inf), dt(0.0)
    small, rest = c1 < dt(0.5), dt(1.0) - c1
    n = p.size
    fine = True
    if decay_kind == L2:
        for i in range(n):
            pi = p[i]
            pn, mn, vn = _adam_one(pi, g[i] * scale + decay * pi, m[i], v[i], c1, small, rest,
                                   beta2, c2, bias2, eps, step, inf)  # fmt: skip
            p[i], m[i], v[i] = pn, mn, vn
            fine = fine & (pn - pn == zero) & (vn - vn == zero)
    elif decay_kind == DECOUPLED:
        for i in range(n):
            pn, mn, vn = _adam_one(p[i] * decay, g[i] * scale, m[i], v[i], c1, small, rest,
                                   beta2, c2, bias2, eps, step, inf)  # fmt: skip
            p[i], m[i], v[i] = pn, mn, vn
            fine = fine & (pn - pn == zero) & (vn - vn == zero)
    else:
        for i in range(n):
            pn, mn, vn = _adam_one(p[i], g[i] * scale, m[i], v[i], c1, small, rest, beta2, c2,
                                   bias2, eps, step, inf)  # fmt: skip
            p[i], m[i], v[i] = pn, mn, vn
            fine = fine & (pn - pn == zero) & (vn - vn == zero)
    return 1 if fine else 2


# Every kernel compiles with rnnlab's LLVM options and only with them (llvm_options).
for _kernel in [v for v in globals().values() if isinstance(v, Dispatcher)]:
    scoped(_kernel)
