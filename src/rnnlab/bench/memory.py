"""The peak extra memory of a training step, measured in a fresh process per implementation
and configuration so that neither library's imports or allocations count against the other.

Linux only: the peak resident size can be reset only through /proc/self/clear_refs.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import json
import math
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from typing import Any

from rnnlab.bench import environment
from rnnlab.bench.configs import Config
from rnnlab.bench.runners import import_torch, make_pair, rnnlab_step, torch_step


def _status_kb(field_name: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    raise OSError(f"/proc/self/status has no {field_name}")


def _reset_peak_rss() -> None:
    """Make VmHWM (peak RSS) restart from the current RSS (Linux ≥ 4.0)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _release_free_heap() -> None:
    """Give the heap's free memory back to the OS (glibc's malloc_trim), so that memory a
    step's small arrays used, freed in the warm-up step and still held by the heap, counts
    again when the next step touches it. Without this a layer built of many small per-step
    tensors (PyTorch's GRU and RNN) reused the warm-up step's heap unseen, and its measured
    peak came out below the bytes of its own saved tensors (bench/README.md, "Memory")."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing retained to release
        pass


def peak_extra_mb(step: Callable[[], Any], repeats: int = 3) -> dict[str, float]:
    """The peak memory `step` needs beyond what the process holds between steps: one step to
    warm up, then the peak RSS over `repeats` steps less the RSS before them (Linux; run it
    in a process started with CHILD_ENV, so that large blocks are not retained either)."""
    step()
    gc.collect()
    _release_free_heap()
    _reset_peak_rss()
    base = _status_kb("VmRSS")
    for _ in range(repeats):
        step()
    peak = _status_kb("VmHWM")
    return {"baseline_mb": base / 1024, "peak_mb": peak / 1024, "delta_mb": (peak - base) / 1024}


def _dropping_grads(step: Callable[[], Any], module: Any) -> Callable[[], Any]:
    """`step`, then the module's gradients dropped, so that none outlives its step."""

    def run() -> Any:
        out = step()
        module.zero_grad(set_to_none=True)
        return out

    return run


def memory_child(spec_json: str) -> int:
    """Run in a fresh process: print the peak extra MB of 3 training steps at each length.

    spec: {"impl": "rnnlab" | "torch", "cell", "shape", "bidirectional", "layers",
    "lengths": [T, ...] or null, "checkpoint": bool}. For each length, in order: set up, then
    peak_extra_mb (warm up, release the free heap, reset the peak RSS, run 3 steps).
    """
    spec = json.loads(spec_json)
    torch = import_torch() if spec["impl"] == "torch" else None
    lengths = spec["lengths"] or [None]
    out = []
    for T in lengths:
        config = Config(spec["cell"], spec["shape"], spec["bidirectional"], spec["layers"], T)
        pair = make_pair(torch, config)
        if torch is None:
            k = round(math.sqrt(config.dims[1])) if spec["checkpoint"] else 0
            step = rnnlab_step(pair, "train", k)
        else:  # count the gradients as rnnlab's are: made afresh by each step
            step = _dropping_grads(torch_step(torch, pair, "train"), pair.theirs)
        out.append({"T": config.dims[1], **peak_extra_mb(step)})
        del pair, step
        gc.collect()
    print(json.dumps(out))
    return 0


def measure_memory(
    impl: str, config: Config, lengths: Sequence[int] | None = None, checkpoint: bool = False
) -> list[dict[str, float]]:
    """Peak extra memory of a training step, measured in a fresh Python process."""
    spec = {
        "impl": impl,
        "cell": config.cell,
        "shape": config.shape,
        "bidirectional": config.bidirectional,
        "layers": config.layers,
        "lengths": list(lengths) if lengths else None,
        "checkpoint": checkpoint,
    }
    code = (
        "import sys; from rnnlab.bench.memory import memory_child; "
        "sys.exit(memory_child(sys.argv[1]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, json.dumps(spec)],
        capture_output=True,
        text=True,
        env=environment.memory_child(),
        timeout=600,
    )
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"the memory measurement of {impl} {config.label} failed: {last}")
    rows: list[dict[str, float]] = json.loads(done.stdout.strip().splitlines()[-1])
    return rows


def memory_supported() -> bool:
    """Peak RSS can be reset only through /proc/self/clear_refs (Linux)."""
    return os.path.exists("/proc/self/clear_refs") and os.path.exists("/proc/self/status")
