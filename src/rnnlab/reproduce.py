"""`rnnlab reproduce [TASK|all] [--quick]`: the long-lag contrasts of the papers behind the
memory tasks, cell by cell and length by length, from the same defaults `rnnlab train` uses.

- temporal order (Hochreiter & Schmidhuber 1997, exp. 6a) at T = 100: the LSTM learns it,
  the tanh RNN stays at chance;
- adding (Le, Jaitly & Hinton 2015) at T = 100, 200, 400: LSTM and GRU solve it (MSE < 0.01),
  the tanh RNN stays at the baseline, the IRNN as far as its recipe gets in the budget;
- copy memory (Arjovsky, Shah & Bengio 2016) at T = 100, 200: the gated cells below the
  memoryless baseline, with the share of symbols recalled;
- digits read pixel by pixel (T = 64, the small cousin of Le et al.'s pixel MNIST): every
  cell far above chance; the paper's order (IRNN and LSTM ahead of the tanh RNN) is not met
  at 64 steps (docs/results.md, "Pixel digits: a miss").

Every row is one `rnnlab train` run (rnnlab.tasks.defaults_for: the cell's and length's
defaults, a step budget that grows with T, early stop once solved) in OUT/runs, judged against
the best memoryless answer on its own test set. The table goes to OUT/results.md and the
terminal, the validation curves of every cell of a task, with that baseline, to OUT/TASK.png.
Rows run in --jobs processes of one thread each, on the same kernels everywhere (the BLAS's
products, not rnnlab's measured choice of its own kernel, which may differ from host to
host): a row's steps and results do not depend on --jobs or on what ran beside it, its wall
time does. Ctrl-C (or SIGTERM) stops the rows in progress at their next step, each saving its
checkpoint, and the same command continues them. A --steps below a row's budget in the table
makes a reduced run, said as one wherever its results are shown.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import signal
import stat
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import numpy as np

from rnnlab import __version__, _checks, io

if TYPE_CHECKING:
    from rnnlab.train import TrainConfig

TASKS = ("temporal-order", "adding", "copy", "digits")


@dataclass(frozen=True)
class Row:
    task: str
    cell: str
    T: int

    @property
    def name(self) -> str:
        return f"{self.task}-T{self.T}-{self.cell}"


# The full table: cells × lengths per task. --quick keeps each task's shortest length.
LENGTHS = {"temporal-order": (100,), "adding": (100, 200, 400), "copy": (100, 200), "digits": (64,)}
CELLS = {
    "temporal-order": ("lstm", "gru", "rnn"),
    "adding": ("lstm", "gru", "rnn", "irnn"),
    "copy": ("gru", "lstm", "rnn"),
    "digits": ("irnn", "lstm", "rnn"),
}
GATED = ("lstm", "gru")

# CPU milliseconds of one training step per unit of sequence length (one thread, batch 32,
# 64 hidden units; more scale linearly): the slowest row of each cell in the one-run table of
# docs/results.md: the time stated up front, on a host like that one (start-up and
# evaluations are not in it: a short run takes longer).
_MS_PER_STEP_AND_T = {"lstm": 0.17, "gru": 0.14, "rnn": 0.06, "irnn": 0.06}


def rows(task: str, quick: bool = False) -> list[Row]:
    """The rows of one task ("all": every task), shortest lengths only with quick; shorter
    lengths first, so that a run cut short has the quick table."""
    tasks = TASKS if task == "all" else (_checks.choice(task, "TASK", TASKS + ("all",)),)
    out = []
    for t in tasks:
        lengths = LENGTHS[t][:1] if quick else LENGTHS[t]
        out += [Row(t, cell, T) for T in lengths for cell in CELLS[t]]
    return sorted(out, key=lambda r: LENGTHS[r.task].index(r.T))


def config(row: Row, settings: dict[str, Any] | None = None) -> TrainConfig:
    """The TrainConfig of a row: `rnnlab train TASK --cell C --T N` (digits: pixel by pixel),
    with `settings` over it (the test's reduced budgets)."""
    from rnnlab import tasks
    from rnnlab.train import TrainConfig

    given: dict[str, Any] = {"cell": row.cell, "seed": 0}
    if row.task == "digits":
        given["digits_mode"] = "pixels"
    else:
        given["T"] = row.T
    given.update(settings or {})
    base = tasks.defaults_for(row.task, row.cell, given.get("T"))
    return TrainConfig.from_dict({**base, **given, "task": row.task}, source="reproduce")


def table_budget(row: Row) -> int:
    """The step budget the table gives a row (its task's, cell's and length's, `rnnlab train`'s
    default): a row trained on fewer (--steps) is a reduced run, said wherever it is shown."""
    return config(row).steps


def reduced_from(record: dict[str, Any]) -> int | None:
    """The table's budget of a record's row where the record's own is smaller (a reduced
    run: its verdict is of fewer steps than the papers' contrast was set up with), else None.
    A record written before it held "table_budget" has its row's worked out."""
    full = record.get("table_budget")
    if not isinstance(full, int) or isinstance(full, bool):
        try:
            full = table_budget(Row(record["task"], record["cell"], record["T"]))
        except (ValueError, TypeError, KeyError):  # (not a row the table can make)
            return None
    budget = record.get("budget")
    return full if isinstance(budget, int) and budget < full else None


def expected_seconds(table: list[Row], settings: dict[str, Any] | None = None,
                     out: Path | None = None) -> float:  # fmt: skip
    """CPU seconds of the table if no row stopped early (solved rows stop sooner); with
    `out`, of what is left of it there (a row with a result.json is read back, one stopped
    after a checkpoint trains the steps after it)."""
    total = 0.0
    for row in table:
        cfg = config(row, settings)
        scale = cfg.batch_size / 32 * cfg.hidden / 64
        per_step = _MS_PER_STEP_AND_T.get(row.cell, 0.25) * row.T * scale / 1000
        total += (cfg.steps - _steps_done(row, cfg.steps, out)) * per_step
    return total


def _steps_done(row: Row, steps: int, out: Path | None) -> int:
    """The steps of a row OUT holds already: all of them where it finished (its result.json;
    a broken one is said, and the row trained again, later), else its last checkpoint's."""
    if out is None:
        return 0
    run_dir = Path(out) / "runs" / row.name
    if (run_dir / "result.json").is_file():
        return steps
    saved = io.checkpoint_steps(run_dir) if run_dir.is_dir() else []
    return min(saved[-1], steps) if saved else 0


def _cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


# What every row runs on: one thread, and the BLAS's products rather than the kernel rnnlab
# measures per host (`rnnlab info`), so that a row's numbers are those of any other --jobs and
# of the table in docs/results.md on a host of the same kind. A variable the user set wins.
ROW_ENVIRONMENT = {
    "RNNLAB_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1", "RNNLAB_TILES": "off", "RNNLAB_BLAS": "numpy",
}  # fmt: skip


def row_kernels() -> dict[str, Any]:
    """The kernels `run_table`'s rows run on (ROW_ENVIRONMENT under the variables the user
    set), as a row's record names them under "kernels"."""
    from rnnlab import settings as env

    given = {k: os.environ[k] for k in env.VARIABLES if k in os.environ}  # (no warning again)
    s = env.read({**ROW_ENVIRONMENT, **given})
    return {"threads": s.threads, "blas": s.blas, "tiles": s.tiles}


def _other_kernels(row: Row, record: dict[str, Any], kernels: dict[str, Any]) -> None:
    """Say a finished row read back that ran on other kernels than this reproduce's rows
    (a variable set or unset between the two, a row of before 2026-12-04): the table mixes
    them, and another BLAS's rounding can move a result's last digits or a solved step."""
    def named(k: object) -> str:
        if not isinstance(k, dict):
            return "not recorded"
        return ", ".join(f"{key} {k.get(key)}" for key in ("threads", "blas", "tiles"))

    if record.get("kernels") != kernels:
        print(f"rnnlab: warning: {row.name} was finished on other kernels ("
              f"{named(record.get('kernels'))}) than this reproduce's rows run on "
              f"({named(kernels)}): its numbers may differ from a run of it now in their last "
              f"digits (a solved row by an evaluation's steps); remove {record['run_dir']} to "
              "train it again", file=sys.stderr, flush=True)  # fmt: skip


def _settled(config: dict[str, Any]) -> dict[str, Any] | None:
    """A stored config's settings as TrainConfig.settled writes them (None if unreadable):
    rows written before weight_decay could be none (the optimizer's own) compare equal to
    the same rows now."""
    from rnnlab.train import TrainConfig

    try:
        return TrainConfig.from_run(config, source="stored").settled()
    except (ValueError, TypeError, KeyError):
        return None


def check_tasks(table: list[Row], settings: dict[str, Any] | None = None) -> None:
    """Each task and length of the table can be made here (its held-out sets are drawn or
    read): a --T below a task's least, one whose sequences do not fit in memory, or the digits
    without scikit-learn is said at once, not by the first worker that meets it, as a failed
    row with "the same command continues the table" (it cannot)."""
    from rnnlab import tasks

    made = set()
    for row in table:
        if (row.task, row.T) not in made:
            tasks.make_task(config(row, settings))
            made.add((row.task, row.T))


def finished_before(row: Row, out: Path, settings: dict[str, Any] | None = None, *,
                    say: bool = True) -> dict[str, Any] | None:  # fmt: skip
    """The record of a row an earlier reproduce finished with these settings, else None (the
    row is to be trained, from its last checkpoint if it has one). A run directory trained
    with other settings (another --steps, say) is refused, never mixed into the table; a
    result.json that is not a finished row's record is said (with `say`) and not used."""
    cfg = config(row, settings)
    run_dir = Path(out) / "runs" / row.name
    _directory(run_dir, out)
    wanted = cfg.settled()
    finished = run_dir / "result.json"
    record = _finished_record(finished, row, say) if finished.exists() else None
    if record is not None:
        if _settled({"train": record.get("config")}) == wanted:
            return dict(record, reused=True, run_dir=str(run_dir))  # (where it is now)
        _other_settings(out, run_dir)
    if io.checkpoint_steps(run_dir) and _settled(io.load_checkpoint(run_dir).config) != wanted:
        _other_settings(out, run_dir)
    return None


def run_row(row: Row, out: Path, settings: dict[str, Any] | None = None, *,
            checked: bool = False) -> dict[str, Any]:  # fmt: skip
    """Train one row into OUT/runs/NAME and return its record (the table's row).

    A reproduce that was stopped (Ctrl-C, a closed session, a crash) is continued by the same
    command: a row whose run finished with the same settings is read back from its
    result.json (`finished_before`; `checked`: the caller did that already), a row stopped
    after a checkpoint resumes there (bit for bit the run it would have been), and a row that
    never reached one starts again. A row interrupted here (Ctrl-C) saves its checkpoint and
    raises KeyboardInterrupt: it has no record, and the next reproduce resumes it."""
    from rnnlab import runs, tasks
    from rnnlab import settings as env
    from rnnlab.train import NonFiniteError, Trainer

    class _RowTrainer(Trainer):
        def _signals_before(self) -> set[int]:
            # A Ctrl-C that reached a worker after the check below and before the Trainer
            # took SIGINT over (its start: the lock, config.json, the metrics) set only
            # `_stop_asked`: the row stops after its first step, as at a Ctrl-C during it,
            # where it trained its whole budget while the table waited for it.
            return {signal.SIGINT} if _stop_asked else set()

    cfg = config(row, settings)
    run_dir = Path(out) / "runs" / row.name
    if not checked:
        record = finished_before(row, out, settings)
        if record is not None:
            return record
    ckpt = io.load_checkpoint(run_dir) if io.checkpoint_steps(run_dir) else None
    if ckpt is not None and _settled(ckpt.config) != cfg.settled():
        _other_settings(out, run_dir)
    wanted = cfg.settled()
    finished = run_dir / "result.json"
    task = tasks.make_task(cfg)
    spec = tasks.model_spec(cfg, task)
    model = tasks.build_model(spec, seed=cfg.seed)
    run_dir.mkdir(parents=True, exist_ok=True)
    cpu0, wall0 = _cpu_seconds(), time.perf_counter()
    tested: int | None = None  # a diverged row's: the step of the weights its test is of
    went_bad: int | None = None  # and the step that went bad (NonFiniteError.step)
    with open(run_dir / "train.log", "a" if ckpt else "w", encoding="utf-8") as log:
        trainer = _RowTrainer(model, task, cfg, run_dir, spec=spec, stream=log, quiet=True)
        # (its log said "continue with: rnnlab train --resume ROW", which trains the row but
        # leaves the table without its record)
        trainer.resume_advice = "the same rnnlab reproduce command, which resumes this row"
        if ckpt is not None:
            runs.load_weights(model, ckpt, run_dir)
            trainer.restore(ckpt)
            log.write(f"resumed at step {trainer.step}\n")
        if _stop_asked:  # a Ctrl-C while the row was set up (a worker's, see _worker_start)
            raise KeyboardInterrupt
        try:
            trained = trainer.run()
        except NonFiniteError as e:  # a result of the row, not the end of the table
            log.write(f"diverged: {e}\n")
            tested, went_bad = trainer.step, e.step
            if not e.weights_good and io.checkpoint_steps(run_dir):  # (the update overflowed)
                last = io.load_checkpoint(run_dir)
                runs.load_weights(model, last, run_dir)
                tested = last.step
            trained = {"step": trainer.step, "best": trainer.best,
                       "best_step": trainer.best_step, "stopped_by": "diverged",
                       "signal": "", "seconds": time.perf_counter() - wall0,
                       "seconds_in_all": trainer.seconds_in_all()}  # fmt: skip
    if trained["stopped_by"] == "interrupt":  # its checkpoint is saved; not a finished row
        raise KeyboardInterrupt
    with np.errstate(all="ignore"):  # (a diverged model's overflow is said in its record)
        raw = task.evaluate(model, "test")
    test, not_finite = io.finite_or_null(raw)
    record = {
        "task": row.task,
        "cell": row.cell,
        "T": row.T,
        "steps": trained["step"],
        "budget": cfg.steps,
        "table_budget": table_budget(row),  # (a smaller "budget": a reduced run, --steps)
        "stopped_by": trained["stopped_by"],
        "solved": bool(getattr(task, "solved", lambda result: False)(raw)),
        "wall_seconds": time.perf_counter() - wall0,
        "cpu_seconds": _cpu_seconds() - cpu0,
        "resumed_at": ckpt.step if ckpt is not None else None,  # times: of this part only
        **({"tested_step": tested} if tested is not None else {}),
        **({"diverged_at": went_bad} if went_bad is not None else {}),
        "test": {k: v for k, v in test.items() if k != "confusion"},
        "report": tasks.report(task, raw),
        "run_dir": str(run_dir),
        "config": wanted,
        "kernels": {"threads": env.current().threads, "blas": env.current().blas,
                    "tiles": env.current().tiles},  # fmt: skip
        "rnnlab": __version__,  # (a row read back keeps the version it was trained by)
    }
    if not_finite:  # (JSON has no NaN: written as null, and the row's verdict says it)
        record["non_finite"] = ", ".join(not_finite)
    io.atomic_write_json(finished, {"train": trained, "test": test, "record": record})
    return record


def _directory(path: Path, out: Path) -> None:
    """`path` (OUT or a directory in it) is a directory or can be made one: nothing on the
    way is a file."""
    for p in (path, *path.parents):
        if p.exists():
            if not p.is_dir():
                out = Path(out)
                where = ("a file" if p == out else f"under the file '{p}'" if p in out.parents
                         else f"whose '{p}' is a file")  # fmt: skip
                _checks.fail("--out", "a directory (new, or a reproduce's output)",
                             f"'{out}', {where}")  # fmt: skip
            return


def _out(out: str | Path) -> Path:
    """--out as a Path; an empty one (an unset shell variable, `--out "$OUT"`) is refused,
    not taken as the current directory, whose runs/ and results.md it would write, and so is
    one whose name the file system cannot take (too long: "[Errno 36] File name too long",
    naming no option)."""
    if isinstance(out, str) and not out:
        _checks.fail("--out", "a directory's path ('.' for the current directory)", "''")
    path = Path(out)
    for p in (path, *path.parents):  # (what _out_made and _directory ask of each)
        try:
            p.exists()
        except OSError as e:  # a name too long for the file system: said as OSError's own
            _checks.fail("--out", "a directory rnnlab can create and write in",  # words alone
                         f"'{out}' ({e.strerror or e})")  # fmt: skip
    return path


@contextlib.contextmanager
def _out_made(out: Path) -> Iterator[None]:
    """`_writable(out)` for the checks that follow it (the rows' run directories, their
    tasks: a --T below a task's least, say): the directories it made (OUT and its missing
    parents) are removed again when the command ends with an error while they are still
    empty, as a refused command leaves nothing behind (it left an empty OUT)."""
    made = [p for p in (out, *out.parents) if not p.exists()]  # (innermost first)
    try:
        _writable(out)
        yield
    except BaseException:
        for p in made:
            try:
                p.rmdir()  # (only an empty one: what a row or a table wrote stays)
            except OSError:
                break
        raise


def _writable(out: Path) -> None:
    """OUT is a directory this process can create and write a file in (a read-only one, or
    one it may not create, is said by --out before any row trains, not as a failed row)."""
    _directory(out, out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as e:
        _checks.fail("--out", "a directory rnnlab can create and write in",
                     f"'{out}' ({e.strerror or e})")  # fmt: skip
    for table in (out / "results.md", out / "results.json"):  # (written after the first row)
        try:
            mode = table.stat().st_mode  # (through a link: what the write would replace)
        except OSError:  # (nothing there yet, or a dangling link: replaced)
            continue
        if not stat.S_ISREG(mode):  # (a FIFO was refused by the write, naming `path`, after
            kind = ("a directory" if stat.S_ISDIR(mode)  # the first row as "a row failed")
                    else "a FIFO (named pipe)" if stat.S_ISFIFO(mode) else "a device or a socket")
            _checks.fail("--out", "a directory whose results.md and results.json are files, "
                         "or not there yet", f"'{out}', whose '{table}' is {kind}")
        if not table.is_symlink() and not _a_table(table):
            _checks.fail("--out", "a directory (new, or a reproduce's output)",
                         f"'{out}', whose {table.name} is not a reproduce's table",
                         "Give another --out: reproduce would write over that file.")  # fmt: skip


def _a_table(path: Path) -> bool:
    """Whether OUT/results.json or OUT/results.md is one a reproduce wrote (its records, its
    markdown table), which the next reproduce rewrites; any other file of those names (a
    `--out .` in a directory with results of its own) was written over without a word. (A
    symbolic link is replaced, its target left alone: not looked at.)"""
    if path.suffix == ".md":
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.readline().startswith("| task | T | cell |")
    try:
        records = io.read_json(path)
    except io.ConfigError:
        return False
    return isinstance(records, list) and all(
        isinstance(r, dict) and {"task", "cell", "T"} <= r.keys() for r in records)


def _finished_record(finished: Path, row: Row, say: bool = True) -> dict[str, Any] | None:
    """The record of a row's result.json, or None when the file is not one that
    `run_row` wrote (not JSON, not an object, a record without what the table shows): said
    on stderr, and the row is taken up again from its run, whose checkpoints give the same
    result (a run resumes bit for bit), and the file written anew."""
    if not finished.is_file():
        _checks.fail("--out", "a reproduce's output (its runs' result.json are files)",
                     f"'{finished}', which is not a file")  # fmt: skip
    try:
        data = io.read_json(finished)
    except io.ConfigError as e:
        why = str(e).removeprefix(f"'{finished}' ").rstrip(".")
    else:
        record = data.get("record") if isinstance(data, dict) else None
        why = (_not_a_record(record, row) if isinstance(data, dict)
               else f"it holds {_checks.describe(data)}, not a JSON object")  # fmt: skip
        if not why:
            assert isinstance(record, dict)
            return record
    if say:
        print(f"rnnlab: warning: '{finished}' is not the record of a finished {row.name} ({why}): "
              "that row is trained again from its run's last checkpoint (from the start without "
              "one) and the file written anew", file=sys.stderr, flush=True)  # fmt: skip
    return None


def _not_a_record(record: object, row: Row) -> str:
    """What is wrong with a result.json's "record" ('' when nothing): it is shown in the
    table, so it holds what the table shows, of this row."""
    if not isinstance(record, dict):
        return f"its \"record\" is {_checks.describe(record)}, not an object"
    if (record.get("task"), record.get("cell"), record.get("T")) != (row.task, row.cell, row.T):
        return "its \"record\" is of another row"
    numbers: dict[str, type | tuple[type, ...]] = {
        "steps": int, "budget": int, "wall_seconds": (int, float), "cpu_seconds": (int, float)
    }  # fmt: skip
    for key, kind in numbers.items():
        if not isinstance(record.get(key), kind) or isinstance(record.get(key), bool):
            return f"its \"record\" has no number {key!r}"
    report = record.get("report")
    if not (isinstance(report, list) and report and isinstance(report[0], str)):
        return "its \"record\" has no 'report' (lines of text)"
    if not isinstance(record.get("stopped_by"), str) or not isinstance(record.get("test"), dict):
        return "its \"record\" has no 'stopped_by' or no 'test'"
    if not isinstance(record.get("config"), dict):  # (else "trained with others", which it is not)
        return "its \"record\" has no 'config' (an object)"
    if record["stopped_by"] in ("interrupt", "time limit"):  # (written so before 2026-12-04)
        return f"its run was stopped by {record['stopped_by']} at step {record['steps']}"
    try:
        markdown([record])  # the table's line, with its verdict from the test's results
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return "its \"record\" lacks what the table shows of its test"
    if "non_finite" not in record:  # (then its verdict is "diverged", its test numbers null)
        solved = solved_by_test(row.task, record["test"])
        if record.get("solved") is not solved:
            return f"its \"solved\" is {record.get('solved')!r}, its test numbers say {solved}"
    return ""


def _other_settings(out: Path, run_dir: Path) -> None:
    _checks.fail("--out", "a new directory, or one whose runs have this table's settings",
                 f"'{out}', whose {run_dir} was trained with others",
                 "Give another --out, or remove that run to train it again.")  # fmt: skip


def judge(record: dict[str, Any]) -> dict[str, Any]:
    """The row's result, its baselines (analytic, this test set's) and verdict, as text:
    "solved" by the task's own test (its `solved`) of the record's test numbers, not by the
    record's word for it, else where it stands to the baseline."""
    t, task = record["test"], record["task"]
    if isinstance(record.get("non_finite"), str):
        return {"result": f"{record['non_finite']} not finite (NaN or inf)", "baseline": "—",
                "verdict": "diverged"}  # fmt: skip
    solved = solved_by_test(task, t)
    if record.get("stopped_by") == "diverged":  # the test of its last finite weights
        # the step that went bad, as the training log says it; older records have no
        # "diverged_at" (their verdict said the steps trained: one fewer for a NaN in a
        # step or its update)
        steps = record["steps"]
        at, tested = record.get("diverged_at", steps), record.get("tested_step", steps)
        of = (f" (tested: its checkpoint of step {tested:,})" if tested != steps
              else f" (tested: its weights of step {tested:,})" if tested != at else "")
        return {**judge({**record, "stopped_by": ""}),
                "verdict": f"diverged at step {at:,}{of}"}  # fmt: skip
    if task == "adding":
        return {
            "result": f"MSE {t['mse']:.4f}",
            "baseline": f"{t['baseline_mse']:.4f} / {t['baseline_mse_empirical']:.4f}",
            "verdict": "solved" if solved else _vs(t["mse"], t["baseline_mse_empirical"]),
        }
    if task == "copy":
        return {
            "result": f"CE {t['loss']:.4f}, recall {100 * t['recall_accuracy']:.1f} %",
            "baseline": f"{t['baseline_loss']:.4f} / {t['baseline_loss_empirical']:.4f}",
            "verdict": "solved" if solved else _vs(t["loss"], t["baseline_loss_empirical"]),
        }
    acc, chance, majority = t["accuracy"], t["chance"], t["majority"]
    if solved:
        verdict = "solved"
    elif acc < chance - 0.03:  # (below every answer that ignores the input: not "at" it)
        verdict = "below chance"
    elif acc <= majority + 0.03:
        verdict = "at chance"
    else:
        verdict = f"above chance ({(acc - chance) / (1 - chance):.0%} of the way to 100 %)"
    return {
        "result": f"accuracy {100 * acc:.1f} %",
        "baseline": f"{100 * chance:g} % / {100 * majority:.1f} %",
        "verdict": verdict,
    }


def solved_by_test(task: str, test: dict[str, Any]) -> bool:
    """Whether a row's test numbers meet its task's criterion (the task's `solved`: MSE below
    0.01, 99 % of the symbols recalled, 98 % accuracy; digits has none)."""
    from rnnlab.tasks import synthetic

    criteria = {"adding": synthetic.Adding.solved, "copy": synthetic.Copy.solved,
                "temporal-order": synthetic.TemporalOrder.solved}  # fmt: skip
    return task in criteria and bool(criteria[task](test))


def _vs(value: float, baseline: float) -> str:
    """A loss against the memoryless baseline: at it (0.95× to 1.05×), above it, or below,
    judged by the ratio as shown (0.9499 was "below the baseline (0.95×)" and 0.9501 "at the
    baseline (0.95×)": one number, two verdicts)."""
    shown = f"{value / baseline:.2f}"
    where = "above" if float(shown) > 1.05 else "at" if float(shown) >= 0.95 else "below"
    return f"{where} the baseline ({shown}×)"


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def markdown(records: list[dict[str, Any]]) -> str:
    """The table: one line per row, baselines as analytic / empirical (this test set); a row
    of a reduced run (`reduced_from`) says the table's budget beside its own."""
    lines = [
        "| task | T | cell | steps (budget) | test result | baseline: analytic / this test set "
        "| verdict | wall | CPU |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in records:
        j = judge(r)
        stop = " solved" if r["stopped_by"] == "solved" else ""
        if r.get("resumed_at"):
            stop += f", resumed at {r['resumed_at']:,}"
        full = reduced_from(r)
        cut = f", reduced from {full:,}" if full is not None else ""
        lines.append(
            f"| {r['task']} | {r['T']} | {r['cell']} | {r['steps']:,} ({r['budget']:,}{cut}){stop} "
            f"| {j['result']} | {j['baseline']} | {j['verdict']} | {_clock(r['wall_seconds'])} "
            f"| {_clock(r['cpu_seconds'])} |"
        )
    return "\n".join(lines) + "\n"


# the validation curve of each task, and its baseline on the validation set
_CURVE = {
    "adding": ("mse", "baseline_mse_empirical", "valid MSE", True),
    "copy": ("loss", "baseline_loss_empirical", "valid cross-entropy (nats/step)", True),
    "temporal-order": ("accuracy", "majority", "valid accuracy", False),
    "digits": ("accuracy", "majority", "valid accuracy", False),
}


_COLOURS = {"lstm": "C0", "gru": "C1", "rnn": "C2", "irnn": "C3"}  # the same in every PNG


def plot(task: str, records: list[dict[str, Any]], path: Path) -> Path:
    """One PNG: a panel per length, the validation curve of every cell on it, the memoryless
    baseline of the validation set dashed."""
    from rnnlab.diagnostics.plots import new_figure, save_png

    key, base_key, label, log = _CURVE[task]
    lengths = sorted({r["T"] for r in records})
    fig = new_figure(4.6 * len(lengths), 3.6)
    axes = fig.subplots(1, len(lengths), squeeze=False)[0]
    for ax, T in zip(axes, lengths, strict=True):
        baseline = None
        for r in (r for r in records if r["T"] == T):
            metrics = Path(r["run_dir"]) / "metrics.jsonl"
            if not metrics.exists():  # a row that stopped before its first record: no curve
                continue
            logged = [m for m in io.read_jsonl(metrics)
                      if isinstance(m, dict) and m.get("split") == "valid"]  # fmt: skip
            valid = [m for m in logged if _drawable(m.get("step"))
                     and _drawable(m.get(key), log) and _drawable(m.get(base_key), log)]
            if len(valid) < len(logged):  # (a file another rnnlab, or a hand, wrote)
                print(f"rnnlab: warning: {len(logged) - len(valid)} of the validation records "
                      f"in {metrics} have no number 'step', {key!r} or {base_key!r} to draw: "
                      f"left out of {path}", file=sys.stderr, flush=True)  # fmt: skip
            ax.plot([m["step"] for m in valid], [m[key] for m in valid], lw=1.2, label=r["cell"],
                    color=_COLOURS.get(r["cell"]))  # fmt: skip
            baseline = valid[-1][base_key] if valid else baseline
        if baseline is not None:
            ax.axhline(baseline, ls="--", color="grey", lw=1, label="memoryless baseline")
        if log:
            ax.set_yscale("log")
        ax.set_xlabel("step")
        cut = any(reduced_from(r) is not None for r in records if r["T"] == T)
        ax.set_title(f"{task}, T = {T}: {label}" + ("\n(a reduced run: fewer steps than the "
                     "table's)" if cut else ""), fontsize=10)  # fmt: skip
        if ax.get_legend_handles_labels()[0]:  # (no row of this length logged a step)
            ax.legend(fontsize=7)
    return save_png(fig, path)


def _drawable(value: object, log: bool = False) -> bool:
    """A finite number (a positive one on a log axis)."""
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and bool(np.isfinite(value)) and (value > 0 or not log))  # fmt: skip


def run_table(table: list[Row], out: Path, *, jobs: int = 2, settings: dict[str, Any] | None = None,
              stream: TextIO | None = None, checked: bool = False
              ) -> list[dict[str, Any]]:  # fmt: skip
    """Run the rows (in `jobs` processes of one thread each, ROW_ENVIRONMENT), write
    OUT/results.md, OUT/results.json and a PNG per task, and return the records in the
    table's order. Every row is checked against what OUT holds before any trains, so that a
    run directory of other settings is said at once, not after hours of the other rows.

    The rows train in spawned worker processes, also with jobs=1 (the same numbers for any
    --jobs): a script that calls this does so under `if __name__ == "__main__":`, as
    multiprocessing asks (`run_row` trains one row in this process). The tasks of the rows
    still to train are made once before any trains (`check_tasks`; `checked`: the caller did
    that already); a finished row's are not (its table re-read without scikit-learn, say)."""
    jobs = _checks.positive_int(jobs, "jobs")
    out = _out(out)
    with _out_made(out):  # (removed again if a row's check refuses while it is still empty)
        return _run_table(table, out, jobs, settings, stream or sys.stdout, checked)


def _run_table(table: list[Row], out: Path, jobs: int, settings: dict[str, Any] | None,
               stream: TextIO, checked: bool) -> list[dict[str, Any]]:  # fmt: skip
    """`run_table` once OUT is made."""
    done: dict[Row, dict[str, Any]] = {}
    t0 = time.perf_counter()

    def finished(row: Row, record: dict[str, Any]) -> None:
        done[row] = record
        _write_table(out, [done[r] for r in table if r in done])  # growing row by row
        earlier = " (finished by an earlier reproduce)" if record.get("reused") else ""
        j, full = judge(record), reduced_from(record)
        steps = _plural(record["steps"], "step") + (
            f" of a budget reduced to {record['budget']:,} from the table's {full:,}"
            if full is not None else "")  # fmt: skip
        if record.get("resumed_at"):  # (its times below are of the part after it)
            steps += f", resumed at {record['resumed_at']:,}"
        stream.write(f"[{len(done)}/{len(table)}] {row.name}{earlier}: {j['result']}, "
                     f"{j['verdict']} ({steps}, {_clock(record['wall_seconds'])}, "
                     f"CPU {_clock(record['cpu_seconds'])}; "
                     f"{_clock(time.perf_counter() - t0)} so far)\n")  # fmt: skip
        stream.flush()

    pending, kernels = [], row_kernels()
    for row in table:
        record = finished_before(row, out, settings)
        if record is None:
            pending.append(row)
        else:
            _other_kernels(row, record, kernels)
            finished(row, record)
    if pending and not checked:
        check_tasks(pending, settings)
    if pending:
        _train_rows(pending, out, jobs, settings, finished, stream)
    records = [done[row] for row in table]
    _write_table(out, records)
    for task in dict.fromkeys(r.task for r in table):
        try:
            plot(task, [r for r in records if r["task"] == task], out / f"{task}.png")
        except ImportError:
            stream.write("plots: matplotlib is not installed; pip install 'rnnlab[plot]'\n")
            break
        except (ValueError, OSError) as e:  # the table is written: a curve is not worth it
            print(f"rnnlab: warning: {out / f'{task}.png'} not drawn: {' '.join(str(e).split())}",
                  file=sys.stderr, flush=True)  # fmt: skip
    return records


def _write_table(out: Path, records: list[dict[str, Any]]) -> None:
    """OUT/results.json and OUT/results.md of the rows finished so far, together (a stopped
    reproduce left a results.md of this table beside the results.json of an earlier one, or
    none) and atomically: a Ctrl-C while they are written leaves the old ones whole, and a
    symbolic link planted there is replaced, not written through."""
    io.atomic_write_json(out / "results.json", records)
    io.atomic_write_text(out / "results.md", markdown(records))


def _train_rows(rows: list[Row], out: Path, jobs: int, settings: dict[str, Any] | None,
                finished: Any, stream: TextIO) -> None:  # fmt: skip
    """Train `rows` in `jobs` worker processes, at most `jobs` submitted at a time (a row
    queued ahead would start after a Ctrl-C). On Ctrl-C or a row's error, the rows in progress
    are interrupted: each saves its checkpoint at its next step, and the same command
    continues them."""
    import multiprocessing

    saved = dict(os.environ)
    for var, value in ROW_ENVIRONMENT.items():  # the workers are spawned with it
        os.environ.setdefault(var, value)
    ctx = multiprocessing.get_context("spawn")
    try:
        with ProcessPoolExecutor(max_workers=min(jobs, len(rows)), mp_context=ctx,
                                 initializer=_worker_start) as pool:  # fmt: skip
            running: dict[Future[dict[str, Any]], Row] = {}
            queue = list(rows)
            try:
                while queue or running:
                    while queue and len(running) < jobs:
                        row = queue.pop(0)
                        with _sigint_held():  # (a worker it spawns starts holding SIGINT)
                            future = pool.submit(_worker_row, row, out, settings)
                        running[future] = row
                    for f in wait(running, return_when=FIRST_COMPLETED)[0]:
                        finished(running.pop(f), f.result())
            except BaseException as e:
                for pid in list(getattr(pool, "_processes", None) or {}):
                    try:  # (a Ctrl-C at the terminal reached them already; `kill` did not)
                        os.kill(pid, signal.SIGINT)
                    except OSError:
                        pass
                wait(running)
                for f, row in running.items():
                    if not f.cancelled() and f.exception() is None:
                        finished(row, f.result())
                why = ("terminated" if isinstance(e, Terminated) else "interrupted"
                       if isinstance(e, KeyboardInterrupt) else "a row failed")  # fmt: skip
                stream.write(f"{why}: the rows in progress saved their checkpoints; the same "
                             "command continues the table\n")  # fmt: skip
                stream.flush()
                raise
    finally:
        os.environ.clear()
        os.environ.update(saved)


_stop_asked = False  # a worker's: a Ctrl-C came while it was not training
_in_row = False  # a worker's: it is training a row (`_watch_parent` waits for its checkpoint)


def _worker_row(row: Row, out: Path, settings: dict[str, Any] | None) -> dict[str, Any]:
    """`run_row` in a worker (the caller checked the row), `_in_row` while it runs."""
    global _in_row
    _in_row = True
    try:
        return run_row(row, out, settings, checked=True)
    finally:
        _in_row = False


@contextlib.contextmanager
def _sigint_held() -> Iterator[None]:
    """SIGINT and SIGTERM blocked in this thread while it spawns a worker: the worker
    inherits the mask across exec, so a Ctrl-C (or the SIGINT `_train_rows` forwards) that
    reaches it while Python starts up waits for `_worker_start` instead of printing a
    KeyboardInterrupt traceback from multiprocessing's bootstrap, and a SIGTERM sent to the
    whole process group (a batch system's) waits instead of killing it, the pool broken. The
    parent loses nothing: the signal is delivered when the mask is restored (or to another
    of its threads)."""
    if not hasattr(signal, "pthread_sigmask"):  # (Windows: no signal masks)
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _worker_start() -> None:
    """A worker process takes Ctrl-C as a request to stop: while a row trains, the Trainer's
    own handler stops it at its next step (it saves a checkpoint); between rows, or while one
    is set up, the flag keeps the next row from starting (run_row raises KeyboardInterrupt).
    A SIGINT that came while the worker started (held, `_sigint_held`) arrives here."""

    def ask(signum: int, frame: object) -> None:
        global _stop_asked
        _stop_asked = True

    signal.signal(signal.SIGINT, ask)
    if signal.getsignal(signal.SIGTERM) != signal.SIG_IGN:  # (an ignored one stays so)
        signal.signal(signal.SIGTERM, ask)  # (a process group's SIGTERM: as Ctrl-C, no death)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
    threading.Thread(target=_watch_parent, args=(os.getppid(),), daemon=True,
                     name="rnnlab-reproduce-parent").start()  # fmt: skip


def _watch_parent(parent: int, every: float = 1.0) -> None:
    """A worker whose reproduce is gone (killed by SIGKILL or the kernel's OOM killer,
    crashed, its session's SIGHUP) stops as at Ctrl-C: the row in progress saves its
    checkpoint at its next step, then the worker exits. It trained its row to the end for
    no table, then waited for ever for work from a process that was gone (a pool's worker
    holds its own end of the queue it reads: it never sees the end of it), holding the
    row's lock: the same command was refused, "being trained by another process", until
    the orphan was found and killed by hand."""
    while os.getppid() == parent:
        time.sleep(every)
    if _in_row:
        os.kill(os.getpid(), signal.SIGINT)  # (the Trainer's handler, or `_worker_start`'s)
        while _in_row:
            time.sleep(0.1)
    os._exit(1)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("task", nargs="?", default="all", help="one of " + ", ".join(TASKS) +
                   " or all (default)")  # fmt: skip
    p.add_argument("--quick", action="store_true",
                   help="each task at its shortest length only (about 7 minutes on 2 idle cores)")
    p.add_argument("--jobs", type=int, default=2,
                   help="rows trained at once, one process and one thread each (default 2)")
    p.add_argument("--out", default="reproduce", help="output directory (default: reproduce)")
    p.add_argument("--steps", type=int, default=None,
                   help="every row's step budget instead of the table's (a reduced run when it "
                   "is smaller, said as one wherever its results are shown)")
    p.add_argument("--T", dest="T", type=int, default=None,
                   help="one length for the memory tasks instead of the table's")
    p.add_argument("--cells", default=None,
                   help="comma-separated cells to keep of the table's (e.g. lstm,rnn)")


def run(args: argparse.Namespace) -> int:
    table = rows(args.task, args.quick)
    jobs = _checks.positive_int(args.jobs, "--jobs")
    settings: dict[str, Any] = {}
    if args.T is not None:
        T = _checks.positive_int(args.T, "--T")
        if any(r.task == "digits" for r in table):
            print("rnnlab: warning: --T does not apply to the digits rows: they read the "
                  "64-pixel images as they are", file=sys.stderr, flush=True)  # fmt: skip
        table = list(dict.fromkeys(Row(r.task, r.cell, T if r.task != "digits" else r.T)
                                   for r in table))  # fmt: skip
    if args.cells is not None:
        keep = [_checks.choice(c, "--cells", sorted({c for cs in CELLS.values() for c in cs}))
                for c in args.cells.split(",")]  # fmt: skip
        ran = list(dict.fromkeys(r.cell for r in table))
        table = [r for r in table if r.cell in keep]
        if not table:
            _checks.fail("--cells", f"cells the table runs for {args.task} ({', '.join(ran)})",
                         repr(args.cells))  # fmt: skip
    if args.steps is not None:
        settings["steps"] = _checks.positive_int(args.steps, "--steps")
        settings["eval_every"] = max(1, min(250, settings["steps"] // 10))
    with _sigterm_stops(), _out_made(_out(args.out)):  # (OUT removed again if refused below
        return _run_checked(args, table, jobs, settings)  # while still empty)


class Terminated(KeyboardInterrupt):
    """SIGTERM to reproduce (`kill`, `timeout`, a batch system's end of a job), taken as
    Ctrl-C is: the rows in progress save their checkpoints and the same command continues
    them; said as a SIGTERM and ended with its status (rnnlab.cli.reproduce)."""


@contextlib.contextmanager
def _sigterm_stops() -> Iterator[None]:
    """SIGTERM raises Terminated in the command while it runs. By default it killed the
    command alone: its worker went on training its row to the end for no table, then
    waited for work from a process that was gone, holding the row's lock (the next
    reproduce was refused for it), and the rows queued behind it never started."""
    def stop(signum: int, frame: object) -> None:
        raise Terminated

    if signal.getsignal(signal.SIGTERM) == signal.SIG_IGN:  # (whoever started it chose so,
        yield  # as the Trainer leaves it: rnnlab.train.take_signals)
        return
    try:
        before = signal.signal(signal.SIGTERM, stop)
    except ValueError:  # (not the main thread, which alone may set a handler: left alone)
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


def _run_checked(args: argparse.Namespace, table: list[Row], jobs: int,
                 settings: dict[str, Any]) -> int:  # fmt: skip
    """`run` once its arguments are read and OUT made."""
    out = Path(args.out)
    for row in table:  # (a run of other settings refused before the line that counts it
        finished_before(row, out, settings, say=False)  # as finished; run_table says the rest)
    budgets = [config(r, settings).steps for r in table]
    done = [_steps_done(r, steps, out) for r, steps in zip(table, budgets, strict=True)]
    # (before the time it would take; the tasks of the finished rows are not made)
    try:
        check_tasks([r for r, d, steps in zip(table, done, budgets, strict=True) if d < steps],
                    settings)  # fmt: skip
    except ValueError as e:  # (the tasks name the setting `T`; the user typed --T)
        if args.T is not None and str(e).startswith("`T` "):
            raise ValueError("`--T`" + str(e)[len("`T`") :]) from None
        raise
    cpu = expected_seconds(table, settings, out)  # (what is left of it: a continued table's)
    names = ", ".join(dict.fromkeys(r.task for r in table))
    finished = sum(d == steps for d, steps in zip(done, budgets, strict=True))
    resumed = sum(0 < d < steps for d, steps in zip(done, budgets, strict=True))
    earlier = ", ".join(([f"{finished:,} finished"] if finished else [])
                        + ([f"{resumed:,} stopped part-way"] if resumed else []))  # fmt: skip
    wall = cpu / max(1, min(jobs, len(table) - finished))
    fulls = [table_budget(r) for r in table]
    cut = sum(steps < full for steps, full in zip(budgets, fulls, strict=True))
    reduced = (f", a reduced run (--steps {args.steps:,}, below the table's budget of "
               f"{_budgets([f for s, f in zip(budgets, fulls, strict=True) if s < f])} steps "
               f"for {'every row' if cut == len(table) else f'{cut:,} of its {len(table):,} rows'})"
               if cut else "")  # fmt: skip
    print(f"reproducing {_runs(len(table))} ({names}) into {args.out}"
          + (f" ({earlier} by an earlier reproduce)" if earlier else "") + reduced
          + f": about {_clock(cpu)} of CPU if no run stops early, {_clock(wall)} on "
          f"{_plural(jobs, 'idle core')}; solved runs stop sooner", flush=True)  # fmt: skip
    t0 = time.perf_counter()
    records = run_table(table, Path(args.out), jobs=jobs, settings=settings, checked=True)
    print()
    print(markdown(records), end="")
    curves = [Path(args.out) / f"{t}.png" for t in dict.fromkeys(r["task"] for r in records)]
    drawn = ", ".join(str(c) for c in curves if c.is_file())
    cut = sum(reduced_from(r) is not None for r in records)
    print(f"\n{_runs(len(records))} in {_clock(time.perf_counter() - t0)}"
          + (f" (a reduced run: {_plural(cut, 'row')} on fewer steps than the table's, "
             "not its results)" if cut else "")
          + f"; table: {Path(args.out) / 'results.md'}" + (f", curves: {drawn}" if drawn else ""))
    return 0


def _budgets(budgets: list[int]) -> str:
    """The table's budgets of some rows: "1,200" or "1,200 to 6,000"."""
    low, high = min(budgets), max(budgets)
    return f"{low:,}" if low == high else f"{low:,} to {high:,}"


def _runs(n: int) -> str:
    return _plural(n, "run")


def _plural(n: int, thing: str) -> str:
    return f"{n:,} {thing}" if n == 1 else f"{n:,} {thing}s"
