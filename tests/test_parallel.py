"""rnnlab.fast.parallel: batches split over threads give the results of one thread.

The compiled loops split a batch by rows only inside a session (every layer's forward and
backward opens one); the large products split the rows of their result. Rows never interact,
so every split must reproduce the unsplit float64 result to 1e-12, with masks, in reverse,
and for every cell; and the session must hand NumPy's BLAS back as it found it.
"""

import contextlib
import functools
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import warnings

import numpy as np
import pytest
from helpers import CELLS, make, oracle

oracle("numba")
oracle("scipy")

from test_fast import (  # noqa: E402
    KIND_IDS,
    assert_close,
    problem,
    run_backward,
    run_forward,
    tape_arrays,
)

from rnnlab import _blaschoice, _mkl, fast, settings  # noqa: E402
from rnnlab.fast import parallel  # noqa: E402

SPLIT_SHAPE = (7, 13, 21)  # 13 rows: parts of 6 and 7 on two threads, 4, 4 and 5 on three


def split_problem(kind, reverse, masked, seed, shape):
    """test_fast.problem at another shape, with a (T, B) mask of full rows, right-padded rows
    and rows with holes when `masked`."""
    p = problem(kind, reverse, False, seed=seed, shape=shape)
    if masked:
        T, B, _ = shape
        rng = np.random.default_rng(seed)
        mask = rng.random((T, B)) < 0.7  # holes
        mask[:, 0::3] = True  # full rows
        mask[:, 1::3] = np.arange(T)[:, None] < rng.integers(1, T + 1, size=mask[:, 1::3].shape[1])
        p["mask"] = mask
    return p


def in_session(threads, fn):
    with settings.override(num_threads=threads), parallel.session():
        assert parallel.in_session() == (threads > 1)
        return fn()


def test_a_session_splits_and_outside_nothing_is_split(setenv):
    setenv(RNNLAB_NUM_THREADS="3")
    assert parallel.row_parts(13, 4) == [(0, 13)]  # not in a session
    with parallel.session():
        assert parallel.row_parts(13, 4) == [(0, 4), (4, 8), (8, 13)]
        assert parallel.row_parts(13, 5) == [(0, 6), (6, 13)]  # at least 5 rows a part
        assert parallel.row_parts(7, 4) == [(0, 7)]
    setenv(RNNLAB_NUM_THREADS="1")
    with parallel.session():
        assert parallel.row_parts(13, 4) == [(0, 13)]


@pytest.mark.parametrize("masked", [False, True], ids=["full", "masked"])
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("kind", KIND_IDS)
def test_split_loops_match_one_thread(kind, reverse, masked, monkeypatch, split_calls):
    p = split_problem(kind, reverse, masked, seed=3, shape=SPLIT_SHAPE)
    want_tape = in_session(1, lambda: run_forward(kind, p, "fast"))
    want = in_session(1, lambda: run_backward(kind, p, want_tape, "fast"))
    for threads in (2, 3):
        tape = in_session(threads, lambda: run_forward(kind, p, "fast"))
        for name, w in tape_arrays(want_tape).items():
            assert_close(tape_arrays(tape)[name], w, 1e-12, f"{threads} threads: {name}")
        got = in_session(threads, lambda t=tape: run_backward(kind, p, t, "fast"))
        for name in want:
            assert_close(got[name], want[name], 1e-12, f"{threads} threads: {name}")
    assert max(split_calls) == 3  # the loops did run split


def test_session_restores_the_blas_thread_count(setenv):
    if parallel._CONTROL is None:
        pytest.skip("this NumPy has no bundled OpenBLAS whose thread count rnnlab can set")
    get, set_ = parallel._CONTROL
    setenv(RNNLAB_NUM_THREADS="2")
    before = get()
    try:
        set_(2)
        with parallel.session():
            assert get() == 1
            with parallel.session():  # nested: still one, and the outer one restores
                assert get() == 1
            assert get() == 1
        assert get() == 2
        setenv(RNNLAB_NUM_THREADS="1")
        with parallel.session():  # not enabled: NumPy keeps its threads
            assert get() == 2 and not parallel.in_session()
    finally:
        set_(before)


def test_blas_thread_control_is_found_for_numpy_wheels():
    if not _blaschoice.numpy_blas_files():
        pytest.skip("this NumPy has no bundled OpenBLAS (conda, Accelerate, a distribution)")
    assert parallel._CONTROL is not None


@pytest.mark.parametrize("threads", [2, 3])
def test_split_products_match_numpy(threads, setenv):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((3000, 200))
    b = rng.standard_normal((200, 90))
    c = rng.standard_normal((3000, 150))
    setenv(RNNLAB_NUM_THREADS=str(threads))
    with parallel.session():
        assert len(parallel._product_parts(3000, 90, 200)) == threads  # big enough to split
        assert len(parallel._product_parts(200, 150, 3000)) == threads
        assert len(parallel._product_parts(30, 9, 20)) == 1  # too small to be worth a thread
        got_nn = parallel.matmul(a, b)
        got_tn = parallel.matmul(a.T, c)  # (200, 150), rows of aᵀ split
        got_view = parallel.matmul(a, c.T[:, :200].T)  # a transposed view as the right factor
    np.testing.assert_allclose(got_nn, a @ b, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got_tn, a.T @ c, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got_view, a @ c[:200], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("split", ["summed rows", "result rows"])
@pytest.mark.parametrize("threads", [2, 3])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_inner_products_and_sums_in_one_hand_over(threads, dtype, split, split_calls, monkeypatch,
                                                  setenv):
    """parallel.inner_products: dW_ih, dW_hh and the bias gradients of a direction in one call
    to the threads; small results split the T·B rows they sum over into contiguous blocks
    (the blocks' results added), large ones split their own rows. Products may be written
    into arrays given for them (the GRU's blocks of dW_hh)."""
    if split == "result rows":
        monkeypatch.setattr(parallel, "MAX_PARTIAL_ELEMENTS", 0)
    rng = np.random.default_rng(1)
    dA = rng.standard_normal((500, 40)).astype(dtype)
    X, Hs = rng.standard_normal((500, 7)).astype(dtype), rng.standard_normal((500, 9)).astype(dtype)
    monkeypatch.setattr(parallel, "_MIN_ROWS_MATMUL", 1)
    monkeypatch.setattr(parallel, "MIN_FLOPS", 1)
    setenv(RNNLAB_NUM_THREADS=str(threads))
    whole = np.full((50, 9), np.nan, dtype)  # dW_h and dW_n written into its row blocks
    with parallel.session():
        (dW_x, dW_h, dW_n), (db, db_n) = parallel.inner_products(
            [(dA, X), (dA, Hs), (dA[:, 10:20], Hs)], [dA, dA[:, 30:]],
            [None, whole[:40], whole[40:]],
        )
    assert split_calls == [threads]
    assert dW_h.base is whole and dW_n.base is whole and not np.isnan(whole).any()
    tol = 1e-12 if dtype == np.float64 else 1e-4  # float32 sums of 500 terms of order 1
    np.testing.assert_allclose(dW_x, dA.T @ X, rtol=tol, atol=tol)
    np.testing.assert_allclose(dW_h, dA.T @ Hs, rtol=tol, atol=tol)
    np.testing.assert_allclose(dW_n, dA[:, 10:20].T @ Hs, rtol=tol, atol=tol)
    np.testing.assert_allclose(db, dA.sum(axis=0), rtol=tol, atol=tol)
    np.testing.assert_allclose(db_n, dA[:, 30:].sum(axis=0), rtol=tol, atol=tol)
    assert all(a.dtype == dtype for a in (dW_x, dW_h, dW_n, db, db_n))
    with parallel.session():  # too small to split: one part, the same results
        monkeypatch.setattr(parallel, "MIN_FLOPS", 10**12)
        (one,), (one_sum,) = parallel.inner_products([(dA, X)], [dA])
    np.testing.assert_allclose(one, dA.T @ X, rtol=tol, atol=tol)
    np.testing.assert_allclose(one_sum, dA.sum(axis=0), rtol=tol, atol=tol)  # MKL's or NumPy's


@pytest.mark.parametrize("threads", [2, 3])
def test_the_summed_rows_split_bounds_the_partial_results(threads, monkeypatch, setenv):
    """The summed rows are split while the other threads' partial results hold at most
    MAX_PARTIAL_ELEMENTS values: 640 values of results fit 700 on two threads (one partial
    copy), not on three (two copies: each thread takes a block of the results' rows)."""
    monkeypatch.setattr(parallel, "MAX_PARTIAL_ELEMENTS", 700)
    monkeypatch.setattr(parallel, "_MIN_ROWS_MATMUL", 1)
    monkeypatch.setattr(parallel, "MIN_FLOPS", 1)
    setenv(RNNLAB_NUM_THREADS=str(threads))
    given = []
    run_parts = parallel.run_parts
    monkeypatch.setattr(parallel, "run_parts",
                        lambda fn, parts: given.append(list(parts)) or run_parts(fn, parts))
    rng = np.random.default_rng(2)
    dA = rng.standard_normal((500, 40))
    X, Hs = rng.standard_normal((500, 7)), rng.standard_normal((500, 9))
    with parallel.session():
        (dW_x, dW_h), _ = parallel.inner_products([(dA, X), (dA, Hs)], [dA])
    by_results = [(p, p + 1) for p in range(threads)]
    assert (given == [by_results]) == (threads == 3)
    np.testing.assert_allclose(dW_x, dA.T @ X, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dW_h, dA.T @ Hs, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("split", ["summed rows", "result rows"])
@pytest.mark.parametrize("chunk", [64, 125], ids=["chunks of 64 rows", "of 125"])
@pytest.mark.parametrize("threads", [2, 3])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_products_sharing_their_left_factor_side_by_side(threads, dtype, chunk, split,
                                                         monkeypatch, setenv):
    """Narrow right factors of one left factor (an LSTM's X and h_{t-1} for dA) multiplied
    side by side, chunk by chunk of the summed rows (the last chunk shorter), with the rows
    of the results or the summed rows split over the threads: the products of each pair
    alone; wide ones, or pairs with different left factors, each on their own."""
    mkl = _loaded_mkl()
    if split == "result rows":
        monkeypatch.setattr(parallel, "MAX_PARTIAL_ELEMENTS", 0)
    monkeypatch.setattr(parallel, "_MIN_ROWS_MATMUL", 1)
    monkeypatch.setattr(parallel, "MIN_FLOPS", 1)
    monkeypatch.setattr(parallel, "SIDE_BY_SIDE_ROWS", chunk)
    monkeypatch.setattr(parallel, "NARROW", 8)
    monkeypatch.setattr(parallel, "WIDE", 40)
    setenv(RNNLAB_NUM_THREADS=str(threads))
    together = []
    side_by_side = parallel._side_by_side
    monkeypatch.setattr(
        parallel,
        "_side_by_side",
        lambda g, xs, outs: together.append([x.shape[1] for x in xs]) or side_by_side(g, xs, outs),
    )
    rng = np.random.default_rng(3)
    dA = rng.standard_normal((500, 40)).astype(dtype)
    X, Hs = rng.standard_normal((500, 7)).astype(dtype), rng.standard_normal((500, 9)).astype(dtype)
    wide = rng.standard_normal((500, 12)).astype(dtype)
    with parallel.session():
        (dW_x, dW_h, dW_w, dW_n), _ = parallel.inner_products(
            [(dA, X), (dA, Hs), (dA, wide), (dA[:, 10:20], Hs)], [dA]
        )
    assert together == [[7, 9, 12]] * threads  # one group per part: X narrow, so all of dA's
    tol = 1e-12 if dtype == np.float64 else 1e-4
    for got, want in ((dW_x, dA.T @ X), (dW_h, dA.T @ Hs), (dW_w, dA.T @ wide),
                      (dW_n, dA[:, 10:20].T @ Hs)):  # fmt: skip
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol)
        assert got.flags.c_contiguous and got.dtype == dtype
    together.clear()
    with parallel.session():  # another view of the same block is the same left factor
        (dW_x, dW_h), _ = parallel.inner_products([(dA, X), (dA[:, 0:40], Hs)], [dA])
    assert together == [[7, 9]] * threads  # (as an LSTM's BPTT passes dA_x and its columns)
    np.testing.assert_allclose(dW_h, dA.T @ Hs, rtol=tol, atol=tol)
    backwards = dA[::-1]  # a layout MKL's gemm refuses: NumPy's product instead
    outs = [np.empty((40, 7), dtype), np.empty((40, 9), dtype)]
    side_by_side(backwards, [X, Hs], outs)
    np.testing.assert_allclose(outs[1], backwards.T @ Hs, rtol=tol, atol=tol)
    together.clear()
    monkeypatch.setattr(parallel, "NARROW", 7)  # none narrower: each product alone
    with parallel.session():
        parallel.inner_products([(dA, X), (dA, Hs)], [dA])
    monkeypatch.setattr(parallel, "NARROW", 8)
    monkeypatch.setattr(parallel, "WIDE", 41)  # a left factor too narrow: alone too
    with parallel.session():
        parallel.inner_products([(dA, X), (dA, Hs)], [dA])
    monkeypatch.setattr(parallel, "WIDE", 40)
    monkeypatch.setattr(parallel, "SIDE_BY_SIDE_ROWS", 126)  # under 4 chunks: alone too
    with parallel.session():
        parallel.inner_products([(dA, X), (dA, Hs)], [dA])
    assert together == []
    assert mkl is not None


@pytest.mark.parametrize("split", ["summed rows", "result rows"])
@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_batch_first_input_side_by_side(threads, dtype, split, monkeypatch, setenv):
    """A batch-first input (StepRows: an LSTM's X where the user's array lies) goes side by
    side with h_{t-1} too, copied into its columns step by step: the chunks are whole steps
    (12 rows asked, 10 taken with B = 5; T = 11 leaves a shorter last chunk), and the
    summed rows split at whole steps. The products equal those of a time-major copy, also
    on one thread (outside a session: each product alone, as before)."""
    _loaded_mkl()
    if split == "result rows":
        monkeypatch.setattr(parallel, "MAX_PARTIAL_ELEMENTS", 0)
    monkeypatch.setattr(parallel, "_MIN_ROWS_MATMUL", 1)
    monkeypatch.setattr(parallel, "MIN_FLOPS", 1)
    monkeypatch.setattr(parallel, "SIDE_BY_SIDE_ROWS", 12)
    monkeypatch.setattr(parallel, "NARROW", 8)
    monkeypatch.setattr(parallel, "WIDE", 40)
    setenv(RNNLAB_NUM_THREADS=str(threads))
    chunks = []
    side_by_side = parallel._side_by_side

    def recording(g, xs, outs):
        chunks.append((g.shape[0], parallel._chunk_rows(xs), [type(x).__name__ for x in xs]))
        side_by_side(g, xs, outs)

    monkeypatch.setattr(parallel, "_side_by_side", recording)
    rng = np.random.default_rng(5)
    T, B, I, H, G = 11, 5, 7, 9, 40
    x = rng.standard_normal((B, T, I)).astype(dtype)
    X = x.transpose(1, 0, 2)  # time-major view: not C-contiguous
    Hs = rng.standard_normal((T * B, H)).astype(dtype)
    dA = rng.standard_normal((T * B, G)).astype(dtype)
    with parallel.session():
        (dW_x, dW_h), (db,) = parallel.inner_products([(dA, parallel.StepRows(X)), (dA, Hs)], [dA])
    assert all(c[1] == 10 and c[2] == ["StepRows", "ndarray"] for c in chunks)
    assert bool(chunks) == (threads > 1)  # one thread: no session, each product alone
    if split == "summed rows" and threads > 1:  # each thread its own whole steps
        assert sum(c[0] for c in chunks) == T * B and all(c[0] % B == 0 for c in chunks)
    rows = np.ascontiguousarray(X).reshape(T * B, I).astype(np.float64)
    tol = 1e-12 if dtype == np.float64 else 1e-4
    np.testing.assert_allclose(dW_x, dA.T.astype(np.float64) @ rows, rtol=tol, atol=tol)
    np.testing.assert_allclose(dW_h, dA.T @ Hs, rtol=tol, atol=tol)
    np.testing.assert_allclose(db, dA.sum(axis=0), rtol=tol, atol=tol)
    assert dW_x.dtype == dW_h.dtype == dtype and dW_x.flags.c_contiguous


@pytest.mark.parametrize("how", ["rows", "directions"])
@pytest.mark.parametrize("name, ctor, kw", CELLS, ids=[c[0] for c in CELLS])
def test_layers_split_or_not_agree(name, ctor, kw, how, monkeypatch, split_calls, setenv):
    """A whole bidirectional two-layer step: outputs, final states and every gradient, 1 vs 2
    threads, with each direction split by rows or the two directions at once."""
    at_once: list[bool] = []
    concurrently = parallel.concurrently

    def recording(fns, flops, step_bytes=0):
        ran = []
        out = concurrently([lambda f=f: ran.append(parallel.row_parts(12, 1)) or f() for f in fns],
                           flops, step_bytes)  # fmt: skip
        at_once.append(len(ran) == 2 and all(parts == [(0, 12)] for parts in ran))
        return out

    monkeypatch.setattr(parallel, "concurrently", recording)
    if how == "directions":
        monkeypatch.setattr(parallel, "MIN_CONCURRENT_FLOPS", 0)
    results = {}
    for threads in ("1", "2"):
        setenv(RNNLAB_NUM_THREADS=threads)
        at_once.clear()
        rng = np.random.default_rng(7)
        layer = make(ctor, kw, 5, 9, L=2, bi=True, rng=rng)
        x = rng.standard_normal((12, 6, 5))
        f = layer.forward(x, lengths=np.array([6, 3, 5, 6, 1, 4, 6, 2, 6, 6, 5, 6]))
        b = layer.backward(f, rng.standard_normal(f.output.shape))
        results[threads] = {"output": f.output, "dx": b.input, **b.params}
        results[threads].update(dict(enumerate(np.atleast_1d(f.state))))
    for key, want in results["1"].items():
        assert_close(results["2"][key], want, 1e-12, key)
    # 2 layers x (forward, backward); inside a job nothing is split
    assert at_once == [how == "directions"] * 4
    assert max(split_calls) == 2  # loops and products, or the directions, did run split


def test_concurrent_jobs_pass_their_results_and_errors_back(setenv):
    setenv(RNNLAB_NUM_THREADS="2")
    with parallel.session():
        assert parallel.concurrently([lambda: 1, lambda: 2], flops=1e12) == [1, 2]

        def fails():
            raise ValueError("job 2 failed")

        with pytest.raises(ValueError, match="job 2 failed"):
            parallel.concurrently([lambda: 1, fails], flops=1e12)
        assert parallel.row_parts(12, 1) == [(0, 6), (6, 12)]  # the flag did not stay behind


def test_input_grad_false_skips_only_the_input_gradient():
    _, ctor, kw = CELLS[2]  # the LSTM
    rng = np.random.default_rng(1)
    layer = make(ctor, kw, 4, 6, L=2, bi=True, rng=rng)
    x = rng.standard_normal((3, 5, 4))
    f = layer.forward(x)
    d = rng.standard_normal(f.output.shape)
    full = layer.backward(f, d, retain_tape=True)
    lean = layer.backward(f, d, input_grad=False)
    assert full.input is not None and lean.input is None
    for key, want in full.params.items():
        np.testing.assert_array_equal(lean.params[key], want)


def test_bad_thread_count_is_refused(monkeypatch):
    monkeypatch.setenv("RNNLAB_NUM_THREADS", "two")
    with pytest.raises(ValueError, match=r"`RNNLAB_NUM_THREADS` must be a positive integer"):
        settings.reload()
    with pytest.raises(ValueError, match=r"`RNNLAB_NUM_THREADS` must be a positive integer"):
        parallel.num_threads()
    monkeypatch.setenv("RNNLAB_NUM_THREADS", "0")
    with pytest.raises(ValueError, match=r"got '0'"):
        settings.reload()


def test_freed_memory_is_kept_on_glibc():
    import platform

    if platform.libc_ver()[0] != "glibc" or settings.current().malloc == "system":
        pytest.skip("glibc only")
    assert fast.available() and fast.keep_freed_memory()


CHILD = """
import numpy as np
from rnnlab import fast
from rnnlab.fast import parallel
fast.MIN_LOOP_FLOPS = 0  # split these tiny loops too
seen = []
run_parts = parallel.run_parts
parallel.run_parts = lambda fn, parts: seen.append(len(parts)) or run_parts(fn, parts)
from rnnlab.fast import blas
from test_fast import KIND_IDS, assert_close, run_backward, run_forward, tape_arrays
from test_parallel import split_problem
print(blas.NAME)
for kind in KIND_IDS:
    for reverse in (False, True):
        p = split_problem(kind, reverse, True, seed=4, shape=(5, 12, 17))
        want_tape = run_forward(kind, p, "step")
        want = run_backward(kind, p, want_tape, "step")
        with parallel.session():
            tape = run_forward(kind, p, "fast")
            got = run_backward(kind, p, tape, "fast")
        for name, w in tape_arrays(want_tape).items():
            assert_close(tape_arrays(tape)[name], w, 1e-12, kind + " " + name)
        for name in want:
            assert_close(got[name], want[name], 1e-12, kind + " " + name)
assert max(seen) == 2, seen
print("ok")
"""


@pytest.mark.parametrize("choice", ["numpy", "mkl"])
def test_either_blas_gives_the_step_loops_results(choice):
    """The kernels' products on NumPy's OpenBLAS and, where the `mkl` package is installed,
    on MKL (chosen at import, hence a fresh process), split over two threads. (Which one
    RNNLAB_BLAS=auto takes is measured per host: tests/test_blaschoice.py.)"""
    env = {**os.environ, "RNNLAB_BLAS": choice, "RNNLAB_NUM_THREADS": "2"}
    env["PYTHONPATH"] = os.pathsep.join([os.path.dirname(__file__), env.get("PYTHONPATH", "")])
    run = subprocess.run(
        [sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0, run.stderr[-3000:]
    name, ok = run.stdout.split("\n")[:2]
    assert ok == "ok"
    has_mkl = bool(_blaschoice.library_files())
    if choice == "numpy" or not has_mkl:
        assert name == "NumPy's OpenBLAS"
    else:
        assert name.startswith("MKL (")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_mkl_gemm_handles_views_and_refuses_what_it_cannot(dtype):
    mkl = _loaded_mkl()
    rng = np.random.default_rng(2)
    a = rng.standard_normal((40, 30)).astype(dtype)
    b = rng.standard_normal((30, 20)).astype(dtype)
    c = rng.standard_normal((40, 20)).astype(dtype)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    cases = {
        "row-major": (a, b),
        "transposed left": (np.ascontiguousarray(a.T).T, b),
        "transposed right": (a, np.ascontiguousarray(b.T).T),
        "row slices": (a[5:17], b),
        "column slice, transposed (a weight-gradient part)": (c[:, 3:11].T, a[:, :7]),
    }
    for what, (x, y) in cases.items():
        out = np.full((x.shape[0], y.shape[1]), np.nan, dtype)
        assert mkl.gemm(x, y, out), what
        np.testing.assert_allclose(out, x @ y, rtol=tol, atol=tol, err_msg=what)
    out = np.empty((40, 20), dtype)
    assert not mkl.gemm(a[:, ::2], b[::2], out)  # strided both ways: NumPy does it instead
    assert not mkl.gemm(a.astype(np.float64 if dtype == np.float32 else np.float32), b, out)


def _loaded_mkl():
    mkl = _mkl.load()
    if mkl is None:
        if _blaschoice.library_files() and _mkl.wanted():
            pytest.fail("the mkl package is installed but rnnlab did not load it")
        pytest.skip("the mkl extra is not installed")
    return mkl


def test_every_part_calls_mkl_on_one_thread_and_the_caller_gets_its_setting_back(setenv):
    mkl = _loaded_mkl()
    outside = mkl.max_threads()
    seen: list[int] = []
    setenv(RNNLAB_NUM_THREADS="2")
    with parallel.session():
        parallel.run_parts(lambda a, b: seen.append(mkl.max_threads()), [(0, 1), (1, 2)])
    assert seen == [1, 1]
    assert mkl.max_threads() == outside
    if len(os.sched_getaffinity(0)) > 1 and mkl.layer == _mkl.GNU:
        assert outside > 1  # so the line above tested a restore


TORCH_AFTER_RNNLAB = """
import numpy as np
from rnnlab import Recurrent
from rnnlab.cells import LSTMCell
layer = Recurrent(LSTMCell(), 8, 16, dtype=np.float32, rng=np.random.default_rng(0))
layer.forward(np.zeros((64, 20, 8), np.float32))  # loads MKL and runs the split loops
import torch
print(torch.get_num_threads())
"""


def test_pytorch_imported_after_rnnlab_keeps_its_threads():
    """rnnlab's MKL puts its symbols in the process's global scope, and a PyTorch imported
    afterwards sizes its thread pool by them: it must see MKL's default thread count, not the
    one thread of rnnlab's calls (it got 1 while rnnlab used MKL's sequential layer)."""
    torch = oracle("torch")
    mkl = _loaded_mkl()
    if mkl.layer != _mkl.GNU:
        pytest.skip("no GNU OpenMP runtime here: MKL runs sequential")
    env = {**os.environ, "RNNLAB_NUM_THREADS": "2"}
    env.pop("OMP_NUM_THREADS", None)
    alone = subprocess.run(
        [sys.executable, "-c", "import torch; print(torch.get_num_threads())"],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    after = subprocess.run(
        [sys.executable, "-c", TORCH_AFTER_RNNLAB], env=env, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert alone.returncode == 0 and after.returncode == 0, alone.stderr + after.stderr
    assert int(after.stdout.split()[-1]) == int(alone.stdout.split()[-1]), torch.__version__


@pytest.mark.parametrize("name, ctor, kw", CELLS, ids=[c[0] for c in CELLS])
def test_inference_without_a_tape_gives_the_same_outputs(name, ctor, kw, engine_path):
    """grad=False overwrites a one-step tape: outputs and final states are unchanged through
    both loops, with padding and in both directions (bit for bit, but for the Elman and LSTM
    layers that rnnlab.fast.projecting_loop serves with one product per step: float rounding);
    backward refuses it."""
    rng = np.random.default_rng(5)
    layer = make(ctor, kw, 4, 7, L=2, bi=True, rng=rng)
    x = rng.standard_normal((9, 6, 4))
    lengths = np.array([6, 2, 5, 6, 1, 3, 6, 6, 4])
    full = layer.forward(x, lengths=lengths)
    lean = layer.forward(x, lengths=lengths, grad=False)
    fused = fast.available() and fast.projects_each_step(layer.cell, 14, 7)
    same = np.testing.assert_array_equal
    if fused:
        same = functools.partial(np.testing.assert_allclose, rtol=1e-13, atol=1e-15)
    same(lean.output, full.output)
    for got, want in zip(np.atleast_1d(lean.state), np.atleast_1d(full.state), strict=True):
        same(got, want)
    with pytest.raises(ValueError, match=r"`f` must be .* kept its tape; got one computed with"):
        layer.backward(lean, np.ones_like(lean.output))


@pytest.mark.parametrize("cell", ["lstm", "rnn"])
def test_inference_reads_a_batch_first_input_where_it_lies(cell, monkeypatch):
    """The fused inference loop takes x_t's rows from the batch-first array itself (no
    time-major copy), with the same bits as from a time-major copy, both directions; an
    LSTM's loop keeps two rows of cell states, not T + 1."""
    from rnnlab.cells import ElmanCell, LSTMCell
    from rnnlab.layers import Recurrent

    seen, cell_states = [], []

    def loop(cell, X, W_ih, W_hh, b_ih, b_hh, q, hs, cs, *rest, **around):
        seen.append(X)
        cell_states.append(None if cs is None else cs.shape)
        return projecting_loop(cell, X, W_ih, W_hh, b_ih, b_hh, q, hs, cs, *rest, **around)

    projecting_loop = fast.projecting_loop
    monkeypatch.setattr(fast, "projecting_loop", loop)
    monkeypatch.setattr(fast, "projects_each_step", lambda *args: True)  # any size
    rng = np.random.default_rng(8)
    make = {"lstm": LSTMCell, "rnn": ElmanCell}[cell]
    first = Recurrent(make(), 5, 6, 2, bidirectional=True, dtype=np.float32, rng=rng)
    second = Recurrent(make(), 5, 6, 2, bidirectional=True, dtype=np.float32, batch_first=False)
    for name, v in first.params.items():
        second.params[name][...] = v
    x = rng.standard_normal((4, 9, 5), dtype=np.float32)
    lengths = np.array([9, 3, 7, 1])
    got = first.forward(x, lengths=lengths, grad=False)
    assert seen and seen[0].base is not None and not seen[0].flags.c_contiguous
    assert np.shares_memory(seen[0], x)
    assert cell_states == ([(2, 4, 6)] * 4 if cell == "lstm" else [None] * 4)
    want = second.forward(np.ascontiguousarray(x.transpose(1, 0, 2)), lengths=lengths, grad=False)
    np.testing.assert_array_equal(got.output, want.output.transpose(1, 0, 2))
    for g, w in zip(np.atleast_1d(got.state), np.atleast_1d(want.state), strict=True):
        np.testing.assert_array_equal(g, w)


def test_sequential_passes_grad_false_to_its_recurrent_layers():
    from rnnlab.layers import GRU
    from rnnlab.modules import Linear, Sequential

    rng = np.random.default_rng(6)
    model = Sequential(GRU(3, 5, dtype=np.float64, rng=rng), Linear(5, 2, dtype=np.float64))
    x = rng.standard_normal((4, 7, 3))
    full, lean = model.forward(x), model.forward(x, grad=False)
    np.testing.assert_array_equal(lean.output, full.output)
    assert lean.cache[0].cache["tapes"] is None
    with pytest.raises(ValueError, match=r"grad=False"):
        model.backward(lean, np.ones_like(lean.output))
    b = model.backward(full, np.ones_like(full.output), input_grad=False)
    assert b.input is None and set(b.params) == set(model.params)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_gets_its_own_worker_threads(setenv, split_calls):
    """multiprocessing's default start method on Linux forks: the child must not hand work to
    the parent's worker threads, which it does not have."""
    setenv(RNNLAB_NUM_THREADS="2")
    _, ctor, kw = CELLS[2]
    layer = make(ctor, kw, 3, 5)
    x = np.random.default_rng(0).standard_normal((8, 4, 3))
    want = layer.forward(x).output  # the parent's pool now exists
    assert max(split_calls) == 2
    pid = os.fork()
    if pid == 0:  # the child: exit 0 only if the split forward finishes and agrees
        code = 1
        try:
            code = 0 if np.array_equal(layer.forward(x).output, want) else 3
        finally:
            os._exit(code)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            assert os.waitstatus_to_exitcode(status) == 0
            return
        time.sleep(0.05)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    pytest.fail("the forked child hung: it handed work to threads it does not have")


def test_linear_first_in_a_sequential_skips_only_the_input_gradient():
    from rnnlab.layers import LSTM
    from rnnlab.modules import Linear, Sequential

    rng = np.random.default_rng(8)
    model = Sequential(Linear(3, 4, dtype=np.float64, rng=rng), LSTM(4, 5, dtype=np.float64))
    x = rng.standard_normal((2, 6, 3))
    f = model.forward(x)
    d = rng.standard_normal(f.output.shape)
    full, lean = model.backward(f, d), model.backward(model.forward(x), d, input_grad=False)
    assert full.input is not None and lean.input is None
    for key, want in full.params.items():
        np.testing.assert_array_equal(lean.params[key], want)


@pytest.mark.parametrize("kind", ["tanh", "relu", "lstm", "gru", "gru-orig"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("masked", [False, True], ids=["full", "masked"])
def test_inference_projecting_each_step_matches_the_numpy_loop(kind, dtype, reverse, masked):
    """fast.projecting_loop (x_t W_ihᵀ, then the cell's products, at every step) against the NumPy
    step loop with its hoisted projection: the same states up to float rounding, split or
    not."""
    from rnnlab import recurrence
    from rnnlab.cells import ElmanCell, GRUCell, LSTMCell

    if not fast.available():
        pytest.skip("needs the compiled kernels")
    cell = {
        "lstm": LSTMCell(),
        "gru": GRUCell(),
        "gru-orig": GRUCell(reset_after=False),
    }.get(kind) or ElmanCell(kind)
    rng = np.random.default_rng(7)
    T, B, I, H = 6, 12, 5, 4
    G = cell.gates * H
    p = recurrence.Params(
        *(rng.standard_normal(s).astype(dtype) * 0.5 for s in ((G, I), (G, H), (G,), (G,)))
    )
    X = rng.standard_normal((T, B, I)).astype(dtype)
    mask = (rng.random((T, B)) < 0.7) if masked else None
    h0 = rng.standard_normal((B, H)).astype(dtype)
    c0 = rng.standard_normal((B, H)).astype(dtype) if cell.has_c else None
    want_hs, want_cs = recurrence._states(T, B, H, dtype, cell.has_c, reverse, h0, c0)
    tape = np.empty((1, B, cell.tape * H), dtype)
    saved = recurrence._fast
    try:
        recurrence._fast = lambda: None  # the NumPy step loop
        recurrence._loop_forward(cell, X, p, p.W_hh, want_hs, want_cs, tape, mask, reverse)
    finally:
        recurrence._fast = saved
    for threads in (1, 3):
        hs, cs = recurrence._states(T, B, H, dtype, cell.has_c, reverse, h0, c0)
        parts: list[int] = []

        def recording(fn, ps, parts=parts, run_parts=parallel.run_parts):
            parts.append(len(ps))
            return run_parts(fn, ps)

        with pytest.MonkeyPatch.context() as mp, settings.override(num_threads=threads):
            mp.setattr(fast, "MIN_LOOP_FLOPS", 0)
            mp.setattr(parallel, "run_parts", recording)
            with parallel.session():
                fast.projecting_loop(cell, X, p.W_ih, p.W_hh, p.b_ih, p.b_hh, None, hs, cs,
                                     tape, mask, reverse)  # fmt: skip
        assert parts == [threads if threads > 1 else 1]
        tol = 1e-12 if dtype == np.float64 else 2e-6
        np.testing.assert_allclose(hs, want_hs, rtol=tol, atol=tol)
        if cs is not None:
            np.testing.assert_allclose(cs, want_cs, rtol=tol, atol=tol)


def test_every_part_runs_under_the_callers_numpy_error_handling(setenv):
    """np.errstate is per thread: an overflow on a worker is ignored or raised as the caller
    asked, not warned about by the worker's default handling."""
    setenv(RNNLAB_NUM_THREADS="2")
    big = np.float32(3e38)

    def overflow(a, b):
        return big * np.float32(10)

    with parallel.session():
        with np.errstate(all="ignore"):  # the suite turns warnings into errors: none may come
            parallel.run_parts(overflow, [(0, 1), (1, 2)])
            parallel.concurrently([lambda: overflow(0, 1)] * 2, flops=10**9)
        seen = []

        def record(a, b):
            try:
                overflow(a, b)
            except FloatingPointError:
                seen.append(a)

        with np.errstate(over="raise"):
            parallel.run_parts(record, [(0, 1), (1, 2)])
        assert sorted(seen) == [0, 1]


def test_large_arrays_reuse_the_memory_of_freed_ones(monkeypatch, setenv):
    """parallel.empty: an array above POOL_MIN_BYTES takes the block of one that was freed
    (the same memory, not freshly mapped) once it and every view of it are gone; smaller
    ones, and everything under RNNLAB_MALLOC=system, are plain np.empty."""
    setenv(RNNLAB_MALLOC=None)
    monkeypatch.setattr(parallel, "POOL_MIN_BYTES", 4096)
    monkeypatch.setattr(parallel, "_free_blocks", [])
    monkeypatch.setattr(parallel, "_free_bytes", 0)

    def address(a):
        return a.__array_interface__["data"][0]

    a = parallel.empty((10, 30, 8), np.float32)
    assert a.shape == (10, 30, 8) and a.dtype == np.float32 and a.flags.c_contiguous
    assert a.flags.writeable
    where = address(a)
    view = np.swapaxes(a, 0, 1)[2:]
    del a
    assert parallel._free_blocks == []  # a view still uses the memory
    b = parallel.empty((10, 30, 8), np.float32)
    assert address(b) != where
    del view
    assert [blk.size for blk in parallel._free_blocks] == [9600]
    c = parallel.empty((30, 79), np.float32)  # 9480 bytes: within a quarter of the block
    assert address(c) == where and parallel._free_blocks == []
    c[...] = 7.0
    assert float(c.sum()) == 7.0 * 30 * 79
    del b, c
    d = parallel.empty((2, 9600), np.float32)  # 4x larger: a new block, not the freed ones
    assert address(d) != where
    small = parallel.empty((10,), np.float64)
    assert small.base is None  # below the bound: NumPy's own
    monkeypatch.setattr(parallel, "POOL_MAX_FREE_BYTES", 0)
    del d
    assert [blk.size for blk in parallel._free_blocks] == [9600, 9600]  # the cap: d not kept
    setenv(RNNLAB_MALLOC="system")
    assert parallel.empty((10, 30, 8), np.float32).base is None


def _fresh_pool(monkeypatch, setenv):
    setenv(RNNLAB_MALLOC=None)
    monkeypatch.setattr(parallel, "POOL_MIN_BYTES", 4096)
    monkeypatch.setattr(parallel, "_free_blocks", [])
    monkeypatch.setattr(parallel, "_free_bytes", 0)
    monkeypatch.setattr(parallel, "_returned", queue.SimpleQueue())
    monkeypatch.setattr(parallel, "_blocks_lock", threading.Lock())  # (a failed test's own)


def test_a_block_freed_while_the_pool_is_locked_waits_instead_of_deadlocking(monkeypatch,
                                                                            setenv):  # fmt: skip
    """A garbage collection that an allocation inside the pool's lock starts may free a
    pooled array on the same thread: its finalizer must not wait for that lock (it hung a
    training loop that kept an exception in a local). The block joins the pool at the next
    take."""
    _fresh_pool(monkeypatch, setenv)
    block = np.empty(8192, np.uint8)
    done = threading.Event()

    def reentrant():
        with parallel._blocks_lock:  # as _take_block holds it when the collector runs
            parallel._give_back(block)
        done.set()

    worker = threading.Thread(target=reentrant, daemon=True)
    worker.start()
    worker.join(timeout=10)
    assert done.is_set(), "the finalizer waited for a lock its own thread holds"
    assert parallel._free_blocks == []  # not yet: it waits beside the pool
    assert parallel._take_block(8000) is block


def test_a_full_pool_makes_room_and_can_be_emptied(monkeypatch, setenv):
    """One larger batch must not leave the pool full of blocks no later array fits: the
    blocks that waited longest make room for the newly freed; release_pool empties it."""
    _fresh_pool(monkeypatch, setenv)
    parallel.release_pool()  # (every thread's scratch buffers from earlier tests)
    monkeypatch.setattr(parallel, "POOL_MAX_FREE_BYTES", 3 * 20000)
    big = [parallel.empty((5000,), np.float32) for _ in range(3)]  # 20000 bytes each
    del big
    assert [b.size for b in parallel._free_blocks] == [20000] * 3 and parallel._free_bytes == 60000
    small = parallel.empty((2000,), np.float32)  # 8000 bytes: no kept block fits
    where = small.__array_interface__["data"][0]
    del small
    assert [b.size for b in parallel._free_blocks] == [20000, 20000, 8000]  # the oldest made room
    again = parallel.empty((2000,), np.float32)
    assert again.__array_interface__["data"][0] == where  # the small batch's memory, reused
    del again
    parallel.scratch("test", (100,), np.float64)  # 800 bytes kept by this thread
    assert parallel.release_pool() == 48000 + 800
    assert parallel._free_blocks == [] and parallel._free_bytes == 0
    assert "buffers" not in parallel._local.__dict__


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork")
def test_a_child_forked_while_another_thread_holds_the_pool_can_allocate(monkeypatch, setenv):
    _fresh_pool(monkeypatch, setenv)
    held, release = threading.Event(), threading.Event()

    def holder():
        with parallel._blocks_lock:
            held.set()
            release.wait(10)

    thread = threading.Thread(target=holder, daemon=True)
    thread.start()
    held.wait(10)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # (fork with threads)
            pid = os.fork()
        if pid == 0:  # the child: a lock copied while held would hang here
            signal.alarm(10)
            ok = parallel.empty((3000,), np.float32).shape == (3000,)
            os._exit(0 if ok else 1)
        _, status = os.waitpid(pid, 0)
    finally:
        release.set()
        thread.join(10)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status


def test_a_blocks_bias_sum_is_taken_from_b_ihs_where_it_is_the_same_columns():
    """recurrence._columns_of finds column blocks of dA_x (the GRU's r, z blocks), whose
    bias gradients are then b_ih's instead of a second sum; anything else is summed."""
    from rnnlab import recurrence

    dA = np.zeros((50, 12))
    assert recurrence._columns_of(dA, dA) == slice(None)
    assert recurrence._columns_of(dA[:, :8], dA) == slice(0, 8)
    assert recurrence._columns_of(dA[:, 8:], dA) == slice(8, 12)
    assert recurrence._columns_of(dA[1:, :8], dA) is None  # other rows
    assert recurrence._columns_of(dA[:, ::2], dA) is None  # other strides
    assert recurrence._columns_of(dA[:, :8].copy(), dA) is None  # other memory
    assert recurrence._columns_of(np.zeros((50, 4)), dA) is None


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bias_sums_as_a_product_with_a_row_of_ones(dtype):
    """parallel._column_sums (MKL's ones-row product where installed): the column sums of a
    block of columns, near the float64 sum, into a slice of the output."""
    rng = np.random.default_rng(8)
    g = rng.standard_normal((3000, 40)).astype(dtype)
    out = np.full(50, np.nan, dtype)
    parallel._column_sums(g[:, 5:25], out[10:30])
    want = g[:, 5:25].astype(np.float64).sum(axis=0)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(out[10:30], want, rtol=tol, atol=tol * 60)
    assert np.isnan(out[:10]).all() and np.isnan(out[30:]).all()
    ints = np.ones((4, 3), np.int64)
    got = np.empty(3, np.int64)
    parallel._column_sums(ints, got)  # not a BLAS dtype: NumPy's sum
    assert got.tolist() == [4, 4, 4]


@pytest.mark.parametrize("split", ["summed rows", "result rows"])
@pytest.mark.parametrize("cblas", ["found", "none"])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_products_of_a_batch_first_input_read_where_it_lies(dtype, threads, cblas, split,
                                                            monkeypatch, split_calls, setenv):
    """time_major_matmul and inner_products (on StepRows) give X W and gᵀ X over the rows of
    a batch-first array's time-major view in time order, as on a time-major copy, a few steps
    at a time (here 2 steps of 5 rows: T = 11 is no multiple; the summed rows split at whole
    steps), with NumPy's own CBLAS adding into the result, or without it (MKL's or NumPy's
    matmul and a sum)."""
    if split == "result rows":
        monkeypatch.setattr(parallel, "MAX_PARTIAL_ELEMENTS", 0)
    if cblas == "none":
        monkeypatch.setattr(parallel, "_numpy_gemms", lambda: {})
        monkeypatch.setattr(_mkl, "load", lambda large=False: None)
    monkeypatch.setattr(parallel, "STEPS_COPIED_VALUES", 3 * 5 * 7)
    monkeypatch.setattr(parallel, "ROWS_COPIED_MIN", 1)
    rng = np.random.default_rng(4)
    T, B, I, N = 11, 5, 7, 9
    x = rng.standard_normal((B, T, I)).astype(dtype)
    X = x.transpose(1, 0, 2)  # time-major view: not C-contiguous
    W = rng.standard_normal((I, N)).astype(dtype)
    g = rng.standard_normal((T * B, N)).astype(dtype)
    out = np.full((T * B, N), np.nan, dtype)
    inner = np.full((N, I), np.nan, dtype)
    with settings.override(num_threads=threads), parallel.session():
        parallel.time_major_matmul(X, W, out)
        (inner,), _ = parallel.inner_products([(g, parallel.StepRows(X))], [])
    copy = np.ascontiguousarray(X).reshape(T * B, I).astype(np.float64)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(out, copy @ W, rtol=tol, atol=tol)
    np.testing.assert_allclose(inner, g.T.astype(np.float64) @ copy, rtol=tol, atol=tol)
    if threads == 2:
        assert 2 in split_calls  # the steps, then the summed (or result) rows, on both threads


@pytest.mark.parametrize("threads", ["1", "2 side by side"])
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_training_keeps_a_batch_first_input_where_it_lies(cell, threads, monkeypatch, setenv):
    """A training pass reads a batch-first input where it lies (at any size here): the tape
    holds a view of it, not a time-major copy, forward and backward give what a time-major
    copy of the same input gives (float64, to rounding: dW_ih sums its rows in other groups),
    and every gradient passes the float64 finite-difference check. On two threads with the
    thresholds lowered, an Elman or LSTM layer's dW_ih and dW_hh go side by side (x copied
    into the block step by step)."""
    from rnnlab import gradcheck, recurrence
    from rnnlab.layers import GRU, LSTM, RNN

    monkeypatch.setattr(recurrence, "IN_PLACE_MIN_VALUES", 0)
    monkeypatch.setattr(parallel, "ROWS_COPIED_MIN", 1)  # several groups of steps
    seen: list[list[str]] = []
    if threads != "1":
        _loaded_mkl()
        setenv(RNNLAB_NUM_THREADS="2")
        for name, value in (("MIN_FLOPS", 1), ("_MIN_ROWS_MATMUL", 1), ("SIDE_BY_SIDE_ROWS", 3),
                            ("WIDE", 1), ("NARROW", 100)):  # fmt: skip
            monkeypatch.setattr(parallel, name, value)
        side_by_side = parallel._side_by_side

        def recording(g, xs, outs):
            seen.append([type(x).__name__ for x in xs])
            side_by_side(g, xs, outs)

        monkeypatch.setattr(parallel, "_side_by_side", recording)

    ctor = {"rnn": RNN, "lstm": LSTM, "gru": GRU}[cell]
    rng = np.random.default_rng(5)
    first = ctor(4, 6, num_layers=2, bidirectional=True, dtype=np.float64, rng=rng)
    second = ctor(4, 6, num_layers=2, bidirectional=True, dtype=np.float64, batch_first=False)
    for name, v in first.params.items():
        second.params[name][...] = v
    x = rng.standard_normal((3, 8, 4))
    lengths = np.array([8, 5, 2])
    f = first.forward(x, lengths=lengths)
    assert np.shares_memory(f.cache["tapes"][0].X, x)
    assert not f.cache["tapes"][0].X.flags.c_contiguous
    xt = np.ascontiguousarray(x.transpose(1, 0, 2))
    w = second.forward(xt, lengths=lengths)
    np.testing.assert_allclose(f.output, w.output.transpose(1, 0, 2), rtol=1e-12, atol=1e-14)
    d = rng.standard_normal(f.output.shape)
    got = first.backward(f, d)
    want = second.backward(w, np.ascontiguousarray(d.transpose(1, 0, 2)))
    np.testing.assert_allclose(got.input, want.input.transpose(1, 0, 2), rtol=1e-12, atol=1e-14)
    for name in first.params:
        np.testing.assert_allclose(got.params[name], want.params[name], rtol=1e-10,
                                   atol=1e-12, err_msg=name)  # fmt: skip
    gradcheck(first, x, lengths=lengths).assert_ok()
    if threads != "1" and cell != "gru":  # the first layer: x where it lies beside h_{t-1}
        assert ["StepRows", "ndarray"] in seen  # (a GRU's dW_hh blocks have left factors
        # of their own: dA's r, z columns and its n block, each alone)


def test_only_large_batch_first_inputs_are_read_where_they_lie():
    """Below IN_PLACE_MIN_VALUES the time-major copy stays (cheap; reading a few steps at a
    time costs more than it); a C-contiguous time-major input needs no copy either way."""
    from rnnlab import recurrence

    def view(B, T, I):
        return np.zeros((B, T, I), np.float32).transpose(1, 0, 2)

    assert recurrence.reads_in_place(view(64, 100, 128))  # the bench's S3: 819,200 values
    assert not recurrence.reads_in_place(view(16, 200, 32))  # S1: 102,400
    assert not recurrence.reads_in_place(np.zeros((100, 64, 128), np.float32))
    assert not recurrence.reads_in_place(view(64, 100, 128)[::-1])  # reversed: copied


def test_a_training_step_and_the_gradient_norm_keep_openblas_at_one_thread(setenv, monkeypatch,
                                                                             tmp_path):  # fmt: skip
    """Between two sessions NumPy's OpenBLAS gets its threads back, and a threaded call there
    leaves them spinning into the next forward pass (bench/README, "Between two sessions"):
    so the Trainer runs its whole step in one session (the loss and the update see OpenBLAS
    at one thread), and optim.global_norm, which users call in loops of their own, takes
    its dot products in one."""
    if parallel._CONTROL is None or not parallel.probe.available():
        pytest.skip("needs NumPy's bundled OpenBLAS and the compiled loops")
    from rnnlab import optim, tasks
    from rnnlab.train import TrainConfig, Trainer

    get, set_ = parallel._CONTROL
    setenv(RNNLAB_NUM_THREADS="2")
    before = get()
    seen = []
    try:
        set_(2)
        real_dot = np.dot

        def dot(a, b, *args):
            seen.append(("dot", get()))
            return real_dot(a, b, *args)

        monkeypatch.setattr(optim.np, "dot", dot)  # global_norm's products
        # (float16: the dot-product path; float32 and float64 take rnnlab.fast's pass)
        optim.global_norm({"w": np.ones((3, 4), np.float16)})
        assert seen == [("dot", 1)] and get() == 2  # one thread inside, restored after
        # (np.dot back before the step: a loop compiled while numba sees the spy fails)
        monkeypatch.setattr(optim.np, "dot", real_dot)

        small = {"T": 4, "hidden": 3, "batch_size": 2, "steps": 2, "checkpoint_every": 2}
        cfg = TrainConfig.from_dict({**tasks.defaults("adding"), **small})
        task = tasks.make_task(cfg)
        spec = tasks.model_spec(cfg, task)
        trainer = Trainer(tasks.build_model(spec), task, cfg, tmp_path / "r", spec=spec, quiet=True)
        real_loss, real_update = task.loss, trainer.opt.update

        def loss(output, batch):
            seen.append(("loss", get()))
            return real_loss(output, batch)

        def update(*args, **kwargs):
            seen.append(("update", get()))
            return real_update(*args, **kwargs)

        task.loss, trainer.opt.update = loss, update
        seen.clear()
        trainer.train_step(0)
        assert seen == [("loss", 1), ("update", 1)] and get() == 2
    finally:
        set_(before)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork")
@pytest.mark.parametrize("forker_in_session", [False, True])
def test_a_child_keeps_only_the_forking_threads_sessions(forker_in_session):
    """A session open in another thread at the fork stayed open in the child for good (that
    thread is not there to close it): the child's BLAS at one thread, its work split and its
    workers allowed to spin for its whole life. The forking thread's own session goes on and
    closes as usual."""
    if not parallel.enabled():
        pytest.skip("needs rnnlab's split (numba and 2 threads)")
    from rnnlab.fast import team

    get = parallel._CONTROL[0]
    before = get()
    opened, release = threading.Event(), threading.Event()

    def other():
        with parallel.session():
            opened.set()
            release.wait(10)

    thread = threading.Thread(target=other, daemon=True)
    thread.start()
    opened.wait(10)
    try:
        with contextlib.ExitStack() as stack:
            if forker_in_session:
                stack.enter_context(parallel.session())
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # (fork with threads)
                pid = os.fork()
            if pid == 0:
                signal.alarm(10)
                inside = (parallel.in_session(), get(), int(team._allowed[0]))
                stack.close()  # the forking thread's session, if open, closes here
                after = (parallel.in_session(), get(), int(team._allowed[0]))
                want_inside = (True, 1, 1) if forker_in_session else (False, before, 0)
                os._exit(0 if (inside, after) == (want_inside, (False, before, 0)) else 1)
        _, status = os.waitpid(pid, 0)
    finally:
        release.set()
        thread.join(10)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
    assert not parallel.in_session() and get() == before


def test_a_blas_flag_left_on_a_finite_product_is_not_an_error(monkeypatch):
    """OpenBLAS's kernels can leave the CPU's invalid flag set from lanes past the operands
    (numpy/numpy#24067): a finite 1 × 5 by 5 × 3 product raised FloatingPointError under the
    test suite's np.seterr(all="raise") (a Linear's forward in a CI run). Here a product that
    sets the flag after computing stands for such a BLAS: rnnlab's products judge the flags
    by the result, and a product whose result is not finite still raises or warns as the
    caller asked."""
    from rnnlab.fast import parallel

    def leaves_a_flag(a, b, out=None):
        product = np.matmul(a, b, out=out)
        np.float32(np.inf) - np.float32(np.inf)  # (NumPy reads the flag as a BLAS's)
        return product

    monkeypatch.setattr(parallel, "_MATMUL", leaves_a_flag)
    rng = np.random.default_rng(0)
    a = rng.standard_normal((1, 5)).astype(np.float32)
    w = rng.standard_normal((3, 5)).astype(np.float32)
    np.testing.assert_array_equal(parallel.matmul(a, w.T), a @ w.T)  # (no error)
    with parallel.session():
        out = np.empty((1, 3), np.float32)
        parallel.matmul(a, w.T, out=out)
        np.testing.assert_array_equal(out, a @ w.T)
    # a product split over the threads on NumPy's BLAS (MKL out of the way) reports no flag,
    # as MKL's never did: no pass over its output (a step's cost where NumPy's BLAS is the
    # large products'); its overflow is the inf the caller's own checks find
    monkeypatch.setattr(parallel._mkl, "load", lambda large=False: None)
    big_a = rng.standard_normal((512, 256)).astype(np.float32)
    big_w = rng.standard_normal((256, 256)).astype(np.float32)
    with parallel.session():
        if len(parallel._product_parts(512, 256, 256)) > 1:  # (two threads: split)
            np.testing.assert_allclose(parallel.matmul(big_a, big_w), big_a @ big_w,
                                       rtol=1e-5, atol=1e-4)  # fmt: skip
            assert np.isinf(parallel.matmul(np.full((512, 256), 1e30, np.float32),
                                            big_w * 0 + 1e30)).all()
    with pytest.raises(FloatingPointError):  # (the caller's np.seterr: the suite's raise)
        parallel.matmul(np.full((1, 5), 1e30, np.float32), np.full((5, 3), 1e30, np.float32))
    with np.errstate(over="ignore", invalid="ignore"):
        assert np.isinf(parallel.matmul(np.full((1, 5), 1e30, np.float32),
                                        np.full((5, 3), 1e30, np.float32))).all()
