"""How a training step grows with the sequence length T: an LSTM at T = 100 ... 10,000 against
torch, with and without gradient checkpointing, in time and in memory.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

import numpy as np

from rnnlab.bench.configs import Config
from rnnlab.bench.memory import measure_memory
from rnnlab.bench.runners import check_agreement, make_pair, rnnlab_step, torch_step
from rnnlab.bench.timing import Timing, interleaved
from rnnlab.layers import Recurrent


def scaling_study(
    torch: ModuleType,
    lengths: Sequence[int],
    timing: Timing,
    memory: bool,
    log: Callable[[str], None],
) -> list[dict[str, Any]]:
    """An LSTM (B=16, I=32, H=64) training step against T: time (expected linear) and memory,
    also with gradient checkpointing every k = round(√T) steps when the layer offers it."""
    has_checkpoint = "checkpoint_every" in inspect.signature(Recurrent.forward).parameters
    rows = []
    for T in lengths:
        config = Config("lstm", "scaling", False, 1, T)
        pair = make_pair(torch, config)
        k = round(math.sqrt(T))
        # (recorded as the layer rows' are: the figure says how close, not only that it passed)
        err = check_agreement(torch, pair, f"lstm scaling T={T}")
        err_checkpoint = None
        fns = {"rnnlab": rnnlab_step(pair, "train"), "torch": torch_step(torch, pair, "train")}
        if has_checkpoint:
            err_checkpoint = check_agreement(
                torch, pair, f"lstm scaling T={T} checkpoint_every={k}", k
            )
            fns["rnnlab_checkpoint"] = rnnlab_step(pair, "train", k)
        times = interleaved(fns, timing)
        ms = {name: float(np.median(t)) * 1e3 for name, t in times.items()}
        rows.append(
            {
                "T": T,
                "torch_ms": ms["torch"],
                "rnnlab_ms": ms["rnnlab"],
                "ratio": ms["torch"] / ms["rnnlab"],
                "rnnlab_us_per_step": ms["rnnlab"] * 1e3 / T,
                "checkpoint_every": k if has_checkpoint else None,
                "rnnlab_checkpoint_ms": ms.get("rnnlab_checkpoint"),
                "torch_mem_mb": None,
                "rnnlab_mem_mb": None,
                "rnnlab_checkpoint_mem_mb": None,
                "max_rel_err": err,
                "checkpoint_max_rel_err": err_checkpoint,
            }
        )
        log(
            f"scaling lstm T={T:<6} torch {ms['torch']:9.2f} ms  rnnlab {ms['rnnlab']:9.2f} ms"
            + (f"  checkpointed {ms['rnnlab_checkpoint']:9.2f} ms" if has_checkpoint else "")
        )
        del pair
    if memory:
        config = Config("lstm", "scaling", False)
        runs = [("torch_mem_mb", "torch", False), ("rnnlab_mem_mb", "rnnlab", False)]
        if has_checkpoint:
            runs.append(("rnnlab_checkpoint_mem_mb", "rnnlab", True))
        for key, impl, checkpoint in runs:
            for row, m in zip(rows, measure_memory(impl, config, lengths, checkpoint), strict=True):
                row[key] = m["delta_mb"]
        for row in rows:
            log(
                f"scaling memory T={row['T']:<6} torch {row['torch_mem_mb']:7.1f} MB  rnnlab "
                f"{row['rnnlab_mem_mb']:7.1f} MB"
                + (
                    f"  checkpointed {row['rnnlab_checkpoint_mem_mb']:7.1f} MB"
                    if has_checkpoint
                    else ""
                )
            )
    return rows
