"""Review by use of safetensors and random-state files, and of how a run's commands read them:
what a hostile or careless file or argument was answered with, and is now."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from rnnlab import io
from rnnlab.cli import main

TINY = ["--hidden", "4", "--batch-size", "2", "--quiet"]


def test_a_header_length_past_the_bound_is_said_as_such_in_a_file_that_holds_it(tmp_path):
    """A header length over the format's 100,000,000 bytes in a file long enough to hold it
    was said as "says 150000000 bytes but only 199999992 follow (truncated file?)": the file
    was not short, the length was too big. (A sparse file: no disk is used.)"""
    path = tmp_path / "big.safetensors"
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", 150_000_000))
        f.truncate(200_000_000)
    with pytest.raises(io.CheckpointError) as e:
        io.load_safetensors(path)
    said = str(e.value)
    assert said == (f"'{path}' is not a valid safetensors file: the header length says "
                    "150,000,000 bytes, more than the format allows (100,000,000).")  # fmt: skip
    assert "truncated" not in said
    # a short file keeps its message
    path.write_bytes(struct.pack("<Q", 150_000_000) + b"{}")
    with pytest.raises(io.CheckpointError, match=r"says 150000000 bytes but only 2 follow"):
        io.load_safetensors(path)


def test_a_masked_array_is_refused_not_written_without_its_mask(tmp_path):
    """A file holds no mask: a masked array was written with the values under its mask as if
    they were data (np.asarray drops the mask), and read back unmasked, without a word."""
    masked = np.ma.masked_array(np.array([1.0, 2.0, 3.0], np.float32), mask=[0, 1, 0])
    path = tmp_path / "w.safetensors"
    for write in (lambda: io.save_safetensors(path, {"w": masked}),
                  lambda: io.save_weights(path, {"w": masked}, step=1),
                  lambda: io.safetensors_bytes({"w": masked})):  # fmt: skip
        with pytest.raises(ValueError, match=r"^`tensors\['w'\]` must be a NumPy array without "
                           r"masked entries .*; got a masked array with 1 masked entry instead\. "
                           r"Write value\.filled\(FILL\)"):  # fmt: skip
            write()
    assert not path.exists()
    io.save_safetensors(path, {"w": masked.filled(0)})  # what the message says to do
    assert io.load_safetensors(path)[0]["w"].tolist() == [1.0, 0.0, 3.0]
    # a masked array with nothing masked loses nothing
    io.save_safetensors(path, {"w": np.ma.masked_array([1.0, 2.0])})
    assert io.load_safetensors(path)[0]["w"].tolist() == [1.0, 2.0]


@pytest.mark.parametrize("step", [5.0, True, "5", -1, [5]])
def test_load_weights_checks_its_step_argument(tmp_path, step):
    """`step` was compared as text with the file's: "5" passed, 5.0 was said as "holds the
    weights of step 5, not of step 5.0" (the file blamed for the argument), True as step True."""
    path = tmp_path / "w.safetensors"
    io.save_weights(path, {"w": np.ones(2, np.float32)}, step=5)
    with pytest.raises(ValueError, match=r"^`step` must be None or an integer >= 0 \(the step "
                       r"the weights must be of\); got .* instead\.$"):  # fmt: skip
        io.load_weights(path, step=step)
    assert io.load_weights_and_step(path, step=np.int64(5))[1] == 5


@pytest.fixture(scope="module")
def ended(tmp_path_factory):
    """A run whose checkpoint says it ended by early stopping, with its best weights."""
    run = tmp_path_factory.mktemp("ended") / "run"
    argv = ["--T", "6", "--eval-every", "2", "--checkpoint-every", "4", *TINY]
    assert main(["train", "adding", "--steps", "4", "--run-dir", str(run), *argv]) == 0
    state = io.load_checkpoint(run).path / "state.json"
    record = json.loads(state.read_text())
    assert record["best_step"] in (2, 4)
    record["stopped_by"] = "early stopping"
    state.write_text(json.dumps(record))
    return run


@pytest.mark.parametrize("best_step", ["4", 4.0, True, None, 5, -1])
def test_an_edited_best_step_is_said_with_state_json(ended, tmp_path, capsys, best_step):
    """The commands that read a run (evaluate, export, ...) took best_step from state.json as
    it came: a sound best.safetensors was blamed for 4.0 or true ("holds the weights of step
    4, not of step 4.0"), and "4" or null loaded it unchecked. `--resume` refused them, naming
    state.json; these commands now do too."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(ended, run)
    state = io.load_checkpoint(run).path / "state.json"
    record = json.loads(state.read_text())
    capsys.readouterr()
    assert main(["evaluate", str(run)]) == 0  # as it was written
    record["best_step"] = best_step
    state.write_text(json.dumps(record))
    capsys.readouterr()
    assert main(["evaluate", str(run)]) != 0
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"rnnlab: error: '{state}' must hold 'best_step' as the step of "
                               "the best evaluation, an integer from 0 to the checkpoint's step "
                               "4 (the run ended by early stopping); got "), lines  # fmt: skip


@pytest.mark.parametrize("entry,said", [
    (None, "records no SHA-256 for model.safetensors"),
    ("x", r"records 'x' \(str\), not a SHA-256, for model.safetensors"),
    (5, r"records 5 \(int\), not a SHA-256, for model.safetensors"),
    ("g" * 64, r"records 'g+\.\.\. \(str\), not a SHA-256, for model.safetensors"),
])  # fmt: skip
def test_a_missing_or_edited_hash_is_said_of_hashes_json(tmp_path, entry, said):
    """An entry of hashes.json missing or edited was said as the weights file not matching
    "the SHA-256 its checkpoint recorded (recorded None...)": a sound file blamed."""
    path = io.save_checkpoint(tmp_path / "run", 3, model={"w": np.ones(2, np.float32)},
                              optimizer={"step": np.array(3)}, state={"step": 3},
                              config={})  # fmt: skip
    hashes = json.loads((path / "hashes.json").read_text())
    if entry is None:
        del hashes["sha256"]["model.safetensors"]
    else:
        hashes["sha256"]["model.safetensors"] = entry
    (path / "hashes.json").write_text(json.dumps(hashes))
    with pytest.raises(io.CheckpointError, match=rf"^'{path / 'hashes.json'}' {said}; expected "
                       r"64 hex digits, as rnnlab writes them \(the file was edited or "
                       r"damaged\)\. The run has no other checkpoint"):  # fmt: skip
        io.load_checkpoint(tmp_path / "run")


def test_a_hash_in_capitals_is_the_same_hash(tmp_path):
    """hashes.json's digits are compared whatever their case (a SHA-256 in capitals, as some
    tools print it, is the same hash); a wrong one is still said of the weights file."""
    path = io.save_checkpoint(tmp_path / "run", 3, model={"w": np.ones(2, np.float32)},
                              optimizer={"step": np.array(3)}, state={"step": 3},
                              config={})  # fmt: skip
    hashes = json.loads((path / "hashes.json").read_text())
    right = hashes["sha256"]["model.safetensors"]
    hashes["sha256"]["model.safetensors"] = right.upper()
    (path / "hashes.json").write_text(json.dumps(hashes))
    assert io.load_checkpoint(tmp_path / "run").model["w"].tolist() == [1.0, 1.0]
    hashes["sha256"]["model.safetensors"] = ("0" if right[0] != "0" else "1") + right[1:].upper()
    (path / "hashes.json").write_text(json.dumps(hashes))
    with pytest.raises(io.CheckpointError, match=r"model.safetensors' does not match the "
                       r"SHA-256 its checkpoint recorded in hashes.json"):  # fmt: skip
        io.load_checkpoint(tmp_path / "run")
