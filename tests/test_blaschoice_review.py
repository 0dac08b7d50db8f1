"""Review of the BLAS choice (rnnlab._blaschoice) and the RNNLAB_* settings by use: a lock
held by a process that does not run, variable names in the wrong case, ..."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys

import pytest
from helpers import oracle

from rnnlab import _blaschoice, settings

HELD_LOCK_CHILD = """
import json, warnings
from rnnlab import _blaschoice
_blaschoice.LOCK_WAIT = 1.0
_blaschoice.library_files = lambda: ["/fake/libmkl_rt.so.2"]
_blaschoice._measure_in_child = lambda: {"mkl": [10.0, 50.0, 300.0], "numpy": [20.0, 90.0, 600.0]}
with warnings.catch_warnings(record=True) as said:
    warnings.simplefilter("always")
    made = _blaschoice.choice()
print(json.dumps({"blas": made.blas, "cache": made.cache,
                  "said": " ".join(str(w.message) for w in said)}))
"""


def test_a_lock_held_by_a_process_that_does_not_run_is_waited_for_a_while_only(tmp_path):
    """The lock beside the cache was taken with a blocking flock: where its holder did not
    run (stopped with Ctrl-Z mid-measurement, held in a debugger), every other process's first
    forward pass, and `rnnlab info`, waited for good. Now it waits LOCK_WAIT, says so and
    measures on its own. (The lock is held here; the waiter is a child, so a regression
    fails on the timeout instead of hanging the suite.)"""
    env = {k: v for k, v in os.environ.items() if k not in ("RNNLAB_BLAS", "RNNLAB_TILES")}
    env.update(RNNLAB_CACHE_DIR=str(tmp_path), RNNLAB_TILES="off")
    # the cache's name as the child will have it (its key is of its environment)
    code = "from rnnlab import _blaschoice; print(_blaschoice.cache_path())"
    got = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120, check=True)  # fmt: skip
    path = got.stdout.strip().splitlines()[-1]
    lock_path = os.path.join(os.path.dirname(path), "." + os.path.basename(path) + ".lock")
    with open(lock_path, "ab") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            done = subprocess.run([sys.executable, "-c", HELD_LOCK_CHILD], env=env,
                                  capture_output=True, text=True, timeout=60)  # fmt: skip
        except subprocess.TimeoutExpired:
            pytest.fail("waited for good on a lock whose holder does not run")
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["blas"] == "mkl" and result["cache"] == path
    assert "has held the BLAS choice's lock" in result["said"] and lock_path in result["said"]


@pytest.mark.parametrize(("name", "near"), [("rnnlab_blas", "RNNLAB_BLAS"),
                                            ("Rnnlab_Num_Threads", "RNNLAB_NUM_THREADS"),
                                            ("rnnlab_threads", "RNNLAB_NUM_THREADS")])  # fmt: skip
def test_a_variable_of_rnnlabs_in_the_wrong_case_is_warned_about(name, near):
    """Environment variables are case-sensitive: rnnlab_blas=mkl set nothing, and only a
    name spelt with RNNLAB_ in capitals was warned about."""
    with pytest.warns(UserWarning, match=f"{name} is not one of rnnlab's variables and is "
                                         f"ignored .did you mean {near}"):  # fmt: skip
        got = settings.read({name: "1"})
    assert got == settings.read({})  # (the defaults: nothing was set)


@pytest.mark.skipif(not _blaschoice.library_files(), reason="the mkl package")
def test_info_names_the_code_path_mkl_runs(tmp_path):
    """`rnnlab info` printed each loaded library's kernel from threadpoolctl, which names
    OpenBLAS's only: MKL's line had none, on the hosts where it matters most (MKL's AVX2 code
    on an AMD CPU with AVX-512, issue #21). Now MKL's own MKL_Get_Version says it: here held to
    AVX2, so it is MKL's code path and not the CPU's flags that is shown. (A child: MKL reads
    MKL_ENABLE_INSTRUCTIONS once, when it loads; nothing is measured with both choices set.)"""
    oracle("threadpoolctl")
    env = dict(os.environ, RNNLAB_BLAS="mkl", RNNLAB_TILES="off", MKL_ENABLE_INSTRUCTIONS="AVX2",
               RNNLAB_CACHE_DIR=str(tmp_path))  # fmt: skip
    done = subprocess.run([sys.executable, "-m", "rnnlab.cli", "info", "--json"], env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    mkl = [lib for lib in json.loads(done.stdout)["libraries"] if lib["internal_api"] == "mkl"]
    # What MKL itself says under that cap, asked in a child of the same environment: on an
    # Intel CPU its AVX2 code; on an AMD EPYC (Zen 4) MKL names no instruction set at all
    # ("Intel(R) Architecture processors", capped or not), and info says what MKL says.
    said = subprocess.run([sys.executable, "-c", "import ctypes; from rnnlab import _mkl, "
                           "_blaschoice; print(_mkl.code_path(ctypes.CDLL("
                           "_blaschoice.library_files()[0])))"], env=env, capture_output=True,
                          text=True, timeout=600).stdout.strip()  # fmt: skip
    assert said and said != "None"
    assert len(mkl) == 1 and mkl[0]["architecture"] == said
    if _blaschoice.cpu()["vendor"] == "GenuineIntel":
        assert "(Intel(R) AVX2) enabled processors" in said
    text = subprocess.run([sys.executable, "-m", "rnnlab.cli", "info"], env=env,
                          capture_output=True, text=True, timeout=600).stdout  # fmt: skip
    line = next(line for line in text.splitlines() if line.startswith("loaded: mkl "))
    assert f", kernel {said}" in line and "threading layer" in line


def test_an_mkl_that_does_not_load_is_said(tmp_path, monkeypatch):
    """The `mkl` package there and its library unusable (a broken or foreign installation):
    the products ran on NumPy's OpenBLAS without a word, under RNNLAB_BLAS=mkl too, while
    `rnnlab info` said "loops' BLAS: mkl"; measured, the choice said "the `mkl` package is
    not installed". Now the library's failure is warned about, and the measured choice says
    that MKL did not load."""
    from rnnlab import _mkl

    junk = tmp_path / "libmkl_rt.so.2"
    junk.write_text("not a library")
    monkeypatch.setattr(_blaschoice, "library_files", lambda: [str(junk)])
    with pytest.warns(UserWarning, match=r"the mkl package is installed, but its library "
                      r"cannot be used \('.*libmkl_rt.so.2' does not load: .*\); the "
                      "products run on NumPy's OpenBLAS"):  # fmt: skip
        assert _mkl._library.__wrapped__() is None  # (the process's loaded MKL kept as it is)
    made = _blaschoice.decide({"numpy": [20.0, 90.0, 600.0]})
    assert made.blas == "numpy"
    assert made.why == "the `mkl` package is installed, but MKL did not load to be measured"
    monkeypatch.setattr(_blaschoice, "library_files", lambda: [])
    assert _blaschoice.decide({"numpy": [20.0, 90.0, 600.0]}).why == (
        "the `mkl` package is not installed")
