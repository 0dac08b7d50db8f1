"""How often the gates sit at the ends of their range, per gate and time step.

A sigmoid gate near 0 or 1 has σ' = σ(1 − σ) < 0.05: its pre-activation gets almost no
gradient, and the gate acts as a fixed switch (a forget gate near 1 keeps the cell state, the
path along which an LSTM's gradient does not vanish). The fractions are read where the cell
says its gate activations lie (`Cell.gate_activations`: tape blocks, or h itself for an
Elman unit), over the valid steps only: padded steps are computed but never used, so they
are left out. The cells that come with rnnlab declare theirs as a cell of one's own does:
nothing here knows a cell class.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rnnlab import _checks
from rnnlab.cells.base import ACTIVATIONS, Cell, describe_range
from rnnlab.diagnostics._common import (
    check_layer,
    check_number,
    float64_copy,
    json_value,
    labels,
    valid_steps,
)
from rnnlab.layers import Recurrent

_HOW = ("A cell declares them as a class attribute, gate_activations = (('f', 'forget', 0, "
        "'sigmoid'), ('n', 'candidate', 1, 'tanh')): a symbol, a name, the tape block that "
        "holds the activation once the step is done (or 'h', the output h_t) and the function "
        "that squashed it, " + ", ".join(map(repr, ACTIVATIONS)) + " (rnnlab.cells.base has "
        "the protocol).")  # fmt: skip


def unreadable(cell: Cell) -> str:
    """Why gate_saturation cannot read `cell`'s gates ("" when it can): the words of its
    refusal, and of `rnnlab gradflow`'s reason for skipping the analysis. The declarations
    are checked again first: one changed after the layer was made would be read as it is."""
    cell.check()
    declared = cell.gate_activations
    if declared is None:
        return "the cell does not say where its gate activations lie (Cell.gate_activations)"
    if not declared:
        return "the cell declares no gate activations (its gate_activations is empty)"
    if all(np.isinf(ACTIVATIONS[a][1]) for *_, a in declared):
        kinds = sorted({a for *_, a in declared})
        return f"{'/'.join(kinds)} units have no upper end to saturate at"
    return ""


@dataclass
class GateSaturation:
    """Fractions of activations near the bottom (`low_fraction`) and top (`high_fraction`) of
    their range, indexed [j, gate, t]; each activation a is read on the [0, 1] scale of its
    range [lo, hi], (a − lo)/(hi − lo): for a tanh, "low" means a < 2·low − 1. NaN where no
    sequence has step t."""

    names: list[str]  # (layer, direction) labels
    gates: list[str]  # e.g. ["i", "f", "g", "o"]
    gate_names: list[str]  # e.g. ["input", "forget", "candidate", "output"]
    low: float
    high: float
    low_fraction: np.ndarray  # (J, G, T)
    high_fraction: np.ndarray  # (J, G, T)
    overall_low: np.ndarray  # (J, G) over every valid step
    overall_high: np.ndarray  # (J, G)
    counts: np.ndarray  # (T,) activations per gate and step that were counted (valid B × H)
    # "sigmoid" or "tanh" per gate: what "near the bottom" means (last, with a default, so
    # that the fields before keep their places; none given: every gate read as a sigmoid)
    activations: list[str] = field(default_factory=list)
    # gates the cell declares whose activation has no upper end (relu): not counted
    left_out: list[str] = field(default_factory=list)
    # gates the cell computes from a counted one rather than from weights of their own (a
    # coupled LSTM's i = 1 − f): said, not counted again (their fractions are its, mirrored)
    derived: list[str] = field(default_factory=list)

    def thresholds(self, g: int) -> tuple[float, float]:
        """(low, high) in gate g's own values: 2·low − 1 and 2·high − 1 for a tanh."""
        lo, hi = ACTIVATIONS[self.activations[g] if self.activations else "sigmoid"]
        return lo + self.low * (hi - lo), lo + self.high * (hi - lo)

    def verdict(self) -> str:
        lines = []
        for j, name in enumerate(self.names):
            parts = []
            kinds = self.activations or ["sigmoid"] * len(self.gates)
            names = zip(self.gates, self.gate_names, kinds, strict=True)
            for g, (gate, long, kind) in enumerate(names):
                lo, hi = self.overall_low[j, g], self.overall_high[j, g]
                tag = ": saturated" if lo + hi > 0.5 else ""
                bottom, top = (f"{v:g}".replace("-", "−") for v in ACTIVATIONS[kind])
                parts.append(f"{long} ({gate}) near {bottom} in {lo:.0%}, near {top} in "
                             f"{hi:.0%}{tag}")  # fmt: skip
            lines.append(f"{name}: " + "; ".join(parts))
        if np.any(self.overall_low + self.overall_high > 0.5):
            lines.append("saturated gates pass little gradient to their pre-activations")
        if self.left_out:
            lines.append(f"not counted: {', '.join(self.left_out)} (no upper end to saturate at)")
        lines += self.derived
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": "gate_saturation",
            **{k: json_value(v) for k, v in self.__dict__.items()},
            "verdict": self.verdict(),
        }


def gate_saturation(
    layer: Recurrent,
    x: np.ndarray,
    lengths: np.ndarray | None = None,
    low: float = 0.05,
    high: float = 0.95,
) -> GateSaturation:
    """Fraction of gate activations in the bottom `low` and the top 1 − `high` of their
    range, per gate and time step, for any cell that declares its gates
    (`Cell.gate_activations`): LSTM i, f, o (sigmoid) and g (tanh); GRU r, z (sigmoid) and
    n (tanh); tanh RNN h. Fractions are over the batch's valid sequences at that step and
    the H units. An activation outside its range (a declaration that names a
    pre-activation) is refused, not counted.
    """
    check_layer(layer)
    cell = layer.cell
    why = unreadable(cell)
    if why:
        _checks.fail("layer", "a layer whose cell declares gate activations with two ends "
                     "(sigmoid or tanh)", f"a layer of {cell!r} ({why})",
                     _HOW if cell.gate_activations is None else "")  # fmt: skip
    low = check_number(low, "low")
    high = check_number(high, "high")
    if not 0.0 < low < 1.0:
        _checks.fail("low", "a number in (0, 1)", _checks.describe(low))
    if not low < high < 1.0:
        _checks.fail("high", f"a number in (low, 1) = ({low}, 1)", _checks.describe(high))
    declared = cell.gate_activations or ()
    spec = [g for g in declared if np.isfinite(ACTIVATIONS[g[3]][1])]
    layer, x = float64_copy(layer, x)  # (as every analysis: float32 or float64 input alike)
    f = layer.forward(x, lengths=lengths)
    tapes = f.cache["tapes"]
    T, B = tapes[0].X.shape[:2]
    H = layer.hidden_size
    valid = valid_steps(f, T, B).T[:, :, None]  # (T, B, 1)
    J, G = len(tapes), len(spec)
    lo_frac, hi_frac = np.empty((J, G, T)), np.empty((J, G, T))
    lo_all, hi_all = np.empty((J, G)), np.empty((J, G))
    per_step = valid.sum(axis=(1, 2)) * H  # (T,)
    total = per_step.sum()
    for j, tape in enumerate(tapes):
        for g, (symbol, long, place, kind) in enumerate(spec):
            if place != "h":
                a = tape.saved[:, :, int(place) * H : (int(place) + 1) * H]
            elif tape.own is not None:
                a = tape.own  # the units' own h̃_t (the carry is projected or zoned out)
            else:
                a = tape.hs[tape.slices()[1]]  # (T, B, H): h_t of every step
            bottom, top = ACTIVATIONS[kind]
            outside = ((a < bottom) | (a > top)) & valid  # (NaN: an overflowed state, neither)
            if outside.any():
                t, b, k = np.argwhere(outside)[0]
                where = "h" if place == "h" else f"tape block {place}"
                _checks.fail("layer", "a layer whose cell's gate_activations name its "
                             "activations", f"a layer of {cell!r}, whose {long} ({symbol}) "
                             f"at {where} holds {a[t, b, k]:.4g} at step {t} of sequence {b} "
                             f"({labels(layer)[j]}), outside {kind}'s range "
                             f"{describe_range(kind)}", "A block the forward step leaves a "
                             "pre-activation in is no activation: name the block it writes "
                             "the squashed value to.")  # fmt: skip
            u = (a.astype(np.float64) - bottom) / (top - bottom)
            n_lo = ((u < low) & valid).sum(axis=(1, 2))
            n_hi = ((u > high) & valid).sum(axis=(1, 2))
            lo_frac[j, g] = np.divide(n_lo, per_step, out=np.full(T, np.nan), where=per_step > 0)
            hi_frac[j, g] = np.divide(n_hi, per_step, out=np.full(T, np.nan), where=per_step > 0)
            lo_all[j, g] = n_lo.sum() / total
            hi_all[j, g] = n_hi.sum() / total
    return GateSaturation(
        labels(layer),
        [s[0] for s in spec],
        [s[1] for s in spec],
        float(low),
        float(high),
        lo_frac,
        hi_frac,
        lo_all,
        hi_all,
        per_step,
        [s[3] for s in spec],
        [f"{g[1]} ({g[0]}, {g[3]})" for g in declared if g not in spec],
        ["input (i) = 1 − forget (f) (a coupled LSTM): near 0 where f is near 1, near 1 where "
         "f is near 0"] if getattr(cell, "coupled", False) else [],  # fmt: skip
    )
