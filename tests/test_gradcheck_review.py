"""A review of rnnlab.gradcheck by use: the weights it leaves behind when a forward raises,
tied parameters, a Generator as the forward's rng, where a failure is, and a check of
nothing. Each test fails without the fix it comes with."""

import numpy as np
import pytest

from rnnlab import gradcheck
from rnnlab.layers import LSTM
from rnnlab.modules import Dropout, Linear, MeanOverTime, Sequential


def test_a_forward_that_raises_half_way_leaves_every_weight_as_it_was():
    """Each entry was put back only after both of its passes: a forward raising in between
    (a check that refuses the perturbed weight, a Ctrl-C) left the weight moved by eps."""
    rng = np.random.default_rng(0)
    lstm = LSTM(3, 4, dtype=np.float64, rng=rng, batch_first=True)
    kept = {k: v.copy() for k, v in lstm.params.items()}
    original, calls = lstm.forward, [0]

    def forward(x, **kw):
        calls[0] += 1
        if calls[0] == 6:  # the 3rd entry's "up" pass: weight_ih_l0[0, 2] is at old + eps
            raise RuntimeError("boom")
        return original(x, **kw)

    lstm.forward = forward
    with pytest.raises(RuntimeError, match="boom"):
        gradcheck(lstm, rng.standard_normal((2, 3, 3)))
    for k, v in kept.items():
        np.testing.assert_array_equal(lstm.params[k], v, err_msg=k)


class _Tied:
    """A module of one's own whose output weight is its input weight's transpose, held as
    two parameters."""

    def __init__(self):
        self.inner = Linear(3, 3, dtype=np.float64, rng=1)
        w = self.inner.params["weight"]
        self.params = {"weight": w, "bias": self.inner.params["bias"], "weight_out": w.T}

    def forward(self, x, **kw):
        f = self.inner.forward(x)
        return type(f)(f.output @ self.params["weight_out"].T, None, (f, f.output))

    def backward(self, f, d, d_state=None, **kw):
        inner_f, hidden = f.cache
        b = self.inner.backward(inner_f, d @ self.params["weight_out"])
        b.params["weight_out"] = np.einsum("bto,bti->oi", d, hidden)
        return b


def test_tied_parameters_are_refused_by_name():
    """Perturbing one of two tied names moves both: each finite difference was the whole
    derivative, each backward entry its part, and a correct backward failed on both names
    with nothing said of why."""
    x = np.random.default_rng(1).standard_normal((2, 2, 3))
    with pytest.raises(ValueError, match=r"`module` must be parameters of their own, one "
                       r"array each \(each is perturbed alone\).*got 'weight' and 'weight_out' "
                       r"sharing memory"):  # fmt: skip
        gradcheck(_Tied(), x)


@pytest.mark.parametrize("kind", ["Generator", "BitGenerator"])
def test_a_generator_as_rng_draws_the_same_masks_in_every_pass(kind):
    """`rng=np.random.default_rng(3)` with dropout: each forward drew other masks from the
    advancing generator, and a correct backward failed with errors near 1. Every pass now
    draws from a copy in the given state, and the caller's generator is left as it was."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 3, 4))
    model = Sequential(Linear(4, 3, dtype=np.float64, rng=rng), Dropout(0.5),
                       Linear(3, 2, dtype=np.float64, rng=rng))  # fmt: skip
    given = np.random.default_rng(3) if kind == "Generator" else np.random.PCG64(3)
    state = (given.bit_generator if kind == "Generator" else given).state
    report = gradcheck(model, x, training=True, rng=given)
    report.assert_ok()
    assert (given.bit_generator if kind == "Generator" else given).state == state
    seeded = gradcheck(model, x, training=True, rng=3)  # (a seed: the same masks)
    assert seeded.errors.keys() == report.errors.keys()


def test_a_failure_names_the_entry_that_differs_most():
    """The report named the array that failed, not where in it: a gradient wrong at one
    entry of a 40-entry weight left the user to search."""
    rng = np.random.default_rng(4)
    lin = Linear(5, 8, dtype=np.float64, rng=rng)
    original = lin.backward

    def broken(f, d, d_state=None, **kw):
        b = original(f, d, d_state, **kw)
        b.params["weight"][6, 3] += 0.5
        return b

    lin.backward = broken
    x = rng.standard_normal((2, 3, 5))
    report = gradcheck(lin, x)
    at, analytic, numeric = report.worst["weight"]
    assert at == (6, 3) and abs(analytic - numeric - 0.5) < 1e-6
    with pytest.raises(AssertionError, match=r"weight has relative error .* most at index "
                       r"\(6, 3\): backward -?\d.*, finite differences -?\d"):  # fmt: skip
        report.assert_ok()
    lin.backward = original
    good = gradcheck(lin, x)
    assert good.ok and set(good.worst) == set(good.errors)  # (every array: where it differs)


def test_a_check_of_nothing_is_refused():
    """A module without parameters, its input left out (or of ids) and no state given: the
    report was empty, ok, and assert_ok passed having compared nothing."""
    x = np.random.default_rng(5).standard_normal((2, 3, 4))
    with pytest.raises(ValueError, match=r"`module` must be something to check: parameters, "
                       r"a float input with check_input=True, or an initial state given; got "
                       r"none of them"):  # fmt: skip
        gradcheck(MeanOverTime(), x, check_input=False)
    assert gradcheck(MeanOverTime(), x).ok  # (its input: checked)
