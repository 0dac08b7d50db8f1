"""Cells written from the documentation alone (rnnlab.cells.base's protocol, README's "A cell
of your own"), run as a researcher runs a new cell: on both paths, stacked, bidirectional,
padded, from a given state, against float64 finite differences and against each other."""

import numpy as np
import pytest

from rnnlab import fast, gradcheck, settings
from rnnlab.cells import Cell
from rnnlab.cells.pointwise import blocks, one, positive, relu, sigmoid, tanh, units, zero
from rnnlab.layers import Recurrent


# -------------------------------------------------- the minimal gated unit (Zhou et al. 2016)
# f = σ(W_f x + U_f h + b_f), ñ = tanh(W x + U (f ⊙ h) + b), h' = (1 − f) ⊙ h + f ⊙ ñ;
# gates f, n; tape f, n, r = f ⊙ h_{t-1} (the second product's source)
def mgu_gate(xa, b_ih, ha, b_hh, q, h_prev, c_prev, h, c, tape):
    H = h.shape[-1]
    (xf,), (bf,), (bhf,) = blocks(xa, 1, H), blocks(b_ih, 1, H), blocks(b_hh, 1, H)
    f, _, r = blocks(tape, 3, H)
    for j in units(h):
        fj = sigmoid(xf[j] + bf[j] + ha[j] + bhf[j])
        f[j] = fj
        r[j] = fj * h_prev[j]


def mgu_candidate(xa, b_ih, ha, b_hh, q, h_prev, c_prev, h, c, tape):
    H = h.shape[-1]
    xn, bn, bhn = xa[..., H : 2 * H], b_ih[..., H : 2 * H], b_hh[..., H : 2 * H]
    f, n, _ = blocks(tape, 3, H)
    for j in units(h):
        nj = tanh(xn[j] + bn[j] + ha[j] + bhn[j])
        n[j] = nj
        h[j] = (one(nj) - f[j]) * h_prev[j] + f[j] * nj


def mgu_gate_back(dh, dc, dsrc, q, h_prev, c_prev, h, c, tape, da, da_h, dq):
    H = h.shape[-1]
    f, _, _ = blocks(tape, 3, H)
    (daf,) = blocks(da, 1, H)  # ∂L/∂f so far, from the candidate's stage
    for j in units(h):
        fj = f[j]
        df = daf[j] + dsrc[j] * h_prev[j]  # dsrc: ∂L/∂r
        dhp = dh[j] + dsrc[j] * fj
        daf[j] = df * fj * (one(fj) - fj)
        dh[j] = dhp


def mgu_candidate_back(dh, dc, dsrc, q, h_prev, c_prev, h, c, tape, da, da_h, dq):
    H = h.shape[-1]
    f, n, _ = blocks(tape, 3, H)
    daf, dan = blocks(da, 2, H)
    for j in units(h):
        g, fj, nj = dh[j], f[j], n[j]
        df = g * (nj - h_prev[j])
        dn = g * fj * (one(nj) - nj * nj)
        dhp = g * (one(fj) - fj)
        dan[j] = dn
        daf[j] = df
        dh[j] = dhp


class MGU(Cell):
    name = "mgu-from-docs"
    gates = 2
    tape = 3
    products = (((0, 1), None), ((1, 2), 2))
    stages = (mgu_gate, mgu_candidate)
    backward_stages = (mgu_gate_back, mgu_candidate_back)
    gate_activations = (("f", "forget", 0, "sigmoid"), ("n", "candidate", 1, "tanh"))


# -------------------------------------- IndRNN (Li et al. 2018): h' = relu(W x + u ⊙ h + b)
# The protocol has at least one product: W_hh's is computed and left out of the step, its
# gradient (da_h, hh_own) zero, and b_hh, whose gradient is da_h's, not read.
def ind_step(xa, b_ih, ha, b_hh, q, h_prev, c_prev, h, c, tape):
    for j in units(h):
        h[j] = relu(xa[j] + b_ih[j] + q[j] * h_prev[j])


def ind_back(dh, dc, dsrc, q, h_prev, c_prev, h, c, tape, da, da_h, dq):
    for j in units(h):
        g = dh[j] * positive(h[j])
        dq[j] = dq[j] + g * h_prev[j]
        da[j] = g
        da_h[j] = zero(g)
        dh[j] = g * q[j]


class IndRNN(Cell):
    name = "indrnn-from-docs"
    extra = ("u",)
    hh_own = (0,)
    stages = (ind_step,)
    backward_stages = (ind_back,)

    def init(self, params, H, rng):
        params["u"][...] = rng.uniform(0.0, 1.0, H)
        params["weight_hh"][...] = 0.0


def _run(cell, dtype, numpy_path):
    """Output, final state and every gradient of a 2-layer bidirectional layer on a padded
    batch from a given state, on one path."""
    rng = np.random.default_rng(0)
    layer = Recurrent(cell, 3, 4, 2, bidirectional=True, dtype=dtype, rng=1)
    x = rng.standard_normal((3, 6, 3)).astype(dtype)
    lengths, h0 = np.array([6, 2, 4]), (0.5 * rng.standard_normal((4, 3, 4))).astype(dtype)
    with settings.override(no_numba=numpy_path):
        f = layer.forward(x, lengths=lengths, state=h0)
        d = rng.standard_normal(f.output.shape).astype(dtype)
        b = layer.backward(f, d, rng.standard_normal(h0.shape).astype(dtype))
        report = gradcheck(layer, x, lengths=lengths, state=h0) if dtype == np.float64 else None
    return {"output": f.output, "h_n": f.state, "input": b.input, "h0": b.state, **b.params}, report


@pytest.mark.parametrize("make", [MGU, IndRNN])
def test_a_cell_written_from_the_docs_passes_gradcheck_on_both_paths_and_they_agree(make):
    numpy_run, report = _run(make(), np.float64, True)
    assert report.max_error < 1e-7, str(report)
    if not fast.available():
        pytest.skip("numba is not installed: no compiled loop to compare")
    for dtype, tol in ((np.float64, 1e-12), (np.float32, 1e-5)):
        compiled, report = _run(make(), dtype, False)
        assert report is None or report.max_error < 1e-7, str(report)
        numpy_run = _run(make(), dtype, True)[0]
        for k, v in numpy_run.items():
            np.testing.assert_allclose(compiled[k], v, rtol=tol, atol=tol, err_msg=k)


# ------------------------------- a gate without recurrence: rows of W_hh that no product reads
# h' = σ(W_g x + b_g) ⊙ tanh(W x + U h + b): two gates, one product (on the first)
def gated(xa, b_ih, ha, b_hh, q, h_prev, c_prev, h, c, tape):
    H = h.shape[-1]
    n, g = blocks(tape, 2, H)
    xn, xg = blocks(xa, 2, H)
    bn, bg = blocks(b_ih, 2, H)
    (bhn,) = blocks(b_hh, 1, H)
    for j in units(h):
        nj = tanh(xn[j] + bn[j] + ha[j] + bhn[j])
        gj = sigmoid(xg[j] + bg[j])
        n[j] = nj
        g[j] = gj
        h[j] = gj * nj


def gated_back(dh, dc, dsrc, q, h_prev, c_prev, h, c, tape, da, da_h, dq):
    H = h.shape[-1]
    n, g = blocks(tape, 2, H)
    dan, dag = blocks(da, 2, H)
    for j in units(h):
        d, nj, gj = dh[j], n[j], g[j]
        dan[j] = d * gj * (one(nj) - nj * nj)
        dag[j] = d * nj * gj * (one(gj) - gj)
        dh[j] = d - d


class Gated(Cell):
    name = "gated-input"
    gates = 2
    tape = 2
    stages = (gated,)
    backward_stages = (gated_back,)


def test_rows_of_w_hh_no_product_reads_get_a_zero_gradient(engine_path):
    rng = np.random.default_rng(0)
    layer = Recurrent(Gated(), 3, 4, dtype=np.float64, rng=1)
    x = rng.standard_normal((2, 5, 3))
    f = layer.forward(x)
    for _ in range(4):  # freed memory full of non-zeros, for an uninitialised array to reuse
        junk = np.full((8, 4), 7.0), np.full(8, 7.0)
        del junk
    b = layer.backward(f, np.ones_like(f.output))
    assert not b.params["weight_hh_l0"][4:].any() and not b.params["bias_hh_l0"][4:].any()
    assert b.params["weight_hh_l0"][:4].any()
    report = gradcheck(layer, x)
    assert report.max_error < 1e-7, str(report)
