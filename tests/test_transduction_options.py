"""caption's options from the command line and the config: --input-dropout, --source-conv and
--valid-fold are checked with their names, warned about or refused where they do nothing,
stored in the run, and a run with them resumes bit for bit."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers import oracle

from rnnlab import io
from rnnlab.cli import main

oracle("sklearn")
oracle("num2words")
oracle("sacrebleu")
oracle("editdistance")

TINY = ["--hidden", "8", "--embed", "4", "--batch-size", "4", "--train-size", "64", "--quiet",
        "--attention-size", "4", "--beam", "2"]  # fmt: skip


def run_cli(*args):
    return main([str(a) for a in args])


def test_input_dropout_is_checked_with_its_name(tmp_path, capsys):
    for bad in ("1.0", "-0.1"):
        code = run_cli("train", "caption", "--input-dropout", bad, "--run-dir", tmp_path / "x")
        err = capsys.readouterr().err
        assert code == 2, err
        lines = [ln for ln in err.splitlines() if ln.startswith("rnnlab: error:")]
        assert len(lines) == 1 and "`--input-dropout` must be a number in [0, 1)" in lines[0], err
    from rnnlab import tasks
    from rnnlab.train import TrainConfig

    with pytest.raises(ValueError, match=r"`input_dropout` must be a number in \[0, 1\)"):
        TrainConfig.from_dict({**tasks.defaults("caption"), "input_dropout": "0.2"})
    cfg = TrainConfig.from_dict({**tasks.defaults("digits"), "input_dropout": 0.2})
    assert "`input_dropout` is for the encoder-decoder tasks" in " ".join(
        cfg.without_effect({"input_dropout"})
    )


def test_source_conv_and_valid_fold_are_checked_with_their_names(tmp_path, capsys):
    cases = (
        (["caption", "--source-conv", "-1"], "`--source-conv` must be a non-negative integer"),
        (["dates", "--source-conv", "4"], "`--source-conv` must be 0 for the dates task"),
        (["caption", "--valid-fold", "10"], "`--valid-fold` must be an integer from 0 to 9"),
        (["caption", "--valid-fold", "-1"], "`--valid-fold` must be a non-negative integer"),
    )
    for args, message in cases:
        code = run_cli("train", *args, *TINY, "--steps", 1, "--run-dir", tmp_path / "x")
        err = capsys.readouterr().err
        assert code == 2, err
        lines = [ln for ln in err.splitlines() if ln.startswith("rnnlab: error:")]
        assert len(lines) == 1 and message in lines[0], err


def test_a_new_run_refuses_a_beam_wider_than_its_target_symbols(tmp_path, capsys):
    """`train --beam 100000` stalled at the run's last evaluation, and again on every
    resume (which may not change --beam); evaluate and translate refuse such a width."""
    code = run_cli("train", "dates", *TINY, "--steps", 1, "--beam", 100000,
                   "--run-dir", tmp_path / "x")  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and not (tmp_path / "x").exists(), err
    assert err.startswith("rnnlab: error: `--beam` must be a width from 1 to ")
    assert "for the dates task" in err and "got 100000 instead" in err


def test_a_caption_run_with_input_dropout_stores_it_and_resumes_bit_for_bit(tmp_path):
    common = [*TINY, "--input-dropout", "0.3", "--source-conv", "2", "--eval-every", 4,
              "--checkpoint-every", 4]  # fmt: skip
    assert run_cli("train", "caption", "--steps", 8, "--run-dir", tmp_path / "a", *common) == 0
    cfg = json.loads((tmp_path / "a" / "config.json").read_text())
    assert cfg["model"]["input_dropout"] == 0.3 and cfg["train"]["input_dropout"] == 0.3
    assert cfg["model"]["source_conv"] == 2 and cfg["model"]["source"]["size"] == 8
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    ckpts = tmp_path / "b" / "checkpoints"
    shutil.rmtree(ckpts / io.load_checkpoint(tmp_path / "b").path.name)  # lose step 8
    (ckpts / "latest").write_text(io.load_checkpoint(tmp_path / "b", step=4).path.name)
    assert run_cli("train", "--resume", tmp_path / "b", "--quiet") == 0
    a, b = (io.load_safetensors(Path(tmp_path / r) / "model.safetensors")[0] for r in "ab")
    assert a.keys() == b.keys()
    for k in a:
        assert np.array_equal(a[k], b[k]), k
    # the same run without the dropout ends elsewhere: the option acts
    plain = [x if x != "0.3" else "0" for x in common]
    assert run_cli("train", "caption", "--steps", 8, "--run-dir", tmp_path / "c", *plain) == 0
    c = io.load_safetensors(Path(tmp_path / "c") / "model.safetensors")[0]
    assert any(not np.array_equal(a[k], c[k]) for k in a)
