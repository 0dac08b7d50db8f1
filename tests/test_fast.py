"""The compiled time loops (rnnlab.fast) against the cells' own steps run on NumPy.

The oracle below is a time loop written out here with recurrence.step_forward and
step_backward (one step of the cell on whole batch blocks), so it does not depend on whether
recurrence dispatches to the compiled loops. Both run the same step functions (the cell's
one written form); float64 tapes and gradients must agree to 1e-12 (relative to each array's
largest entry); float32 runs must stay within 1e-5 of float64. The first run compiles the
loops (a few seconds a cell); numba caches them, so later runs take a second or two.
"""

import os

import numpy as np
import pytest
from helpers import oracle

oracle("numba")
oracle("scipy")

from rnnlab import _blaschoice, fast, recurrence, settings  # noqa: E402
from rnnlab.cells import ElmanCell, GRUCell, LSTMCell  # noqa: E402
from rnnlab.cells.pointwise import blocks, one, tanh, units  # noqa: E402
from rnnlab.fast import blas, kernels  # noqa: E402

CELLS = {
    "tanh": ElmanCell("tanh"),
    "relu": ElmanCell("relu"),
    "lstm": LSTMCell(),
    "gru": GRUCell(reset_after=True),
    "gru_orig": GRUCell(reset_after=False),
}
# H = 19: the pointwise loops run their vector bodies and their remainders (4H = 76, 3H = 57)
T, B, H = 6, 3, 19


# ----------------------------------------------------------------------------- the oracle
def _c(cs, hs):
    return cs if cs is not None else np.empty(hs.shape[:2] + (0,), hs.dtype)


def step_forward(cell, XA, W_hh, b_ih, b_hh, hs, cs, saved, mask, reverse):
    """A forward loop of recurrence.step_forward, one cell step at a time."""
    T = XA.shape[0]
    cs = _c(cs, hs)
    q = np.empty(0, hs.dtype)
    for t in range(T - 1, -1, -1) if reverse else range(T):
        prev, out = (t + 1, t) if reverse else (t, t + 1)
        recurrence.step_forward(cell, W_hh, q, XA[t], b_ih, b_hh, hs[prev], cs[prev], hs[out],
                                cs[out], saved[t])  # fmt: skip
        if mask is not None and not mask[t].all():
            skip = ~mask[t][:, None]
            np.copyto(hs[out], hs[prev], where=skip)
            np.copyto(cs[out], cs[prev], where=skip)


def step_backward(cell, W_hh, hs, cs, saved, mask, reverse, dys, dh, dc, dXA, dHA, trace):
    """BPTT with recurrence.step_backward, one cell step at a time; returns (dh0, dc0)."""
    T, B = dXA.shape[0], hs.shape[1]
    if dys is not None and mask is not None:
        dys = np.where(mask[:, :, None], dys, 0.0)
    cs = _c(cs, hs)
    dc = dc if dc is not None else np.empty((B, 0), hs.dtype)
    q, dq = np.empty(0, hs.dtype), np.empty((B, 0), hs.dtype)
    for t in range(T) if reverse else range(T - 1, -1, -1):
        prev, out = (t + 1, t) if reverse else (t, t + 1)
        if dys is not None:
            dh = dh + dys[t]
        trace[t] = dh
        valid = np.ones((B, 1), bool) if mask is None else mask[t][:, None]
        dh_in = np.where(valid, dh, 0.0)
        dc_in = np.where(valid, dc, 0.0)
        recurrence.step_backward(cell, W_hh, q, hs[prev], cs[prev], hs[out], cs[out], saved[t],
                                 dh_in, dc_in, dXA[t], dHA[t], dq)  # fmt: skip
        dh = np.where(valid, dh_in, dh)
        dc = np.where(valid, dc_in, dc)
    return dh, (dc if cell.has_c else None)


# ----------------------------------------------------------------------------- problems
def problem(kind, reverse, masked, seed=0, scale=1.0, shape=(T, B, H)):
    """Random inputs of one direction of one layer, float64, of shape (T, B, H)."""
    T, B, H = shape
    rng = np.random.default_rng(seed)
    cell = CELLS[kind]
    G = cell.gates * H
    p = {
        "XA": scale * rng.standard_normal((T, B, G)),
        "W_hh": scale * rng.uniform(-0.4, 0.4, (G, H)),
        "b_ih": scale * rng.uniform(-0.5, 0.5, G),
        "b_hh": scale * rng.uniform(-0.5, 0.5, G),
        "h0": rng.standard_normal((B, H)),
        "c0": rng.standard_normal((B, H)) if cell.has_c else None,
        "dys": rng.standard_normal((T, B, H)),
        "dh": rng.standard_normal((B, H)),
        "dc": rng.standard_normal((B, H)) if cell.has_c else None,
        "mask": None,
        "reverse": reverse,
    }
    if masked:  # (T, B): a full sequence, a right-padded one, one with holes
        p["mask"] = np.array([[1, 1, 1, 1, 1, 1], [1, 1, 0, 0, 0, 0], [0, 1, 1, 0, 1, 1]], bool).T
        p["mask"] = p["mask"][:T, :B]
    return p


def cast(p, dtype):
    return {
        k: v.astype(dtype) if isinstance(v, np.ndarray) and v.dtype.kind == "f" else v
        for k, v in p.items()
    }


def run_forward(kind, p, loop, xa_at=None):
    cell = CELLS[kind]
    dtype = p["XA"].dtype
    T, B, H = p["dys"].shape
    hs = np.empty((T + 1, B, H), dtype)
    cs = np.empty((T + 1, B, H), dtype) if cell.has_c else None
    saved = np.empty((T, B, cell.tape * H), dtype)
    first = T if p["reverse"] else 0
    hs[first] = p["h0"]
    if cs is not None:
        cs[first] = p["c0"]
    XA = p["XA"]
    if xa_at == "tape":
        saved[:, :, : XA.shape[2]] = XA
        XA = saved[:, :, : XA.shape[2]]
    elif xa_at == "output":
        place = hs[:-1] if p["reverse"] else hs[1:]
        place[...] = XA
        XA = place
    if loop == "step":
        step_forward(cell, XA, p["W_hh"], p["b_ih"], p["b_hh"], hs, cs, saved, p["mask"],
                     p["reverse"])  # fmt: skip
    else:
        fast.forward_loop(cell, XA, p["W_hh"], p["b_ih"], p["b_hh"], None, hs, cs, saved,
                          p["mask"], p["reverse"], xa_at=xa_at,
                          numpy_blas=loop == "fast")  # fmt: skip
    return hs, cs, saved


def run_backward(kind, p, tape, loop, with_dys=True):
    cell = CELLS[kind]
    hs, cs, saved = tape
    saved = saved.copy()  # the compiled loops write the gradients over a cell's gates
    dtype = hs.dtype
    T, B, H = p["dys"].shape
    GH, own = cell.gates * H, len(cell.hh_own) * H
    dXA = np.full((T, B, GH), np.nan, dtype)
    dHA = np.full((T, B, own), np.nan, dtype)
    trace = np.full((T, B, H), np.nan, dtype)
    dys = p["dys"] if with_dys else None
    if loop == "step":
        dc = p["dc"].copy() if p["dc"] is not None else None
        dh0, dc0 = step_backward(cell, p["W_hh"], hs, cs, saved, p["mask"], p["reverse"], dys,
                                 p["dh"].copy(), dc, dXA, dHA, trace)  # fmt: skip
    else:
        dh0, dc0 = fast.backward_loop(cell, p["W_hh"], None, hs, cs, saved, p["mask"],
                                      p["reverse"], dys, p["dh"], p["dc"], dXA, dHA, None,
                                      trace, numpy_blas=loop == "fast")  # fmt: skip
        if cell.grads_over_tape:
            dXA, dHA = saved[:, :, :GH], saved[:, :, GH : GH + own]
    out = {"dXA": dXA, "dHA": dHA, "trace": trace, "dh0": dh0}
    if dc0 is not None:
        out["dc0"] = dc0
    return out


def tape_arrays(tape):
    hs, cs, saved = tape
    out = {"hs": hs, "saved": saved}
    if cs is not None:
        out["cs"] = cs
    return out


def assert_close(got, want, rtol, what):
    assert got.shape == want.shape, what
    if want.size == 0:
        return
    err = np.abs(got.astype(np.float64) - want.astype(np.float64)).max()
    scale = max(np.abs(want.astype(np.float64)).max(), 1e-300)
    assert err <= rtol * scale, f"{what}: relative error {err / scale:.2e} > {rtol:.0e}"


KIND_IDS = list(CELLS)
DIRECTIONS = pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
MASKS = pytest.mark.parametrize("masked", [False, True], ids=["full", "masked"])


# ----------------------------------------------------------------------------- float64
@MASKS
@DIRECTIONS
@pytest.mark.parametrize("kind", KIND_IDS)
def test_forward_tape_matches_step_loop(kind, reverse, masked):
    p = problem(kind, reverse, masked)
    want = tape_arrays(run_forward(kind, p, "step"))
    cell = CELLS[kind]
    places = [("fast", None), ("fast_np_dot", None)]
    if cell.in_place:
        places.append(("fast", "tape" if cell.tape >= cell.gates else "output"))
    for loop, xa_at in places:
        got = tape_arrays(run_forward(kind, p, loop, xa_at=xa_at))
        assert got.keys() == want.keys()
        for name in want:
            assert_close(got[name], want[name], 1e-12, f"{loop} {name}")


@MASKS
@DIRECTIONS
@pytest.mark.parametrize("kind", KIND_IDS)
def test_backward_matches_step_loop_on_either_tape(kind, reverse, masked):
    p = problem(kind, reverse, masked, seed=1)
    step_tape = run_forward(kind, p, "step")
    fast_tape = run_forward(kind, p, "fast")
    want = run_backward(kind, p, step_tape, "step")
    runs = {
        "fast on the step tape": run_backward(kind, p, step_tape, "fast"),
        "np.dot on the step tape": run_backward(kind, p, step_tape, "fast_np_dot"),
        "fast on the fast tape": run_backward(kind, p, fast_tape, "fast"),
        "step on the fast tape": run_backward(kind, p, fast_tape, "step"),
    }
    for run, got in runs.items():
        assert got.keys() == want.keys()
        for name in want:
            assert_close(got[name], want[name], 1e-12, f"{run}: {name}")
    if masked:  # masked steps: no gradient into the cell, whatever the padded values
        invalid = ~p["mask"]
        for name in ("dXA", "dHA"):
            assert np.all(runs["fast on the fast tape"][name][invalid] == 0.0), name


@pytest.mark.parametrize("shape", [(1, 1, 1), (2, 2, 33), (3, 5, 8)], ids=str)
@pytest.mark.parametrize("kind", KIND_IDS)
def test_other_shapes(kind, shape):
    """One step, one unit; vector bodies with a remainder; exact multiples of the vector width."""
    for reverse in (False, True):
        p = problem(kind, reverse, False, seed=5, shape=shape)
        want_tape = run_forward(kind, p, "step")
        got_tape = run_forward(kind, p, "fast")
        for name, want in tape_arrays(want_tape).items():
            assert_close(tape_arrays(got_tape)[name], want, 1e-12, name)
        want = run_backward(kind, p, want_tape, "step")
        got = run_backward(kind, p, got_tape, "fast")
        for name in want:
            assert_close(got[name], want[name], 1e-12, name)


@pytest.mark.parametrize("kind", KIND_IDS)
def test_backward_without_output_gradients(kind):
    p = problem(kind, True, True, seed=2)
    tape = run_forward(kind, p, "step")
    want = run_backward(kind, p, tape, "step", with_dys=False)
    got = run_backward(kind, p, tape, "fast", with_dys=False)
    for name in want:
        assert_close(got[name], want[name], 1e-12, name)


@pytest.mark.parametrize("kind", KIND_IDS)
def test_backward_without_trace(kind):
    p = problem(kind, False, True, seed=6)
    tape = run_forward(kind, p, "fast")
    want = run_backward(kind, p, tape, "fast")
    cell = CELLS[kind]
    hs, cs, saved = tape
    saved = saved.copy()
    dXA, dHA = np.empty_like(want["dXA"]), np.empty_like(want["dHA"])
    args = (p["mask"], p["reverse"], p["dys"], p["dh"], p["dc"], dXA, dHA, None)
    dh0, dc0 = fast.backward_loop(cell, p["W_hh"], None, hs, cs, saved, *args)
    if cell.grads_over_tape:
        GH = dXA.shape[2]
        dXA, dHA = saved[:, :, :GH], saved[:, :, GH : GH + dHA.shape[2]]
    np.testing.assert_array_equal(dXA, want["dXA"])
    np.testing.assert_array_equal(dHA, want["dHA"])
    np.testing.assert_array_equal(dh0, want["dh0"])
    assert (dc0 is None) == ("dc0" not in want)


@pytest.mark.parametrize("by_id", [False, True], ids=["bias", "by_id"])
@pytest.mark.parametrize("kind", KIND_IDS)
def test_backward_loop_sums_the_valid_rows_it_wrote(kind, by_id, monkeypatch):
    """`sums`: the loop adds each valid row's pre-activation gradient into its id's row (or
    row 0) while it has it, in a block per thread: equal to the sums over what the loop
    wrote, for a batch split over two threads, masked rows (holes and padding) left out."""
    from rnnlab.fast import parallel

    shape = (7, 10, H)
    p = problem(kind, True, False, seed=12, shape=shape)
    rng = np.random.default_rng(5)
    p["mask"] = rng.random(shape[:2]) < 0.7
    cell = CELLS[kind]
    GH = cell.gates * H
    tape = run_forward(kind, p, "fast")
    hs, cs, saved = tape
    saved = saved.copy()
    ids = rng.integers(0, 4, shape[:2]) if by_id else None
    sums = np.zeros((4 if by_id else 1, GH))
    dXA = np.empty((*shape[:2], GH))
    dHA = np.empty((*shape[:2], len(cell.hh_own) * H))
    monkeypatch.setattr(fast, "MIN_LOOP_FLOPS", 0)  # two threads even for this small loop
    with settings.override(num_threads=2), parallel.session():
        parts = fast._loop_parts((shape[0], shape[1], GH, H), True)
        fast.backward_loop(cell, p["W_hh"], None, hs, cs, saved, p["mask"], False, p["dys"],
                           p["dh"], p["dc"], dXA, dHA, None, sums=sums, ids=ids)  # fmt: skip
    assert len(parts) == 2
    if cell.grads_over_tape:
        dXA = saved[:, :, :GH]
    rows = dXA[p["mask"]]
    which = ids[p["mask"]] if by_id else np.zeros(len(rows), int)
    want = np.zeros_like(sums)
    np.add.at(want, which, rows)
    np.testing.assert_allclose(sums, want, rtol=1e-13, atol=1e-13)
    assert np.count_nonzero(sums) == sums.size


@pytest.mark.parametrize("by_id", [False, True], ids=["bias", "by_id"])
def test_backward_loop_sums_each_part_into_a_block_of_its_own(by_id, monkeypatch):
    """Each part of a split batch adds into its own block (`slot`): run one part after the
    other, each changes one block, no two the same. Two parts adding into one block, both at
    once on two threads, would lose adds only where they collide, which the sums' test
    above, on a loop this small, need not see."""
    from rnnlab.fast import loops, parallel

    if not blas.NUMPY_CBLAS:
        pytest.skip("the loops split a batch on NumPy's CBLAS only")
    shape = (5, 12, H)
    p = problem("lstm", False, False, seed=13, shape=shape)
    cell = CELLS["lstm"]
    GH = cell.gates * H
    hs, cs, saved = run_forward("lstm", p, "fast")
    changed = []
    real_for = loops.backward_for

    def backward_for(*args):
        real = real_for(*args)

        def loop(*a):
            sums = a[-6]  # (blocks, slot, ids, sum_mode, b0, b1)
            before = sums.copy()
            real(*a)
            changed.append(np.flatnonzero((sums != before).any(axis=(1, 2))).tolist())

        return loop

    monkeypatch.setattr(loops, "backward_for", backward_for)
    monkeypatch.setattr(parallel, "run_parts", lambda fn, parts: [fn(*part) for part in parts])
    monkeypatch.setattr(fast, "MIN_LOOP_FLOPS", 0)
    ids = np.random.default_rng(6).integers(0, 3, shape[:2]) if by_id else None
    sums = np.zeros((3 if by_id else 1, GH))
    with settings.override(num_threads=3), parallel.session():
        fast.backward_loop(cell, p["W_hh"], None, hs, cs, saved.copy(), None, False, p["dys"],
                           p["dh"], p["dc"], None, None, None, sums=sums, ids=ids,
                           numpy_blas=True)  # fmt: skip
    assert len(changed) == 3 and all(len(c) == 1 for c in changed), changed
    assert len({c[0] for c in changed}) == 3, changed
    assert np.count_nonzero(sums) == sums.size


def test_backward_loop_sums_refuses_another_layout():
    p = problem("lstm", False, False)
    hs, cs, saved = run_forward("lstm", p, "fast")
    with pytest.raises(ValueError, match="sums"):
        fast.backward_loop(CELLS["lstm"], p["W_hh"], None, hs, cs, saved.copy(), None, False,
                           p["dys"], p["dh"], p["dc"], None, None, None,
                           sums=np.zeros((1, 4 * H), np.float32))  # fmt: skip


def test_incoming_state_gradients_are_not_modified():
    p = problem("lstm", False, False)
    tape = run_forward("lstm", p, "fast")
    dh, dc = p["dh"].copy(), p["dc"].copy()
    run_backward("lstm", p, tape, "fast")
    np.testing.assert_array_equal(p["dh"], dh)
    np.testing.assert_array_equal(p["dc"], dc)


@pytest.mark.parametrize("kind", KIND_IDS)
def test_saturated_units_match(kind):
    """Pre-activations of ±50: σ and tanh at their rails, no NaN, still the same tape."""
    p = problem(kind, False, True, seed=3, scale=12.0)
    want = run_forward(kind, p, "step")
    got = run_forward(kind, p, "fast")
    for name, w in tape_arrays(want).items():
        assert np.all(np.isfinite(tape_arrays(got)[name])), name
        assert_close(tape_arrays(got)[name], w, 1e-12, name)
    b_want = run_backward(kind, p, want, "step")
    b_got = run_backward(kind, p, got, "fast")
    for name in b_want:
        assert_close(b_got[name], b_want[name], 1e-12, name)


# ----------------------------------------------------------------------------- float32
@DIRECTIONS
@pytest.mark.parametrize("kind", KIND_IDS)
def test_float32_stays_within_1e5_of_float64(kind, reverse):
    p64 = problem(kind, reverse, True, seed=4)
    p32 = cast(p64, np.float32)
    tape64 = run_forward(kind, p64, "step")
    tape32 = run_forward(kind, p32, "fast")
    for name, want in tape_arrays(tape64).items():
        got = tape_arrays(tape32)[name]
        assert got.dtype == np.float32, name
        assert_close(got, want, 1e-5, f"float32 {name}")
    step32 = tape_arrays(run_forward(kind, p32, "step"))
    for name, got in tape_arrays(tape32).items():  # and near the NumPy float32 loop
        assert_close(got, step32[name], 1e-6, f"float32 vs NumPy float32 {name}")
    b64 = run_backward(kind, p64, tape64, "step")
    b32 = run_backward(kind, p32, tape32, "fast")
    for name, want in b64.items():
        assert b32[name].dtype == np.float32, name
        assert_close(b32[name], want, 1e-5, f"float32 {name}")


# ----------------------------------------------------------------------------- tanh itself
def ulp_error(got, x):
    exact = np.tanh(x.astype(np.longdouble))
    ulp = np.spacing(np.abs(exact).astype(x.dtype)).astype(np.longdouble)
    return np.abs(got.astype(np.longdouble) - exact) / ulp


@pytest.mark.parametrize("dtype,max_ulp", [(np.float64, 1.5), (np.float32, 1.5)])
def test_tanh_kernel_is_accurate_to_1_5_ulp(dtype, max_ulp):
    if np.finfo(np.longdouble).eps >= np.finfo(np.float64).eps:
        pytest.skip("needs an extended-precision long double as the oracle")
    edges = np.array([0.0, 0.625, 9.0, 9.02, 19.0, 20.0], dtype)
    with np.errstate(under="ignore"):  # the subnormal inputs
        tiny = np.geomspace(np.finfo(dtype).smallest_subnormal, 1.0, 5000).astype(dtype)
        x = np.concatenate([np.linspace(-30, 30, 60001, dtype=dtype), tiny, -tiny, edges])
        got = np.empty_like(x)
        kernels.tanh_into(x, got)
        sig = np.empty_like(x)
        kernels.sigmoid_into(x, sig)
        assert ulp_error(got, x).max() <= max_ulp
        want = 0.5 * np.tanh(0.5 * x.astype(np.longdouble)) + 0.5
    assert np.abs(sig - want).max() <= 2 * np.finfo(dtype).eps


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_tanh_kernel_at_the_edges(dtype):
    big = np.finfo(dtype).max
    x = np.array([np.inf, -np.inf, 0.0, big, -big, np.nan], dtype)
    got = np.empty_like(x)
    kernels.tanh_into(x, got)
    np.testing.assert_array_equal(got[:5], [1.0, -1.0, 0.0, 1.0, -1.0])
    assert np.isnan(got[5]), "NaN must come out as NaN, not as ±1"


@pytest.mark.parametrize("nonlinearity", ["relu", "tanh"])
def test_a_nan_goes_through_the_compiled_elman_loop_as_through_numpy(nonlinearity, setenv):
    """The compiled ReLU was `x if x > 0 else 0`, which made a NaN 0: a NaN input or an inf
    weight (inf · h_0 = NaN) came out of an Elman ReLU layer (and the IRNN) as finite values,
    and training went on. np.maximum, the reference's, keeps it."""
    from rnnlab import RNN

    outs = {}
    for no_numba in ("1", None):
        setenv(RNNLAB_NO_NUMBA=no_numba)
        m = RNN(2, 3, nonlinearity=nonlinearity, dtype=np.float64, rng=0)
        x = np.ones((1, 2, 2))
        x[0, 0, 0] = np.nan
        with np.errstate(invalid="ignore", over="ignore"):
            a = m.forward(x, check=False).output
            m.params["weight_hh_l0"][0, 0] = np.inf
            b = m.forward(np.ones((1, 2, 2)), check=False).output
        outs[no_numba] = (a, b)
    for want, got in zip(outs["1"], outs[None], strict=True):
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
        assert np.isnan(got).any()


# ----------------------------------------------------------------------------- switches
def test_available_follows_the_environment(setenv):
    setenv(RNNLAB_NO_NUMBA=None)
    assert fast.available()
    setenv(RNNLAB_NO_NUMBA="1")
    assert not fast.available()
    setenv(RNNLAB_NO_NUMBA="0")
    assert fast.available()


def test_numpy_blas_is_found_for_numpy_wheels():
    """NumPy's PyPI wheels bundle an ILP64 OpenBLAS; the kernels must find it there."""
    if not _blaschoice.numpy_blas_files():
        pytest.skip("this NumPy has no bundled OpenBLAS (conda, Accelerate, a distribution)")
    assert blas.NUMPY_CBLAS


def test_weights_prepared_for_another_cell_are_refused():
    p = problem("lstm", False, False)
    W = fast.step_weights(CELLS["gru"], p["W_hh"][: 3 * H], 3)
    with pytest.raises(ValueError, match=r"`W_hh` must be weights prepared for the forward loop"):
        run_forward_with(p, W)


def run_forward_with(p, W):
    cell = CELLS["lstm"]
    T, B, H_ = p["dys"].shape
    hs = np.zeros((T + 1, B, H_))
    cs = np.zeros((T + 1, B, H_))
    saved = np.empty((T, B, 4 * H_))
    fast.forward_loop(cell, p["XA"], W, p["b_ih"], p["b_hh"], None, hs, cs, saved, None, False)


def test_wide_vectors_on_avx512_change_no_bit(tmp_path):
    """The kernels are compiled 16 lanes wide on AVX-512 (kernels._vector_width): the same
    σ and tanh, bit for bit, as LLVM's default width. The child process compiles them afresh
    at the other width (forced to 16 where this process has LLVM's choice)."""
    import subprocess
    import sys

    import llvmlite.binding as ll

    has_avx512 = "+avx512f" in ll.get_host_cpu_features().flatten()
    asked = settings.current().vector_width
    assert kernels.VECTOR_WIDTH == ((16 if has_avx512 else 0) if asked is None else asked)
    x = np.linspace(-30, 30, 20001)
    here = {}
    for dtype in (np.float32, np.float64):
        xs = x.astype(dtype)
        for name in ("sigmoid_into", "tanh_into"):
            out = np.empty_like(xs)
            getattr(kernels, name)(xs, out)
            here[f"{name}-{np.dtype(dtype).name}"] = out
    np.savez(tmp_path / "here.npz", **here)
    child = (
        "import sys, numpy as np\n"
        "from rnnlab.fast import kernels\n"
        f"assert kernels.WIDE_VECTORS == {not kernels.WIDE_VECTORS}\n"
        "here = np.load(sys.argv[1])\n"
        "x = np.linspace(-30, 30, 20001)\n"
        "for key in here.files:\n"
        "    name, dt = key.split('-')\n"
        "    xs = x.astype(dt); out = np.empty_like(xs)\n"
        "    getattr(kernels, name)(xs, out)\n"
        "    assert np.array_equal(out, here[key]), key\n"
        "print('ok')\n"
    )
    other = "default" if kernels.WIDE_VECTORS else "16"
    env = {**os.environ, "RNNLAB_VECTOR_WIDTH": other, "NUMBA_CACHE_DIR": str(tmp_path)}
    run = subprocess.run(
        [sys.executable, "-c", child, str(tmp_path / "here.npz")],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr[-2000:]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(2048, 512), (33, 65), (64, 32), (1, 7), (7, 1), (0, 4)])
def test_transposed_is_a_contiguous_copy_of_the_transpose(shape, dtype):
    """The blocked copy (tiles of 32, with partial tiles at both edges) moves every value."""
    a = np.random.default_rng(0).standard_normal(shape).astype(dtype)
    for source in (a, np.asfortranarray(a)):  # a non-C source is made contiguous first
        out = fast.transposed(source)
        assert out.flags.c_contiguous and out.dtype == dtype and out.shape == shape[::-1]
        np.testing.assert_array_equal(out, a.T)


@pytest.mark.parametrize("layer_norm", [False, True])
def test_a_float32_cell_clip_not_exact_in_float32_stops_the_gradient_as_numpy_does(layer_norm):
    """A unit clipped to float32(0.7) = 0.699999988 compared in float64 with 0.7 was inside
    the bound on the compiled path: its gradient flowed, where NumPy's float32 comparison
    (and the docstring) stop it; dW_hh was off by 28 % of its largest entry."""
    from rnnlab.layers import LSTM

    m = LSTM(4, 8, cell_clip=0.7, layer_norm=layer_norm, dtype=np.float32, rng=0)
    for k in m.params:
        m.params[k] = m.params[k] * 4  # |c| past the bound at many units
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 6, 4)).astype(np.float32)
    dy = rng.standard_normal((3, 6, 8)).astype(np.float32)
    out = {}
    for no_numba in (True, False):
        with settings.override(no_numba=no_numba):
            f = m.forward(x)
            out[no_numba] = (f, m.backward(f, dy))
    c = out[False][0].state[1]
    assert (np.abs(c) == np.float32(0.7)).any()  # (the case in question: units at the bound)
    (_, numpy_b), (_, fast_b) = out[True], out[False]
    for name, g in numpy_b.params.items():
        scale = np.abs(g).max()
        assert np.abs(fast_b.params[name] - g).max() <= 2e-5 * scale, name
    assert np.abs(fast_b.input - numpy_b.input).max() <= 2e-5 * np.abs(numpy_b.input).max()


# ------------------------------------------------------- blocks of any count, compiled too
def _five_forward(xa, b_ih, ha, b_hh, q, h_prev, c_prev, h, c, tape):
    H = h.shape[-1]
    a0, a1, a2, a3, a4 = blocks(tape, 5, H)
    for j in units(h):
        h[j] = tanh(xa[j] + b_ih[j] + ha[j] + b_hh[j])
        a0[j] = h[j]
        a1[j] = h[j] * h[j]
        a2[j] = xa[j]
        a3[j] = ha[j]
        a4[j] = h[j] - h_prev[j]


def _five_backward(dh, dc, dsrc, q, h_prev, c_prev, h, c, tape, da, da_h, dq):
    H = h.shape[-1]
    a0, a1, _, _, _ = blocks(tape, 5, H)
    for j in units(h):
        da[j] = dh[j] * (one(a1[j]) - a1[j])  # 1 − h², from the tape's second block
        dh[j] = dh[j] - dh[j]


def test_a_cell_of_five_tape_blocks_runs_compiled():
    """pointwise.blocks(a, n, H) was written out for the compiled loops for n = 1 to 4: a cell
    taking five tape blocks ran on NumPy (and passed the cell check) and, compiled, raised
    "TypeError: blocks(a, 5, H): the compiled loops take 1 to 4 blocks" with numba's
    traceback at its first forward pass."""
    from rnnlab import gradcheck
    from rnnlab.cells import Cell
    from rnnlab.layers import Recurrent

    class Five(Cell):
        name = "five"
        tape = 5
        stages = (_five_forward,)
        backward_stages = (_five_backward,)

    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 4, 3))
    layer = Recurrent(Five(), 3, 5, dtype=np.float64, rng=0)
    f = layer.forward(x)
    b = layer.backward(f, np.ones_like(f.output))
    with settings.override(no_numba=True):
        f_np = layer.forward(x)
        b_np = layer.backward(f_np, np.ones_like(f_np.output))
        gradcheck(layer, x).assert_ok()
    np.testing.assert_allclose(f.output, f_np.output, rtol=0, atol=1e-12)
    for k, v in b_np.params.items():
        np.testing.assert_allclose(b.params[k], v, rtol=0, atol=1e-12, err_msg=k)
    gradcheck(layer, x).assert_ok()


def _importing_step(xa, b_ih, ha, b_hh, q, h_prev, c_prev, h, c, tape):
    import math  # noqa: F401  (numba reads no import in a compiled function)

    for j in units(h):
        h[j] = tanh(xa[j] + b_ih[j] + ha[j] + b_hh[j])


def _tanh_back(dh, dc, dsrc, q, h_prev, c_prev, h, c, tape, da, da_h, dq):
    for j in units(h):
        da[j] = dh[j] * (one(h[j]) - h[j] * h[j])
        dh[j] = dh[j] - dh[j]


def test_a_step_with_an_import_is_said_with_the_cell():
    """numba's UnsupportedBytecodeError (an import inside a step) is no NumbaError: it passed
    the loops' wrapper as a traceback that named neither the cell nor the way out."""
    from rnnlab.cells import Cell
    from rnnlab.layers import Recurrent

    class Importing(Cell):
        name = "importing"
        stages = (_importing_step,)
        backward_stages = (_tanh_back,)

    x = np.random.default_rng(0).standard_normal((2, 3, 3))
    layer = Recurrent(Importing(), 3, 4, dtype=np.float64, rng=0)
    with settings.override(no_numba=False), pytest.raises(
        ValueError, match=r"got Importing, whose steps numba refused \(Use of unsupported "
                          r"opcode \(IMPORT_NAME\).*RNNLAB_NO_NUMBA=1"):
        layer.forward(x)


_DIGESTS = """
import numpy as np
from rnnlab.cells import ElmanCell, GRUCell, LSTMCell
from rnnlab.fast import loops
made = []
real = loops._cached_jit
loops._cached_jit = lambda fn: made.append(loops._digest(fn)) or real(fn)
for cell in (LSTMCell(), GRUCell(), ElmanCell("tanh"), LSTMCell(layer_norm=True)):
    loops.backward_for(cell)
    loops.forward_for(cell, "apart")
print(" ".join(made))
"""


def test_the_loops_disk_cache_key_is_the_same_in_every_process():
    """The compiled loops are cached on disk under a digest of what they compute. Since the
    cell check's unit-by-unit switch became a thread-local (pointwise._MODE, whose repr holds
    its address), the digest differed in every process: each one compiled every loop again
    (~5 s before a first forward pass, measured 5.3 -> 0.8 s with the fix)."""
    import subprocess
    import sys

    runs = [subprocess.run([sys.executable, "-c", _DIGESTS], capture_output=True, text=True,
                           check=True).stdout.split() for _ in range(2)]  # fmt: skip
    assert len(runs[0]) >= 4 and runs[0] == runs[1]


def test_an_array_a_step_reads_is_part_of_its_compiled_key_in_full():
    """A module-level array the step reads is compiled in as a constant: its digest takes
    its bytes, not its repr, which elides the middle of a large array."""
    from rnnlab.fast import loops

    namespace = {"TABLE": np.zeros(5000)}
    exec("def step(x):\n    return x * TABLE[2500]\n", namespace)  # noqa: S102
    before = loops._digest(namespace["step"])
    namespace["TABLE"][2500] = 1.0
    assert loops._digest(namespace["step"]) != before
