"""A researcher's pass over the cell protocol (rnnlab.cells.base): four cells written from the
documentation alone, checked against float64 finite differences on both paths."""

import numpy as np
import pytest

from rnnlab import Linear, Sequential, fast, gradcheck, settings
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
