"""The price of the LSTM's variants: each against rnnlab's own plain LSTM of the same shape,
since PyTorch has none of them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from rnnlab.bench.configs import LAYER_OPTIONS, SHAPES, VARIANTS, Config
from rnnlab.bench.report import stderr
from rnnlab.bench.runners import Pair, make_pair, rnnlab_step
from rnnlab.bench.timing import Timing, interleaved, ms_stats
from rnnlab.cells import LSTMCell
from rnnlab.layers import Recurrent


def variant_study(
    variants: Sequence[str],
    shapes: Sequence[str],
    modes: Sequence[str],
    timing: Timing,
    log: Callable[[str], None] = stderr,
) -> list[dict[str, Any]]:
    """Each LSTM variant against rnnlab's plain LSTM of the same shape (one direction, one
    layer, same data), interleaved blocks in this process: the price of the variant."""
    rows = []
    for shape in shapes:
        B, T, I, H = SHAPES[shape]
        plain = make_pair(None, Config("lstm", shape, False))
        for name in variants:
            options = VARIANTS[name]
            cell = LSTMCell(**{k: v for k, v in options.items() if k not in LAYER_OPTIONS})
            around = {k: v for k, v in options.items() if k in LAYER_OPTIONS}
            layer = Recurrent(cell, I, H, dtype=np.float32, rng=0, **around)
            y = plain.y[..., : layer.output_features]  # a projected output is narrower
            pair = Pair(layer, None, plain.x, np.ascontiguousarray(y), None, None)
            for mode in modes:
                times = interleaved(
                    {"lstm": rnnlab_step(plain, mode), "variant": rnnlab_step(pair, mode)},
                    timing,
                )
                lstm, ours = ms_stats(times["lstm"]), ms_stats(times["variant"])
                row = {
                    "cell": name,
                    "shape": shape,
                    "mode": mode,
                    "lstm_ms": lstm["median"],
                    "variant_ms": ours["median"],
                    "ratio_to_lstm": ours["median"] / lstm["median"],
                }
                rows.append(row)
                log(
                    f"variant {name:<26} {shape} {mode:<5}  lstm {row['lstm_ms']:8.2f} ms  "
                    f"variant {row['variant_ms']:8.2f} ms  {row['ratio_to_lstm']:4.2f}x the "
                    "plain LSTM's time"
                )
    return rows
