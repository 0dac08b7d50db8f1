"""The unrolled loop for any cell: forward over time and backpropagation through time.

This module owns everything that is the same for every cell (rnnlab.cells.base has the
protocol):

1. before the loop, the input projection for all steps at once, XA = X W_ihᵀ (one GEMM; the
   cell's step adds b_ih as it reads it);
2. the loop over time, forward or reverse: each step the cell's recurrent products, then its
   step functions (the same functions the compiled loops of rnnlab.fast run, one row at a
   time; here on whole batch blocks);
3. masks: a step whose mask is False leaves the state unchanged (h_t = h_{t-1}, c_t = c_{t-1})
   and outputs zero, so the final state is the state at each sequence's last valid step and
   BPTT starts at each sequence's true end, in either direction, whatever the padding;
4. after the loop, the weight gradients as single GEMMs over all steps,
   dW_ih = Σ_t daᵀ x_t,  dW_hh = Σ_t da_hᵀ (each product's input),  dX = dA W_ih, biases as
   sums, and the cell's extra parameters' gradients summed over the batch.

Everything is time-major: X (T, B, I), outputs (T, B, H). States live in one array `hs` of
T + 1 rows. Running forward, step t reads hs[t] and writes hs[t+1] (hs[0] is h_0); running in
reverse, step t reads hs[t+1] and writes hs[t] (hs[T] is h_0). Either way the outputs and the
"previous state" of every step are contiguous slices in time order.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

from rnnlab import _checks
from rnnlab.fast import parallel
from rnnlab.ops import sigmoid, softmax

if TYPE_CHECKING:
    from rnnlab.cells.base import Cell


@dataclass
class Params:
    """The arrays of one direction of one layer, in PyTorch's layout (q: the cell's extra
    parameters, one (H,) row per name in cell.extra)."""

    W_ih: np.ndarray  # (G·H, I)
    W_hh: np.ndarray  # (G·H, H)
    b_ih: np.ndarray  # (G·H,)
    b_hh: np.ndarray  # (G·H,)
    q: np.ndarray | None = None  # (n_extra, H)
    W_hr: np.ndarray | None = None  # (P, H): the projection of the carry, when proj_size
    b_hr: np.ndarray | None = None  # (K,): the output map's bias, with output feedback


@dataclass
class Noise:
    """The random masks of one direction's forward pass in training (and zoneout's
    expectations in evaluation): what the library applies around any cell's step.

    - keep (B, P): recurrent (variational) dropout, one mask per sequence for all steps
      (Gal & Ghahramani 2016): the products take h_{t-1} ⊙ keep (keep: 0 or 1/(1 − p));
    - zone_h, zone_c (T, B, H): zoneout (Krueger et al. 2016), the weight of the previous
      state in the new one, h_t = d ⊙ h_{t-1} + (1 − d) ⊙ h̃_t: Bernoulli(p) draws in
      training, p itself in evaluation (the expectation)."""

    keep: np.ndarray | None = None
    zone_h: np.ndarray | None = None
    zone_c: np.ndarray | None = None

    def window(self, a: int, b: int) -> Noise:
        """The masks of steps a:b (a checkpointed segment)."""
        return Noise(
            self.keep,
            None if self.zone_h is None else self.zone_h[a:b],
            None if self.zone_c is None else self.zone_c[a:b],
        )


@dataclass
class Feedback:
    """Output feedback around the cell (the Jordan network; rnnlab.feedback is its layer):
    the cell's h̃_t meets the output map, o_t = W_hr h̃_t + b_hr (K values, written into
    `outputs`, the layer's output), and the carry the next step's products take is
    y_t = f(o_t), f the identity, softmax or σ, after h̃_t itself when `hidden` (the carry
    [h̃_t; y_t], for W_hh = [W R]). Where `use` (T, B) is 0 the carry takes `truth` (T, B, K)
    instead of the prediction: teacher forcing per step, i.e. scheduled sampling; gradients
    do not flow through the truth. Forward only, no checkpointing, no noise."""

    f: str  # "identity", "softmax" or "sigmoid"
    hidden: bool
    outputs: np.ndarray  # (T, B, K), written by the forward pass
    use: np.ndarray  # (T, B): 1 where y_t is the prediction, 0 where it is the truth
    truth: np.ndarray  # (T, B, K)


def _fed(f: str, o: np.ndarray) -> np.ndarray:
    """f(o) over the last axis, as the carry takes it."""
    if f == "identity":
        return o
    return sigmoid(o) if f == "sigmoid" else softmax(o, axis=-1)


def _fed_back(f: str, s: np.ndarray, ds: np.ndarray) -> np.ndarray:
    """∂L/∂o from ∂L/∂f(o), with s = f(o): f's Jacobian, transposed, on ds."""
    if f == "identity":
        return ds
    if f == "sigmoid":
        d_sigmoid: np.ndarray = ds * s * (1.0 - s)
        return d_sigmoid
    d_softmax: np.ndarray = s * (ds - (s * ds).sum(axis=-1, keepdims=True))
    return d_softmax


@dataclass
class Lookup:
    """An input whose rows are rows of a table gathered by ids, X[t, b] = table[ids[t, b]]
    as the table was at the forward pass (an Embedding's output; rnnlab.modules.Sequential
    passes one to the layer after an Embedding). BPTT then takes the input's side from the
    pre-activation gradients summed by id over the U ids the batch holds,
    S[u] = Σ_{t,b: ids[t,b] = u} dA[t, b] (U × G·H): ∂L/∂W_ih = Sᵀ X_U (X_U: the forward's
    row of each of those ids, so a table changed since is not read) and ∂L/∂table = S W_ih
    on those ids' rows, zero elsewhere: two products of U ≤ T·B rows in place of
    dW_ih = dAᵀ X and ∂L/∂X = dA W_ih over all T·B rows followed by the table's gradient,
    ∂L/∂X summed by id (the same sums in another order). Only where the compiled loops run
    (rnnlab.fast: the BPTT loop makes the sums) and their per-thread blocks of U rows fit
    (fast.sums_by_id_fit); the NumPy path, and a batch of too many distinct ids, compute
    ∂L/∂X and sum it by id, as the Embedding did. The table gives the gradient's shape and
    dtype only."""

    table: np.ndarray  # (V, I)
    ids: np.ndarray  # (T, B) integers in [0, V), time-major as X

    def window(self, a: int, b: int) -> Lookup:
        """The ids of steps a:b (a checkpointed segment)."""
        return Lookup(self.table, self.ids[a:b])

    @functools.cached_property
    def groups(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(seen, first, which): the distinct ids in order, the flat index t·B + b of each
        one's first row, and each row's place in `seen` (seen[which] = ids, flattened).
        Made once: the layer's check and each direction's BPTT read it. Counted by id where
        the table is not much longer than the batch (a character model's 104 symbols over
        4096 rows: 0.02 ms against np.unique's sort, 0.16 ms), the same three arrays."""
        flat = self.ids.reshape(-1)
        V = self.table.shape[0]
        if V > max(64 * flat.size, 1 << 16):
            seen, first, which = np.unique(flat, return_index=True, return_inverse=True)
            return seen, first, which.reshape(-1)
        seen = np.flatnonzero(np.bincount(flat, minlength=V))
        place = np.empty(V, np.intp)
        place[seen] = np.arange(seen.size)
        which = place[flat]
        first = np.full(seen.size, flat.size, np.intp)
        np.minimum.at(first, which, np.arange(flat.size))
        return seen, first, which


def rows_summed_by_id(rows: np.ndarray, ids: np.ndarray, like: np.ndarray) -> np.ndarray:
    """dW with dW[v] = Σ rows[i] over the i with ids[i] = v (zero for an id not seen), shaped
    and typed as `like` (the table): the
    rows sorted by id (stably: each id's rows keep their order) and each id's run summed at
    once. np.add.at, which adds row by row, took 7x as long for a character model's batch
    of 4096 rows of 64 (3.45 against 0.48 ms), and the float32 sums came no nearer the
    float64 ones (bench/README.md, "A gradient given up"). (For rows as wide as an LSTM's
    gates, 4096 × 1024, this and np.add.at took ~40 ms: the compiled BPTT loop adds each
    row to its id's while it has it, bench/README.md "Sums made while the loop has the
    rows".)"""
    dW = np.zeros_like(like)
    if not ids.size:
        return dW
    order = np.argsort(ids, kind="stable")
    ordered = ids[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    dW[ordered[starts]] = np.add.reduceat(rows[order].astype(dW.dtype, copy=False), starts,
                                          axis=0)  # fmt: skip
    return dW


def _own(
    cell: Cell, p: Params, noise: Noise | None, rows: int, B: int, H: int, dtype: np.dtype
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(own, own_c): where the cell writes its step's h̃_t (and c̃_t) when the library makes
    the carry from them (a projection, zoneout), (rows, B, H) each; else None."""
    noise = Noise() if noise is None else noise
    projected = p.W_hr is not None or noise.zone_h is not None
    own = parallel.empty((rows, B, H), dtype) if projected else None
    own_c = parallel.empty((rows, B, H), dtype) if noise.zone_c is not None else None
    return own, own_c


Segments = tuple[int, list[tuple[np.ndarray, np.ndarray | None]]]
"""A checkpointed tape's (k, [(h, c) entering each segment, in processing order])."""


@dataclass
class Tape:
    """What the forward pass of one direction keeps for its backward pass."""

    X: np.ndarray  # (T, B, I), C-contiguous or a batch-first input's view (reads_in_place)
    hs: np.ndarray | None  # (T + 1, B, H); None when checkpointed (see forward)
    cs: np.ndarray | None  # (T + 1, B, H) for cells with a cell state
    saved: np.ndarray | None  # (T, B, cell.tape·H): the cell's own saved values
    mask: np.ndarray | None  # (T, B) bool, True where a step is valid
    reverse: bool
    segments: Segments | None = None  # checkpointed: (k, the state entering each segment)
    consumed: bool = False  # set by backward: BPTT may have overwritten `saved` (see backward)
    noise: Noise | None = None  # the masks the forward pass applied
    own: np.ndarray | None = None  # (T, B, H): the cell's h̃_t before projection or zoneout
    own_c: np.ndarray | None = None  # (T, B, H): its c̃_t before zoneout
    feedback: Feedback | None = None  # output feedback (the Jordan network)

    def slices(self) -> tuple[slice, slice]:
        """(previous-state rows, output rows) of `hs` for steps 0..T-1 in time order."""
        return (slice(1, None), slice(0, -1)) if self.reverse else (slice(0, -1), slice(1, None))


def _fast() -> ModuleType | None:
    """rnnlab.fast when the compiled loops run, else None (the NumPy loop)."""
    from rnnlab import fast

    return fast if fast.available() else None


def cell_width(cell: Cell, p: Params) -> int:
    """H, the cell's units (W_hh has G·H rows; its columns are the carry's P)."""
    H: int = p.W_hh.shape[0] // cell.gates
    return H


def _new_tape(cell: Cell, T: int, B: int, H: int, dtype: np.dtype) -> np.ndarray:
    return parallel.empty((T, B, cell.tape * H), dtype)


def _no_c(hs: np.ndarray) -> np.ndarray:
    """The empty carry of a cell without a cell state, for the steps' c arguments."""
    return np.empty((hs.shape[0], hs.shape[1], 0), hs.dtype)


def _projection_place(cell: Cell, T: int, hs: np.ndarray, saved: np.ndarray, reverse: bool,
                      own: np.ndarray | None = None
                      ) -> tuple[str, np.ndarray] | tuple[None, None]:  # fmt: skip
    """Where the compiled loop can take the input projection, in place of a (T, B, G·H)
    scratch array: ("tape", its first G·H columns) for a cell whose steps run in place and
    whose tape starts with G blocks; ("output", where the step writes h: the output rows of
    hs, or `own`) for a one-gate cell whose steps run in place, when those rows are
    contiguous (not inside a bidirectional layer's output); else (None, None)."""
    if not cell.in_place:
        return None, None
    H = own.shape[2] if own is not None else hs.shape[2]  # the cell's units
    GH = cell.gates * H
    if cell.tape >= cell.gates and saved.shape[0] == T:
        return "tape", saved[:, :, :GH]
    if cell.gates == 1 and own is not None:
        return ("output", own) if own.shape[0] == T else (None, None)
    if cell.gates == 1 and hs.flags.c_contiguous:
        return "output", hs[:-1] if reverse else hs[1:]
    return None, None


def _loop_forward(cell: Cell, X: np.ndarray, p: Params, W_hh: Any, hs: np.ndarray,
                  cs: np.ndarray | None, saved: np.ndarray, mask: np.ndarray | None,
                  reverse: bool, noise: Noise | None = None, own: np.ndarray | None = None,
                  own_c: np.ndarray | None = None, feedback: Feedback | None = None,
                  lookup: Lookup | None = None) -> None:  # fmt: skip
    """Project X and run the steps of one direction in place: hs (and cs, saved, own,
    own_c) get every state. The projection is X W_ihᵀ without b_ih (the steps add it);
    with `lookup` (reads_lookup), of X's distinct rows only, which the loop reads by id."""
    fast = _fast()
    T = X.shape[0]
    if fast is not None and lookup is not None and reads_lookup(lookup, T, X.shape[1]):
        _, first, which = lookup.groups
        B = X.shape[1]
        XA = parallel.matmul(X[first // B, first % B], p.W_ih.T)  # (U, G·H): the ids' rows
        fast.forward_loop(cell, XA, W_hh, p.b_ih, p.b_hh, p.q, hs, cs, saved, mask, reverse,
                          W_hr=p.W_hr, noise=noise, own=own, own_c=own_c, b_hr=p.b_hr,
                          feedback=feedback, ids=which.reshape(T, B))  # fmt: skip
        return
    if fast is not None:
        place, into = _projection_place(cell, T, hs, saved, reverse, own)
        XA = _project(X, p, out=into)
        fast.forward_loop(cell, XA, W_hh, p.b_ih, p.b_hh, p.q, hs, cs, saved, mask, reverse,
                          xa_at=place, W_hr=p.W_hr, noise=noise, own=own,
                          own_c=own_c, b_hr=p.b_hr, feedback=feedback)  # fmt: skip
        return
    XA = _project(X, p)
    cs = _no_c(hs) if cs is None else cs
    q = np.empty(0, hs.dtype) if p.q is None else p.q.reshape(-1)
    keep = saved.shape[0] == T  # else one step, overwritten
    noise = Noise() if noise is None else noise
    for t in range(T - 1, -1, -1) if reverse else range(T):
        prev, out = (t + 1, t) if reverse else (t, t + 1)
        ti = t if keep else 0
        step_forward(cell, W_hh, q, XA[t], p.b_ih, p.b_hh, hs[prev], cs[prev], hs[out],
                     cs[out], saved[ti], W_hr=p.W_hr, keep=noise.keep,
                     zone_h=None if noise.zone_h is None else noise.zone_h[t],
                     zone_c=None if noise.zone_c is None else noise.zone_c[t],
                     own=None if own is None else own[ti],
                     own_c=None if own_c is None else own_c[ti], b_hr=p.b_hr,
                     feedback=feedback, t=t)  # fmt: skip
        if mask is not None and not mask[t].all():
            skip = ~mask[t][:, None]
            np.copyto(hs[out], hs[prev], where=skip)
            np.copyto(cs[out], cs[prev], where=skip)


def _left_factor(
    cell: Cell, da: np.ndarray, da_h: np.ndarray, lo: int, hi: int, H: int
) -> np.ndarray:
    """What W_hh's rows lo·H:hi·H see as the pre-activation gradients: da's blocks, or
    da_h's where W_hh has its own (hh_own); a view of da where it is all da's."""
    if not any(lo <= k < hi for k in cell.hh_own):
        return da[..., lo * H : hi * H]
    parts = []
    for k in range(lo, hi):
        if k in cell.hh_own:
            m = cell.hh_own.index(k)
            parts.append(da_h[..., m * H : (m + 1) * H])
        else:
            parts.append(da[..., k * H : (k + 1) * H])
    return np.concatenate(parts, axis=-1)


def _loop_backward(
    cell: Cell, W_hh: Any, q: np.ndarray | None, hs: np.ndarray, cs: np.ndarray | None,
    saved: np.ndarray, mask: np.ndarray | None, reverse: bool, dys: np.ndarray | None,
    dh: np.ndarray | None, dc: np.ndarray | None, dXA: np.ndarray, dHA: np.ndarray | None,
    dq: np.ndarray | None, dh_trace: np.ndarray | None = None, W_hr: np.ndarray | None = None,
    noise: Noise | None = None, own: np.ndarray | None = None, own_c: np.ndarray | None = None,
    dHR: np.ndarray | None = None, feedback: Feedback | None = None,
    sums: np.ndarray | None = None, ids: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:  # fmt: skip
    """BPTT over the steps of one direction: fills dXA/dHA (or, compiled, the tape for cells
    with grads_over_tape), dq and dHR (∂L/∂h_t at each step, for the projection's gradient;
    zero at masked steps), returns (dh_0, dc_0). `dys` must already be zero at masked
    steps. With `feedback`, dys is ∂L/∂o_t, the outputs' gradient (Feedback). sums, ids:
    the compiled loop's (rnnlab.fast.backward_loop), compiled only."""
    fast = _fast()
    if fast is not None:
        dh0_dc0: tuple[np.ndarray, np.ndarray | None] = fast.backward_loop(
            cell, W_hh, q, hs, cs, saved, mask, reverse, dys, dh, dc, dXA, dHA, dq, dh_trace,
            W_hr=W_hr, noise=noise, own=own, own_c=own_c, dHR=dHR, feedback=feedback,
            sums=sums, ids=ids,
        )  # fmt: skip
        return dh0_dc0
    assert sums is None  # (_bptt asks for them only where the loop is compiled)
    T, B, P = hs.shape[0] - 1, hs.shape[1], hs.shape[2]
    dt = hs.dtype
    noise = Noise() if noise is None else noise
    dh = np.zeros((B, P), dt) if dh is None else np.array(dh, dtype=dt)
    if cell.has_c:
        H = saved.shape[2] // cell.tape if cell.tape else P
        dc = np.zeros((B, H), dt) if dc is None else np.array(dc, dtype=dt)
    else:
        dc, cs = np.empty((B, 0), dt), _no_c(hs)
    q = np.empty(0, dt) if q is None else q.reshape(-1)
    dq = np.empty((B, 0), dt) if dq is None else dq
    dHA = np.empty((T, B, 0), dt) if dHA is None else dHA
    for t in range(T) if reverse else range(T - 1, -1, -1):
        prev, out = (t + 1, t) if reverse else (t, t + 1)
        if dys is not None and feedback is None:
            dh = dh + dys[t]
        if dh_trace is not None:
            dh_trace[t] = dh
        valid = None if mask is None or mask[t].all() else mask[t][:, None]
        dh_in = dh.copy() if valid is None else np.where(valid, dh, 0.0).astype(dt)
        dc_in = dc.copy() if valid is None else np.where(valid, dc, 0.0).astype(dt)
        # cs is an array here: the caller's for a cell with a cell state, else _no_c's
        step_backward(cell, W_hh, q, hs[prev], cs[prev], hs[out], cs[out], saved[t], dh_in,  # type: ignore[index]
                      dc_in, dXA[t], dHA[t], dq, W_hr=W_hr, keep=noise.keep,
                      zone_h=None if noise.zone_h is None else noise.zone_h[t],
                      zone_c=None if noise.zone_c is None else noise.zone_c[t],
                      own=None if own is None else own[t],
                      own_c=None if own_c is None else own_c[t],
                      d_hr=None if dHR is None else dHR[t], feedback=feedback, t=t,
                      d_out=None if dys is None or feedback is None else dys[t])  # fmt: skip
        if dHR is not None and valid is not None:
            dHR[t] *= valid
        if valid is None:
            dh, dc = dh_in, dc_in
        else:
            dh = np.where(valid, dh_in, dh).astype(dt)
            dc = np.where(valid, dc_in, dc).astype(dt)
    return dh, (dc if cell.has_c else None)


def step_forward(cell: Cell, W_hh: np.ndarray, q: np.ndarray, xa: np.ndarray,
                 b_ih: np.ndarray, b_hh: np.ndarray, h_prev: np.ndarray, c_prev: np.ndarray,
                 h: np.ndarray, c: np.ndarray, saved: np.ndarray, *,
                 W_hr: np.ndarray | None = None, keep: np.ndarray | None = None,
                 zone_h: np.ndarray | None = None, zone_c: np.ndarray | None = None,
                 own: np.ndarray | None = None, own_c: np.ndarray | None = None,
                 b_hr: np.ndarray | None = None, feedback: Feedback | None = None,
                 t: int = 0) -> None:  # fmt: skip
    """One step on NumPy for a batch block: each of the cell's products, then its stage.
    xa = x_t W_ihᵀ without b_ih; writes h (and c) and the step's tape `saved`.

    Around the cell (layer options, Noise): the products take h_{t-1} ⊙ keep; with a
    projection W_hr (P, H) or zoneout the cell writes h̃_t into `own` (and c̃_t into `own_c`)
    and the carry is h_t = h̃_t W_hrᵀ, or h_t = zone_h ⊙ h_{t-1} + (1 − zone_h) ⊙ h̃_t (and
    c_t likewise with zone_c). With `feedback` (Feedback, step t) the carry is the fed-back
    output: o_t = h̃_t W_hrᵀ + b_hr into feedback.outputs[t], h_t = [h̃_t;] f(o_t) or the
    truth."""
    h_cell = h if own is None else own
    c_cell = c if own_c is None else own_c
    H = h_cell.shape[-1]
    src_h = h_prev if keep is None else h_prev * keep
    for ((lo, hi), src), stage in zip(cell.products, cell.stages, strict=True):
        A = src_h if src is None else saved[..., src * H : (src + 1) * H]
        ha = A @ W_hh[lo * H : hi * H].T
        stage(xa, b_ih, ha, b_hh, q, h_prev, c_prev, h_cell, c_cell, saved)
    if feedback is not None:
        o = feedback.outputs[t]
        # feedback comes with its output map W_hr and the cell's h̃_t in `own` (Feedback)
        np.matmul(own, W_hr.T, out=o)  # type: ignore[arg-type, union-attr]
        o += b_hr
        y = np.where(feedback.use[t][:, None] > 0, _fed(feedback.f, o), feedback.truth[t])
        if feedback.hidden:
            h[..., :H] = own
        h[..., h.shape[-1] - y.shape[-1] :] = y
    elif W_hr is not None:
        h[...] = own @ W_hr.T
    elif zone_h is not None:
        h[...] = zone_h * h_prev + (1 - zone_h) * own
    if zone_c is not None:
        c[...] = zone_c * c_prev + (1 - zone_c) * own_c


def step_backward(cell: Cell, W_hh: np.ndarray, q: np.ndarray, h_prev: np.ndarray,
                  c_prev: np.ndarray, h: np.ndarray, c: np.ndarray, saved: np.ndarray,
                  dh: np.ndarray, dc: np.ndarray, da: np.ndarray, da_h: np.ndarray,
                  dq: np.ndarray, *, W_hr: np.ndarray | None = None,
                  keep: np.ndarray | None = None, zone_h: np.ndarray | None = None,
                  zone_c: np.ndarray | None = None, own: np.ndarray | None = None,
                  own_c: np.ndarray | None = None, d_hr: np.ndarray | None = None,
                  feedback: Feedback | None = None, t: int = 0,
                  d_out: np.ndarray | None = None) -> None:  # fmt: skip
    """One step of BPTT on NumPy for a batch block: the cell's backward stages, last first,
    each followed by its product transposed. dh (and dc) go from ∂L/∂h_t to ∂L/∂h_{t-1} in
    place; da, da_h get the pre-activation gradients; dq (B, n_extra·H) accumulates. A cell
    whose steps run in place finds its tape's first blocks in da and da_h (Cell.in_place).
    The keywords are step_forward's; `d_hr` receives ∂L/∂h_t for the projection's gradient
    (Σ_t ∂L/∂h_tᵀ h̃_t); with `feedback`, ∂L/∂o_t, which takes `d_out` (∂L/∂o_t from outside:
    the layer's output gradient) and, through f where the carry was the prediction, the
    carry's."""
    h_cell = h if own is None else own
    c_cell = c if own_c is None else own_c
    H = h_cell.shape[-1]
    if cell.in_place and saved.shape[-1] >= da.shape[-1] + da_h.shape[-1]:
        GH, n_own = da.shape[-1], da_h.shape[-1]
        da[...] = saved[..., :GH]
        if n_own:
            da_h[...] = saved[..., GH : GH + n_own]
    carried = None  # the part of ∂L/∂h_{t-1} that bypasses the cell
    if feedback is not None:
        # feedback and a projection come with W_hr and d_hr (step_forward, _loop_backward)
        K = W_hr.shape[0]  # type: ignore[union-attr]
        s = h[..., h.shape[-1] - K :]  # f(o_t) where the carry took the prediction
        do = _fed_back(feedback.f, s, dh[..., dh.shape[-1] - K :]) * feedback.use[t][:, None]
        if d_out is not None:
            do += d_out
        d_hr[...] = do  # type: ignore[index]
        dh_cell = do @ W_hr
        if feedback.hidden:
            dh_cell += dh[..., :H]
        carried = np.zeros_like(dh)
    elif W_hr is not None:
        d_hr[...] = dh  # type: ignore[index]
        dh_cell = dh @ W_hr
        carried = np.zeros_like(dh)  # the cell reads h_{t-1} through its products only
    elif zone_h is not None:
        dh_cell = (1 - zone_h) * dh
        carried = zone_h * dh
    else:
        dh_cell = dh
    dc_cell = dc if zone_c is None else (1 - zone_c) * dc
    dsrc = np.empty(h_cell.shape[:-1] + (0,), h_cell.dtype)
    for ((lo, hi), src), step in reversed(
        list(zip(cell.products, cell.backward_stages, strict=True))
    ):
        step(dh_cell, dc_cell, dsrc, q, h_prev, c_prev, h_cell, c_cell, saved, da, da_h, dq)
        grad = _left_factor(cell, da, da_h, lo, hi, H) @ W_hh[lo * H : hi * H]
        if src is not None:
            dsrc = grad
            continue
        if keep is not None:
            grad *= keep
        if W_hr is not None:
            carried += grad
        else:
            dh_cell += grad
    if W_hr is not None:
        dh[...] = carried
    elif zone_h is not None:
        dh[...] = dh_cell + carried
    if zone_c is not None:
        dc[...] = dc_cell + zone_c * dc


def _step_weights(
    cell: Cell, W_hh: np.ndarray, B: int, backward: bool = False, inference: bool = False
) -> Any:
    """W_hh as the loop over time takes it: prepared once for the compiled loops
    (rnnlab.fast.step_weights: each product's rows, transposed for the forward pass, packed
    for MKL where that pays, else a C-contiguous copy, on which products run faster than on
    W with MKL's transpose flag), else W_hh itself for the NumPy loop."""
    fast = _fast()
    if fast is not None:
        return fast.step_weights(cell, W_hh, B, backward=backward, inference=inference)
    return W_hh


def packs_step_weights(
    cell: Cell, shape: tuple[int, int], dtype: np.dtype, inference: bool = False
) -> bool:
    """Whether the compiled loops take a recurrent weight of this shape packed
    (rnnlab.fast.packs); False for the NumPy loop."""
    fast = _fast()
    return fast is not None and fast.packs(shape, dtype, inference)


LOOKUP_MAX_SHARE = 0.5
"""The largest share of distinct rows U / (T·B) at which a forward pass projects the distinct
rows and reads them by id (reads_lookup); above it, the projection of every row runs."""


def reads_lookup(lookup: Lookup | None, T: int, B: int) -> bool:
    """Whether a forward pass over an input of rows gathered by id (Lookup, an Embedding's
    output) projects only its U distinct rows, X_U W_ihᵀ (U × G·H), which the compiled loop
    reads by id at each step (rnnlab.fast.forward_loop's ids), in place of the projection
    of all T·B rows: a character model's batch of 32 × 128 holds ~100 distinct ids, so the
    product shrinks 40-fold and the loop reads 100 rows that stay in cache (the step 2-3 %
    shorter: bench/README.md, "The tail of the step"). Not where most rows are distinct (a
    word model's small batch), nor on the NumPy path."""
    if lookup is None or _fast() is None or T * B == 0:
        return False
    return len(lookup.groups[0]) <= LOOKUP_MAX_SHARE * T * B


def _project(X: np.ndarray, p: Params, out: np.ndarray | None = None) -> np.ndarray:
    """XA = X W_ihᵀ for all steps at once, without b_ih (the steps add it): (T, B, I) →
    (T, B, G·H), into `out` (rows of G·H contiguous values) or a scratch buffer (it lives
    only until the loop has read it, and BPTT's scratch takes the same memory later)."""
    T, B, I = X.shape
    GH = p.W_ih.shape[0]
    if out is None:
        XA = parallel.scratch("preact", (T * B, GH), X.dtype)
    else:
        XA = out.reshape(T * B, GH)
    if X.flags.c_contiguous:
        parallel.matmul(X.reshape(T * B, I), p.W_ih.T, out=XA)
    else:  # a batch-first input where it lies (reads_in_place); copied whole for one
        # product where that copy is narrower than the product it feeds, and gone after it
        parallel.time_major_matmul(X, p.W_ih.T, XA, whole=I <= GH)
    return XA.reshape(T, B, GH)


IN_PLACE_MIN_VALUES = 1 << 18
"""Below this many values a batch-first input is copied time-major as before: the copy is
small, and its products a few steps at a time cost more than it (bench/README.md, "An input
read where it lies": RNN (16, 200, 32, 64) 8-20 % slower a training step)."""


def reads_in_place(X: np.ndarray) -> bool:
    """Whether a training pass keeps X (T, B, I) where it lies although it is not
    C-contiguous: the time-major view of a batch-first array (each sequence's steps one
    run of rows, the sequences apart), whose rows the input projection and dW_ih read a few
    steps at a time (parallel.time_major_matmul, StepRows). A time-major copy of the
    input would otherwise live from the forward pass to the weight gradients, at the peak
    of a training step (T·B·I values: 11 % of an Elman layer's step at (64, 100, 128, 256),
    bench/README.md "An input read where it lies"). Like PyTorch's saved tensors, the input
    must not change between forward and backward."""
    T, B, I = X.shape
    s = X.itemsize
    st, sb, si = X.strides
    return (T * B * I >= IN_PLACE_MIN_VALUES and T > 1 and B > 1 and si == s and st == I * s
            and sb % s == 0 and sb >= T * I * s)  # fmt: skip


def _states(
    T: int, B: int, H: int, dtype: np.dtype, has_c: bool, reverse: bool, h0: np.ndarray,
    c0: np.ndarray | None, hs: np.ndarray | None = None, c_rows: int = 0, P: int | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:  # fmt: skip
    """(hs, cs) of T + 1 rows with the initial state in place; hs is `hs` if given; hs has
    P columns (a projected carry) or H. With c_rows = 2 (inference's loop, which keeps c_t
    in row t mod 2) cs has two rows only."""
    P = H if P is None else P
    if hs is None:
        hs = parallel.empty((T + 1, B, P), dtype)
    elif hs.shape != (T + 1, B, P) or hs.dtype != dtype or hs.strides[2] != hs.itemsize:
        _checks.fail(
            "hs_out",
            f"a {np.dtype(dtype)} array of shape {(T + 1, B, P)} with contiguous rows",
            f"{hs.dtype} {hs.shape}, strides {hs.strides}",
        )
    cs = parallel.empty((c_rows or T + 1, B, H), dtype) if has_c else None
    first = T if reverse else 0
    hs[first] = h0
    if cs is not None:
        cs[first % cs.shape[0]] = c0
    return hs, cs


def projects_each_step(cell: Cell, I: int, H: int, dtype: np.dtype, training: bool = False
                       ) -> bool:  # fmt: skip
    """Whether a forward pass of this layer runs rnnlab.fast.projecting_loop, which multiplies
    x_t at every step without a projection array; in inference (keep_tape=False) it reads
    x_t's rows where they lie: no time-major copy of a batch-first input."""
    fast = _fast()
    return fast is not None and fast.projects_each_step(cell, I, H, dtype, training)


def forward(
    cell: Cell,
    p: Params,
    X: np.ndarray,
    h0: np.ndarray,
    c0: np.ndarray | None = None,
    mask: np.ndarray | None = None,
    reverse: bool = False,
    checkpoint_every: int = 0,
    keep_tape: bool = True,
    hs_out: np.ndarray | None = None,
    noise: Noise | None = None,
    feedback: Feedback | None = None,
    lookup: Lookup | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, Tape | None]:
    """Run `cell` over X (T, B, I) from the initial state h0 (B, H) [and c0].

    Returns (ys, h_T, c_T, tape): ys (T, B, H) in time order, zero at masked steps; h_T, c_T
    the final states (after the last valid step of each sequence).

    `checkpoint_every=k` (gradient checkpointing): keep only the state at every k-th step and
    recompute each segment's tape during the backward pass, so the memory BPTT needs beyond
    the input and output grows as O(T/k + k), O(√T) for k ≈ √T, for one more forward pass of
    compute (k ≥ T: full BPTT). The outputs and final states were full BPTT's bit for bit in
    every case measured; the gradients are its sums in another order (segment by segment),
    equal to rounding (docs/design.md, "Gradient checkpointing").

    `keep_tape=False` (inference): the cell's saved values are one step long and overwritten
    at every step, and the returned tape is None (no backward can follow). Where
    projects_each_step says so, rnnlab.fast.projecting_loop runs, whose outputs differ by
    float rounding only (in training too, where it says so).

    `hs_out` (T + 1, B, P), if given, receives the states (h_0 included, as the tape's `hs`)
    instead of a new array: rows of P contiguous values, evenly spaced, e.g. one direction's
    half of a bidirectional layer's output, which then needs no concatenation. ys is then a
    view of it (but a new array where a mask zeroes outputs).

    With a projection (p.W_hr, (P, H)) the states h are P wide and c H wide; `noise` holds
    recurrent dropout's and zoneout's masks (Noise).

    With `feedback` (Feedback; p.W_hr (K, H) and p.b_hr (K,) the output map) ys are the
    outputs o_t (T, B, K), and the states the fed-back carry ([h̃_t;] y_t).

    `lookup` (Lookup): X[t, b] = table[ids[t, b]], an Embedding's output; where reads_lookup
    says so the loop reads the projections of X's distinct rows by id. The caller vouches
    for X = table[ids].
    """
    T, B, _ = X.shape
    H, P = cell_width(cell, p), p.W_hh.shape[1]
    if feedback is not None and (reverse or noise is not None or p.b_hr is None):
        raise ValueError("output feedback runs forward, without noise, with W_hr and b_hr")
    if feedback is not None:
        checkpoint_every = 0
        lookup = None
    by_id = reads_lookup(lookup, T, B)
    projecting = (feedback is None and not by_id
                  and projects_each_step(cell, X.shape[2], H, X.dtype, training=keep_tape))
    # inference's projecting loop reads x_t's rows where they are, as the lookup reads its
    # distinct rows; a tape keeps X time-major for the weight gradients
    if not ((projecting or by_id) and not keep_tape) and not reads_in_place(X):
        X = np.ascontiguousarray(X)
    if checkpoint_every and checkpoint_every < T and keep_tape:
        W_hh = _step_weights(cell, p.W_hh, B)
        return _forward_checkpointed(
            cell, p, X, W_hh, h0, c0, mask, reverse, checkpoint_every, hs_out, noise, lookup
        )
    # without a tape only the last cell state is wanted: inference keeps two rows of them
    two_c = not keep_tape and _fast() is not None  # the compiled loops: c_t in row t mod 2
    hs, cs = _states(T, B, H, X.dtype, cell.has_c, reverse, h0, c0, hs_out, 2 if two_c else 0,
                     P)  # fmt: skip
    saved = _new_tape(cell, T if keep_tape else 1, B, H, X.dtype)
    own, own_c = _own(cell, p, noise, T if keep_tape else 1, B, H, X.dtype)
    if projecting:
        # projecting: the compiled loops run, so _fast() is the module
        _fast().projecting_loop(cell, X, p.W_ih, p.W_hh, p.b_ih, p.b_hh, p.q, hs, cs, saved,  # type: ignore[union-attr]
                                mask, reverse, W_hr=p.W_hr, noise=noise, own=own,
                                own_c=own_c, training=keep_tape)  # fmt: skip
    else:
        W_hh = _step_weights(cell, p.W_hh, B, inference=not keep_tape)
        _loop_forward(cell, X, p, W_hh, hs, cs, saved, mask, reverse, noise, own, own_c,
                      feedback, lookup)  # fmt: skip

    tape: Tape | None
    tape = Tape(X, hs, cs, saved, mask, reverse, noise=noise, own=own, own_c=own_c,
                feedback=feedback)  # fmt: skip
    ys = hs[tape.slices()[1]] if feedback is None else feedback.outputs
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


def _forward_checkpointed(cell: Cell, p: Params, X: np.ndarray, W_hh: Any, h0: np.ndarray,
                          c0: np.ndarray | None, mask: np.ndarray | None, reverse: bool,
                          k: int, hs_out: np.ndarray | None = None, noise: Noise | None = None,
                          lookup: Lookup | None = None
                          ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, Tape]:  # fmt: skip
    T, B, _ = X.shape
    H, P = cell_width(cell, p), p.W_hh.shape[1]
    if hs_out is None:
        ys = np.empty((T, B, P), X.dtype)
    else:  # the outputs go where the caller wants the states; h_0 too, for the same layout
        full, _ = _states(T, B, H, X.dtype, False, reverse, h0, None, hs_out, P=P)
        ys = full[:-1] if reverse else full[1:]
    starts = []  # the state entering each segment, in processing order
    # copies, as full BPTT's hs[0] is: h0 may be the caller's array, changed in place before
    # the backward pass (a carried state), which then recomputed the segments from it
    h, c = h0.copy(), (None if c0 is None else c0.copy())
    for a, b in _segments(T, k, reverse):
        starts.append((h, c))
        L = b - a
        hs, cs = _states(L, B, H, X.dtype, cell.has_c, reverse, h, c, P=P)
        saved = _new_tape(cell, L, B, H, X.dtype)
        seg_mask = None if mask is None else mask[a:b]
        seg_noise = None if noise is None else noise.window(a, b)
        own, own_c = _own(cell, p, seg_noise, L, B, H, X.dtype)
        _loop_forward(cell, X[a:b], p, W_hh, hs, cs, saved, seg_mask, reverse, seg_noise, own,
                      own_c, lookup=None if lookup is None else lookup.window(a, b))  # fmt: skip
        ys[a:b] = hs[:-1] if reverse else hs[1:]
        last = 0 if reverse else L
        h = hs[last].copy()
        c = cs[last].copy() if cs is not None else None
    if mask is not None:
        ys = np.where(mask[:, :, None], ys, 0.0).astype(X.dtype, copy=False)
    tape = Tape(X, None, None, None, mask, reverse, segments=(k, starts), noise=noise)
    return ys, h, c, tape


def backward(
    cell: Cell,
    p: Params,
    tape: Tape,
    dys: np.ndarray | None,
    dh_T: np.ndarray | None = None,
    dc_T: np.ndarray | None = None,
    need_dX: bool = True,
    dh_trace: np.ndarray | None = None,
    retain_tape: bool = False,
    overwrite_dys: bool = False,
    lookup: Lookup | None = None,
) -> tuple[np.ndarray | None, Params, np.ndarray, np.ndarray | None]:
    """BPTT for one direction: from ∂L/∂ys (T, B, H) and ∂L/∂h_T [∂L/∂c_T] to every gradient.

    Returns (dX, grads, dh0, dc0); grads is a Params of the weight gradients (q: the cell's
    extra parameters', when it has any). `dh_trace` (T, B, H), if given, receives the total
    ∂L/∂h_t of every step t (the gradient flowing into the state written at step t, from its
    output and from later steps): what the diagnostics plot against the lag.

    A tape whose values BPTT overwrites serves one backward pass: the compiled loops turn
    the saved gates of a cell with grads_over_tape (the LSTM, the GRU) into the
    pre-activation gradients in place (one (T, B, G·H) array instead of two; as PyTorch frees
    its graph after backward). `retain_tape=True` keeps it for another pass, at the price of
    a scratch copy of the tape. Tapes nothing overwrites (Elman cells, the NumPy loop,
    checkpointed tapes) serve any number.

    `overwrite_dys=True` says the caller no longer needs dys (a loss's gradient, the layer
    above's ∂L/∂input): a cell whose pre-activation gradients are as wide as its outputs (an
    Elman cell) then writes them over dys, which each step reads just before (one (T, B, H)
    array less at the peak of its training step), and dX goes over dys where it has dys's
    shape and the cell has not (_dX_over: dX is then dys's memory). Else dys is garbage
    after the call.

    `lookup` (Lookup): the forward's X was rows of a table, X[t, b] = table[ids[t, b]]; the
    first result is then ∂L/∂table (V, I) instead of ∂L/∂X (with need_dX), and W_ih's
    gradient comes from the pre-activation gradients summed by id where the compiled loops
    run (Lookup). The caller vouches for X = table[ids].
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
    compiled = _fast() is not None and cell.grads_over_tape
    tape.consumed = compiled and not retain_tape and tape.hs is not None
    X, mask = tape.X, tape.mask
    if dys is not None and mask is not None:
        dys = np.where(mask[:, :, None], dys, 0.0)  # padded outputs are constants
        overwrite_dys = True  # (our own copy)
    free = dys if overwrite_dys and tape.feedback is None and not _kept(dys, tape) else None
    if tape.hs is None:
        return _backward_checkpointed(cell, p, tape, dys, dh_T, dc_T, need_dX, dh_trace, free,
                                      lookup)  # fmt: skip
    T, B, I = X.shape
    saved: np.ndarray = tape.saved  # type: ignore[assignment]  # with hs (not checkpointed)
    if compiled and retain_tape:  # BPTT works on a copy of the tape
        saved = parallel.scratch("saved", saved.shape, saved.dtype)
        np.copyto(saved, tape.saved)  # type: ignore[arg-type]
    return _bptt(cell, p, X, tape.hs, _cell_states(tape), saved, mask, tape.reverse, dys,
                 dh_T, dc_T, need_dX, dh_trace, noise=tape.noise, own=tape.own,
                 own_c=tape.own_c, feedback=tape.feedback, free=free,
                 lookup=lookup)  # fmt: skip


def _kept(a: np.ndarray | None, tape: Tape) -> bool:
    """Whether `a` shares memory with what the tape keeps for BPTT to read: given up or not,
    such an array is never written over. A layer's output is a view of its states (so
    backward(f, f.output, overwrite_d_output=True), the gradient of ½‖y‖², hands BPTT the
    states it reads), and a caller may give up the input itself."""
    if a is None:
        return False
    kept = [tape.X, tape.hs, tape.cs, tape.saved, tape.own, tape.own_c]
    if tape.segments is not None:
        kept += [s for pair in tape.segments[1] for s in pair]
    return any(k is not None and np.may_share_memory(a, k) for k in kept)


def _cell_states(tape: Tape) -> np.ndarray | None:
    """The tape's cell states, which a consumed tape then gives up: BPTT's loop is their last
    reader, and _bptt drops them after it, before the weight gradients, the peak of a
    training step (an LSTM's c_t, T·B·H values)."""
    cs = tape.cs
    if tape.consumed:
        tape.cs = None
    return cs


def _bptt(cell: Cell, p: Params, X: np.ndarray, hs: np.ndarray, cs: np.ndarray | None,
          saved: np.ndarray, mask: np.ndarray | None, reverse: bool, dys: np.ndarray | None,
          dh: np.ndarray | None, dc: np.ndarray | None, need_dX: bool,
          dh_trace: np.ndarray | None, W_hh: Any = None, noise: Noise | None = None,
          own: np.ndarray | None = None, own_c: np.ndarray | None = None,
          feedback: Feedback | None = None, free: np.ndarray | None = None,
          lookup: Lookup | None = None
          ) -> tuple[np.ndarray | None, Params, np.ndarray, np.ndarray | None]:  # fmt: skip
    """The backward loop, then the weight gradients and ∂L/∂X of one direction (or one
    checkpointed segment; W_hh: the weights as _step_weights prepared them, if it did;
    free: dys, when the caller lets BPTT write over it; lookup: X's rows were a table's,
    and ∂L/∂table (V, I) comes back in ∂L/∂X's place)."""
    T, B, I = X.shape
    GH, P = p.W_hh.shape
    H = cell_width(cell, p)
    dXA, dHA = _preact_grads(cell, saved, T, B, H, X.dtype, free)
    dq = None if p.q is None else np.zeros((B, p.q.size), X.dtype)
    K = None if p.W_hr is None else p.W_hr.shape[0]  # P, or the outputs' K with feedback
    # K, own (and dq, p.q) are set together with W_hr (and q): Params', Tape's invariants
    dHR = None if p.W_hr is None else parallel.scratch("proj", (T, B, K), X.dtype)  # type: ignore[arg-type]
    if W_hh is None:
        W_hh = _step_weights(cell, p.W_hh, B, backward=True)
    # Compiled, the loop sums the pre-activation gradients as it writes them: by id where X's
    # rows were a table's (S (U, G·H)) and its blocks of U rows fit, else b_ih's gradient
    # (one row)
    sums = ids = None
    fast = _fast()
    if fast is not None:
        if lookup is not None:
            seen, first, which = lookup.groups
            if fast.sums_by_id_fit(T, B, GH, H, len(seen), X.dtype):
                ids = which.reshape(T, B)
        sums = np.zeros((len(seen) if ids is not None else 1, GH))
    dh, dc = _loop_backward(cell, W_hh, p.q, hs, cs, saved, mask, reverse, dys, dh, dc, dXA,
                            dHA, dq, dh_trace, p.W_hr, noise, own, own_c, dHR, feedback,
                            sums, ids)  # fmt: skip
    cs = None  # (not read again: the caller's tape may have given it up, _cell_states)
    prev = hs[1:] if reverse else hs[:-1]
    if noise is not None and noise.keep is not None:
        prev = prev * noise.keep  # what the products took
    by_id = None  # the pre-activation gradients summed by id, S (U, G·H), and X's rows (Lookup)
    db_ih = None
    if sums is not None:
        db_ih = sums.sum(axis=0).astype(X.dtype)
        if ids is not None:
            by_id = (sums.astype(X.dtype), X[first // B, first % B])  # (X may be a view)
    grads = _weight_grads(cell, p, X, prev, saved, dXA, dHA, by_id, db_ih)
    if dq is not None:
        grads.q = dq.sum(axis=0).reshape(p.q.shape)  # type: ignore[union-attr]
    if dHR is not None:
        grads.W_hr = parallel.matmul(dHR.reshape(T * B, K).T, own.reshape(T * B, H))  # type: ignore[arg-type, union-attr]
    if feedback is not None:
        grads.b_hr = dHR.reshape(T * B, K).sum(axis=0)  # type: ignore[arg-type, union-attr]
    dX = None
    if need_dX and by_id is not None:  # ∂L/∂table = S W_ih on the rows of the ids seen
        d_table = np.zeros_like(lookup.table)  # type: ignore[union-attr]  # (set with by_id)
        d_table[seen] = parallel.matmul(by_id[0], p.W_ih)
        return d_table, grads, dh, dc
    if need_dX:
        into = _dX_over(free, dXA, dHA, (T, B, I), X.dtype)
        dX = parallel.matmul(dXA.reshape(T * B, GH), p.W_ih, out=into).reshape(T, B, I)
    if dX is not None and lookup is not None:  # the NumPy path, or sums by id too large for
        # the loop's blocks: ∂L/∂X summed by id, each id's rows in batch-major order, as
        # Embedding.backward sums a batch-first gradient
        dX = rows_summed_by_id(dX.transpose(1, 0, 2).reshape(-1, I), lookup.ids.T.reshape(-1),
                               lookup.table)  # fmt: skip
    return dX, grads, dh, dc


def _dX_over(free: np.ndarray | None, dXA: np.ndarray, dHA: np.ndarray | None,
             shape: tuple[int, int, int], dtype: np.dtype) -> np.ndarray | None:  # fmt: skip
    """Where ∂L/∂X may go instead of a new array: over `free` (the dys the caller gave up,
    which the loop has read for the last time by now) where it has ∂L/∂X's shape and dtype,
    is C-contiguous (the product writes (T·B, I) rows) and writeable, and is none of the
    arrays the product reads (an Elman layer's dXA may be `free` itself). In a stack of
    layers whose input is as wide as their output, the layer above's ∂L/∂X then takes no
    memory of its own: one (T, B, H) array less at that layer's peak."""
    if (
        free is None
        or free.shape != shape
        or free.dtype != dtype
        or not free.flags.c_contiguous
        or not free.flags.writeable
        or np.may_share_memory(free, dXA)
        or (dHA is not None and np.may_share_memory(free, dHA))
    ):
        return None
    return free.reshape(shape[0] * shape[1], shape[2])


def _preact_grads(
    cell: Cell, saved: np.ndarray, T: int, B: int, H: int, dtype: np.dtype,
    free: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:  # fmt: skip
    """(dXA, dHA): where BPTT leaves the pre-activation gradients, as W_ih sees them and in
    W_hh's own blocks (hh_own; None without). The compiled loops of a cell with
    grads_over_tape write them over the tape it is given (the caller gave it a copy where the
    tape must survive), so these are views of it. Else dXA is `free` (dys, which the caller
    gave up) where it has dXA's shape and dtype, a contiguous last axis and evenly spaced
    rows that a reshape to (T·B, G·H) keeps a view (either half of a bidirectional
    gradient qualifies), is writeable (each step reads its
    dys rows before it writes the same rows of dXA, in both loops) and no step finds its
    gates in dXA on entry (an in-place cell with a tape); else a scratch buffer, dead when
    backward returns (the input projection's memory: never both alive at once)."""
    GH, own = cell.gates * H, len(cell.hh_own) * H
    if _fast() is not None and cell.grads_over_tape:
        return saved[:, :, :GH], (saved[:, :, GH : GH + own] if own else None)
    if (
        free is not None
        and free.shape == (T, B, GH)
        and free.dtype == dtype
        and free.strides[2] == free.itemsize
        and free.strides[0] == B * free.strides[1] >= B * GH * free.itemsize
        and free.flags.writeable
        and not (cell.in_place and cell.tape >= cell.gates)
    ):
        dXA = free
    else:
        dXA = parallel.scratch("preact", (T, B, GH), dtype)
    return dXA, (parallel.scratch("preact_hh", (T, B, own), dtype) if own else None)


def _weight_grads(
    cell: Cell,
    p: Params,
    X: np.ndarray,
    hs_prev: np.ndarray,
    saved: np.ndarray,
    dXA: np.ndarray,
    dHA: np.ndarray | None,
    by_id: tuple[np.ndarray, np.ndarray] | None = None,
    db_ih: np.ndarray | None = None,
) -> Params:
    """The deferred weight gradients: products over all T·B rows at once, in one hand-over
    to the threads, one product for each run of W_hh's rows that shares its gradients and
    inputs (the products' sources, own blocks apart). by_id = (S, X_U) where X's rows were
    a table's (Lookup): W_ih's gradient is then Sᵀ X_U, a product of the U ids' rows.
    db_ih: b_ih's gradient where the loop summed it (else summed here over dA_x's rows)."""
    T, B, I = X.shape
    GH, P = p.W_hh.shape
    H = GH // cell.gates
    dA_x = dXA.reshape(T * B, GH)
    dA_h = None if dHA is None else dHA.reshape(T * B, -1)
    blocks = []
    for (lo, hi), src in cell.products:
        if src is None:
            inputs = hs_prev.reshape(T * B, P)
        else:
            inputs = saved[:, :, src * H : (src + 1) * H].reshape(T * B, H)
        a = lo
        for k in range(lo, hi + 1):
            if k < hi and k not in cell.hh_own:
                continue
            if k > a:
                blocks.append((slice(a * H, k * H), dA_x[:, a * H : k * H], inputs))
            if k < hi:
                m = cell.hh_own.index(k)
                # dHA is an array when the cell has own blocks (_preact_grads)
                blocks.append((slice(k * H, (k + 1) * H), dA_h[:, m * H : (m + 1) * H], inputs))  # type: ignore[index]
            a = k + 1
    ours: list[tuple[np.ndarray, np.ndarray | parallel.StepRows]] = []  # W_ih's, over the rows
    if by_id is None:
        ours.append((dA_x, X.reshape(T * B, I) if X.flags.c_contiguous
                     else parallel.StepRows(X)))  # (in place)  # fmt: skip
    pairs = ours + [(grads, inputs) for _, grads, inputs in blocks]
    # a block whose gradients are columns of dA_x has its bias sum in b_ih's: not again
    shared = [_columns_of(grads, dA_x) for _, grads, _ in blocks]
    # b_ih's gradient is summed here only where the compiled loop did not sum it
    sums = ([dA_x] if db_ih is None else []) + [
        grads for (_, grads, _), same in zip(blocks, shared, strict=True) if not same
    ]
    whole = len(blocks) == 1 and blocks[0][0] == slice(0, GH)
    dtype = np.result_type(dA_x.dtype, hs_prev.dtype)
    # rows no product reads (a gate without recurrence) have no gradient: zeros, not the
    # garbage of np.empty (their bias's too, below)
    covered = sum((hi - lo) * H for (lo, hi), _ in cell.products) == GH
    dW_hh = None if whole else (np.empty if covered else np.zeros)((GH, P), dtype)
    outs = [None] * len(ours) + [None if dW_hh is None else dW_hh[rows] for rows, _, _ in blocks]
    products, totals = parallel.inner_products(pairs, sums, outs)
    if db_ih is None:
        db_ih = totals.pop(0)
    if by_id is None:
        dW_ih = products.pop(0)
    else:
        S, seen_rows = by_id
        dW_ih = parallel.matmul(S.T, seen_rows)
    if dW_hh is None:
        db_hh = db_ih[shared[0]].copy() if shared[0] is not None else totals[0]
        return Params(dW_ih, products[0], db_ih, db_hh)
    db_hh = (np.empty_like if covered else np.zeros_like)(p.b_hh)
    rest = iter(totals)
    for (rows, _, _), same in zip(blocks, shared, strict=True):
        db_hh[rows] = db_ih[same] if same is not None else next(rest)
    return Params(dW_ih, dW_hh, db_ih, db_hh)


def _columns_of(view: np.ndarray, whole: np.ndarray) -> slice | None:
    """The columns a:b with view = whole[:, a:b] (the same rows, the same memory), or None.
    The GRU's r and z blocks of the W_hh side are dA_x's own columns: their bias gradient is
    b_ih's, so they are not summed twice (a third of a large GRU step's bias sums)."""
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


def _backward_checkpointed(
    cell: Cell,
    p: Params,
    tape: Tape,
    dys: np.ndarray | None,
    dh: np.ndarray | None,
    dc: np.ndarray | None,
    need_dX: bool,
    dh_trace: np.ndarray | None,
    free: np.ndarray | None = None,
    lookup: Lookup | None = None,
) -> tuple[np.ndarray | None, Params, np.ndarray, np.ndarray | None]:
    X, mask, reverse, noise = tape.X, tape.mask, tape.reverse, tape.noise
    T, B, I = X.shape
    H, P = cell_width(cell, p), p.W_hh.shape[1]
    k, starts = tape.segments  # type: ignore[misc]  # a checkpointed tape has them
    W_fwd = _step_weights(cell, p.W_hh, B)
    W_back = _step_weights(cell, p.W_hh, B, backward=True)
    total = Params(
        np.zeros_like(p.W_ih), np.zeros_like(p.W_hh), np.zeros_like(p.b_ih), np.zeros_like(p.b_hh),
        None if p.q is None else np.zeros_like(p.q),
        None if p.W_hr is None else np.zeros_like(p.W_hr),
    )  # fmt: skip
    dX = None
    if need_dX:  # ∂L/∂X, or ∂L/∂table summed over the segments
        dX = np.empty((T, B, I), X.dtype) if lookup is None else np.zeros_like(lookup.table)
    spans = _segments(T, k, reverse)
    for (a, b), (h, c) in zip(spans[::-1], starts[::-1], strict=True):
        L = b - a
        seg_mask = None if mask is None else mask[a:b]
        hs, cs = _states(L, B, H, X.dtype, cell.has_c, reverse, h, c, P=P)
        saved = _new_tape(cell, L, B, H, X.dtype)
        seg_noise = None if noise is None else noise.window(a, b)
        own, own_c = _own(cell, p, seg_noise, L, B, H, X.dtype)
        window = None if lookup is None else lookup.window(a, b)
        _loop_forward(cell, X[a:b], p, W_fwd, hs, cs, saved, seg_mask, reverse, seg_noise, own,
                      own_c, lookup=window)  # fmt: skip
        dXs, g, dh, dc = _bptt(cell, p, X[a:b], hs, cs, saved, seg_mask, reverse,
                               None if dys is None else dys[a:b], dh, dc, need_dX,
                               None if dh_trace is None else dh_trace[a:b], W_back, seg_noise,
                               own, own_c, free=None if free is None else free[a:b],
                               lookup=window)  # fmt: skip
        for name in ("W_ih", "W_hh", "b_ih", "b_hh", "q", "W_hr"):
            if getattr(g, name) is not None:
                getattr(total, name)[...] += getattr(g, name)
        if dX is not None and lookup is not None:
            dX += dXs
        elif dX is not None:
            dX[a:b] = dXs
    return dX, total, dh, dc  # type: ignore[return-value]  # T ≥ 1: _bptt set dh


def valid_mask(lengths: object, mask: object, B: int, T: int, name: str = "lengths"
               ) -> np.ndarray | None:  # fmt: skip
    """Validate `lengths` (B,) or `mask` (B, T) and return a time-major (T, B) bool mask.

    Returns None when every step of every sequence is valid, so callers skip masking work.
    `name`: the lengths' argument, as the caller's users know it (a model with two inputs
    has `src_lengths` and `tgt_lengths`).
    """
    if lengths is not None and mask is not None:
        _checks.fail(name, "None when `mask` is given (pass one of them)", "both")
    for value, what in ((lengths, name), (mask, "mask")):  # (masked: read as all valid)
        _checks.plain_array(value, what, "A masked array's mask is not read here: give the "
                            "valid steps as `mask` (True where valid) or their counts as "
                            "`lengths`.")  # fmt: skip
    if lengths is not None:
        lengths = _checks.int_array(lengths, name, ndim=1)
        if lengths.shape[0] != B:
            _checks.fail(
                name,
                f"an array of shape ({B},) (one length per sequence)",
                f"shape {lengths.shape}",
            )
        if lengths.min() < 1 or lengths.max() > T:
            bad = int(lengths[(lengths < 1) | (lengths > T)][0])
            _checks.fail(
                name,
                f"between 1 and the padded length {T}",
                f"a length of {bad}",
                "Zero-length sequences have no steps to run; drop them from the batch.",
            )
        if lengths.min() == T:
            return None
        return lengths_to_mask(lengths, T)
    if mask is not None:
        if not isinstance(mask, np.ndarray) or mask.dtype != bool:
            _checks.fail("mask", "a boolean array (True at valid steps)", _checks.describe(mask))
        if mask.shape != (B, T):
            _checks.fail("mask", f"an array of shape ({B}, {T})", f"shape {mask.shape}")
        empty = ~mask.any(axis=1)
        if empty.any():
            _checks.fail(
                "mask",
                "True at one step at least in every sequence",
                f"an all-False row at batch index {int(np.argmax(empty))}",
                "Zero-length sequences have no steps to run; drop them from the batch.",
            )
        if mask.all():
            return None
        return np.ascontiguousarray(mask.T)
    return None


def lengths_to_mask(lengths: np.ndarray, T: int) -> np.ndarray:
    """(B,) valid lengths → (T, B) bool mask, True where t < length."""
    return np.arange(T)[:, None] < np.asarray(lengths)[None, :]
