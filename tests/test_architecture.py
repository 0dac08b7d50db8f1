"""The house's rules, checked as code: the import contracts of pyproject.toml
([tool.importlinter]: no import cycle among the siblings of any package, the floors of
docs/design.md, nothing below the command line imports it) and the type checker over all of
src/rnnlab ([tool.mypy]: --strict but for the modules its override lists, whose unannotated
functions are checked all the same). A new cycle or a type error fails here, in CI."""

import os
import shutil
import subprocess
import sys
import tomllib
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


def _mypy(cwd: Path, src: Path, cache: Path) -> subprocess.CompletedProcess:
    if not os.environ.get("CI"):
        pytest.importorskip("mypy", reason="mypy is in the test extra")
    env = {**os.environ, "PYTHONPATH": str(src)}
    return subprocess.run([sys.executable, "-m", "mypy", "--cache-dir", str(cache)], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=900)  # fmt: skip


def _not_strict() -> list[str]:
    """The modules [tool.mypy]'s override checks without the strict flags."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["mypy"]
    (relaxed,) = [o for o in config["overrides"] if o.get("disallow_untyped_defs") is False]
    return relaxed["module"]


def test_the_package_type_checks(tmp_path):
    """mypy over all of src/rnnlab, as configured in pyproject.toml."""
    done = _mypy(ROOT, ROOT / "src", tmp_path / "cache")
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert done.stdout.startswith("Success"), done.stdout[-2000:]


def test_the_type_check_catches_errors(tmp_path):
    """The type check is not vacuous: the same configuration fails on a copy of the package
    with two errors put in, and names both. One is in the body of an unannotated function of
    a module the override lists (check_untyped_defs reads it), the other is a function without
    annotations in a strict module (which the listed modules may have)."""
    relaxed = _not_strict()
    assert "rnnlab.ops" not in relaxed, relaxed
    one = relaxed[0].removeprefix("rnnlab.").replace(".", "/")
    one += "/__init__.py" if (ROOT / "src" / "rnnlab" / one).is_dir() else ".py"
    copy = _copy_of_the_package(tmp_path)
    # (file, the text appended, the line of it the error is on, the error's code)
    injected = [
        (one, "def _injected_body(a):\n    return len(a) + 'one'\n", 2, "[operator]"),
        ("ops.py", "def _injected_untyped(a):\n    return a\n", 1, "[no-untyped-def]"),
    ]
    expected = []
    for name, text, line, code in injected:
        path = copy / "rnnlab" / name
        lines = path.read_text(encoding="utf-8").splitlines() + ["", ""] + text.splitlines()
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        at = len(lines) - len(text.splitlines()) + line
        expected.append((f"src/rnnlab/{name}:{at}: error:", code))
    done = _mypy(tmp_path, copy, tmp_path / "cache")
    assert done.returncode != 0, done.stdout[-2000:]
    for where, code in expected:
        assert any(e.startswith(where) and e.endswith(code) for e in done.stdout.splitlines()), (
            where, code, done.stdout[-4000:]
        )


def _copy_of_the_package(tmp_path: Path) -> Path:
    """src/rnnlab and pyproject.toml copied under tmp_path (compiled caches left out): the
    source root of the copy."""
    copy = tmp_path / "src"
    skip = shutil.ignore_patterns("__pycache__", "*.so", "*.nbi", "*.nbc")
    shutil.copytree(ROOT / "src" / "rnnlab", copy / "rnnlab", ignore=skip)
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return copy


def _lint_a_copy_with(tmp_path: Path, module: str, statement: str) -> subprocess.CompletedProcess:
    """import-linter, as configured, over a copy of the package whose `module` (a path under
    rnnlab/) ends with a function holding the import `statement`."""
    copy = _copy_of_the_package(tmp_path)
    path = copy / "rnnlab" / module
    path.write_text(path.read_text(encoding="utf-8") + "\n\ndef _injected():\n"
                    f"    {statement}  # noqa: F401\n", encoding="utf-8")  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(copy)}
    return subprocess.run([_tool("lint-imports"), "--no-cache"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip


def test_the_contracts_catch_a_cycle(tmp_path):
    """The acyclic contract is not vacuous: the same configuration fails on a copy of the
    package with one more import, rnnlab.ops importing rnnlab.train (which imports ops)."""
    done = _lint_a_copy_with(tmp_path, "ops.py", "from rnnlab import train")
    assert done.returncode != 0
    assert "No import cycles among the siblings of any rnnlab package BROKEN" in done.stdout, (
        done.stdout[-3000:]
    )


def test_the_floors_catch_an_import_that_goes_up(tmp_path):
    """The layers contract is not vacuous either: a cell that imports the layer which stacks
    it (rnnlab.cells.base importing rnnlab.layers) breaks the floors."""
    done = _lint_a_copy_with(tmp_path, "cells/base.py", "from rnnlab import layers")
    assert done.returncode != 0
    assert "The floors of the house" in done.stdout and "BROKEN" in done.stdout, (
        done.stdout[-3000:]
    )
    assert "rnnlab.cells.base -> rnnlab.layers" in done.stdout, done.stdout[-3000:]
