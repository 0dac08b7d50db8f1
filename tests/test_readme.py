"""The README's Python examples run as written (they are the documentation users copy), the
commands of the README and the guides in docs/ name commands and options that exist, and the
outputs docs/gradients.md shows are what its commands print."""

import contextlib
import io
import re
import subprocess
import sys
from pathlib import Path

import pytest

from rnnlab.cli import main

README = Path(__file__).resolve().parent.parent / "README.md"
DOCS = README.parent / "docs"
GUIDES = [README] + [DOCS / f"{n}.md" for n in ("gradients", "seq2seq", "distributed", "results",
                                                  "notes")]
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)


def test_readme_has_examples():
    assert len(BLOCKS) >= 3


def test_readme_examples_run(capsys):
    namespace: dict = {}
    for block in BLOCKS:
        exec(compile(block, str(README), "exec"), namespace)  # noqa: S102
    out = capsys.readouterr().out
    assert "(4, 10, 32)" in out and "True" in out
    assert "(2, 5, 3)" in out and "(10,)" in out  # the output-feedback and generation example


TEST_COMMAND = "pip install -e '.[test]' && .venv/bin/python -m pytest -q -n 2 --dist loadfile"


@pytest.mark.parametrize("command", [TEST_COMMAND])
def test_ci_runs_the_readme_test_command(command):
    ci = (README.parent / ".ci" / "run").read_text()
    assert command in README.read_text() and command in ci


def _command_lines(path):
    """(subcommand, options) of every `rnnlab SUB ...` in the file's fenced blocks, comments
    (`# ...`) and redirections left out."""
    found, fence = [], None
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            fence = line[3:].strip() if fence is None else None
            continue
        if fence in ("", "sh"):
            if line.lstrip().startswith("#"):
                continue
            line = line.split(" # ")[0]
            for sub, rest in re.findall(r"(?<![\w./-])rnnlab ([a-z][\w-]*)([^;|>]*)", line):
                found.append((sub, re.findall(r"(?<!\S)(--[a-z][\w-]*)", rest)))
    return found


def _help(sub):
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
        main([sub, "--help"])  # argparse exits; the delegated commands return
    assert out.getvalue().startswith(f"usage: rnnlab {sub}"), out.getvalue()
    return out.getvalue()


def test_documented_commands_name_real_options():
    """A renamed or removed option (or command) in a documented command line fails here:
    each option of each `rnnlab SUB ...` shown in the README and the guides is in SUB's
    --help."""
    helps: dict[str, str] = {}
    seen = 0
    for path in GUIDES:
        for sub, options in _command_lines(path):
            if sub not in helps:
                helps[sub] = _help(sub)
            for option in options:
                assert re.search(rf"{re.escape(option)}(?![\w-])", helps[sub]), (
                    f"{path.name}: `rnnlab {sub} {option}` is not in `rnnlab {sub} --help`"
                )
                seen += 1
    assert {"train", "gradflow", "reproduce", "translate", "evaluate", "plot"} <= set(helps)
    assert seen > 100


def _shown_outputs():
    """docs/gradients.md's blocks that show a fresh model's command and what it printed."""
    text = (DOCS / "gradients.md").read_text(encoding="utf-8")
    shown = re.findall(r"```\n(rnnlab gradflow (?:adding|dynamics) [^\n]*)\n(.+?)```", text, re.S)
    # the dynamics map's command is in the prose above its output
    dynamics = re.search(r"```\n(dynamics: .+?)```", text, re.S)
    assert dynamics is not None
    shown.append(("rnnlab gradflow dynamics --w 2 --b 0", dynamics.group(1)))
    return shown


@pytest.mark.parametrize("command, output", _shown_outputs(), ids=["rnn", "irnn", "dynamics"])
def test_gradients_doc_shows_what_its_commands_print(command, output, tmp_path):
    """Each verdict line the page shows (its `...` standing for text left out) is printed
    by the command above it, on a fresh model: the page's figures are the code's."""
    argv = command.split()[1:]
    argv = argv[: argv.index("--out")] if "--out" in argv else argv
    run = subprocess.run([sys.executable, "-m", "rnnlab", *argv, "--out", str(tmp_path)],
                         capture_output=True, text=True, check=True)  # fmt: skip
    lines = [ln for ln in output.strip().splitlines()]
    assert lines
    for line in lines:
        pieces = [p.strip() for p in re.split(r"\(?\.\.\.\)?", line) if p.strip()]
        at = 0
        for piece in pieces:
            found = run.stdout.find(piece, at)
            assert found >= 0, f"{command}: {piece!r} not in its output:\n{run.stdout}"
            at = found + len(piece)


def test_gradients_doc_irnn_probe_table(capsys):
    """The IRNN's first steps with and without clipping: the page's script prints the
    losses and shares of active units its table gives."""
    text = (DOCS / "gradients.md").read_text(encoding="utf-8")
    (script,) = re.findall(r"```python\n(.*?)```", text, re.S)
    exec(compile(script, "docs/gradients.md", "exec"), {})  # noqa: S102
    printed = {}
    for line in capsys.readouterr().out.splitlines():
        clip, step, loss, _, on, _ = line.split()
        printed[clip, int(step)] = (loss, f"{round(float(on) * 100)}%")
    cell = r"([^,]+), [^,]+, (\d+%)"  # loss, ‖g_rnn‖, share of h > 0
    rows = re.findall(rf"^\| (\d) \| {cell} \| {cell} \|$", text, re.M)
    assert len(rows) == 6
    for step, loss_none, on_none, loss_clip, on_clip in rows:
        assert printed["none", int(step)] == (loss_none, on_none)
        assert printed["global_norm", int(step)] == (loss_clip, on_clip)


def test_every_option_has_help():
    """The README: "Every option has `--help`": each option of each command says what it
    does in its --help (a bare `--split {valid,test}` does not)."""
    import argparse

    from rnnlab.bench.cli import build_parser as bench_parser
    from rnnlab.cli import _command_parser, build_parser
    from rnnlab.cli.gradflow import build_parser as gradflow_parser

    top = build_parser()
    (commands,) = [a for a in top._actions if isinstance(a, argparse._SubParsersAction)]
    parsers = {name: _command_parser(top, name) for name in commands.choices}
    parsers.update(bench=bench_parser(), gradflow=gradflow_parser())
    bare = [
        f"rnnlab {name} {action.option_strings[0]}"
        for name, parser in parsers.items()
        for action in parser._actions
        if action.option_strings and action.dest != "help" and not action.help
    ]
    assert bare == []
    assert {"train", "demo", "evaluate", "sample", "gradflow"} <= set(parsers)
