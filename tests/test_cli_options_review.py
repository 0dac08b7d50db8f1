"""The command line's options under hostile values (review 130): what argparse took that
rnnlab did not mean (other scripts' digits, 400-digit integers, prefixes of options, empty
paths), what it refused that was meant (`--forget-bias -1e5`), and what it said in words a
user could not act on. Most cases only parse, so that a regression cannot start a run."""

from __future__ import annotations

import argparse

import pytest

from rnnlab.cli import _command_parser, build_parser, main
from rnnlab.cli import plot as plot_cli

TINY = ["--hidden", "4", "--batch-size", "2", "--quiet"]


def parse(command: str, *argv: object) -> argparse.Namespace:
    return _command_parser(build_parser(), command).parse_args([str(a) for a in argv])


def refusal(command: str, *argv: object) -> str:
    """The message with which `rnnlab COMMAND ARGV` is refused while it is parsed."""
    with pytest.raises(ValueError) as e:
        parse(command, *argv)
    return str(e.value)


def one_line(capsys, *argv: object) -> str:
    """`rnnlab ARGV` ends with status 2 and one `rnnlab: error:` line, which is returned."""
    assert main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if not x.startswith("rnnlab: warning:")]
    assert len(lines) == 1 and lines[0].startswith("rnnlab: error: "), err
    assert "Traceback" not in err
    return lines[0]


# ------------------------------------------------------------------------------- numbers
@pytest.mark.parametrize("command,argv,said", [
    ("train", ["adding", "--hidden", "٣"], "`--hidden` must be an integer written in ASCII digits"),
    ("train", ["adding", "--T", "１２８"], "`--T` must be an integer written in ASCII digits"),
    ("train", ["adding", "--lr", "٠.١"], "`--lr` must be a number written in ASCII digits"),
    ("evaluate", ["RUN", "--beam", "٣"], "`--beam` must be an integer written in ASCII digits"),
    ("sample", ["RUN", "--length", "٣"], "`--length` must be an integer from 0 to 1,000,000; "
                                         "got '٣'"),
    ("reproduce", ["--jobs", "٣"], "`--jobs` must be an integer written in ASCII digits"),
])  # fmt: skip
def test_digits_of_other_scripts_are_refused(command, argv, said):
    """int() and float() read any script's digits: `--hidden ٣` trained 3 units, `--T １２８`
    128 steps, without a word. rnnlab's numbers are typed in ASCII, as its RNNLAB_*
    variables already were (settings._count)."""
    assert said in refusal(command, *argv)


@pytest.mark.parametrize("option", ["--hidden", "--layers", "--T", "--embed"])
def test_an_integer_beyond_64_bits_is_one_line_naming_the_option(tmp_path, capsys, option):
    """`--hidden 10**400` reached the model as a Python int NumPy could not hold: a TypeError
    (`--layers` and `--T`: an OverflowError) and its traceback."""
    line = one_line(capsys, "train", "adding", option, str(10**400), "--run-dir", tmp_path / "r",
                    "--steps", 1, *TINY)  # fmt: skip
    assert f"`{option}` must be an integer of 64 bits (within ±9,223,372,036,854,775,807); " \
           "got '1000" in line and "... (401 characters)" in line  # fmt: skip
    assert not (tmp_path / "r").exists()


def test_an_integer_type_of_the_options_says_64_bits_too():
    said = refusal("sample", "RUN", "--seed", str(2**64))
    assert said.startswith("`--seed` must be a non-negative integer of 64 bits; got '1844")
    # (only then: a value out of the option's own range is said as before)
    assert refusal("sample", "RUN", "--top-k", "0").startswith(
        "`--top-k` must be a positive integer; got '0' instead."
    )


def test_what_python_and_toml_write_for_integers_is_still_read():
    args = parse("train", "adding", "--steps", "1_000", "--hidden", " 8 ")
    assert (args.steps, args.hidden) == (1000, 8)
    assert refusal("train", "adding", "--steps", "1.5") == \
        "argument --steps: invalid int value: '1.5' (see rnnlab train -h)"  # fmt: skip


@pytest.mark.parametrize("value", ["-1e5", "-1E-3", "-2.5e+1", "-1_000.5"])
def test_a_negative_number_in_exponent_form_is_a_value(value):
    """argparse reads only -5 and -.5 as negative numbers: `--forget-bias -1e5` was refused
    as "expected one argument", though the option takes any finite number."""
    assert parse("train", "adding", "--forget-bias", value).forget_bias == float(value)


def test_a_negative_infinity_is_a_value_the_setting_refuses_by_name(tmp_path, capsys):
    line = one_line(capsys, "train", "adding", "--lr", "-inf", "--run-dir", tmp_path / "r",
                    "--steps", 1, *TINY)  # fmt: skip
    assert "`--lr` must be a finite number > 0; got -inf" in line


# ------------------------------------------------------------------- spelling of options
@pytest.mark.parametrize("command,argv,meant", [
    ("train", ["adding", "--hid", "8"], "--hid: did you mean --hidden?"),
    ("train", ["adding", "--ste=3"], "--ste: did you mean --steps?"),
    ("train", ["adding", "--lay", "2"], "--lay: did you mean --layers or --layer-norm?"),
    ("sample", ["RUN", "--temp", "1"], "--temp: did you mean --temperature?"),
    ("export", ["RUN", "--form", "keras"], "--form: did you mean --format?"),
])  # fmt: skip
def test_a_prefix_of_an_option_is_refused_naming_the_option(command, argv, meant):
    """argparse took any unambiguous prefix (`--hid 8` was --hidden 8): a second spelling of
    each option, on the command line only (a --config file's keys are written in full), which
    the next option sharing the prefix breaks, or, named as the prefix, changes."""
    said = refusal(command, *argv)
    assert said.startswith(f"unrecognized arguments: {argv[1]}") and meant in said, said
    assert "options are written in full" in said


def test_a_prefix_is_refused_by_the_commands_that_parse_their_own_options(tmp_path):
    with pytest.raises(ValueError, match=r"--o: did you mean --out\?"):
        plot_cli.main([str(tmp_path), "--o", str(tmp_path / "png")])


def test_a_misspelt_option_is_said_with_the_nearest(capsys):
    line = one_line(capsys, "train", "adding", "--hiden", "8")
    assert "unrecognized arguments: --hiden 8 (--hiden: did you mean --hidden?" in line
    assert "(see rnnlab train -h)" in line


def test_a_value_that_begins_with_a_dash_is_said_with_its_spelling():
    """`--prime -x` was "argument --prime: expected one argument"."""
    assert refusal("sample", "RUN", "--prime", "-x") == (
        "`--prime` must be followed by its value; got '-x', which reads as an option (a value "
        "that begins with '-' is written --prime=-x) (see rnnlab sample -h)"
    )
    assert parse("sample", "RUN", "--prime=-x").prime == "-x"
    # a value left out before the next option is argparse's plain message
    assert "argument --length: expected one argument" in refusal("sample", "RUN", "--length",
                                                                 "--seed", 1)  # fmt: skip


def test_a_source_that_begins_with_a_dash_is_said_with_the_way_to_give_it(capsys):
    line = one_line(capsys, "translate", "RUN", "-three")
    assert "unrecognized arguments: -three (-three: an argument that begins with '-' is " \
           "written after --, as in `-- -three`)" in line  # fmt: skip
