"""The way back a refused run is told (io.way_back) names only what is there to remove, and
a run's own top-level model that does not fit is said as the run's model, not as "the
checkpoint RUN"."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from rnnlab import io
from rnnlab.cli import main
from rnnlab.runs import load_checkpoint_model

TINY = ["--hidden", "4", "--batch-size", "4", "--quiet"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A run of one checkpoint (step 2) and its top-level model.safetensors."""
    run = tmp_path_factory.mktemp("advice") / "run"
    assert main(["train", "adding", "--T", "5", "--steps", "2", "--run-dir", str(run),
                 *TINY]) == 0  # fmt: skip
    assert io.checkpoint_steps(run) == [2]
    return run


@pytest.fixture
def run(trained, tmp_path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(trained, copy)
    return copy


def _nan_weights(path: Path) -> None:
    """`path` (a model.safetensors) with NaN in one float weight, its step kept."""
    weights, step = io.load_weights_and_step(path)
    name = next(k for k, v in weights.items() if v.dtype.kind == "f")
    weights[name] = np.full_like(weights[name], np.nan)
    io.save_weights(path, weights, step=step)


def _refusal(run: Path) -> str:
    with pytest.raises(io.CheckpointError) as e:
        load_checkpoint_model(run)
    return str(e.value)


def _remove_advice(said: str) -> str:
    m = re.search(r"The run has no other checkpoint: (.*)$", said)
    assert m, said
    return m[1]


def test_a_crash_before_the_top_level_model_is_not_told_to_remove_it(run):
    """A run cut between its first checkpoint and the top-level model.safetensors that
    follows it has no model.safetensors to remove."""
    (run / "model.safetensors").unlink()
    checkpoint = run / "checkpoints" / "step-00000002"
    _nan_weights(checkpoint / "model.safetensors")
    said = _refusal(run)  # (its SHA-256 no longer the recorded one)
    assert "does not match the SHA-256" in said, said
    assert _remove_advice(said) == (f"remove '{run / 'checkpoints'}', and `rnnlab train "
                                    f"--resume {run}` starts it again from step 0.")  # fmt: skip


def test_a_run_without_checkpoints_is_not_told_to_remove_them(run):
    """A run whose checkpoints/ was removed, its top-level model refused, has only that
    model to remove."""
    shutil.rmtree(run / "checkpoints")
    _nan_weights(run / "model.safetensors")
    said = _refusal(run)
    assert f"'{run / 'model.safetensors'}' holds NaN or inf" in said, said
    assert _remove_advice(said) == (f"remove '{run / 'model.safetensors'}', and `rnnlab train "
                                    f"--resume {run}` starts it again from step 0.")  # fmt: skip


def test_both_there_both_named_and_neither_there_nothing_to_remove(run):
    said = io.way_back(run, 2)
    assert f"remove '{run / 'checkpoints'}' and '{run / 'model.safetensors'}', and" in said
    shutil.rmtree(run / "checkpoints")
    (run / "model.safetensors").unlink()
    assert io.way_back(run, 2) == (f"The run has no other checkpoint: `rnnlab train --resume "
                                   f"{run}` starts it again from step 0.")  # fmt: skip


def test_a_top_level_model_that_does_not_fit_is_said_as_the_runs_model(run):
    """Without checkpoints the run's model.safetensors is loaded into the model its
    config.json describes; one that does not fit was said as "the checkpoint RUN"."""
    shutil.rmtree(run / "checkpoints")
    config = json.loads((run / "config.json").read_text())
    config["model"]["rnn"]["hidden_size"] = 5
    (run / "config.json").write_text(json.dumps(config))
    said = _refusal(run)
    assert said.startswith(f"the run's model '{run / 'model.safetensors'}' does not fit the "
                           f"model described in {run / 'config.json'}"), said  # fmt: skip


def test_resume_refuses_a_linked_checkpoints_folder_before_it_trains(run, tmp_path, capsys):
    """A run whose checkpoints/ is a link (to another disk, or another run's) trained every
    step of --resume, then its first save refused the link: said first, nothing trained."""
    (run / "checkpoints").rename(tmp_path / "elsewhere")
    (run / "checkpoints").symlink_to(tmp_path / "elsewhere")
    log = (run / "metrics.jsonl").read_bytes()
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--steps", "4", "--quiet"]) != 0
    err = capsys.readouterr().err
    assert err.startswith(f"rnnlab: error: `--resume` must be a run whose checkpoints/ is a "
                          f"directory; '{run / 'checkpoints'}' is a symbolic link"), err
    assert "resuming" not in err and (run / "metrics.jsonl").read_bytes() == log
    assert load_checkpoint_model(run)[0].step == 2  # (read where it points)


@pytest.mark.parametrize("kind", ["fifo", "link", "dir"])
def test_resume_refuses_a_metrics_log_that_is_no_regular_file_before_it_trains(
    run, tmp_path, capsys, kind
):
    """metrics.jsonl is appended to, not written through io.atomic_path: a FIFO or a
    directory there trained every step up to the first record, saved a checkpoint, then
    failed ("File or stream is not seekable", naming no file); a link (here to a FIFO) was
    refused as `path`. Said first, naming --resume; nothing trained, the FIFO kept."""
    log = run / "metrics.jsonl"
    log.unlink()
    if kind == "fifo":
        os.mkfifo(log)
    elif kind == "link":
        os.mkfifo(tmp_path / "elsewhere")
        log.symlink_to(tmp_path / "elsewhere")
    else:
        log.mkdir()
    what = {"fifo": "a FIFO, device or socket", "dir": "a directory",
            "link": f"a symbolic link (to '{tmp_path / 'elsewhere'}'), which rnnlab does "
                    "not write through"}[kind]  # fmt: skip
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--steps", "6", "--quiet"]) != 0
    err = capsys.readouterr().err
    assert err == (f"rnnlab: error: `--resume` must be a run whose metrics.jsonl is a regular "
                   f"file (or none); '{log}' is {what}: put the run's log there, or move it "
                   "away to start a new one\n"), err  # fmt: skip
    assert io.checkpoint_steps(run) == [2]
    assert log.is_symlink() == (kind == "link") and (log.is_dir() if kind == "dir" else
                                                     log.is_fifo())  # fmt: skip
