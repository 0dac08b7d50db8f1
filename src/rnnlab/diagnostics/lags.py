"""How far back the gradient reaches: ‖∂L/∂h_k‖ against the lag, exactly, from one BPTT pass.

The notes bound ‖∂h_t/∂h_k‖ by (‖W‖·max|φ'|)^(t−k); here is what the gradient actually does.
`gradient_by_lag` puts a loss at the end of the sequence and reads the total ∂L/∂h_k of every
step from `recurrence.backward(..., dh_trace=...)`, for every layer and direction, so the lag
profile is the very gradient BPTT computes (a finite-difference test checks it). A straight
line through log10 ‖∂L/∂h_k‖ gives the rate: "falls by a factor of 10 every 7 steps".
`gradient_map` does one BPTT per loss step t and returns the whole t × k matrix.

The lag of step k counts the steps between k and the end of that direction's pass: T_b−1−k
running forward (T_b the sequence's length), k running in reverse, whose pass ends at t = 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from rnnlab import _checks
from rnnlab.diagnostics._common import (
    RateFit,
    check_int,
    check_layer,
    fit_rate,
    float64_copy,
    json_value,
    labels,
    masked_mean,
    norms,
    output_grad_to_directions,
    time_major,
    traced_backward,
    unit_vector,
    valid_steps,
)
from rnnlab.layers import Forward, Recurrent

LOSSES = ("last", "all")


@dataclass
class LagProfile:
    """‖∂L/∂h_k‖ per (layer, direction) against the lag; arrays are indexed [j, b, ·] with j
    over `names` (e.g. "l0", "l0_reverse"), b over the batch. NaN marks padded steps."""

    names: list[str]
    loss: str  # "last", "all" or "d_output"
    lengths: np.ndarray  # (B,) valid length of each sequence
    lags: np.ndarray  # (T,) 0 … T−1
    mean: np.ndarray  # (J, T) batch mean of ‖∂L/∂h_k‖ at each lag
    per_sequence: np.ndarray  # (J, B, T) the same for each sequence, by lag
    by_step: np.ndarray  # (J, B, T) by time step k instead of lag
    fits: list[RateFit]  # the fitted rate of `mean`, one per (layer, direction)

    def verdict(self) -> str:
        """The fitted rate per (layer, direction), and the lags the fit leaves out: where the
        mean is exactly 0 or overflows float64 (inf), said as rnnlab gradflow says them; the
        verdict was the rate alone, "too few non-zero values to fit a rate (1):
        undetermined" of a gradient that vanished to 0 past lag 0, and a fit over the finite
        lags of one that overflowed at the others."""
        T = int(np.max(self.lengths)) if self.lengths.size else 0  # (the lags reached)
        lines = []
        for j, (name, fit) in enumerate(zip(self.names, self.fits, strict=True)):
            text = f"{name}: " + fit.words("‖∂L/∂h_k‖")
            m = self.mean[j, :T]
            over, zero = np.nonzero(np.isinf(m))[0], np.nonzero(m == 0.0)[0]
            if over.size:
                text += (f"; overflows float64 at {over.size} of the {T} lags, from lag "
                         f"{over[0]} (exploding)")  # fmt: skip
            if zero.size:
                text += (f"; exactly 0 at {zero.size} of the {T} lags, from lag {zero[0]} "
                         "(no gradient reaches back that far)")  # fmt: skip
            lines.append(text)
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": "lag_profile",
            **{k: json_value(v) for k, v in self.__dict__.items()},
            "verdict": self.verdict(),
        }


@dataclass
class GradientMap:
    """‖∂L_t/∂h_k‖ for the per-step losses L_t = r·output_t: `norms[j, t, k]`, batch means over
    the sequences where both t and k are valid (NaN where none is, inf where the gradient
    passes float64: `overflow`)."""

    names: list[str]
    norms: np.ndarray  # (J, T, T): row t is the loss step, column k the state
    counts: np.ndarray  # (T, T) how many sequences each entry averages
    fits: list[RateFit]  # rate against the lag (t − k forward, k − t reverse) over all entries
    # (J, T, T) True where ‖∂L_t/∂h_k‖ overflows float64 (exploding): null in the JSON's
    # "norms" as an entry no sequence has is, and left out of `fits`, which fit finite values
    overflow: np.ndarray

    def lags(self, j: int) -> np.ndarray:
        """(T, T) the lag of each entry of map j: t − k forward, k − t in reverse."""
        steps = np.arange(self.counts.shape[0])
        lags = steps[:, None] - steps[None, :]  # t − k
        return -lags if self.names[j].endswith("_reverse") else lags

    def overflow_words(self, j: int) -> str:
        """Which entries of map j overflow float64, in words ("" when none does): said, since
        the fit leaves them out and the JSON's null does not tell them from missing data.
        (Below the top of a bidirectional stack, a loss at t reaches states on both sides
        of it: lags below 0 too.)"""
        over = self.overflow[j]
        n = int(over.sum())
        if not n:
            return ""
        at = sorted({int(v) for v in self.lags(j)[over]})
        lo, hi = at[0], at[-1]
        where = (f"lag {lo}" if lo == hi else f"lags {lo}–{hi}" if lo >= 0
                 else f"lags {lo} to {hi}")  # fmt: skip
        if n <= 3:
            cells = ", ".join(f"({t}, {k})" for t, k in zip(*np.nonzero(over), strict=True))
            where = f"(t, k) = {cells}, at {where}"
        else:
            where = f"at {where}"
        has = int(np.sum(self.counts > 0))
        return (f"overflows float64 (exploding) in {n} of its {has} cells, {where}; the fit "
                f"leaves {'it' if n == 1 else 'them'} out")  # fmt: skip

    def verdict(self) -> str:
        return "\n".join(
            f"{name}: " + fit.words("‖∂L_t/∂h_k‖")
            + (f"; {self.overflow_words(j)}" if self.overflow[j].any() else "")
            for j, (name, fit) in enumerate(zip(self.names, self.fits, strict=True))
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": "gradient_map",
            **{k: json_value(v) for k, v in self.__dict__.items()},
            "verdict": self.verdict(),
        }


def _forward(
    layer: Recurrent, x: np.ndarray, lengths: np.ndarray | None
) -> tuple[Forward, int, int]:
    """An evaluation-mode forward pass (no dropout: the profile is of the model, not a mask)."""
    f = layer.forward(x, lengths=lengths)  # rnnlab.layers checks x and lengths
    T, B = f.cache["tapes"][0].X.shape[:2]
    return f, T, B


def _direction_of(layer: Recurrent) -> list[int]:
    return [d for _ in range(layer.num_layers) for d in range(len(layer.directions))]


def gradient_by_lag(
    layer: Recurrent,
    x: np.ndarray,
    lengths: np.ndarray | None = None,
    loss: str = "last",
    *,
    d_output: np.ndarray | None = None,
    seed: int = 0,
) -> LagProfile:
    """‖∂L/∂h_k‖ for every step k, layer and direction, from one exact BPTT pass.

    The loss (with r a fixed random unit vector drawn from `seed`):
      - "last": L = Σ_b Σ_d r_d · h_n^(d)[b], a projection of the top layer's final state in
        each direction, i.e. of the output at each sequence's last valid step (time T_b−1
        running forward, t = 0 in reverse);
      - "all":  L = Σ_b Σ_t r · output_t[b], a loss at every step;
      - `d_output` (an array shaped like the layer's output) replaces both: L = Σ d_output ⊙ output.

    Computed in float64 whatever the layer's dtype (see `float64_copy` in _common).
    For layers below the top, the gradient arrives through the layer above's ∂L/∂X. The
    total gradient of step k is g_k = ∂L/∂h_k (with c_k held fixed for an LSTM); lag ℓ = T_b−1−k
    forward, ℓ = k in reverse. `mean` averages ‖g‖ over the sequences at least ℓ+1 long and
    `fits` puts a line through log10 of it.
    """
    check_layer(layer)
    seed = check_int(seed, "seed", 0, 2**63)
    _checks.choice(loss, "loss", LOSSES)
    layer, x = float64_copy(layer, x)
    f, T, B = _forward(layer, x, lengths)
    L, D, H = layer.num_layers, len(layer.directions), layer.carry_size
    J = L * D
    rng = np.random.default_rng(seed)
    dh_n: list[np.ndarray | None] = [None] * J
    dys: Sequence[np.ndarray | None]
    if d_output is not None:
        d_output = _checks.float_array(
            d_output, "d_output", shape=f.output.shape, dtype=layer.dtype
        )
        dys = output_grad_to_directions(layer, f, time_major(layer, d_output))
        loss = "d_output"
    elif loss == "last":
        dys = [None] * D
        for d in range(D):
            dh_n[(L - 1) * D + d] = np.broadcast_to(unit_vector(rng, H).astype(layer.dtype), (B, H))
    else:
        r = unit_vector(rng, layer.output_features).astype(layer.dtype)
        dys = output_grad_to_directions(layer, f, np.broadcast_to(r, (T, B, r.size)))
    traces = traced_backward(layer, f, dys, dh_n)

    valid = valid_steps(f, T, B)  # (B, T)
    lengths_ = valid.sum(axis=1)
    by_step = np.stack([norms(tr, axis=2).T for tr in traces])
    by_step[:, ~valid] = np.nan
    per_sequence = np.full((J, B, T), np.nan)
    for j, d in enumerate(_direction_of(layer)):
        for b, n in enumerate(lengths_):
            row = by_step[j, b, :n]
            per_sequence[j, b, :n] = row[::-1] if d == 0 else row
    long_enough = np.arange(T)[None, :] < lengths_[:, None]  # (B, T): lag ℓ exists in b
    mean = masked_mean(per_sequence, np.broadcast_to(long_enough, per_sequence.shape), axis=1)
    lags = np.arange(T)
    fits = [fit_rate(lags, mean[j]) for j in range(J)]
    return LagProfile(labels(layer), loss, lengths_, lags, mean, per_sequence, by_step, fits)


def gradient_map(
    layer: Recurrent,
    x: np.ndarray,
    lengths: np.ndarray | None = None,
    *,
    seed: int = 0,
) -> GradientMap:
    """The t × k matrix of ‖∂L_t/∂h_k‖ for per-step losses L_t = Σ_b r · output_t[b].

    One BPTT pass per loss step t, so the cost is T times a backward pass: fine for T up to a
    few hundred. r is the same unit vector as the "all" loss of `gradient_by_lag` (and, for a
    unidirectional layer, as its "last" loss, so row T−1 equals that lag profile read by step).
    """
    check_layer(layer)
    seed = check_int(seed, "seed", 0, 2**63)
    layer, x = float64_copy(layer, x)
    f, T, B = _forward(layer, x, lengths)
    J = layer.num_layers * len(layer.directions)
    r = unit_vector(np.random.default_rng(seed), layer.output_features).astype(layer.dtype)
    valid = valid_steps(f, T, B)  # (B, T)
    grid = np.empty((J, T, T))
    counts = np.empty((T, T), np.int64)
    dO = np.zeros((T, B, r.size), layer.dtype)
    for t in range(T):
        dO[t] = r
        traces = traced_backward(layer, f, output_grad_to_directions(layer, f, dO), [None] * J)
        dO[t] = 0.0
        pair = valid[:, t][:, None] & valid  # (B, T): both the loss step and state k are valid
        counts[t] = pair.sum(axis=0)
        for j, tr in enumerate(traces):
            n = norms(tr, axis=2).T  # (B, T)
            grid[j, t] = masked_mean(n, pair, axis=0)
    t_idx, k_idx = np.meshgrid(np.arange(T), np.arange(T), indexing="ij")
    fits = []
    for j, d in enumerate(_direction_of(layer)):
        lag = t_idx - k_idx if d == 0 else k_idx - t_idx
        causal = lag >= 0
        fits.append(fit_rate(lag[causal], grid[j][causal]))  # (finite values: no overflow)
    overflow = (counts > 0) & ~np.isfinite(grid)  # (`norms` is inf where a gradient overflows)
    return GradientMap(labels(layer), grid, counts, fits, overflow)
