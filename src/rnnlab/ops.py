"""Small pointwise functions shared by the cells, the output feedback and the losses."""

from __future__ import annotations

import numpy as np


def sigmoid(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """σ(x) = 1 / (1 + e^{-x}), computed as 0.5·tanh(x/2) + 0.5.

    The tanh form never overflows (e^{-x} does for x < -709 in float64, -88 in float32) and is
    one transcendental call instead of exp plus a division.
    """
    if out is None:  # (np.multiply's own result is a NumPy scalar for a 0-d x, no `out`)
        x = np.asarray(x)
        out = np.empty(x.shape, np.result_type(x, 0.5))
    np.multiply(x, 0.5, out=out)
    np.tanh(out, out=out)
    out *= 0.5
    out += 0.5
    return out


def softmax(x: np.ndarray, axis: int | tuple[int, ...] | None = -1) -> np.ndarray:
    """softmax(x)_k = e^{x_k − max x} / Σ_j e^{x_j − max x}, stable for any finite x."""
    with np.errstate(under="ignore"):  # e^{-800} → 0 is the right answer, not an error
        e: np.ndarray = np.exp(x - x.max(axis=axis, keepdims=True))
        e /= e.sum(axis=axis, keepdims=True)
    return e
