import os

import numpy as np
import pytest

# The suite runs the compiled loops on MKL wherever the `mkl` extra is installed, as it did
# before rnnlab chose the loops' BLAS by measuring the host (rnnlab._blaschoice): MKL's
# packing and threading then stay tested on every host, and NumPy's OpenBLAS is tested by
# the cases that ask for it (RNNLAB_BLAS=numpy in a child process). tests/test_blaschoice.py
# tests the choice itself.
os.environ.setdefault("RNNLAB_BLAS", "mkl")


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
def engine_path(request, monkeypatch):
    """Run a test through the per-step NumPy loop and through the compiled loop (if numba)."""
    from rnnlab import fast

    if request.param == "numpy":
        monkeypatch.setattr(fast, "available", lambda: False)
    elif not fast.available():
        pytest.skip("numba is not installed: no compiled loop to test")
    return request.param
