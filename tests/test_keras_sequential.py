"""rnnlab.keras.load_weights into a whole Sequential: the Keras model rnnlab exports
(Embedding → SimpleRNN/LSTM/GRU → Dense) loads back whole, Embedding and Dense included
(only the recurrent layers loaded before), and a model built in Keras (torch backend, the
oracle) computes in rnnlab what it computes in Keras."""

import numpy as np
import pytest
from helpers import keras_oracle, oracle

keras = keras_oracle()
h5py = oracle("h5py")

import rnnlab.keras as rk  # noqa: E402
from rnnlab.layers import GRU, LSTM, RNN  # noqa: E402
from rnnlab.modules import Dropout, Embedding, LastStep, Linear, MeanOverTime, Sequential  # noqa: E402

ATOL = 1e-5

# Keras 3.15's Variable.numpy() (get_weights) trips NumPy 2's __array__ copy deprecation
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)


def model_of(which, seed):
    rng = np.random.default_rng(seed)
    if which == "tagger":
        return Sequential(Embedding(12, 4, rng=rng), LSTM(4, 5, rng=rng), Linear(5, 12, rng=rng))
    if which == "classifier":  # stacked, dropout, LastStep, two Dense
        return Sequential(Embedding(12, 4, rng=rng), GRU(4, 5, 2, dropout=0.2, rng=rng),
                          Linear(5, 6, rng=rng), Dropout(0.1), LastStep(),
                          Linear(6, 3, bias=False, rng=rng))  # fmt: skip
    if which == "bi_mean":
        return Sequential(Embedding(9, 3, rng=rng), RNN(3, 4, bidirectional=True, rng=rng),
                          MeanOverTime(), Linear(8, 2, rng=rng))  # fmt: skip
    assert which == "learned_start"
    return Sequential(Embedding(9, 3, rng=rng), LSTM(3, 4, initial_state="learned", rng=rng),
                      Linear(4, 9, rng=rng))  # fmt: skip


@pytest.mark.parametrize("which", ["tagger", "classifier", "bi_mean", "learned_start"])
def test_an_exported_model_loads_back_whole(which, tmp_path):
    """rnnlab → .weights.h5 → rnnlab: every weight identical (float32 both ways), but a
    recurrent layer's two biases where Keras has one (LSTM, SimpleRNN, the original GRU):
    their sum, which is what both compute, comes back in b_ih, b_hh zeros."""
    ours = model_of(which, 0)
    for v in ours.params.values():  # (a learned start is zeros at first: give it values)
        v[...] = np.random.default_rng(5).uniform(-0.6, 0.6, v.shape)
    path = rk.save_weights(ours, tmp_path / "m.weights.h5")
    again = model_of(which, 1)
    rk.load_weights(again, path)
    assert list(again.params) == list(ours.params)
    one_bias = which != "classifier"  # (its GRU is reset-after: two biases in Keras)
    for name, value in ours.params.items():
        if one_bias and "bias_ih" in name:
            value = value + ours.params[name.replace("bias_ih", "bias_hh")]
        elif one_bias and "bias_hh" in name:
            value = np.zeros_like(value)
        assert np.array_equal(again.params[name], value), name
    x = np.random.default_rng(3).integers(0, 3, (2, 5))
    np.testing.assert_allclose(again.forward(x).output, ours.forward(x).output, atol=1e-6)


def keras_tagger(bi=False, bias=True):
    inner = keras.layers.LSTM(5, return_sequences=True)
    return keras.Sequential([
        keras.Input((None,), dtype="int32"),
        keras.layers.Embedding(12, 4),
        keras.layers.Bidirectional(inner, merge_mode="sum") if bi else inner,
        keras.layers.Dropout(0.3),
        keras.layers.Dense(7, use_bias=bias),
    ])  # fmt: skip


@pytest.mark.parametrize("source", ["keras_file", "weights_file", "model", "layers"])
@pytest.mark.parametrize("bi", [False, True], ids=["uni", "bi"])
def test_a_keras_model_computes_the_same_in_rnnlab(source, bi, tmp_path):
    k = keras_tagger(bi)
    x = np.random.default_rng(2).integers(0, 12, (3, 6))
    want = keras.ops.convert_to_numpy(k(x))
    if source == "keras_file":
        given = tmp_path / "m.keras"
        k.save(given)
    elif source == "weights_file":
        given = tmp_path / "m.weights.h5"
        k.save_weights(given)
    else:
        given = k if source == "model" else list(k.layers)
    ours = Sequential(Embedding(12, 4), LSTM(4, 5, bidirectional=bi, merge="sum"), Dropout(0.3),
                      Linear(5, 7))  # fmt: skip
    rk.load_weights(ours, given)
    got = ours.forward(x).output
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=ATOL, rtol=0)


def _unchanged(model):
    return {n: v.copy() for n, v in model.params.items()}


def _assert_unchanged(model, before):
    for n, v in model.params.items():
        assert np.array_equal(v, before[n]), n


@pytest.mark.parametrize(
    ("ours", "message"),
    [
        (lambda: Sequential(Embedding(12, 4), LSTM(4, 5)),
         r"^`source \('.*m\.keras'\)` must be 0 Dense layers \(the model's Linear modules\); "
         r"got 1 \('dense'\) instead\.$"),
        (lambda: Sequential(Embedding(12, 4), LSTM(4, 5), Linear(5, 7), Linear(7, 7)),
         r"must be 2 Dense layers \(the model's Linear modules\); got 1 \('dense'\)"),
        (lambda: Sequential(Embedding(13, 4), LSTM(4, 5), Linear(5, 7)),
         r"^`source \('.*m\.keras', layer 'embedding'\) embeddings` must be an array of shape "
         r"\(13, 4\) \(the Embedding's num_embeddings, embedding_dim\); got shape \(12, 4\) "
         r"instead\.$"),
        (lambda: Sequential(Embedding(12, 4), LSTM(4, 5), Linear(5, 8)),
         r"^`source \('.*m\.keras', layer 'dense'\) kernel` must be an array of shape \(5, 8\) "
         r"\(the Linear's in_features, out_features\); got shape \(5, 7\) instead\.$"),
        (lambda: Sequential(Embedding(12, 4), LSTM(4, 5), Linear(5, 7, bias=False)),
         r"^`source \('.*m\.keras', layer 'dense'\)` must be a Dense without a bias "
         r"\(use_bias=False\), for a Linear without one; got a Dense with a bias instead\."),
        (lambda: Sequential(Embedding(12, 4), GRU(4, 5), Linear(5, 7)),
         r"`source \('.*m\.keras', layer 'lstm'\)` must be a Keras GRU for rnnlab's gru; got an "
         r"LSTM instead"),
        (lambda: Sequential(LSTM(4, 5), Linear(5, 7)),
         r"must be 0 Embedding layers \(the model's Embedding modules\); got 1 \('embedding'\)"),
    ],
    ids=["dense_left_over", "dense_missing", "embedding_shape", "dense_shape", "bias",
         "kind", "embedding_left_over"],
)  # fmt: skip
def test_a_model_that_does_not_fit_is_refused_naming_file_and_layer(ours, message, tmp_path):
    k = keras_tagger()
    k.save(tmp_path / "m.keras")
    model = ours()
    before = _unchanged(model)
    with pytest.raises(ValueError, match=message):
        rk.load_weights(model, tmp_path / "m.keras")
    _assert_unchanged(model, before)  # checked whole before a weight is written


def test_a_dense_without_bias_loads_zeros_into_a_linear_s(tmp_path):
    k = keras_tagger(bias=False)
    k.save_weights(tmp_path / "m.weights.h5")
    ours = Sequential(Embedding(12, 4), LSTM(4, 5), Linear(5, 7))
    rk.load_weights(ours, tmp_path / "m.weights.h5")
    assert not ours.params["2.bias"].any()
    x = np.random.default_rng(2).integers(0, 12, (3, 6))
    np.testing.assert_allclose(ours.forward(x).output, keras.ops.convert_to_numpy(k(x)),
                               atol=ATOL, rtol=0)  # fmt: skip


def test_a_layer_with_weights_rnnlab_has_not_is_refused(tmp_path):
    """A Keras layer holding weights no rnnlab module takes (a Conv1D) is refused rather
    than left behind."""
    k = keras.Sequential([keras.Input((None, 3)), keras.layers.Conv1D(4, 1),
                          keras.layers.GRU(5, return_sequences=True),
                          keras.layers.Dense(2)])  # fmt: skip
    k.save(tmp_path / "m.keras")
    ours = Sequential(GRU(4, 5), Linear(5, 2))
    before = _unchanged(ours)
    with pytest.raises(ValueError, match=r"^`source \('.*m\.keras', layer 'conv1d'\)` must be "
                       r"a layer rnnlab's modules hold \(Embedding, SimpleRNN, LSTM, GRU, "
                       r"Bidirectional, Dense\) or one without weights; got one holding 2 "
                       r"arrays instead\.$"):  # fmt: skip
        rk.load_weights(ours, tmp_path / "m.keras")
    with pytest.raises(ValueError, match=r"^`source \(layer 0, 'conv1d'\)` must be a layer "
                       r"rnnlab's modules hold .*; got a Conv1D with weights instead\.$"):
        rk.load_weights(ours, k)
    _assert_unchanged(ours, before)


def test_a_keras_rnn_wrapper_is_refused_with_its_article():
    """A keras.layers.RNN around an LSTMCell holds weights no rnnlab module takes: it was
    refused as "a RNN with weights"."""
    k = keras.Sequential([keras.Input((None, 3)),
                          keras.layers.RNN(keras.layers.LSTMCell(5), return_sequences=True),
                          keras.layers.Dense(2)])  # fmt: skip
    with pytest.raises(ValueError, match=r"^`source \(layer 0, 'rnn.*'\)` must be a layer "
                       r"rnnlab's modules hold .*; got an RNN with weights instead\.$"):
        rk.load_weights(Sequential(LSTM(3, 5), Linear(5, 2)), k)


def test_a_non_finite_dense_weight_is_refused():
    k = keras_tagger()
    w = k.layers[-1].get_weights()
    w[0][1, 2] = np.nan
    k.layers[-1].set_weights(w)
    ours = Sequential(Embedding(12, 4), LSTM(4, 5), Dropout(0.3), Linear(5, 7))
    before = _unchanged(ours)
    with pytest.raises(ValueError, match=r"`source \(layer 3, 'dense.*'\) kernel` must be finite"):
        rk.load_weights(ours, k)
    _assert_unchanged(ours, before)


def _tagger_with(dense=None, embedding=None, lstm=None):
    """keras_tagger's model with other options for its Dense, Embedding or LSTM, built."""
    return keras.Sequential([
        keras.Input((None,), dtype="int32"),
        keras.layers.Embedding(12, 4, **(embedding or {})),
        keras.layers.LSTM(5, return_sequences=True, **(lstm or {})),
        keras.layers.Dense(7, **(dense or {})),
    ])  # fmt: skip


def _given(k, source, tmp_path):
    if source == "keras_file":
        k.save(tmp_path / "m.keras")
        return tmp_path / "m.keras"
    return k if source == "model" else list(k.layers)


def _tagger():
    return Sequential(Embedding(12, 4), LSTM(4, 5), Linear(5, 7))


def _where(source, layer, key):
    """The start of a refusal naming the Keras layer: by its key in a file, or its index."""
    if source == "keras_file":
        return rf"^`source \('.*m\.keras', layer '{key}'\)` "
    return rf"^`source \(layer {layer}, '{key}.*'\)` "


def _my_activation(x):
    return 2 * x


@pytest.mark.parametrize("source", ["keras_file", "model", "layers"])
@pytest.mark.parametrize("activation", ["softmax", "relu", "tanh", _my_activation],
                         ids=["softmax", "relu", "tanh", "own_function"])  # fmt: skip
def test_a_dense_with_an_activation_is_refused(activation, source, tmp_path):
    """A Keras Dense with an activation loaded into a Linear, which is linear: a softmax
    classifier's rnnlab copy gave logits, a relu one negative outputs, without a word."""
    k = _tagger_with(dense={"activation": activation})
    model = _tagger()
    before = _unchanged(model)
    name = getattr(activation, "__name__", activation)
    own = r" \(a function of module '[\w.]+', not Keras' own\)" if callable(activation) else ""
    with pytest.raises(ValueError, match=_where(source, 2, "dense")
                       + rf"must be a Keras layer with activation='linear'; got activation="
                       rf"'{name}'{own} instead\. rnnlab's Linear has no activation, so its "
                       r"outputs would lack it"):  # fmt: skip
        rk.load_weights(model, _given(k, source, tmp_path))
    _assert_unchanged(model, before)


@pytest.mark.parametrize("source", ["keras_file", "model", "layers"])
def test_an_embedding_with_mask_zero_is_refused(source, tmp_path):
    """Keras' Embedding(mask_zero=True) makes the layers after it skip the steps whose id is
    0; rnnlab's Embedding masks nothing (its padding is forward's lengths): it loaded, and a
    sequence with a 0 inside computed otherwise."""
    k = _tagger_with(embedding={"mask_zero": True})
    x = np.array([[3, 0, 5, 7]])
    model = _tagger()
    rk.load_weights(model, k.save_weights(tmp_path / "m.weights.h5") or
                    tmp_path / "m.weights.h5")  # fmt: skip
    assert not np.allclose(model.forward(x).output, keras.ops.convert_to_numpy(k(x)),
                           atol=1e-3)  # (what the refusal spares: it computes otherwise)
    model = _tagger()
    before = _unchanged(model)
    with pytest.raises(ValueError, match=_where(source, 0, "embedding")
                       + r"must be a Keras layer with mask_zero=False; got mask_zero=True "
                       r"instead\. rnnlab's Embedding masks nothing"):  # fmt: skip
        rk.load_weights(model, _given(k, source, tmp_path))
    _assert_unchanged(model, before)


def test_a_weights_file_alone_cannot_say_the_options(tmp_path):
    """A .weights.h5 holds arrays only: a Dense's activation and an Embedding's mask_zero are
    not in it, so the load takes them (documented: load the .keras file, or the model)."""
    k = _tagger_with(dense={"activation": "softmax"}, embedding={"mask_zero": True})
    k.save_weights(tmp_path / "m.weights.h5")
    model = _tagger()
    rk.load_weights(model, tmp_path / "m.weights.h5")
    assert np.array_equal(model.params["2.weight"], k.layers[2].get_weights()[0].T)


@pytest.mark.parametrize("source", ["keras_file", "model", "layers"])
def test_options_that_do_not_change_the_outputs_load(source, tmp_path):
    """Only what changes the outputs is refused: constraints, regularizers and initializers
    act in training; activation=None is linear; use_bias=False is a zero bias."""
    k = _tagger_with(
        dense={"activation": None, "use_bias": False,
               "kernel_constraint": keras.constraints.MaxNorm(2.0),
               "kernel_regularizer": keras.regularizers.L2(0.1)},
        embedding={"embeddings_constraint": keras.constraints.NonNeg(),
                   "embeddings_regularizer": "l2", "mask_zero": False},
    )  # fmt: skip
    model = _tagger()
    rk.load_weights(model, _given(k, source, tmp_path))
    assert not model.params["2.bias"].any()
    x = np.random.default_rng(4).integers(0, 12, (2, 5))
    np.testing.assert_allclose(model.forward(x).output, keras.ops.convert_to_numpy(k(x)),
                               atol=ATOL, rtol=0)  # fmt: skip


@pytest.mark.parametrize("source", ["keras_file", "model", "layers"])
def test_a_recurrent_activation_of_one_s_own_is_named(source, tmp_path):
    """An activation function of one's own is serialized as {"class_name": "function",
    "config": "<its name>"}: reading it failed with AttributeError ('str' object has no
    attribute 'get'); refused, naming it."""
    k = _tagger_with(lstm={"activation": _my_activation})
    model = _tagger()
    with pytest.raises(ValueError, match=_where(source, 1, "lstm")
                       + r"must be a Keras layer with activation='tanh'; got activation="
                       r"'_my_activation' \(a function of module '[\w.]+', not Keras' own\) "
                       r"instead\.$"):  # fmt: skip
        rk.load_weights(model, _given(k, source, tmp_path))


def _classifier_keras(last_sequences, inner_sequences=True, bi=False, **lstm):
    """Embedding → two LSTM layers → Dense; the last LSTM returns sequences or not."""
    first = keras.layers.LSTM(5, return_sequences=inner_sequences)
    last = keras.layers.LSTM(5, return_sequences=last_sequences, **lstm)
    if bi:
        first = keras.layers.Bidirectional(first, merge_mode="concat")
        last = keras.layers.Bidirectional(last, merge_mode="sum")
    return keras.Sequential([keras.Input((None,), dtype="int32"), keras.layers.Embedding(12, 4),
                             first, last, keras.layers.Dense(3)])  # fmt: skip


@pytest.mark.parametrize("source", ["keras_file", "model", "layers"])
@pytest.mark.parametrize("bi", [False, True], ids=["uni", "bi"])
def test_return_sequences_must_match_a_last_step(source, bi, tmp_path):
    """Keras' return_sequences=False is rnnlab's LastStep after the recurrent layer: a Keras
    LSTM(return_sequences=False) loaded into a model without one (its Dense then applied to
    every step where Keras' reads the last), and return_sequences=True into one with a
    LastStep, each computing otherwise, without a word. Either loads where they agree."""
    x = np.random.default_rng(6).integers(0, 12, (2, 5))
    H = 5  # (merge "sum": 5 features, bidirectional or not)
    for sequences in (False, True):
        k = _classifier_keras(sequences, bi=bi)
        given = _given(k, source, tmp_path)
        tail = [Linear(H, 3)] if sequences else [LastStep(), Linear(H, 3)]
        agree = Sequential(Embedding(12, 4), LSTM(4, 5, 2, bidirectional=bi, merge="sum"), *tail)
        rk.load_weights(agree, given)
        np.testing.assert_allclose(agree.forward(x).output, keras.ops.convert_to_numpy(k(x)),
                                   atol=ATOL, rtol=0)  # fmt: skip
        tail = [LastStep(), Linear(H, 3)] if sequences else [Linear(H, 3)]
        other = Sequential(Embedding(12, 4), LSTM(4, 5, 2, bidirectional=bi, merge="sum"), *tail)
        before = _unchanged(other)
        if sequences:
            message = (r"must be a Keras layer with return_sequences=False \(rnnlab's module 1 "
                       r"is read at its last step by the LastStep, module 2\); got "
                       r"return_sequences=True \(every step\) instead\.")
        else:
            message = (r"must be a Keras layer with return_sequences=True \(rnnlab's module 1 "
                       r"outputs every step: no LastStep reads it\); got return_sequences=False "
                       r"\(the last step only\) instead\.")
        key = ("bidirectional" if bi else "lstm") + ("_1" if source == "keras_file" else "")
        with pytest.raises(ValueError, match=_where(source, 2, key) + message):
            rk.load_weights(other, given)
        _assert_unchanged(other, before)


@pytest.mark.parametrize("source", ["keras_file", "layers"])
def test_an_inner_layer_of_a_stack_must_return_sequences(source, tmp_path):
    """Layer 0 of a stack feeds every step to layer 1: a Keras layer returning its last step
    only is not it (in Keras a RepeatVector, say, between them). Loading into a bare
    recurrent layer the file's other layers are not read, so it loaded."""
    k = keras.Sequential([keras.Input((None, 4)),
                          keras.layers.LSTM(5, return_sequences=False),
                          keras.layers.RepeatVector(3),
                          keras.layers.LSTM(5, return_sequences=True)])  # fmt: skip
    if source == "keras_file":
        k.save(tmp_path / "m.keras")
        given, where = tmp_path / "m.keras", r"^`source \('.*m\.keras', layer 'lstm'\)` "
    else:
        given, where = [k.layers[0], k.layers[2]], r"^`source \(layer 0\)` "
    layer = LSTM(4, 5, 2)
    before = _unchanged(layer)
    with pytest.raises(ValueError, match=where + r"must be a Keras layer with "
                       r"return_sequences=True \(layer 0 of rnnlab's layer, a stack of 2, feeds "
                       r"every step to the next\); got return_sequences=False \(the last step "
                       r"only\) instead\.$"):  # fmt: skip
        rk.load_weights(layer, given)
    _assert_unchanged(layer, before)


@pytest.mark.parametrize("source", ["keras_file", "model", "layers"])
def test_a_stateful_layer_is_refused(source, tmp_path):
    """A stateful Keras layer starts each batch from the last batch's final state; rnnlab's
    from its initial state: loaded, the second batch computed otherwise."""
    k = keras.Sequential([keras.Input((None,), dtype="int32", batch_size=2),
                          keras.layers.Embedding(12, 4),
                          keras.layers.LSTM(5, return_sequences=True, stateful=True),
                          keras.layers.Dense(7)])  # fmt: skip
    x = np.random.default_rng(7).integers(0, 12, (2, 5))
    first, second = (keras.ops.convert_to_numpy(k(x)) for _ in range(2))
    assert not np.allclose(first, second, atol=1e-3)  # (what the refusal spares)
    model = _tagger()
    before = _unchanged(model)
    with pytest.raises(ValueError, match=_where(source, 1, "lstm") + r"must be a Keras layer "
                       r"with stateful=False; got stateful=True instead\. rnnlab's layer starts "
                       r"every call from its initial state"):  # fmt: skip
        rk.load_weights(model, _given(k, source, tmp_path))
    _assert_unchanged(model, before)


def tanh(x):  # (a function of one's own named as Keras' tanh, computing otherwise)
    return 2 * keras.ops.tanh(x)


def _with_module(path, module):
    """`path`'s .keras file with its LSTM's activation written as a function of `module`
    (Keras 3.15 writes a function named as one of its own by the name alone)."""
    import json
    import zipfile

    with zipfile.ZipFile(path) as z:
        files = {n: z.read(n) for n in z.namelist()}
    config = json.loads(files["config.json"])
    for entry in config["config"]["layers"]:
        if entry["class_name"] == "LSTM":
            entry["config"]["activation"] = {"module": module, "class_name": "function",
                                             "config": "tanh", "registered_name": "tanh"}
    files["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(path, "w") as z:
        for n, data in files.items():
            z.writestr(n, data)
    return path


@pytest.mark.parametrize("source", ["keras_file", "model", "layers"])
def test_an_activation_of_one_s_own_named_as_keras_s_is_refused(source, tmp_path):
    """A function of one's own named tanh passed by its name, as Keras' tanh: only Keras' own
    functions (module keras...) count by their name; another is refused, naming its module."""
    k = _tagger_with(lstm={"activation": tanh})
    x = np.random.default_rng(8).integers(0, 12, (2, 5))
    model = _tagger()
    k.save_weights(tmp_path / "w.weights.h5")
    rk.load_weights(model, tmp_path / "w.weights.h5")  # (no config: unchecked)
    assert not np.allclose(model.forward(x).output, keras.ops.convert_to_numpy(k(x)),
                           atol=1e-3)  # (what the refusal spares: it computes otherwise)
    given = _given(k, source, tmp_path)
    if source == "keras_file":
        given = _with_module(given, __name__)
    model = _tagger()
    before = _unchanged(model)
    with pytest.raises(ValueError, match=_where(source, 1, "lstm") + r"must be a Keras layer "
                       rf"with activation='tanh'; got activation='tanh' \(a function of module "
                       rf"'{__name__}', not Keras' own\) instead\.$"):  # fmt: skip
        rk.load_weights(model, given)
    _assert_unchanged(model, before)
    if source == "keras_file":  # Keras' own function, by its module, loads
        rk.load_weights(model, _with_module(given, "keras.src.activations.activations"))


@pytest.mark.parametrize("source", ["keras_file", "weights_file", "model", "layers"])
def test_a_last_step_after_a_linear_after_a_bidirectional_layer_is_refused(source, tmp_path):
    """Keras' Bidirectional(return_sequences=False) gives each direction's final state;
    rnnlab's LastStep after a Linear reads the backward direction at the last step, after one
    step of it: loaded into Embedding, LSTM, Linear, LastStep, the weights computed something
    else, without a word. The export's rule refuses it, whatever the source (a .weights.h5
    too: no Keras model computes it), naming the LastStep and the rnnlab model to build; the
    model with the LastStep right after the recurrent module loads and computes Keras'."""
    k = keras.Sequential([keras.Input((None,), dtype="int32"), keras.layers.Embedding(12, 4),
                          keras.layers.Bidirectional(keras.layers.LSTM(5)),
                          keras.layers.Dense(3)])  # fmt: skip
    if source == "weights_file":
        k.save_weights(tmp_path / "m.weights.h5")
        given = tmp_path / "m.weights.h5"
    else:
        given = _given(k, source, tmp_path)
    x = np.random.default_rng(8).integers(0, 12, (2, 5))
    right = Sequential(Embedding(12, 4), LSTM(4, 5, bidirectional=True), LastStep(),
                       Linear(10, 3))  # fmt: skip
    rk.load_weights(right, given)
    np.testing.assert_allclose(right.forward(x).output, keras.ops.convert_to_numpy(k(x)),
                               atol=ATOL, rtol=0)  # fmt: skip
    wrong = Sequential(Embedding(12, 4), LSTM(4, 5, bidirectional=True), Linear(10, 3),
                       LastStep())  # fmt: skip
    before = _unchanged(wrong)
    with pytest.raises(ValueError, match=r"^`layer \(module 3\)` must be a LastStep after a "
                       r"bidirectional layer with no Linear between them for Keras; got one "
                       r"after module 2, a Linear instead\. rnnlab's LastStep then reads the "
                       r"backward direction at the last step \(after one step of module 1's "
                       r"backward pass\), Keras' return_sequences=False each direction's final "
                       r"state \(the backward one's after the whole sequence\); build the rnnlab "
                       r"model with the LastStep right after the recurrent module 1 \(before the "
                       r"Linear\) to compute Keras' Bidirectional\(return_sequences=False\) and "
                       r"Dense\.$"):  # fmt: skip
        rk.load_weights(wrong, given)
    _assert_unchanged(wrong, before)


def test_a_last_step_with_no_recurrent_layer_before_it_is_refused(tmp_path):
    """Keras picks a last step only as a recurrent layer's return_sequences=False: an
    Embedding and a Dense (every step) loaded into Embedding, LastStep, Linear computed the
    last step alone. Refused by the export's rule."""
    k = keras.Sequential([keras.Input((None,), dtype="int32"), keras.layers.Embedding(12, 4),
                          keras.layers.Dense(3)])  # fmt: skip
    model = Sequential(Embedding(12, 4), LastStep(), Linear(4, 3))
    before = _unchanged(model)
    with pytest.raises(ValueError, match=r"^`layer \(module 1\)` must be a LastStep after a "
                       r"recurrent layer \(through Dropout and Linear modules\) for Keras; got "
                       r"one after module 0, an Embedding instead\. Keras picks the last valid "
                       r"step only as a recurrent layer's return_sequences=False; no Keras layer "
                       r"loads as it: build the rnnlab model without it, or with a recurrent "
                       r"module before it\.$"):  # fmt: skip
        rk.load_weights(model, k)
    _assert_unchanged(model, before)
