"""numba kernels: the whole time loop of each cell, forward and backward, in one compiled call.

At small H a NumPy time step is ~28 calls of 1–2 µs each, which is slower than the arithmetic
they do; here the loop over time runs inside one `@njit` function per cell and direction of
travel (forward pass or BPTT), so a step costs one or two BLAS products into preallocated
buffers plus a few short pointwise loops. The pointwise code repeats the cells' equations
(rnnlab.cells) line for line and in the same order of operations, so a tape written here is
the tape the NumPy cells write, up to the last bit or two of tanh and σ.

Rules that measurements impose on the code below (see shared/research/perf-anchors.md):
- pointwise loops are `for j in range(n)` over 1-D row views and touch few arrays each (LLVM
  vectorises them; a nonzero range start or more than ~8 alias checks keeps them scalar);
  slices are assigned by explicit loops (`x[:] = y` may allocate a temporary copy);
- `error_model="numpy"` so divisions vectorise; `fastmath=False` so results stay exact, except
  that tanh, σ and exp below may fuse a product and a sum into one FMA (`contract` alone: one
  rounding instead of two, nothing reordered or approximated);
- `_nrt=False`: no reference counting. Each row view made in a loop otherwise costs two
  atomic calls, 13 % of an LSTM forward and 30 % of its backward at (B, H) = (16, 64); the
  price is that kernels allocate nothing, so rnnlab.fast passes every buffer in;
- every array given to a product has contiguous rows; all but the states are C-contiguous.
  The states hs may be the first H columns of wider rows (rnnlab.fast passes the kernels a
  C-contiguous (T+1, B, W) view, W ≥ H, and they read and write hs[t, b, :H] only): in a
  bidirectional layer each direction writes its states straight into its half of the
  layer's output.

tanh and σ: numba has no vectorised tanh or exp (without Intel's SVML each is a scalar libm
call of 6–15 ns, more than the matrix products at H = 64). The functions below are Cephes'
exp and tanh, evaluated in the array's own precision, which vectorise to 0.3–0.5 ns a float32
element with AVX-512 and FMA:

    e^t  = 2^k · e^r,  k = round(t / ln2),  |r| ≤ ln2/2   (Padé in float64, degree 7 in float32)
    tanh(x) = sign(x) · (|x| + |x|·x²·P(x²)/Q(x²))       for |x| < 0.625 (float32: polynomial)
    tanh(x) = sign(x) · (1 − 2 / (e^{2|x|} + 1))           otherwise
    σ(x) = e^{|x|} / (e^{|x|} + 1)  for x ≥ 0,   1 / (e^{|x|} + 1)  for x < 0

with |x| clamped where the result has rounded to its limit (tanh: 20 in float64, 10 in float32;
σ: 40, where σ(−x) < 5e-18), which keeps 2^k an exact power of two, built from its bits
(exponent field k + bias, a bitcast that vectorises; the int64 shift and int-to-float convert
it replaced cost 0.1 ns more per σ at 16 lanes, same results). Against a long-double
oracle tanh is within 1.4 ulp in both precisions and σ within 2.5 ulp; NumPy's own tanh is
within 1.2 (float64) and 1.3 ulp (float32). This is not the 4e-7 rational approximation of
Eigen or XLA, which would break the float64 gradient checks. (σ = 0.5·tanh(x/2) + 0.5 as in
rnnlab.ops would cost a tanh; the exp form is 35 % cheaper and more accurate for x ≪ 0.)
"""

from __future__ import annotations

import math
import os

import llvmlite.binding as ll
import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic, overload

from rnnlab.fast import blas

JIT = {"cache": True, "error_model": "numpy", "fastmath": False, "nogil": True, "_nrt": False}


def _wide_vectors() -> bool:
    """Have LLVM vectorise loops 16 float32 lanes wide (one AVX-512 register) where the CPU has
    AVX-512; its cost model otherwise prefers 8 lanes there. Measured: σ 0.91 → 0.63 ns and
    tanh 1.33 → 0.89 ns an element, results bit for bit the same (the lanes do the same
    arithmetic). LLVM options are process-wide: numba code compiled after this module loads
    gets the same width. RNNLAB_VECTOR_WIDTH=default leaves LLVM's choice."""
    if os.environ.get("RNNLAB_VECTOR_WIDTH", "").strip().lower() == "default":
        return False
    if "+avx512f" not in ll.get_host_cpu_features().flatten():
        return False
    ll.set_option("rnnlab", "-force-vector-width=16")
    return True


WIDE_VECTORS = _wide_vectors()
# The scalar functions are inlined into the loops with their own fast-math flags: `contract`
# lets LLVM turn each Horner step p·x + c (and the range reduction t − k·ln2) into one FMA.
# Measured on 32·1024 float32 values: σ 0.46 → 0.31 ns, tanh 0.68 → 0.45 ns an element, the
# largest errors unchanged (6 million random points against a long double: the same 1.32 ulp
# for tanh in float32, 1.40 in float64, σ 2.47 and 2.37 ulp);
# LSTM inference at (B, T, I, H) = (64, 100, 128, 256) 24.4 → 23.2 ms, (128, 50, 256, 512)
# 80.1 → 77.5 (A/B in one process). `contract` on the whole loops gained nothing more.
_SCALAR = {"error_model": "numpy", "fastmath": {"contract"}, "_nrt": False}


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


@njit(**_SCALAR)
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


@njit(**_SCALAR)
def _exp_f32(t):
    """e^t for 0 ≤ t ≤ 40, float32."""
    k = np.floor(t * np.float32(_LOG2E) + np.float32(0.5))
    r = t - k * _LN2_32[0]
    r = r - k * _LN2_32[1]
    er = _horner(r, _EXP32) * (r * r) + r + np.float32(1.0)
    return er * _f32_bits((np.int32(k) + np.int32(127)) << np.int32(23))


@njit(**_SCALAR)
def _exp_f64(t):
    """e^t for 0 ≤ t ≤ 40, float64."""
    k = math.floor(t * _LOG2E + 0.5)
    r = t - k * _LN2_64[0]
    r = r - k * _LN2_64[1]
    rr = r * r
    px = r * _horner(rr, _EXP64_P)
    er = 1.0 + 2.0 * (px / (_horner(rr, _EXP64_Q) - px))
    return er * _f64_bits((np.int64(k) + np.int64(1023)) << np.int64(52))


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


def _tanh(v):
    """tanh of one float32 or float64 scalar inside a kernel (compiled by the overload)."""
    return np.tanh(v)


def _sigmoid(v):
    """σ of one float32 or float64 scalar inside a kernel (compiled by the overload)."""
    return 1.0 / (1.0 + np.exp(-v))


@overload(_tanh, jit_options=_SCALAR)
def _tanh_overload(v):
    return {types.float32: _tanh_f32, types.float64: _tanh_f64}.get(v)


@overload(_sigmoid, jit_options=_SCALAR)
def _sigmoid_overload(v):
    return {types.float32: _sigmoid_f32, types.float64: _sigmoid_f64}.get(v)


# --------------------------------------------------------------------------- row helpers
@njit(**JIT)
def tanh_into(x, out):
    """out = tanh(x); 1-D arrays that do not overlap."""
    for j in range(x.shape[0]):
        out[j] = _tanh(x[j])


@njit(**JIT)
def tanh_inplace(a):
    """a = tanh(a) (a loop over one array needs no alias check to vectorise)."""
    for j in range(a.shape[0]):
        a[j] = _tanh(a[j])


@njit(**JIT)
def sigmoid_into(x, out):
    """out = σ(x); 1-D arrays that do not overlap."""
    for j in range(x.shape[0]):
        out[j] = _sigmoid(x[j])


@njit(**JIT)
def sigmoid_inplace(a):
    for j in range(a.shape[0]):
        a[j] = _sigmoid(a[j])


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
    the two arrays down its columns, one cache line per element; a (2048, 512) float32 W_hh
    took 4.4 ms that way and 0.9 ms here (bit for bit the same, it only moves values)."""
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
_sgemm = types.ExternalFunction(
    blas.SGEMM,
    types.void(*_CBLAS_HEAD, types.float32, *_CBLAS_TAIL, types.float32, types.intp, types.int64),
)
_dgemm = types.ExternalFunction(
    blas.DGEMM,
    types.void(*_CBLAS_HEAD, types.float64, *_CBLAS_TAIL, types.float64, types.intp, types.int64),
)


_COMPUTE_HEAD = (types.int32, types.int64, types.int64, types.int64, types.int64, types.int64)
_sgemm_compute = types.ExternalFunction(
    blas.SGEMM_COMPUTE,
    types.void(*_COMPUTE_HEAD, *_CBLAS_TAIL, types.float32, types.intp, types.int64),
)
_dgemm_compute = types.ExternalFunction(
    blas.DGEMM_COMPUTE,
    types.void(*_COMPUTE_HEAD, *_CBLAS_TAIL, types.float64, types.intp, types.int64),
)


@njit(**{**JIT, "_nrt": True})  # numba's np.dot(a, b, out) returns `out`, which needs NRT
def gemm(A, W, C, numpy_blas):
    """C = A Wm for a weight W = (Wm, packed) as rnnlab.fast passes the loops' weights: Wm
    C-contiguous with `packed` empty, or `packed` holding the factor in MKL's packed format
    (and Wm empty), which MKL's gemm_compute multiplies without repacking it at every step.
    A has contiguous rows that may lie further apart (the first H columns of wider rows: a
    direction's states inside a bidirectional layer's output; x_t in a batch-first input),
    evenly spaced at least a row apart (a leading dimension ≥ K: M = 1 aside, a reversed,
    broadcast or overlapping view must be copied first); C is C-contiguous. On
    NumPy's BLAS (or MKL) when `numpy_blas` (see .blas), else numba's np.dot."""
    Bm, packed = W
    if packed.shape[0] > 0:
        _packed_product(A, packed, C, 0.0)
        return
    M, K = A.shape
    N = C.shape[1]
    lda = A.strides[0] // A.itemsize if M > 1 else K
    lda, ldc = max(lda, 1), max(N, 1)
    if not numpy_blas:
        np.dot(np.ascontiguousarray(A), Bm, C)
        return
    head = (blas.ROW_MAJOR, blas.NO_TRANS, blas.NO_TRANS, M, N, K)
    if A.itemsize == 4:
        _sgemm(*head, 1.0, A.ctypes.data, lda, Bm.ctypes.data, ldc, 0.0, C.ctypes.data, ldc)
    else:
        _dgemm(*head, 1.0, A.ctypes.data, lda, Bm.ctypes.data, ldc, 0.0, C.ctypes.data, ldc)


@njit(**JIT)
def gemm_add(A, W, C):
    """C += A Wm for a packed weight W = (empty, packed) (gemm's pair); A and C as in gemm."""
    _packed_product(A, W[1], C, 1.0)


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


# --------------------------------------------------------------------------- Elman
# Every kernel walks t = 0..T-1 (forward pass; BPTT runs it backwards) or the reverse, with
# step t reading state row `prev` and writing row `out` of hs (see rnnlab.recurrence).
# Weights (W_hhT, W_hh, their blocks, W_catT) come as gemm takes them: pairs (dense, packed).
# Masked rows (mask[t, b] False) copy the previous state forward and get no gradient.
# Every kernel touches only the batch rows b0 ≤ b < b1 of its arrays and buffers (the rows of
# a batch never interact), so rnnlab.fast can run parts of one batch on several threads.


@njit(**JIT)
def _elman_cell(a, h_prev, h, relu, masked):
    """One row of an Elman step from its pre-activation a: h = tanh(a) or max(a, 0); a masked
    row copies h_prev forward instead."""
    if relu:
        zero = a.dtype.type(0.0)
        for j in range(a.shape[0]):
            h[j] = a[j] if a[j] > zero else zero
    else:
        tanh_into(a, h)
    if masked:
        copy_into(h_prev, h)


@njit(**JIT)
def elman_forward(
    XA, b_ih, W_hhT, b_hh, hs, mask, has_mask, reverse, relu, numpy_blas, a, b0, b1
):  # fmt: skip
    """a_t = (xa_t + b_ih) + h_{t-1} W_hhᵀ + b_hh;  h_t = tanh(a_t) or max(a_t, 0).
    XA: x_t W_ihᵀ without its bias (added here, in the order of rnnlab.recurrence, which adds
    it to the projection: the same sums, rounded alike).  a: (B, H) buffer."""
    T, _, H = XA.shape
    for s in range(T):
        t = T - 1 - s if reverse else s
        prev, out = (t + 1, t) if reverse else (t, t + 1)
        gemm(hs[prev, b0:b1, :H], W_hhT, a[b0:b1], numpy_blas)
        for b in range(b0, b1):
            a_b, xa, h = a[b], XA[t, b], hs[out, b, :H]
            for j in range(H):
                a_b[j] = ((xa[j] + b_ih[j]) + a_b[j]) + b_hh[j]
            _elman_cell(a_b, hs[prev, b, :H], h, relu, has_mask and not mask[t, b])


@njit(**JIT)
def elman_backward(
    W_hh, hs, mask, has_mask, reverse, dys, has_dys, dh, dXA, trace, has_trace, relu,
    numpy_blas, dh_new, b0, b1,
):  # fmt: skip
    """da_t = dh_t ⊙ φ'(a_t), φ' = 1 − h_t² or [h_t > 0];  dh_{t-1} = da_t W_hh.

    dh (B, H): ∂L/∂h_T in, ∂L/∂h_0 out.  dh_new: (B, H) buffer."""
    T, _, H = dXA.shape
    one, zero = hs.dtype.type(1.0), hs.dtype.type(0.0)
    for s in range(T):
        t = s if reverse else T - 1 - s
        out = t if reverse else t + 1
        for b in range(b0, b1):
            valid = not has_mask or mask[t, b]
            dh_b, da, h = dh[b], dXA[t, b], hs[out, b, :H]
            if has_dys and valid:
                add_into(dh_b, dys[t, b])
            if has_trace:
                copy_into(dh_b, trace[t, b])
            if not valid:
                fill(da, zero)
            elif relu:
                for j in range(H):
                    da[j] = dh_b[j] if h[j] > zero else zero
            else:
                for j in range(H):
                    da[j] = dh_b[j] * (one - h[j] * h[j])
        gemm(dXA[t, b0:b1], W_hh, dh_new[b0:b1], numpy_blas)
        keep_valid_rows(dh, dh_new, mask, has_mask, t, b0, b1)


# --------------------------------------------------------------------------- LSTM
@njit(**JIT)
def _lstm_cell(z, gates, c_prev, c, tc, h_prev, h, masked):
    """One row of an LSTM step from its pre-activations z (4H): gates = σ, σ, tanh, σ of z's
    blocks; c = f ⊙ c_prev + i ⊙ g; h = o ⊙ tanh(c) (tanh(c) into tc); a masked row copies
    c_prev and h_prev forward instead."""
    H = c.shape[0]
    sigmoid_into(z[: 2 * H], gates[: 2 * H])
    tanh_into(z[2 * H : 3 * H], gates[2 * H : 3 * H])
    sigmoid_into(z[3 * H :], gates[3 * H :])
    _lstm_state(gates, c_prev, c, tc, h_prev, h, masked)


@njit(**JIT)
def _biased_sigmoid_inplace(a, bias):
    """a = σ(a + bias)."""
    for j in range(a.shape[0]):
        a[j] = _sigmoid(a[j] + bias[j])


@njit(**JIT)
def _biased_tanh_inplace(a, bias):
    """a = tanh(a + bias)."""
    for j in range(a.shape[0]):
        a[j] = _tanh(a[j] + bias[j])


@njit(**JIT)
def _lstm_cell_inplace(z, bias, c_prev, c, tc, h_prev, h, masked):
    """_lstm_cell for inference: the gates of z + bias computed over z itself (no tape to
    keep them in), the bias added as each gate is: one array of (B, 4H) fewer in the cache
    and one pass over it fewer."""
    H = c.shape[0]
    _biased_sigmoid_inplace(z[: 2 * H], bias[: 2 * H])
    _biased_tanh_inplace(z[2 * H : 3 * H], bias[2 * H : 3 * H])
    _biased_sigmoid_inplace(z[3 * H :], bias[3 * H :])
    _lstm_state(z, c_prev, c, tc, h_prev, h, masked)


@njit(**JIT)
def _lstm_state(gates, c_prev, c, tc, h_prev, h, masked):
    """c = f ⊙ c_prev + i ⊙ g; h = o ⊙ tanh(c) from one row's gates (4H)."""
    H = c.shape[0]
    i, f, g, o = gates[:H], gates[H : 2 * H], gates[2 * H : 3 * H], gates[3 * H :]
    for j in range(H):
        c[j] = f[j] * c_prev[j]
    for j in range(H):
        c[j] = c[j] + i[j] * g[j]
    tanh_into(c, tc)
    for j in range(H):
        h[j] = o[j] * tc[j]
    if masked:
        copy_into(h_prev, h)
        copy_into(c_prev, c)


@njit(**JIT)
def lstm_forward(
    XA, b_ih, W_hhT, b_hh, hs, cs, ifgo, tanh_c, mask, has_mask, reverse, numpy_blas, z, b0, b1
):  # fmt: skip
    """z = (xa + b_ih) + h_{t-1} W_hhᵀ + b_hh (XA without its bias, as in elman_forward);
    i, f, o = σ(z_i, z_f, z_o);  g = tanh(z_g);  c_t = f ⊙ c_{t-1} + i ⊙ g;
    h_t = o ⊙ tanh(c_t).   z: (B, 4H) and tanh_c: (B, H) buffers."""
    T, _, G = XA.shape
    H = G // 4
    keep = ifgo.shape[0] == T  # a one-step tape is overwritten at every step (inference)
    for s in range(T):
        t = T - 1 - s if reverse else s
        ti = t if keep else 0
        prev, out = (t + 1, t) if reverse else (t, t + 1)
        gemm(hs[prev, b0:b1, :H], W_hhT, z[b0:b1], numpy_blas)
        for b in range(b0, b1):
            z_b, xa, gates = z[b], XA[t, b], ifgo[ti, b]
            for j in range(G):
                z_b[j] = ((xa[j] + b_ih[j]) + z_b[j]) + b_hh[j]
            masked = has_mask and not mask[t, b]
            _lstm_cell(
                z_b,
                gates,
                cs[prev, b],
                cs[out, b],
                tanh_c[b],
                hs[prev, b, :H],
                hs[out, b, :H],
                masked,
            )


@njit(**JIT)
def lstm_backward(
    W_hh, cs, ifgo, tanh_c, mask, has_mask, reverse, dys, has_dys, dh, dc, trace, has_trace,
    numpy_blas, dh_new, b0, b1,
):  # fmt: skip
    """do = dh ⊙ tanh(c_t);  dc += dh ⊙ o ⊙ (1 − tanh²(c_t));
    dz_i = dc ⊙ g ⊙ i(1−i);  dz_f = dc ⊙ c_{t-1} ⊙ f(1−f);  dz_g = dc ⊙ i ⊙ (1−g²);
    dz_o = do ⊙ o(1−o);  dc_{t-1} = dc ⊙ f;  dh_{t-1} = dz W_hh.

    In place: ifgo holds the gates i, f, g, o in and dz (∂L/∂ pre-activations) out, step by
    step, so BPTT needs no second (T, B, 4H) array. Each loop below reads and writes one gate
    block at the same index (no alias check stops it vectorising); dz_g goes through dh_new[b]
    because dz_i still needs g.
    tanh(c_t) is recomputed from c_t into the buffer tanh_c (B, H), bit for bit the forward's.
    dh, dc (B, H): ∂L/∂h_T, ∂L/∂c_T in, ∂L/∂h_0, ∂L/∂c_0 out.  dh_new: (B, H) buffer."""
    T, _, G = ifgo.shape
    H = G // 4
    one, zero = cs.dtype.type(1.0), cs.dtype.type(0.0)
    for s in range(T):
        t = s if reverse else T - 1 - s
        prev, out = (t + 1, t) if reverse else (t, t + 1)
        for b in range(b0, b1):
            valid = not has_mask or mask[t, b]
            dh_b, dc_b, gates = dh[b], dc[b], ifgo[t, b]
            if has_dys and valid:
                add_into(dh_b, dys[t, b])
            if has_trace:
                copy_into(dh_b, trace[t, b])
            if not valid:
                fill(gates, zero)
                continue
            tc, c_prev, dz_g = tanh_c[b], cs[prev, b], dh_new[b]
            tanh_into(cs[out, b], tc)
            i, f, g, o = gates[:H], gates[H : 2 * H], gates[2 * H : 3 * H], gates[3 * H :]
            for j in range(H):
                dc_b[j] = dc_b[j] + dh_b[j] * o[j] * (one - tc[j] * tc[j])
            for j in range(H):
                o[j] = (dh_b[j] * tc[j]) * (o[j] * (one - o[j]))
            for j in range(H):
                dz_g[j] = (dc_b[j] * i[j]) * (one - g[j] * g[j])
            for j in range(H):
                i[j] = (dc_b[j] * g[j]) * (i[j] * (one - i[j]))
            copy_into(dz_g, g)
            for j in range(H):
                fj, dcj = f[j], dc_b[j]
                f[j] = (dcj * c_prev[j]) * (fj * (one - fj))
                dc_b[j] = dcj * fj
        gemm(ifgo[t, b0:b1], W_hh, dh_new[b0:b1], numpy_blas)
        keep_valid_rows(dh, dh_new, mask, has_mask, t, b0, b1)


# --------------------------------------------------------------------------- GRU
@njit(**JIT)
def gru_forward(
    XA, b_ih, W_hhT, W_rzT, W_nT, b_hh, hs, rzn, hn, mask, has_mask, reverse, reset_after,
    numpy_blas, ha, a_n, b0, b1,
):  # fmt: skip
    """r, z = σ(xa_rz + (h_{t-1} W_hh,rzᵀ + b_hh,rz));  then
    reset_after: hn = h_{t-1} W_hnᵀ + b_hn,  n = tanh(xa_n + r ⊙ hn);
    original:    hn = r ⊙ h_{t-1},           n = tanh((hn W_hnᵀ + b_hn) + xa_n);
    h_t = (h_{t-1} − n) ⊙ z + n   (= (1 − z) ⊙ n + z ⊙ h_{t-1}).

    XA holds x_t W_ihᵀ without its bias; xa above is (XA + b_ih), added here (see elman_forward).
    XA may be rzn itself (the projection written into the tape): every row of XA is read
    before the gates overwrite it, the sums going through ha.
    W_rzT, W_nT: C-contiguous column blocks of W_hhT (the original form's two products).
    ha: (B, 3H) buffer (reset_after) or (B, 2H); a_n: (B, H) buffer."""
    T, _, G = XA.shape
    H = G // 3
    keep = rzn.shape[0] == T  # a one-step tape is overwritten at every step (inference)
    for s in range(T):
        t = T - 1 - s if reverse else s
        ti = t if keep else 0
        prev, out = (t + 1, t) if reverse else (t, t + 1)
        gemm(hs[prev, b0:b1, :H], W_hhT if reset_after else W_rzT, ha[b0:b1], numpy_blas)
        for b in range(b0, b1):
            ha_b, xa, gates, hn_b = ha[b], XA[t, b], rzn[ti, b], hn[ti, b]
            add_into(ha_b, b_hh[: ha_b.shape[0]])
            for j in range(2 * H):
                ha_b[j] = (xa[j] + b_ih[j]) + ha_b[j]
            sigmoid_into(ha_b[: 2 * H], gates[: 2 * H])
            r = gates[:H]
            if reset_after:
                a, xa_n, bx_n = ha_b[2 * H :], xa[2 * H :], b_ih[2 * H :]
                copy_into(a, hn_b)
                for j in range(H):
                    a[j] = (xa_n[j] + bx_n[j]) + r[j] * hn_b[j]
                tanh_into(a, gates[2 * H :])
            else:
                h_prev = hs[prev, b, :H]
                for j in range(H):
                    hn_b[j] = r[j] * h_prev[j]
        if not reset_after:
            gemm(hn[ti, b0:b1], W_nT, a_n[b0:b1], numpy_blas)
            b_n, bx_n = b_hh[2 * H :], b_ih[2 * H :]
            for b in range(b0, b1):
                a, xa_n = a_n[b], XA[t, b, 2 * H :]
                for j in range(H):
                    a[j] = (a[j] + b_n[j]) + (xa_n[j] + bx_n[j])
                tanh_into(a, rzn[ti, b, 2 * H :])
        for b in range(b0, b1):
            gates, h_prev, h = rzn[ti, b], hs[prev, b, :H], hs[out, b, :H]
            z, n = gates[H : 2 * H], gates[2 * H :]
            for j in range(H):
                h[j] = (h_prev[j] - n[j]) * z[j] + n[j]
            if has_mask and not mask[t, b]:
                copy_into(h_prev, h)


@njit(**JIT)
def gru_backward(
    W_hh, W_rz, W_n, hs, rzn, hn, mask, has_mask, reverse, dys, has_dys, dh, dHA_n, trace,
    has_trace, reset_after, numpy_blas, dh_new, da_n_rows, drh, da_h, b0, b1,
):  # fmt: skip
    """da_n = dh ⊙ (1 − z) ⊙ (1 − n²);  da_z = dh ⊙ (h_{t-1} − n) ⊙ z(1 − z);  then
    reset_after: da_r = da_n ⊙ hn ⊙ r(1 − r);  W_hh side: [da_r, da_z, da_n ⊙ r];
                 dh_{t-1} = (W_hh side) W_hh + dh ⊙ z
    original:    d(r⊙h) = da_n W_hn;  da_r = d(r⊙h) ⊙ h_{t-1} ⊙ r(1 − r);  W_hh side = da;
                 dh_{t-1} = [da_r, da_z] W_hh,rz + dh ⊙ z + d(r⊙h) ⊙ r.

    In place: rzn holds the gates r, z, n in and da = ∂L/∂ pre-activations (as seen by W_ih)
    out. dHA_n (T, B, H) gets the n block of the W_hh side for reset_after (da_n ⊙ r; its r
    and z blocks are da's), and may be hn itself (step t reads hn[t] before it writes there);
    unused in the original form, where the W_hh side is da.
    dh (B, H): ∂L/∂h_T in, ∂L/∂h_0 out.  W_rz, W_n: C-contiguous row blocks of W_hh.
    Buffers (B, H): dh_new, da_n_rows, drh; da_h (B, 3H) reset_after, else (B, 2H)."""
    T, _, G = rzn.shape
    H = G // 3
    one, zero = hs.dtype.type(1.0), hs.dtype.type(0.0)
    for s in range(T):
        t = s if reverse else T - 1 - s
        prev = t + 1 if reverse else t
        for b in range(b0, b1):
            valid = not has_mask or mask[t, b]
            dh_b, da = dh[b], rzn[t, b]
            if has_dys and valid:
                add_into(dh_b, dys[t, b])
            if has_trace:
                copy_into(dh_b, trace[t, b])
            if not valid:
                fill(da, zero)
                fill(da_h[b], zero)
                fill(da_n_rows[b], zero)
                if reset_after:
                    fill(dHA_n[t, b], zero)
                continue
            h_prev, da_z = hs[prev, b, :H], dh_new[b]
            r, z, n = da[:H], da[H : 2 * H], da[2 * H :]
            for j in range(H):
                da_z[j] = (dh_b[j] * (h_prev[j] - n[j])) * (z[j] * (one - z[j]))
            for j in range(H):
                n[j] = (dh_b[j] * (one - z[j])) * (one - n[j] * n[j])
            for j in range(H):
                dh_b[j] = dh_b[j] * z[j]  # the part of dh_{t-1} that skips the products
            copy_into(da_z, z)
            if reset_after:  # dHA_n may be hn itself: each index is read before written
                hn_b, dhn, dah = hn[t, b], dHA_n[t, b], da_h[b]
                for j in range(H):
                    rj, hnj = r[j], hn_b[j]
                    dhn[j] = n[j] * rj
                    r[j] = (n[j] * hnj) * (rj * (one - rj))
                copy_into(da[: 2 * H], dah[: 2 * H])
                copy_into(dhn, dah[2 * H :])
            else:
                copy_into(n, da_n_rows[b])
        if reset_after:
            gemm(da_h[b0:b1], W_hh, dh_new[b0:b1], numpy_blas)
        else:
            gemm(da_n_rows[b0:b1], W_n, drh[b0:b1], numpy_blas)
            for b in range(b0, b1):
                if has_mask and not mask[t, b]:
                    continue
                h_prev, da, drh_b = hs[prev, b, :H], rzn[t, b], drh[b]
                r = da[:H]
                for j in range(H):
                    rj, d = r[j], drh_b[j]
                    r[j] = (d * h_prev[j]) * (rj * (one - rj))
                    drh_b[j] = d * rj
                copy_into(da[: 2 * H], da_h[b])
            gemm(da_h[b0:b1], W_rz, dh_new[b0:b1], numpy_blas)
        for b in range(b0, b1):
            if has_mask and not mask[t, b]:
                continue
            dh_b, dh_new_b = dh[b], dh_new[b]
            if reset_after:
                for j in range(H):
                    dh_b[j] = dh_new_b[j] + dh_b[j]
            else:
                drh_b = drh[b]
                for j in range(H):
                    dh_b[j] = (dh_new_b[j] + dh_b[j]) + drh_b[j]


# --------------------------------------------------------------------------- inference
# Without a tape nothing needs the input projection as an array of its own: each step takes
# [x_t | h_{t-1}] · [W_ih | W_hh]ᵀ straight from x_t and h_{t-1}, which skips writing and
# reading a (T, B, G·H) projection and the per-row adds of b_ih. With the weights packed for
# MKL that is two products, x_t W_ihᵀ and then h_{t-1} W_hhᵀ added to it, on the rows where
# they lie (x_t in a batch-first input, h_{t-1} in hs): W_x = W_ihᵀ and W_h = W_hhᵀ packed.
# Otherwise W_h is empty and W_x = [W_ih | W_hh]ᵀ takes the rows gathered into xh in one
# product (K = I + H). The sums run in another order than the training loops', so results
# differ from theirs by float rounding.
@njit(**JIT)
def _gather_inputs(X, hs, xh, t, prev, b0, b1):
    """xh[b] = [x_t[b] | h_{t-1}[b]] for the rows b0 ≤ b < b1."""
    I = X.shape[2]
    H = xh.shape[1] - I
    for b in range(b0, b1):
        row, x, h = xh[b], X[t, b], hs[prev, b, :H]
        for j in range(I):
            row[j] = x[j]
        rest = row[I:]
        for j in range(H):
            rest[j] = h[j]


@njit(**JIT)
def _infer_product(X, hs, H, W_x, W_h, xh, out, t, prev, numpy_blas, b0, b1):
    """out[b0:b1] = [x_t | h_{t-1}] [W_ih | W_hh]ᵀ for those rows (see above)."""
    if W_h[1].shape[0] > 0:
        gemm(X[t, b0:b1], W_x, out[b0:b1], numpy_blas)
        gemm_add(hs[prev, b0:b1, :H], W_h, out[b0:b1])
    else:
        _gather_inputs(X, hs, xh, t, prev, b0, b1)
        gemm(xh[b0:b1], W_x, out[b0:b1], numpy_blas)


@njit(**JIT)
def elman_infer(
    X, W_x, W_h, bias, hs, mask, has_mask, reverse, relu, numpy_blas, xh, a, b0, b1
):  # fmt: skip
    """h_t = φ([x_t | h_{t-1}] [W_ih | W_hh]ᵀ + (b_ih + b_hh)).  X: (T, B, I), rows contiguous;
    W_x, W_h as above; xh: (B, I + H) (unused when W_h is given) and a: (B, H) buffers."""
    T, _, _ = X.shape
    H = a.shape[1]
    for s in range(T):
        t = T - 1 - s if reverse else s
        prev, out = (t + 1, t) if reverse else (t, t + 1)
        _infer_product(X, hs, H, W_x, W_h, xh, a, t, prev, numpy_blas, b0, b1)
        for b in range(b0, b1):
            a_b, h = a[b], hs[out, b, :H]
            for j in range(H):
                a_b[j] = a_b[j] + bias[j]
            _elman_cell(a_b, hs[prev, b, :H], h, relu, has_mask and not mask[t, b])


@njit(**JIT)
def lstm_infer(
    X, W_x, W_h, bias, hs, cs, mask, has_mask, reverse, numpy_blas, xh, z, tc, b0, b1
):  # fmt: skip
    """The LSTM step of lstm_forward with z = [x_t | h_{t-1}] [W_ih | W_hh]ᵀ + (b_ih + b_hh),
    the gates computed over z (_lstm_cell_inplace). W_x, W_h as above; buffers xh
    (B, I + H), z (B, 4H), tc (B, H). cs may have T + 1 rows or two, c_t then in row t mod 2
    (no one reads the cell states of inference but the last: 6.5 MB fewer written at
    (B, T, H) = (64, 100, 256))."""
    T, _, _ = X.shape
    G = z.shape[1]
    H = G // 4
    rows = cs.shape[0]
    for s in range(T):
        t = T - 1 - s if reverse else s
        prev, out = (t + 1, t) if reverse else (t, t + 1)
        _infer_product(X, hs, H, W_x, W_h, xh, z, t, prev, numpy_blas, b0, b1)
        c_prev, c = cs[prev % rows], cs[out % rows]
        for b in range(b0, b1):
            masked = has_mask and not mask[t, b]
            h_prev, h = hs[prev, b, :H], hs[out, b, :H]
            _lstm_cell_inplace(z[b], bias, c_prev[b], c[b], tc[b], h_prev, h, masked)


# --------------------------------------------------------------------------- losses
LOSS_BLOCK = 8  # batch rows squared_error_rows takes per step


@njit(**JIT)
def squared_error_rows(pred, targets, grad, mask, has_mask, count, sums, part, b0, b1):
    """For the rows b0 ≤ b < b1 of (B, T, C) arrays whose last axis is contiguous:
    grad = 2 (pred − targets) / count, zero where mask[b, t] is False, and
    sums[part] = Σ (pred − targets)² over the valid entries, each square rounded to the
    arrays' dtype and accumulated in float64 (the arithmetic of rnnlab.losses' NumPy path).
    A NaN or inf at a masked entry still makes the sum NaN, as the NumPy path's masking by
    multiplication does (the caller then names it). One pass over the data where NumPy's
    takes five. Rows go LOSS_BLOCK batch rows at a time, step by step: a prediction that is
    a batch-first view of a time-major output then reads LOSS_BLOCK neighbouring rows per
    step instead of one row every B·C values (S4's (128, 50, 512): 4.45 → 3.41 ms)."""
    _, T, C = pred.shape
    two, zero = pred.dtype.type(2.0), pred.dtype.type(0.0)
    total = 0.0
    for first in range(b0, b1, LOSS_BLOCK):
        for t in range(T):
            for b in range(first, min(first + LOSS_BLOCK, b1)):
                g, p, y = grad[b, t], pred[b, t], targets[b, t]
                acc = 0.0
                if has_mask and not mask[b, t]:
                    for j in range(C):
                        g[j] = zero
                        acc += np.float64((p[j] - y[j]) * zero)  # 0, or NaN from NaN or inf
                    total += acc
                    continue
                for j in range(C):
                    r = p[j] - y[j]
                    acc += np.float64(r * r)
                    g[j] = (r * two) / count
                total += acc
    sums[part] = total
