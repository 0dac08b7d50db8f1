"""A researcher's pass over the cell protocol (rnnlab.cells.base): four cells written from the
documentation alone, checked against float64 finite differences on both paths, and the
mistakes such a cell plausibly makes, each refused when the layer is made, naming the cell,
the step and what was expected, where it had given a wrong gradient without a word, a
misleading message or a traceback."""

import numpy as np
import pytest

from rnnlab import Linear, Sequential, cellcheck, fast, gradcheck, settings
from rnnlab.cells import Cell
from rnnlab.cells.pointwise import blocks, one, sigmoid, tanh, units, zero
from rnnlab.layers import Recurrent
from rnnlab.losses import mean_squared_error
from rnnlab.optim import Adam


# ---------------------------------------------- a coupled input-forget LSTM (CIFG), in place
# f = σ(.), g = tanh(.), o = σ(.); c = f ⊙ c' + (1 − f) ⊙ g; h = o ⊙ tanh(c); tape f, g, o, tanh c
def cifg(xa, b_ih, ha, b_hh, q, h_prev, c_prev, h, c, tape):
    H = h.shape[-1]
    xf, xg, xo = blocks(xa, 3, H)
    bf, bg, bo = blocks(b_ih, 3, H)
    cf, cg, co = blocks(b_hh, 3, H)
    af, ag, ao = blocks(ha, 3, H)
    f, g, o, tc = blocks(tape, 4, H)
    for j in units(h):
        fj = sigmoid(xf[j] + bf[j] + af[j] + cf[j])
        gj = tanh(xg[j] + bg[j] + ag[j] + cg[j])
        oj = sigmoid(xo[j] + bo[j] + ao[j] + co[j])
        cj = fj * c_prev[j] + (one(fj) - fj) * gj
        t = tanh(cj)
        f[j] = fj
        g[j] = gj
        o[j] = oj
        tc[j] = t
        c[j] = cj
        h[j] = oj * t


def cifg_back(dh, dc, dsrc, q, h_prev, c_prev, h, c, tape, da, da_h, dq):
    H = h.shape[-1]
    f, g, o, tc = blocks(tape, 4, H)
    daf, dag, dao = blocks(da, 3, H)
    for j in units(h):
        fj, gj, oj, t, d = f[j], g[j], o[j], tc[j], dh[j]
        dct = dc[j] + d * oj * (one(t) - t * t)
        daf[j] = dct * (c_prev[j] - gj) * fj * (one(fj) - fj)
        dag[j] = dct * (one(fj) - fj) * (one(gj) - gj * gj)
        dao[j] = d * t * oj * (one(oj) - oj)
        dc[j] = dct * fj
        dh[j] = zero(d)  # h_{t-1} reaches h_t through W_hh alone


class CIFG(Cell):
    name = "cifg-from-docs"
    gates = 3
    has_c = True
    tape = 4
    products = (((0, 3), None),)
    in_place = True
    reads_h_prev = False
    stages = (cifg,)
    backward_stages = (cifg_back,)
    gate_activations = (("f", "forget", 0, "sigmoid"), ("g", "cell", 1, "tanh"),
                        ("o", "output", 2, "sigmoid"))  # fmt: skip


# ------------------------------ a leaky Elman unit, a learned rate a = σ(ρ) per unit (extra)
# n = tanh(W x + U h + b); h' = (1 − a) ⊙ h + a ⊙ n; tape n
def leaky(xa, b_ih, ha, b_hh, q, h_prev, c_prev, h, c, tape):
    for j in units(h):
        n = tanh(xa[j] + b_ih[j] + ha[j] + b_hh[j])
        a = sigmoid(q[j])
        tape[j] = n
        h[j] = (one(a) - a) * h_prev[j] + a * n


def leaky_back(dh, dc, dsrc, q, h_prev, c_prev, h, c, tape, da, da_h, dq):
    for j in units(h):
        n, d, a = tape[j], dh[j], sigmoid(q[j])
        dq[j] = dq[j] + d * (n - h_prev[j]) * a * (one(a) - a)
        da[j] = d * a * (one(n) - n * n)
        dh[j] = d * (one(a) - a)


class Leaky(Cell):
    name = "leaky-from-docs"
    tape = 1
    extra = ("rho",)
    stages = (leaky,)
    backward_stages = (leaky_back,)
    gate_activations = (("n", "candidate", 0, "tanh"),)

    def init(self, params, H, rng):
        params["rho"][...] = rng.uniform(-1.0, 1.0, H)


# ----------------- an SRU-like unit: no recurrent matrix, c_{t-1} through vectors v (2H extra)
# x̃ = W x + b; f = σ(W_f x + v_f ⊙ c' + b_f); r = σ(W_r x + v_r ⊙ c' + b_r)
# c = f ⊙ c' + (1 − f) ⊙ x̃; h = r ⊙ tanh(c); tape f, r, x̃, tanh c
def sru(xa, b_ih, ha, b_hh, q, h_prev, c_prev, h, c, tape):
    H = h.shape[-1]
    xx, xf, xr = blocks(xa, 3, H)
    bx, bf, br = blocks(b_ih, 3, H)
    vf, vr = blocks(q, 2, H)
    f, r, xt, tc = blocks(tape, 4, H)
    for j in units(h):
        cp = c_prev[j]
        fj = sigmoid(xf[j] + bf[j] + vf[j] * cp)
        rj = sigmoid(xr[j] + br[j] + vr[j] * cp)
        x_ = xx[j] + bx[j]
        cj = fj * cp + (one(fj) - fj) * x_
        t = tanh(cj)
        f[j] = fj
        r[j] = rj
        xt[j] = x_
        tc[j] = t
        c[j] = cj
        h[j] = rj * t


def sru_back(dh, dc, dsrc, q, h_prev, c_prev, h, c, tape, da, da_h, dq):
    H = h.shape[-1]
    vf, vr = blocks(q, 2, H)
    dvf, dvr = blocks(dq, 2, H)
    f, r, xt, tc = blocks(tape, 4, H)
    dax, daf, dar = blocks(da, 3, H)
    for j in units(h):
        fj, rj, x_, t, d, cp = f[j], r[j], xt[j], tc[j], dh[j], c_prev[j]
        dct = dc[j] + d * rj * (one(t) - t * t)
        zf = dct * (cp - x_) * fj * (one(fj) - fj)
        zr = d * t * rj * (one(rj) - rj)
        dvf[j] = dvf[j] + zf * cp
        dvr[j] = dvr[j] + zr * cp
        dax[j] = dct * (one(fj) - fj)
        daf[j] = zf
        dar[j] = zr
        da_h[j] = zero(d)  # W_hh's product is there and unused
        dc[j] = dct * fj + zf * vf[j] + zr * vr[j]
        dh[j] = zero(d)


class SRU(Cell):
    name = "sru-from-docs"
    gates = 3
    has_c = True
    tape = 4
    extra = (("v", 2),)
    hh_own = (0,)
    stages = (sru,)
    backward_stages = (sru_back,)

    def init(self, params, H, rng):
        params["v"][...] = rng.uniform(-0.5, 0.5, 2 * H)
        params["weight_hh"][...] = 0.0


# -------------- a GRU-like unit whose reset gate has no recurrence (two products, a gate none
# covers): z = σ(W_z x + U_z h + b), r = σ(W_r x + b_r), n = tanh(W_n x + U_n (r ⊙ h) + b),
# h' = (1 − z) ⊙ h + z ⊙ n; tape z, r, r ⊙ h, n
def fr_gates(xa, b_ih, ha, b_hh, q, h_prev, c_prev, h, c, tape):
    H = h.shape[-1]
    xz, xr, _ = blocks(xa, 3, H)
    bz, br, _ = blocks(b_ih, 3, H)
    (cz,) = blocks(b_hh, 1, H)
    z, r, rh, _ = blocks(tape, 4, H)
    for j in units(h):
        zj = sigmoid(xz[j] + bz[j] + ha[j] + cz[j])
        rj = sigmoid(xr[j] + br[j])
        z[j] = zj
        r[j] = rj
        rh[j] = rj * h_prev[j]


def fr_candidate(xa, b_ih, ha, b_hh, q, h_prev, c_prev, h, c, tape):
    H = h.shape[-1]
    xn, bn, cn = xa[..., 2 * H :], b_ih[..., 2 * H :], b_hh[..., 2 * H :]
    z, _, _, n = blocks(tape, 4, H)
    for j in units(h):
        nj = tanh(xn[j] + bn[j] + ha[j] + cn[j])
        n[j] = nj
        h[j] = (one(nj) - z[j]) * h_prev[j] + z[j] * nj


def fr_gates_back(dh, dc, dsrc, q, h_prev, c_prev, h, c, tape, da, da_h, dq):
    H = h.shape[-1]
    _, r, _, _ = blocks(tape, 4, H)
    _, dar, _ = blocks(da, 3, H)
    for j in units(h):
        rj, ds, hp = r[j], dsrc[j], h_prev[j]
        dar[j] = ds * hp * rj * (one(rj) - rj)
        dh[j] = dh[j] + ds * rj


def fr_candidate_back(dh, dc, dsrc, q, h_prev, c_prev, h, c, tape, da, da_h, dq):
    H = h.shape[-1]
    z, _, _, n = blocks(tape, 4, H)
    daz, _, dan = blocks(da, 3, H)
    for j in units(h):
        zj, nj, d, hp = z[j], n[j], dh[j], h_prev[j]
        daz[j] = d * (nj - hp) * zj * (one(zj) - zj)
        dan[j] = d * zj * (one(nj) - nj * nj)
        dh[j] = d * (one(zj) - zj)


class FreeReset(Cell):
    name = "free-reset-from-docs"
    gates = 3
    tape = 4
    products = (((0, 1), None), ((2, 3), 2))
    stages = (fr_gates, fr_candidate)
    backward_stages = (fr_gates_back, fr_candidate_back)
    gate_activations = (("z", "update", 0, "sigmoid"), ("r", "reset", 1, "sigmoid"),
                        ("n", "candidate", 3, "tanh"))  # fmt: skip


MINE = {"cifg": CIFG, "leaky": Leaky, "sru": SRU, "free-reset": FreeReset}


def _run(cell, dtype, numpy_path, **around):
    """Output, final state and every gradient of a 2-layer bidirectional layer on a padded
    batch from a given state, on one path, and (float64) the gradient check of all of it:
    every parameter, the input and the initial state (h0, and c0 for a cell with one)."""
    rng = np.random.default_rng(0)
    layer = Recurrent(cell, 3, 4, 2, bidirectional=True, dtype=dtype, rng=1, **around)
    P = layer.carry_size
    x = rng.standard_normal((3, 6, 3)).astype(dtype)
    lengths = np.array([6, 2, 4])
    h0 = (0.5 * rng.standard_normal((4, 3, P))).astype(dtype)
    state = (h0, (0.5 * rng.standard_normal((4, 3, 4))).astype(dtype)) if cell.has_c else h0
    with settings.override(no_numba=numpy_path):
        f = layer.forward(x, lengths=lengths, state=state)
        b = layer.backward(f, rng.standard_normal(f.output.shape).astype(dtype))
        report = None
        if dtype == np.float64:
            report = gradcheck(layer, x, lengths=lengths, state=state)
    states = b.state if cell.has_c else (b.state,)
    out = {"output": f.output, "input": b.input, **b.params}
    out.update({f"state{k}": s for k, s in enumerate(states)})
    return out, report


@pytest.mark.parametrize("make", MINE.values(), ids=MINE.keys())
def test_cells_written_from_the_docs_have_exact_gradients_on_both_paths(make):
    """Each passes the float64 finite-difference check of every parameter, the input and the
    initial state on the NumPy loop and compiled, and the two paths agree (float64 to 1e-12,
    float32 to 1e-5)."""
    numpy_run, report = _run(make(), np.float64, True)
    assert report is not None and report.max_error < 1e-7, str(report)
    assert {"state0", "input", "weight_hh_l1_reverse"} <= set(report.errors) | set(numpy_run)
    if not fast.available():
        pytest.skip("numba is not installed: no compiled loop to compare")
    for dtype, tol in ((np.float64, 1e-12), (np.float32, 1e-5)):
        compiled, report = _run(make(), dtype, False)
        assert report is None or report.max_error < 1e-7, str(report)
        reference = _run(make(), dtype, True)[0]
        for k, v in reference.items():
            np.testing.assert_allclose(compiled[k], v, rtol=tol, atol=tol, err_msg=k)


def test_the_cifg_cell_takes_a_projection_and_zoneout_as_the_built_in_lstm_does():
    """reads_h_prev = False: the carry may be projected (proj_size) and c zoned out."""
    _, report = _run(CIFG(), np.float64, True, proj_size=2, zoneout=(0.0, 0.3))
    assert report is not None and report.max_error < 1e-7, str(report)


@pytest.mark.parametrize("make", MINE.values(), ids=MINE.keys())
def test_cells_written_from_the_docs_train(make):
    """A few Adam steps on a running mean, compiled where numba is: the loss falls."""
    rng = np.random.default_rng(0)
    model = Sequential(Recurrent(make(), 3, 16, rng=rng), Linear(16, 1, rng=rng))
    opt = Adam(lr=1e-2)
    state = opt.init(model.params)
    losses = []
    for _ in range(40):
        x = rng.standard_normal((16, 12, 3)).astype(np.float32)
        target = (np.cumsum(x[:, :, :1], axis=1) / np.arange(1, 13)[None, :, None])
        f = model.forward(x)
        loss, d = mean_squared_error(f.output, target.astype(np.float32))
        opt.update(model.params, model.backward(f, d, input_grad=False).params, state)
        losses.append(loss)
    assert np.isfinite(losses).all() and np.mean(losses[-5:]) < 0.6 * np.mean(losses[:5])


# ---------------------------------------------------- mistake 1: a gradient forgotten or wrong
def cifg_back_keeps_dh(dh, dc, dsrc, q, h_prev, c_prev, h, c, tape, da, da_h, dq):
    H = h.shape[-1]
    f, g, o, tc = blocks(tape, 4, H)
    daf, dag, dao = blocks(da, 3, H)
    for j in units(h):
        fj, gj, oj, t, d = f[j], g[j], o[j], tc[j], dh[j]
        dct = dc[j] + d * oj * (one(t) - t * t)
        daf[j] = dct * (c_prev[j] - gj) * fj * (one(fj) - fj)
        dag[j] = dct * (one(fj) - fj) * (one(gj) - gj * gj)
        dao[j] = d * t * oj * (one(oj) - oj)
        dc[j] = dct * fj  # (dh left as it came: ∂L/∂h_t passed on as ∂L/∂h_{t-1})


def leaky_back_sets_dq(dh, dc, dsrc, q, h_prev, c_prev, h, c, tape, da, da_h, dq):
    for j in units(h):
        n, d, a = tape[j], dh[j], sigmoid(q[j])
        dq[j] = d * (n - h_prev[j]) * a * (one(a) - a)  # (the later steps' sum thrown away)
        da[j] = d * a * (one(n) - n * n)
        dh[j] = d * (one(a) - a)


def sru_back_keeps_dc(dh, dc, dsrc, q, h_prev, c_prev, h, c, tape, da, da_h, dq):
    H = h.shape[-1]
    f, r, xt, tc = blocks(tape, 4, H)
    dax, daf, dar = blocks(da, 3, H)
    dvf, dvr = blocks(dq, 2, H)
    for j in units(h):
        fj, rj, x_, t, d, cp = f[j], r[j], xt[j], tc[j], dh[j], c_prev[j]
        dct = dc[j] + d * rj * (one(t) - t * t)
        zf = dct * (cp - x_) * fj * (one(fj) - fj)
        zr = d * t * rj * (one(rj) - rj)
        dvf[j] = dvf[j] + zf * cp
        dvr[j] = dvr[j] + zr * cp
        dax[j] = dct * (one(fj) - fj)
        daf[j] = zf
        dar[j] = zr
        da_h[j] = zero(d)
        dh[j] = zero(d)  # (dc left as it came)


def fr_gates_back_without_dsrc(dh, dc, dsrc, q, h_prev, c_prev, h, c, tape, da, da_h, dq):
    H = h.shape[-1]
    _, r, _, _ = blocks(tape, 4, H)
    _, dar, _ = blocks(da, 3, H)
    for j in units(h):
        rj = r[j]
        dar[j] = dsrc[j] * h_prev[j] * rj * (one(rj) - rj)  # (r ⊙ h_{t-1}'s share of dh lost)


def leaky_back_wrong_da(dh, dc, dsrc, q, h_prev, c_prev, h, c, tape, da, da_h, dq):
    for j in units(h):
        n, d, a = tape[j], dh[j], sigmoid(q[j])
        dq[j] = dq[j] + d * (n - h_prev[j]) * a * (one(a) - a)
        da[j] = d * (one(n) - n * n)  # (the rate a forgotten)
        dh[j] = d * (one(a) - a)


FORGOTTEN = {
    "dh kept": (CIFG, {"backward_stages": (cifg_back_keeps_dh,)}, "dh"),
    "dq overwritten": (Leaky, {"backward_stages": (leaky_back_sets_dq,)}, "dq"),
    "dc kept": (SRU, {"backward_stages": (sru_back_keeps_dc,)}, "dc"),
    "dsrc's share lost": (FreeReset, {"backward_stages": (fr_gates_back_without_dsrc,
                                                          fr_candidate_back)}, "dh"),  # fmt: skip
    "da wrong": (Leaky, {"backward_stages": (leaky_back_wrong_da,)}, "da"),
}


@pytest.mark.parametrize("base,changes,which", FORGOTTEN.values(), ids=FORGOTTEN.keys())
def test_a_backward_that_is_not_the_forward_s_derivative_is_refused(
    base, changes, which, monkeypatch
):
    """Each of these ran without a word and trained on a wrong gradient (gradcheck, below:
    relative errors 0.90, 0.63, 0.89, 0.18 and 0.77): every check before looked at shapes,
    NaN and the two paths' agreement, which they pass. Recurrent now compares one backward
    step with central differences of the forward step in float64 and names the gradient
    that is off."""
    cell = type(f"My{base.__name__}", (base,), changes)()
    with pytest.raises(ValueError, match=(
            r"^`cell` must be a cell whose backward stages give the derivative of its forward "
            rf"stages; got My{base.__name__}, whose {which} gives -?[\d.e-]+ along a random "
            r"direction where the forward step's central differences give -?[\d.e-]+"
            r"(, and .* are off too)? \(one step in float64 at H = 3\) instead\. "
            rf"{which}: .*exact_gradient = False\.$")):
        Recurrent(cell, 3, 4, rng=0)
    monkeypatch.setattr(cellcheck, "_step_derivatives", lambda *a: [])  # (the check's verdict,
    with settings.override(no_numba=True):  # seen on whole sequences)
        layer = Recurrent(cell, 3, 4, dtype=np.float64, rng=0)
        report = gradcheck(layer, np.random.default_rng(0).standard_normal((2, 5, 3)))
    assert report.max_error > 1e-2, str(report)


def leaky_back_truncated(dh, dc, dsrc, q, h_prev, c_prev, h, c, tape, da, da_h, dq):
    for j in units(h):
        n, d, a = tape[j], dh[j], sigmoid(q[j])
        dq[j] = dq[j] + d * (n - h_prev[j]) * a * (one(a) - a)
        da[j] = d * a * (one(n) - n * n)
        dh[j] = zero(d)  # a deliberately truncated gradient: no path through (1 − a) ⊙ h


def test_a_backward_declared_inexact_is_taken_and_gradcheck_still_tells():
    truncated = type("Truncated", (Leaky,), {"backward_stages": (leaky_back_truncated,)})
    with pytest.raises(ValueError, match=r"got Truncated, whose dh gives"):
        Recurrent(truncated(), 3, 4, rng=0)
    declared = type("Declared", (truncated,), {"exact_gradient": False})
    layer = Recurrent(declared(), 3, 4, dtype=np.float64, rng=0)
    report = gradcheck(layer, np.random.default_rng(0).standard_normal((2, 5, 3)))
    assert report.max_error > 1e-3
    with pytest.raises(TypeError, match=r"`Bad.exact_gradient` must be True or False; got "
                                        r"'no' \(str\) instead\.$"):  # fmt: skip
        type("Bad", (Leaky,), {"exact_gradient": "no"})()


def test_the_derivative_check_passes_the_cells_of_the_docs_and_tests():
    """The check refuses none of the built-in cells (tests/test_cell_protocol_checks.py runs
    every variant through it), nor the example's MGU, the tests' IndRNN and gated cell."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parents[1] / "examples"))
    try:
        from custom_cell import MGUCell
    finally:
        sys.path.pop(0)
    from test_custom_cells import MGU, Gated, IndRNN

    for make in (MGUCell, MGU, IndRNN, Gated, *MINE.values()):
        cell = make()
        for H in (3, 8):
            assert cellcheck._step_derivatives(cell, 2, H) == [], make.__name__


# ---------------------------------------------- mistake 2: a step that writes over what it reads
def leaky_folds_biases(xa, b_ih, ha, b_hh, q, h_prev, c_prev, h, c, tape):
    for j in units(h):
        b_ih[j] = b_ih[j] + b_hh[j]  # "fold the biases once": a parameter, every step
        n = tanh(xa[j] + b_ih[j] + ha[j])
        a = sigmoid(q[j])
        tape[j] = n
        h[j] = (one(a) - a) * h_prev[j] + a * n


def leaky_scales_h_prev(xa, b_ih, ha, b_hh, q, h_prev, c_prev, h, c, tape):
    for j in units(h):
        n = tanh(xa[j] + b_ih[j] + ha[j] + b_hh[j])
        a = sigmoid(q[j])
        tape[j] = n
        h_prev[j] = (one(a) - a) * h_prev[j]  # the previous state BPTT reads
        h[j] = h_prev[j] + a * n


def leaky_sums_into_xa(xa, b_ih, ha, b_hh, q, h_prev, c_prev, h, c, tape):
    for j in units(h):
        xa[j] = xa[j] + b_ih[j] + ha[j] + b_hh[j]  # a row shared between steps after lookup
        n = tanh(xa[j])
        a = sigmoid(q[j])
        tape[j] = n
        h[j] = (one(a) - a) * h_prev[j] + a * n


def leaky_back_uses_h(dh, dc, dsrc, q, h_prev, c_prev, h, c, tape, da, da_h, dq):
    for j in units(h):
        n, d, a = tape[j], dh[j], sigmoid(q[j])
        h[j] = d * a  # scratch in the layer's output: the caller's h_t, BPTT's next h_{t-1}
        dq[j] = dq[j] + d * (n - h_prev[j]) * a * (one(a) - a)
        da[j] = h[j] * (one(n) - n * n)
        dh[j] = d * (one(a) - a)


def fr_candidate_back_clears_source(dh, dc, dsrc, q, h_prev, c_prev, h, c, tape, da, da_h, dq):
    H = h.shape[-1]
    z, _, rh, n = blocks(tape, 4, H)
    daz, _, dan = blocks(da, 3, H)
    for j in units(h):
        zj, nj, d, hp = z[j], n[j], dh[j], h_prev[j]
        daz[j] = d * (nj - hp) * zj * (one(zj) - zj)
        dan[j] = d * zj * (one(nj) - nj * nj)
        dh[j] = d * (one(zj) - zj)
        rh[j] = zero(d)  # "done with it": W_hh's gradient reads it after the loop


WRITES = {
    "b_ih": (Leaky, {"stages": (leaky_folds_biases,)}, "forward", "b_ih"),
    "h_prev": (Leaky, {"stages": (leaky_scales_h_prev,)}, "forward", "h_prev"),
    "xa": (Leaky, {"stages": (leaky_sums_into_xa,)}, "forward", "xa"),
    "h": (Leaky, {"backward_stages": (leaky_back_uses_h,)}, "backward", "h"),
    "tape": (FreeReset, {"backward_stages": (fr_gates_back, fr_candidate_back_clears_source)},
             "backward", "tape"),
}


@pytest.mark.parametrize("base,changes,stage,what", WRITES.values(), ids=WRITES.keys())
def test_a_step_that_writes_over_its_inputs_is_refused(base, changes, stage, what):
    """Silently wrong before: a backward using h as scratch, or clearing a product's source on
    the tape, which W_hh's gradient reads after the loop (gradcheck 0.98 on weight_hh, both);
    a forward summing into xa passed gradcheck and, compiled after an Embedding, where the
    steps of one id share a row, gave outputs 1.38 away from the NumPy loop's; a forward
    writing b_ih or h_prev was refused as a matter of NumPy's views, which it is not."""
    cell = type(f"My{base.__name__}", (base,), changes)()
    with pytest.raises(ValueError, match=(
            r"^`cell` must be a cell whose steps write only what they compute \(forward "
            r"stages: h, c, the tape row and the scratch ha; backward stages: dh, dc, da, "
            rf"da_h, dq and the scratch dsrc\); got My{base.__name__}, whose {stage} stages "
            rf"write over {what} instead\. The others are the layer's own arrays")):
        Recurrent(cell, 3, 4, rng=0)


# --------------------------------------- mistake 3: a step that is not a function of its inputs
_NOISE = np.random.default_rng(0)


def leaky_noisy(xa, b_ih, ha, b_hh, q, h_prev, c_prev, h, c, tape):
    for j in units(h):
        n = tanh(xa[j] + b_ih[j] + ha[j] + b_hh[j] + 0.01 * _NOISE.standard_normal())
        a = sigmoid(q[j])
        tape[j] = n
        h[j] = (one(a) - a) * h_prev[j] + a * n


def test_a_step_that_draws_random_numbers_is_refused_as_such():
    """It was refused as one whose values change with NumPy's views, which it is not."""
    cell = type("Noisy", (Leaky,), {"stages": (leaky_noisy,)})()
    with pytest.raises(ValueError, match=r"^`cell` must be a cell whose steps give the same "
                       r"results from the same inputs; got Noisy, whose h, tape, .*differ "
                       r"between two runs of one step instead\. A step that draws random "
                       r"numbers"):  # fmt: skip
        Recurrent(cell, 3, 4, rng=0)


# ---------------------------------------- mistake 4: a step written for the compiled loops' rows
def leaky_math(xa, b_ih, ha, b_hh, q, h_prev, c_prev, h, c, tape):
    import math

    for j in units(h):
        n = tanh(xa[j] + b_ih[j] + ha[j] + b_hh[j])
        a = 1.0 / (1.0 + math.exp(-q[j]))
        tape[j] = n
        h[j] = (one(a) - a) * h_prev[j] + a * n


def leaky_range(xa, b_ih, ha, b_hh, q, h_prev, c_prev, h, c, tape):
    for j in range(len(h)):
        n = tanh(xa[j] + b_ih[j] + ha[j] + b_hh[j])
        a = sigmoid(q[j])
        tape[j] = n
        h[j] = (one(a) - a) * h_prev[j] + a * n


def leaky_range_of_units(xa, b_ih, ha, b_hh, q, h_prev, c_prev, h, c, tape):
    for j in range(h.shape[-1]):
        n = tanh(xa[j] + b_ih[j] + ha[j] + b_hh[j])
        a = sigmoid(q[j])
        tape[j] = n
        h[j] = (one(a) - a) * h_prev[j] + a * n


def test_a_step_that_computes_on_numbers_is_told_of_numpy_s_blocks():
    """math.exp of a block: the refusal asked to "declare what the steps use"."""
    cell = type("Scalar", (Leaky,), {"stages": (leaky_math,)})()
    with pytest.raises(ValueError, match=r"^`cell` must be a cell whose steps run on NumPy's "
                       r"\(B, n\) blocks; got Scalar, whose forward stage 0 \(leaky_math\) "
                       r"raised TypeError \(.*\) when run once on NumPy at H = 3 instead\. On "
                       r"NumPy a step's x\[j\] is the whole block.*np.exp, not math.exp"):
        Recurrent(cell, 3, 4, rng=0)


def test_a_step_that_loops_over_range_is_told_to_loop_over_units():
    """range(len(h)) counts the units of a compiled row and the batch of a NumPy block: such a
    step was taken, ran right compiled and, on NumPy, applied q's first entries to whole
    batch rows (outputs 0.76 away from the compiled loop's, gradcheck 1.0 on NumPy alone).
    The trial run now runs the steps one batch row at a time too, as the compiled loops do,
    and the refusal says where the step counts; range(h.shape[-1]), an index past the
    batch, is told the same."""
    cell = type("Ranged", (Leaky,), {"stages": (leaky_range,)})()
    with pytest.raises(ValueError, match=r"^`cell` must be a cell whose steps give unit by unit "
                       r"\(compiled\) what they give on whole blocks \(NumPy\); got Ranged, "
                       r"whose h, .* differ instead\. leaky_range counts with range or len: on "
                       r"NumPy every argument is a \(B, n\) block.*`for j in units\(h\)`"):
        Recurrent(cell, 3, 4, rng=0)
    cell = type("Ranged2", (Leaky,), {"stages": (leaky_range_of_units,)})()
    with pytest.raises(ValueError, match=r"got Ranged2, whose forward stage 0 "
                       r"\(leaky_range_of_units\) raised IndexError .* leaky_range_of_units "
                       r"counts with range or len: .*`for j in units\(h\)`"):  # fmt: skip
        Recurrent(cell, 3, 4, rng=0)


def leaky_back_reads_dsrc(dh, dc, dsrc, q, h_prev, c_prev, h, c, tape, da, da_h, dq):
    for j in units(h):
        n, d, a = tape[j], dh[j] + dsrc[j], sigmoid(q[j])
        dq[j] = dq[j] + d * (n - h_prev[j]) * a * (one(a) - a)
        da[j] = d * a * (one(n) - n * n)
        dh[j] = d * (one(a) - a)


def test_dsrc_read_by_a_cell_without_a_product_on_its_tape_is_told_so():
    """The hint spoke of the order of backward_stages, which a one-stage cell cannot get
    wrong."""
    cell = type("Reads", (Leaky,), {"backward_stages": (leaky_back_reads_dsrc,)})()
    with pytest.raises(ValueError, match=r"Backward stage 0's dsrc is an empty row: no product "
                       r"on a tape block follows forward stage 0\. dsrc is ∂L/∂\(a tape block "
                       r"a product takes\), and none of this cell's products .* takes one: "
                       r"leave dsrc out of its steps\.$"):  # fmt: skip
        Recurrent(cell, 3, 4, rng=0)


# ----------------------------------------------------------------- mistake 5: the cell's own init
class EyeInit(Leaky):  # an IRNN-like recipe, as one writes it first
    def init(self, params, H, rng):
        params["weight_hh"] = np.eye(H)


class RateInit(Leaky):
    def init(self, params, H, rng):
        params["rho"] = rng.uniform(-1.0, 1.0, (H, 1))


class NewInit(Leaky):
    def init(self, params, H, rng):
        params["alpha"] = np.ones(H)


class DropInit(Leaky):
    def init(self, params, H, rng):
        del params["rho"]


def test_an_init_that_replaces_a_parameter_with_another_dtype_or_shape_is_refused():
    """float64 in a float32 layer made its parameters two dtypes (met compiled as "weights
    prepared ... for another cell or dtype"); a new name was a KeyError in forward; another
    shape a gradient check's shape error."""
    with pytest.raises(ValueError, match=r"^`EyeInit.init` must be a recipe that writes into "
                       r"the parameters it is given, each keeping its shape and dtype "
                       r"\('weight_hh': \(4, 4\), float32\); got 'weight_hh' replaced by an "
                       r"array of shape \(4, 4\) and dtype float64 instead\. Write into the "
                       r"array: params\['weight_hh'\]\[\.\.\.\] = \.\.\."):  # fmt: skip
        Recurrent(EyeInit(), 3, 4, rng=0)
    with pytest.raises(ValueError, match=r"`RateInit.init` must .*got 'rho' replaced by an "
                       r"array of shape \(4, 1\)"):  # fmt: skip
        Recurrent(RateInit(), 3, 4, dtype=np.float64, rng=0)
    with pytest.raises(ValueError, match=r"^`NewInit.init` must be a recipe that adjusts the "
                       r"parameters it is given \(weight_ih, weight_hh, bias_ih, bias_hh, rho\); "
                       r"got a new entry 'alpha' instead\. A parameter of the cell's own is "
                       r"declared in `extra`"):  # fmt: skip
        Recurrent(NewInit(), 3, 4, rng=0)
    with pytest.raises(ValueError, match=r"`DropInit.init` must .*got 'rho' removed instead"):
        Recurrent(DropInit(), 3, 4, rng=0)


def test_an_init_that_replaces_a_parameter_with_its_like_is_taken():
    """A replacement of the same shape and dtype worked before and still does: its values go
    into the array drawn (contiguous and writeable, as the optimisers need)."""
    layer = Recurrent(EyeInit(), 3, 4, 2, dtype=np.float64, rng=0)
    for k in (0, 1):
        w = layer.params[f"weight_hh_l{k}"]
        np.testing.assert_array_equal(w, np.eye(4))
        assert w.flags.c_contiguous and w.flags.writeable


# ------------------------------------------------------------ mistake 6: a declaration's kind
@pytest.mark.parametrize(
    "attr,value,match",
    [
        ("has_c", "no", r"`Bad.has_c` must be True or False; got 'no' \(str\) instead\.$"),
        ("in_place", 2, r"`Bad.in_place` must be True or False; got 2 \(int\) instead\.$"),
        ("reads_h_prev", None, r"`Bad.reads_h_prev` must be True or False; got None instead"),
        ("min_hidden", "3", r"`Bad.min_hidden` must be an integer ≥ 1 \(the smallest H the "
                            r"steps work at\); got '3' \(str\) instead\.$"),
        ("min_hidden", 0, r"`Bad.min_hidden` must be an integer ≥ 1"),
        ("hh_own", (0, 0), r"`Bad.hh_own` must be distinct gate indices \(W_hh's block of each "
                           r"takes its gradient from one block of da_h\); got \(0, 0\) instead"),
    ],
    ids=["has_c", "in_place", "reads_h_prev", "min_hidden_str", "min_hidden_0", "hh_own_twice"],
)
def test_a_declaration_of_the_wrong_kind_is_refused_by_name(attr, value, match):
    """has_c = "no" (true) asked the step for a c and was refused as one whose c holds NaN;
    min_hidden = "3" raised a bare TypeError ('>' not supported between 'str' and 'int');
    hh_own naming a gate twice asks for a second block of da_h that nothing reads (here
    refused as a da_h left unwritten)."""
    with pytest.raises(TypeError, match=match):
        type("Bad", (Leaky,), {attr: value})()


def test_numpy_integers_and_0_or_1_still_declare_a_cell():
    """(name, n) in extra took a Python int only (np.int64(2) was refused as if n were not
    positive); gates and tape took NumPy integers already. 0 and 1 declare a switch, as
    before the kind checks."""
    wide = type("Wide", (SRU,), {"extra": (("v", np.int64(2)),)})()
    layer = Recurrent(wide, 3, 4, dtype=np.float64, rng=0)
    gradcheck(layer, np.random.default_rng(0).standard_normal((2, 4, 3))).assert_ok()
    type("Switches", (Leaky,), {"has_c": 0, "reads_h_prev": 1, "min_hidden": np.int64(2)})()
