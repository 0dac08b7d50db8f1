"""What the benchmark runs: the shapes, cells, variants and directions, and the FLOP count
of each configuration.

A configuration is named by plain values (cell, shape, directions, layers) so that a row of
the JSON report maps back to it and a memory child can rebuild it from its spec.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rnnlab.cells import ElmanCell, GRUCell, LSTMCell

# (batch B, time T, input I, hidden H)
SHAPES: dict[str, tuple[int, int, int, int]] = {
    "S1": (16, 200, 32, 64),
    "S2": (32, 100, 64, 128),
    "S3": (64, 100, 128, 256),
    "S4": (128, 50, 256, 512),
}
CELLS = ("rnn", "lstm", "gru")
CELL_TYPES = {"rnn": ElmanCell, "lstm": LSTMCell, "gru": GRUCell}  # PyTorch's three
# The LSTM's variants (rnnlab.cells.lstm): PyTorch has none, so each is timed against
# rnnlab's own plain LSTM of the same shape, interleaved in the same process.
VARIANTS: dict[str, dict[str, Any]] = {  # name: the options of LSTMCell or Recurrent
    "lstm-peephole": {"peephole": True},
    "lstm-coupled": {"coupled": True},
    "lstm-cell-clip": {"cell_clip": 3.0},
    "lstm-peephole-coupled-clip": {"peephole": True, "coupled": True, "cell_clip": 3.0},
    "lstm-layer-norm": {"layer_norm": True},
    # around the cell (Recurrent's options): the carry projected to H/2, recurrent dropout,
    # zoneout (the draws are part of a training step's price)
    "lstm-proj": {"proj_size": 64},
    "lstm-recurrent-dropout": {"recurrent_dropout": 0.25},
    "lstm-zoneout": {"zoneout": (0.1, 0.1)},
}
LAYER_OPTIONS = ("proj_size", "recurrent_dropout", "zoneout")  # Recurrent's, not the cell's
VARIANT_SHAPE = "S2"  # where the variants are timed unless --shapes says otherwise
MODES = ("train", "infer")
AGAINST = ("torch", "onnxruntime")  # torch is always the reference; onnxruntime: inference
DIRECTIONS = ("uni", "bi")
GATES = {"rnn": 1, "lstm": 4, "gru": 3}
TWO_LAYER_SHAPE = "S2"  # the stacked configuration: 2 layers, one direction
QUICK_SHAPES = ("S1", "S2")
QUICK_MEMORY = ("lstm", "S2", False, 1)  # the one configuration --quick measures memory for
SCALING_LENGTHS = (100, 1000, 10000)
QUICK_SCALING_LENGTHS = (100, 300, 1000)
SCALING_DIMS = (16, 32, 64)  # LSTM (B, I, H) of the scaling study


@dataclass(frozen=True)
class Config:
    """One benchmark configuration: a cell on a shape, one or two directions, 1 or 2 layers."""

    cell: str
    shape: str  # a key of SHAPES, or "scaling" (SCALING_DIMS with the length T)
    bidirectional: bool
    layers: int = 1
    T: int | None = None  # the sequence length of a "scaling" configuration

    @property
    def dims(self) -> tuple[int, int, int, int]:
        """(B, T, I, H)."""
        if self.shape == "scaling":
            B, I, H = SCALING_DIMS
            return B, int(self.T or 0), I, H
        return SHAPES[self.shape]

    @property
    def label(self) -> str:
        if self.shape == "scaling":
            return f"{self.cell} T={self.T}"
        kind = (
            f"{self.layers}-layer" if self.layers > 1 else ("bi" if self.bidirectional else "uni")
        )
        return f"{self.cell} {self.shape} {kind}"


def configs(
    cells: Sequence[str] = CELLS,
    shapes: Sequence[str] = tuple(SHAPES),
    directions: Sequence[str] = DIRECTIONS,
) -> list[Config]:
    """Every cell × shape × direction, then each cell's 2-layer S2 stack (if S2, 'uni' given)."""
    out = []
    for cell in cells:
        for shape in shapes:
            for direction in directions:
                out.append(Config(cell, shape, direction == "bi"))
        if TWO_LAYER_SHAPE in shapes and "uni" in directions:
            out.append(Config(cell, TWO_LAYER_SHAPE, False, 2))
    return out


def row_config(row: dict[str, Any]) -> Config:
    return Config(row["cell"], row["shape"], row["bidirectional"], row["layers"])


def forward_flops(
    cell: str, B: int, T: int, I: int, H: int, layers: int = 1, bidirectional: bool = False
) -> float:
    """Multiply-add FLOPs of one forward pass, counting the matrix products only.

    Per layer k and direction, with G gates (RNN 1, GRU 3, LSTM 4) and I_0 = I, I_k = D·H:

        F_k = 2 · T · B · (I_k + H) · G · H

    A training step (`step_flops`) counts 3 F for each layer above the first (forward, then
    the two products of backward: into the layer's inputs and into its weights), and for
    the first 2 F plus its recurrent products again: the gradient into the data x is
    computed by neither library (the bench passes input_grad=False, as PyTorch's x needs
    none), only the one into h_{t-1}.
    """
    D = 2 if bidirectional else 1
    G = GATES[cell]
    total = 0.0
    for k in range(layers):
        I_k = I if k == 0 else D * H
        total += D * 2.0 * T * B * (I_k + H) * G * H
    return total


def step_flops(config: Config, mode: str) -> float:
    B, T, I, H = config.dims
    f = forward_flops(config.cell, B, T, I, H, config.layers, config.bidirectional)
    if mode != "train":
        return f
    first = forward_flops(config.cell, B, T, I, H, 1, config.bidirectional)
    recurrent = first * H / (I + H)  # layer 0's h_{t-1} products: its backward's only dX part
    return 3.0 * f - first + recurrent  # (counted as 3 F before 2026-12-04: 9/8 of it at H = 2I)
