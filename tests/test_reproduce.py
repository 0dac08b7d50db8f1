"""`rnnlab reproduce`: the table of runs, the per-cell-and-length defaults behind it, the
baselines it judges by, and a reduced run that shows the papers' ordering (gated cells below
the memoryless baseline, the tanh RNN at it)."""

import json
import shutil

import numpy as np
import pytest

from rnnlab import reproduce, tasks
from rnnlab.cli import main as cli_main
from rnnlab.tasks import synthetic, tuned


def test_the_table_and_its_quick_form():
    full = reproduce.rows("all")
    assert {(r.task, r.T) for r in full} == {
        ("temporal-order", 100), ("adding", 100), ("adding", 200), ("adding", 400),
        ("copy", 100), ("copy", 200), ("digits", 64),
    }  # fmt: skip
    assert len(full) == 3 + 4 * 3 + 3 * 2 + 3
    quick = reproduce.rows("all", quick=True)
    assert {(r.task, r.T) for r in quick} == {
        ("temporal-order", 100), ("adding", 100), ("copy", 100), ("digits", 64)}  # fmt: skip
    assert [r.cell for r in reproduce.rows("adding", quick=True)] == ["lstm", "gru", "rnn", "irnn"]
    with pytest.raises(ValueError, match="`TASK` must be one of"):
        reproduce.rows("charlm")


def test_budgets_grow_with_the_length_and_train_uses_them():
    steps = [tasks.defaults_for("adding", "gru", T)["steps"] for T in (100, 200, 400)]
    assert steps == [tuned.budget("adding", T) for T in (100, 200, 400)]
    assert steps[0] < steps[1] < steps[2]
    irnn = reproduce.config(reproduce.Row("adding", "irnn", 100))
    assert (irnn.optimizer, irnn.momentum, irnn.clip) == ("sgd", 0.0, "global_norm")
    digits = reproduce.config(reproduce.Row("digits", "lstm", 64))
    assert digits.digits_mode == "pixels" and digits.steps == tasks.defaults("digits")["steps"]
    # the tasks without a table keep their defaults exactly
    assert tasks.defaults_for("charlm", "lstm") == tasks.defaults("charlm")


def test_train_picks_the_defaults_of_the_cell_and_length(tmp_path, capsys):
    run = tmp_path / "run"
    argv = ["train", "temporal-order", "--cell", "gru", "--T", "10", "--hidden", "4",
            "--batch-size", "4", "--steps", "2", "--run-dir", str(run), "--quiet"]  # fmt: skip
    assert cli_main(argv) == 0
    cfg = json.loads((run / "config.json").read_text())["train"]
    assert cfg["lr"] == tuned.overrides("temporal-order", "gru", 10)["lr"] != 3e-3
    assert cfg["steps"] == 2  # what the user typed wins
    out = capsys.readouterr().out
    assert "commonest class of this test set" in out and "chance 25 %" in out


def test_empirical_baselines_on_a_held_out_set():
    rng = np.random.default_rng(0)
    _, y = synthetic.adding(1000, 10, rng)
    one, mean = synthetic.adding_baseline_on(y)
    assert one == pytest.approx(np.mean((y - 1.0) ** 2)) and mean == pytest.approx(np.var(y))
    assert mean <= one and abs(one - 1 / 6) < 0.02
    _, yc = synthetic.copy_memory(500, 20, rng)
    loss, recall = synthetic.copy_baseline_on(yc)
    assert loss <= synthetic.copy_baseline(20) + 1e-12 and 0.125 <= recall < 0.2
    assert synthetic.majority_accuracy(np.array([0, 1, 1, 3])) == 0.5


def _record(task, T, cell, **test):
    return {"task": task, "T": T, "cell": cell, "steps": 10, "budget": 10,
            "stopped_by": "steps", "wall_seconds": 75, "cpu_seconds": 61, "test": test}  # fmt: skip


def test_verdicts_and_the_markdown_table():
    base = {"baseline_mse": 1 / 6, "baseline_mse_one": 0.17, "baseline_mse_empirical": 0.16}
    solved = dict(_record("adding", 50, "gru", mse=0.004, **base), solved=True)
    assert reproduce.judge(solved)["verdict"] == "solved"
    assert reproduce.judge(_record("adding", 50, "rnn", mse=0.158, **base))["verdict"].startswith(
        "at the baseline")
    assert reproduce.judge(_record("adding", 50, "irnn", mse=0.5, **base))["verdict"].startswith(
        "above the baseline")
    # one ratio shown, one verdict: 0.9499 and 0.9501 both show 0.95x, both "at"
    for mse, verdict in ((0.16 * 0.9499, "at the baseline (0.95×)"),
                         (0.16 * 0.9501, "at the baseline (0.95×)"),
                         (0.16 * 0.9449, "below the baseline (0.94×)"),
                         (0.16 * 1.0549, "at the baseline (1.05×)"),
                         (0.16 * 1.0551, "above the baseline (1.06×)")):  # fmt: skip
        assert reproduce.judge(_record("adding", 50, "rnn", mse=mse, **base))["verdict"] == verdict
    claimed = dict(_record("adding", 50, "rnn", mse=0.158, **base), solved=True)
    assert reproduce.judge(claimed)["verdict"].startswith("at the baseline")  # (the numbers')
    order = _record("temporal-order", 100, "rnn", accuracy=0.27, chance=0.25, majority=0.263)
    assert reproduce.judge(order)["verdict"] == "at chance"
    # under every answer that ignores the input is not "at chance" (3 points under 25 %)
    for acc, verdict in ((0.225, "at chance"), (0.1, "below chance"), (0.0, "below chance")):
        wrong = {**order, "test": {**order["test"], "accuracy": acc}}
        assert reproduce.judge(wrong)["verdict"] == verdict
    table = reproduce.markdown([_record("adding", 50, "lstm", mse=0.05, **base), order])
    lines = table.splitlines()
    assert len(lines) == 4 and "below the baseline (0.31×)" in lines[2]
    assert "| 1m15s | 1m01s |" in lines[2] and "0.1667 / 0.1600" in lines[2]


def test_bad_options_say_what_was_expected(capsys):
    assert cli_main(["reproduce", "adding", "--cells", "lstm,transformer"]) == 2
    assert "`--cells` must be one of" in capsys.readouterr().err
    assert cli_main(["reproduce", "adding", "--jobs", "0"]) == 2
    assert "`--jobs`" in capsys.readouterr().err
    assert cli_main(["reproduce", "temporal-order", "--cells", "irnn"]) == 2
    assert capsys.readouterr().err == ("rnnlab: error: `--cells` must be cells the table runs for "
                                       "temporal-order (lstm, gru, rnn); got 'irnn' instead.\n")


def test_reduced_run_shows_the_ordering(tmp_path, capsys):
    """`rnnlab reproduce --quick`, reduced to the adding problem at T = 30 and 1,500 steps (about
    a minute of CPU): the gated cells end below the memoryless baseline of the test set, the
    tanh RNN at it. Seeds are fixed, so this is the same run every time."""
    out = tmp_path / "repro"
    argv = ["reproduce", "adding", "--quick", "--T", "30", "--steps", "1500",
            "--cells", "lstm,gru,rnn", "--jobs", "1", "--out", str(out)]  # fmt: skip
    assert cli_main(argv) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("reproducing 3 runs (adding)") and "| adding | 30 | gru |" in printed
    records = {r["cell"]: r for r in json.loads((out / "results.json").read_text())}
    ratio = {c: r["test"]["mse"] / r["test"]["baseline_mse_empirical"] for c, r in records.items()}
    assert ratio["gru"] < 0.5 and ratio["lstm"] < 0.5
    assert ratio["rnn"] > 0.9
    # a solved run stops at that validation; an unsolved one trains its whole budget
    assert records["gru"]["stopped_by"] == "solved" and records["gru"]["steps"] < 1500
    assert records["gru"]["solved"] and not records["rnn"]["solved"]
    assert records["rnn"]["stopped_by"] == "steps" and records["rnn"]["steps"] == 1500
    assert (out / "results.md").read_text().count("| adding | 30 |") == 3
    # --jobs 1 runs its rows on one thread too: the same numbers as --jobs 2
    assert all(r["kernels"]["threads"] == 1 for r in records.values())
    assert (out / "adding.png").stat().st_size > 0


def test_a_stopped_reproduce_continues_where_it_stopped(tmp_path):
    """The same command continues a stopped reproduce: a finished row is read back, a row
    stopped after a checkpoint resumes there and ends with the same weights as the run that
    was not stopped, and a run directory with other settings is refused."""
    row = reproduce.Row("adding", "rnn", 10)
    settings = {"steps": 60, "eval_every": 20, "checkpoint_every": 20}
    out = tmp_path / "repro"
    first = reproduce.run_row(row, out, settings)
    run_dir = out / "runs" / row.name
    weights = (run_dir / "model.safetensors").read_bytes()
    assert first["steps"] == 60 and first["resumed_at"] is None

    again = reproduce.run_row(row, out, settings)
    assert again["reused"] and again["test"] == first["test"]

    (run_dir / "result.json").unlink()  # stopped after its checkpoint at step 20
    for step in (40, 60):
        shutil.rmtree(run_dir / "checkpoints" / f"step-{step:08d}")
    (run_dir / "checkpoints" / "latest").unlink()
    resumed = reproduce.run_row(row, out, settings)
    assert resumed["resumed_at"] == 20 and resumed["steps"] == 60
    assert resumed["test"] == first["test"]
    assert (run_dir / "model.safetensors").read_bytes() == weights
    assert "resumed at 20" in reproduce.markdown([resumed])

    with pytest.raises(ValueError, match="`--out`.*trained with others"):
        reproduce.run_row(row, out, {**settings, "steps": 80})


def test_a_reproduce_written_before_weight_decay_could_be_none_continues(tmp_path):
    """Rows written when weight_decay was 0 by default (config.json without "format") are the
    same settings as today's none: the same command reuses the finished row and resumes a
    stopped one, where the exact comparison refused both as "trained with others"."""
    row = reproduce.Row("adding", "rnn", 10)
    settings = {"steps": 40, "eval_every": 20, "checkpoint_every": 20}
    out = tmp_path / "repro"
    reproduce.run_row(row, out, settings)
    run_dir = out / "runs" / row.name
    result = json.loads((run_dir / "result.json").read_text())
    result["record"]["config"]["weight_decay"] = 0.0
    (run_dir / "result.json").write_text(json.dumps(result))
    assert reproduce.run_row(row, out, settings)["reused"]
    (run_dir / "result.json").unlink()
    shutil.rmtree(run_dir / "checkpoints" / "step-00000040")
    (run_dir / "checkpoints" / "latest").unlink()
    for path in (run_dir / "config.json", run_dir / "checkpoints/step-00000020/config.json"):
        config = json.loads(path.read_text())
        config["train"]["weight_decay"] = 0.0
        del config["format"]
        path.write_text(json.dumps(config))
    assert reproduce.run_row(row, out, settings)["resumed_at"] == 20


@pytest.mark.parametrize("damage,said", [
    (lambda r: [1, 2], r"it holds a list of length 2, not a JSON object"),
    (lambda r: {**r, "record": [r["record"]]}, 'its "record" is a list of length 1'),
    *[(lambda r, k=k: {**r, "record": {a: b for a, b in r["record"].items() if a != k}}, said)
      for k, said in (("report", "has no 'report'"), ("steps", "has no number 'steps'"),
                      ("wall_seconds", "has no number 'wall_seconds'"),
                      ("config", "has no 'config' (an object)"))],
    (lambda r: {**r, "record": {**r["record"], "test": {}}}, "lacks what the table shows"),
    (lambda r: {**r, "record": {**r["record"], "stopped_by": "interrupt", "steps": 12}},
     "its run was stopped by interrupt at step 12"),
    (lambda r: {**r, "record": {**r["record"], "solved": True}},
     'its "solved" is True, its test numbers say False'),
])  # fmt: skip
def test_a_result_that_is_not_a_finished_row_s_record_is_trained_again(tmp_path, capsys, damage,
                                                                        said):  # fmt: skip
    """A result.json that reproduce did not write as it is (a list, a record without what the
    table shows) is not reused, nor a traceback: the row is taken up again from its run's last
    checkpoint, which gives the same result, said with the file on stderr."""
    import io as text_io

    row = reproduce.Row("adding", "rnn", 10)
    settings = {"steps": 20, "eval_every": 10, "checkpoint_every": 10}
    out = tmp_path / "repro"
    first = reproduce.run_row(row, out, settings)
    result = out / "runs" / row.name / "result.json"
    result.write_text(json.dumps(damage(json.loads(result.read_text()))))
    capsys.readouterr()
    records = reproduce.run_table([row], out, jobs=1, settings=settings,
                                  stream=text_io.StringIO())  # fmt: skip
    err = capsys.readouterr().err
    assert f"rnnlab: warning: '{result}' is not the record of a finished {row.name}" in err
    assert said in err and "trained again from its run's last checkpoint" in err
    assert records[0]["test"] == first["test"] and records[0]["resumed_at"] == 20
    assert json.loads(result.read_text())["record"]["report"] == first["report"]
    assert reproduce.run_row(row, out, settings)["reused"]  # written anew: reused from now on


def test_an_out_that_is_a_file_is_refused_by_name(tmp_path, capsys):
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    argv = ["reproduce", "adding", "--quick", "--cells", "rnn", "--jobs", "1", "--steps", "1"]
    sub = a_file / "sub"
    for out, said in ((a_file, f"'{a_file}', a file"),
                      (sub, f"'{sub}', under the file '{a_file}'")):  # fmt: skip
        assert cli_main([*argv, "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err == (f"rnnlab: error: `--out` must be a directory (new, or a reproduce's "
                       f"output); got {said} instead.\n")  # fmt: skip
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "runs").write_text("")
    with pytest.raises(ValueError, match=r"`--out` must be a directory .*; got '.*out', whose "
                       r"'.*out/runs' is a file"):  # fmt: skip
        reproduce.run_row(reproduce.Row("adding", "rnn", 10), tmp_path / "out", {"steps": 1})


def test_an_out_that_cannot_be_written_is_refused_by_name_before_any_row(tmp_path, capsys):
    """An --out this process may not create or write in (/proc's, which even root cannot; a
    read-only directory for other users) is one line naming --out, said before the time
    estimate, not an OSError of a row after "a row failed: ... saved their checkpoints"."""
    import os
    import sys

    outs = []
    if sys.platform.startswith("linux"):
        outs.append("/proc/self/rnnlab-reproduce-out")
    if hasattr(os, "geteuid") and os.geteuid() != 0:
        read_only = tmp_path / "read-only"
        read_only.mkdir()
        read_only.chmod(0o555)
        outs.append(str(read_only))
    if not outs:
        pytest.skip("no directory here that cannot be written")
    argv = ["reproduce", "adding", "--cells", "rnn", "--T", "10", "--jobs", "1", "--steps", "1"]
    for out in outs:
        assert cli_main([*argv, "--out", out]) == 2
        captured = capsys.readouterr()
        assert captured.out == ""
        assert captured.err.startswith(f"rnnlab: error: `--out` must be a directory rnnlab can "
                                       f"create and write in; got '{out}' (")  # fmt: skip
        assert captured.err.count("\n") == 1


def test_a_row_whose_test_is_not_finite_is_a_diverged_row(tmp_path, monkeypatch):
    """A row whose model overflows on the test set: its result.json holds null (JSON has no
    NaN), its record says which values, the table's verdict is "diverged", and the record is
    read back as a finished row by the next reproduce."""
    adding_eval = synthetic.Adding.evaluate
    monkeypatch.setattr(synthetic.Adding, "evaluate", lambda self, model, split: {
        **adding_eval(self, model, split), **({"mse": np.nan} if split == "test" else {})})
    row = reproduce.Row("adding", "rnn", 10)
    settings = {"steps": 4, "eval_every": 2, "checkpoint_every": 2}
    record = reproduce.run_row(row, tmp_path / "repro", settings)
    assert record["test"]["mse"] is None and record["non_finite"] == "mse"
    assert reproduce.judge(record)["verdict"] == "diverged"
    assert "| diverged |" in reproduce.markdown([record])
    written = (tmp_path / "repro" / "runs" / row.name / "result.json").read_text()
    json.loads(written, parse_constant=lambda c: pytest.fail(f"{c} in the JSON"))
    assert reproduce.run_row(row, tmp_path / "repro", settings)["reused"]


def test_a_row_that_diverges_is_a_result_not_the_end_of_the_table(tmp_path):
    """A row whose training diverges (NaN or inf in a step) is recorded as such, with the test
    of its last finite weights, its steps and the verdict "diverged at step N", and written
    as finished: the table goes on, and the next reproduce reads the row back instead of
    resuming it into the same divergence for ever."""
    row = reproduce.Row("adding", "relu", 20)
    settings = {"steps": 40, "eval_every": 10, "checkpoint_every": 10, "lr": 1e6,
                "clip": "none", "optimizer": "sgd"}  # fmt: skip
    out = tmp_path / "repro"
    record = reproduce.run_row(row, out, settings)
    assert record["stopped_by"] == "diverged" and record["steps"] < 40
    # (its weights of step 1 are finite, and already overflow on the test set)
    assert record["non_finite"] == "mse" and reproduce.judge(record)["verdict"] == "diverged"
    assert "| diverged |" in reproduce.markdown([record])
    # a row whose last finite weights test finite: their result, and where it diverged
    base = {"baseline_mse": 1 / 6, "baseline_mse_one": 0.17, "baseline_mse_empirical": 0.16}
    stopped = dict(_record("adding", 50, "relu", mse=0.158, **base), stopped_by="diverged",
                   steps=1234, solved=True)  # fmt: skip
    judged = reproduce.judge(stopped)
    assert judged["verdict"] == "diverged at step 1,234" and judged["result"] == "MSE 0.1580"
    log = (out / "runs" / row.name / "train.log").read_text()
    assert "diverged: " in log and "at step" in log
    assert reproduce.run_row(row, out, settings)["reused"]
    # it stopped before its first logged step: the table and its PNG are made without its curve
    assert not (out / "runs" / row.name / "metrics.jsonl").exists()
    import io as text_io

    records = reproduce.run_table([row], out, jobs=1, settings=settings,
                                  stream=text_io.StringIO())  # fmt: skip
    assert records[0]["reused"] and (out / "adding.png").stat().st_size > 0


def test_a_row_whose_update_overflowed_is_tested_on_its_last_checkpoint(tmp_path, monkeypatch):
    """Where the update itself overflowed (the weights in memory are lost), the diverged row
    is tested on its last checkpoint's weights, the last finite ones, not on the lost ones."""
    from rnnlab import io, optim

    update, calls = optim.Adam.update, []

    def overflowing(self, params, grads, state, lr=None):
        update(self, params, grads, state, lr=lr)
        calls.append(1)
        if len(calls) == 3:  # step 3's update: after the checkpoints of steps 1 and 2
            next(iter(params.values()))[...] = np.inf

    monkeypatch.setattr(optim.Adam, "update", overflowing)
    row = reproduce.Row("adding", "lstm", 10)
    settings = {"steps": 6, "eval_every": 2, "checkpoint_every": 1, "optimizer": "adam"}
    out = tmp_path / "repro"
    record = reproduce.run_row(row, out, settings)
    assert record["stopped_by"] == "diverged" and record["steps"] == 2
    assert "non_finite" not in record and np.isfinite(record["test"]["mse"])
    assert record["diverged_at"] == 3  # (step 3's update: the step the log names)
    verdict = reproduce.judge(record)["verdict"]
    assert verdict == "diverged at step 3 (tested: its weights of step 2)"
    assert "update of step 3" in (out / "runs" / row.name / "train.log").read_text()
    assert io.checkpoint_steps(out / "runs" / row.name)[-1] == 2


def test_every_row_is_checked_before_any_trains(tmp_path):
    """A row whose run directory holds other settings is refused before the other rows train
    (it was said after every other row of the table had trained, hours on a full table)."""
    out = tmp_path / "repro"
    later = reproduce.Row("adding", "gru", 10)
    reproduce.run_row(later, out, {"steps": 2, "eval_every": 1})
    first = reproduce.Row("adding", "rnn", 10)
    with pytest.raises(ValueError, match=r"`--out`.*adding-T10-gru was trained with others"):
        reproduce.run_table([first, later], out, jobs=1, settings={"steps": 3, "eval_every": 1})
    assert not (out / "runs" / first.name).exists()


def test_ctrl_c_stops_the_rows_in_progress_and_they_resume(tmp_path):
    """SIGINT to reproduce (here to it alone, as `kill -INT` does; the terminal's Ctrl-C
    reaches its workers too) stops the rows in progress at their next step: each saves its
    checkpoint and writes no result (an interrupted row was stored as finished, and reused
    by every later reproduce), the rows not started do not start, the command ends at once
    with the way to go on, and the same command resumes the rows."""
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "repro"
    argv = [sys.executable, "-m", "rnnlab", "reproduce", "adding", "--quick", "--T", "10",
            "--cells", "rnn,irnn,lstm", "--steps", "1000000", "--jobs", "2", "--out", str(out)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    runs = [out / "runs" / f"adding-T10-{c}" for c in ("lstm", "rnn", "irnn")]  # table order
    deadline = time.monotonic() + 240
    while not all((r / "metrics.jsonl").exists() for r in runs[:2]):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    t0 = time.monotonic()
    stdout, stderr = proc.communicate(timeout=120)
    assert time.monotonic() - t0 < 60
    assert proc.returncode == 130, stderr
    assert "rnnlab: interrupted" in stderr
    assert "interrupted: the rows in progress saved their checkpoints" in stdout
    from rnnlab import io

    steps = {}
    for r in runs[:2]:
        assert not (r / "result.json").exists()
        steps[r.name] = io.checkpoint_steps(r)[-1]
        assert steps[r.name] > 0
    assert not runs[2].exists()  # queued, never started
    # the next reproduce takes them up from their checkpoints (no record to reuse)
    settings = {"steps": 1000000, "eval_every": 250}
    for cell in ("lstm", "rnn"):
        assert reproduce.finished_before(reproduce.Row("adding", cell, 10), out, settings) is None


def test_jobs_is_checked_and_an_ignored_t_is_said(tmp_path, capsys):
    with pytest.raises(ValueError, match=r"`jobs` must be a positive integer"):
        reproduce.run_table([reproduce.Row("adding", "rnn", 10)], tmp_path / "o", jobs=0)
    argv = ["reproduce", "digits", "--T", "5", "--cells", "rnn", "--steps", "1", "--jobs", "1",
            "--out", str(tmp_path / "d")]  # fmt: skip
    assert cli_main(argv) == 0
    assert ("rnnlab: warning: --T does not apply to the digits rows: they read the 64-pixel "
            "images as they are") in capsys.readouterr().err  # fmt: skip


def test_a_row_that_fails_ends_the_table_in_words_without_a_worker_traceback(tmp_path):
    """A row that fails in its worker (here its train.log is a directory) ends the command
    with the way to go on and the error naming the file; the other worker, stopped while
    Python still started up, holds the SIGINT reproduce forwards until it can take it as
    "stop" (it printed a KeyboardInterrupt traceback from multiprocessing's bootstrap in
    three of four runs from a shell; the next test checks that hold alone)."""
    import subprocess
    import sys

    out = tmp_path / "repro"
    bad = out / "runs" / "adding-T10-lstm"
    (bad / "train.log").mkdir(parents=True)
    (bad / "metrics.jsonl").touch()
    argv = [sys.executable, "-m", "rnnlab", "reproduce", "adding", "--quick", "--T", "10",
            "--cells", "rnn,lstm", "--steps", "1000000", "--jobs", "2", "--out", str(out)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=240)
    assert done.returncode == 2, done.stderr
    assert "a row failed: the rows in progress saved their checkpoints" in done.stdout
    assert "Traceback" not in done.stderr, done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        f"rnnlab: error: [Errno 21] Is a directory: '{bad / 'train.log'}'")


def _stop_asked_in_worker() -> bool:
    return reproduce._stop_asked


def test_a_sigint_while_a_worker_starts_up_waits_to_be_taken_as_stop():
    """A SIGINT sent the moment a worker is spawned reaches it while Python still starts up:
    spawned under `_sigint_held`, the worker holds it until `_worker_start` takes it as
    "stop" (without the hold it died of a KeyboardInterrupt in multiprocessing's bootstrap,
    the pool broken, its traceback on the terminal)."""
    import multiprocessing
    import os
    import signal
    from concurrent.futures import ProcessPoolExecutor

    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=ctx, initializer=reproduce._worker_start) as pool:
        with reproduce._sigint_held():
            future = pool.submit(_stop_asked_in_worker)
        for pid in pool._processes:
            os.kill(pid, signal.SIGINT)
        assert future.result(timeout=120) is True


def test_a_ctrl_c_as_a_row_s_trainer_starts_stops_the_row(tmp_path, monkeypatch):
    """A SIGINT that reaches a worker after run_row's look at `_stop_asked` and before the
    Trainer takes SIGINT over (while it takes the run's lock, here) stops the row after its
    first step, with its checkpoint: without the Trainer asking `_stop_asked` it was only
    noted, the row trained its whole budget and the table waited for it."""
    import os
    import signal

    from rnnlab import io

    lock = io.training_lock

    def lock_then_ctrl_c(run_dir):
        os.kill(os.getpid(), signal.SIGINT)  # taken by the worker's handler: `_stop_asked`
        return lock(run_dir)

    monkeypatch.setattr(io, "training_lock", lock_then_ctrl_c)
    monkeypatch.setattr(reproduce, "_stop_asked", False)
    old = signal.getsignal(signal.SIGINT)
    try:
        reproduce._worker_start()  # as a worker: SIGINT sets `_stop_asked`
        row = reproduce.Row("adding", "rnn", 10)
        settings = {"steps": 400, "eval_every": 100, "checkpoint_every": 100}
        with pytest.raises(KeyboardInterrupt):
            reproduce.run_row(row, tmp_path / "repro", settings)
    finally:
        signal.signal(signal.SIGINT, old)
    run_dir = tmp_path / "repro" / "runs" / row.name
    assert io.checkpoint_steps(run_dir) == [1] and not (run_dir / "result.json").exists()


@pytest.mark.parametrize("task,T,said", [
    ("temporal-order", 5, "`T` must be at least 10 (so that t₁ ≥ 1 comes after the start "
                          "symbol); got 5 instead."),
    ("adding", 1, "`T` must be at least 2 (one marker in each half); got 1 instead."),
])  # fmt: skip
def test_a_length_a_task_cannot_take_is_said_before_any_row(tmp_path, capsys, task, T, said):
    """A --T below a task's least is one line before the time estimate, and nothing is
    trained or made: it was met by the first worker, as "a row failed: ... the same command
    continues the table", which it cannot."""
    out = tmp_path / "repro"
    argv = ["reproduce", task, "--T", str(T), "--cells", "rnn", "--steps", "2", "--jobs", "1",
            "--out", str(out)]  # fmt: skip
    assert cli_main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == f"rnnlab: error: {said.replace('`T`', '`--T`')}\n"
    assert not out.exists()
    with pytest.raises(ValueError, match="`T` must be at least"):
        reproduce.run_table([reproduce.Row(task, "rnn", T)], out, jobs=1, settings={"steps": 2})
    assert not (out / "runs").exists()


def test_an_empty_out_is_refused_not_taken_as_the_current_directory(tmp_path, capsys,
                                                                    monkeypatch):  # fmt: skip
    """`--out ""` (an unset variable in `--out "$OUT"`) wrote runs/, results.md and the PNGs
    into the current directory."""
    monkeypatch.chdir(tmp_path)
    argv = ["reproduce", "adding", "--T", "10", "--cells", "rnn", "--steps", "2", "--jobs", "1",
            "--out", ""]  # fmt: skip
    assert cli_main(argv) == 2
    assert capsys.readouterr().err == ("rnnlab: error: `--out` must be a directory's path ('.' "
                                       "for the current directory); got '' instead.\n")
    assert list(tmp_path.iterdir()) == []


def test_the_table_and_its_records_are_written_together_and_atomically(tmp_path):
    """results.md and results.json hold the same rows whenever reproduce stops (it wrote
    results.md after each row and results.json only at the end: a stopped reproduce left
    the table of this run beside the records of an earlier one, or none), each written
    whole, and a symbolic link planted as results.md is replaced, not written through."""
    import io as text_io

    out = tmp_path / "repro"
    done, other = reproduce.Row("adding", "rnn", 10), reproduce.Row("adding", "gru", 10)
    settings = {"steps": 2, "eval_every": 1}
    reproduce.run_row(done, out, settings)
    reproduce.run_row(other, out, {"steps": 3, "eval_every": 1})
    elsewhere = tmp_path / "elsewhere.md"
    elsewhere.write_text("mine")
    (out / "results.md").symlink_to(elsewhere)
    with pytest.raises(ValueError, match="adding-T10-gru was trained with others"):
        reproduce.run_table([done, other], out, jobs=1, settings=settings,
                            stream=text_io.StringIO())  # fmt: skip
    assert elsewhere.read_text() == "mine" and not (out / "results.md").is_symlink()
    records = json.loads((out / "results.json").read_text())
    assert [r["cell"] for r in records] == ["rnn"]
    assert (out / "results.md").read_text() == reproduce.markdown(records)


def test_a_diverged_row_tested_on_an_earlier_checkpoint_says_which(tmp_path, monkeypatch):
    """An update that overflows after the last checkpoint (every 1,000 steps on adding):
    the test is of that checkpoint's weights, and the verdict says their step beside the one
    it diverged at (it read as the test of the weights it diverged with)."""
    from rnnlab import optim

    update, calls = optim.Adam.update, []

    def overflowing(self, params, grads, state, lr=None):
        update(self, params, grads, state, lr=lr)
        calls.append(1)
        if len(calls) == 4:  # step 4's update: after the checkpoint of step 2
            next(iter(params.values()))[...] = np.inf

    monkeypatch.setattr(optim.Adam, "update", overflowing)
    row = reproduce.Row("adding", "lstm", 10)
    settings = {"steps": 6, "eval_every": 2, "checkpoint_every": 2, "optimizer": "adam"}
    record = reproduce.run_row(row, tmp_path / "repro", settings)
    assert record["steps"] == 3 and record["tested_step"] == 2 and record["diverged_at"] == 4
    verdict = reproduce.judge(record)["verdict"]
    assert verdict == "diverged at step 4 (tested: its checkpoint of step 2)"
    assert reproduce.run_row(row, tmp_path / "repro", settings)["reused"]


def test_a_row_read_back_that_ran_on_other_kernels_is_said(tmp_path, capsys):
    """A finished row whose record names other kernels than this reproduce's rows run on (a
    variable set between the two commands, a row of before they were pinned) is read back
    with a warning naming both: it was mixed into the table without a word."""
    import io as text_io

    out = tmp_path / "repro"
    rows = [reproduce.Row("adding", "rnn", 10), reproduce.Row("adding", "gru", 10)]
    settings = {"steps": 2, "eval_every": 1}
    for row, kernels in zip(rows, ({"threads": 7, "blas": "auto", "tiles": "auto"},
                                   reproduce.row_kernels()), strict=True):  # fmt: skip
        reproduce.run_row(row, out, settings)
        result = out / "runs" / row.name / "result.json"
        data = json.loads(result.read_text())
        data["record"]["kernels"] = kernels
        result.write_text(json.dumps(data))
    capsys.readouterr()
    records = reproduce.run_table(rows, out, jobs=1, settings=settings, stream=text_io.StringIO())
    assert all(r["reused"] for r in records)
    err = capsys.readouterr().err
    assert err.count("rnnlab: warning:") == 1
    now = reproduce.row_kernels()  # (the tests' variables over ROW_ENVIRONMENT)
    assert (f"rnnlab: warning: adding-T10-rnn was finished on other kernels (threads 7, blas "
            f"auto, tiles auto) than this reproduce's rows run on (threads {now['threads']}, "
            f"blas {now['blas']}, tiles {now['tiles']})") in err  # fmt: skip


def test_an_out_whose_table_is_a_directory_is_refused_before_any_row(tmp_path, capsys):
    """OUT/results.md (or results.json) a directory: said by --out before anything trains,
    not after the first row as "a row failed" over an error that named `path`."""
    out = tmp_path / "repro"
    (out / "results.json").mkdir(parents=True)
    argv = ["reproduce", "adding", "--T", "10", "--cells", "rnn", "--steps", "2", "--jobs", "1",
            "--out", str(out)]  # fmt: skip
    assert cli_main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == (
        f"rnnlab: error: `--out` must be a directory whose results.md and results.json are "
        f"files, or not there yet; got '{out}', whose '{out / 'results.json'}' is a directory "
        f"instead.\n")  # fmt: skip
    assert not (out / "runs").exists()


def test_a_metrics_file_with_records_it_cannot_draw_leaves_them_out(tmp_path, capsys):
    """Validation records without the curve's numbers (a file another rnnlab or a hand
    wrote) are left out of the PNG with a warning naming the file: the PNG, drawn after the
    table, ended the command with a KeyError traceback."""
    import io as text_io

    out = tmp_path / "repro"
    row = reproduce.Row("adding", "rnn", 10)
    settings = {"steps": 4, "eval_every": 1}
    reproduce.run_row(row, out, settings)
    metrics = out / "runs" / row.name / "metrics.jsonl"
    with open(metrics, "a") as f:
        for bad in ({"split": "valid", "step": 5},
                    {"split": "valid", "step": "x", "mse": 0.1, "baseline_mse_empirical": 0.1},
                    {"split": "valid", "step": 6, "mse": -1, "baseline_mse_empirical": 0.1}):
            f.write(json.dumps(bad) + "\n")
    capsys.readouterr()
    reproduce.run_table([row], out, jobs=1, settings=settings, stream=text_io.StringIO())
    err = capsys.readouterr().err
    assert (f"rnnlab: warning: 3 of the validation records in {metrics} have no number 'step', "
            f"'mse' or 'baseline_mse_empirical' to draw: left out of {out / 'adding.png'}\n"
            ) in err  # fmt: skip
    assert (out / "adding.png").stat().st_size > 0


def test_the_time_stated_up_front_is_of_what_is_left(tmp_path, capsys):
    """A continued table's estimate counts the rows still to train, from their checkpoints:
    it stated the whole table's time again (an hour, for a full table stopped minutes
    before its end)."""
    out = tmp_path / "repro"
    settings = {"steps": 60, "eval_every": 20, "checkpoint_every": 20}
    finished, stopped = reproduce.Row("adding", "rnn", 10), reproduce.Row("adding", "gru", 10)
    reproduce.run_row(finished, out, settings)
    reproduce.run_row(stopped, out, settings)
    run_dir = out / "runs" / stopped.name
    (run_dir / "result.json").unlink()  # stopped after its checkpoint at step 20
    for step in (40, 60):
        shutil.rmtree(run_dir / "checkpoints" / f"step-{step:08d}")
    (run_dir / "checkpoints" / "latest").unlink()
    whole = reproduce.expected_seconds([stopped], settings)
    assert whole > 0
    left = reproduce.expected_seconds([finished, stopped], settings, out)
    assert left == pytest.approx(whole * 40 / 60)
    # the command says what an earlier reproduce did (here every row: nothing trains)
    out = tmp_path / "cli"
    reproduce.run_row(finished, out, {"steps": 60, "eval_every": 6})  # (--steps 60's)
    argv = ["reproduce", "adding", "--T", "10", "--cells", "rnn", "--steps", "60", "--jobs", "1",
            "--out", str(out)]  # fmt: skip
    capsys.readouterr()
    assert cli_main(argv) == 0
    assert capsys.readouterr().out.startswith(
        f"reproducing 1 run (adding) into {out} (1 finished by an earlier reproduce), a reduced "
        "run (--steps 60, below the table's budget of 600 steps for every row): about 0s of "
        "CPU")  # fmt: skip


def test_a_finished_table_is_read_back_without_making_its_tasks(tmp_path, capsys, monkeypatch):
    """The tasks of the rows still to train are made before any trains (a length a task
    cannot take is said at once); a finished row's are not: its table is read back, through
    the command and run_table, where its task can no longer be made (the digits without
    scikit-learn, here any task). Before, every row's task was made, twice by the command."""
    import io as text_io

    from rnnlab import tasks

    out = tmp_path / "repro"
    row = reproduce.Row("adding", "rnn", 10)
    reproduce.run_row(row, out, {"steps": 2, "eval_every": 1})

    def cannot(cfg):
        raise ValueError("this task cannot be made here")

    monkeypatch.setattr(tasks, "make_task", cannot)
    argv = ["reproduce", "adding", "--T", "10", "--cells", "rnn", "--steps", "2", "--jobs", "1",
            "--out", str(out)]  # fmt: skip
    assert cli_main(argv) == 0
    said = capsys.readouterr()
    # (the row trained here, not in a worker of one thread: said as of other kernels)
    assert "(1 finished by an earlier reproduce)" in said.out, said
    assert "cannot be made" not in said.err and "error" not in said.err, said.err
    records = reproduce.run_table([row], out, jobs=1, settings={"steps": 2, "eval_every": 1},
                                  stream=text_io.StringIO())  # fmt: skip
    assert [r["cell"] for r in records] == ["rnn"]
    with pytest.raises(ValueError, match="cannot be made here"):  # a row to train: said
        reproduce.run_table([reproduce.Row("adding", "gru", 10)], out, jobs=1,
                            settings={"steps": 2, "eval_every": 1})  # fmt: skip


def test_a_row_with_a_nan_inside_a_step_says_the_step_the_log_says(tmp_path, monkeypatch):
    """A NaN in a step's forward pass: the row's weights are those of the step before (the
    steps trained), and its verdict names the step that went bad, as the training log does
    (it named the steps trained, one fewer); the record says the rnnlab that trained it."""
    import rnnlab
    from rnnlab.tasks.synthetic import Adding

    loss, calls = Adding.loss, []

    def poisoned(self, output, batch):
        value, grad = loss(self, output, batch)
        calls.append(1)
        return (np.nan, grad) if len(calls) == 3 else (value, grad)

    monkeypatch.setattr(Adding, "loss", poisoned)
    row = reproduce.Row("adding", "rnn", 10)
    settings = {"steps": 6, "eval_every": 2, "checkpoint_every": 1}
    out = tmp_path / "repro"
    record = reproduce.run_row(row, out, settings)
    log = (out / "runs" / row.name / "train.log").read_text()
    assert "at step 3;" in log, log
    assert (record["steps"], record["tested_step"], record["diverged_at"]) == (2, 2, 3)
    verdict = reproduce.judge(record)["verdict"]
    assert verdict == "diverged at step 3 (tested: its weights of step 2)"
    assert record["rnnlab"] == rnnlab.__version__


def test_a_row_whose_validation_overflows_diverged_at_that_evaluation(tmp_path, monkeypatch):
    """The validation after step 4 not finite: the weights of step 4 are kept and tested, and
    that is the step the verdict names (no "tested" aside: the weights it diverged with)."""
    from rnnlab.tasks.synthetic import Adding

    evaluate, validations = Adding.evaluate, []

    def overflowing(self, model, split):
        result = evaluate(self, model, split)
        if split == "valid":
            validations.append(1)
            if len(validations) == 2:
                return {**result, "mse": np.inf}
        return result

    monkeypatch.setattr(Adding, "evaluate", overflowing)
    row = reproduce.Row("adding", "rnn", 10)
    record = reproduce.run_row(row, tmp_path / "repro", {"steps": 8, "eval_every": 2})
    assert (record["steps"], record["tested_step"], record["diverged_at"]) == (4, 4, 4)
    assert reproduce.judge(record)["verdict"] == "diverged at step 4"
