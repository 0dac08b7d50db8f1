"""The training log's gradient record: what `rnnlab train` has the Trainer write into
metrics.jsonl (with "kind": "gradients") every `grad_log_every` steps, and `rnnlab plot`
draws. The Trainer knows nothing of diagnostics: it is given `gradient_log`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

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
    the first of them per (layer, direction). "lags_reached" (with a profile) is how many
    lags some sequence reaches: a None before it is an overflow, one at or past it a lag no
    sequence of the batch is long enough for; `lag_history` reads them so.
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
        record["lags_reached"] = int(np.max(prof.lengths))
        reached = prof.lags < record["lags_reached"]  # (longer lags: no sequence has them)
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


# How `training_record` names the first overflowing lag of a (layer, direction); records
# written before "lags_reached" say it only so.
_OVERFLOWS_FROM = re.compile(r"(\S+): ‖∂L/∂h_k‖ overflows float64 from lag (\d+)")


def _number(v) -> float:
    """A logged number as a float; NaN for a None (or anything else that is no finite number)."""
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    return float(v) if ok else math.nan


@dataclass(frozen=True)
class LagHistory:
    """The lag profiles of a training log, record by record, with where each overflowed.

    A None in the log is not a number: `norms` holds NaN for it, and `overflow` says which
    of them are an overflow (the gradient past float64: exploding) rather than a lag no
    sequence reaches. `states_overflow` marks the records with no profile at all because the
    recurrent states themselves overflowed. Drawing a None as 0 or leaving its record out
    would hide the very steps where the gradient exploded.
    """

    steps: np.ndarray  # (records,) the training steps of the records with a profile or overflow
    names: list[str]  # (layer, direction): "l0", "l0_reverse", …
    norms: dict[str, np.ndarray]  # name → (records, lags) ‖∂L/∂h_k‖, NaN where None or absent
    overflow: dict[str, np.ndarray]  # name → (records, lags) bool: None for an overflow
    factors: dict[str, np.ndarray]  # name → (records,) fitted factor per step, NaN where None
    states_overflow: np.ndarray  # (records,) bool: states overflowed, no profile
    messages: list[str | None]  # (records,) each record's "lag_overflow"

    @property
    def overflowed(self) -> np.ndarray:
        """(records,) bool: the record's gradient overflowed somewhere (or its states did)."""
        rows = self.states_overflow.copy()
        for o in self.overflow.values():
            rows |= o.any(axis=1)
        return rows

    def overflow_note(self) -> str | None:
        """The overflowing steps in words (how many, the first and what overflowed there, the
        last), or None when none did."""
        at = np.nonzero(self.overflowed)[0]
        if not at.size:
            return None
        first, last = at[0], at[-1]
        said = self.messages[first] or "the gradient overflows float64"
        note = (
            f"the gradient overflowed float64 (exploding) at {at.size} of the "
            f"{self.steps.size} steps that log a lag profile, first at step "
            f"{_step(self.steps[first])} ({said})"
        )
        return note + (f", last at step {_step(self.steps[last])}" if at.size > 1 else "")


def _step(value: float) -> str:
    """A logged step as its record has it: 1234567, not :g's 1.23457e+06 (six digits)."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def lag_history(grads: list[dict]) -> LagHistory | None:
    """The lag profiles of a run's gradient records (metrics.jsonl, "kind": "gradients"):
    every record with a profile or a "lag_overflow", in the log's order; None when none has.

    A None lag is an overflow when it lies before the record's "lags_reached"; in a record
    written without it, when "lag_overflow" names its (layer, direction) and it lies at or past
    the lag named there.
    """
    kept: list[tuple[dict, dict[str, Any] | None, str | None]] = []
    for r in grads:
        lags, said = r.get("lags"), r.get("lag_overflow")
        said = said if isinstance(said, str) else None
        if math.isnan(_number(r.get("step"))):
            continue
        if isinstance(lags, dict) and lags:
            kept.append((r, lags, said))
        elif lags is None and said is not None:  # the states overflowed: no profile
            kept.append((r, None, said))
    if not kept:
        return None
    names: list[str] = []
    for _, lags, _ in kept:
        names += [n for n in lags or {} if n not in names]
    # entries[name][i]: record i's {"norms", "factor_per_step", …} of that (layer, direction)
    entries: dict[str, list[dict]] = {}
    for n in names:
        got = [(lags or {}).get(n) for _, lags, _ in kept]
        entries[n] = [e if isinstance(e, dict) else {} for e in got]
    T = max((len(e["norms"]) for es in entries.values() for e in es
             if isinstance(e.get("norms"), list)), default=0)  # fmt: skip
    lag = np.arange(T)
    norms, overflow, factors = {}, {}, {}
    for n, es in entries.items():
        grid = np.full((len(kept), T), np.nan)
        over = np.zeros((len(kept), T), bool)
        for i, ((r, _, said), e) in enumerate(zip(kept, es, strict=True)):
            v = e.get("norms")
            row = np.array([_number(a) for a in v] if isinstance(v, list) else [], float)
            grid[i, : row.size] = row
            null = np.zeros(T, bool)
            null[: row.size] = np.isnan(row)
            reached = r.get("lags_reached")
            if isinstance(reached, int) and not isinstance(reached, bool):
                over[i] = null & (lag < reached)
            elif said is not None:
                for name, k in _OVERFLOWS_FROM.findall(said):
                    if name == n:
                        over[i] = null & (lag >= int(k))
        norms[n], overflow[n] = grid, over
        factors[n] = np.array([_number(e.get("factor_per_step")) for e in es])
    return LagHistory(
        steps=np.array([_number(r["step"]) for r, _, _ in kept]),
        names=names,
        norms=norms,
        overflow=overflow,
        factors=factors,
        states_overflow=np.array([lags is None for _, lags, _ in kept]),
        messages=[said for _, _, said in kept],
    )
