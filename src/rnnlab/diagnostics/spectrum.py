"""The recurrent weight matrices' singular values and eigenvalues, and how they move in training.

For the Elman cell the notes' bound ‖∂h_t/∂h_k‖₂ ≤ (‖W_hh‖₂·max|φ'|)^(t−k) makes two numbers
decisive (Pascanu, Mikolov & Bengio 2013): with tanh or relu (max|φ'| ≤ 1), ‖W_hh‖₂ < 1 is
sufficient for gradients to vanish and ‖W_hh‖₂ > 1 necessary for them to explode; the
spectral radius ρ = max|λ| says whether the map linearised around h = 0 expands (ρ > 1) or
contracts. For LSTM and GRU each gate's H × H block is reported separately (PyTorch's order:
i, f, g, o and r, z, n; a coupled LSTM's f, g, o); there the cell path, not W_hh alone,
carries the gradient.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from rnnlab import _checks
from rnnlab.diagnostics._common import json_value
from rnnlab.layers import Recurrent

_HH_NAME = re.compile(r"(?:^|\.)weight_hh_l(\d+)(_reverse)?$")


def cell_gate_names(cell: object) -> tuple[str, ...]:
    """A cell's gate blocks in its row order, from the cell itself: three blocks are a GRU's
    r, z, n or a coupled LSTM's f, g, o (i = 1 − f), which the count alone cannot tell. A
    cell of one's own gets own0, own1, ...: its one block is no Elman unit's W_hh (a
    leaky unit's gradient need not vanish with ‖W‖₂ < 1), nor its four an LSTM's gates."""
    from rnnlab.cells import ElmanCell, GRUCell, LSTMCell

    if isinstance(cell, LSTMCell):
        return ("f", "g", "o") if cell.coupled else ("i", "f", "g", "o")
    if isinstance(cell, (ElmanCell, GRUCell)):
        return _gate_names(int(cell.gates))
    return tuple(f"own{g}" for g in range(int(getattr(cell, "gates", 1))))


def _check_gates(gates: object, G: int, name: str) -> tuple[str, ...]:
    if not (isinstance(gates, (list, tuple)) and len(gates) == G
            and all(isinstance(g, str) and g for g in gates)):  # fmt: skip
        _checks.fail(name, f"{G} gate names (one per H × H block)", _checks.describe(gates))
    return tuple(gates)


def _gate_names(G: int) -> tuple[str, ...]:
    """Gate blocks in PyTorch's row order, guessed from their count (3: a GRU's, as PyTorch
    has no coupled LSTM) where no cell says which they are."""
    if G == 1:
        return ("hh",)
    if G == 3:
        return ("r", "z", "n")
    if G == 4:
        return ("i", "f", "g", "o")
    return tuple(f"block{g}" for g in range(G))


@dataclass
class SpectrumBlock:
    """One H × H block of a recurrent weight matrix."""

    name: str  # e.g. "weight_hh_l0" or "weight_hh_l0[f]"
    gate: str
    singular_values: np.ndarray  # (H,) descending
    eigenvalues: np.ndarray  # (H,) complex, by descending modulus
    spectral_norm: float  # ‖W‖₂ = σ_max
    spectral_radius: float  # ρ = max |λ|

    def to_json(self) -> dict[str, Any]:
        return {k: json_value(v) for k, v in self.__dict__.items()}


@dataclass
class Spectrum:
    """Every recurrent block of a layer (or of one matrix)."""

    blocks: list[SpectrumBlock]

    def verdict(self) -> str:
        lines = []
        for blk in self.blocks:
            s, rho = blk.spectral_norm, blk.spectral_radius
            line = f"{blk.name}: ‖W‖₂ = {s:.3g}, ρ = {rho:.3g}"
            if blk.gate == "hh":
                if s < 1:
                    line += (
                        ": ‖W‖₂ < 1, so gradients through tanh/relu units must vanish "
                        f"(by at least ×{s:.3g} per step): vanishing"
                    )
                elif rho > 1:
                    line += (
                        ": ρ > 1, the linearised map expands and gradients can explode "
                        "where the units are not saturated: exploding possible"
                    )
                else:
                    line += (
                        ": ‖W‖₂ ≥ 1 and ρ ≤ 1: neither vanishing nor exploding is "
                        "guaranteed by W_hh alone (see gradient_by_lag)"
                    )
            lines.append(line)
        if any(b.gate.startswith("own") for b in self.blocks):
            lines.append(
                "a cell of its own: these blocks feed its units as its steps say; the "
                "gradient's lag profile depends on them (see gradient_by_lag, "
                "jacobian_products)"
            )
        elif any(b.gate != "hh" for b in self.blocks):
            lines.append(
                "gated cell: these blocks feed the gates; the gradient's lag profile "
                "depends on the gate values (see gradient_by_lag, jacobian_products)"
            )
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": "spectrum",
            "blocks": [b.to_json() for b in self.blocks],
            "verdict": self.verdict(),
        }


@dataclass
class SpectrumHistory:
    """‖W‖₂, ρ and the singular values of every block at each checkpoint."""

    steps: np.ndarray  # (N,)
    names: list[str]  # block names
    spectral_norms: np.ndarray  # (N, K)
    spectral_radii: np.ndarray  # (N, K)
    singular_values: list[np.ndarray]  # per block, (N, H) descending

    def verdict(self) -> str:
        lines = []
        for k, name in enumerate(self.names):
            s, r = self.spectral_norms[:, k], self.spectral_radii[:, k]
            lines.append(
                f"{name}: ‖W‖₂ {s[0]:.3g} → {s[-1]:.3g}, ρ {r[0]:.3g} → {r[-1]:.3g} "
                f"(steps {int(self.steps[0])} → {int(self.steps[-1])})"
            )
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": "spectrum_history",
            **{k: json_value(v) for k, v in self.__dict__.items()},
            "verdict": self.verdict(),
        }


def _blocks(
    name: str, W: np.ndarray, gates: tuple[str, ...], W_hr: np.ndarray | None = None
) -> list[SpectrumBlock]:
    """One block per gate; with a projection W_hr (P, H) of the carry, the H × H map from one
    step's h̃ to the next step's pre-activations, W_g W_hr (W_g alone is H × P)."""
    H = W.shape[0] // len(gates)
    out = []
    for g, gate in enumerate(gates):
        Wg = np.asarray(W[g * H : (g + 1) * H], dtype=np.float64)
        if W_hr is not None:
            Wg = Wg @ np.asarray(W_hr, dtype=np.float64)
        sv = np.linalg.svd(Wg, compute_uv=False)
        ev = np.linalg.eigvals(Wg)
        ev = ev[np.argsort(-np.abs(ev), kind="stable")]
        label = name if len(gates) == 1 else f"{name}[{gate}]"
        out.append(SpectrumBlock(label, gate, sv, ev, float(sv[0]), float(np.abs(ev[0]))))
    return out


def _check_matrix(W: object, name: str) -> np.ndarray:
    W = _checks.float_array(W, name, ndim=2)
    rows, H = W.shape
    if not rows or not H or rows % H != 0:  # (an empty one: "integer modulo by zero")
        _checks.fail(
            name, "a recurrent weight of shape (G·H, H): G stacked H × H blocks", f"shape {W.shape}"
        )
    return W


def recurrent_spectrum(
    source: Recurrent | np.ndarray, gates: tuple[str, ...] | list[str] | None = None
) -> Spectrum:
    """Singular values, eigenvalues, ‖W‖₂ and ρ of every recurrent H × H block.

    `source`: a Recurrent layer (every `weight_hh_l{k}[_reverse]`, split by gate and named by
    its cell: a coupled LSTM's three blocks are f, g, o), or one matrix of shape (G·H, H) in
    PyTorch's layout (G = 1, 3 or 4 blocks are named hh, r/z/n, i/f/g/o unless `gates` names
    them, e.g. ("f", "g", "o") for a coupled LSTM's).
    """
    if isinstance(source, Recurrent):
        names = cell_gate_names(source.cell)
        if gates is not None:
            _checks.fail("gates", "None for a layer (its cell names its gates)",
                         _checks.describe(gates))  # fmt: skip
        blocks = []
        for k in range(source.num_layers):
            for sfx in source.directions:
                name = f"weight_hh_l{k}{sfx}"
                # (a NaN or inf was LAPACK's "SVD did not converge", with a traceback)
                W = _checks.float_array(source.params[name], f"source.params[{name!r}]")
                W_hr = source.params.get(f"weight_hr_l{k}{sfx}")
                if W_hr is not None:
                    W_hr = _checks.float_array(W_hr, f"source.params['weight_hr_l{k}{sfx}']")
                blocks += _blocks(name, W, names, W_hr)
        return Spectrum(blocks)
    if not isinstance(source, np.ndarray):
        _checks.fail(
            "source",
            "a Recurrent layer or a recurrent weight matrix (G·H, H)",
            _checks.describe(source),
        )
    W = _check_matrix(source, "source")
    G = W.shape[0] // W.shape[1]
    names = _gate_names(G) if gates is None else _check_gates(gates, G, "gates")
    return Spectrum(_blocks("W_hh", W, names))


def spectrum_over_checkpoints(
    checkpoints: object, gates: tuple[str, ...] | list[str] | None = None
) -> SpectrumHistory:
    """The spectra of every `weight_hh_l{k}[_reverse]` (any prefix, e.g. "1.weight_hh_l0" in a
    Sequential) in a list of (step, params) pairs, in the order given; `gates` names the
    blocks (see recurrent_spectrum; rnnlab gradflow passes the run's cell's)."""

    def gate_names(G: int) -> tuple[str, ...]:
        return _gate_names(G) if gates is None else _check_gates(gates, G, "gates")

    if not isinstance(checkpoints, (list, tuple)) or not checkpoints:
        _checks.fail(
            "checkpoints",
            "a non-empty list of (step, params dict) pairs",
            _checks.describe(checkpoints),
        )
    steps, rows, names = [], [], None
    for i, item in enumerate(checkpoints):
        ok = (
            isinstance(item, (list, tuple))
            and len(item) == 2
            and isinstance(item[1], dict)
            and isinstance(item[0], (int, np.integer))
            and not isinstance(item[0], bool)
        )
        if not ok:
            _checks.fail(
                f"checkpoints[{i}]", "a pair (step: int, params: dict)", _checks.describe(item)
            )
        step, params = item
        keys = sorted(k for k in params if _HH_NAME.search(k))
        if not keys:
            _checks.fail(
                f"checkpoints[{i}]",
                "params holding recurrent weights named like 'weight_hh_l0'",
                f"the keys {sorted(params)[:6]}",
            )
        blocks = []
        for key in keys:
            hr = key.replace("weight_hh", "weight_hr")
            if hr in params:  # a projected carry: W_hh is (G·H, P), W_hr (P, H)
                W = _checks.float_array(params[key], f"checkpoints[{i}][{key!r}]", ndim=2)
                W_hr = _checks.float_array(params[hr], f"checkpoints[{i}][{hr!r}]", ndim=2)
                H = W_hr.shape[1]
                if not H or W.shape[0] % H or W_hr.shape[0] != W.shape[1]:
                    _checks.fail(f"checkpoints[{i}][{hr!r}]",
                                 f"a projection of shape ({W.shape[1]}, H) with H dividing "
                                 f"{W.shape[0]}", f"shape {W_hr.shape}")  # fmt: skip
                blocks += _blocks(key, W, gate_names(W.shape[0] // H), W_hr)
                continue
            W = _check_matrix(params[key], f"checkpoints[{i}][{key!r}]")
            blocks += _blocks(key, W, gate_names(W.shape[0] // W.shape[1]))
        these = [b.name for b in blocks]
        if names is None:
            names = these
        elif these != names or any(
            b.singular_values.shape != a.singular_values.shape
            for a, b in zip(rows[0], blocks, strict=True)
        ):
            # (the shapes too: "the same as checkpoint 0 (['weight_hh_l0']); got
            # ['weight_hh_l0']" said nothing of what differed)
            def sizes(bs: list[SpectrumBlock]) -> str:
                return ", ".join(f"{b.name} {len(b.singular_values)}×{len(b.singular_values)}"
                                 for b in bs)  # fmt: skip

            _checks.fail(
                f"checkpoints[{i}]",
                f"the same recurrent weights as checkpoint 0 ({sizes(rows[0])})",
                sizes(blocks),
            )
        steps.append(int(step))
        rows.append(blocks)
    assert names is not None
    return SpectrumHistory(
        np.array(steps),
        names,
        np.array([[b.spectral_norm for b in r] for r in rows]),
        np.array([[b.spectral_radius for b in r] for r in rows]),
        [np.array([r[k].singular_values for r in rows]) for k in range(len(names))],
    )
