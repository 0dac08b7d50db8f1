"""`rnnlab reproduce [TASK|all] [--quick]`: the papers' long-lag contrasts, cells × lengths.

The command line only; the table, the runs and the plots are rnnlab.reproduce's.
"""

from __future__ import annotations

import argparse
import sys


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from rnnlab import reproduce

    p = sub.add_parser("reproduce", help="the papers' long-lag results, cells x lengths")
    reproduce.add_arguments(p)


def cmd_reproduce(args: argparse.Namespace) -> int:
    from rnnlab import reproduce
    from rnnlab.cli._base import EXIT_TERMINATED

    try:
        return reproduce.run(args)
    except reproduce.Terminated:  # (a KeyboardInterrupt: said here, not as "interrupted")
        print("rnnlab: terminated by SIGTERM", file=sys.stderr)
        return EXIT_TERMINATED
