"""Review 141 of training runs as `rnnlab train` drives them: the progress bar on a
terminal, the run directory it is given, and what result.json says."""

import io

from rnnlab import progress
from rnnlab.progress import Progress


class Terminal(io.StringIO):
    def isatty(self):
        return True


def _redraws(text: str) -> list[str]:
    """What each carriage return of `text` rewrites, up to the next one or line end."""
    return [part.split("\n")[0] for part in text.split("\r")[1:]]


def test_the_bar_fits_a_terminal_of_80_columns(monkeypatch):
    # padded to 100 characters, the bar wrapped on an 80-column terminal, where `\r` goes
    # back to the start of its last row only: a new line at every redraw, five a second
    monkeypatch.setenv("COLUMNS", "80")
    clock = iter(float(t) for t in range(100, 200))
    monkeypatch.setattr(progress.time, "perf_counter", lambda: next(clock))
    stream = Terminal()
    bar = Progress(3000, 0, stream)
    for step in range(5):
        bar.update(step, 0.25, 1_000_000, "lr 0.002 and more text to make the line long")
    bar.message("step 5: valid mse 0.1602 (best)")
    bar.close()
    text = stream.getvalue()
    assert all(len(part) <= 79 for part in _redraws(text)), _redraws(text)
    assert text.endswith("step 5: valid mse 0.1602 (best)\n")


def test_a_narrow_terminal_gets_the_bar_cut(monkeypatch):
    monkeypatch.setenv("COLUMNS", "30")
    stream = Terminal()
    bar = Progress(10, 0, stream)
    bar.update(9, 0.5, 10)
    bar.close()
    assert stream.getvalue() == "\r[########################] 10\n"


def test_a_shorter_redraw_blanks_the_longer_one_before(monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    clock = iter(float(t) for t in range(100, 200))
    monkeypatch.setattr(progress.time, "perf_counter", lambda: next(clock))
    stream = Terminal()
    bar = Progress(3, 0, stream)
    bar.update(0, 0.5, 10, "x" * 40)
    bar.update(1, 0.5, 10)
    first, second = _redraws(stream.getvalue())
    assert len(second) == len(first) and second.endswith(" " * 30)


def run_cli(*args):
    from rnnlab.cli import main

    return main([str(a) for a in args])


TINY = ["--hidden", "8", "--batch-size", "4", "--quiet"]


def test_a_run_dir_under_a_file_is_refused_naming_the_option(tmp_path, capsys):
    # it was taken, said "training adding ... into" it and failed at the first write as
    # "[Errno 20] Not a directory", naming no option
    (tmp_path / "notes").write_text("mine\n")
    for command in ("train", "demo"):
        args = [command, "adding", "--steps", 2] if command == "train" else [command]
        assert run_cli(*args, "--run-dir", tmp_path / "notes" / "run", *TINY[-1:]) == 2
        err = capsys.readouterr().err
        assert err.startswith("rnnlab: error: `--run-dir` must be a directory path;"), err
        assert f"under '{tmp_path / 'notes'}', which is a file" in err and "training" not in err
    (tmp_path / "gone").symlink_to(tmp_path / "nowhere")
    gone = tmp_path / "gone" / "run"
    assert run_cli("train", "adding", "--steps", 2, "--run-dir", gone, *TINY) == 2
    assert "which is a link to nothing" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gone", "notes"]


def test_result_json_names_the_step_of_the_weights_it_tested(tmp_path):
    # after early stopping it named the last step (its "train" summary's) alone, while the
    # test was of the best step's weights, which the run hands back
    import json

    from rnnlab import io

    run = tmp_path / "es"
    assert run_cli("train", "adding", "--T", 20, "--steps", 200, "--eval-every", 5,
                   "--patience", 1, "--lr", 0.05, "--run-dir", run, *TINY) == 0  # fmt: skip
    result = json.loads((run / "result.json").read_text())
    assert result["train"]["stopped_by"] == "early stopping"
    _, step = io.load_weights_and_step(run / "model.safetensors")
    assert result["tested_step"] == result["train"]["best_step"] == step
    assert result["train"]["step"] > step
    plain = tmp_path / "plain"
    assert run_cli("train", "adding", "--T", 20, "--steps", 3, "--run-dir", plain, *TINY) == 0
    assert json.loads((plain / "result.json").read_text())["tested_step"] == 3


def test_the_commands_said_to_go_on_work_when_pasted(tmp_path, capsys):
    # "continue with: rnnlab train --resume my run" was two arguments to a shell
    import shlex

    run = tmp_path / "my run; $HOME"
    assert run_cli("train", "adding", "--T", 20, "--steps", 5, "--time-limit", 1e-9,
                   "--run-dir", run, *TINY) == 0  # fmt: skip
    said = capsys.readouterr().err
    line = said.split("continue with: ")[1].split(" (--time-limit")[0]
    assert shlex.split(line) == ["rnnlab", "train", "--resume", str(run)]
    assert run_cli(*shlex.split(line)[1:], "--time-limit", 0) == 0
    assert "resuming" in capsys.readouterr().err
    # a new run given it as --run-dir is sent to --resume, and the way back of a damaged
    # checkpoint with no other to go back to starts it again
    assert run_cli("train", "adding", "--steps", 2, "--run-dir", run, *TINY) == 2
    line = capsys.readouterr().err.split("continue it with ")[1].split(")")[0]
    assert shlex.split(line) == ["rnnlab", "train", "--resume", str(run)]
    from rnnlab import io

    alone = tmp_path / "a run"  # (no other checkpoint)
    assert f"`rnnlab train --resume {shlex.quote(str(alone))}`" in io.way_back(alone, 5)


def test_a_resume_of_a_run_at_its_steps_says_that_it_trains_nothing(tmp_path, capsys):
    # it said "resuming RUN at step 3" alone, then the test as if it had trained
    run = tmp_path / "done"
    assert run_cli("train", "adding", "--T", 20, "--steps", 3, "--run-dir", run, *TINY) == 0
    capsys.readouterr()
    assert run_cli("train", "--resume", run, "--quiet") == 0
    err = capsys.readouterr().err
    assert f"{run} is at step 3, its --steps: nothing more to train" in err
    assert f"rnnlab train --resume {run} --steps N trains it further" in err
    assert run_cli("train", "--resume", run, "--steps", 4, "--quiet") == 0
    assert "nothing more to train" not in capsys.readouterr().err


def test_a_json_config_is_told_to_be_toml(tmp_path, capsys):
    # a run's config.json given to --config was said as TOML's "Invalid statement" alone
    config = tmp_path / "config.json"
    config.write_text('{"train": {"task": "adding"}, "model": {}}\n')
    assert run_cli("train", "--config", config) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"rnnlab: error: '{config}' is not valid TOML") and err.count("\n") == 1
    assert "`--config` reads TOML" in err and "give its directory to --resume" in err
    config.write_text("task = 'adding'\nsteps = [\n")  # (TOML, wrong: said as before)
    assert run_cli("train", "--config", config) == 2
    assert "reads TOML" not in capsys.readouterr().err


def test_a_ctrl_c_at_the_last_step_says_the_run_is_complete(tmp_path, capsys, monkeypatch):
    # "interrupted: checkpoint saved at step 3 ...; continue with: rnnlab train --resume RUN",
    # which then trained nothing: the signal came during the last step
    import signal

    from rnnlab.train import Trainer

    step_once = Trainer._train_step

    def step_then_ctrl_c(self, step):
        out = step_once(self, step)
        if step == 2:
            signal.raise_signal(signal.SIGINT)
        return out

    monkeypatch.setattr(Trainer, "_train_step", step_then_ctrl_c)
    run = tmp_path / "run"
    assert run_cli("train", "adding", "--T", 20, "--steps", 3, "--run-dir", run, *TINY) == 130
    err = capsys.readouterr().err
    assert (f"interrupted: checkpoint saved at step 3 in {run}; that is its last step (--steps "
            "3): the run is complete") in err and "continue with" not in err  # fmt: skip
    monkeypatch.undo()
    # a stop before it still says how to go on
    monkeypatch.setattr(Trainer, "_train_step", step_then_ctrl_c)
    other = tmp_path / "other"
    assert run_cli("train", "adding", "--T", 20, "--steps", 5, "--run-dir", other, *TINY) == 130
    assert f"continue with: rnnlab train --resume {other}" in capsys.readouterr().err


def test_a_damaged_config_json_or_latest_of_a_run_says_the_way_back(tmp_path, capsys):
    # both were said with no way back, though the run's checkpoints hold what is needed
    import shlex

    run = tmp_path / "run"
    assert run_cli("train", "adding", "--T", 20, "--steps", 4, "--checkpoint-every", 2,
                   "--run-dir", run, *TINY) == 0  # fmt: skip
    good = (run / "config.json").read_text()
    (run / "config.json").write_text("{bad")
    capsys.readouterr()
    assert run_cli("train", "--resume", run, "--steps", 6, "--quiet") == 2
    err = capsys.readouterr().err
    copy = run / "checkpoints" / "step-00000004" / "config.json"
    assert "is not valid JSON" in err and f"copy '{copy}' over it and resume" in err
    assert copy.read_text() == good
    (run / "config.json").write_text(good)
    (run / "checkpoints" / "latest").write_text("garbage\n")
    assert run_cli("train", "--resume", run, "--steps", 6, "--quiet") == 2
    err = capsys.readouterr().err
    assert "it holds 'garbage'. To go back to the checkpoint step-00000004, write" in err
    (run / "checkpoints" / "latest").write_text("step-00000004\n")
    assert run_cli(*shlex.split(f"train --resume {shlex.quote(str(run))} --steps 6 --quiet")) == 0
