"""What the diagnostics share: argument checks, the traced BPTT of a whole layer stack, the
fitted rate of a quantity that changes geometrically with the lag, and JSON conversion.

The traced backward mirrors `layers.Recurrent.backward` (merge undone at the top, each layer's
dX feeding the layer below) but asks `recurrence.backward` for `dh_trace`, the total ∂L/∂h_t of
every step of every (layer, direction), which is what the lag profiles plot.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from rnnlab import _checks, recurrence
from rnnlab.layers import Forward, Recurrent

# A quantity whose fitted change over this many steps stays under 10x is called "stable".
STABLE_HORIZON = 100


def check_layer(layer: object, one_step: bool = False) -> Recurrent:
    """The layer, checked; `one_step`: for diagnostics that differentiate the cell's own step
    (the Jacobians), which do not see a projection or zoneout around it yet."""
    if not isinstance(layer, Recurrent):
        _checks.fail(
            "layer", "an rnnlab Recurrent layer (rnnlab.RNN, LSTM or GRU)", _checks.describe(layer)
        )
    if one_step and (layer.proj_size or any(layer.zoneout)):
        _checks.fail(
            "layer",
            "a layer without proj_size or zoneout for the one-step Jacobians",
            f"proj_size={layer.proj_size}, zoneout={layer.zoneout}",
            "The lag profiles (rnnlab.diagnostics.gradient_by_lag) take such layers.",
        )
    finite_params(layer)
    return layer


def finite_params(layer: Recurrent) -> None:
    """Refuse a layer whose weights hold a NaN, or an inf outside a bias (as the exports do:
    an infinite bias shuts a gate and computes as it should). Such a layer's states are NaN
    from the first step, and the analyses read them as numbers: every lag "undetermined",
    the map "overflows float64 (exploding)", the gates "near 0 in 0%" (a NaN is near
    nothing), none of which said the weights were the trouble."""
    for key, value in layer.params.items():
        a = np.asarray(value)
        if a.dtype.kind != "f" or _checks.all_finite(a):
            continue
        bad = np.isnan(a) if key.startswith("bias") else ~np.isfinite(a)
        if bad.any():
            at = tuple(int(i) for i in np.argwhere(bad)[0])
            _checks.fail("layer", "a layer with finite weights (no NaN; inf only in a bias)",
                         f"{float(a[at])} in {key!r}" + (f" at index {at}" if at else ""),
                         "Its weights have diverged: analyse an earlier checkpoint's.")  # fmt: skip


def float64_copy(layer: Recurrent, x: object) -> tuple[Recurrent, np.ndarray]:
    """The layer with float64 copies of its parameters, and x as float64.

    The diagnostics compute in float64 whatever the layer's dtype: a gradient that vanishes
    over a long lag would reach float32's subnormal range (below 1e-38), where it loses its
    digits and the arithmetic slows down by orders of magnitude, long before it is zero.
    """
    x = _checks.float_array(x, "x", ndim=3)
    if layer.dtype == np.float64:
        return layer, x.astype(np.float64, copy=False)
    shadow = copy.copy(layer)  # the cell objects hold only their configuration: shared
    shadow.params = {k: v.astype(np.float64) for k, v in layer.params.items()}
    shadow.dtype = np.dtype(np.float64)
    return shadow, x.astype(np.float64)


def check_int(value: object, name: str, low: int, high: int) -> int:
    """An integer in [low, high)."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, np.integer))
        or not low <= value < high
    ):
        _checks.fail(name, f"an integer in [{low}, {high})", _checks.describe(value))
    return int(value)


def check_number(value: object, name: str, *, positive: bool = False) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float, np.integer, np.floating))
        or not np.isfinite(value)
        or (positive and value <= 0)
    ):
        what = "a positive finite number" if positive else "a finite number"
        _checks.fail(name, what, _checks.describe(value))
    return float(value)


def labels(layer: Recurrent) -> list[str]:
    """One label per (layer, direction), in the tapes' order j = layer·D + direction."""
    return [f"l{k}{sfx}" for k in range(layer.num_layers) for sfx in layer.directions]


def layer_params(layer: Recurrent, k: int, sfx: str) -> recurrence.Params:
    return layer._layer_params(k, sfx)


def unit_vector(rng: np.random.Generator, n: int) -> np.ndarray:
    r = rng.standard_normal(n)
    return r / np.linalg.norm(r)


def time_major(layer: Recurrent, a: np.ndarray) -> np.ndarray:
    return np.swapaxes(a, 0, 1) if layer.batch_first else a


def valid_steps(f: Forward, T: int, B: int) -> np.ndarray:
    """(B, T) bool: True at the valid steps of each sequence (a prefix of length lengths[b])."""
    m = f.cache["mask"]
    return np.ones((B, T), bool) if m is None else np.ascontiguousarray(m.T)


def output_grad_to_directions(layer: Recurrent, f: Forward, dO: np.ndarray) -> list[np.ndarray]:
    """∂L/∂output (T, B, F), time-major → ∂L/∂(top layer's output) per direction (T, B, H)."""
    H = layer.carry_size
    if len(layer.directions) == 1:
        return [dO]
    if layer.merge == "concat":
        return [dO[:, :, :H], dO[:, :, H:]]
    if layer.merge == "sum":
        return [dO, dO]
    m = f.cache["mask"]
    if m is not None:
        dO = np.where(m[:, :, None], dO, 0.0)
    p = layer.params  # readout: o_t = V h_t + V' h'_t + c
    return [dO @ p["readout_weight"], dO @ p["readout_weight_reverse"]]


def traced_backward(
    layer: Recurrent,
    f: Forward,
    dys_top: Sequence[np.ndarray | None],
    dh_n: Sequence[np.ndarray | None],
) -> list[np.ndarray]:
    """BPTT through the whole stack, returning ∂L/∂h_t (T, B, H) for every (layer, direction).

    `dys_top`: ∂L/∂(top layer's outputs) per direction (time-major) or None; `dh_n`: ∂L/∂(final
    h) per (layer, direction) or None. The forward pass must have run with training=False.
    """
    L, D, H = layer.num_layers, len(layer.directions), layer.carry_size
    tapes = f.cache["tapes"]
    T, B = tapes[0].X.shape[:2]
    traces: list[np.ndarray] = [np.empty(0)] * (L * D)
    dys_dirs: list[np.ndarray | None] = list(dys_top)
    # A vanished gradient is an answer here, not an error: let it underflow to zero. So is
    # an exploded one: past float64 it is inf (and NaN where inf meets inf or 0), which the
    # callers find by its entries (`norms`: inf) and report as the overflow it is.
    with np.errstate(under="ignore", over="ignore", invalid="ignore"):
        for k in range(L - 1, -1, -1):
            dX = None
            for d, sfx in enumerate(layer.directions):
                j = k * D + d
                trace = np.empty((T, B, H), layer.dtype)
                dXd, _, _, _ = recurrence.backward(
                    layer.cell,
                    layer_params(layer, k, sfx),
                    tapes[j],
                    dys_dirs[d],
                    dh_n[j],
                    None,
                    need_dX=k > 0,
                    dh_trace=trace,
                    retain_tape=True,  # callers backpropagate one forward pass many times
                )
                traces[j] = trace
                if k > 0:
                    dX = dXd if dX is None else dX + dXd
            if k > 0:
                assert dX is not None
                dys_dirs = [dX] if D == 1 else [dX[:, :, :H], dX[:, :, H:]]
    return traces


# ----------------------------------------------------------------------------- rates


@dataclass
class RateFit:
    """A least-squares line through log10 ‖g‖ against the lag: ‖g‖ ≈ C · factor^lag.

    `trend` is "vanishing" or "exploding" when the fitted change over `horizon` steps is 10x
    or more, "stable" when it is less, "undetermined" with fewer than two positive values.
    """

    slope: float  # log10 change per step of lag
    factor_per_step: float  # 10 ** slope
    steps_per_decade: float  # steps for a 10x change, 1 / |slope| (inf when flat)
    r2: float  # coefficient of determination of the line
    first_lag: int
    last_lag: int
    points: int
    trend: str
    horizon: int

    def words(self, what: str = "the gradient") -> str:
        if self.trend == "undetermined" and self.points >= 2:  # a rate needs two lags
            return (
                f"{what}: all {self.points} non-zero values at one lag ({self.first_lag}), no "
                "rate to fit: undetermined"
            )
        if self.trend == "undetermined":
            return f"{what}: too few non-zero values to fit a rate ({self.points}): undetermined"
        span = f"fitted over lags {self.first_lag}–{self.last_lag}"
        if self.slope == 0.0:
            return f"{what} does not change with the lag ({span}): stable"
        verb = "falls" if self.slope < 0 else "grows"
        return (
            f"{what} {verb} by a factor of 10 every {self.steps_per_decade:.3g} steps "
            f"(×{self.factor_per_step:.3g} per step, {span}): {self.trend}"
        )

    def to_json(self) -> dict[str, Any]:
        return {k: json_value(v) for k, v in self.__dict__.items()}


def fit_rate(lags: ArrayLike, values: ArrayLike, horizon: int = STABLE_HORIZON) -> RateFit:
    """Fit log10(values) = a + slope · lags by least squares over the positive finite values.

    A gradient that falls by 10x every n steps has slope −1/n. Zeros (an exactly vanished
    gradient, a dead ReLU) and NaNs (no sequence that long) are left out of the fit.
    """
    lags, values = _series(lags, values, "values")
    logs = np.full(values.shape, np.nan)
    np.log10(values, out=logs, where=np.isfinite(values) & (values > 0))
    return fit_log10(lags, logs, horizon)


def _series(lags: object, values: object, name: str) -> tuple[np.ndarray, np.ndarray]:
    """`lags` (finite) and `values` (NaN and inf left out of a fit) as float64 vectors of one
    length, refused by name otherwise: values one shorter than the lags were NumPy's
    IndexError ("boolean index did not match"), a NaN lag "cannot convert float NaN to
    integer", text "could not convert string to float", and 2-D arrays were flattened, their
    lags and values paired by position whatever their shapes."""
    out = []
    for what, v in (("lags", lags), (name, values)):
        try:
            a = np.asarray(v)
            if what != "lags" and a.dtype.kind == "O" and a.ndim == 1:
                # a JSON null (gradflow's norms where the gradient overflows) is a NaN,
                # left out of the fit as it was before the check
                a = np.array([np.nan if e is None else e for e in a], dtype=np.float64)
        except (TypeError, ValueError):  # (a ragged list, text among the values)
            a = None
        if a is None or a.ndim != 1 or a.dtype.kind not in "iuf":
            _checks.fail(what, "a 1-D array of real numbers", _checks.describe(v))
        out.append(a.astype(np.float64))
    x, y = out
    if not np.all(np.isfinite(x)):
        _checks.fail("lags", "finite numbers", f"{x[~np.isfinite(x)][0]} among them")
    if y.shape != x.shape:
        _checks.fail(name, f"one value per lag ({x.size})", f"{y.size}")
    return x, y


def fit_log10(
    lags: ArrayLike, log10_values: ArrayLike, horizon: int = STABLE_HORIZON
) -> RateFit:
    """`fit_rate` for values given by their log10 (non-finite ones are left out)."""
    lags, y = _series(lags, log10_values, "log10_values")
    horizon = check_int(horizon, "horizon", 1, 2**31)
    keep = np.isfinite(y)
    x, y, n = lags[keep], y[keep], int(keep.sum())
    if n < 2 or np.ptp(x) == 0:
        nan = float("nan")
        at = int(x[0]) if n else 0  # (the one lag of them all)
        return RateFit(nan, nan, nan, nan, at, at, n, "undetermined", horizon)
    xc, yc = x - x.mean(), y - y.mean()
    slope = float(xc @ yc / (xc @ xc))
    resid = yc - slope * xc
    ss = float(yc @ yc)
    r2 = 1.0 - float(resid @ resid) / ss if ss > 0 else 1.0
    if abs(slope) * horizon < 1.0:
        trend = "stable"
    else:
        trend = "vanishing" if slope < 0 else "exploding"
    steps = float("inf") if slope == 0 else 1.0 / abs(slope)
    with np.errstate(over="ignore", under="ignore"):
        factor = float(10.0**slope)
    return RateFit(slope, factor, steps, r2, int(x.min()), int(x.max()), n, trend, horizon)


# ----------------------------------------------------------------------------- JSON


def json_value(v: Any) -> Any:
    """Arrays → nested lists, NaN/inf → None (JSON has neither), NumPy scalars → Python."""
    if isinstance(v, np.ndarray):
        if v.dtype.kind in "iub":
            return v.tolist()
        if v.dtype.kind == "c":
            return {"real": json_value(v.real.copy()), "imag": json_value(v.imag.copy())}
        a = v.astype(np.float64)
        out = a.astype(object)
        out[~np.isfinite(a)] = None
        return out.tolist()
    if isinstance(v, (np.integer, np.bool_)):
        return v.item()
    if isinstance(v, (float, np.floating)):
        return float(v) if np.isfinite(v) else None
    if isinstance(v, RateFit):
        return v.to_json()
    if isinstance(v, (list, tuple)):
        return [json_value(item) for item in v]
    if isinstance(v, dict):
        return {str(k): json_value(item) for k, item in v.items()}
    return v


def norms(a: np.ndarray, axis: int = -1) -> np.ndarray:
    """‖a‖₂ along `axis`, scaled by the largest entry first so that vectors of tiny numbers
    (a gradient at 1e-160) do not square to zero.

    inf where the norm passes float64: a vector with an entry that is not finite (a
    gradient that overflowed: inf, or NaN where an inf met another or a 0) is found as such
    and never divided (inf/inf was a NaN, like a padded step's, and a RuntimeWarning), and
    a finite vector whose norm is past 1.8e308 is inf as IEEE arithmetic makes it."""
    a = np.asarray(a, dtype=np.float64)
    finite = np.isfinite(a).all(axis=axis, keepdims=True)
    a = np.where(finite, a, 0.0)
    top = np.abs(a).max(axis=axis, keepdims=True)
    scaled = np.divide(a, top, out=np.zeros_like(a), where=top > 0)
    root = np.sqrt(np.sum(scaled * scaled, axis=axis))  # (1 to √n where top > 0)
    with np.errstate(over="ignore"):  # (top near 1.8e308 and root > 1: inf, the overflow)
        out: np.ndarray = np.squeeze(top, axis=axis) * root
    return np.where(np.squeeze(finite, axis=axis), out, np.inf)


def masked_mean(values: np.ndarray, valid: np.ndarray, axis: int) -> np.ndarray:
    """Mean of `values` over `axis` where `valid`; NaN where nothing is valid (no warning)."""
    total = np.where(valid, values, 0.0).sum(axis=axis)
    count = valid.sum(axis=axis)
    mean: np.ndarray = np.divide(total, count, out=np.full(total.shape, np.nan), where=count > 0)
    return mean
