"""Keras 3 weights both ways (rnnlab.keras), with Keras itself (torch backend) as the oracle:
outputs on padded batches equal after loading Keras layers, .weights.h5 and .keras files
into rnnlab, and after loading rnnlab's exported .weights.h5 into the Keras model its
snippet builds.

keras and h5py are in the test extra; locally the module is skipped without them, under CI
a missing one is an error.
"""

import os
import re

import numpy as np
import pytest
from helpers import keras_oracle

keras = keras_oracle()

import rnnlab.keras as rk  # noqa: E402
from rnnlab.layers import GRU, LSTM, RNN  # noqa: E402
from rnnlab.modules import (  # noqa: E402
    Dropout,
    Embedding,
    LastStep,
    Linear,
    MeanOverTime,
    Sequential,
)

ATOL = 1e-5

# Keras 3.15's Variable.numpy() (get_weights) trips NumPy 2's __array__ copy deprecation
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)

# (name, rnnlab constructor and keywords, Keras class and keywords)
KINDS = [
    ("tanh", RNN, {}, "SimpleRNN", {}),
    ("relu", RNN, {"nonlinearity": "relu"}, "SimpleRNN", {"activation": "relu"}),
    ("lstm", LSTM, {}, "LSTM", {}),
    ("gru", GRU, {}, "GRU", {"reset_after": True}),
    ("gru_orig", GRU, {"reset_after": False}, "GRU", {"reset_after": False}),
]


def config(seed):
    rng = np.random.default_rng([seed, 3])
    name, ctor, kw, kclass, kkw = KINDS[seed % len(KINDS)]
    bi = bool(rng.integers(2))
    return {
        "name": name,
        "ctor": ctor,
        "kw": kw,
        "kclass": kclass,
        "kkw": kkw,
        "L": int(rng.integers(1, 3)),
        "bi": bi,
        "merge": str(rng.choice(["concat", "sum"])) if bi else "concat",
        "B": int(rng.integers(1, 5)),
        "T": int(rng.integers(1, 9)),
        "I": int(rng.integers(1, 6)),
        "H": int(rng.integers(1, 7)),
    }, rng


def keras_stack(c, rng):
    """A Keras model of c's layers, every weight (biases too) redrawn at random."""
    layers = []
    for k in range(c["L"]):
        inner = getattr(keras.layers, c["kclass"])(c["H"], return_sequences=True, **c["kkw"])
        if c["bi"]:
            merge = c["merge"] if k == c["L"] - 1 else "concat"
            inner = keras.layers.Bidirectional(inner, merge_mode=merge)
        layers.append(inner)
    model = keras.Sequential([keras.Input((None, c["I"])), *layers])
    for layer in layers:
        layer.set_weights([rng.uniform(-0.6, 0.6, w.shape) for w in layer.get_weights()])
    return model, layers


def padded(c, rng):
    x = rng.standard_normal((c["B"], c["T"], c["I"])).astype(np.float32)
    lengths = rng.integers(1, c["T"] + 1, c["B"])
    lengths[0] = c["T"]
    rng.shuffle(lengths)
    return x, lengths, np.arange(c["T"])[None, :] < lengths[:, None]


MASKED = (keras.layers.RNN, keras.layers.Bidirectional, keras.layers.GlobalAveragePooling1D)


def keras_out(model, x, mask):
    """The model's layers one by one, the recurrent and pooling ones given the mask (an
    Embedding would drop a mask passed to the model)."""
    y = x
    for layer in model.layers:
        y = layer(y, mask=mask) if isinstance(layer, MASKED) else layer(y)
    return keras.ops.convert_to_numpy(y)


def assert_close(ours, theirs, mask, what):
    assert ours.shape == theirs.shape, f"{what}: {theirs.shape} against {ours.shape}"
    if mask is not None and ours.ndim == 3:  # compare the valid steps; padded ones are zero
        ours, theirs = ours[mask], theirs[mask]
    err = float(np.abs(ours - theirs).max()) if ours.size else 0.0
    assert err <= ATOL, f"{what}: max abs error {err:.2e}"


def rnnlab_layer(c, rng=None):
    return c["ctor"](
        c["I"], c["H"], c["L"], bidirectional=c["bi"], merge=c["merge"], rng=rng, **c["kw"]
    )


@pytest.mark.parametrize("seed", range(20))
def test_keras_to_rnnlab(seed, tmp_path):
    c, rng = config(seed)
    model, layers = keras_stack(c, rng)
    x, lengths, mask = padded(c, rng)
    theirs = keras_out(model, x, mask)
    # from the layer objects, from a .weights.h5 and from a .keras file
    model.save_weights(tmp_path / "m.weights.h5")
    model.save(tmp_path / "m.keras")
    for source in (layers, tmp_path / "m.weights.h5", tmp_path / "m.keras"):
        ours = rnnlab_layer(c, np.random.default_rng(0))
        rk.load_weights(ours, source if not isinstance(source, os.PathLike) else str(source))
        out = ours.forward(x, lengths=lengths).output
        assert_close(out, theirs, mask, f"{c['name']} from {type(source).__name__} {c}")
        if c["name"] != "relu":
            assert np.abs(out).max() > 1e-3


@pytest.mark.parametrize("seed", range(20))
def test_rnnlab_to_keras(seed, tmp_path):
    c, rng = config(seed + 100)
    ours = rnnlab_layer(c, rng)
    for v in ours.params.values():
        v[...] = rng.uniform(-0.6, 0.6, v.shape)
    path = rk.save_weights(ours, tmp_path / "m.weights.h5")
    namespace: dict = {}
    exec(rk.snippet(ours, path), namespace)  # builds the Keras model and loads the file
    x, lengths, mask = padded(c, rng)
    theirs = keras_out(namespace["model"], x, mask)
    assert_close(ours.forward(x, lengths=lengths).output, theirs, mask, f"{c}")
    # and back: Keras' own file of those weights loads into rnnlab unchanged
    namespace["model"].save_weights(tmp_path / "k.weights.h5")
    again = rnnlab_layer(c, np.random.default_rng(1))
    rk.load_weights(again, str(tmp_path / "k.weights.h5"))
    out = again.forward(x, lengths=lengths).output
    assert_close(out, ours.forward(x, lengths=lengths).output, mask, "round trip")


def sequential(which, rng):
    if which == "tokens_last":
        return Sequential(Embedding(12, 4, rng=rng), LSTM(4, 5, 2, rng=rng), LastStep(),
                          Linear(5, 3, rng=rng))  # fmt: skip
    if which == "bi_last":  # Keras' return_sequences=False: each direction's final state
        return Sequential(GRU(3, 4, bidirectional=True, merge="sum", rng=rng), LastStep(),
                          Linear(4, 2, rng=rng))  # fmt: skip
    if which == "mean":
        return Sequential(GRU(3, 4, bidirectional=True, reset_after=False, rng=rng),
                          MeanOverTime(), Linear(8, 2, bias=False, rng=rng))  # fmt: skip
    if which == "dropout_last":  # a classifier as often written: Dropout before LastStep
        return Sequential(LSTM(3, 5, rng=rng), Dropout(0.3), LastStep(), Linear(5, 2, rng=rng))
    if which == "bi_dropout_last":
        return Sequential(GRU(3, 4, 2, bidirectional=True, rng=rng), Dropout(0.2), LastStep(),
                          Linear(8, 2, rng=rng))  # fmt: skip
    if which == "linear_last":  # per-step modules commute with picking the last step
        return Sequential(Embedding(12, 4, rng=rng), RNN(4, 6, 2, rng=rng), Linear(6, 5, rng=rng),
                          Dropout(0.1), LastStep(), Linear(5, 2, rng=rng))  # fmt: skip
    if which == "dropout_tokens":  # the input is ids through a Dropout (it said floats)
        return Sequential(Dropout(0.2), Embedding(12, 4, rng=rng), LSTM(4, 5, rng=rng),
                          Linear(5, 3, rng=rng))  # fmt: skip
    if which == "dense_first":  # the snippet's Input takes its features from the Linear
        return Sequential(Linear(3, 5, rng=rng), GRU(5, 4, rng=rng), Linear(4, 2, rng=rng))
    return Sequential(Embedding(12, 4, rng=rng), RNN(4, 6, rng=rng), Linear(6, 12, rng=rng))


@pytest.mark.parametrize("which", ["tokens_last", "bi_last", "dropout_last", "bi_dropout_last",
                                   "linear_last", "mean", "dense_first", "tagger",
                                   "dropout_tokens"])
def test_whole_models_export(which, tmp_path):
    rng = np.random.default_rng(4)
    model = sequential(which, rng)
    for v in model.params.values():
        v[...] = rng.uniform(-0.6, 0.6, v.shape)
    path = rk.save_weights(model, tmp_path / "m.weights.h5")
    namespace: dict = {}
    exec(rk.snippet(model, path), namespace)
    B, T = 4, 7
    lengths = np.array([7, 3, 5, 1])
    mask = np.arange(T)[None, :] < lengths[:, None]
    if any(isinstance(m, Embedding) for m in model.modules):
        x = rng.integers(0, 12, (B, T))
    else:
        x = rng.standard_normal((B, T, 3)).astype(np.float32)
    theirs = keras_out(namespace["model"], x, mask)
    ours = model.forward(x, lengths=lengths).output
    assert_close(ours, theirs, mask, which)


def test_a_stack_s_dropout_is_keras_dropout_between_its_layers(tmp_path):
    """rnnlab's dropout= of a stack drops each element of a layer's input but the first's, in
    training: a Keras Dropout between the layers, so that training in Keras drops as in
    rnnlab (the export gave a stack without it)."""
    rng = np.random.default_rng(8)
    model = Sequential(LSTM(3, 5, 3, dropout=0.4, bidirectional=True, rng=rng),
                       Linear(10, 2, rng=rng))  # fmt: skip
    path = rk.save_weights(model, tmp_path / "m.weights.h5")
    namespace: dict = {}
    exec(rk.snippet(model, path), namespace)
    kmodel = namespace["model"]
    kinds = [(type(layer).__name__, getattr(layer, "rate", None)) for layer in kmodel.layers]
    assert kinds == [("Bidirectional", None), ("Dropout", 0.4), ("Bidirectional", None),
                     ("Dropout", 0.4), ("Bidirectional", None), ("Dense", None)]  # fmt: skip
    x = rng.standard_normal((4, 6, 3)).astype(np.float32)
    assert_close(model.forward(x).output, keras_out(kmodel, x, None), None, "inference")
    trained = keras.ops.convert_to_numpy(kmodel(x, training=True))
    assert np.abs(trained - keras_out(kmodel, x, None)).max() > 1e-3  # (it drops)


@pytest.mark.parametrize("make", [
    lambda: LSTM(3, 4, 2, bidirectional=True, recurrent_dropout=0.3),
    lambda: GRU(3, 4, recurrent_dropout=0.25, initial_state="learned"),
    lambda: RNN(3, 4, recurrent_dropout=0.5),
], ids=["lstm_bi", "gru_learned", "rnn"])  # fmt: skip
def test_recurrent_dropout_is_keras_recurrent_dropout(make, tmp_path):
    """The export dropped recurrent_dropout: a Keras model trained further would have gone
    without it. Keras' recurrent_dropout also drops h_{t-1} in the recurrent products with a
    mask kept over the sequence's steps (one a gate where rnnlab's one is for all gates);
    inference is the same."""
    rng = np.random.default_rng(9)
    layer = make()
    model = Sequential(layer, Linear(layer.output_features, 2, rng=rng))
    path = rk.save_weights(model, tmp_path / "m.weights.h5")
    namespace: dict = {}
    exec(rk.snippet(model, path), namespace)
    kmodel = namespace["model"]
    recurrent = [getattr(k, "forward_layer", k) for k in kmodel.layers[:-1]]
    assert [k.recurrent_dropout for k in recurrent] == [layer.recurrent_dropout] * len(recurrent)
    x = rng.standard_normal((4, 6, 3)).astype(np.float32)
    assert_close(model.forward(x).output, keras_out(kmodel, x, None), None, "inference")
    trained = keras.ops.convert_to_numpy(kmodel(x, training=True))
    assert np.abs(trained - keras_out(kmodel, x, None)).max() > 1e-3  # (it drops)


# (rnnlab layer, whether the Keras model starts from a state of its own)
STARTS = {
    "lstm_learned_bi": (lambda: LSTM(3, 4, 2, bidirectional=True, initial_state="learned"), True),
    "gru_orig_constant": (lambda: GRU(3, 5, reset_after=False, initial_state=0.5), True),
    "relu_bi_sum_constant": (lambda: RNN(3, 4, nonlinearity="relu", bidirectional=True,
                                         merge="sum", initial_state=-0.3), True),  # fmt: skip
    "gru_bi_learned": (lambda: GRU(3, 4, bidirectional=True, initial_state="learned"), True),
    "zero_number": (lambda: LSTM(3, 4, initial_state=0.0), False),
    "zero_int": (lambda: GRU(3, 4, bidirectional=True, initial_state=0), False),
}


@pytest.mark.parametrize("which", list(STARTS))
def test_initial_states_export_both_ways(which, tmp_path):
    """A learned or constant initial state is the snippet's <Kind>WithStart (Keras' layers
    start from zeros), whose start is a weight of the file, trainable when learned; a number
    equal to 0 is Keras' own layer. Outputs equal rnnlab's on a padded batch, and Keras' own
    files of the model (.weights.h5, .keras) load back into rnnlab unchanged."""
    make, starts = STARTS[which]
    rng = np.random.default_rng(9)
    ours = make()
    for v in ours.params.values():
        v[...] = rng.uniform(-0.6, 0.6, v.shape)
    path = rk.save_weights(ours, tmp_path / "m.weights.h5")
    code = rk.snippet(ours, path)
    assert ("WithStart(" in code) == starts
    namespace: dict = {}
    exec(code, namespace)
    kmodel = namespace["model"]
    c = {"B": 4, "T": 6, "I": 3}
    x, lengths, mask = padded(c, rng)
    want = ours.forward(x, lengths=lengths).output
    assert_close(want, keras_out(kmodel, x, mask), mask, which)
    for layer in kmodel.layers:  # Keras' fused (GPU) bidirectional path starts from zeros
        for fused in ("_can_attempt_fused_lstm", "_can_attempt_fused_gru"):
            if starts and hasattr(layer, fused):
                assert not getattr(layer, fused)(None), fused
    learned = ours.initial_state == "learned"  # (trained in Keras too; a constant is not)
    starts_trained = [w.path for w in kmodel.trainable_weights if w.path.rsplit("/", 1)[1]
                      in ("h0", "c0")]  # fmt: skip
    learned_states = [k for k in ours.params if k.startswith(("h0_", "c0_"))]
    assert len(starts_trained) == (len(learned_states) if learned else 0), starts_trained
    kmodel.save_weights(tmp_path / "k.weights.h5")
    kmodel.save(tmp_path / "k.keras")
    for source in ("k.weights.h5", "k.keras"):
        again = make()
        rk.load_weights(again, str(tmp_path / source))
        assert_close(again.forward(x, lengths=lengths).output, want, mask, source)
    again = make()  # and from the Keras layer objects
    rk.load_weights(again, [layer for layer in kmodel.layers])
    assert_close(again.forward(x, lengths=lengths).output, want, mask, "layers")


def test_starts_load_only_into_a_layer_that_computes_them(tmp_path):
    """A Keras layer of its own (starting from zeros) loads into a learned initial state as
    zeros; a start other than the rnnlab layer's constant is refused, naming both."""
    rng = np.random.default_rng(10)
    plain = _keras_model(keras.layers.GRU(4, return_sequences=True), I=3)
    learned = GRU(3, 4, initial_state="learned")
    learned.params["h0_l0"][...] = 1.0
    rk.load_weights(learned, plain.layers[0])
    assert np.array_equal(learned.params["h0_l0"], np.zeros(4))
    x = rng.standard_normal((2, 5, 3)).astype(np.float32)
    assert_close(learned.forward(x).output, keras_out(plain, x, None), None, "zeros")
    constant = GRU(3, 4, initial_state=0.5)
    with pytest.raises(ValueError, match=r"^`source \(layer 0\)` must be a Keras layer starting "
                       r"from 0.5 for rnnlab's initial_state=0.5; got one starting from zeros "
                       r"\(Keras' own layer\) instead. Build the rnnlab layer with "
                       r"initial_state='learned'"):  # fmt: skip
        rk.load_weights(constant, plain.layers[0])
    own = GRU(3, 4, initial_state="learned", rng=rng)
    own.params["h0_l0"][...] = rng.uniform(-1, 1, 4)
    path = rk.save_weights(own, tmp_path / "m.weights.h5")
    for target in (GRU(3, 4), GRU(3, 4, initial_state=0.5)):
        before = {k: v.copy() for k, v in target.params.items()}
        with pytest.raises(ValueError, match=r"got one starting from a state of its own "
                           r"\(from -?[\d.]+ to -?[\d.]+\) instead"):  # fmt: skip
            rk.load_weights(target, path)
        for k, v in target.params.items():
            assert np.array_equal(v, before[k]), k
    rk.save_weights(GRU(3, 4, initial_state=0.25), path)
    with pytest.raises(ValueError, match="got one starting from 0.25 instead"):
        rk.load_weights(GRU(3, 4, initial_state=0.5), path)


def beyond_float32(model, key):
    """`model` with a float64 weight float32 cannot hold (it would be inf in the file)."""
    model.params[key][2, 1] = 1e39
    return model


def test_a_float64_model_exports_as_float32(tmp_path):
    """As the ONNX and PyTorch exports: the weights rounded to float32, the outputs equal to
    float32's rounding."""
    rng = np.random.default_rng(11)
    f64 = np.float64
    model = Sequential(Embedding(12, 4, dtype=f64), LSTM(4, 5, bidirectional=True, dtype=f64,
                       initial_state="learned"), LastStep(), Linear(10, 3, dtype=f64))  # fmt: skip
    for v in model.params.values():
        v[...] = rng.uniform(-0.6, 0.6, v.shape)
    path = rk.save_weights(model, tmp_path / "m.weights.h5")
    namespace: dict = {}
    exec(rk.snippet(model, path), namespace)
    x = rng.integers(0, 12, (3, 6))
    theirs = keras_out(namespace["model"], x, None)
    assert theirs.dtype == np.float32
    assert_close(model.forward(x).output, theirs, None, "float64")
    import h5py

    with h5py.File(path) as f:
        kinds = set()
        f.visititems(lambda _, o: kinds.add(o.dtype) if isinstance(o, h5py.Dataset) else None)
    assert kinds == {np.dtype(np.float32)}


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda: LSTM(3, 4, peephole=True), "LSTM variant"),
        (lambda: GRU(3, 4, bidirectional=True, merge="readout", output_size=2), "readout"),
        (lambda: GRU(3, 4, batch_first=False), "time-major"),
        (lambda: Sequential([]), "one module at least; got an empty Sequential"),
        (lambda: Sequential(GRU(3, 4, bidirectional=True), Linear(8, 8), LastStep()),
         r"`model \(module 2\)` must be a LastStep after a bidirectional layer with no Linear "
         r"between them for Keras; got one after module 1, a Linear instead. rnnlab's LastStep "
         r"then reads the backward direction at the last step"),
        (lambda: Sequential(Linear(3, 4), LastStep()),
         r"must be a LastStep after a recurrent layer \(through Dropout and Linear modules\) for "
         r"Keras; got one with no recurrent layer before it instead. Keras picks the last valid "
         r"step only as a recurrent layer's return_sequences=False"),
        (lambda: Sequential(Embedding(5, 3), LastStep(), Linear(3, 2)),
         "got one after module 0, an Embedding instead"),
        (lambda: beyond_float32(Sequential(LSTM(3, 4, dtype=np.float64),
                                           Linear(4, 3, dtype=np.float64)), "1.weight"),
         r"`model` must be a model whose weights float32 holds \(\|w\| ≤ 3.4e\+38: the Keras "
         r"export is float32\); got 1e\+39 in 1.weight at index \(2, 1\) instead"),
        (lambda: Sequential(GRU(3, 4, dtype=np.float64, initial_state=6e38)),
         r"got 6e\+38 in initial_state of module 0 instead"),
    ],
    ids=["peephole", "readout", "time_major", "empty", "bi_linear_last",
         "last_without_recurrent", "last_after_embedding", "beyond_float32",
         "initial_state_beyond_float32"],
)
def test_export_refusals_leave_no_file(make, message, tmp_path):
    with pytest.raises(ValueError, match=message) as e:
        rk.save_weights(make(), tmp_path / "m.weights.h5")
    assert "\n" not in str(e.value)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match=message):  # the snippet says what save_weights says
        rk.snippet(make(), tmp_path / "m.weights.h5")


def test_a_bidirectional_of_two_kinds_is_refused_with_their_articles():
    """A Keras Bidirectional whose backward layer is a GRU under an LSTM forward: it was
    "a Bidirectional whose backward layer is a LSTM too"."""
    bi = keras.layers.Bidirectional(
        keras.layers.LSTM(4, return_sequences=True),
        backward_layer=keras.layers.GRU(4, return_sequences=True, go_backwards=True))
    keras.Sequential([keras.Input((None, 3)), bi])
    with pytest.raises(ValueError, match=r"^`source` must be a Bidirectional whose backward "
                       r"layer is an LSTM too; got a GRU instead\.$"):  # fmt: skip
        rk.load_weights(LSTM(3, 4, bidirectional=True), [bi])
    with pytest.raises(ValueError, match=r"^`source \(layer 0\)` must be a Keras GRU for "
                       r"rnnlab's gru; got an LSTM instead\.$"):  # fmt: skip
        rk.load_weights(GRU(3, 4), [bi.forward_layer])


def test_load_errors(tmp_path):
    rng = np.random.default_rng(5)
    lstm = keras.layers.LSTM(4, return_sequences=True)
    gru = keras.layers.GRU(4, return_sequences=True)
    model = keras.Sequential([keras.Input((None, 3)), lstm, gru])
    model.save_weights(tmp_path / "m.weights.h5")
    layer = LSTM(3, 4, 2, rng=rng)
    before = {k: v.copy() for k, v in layer.params.items()}
    with pytest.raises(ValueError, match="several kinds"):
        rk.load_weights(layer, str(tmp_path / "m.weights.h5"))
    with pytest.raises(ValueError, match="a Keras LSTM for rnnlab's lstm; got a GRU"):
        rk.load_weights(layer, str(tmp_path / "m.weights.h5"), keys=["lstm", "gru"])
    with pytest.raises(ValueError, match="2 recurrent layers"):
        rk.load_weights(layer, [lstm])
    with pytest.raises(ValueError, match=r"kernel` must be an array of shape \(3, 16\)"):
        rk.load_weights(LSTM(3, 4, rng=rng), [keras_lstm(5, 4)])
    with pytest.raises(ValueError, match="reset_after=False"):
        rk.load_weights(GRU(3, 4, reset_after=False), [gru])
    with pytest.raises(ValueError, match="which does not exist"):
        rk.load_weights(layer, str(tmp_path / "missing.keras"))
    (tmp_path / "junk.keras").write_bytes(b"junk")
    with pytest.raises(ValueError, match="not a Keras 3"):
        rk.load_weights(layer, str(tmp_path / "junk.keras"))
    for k, v in layer.params.items():  # nothing half-loaded
        assert np.array_equal(v, before[k]), k


def keras_lstm(I, H):
    layer = keras.layers.LSTM(H)
    layer.build((None, None, I))
    return layer


def _keras_model(*layers_, I=4):
    model = keras.Sequential([keras.Input((None, I)), *layers_])
    rng = np.random.default_rng(7)
    model.set_weights([rng.standard_normal(w.shape).astype(np.float32)
                       for w in model.get_weights()])  # fmt: skip
    return model


def _bidirectional_source(bi, as_file: bool, tmp_path):
    """(the Keras model around `bi`, what load_weights reads: the layer or a .keras file)."""
    model = _keras_model(bi)
    if not as_file:
        return model, bi
    model.save(tmp_path / "m.keras")
    return model, str(tmp_path / "m.keras")


@pytest.mark.parametrize("as_file", [False, True], ids=["layer", "keras_file"])
def test_bidirectional_backward_layer_options_checked(as_file, tmp_path):
    """A Bidirectional given a backward layer of its own computes what that layer says; one
    whose options are not rnnlab's (relu here) is refused, by layer and from a .keras file."""
    backward = keras.layers.LSTM(6, return_sequences=True, go_backwards=True, activation="relu")
    bi = keras.layers.Bidirectional(keras.layers.LSTM(6, return_sequences=True),
                                    backward_layer=backward)  # fmt: skip
    model, source = _bidirectional_source(bi, as_file, tmp_path)
    layer = LSTM(4, 6, bidirectional=True)
    before = {k: v.copy() for k, v in layer.params.items()}
    at = rf"'{re.escape(source)}', layer 'bidirectional'" if as_file else "layer 0"
    with pytest.raises(ValueError, match=rf"`source \({at}\) backward layer` must be a Keras "
                       r"layer with activation='tanh'; got activation='relu'"):  # fmt: skip
        rk.load_weights(layer, source)
    for k, v in layer.params.items():
        assert np.array_equal(v, before[k]), k


@pytest.mark.parametrize("as_file", [False, True], ids=["layer", "keras_file"])
def test_bidirectional_own_backward_layer_loads(as_file, tmp_path):
    """A backward layer of its own with rnnlab's options loads, and computes as Keras."""
    backward = keras.layers.GRU(5, return_sequences=True, go_backwards=True)
    bi = keras.layers.Bidirectional(keras.layers.GRU(5, return_sequences=True),
                                    backward_layer=backward)  # fmt: skip
    model, source = _bidirectional_source(bi, as_file, tmp_path)
    layer = GRU(4, 5, bidirectional=True, dtype=np.float64)
    rk.load_weights(layer, source)
    x = np.random.default_rng(1).standard_normal((2, 3, 4)).astype(np.float32)
    want = keras.ops.convert_to_numpy(model(x))
    np.testing.assert_allclose(layer.forward(x.astype(np.float64)).output, want, atol=ATOL)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_load_refuses_non_finite_weights(bad):
    k = keras.layers.GRU(4, return_sequences=True)
    _keras_model(k, I=3)
    w = k.get_weights()
    w[1][2, 3] = bad
    k.set_weights(w)
    layer = GRU(3, 4)
    before = {n: v.copy() for n, v in layer.params.items()}
    with pytest.raises(ValueError, match=r"`source \(layer 0\) recurrent_kernel` must be finite "
                       r"\(no NaN or inf\); got (nan|inf) at index \(2, 3\)"):  # fmt: skip
        rk.load_weights(layer, k)
    for n, v in layer.params.items():
        assert np.array_equal(v, before[n]), n


def test_load_errors_of_keys_and_unbuilt_layers(tmp_path):
    model = keras.Sequential([keras.Input((None, 3)), keras.layers.LSTM(4, return_sequences=True),
                              keras.layers.Dense(2)])  # fmt: skip
    path = str(tmp_path / "m.weights.h5")
    model.save_weights(path)
    layer = LSTM(3, 4)
    with pytest.raises(ValueError, match=r"`keys` must be names of built Keras recurrent layers "
                       r"in '.*m\.weights\.h5'; got 'dense', which is not one"):  # fmt: skip
        rk.load_weights(layer, path, keys=["dense"])
    with pytest.raises(ValueError, match=r"`keys` must be None or a list of layer names.*; got "
                       r"'lstm' \(str\)"):  # fmt: skip
        rk.load_weights(layer, path, keys="lstm")
    rk.load_weights(layer, path, keys=["lstm"])
    for unbuilt in (keras.layers.LSTM(4), keras.layers.Bidirectional(keras.layers.LSTM(4))):
        with pytest.raises(ValueError, match="`source` must be a built Keras recurrent layer"):
            rk.load_weights(LSTM(3, 4, bidirectional=type(unbuilt).__name__ != "LSTM"), unbuilt)
    with pytest.raises(ValueError, match=r"`source` must be a \.keras or \.weights\.h5 file; got "
                       r"'.*', a directory"):  # fmt: skip
        rk.load_weights(layer, str(tmp_path))


def test_save_weights_refuses_a_directory(tmp_path):
    (tmp_path / "m.weights.h5").mkdir()
    with pytest.raises(ValueError, match=r"^`path` must be a file path; got '.*m\.weights\.h5', "
                       r"a directory"):  # fmt: skip
        rk.save_weights(LSTM(3, 4), tmp_path / "m.weights.h5")
    assert [p.name for p in tmp_path.iterdir()] == ["m.weights.h5"]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX's")
def test_save_weights_refuses_a_named_pipe_and_a_folder_s_path(tmp_path):
    """The file is renamed over `path`: a FIFO there was deleted and a regular file left in
    its place; "out.weights.h5/" wrote a file without the separator."""
    os.mkfifo(tmp_path / "p.weights.h5")
    with pytest.raises(ValueError, match=r"^`path` must be a regular file's path \(or a new "
                       r"one\); got '.*p\.weights\.h5', a FIFO \(named pipe\)"):  # fmt: skip
        rk.save_weights(LSTM(3, 4), tmp_path / "p.weights.h5")
    with pytest.raises(ValueError, match=r"^`path` must be a file path; got '.*/o\.weights\.h5/', "
                       r"a folder's path"):  # fmt: skip
        rk.save_weights(LSTM(3, 4), f"{tmp_path}/o.weights.h5/")
    assert (tmp_path / "p.weights.h5").is_fifo()
    assert [p.name for p in tmp_path.iterdir()] == ["p.weights.h5"]


def test_foreign_files_are_refused_in_one_line(tmp_path):
    """A .keras file whose config.json is not a Keras model's, a .weights.h5 whose `layers`
    is not a group, and a cell group without its name: each refused naming the file or the
    layer (they met an AttributeError, or said "got a  instead")."""
    import json
    import zipfile

    import h5py

    layer = LSTM(4, 4, rng=0)
    model = _keras_model(keras.layers.LSTM(4, return_sequences=True))
    model.save(tmp_path / "m.keras")
    with zipfile.ZipFile(tmp_path / "m.keras") as z:
        weights = z.read("model.weights.h5")
    for config in ([1, 2], {"config": {"layers": ["lstm"]}}, {"config": []}):
        with zipfile.ZipFile(tmp_path / "bad.keras", "w") as z:
            z.writestr("config.json", json.dumps(config))
            z.writestr("model.weights.h5", weights)
        with pytest.raises(ValueError, match=r"bad\.keras' is not a Keras 3 \.keras file: its "
                           r"config\.json does not describe a Keras model"):  # fmt: skip
            rk.load_weights(layer, tmp_path / "bad.keras")
    with h5py.File(tmp_path / "bad.weights.h5", "w") as f:
        f.create_dataset("layers", data=np.arange(3))
    with pytest.raises(ValueError, match="no 'layers' group"):
        rk.load_weights(layer, tmp_path / "bad.weights.h5")
    model.save_weights(tmp_path / "m.weights.h5")
    with h5py.File(tmp_path / "m.weights.h5", "r+") as f:
        del f["layers/lstm/cell/vars"].attrs["name"]
    with pytest.raises(ValueError, match="a Keras LSTM for rnnlab's lstm; got a layer whose "
                       "cell has no name instead"):  # fmt: skip
        rk.load_weights(layer, tmp_path / "m.weights.h5")


def test_any_path_like_source_is_a_file(tmp_path):
    """A source that is an os.PathLike other than pathlib's (a file name object of one's
    own) is read as a file, not refused as "not a Keras layer"."""

    class Where:
        def __init__(self, path):
            self.path = str(path)

        def __fspath__(self):
            return self.path

    model = _keras_model(keras.layers.LSTM(4, return_sequences=True))
    model.save_weights(tmp_path / "m.weights.h5")
    layer = LSTM(4, 4, rng=0)
    rk.load_weights(layer, Where(tmp_path / "m.weights.h5"))
    kernel = model.layers[0].get_weights()[0]
    assert np.allclose(layer.params["weight_ih_l0"], kernel.T)


def test_load_errors_name_the_file_and_its_layer(tmp_path):
    """A file of another architecture was refused as `source (layer 0)` or `source`, naming
    neither the file nor its layer: with several files about, which one was it?"""
    model = keras.Sequential([keras.Input((None, 3)), keras.layers.GRU(4, return_sequences=True),
                              keras.layers.Dense(2)])  # fmt: skip
    model.save(tmp_path / "gru.keras")
    model.save_weights(tmp_path / "gru.weights.h5")
    for name in ("gru.keras", "gru.weights.h5"):
        path = tmp_path / name
        at = re.escape(str(path))
        with pytest.raises(ValueError, match=rf"^`source \('{at}', layer 'gru'\)` must be a "
                           r"Keras LSTM for rnnlab's lstm; got a GRU instead\.$"):  # fmt: skip
            rk.load_weights(LSTM(3, 4), path)
        with pytest.raises(ValueError, match=rf"^`source \('{at}', layer 'gru'\) kernel` must "
                           r"be an array of shape \(5, 12\); got shape \(3, 12\) instead\.$"):
            rk.load_weights(GRU(5, 4), path)
        with pytest.raises(ValueError, match=rf"^`source \('{at}'\)` must be 2 recurrent "
                           r"layers \(num_layers of the rnnlab layer\); got 1 \('gru'\) instead"):
            rk.load_weights(GRU(3, 4, 2), path)
    dense = keras.Sequential([keras.Input((None, 3)), keras.layers.Dense(2)])
    dense.save(tmp_path / "dense.keras")
    at = re.escape(str(tmp_path / "dense.keras"))
    with pytest.raises(ValueError, match=rf"^`source \('{at}'\)` must be 1 "
                       r"recurrent layer \(num_layers of the rnnlab layer\); got 0 instead\.$"):
        rk.load_weights(GRU(3, 4), tmp_path / "dense.keras")


def test_load_refuses_a_weight_beyond_the_layers_range(tmp_path):
    """A float64 array in a weights file with a value beyond float32's range became inf in a
    float32 layer, silently but for NumPy's RuntimeWarning: a model giving NaN later."""
    import h5py

    model = _keras_model(keras.layers.GRU(4, return_sequences=True), I=3)
    path = tmp_path / "m.weights.h5"
    model.save_weights(path)
    with h5py.File(path, "r+") as f:
        big = f["layers/gru/cell/vars/1"][...].astype(np.float64)
        big[2, 3] = 1e300
        del f["layers/gru/cell/vars/1"]
        f["layers/gru/cell/vars/1"] = big
    layer = GRU(3, 4)
    before = {n: v.copy() for n, v in layer.params.items()}
    at = re.escape(str(path))
    with pytest.raises(ValueError, match=rf"^`source \('{at}', layer 'gru'\) recurrent_kernel` "
                       r"must be within float32's range \(\|w\| ≤ 3.4e\+38: the module is "
                       r"float32\); got 1e\+300 at index \(2, 3\) instead\.$"):  # fmt: skip
        rk.load_weights(layer, path)
    for n, v in layer.params.items():
        assert np.array_equal(v, before[n]), n
    wide = GRU(3, 4, dtype=np.float64)  # which holds it
    rk.load_weights(wide, path)
    assert wide.params["weight_hh_l0"].max() == 1e300
