"""The options of the rnnlab commands: the argparse pieces they share.

A bad value is said as one line naming the option ("`--hidden` must be a positive integer;
got '0' instead."), as every rnnlab error is.
"""

from __future__ import annotations

import argparse
import math

from rnnlab import _checks


class Parser(argparse.ArgumentParser):
    """argparse that raises ValueError (printed as one line by the rnnlab command) instead of
    printing the usage and exiting."""

    def error(self, message):
        raise ValueError(f"{self.prog}: {message} (see {self.prog} -h)")


def option_type(name: str, expected: str, convert, ok):
    """An argparse type: `convert(text)` accepted when `ok(value)`; otherwise the message
    "`--name` must be …; got … instead." (ArgumentTypeError: argparse keeps its text)."""

    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            value = None
        if value is None or not ok(value):
            try:
                _checks.fail(name, expected, repr(text))
            except ValueError as e:
                raise argparse.ArgumentTypeError(str(e)) from None
        return value

    parse.__name__ = name
    return parse


def positive_float(name: str):
    return option_type(name, "a positive number", float, lambda v: math.isfinite(v) and v > 0)


def count(name: str):
    return option_type(name, "a positive integer", int, lambda v: v >= 1)


def number(name: str):
    return option_type(name, "a finite number", float, math.isfinite)
