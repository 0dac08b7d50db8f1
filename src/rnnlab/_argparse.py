"""The command line's argument parser, for every command that parses its own arguments
(rnnlab.cli's, and `rnnlab bench` and `rnnlab info`, which the command line only calls)."""

from __future__ import annotations

import argparse
from typing import NoReturn


class Parser(argparse.ArgumentParser):
    """argparse that raises ValueError (printed as one line by the rnnlab command) instead of
    printing the usage and exiting."""

    def error(self, message: str) -> NoReturn:
        raise ValueError(f"{self.prog}: {message} (see {self.prog} -h)")
