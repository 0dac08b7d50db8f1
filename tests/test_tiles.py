"""rnnlab's own kernel for the per-step products (rnnlab.fast.tiles).

The kernel is checked against float64 NumPy products on every row tail, stride and dtype;
then every cell's loops, layers (bidirectional, stacked, masked, checkpointed, inference)
and gradients run on it (RNNLAB_TILES=on) and are held to the same loops on the BLAS to
1e-12 in float64, to finite differences, and to PyTorch in float32. The widths are the
panel width of the host (16 or 32 float32 lanes a panel), so that the products fit panels.
"""

import os

import numpy as np
import pytest
from helpers import CELLS, make, oracle, random_state

oracle("numba")

from test_fast import KIND_IDS, assert_close, cast, run_backward, run_forward, tape_arrays  # noqa: E402
from test_parallel import split_problem  # noqa: E402

from rnnlab import fast, gradcheck, settings  # noqa: E402
from rnnlab.fast import tiles  # noqa: E402

NR32, NR64 = tiles.panel_width(np.float32), tiles.panel_width(np.float64)


@pytest.fixture
def on_tiles(monkeypatch, setenv):
    """RNNLAB_TILES=on, recording the (K, N) shape of every weight laid out in panels."""
    setenv(RNNLAB_TILES="on")
    seen: list[tuple[int, int]] = []
    lay_out = tiles.panels

    def recording(W):
        seen.append(W.shape)
        return lay_out(W)

    monkeypatch.setattr(tiles, "panels", recording)
    return seen


def on_blas(fn):
    with settings.override(tiles="off"):
        return fn()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_tile_products_match_numpy(dtype):
    rng = np.random.default_rng(0)
    nr = tiles.panel_width(dtype)
    tol = 2e-6 if dtype == np.float32 else 1e-14
    for M in (1, 2, 3, 4, 5, 7, 8, 9, 17):  # every tail of the 4-row tiles
        for K, N in ((1, nr), (3, 2 * nr), (64, 4 * nr)):
            W = rng.standard_normal((N, K)).astype(dtype).T  # W_hh.T: a transposed view
            A = rng.standard_normal((M, K + 3)).astype(dtype)[:, :K]  # rows spaced wider
            C = rng.standard_normal((M, N + 5)).astype(dtype)[:, :N]
            want = A.astype(np.float64) @ W.astype(np.float64)
            P = tiles.panels(W)
            assert P.shape == (N // nr, K, nr) and P.flags.c_contiguous
            before, beyond = C.copy(), C.base[:, N:].copy()
            tiles.product(A, P, C, True)
            scale = np.abs(want).max() + np.abs(before).max()
            assert np.abs(C - (before + want)).max() <= tol * scale * K, (M, K, N, "add")
            tiles.product(A, P, C, False)
            assert np.abs(C - want).max() <= tol * scale * K, (M, K, N)
            assert np.array_equal(C.base[:, N:], beyond), "wrote past C's columns"


def test_float64_tiles_sum_in_order():
    """Each value is one sum over k in order, FMA-rounded: a product whose exact value is
    representable comes out exact, and an FMA-free sum in order gives the same bits up to
    the one rounding each FMA saves."""
    rng = np.random.default_rng(1)
    A = rng.integers(-8, 8, (6, 40)).astype(np.float64)
    W = rng.integers(-8, 8, (40, 2 * NR64)).astype(np.float64)
    C = np.empty((6, 2 * NR64))
    tiles.product(A, tiles.panels(W), C, False)
    assert np.array_equal(C, A @ W)


def test_takes_what_fits_panels():
    assert tiles.takes((7, NR32), np.float32) and tiles.takes((7, 3 * NR64), np.float64)
    assert not tiles.takes((7, NR32 + 4), np.float32)
    assert not tiles.takes((7, NR32), np.float16)
    assert not tiles.takes((0, NR32), np.float32)
    assert NR64 * 2 == NR32


def test_tiled_follows_the_setting(setenv):
    setenv(RNNLAB_TILES="on")
    assert fast.tiled((64, 4 * NR32), np.float32)
    assert not fast.tiled((64, 4 * NR32 + 4), np.float32)  # does not fit: the BLAS
    setenv(RNNLAB_TILES="off")
    assert not fast.tiled((64, 4 * NR32), np.float32)
    setenv(RNNLAB_TILES="on")
    W = fast.step_weights(fast_cell("lstm"), np.ones((4 * NR32, NR32), np.float32), 8)
    (panels, empty), _ = W.factors
    assert panels.shape == (4, NR32, NR32) and empty.size == 0


def fast_cell(kind):
    from test_fast import CELLS as FAST_CELLS

    return FAST_CELLS[kind]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("masked", [False, True], ids=["full", "masked"])
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("kind", KIND_IDS)
def test_tiled_loops_match_the_blas_ones(kind, reverse, masked, dtype, on_tiles):
    H = tiles.panel_width(dtype)
    p = cast(split_problem(kind, reverse, masked, seed=4, shape=(7, 13, H)), dtype)
    tol = 1e-12 if dtype == np.float64 else 1e-5
    want_tape = on_blas(lambda: run_forward(kind, p, "fast"))
    want = on_blas(lambda: run_backward(kind, p, want_tape, "fast"))
    assert on_tiles == []
    got_tape = run_forward(kind, p, "fast")
    assert on_tiles, "the forward loop did not run on the tiles"
    for name, w in tape_arrays(want_tape).items():
        assert_close(tape_arrays(got_tape)[name], w, tol, f"forward {name}")
    laid_out = len(on_tiles)
    got = run_backward(kind, p, got_tape, "fast")
    assert len(on_tiles) > laid_out, "BPTT did not run on the tiles"
    for name in want:
        assert_close(got[name], want[name], tol, f"backward {name}")


def _states(state):
    return state if isinstance(state, tuple) else (state,)


@pytest.mark.parametrize("name, ctor, kw", CELLS, ids=[c[0] for c in CELLS])
def test_layers_on_tiles_match_the_blas(name, ctor, kw, on_tiles):
    """Whole bidirectional 2-layer layers, masked, in training (outputs, states, every
    gradient), with gradient checkpointing, and in inference, where x_t is multiplied at
    every step on the tiles too (fast.projects_each_step), as in training."""
    H = NR64
    rng = np.random.default_rng(7)
    layer = make(ctor, kw, 5, H, L=2, bi=True, rng=rng)
    x = rng.standard_normal((6, 11, 5))
    lengths = np.array([11, 4, 9, 1, 11, 7])
    d_out = rng.standard_normal((6, 11, 2 * H))

    def step(**forward_kw):
        f = layer.forward(x, lengths=lengths, **forward_kw)
        return f, layer.backward(f, d_out)

    for what, kw_ in (("full BPTT", {}), ("checkpointed", {"checkpoint_every": 3})):
        want_f, want_b = on_blas(lambda kw_=kw_: step(**kw_))
        before = len(on_tiles)
        got_f, got_b = step(**kw_)
        assert len(on_tiles) > before, what
        assert_close(got_f.output, want_f.output, 1e-12, f"{what} output")
        for g, w in zip(_states(got_f.state), _states(want_f.state), strict=True):
            assert_close(g, w, 1e-12, f"{what} state")
        assert_close(got_b.input, want_b.input, 1e-12, f"{what} input gradient")
        for k in want_b.params:
            assert_close(got_b.params[k], want_b.params[k], 1e-12, f"{what} {k}")
    want = on_blas(lambda: layer.forward(x, lengths=lengths, grad=False))
    before = len(on_tiles)
    got = layer.forward(x, lengths=lengths, grad=False)
    assert (5, layer.cell.gates * H) in on_tiles[before:], "x_t's product not on the tiles"
    assert_close(got.output, want.output, 1e-12, "inference output")


@pytest.mark.parametrize("bi", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("name, ctor, kw", CELLS, ids=[c[0] for c in CELLS])
def test_gradients_on_tiles_match_finite_differences(name, ctor, kw, bi, on_tiles):
    rng = np.random.default_rng(5)
    H = NR64
    m = make(ctor, kw, 3, H, 1, bi, rng, initial_state="learned")
    x = rng.standard_normal((3, 4, 3))
    gradcheck(m, x, lengths=np.array([4, 2, 3])).assert_ok()
    report = gradcheck(m, x, state=random_state(name, 1, 2 if bi else 1, 3, H, rng))
    report.assert_ok()
    assert on_tiles


@pytest.mark.parametrize("name", ["rnn", "lstm", "gru"])
def test_float32_layers_on_tiles_match_torch(name, on_tiles):
    """The float32 layers as users run them (2 layers, bidirectional, batch-first) on the
    tiles, against PyTorch on copied weights: outputs and every gradient within float32's
    noise (the tiles' sums round in another order than oneDNN's)."""
    torch = oracle("torch")
    from rnnlab.layers import GRU, LSTM, RNN

    ours_class, theirs_class = {"rnn": (RNN, torch.nn.RNN), "lstm": (LSTM, torch.nn.LSTM),
                                "gru": (GRU, torch.nn.GRU)}[name]  # fmt: skip
    rng = np.random.default_rng(2)
    B, T, I, H = 8, 12, 10, NR32
    ours = ours_class(I, H, 2, bidirectional=True, dtype=np.float32, rng=rng)
    theirs = theirs_class(I, H, 2, bidirectional=True, batch_first=True)
    theirs.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in ours.params.items()})
    x = rng.standard_normal((B, T, I)).astype(np.float32)
    d_out = rng.standard_normal((B, T, 2 * H)).astype(np.float32)
    f = ours.forward(x)
    b = ours.backward(f, d_out)
    assert on_tiles
    xt = torch.from_numpy(x).requires_grad_()
    out = theirs(xt)[0]
    out.backward(torch.from_numpy(d_out))
    assert_close(f.output, out.detach().numpy(), 1e-5, "output")
    assert_close(b.input, xt.grad.numpy(), 1e-5, "input gradient")
    for k, p in theirs.named_parameters():
        assert_close(b.params[k], p.grad.numpy(), 1e-5, k)
    with torch.inference_mode():
        want = theirs(torch.from_numpy(x))[0].numpy()
    assert_close(ours.forward(x, grad=False).output, want, 1e-5, "inference output")


AROUND = [
    ("lstm-proj-peephole", {"proj_size": NR64, "peephole": True}),
    ("lstm-recurrent-dropout", {"recurrent_dropout": 0.3}),
    ("lstm-zoneout", {"zoneout": (0.2, 0.1)}),
    ("lstm-layer-norm-clip", {"layer_norm": True, "cell_clip": 0.8}),
]


@pytest.mark.parametrize("name, kw", AROUND, ids=[a[0] for a in AROUND])
def test_options_around_the_cell_on_tiles_match_the_blas(name, kw, on_tiles):
    """A projected carry (W_hr's product on the tiles too), recurrent dropout, zoneout and
    the LSTM's variants, in training with the same masks drawn, and in inference."""
    from rnnlab.layers import LSTM

    rng = np.random.default_rng(11)
    layer = make(LSTM, kw, 4, 2 * NR64, L=1, bi=True, rng=rng)
    x = rng.standard_normal((5, 9, 4))
    width = 2 * (kw.get("proj_size") or 2 * NR64)
    d_out = rng.standard_normal((5, 9, width))

    def step():
        f = layer.forward(x, training=True, rng=np.random.default_rng(3))
        return f, layer.backward(f, d_out)

    want_f, want_b = on_blas(step)
    got_f, got_b = step()
    assert on_tiles
    assert_close(got_f.output, want_f.output, 1e-12, "output")
    assert_close(got_b.input, want_b.input, 1e-12, "input gradient")
    for k in want_b.params:
        assert_close(got_b.params[k], want_b.params[k], 1e-12, k)
    want = on_blas(lambda: layer.forward(x, grad=False))
    assert_close(layer.forward(x, grad=False).output, want.output, 1e-12, "inference output")


def test_bptt_keeps_a_large_weight_where_it_lies(setenv, monkeypatch):
    """BPTT's W_hh block is C-contiguous: the BLAS multiplies it in place, while the tiles
    would copy it into panels. From MIN_TILED_IN_PLACE values on BPTT stays on the BLAS and
    makes no copy, unless the host measured the tiles well ahead at the loop's rows a thread
    (Choice.tiles_in_place_rows); the forward weight, a transposed view that the BLAS path
    copies too, goes to the tiles at any size."""
    setenv(RNNLAB_TILES="on")
    monkeypatch.setattr(fast, "_tiles_in_place", lambda rows: False)
    monkeypatch.setattr(fast, "MIN_TILED_IN_PLACE", 4 * NR32 * NR32)
    cell = fast_cell("lstm")
    W = np.ones((4 * NR32, NR32), np.float32)  # exactly MIN_TILED_IN_PLACE values
    (dense, _), _ = fast.step_weights(cell, W, 8, backward=True).factors
    assert dense.ndim == 2 and np.shares_memory(dense, W)  # no copy: the BLAS
    (panels, _), _ = fast.step_weights(cell, W, 8).factors
    assert panels.ndim == 3  # forward: the tiles
    monkeypatch.setattr(fast, "MIN_TILED_IN_PLACE", 4 * NR32 * NR32 + 1)
    (panels, _), _ = fast.step_weights(cell, W, 8, backward=True).factors
    assert panels.ndim == 3
    monkeypatch.setattr(fast, "MIN_TILED_IN_PLACE", 4 * NR32 * NR32)
    monkeypatch.setattr(fast, "_tiles_in_place", lambda rows: True)  # measured well ahead
    (panels, _), _ = fast.step_weights(cell, W, 8, backward=True).factors
    assert panels.ndim == 3 and np.array_equal(panels.reshape(NR32 * 4, NR32), W)


def test_bptt_takes_a_large_weight_on_the_tiles_by_the_rows_a_thread(setenv, monkeypatch):
    """Choice.tiles_in_place_rows is compared with the rows each thread's part of the loop will
    have: the whole batch outside a session, half of it (rounded up) in a session of two
    threads."""
    from rnnlab import _blaschoice
    from rnnlab.fast import parallel

    setenv(RNNLAB_TILES="on")
    monkeypatch.setattr(fast, "MIN_TILED_IN_PLACE", 1)
    made = _blaschoice.Choice("numpy", "test", tiles=True, tiles_in_place_rows=16)
    monkeypatch.setattr(_blaschoice, "choice", lambda: made)
    W = np.ones((4 * NR32, NR32), np.float32)
    cell = fast_cell("lstm")

    def on_tiles(B: int) -> bool:
        (factor, _), _ = fast.step_weights(cell, W, B, backward=True).factors
        return factor.ndim == 3

    assert on_tiles(16) and not on_tiles(17) and not on_tiles(32)
    monkeypatch.setattr(parallel, "num_threads", lambda: 2)
    with parallel.session():
        assert parallel.in_session()
        assert on_tiles(32) and on_tiles(31) and not on_tiles(33) and not on_tiles(64)


def test_the_wide_tiles_of_avx512_hosts_compute_the_same(tmp_path):
    """The tiles are 32 float32 lanes wide where the CPU has AVX-512 (16 float64); LLVM splits
    such vectors on a narrower CPU, so the wide kernel's arithmetic and layout are checked on
    any host: in a child with its own numba cache (nothing compiled at the host's width is
    loaded), the lanes set to 16 before anything compiles."""
    import subprocess
    import sys

    code = """
import numpy as np
from rnnlab.fast import tiles
tiles._LANES32 = 16
rng = np.random.default_rng(0)
for dtype, nr in ((np.float32, 32), (np.float64, 16)):
    assert tiles.panel_width(dtype) == nr
    for M in (1, 3, 4, 6, 9):
        A = rng.standard_normal((M, 21)).astype(dtype)
        W = rng.standard_normal((21, 2 * nr)).astype(dtype)
        C = np.full((M, 2 * nr), 5.0, dtype)
        tiles.product(A, tiles.panels(W), C, True)
        want = 5.0 + A.astype(np.float64) @ W.astype(np.float64)
        tol = 1e-5 if dtype == np.float32 else 1e-13
        assert np.abs(C - want).max() <= tol * np.abs(want).max(), (dtype, M)
print("ok")
"""
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
