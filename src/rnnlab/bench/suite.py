"""One benchmark run: check the arguments, measure the machine, then time, check and measure
every configuration, and return everything as one JSON-ready dict.
"""

from __future__ import annotations

import datetime
import math
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

from rnnlab import _checks
from rnnlab.bench import environment, host
from rnnlab.bench.configs import (
    AGAINST,
    CELLS,
    DIRECTIONS,
    MODES,
    QUICK_MEMORY,
    QUICK_SCALING_LENGTHS,
    QUICK_SHAPES,
    SCALING_LENGTHS,
    SHAPES,
    VARIANT_SHAPE,
    VARIANTS,
    Config,
    configs,
    row_config,
    step_flops,
)
from rnnlab.bench.memory import measure_memory, memory_supported
from rnnlab.bench.ort import ORT_MISSING, check_ort_agreement, ort_step
from rnnlab.bench.report import gemm_with_and_without, noisy, stderr
from rnnlab.bench.runners import (
    TOLERANCE,
    check_agreement,
    check_inference_agreement,
    import_torch,
    make_pair,
    rnnlab_step,
    torch_step,
)
from rnnlab.bench.scaling import scaling_study
from rnnlab.bench.summary import summarize
from rnnlab.bench.timing import (
    BLOCK_S,
    PAUSE_S,
    QUICK_BLOCK_S,
    QUICK_ROUNDS,
    ROUNDS,
    Timing,
    interleaved,
    ms_stats,
)
from rnnlab.bench.variants import variant_study

BUSY_LOAD = 0.5  # a 1-minute load average above this at start-up gets a warning


def _subset(values: Sequence[str], name: str, allowed: Sequence[str]) -> list[str]:
    """`values` as a list in the canonical order of `allowed`, refusing anything else."""
    expected = "a non-empty list drawn from " + ", ".join(map(repr, allowed))
    if isinstance(values, str) or not isinstance(values, Sequence):
        _checks.fail(name, expected, _checks.describe(values))
    if not values:
        _checks.fail(name, expected, "an empty list")
    unknown = [v for v in values if v not in allowed]
    if unknown:
        _checks.fail(name, expected, repr(unknown[0]))
    return [a for a in allowed if a in values]


def _lengths_ok(lengths: object) -> list[int]:
    expected = "a non-empty list of positive integers"
    if isinstance(lengths, (str, bytes)) or not isinstance(lengths, Sequence):
        _checks.fail("scaling_lengths", expected, _checks.describe(lengths))
    if not lengths:
        _checks.fail("scaling_lengths", expected, "an empty list")
    for T in lengths:
        if isinstance(T, bool) or not isinstance(T, int) or T < 1:
            _checks.fail("scaling_lengths", expected, f"the entry {T!r}")
    return list(lengths)


def run(
    *,
    cells: Sequence[str] = CELLS,
    shapes: Sequence[str] | None = None,
    modes: Sequence[str] = MODES,
    directions: Sequence[str] = DIRECTIONS,
    rounds: int | None = None,
    quick: bool = False,
    memory: bool = True,
    scaling: bool = True,
    scaling_lengths: Sequence[int] | None = None,
    block_s: float | None = None,
    pause_s: float = PAUSE_S,
    against: Sequence[str] = ("torch",),
    rerun_noisy: bool = True,
    log: Callable[[str], None] = stderr,
) -> dict[str, Any]:
    """Run the benchmark and return its results as one JSON-ready dict (see bench/README.md).

    `against=("torch", "onnxruntime")` adds onnxruntime's inference on the same weights (the
    layer exported with rnnlab.onnx, torch's number of threads) to every inference row.

    `quick` shortens everything (fewer rounds of shorter blocks, S1 and S2 without the
    2-layer stack, memory for one configuration, shorter scaling lengths) wherever the
    corresponding argument is left None. Progress goes to `log`.

    `rerun_noisy`: each row whose calls spread widely (report.noisy) is timed once more at
    the end, and each library keeps the smaller of its two medians; the row records both
    attempts (`attempts`, `kept_attempt`). The rule reads each library's own calls alike,
    never the ratio.
    """
    cells = _subset(cells, "cells", CELLS + tuple(VARIANTS))
    variants = [c for c in cells if c in VARIANTS]
    cells = [c for c in cells if c in CELLS]
    shapes_given = shapes is not None
    shapes = _subset(
        shapes if shapes is not None else (QUICK_SHAPES if quick else tuple(SHAPES)),
        "shapes",
        tuple(SHAPES),
    )
    modes = _subset(modes, "modes", MODES)
    directions = _subset(directions, "directions", DIRECTIONS)
    against = _subset(against, "against", AGAINST)
    if "torch" not in against:
        _checks.fail("against", "a list with 'torch' (the reference) in it", repr(against))
    with_ort = "onnxruntime" in against
    if with_ort:
        try:
            import onnx  # noqa: F401
            import onnxruntime  # noqa: F401
        except ImportError as e:
            raise ImportError(ORT_MISSING) from e
    rounds = _checks.positive_int(
        rounds if rounds is not None else (QUICK_ROUNDS if quick else ROUNDS), "rounds"
    )
    if scaling_lengths is None:
        scaling_lengths = QUICK_SCALING_LENGTHS if quick else SCALING_LENGTHS
    scaling_lengths = _lengths_ok(scaling_lengths)
    if block_s is None:
        block_s = QUICK_BLOCK_S if quick else BLOCK_S
    for value, name in ((block_s, "block_s"), (pause_s, "pause_s")):
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not (math.isfinite(value) and value >= 0)
        ):
            _checks.fail(name, "a finite number of seconds ≥ 0", _checks.describe(value))
    timing = Timing(rounds, float(block_s), float(pause_s))
    torch = import_torch()
    if not torch.__version__.startswith("2.13"):
        log(f"warning: PyTorch {torch.__version__} is not the reference version 2.13")
    if memory and not memory_supported():
        log("warning: no /proc/self/clear_refs here; memory is not measured")
        memory = False
    started = time.time()
    load_start = os.getloadavg()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if load_start[0] > BUSY_LOAD:
        log(
            f"warning: load average {load_start[0]:.2f} on {cores} cores: other programs are "
            "running, and both libraries use every core, so these timings will be noisy"
        )
    log(
        f"rnnlab bench: load average {load_start[0]:.2f}; rnnlab's compiled loop "
        f"{'on' if host.fast_path_active() else 'off (NumPy loop)'}; measuring the GEMM peak ..."
    )
    host.warn_unequal_threads(torch, log)
    peaks, peak, forced, unforced = _machine_peak(torch, timing.pause_s, log)

    todo = [c for c in configs(cells, shapes, directions) if not (quick and c.layers > 1)]
    rows: list[dict[str, Any]] = []
    scratch = tempfile.TemporaryDirectory(prefix="rnnlab-bench-") if with_ort else None
    where = None if scratch is None else scratch.name
    for i, config in enumerate(todo):
        for row in _time_config(torch, config, modes, timing, peak, where):
            rows.append(row)
            log(f"[{i + 1}/{len(todo)}] " + _row_line(row))
    if rerun_noisy:
        _rerun_noisy(rows, torch, timing, peak, where, log)
    if scratch is not None:
        scratch.cleanup()

    if memory and "train" in modes:
        _fill_memory(rows, todo, quick, log)

    scaling_rows = scaling_study(torch, scaling_lengths, timing, memory, log) if scaling else []
    variant_shapes = shapes if shapes_given else [VARIANT_SHAPE]
    variant_rows = variant_study(variants, variant_shapes, modes, timing, log) if variants else []
    result = {
        "machine": {
            **host.machine_info(torch),
            "load_average_start": list(load_start),
            "load_average_end": list(os.getloadavg()),
        },
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "peak_gflops": peak,
        "numpy_gemm_gflops": peaks["numpy"],
        "torch_gemm_gflops": peaks["torch"],
        "mkl_gemm_gflops": peaks.get("mkl"),  # (None: rnnlab's products do not run on it)
        "forced_kernels": forced,
        "gemm_gflops_unforced": unforced,  # {"numpy": …, "torch": …}, or None: nothing forced
        "numpy_gemm_gflops_unforced": (unforced or {}).get("numpy"),  # (as before 2026-12-04)
        "method": {
            "rounds": timing.rounds,
            "block_s": timing.block_s,
            "pause_s": timing.pause_s,
            "quick": quick,
            "tolerance": TOLERANCE,
            "gemm_n": host.GEMM_N,
            "dtype": "float32",
            "loss": "mean squared error on all outputs",
            "ratio": "torch_ms / rnnlab_ms",
            "against": list(against),
            "ort_ratio": "ort_ms / rnnlab_ms (inference)",
        },
        "configs": rows,
        "summary": summarize(rows, scaling_rows),
        "scaling": scaling_rows,
        "variants": variant_rows,
        "elapsed_s": time.time() - started,
    }
    return result


def _machine_peak(
    torch: ModuleType, pause_s: float, log: Callable[[str], None]
) -> tuple[dict[str, float], float, dict[str, str], dict[str, float] | None]:
    """(both GEMM speeds, the machine's peak, the forcing variables set, both GEMM speeds
    without them or None), with the warning when a variable forces a BLAS kernel."""
    peaks = host.measured_peaks(torch, host.GEMM_N, pause_s)
    # the machine's measured peak: the fastest of the libraries' GEMMs (rnnlab's products
    # may run on MKL, faster than NumPy's OpenBLAS, so NumPy's alone would flatter rnnlab)
    peak = max(peaks.values())
    log(f"float32 GEMM {host.GEMM_N}^3: " + ", ".join(f"{k} {v:.0f} GFLOP/s"
                                                      for k, v in peaks.items()))
    forced = environment.forced_kernels()
    unforced = host.unforced_peaks(host.GEMM_N, torch.get_num_threads()) if forced else None
    if forced:
        said = ", ".join(f"{k}={v}" for k, v in forced.items())
        log(f"warning: {said} holds a BLAS to another kernel than this machine's best; "
            f"{gemm_with_and_without(peaks, unforced)}: unset it for a benchmark")
        peak = max([peak, *(unforced or {}).values()])  # ({}: the measuring child failed)
    return peaks, peak, forced, unforced


ATTEMPT_KEYS = ("torch_ms", "rnnlab_ms", "ratio", "rnnlab_stats_ms", "torch_stats_ms",
                "ort_ms", "ort_ratio", "ort_stats_ms")  # (onnxruntime's where the row has them)
SIDES = ("rnnlab", "torch", "ort")  # the sides a row may time ("ort": onnxruntime)


def _row(
    config: Config, mode: str, times: dict[str, Any], peak: float, max_err: float
) -> dict[str, Any]:
    """One configuration and mode's row of the report from the timed calls of both sides."""
    row = {
        "cell": config.cell,
        "shape": config.shape,
        "bidirectional": config.bidirectional,
        "layers": config.layers,
        "mode": mode,
        "torch_mem_mb": None,
        "rnnlab_mem_mb": None,
        "max_rel_err": max_err,
        "rnnlab_stats_ms": ms_stats(times["rnnlab"]),
        "torch_stats_ms": ms_stats(times["torch"]),
    }
    return _with_speeds(row, peak)


def _with_speeds(row: dict[str, Any], peak: float) -> dict[str, Any]:
    """`row` with what follows from its sides' median call times (each side's ms, the
    ratios, rnnlab's GFLOP/s and share of the peak, torch's GFLOP/s), in place."""
    for side in SIDES:
        stats = row.get(f"{side}_stats_ms")
        if stats is not None:
            row[f"{side}_ms"] = stats["median"]
    flops = step_flops(row_config(row), row["mode"])
    row["ratio"] = row["torch_ms"] / row["rnnlab_ms"]
    row["gflops"] = flops / (row["rnnlab_ms"] / 1e3) / 1e9
    row["peak_fraction"] = row["gflops"] / peak
    row["torch_gflops"] = flops / (row["torch_ms"] / 1e3) / 1e9
    if row.get("ort_stats_ms") is not None:
        row["ort_ratio"] = row["ort_ms"] / row["rnnlab_ms"]
    return row


def _time_config(
    torch: ModuleType, config: Config, modes: Sequence[str], timing: Timing, peak: float,
    ort_dir: str | None,
) -> list[dict[str, Any]]:
    """The rows of one configuration, a row per mode: the libraries checked against each
    other first, then timed in interleaved blocks (onnxruntime's inference beside them
    when `ort_dir`, a scratch directory for its model, is given)."""
    pair = make_pair(torch, config)
    errors = {"train": check_agreement(torch, pair, config.label)}
    if "infer" in modes:
        errors["infer"] = check_inference_agreement(torch, pair, config.label)
    ort = None
    if ort_dir is not None and "infer" in modes:
        ort = ort_step(pair, torch.get_num_threads(), ort_dir)
        ort_err = check_ort_agreement(pair, ort, config.label)
    rows = []
    for mode in modes:
        fns = {"rnnlab": rnnlab_step(pair, mode), "torch": torch_step(torch, pair, mode)}
        if ort is not None and mode == "infer":
            fns["onnxruntime"] = ort
        times = interleaved(fns, timing)
        row = _row(config, mode, times, peak, errors[mode])
        if "onnxruntime" in fns:
            row.update(ort_max_rel_err=ort_err, ort_stats_ms=ms_stats(times["onnxruntime"]))
            _with_speeds(row, peak)
        elif ort_dir is not None:
            row.update(ort_ms=None, ort_ratio=None, ort_max_rel_err=None, ort_stats_ms=None)
        rows.append(row)
    return rows


def _row_line(row: dict[str, Any]) -> str:
    config = row_config(row)
    return (
        f"{config.label:<18} {row['mode']:<5}  torch {row['torch_ms']:9.2f} ms  "
        f"rnnlab {row['rnnlab_ms']:9.2f} ms  {row['ratio']:5.2f}x"
        + (f"  onnxruntime {row['ort_ms']:9.2f} ms" if row.get("ort_ms") else "")
    )


def _rerun_noisy(
    rows: list[dict[str, Any]], torch: ModuleType, timing: Timing, peak: float,
    ort_dir: str | None, log: Callable[[str], None],
) -> None:  # fmt: skip
    """Time each noisy row once more, in place: each library keeps the smaller of its two
    medians, and the row keeps both attempts in `attempts`. Something else on the cores only
    ever slows calls, often for a few seconds: of two attempts minutes apart, the one with
    the smaller median is the less disturbed, for each library on its own, and the rule
    reads every library alike (neither the ratio nor the other library's calls)."""
    again = [i for i, row in enumerate(rows) if noisy(row)]
    if not again:
        return
    log(f"timing the {len(again)} noisy rows once more (each library keeps its smaller median)")
    for i in again:
        first = rows[i]
        second = _time_config(torch, row_config(first), [first["mode"]], timing, peak,
                              ort_dir)[0]  # fmt: skip
        rows[i] = _less_disturbed(first, second, peak)
        log("again " + _row_line(second) + f"  → kept {rows[i]['ratio']:5.2f}x")


def _less_disturbed(first: dict[str, Any], second: dict[str, Any], peak: float) -> dict[str, Any]:
    """The row of two attempts at one configuration and mode: each side's smaller median, and
    what follows from them (ratios, GFLOP/s); `attempts` holds both, `kept_attempt` which one
    each side's figures came from (1 or 2)."""
    row, kept = dict(first), {}
    for side in SIDES:
        a, b = first.get(f"{side}_stats_ms"), second.get(f"{side}_stats_ms")
        if a is None or b is None:
            continue
        use_second = b["median"] < a["median"]
        row[f"{side}_stats_ms"] = b if use_second else a
        kept[side] = 2 if use_second else 1
    _with_speeds(row, peak)
    row["attempts"] = [{k: r[k] for k in ATTEMPT_KEYS if k in r} for r in (first, second)]
    row["kept_attempt"] = kept
    return row


def _fill_memory(
    rows: list[dict[str, Any]], todo: list[Config], quick: bool, log: Callable[[str], None]
) -> None:
    """Each training row's peak extra memory of both sides (--quick: one configuration)."""
    wanted = todo
    if quick:
        first = Config(*QUICK_MEMORY)
        wanted = [first] if first in todo else todo[:1]
    for config in wanted:
        mb = {impl: measure_memory(impl, config)[0]["delta_mb"] for impl in ("rnnlab", "torch")}
        for row in rows:
            if row_config(row) == config and row["mode"] == "train":
                row["torch_mem_mb"], row["rnnlab_mem_mb"] = mb["torch"], mb["rnnlab"]
        log(f"memory {config.label:<18} torch {mb['torch']:7.1f} MB  rnnlab {mb['rnnlab']:7.1f} MB")
