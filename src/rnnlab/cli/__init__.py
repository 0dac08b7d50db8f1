"""The `rnnlab` command: train, evaluate, sample, translate, export, list tasks, the demo,
reproduce (the papers' memory-task results), and the commands with options of their own
(bench, gradflow, plot, info).

Errors a user can cause (a bad option, a missing file, a corrupt checkpoint) print one line,
`rnnlab: error: ...`, and exit with status 2; no traceback. Run as a program (`run`: the
`rnnlab` script and `python -m rnnlab` call it through rnnlab.__main__, which holds Ctrl-C and
SIGTERM while it imports this), rnnlab's own warnings print as one line too,
`rnnlab: warning: ...`, not as Python's source line and category.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Callable
from typing import TextIO

from rnnlab import __version__, settings
from rnnlab._argparse import ArgumentError, said
from rnnlab.cli import reproduce, train, trained
from rnnlab.cli._base import (
    EXIT_INTERRUPTED,
    EXIT_PIPE,
    EXIT_TERMINATED,
    EXIT_USAGE,
    UsageError,
    one_line,
)
from rnnlab.cli.options import Parser

__all__ = ["EXIT_INTERRUPTED", "EXIT_PIPE", "EXIT_TERMINATED", "EXIT_USAGE", "UsageError",
           "build_parser", "main", "run"]  # fmt: skip

COMMANDS = {
    "train": train.cmd_train,
    "demo": train.cmd_demo,
    "tasks": train.cmd_tasks,
    "evaluate": trained.cmd_evaluate,
    "sample": trained.cmd_sample,
    "translate": trained.cmd_translate,
    "export": trained.cmd_export,
    "reproduce": reproduce.cmd_reproduce,
}


def build_parser() -> argparse.ArgumentParser:
    # options.Parser, whose error is an exception, for the commands' parsers too (argparse
    # makes subparsers of the parser's own class): a bad option value is one line, not the
    # command's whole usage before it.
    parser: argparse.ArgumentParser = Parser(
        prog="rnnlab",
        description="Recurrent neural networks in NumPy with exact, hand-written BPTT.",
    )
    parser.add_argument("--version", action="version", version=f"rnnlab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    train.add_parsers(sub)
    trained.add_parsers(sub)
    reproduce.add_parsers(sub)
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
    return parser


def _command_parser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    """The parser of the command `name` among build_parser()'s subcommands."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            found: argparse.ArgumentParser = action.choices[name]
            return found
    raise KeyError(name)


# Commands with options of their own: their modules parse the rest of the command line.
_DELEGATED = {
    "bench": ("rnnlab.bench", "main"),
    "gradflow": ("rnnlab.cli.gradflow", "main"),
    "plot": ("rnnlab.cli.plot", "main"),
    "info": ("rnnlab.info", "main"),
}


def run() -> int:
    """The program: main() with rnnlab's warnings as `rnnlab: warning:` lines. main() itself
    leaves warnings.showwarning alone, so that a program (or a test) that calls it in its own
    process keeps its own way of showing or catching them."""
    warnings.showwarning = _show_warning
    return main()


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: TextIO | None = None, line: str | None = None) -> None:  # fmt: skip
    """rnnlab's warnings (raised in its package, or saying "rnnlab" first) as one line, as
    its errors are; any other library's the way Python shows them."""
    text = str(message)
    if not (text.startswith("rnnlab") or filename.startswith(_PACKAGE)):
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))
        return
    text = text.removeprefix("rnnlab: ")
    print(f"rnnlab: warning: {' '.join(text.split())}", file=sys.stderr if file is None else file)


_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # rnnlab's own code


# The commands whose results are what they print on stdout (a table, metrics, text): run with
# stdout closed (`>&-`), Python's sys.stdout is None and print() writes nothing and raises
# nothing, so they ended with status 0 having given nothing. (train, reproduce, gradflow,
# plot and bench write files, which are their results; export says its own refusal.)
_ON_STDOUT = ("tasks", "evaluate", "sample", "translate", "info")


def _stdout_closed(command: str, argv: list[str]) -> bool:
    """Say, and return True, where `command`'s results would go to a closed stdout."""
    if sys.stdout is not None or command not in _ON_STDOUT or {"-h", "--help"} & set(argv):
        return False
    print(f"rnnlab: error: `rnnlab {command}` prints its results on stdout, which is closed; "
          "give it a file (> out.txt), or /dev/null to discard them", file=sys.stderr)
    return True


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and _stdout_closed(argv[0], argv[1:]):
        return EXIT_USAGE
    if argv and argv[0] in _DELEGATED:
        return _delegate(argv[0], argv[1:])
    parser = build_parser()
    try:
        if argv[:1] == ["translate"]:
            # `translate RUN --beam 5 TEXT`: a positional after an option, which argparse
            # leaves unrecognized unless the command's arguments are parsed intermixed (a
            # parser with subcommands cannot be)
            args = _command_parser(parser, "translate").parse_intermixed_args(argv[1:])
            args.command = "translate"
        else:
            args = parser.parse_args(argv)
    except ValueError as e:  # Parser.error: an unknown option, a value of the wrong type
        if isinstance(e, ArgumentError) and e.prog == "rnnlab" and argv[:1] and argv[0] in COMMANDS:
            # argparse says a command's unknown option at the top: its help is the command's,
            # and so are the options it may mean
            e = ArgumentError(said(e.message, _command_parser(parser, argv[0])),
                              f"rnnlab {argv[0]}")  # fmt: skip
        print(f"rnnlab: error: {one_line(e)}", file=sys.stderr)
        if argv[:1] == ["train"]:  # under mpiexec the other ranks wait for this one's start
            from rnnlab import distributed

            distributed.join_failed_start()
        return EXIT_USAGE
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    return _guarded(_after_settings, COMMANDS[args.command], args,
                    memory=_MEMORY_HINTS.get(args.command, ""))  # fmt: skip


def _after_settings(command: Callable[..., int], args: argparse.Namespace) -> int:
    """`command` once the RNNLAB_* variables are read: a bad value stops every command with
    its one line, also a command that reads none of them (`RNNLAB_NO_NUMBA=maybe rnnlab
    tasks` listed the tasks without a word)."""
    settings.current()
    return command(args)


# What makes each command's memory grow, said when it runs out (only options it has).
_MEMORY_HINTS = {
    "train": "try a smaller --hidden, --batch-size, --seq-len or --T (or a shorter --data text)",
    "evaluate": "the run's model or its held-out data is too large for the memory available",
    "gradflow": "try a smaller --hidden, --batch or --T",
    "translate": "a source too long to decode in the memory available: split its --file line "
                 "into shorter ones, or try a smaller --beam",
    "sample": "try a smaller --length",
    "bench": "try smaller sizes",
}


def _guarded(command: Callable[..., int], *args: object, memory: str = "") -> int:
    """Run a command; what a user can cause ends in one line and an exit status, the same for
    every command (its own or delegated): 2 for bad input, 1 for a run that stopped. `memory`:
    what to try when memory runs out, in the command's own options."""
    try:
        return command(*args)
    except KeyboardInterrupt as e:  # (one with a message says what it stopped)
        print("rnnlab: interrupted" + (f": {one_line(e)}" if str(e) else ""), file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # the reader of the output went away (`rnnlab tasks | head -1`): nothing more is
        # said, as a command that died of SIGPIPE says nothing (Python ignores the signal
        # and raises this instead); what the output still held goes nowhere, not into a
        # second BrokenPipeError at exit. (Training stops and saves first: Progress.gone.)
        from rnnlab.progress import silence

        silence(sys.stdout)
        silence(sys.stderr)
        return EXIT_PIPE
    except (ValueError, OSError, ImportError) as e:
        print(f"rnnlab: error: {one_line(e)}", file=sys.stderr)
        return EXIT_USAGE
    except MemoryError:
        print("rnnlab: error: out of memory" + (f"; {memory}" if memory else ""), file=sys.stderr)
        return 1
    except RuntimeError as e:  # e.g. NonFiniteError: the run stopped, its checkpoint is kept
        print(f"rnnlab: error: {one_line(e)}", file=sys.stderr)
        return 1


def _delegate(command: str, argv: list[str]) -> int:
    import importlib

    module, function = _DELEGATED[command]

    def delegated() -> int:
        if not {"-h", "--help"} & set(argv):  # (help is shown as the own commands' is)
            settings.current()  # before any work: gradflow printed its first analysis
        code: int = getattr(importlib.import_module(module), function)(argv)
        return code

    return _guarded(delegated, memory=_MEMORY_HINTS.get(command, ""))
