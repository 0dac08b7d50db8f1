"""rnnlab.keras.load_weights into a Sequential checks what the Keras model computes between
the layers with weights: a Keras layer without weights that changes the outputs (a softmax,
a Masking, a Flatten of steps, ...) is refused, as rnnlab's model would compute it without
the layer; those that are identity at inference load; a config's use_bias must agree with
the arrays held; an activation given as a Keras layer loads where it computes rnnlab's.
Keras 3 (torch backend) builds every model: the oracle."""

import io
import json
import os
import zipfile

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")  # never tensorflow or jax

if os.environ.get("CI"):
    import keras
else:
    pytest.importorskip("h5py")
    keras = pytest.importorskip("keras")

import rnnlab.keras as rk  # noqa: E402
from rnnlab.layers import LSTM, RNN  # noqa: E402
from rnnlab.modules import Embedding, LastStep, Linear, MeanOverTime, Sequential  # noqa: E402

ATOL = 1e-5

pytestmark = pytest.mark.filterwarnings(  # (Keras 3.15's get_weights under NumPy 2)
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)

SOURCES = ["keras_file", "model", "layers"]


def _double(x):
    return 2 * x


def keras_model(between, *, sequences=True, steps=None, after=()):
    """Embedding(12, 4) -> LSTM(5) -> `between` -> Dense(7) -> `after`, built."""
    return keras.Sequential([
        keras.Input((steps,), dtype="int32"),
        keras.layers.Embedding(12, 4),
        keras.layers.LSTM(5, return_sequences=sequences),
        *between,
        keras.layers.Dense(7),
        *after,
    ])  # fmt: skip


def _given(k, source, tmp_path):
    if source == "keras_file":
        k.save(tmp_path / "m.keras")
        return tmp_path / "m.keras"
    if source == "weights_file":
        k.save_weights(tmp_path / "m.weights.h5")
        return tmp_path / "m.weights.h5"
    return k if source == "model" else list(k.layers)


def _where(source, index, key):
    if source in ("keras_file", "weights_file"):
        return rf"^`source \('.*m\.(keras|weights\.h5)', layer '{key}'\)` "
    return rf"^`source \(layer {index}, '{key}.*'\)` "


def _assert_same(model, k, steps=6):
    x = np.random.default_rng(2).integers(0, 12, (3, steps))
    np.testing.assert_allclose(model.forward(x).output, keras.ops.convert_to_numpy(k(x)),
                               atol=ATOL, rtol=0)  # fmt: skip


REFUSED = {  # name: (layers between, layers after the Dense, key, got, what rnnlab computes)
    "softmax_activation": ((), (keras.layers.Activation("softmax"),), "activation",
                           r"an Activation\('softmax'\)", r"without the softmax"),
    "softmax_layer": ((), (keras.layers.Softmax(),), "softmax", r"a Softmax \(softmax\)",
                      r"without the softmax"),
    "relu_layer": ((keras.layers.ReLU(),), (), "re_lu", r"a ReLU \(relu\)", r"without the relu"),
    "relu6": ((keras.layers.ReLU(max_value=6.0),), (), "re_lu", r"a ReLU \(ReLU\)",
              r"without the ReLU"),
    "masking": ((keras.layers.Masking(),), (), "masking", r"a Masking layer",
                r"masks nothing: it would compute the steps Keras skips"),
    "rescaling": ((keras.layers.Rescaling(2.0),), (), "rescaling", r"a Rescaling",
                  r"would pass its input on unchanged"),
    "lambda": ((keras.layers.Lambda(_double),), (), "lambda", r"a Lambda",
               r"would pass its input on unchanged"),
    "time_distributed_softmax": ((keras.layers.TimeDistributed(keras.layers.Softmax()),), (),
                                 "time_distributed", r"a TimeDistributed\(Softmax\)",
                                 r"without the layer it wraps"),
    "layer_normalization_unscaled": ((keras.layers.UnitNormalization(),), (),
                                     "unit_normalization", r"a UnitNormalization",
                                     r"would pass its input on unchanged"),
}


@pytest.mark.filterwarnings("ignore::UserWarning")  # (Keras on saving a Lambda)
@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("case", list(REFUSED))
def test_a_layer_without_weights_that_changes_the_outputs_is_refused(case, source, tmp_path):
    """They were skipped: a softmax classifier loaded gave logits, a Masking model computed
    the masked steps, without a word."""
    between, after, key, got, instead = REFUSED[case]
    k = keras_model(list(between), after=list(after))
    model = Sequential(Embedding(12, 4), LSTM(4, 5), Linear(5, 7))
    before = {n: v.copy() for n, v in model.params.items()}
    index = 2 if between else 3
    with pytest.raises(ValueError, match=_where(source, index, key) + r"must be a layer "
                       r"rnnlab's Sequential computes .* or one that is identity at inference "
                       rf"\(.*\); got {got} instead\. rnnlab's model .*{instead}"):
        rk.load_weights(model, _given(k, source, tmp_path))
    for n, v in model.params.items():  # nothing written
        assert np.array_equal(v, before[n]), n


IDENTITY = [
    keras.layers.Dropout(0.4), keras.layers.SpatialDropout1D(0.3),
    keras.layers.GaussianNoise(1.0), keras.layers.GaussianDropout(0.3),
    keras.layers.AlphaDropout(0.2), keras.layers.ActivityRegularization(0.1, 0.1),
    keras.layers.Activation("linear"), keras.layers.Identity(),
    keras.layers.TimeDistributed(keras.layers.Dropout(0.5)),
]


@pytest.mark.parametrize("source", [*SOURCES, "weights_file"])
def test_layers_that_are_identity_at_inference_load(source, tmp_path):
    """Their outputs at inference are their inputs: the model computes in rnnlab what it
    computes in Keras."""
    k = keras_model(list(IDENTITY))
    model = Sequential(Embedding(12, 4), LSTM(4, 5), Linear(5, 7))
    rk.load_weights(model, _given(k, source, tmp_path))
    _assert_same(model, k)


@pytest.mark.parametrize("source", [*SOURCES, "weights_file"])
def test_global_average_pooling_is_mean_over_time(source, tmp_path):
    k = keras_model([keras.layers.GlobalAveragePooling1D()])
    model = Sequential(Embedding(12, 4), LSTM(4, 5), MeanOverTime(), Linear(5, 7))
    rk.load_weights(model, _given(k, source, tmp_path))
    _assert_same(model, k)
    other = Sequential(Embedding(12, 4), LSTM(4, 5), Linear(5, 7))  # (no pooling)
    with pytest.raises(ValueError, match=r"must be 0 GlobalAveragePooling1D layers \(the "
                       r"model's MeanOverTime modules\); got 1"):  # fmt: skip
        rk.load_weights(other, _given(k, source, tmp_path))
    k = keras_model([])
    with pytest.raises(ValueError, match=r"must be 1 GlobalAveragePooling1D layer \(the "
                       r"model's MeanOverTime modules\); got 0"):  # fmt: skip
        rk.load_weights(model, _given(k, source, tmp_path))


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("layer", [keras.layers.GlobalMaxPooling1D(),
                                   keras.layers.GlobalAveragePooling1D(keepdims=True)],
                         ids=["max", "keepdims"])  # fmt: skip
def test_another_pooling_is_refused(layer, source, tmp_path):
    k = keras_model([layer])
    model = Sequential(Embedding(12, 4), LSTM(4, 5), MeanOverTime(), Linear(5, 7))
    key = "global_max_pooling1d" if "Max" in type(layer).__name__ else "global_average_pooling1d"
    with pytest.raises(ValueError, match=_where(source, 2, key)):
        rk.load_weights(model, _given(k, source, tmp_path))


@pytest.mark.parametrize("source", SOURCES)
def test_flatten_of_one_vector_a_sequence_loads_flatten_of_steps_is_refused(source, tmp_path):
    """Flatten of (batch, features) is itself; of (batch, steps, features) it changes the
    shape, which rnnlab's model keeps."""
    k = keras_model([keras.layers.Flatten()], sequences=False)
    model = Sequential(Embedding(12, 4), LSTM(4, 5), LastStep(), Linear(5, 7))
    rk.load_weights(model, _given(k, source, tmp_path))
    _assert_same(model, k)
    k = keras.Sequential([keras.Input((6,), dtype="int32"), keras.layers.Embedding(12, 4),
                          keras.layers.LSTM(5, return_sequences=True), keras.layers.Flatten(),
                          keras.layers.Dense(7)])  # fmt: skip
    with pytest.raises(ValueError, match=_where(source, 2, "flatten")
                       + r".*got a Flatten instead\. rnnlab's model would keep its input's shape"):
        rk.load_weights(Sequential(Embedding(12, 4), LSTM(4, 5), Linear(30, 7)),
                        _given(k, source, tmp_path))  # fmt: skip


def test_a_weights_file_names_the_class_of_a_layer_but_not_its_config(tmp_path):
    """A .weights.h5 keys each layer by its class: a Masking (or a Softmax) is refused from
    one too. It holds no config: an Activation's function is not there, so an
    Activation('softmax') loads (documented: load the .keras file or the model)."""
    k = keras_model([keras.layers.Masking()])
    with pytest.raises(ValueError, match=_where("weights_file", 2, "masking")
                       + r".*got a Masking layer instead"):
        rk.load_weights(Sequential(Embedding(12, 4), LSTM(4, 5), Linear(5, 7)),
                        _given(k, "weights_file", tmp_path))  # fmt: skip
    k = keras_model([], after=[keras.layers.Activation("softmax")])
    model = Sequential(Embedding(12, 4), LSTM(4, 5), Linear(5, 7))
    rk.load_weights(model, _given(k, "weights_file", tmp_path))
    x = np.random.default_rng(2).integers(0, 12, (3, 6))
    assert not np.allclose(model.forward(x).output, keras.ops.convert_to_numpy(k(x)), atol=1e-3)


def _with_config(path, edit):
    """The .keras file at `path` with its config.json changed by `edit` (of its layers)."""
    with zipfile.ZipFile(path) as z:
        files = {n: z.read(n) for n in z.namelist()}
    config = json.loads(files["config.json"])
    edit(config["config"]["layers"])
    files["config.json"] = json.dumps(config).encode()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        for n, data in files.items():
            z.writestr(n, data)
    path.write_bytes(buffer.getvalue())
    return path


def _set(cls, **options):
    def edit(layers):
        for entry in layers:
            if entry["class_name"] == cls:
                entry["config"].update(options)
    return edit


@pytest.mark.parametrize(
    ("dense_bias", "layer", "flip", "key", "message"),
    [
        (True, "Dense", False, "dense", r"1 array, as its config's use_bias=False says; got 2"),
        (False, "Dense", True, "dense", r"2 arrays, as its config's use_bias=True says; got 1"),
        (True, "LSTM", False, "lstm", r"2 arrays, as its config's use_bias=False says; got 3"),
    ],
    ids=["dense_says_none", "dense_says_one", "lstm_says_none"],
)  # fmt: skip
def test_use_bias_against_the_arrays_held(dense_bias, layer, flip, key, message, tmp_path):
    """A config.json whose use_bias disagrees with the weights beside it (a file put
    together by hand, or from two saves): the bias was taken, or zeros, against the config."""
    k = keras.Sequential([keras.Input((None,), dtype="int32"), keras.layers.Embedding(12, 4),
                          keras.layers.LSTM(5, return_sequences=True),
                          keras.layers.Dense(7, use_bias=dense_bias)])  # fmt: skip
    k.save(tmp_path / "m.keras")
    path = _with_config(tmp_path / "m.keras", _set(layer, use_bias=flip))
    model = Sequential(Embedding(12, 4), LSTM(4, 5), Linear(5, 7))
    with pytest.raises(ValueError, match=rf"^`source \('.*m\.keras', layer '{key}'\)` must be "
                       + message + r" instead\. The file's config.json and its weights "
                       r"disagree"):  # fmt: skip
        rk.load_weights(model, path)


def test_use_bias_false_from_keras_loads(tmp_path):
    """The same check passes what Keras writes: no bias, no bias array."""
    k = keras.Sequential([keras.Input((None,), dtype="int32"), keras.layers.Embedding(12, 4),
                          keras.layers.LSTM(5, return_sequences=True, use_bias=False),
                          keras.layers.Dense(7, use_bias=False)])  # fmt: skip
    model = Sequential(Embedding(12, 4), LSTM(4, 5), Linear(5, 7))
    rk.load_weights(model, _given(k, "keras_file", tmp_path))
    _assert_same(model, k)


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize(
    ("activation", "nonlinearity"),
    [(keras.layers.ReLU(), "relu"), (keras.layers.LeakyReLU(negative_slope=0.0), "relu"),
     (keras.layers.Activation("relu"), "relu"), (keras.layers.Activation("tanh"), "tanh")],
    ids=["ReLU", "LeakyReLU_0", "Activation_relu", "Activation_tanh"],
)  # fmt: skip
def test_an_activation_layer_computing_rnnlab_s_loads(activation, nonlinearity, source,
                                                      tmp_path):  # fmt: skip
    """keras.layers.ReLU() as a SimpleRNN's activation computes a relu RNN's: it was refused
    by its class name ("activation='ReLU'")."""
    k = keras.Sequential([keras.Input((None, 3)),
                          keras.layers.SimpleRNN(4, activation=activation, return_sequences=True),
                          keras.layers.Dense(2)])  # fmt: skip
    model = Sequential(RNN(3, 4, nonlinearity=nonlinearity), Linear(4, 2))
    rk.load_weights(model, _given(k, source, tmp_path))
    x = np.random.default_rng(1).normal(size=(2, 5, 3)).astype(np.float32)
    np.testing.assert_allclose(model.forward(x).output, keras.ops.convert_to_numpy(k(x)),
                               atol=ATOL, rtol=0)  # fmt: skip


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize(
    ("activation", "got"),
    [(keras.layers.ReLU(max_value=6.0), "ReLU"), (keras.layers.LeakyReLU(), "LeakyReLU"),
     (keras.layers.Activation("sigmoid"), "sigmoid"), (keras.layers.Softmax(), "softmax")],
    ids=["relu6", "LeakyReLU_0.3", "Activation_sigmoid", "Softmax"],
)  # fmt: skip
def test_an_activation_layer_computing_otherwise_is_refused(activation, got, source, tmp_path):
    k = keras.Sequential([keras.Input((None, 3)),
                          keras.layers.SimpleRNN(4, activation=activation, return_sequences=True),
                          keras.layers.Dense(2)])  # fmt: skip
    model = Sequential(RNN(3, 4, nonlinearity="relu"), Linear(4, 2))
    with pytest.raises(ValueError, match=_where(source, 0, "simple_rnn") + r"must be a Keras "
                       rf"layer with activation='relu'; got activation='{got}' instead\.$"):
        rk.load_weights(model, _given(k, source, tmp_path))
