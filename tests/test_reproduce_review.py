"""Review of `rnnlab reproduce`: a run on fewer steps than the table's (--steps) is said to be
reduced wherever its results are shown, and SIGTERM stops the table as Ctrl-C does (the rows
in progress save their checkpoints, the same command continues them), not the command alone
with its worker training on, and an --out whose results.md or results.json is not a
reproduce's is refused, not written over."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from rnnlab import reproduce
from rnnlab.cli import main as cli_main

_BASE = {"baseline_mse": 1 / 6, "baseline_mse_one": 0.17, "baseline_mse_empirical": 0.16}


def _record(budget, **more):
    return {"task": "adding", "T": 50, "cell": "rnn", "steps": budget, "budget": budget,
            "stopped_by": "steps", "wall_seconds": 5, "cpu_seconds": 4,
            "test": {"mse": 0.158, **_BASE}, **more}  # fmt: skip


def test_a_row_on_fewer_steps_than_the_table_s_says_so_in_the_table():
    full = reproduce.table_budget(reproduce.Row("adding", "rnn", 50))
    assert full == 60 * 50
    # (a record of before "table_budget": its row's is worked out)
    lines = reproduce.markdown([_record(100), _record(full), _record(full + 1),
                                _record(100, table_budget=90)]).splitlines()  # fmt: skip
    assert "| 100 (100, reduced from 3,000) |" in lines[2]
    assert "reduced" not in lines[3] and "reduced" not in lines[4]
    assert "reduced" not in lines[5]  # its own record says the table's budget was 90
    assert reproduce.reduced_from(_record(100)) == 3000
    assert reproduce.reduced_from(_record(100, task="nonsense")) is None


def test_a_reduced_run_is_said_in_every_place_its_results_are_shown(tmp_path, capsys):
    out = tmp_path / "repro"
    argv = ["reproduce", "adding", "--T", "10", "--steps", "3", "--cells", "rnn", "--jobs", "1",
            "--out", str(out)]  # fmt: skip
    assert cli_main(argv) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith(
        f"reproducing 1 run (adding) into {out}, a reduced run (--steps 3, below the table's "
        "budget of 600 steps for every row): about")
    assert printed[1].startswith("[1/1] adding-T10-rnn: ")
    assert "(3 steps of a budget reduced to 3 from the table's 600, " in printed[1]
    row = "| adding | 10 | rnn | 3 (3, reduced from 600) |"
    assert any(line.startswith(row) for line in printed)
    assert printed[-1].startswith("1 run in ") and (
        "(a reduced run: 1 row on fewer steps than the table's, not its results); table: "
        in printed[-1])  # fmt: skip
    assert row in (out / "results.md").read_text()
    (record,) = json.loads((out / "results.json").read_text())
    assert (record["budget"], record["table_budget"]) == (3, 600)
    # the table's budget or more is not reduced
    capsys.readouterr()
    argv = ["reproduce", "adding", "--T", "2", "--steps", "120", "--cells", "rnn", "--jobs", "1",
            "--out", str(tmp_path / "full")]  # fmt: skip
    assert cli_main(argv) == 0
    printed = capsys.readouterr().out
    assert "a reduced run" not in printed and "reduced from" not in printed and " (120)" in printed


def _stop_asked_in_worker() -> bool:
    return reproduce._stop_asked


def test_a_sigterm_while_a_worker_starts_up_waits_to_be_taken_as_stop():
    """A process group's SIGTERM (a batch system's) reaching a worker while Python starts up
    is held until `_worker_start` takes it as "stop", as a SIGINT is: it killed the worker,
    the pool broken."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=ctx, initializer=reproduce._worker_start) as pool:
        with reproduce._sigint_held():
            future = pool.submit(_stop_asked_in_worker)
        for pid in pool._processes:
            os.kill(pid, signal.SIGTERM)
        assert future.result(timeout=120) is True


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@contextlib.contextmanager
def _training(argv: list[str], run, **popen):
    """`reproduce ARGV` started, once the worker trains `run` (its lock taken, its log
    begun): yields (the command's process, the worker's pid). Afterwards neither is left
    running, whatever the test did (a failure leaves an orphan worker otherwise)."""
    proc = subprocess.Popen(argv, **popen)
    worker = None
    try:
        deadline = time.monotonic() + 240
        while not ((run / "metrics.jsonl").exists() and (run / ".rnnlab-lock").exists()):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.2)
        worker = int((run / ".rnnlab-lock").read_text().split()[0])
        yield proc, worker
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        if worker is not None and _alive(worker):
            os.kill(worker, signal.SIGKILL)


def _ends(worker: int) -> None:
    deadline = time.monotonic() + 60
    while _alive(worker) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive(worker)


def test_sigterm_stops_the_rows_in_progress_and_the_same_command_continues(tmp_path):
    """SIGTERM to reproduce alone (`kill`, `timeout`): it died of it, saying nothing, while
    its worker trained its row to the end for no table and then waited for ever, holding the
    row's lock (the same command was refused: "being trained by another process"). Now the
    row in progress saves its checkpoint, the command says so and ends with SIGTERM's status,
    its worker ends, and the same command takes the row up from its checkpoint."""
    out = tmp_path / "repro"
    argv = [sys.executable, "-m", "rnnlab", "reproduce", "adding", "--T", "10", "--cells",
            "rnn,lstm", "--steps", "1000000", "--jobs", "1", "--out", str(out)]  # fmt: skip
    run = out / "runs" / "adding-T10-lstm"  # (the table's order: lstm first)
    with _training(argv, run, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                   text=True) as (proc, worker):  # fmt: skip
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 143, (proc.returncode, stderr)
        assert stderr.strip().splitlines()[-1] == "rnnlab: terminated by SIGTERM"
        assert "Traceback" not in stderr
        assert ("terminated: the rows in progress saved their checkpoints; the same command "
                "continues the table") in stdout  # fmt: skip
        _ends(worker)
    from rnnlab import io

    assert not (run / "result.json").exists() and io.checkpoint_steps(run)[-1] > 0
    assert not (out / "runs" / "adding-T10-rnn").exists()  # queued, never started
    settings = {"steps": 1000000, "eval_every": 250}
    assert reproduce.finished_before(reproduce.Row("adding", "lstm", 10), out, settings) is None



@pytest.mark.parametrize("name, text", [
    ("results.md", "# my results\n"),
    ("results.json", '{"accuracy": 0.9}\n'),
    ("results.json", "not json\n"),
])  # fmt: skip
def test_an_out_whose_results_are_not_a_reproduce_s_is_refused_not_written_over(
        tmp_path, capsys, name, text):  # fmt: skip
    """`--out .` (or any directory) holding a results.md or results.json of its own: reproduce
    wrote its table over it without a word. Now --out is refused before any row trains, and
    the file is left as it was."""
    (tmp_path / name).write_text(text)
    argv = ["reproduce", "adding", "--T", "10", "--steps", "3", "--cells", "rnn", "--jobs", "1",
            "--out", str(tmp_path)]  # fmt: skip
    assert cli_main(argv) == 2
    assert capsys.readouterr().err == (
        f"rnnlab: error: `--out` must be a directory (new, or a reproduce's output); got "
        f"'{tmp_path}', whose {name} is not a reproduce's table instead. Give another --out: "
        "reproduce would write over that file.\n")
    assert (tmp_path / name).read_text() == text and not (tmp_path / "runs").exists()


def test_a_row_of_other_settings_is_refused_before_the_line_that_counts_it_finished(
        tmp_path, capsys):  # fmt: skip
    """A row an earlier reproduce finished with another --steps: the command said
    "reproducing 1 run (adding) into OUT (1 finished by an earlier reproduce): about 0s of
    CPU" and then refused that row. Now the refusal comes first, alone."""
    out = tmp_path / "repro"
    reproduce.run_row(reproduce.Row("adding", "rnn", 10), out, {"steps": 5, "eval_every": 1})
    capsys.readouterr()
    argv = ["reproduce", "adding", "--T", "10", "--steps", "6", "--cells", "rnn", "--jobs", "1",
            "--out", str(out)]  # fmt: skip
    assert cli_main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        "rnnlab: error: `--out` must be a new directory, or one whose runs have this table's "
        f"settings; got '{out}', whose {out / 'runs' / 'adding-T10-rnn'} was trained with others "
        "instead. Give another --out, or remove that run to train it again.\n")


@pytest.mark.parametrize("name", ["results.md", "results.json"])
def test_an_out_whose_table_is_a_fifo_is_refused_before_any_row(tmp_path, capsys, name):
    """OUT/results.md (or results.json) a FIFO: the row trained, then the table's write
    refused it naming `path`, an argument never typed, under "a row failed: ... the same
    command continues the table" (it could not). Now --out is refused before any row, as a
    directory there is."""
    os.mkfifo(tmp_path / name)
    argv = ["reproduce", "adding", "--T", "10", "--steps", "3", "--cells", "rnn", "--jobs", "1",
            "--out", str(tmp_path)]  # fmt: skip
    assert cli_main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == (
        "rnnlab: error: `--out` must be a directory whose results.md and results.json are "
        f"files, or not there yet; got '{tmp_path}', whose '{tmp_path / name}' is a FIFO (named "
        "pipe) instead.\n")  # fmt: skip
    assert not (tmp_path / "runs").exists()


def test_an_out_whose_name_is_too_long_is_refused_by_name(tmp_path, capsys):
    """A name longer than the file system takes: "rnnlab: error: [Errno 36] File name too
    long: '...'", naming no option."""
    out = tmp_path / ("x" * 300) / "sub"
    assert cli_main(["reproduce", "adding", "--out", str(out)]) == 2
    assert capsys.readouterr().err == (
        "rnnlab: error: `--out` must be a directory rnnlab can create and write in; got "
        f"'{out}' (File name too long) instead.\n")
    assert list(tmp_path.iterdir()) == []


def test_an_ignored_sigterm_stays_ignored():
    """A reproduce started with SIGTERM ignored (its starter chose so, as `rnnlab train`'s
    Trainer respects) goes on through one and finishes its table."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "repro")
        run = os.path.join(out, "runs", "adding-T10-rnn")
        argv = [sys.executable, "-m", "rnnlab", "reproduce", "adding", "--T", "10", "--cells",
                "rnn", "--steps", "600", "--jobs", "1", "--out", out]  # fmt: skip
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                preexec_fn=lambda: signal.signal(signal.SIGTERM, signal.SIG_IGN))
        try:
            deadline = time.monotonic() + 240
            while not os.path.exists(os.path.join(run, "metrics.jsonl")):
                assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
                time.sleep(0.1)
            proc.send_signal(signal.SIGTERM)
            stdout, stderr = proc.communicate(timeout=240)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        assert proc.returncode == 0, stderr
        assert os.path.exists(os.path.join(run, "result.json")) and "[1/1] adding-T10-rnn" in stdout


def test_a_worker_whose_reproduce_is_killed_saves_its_row_and_ends(tmp_path):
    """A reproduce killed outright (SIGKILL, the OOM killer, a crash) cannot stop its
    workers: one trained its row on for no table, then waited for ever holding the row's
    lock, and the same command was refused ("being trained by another process") until it
    was found and killed by hand. Now the worker sees its parent gone: the row saves its
    checkpoint at its next step, the worker ends, and the same command takes the row up."""
    out = tmp_path / "repro"
    argv = [sys.executable, "-m", "rnnlab", "reproduce", "adding", "--T", "10", "--cells",
            "rnn", "--steps", "1000000", "--jobs", "1", "--out", str(out)]  # fmt: skip
    run = out / "runs" / "adding-T10-rnn"
    with _training(argv, run, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL) as (proc, worker):  # fmt: skip
        proc.kill()
        proc.wait(timeout=60)
        _ends(worker)
    from rnnlab import io

    assert not (run / "result.json").exists() and io.checkpoint_steps(run)[-1] > 0
    settings = {"steps": 1000000, "eval_every": 250}
    assert reproduce.finished_before(reproduce.Row("adding", "rnn", 10), out, settings) is None


def test_a_row_stopped_early_tells_its_log_to_run_reproduce_again(tmp_path):
    """A row's train.log ended a stopped row with "continue with: rnnlab train --resume ROW",
    which trains the row but leaves the table without its record: the Trainer's advice is
    reproduce's own command now (here a time limit stops the row after its first step)."""
    row = reproduce.Row("adding", "rnn", 10)
    out = tmp_path / "repro"
    reproduce.run_row(row, out, {"steps": 6, "eval_every": 2, "time_limit": 1e-9})
    log = (out / "runs" / row.name / "train.log").read_text()
    assert "continue with: the same rnnlab reproduce command, which resumes this row\n" in log
    assert "rnnlab train --resume" not in log and "--time-limit" not in log, log
