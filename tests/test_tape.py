"""One array for the gates, the input projection and the pre-activation gradients.

The compiled loops write the input projection into the gate tape (LSTM, GRU) or the output
rows (Elman), and BPTT turns the gates into their gradients in place; a forward result then
serves one backward pass unless `retain_tape=True`. These tests check the rule, the option and
the memory it saves (tracemalloc sees NumPy's allocations).
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from rnnlab import fast
from rnnlab.layers import GRU, LSTM, RNN

LAYERS = {
    "rnn": lambda I, H, **kw: RNN(I, H, **kw),
    "lstm": lambda I, H, **kw: LSTM(I, H, **kw),
    "gru": lambda I, H, **kw: GRU(I, H, **kw),
    "gru_orig": lambda I, H, **kw: GRU(I, H, reset_after=False, **kw),
}


def _layer(name, I=3, H=5, **kw):
    return LAYERS[name](I, H, dtype=np.float64, rng=np.random.default_rng(0), **kw)


@pytest.mark.skipif(not fast.available(), reason="the compiled loops overwrite the gates")
@pytest.mark.parametrize("name", ["lstm", "gru", "gru_orig"])
def test_a_second_backward_pass_is_refused_with_a_clear_message(name):
    layer = _layer(name)
    x = np.random.default_rng(1).standard_normal((2, 4, 3))
    f = layer.forward(x)
    d = np.ones_like(f.output)
    layer.backward(f, d)
    with pytest.raises(ValueError, match=r"`f` must be a forward result that no backward pass"):
        layer.backward(f, d)


@pytest.mark.parametrize(
    ("name", "how"),
    [("rnn", "compiled"), ("lstm", "numpy"), ("gru", "numpy"), ("lstm", "checkpointed")],
)
def test_a_tape_nothing_overwrites_serves_any_number_of_backward_passes(name, how, setenv):
    """An Elman cell's tape, the NumPy loop's and a checkpointed one keep their values."""
    if how == "numpy":
        setenv(RNNLAB_NO_NUMBA="1")
    layer = _layer(name)
    x = np.random.default_rng(1).standard_normal((2, 6, 3))
    kw = {"checkpoint_every": 2} if how == "checkpointed" else {}
    f = layer.forward(x, **kw)
    d = np.random.default_rng(2).standard_normal(f.output.shape)
    first, second = layer.backward(f, d), layer.backward(f, d)
    for key, want in first.params.items():
        np.testing.assert_array_equal(second.params[key], want)


@pytest.mark.parametrize("name", list(LAYERS))
@pytest.mark.parametrize("bi", [False, True], ids=["uni", "bi"])
def test_retain_tape_gives_the_same_gradients_twice(name, bi):
    layer = _layer(name, num_layers=2, bidirectional=bi)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 6, 3))
    lengths = np.array([6, 4, 1])
    f = layer.forward(x, lengths=lengths)
    d = rng.standard_normal(f.output.shape)
    first = layer.backward(f, d, retain_tape=True)
    second = layer.backward(f, d)
    fresh = layer.backward(layer.forward(x, lengths=lengths), d)
    for key, want in fresh.params.items():
        np.testing.assert_array_equal(first.params[key], want)
        np.testing.assert_array_equal(second.params[key], want)
    np.testing.assert_array_equal(first.input, fresh.input)


def _peak_bytes(fn) -> tuple[object, int]:
    tracemalloc.start()
    tracemalloc.reset_peak()
    try:
        out = fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return out, peak


@pytest.mark.skipif(not fast.available(), reason="the in-place loops are the compiled ones")
@pytest.mark.parametrize("name", ["lstm", "gru", "rnn"])
def test_the_projection_and_the_gradients_take_no_array_of_their_own(name, setenv):
    setenv(RNNLAB_MALLOC="system")  # no retained scratch buffers: all counted
    T, B, I, H = 40, 8, 16, 32
    G = {"lstm": 4, "gru": 3, "rnn": 1}[name]
    layer = LAYERS[name](I, H, dtype=np.float64, rng=np.random.default_rng(0))
    x = np.random.default_rng(1).standard_normal((B, T, I))
    unit = T * B * H * 8  # bytes of one (T, B, H) float64 array
    warm = layer.forward(x)  # compile (or load) the kernels for these array types
    layer.backward(warm, np.ones_like(warm.output), input_grad=False)
    f, forward_peak = _peak_bytes(lambda: layer.forward(x))
    # the tape: states (T+1 rows; the LSTM's cell state too), the gates (G units), the GRU's
    # W_hn h + b_hn, and the time-major copy of x (I = H/2); the output is a view of the
    # states. A separate projection would add G units: the bound is half-way.
    tape = {"lstm": 2 + G, "gru": 1 + G + 1, "rnn": 1}[name] + 0.5
    assert forward_peak < (tape + G / 2) * unit, forward_peak / unit
    d = np.ones_like(f.output)
    _, backward_peak = _peak_bytes(lambda: layer.backward(f, d, input_grad=False))
    # the time-major copy of d and, for the GRU, the n block of the W_hh side; (T, B, G·H)
    # gradients besides the tape would add G units
    own = {"lstm": 1, "gru": 2, "rnn": 2}[name]
    assert backward_peak < (own + G / 2) * unit, backward_peak / unit


@pytest.mark.skipif(not fast.available(), reason="the in-place loops are the compiled ones")
def test_the_gru_w_hh_side_gradient_takes_the_place_of_w_hn_h(setenv):
    """Reset-after GRU: the n block of the W_hh side's gradient (da_n ⊙ r, one (T, B, H) unit)
    is written over W_hn h + b_hn, which each BPTT step reads just before; so backward needs
    less than one unit of its own (it needed a second one before)."""
    setenv(RNNLAB_MALLOC="system")
    T, B, I, H = 80, 8, 16, 32
    layer = GRU(I, H, dtype=np.float64, rng=np.random.default_rng(0))
    x = np.random.default_rng(1).standard_normal((B, T, I))
    warm = layer.forward(x)
    layer.backward(warm, np.ones_like(warm.output), input_grad=False)
    f = layer.forward(x)
    d = np.ones_like(f.output)
    _, peak = _peak_bytes(lambda: layer.backward(f, d, input_grad=False))
    assert peak < T * B * H * 8, peak / (T * B * H * 8)


def test_an_output_feedback_layer_serves_two_backward_passes():
    """Its Elman cell's tape keeps its values (nothing to refuse, and no `tape` in a message
    about an argument its caller never named)."""
    from rnnlab.feedback import OutputFeedback

    layer = OutputFeedback(3, 5, 2, hidden_recurrence=True, dtype=np.float64,
                           rng=np.random.default_rng(0))  # fmt: skip
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((2, 6, 3)), rng.standard_normal((2, 6, 2))
    f = layer.forward(x, targets=y)
    d = rng.standard_normal(f.output.shape)
    first, second = layer.backward(f, d), layer.backward(f, d)
    for key, want in first.params.items():
        np.testing.assert_array_equal(second.params[key], want)


@pytest.mark.skipif(not fast.available(), reason="only the compiled loops consume a tape")
@pytest.mark.parametrize("retain", [False, True])
def test_a_consumed_tape_gives_up_its_cell_states_before_the_weight_gradients(retain):
    """BPTT's loop is the last reader of an LSTM's cell states: a tape that backward consumes
    drops them (they are not alive at the weight gradients, the peak of a training step); a
    retained tape keeps them for the next pass, and both passes give the same gradients."""
    layer = _layer("lstm")
    x = np.random.default_rng(1).standard_normal((2, 6, 3))
    f = layer.forward(x)
    tape = f.cache["tapes"][0]
    assert tape.cs is not None
    d = np.ones_like(f.output)
    first = layer.backward(f, d, retain_tape=retain)
    assert (tape.cs is not None) == retain
    if retain:
        second = layer.backward(f, d)
        assert tape.cs is None
        for name in first.params:
            np.testing.assert_array_equal(first.params[name], second.params[name])
