"""The training loop: batches, truncated BPTT with carried state, clipping, validation, early
stopping, checkpoints with exact resume, progress and a metrics log.

Determinism comes from one rule: every random draw of step s (its batch, its dropout masks)
comes from a Generator seeded by (seed, s). So a run resumed from a checkpoint at step s
draws exactly what the uninterrupted run drew, and the weights come out bit for bit the same.
The only state carried from one step to the next besides weights and optimizer moments is
the recurrent state of truncated BPTT, and the checkpoint stores it too.

A task (rnnlab.tasks) supplies the data and the loss; the Trainer knows nothing of text or
digits. What a task must provide is the `Task` protocol below.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import signal
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn, Protocol, TextIO, TypedDict

import numpy as np

from rnnlab import _checks, io, optim
from rnnlab.fast import parallel
from rnnlab.layers import Backward, Forward, takes_overwrite
from rnnlab.progress import Progress


@dataclass
class Batch:
    """One step's data. `carry`: this window continues the previous step's sequences, so the
    recurrent state carries over (truncated BPTT); gradients stop at the window's edge."""

    x: np.ndarray
    y: np.ndarray
    lengths: np.ndarray | None = None
    carry: bool = False
    items: int = 0  # tokens / sequences in the batch, for throughput
    # Truncated BPTT over sequences of different lengths: the rows whose sequence still has
    # steps in this window (None: all). A finished row keeps the batch's shape with one
    # padding step (a layer refuses zero-length rows); the loss leaves it out.
    active: np.ndarray | None = None


class Trainee(Protocol):
    """What the Trainer trains: a module (rnnlab.layers.Module) whose weights it also loads
    (early stopping's best, a checkpoint's). A model with `wants_targets` set is passed the
    batch's targets and the teacher-forcing probability as `targets=` and `teacher=`. The
    tasks' evaluation passes `grad=False` (no backward follows: no tape need be kept)."""

    params: dict[str, np.ndarray]

    def forward(
        self, x: Any, *, lengths: Any = ..., state: Any = ..., training: bool = ...,
        rng: Any = ..., grad: bool = ...,
    ) -> Forward: ...

    def backward(
        self, f: Forward, d_output: Any, d_state: Any = ..., *, input_grad: bool = ...,
        overwrite_d_output: bool = ...,
    ) -> Backward: ...

    def load_state_dict(self, state: dict[str, Any], strict: bool = ...) -> None: ...


class Task(Protocol):
    name: str
    metric: str  # the validation metric that early stopping and "best" follow
    higher_is_better: bool

    def batch(self, step: int, rng: np.random.Generator) -> Batch: ...

    def loss(self, output: np.ndarray, batch: Batch) -> tuple[float, np.ndarray]: ...

    def evaluate(self, model: Trainee, split: str) -> dict[str, Any]: ...


GradientLog = Callable[
    [Trainee, Batch, dict[str, np.ndarray] | None, dict[str, np.ndarray], bool],
    dict[str, Any] | None,
]
"""A `gradient_log` callback: (model, batch, grads before clipping, after, with_lags) → a
record for metrics.jsonl, or None."""

Carry = list[np.ndarray | tuple[np.ndarray, ...] | None]
"""A Sequential's final states, one per module (None: a module without one)."""


class RunSummary(TypedDict):
    """What `Trainer.run` returns (result.json's "train")."""

    step: int
    best: float | None
    best_step: int
    stopped_by: str
    seconds: float  # this call's wall time (a resumed run's: of its last part)
    seconds_in_all: float | None  # the run's, every part up to its step (None: a part was
    # saved by an rnnlab before 2026-12-06, whose checkpoints did not count it)
    signal: str  # an "interrupt" stop's: "SIGINT" (Ctrl-C), "SIGTERM" or "SIGPIPE"; else ""


_SIZES = ("hidden", "layers", "embed", "batch_size", "seq_len", "steps", "eval_every",
          "checkpoint_every", "T", "grad_log_every", "beam")
"""TrainConfig's settings that are positive integers."""
_COUNTS = ("bptt", "warmup", "patience", "train_size", "seed", "attention_size", "source_conv",
           "valid_fold")
"""TrainConfig's settings that are integers ≥ 0."""
INT_LIMIT = 2**63 - 1
"""The largest integer setting: the command line's bound (rnnlab._argparse), a file's too."""


@dataclass
class TrainConfig:
    """Everything that decides a run. Saved as JSON in the run directory; read from TOML."""

    task: str = "charlm"
    cell: str = "lstm"
    hidden: int = 128
    layers: int = 1
    bidirectional: bool = False
    embed: int = 32
    dropout: float = 0.0
    optimizer: str = "adam"
    lr: float = 2e-3
    weight_decay: float | None = None  # None: the optimizer's own (AdamW 0.01, as PyTorch's)
    momentum: float = 0.9
    schedule: str = "constant"  # constant | cosine | step
    warmup: int = 0
    clip: str = "global_norm"  # global_norm | value | none
    clip_at: float = 1.0
    batch_size: int = 32
    seq_len: int = 100  # for tasks that cut sequences (charlm windows, pytokens chunks)
    bptt: int = 0  # truncated BPTT window; 0 = full BPTT over each sequence (charlm's
    # stream is always cut into windows, of seq_len with 0, its state carried across them)
    reverse_input: bool = False
    teacher_forcing: str = "1.0"  # output-feedback models: "p", or "a:b" linear from a to b
    attention: str = "none"  # encoder–decoder tasks: none | multiplicative | additive
    attention_size: int = 0  # additive attention's inner size; 0 = hidden
    beam: int = 5  # encoder–decoder tasks: the beam width of the test evaluation
    input_dropout: float = 0.0  # encoder–decoder tasks: dropout on what the encoder reads
    source_conv: int = 0  # caption: channels of a 3x3 convolution over the image; 0 = none
    steps: int = 1000
    time_limit: float = 0.0  # seconds; 0 = none. A run it stops resumes exactly (--resume).
    eval_every: int = 200
    grad_log_every: int = 50  # gradient norms into metrics.jsonl; with the lag profile at evals
    checkpoint_every: int = 500
    patience: int = 0  # evaluations without improvement before stopping; 0 = never
    seed: int = 0
    initial_state: str = "zeros"
    forget_bias: float = 1.0
    peephole: bool = False  # LSTM variants (rnnlab.cells.lstm)
    coupled: bool = False
    cell_clip: float = 0.0  # 0 = none
    layer_norm: bool = False
    proj_size: int = 0  # around any cell that takes them (rnnlab.layers.Recurrent); 0 = none
    recurrent_dropout: float = 0.0
    zoneout: float | list[float] = 0.0  # p, or [p_h, p_c]
    # task parameters
    data: str = ""  # a text file for charlm ("" = the built-in corpus)
    T: int = 100  # sequence length of the synthetic memory tasks
    digits_mode: str = "rows"
    valid_fold: int = 0  # caption: the tenth of the training images that validates
    train_size: int = 0  # 0 = the task's default
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def fields(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(
        cls, d: dict[str, Any], source: str = "config", *, tasks: Sequence[str] | None = None
    ) -> TrainConfig:
        """The settings of `d`, validated; `tasks`: the task names to accept (the registry
        that builds the tasks knows them; without it any name passes here)."""
        if not isinstance(d, dict):
            _checks.fail(source, "a table of settings", _checks.describe(d))
        known = set(cls.fields())
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(
                f"{source}: unknown setting {unknown[0]!r}; known settings: "
                + ", ".join(sorted(known))
            )
        cfg = cls(**{k: v for k, v in d.items()})
        try:
            cfg.validate(tasks)
        except ValueError as e:  # a setting of a file: the message names the file too
            if not source.endswith((".json", ".toml")):  # (options, code: the setting is named)
                raise
            raise ValueError(f"{source}: {e}") from None
        return cfg

    @classmethod
    def from_run(
        cls, config: dict[str, Any], source: str, *, tasks: Sequence[str] | None = None
    ) -> TrainConfig:
        """The settings of a run's config.json (`config`, its "train" table validated by
        `from_dict`), read as the rnnlab that wrote it meant them: before CONFIG_FORMAT 2 a
        weight_decay of 0 with AdamW trained with AdamW's 0.01 (no setting could turn it
        off), so such a run resumes with 0.01, the decay it trained with."""
        train = config["train"]
        legacy = config.get("format", 1) == 1 and isinstance(train, dict)
        if legacy and train.get("optimizer") == "adamw" and train.get("weight_decay") == 0:
            train = {**train, "weight_decay": None}
        return cls.from_dict(train, source=source, tasks=tasks)

    def settled(self) -> dict[str, Any]:
        """`to_dict` with what a default stands for written out (weight_decay none: the
        optimizer's own), as JSON holds it: two configs that train alike compare equal,
        whichever rnnlab wrote them (rnnlab reproduce's rows)."""
        d: dict[str, Any] = json.loads(json.dumps(self.to_dict()))
        d["weight_decay"] = self.decay()
        return d

    def decay(self) -> float:
        """The weight decay the optimizer applies: weight_decay, or none given, the
        optimizer's own (PyTorch's: AdamW 0.01, the others 0)."""
        if self.weight_decay is not None:
            return float(self.weight_decay)
        return 1e-2 if self.optimizer == "adamw" else 0.0

    def validate(self, tasks: Sequence[str] | None = None) -> None:
        for name in _SIZES:
            _checks.positive_int(getattr(self, name), name)
        for name in _COUNTS:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                _checks.fail(name, "a non-negative integer", _checks.describe(v))
        for name in (*_SIZES, *_COUNTS):  # (a configuration file's integers have no bound:
            v = getattr(self, name)  # hidden = 10^400 failed inside NumPy, with a traceback)
            if v > INT_LIMIT:
                _checks.fail(name, f"an integer of 64 bits (at most {INT_LIMIT:,})",
                             _checks.describe(v))  # fmt: skip
        if not (_number(self.lr) and self.lr > 0):
            _checks.fail("lr", "a finite number > 0", _checks.describe(self.lr))
        for name, lo, hi, what in (
            ("momentum", 0.0, 1.0, "a number in [0, 1)"),
            ("time_limit", 0.0, math.inf, "a finite number of seconds >= 0 (0: none)"),
            ("clip_at", 0.0, math.inf, "a finite number > 0"),
            ("forget_bias", -math.inf, math.inf, "a finite number"),
        ):
            v = getattr(self, name)
            if not (_number(v) and lo <= v < hi):
                _checks.fail(name, what, _checks.describe(v))
        if self.weight_decay is not None and not (
            _number(self.weight_decay) and 0.0 <= self.weight_decay < math.inf
        ):
            _checks.fail("weight_decay", "a finite number >= 0 (or none: the optimizer's own)",
                         _checks.describe(self.weight_decay))  # fmt: skip
        for name in ("task", "data", "digits_mode"):
            if not isinstance(getattr(self, name), str):
                _checks.fail(name, "a string", _checks.describe(getattr(self, name)))
        if tasks is not None:
            _checks.choice(self.task, "task", tasks)
        _checks.choice(self.digits_mode, "digits_mode", ("rows", "pixels"))
        _checks.choice(self.initial_state, "initial_state", ("zeros", "learned"))
        _checks.choice(self.attention, "attention", ("none", "multiplicative", "additive"))
        if not isinstance(self.extra, dict):
            _checks.fail("extra", "a table of settings", _checks.describe(self.extra))
        _checks.probability(self.dropout, "dropout")
        _checks.choice(self.clip, "clip", ("global_norm", "value", "none"))
        from rnnlab.models import CELLS, FEEDBACK_CELLS

        _checks.choice(self.cell, "cell", CELLS + FEEDBACK_CELLS)
        for name in ("bidirectional", "reverse_input", "peephole", "coupled", "layer_norm"):
            _checks.boolean(getattr(self, name), name)
        if not (_number(self.cell_clip) and self.cell_clip >= 0):
            _checks.fail("cell_clip", "a non-negative number (0: no clip)",
                         _checks.describe(self.cell_clip))  # fmt: skip
        v = self.proj_size
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < self.hidden:
            _checks.fail("proj_size", f"an integer from 0 (none) to hidden - 1 = {self.hidden - 1}",
                         _checks.describe(v))  # fmt: skip
        _checks.probability(self.recurrent_dropout, "recurrent_dropout")
        _checks.probability(self.input_dropout, "input_dropout")
        zones = self.zoneout if isinstance(self.zoneout, list) else [self.zoneout]
        if isinstance(self.zoneout, list) and len(zones) != 2:  # ([p] was refused by the layer)
            _checks.fail("zoneout", "a probability or a pair [p_h, p_c]", repr(self.zoneout))
        for z in zones:
            if not _number(z) or not 0 <= z < 1:  # (a TOML string "0,0.5" is not the pair)
                _checks.fail("zoneout", "a number in [0, 1), or a pair [p_h, p_c] of them "
                             "(in TOML: zoneout = [0.0, 0.5])", _checks.describe(self.zoneout))

        around = [n for n in ("proj_size", "recurrent_dropout") if getattr(self, n)]
        around += ["zoneout"] if any(zones) else []
        if around and self.cell in FEEDBACK_CELLS:
            _checks.fail(
                around[0],
                "unset for an output-feedback (Jordan) model",
                f"{around[0]} with cell {self.cell!r}",
            )
        variants = [n for n in ("peephole", "coupled", "layer_norm") if getattr(self, n)]
        variants += ["cell_clip"] if self.cell_clip else []
        if variants and self.cell != "lstm":
            _checks.fail(
                variants[0],
                "unset unless cell = 'lstm' (an option of the LSTM cell)",
                f"{variants[0]} with cell {self.cell!r}",
            )
        if self.layer_norm and isinstance(self.hidden, int) and self.hidden < 3:
            _checks.fail("hidden", "at least 3 with layer_norm (its statistics keep three "
                         "values in a row of H)", str(self.hidden))  # fmt: skip
        _checks.choice(self.schedule, "schedule", ("constant", "cosine", "step"))
        _checks.choice(
            self.optimizer, "optimizer", ("sgd", "nesterov", "rmsprop", "adagrad", "adam", "adamw")
        )
        if self.optimizer == "nesterov" and self.momentum == 0:
            # Said here, by the setting's name: the optimizer's own refusal came after the
            # model was built, in its words ("nesterov=True"), and the IRNN's and ReLU's
            # tuned momentum of 0 on adding (rnnlab.tasks.tuned) met --optimizer nesterov
            # with no --momentum typed.
            _checks.fail("momentum", "a number in (0, 1) with optimizer 'nesterov' (its "
                         "look-ahead follows the momentum; the tuned settings of the IRNN and "
                         "ReLU cells on adding set 0, for plain 'sgd')",
                         _checks.describe(self.momentum))  # fmt: skip
        teacher_schedule(self.teacher_forcing)
        if not self.clip_at > 0:
            _checks.fail("clip_at", "a finite number > 0", _checks.describe(self.clip_at))
        # Before a model is built: its recurrent weights alone (hidden² float32 values a
        # layer) were refused there as the layer's `hidden_size`, not as this setting
        _checks.affordable(4 * self.hidden**2, "hidden", "recurrent weights (hidden × hidden "
                           "float32 values a layer)")  # fmt: skip
        _checks.affordable(4 * self.hidden**2 * self.layers, "layers", "recurrent weights "
                           "(hidden × hidden float32 values a layer)")  # fmt: skip
        # (likewise the encoder-decoder's sizes of their own: NumPy's "array is too big")
        _checks.affordable(4 * self.attention_size * self.hidden, "attention_size", "additive "
                           "attention's weights (attention_size × hidden float32 values)")
        _checks.affordable(4 * self.source_conv * self.hidden, "source_conv", "encoder's input "
                           "weights (source_conv × hidden float32 values a gate)")  # fmt: skip
        # Whatever the task, a batch's recurrent states take batch_size × hidden float32
        # values a layer and direction at every step it keeps: a batch_size past the memory
        # failed in the first step, after the run directory was made, as NumPy's "array is
        # too big" naming no setting (a lower bound: one step, one of h and c)
        _checks.affordable(self.batch_size * self.hidden * self.layers * 4, "batch_size",
                           "recurrent states (batch_size × hidden × layers float32 values, "
                           "for one step alone)")  # fmt: skip

    def check_new_run(self) -> None:
        """Refuse what a new run may not ask for, though a saved run that did still loads
        (it evaluates and resumes as it trained): `rnnlab train` asks it of a new run, and
        so does Trainer.run at step 0 (as of the task's check_new_run)."""
        if self.optimizer == "adamw" and self.lr * self.decay() >= 1:
            # AdamW multiplies the weights by 1 − lr·λ each step (the schedules never go
            # above lr): at 0 it erased them, below it flipped their sign, and a run of
            # --weight-decay 2000 grew them 3-fold a step to a test MSE of 3e17, nothing said
            factor = f"{1 - self.lr * self.decay():.3g} here"
            if self.weight_decay is None:  # AdamW's own 0.01: the learning rate is the cause
                _checks.fail("lr", f"a number below 1 / weight_decay = {1 / self.decay():g} "
                             "with optimizer 'adamw' (each step multiplies the weights by 1 − "
                             f"lr · weight_decay, AdamW's 0.01: {factor})",
                             _checks.describe(self.lr))  # fmt: skip
            _checks.fail("weight_decay", f"a number below 1 / lr = {1 / self.lr:g} with "
                         "optimizer 'adamw' (each step multiplies the weights by 1 − lr · "
                         f"weight_decay: {factor})", _checks.describe(self.weight_decay))

    def without_effect(self, given: Iterable[str]) -> list[str]:
        """Why each of the settings in `given` (those the user set) changes nothing in this
        run: said as a warning, so a typo'd intention is not silently ignored."""
        out: list[str] = []
        g = set(given)
        synthetic = self.task in ("adding", "copy", "temporal-order")
        if "data" in g and self.data and self.task != "charlm":
            out.append(f"`data` is read by the charlm task only; the {self.task} task ignores it")
        if "T" in g and not synthetic:
            out.append(f"`T` is the length of the synthetic tasks; {self.task} ignores it")
        if "digits_mode" in g and self.task != "digits":
            out.append(f"`digits_mode` is for the digits task; {self.task} ignores it")
        if (
            "source_conv" in g
            and self.source_conv
            and self.task not in ("numbers", "dates", "caption")
        ):
            out.append(f"`source_conv` is for the caption task; {self.task} ignores it")
        if "valid_fold" in g and self.task != "caption":
            out.append(f"`valid_fold` is for the caption task; {self.task} ignores it")
        if "seq_len" in g and self.task not in ("charlm", "pytokens"):
            out.append(f"`seq_len` cuts charlm and pytokens text; {self.task} ignores it")
        if "seq_len" in g and self.task == "charlm" and self.bptt:
            out.append(f"`seq_len` has no effect on charlm when `bptt` is set: its stream is "
                       f"read {self.bptt} characters at a time (bptt)")  # fmt: skip
        seq2seq = self.task in ("numbers", "dates", "caption")
        if "train_size" in g and self.task != "pytokens" and not seq2seq:
            out.append(f"`train_size` is read by the pytokens, numbers, dates and caption "
                       f"tasks; {self.task} ignores it")  # fmt: skip
        if "dropout" in g and self.dropout and seq2seq and self.layers == 1:
            out.append("`dropout` acts between the stacked layers of the encoder and the "
                       "decoder; with one layer it does nothing (--recurrent-dropout or "
                       "--zoneout act inside the layer)")  # fmt: skip
        if "attention_size" in g and self.attention != "additive":
            out.append("`attention_size` is the additive attention's; attention "
                       f"{self.attention!r} ignores it")  # fmt: skip
        for name in ("attention", "beam", "input_dropout"):
            if name in g and not seq2seq:
                out.append(f"`{name}` is for the encoder-decoder tasks (numbers, dates, "
                           f"caption); {self.task} ignores it")  # fmt: skip
        if "momentum" in g and self.optimizer not in ("sgd", "nesterov"):
            out.append(f"`momentum` is for sgd and nesterov; optimizer {self.optimizer!r} "
                       "ignores it")  # fmt: skip
        if "clip_at" in g and self.clip == "none":
            out.append("`clip_at` has no effect with clip = 'none'")
        if "forget_bias" in g and self.cell != "lstm":
            out.append(f"`forget_bias` is an LSTM's; cell {self.cell!r} ignores it")
        for name in ("dropout", "initial_state"):
            if name in g and self.cell in ("jordan", "jordan-elman"):
                out.append(f"`{name}` has no effect on an output-feedback model (cell "
                           f"{self.cell!r} has no {name.replace('_', ' ')})")  # fmt: skip
        if "embed" in g and self.task in ("adding", "temporal-order", "digits"):
            out.append(f"`embed` sizes token embeddings; {self.task} reads vectors")
        if "teacher_forcing" in g and self.cell not in ("jordan", "jordan-elman") and not seq2seq:
            out.append("`teacher_forcing` is for output-feedback cells (jordan, jordan-elman) "
                       f"and the encoder-decoder tasks; cell {self.cell!r} ignores it")  # fmt: skip
        if "warmup" in g and self.warmup >= self.steps:
            out.append(f"`warmup` ({self.warmup}) is not shorter than `steps` ({self.steps})")
        if self.extra:
            out.append("`extra` is not read by any task: " + ", ".join(map(str, self.extra)))
        return out


def _number(v: object) -> bool:
    """A finite real number, not a bool (TOML's `true` is not 1) nor a string ("1"), nor an
    integer past a float's range: TOML's integers have no bound, and `lr = 1` followed by
    400 zeros in a --config file ended in math.isfinite's OverflowError, a traceback."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return False
    try:
        return math.isfinite(v)
    except OverflowError:  # (an int that no float holds)
        return False


def teacher_schedule(text: str) -> tuple[float, float]:
    """ "p" → (p, p); "a:b" → (a, b), a linear schedule of teacher-forcing probability, in
    ASCII digits as every number rnnlab reads (float() read a config file's "٠.٥" as 0.5)."""
    try:
        parts = [float(v) for v in str(text).split(":")] if str(text).isascii() else []
    except ValueError:
        parts = []
    if len(parts) not in (1, 2) or not all(0.0 <= v <= 1.0 for v in parts):
        _checks.fail(
            "teacher_forcing",
            "a probability 'p' or a schedule 'a:b' with a, b in [0, 1], in ASCII digits",
            repr(text),
        )
    return parts[0], parts[-1]


def make_optimizer(cfg: TrainConfig) -> optim.Optimizer:
    """The optimizer a config names (a plain if/elif: the names are the CLI's vocabulary)."""
    o, lr, wd = cfg.optimizer, cfg.lr, cfg.decay()
    if o == "sgd":
        return optim.SGD(lr=lr, momentum=cfg.momentum, weight_decay=wd)
    if o == "nesterov":
        return optim.SGD(lr=lr, momentum=cfg.momentum, nesterov=True, weight_decay=wd)
    if o == "rmsprop":
        return optim.RMSprop(lr=lr, weight_decay=wd)
    if o == "adagrad":
        return optim.Adagrad(lr=lr, weight_decay=wd)
    if o == "adam":
        return optim.Adam(lr=lr, weight_decay=wd)
    return optim.AdamW(lr=lr, weight_decay=wd)


def make_schedule(cfg: TrainConfig) -> optim.Schedule:
    s: optim.Schedule
    if cfg.schedule == "cosine":
        s = optim.Cosine(cfg.lr, max(cfg.steps - cfg.warmup, 1), min_lr=cfg.lr * 0.05)
    elif cfg.schedule == "step":
        s = optim.StepDecay(cfg.lr, max(cfg.steps // 3, 1), 0.3)
    else:
        s = optim.Constant(cfg.lr)
    return optim.Warmup(s, cfg.warmup) if cfg.warmup > 0 else s


CONFIG_FORMAT = 5
"""config.json's "format": 2 since weight_decay may be none, the optimizer's own (before,
0 with AdamW meant AdamW's 0.01: TrainConfig.from_run reads such runs as they trained); 3
since an output-feedback (Jordan) model is validated as it is trained and sampled (before,
fed back its own softmax: a resumed run of format 2 says its early stopping compares the
two measures); 4 since bucketed batches come in random order (tasks._sequence.epoch_batches;
a resumed encoder-decoder run of format 3 says that its batches change order); 5 since
pytokens holds out whole files (its record's "split"): an older rnnlab, which knows only the
contiguous split, would score such a run on text it trained on, and refuses a newer format
instead (runs.run_config)."""

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
"""The signals that stop training after its step, saved (an "interrupt"): Ctrl-C, and
SIGTERM, what Slurm, Kubernetes, systemd and `timeout` send a job before they kill it (a
grace period later, with SIGKILL): without a handler the process died with it and lost
every step since its last checkpoint."""


def take_signals(handler: Callable[[int, FrameType | None], Any]) -> dict[int, Any]:
    """`handler` for every one of STOP_SIGNALS; returns the handlers it replaced, which
    `give_back_signals` puts back. Nothing (an empty dict) where this is not the main
    thread, which alone may set handlers (Python refuses the others): they stay as they
    were, and a signal does there what it did before. A signal ignored (SIG_IGN) stays
    ignored: whoever started the process chose so (a shell's background job ignores Ctrl-C,
    so that the one meant for the foreground does not end it), as Python itself leaves an
    ignored SIGINT alone."""
    before: dict[int, Any] = {}
    try:
        for signum in STOP_SIGNALS:
            if signal.getsignal(signum) != signal.SIG_IGN:
                before[signum] = signal.signal(signum, handler)
    except ValueError:  # (the first refused: none was set)
        return {}
    return before


def give_back_signals(before: dict[int, Any]) -> None:
    """Put back the handlers `take_signals` replaced (None, one set from outside Python,
    which cannot be put back: the default)."""
    for signum, handler in before.items():
        signal.signal(signum, signal.SIG_DFL if handler is None else handler)


FINAL_STOPS = ("early stopping", "solved")
"""The stops a run decides by its own rule, after which it is finished: its checkpoint says
so, and a --resume of it trains no further (a time limit or an interrupt resumes)."""

RESULT_FILE = "result.json"
"""A run directory's test result, of the weights at the step it names ("tested_step": "train"'s
"step", or after early stopping its "best_step", whose weights the run hands back):
`rnnlab train` and `rnnlab demo` write it when training ends, a Ctrl-C's stop too, and
reproduce a row's. `Trainer.run` removes it before it trains a step further, so that a part
that ends without one (a SIGTERM's stop, which evaluates nothing; a divergence; a kill)
leaves no result of weights the run no longer has: the file is there only while it is of
the run's latest step."""


def steps_change(cfg: TrainConfig, old_steps: int, at: int) -> str:
    """What a --resume at step `at` with `cfg.steps` in place of the run's `old_steps`
    changes in the schedules laid over the whole run ('' where nothing): a cosine or step
    learning rate and an "a:b" teacher-forcing schedule are spread over `steps`, so the
    resumed run follows neither the schedule it began nor one of the new length from the
    start (--resume's exactness is for a constant one); and a finished run's evaluation at
    its end, off the --eval-every schedule, stays in early stopping's count."""
    if old_steps == cfg.steps:
        return ""
    old = dataclasses.replace(cfg, steps=old_steps)
    end = max(min(old_steps, cfg.steps), at + 1)
    probe = sorted({at, *np.linspace(at, end - 1, 64).round().astype(int).tolist()})
    out = []
    before, after = make_schedule(old), make_schedule(cfg)
    moved = [k for k in probe if before(k) != after(k)]
    if moved:
        k = moved[0]
        out.append(f"the {cfg.schedule} learning rate (at step {k}: {before(k):.4g} in the "
                   f"run's schedule, {after(k):.4g} in the new one)")  # fmt: skip
    a, b = teacher_schedule(cfg.teacher_forcing)
    if a != b:
        out.append(f"the teacher-forcing schedule {cfg.teacher_forcing}, now over "
                   f"{cfg.steps} steps")  # fmt: skip
    if at == old_steps < cfg.steps and old_steps % cfg.eval_every and cfg.patience:
        # the end's evaluation, off --eval-every, is in the run's history as a counted one
        out.append(f"early stopping, which counts the evaluation at the run's old end (step "
                   f"{old_steps}, off --eval-every {cfg.eval_every}) that a run of "
                   f"{cfg.steps} steps from the start would not have made")  # fmt: skip
    return " and ".join(out)


class NonFiniteError(RuntimeError):
    """Training produced a NaN or inf; the message says at which step and what to try.
    `weights_good`: the model's weights are still those of the last good step (a NaN in the
    forward or backward pass), so they are saved; False when the update itself overflowed.
    `step`: the step that went bad, counted from 1 as the message says it (the weights kept
    are of the step before, or of the last checkpoint); that of the evaluation after it where
    the validation was not finite. None where no step is known."""

    def __init__(self, message: str, weights_good: bool = True, step: int | None = None
                 ) -> None:  # fmt: skip
        super().__init__(message)
        self.weights_good = weights_good
        self.step = step

    def said(self, message: str) -> NonFiniteError:
        """The same divergence told in other words (where its weights were saved, which rank
        saw it): the step and the weights' state go with it."""
        return NonFiniteError(message, self.weights_good, self.step)


def _state_to_tensors(state: Carry | None, prefix: str = "carry") -> dict[str, np.ndarray]:
    """Flatten a Sequential's list-of-states into named arrays for the checkpoint."""
    out: dict[str, np.ndarray] = {}
    if state is None:
        return out
    for i, s in enumerate(state):
        if s is None:
            continue
        parts = s if isinstance(s, tuple) else (s,)
        for j, a in enumerate(parts):
            out[f"{prefix}/{i}/{j}/{len(parts)}"] = a
    return out


def _tensors_to_state(
    tensors: dict[str, np.ndarray], n: int, prefix: str = "carry"
) -> Carry | None:
    found = {k: v for k, v in tensors.items() if k.startswith(prefix + "/")}
    if not found:
        return None
    state: Carry = [None] * n
    grouped: dict[int, dict[int, np.ndarray]] = {}
    sizes: dict[int, int] = {}
    for k, v in found.items():
        parts = k.split("/")
        ok = len(parts) == 4 and all(p.isdigit() for p in parts[1:])
        if not ok or not (int(parts[1]) < n and int(parts[2]) < int(parts[3])):
            raise ValueError(f"the tensor {k!r} is not a carried state of this model's "
                             f"{n} modules ({prefix}/MODULE/PART/PARTS)")  # fmt: skip
        _, module, part, count = parts
        grouped.setdefault(int(module), {})[int(part)] = v
        sizes[int(module)] = int(count)
    for i, by_part in grouped.items():
        if sorted(by_part) != list(range(sizes[i])):
            raise ValueError(f"the carried state of module {i} misses some of its parts")
        seq = tuple(by_part[j] for j in range(sizes[i]))
        state[i] = seq if sizes[i] > 1 else seq[0]
    return state


class _Said(str):
    """What came, already said in words (not to be described again)."""


def _finite_number(x: object) -> bool:
    """An int or float (not a bool) that is finite: what a metric is in JSON."""
    return type(x) in (int, float) and math.isfinite(x)  # type: ignore[arg-type]


MODEL_SETTINGS = (
    "cell", "hidden", "layers", "bidirectional", "embed", "dropout", "initial_state",
    "forget_bias", "peephole", "coupled", "cell_clip", "layer_norm", "proj_size",
    "recurrent_dropout", "zoneout", "attention", "attention_size", "input_dropout",
    "source_conv",
)
"""The settings that describe the model `rnnlab train` builds (tasks.model_spec), not the
training: config.json leaves them out for a model built in Python (Trainer without spec)."""


class Trainer:
    """Trains `model` on `task` under `cfg`, writing into `run_dir`."""

    def __init__(
        self,
        model: Trainee,
        task: Task,
        cfg: TrainConfig,
        run_dir: Path,
        *,
        spec: dict[str, Any] | None = None,
        stream: TextIO | None = None,
        quiet: bool = False,
        gradient_log: GradientLog | Iterable[GradientLog] = (),
    ) -> None:
        """`gradient_log`: a callback, or a list of them, called every `cfg.grad_log_every`
        steps as `log(model, batch, grads_before_clip, grads_after_clip, with_lags)`; the
        dicts they return go into metrics.jsonl as one record with "kind": "gradients"
        (`rnnlab train` passes rnnlab.diagnostics.training.gradient_log)."""
        self.model, self.task, self.cfg = model, task, cfg
        self.gradient_log = [gradient_log] if callable(gradient_log) else list(gradient_log)
        self.run_dir = Path(run_dir)
        self.spec = spec or {}
        self.opt = make_optimizer(cfg)
        self.schedule = make_schedule(cfg)
        self.opt_state = self.opt.init(model.params)
        self.step = 0
        self.carry: Carry | None = None  # a Sequential's final states, carried to the next batch
        self.best: float | None = None
        self.best_step = -1
        self.bad_evals = 0
        self.history: list[dict[str, float]] = []
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.stopped_by = ""
        self._best_kept: Path | None = None  # (restore: the checkpoint's best weights)
        # Whether what a new run may not ask for (the task's check_new_run) needs no asking:
        # run() asks it of a new run; restore sets it (a saved run's settings were taken when
        # it started), and so does `rnnlab train`, which asks before it builds the model, and
        # for `--resume` of a run that has no checkpoint yet.
        self.settings_checked = False
        # What the messages of a stop (a signal, the time limit) tell the user to run to go
        # on (None: `rnnlab train --resume RUN`); `rnnlab reproduce` says its own command,
        # which resumes its rows and records them in its table.
        self.resume_advice: str | None = None
        self.grad_record: dict[str, Any] | None = None
        # The process that writes the run directory; False on the other ranks of a
        # distributed run (rnnlab.distributed), which train in step but write nothing.
        self.lead = True
        # (step, path) of the last checkpoint `run` saved (_save_once)
        self._saved_here: tuple[int, Path] | None = None
        self._signals: set[int] = set()  # the STOP_SIGNALS `run` noted (SIGPIPE: Progress.gone)
        # the wall time of training that made the weights, before this call of `run` (from
        # its checkpoint: a resume from an earlier one drops the later parts' time with
        # their steps); None where the checkpoint is older than the count
        self.seconds_before: float | None = 0.0
        self._part_t0: float | None = None  # when this call of `run` began (None outside)

    # ------------------------------------------------------------------ persistence
    def config_dict(self) -> dict[str, Any]:
        """config.json: the settings, the model spec and, for a task that has one, the
        record of its data (charlm: the vocabulary and the corpus's hash). A model built in
        Python and given without a spec was not made from the settings that build one
        (MODEL_SETTINGS): they are left out, so the record does not call a GRU of one's own
        "cell": "lstm" (the defaults)."""
        train = self.cfg.to_dict()
        if not self.spec:
            train = {k: v for k, v in train.items() if k not in MODEL_SETTINGS}
        out = {"format": CONFIG_FORMAT, "train": train, "model": self.spec}
        if hasattr(self.task, "data_record"):
            out["data"] = self.task.data_record()
        return out

    def save(self) -> Path:
        opt_tensors = dict(self.opt_state)
        opt_tensors.update(_state_to_tensors(self.carry))
        state = {
            "step": self.step,
            "best": self.best,
            "best_step": self.best_step,
            "bad_evals": self.bad_evals,
            "history": self.history,
            "carry_entries": len(self.carry) if self.carry is not None else 0,
            "seconds": self.seconds_in_all(),
            # a run that ended by its own rule stays ended: its --resume trains no further
            "stopped_by": self.stopped_by if self.stopped_by in FINAL_STOPS else "",
        }
        best = self.run_dir / "best.safetensors"
        try:
            return io.save_checkpoint(
                self.run_dir,
                self.step,
                model=self.model.params,
                optimizer=opt_tensors,
                state=state,
                config=self.config_dict(),
                beside=(
                    {"best.safetensors": best} if self.best_step >= 0 and best.is_file() else None
                ),
            )
        except OSError as e:
            # A full disk (or a read-only one, a quota) stops the run here: say what is kept
            # and how to go on, not only the errno (a failed save leaves the checkpoints
            # before it as they were, and `latest` naming one of them).
            before = [s for s in io.checkpoint_steps(self.run_dir) if s != self.step]
            again = io.resume_command(self.run_dir)
            then = ("the checkpoints saved before it are intact; once the cause is fixed, "
                    f"`{again}` continues from the latest" if before
                    else f"once the cause is fixed, `{again}` starts it again (it has no "
                    "checkpoint before)")  # fmt: skip
            raise OSError(e.errno, f"{e.strerror or e}; the run stopped at step {self.step}, "
                          f"whose checkpoint may not be saved: {then}.") from None

    def restore(self, ckpt: io.Checkpoint) -> None:
        """Take up the run where the checkpoint `ckpt` left it: its weights, its optimizer
        state, its carried states and its progress, each checked against what `save` writes
        (io.CheckpointError naming the file otherwise: the CLI adds the way back)."""
        self._check_progress(ckpt)
        self._check_optimizer_state(ckpt)
        s, where = ckpt.state, ckpt.path / "optimizer.safetensors"
        self.model.load_state_dict(ckpt.model)
        carry_keys = [k for k in ckpt.optimizer if k.startswith("carry/")]
        self.opt_state = {k: v for k, v in ckpt.optimizer.items() if k not in carry_keys}
        try:
            self.carry = _tensors_to_state(
                {k: ckpt.optimizer[k] for k in carry_keys}, s.get("carry_entries", 0)
            )
        except ValueError as e:
            raise io.CheckpointError(f"'{where}': {e}.") from None
        if self.carry is not None or s.get("carry_entries", 0):
            self._check_carry(where, s["step"], s.get("carry_entries", 0))
        self.step, self.best, self.best_step = s["step"], s["best"], s["best_step"]
        # the best weights as of the checkpoint (the run's best.safetensors may be of a later
        # step that the resume drops): put back when the run starts (under its lock)
        kept = ckpt.path / "best.safetensors"
        self._best_kept = kept if kept.is_file() else None
        self.bad_evals, self.history = s["bad_evals"], s["history"]
        self.stopped_by = s.get("stopped_by", "")
        self.seconds_before = s.get("seconds")  # (None: saved before the count)
        self.settings_checked = True

    def _check_carry(self, where: Path, step: int, entries: int) -> None:
        """The carried state, the model's final state at the checkpoint, fits the model: of
        its dtype, and read by its forward on the next batch (a state of another shape was
        said only at the first step, without the file; a float16 one was taken as it came;
        one removed resumed from zeros). A model that keeps no state saves its entries as
        None, which leaves no tensor."""
        dtype = next(iter(self.model.params.values())).dtype
        for a in _state_to_tensors(self.carry).values():
            if a.dtype != dtype:
                raise io.CheckpointError(f"'{where}' holds a carried state of dtype {a.dtype}; "
                                         f"the model's is {dtype}.")  # fmt: skip
        batch = self.task.batch(step, np.random.default_rng([self.cfg.seed, step]))
        try:
            with np.errstate(all="ignore"), parallel.session():
                f = self.model.forward(batch.x, lengths=batch.lengths, state=self.carry)
        except ValueError as e:
            raise io.CheckpointError(f"'{where}' holds a carried state that does not fit the "
                                     f"model: {' '.join(str(e).split())}") from None
        if self.carry is None and _state_to_tensors(f.state):
            raise io.CheckpointError(f"'{where}' holds no carried state ('carry/...') for a "
                                     f"model that keeps one (state.json counts {entries} "
                                     "entries).")  # fmt: skip

    def _check_progress(self, ckpt: io.Checkpoint) -> None:
        """state.json as `save` writes it: numbers of the right kind in their ranges, the
        evaluations' metrics and the best finite (a NaN best would never be beaten, then
        stop the next save; a best of true would be read as 1)."""
        s, path = ckpt.state, ckpt.path / "state.json"

        def refuse(what: str, value: object) -> NoReturn:
            got = value if isinstance(value, _Said) else _checks.describe(value)
            raise io.CheckpointError(f"'{path}' must hold {what}; got {got}.")

        kinds = {"step": int, "best_step": int, "bad_evals": int, "history": list,
                 "carry_entries": int}  # fmt: skip
        for key, kind in kinds.items():
            if key == "carry_entries" and key not in s:
                continue
            if not isinstance(s.get(key), kind) or isinstance(s.get(key), bool):
                refuse(f"{key!r} ({kind.__name__})", s.get(key))
        if s["step"] != ckpt.step:  # the directory's name is the step its files were saved at
            raise io.CheckpointError(
                f"'{path}' says step {s['step']}, and its checkpoint directory is of step "
                f"{ckpt.step}: the files were moved or edited.")
        metric = self.task.metric
        best = s.get("best", _Said("none"))
        if best is not None and not _finite_number(best):
            refuse(f"'best' (the best validation {metric} so far, a finite number; null before "
                   "the first evaluation)", best)  # fmt: skip
        for key in ("bad_evals", "carry_entries"):
            if s.get(key, 0) < 0:
                refuse(f"{key!r} as an integer >= 0", s[key])
        if not -1 <= s["best_step"] <= s["step"]:
            refuse(f"'best_step' as the step of the best evaluation, from 0 to step {s['step']} "
                   "(-1 before the first evaluation)", s["best_step"])  # fmt: skip
        if (best is None) != (s["best_step"] == -1):
            refuse("'best' null exactly when 'best_step' is -1 (no evaluation yet)",
                   _Said(f"'best' {_checks.describe(best)} and 'best_step' {s['best_step']}"))
        for entry in s["history"]:  # each: {"step": int, <the task's metric>: a number}
            if not (isinstance(entry, dict) and type(entry.get("step")) is int
                    and 0 <= entry["step"] <= s["step"]
                    and _finite_number(entry.get(metric))):  # fmt: skip
                refuse(f"'history' as evaluations ({{'step': an integer from 0 to {s['step']}, "
                       f"{metric!r}: a finite number}})", entry)
        seconds = s.get("seconds")
        if seconds is not None and not (_finite_number(seconds) and seconds >= 0):
            refuse("'seconds' (the run's training time up to its step) as a finite number "
                   ">= 0, or null", seconds)  # fmt: skip
        if s.get("stopped_by", "") not in ("", *FINAL_STOPS):  # (absent before runs saved it)
            refuse(f"'stopped_by' as '' or one of {', '.join(map(repr, FINAL_STOPS))}",
                   s["stopped_by"])

    def _check_optimizer_state(self, ckpt: io.Checkpoint) -> None:
        """optimizer.safetensors as `save` writes it: the tensors `self.opt.init` makes for
        this model (the same names, shapes and dtypes), finite; its step a 0-d integer from 0
        to the checkpoint's step (an update per step at most: none in a window past the end
        of every sequence); the running sums of squares (Adam's v, RMSprop's v, Adagrad's s)
        never below 0. The carried states ("carry/...") are checked by `_tensors_to_state`."""
        where = ckpt.path / "optimizer.safetensors"
        name = f"the {self.cfg.optimizer} optimizer of this model"
        fresh = self.opt.init(self.model.params)
        for k in ckpt.optimizer:
            if k not in fresh and not k.startswith("carry/"):
                raise io.CheckpointError(
                    f"'{where}' holds {k!r}, which {name} does not keep (its state is "
                    f"{', '.join(map(repr, list(fresh)[:4]))}{', ...' if len(fresh) > 4 else ''}).")
        for k in fresh:
            if k not in ckpt.optimizer:
                raise io.CheckpointError(f"'{where}' misses {k!r}, which {name} keeps.")
        for k, v in ckpt.optimizer.items():
            want_int = k == "step"
            if (v.dtype.kind in "iu") != want_int or (not want_int and v.dtype.kind != "f"):
                raise io.CheckpointError(f"'{where}' holds {k!r} of dtype {v.dtype}; expected "
                                         + ("an integer." if want_int else "floats."))  # fmt: skip
            if not want_int and not _checks.all_finite(v):
                raise io.CheckpointError(f"'{where}' holds NaN or inf in {k!r}.")
            want = fresh.get(k)
            if want is None:  # a carried state
                continue
            if v.shape != want.shape:
                raise io.CheckpointError(
                    f"'{where}' holds {k!r} of shape {v.shape}; expected {want.shape}"
                    + (" (a single integer)." if want_int else " (its parameter's)."))
            if not want_int and v.dtype != want.dtype:
                raise io.CheckpointError(f"'{where}' holds {k!r} of dtype {v.dtype}; expected "
                                         f"floats of {want.dtype} (its parameter's).")  # fmt: skip
        step = int(ckpt.optimizer["step"])
        if not 0 <= step <= ckpt.step:
            raise io.CheckpointError(
                f"'{where}' holds 'step' {step}; expected the number of updates so far, "
                f"from 0 to the checkpoint's step {ckpt.step}.")
        for slot in self.opt.squares:
            for k in (k for k in fresh if k.startswith(slot + "/")):
                if (ckpt.optimizer[k] < 0).any():
                    raise io.CheckpointError(
                        f"'{where}' holds negative values in {k!r}, a running sum of squared "
                        "gradients (never below 0).")

    # ------------------------------------------------------------------ one step
    def train_step(self, step: int) -> tuple[float | None, float | None, int]:
        """(loss, gradient norm, items) of one step; (None, None, 0) for a window past the end
        of every sequence of its batch (truncated BPTT): nothing to learn, no update."""
        # A diverging run overflows somewhere; let the NaN/inf through and report it below
        # with the step and a remedy, instead of a warning from deep inside a cell.
        # One session for the whole step, not one per forward and backward: NumPy work between
        # two sessions runs on OpenBLAS's own threads, which then spin on the cores for about
        # 0.1 s and slow the next forward's split loops (rnnlab.fast.parallel; the
        # end-to-end step took 0.25 s instead of 0.20).
        with np.errstate(all="ignore"), parallel.session():
            return self._train_step(step)

    def _train_step(self, step: int) -> tuple[float | None, float | None, int]:
        rng = np.random.default_rng([self.cfg.seed, step])
        batch, rng = self._draw(step, rng)
        if batch.active is not None and not batch.active.any():
            return None, None, 0  # a window past the end of every sequence: nothing to learn
        state = self.carry if batch.carry else None
        extra: dict[str, Any] = {}
        if getattr(self.model, "wants_targets", False):
            extra = {"targets": batch.y, "teacher": self.teacher(step)}
        f = self.model.forward(
            batch.x, lengths=batch.lengths, state=state, training=True, rng=rng, **extra
        )
        if not np.isfinite(f.output).all():
            self._diverged("the model's output", "NaN or inf", step)
        loss, d_out = self.task.loss(f.output, batch)
        if not math.isfinite(loss):
            self._diverged("the loss", loss, step)
        try:
            # the inputs are data; the loss's gradient is ours, and dead after this call
            given_up = {"overwrite_d_output": True} if takes_overwrite(self.model) else {}
            b = self.model.backward(f, d_out, input_grad=False, **given_up)
        except _checks.NonFiniteError as e:  # a finite loss whose gradient overflows
            self._diverged(str(e).replace(" became NaN or inf in backward", ""), "NaN or inf",
                           step)  # fmt: skip
        grads, loss = self._reduce(b.params, loss, step)
        log = bool(self.gradient_log) and (step + 1) % self.cfg.grad_log_every == 0
        before = {k: v.copy() for k, v in grads.items()} if log else None
        scale, fused = 1.0, optim.takes_grad_scale(self.opt)
        if log or not fused:  # (the record reads the clipped gradients)
            norm = optim.clip_gradients(grads, self.cfg.clip, self.cfg.clip_at)
        else:  # a global norm's scale applied by the update as it reads them (a pass fewer)
            norm, scale = optim.clip_scale(grads, self.cfg.clip, self.cfg.clip_at)
        if not math.isfinite(norm):
            self._diverged("the gradient norm", norm, step)
        if log and math.isfinite(norm):
            self.grad_record = self._gradient_record(batch, state, before, grads, step)
        given = {"grad_scale": scale} if fused else {}
        finite = self.opt.update(self.model.params, grads, self.opt_state, lr=self.schedule(step),
                                 **given)  # fmt: skip
        if not isinstance(finite, frozenset):  # (an optimizer of one's own may return nothing)
            finite = frozenset()
        # (what the update's own pass saw finite is not read again)
        bad = [k for k, v in self.model.params.items()
               if k not in finite and not _checks.all_finite(v)]  # fmt: skip
        # A running square that overflows (Adam's v at |g| past ~6e20 in float32) leaves its
        # weights finite but frozen for good (their steps m/√v are 0), and a checkpoint that
        # --resume refuses: it is as lost as an overflowing weight.
        bad += [f"{slot}/{k}" for slot in self.opt.squares for k in self.model.params
                if k not in finite
                and not _checks.all_finite(self.opt_state[f"{slot}/{k}"])]  # fmt: skip
        if bad:  # the update itself overflowed: these weights are lost, the checkpoint is not
            what = ("the weights" if bad[0] in self.model.params else
                    f"the {self.cfg.optimizer} optimizer's running squares")  # fmt: skip
            raise NonFiniteError(
                f"{what} ({bad[0]}) became NaN or inf in the update of step {step + 1}; "
                f"they are not saved. {self._remedy()}",
                weights_good=False,
                step=step + 1,
            )
        self.carry = f.state
        return loss, norm, batch.items

    # Hooks that rnnlab.distributed.DistributedTrainer overrides; alone, a process draws the
    # whole batch, its gradients are its own and its decisions need no one's agreement.
    def _draw(self, step: int, rng: np.random.Generator) -> tuple[Batch, np.random.Generator]:
        """Step `step`'s batch, and the generator its forward pass draws dropout from."""
        return self.task.batch(step, rng), rng

    def _reduce(
        self, grads: dict[str, np.ndarray], loss: float, step: int
    ) -> tuple[dict[str, np.ndarray], float]:
        """The gradients and loss the update uses (across ranks: their weighted sum)."""
        return grads, loss

    def _signals_before(self) -> set[int]:
        """The stop signals (STOP_SIGNALS) that came before this call of `run` took them
        over, which its caller noted instead of acting on them (past the last agreement of
        the ranks' start: rnnlab.distributed.StartInterrupts): training then stops after its
        first step, as after one during it. Alone, a process has no such caller."""
        return set()

    def _stop_signal(self) -> int:
        """The signal an "interrupt" stop is said and ended as: SIGTERM where one came
        (the job is being ended: its exit status must say so), SIGPIPE where the progress
        display's reader went away and no signal came (Progress.gone: a process that dies
        of SIGPIPE, as one without Python's handling would, has that status), else SIGINT
        (DistributedTrainer: on any rank, as the step's agreement carried them; a rank's
        output goes to mpiexec, which dies of a pipe's end itself and ends the ranks)."""
        if signal.SIGTERM in self._signals:
            return signal.SIGTERM
        return signal.SIGINT if signal.SIGINT in self._signals else signal.SIGPIPE

    def _interrupted_where(self) -> str:
        """Said after "interrupted" or "terminated" at a signal's stop ('' alone;
        DistributedTrainer: which signal on which ranks)."""
        return ""

    def _agree(self, local: bool, kind: str) -> bool:
        """A stop decision ("interrupt", "time") every rank takes at the same step."""
        return local

    def _save_once(self) -> Path:
        """`save`, unless this call of `run` saved this very step already (nothing changes a
        step's weights after its checkpoint: a stop right after it keeps them): its path then.
        Every rank of a distributed run decides alike (the same steps, the same saves)."""
        if self._saved_here is not None and self._saved_here[0] == self.step:
            return self._saved_here[1]
        path = self.save()
        self._saved_here = (self.step, path)
        return path

    def _saved_any(self) -> bool:
        return (self.run_dir / "checkpoints").exists()

    def _gradient_record(
        self,
        batch: Batch,
        state: Carry | None,
        before: dict[str, np.ndarray] | None,
        after: dict[str, np.ndarray],
        step: int,
    ) -> dict[str, Any] | None:
        """What the `gradient_log` callbacks make of this step's gradients before and after
        clipping, merged into one record; `with_lags` is True at evaluation steps that start
        from a zero state (where a lag profile means what it says)."""
        with_lags = (step + 1) % self.cfg.eval_every == 0 and state is None
        record: dict[str, Any] = {}
        for log in self.gradient_log:
            record.update(log(self.model, batch, before, after, with_lags) or {})
        return record or None

    def teacher(self, step: int) -> float:
        """The probability of feeding the truth at `step` (teacher-forcing schedule)."""
        a, b = teacher_schedule(self.cfg.teacher_forcing)
        return a + (b - a) * min(step / max(self.cfg.steps - 1, 1), 1.0)

    def _diverged(self, what: str, value: object, step: int) -> NoReturn:
        raise NonFiniteError(
            f"{what} became {value} at step {step + 1}; the weights were not updated and the "
            f"last good checkpoint is kept. {self._remedy()}",
            step=step + 1,
        )

    def _remedy(self) -> str:
        """What to try: clipping where the run had none, else a tighter one (a run that
        clipped at 1 by norm was told to clip at 1 by norm), and a lower learning rate."""
        c = self.cfg
        if c.clip == "none":
            clip = "gradient clipping (--clip global_norm --clip-at 1)"
        else:
            clip = (f"tighter gradient clipping (--clip {c.clip} --clip-at "
                    f"{min(c.clip_at / 10, 1.0):g})")  # fmt: skip
        return (f"Start a new run with {clip} or a lower learning rate (--lr {c.lr / 10:g}): "
                "--resume keeps this run's settings.")  # fmt: skip

    # ------------------------------------------------------------------ the loop
    def evaluate(self, split: str = "valid") -> dict[str, Any]:
        return self.task.evaluate(self.model, split)

    def run(self) -> RunSummary:
        """Train to cfg.steps (or a stop) and save; the run directory is held for this
        process meanwhile (io.training_lock: a second process training it is refused)."""
        if not self.settings_checked and self.step == 0:
            # What a new run of the task may not ask for (a text too short for its batches,
            # say) is refused before the run directory holds anything; the warnings it
            # returns are the caller's to say (`rnnlab train` says them before building).
            self.cfg.check_new_run()
            check_new_run = getattr(self.task, "check_new_run", None)
            if callable(check_new_run):
                check_new_run()
            self.settings_checked = True
        with contextlib.ExitStack() as held:
            refused = None
            if self.lead:
                self.run_dir.mkdir(parents=True, exist_ok=True)
                try:
                    held.enter_context(io.training_lock(self.run_dir))
                except io.RunDirError as e:
                    refused = e
            if self._lead_says(refused is not None):  # (every rank stops, not rank 0 alone)
                raise refused or io.RunDirError(
                    f"'{self.run_dir}' is being trained by another process (said by rank 0)")
            return self._run()

    def _lead_says(self, value: bool) -> bool:
        """The lead's value, on every rank (alone: this process's own)."""
        return value

    def _run(self) -> RunSummary:
        cfg = self.cfg
        metrics_path = self.run_dir / "metrics.jsonl"
        if self.lead:  # (run made the directory)
            io.remove_orphans(self.run_dir)  # temporary files of a write a crash interrupted
            if self._best_kept is not None:
                io.atomic_write_bytes(self.run_dir / "best.safetensors",
                                      self._best_kept.read_bytes())  # fmt: skip
                self._best_kept = None
            io.atomic_write_json(self.run_dir / "config.json", self.config_dict())
            # what a run stopped after its last checkpoint logged is logged again from there on
            io.keep_jsonl_until(metrics_path, self.step)
            if self.step < cfg.steps and self.stopped_by not in FINAL_STOPS:  # (it trains)
                (self.run_dir / RESULT_FILE).unlink(missing_ok=True)  # (see RESULT_FILE)
        progress = Progress(cfg.steps, self.step, self.stream, self.quiet)
        t_start = self._t_start = self._part_t0 = time.perf_counter()
        # Ctrl-C and SIGTERM are noted, not raised: the step in progress ends, then the loop
        # stops and saves (a second one meanwhile is only noted too). The handlers before
        # are put back at the loop's end, before that save.
        signals: set[int] = set()
        self._signals = signals

        def on_signal(signum: int, frame: FrameType | None) -> None:
            signals.add(signum)

        before = take_signals(on_signal)
        signals |= self._signals_before()  # (asked once on_signal holds them: none is lost)
        last_saved = self.step
        # (step, path) of the last checkpoint this call saved: a stop that keeps the weights
        # of that same step points to it instead of saving it again, whose replacement of a
        # complete checkpoint by a copy of it could only lose it to a kill in between
        self._saved_here = None
        last_loss = math.nan  # shown until a step has a loss (see train_step)
        ended = self.stopped_by in FINAL_STOPS  # (restored: the run ended before this call)
        if ended:
            progress.message(
                f"{self.run_dir} ended at step {self.step} ({self.stopped_by}; best step "
                f"{self.best_step}): nothing more to train. Start a new run to train further."
            )
        elif self.step >= cfg.steps and self.step:  # (a resume said nothing, and trained none)
            again = io.resume_command(self.run_dir)
            progress.message(f"{self.run_dir} is at step {self.step}, its --steps: nothing more "
                             f"to train ({again} --steps N trains it further)")  # fmt: skip
        try:
            while self.step < cfg.steps and not ended:
                step = self.step
                try:
                    loss, norm, items = self.train_step(step)
                except NonFiniteError as e:
                    if not e.weights_good:
                        last = io.checkpoint_steps(self.run_dir)
                        kept = (f"step {last[-1]}" if last else "none yet" if self.lead else
                                "rank 0's, in its run directory (this rank's shows none)")
                        raise e.said(f"{e} Last checkpoint: {kept}.") from None
                    # the weights are still those of the last good step: keep them
                    path = self._save_once()
                    raise e.said(f"{e} Good weights of step {self.step} saved in {path}."
                                 ) from None  # fmt: skip
                self.step = step + 1
                lr = self.schedule(step)
                if loss is not None:
                    last_loss = loss
                progress.update(step, last_loss, items)
                if self.grad_record is not None and self.lead:
                    io.append_jsonl(
                        metrics_path, {"step": self.step, "kind": "gradients", **self.grad_record}
                    )
                    self.grad_record = None
                if (
                    self.lead
                    and loss is not None
                    and (self.step % 10 == 0 or self.step == cfg.steps)
                ):
                    io.append_jsonl(
                        metrics_path,
                        {
                            "step": self.step,
                            "loss": loss,
                            "grad_norm": norm,
                            "lr": lr,
                            "time": self._log_time(),
                        },
                    )
                if self.step % cfg.eval_every == 0 or self.step == cfg.steps:
                    if self._validate_or_keep(metrics_path, progress):
                        self.stopped_by = self.stopped_by or "early stopping"
                        break
                if self.step % cfg.checkpoint_every == 0:
                    self._save_once()
                    last_saved = self.step
                if progress.gone:  # (its reader went away: a stop as at a Ctrl-C, saved)
                    signals.add(signal.SIGPIPE)
                if self._agree(bool(signals), "interrupt"):
                    self.stopped_by = "interrupt"
                    break
                if cfg.time_limit and self._agree(
                    time.perf_counter() - t_start > cfg.time_limit, "time"
                ):
                    self.stopped_by = "time limit"
                    self._validate_or_keep(metrics_path, progress, counted=False)
                    break
        finally:
            give_back_signals(before)
            progress.close()
        if self.step != last_saved or not self._saved_any():
            self.save()
        if self.stopped_by == "early stopping" and self.lead:
            # early stopping hands back the best weights it saw, not the last ones
            try:
                best = io.load_weights(self.run_dir / "best.safetensors", step=self.best_step)
            except io.CheckpointError as e:
                raise io.CheckpointError(
                    f"early stopping cannot restore the best weights (step {self.best_step}): "
                    f"{e} The last weights (step {self.step}) are saved in its checkpoint."
                ) from None
            self.model.load_state_dict(best)
            io.save_weights(self.run_dir / "model.safetensors", self.model.params,
                            step=self.best_step)  # fmt: skip
            progress.message(
                f"early stopping: restored the weights of step {self.best_step} "
                f"(valid {self.task.metric} {self.best:.4f})"
            )
        stop_signal = self._stop_signal() if self.stopped_by == "interrupt" else None
        # (quoted as a shell reads it: a run directory with a space was not pasted as one)
        again = self.resume_advice or io.resume_command(self.run_dir)
        if stop_signal is not None and not progress.gone:  # (SIGPIPE's: no one reads it)
            where = self._interrupted_where()
            said = (f"terminated{where or ' by SIGTERM'}" if stop_signal == signal.SIGTERM
                    else f"interrupted{where}")  # fmt: skip
            # (a signal during the last step or its validation: nothing is left to continue)
            then = (f"continue with: {again}" if self.step < cfg.steps else
                    f"that is its last step (--steps {cfg.steps}): the run is complete")
            progress.message(
                f"{said}: checkpoint saved at step {self.step} in {self.run_dir}; {then}"
            )
        if self.stopped_by == "time limit":
            progress.message(
                f"time limit of {cfg.time_limit:g} s reached: checkpoint saved at step "
                f"{self.step} in {self.run_dir}; continue with: {again}"
                + ("" if self.resume_advice else " (--time-limit S for S seconds more, 0 for "
                   "no limit)")  # fmt: skip
            )
        in_all = self.seconds_in_all()
        self.seconds_before, self._part_t0 = in_all, None  # (a next call of `run` goes on)
        return {
            "step": self.step,
            "best": self.best,
            "best_step": self.best_step,
            "stopped_by": self.stopped_by or "steps",
            "seconds": time.perf_counter() - t_start,
            "seconds_in_all": in_all,
            "signal": "" if stop_signal is None else signal.Signals(stop_signal).name,
        }

    def seconds_in_all(self) -> float | None:
        """The wall time of the training that made the current weights: the parts before
        this call of `run` (seconds_before, None where unknown) and this one so far."""
        if self.seconds_before is None:
            return None
        now = 0.0 if self._part_t0 is None else time.perf_counter() - self._part_t0
        return self.seconds_before + now

    def _log_time(self) -> float:
        """metrics.jsonl's "time": the run's seconds at the step, counted over its resumed
        parts (each part's own where an older checkpoint did not count them)."""
        in_all = self.seconds_in_all()
        assert self._part_t0 is not None  # (in `run`)
        return time.perf_counter() - self._part_t0 if in_all is None else in_all

    def _validate_or_keep(self, metrics_path: Path, progress: Progress, counted: bool = True
                          ) -> bool:  # fmt: skip
        """`_validate`; where the evaluation is not finite, the weights (finite: the training
        step's checks passed) are saved before the error goes up, as for a diverged step."""
        try:
            return self._validate(metrics_path, progress, counted)
        except NonFiniteError as e:
            path = self._save_once()
            raise e.said(f"{e} The weights of step {self.step} are saved in {path}."
                         ) from None  # fmt: skip

    def _validate(self, metrics_path: Path, progress: Progress, counted: bool = True) -> bool:
        """Evaluate on the validation split; return True when early stopping says stop.
        `counted=False` (the evaluation at a time-limit stop, off the --eval-every schedule)
        only shows and logs the result: it leaves the history, the best weights, early
        stopping's count and the "solved" stop as they were, so that the run resumed from
        there decides as one that never stopped (--resume is exact)."""
        if self.history and self.history[-1]["step"] == self.step:
            return False
        result = self.evaluate("valid")
        _, bad = io.finite_or_null(result)
        if bad:  # no better or worse than another evaluation: the run has diverged
            raise NonFiniteError(
                f"the validation {bad[0]} became {result.get(bad[0], 'NaN or inf')} at step "
                f"{self.step}: the model's outputs overflow on the validation data. "
                f"{self._remedy()}",
                step=self.step,
            )
        record = {"step": self.step, "split": "valid", **result}
        if not counted:
            io.append_jsonl(metrics_path, {**record, "at_stop": True})
            progress.message(f"step {self.step}: valid {self.task.metric} "
                             f"{result[self.task.metric]:.4f} (at the stop; early stopping "
                             "counts the scheduled evaluations only)")  # fmt: skip
            return False
        self.history.append({"step": self.step, self.task.metric: result[self.task.metric]})
        io.append_jsonl(metrics_path, record)
        value = result[self.task.metric]
        better = self.best is None or (
            value > self.best if self.task.higher_is_better else value < self.best
        )
        if better:
            self.best, self.best_step, self.bad_evals = value, self.step, 0
            io.save_weights(self.run_dir / "best.safetensors", self.model.params,
                            step=self.step)  # fmt: skip
        else:
            self.bad_evals += 1
        progress.message(
            f"step {self.step}: valid {self.task.metric} {value:.4f}"
            + (" (best)" if better else "")
        )
        # A task that knows when it is solved (the memory tasks) ends the run there: more
        # steps would only spend the budget that grows with the length.
        solved = getattr(self.task, "solved", None)
        if solved is not None and solved(result):
            self.stopped_by = "solved"
            progress.message(f"step {self.step}: solved; stopping")
            return True
        return self.cfg.patience > 0 and self.bad_evals >= self.cfg.patience
