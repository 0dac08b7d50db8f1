"""rnnlab's forced LLVM vector width (rnnlab.fast.kernels.llvm_options) applies to rnnlab's
own kernels only, and compiling them prints nothing: the child processes below force it with
RNNLAB_VECTOR_WIDTH=16 (what an AVX-512 host does unasked) on an empty numba cache, and compile
a numba function of the "user's" before and after rnnlab's kernels."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from rnnlab import fast

if not fast.available():
    pytest.skip("numba is not installed: no compiled kernels", allow_module_level=True)

from rnnlab.fast import kernels  # noqa: E402

CHILD = r"""
import json, re, sys
import numpy as np
from numba import njit

def widths(dispatcher):
    ir = "".join(dispatcher.inspect_llvm().values())
    return sorted(set(re.findall(r"<(\d+) x float>", ir)), key=int)

def users_function():
    @njit
    def f(x, out):
        for j in range(x.shape[0]):
            out[j] = x[j] * np.float32(2.0) + np.float32(1.0)
    x = np.zeros(64, np.float32)
    f(x, x.copy())
    return widths(f)

out = {"user_before": users_function()}
from rnnlab.fast import kernels
x = np.linspace(-3, 3, 100).astype(np.float32)
kernels.tanh_into(x, np.empty_like(x))
# a kernel whose loops LLVM cannot all vectorise: each is a "loop not vectorized" remark
a = np.zeros((2, 4), np.float32)
kernels.keep_valid_rows(a, a.copy(), np.ones((3, 2), bool), True, 0, 0, 2)
out["width"] = kernels.VECTOR_WIDTH
out["hits"] = sum(kernels.tanh_into._cache_hits.values())
if "compiled" in sys.argv:  # a fresh compile: its IR is there to read
    out["kernel"] = widths(kernels.tanh_into)
out["user_after"] = users_function()
print(json.dumps(out))
"""


def _child(cache, width: str, *args: str) -> tuple[dict, str]:
    env = {**os.environ, "RNNLAB_VECTOR_WIDTH": width, "NUMBA_CACHE_DIR": str(cache)}
    env.pop("RNNLAB_NO_NUMBA", None)
    run = subprocess.run([sys.executable, "-c", CHILD, *args], env=env, capture_output=True,
                         text=True, timeout=600)  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout), run.stderr


def test_the_forced_width_is_rnnlabs_alone_and_prints_nothing(tmp_path):
    """Forced to 16 lanes, rnnlab's kernel is 16 lanes wide; a user's numba function compiled
    after it gets LLVM's own choice, as one compiled before it did; and LLVM's remarks on the
    loops it could not vectorise at that width (printed before to stderr, ~40 for an LSTM)
    are not printed."""
    out, err = _child(tmp_path, "16", "compiled")
    assert out["width"] == 16
    assert out["kernel"] == ["16"]
    assert out["user_after"] == out["user_before"], out
    assert "remark" not in err and "not vectorized" not in err, err


def test_code_compiled_at_one_width_is_not_loaded_at_another(tmp_path):
    """The forced width is part of the kernels' cache key: a process that asks for LLVM's
    choice (RNNLAB_VECTOR_WIDTH=default) compiles afresh instead of loading 16-lane code."""
    first, _ = _child(tmp_path, "16", "compiled")
    assert first["hits"] == 0 and first["kernel"] == ["16"]
    again, _ = _child(tmp_path, "16")
    assert again["hits"] == 1  # the cache works
    other, _ = _child(tmp_path, "default", "compiled")
    assert other["hits"] == 0 and other["width"] == 0
    fresh, _ = _child(tmp_path / "empty", "default", "compiled")
    assert other["kernel"] == fresh["kernel"]  # LLVM's choice, not the cached 16 lanes


def test_a_bad_vector_width_is_named(tmp_path):
    env = {**os.environ, "RNNLAB_VECTOR_WIDTH": "17", "NUMBA_CACHE_DIR": str(tmp_path)}
    env.pop("RNNLAB_NO_NUMBA", None)
    code = "from rnnlab import fast\nfast.available()\n"
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=600)  # fmt: skip
    assert run.returncode != 0
    assert "ValueError: `RNNLAB_VECTOR_WIDTH` must be 'default', 'auto' or a power of two " \
           "from 1 to 64; got '17' instead." in run.stderr  # fmt: skip


def test_only_the_vectorisers_remarks_are_dropped(capfd):
    """What else reaches file descriptor 2 while a kernel compiles, from LLVM or Python, is
    copied to stderr afterwards; the vectoriser's remarks are not."""
    with kernels._vectoriser_remarks_dropped():
        os.write(2, b"remark: <unknown>:0:0: loop not vectorized: could not determine number "
                    b"of loop iterations\nLLVM ERROR: something else\n")  # fmt: skip
        print("from Python", file=sys.stderr)
        os.write(2, b"remark: <unknown>:0:0: the cost-model indicates that interleaving is not "
                    b"beneficial\n")  # fmt: skip
    err = capfd.readouterr().err  # (pytest's capture takes Python's text before fd 2's)
    assert sorted(err.splitlines()) == ["LLVM ERROR: something else", "from Python"], err
