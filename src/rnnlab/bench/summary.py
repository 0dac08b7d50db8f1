"""The headline numbers of a run, computed once from its rows so that the table, the markdown
and the JSON all say the same.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from rnnlab.bench.configs import row_config


def _geomean(values: Sequence[float]) -> float | None:
    values = [v for v in values if v is not None and v > 0]
    return float(np.exp(np.mean(np.log(values)))) if values else None


def _slope(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """The exponent p of y ∝ x^p, fitted in log-log (None with fewer than two usable points)."""
    pts = [(x, y) for x, y in zip(xs, ys, strict=True) if y is not None and y > 0]
    if len(pts) < 2:
        return None
    lx, ly = np.log([p[0] for p in pts]), np.log([p[1] for p in pts])
    return float(np.polyfit(lx, ly, 1)[0])


def summarize(rows: list[dict[str, Any]], scaling_rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The headline numbers: geometric means and minima of the ratios, the LSTM S4 training
    peak fraction, torch's memory over rnnlab's, and the scaling exponents in T."""
    train = [r for r in rows if r["mode"] == "train"]
    single = [r for r in train if r["layers"] == 1]
    infer = [r for r in rows if r["mode"] == "infer"]

    def lowest(rs: list[dict[str, Any]]) -> tuple[float | None, str | None]:
        if not rs:
            return None, None
        r = min(rs, key=lambda r: r["ratio"])
        return r["ratio"], row_config(r).label

    train_min, train_min_config = lowest(train)
    infer_min, infer_min_config = lowest(infer)
    s4 = [
        r for r in single if r["cell"] == "lstm" and r["shape"] == "S4" and not r["bidirectional"]
    ]
    mem = [
        r["torch_mem_mb"] / r["rnnlab_mem_mb"]
        for r in train
        if r["torch_mem_mb"] is not None and r["rnnlab_mem_mb"] and r["rnnlab_mem_mb"] > 0
    ]
    Ts = [r["T"] for r in scaling_rows]
    ort = [r for r in infer if r.get("ort_ratio") is not None]
    return {
        "infer_ort_ratio_geomean": _geomean([r["ort_ratio"] for r in ort]),
        "infer_ort_faster": sum(r["ort_ratio"] > 1 for r in ort),
        "infer_ort_configs": len(ort),
        "train_ratio_geomean": _geomean([r["ratio"] for r in single]),
        "train_ratio_geomean_configs": len(single),
        "train_ratio_min": train_min,
        "train_ratio_min_config": train_min_config,
        "train_faster": sum(r["ratio"] > 1 for r in train),
        "train_configs": len(train),
        "infer_ratio_geomean": _geomean([r["ratio"] for r in infer]),
        "infer_ratio_min": infer_min,
        "infer_ratio_min_config": infer_min_config,
        "infer_faster": sum(r["ratio"] > 1 for r in infer),
        "infer_configs": len(infer),
        "lstm_s4_train_peak_fraction": s4[0]["peak_fraction"] if s4 else None,
        "lstm_s4_train_gflops": s4[0]["gflops"] if s4 else None,
        "memory_ratio_geomean": _geomean(mem),
        "memory_ratio_min": min(mem) if mem else None,
        "memory_configs": len(mem),
        "scaling_time_exponent": _slope(Ts, [r["rnnlab_ms"] for r in scaling_rows]),
        "scaling_memory_exponent": _slope(Ts, [r["rnnlab_mem_mb"] for r in scaling_rows]),
        "scaling_checkpoint_memory_exponent": _slope(
            Ts, [r["rnnlab_checkpoint_mem_mb"] for r in scaling_rows]
        ),
    }
