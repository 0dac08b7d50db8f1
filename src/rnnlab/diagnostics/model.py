"""A whole model as the diagnostics read it: the one recurrent layer of a built model
(rnnlab.models.build), the input that reaches it, and the task's gradient at its output.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

import numpy as np

from rnnlab import _checks
from rnnlab.layers import Forward, Recurrent
from rnnlab.modules import Sequential, _Module

if TYPE_CHECKING:
    from rnnlab.diagnostics._common import RateFit
    from rnnlab.train import Task


def split_model(model: object) -> tuple[int, Recurrent]:
    """(index, layer) of the one Recurrent module of a built model (Sequential)."""
    modules = getattr(model, "modules", None)
    found = [(i, m) for i, m in enumerate(modules or []) if isinstance(m, Recurrent)]
    if hasattr(model, "wants_targets"):  # rnnlab.feedback's models (jordan, jordan-elman)
        _checks.fail("model", "a model of one recurrent layer",
                     "an output-feedback (jordan) model",
                     "The gradient diagnostics do not cover output feedback yet.")  # fmt: skip
    if len(found) != 1 or not hasattr(model, "forward"):
        got = (f"a Sequential with {len(found)} recurrent layers" if isinstance(model, Sequential)
               else _checks.describe(model))  # fmt: skip
        _checks.fail("model", "a Sequential with one recurrent layer", got)
    return found[0]


class OutputOverflow(ArithmeticError):
    """The model's output or the task's loss is not finite even in float64: the exploding
    regime the diagnostics exist to show, an answer to report rather than an error."""


class StateOverflow(OutputOverflow):
    """The recurrent layer's states themselves are not finite even in float64: every
    gradient through them is NaN or 0 (a ReLU's φ'(NaN)), which no analysis may report as
    a vanishing gradient, and no other loss (--loss last) avoids."""


def state_overflow(f: Forward) -> str | None:
    """Words for where the recurrent layer's states (h, and an LSTM's c) stop being finite
    in the forward pass `f` of that layer ("after N of its T steps", N counted in each
    direction's own order, the earliest), or None when they are finite throughout."""
    first = None
    tapes = f.cache.get("tapes") or []
    for tape in tapes:
        for states in (tape.hs, tape.cs):
            if states is None:
                continue
            with np.errstate(invalid="ignore"):
                bad = np.nonzero(~np.isfinite(states).all(axis=(1, 2)))[0]
            if bad.size:  # row i: after i steps forward, after T − i steps in reverse
                n = len(states) - 1 - int(bad[-1]) if tape.reverse else int(bad[0])
                first = n if first is None else min(first, n)
    if first is None:
        return None
    T = len(tapes[0].hs) - 1 if tapes[0].hs is not None else None
    return "the recurrent layer's states overflow float64" + (
        f" after {first} of its {T} steps" if T is not None else "")  # fmt: skip


def float64_model(model: Sequential) -> Sequential:
    """A copy of `model` with float64 copies of its parameters (the modules' configuration
    shared). The diagnostics read models where float32 overflows (a W_hh scaled up to show
    exploding gradients: ~1e38) long before float64 does (~1e308)."""
    modules = []
    for m in model.modules:
        shadow = copy.copy(m)
        shadow.params = {k: v.astype(np.float64) for k, v in m.params.items()}
        if isinstance(shadow, Recurrent):  # its dtype is checked against its input's
            shadow.dtype = np.dtype(np.float64)
        modules.append(shadow)
    return Sequential(modules)


def _float64_input(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float64) if x.dtype.kind == "f" else x  # token ids stay ids


def _forward64(
    model: _Module, x: np.ndarray, lengths: np.ndarray | None
) -> tuple[Sequential, Forward, int, Recurrent, np.ndarray]:
    split_model(model)  # (a Sequential with one recurrent layer, or a clear error)
    model = float64_model(model)  # type: ignore[arg-type]
    r, layer = split_model(model)
    with np.errstate(over="ignore", invalid="ignore", under="ignore"):
        f = model.forward(_float64_input(x), lengths=lengths)
    x_rec = x if r == 0 else f.cache[r - 1].output
    return model, f, r, layer, _float64_input(x_rec)


def recurrent_io(
    model: _Module, x: np.ndarray, lengths: np.ndarray | None, *, finite_states: bool = False
) -> tuple[Forward, int, Recurrent, np.ndarray]:
    """The forward pass of every module (evaluation mode) of a float64 copy of the model, the
    index and (float64) layer of the recurrent module, and the layer's input; with
    `finite_states`, StateOverflow where the layer's states overflow float64."""
    _, f, r, layer, x_rec = _forward64(model, x, lengths)
    said = state_overflow(f.cache[r]) if finite_states else None
    if said is not None:
        raise StateOverflow(said)
    return f, r, layer, x_rec


def output_gradient(
    model: Sequential, task: Task, x: np.ndarray, y: np.ndarray, lengths: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, float, Recurrent]:
    """The task's loss on the batch and its gradient at the recurrent layer's output, in
    float64.

    L = task.loss(model(x), y); the modules above the recurrent layer (LastStep, Dropout in
    evaluation mode, Linear) are run backwards from ∂L/∂ŷ, so the result is ∂L/∂o_t with o the
    recurrent layer's output (batch, time, features). Returns (x_rec, ∂L/∂o, L, the float64
    layer); raises OutputOverflow when the output, the loss or that gradient is not finite
    (StateOverflow when the layer's states are not).
    """
    model64, f, r, layer, x_rec = _forward64(model, x, lengths)
    said = state_overflow(f.cache[r])
    if said is not None:
        raise StateOverflow(said)
    loss, d = task_loss(f.output, task, x, y, lengths)
    with np.errstate(over="ignore", invalid="ignore", under="ignore"):
        for i in range(len(model64.modules) - 1, r, -1):
            d_in = model64.modules[i].backward(f.cache[i], d).input
            assert d_in is not None  # (input_grad, the default)
            d = d_in
    if not np.all(np.isfinite(d)):
        raise OutputOverflow("the gradient at the recurrent layer's output overflows")
    return x_rec, d, loss, layer


def task_loss(
    output: np.ndarray, task: Task, x: np.ndarray, y: np.ndarray, lengths: np.ndarray | None
) -> tuple[float, np.ndarray]:
    """(the task's loss, its gradient at the output), or OutputOverflow: the losses check
    that their input is finite, which an output overflowing float64 is not."""
    from rnnlab.train import Batch

    if not np.all(np.isfinite(output)):
        raise OutputOverflow("the model's output overflows")
    with np.errstate(over="ignore", invalid="ignore", under="ignore"):
        loss, d = task.loss(output, Batch(x, y, lengths))
    if not (np.isfinite(loss) and np.all(np.isfinite(d))):
        raise OutputOverflow("the task's loss overflows")
    return float(loss), d


def fit_summary(fit: RateFit) -> dict[str, Any]:
    """A fitted rate (rnnlab.diagnostics.RateFit) as the summaries and the training log keep it."""
    return {
        "factor_per_step": fit.factor_per_step,
        "steps_per_decade": fit.steps_per_decade,
        "trend": fit.trend,
        "r2": fit.r2,
    }
