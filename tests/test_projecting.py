"""The training loop that multiplies x_t at every step (rnnlab.fast.projecting_loop with a full
tape), which runs where the input weight goes to the tiles (fast.projects_each_step). Here it
is forced for any size and held to the loop with the hoisted projection: the same states,
tape and gradients to float64 rounding, split over threads or not, with every option around
the step; and its gradients to finite differences."""

import numpy as np
import pytest
from helpers import CELLS, make, oracle

oracle("numba")


from rnnlab import fast, gradcheck, recurrence, settings  # noqa: E402
from rnnlab.cells import ElmanCell, GRUCell, LSTMCell  # noqa: E402
from rnnlab.fast import parallel  # noqa: E402
from rnnlab.layers import Recurrent  # noqa: E402

if not fast.available():  # pragma: no cover
    pytest.skip("needs the compiled loops", allow_module_level=True)


@pytest.fixture
def projecting(monkeypatch):
    """A switch for the per-step projection in training (any size), recording the tapes the
    projecting loop filled."""
    calls: list[tuple[int, int]] = []
    on = {"value": True}
    loop = fast.projecting_loop

    def recording(cell, X, *args, training=False, **kw):
        tape = args[7]
        calls.append((X.shape[0], tape.shape[0]) if training else (X.shape[0], -1))
        return loop(cell, X, *args, training=training, **kw)

    monkeypatch.setattr(fast, "projecting_loop", recording)
    monkeypatch.setattr(
        fast, "projects_each_step", lambda cell, I, H, dtype, training=False: on["value"]
    )
    return on, calls


LAYERS = [(name, ctor, kw) for name, ctor, kw in CELLS] + [
    ("lstm-all", Recurrent, dict(proj_size=3, zoneout=(0.0, 0.3), recurrent_dropout=0.2)),
    ("gru-rdrop", Recurrent, dict(recurrent_dropout=0.4)),
    ("rnn-zoneout", Recurrent, dict(zoneout=0.3)),
    ("rnn-proj", Recurrent, dict(proj_size=3)),
    ("ln-peephole", Recurrent, dict(zoneout=(0.0, 0.4))),
    ("lstm-coupled-clip", Recurrent, {}),
    ("ln-lstm", Recurrent, {}),
]
_OWN_CELLS = {
    "lstm-all": LSTMCell,
    "gru-rdrop": GRUCell,
    "rnn-zoneout": ElmanCell,
    "rnn-proj": ElmanCell,
    "ln-peephole": lambda: LSTMCell(layer_norm=True, peephole=True),
    "lstm-coupled-clip": lambda: LSTMCell(coupled=True, cell_clip=0.7),
    "ln-lstm": lambda: LSTMCell(layer_norm=True),
}


def _layer(name, ctor, kw, rng):
    if ctor is Recurrent:
        m = Recurrent(_OWN_CELLS[name](), 5, 6, 2, bidirectional=True, dtype=np.float64,
                      rng=rng, **kw)  # fmt: skip
        for v in m.params.values():
            v[...] = rng.uniform(-0.6, 0.6, v.shape)
        return m
    return make(ctor, kw, 5, 6, L=2, bi=True, rng=rng)


def _states(state):
    return state if isinstance(state, tuple) else (state,)


@pytest.mark.parametrize("name, ctor, kw", LAYERS, ids=[c[0] for c in LAYERS])
def test_training_projecting_each_step_matches_the_hoisted_projection(name, ctor, kw,
                                                                      projecting):  # fmt: skip
    """A 2-layer bidirectional, masked layer (with its options' draws fixed by one seed):
    outputs, final states, ∂L/∂x and every parameter's gradient as with the projection
    before the loop, to 1e-12."""
    on, calls = projecting
    rng = np.random.default_rng(11)
    m = _layer(name, ctor, kw, rng)
    x = rng.standard_normal((7, 9, 5))
    lengths = np.array([9, 3, 8, 1, 9, 5, 6])
    d = rng.standard_normal((7, 9, m.output_features))

    def step():
        f = m.forward(x, lengths=lengths, training=True, rng=np.random.default_rng(4))
        return f, m.backward(f, d)

    on["value"] = False
    want_f, want_b = step()
    assert not calls
    on["value"] = True
    got_f, got_b = step()
    assert calls and all(T == kept == 9 for T, kept in calls), calls  # full tapes, 4 loops
    assert len(calls) == 4
    np.testing.assert_allclose(got_f.output, want_f.output, rtol=1e-12, atol=1e-14)
    for g, w in zip(_states(got_f.state), _states(want_f.state), strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(got_b.input, want_b.input, rtol=1e-12, atol=1e-13)
    for k, v in want_b.params.items():
        np.testing.assert_allclose(got_b.params[k], v, rtol=1e-12, atol=1e-13, err_msg=k)


@pytest.mark.parametrize("bi", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("name", ["lstm", "gru", "tanh"])
def test_training_projecting_each_step_is_exact(name, bi, projecting):
    """Every parameter, the input and a learned initial state against central differences,
    with padding, on the projecting loop."""
    _, calls = projecting
    ctor, kw = {c[0]: (c[1], c[2]) for c in CELLS}[name]
    rng = np.random.default_rng(3)
    m = make(ctor, kw, 3, 4, 1, bi, rng, initial_state="learned")
    x = rng.standard_normal((3, 5, 3))
    report = gradcheck(m, x, lengths=np.array([5, 2, 4]))
    report.assert_ok()
    assert report.max_error < 1e-7, str(report)
    assert any(kept == 5 for _, kept in calls)


@pytest.mark.parametrize("kind", ["tanh", "lstm", "gru", "gru-orig"])
@pytest.mark.parametrize("masked", [False, True], ids=["full", "masked"])
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_a_full_tape_from_the_projecting_loop_is_the_numpy_loops(kind, masked, reverse):
    """The loop itself with a full tape, on one thread and split over three: states, cell
    states and every step's saved values as the NumPy step loop writes them, to rounding
    (what BPTT reads: a tape that differed would give wrong gradients)."""
    cell = {"lstm": LSTMCell(), "gru": GRUCell(), "gru-orig": GRUCell(reset_after=False)}.get(
        kind
    ) or ElmanCell(kind)
    rng = np.random.default_rng(5)
    T, B, I, H = 6, 12, 5, 4
    G = cell.gates * H
    p = recurrence.Params(
        *(rng.standard_normal(s) * 0.5 for s in ((G, I), (G, H), (G,), (G,)))
    )
    X = rng.standard_normal((T, B, I))
    mask = (rng.random((T, B)) < 0.7) if masked else None
    h0 = rng.standard_normal((B, H))
    c0 = rng.standard_normal((B, H)) if cell.has_c else None
    want_hs, want_cs = recurrence._states(T, B, H, np.float64, cell.has_c, reverse, h0, c0)
    want_tape = np.zeros((T, B, cell.tape * H))
    with settings.override(no_numba=True):
        recurrence._loop_forward(cell, X, p, p.W_hh, want_hs, want_cs, want_tape, mask, reverse)
    for threads in (1, 3):
        hs, cs = recurrence._states(T, B, H, np.float64, cell.has_c, reverse, h0, c0)
        tape = np.zeros_like(want_tape)
        with pytest.MonkeyPatch.context() as mp, settings.override(num_threads=threads):
            mp.setattr(fast, "MIN_LOOP_FLOPS", 0)
            with parallel.session():
                fast.projecting_loop(cell, X, p.W_ih, p.W_hh, p.b_ih, p.b_hh, None, hs, cs,
                                     tape, mask, reverse, training=True)  # fmt: skip
        np.testing.assert_allclose(hs, want_hs, rtol=1e-12, atol=1e-14)
        if cs is not None:
            np.testing.assert_allclose(cs, want_cs, rtol=1e-12, atol=1e-14)
        valid = slice(None) if mask is None else mask
        np.testing.assert_allclose(tape[valid], want_tape[valid], rtol=1e-12, atol=1e-14)


def test_training_projects_each_step_only_on_the_tiles():
    """In training the per-step projection is taken where the input weight goes to the tiles
    and nowhere else (on a plain or packed BLAS the hoisted projection is at least as fast);
    inference takes it there too."""
    from rnnlab.fast import tiles

    nr = tiles.panel_width(np.float32)
    cell = LSTMCell()
    for mode in ("on", "off"):
        with settings.override(tiles=mode):
            fits = fast.projects_each_step(cell, 16, nr, np.float32, training=True)
            assert fits == (mode == "on")
            assert not fast.projects_each_step(cell, 16, nr + 1, np.float32, training=True)
            if mode == "on":
                assert fast.projects_each_step(cell, 16, nr, np.float32)


def test_checkpointing_keeps_the_hoisted_projection_in_both_passes(projecting):
    """Gradient checkpointing recomputes each segment's tape in backward with the loop its
    forward ran (_loop_forward, the projection hoisted per segment), so the two cannot
    disagree; a segment as long as the sequence is no checkpointing and projects each step."""
    _, calls = projecting
    rng = np.random.default_rng(2)
    m = make(CELLS[2][1], {}, 3, 4, 1, False, rng)
    x = rng.standard_normal((2, 8, 3))
    d = rng.standard_normal((2, 8, 4))
    want = m.backward(m.forward(x), d)
    calls.clear()
    got = m.backward(m.forward(x, checkpoint_every=3), d)
    assert not calls
    for k, v in want.params.items():
        np.testing.assert_allclose(got.params[k], v, rtol=1e-12, atol=1e-14, err_msg=k)
    m.backward(m.forward(x, checkpoint_every=8), d)
    assert calls == [(8, 8)]


def test_a_retained_tape_serves_two_backward_passes(projecting):
    rng = np.random.default_rng(4)
    m = make(CELLS[3][1], {}, 3, 5, 2, True, rng)
    x = rng.standard_normal((3, 6, 3))
    d = rng.standard_normal((3, 6, 10))
    f = m.forward(x)
    first = m.backward(f, d, retain_tape=True)
    second = m.backward(f, d)
    for k, v in first.params.items():
        np.testing.assert_array_equal(second.params[k], v, err_msg=k)


def test_a_large_batch_first_float32_layer_split_over_two_threads(projecting, monkeypatch,
                                                                  split_calls):  # fmt: skip
    """float32, a batch-first input large enough to be read where it lies (no time-major
    copy), the loop split over two threads: the same as with the hoisted projection, to
    float32 rounding; the loop got the caller's array itself."""
    on, calls = projecting
    seen = []
    loop = fast.projecting_loop

    def spying(cell, X, *args, **kw):
        seen.append(X)
        return loop(cell, X, *args, **kw)

    monkeypatch.setattr(fast, "projecting_loop", spying)
    parts = split_calls
    rng = np.random.default_rng(6)
    B, T, I, H = 64, 64, 64, 8
    assert B * T * I >= recurrence.IN_PLACE_MIN_VALUES
    m = Recurrent(LSTMCell(), I, H, 1, dtype=np.float32, rng=rng)
    x = rng.standard_normal((B, T, I), dtype=np.float32)
    d = rng.standard_normal((B, T, H), dtype=np.float32)
    with settings.override(num_threads=2):
        on["value"] = False
        want_f = m.forward(x)
        want_b = m.backward(want_f, d)
        on["value"] = True
        parts.clear()
        got_f = m.forward(x)
        assert 2 in parts, parts
        got_b = m.backward(got_f, d)
    assert len(seen) == 1 and np.shares_memory(seen[0], x), "x was copied"
    np.testing.assert_allclose(got_f.output, want_f.output, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got_b.input, want_b.input, rtol=1e-4, atol=1e-5)
    for k, v in want_b.params.items():
        scale = np.abs(v).max()
        np.testing.assert_allclose(got_b.params[k], v, rtol=1e-4, atol=1e-5 * scale, err_msg=k)
