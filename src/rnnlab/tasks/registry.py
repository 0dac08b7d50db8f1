"""The registry of the built-in tasks: their names, descriptions and default settings, and
for a config its task (`make_task`), its model's description (`model_spec`) and the model
(`build_model`). Each task lives beside its data, one module per family (rnnlab.tasks.text,
digits, pytokens, synthetic, transduction), with its model spec, loss, metrics and the
baselines printed beside every result.

Each task object keeps the Trainer's protocol (rnnlab.train.Task): `batch(step, rng)`,
`loss(output, batch)`, `evaluate(model, split)`, plus `metric` / `higher_is_better` for
early stopping. Training batches are a pure function of (seed, step), which is what makes
resumed runs identical to uninterrupted ones.
"""

from __future__ import annotations

import numpy as np

from rnnlab import _checks, models
from rnnlab.tasks.digits import Digits
from rnnlab.tasks.pytokens import PyTokens
from rnnlab.tasks.synthetic import Adding, Copy, TemporalOrder
from rnnlab.tasks.text import CharLM
from rnnlab.train import TrainConfig

TASK_NAMES = ("charlm", "digits", "pytokens", "adding", "copy", "temporal-order", "numbers",
              "dates", "caption")  # fmt: skip
SEQ2SEQ_TASKS = ("numbers", "dates", "caption")  # encoder–decoder tasks (rnnlab.tasks.transduction)

_DESCRIPTIONS = {
    "charlm": "character language model on a text file (default: CPython's pydoc topics), "
    "with n-gram baselines and sampling",
    "digits": "many-to-one classification of scikit-learn's 8x8 digits read row by row "
    "(or pixel by pixel)",
    "pytokens": "label each character of Python source with its token class; 'called or "
    "defined' needs the right context (compare --bidirectional)",
    "adding": "adding problem (Le et al. 2015): sum the two marked numbers of a length-T "
    "sequence; baseline MSE 1/6",
    "copy": "copy memory (Arjovsky et al. 2016): recall 10 symbols after T blanks; "
    "baseline 10 ln 8 / (T + 20)",
    "temporal-order": "temporal order (Hochreiter & Schmidhuber 1997, exp. 6a): classify the "
    "order of two far-apart symbols; chance 1/4",
    "numbers": "encoder-decoder: English number words -> German ones ('three hundred and "
    "forty-seven' -> 'dreihundertsiebenundvierzig'), 0-999,999, held out by value",
    "dates": "encoder-decoder: dates in 13 locales and styles -> ISO 8601 ('7. März 2023' -> "
    "'2023-03-07'), held out by day",
    "caption": "encoder-decoder: images of 1-3 handwritten digits read column by column -> the "
    "number in English words ('forty-two'), test images never seen",
}

# What each task trains with unless the user says otherwise (TrainConfig fields).
_DEFAULTS = {
    "charlm": dict(
        cell="lstm",
        hidden=512,
        embed=64,
        batch_size=32,
        seq_len=100,
        lr=2e-3,
        # The cosine schedule ends at step 1,600: run to 3,600, the model overfit this corpus
        # from step ~1,200 on (test 1.580 bits/char against 1.545; bench/README.md, "A Zen 4
        # host again"), which hosts too slow to reach it under time_limit had hidden.
        steps=1600,
        eval_every=400,
        checkpoint_every=400,
        schedule="cosine",
        clip="global_norm",
        clip_at=1.0,
        dropout=0.2,
        time_limit=1140.0,
    ),
    "digits": dict(
        cell="gru",
        hidden=128,
        batch_size=32,
        lr=3e-3,
        steps=3000,
        eval_every=250,
        checkpoint_every=1000,
        schedule="cosine",
        clip_at=1.0,
    ),
    "pytokens": dict(
        cell="lstm",
        hidden=64,
        embed=32,
        batch_size=32,
        seq_len=100,
        lr=3e-3,
        steps=1500,
        eval_every=250,
        checkpoint_every=500,
        schedule="cosine",
    ),
    "adding": dict(
        cell="lstm",
        hidden=64,
        batch_size=32,
        lr=2e-3,
        steps=6000,
        T=100,
        eval_every=250,
        checkpoint_every=1000,
        clip_at=1.0,
    ),
    "copy": dict(
        cell="lstm",
        hidden=128,
        embed=16,
        batch_size=32,
        lr=2e-3,
        steps=3000,
        T=50,
        eval_every=250,
        checkpoint_every=1000,
        clip_at=1.0,
    ),
    "temporal-order": dict(
        cell="lstm",
        hidden=64,
        batch_size=32,
        lr=3e-3,
        steps=2000,
        T=100,
        eval_every=250,
        checkpoint_every=1000,
        clip_at=1.0,
    ),
    "numbers": dict(
        cell="lstm",
        hidden=128,
        embed=32,
        attention="additive",
        attention_size=32,
        batch_size=64,
        lr=3e-3,
        steps=1500,
        eval_every=500,
        checkpoint_every=500,
        schedule="cosine",
        clip_at=1.0,
        time_limit=1140.0,
    ),
    "dates": dict(
        cell="lstm",
        hidden=96,
        embed=32,
        attention="additive",
        batch_size=64,
        lr=3e-3,
        steps=2000,
        eval_every=500,
        checkpoint_every=500,
        schedule="cosine",
        clip_at=1.0,
        time_limit=570.0,
    ),
    "caption": dict(
        cell="lstm",
        hidden=96,
        embed=32,
        attention="additive",
        batch_size=64,
        input_dropout=0.1,  # chosen on six validation folds (docs/seq2seq.md)
        lr=3e-3,
        steps=6000,
        eval_every=500,
        checkpoint_every=500,
        schedule="cosine",
        clip_at=1.0,
        time_limit=570.0,
    ),
}

# `rnnlab demo`: a character LSTM small enough to learn in about two minutes on two cores.
DEMO = dict(
    hidden=256,
    embed=48,
    batch_size=32,
    seq_len=64,
    lr=3e-3,
    steps=1500,
    eval_every=300,
    checkpoint_every=300,
    schedule="cosine",
)


def describe(name: str) -> str:
    return _DESCRIPTIONS[name]


def defaults(name: str) -> dict:
    return dict(_DEFAULTS[name], task=name)


def defaults_for(name: str, cell: str | None = None, T: int | None = None) -> dict:
    """What `rnnlab train` trains with: the task's defaults with, for the memory tasks, those
    of the cell and length asked for (rnnlab.tasks.tuned: learning rate, forget-gate bias, a step
    budget that grows with T). None: the task's default cell or length."""
    from rnnlab.tasks import tuned

    base = defaults(name)
    return dict(base, **tuned.overrides(name, cell or base["cell"], T or base.get("T")))


def build_model(spec: dict, seed: int = 0):
    rng = np.random.default_rng([seed, 7919])
    if isinstance(spec, dict) and spec.get("type") == "seq2seq":
        from rnnlab.tasks import transduction

        return transduction.build(spec, rng)
    return models.build(spec, rng=rng)


def model_spec(cfg: TrainConfig, task) -> dict:
    if task.readout == "seq2seq":
        from rnnlab.tasks import transduction

        return transduction.model_spec(cfg, task)
    if cfg.cell in models.FEEDBACK_CELLS:
        if task.readout != "steps":
            raise ValueError(
                f"`cell` {cfg.cell!r} (an output-feedback model) needs a task with "
                f"an output at every step (charlm, pytokens, copy); got {cfg.task}"
            )
        if cfg.bidirectional or cfg.layers != 1:
            raise ValueError(
                f"`cell` {cfg.cell!r} is one unidirectional layer; drop "
                f"--bidirectional and --layers"
            )
    spec = {
        "input": task.input_spec(cfg),
        "rnn": {
            "cell": cfg.cell,
            "hidden_size": cfg.hidden,
            "num_layers": cfg.layers,
            "bidirectional": cfg.bidirectional,
            "dropout": cfg.dropout,
            "initial_state": cfg.initial_state,
            "forget_bias": cfg.forget_bias if cfg.cell == "lstm" else None,
            "peephole": cfg.peephole,
            "coupled": cfg.coupled,
            "cell_clip": cfg.cell_clip or None,
            "layer_norm": cfg.layer_norm,
            "proj_size": cfg.proj_size,
            "recurrent_dropout": cfg.recurrent_dropout,
            "zoneout": cfg.zoneout,
        },
        "readout": task.readout,
        "output_size": task.output_size,
        "output_dropout": cfg.dropout,
    }
    if cfg.cell in models.FEEDBACK_CELLS:
        spec["feedback"] = "softmax"  # every per-step task here is a classification
    # An output-feedback model has no dropout and no learned initial state: a task's default
    # (charlm's dropout 0.2) is not asked for, and one given TrainConfig.without_effect says
    return models.with_defaults(models.without_feedback_extras(spec))


def make_task(cfg: TrainConfig, data: dict | None = None, *, text: bool = True,
              resume: bool = False):  # fmt: skip
    """The task a config names. `data`: what a run stored of its data (`task.data_record()`,
    in config.json), so that a trained charlm run keeps its own vocabulary; `text=False`:
    the vocabulary only (sampling needs no corpus); `resume`: the run trains on (`rnnlab
    train --resume`), so a charlm corpus or a pytokens text that changed since is refused,
    not only said."""
    name = cfg.task
    if name == "charlm":
        return CharLM(cfg, data, text=text, resume=resume)
    if name == "digits":
        return Digits(cfg)
    if name == "pytokens":
        return PyTokens(cfg, data, resume=resume)
    if name == "adding":
        return Adding(cfg)
    if name == "copy":
        return Copy(cfg)
    if name == "temporal-order":
        return TemporalOrder(cfg)
    if name in SEQ2SEQ_TASKS:
        from rnnlab.tasks import transduction

        return transduction.Transduction(cfg, data)
    _checks.fail("task", "one of " + ", ".join(TASK_NAMES), repr(name))


def report(task, result: dict, split: str = "test") -> list[str]:
    """The lines that say `result`, the task's evaluation of `split` (the synthetic tasks and
    digits name it; the others say "held-out" of either)."""
    return task.report(result, split=split)
