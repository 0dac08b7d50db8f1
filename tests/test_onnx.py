"""ONNX export (rnnlab.onnx) against onnxruntime: outputs and final states on padded batches,
the graph's interface, and the errors of what ONNX's operators cannot express.

onnx and onnxruntime are in the test extra; locally the module is skipped without them,
under CI (CI set in the environment) a missing one is an error, as for the PyTorch oracle.
"""

import os

import numpy as np
import pytest

from rnnlab import models
from rnnlab.cells import ElmanCell, LSTMCell
from rnnlab.layers import GRU, LSTM, RNN, Recurrent
from rnnlab.modules import Dropout, Embedding, LastStep, Linear, MeanOverTime, Sequential

if os.environ.get("CI"):
    import onnx
    import onnxruntime  # noqa: F401
else:
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")

import rnnlab.onnx as rx  # noqa: E402

ATOL = 1e-5

# (name, constructor, keywords): every cell ONNX's operators express
CELLS = [
    ("tanh", RNN, {}),
    ("relu", RNN, {"nonlinearity": "relu"}),
    ("lstm", LSTM, {}),
    ("peephole", LSTM, {"peephole": True}),
    ("coupled", LSTM, {"coupled": True}),
    ("coupled_peephole", LSTM, {"coupled": True, "peephole": True}),
    ("gru", GRU, {}),
    ("gru_orig", GRU, {"reset_after": False}),
]


def randomise(model, rng, scale=0.5):
    """Every parameter redrawn (biases, peepholes and learned states non-zero)."""
    for v in model.params.values():
        v[...] = rng.uniform(-scale, scale, v.shape)
    return model


def random_config(seed):
    rng = np.random.default_rng([seed, 18])
    name, ctor, kw = CELLS[seed % len(CELLS)]
    bi = bool(rng.integers(2))
    cfg = {
        "name": name,
        "ctor": ctor,
        "kw": dict(kw),
        "L": int(rng.integers(1, 4)),
        "bi": bi,
        "batch_first": bool(rng.integers(2)),
        "merge": str(rng.choice(["concat", "sum", "readout"])) if bi else "concat",
        "init": ["zeros", 0.5, "learned", "given"][int(rng.integers(4))],
        "B": int(rng.integers(1, 6)),
        "T": int(rng.integers(1, 12)),
        "I": int(rng.integers(1, 7)),
        "H": int(rng.integers(1, 9)),
    }
    return cfg, rng


def as_tuple(state):
    return state if isinstance(state, tuple) else (state,)


def assert_close(ours, theirs, what):
    ours, theirs = np.asarray(ours), np.asarray(theirs)
    assert ours.shape == theirs.shape, f"{what}: shape {theirs.shape}, rnnlab's {ours.shape}"
    err = float(np.abs(ours - theirs).max()) if ours.size else 0.0
    assert err <= ATOL, f"{what}: max abs error {err:.2e}"


@pytest.mark.parametrize("seed", range(40))
def test_random_layers_match_onnxruntime(seed, tmp_path):
    c, rng = random_config(seed)
    kw = dict(c["kw"], bidirectional=c["bi"], batch_first=c["batch_first"], merge=c["merge"])
    if c["merge"] == "readout":
        kw["output_size"] = int(rng.integers(1, 5))
    if c["init"] != "given":
        kw["initial_state"] = c["init"]
    layer = randomise(c["ctor"](c["I"], c["H"], c["L"], rng=rng, **kw), rng)
    B, T, D = c["B"], c["T"], 2 if c["bi"] else 1
    x = rng.standard_normal((B, T, c["I"]) if c["batch_first"] else (T, B, c["I"]))
    x = x.astype(np.float32)
    lengths = rng.integers(1, T + 1, B)
    lengths[0] = T  # the padded length is one of the lengths, as in a trimmed batch
    rng.shuffle(lengths)
    state = None
    if c["init"] == "given":
        shape = (c["L"] * D, B, c["H"])
        h0 = rng.standard_normal(shape).astype(np.float32)
        state = (h0, rng.standard_normal(shape).astype(np.float32)) if layer.cell.has_c else h0
    path = rx.export(layer, tmp_path / "layer.onnx", state=state is not None)
    ours = layer.forward(x, lengths=lengths, state=state)
    theirs = rx.Runtime(path).forward(x, lengths=lengths, state=state)
    where = f"{c}"
    assert_close(ours.output, theirs.output, f"output of {where}")
    ours_state, theirs_state = as_tuple(ours.state), as_tuple(theirs.state)
    assert len(ours_state) == len(theirs_state)
    for a, b, n in zip(ours_state, theirs_state, ("h_n", "c_n")[: len(ours_state)], strict=True):
        assert_close(a, b, f"{n} of {where}")
    # and the outputs are not trivially equal (a deep ReLU stack of few units may be all dead)
    assert np.abs(ours.output).max() > 1e-3 or c["name"] == "relu"


@pytest.mark.parametrize("name,ctor,kw", CELLS, ids=[c[0] for c in CELLS])
def test_without_lengths_input(name, ctor, kw, tmp_path):
    rng = np.random.default_rng(3)
    layer = randomise(ctor(4, 5, 2, bidirectional=True, rng=rng, **kw), rng)
    x = rng.standard_normal((3, 6, 4)).astype(np.float32)
    path = rx.export(layer, tmp_path / "m.onnx", lengths=False)
    assert [i.name for i in onnx.load(path).graph.input] == ["x"]
    theirs = rx.Runtime(path).forward(x)
    assert_close(layer.forward(x).output, theirs.output, "output")
    with pytest.raises(ValueError, match="lengths=False"):
        rx.Runtime(path).forward(x, lengths=np.array([6, 2, 6]))
    with pytest.raises(ValueError, match="`lengths` must be 3 lengths between 1 and 6"):
        rx.Runtime(path).forward(x, lengths=np.array([7, 2, 6]))
    with pytest.raises(ValueError, match=r"`lengths` must be 3 lengths between 1 and 6; got "
                       r"the length 0 instead"):  # (it said "an array of shape (3,)")
        rx.Runtime(path).forward(x, lengths=np.array([5, 0, 3]))
    with pytest.raises(ValueError, match="`state` must be None for a graph exported without"):
        rx.Runtime(path).forward(x, state=layer.forward(x).state)


def sequential_models(rng):
    """Models as a run directory holds them, and two more."""
    token_lstm = Sequential(
        Embedding(11, 4, rng=rng),
        LSTM(4, 6, 2, initial_state="learned", rng=rng),
        LastStep(),
        Dropout(0.3),
        Linear(6, 3, rng=rng),
    )
    gru_mean = Sequential(
        GRU(5, 4, bidirectional=True, reset_after=False, rng=rng),
        MeanOverTime(),
        Linear(8, 2, rng=rng),
    )
    bi_last = Sequential(
        RNN(5, 4, 2, bidirectional=True, nonlinearity="relu", rng=rng),
        LastStep(),
        Linear(8, 1, rng=rng),
    )
    tagger = Sequential(
        Embedding(11, 3, rng=rng), LSTM(3, 5, bidirectional=True, peephole=True, rng=rng),
        Dropout(0.1), Linear(10, 7, rng=rng),
    )  # fmt: skip
    no_bias = Sequential(GRU(5, 4, rng=rng), Linear(4, 3, bias=False, rng=rng))
    return {"token_lstm": token_lstm, "gru_mean": gru_mean, "bi_last": bi_last,
            "tagger": tagger, "no_bias": no_bias}  # fmt: skip


@pytest.mark.parametrize("which", ["token_lstm", "gru_mean", "bi_last", "tagger", "no_bias"])
@pytest.mark.parametrize("with_lengths", [True, False], ids=["lengths", "full"])
def test_sequential_models_match(which, with_lengths, tmp_path):
    rng = np.random.default_rng(5)
    model = randomise(sequential_models(rng)[which], rng)
    B, T = 5, 9
    first = model.modules[0]
    if isinstance(first, Embedding):
        x = rng.integers(0, first.num_embeddings, (B, T))
    else:
        x = rng.standard_normal((B, T, first.input_size)).astype(np.float32)
    lengths = np.array([9, 4, 1, 7, 9]) if with_lengths else None
    path = rx.export(model, tmp_path / f"{which}.onnx")
    ours = model.forward(x, lengths=lengths)
    theirs = rx.Runtime(path).forward(x, lengths=lengths)
    assert_close(ours.output, theirs.output, f"{which} output")
    assert len(theirs.state) == len(model.modules)
    for a, b in zip(ours.state, theirs.state, strict=True):
        if a is None:
            assert b is None
            continue
        for u, v in zip(as_tuple(a), as_tuple(b), strict=True):
            assert_close(u, v, f"{which} final state")


def test_state_carried_across_calls(tmp_path):
    """Windows of a stream, the state carried from one call to the next (how charlm is
    evaluated), give the outputs of one call over the whole stream."""
    rng = np.random.default_rng(6)
    model = randomise(models.build({"input": {"type": "tokens", "vocab_size": 9, "embed_dim": 4},
                                    "rnn": {"cell": "lstm", "hidden_size": 5, "num_layers": 2,
                                            "initial_state": "learned"},
                                    "output_size": 9}, rng=rng), rng)  # fmt: skip
    path = rx.export(model, tmp_path / "lm.onnx", lengths=False, state=True)
    names = [i.name for i in onnx.load(path).graph.input]
    assert names == ["x", "h0", "c0"]
    runtime = rx.Runtime(path)
    x = rng.integers(0, 9, (3, 12))
    whole = model.forward(x).output
    outs, state = [], None
    for a in range(0, 12, 5):
        f = runtime.forward(x[:, a : a + 5], state=state)
        outs.append(f.output)
        state = f.state
    assert_close(whole, np.concatenate(outs, axis=1), "windowed output")
    assert_close(model.forward(x).state[1][0], state[1][0], "h_n after the windows")


def test_graph_interface(tmp_path):
    rng = np.random.default_rng(7)
    model = sequential_models(rng)["token_lstm"]
    path = rx.export(model, tmp_path / "m.onnx", state=True)
    m = onnx.load(path)
    onnx.checker.check_model(m, full_check=True)
    assert m.opset_import[0].version >= 17
    ops = [n.op_type for n in m.graph.node]
    assert ops.count("LSTM") == 2 and "Gather" in ops
    dims = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim]
            for i in m.graph.input}  # fmt: skip
    assert dims == {"x": ["batch", "time"], "lengths": ["batch"],
                    "h0": [2, "batch", 6], "c0": [2, "batch", 6]}  # fmt: skip
    assert m.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.INT64
    outs = {o.name: o for o in m.graph.output}
    assert list(outs) == ["y", "h_n", "c_n"]
    y_dims = [d.dim_param or d.dim_value for d in outs["y"].type.tensor_type.shape.dim]
    assert len(y_dims) == 2 and y_dims[1] == 3  # shape inference filled the outputs in
    types = {t.data_type for t in m.graph.initializer}
    assert types <= {onnx.TensorProto.FLOAT, onnx.TensorProto.INT64, onnx.TensorProto.INT32}


def test_float64_model_exports_as_float32(tmp_path):
    rng = np.random.default_rng(8)
    layer = randomise(GRU(3, 4, dtype=np.float64, rng=rng), rng)
    x = rng.standard_normal((2, 5, 3))
    path = rx.export(layer, tmp_path / "m.onnx")
    assert_close(layer.forward(x).output, rx.Runtime(path).forward(x).output, "output")


class Own(ElmanCell):
    """A cell of one's own (here the Elman cell under another name)."""


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda: LSTM(3, 4, cell_clip=2.0), "cell_clip=2"),
        (lambda: LSTM(3, 4, layer_norm=True), "layer-normalised LSTM"),
        (lambda: Recurrent(Own(), 3, 4), "a cell of its own"),
        (lambda: Sequential(Embedding(5, 3), LSTM(3, 4, layer_norm=True)), r"module 1"),
        (
            lambda: models.build(
                {
                    "input": {"type": "vectors", "size": 3},
                    "rnn": {"cell": "jordan", "hidden_size": 4},
                    "output_size": 3,
                }
            ),
            "output-feedback",
        ),  # fmt: skip
        (lambda: "not a model", "a Sequential or one of rnnlab's modules"),
    ],
    ids=["cell_clip", "layer_norm", "own_cell", "in_sequential", "jordan", "str"],
)
def test_unexportable_models_are_refused_in_one_line(make, message, tmp_path):
    path = tmp_path / "m.onnx"
    path.write_bytes(b"the old file")
    with pytest.raises(ValueError, match=message) as e:
        rx.export(make(), path)
    assert "\n" not in str(e.value)
    assert path.read_bytes() == b"the old file"  # untouched, and no temporary file left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


def test_unknown_parameter_is_refused(tmp_path):
    """A layer with a parameter the exporter does not know (a future variant) is refused
    rather than exported without it."""
    layer = LSTM(3, 4)
    layer.params["weight_hr_l0"] = np.zeros((2, 4), np.float32)
    with pytest.raises(ValueError, match="weight_hr_l0"):
        rx.export(layer, tmp_path / "m.onnx")
    layer = LSTM(3, 4)
    layer.proj_size = 2
    with pytest.raises(ValueError, match="proj_size=2"):
        rx.export(layer, tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []


def test_bad_arguments(tmp_path):
    layer = GRU(3, 4)
    newest = onnx.defs.onnx_opset_version()
    for opset in (13, newest + 1, 17.0):
        with pytest.raises(ValueError, match=f"`opset` must be an integer from 17 to {newest}"):
            rx.export(layer, tmp_path / "m.onnx", opset=opset)
    with pytest.raises(ValueError, match=r"`doc` must be a str; got 3 \(int\)"):
        rx.export(layer, tmp_path / "m.onnx", doc=3)
    with pytest.raises(ValueError, match="`model` must be a Sequential of one module at least"):
        rx.export(Sequential(), tmp_path / "m.onnx")
    with pytest.raises(ValueError, match="`path` must be an ONNX file; got '.*', a directory"):
        rx.Runtime(tmp_path)
    with pytest.raises(ValueError, match="`lengths` must be True or False"):
        rx.export(layer, tmp_path / "m.onnx", lengths="yes")
    with pytest.raises(ValueError, match="a file path"):
        rx.export(layer, tmp_path)
    with pytest.raises(ValueError, match="which does not exist"):
        rx.Runtime(tmp_path / "missing.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(ValueError, match="not an ONNX model onnxruntime can run"):
        rx.Runtime(tmp_path / "junk.onnx")


def test_missing_onnx_says_how_to_install(monkeypatch, tmp_path):
    import importlib

    real = importlib.import_module

    def fake(name, *args):
        if name == "onnx":
            raise ImportError("No module named 'onnx'")
        return real(name, *args)

    monkeypatch.setattr(importlib, "import_module", fake)
    with pytest.raises(ImportError, match=r"pip install 'rnnlab\[onnx\]'"):
        rx.export(GRU(3, 4), tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []


def test_lstm_gate_order_matters(tmp_path):
    """The test can fail: with the i, f, g, o blocks handed over unreordered, onnxruntime's
    outputs differ (so the reordering is what makes the other tests pass)."""
    rng = np.random.default_rng(9)
    layer = randomise(LSTM(3, 4, rng=rng), rng)
    x = rng.standard_normal((2, 5, 3)).astype(np.float32)
    good = rx.Runtime(rx.export(layer, tmp_path / "a.onnx")).forward(x).output
    order = rx._LSTM_ORDER
    try:
        rx._LSTM_ORDER = (0, 1, 2, 3)
        bad = rx.Runtime(rx.export(layer, tmp_path / "b.onnx")).forward(x).output
    finally:
        rx._LSTM_ORDER = order
    assert_close(layer.forward(x).output, good, "output")
    assert np.abs(bad - good).max() > 1e-3


def test_peephole_weights_reach_the_graph(tmp_path):
    rng = np.random.default_rng(10)
    layer = randomise(LSTM(3, 4, peephole=True, rng=rng), rng)
    m = rx.build_model(layer)
    assert any(n.op_type == "LSTM" and len(n.input) == 8 for n in m.graph.node)
    cell = layer.cell
    assert isinstance(cell, LSTMCell) and cell.peephole


def test_two_recurrent_modules_get_their_own_state_names(tmp_path):
    rng = np.random.default_rng(11)
    model = randomise(Sequential(LSTM(3, 4, rng=rng), GRU(4, 5, bidirectional=True, rng=rng),
                                 Linear(10, 2, rng=rng)), rng)  # fmt: skip
    path = rx.export(model, tmp_path / "m.onnx", state=True)
    m = onnx.load(path)
    assert [i.name for i in m.graph.input] == ["x", "lengths", "h0_0", "c0_0", "h0_1"]
    assert [o.name for o in m.graph.output] == ["y", "h_n_0", "c_n_0", "h_n_1"]
    x = rng.standard_normal((3, 6, 3)).astype(np.float32)
    lengths = np.array([6, 2, 4])
    state = [
        tuple(rng.standard_normal((1, 3, 4)).astype(np.float32) for _ in range(2)),
        rng.standard_normal((2, 3, 5)).astype(np.float32),
        None,
    ]
    ours = model.forward(x, lengths=lengths, state=state)
    theirs = rx.Runtime(path).forward(x, lengths=lengths, state=state)
    assert_close(ours.output, theirs.output, "output")
    assert_close(ours.state[0][1], theirs.state[0][1], "c_n of the LSTM")
    assert_close(ours.state[1], theirs.state[1], "h_n of the GRU")


def test_runtime_refuses_a_misspelt_option(tmp_path):
    """Runtime.forward takes the pass options of every module's forward and refuses any other
    keyword, as a module does (it once swallowed them: `lenghts=` ran without padding)."""
    pytest.importorskip("onnxruntime")
    layer = LSTM(3, 4, rng=np.random.default_rng(0))
    path = rx.export(layer, tmp_path / "m.onnx")
    x = np.random.default_rng(1).standard_normal((5, 2, 3)).astype(np.float32)
    runtime = rx.Runtime(path)
    with pytest.raises(TypeError, match="lenghts"):
        runtime.forward(x, lenghts=np.array([5, 3]))
    ours = layer.forward(x, training=False, grad=False).output
    np.testing.assert_allclose(runtime.forward(x, training=False, grad=False).output, ours,
                               rtol=1e-5, atol=1e-6)  # fmt: skip


def test_runtime_checks_its_inputs_as_the_model_does(tmp_path):
    """Runtime.forward refuses what rnnlab's modules refuse, in their words, before
    onnxruntime sees it: an empty batch aborts the process there, a negative id wraps, a
    float id is truncated, NaN runs."""
    tokens = Sequential(Embedding(5, 3), GRU(3, 4), LastStep())
    runtime = rx.Runtime(rx.export(tokens, tmp_path / "t.onnx"))
    for ids in (np.array([[1, 2, -1]]), np.array([[5]])):
        message = str(pytest.raises(ValueError, tokens.forward, ids).value)
        assert message.startswith("`x` must be token ids in [0, 5)")
        with pytest.raises(ValueError) as e:
            runtime.forward(ids)
        assert str(e.value) == message
    with pytest.raises(ValueError, match="`x` must be an array of integers"):
        runtime.forward(np.array([[1.7, 2.2]]))
    layer = LSTM(3, 4)
    runtime = rx.Runtime(rx.export(layer, tmp_path / "l.onnx", state=True))
    x = np.random.default_rng(0).standard_normal((2, 4, 3)).astype(np.float32)
    zeros = np.zeros((1, 2, 4), np.float32)
    bad = [
        (np.zeros((0, 4, 3), np.float32), {}, "`x` must be an array of one sequence and one step"),
        (np.zeros((2, 0, 3), np.float32), {}, "`x` must be an array of one sequence and one step"),
        (np.zeros((2, 4, 5), np.float32), {}, "`x` must be an array with 3 features"),
        (np.full((2, 4, 3), np.nan, np.float32), {}, r"`x` must be finite"),
        (x, {"state": zeros}, r"`state` must be a pair \(h0, c0\) for an LSTM"),
        (x, {"state": (zeros, zeros[:, :1])}, r"`state\[1\] \(c0\)` must be an array of shape "
         r"\(1, 2, 4\); got shape \(1, 1, 4\)"),
        (x, {"state": (np.full((1, 2, 4), np.inf), zeros)}, r"`state\[0\] \(h0\)` must be finite"),
    ]
    for value, options, message in bad:
        with pytest.raises(ValueError, match=message) as e:
            runtime.forward(value, **options)
        assert "\n" not in str(e.value)
    sequential = Sequential(GRU(3, 4), Linear(4, 2))
    runtime = rx.Runtime(rx.export(sequential, tmp_path / "s.onnx", state=True))
    with pytest.raises(ValueError, match="`state` must be a list of 2 entries"):
        runtime.forward(x, state=[zeros])
    with pytest.raises(ValueError, match=r"`state\[0\]` must be a NumPy array of floats"):
        runtime.forward(x, state=["a", None])
    assert np.array_equal(runtime.forward(x, state=[zeros, None]).output,
                          runtime.forward(x).output)  # fmt: skip


def test_runtime_on_an_empty_batch_does_not_abort(tmp_path):
    """onnxruntime ends the process on a batch of none (its "terminate called"): run in a
    child, so that the old behaviour fails this test instead of killing the session."""
    import subprocess
    import sys

    path = rx.export(LSTM(3, 4), tmp_path / "m.onnx")
    code = (
        "import numpy as np, rnnlab.onnx as rx\n"
        f"r = rx.Runtime({str(path)!r})\n"
        "try:\n"
        "    r.forward(np.zeros((0, 4, 3), np.float32))\n"
        "except ValueError as e:\n"
        "    print(e)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, env={**os.environ})  # fmt: skip
    assert done.returncode == 0, done.stderr[-500:]
    assert "`x` must be an array of one sequence and one step at least" in done.stdout


@pytest.mark.parametrize("opset", sorted({17, 18, onnx.defs.onnx_opset_version()}))
@pytest.mark.parametrize("lengths", [False, True], ids=["no_lengths", "lengths"])
def test_mean_over_time_at_every_opset(opset, lengths, tmp_path):
    """ReduceMean took its axes as an attribute until opset 18, as an input since: the
    graph holds the form of the opset it is exported for."""
    model = Sequential(GRU(3, 4), MeanOverTime(), Linear(4, 2))
    path = rx.export(model, tmp_path / "m.onnx", lengths=lengths, opset=opset)
    assert onnx.load(path).opset_import[0].version == opset
    x = np.random.default_rng(0).standard_normal((2, 5, 3)).astype(np.float32)
    np.testing.assert_allclose(rx.Runtime(path).forward(x).output, model.forward(x).output,
                               atol=ATOL)  # fmt: skip


@pytest.mark.parametrize("lengths", [None, np.array([5, 2])], ids=["full", "padded"])
def test_laststep_through_a_dropout_reads_by_direction_as_rnnlab_does(lengths, tmp_path):
    """Sequential reads a bidirectional layer's directions through a Dropout (the backward
    half where it has read the whole sequence); the graph read the module right before
    LastStep only, and took the last step for both halves (0.07 off)."""
    model = Sequential(LSTM(3, 4, bidirectional=True), Dropout(0.1), LastStep(), Linear(8, 2))
    path = rx.export(model, tmp_path / "m.onnx")
    x = np.random.default_rng(1).standard_normal((2, 5, 3)).astype(np.float32)
    kw = {} if lengths is None else {"lengths": lengths}
    np.testing.assert_allclose(rx.Runtime(path).forward(x, **kw).output,
                               model.forward(x, **kw).output, atol=ATOL)  # fmt: skip


@pytest.mark.parametrize("name", ["m.json", "m.textproto", "m.onnxtxt"])
def test_a_path_onnx_reads_as_text_is_refused(name, tmp_path):
    """onnx.load picks the format by the suffix: the binary graph under m.json was then read
    as JSON by onnx.load (and onnxruntime reads binary graphs only)."""
    with pytest.raises(ValueError, match=r"`path` must be a file name for a binary ONNX graph.*"
                       r"which onnx.load reads as"):  # fmt: skip
        rx.export(GRU(3, 4, rng=0), tmp_path / name)
    assert list(tmp_path.iterdir()) == []
    rx.export(GRU(3, 4, rng=0), tmp_path / "m.pb")  # protobuf by its suffix: written
    assert onnx.load(str(tmp_path / "m.pb")).graph.node


def test_mean_over_time_after_a_time_major_layer_is_refused(tmp_path):
    """Sequential refuses MeanOverTime after (T, B, F) outputs (it would average over the
    batch); the ONNX and PyTorch exports wrote that model, wrong, instead of refusing it."""
    from rnnlab import export

    m = Sequential(GRU(3, 4, batch_first=False, rng=0), MeanOverTime(), Linear(4, 2, rng=0))
    refused = r"`modules\[1\]` must be a MeanOverTime after batch-first outputs"
    with pytest.raises(ValueError, match=refused):
        m.forward(np.zeros((5, 2, 3), np.float32))
    with pytest.raises(ValueError, match=refused):
        rx.export(m, tmp_path / "m.onnx", lengths=False)
    with pytest.raises(ValueError, match=refused):
        export.torch_snippet(m, "p")
    assert list(tmp_path.iterdir()) == []


def test_runtime_refuses_damaged_structure_metadata(tmp_path):
    """The file's "rnnlab.structure" metadata, damaged or foreign: one line naming the file,
    not a JSONDecodeError or KeyError from inside Runtime."""
    path = tmp_path / "m.onnx"
    rx.export(GRU(3, 4, rng=0), path)
    good = onnx.load(str(path))
    superscript = ('{"batch_first": true, "tokens": false, "sequential": false, "modules": 1, '
                   '"recurrent": {"\u00b2": {"suffix": "", "has_c": false, "initial": null}}}')
    for value in ("{not json", "{}", "[1, 2]", '{"batch_first": 1, "tokens": false}', superscript):
        proto = onnx.load(str(path))
        del proto.metadata_props[:]
        onnx.helper.set_model_props(proto, {"rnnlab.structure": value})
        onnx.save(proto, str(path))
        with pytest.raises(ValueError, match=r"`path` must be an ONNX file exported by rnnlab; "
                           r"got '.*m\.onnx', whose rnnlab.structure metadata is damaged"):
            rx.Runtime(path)
    onnx.save(good, str(path))
    assert rx.Runtime(path).forward(np.zeros((1, 2, 3), np.float32)).output.shape == (1, 2, 4)
