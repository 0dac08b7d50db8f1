"""A bidirectional layer's directions write their states straight into their halves of the
layer's output (Recurrent._shared_states): nothing is concatenated, and the results are bit
for bit those of separate arrays and a concatenation."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from rnnlab import fast
from rnnlab.cells import ElmanCell, GRUCell, LSTMCell
from rnnlab.layers import Recurrent

CELLS = [(ElmanCell, {}), (LSTMCell, {}), (GRUCell, {}), (GRUCell, {"reset_after": False})]
IDS = ["rnn", "lstm", "gru", "gru_orig"]


def _run(layer, x, d, **kw):
    f = layer.forward(x, **kw)
    b = layer.backward(f, d)
    return f, b


@pytest.mark.parametrize("compiled", [True, False], ids=["fast", "numpy"])
@pytest.mark.parametrize("options", [{}, {"lengths": np.array([7, 3, 5])}, {"checkpoint_every": 3}],
                         ids=["plain", "masked", "checkpointed"])  # fmt: skip
@pytest.mark.parametrize(("cell", "kw"), CELLS, ids=IDS)
def test_the_shared_output_changes_no_bit(cell, kw, options, compiled, monkeypatch, setenv):
    if compiled and not fast.available():
        pytest.skip("numba is not installed")
    if not compiled:
        setenv(RNNLAB_NO_NUMBA="1")
    T, B, I, H = 7, 3, 4, 6
    layer = Recurrent(cell(**kw), I, H, 2, bidirectional=True, dtype=np.float64,
                      rng=np.random.default_rng(0))  # fmt: skip
    rng = np.random.default_rng(1)
    x = rng.standard_normal((B, T, I))
    d = rng.standard_normal((B, T, 2 * H))
    f, b = _run(layer, x, d, **options)
    if "lengths" not in options:  # the last layer's output is the states' array itself
        hs = [tape.hs for tape in f.cache["tapes"][2:]]
        if hs[0] is not None:
            assert all(np.shares_memory(f.output, h) for h in hs)
    inference = layer.forward(x, grad=False, **options).output
    with monkeypatch.context() as m:
        m.setattr(Recurrent, "_shared_states", lambda self, T, B: None)
        f_ref, b_ref = _run(layer, x, d, **options)
        inference_ref = layer.forward(x, grad=False, **options).output
    np.testing.assert_array_equal(f.output, f_ref.output)
    np.testing.assert_array_equal(inference, inference_ref)
    for got, want in zip(f.state, f_ref.state, strict=True):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(b.input, b_ref.input)
    for got, want in zip(b.state, b_ref.state, strict=True):
        np.testing.assert_array_equal(got, want)
    for name, want in b_ref.params.items():
        np.testing.assert_array_equal(b.params[name], want, err_msg=name)


@pytest.mark.skipif(not fast.available(), reason="the compiled loops write the states in place")
@pytest.mark.parametrize("cell", [LSTMCell, GRUCell, ElmanCell])
def test_a_bidirectional_forward_keeps_its_states_once(cell, monkeypatch, setenv):
    """The tape's states are the output: the forward result holds 2 units of (T, B, H) less
    than states and a copy, and the peak is lower by at least one (an Elman direction's
    projection then needs a scratch array while its loop runs: its output rows, where it
    went before, are no longer contiguous)."""
    setenv(RNNLAB_MALLOC="system")  # no retained scratch buffers: all counted
    T, B, I, H = 200, 8, 16, 32  # long enough that the weights' copies are small beside a unit
    layer = Recurrent(cell(), I, H, bidirectional=True, dtype=np.float64,
                      rng=np.random.default_rng(0))  # fmt: skip
    x = np.random.default_rng(1).standard_normal((B, T, I))
    layer.forward(x)  # compile (or load) the kernels for these array types
    unit = T * B * H * 8

    def held_and_peak():
        tracemalloc.start()
        try:
            f = layer.forward(x)  # noqa: F841  (held while measured)
            held, peak = tracemalloc.get_traced_memory()
            return held / unit, peak / unit
        finally:
            tracemalloc.stop()

    shared = held_and_peak()
    with monkeypatch.context() as m:
        m.setattr(Recurrent, "_shared_states", lambda self, T, B: None)
        separate = held_and_peak()
    assert separate[0] - shared[0] > 1.95, (shared, separate)
    assert separate[1] - shared[1] > 0.9, (shared, separate)
