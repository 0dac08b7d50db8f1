"""The unrolled loop for any cell: forward over time and backpropagation through time.

This module owns everything that is the same for every cell (rnnlab.cells has the contract):

1. before the loop, the input projection for all steps at once, XA = X W_ihᵀ + b_ih (one GEMM);
2. the loop over time, forward or reverse, with the cell doing one step at a time;
3. masks: a step whose mask is False leaves the state unchanged (h_t = h_{t-1}, c_t = c_{t-1})
   and outputs zero, so the final state is the state at each sequence's last valid step and
   BPTT starts at each sequence's true end, in either direction, whatever the padding;
4. after the loop, the weight gradients as single GEMMs over all steps,
   dW_ih = Σ_t da_xᵀ x_t,  dW_hh = Σ_t da_hᵀ h_{t-1},  dX = dA_x W_ih, biases as sums.

Everything is time-major: X (T, B, I), outputs (T, B, H). States live in one array `hs` of
T + 1 rows. Running forward, step t reads hs[t] and writes hs[t+1] (hs[0] is h_0); running in
reverse, step t reads hs[t+1] and writes hs[t] (hs[T] is h_0). Either way the outputs and the
"previous state" of every step are contiguous slices in time order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rnnlab import _checks, parallel


@dataclass
class Params:
    """The four arrays of one direction of one layer, in PyTorch's layout."""

    W_ih: np.ndarray  # (G·H, I)
    W_hh: np.ndarray  # (G·H, H)
    b_ih: np.ndarray  # (G·H,)
    b_hh: np.ndarray  # (G·H,)


@dataclass
class Tape:
    """What the forward pass of one direction keeps for its backward pass."""

    X: np.ndarray  # (T, B, I), C-contiguous
    hs: np.ndarray | None  # (T + 1, B, H); None when checkpointed (see forward)
    cs: np.ndarray | None  # (T + 1, B, H) for cells with a cell state
    extra: dict[str, np.ndarray]  # the cell's own saved values, indexed by step
    mask: np.ndarray | None  # (T, B) bool, True where a step is valid
    reverse: bool
    consumed: bool = False  # set by backward: BPTT may have overwritten `extra` (see backward)

    def slices(self) -> tuple[slice, slice]:
        """(previous-state rows, output rows) of `hs` for steps 0..T-1 in time order."""
        return (slice(1, None), slice(0, -1)) if self.reverse else (slice(0, -1), slice(1, None))


def _fast(cell):
    """The compiled loop for this cell, or None for the per-step NumPy loop."""
    from rnnlab import fast

    return fast if getattr(cell, "kind", None) and fast.available() else None


def _loop_forward(cell, X, p: Params, W_hhT, hs, cs, extra, mask, reverse) -> None:
    """Project X and run the steps of one direction in place: hs (and cs, extra) get every
    state. The compiled loop adds b_ih itself as it reads XA (a pass over XA fewer)."""
    fast = _fast(cell)
    if fast is not None:
        XA = _project(X, p, bias=False, out=_projection_slot(cell, X.shape[0], hs, extra, reverse))
        fast.forward_loop(cell.kind, XA, W_hhT, p.b_hh, hs, cs, extra, mask, reverse, b_ih=p.b_ih)
        return
    XA, b_hh = _project(X, p), p.b_hh
    T = XA.shape[0]
    keep = all(a.shape[0] == T for a in extra.values())  # else one step, overwritten
    for t in range(T - 1, -1, -1) if reverse else range(T):
        prev, out = (t + 1, t) if reverse else (t, t + 1)
        c_prev = cs[prev] if cs is not None else None
        c_out = cs[out] if cs is not None else None
        ti = t if keep else 0
        cell.forward_step(ti, XA[t], hs[prev], c_prev, W_hhT, b_hh, hs[out], c_out, extra)
        if mask is not None and not mask[t].all():
            skip = ~mask[t][:, None]
            np.copyto(hs[out], hs[prev], where=skip)
            if cs is not None:
                np.copyto(cs[out], cs[prev], where=skip)


def _loop_backward(cell, W_hh, hs, cs, extra, mask, reverse, dys, dh, dc, dXA, dHA, dh_trace=None):
    """BPTT over the steps of one direction: fills dXA/dHA, returns (dh_0, dc_0).

    `dys` must already be zero at masked steps."""
    fast = _fast(cell)
    if fast is not None:
        return fast.backward_loop(
            cell.kind, W_hh, hs, cs, extra, mask, reverse, dys, dh, dc, dXA, dHA, dh_trace
        )
    T, B, H = hs.shape[0] - 1, hs.shape[1], hs.shape[2]
    dh = np.zeros((B, H), hs.dtype) if dh is None else np.array(dh, dtype=hs.dtype)
    if cell.has_c:
        dc = np.zeros((B, H), hs.dtype) if dc is None else np.array(dc, dtype=hs.dtype)
    else:
        dc = None
    for t in range(T) if reverse else range(T - 1, -1, -1):
        prev, out = (t + 1, t) if reverse else (t, t + 1)
        if dys is not None:
            dh = dh + dys[t]
        if dh_trace is not None:
            dh_trace[t] = dh
        c_prev = cs[prev] if cs is not None else None
        c_out = cs[out] if cs is not None else None
        if mask is None or mask[t].all():
            dh, dc = cell.backward_step(
                t, dh, dc, hs[prev], c_prev, hs[out], c_out, W_hh, extra, dXA[t], dHA[t]
            )
        else:
            valid = mask[t][:, None]
            dh_in = np.where(valid, dh, 0.0)
            dc_in = np.where(valid, dc, 0.0) if dc is not None else None
            dh_prev, dc_prev = cell.backward_step(
                t, dh_in, dc_in, hs[prev], c_prev, hs[out], c_out, W_hh, extra, dXA[t], dHA[t]
            )
            dh = np.where(valid, dh_prev, dh)  # a skipped step passes its gradient straight on
            if dc is not None:
                dc = np.where(valid, dc_prev, dc)
    return dh, dc


def _projection_slot(cell, T: int, hs, extra, reverse: bool) -> np.ndarray | None:
    """Where the compiled loops can take the input projection in place: the gate tape (LSTM,
    GRU), whose rows each step reads before it writes the gates there, or an Elman cell's
    output rows of hs when they are contiguous; else None (a scratch buffer): one-step tapes
    (inference), states inside a bidirectional layer's output."""
    name = getattr(cell, "preact_tape", None)
    if name is not None:
        return extra[name] if extra[name].shape[0] == T else None
    if getattr(cell, "preact_in_output", False) and hs.flags.c_contiguous:
        return hs[:-1] if reverse else hs[1:]
    return None


def _step_weights(cell, W_hh: np.ndarray, B: int, backward: bool = False, inference=False):
    """W_hh as the loop over time takes it for its per-step products: prepared once for the
    compiled loops (rnnlab.fast.step_weights: W_hhᵀ for the forward pass, packed for MKL
    where that pays, else a C-contiguous copy, on which products run ~25 % faster than on W
    with MKL's transpose flag: (64×512)·(512×2048) 0.89 against 1.15 ms), else W_hhᵀ
    (forward) or W_hh (backward) for the cells' NumPy steps."""
    fast = _fast(cell)
    if fast is not None:
        W = W_hh if backward else W_hh.T
        return fast.step_weights(cell.kind, W, B, backward=backward, inference=inference)
    return W_hh if backward else np.ascontiguousarray(W_hh.T)


def packs_step_weights(cell, shape: tuple[int, int], dtype, inference: bool = False) -> bool:
    """Whether the compiled loops of `cell` take a recurrent weight of this shape packed
    (rnnlab.fast.packs); False for the NumPy loop."""
    fast = _fast(cell)
    return fast is not None and fast.packs(shape, dtype, inference)


def _project(X: np.ndarray, p: Params, bias: bool = True, out=None) -> np.ndarray:
    """XA = X W_ihᵀ (+ b_ih) for all steps at once: (T, B, I) → (T, B, G·H), into `out`
    (C-contiguous, (T, B, G·H)) or a scratch buffer (it lives only until the loop has read
    it)."""
    T, B, I = X.shape
    if out is None:
        XA = parallel.scratch("XA", (T * B, p.W_ih.shape[0]), X.dtype)
    else:
        XA = out.reshape(T * B, p.W_ih.shape[0])
    parallel.matmul(X.reshape(T * B, I), p.W_ih.T, out=XA)
    if bias:
        XA += p.b_ih
    return XA.reshape(T, B, -1)


def _states(
    T: int, B: int, H: int, dtype, has_c: bool, reverse: bool, h0, c0, hs=None, c_rows=0
):  # fmt: skip
    """(hs, cs) of T + 1 rows with the initial state in place; hs is `hs` if given. With
    c_rows = 2 (inference's loop, which keeps c_t in row t mod 2) cs has two rows only."""
    if hs is None:
        hs = parallel.empty((T + 1, B, H), dtype)
    elif hs.shape != (T + 1, B, H) or hs.dtype != dtype or hs.strides[2] != hs.itemsize:
        _checks.fail(
            "hs_out",
            f"a {np.dtype(dtype)} array of shape {(T + 1, B, H)} with contiguous rows",
            f"{hs.dtype} {hs.shape}, strides {hs.strides}",
        )
    cs = parallel.empty((c_rows or T + 1, B, H), dtype) if has_c else None
    first = T if reverse else 0
    hs[first] = h0
    if cs is not None:
        cs[first % cs.shape[0]] = c0
    return hs, cs


def infers_without_projection(cell, I: int, H: int, dtype) -> bool:
    """Whether inference (keep_tape=False) runs rnnlab.fast.infer_loop for this layer, which
    multiplies x_t and h_{t-1} at every step without a projection array and reads x_t's rows
    where they lie: no time-major copy of a batch-first input (A/B in one
    process, LSTM inference (B, T, I, H) = (64, 100, 128, 256) 25.5 -> 24.7 ms,
    (128, 50, 256, 512) 85.3 -> 82.3)."""
    fast = _fast(cell)
    return fast is not None and fast.infers_without_projection(cell.kind, I, H, dtype)


def forward(
    cell,
    p: Params,
    X: np.ndarray,
    h0: np.ndarray,
    c0: np.ndarray | None = None,
    mask: np.ndarray | None = None,
    reverse: bool = False,
    checkpoint_every: int = 0,
    keep_tape: bool = True,
    hs_out: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, Tape | None]:
    """Run `cell` over X (T, B, I) from the initial state h0 (B, H) [and c0].

    Returns (ys, h_T, c_T, tape): ys (T, B, H) in time order, zero at masked steps; h_T, c_T
    the final states (after the last valid step of each sequence).

    `checkpoint_every=k` (gradient checkpointing): keep only the state at every k-th step and
    recompute each segment's tape during the backward pass, so the memory BPTT needs beyond
    the input and output grows as O(T/k + k), O(√T) for k ≈ √T, for about one more forward
    pass of compute. The gradients are exactly those of full BPTT.

    `keep_tape=False` (inference): the cell's saved values are one step long and overwritten
    at every step, and the returned tape is None (no backward can follow). Small Elman and
    LSTM layers then run rnnlab.fast.infer_loop, whose outputs differ by float rounding only.

    `hs_out` (T + 1, B, H), if given, receives the states (h_0 included, as the tape's `hs`)
    instead of a new array: rows of H contiguous values, evenly spaced, e.g. one direction's
    half of a bidirectional layer's output, which then needs no concatenation. ys is then a
    view of it (but a new array where a mask zeroes outputs).
    """
    T, B, _ = X.shape
    H = p.W_hh.shape[1]
    fused = not keep_tape and infers_without_projection(cell, X.shape[2], H, X.dtype)
    if not fused:  # the fused loop reads the rows of x_t where they are (a batch-first view)
        X = np.ascontiguousarray(X)
    if checkpoint_every and checkpoint_every < T and keep_tape:
        W_hhT = _step_weights(cell, p.W_hh, B)
        return _forward_checkpointed(
            cell, p, X, W_hhT, h0, c0, mask, reverse, checkpoint_every, hs_out
        )
    # without a tape only the last cell state is wanted: inference keeps two rows of them
    hs, cs = _states(T, B, H, X.dtype, cell.has_c, reverse, h0, c0, hs_out, 2 if fused else 0)
    extra = cell.new_tape(T if keep_tape else 1, B, H, X.dtype)
    if fused:
        _fast(cell).infer_loop(cell.kind, X, p.W_ih, p.W_hh, p.b_ih, p.b_hh, hs, cs, mask, reverse)
    else:
        W_hhT = _step_weights(cell, p.W_hh, B, inference=not keep_tape)
        _loop_forward(cell, X, p, W_hhT, hs, cs, extra, mask, reverse)

    tape = Tape(X, hs, cs, extra, mask, reverse)
    ys = hs[tape.slices()[1]]
    if not keep_tape:
        tape = None
    if mask is not None:
        ys = np.where(mask[:, :, None], ys, 0.0).astype(X.dtype, copy=False)
    last = 0 if reverse else T
    return ys, hs[last], (cs[last % cs.shape[0]] if cs is not None else None), tape


def _segments(T: int, k: int, reverse: bool) -> list[tuple[int, int]]:
    """[start, end) time ranges of length k, in processing order."""
    spans = [(a, min(a + k, T)) for a in range(0, T, k)]
    return spans[::-1] if reverse else spans


def _forward_checkpointed(cell, p, X, W_hhT, h0, c0, mask, reverse, k, hs_out=None):
    T, B, _ = X.shape
    H = p.W_hh.shape[1]
    if hs_out is None:
        ys = np.empty((T, B, H), X.dtype)
    else:  # the outputs go where the caller wants the states; h_0 too, for the same layout
        full, _ = _states(T, B, H, X.dtype, False, reverse, h0, None, hs_out)
        ys = full[:-1] if reverse else full[1:]
    starts = []  # the state entering each segment, in processing order
    h, c = h0, c0
    for a, b in _segments(T, k, reverse):
        starts.append((h, c))
        L = b - a
        hs, cs = _states(L, B, H, X.dtype, cell.has_c, reverse, h, c)
        extra = cell.new_tape(L, B, H, X.dtype)
        seg_mask = None if mask is None else mask[a:b]
        _loop_forward(cell, X[a:b], p, W_hhT, hs, cs, extra, seg_mask, reverse)
        ys[a:b] = hs[:-1] if reverse else hs[1:]
        last = 0 if reverse else L
        h = hs[last].copy()
        c = cs[last].copy() if cs is not None else None
    if mask is not None:
        ys = np.where(mask[:, :, None], ys, 0.0).astype(X.dtype, copy=False)
    tape = Tape(X, None, None, {"starts": starts, "k": k}, mask, reverse)
    return ys, h, c, tape


def backward(
    cell,
    p: Params,
    tape: Tape,
    dys: np.ndarray | None,
    dh_T: np.ndarray | None = None,
    dc_T: np.ndarray | None = None,
    need_dX: bool = True,
    dh_trace: np.ndarray | None = None,
    retain_tape: bool = False,
) -> tuple[np.ndarray | None, Params, np.ndarray, np.ndarray | None]:
    """BPTT for one direction: from ∂L/∂ys (T, B, H) and ∂L/∂h_T [∂L/∂c_T] to every gradient.

    Returns (dX, grads, dh0, dc0); grads is a Params of the four weight gradients.
    `dh_trace` (T, B, H), if given, receives the total ∂L/∂h_t of every step t (the gradient
    flowing into the state written at step t, from its output and from later steps): what
    the diagnostics plot against the lag.

    A tape whose gates BPTT overwrites serves one backward pass: the compiled loops turn the
    LSTM's and GRU's saved gates into the pre-activation gradients in place (one (T, B, G·H)
    array instead of two; as PyTorch frees its graph after backward). `retain_tape=True`
    keeps it for another pass, at the price of a scratch copy of the gates. Tapes nothing
    overwrites (Elman cells, the NumPy loop, checkpointed tapes) serve any number.
    """
    if tape.consumed:
        _checks.fail(
            "tape",
            "the tape of a forward pass that no backward pass has used yet",
            "one an earlier backward pass used",
            "BPTT overwrote its saved gates with their gradients (one array for both halves "
            "the memory); run forward again, or pass retain_tape=True to the backward passes "
            "before the last.",
        )
    in_place = not retain_tape and tape.hs is not None and _overwrites_gates(cell)
    tape.consumed = in_place
    X, mask = tape.X, tape.mask
    if dys is not None and mask is not None:
        dys = np.where(mask[:, :, None], dys, 0.0)  # padded outputs are constants
    if tape.hs is None:
        return _backward_checkpointed(cell, p, tape, dys, dh_T, dc_T, need_dX, dh_trace)
    T, B, I = X.shape
    GH, H = p.W_hh.shape
    dXA, dHA = _preact_grads(cell, tape.extra, T, B, GH, H, X.dtype, in_place=in_place)
    dh, dc = _loop_backward(
        cell,
        p.W_hh,
        tape.hs,
        tape.cs,
        tape.extra,
        mask,
        tape.reverse,
        dys,
        dh_T,
        dc_T,
        dXA,
        dHA,
        dh_trace,
    )
    grads = _weight_grads(cell, p, X, tape.hs[tape.slices()[0]], tape.extra, dXA, dHA)
    dX = parallel.matmul(dXA.reshape(T * B, GH), p.W_ih).reshape(T, B, I) if need_dX else None
    return dX, grads, dh, dc


def _overwrites_gates(cell) -> bool:
    """Whether BPTT writes this cell's gradients over its tape (_preact_grads, in place)."""
    named = getattr(cell, "preact_tape", None) or getattr(cell, "hh_grad_tape", None)
    return named is not None and _fast(cell) is not None


def _preact_grads(
    cell, extra, T, B, GH, H, dtype, in_place: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """(dXA, dHA): where BPTT writes the pre-activation gradients. dHA is dXA when the cell
    says they coincide, else only the columns that differ (`hh_grad_width`). Unless
    `in_place` is False, the compiled loops write dXA over the gate tape (`preact_tape`) and
    dHA over the tape array `hh_grad_tape` (the GRU's W_hn h + b_hn), both read step by step
    before; else they are scratch buffers, dead when backward returns."""
    compiled = in_place and _fast(cell) is not None
    name = getattr(cell, "preact_tape", None)
    if compiled and name is not None:
        dXA = extra[name]
    else:
        dXA = parallel.scratch("dXA", (T, B, GH), dtype)
    if cell.shares_preact_grad:
        return dXA, dXA
    name = getattr(cell, "hh_grad_tape", None)
    if compiled and name is not None:
        return dXA, extra[name]
    width = cell.hh_grad_width(H) if hasattr(cell, "hh_grad_width") else GH
    return dXA, parallel.scratch("dHA", (T, B, width), dtype)


def _weight_grads(cell, p: Params, X, hs_prev, extra, dXA, dHA) -> Params:
    """The deferred weight gradients: products over all T·B rows at once, in one hand-over
    to the threads (a cell with `weight_grad_blocks` gets one product per block of W_hh's
    rows)."""
    T, B, I = X.shape
    GH, H = p.W_hh.shape
    dA_x = dXA.reshape(T * B, GH)
    dA_h = dHA.reshape(T * B, -1)
    hs_prev = hs_prev.reshape(T * B, H)
    X2 = X.reshape(T * B, I)
    if hasattr(cell, "weight_grad_blocks"):
        blocks = cell.weight_grad_blocks(hs_prev, extra, dA_x, dA_h)
    elif dHA is dXA:
        blocks = [(slice(None), dA_x, hs_prev)]
    else:
        blocks = [(slice(None), dA_h, hs_prev)]
    pairs = [(dA_x, X2)] + [(grads, inputs) for _, grads, inputs in blocks]
    # a block whose gradients are columns of dA_x has its bias sum in b_ih's: not again
    shared = [_columns_of(grads, dA_x) for _, grads, _ in blocks]
    sums = [dA_x] + [grads for (_, grads, _), same in zip(blocks, shared, strict=True) if not same]
    products, totals = parallel.inner_products(pairs, sums)
    dW_ih, db_ih = products[0], totals[0]
    if len(blocks) == 1 and blocks[0][0] == slice(None):
        db_hh = db_ih[shared[0]].copy() if shared[0] else totals[1]
        return Params(dW_ih, products[1], db_ih, db_hh)
    dW_hh, db_hh = np.empty_like(p.W_hh), np.empty_like(p.b_hh)
    rest = iter(totals[1:])
    for (rows, _, _), product, same in zip(blocks, products[1:], shared, strict=True):
        dW_hh[rows] = product
        db_hh[rows] = db_ih[same] if same else next(rest)
    return Params(dW_ih, dW_hh, db_ih, db_hh)


def _columns_of(view: np.ndarray, whole: np.ndarray) -> slice | None:
    """The columns a:b with view = whole[:, a:b] (the same rows, the same memory), or None.
    The GRU's r and z blocks of the W_hh side are dA_x's own columns: their bias gradient is
    b_ih's, which took ~4 ms of a GRU step's 12 ms of bias sums at (128, 50, 256, 512)."""
    if view is whole:
        return slice(None)
    if view.ndim != 2 or view.shape[0] != whole.shape[0] or view.strides != whole.strides:
        return None
    offset = view.__array_interface__["data"][0] - whole.__array_interface__["data"][0]
    a, rest = divmod(offset, whole.itemsize)
    if (
        rest
        or not 0 <= a <= whole.shape[1] - view.shape[1]
        or a * whole.itemsize >= whole.strides[0]
    ):
        return None
    return slice(a, a + view.shape[1])


def _backward_checkpointed(cell, p, tape, dys, dh, dc, need_dX, dh_trace):
    X, mask, reverse = tape.X, tape.mask, tape.reverse
    T, B, I = X.shape
    GH, H = p.W_hh.shape
    W_hhT = _step_weights(cell, p.W_hh, B)
    W_hh = _step_weights(cell, p.W_hh, B, backward=True)
    total = Params(
        np.zeros_like(p.W_ih), np.zeros_like(p.W_hh), np.zeros_like(p.b_ih), np.zeros_like(p.b_hh)
    )
    dX = np.empty((T, B, I), X.dtype) if need_dX else None
    spans = _segments(T, tape.extra["k"], reverse)
    for (a, b), (h, c) in zip(spans[::-1], tape.extra["starts"][::-1], strict=True):
        L = b - a
        seg_mask = None if mask is None else mask[a:b]
        hs, cs = _states(L, B, H, X.dtype, cell.has_c, reverse, h, c)
        extra = cell.new_tape(L, B, H, X.dtype)
        _loop_forward(cell, X[a:b], p, W_hhT, hs, cs, extra, seg_mask, reverse)
        dXA, dHA = _preact_grads(cell, extra, L, B, GH, H, X.dtype)
        dh, dc = _loop_backward(
            cell,
            W_hh,
            hs,
            cs,
            extra,
            seg_mask,
            reverse,
            None if dys is None else dys[a:b],
            dh,
            dc,
            dXA,
            dHA,
            None if dh_trace is None else dh_trace[a:b],
        )
        prev = hs[1:] if reverse else hs[:-1]
        g = _weight_grads(cell, p, X[a:b], prev, extra, dXA, dHA)
        for name in ("W_ih", "W_hh", "b_ih", "b_hh"):
            getattr(total, name)[...] += getattr(g, name)
        if dX is not None:
            dX[a:b] = parallel.matmul(dXA.reshape(L * B, GH), p.W_ih).reshape(L, B, I)
    return dX, total, dh, dc


def lengths_to_mask(lengths: np.ndarray, T: int) -> np.ndarray:
    """(B,) valid lengths → (T, B) bool mask, True where t < length."""
    return np.arange(T)[:, None] < np.asarray(lengths)[None, :]
