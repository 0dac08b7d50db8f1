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

from rnnlab import fast, losses
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


LAYOUTS = {
    "uni": {},
    "bi": {"bidirectional": True},
    "bi-sum": {"bidirectional": True, "merge": "sum"},
    "bi-readout": {"bidirectional": True, "merge": "readout", "output_size": 4},
    "2-layer": {"num_layers": 2},
    "2-layer-bi": {"num_layers": 2, "bidirectional": True},
}


@pytest.mark.parametrize("how", ["compiled", "numpy"])
@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("name", list(LAYERS))
def test_overwrite_d_output_changes_no_gradient_and_only_its_own_array(name, layout, how, setenv):
    """Giving d_output up (what the trainer does with a loss's gradient) gives the same
    gradients to the bit, masked, checkpointed or not; without the flag the caller's array
    is never written, even where BPTT writes over the gradients it made itself (the layers
    below the top)."""
    if how == "numpy":
        setenv(RNNLAB_NO_NUMBA="1")
    layer = _layer(name, batch_first=True, **LAYOUTS[layout])
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 7, 3))
    for kw in ({}, {"lengths": np.array([7, 4, 1])}, {"checkpoint_every": 3}):
        f = layer.forward(x, **kw)
        d = rng.standard_normal(f.output.shape)
        d = np.swapaxes(np.ascontiguousarray(np.swapaxes(d, 0, 1)), 0, 1)  # as a loss gives it
        kept = d.copy()
        want = layer.backward(f, d)
        np.testing.assert_array_equal(d, kept)
        got = layer.backward(layer.forward(x, **kw), d, overwrite_d_output=True)
        for key, value in want.params.items():
            np.testing.assert_array_equal(got.params[key], value, err_msg=f"{key} {kw}")
        np.testing.assert_array_equal(got.input, want.input)


@pytest.mark.parametrize("how", ["compiled", "numpy"])
@pytest.mark.parametrize("layout", ["uni", "bi", "2-layer", "2-layer-bi"])
@pytest.mark.parametrize("name", list(LAYERS))
def test_a_given_up_d_output_that_is_the_layers_own_memory_is_not_written(name, layout, how,
                                                                          setenv):  # fmt: skip
    """d_output = f.output (the gradient of ½‖y‖²) is a view of the states BPTT reads, and
    d_output = x (time-major, I = H) is the input dW_ih reads: given up or not, they are
    never written over, and the gradients are those of a copy."""
    if how == "numpy":
        setenv(RNNLAB_NO_NUMBA="1")
    layer = _layer(name, I=5, H=5, **LAYOUTS[layout])
    rng = np.random.default_rng(6)
    x = rng.standard_normal((6, 3, 5))  # time-major (batch_first=False)
    for kw in ({}, {"checkpoint_every": 4}):
        f = layer.forward(x, **kw)
        want = layer.backward(f, f.output.copy())
        f = layer.forward(x, **kw)
        got = layer.backward(f, f.output, overwrite_d_output=True)
        for key, value in want.params.items():
            np.testing.assert_array_equal(got.params[key], value, err_msg=f"{key} {kw}")
        if f.output.shape == x.shape:  # one direction: d_output may be x itself
            kept = x.copy()
            want = layer.backward(layer.forward(x, **kw), kept.copy())
            got = layer.backward(layer.forward(x, **kw), x, overwrite_d_output=True)
            for key, value in want.params.items():
                np.testing.assert_array_equal(got.params[key], value, err_msg=f"{key} {kw}")


@pytest.mark.parametrize("flag", ["overwrite_d_output", "input_grad", "retain_tape"])
def test_a_backward_switch_that_is_not_a_boolean_is_refused(flag):
    """"false" is truthy: taken as it is, it would write over the caller's gradient."""
    from rnnlab.modules import Linear, Sequential

    layer = _layer("rnn")
    x = np.random.default_rng(1).standard_normal((2, 4, 3))
    f = layer.forward(x)
    d = np.ones(f.output.shape)
    with pytest.raises(ValueError, match=f"`{flag}` must be True or False; got 'false'"):
        layer.backward(f, d, **{flag: "false"})
    assert (d == 1).all()
    if flag != "retain_tape":
        model = Sequential(layer, Linear(5, 2, dtype=np.float64, rng=np.random.default_rng(0)))
        f = model.forward(x)
        with pytest.raises(ValueError, match=f"`{flag}` must be True or False"):
            model.backward(f, np.ones(f.output.shape), **{flag: "false"})


@pytest.mark.parametrize("how", ["compiled", "numpy"])
@pytest.mark.parametrize("name", list(LAYERS))
def test_the_input_gradient_goes_over_a_given_up_d_output_of_its_shape(name, how, setenv):
    """A layer whose input is as wide as its output (the layers above the first of a stack)
    writes ∂L/∂x over the d_output it was given to keep, the same to the bit as into a new
    array; never over a d_output it was not given, and never for an Elman layer, whose
    BPTT has already written its pre-activation gradients there (∂L/∂x is their product)."""
    if how == "numpy":
        setenv(RNNLAB_NO_NUMBA="1")
    layer = _layer(name, I=5, H=5)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((6, 3, 5))
    for kw in ({}, {"lengths": np.array([6, 2, 5])}, {"checkpoint_every": 4}):
        d = rng.standard_normal((3, 6, 5))
        d = np.swapaxes(np.ascontiguousarray(np.swapaxes(d, 0, 1)), 0, 1)  # as a loss gives it
        want = layer.backward(layer.forward(x.transpose(1, 0, 2), **kw), d)
        assert not np.shares_memory(want.input, d)
        got = layer.backward(layer.forward(x.transpose(1, 0, 2), **kw), d, overwrite_d_output=True)
        np.testing.assert_array_equal(got.input, want.input, err_msg=str(kw))
        for key, value in want.params.items():
            np.testing.assert_array_equal(got.params[key], value, err_msg=f"{key} {kw}")
        over = np.shares_memory(got.input, d)
        # a mask makes BPTT work on its own copy of d; checkpointed segments copy theirs out
        if not kw:
            assert over == (name != "rnn"), (name, how)


@pytest.mark.parametrize("how", ["compiled", "numpy"])
@pytest.mark.parametrize("batch_first", [False, True])
def test_an_elman_layer_writes_its_pre_activation_gradients_over_a_given_up_d_output(
    how, batch_first, setenv
):
    """The (T, B, H) array BPTT fills is d_output itself: afterwards it holds ∂L/∂a_t, whose
    sum over the steps and the batch is the bias gradient."""
    if how == "numpy":
        setenv(RNNLAB_NO_NUMBA="1")
    layer = _layer("rnn", batch_first=batch_first)
    x = np.random.default_rng(1).standard_normal((4, 6, 3) if batch_first else (6, 4, 3))
    f = layer.forward(x)
    target = np.random.default_rng(2).standard_normal(f.output.shape)
    _, d = losses.mean_squared_error(f.output, target)  # in the output's memory order
    b = layer.backward(f, d, overwrite_d_output=True)
    np.testing.assert_allclose(d.sum(axis=(0, 1)), b.params["bias_ih_l0"], rtol=1e-12)
    assert not np.allclose(d.sum(axis=(0, 1)), 0)


@pytest.mark.skipif(not fast.available(), reason="the in-place loops are the compiled ones")
def test_overwrite_d_output_takes_one_array_off_an_elman_backward_pass(setenv):
    setenv(RNNLAB_MALLOC="system")  # no retained scratch buffers: all counted
    T, B, I, H = 40, 8, 16, 32
    layer = RNN(I, H, dtype=np.float64, rng=np.random.default_rng(0), batch_first=True)
    x = np.random.default_rng(1).standard_normal((B, T, I))
    unit = T * B * H * 8
    warm = layer.forward(x)
    layer.backward(warm, np.ones_like(warm.output), input_grad=False, overwrite_d_output=True)
    peaks = {}
    for over in (False, True):
        f = layer.forward(x)
        d = np.ones_like(f.output)
        _, peaks[over] = _peak_bytes(
            lambda f=f, d=d, over=over: layer.backward(f, d, input_grad=False,
                                                       overwrite_d_output=over)
        )  # fmt: skip
    assert peaks[True] < peaks[False] - 0.9 * unit, (peaks[False] / unit, peaks[True] / unit)


def test_a_sequential_writes_over_the_callers_d_output_only_when_given_it():
    """A Dropout at inference hands d_output on unchanged: the recurrent layer below it then
    holds the caller's array, which it may write over only with overwrite_d_output=True."""
    from rnnlab.modules import Dropout, Sequential

    model = Sequential([_layer("rnn", batch_first=True), Dropout(0.5)])
    x = np.random.default_rng(1).standard_normal((2, 5, 3))
    f = model.forward(x)
    d = f.output * 0 + 1.0
    model.backward(f, d)
    np.testing.assert_array_equal(d, 1.0)
    model.backward(model.forward(x), d, overwrite_d_output=True)
    assert not np.array_equal(d, np.ones_like(d))


def test_a_module_of_ones_own_without_the_keyword_runs_and_keeps_its_gradient():
    """A module written to the protocol before `overwrite_d_output` is called without it by
    Sequential and the trainer, and the ∂L/∂x it returns (here an array it keeps) is not
    written over by the Elman layer below it."""
    from rnnlab.layers import Backward, Forward
    from rnnlab.modules import Sequential

    class Keeps:
        params: dict = {}

        def __init__(self):
            self.kept = None

        def forward(self, x, **options):
            return Forward(x, None, None)

        def backward(self, f, d_output, d_state=None, *, input_grad=True):
            if self.kept is None:
                self.kept = np.array(d_output, copy=True)
            return Backward(self.kept, None, {})

    class Wraps(Keeps):  # a wrapper that passes keywords on: it does not name the keyword
        def backward(self, f, d_output, d_state=None, **kwargs):
            return super().backward(f, d_output, d_state)

    for top in (Keeps(), Wraps()):
        model = Sequential([_layer("rnn", batch_first=True), top])
        x = np.random.default_rng(1).standard_normal((2, 5, 3))
        f = model.forward(x)
        d = f.output * 0 + 1.0
        want = model.backward(f, d, overwrite_d_output=True)
        saved = top.kept.copy()
        got = model.backward(model.forward(x), d, overwrite_d_output=True)
        np.testing.assert_array_equal(top.kept, saved)
        for key, value in want.params.items():
            np.testing.assert_array_equal(got.params[key], value)


@pytest.mark.skipif(not fast.available(), reason="the in-place loops are the compiled ones")
def test_a_model_passes_retain_tape_to_its_recurrent_layers():
    """The error after a used tape says to call backward with retain_tape=True: a Sequential
    and a Seq2Seq, which hold the layers, take the keyword and pass it on."""
    from rnnlab.modules import Linear, Sequential
    from rnnlab.seq2seq import Seq2Seq

    rng = np.random.default_rng(5)
    model = Sequential(LSTM(3, 4, dtype=np.float64, rng=rng), Linear(4, 2, dtype=np.float64))
    x = rng.standard_normal((2, 5, 3))
    s2s = Seq2Seq(None, 6, source_features=3, hidden=4, dtype=np.float64, rng=1)
    tgt = rng.integers(0, 6, (2, 3))
    for m, args in ((model, (x,)), (s2s, (x, tgt))):
        f = m.forward(*args)
        d = rng.standard_normal(f.output.shape)
        first = m.backward(f, d, retain_tape=True)
        second = m.backward(f, d)
        fresh = m.backward(m.forward(*args), d)
        for key, want in fresh.params.items():
            np.testing.assert_array_equal(first.params[key], want)
            np.testing.assert_array_equal(second.params[key], want)
        with pytest.raises(ValueError, match="call backward with retain_tape=True"):
            m.backward(f, d)
