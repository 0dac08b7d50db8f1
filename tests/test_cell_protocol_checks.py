"""A cell that breaks the protocol (rnnlab.cells.base) is refused by name when it is made or
handed to Recurrent: never a raw traceback from numba or the loops, silently wrong
gradients, or (compiled, where steps are not bounds-checked) memory written over."""

import functools

import numpy as np
import pytest

from rnnlab import gradcheck, settings
from rnnlab.cells import Cell
from rnnlab.cells.pointwise import one, tanh, units
from rnnlab.layers import Recurrent


# ------------------------------------------------------- a valid cell: h = s ⊙ tanh(a), tape a
def scaled(xa, b_ih, ha, b_hh, q, h_prev, c_prev, h, c, tape):
    for j in units(h):
        a = tanh(xa[j] + b_ih[j] + ha[j] + b_hh[j])
        tape[j] = a
        h[j] = q[j] * a


def scaled_back(dh, dc, dsrc, q, h_prev, c_prev, h, c, tape, da, da_h, dq):
    for j in units(h):
        a, d = tape[j], dh[j]
        dq[j] = dq[j] + d * a
        da[j] = d * q[j] * (one(a) - a * a)
        dh[j] = d - d


class Scaled(Cell):
    name = "scaled"
    tape = 1
    extra = ("s",)
    stages = (scaled,)
    backward_stages = (scaled_back,)

    def init(self, params, H, rng):
        params["s"][...] = 1.0 + 0.1 * rng.standard_normal(H)


def test_a_valid_custom_cell_still_works():
    rng = np.random.default_rng(0)
    with settings.override(no_numba=True):
        m = Recurrent(Scaled(), 3, 4, 2, bidirectional=True, dtype=np.float64, rng=rng)
        x = rng.standard_normal((3, 5, 3))
        report = gradcheck(m, x, lengths=np.array([5, 2, 4]))
    assert report.max_error < 1e-7, str(report)


# ------------------------------------------------------------ 2. declarations, checked by name
def test_duplicate_extra_names_are_refused():
    """("s", "s") built one s_l0, and a gradient check failed with relative error 1."""

    class Twice(Scaled):
        extra = ("s", "s")

    with pytest.raises(TypeError, match=r"`Twice.extra` must be distinct names .*; got 's' twice"):
        Twice()


@pytest.mark.parametrize("name", ["weight_hh", "weight_ih", "bias_ih", "bias_hh", "weight_hr",
                                  "h0", "c0"])  # fmt: skip
def test_extra_names_of_the_layers_own_parameters_are_refused(name):
    """("weight_hh",) replaced weight_hh_l0 with an (H,) vector: IndexError in recurrence."""

    class Clash(Scaled):
        extra = (name,)

    with pytest.raises(TypeError, match=rf"`Clash.extra` must be names other than .*'{name}'"):
        Clash()


@pytest.mark.parametrize(
    "extra,match",
    [
        (("a b",), r"a tuple of names.*\(each name a Python identifier\); got 'a b'"),
        ((3,), r"a tuple of names.*\(each name a Python identifier\); got 3 \(int\)"),
        ((("s", 0),), r"\(name, n\) with n a positive number"),
        ((("s", 1.5),), r"\(name, n\) with n a positive number"),
        (["s"], r"a tuple of names.*got a list of length 1"),
    ],
    ids=["space", "int", "zero_rows", "float_rows", "list"],
)
def test_malformed_extra_is_refused(extra, match):
    class Bad(Scaled):
        pass

    Bad.extra = extra
    with pytest.raises(TypeError, match=r"`Bad.extra` must be " + match):
        Bad()


def nine(xa, b_ih, ha, b_hh, q, h_prev, c_prev, h, c):
    pass


def eleven(dh, dc, dsrc, q, h_prev, c_prev, h, c, tape, da, da_h):
    pass


def keyword_only(xa, b_ih, ha, b_hh, q, h_prev, c_prev, h, c, *, tape):
    pass


@pytest.mark.parametrize(
    "attr,step,match",
    [
        (
            "stages",
            nine,
            r"`Bad.stages\[0\]` must be a Python function of 10 positional "
            r"parameters; got nine\(xa, .*, c\) instead",
        ),
        (
            "backward_stages",
            eleven,
            r"`Bad.backward_stages\[0\]` must be a Python function of "
            r"12 positional parameters; got eleven\(",
        ),
        ("stages", keyword_only, r"`Bad.stages\[0\]` .* got keyword_only\(.*\*, tape\)"),
        (
            "stages",
            "scaled",
            r"`Bad.stages\[0\]` must be a Python function .*; got 'scaled' "
            r"\(str\) instead",
        ),
        ("stages", lambda *a: None, r"`Bad.stages\[0\]` .*; got .*<lambda>\(\*a\) instead"),
        ("stages", functools.partial(scaled), r"`Bad.stages\[0\]` .*; got functools.partial"),
        ("backward_stages", np.add, r"`Bad.backward_stages\[0\]` .*; got <ufunc 'add'>"),
    ],
    ids=["nine", "eleven", "keyword_only", "string", "star_args", "partial", "ufunc"],
)
def test_a_step_of_the_wrong_form_is_refused(attr, step, match):
    """They met numba's TypingError, TypeError or NotImplementedError when compiled."""

    class Bad(Scaled):
        pass

    setattr(Bad, attr, (step,))
    with pytest.raises(TypeError, match=match):
        Bad()


def test_stages_as_a_list_are_refused():
    class Listed(Scaled):
        stages = [scaled]

    with pytest.raises(TypeError, match=r"`Listed.stages` must be a tuple of functions"):
        Listed()
