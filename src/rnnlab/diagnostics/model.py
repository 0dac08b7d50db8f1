"""A whole model as the diagnostics read it: the one recurrent layer of a built model
(rnnlab.models.build), the input that reaches it, and the task's gradient at its output.
"""

from __future__ import annotations

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
    if len(found) != 1 or not hasattr(model, "forward"):
        _checks.fail(
            "model",
            "a Sequential with one recurrent layer (rnnlab.models.build); output-feedback "
            "(jordan) models are not covered by the gradient diagnostics",
            _checks.describe(model),
        )
    return found[0]


def recurrent_io(
    model: _Module, x: np.ndarray, lengths: np.ndarray | None
) -> tuple[Forward, int, Recurrent, np.ndarray]:
    """The forward pass of every module (evaluation mode), the index and layer of the
    recurrent module, and the layer's input."""
    r, layer = split_model(model)
    f = model.forward(x, lengths=lengths)
    x_rec = x if r == 0 else f.cache[r - 1].output
    return f, r, layer, x_rec


def output_gradient(
    model: Sequential, task: Task, x: np.ndarray, y: np.ndarray, lengths: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, float]:
    """The task's loss on the batch and its gradient at the recurrent layer's output.

    L = task.loss(model(x), y); the modules above the recurrent layer (LastStep, Dropout in
    evaluation mode, Linear) are run backwards from ∂L/∂ŷ, so the result is ∂L/∂o_t with o the
    recurrent layer's output (batch, time, features). Returns (x_rec, ∂L/∂o, L).
    """
    from rnnlab.train import Batch

    f, r, layer, x_rec = recurrent_io(model, x, lengths)
    loss, d = task.loss(f.output, Batch(x, y, lengths))
    for i in range(len(model.modules) - 1, r, -1):
        d_in = model.modules[i].backward(f.cache[i], d).input
        assert d_in is not None  # (input_grad, the default)
        d = d_in
    return x_rec, d, float(loss)


def fit_summary(fit: RateFit) -> dict[str, Any]:
    """A fitted rate (rnnlab.diagnostics.RateFit) as the summaries and the training log keep it."""
    return {
        "factor_per_step": fit.factor_per_step,
        "steps_per_decade": fit.steps_per_decade,
        "trend": fit.trend,
        "r2": fit.r2,
    }
