"""Losses, each written beside its gradient, for the outputs of a recurrent model.

Every loss returns `(loss, d_input)`: the loss as a Python float and ∂loss/∂(first argument)
with the same shape and dtype, ready to hand to a model's `backward`. Sequence outputs may
carry a `mask` (B, T) (True at valid steps) or `lengths` (B,) (a valid prefix per sequence);
padded steps add nothing to the loss and get exactly zero gradient, and whatever targets they
hold is ignored (NaN, inf, out of range), so padding may use any value; the outputs must be
finite everywhere (they are the model's: a NaN among them, padded or not, is divergence).
`reduction="sum"` adds the loss of every valid position; `"mean"` divides by the number of
valid positions (class axis excluded) for cross entropy and by the number of valid elements
(feature axes included, as torch does) for the element-wise losses. There is no empty mean:
an empty array, and a sequence without a valid step (an all-False row of `mask`, a length
of 0), are refused. Inputs are plain arrays (a list becomes one; a masked array, whose mask
these functions do not read, or an np.matrix is refused); float targets are converted to the
output's dtype, and one past its range (1e39 for float32) counts only at a padded step.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rnnlab import _checks, ops
from rnnlab.ops import sigmoid
from rnnlab.recurrence import valid_mask

REDUCTIONS = ("sum", "mean")


def _axis(x: np.ndarray, axis: object) -> int | tuple[int, ...] | None:
    """`axis` as NumPy takes it (an int, a tuple of ints, or None for all), checked by name."""
    from numpy.lib.array_utils import normalize_axis_tuple

    if axis is None:
        return None
    axes: tuple[Any, ...] = axis if isinstance(axis, tuple) else (axis,)
    if not all(isinstance(a, (int, np.integer)) and not isinstance(a, bool) for a in axes):
        _checks.fail("axis", "an int, a tuple of ints or None", repr(axis))
    try:
        normalize_axis_tuple(axes, x.ndim)
    except (ValueError, IndexError):  # (out of range, or repeated)
        _checks.fail("axis", f"axes of x, from {-x.ndim} to {x.ndim - 1}, each once"
                     if x.ndim else "None or () (x is a 0-d array)", repr(axis))  # fmt: skip
    return tuple(int(a) for a in axes) if isinstance(axis, tuple) else int(axes[0])


def _floats(x: object) -> np.ndarray:
    """x as a float array: integers (and booleans) become float64, as NumPy computes them."""
    x = _given(x, "x")
    if isinstance(x, np.ndarray) and x.dtype.kind in "biu":
        x = x.astype(np.float64)
    return _checks.float_array(x, "x", finite=False, ids_hint=False)


def softmax(x: np.ndarray, axis: int | tuple[int, ...] | None = -1) -> np.ndarray:
    """softmax(x)_k = e^{x_k − max x} / Σ_j e^{x_j − max x}, stable for any finite x (the
    library's own, rnnlab.ops.softmax, behind a check of its arguments)."""
    x = _floats(x)
    axis = _axis(x, axis)
    with np.errstate(over="ignore"):  # x − max x past the dtype's range: −inf, e^{−inf} = 0
        return ops.softmax(x, axis)


def log_softmax(x: np.ndarray, axis: int | tuple[int, ...] | None = -1) -> np.ndarray:
    """log softmax(x)_k = (x_k − max x) − log Σ_j e^{x_j − max x}, stable for any finite x
    (−inf where that is below the dtype's most negative value, as in torch)."""
    x = _floats(x)
    axis = _axis(x, axis)
    with np.errstate(over="ignore"):  # −inf where x − max x is past the dtype's range (±3e38
        shifted: np.ndarray = x - x.max(axis=axis, keepdims=True)  # in float32), as torch's
    with np.errstate(under="ignore"):
        shifted -= np.log(np.exp(shifted).sum(axis=axis, keepdims=True))
    return shifted


def softmax_cross_entropy(
    logits: np.ndarray,
    targets: np.ndarray,
    *,
    mask: np.ndarray | None = None,
    lengths: np.ndarray | None = None,
    reduction: str = "sum",
) -> tuple[float, np.ndarray]:
    """Cross entropy of integer class targets under softmax(logits), and ∂L/∂logits.

    Per-step targets: logits o (B, T, K), targets y (B, T), optional mask m (B, T).
    One target per sequence: logits (B, K), targets (B,) (no mask).

        L = Σ_{b,t} m_bt · (log Σ_k e^{o_btk} − o_bt,y_bt)        ("sum"; "mean": L / Σ m)
        ∂L/∂o_btk = m_bt · (softmax(o_bt)_k − [k = y_bt])        ("mean": divided by Σ m)

    Targets at masked steps are ignored (any value, e.g. -1, is fine there). o_y − max o
    is taken in float64 and the losses summed in float64, so the loss is finite for any
    finite float32 logits (a row of ±3e38 loses 6e38, where torch's float32 gives inf) and
    inf only past float64's range (float64 logits of one row more than 1.8e308 apart), on
    both paths alike.
    """
    logits = _checks.float_array(_given(logits, "logits"), "logits", ndim=(2, 3),
                                 ids_hint=False, finite=False)  # fmt: skip
    reduction = _checks.choice(reduction, "reduction", REDUCTIONS)
    targets = _checks.int_array(_given(targets, "targets"), "targets")
    if targets.shape != logits.shape[:-1]:
        want = "(B,)" if logits.ndim == 2 else "(B, T)"
        _checks.fail(
            "targets",
            f"class ids of shape {want} = {logits.shape[:-1]} to match `logits` {logits.shape}",
            f"shape {targets.shape}",
        )
    _nonempty(logits, "logits")
    m = _mask(logits, mask, lengths, 3)  # (B, T) bool, or None when every step counts
    K = logits.shape[-1]
    if m is not None:
        targets = np.where(m, targets, 0)  # padding may hold any id; it is never looked up
    if targets.min() < 0 or targets.max() >= K:
        _out_of_range(targets, m, K)
    count = int(m.sum()) if m is not None else targets.size
    done = _compiled_cross_entropy(logits, targets, m, count if reduction == "mean" else 1)
    if done is not None:
        total, d_logits = done
        if not np.isfinite(total):  # a NaN or inf logit at a valid step: named as below
            _checks.float_array(logits, "logits")
        return (total / count if reduction == "mean" else total), d_logits
    _checks.float_array(logits, "logits")  # (the compiled pass finds a NaN or inf on its way)

    # One exp over the whole array: e = e^{o − max o}, s = Σ_k e, so softmax = e / s and
    # log Σ_k e^{o_k} − o_y = log s − (o_y − max o).
    top = logits.max(axis=-1, keepdims=True)
    at = targets[..., None]
    # o − max o overflows to −inf where a row's logits lie further apart than the dtype's
    # largest value (±3e38 in float32): e = 0 there, as it should be, but the RuntimeWarning
    # escaped, and o_y − max o, taken in float64 as the kernel does, is the loss's own
    with np.errstate(over="ignore"):  # (float64 logits 1.8e308 apart: the loss is inf)
        shifted = logits - top
        o_y = np.take_along_axis(logits, at, axis=-1).astype(np.float64) - top.astype(np.float64)
    with np.errstate(under="ignore"):  # probabilities below 1e-308 are 0, not an error
        e = np.exp(shifted)
        s = e.sum(axis=-1, keepdims=True)
        d_logits = e
        d_logits /= s
    nll = (np.log(s) - o_y)[..., 0]  # (B, T) or (B,), float64
    # − 1 at each target, written where d_logits lies: e keeps the logits' memory order, so
    # a reshape of it is a copy for logits that are not C-contiguous (a recurrent layer's
    # batch-first output, a Linear's output over one), and the − 1 went into that copy
    np.put_along_axis(d_logits, at, np.take_along_axis(d_logits, at, axis=-1) - 1.0, axis=-1)
    if m is not None:
        np.copyto(nll, 0.0, where=~m)  # (set, not multiplied: a padded step's inf loss · 0)
        d_logits *= m[..., None]
    return _reduce(nll, d_logits, count, reduction)


def _out_of_range(targets: np.ndarray, m: np.ndarray | None, K: int) -> None:
    """Refuse class ids outside [0, K), by the ids at the valid steps (the padded ones were
    set to 0 above, and the message gave "from 0" for ids that were all 5 or more)."""
    valid = targets if m is None else targets[m]
    bad = (targets < 0) | (targets >= K)
    at = tuple(int(i) for i in np.argwhere(bad)[0])
    _checks.fail(
        "targets",
        f"class ids in [0, {K}) (K = logits.shape[-1])",
        f"values from {valid.min()} to {valid.max()} ({targets[at]} at index {at})",
    )


def _compiled_cross_entropy(
    logits: np.ndarray, targets: np.ndarray, m: np.ndarray | None, divisor: int
) -> tuple[float, np.ndarray] | None:
    """(Σ −log softmax(o)_y, gradient / divisor) from the one-pass kernel of rnnlab.fast
    (the character LM's loss 0.77 ms on one thread against 1.1-1.2 for this module's eight
    passes, and split over the threads: the step 2.6 % shorter, bench/README.md, "The tail
    of the step"), or None without numba, for an empty selection, or for layouts it does
    not take."""
    from rnnlab import fast

    if not fast.available() or divisor == 0:
        return None
    return fast.softmax_cross_entropy(logits, targets, m, divisor)


def binary_cross_entropy(
    logits: np.ndarray,
    targets: np.ndarray,
    *,
    mask: np.ndarray | None = None,
    lengths: np.ndarray | None = None,
    reduction: str = "mean",
) -> tuple[float, np.ndarray]:
    """Binary cross entropy of probabilities y ∈ [0, 1] under σ(logits), and ∂L/∂logits.

    logits z and targets y share one shape; a mask (B, T) needs z of shape (B, T) or (B, T, ...).

        ℓ = max(z, 0) − z·y + log(1 + e^{−|z|})        (= −y log σ(z) − (1 − y) log(1 − σ(z)))
        L = Σ m ⊙ ℓ                                      ("mean": divided by the valid elements)
        ∂L/∂z = m ⊙ (σ(z) − y)                           ("mean": divided likewise)
    """
    logits = _checks.float_array(_given(logits, "logits"), "logits", ids_hint=False)
    reduction = _checks.choice(reduction, "reduction", REDUCTIONS)
    given = _float_targets(targets, logits)  # (padding may hold anything)
    _nonempty(logits, "logits")
    m = _mask(logits, mask, lengths, 2)
    targets = _cast_targets(given, logits.dtype, m)
    _finite_where_valid(targets, m, "targets")
    valid = targets if m is None else targets[m]
    if valid.size and (valid.min() < 0.0 or valid.max() > 1.0):
        _checks.fail(  # (each value as its dtype prints it: 1.0000002 in float32, not "1")
            "targets",
            "probabilities in [0, 1]",
            f"values from {valid.min()!s} to {valid.max()!s}",
        )
    # e^{-|z|} → 0 for large |z| is exact enough; a padded target's NaN or overflow is
    # dropped by the masking below
    with np.errstate(under="ignore", over="ignore", invalid="ignore"):
        ell = np.maximum(logits, 0.0) - logits * targets + np.log1p(np.exp(-np.abs(logits)))
        d_logits = sigmoid(logits)
        d_logits -= targets
    return _masked_elementwise(ell, d_logits, m, reduction)


def mean_squared_error(
    pred: np.ndarray,
    targets: np.ndarray,
    *,
    mask: np.ndarray | None = None,
    lengths: np.ndarray | None = None,
    reduction: str = "mean",
) -> tuple[float, np.ndarray]:
    """Squared error (no factor ½) and ∂L/∂pred; "mean" averages over every valid element.

    pred p and targets y share one shape; a mask (B, T) needs p of shape (B, T) or (B, T, ...).

        L = Σ m ⊙ (p − y)²                 ("mean": divided by the valid elements, as torch)
        ∂L/∂p = 2 m ⊙ (p − y)              ("mean": divided likewise)
    """
    pred = _checks.float_array(_given(pred, "pred"), "pred", finite=False, ids_hint=False)
    reduction = _checks.choice(reduction, "reduction", REDUCTIONS)
    given = _float_targets(targets, pred)
    _nonempty(pred, "pred")
    m = _mask(pred, mask, lengths, 2)
    targets = _cast_targets(given, pred.dtype, m)
    # the gradient is laid out like pred in memory: a batch-first view of a time-major output
    # gives a gradient whose time-major view the layer's backward reads without a copy
    count = pred.size if m is None else int(m.sum()) * (pred.size // m.size)
    mean = reduction == "mean"
    done = _compiled_squared_error(pred, targets, m, count if mean else 1)
    if done is not None:
        total, d_pred = done
        loss = total / count if mean else total
    else:
        loss, d_pred = _numpy_squared_error(pred, targets, m, reduction)
    if not np.isfinite(loss):  # name the first NaN or inf, if an input holds one: anywhere in
        _checks.float_array(pred, "pred")  # the model's output, at a valid step in the targets
        _finite_where_valid(targets, m, "targets")
    return loss, d_pred


def _compiled_squared_error(
    pred: np.ndarray, targets: np.ndarray, m: np.ndarray | None, divisor: int
) -> tuple[float, np.ndarray] | None:
    """(Σ squares, gradient / divisor) from the one-pass kernel of rnnlab.fast, or None
    without numba, for an empty selection, or for layouts it does not take."""
    from rnnlab import fast

    if not fast.available() or divisor == 0:
        return None
    return fast.squared_error(pred, targets, m, divisor)


def _numpy_squared_error(
    pred: np.ndarray, targets: np.ndarray, m: np.ndarray | None, reduction: str
) -> tuple[float, np.ndarray]:
    _checks.float_array(pred, "pred")  # (the compiled pass finds a NaN or inf in it on its way)
    r = np.empty_like(pred)
    with np.errstate(invalid="ignore", over="ignore"):  # non-finite inputs: diagnosed below
        np.subtract(pred, targets, out=r)
        ell = r * r
        r *= 2.0
        return _masked_elementwise(ell, r, m, reduction)


# ---------------------------------------------------------------------------- shared steps
def _nonempty(x: np.ndarray, name: str) -> None:
    if x.size == 0:
        _checks.fail(name, "a non-empty array", f"shape {x.shape}")


def _mask(x: np.ndarray, mask: object, lengths: object, min_ndim: int) -> np.ndarray | None:
    """The (B, T) validity mask of an output x (B, T, ...), or None when every step is valid.

    `min_ndim` is the rank from which x has a time axis: 3 for logits (the class axis comes
    last), 2 for element-wise losses (a (B, T) output is one number per step).
    """
    if mask is None and lengths is None:
        return None
    if x.ndim < min_ndim:
        which = "mask" if mask is not None else "lengths"
        _checks.fail(
            which,
            "None for outputs without a time axis",
            f"{_checks.describe(mask if mask is not None else lengths)} with an output of shape "
            f"{x.shape}",
            "Masks apply to outputs with a time axis (B, T, ...); this one has none.",
        )
    m = valid_mask(_given(lengths, "lengths"), mask, x.shape[0], x.shape[1])  # (T, B)
    return None if m is None else m.T


def _given(x: object, name: str) -> object:
    """x as an array where it is a list or tuple (nested lists of unequal lengths are refused
    by name: NumPy's own ValueError named no argument), refused if an ndarray subclass other
    than a memmap: a masked array's mask is not read here (masked targets counted, a masked
    id −1 read as the last class, silently), and np.matrix's or a masked array's arithmetic
    failed inside NumPy or numba with a traceback. Anything else is the caller's to check."""
    if isinstance(x, (list, tuple)):
        try:
            return np.asarray(x)
        except ValueError:  # (inhomogeneous shape)
            _checks.fail(name, "an array, or nested lists of equal lengths",
                         f"ragged nested lists ({_checks.describe(x)})")  # fmt: skip
    _checks.plain_array(x, name, "Its mask is not read here: pass np.asarray(...) of it, and "
                        "the valid steps as `mask` (B, T), True where valid.")  # fmt: skip
    return x


def _float_targets(targets: object, like: np.ndarray) -> np.ndarray:
    """Float targets of the output's shape, in their own dtype (_cast_targets converts them)."""
    targets = _given(targets, "targets")
    if isinstance(targets, np.ndarray) and targets.dtype.kind in "biu":
        _checks.fail(
            "targets",
            "a floating-point array",
            f"dtype {targets.dtype}",
            "Convert labels with targets.astype(np.float32) (or the dtype of the output).",
        )
    targets = _checks.float_array(targets, "targets", finite=False, ids_hint=False)
    if targets.shape != like.shape:
        _checks.fail(
            "targets", f"an array of the output's shape {like.shape}", f"shape {targets.shape}"
        )
    return targets


def _cast_targets(given: np.ndarray, dtype: np.dtype, m: np.ndarray | None) -> np.ndarray:
    """The targets in the output's dtype, so the gradient keeps it. A value past that dtype's
    range (float64 targets of 1e39 for a float32 output) becomes ±inf: ignored at a padded
    step, refused at a valid one by its value as given. The cast's RuntimeWarning escaped
    before, for padding too, and the error then named an inf that nobody gave."""
    if given.dtype == dtype:
        return given
    try:
        with np.errstate(over="raise"):  # (no extra pass: NumPy's cast reports overflow)
            return given.astype(dtype)
    except FloatingPointError:
        pass
    with np.errstate(over="ignore"):
        cast = given.astype(dtype)
    lost = np.isinf(cast) & np.isfinite(given)
    if m is not None:
        lost &= m.reshape(m.shape + (1,) * (given.ndim - 2))
    if lost.any():
        at = tuple(int(i) for i in np.argwhere(lost)[0])
        _checks.fail(
            "targets",
            f"within the range of the output's dtype {dtype} (±{float(np.finfo(dtype).max):.4g})"
            " at the valid steps",
            f"{given[at]} at index {at}",
        )
    return cast


def _finite_where_valid(x: np.ndarray, m: np.ndarray | None, name: str) -> None:
    """Refuse a NaN or inf of `x` at a valid entry (mask m (B, T), or every entry), named by
    its index in x; what padding holds is the caller's own."""
    if m is None:
        _checks.float_array(x, name)
        return
    bad = ~np.isfinite(x)
    bad &= m.reshape(m.shape + (1,) * (x.ndim - 2))
    if bad.any():
        at = tuple(int(i) for i in np.argwhere(bad)[0])
        _checks.fail(name, "finite (no NaN or inf) at the valid steps", f"{x[at]} at index {at}")


def _masked_elementwise(
    ell: np.ndarray, d_input: np.ndarray, m: np.ndarray | None, reduction: str
) -> tuple[float, np.ndarray]:
    """Zero the masked steps of an element-wise loss and its gradient, then reduce. Set to
    zero, not multiplied by the mask: a padded step's inf or NaN (an overflowing or NaN
    target there) times 0 was NaN."""
    if m is None:
        return _reduce(ell, d_input, ell.size, reduction)
    padded = ~m.reshape(m.shape + (1,) * (ell.ndim - 2))  # broadcast over the feature axes
    np.copyto(ell, 0.0, where=padded)
    np.copyto(d_input, 0.0, where=padded)
    return _reduce(ell, d_input, int(m.sum()) * (ell.size // m.size), reduction)


def _reduce(
    ell: np.ndarray, d_input: np.ndarray, count: int, reduction: str
) -> tuple[float, np.ndarray]:
    # The sum is accumulated in float64 so a float32 loss over many steps keeps its digits.
    loss = float(ell.sum(dtype=np.float64))
    if reduction == "mean":
        loss /= count
        with np.errstate(under="ignore"):
            d_input /= d_input.dtype.type(count)
    return loss, d_input
