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
    hs: np.ndarray  # (T + 1, B, H)
    cs: np.ndarray | None  # (T + 1, B, H) for cells with a cell state
    extra: dict[str, np.ndarray]  # the cell's own saved values, indexed by step
    mask: np.ndarray | None  # (T, B) bool, True where a step is valid
    reverse: bool

    def slices(self) -> tuple[slice, slice]:
        """(previous-state rows, output rows) of `hs` for steps 0..T-1 in time order."""
        return (slice(1, None), slice(0, -1)) if self.reverse else (slice(0, -1), slice(1, None))


def forward(
    cell,
    p: Params,
    X: np.ndarray,
    h0: np.ndarray,
    c0: np.ndarray | None = None,
    mask: np.ndarray | None = None,
    reverse: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, Tape]:
    """Run `cell` over X (T, B, I) from the initial state h0 (B, H) [and c0].

    Returns (ys, h_T, c_T, tape): ys (T, B, H) in time order, zero at masked steps; h_T, c_T
    the final states (after the last valid step of each sequence).
    """
    T, B, I = X.shape
    GH, H = p.W_hh.shape
    dtype = X.dtype
    X = np.ascontiguousarray(X)
    XA = (X.reshape(T * B, I) @ p.W_ih.T).reshape(T, B, GH)
    XA += p.b_ih
    W_hhT = np.ascontiguousarray(p.W_hh.T)  # per-step products are faster on a C-order Wᵀ

    hs = np.empty((T + 1, B, H), dtype)
    cs = np.empty((T + 1, B, H), dtype) if cell.has_c else None
    extra = cell.new_tape(T, B, H, dtype)
    first = T if reverse else 0
    hs[first] = h0
    if cs is not None:
        cs[first] = c0
    for t in range(T - 1, -1, -1) if reverse else range(T):
        prev, out = (t + 1, t) if reverse else (t, t + 1)
        c_prev = cs[prev] if cs is not None else None
        c_out = cs[out] if cs is not None else None
        cell.forward_step(t, XA[t], hs[prev], c_prev, W_hhT, p.b_hh, hs[out], c_out, extra)
        if mask is not None and not mask[t].all():
            skip = ~mask[t][:, None]
            np.copyto(hs[out], hs[prev], where=skip)
            if cs is not None:
                np.copyto(cs[out], cs[prev], where=skip)

    tape = Tape(X, hs, cs, extra, mask, reverse)
    ys = hs[tape.slices()[1]]
    if mask is not None:
        ys = np.where(mask[:, :, None], ys, 0.0).astype(dtype, copy=False)
    last = 0 if reverse else T
    c_T = cs[last] if cs is not None else None
    return ys, hs[last], c_T, tape


def backward(
    cell,
    p: Params,
    tape: Tape,
    dys: np.ndarray | None,
    dh_T: np.ndarray | None = None,
    dc_T: np.ndarray | None = None,
    need_dX: bool = True,
    dh_trace: np.ndarray | None = None,
) -> tuple[np.ndarray | None, Params, np.ndarray, np.ndarray | None]:
    """BPTT for one direction: from ∂L/∂ys (T, B, H) and ∂L/∂h_T [∂L/∂c_T] to every gradient.

    Returns (dX, grads, dh0, dc0); grads is a Params of the four weight gradients.
    `dh_trace` (T, B, H), if given, receives the total ∂L/∂h_t of every step t (the gradient
    flowing into the state written at step t, from its output and from later steps): what
    the diagnostics plot against the lag.
    """
    X, hs, cs, extra, mask = tape.X, tape.hs, tape.cs, tape.extra, tape.mask
    T, B, I = X.shape
    GH, H = p.W_hh.shape
    dtype = hs.dtype
    if dys is not None and mask is not None:
        dys = np.where(mask[:, :, None], dys, 0.0)  # padded outputs are constants
    dXA = np.empty((T, B, GH), dtype)
    dHA = dXA if cell.shares_preact_grad else np.empty((T, B, GH), dtype)
    dh = np.zeros((B, H), dtype) if dh_T is None else np.array(dh_T, dtype=dtype)
    dc = None
    if cell.has_c:
        dc = np.zeros((B, H), dtype) if dc_T is None else np.array(dc_T, dtype=dtype)

    for t in range(T) if tape.reverse else range(T - 1, -1, -1):
        prev, out = (t + 1, t) if tape.reverse else (t, t + 1)
        if dys is not None:
            dh = dh + dys[t]
        if dh_trace is not None:
            dh_trace[t] = dh
        c_prev = cs[prev] if cs is not None else None
        c_out = cs[out] if cs is not None else None
        if mask is None or mask[t].all():
            dh, dc = cell.backward_step(
                t, dh, dc, hs[prev], c_prev, hs[out], c_out, p.W_hh, extra, dXA[t], dHA[t]
            )
        else:
            valid = mask[t][:, None]
            dh_in = np.where(valid, dh, 0.0)
            dc_in = np.where(valid, dc, 0.0) if dc is not None else None
            dh_prev, dc_prev = cell.backward_step(
                t, dh_in, dc_in, hs[prev], c_prev, hs[out], c_out, p.W_hh, extra, dXA[t], dHA[t]
            )
            dh = np.where(valid, dh_prev, dh)  # a skipped step passes its gradient straight on
            if dc is not None:
                dc = np.where(valid, dc_prev, dc)

    # The deferred weight gradients: one GEMM each over all T·B rows.
    dA_x = dXA.reshape(T * B, GH)
    dA_h = dHA.reshape(T * B, GH)
    hs_prev = hs[tape.slices()[0]].reshape(T * B, H)
    dW_ih = dA_x.T @ X.reshape(T * B, I)
    blocks = cell.recurrent_inputs(hs_prev, extra) if hasattr(cell, "recurrent_inputs") else None
    if blocks is None:
        dW_hh = dA_h.T @ hs_prev
    else:
        dW_hh = np.empty_like(p.W_hh)
        for rows, inputs in blocks:
            dW_hh[rows] = dA_h[:, rows].T @ inputs.reshape(T * B, H)
    grads = Params(dW_ih, dW_hh, dA_x.sum(axis=0), dA_h.sum(axis=0))
    dX = (dA_x @ p.W_ih).reshape(T, B, I) if need_dX else None
    return dX, grads, dh, dc


def lengths_to_mask(lengths: np.ndarray, T: int) -> np.ndarray:
    """(B,) valid lengths → (T, B) bool mask, True where t < length."""
    return np.arange(T)[:, None] < np.asarray(lengths)[None, :]
