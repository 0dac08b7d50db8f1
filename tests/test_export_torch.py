"""PyTorch both ways. rnnlab.export's PyTorch form (safetensors-torch): the printed code
builds torch's modules, loads the exported file with strict=True, and computes rnnlab's
outputs and final states, projecting LSTMs (proj_size) included, whose h is smaller than c.
And load_state_dict takes torch's own tensors (bfloat16, requiring grad) as they come.

Compared in float64: the snippet's modules are turned to double and given rnnlab's float64
parameters under the exported names, so that a difference is an error, not rounding.
"""


import numpy as np
import pytest
from helpers import oracle

from rnnlab import export, io
from rnnlab.layers import GRU, LSTM, RNN
from rnnlab.modules import Dropout, Embedding, LastStep, Linear, MeanOverTime, Sequential

torch = oracle("torch")
oracle("safetensors")

pytestmark = pytest.mark.filterwarnings("ignore:LSTM with projections:UserWarning")


def _randomise(model, seed):
    rng = np.random.default_rng(seed)
    for v in model.params.values():
        v[...] = 0.5 * rng.standard_normal(v.shape)


def _torch_model(model, tmp_path):
    """The snippet's module after loading the exported (float32) file strictly, then turned
    to float64 with rnnlab's float64 parameters."""
    path = tmp_path / "m.torch.safetensors"
    io.save_safetensors(path, export.torch_state_dict(model), {"format": "pt"})
    namespace: dict = {}
    exec(compile(export.torch_snippet(model, path), "snippet", "exec"), namespace)
    tm = namespace["model"].double()
    prefix = "" if isinstance(model, Sequential) else "0."
    tm.load_state_dict({prefix + k: torch.from_numpy(v) for k, v in model.params.items()},
                       strict=True)  # fmt: skip
    return tm


def _flat(state):
    if state is None:
        return []
    if isinstance(state, (tuple, list)):
        return [a for s in state for a in _flat(s)]
    return [np.asarray(state)]


# (bidirectional, num_layers, batch_first, merge, initial_state)
PROJECTING = [
    (True, 2, True, "concat", "learned"),
    (True, 2, False, "sum", 0.3),
    (False, 2, False, "concat", "learned"),
    (True, 1, True, "sum", "zeros"),
    (False, 1, True, "concat", -0.2),
]


@pytest.mark.parametrize("bi, L, bf, merge, initial", PROJECTING)
@pytest.mark.parametrize("lengths", [None, np.array([5, 2, 3])], ids=["full", "padded"])
def test_projecting_lstm_runs_in_torch_as_in_rnnlab(bi, L, bf, merge, initial, lengths,
                                                    tmp_path):  # fmt: skip
    layer = LSTM(4, 6, L, proj_size=3, bidirectional=bi, batch_first=bf, dtype=np.float64,
                 initial_state=initial, **({"merge": merge} if bi else {}))  # fmt: skip
    _randomise(layer, 1)
    x = np.random.default_rng(2).standard_normal((3, 5, 4) if bf else (5, 3, 4))
    mine = layer.forward(x, **({} if lengths is None else {"lengths": lengths}))
    tm = _torch_model(layer, tmp_path)
    with torch.no_grad():
        y, state = tm(torch.from_numpy(x), None if lengths is None else torch.from_numpy(lengths))
    theirs = tuple(t.numpy() for t in state)  # a lone LSTM's own (h_n, c_n), as torch's
    np.testing.assert_allclose(y.numpy(), mine.output, atol=1e-12)
    for a, b in zip(_flat(mine.state), theirs, strict=True):
        np.testing.assert_allclose(b, a, atol=1e-12)


@pytest.mark.parametrize("readout", [LastStep, MeanOverTime])
def test_projecting_lstm_in_a_sequential(readout, tmp_path):
    layer = LSTM(4, 6, 2, proj_size=3, bidirectional=True, initial_state="learned",
                 dtype=np.float64)  # fmt: skip
    model = Sequential(layer, readout(), Linear(layer.output_features, 2, dtype=np.float64))
    _randomise(model, 3)
    x = np.random.default_rng(4).standard_normal((3, 5, 4))
    lengths = np.array([5, 2, 3])
    tm = _torch_model(model, tmp_path)
    with torch.no_grad():
        y, _ = tm(torch.from_numpy(x), torch.from_numpy(lengths))
    np.testing.assert_allclose(y.numpy(), model.forward(x, lengths=lengths).output, atol=1e-12)


@pytest.mark.parametrize("make", [
    lambda: LSTM(4, 6, 2, bidirectional=True, merge="sum", dtype=np.float64),
    lambda: LSTM(4, 6, bidirectional=True, merge="sum", proj_size=3, initial_state="learned",
                 dtype=np.float64),
    lambda: GRU(4, 6, 2, bidirectional=True, merge="sum", dtype=np.float64),
    lambda: RNN(4, 6, bidirectional=True, merge="sum", initial_state=0.3, dtype=np.float64),
], ids=["lstm", "lstm-proj", "gru", "rnn"])  # fmt: skip
@pytest.mark.parametrize("lengths", [None, np.array([5, 2, 3])], ids=["full", "padded"])
def test_laststep_after_merge_sum_reads_the_final_states_in_torch(make, lengths, tmp_path):
    """After merge 'sum' rnnlab's LastStep reads the last layer's two final states added
    (h_n[-2] + h_n[-1]), which the snippet takes from torch's h_n (refused before)."""
    layer = make()
    model = Sequential(layer, LastStep(), Linear(layer.output_features, 2, dtype=np.float64))
    _randomise(model, 7)
    x = np.random.default_rng(8).standard_normal((3, 5, 4))
    kw = {} if lengths is None else {"lengths": lengths}
    tm = _torch_model(model, tmp_path)
    with torch.no_grad():
        y, _ = tm(torch.from_numpy(x), None if lengths is None else torch.from_numpy(lengths))
    np.testing.assert_allclose(y.numpy(), model.forward(x, **kw).output, atol=1e-12)


def test_laststep_through_a_dropout_reads_by_direction_in_torch_too(tmp_path):
    """As Sequential reads through a Dropout, so does the snippet: the backward half where it
    has read the whole sequence."""
    layer = LSTM(4, 6, bidirectional=True, dtype=np.float64)
    model = Sequential(layer, Dropout(0.2), LastStep(), Linear(12, 2, dtype=np.float64))
    _randomise(model, 5)
    x = np.random.default_rng(6).standard_normal((3, 5, 4))
    lengths = np.array([5, 2, 3])
    tm = _torch_model(model, tmp_path).eval()
    with torch.no_grad():
        y, _ = tm(torch.from_numpy(x), torch.from_numpy(lengths))
    np.testing.assert_allclose(y.numpy(), model.forward(x, lengths=lengths).output, atol=1e-12)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: _beyond(LSTM(3, 4, dtype=np.float64), "weight_hh_l0"),
         r"1e\+39 in weight_hh_l0 at index \(2, 1\)"),
        (lambda: Sequential(GRU(3, 4, dtype=np.float64, initial_state=-1e39)),
         r"-1e\+39 in initial_state of module 0"),
    ],
    ids=["weight", "initial_state"],
)
def test_a_float64_value_float32_cannot_hold_is_refused(make, message, tmp_path):
    """The export is float32: a float64 weight beyond ±3.4e38 became inf in the file (and
    the initial state in the printed code), the torch model giving inf or NaN."""
    for export_part in (export.torch_state_dict, lambda m: export.torch_snippet(m, tmp_path)):
        with pytest.raises(ValueError, match=r"^`model` must be a model whose weights float32 "
                           r"holds \(\|w\| ≤ 3.4e\+38: the PyTorch export is float32\); got "
                           + message + " instead.$"):  # fmt: skip
            export_part(make())


def _beyond(model, key):
    model.params[key][2, 1] = 1e39
    return model


def _documented_export(model, tmp_path):
    """The README's path from Python: torch_state_dict to a file, and torch_snippet's code,
    which loads it with strict=True (float32, as a user runs it)."""
    path = tmp_path / "m.torch.safetensors"
    io.save_safetensors(path, export.torch_state_dict(model), {"format": "pt"})
    namespace: dict = {}
    exec(compile(export.torch_snippet(model, path), "snippet", "exec"), namespace)
    return namespace["model"]


LONE = [("tanh", RNN, {}), ("relu", RNN, {"nonlinearity": "relu"}), ("lstm", LSTM, {}),
        ("gru", GRU, {})]  # fmt: skip


@pytest.mark.parametrize("bi", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("name, ctor, kw", LONE, ids=[c[0] for c in LONE])
def test_a_lone_layer_exports_by_the_documented_path(name, ctor, kw, bi, tmp_path):
    """A layer given alone (no Sequential): its state_dict's keys are 0.<name>, module 0 of
    the printed Model, which loads them strictly and gives rnnlab's outputs and final states
    on a padded batch."""
    layer = ctor(3, 5, 2, bidirectional=bi, **kw)
    _randomise(layer, 7)
    tm = _documented_export(layer, tmp_path)
    assert sorted(export.torch_state_dict(layer)) == sorted("0." + k for k in layer.params)
    x = np.random.default_rng(8).standard_normal((3, 6, 3)).astype(np.float32)
    lengths = np.array([6, 2, 4])
    mine = layer.forward(x, lengths=lengths)
    with torch.no_grad():
        y, states = tm(torch.from_numpy(x), torch.from_numpy(lengths))
    np.testing.assert_allclose(y.numpy(), mine.output, atol=1e-5)
    theirs = states if isinstance(states, tuple) else (states,)  # torch's h_n or (h_n, c_n)
    for a, b in zip(_flat(mine.state), theirs, strict=True):
        np.testing.assert_allclose(b.numpy(), a, atol=1e-5)
    # and, as the README says, a plain torch module loads the layer's own params
    cls = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}.get(name, torch.nn.RNN)
    plain = cls(3, 5, 2, batch_first=True, bidirectional=bi, **kw)
    plain.load_state_dict({k: torch.from_numpy(v) for k, v in layer.params.items()}, strict=True)
    with torch.no_grad():
        y, _ = plain(torch.from_numpy(x))
    np.testing.assert_allclose(y.numpy(), layer.forward(x).output, atol=1e-5)


@pytest.mark.parametrize("bi", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("name, ctor, kw", LONE, ids=[c[0] for c in LONE])
def test_a_lone_layer_takes_and_gives_its_state_as_torch_does(name, ctor, kw, bi, tmp_path):
    """The printed code of a layer given alone took its state as a one-entry list, so a
    PyTorch user's h0 (or (h0, c0)) was read as [h0[0]] (or h0 alone); it takes and gives the
    state as torch.nn.RNN/LSTM/GRU do, and carries it as rnnlab's layer does."""
    layer = ctor(3, 5, 2, bidirectional=bi, **kw)
    _randomise(layer, 11)
    tm = _documented_export(layer, tmp_path)
    rng = np.random.default_rng(12)
    x = rng.standard_normal((3, 6, 3)).astype(np.float32)
    lengths = np.array([6, 2, 4])
    D = 2 if bi else 1
    h0 = rng.standard_normal((2 * D, 3, 5)).astype(np.float32)
    c0 = rng.standard_normal((2 * D, 3, 5)).astype(np.float32)
    given = (h0, c0) if name == "lstm" else h0
    mine = layer.forward(x, lengths=lengths, state=given)
    torch_given = tuple(map(torch.from_numpy, given)) if name == "lstm" else torch.from_numpy(h0)
    with torch.no_grad():
        y, state = tm(torch.from_numpy(x), torch.from_numpy(lengths), state=torch_given)
    np.testing.assert_allclose(y.numpy(), mine.output, atol=1e-5)
    if name == "lstm":
        assert isinstance(state, tuple) and len(state) == 2
        theirs = [s.numpy() for s in state]
    else:
        assert isinstance(state, torch.Tensor)
        theirs = [state.numpy()]
    for a, b in zip(_flat(mine.state), theirs, strict=True):
        np.testing.assert_allclose(b, a, atol=1e-5)
    with torch.no_grad():  # and the state it gives carries on, as a PyTorch loop feeds it
        y2, _ = tm(torch.from_numpy(x), state=state)
    np.testing.assert_allclose(y2.numpy(), layer.forward(x, state=mine.state).output, atol=1e-5)


@pytest.mark.parametrize("make", [lambda: Embedding(6, 3), lambda: Linear(3, 2),
                                  lambda: Linear(3, 2, bias=False), lambda: Dropout(0.3),
                                  lambda: LastStep(), lambda: MeanOverTime()],
                         ids=["embedding", "linear", "linear_no_bias", "dropout", "last_step",
                              "mean"])  # fmt: skip
def test_every_lone_module_loads_its_keys(make, tmp_path):
    module = make()
    _randomise(module, 9)
    tm = _documented_export(module, tmp_path).eval()
    rng = np.random.default_rng(10)
    x = (rng.integers(0, 6, (3, 4)) if isinstance(module, Embedding)
         else rng.standard_normal((3, 4, 3)).astype(np.float32))  # fmt: skip
    lengths = np.array([4, 1, 3])
    with torch.no_grad():
        y, _ = tm(torch.from_numpy(x), torch.from_numpy(lengths))
    np.testing.assert_allclose(y.numpy(), module.forward(x, lengths=lengths).output, atol=1e-6)


def test_load_state_dict_takes_torch_tensors_as_they_come():
    """A state_dict of bfloat16 tensors (NumPy has no such type: via float32, exactly) and
    named_parameters() (tensors requiring grad, which NumPy cannot take) load."""
    t = torch.nn.GRU(3, 4, batch_first=True)
    layer = GRU(3, 4)
    layer.load_state_dict(dict(t.named_parameters()))
    for k, v in t.state_dict().items():
        assert np.array_equal(layer.params[k], v.numpy()), k
    half = {k: v.to(torch.bfloat16) for k, v in t.state_dict().items()}
    layer.load_state_dict(half)
    for k, v in half.items():
        assert np.array_equal(layer.params[k], v.float().numpy()), k


def test_load_state_dict_names_the_key_of_a_ragged_list():
    layer = GRU(2, 2)
    before = {k: v.copy() for k, v in layer.params.items()}
    state = {**layer.params, "weight_ih_l0": [[1.0, 2.0], [3.0]]}
    with pytest.raises(ValueError, match=r"^`state\['weight_ih_l0'\]` must be an array of real "
                       r"numbers .*; got a list of length 2 instead"):  # fmt: skip
        layer.load_state_dict(state)
    for k, v in layer.params.items():
        assert np.array_equal(v, before[k]), k


def test_the_snippet_gives_dropout_only_to_a_stack_where_it_acts(tmp_path):
    """rnnlab's recurrent dropout= acts between layers, as PyTorch's: the snippet wrote it for
    one layer too, and PyTorch warned at every import of the exported model (an error here)."""
    one = Sequential(LSTM(4, 6, dropout=0.2, dtype=np.float64), Linear(6, 2, dtype=np.float64))
    _torch_model(one, tmp_path)
    assert "dropout=" not in export.torch_snippet(one, tmp_path / "m.torch.safetensors")
    two = Sequential(LSTM(4, 6, 2, dropout=0.2, dtype=np.float64))
    assert "dropout=0.2)" in export.torch_snippet(two, tmp_path / "m.torch.safetensors")
