"""rnnlab.keras.load_weights into a Sequential checks what the Keras model computes between
the layers with weights: a Keras layer without weights that changes the outputs (a softmax,
a Masking, a Flatten of steps, ...) is refused, as rnnlab's model would compute it without
the layer; those that are identity at inference load; a config's use_bias, and its classes,
units and reset_after, must agree with the arrays held, and a file's arrays with the layers
it says; an activation given as a Keras layer loads where it computes rnnlab's.
Keras 3 (torch backend) builds every model: the oracle."""

import io
import json
import re
import zipfile

import numpy as np
import pytest
from helpers import keras_oracle

keras = keras_oracle()

import rnnlab.keras as rk  # noqa: E402
from rnnlab.layers import GRU, LSTM, RNN  # noqa: E402
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
    if source == "functional_file":  # (the Sequential's layers as a functional model)
        keras.Model(k.inputs, k.outputs).save(tmp_path / "m.keras")
        return tmp_path / "m.keras"
    if source == "weights_file":
        k.save_weights(tmp_path / "m.weights.h5")
        return tmp_path / "m.weights.h5"
    return k if source == "model" else list(k.layers)


def _where(source, index, key):
    if source in ("keras_file", "functional_file", "weights_file"):
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
    "elu": ((keras.layers.ELU(),), (), "elu", r"an ELU \(elu\)",  # (was "a ELU")
            r"would compute its input without the elu"),
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


def _saved(layer, tmp_path, name="m.keras", I=3):
    """A real file Keras writes: a Sequential of `layer` on I features, saved as `name`
    (.keras, or .weights.h5 for its weights alone)."""
    k = keras.Sequential([keras.Input((None, I)), layer])
    path = tmp_path / name
    if name.endswith(".keras"):
        k.save(path)
    else:
        k.save_weights(path)
    return path


def _with_weights(path, edit):
    """The file at `path` with its weights changed by `edit` (of the h5py File): a .keras
    file's model.weights.h5 inside its zip, or a .weights.h5 itself."""
    import h5py

    if path.suffix != ".keras":
        with h5py.File(path, "r+") as f:
            edit(f)
        return path
    with zipfile.ZipFile(path) as z:
        files = {n: z.read(n) for n in z.namelist()}
    buffer = io.BytesIO(files["model.weights.h5"])
    with h5py.File(buffer, "r+") as f:
        edit(f)
    files["model.weights.h5"] = buffer.getvalue()
    with zipfile.ZipFile(path, "w") as z:
        for n, data in files.items():
            z.writestr(n, data)
    return path


def _put(donor, key, at):
    """An edit putting the layer `key` of the weights file `donor` in place of `at` (an h5
    path: "layers/lstm", "layers/bidirectional/backward_layer")."""
    import h5py

    def edit(f):
        if at in f:
            del f[at]
        with h5py.File(donor, "r") as d:
            d.copy(d[f"layers/{key}"], f[at.rsplit("/", 1)[0]], at.rsplit("/", 1)[1])
    return edit


def _rename_cell(at, name):
    def edit(f):
        f[f"{at}/cell/vars"].attrs["name"] = name
    return edit


def _embedded(tmp_path):
    """A .keras file Keras writes of a Sequential of an Embedding(12, 4) alone."""
    k = keras.Sequential([keras.Input((None,), dtype="int32"), keras.layers.Embedding(12, 4)])
    k.save(tmp_path / "m.keras")
    return tmp_path / "m.keras"


def _gru_donor(tmp_path, H=4):
    return _saved(keras.layers.GRU(H, return_sequences=True), tmp_path, "gru.weights.h5")


def _lstm_donor(tmp_path):
    return _saved(keras.layers.LSTM(4, return_sequences=True), tmp_path, "lstm.weights.h5")


def _bi(**kw):
    return keras.layers.Bidirectional(keras.layers.LSTM(4, return_sequences=True, **kw))


def _lstm(**kw):
    return keras.layers.LSTM(4, return_sequences=True, **kw)


def _with_start(tmp_path):
    """The snippet's LSTMWithStart in a .keras file Keras writes, and the edit emptying its
    start (vars)."""
    ours = LSTM(3, 4, initial_state="learned")
    namespace: dict = {}
    exec(rk.snippet(ours, rk.save_weights(ours, tmp_path / "s.weights.h5")), namespace)
    namespace["model"].save(tmp_path / "m.keras")

    def edit(f):
        for n in ("0", "1"):
            del f[f"layers/lstm_with_start/vars/{n}"]
    return tmp_path / "m.keras", edit


_KERAS_SAYS = r"as the file's config\.json says \(class_name "
_SAVE_AGAIN = r"The file's config\.json and its weights disagree: save the Keras model again\.$"
_KEY_SAYS = r"as its key 'lstm' says \(Keras names a layer's weights by its class\)"
_KEYS_AGAIN = (r"The file's keys and its arrays disagree: save the Keras model's weights "
               r"again\.$")  # fmt: skip
# (file, how it is edited, the rnnlab model it is offered to, the layer named, the message
# after it, whether Keras' own load refuses the file too)
DISAGREE = {
    "gru_arrays_under_an_lstm_config": (
        lambda t: (_saved(_lstm(), t), _put(_gru_donor(t), "gru", "layers/lstm")),
        lambda: GRU(3, 4), "lstm",
        rf"must be an LSTM's arrays, {_KERAS_SAYS}'LSTM'\); got a GRU's \(kernel \(3, 12\), "
        rf"recurrent_kernel \(4, 12\): 3 gates of 4 units\) instead\. {_SAVE_AGAIN}", True),
    "a_bidirectional_config_over_one_direction": (
        lambda t: (_saved(_bi(), t), _put(_lstm_donor(t), "lstm", "layers/bidirectional")),
        lambda: LSTM(3, 4), "bidirectional",
        r"must be a Bidirectional's arrays \(under forward_layer and backward_layer\), "
        rf"{_KERAS_SAYS}'Bidirectional'\); got one direction's \(no forward_layer or "
        rf"backward_layer group\) instead\. {_SAVE_AGAIN}", True),
    "an_lstm_config_over_a_bidirectional": (
        lambda t: (_saved(_lstm(), t), _put(_saved(_bi(), t, "bi.weights.h5"), "bidirectional",
                                            "layers/lstm")),
        lambda: LSTM(3, 4, bidirectional=True), "lstm",
        r"must be an LSTM's arrays, one direction's \(no forward_layer or backward_layer "
        rf"group\), {_KERAS_SAYS}'LSTM'\); got a Bidirectional's \(a forward_layer and a "
        rf"backward_layer\) instead\. {_SAVE_AGAIN}", True),
    "a_bidirectional_without_its_backward_layer": (
        lambda t: (_saved(_bi(), t), lambda f: f.__delitem__(
            "layers/bidirectional/backward_layer")),
        lambda: LSTM(3, 4, bidirectional=True), "bidirectional",
        r"must be a Bidirectional's arrays \(under forward_layer and backward_layer\), "
        rf"{_KERAS_SAYS}'Bidirectional'\); got a forward_layer alone instead\. {_SAVE_AGAIN}",
        True),
    "a_gru_backward_layer_under_an_lstm_one": (
        lambda t: (_saved(_bi(), t), _put(_gru_donor(t), "gru",
                                          "layers/bidirectional/backward_layer")),
        lambda: LSTM(3, 4, bidirectional=True), "bidirectional",
        r" backward layer` must be an LSTM's arrays, as the file's config\.json says \(a "
        r"Bidirectional whose backward_layer has class_name 'LSTM'\); got a GRU's \(kernel "
        rf"\(3, 12\), recurrent_kernel \(4, 12\): 3 gates of 4 units\) instead\. {_SAVE_AGAIN}",
        True),
    "a_group_the_config_does_not_list": (
        lambda t: (_saved(_lstm(), t), _put(_lstm_donor(t), "lstm", "layers/lstm_1")),
        lambda: Sequential(LSTM(3, 4)), "lstm_1",
        r"must be a layer the file's config\.json lists \('input_layer', 'lstm'\); got 3 "
        rf"arrays under a key it does not list instead\. {_SAVE_AGAIN}", False),
    "an_array_the_layer_does_not_hold": (
        lambda t: (_saved(_lstm(), t), lambda f: f.create_dataset("layers/lstm/cell/extra",
                                                                  data=np.ones(3))),
        lambda: LSTM(3, 4), "lstm",
        r"must be a Keras recurrent layer's arrays alone \(its cell's in cell/vars, a start "
        r"in vars\); got 1 more: 'cell/extra' instead\. Keras' layer holds no others, and "
        r"rnnlab's would load without them\.$", False),
    "a_start_in_keras_own_layer": (
        lambda t: (_saved(_lstm(), t), lambda f: [f.create_dataset(
            f"layers/lstm/vars/{n}", data=np.ones(4, np.float32)) for n in "01"]),
        lambda: LSTM(3, 4, initial_state="learned"), "lstm",
        r"must be no start \(Keras' LSTM starts from zeros and holds none in vars\), "
        rf"{_KERAS_SAYS}'LSTM'\); got 2 arrays in vars instead\. {_SAVE_AGAIN}", True),
    "a_with_start_without_its_start": (
        _with_start, lambda: LSTM(3, 4, initial_state="learned"), "lstm_with_start",
        r"must be 2 arrays in vars \(LSTMWithStart's start: h0, c0\), "
        rf"{_KERAS_SAYS}'LSTMWithStart'\); got 0 instead\. {_SAVE_AGAIN}", True),
    "other_units_than_the_config_s": (
        lambda t: (_with_config(_saved(_lstm(), t), _set("LSTM", units=5)), lambda f: None),
        lambda: LSTM(3, 4), "lstm",
        rf"must be arrays of 5 units, {_KERAS_SAYS}'LSTM'\) \(units=5\); got an LSTM's "
        rf"\(kernel \(3, 16\), recurrent_kernel \(4, 16\): 4 gates of 4 units\) instead\. "
        rf"{_SAVE_AGAIN}", True),
    "a_bias_of_another_reset_after": (
        lambda t: (_with_config(_saved(keras.layers.GRU(4, return_sequences=True), t),
                                _set("GRU", reset_after=False)), lambda f: None),
        lambda: GRU(3, 4, reset_after=False), "gru",
        rf" bias` must be an array of shape \(12,\), {_KERAS_SAYS}'GRU'\) "
        rf"\(reset_after=False\); got shape \(2, 12\) instead\. {_SAVE_AGAIN}", True),
    # (a Dense's and an Embedding's sizes were compared with rnnlab's module alone: a
    # config.json saying other sizes than the arrays beside it loaded as the arrays say)
    "dense_units_other_than_the_kernel_s": (
        lambda t: (_with_config(_saved(keras.layers.Dense(7), t), _set("Dense", units=10)),
                   lambda f: None),
        lambda: Sequential(Linear(3, 7)), "dense",
        r" kernel` must be an array of 10 columns, as the file's config\.json says "
        rf"\(units=10\); got shape \(3, 7\) instead\. {_SAVE_AGAIN}", True),
    "dense_units_other_than_the_bias_s": (
        lambda t: (_saved(keras.layers.Dense(7), t), lambda f: (
            f.__delitem__("layers/dense/vars/1"),
            f.create_dataset("layers/dense/vars/1", data=np.zeros(5, np.float32)))),
        lambda: Sequential(Linear(3, 7)), "dense",
        r" bias` must be an array of shape \(7,\), as the file's config\.json says "
        rf"\(units=7\); got shape \(5,\) instead\. {_SAVE_AGAIN}", True),
    **{f"embedding_{name}_other_than_the_array_s": (
        lambda t, name=name, value=value: (_with_config(_embedded(t), _set(
            "Embedding", **{name: value})), lambda f: None),
        lambda: Sequential(Embedding(12, 4)), "embedding",
        rf" embeddings` must be an array of shape \({rows}, {columns}\), as the file's "
        rf"config\.json says \(input_dim={rows}, output_dim={columns}\); got shape \(12, 4\) "
        rf"instead\. {_SAVE_AGAIN}", True)
       for name, value, rows, columns in (("input_dim", 13, 13, 4), ("output_dim", 6, 12, 6))},
    "a_listed_layer_without_weights": (
        lambda t: (_saved(_lstm(), t), lambda f: f.__delitem__("layers/lstm")),
        lambda: LSTM(3, 4), "lstm",
        r"must be arrays in the file's model\.weights\.h5, as the file's config\.json says "
        rf"\(class_name 'LSTM'\); got no group 'lstm' there instead\. {_SAVE_AGAIN}", True),
    # a .weights.h5 has no config: its key names the class
    "weights_file_gru_arrays_under_an_lstm_key": (
        lambda t: (_saved(_lstm(), t, "m.weights.h5"), _put(_gru_donor(t), "gru", "layers/lstm")),
        lambda: GRU(3, 4), "lstm",
        rf"must be an LSTM's arrays, {_KEY_SAYS}; got a GRU's \(kernel \(3, 12\), "
        rf"recurrent_kernel \(4, 12\): 3 gates of 4 units\) instead\. {_KEYS_AGAIN}", True),
    "weights_file_bidirectional_key_over_one_direction": (
        lambda t: (_saved(_bi(), t, "m.weights.h5"), _put(_lstm_donor(t), "lstm",
                                                          "layers/bidirectional")),
        lambda: LSTM(3, 4), "bidirectional",
        r"must be a Bidirectional's arrays \(under forward_layer and backward_layer\), as its "
        r"key 'bidirectional' says \(Keras names a layer's weights by its class\); got one "
        rf"direction's \(no forward_layer or backward_layer group\) instead\. {_KEYS_AGAIN}",
        True),
    "weights_file_start_in_keras_own_layer": (
        lambda t: (_saved(_lstm(), t, "m.weights.h5"), lambda f: [f.create_dataset(
            f"layers/lstm/vars/{n}", data=np.ones(4, np.float32)) for n in "01"]),
        lambda: LSTM(3, 4, initial_state="learned"), "lstm",
        rf"must be no start \(Keras' LSTM starts from zeros and holds none in vars\), "
        rf"{_KEY_SAYS}; got 2 arrays in vars instead\. {_KEYS_AGAIN}", True),
}


def _keras_refuses(path):
    """Whether Keras' own load refuses the file (into the model its config, or for a
    .weights.h5 the same Sequential of Keras' LSTM, describes)."""
    try:
        if path.suffix == ".keras":
            keras.saving.load_model(path)
        else:
            _saved(_lstm(), path.parent, "oracle.keras")
            keras.saving.load_model(path.parent / "oracle.keras").load_weights(path)
    except ValueError:
        return True
    return False


@pytest.mark.parametrize("case", list(DISAGREE))
def test_a_file_whose_config_and_weights_disagree_is_refused(case, tmp_path):
    """A .keras file put together by hand, or from two saves, whose config.json says one
    layer and whose weights hold another loaded silently as the weights' kind (a GRU's
    arrays under an LSTM's config, its options passing by default), read a Bidirectional
    as one direction, left arrays behind (a group the config does not list, an array no
    layer holds) or took a start no Keras layer has. Refused naming the file, the layer,
    what the config (a .weights.h5: the key) says and what the weights hold; nothing is
    written. Keras' own load refuses the same files, but for the arrays it leaves behind."""
    build, target, key, message, keras_too = DISAGREE[case]
    path, edit = build(tmp_path)
    path = _with_weights(path, edit)
    model = target()
    before = {k: v.copy() for k, v in model.params.items()}
    at = re.escape(str(path))
    with pytest.raises(ValueError, match=rf"^`source \('{at}', layer '{key}'\)"
                       + ("" if message.startswith(" ") else "` ") + message):  # fmt: skip
        rk.load_weights(model, path)
    for k, v in model.params.items():
        assert np.array_equal(v, before[k]), k
    assert _keras_refuses(path) == keras_too


def test_a_gru_s_arrays_are_refused_by_an_lstm_by_their_gate_count(tmp_path):
    """A .weights.h5 holds no config: only the arrays' shapes tell their kind. A GRU's arrays
    named as an LSTM's (key and cell), whose kernel an LSTM of 3 units would take (12
    columns: 3 gates of 4 units, 4 gates of 3), are refused as a GRU's by their gate count,
    from the recurrent kernel's rows."""
    path = _saved(keras.layers.LSTM(3, return_sequences=True), tmp_path, "m.weights.h5")
    _with_weights(path, _put(_gru_donor(tmp_path), "gru", "layers/lstm"))
    _with_weights(path, _rename_cell("layers/lstm", "lstm_cell"))
    at = re.escape(str(path))
    with pytest.raises(ValueError, match=rf"^`source \('{at}', layer 'lstm'\)` must be an "
                       rf"LSTM's arrays, {_KEY_SAYS}; got a GRU's \(kernel \(3, 12\), "
                       r"recurrent_kernel \(4, 12\): 3 gates of 4 units\) instead\. "
                       + _KEYS_AGAIN):  # fmt: skip
        rk.load_weights(LSTM(3, 3), path)
    _with_weights(path, lambda f: f.move("layers/lstm", "layers/bidirectional/forward_layer"))
    _with_weights(path, _put(_lstm_donor(tmp_path), "lstm",
                             "layers/bidirectional/backward_layer"))  # fmt: skip
    with pytest.raises(ValueError, match=rf"^`source \('{at}', layer 'bidirectional'\)` must be "
                       r"an LSTM's arrays, as its cell's name 'lstm_cell' says; got a GRU's "
                       r"\(kernel \(3, 12\), recurrent_kernel \(4, 12\): 3 gates of 4 units\) "
                       r"instead\. The file's names and its arrays disagree"):  # fmt: skip
        rk.load_weights(LSTM(3, 3, bidirectional=True), path)


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


def _reshaped(target, *, steps=None, sequences=True, bi=False, before=()):
    """Embedding(12, 4) -> LSTM(5) (a concat Bidirectional: 10 features) -> `before` ->
    Reshape(target) -> Dense(7), built on sequences of `steps` steps (None: any)."""
    lstm = keras.layers.LSTM(5, return_sequences=sequences)
    return keras.Sequential([
        keras.Input((steps,), dtype="int32"),
        keras.layers.Embedding(12, 4),
        keras.layers.Bidirectional(lstm) if bi else lstm,
        *before,
        keras.layers.Reshape(target),
        keras.layers.Dense(7),
    ])  # fmt: skip


RESHAPE_ITSELF = {  # name: (target_shape, steps the model is built on, more of _reshaped)
    "known": ((6, 5), 6, {}),
    "known_steps_inferred": ((-1, 5), 6, {}),
    "known_features_inferred": ((6, -1), 6, {}),
    "any_steps_inferred": ((-1, 5), None, {}),
    # (steps unknown, the target's 6: Keras reshapes only inputs of 6 steps, unchanged)
    "any_steps_given": ((6, 5), None, {}),
    "after_dropouts": ((-1, 5), None, {"before": (keras.layers.Dropout(0.2),
                                                  keras.layers.Activation("linear"))}),
    "bidirectional": ((-1, 10), None, {"bi": True}),
    "last_step": ((5,), None, {"sequences": False}),
    "last_step_inferred": ((-1,), None, {"sequences": False}),
}


@pytest.mark.parametrize("source", [*SOURCES, "functional_file"])
@pytest.mark.parametrize("case", list(RESHAPE_ITSELF))
def test_a_reshape_to_its_input_s_shape_loads(case, source, tmp_path):
    """A Reshape whose target_shape is its input's (batch left out; -1, or a size the input
    leaves unknown, on one axis) returns its input: it was refused as any Reshape. Its input's
    shape is the layer object's input, along a .keras file's Sequential the output of the
    layer before it (a Reshape has no build config), in a functional model's file the shape
    its inbound node records (it was refused there, as of an unknown shape)."""
    target, steps, more = RESHAPE_ITSELF[case]
    k = _reshaped(target, steps=steps, **more)
    bi, sequences = more.get("bi", False), more.get("sequences", True)
    model = Sequential(Embedding(12, 4), LSTM(4, 5, bidirectional=bi),
                       *([] if sequences else [LastStep()]), Linear(10 if bi else 5, 7))
    rk.load_weights(model, _given(k, source, tmp_path))
    _assert_same(model, k)


RESHAPE_OTHER = {  # name: (target_shape, steps, more of _reshaped, rnnlab's Linear's input, shape)
    "steps_merged": ((3, 10), 6, {}, 10, r"\(None, 6, 5\)"),
    "steps_flattened": ((30,), 6, {}, 30, r"\(None, 6, 5\)"),
    # (on 6 steps, 3 steps of 10; Keras has no step count to refuse another target with)
    "steps_maybe_merged": ((-1, 10), None, {}, 10, r"\(None, None, 5\)"),
    "axis_added": ((5, 1), None, {"sequences": False}, 1, r"\(None, 5\)"),
    "swapped": ((5, 6), 6, {}, 6, r"\(None, 6, 5\)"),
}


@pytest.mark.parametrize("source", [*SOURCES, "functional_file"])
@pytest.mark.parametrize("case", list(RESHAPE_OTHER))
def test_a_reshape_that_may_change_the_shape_is_refused(case, source, tmp_path):
    target, steps, more, features, shape = RESHAPE_OTHER[case]
    k = _reshaped(target, steps=steps, **more)
    last = [] if more.get("sequences", True) else [LastStep()]
    model = Sequential(Embedding(12, 4), LSTM(4, 5), *last, Linear(features, 7))
    before = {n: v.copy() for n, v in model.params.items()}
    with pytest.raises(ValueError, match=_where(source, 2, "reshape") + r"must be a layer "
                       r"rnnlab's Sequential computes .*; got a Reshape with target_shape="
                       + re.escape(str(target)) + rf" of inputs of shape {shape} instead\. "
                       r"rnnlab's model would keep its input's shape where Keras' Reshape "
                       r"changes it \(or may"):  # fmt: skip
        rk.load_weights(model, _given(k, source, tmp_path))
    for n, v in model.params.items():  # nothing written
        assert np.array_equal(v, before[n]), n


def _recorded_shape(shape):
    """An edit of a functional model's config.json: its Reshape's inbound node records
    `shape` as the Reshape's input's."""
    def edit(layers):
        (entry,) = [e for e in layers if e["class_name"] == "Reshape"]
        entry["inbound_nodes"][0]["args"][0]["config"]["shape"] = shape
    return edit


def test_a_functional_reshape_whose_recorded_input_the_graph_contradicts_is_refused(tmp_path):
    """In a functional model's file the Reshape's input shape is the one its inbound node
    records, which Keras' load does not read (it computes the tensor again from the layer
    that made it): a recorded shape the graph contradicts, here (None, 3, 10), making a
    Reshape((3, 10)) that merges the LSTM's 6 steps of 5 features look like the identity,
    proves nothing, and the Reshape is refused as of inputs of unknown shape."""
    k = _reshaped((3, 10), steps=6)
    path = _with_config(_given(k, "functional_file", tmp_path), _recorded_shape([None, 3, 10]))
    model = Sequential(Embedding(12, 4), LSTM(4, 5), Linear(10, 7))
    with pytest.raises(ValueError, match=_where("keras_file", 2, "reshape") + r".*got a "
                       r"Reshape with target_shape=\(3, 10\) of inputs of unknown shape "
                       r"instead\."):  # fmt: skip
        rk.load_weights(model, path)


def test_a_reshape_of_an_unknown_shape_is_refused(tmp_path):
    """Where the input's shape is not known (a Reshape never called; a .weights.h5, which
    holds no target_shape) the Reshape may change it: refused, saying so."""
    k = _reshaped((-1, 5))
    model = Sequential(Embedding(12, 4), LSTM(4, 5), Linear(5, 7))
    layers = list(k.layers)
    layers[2] = keras.layers.Reshape((-1, 5))  # (never called: no input)
    with pytest.raises(ValueError, match=_where("layers", 2, "reshape") + r".*got a Reshape "
                       r"with target_shape=\(-1, 5\) of inputs of unknown shape instead\."):
        rk.load_weights(model, layers)
    with pytest.raises(ValueError, match=_where("weights_file", 2, "reshape") + r".*got a "
                       r"Reshape \(a \.weights\.h5 holds no target_shape\) instead\. .*load "
                       r"the \.keras file or the Keras model"):  # fmt: skip
        rk.load_weights(model, _given(k, "weights_file", tmp_path))
    rk.load_weights(model, _given(k, "keras_file", tmp_path))
    _assert_same(model, k)


def linear(x):  # (a function of one's own named as Keras' linear, computing otherwise)
    return 2 * x


def tanh(x):
    return 2 * keras.ops.tanh(x)


def _with_activation(where, function):
    """SimpleRNN(4) -> Dense(2) on 3 features, with Activation(function) in a TimeDistributed
    after the SimpleRNN, or given as the SimpleRNN's activation=."""
    act = keras.layers.Activation(function)
    if where == "time_distributed":
        rnn = [keras.layers.SimpleRNN(4, return_sequences=True), keras.layers.TimeDistributed(act)]
    else:
        rnn = [keras.layers.SimpleRNN(4, activation=act, return_sequences=True)]
    return keras.Sequential([keras.Input((None, 3)), *rnn, keras.layers.Dense(2)])


OWN_INSIDE = {  # key: (function, index of the layer, the refusal after its name)
    "time_distributed": (linear, 1, r".*got a TimeDistributed\(Activation\('linear' \(a "
                         r"function of module '[\w.]+', not Keras' own\)\)\) instead\. "
                         r"rnnlab's model would pass its input on unchanged"),
    "simple_rnn": (tanh, 0, r"must be a Keras layer with activation='tanh'; got activation="
                   r"'tanh' \(a function of module '[\w.]+', not Keras' own\) instead\.$"),
}


@pytest.mark.parametrize("source", ["model", "layers"])
@pytest.mark.parametrize("key", list(OWN_INSIDE))
def test_a_function_of_one_s_own_inside_a_layer_is_refused(key, source):
    """An Activation inside a TimeDistributed, or given as a layer's activation=, was read
    from Keras' config, which names a function of one's own called `linear` (`tanh`) as
    Keras' own: it loaded, computing otherwise. It is judged by the function object, as a
    top-level Activation is; Keras' own function of that name still loads. (A .keras file
    names it so too, and Keras loads it from there as its own: load_weights' docstring.)"""
    function, index, message = OWN_INSIDE[key]
    k = _with_activation(key, function)
    with pytest.raises(ValueError, match=_where(source, index, key) + message):
        rk.load_weights(Sequential(RNN(3, 4), Linear(4, 2)), _given(k, source, None))
    k = _with_activation(key, function.__name__)  # (Keras' own)
    model = Sequential(RNN(3, 4), Linear(4, 2))
    rk.load_weights(model, _given(k, source, None))
    x = np.random.default_rng(1).normal(size=(2, 5, 3)).astype(np.float32)
    np.testing.assert_allclose(model.forward(x).output, keras.ops.convert_to_numpy(k(x)),
                               atol=ATOL, rtol=0)  # fmt: skip


class _Tripled(keras.layers.Layer):  # a layer of one's own named Dropout, tripling its input
    def call(self, x):
        return 3 * x

    def compute_output_shape(self, shape):
        return shape


class _DenseRelu(keras.layers.Dense):  # a Dense of one's own, with a relu Keras' has not
    def call(self, x):
        return keras.ops.relu(super().call(x))


class _LSTMOwn(keras.layers.LSTM):  # Keras' LSTM, its call one's own (here: Keras')
    pass


for _cls, _name in ((_Tripled, "Dropout"), (_DenseRelu, "Dense"), (_LSTMOwn, "LSTM")):
    _cls.__name__ = _cls.__qualname__ = _name
    # (registered: a Bidirectional rebuilds its layer from its config, by its name)
    keras.saving.register_keras_serializable("rnnlab_tests")(_cls)

OWN_CLASS = {  # name: (the Keras model's layers after its Embedding, layer index, key, got)
    "dropout": (lambda: [keras.layers.LSTM(5, return_sequences=True), _Tripled(),
                         keras.layers.Dense(7)], 2, "dropout", "a Dropout"),
    "time_distributed": (lambda: [keras.layers.LSTM(5, return_sequences=True),
                                  keras.layers.TimeDistributed(_Tripled()), keras.layers.Dense(7)],
                         2, "time_distributed", "a TimeDistributed of a Dropout"),
    "dense": (lambda: [keras.layers.LSTM(5, return_sequences=True), _DenseRelu(7)], 2, "dense",
              "a Dense"),
    "lstm": (lambda: [_LSTMOwn(5, return_sequences=True), keras.layers.Dense(7)], 1, "lstm",
             "an LSTM"),
    "bidirectional": (lambda: [keras.layers.Bidirectional(_LSTMOwn(5, return_sequences=True),
                                                          merge_mode="sum"),
                               keras.layers.Dense(7)], 1, "bidirectional",
                      "a Bidirectional of an LSTM"),
    # (its own forward layer, Keras' backward_layer: Keras 3's Bidirectional keeps no
    # `layer`, so the forward one was never looked at and loaded as Keras' LSTM)
    "bidirectional_forward": (lambda: [keras.layers.Bidirectional(
        _LSTMOwn(5, return_sequences=True), merge_mode="sum",
        backward_layer=keras.layers.LSTM(5, return_sequences=True, go_backwards=True)),
                                       keras.layers.Dense(7)], 1, "bidirectional",
                              "a Bidirectional of an LSTM"),
}  # fmt: skip


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("case", list(OWN_CLASS))
def test_a_layer_of_one_s_own_named_as_keras_s_is_refused(case, source, tmp_path):
    """A layer was read by its class name: a class of one's own named Dropout (tripling its
    input at inference) loaded as Keras' Dropout, a Dense of one's own with a relu as Keras'
    Dense, without a word. Only Keras' own classes (and the export's <Kind>WithStart) are."""
    layers, index, key, got = OWN_CLASS[case]
    k = keras.Sequential([keras.Input((None,), dtype="int32"), keras.layers.Embedding(12, 4),
                          *layers()])  # fmt: skip
    bi = case.startswith("bidirectional")
    model = Sequential(Embedding(12, 4), LSTM(4, 5, bidirectional=bi, merge="sum"),
                       Linear(5, 7))  # fmt: skip
    # (a .keras file: the class's module, or null and its registered_name)
    said = r"(module '[\w.]+'|registered_name '[\w>]+')"
    with pytest.raises(ValueError, match=_where(source, index, key) + r"must be a layer of "
                       r"Keras' own \(keras\.layers\), or the export's <Kind>WithStart; got "
                       rf"{got} of one's own \({said}\) instead\. rnnlab reads a Keras layer by "
                       r"its class name"):  # fmt: skip
        rk.load_weights(model, _given(k, source, tmp_path))
    recurrent = case.startswith(("lstm", "bidirectional"))
    if recurrent and source != "keras_file":  # (into the layer alone)
        with pytest.raises(ValueError, match=rf"^`source` must be a layer of Keras' own .*got "
                           rf"{got} of one's own"):  # fmt: skip
            rk.load_weights(model.modules[1], k.layers[1])


class _OwnStart(keras.layers.LSTM):
    """An LSTM of one's own named LSTMWithStart, holding weights h0 and c0 where the
    export's does (its `vars`), that starts from zeros all the same."""

    def build(self, sequences_shape, initial_state_shape=None):
        super().build(sequences_shape, initial_state_shape)
        self.starts = [self.add_weight(shape=(self.units,), initializer="ones", name=name)
                       for name in ("h0", "c0")]  # fmt: skip


_OwnStart.__name__ = _OwnStart.__qualname__ = "LSTMWithStart"
keras.saving.register_keras_serializable("rnnlab_tests")(_OwnStart)


def _snippet_entry(edit):
    """An edit of the config.json of a .keras file the snippet's model wrote: `edit` of its
    LSTMWithStart's entry."""
    def edit_layers(layers):
        (entry,) = [e for e in layers if e["class_name"] == "LSTMWithStart"]
        edit(entry)
    return edit_layers


OWN_START = {  # name: (the source, registered_name said, what else the error says)
    **{source: (lambda t, s=source: _given(keras.Sequential([
        keras.Input((None, 3)), _OwnStart(4, return_sequences=True)]), s, t),
                "'rnnlab_tests>LSTMWithStart'", "") for source in SOURCES},
    "registered_elsewhere": (lambda t: _with_config(_with_start(t)[0], _snippet_entry(
        lambda e: e.update(registered_name="mine>LSTMWithStart"))),
                             "'mine>LSTMWithStart'", ""),
    "no_learned": (lambda t: _with_config(_with_start(t)[0], _snippet_entry(
        lambda e: e["config"].pop("learned"))), "'rnnlab>LSTMWithStart'",
                   ", no 'learned' in its config"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(OWN_START))
def test_a_with_start_class_of_one_s_own_is_refused(case, tmp_path):
    """A layer class named LSTMWithStart was taken for the export's by its name alone: one of
    one's own, starting from zeros whatever its weights h0 and c0 hold, loaded them as a
    learned start, from its objects and its .keras file. The export's is known by the
    registered name the snippet gives it and the 'learned' of its config (its module is
    where the snippet ran); a file saying otherwise is refused as any class of one's own."""
    build, registered, more = OWN_START[case]
    source = build(tmp_path)
    model = Sequential(LSTM(3, 4, initial_state="learned"))
    before = {n: v.copy() for n, v in model.params.items()}
    where = _where("keras_file" if case not in SOURCES[1:] else case, 0, "lstm_with_start")
    with pytest.raises(ValueError, match=where + r"must be a layer of Keras' own "
                       r"\(keras\.layers\), or the export's <Kind>WithStart; got an "
                       rf"LSTMWithStart of one's own \(registered_name {registered}{more}\) "
                       r"instead\. rnnlab reads a Keras layer by its class name .* The export's "
                       r"LSTMWithStart is registered as 'rnnlab>LSTMWithStart', with 'learned' "
                       r"in its config\.$"):  # fmt: skip
        rk.load_weights(model, source)
    for n, v in model.params.items():  # nothing written
        assert np.array_equal(v, before[n]), n


@pytest.mark.parametrize("source", [*SOURCES, "weights_file"])
def test_a_time_distributed_dense_is_refused(source, tmp_path):
    """A TimeDistributed(Dense) holds weights rnnlab's Linear would take, and an activation it
    has not: it is refused as a layer with weights of no kind rnnlab loads (never read as a
    Dense, so its activation cannot pass unchecked)."""
    k = keras_model([keras.layers.TimeDistributed(keras.layers.Dense(5, activation="relu"))])
    model = Sequential(Embedding(12, 4), LSTM(4, 5), Linear(5, 5), Linear(5, 7))
    got = "a TimeDistributed with weights" if source in SOURCES[1:] else "one holding 2 arrays"
    with pytest.raises(ValueError, match=_where(source, 2, "time_distributed") + r"must be a "
                       rf"layer rnnlab's modules hold .*; got {got} instead\.$"):  # fmt: skip
        rk.load_weights(model, _given(k, source, tmp_path))


def test_a_list_holding_what_is_not_a_keras_layer_is_refused():
    """A list of a Keras model's layers with something else in it met an AttributeError
    ('str' object has no attribute 'get_weights')."""
    k = keras_model([])
    layers = list(k.layers)
    layers[2] = "dense"
    with pytest.raises(ValueError, match=r"^`source \(layer 2\)` must be a Keras layer; got "
                       r"'dense' \(str\) instead\.$"):  # fmt: skip
        rk.load_weights(Sequential(Embedding(12, 4), LSTM(4, 5), Linear(5, 7)), layers)
