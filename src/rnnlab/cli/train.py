"""`rnnlab train`, `rnnlab demo` and `rnnlab tasks`: training a model on a built-in task,
new or resumed, alone or on the ranks of an MPI job."""

from __future__ import annotations

import os
import re
import shlex
import sys
import time
from collections.abc import Collection
from pathlib import Path

from rnnlab import io, runs, settings
from rnnlab.cli._base import (
    EXIT_INTERRUPTED,
    EXIT_PIPE,
    EXIT_TERMINATED,
    UsageError,
    finite_result,
    one_line,
)
from rnnlab.cli.options import (
    add_data_options,
    add_model_options,
    add_optimisation_options,
    add_seq2seq_options,
    path,
)


def add_parsers(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train a model on a built-in task",
        description="Train a recurrent network on a built-in task. Options "
        "override the task's defaults and --config.",
    )
    p.add_argument("task", nargs="?", help="the task (see `rnnlab tasks`)")
    p.add_argument("--config", type=path("--config", "a TOML file"),
                   help="a TOML file of settings (the names of the options below)")
    p.add_argument(
        "--run-dir", dest="run_dir", type=path("--run-dir", "a directory"),
        help="where to write the run (default: runs/TASK-TIME)",
    )
    p.add_argument("--resume", metavar="RUN", type=path("--resume", "a run directory"),
                   help="continue the run in this directory")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_model_options(p)
    add_seq2seq_options(p)
    add_optimisation_options(p)
    add_data_options(p)

    sub.add_parser("tasks", help="list the built-in tasks")

    p = sub.add_parser(
        "demo", help="train a character LSTM for ~2 minutes and show what it learned",
        description="Train a character LSTM on the built-in corpus for about two minutes: "
        "samples before and after, the held-out bits per character beside n-gram "
        "baselines, and the plots. Ctrl-C ends the training early and shows the same of "
        "the steps trained (exit status 130).",
    )
    p.add_argument("--run-dir", dest="run_dir", default=None,
                   type=path("--run-dir", "a directory"),
                   help="where to write the run (default: runs/demo-TIME)")  # fmt: skip
    add_optimisation_options(p, 120.0, only=("time_limit",), checked=True)
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def cmd_tasks(args=None) -> int:
    from rnnlab import tasks

    for name in tasks.TASK_NAMES:
        print(f"{name:<15} {tasks.describe(name)}")
    return 0


def _config_from_args(args) -> tuple:
    from rnnlab import tasks
    from rnnlab.train import TrainConfig

    settings: dict = {}
    if args.config:
        try:
            settings.update(io.read_toml(args.config))
        except io.ConfigError as e:  # (a run's config.json is the likeliest JSON given)
            if not _looks_like_json(args.config):
                raise
            raise io.ConfigError(
                f"{e} `--config` reads TOML (`hidden = 64`, one setting a line); this file "
                "looks like JSON: to continue a run, give its directory to --resume; to start "
                "a new one like it, write the settings of its config.json's \"train\" as TOML"
            ) from None
    task = args.task or settings.get("task")
    if not task:
        raise UsageError(
            "`task` must be given (a positional argument or `task` in --config); see `rnnlab tasks`"
        )
    if task not in tasks.TASK_NAMES:
        raise UsageError(f"`task` must be one of {', '.join(tasks.TASK_NAMES)}; got {task!r}")
    overrides = {k: v for k, v in vars(args).items() if k in TrainConfig.fields() and k != "task"}
    given = {**settings, **overrides}
    base = tasks.defaults_for(task, given.get("cell"), given.get("T"))  # per cell and length
    merged = {**base, **given, "task": task}
    try:
        cfg = TrainConfig.from_dict(merged, source="options", tasks=tasks.TASK_NAMES)
    except ValueError as e:  # named where the value was given: an option, or the file's key
        # (or a default's, as the option that sets it: the adding task's IRNN tunes momentum
        # to 0, which --optimizer nesterov refuses; a bare `momentum` named no option)
        unset = set(TrainConfig.fields()) - set(given) - {"task", "extra"}
        raise ValueError(_as_given(str(e), overrides, args.config, unset)) from None
    data = settings.get("data")
    if task == "charlm" and data == "" and "data" not in overrides:  # (as `--data ""` is)
        raise UsageError(f"{args.config}: `data` must be the path of a file (not empty); got "
                         "'' (leave `data` out to train charlm on the built-in corpus)")
    if task == "charlm" and data and "data" not in overrides and not Path(data).exists():
        # (the task would say "--data", an option not typed, and not where the path is read)
        raise UsageError(f"{args.config}: `data` must be a readable text file; got {data!r}, "
                         "which does not exist (a relative path is read from the current "
                         f"directory, {Path.cwd()})")  # fmt: skip
    for text in cfg.without_effect({*settings, *overrides}):
        print(f"rnnlab: warning: {text}", file=sys.stderr)
    return task, cfg, set(settings)


def _looks_like_json(path: str) -> bool:
    """Whether the file at `path` starts, past white space, with a JSON object's "{" (a
    regular file alone: a FIFO, refused by read_toml, would be waited on)."""
    if not Path(path).is_file():
        return False
    try:
        with open(path, "rb") as f:
            return f.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"{")
    except OSError:
        return False


def _as_given(message: str, options: Collection[str], config: str | None,
              typeable: Collection[str] = ()) -> str:  # fmt: skip
    """A refusal of a setting as the user wrote the settings it names: `--batch-size` where
    the value came from the command line (TrainConfig and the tasks say `batch_size`), or
    where it is in `typeable` (left at its default: the option is what the user can set),
    else the --config file's name before it (where given)."""
    options = {*options, *typeable}
    named = re.match(r"`(\w+)`", message)
    first = bool(named and named[1] in options)
    message = re.sub(r"`(\w+)`", lambda m: f"`--{m[1].replace('_', '-')}`" if m[1] in options
                     else m[0], message)  # fmt: skip
    if first or config is None:
        return message
    if message.startswith("options: "):  # (TrainConfig's word for a table of settings)
        message = message[len("options: ") :]
    return f"{config}: {message}"


def cmd_train(args) -> int:
    from rnnlab import distributed, tasks
    from rnnlab.train import RESULT_FILE

    # Under MPI a Ctrl-C or SIGTERM is noted until training takes it over, and the ranks'
    # agreements stop them all together (distributed.StartInterrupts); rank 0's evaluation
    # after training is its own again.
    interrupts = distributed.StartInterrupts() if distributed.launched() else None
    try:
        comm = _communicator()
        trainer, task, model, run_dir = _start_train(args, comm, interrupts)
        result = trainer.run()
    except distributed.StartTerminated as e:
        print(f"rnnlab: terminated: {one_line(e)}", file=sys.stderr)
        return EXIT_TERMINATED
    finally:
        if interrupts is not None:
            interrupts.restore()
    if result["signal"] == "SIGTERM":
        # The job is being ended (SIGKILL follows a grace period later): its checkpoint is
        # saved and the line above says how to resume. The test evaluation and the plots a
        # Ctrl-C still gets could outlast that grace; `rnnlab evaluate RUN` makes them.
        return EXIT_TERMINATED
    if result["signal"] == "SIGPIPE":  # (the progress display's reader went away: no one
        return EXIT_PIPE  # reads a report; the checkpoint is saved, `rnnlab evaluate RUN`)
    if comm is not None and comm.rank != 0:  # rank 0 alone evaluates and writes
        return EXIT_INTERRUPTED if result["stopped_by"] == "interrupt" else 0
    final = task.evaluate(model, "test")
    io.atomic_write_json(run_dir / RESULT_FILE, _result(result, final))
    for line in tasks.report(task, final):
        print(line)
    _plot(run_dir)
    print(f"run directory: {run_dir}")
    return EXIT_INTERRUPTED if result["stopped_by"] == "interrupt" else 0


_OVERFLOW = "the model's outputs overflow on the test split"


def _result(summary, final: dict) -> dict:
    """result.json: the training's summary, the step of the weights tested ("tested_step":
    after early stopping the best step's, which it hands back, not "train"'s last step, which
    the file alone named) and the test."""
    tested = summary["best_step"] if summary["stopped_by"] == "early stopping" else summary["step"]
    return {"train": summary, "tested_step": tested, "test": finite_result(final, _OVERFLOW)}


def _start_train(args, comm, interrupts) -> tuple:
    """`_prepare_train`, then under MPI (`comm`, and `interrupts`: its Ctrl-C) the ranks'
    agreements, and the run directory of a new run made."""
    from rnnlab import distributed

    try:
        if interrupts is not None:
            interrupts.local = True  # (a Ctrl-C raises at once in the rank's own work)
        trainer, task, model, run_dir, greeting = _prepare_train(args, comm)
        if interrupts is not None:
            interrupts.local = False
    except BaseException as e:
        if comm is None:
            raise
        # the other ranks wait for every rank's word below
        assert interrupts is not None  # (for mypy: given when comm is)
        interrupts.local = False
        stopped = isinstance(e, KeyboardInterrupt)  # (its signal noted: SIGINT's or SIGTERM's)
        if distributed.agree_to_start(comm, failed=not stopped,
                                      interrupted=interrupts.code or int(stopped)):  # fmt: skip
            raise distributed.on_rank(e, comm) from None  # (its error alone: which rank's)
        raise
    # Every step above is rank-local: a rank that failed said so in this one collective, and
    # no rank entered another collective (rank 0 would wait in it for the failed rank). A
    # rank whose options were refused answers it too (distributed.join_failed_start).
    if comm is not None:
        assert interrupts is not None
        distributed.agree_to_start(comm, failed=False, interrupted=interrupts.code)
    try:
        if comm is not None:
            trainer.interrupts = interrupts
            trainer.check_same_run()  # (a collective: every rank raises, or none)
        if greeting is not None:
            print(greeting, file=sys.stderr)
        if run_dir is None:  # made only now, so that a start that fails leaves no empty one
            run_dir = trainer.run_dir = _new_run_dir(comm, trainer.cfg.task)
        if not args.resume and (comm is None or comm.rank == 0):
            cfg = trainer.cfg
            ranks = (f" on {comm.size} ranks, batch {cfg.batch_size // comm.size} each"
                     if comm else "")  # fmt: skip
            print(
                f"training {cfg.task} ({cfg.cell}, "
                f"{sum(v.size for v in model.params.values()):,} parameters{ranks}) into "
                f"{run_dir}",
                file=sys.stderr,
            )
    except BaseException as e:
        # the others wait for every rank's word below (should all have raised, as the check
        # of the settings makes them, each says its own error as it is)
        if comm is not None and distributed.agree_to_start(comm, failed=True, interrupted=0):
            raise distributed.on_rank(e, comm) from None
        raise
    # The last agreement of the start: what a rank did since the check of the settings may
    # have failed on it alone, and the next collective, share_cores's MPI_Comm_split_type at
    # the top of DistributedTrainer.run, has no timeout (the others waited in it for ever
    # for a rank that raised here). Nothing between this agreement and that call can raise
    # (a Ctrl-C or SIGTERM is noted, not raised: it stops training after step 1, saved).
    if comm is not None:
        distributed.agree_to_start(comm, failed=False, interrupted=0)
    return trainer, task, model, run_dir


def _communicator():
    """The MPI ranks when an MPI launcher started this process with others, else None."""
    from rnnlab import distributed

    return distributed.Communicator() if distributed.launched() else None


def _make_trainer(comm, *args, **kw):
    from rnnlab.diagnostics.training import gradient_log
    from rnnlab.train import Trainer

    kw["gradient_log"] = gradient_log
    if comm is None:
        return Trainer(*args, **kw)
    from rnnlab.distributed import DistributedTrainer

    return DistributedTrainer(*args, comm=comm, **kw)


def _new_run_dir_ok(run_dir: Path, command: str) -> None:
    """A --run-dir for a new run (`rnnlab train`, `rnnlab demo`): a directory, or a path where
    one can be made (not a file, nor a link to nothing), holding no run's checkpoints, no
    one else's files (_not_someone_elses) and no trained run's model.safetensors."""
    if run_dir.is_symlink() and not run_dir.exists():
        raise UsageError(f"`--run-dir` must be a directory path; '{run_dir}' is a link to "
                         "nothing")  # fmt: skip
    if run_dir.exists() and not run_dir.is_dir():
        raise UsageError(f"`--run-dir` must be a directory path; '{run_dir}' is a file")
    # (a path under a file was taken, and failed at the run's first write, after "training
    # ... into" it, as "[Errno 20] Not a directory", naming no option)
    above = next((p for p in run_dir.parents if p.exists() or p.is_symlink()), None)
    if above is not None and not above.is_dir():
        raise UsageError(f"`--run-dir` must be a directory path; '{run_dir}' is under "
                         f"'{above}', which is " + ("a link to nothing" if not above.exists()
                                                     else "a file"))  # fmt: skip
    if io.checkpoint_steps(run_dir):
        again = (f"continue it with {io.resume_command(run_dir)}"
                 if command == "train" else "give another --run-dir")  # fmt: skip
        raise UsageError(f"`--run-dir` must be a new or empty directory; '{run_dir}' already "
                         f"holds a run ({again})")  # fmt: skip
    _not_someone_elses(run_dir)  # (first: another program's folder may hold a model too)
    if io.checkpoints_removed(run_dir):
        raise UsageError(f"`--run-dir` must be a new or empty directory; '{run_dir}' holds a "
                         "trained run whose checkpoints were removed (its model.safetensors, "
                         "which a new run would overwrite): give another --run-dir")  # fmt: skip


def _leftover(path: Path) -> bool:
    """A file rnnlab leaves in a run directory whose start failed before its config.json:
    the training lock, an atomic write's temporary."""
    return (path.is_file() and path.name == io.LOCK_NAME) or io.is_our_temporary(path)


def _not_someone_elses(run_dir: Path) -> None:
    """A new run writes and removes files in its directory (config.json, model.safetensors,
    temporaries): it may go into a directory that is absent, empty, or a run of rnnlab's
    that stopped before its first checkpoint (its config.json names a model and training
    settings), never into one holding other files."""
    if not run_dir.is_dir() or all(_leftover(p) for p in run_dir.iterdir()):
        return
    try:
        config = io.read_json(run_dir / "config.json")
        ours = isinstance(config, dict) and {"train", "model"} <= set(config)
    except (OSError, ValueError):
        ours = False
    if not ours:
        found = sorted(p.name for p in run_dir.iterdir())
        raise UsageError(
            f"`--run-dir` must be a new or empty directory (or a run that stopped before its "
            f"first checkpoint); '{run_dir}' holds other files ({', '.join(found[:5])}"
            + (", ..." if len(found) > 5 else "") + "), which a run would overwrite or remove"
        )


def _prepare_train(args, comm) -> tuple:
    """(trainer, task, model, run directory, greeting) of `rnnlab train`, new or resumed: the
    run directory None for a new run without --run-dir (cmd_train makes it); the greeting
    what rank 0 says of a resumed run (None: nothing), said by _start_train once the ranks'
    settings are checked (it said "resuming" before their refusal). Under MPI (comm),
    --batch-size is each rank's: the run's global batch is K times it. Nothing here is a
    collective, so a rank that fails here cannot leave the others waiting."""
    from rnnlab import tasks
    from rnnlab.train import FINAL_STOPS, TrainConfig, steps_change

    say = comm is None or comm.rank == 0
    settings.current()  # a bad RNNLAB_* variable is said before any directory is made
    greeting = None  # "resuming RUN at step N", said once the ranks agree that it does
    if args.resume:
        # (the task is its own message below; what may change is what runs.same_run lets a
        # run's checkpoints differ in)
        fixed = [k for k in vars(args) if k in TrainConfig.fields() and k != "task"
                 and k not in runs.RESUME_MAY_CHANGE]  # fmt: skip
        if args.config or args.run_dir or args.task or fixed:
            given = args.config and "--config" or args.run_dir and "--run-dir" or (
                args.task and "a task") or "--" + fixed[0].replace("_", "-")  # fmt: skip
            raise UsageError(
                f"`--resume` continues a run with the settings in its config.json; got {given} "
                "as well (only --steps and --time-limit may change; start a new run otherwise)"
            )
        run_dir = io.open_run_dir(args.resume)
        if (run_dir / "checkpoints").is_symlink():  # (said before training, not at its save)
            raise UsageError(f"`--resume` must be a run whose checkpoints/ is a directory; "
                             f"'{run_dir / 'checkpoints'}' is a symbolic link (to "
                             f"'{os.readlink(run_dir / 'checkpoints')}'), which rnnlab reads "
                             "but does not write through: put the directory itself there")
        log = run_dir / "metrics.jsonl"  # (appended to: a FIFO failed at the first record,
        if log.is_symlink() or (log.exists() and not log.is_file()):  # a directory too)
            what = (f"a symbolic link (to '{os.readlink(log)}'), which rnnlab does not write "
                    "through" if log.is_symlink() else "a directory" if log.is_dir() else
                    "a FIFO, device or socket")  # fmt: skip
            raise UsageError(f"`--resume` must be a run whose metrics.jsonl is a regular file "
                             f"(or none); '{log}' is {what}: put the run's log there, or move "
                             "it away to start a new one")  # fmt: skip
        # another program's folder with a config.json is said as such before the lock below
        # would leave its file there
        try:
            top = runs.run_config(io.read_json(run_dir / "config.json"), run_dir)
        except ValueError as e:  # (each checkpoint holds a copy of the run's config.json)
            saved = io.checkpoint_steps(run_dir)
            if not saved:
                raise
            copy = run_dir / "checkpoints" / f"step-{saved[-1]:08d}" / "config.json"
            raise type(e)(f"{one_line(e).rstrip('.')}. Each checkpoint keeps the run's "
                          f"config.json: copy '{copy}' over it and resume") from None
        if comm is None:  # a run another process trains is said before "resuming ... at step"
            with io.training_lock(run_dir):  # (Trainer.run holds it; ranks would race here)
                pass
        latest = run_dir / "checkpoints" / "latest"
        saved = io.checkpoint_steps(run_dir)
        if not saved and latest.exists():
            raise io.CheckpointError(
                f"'{latest}' names a checkpoint, and '{run_dir / 'checkpoints'}' holds none: "
                "the run's checkpoints were removed; rnnlab does not start it again from step 0 "
                "over its log (start a new run with --run-dir elsewhere)"
            )
        if io.checkpoints_removed(run_dir):
            raise io.CheckpointError(
                f"'{run_dir}' holds no checkpoints but a model.safetensors, which only a saved "
                "checkpoint writes: the run's checkpoints were removed; rnnlab does not start it "
                "again from step 0 over its trained weights and log (its model still serves "
                "evaluate, sample, export and gradflow; start a new run with --run-dir "
                "elsewhere to train again)"
            )
        if saved:
            ckpt = io.load_checkpoint(run_dir)
            config = runs.run_config(ckpt.config, ckpt.path)
            runs.same_run(run_dir, ckpt)
        else:  # stopped before its first checkpoint (or by a full disk): start it again
            ckpt, config = None, top
        source = (ckpt.path if ckpt is not None else run_dir) / "config.json"  # (what was read)
        cfg = TrainConfig.from_run(config, source=str(source), tasks=tasks.TASK_NAMES)
        run_steps = cfg.steps
        overrides = {k: v for k, v in vars(args).items() if k in runs.RESUME_MAY_CHANGE}
        for k, v in overrides.items():
            setattr(cfg, k, v)
        try:
            cfg.validate()
        except ValueError as e:  # (the settings read were checked: an option typed is wrong)
            raise ValueError(_as_given(str(e), overrides, None)) from None
        ended = ckpt is not None and ckpt.state.get("stopped_by") in FINAL_STOPS
        at = ckpt.step if ckpt is not None else 0
        # (config.json would then say steps the run never trained to, and nothing trains)
        if "steps" in overrides and cfg.steps != run_steps and ended:
            assert ckpt is not None  # (for mypy: an ended run has its checkpoint)
            raise UsageError(f"`--steps` cannot train '{run_dir}' further: it ended at step "
                             f"{at} ({ckpt.state['stopped_by']}); got --steps {cfg.steps}. Start "
                             "a new run to train longer.")  # fmt: skip
        if "steps" in overrides and cfg.steps < at:
            raise UsageError(f"`--steps` must be at least {at}, the step '{run_dir}' is at; got "
                             f"{cfg.steps}")  # fmt: skip
        changed = "" if ended else steps_change(cfg, run_steps, at)
        if changed and say:
            way = ("resume without --steps to keep the run's" if at < run_steps else
                   f"a new run of --steps {cfg.steps} would not")  # fmt: skip
            print(f"rnnlab: warning: --steps {cfg.steps} (the run had {run_steps}) changes "
                  f"{changed}; {way}", file=sys.stderr)  # fmt: skip
        task = tasks.make_task(cfg, runs.data_record(run_dir, cfg, config, source.parent),
                               resume=True)  # fmt: skip
        where = (ckpt.path if ckpt is not None else run_dir) / "config.json"
        model = runs.build_run_model(config["model"], where, cfg.seed)
        trainer = _make_trainer(comm, model, task, cfg, run_dir, spec=config["model"],
                                quiet=args.quiet)  # fmt: skip
        trainer.settings_checked = True  # (its settings were taken when it started)
        if ckpt is not None:
            runs.load_weights(model, ckpt, run_dir)
            try:
                trainer.restore(ckpt)
            except io.CheckpointError as e:  # its progress or optimizer state is damaged
                raise io.CheckpointError(f"{e} {io.way_back(run_dir, ckpt.step)}") from None
            if say:
                greeting = f"resuming {run_dir} at step {trainer.step}"
            if (say and config.get("format", 1) < 3 and trainer.history
                    and getattr(model, "wants_targets", False)):  # fmt: skip
                print("rnnlab: warning: this Jordan run's validations up to step "
                      f"{trainer.history[-1]['step']} fed the model its own softmax, which "
                      "rnnlab no longer does (it feeds the true previous character, or the "
                      "class each step ranked first, as training and sampling do); its early "
                      "stopping and best weights now compare the two measures (start a new "
                      "run to compare like with like)", file=sys.stderr)  # fmt: skip
            if say and config.get("format", 1) < 4 and cfg.task in tasks.SEQ2SEQ_TASKS:
                print(f"rnnlab: warning: this run drew its batches up to step {trainer.step} "
                      "in the order of rnnlab before 2026-12-04 (each pool of 16 batches "
                      "shortest first, the longest pairs left over); it goes on in today's "
                      "(batches in random order, a random remainder left over), so it does "
                      "not end bit for bit as it would have", file=sys.stderr)  # fmt: skip
        elif say:
            greeting = f"{run_dir} has no checkpoint yet: starting it again from step 0"
    else:
        _, cfg, in_file = _config_from_args(args)
        if comm is not None:
            cfg.batch_size *= comm.size
        # Under MPI rank 0 alone writes the run directory (a new run needs no shared
        # filesystem): a run that another rank's machine holds at that path, which that rank
        # never writes, refused the start there, with rank 0's own directory fine.
        if args.run_dir and say:
            _new_run_dir_ok(Path(args.run_dir), "train")
        try:
            cfg.check_new_run()
            task = tasks.make_task(cfg)
            for said in task.check_new_run() if hasattr(task, "check_new_run") else []:
                if say:  # (once under MPI, not once a rank)
                    print(f"rnnlab: warning: {said}", file=sys.stderr)
            spec = tasks.model_spec(cfg, task)
            model = tasks.build_model(spec, seed=cfg.seed)
        except ValueError as e:  # the settings', task's or model's refusal: an option?
            given = {k for k in vars(args) if k in TrainConfig.fields()}
            unset = set(TrainConfig.fields()) - given - in_file - {"task", "extra"}
            # a setting of the --config file is named with the file, as TrainConfig's own
            # refusals name it (`T = 1` there was said as a bare `T`)
            named = re.match(r"`(\w+)`", str(e))
            file = args.config if named and named[1] in in_file - given else None
            said = _as_given(str(e), given, file, unset)
            if type(e) is not ValueError or said == str(e):
                raise
            raise ValueError(said) from None
        # None: cmd_train makes the directory once every rank has started
        new_dir = Path(args.run_dir) if args.run_dir else None
        trainer = _make_trainer(comm, model, task, cfg, new_dir or Path("runs"), spec=spec,
                                quiet=args.quiet)  # fmt: skip
        trainer.settings_checked = True  # (asked above: not twice, review 78)
        return trainer, task, model, new_dir, None
    return trainer, task, model, run_dir, greeting


def _new_run_dir(comm, task: str) -> Path:
    """runs/TASK-TIME, made by rank 0 under MPI and its name broadcast; should rank 0 fail to
    make it, the others get an empty name in the same broadcast (no rank waits for it)."""
    if comm is None:
        return io.make_run_dir("runs", task)
    made, error = "", None
    if comm.rank == 0:
        try:
            made = str(io.make_run_dir("runs", task))
        except (ValueError, OSError) as e:
            error = e
    name = comm.broadcast_text(made)
    if error is not None:
        raise error
    if not name:
        raise RuntimeError("rank 0 could not create the run directory (its error is above)")
    return Path(name)


def cmd_demo(args) -> int:
    from rnnlab import distributed, tasks
    from rnnlab.diagnostics.training import gradient_log
    from rnnlab.train import RESULT_FILE, TrainConfig, Trainer

    if distributed.launched():  # K copies of the demo would race for one run directory
        raise UsageError("`rnnlab demo` runs in one process; under mpiexec, use `rnnlab train`")
    cfg = TrainConfig.from_dict(
        {**tasks.defaults("charlm"), **tasks.DEMO, "time_limit": args.time_limit}
    )
    settings.current()  # a bad RNNLAB_* variable is said before any directory is made
    if args.run_dir:
        _new_run_dir_ok(Path(args.run_dir), "demo")
    run_dir = Path(args.run_dir) if args.run_dir else io.make_run_dir("runs", "demo")
    t0 = time.perf_counter()
    print(
        "rnnlab demo: a character-level LSTM language model on the Python documentation that "
        "ships with CPython.",
        flush=True,
    )
    task = tasks.make_task(cfg)
    spec = tasks.model_spec(cfg, task)
    model = tasks.build_model(spec, seed=cfg.seed)
    print(f"corpus: {task.describe_data()}")
    print("n-gram baselines on the same held-out text (nats / bits per character):")
    for name, b in task.baselines().items():
        print(f"  {name:<8} {b['nats_per_char']:.3f} / {b['bits_per_char']:.3f}")
    print("\nsample before training:")
    print(_indent(task.sample(model, "def ", 160, temperature=0.8, seed=1)))
    limit = (f"for up to {args.time_limit:.0f} s" if args.time_limit else
             f"for {cfg.steps} steps (--time-limit 0: no time limit)")  # fmt: skip
    print(f"\ntraining {sum(v.size for v in model.params.values()):,} parameters {limit} ...",
          flush=True)  # fmt: skip
    trainer = Trainer(model, task, cfg, run_dir, spec=spec, quiet=args.quiet,
                      gradient_log=gradient_log)  # fmt: skip
    summary = trainer.run()
    if summary["signal"] == "SIGTERM":  # (as `rnnlab train` ends on it: at once)
        return EXIT_TERMINATED
    if summary["signal"] == "SIGPIPE":  # (as `rnnlab train`: no one reads the rest)
        return EXIT_PIPE
    # A Ctrl-C ends the training, not the demo, whose point is what the model learned: the
    # test, sample and plots follow as after a whole run, said to be of the steps trained,
    # and the exit status is a Ctrl-C's, as `rnnlab train`'s (which evaluates and plots too).
    interrupted = summary["stopped_by"] == "interrupt"
    final = task.evaluate(model, "test")
    io.atomic_write_json(run_dir / RESULT_FILE, _result(summary, final))
    print()
    for line in tasks.report(task, final):
        print(line)
    print(f"\nsample after {summary['step']} steps (training stopped by Ctrl-C):" if interrupted
          else "\nsample after training:")  # fmt: skip
    print(_indent(task.sample(model, "def ", 300, temperature=0.8, seed=1)))
    _plot(run_dir)
    print(f"\nrun directory: {run_dir} ({time.perf_counter() - t0:.0f} s in all)")
    print(f"more samples: rnnlab sample {shlex.quote(str(run_dir))} --prime 'class '")
    if interrupted:
        print(f"train it further: {io.resume_command(run_dir)}")
        return EXIT_INTERRUPTED
    return 0


def _indent(text: str) -> str:
    return "\n".join("  | " + line for line in text.split("\n"))


def _plot(run_dir: Path) -> list[Path]:
    """The run's curves in RUN/plots, the place `rnnlab plot RUN` writes them too."""
    from rnnlab.diagnostics.report import overflow_warning, plot_run

    try:
        paths = plot_run(run_dir)
        warning = overflow_warning(run_dir)
    except ImportError:
        print(
            "plots: matplotlib is not installed; pip install 'rnnlab[plot]' to get loss curves",
            file=sys.stderr,
        )
        return []
    except (ValueError, OSError) as e:  # the run is trained and saved; only plots are missing
        print(f"rnnlab: warning: no plots: {one_line(e)}", file=sys.stderr)
        return []
    if warning:  # as `rnnlab plot` says it (not a progress bar's: --quiet keeps it)
        print(f"rnnlab: warning: {warning}", file=sys.stderr)
    if paths:
        print(f"plots: {paths[0].parent} ({', '.join(p.name for p in paths)})")
    return paths
