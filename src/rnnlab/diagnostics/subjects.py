"""The subjects of `rnnlab gradflow`: a model with one batch of its task's data.

A subject is a run directory's trained model (any checkpoint) on its task's validation
sequences, a fresh model built from a task's defaults (with the cell, size and a W_hh scale
overridden), or, for the dynamics view, a bare 1- or 2-unit map h ← φ(W h + b).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from rnnlab import _checks, io
from rnnlab.diagnostics.model import split_model
from rnnlab.layers import Recurrent
from rnnlab.modules import Sequential, _Module

if TYPE_CHECKING:
    from rnnlab.train import Task, TrainConfig


class Trained(NamedTuple):
    """What the analyses of a model read from its subject (all given, unlike a bare map's)."""

    model: Sequential
    task: Task
    cfg: TrainConfig
    spec: dict
    x: np.ndarray
    y: np.ndarray


@dataclass
class Subject:
    """A model, the task it belongs to and one batch of that task's data, plus where they
    came from (for the summary). `task` and `cfg` are None for a bare dynamics map."""

    model: _Module | None  # the analyses read one recurrent layer in a Sequential
    task: Task | None
    cfg: TrainConfig | None
    x: np.ndarray | None
    y: np.ndarray | None
    lengths: np.ndarray | None
    source: dict
    spec: dict | None = None
    run_dir: Path | None = None
    map_args: dict = field(default_factory=dict)  # dynamics source: w, b, phi, range, iters
    # run source with --step S: the spectrum history ends at S (the weights analysed are S's;
    # later checkpoints are a future these weights did not have yet)
    until_step: int | None = None

    def trained(self) -> Trained:
        """The model, task, settings, description and batch of a subject with a model (the
        analyses of a model are not run on a bare map: rnnlab.diagnostics.analyses.applicable)."""
        m, task, cfg, spec, x, y = self.model, self.task, self.cfg, self.spec, self.x, self.y
        if m is None or task is None or cfg is None or spec is None or x is None or y is None:
            raise ValueError("a bare dynamics map has no model, task or data to analyse")
        if not isinstance(m, Sequential):  # (split_model refuses it in `applicable` first)
            _checks.fail("model", "a Sequential with one recurrent layer", _checks.describe(m))
        return Trained(m, task, cfg, spec, x, y)


def _validation_batch(task, n: int):
    """The first n validation sequences as the model sees them (reversed if it was trained
    on reversed input); a charlm task gets n windows of its validation text."""
    if hasattr(task, "split"):
        x, y, lengths = task.split("valid")
        x, y, lengths = task.prepare(x[:n], y[:n], None if lengths is None else lengths[:n])
        return x, y, lengths
    ids = task.ids["valid"]
    L = task.window
    n = min(n, (len(ids) - 1) // L)
    if n < 1:
        _checks.fail("task", f"validation text of more than {L} characters", f"{len(ids)}")
    xs = ids[: n * L].reshape(n, L).astype(np.int64)
    ys = ids[1 : n * L + 1].reshape(n, L).astype(np.int64)
    return xs, ys, None


# The settings gradflow takes as options: a task's or a model's check names the setting
# (`T`), the user typed the option (--T).
_OPTION_SETTINGS = ("T", "hidden", "layers", "seed", "cell", "forget_bias")


@contextlib.contextmanager
def _as_options() -> Iterator[None]:
    """A ValueError of a task's or model's check naming one of gradflow's options by its
    setting (`T` must be ...) names it as the option (`--T` must be ...)."""
    try:
        yield
    except ValueError as e:
        text = str(e)
        for name in _OPTION_SETTINGS:
            if text.startswith(f"`{name}` "):
                option = "--" + name.replace("_", "-")
                raise type(e)(f"`{option}`" + text[len(name) + 2 :]) from None
        raise


def _scale_recurrent(layer: Recurrent, scale: float) -> None:
    """W_hh ← scale·W_hh. A W_hh that no longer fits the model's float type is no model to
    analyse (every number computed from it is inf or NaN): refused, naming the option."""
    for name, v in layer.params.items():
        if name.startswith("weight_hh_"):
            # the cast to float32 may over- or underflow (an inf is refused, a 0 is an answer)
            with np.errstate(over="ignore", under="ignore"):
                scaled = (v * np.float64(scale)).astype(v.dtype)
            if not np.all(np.isfinite(scaled)):
                top = float(np.abs(v).max())
                _checks.fail(
                    "--init-scale",
                    f"a scale that keeps W_hh within {v.dtype} (below "
                    f"{float(np.finfo(v.dtype).max) / top:.3g} for this W_hh, whose largest "
                    f"entry is {top:.3g})",
                    f"{scale:g}",
                )
            v[...] = scaled


def cell_name(spec: dict) -> str:
    """The cell a model description (config.json's "model") names."""
    return spec["rnn"]["cell"]


def task_subject(
    task_name: str,
    *,
    cell=None,
    hidden=None,
    layers=None,
    bidirectional=False,
    T=None,
    seed=None,
    init_scale=None,
    forget_bias=None,
    batch: int = 32,
) -> Subject:
    """A freshly initialised model from a task's defaults (with the options overriding them)
    and the first `batch` sequences of the task's validation set."""
    from rnnlab import models, tasks
    from rnnlab.train import TrainConfig

    _checks.choice(task_name, "source", tasks.TASK_NAMES)
    if task_name in tasks.SEQ2SEQ_TASKS:
        _checks.fail("source", "a task of one recurrent network (what the diagnostics read)",
                     f"{task_name!r}, an encoder-decoder task")  # fmt: skip
    over = {"cell": cell, "hidden": hidden, "layers": layers, "T": T, "seed": seed}
    over["forget_bias"] = forget_bias
    over = {k: v for k, v in over.items() if v is not None}
    if bidirectional:
        over["bidirectional"] = True
    if "cell" in over:
        _checks.choice(over["cell"], "--cell", models.CELLS)
    if "T" in over and task_name not in ("adding", "copy", "temporal-order"):
        _checks.fail(
            "--T",
            "given only for the adding, copy and temporal-order tasks",
            f"--T {T} for the {task_name} task",
        )
    # what `rnnlab train` starts from: the task's defaults with its cell's and length's
    # (rnnlab.tasks.tuned: copy's LSTM forget bias 3, the IRNN's SGD learning rate)
    base = tasks.defaults_for(task_name, over.get("cell"), over.get("T"))
    with _as_options():
        cfg = TrainConfig.from_dict({**base, **over, "task": task_name}, source="options")
    if cfg.cell not in models.CELLS:
        _checks.fail("--cell", "one of " + ", ".join(models.CELLS), repr(cfg.cell))
    if forget_bias is not None and cfg.cell != "lstm":
        _checks.fail(
            "--forget-bias",
            "given only for an LSTM (it sets the forget gate's bias)",
            f"--cell {cfg.cell}",
        )
    with _as_options():
        task = tasks.make_task(cfg)
        spec = tasks.model_spec(cfg, task)
        model = tasks.build_model(spec, seed=cfg.seed)
    if init_scale is not None:
        _scale_recurrent(split_model(model)[1], init_scale)
    x, y, lengths = _validation_batch(task, batch)
    source = {
        "type": "task",
        "task": task_name,
        "cell": cfg.cell,
        "seed": cfg.seed,
        "init_scale": 1.0 if init_scale is None else float(init_scale),
        "forget_bias": cfg.forget_bias if cfg.cell == "lstm" else None,
        "step": 0,
    }
    return Subject(model, task, cfg, x, y, lengths, source, spec)


def run_subject(path, *, step: int | None = None, T=None, batch: int = 32) -> Subject:
    """A run directory's model (runs.load_checkpoint_model: the latest checkpoint's weights,
    the best after early stopping; or `step`'s) and the first `batch`
    sequences of its task's validation set (with `T`, at another sequence length)."""
    from rnnlab import runs, tasks

    run = io.open_run_dir(path)
    saved = io.checkpoint_steps(run)
    if step is not None and step not in saved:
        _checks.fail("--step", f"a saved step of '{run}' (saved: "
                     f"{', '.join(map(str, saved)) or 'none'})", str(step),
                     "Its checkpoints were removed: without --step, gradflow reads its "
                     "model.safetensors." if io.checkpoints_removed(run) else "")  # fmt: skip
    ckpt, cfg, model = runs.load_checkpoint_model(run, step)
    if getattr(model, "net", None) is not None:  # rnnlab.tasks.transduction.Trainee
        _checks.fail("run", "a run of one recurrent network (what the diagnostics read)",
                     f"a {cfg.task} run, an encoder-decoder")  # fmt: skip
    if T is not None:
        if cfg.task not in ("adding", "copy", "temporal-order"):
            _checks.fail(
                "--T",
                "given only for the adding, copy and temporal-order tasks",
                f"--T {T} for {_checks.a(cfg.task)} run",
            )
        cfg.T = _checks.positive_int(T, "--T")
    # an old charlm run's vocabulary is rebuilt and checked, as for evaluate
    with _as_options():
        task = tasks.make_task(cfg, runs.data_record(run, cfg, ckpt.config, ckpt.path))
    x, y, lengths = _validation_batch(task, batch)
    spec = ckpt.config["model"]
    source = {
        "type": "run",
        "run": str(run),
        "task": cfg.task,
        "cell": cell_name(spec),
        "seed": cfg.seed,
        "step": runs.model_step(ckpt, step),  # (after early stopping, the best weights')
        "checkpoints": io.checkpoint_steps(run),
    }
    return Subject(model, task, cfg, x, y, lengths, source, spec, run, until_step=step)


def _parse_matrix(text: str, name: str, shape: tuple[int, ...], form: str = "") -> np.ndarray:
    """`text` as an array of `shape`; `form` is what the message calls the expected text (the
    option's own letters: 'e,f' for --bias, 'lo,hi' for --range)."""
    rows = [r.split(",") for r in str(text).split(";")]
    try:
        a = np.array([[float(v) for v in r] for r in rows])
    except ValueError:
        a = None
    if a is None or a.size != math.prod(shape) or not np.all(np.isfinite(a)):
        want = form or ("'a,b;c,d' (a 2 × 2 matrix, rows split by ';')" if len(shape) == 2
                        else "'e,f'")  # fmt: skip
        _checks.fail(name, f"{want} of finite numbers", repr(text))
    return a.reshape(shape)


def parse_range(h_range: str) -> tuple[float, float]:
    """--range 'lo,hi' as (lo, hi), lo < hi."""
    lo_hi = _parse_matrix(h_range, "--range", (2,), "'lo,hi'")
    if not lo_hi[0] < lo_hi[1]:
        _checks.fail("--range", "'lo,hi' with lo < hi", repr(h_range))
    return float(lo_hi[0]), float(lo_hi[1])


def dynamics_subject(
    *, w=None, b=None, W=None, bias=None, phi="tanh", h_range="-2,2", iters: int = 200
) -> Subject:
    """A bare map h ← φ(w h + b) (1 unit: `w`, `b`) or h ← φ(W h + b) (2 units: `W` as
    'a,b;c,d', `bias` as 'e,f')."""
    one = w is not None or b is not None
    two = W is not None or bias is not None
    if one == two:
        _checks.fail(
            "--w",
            "given with --b (one unit), or --W with --bias (two units), for the dynamics source",
            "both forms" if one else "neither",
        )
    args: dict[str, object]
    if one:
        if w is None or b is None:
            _checks.fail(
                "--w" if w is None else "--b",
                "given (a 1-unit map needs both --w and --b)",
                "nothing",
            )
        args = {"w": float(w), "b": float(b)}
    else:
        if W is None or bias is None:
            _checks.fail(
                "--W" if W is None else "--bias",
                "given (a 2-unit map needs both --W and --bias)",
                "nothing",
            )
        args = {"w": _parse_matrix(W, "--W", (2, 2)), "b": _parse_matrix(bias, "--bias", (2,))}
    args.update(phi=phi, h_range=parse_range(h_range), n_iter=iters)
    source = {"type": "dynamics", "units": 1 if one else 2, "phi": phi}
    return Subject(None, None, None, None, None, None, source, map_args=args)
