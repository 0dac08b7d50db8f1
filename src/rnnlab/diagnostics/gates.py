"""How often the gates sit at the ends of their range, per gate and time step.

A sigmoid gate near 0 or 1 has σ' = σ(1 − σ) < 0.05: its pre-activation gets almost no
gradient, and the gate acts as a fixed switch (a forget gate near 1 keeps the cell state, the
path along which an LSTM's gradient does not vanish). The fractions are read from the tape the
forward pass keeps ("ifgo" for the LSTM, "rzn" for the GRU; h itself for a tanh RNN), over the
valid steps only: padded steps are computed but never used, so they are left out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rnnlab import _checks
from rnnlab.cells import ElmanCell, GRUCell, LSTMCell
from rnnlab.diagnostics._common import (
    check_layer,
    check_number,
    float64_copy,
    json_value,
    labels,
    valid_steps,
)
from rnnlab.layers import Recurrent

# (gate, long name, activation): PyTorch's row order in the tapes.
_Gate = tuple[str, str, str]  # (symbol, name, activation)
_LSTM_GATES: tuple[_Gate, ...] = (
    ("i", "input", "sigmoid"),
    ("f", "forget", "sigmoid"),
    ("g", "candidate", "tanh"),
    ("o", "output", "sigmoid"),
)
_GRU_GATES: tuple[_Gate, ...] = (
    ("r", "reset", "sigmoid"),
    ("z", "update", "sigmoid"),
    ("n", "candidate", "tanh"),
)
_ELMAN_UNITS: tuple[_Gate, ...] = (("h", "hidden", "tanh"),)


@dataclass
class GateSaturation:
    """Fractions of activations near the bottom (`low_fraction`) and top (`high_fraction`) of
    their range, indexed [j, gate, t]; tanh activations a are read on the [0, 1] scale
    (a + 1)/2, so "low" means a < 2·low − 1. NaN where no sequence has step t."""

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

    def verdict(self) -> str:
        lines = []
        for j, name in enumerate(self.names):
            parts = []
            kinds = self.activations or ["sigmoid"] * len(self.gates)
            names = zip(self.gates, self.gate_names, kinds, strict=True)
            for g, (gate, long, kind) in enumerate(names):
                lo, hi = self.overall_low[j, g], self.overall_high[j, g]
                tag = ": saturated" if lo + hi > 0.5 else ""
                bottom = "−1" if kind == "tanh" else "0"  # (a tanh's range is [−1, 1])
                parts.append(f"{long} ({gate}) near {bottom} in {lo:.0%}, near 1 in {hi:.0%}{tag}")
            lines.append(f"{name}: " + "; ".join(parts))
        if np.any(self.overall_low + self.overall_high > 0.5):
            lines.append("saturated gates pass little gradient to their pre-activations")
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
    """Fraction of gate activations below `low` and above `high`, per gate and time step.

    LSTM: i, f, o (sigmoid) and g (tanh); GRU: r, z (sigmoid) and n (tanh); tanh RNN: h.
    Fractions are over the batch's valid sequences at that step and the H units.
    """
    check_layer(layer)
    cell = layer.cell
    if isinstance(cell, ElmanCell) and cell.nonlinearity != "tanh":
        _checks.fail(
            "layer",
            "an LSTM, a GRU or a tanh RNN (relu units have no upper end)",
            "an RNN with nonlinearity='relu'",
        )
    low = check_number(low, "low")
    high = check_number(high, "high")
    if not 0.0 < low < 1.0:
        _checks.fail("low", "a number in (0, 1)", _checks.describe(low))
    if not low < high < 1.0:
        _checks.fail("high", f"a number in (low, 1) = ({low}, 1)", _checks.describe(high))
    layer, x = float64_copy(layer, x)  # (as every analysis: float32 or float64 input alike)
    f = layer.forward(x, lengths=lengths)
    tapes = f.cache["tapes"]
    T, B = tapes[0].X.shape[:2]
    H = layer.hidden_size
    valid = valid_steps(f, T, B).T[:, :, None]  # (T, B, 1)
    if isinstance(cell, ElmanCell):
        spec = _ELMAN_UNITS
    elif isinstance(cell, LSTMCell):
        spec = _LSTM_GATES[1:] if cell.coupled else _LSTM_GATES  # coupled: f, g, o (i = 1 − f)
    elif isinstance(cell, GRUCell):
        spec = _GRU_GATES
    else:
        _checks.fail("layer", "an LSTM, a GRU or a tanh RNN", f"a layer of {cell!r}")
    J, G = len(tapes), len(spec)
    lo_frac, hi_frac = np.empty((J, G, T)), np.empty((J, G, T))
    lo_all, hi_all = np.empty((J, G)), np.empty((J, G))
    per_step = valid.sum(axis=(1, 2)) * H  # (T,)
    total = per_step.sum()
    for j, tape in enumerate(tapes):
        if isinstance(cell, ElmanCell) and tape.own is not None:
            acts = tape.own  # the units' own h̃_t (the carry is projected or zoned out)
        elif isinstance(cell, ElmanCell):
            acts = tape.hs[tape.slices()[1]]  # (T, B, H): h_t of every step
        else:
            acts = tape.saved  # the gate activations come first on the tape
        for g, (_, _, kind) in enumerate(spec):
            a = acts[:, :, g * H : (g + 1) * H].astype(np.float64)
            u = (a + 1.0) / 2.0 if kind == "tanh" else a
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
        [s[2] for s in spec],
    )
