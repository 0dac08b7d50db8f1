"""Trainer.restore takes only what Trainer.save writes: the optimizer state of the run's own
optimizer for this model (its names, shapes and dtypes; its step from 0 to the checkpoint's;
its sums of squares never below 0), and a progress (state.json) whose numbers are finite and
in their ranges. Anything else is an io.CheckpointError naming the file, never a traceback
at the first update, a divergence that is not one, or a run that trains on wrongly."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
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


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_each_optimizer_takes_its_own_state_back(saved, optimizer):
    trainer = _restore(saved[optimizer], optimizer)
    assert trainer.step == 2 and int(trainer.opt_state["step"]) == 2
    assert set(trainer.opt_state) == set(trainer.opt.init(trainer.model.params))


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_a_step_from_0_to_the_checkpoint_s_is_taken_and_others_are_refused(saved, optimizer):
    # fewer updates than steps: a window past the end of every sequence updates nothing
    assert int(_restore(saved[optimizer], optimizer, step=np.array(0)).opt_state["step"]) == 0
    for bad in (np.array(-1), np.array(3), np.array(2**64 - 1, dtype=np.uint64)):
        with pytest.raises(io.CheckpointError, match=r"optimizer.safetensors' holds 'step' "
                           rf"{int(bad)}; expected the number of updates so far, from 0 to "
                           r"the checkpoint's step 2\.$"):  # fmt: skip
            _restore(saved[optimizer], optimizer, step=bad)
    with pytest.raises(io.CheckpointError, match=r"holds 'step' of shape \(2,\); expected \(\)"):
        _restore(saved[optimizer], optimizer, step=np.array([1, 2]))
    with pytest.raises(io.CheckpointError, match=r"holds 'step' of dtype float64; expected an "
                       r"integer"):  # fmt: skip
        _restore(saved[optimizer], optimizer, step=np.array(2.0))


SUMS_OF_SQUARES = {"rmsprop": "v", "adagrad": "s", "adam": "v", "adamw": "v"}


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_the_slots_are_the_optimizer_s_own(saved, optimizer):
    run = saved[optimizer]
    layout = _trainer(run, optimizer).opt.init(_trainer(run, optimizer).model.params)
    slots = [k for k in layout if k != "step"]
    # plain SGD keeps a step only; SGD with momentum (the default 0.9) and Nesterov a buffer b
    assert bool(slots) == (optimizer != "sgd" or TrainConfig().momentum > 0)
    with pytest.raises(io.CheckpointError, match=r"optimizer.safetensors' holds 'zzz', which "
                       rf"the {optimizer} optimizer of this model does not keep"):  # fmt: skip
        _restore(run, optimizer, zzz=np.zeros(1, np.float32))
    for k in slots:
        name = k.replace("/", "__")
        with pytest.raises(io.CheckpointError, match=rf"misses '{k}', which the {optimizer} "
                           "optimizer of this model keeps"):  # fmt: skip
            _restore(run, optimizer, **{name: None})
        shape = layout[k].shape
        with pytest.raises(io.CheckpointError, match=rf"holds '{k}' of shape"):
            _restore(run, optimizer, **{name: np.zeros((*shape, 2), np.float32)})
        with pytest.raises(io.CheckpointError, match=rf"holds '{k}' of dtype float64; expected "
                           "floats of float32"):  # fmt: skip
            _restore(run, optimizer, **{name: np.zeros(shape, np.float64)})
        negative = np.full(shape, -1.0, np.float32)
        if k.split("/")[0] == SUMS_OF_SQUARES.get(optimizer):
            said = rf"holds negative values in '{k}', a running sum of squared gradients"
            with pytest.raises(io.CheckpointError, match=said + r" \(never below 0\)\.$"):
                _restore(run, optimizer, **{name: negative})
        else:  # a first moment, a momentum buffer, a mean gradient: any sign
            _restore(run, optimizer, **{name: negative})


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
    ({"seconds": -1.0}, r"'seconds' \(the run's training time up to its step\) as a finite "
                        r"number >= 0, or null; got -1.0"),
    ({"seconds": float("nan")}, r"'seconds' .*; got nan"),
    ({"seconds": "12"}, r"'seconds' .*; got '12'"),
])  # fmt: skip
def test_a_progress_out_of_its_ranges_is_refused(saved, edit, said):
    with pytest.raises(io.CheckpointError, match=r"state.json' must hold " + said):
        _restore_state(saved["adam"], **edit)


def test_a_progress_before_the_first_evaluation_is_taken(saved):
    trainer = _restore_state(saved["adam"], best=None, best_step=-1, history=[], bad_evals=0)
    assert trainer.best is None and trainer.best_step == -1
    assert _restore_state(saved["adam"], best=3).best == 3  # an integer is a number


def test_the_run_s_training_time_adds_up_over_its_resumed_parts(tmp_path):
    """state.json counts the run's wall time up to its step ("seconds"); a resumed part adds
    its own: result.json's "seconds_in_all" and metrics.jsonl's "time" are the run's, not the
    last part's (which alone they were, and "seconds" still is). A checkpoint saved before
    the count (no "seconds") leaves the run's total unknown: None, and each part's times."""
    run = tmp_path / "r"
    _trainer(run, "adam").run()  # (steps 1-2; its "time" logged at step 2)
    first = io.load_checkpoint(run).state["seconds"]
    assert first > 0
    trainer = _restore_state(run)
    assert trainer.seconds_before == first
    trainer.cfg = dataclasses.replace(trainer.cfg, steps=4)
    summary = trainer.run()
    assert summary["step"] == 4
    assert first + summary["seconds"] == pytest.approx(summary["seconds_in_all"], abs=1e-3)
    assert first < io.load_checkpoint(run).state["seconds"] <= summary["seconds_in_all"]
    time_at = {r["step"]: r["time"] for r in io.read_jsonl(run / "metrics.jsonl") if "time" in r}
    assert time_at[2] <= first < time_at[4] <= summary["seconds_in_all"]
    old = _restore_state(run, seconds=None)
    assert old.seconds_before is None and old.seconds_in_all() is None
