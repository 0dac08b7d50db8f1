"""The vocabulary a cell's step is written in, so that one written form runs on both paths.

A cell's step functions (rnnlab.cells.base) are written over *rows*: every array argument is
indexed with a unit index `j` from `units(a)`, and the element-wise functions below take
what that indexing gives. Two callers run the same code:

- the NumPy loop (rnnlab.recurrence) passes whole batch blocks, shape (B, n), and here
  `units(a)` yields one index, `...`, so `h[j] = o[j] * tanh(c[j])` is one NumPy expression
  over the block;
- the compiled loops (rnnlab.fast) pass one batch row at a time, shape (n,), and numba's
  versions of these functions (registered by rnnlab.fast.rows) make `units(a)` the
  `range(n)` of a plain loop, which LLVM vectorises, and `tanh`, `sigmoid` scalar functions
  it can vectorise.

So a step reads as its equations, line for line, with a `for j in units(...)` around them.
Blocks of a row (the gates of an LSTM) are `blocks(a, n, H)` or `a[..., lo:hi]`; per-unit
parameters (an (n,) vector) index the same way and broadcast over the batch.

Rules a step keeps:
- every array a loop indexes has the width of the one `units` takes: cut wider rows to
  the block (`xa[..., :2 * H]`); on NumPy `x[j]` is the whole block;
- in each loop, compute every value the loop writes before its first write: on NumPy
  `x[j]` is a view, so `f = da[j]`, then `da[j] = ...`, then a use of `f` reads the new
  value (compiled, `f` keeps the old); an in-place cell's backward finds its gates in da
  and da_h, which are its tape's first blocks when compiled (Cell.in_place). The cell
  check (rnnlab.cellcheck) runs the steps both ways and refuses a cell whose results differ;
- allocate nothing (no `np.empty`, no array expressions outside `[j]` indexing): the
  compiled loops run without numba's reference counting;
- write constants as `one(x)`, `zero(x)`: a float32 row then computes in float32.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from types import EllipsisType

import numpy as np

from rnnlab import ops

_MODE = threading.local()  # unit_by_unit, this thread's (rnnlab.cellcheck's run of a cell)


def units(a: np.ndarray) -> tuple[EllipsisType] | tuple[tuple[EllipsisType, list[int]], ...]:
    """The unit indices of a row: `range(a.shape[-1])` in the compiled loops; here one index,
    `...`, that takes the whole block at once (a view: see the module's rules). Under
    `unit_by_unit`, one index per unit that reads a copy, as the compiled loops read values."""
    if getattr(_MODE, "unit_by_unit", False):
        return tuple((Ellipsis, [k]) for k in range(a.shape[-1]))
    return (Ellipsis,)


@contextlib.contextmanager
def unit_by_unit() -> Iterator[None]:
    """Steps run on NumPy one unit at a time, each x[j] a copy (rnnlab.cellcheck's runs)."""
    _MODE.unit_by_unit = True  # (this thread's steps only: the batch-split threads and
    try:  # another thread's NumPy loop keep their blocks)
        yield
    finally:
        _MODE.unit_by_unit = False


def blocks(a: np.ndarray, n: int, H: int) -> tuple[np.ndarray, ...]:
    """The first n blocks of H units of a row (the gates of a stacked weight's rows). Take H
    from the step's own h (`h.shape[-1]`) for every array: blocks of the tape and of xa or da
    that share memory then start at the same address as far as the compiler can see, and
    their loops vectorise. n must be a constant in the step (the compiled loops make a tuple
    of n blocks when they compile it)."""
    return tuple(a[..., i * H : (i + 1) * H] for i in range(n))


def one(x: np.ndarray) -> np.generic:
    """1 in the dtype of x."""
    value: np.generic = np.asarray(x).dtype.type(1.0)
    return value


def zero(x: np.ndarray) -> np.generic:
    """0 in the dtype of x."""
    value: np.generic = np.asarray(x).dtype.type(0.0)
    return value


def tanh(x: np.ndarray) -> np.ndarray:
    out: np.ndarray = np.tanh(x)
    return out


def sigmoid(x: np.ndarray) -> np.ndarray:
    """σ(x) = 1 / (1 + e^{−x}), as rnnlab.ops computes it for the losses too (0.5·tanh(x/2)
    + 0.5: never overflows, one transcendental)."""
    return ops.sigmoid(np.asarray(x))


def relu(x: np.ndarray) -> np.ndarray:
    """max(x, 0)."""
    out: np.ndarray = np.maximum(x, zero(x))
    return out


def positive(x: np.ndarray) -> np.ndarray:
    """1 where x > 0, else 0, in the dtype of x (the derivative of relu, read off its output)."""
    return (np.asarray(x) > 0).astype(np.asarray(x).dtype)


def clip(x: np.ndarray, bound: float) -> np.ndarray:
    """x limited to [−bound, bound]."""
    out: np.ndarray = np.clip(x, -bound, bound)
    return out


def inside(x: np.ndarray, bound: float) -> np.ndarray:
    """|x| < bound, the bound rounded to x's dtype as `clip` rounds it: a unit clip held at
    float32(0.7) is not inside 0.7 (compared in float64 it was, and its gradient flowed)."""
    out: np.ndarray = np.abs(x) < np.asarray(x).dtype.type(bound)
    return out


def select(condition: np.ndarray, a: np.ndarray, b: np.ndarray | np.generic) -> np.ndarray:
    """a where condition holds, else b (element-wise)."""
    return np.where(condition, a, b)


def total(x: np.ndarray) -> np.ndarray:
    """Σ_j x[j] over a row's units: a scalar in the compiled loops, one value per batch row
    here (shape (B, 1), so that it broadcasts back over the units)."""
    out: np.ndarray = np.sum(x, axis=-1, keepdims=True)
    return out


def dot(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Σ_j x[j]·y[j] over a row's units (as `total`)."""
    out: np.ndarray = np.sum(np.asarray(x) * np.asarray(y), axis=-1, keepdims=True)
    return out


def sqrt(x: np.ndarray) -> np.ndarray:
    out: np.ndarray = np.sqrt(x)
    return out


def column(a: np.ndarray, k: int) -> np.ndarray:
    """Entry k of a row: a scalar in the compiled loops, one value per batch row here."""
    return a[..., k : k + 1]


def normalise(v: np.ndarray, out: np.ndarray, eps: float) -> np.ndarray:
    """out = (v − mean v) / √(var v + ε) over a row's units (layer normalisation; v and out
    may be one array); returns 1/√(var v + ε), a scalar in the compiled loops and one value
    per batch row here."""
    n = v.shape[-1]
    out[...] = v - total(v) / n
    r = 1.0 / sqrt(dot(out, out) / n + eps)
    out[...] = out * r
    return r


def normalise_back(dv: np.ndarray, v_hat: np.ndarray, r: np.ndarray) -> None:
    """dv ← r ⊙ (dv − mean dv − v̂ ⊙ mean(dv ⊙ v̂)) in place: layer normalisation's gradient,
    from ∂L/∂v̂ to ∂L/∂v, with r what `normalise` returned."""
    n = dv.shape[-1]
    m1, m2 = total(dv) / n, dot(dv, v_hat) / n
    dv[...] = r * (dv - m1 - v_hat * m2)
