"""The loss along one direction in parameter space, cliffs, and what clipping does to a step.

The notes (after Pascanu, Mikolov & Bengio 2013) plot the loss of a small RNN against the
hidden units' bias: flat almost everywhere, with a wall where the final state jumps from one
attractor's basin to another's. On the wall the gradient is huge, and an SGD step of
lr·‖g‖ throws the parameters far away; clipping the gradient to norm η,

    if ‖g‖ ≥ η:  g ← η g / ‖g‖,

bounds the step by lr·η. `loss_slice` evaluates a caller's loss along a direction and flags
cliffs; `clipped_vs_unclipped_step` compares the two steps (and their losses).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from rnnlab import _checks
from rnnlab.diagnostics._common import check_int, check_number, json_value

UNDETERMINED = "undetermined: the loss is not finite along the slice"


@dataclass
class LossSlice:
    """L(θ + α d) for each α. A cliff: the steepest slope between neighbouring α is at least
    `cliff_ratio` times the median slope (the wall of the notes' figure), or the loss turns
    from finite to overflowing float64 between neighbouring α where it is finite at three
    points at least (`overflows`: a wall too high to measure; jump and steepness are then
    inf). Fewer than two finite slopes: undetermined."""

    direction: str  # a parameter name, "random" or "custom"
    alphas: np.ndarray  # (A,)
    losses: np.ndarray  # (A,)
    base_loss: float  # at α = 0
    jump: float  # the largest |L(α_{i+1}) − L(α_i)|
    jump_between: tuple[float, float]  # where it is
    steepness: float  # largest |ΔL/Δα| over the median |ΔL/Δα|
    cliff_ratio: float
    cliff: bool  # False too when undetermined

    @property
    def overflows(self) -> bool:
        """The loss is finite at one end of `jump_between` and not at the other."""
        return self.cliff and math.isinf(self.jump)

    @property
    def undetermined(self) -> bool:
        """Fewer than 2 finite slopes: the loss is not finite along the slice (it overflows),
        and there is no telling a cliff from a smooth slope."""
        return bool(np.isnan(self.steepness))

    def verdict(self) -> str:
        finite = self.losses[np.isfinite(self.losses)]
        head = (
            f"loss along {self.direction}: from {finite.min():.4g} to {finite.max():.4g}"
            if finite.size
            else f"loss along {self.direction}: no finite values"
        )
        if finite.size < self.losses.size:
            head += f" ({self.losses.size - finite.size} non-finite values)"
        if self.undetermined:
            return head + f": {UNDETERMINED}"
        a, b = self.jump_between
        if self.overflows:
            return head + f"; it overflows between α = {a:.4g} and {b:.4g}: a cliff"
        jump = (
            f"; largest jump {self.jump:.4g} between α = {a:.4g} and {b:.4g}, "
            f"{self.steepness:.3g}x the median slope"
        )
        return head + jump + (": a cliff" if self.cliff else ": smooth")

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": "loss_slice",
            **{k: json_value(v) for k, v in self.__dict__.items()},
            "verdict": self.verdict(),
        }


@dataclass
class ClipComparison:
    """The SGD update θ ← θ − lr·g against θ ← θ − lr·clip(g), clip(g) = g·min(1, η/‖g‖)."""

    grad_norm: float  # global ‖g‖ over every array
    max_norm: float  # η
    lr: float
    scale: float  # min(1, η/‖g‖)
    unclipped_step_norm: float  # lr·‖g‖
    clipped_step_norm: float  # lr·‖g‖·scale
    loss_before: float | None = None
    loss_unclipped: float | None = None
    loss_clipped: float | None = None

    def verdict(self) -> str:
        g, eta = self.grad_norm, self.max_norm
        if self.scale < 1.0:
            text = (
                f"‖g‖ = {g:.4g} ≥ max_norm = {eta:.4g}: clipping scales the step by "
                f"{self.scale:.3g} (step length {self.unclipped_step_norm:.4g} → "
                f"{self.clipped_step_norm:.4g})"
            )
        else:
            # (‖g‖ = η exactly is left unchanged too, as optim.clip_by_global_norm does; a
            # ‖g‖ a rounding above η whose scale η/‖g‖ rounds to 1 is not "below" it either)
            rel = "<" if g < eta else "=" if g == eta else "≈"
            text = f"‖g‖ = {g:.4g} {rel} max_norm = {eta:.4g}: clipping leaves the step unchanged"
        if self.loss_before is not None:
            text += (
                f"; loss {self.loss_before:.4g} → {self.loss_unclipped:.4g} unclipped, "
                f"{self.loss_clipped:.4g} clipped"
            )
        return text

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": "clip_comparison",
            **{k: json_value(v) for k, v in self.__dict__.items()},
            "verdict": self.verdict(),
        }


def _check_params(params: object, name: str) -> dict[str, np.ndarray]:
    if not isinstance(params, dict) or not params:
        _checks.fail(name, "a non-empty dict of parameter arrays", _checks.describe(params))
    # (the checked arrays: a list was checked, then read as one, "'list' object has no
    # attribute 'shape'")
    return {k: _checks.float_array(v, f"{name}[{k!r}]") for k, v in params.items()}


def _unit(arrays: dict[str, np.ndarray]) -> tuple[float, dict[str, np.ndarray]]:
    """(‖a‖ over every array, a/‖a‖), scaled by the largest entry first: the squares of a
    gradient of 1e200 overflowed, and ‖g‖ was said inf (and the clipped step NaN) where it is
    1.4e200. ‖a‖ is inf only past float64, where a/‖a‖ is still the unit direction."""
    top = max((float(np.max(np.abs(a))) for a in arrays.values() if a.size), default=0.0)
    if top == 0.0:
        return 0.0, arrays
    scaled = {k: a.astype(np.float64) / top for k, a in arrays.items()}
    rel = math.sqrt(sum(float(np.sum(a * a)) for a in scaled.values()))  # (1 to √n)
    with np.errstate(over="ignore"):
        norm = float(np.float64(top) * rel)
    return norm, {k: a / rel for k, a in scaled.items()}


def _call(
    loss_fn: Callable[[dict[str, np.ndarray]], float], params: dict[str, np.ndarray]
) -> float:
    value = loss_fn(params)
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    if not ok and not (isinstance(value, np.ndarray) and value.shape == ()):
        _checks.fail(
            "loss_fn",
            "a function returning one number (the loss)",
            f"a function returning {_checks.describe(value)}",
        )
    return float(value)


def _shifted(
    params: dict[str, np.ndarray], direction: dict[str, np.ndarray], alpha: float
) -> dict[str, np.ndarray]:
    """A fresh dict θ + α d (arrays not in d are copied unchanged)."""
    return {
        k: (v + alpha * direction[k]).astype(v.dtype) if k in direction else v.copy()
        for k, v in params.items()
    }


def loss_slice(
    loss_fn: Callable[[dict[str, np.ndarray]], float],
    params: dict[str, np.ndarray],
    direction: str | dict[str, np.ndarray],
    alphas: ArrayLike,
    *,
    seed: int = 0,
    cliff_ratio: float = 20.0,
) -> LossSlice:
    """L(θ + α d) for every α in `alphas` (increasing); `loss_fn` gets a fresh dict each call.

    `direction`:
      - a parameter name, e.g. "bias_hh_l0": d is 1 on every entry of that array, divided by
        √(its size) so ‖d‖ = 1 (for a 1-unit RNN's bias, α is the bias shift itself);
      - "random": a Gaussian direction over every array, scaled to ‖d‖ = 1, drawn from `seed`;
      - a dict of arrays (a subset of the names), used as given.
    A loss_fn that loads the dict into a module leaves it at the last α: reload θ after.
    """
    if not callable(loss_fn):
        _checks.fail("loss_fn", "a function params -> loss", _checks.describe(loss_fn))
    params = _check_params(params, "params")
    seed = check_int(seed, "seed", 0, 2**63)
    cliff_ratio = check_number(cliff_ratio, "cliff_ratio", positive=True)
    if isinstance(alphas, (list, tuple)):
        alphas = np.asarray(alphas)
    if isinstance(alphas, np.ndarray) and alphas.dtype.kind in "iu":
        alphas = alphas.astype(np.float64)
    alphas = _checks.float_array(alphas, "alphas", ndim=1, dtype=np.float64)
    if alphas.size < 3 or np.any(np.diff(alphas) <= 0):
        _checks.fail(
            "alphas", "an increasing array of at least 3 numbers", _checks.describe(alphas)
        )
    if isinstance(direction, str) and direction == "random":
        rng = np.random.default_rng(seed)
        d = {k: rng.standard_normal(v.shape) for k, v in params.items()}
        total = np.sqrt(sum(float(np.sum(a * a)) for a in d.values()))
        if total == 0.0:  # (every array empty: a direction of NaN, and "smooth")
            _checks.fail("params", "a dict holding at least one entry to move along 'random'",
                         "arrays of size 0 only")  # fmt: skip
        d = {k: a / total for k, a in d.items()}
        label = "random"
    elif isinstance(direction, str) and direction in params:
        v = params[direction]
        if not v.size:  # (1/√0: a direction of inf with a RuntimeWarning, and "smooth")
            _checks.fail("direction", "a parameter with at least one entry to move",
                         f"{direction!r}, of shape {v.shape}")  # fmt: skip
        d = {direction: np.full(v.shape, 1.0 / np.sqrt(v.size))}
        label = direction
    elif isinstance(direction, dict):
        d = {}
        for k, a in direction.items():
            if k not in params:
                _checks.fail(
                    "direction",
                    f"a dict keyed by parameter names ({list(params)})",
                    f"the key {k!r}",
                )
            d[k] = _checks.float_array(a, f"direction[{k!r}]", shape=params[k].shape)
        if not any(np.any(a != 0) for a in d.values()):  # (L(θ) at every α: "smooth")
            _checks.fail("direction", "a dict of arrays not all zero (a direction to move "
                         "along)", "zeros only" if d else "an empty dict")  # fmt: skip
        label = "custom"
    else:
        _checks.fail(
            "direction",
            f"'random', a parameter name ({', '.join(params)}) or a dict of arrays",
            _checks.describe(direction),
        )
    losses = np.array([_call(loss_fn, _shifted(params, d, float(a))) for a in alphas])
    base = _call(loss_fn, _shifted(params, d, 0.0))

    with np.errstate(invalid="ignore", over="ignore"):  # inf − inf where the loss overflows
        dL = np.diff(losses)
        slopes = np.abs(dL / np.diff(alphas))
    finite = np.isfinite(slopes)
    if finite.sum() >= 2:  # one slope has no median to compare with
        i = int(np.argmax(np.where(finite, slopes, -1.0)))
        median = float(np.median(slopes[finite]))
        top = float(slopes[i])
        steep = top / median if median > 0 else (float("inf") if top > 0 else 1.0)
        jump = float(abs(dL[i]))
    else:
        i, steep, jump = 0, float("nan"), float("nan")
    cliff = bool(np.isfinite(steep) and steep >= cliff_ratio) or bool(np.isinf(steep))
    finite_loss = np.isfinite(losses)
    edges = np.nonzero(finite_loss[:-1] != finite_loss[1:])[0]
    if edges.size and finite.sum() >= 2:  # finite on one side, overflowing on the other
        # of several such walls, the one beside the largest finite loss (where the rise ends)
        side = [losses[e] if finite_loss[e] else losses[e + 1] for e in edges]
        i = int(edges[int(np.argmax(side))])
        steep, jump, cliff = float("inf"), float("inf"), True
    return LossSlice(
        label,
        alphas,
        losses,
        base,
        jump,
        (float(alphas[i]), float(alphas[i + 1])),
        steep,
        cliff_ratio,
        cliff,
    )


def clipped_vs_unclipped_step(
    grads: dict[str, np.ndarray],
    lr: float,
    max_norm: float,
    *,
    loss_fn: Callable[[dict[str, np.ndarray]], float] | None = None,
    params: dict[str, np.ndarray] | None = None,
) -> ClipComparison:
    """Compare the SGD steps −lr·g and −lr·clip(g) with clip(g) = g·min(1, η/‖g‖), η = max_norm.

    ‖g‖ is the global norm over every array of `grads`. With `loss_fn` and `params` (θ; the
    keys of `grads` must be among its keys) the loss is also evaluated at θ, θ − lr·g and
    θ − lr·clip(g).
    """
    grads = _check_params(grads, "grads")
    lr = check_number(lr, "lr", positive=True)
    max_norm = check_number(max_norm, "max_norm", positive=True)
    norm, unit = _unit(grads)
    scale = max_norm / norm if norm >= max_norm else 1.0
    # the clipped step is lr·η·g/‖g‖ (lr·‖g‖·scale was NaN where ‖g‖ passes float64)
    clipped = lr * max_norm if scale < 1.0 else lr * norm
    result = ClipComparison(norm, max_norm, lr, scale, lr * norm, clipped)
    if loss_fn is None and params is None:
        return result
    if not callable(loss_fn):
        _checks.fail(
            "loss_fn", "a function params -> loss when `params` is given", _checks.describe(loss_fn)
        )
    params = _check_params(params, "params")
    missing = [k for k in grads if k not in params]
    if missing:
        _checks.fail("params", "a dict holding every array named in `grads`", f"no {missing}")
    for k, g in grads.items():
        if g.shape != params[k].shape:
            _checks.fail(
                f"grads[{k!r}]",
                f"an array of shape {params[k].shape} like params",
                f"shape {g.shape}",
            )
    result.loss_before = _call(loss_fn, _shifted(params, {}, 0.0))
    result.loss_unclipped = _call(loss_fn, _shifted(params, grads, -lr))
    result.loss_clipped = (
        _call(loss_fn, _shifted(params, unit, -lr * max_norm))
        if scale < 1.0
        else result.loss_unclipped
    )
    return result
