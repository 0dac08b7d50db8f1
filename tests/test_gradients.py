"""float64 central finite differences of every gradient the engine writes by hand."""

import numpy as np
import pytest
from helpers import CELLS, make, random_state

from rnnlab import gradcheck
from rnnlab.feedback import OutputFeedback
from rnnlab.modules import Dropout, Embedding, LastStep, Linear, MeanOverTime, Sequential

B, T, I, H = 3, 5, 3, 4
LENGTHS = np.array([5, 2, 4])


@pytest.mark.parametrize("padded", [False, True], ids=["full", "padded"])
@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("bi", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("name,ctor,kw", CELLS, ids=[c[0] for c in CELLS])
def test_recurrent_layer(name, ctor, kw, bi, layers, padded, engine_path):
    rng = np.random.default_rng(7)
    m = make(ctor, kw, I, H, layers, bi, rng, initial_state="learned")
    x = rng.standard_normal((B, T, I))
    lengths = LENGTHS if padded else None
    # learned initial state in use: its gradient is checked as a parameter
    gradcheck(m, x, lengths=lengths).assert_ok()
    # a state given by the caller: the initial-state gradient is checked as an input
    state = random_state(name, layers, 2 if bi else 1, B, H, rng)
    report = gradcheck(m, x, lengths=lengths, state=state)
    report.assert_ok()
    assert any(k.startswith("initial_state") for k in report.errors)
    assert report.norms["input"] > 0


@pytest.mark.parametrize("merge", ["sum", "readout"])
@pytest.mark.parametrize("name,ctor,kw", CELLS[::2], ids=[c[0] for c in CELLS[::2]])
def test_merges(name, ctor, kw, merge):
    rng = np.random.default_rng(3)
    extra = {"output_size": 2} if merge == "readout" else {}
    m = make(ctor, kw, I, H, 2, True, rng, merge=merge, **extra)
    x = rng.standard_normal((B, T, I))
    gradcheck(m, x, lengths=LENGTHS).assert_ok()


def test_constant_initial_state_and_time_major():
    rng = np.random.default_rng(4)
    m = make(CELLS[2][1], {}, I, H, 2, True, rng, initial_state=0.5, batch_first=False)
    x = rng.standard_normal((T, B, I))
    gradcheck(m, x, lengths=LENGTHS).assert_ok()


def test_dropout_between_layers():
    rng = np.random.default_rng(5)
    m = make(CELLS[3][1], {}, I, H, 3, False, rng, dropout=0.3)
    x = rng.standard_normal((B, T, I))
    report = gradcheck(m, x, training=True, rng_seed=11)
    report.assert_ok()


def test_modules_in_sequence():
    rng = np.random.default_rng(6)
    emb = Embedding(7, 3, dtype=np.float64, rng=rng)
    rnn = make(CELLS[2][1], {}, 3, H, 1, True, rng)
    model = Sequential(emb, rnn, Dropout(0.2), Linear(2 * H, 5, dtype=np.float64, rng=rng))
    tokens = rng.integers(0, 7, (B, T))
    gradcheck(model, tokens, lengths=LENGTHS, training=True, rng_seed=2).assert_ok()
    state = [None, random_state("lstm", 1, 2, B, H, rng), None, None]
    gradcheck(model, tokens, lengths=LENGTHS, state=state).assert_ok()


@pytest.mark.parametrize("readout", [LastStep, MeanOverTime])
def test_many_to_one_readouts(readout):
    rng = np.random.default_rng(8)
    rnn = make(CELLS[3][1], {}, I, H, 1, False, rng)
    model = Sequential(rnn, readout(), Linear(H, 3, dtype=np.float64, rng=rng))
    x = rng.standard_normal((B, T, I))
    gradcheck(model, x, lengths=LENGTHS).assert_ok()
    gradcheck(model, x).assert_ok()


@pytest.mark.parametrize("feedback", ["identity", "softmax", "sigmoid"])
@pytest.mark.parametrize("hidden", [False, True], ids=["jordan", "jordan+elman"])
@pytest.mark.parametrize("mode", ["teacher", "free", "scheduled"])
def test_output_feedback(mode, hidden, feedback):
    rng = np.random.default_rng(9)
    K = 3
    layer = OutputFeedback(
        I, H, K, feedback=feedback, hidden_recurrence=hidden, dtype=np.float64, rng=rng
    )
    for v in layer.params.values():
        v[...] = rng.uniform(-0.6, 0.6, v.shape)
    x = rng.standard_normal((B, T, I))
    if feedback == "softmax":
        targets = rng.integers(0, K, (B, T))
    else:
        targets = rng.uniform(0, 1, (B, T, K))
    kwargs = {"targets": targets, "mode": mode, "lengths": LENGTHS}
    if mode == "scheduled":
        kwargs["p"] = 0.5
    gradcheck(layer, x, rng_seed=1, **kwargs).assert_ok()
    if hidden:
        gradcheck(layer, x, rng_seed=1, state=rng.standard_normal((B, H)), **kwargs).assert_ok()


def test_gradcheck_catches_a_wrong_gradient():
    """The checker itself must fail when a backward is wrong."""
    rng = np.random.default_rng(10)
    m = make(CELLS[0][1], {}, I, H, 1, False, rng)
    original = m.backward

    def broken(f, d_output, d_state=None):
        b = original(f, d_output, d_state)
        b.params["weight_hh_l0"] = b.params["weight_hh_l0"] * 1.001
        return b

    m.backward = broken
    report = gradcheck(m, rng.standard_normal((B, T, I)))
    assert not report.ok
    with pytest.raises(AssertionError, match="weight_hh_l0"):
        report.assert_ok()


@pytest.mark.parametrize("which", ["weight_ih_l0", "bias_hh_l0", "weight_hh_l0", "input"])
def test_gradcheck_fails_on_a_nan_gradient_wherever_it_is(which):
    """Python's max keeps a NaN only where it comes first: a NaN gradient of any array but
    the first checked passed the check (and its table said FAIL)."""
    from rnnlab.gradcheck import GradcheckReport

    rng = np.random.default_rng(11)
    m = make(CELLS[0][1], {}, I, H, 1, False, rng)
    original = m.backward

    def broken(f, d_output, d_state=None):
        b = original(f, d_output, d_state)
        if which == "input":
            b.input[...] = np.nan
        else:
            b.params[which] = np.full_like(b.params[which], np.nan)
        return b

    m.backward = broken
    report = gradcheck(m, rng.standard_normal((B, T, I)))
    assert np.isnan(report.errors[which]) and np.isnan(report.max_error) and not report.ok
    with pytest.raises(AssertionError, match=f"gradient check failed: {which} has relative "
                                             "error nan"):  # fmt: skip
        report.assert_ok()
    assert GradcheckReport({"a": 1e-9, "b": 1e-3}, {"a": 1, "b": 1}, 1e-6).max_error == 1e-3


@pytest.mark.parametrize("teacher", [1.0, 0.5, 0.0])
@pytest.mark.parametrize("cell", ["jordan", "jordan-elman"])
def test_feedback_model(cell, teacher):
    from rnnlab.models import build

    spec = {
        "input": {"type": "tokens", "vocab_size": 6, "embed_dim": 3},
        "rnn": {"cell": cell, "hidden_size": H},
        "output_size": 4,
        "feedback": "softmax",
    }
    model = build(spec, dtype=np.float64, rng=np.random.default_rng(1))
    rng = np.random.default_rng(2)
    tokens = rng.integers(0, 6, (B, T))
    targets = rng.integers(0, 4, (B, T))
    gradcheck(model, tokens, targets=targets, teacher=teacher, rng_seed=3).assert_ok()


def test_a_linear_over_a_time_major_input_keeps_its_memory_order_and_its_gradients():
    """A recurrent layer's batch-first output lies time-major in memory; Linear takes its rows
    in that order (no copy in either pass). The output then lies time-major too, and every
    value agrees with the same Linear over a C-contiguous copy of x."""
    rng = np.random.default_rng(5)
    lin = Linear(4, 3, dtype=np.float64, rng=rng)
    x = np.swapaxes(rng.standard_normal((T, B, 4)), 0, 1)  # (B, T, 4), time-major in memory
    f, g = lin.forward(x), lin.forward(np.ascontiguousarray(x))
    assert np.swapaxes(f.output, 0, 1).flags.c_contiguous
    np.testing.assert_allclose(f.output, g.output, rtol=1e-14)
    d = rng.standard_normal(f.output.shape)
    got, want = lin.backward(f, d), lin.backward(g, d)
    for key in want.params:
        np.testing.assert_allclose(got.params[key], want.params[key], rtol=1e-12)
    np.testing.assert_allclose(got.input, want.input, rtol=1e-12)
    rnn = make(CELLS[0][1], CELLS[0][2], I, H, 1, False, rng)
    gradcheck(Sequential(rnn, Linear(H, 3, dtype=np.float64, rng=rng)),
              rng.standard_normal((B, T, I)), lengths=LENGTHS).assert_ok()  # fmt: skip


def test_the_embedding_gradient_sums_each_ids_rows():
    rng = np.random.default_rng(6)
    emb = Embedding(9, 3, dtype=np.float64, rng=rng)
    ids = rng.integers(0, 5, (4, 7))  # ids 5..8 never seen: their rows get 0
    f = emb.forward(ids)
    d = rng.standard_normal(f.output.shape)
    want = np.zeros((9, 3))
    np.add.at(want, ids.reshape(-1), d.reshape(-1, 3))
    got = emb.backward(f, d).params["weight"]
    np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-15)
    assert not got[5:].any()


def test_gradcheck_names_a_gradient_the_module_does_not_return():
    """A backward that returns None for the input or an initial state is named, where the
    check indexed into None (an IndexError)."""
    from rnnlab.layers import RNN, Backward

    class NoInputGrad:
        def __init__(self):
            self.inner = RNN(2, 3, dtype=np.float64, rng=0)
            self.params = self.inner.params

        def forward(self, x, **kw):
            return self.inner.forward(x, **kw)

        def backward(self, f, d, d_state=None, **kw):
            b = self.inner.backward(f, d, d_state, **kw)
            return Backward(None, None, b.params)

    m, x = NoInputGrad(), np.random.default_rng(0).standard_normal((2, 3, 2))
    with pytest.raises(ValueError, match=r"`module` must be a backward pass that returns the "
                       r"gradient of the input; got None instead. check_input=False skips"):
        gradcheck(m, x)
    assert gradcheck(m, x, check_input=False).ok
    with pytest.raises(ValueError, match=r"gradient of the initial_state; got None"):
        gradcheck(m, x, check_input=False, state=np.zeros((1, 2, 3)))


@pytest.mark.parametrize("damage", ["padded", "reshaped", "swapped", "missing"])
def test_gradcheck_refuses_a_gradient_not_of_its_array_s_shape(damage):
    """A gradient is compared entry by entry with its array's: one padded with extra entries,
    given an extra axis, or a time-major input gradient for a batch-first input of one
    sequence (the same entries in another order) passed the check; a gradient left out was
    a KeyError."""
    from rnnlab.layers import RNN

    rng = np.random.default_rng(12)
    m = RNN(3, 4, dtype=np.float64, rng=rng)
    original = m.backward

    def broken(f, d_output, d_state=None):
        b = original(f, d_output, d_state)
        if damage == "padded":
            b.params["bias_hh_l0"] = np.concatenate([b.params["bias_hh_l0"], np.zeros(5)])
        elif damage == "reshaped":
            b.params["weight_ih_l0"] = b.params["weight_ih_l0"][None]
        elif damage == "swapped":
            b = type(b)(np.swapaxes(b.input, 0, 1), b.state, b.params)
        else:
            del b.params["bias_ih_l0"]
        return b

    m.backward = broken
    x = rng.standard_normal((1, T, 3))
    want = {"padded": r"gradient of the bias_hh_l0 has its shape \(4,\); got shape \(9,\)",
            "reshaped": r"gradient of the weight_ih_l0 has its shape \(4, 3\); got shape "
                        r"\(1, 4, 3\)",
            "swapped": r"gradient of the input has its shape \(1, 5, 3\); got shape \(5, 1, 3\)",
            "missing": r"returns the gradient of the bias_ih_l0; got None"}[damage]
    with pytest.raises(ValueError, match=r"`module` must be a backward pass .*" + want):
        gradcheck(m, x)


def test_gradcheck_checks_an_output_feedback_s_y0_and_a_list_input():
    """y0, the value an OutputFeedback feeds back at its first step, is checked as the
    initial state is (a wrong backward `y0` passed); an input given as a nested list, which
    forward reads, is checked as the array it is (its row was left out)."""
    rng = np.random.default_rng(13)
    layer = OutputFeedback(2, 4, 3, feedback="sigmoid", hidden_recurrence=True,
                           dtype=np.float64, rng=rng)  # fmt: skip
    x, y0, h0 = (rng.standard_normal(s) for s in ((2, 5, 2), (2, 3), (2, 4)))
    report = gradcheck(layer, x, mode="free", y0=y0, state=h0)
    report.assert_ok()
    assert {"input", "initial_state", "y0"} <= set(report.errors)
    original = layer.backward

    def broken(*args, **kwargs):
        b = original(*args, **kwargs)
        b.y0 = np.full_like(b.y0, 123.0)
        return b

    layer.backward = broken
    assert not gradcheck(layer, x, mode="free", y0=y0, state=h0).ok
    layer.backward = original
    for given in (x.tolist(), tuple(x.tolist())):  # (a tuple was left out: review of the diff)
        report = gradcheck(layer, given, mode="free", y0=y0, state=h0)
        assert "input" in report.errors and report.ok


def test_gradcheck_leaves_a_list_of_arrays_of_other_shapes_to_the_module():
    """A custom module may take x as a list of arrays of different shapes: gradcheck turns
    a list into an array only where it is one of numbers."""
    from rnnlab.layers import RNN

    class Pair:
        def __init__(self):
            self.inner = RNN(2, 3, dtype=np.float64, rng=0)
            self.params = self.inner.params

        def forward(self, x, **kw):
            return self.inner.forward(x[0] * x[1].sum(), **kw)

        def backward(self, f, d, d_state=None, **kw):
            return self.inner.backward(f, d, d_state, **kw)

    rng = np.random.default_rng(14)
    pair = [rng.standard_normal((2, 3, 2)), rng.standard_normal(5)]
    report = gradcheck(Pair(), pair)
    assert report.ok and "input" not in report.errors


@pytest.mark.parametrize("layout", ["fortran", "block"])
def test_gradcheck_perturbs_a_parameter_that_is_not_c_contiguous(layout):
    """A Fortran-ordered weight, or one that is a block of a larger matrix, was perturbed
    through a reshape(-1), a copy: the forward never saw the change, every difference was
    0, and a correct backward failed with relative error 1."""
    rng = np.random.default_rng(15)
    lin = Linear(3, 2, dtype=np.float64, rng=rng)
    w = lin.params["weight"]
    if layout == "fortran":
        lin.params["weight"] = np.asfortranarray(w)
    else:
        wider = rng.standard_normal((2, 5))
        wider[:, 1:4] = w
        lin.params["weight"] = wider[:, 1:4]
    assert not lin.params["weight"].flags.c_contiguous
    kept = lin.params["weight"].copy()
    report = gradcheck(lin, rng.standard_normal((2, 4, 3)))
    report.assert_ok()
    assert report.errors["weight"] < 1e-8
    np.testing.assert_array_equal(lin.params["weight"], kept)  # every entry put back
    report = gradcheck(lin, rng.standard_normal((2, 4, 3)), max_entries=4)  # a subset
    assert report.ok and report.errors["weight"] < 1e-8


def test_gradcheck_names_a_read_only_parameter():
    """Each entry is perturbed in place: a read-only weight (a view of a file's bytes, or
    one frozen with flags.writeable = False) was NumPy's bare 'assignment destination is
    read-only', naming neither the weight nor gradcheck's need."""
    lin = Linear(3, 2, dtype=np.float64, rng=0)
    lin.params["weight"].flags.writeable = False
    with pytest.raises(ValueError, match=r"`module` must be parameters gradcheck can perturb "
                       r"in place \(writeable\); got parameter 'weight' read-only"):  # fmt: skip
        gradcheck(lin, np.ones((2, 4, 3)))
