"""A review of rnnlab.losses on both of its paths (the compiled one-pass kernels of rnnlab.fast
and NumPy's passes, chosen by fast.available(): numba installed and RNNLAB_NO_NUMBA off):
extreme and non-finite values, ids of every integer dtype, array subclasses, memory layouts,
the messages of bad input, float32 against float64, and torch and finite differences on the
NumPy path (tests/test_losses.py runs them on the default one)."""

import os

import numpy as np
import pytest

from rnnlab import fast, losses, settings
from rnnlab.losses import (
    log_softmax,
    softmax,
    softmax_cross_entropy,
)

if os.environ.get("CI"):
    import torch
else:
    torch = pytest.importorskip("torch")

F_ = torch.nn.functional
COMPILED = ("_compiled_cross_entropy", "_compiled_squared_error")


@pytest.fixture(params=["compiled", "numpy"])
def path(request, monkeypatch):
    """The loss's path: "numpy" through the user's own switch (RNNLAB_NO_NUMBA, as a setting),
    "compiled" with a record of whether each call of a kernel took the arrays (`ran`: True
    for every call the kernel computed, False where it handed them back to NumPy)."""
    if request.param == "numpy":
        with settings.override(no_numba=True):
            assert not fast.available()
            yield request.param, []
        return
    if not fast.available():
        pytest.skip("needs the compiled kernels")
    ran: list[bool] = []
    for name in COMPILED:
        real = getattr(losses, name)

        def record(*args, real=real):
            done = real(*args)
            if fast.available():  # (not a call a test sent to NumPy's path on purpose)
                ran.append(done is not None)
            return done

        monkeypatch.setattr(losses, name, record)
    yield request.param, ran


def took(path, ran, compiled=True):
    """The path ran as it should: the kernel computed every call on the compiled path (or
    handed every call back, for layouts it does not take), nothing on NumPy's."""
    if path == "compiled":
        assert ran and all(ran) if compiled else ran and not any(ran)
    else:
        assert not ran


def message(fn):
    with pytest.raises(ValueError) as e:
        fn()
    return str(e.value)


# ------------------------------------------------------------ logits further apart than a dtype
def test_cross_entropy_of_logits_further_apart_than_the_dtype_holds(path):
    """o − max o overflows to −inf for a row of ±3e38 in float32: NumPy's path raised (a
    RuntimeWarning, FloatingPointError under np.seterr(all="raise")), the kernel returned an
    inf loss. The softmax there is exact ([1, 0, 0]), and so, in float64, is the loss: 6e38.
    Float64 logits 1.8e308 apart give inf on both paths (past float64 itself), and nothing
    at a padded step."""
    name, ran = path
    big = float(np.float32(3e38))
    o = np.array([[big, -big, 0.0], [0.0, 0.0, 0.0]], np.float32)
    loss, d = softmax_cross_entropy(o, np.array([1, 0]))
    assert loss == 2 * big + np.log(3.0)  # (e^{−3e38} and e^{−6e38} are 0 next to 1)
    np.testing.assert_array_equal(d[0], [1.0, -1.0, 0.0])
    assert loss == softmax_cross_entropy(o.astype(np.float64), np.array([1, 0]))[0]
    took(name, ran)
    h = float(np.float16(6e4))
    loss, d = softmax_cross_entropy(np.array([[h, -h]], np.float16), np.array([1]))
    assert loss == 2 * h and d.dtype == np.float16  # (float16 takes NumPy's path always)
    np.testing.assert_array_equal(d, [[1.0, -1.0]])

    o = np.zeros((2, 2, 3))
    o[1, 1] = [-1e308, 1e308, 0.0]
    y = np.zeros((2, 2), int)  # (a padded step's id is read as 0: the loss there is inf too)
    loss, d = softmax_cross_entropy(o, y)
    assert loss == np.inf and np.isfinite(d).all()
    np.testing.assert_array_equal(d[1, 1], [-1.0, 1.0, 0.0])
    loss, d = softmax_cross_entropy(o, y, lengths=np.array([2, 1]), reduction="mean")
    assert loss == pytest.approx(np.log(3.0), rel=1e-15) and not d[1, 1].any()


def test_softmax_helpers_of_logits_further_apart_than_the_dtype_holds():
    """Documented "stable for any finite x", they raised on x − max x; now softmax is exact
    and log_softmax −inf where the value is past the dtype (torch's float32 alike)."""
    for dtype in (np.float32, np.float64):
        big = float(np.finfo(dtype).max) * 0.9
        x = np.array([[big, -big, 0.0]], dtype)
        np.testing.assert_array_equal(softmax(x), torch.softmax(torch.from_numpy(x), -1))
        np.testing.assert_array_equal(log_softmax(x),
                                      torch.log_softmax(torch.from_numpy(x), -1))  # fmt: skip
        np.testing.assert_array_equal(log_softmax(x), np.array([[0.0, -np.inf, -big]], dtype))
