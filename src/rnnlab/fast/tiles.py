"""rnnlab's own kernel for the loops' per-step products: C = A·W (or C += A·W) for the few
rows of one time step, on a weight laid out once per loop in panels of NR columns.

A BLAS call at these shapes (8–64 rows against W_hhᵀ) spends much of its time apart from the
arithmetic: it packs W's panels again at every call (W_hhᵀ of an LSTM with H = 128 is 256 KB,
copied for 2 MFLOP of work) and decides its blocking for a product it has never seen. The
loops make the same product at every step, so W is laid out once, as BLAS would pack it,
and each step runs only the inner kernel: a tile of MR rows × NR columns of C held in vector
registers while k runs over W's rows, one FMA per lane and W value, each tile written once.
On an AMD EPYC (Zen 3, AVX2) one thread at 16×128×512 took 23 µs against OpenBLAS's 36
(bench/README.md, "The loops' own product kernel", has the measurements and the command);
whether it is used is measured per host with the BLAS choice (rnnlab._blaschoice).

The kernel is LLVM IR built here (a numba intrinsic): NR/VW accumulator vectors per row,
`llvm.fma` on vectors of VW lanes (16 float32 lanes where the CPU has AVX-512, else 8; half
as many float64), so the register tile does not depend on what the loop vectoriser decides.
Each element of C is one sum over k in order, FMA-rounded: not BLAS's order of rounding,
within float32's noise of it, and float64 stays exact to the gradient checks.

    panel_width(dtype) -> int            NR, the columns of one panel
    takes(shape, dtype) -> bool          whether a (K, N) weight can be laid out in panels
    panels(W) -> (N/NR, K, NR) array     W (K, N) laid out for `product`
    product(A, P, C, add)                C = A·W, or C += A·W if add (compiled; A and C
                                         with contiguous rows, spaced by their strides)
"""

from __future__ import annotations

import functools
from typing import Any

import llvmlite.binding as ll
import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic
from numpy.typing import DTypeLike

MR = 4  # rows of C per tile
VECTORS = 2  # vectors of VW lanes per row of a tile: NR = VECTORS · VW
_WIDE = "+avx512f" in ll.get_host_cpu_features().flatten()
_LANES32 = 16 if _WIDE else 8  # float32 lanes of one vector register


def lanes(dtype: DTypeLike) -> int:
    """VW: the lanes of one vector register for this dtype."""
    return _LANES32 if np.dtype(dtype).itemsize == 4 else _LANES32 // 2


def panel_width(dtype: DTypeLike) -> int:
    """NR: the columns of one panel (and of one tile) for this dtype."""
    return VECTORS * lanes(dtype)


def takes(shape: tuple[int, int], dtype: DTypeLike) -> bool:
    """Whether a (K, N) weight of this dtype can be laid out in panels: float32 or float64,
    N a multiple of NR, K ≥ 1."""
    dt = np.dtype(dtype)
    return dt in (np.float32, np.float64) and shape[0] >= 1 and shape[1] % panel_width(dt) == 0


def panels(W: np.ndarray) -> np.ndarray:
    """W (K, N), any strides, as (N/NR, K, NR): panel p holds columns p·NR … p·NR + NR − 1
    of every row, so a tile reads its NR values of row k as one run."""
    K, N = W.shape
    nr = panel_width(W.dtype)
    out = np.empty((N // nr, K, nr), W.dtype)
    np.copyto(out, W.reshape(K, N // nr, nr).transpose(1, 0, 2))
    return out


@functools.cache
def _tile(rows: int) -> Any:
    """The intrinsic tile(A, a0, lda, P, p0, K, C, c0, ldc, add): rows × NR values of C from
    C[c0:] (rows ldc apart) = Σ_k A[a0 + r·lda + k] · P[p0 + k·NR : p0 + k·NR + NR], added to
    what C holds if add; A, P and C of one dtype, float32 or float64."""

    @intrinsic
    def tile(typingctx: Any, A: Any, a0: Any, lda: Any, P: Any, p0: Any, K: Any, C: Any,
             c0: Any, ldc: Any, add: Any) -> Any:  # fmt: skip
        reals = (types.float32, types.float64)
        if A.dtype not in reals or P.dtype != A.dtype or C.dtype != A.dtype:
            return None
        f64 = A.dtype == types.float64
        vw = _LANES32 // 2 if f64 else _LANES32
        nr = VECTORS * vw
        sig = types.void(A, a0, lda, P, p0, K, C, c0, ldc, add)

        def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
            A_, a0_, lda_, P_, p0_, K_, C_, c0_, ldc_, add_ = args
            real = ir.DoubleType() if f64 else ir.FloatType()
            vec = ir.VectorType(real, vw)
            i32, i64 = ir.IntType(32), ir.IntType(64)
            align = 8 if f64 else 4

            def data(i: int) -> Any:
                return context.make_array(signature.args[i])(context, builder, args[i]).data

            a_ptr = builder.gep(data(0), [a0_])
            p_ptr = builder.gep(data(3), [p0_])
            c_ptr = builder.gep(data(6), [c0_])
            fma = cgutils.get_or_insert_function(  # type: ignore[no-untyped-call]
                builder.module, ir.FunctionType(vec, [vec, vec, vec]),
                f"llvm.fma.v{vw}{'f64' if f64 else 'f32'}",
            )  # fmt: skip
            zero = ir.Constant(vec, None)
            undef = ir.Constant(vec, ir.Undefined)
            splat = ir.Constant(ir.VectorType(i32, vw), [0] * vw)

            before = builder.block
            loop = builder.append_basic_block("tile.k")
            done = builder.append_basic_block("tile.done")
            builder.cbranch(builder.icmp_signed(">", K_, ir.Constant(i64, 0)), loop, done)

            builder.position_at_end(loop)
            k = builder.phi(i64)
            k.add_incoming(ir.Constant(i64, 0), before)
            acc = [[builder.phi(vec) for _ in range(VECTORS)] for _ in range(rows)]
            for row in acc:
                for a in row:
                    a.add_incoming(zero, before)
            w_row = builder.gep(p_ptr, [builder.mul(k, ir.Constant(i64, nr))])
            w = [builder.load(builder.bitcast(builder.gep(w_row, [ir.Constant(i64, j * vw)]),
                                              vec.as_pointer()), align=align)
                 for j in range(VECTORS)]  # fmt: skip
            summed = []
            for r in range(rows):
                at = builder.add(builder.mul(ir.Constant(i64, r), lda_), k)
                x = builder.load(builder.gep(a_ptr, [at]))
                x = builder.shuffle_vector(builder.insert_element(undef, x, ir.Constant(i32, 0)),
                                           undef, splat)  # fmt: skip
                summed.append([builder.call(fma, [x, w[j], acc[r][j]]) for j in range(VECTORS)])
            k_next = builder.add(k, ir.Constant(i64, 1))
            k.add_incoming(k_next, loop)
            for r in range(rows):
                for j in range(VECTORS):
                    acc[r][j].add_incoming(summed[r][j], loop)
            builder.cbranch(builder.icmp_signed("<", k_next, K_), loop, done)

            builder.position_at_end(done)
            totals = [[builder.phi(vec) for _ in range(VECTORS)] for _ in range(rows)]
            for r in range(rows):
                for j in range(VECTORS):
                    totals[r][j].add_incoming(zero, before)
                    totals[r][j].add_incoming(summed[r][j], loop)
            adding = builder.icmp_unsigned("!=", add_, ir.Constant(add_.type, 0))
            for r in range(rows):
                for j in range(VECTORS):
                    at = builder.add(builder.mul(ir.Constant(i64, r), ldc_),
                                     ir.Constant(i64, j * vw))  # fmt: skip
                    q = builder.bitcast(builder.gep(c_ptr, [at]), vec.as_pointer())
                    old = builder.load(q, align=align)
                    total = totals[r][j]
                    builder.store(builder.select(adding, builder.fadd(total, old), total), q,
                                  align=align)  # fmt: skip
            return context.get_dummy_value()

        return sig, codegen

    return tile


_t1, _t2, _t3, _t4 = (_tile(r) for r in (1, 2, 3, 4))
assert MR == 4  # the tails below take 1–3 rows


@njit(cache=True, nogil=True, error_model="numpy", fastmath=False)
def product(A: Any, P: Any, C: Any, add: bool) -> None:
    """C = A·W (C += A·W if add) for W laid out by `panels` in P; A (M, K) and C (M, N) with
    contiguous rows, spaced by their strides."""
    M, K = A.shape
    nr = P.shape[2]
    lda = A.strides[0] // A.itemsize if M > 1 else K
    ldc = C.strides[0] // C.itemsize if M > 1 else C.shape[1]
    for p in range(P.shape[0]):
        p0, c0 = p * K * nr, p * nr
        i = 0
        while i + MR <= M:
            _t4(A, i * lda, lda, P, p0, K, C, i * ldc + c0, ldc, add)
            i += MR
        left = M - i
        a0, cc = i * lda, i * ldc + c0
        if left == 3:
            _t3(A, a0, lda, P, p0, K, C, cc, ldc, add)
        elif left == 2:
            _t2(A, a0, lda, P, p0, K, C, cc, ldc, add)
        elif left == 1:
            _t1(A, a0, lda, P, p0, K, C, cc, ldc, add)
