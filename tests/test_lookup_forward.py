"""The forward half of the Embedding's fold (Recurrent.forward's rows_of,
recurrence.reads_lookup): where a batch holds few distinct token ids the first layer projects
only their rows, X_U W_ihᵀ, and the compiled loop reads each step's row by id. Its outputs,
final states and (through the backward that follows) gradients must be those of the plain
forward pass, which projects every row."""

import numpy as np
import pytest
from helpers import CELLS, make, random_state

from rnnlab import fast, gradcheck, recurrence
from rnnlab.fast import parallel
from rnnlab.layers import LSTM, Recurrent
from rnnlab.modules import Embedding, Linear, Sequential

V, E, H, B, T = 11, 4, 5, 3, 9
LENGTHS = np.array([9, 2, 5])

compiled = pytest.mark.skipif(not fast.available(), reason="numba is not installed")


@pytest.fixture
def lookups(monkeypatch):
    """The ids each compiled forward loop was given (None: it projected every row)."""
    seen = []
    original = fast.forward_loop

    def spy(*args, **kwargs):
        seen.append(kwargs.get("ids"))
        return original(*args, **kwargs)

    monkeypatch.setattr(fast, "forward_loop", spy)
    return seen


def _relative(got, want):
    return np.abs(got - want).max() / max(np.abs(want).max(), 1e-300)


def _states(final):
    return final if isinstance(final, tuple) else (final,)


def _ids(rng, shape=(B, T)):
    """Token ids with few distinct values (U ≤ 6 of T·B = 27 rows): the lookup's case."""
    return rng.integers(0, 6, shape)


@compiled
@pytest.mark.parametrize("grad", [True, False], ids=["training", "inference"])
@pytest.mark.parametrize("padded", [False, True], ids=["full", "padded"])
@pytest.mark.parametrize("layers,bi", [(1, False), (2, True)], ids=["uni", "bi_2layers"])
@pytest.mark.parametrize("name,ctor,kw", CELLS, ids=[c[0] for c in CELLS])
def test_the_lookup_gives_the_plain_forward_s_outputs(name, ctor, kw, layers, bi, padded, grad,
                                                      lookups):  # fmt: skip
    rng = np.random.default_rng(1)
    table = rng.standard_normal((V, E))
    layer = make(ctor, kw, E, H, layers, bi, rng)
    ids = _ids(rng)
    state = random_state(name, layers, 2 if bi else 1, B, H, rng)
    lengths = LENGTHS if padded else None
    with parallel.session():
        want = layer.forward(table[ids], lengths=lengths, state=state, grad=grad)
        assert all(i is None for i in lookups)
        got = layer.forward(table[ids], lengths=lengths, state=state, grad=grad,
                            rows_of=(table, ids))  # fmt: skip
    # the first layer's directions read by id; a second layer's input is no Embedding's
    by_id = [i for i in lookups if i is not None]
    assert len(by_id) == (2 if bi else 1)
    assert _relative(got.output, want.output) < 1e-12
    for g, w in zip(_states(got.state), _states(want.state), strict=True):
        assert _relative(g, w) < 1e-12


@compiled
@pytest.mark.parametrize("batch_first", [True, False], ids=["batch_first", "time_major"])
@pytest.mark.parametrize("name,ctor,kw", CELLS[2:], ids=[c[0] for c in CELLS[2:]])
def test_float32_within_float32_rounding(name, ctor, kw, batch_first, lookups):
    rng = np.random.default_rng(2)
    table = rng.standard_normal((V, E)).astype(np.float32)
    layer = ctor(E, H, 2, bidirectional=True, batch_first=batch_first, dtype=np.float32,
                 rng=rng, **kw)  # fmt: skip
    ids = _ids(rng, (B, T) if batch_first else (T, B))
    with parallel.session():
        want = layer.forward(table[ids])
        got = layer.forward(table[ids], rows_of=(table, ids))
    assert any(i is not None for i in lookups)
    assert got.output.dtype == np.float32
    assert _relative(got.output, want.output) < 1e-5


@compiled
@pytest.mark.parametrize("options", [{"proj_size": 3}, {"zoneout": (0.2, 0.1)},
                                     {"recurrent_dropout": 0.3}],
                         ids=["projection", "zoneout", "recurrent_dropout"])  # fmt: skip
def test_the_lookup_around_the_cell(options, lookups):
    """A projection of the carry, zoneout and recurrent dropout take the step's input from
    the lookup as from the projection (the same masks: the same seed)."""
    rng = np.random.default_rng(3)
    table = rng.standard_normal((V, E))
    layer = make(LSTM, options, E, H, 2, True, rng)
    ids = _ids(rng)
    with parallel.session():
        want = layer.forward(table[ids], training=True, rng=5)
        got = layer.forward(table[ids], training=True, rng=5, rows_of=(table, ids))
    assert any(i is not None for i in lookups)
    assert _relative(got.output, want.output) < 1e-12


@compiled
@pytest.mark.parametrize("k", [2, 4])
@pytest.mark.parametrize("name,ctor,kw", CELLS[::2], ids=[c[0] for c in CELLS[::2]])
def test_the_lookup_with_checkpointing(name, ctor, kw, k, lookups):
    """Each segment (and its recomputation in backward) reads its own steps' ids; outputs
    and gradients are the plain forward's."""
    rng = np.random.default_rng(4)
    table = rng.standard_normal((V, E))
    layer = make(ctor, kw, E, H, 2, True, rng)
    ids = rng.integers(0, 3, (B, T))  # ≤ 3 distinct ids in a segment's ≥ 6 rows
    d = rng.standard_normal((B, T, 2 * H))
    with parallel.session():
        f_plain = layer.forward(table[ids], lengths=LENGTHS, checkpoint_every=k)
        plain = layer.backward(f_plain, d, rows_of=(table, ids))
        f = layer.forward(table[ids], lengths=LENGTHS, checkpoint_every=k, rows_of=(table, ids))
        got = layer.backward(f, d, rows_of=(table, ids))
    # the segments read by id, forward and again in backward (a last one-step segment of
    # 3 rows may hold too many distinct ids)
    assert sum(i is not None for i in lookups) >= 3 * 2 * (T // k)
    assert _relative(f.output, f_plain.output) < 1e-12
    assert _relative(got.table, plain.table) < 1e-12
    for key in plain.params:
        assert _relative(got.params[key], plain.params[key]) < 1e-12, key


@compiled
def test_mostly_distinct_rows_are_projected_whole(lookups):
    """Where more than half the rows are distinct the product of every row runs: the
    distinct rows' product would save little, and the loop would read rows from all over."""
    rng = np.random.default_rng(5)
    table = rng.standard_normal((B * T, E))
    layer = make(LSTM, {}, E, H, 1, False, rng)
    ids = rng.permutation(B * T).reshape(B, T)
    with parallel.session():
        layer.forward(table[ids], rows_of=(table, ids))
    assert lookups and all(i is None for i in lookups)
    assert not recurrence.reads_lookup(recurrence.Lookup(table, ids.T), T, B)


def test_the_numpy_path_projects_every_row(lookups):
    from rnnlab import settings

    rng = np.random.default_rng(6)
    table = rng.standard_normal((V, E))
    layer = make(LSTM, {}, E, H, 1, False, rng)
    ids = _ids(rng)
    with settings.override(no_numba=True):
        want = layer.forward(table[ids])
        got = layer.forward(table[ids], rows_of=(table, ids))
    assert not lookups
    np.testing.assert_array_equal(got.output, want.output)


@compiled
@pytest.mark.parametrize("bi", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("name,ctor,kw", CELLS, ids=[c[0] for c in CELLS])
def test_a_sequential_reads_by_id_and_its_gradients_are_the_chain_s(name, ctor, kw, bi,
                                                                     lookups):  # fmt: skip
    """Sequential passes rows_of to the layer after an Embedding in forward as in backward;
    its gradients equal those of the modules run one by one with the plain forward (the
    layer's ∂L/∂x summed by id by the Embedding), and pass finite differences."""
    rng = np.random.default_rng(7)
    emb = Embedding(V, E, dtype=np.float64, rng=rng)
    rec = make(ctor, kw, E, H, 2, bi, rng)
    lin = Linear(H * (2 if bi else 1), V, dtype=np.float64, rng=rng)
    model = Sequential(emb, rec, lin)
    x = _ids(rng)
    d = rng.standard_normal((B, T, V))
    with parallel.session():
        f = model.forward(x, lengths=LENGTHS)
        assert any(i is not None for i in lookups)
        got = model.backward(f, d, input_grad=False)
        lookups.clear()
        f0 = emb.forward(x)
        f1 = rec.forward(f0.output, lengths=LENGTHS)
        assert all(i is None for i in lookups)
        f2 = lin.forward(f1.output)
        b2 = lin.backward(f2, d)
        b1 = rec.backward(f1, b2.input)
        b0 = emb.backward(f0, b1.input)
    np.testing.assert_allclose(f.output, f2.output, rtol=0, atol=1e-12)
    for i, b in enumerate((b0, b1, b2)):
        for k, v in b.params.items():
            assert _relative(got.params[f"{i}.{k}"], v) < 1e-12, f"{i}.{k}"
    gradcheck(model, x, lengths=LENGTHS).assert_ok()


def test_rows_of_that_do_not_fit_the_input_are_refused():
    rng = np.random.default_rng(8)
    table = rng.standard_normal((V, E))
    layer = make(LSTM, {}, E, H, 1, False, rng)
    ids = _ids(rng)
    x = table[ids]
    x[0, 0] += 1.0  # one row differs from the others under its id
    with pytest.raises(ValueError, match=r"`rows_of` must be the table and ids whose rows"):
        layer.forward(x, rows_of=(table, ids))
    with pytest.raises(ValueError, match=r"`rows_of\[1\] \(ids\)` must be an array of shape"):
        layer.forward(table[ids], rows_of=(table, ids.T))


def test_a_layer_of_one_s_own_is_not_given_rows_of():
    """Sequential hands rows_of to Recurrent itself only, as in backward (a subclass's
    forward may not take it)."""

    class Own(Recurrent):
        def forward(self, x, **options):
            assert "rows_of" not in options
            return super().forward(x, **options)

    rng = np.random.default_rng(9)
    rec = make(LSTM, {}, E, H, 1, False, rng)
    own = Own(rec.cell, E, H, dtype=np.float64)
    own.load_state_dict(rec.params)
    model = Sequential(Embedding(V, E, dtype=np.float64, rng=rng), own)
    model.forward(_ids(rng))


def test_backward_takes_the_forward_s_lookup_for_the_same_rows_of(monkeypatch):
    """Backward given the table the forward pass was (the same array) and ids equal to its
    own takes the forward's checked Lookup; another table array, or ids changed since, are
    checked anew (and refused where the input's rows differ under them)."""
    rng = np.random.default_rng(10)
    table = rng.standard_normal((V, E))
    layer = make(LSTM, {}, E, H, 1, False, rng)
    ids = _ids(rng)
    d = rng.standard_normal((B, T, H))
    checked = []
    real = Recurrent._lookup
    monkeypatch.setattr(Recurrent, "_lookup",
                        lambda self, r, X: checked.append(1) or real(self, r, X))  # fmt: skip
    f = layer.forward(table[ids], rows_of=(table, ids))
    assert checked == [1]
    want = layer.backward(f, d, rows_of=(table, ids.copy()), retain_tape=True)
    assert checked == [1]  # the forward's
    again = layer.backward(f, d, rows_of=(table.copy(), ids), retain_tape=True)
    assert checked == [1, 1]  # another array: checked
    for k in want.params:
        np.testing.assert_array_equal(again.params[k], want.params[k])
    moved = ids.copy()
    moved[0, 0] = next(i for i in ids.reshape(-1) if i != ids[0, 0])  # two rows under one id
    with pytest.raises(ValueError, match=r"`rows_of` must be the table and ids whose rows"):
        layer.backward(f, d, rows_of=(table, moved))
    assert checked == [1, 1, 1]
    ids[0, 0] = moved[0, 0]  # the forward's ids changed in place since: checked anew
    with pytest.raises(ValueError, match=r"`rows_of` must be the table and ids whose rows"):
        layer.backward(f, d, rows_of=(table, ids))


def test_a_sequential_checks_the_gradient_between_its_modules_once(monkeypatch):
    """The gradient a Linear above a Recurrent hands down is checked finite by Sequential
    (a NaN there is divergence: NonFiniteError), not again by the layer (check=False); a
    Recurrent at the top checks the caller's d_output itself."""
    from rnnlab._checks import NonFiniteError

    rng = np.random.default_rng(11)
    emb = Embedding(V, E, dtype=np.float64, rng=rng)
    rec = make(LSTM, {}, E, H, 1, False, rng)
    lin = Linear(H, V, dtype=np.float64, rng=rng)
    x = _ids(rng)
    given = []
    real = Recurrent.backward
    monkeypatch.setattr(Recurrent, "backward",
                        lambda self, *a, **k: given.append(k.get("check")) or real(self, *a, **k))
    model = Sequential(emb, rec, lin)
    model.backward(model.forward(x), rng.standard_normal((B, T, V)))
    assert given == [False]
    lin.params["weight"][0, 0] = np.nan
    with pytest.raises(NonFiniteError, match=r"module 1's output \(Recurrent\)"):
        model.backward(model.forward(x), rng.standard_normal((B, T, V)))
    top = Sequential(emb, rec)
    given.clear()
    d = np.full((B, T, H), np.nan)
    with pytest.raises(ValueError, match=r"`d_output` must be finite"):
        top.backward(top.forward(x), d)
    assert given == [None]
    f = rec.forward(emb.forward(x).output)
    b = rec.backward(f, d, check=False)  # the caller's word: NaN in, NaN out
    assert np.isnan(b.params["weight_hh_l0"]).all()


@pytest.mark.parametrize("path", ["compiled_checkpointed", "numpy"])
def test_the_forward_s_lookup_keeps_its_own_ids(path):
    """Backward given ids equal to the forward's takes the forward's Lookup, whose ids BPTT
    reads (a checkpointed segment's window; the NumPy path's sums by id): the caller's ids
    array, changed in place since (a buffer reused for the next batch), must not reach them.
    ∂L/∂table was that of the changed ids, without a word."""
    from rnnlab import settings

    if path != "numpy" and not fast.available():
        pytest.skip("numba is not installed")
    rng = np.random.default_rng(12)
    table = rng.standard_normal((V, E))
    layer = make(LSTM, {}, E, H, 1, False, rng)
    ids = _ids(rng)
    d = rng.standard_normal((B, T, H))
    k = 4 if path != "numpy" else 0
    with settings.override(no_numba=path == "numpy"), parallel.session():
        want = layer.backward(layer.forward(table[ids], rows_of=(table, ids),
                                            checkpoint_every=k), d, rows_of=(table, ids))
        f = layer.forward(table[ids], rows_of=(table, ids), checkpoint_every=k)
        given = ids.copy()
        ids[...] = (ids + 3) % V
        got = layer.backward(f, d, rows_of=(table, given))
    np.testing.assert_array_equal(got.table, want.table)
    for key in want.params:
        np.testing.assert_array_equal(got.params[key], want.params[key])
