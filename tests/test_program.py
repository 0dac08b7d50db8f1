"""The `rnnlab` program's start (rnnlab.__main__): a Ctrl-C or SIGTERM while Python imports
NumPy and the command's modules ends it in one line, exit status 130 or 143, as the
commands end on them, and the package's lazy names (rnnlab/__init__.py) that let it.

The signal is sent by the process itself at a named import (a finder first on
sys.meta_path), so it lands inside the import every time: no sleep, no race with a
process started in the background."""

import os
import signal
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from rnnlab.cli import EXIT_INTERRUPTED, EXIT_TERMINATED

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "src")}

# What pip writes for a console script of [project.scripts] (.venv/bin/rnnlab).
PIP_SCRIPT = """\
import re
import sys
from {module} import {function}
if __name__ == '__main__':
    sys.argv[0] = re.sub(r'(-script\\.pyw|\\.exe)?$', '', sys.argv[0])
    sys.exit({function}())
"""

# Run as `python -c`: sends this process `signum` when `module` is first imported, then
# starts the program as `how` says (the script's file run as __main__, or `-m rnnlab`).
SIGNAL_AT_IMPORT = """\
import os, runpy, sys

class SignalAt:
    def find_spec(self, name, path=None, target=None):
        if name == {module!r}:
            sys.meta_path.remove(self)
            os.kill(os.getpid(), {signum})
        return None

sys.meta_path.insert(0, SignalAt())
if {script!r}:
    sys.argv = [{script!r}, *{argv!r}]
    runpy.run_path({script!r}, run_name="__main__")
else:
    sys.argv = ["rnnlab", *{argv!r}]
    runpy.run_module("rnnlab", run_name="__main__", alter_sys=True)
"""


def _script(tmp_path: Path) -> str:
    """The `rnnlab` script pip makes of pyproject.toml's entry point (the installed one may
    be of an older entry, until `pip install -e .` makes it again)."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    module, function = config["project"]["scripts"]["rnnlab"].split(":")
    path = tmp_path / "rnnlab"
    path.write_text(PIP_SCRIPT.format(module=module, function=function), encoding="utf-8")
    return str(path)


def _signalled(tmp_path: Path, how: str, module: str, signum: int,
               *argv: str) -> subprocess.CompletedProcess:  # fmt: skip
    script = _script(tmp_path) if how == "script" else ""
    code = SIGNAL_AT_IMPORT.format(module=module, signum=int(signum), script=script,
                                   argv=list(argv))  # fmt: skip
    return subprocess.run([sys.executable, "-c", code], env=ENV, capture_output=True,
                          text=True, timeout=120)  # fmt: skip


@pytest.mark.parametrize("how", ["script", "python -m rnnlab"])
@pytest.mark.parametrize("module", ["numpy", "rnnlab.cli.train"])  # the first and a late one
@pytest.mark.parametrize(
    "signum,code,said",
    [(signal.SIGINT, EXIT_INTERRUPTED, "rnnlab: interrupted\n"),
     (signal.SIGTERM, EXIT_TERMINATED, "rnnlab: terminated by SIGTERM\n")],
)  # fmt: skip
def test_a_signal_while_the_program_imports_ends_it_in_one_line(tmp_path, how, module, signum,
                                                                code, said):  # fmt: skip
    """Before: a Ctrl-C printed KeyboardInterrupt's traceback through the imports (and the
    process died of SIGINT), a SIGTERM killed it (status -15, not the 143 of a stop)."""
    done = _signalled(tmp_path, how, module, signum, "tasks")
    assert (done.returncode, done.stderr, done.stdout) == (code, said, ""), done.stderr


def test_the_command_s_own_handling_follows_the_start(tmp_path):
    """Once the command's modules are imported, SIGTERM is given back: a command that does
    not train dies of it as before (training takes it over itself), and a Ctrl-C is the
    command's "rnnlab: interrupted"."""
    done = _signalled(tmp_path, "script", "rnnlab.info", signal.SIGTERM, "info")
    assert done.returncode == -signal.SIGTERM and done.stderr == "", done.stderr
    done = _signalled(tmp_path, "script", "rnnlab.info", signal.SIGINT, "info")
    assert (done.returncode, done.stderr) == (EXIT_INTERRUPTED, "rnnlab: interrupted\n")


def test_the_program_s_own_import_is_the_standard_library_s():
    """What runs before `run` holds the signals: rnnlab.__main__ and rnnlab itself, nothing of
    NumPy's or of the command's (~0.3 s, where 2 ms were left)."""
    code = ("import sys, rnnlab.__main__; print(sorted(m for m in sys.modules "
            "if m.split('.')[0] in ('numpy', 'numba', 'rnnlab')))")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code], env=ENV, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout == "['rnnlab', 'rnnlab.__main__']\n"


def test_the_package_s_names_are_what_they_were_when_imported_at_once():
    """rnnlab's names load when first asked for; in a fresh process, whatever comes first:
    `rnnlab.gradcheck` is the function even where its module was imported before any name
    (the import system binds a submodule to its package), a submodule the names brought is
    there (`rnnlab.cells`), and `from rnnlab import *` gives every name."""
    code = """if True:
        import rnnlab.gradcheck as first
        import rnnlab
        from rnnlab.gradcheck import GradcheckReport
        assert first is rnnlab.gradcheck and callable(first), first
        ns = {}
        exec("from rnnlab import *", ns)
        assert set(rnnlab.__all__) <= set(ns) and ns["gradcheck"] is first, sorted(ns)
        assert ns["GradcheckReport"] is GradcheckReport
        import rnnlab.layers
        assert rnnlab.LSTM is rnnlab.layers.LSTM and rnnlab.cells.LSTMCell
        assert set(rnnlab.__all__) <= set(dir(rnnlab))
        try:
            rnnlab.no_such_name
        except AttributeError as e:
            assert "no attribute 'no_such_name'" in str(e)
        else:
            raise AssertionError("no AttributeError")
        print("ok")
    """
    done = subprocess.run([sys.executable, "-c", code], env=ENV, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert (done.returncode, done.stdout) == (0, "ok\n"), done.stderr


def test_a_name_no_submodule_can_have_is_no_attribute_and_imports_nothing():
    """A name that is not an identifier ('a.b', '.x', 'cells.nope') names no submodule of
    rnnlab: getattr's default comes back, as for any missing attribute. Before: __getattr__
    handed it to importlib, whose ModuleNotFoundError for 'rnnlab.a' escaped getattr(rnnlab,
    'a.b', None), and 'cells.nope' imported rnnlab.cells on the way to the default."""
    code = """if True:
        import sys
        import rnnlab
        for name in ("a.b", ".x", "cells.nope", "layers.LSTM", "", "a-b"):
            assert getattr(rnnlab, name, "default") == "default", name
            assert not hasattr(rnnlab, name), name
        assert "rnnlab.cells" not in sys.modules and "rnnlab.layers" not in sys.modules
        assert rnnlab.cells.LSTMCell  # (an identifier: the submodule, as before)
        print("ok")
    """
    done = subprocess.run([sys.executable, "-c", code], env=ENV, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert (done.returncode, done.stdout) == (0, "ok\n"), done.stderr


def test_only_the_submodules_the_names_brought_come_by_attribute():
    """`import rnnlab` bound the submodules that importing its names brought (rnnlab.cells,
    rnnlab.layers, ...); those come on first access as before, and no other name imports
    anything: `rnnlab.diagnostics` without an import is an AttributeError as it was (the
    lazy __getattr__ imported any submodule a name happened to match), `from rnnlab import
    diagnostics` still imports it, and dir() lists what it did, without this file's helpers
    (TYPE_CHECKING, annotations)."""
    code = """if True:
        import sys
        import rnnlab
        assert getattr(rnnlab, "diagnostics", None) is None
        assert "rnnlab.diagnostics" not in sys.modules
        names = [n for n in dir(rnnlab) if not n.startswith("_")]
        assert "TYPE_CHECKING" not in names and "annotations" not in names, names
        for sub in ("cells", "fast", "layers", "modules", "ops", "recurrence", "settings"):
            assert sub in names, sub
            assert getattr(rnnlab, sub) is sys.modules["rnnlab." + sub], sub
        from rnnlab import diagnostics
        assert rnnlab.diagnostics is diagnostics
        print("ok")
    """
    done = subprocess.run([sys.executable, "-c", code], env=ENV, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert (done.returncode, done.stdout) == (0, "ok\n"), done.stderr


def test_the_package_s_three_lists_of_its_names_agree():
    """__all__, the homes _load imports the names from, and the imports mypy reads under
    TYPE_CHECKING list the same names: one changed alone would leave a name that loads but
    is not typed, or typed but never bound. The submodules named for attribute access are
    all there."""
    import ast
    import importlib

    import rnnlab

    tree = ast.parse(Path(rnnlab.__file__).read_text(encoding="utf-8"))
    typed = {alias.asname or alias.name
             for node in ast.walk(tree) if isinstance(node, ast.If)
             and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"
             for stmt in node.body if isinstance(stmt, ast.ImportFrom)
             and (stmt.module or "").startswith("rnnlab.")
             for alias in stmt.names}  # fmt: skip
    homes = {name for names in rnnlab._HOMES.values() for name in names}
    assert set(rnnlab.__all__) == homes == typed
    for sub in rnnlab._SUBMODULES:
        importlib.import_module(f"rnnlab.{sub}")


@pytest.mark.parametrize("first", ["cells", "_checks", "fast.loops", "layers", "io", "cli"])
def test_any_submodule_imports_first_in_a_fresh_process(first):
    """A module imported before any of the package's names (each one's `from rnnlab import
    _checks` asks the package's __getattr__ while the names are not loaded): the submodule
    comes alone, not the names, whose import would meet the half-made module (a circular
    ImportError from rnnlab.cells, found by test_fast's cache-key test)."""
    code = f"import rnnlab.{first}\nimport rnnlab\nassert rnnlab.LSTM\nprint('ok')\n"
    done = subprocess.run([sys.executable, "-c", code], env=ENV, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert (done.returncode, done.stdout) == (0, "ok\n"), done.stderr
