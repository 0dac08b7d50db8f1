"""An Embedding folded into the recurrent layer after it (Recurrent.backward's rows_of,
recurrence.Lookup): the layer's W_ih gradient and the embedding's come from the first layer's
pre-activation gradients summed by token id. The gradients must be those of the unfolded
chain (the layer's ∂L/∂x summed by id by Embedding.backward), pass float64 finite
differences, and match PyTorch's on copied weights."""


import numpy as np
import pytest
from helpers import CELLS, make, oracle, random_state

from rnnlab import fast, gradcheck
from rnnlab._checks import NonFiniteError
from rnnlab.fast import parallel
from rnnlab.layers import LSTM
from rnnlab.modules import Dropout, Embedding, Linear, Sequential

V, E, H, B, T = 11, 4, 5, 3, 7
LENGTHS = np.array([7, 2, 5])


def _model(ctor, kw, layers, bi, dtype, rng, batch_first=True):
    emb = Embedding(V, E, dtype=dtype, rng=rng)
    if dtype == np.float64:
        rec = make(ctor, kw, E, H, layers, bi, rng, batch_first=batch_first)
    else:
        rec = ctor(E, H, layers, bidirectional=bi, batch_first=batch_first, dtype=dtype,
                   rng=rng, **kw)  # fmt: skip
    return Sequential(emb, rec, Linear(H * (2 if bi else 1), V, dtype=dtype, rng=rng))


def _unfolded(model, f, d, d_state=None):
    """Every gradient through the modules one by one: the layer's ∂L/∂x, then the
    embedding's sum of it by id (what Sequential did before the fold)."""
    emb, rec, lin = model.modules
    b2 = lin.backward(f.cache[2], d)
    b1 = rec.backward(f.cache[1], b2.input, None if d_state is None else d_state[1])
    b0 = emb.backward(f.cache[0], b1.input)
    grads = {}
    for i, b in enumerate((b0, b1, b2)):
        grads.update({f"{i}.{k}": v for k, v in b.params.items()})
    return grads, b1.state


def _relative(got, want):
    return np.abs(got - want).max() / max(np.abs(want).max(), 1e-300)


@pytest.mark.parametrize("padded", [False, True], ids=["full", "padded"])
@pytest.mark.parametrize("layers,bi", [(1, False), (2, False), (1, True), (2, True)],
                         ids=["uni", "2layers", "bi", "bi_2layers"])  # fmt: skip
@pytest.mark.parametrize("name,ctor,kw", CELLS, ids=[c[0] for c in CELLS])
def test_folded_gradients_equal_the_unfolded_chain(name, ctor, kw, layers, bi, padded,
                                                   engine_path):  # fmt: skip
    rng = np.random.default_rng(3)
    model = _model(ctor, kw, layers, bi, np.float64, rng)
    x = rng.integers(0, V - 2, (B, T))  # the last two ids never seen: their rows get 0
    lengths = LENGTHS if padded else None
    state = [None, random_state(name, layers, 2 if bi else 1, B, H, rng), None]
    d = rng.standard_normal((B, T, V))
    d_state = [None, random_state(name, layers, 2 if bi else 1, B, H, rng), None]
    with parallel.session():
        want, want_state = _unfolded(model, model.forward(x, lengths=lengths, state=state), d,
                                     d_state)  # fmt: skip
        b = model.backward(model.forward(x, lengths=lengths, state=state), d, d_state,
                           input_grad=False)  # fmt: skip
    assert b.params.keys() == want.keys()
    for k in want:
        assert _relative(b.params[k], want[k]) < 1e-12, k
    assert not b.params["0.weight"][V - 2 :].any()
    for got_s, want_s in zip(np.atleast_1d(b.state[1]), np.atleast_1d(want_state), strict=True):
        np.testing.assert_array_equal(got_s, want_s)


@pytest.mark.parametrize("name,ctor,kw", CELLS[::2], ids=[c[0] for c in CELLS[::2]])
def test_folded_float32_within_float32_rounding(name, ctor, kw, engine_path):
    rng = np.random.default_rng(4)
    model = _model(ctor, kw, 2, True, np.float32, rng)
    x = rng.integers(0, V, (B, T))
    d = rng.standard_normal((B, T, V)).astype(np.float32)
    with parallel.session():
        want, _ = _unfolded(model, model.forward(x, lengths=LENGTHS), d)
        got = model.backward(model.forward(x, lengths=LENGTHS), d).params
    for k in want:
        assert got[k].dtype == np.float32
        assert _relative(got[k], want[k]) < 1e-5, k


def test_sequential_folds_the_embedding_into_the_layer(monkeypatch):
    """The embedding's own backward does not run: the layer after it gave its gradient."""
    rng = np.random.default_rng(5)
    model = _model(*CELLS[2][1:], 1, False, np.float64, rng)

    def refused(*args, **kwargs):
        raise AssertionError("Embedding.backward ran: the fold was not taken")

    monkeypatch.setattr(Embedding, "backward", refused)
    x = rng.integers(0, V, (B, T))
    b = model.backward(model.forward(x), rng.standard_normal((B, T, V)))
    assert b.input is None and b.params["0.weight"].shape == (V, E)


def test_no_fold_with_a_module_between(monkeypatch):
    """A Dropout between the Embedding and the layer (or any module) leaves the chain as it
    was: the layer gives ∂L/∂x, the embedding sums it."""
    rng = np.random.default_rng(6)
    emb = Embedding(V, E, dtype=np.float64, rng=rng)
    rec = make(*CELLS[2][1:], E, H, 1, False, rng)
    model = Sequential(emb, Dropout(0.3), rec, Linear(H, V, dtype=np.float64, rng=rng))
    seen = []
    original = type(rec).backward

    def spy(self, *args, **kwargs):
        seen.append(kwargs.get("rows_of"))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(type(rec), "backward", spy)
    x = rng.integers(0, V, (B, T))
    gradcheck(model, x, lengths=LENGTHS, training=True, rng_seed=2).assert_ok()
    assert seen and all(s is None for s in seen)


@pytest.mark.parametrize("bi", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("name,ctor,kw", CELLS, ids=[c[0] for c in CELLS])
def test_folded_gradients_pass_finite_differences(name, ctor, kw, bi, engine_path):
    rng = np.random.default_rng(7)
    model = _model(ctor, kw, 2, bi, np.float64, rng)
    x = rng.integers(0, V, (B, T))
    gradcheck(model, x, lengths=LENGTHS).assert_ok()
    state = [None, random_state(name, 2, 2 if bi else 1, B, H, rng), None]
    gradcheck(model, x, state=state).assert_ok()
    time_major = _model(ctor, kw, 1, bi, np.float64, rng, batch_first=False)
    gradcheck(time_major, x.T.copy(), lengths=LENGTHS).assert_ok()


@pytest.mark.parametrize("k", [2, 3])
@pytest.mark.parametrize("name,ctor,kw", CELLS[::2], ids=[c[0] for c in CELLS[::2]])
def test_rows_of_with_checkpointing(name, ctor, kw, k, engine_path):
    """Gradient checkpointing's segments each sum their steps by id; their sum is the
    whole's, and W_ih's gradient that of the unfolded layer."""
    rng = np.random.default_rng(8)
    table = rng.standard_normal((V, E))
    layer = make(ctor, kw, E, H, 2, True, rng)
    ids = rng.integers(0, V, (B, T))
    d = rng.standard_normal((B, T, 2 * H))
    with parallel.session():
        plain = layer.backward(layer.forward(table[ids], lengths=LENGTHS, checkpoint_every=k),
                               d)  # fmt: skip
        folded = layer.backward(layer.forward(table[ids], lengths=LENGTHS, checkpoint_every=k),
                                d, rows_of=(table, ids))  # fmt: skip
    want = np.zeros_like(table)
    np.add.at(want, ids.reshape(-1), plain.input.reshape(-1, E))
    assert folded.input is None
    assert _relative(folded.table, want) < 1e-12
    for key in plain.params:
        assert _relative(folded.params[key], plain.params[key]) < 1e-12, key


def test_rows_of_without_the_input_gradient():
    """input_grad=False: no table gradient, and W_ih's still from the sums by id."""
    rng = np.random.default_rng(9)
    table = rng.standard_normal((V, E))
    layer = make(*CELLS[2][1:], E, H, 1, False, rng)
    ids = rng.integers(0, V, (B, T))
    d = rng.standard_normal((B, T, H))
    plain = layer.backward(layer.forward(table[ids]), d)
    folded = layer.backward(layer.forward(table[ids]), d, input_grad=False, rows_of=(table, ids))
    assert folded.input is None and folded.table is None
    for key in plain.params:
        assert _relative(folded.params[key], plain.params[key]) < 1e-12, key


@pytest.mark.parametrize("rows_of,match", [
    (lambda t, i: t, r"`rows_of` must be a pair \(table, ids\)"),
    (lambda t, i: (t[:, :2], i), r"`rows_of\[0\] \(table\)` must be a float64 array of 4 col"),
    (lambda t, i: (t.astype(np.float32), i), r"`rows_of\[0\] \(table\)` must be a float64"),
    (lambda t, i: (t, i.T), r"`rows_of\[1\] \(ids\)` must be an array of shape \(3, 7\)"),
    (lambda t, i: (t, i.astype(float)), r"`rows_of\[1\] \(ids\)` must be an array of integers"),
    (lambda t, i: (t, i + V), r"`rows_of\[1\] \(ids\)` must be token ids in \[0, 11\)"),
    # ids that merge two of the forward's (its rows differ under one id)
    (lambda t, i: (t, i // 2), r"`rows_of` must be the table and ids whose rows the "
     r"forward pass read; got an input whose rows differ under one id"),
])  # fmt: skip
def test_rows_of_that_do_not_fit_are_named(rows_of, match):
    rng = np.random.default_rng(10)
    table = rng.standard_normal((V, E))
    layer = make(*CELLS[2][1:], E, H, 1, False, rng)
    ids = rng.integers(0, V, (B, T))
    f = layer.forward(table[ids])
    with pytest.raises(ValueError, match=match):
        layer.backward(f, np.ones((B, T, H)), rows_of=rows_of(table, ids))


class _Logged(type(LSTM(2, 2))):  # a layer of one's own: Recurrent's backward, no rows_of
    def backward(self, f, d_output, d_state=None, *, input_grad=True, retain_tape=False,
                 overwrite_d_output=False):  # fmt: skip
        return super().backward(f, d_output, d_state, input_grad=input_grad,
                                retain_tape=retain_tape, overwrite_d_output=overwrite_d_output)


def test_the_fold_reads_the_forward_s_rows_not_a_table_changed_since(engine_path):
    """Review 77: a table changed in place between the forward and the backward (an update
    between them, a second backward of a retained tape, load_state_dict) was refused as
    `rows_of`, an argument the caller never gave; a table row no id reads, NaN, made W_ih's
    gradient NaN without a word (0 · NaN in Sᵀ table); and a subclass of Recurrent with a
    backward of its own was handed rows_of it does not take. The gradients are the unfolded
    chain's, taken with the table as the forward read it."""
    rng = np.random.default_rng(14)
    model = _model(LSTM, {}, 2, True, np.float64, rng)
    x = rng.integers(0, V - 2, (B, T))
    d = rng.standard_normal((B, T, V))
    table = model.params["0.weight"].copy()
    with parallel.session():
        want, _ = _unfolded(model, model.forward(x), d)
        f = model.forward(x)
        model.params["0.weight"][0] += 1.0  # changed in place after the forward
        model.params["0.weight"][V - 1] = np.nan  # a row no id reads
        b = model.backward(f, d, input_grad=False)
    for k in want:
        assert _relative(b.params[k], want[k]) < 1e-12, k
    # a layer of one's own after the Embedding: the chain as before
    model.params["0.weight"][...] = table
    rec = model.modules[1]
    own = _Logged(rec.cell, E, H, 2, bidirectional=True, dtype=np.float64)
    own.load_state_dict(rec.params)
    mine = Sequential(model.modules[0], own, model.modules[2])
    with parallel.session():
        b = mine.backward(mine.forward(x), d, input_grad=False)
    for k in want:
        if k != "0.weight":
            assert _relative(b.params[k], want[k]) < 1e-12, k


@pytest.mark.skipif(not fast.available(), reason="numba is not installed")
def test_the_sum_by_id_holds_the_ids_the_batch_reads_only(monkeypatch):
    """Review 77: S had a row for each of the table's V ids, and two products of V rows
    replaced two of T·B: a word model (V = 50,000, 16 × 32 tokens) took 20x as long and
    358 MB more. S has a row for each distinct id of the batch (never more than T·B)."""
    rng = np.random.default_rng(15)
    big = 5000
    model = Sequential(Embedding(big, E, dtype=np.float64, rng=rng),
                       LSTM(E, H, dtype=np.float64, rng=rng), Linear(H, 3, dtype=np.float64,
                       rng=rng))  # fmt: skip
    x = rng.integers(0, big, (B, T))
    sizes = []
    real = fast.backward_loop

    def spy(*args, sums=None, ids=None, **kwargs):
        if ids is not None:
            sizes.append(sums.shape[0])
        return real(*args, sums=sums, ids=ids, **kwargs)

    monkeypatch.setattr(fast, "backward_loop", spy)
    d = rng.standard_normal((B, T, 3))
    with parallel.session():
        b = model.backward(model.forward(x), d, input_grad=False)
        want, _ = _unfolded(model, model.forward(x), d)
    assert sizes == [len(np.unique(x))]
    for k in want:
        assert _relative(b.params[k], want[k]) < 1e-12, k


@pytest.mark.skipif(not fast.available(), reason="numba is not installed")
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_a_batch_of_mostly_distinct_ids_is_not_summed_in_blocks_per_thread(dtype, monkeypatch):
    """The BPTT loop sums by id into a float64 block of U rows per thread: for a batch whose
    ids are mostly distinct (a word model's), split over the threads, that held parts × T·B
    float64 rows where the gradients summed take T·B rows (4.2 GB against 268 MB for a
    (128, 128) batch of 8,000 distinct ids, an LSTM at H = 1024, 16 threads). The layer
    then takes ∂L/∂x and sums it by id (the table's gradient still from the layer); a batch
    of few ids keeps the sums in the loop. The gradients are the unfolded chain's either way."""
    from rnnlab import settings

    rng = np.random.default_rng(16)
    Bw, big = 8, 5000
    model = Sequential(Embedding(big, E, dtype=dtype, rng=rng), LSTM(E, H, dtype=dtype, rng=rng),
                       Linear(H, 3, dtype=dtype, rng=rng))  # fmt: skip
    monkeypatch.setattr(fast, "MIN_LOOP_FLOPS", 0)  # two parts even for this small loop
    parts, by_id = [], []
    real_parts, real_loop = fast._loop_parts, fast.backward_loop

    def parts_spy(*args):
        split = real_parts(*args)
        parts.append(len(split))
        return split

    def loop_spy(*args, sums=None, ids=None, **kwargs):
        by_id.append(ids is not None)
        return real_loop(*args, sums=sums, ids=ids, **kwargs)

    monkeypatch.setattr(fast, "_loop_parts", parts_spy)
    monkeypatch.setattr(fast, "backward_loop", loop_spy)
    d = rng.standard_normal((Bw, T, 3)).astype(dtype)
    tol = 1e-12 if dtype == np.float64 else 1e-5
    for x, folded in ((rng.permutation(big)[: Bw * T].reshape(Bw, T), False),
                      (rng.integers(0, 4, (Bw, T)), True)):  # fmt: skip
        with settings.override(num_threads=2), parallel.session():
            want, _ = _unfolded(model, model.forward(x), d)
            parts.clear()
            by_id.clear()
            b = model.backward(model.forward(x), d)
        assert parts and parts == [2] * len(parts) and by_id == [folded], (parts, by_id)
        assert b.input is None and b.params["0.weight"].shape == (big, E)
        for k in want:
            assert _relative(b.params[k], want[k]) < tol, k


def test_a_non_finite_table_gradient_is_named(monkeypatch):
    """A folded layer's ∂L/∂table that overflowed is named as the embedding's gradient, as
    ∂L/∂ its output was before the fold (the trainer reports divergence with it)."""
    rng = np.random.default_rng(11)
    model = _model(*CELLS[2][1:], 1, False, np.float64, rng)
    rec = model.modules[1]
    original = type(rec).backward

    def overflowing(self, *args, **kwargs):
        b = original(self, *args, **kwargs)
        b.table[1, 2] = np.inf
        return b

    monkeypatch.setattr(type(rec), "backward", overflowing)
    x = rng.integers(0, V, (B, T))
    with pytest.raises(NonFiniteError, match=r"module 0's weight \(Embedding\) became NaN or "
                       "inf in backward"):  # fmt: skip
        model.backward(model.forward(x), np.ones((B, T, V)))


torch = oracle("torch")


@pytest.mark.parametrize("bi", [False, True], ids=["uni", "bi"])
def test_the_character_models_gradients_match_torch(bi, engine_path):
    """Embedding, a 2-layer LSTM and a Linear readout (the end-to-end bench's model, small)
    against PyTorch on copied weights, float64: every gradient, the embedding's included."""
    rng = np.random.default_rng(13)
    model = Sequential(Embedding(V, E, dtype=np.float64, rng=rng),
                       LSTM(E, H, 2, bidirectional=bi, dtype=np.float64, rng=rng),
                       Linear(H * (2 if bi else 1), V, dtype=np.float64, rng=rng))  # fmt: skip
    nn = torch.nn
    theirs = nn.ModuleDict({
        "0": nn.Embedding(V, E), "1": nn.LSTM(E, H, 2, batch_first=True, bidirectional=bi),
        "2": nn.Linear(H * (2 if bi else 1), V),
    }).double()  # fmt: skip
    # (the names are PyTorch's: a ModuleDict of the three under the Sequential's indices)
    theirs.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in model.params.items()})
    x = rng.integers(0, V, (B, T))
    d = rng.standard_normal((B, T, V))
    with parallel.session():
        b = model.backward(model.forward(x), d, input_grad=False)
    out, _ = theirs["1"](theirs["0"](torch.from_numpy(x)))
    (theirs["2"](out) * torch.from_numpy(d)).sum().backward()
    named = dict(theirs.named_parameters())
    for k, got in b.params.items():
        want = named[k].grad.numpy()
        assert _relative(got, want) < 1e-10, k


@pytest.mark.parametrize("V, shape", [(104, (128, 32)), (5, (3, 2)), (1, (2, 2)), (300, (0, 3)),
                                      (70_000, (4, 3))])  # fmt: skip
def test_the_groups_by_id_are_np_unique_s(V, shape):
    """Lookup.groups counts by id where the table is short (bincount) and sorts where it is
    long (np.unique): the same distinct ids, first rows and places either way."""
    from rnnlab.recurrence import Lookup

    ids = np.random.default_rng(V).integers(0, V, shape).astype(np.int32)
    got = Lookup(np.zeros((V, 2)), ids).groups
    want = np.unique(ids.reshape(-1), return_index=True, return_inverse=True)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, w.reshape(-1))
