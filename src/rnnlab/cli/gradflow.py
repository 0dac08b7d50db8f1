"""`rnnlab gradflow SOURCE`: the analyses of rnnlab.diagnostics.analyses on a run, a fresh
model of a task or a bare map; each writes a PNG and a JSON file into --out, adds a compact
entry to summary.json and prints one verdict line.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np

from rnnlab import _checks, io
from rnnlab import diagnostics as dg
from rnnlab.cli.options import (
    Parser,
    add_data_options,
    add_model_options,
    add_optimisation_options,
    count,
    number,
    positive_float,
)
from rnnlab.cli.options import path as path_option
from rnnlab.diagnostics import analyses, subjects
from rnnlab.diagnostics._common import json_value


def build_parser() -> Parser:
    from rnnlab import models, tasks

    p = Parser(
        prog="rnnlab gradflow",
        description="See the gradients of a recurrent model on a batch of its task's data: "
        "‖∂L/∂h_k‖ by lag, the t×k map, Jacobian products against the bound, the recurrent "
        "spectrum (and its path through training), gate saturation, loss cliffs and "
        "clipping, and the iterated map of a 1- or 2-unit RNN. Each analysis writes a PNG "
        "and JSON into --out and prints one verdict line.",
    )
    p.add_argument(
        "source",
        help="a run directory of one recurrent network, a task name ("
        + ", ".join(t for t in tasks.TASK_NAMES if t not in tasks.SEQ2SEQ_TASKS)
        + ": a fresh model from what `rnnlab train` starts from) or 'dynamics' (a bare "
        "map, see --w); not the encoder-decoder's or output feedback's",
    )
    p.add_argument(
        "--analyses",
        default=None,
        help="comma-separated, from "
        + ",".join(analyses.ANALYSES)
        + " (default: every one that applies)",
    )
    p.add_argument(
        # (a --out "" was read as not given: a new runs/gradflow-... directory, unasked)
        "--out", default=None, type=path_option("--out", "a directory"),
        help="output directory (default: runs/gradflow-<run>-<time>, or "
        "runs/gradflow-<task>-<cell>-<time> for a task); an earlier gradflow's files there "
        "are replaced"
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="print the summary as one JSON object on stdout (verdicts on stderr)",
    )
    add_model_options(p, None, only=("cell", "hidden", "layers", "bidirectional", "forget_bias"),
                      checked=True, cells=models.CELLS)  # fmt: skip
    g = p.add_argument_group("fresh model (task source)")
    g.add_argument(
        "--init-scale",
        dest="init_scale",
        type=positive_float("--init-scale"),
        default=None,
        help="multiply every W_hh by this after initialisation",
    )
    add_data_options(p, None, only=("T", "seed"), checked=True)
    g = p.add_argument_group("the analysed batch")
    g.add_argument(
        "--batch",
        type=count("--batch"),
        default=None,  # (32: subject_from_args, which refuses it for the dynamics source)
        help="validation sequences to analyse (default 32)",
    )
    g.add_argument(
        "--step",
        type=int,
        default=None,
        help="run source: the checkpoint to analyse (default: the latest); the spectrum "
        "history then ends at it",
    )
    g = p.add_argument_group("analyses")
    g.add_argument(
        "--loss",
        choices=analyses.LOSSES,
        default=None,  # ("auto")
        help="lag profile: 'task' (the task's loss on the batch), 'last' (a random "
        "projection of the final state), 'all' (of every step's output); auto: task "
        "for many-to-one models, last otherwise",
    )
    g.add_argument("--sample", type=int, default=None, help="jacobian: the sequence (default 0)")
    g.add_argument(
        "--cliff-range",
        dest="cliff_range",
        type=positive_float("--cliff-range"),
        default=None,
        help="cliff: every entry of the first layer's bias_hh_l0 moves by up to ±R; the random "
        "direction by up to ±(R/2)·‖θ‖ (default 2)",
    )
    g.add_argument(
        "--max-norm",
        dest="max_norm",
        type=positive_float("--max-norm"),
        default=None,
        help="cliff: clipping threshold η (default 1)",
    )
    add_optimisation_options(p, None, only=("lr",), checked=True,
                             title="cliff: the compared SGD steps")  # fmt: skip
    g = p.add_argument_group("dynamics source")
    g.add_argument("--w", type=number("--w"), default=None, help="1 unit: h ← φ(w h + b)")
    g.add_argument("--b", type=number("--b"), default=None, help="1 unit: the bias b (with --w)")
    g.add_argument("--W", dest="W", default=None, help="2 units: 'a,b;c,d'")
    g.add_argument("--bias", default=None, help="2 units: 'e,f'")
    g.add_argument("--phi", choices=dg.dynamics.PHIS, default=None, help="(default tanh)")
    g.add_argument(
        "--range", dest="h_range", default=None,
        help="starting states 'lo,hi' (default -2,2); also for a 1- or 2-unit tanh RNN's "
        "dynamics analysis",
    )  # fmt: skip
    g.add_argument("--iters", type=count("--iters"), default=None,
                   help="steps from each start (default 200); also for a model's")  # fmt: skip
    return p


_MODEL_OPTIONS = ("cell", "hidden", "layers", "seed", "init_scale", "forget_bias")
_MAP_OPTIONS = ("w", "b", "W", "bias", "phi")  # a bare map's: a model's are its weights
# The options of one analysis each (and their defaults): said when it is not run.
_ANALYSIS_OPTIONS: dict[str, tuple[str, Any]] = {"loss": ("lag", "auto"), "sample": ("jacobian", 0),
                     "cliff_range": ("cliff", 2.0), "max_norm": ("cliff", 1.0),
                     "lr": ("cliff", None), "h_range": ("dynamics", "-2,2"),
                     "iters": ("dynamics", 200)}  # fmt: skip


def subject_from_args(args: argparse.Namespace) -> subjects.Subject:
    from rnnlab import tasks

    src = args.source
    given = [o for o in _MODEL_OPTIONS if getattr(args, o) is not None]
    if args.bidirectional:
        given.append("bidirectional")
    maps = [o for o in _MAP_OPTIONS if getattr(args, o) is not None]
    data = [o for o in ("T", "step", "batch", "sample", "loss") if getattr(args, o) is not None]
    if args.batch is None:
        args.batch = 32
    if src == "dynamics":
        if given or data:  # (--batch, --sample and --loss were ignored silently)
            what = (given or data)[0]
            _checks.fail(
                f"--{what.replace('_', '-')}",
                "left out for the dynamics source (it describes a model or its data)",
                "it was given",
            )
        return subjects.dynamics_subject(
            w=args.w,
            b=args.b,
            W=args.W,
            bias=args.bias,
            phi=args.phi or "tanh",
            h_range=args.h_range or _ANALYSIS_OPTIONS["h_range"][1],
            iters=args.iters or _ANALYSIS_OPTIONS["iters"][1],
        )
    if maps:
        _checks.fail(
            f"--{maps[0]}",
            "given only with the dynamics source (`rnnlab gradflow dynamics --w 2 --b 0`)",
            f"source {src!r}",
        )
    path = Path(src)
    own = [t for t in tasks.TASK_NAMES if t not in tasks.SEQ2SEQ_TASKS]  # (one network each)
    expected = "a run directory, a task name (" + ", ".join(own) + ") or 'dynamics'"
    if path.exists() and not io.is_run_dir(path) and src not in tasks.TASK_NAMES:
        what = "a directory without config.json" if path.is_dir() else "a file"
        _checks.fail("source", expected, f"'{src}', {what}")
    if io.is_run_dir(path) or (path.exists() and src not in tasks.TASK_NAMES):
        if given:
            _checks.fail(
                f"--{given[0].replace('_', '-')}",
                "given only for a task source (a run directory's model is fixed)",
                f"the run directory '{src}'",
            )
        return subjects.run_subject(path, step=args.step, T=args.T, batch=args.batch)
    if src in tasks.TASK_NAMES:
        if args.step is not None:
            _checks.fail("--step", "given only for a run directory", f"the task {src!r}")
        return subjects.task_subject(
            src,
            cell=args.cell,
            hidden=args.hidden,
            layers=args.layers,
            bidirectional=args.bidirectional,
            T=args.T,
            seed=args.seed,
            init_scale=args.init_scale,
            forget_bias=args.forget_bias,
            batch=args.batch,
        )
    _checks.fail("source", expected, f"{src!r}, which is none of these (no such directory)")


def _name_hint(subject: subjects.Subject) -> str:
    s = subject.source
    if s["type"] == "run":
        stem = Path(s["run"]).resolve().name
    elif s["type"] == "task":
        stem = f"{s['task']}-{s['cell']}"
    else:
        stem = "dynamics"
    return "gradflow-" + (re.sub(r"[^A-Za-z0-9._-]", "-", stem).lstrip(".") or "run")


# Options whose values may start with a minus sign that argparse does not read as a number
# ("-3,3", "-1,0;0,1", "-1e-3"): it took them for options ("expected one argument").
_SIGNED = ("--w", "--b", "--W", "--bias", "--range")
_NEGATIVE = re.compile(r"-\.?\d")


def _signed_values(argv: list[str]) -> list[str]:
    """argv with `--range -3,3` written as `--range=-3,3` (the form argparse reads)."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        if argv[i] in _SIGNED and i + 1 < len(argv) and _NEGATIVE.match(argv[i + 1]):
            out.append(f"{argv[i]}={argv[i + 1]}")
            i += 2
        else:
            out.append(argv[i])
            i += 1
    return out


def _free_in_out(out: Path, file: str) -> None:
    """Refuse, naming --out, a folder where a file gradflow writes is a directory, FIFO,
    device or socket: the writer's own check named its internal argument (`path` must be a
    file path; got 'out/lag.png', a directory), an argument the user never gave. (A symbolic
    link there is replaced, not written through: io.atomic_path.)"""
    path = out / file
    if path.is_symlink() or not path.exists() or path.is_file():
        return
    kind = "a directory" if path.is_dir() else "a FIFO, device or socket"
    _checks.fail("--out", f"a directory where gradflow can write its {file}",
                 f"'{out}', where '{file}' is {kind}", "Move it away, or give another --out.")


def _clear_previous_output(out: Path) -> list[str]:
    """Remove the files an earlier `rnnlab gradflow` wrote into `out` (those its summary.json
    names), returning their names. Written over in part, they stayed beside the new summary:
    map.png or jacobian-l0_reverse.png of another model, which no summary described. A
    summary.json that is not gradflow's is refused (it would be overwritten), naming it."""
    path = out / "summary.json"
    if not path.exists() and not path.is_symlink():
        return []
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        old = None
    if not (isinstance(old, dict) and old.get("kind") == "gradflow"):
        _checks.fail("--out", "a directory without a summary.json, or with an earlier "
                     "gradflow's (replaced)", f"'{out}', whose summary.json is not "
                     "gradflow's")  # fmt: skip
    names: list[Any] = ["summary.json"]
    for entry in (old.get("analyses") or {}).values():
        if isinstance(entry, dict):
            names += [entry.get("json"), *(entry.get("png") or [])]  # (checked below)
    removed = []
    for name in names:
        file = out / name if isinstance(name, str) and name == Path(name).name else None
        if file is not None and (file.is_file() or file.is_symlink()):
            file.unlink()
            removed.append(name)
    return removed


def main(argv: list[str] | None = None) -> int:
    """`rnnlab gradflow SOURCE [options]`; returns the exit status."""
    argv = _signed_values(sys.argv[1:] if argv is None else list(argv))
    args = build_parser().parse_args(argv)
    subject = subject_from_args(args)
    names, skipped = analyses.chosen_analyses(args.analyses, subject)
    if args.sample is not None and subject.x is not None and not 0 <= args.sample < len(
        subject.x
    ):
        _checks.fail("--sample", f"a sequence index in [0, {len(subject.x)})", str(args.sample))
    for option, (analysis, _) in _ANALYSIS_OPTIONS.items():
        if getattr(args, option) is not None and analysis not in names:
            flag = "--range" if option == "h_range" else f"--{option.replace('_', '-')}"
            print(f"rnnlab: warning: {flag} is for the {analysis} analysis, which "
                  "this run does not make; ignored", file=sys.stderr)  # fmt: skip
    options: dict[str, Any] = {k: default if getattr(args, k) is None else getattr(args, k)
                               for k, (_, default) in _ANALYSIS_OPTIONS.items()}  # fmt: skip
    # (an ignored --range is not read: said ignored above, it does not stop the run)
    options["h_range"] = subjects.parse_range(options["h_range"] if "dynamics" in names
                                              else _ANALYSIS_OPTIONS["h_range"][1])  # fmt: skip
    if args.out and Path(args.out).exists() and not Path(args.out).is_dir():
        _checks.fail("--out", "a directory (new or existing) for the PNGs and JSON files",
                     f"'{args.out}', which is a file")  # fmt: skip
    out = Path(args.out) if args.out else io.make_run_dir("runs", _name_hint(subject))
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # a parent that is a file, no permission: say which option
        _checks.fail("--out", "a directory rnnlab can create", f"'{out}' ({e.strerror})")
    # (said before the analyses run; each figure is NAME.png or NAME-....png, checked again
    # as it is written, should an analysis name one otherwise)
    figures = [p.name for n in names for p in (*out.glob(f"{n}.png"), *out.glob(f"{n}-*.png"))]
    for file in ["summary.json", *(f"{n}.json" for n in names), *figures]:
        _free_in_out(out, file)
    replaced = _clear_previous_output(out)
    if replaced:
        print(f"rnnlab: note: --out '{out}' held an earlier gradflow output; its "
              f"{len(replaced)} files were removed so that every file there is this run's",
              file=sys.stderr)  # fmt: skip
    summary: dict[str, Any] = {
        "kind": "gradflow",
        "source": subject.source,
        "model": analyses.describe_model(subject),
        "batch": None
        if subject.x is None
        else {"split": "valid", "sequences": int(subject.x.shape[0]), "T": int(subject.x.shape[1])},
        "out": str(out),
        "analyses": {},
        "skipped": skipped,
        "verdicts": {},
    }
    no_plots = ""
    for name in names:
        print(f"gradflow: {name} ...", file=sys.stderr, flush=True)
        # (an exploding network's inf and NaN are what the verdicts report; NumPy's
        # warnings about making them would only bury the verdicts)
        with np.errstate(all="ignore"):
            result = analyses.run_analysis(name, subject, **options)
        pngs = []
        for draw, data, file in result.figures:
            if no_plots:
                break
            _free_in_out(out, file)
            try:
                pngs.append(draw(data, out / file).name)
            except ImportError as e:  # matplotlib is an optional extra: keep the JSON
                no_plots = str(e)
        io.atomic_write_json(out / f"{name}.json", json_value(result.details))
        summary["analyses"][name] = {
            **result.summary,
            "verdict": result.verdict,
            "png": pngs,
            "json": f"{name}.json",
        }
        summary["verdicts"][name] = result.verdict
        # what has run is kept should a later analysis fail (a run's damaged file)
        io.atomic_write_json(out / "summary.json", json_value(summary))
        line = f"{name}: {result.verdict}"
        print(line, file=sys.stderr if args.json else sys.stdout, flush=True)
    if no_plots:
        summary["plots"] = f"no PNGs: {no_plots}"
        print(f"rnnlab: warning: no PNGs written: {no_plots}", file=sys.stderr)
    summary = json_value(summary)
    io.atomic_write_json(out / "summary.json", summary)
    if args.json:
        print(json.dumps(summary))
    else:
        drawn = sum(len(a["png"]) for a in summary["analyses"].values())
        print(f"output: {out} (summary.json, a JSON per analysis, {drawn} "
              f"PNG{'' if drawn == 1 else 's'})")  # fmt: skip
    return 0
