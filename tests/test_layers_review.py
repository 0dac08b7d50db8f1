"""Review 135 of the recurrent layers' public API as a PyTorch user meets it (RNN, LSTM, GRU:
their keywords, forward's state, backward's d_state): what was accepted silently or refused
in NumPy's words, and is now refused naming the argument."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from rnnlab import GRU, LSTM, RNN, Linear, gradcheck


def _x(B=2, T=5, I=3, dtype=np.float32):
    return np.random.default_rng(0).standard_normal((B, T, I)).astype(dtype)


@pytest.mark.parametrize("ctor", [RNN, LSTM, GRU])
def test_dtype_none_is_refused_not_read_as_float64(ctor):
    """np.dtype(None) is float64; PyTorch's dtype=None is its default float32. A layer built
    with dtype=None was float64 without a word, and refused the float32 input a PyTorch
    user feeds it."""
    with pytest.raises(ValueError, match=r"^`dtype` must be float32 or float64 .*; got None "
                       r"instead\. NumPy reads None as float64, PyTorch as its default float32"):
        ctor(3, 4, dtype=None)


@pytest.mark.parametrize(("dtype", "got"), [
    (torch.float64, r"torch\.float64 \(dtype\) instead\. For torch\.float64 write np\.float64\."),
    ("bogus", r"'bogus' \(str\) instead\.$"),
])  # fmt: skip
def test_a_dtype_numpy_cannot_read_is_refused_naming_dtype(dtype, got):
    """NumPy's TypeError ("Cannot interpret 'torch.float64' as a data type") named neither
    the argument nor what it takes."""
    with pytest.raises(ValueError, match=r"^`dtype` must be float32 or float64 \(a NumPy dtype "
                       r"or its name\); got " + got):  # fmt: skip
        LSTM(3, 4, dtype=dtype)
    assert LSTM(3, 4, dtype="float64").dtype == np.float64  # a name NumPy reads still works


def _lstm_state(B, value):
    h0 = np.zeros((1, B, 4))
    h0[0, 1, 2] = value
    return h0, np.zeros((1, B, 4))


def test_a_float64_state_beyond_float32_range_is_refused():
    """A float64 h0 of 1e300 passed the check for finite values, then became inf in the
    float32 layer's cast: the outputs were NaN, with only NumPy's RuntimeWarning."""
    layer = LSTM(3, 4, rng=0)
    with pytest.raises(ValueError, match=re.escape(
            "`state[0] (h0)` must be within float32's range (|x| ≤ 3.4e+38), as it is cast to "
            "float32; got 1e+300 at index (0, 1, 2) instead.")):  # fmt: skip
        layer.forward(_x(), state=_lstm_state(2, 1e300))
    f = layer.forward(_x(), state=_lstm_state(2, 1e30))  # in range: cast as before
    assert np.isfinite(f.output).all() and f.output.dtype == np.float32


def test_float64_gradients_beyond_float32_range_are_refused():
    """The same for backward's d_output and d_state: NaN gradients without a word."""
    layer = GRU(3, 4, rng=0)
    f = layer.forward(_x())
    d_output, d_state = np.zeros((2, 5, 4)), np.zeros((1, 2, 4))
    d_output[1, 3, 0] = d_state[0, 1, 3] = -1e300
    with pytest.raises(ValueError, match=re.escape(
            "`d_output` must be within float32's range (|x| ≤ 3.4e+38), as it is cast to "
            "float32; got -1e+300 at index (1, 3, 0) instead.")):  # fmt: skip
        layer.backward(f, d_output)
    with pytest.raises(ValueError, match=re.escape(
            "`d_state` must be within float32's range (|x| ≤ 3.4e+38), as it is cast to "
            "float32; got -1e+300 at index (0, 1, 3) instead.")):  # fmt: skip
        layer.backward(f, np.ones((2, 5, 4)), d_state)
    b = layer.backward(f, np.ones((2, 5, 4)), d_state * 1e-290)  # in range: cast as before
    assert all(np.isfinite(g).all() for g in b.params.values())


@pytest.mark.parametrize("ctor", [RNN, LSTM, GRU])
def test_bias_false_is_refused_with_the_way_to_it(ctor):
    """bias= was "an unknown keyword" among a list of rnnlab's; PyTorch's default True,
    which code written for nn.LSTM passes, was refused too."""
    with pytest.raises(ValueError, match=rf"^`bias` must be True for {ctor.__name__} \(its "
                       r"layers always have biases\); got False \(bool\) instead\. A PyTorch "
                       r"layer built with bias=False computes what one with zero biases does"):
        ctor(3, 4, bias=False)
    with pytest.raises(ValueError, match=r"^`bias` must be True .*; got 0 \(int\) instead"):
        ctor(3, 4, bias=0)
    assert sorted(ctor(3, 4, bias=True, rng=0).params) == sorted(ctor(3, 4, rng=0).params)


def test_bias_false_state_dict_says_how_to_load_it():
    """A state_dict of nn.GRU(bias=False) was refused listing the missing biases alone; the
    hint's way gives PyTorch's outputs (float64, copied weights)."""
    torch.manual_seed(0)
    theirs = torch.nn.GRU(3, 4, bias=False, batch_first=True, dtype=torch.float64)
    ours = GRU(3, 4, dtype=np.float64, rng=0)
    with pytest.raises(ValueError, match=r"missing \['bias_ih_l0', 'bias_hh_l0'\] and unexpected"
                       r" \[\] instead\. A PyTorch layer built with bias=False"):  # fmt: skip
        ours.load_state_dict(theirs.state_dict())
    ours.load_state_dict(theirs.state_dict(), strict=False)
    for name in ours.params:
        if name.startswith("bias_"):
            ours.params[name][...] = 0
    x = _x(dtype=np.float64)
    expected = theirs(torch.from_numpy(x))[0].detach().numpy()
    np.testing.assert_allclose(ours.forward(x).output, expected, rtol=0, atol=1e-12)
    # a Linear's missing bias is no recurrent layer's: no such hint (Linear builds bias=False)
    with pytest.raises(ValueError) as info:
        Linear(3, 2).load_state_dict({"weight": np.zeros((2, 3), np.float32)})
    assert "bias=False computes" not in str(info.value)


@pytest.mark.parametrize("ctor", [RNN, GRU])
def test_a_pair_as_the_state_of_a_layer_without_c_is_refused_as_such(ctor):
    """(h0, None) or (h0, c0) given to a GRU was "ragged nested lists (a tuple of length 2)",
    or a shape of 4 axes; d_state the same."""
    layer = ctor(3, 4, rng=0)
    h0 = np.zeros((1, 2, 4), np.float32)
    name = layer.cell.describe()
    for pair in ((h0, None), (h0, h0)):
        with pytest.raises(ValueError, match=rf"^`state` must be one array \(h0\) for {name}, "
                           r"which has no cell state; got a pair \(an array of shape \(1, 2, 4\)"):
            layer.forward(_x(), state=pair)
        with pytest.raises(ValueError, match=rf"^`d_state` must be one array \(dh_n\) for "
                           rf"{name}, which has no cell state; got a pair"):  # fmt: skip
            layer.backward(layer.forward(_x()), np.ones((2, 5, 4), np.float32), pair)
    # a bidirectional layer's state as a list of its two directions' (B, H) arrays still is one
    bi = ctor(3, 4, bidirectional=True, dtype=np.float64, rng=0)
    x, h = _x(dtype=np.float64), np.random.default_rng(1).standard_normal((2, 2, 4))
    np.testing.assert_array_equal(bi.forward(x, state=[h[0], h[1]]).output,
                                  bi.forward(x, state=h).output)  # fmt: skip
    assert gradcheck(bi, x, state=h, lengths=np.array([5, 2])).ok
