"""The README's Python examples run as written (they are the documentation users copy)."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)


def test_readme_has_examples():
    assert len(BLOCKS) >= 3


def test_readme_examples_run(capsys):
    namespace: dict = {}
    for block in BLOCKS:
        exec(compile(block, str(README), "exec"), namespace)  # noqa: S102
    out = capsys.readouterr().out
    assert "(4, 10, 32)" in out and "True" in out


TEST_COMMAND = "pip install -e '.[test]' && .venv/bin/python -m pytest -q -n 2 --dist loadfile"


@pytest.mark.parametrize("command", [TEST_COMMAND])
def test_ci_runs_the_readme_test_command(command):
    ci = (README.parent / ".ci" / "run").read_text()
    assert command in README.read_text() and command in ci
