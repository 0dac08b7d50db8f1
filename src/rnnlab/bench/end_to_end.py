"""`rnnlab bench --end-to-end`: one character language model trained for a fixed number of
steps by rnnlab's Trainer and by the plain PyTorch loop a user would write, in one process,
from the same initial weights on the same batches.

The layer benchmark times one layer's forward and backward; a user pays for a whole step:
the embedding, two LSTM layers, the linear readout, softmax cross-entropy over every token,
clipping by global norm and Adam's update. Both loss curves are kept and compared step by
step, so the two times are of two runs that compute the same training, not merely the same
shapes. The rnnlab side is what `rnnlab train charlm` runs (tasks.make_task, model_spec,
build_model, Trainer.train_step, carried state between windows included); the torch side is
nn.Embedding, nn.LSTM, nn.Linear, F.cross_entropy, clip_grad_norm_ and torch.optim.Adam,
with the recurrent state carried (detached) exactly where the Trainer carries it.
"""

from __future__ import annotations

import datetime
import math
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from rnnlab import _checks, tasks
from rnnlab.bench import host
from rnnlab.bench.report import aligned, stderr
from rnnlab.bench.runners import import_torch
from rnnlab.bench.timing import PAUSE_S
from rnnlab.export import torch_state_dict
from rnnlab.layers import Recurrent
from rnnlab.modules import Embedding, Linear, Sequential
from rnnlab.tasks.text import CharLM
from rnnlab.train import TrainConfig, Trainer

STEPS = 20
WARMUP_STEPS = 3
BLOCK_STEPS = 5  # timed steps of one library before the other runs its block
# Largest relative difference of the two loss curves at equal steps, max_s |a_s − b_s| / |b_s|.
# Both runs start from the same float32 weights, but float32 sums in different orders differ
# in their last bits, and Adam's update m / (√v + ε) amplifies a relative change of a tiny
# gradient element into a change of its step; the curves therefore drift apart slowly. Over
# the first steps measured drift stays far below this bound; a different model, loss or update
# (a wrong gradient, the wrong clipping) differs at the first step by orders of magnitude more.
# See bench/README.md, "End to end", for the measurements behind it.
TOLERANCE = 1e-4


@dataclass(frozen=True)
class Model:
    """The character LM of issue #21: embedding, LSTM stack, linear readout, batch × window."""

    embed: int = 64
    hidden: int = 256
    layers: int = 2
    batch: int = 32
    window: int = 128
    lr: float = 2e-3  # TrainConfig's default for Adam
    clip_at: float = 1.0
    seed: int = 0


def rnnlab_trainer(model: Model, run_dir: Path, steps: int) -> Trainer:
    """A Trainer built as `rnnlab train charlm` builds one (the built-in corpus). Its gradient
    log is set past the last step: that record is bookkeeping for metrics.jsonl, not training,
    and the torch loop keeps none."""
    cfg = TrainConfig(task="charlm", cell="lstm", hidden=model.hidden, layers=model.layers,
                      embed=model.embed, batch_size=model.batch, seq_len=model.window,
                      optimizer="adam", lr=model.lr, clip="global_norm", clip_at=model.clip_at,
                      steps=steps, seed=model.seed, grad_log_every=steps + 1)  # fmt: skip
    cfg.validate()
    task = tasks.make_task(cfg)
    spec = tasks.model_spec(cfg, task)
    return Trainer(tasks.build_model(spec, seed=cfg.seed), task, cfg, run_dir, spec=spec,
                   quiet=True)  # fmt: skip


def _loss_step(trainer: Trainer) -> Callable[[int], float]:
    """`step(s)`: the trainer's training step s, returning its loss."""

    def step(s: int) -> float:
        loss = trainer.train_step(s)[0]
        assert loss is not None  # (None for a window past every sequence's end: not charlm's)
        return loss

    return step


def _corpus(trainer: Trainer) -> str:
    """The charlm task's description of its corpus."""
    task = trainer.task
    assert isinstance(task, CharLM)  # (rnnlab_trainer's task)
    return task.describe_data()


def torch_loop(torch: ModuleType, trainer: Trainer) -> Callable[[int], float]:
    """The plain PyTorch training step on the trainer's weights (copied by name) and batches:
    `step(s)` trains on batch s and returns its loss."""
    nn, F = torch.nn, torch.nn.functional
    model = trainer.model
    assert isinstance(model, Sequential)  # (rnnlab_trainer's: charlm's Embedding, LSTM, Linear)
    embedding, lstm, linear = model.modules
    assert isinstance(embedding, Embedding) and isinstance(lstm, Recurrent)
    assert isinstance(linear, Linear)
    modules = nn.ModuleDict({
        "0": nn.Embedding(embedding.num_embeddings, embedding.embedding_dim),
        "1": nn.LSTM(lstm.input_size, lstm.hidden_size, lstm.num_layers, batch_first=True),
        "2": nn.Linear(linear.in_features, linear.out_features),
    })  # fmt: skip
    weights = {k: torch.from_numpy(v.copy()) for k, v in torch_state_dict(model).items()}
    modules.load_state_dict(weights, strict=True)
    params = list(modules.parameters())
    cfg = trainer.cfg
    opt = torch.optim.Adam(params, lr=cfg.lr)
    task = trainer.task
    carried: list[Any] = [None]  # the LSTM's (h, c) after the last step

    def step(s: int) -> float:
        batch = task.batch(s, np.random.default_rng([cfg.seed, s]))
        x = torch.from_numpy(np.ascontiguousarray(batch.x, dtype=np.int64))
        y = torch.from_numpy(np.ascontiguousarray(batch.y, dtype=np.int64))
        opt.zero_grad(set_to_none=True)
        out, (h, c) = modules["1"](modules["0"](x), carried[0] if batch.carry else None)
        logits = modules["2"](out)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        loss.backward()
        nn.utils.clip_grad_norm_(params, cfg.clip_at)
        opt.step()
        carried[0] = (h.detach(), c.detach())
        return float(loss.item())

    return step


def _timed(step: Callable[[int], Any], s: int) -> tuple[Any, float, float]:
    """(step's result, wall seconds, CPU seconds of this process)."""
    w0, c0 = time.perf_counter(), time.process_time()
    out = step(s)
    return out, time.perf_counter() - w0, time.process_time() - c0


def _stats(seconds: list[float]) -> dict[str, float]:
    a = np.asarray(seconds)
    return {"median": float(np.median(a)), "p10": float(np.percentile(a, 10)),
            "p90": float(np.percentile(a, 90)), "min": float(a.min()), "max": float(a.max()),
            "steps": int(a.size)}  # fmt: skip


def max_relative_difference(ours: list[float], theirs: list[float]) -> float:
    """max over steps of |ours − theirs| / |theirs| (NaN anywhere gives NaN)."""
    a, b = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    return float(np.max(np.abs(a - b) / np.abs(b)))


def run(
    *,
    steps: int = STEPS,
    warmup: int = WARMUP_STEPS,
    model: Model = Model(),
    pause_s: float = PAUSE_S,
    log: Callable[[str], None] = stderr,
) -> dict[str, Any]:
    """Train both for `warmup` untimed then `steps` timed steps, in blocks of BLOCK_STEPS steps
    alternating between the libraries with a pause after each block (the timing method of the
    layer benchmark, with whole training steps); return the JSON-ready result."""
    steps = _checks.positive_int(steps, "steps")
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        _checks.fail("warmup_steps", "an integer ≥ 0", _checks.describe(warmup))
    if (
        isinstance(pause_s, bool)
        or not isinstance(pause_s, (int, float))
        or not (math.isfinite(pause_s) and pause_s >= 0)
    ):
        _checks.fail("pause_s", "a finite number of seconds ≥ 0", _checks.describe(pause_s))
    torch = import_torch()
    host.warn_unequal_threads(torch, log)
    started = time.time()
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="rnnlab-bench-") as where:
        trainer = rnnlab_trainer(model, Path(where), warmup + steps)
        sides = {"rnnlab": _loss_step(trainer), "torch": torch_loop(torch, trainer)}
        log(
            f"rnnlab bench --end-to-end: load average {load_start[0]:.2f}; {warmup} warm-up and "
            f"{steps} timed steps of {_corpus(trainer)}"
        )
        losses: dict[str, list[float]] = {name: [] for name in sides}
        wall: dict[str, list[float]] = {name: [] for name in sides}
        cpu: dict[str, list[float]] = {name: [] for name in sides}
        for name, step in sides.items():
            for s in range(warmup):
                losses[name].append(step(s))
            time.sleep(pause_s)
        if warmup:
            _agree_or_stop(losses, "the warm-up steps")
        for first in range(warmup, warmup + steps, BLOCK_STEPS):
            block = range(first, min(first + BLOCK_STEPS, warmup + steps))
            order = list(sides) if (first - warmup) // BLOCK_STEPS % 2 == 0 else list(sides)[::-1]
            for name in order:
                for s in block:
                    loss, w, c = _timed(sides[name], s)
                    losses[name].append(loss)
                    wall[name].append(w)
                    cpu[name].append(c)
                time.sleep(pause_s)
            log(f"steps {block.start + 1}-{block.stop}: rnnlab loss {losses['rnnlab'][-1]:.4f}, "
                f"torch {losses['torch'][-1]:.4f}")  # fmt: skip
        machine = host.machine_info(torch)
    per_side: dict[str, dict[str, Any]] = {
        name: {"wall_s": _stats(wall[name]), "cpu_s": _stats(cpu[name]), "losses": losses[name]}
        for name in sides
    }
    difference = max_relative_difference(losses["rnnlab"], losses["torch"])
    return {
        "machine": {
            **machine,
            "load_average_start": list(load_start),
            "load_average_end": list(os.getloadavg()),
        },  # fmt: skip
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "end_to_end": {
            "model": asdict(model),
            "data": _corpus(trainer),
            "steps": steps,
            "warmup_steps": warmup,
            "block_steps": BLOCK_STEPS,
            "pause_s": pause_s,
            **per_side,
            "ratio_wall": per_side["torch"]["wall_s"]["median"]
            / per_side["rnnlab"]["wall_s"]["median"],
            "ratio_cpu": per_side["torch"]["cpu_s"]["median"]
            / per_side["rnnlab"]["cpu_s"]["median"],
            "ratio": "torch median / rnnlab median (above 1: rnnlab is faster)",
            "max_rel_loss_diff": difference,
            "tolerance": TOLERANCE,
            "losses_agree": bool(difference <= TOLERANCE),
        },
        "elapsed_s": time.time() - started,
    }


def _agree_or_stop(losses: dict[str, list[float]], where: str) -> None:
    """RuntimeError when the curves already differ beyond TOLERANCE: not timing a wrong run."""
    difference = max_relative_difference(losses["rnnlab"], losses["torch"])
    if not difference <= TOLERANCE:
        raise RuntimeError(
            f"end to end: rnnlab's and PyTorch's losses disagree over {where} (relative "
            f"difference {difference:.2e} > {TOLERANCE:g}); not timing a wrong computation."
        )


def format_report(result: dict[str, Any]) -> str:
    """The terminal report: the host line, seconds per step of both, the ratio, both curves."""
    m, e = result["machine"], result["end_to_end"]
    mo = e["model"]
    choice = m["loops_blas_choice"]
    lines = [
        f"{m.get('cpu_vendor') or ''} {m['cpu_model']}, {m['cores']} cores; numpy {m['numpy']}, "
        f"torch {m['torch']} ({m['torch_threads']} threads); rnnlab's loops on "
        f"{'tiles, else ' if m['rnnlab_loops'].get('tiles') else ''}"
        f"{choice['blas']} ({choice['why']}), "
        + (f"large products on {choice['large']}, " if choice.get("large") else "")
        + f"{m['rnnlab_loops'].get('threads', '?')} threads; "
        f"{result['date']}",
        f"character LM: embedding {mo['embed']}, {mo['layers']}-layer LSTM {mo['hidden']}, "
        f"linear, softmax cross-entropy (mean), Adam lr {mo['lr']:g}, clip by global norm "
        f"{mo['clip_at']:g}; batch {mo['batch']} x {mo['window']}; {e['data']}",
        "",
    ]
    head = ["", "wall s/step", "p10", "p90", "CPU s/step", "p10", "p90"]
    body = [
        [name, *(f"{e[name][k][q]:.3f}" for k in ("wall_s", "cpu_s") for q in
                 ("median", "p10", "p90"))]
        for name in ("rnnlab", "torch")
    ]  # fmt: skip
    lines += aligned(head, body, text_columns=1)
    lines += [
        "",
        f"ratio torch / rnnlab per step: {e['ratio_wall']:.2f}x wall, {e['ratio_cpu']:.2f}x CPU "
        f"(medians over {e['steps']} steps after {e['warmup_steps']} warm-up; above 1: rnnlab "
        "is faster)",
        f"loss curves: max relative difference {e['max_rel_loss_diff']:.2e} over "
        f"{e['warmup_steps'] + e['steps']} steps ("
        + ("within" if e["losses_agree"] else "ABOVE")
        + f" the tolerance {e['tolerance']:g})",
        "step  rnnlab loss  torch loss",
    ]
    for s, (a, b) in enumerate(zip(e["rnnlab"]["losses"], e["torch"]["losses"], strict=True)):
        lines.append(f"{s + 1:>4}  {a:11.6f}  {b:10.6f}")
    return "\n".join(lines)
