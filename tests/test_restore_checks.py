"""Trainer.restore takes only what Trainer.save writes: a progress (state.json) whose numbers
are finite and in their ranges. Anything else is an io.CheckpointError naming the file, never
a run that trains on wrongly or dies at its next save."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from rnnlab import io, tasks
from rnnlab.train import TrainConfig, Trainer

OPTIMIZERS = ("sgd", "nesterov", "rmsprop", "adagrad", "adam", "adamw")


def _trainer(run_dir: Path, optimizer: str) -> Trainer:
    cfg = TrainConfig.from_dict(
        {"task": "adding", "T": 4, "hidden": 3, "batch_size": 2, "steps": 2, "eval_every": 2,
         "optimizer": optimizer, "seed": 0},
        tasks=tasks.TASK_NAMES,
    )  # fmt: skip
    task = tasks.make_task(cfg)
    spec = tasks.model_spec(cfg, task)
    return Trainer(tasks.build_model(spec, seed=0), task, cfg, run_dir, spec=spec, quiet=True)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A 2-step run of each optimizer: {optimizer: its checkpoint's directory}."""
    out = {}
    for name in OPTIMIZERS:
        run = tmp_path_factory.mktemp(name)
        _trainer(run, name).run()
        out[name] = run
    return out


def _restore(run: Path, optimizer: str, **edit) -> Trainer:
    """A fresh trainer restored from `run`'s checkpoint with `edit` over its optimizer
    state ("name": array, or None to remove it)."""
    ckpt = io.load_checkpoint(run)
    tensors = dict(ckpt.optimizer)
    for k, v in edit.items():
        k = k.replace("__", "/")
        if v is None:
            del tensors[k]
        else:
            tensors[k] = v
    trainer = _trainer(run, optimizer)
    trainer.restore(dataclasses.replace(ckpt, optimizer=tensors))
    return trainer


def _restore_state(run: Path, **edit) -> Trainer:
    ckpt = io.load_checkpoint(run)
    trainer = _trainer(run, "adam")
    trainer.restore(dataclasses.replace(ckpt, state={**ckpt.state, **edit}))
    return trainer


@pytest.mark.parametrize("edit,said", [
    ({"best": float("nan")}, r"'best' \(the best validation mse so far, a finite number; null "
                             r"before the first evaluation\); got nan"),
    ({"best": float("inf")}, r"'best' .*; got inf"),
    ({"best": True}, r"'best' .*; got True"),
    ({"best": "0.5"}, r"'best' .*; got '0.5'"),
    ({"best": None}, r"'best' null exactly when 'best_step' is -1 \(no evaluation yet\); got "
                     r"'best' None and 'best_step' 2"),
    ({"bad_evals": -1000}, r"'bad_evals' as an integer >= 0; got -1000"),
    ({"carry_entries": -1}, r"'carry_entries' as an integer >= 0; got -1"),
    ({"best_step": 3}, r"'best_step' as the step of the best evaluation, from 0 to step 2 \(-1 "
                       r"before the first evaluation\); got 3"),
    ({"best_step": -2}, r"'best_step' .*; got -2"),
    ({"history": [{"step": 2, "mse": float("inf")}]}, r"'history' as evaluations .*; got "),
    ({"history": [{"step": 2, "mse": float("nan")}]}, r"'history' as evaluations"),
    ({"history": [{"step": 2, "mse": True}]}, r"'history' as evaluations"),
    ({"history": [{"step": -1, "mse": 0.5}]}, r"'history' as evaluations"),
])  # fmt: skip
def test_a_progress_out_of_its_ranges_is_refused(saved, edit, said):
    with pytest.raises(io.CheckpointError, match=r"state.json' must hold " + said):
        _restore_state(saved["adam"], **edit)


def test_a_progress_before_the_first_evaluation_is_taken(saved):
    trainer = _restore_state(saved["adam"], best=None, best_step=-1, history=[], bad_evals=0)
    assert trainer.best is None and trainer.best_step == -1
    assert _restore_state(saved["adam"], best=3).best == 3  # an integer is a number
