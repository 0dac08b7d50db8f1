"""The command line's options under hostile values (review 130): what argparse took that
rnnlab did not mean (other scripts' digits, 400-digit integers, prefixes of options, empty
paths), what it refused that was meant (`--forget-bias -1e5`), and what it said in words a
user could not act on. Most cases only parse, so that a regression cannot start a run."""

from __future__ import annotations

import argparse
import re

import pytest

from rnnlab import tasks
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


# ------------------------------------------------------------------------------ paths
@pytest.mark.parametrize("command,argv,said", [
    ("train", ["adding", "--config", ""], "`--config` must be the path of a TOML file"),
    ("train", ["adding", "--run-dir", ""], "`--run-dir` must be the path of a directory"),
    ("train", ["--resume", ""], "`--resume` must be the path of a run directory"),
    ("demo", ["--run-dir", ""], "`--run-dir` must be the path of a directory"),
    ("evaluate", [""], "`run` must be the path of a run directory"),
    ("sample", [""], "`run` must be the path of a run directory"),
    ("export", [""], "`run` must be the path of a run directory"),
    ("translate", ["", "x"], "`run` must be the path of a run directory"),
    ("translate", ["RUN", "--file", ""], "`--file` must be the path of a file"),
])  # fmt: skip
def test_an_empty_path_is_refused(command, argv, said):
    """`--config ""`, `--run-dir ""` and `--resume ""` were read as not given (a run
    trained without its settings file, into runs/; a resume "needed a task"), and a run ''
    as the current directory ("'.', which has no config.json")."""
    got = refusal(command, *argv)
    assert got.startswith(said) and "(not empty); got '' instead." in got, got


def test_plot_refuses_an_empty_run_or_out(tmp_path, capsys):
    """plot's `--out ""` wrote the PNGs into RUN/plots, as if it were not given."""
    assert "`run` must be the path of a run directory (not empty)" in one_line(capsys, "plot", "")
    line = one_line(capsys, "plot", tmp_path, "--out", "")
    assert "`--out` must be the path of a directory (not empty); got ''" in line


@pytest.fixture(scope="module")
def adding_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "adding"
    assert main(["train", "adding", "--T", "5", "--steps", "2", "--eval-every", "2",
                 "--run-dir", str(run), *TINY]) == 0  # fmt: skip
    return run


def test_plot_out_below_a_file_names_the_option(adding_run, tmp_path, capsys):
    """It was "[Errno 20] Not a directory: ..." (the folder made under --out)."""
    (tmp_path / "file").write_text("x")
    line = one_line(capsys, "plot", adding_run, "--out", tmp_path / "file" / "plots")
    assert re.search(
        r"`--out` must be a directory \(new or existing\) for the PNGs that rnnlab "
        r"can write into; got '.*file/plots' \(Not a directory: ",
        line,
    ), line


@pytest.mark.parametrize("option,value,said", [
    ("--steps", "0", "`--steps` must be a positive integer; got 0"),
    ("--time-limit", "-1", "`--time-limit` must be a finite number of seconds >= 0"),
    ("--time-limit", "nan", "`--time-limit` must be a finite number of seconds >= 0"),
])  # fmt: skip
def test_a_resume_names_the_option_it_refuses(adding_run, capsys, option, value, said):
    """A resume's --steps and --time-limit were refused as `steps` and `time_limit`, the
    names of config.json, which the user had not typed."""
    assert said in one_line(capsys, "train", "--resume", adding_run, option, value, "--quiet")


def test_demo_time_limit_is_checked_as_an_option():
    """It was refused by TrainConfig as `time_limit`, after the option was read."""
    assert refusal("demo", "--time-limit", "-1").startswith(
        "`--time-limit` must be a finite number of seconds >= 0 (0: none); got '-1' instead."
    )
    assert parse("demo").time_limit == 120.0


# ------------------------------------------------------------------------------- help
def _own_parsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    found = {name: _command_parser(parser, name)
             for name in ("train", "demo", "evaluate", "sample", "translate", "export",
                          "reproduce")}  # fmt: skip
    captured: list[argparse.ArgumentParser] = []

    class Stop(Exception):
        pass

    def capture(self, args=None, namespace=None):
        captured.append(self)
        raise Stop

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("rnnlab._argparse.Parser.parse_args", capture)
        with pytest.raises(Stop):
            plot_cli.main([])
    found["plot"] = captured[0]
    return found


@pytest.mark.parametrize("command", ["train", "demo", "evaluate", "sample", "translate",
                                     "export", "reproduce", "plot"])  # fmt: skip
def test_every_default_is_said_in_the_help(command):
    """A default that --help does not state is one the user cannot know: sample's --length
    (400), export's --format (onnx) and demo's --time-limit (120) said none."""
    for action in _own_parsers()[command]._actions:
        value = action.default
        if value in (None, argparse.SUPPRESS) or isinstance(value, bool) or not action.help:
            continue
        if isinstance(action, argparse._HelpAction):
            continue
        text = f"{value:g}" if isinstance(value, float) else str(value)
        name = action.option_strings or action.dest
        assert "default" in action.help and re.search(
            rf"(?<![\w.]){re.escape(text)}(?![\w.])", action.help
        ), (name, value, action.help)


def test_the_time_limit_help_names_the_tasks_with_their_own():
    """`rnnlab train charlm` stops after 1140 s unless told otherwise: the help says which
    tasks have a time limit of their own, checked against the tasks' defaults."""
    said = next(a.help for a in _command_parser(build_parser(), "train")._actions
                if a.dest == "time_limit")  # fmt: skip
    named = {t for t in tasks.TASK_NAMES if re.search(rf"\b{t}\b", said)}
    assert named == {t for t in tasks.TASK_NAMES if tasks.defaults(t).get("time_limit", 0) > 0}


def test_a_configuration_file_s_integers_are_bounded_as_the_command_line_s(tmp_path, capsys):
    """A TOML file's integers have no bound: hidden = 10^400 ended in a traceback from NumPy
    (`reset_parameters`' sqrt), a batch_size of 2^63 − 1 in NumPy's "array is too big" after
    the run directory was made. Both are one line naming the file's setting now, before the
    run directory; a number whose digits Python will not print is described by its size."""
    from rnnlab import _checks
    from rnnlab.train import TrainConfig

    run = tmp_path / "r"
    for line, said in ((f"hidden = 1{'0' * 400}", "`hidden` must be an integer of 64 bits"),
                       (f"batch_size = {2**63 - 1}", "`batch_size` must be a size whose "
                        "recurrent states (batch_size × hidden × layers float32 values, for "
                        "one step alone) fit in the memory available")):  # fmt: skip
        config = tmp_path / "c.toml"
        config.write_text(f'task = "adding"\n{line}\n')
        assert main(["train", "--config", str(config), "--run-dir", str(run), "--quiet"]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"rnnlab: error: {config}: {said}"), err
        assert err.count("\n") == 1 and not run.exists()
    line = one_line(capsys, "train", "adding", "--layers", 10**13, "--run-dir", run)
    assert "`--layers` must be a size whose recurrent weights" in line  # (not --hidden's)
    for option, task in (("--attention-size", "numbers"), ("--source-conv", "caption")):
        extra = ["--attention", "additive"] if option == "--attention-size" else []
        line = one_line(capsys, "train", task, option, 2**62, *extra, "--run-dir", run)
        assert f"`{option}` must be a size whose" in line and not run.exists()
    line = one_line(capsys, "train", "adding", "--batch-size", 10**13, "--run-dir", run)
    assert "`--batch-size` must be a size whose recurrent states" in line and not run.exists()
    with pytest.raises(ValueError, match=r"`T` must be an integer of 64 bits .*; got an integer "
                       r"of about 5,001 digits \(int\) instead"):  # fmt: skip
        TrainConfig(T=10**5000).validate()
    assert _checks.describe(-(10**5000)) == "an integer of about 5,001 digits (int)"


def test_a_task_s_refusal_of_a_config_file_setting_names_the_file(tmp_path, capsys):
    """A task's own refusal (adding's T ≥ 2) of a value from --config was said as a bare
    `T`, while TrainConfig's refusals of the file's values name the file; the same value on
    the command line is `--T`, and the option beside the file wins (and is named)."""
    run = tmp_path / "r"
    config = tmp_path / "c.toml"
    config.write_text('task = "adding"\nT = 1\n')
    assert main(["train", "--config", str(config), "--run-dir", str(run), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err == (f"rnnlab: error: {config}: `T` must be at least 2 (one marker in each "
                   "half); got 1 instead.\n"), err
    line = one_line(capsys, "train", "--config", config, "--T", 1, "--run-dir", run)
    assert line.startswith("rnnlab: error: `--T` must be at least 2") and not run.exists()


@pytest.mark.parametrize("argv", [["tasks"], ["evaluate", "RUN"], ["sample", "RUN"],
                                  ["translate", "RUN", "text"], ["info"]])  # fmt: skip
def test_a_command_whose_results_are_its_stdout_refuses_a_closed_stdout(argv, monkeypatch,
                                                                        capsys):  # fmt: skip
    """`rnnlab tasks >&-`: Python's sys.stdout is None and print() writes nothing and raises
    nothing: the command ended with status 0 and had given nothing. Refused now, before any
    work (the run named here need not exist), in one line."""
    monkeypatch.setattr("sys.stdout", None)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err == (f"rnnlab: error: `rnnlab {argv[0]}` prints its results on stdout, which is "
                   "closed; give it a file (> out.txt), or /dev/null to discard them\n")


def test_a_command_whose_results_are_files_runs_with_stdout_closed(monkeypatch, capsys):
    """train writes its run directory (the report on stdout is a summary of it): a closed
    stdout does not stop it, nor `--help` anywhere."""
    from rnnlab import cli

    monkeypatch.setattr("sys.stdout", None)
    assert not cli._stdout_closed("train", ["adding"])
    assert not cli._stdout_closed("tasks", ["--help"])
    assert capsys.readouterr().err == ""
