"""Bad input gets a clear error naming the argument, what was expected and what came."""

import numpy as np
import pytest
from helpers import oracle

import rnnlab
from rnnlab import GRU, LSTM, RNN, Embedding, Linear, Sequential, gradcheck
from rnnlab.modules import Dropout, LastStep

B, T, I, H = 2, 4, 3, 5


@pytest.fixture
def lstm():
    return LSTM(I, H, rng=0)


@pytest.fixture
def x():
    return np.zeros((B, T, I), np.float32)


def test_input_rank(lstm):
    with pytest.raises(
        ValueError, match=r"`x` must be an array with 3 dimensions; got shape \(4, 3\)"
    ):
        lstm.forward(np.zeros((T, I), np.float32))


def test_input_features(lstm):
    with pytest.raises(
        ValueError, match=r"`x` must be an array with 3 features .*got shape \(2, 4, 7\)"
    ):
        lstm.forward(np.zeros((B, T, 7), np.float32))


def test_integer_input_hints_at_embedding(lstm):
    with pytest.raises(ValueError, match=r"`x` must be a floating-point array.*int64.*Embedding"):
        lstm.forward(np.zeros((B, T, I), np.int64))


def test_dtype_mismatch(lstm):
    with pytest.raises(ValueError, match=r"`x` must be of dtype float32 .*got dtype float64"):
        lstm.forward(np.zeros((B, T, I)))


def test_not_an_array(lstm):
    with pytest.raises(ValueError, match=r"`x` must be a NumPy array of floats; got 'abc'"):
        lstm.forward("abc")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_input(lstm, x, bad):
    x[1, 2, 0] = bad
    with pytest.raises(
        ValueError, match=r"`x` must be finite \(no NaN or inf\); got .* at index \(1, 2, 0\)"
    ):
        lstm.forward(x)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, "inf and -inf"])
def test_non_finite_values_found_in_wide_arrays(dtype, bad):
    """Arrays with rows of ≥ 16 values are summed as a product with a vector of ones: every
    NaN or ±inf is still found, wherever it is, and finite values whose sums overflow pass."""
    from rnnlab import _checks

    rng = np.random.default_rng(0)
    for where in [(0, 0, 0), (2, 3, 16), (4, 6, 31)]:
        x = rng.standard_normal((5, 7, 32)).astype(dtype)
        if bad == "inf and -inf":  # one row whose sum would be NaN, the others finite
            x[where], x[where[:2] + ((where[2] + 1) % 32,)] = np.inf, -np.inf
        else:
            x[where] = bad
        with pytest.raises(ValueError, match=rf"at index \({where[0]}, {where[1]}, "):
            _checks.float_array(x, "x")
    huge = np.full((5, 7, 32), np.finfo(dtype).max / 4, dtype)
    assert _checks.float_array(huge, "x") is huge


@pytest.mark.parametrize(
    "lengths,match",
    [
        (
            [4, 0],
            r"`lengths` must be between 1 and the padded length 4; got a length of 0.*Zero-length",
        ),
        ([4, 5], r"`lengths` must be between 1 and the padded length 4; got a length of 5"),
        ([4], r"`lengths` must be an array of shape \(2,\)"),
        ([4.0, 2.0], r"`lengths` must be an array of integers"),
    ],
)
def test_bad_lengths(lstm, x, lengths, match):
    with pytest.raises(ValueError, match=match):
        lstm.forward(x, lengths=np.array(lengths))


def test_mask_problems(lstm, x):
    with pytest.raises(ValueError, match=r"`lengths` must be None when `mask` is given"):
        lstm.forward(x, lengths=np.array([1, 2]), mask=np.ones((B, T), bool))
    with pytest.raises(
        ValueError, match=r"`mask` must be an array of shape \(2, 4\); got shape \(4, 2\)"
    ):
        lstm.forward(x, mask=np.ones((T, B), bool))
    with pytest.raises(ValueError, match=r"`mask` must be a boolean array"):
        lstm.forward(x, mask=np.ones((B, T)))
    mask = np.ones((B, T), bool)
    mask[1] = False
    with pytest.raises(
        ValueError, match=r"`mask` must be True at one step .* batch index 1.*Zero-length"
    ):
        lstm.forward(x, mask=mask)


def test_state_shapes(lstm, x):
    with pytest.raises(ValueError, match=r"`state` must be a pair \(h0, c0\) for an LSTM"):
        lstm.forward(x, state=np.zeros((1, B, H), np.float32))
    with pytest.raises(
        ValueError,
        match=r"`state\[0\] \(h0\)` must be an array of shape \(1, 2, 5\); got shape \(2, 5\)",
    ):
        lstm.forward(x, state=(np.zeros((B, H), np.float32), np.zeros((1, B, H), np.float32)))
    gru = GRU(I, H, 2, rng=0)
    with pytest.raises(
        ValueError, match=r"`state` must be an array of shape \(2, 2, 5\); got shape \(1, 2, 5\)"
    ):
        gru.forward(x, state=np.zeros((1, B, H), np.float32))


def test_backward_shapes(lstm, x):
    f = lstm.forward(x)
    with pytest.raises(
        ValueError, match=r"`d_output` must be an array of shape \(2, 4, 5\); got shape \(2, 4\)"
    ):
        lstm.backward(f, np.zeros((B, T), np.float32))
    with pytest.raises(ValueError, match=r"`d_state` must be a pair \(dh_n, dc_n\)"):
        lstm.backward(f, np.zeros_like(f.output), np.zeros((1, B, H), np.float32))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"hidden_size": 0}, r"`hidden_size` must be a positive integer; got 0"),
        ({"num_layers": 1.5}, r"`num_layers` must be a positive integer; got 1.5"),
        ({"dropout": 1.5}, r"`dropout` must be a number in \[0, 1\); got 1.5"),
        ({"merge": "mul"}, r"`merge` must be one of 'concat', 'sum', 'readout'; got 'mul'"),
        ({"merge": "readout"}, r"`merge` must be 'concat' for a unidirectional layer"),
        (
            {"merge": "readout", "bidirectional": True},
            r"`output_size` must be a positive integer; got None",
        ),
        ({"output_size": 3}, r"`output_size` must be None unless merge='readout'"),
        ({"init": "irnn"}, r"`init` must be 'uniform' or 'orthogonal' for an LSTM or GRU.*IRNN"),
        ({"dtype": np.int32}, r"`dtype` must be float32 or float64; got int32"),
        (
            {"initial_state": "random"},
            r"`initial_state` must be one of 'zeros', 'learned'; got 'random'",
        ),
        (
            {"initial_state": float("nan")},
            r"`initial_state` must be 'zeros', 'learned' or a finite number",
        ),
        ({"rng": "seed"}, r"`rng` must be a numpy Generator, an integer seed, a SeedSequence, "
                          r"a BitGenerator or None"),
    ],
)
def test_constructor_arguments(kwargs, match):
    args = {"input_size": I, "hidden_size": H, **kwargs}
    with pytest.raises(ValueError, match=match):
        LSTM(**args)


def test_numpys_seed_objects_seed_a_model_as_numpy_does():
    """models.build, the layers and training's masks refused a SeedSequence or a BitGenerator
    (what NumPy's seeding guide hands out, and default_rng takes): they seed as default_rng
    would; a list stays refused."""
    from rnnlab import models
    from rnnlab.modules import Dropout

    spec = {"input": {"type": "vectors", "size": 3}, "rnn": {"cell": "gru", "hidden_size": 4},
            "output_size": 2}
    a = models.build(spec, rng=np.random.SeedSequence(7))
    b = models.build(spec, rng=np.random.default_rng(np.random.SeedSequence(7)))
    c = models.build(spec, rng=np.random.PCG64(7))
    for k, v in a.params.items():
        np.testing.assert_array_equal(v, b.params[k], err_msg=k)
        np.testing.assert_array_equal(v, c.params[k], err_msg=k)
    x = np.ones((2, 3, 5), np.float32)
    d1 = Dropout(0.5).forward(x, training=True, rng=np.random.SeedSequence(1)).output
    d2 = Dropout(0.5).forward(x, training=True, rng=np.random.default_rng(
        np.random.SeedSequence(1))).output  # fmt: skip
    np.testing.assert_array_equal(d1, d2)
    # a Sequential makes one Generator of the seed for all its modules, as of an int: two
    # Dropouts given the same SeedSequence each drew the same mask, so half the values
    # survived both instead of a quarter (regression review)
    two = Sequential(Dropout(0.5), Dropout(0.5))
    many = np.ones((4, 10, 100), np.float32)
    for seed in (np.random.SeedSequence(4), np.random.PCG64(4), 4, np.random.default_rng(4)):
        kept = np.mean(two.forward(many, training=True, rng=seed).output != 0)
        assert 0.2 < kept < 0.3, (type(seed).__name__, kept)
    with pytest.raises(ValueError, match=r"`rng` must be a numpy Generator, an integer seed, a "
                       r"SeedSequence, a BitGenerator or None; got a list"):
        LSTM(I, H, rng=[1, 2])


def test_cell_specific_options():
    with pytest.raises(
        ValueError, match=r"`forget_bias` must be None for GRU \(it is an option of LSTM\)"
    ):
        GRU(I, H, forget_bias=1.0)
    with pytest.raises(
        ValueError,
        match=r"`LSTM\(...\)` must be called with the layer's keywords.*keyword 'hiden_size'",
    ):
        LSTM(I, H, hiden_size=3)
    with pytest.raises(
        ValueError, match=r"`nonlinearity` must be one of 'tanh', 'relu'; got 'sigmoid'"
    ):
        RNN(I, H, nonlinearity="sigmoid")


@pytest.mark.parametrize("module", [LSTM(I, H, rng=0), Linear(I, 2, rng=0), Dropout(0.5),
                                    LastStep(), Sequential(LSTM(I, H, rng=0))],
                         ids=lambda m: type(m).__name__)  # fmt: skip
def test_an_unknown_pass_option_is_refused(module, x):
    """The pass options are written once (rnnlab.layers.PassOptions); a misspelt one is named,
    not ignored, by forward and by calling the module."""
    name = type(module).__name__
    for run in (module.forward, module):
        with pytest.raises(TypeError, match=rf"^{name}.forward\(\) got an unexpected keyword "
                                            r"argument 'lenghts'; the options of a pass are "
                                            r"lengths, mask, state, training, rng, check, grad$"):
            run(x, lenghts=np.array([4, 4]))


def test_dropout_needs_an_rng(x):
    m = LSTM(I, H, 2, dropout=0.5, rng=0)
    with pytest.raises(
        ValueError, match=r"`rng` must be a numpy Generator or a seed when training with dropout"
    ):
        m.forward(x, training=True)
    with pytest.raises(
        ValueError, match=r"`rng` must be a numpy Generator or a seed when training with dropout"
    ):
        Dropout(0.5).forward(x, training=True)


def test_load_state_dict_names_and_shapes(lstm):
    with pytest.raises(
        ValueError, match=r"`state` must be a dict with exactly .*missing \['weight_hh_l0'"
    ):
        lstm.load_state_dict({k: v for k, v in lstm.params.items() if k != "weight_hh_l0"})
    bad = lstm.state_dict()
    bad["bias_ih_l0"] = np.zeros(3)
    with pytest.raises(
        ValueError,
        match=r"`state\['bias_ih_l0'\]` must be an array of shape \(20,\); got shape \(3,\)",
    ):
        lstm.load_state_dict(bad)


def test_embedding_ids():
    emb = Embedding(5, 3, rng=0)
    with pytest.raises(ValueError, match=r"`x` must be token ids in \[0, 5\); got the id 7"):
        emb.forward(np.array([[1, 7]]))
    with pytest.raises(ValueError, match=r"`x` must be an array of integers"):
        emb.forward(np.array([[1.0]]))


def test_linear_features():
    with pytest.raises(ValueError, match=r"`x` must be an array with 4 features in its last axis"):
        Linear(4, 2, rng=0).forward(np.zeros((2, 3), np.float32))


def test_sequential_checks():
    with pytest.raises(ValueError, match=r"`modules\[1\]` must be an rnnlab module"):
        Sequential(LastStep(), "linear")
    seq = Sequential(LSTM(I, H, rng=0), LastStep())
    with pytest.raises(ValueError, match=r"`state` must be a list of 2 entries"):
        seq.forward(np.zeros((B, T, I), np.float32), state=[None])


def test_sequential_refuses_a_module_whose_weights_are_a_matrix():
    """A user's own module holding an np.matrix: `*` on it is a matrix product, so every
    optimizer's step computed something else (Adam's compiled step failed inside numba)."""
    lin = Linear(3, 3, rng=0)
    lin.params["weight"] = lin.params["weight"].view(np.matrix)
    with pytest.raises(ValueError, match=r"`modules\[1\].params\['weight'\]` must be a plain "
                       r"NumPy array .*; got a numpy.matrix of shape \(3, 3\)"):  # fmt: skip
        Sequential(LSTM(I, 3, rng=0), lin)


def test_gradcheck_needs_float64(lstm, x):
    with pytest.raises(ValueError, match=r"`module` must be a float64 module .*float32.*rounding"):
        gradcheck(lstm, x)


def _readout_models():
    rng = np.random.default_rng(0)
    lin = Linear(4, 6, rng=rng)
    yield "linear", lin, np.zeros((2, 3, 4), np.float32)
    yield "embedding", Embedding(5, 6, rng=rng), np.zeros((2, 3), np.int64)
    yield "dropout", Dropout(0.5), np.zeros((2, 3, 6), np.float32)
    yield "laststep", LastStep(), np.zeros((3, 3, 3), np.float32)
    yield "sequential", Sequential(Linear(4, 6, rng=rng), Linear(6, 6, rng=rng)), np.zeros(
        (2, 3, 4), np.float32
    )


@pytest.mark.parametrize("name,module,x", list(_readout_models()),
                         ids=[m[0] for m in _readout_models()])  # fmt: skip
@pytest.mark.parametrize("how", ["transposed", "broadcast", "flat"])
def test_backward_refuses_a_d_output_of_another_shape(name, module, x, how):
    """A d_output of the same size but another shape (or one that broadcasts) would give
    wrong gradients without a word."""
    f = module.forward(x, training=name == "dropout", rng=np.random.default_rng(1))
    shape = f.output.shape
    if how == "transposed":
        d = np.ones(shape[::-1], np.float32)
    elif how == "broadcast":
        d = np.ones(shape[-1:], np.float32)
    else:
        d = np.ones(int(np.prod(shape)), np.float32)
    if d.shape == shape:  # a square output: nothing to transpose
        d = d.reshape(-1)
    with pytest.raises(ValueError, match=r"`d_output` must be an array (of shape|with)"):
        module.backward(f, d)


@pytest.mark.parametrize("bad", ["nan", "inf", "complex", "str", "late shape"])
def test_load_state_dict_is_all_or_nothing(bad):
    """A refused state leaves every weight as it was (a later bad key used to fail after
    the earlier ones were copied), and NaN, inf or complex values are refused."""
    m = LSTM(I, H, rng=0)
    before = m.state_dict()
    state = {k: np.ones(v.shape, v.dtype) for k, v in before.items()}
    last = list(state)[-1]
    if bad == "nan":
        state[last][0] = np.nan
    elif bad == "inf":
        state[last][0] = -np.inf
    elif bad == "complex":
        state[last] = state[last] + 1j
    elif bad == "str":
        state[last] = np.full(state[last].shape, "1")
    else:
        state[last] = np.ones(7, np.float32)
    with pytest.raises(ValueError, match=rf"`state\['{last}'\]` must be"):
        m.load_state_dict(state)
    for k, v in m.params.items():
        np.testing.assert_array_equal(v, before[k])


def test_a_given_state_is_checked_finite_unless_its_model_hands_it_on():
    """check_state=False (a model handing on a state it computed: Seq2Seq's encoder's to its
    decoder) skips the state's finiteness check: a diverging encoder-decoder run said
    "`state` must be finite" (exit 2, a usage error) instead of its divergence. check=False
    alone does not: in a Sequential only module 0 checks its input, and a NaN state given to
    a later layer must still be refused."""
    import rnnlab

    lstm = rnnlab.LSTM(2, 3, rng=np.random.default_rng(0))
    x = np.zeros((1, 2, 2), np.float32)
    state = (np.full((1, 1, 3), np.inf, np.float32), np.zeros((1, 1, 3), np.float32))
    for check in (True, False):
        with pytest.raises(ValueError, match=r"`state\[0\] \(h0\)` must be finite"):
            lstm.forward(x, state=state, check=check)
    assert not np.isfinite(lstm.forward(x, state=state, check_state=False).output).all()
    with pytest.raises(ValueError, match=r"`check_state` must be True or False"):
        lstm.forward(x, check_state="no")
    model = Sequential([Embedding(5, 2), lstm, Linear(3, 2)])
    with pytest.raises(ValueError, match=r"`state\[0\] \(h0\)` must be finite"):
        model.forward(np.zeros((1, 2), np.int64), state=[None, state, None])


_LAYERS = {
    "lstm": lambda: rnnlab.LSTM(4, 5),
    "lstm-proj": lambda: rnnlab.LSTM(4, 5, proj_size=2),
    "lstm-layer-norm": lambda: rnnlab.Recurrent(rnnlab.cells.LSTMCell(layer_norm=True), 4, 5),
    "lstm-peephole": lambda: rnnlab.Recurrent(rnnlab.cells.LSTMCell(peephole=True), 4, 5),
    "rnn": lambda: rnnlab.RNN(4, 5),
    "relu": lambda: rnnlab.RNN(4, 5, nonlinearity="relu"),
    "gru": lambda: rnnlab.GRU(4, 5),
    "gru-orig": lambda: rnnlab.GRU(4, 5, reset_after=False),
    "rnn-time-major": lambda: rnnlab.RNN(4, 5, batch_first=False),
    "rnn-zoneout": lambda: rnnlab.RNN(4, 5, zoneout=0.2),
    "rnn-float64": lambda: rnnlab.RNN(4, 5, dtype=np.float64),
}


@pytest.mark.parametrize("before,after", [
    ("lstm-proj", "lstm"), ("lstm", "lstm-proj"), ("lstm", "lstm-layer-norm"),
    ("lstm", "lstm-peephole"), ("rnn", "relu"), ("gru", "gru-orig"), ("rnn", "rnn-time-major"),
    ("rnn", "rnn-zoneout"), ("rnn", "rnn-float64")])  # fmt: skip
def test_backward_refuses_the_forward_of_a_layer_of_another_kind(before, after):
    """The check named only the cell class, layers, width and directions: a plain LSTM's
    backward on a projecting LSTM's tape wrote outside the compiled loops' arrays (free():
    invalid pointer, the process aborted), on a layer-normalised one's gave NaN, and a relu
    RNN's on a tanh one's, a reset-before GRU's on a reset-after one's, gave wrong gradients
    without a word. A layer of the same settings (other weights) still reads it."""
    layer = _LAYERS[before]()
    x = np.random.default_rng(0).standard_normal((2, 3, 4)).astype(layer.dtype)
    f = layer.forward(x)
    with pytest.raises(ValueError, match=r"`f` must be the result of this layer's forward \("):
        _LAYERS[after]().backward(f, np.ones_like(f.output))
    _LAYERS[before]().backward(f, np.ones_like(f.output))


def test_the_switches_of_a_pass_and_dropout_s_input_are_checked():
    """training="False" trained (zoneout's and dropout's masks drawn: truthy), grad="False"
    kept the tape; Dropout made NaN and inf of integers (1/(1 − p) rounded to int 0) and
    failed on a list with AttributeError."""
    x = np.random.default_rng(0).standard_normal((2, 3, 4)).astype(np.float32)
    g = GRU(4, 5, zoneout=0.3)
    for key, value in (("training", "False"), ("grad", "False"), ("check", "no"),
                       ("training", None)):  # fmt: skip
        with pytest.raises(ValueError, match=rf"`{key}` must be True or False; got "):
            g.forward(x, rng=0, **{key: value})
    with pytest.raises(ValueError, match=r"`training` must be True or False"):
        Dropout(0.5).forward(x, training="no", rng=0)
    with pytest.raises(ValueError, match=r"`x` must be an array of floats; got dtype int64 "
                       r"instead"):
        Dropout(0.5).forward(np.ones((2, 3), np.int64), training=True, rng=0)
    with pytest.raises(ValueError, match=r"`x` must be an array of floats; got a list"):
        Dropout(0.5).forward([[1.0, 2.0]], training=True, rng=0)
    assert Dropout(0.5).forward([[1, 2]]).output.tolist() == [[1, 2]]  # (inference: its array)
    assert Dropout(0.5).forward(np.ones(3, np.float16), training=True, rng=0).output.dtype == (
        np.float16)
    assert g.forward(x, training=np.bool_(False)).output.shape == (2, 3, 5)


def test_a_sequential_of_recurrent_layers_of_two_layouts_is_refused():
    """A time-major GRU after a batch-first one ran its recurrence over the batch (changing
    sequence 0 changed sequence 1's output) and with lengths said "lengths must be an array
    of shape (5,)"; through a Linear as well."""
    with pytest.raises(ValueError, match=r"`modules\[1\]` must be a layer of the layout of "
                       r"module 0, batch-first \(B, T, F\), whose output it reads; got one with "
                       r"batch_first=False instead"):
        Sequential(GRU(3, 4), GRU(4, 4, batch_first=False))
    with pytest.raises(ValueError, match=r"`modules\[2\]` must be a layer of the layout of "
                       r"module 0, time-major"):
        Sequential(GRU(3, 4, batch_first=False), Linear(4, 4), GRU(4, 4))
    Sequential(GRU(3, 4, batch_first=False), Linear(4, 4), GRU(4, 4, batch_first=False))


def test_load_state_dict_refuses_a_weight_beyond_the_modules_range():
    """A float64 weight beyond float32's range became inf in a float32 module (with NumPy's
    RuntimeWarning), then was refused as "must be finite; got inf", a value never given."""
    m = LSTM(I, H, rng=0)
    before = m.state_dict()
    state = {k: v.astype(np.float64) for k, v in before.items()}
    state["weight_hh_l0"][2, 1] = -1e300
    with pytest.raises(ValueError, match=r"`state\['weight_hh_l0'\]` must be within float32's "
                       r"range \(\|w\| ≤ 3.4e\+38: the module is float32\); got -1e\+300 at "
                       r"index \(2, 1\) instead\."):  # fmt: skip
        m.load_state_dict(state)
    for k, v in m.params.items():
        np.testing.assert_array_equal(v, before[k])
    m64 = LSTM(I, H, rng=0, dtype=np.float64)  # which holds it
    m64.load_state_dict(state)
    assert m64.params["weight_hh_l0"][2, 1] == -1e300


@pytest.mark.parametrize("how", ["numpy int64", "numpy uint8", "torch int32"])
def test_load_state_dict_refuses_integer_arrays(how):
    """An array or tensor of an integer dtype under a weight's name (a quantized weight, whose
    scale is elsewhere, or a counter) was cast and loaded as if its integers were the weights;
    the Keras loader refused the same. Nested lists of Python numbers still load."""
    m = Linear(2, 2, rng=0)
    before = m.state_dict()
    w = np.array([[3, 0], [0, 3]])
    if how.startswith("torch"):
        torch = oracle("torch")
        weight, dtype = torch.from_numpy(w).to(torch.int32), "int32"
    else:
        dtype = how.split()[1]
        weight = w.astype(dtype)
    with pytest.raises(ValueError, match=r"`state\['weight'\]` must be an array of "
                       rf"floating-point weights; got dtype {dtype}"):  # fmt: skip
        m.load_state_dict({"weight": weight, "bias": np.zeros(2, np.float32)})
    for k, v in m.params.items():
        np.testing.assert_array_equal(v, before[k])
    m.load_state_dict({"weight": [[3, 0], [0, 3]], "bias": [0, 0]})
    np.testing.assert_array_equal(m.params["weight"], w)


def test_load_state_dict_refuses_a_tensor_without_values():
    """A torch tensor on the meta device (a model built with device="meta" holds shapes, no
    values) came out as torch's NotImplementedError from deep inside the copy."""
    torch = oracle("torch")
    m = Linear(2, 3, rng=0)
    state = {k: torch.empty(v.shape, device="meta") for k, v in m.params.items()}
    with pytest.raises(ValueError, match=r"`state\['weight'\]` must be an array of real numbers "
                       r"\(a NumPy array, a torch tensor .*\); got tensor\(.*device='meta'"):
        m.load_state_dict(state)


def test_load_state_dict_says_where_a_prefixed_state_holds_the_names():
    """A torch module's own state_dict is keyed by its attributes ('rnn.weight_ih_l0'): the
    refusal listed every name twice, as missing and unexpected, and left the user to see
    the prefix. Now it says it, and the way it gives loads."""
    torch = oracle("torch")

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = torch.nn.LSTM(I, H, 2, batch_first=True)
            self.fc = torch.nn.Linear(H, 2)

    state = Net().state_dict()
    m = LSTM(I, H, 2, rng=0)
    with pytest.raises(ValueError, match=r"missing \['weight_ih_l0', .*\] and unexpected "
                       r"\['rnn.weight_ih_l0', .*\] instead\. They are in `state` under 'rnn\.': "
                       r"load \{k\.removeprefix\('rnn\.'\): v for k, v in state\.items\(\) if "
                       r"k\.startswith\('rnn\.'\)\}\.$"):  # fmt: skip
        m.load_state_dict(state)
    m.load_state_dict({k.removeprefix("rnn."): v for k, v in state.items()
                       if k.startswith("rnn.")})  # fmt: skip
    np.testing.assert_array_equal(m.params["weight_hh_l1"], state["rnn.weight_hh_l1"].numpy())
    seq = Sequential(LSTM(I, H, rng=0), Linear(H, 2, rng=0))  # DataParallel's 'module.'
    wrapped = {f"module.{k}": v for k, v in seq.state_dict().items()}
    with pytest.raises(ValueError, match=r"under 'module\.'"):
        seq.load_state_dict(wrapped)
    with pytest.raises(ValueError, match=r"unexpected \['foo'\] instead\.$"):  # no hint
        seq.load_state_dict({**seq.state_dict(), "foo": np.zeros(1)})


@pytest.mark.parametrize("theirs,ours,blocks,what,has", [
    ("GRU", "LSTM", 3, "a GRU's", "lstm, has 4"),
    ("LSTM", "GRU", 4, "an LSTM's", "gru, has 3"),
    ("RNN", "GRU", 1, "an Elman RNN's", "gru, has 3"),
    ("LSTM", "RNN", 4, "an LSTM's", "rnn, has 1"),
])  # fmt: skip
def test_load_state_dict_names_the_cell_whose_weights_came(theirs, ours, blocks, what, has):
    """PyTorch's RNN, GRU and LSTM name their weights alike: another cell's state_dict was
    refused as a shape, (16, 4) against (12, 4), leaving the user to count gate blocks. It
    says whose weights they are when the hidden size says it (W_hh's columns)."""
    torch = oracle("torch")
    state = getattr(torch.nn, theirs)(3, 4, 2).state_dict()
    layer = {"GRU": GRU, "LSTM": LSTM, "RNN": RNN}[ours](3, 4, 2, rng=0)
    rows = 4 * blocks
    with pytest.raises(ValueError, match=rf"^`state\['weight_ih_l0'\]` must be an array of shape "
                       rf"\({4 * layer.cell.gates}, 3\); got shape \({rows}, 3\) instead\. Its "
                       rf"{rows} rows are {blocks} gate blocks? of hidden_size 4: {what} "
                       rf"weights, where this layer's cell, {has}\.$"):  # fmt: skip
        layer.load_state_dict(state)
    other = torch.nn.LSTM(3, 3, 2).state_dict()  # 12 rows of hidden size 3: no GRU's
    with pytest.raises(ValueError, match=r"got shape \(12, 3\) instead\.$"):
        LSTM(3, 4, 2, rng=0).load_state_dict(other)
