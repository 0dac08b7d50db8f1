"""The house's rules, checked as code: the import contracts of pyproject.toml
([tool.importlinter]: no import cycle among the siblings of any package, the floors of
docs/design.md, nothing below the command line imports it) and the type checker on the
modules [tool.mypy] lists (--strict). A new cycle or a type error fails here, in CI."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(argv: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def _tool(name: str) -> str:
    tool = shutil.which(name) or str(Path(sys.executable).parent / name)
    if not Path(tool).exists():
        if os.environ.get("CI"):
            pytest.fail(f"{name} is not installed; it is in the test extra")
        pytest.skip(f"{name} is not installed (it is in the test extra)")
    return tool


def test_import_contracts_hold(tmp_path):
    done = _run([_tool("lint-imports"), "--no-cache"], tmp_path)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "3 kept, 0 broken" in done.stdout, done.stdout[-2000:]


def test_strict_modules_type_check(tmp_path):
    pytest.importorskip("mypy", reason="mypy is in the test extra")
    done = _run([sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / "cache")], tmp_path)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert done.stdout.startswith("Success"), done.stdout[-2000:]


def test_the_contracts_catch_a_cycle(tmp_path):
    """The acyclic contract is not vacuous: the same configuration fails on a copy of the
    package with one more import, rnnlab.ops importing rnnlab.train (which imports ops)."""
    copy = tmp_path / "src"
    skip = shutil.ignore_patterns("__pycache__", "*.so", "*.nbi", "*.nbc")
    shutil.copytree(ROOT / "src" / "rnnlab", copy / "rnnlab", ignore=skip)
    ops = copy / "rnnlab" / "ops.py"
    ops.write_text(ops.read_text(encoding="utf-8") + "\n\ndef _cycle():\n"
                   "    from rnnlab import train  # noqa: F401\n", encoding="utf-8")  # fmt: skip
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    env = {**os.environ, "PYTHONPATH": str(copy)}
    done = subprocess.run([_tool("lint-imports"), "--no-cache"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode != 0
    assert "No import cycles among the siblings of any rnnlab package BROKEN" in done.stdout, (
        done.stdout[-3000:]
    )


def test_the_floors_catch_an_import_that_goes_up(tmp_path):
    """The layers contract is not vacuous either: a cell that imports the layer which stacks
    it (rnnlab.cells.base importing rnnlab.layers) breaks the floors."""
    copy = tmp_path / "src"
    skip = shutil.ignore_patterns("__pycache__", "*.so", "*.nbi", "*.nbc")
    shutil.copytree(ROOT / "src" / "rnnlab", copy / "rnnlab", ignore=skip)
    base = copy / "rnnlab" / "cells" / "base.py"
    base.write_text(base.read_text(encoding="utf-8") + "\n\ndef _up():\n"
                    "    from rnnlab import layers  # noqa: F401\n", encoding="utf-8")  # fmt: skip
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    env = {**os.environ, "PYTHONPATH": str(copy)}
    done = subprocess.run([_tool("lint-imports"), "--no-cache"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode != 0
    assert "The floors of the house" in done.stdout and "BROKEN" in done.stdout, (
        done.stdout[-3000:]
    )
    assert "rnnlab.cells.base -> rnnlab.layers" in done.stdout, done.stdout[-3000:]
