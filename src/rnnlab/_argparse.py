"""The command line's argument parser, for every command that parses its own arguments
(rnnlab.cli's, and `rnnlab bench` and `rnnlab info`, which the command line only calls)."""

from __future__ import annotations

import argparse
from typing import NoReturn


class ArgumentError(ValueError):
    """A malformed command line: argparse's message, and the help to see (its text). The
    caller prints it after its own "PROG: error: ", once."""

    def __init__(self, message: str, prog: str) -> None:
        super().__init__(f"{message} (see {prog} -h)")
        self.message, self.prog = message, prog


class Parser(argparse.ArgumentParser):
    """argparse that raises ArgumentError (printed as one line by the rnnlab command) instead
    of printing the usage and exiting."""

    def error(self, message: str) -> NoReturn:
        raise ArgumentError(message, self.prog)
