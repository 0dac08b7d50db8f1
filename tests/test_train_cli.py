"""Training and the `rnnlab` command: exact resume, interruption, divergence, bad input."""

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import oracle

from rnnlab import io
from rnnlab.cli import main

TINY = ["--hidden", "8", "--embed", "4", "--batch-size", "4", "--quiet"]


def run_cli(*args):
    return main([str(a) for a in args])


def weights(run):
    tensors, _ = io.load_safetensors(Path(run) / "model.safetensors")
    return tensors


@pytest.mark.parametrize(
    "task,extra",
    [
        ("copy", ["--T", "5", "--layers", "2", "--dropout", "0.2"]),
        ("charlm", ["--seq-len", "16", "--data", "CORPUS"]),
        ("pytokens", ["--seq-len", "20", "--train-size", "4000", "--bptt", "10"]),
        ("copy", ["--T", "5", "--cell", "jordan-elman", "--teacher-forcing", "1.0:0.3"]),
    ],
)
def test_resume_equals_uninterrupted(tmp_path, task, extra, corpus):
    """Cut a run at its step-6 checkpoint, resume it, and get the uninterrupted weights."""
    import shutil

    extra = [corpus if a == "CORPUS" else a for a in extra]
    common = [*TINY, *extra, "--eval-every", "6", "--checkpoint-every", "6", "--schedule", "cosine"]
    assert run_cli("train", task, "--steps", 12, "--run-dir", tmp_path / "a", *common) == 0
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    ckpts = tmp_path / "b" / "checkpoints"
    shutil.rmtree(ckpts / io.load_checkpoint(tmp_path / "b").path.name)  # lose step 12
    (ckpts / "latest").write_text(io.load_checkpoint(tmp_path / "b", step=6).path.name)
    assert io.load_checkpoint(tmp_path / "b").step == 6
    assert run_cli("train", "--resume", tmp_path / "b", "--quiet") == 0
    assert io.load_checkpoint(tmp_path / "b").step == 12
    a, b = weights(tmp_path / "a"), weights(tmp_path / "b")
    assert a.keys() == b.keys()
    for k in a:
        assert np.array_equal(a[k], b[k]), k
    ma = [json.loads(x) for x in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert any(r.get("split") == "valid" for r in ma)
    # each step logged once: what b logged past its step-6 checkpoint was logged again
    mb = [json.loads(x) for x in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [_untimed(r) for r in mb] == [_untimed(r) for r in ma]


def test_a_time_limit_stop_resumes_as_if_it_never_stopped(tmp_path, capsys):
    """The evaluation at a time-limit stop (off the --eval-every schedule) is shown and logged
    but not counted: with early stopping on, the resumed run keeps the same history, best
    step and weights as one that ran straight through."""
    common = ["adding", "--T", "6", *TINY, "--eval-every", "4", "--checkpoint-every", "2",
              "--patience", "2"]  # fmt: skip
    assert run_cli("train", *common, "--steps", 12, "--run-dir", tmp_path / "a") == 0
    # a time limit of a nanosecond stops after the first step, with an evaluation there
    capsys.readouterr()
    assert run_cli("train", *common, "--steps", 12, "--time-limit", "1e-9",
                   "--run-dir", tmp_path / "b") == 0  # fmt: skip
    said = capsys.readouterr().err  # how to go on, as after Ctrl-C
    assert f"time limit of 1e-09 s reached: checkpoint saved at step 1 in {tmp_path / 'b'}; " \
        f"continue with: rnnlab train --resume {tmp_path / 'b'} (--time-limit S" in said, said
    stopped = io.load_checkpoint(tmp_path / "b")
    assert stopped.step == 1 and stopped.state["history"] == [] and stopped.state["best"] is None
    log = [json.loads(x) for x in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if r.get("at_stop")] == [1]
    assert run_cli("train", "--resume", tmp_path / "b", "--time-limit", "0", "--quiet") == 0
    a, b = io.load_checkpoint(tmp_path / "a"), io.load_checkpoint(tmp_path / "b")
    assert a.step == b.step
    for key in ("history", "best", "best_step", "bad_evals"):
        assert a.state[key] == b.state[key], key
    wa, wb = weights(tmp_path / "a"), weights(tmp_path / "b")
    assert all(np.array_equal(wa[k], wb[k]) for k in wa)


def test_a_new_run_goes_only_where_it_takes_nothing(tmp_path, capsys):
    """--run-dir into a folder of other files (which a run would overwrite or remove) is
    refused, and nothing in it changes; a run that stopped before its first checkpoint may
    be started again there. --resume of a run whose checkpoints were removed refuses to
    start it again from step 0 over its log."""
    folder = tmp_path / "proj"
    folder.mkdir()
    (folder / "config.json").write_text('{"my": "settings"}')
    (folder / ".tmpabc123").write_text("precious")
    before = {p.name: p.read_text() for p in folder.iterdir()}
    assert run_cli("train", "adding", "--steps", 2, "--run-dir", folder, *TINY) == 2
    err = capsys.readouterr().err
    assert "`--run-dir` must be a new or empty directory" in err and ".tmpabc123" in err
    assert {p.name: p.read_text() for p in folder.iterdir()} == before
    # another program's model folder (a Hugging Face download: config.json, model.safetensors)
    # is other files, not "a trained run whose checkpoints were removed"
    (folder / "model.safetensors").write_text("weights")
    assert run_cli("train", "adding", "--steps", 2, "--run-dir", folder, *TINY) == 2
    err = capsys.readouterr().err
    assert "holds other files (.tmpabc123, config.json, model.safetensors)" in err, err
    assert "trained run" not in err
    # and not a run at all to the commands that read one (they said its checkpoints were
    # removed, or that its model.safetensors was saved before rnnlab recorded a step)
    for command in (["train", "--resume", folder, "--quiet"], ["evaluate", folder],
                    ["export", folder], ["gradflow", folder]):  # fmt: skip
        assert run_cli(*command) == 2
        err = capsys.readouterr().err
        assert f"'{folder}/config.json' must hold an rnnlab run's config" in err, (command, err)
    run = tmp_path / "run"
    assert run_cli("train", "adding", "--steps", 4, "--checkpoint-every", 2, "--run-dir", run,
                   *TINY) == 0  # fmt: skip
    for step in io.checkpoint_steps(run):
        import shutil

        shutil.rmtree(run / "checkpoints" / f"step-{step:08d}")
    capsys.readouterr()
    assert run_cli("train", "--resume", run, "--quiet") == 2
    assert "names a checkpoint" in capsys.readouterr().err
    (run / "checkpoints" / "latest").unlink()  # and the model a checkpoint writes: no
    (run / "model.safetensors").unlink()  # checkpoint ever, a run of ours, started again
    assert run_cli("train", "adding", "--steps", 2, "--run-dir", run, *TINY) == 0


def test_a_run_whose_checkpoints_were_removed_is_read_from_its_model_and_not_trained_over(
        tmp_path, capsys):  # fmt: skip
    """A finished run needs none of its checkpoints to be used, and they hold most of its
    bytes: with checkpoints/ removed, evaluate, export and gradflow read its top-level model
    (they said "it stopped before its first"), and --resume, which took it for a run that had
    never saved one, trained it again from step 0 over its weights and log, as did a new run
    given it as --run-dir: both refused now."""
    import shutil

    run = tmp_path / "run"
    assert run_cli("train", "adding", "--steps", 4, "--checkpoint-every", 2, "--run-dir", run,
                   *TINY) == 0  # fmt: skip
    before = weights(run)
    assert io.load_weights_and_step(run / "model.safetensors")[1] == 4
    exported = tmp_path / "kept.onnx"
    assert run_cli("export", run, "--out", exported) == 0
    shutil.rmtree(run / "checkpoints")
    kept = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    capsys.readouterr()
    assert run_cli("train", "--resume", run, "--steps", 6, "--quiet") == 2
    err = capsys.readouterr().err
    assert "holds no checkpoints but a model.safetensors" in err and "removed" in err
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == kept
    assert run_cli("train", "adding", "--steps", 2, "--run-dir", run, *TINY) == 2  # a new run
    assert "holds a trained run whose checkpoints were removed" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == kept
    assert run_cli("export", run, "--out", tmp_path / "again.onnx") == 0
    assert (tmp_path / "again.onnx").read_bytes() == exported.read_bytes()
    assert run_cli("evaluate", run) == 0
    assert run_cli("gradflow", run, "--analyses", "lag", "--out", tmp_path / "gf") == 0
    assert json.loads((tmp_path / "gf" / "summary.json").read_text())["source"]["step"] == 4
    capsys.readouterr()  # a --step names a checkpoint, and the way to the model left
    assert run_cli("gradflow", run, "--step", 4, "--out", tmp_path / "gf4") == 2
    err = capsys.readouterr().err
    assert "(saved: none); got 4 instead. Its checkpoints were removed: without --step, " \
        "gradflow reads its model.safetensors." in err, err
    assert all(np.array_equal(before[k], weights(run)[k]) for k in before)
    # a model file from before rnnlab recorded its step: said, not guessed
    io.save_safetensors(run / "model.safetensors", before)
    capsys.readouterr()
    assert run_cli("evaluate", run) == 2
    assert "records no step" in capsys.readouterr().err
    with pytest.raises(io.CheckpointError, match="its checkpoints were removed"):
        io.load_checkpoint(run)


def test_resume_of_another_program_s_folder_leaves_nothing_in_it(tmp_path, capsys):
    """A folder with another program's config.json: --resume said so, after taking the
    training lock, whose file it left there."""
    folder = tmp_path / "bert"
    folder.mkdir()
    (folder / "config.json").write_text('{"architectures": ["Bert"]}')
    assert run_cli("train", "--resume", folder, "--quiet") == 2
    assert "must hold an rnnlab run's config" in capsys.readouterr().err
    assert [p.name for p in folder.iterdir()] == ["config.json"]


def test_a_bad_setting_in_a_checkpoints_config_names_that_file(tmp_path, capsys):
    run = tmp_path / "r"
    assert run_cli("train", "adding", "--steps", 4, "--checkpoint-every", 4, "--run-dir", run,
                   *TINY) == 0  # fmt: skip
    path = io.load_checkpoint(run).path / "config.json"
    config = json.loads(path.read_text())
    config["train"]["lr"] = "0.1"
    path.write_text(json.dumps(config))
    capsys.readouterr()
    assert run_cli("train", "--resume", run, "--steps", 6, "--quiet") == 2
    assert f"{path}: `lr` must be a finite number > 0" in capsys.readouterr().err


@pytest.mark.parametrize("form,said", [
    ("4", "must say its \"format\" as an integer ≥ 1; got '4' (str)"),
    (None, "must say its \"format\" as an integer ≥ 1; got None"),
    (99, "is of format 99, written by a newer rnnlab than this one (which reads up to "),
])  # fmt: skip
def test_a_config_format_that_is_not_one_rnnlab_wrote_is_refused(tmp_path, capsys, form, said):
    """A "format" of a string or null was a TypeError traceback on --resume (and read as
    nothing by evaluate); a newer format was read as if it were today's."""
    run = tmp_path / "r"
    assert run_cli("train", "adding", "--steps", 4, "--checkpoint-every", 4, "--run-dir", run,
                   *TINY) == 0  # fmt: skip
    path = io.load_checkpoint(run).path / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "format": form}))
    capsys.readouterr()
    for argv in (("train", "--resume", run, "--steps", 6, "--quiet"), ("evaluate", run)):
        assert run_cli(*argv) == 2
        err = capsys.readouterr().err
        assert f"'{path}' {said}" in err and "Traceback" not in err


@pytest.mark.parametrize("edit,said", [
    ({"history": [1, 2]}, "must hold 'history' as evaluations"),
    ({"step": 30}, "says step 30, and its checkpoint directory is of step 4"),
])  # fmt: skip
def test_a_tampered_progress_is_refused_on_resume(tmp_path, capsys, edit, said):
    run = tmp_path / "r"
    assert run_cli("train", "adding", "--steps", 4, "--checkpoint-every", 4, "--eval-every", 2,
                   "--run-dir", run, *TINY) == 0  # fmt: skip
    state = io.load_checkpoint(run).path / "state.json"
    state.write_text(json.dumps({**json.loads(state.read_text()), **edit}))
    capsys.readouterr()
    assert run_cli("train", "--resume", run, "--steps", 6, "--quiet") == 2
    err = capsys.readouterr().err
    assert said in err and str(state) in err and "Traceback" not in err


def test_a_checkpoint_of_another_run_is_refused_on_resume(tmp_path, capsys):
    import shutil

    common = ["--steps", 4, "--checkpoint-every", 4, *TINY]
    assert run_cli("train", "adding", *common, "--run-dir", tmp_path / "a") == 0
    assert run_cli("train", "copy", "--T", 5, *common, "--run-dir", tmp_path / "b") == 0
    theirs = io.load_checkpoint(tmp_path / "b").path
    ours = io.load_checkpoint(tmp_path / "a").path
    shutil.rmtree(ours)
    shutil.copytree(theirs, ours)  # the copy task's step-4 checkpoint, in the adding run
    capsys.readouterr()
    assert run_cli("train", "--resume", tmp_path / "a", "--steps", 6, "--quiet") == 2
    err = capsys.readouterr().err
    assert "is of another model or task than the run's" in err and "Traceback" not in err
    assert json.loads((tmp_path / "a" / "config.json").read_text())["train"]["task"] == "adding"


@pytest.mark.parametrize("option,value,key", [
    ("--lr", 0.01, "lr"), ("--batch-size", 3, "batch_size"), ("--seed", 7, "seed"),
    ("--clip-at", 0.5, "clip_at"), ("--momentum", 0.5, "momentum"), ("--T", 7, "T"),
])  # fmt: skip
def test_a_checkpoint_of_another_run_with_other_settings_is_refused(tmp_path, capsys, option,
                                                                   value, key):  # fmt: skip
    """Only the model and the task were compared: a checkpoint copied in from a run of the same
    model with another learning rate (batch size, seed, clip, data option...) was resumed with
    its settings, and the run's config.json rewritten with them. Refused, naming both files,
    the setting and both values, with the way back, which then resumes."""
    import shutil

    common = ["adding", "--steps", 4, "--checkpoint-every", 2, *TINY]
    assert run_cli("train", *common, "--run-dir", tmp_path / "a") == 0
    assert run_cli("train", *common, option, value, "--run-dir", tmp_path / "b") == 0
    ours = io.load_checkpoint(tmp_path / "a").path
    shutil.rmtree(ours)
    shutil.copytree(io.load_checkpoint(tmp_path / "b").path, ours)
    top = tmp_path / "a" / "config.json"
    before = top.read_bytes()
    mine = json.loads(before)["train"][key]
    assert mine != value
    capsys.readouterr()
    for argv in (("train", "--resume", tmp_path / "a", "--steps", 6, "--quiet"),
                 ("evaluate", tmp_path / "a")):  # fmt: skip
        assert run_cli(*argv) == 2
        err = capsys.readouterr().err
        assert (f"rnnlab: error: '{ours / 'config.json'}' trains with {key} {value}, the run's "
                f"'{top}' with {mine}: the checkpoint comes from another run, or one of the two "
                "files was edited. Edited? --resume keeps a run's settings (all but --steps and "
                "--time-limit): put the value back, or start a new run to change it. Copied in? "
                "To go back to the checkpoint step-00000002, write step-00000002 into "
                f"'{tmp_path / 'a' / 'checkpoints' / 'latest'}' and resume: the run continues "
                "from there.\n") in err, err  # fmt: skip
        assert top.read_bytes() == before
    (tmp_path / "a" / "checkpoints" / "latest").write_text("step-00000002\n")
    assert run_cli("train", "--resume", tmp_path / "a", "--steps", 6, "--quiet") == 0
    assert json.loads(top.read_text())["train"][key] == mine


# The settings of config.json's "train" as the first rnnlab wrote them (no "format": format 1).
OLDEST_TRAIN_KEYS = (
    "task", "cell", "hidden", "layers", "bidirectional", "embed", "dropout", "optimizer", "lr",
    "weight_decay", "momentum", "schedule", "warmup", "clip", "clip_at", "batch_size",
    "seq_len", "bptt", "reverse_input", "steps", "time_limit", "eval_every", "checkpoint_every",
    "patience", "seed", "initial_state", "forget_bias", "data", "T", "digits_mode",
    "train_size", "extra",
)


def test_a_run_of_an_older_format_resumes_and_goes_back_after_a_resume(tmp_path, capsys):
    """A run saved by an older rnnlab holds fewer settings, without a format (an AdamW decay
    of 0 then meant 0.01, today's none); resumed with other --steps and --time-limit, its
    config.json is rewritten with today's settings, while its earlier checkpoints keep theirs.
    Neither difference is another run's: the run goes on from one of those checkpoints."""
    from rnnlab.train import CONFIG_FORMAT

    run = tmp_path / "r"
    assert run_cli("train", "adding", "--optimizer", "adamw", "--weight-decay", 0, "--steps", 4,
                   "--checkpoint-every", 2, "--run-dir", run, *TINY) == 0  # fmt: skip
    for path in [run / "config.json", *run.glob("checkpoints/step-*/config.json")]:
        config = json.loads(path.read_text())
        assert set(OLDEST_TRAIN_KEYS) < set(config["train"])
        del config["format"]
        config["train"] = {k: config["train"][k] for k in OLDEST_TRAIN_KEYS}
        path.write_text(json.dumps(config, indent=2))
    capsys.readouterr()
    assert run_cli("evaluate", run) == 0
    assert run_cli("train", "--resume", run, "--steps", 6, "--time-limit", 3600, "--quiet") == 0
    top = json.loads((run / "config.json").read_text())
    assert top["format"] == CONFIG_FORMAT and top["train"]["weight_decay"] is None
    assert "grad_log_every" in top["train"] and top["train"]["time_limit"] == 3600
    # the old checkpoint of step 4 (as a crash before the resume's first save leaves it, or
    # the way back from a later one)
    (run / "checkpoints" / "latest").write_text("step-00000004\n")
    assert "format" not in io.load_checkpoint(run).config
    assert run_cli("evaluate", run) == 0
    assert run_cli("train", "--resume", run, "--steps", 6, "--quiet") == 0
    assert "error" not in capsys.readouterr().err


def _untimed(record: dict) -> dict:
    return {k: v for k, v in record.items() if k not in ("time", "seconds")}


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("the quick brown fox jumps over the lazy dog. " * 400, encoding="utf-8")
    return path


def test_evaluate_json_and_sample(tmp_path, corpus, capsys):
    run = tmp_path / "lm"
    assert (
        run_cli(
            "train",
            "charlm",
            "--data",
            corpus,
            "--steps",
            5,
            "--seq-len",
            16,
            "--run-dir",
            run,
            *TINY,
        )
        == 0
    )
    capsys.readouterr()
    assert run_cli("evaluate", run, "--json") == 0
    result = json.loads(capsys.readouterr().out)
    assert result["bits_per_char"] == pytest.approx(result["nats_per_char"] / np.log(2))
    assert set(result["baselines"]) == {"unigram", "bigram", "trigram", "4-gram", "5-gram"}
    assert run_cli("sample", run, "--prime", "the ", "--length", 30, "--top-k", 5) == 0
    out = capsys.readouterr().out
    assert out.startswith("the ") and len(out.rstrip("\n")) >= 30


def test_tasks_lists_every_task(capsys):
    assert run_cli("tasks") == 0
    out = capsys.readouterr().out
    for name in ("charlm", "digits", "pytokens", "adding", "copy", "temporal-order"):
        assert name in out


@pytest.mark.parametrize("argv", [
    ("tasks",),  # reads none of the variables: listed the tasks without a word
    ("gradflow", "adding", "--T", "5", "--hidden", "4", "--batch", "2"),  # after its first line
])  # fmt: skip
def test_a_bad_rnnlab_variable_stops_every_command_before_it_starts(monkeypatch, capsys,
                                                                    tmp_path, argv):
    """`RNNLAB_NO_NUMBA=maybe rnnlab tasks` passed; the variables are read before any
    command runs, so a bad one is the same line whatever the command."""
    from rnnlab import settings

    monkeypatch.setenv("RNNLAB_NO_NUMBA", "maybe")
    monkeypatch.setattr(settings, "_held", [])  # read again, as a new process does
    out = tmp_path / "out"
    assert run_cli(*argv, *(("--out", out) if argv[0] == "gradflow" else ())) == 2
    said = capsys.readouterr()
    assert said.err == ("rnnlab: error: `RNNLAB_NO_NUMBA` must be 1, 0, true, false, yes, no, "
                        "on or off; got 'maybe' instead.\n") and said.out == ""  # fmt: skip
    assert not out.exists()


def test_python_dash_m_runs_the_command():
    """`python -m rnnlab` is the `rnnlab` command (for an environment without its script)."""
    done = subprocess.run([sys.executable, "-m", "rnnlab", "tasks"], capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "temporal-order" in done.stdout


def test_the_programs_warnings_are_one_line_each():
    """Run as a program, rnnlab's warnings read as its errors do, `rnnlab: warning: ...`,
    not as Python's `path.py:112: UserWarning: ...` and the source line under it."""
    env = {**os.environ, "RNNLAB_THREADZ": "2"}
    done = subprocess.run([sys.executable, "-m", "rnnlab", "info"], capture_output=True,
                          text=True, timeout=120, env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines() == [
        "rnnlab: warning: RNNLAB_THREADZ is not one of rnnlab's variables and is ignored "
        "(did you mean RNNLAB_NUM_THREADS?)"
    ]


def test_a_bptt_window_as_long_as_the_sequences_is_said_to_change_nothing(tmp_path, capsys):
    """`--bptt` at least as long as the task's sequences cut nothing, silently."""
    assert run_cli("train", "copy", "--T", 5, "--bptt", 100, "--steps", 1, "--hidden", 4,
                   "--run-dir", tmp_path / "a") == 0  # fmt: skip
    err = capsys.readouterr().err
    assert ("rnnlab: warning: `bptt` (100) is not shorter than the copy task's sequences (25 "
            "steps): each is one window, trained with full BPTT") in err  # fmt: skip
    assert run_cli("train", "copy", "--T", 5, "--bptt", 10, "--steps", 1, "--hidden", 4,
                   "--run-dir", tmp_path / "b") == 0  # fmt: skip
    assert "warning" not in capsys.readouterr().err


def test_a_jordan_run_from_before_its_evaluation_changed_says_so_on_resume(tmp_path, capsys):
    """Its validations were made feeding back the softmax (config.json format 2); resumed,
    early stopping compares them with the new ones: said once."""
    from rnnlab.train import CONFIG_FORMAT

    run = tmp_path / "j"
    assert run_cli("train", "copy", "--cell", "jordan", "--T", 3, "--steps", 4, "--eval-every",
                   2, "--run-dir", run, *TINY) == 0  # fmt: skip
    capsys.readouterr()
    for config in run.rglob("config.json"):
        data = json.loads(config.read_text())
        assert data["format"] == CONFIG_FORMAT
        config.write_text(json.dumps({**data, "format": 2}))
    assert run_cli("train", "--resume", run, "--steps", 6, "--quiet") == 0
    err = capsys.readouterr().err
    assert "rnnlab: warning: this Jordan run's validations up to step 4 fed the model its own " \
           "softmax" in err  # fmt: skip
    assert run_cli("train", "--resume", run, "--steps", 8, "--quiet") == 0  # the current format now
    assert "Jordan run's validations" not in capsys.readouterr().err


def test_an_encoder_decoder_run_from_before_its_batch_order_changed_says_so(tmp_path, capsys):
    """Its batches came in the old order (config.json format 3); resumed, they come in the new
    one, so the run does not end as it would have: said once."""
    oracle("babel")
    run = tmp_path / "d"
    assert run_cli("train", "dates", "--train-size", 64, "--steps", 2, "--eval-every", 2,
                   "--run-dir", run, *TINY) == 0  # fmt: skip
    capsys.readouterr()
    for config in run.rglob("config.json"):
        config.write_text(json.dumps({**json.loads(config.read_text()), "format": 3}))
    assert run_cli("train", "--resume", run, "--steps", 3, "--quiet") == 0
    err = capsys.readouterr().err
    assert "rnnlab: warning: this run drew its batches up to step 2 in the order of rnnlab " \
           "before 2026-12-04" in err  # fmt: skip
    assert run_cli("train", "--resume", run, "--steps", 4, "--quiet") == 0  # the current format now
    assert "drew its batches" not in capsys.readouterr().err


def test_version_is_the_packages(capsys):
    """`rnnlab --version` prints the version pyproject.toml gives the package (one number,
    not two that drift apart)."""
    import tomllib

    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    version = tomllib.loads(pyproject.read_text())["project"]["version"]
    assert capsys.readouterr().out == f"rnnlab {version}\n"


def test_config_file(tmp_path, capsys):
    cfg = tmp_path / "run.toml"
    cfg.write_text('task = "adding"\nT = 8\nsteps = 4\nhidden = 6\nbatch_size = 4\ncell = "gru"\n')
    assert run_cli("train", "--config", cfg, "--run-dir", tmp_path / "r", "--quiet") == 0
    saved = json.loads((tmp_path / "r" / "config.json").read_text())
    assert saved["train"]["cell"] == "gru" and saved["train"]["T"] == 8
    assert saved["model"]["rnn"]["cell"] == "gru"


def test_every_setting_of_a_run_is_an_option_of_train_under_its_own_name(tmp_path):
    """One name per thing: each TrainConfig field (what config.json and --config hold) is an
    option of `rnnlab train` whose destination is that field's name, and a typed value lands
    in the run's config.json under it."""
    import dataclasses

    from rnnlab.cli import build_parser
    from rnnlab.train import TrainConfig

    parser = build_parser()
    train = parser._subparsers._group_actions[0].choices["train"]
    dests = {a.dest for a in train._actions}
    fields = {f.name for f in dataclasses.fields(TrainConfig)} - {"task", "extra"}
    assert fields <= dests, sorted(fields - dests)
    assert run_cli("train", "adding", "--T", 8, "--steps", 2, "--hidden", 4, "--batch-size", 4,
                   "--cell", "lstm", "--forget-bias", 2.5, "--optimizer", "sgd",
                   "--momentum", 0.5, "--grad-log-every", 7,
                   "--run-dir", tmp_path / "r", "--quiet") == 0  # fmt: skip
    saved = json.loads((tmp_path / "r" / "config.json").read_text())["train"]
    assert (saved["forget_bias"], saved["momentum"], saved["grad_log_every"]) == (2.5, 0.5, 7)


def error_of(capsys, *args):
    code = run_cli(*args)
    err = capsys.readouterr().err
    assert code != 0
    assert err.startswith("rnnlab: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    return err


def test_a_refused_setting_is_named_where_it_was_given(tmp_path, capsys):
    """An option as it is typed (`--batch-size`, not TrainConfig's `batch_size`); a setting of
    a --config file by its key, after the file's name; an option given beside a --config file
    as the option (it was named as the file's before)."""
    config = tmp_path / "c.toml"
    config.write_text('task = "adding"\nbatch_size = 0\n')
    said = error_of(capsys, "train", "--config", config)
    assert f"{config}: `batch_size` must be a positive integer; got 0" in said
    config.write_text('task = "adding"\nhidden = 8\n')
    said = error_of(capsys, "train", "--config", config, "--batch-size", 0)
    assert said.startswith("rnnlab: error: `--batch-size` must be a positive integer; got 0")
    # refused by the task, not by TrainConfig: the option's name too
    said = error_of(capsys, "train", "--config", config, "--bptt", 5)
    assert said.startswith("rnnlab: error: `--bptt` must be 0 for the adding task")
    config.write_text('task = "adding"\nbptt = 5\n')  # from the file: its key, as before
    assert "`bptt` must be 0 for the adding task" in error_of(capsys, "train", "--config", config)


def test_bad_input_one_line_errors(tmp_path, capsys, corpus):
    assert "`task` must be one of" in error_of(capsys, "train", "nosuchtask")
    assert "invalid choice: 'transformer'" in error_of(  # argparse's, on one line
        capsys, "train", "adding", "--cell", "transformer"
    )
    assert "argument --T: invalid int value: '1.5'" in error_of(capsys, "train", "adding",
                                                                "--T", "1.5")  # fmt: skip
    assert "does not exist" in error_of(
        capsys, "train", "charlm", "--data", tmp_path / "missing.txt"
    )
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    assert "empty" in error_of(capsys, "train", "charlm", "--data", empty)
    latin = tmp_path / "latin1.txt"
    latin.write_bytes("caf\xe9 ".encode("latin-1") * 500)
    assert "UTF-8" in error_of(capsys, "train", "charlm", "--data", latin)
    bad_toml = tmp_path / "bad.toml"
    bad_toml.write_text("steps = = 3\n")
    assert "bad.toml" in error_of(capsys, "train", "--config", bad_toml)
    unknown = tmp_path / "unknown.toml"
    unknown.write_text('task = "adding"\nhiddne = 3\n')
    assert "unknown setting 'hiddne'" in error_of(capsys, "train", "--config", unknown)
    assert "run directory" in error_of(capsys, "evaluate", tmp_path)
    assert "`--lr` must be a finite number > 0" in error_of(capsys, "train", "adding", "--lr", "-1")
    assert "`--bptt` must be 0 for the adding task" in error_of(
        capsys, "train", "adding", "--bptt", "5"
    )


def test_checkpoint_problems(tmp_path, capsys):
    run = tmp_path / "r"
    assert run_cli("train", "adding", "--T", 6, "--steps", 3, "--run-dir", run, *TINY) == 0
    capsys.readouterr()
    # a checkpoint from another model: the config now describes a bigger network
    cfg = json.loads((run / "config.json").read_text())
    cfg["model"]["rnn"]["hidden_size"] = 9
    ckpt = io.load_checkpoint(run)
    io.atomic_write_json(ckpt.path / "config.json", cfg)
    assert "another model" in error_of(capsys, "evaluate", run)
    # a truncated weights file
    weights_file = ckpt.path / "model.safetensors"
    weights_file.write_bytes(weights_file.read_bytes()[:40])
    assert "model.safetensors" in error_of(capsys, "evaluate", run)


def test_divergence_stops_with_the_step_and_a_remedy(tmp_path, capsys):
    run = tmp_path / "r"
    code = run_cli(
        "train",
        "adding",
        "--T",
        20,
        "--cell",
        "relu",
        "--lr",
        "1e6",
        "--clip",
        "none",
        "--optimizer",
        "sgd",
        "--steps",
        50,
        "--run-dir",
        run,
        *TINY,
    )
    err = capsys.readouterr().err
    assert code == 1
    assert "at step" in err and "clipping" in err and "learning rate" in err


def test_ctrl_c_saves_a_checkpoint_and_resumes(tmp_path):
    run = tmp_path / "r"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "rnnlab.cli",
            "train",
            "adding",
            "--T",
            "10",
            "--steps",
            "100000",
            "--checkpoint-every",
            "100000",
            "--eval-every",
            "100000",
            "--run-dir",
            str(run),
            *TINY,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    )
    deadline = time.time() + 60
    while time.time() < deadline and not (run / "metrics.jsonl").exists():
        time.sleep(0.1)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "--resume" in err
    step = io.load_checkpoint(run).step
    assert step >= 10
    assert main(["train", "--resume", str(run), "--steps", str(step + 2), "--quiet"]) == 0
    assert io.load_checkpoint(run).step == step + 2


def test_sigterm_saves_a_checkpoint_and_the_run_resumes_as_if_never_stopped(tmp_path):
    """SIGTERM (what Slurm, Kubernetes, systemd and `timeout` send before they kill a job)
    is taken as Ctrl-C is: the step ends, the checkpoint is saved, one line says so and how
    to resume, exit status 143 (128 + 15), at once (no test evaluation, which a grace period
    before SIGKILL might not fit). Resumed, the run ends with the weights of one that never
    stopped. Before: the process died of the signal, nothing since its start saved."""
    run = tmp_path / "r"
    common = ["adding", "--T", "10", "--eval-every", "100000", *TINY]
    proc = subprocess.Popen(
        [sys.executable, "-m", "rnnlab.cli", "train", *common, "--steps", "100000",
         "--checkpoint-every", "100000", "--run-dir", str(run)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.time() + 60
    while time.time() < deadline and not (run / "metrics.jsonl").exists():  # (step 10 logged)
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    step = io.load_checkpoint(run).step
    assert step >= 10 and io.checkpoint_steps(run) == [step]
    assert err.endswith(f"\nterminated by SIGTERM: checkpoint saved at step {step} in {run}; "
                        f"continue with: rnnlab train --resume {run}\n"), err  # fmt: skip
    assert out == "" and not (run / "result.json").exists()
    assert main(["train", "--resume", str(run), "--steps", str(step + 2), "--quiet"]) == 0
    assert run_cli("train", *common, "--steps", step + 2, "--run-dir", tmp_path / "whole") == 0
    resumed, whole = weights(run), weights(tmp_path / "whole")
    assert resumed.keys() == whole.keys()
    for k in whole:
        assert np.array_equal(resumed[k], whole[k]), k


def test_a_reader_gone_away_stops_training_saved_and_it_resumes_as_if_never_stopped(tmp_path):
    """`rnnlab train ... 2>&1 | head -2`: the progress display's reader goes away after two
    lines. Training stops after the step in which its next line found no reader, saved, as
    at a Ctrl-C, with the status of a process SIGPIPE ended (141) and nothing more said (no
    one reads it); resumed, the run ends with the weights of one that never stopped. Before:
    the display's BrokenPipeError went up through the loop, exit status 1, no checkpoint."""
    run = tmp_path / "r"
    common = ["adding", "--T", "10", "--hidden", "8", "--batch-size", "4", "--eval-every", "5"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "rnnlab.cli", "train", *common, "--steps", "100000",
         "--checkpoint-every", "100000", "--run-dir", str(run)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    with proc.stdout:
        first = [proc.stdout.readline() for _ in range(2)]
    assert first[0].startswith("training adding") and first[1].startswith("step 1/"), first
    assert proc.wait(timeout=60) == 141
    step = io.load_checkpoint(run).step
    assert 1 <= step < 100000 and io.checkpoint_steps(run) == [step]
    assert not (run / "result.json").exists()
    assert run_cli("train", "--resume", run, "--steps", step + 2, "--quiet") == 0
    assert run_cli("train", *common, "--steps", step + 2, "--run-dir", tmp_path / "whole",
                   "--quiet") == 0  # fmt: skip
    resumed, whole = weights(run), weights(tmp_path / "whole")
    assert resumed.keys() == whole.keys()
    for k in whole:
        assert np.array_equal(resumed[k], whole[k]), k


def test_a_command_whose_output_has_no_reader_ends_quietly_with_141():
    """`rnnlab tasks | head -0`-like: stdout's reader is gone before the command writes.
    The status of a process SIGPIPE ended, and no 'error: [Errno 32] Broken pipe' line."""
    proc = subprocess.Popen([sys.executable, "-m", "rnnlab.cli", "tasks"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    with proc.stderr:
        err = proc.stderr.read()
    assert proc.wait(timeout=60) == 141 and err == b"", err


class _Died(BaseException):
    """The test's own SIGTERM handler: without rnnlab's, the signal ends the test with this
    (instead of killing pytest)."""


@pytest.fixture
def sigterm_raises():
    """SIGTERM raises _Died until the test ends; the handler is the one rnnlab must give
    back after training."""

    def died(signum, frame):
        raise _Died(signum)

    before = signal.signal(signal.SIGTERM, died)
    yield died
    signal.signal(signal.SIGTERM, before)


def signal_at(monkeypatch, at: int, *signums: int) -> None:
    """Trainer.train_step sends this process `signums` during step `at` (counted from 1)."""
    from rnnlab.train import Trainer

    train_step = Trainer.train_step

    def signalled(self, step):
        if step + 1 == at:
            for signum in signums:
                os.kill(os.getpid(), signum)
        return train_step(self, step)

    monkeypatch.setattr(Trainer, "train_step", signalled)


def test_a_second_signal_while_stopping_is_only_noted_and_the_handlers_are_given_back(
    tmp_path, capsys, monkeypatch, sigterm_raises
):
    """SIGTERM and then Ctrl-C in the same step stop once, after that step, as SIGTERM (the
    job is being ended: its status says so); the handlers before training are put back."""
    sigint_before = signal.getsignal(signal.SIGINT)
    signal_at(monkeypatch, 3, signal.SIGTERM, signal.SIGINT)
    run = tmp_path / "r"
    assert run_cli("train", "adding", "--T", 6, "--steps", 20, "--run-dir", run, *TINY) == 143
    assert io.checkpoint_steps(run) == [3]
    said = capsys.readouterr()
    assert said.err.count("terminated by SIGTERM: checkpoint saved at step 3") == 1, said.err
    assert "interrupted" not in said.err and said.out == ""
    assert signal.getsignal(signal.SIGTERM) is sigterm_raises
    assert signal.getsignal(signal.SIGINT) is sigint_before


def test_sigterm_ends_the_demo_at_once_with_its_checkpoint(tmp_path, capsys, monkeypatch,
                                                          sigterm_raises):  # fmt: skip
    """`rnnlab demo` trains through the same loop: SIGTERM stops it there, saved, exit
    status 143, without the evaluation and samples after training."""
    signal_at(monkeypatch, 2, signal.SIGTERM)
    run = tmp_path / "demo"
    assert main(["demo", "--time-limit", "60", "--run-dir", str(run), "--quiet"]) == 143
    said = capsys.readouterr()
    assert "sample before training" in said.out and "sample after training" not in said.out
    assert f"terminated by SIGTERM: checkpoint saved at step 2 in {run}; " in said.err
    assert io.checkpoint_steps(run) == [2]
    assert signal.getsignal(signal.SIGTERM) is sigterm_raises


@pytest.mark.parametrize("stop", ["SIGTERM", "divergence"])
def test_a_result_of_an_earlier_part_is_gone_once_the_run_trains_past_it(
    tmp_path, capsys, monkeypatch, stop, sigterm_raises
):
    """result.json is the test of the weights at its step: a run Ctrl-C'd at step 3 has one,
    and its resume, once it trains on, leaves none where it ends without a test of its own
    (a SIGTERM's stop, a divergence); one run to its end writes it anew. Before: the file of
    step 3 stayed beside the weights of step 6, read as the run's result."""
    from rnnlab.train import NonFiniteError, Trainer

    run = tmp_path / "r"
    signal_at(monkeypatch, 3, signal.SIGINT)
    assert run_cli("train", "adding", "--T", 6, "--steps", 20, "--run-dir", run, *TINY) == 130
    assert json.loads((run / "result.json").read_text())["train"]["step"] == 3
    monkeypatch.undo()
    if stop == "SIGTERM":
        signal_at(monkeypatch, 6, signal.SIGTERM)
    else:
        train_step = Trainer.train_step

        def diverges(self, step):
            if step + 1 == 6:
                raise NonFiniteError(f"the loss became nan at step {step + 1}")
            return train_step(self, step)

        monkeypatch.setattr(Trainer, "train_step", diverges)
    assert run_cli("train", "--resume", run, "--quiet") == (143 if stop == "SIGTERM" else 1)
    assert io.checkpoint_steps(run)[-1] == (6 if stop == "SIGTERM" else 5)
    assert not (run / "result.json").exists()
    monkeypatch.undo()
    assert run_cli("train", "--resume", run, "--quiet") == 0
    assert json.loads((run / "result.json").read_text())["train"]["step"] == 20
    capsys.readouterr()


def test_ctrl_c_ends_the_demo_s_training_and_shows_what_it_learned(tmp_path, capsys,
                                                                   monkeypatch):  # fmt: skip
    """The demo is there to show what the model learned: a Ctrl-C ends its training, and the
    test, the sample and the plots follow, said to be of the steps trained, then the way to
    train further; exit status 130, a Ctrl-C's, as `rnnlab train` (which evaluates and plots
    after one too). Before: exit status 0, and the sample read "after training"."""
    signal_at(monkeypatch, 2, signal.SIGINT)
    run = tmp_path / "demo"
    assert main(["demo", "--time-limit", "60", "--run-dir", str(run), "--quiet"]) == 130
    said = capsys.readouterr()
    assert f"interrupted: checkpoint saved at step 2 in {run}; " in said.err
    assert "held-out:" in said.out
    assert "\nsample after 2 steps (training stopped by Ctrl-C):\n" in said.out
    assert said.out.endswith(f"\ntrain it further: rnnlab train --resume {run}\n")
    result = json.loads((run / "result.json").read_text())
    assert (result["train"]["step"], result["train"]["stopped_by"]) == (2, "interrupt")


def test_an_ignored_signal_stays_ignored(tmp_path, capsys, monkeypatch):
    """A signal the process was told to ignore (SIG_IGN: a shell's background job ignores
    Ctrl-C) does not stop training: the run ends at its last step, exit 0, and the signal is
    still ignored after it. Before, training took SIGINT and SIGTERM over whatever they were,
    and a Ctrl-C meant for the foreground ended the background job's run."""
    before = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        signal_at(monkeypatch, 3, signal.SIGINT, signal.SIGTERM)
        run = tmp_path / "r"
        assert run_cli("train", "adding", "--T", 6, "--steps", 6, "--run-dir", run, *TINY) == 0
        assert io.checkpoint_steps(run)[-1] == 6
        assert "interrupted" not in capsys.readouterr().err
        assert signal.getsignal(signal.SIGINT) == signal.getsignal(signal.SIGTERM) == signal.SIG_IGN
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)


def test_training_off_the_main_thread_leaves_the_signals_alone(tmp_path, sigterm_raises):
    """Only the main thread may set handlers: a run in another thread trains, and the
    process's handlers stay as they were meanwhile."""
    import threading

    seen = []

    def train():
        seen.append(run_cli("train", "adding", "--T", 6, "--steps", 3, "--run-dir",
                            tmp_path / "r", *TINY))  # fmt: skip
        seen.append(signal.getsignal(signal.SIGTERM))

    thread = threading.Thread(target=train)
    thread.start()
    thread.join(60)
    assert seen == [0, sigterm_raises]


def test_demo_runs_end_to_end(tmp_path, capsys):
    """The README's main job, cut to a few seconds of training."""
    assert main(["demo", "--time-limit", "3", "--run-dir", str(tmp_path / "demo"), "--quiet"]) == 0
    out = capsys.readouterr().out
    for text in (
        "n-gram baselines",
        "sample before training",
        "sample after training",
        "held-out:",
        "run directory:",
    ):
        assert text in out
    assert (tmp_path / "demo" / "model.safetensors").exists()
    result = json.loads((tmp_path / "demo" / "result.json").read_text())
    assert result["train"]["stopped_by"] != "interrupt" and "sample after training:" in out


def test_bucketing_groups_similar_lengths_and_covers_the_epoch():
    from rnnlab.tasks._sequence import _SequenceTask
    from rnnlab.train import TrainConfig

    class Varied(_SequenceTask):
        readout = "last"

        def __init__(self, cfg):
            super().__init__(cfg)
            rng = np.random.default_rng(0)
            self.lengths = rng.integers(1, 41, 512)
            self.x = rng.standard_normal((512, 40, 2)).astype(np.float32)
            self.y = np.arange(512)

        def split(self, name):
            return self.x, self.y, self.lengths

    task = Varied(TrainConfig(task="digits", batch_size=8))
    seen, spreads = [], []
    for step in range(64):  # one epoch
        b = task.batch(step, None)
        assert b.x.shape[1] == b.lengths.max()  # trimmed to the longest sequence
        seen.extend(b.y.tolist())
        spreads.append(b.lengths.max() - b.lengths.min())
    assert sorted(seen) == list(range(512))
    assert np.mean(spreads) < 8  # random batches of 8 would spread over ~30 steps


def test_early_stopping_restores_the_best_weights(tmp_path, capsys):
    run = tmp_path / "r"
    # a learning rate this large makes validation worse after the first evaluation
    code = run_cli(
        "train",
        "adding",
        "--T",
        6,
        "--steps",
        200,
        "--eval-every",
        2,
        "--patience",
        2,
        "--lr",
        "0.5",
        "--optimizer",
        "sgd",
        "--clip",
        "none",
        "--run-dir",
        run,
        *TINY,
    )
    err = capsys.readouterr().err
    assert code == 0
    assert "early stopping: restored the weights of step 4" in err
    best, _ = io.load_safetensors(run / "best.safetensors")
    final, _ = io.load_safetensors(run / "model.safetensors")
    last = io.load_checkpoint(run).model
    assert any(not np.array_equal(best[k], last[k]) for k in best)  # training moved on
    for k in best:
        assert np.array_equal(best[k], final[k])
    assert io.load_weights_and_step(run / "model.safetensors")[1] == 4  # (the best's step)
    # the run ended by its rule: resumed, it trains no further and keeps the best weights
    steps = io.checkpoint_steps(run)
    assert run_cli("train", "--resume", run) == 0
    err = capsys.readouterr().err
    assert "ended at step" in err and "(early stopping; best step 4)" in err
    assert io.checkpoint_steps(run) == steps and "step 6:" not in err
    again, _ = io.load_safetensors(run / "model.safetensors")
    assert all(np.array_equal(best[k], again[k]) for k in best)
    # gradflow reads the best weights, and says their step (it said the last checkpoint's,
    # and the best's once checkpoints/ was removed: the same weights, two steps)
    import shutil

    for gone in (False, True):
        if gone:
            shutil.rmtree(run / "checkpoints")
        out = tmp_path / f"gf-{gone}"
        assert run_cli("gradflow", run, "--analyses", "spectrum", "--out", out) == 0
        assert json.loads((out / "summary.json").read_text())["source"]["step"] == 4


def test_adamw_weight_decay_is_what_was_asked_and_old_runs_keep_theirs():
    """`--weight-decay 0` with AdamW trained with 0.01 (`wd if wd else 1e-2`), and config.json
    said 0. Now none given is AdamW's own 0.01 (PyTorch's), 0 is 0; a run written before
    config.json had a format, whose 0 with AdamW trained with 0.01, is read as it trained."""
    from rnnlab.train import CONFIG_FORMAT, TrainConfig, make_optimizer

    def decay(**kw):
        return make_optimizer(TrainConfig.from_dict({"optimizer": "adamw", **kw})).weight_decay

    assert decay() == 0.01 and decay(weight_decay=0.0) == 0.0 and decay(weight_decay=0.1) == 0.1
    assert make_optimizer(TrainConfig.from_dict({"optimizer": "adam"})).weight_decay == 0.0
    old = {"train": {"optimizer": "adamw", "weight_decay": 0.0}, "model": {}}
    assert make_optimizer(TrainConfig.from_run(old, "config.json")).weight_decay == 0.01
    new = {**old, "format": CONFIG_FORMAT}
    assert make_optimizer(TrainConfig.from_run(new, "config.json")).weight_decay == 0.0
    with pytest.raises(ValueError, match=r"`weight_decay` must be a finite number >= 0"):
        TrainConfig.from_dict({"weight_decay": -1.0})


@pytest.mark.parametrize("schedule", ["cosine", "constant"])
def test_resume_with_other_steps_says_what_it_changes(tmp_path, capsys, schedule):
    """A cosine schedule is spread over --steps: resumed with more, the run's learning rate
    jumps to the new curve's, which neither an uninterrupted run of the old nor of the new
    length had. --resume says so; a constant schedule changes nothing and says nothing."""
    from rnnlab.train import CONFIG_FORMAT

    run = tmp_path / "r"
    assert run_cli("train", "adding", "--T", 4, "--steps", 4, "--checkpoint-every", 2,
                   "--schedule", schedule, "--run-dir", run, *TINY) == 0  # fmt: skip
    capsys.readouterr()
    config = json.loads((run / "config.json").read_text())
    assert config["format"] == CONFIG_FORMAT and config["train"]["weight_decay"] is None
    assert run_cli("train", "--resume", run, "--steps", 8, "--quiet") == 0
    err = capsys.readouterr().err
    if schedule == "cosine":
        assert "warning: --steps 8 (the run had 4) changes the cosine learning rate" in err
    else:
        assert "warning" not in err


def test_steps_change_says_nothing_when_the_steps_are_the_run_s():
    """An a:b teacher forcing was reported as changed by every --resume, --steps given or
    not (found by review)."""
    from rnnlab.train import TrainConfig, steps_change

    cfg = TrainConfig.from_dict({"task": "copy", "cell": "jordan", "steps": 6,
                                 "teacher_forcing": "1.0:0.5", "schedule": "cosine"})  # fmt: skip
    assert steps_change(cfg, 6, 3) == ""
    told = steps_change(cfg, 4, 3)
    assert "the cosine learning rate" in told and "teacher-forcing schedule 1.0:0.5" in told


def test_extending_a_finished_run_says_its_end_evaluation_counts_in_early_stopping(
        tmp_path, capsys):  # fmt: skip
    """A run of 30 steps evaluated at its end (off --eval-every 20); extended to 60 that
    evaluation counted toward --patience, and the run stopped where one of 60 steps from the
    start would not have (the training review). Said, where it applies."""
    run = tmp_path / "r"
    args = ("train", "adding", "--T", 4, "--steps", 6, "--eval-every", 4, "--patience", 2,
            "--run-dir", run, *TINY)  # fmt: skip
    assert run_cli(*args) == 0
    capsys.readouterr()
    assert run_cli("train", "--resume", run, "--steps", 12, "--quiet") == 0
    err = capsys.readouterr().err
    assert ("rnnlab: warning: --steps 12 (the run had 6) changes early stopping, which counts "
            "the evaluation at the run's old end (step 6, off --eval-every 4) that a run of 12 "
            "steps from the start would not have made; a new run of --steps 12 would not") in err
    from rnnlab.train import TrainConfig, steps_change

    cfg = TrainConfig.from_dict({"task": "adding", "steps": 12, "eval_every": 3, "patience": 2})
    assert steps_change(cfg, 6, 6) == ""  # step 6 was a scheduled evaluation
    cfg = TrainConfig.from_dict({"task": "adding", "steps": 12, "eval_every": 4})
    assert steps_change(cfg, 6, 6) == ""  # no early stopping


def test_a_solved_run_resumed_trains_no_further(tmp_path, capsys, monkeypatch):
    """A "solved" stop was not saved, so --resume trained on past it (20 more steps of copy,
    and the reported model moved). The task here is solved at its first evaluation."""
    from rnnlab.tasks import synthetic

    monkeypatch.setattr(synthetic.Copy, "solved", lambda self, result: True)
    run = tmp_path / "r"
    args = ("train", "copy", "--T", 3, "--steps", 40, "--eval-every", 4, "--checkpoint-every",
            1000, "--run-dir", run, *TINY)  # fmt: skip
    assert run_cli(*args) == 0
    err = capsys.readouterr().err
    assert "step 4: solved; stopping" in err
    state = json.loads((run / "checkpoints" / "step-00000004" / "state.json").read_text())
    assert state["stopped_by"] == "solved"
    before = weights(run)
    steps = io.checkpoint_steps(run)
    assert run_cli("train", "--resume", run, "--quiet") == 0
    assert "(solved; best step" in capsys.readouterr().err
    assert io.checkpoint_steps(run) == steps
    after = weights(run)
    assert all(np.array_equal(before[k], after[k]) for k in before)


def test_a_saved_per_step_run_with_reversed_input_still_loads(tmp_path, capsys):
    """New runs of per-step tasks refuse --reverse-input; one saved before (its x and y
    reversed together) still evaluates and resumes as it trained."""
    run = tmp_path / "r"
    assert run_cli("train", "copy", "--T", 3, "--steps", 4, "--checkpoint-every", 2,
                   "--run-dir", run, *TINY) == 0  # fmt: skip
    for path in [run / "config.json", *run.glob("checkpoints/step-*/config.json")]:
        config = json.loads(path.read_text())
        config["train"]["reverse_input"] = True  # what a run of the old code recorded
        path.write_text(json.dumps(config))
    capsys.readouterr()
    assert run_cli("evaluate", run) == 0
    assert run_cli("train", "--resume", run, "--steps", 6, "--quiet") == 0
    assert "reverse_input" not in capsys.readouterr().err


def test_a_saved_jordan_run_with_dropout_still_loads(tmp_path, capsys):
    """An output-feedback model has no dropout and no learned initial state: models.build
    refuses them in a spec, a run says that one given has no effect (charlm's default
    dropout of 0.2 is not one given: a Jordan charlm trains with the task's defaults), and a
    run saved with them in its spec evaluates and resumes as it trained."""
    assert run_cli("train", "charlm", "--cell", "jordan", "--hidden", 8, "--embed", 4,
                   "--steps", 2, "--batch-size", 2, "--seq-len", 8, "--quiet",
                   "--run-dir", tmp_path / "c") == 0  # fmt: skip
    assert "warning" not in capsys.readouterr().err
    assert run_cli("train", "copy", "--T", 3, "--cell", "jordan", "--dropout", 0.3, "--steps",
                   1, "--run-dir", tmp_path / "d", *TINY) == 0  # fmt: skip
    assert ("warning: `dropout` has no effect on an output-feedback model (cell 'jordan' has "
            "no dropout)") in capsys.readouterr().err  # fmt: skip
    assert run_cli("train", "copy", "--T", 3, "--cell", "jordan-elman", "--initial-state",
                   "learned", "--steps", 1, "--run-dir", tmp_path / "e", *TINY) == 0  # fmt: skip
    assert ("warning: `initial_state` has no effect on an output-feedback model (cell "
            "'jordan-elman' has no initial state)") in capsys.readouterr().err  # fmt: skip
    run = tmp_path / "r"
    assert run_cli("train", "copy", "--T", 3, "--cell", "jordan", "--steps", 4,
                   "--checkpoint-every", 2, "--run-dir", run, *TINY) == 0  # fmt: skip
    for path in [run / "config.json", *run.glob("checkpoints/step-*/config.json")]:
        config = json.loads(path.read_text())  # what a run of the old code recorded
        config["train"].update(dropout=0.3, initial_state="learned")
        config["model"]["rnn"].update(dropout=0.3, initial_state="learned")
        config["model"]["output_dropout"] = 0.3
        path.write_text(json.dumps(config))
    before = weights(run)
    capsys.readouterr()
    assert run_cli("evaluate", run) == 0
    assert run_cli("train", "--resume", run, "--steps", 6, "--quiet") == 0
    after = weights(run)
    assert before.keys() == after.keys() and any(
        not np.array_equal(before[k], after[k]) for k in before
    )


def test_late_added_messages(tmp_path, capsys):
    assert "`--teacher-forcing` must be a probability" in error_of(
        capsys, "train", "copy", "--teacher-forcing", "1.5"
    )
    assert "`--bidirectional` must be off for charlm" in error_of(
        capsys, "train", "charlm", "--bidirectional", "--steps", "1"
    )
    assert "needs a task with an output at every step" in error_of(
        capsys, "train", "adding", "--cell", "jordan", "--steps", "1"
    )
    run = tmp_path / "r"
    assert run_cli("train", "adding", "--T", 6, "--steps", 2, "--run-dir", run, *TINY) == 0
    capsys.readouterr()
    assert "already holds a run" in error_of(capsys, "train", "adding", "--run-dir", run)


def test_checkpoint_every_is_validated():
    from rnnlab import LSTM

    with pytest.raises(ValueError, match=r"`checkpoint_every` must be a non-negative integer"):
        LSTM(2, 3, rng=0).forward(np.zeros((1, 4, 2), np.float32), checkpoint_every=-1)


def test_evaluate_json_of_a_diverged_model_prints_null_and_why(tmp_path, capsys):
    """JSON has no NaN: a model whose outputs overflow gets null and the reason."""
    run = tmp_path / "r"
    argv = ["train", "adding", "--T", 6, "--steps", 2, "--cell", "relu", "--run-dir", run]
    assert run_cli(*argv, "--hidden", 8, "--batch-size", 4, "--quiet") == 0
    ckpt = io.load_checkpoint(run)
    huge = {k: np.full_like(v, 1e30) for k, v in ckpt.model.items()}  # finite, but overflows
    io.save_checkpoint(run, ckpt.step + 1, model=huge, optimizer=ckpt.optimizer,
                       state=ckpt.state, config=ckpt.config)  # fmt: skip
    capsys.readouterr()
    assert run_cli("evaluate", run, "--json") == 0
    out, err = capsys.readouterr()
    result = json.loads(out, parse_constant=lambda c: pytest.fail(f"{c} in the JSON"))
    assert result["mse"] is None
    assert "mse not finite" in result["non_finite"] and "diverged" in err


def test_a_charlm_run_keeps_its_vocabulary(tmp_path, monkeypatch, capsys):
    """evaluate and sample use the vocabulary stored in the run, not one rebuilt from the
    data path in config.json: a relative path works from another directory, an edited text
    is said and read with the run's mapping, and sampling needs no corpus at all."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "c.txt").write_text("the quick brown fox jumps over the lazy dog. " * 400)
    monkeypatch.chdir(work)
    argv = ["train", "charlm", "--data", "c.txt", "--steps", 3, "--seq-len", 16]
    assert run_cli(*argv, "--run-dir", tmp_path / "lm", *TINY) == 0
    run = tmp_path / "lm"
    stored = json.loads((run / "config.json").read_text())["data"]
    assert stored["path"] == str(work / "c.txt") and len(stored["corpus_sha256"]) == 64
    monkeypatch.chdir(tmp_path)  # the relative path no longer resolves from here
    capsys.readouterr()
    assert run_cli("evaluate", run, "--json") == 0
    first = json.loads(capsys.readouterr().out)
    assert first["unknown_chars"] == 0
    # the text is edited: new characters are unknown to the run, and that is said
    (work / "c.txt").write_text("the lazy dog. " * 400 + "THE QUICK BROWN FOX! " * 400)
    assert run_cli("evaluate", run, "--json") == 0
    out, err = capsys.readouterr()
    assert "has changed since the run was trained" in err
    assert json.loads(out)["unknown_chars"] > 0
    # other text, on purpose
    other = tmp_path / "other.txt"
    other.write_text("a dog; " * 400)
    assert run_cli("evaluate", run, "--json", "--data", other) == 0
    assert json.loads(capsys.readouterr().out)["unknown_chars"] > 0
    (work / "c.txt").unlink()
    assert run_cli("sample", run, "--prime", "the ", "--length", 10) == 0
    assert capsys.readouterr().out.startswith("the ")


def test_resume_refuses_a_charlm_corpus_that_changed_since_the_checkpoint(capsys, tmp_path):
    """--resume promises the weights of an uninterrupted run; with the corpus edited it
    trained on the new text after a warning written for `evaluate`, and overwrote
    config.json's corpus_sha256 with the new text's, so no later command said it again.
    Refused in one line naming the file, both hashes and the way out; nothing rewritten."""
    import hashlib
    import random
    import shutil

    data = tmp_path / "data.txt"
    rng = random.Random(0)
    data.write_text("".join(rng.choice("abc \n") for _ in range(3000)))
    run = tmp_path / "run"
    argv = ["train", "charlm", "--data", data, "--steps", 4, "--checkpoint-every", 2,
            "--eval-every", 2, "--seq-len", 10]  # fmt: skip
    assert run_cli(*argv, "--run-dir", run, *TINY) == 0
    shutil.rmtree(run / "checkpoints" / "step-00000004")
    (run / "checkpoints" / "latest").write_text("step-00000002")
    before = {p: p.read_bytes() for p in run.rglob("config.json")}
    recorded = json.loads((run / "config.json").read_text())["data"]["corpus_sha256"]
    new_text = "".join(rng.choice("xyz \n") for _ in range(3000))
    data.write_text(new_text)
    capsys.readouterr()
    try:
        code = run_cli("train", "--resume", run, "--quiet")
    except SystemExit as e:
        code = e.code
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if not line.startswith("rnnlab: warning:")]
    assert code not in (0, None), err
    assert len(lines) == 1 and lines[0].startswith("rnnlab: error: "), err
    now = hashlib.sha256(new_text.encode()).hexdigest()
    for said in (str(data), recorded[:12], now[:12], "put the run's text back", "new run"):
        assert said in lines[0], lines[0]
    assert "Traceback" not in err
    assert {p: p.read_bytes() for p in run.rglob("config.json")} == before
    assert io.load_checkpoint(run).step == 2
    # the text put back: the run resumes
    rng = random.Random(0)
    data.write_text("".join(rng.choice("abc \n") for _ in range(3000)))
    assert run_cli("train", "--resume", run, "--quiet") == 0
    assert io.load_checkpoint(run).step == 4


@pytest.mark.parametrize("optimizer,lr", [("sgd", "1e6"), ("sgd", "1e30")])
def test_a_gradient_that_overflows_in_backward_stops_the_run(tmp_path, capsys, optimizer, lr):
    """A finite loss whose gradient overflows inside backward (or an update that overflows
    the weights) stops like a non-finite loss: the step, a remedy, and finite weights kept
    in a checkpoint that loads; never `d_output must be finite` from deep inside."""
    run = tmp_path / "r"
    argv = ["train", "adding", "--optimizer", optimizer, "--lr", lr, "--clip", "none",
            "--steps", 50, "--T", 20, "--hidden", 8, "--batch-size", 4,
            "--run-dir", run]  # fmt: skip
    code = run_cli(*argv, "--quiet")
    err = capsys.readouterr().err
    assert code == 1, err
    assert "at step" in err or "in the update of step" in err, err
    assert "learning rate" in err and "d_output" not in err, err
    for step in io.checkpoint_steps(run):
        ckpt = io.load_checkpoint(run, step)
        assert all(np.isfinite(v).all() for v in ckpt.model.values())


def _tiny_adding():
    """(cfg, task, spec, model) of a 5-step adding run checkpointed at every step."""
    from rnnlab import tasks
    from rnnlab.train import TrainConfig

    cfg = TrainConfig.from_dict({**tasks.defaults("adding"), "T": 6, "hidden": 4,
                                 "batch_size": 2, "steps": 5, "checkpoint_every": 1})  # fmt: skip
    task = tasks.make_task(cfg)
    spec = tasks.model_spec(cfg, task)
    return cfg, task, spec, tasks.build_model(spec)


def test_a_finite_loss_whose_gradient_overflows_inside_the_model(tmp_path):
    from rnnlab.train import NonFiniteError, Trainer

    cfg, task, spec, model = _tiny_adding()
    real, calls = task.loss, []

    def loss(output, batch):  # at the third step ∂L/∂ŷ is finite but ∂L/∂h overflows
        value, d = real(output, batch)
        calls.append(1)
        return value, np.full_like(d, 3e38) if len(calls) == 3 else d

    task.loss = loss
    model.params["2.weight"][...] = 4.0  # ∂L/∂h = 4 · 3e38 overflows float32
    with pytest.raises(NonFiniteError, match=r"module 1's output \(LastStep\) became NaN or inf "
                       r"at step 3.*Good weights of step 2 saved"):  # fmt: skip
        Trainer(model, task, cfg, tmp_path / "r", spec=spec, quiet=True).run()
    assert io.checkpoint_steps(tmp_path / "r")[-1] == 2


def test_an_optimizer_state_that_overflows_stops_the_run(tmp_path):
    """Adam's running square overflowing float32 (|g| ~ 1e22, no clipping) leaves the
    weights finite but frozen for good (their steps m/√v are 0) and a checkpoint that
    --resume refuses: the run stops there as for an overflowing weight, the last good
    checkpoint kept and resumable."""
    from rnnlab import tasks
    from rnnlab.train import NonFiniteError, TrainConfig, Trainer

    cfg = TrainConfig.from_dict({**tasks.defaults("adding"), "T": 6, "hidden": 8,
                                 "batch_size": 4, "steps": 6, "clip": "none",
                                 "optimizer": "adam", "checkpoint_every": 1})  # fmt: skip
    task = tasks.make_task(cfg)
    spec = tasks.model_spec(cfg, task)
    model = tasks.build_model(spec)
    real, calls = task.loss, []

    def loss(output, batch):  # one step with an exploding (but float32-finite) gradient
        value, d = real(output, batch)
        calls.append(1)
        return value, d * np.float32(1e22) if len(calls) == 3 else d

    task.loss = loss
    with pytest.raises(NonFiniteError, match=r"the adam optimizer's running squares \(v/.*"
                       r"became NaN or inf in the update of step 3"):  # fmt: skip
        Trainer(model, task, cfg, tmp_path / "r", spec=spec, quiet=True).run()
    assert io.checkpoint_steps(tmp_path / "r")[-1] == 2
    ckpt = io.load_checkpoint(tmp_path / "r", 2)
    assert all(np.isfinite(v).all() for v in ckpt.optimizer.values())


def test_the_trainer_logs_what_its_gradient_callbacks_return(tmp_path):
    """The Trainer knows no diagnostics: the gradient records of metrics.jsonl are the merged
    dicts of the callbacks it is given, every grad_log_every steps, with the lag flag at the
    evaluation steps; without callbacks it logs none."""
    from rnnlab import tasks
    from rnnlab.train import TrainConfig, Trainer

    cfg = TrainConfig.from_dict({**tasks.defaults("adding"), "T": 4, "hidden": 3,
                                 "batch_size": 2, "steps": 6, "grad_log_every": 2,
                                 "eval_every": 4, "checkpoint_every": 6})  # fmt: skip
    calls = []

    def norms(model, batch, before, after, with_lags):
        calls.append(with_lags)
        assert set(before) == set(after) == set(model.params) and batch.x.shape[0] == 2
        return {"n": len(calls)}

    def lags(model, batch, before, after, with_lags):
        return {"lags": with_lags} if with_lags else None

    for run, logs in (("a", [norms, lags]), ("b", ())):
        task = tasks.make_task(cfg)
        spec = tasks.model_spec(cfg, task)
        model = tasks.build_model(spec, seed=cfg.seed)
        Trainer(model, task, cfg, tmp_path / run, spec=spec, quiet=True, gradient_log=logs).run()
    records = [r for r in io.read_jsonl(tmp_path / "a" / "metrics.jsonl") if "kind" in r]
    assert calls == [False, True, False]
    assert records == [{"step": 2, "kind": "gradients", "n": 1},
                       {"step": 4, "kind": "gradients", "n": 2, "lags": True},
                       {"step": 6, "kind": "gradients", "n": 3}]  # fmt: skip
    assert not [r for r in io.read_jsonl(tmp_path / "b" / "metrics.jsonl") if "kind" in r]


def _lose_every_checkpoint(run: Path) -> None:
    """What a run killed before its first checkpoint (or stopped by a full disk while
    writing it) leaves: config.json, metrics.jsonl, a half-built checkpoint, a temp file."""
    import shutil

    shutil.rmtree(run / "checkpoints")
    (run / "checkpoints" / ".tmp-step-00000008-0123abcd").mkdir(parents=True)
    (run / "model.safetensors").unlink()
    (run / ".model.safetensors.0123abcd.tmp").write_bytes(b"torn")
    for name in ("result.json", "best.safetensors"):
        (run / name).unlink(missing_ok=True)


@pytest.mark.parametrize("how", ["resume", "run-dir"])
def test_a_run_stopped_before_its_first_checkpoint_starts_again(tmp_path, capsys, how):
    argv = ["adding", "--T", 6, "--steps", 8, "--eval-every", 4, "--checkpoint-every", 100]
    assert run_cli("train", *argv, "--run-dir", tmp_path / "a", *TINY) == 0
    assert run_cli("train", *argv, "--run-dir", tmp_path / "b", *TINY) == 0
    _lose_every_checkpoint(tmp_path / "b")
    capsys.readouterr()
    if how == "resume":
        assert run_cli("train", "--resume", tmp_path / "b", "--quiet") == 0
        assert "no checkpoint yet: starting it again from step 0" in capsys.readouterr().err
    else:
        assert run_cli("train", *argv, "--run-dir", tmp_path / "b", *TINY) == 0
    a, b = weights(tmp_path / "a"), weights(tmp_path / "b")
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not (tmp_path / "b" / ".model.safetensors.0123abcd.tmp").exists()
    assert not list((tmp_path / "b" / "checkpoints").glob(".tmp-*"))
    ma, mb = (io.read_jsonl(tmp_path / r / "metrics.jsonl") for r in "ab")
    assert [_untimed(r) for r in mb] == [_untimed(r) for r in ma]


def test_a_failed_start_leaves_no_run_directory(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert run_cli("train", "charlm", "--data", tmp_path / "missing.txt", "--quiet") == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").iterdir())


def test_resume_refuses_settings_it_would_ignore(tmp_path, capsys):
    run = tmp_path / "r"
    assert run_cli("train", "adding", "--T", 6, "--steps", 2, "--run-dir", run, *TINY) == 0
    capsys.readouterr()
    assert run_cli("train", "--resume", run, "--lr", "0.5") == 2
    err = capsys.readouterr().err
    assert "`--resume` continues a run with the settings in its config.json; got --lr" in err


def test_train_and_plot_write_plots_to_one_place_and_say_where(tmp_path, capsys):
    run = tmp_path / "r"
    assert run_cli("train", "adding", "--T", 6, "--steps", 10, "--run-dir", run, *TINY) == 0
    out = capsys.readouterr().out
    assert f"plots: {run / 'plots'} (loss.png" in out
    assert (run / "plots" / "loss.png").read_bytes()[:4] == b"\x89PNG"
    assert not list(run.glob("*.png"))
    # a planted link is replaced, not written through
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (run / "plots" / "loss.png").unlink()
    (run / "plots" / "loss.png").symlink_to(victim)
    assert run_cli("plot", run) == 0
    assert victim.read_text() == "precious"
    assert str(run / "plots" / "loss.png") in capsys.readouterr().out
    assert not (run / "plots" / "loss.png").is_symlink()


def test_a_run_stopped_before_it_logged_says_why_it_has_no_plots(tmp_path, capsys, monkeypatch):
    """A run interrupted at its first step has no metrics.jsonl: the end of `rnnlab train`
    said "no plots: `run` must be a run directory with a metrics.jsonl (a run that has
    trained); got '...', which has none instead." (the error form, for a note). It says what
    is missing and why; `rnnlab plot` refuses the run with the same words."""
    from rnnlab.train import Trainer

    monkeypatch.setattr(Trainer, "_signals_before", lambda self: {signal.SIGINT})  # at once
    run = tmp_path / "r"
    argv = ["train", "adding", "--T", 6, "--steps", 20, "--eval-every", 5, "--run-dir", run]
    assert run_cli(*argv, *TINY) == 130
    assert not (run / "metrics.jsonl").exists()
    said = (
        f"'{run}' has logged no metrics yet (no metrics.jsonl): training logs the loss every "
        "10 steps and the validation metrics every --eval-every steps, and the run has reached "
        "neither"
    )
    err = capsys.readouterr().err
    assert f"rnnlab: warning: no plots: {said}\n" in err
    assert "instead" not in err and "must be" not in err
    assert run_cli("plot", run) == 2
    assert said in capsys.readouterr().err


def test_a_run_directory_from_before_hashes_and_stored_vocabularies_still_works(
    tmp_path, corpus, capsys
):
    """Runs written before checkpoints recorded hashes.json and charlm runs stored their
    vocabulary load, evaluate, sample and resume as they did (the vocabulary rebuilt from
    the data file, the weights unchecked)."""
    run = tmp_path / "old"
    argv = ["train", "charlm", "--data", corpus, "--steps", 3, "--seq-len", 16, "--run-dir", run]
    assert run_cli(*argv, *TINY) == 0
    for path in [run / "config.json", *run.glob("checkpoints/step-*/config.json")]:
        config = json.loads(path.read_text())
        del config["data"]
        path.write_text(json.dumps(config))
    for path in run.glob("checkpoints/step-*/hashes.json"):
        path.unlink()
    capsys.readouterr()
    assert run_cli("evaluate", run, "--json") == 0
    assert json.loads(capsys.readouterr().out)["chars"] > 0
    assert run_cli("sample", run, "--prime", "the ", "--length", 5) == 0
    assert run_cli("train", "--resume", run, "--steps", 4, "--quiet") == 0
    assert io.load_checkpoint(run).step == 4


def test_a_validation_that_is_not_finite_stops_the_run_with_its_weights_kept(
    tmp_path, capsys, monkeypatch
):
    """A validation metric of NaN or inf (outputs that overflow on the validation data) is
    neither better nor worse than another: the run stops as for a diverged step, naming the
    metric and the step, with the (finite) weights saved in a checkpoint that resumes; no
    NaN reaches metrics.jsonl or state.json."""
    from rnnlab.tasks import synthetic

    adding_eval = synthetic.Adding.evaluate

    validations: list[int] = []

    def overflowing(self, model, split):  # the second validation (step 4) overflows
        result = adding_eval(self, model, split)
        if split == "valid":
            validations.append(1)
            if len(validations) == 2:
                return {**result, "mse": math.inf}
        return result

    monkeypatch.setattr(synthetic.Adding, "evaluate", overflowing)
    run = tmp_path / "r"
    argv = ["train", "adding", "--T", 6, "--steps", 8, "--eval-every", 2, "--run-dir", run]
    assert run_cli(*argv, *TINY) == 1
    err = capsys.readouterr().err
    assert "the validation mse became inf at step 4" in err and "learning rate" in err
    assert "The weights of step 4 are saved in" in err
    assert io.checkpoint_steps(run)[-1] == 4
    assert "Infinity" not in (run / "metrics.jsonl").read_text()
    monkeypatch.setattr(synthetic.Adding, "evaluate", adding_eval)
    assert run_cli("train", "--resume", run, "--quiet") == 0  # the checkpoint is whole
    assert json.loads((run / "result.json").read_text())["train"]["step"] == 8


def test_a_test_result_that_is_not_finite_is_null_in_result_json(tmp_path, capsys, monkeypatch):
    """JSON has no NaN: result.json holds null for a test metric that overflowed, says which
    in "non_finite", and the run's end warns of it (as `rnnlab evaluate --json`)."""
    from rnnlab.tasks import synthetic

    adding_eval = synthetic.Adding.evaluate
    monkeypatch.setattr(synthetic.Adding, "evaluate", lambda self, model, split: {
        **adding_eval(self, model, split), **({"mse": math.nan} if split == "test" else {})})
    run = tmp_path / "r"
    assert run_cli("train", "adding", "--T", 6, "--steps", 2, "--run-dir", run, *TINY) == 0
    assert "mse not finite" in capsys.readouterr().err
    result = json.loads((run / "result.json").read_text(),
                        parse_constant=lambda c: pytest.fail(f"{c} in the JSON"))  # fmt: skip
    assert result["test"]["mse"] is None and "mse not finite" in result["test"]["non_finite"]
    assert result["test"]["baseline_mse"] > 0  # the finite entries as they were


def test_a_run_early_stopping_ended_is_read_back_with_its_best_weights(tmp_path, capsys):
    """Early stopping hands back the best weights it validated, and the run's result.json
    tests them: evaluate, export and the other commands that read the run use them too, not
    the last checkpoint's (evaluate printed another test result than training's, and the
    exported model was not the one reported)."""
    from rnnlab import runs

    run = tmp_path / "es"
    argv = ["train", "adding", "--T", 20, "--hidden", 16, "--steps", 200, "--eval-every", 5,
            "--checkpoint-every", 5, "--patience", 2, "--lr", 0.05, "--batch-size", 8]  # fmt: skip
    assert run_cli(*argv, "--run-dir", run, "--quiet") == 0
    result = json.loads((run / "result.json").read_text())
    assert result["train"]["stopped_by"] == "early stopping", result["train"]
    last = io.load_checkpoint(run)
    assert last.step > result["train"]["best_step"]  # the last checkpoint is past the best
    best = io.load_weights(run / "best.safetensors")
    assert any(not np.array_equal(best[k], last.model[k]) for k in best)
    _, _, model, _ = runs.load_run(run)
    assert all(np.array_equal(model.params[k], best[k]) for k in best)
    capsys.readouterr()
    assert run_cli("evaluate", run, "--json") == 0
    assert json.loads(capsys.readouterr().out)["mse"] == result["test"]["mse"]
    # an explicit checkpoint is that checkpoint's weights
    at_last = runs.load_checkpoint_model(run, last.step)[2]
    assert all(np.array_equal(at_last.params[k], last.model[k]) for k in best)


def test_resume_refuses_steps_it_cannot_train_to(tmp_path, capsys):
    """--resume --steps N below the run's step, or any other --steps for a run that ended by
    its own rule, trains nothing: refused in one line, config.json unchanged (it was rewritten
    to say steps the run never trained to)."""
    run = tmp_path / "r"
    assert run_cli("train", "adding", "--T", 6, "--steps", 6, "--run-dir", run, *TINY) == 0
    config = (run / "config.json").read_bytes()
    capsys.readouterr()
    assert run_cli("train", "--resume", run, "--steps", 4, "--quiet") == 2
    err = capsys.readouterr().err
    assert "`--steps` must be at least 6, the step" in err and err.count("\n") == 1
    assert (run / "config.json").read_bytes() == config
    assert run_cli("train", "--resume", run, "--steps", 6, "--quiet") == 0  # its own: fine
    solved = tmp_path / "s"
    argv = ["train", "adding", "--T", 20, "--hidden", 16, "--steps", 200, "--eval-every", 5,
            "--patience", 2, "--lr", 0.05, "--batch-size", 8]  # (it stops at step 40)
    assert run_cli(*argv, "--run-dir", solved, "--quiet") == 0
    stop = json.loads((solved / "result.json").read_text())["train"]["stopped_by"]
    assert stop == "early stopping"
    config = (solved / "config.json").read_bytes()
    capsys.readouterr()
    assert run_cli("train", "--resume", solved, "--steps", 5000, "--quiet") == 2
    err = capsys.readouterr().err
    assert "`--steps` cannot train" in err and "(early stopping)" in err
    assert (solved / "config.json").read_bytes() == config


def test_a_run_dir_for_a_new_run_is_checked_by_train_and_demo(tmp_path, capsys, monkeypatch):
    """`rnnlab demo --run-dir` makes the checks `train` makes (it wrote into a folder of other
    files, and over a finished run); a file or a link to nothing is refused by name (it was
    "[Errno 17] File exists" after "training ... into"); a bad RNNLAB_* variable is said
    before any run directory is made."""
    from rnnlab import settings

    SMALL = ["--hidden", 8, "--batch-size", 4, "--quiet"]
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("x")
    run = tmp_path / "r"
    assert run_cli("train", "adding", "--T", 6, "--steps", 2, "--run-dir", run, *TINY) == 0
    (tmp_path / "file").write_text("x")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    cases = [(other, "holds other files"), (run, "already holds a run"),
             (tmp_path / "file", "is a file"), (tmp_path / "dangling", "is a link to nothing")]
    for where, message in cases:
        for command in (["train", "adding", "--T", 6, "--steps", 2, *SMALL], ["demo"]):
            before = sorted(tmp_path.rglob("*"))
            capsys.readouterr()
            assert run_cli(*command, "--run-dir", where) == 2, (command, where)
            out, err = capsys.readouterr()
            assert "`--run-dir` must be" in err and message in err and err.count("\n") == 1
            assert "training" not in err + out and sorted(tmp_path.rglob("*")) == before
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RNNLAB_NUM_THREADS", "two")
    settings._held.clear()  # read at the next use, as in a new process
    for command in (["train", "adding", "--T", 6, "--steps", 2, *SMALL], ["demo"]):
        capsys.readouterr()
        assert run_cli(*command, "--run-dir", tmp_path / "new") == 2
        assert "RNNLAB_NUM_THREADS" in capsys.readouterr().err
        assert not (tmp_path / "new").exists() and not (tmp_path / "runs").exists()
    monkeypatch.delenv("RNNLAB_NUM_THREADS")


def test_a_checkpoint_from_another_run_is_refused_by_every_command(tmp_path, capsys):
    """A checkpoint copied in from another run (another task and model): --resume refused it,
    and evaluate read it as if it were the run's (a charlm report for an adding run)."""
    import shutil

    adding, other = tmp_path / "a", tmp_path / "b"
    assert run_cli("train", "adding", "--T", 6, "--steps", 2, "--run-dir", adding,
                   "--hidden", 8, "--batch-size", 4, "--quiet") == 0  # fmt: skip
    assert run_cli("train", "copy", "--T", 5, "--steps", 2, "--run-dir", other,
                   "--hidden", 8, "--batch-size", 4, "--quiet") == 0  # fmt: skip
    target = adding / "checkpoints" / "step-00000002"
    shutil.rmtree(target)
    shutil.copytree(other / "checkpoints" / "step-00000002", target)
    for command in (["evaluate", adding], ["train", "--resume", adding], ["export", adding]):
        capsys.readouterr()
        assert run_cli(*command) == 2, command
        err = capsys.readouterr().err
        assert "the checkpoint comes from another run" in err and err.count("\n") == 1, err


def test_a_run_being_trained_is_not_trained_by_a_second_process(tmp_path, capsys):
    """Two processes training one run directory (a --resume while it still trains) wrote
    over each other's checkpoints and log (duplicated, out-of-order steps in metrics.jsonl):
    the second is refused, naming the process holding the run; once it lets go, the resume
    trains."""
    run = tmp_path / "r"
    argv = ["train", "adding", "--T", 6, "--steps", 4, "--checkpoint-every", 2, "--run-dir", run]
    assert run_cli(*argv, "--hidden", 8, "--batch-size", 4, "--quiet") == 0
    log = (run / "metrics.jsonl").read_bytes()
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from rnnlab import io\n"
        "with io.training_lock(Path(sys.argv[1])):\n"
        "    print('held', flush=True); time.sleep(60)\n"), str(run)],
        stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        capsys.readouterr()
        assert run_cli("train", "--resume", run, "--steps", 8, "--quiet") == 2
        err = capsys.readouterr().err
        assert f"is being trained by another process (pid {holder.pid})" in err
        assert "resuming" not in err  # (said before the refusal, as if it went on)
        assert (run / "metrics.jsonl").read_bytes() == log and io.checkpoint_steps(run)[-1] == 4
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
    assert run_cli("train", "--resume", run, "--steps", 8, "--quiet") == 0  # (let go: it died)
    assert io.checkpoint_steps(run)[-1] == 8


def test_a_charlm_run_whose_text_moved_says_so_with_the_remedy(tmp_path, capsys, monkeypatch):
    """The run's training text moved away: evaluate said "--data: `path` must be ... got
    'c.txt'" (an option never given, the relative path); now it names the stored text and
    what to do. Scoring other text with --data still works."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.txt").write_text("the quick brown fox jumps over the lazy dog. " * 400)
    argv = ["train", "charlm", "--data", "c.txt", "--steps", 2, "--seq-len", 16]
    assert run_cli(*argv, "--run-dir", tmp_path / "lm", *TINY) == 0
    (tmp_path / "c.txt").rename(tmp_path / "elsewhere.txt")
    for command in (["evaluate", tmp_path / "lm"], ["train", "--resume", tmp_path / "lm"]):
        capsys.readouterr()
        assert run_cli(*command) == 2
        err = capsys.readouterr().err
        assert f"the run's training text '{tmp_path / 'c.txt'}'" in err, err
        assert "is not there any more" in err and "--data FILE" in err and err.count("\n") == 1
    assert run_cli("evaluate", tmp_path / "lm", "--data", tmp_path / "elsewhere.txt") == 0


def test_messages_name_an_adding_run_with_its_article(tmp_path, capsys):
    run = tmp_path / "r"
    assert run_cli("train", "adding", "--T", 6, "--steps", 1, "--run-dir", run, "--hidden", 8,
                   "--batch-size", 4, "--quiet") == 0  # fmt: skip
    capsys.readouterr()
    assert run_cli("sample", run) == 2
    assert f"'{run}' is an adding run" in capsys.readouterr().err


def test_a_charlm_text_too_short_for_the_batch_names_the_options(tmp_path, capsys):
    """It said "`data` must hold enough text for 32 tracks of 100 characters": the option is
    --data, and the way out is more text or a smaller --batch-size or --seq-len."""
    short = tmp_path / "s.txt"
    short.write_text("hello world, a short text. " * 60)
    capsys.readouterr()
    assert run_cli("train", "charlm", "--data", short, "--steps", 1, "--quiet",
                   "--run-dir", tmp_path / "r") == 2  # fmt: skip
    err = capsys.readouterr().err
    assert ("`--data` must hold enough text for 32 tracks (`--batch-size`) of 100 characters "
            "(`--seq-len`) in its training piece (at least 3,593 characters in all); got ") in err
    assert "or a smaller `--batch-size` or `--seq-len`." in err and err.count("\n") == 1
    # --bptt sets the window where given; the task says `bptt`, rnnlab train the option
    assert run_cli("train", "charlm", "--data", short, "--steps", 1, "--quiet", "--bptt", 50,
                   "--batch-size", 64, "--run-dir", tmp_path / "r") == 2  # fmt: skip
    err = capsys.readouterr().err
    assert ("`--data` must hold enough text for 64 tracks (`--batch-size`) of 50 characters "
            "(`--bptt`) in ") in err and "or a smaller `--batch-size` or `--bptt`." in err
    assert not (tmp_path / "r").exists()
    # the same text is scored by a run that trained elsewhere: evaluation cuts no tracks of
    # --batch-size (it refused it by the training rule, with advice evaluate has no option for)
    long = tmp_path / "l.txt"
    long.write_text("hello world, a longer text. " * 200)
    assert run_cli("train", "charlm", "--data", long, "--steps", 1, "--quiet", "--hidden", 8,
                   "--embed", 4, "--run-dir", tmp_path / "r") == 0  # fmt: skip
    capsys.readouterr()
    assert run_cli("evaluate", tmp_path / "r", "--data", short, "--json") == 0
    assert json.loads(capsys.readouterr().out)["chars"] > 0


def test_a_new_run_from_python_is_refused_before_its_directory_holds_anything(tmp_path):
    """A Trainer built in Python met the too-short text at its first batch, after run() had
    written config.json and the lock: run() now asks the task what a new run may not ask for
    first (as `rnnlab train` does); a run taken up from its checkpoint is not asked again."""
    from rnnlab import tasks
    from rnnlab.train import TrainConfig, Trainer

    short = tmp_path / "s.txt"
    short.write_text("hello world, a short text. " * 60)
    cfg = TrainConfig.from_dict({**tasks.defaults("charlm"), "data": str(short), "steps": 1})
    task = tasks.make_task(cfg)
    spec = tasks.model_spec(cfg, task)
    trainer = Trainer(tasks.build_model(spec), task, cfg, tmp_path / "r", spec=spec, quiet=True)
    with pytest.raises(ValueError, match=r"`data` must hold enough text for 32 tracks "):
        trainer.run()
    assert not (tmp_path / "r").exists()
    # a copy task asked to read its input reversed (per-step targets): refused for a new run
    cfg = TrainConfig.from_dict({**tasks.defaults("copy"), "hidden": 8, "batch_size": 4,
                                 "steps": 2, "checkpoint_every": 1})  # fmt: skip
    task = tasks.make_task(cfg)
    spec = tasks.model_spec(cfg, task)
    Trainer(tasks.build_model(spec), task, cfg, tmp_path / "c", spec=spec, quiet=True).run()
    cfg.reverse_input = True
    task = tasks.make_task(cfg)
    with pytest.raises(ValueError, match=r"`reverse_input` must be off for the copy task"):
        Trainer(tasks.build_model(spec), task, cfg, tmp_path / "c2", spec=spec,
                quiet=True).run()  # fmt: skip
    assert not (tmp_path / "c2").exists()
    # ... but a run taken up from a checkpoint is not a new run, not even from step 0 (a run
    # whose first step overflowed keeps the weights of step 0): not asked again
    first = Trainer(tasks.build_model(spec), task, cfg, tmp_path / "c0", spec=spec, quiet=True)
    first.save()
    resumed = Trainer(tasks.build_model(spec), task, cfg, tmp_path / "c0", spec=spec, quiet=True)
    resumed.restore(io.load_checkpoint(tmp_path / "c0", 0))
    assert resumed.run()["step"] == 2
    # ... nor a saved run that `train --resume` starts again for want of a checkpoint (its
    # settings were taken when it started; it was refused, with advice --resume cannot follow)
    run = tmp_path / "saved"
    run.mkdir()
    config = json.loads((tmp_path / "c" / "config.json").read_text())
    config["train"]["reverse_input"] = True
    (run / "config.json").write_text(json.dumps(config))
    assert run_cli("train", "--resume", run, "--quiet") == 0
    assert io.checkpoint_steps(run)[-1] == 2


def test_a_zoneout_string_in_toml_is_refused_naming_the_list_form(tmp_path, capsys):
    config = tmp_path / "z.toml"
    config.write_text('zoneout = "0,0.5"\n')
    capsys.readouterr()
    assert run_cli("train", "adding", "--config", config, "--run-dir", tmp_path / "r") == 2
    err = capsys.readouterr().err
    assert "`zoneout` must be a number in [0, 1), or a pair [p_h, p_c] of them (in TOML: " \
        "zoneout = [0.0, 0.5]); got '0,0.5' (str) instead." in err, err  # fmt: skip
    config.write_text("zoneout = [0.0, 0.5]\n")
    assert run_cli("train", "adding", "--config", config, "--T", 5, "--steps", 1, "--hidden", 4,
                   "--batch-size", 2, "--quiet", "--run-dir", tmp_path / "r") == 0  # fmt: skip


@pytest.mark.parametrize("value", ["[0.1]", "[0.0]", "[0.1, 0.1, 0.1]"])
def test_a_zoneout_list_that_is_not_a_pair_is_refused_by_the_config(value, tmp_path, capsys):
    """A one-entry list passed the config's check and was refused by the layer, after the
    task was built; now the config names it (review 115)."""
    config = tmp_path / "z.toml"
    config.write_text(f"zoneout = {value}\n")
    capsys.readouterr()
    assert run_cli("train", "adding", "--config", config, "--run-dir", tmp_path / "r") == 2
    err = capsys.readouterr().err
    assert "`zoneout` must be a probability or a pair [p_h, p_c]; got [" in err, err


def test_a_run_without_checkpoints_says_how_to_go_on(tmp_path, capsys):
    run = tmp_path / "r"
    assert run_cli("train", "adding", "--T", 5, "--steps", 1, "--hidden", 4, "--batch-size", 2,
                   "--quiet", "--run-dir", run) == 0  # fmt: skip
    import shutil

    shutil.rmtree(run / "checkpoints")  # and the model a checkpoint writes: a run that
    (run / "model.safetensors").unlink()  # stopped before its first
    capsys.readouterr()
    assert run_cli("evaluate", run) == 2
    assert f"has no checkpoints: it stopped before its first (train it with rnnlab train " \
        f"--resume {run})." in capsys.readouterr().err  # fmt: skip


def test_best_weights_that_do_not_fit_the_run_are_refused_by_name(tmp_path, capsys):
    """The best weights an early-stopped run is read back with (best.safetensors), replaced
    by another model's: one line naming that file, as for a checkpoint's weights."""
    run = tmp_path / "es"
    argv = ["train", "adding", "--T", 20, "--hidden", 16, "--steps", 200, "--eval-every", 5,
            "--patience", 2, "--lr", 0.05, "--batch-size", 8]  # (it stops at step 40)
    assert run_cli(*argv, "--run-dir", run, "--quiet") == 0
    best = io.load_weights(run / "best.safetensors")
    io.save_weights(run / "best.safetensors", {k: v[:1] for k, v in best.items()})
    capsys.readouterr()
    assert run_cli("evaluate", run) == 2
    err = capsys.readouterr().err
    assert f"the best weights '{run / 'best.safetensors'}' do not fit the model described in" \
        in err and "(is it from another model?)" in err and err.count("\n") == 1, err


def test_a_toml_data_path_that_does_not_exist_names_the_config(tmp_path, capsys, monkeypatch):
    """It said "--data: `path` must be ...", an option and a name the user typed neither of,
    and not where a relative path is read from."""
    config = tmp_path / "c.toml"
    config.write_text('task = "charlm"\ndata = "missing.txt"\nsteps = 1\n')
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    assert run_cli("train", "--config", config, "--run-dir", tmp_path / "r") == 2
    err = capsys.readouterr().err
    assert err == (f"rnnlab: error: {config}: `data` must be a readable text file; got "
                   f"'missing.txt', which does not exist (a relative path is read from the "
                   f"current directory, {tmp_path})\n")  # fmt: skip
    assert not (tmp_path / "r").exists()
    # a task that reads no data says it ignores the setting, and trains (as before the check)
    config.write_text('task = "adding"\ndata = "missing.txt"\nsteps = 1\nT = 4\nhidden = 4\n')
    assert run_cli("train", "--config", config, "--run-dir", tmp_path / "a", "--quiet") == 0
    assert "the adding task ignores it" in capsys.readouterr().err


def test_a_start_that_failed_at_its_config_starts_again_in_the_same_directory(tmp_path, capsys,
                                                                              monkeypatch):
    """A full disk at the new run's config.json left the directory holding the training lock
    alone: the same command said it "holds other files (.rnnlab-lock)" and --resume found no
    config.json. rnnlab's own lock and temporaries are not someone else's files."""
    import errno

    run = tmp_path / "r"
    real = io.atomic_write_json

    def full(path, obj):
        raise OSError(errno.ENOSPC, f"cannot write '{path}' (No space left on device)")

    monkeypatch.setattr(io, "atomic_write_json", full)
    argv = ("train", "adding", "--steps", 2, "--run-dir", run, *TINY)
    assert run_cli(*argv) == 2
    assert "No space left on device" in capsys.readouterr().err
    (run / ".config.json.0123abcd.tmp").write_text("")  # (as a crash in the write leaves it)
    assert sorted(p.name for p in run.iterdir()) == [".config.json.0123abcd.tmp", io.LOCK_NAME]
    monkeypatch.setattr(io, "atomic_write_json", real)
    assert run_cli(*argv) == 0
    assert io.checkpoint_steps(run) == [2]
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / ".notes.0123abcd.tmp.bak").write_text("")  # not ours
    assert run_cli("train", "adding", "--steps", 2, "--run-dir", tmp_path / "other", *TINY) == 2
    assert "holds other files (.notes.0123abcd.tmp.bak)" in capsys.readouterr().err


def test_a_full_disk_at_a_checkpoint_says_the_file_what_is_kept_and_resumes(tmp_path, capsys,
                                                                            monkeypatch):
    """A full disk at a checkpoint stopped `rnnlab train` with "[Errno 28] No space left on
    device" alone: no file, nothing on what was kept or how to go on. It names the file and
    the way back, and the resumed run ends as one that never stopped."""
    import errno

    argv = ("train", "adding", "--steps", 6, "--checkpoint-every", 2, "--T", 6, *TINY)
    assert run_cli(*argv, "--run-dir", tmp_path / "whole") == 0
    run = tmp_path / "r"
    from rnnlab.io import tensors

    real_write = tensors.write

    def full(path, *args, **kwargs):  # the checkpoint of step 4: its optimizer.safetensors
        if path.name == "optimizer.safetensors" and "step-00000004" in path.parent.name:
            path.write_bytes(b"\x10\x00")  # (begun, then the disk is full)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_write(path, *args, **kwargs)

    monkeypatch.setattr(tensors, "write", full)
    capsys.readouterr()
    assert run_cli(*argv, "--run-dir", run) == 2
    monkeypatch.undo()
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"rnnlab: error: [Errno 28] cannot write '{run}/checkpoints/step-00000004/"
        "optimizer.safetensors' (No space left on device); the run stopped at step 4, whose "
        "checkpoint may not be saved: the checkpoints saved before it are intact; once the "
        f"cause is fixed, `rnnlab train --resume {run}` continues from the latest.")
    assert io.checkpoint_steps(run) == [2]
    assert run_cli("train", "--resume", run) == 0
    for name, value in weights(tmp_path / "whole").items():
        np.testing.assert_array_equal(weights(run)[name], value, err_msg=name)


def test_a_charlm_vocabulary_edited_to_another_size_is_refused_naming_the_file(tmp_path,
                                                                               capsys):
    """Two characters cut from a charlm run's stored vocabulary (27 symbols for the model's
    29 outputs) were read as other characters: evaluate scored other text, --resume trained
    on. Every command reading the run says which file and why."""
    text = tmp_path / "t.txt"
    text.write_text("the quick brown fox jumps over the lazy dog. " * 200)
    run = tmp_path / "r"
    assert run_cli("train", "charlm", "--data", text, "--steps", 2, "--seq-len", 8,
                   "--run-dir", run, *TINY) == 0  # fmt: skip
    path = io.load_checkpoint(run).path / "config.json"
    config = json.loads(path.read_text())
    config["data"]["vocab"] = config["data"]["vocab"][2:]
    path.write_text(json.dumps(config))
    capsys.readouterr()
    for argv in (("evaluate", run), ("sample", run, "--length", 5), ("train", "--resume", run,
                 "--steps", 3), ("export", run, "--format", "onnx", "--out", tmp_path / "m")):
        assert run_cli(*argv) == 2, argv
        err = capsys.readouterr().err
        assert (f"'{path}' holds a vocabulary of {len(config['data']['vocab']) + 1} symbols "
                f"(\"data\") for a model of {config['model']['output_size']} outputs") in err
    path.write_text(json.dumps({**config, "data": {"vocab": 7}}))  # damaged: named too
    assert run_cli("evaluate", run) == 2
    assert (f"'{path}': `config.json's 'data'` must be a record with the vocabulary ('vocab': "
            "a string)") in capsys.readouterr().err


def _edit_data(run: Path, edit) -> list[Path]:
    """Apply `edit` to config.json's "data" in the run and in every checkpoint (a hand edit);
    the files edited."""
    paths = [run / "config.json", *sorted(run.glob("checkpoints/*/config.json"))]
    for p in paths:
        c = json.loads(p.read_text())
        edit(c["data"])
        p.write_text(json.dumps(c))
    return paths


def _one_error(capsys, *argv) -> str:
    """The one line `rnnlab ARGV` fails with (exit status 2, warnings aside, no traceback)."""
    capsys.readouterr()
    code = run_cli(*argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if not line.startswith("rnnlab: warning:")]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("rnnlab: error: "), err
    assert not any(w in err for w in ("Traceback", "Error:", "IndexError", "TypeError")), err
    return lines[0]


def test_a_pytokens_vocabulary_edited_to_another_size_is_refused_naming_the_file(tmp_path,
                                                                                 capsys):
    """A pytokens run's stored vocabulary read one character short evaluated silently at
    34 % instead of 87 %: it is checked against the model's embedding, as charlm's is."""
    run = tmp_path / "pyt"
    assert run_cli("train", "pytokens", "--train-size", 4000, "--seq-len", 20, "--steps", 1,
                   "--run-dir", run, *TINY) == 0  # fmt: skip
    config = json.loads((run / "config.json").read_text())
    want = config["model"]["input"]["vocab_size"]
    assert want == len(config["data"]["vocab"]) + 1
    path = _edit_data(run, lambda d: d.update(vocab=d["vocab"][1:]))[-1]
    for argv in (("evaluate", run), ("train", "--resume", run, "--steps", 2)):
        line = _one_error(capsys, *argv)
        assert (f"'{path}' holds a vocabulary of {want - 1} symbols (\"data\") for a model "
                f"of {want} input symbols: the file was edited") in line, line
    _edit_data(run, lambda d: d.update(vocab="ba" + d["vocab"][2:]))  # as many, out of order
    assert "sorted and distinct" in _one_error(capsys, "evaluate", run)


@pytest.fixture(scope="module")
def dates_run(tmp_path_factory):
    """A one-step dates run, its test beam the task's default (5)."""
    run = tmp_path_factory.mktemp("dates") / "run"
    assert run_cli("train", "dates", "--train-size", 200, "--steps", 1, "--run-dir", run,
                   *TINY) == 0  # fmt: skip
    return run


@pytest.mark.parametrize("edit,said", [
    # an IndexError in Codec.pieces under the beam
    (lambda d: d.update(target_chars=d["target_chars"][1:]),
     "holds a target alphabet of {t_1} symbols (\"data\") for a model of {t} output symbols"),
    # a TypeError in Transduction.__init__
    (lambda d: d.update(source_chars=5),
     "'source_chars'` must be the source alphabet, a non-empty string"),
    (lambda d: d.update(source_chars=d["source_chars"][1:]),
     "holds a source alphabet of {s_1} symbols (\"data\") for a model of {s} input symbols"),
    # a TypeError in Transduction.decode
    (lambda d: d.update(max_target_len="ten"), "'max_target_len'` must be a positive integer "
     "(the longest sequence of training); got 'ten'"),
    (lambda d: d.update(max_source_len=-1), "'max_source_len'` must be a positive integer"),
    (lambda d: d.update(max_target_len=True), "'max_target_len'` must be a positive integer"),
    # each output cut at 10 characters (2·0 + 10), silently
    (lambda d: d.update(max_target_len=0), "'max_target_len'` must be a positive integer (the "
     "longest sequence of training); got 0 (int) instead"),
    (lambda d: d.update(max_source_len=0), "'max_source_len'` must be a positive integer"),
    (lambda d: d.update(max_target_len=10.5), "'max_target_len'` must be a positive integer"),
    (lambda d: d.update(most_frequent_target=7), "'most_frequent_target'` must be a text"),
    (lambda d: d.update(target_chars=d["target_chars"][::-1]), "sorted and distinct"),
    # a TypeError in Transduction.__init__ (null is caption's: review 78)
    (lambda d: d.update(source_chars=None), "holds no source alphabet (\"data\" "
     "\"source_chars\") for the dates task, whose encoder reads characters: the file was "
     "edited"),
], ids=["target_chars_short", "source_chars_int", "source_chars_short", "max_target_len_str",
        "max_source_len_negative", "max_target_len_bool", "max_target_len_zero",
        "max_source_len_zero", "max_target_len_float", "most_frequent_target_int",
        "target_chars_unsorted", "source_chars_null"])  # fmt: skip
def test_an_edited_encoder_decoder_data_record_is_one_line_naming_the_file(tmp_path, capsys,
                                                                          dates_run, edit, said):
    """The record of numbers, dates and caption runs was checked for its keys only: an edited
    config.json evaluated to tracebacks (or wrongly). Each field is checked for its form, and
    the alphabets against the model's encoder and decoder."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(dates_run, run)
    model = json.loads((run / "config.json").read_text())["model"]
    t, s = model["target_vocab"], model["source"]["vocab_size"]
    said = said.format(t=t, t_1=t - 1, s=s, s_1=s - 1)
    path = _edit_data(run, edit)[-1]
    for argv in (("evaluate", run), ("translate", run, "7. März 2023"),
                 ("train", "--resume", run, "--steps", 2)):  # fmt: skip
        line = _one_error(capsys, *argv)
        assert f"'{path}'" in line and said in line, line


def test_a_model_description_without_its_vocabulary_size_is_said_as_such_on_resume(
        tmp_path, capsys, dates_run):  # fmt: skip
    """--resume checked the data record against the model first and said "a source alphabet
    of 25 symbols ("data") for a model of None input symbols" for a model description that
    lost its size (review 78); evaluate said the model's fault. Both say it now."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(dates_run, run)
    for p in [run / "config.json", *sorted(run.glob("checkpoints/*/config.json"))]:
        c = json.loads(p.read_text())
        del c["model"]["source"]["vocab_size"]
        p.write_text(json.dumps(c))
    for argv in (("evaluate", run), ("train", "--resume", run, "--steps", 2)):
        line = _one_error(capsys, *argv)
        assert "missing or malformed 'vocab_size'" in line and "None" not in line, line


def test_rnnlab_train_asks_the_task_once_what_a_new_run_may_not_ask_for(tmp_path, monkeypatch):
    """`rnnlab train` asks before it builds the model, and Trainer.run asked again: a charlm
    text past the memory's cheap bound was counted twice, ~25 s each for 300 MB (review 78)."""
    from rnnlab.tasks import text

    calls = []
    real = text.CharLM.check_new_run
    monkeypatch.setattr(text.CharLM, "check_new_run", lambda self: calls.append(1) or real(self))
    assert run_cli("train", "charlm", "--steps", 1, "--hidden", 8, "--embed", 4, "--batch-size",
                   4, "--seq-len", 16, "--quiet", "--run-dir", tmp_path / "r") == 0  # fmt: skip
    assert len(calls) == 1


def test_resume_refuses_a_pytokens_text_that_differs_from_the_run_s(tmp_path, capsys):
    """A pytokens run resumed under another Python (whose standard library, the data, differs)
    trained on the other text after the warning written for `evaluate` (review 75's note, as
    charlm's changed corpus): refused in one line with both hashes; evaluate still warns."""
    import shutil

    run = tmp_path / "run"
    assert run_cli("train", "pytokens", "--train-size", 4000, "--seq-len", 20, "--steps", 2,
                   "--checkpoint-every", 1, "--run-dir", run, *TINY) == 0  # fmt: skip
    shutil.rmtree(run / "checkpoints" / "step-00000002")
    (run / "checkpoints" / "latest").write_text("step-00000001")
    other = "0" * 64  # the test split's hash this Python's stdlib does not give
    for p in [run / "config.json", *run.glob("checkpoints/*/config.json")]:
        c = json.loads(p.read_text())
        c["data"]["test_sha256"] = other
        p.write_text(json.dumps(c))
    line = _one_error(capsys, "train", "--resume", run, "--quiet")
    assert ("`--resume` must train on the text the run was trained on; the pytokens text this "
            "Python's standard library gives differs from the run's") in line, line
    assert "the run's config.json records 000000000000...): resume it under the Python it " \
           "was trained with, or start a new run" in line, line  # fmt: skip
    assert io.checkpoint_steps(run)[-1] == 1
    capsys.readouterr()
    assert run_cli("evaluate", run, "--json") == 0
    assert "the pytokens test split made now differs" in capsys.readouterr().err


def test_a_caption_record_with_a_source_alphabet_or_a_hash_not_a_string_is_refused(tmp_path,
                                                                                  dates_run):
    """The two record checks no run-level test reaches: caption's encoder reads images, so a
    record with a source alphabet was edited; a test hash must be a string."""
    from rnnlab import runs, tasks
    from rnnlab.train import TrainConfig

    config = json.loads((dates_run / "config.json").read_text())
    caption = TrainConfig.from_dict(dict(tasks.defaults("caption")))
    with pytest.raises(ValueError, match=r"holds a source alphabet \(\"data\" \"source_chars\"\) "
                       r"for the caption task, whose encoder reads images: the file was edited"):
        runs._stored_data_fits(tmp_path, caption, config)
    config["data"]["test_sha256"] = 5
    dates = TrainConfig.from_dict(dict(tasks.defaults("dates")))
    with pytest.raises(ValueError, match=r"'test_sha256'` must be the test split's SHA-256, a "
                       r"string of hex digits; got 5"):
        runs._stored_data_fits(tmp_path, dates, config)


@pytest.mark.parametrize("lead", [True, False])
def test_an_update_that_overflows_names_the_last_checkpoint(tmp_path, lead):
    """An update that leaves the weights non-finite stops the run naming the last
    checkpoint. Under MPI without a shared filesystem a rank other than 0 looked in its own
    run directory, which holds none, and said "Last checkpoint: none yet" while rank 0 had
    saved some (helper 80): such a rank now points to rank 0's."""
    from rnnlab.train import NonFiniteError, Trainer

    cfg, task, spec, model = _tiny_adding()
    trainer = Trainer(model, task, cfg, tmp_path / "r", spec=spec, quiet=True)
    if not lead:  # a rank whose directory rank 0's checkpoints never reach
        trainer.lead = False
        trainer.save = lambda *args, **kwargs: tmp_path / "elsewhere"  # type: ignore[method-assign]
    real, calls = trainer.opt.update, []

    def update(params, grads, state, lr=None):  # the third update overflows the weights
        real(params, grads, state, lr)
        calls.append(1)
        if len(calls) == 3:
            params["0.weight_hh_l0"][...] = np.inf

    trainer.opt.update = update
    kept = r"Last checkpoint: step 2\." if lead else (
        r"Last checkpoint: rank 0's, in its run directory \(this rank's shows none\)\.")
    with pytest.raises(NonFiniteError, match=kept):
        trainer.run()


def test_a_stop_right_after_a_checkpoint_does_not_save_that_step_again(tmp_path, monkeypatch):
    """A step that diverges right after a checkpoint keeps the weights of that checkpoint's
    step, which run() saved again: the copy replaced a complete checkpoint through a rename
    aside, so a kill in between left `latest` naming a missing directory (helper 84). The
    checkpoint already there is named instead; each step is saved once."""
    from rnnlab.train import NonFiniteError, Trainer

    cfg, task, spec, model = _tiny_adding()
    real_loss, calls = task.loss, []

    def loss(output, batch):  # the third step's loss is not finite
        value, d = real_loss(output, batch)
        calls.append(1)
        return (np.nan, d) if len(calls) == 3 else (value, d)

    task.loss = loss
    saved = []
    real_save = io.save_checkpoint
    monkeypatch.setattr(io, "save_checkpoint",
                        lambda run_dir, step, **kw: saved.append(step) or real_save(run_dir, step,
                                                                                    **kw))
    with pytest.raises(NonFiniteError, match=r"Good weights of step 2 saved in .*step-00000002"):
        Trainer(model, task, cfg, tmp_path / "r", spec=spec, quiet=True).run()
    assert saved == [1, 2]
    assert io.load_checkpoint(tmp_path / "r").step == 2


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_a_clip_the_update_applies_gives_the_weights_of_one_written_first(optimizer, tmp_path,
                                                                          monkeypatch):  # fmt: skip
    """The Trainer hands a global-norm clip's scale to the update (Optimizer.update's
    grad_scale: Adam's compiled pass applies it as it reads the gradients) instead of
    writing it into them: the run's weights are the bits of clipping in place first. And
    the weights and running squares the update's own pass found finite are not read again."""
    from rnnlab import fast, optim

    args = ["train", "adding", "--T", 6, "--steps", 4, "--hidden", 8, "--batch-size", 4,
            "--clip-at", "0.01", "--optimizer", optimizer, "--quiet"]  # fmt: skip
    assert run_cli(*args, "--run-dir", tmp_path / "a") == 0
    vouched, scales = [], []
    real = optim.Optimizer.update

    def update(self, params, grads, state, lr=None, *, grad_scale=1.0):
        scales.append(grad_scale)
        vouched.append(real(self, params, grads, state, lr, grad_scale=grad_scale)
                       == set(params))  # fmt: skip
        return vouched[-1] and frozenset(params) or frozenset()

    monkeypatch.setattr(optim.Optimizer, "update", update)
    assert run_cli(*args, "--run-dir", tmp_path / "b") == 0
    monkeypatch.undo()
    assert len(scales) == 4 and all(0 < c < 1 for c in scales)  # (clipped at every step)
    assert all(vouched) == (optimizer == "adam" and fast.available())
    monkeypatch.setattr(optim, "clip_scale", lambda g, mode, value: (
        optim.clip_gradients(g, mode, value), 1.0))  # fmt: skip
    assert run_cli(*args, "--run-dir", tmp_path / "c") == 0
    a, b, c = (weights(tmp_path / r) for r in "abc")
    for k in a:
        assert np.array_equal(a[k].view(np.uint8), c[k].view(np.uint8)), k
        assert np.array_equal(a[k], b[k]), k
