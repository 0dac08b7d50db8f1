"""rnnlab.keras.load_weights into a whole Sequential: the Keras model rnnlab exports
(Embedding → SimpleRNN/LSTM/GRU → Dense) loads back whole, Embedding and Dense included
(only the recurrent layers loaded before), and a model built in Keras (torch backend, the
oracle) computes in rnnlab what it computes in Keras."""

import os

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")  # never tensorflow or jax

if os.environ.get("CI"):
    import h5py
    import keras
else:
    h5py = pytest.importorskip("h5py")
    keras = pytest.importorskip("keras")

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
         r"`source \('.*m\.keras', layer 'lstm'\)` must be a Keras GRU for rnnlab's gru; got a "
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
