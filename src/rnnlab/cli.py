"""The `rnnlab` command: train, evaluate, sample, translate, export, list tasks, and the demo.

Errors a user can cause (a bad option, a missing file, a corrupt checkpoint) print one line,
`rnnlab: error: ...`, and exit with status 2; no traceback.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

from rnnlab import io

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class UsageError(ValueError):
    """A mistake in how rnnlab was called."""


def _zoneout(text: str) -> float | list[float]:
    """--zoneout P or P_H,P_C (checked against [0, 1) by the run's settings)."""
    try:
        parts = [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a probability or two (p_h,p_c), got {text!r}"
        ) from None
    if len(parts) > 2:
        raise argparse.ArgumentTypeError(f"expected one or two probabilities, got {text!r}")
    return parts[0] if len(parts) == 1 else parts


def _train_options(p: argparse.ArgumentParser) -> None:
    """Options that override TrainConfig fields. Defaults are SUPPRESS so that only what the
    user typed overrides the task's defaults and the --config file."""
    S = argparse.SUPPRESS
    g = p.add_argument_group("model")
    g.add_argument(
        "--cell",
        choices=("rnn", "relu", "irnn", "lstm", "gru", "gru-orig", "jordan", "jordan-elman"),
        default=S,
        help="recurrent cell (default: the task's); jordan = output feedback",
    )
    g.add_argument("--hidden", type=int, default=S, help="hidden units per layer")
    g.add_argument("--layers", type=int, default=S, help="stacked recurrent layers")
    g.add_argument("--bidirectional", action="store_true", default=S, help="read both directions")
    g.add_argument("--embed", type=int, default=S, help="embedding size for token inputs")
    g.add_argument("--dropout", type=float, default=S, help="dropout between and after layers")
    g.add_argument("--initial-state", dest="initial_state", choices=("zeros", "learned"), default=S)
    g.add_argument("--peephole", action="store_true", default=S, help="LSTM: peephole weights")
    g.add_argument(
        "--coupled", action="store_true", default=S, help="LSTM: input gate = 1 - forget gate"
    )
    g.add_argument(
        "--cell-clip", dest="cell_clip", type=float, default=S, help="LSTM: clip |c_t| to this"
    )
    g.add_argument(
        "--layer-norm", dest="layer_norm", action="store_true", default=S,
        help="LSTM: layer-normalised (Ba et al. 2016)",
    )  # fmt: skip
    g.add_argument(
        "--proj-size", dest="proj_size", type=int, default=S,
        help="LSTM/RNN: project h to this many units, below --hidden (Sak et al. 2014; "
        "PyTorch's proj_size; the GRU reads h itself and takes none)",
    )  # fmt: skip
    g.add_argument(
        "--recurrent-dropout", dest="recurrent_dropout", type=float, default=S,
        help="dropout on h_{t-1} in the recurrent products, one mask per sequence (Gal 2016)",
    )  # fmt: skip
    g.add_argument(
        "--zoneout", type=_zoneout, default=S,
        help="zoneout probability p, or p_h,p_c (Krueger et al. 2016)",
    )  # fmt: skip
    g = p.add_argument_group("encoder-decoder (numbers, dates, caption)")
    g.add_argument(
        "--attention", choices=("none", "additive", "multiplicative"), default=S,
        help="attention over the source: additive (Bahdanau) or multiplicative (Luong)",
    )  # fmt: skip
    g.add_argument(
        "--attention-size", dest="attention_size", type=int, default=S,
        help="additive attention: the size of its tanh layer (0: --hidden); its cost is "
        "batch x target x source x this",
    )  # fmt: skip
    g.add_argument(
        "--beam", type=int, default=S, help="beam width of the final test evaluation (1: greedy)"
    )
    g = p.add_argument_group("optimisation")
    g.add_argument(
        "--optimizer", choices=("sgd", "nesterov", "rmsprop", "adagrad", "adam", "adamw"), default=S
    )
    g.add_argument("--lr", type=float, default=S, help="learning rate")
    g.add_argument("--weight-decay", dest="weight_decay", type=float, default=S)
    g.add_argument("--schedule", choices=("constant", "cosine", "step"), default=S)
    g.add_argument("--warmup", type=int, default=S, help="linear warm-up steps")
    g.add_argument(
        "--clip",
        choices=("global_norm", "value", "none"),
        default=S,
        help="gradient clipping: by global norm, by value, or none",
    )
    g.add_argument(
        "--clip-at",
        dest="clip_at",
        type=float,
        default=S,
        help="the clipping threshold (a norm or a value, per --clip)",
    )
    g.add_argument("--batch-size", dest="batch_size", type=int, default=S)
    g.add_argument(
        "--seq-len",
        dest="seq_len",
        type=int,
        default=S,
        help="window length for tasks that cut sequences",
    )
    g.add_argument(
        "--bptt",
        type=int,
        default=S,
        help="truncated BPTT window (state carried, gradient cut); 0 = full",
    )
    g.add_argument(
        "--teacher-forcing",
        dest="teacher_forcing",
        default=S,
        help="jordan cells and encoder-decoders: probability of feeding the truth, 'p' or a "
        "linear schedule 'a:b' (e.g. 1.0:0.5: scheduled sampling; evaluation always runs free)",
    )
    g.add_argument(
        "--reverse-input",
        dest="reverse_input",
        action="store_true",
        default=S,
        help="feed each input sequence reversed (Sutskever et al. 2014)",
    )
    g.add_argument("--steps", type=int, default=S, help="optimizer steps")
    g.add_argument(
        "--time-limit",
        dest="time_limit",
        type=float,
        default=S,
        help="stop after this many seconds",
    )
    g.add_argument("--eval-every", dest="eval_every", type=int, default=S)
    g.add_argument("--checkpoint-every", dest="checkpoint_every", type=int, default=S)
    g.add_argument(
        "--patience",
        type=int,
        default=S,
        help="stop after this many evaluations without improvement (0: never)",
    )
    g.add_argument("--seed", type=int, default=S)
    g = p.add_argument_group("data")
    g.add_argument("--data", default=S, help="charlm: a UTF-8 text file (default: built-in corpus)")
    g.add_argument("--T", dest="T", type=int, default=S, help="memory tasks: sequence length")
    g.add_argument("--digits-mode", dest="digits_mode", choices=("rows", "pixels"), default=S)
    g.add_argument("--train-size", dest="train_size", type=int, default=S)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rnnlab",
        description="Recurrent neural networks in NumPy with exact, hand-written BPTT.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser(
        "train",
        help="train a model on a built-in task",
        description="Train a recurrent network on a built-in task. Options "
        "override the task's defaults and --config.",
    )
    p.add_argument("task", nargs="?", help="the task (see `rnnlab tasks`)")
    p.add_argument("--config", help="a TOML file of settings (the names of the options below)")
    p.add_argument(
        "--run-dir", dest="run_dir", help="where to write the run (default: runs/TASK-TIME)"
    )
    p.add_argument("--resume", metavar="RUN", help="continue the run in this directory")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _train_options(p)

    p = sub.add_parser("evaluate", help="held-out metrics of a trained run")
    p.add_argument("run", help="a run directory")
    p.add_argument("--split", choices=("valid", "test"), default="test")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument(
        "--data",
        help="charlm: evaluate on the held-out pieces of this text, read with the run's "
        "vocabulary (characters it does not know are counted in unknown_chars)",
    )

    p.add_argument(
        "--beam", type=int, default=None,
        help="numbers, dates, caption: the beam width beside greedy (default: the run's, 5)",
    )  # fmt: skip

    p = sub.add_parser(
        "translate",
        help="translate text with a trained numbers or dates run",
        description="Decode sources with a trained encoder-decoder: one argument, or --file "
        "with one source a line.",
    )
    p.add_argument("run", help="a run directory of the numbers or dates task")
    p.add_argument("text", nargs="?", help="the source text, e.g. 'twenty-three'")
    p.add_argument("--file", help="a UTF-8 file of sources, one a line")
    p.add_argument("--beam", type=int, default=None,
                   help="beam width (1: greedy; default: the run's, 5)")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument(
        "--unknown", choices=("error", "map"), default="error",
        help="characters the model never saw: refuse them (default), or map them to the "
        "unknown symbol",
    )  # fmt: skip

    p = sub.add_parser("sample", help="generate text from a trained charlm run")
    p.add_argument("run", help="a run directory of the charlm task")
    p.add_argument("--prime", default="\n", help="text to start from")
    p.add_argument("--length", type=int, default=400)
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--top-k", dest="top_k", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)

    p = sub.add_parser(
        "export",
        help="a run's model as ONNX, a PyTorch state_dict or Keras weights",
        description="Export the latest weights of a run: --format onnx (the standard "
        "RNN/LSTM/GRU operators), safetensors-torch (a state_dict PyTorch's modules load "
        "with strict=True; the code building them is printed) or keras (Keras 3 weights).",
    )
    p.add_argument("run", help="a run directory")
    p.add_argument("--format", dest="fmt", default="onnx", help="onnx, safetensors-torch, keras")
    p.add_argument("--out", default=None, help="the file to write (default: in the run directory)")
    p.add_argument(
        "--state", action="store_true", help="onnx: initial-state inputs h0 (c0), to carry state"
    )
    p.add_argument("--no-lengths", dest="lengths", action="store_false",
                   help="onnx: no lengths input (every sequence full length)")  # fmt: skip

    sub.add_parser("tasks", help="list the built-in tasks")
    sub.add_parser(
        "bench",
        help="time training and inference against PyTorch (rnnlab bench -h)",
        add_help=False,
    )
    sub.add_parser(
        "gradflow",
        help="see the gradients: lag profiles, Jacobians, spectra, cliffs (rnnlab gradflow -h)",
        add_help=False,
    )
    sub.add_parser("plot", help="plot a run's metrics (rnnlab plot -h)", add_help=False)
    sub.add_parser(
        "info", help="the CPU, BLAS, kernels and threads rnnlab runs on here, and why",
        add_help=False,
    )

    from rnnlab import reproduce

    p = sub.add_parser("reproduce", help="the papers' long-lag results, cells x lengths")
    reproduce.add_arguments(p)

    p = sub.add_parser(
        "demo", help="train a character LSTM for ~2 minutes and show what it learned"
    )
    p.add_argument("--run-dir", dest="run_dir", default=None)
    p.add_argument("--time-limit", dest="time_limit", type=float, default=120.0)
    p.add_argument("--quiet", action="store_true")
    return parser


# Commands with options of their own: their modules parse the rest of the command line.
_DELEGATED = {
    "bench": ("rnnlab.bench", "main"),
    "gradflow": ("rnnlab.gradflow", "main"),
    "plot": ("rnnlab.gradflow", "plot_main"),
    "info": ("rnnlab.info", "main"),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in _DELEGATED:
        return _delegate(argv[0], argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        if args.command == "tasks":
            return cmd_tasks()
        if args.command == "train":
            return cmd_train(args)
        if args.command == "evaluate":
            return cmd_evaluate(args)
        if args.command == "sample":
            return cmd_sample(args)
        if args.command == "translate":
            return cmd_translate(args)
        if args.command == "export":
            return cmd_export(args)
        if args.command == "demo":
            return cmd_demo(args)
        if args.command == "reproduce":
            from rnnlab import reproduce

            return reproduce.run(args)
    except KeyboardInterrupt:
        print("rnnlab: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (ValueError, OSError, ImportError) as e:
        print(f"rnnlab: error: {_one_line(e)}", file=sys.stderr)
        return EXIT_USAGE
    except MemoryError:
        print("rnnlab: error: out of memory; try a smaller --hidden, --batch-size or --seq-len",
              file=sys.stderr)  # fmt: skip
        return 1
    except RuntimeError as e:  # e.g. NonFiniteError: the run stopped, its checkpoint is kept
        print(f"rnnlab: error: {_one_line(e)}", file=sys.stderr)
        return 1
    return 0


def _delegate(command: str, argv: list[str]) -> int:
    import importlib

    module, function = _DELEGATED[command]
    try:
        return getattr(importlib.import_module(module), function)(argv)
    except KeyboardInterrupt:
        print("rnnlab: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (ValueError, OSError, ImportError) as e:
        print(f"rnnlab: error: {_one_line(e)}", file=sys.stderr)
        return EXIT_USAGE


def _one_line(e: BaseException) -> str:
    text = str(e) or type(e).__name__
    return " ".join(text.split())


# ---------------------------------------------------------------------- commands
def cmd_tasks() -> int:
    from rnnlab import recipes

    for name in recipes.TASK_NAMES:
        print(f"{name:<15} {recipes.describe(name)}")
    return 0


def _config_from_args(args) -> tuple:
    from rnnlab import recipes
    from rnnlab.train import TrainConfig

    settings: dict = {}
    if args.config:
        settings.update(io.read_toml(args.config))
    task = args.task or settings.get("task")
    if not task:
        raise UsageError(
            "`task` must be given (a positional argument or `task` in --config); see `rnnlab tasks`"
        )
    if task not in recipes.TASK_NAMES:
        raise UsageError(f"`task` must be one of {', '.join(recipes.TASK_NAMES)}; got {task!r}")
    overrides = {k: v for k, v in vars(args).items() if k in TrainConfig.fields() and k != "task"}
    given = {**settings, **overrides}
    base = recipes.defaults_for(task, given.get("cell"), given.get("T"))  # per cell and length
    merged = {**base, **given, "task": task}
    cfg = TrainConfig.from_dict(merged, source=args.config or "options")
    for text in cfg.without_effect({*settings, *overrides}):
        print(f"rnnlab: warning: {text}", file=sys.stderr)
    return task, cfg


def cmd_train(args) -> int:
    from rnnlab import recipes

    comm = _communicator()
    try:
        trainer, task, model, run_dir = _prepare_train(args, comm)
    except BaseException:
        if comm is not None:  # the other ranks wait for every rank's word below
            comm.any(True)
        raise
    if comm is not None and comm.any(False):
        raise RuntimeError("another rank could not start the run (its error is above)")
    result = trainer.run()
    if comm is not None and comm.rank != 0:  # rank 0 alone evaluates and writes
        return EXIT_INTERRUPTED if result["stopped_by"] == "interrupt" else 0
    final = task.evaluate(model, "test")
    io.atomic_write_json(run_dir / "result.json", {"train": result, "test": final})
    for line in recipes.report(task, final):
        print(line)
    _plot(run_dir)
    print(f"run directory: {run_dir}")
    return EXIT_INTERRUPTED if result["stopped_by"] == "interrupt" else 0


def _communicator():
    """The MPI ranks when an MPI launcher started this process with others, else None."""
    from rnnlab import distributed

    return distributed.Communicator() if distributed.launched() else None


def _make_trainer(comm, *args, **kw):
    from rnnlab.train import Trainer

    if comm is None:
        return Trainer(*args, **kw)
    from rnnlab.distributed import DistributedTrainer

    return DistributedTrainer(*args, comm=comm, **kw)


def _prepare_train(args, comm) -> tuple:
    """(trainer, task, model, run directory) of `rnnlab train`, new or resumed. Under MPI
    (comm), --batch-size is each rank's: the run's global batch is K times it."""
    from rnnlab import recipes
    from rnnlab.train import TrainConfig

    say = comm is None or comm.rank == 0
    if args.resume:
        fixed = [k for k in vars(args) if k in TrainConfig.fields() and k not in
                 ("steps", "time_limit", "task")]  # fmt: skip
        if args.config or args.run_dir or args.task or fixed:
            given = args.config and "--config" or args.run_dir and "--run-dir" or (
                args.task and "a task") or "--" + fixed[0].replace("_", "-")  # fmt: skip
            raise UsageError(
                f"`--resume` continues a run with the settings in its config.json; got {given} "
                "as well (only --steps and --time-limit may change; start a new run otherwise)"
            )
        run_dir = io.open_run_dir(args.resume)
        if io.checkpoint_steps(run_dir):
            ckpt = io.load_checkpoint(run_dir)
            config = _run_config(ckpt.config, ckpt.path)
        else:  # stopped before its first checkpoint (or by a full disk): start it again
            ckpt, config = None, _run_config(io.read_json(run_dir / "config.json"), run_dir)
        cfg = TrainConfig.from_dict(config["train"], source=str(run_dir / "config.json"))
        overrides = {k: v for k, v in vars(args).items() if k in ("steps", "time_limit")}
        for k, v in overrides.items():
            setattr(cfg, k, v)
        cfg.validate()
        task = recipes.make_task(cfg, _data_record(run_dir, cfg, config))
        where = (ckpt.path if ckpt is not None else run_dir) / "config.json"
        model = _build_run_model(config["model"], where, cfg.seed)
        trainer = _make_trainer(comm, model, task, cfg, run_dir, spec=config["model"],
                                quiet=args.quiet)  # fmt: skip
        if ckpt is not None:
            _load_weights(model, ckpt, run_dir)
            try:
                trainer.restore(ckpt)
            except io.CheckpointError as e:  # its progress or optimizer state is damaged
                raise io.CheckpointError(f"{e} {io.way_back(run_dir, ckpt.step)}") from None
            if say:
                print(f"resuming {run_dir} at step {trainer.step}", file=sys.stderr)
        elif say:
            print(f"{run_dir} has no checkpoint yet: starting it again from step 0",
                  file=sys.stderr)  # fmt: skip
    else:
        _, cfg = _config_from_args(args)
        if comm is not None:
            cfg.batch_size *= comm.size
        if args.run_dir and io.checkpoint_steps(args.run_dir):
            raise UsageError(
                f"`--run-dir` must be a new or empty directory; '{args.run_dir}' already "
                f"holds a run (continue it with --resume {args.run_dir})"
            )
        task = recipes.make_task(cfg)
        spec = recipes.model_spec(cfg, task)
        model = recipes.build_model(spec, seed=cfg.seed)
        # created only now, so that a start that fails leaves no empty run directory
        if args.run_dir:
            run_dir = Path(args.run_dir)
        elif comm is None:
            run_dir = io.make_run_dir("runs", cfg.task)
        else:  # one directory, named by rank 0
            made = str(io.make_run_dir("runs", cfg.task)) if comm.rank == 0 else ""
            run_dir = Path(comm.broadcast_text(made))
        trainer = _make_trainer(comm, model, task, cfg, run_dir, spec=spec, quiet=args.quiet)
        ranks = f" on {comm.size} ranks, batch {cfg.batch_size // comm.size} each" if comm else ""
        if say:
            print(
                f"training {cfg.task} ({cfg.cell}, {sum(v.size for v in model.params.values()):,} "
                f"parameters{ranks}) into {run_dir}",
                file=sys.stderr,
            )
    return trainer, task, model, run_dir


def _run_config(config, run_dir) -> dict:
    """A run's config.json as rnnlab wrote it: {"train": {...}, "model": {...}, ...}."""
    if not isinstance(config, dict) or not all(
        isinstance(config.get(k), dict) for k in ("train", "model")
    ):
        raise io.RunDirError(
            f"'{run_dir}/config.json' must hold an rnnlab run's config (tables 'train' and "
            f"'model'); got {io.describe(config)}"
        )
    return config


def _load_run(path, *, vocabulary: bool = False):
    """(run directory, settings, model with the latest weights, config.json's "data"); with
    `vocabulary`, a charlm run's data has its vocabulary even when the run is from before runs
    stored it (`_data_record`)."""
    from rnnlab.train import TrainConfig

    run_dir = io.open_run_dir(path)
    ckpt = io.load_checkpoint(run_dir)
    _run_config(ckpt.config, ckpt.path)
    cfg = TrainConfig.from_dict(ckpt.config["train"], source=str(run_dir / "config.json"))
    model = _build_run_model(ckpt.config["model"], ckpt.path / "config.json")
    _load_weights(model, ckpt, run_dir)
    if vocabulary:
        return run_dir, cfg, model, _data_record(run_dir, cfg, ckpt.config)
    return run_dir, cfg, model, ckpt.config.get("data")


def _data_record(run_dir: Path, cfg, config: dict):
    """config.json's "data" (a charlm run's vocabulary). A charlm run from before runs stored
    it gets it rebuilt from its training text, as training built it, and checked against the
    model's number of symbols; said on stderr, since a text edited since training (with as
    many distinct characters) would map differently."""
    data = config.get("data")
    if cfg.task != "charlm" or data:
        return data
    from rnnlab.tasks import text

    where = f"its training text '{cfg.data}'" if cfg.data else "the built-in corpus"
    old = f"'{run_dir}' is from before runs stored their vocabulary, which is rebuilt from {where}"
    try:
        corpus = text.read_text(cfg.data) if cfg.data else text.default_corpus()
    except ValueError as e:
        relative = cfg.data and not Path(cfg.data).is_absolute()
        raise UsageError(
            f"{old}: {_one_line(e)} Run rnnlab from the directory the run was trained in"
            + (" (the path is relative)" if relative else "")
            + ", or put the text back where it was."
        ) from None
    vocab = text.CharVocab(text.split_text(corpus)[0])
    spec = config.get("model") or {}
    want = spec.get("output_size") if isinstance(spec, dict) else None
    if vocab.size != want:
        raise UsageError(
            f"{old}: that text gives {vocab.size} symbols but the model was trained with "
            f"{want}: it has changed since training. Put the training text back where it was."
        )
    print(f"rnnlab: warning: {old} ({vocab.size} symbols, as many as the model's); if that "
          "text changed since training, the mapping may differ", file=sys.stderr)  # fmt: skip
    return {"vocab": vocab.chars}


def _build_run_model(spec, where: Path, seed: int = 0):
    """The model a run's config.json describes; a bad description is said with the file."""
    from rnnlab import recipes

    try:
        return recipes.build_model(spec, seed=seed)
    except ValueError as e:
        raise io.RunDirError(f"'{where}' (its \"model\"): {e}") from None


def _load_weights(model, ckpt, run_dir) -> None:
    try:
        model.load_state_dict(ckpt.model)
    except ValueError as e:
        raise io.CheckpointError(
            f"the checkpoint {ckpt.path} does not fit the model described "
            f"in {run_dir}/config.json (is it from another model?): {e}"
        ) from None


def cmd_evaluate(args) -> int:
    from rnnlab import recipes

    run_dir, cfg, model, data = _load_run(args.run, vocabulary=True)
    if args.data is not None:
        if cfg.task != "charlm":
            raise UsageError(f"`--data` is for charlm runs; '{run_dir}' is a {cfg.task} run")
        # the run's vocabulary, without its corpus's path and hash (checked by make_task)
        cfg.data, data = args.data, ({"vocab": data.get("vocab")} if isinstance(data, dict)
                                     else data)  # fmt: skip
    task = recipes.make_task(cfg, data)
    extra = {}
    if args.beam is not None and cfg.task not in recipes.SEQ2SEQ_TASKS:
        raise UsageError(f"`--beam` is for numbers, dates and caption runs; '{run_dir}' is "
                         f"a {cfg.task} run")  # fmt: skip
    if cfg.task in recipes.SEQ2SEQ_TASKS:  # greedy and beam search, on either split
        from rnnlab.translation import _beam

        extra["beam"] = cfg.beam if args.beam is None else _beam(args.beam)
    with np.errstate(all="ignore"):  # a diverged model's overflow is reported below
        result = task.evaluate(model, args.split, **extra)
    clean, bad = _finite_or_null(result)
    if bad:
        why = (f"{', '.join(bad)} not finite (NaN or inf): the model's outputs overflow; "
               "its weights have diverged")  # fmt: skip
        clean["non_finite"] = why
        print(f"rnnlab: warning: {why}", file=sys.stderr)
    if args.json:
        print(json.dumps(clean, sort_keys=True, allow_nan=False))
    else:
        for line in recipes.report(task, result):
            print(line)
    return 0


def _finite_or_null(value, where: str = "") -> tuple:
    """`value` with every NaN or inf replaced by None (JSON has no NaN: `json.dumps` would
    print one that no JSON reader takes), and the names of the replaced entries."""
    if isinstance(value, float) and not math.isfinite(value):
        return None, [where or "the value"]
    if isinstance(value, dict):
        out, bad = {}, []
        for k, v in value.items():
            out[k], b = _finite_or_null(v, f"{where}.{k}" if where else str(k))
            bad += b
        return out, bad
    if isinstance(value, list):
        pairs = [_finite_or_null(v, f"{where}[{i}]") for i, v in enumerate(value)]
        return [v for v, _ in pairs], [n for _, b in pairs for n in b]
    return value, []


def cmd_sample(args) -> int:
    from rnnlab import recipes

    run_dir, cfg, model, data = _load_run(args.run, vocabulary=True)
    if cfg.task != "charlm":
        raise UsageError(
            f"`run` must be a charlm run to sample text; '{run_dir}' is a {cfg.task} run"
        )
    task = recipes.make_task(cfg, data, text=False)  # the run's vocabulary, no corpus
    print(
        task.sample(
            model,
            args.prime,
            args.length,
            temperature=args.temperature,
            top_k=args.top_k,
            seed=args.seed,
        )
    )
    return 0


def cmd_translate(args) -> int:
    from rnnlab import recipes
    from rnnlab.translation import _beam

    if (args.text is None) == (args.file is None):
        raise UsageError("`translate` needs a source text or --file F (one source a line), "
                         "not " + ("both" if args.file else "neither"))  # fmt: skip
    beam = None if args.beam is None else _beam(args.beam)
    if args.file is not None:
        path = Path(args.file)
        try:
            texts = path.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError:
            raise UsageError(f"`--file` must be UTF-8 text; '{path}' is not") from None
        where = [f"line {i + 1} of {path}" for i in range(len(texts))]
        if not texts:
            raise UsageError(f"`--file` must hold one source a line; '{path}' is empty")
    else:
        texts, where = [args.text], ["source"]
    run_dir, cfg, model, data = _load_run(args.run)
    if cfg.task not in recipes.SEQ2SEQ_TASKS:
        raise UsageError(f"`run` must be a numbers or dates run to translate; '{run_dir}' is "
                         f"a {cfg.task} run")  # fmt: skip
    task = recipes.make_task(cfg, data)
    beam = cfg.beam if beam is None else beam
    outputs = task.translate(model, texts, beam=beam, unknown=args.unknown, where=where)
    if args.json:
        pairs = [{"source": s, "output": o} for s, o in zip(texts, outputs, strict=True)]
        print(json.dumps({"beam": beam, "translations": pairs}, ensure_ascii=False))
    else:
        for o in outputs:
            print(o)
    return 0


def cmd_export(args) -> int:
    from rnnlab import export

    if args.fmt not in export.FORMATS:  # not argparse's choices: its error is two lines
        raise UsageError(
            f"`--format` must be one of {', '.join(export.FORMATS)}; got {args.fmt!r} instead."
        )
    path, text = export.export_run(
        args.run, args.fmt, args.out, lengths=args.lengths, state=args.state
    )
    print(text, end="")
    print(f"wrote {path}", file=sys.stderr)
    return 0


def cmd_demo(args) -> int:
    from rnnlab import distributed, recipes
    from rnnlab.train import TrainConfig, Trainer

    if distributed.launched():  # K copies of the demo would race for one run directory
        raise UsageError("`rnnlab demo` runs in one process; under mpiexec, use `rnnlab train`")
    cfg = TrainConfig.from_dict(
        {**recipes.defaults("charlm"), **recipes.DEMO, "time_limit": args.time_limit}
    )
    run_dir = Path(args.run_dir) if args.run_dir else io.make_run_dir("runs", "demo")
    t0 = time.perf_counter()
    print(
        "rnnlab demo: a character-level LSTM language model on the Python documentation that "
        "ships with CPython.",
        flush=True,
    )
    task = recipes.make_task(cfg)
    spec = recipes.model_spec(cfg, task)
    model = recipes.build_model(spec, seed=cfg.seed)
    print(f"corpus: {task.describe_data()}")
    print("n-gram baselines on the same held-out text (nats / bits per character):")
    for name, b in task.baselines().items():
        print(f"  {name:<8} {b['nats_per_char']:.3f} / {b['bits_per_char']:.3f}")
    print("\nsample before training:")
    print(_indent(task.sample(model, "def ", 160, temperature=0.8, seed=1)))
    print(
        f"\ntraining {sum(v.size for v in model.params.values()):,} parameters for up to "
        f"{args.time_limit:.0f} s ...",
        flush=True,
    )
    trainer = Trainer(model, task, cfg, run_dir, spec=spec, quiet=args.quiet)
    trainer.run()
    final = task.evaluate(model, "test")
    io.atomic_write_json(run_dir / "result.json", {"test": final})
    print()
    for line in recipes.report(task, final):
        print(line)
    print("\nsample after training:")
    print(_indent(task.sample(model, "def ", 300, temperature=0.8, seed=1)))
    _plot(run_dir)
    print(f"\nrun directory: {run_dir} ({time.perf_counter() - t0:.0f} s in all)")
    print(f"more samples: rnnlab sample {run_dir} --prime 'class '")
    return 0


def _indent(text: str) -> str:
    return "\n".join("  | " + line for line in text.split("\n"))


def _plot(run_dir: Path) -> list[Path]:
    """The run's curves in RUN/plots, the place `rnnlab plot RUN` writes them too."""
    from rnnlab.gradflow import plot_run

    try:
        paths = plot_run(run_dir)
    except ImportError:
        print(
            "plots: matplotlib is not installed; pip install 'rnnlab[plot]' to get loss curves",
            file=sys.stderr,
        )
        return []
    except ValueError as e:  # the run is trained and saved; only its plots are missing
        print(f"rnnlab: warning: no plots: {_one_line(e)}", file=sys.stderr)
        return []
    if paths:
        print(f"plots: {paths[0].parent} ({', '.join(p.name for p in paths)})")
    return paths


if __name__ == "__main__":
    sys.exit(main())
