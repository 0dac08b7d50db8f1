"""The benchmark anyone can rerun: rnnlab's RNN, LSTM and GRU layers against PyTorch 2.13's.

`rnnlab bench` (or `python -m rnnlab.bench`) times what a user calls, `layer.forward` and
`layer.backward`, beside torch.nn.RNN(tanh)/LSTM/GRU holding the SAME float32 weights, on four
shapes (S1–S4, below) in one and two directions plus a 2-layer S2 stack, for a training step
(forward over the sequence, mean squared error on every output, full BPTT to every parameter
gradient, no optimiser) and for inference (forward only; torch under inference_mode). Before
anything is timed, each configuration's outputs and gradients are compared with torch's, so
a wrong computation is never timed. The method is the one the project's performance research
settled on: warm-up, blocks of ~0.3 s calibrated per implementation, blocks of the two
implementations interleaved with 0.25 s pauses (thread pools busy-wait after a call and steal
the other's cores), the median over every call of N rounds, ratio = torch time / rnnlab time
(above 1: rnnlab is faster). It also reports achieved GFLOP/s against the machine's float32
GEMM speed measured at start-up, the peak extra memory of a training step (a fresh process
per implementation and configuration), and how a training step scales with the length T.

`--against torch,onnxruntime` adds onnxruntime's inference beside them: the same rnnlab
layer exported with rnnlab.onnx (ONNX's own RNN/LSTM/GRU operators, which onnxruntime runs
with its fused kernels), as many intra-op threads as torch uses, checked against rnnlab's
output before it is timed in the same interleaved blocks; ort ratio = ort ms / rnnlab ms.

PyTorch is imported only here, lazily: it is the reference, never a dependency of the library.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import ctypes.util
import datetime
import gc
import inspect
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from rnnlab import _checks, io, losses
from rnnlab.cells import ElmanCell, GRUCell, LSTMCell
from rnnlab.layers import Recurrent

TORCH_MISSING = "the benchmark needs PyTorch 2.13 as its reference: pip install 'rnnlab[bench]'"
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
VARIANTS = {
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
ORT_MISSING = "--against onnxruntime needs onnx and onnxruntime: pip install 'rnnlab[onnxruntime]'"
DIRECTIONS = ("uni", "bi")
GATES = {"rnn": 1, "lstm": 4, "gru": 3}
TWO_LAYER_SHAPE = "S2"  # the stacked configuration: 2 layers, one direction

ROUNDS = 7
BLOCK_S = 0.3  # each block runs ~this long, so a block holds many calls of a fast config
PAUSE_S = 0.25  # > OpenBLAS's ~0.12 s busy-wait after a call, so pools never overlap
QUICK_ROUNDS = 3
QUICK_BLOCK_S = 0.1
QUICK_SHAPES = ("S1", "S2")
QUICK_MEMORY = ("lstm", "S2", False, 1)  # the one configuration --quick measures memory for
SCALING_LENGTHS = (100, 1000, 10000)
QUICK_SCALING_LENGTHS = (100, 300, 1000)
SCALING_DIMS = (16, 32, 64)  # LSTM (B, I, H) of the scaling study
GEMM_N = 2048
BUSY_LOAD = 0.5  # a 1-minute load average above this at start-up gets a warning
NOISY_SPREAD = 2.0  # a row whose calls spread wider than this (p90 / p10) is marked noisy
# Largest relative difference |ours - torch| / max|torch| accepted over the outputs and every
# gradient. float32 results differ by 1e-6 to 3e-6 of the largest entry on S1-S4 and by ~1e-5
# at T = 10000 (the error of long float32 sums grows like √T); a wrong computation differs by
# order 1.
TOLERANCE = 1e-4
# glibc returns freed blocks above this size to the OS at once. Without it the threshold grows
# to 32 MB after the first large free, a step's arrays then come from the retained heap, and
# the peak of a step after warm-up is invisible to the process's peak RSS. (rnnlab.fast asks
# glibc to retain freed blocks for speed, and rnnlab.parallel pools large tapes and keeps
# scratch buffers; RNNLAB_MALLOC=system stops all three here for the same reason: the child
# measures what a step needs, not what a process keeps.)
CHILD_ENV = {"MALLOC_MMAP_THRESHOLD_": "131072", "RNNLAB_MALLOC": "system"}


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


def forward_flops(
    cell: str, B: int, T: int, I: int, H: int, layers: int = 1, bidirectional: bool = False
) -> float:
    """Multiply-add FLOPs of one forward pass, counting the matrix products only.

    Per layer k and direction, with G gates (RNN 1, GRU 3, LSTM 4) and I_0 = I, I_k = D·H:

        F_k = 2 · T · B · (I_k + H) · G · H

    A training step counts 3 F (forward, then the two products of backward: into the
    pre-activations' inputs and into the weights).
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
    return 3.0 * f if mode == "train" else f


# ------------------------------------------------------------------------------ the two sides
def import_torch():
    """PyTorch, or ImportError(TORCH_MISSING)."""
    try:
        import torch
    except ImportError as e:
        raise ImportError(TORCH_MISSING) from e
    return torch


@dataclass
class Pair:
    """rnnlab's layer and torch's module with the same weights, and one batch of data."""

    ours: Recurrent
    theirs: Any  # torch.nn.RNN | LSTM | GRU
    x: np.ndarray  # (B, T, I) float32
    y: np.ndarray  # (B, T, D·H) float32, the MSE target
    xt: Any  # torch views of x and y (shared memory)
    yt: Any


def make_pair(torch, config: Config, seed: int = 0) -> Pair:
    """Build both layers from one seed: rnnlab draws the weights, torch gets a copy.

    With torch None, only rnnlab's side (the memory child of rnnlab never imports torch).
    """
    B, T, I, H = config.dims
    D = 2 if config.bidirectional else 1
    rng = np.random.default_rng(seed)
    ours = Recurrent(
        CELL_TYPES[config.cell](),
        I,
        H,
        config.layers,
        bidirectional=config.bidirectional,
        dtype=np.float32,
        rng=rng,
    )
    x = rng.standard_normal((B, T, I), dtype=np.float32)
    y = rng.standard_normal((B, T, D * H), dtype=np.float32)
    if torch is None:
        return Pair(ours, None, x, y, None, None)
    torch_class = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[config.cell]
    theirs = torch_class(
        I,
        H,
        config.layers,
        batch_first=True,
        bidirectional=config.bidirectional,
        dtype=torch.float32,
    )
    theirs.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in ours.params.items()})
    return Pair(ours, theirs, x, y, torch.from_numpy(x), torch.from_numpy(y))


def rnnlab_step(pair: Pair, mode: str, checkpoint_every: int = 0) -> Callable[[], Any]:
    """What a user runs: forward; for training also the loss and the full backward."""
    layer, x, y = pair.ours, pair.x, pair.y
    if mode == "infer":  # as torch's inference_mode: no tape for a backward pass
        return lambda: layer.forward(x, grad=False)
    options = {"checkpoint_every": checkpoint_every} if checkpoint_every else {}
    if getattr(layer, "recurrent_dropout", 0) or any(getattr(layer, "zoneout", ())):
        options["rng"] = np.random.default_rng(0)  # the masks' draws

    def train():
        f = layer.forward(x, training=True, **options)
        _, d_output = losses.mean_squared_error(f.output, y)
        return f.output, layer.backward(f, d_output, input_grad=False).params

    return train


def torch_step(torch, pair: Pair, mode: str) -> Callable[[], Any]:
    """The same step in torch. The input needs no gradient (both skip it)."""
    module, xt, yt = pair.theirs, pair.xt, pair.yt
    params = list(module.parameters())
    if mode == "infer":

        def infer():
            with torch.inference_mode():
                return module(xt)[0]

        return infer
    mse = torch.nn.functional.mse_loss

    def train():
        for p in params:
            p.grad = None  # fresh gradients each step, as rnnlab's backward returns
        out = module(xt)[0]
        mse(out, yt).backward()
        return out

    return train


def ort_step(pair: Pair, threads: int, where) -> Callable[[], Any]:
    """Inference by onnxruntime on the same weights: rnnlab's layer exported with
    rnnlab.onnx (the standard RNN/LSTM/GRU operators; no lengths input, as the batch has no
    padding) into the directory `where`, run with `threads` intra-op threads (torch's), the
    same work a deployment would hand it. Its output is checked against rnnlab's first."""
    try:
        import onnxruntime as ort

        from rnnlab import onnx
    except ImportError as e:
        raise ImportError(ORT_MISSING) from e
    path = onnx.export(pair.ours, os.path.join(where, "layer.onnx"), lengths=False)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    feeds = {"x": pair.x}
    return lambda: session.run(["y"], feeds)[0]


def check_ort_agreement(pair: Pair, step: Callable[[], Any], label: str) -> float:
    """onnxruntime's output against rnnlab's inference; RuntimeError above TOLERANCE."""
    err = relative_error(step(), pair.ours.forward(pair.x, grad=False).output)
    if not err <= TOLERANCE:
        raise RuntimeError(
            f"{label}: rnnlab and onnxruntime disagree on the outputs (relative error "
            f"{err:.2e} > {TOLERANCE:g}); not timing a wrong computation."
        )
    return err


def relative_error(a: np.ndarray, b: np.ndarray) -> float:
    """max |a − b| / max |b| (0 when both are all zeros)."""
    scale = float(np.abs(b).max())
    diff = float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max())
    return diff / scale if scale > 0 else diff


def check_agreement(torch, pair: Pair, label: str, checkpoint_every: int = 0) -> float:
    """Compare one training step's outputs and every gradient with torch's.

    Returns the largest relative error; raises RuntimeError above TOLERANCE so that a wrong
    computation is never timed.
    """
    output, grads = rnnlab_step(pair, "train", checkpoint_every)()
    torch_step(torch, pair, "train")()
    out_t = pair.theirs(pair.xt)[0].detach().numpy()
    worst, where = relative_error(output, out_t), "the outputs"
    for name, p in pair.theirs.named_parameters():
        err = relative_error(grads[name], p.grad.numpy())
        if err > worst:
            worst, where = err, f"the gradient of {name}"
    if not worst <= TOLERANCE:  # also catches NaN
        raise RuntimeError(
            f"{label}: rnnlab and PyTorch disagree on {where} (relative error {worst:.2e} > "
            f"{TOLERANCE:g}); not timing a wrong computation."
        )
    return worst


# ------------------------------------------------------------------------------ timing
def _call_seconds(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


@dataclass(frozen=True)
class Timing:
    """How each comparison is timed: `rounds` rounds of blocks of ~`block_s` seconds per
    implementation, with a pause of `pause_s` after every block."""

    rounds: int = ROUNDS
    block_s: float = BLOCK_S
    pause_s: float = PAUSE_S


def interleaved(
    fns: dict[str, Callable[[], Any]], timing: Timing = Timing()
) -> dict[str, np.ndarray]:
    """Seconds per call of each function, from `rounds` rounds of interleaved blocks.

    Each function is warmed up (two calls: the first may compile or allocate) and gets a
    block size n = max(1, round(block_s / t_call)) from a third, timed call. A round runs one
    block of each function, rotating who goes first, with a pause after every block. Every
    call is timed on its own.
    """
    names = list(fns)
    n = {}
    for name in names:  # no pause in between: only the block sizes come from these calls
        fns[name]()
        fns[name]()
        n[name] = max(1, round(timing.block_s / max(_call_seconds(fns[name]), 1e-9)))
    time.sleep(timing.pause_s)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(timing.rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            fn, out = fns[name], times[name]
            for _ in range(n[name]):
                out.append(_call_seconds(fn))
            time.sleep(timing.pause_s)
    return {name: np.array(t) for name, t in times.items()}


def _ms_stats(seconds: np.ndarray) -> dict[str, float]:
    ms = seconds * 1e3
    return {
        "median": float(np.median(ms)),
        "mean": float(ms.mean()),
        "p10": float(np.percentile(ms, 10)),
        "p90": float(np.percentile(ms, 90)),
        "calls": int(ms.size),
    }


def gemm_gflops(matmul: Callable[[], Any], n: int, repeats: int = 5) -> float:
    """GFLOP/s of the best of `repeats` (n×n)·(n×n) products after one warm-up: 2n³ / t."""
    matmul()
    best = min(_call_seconds(matmul) for _ in range(repeats))
    return 2.0 * n**3 / best / 1e9


def measured_peaks(torch, n: int = GEMM_N, pause_s: float = PAUSE_S) -> dict[str, float]:
    """float32 GEMM speed of numpy's BLAS (what rnnlab's products run on) and of torch's."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    c = np.empty((n, n), np.float32)
    numpy_peak = gemm_gflops(lambda: np.matmul(a, b, out=c), n)
    time.sleep(pause_s)
    at, bt, ct = torch.from_numpy(a), torch.from_numpy(b), torch.empty(n, n)
    torch_peak = gemm_gflops(lambda: torch.mm(at, bt, out=ct), n)
    time.sleep(pause_s)
    return {"numpy": numpy_peak, "torch": torch_peak}


def unforced_numpy_peak(n: int = GEMM_N) -> float | None:
    """NumPy's float32 GEMM speed in a child process without the environment variables that
    hold a BLAS to another kernel (rnnlab.info.FORCING), when any is set here; else None. The
    machine's peak is its fastest kernel's, not the one this environment forces."""
    from rnnlab.info import FORCING

    if not any(k in os.environ for k in FORCING):
        return None
    env = {k: v for k, v in os.environ.items() if k not in FORCING}
    code = (
        "import numpy as np, time\n"
        f"n = {n}\n"
        "r = np.random.default_rng(0)\n"
        "a = r.standard_normal((n, n), dtype=np.float32); b = a.copy(); c = np.empty_like(a)\n"
        "np.matmul(a, b, out=c); best = 1e9\n"
        "for _ in range(5):\n"
        "    t = time.perf_counter(); np.matmul(a, b, out=c)\n"
        "    best = min(best, time.perf_counter() - t)\n"
        "print(2.0 * n**3 / best / 1e9)\n"
    )
    try:
        done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                              text=True, timeout=120)  # fmt: skip
        return float(done.stdout.strip().splitlines()[-1])
    except (OSError, ValueError, IndexError, subprocess.TimeoutExpired):
        return None


# ------------------------------------------------------------------------------ memory
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
    tensors (PyTorch's GRU and RNN) reused the warm-up step's heap unseen: its measured peak
    was below the bytes of its own saved tensors (GRU S2: 11.5 MB measured, 15.0 MB saved)."""
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


def _dropping_grads(step: Callable[[], Any], module) -> Callable[[], Any]:
    """`step`, then the module's gradients dropped, so that none outlives its step."""

    def run():
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
    code = "import sys; from rnnlab.bench import memory_child; sys.exit(memory_child(sys.argv[1]))"
    done = subprocess.run(
        [sys.executable, "-c", code, json.dumps(spec)],
        capture_output=True,
        text=True,
        env={**os.environ, **CHILD_ENV},
        timeout=600,
    )
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"the memory measurement of {impl} {config.label} failed: {last}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def memory_supported() -> bool:
    """Peak RSS can be reset only through /proc/self/clear_refs (Linux)."""
    return os.path.exists("/proc/self/clear_refs") and os.path.exists("/proc/self/status")


# ------------------------------------------------------------------------------ machine
def _cpuinfo() -> dict[str, Any]:
    info: dict[str, Any] = {
        "model": platform.processor() or platform.machine(),
        "mhz": None,
        "flags": [],
    }
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            key, _, value = line.partition(":")
            key, value = key.strip(), value.strip()
            if key == "model name":
                info["model"] = value
            elif key == "cpu MHz" and info["mhz"] is None:
                info["mhz"] = float(value)
            elif key == "flags" and not info["flags"]:
                info["flags"] = value.split()
    return info


def fma_peak(cpu: dict[str, Any], cores: int) -> dict[str, Any] | None:
    """The FMA-throughput notion of peak, for context only: it assumes 2 FMA ports per core
    and the nominal clock of /proc/cpuinfo (turbo clocks run higher, AVX-512 ones lower)."""
    flags = set(cpu["flags"])
    lanes = 16 if "avx512f" in flags else 8 if {"avx2", "fma"} <= flags else None
    if lanes is None or not cpu["mhz"]:
        return None
    gflops = cores * 2 * lanes * 2 * cpu["mhz"] / 1e3
    return {
        "gflops": gflops,
        "assumes": f"{cores} cores x 2 FMA ports x {lanes} float32 lanes "
        f"x 2 flop x {cpu['mhz']:.0f} MHz (nominal)",
    }


def _version(package: str) -> str | None:
    from rnnlab._blaschoice import version

    return version(package)


def _blas_info() -> Any:
    """The BLAS libraries loaded in this process (threadpoolctl), or numpy's build config."""
    try:
        import threadpoolctl
    except ImportError:
        config = np.show_config(mode="dicts")
        return {"numpy_build": config.get("Build Dependencies", {}).get("blas")}
    keep = (
        "user_api",
        "internal_api",
        "prefix",
        "version",
        "num_threads",
        "threading_layer",
        "architecture",
        "filepath",
    )
    return [{k: lib.get(k) for k in keep} for lib in threadpoolctl.threadpool_info()]


def fast_path_active() -> bool:
    """Whether rnnlab's compiled time loop (the `fast` extra) runs, else the NumPy loop."""
    try:
        from rnnlab import fast
    except ImportError:
        return False
    return bool(fast.available())


def loop_setup() -> dict[str, Any]:
    """How rnnlab's loops run here: the BLAS of their per-step products and the threads."""
    from rnnlab import parallel

    setup: dict[str, Any] = {"threads": parallel.num_threads(), "split": parallel.enabled()}
    if fast_path_active():
        from rnnlab.fast import blas

        setup["kernel_blas"] = blas.NAME
    return setup


def machine_info(torch) -> dict[str, Any]:
    cpu = _cpuinfo()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    interesting = {"avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16", "amx_tile"}
    env = {
        k: os.environ[k]
        for k in (
            "OMP_NUM_THREADS",
            "OPENBLAS_NUM_THREADS",
            "MKL_NUM_THREADS",
            "OPENBLAS_CORETYPE",
            "OPENBLAS_L2_SIZE",
            "MKL_ENABLE_INSTRUCTIONS",
            "MKL_CBWR",
            "MKL_DEBUG_CPU_TYPE",
            "RNNLAB_NO_NUMBA",
            "RNNLAB_NUM_THREADS",
            "RNNLAB_BLAS",
            "RNNLAB_MALLOC",
        )
        if k in os.environ
    }
    from rnnlab import _blaschoice

    choice = _blaschoice.choice()
    return {
        "cpu_vendor": _blaschoice.cpu()["vendor"],
        "cpu_model": cpu["model"],
        "loops_blas_choice": {"blas": choice.blas, "why": choice.why},
        "cpu_mhz_nominal": cpu["mhz"],
        "cpu_flags": sorted(interesting & set(cpu["flags"])),
        "cores": cores,
        "logical_cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch.__version__,
        "numba": _version("numba"),
        "onnxruntime": _version("onnxruntime"),
        "scipy": _version("scipy"),
        "rnnlab": _version("rnnlab"),
        "rnnlab_fast_path": fast_path_active(),
        "rnnlab_loops": loop_setup(),
        "mkl": _version("mkl"),
        "torch_threads": torch.get_num_threads(),
        "torch_mkldnn": bool(torch.backends.mkldnn.is_available()),
        "blas": _blas_info(),
        "env": env,
        "fma_peak": fma_peak(cpu, cores or 1),
    }


# ------------------------------------------------------------------------------ the run
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


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


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
    log: Callable[[str], None] = _stderr,
) -> dict[str, Any]:
    """Run the benchmark and return its results as one JSON-ready dict (see bench/README.md).

    `against=("torch", "onnxruntime")` adds onnxruntime's inference on the same weights (the
    layer exported with rnnlab.onnx, torch's number of threads) to every inference row.

    `quick` shortens everything (fewer rounds of shorter blocks, S1 and S2 without the
    2-layer stack, memory for one configuration, shorter scaling lengths) wherever the
    corresponding argument is left None. Progress goes to `log`.
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
        f"{'on' if fast_path_active() else 'off (NumPy loop)'}; measuring the GEMM peak ..."
    )
    peaks = measured_peaks(torch, GEMM_N, timing.pause_s)
    # the machine's measured peak: the faster of the two libraries' GEMMs (rnnlab's products
    # may run on MKL, faster than NumPy's OpenBLAS, so NumPy's alone would flatter rnnlab)
    peak = max(peaks["numpy"], peaks["torch"])
    log(
        f"float32 GEMM {GEMM_N}^3: numpy {peaks['numpy']:.0f} GFLOP/s, "
        f"torch {peaks['torch']:.0f} GFLOP/s"
    )
    from rnnlab.info import FORCING

    forced = {k: os.environ[k] for k in FORCING if k in os.environ}
    unforced = unforced_numpy_peak(GEMM_N) if forced else None
    if forced:
        said = ", ".join(f"{k}={v}" for k, v in forced.items())
        log(f"warning: {said} holds a BLAS to another kernel than this machine's best; "
            f"numpy's GEMM reads {peaks['numpy']:.0f} GFLOP/s with it and "
            + (f"{unforced:.0f}" if unforced else "(not measured)") + " without it: "
            "unset it for a benchmark")  # fmt: skip
        if unforced:
            peak = max(peak, unforced)

    todo = [c for c in configs(cells, shapes, directions) if not (quick and c.layers > 1)]
    rows: list[dict[str, Any]] = []
    scratch = tempfile.TemporaryDirectory(prefix="rnnlab-bench-") if with_ort else None
    for i, config in enumerate(todo):
        pair = make_pair(torch, config)
        max_err = check_agreement(torch, pair, config.label)
        ort = None
        if with_ort and "infer" in modes:
            ort = ort_step(pair, torch.get_num_threads(), scratch.name)
            ort_err = check_ort_agreement(pair, ort, config.label)
        for mode in modes:
            fns = {"rnnlab": rnnlab_step(pair, mode), "torch": torch_step(torch, pair, mode)}
            if ort is not None and mode == "infer":
                fns["onnxruntime"] = ort
            times = interleaved(fns, timing)
            ours, theirs = _ms_stats(times["rnnlab"]), _ms_stats(times["torch"])
            flops = step_flops(config, mode)
            gflops = flops / (ours["median"] / 1e3) / 1e9
            row = {
                "cell": config.cell,
                "shape": config.shape,
                "bidirectional": config.bidirectional,
                "layers": config.layers,
                "mode": mode,
                "torch_ms": theirs["median"],
                "rnnlab_ms": ours["median"],
                "ratio": theirs["median"] / ours["median"],
                "gflops": gflops,
                "peak_fraction": gflops / peak,
                "torch_gflops": flops / (theirs["median"] / 1e3) / 1e9,
                "torch_mem_mb": None,
                "rnnlab_mem_mb": None,
                "max_rel_err": max_err,
                "rnnlab_stats_ms": ours,
                "torch_stats_ms": theirs,
            }
            if "onnxruntime" in fns:
                o = _ms_stats(times["onnxruntime"])
                row.update(ort_ms=o["median"], ort_ratio=o["median"] / ours["median"],
                           ort_max_rel_err=ort_err, ort_stats_ms=o)  # fmt: skip
            elif with_ort:
                row.update(ort_ms=None, ort_ratio=None, ort_max_rel_err=None, ort_stats_ms=None)
            rows.append(row)
            log(
                f"[{i + 1}/{len(todo)}] {config.label:<18} {mode:<5}  "
                f"torch {row['torch_ms']:9.2f} ms  rnnlab {row['rnnlab_ms']:9.2f} ms  "
                f"{row['ratio']:5.2f}x"
                + (f"  onnxruntime {row['ort_ms']:9.2f} ms" if row.get("ort_ms") else "")
            )
        del pair, ort
    if scratch is not None:
        scratch.cleanup()

    if memory and "train" in modes:
        wanted = todo
        if quick:
            first = Config(*QUICK_MEMORY)
            wanted = [first] if first in todo else todo[:1]
        for config in wanted:
            mb = {impl: measure_memory(impl, config)[0]["delta_mb"] for impl in ("rnnlab", "torch")}
            for row in rows:
                if _row_config(row) == config and row["mode"] == "train":
                    row["torch_mem_mb"], row["rnnlab_mem_mb"] = mb["torch"], mb["rnnlab"]
            log(
                f"memory {config.label:<18} torch {mb['torch']:7.1f} MB  "
                f"rnnlab {mb['rnnlab']:7.1f} MB"
            )

    scaling_rows = scaling_study(torch, scaling_lengths, timing, memory, log) if scaling else []
    variant_shapes = shapes if shapes_given else [VARIANT_SHAPE]
    variant_rows = variant_study(variants, variant_shapes, modes, timing, log) if variants else []
    result = {
        "machine": {
            **machine_info(torch),
            "load_average_start": list(load_start),
            "load_average_end": list(os.getloadavg()),
        },
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "peak_gflops": peak,
        "numpy_gemm_gflops": peaks["numpy"],
        "torch_gemm_gflops": peaks["torch"],
        "forced_kernels": forced,
        "numpy_gemm_gflops_unforced": unforced,
        "method": {
            "rounds": timing.rounds,
            "block_s": timing.block_s,
            "pause_s": timing.pause_s,
            "quick": quick,
            "tolerance": TOLERANCE,
            "gemm_n": GEMM_N,
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


def variant_study(
    variants: Sequence[str],
    shapes: Sequence[str],
    modes: Sequence[str],
    timing: Timing,
    log: Callable[[str], None] = _stderr,
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
                lstm, ours = _ms_stats(times["lstm"]), _ms_stats(times["variant"])
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


def _row_config(row: dict[str, Any]) -> Config:
    return Config(row["cell"], row["shape"], row["bidirectional"], row["layers"])


def scaling_study(
    torch,
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
        check_agreement(torch, pair, f"lstm scaling T={T}")
        fns = {"rnnlab": rnnlab_step(pair, "train"), "torch": torch_step(torch, pair, "train")}
        if has_checkpoint:
            check_agreement(torch, pair, f"lstm scaling T={T} checkpoint_every={k}", k)
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


def summarize(rows: list[dict[str, Any]], scaling_rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The headline numbers: geometric means and minima of the ratios, the LSTM S4 training
    peak fraction, torch's memory over rnnlab's, and the scaling exponents in T."""
    train = [r for r in rows if r["mode"] == "train"]
    single = [r for r in train if r["layers"] == 1]
    infer = [r for r in rows if r["mode"] == "infer"]

    def lowest(rs):
        if not rs:
            return None, None
        r = min(rs, key=lambda r: r["ratio"])
        return r["ratio"], _row_config(r).label

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


# ------------------------------------------------------------------------------ reports
def _fmt(value: float | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def _kind(row: dict[str, Any]) -> str:
    return _row_config(row).label.split(" ", 2)[2]


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
    stats = (row["rnnlab_stats_ms"], row["torch_stats_ms"])
    return any(st["p90"] > NOISY_SPREAD * st["p10"] for st in stats)


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


def _plain(head: list[str], body: list[list[str]], text_columns: int) -> list[str]:
    """Aligned columns: the first `text_columns` to the left, numbers to the right."""
    widths = [max(len(x) for x in col) for col in zip(head, *body, strict=True)]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i < text_columns else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    return [line(head), "  ".join("-" * w for w in widths)] + [line(r) for r in body]


def format_table(result: dict[str, Any]) -> str:
    """The terminal report: one row per configuration and mode, the scaling study, a summary."""
    m = result["machine"]
    lines = [
        f"{m['cpu_model']}, {m['cores']} cores; numpy {m['numpy']}, torch {m['torch']}; "
        f"float32 GEMM {result['numpy_gemm_gflops']:.0f} GFLOP/s (numpy), "
        f"{result['torch_gemm_gflops']:.0f} (torch), peak = the faster; {result['date']}",
    ]
    if result.get("forced_kernels"):
        lines.append(_forced_text(result))
    lines.append("")
    lines += _plain(*_table_rows(result), text_columns=4)
    if result["scaling"]:
        B, I, H = SCALING_DIMS
        lines += [
            "",
            f"LSTM training step against T (B={B}, I={I}, H={H}; "
            "checkpointed: checkpoint_every = round(√T))",
        ]
        lines += _plain(*_scaling_table(result), text_columns=0)
    if result.get("variants"):
        lines += ["", "LSTM variants against rnnlab's plain LSTM (same process, interleaved)"]
        lines += _plain(*_variant_table(result), text_columns=3)
    return "\n".join(lines + [""] + summary_lines(result))


def _forced_text(result: dict[str, Any]) -> str:
    """The header's warning where the environment forced a BLAS kernel during the run."""
    said = ", ".join(f"{k}={v}" for k, v in result["forced_kernels"].items())
    unforced = result.get("numpy_gemm_gflops_unforced")
    without = f"{unforced:.0f} GFLOP/s without it" if unforced else "not measured without it"
    with_it = f"{result['numpy_gemm_gflops']:.0f} GFLOP/s with it"
    return f"warning: run with {said}, which forces a BLAS kernel: GEMM {with_it}, {without}"


def _markdown(head: list[str], body: list[list[str]], text_columns: int) -> list[str]:
    rule = "|" + "---|" * text_columns + "---:|" * (len(head) - text_columns)
    return ["| " + " | ".join(head) + " |", rule] + ["| " + " | ".join(r) + " |" for r in body]


def _loops_text(setup: dict[str, Any]) -> str:
    blas_name = setup.get("kernel_blas", "NumPy (no compiled loop)")
    split = "batch split over" if setup.get("split") else "no split;"
    return f"per-step products on {blas_name}; {split} {setup.get('threads', '?')} threads"


def format_markdown(result: dict[str, Any]) -> str:
    """The same report as markdown (bench/results/latest.md)."""
    m, meth = result["machine"], result["method"]
    lines = [
        "# rnnlab vs PyTorch on CPU",
        "",
        f"- machine: {m.get('cpu_vendor') or ''} {m['cpu_model']}, {m['cores']} cores; "
        f"{m['platform']}",
        f"- versions: numpy {m['numpy']}, torch {m['torch']}, numba {m['numba']}, "
        f"rnnlab {m['rnnlab']} (compiled loop {'on' if m['rnnlab_fast_path'] else 'off'})",
        f"- rnnlab's loops: {_loops_text(m.get('rnnlab_loops', {}))}",
        f"- date: {result['date']}; load average at start {m['load_average_start'][0]:.2f}",
        f"- float32 GEMM {meth['gemm_n']}^3: numpy {result['numpy_gemm_gflops']:.0f} GFLOP/s, "
        f"torch {result['torch_gemm_gflops']:.0f} GFLOP/s (the peak: the faster of the two)",
        f"- method: {meth['rounds']} rounds of interleaved {meth['block_s']} s blocks with "
        f"{meth['pause_s']} s pauses, median per call; float32, batch_first, same weights",
    ]
    if result.get("forced_kernels"):
        lines.append(f"- {_forced_text(result)}")
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


# ------------------------------------------------------------------------------ command line
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rnnlab bench",
        description="Time rnnlab's RNN/LSTM/GRU against PyTorch 2.13 on this CPU (same weights, "
        "float32): a training step and inference, GFLOP/s, memory and scaling in T.",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help=f"{QUICK_ROUNDS} rounds of {QUICK_BLOCK_S} s blocks, shapes "
        f"{'+'.join(QUICK_SHAPES)}, memory for one config (under two minutes)",
    )
    p.add_argument(
        "--cells",
        default=",".join(CELLS),
        help="comma-separated (default: %(default)s); the LSTM's variants "
        + ", ".join(VARIANTS)
        + " are timed against rnnlab's plain LSTM (at S2 unless --shapes)",
    )
    p.add_argument(
        "--shapes",
        default=None,
        help="comma-separated from "
        + ", ".join(f"{k}={v}" for k, v in SHAPES.items())
        + " as (B, T, I, H) (default: all)",
    )
    p.add_argument(
        "--modes", default=",".join(MODES), help="comma-separated (default: %(default)s)"
    )
    p.add_argument(
        "--directions", default=",".join(DIRECTIONS), help="comma-separated (default: %(default)s)"
    )
    p.add_argument(
        "--against",
        default="torch",
        help="comma-separated from torch, onnxruntime (default: %(default)s); onnxruntime "
        "adds its inference on the same weights (exported with rnnlab.onnx, torch's threads)",
    )
    p.add_argument(
        "--rounds",
        type=int,
        default=None,
        help=f"interleaved rounds (default: {ROUNDS}, --quick: {QUICK_ROUNDS})",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object on stdout (the table goes to stderr)",
    )
    p.add_argument("--out", metavar="FILE", help="also write the JSON to FILE")
    p.add_argument("--markdown", metavar="FILE", help="also write the report as markdown to FILE")
    p.add_argument(
        "--no-memory",
        dest="memory",
        action="store_false",
        help="skip the memory measurements (subprocesses)",
    )
    p.add_argument(
        "--no-scaling", dest="scaling", action="store_false", help="skip the scaling study in T"
    )
    p.add_argument(
        "--scaling-lengths",
        default=None,
        help="comma-separated sequence lengths of the scaling study (default: "
        + ",".join(map(str, SCALING_LENGTHS))
        + "; --quick: "
        + ",".join(map(str, QUICK_SCALING_LENGTHS))
        + ")",
    )
    p.add_argument(
        "--block",
        type=float,
        default=None,
        metavar="SECONDS",
        help=f"length of a timing block (default: {BLOCK_S}, --quick: {QUICK_BLOCK_S})",
    )
    p.add_argument(
        "--pause",
        type=float,
        default=PAUSE_S,
        metavar="SECONDS",
        help="pause after every block, so that the other library's threads stop spinning "
        "(default: %(default)s)",
    )
    return p


def _split(text: str) -> list[str]:
    return [s.strip() for s in text.split(",") if s.strip()]


def _lengths(text: str) -> list[int] | str:
    try:
        return [int(s) for s in _split(text)]
    except ValueError:
        return text  # run() names the argument and what came


def main(argv: list[str] | None = None) -> int:
    """`rnnlab bench [options]`: run, print the table (or JSON), return the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, or a malformed option (argparse printed why)
        return int(e.code or 0)
    try:
        result = run(
            cells=_split(args.cells),
            shapes=None if args.shapes is None else _split(args.shapes),
            modes=_split(args.modes),
            directions=_split(args.directions),
            rounds=args.rounds,
            quick=args.quick,
            memory=args.memory,
            scaling=args.scaling,
            scaling_lengths=None
            if args.scaling_lengths is None
            else _lengths(args.scaling_lengths),
            block_s=args.block,
            pause_s=args.pause,
            against=_split(args.against),
        )
    except (ValueError, ImportError) as e:
        print(f"rnnlab bench: error: {e}", file=sys.stderr)
        return 2
    except RuntimeError as e:  # a disagreement with torch, or a failed memory child
        print(f"rnnlab bench: error: {e}", file=sys.stderr)
        return 1
    text = json.dumps(result, indent=1)
    if args.out:
        io.atomic_write_text(args.out, text + "\n")
    if args.markdown:
        io.atomic_write_text(args.markdown, format_markdown(result))
    if args.json:
        _stderr(format_table(result))
        print(text)
    else:
        print(format_table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
