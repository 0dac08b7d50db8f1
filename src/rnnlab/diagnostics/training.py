"""The training log's gradient record: what `rnnlab train` has the Trainer write into
metrics.jsonl (with "kind": "gradients") every `grad_log_every` steps, and `rnnlab plot`
draws. The Trainer knows nothing of diagnostics: it is given `gradient_log`.
"""

from __future__ import annotations

import math
import re

import numpy as np

from rnnlab import _checks
from rnnlab.diagnostics._common import json_value
from rnnlab.diagnostics.lags import gradient_by_lag
from rnnlab.diagnostics.model import StateOverflow, fit_summary, recurrent_io
from rnnlab.layers import Recurrent

# At most this many sequences enter the lag profile logged during training: it is a float64
# forward and backward pass, and the log should cost a small fraction of a training step.
RECORD_SEQUENCES = 16



def _norm(arrays) -> float:
    total = 0.0
    for a in arrays:
        a = np.asarray(a, dtype=np.float64)
        total += float(np.sum(a * a))
    return math.sqrt(total)


_LAYER_SUFFIX = re.compile(r"_(l\d+(?:_reverse)?)$")


def layer_groups(model) -> dict[str, list[str]]:
    """Parameter names grouped by layer: a recurrent module's (layer, direction) as
    "<i>.l0", "<i>.l0_reverse", …; any other module as "<i>.<class name>"."""
    groups: dict[str, list[str]] = {}
    modules = getattr(model, "modules", None)
    if modules is None:
        for name in model.params:
            groups.setdefault(name.split(".")[0], []).append(name)
        return groups
    for i, m in enumerate(modules):
        for key in m.params:
            if isinstance(m, Recurrent):
                match = _LAYER_SUFFIX.search(key)
                group = f"{i}.{match.group(1)}" if match else f"{i}.recurrent"
            else:
                group = f"{i}.{type(m).__name__.lower()}"
            groups.setdefault(group, []).append(f"{i}.{key}")
    return groups


def training_record(
    model,
    batch_x: np.ndarray,
    lengths: np.ndarray | None,
    grads_before_clip: dict[str, np.ndarray],
    grads_after_clip: dict[str, np.ndarray],
    with_lags: bool,
) -> dict:
    """What the Trainer logs into metrics.jsonl (with "kind": "gradients") every few steps.

    grad_norm_before / grad_norm_after: the global norm ‖g‖ before and after clipping;
    layer_norms_before / layer_norms_after: ‖g‖ of each layer's parameters (see
    `layer_groups`); lags (when `with_lags` and the model has a Recurrent layer, else None):
    per (layer, direction), the batch mean of ‖∂L/∂h_k‖ by lag for L a random projection of
    the top layer's final state, over at most 16 sequences, with the fitted factor per step.
    NaN and inf become None. Where the recurrent states overflow even in float64, `lags` is
    None and "lag_overflow" says where (as `rnnlab gradflow` does): a gradient read through
    NaN states is 0 (a ReLU's φ'(NaN)), which a reader of the log would take for vanishing.
    Where only the gradient overflows, the lags past it are None and "lag_overflow" names
    the first of them per (layer, direction).
    """
    for name, g in (
        ("grads_before_clip", grads_before_clip),
        ("grads_after_clip", grads_after_clip),
    ):
        if not isinstance(g, dict) or set(g) != set(model.params):
            _checks.fail(name, "a dict of gradients keyed like model.params", _checks.describe(g))
    groups = layer_groups(model)
    with np.errstate(over="ignore", invalid="ignore"):
        record = {
            "grad_norm_before": _norm(grads_before_clip.values()),
            "grad_norm_after": _norm(grads_after_clip.values()),
            "layer_norms_before": {
                k: _norm(grads_before_clip[n] for n in names) for k, names in groups.items()
            },
            "layer_norms_after": {
                k: _norm(grads_after_clip[n] for n in names) for k, names in groups.items()
            },
            "lags": None,
        }
    covered = sum(isinstance(m, Recurrent) for m in getattr(model, "modules", [])) == 1
    if with_lags and covered:  # output-feedback (jordan) models get the norms only
        n = RECORD_SEQUENCES
        x = batch_x[:n]
        lens = None if lengths is None else np.asarray(lengths)[:n]
        try:
            _, _, layer, x_rec = recurrent_io(model, x, lens, finite_states=True)
        except StateOverflow as e:
            record["lag_overflow"] = f"{e}: exploding; no lag profile can be measured"
            return json_value(record)
        with np.errstate(over="ignore", invalid="ignore"):  # (a gradient past 1e308: None)
            prof = gradient_by_lag(layer, x_rec, lens, loss="last")
        record["lags"] = {
            name: {"norms": prof.mean[j], **fit_summary(prof.fits[j])}
            for j, name in enumerate(prof.names)
        }
        reached = prof.lags < int(np.max(prof.lengths))  # (longer lags: no sequence has them)
        over = [(name, int(np.nonzero(~np.isfinite(prof.mean[j]) & reached)[0][0]))
                for j, name in enumerate(prof.names)
                if (~np.isfinite(prof.mean[j]) & reached).any()]  # fmt: skip
        if over:
            record["lag_overflow"] = "; ".join(
                f"{name}: ‖∂L/∂h_k‖ overflows float64 from lag {k}: exploding" for name, k in over
            )
    return json_value(record)


def gradient_log(model, batch, grads_before_clip, grads_after_clip, with_lags: bool):
    """The Trainer's `gradient_log` callback: `training_record` of the step's batch, or None
    for a model the diagnostics do not cover (nothing is logged then)."""
    try:
        return training_record(
            model, batch.x, batch.lengths, grads_before_clip, grads_after_clip, with_lags
        )
    except (ValueError, TypeError):
        return None
