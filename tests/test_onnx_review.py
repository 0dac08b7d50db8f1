"""ONNX export as a deployment meets it (review 129): every model kind the docs list, each
file run by onnxruntime at several batch sizes and lengths (its dynamic axes) against
rnnlab's forward; what the export refuses rather than write a graph computing something
else; what a file says of its inputs to a reader without rnnlab; the path it is written to.

onnx and onnxruntime are in the test extra; locally skipped without them, as test_onnx.
"""

import itertools

import numpy as np
import pytest
from helpers import Residual, Softmaxed, TanhLinear, oracle

from rnnlab.cells import GRUCell
from rnnlab.layers import GRU, LSTM, RNN, Forward
from rnnlab.modules import Dropout, Embedding, LastStep, Linear, MeanOverTime, Sequential

onnx = oracle("onnx")
onnxruntime = oracle("onnxruntime")

import rnnlab.onnx as rx  # noqa: E402

# The graph is float32 whatever the model's dtype (onnxruntime 1.32's RNN, LSTM and GRU have
# no float64 kernel), so a float64 model agrees to float32's rounding too.
ATOL = 2e-6

CELLS = {
    "tanh": (RNN, {}),
    "relu": (RNN, {"nonlinearity": "relu"}),
    "lstm": (LSTM, {}),
    "peephole": (LSTM, {"peephole": True}),
    "coupled": (LSTM, {"coupled": True, "peephole": True}),
    "gru": (GRU, {}),
    "gru_orig": (GRU, {"reset_after": False}),
}
MERGES = (None, "concat", "sum", "readout")  # None: unidirectional
STARTS = ("zeros", 0.4, "learned")


def randomise(model, rng, scale=0.5):
    for v in model.params.values():
        v[...] = rng.uniform(-scale, scale, v.shape)
    return model


def states(s):
    """A layer's state as a tuple of arrays (h,) or (h, c)."""
    return s if isinstance(s, tuple) else (s,)


def session_run(path, feeds):
    """The file run by onnxruntime itself, as a deployment runs it (no rnnlab in between)."""
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, feeds), strict=True))


def checked(path):
    """The written file, through onnx.checker's full check and strict shape inference."""
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True)
    return proto


@pytest.mark.parametrize("batch_first", [True, False], ids=["batch_first", "time_major"])
@pytest.mark.parametrize("merge", MERGES, ids=[m or "uni" for m in MERGES])
@pytest.mark.parametrize("cell", list(CELLS))
def test_one_file_runs_every_batch_and_length_as_the_layer(cell, merge, batch_first, tmp_path):
    """A two-layer layer of each cell, merge and layout, exported once with state inputs and
    once without, each file run by onnxruntime directly at three batch sizes and lengths:
    outputs and final states as rnnlab's forward, the state given and the model's own."""
    ctor, kw = CELLS[cell]
    i = list(CELLS).index(cell) + MERGES.index(merge) + batch_first
    dtype = (np.float32, np.float64)[i % 2]
    start = STARTS[i % 3]
    rng = np.random.default_rng([129, i])
    kw = dict(kw, batch_first=batch_first, bidirectional=merge is not None, dtype=dtype,
              initial_state=start, rng=rng)  # fmt: skip
    if merge is not None:
        kw["merge"] = merge
    if merge == "readout":
        kw["output_size"] = 3
    layer = randomise(ctor(3, 4, 2, **kw), rng)
    n = 2 * (2 if merge else 1)
    with_state = rx.export(layer, tmp_path / "state.onnx", state=True)
    without = rx.export(layer, tmp_path / "plain.onnx")
    for path in (with_state, without):
        checked(path)
    runs = 0
    for B, T in ((1, 1), (4, 7), (2, 3)):
        x = rng.standard_normal((B, T, 3) if batch_first else (T, B, 3)).astype(dtype)
        lengths = rng.integers(1, T + 1, B)
        feeds = {"x": x.astype(np.float32), "lengths": lengths.astype(np.int32)}
        given = tuple(rng.standard_normal((n, B, 4)).astype(dtype)
                      for _ in range(2 if layer.cell.has_c else 1))  # fmt: skip
        for path, state in ((without, None), (with_state, given)):
            ours = layer.forward(x, lengths=lengths,
                                 state=None if state is None else
                                 (state if len(state) == 2 else state[0]))  # fmt: skip
            theirs = session_run(path, {**feeds, **({} if state is None else
                                 dict(zip(("h0", "c0"), (s.astype(np.float32) for s in state),
                                          strict=False)))})  # fmt: skip
            np.testing.assert_allclose(theirs["y"], ours.output, atol=ATOL, rtol=0)
            for name, a in zip(("h_n", "c_n"), states(ours.state), strict=False):
                np.testing.assert_allclose(theirs[name], a, atol=ATOL, rtol=0)
            runs += 1
        # the model's own start, fed by Runtime from the file's metadata
        own = rx.Runtime(with_state).forward(x, lengths=lengths)
        np.testing.assert_allclose(own.output, layer.forward(x, lengths=lengths).output,
                                   atol=ATOL, rtol=0)  # fmt: skip
    assert runs == 6


def sequential_models(rng):
    return {
        "tokens_last": Sequential(Embedding(11, 4, rng=rng), LSTM(4, 5, 2, rng=rng,
                                  initial_state="learned"), LastStep(), Linear(5, 3, rng=rng)),
        "tokens_time_major": Sequential(Embedding(11, 4, rng=rng), Dropout(0.2),
                                        GRU(4, 5, batch_first=False, rng=rng),
                                        Linear(5, 3, rng=rng)),
        "bi_concat_last": Sequential(GRU(3, 4, 2, bidirectional=True, rng=rng), Dropout(0.1),
                                     LastStep(), Linear(8, 2, rng=rng)),
        "bi_sum_last": Sequential(LSTM(3, 4, 2, bidirectional=True, merge="sum",
                                       initial_state=0.3, rng=rng), LastStep()),
        "readout_mean": Sequential(RNN(3, 4, bidirectional=True, merge="readout",
                                       output_size=3, nonlinearity="relu", rng=rng),
                                   MeanOverTime(), Linear(3, 2, rng=rng)),
        "two_layers": Sequential(Linear(3, 4, rng=rng), LSTM(4, 4, coupled=True, rng=rng),
                                 GRU(4, 5, bidirectional=True, reset_after=False,
                                     initial_state="learned", rng=rng), MeanOverTime()),
        "float64": Sequential(Embedding(11, 4, dtype=np.float64, rng=rng),
                              LSTM(4, 5, peephole=True, dtype=np.float64, rng=rng),
                              LastStep(), Linear(5, 3, dtype=np.float64, rng=rng)),
    }  # fmt: skip


@pytest.mark.parametrize("state", [False, True], ids=["own_state", "state_inputs"])
@pytest.mark.parametrize("which", list(sequential_models(np.random.default_rng(0))))
def test_sequential_models_at_every_batch_and_length(which, state, tmp_path):
    """Models with an Embedding or a Linear before and readouts after, exported once and run
    by Runtime (the model's own start fed from the metadata) at three batch sizes and
    lengths: the output and every final state as the model's."""
    rng = np.random.default_rng(7)
    model = randomise(sequential_models(rng)[which], rng)
    path = rx.export(model, tmp_path / "m.onnx", state=state)
    checked(path)
    runtime = rx.Runtime(path)
    first = model.modules[0]
    time_major = any(getattr(m, "batch_first", True) is False for m in model.modules)
    for B, T in ((1, 1), (5, 6), (3, 2)):
        shape = (T, B) if time_major else (B, T)
        x = (rng.integers(0, 11, shape) if isinstance(first, Embedding) else
             rng.standard_normal((*shape, 3)).astype(np.float32))  # fmt: skip
        lengths = rng.integers(1, T + 1, B)
        ours, theirs = model.forward(x, lengths=lengths), runtime.forward(x, lengths=lengths)
        np.testing.assert_allclose(theirs.output, ours.output, atol=ATOL, rtol=0)
        for a, b in zip(ours.state, theirs.state, strict=True):
            assert (a is None) == (b is None)
            for u, v in zip(states(a) if a is not None else (), states(b) if b is not None
                            else (), strict=True):  # fmt: skip
                np.testing.assert_allclose(v, u, atol=ATOL, rtol=0)


@pytest.mark.parametrize("cell", [c for c in CELLS if c != "relu"])
def test_onnx_s_reference_evaluator_computes_the_same_graph(cell, tmp_path):
    """A second reading of the graph than onnxruntime's: onnx's own reference evaluator
    (without `lengths`, whose sequence_lens it ignores, and without ReLU, which it does not
    know) gives rnnlab's outputs, so the gate orders and the coupled LSTM's negated input
    gate mean what the operators' specification says, not only what onnxruntime does."""
    from onnx.reference import ReferenceEvaluator

    ctor, kw = CELLS[cell]
    rng = np.random.default_rng(11)
    layer = randomise(ctor(3, 4, 2, bidirectional=True, initial_state="learned", rng=rng,
                           **kw), rng)  # fmt: skip
    path = rx.export(layer, tmp_path / "m.onnx", lengths=False)
    x = rng.standard_normal((2, 5, 3)).astype(np.float32)
    y, *finals = ReferenceEvaluator(str(path)).run(None, {"x": x})
    ours = layer.forward(x)
    np.testing.assert_allclose(y, ours.output, atol=ATOL, rtol=0)
    for a, b in zip(states(ours.state), finals, strict=True):
        np.testing.assert_allclose(b, a, atol=ATOL, rtol=0)


@pytest.mark.parametrize("opset", range(17, onnx.defs.onnx_opset_version() + 1))
def test_every_opset_offered_runs(opset, tmp_path):
    """Every opset `export` takes (17 to the newest the installed onnx knows) gives a file
    onnxruntime runs as the model, the readouts' operators in their opset's form."""
    rng = np.random.default_rng(opset)
    model = randomise(Sequential(GRU(3, 4, 2, bidirectional=True, rng=rng), LastStep(),
                                 Linear(8, 2, rng=rng)), rng)  # fmt: skip
    mean = randomise(Sequential(LSTM(3, 4, bidirectional=True, merge="readout", output_size=2,
                                     rng=rng), MeanOverTime()), rng)  # fmt: skip
    x = rng.standard_normal((3, 5, 3)).astype(np.float32)
    lengths = np.array([5, 2, 4])
    for m, lens in itertools.product((model, mean), (True, False)):
        path = rx.export(m, tmp_path / "m.onnx", opset=opset, lengths=lens)
        assert checked(path).opset_import[0].version == opset
        kw = {"lengths": lengths} if lens else {}
        np.testing.assert_allclose(rx.Runtime(path).forward(x, **kw).output,
                                   m.forward(x, **kw).output, atol=ATOL, rtol=0)  # fmt: skip


# ---------------------------------------------------------------------- modules of one's own
# (Residual, TanhLinear and Softmaxed: tests/helpers.py, which the other exporters' tests share)
class ScaledEmbedding(Embedding):
    def forward(self, x, **options):
        f = super().forward(x, **options)
        return Forward(f.output * 2.0, None, f.cache)


class Noise(Dropout):
    """A Dropout that adds a constant at inference too."""

    def forward(self, x, **options):
        return Forward(np.asarray(x) + 1.0, None, None)


class FirstStep(LastStep):
    def forward(self, x, **options):
        return Forward(np.asarray(x)[:, 0], None, None)



OWN = [
    ("residual", lambda: Residual(GRUCell(), 3, 3, rng=0), "module 0", "Residual", "Recurrent"),
    ("linear", lambda: Sequential(GRU(3, 4, rng=0), TanhLinear(4, 3, rng=0)), "module 1",
     "TanhLinear", "Linear"),
    ("embedding", lambda: Sequential(ScaledEmbedding(5, 3, rng=0), GRU(3, 3, rng=0)),
     "module 0", "ScaledEmbedding", "Embedding"),
    ("dropout", lambda: Sequential(GRU(3, 3, rng=0), Noise(0.1)), "module 1", "Noise",
     "Dropout"),
    ("laststep", lambda: Sequential(GRU(3, 3, rng=0), FirstStep()), "module 1", "FirstStep",
     "LastStep"),
    ("sequential", lambda: Softmaxed(GRU(3, 4, rng=0), Linear(4, 3, rng=0)), None, "Softmaxed",
     "Sequential"),
]  # fmt: skip


@pytest.mark.parametrize("name,make,where,kind,base", OWN, ids=[o[0] for o in OWN])
def test_a_module_of_one_s_own_is_refused(name, make, where, kind, base, tmp_path):
    """A subclass of one of rnnlab's modules (or of Sequential) whose forward computes
    otherwise was exported as its base: a file that loads and runs and gives the base's
    numbers (a residual GRU 2.3 off, a tanh after the Linear 0.19). Refused, naming the
    module and its class, as a cell of one's own is; the old file stays."""
    model = make()
    rng = np.random.default_rng(3)
    first = model.modules[0] if isinstance(model, Sequential) else model
    x = (rng.integers(0, 5, (2, 4)) if isinstance(first, Embedding) else
         rng.standard_normal((2, 4, 3)).astype(np.float32))  # fmt: skip
    model.forward(x)  # (rnnlab runs it)
    path = tmp_path / "m.onnx"
    path.write_bytes(b"the old file")
    at = "model" if where is None else rf"model \({where}\)"
    an = "an" if base[0] in "AEIOU" else "a"
    with pytest.raises(ValueError, match=rf"^`{at}` must be one of rnnlab's own modules \({an} "
                       rf"{base}, not a subclass\); got a {kind}, a subclass of {base} of "
                       r"one's own instead\. Its forward may compute"):  # fmt: skip
        rx.export(model, path)
    with pytest.raises(ValueError, match=rf"a subclass of {base}"):
        rx.check_exportable(model)  # (rnnlab export's refusal before the file's name)
    assert path.read_bytes() == b"the old file"
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]


# ---------------------------------------------------------------------- what a file says
def _docs(proto):
    return {v.name: v.doc_string for v in [*proto.graph.input, *proto.graph.output]}


def test_every_input_and_output_says_its_layout_and_meaning(tmp_path):
    """A deployment reads the file, not rnnlab's docs: each input and output carries a
    doc_string (Netron shows it) with its dtype, its axes in order, and what it holds; a
    state input says the model's own start, which a caller must feed to compute as the model
    does. The graph's inputs had names and shapes only."""
    rng = np.random.default_rng(0)
    model = Sequential(Embedding(9, 3, rng=rng),
                       LSTM(3, 4, 2, bidirectional=True, initial_state="learned", rng=rng),
                       GRU(8, 5, initial_state=0.5, rng=rng), LastStep(), Linear(5, 2, rng=rng))
    docs = _docs(checked(rx.export(model, tmp_path / "m.onnx", state=True)))
    rows = "its rows layer by layer, forward then reverse in each"
    assert docs == {
        "x": "int64 (batch, time): token ids, each in [0, 9) (batch-first)",
        "lengths": rx.LENGTHS_DOC,
        "h0_1": f"float32 (4, batch, 4): the initial hidden state of module 1, {rows}; the "
                "model's own is learned, its values in the metadata 'rnnlab.structure'",
        "c0_1": f"float32 (4, batch, 4): the initial cell state of module 1, {rows}; the "
                "model's own is learned, its values in the metadata 'rnnlab.structure'",
        "h0_2": "float32 (1, batch, 5): the initial hidden state of module 2, its rows layer by "
                "layer; the model's own is the constant 0.5",
        "y": "float32 (batch, 2): the model's output (one row per sequence)",
        "h_n_1": "float32 (4, batch, 4): the final hidden state of module 1, each sequence's "
                 "after its last valid step (the reverse direction's after step 0), "
                 f"{rows}; feed it back as h0_1 to go on",
        "c_n_1": "float32 (4, batch, 4): the final cell state of module 1, each sequence's "
                 "after its last valid step (the reverse direction's after step 0), "
                 f"{rows}; feed it back as c0_1 to go on",
        "h_n_2": "float32 (1, batch, 5): the final hidden state of module 2, each sequence's "
                 "after its last valid step, its rows layer by layer; feed it back as h0_2 to "
                 "go on",
    }  # fmt: skip
    assert "int32 (batch,): each sequence's valid steps, from 1 to time" in rx.LENGTHS_DOC
    layer = GRU(3, 4, batch_first=False, rng=0)
    docs = _docs(checked(rx.export(layer, tmp_path / "t.onnx", lengths=False)))
    assert docs == {
        "x": "float32 (time, batch, 3): the model's input (time-major)",
        "y": "float32 (time, batch, 4): the model's output at every step (time-major)",
        "h_n": "float32 (1, batch, 4): the final hidden state, each sequence's after its last "
               "valid step, its rows layer by layer",
    }  # fmt: skip
    docs = _docs(rx.build_model(GRU(3, 4, rng=0), state=True))
    assert docs["h0"].endswith("the model's own is zeros")


# ---------------------------------------------------------------------- Runtime's float32
def test_runtime_refuses_values_float32_cannot_hold(tmp_path):
    """A float64 model's file takes float64 x and states, and the graph computes in float32:
    a value past ±3.4e38 became inf in the cast (NumPy's overflow warning, an error under
    pytest) and the graph gave inf where the model's outputs are finite. Refused, naming
    the argument and the place."""
    layer = GRU(3, 4, dtype=np.float64, rng=0)
    runtime = rx.Runtime(rx.export(layer, tmp_path / "m.onnx", state=True))
    x = np.random.default_rng(0).standard_normal((2, 5, 3))
    h0 = np.zeros((1, 2, 4))
    np.testing.assert_allclose(runtime.forward(x, state=h0).output,
                               layer.forward(x, state=h0).output, atol=ATOL)  # fmt: skip
    big = x.copy()
    big[1, 3, 2] = -1e39
    layer.forward(big)  # (the model takes it)
    with pytest.raises(ValueError, match=r"^`x` must be values float32 holds \(\|v\| ≤ "
                       r"3\.4e\+38: the exported graph computes in float32\); got -1e\+39 at "
                       r"index \(1, 3, 2\) instead\.$"):  # fmt: skip
        runtime.forward(big)
    h0[0, 1, 0] = 4e38
    assert np.isfinite(layer.forward(x, state=h0).output).all()
    with pytest.raises(ValueError, match=r"^`state` must be values float32 holds .* got 4e\+38 "
                       r"at index \(0, 1, 0\) instead\.$"):  # fmt: skip
        runtime.forward(x, state=h0)
    lstm = LSTM(3, 4, dtype=np.float64, rng=0)
    runtime = rx.Runtime(rx.export(lstm, tmp_path / "l.onnx", state=True))
    with pytest.raises(ValueError, match=r"^`state\[1\] \(c0\)` must be values float32 holds"):
        runtime.forward(x, state=(np.zeros((1, 2, 4)), h0))


# ---------------------------------------------------------------------- the file written
def test_a_path_in_no_folder_is_refused_naming_it(tmp_path):
    """`rnnlab export --out` said so; rnnlab.onnx.export said "[Errno 2] cannot write '...'
    (No such file or directory)", an OSError about the file it was to create."""
    (tmp_path / "a_file").write_bytes(b"")
    for path, why in ((tmp_path / "missing" / "m.onnx", "does not exist"),
                      (tmp_path / "a_file" / "m.onnx", "is not a folder")):  # fmt: skip
        with pytest.raises(ValueError, match=rf"^`path` must be a file path in an existing "
                           rf"folder; got '.*m\.onnx', whose folder '.*' {why} instead\.$"):
            rx.export(GRU(3, 4, rng=0), path)
    assert [p.name for p in tmp_path.iterdir()] == ["a_file"]


# ---------------------------------------------------------------------- the file's size
def test_a_model_past_protobuf_s_limit_is_refused(monkeypatch, tmp_path):
    """A graph's weights are inside its protobuf, whose largest message is 2 GiB: a model of
    2.1 GiB failed in protobuf's words ("EncodeError: Failed to serialize proto") after
    copying its weights twice (checked by hand: an Embedding(540000, 1024)). Refused, with
    the sizes, before the copies where the model's own weights are too many, and after them
    where ONNX's are (a coupled LSTM's three gate blocks are four). Here under a lowered
    limit, so that the test does not need the gigabytes."""
    layer = LSTM(3, 4, coupled=True, rng=0)  # 108 weights; 144 in the graph, and a constant
    assert sum(v.size for v in layer.params.values()) == 108
    in_graph = sum(len(t.raw_data) for t in rx.build_model(layer).graph.initializer)
    assert 4 * 144 <= in_graph < 600
    path = tmp_path / "m.onnx"
    for limit, size in ((rx._GRAPH_MARGIN + 400, "432 bytes"),
                        (rx._GRAPH_MARGIN + 500, f"{in_graph} bytes")):  # fmt: skip
        monkeypatch.setattr(rx, "PROTOBUF_LIMIT", limit)
        with pytest.raises(ValueError, match=rf"^`model` must be a model whose float32 weights "
                           rf"fit in one ONNX file \(under .*, protobuf's limit; rnnlab writes "
                           rf"no external data\); got {size} of weights instead\.$"):
            rx.export(layer, path)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(rx, "PROTOBUF_LIMIT", rx._GRAPH_MARGIN + 600)
    checked(rx.export(layer, path))


def test_a_list_of_no_states_is_no_state_for_a_graph_without_state_inputs(tmp_path):
    """A Sequential takes state=[None, None] as no state; Runtime refused it for a file
    exported without state inputs ("None for a graph exported without state=True"), which a
    caller passing the model's own form of "no state" could not tell from a state given."""
    model = Sequential(GRU(3, 4, batch_first=True, rng=0), Linear(4, 2, rng=0))
    path = rx.export(model, tmp_path / "m.onnx", state=False)
    runtime = rx.Runtime(path)
    x = np.random.default_rng(0).standard_normal((2, 5, 3)).astype(np.float32)
    np.testing.assert_allclose(runtime.forward(x, state=[None, None]).output,
                               model.forward(x, state=[None, None]).output, atol=ATOL, rtol=0)
    h = np.zeros((1, 2, 4), np.float32)
    with pytest.raises(ValueError, match=r"^`state` must be None for a graph exported without "
                       r"state=True"):  # (a state given is still refused, not ignored)
        runtime.forward(x, state=[h, None])
