import os

import numpy as np
import pytest

from rnnlab import _blaschoice, settings

# The suite runs the compiled loops on MKL wherever the `mkl` extra is installed, as it did
# before rnnlab chose the loops' BLAS by measuring the host (rnnlab._blaschoice): MKL's
# packing and threading then stay tested on every host, and NumPy's OpenBLAS is tested by
# the cases that ask for it (RNNLAB_BLAS=numpy in a child process). tests/test_blaschoice.py
# tests the choice itself.
if _blaschoice.library_files():  # (RNNLAB_BLAS=mkl without MKL is an error)
    os.environ.setdefault("RNNLAB_BLAS", "mkl")
# For the same reason the per-step products stay on that BLAS unless a test asks for rnnlab's
# own kernel (RNNLAB_TILES=on: tests/test_tiles.py runs the cells' checks on it).
os.environ.setdefault("RNNLAB_TILES", "off")


@pytest.fixture(autouse=True)
def _settings_follow_the_environment():
    """rnnlab reads its RNNLAB_* variables once (rnnlab.settings); set up before and torn
    down after a test's monkeypatch, this reads them again once monkeypatch put them back."""
    yield
    settings.reload()


@pytest.fixture
def setenv(monkeypatch):
    """setenv(RNNLAB_NUM_THREADS="2", RNNLAB_PACKED=None): set (a string) or unset (None)
    environment variables for this test, and have rnnlab read its settings again."""

    def set_(**variables):
        for name, value in variables.items():
            if value is None:
                monkeypatch.delenv(name, raising=False)
            else:
                monkeypatch.setenv(name, value)
        settings.reload()

    return set_


@pytest.fixture(autouse=True)
def _numpy_errors_raise():
    """Overflow, invalid operations and division by zero are bugs in a test run."""
    old = np.seterr(all="raise")
    yield
    np.seterr(**old)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture(params=["numpy", "fast"])
def engine_path(request):
    """Run a test through the per-step NumPy loop and through the compiled loop (if numba)."""
    from rnnlab import fast

    if request.param == "numpy":
        with settings.override(no_numba=True):
            yield request.param
        return
    if not fast.available():
        pytest.skip("numba is not installed: no compiled loop to test")
    yield request.param


@pytest.fixture
def split_calls(monkeypatch):
    """Split even the tiny problems of a test (no FLOP thresholds) and record the number of
    parts of every split call, so a test can check that it really ran split."""
    from rnnlab import fast
    from rnnlab.fast import parallel

    monkeypatch.setattr(fast, "MIN_LOOP_FLOPS", 0)
    monkeypatch.setattr(parallel, "MIN_FLOPS", 0)
    monkeypatch.setattr(parallel, "_MIN_ROWS_MATMUL", 4)
    seen: list[int] = []
    run_parts = parallel.run_parts

    def recording(fn, parts):
        seen.append(len(parts))
        return run_parts(fn, parts)

    monkeypatch.setattr(parallel, "run_parts", recording)
    return seen
