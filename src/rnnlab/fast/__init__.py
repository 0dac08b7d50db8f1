"""The speed path of the time loop: each cell's whole loop over time compiled with numba.

rnnlab.recurrence runs a Python loop that calls the cell once per step; at small H that loop
costs more than the arithmetic. With the optional `fast` extra (numba + scipy, whose BLAS
numba's `np.dot` calls) recurrence.forward/backward hand the loop to the functions below,
which run it in one compiled call per layer and direction, on exactly the arrays the NumPy
loop uses and with the same results (to a few ulps: see rnnlab.fast.kernels). Without
numba, or with the environment variable RNNLAB_NO_NUMBA=1, `available()` is False and the
NumPy loop runs.

    available() -> bool

    forward_loop(kind, XA, W_hhT, b_hh, hs, cs, extra, mask, reverse) -> None
        kind   "tanh" | "relu" | "lstm" | "gru" (reset_after=True) | "gru_orig" (reset_after=False)
        XA     (T, B, G·H)   X W_ihᵀ + b_ih, C-contiguous
        W_hhT  (H, G·H)      W_hhᵀ
        b_hh   (G·H,)
        hs     (T+1, B, H)   in/out: h_0 in hs[0] (hs[T] when reverse); steps write the rest
        cs     (T+1, B, H)   the same for the LSTM's cell state; None for the other cells
        extra  dict          the cell's new_tape(T, B, H, dtype), filled as its forward_step
                             fills it ("ifgo", "tanh_c" for the LSTM; "rzn", "hn" for the GRU)
        mask   (T, B) bool   or None; a False step copies the previous state (as recurrence)
        reverse bool         step t reads hs[t+1] and writes hs[t]

    backward_loop(kind, W_hh, hs, cs, extra, mask, reverse, dys, dh, dc, dXA, dHA,
                  dh_trace=None) -> (dh0, dc0)
        W_hh   (G·H, H)
        hs, cs, extra, mask, reverse   the forward's tape (from either loop)
        dys    (T, B, H) ∂L/∂ys or None; entries at masked steps are ignored
        dh, dc (B, H) ∂L/∂h_T, ∂L/∂c_T or None (zeros); not modified
        dXA    (T, B, G·H)   out: ∂L/∂(pre-activations) as seen by W_ih, zero at masked steps
        dHA    (T, B, G·H)   out: the same as seen by W_hh; for "tanh", "relu" and "lstm" the
                             two coincide and only dXA is written (pass dXA twice)
        dh_trace (T, B, H) or None; out: the total ∂L/∂h_t of every step, as in recurrence
        returns dh0 (B, H) and dc0 (B, H) for the LSTM, None otherwise

All arrays share one dtype, float32 or float64. Outputs (hs, cs, extra, dXA, dHA, dh_trace)
must be C-contiguous; inputs are made so (a copy only when needed).

The first call of each cell and dtype compiles its kernel (seconds); numba caches the machine
code beside the package (`cache=True`), so later processes load it in well under a second.
"""

from __future__ import annotations

import functools
import os

import numpy as np

from rnnlab import _checks

KINDS = ("tanh", "relu", "lstm", "gru", "gru_orig")


def available() -> bool:
    """True when numba and scipy import and RNNLAB_NO_NUMBA is unset (or "0")."""
    if os.environ.get("RNNLAB_NO_NUMBA", "0") not in ("", "0"):
        return False
    return _importable()


@functools.cache
def _importable() -> bool:
    try:
        import numba  # noqa: F401
        import scipy.linalg  # noqa: F401  (numba's np.dot calls scipy's BLAS)
    except ImportError:
        return False
    return True


def _c(a: np.ndarray, dtype: np.dtype) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=dtype)


def _mask_arg(mask: np.ndarray | None) -> tuple[np.ndarray, bool]:
    if mask is None:
        return np.ones((0, 0), bool), False
    return np.ascontiguousarray(mask, dtype=bool), True


def forward_loop(
    kind: str,
    XA: np.ndarray,
    W_hhT: np.ndarray,
    b_hh: np.ndarray,
    hs: np.ndarray,
    cs: np.ndarray | None,
    extra: dict[str, np.ndarray],
    mask: np.ndarray | None,
    reverse: bool,
    *,
    numpy_blas: bool | None = None,
) -> None:
    """Run the forward time loop of cell `kind`, writing hs[, cs] and `extra` in place."""
    _checks.choice(kind, "kind", KINDS)
    from rnnlab.fast import blas, kernels

    np_blas = blas.NUMPY_CBLAS if numpy_blas is None else bool(numpy_blas) and blas.NUMPY_CBLAS
    dt = hs.dtype
    XA, W_hhT, b_hh = _c(XA, dt), _c(W_hhT, dt), _c(b_hh, dt)
    m, has_mask = _mask_arg(mask)
    reverse = bool(reverse)
    if kind in ("tanh", "relu"):
        kernels.elman_forward(XA, W_hhT, b_hh, hs, m, has_mask, reverse, kind == "relu", np_blas)
    elif kind == "lstm":
        kernels.lstm_forward(
            XA, W_hhT, b_hh, hs, cs, extra["ifgo"], extra["tanh_c"], m, has_mask, reverse, np_blas
        )
    else:
        kernels.gru_forward(
            XA,
            W_hhT,
            b_hh,
            hs,
            extra["rzn"],
            extra["hn"],
            m,
            has_mask,
            reverse,
            kind == "gru",
            np_blas,
        )


def backward_loop(
    kind: str,
    W_hh: np.ndarray,
    hs: np.ndarray,
    cs: np.ndarray | None,
    extra: dict[str, np.ndarray],
    mask: np.ndarray | None,
    reverse: bool,
    dys: np.ndarray | None,
    dh: np.ndarray | None,
    dc: np.ndarray | None,
    dXA: np.ndarray,
    dHA: np.ndarray,
    dh_trace: np.ndarray | None = None,
    *,
    numpy_blas: bool | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """BPTT through the time loop of cell `kind`: fills dXA (and dHA), returns (dh0, dc0)."""
    _checks.choice(kind, "kind", KINDS)
    from rnnlab.fast import blas, kernels

    np_blas = blas.NUMPY_CBLAS if numpy_blas is None else bool(numpy_blas) and blas.NUMPY_CBLAS
    dt = hs.dtype
    B, H = hs.shape[1], hs.shape[2]
    W_hh = _c(W_hh, dt)
    m, has_mask = _mask_arg(mask)
    reverse = bool(reverse)
    has_dys = dys is not None
    dys = _c(dys, dt) if has_dys else np.empty((0, 0, 0), dt)
    has_trace = dh_trace is not None
    trace = dh_trace if has_trace else np.empty((0, 0, 0), dt)
    dh = np.zeros((B, H), dt) if dh is None else np.array(dh, dtype=dt, order="C")
    if kind in ("tanh", "relu"):
        kernels.elman_backward(
            W_hh,
            hs,
            m,
            has_mask,
            reverse,
            dys,
            has_dys,
            dh,
            dXA,
            trace,
            has_trace,
            kind == "relu",
            np_blas,
        )
        return dh, None
    if kind == "lstm":
        dc = np.zeros((B, H), dt) if dc is None else np.array(dc, dtype=dt, order="C")
        kernels.lstm_backward(
            W_hh,
            cs,
            extra["ifgo"],
            extra["tanh_c"],
            m,
            has_mask,
            reverse,
            dys,
            has_dys,
            dh,
            dc,
            dXA,
            trace,
            has_trace,
            np_blas,
        )
        return dh, dc
    kernels.gru_backward(
        W_hh,
        hs,
        extra["rzn"],
        extra["hn"],
        m,
        has_mask,
        reverse,
        dys,
        has_dys,
        dh,
        dXA,
        dHA,
        trace,
        has_trace,
        kind == "gru",
        np_blas,
    )
    return dh, None
