"""The command line's argument parser, for every command that parses its own arguments
(rnnlab.cli's, and `rnnlab bench` and `rnnlab info`, which the command line only calls).

What it changes of argparse, for every rnnlab command alike:

- an error is an exception (ArgumentError), said in one line by the rnnlab command;
- a number is read as typed in ASCII: `int` and `float` options (and the types of
  cli.options, through `integer` and `real`) refuse other scripts' digits, which Python's
  int() and float() take ('٣' was 3, '１２８' 128), and an integer beyond 64 bits (10**400
  reached NumPy as a Python object: a TypeError inside the model, a traceback);
- a value that begins with '-' and reads as a number is a value (`--forget-bias -1e5` and
  `--w -inf` were "expected one argument": argparse takes only -5 and -.5 for numbers);
- a long option is written in full: a prefix of one (`--hid 8`) is refused naming the option
  it may mean, as are other unknown options. argparse took any unambiguous prefix, a second
  spelling of each option valid on the command line alone (a --config file's keys are the
  settings' full names), which a later option sharing the prefix would make ambiguous or,
  being the prefix itself, turn into another option without a word.

An option given twice takes its last value, as argparse does: a script's defaults followed
by one call's value (`rnnlab train dates $COMMON --beam 3`) is an idiom rnnlab's own tests
use.
"""

from __future__ import annotations

import argparse
import difflib
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

INT64 = 2**63  # an integer option is within ±(INT64 - 1): an int64, as NumPy holds it


class ArgumentError(ValueError):
    """A malformed command line: argparse's message, and the help to see (its text). The
    caller prints it after its own "PROG: error: ", once."""

    def __init__(self, message: str, prog: str) -> None:
        super().__init__(f"{message} (see {prog} -h)")
        self.message, self.prog = message, prog


def integer(text: str) -> int:
    """An integer as typed: ASCII digits with an optional sign (and `_` between digits, as
    Python and TOML write 1_000), within 64 bits; ValueError otherwise."""
    if not text.isascii():
        raise ValueError(f"not ASCII: {text!r}")
    value = int(text)
    if not -INT64 < value < INT64:
        raise ValueError(f"beyond 64 bits: {text!r}")
    return value


def real(text: str) -> float:
    """A number as typed: float() of ASCII text ('1e-3', '-inf'); ValueError otherwise. Its
    range is the option's to check (most refuse NaN and inf by name)."""
    if not text.isascii():
        raise ValueError(f"not ASCII: {text!r}")
    return float(text)


def int_or_none(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


def shown(text: str) -> str:
    """`text` as an error message quotes it: repr, a long one cut (a 400-digit number)."""
    return repr(text) if len(text) <= 60 else f"{text[:57]!r}... ({len(text)} characters)"


def _typed(kind: str, convert: Callable[[str], int | float]) -> Callable[[str], int | float]:
    """The type argparse uses for `int` or `float` options (Parser registers it): `convert`.
    What int() or float() refuse too stays argparse's "invalid int value: '1.5'"; what they
    took is said as "must be <kind> ...; got ... instead." (Parser.error puts the option's
    name first)."""

    def parse(text: str) -> int | float:
        try:
            return convert(text)
        except ValueError:
            pass
        if not text.isascii():
            why = f"{kind} written in ASCII digits (0-9)"
        elif convert is integer and int_or_none(text) is not None:
            why = f"an integer of 64 bits (within ±{INT64 - 1:,})"
        elif len(text) <= 60:
            raise ValueError(text)  # (argparse says "invalid int value: '1.5'")
        else:  # (argparse would quote all of it)
            why = kind
        raise argparse.ArgumentTypeError(f"must be {why}; got {shown(text)} instead.")

    parse.__name__ = convert.__name__
    return parse


# A value that reads as a number, negative: "-1", "-.5", "-1e5", "-1_000", "-inf", "-nan".
_NEGATIVE_NUMBER = re.compile(
    r"^-(?:(?:\d[\d_]*(?:\.[\d_]*)?|\.\d[\d_]*)(?:[eE][-+]?\d+)?|inf|infinity|nan)$",
    re.IGNORECASE,
)


class Parser(argparse.ArgumentParser):
    """argparse that raises ArgumentError (printed as one line by the rnnlab command) instead
    of printing the usage and exiting, and reads options as the module's docstring says."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)
        self.register("type", int, _typed("an integer", integer))
        self.register("type", float, _typed("a number", real))
        self._negative_number_matcher = _NEGATIVE_NUMBER
        self._arguments: list[str] = []

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        # (the words parsed, for error(); Any: argparse's overloads of it)
        self._arguments = list(sys.argv[1:] if args is None else args)
        return super().parse_known_args(args, namespace)

    def error(self, message: str) -> NoReturn:
        raise ArgumentError(said(message, self, self._arguments), self.prog)


def said(message: str, parser: argparse.ArgumentParser, arguments: Sequence[str] = ()) -> str:
    """argparse's `message` as rnnlab says errors: "`--hidden` must be ..." rather than
    "argument --hidden: `--hidden` must be ...", an unknown option with the one it may mean,
    and a value that begins with '-' taken for an option with the way to write it."""
    named = re.match(r"argument (\S+): (.*)$", message, re.S)
    if named:
        name, text = named[1].split("/")[-1], named[2]
        if text.startswith(f"`{name}` "):  # (cli.options' types name the option themselves)
            return text
        if text.startswith("must be "):
            return f"`{name}` {text}"
        if text == "expected one argument":
            value = _value_after(named[1].split("/"), parser, arguments)
            if value is not None:
                return (f"`{name}` must be followed by its value; got {shown(value)}, which "
                        f"reads as an option (a value that begins with '-' is written "
                        f"{name}={value})")  # fmt: skip
        return message
    if message.startswith("unrecognized arguments: "):
        hints = [h for word in message.split(": ", 1)[1].split() if (h := _meant(word, parser))]
        if hints:
            return f"{message} ({'; '.join(hints)})"
    return message


def _value_after(names: Sequence[str], parser: argparse.ArgumentParser,
                 arguments: Sequence[str]) -> str | None:  # fmt: skip
    """The word after the option `names` in `arguments` when it begins with '-' and is no
    option of `parser`: a value argparse read as an option."""
    for option, word in zip(arguments, arguments[1:], strict=False):
        if option in names and word.startswith("-") and word != "--":
            if word.split("=", 1)[0] not in parser._option_string_actions:
                return word
    return None


def _meant(word: str, parser: argparse.ArgumentParser) -> str:
    """The option an unknown `word` may mean: the one it begins (abbreviations are refused)
    or the nearest spelling; "" if none."""
    if not word.startswith("--"):  # (a negative number is a value: _NEGATIVE_NUMBER)
        return (f"{word}: an argument that begins with '-' is written after --, as in "
                f"`-- {word}`" if word.startswith("-") and len(word) > 1 else "")  # fmt: skip
    typed = word.split("=", 1)[0]
    options = [o for o in parser._option_string_actions if o.startswith("--")]
    begun = [o for o in options if o.startswith(typed)]
    near = begun or difflib.get_close_matches(typed, options, n=3, cutoff=0.75)
    if not near:
        return ""
    return f"{typed}: did you mean {' or '.join(near)}? options are written in full"
