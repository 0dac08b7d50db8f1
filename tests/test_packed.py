"""The per-step products on weights in MKL's packed format (rnnlab.fast.packs).

With the `mkl` extra the compiled loops pack each direction's W_hhᵀ (forward), W_hh (BPTT)
and the stacked inference weight once per loop and multiply by the packed copy at every
step. These tests pack even the tiny weights of the test problems (no size bound), check
that packing really happened, and hold every tape, gradient and output to the unpacked
loops' float64 results to 1e-12.
"""

import numpy as np
import pytest
from helpers import CELLS, make, oracle

oracle("numba")
oracle("scipy")

from test_fast import CELLS as FAST_CELLS  # noqa: E402
from test_fast import (  # noqa: E402
    KIND_IDS,
    assert_close,
    cast,
    problem,
    run_backward,
    run_forward,
    tape_arrays,
)
from test_parallel import _loaded_mkl, split_problem  # noqa: E402

from rnnlab import LSTM, _mkl, fast, settings  # noqa: E402
from rnnlab.fast import blas, parallel  # noqa: E402


@pytest.fixture
def packing(monkeypatch, setenv):
    """Pack every weight (no size bound) and record the shape of each packed factor."""
    _loaded_mkl()
    setenv(RNNLAB_PACKED=None)
    monkeypatch.setattr(fast, "MIN_PACKED_VALUES", 1)
    monkeypatch.setattr(fast, "MIN_PACKED_VALUES_INFER", 1)
    seen: list[tuple[int, int]] = []
    pack = _mkl.MKL.pack

    def recording(self, b, rows):
        seen.append(b.shape)
        return pack(self, b, rows)

    monkeypatch.setattr(_mkl.MKL, "pack", recording)
    return seen


def unpacked(fn):
    with settings.override(packed=False):
        return fn()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_packed_products_match_numpy(dtype):
    mkl = _loaded_mkl()
    rng = np.random.default_rng(3)
    W = rng.standard_normal((44, 13)).astype(dtype)  # like W_hh (G·H, H)
    tol = 1e-5 if dtype == np.float32 else 1e-13
    factors = {
        "C-contiguous": np.ascontiguousarray(W.T),
        "a transposed view (W_hh.T)": W.T,
        "a block of rows of W_hh": W[11:33],
        "a block of columns of W_hhᵀ (strided rows)": W.T[:, 22:],
    }
    for what, b in factors.items():
        packed = mkl.pack(b, rows=8)
        assert packed is not None, what
        for M in (1, 5, 8, 17):  # the rows given to pack are only a hint
            a = rng.standard_normal((M, b.shape[0])).astype(dtype)
            out = np.full((M, b.shape[1]), np.nan, dtype)
            mkl.gemm_packed(a, packed, out)
            np.testing.assert_allclose(out, a @ b, rtol=tol, atol=tol, err_msg=f"{what}, {M} rows")
    assert mkl.pack(W.astype(np.float16), 8) is None
    assert mkl.pack(W[:, ::2], 8) is None  # strided both ways
    assert mkl.pack(np.empty((0, 4), dtype), 8) is None


def test_packs_follows_size_dtype_and_environment(setenv):
    _loaded_mkl()
    setenv(RNNLAB_PACKED=None)
    assert fast.packs((256, 1024), np.float32)
    assert fast.packs((256, 1024), np.float64)
    assert not fast.packs((128, 512), np.float32)  # below MIN_PACKED_VALUES: memory, no speed
    assert fast.packs((128, 512), np.float32, inference=True)
    assert not fast.packs((64, 256), np.float32, inference=True)  # a loss measured
    assert not fast.packs((256, 1024), np.float16)
    setenv(RNNLAB_PACKED="0")
    assert not fast.packs((256, 1024), np.float32)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("masked", [False, True], ids=["full", "masked"])
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("kind", KIND_IDS)
def test_packed_loops_match_the_unpacked_ones(kind, reverse, masked, dtype, packing, monkeypatch):
    p = cast(split_problem(kind, reverse, masked, seed=4, shape=(7, 13, 21)), dtype)
    tol = 1e-12 if dtype == np.float64 else 1e-5
    want_tape = unpacked(lambda: run_forward(kind, p, "fast"))
    want = unpacked(lambda: run_backward(kind, p, want_tape, "fast"))
    assert packing == []
    got_tape = run_forward(kind, p, "fast")
    H = 21
    G = CELLS_GATES[kind] * H
    forward_factors = [(H, G)] if kind != "gru_orig" else [(H, 2 * H), (H, H)]
    assert packing == forward_factors, packing
    for name, w in tape_arrays(want_tape).items():
        assert_close(tape_arrays(got_tape)[name], w, tol, f"forward {name}")
    got = run_backward(kind, p, got_tape, "fast")
    backward_factors = [(G, H)] if kind != "gru_orig" else [(2 * H, H), (H, H)]
    assert packing == forward_factors + backward_factors, packing
    for name in want:
        assert_close(got[name], want[name], tol, f"backward {name}")


CELLS_GATES = {"tanh": 1, "relu": 1, "lstm": 4, "gru": 3, "gru_orig": 3}


@pytest.mark.parametrize("name, ctor, kw", CELLS, ids=[c[0] for c in CELLS])
def test_layers_with_packed_weights_match_unpacked(name, ctor, kw, packing):
    """Whole bidirectional 2-layer layers, masked, in training (outputs, states, every
    gradient), in inference (the one-product-per-step loop included) and with gradient
    checkpointing, whose segments share one packed weight per direction."""
    rng = np.random.default_rng(7)
    layer = make(ctor, kw, 5, 9, L=2, bi=True, rng=rng)
    x = rng.standard_normal((6, 11, 5))
    lengths = np.array([11, 4, 9, 1, 11, 7])
    d_out = rng.standard_normal((6, 11, 18))

    def step(**forward_kw):
        f = layer.forward(x, lengths=lengths, **forward_kw)
        b = layer.backward(f, d_out)
        return f, b

    def infer():
        return layer.forward(x, lengths=lengths, grad=False)

    for what, kw_ in (("full BPTT", {}), ("checkpointed", {"checkpoint_every": 3})):
        want_f, want_b = unpacked(lambda kw_=kw_: step(**kw_))
        before = len(packing)
        got_f, got_b = step(**kw_)
        # each direction of each layer packs once forward and once for BPTT (a checkpointed
        # backward packs its forward weight again for the recomputation): never per segment
        per_pass = 2 if name == "gru_orig" else 1
        passes = 2 if what == "full BPTT" else 3
        assert len(packing) - before == 4 * passes * per_pass, (what, packing[before:])
        assert_close(got_f.output, want_f.output, 1e-12, f"{what} output")
        for g, w in zip(_states(got_f.state), _states(want_f.state), strict=True):
            assert_close(g, w, 1e-12, f"{what} state")
        assert_close(got_b.input, want_b.input, 1e-12, f"{what} input gradient")
        assert got_b.params.keys() == want_b.params.keys()
        for k in want_b.params:
            assert_close(got_b.params[k], want_b.params[k], 1e-12, f"{what} {k}")
    want = unpacked(infer)
    before = len(packing)
    got = infer()
    assert len(packing) > before
    assert_close(got.output, want.output, 1e-12, "inference output")


def _states(state):
    return state if isinstance(state, tuple) else (state,)


def test_weights_prepared_for_another_loop_are_refused():
    cell = FAST_CELLS["lstm"]
    prepared = fast.step_weights(cell, np.zeros((76, 19)), 4)  # for the forward loop
    p = problem("lstm", False, False)
    hs, cs, saved = run_forward("lstm", p, "fast")
    expected = r"`W_hh` must be weights prepared for the backward loop of LSTMCell"
    with pytest.raises(ValueError, match=expected):
        fast.backward_loop(cell, prepared, None, hs, cs, saved, None, False, None, None, None,
                           None, None, None)  # fmt: skip


def test_without_mkl_nothing_is_packed(monkeypatch):
    monkeypatch.setattr(blas, "PACKS", False)
    monkeypatch.setattr(fast, "MIN_PACKED_VALUES", 1)
    assert not fast.packs((256, 1024), np.float32)
    W = fast.step_weights(FAST_CELLS["lstm"], np.ones((16, 4)), 3)  # W_hh of H = 4
    (dense, packed), (none, _) = W.factors
    assert packed.size == 0 and dense.shape == (4, 16) and dense.flags.c_contiguous
    assert none.size == 0  # the LSTM has one product


def test_inference_packs_smaller_weights_than_training(monkeypatch, setenv):
    """At H = 128 an LSTM's weights are packed without a tape only (W_ihᵀ and W_hhᵀ apiece,
    where the stacked [W_ih | W_hh]ᵀ passes the bound): in training the packed buffers cost
    more memory than they saved time (see fast.packs)."""
    _loaded_mkl()
    setenv(RNNLAB_PACKED=None)
    seen = []
    pack = _mkl.MKL.pack
    monkeypatch.setattr(
        _mkl.MKL, "pack", lambda self, b, rows: seen.append(b.shape) or pack(self, b, rows)
    )
    rng = np.random.default_rng(0)
    layer = make(LSTM, {}, 300, 128, rng=rng)
    x = rng.standard_normal((4, 5, 300))
    layer.forward(x, grad=False)
    assert seen == [(300, 512), (128, 512)]
    f = layer.forward(x)
    layer.backward(f, np.ones_like(f.output))
    assert seen == [(300, 512), (128, 512)]


def test_directions_run_at_once_whatever_their_step_bytes_when_packed(packing, monkeypatch, setenv):
    """The bound on one step's gates (parallel.MAX_CONCURRENT_STEP_BYTES) is for plain
    weights only: packed, the two directions of a large layer ran faster at once."""
    setenv(RNNLAB_NUM_THREADS="2")
    monkeypatch.setattr(parallel, "MIN_CONCURRENT_FLOPS", 0)
    monkeypatch.setattr(parallel, "MAX_CONCURRENT_STEP_BYTES", 1)
    at_once: list[bool] = []
    concurrently = parallel.concurrently

    def recording(fns, flops, step_bytes=0):
        ran = []
        jobs = [lambda f=f: ran.append(parallel.row_parts(8, 1)) or f() for f in fns]
        out = concurrently(jobs, flops, step_bytes)
        at_once.append(all(parts == [(0, 8)] for parts in ran))
        return out

    monkeypatch.setattr(parallel, "concurrently", recording)
    rng = np.random.default_rng(2)
    layer = make(LSTM, {}, 3, 6, bi=True, rng=rng)
    x = rng.standard_normal((8, 5, 3))
    for env, want in (("1", True), ("0", False)):
        setenv(RNNLAB_PACKED=env)
        at_once.clear()
        f = layer.forward(x)
        layer.backward(f, np.ones_like(f.output))
        layer.forward(x, grad=False)
        assert at_once == [want] * 3, env


@pytest.mark.parametrize("ctor_name", ["lstm", "rnn"])
def test_packed_inference_reads_odd_batch_strides_right(ctor_name, packing):
    """The packed inference loop multiplies x_t where it lies, so the batch rows must make a
    valid leading dimension: a reversed, broadcast, overlapping or byte-offset batch axis is
    copied first (MKL would refuse the product, or read the wrong rows, without an error)."""
    from numpy.lib.stride_tricks import as_strided

    from rnnlab.cells import ElmanCell, LSTMCell
    from rnnlab.layers import Recurrent

    rng = np.random.default_rng(9)
    B, T, I, H = 5, 7, 12, 6
    cell = {"lstm": LSTMCell, "rnn": ElmanCell}[ctor_name]()
    layer = Recurrent(cell, I, H, 1, dtype=np.float64, rng=rng)
    x = rng.standard_normal((B, T, I))
    records = np.zeros((B, T), np.dtype([("x", "f8", (I,)), ("w", "f4")]))  # 8 ∤ the strides
    records["x"] = x
    signal = rng.standard_normal(B + T * I)
    views = {
        "reversed": x[::-1],
        "broadcast": np.broadcast_to(x[:1], x.shape),
        "overlapping": as_strided(signal, (B, T, I), (8, I * 8, 8)),
        "structured field": records["x"],
    }
    for name, view in views.items():
        before = len(packing)
        got = layer.forward(view, grad=False)
        assert len(packing) > before, name  # the packed loop served it
        want = layer.forward(np.ascontiguousarray(view))
        assert_close(got.output, want.output, 1e-12, name)
        for g, w in zip(_states(got.state), _states(want.state), strict=True):
            assert_close(g, w, 1e-12, f"{name} state")
