"""`rnnlab bench`: its options, and main, which runs the benchmark and prints or writes the
report.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from rnnlab import io
from rnnlab._argparse import Parser
from rnnlab._checks import file_to_write
from rnnlab.bench import end_to_end
from rnnlab.bench.configs import (
    CELLS,
    DIRECTIONS,
    MODES,
    QUICK_SCALING_LENGTHS,
    QUICK_SHAPES,
    SCALING_LENGTHS,
    SHAPES,
    VARIANTS,
)
from rnnlab.bench.report import format_markdown, format_table, stderr
from rnnlab.bench.suite import run
from rnnlab.bench.timing import BLOCK_S, PAUSE_S, QUICK_BLOCK_S, QUICK_ROUNDS, ROUNDS


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="rnnlab bench",
        description="Time rnnlab's RNN/LSTM/GRU against PyTorch 2.13 on this CPU (same weights, "
        "float32): a training step and inference, GFLOP/s, memory and scaling in T.",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help=f"{QUICK_ROUNDS} rounds of {QUICK_BLOCK_S} s blocks, shapes "
        f"{'+'.join(QUICK_SHAPES)}, memory for one config (under two minutes)",
    )
    p.add_argument(
        "--cells",
        default=",".join(CELLS),
        help="comma-separated (default: %(default)s); the LSTM's variants "
        + ", ".join(VARIANTS)
        + " are timed against rnnlab's plain LSTM (at S2 unless --shapes)",
    )
    p.add_argument(
        "--shapes",
        default=None,
        help="comma-separated from "
        + ", ".join(f"{k}={v}" for k, v in SHAPES.items())
        + " as (B, T, I, H) (default: all)",
    )
    p.add_argument(
        "--modes", default=",".join(MODES), help="comma-separated (default: %(default)s)"
    )
    p.add_argument(
        "--directions", default=",".join(DIRECTIONS), help="comma-separated (default: %(default)s)"
    )
    p.add_argument(
        "--against",
        default="torch",
        help="comma-separated from torch, onnxruntime (default: %(default)s); onnxruntime "
        "adds its inference on the same weights (exported with rnnlab.onnx, torch's threads)",
    )
    p.add_argument(
        "--rounds",
        type=int,
        default=None,
        help=f"interleaved rounds (default: {ROUNDS}, --quick: {QUICK_ROUNDS})",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object on stdout (the table goes to stderr)",
    )
    p.add_argument("--out", metavar="FILE", help="also write the JSON to FILE")
    p.add_argument("--markdown", metavar="FILE", help="also write the report as markdown to FILE")
    p.add_argument(
        "--no-memory",
        dest="memory",
        action="store_false",
        help="skip the memory measurements (subprocesses)",
    )
    p.add_argument(
        "--no-scaling", dest="scaling", action="store_false", help="skip the scaling study in T"
    )
    p.add_argument(
        "--no-rerun",
        dest="rerun_noisy",
        action="store_false",
        help="do not time the noisy rows a second time",
    )
    p.add_argument(
        "--scaling-lengths",
        default=None,
        help="comma-separated sequence lengths of the scaling study (default: "
        + ",".join(map(str, SCALING_LENGTHS))
        + "; --quick: "
        + ",".join(map(str, QUICK_SCALING_LENGTHS))
        + ")",
    )
    p.add_argument(
        "--block",
        type=float,
        default=None,
        metavar="SECONDS",
        help=f"length of a timing block (default: {BLOCK_S}, --quick: {QUICK_BLOCK_S})",
    )
    p.add_argument(
        "--pause",
        type=float,
        default=PAUSE_S,
        metavar="SECONDS",
        help="pause after every block, so that the other library's threads stop spinning "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--end-to-end",
        action="store_true",
        help="instead of the layers: train a character LM (embedding 64, 2-layer LSTM 256, "
        "batch 32 x 128, Adam, clip 1) with rnnlab's Trainer and with plain PyTorch from the "
        "same weights on the same batches; seconds per step and both loss curves",
    )
    p.add_argument(
        "--steps",
        type=int,
        default=None,
        metavar="N",
        help=f"--end-to-end: timed training steps (default: {end_to_end.STEPS})",
    )
    p.add_argument(
        "--warmup-steps",
        type=int,
        default=None,
        metavar="N",
        help=f"--end-to-end: untimed steps first (default: {end_to_end.WARMUP_STEPS})",
    )
    return p


# The options only the layer benchmark reads, and only --end-to-end reads (argparse dests).
LAYER_ONLY = ("quick", "cells", "shapes", "modes", "directions", "against", "rounds", "markdown",
              "memory", "scaling", "scaling_lengths", "block", "rerun_noisy")  # fmt: skip
END_TO_END_ONLY = ("steps", "warmup_steps")


def _split(text: str) -> list[str]:
    return [s.strip() for s in text.split(",") if s.strip()]


def _lengths(text: str) -> list[int] | str:
    try:
        return [int(s) for s in _split(text)]
    except ValueError:
        return text  # run() names the argument and what came


def _ignored(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[str]:
    """The options given that this kind of run does not read, as typed (--no-memory, ...)."""
    dests = LAYER_ONLY if args.end_to_end else END_TO_END_ONLY
    flags = {a.dest: a.option_strings[0] for a in parser._actions if a.option_strings}
    return [flags[d] for d in dests if getattr(args, d) != parser.get_default(d)]


def _run(args: argparse.Namespace) -> dict[str, Any]:
    if args.end_to_end:
        return end_to_end.run(
            steps=end_to_end.STEPS if args.steps is None else args.steps,
            warmup=end_to_end.WARMUP_STEPS if args.warmup_steps is None else args.warmup_steps,
            model=end_to_end.Model(),
            pause_s=args.pause,
        )
    return run(
        cells=_split(args.cells),
        shapes=None if args.shapes is None else _split(args.shapes),
        modes=_split(args.modes),
        directions=_split(args.directions),
        rounds=args.rounds,
        quick=args.quick,
        memory=args.memory,
        scaling=args.scaling,
        # (type: ignore: text that is not a list of integers goes to run() as it came, for
        # run()'s own message, after its checks of the options before it)
        scaling_lengths=None if args.scaling_lengths is None else _lengths(args.scaling_lengths),  # type: ignore[arg-type]
        block_s=args.block,
        pause_s=args.pause,
        against=_split(args.against),
        rerun_noisy=args.rerun_noisy,
    )


def _unwritable(args: argparse.Namespace) -> str | None:
    """Why --out or --markdown cannot be written, checked before the run: the files are
    written only after it, and a refusal then lost minutes of results. What io's atomic
    write refuses (a FIFO, device or socket, a folder's path) is refused here with the same
    check, naming the option; the folder must exist and be writable. The path is the one
    the write uses, as typed (no `~` expanded: a quoted one names a folder `~` here)."""
    for flag, path in (("--out", args.out), ("--markdown", args.markdown)):
        if not path:
            continue
        try:
            file_to_write(path, flag)
        except ValueError as e:
            return str(e)
        folder = Path(path).resolve().parent
        if not (folder.is_dir() and os.access(folder, os.W_OK)):
            return f"{flag}: '{path}' is in '{folder}', which is not a folder rnnlab can write in"
    return None


def main(argv: list[str] | None = None) -> int:
    """`rnnlab bench [options]`: run, print the table (or JSON), return the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help
        return int(e.code or 0)
    except ValueError as e:  # a malformed option, said in one line as by the rnnlab command
        print(f"rnnlab bench: error: {e}", file=sys.stderr)
        return 2
    kind = "--end-to-end" if args.end_to_end else "the layer benchmark (it needs --end-to-end)"
    for flag in _ignored(parser, args):
        stderr(f"rnnlab bench: warning: {flag} does not apply to {kind}; ignored")
    problem = _unwritable(args)
    if problem:
        print(f"rnnlab bench: error: {problem}", file=sys.stderr)
        return 2
    try:
        result = _run(args)
    except (ValueError, ImportError) as e:
        print(f"rnnlab bench: error: {e}", file=sys.stderr)
        return 2
    except RuntimeError as e:  # a disagreement with torch, or a failed memory child
        print(f"rnnlab bench: error: {e}", file=sys.stderr)
        return 1
    text = json.dumps(result, indent=1)
    if args.out:
        io.atomic_write_text(args.out, text + "\n")
    if args.markdown and not args.end_to_end:
        io.atomic_write_text(args.markdown, format_markdown(result))
    report = end_to_end.format_report if args.end_to_end else format_table
    if args.json:
        stderr(report(result))
        print(text)
    else:
        print(report(result))
    if args.end_to_end and not result["end_to_end"]["losses_agree"]:
        return 1  # (timed, but not the same computation: the report says ABOVE the tolerance)
    return 0
