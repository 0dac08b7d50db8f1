"""The compiled time loops, generic over cells: made once per cell, from the cell's own steps.

`loops_for(cell)` returns numba functions that run a whole direction of a layer, forward or
BPTT, in one call: the loop over time, the recurrent products (rnnlab.fast.kernels.gemm on
rnnlab.fast.tiles, MKL or NumPy's OpenBLAS, packed weights where rnnlab.fast.packs says so;
the weight's type picks the kernel when the loop compiles), masks, and a call
of the cell's step for every batch row. The steps are the cell's own functions
(rnnlab.cells.base), compiled with the vocabulary of rnnlab.fast.rows and inlined into the
loop by numba, so LLVM sees one function and vectorises the steps' unit loops as if they
were written here; nothing in this module knows a cell's equations or its name.

What the loops do with a cell's declarations:
- products ((lo, hi), source): the product of step t for the rows lo·H:hi·H of W_hh, on
  h_{t-1} (source None) or on a block of the step's own tape row; in BPTT the same
  product transposed, whose result goes into ∂L/∂h_{t-1} (source None) or, as `dsrc`, to
  the backward stage before it;
- hh_own: where W_hh sees its own gradient (the GRU's n block) the loop assembles the
  product's left factor per row from da and da_h;
- in_place: the input projection may be read from where the step writes (the tape's first
  G·H columns, or a one-gate cell's output rows), and BPTT writes ∂L/∂pre-activations (da,
  then da_h) over the tape (grads_over_tape). Such rows are derived from the same array
  inside the loop, so LLVM sees one pointer, and the steps' loops vectorise without runtime
  overlap checks (two arguments with the same address make those checks fail, and the
  loops run scalar).

Around the cell, by the layer's options (`Around`, part of the loops' key, so each
combination compiles its own loops and the others pay nothing): a projection of the carry
(the cell writes h̃_t into `own`, h_t = h̃_t W_hrᵀ), recurrent dropout (the products take
h_{t-1} ⊙ keep), zoneout (h_t, c_t mixed from h̃_t, c̃_t in `own`, `own_c` and the previous
carry by the step's masks), output feedback (the Jordan network: o_t = h̃_t W_hrᵀ + b_hr is
the layer's output and the carry is [h̃_t;] f(o_t), or the truth where scheduled sampling
feeds it); rnnlab.recurrence.step_forward/step_backward are the same arithmetic on NumPy.

Every loop touches the batch rows b0 ≤ b < b1 only (the rows of a batch never interact),
so rnnlab.fast can run parts of one batch on several threads. Masked rows (mask[t, b]
False) copy the previous carry forward and get no gradient. The compiled code is cached
on disk by numba, keyed by the cell's step functions' code and closure values.
"""

from __future__ import annotations

import functools
import hashlib
import pathlib
import re
import types
from typing import Any

import numpy as np
from numba import njit
from numba.core.caching import FunctionCache, IndexDataCacheFile

from rnnlab.fast import kernels, rows  # noqa: F401  (rows registers the vocabulary)

JIT: dict[str, Any] = {**kernels.JIT, "cache": False}  # cached by _StableCache instead (below)


class _StableCache(FunctionCache):
    """numba's on-disk cache for a loop made by the factory below, keyed by what the loop
    computes: its own code and, for the steps it closes over, their code and closure values
    (`_digest`). numba's own key pickles the closure, and a compiled function pickles with
    a fresh id in every process, so every process compiled every loop again (~4 s a cell)."""

    def __init__(self, py_func, digest: str):
        super().__init__(py_func)
        self._digest = digest
        # an index file of its own per digest: numba's save (read the index, add an entry)
        # takes no lock, so two processes compiling two cells at once could cross entries
        self._cache_file = IndexDataCacheFile(
            cache_path=self._cache_path,
            filename_base=f"{self._impl.filename_base}-{digest[:16]}",
            source_stamp=self._impl.locator.get_source_stamp(),
        )

    def _index_key(self, sig, codegen):
        # the forced vector width too: code compiled at one is not loaded for another
        return (sig, codegen.magic_tuple(), (self._digest,), kernels.VECTOR_WIDTH)


_SOURCES = ("kernels.py", "rows.py", "loops.py", "tiles.py", "../cells/pointwise.py")


@functools.cache
def _vocabulary_digest() -> str:
    """The sources the steps compile against: a change to any of them recompiles."""
    here = pathlib.Path(__file__).parent
    h = hashlib.sha256()
    for name in _SOURCES:
        h.update((here / name).read_bytes())
    return h.hexdigest()


def _digest(value, h=None, seen=None) -> str:
    """A hash of what a compiled function computes: code, constants, names, default
    arguments, closure values and the values of the globals it names, recursively through
    functions and numba dispatchers (a user's cell whose module constant changed compiles
    again)."""
    top = h is None
    h = hashlib.sha256(_vocabulary_digest().encode()) if top else h
    seen = set() if seen is None else seen
    fn = getattr(value, "py_func", value)
    if isinstance(fn, types.FunctionType):
        if id(fn) in seen:  # recursion, or a helper met twice
            h.update(f"<{fn.__qualname__}>".encode())
            return h.hexdigest() if top else ""
        seen.add(id(fn))
        _code_digest(fn.__code__, h)
        for part in (fn.__defaults__, fn.__kwdefaults__):
            _digest(part, h, seen)
        for cell in fn.__closure__ or ():
            _digest(cell.cell_contents, h, seen)
        for name in _all_names(fn.__code__):
            if name in fn.__globals__:
                h.update(name.encode())
                _digest(fn.__globals__[name], h, seen)
    elif isinstance(value, types.ModuleType):
        h.update(f"module:{value.__name__};".encode())
    elif isinstance(value, (tuple, list)):
        h.update(b"(")
        for item in value:
            _digest(item, h, seen)
        h.update(b")")
    elif isinstance(value, dict):
        _digest(sorted(value.items(), key=repr), h, seen)
    elif isinstance(value, np.ndarray):  # (a large array's repr elides its middle)
        h.update(f"ndarray:{value.dtype.str}{value.shape};".encode())
        h.update(np.ascontiguousarray(value).tobytes())
    else:  # an object's address is no part of what a loop computes, and differs by process
        # (pointwise's thread-local _MODE: every process compiled every loop again, ~5 s)
        h.update(_ADDRESS.sub("", f"{type(value).__name__}:{value!r};").encode())
    return h.hexdigest() if top else ""


_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def _all_names(code: types.CodeType) -> list[str]:
    names = list(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names += _all_names(const)
    return names


def _code_digest(code: types.CodeType, h) -> None:
    h.update(code.co_code)
    h.update(repr(code.co_names).encode())
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            _code_digest(const, h)
        else:
            h.update(f"{type(const).__name__}:{const!r};".encode())


def _cached_jit(fn):
    dispatcher = njit(**JIT)(fn)
    dispatcher._cache = _StableCache(fn, _digest(fn))
    return kernels.scoped(dispatcher)  # compiled with rnnlab's LLVM options, and only it


def _inline(fn):
    return njit(inline="always", **kernels.SCALAR)(fn)


NOTHING_AROUND = (False, False, False, False, 0, False)
FED = {"identity": 1, "softmax": 2, "sigmoid": 3}
"""Output feedback's f, as the loops' key names it (0: no feedback)."""


@functools.cache
def _loops(key, around=NOTHING_AROUND):
    """The compiled loops for a cell's key (Cell.key) and the options around its step:
    (projection, recurrent dropout, zoneout of h, zoneout of c, output feedback's f (FED),
    whether the fed-back carry keeps h̃_t before the output)."""
    stages, backward_stages, products, G, hh_own, over_tape, _ = key
    proj, drop, zone_h, zone_c, fb, fb_hidden = around
    has_own = proj or zone_h
    f0 = _inline(stages[0])
    f1 = _inline(stages[1]) if len(stages) > 1 else f0
    g0 = _inline(backward_stages[0])
    g1 = _inline(backward_stages[1]) if len(backward_stages) > 1 else g0
    two = len(products) > 1
    (lo0, hi0), src0 = products[0]
    (lo1, hi1), src1 = products[1] if two else products[0]
    src0 = -1 if src0 is None else src0
    src1 = -1 if src1 is None else src1
    own_blocks = tuple(hh_own)
    n_own = len(own_blocks)
    # per product: the left factor of its transposed product needs assembling when one of
    # its blocks is W_hh's own (da_h), not a block of da
    mixed0 = any(lo0 <= k < hi0 for k in own_blocks)
    mixed1 = two and any(lo1 <= k < hi1 for k in own_blocks)

    def make_forward(xa_at: str):
        in_tape, in_output, project = xa_at == "tape", xa_at == "output", xa_at == "project"
        lookup = xa_at == "lookup"

        def _stage(f, src, W, ha, XA, ids, b_ih, b_hh, q, hs, cs, tape, xa_buf, own, ownc, hk, t,
                   ti, prev, out, cp, co, H, P, numpy_blas, b0, b1):  # fmt: skip
            """One product (on h_{t-1}, h_{t-1} ⊙ keep in hk, or a block of the tape) and the
            stage f after it."""
            if src < 0 and drop:
                kernels.gemm(hk[b0:b1], W, ha[b0:b1], numpy_blas)
            elif src < 0:
                kernels.gemm(hs[prev, b0:b1, :P], W, ha[b0:b1], numpy_blas)
            else:
                kernels.gemm(tape[ti, b0:b1, src * H : (src + 1) * H], W, ha[b0:b1], numpy_blas)
            for b in range(b0, b1):
                row = tape[ti, b]  # each passed once: one pointer
                h = own[ti, b] if has_own else hs[out, b, :P]
                c = ownc[ti, b] if zone_c else cs[co, b]
                if in_tape:
                    xa = row
                elif in_output:
                    xa = h
                elif project:
                    xa = xa_buf[b]
                elif lookup:
                    xa = XA[ids[t, b]]
                else:
                    xa = XA[t, b]
                f(xa, b_ih, ha[b], b_hh, q, hs[prev, b, :P], cs[cp, b], h, c, row)

        stage = njit(inline="always", **JIT)(_stage)

        def _carry(W_r, keep, zh, zc, hs, cs, own, ownc, pbuf, fb_b, outs, use, truth, t, ti,
                   prev, out, cp, co, P, numpy_blas, b0, b1):  # fmt: skip
            """The carry from what the cell wrote (`own`, `ownc`): projected, zoned out, or
            the output fed back (o_t = h̃_t W_rᵀ... + fb_b into outs; [h̃_t;] f(o_t), or the
            truth where use is 0)."""
            if fb:
                kernels.gemm(own[ti, b0:b1], W_r, pbuf[b0:b1], numpy_blas)
                K = pbuf.shape[1]
                off = P - K
                for b in range(b0, b1):
                    o, y, ob = outs[t, b], hs[out, b, off:P], pbuf[b]
                    for j in range(K):
                        o[j] = ob[j] + fb_b[j]
                    if use[t, b] == 0:
                        kernels.copy_into(truth[t, b], y)
                    elif fb == 1:
                        kernels.copy_into(o, y)
                    elif fb == 3:
                        for j in range(K):
                            y[j] = kernels.sigmoid_scalar(o[j])
                    else:  # softmax, from the largest logit
                        top = o[0]
                        for j in range(K):
                            top = max(top, o[j])
                        total = o[0] - o[0]
                        for j in range(K):
                            y[j] = np.exp(o[j] - top)
                            total += y[j]
                        for j in range(K):
                            y[j] /= total
                    if fb_hidden:
                        kernels.copy_into(own[ti, b], hs[out, b, :off])
            elif proj:
                kernels.gemm(own[ti, b0:b1], W_r, pbuf[b0:b1], numpy_blas)
                for b in range(b0, b1):
                    kernels.copy_into(pbuf[b], hs[out, b, :P])
            elif zone_h:
                for b in range(b0, b1):
                    d, h_, p_, m = zh[t, b], hs[out, b, :P], hs[prev, b, :P], own[ti, b]
                    for j in range(P):
                        h_[j] = d[j] * p_[j] + (1 - d[j]) * m[j]
            if zone_c:
                for b in range(b0, b1):
                    d, c_, p_, m = zc[t, b], cs[co, b], cs[cp, b], ownc[ti, b]
                    for j in range(c_.shape[0]):
                        c_[j] = d[j] * p_[j] + (1 - d[j]) * m[j]

        carry = njit(inline="always", **JIT)(_carry)

        def forward(XA, W_x, b_ih, W0, W1, b_hh, q, hs, cs, tape, mask, has_mask, reverse,
                    numpy_blas, H, P, xa_buf, ha0, ha1, W_r, keep, zh, zc, own, ownc, hk, pbuf,
                    fb_b, outs, use, truth, ids, b0, b1):  # fmt: skip
            """One direction's forward pass over the rows b0:b1. XA: x_t W_ihᵀ for every
            step (T, B, G·H), or X itself (T, B, I) when the loop projects each step
            (`project`: x_t W_x into xa_buf at every step), or (`lookup`) the projections of
            the U distinct rows the input is made of (U, G·H), row ids[t, b] of them x_t's.
            tape (and own, ownc) may have one step (no backward follows) and cs two rows
            (c_t in row t mod 2). H: the cell's units; P: the carry's (hs may be wider: a
            block of columns). Around the cell: W_r the projection (H, P), keep (B, P), zh,
            zc (T, B, H) the masks, hk (B, P) and pbuf (B, P) buffers; with output feedback
            fb_b the output's bias, outs (T, B, K) the outputs, use (T, B) and truth
            (T, B, K) what the carry takes."""
            T = ids.shape[0] if lookup else XA.shape[0]
            keep_all = tape.shape[0] == T
            c_rows = cs.shape[0]
            for s in range(T):
                t = T - 1 - s if reverse else s
                ti = t if keep_all else 0
                prev, out = (t + 1, t) if reverse else (t, t + 1)
                cp, co = prev % c_rows, out % c_rows
                if project:
                    kernels.gemm(XA[t, b0:b1], W_x, xa_buf[b0:b1], numpy_blas)
                if drop:
                    for b in range(b0, b1):
                        hp, m, k = hs[prev, b, :P], hk[b], keep[b]
                        for j in range(P):
                            m[j] = hp[j] * k[j]
                stage(f0, src0, W0, ha0, XA, ids, b_ih, b_hh, q, hs, cs, tape, xa_buf, own, ownc,
                      hk, t, ti, prev, out, cp, co, H, P, numpy_blas, b0, b1)  # fmt: skip
                if two:
                    stage(f1, src1, W1, ha1, XA, ids, b_ih, b_hh, q, hs, cs, tape, xa_buf, own,
                          ownc, hk, t, ti, prev, out, cp, co, H, P, numpy_blas, b0,
                          b1)  # fmt: skip
                if has_own or zone_c:
                    carry(W_r, keep, zh, zc, hs, cs, own, ownc, pbuf, fb_b, outs, use, truth, t,
                          ti, prev, out, cp, co, P, numpy_blas, b0, b1)  # fmt: skip
                if has_mask:
                    for b in range(b0, b1):
                        if not mask[t, b]:
                            kernels.copy_into(hs[prev, b, :P], hs[out, b, :P])
                            kernels.copy_into(cs[cp, b], cs[co, b])

        return _cached_jit(forward)

    def _left_factor(da, dah, buf, lo, hi, mixed, b, H):
        """Row b of the transposed product's left factor for W_hh's blocks lo:hi."""
        if not mixed:
            return
        row = buf[b]
        for k in range(lo, hi):
            dst = row[(k - lo) * H : (k - lo + 1) * H]
            m = -1
            for i in range(n_own):
                if own_blocks[i] == k:
                    m = i
            src = da[b, k * H : (k + 1) * H] if m < 0 else dah[b, m * H : (m + 1) * H]
            kernels.copy_into(src, dst)

    left_factor = njit(inline="always", **JIT)(_left_factor)

    def _stage_back(g, dsrc, dh, dc, q, hs, cs, tape, da, dah, dq, mask, has_mask, h_own, c_own,
                    t, prev, out, P, b0, b1):  # fmt: skip
        """The backward stage g on the valid rows (an in-place cell gets the tape row as da:
        one pointer for what it reads and writes)."""
        for b in range(b0, b1):
            if not has_mask or mask[t, b]:
                row = tape[t, b]
                h = h_own[t, b] if has_own else hs[out, b, :P]
                c = c_own[t, b] if zone_c else cs[out, b]
                g(dh[b], dc[b], dsrc[b], q, hs[prev, b, :P], cs[prev, b], h, c, row,
                  row if over_tape else da[b], dah[b], dq[b])  # fmt: skip

    stage_back = njit(inline="always", **JIT)(_stage_back)

    def _product_back(da, dah, buf, lo, hi, mixed, src, W, dh, dsrc, tmp, keep, H, numpy_blas,
                      b0, b1):  # fmt: skip
        """A product transposed: into ∂L/∂h_{t-1} (source h_{t-1}; through the dropout mask
        `keep`) or ∂L/∂ its tape block."""
        for b in range(b0, b1):
            left_factor(da, dah, buf, lo, hi, mixed, b, H)
        A = buf[b0:b1] if mixed else da[b0:b1, lo * H : hi * H]
        if src < 0 and drop:
            kernels.gemm(A, W, tmp[b0:b1], numpy_blas)
            for b in range(b0, b1):
                d, g, k = dh[b], tmp[b], keep[b]
                for j in range(d.shape[0]):
                    d[j] += g[j] * k[j]
        elif src < 0:
            kernels.gemm_acc(A, W, dh[b0:b1], numpy_blas, tmp[b0:b1])
        else:
            kernels.gemm(A, W, dsrc[b0:b1], numpy_blas)

    product_back = njit(inline="always", **JIT)(_product_back)

    def backward(W0, W1, q, hs, cs, tape, dXA, dHA, mask, has_mask, reverse, dys, has_dys, dh,
                 dc, trace, has_trace, numpy_blas, H, dq, dsrc, hh0, hh1, tmp, W_r, keep, zh, zc,
                 own, ownc, dHR, dcell, dccell, use, sums, slot, ids, sum_mode,
                 b0, b1):  # fmt: skip
        """BPTT over the rows b0:b1: dXA (dHA) get ∂L/∂pre-activations, dh (dc) go from
        ∂L/∂h_T (∂L/∂c_T) to ∂L/∂h_0 (∂L/∂c_0). With grads_over_tape dXA and dHA are
        unused: the gradients go over the tape. dsrc: (B, H) buffer for the gradient of a
        second product's source; hh0, hh1: (B, width) buffers for assembled left factors;
        tmp: (B, P) buffer for numba's np.dot and the dropout mask. Around the cell: W_r
        the projection (P, H), keep, zh, zc the forward's masks, own, ownc what the cell
        wrote, dHR (T, B, P) out: ∂L/∂h_t for the projection's gradient, dcell, dccell
        (B, H) the cell's ∂L/∂h̃_t, ∂L/∂c̃_t. With output feedback dys are ∂L/∂o_t, dHR gets
        the whole ∂L/∂o_t and `use` is the forward's. sum_mode 1: each valid row's
        pre-activation gradient (its G·H values) is added to sums[slot[b], ids[t, b]] once
        the step wrote it, while it is in cache (sums float64 (parts, U, G·H), one block of
        rows per thread: the gradient summed by an Embedding's ids); 2: to sums[slot[b], 0]
        (b_ih's gradient); 0: nothing."""
        T = dXA.shape[0] if not over_tape else tape.shape[0]
        P = dh.shape[1]
        GH = G * H
        nothing = dsrc[:, :0]
        DH = dcell if has_own else dh  # what the cell's backward stages take
        DC = dccell if zone_c else dc
        for s in range(T):
            t = s if reverse else T - 1 - s
            prev, out = (t + 1, t) if reverse else (t, t + 1)
            if over_tape:  # whole tape rows: the steps read and write one pointer
                da = tape[t]
                dah = tape[t, :, GH : GH + n_own * H]
            else:
                da = dXA[t]
                dah = dHA[t]
            for b in range(b0, b1):
                valid = not has_mask or mask[t, b]
                if has_dys and valid and not fb:
                    kernels.add_into(dh[b], dys[t, b])
                if has_trace:
                    kernels.copy_into(dh[b], trace[t, b])
                if not valid:
                    kernels.fill(da[b, :GH], da.dtype.type(0.0))
                    kernels.fill(dah[b], da.dtype.type(0.0))
            if fb:  # ∂L/∂o_t: from outside, and from the carry through f where it was fed
                K = dHR.shape[2]
                off = P - K
                for b in range(b0, b1):
                    d = dHR[t, b]
                    if has_mask and not mask[t, b]:
                        kernels.fill(d, dh.dtype.type(0.0))
                        continue
                    dy, y, u = dh[b, off:P], hs[out, b, off:P], use[t, b]
                    if fb == 1:
                        for j in range(K):
                            d[j] = u * dy[j]
                    elif fb == 3:
                        for j in range(K):
                            d[j] = u * dy[j] * y[j] * (1 - y[j])
                    else:
                        sd = y[0] - y[0]
                        for j in range(K):
                            sd += y[j] * dy[j]
                        for j in range(K):
                            d[j] = u * y[j] * (dy[j] - sd)
                    if has_dys:
                        kernels.add_into(d, dys[t, b])
                kernels.gemm(dHR[t, b0:b1], W_r, dcell[b0:b1], numpy_blas)
                for b in range(b0, b1):
                    if not has_mask or mask[t, b]:
                        if fb_hidden:
                            kernels.add_into(dcell[b], dh[b, :off])
                        kernels.fill(dh[b], dh.dtype.type(0.0))
            elif proj:  # ∂L/∂h̃_t = ∂L/∂h_t W_hr; h_{t-1} reaches h_t through W_hh only
                kernels.gemm(dh[b0:b1], W_r, dcell[b0:b1], numpy_blas)
                for b in range(b0, b1):
                    if not has_mask or mask[t, b]:
                        kernels.copy_into(dh[b], dHR[t, b])
                        kernels.fill(dh[b], dh.dtype.type(0.0))
                    else:
                        kernels.fill(dHR[t, b], dh.dtype.type(0.0))
            elif zone_h:
                for b in range(b0, b1):
                    if not has_mask or mask[t, b]:
                        d, g, e = zh[t, b], dh[b], dcell[b]
                        for j in range(P):
                            e[j] = (1 - d[j]) * g[j]
                            g[j] = d[j] * g[j]
            if zone_c:
                for b in range(b0, b1):
                    if not has_mask or mask[t, b]:
                        d, g, e = zc[t, b], dc[b], dccell[b]
                        for j in range(g.shape[0]):
                            e[j] = (1 - d[j]) * g[j]
                            g[j] = d[j] * g[j]
            if two:
                stage_back(g1, nothing, DH, DC, q, hs, cs, tape, da, dah, dq, mask, has_mask,
                           own, ownc, t, prev, out, P, b0, b1)  # fmt: skip
                product_back(da, dah, hh1, lo1, hi1, mixed1, src1, W1, dh, dsrc, tmp, keep, H,
                             numpy_blas, b0, b1)  # fmt: skip
                stage_back(g0, dsrc if src1 >= 0 else nothing, DH, DC, q, hs, cs, tape, da,
                           dah, dq, mask, has_mask, own, ownc, t, prev, out, P, b0,
                           b1)  # fmt: skip
            else:
                stage_back(g0, nothing, DH, DC, q, hs, cs, tape, da, dah, dq, mask, has_mask,
                           own, ownc, t, prev, out, P, b0, b1)  # fmt: skip
            product_back(da, dah, hh0, lo0, hi0, mixed0, src0, W0, dh, dsrc, tmp, keep, H,
                         numpy_blas, b0, b1)  # fmt: skip
            for b in range(b0, b1):  # the direct parts the cell left in its own buffers
                if not has_mask or mask[t, b]:
                    if zone_h and not proj:
                        kernels.add_into(dh[b], dcell[b])
                    if zone_c:
                        kernels.add_into(dc[b], dccell[b])
            if sum_mode:
                for b in range(b0, b1):
                    if not has_mask or mask[t, b]:
                        acc = sums[slot[b], ids[t, b] if sum_mode == 1 else 0]
                        g = da[b]
                        for j in range(GH):
                            acc[j] += g[j]

    return make_forward, _cached_jit(backward)


@functools.cache
def _forward(key, xa_at: str, around: tuple):
    return _loops(key, around)[0](xa_at)


def forward_for(cell, xa_at: str, around=NOTHING_AROUND):
    """The compiled forward loop of a cell, by where it reads x_t W_ihᵀ: "apart" (XA),
    "tape" (the tape's first G·H columns), "output" (where the step writes h), "project"
    (computed at every step from X: inference, and training where projects_each_step says),
    or "lookup" (row ids[t, b] of the distinct rows' projections: an Embedding's output);
    `around`: _loops's."""
    return _forward(cell.key, xa_at, tuple(around))


def backward_for(cell, around=NOTHING_AROUND):
    """The compiled BPTT loop of a cell (`around` as forward_for's)."""
    return _loops(cell.key, tuple(around))[1]
