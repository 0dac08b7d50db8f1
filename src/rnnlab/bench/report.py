"""What a run prints and writes: the terminal table, the same report as markdown, and the
summary lines both end with.
"""

from __future__ import annotations

import math
import sys
from typing import Any

from rnnlab.bench.configs import SCALING_DIMS, row_config

NOISY_SPREAD = 2.0  # a row whose calls spread wider than this (p90 / p10) is marked noisy


def stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _fmt(value: float | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def _kind(row: dict[str, Any]) -> str:
    return row_config(row).label.split(" ", 2)[2]


def _table_rows(result: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    head = [
        "cell",
        "shape",
        "layout",
        "mode",
        "torch ms",
        "rnnlab ms",
        "ratio",
        "GFLOP/s",
        "peak",
        "torch MB",
        "rnnlab MB",
    ]
    with_ort = any("ort_ms" in r for r in result["configs"])
    if with_ort:
        head[7:7] = ["onnxruntime ms", "ort ratio"]
    body = []
    for r in result["configs"]:
        cells = [
            r["cell"],
            r["shape"],
            _kind(r),
            r["mode"],
            _fmt(r["torch_ms"], ".2f"),
            _fmt(r["rnnlab_ms"], ".2f"),
            _fmt(r["ratio"], ".2f") + ("x*" if noisy(r) else "x"),
            _fmt(r["gflops"], ".0f"),
            _fmt(100 * r["peak_fraction"], ".0f") + "%",
            _fmt(r["torch_mem_mb"], ".1f"),
            _fmt(r["rnnlab_mem_mb"], ".1f"),
        ]
        if with_ort:
            ratio = r.get("ort_ratio")
            cells[7:7] = [_fmt(r.get("ort_ms"), ".2f"), "—" if ratio is None else f"{ratio:.2f}x"]
        body.append(cells)
    return head, body


def noisy(row: dict[str, Any]) -> bool:
    """Whether the calls of either side spread widely (p90 > NOISY_SPREAD · p10): a sign that
    something else used the cores during the measurement."""
    return spread(row) > NOISY_SPREAD


def spread(row: dict[str, Any]) -> float:
    """The widest of the sides' spread of calls, p90 / p10 (infinite for a p10 of 0):
    rnnlab's, PyTorch's and onnxruntime's where the row timed it (its ratio is reported too)."""
    stats = [row["rnnlab_stats_ms"], row["torch_stats_ms"]]
    if row.get("ort_stats_ms") is not None:
        stats.append(row["ort_stats_ms"])
    return max(float(st["p90"]) / float(st["p10"]) if st["p10"] > 0 else math.inf
               for st in stats)  # fmt: skip


def summary_lines(result: dict[str, Any]) -> list[str]:
    s, lines = result["summary"], []
    if s["train_configs"]:
        lines.append(
            f"training: rnnlab faster in {s['train_faster']}/{s['train_configs']} configs; "
            f"geometric-mean ratio {_fmt(s['train_ratio_geomean'], '.2f')}x over the "
            f"{s['train_ratio_geomean_configs']} one-layer configs; min "
            f"{_fmt(s['train_ratio_min'], '.2f')}x ({s['train_ratio_min_config']})"
        )
    if s["infer_configs"]:
        lines.append(
            f"inference: rnnlab faster in {s['infer_faster']}/{s['infer_configs']} configs; "
            f"geometric-mean ratio {_fmt(s['infer_ratio_geomean'], '.2f')}x; min "
            f"{_fmt(s['infer_ratio_min'], '.2f')}x ({s['infer_ratio_min_config']})"
        )
    if s.get("infer_ort_configs"):
        lines.append(
            f"inference against onnxruntime (same weights, torch's threads): rnnlab faster in "
            f"{s['infer_ort_faster']}/{s['infer_ort_configs']} configs; geometric-mean ratio "
            f"{_fmt(s['infer_ort_ratio_geomean'], '.2f')}x (ort ms / rnnlab ms)"
        )
    if s["lstm_s4_train_peak_fraction"] is not None:
        lines.append(
            f"LSTM S4 training: {s['lstm_s4_train_gflops']:.0f} GFLOP/s = "
            f"{100 * s['lstm_s4_train_peak_fraction']:.0f}% of the measured float32 GEMM peak "
            f"({result['peak_gflops']:.0f} GFLOP/s)"
        )
    if s["memory_configs"]:
        lines.append(
            f"memory of a training step: torch needs {s['memory_ratio_geomean']:.2f}x rnnlab's "
            f"extra memory (geometric mean over {s['memory_configs']} configs; min "
            f"{s['memory_ratio_min']:.2f}x)"
        )
    if s["scaling_time_exponent"] is not None:
        line = f"scaling in T: rnnlab time ∝ T^{s['scaling_time_exponent']:.2f}"
        if s["scaling_memory_exponent"] is not None:
            line += f", memory ∝ T^{s['scaling_memory_exponent']:.2f}"
        if s["scaling_checkpoint_memory_exponent"] is not None:
            line += f" (checkpointed: T^{s['scaling_checkpoint_memory_exponent']:.2f})"
        lines.append(line)
    lines.append(
        "ratio = torch ms / rnnlab ms (above 1: rnnlab is faster); peak = rnnlab "
        "GFLOP/s / measured GEMM peak"
    )
    flagged = sum(noisy(r) for r in result["configs"])
    again = sum("attempts" in r for r in result["configs"])
    if again:
        lines.append(
            f"{again} noisy rows were timed twice, each library's smaller median kept (the "
            "JSON has both attempts)"
        )
    if flagged:
        lines.append(
            f"* {flagged} of {len(result['configs'])} rows were noisy (p90 > "
            f"{NOISY_SPREAD:g} x p10 of the calls): rerun them on an idle machine"
        )
    return lines


def _scaling_table(result: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    head = [
        "T",
        "torch ms",
        "rnnlab ms",
        "ratio",
        "rnnlab µs/step",
        "checkpointed ms",
        "torch MB",
        "rnnlab MB",
        "checkpointed MB",
    ]
    body = [
        [
            str(r["T"]),
            _fmt(r["torch_ms"], ".2f"),
            _fmt(r["rnnlab_ms"], ".2f"),
            _fmt(r["ratio"], ".2f") + "x",
            _fmt(r["rnnlab_us_per_step"], ".1f"),
            _fmt(r["rnnlab_checkpoint_ms"], ".2f"),
            _fmt(r["torch_mem_mb"], ".1f"),
            _fmt(r["rnnlab_mem_mb"], ".1f"),
            _fmt(r["rnnlab_checkpoint_mem_mb"], ".1f"),
        ]
        for r in result["scaling"]
    ]
    return head, body


def _variant_table(result: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    head = ["variant", "shape", "mode", "plain LSTM ms", "variant ms", "× the plain LSTM"]
    body = [
        [
            r["cell"],
            r["shape"],
            r["mode"],
            f"{r['lstm_ms']:.2f}",
            f"{r['variant_ms']:.2f}",
            f"{r['ratio_to_lstm']:.2f}",
        ]  # fmt: skip
        for r in result.get("variants", [])
    ]
    return head, body


def aligned(head: list[str], body: list[list[str]], text_columns: int) -> list[str]:
    """Aligned columns: the first `text_columns` to the left, numbers to the right."""
    widths = [max(len(x) for x in col) for col in zip(head, *body, strict=True)]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i < text_columns else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    return [line(head), "  ".join("-" * w for w in widths)] + [line(r) for r in body]


def _cpu_text(m: dict[str, Any]) -> str:
    """The CPU as the JSON names it: vendor, model, and the family and model number that tell
    one generation from another where the model name is generic (results from before these
    fields: vendor and model only)."""
    text = f"{m.get('cpu_vendor') or ''} {m['cpu_model']}".strip()
    if m.get("cpu_family") is not None or m.get("cpu_model_number") is not None:
        text += f" (family {m.get('cpu_family')}, model {m.get('cpu_model_number')})"
    return text


def format_table(result: dict[str, Any]) -> str:
    """The terminal report: one row per configuration and mode, the scaling study, a summary."""
    m = result["machine"]
    lines = [
        f"{_cpu_text(m)}, {m['cores']} cores; numpy {m['numpy']}, torch {m['torch']}; "
        f"float32 GEMM {result['numpy_gemm_gflops']:.0f} GFLOP/s (numpy), "
        f"{result['torch_gemm_gflops']:.0f} (torch)" + (
            f", {result['mkl_gemm_gflops']:.0f} (mkl)" if result.get("mkl_gemm_gflops") else "")
        + f", peak = the fastest; {result['date']}",
    ]
    if result.get("forced_kernels"):
        lines.append(forced_text(result))
    lines.append("")
    lines += aligned(*_table_rows(result), text_columns=4)
    if result["scaling"]:
        B, I, H = SCALING_DIMS
        lines += [
            "",
            f"LSTM training step against T (B={B}, I={I}, H={H}; "
            "checkpointed: checkpoint_every = round(√T))",
        ]
        lines += aligned(*_scaling_table(result), text_columns=0)
    if result.get("variants"):
        lines += ["", "LSTM variants against rnnlab's plain LSTM (same process, interleaved)"]
        lines += aligned(*_variant_table(result), text_columns=3)
    return "\n".join(lines + [""] + summary_lines(result))


def forced_text(result: dict[str, Any]) -> str:
    """The header's warning where the environment forced a BLAS kernel during the run."""
    said = ", ".join(f"{k}={v}" for k, v in result["forced_kernels"].items())
    peaks = {"numpy": result["numpy_gemm_gflops"], "torch": result.get("torch_gemm_gflops")}
    if result.get("mkl_gemm_gflops"):
        peaks["mkl"] = result["mkl_gemm_gflops"]
    unforced = result.get("gemm_gflops_unforced")
    if unforced is None and result.get("numpy_gemm_gflops_unforced"):  # a result before torch's
        unforced = {"numpy": result["numpy_gemm_gflops_unforced"]}
    return (f"warning: run with {said}, which forces a BLAS kernel: "
            f"{gemm_with_and_without(peaks, unforced)}")


def gemm_with_and_without(peaks: dict[str, Any], unforced: dict[str, float] | None) -> str:
    """Each library's GEMM speed with the forcing variables and without them, e.g. "GEMM numpy
    203 GFLOP/s with it, 201 without; torch 77 with it, 190 without": a variable may slow one
    library and not the other (MKL_* PyTorch's MKL, OPENBLAS_* NumPy's OpenBLAS)."""
    parts = []
    for lib in ("numpy", "torch", "mkl"):
        if peaks.get(lib) is None:
            continue
        without = (unforced or {}).get(lib)
        parts.append(f"{lib} {peaks[lib]:.0f} GFLOP/s with it, "
                     + (f"{without:.0f} without" if without else "not measured without it"))
    return "GEMM " + "; ".join(parts)


def _markdown(head: list[str], body: list[list[str]], text_columns: int) -> list[str]:
    rule = "|" + "---|" * text_columns + "---:|" * (len(head) - text_columns)
    return ["| " + " | ".join(head) + " |", rule] + ["| " + " | ".join(r) + " |" for r in body]


def _loops_text(setup: dict[str, Any]) -> str:
    blas_name = setup.get("kernel_blas", "NumPy (no compiled loop)")
    if setup.get("tiles"):
        blas_name = f"rnnlab's tiles where a weight fits them, else {blas_name}"
    split = "batch split over" if setup.get("split") else "no split;"
    large = f"large products on {setup['large_blas']}; " if setup.get("large_blas") else ""
    spin = setup.get("spin_seconds")
    waiting = (f", each waiting busily {spin * 1e3:g} ms for its next part" if spin
               else ", asleep between parts" if setup.get("split") and spin == 0 else "")
    return (f"per-step products on {blas_name}; {large}{split} "
            f"{setup.get('threads', '?')} threads{waiting}")  # fmt: skip


def _source_text(m: dict[str, Any]) -> str:
    """ " at commit abc1234" (", with uncommitted changes"), or "" where the run's rnnlab
    came from no git checkout or the result predates the field."""
    source = m.get("rnnlab_source")
    if not source:
        return ""
    return f" at commit {source['commit'][:7]}" + (
        ", with uncommitted changes" if source["modified"] else "")


def format_markdown(result: dict[str, Any]) -> str:
    """The same report as markdown (bench/results/latest.md)."""
    m, meth = result["machine"], result["method"]
    lines = [
        "# rnnlab vs PyTorch on CPU",
        "",
        f"- machine: {_cpu_text(m)}, {m['cores']} cores; "
        f"{m['platform']}",
        f"- versions: numpy {m['numpy']}, torch {m['torch']}, numba {m['numba']}, "
        f"rnnlab {m['rnnlab']}{_source_text(m)} "
        f"(compiled loop {'on' if m['rnnlab_fast_path'] else 'off'})",
        f"- rnnlab's loops: {_loops_text(m.get('rnnlab_loops', {}))}; PyTorch's threads: "
        f"{m.get('torch_threads', '?')}",
        f"- date: {result['date']}; load average at start {m['load_average_start'][0]:.2f}"
        + (f", at the end {m['load_average_end'][0]:.2f}" if m.get("load_average_end") else ""),
        f"- float32 GEMM {meth['gemm_n']}^3: numpy {result['numpy_gemm_gflops']:.0f} GFLOP/s, "
        f"torch {result['torch_gemm_gflops']:.0f} GFLOP/s" + (
            f", the `mkl` package's {result['mkl_gemm_gflops']:.0f} GFLOP/s"
            if result.get("mkl_gemm_gflops") else "") + " (the peak: the fastest)",
        f"- method: {meth['rounds']} rounds of interleaved {meth['block_s']} s blocks with "
        f"{meth['pause_s']} s pauses, median per call; float32, batch_first, same weights",
    ]
    if result.get("forced_kernels"):
        lines.append(f"- {forced_text(result)}")
    lines.append("")
    lines += _markdown(*_table_rows(result), text_columns=4)
    if result["scaling"]:
        B, I, H = SCALING_DIMS
        lines += ["", f"LSTM training step against T (B={B}, I={I}, H={H}):", ""]
        lines += _markdown(*_scaling_table(result), text_columns=0)
    if result.get("variants"):
        lines += ["", "LSTM variants against rnnlab's plain LSTM (same process, interleaved):", ""]
        lines += _markdown(*_variant_table(result), text_columns=3)
    lines += [""] + [f"- {s}" for s in summary_lines(result)]
    return "\n".join(lines) + "\n"
