"""ONNX export (rnnlab.onnx) against onnxruntime: outputs and final states on padded batches,
the graph's interface, and the errors of what ONNX's operators cannot express.

onnx and onnxruntime are in the test extra; locally the module is skipped without them,
under CI (CI set in the environment) a missing one is an error, as for the PyTorch oracle.
"""

import json
import os

import numpy as np
import pytest
from helpers import oracle

from rnnlab import models
from rnnlab.cells import ElmanCell, LSTMCell
from rnnlab.layers import GRU, LSTM, RNN, Recurrent
from rnnlab.modules import Dropout, Embedding, LastStep, Linear, MeanOverTime, Sequential

onnx = oracle("onnx")
oracle("onnxruntime")

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


def beyond_float32(model, key, value=1e39):
    """`model` with a float64 weight float32 cannot hold (it would be inf in the file)."""
    model.params[key][2, 1] = value
    return model


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
        (lambda: beyond_float32(Sequential(Embedding(5, 3, dtype=np.float64),
                                           GRU(3, 4, dtype=np.float64)), "1.weight_hh_l0"),
         r"`model` must be a model whose weights float32 holds \(\|w\| ≤ 3.4e\+38: the ONNX "
         r"export is float32\); got 1e\+39 in 1.weight_hh_l0 at index \(2, 1\) instead"),
        (lambda: GRU(3, 4, dtype=np.float64, initial_state=-1e39),
         r"got -1e\+39 in initial_state instead"),
    ],
    ids=["cell_clip", "layer_norm", "own_cell", "in_sequential", "jordan", "str",
         "beyond_float32", "initial_state_beyond_float32"],
)
def test_unexportable_models_are_refused_in_one_line(make, message, tmp_path):
    path = tmp_path / "m.onnx"
    path.write_bytes(b"the old file")
    with pytest.raises(ValueError, match=message) as e:
        rx.export(make(), path)
    assert "\n" not in str(e.value)
    assert path.read_bytes() == b"the old file"  # untouched, and no temporary file left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


def test_an_infinite_weight_of_a_float64_model_is_exported_as_it_is(tmp_path):
    """A bias of −inf masks a class off; float32 holds it exactly, and the float64 model
    exported it until the range check (for finite weights past float32's largest) refused
    it too, while the same model in float32 exported."""
    model = Sequential(GRU(2, 3, dtype=np.float64, rng=0), LastStep(),
                       Linear(3, 2, dtype=np.float64, rng=0))  # fmt: skip
    model.modules[2].params["bias"][0] = -np.inf
    x = np.random.default_rng(1).standard_normal((2, 4, 2))
    out = rx.Runtime(rx.export(model, tmp_path / "m.onnx")).forward(x).output
    assert np.all(out[:, 0] == -np.inf)
    np.testing.assert_allclose(out[:, 1], model.forward(x).output[:, 1], atol=1e-5)


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


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX's")
def test_a_path_that_is_a_named_pipe_or_a_folder_s_is_refused(tmp_path):
    """export writes a new file and renames it over `path`: a FIFO there was deleted (its
    reader left waiting), and "out/" wrote a file named "out"."""
    os.mkfifo(tmp_path / "pipe.onnx")
    with pytest.raises(ValueError, match=r"`path` must be a regular file's path \(or a new one\); "
                       r"got '.*pipe.onnx', a FIFO \(named pipe\)"):  # fmt: skip
        rx.export(GRU(3, 4), tmp_path / "pipe.onnx")
    with pytest.raises(ValueError, match=r"got '.*out/', a folder's path \(it ends in a sep"):
        rx.export(GRU(3, 4), f"{tmp_path}/out/")
    assert (tmp_path / "pipe.onnx").is_fifo()
    assert [p.name for p in tmp_path.iterdir()] == ["pipe.onnx"]


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
    oracle("onnxruntime")
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


@pytest.mark.parametrize("lengths", [None, np.array([5, 2, 4])], ids=["full", "padded"])
@pytest.mark.parametrize("ctor", [LSTM, GRU, RNN], ids=["lstm", "gru", "rnn"])
def test_laststep_after_merge_sum_reads_the_final_states(ctor, lengths, tmp_path):
    """After merge 'sum' the directions are not apart in the output, so rnnlab's LastStep
    reads the last layer's two final states, h_n[-2] + h_n[-1]: ONNX's Y_h summed (refused
    before). With a second layer below, whose own final states it does not read."""
    model = randomise(Sequential(ctor(3, 4, 2, bidirectional=True, merge="sum", rng=0),
                                 LastStep(), Dropout(0.2), Linear(4, 2, rng=0)),
                      np.random.default_rng(2))  # fmt: skip
    path = rx.export(model, tmp_path / "m.onnx")
    x = np.random.default_rng(1).standard_normal((3, 5, 3)).astype(np.float32)
    kw = {} if lengths is None else {"lengths": lengths}
    np.testing.assert_allclose(rx.Runtime(path).forward(x, **kw).output,
                               model.forward(x, **kw).output, atol=ATOL)  # fmt: skip
    readout = Sequential(LSTM(3, 4, bidirectional=True, merge="readout", output_size=2),
                         LastStep())  # fmt: skip
    with pytest.raises(ValueError, match=r"merge 'concat' or 'sum' for ONNX.*merge='readout'"):
        rx.export(readout, tmp_path / "r.onnx")


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


@pytest.mark.parametrize("name", ["m.ort", "M.ORT"])
def test_a_path_onnxruntime_reads_as_its_ort_format_is_refused(name, tmp_path):
    """onnxruntime reads a file named '.ort' (in any case) as its ORT format: the graph
    written as m.ort was refused by onnxruntime ("ORT model verification failed") and by
    rnnlab's own Runtime, after export had said nothing."""
    with pytest.raises(ValueError, match=r"`path` must be a file name for a binary ONNX graph.*"
                       r"which onnxruntime reads as its own ORT format"):  # fmt: skip
        rx.export(GRU(3, 4, rng=0), tmp_path / name)
    assert list(tmp_path.iterdir()) == []
    rx.export(GRU(3, 4, rng=0), tmp_path / "m.sort")  # a name ending in "ort" is no suffix
    assert rx.Runtime(tmp_path / "m.sort").forward(np.ones((1, 2, 3), np.float32)).output.shape \
        == (1, 2, 4)


def test_a_doc_that_is_not_unicode_text_is_refused_by_name(tmp_path):
    """A lone surrogate in `doc` (a command line's byte that is not UTF-8) failed in
    protobuf's words, "'utf-8' codec can't encode character '\\udcff'", naming no argument."""
    with pytest.raises(ValueError, match=r"`doc` must be valid Unicode text; got the byte 0xff"):
        rx.export(GRU(3, 4, rng=0), tmp_path / "m.onnx", doc="run \udcff")
    assert list(tmp_path.iterdir()) == []


def test_runtime_runs_a_file_whose_name_is_not_utf8(tmp_path):
    """onnxruntime takes a path as UTF-8 text only: Runtime on m\\xff.onnx, a file export
    wrote, said "is not an ONNX model onnxruntime can run: __init__(): incompatible
    constructor arguments"."""
    layer = GRU(3, 4, rng=0)
    path = rx.export(layer, tmp_path / os.fsdecode(b"m\xff.onnx"))
    x = np.random.default_rng(0).standard_normal((2, 5, 3)).astype(np.float32)
    np.testing.assert_allclose(rx.Runtime(path).forward(x).output, layer.forward(x).output,
                               atol=1e-6, rtol=0)  # fmt: skip


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
    rules = ('{"batch_first": true, "tokens": false, "sequential": false, "modules": 1, '
             '"recurrent": {"0": {"suffix": "", "has_c": false, "initial": null}}, "input": ')
    damaged_rules = [rules + r + "}" for r in ('[["recurrent", "int64"]]', '[["recurrent", null]]',
                                               '[["recurrent", "nonsense"]]', '[["dropout", "f4"]]',
                                               '[["recurrent", "float32"], ["readout", null]]',
                                               '"float32"')]  # fmt: skip
    for value in ("{not json", "{}", "[1, 2]", '{"batch_first": 1, "tokens": false}', superscript,
                  *damaged_rules):  # fmt: skip
        proto = onnx.load(str(path))
        del proto.metadata_props[:]
        onnx.helper.set_model_props(proto, {"rnnlab.structure": value})
        onnx.save(proto, str(path))
        with pytest.raises(ValueError, match=r"`path` must be an ONNX file exported by rnnlab; "
                           r"got '.*m\.onnx', whose rnnlab.structure metadata is damaged"):
            rx.Runtime(path)
    onnx.save(good, str(path))
    assert rx.Runtime(path).forward(np.zeros((1, 2, 3), np.float32)).output.shape == (1, 2, 4)


# ---------------------------------------------------------------------- declared shapes
# Every kind of model the exporter takes, with the shapes its graph must declare: x's, and
# each output's (y, then the final states by name). "batch", "time" and "features" are the
# dynamic axes by the names x declares; a number is a fixed size.
def _shapes_catalogue():
    bt, tb = ["batch", "time"], ["time", "batch"]
    out = []
    for cell, ctor in (("rnn", RNN), ("lstm", LSTM), ("gru", GRU)):
        for batch_first in (True, False):
            for merge in (None, "concat", "sum", "readout"):
                kw = {"bidirectional": merge is not None, "batch_first": batch_first}
                if merge is not None:
                    kw["merge"] = merge
                if merge == "readout":
                    kw["output_size"] = 5
                features = {None: 4, "concat": 8, "sum": 4, "readout": 5}[merge]
                n = 2 * (2 if merge else 1)
                axes = bt if batch_first else tb
                states = {"h_n": [n, "batch", 4]}
                if cell == "lstm":
                    states["c_n"] = [n, "batch", 4]
                name = f"{cell}-{'bf' if batch_first else 'tm'}-{merge or 'uni'}"
                out.append((name, lambda c=ctor, k=kw: c(3, 4, 2, rng=0, **k),
                            [*axes, 3], {"y": [*axes, features], **states}))  # fmt: skip

    def seq(*modules):
        return lambda: Sequential(*modules)

    r = np.random.default_rng(0)
    out += [
        ("token_lstm", seq(Embedding(11, 4, rng=r), LSTM(4, 6, 2, initial_state="learned",
                                                         rng=r),
                           LastStep(), Dropout(0.3), Linear(6, 3, rng=r)),
         bt, {"y": ["batch", 3], "h_n": [2, "batch", 6], "c_n": [2, "batch", 6]}),
        ("gru_mean", seq(GRU(5, 4, bidirectional=True, reset_after=False, rng=r),
                         MeanOverTime(), Linear(8, 2, rng=r)),
         [*bt, 5], {"y": ["batch", 2], "h_n": [2, "batch", 4]}),
        ("bi_last", seq(RNN(5, 4, 2, bidirectional=True, nonlinearity="relu", rng=r),
                        Dropout(0.1), LastStep(), Linear(8, 1, rng=r)),
         [*bt, 5], {"y": ["batch", 1], "h_n": [4, "batch", 4]}),
        ("readout_mean", seq(LSTM(3, 4, bidirectional=True, merge="readout", output_size=5,
                                  peephole=True, rng=r), MeanOverTime()),
         [*bt, 3], {"y": ["batch", 5], "h_n": [2, "batch", 4], "c_n": [2, "batch", 4]}),
        ("tagger", seq(Embedding(11, 3, rng=r), LSTM(3, 5, bidirectional=True, rng=r),
                       Dropout(0.1), Linear(10, 7, rng=r)),
         bt, {"y": [*bt, 7], "h_n": [2, "batch", 5], "c_n": [2, "batch", 5]}),
        ("tagger_time_major", seq(Embedding(11, 3, rng=r), GRU(3, 5, bidirectional=True,
                                  merge="sum", batch_first=False, initial_state=0.5, rng=r),
                                  Linear(5, 2, rng=r)),
         tb, {"y": [*tb, 2], "h_n": [2, "batch", 5]}),
        ("linear_first_time_major", seq(Linear(3, 4, rng=r), LSTM(4, 2, batch_first=False,
                                                                  coupled=True, rng=r)),
         [*tb, 3], {"y": [*tb, 2], "h_n": [1, "batch", 2], "c_n": [1, "batch", 2]}),
        ("no_bias", seq(GRU(5, 4, rng=r), Linear(4, 3, bias=False, rng=r)),
         [*bt, 5], {"y": [*bt, 3], "h_n": [1, "batch", 4]}),
        ("two_layers", seq(LSTM(3, 4, rng=r), GRU(4, 5, bidirectional=True, rng=r),
                           Linear(10, 2, rng=r)),
         [*bt, 3], {"y": [*bt, 2], "h_n_0": [1, "batch", 4], "c_n_0": [1, "batch", 4],
                    "h_n_1": [2, "batch", 5]}),
        ("two_layers_time_major", seq(GRU(3, 4, batch_first=False, rng=r), Dropout(0.2),
                                      RNN(4, 2, 3, batch_first=False, rng=r)),
         [*tb, 3], {"y": [*tb, 2], "h_n_0": [1, "batch", 4], "h_n_2": [3, "batch", 2]}),
        ("dropout_embedding", seq(Dropout(0.1), Embedding(7, 3, rng=r), GRU(3, 2, rng=r)),
         bt, {"y": [*bt, 2], "h_n": [1, "batch", 2]}),
        ("dropout_first", seq(Dropout(0.1), GRU(3, 2, rng=r), LastStep()),
         [*bt, 3], {"y": ["batch", 2], "h_n": [1, "batch", 2]}),
        ("mean_linear", seq(MeanOverTime(), Linear(3, 2, rng=r)),
         [*bt, 3], {"y": ["batch", 2]}),
        ("last_linear_2d", seq(Linear(3, 4, rng=r), LastStep(), Linear(4, 2, rng=r)),
         [*bt, 3], {"y": ["batch", 2]}),
        ("embedding", lambda: Embedding(7, 3, rng=0), bt, {"y": [*bt, 3]}),
        ("linear", lambda: Linear(3, 2, rng=0), [*bt, 3], {"y": [*bt, 2]}),
        ("dropout", lambda: Dropout(0.5), [*bt, "features"], {"y": [*bt, "features"]}),
        ("last_step", LastStep, [*bt, "features"], {"y": ["batch", "features"]}),
        ("mean_over_time", MeanOverTime, [*bt, "features"], {"y": ["batch", "features"]}),
    ]  # fmt: skip
    return out


SHAPES = _shapes_catalogue()
AXES = {"batch": 3, "time": 5, "features": 2}  # distinct sizes: a swapped name shows


def _dims(value_info):
    t = value_info.type.tensor_type
    assert t.HasField("shape"), f"{value_info.name} has no shape"
    return [d.dim_param if d.HasField("dim_param") else
            d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]  # fmt: skip


@pytest.mark.parametrize("lengths,state", [(True, False), (False, False), (True, True)],
                         ids=["lengths", "no_lengths", "state"])  # fmt: skip
@pytest.mark.parametrize("name,make,x_dims,out_dims", SHAPES, ids=[s[0] for s in SHAPES])
def test_every_output_declares_its_shape(name, make, x_dims, out_dims, lengths, state,
                                         tmp_path):  # fmt: skip
    """Every graph output's shape is declared in full: the dynamic axes by the input's names
    (batch and time in the model's layout), the features as a number. Outputs behind a
    readout or a Linear were declared without a shape, and shape inference named their
    axes unk__0, unk__1 (so did onnxruntime, and Netron showed them). Checked against the
    expected shapes, against what shape inference derives on its own, against what
    onnxruntime reports, and against the arrays a run returns."""
    model = make()
    path = rx.export(model, tmp_path / "m.onnx", lengths=lengths, state=state)
    proto = onnx.load(path)
    onnx.checker.check_model(proto, full_check=True)
    onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True)
    inputs = {i.name: _dims(i) for i in proto.graph.input}
    assert inputs["x"] == x_dims
    declared = {o.name: _dims(o) for o in proto.graph.output}
    assert declared == out_dims
    # shape inference on its own (the outputs' and intermediates' shapes cleared) derives
    # nothing that contradicts the declared shapes: the same sizes, the same names where
    # it can follow one through the graph
    bare = onnx.load(path)
    del bare.graph.value_info[:]
    for o in bare.graph.output:
        o.type.tensor_type.ClearField("shape")
    inferred = onnx.shape_inference.infer_shapes(bare, check_type=True, strict_mode=True)
    for o in inferred.graph.output:
        got, want = _dims(o), declared[o.name]
        assert len(got) == len(want), f"{o.name}: inferred {got}, declared {want}"
        for g_, w in zip(got, want, strict=True):
            known = g_ > 0 if isinstance(g_, int) else bool(g_) and not g_.startswith("unk__")
            if known:
                assert g_ == w, f"{o.name}: inferred {got}, declared {want}"
    # onnxruntime reports every output axis known, as declared
    runtime = rx.Runtime(path)
    reported = {o.name: o.shape for o in runtime.session.get_outputs()}
    assert reported == out_dims
    # and a run's arrays have the declared shapes, the names bound to the input's sizes
    feeds = {}
    for i in runtime.session.get_inputs():
        shape = [AXES[d] if isinstance(d, str) else d for d in i.shape]
        if i.name == "x" and i.type == "tensor(int64)":
            feeds["x"] = np.random.default_rng(0).integers(0, 7, shape)
        elif i.name == "lengths":
            feeds["lengths"] = np.array([5, 2, 4], np.int32)
        else:
            feeds[i.name] = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    results = runtime.session.run(None, feeds)
    for o, r in zip(runtime.session.get_outputs(), results, strict=True):
        assert list(r.shape) == [AXES[d] if isinstance(d, str) else d for d in out_dims[o.name]]


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda: Sequential(GRU(3, 2), LastStep(), LastStep()),
         r"`model \(module 2\)` must be a LastStep reading \(batch, time, features\); got one "
         r"after \(batch, features\) outputs"),
        (lambda: Sequential(GRU(3, 2), MeanOverTime(), GRU(2, 2)),
         r"`model \(module 2\)` must be a recurrent layer reading \(batch, time, features\)"),
        (lambda: Sequential(Linear(3, 2), Embedding(5, 2)),
         r"`model \(module 1\)` must be an Embedding at the start \(after Dropouts only\)"),
        (lambda: Sequential(GRU(3, 4), Linear(5, 2)),
         r"`model \(module 1\)` must be a Linear reading the 4 features of the module before "
         r"it; got one of 5 input features"),
        (lambda: Sequential(Embedding(5, 3), Dropout(0.1), LSTM(4, 2)),
         r"`model \(module 2\)` must be a recurrent layer reading the 3 features"),
    ],
    ids=["laststep_of_2d", "recurrent_of_2d", "embedding_later", "linear_features",
         "recurrent_features"],
)  # fmt: skip
def test_a_model_whose_modules_do_not_fit_is_refused_in_one_line(make, message, tmp_path):
    """A model that rnnlab's forward refuses at every call (a module that cannot read what
    the one before writes) is refused at export, naming the module: the graph was written
    with unk__ shapes (LastStep after LastStep), or shape inference refused it in its own
    words ("indices typestr: Tind, has unsupported type")."""
    model = make()
    with pytest.raises(ValueError):
        x = (np.zeros((2, 4), np.int64) if isinstance(model.modules[0], Embedding)
             else np.zeros((2, 4, 3), np.float32))  # fmt: skip
        model.forward(x)
    with pytest.raises(ValueError, match=message) as e:
        rx.export(model, tmp_path / "m.onnx")
    assert "\n" not in str(e.value)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------- Runtime's inputs
# Runtime is rnnlab's module API over the file: it takes the x its model takes (converted to
# the graph's float32 or int64, the results agreeing with the model's) and refuses, in the
# model's words, the x its model refuses.
DTYPE_MODELS = {
    "gru": lambda: GRU(3, 4, rng=0),
    "gru_float64": lambda: GRU(3, 4, dtype=np.float64, rng=0),
    "lstm_time_major": lambda: LSTM(3, 4, batch_first=False, rng=0),
    "linear_gru": lambda: Sequential(Linear(3, 4, rng=0), GRU(4, 2, rng=0)),
    "linear64_gru64": lambda: Sequential(Linear(3, 4, dtype=np.float64, rng=0),
                                         GRU(4, 2, dtype=np.float64, rng=0)),
    "dropout_gru": lambda: Sequential(Dropout(0.2), GRU(3, 2, rng=0)),
    "mean_linear": lambda: Sequential(MeanOverTime(), Linear(3, 2, rng=0)),
    "linear": lambda: Linear(3, 2, rng=0),
    "last_step": LastStep,
}  # fmt: skip
X_KINDS = {
    "float16": np.float16, "float32": np.float32, "float64": np.float64,
    "longdouble": np.longdouble, "int64": np.int64, "uint8": np.uint8, "bool": np.bool_,
    "list": list,
}  # fmt: skip


def _outcome(run):
    """("ok", output) or ("refused", message) of a forward."""
    try:
        return "ok", run().output
    except ValueError as e:
        return "refused", str(e)


@pytest.mark.parametrize("kind", list(X_KINDS))
@pytest.mark.parametrize("which", list(DTYPE_MODELS))
def test_runtime_takes_the_dtypes_its_model_takes(which, kind, tmp_path):
    """x of each dtype, given to the model and to Runtime over its file: both refuse it with
    the same message, or both take it and agree. Runtime took any float for a graph whose
    model refuses all but its own dtype (float16 or float64 for a float32 GRU, float32 for
    a float64 one), and went on silently. One exception: the file of a float64 model whose
    first layer is recurrent takes float32 too, its graph's own dtype (the model refuses
    it): compared with the model given the same values in float64."""
    model = DTYPE_MODELS[which]()
    runtime = rx.Runtime(rx.export(model, tmp_path / "m.onnx"))
    x = np.random.default_rng(2).standard_normal((2, 5, 3)) * 2
    if which == "lstm_time_major":
        x = x.swapaxes(0, 1)
    x = x.tolist() if kind == "list" else x.astype(X_KINDS[kind])
    lengths = np.array([5, 3])
    graphs_own = which == "gru_float64" and kind == "float32"
    ours = _outcome(lambda: model.forward(np.float64(x) if graphs_own else x, lengths=lengths))
    theirs = _outcome(lambda: runtime.forward(x, lengths=lengths))
    assert theirs[0] == ours[0], f"rnnlab: {ours}; Runtime: {theirs}"
    if ours[0] == "refused":
        assert theirs[1] == ours[1]
        assert theirs[1].startswith("`x` must be")
    else:  # the model computes in x's dtype where it keeps it (a float16 mean), the file
        # in float32: they agree to the coarser of the two
        assert theirs[1].shape == ours[1].shape
        coarsest = np.float16 if kind == "float16" else np.float32
        tol = max(ATOL, 10 * float(np.finfo(coarsest).eps))
        np.testing.assert_allclose(theirs[1], np.asarray(ours[1], np.float64), atol=tol,
                                   rtol=tol)  # fmt: skip


def test_runtime_conversions_are_the_models():
    """What the model takes, spelt out (the test above compares with rnnlab, whatever it
    does): a recurrent layer its own dtype only, a Linear or a readout any float."""
    taken = {}
    for which, make in DTYPE_MODELS.items():
        model = make()
        taken[which] = [k for k in ("float16", "float32", "float64")
                        if _outcome(lambda k=k, model=model: model.forward(
                            np.zeros((1, 2, 3), X_KINDS[k])))[0] == "ok"]  # fmt: skip
    assert taken == {
        "gru": ["float32"], "gru_float64": ["float64"], "lstm_time_major": ["float32"],
        "linear_gru": ["float16", "float32"],  # (float16 @ float32 weights is float32)
        "linear64_gru64": ["float16", "float32", "float64"], "dropout_gru": ["float32"],
        "mean_linear": ["float16", "float32", "float64"],
        "linear": ["float16", "float32", "float64"],
        "last_step": ["float16", "float32", "float64"],
    }  # fmt: skip


TOKEN_INPUTS = {
    "int64": np.array([[1, 2, 4], [0, 3, 3]]),
    "int32": np.array([[1, 2, 4], [0, 3, 3]], np.int32),
    "uint8": np.array([[1, 2, 4], [0, 3, 3]], np.uint8),
    "list": [[1, 2, 4], [0, 3, 3]],
    "negative": np.array([[1, 2, -1], [0, 3, 3]]),
    "out_of_range": np.array([[1, 2, 5], [0, 3, 3]]),
    "far_out_of_range": np.array([[1, 2, 2**40], [0, 3, 3]]),
    "uint64_huge": np.array([[1, 2, 2**63 + 1], [0, 3, 3]], np.uint64),
    "float_whole": np.array([[1.0, 2.0, 4.0], [0.0, 3.0, 3.0]]),
    "float_fraction": np.array([[1.7, 2.2, 4.0], [0.0, 3.0, 3.0]]),
    "float32": np.array([[1, 2, 4], [0, 3, 3]], np.float32),
    "bool": np.array([[True, False, True], [False, True, True]]),
    "list_of_floats": [[1.0, 2.0, 4.0], [0.0, 3.0, 3.0]],
}


@pytest.mark.parametrize("kind", list(TOKEN_INPUTS))
@pytest.mark.parametrize("lead", [False, True], ids=["embedding", "dropout_embedding"])
def test_runtime_takes_the_token_ids_its_model_takes(kind, lead, tmp_path):
    """Token ids of every dtype, in range and not, as the model and Runtime take them: ids in
    [0, vocab) of any integer dtype run and agree; a negative or out-of-range id (which
    onnxruntime's Gather wraps or reads past) and float or boolean ids (which it would
    truncate) are refused in the model's words."""
    first = [Dropout(0.1)] if lead else []
    model = Sequential(*first, Embedding(5, 3, rng=0), GRU(3, 4, rng=0), LastStep())
    runtime = rx.Runtime(rx.export(model, tmp_path / "m.onnx"))
    x = TOKEN_INPUTS[kind]
    ours = _outcome(lambda: model.forward(x, lengths=np.array([3, 2])))
    theirs = _outcome(lambda: runtime.forward(x, lengths=np.array([3, 2])))
    assert theirs[0] == ours[0], f"rnnlab: {ours}; Runtime: {theirs}"
    assert ours[0] == ("ok" if kind in ("int64", "int32", "uint8", "list") else "refused")
    if ours[0] == "refused":
        assert theirs[1] == ours[1]
        assert theirs[1].startswith("`x` must be")
    else:
        assert_close(ours[1], theirs[1], f"output for {kind} ids")


@pytest.mark.parametrize(
    "make,x",
    [
        (lambda: Sequential(Embedding(5, 3, dtype=np.float64, rng=0), GRU(3, 2, rng=0)),
         np.array([[1, 2, 3]])),
        (lambda: Sequential(GRU(3, 4, rng=0), Linear(4, 4, dtype=np.float64, rng=0),
                            GRU(4, 2, rng=0)), np.zeros((1, 3, 3), np.float32)),
    ],
    ids=["float64_embedding", "float64_linear_between"],
)  # fmt: skip
def test_runtime_refuses_what_a_model_of_mixed_dtypes_refuses(make, x, tmp_path):
    """A layer further in that is given another dtype than its own refuses every x in rnnlab;
    Runtime, whose graph is float32 throughout, refused none."""
    model = make()
    runtime = rx.Runtime(rx.export(model, tmp_path / "m.onnx"))
    message = str(pytest.raises(ValueError, model.forward, x).value)
    assert message.startswith("`x` must be of dtype float32 like the layer's parameters")
    assert str(pytest.raises(ValueError, runtime.forward, x).value) == message


def test_runtime_refuses_non_finite_input_that_onnxruntime_would_hide(tmp_path):
    """onnxruntime's GRU and LSTM operators turn a NaN in x into finite outputs (rnnlab's are
    NaN), so Runtime cannot give the model's answer: it refuses a non-finite x (and state)
    in the model's words whatever `check` says, and behind a Dropout, where rnnlab's first
    module does not look. With check=False it went on, and gave numbers."""
    x = np.ones((2, 4, 3), np.float32)
    x[1, 2, 0] = np.nan
    for model in (GRU(3, 2, rng=0), Sequential(Dropout(0.1), LSTM(3, 2, rng=0))):
        path = rx.export(model, tmp_path / "m.onnx")
        runtime = rx.Runtime(path)
        assert np.isnan(model.forward(x, check=False).output).any()
        hidden = runtime.session.run(None, {"x": x, "lengths": np.array([4, 4], np.int32)})[0]
        assert np.isfinite(hidden).all()  # (what the test guards against)
        message = str(pytest.raises(ValueError, GRU(3, 2).forward, x).value)
        assert message.startswith("`x` must be finite")
        for check in (True, False):
            with pytest.raises(ValueError) as e:
                runtime.forward(x, check=check)
            assert str(e.value) == message
    runtime = rx.Runtime(rx.export(GRU(3, 2, rng=0), tmp_path / "s.onnx", state=True))
    h0 = np.full((1, 2, 2), np.nan, np.float32)
    with pytest.raises(ValueError, match="`state` must be finite"):
        runtime.forward(np.ones((2, 4, 3), np.float32), state=h0, check=False)


def test_runtime_of_a_file_without_the_modules_dtypes_takes_any_float(tmp_path):
    """A file exported before rnnlab recorded its modules' dtypes (no "input" in its
    rnnlab.structure) does not say what its model took: every float x is converted, as
    Runtime did then."""
    path = rx.export(GRU(3, 4, rng=0), tmp_path / "m.onnx")
    proto = onnx.load(str(path))
    structure = json.loads(proto.metadata_props[0].value)
    structure.pop("input", None)
    del proto.metadata_props[:]
    onnx.helper.set_model_props(proto, {"rnnlab.structure": json.dumps(structure)})
    onnx.save(proto, str(path))
    x = np.random.default_rng(0).standard_normal((2, 3, 3))
    runtime = rx.Runtime(path)
    assert_close(runtime.forward(x.astype(np.float16)).output,
                 runtime.forward(x.astype(np.float16).astype(np.float32)).output, "float16")
    with pytest.raises(ValueError, match="`x` must be a floating-point array"):
        runtime.forward(x.astype(np.int64))
