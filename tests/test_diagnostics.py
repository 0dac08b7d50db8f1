"""rnnlab.diagnostics: lag profiles against finite differences of a perturbed state, Jacobian
products against finite differences of one step, the bounds, spectra, gate saturation with
masks, loss slices and clipping, fixed points and basins, plots and bad input."""

import json
import sys

import numpy as np
import pytest
from helpers import CELLS, make, oracle

from rnnlab import diagnostics as dg
from rnnlab import recurrence
from rnnlab.layers import GRU, LSTM, RNN

IDS = [c[0] for c in CELLS]
EPS = 1e-6


# ----------------------------------------------------------------------------- helpers


def unit(rng, n):
    r = rng.standard_normal(n)
    return r / np.linalg.norm(r)


def run_stack(layer, x, lengths=None, inject=None):
    """The layer's forward pass written out with recurrence.step_forward, one step at a time.

    `inject` = (j, k, delta): add delta (B, H) to the state written at step k of (layer,
    direction) j, so every later step, and the output at k, see the perturbed state.
    Returns (top layer's outputs per direction (T, B, H), final h per (layer, direction)).
    """
    X = np.swapaxes(x, 0, 1)
    T, B, _ = X.shape
    mask = None if lengths is None else recurrence.lengths_to_mask(np.asarray(lengths), T)
    cell, H, D = layer.cell, layer.hidden_size, len(layer.directions)
    inp, finals = X, []
    for k in range(layer.num_layers):
        ys_dirs = []
        for d, sfx in enumerate(layer.directions):
            j = k * D + d
            p = {
                n: layer.params[f"{n}_l{k}{sfx}"]
                for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
            }
            xa = inp @ p["weight_ih"].T
            q = layer._layer_params(k, sfx).q
            q = np.empty(0) if q is None else q.reshape(-1)
            h = np.zeros((B, H))
            c = np.zeros((B, H if cell.has_c else 0))
            scratch = np.empty((B, cell.tape * H))
            ys = np.zeros((T, B, H))
            for t in range(T - 1, -1, -1) if d == 1 else range(T):
                h_new = np.empty((B, H))
                c_new = np.empty_like(c)
                recurrence.step_forward(cell, p["weight_hh"], q, xa[t], p["bias_ih"],
                                        p["bias_hh"], h, c, h_new, c_new, scratch)  # fmt: skip
                if mask is not None:
                    skip = ~mask[t][:, None]
                    h_new = np.where(skip, h, h_new)
                    c_new = np.where(skip, c, c_new)
                if inject is not None and inject[0] == j and inject[1] == t:
                    h_new = h_new + inject[2]
                h, c = h_new, c_new
                ys[t] = h
            if mask is not None:
                ys = np.where(mask[:, :, None], ys, 0.0)
            ys_dirs.append(ys)
            finals.append(h)
        inp = ys_dirs[0] if D == 1 else np.concatenate(ys_dirs, axis=2)
    return ys_dirs, finals


def merged(layer, ys_dirs, lengths):
    """The layer's output (T, B, F) from the top layer's per-direction outputs."""
    if len(ys_dirs) == 1 or layer.merge == "concat":
        return np.concatenate(ys_dirs, axis=2)
    if layer.merge == "sum":
        return ys_dirs[0] + ys_dirs[1]
    p = layer.params
    out = (
        ys_dirs[0] @ p["readout_weight"].T
        + ys_dirs[1] @ p["readout_weight_reverse"].T
        + p["readout_bias"]
    )
    if lengths is not None:
        mask = recurrence.lengths_to_mask(np.asarray(lengths), out.shape[0])
        out = np.where(mask[:, :, None], out, 0.0)
    return out


def fd_state_grads(layer, x, lengths, per_sequence_loss):
    """Central differences of each sequence's loss w.r.t. every h_k: (J, B, T, H)."""
    B, T = x.shape[:2]
    H, J = layer.hidden_size, layer.num_layers * len(layer.directions)
    g = np.zeros((J, B, T, H))
    for j in range(J):
        for k in range(T):
            for i in range(H):
                delta = np.zeros((B, H))
                delta[:, i] = EPS
                up = per_sequence_loss(*run_stack(layer, x, lengths, (j, k, delta)))
                down = per_sequence_loss(*run_stack(layer, x, lengths, (j, k, -delta)))
                g[j, :, k, i] = (up - down) / (2 * EPS)
    return g


def valid_bt(lengths, B, T):
    if lengths is None:
        return np.ones((B, T), bool)
    return np.arange(T)[None] < np.asarray(lengths)[:, None]


# ----------------------------------------------------------------------------- lag profiles

CONFIGS = [  # (cell, layers, bidirectional, lengths)
    ("tanh", 1, False, None),
    ("relu", 1, False, [5, 3, 4]),
    ("lstm", 1, False, [5, 2, 4]),
    ("gru", 2, True, [5, 3, 1]),
    ("gru_orig", 1, True, None),
    ("lstm", 2, True, [4, 5, 2]),
]


@pytest.mark.parametrize("name,L,bi,lengths", CONFIGS)
def test_lag_profile_equals_finite_differences_of_a_perturbed_state(name, L, bi, lengths):
    _, ctor, kw = next(c for c in CELLS if c[0] == name)
    rng = np.random.default_rng(3)
    B, T, I, H = 3, 5, 2, 3
    layer = make(ctor, kw, I, H, L, bi, rng, scale=0.8)
    x = rng.standard_normal((B, T, I))
    prof = dg.gradient_by_lag(layer, x, lengths, seed=7)

    r_rng = np.random.default_rng(7)
    D = 2 if bi else 1
    r = [unit(r_rng, H) for _ in range(D)]
    top = (L - 1) * D

    def loss(ys_dirs, finals):  # L = Σ_d r_d · h_n^(top, d), per sequence
        return sum(finals[top + d] @ r[d] for d in range(D))

    fd = np.linalg.norm(fd_state_grads(layer, x, lengths, loss), axis=3)  # (J, B, T)
    valid = valid_bt(lengths, B, T)
    assert np.all(np.isnan(prof.by_step[:, ~valid]))
    np.testing.assert_allclose(prof.by_step[:, valid], fd[:, valid], rtol=1e-6, atol=1e-9)
    # by lag: lag ℓ is step T_b−1−ℓ forward, step ℓ in reverse; NaN beyond the length
    lens = valid.sum(axis=1)
    for j in range(L * D):
        for b in range(B):
            n = lens[b]
            row = fd[j, b, :n][::-1] if j % D == 0 else fd[j, b, :n]
            np.testing.assert_allclose(prof.per_sequence[j, b, :n], row, rtol=1e-6, atol=1e-9)
            assert np.all(np.isnan(prof.per_sequence[j, b, n:]))
        for lag in range(T):
            have = lens > lag
            expect = prof.per_sequence[j, have, lag].mean()
            np.testing.assert_allclose(prof.mean[j, lag], expect, rtol=1e-12)


def test_lag_profile_with_d_output_through_a_readout_merge():
    rng = np.random.default_rng(4)
    B, T, I, H, K = 2, 4, 2, 3, 2
    lengths = [4, 3]
    layer = make(GRU, {}, I, H, 1, True, rng, merge="readout", output_size=K)
    x = rng.standard_normal((B, T, I))
    d_output = rng.standard_normal((B, T, K))
    prof = dg.gradient_by_lag(layer, x, lengths, d_output=d_output)
    assert prof.loss == "d_output"

    def loss(ys_dirs, finals):
        out = merged(layer, ys_dirs, lengths)  # (T, B, K)
        return np.einsum("tbk,btk->b", out, d_output)

    fd = np.linalg.norm(fd_state_grads(layer, x, lengths, loss), axis=3)
    valid = valid_bt(lengths, B, T)
    np.testing.assert_allclose(prof.by_step[:, valid], fd[:, valid], rtol=1e-6, atol=1e-9)


def test_loss_all_is_a_projection_of_every_output():
    rng = np.random.default_rng(5)
    layer = make(LSTM, {}, 2, 4, 2, True, rng, merge="sum")
    x = rng.standard_normal((3, 6, 2))
    prof = dg.gradient_by_lag(layer, x, [6, 4, 5], "all", seed=2)
    r = unit(np.random.default_rng(2), 4)
    same = dg.gradient_by_lag(layer, x, [6, 4, 5], d_output=np.broadcast_to(r, (3, 6, 4)).copy())
    np.testing.assert_allclose(prof.by_step, same.by_step, rtol=1e-12)
    assert prof.loss == "all"


def test_float32_and_time_major_layers_are_analysed_in_float64():
    rng = np.random.default_rng(15)
    f32 = GRU(2, 4, 2, batch_first=False, rng=rng)  # float32, (T, B, I) inputs
    f64 = GRU(2, 4, 2, dtype=np.float64, rng=0)
    f64.load_state_dict({k: v.astype(np.float64) for k, v in f32.params.items()})
    x = rng.standard_normal((3, 30, 2))
    a = dg.gradient_by_lag(f32, np.swapaxes(x, 0, 1).astype(np.float32), [30, 20, 25])
    b = dg.gradient_by_lag(f64, x.astype(np.float32).astype(np.float64), [30, 20, 25])
    np.testing.assert_allclose(a.by_step, b.by_step, rtol=1e-12)
    ja = dg.jacobian_products(f32, np.swapaxes(x, 0, 1).astype(np.float32), sample=2)
    jb = dg.jacobian_products(f64, x.astype(np.float32).astype(np.float64), sample=2)
    np.testing.assert_allclose(ja.measured, jb.measured, rtol=1e-12)
    assert all(v.dtype == np.float32 for v in f32.params.values())


def orthogonal_rnn(scale, H=8, T=40, input_scale=1.0, seed=0):
    rng = np.random.default_rng(seed)
    layer = RNN(3, H, dtype=np.float64, rng=rng)
    q, _ = np.linalg.qr(rng.standard_normal((H, H)))
    layer.params["weight_hh_l0"][...] = scale * q
    layer.params["weight_ih_l0"] *= input_scale
    layer.params["bias_ih_l0"][...] = 0.0
    layer.params["bias_hh_l0"][...] = 0.0
    return layer, rng.standard_normal((4, T, 3))


def test_small_recurrent_weights_vanish_and_large_ones_explode():
    layer, x = orthogonal_rnn(0.5)
    fit = dg.gradient_by_lag(layer, x).fits[0]
    assert fit.trend == "vanishing"
    assert fit.factor_per_step < 0.5  # tanh' ≤ 1 only shrinks it further
    assert "vanishing" in dg.gradient_by_lag(layer, x).verdict()
    assert "falls by a factor of 10 every" in dg.gradient_by_lag(layer, x).verdict()

    # Tiny inputs keep the units near 0 where tanh' ≈ 1: the gradient grows like 1.3^lag.
    layer, x = orthogonal_rnn(1.3, input_scale=1e-7)
    prof = dg.gradient_by_lag(layer, x)
    assert prof.fits[0].trend == "exploding"
    assert 1.28 < prof.fits[0].factor_per_step < 1.3 + 1e-9
    assert "grows by a factor of 10 every" in prof.verdict()
    assert "exploding" in prof.verdict()


def test_fit_rate_reads_a_geometric_sequence():
    lags = np.arange(30)
    fit = dg.fit_rate(lags, 3.0 * 0.8**lags)
    assert fit.factor_per_step == pytest.approx(0.8, rel=1e-12)
    assert fit.steps_per_decade == pytest.approx(-1 / np.log10(0.8), rel=1e-12)
    assert fit.r2 == pytest.approx(1.0)
    assert fit.trend == "vanishing"
    assert dg.fit_rate(lags, 1.001**lags).trend == "stable"
    values = 2.0**lags
    values[[3, 7]] = np.nan
    values[5] = 0.0  # zeros and NaNs are left out
    fit = dg.fit_rate(lags, values)
    assert fit.points == 27 and fit.factor_per_step == pytest.approx(2.0)
    assert dg.fit_rate([0, 1], [1.0, 0.0]).trend == "undetermined"


def test_gradient_map_rows_are_per_step_losses():
    rng = np.random.default_rng(6)
    layer = make(RNN, {}, 2, 4, 2, False, rng)
    x = rng.standard_normal((3, 6, 2))
    gmap = dg.gradient_map(layer, x, seed=1)
    prof = dg.gradient_by_lag(layer, x, seed=1)
    # the last row is the "last" loss, averaged over the batch by step
    np.testing.assert_allclose(gmap.norms[:, -1, :], prof.by_step.mean(axis=1), rtol=1e-12)
    # a forward RNN's loss at t does not reach later states
    assert np.all(np.triu(gmap.norms[0], 1) == 0.0)
    assert gmap.counts.min() == 3


def test_gradient_map_equals_finite_differences_with_padding():
    rng = np.random.default_rng(8)
    B, T, I, H = 2, 4, 2, 3
    lengths = [4, 2]
    layer = make(LSTM, {}, I, H, 1, True, rng)
    x = rng.standard_normal((B, T, I))
    gmap = dg.gradient_map(layer, x, lengths, seed=3)
    r = unit(np.random.default_rng(3), 2 * H)
    valid = valid_bt(lengths, B, T)
    for t in (0, 3):

        def loss(ys_dirs, finals, t=t):
            return merged(layer, ys_dirs, lengths)[t] @ r

        fd = np.linalg.norm(fd_state_grads(layer, x, lengths, loss), axis=3)  # (J, B, T)
        for k in range(T):
            pair = valid[:, t] & valid[:, k]
            if pair.any():
                np.testing.assert_allclose(
                    gmap.norms[:, t, k], fd[:, pair, k].mean(axis=1), rtol=1e-6, atol=1e-9
                )
            else:
                assert np.all(np.isnan(gmap.norms[:, t, k])) and gmap.counts[t, k] == 0


def exploding_at_rest(layer, scale):
    """`layer` with zero biases and W_hh times `scale`: at zero input its states stay 0 (a
    tanh's φ' = 1 there), finite, while ∂L/∂h_k grows by ~‖W_hh‖ a step of lag."""
    for k, v in layer.params.items():
        if "bias" in k:
            v[...] = 0.0
        if "weight_hh" in k:
            v *= scale
    return layer


def test_norms_of_gradients_past_float64_are_inf_without_warnings():
    """A vector with an inf (or a NaN made of infs) was divided by its largest entry: inf/inf,
    a RuntimeWarning and a NaN norm, the NaN of an entry no sequence has. It is inf now,
    as is a finite vector whose norm passes float64."""
    from rnnlab.diagnostics._common import norms

    a = np.array([[3.0, 4.0], [np.inf, 1.0], [np.nan, 0.0], [1.5e308, 1.5e308], [0.0, 0.0],
                  [1e-200, 1e-200]])  # fmt: skip
    np.testing.assert_array_equal(norms(a, axis=1)[:5], [5.0, np.inf, np.inf, np.inf, 0.0])
    assert norms(a, axis=1)[5] == pytest.approx(np.sqrt(2) * 1e-200, rel=1e-15)


def test_a_gradient_map_that_overflows_float64_says_which_cells_without_warnings():
    """W_hh = 1e200 (one tanh unit at rest): ∂L_2/∂h_0 = 1e400. gradient_map raised NumPy's
    RuntimeWarning (an error under pytest) and its NaN entry, read as "no sequence", was left
    out of the fit without a word. Now the entry is inf, `overflow` marks it, and the
    verdict and the JSON say which and that the fit leaves it out."""
    layer = exploding_at_rest(RNN(1, 1, dtype=np.float64, rng=0), 1.0)
    layer.params["weight_hh_l0"][...] = 1e200
    gmap = dg.gradient_map(layer, np.zeros((1, 3, 1)))
    np.testing.assert_array_equal(gmap.norms[0], [[1, 0, 0], [1e200, 1, 0], [np.inf, 1e200, 1]])
    assert gmap.overflow.tolist() == [[[False] * 3, [False] * 3, [True, False, False]]]
    assert gmap.fits[0].points == 5 and gmap.fits[0].last_lag == 1  # (lag 2's only cell: out)
    assert gmap.verdict().endswith(
        "(×1e+200 per step, fitted over lags 0–1): exploding; overflows float64 (exploding) in "
        "1 of its 9 cells, (t, k) = (2, 0), at lag 2; the fit leaves it out")
    doc = json.loads(json.dumps(gmap.to_json()))
    assert doc["norms"][0][2][0] is None and doc["overflow"][0][2] == [True, False, False]


def test_a_stack_s_gradients_past_float64_are_found_in_both_directions_without_warnings():
    """Two bidirectional tanh layers: the backward pass through the stack raised NumPy's
    "invalid value encountered in matmul" (infs of both signs summed into the layer below)
    and the norms their warnings. Both lag analyses find the overflow instead: inf entries,
    said per direction by the lag it runs by (k − t in reverse; below the top layer a loss
    at t reaches states on both sides of it, lags below 0 too)."""
    layer = exploding_at_rest(
        RNN(2, 4, num_layers=2, bidirectional=True, dtype=np.float64, rng=0), 1e60)
    x = np.zeros((3, 12, 2))
    gmap = dg.gradient_map(layer, x)
    prof = dg.gradient_by_lag(layer, x)
    assert np.isinf(prof.mean).any(axis=1).all()  # (each of the 4 (layer, direction)s)
    t, k = np.indices((12, 12))
    for j, name in enumerate(gmap.names):
        over = gmap.overflow[j]
        assert over.any() and np.isinf(gmap.norms[j][over]).all()
        assert np.isfinite(gmap.norms[j][~over]).all()
        lags = (k - t if name.endswith("_reverse") else t - k)[over]
        assert (lags.min() < 0) == name.startswith("l0")  # (the layer below)
        assert gmap.fits[j].last_lag < lags.max()
        lo, hi = lags.min(), lags.max()
        line = gmap.verdict().splitlines()[j]
        assert line.startswith(f"{name}: ") and line.endswith(
            f"overflows float64 (exploding) in {over.sum()} of its 144 cells, at lags "
            f"{lo}{'–' if lo >= 0 else ' to '}{hi}; the fit leaves them out")


# ----------------------------------------------------------------------------- Jacobians


def fd_step_jacobian(layer, tape, j, t):
    """∂s_t/∂s_prev of step t by central differences of one recurrence.step_forward."""
    k, d = divmod(j, len(layer.directions))
    sfx = layer.directions[d]
    p = layer.params
    cell, H = layer.cell, layer.hidden_size
    xa = tape.X[t] @ p[f"weight_ih_l{k}{sfx}"].T
    q = layer._layer_params(k, sfx).q
    q = np.empty(0) if q is None else q.reshape(-1)
    prev = t + 1 if tape.reverse else t
    s = np.concatenate([tape.hs[prev], tape.cs[prev]], axis=1) if cell.has_c else tape.hs[prev]
    S = s.shape[1]

    def step(state):
        h = np.empty((1, H))
        c = np.empty((1, H if cell.has_c else 0))
        c_prev = state[:, H:] if cell.has_c else np.empty((1, 0))
        recurrence.step_forward(cell, p[f"weight_hh_l{k}{sfx}"], q, xa,
                                p[f"bias_ih_l{k}{sfx}"], p[f"bias_hh_l{k}{sfx}"],
                                state[:, :H].copy(), c_prev, h, c,
                                np.empty((1, cell.tape * H)))  # fmt: skip
        return np.concatenate([h, c], axis=1)[0] if cell.has_c else h[0]

    J = np.empty((S, S))
    for i in range(S):
        e = np.zeros((1, S))
        e[0, i] = EPS
        J[:, i] = (step(s + e) - step(s - e)) / (2 * EPS)
    return J


@pytest.mark.parametrize("name,ctor,kw", CELLS, ids=IDS)
def test_jacobian_products_equal_products_of_finite_difference_steps(name, ctor, kw):
    rng = np.random.default_rng(9)
    B, T, I, H = 3, 7, 2, 3
    layer = make(ctor, kw, I, H, 2, True, rng, scale=0.9)
    x = rng.standard_normal((B, T, I))
    lengths = [7, 5, 6]
    for layer_index, direction in ((0, 0), (1, 1)):
        j = layer_index * 2 + direction
        tape = layer.forward(x[1:2, :5]).cache["tapes"][j]  # sequence 1 alone, cut to length
        fds = np.stack([fd_step_jacobian(layer, tape, j, t) for t in range(5)])
        Js = dg.step_jacobians(
            layer, x, lengths, sample=1, layer_index=layer_index, direction=direction
        )
        np.testing.assert_allclose(Js, fds, rtol=1e-7, atol=1e-9)

        prof = dg.jacobian_products(
            layer,
            x,
            lengths,
            sample=1,
            layer_index=layer_index,
            direction=direction,
            keep_products=True,
        )
        order = range(5) if direction == 1 else range(4, -1, -1)  # processing order from t
        P = np.eye(fds.shape[1])
        for ell, s in enumerate(order):
            P = P @ fds[s]
            np.testing.assert_allclose(prof.products[ell], P, rtol=1e-6, atol=1e-9)
            assert prof.measured[ell] == pytest.approx(np.linalg.norm(P, 2), rel=1e-6)
        assert prof.t == (0 if direction == 1 else 4) and list(prof.lags) == [1, 2, 3, 4, 5]
        # the bounds are never below the measured norm
        assert np.all(prof.measured <= prof.product_bound * (1 + 1e-12))
        assert np.all(prof.product_bound <= prof.bound * (1 + 1e-12))
        assert np.all(prof.measured <= prof.bound * (1 + 1e-12))


@pytest.mark.parametrize("ctor", [RNN, LSTM, GRU], ids=["rnn", "lstm", "gru"])
def test_jacobian_products_equal_finite_differences_of_the_whole_chain(ctor):
    """∂s_t/∂s_k against central differences of the layer itself run from a perturbed s_k
    to s_t (its forward with a state): the test above checks each factor J_i, this one the
    chain, the end step t and the lag the plot puts it at."""
    rng = np.random.default_rng(3)
    I, H, t, k = 2, 3, 5, 1
    layer = ctor(I, H, batch_first=True, dtype=np.float64, rng=1)
    x = rng.standard_normal((1, 7, I))
    prof = dg.jacobian_products(layer, x, t=t, keep_products=True)
    has_c = layer.cell.has_c
    s_k = layer.forward(x[:, : k + 1]).state
    s0 = np.concatenate([np.ravel(a) for a in s_k]) if has_c else np.ravel(s_k)

    def run(s):
        state = (s[:H].reshape(1, 1, H), s[H:].reshape(1, 1, H)) if has_c else s.reshape(1, 1, H)
        end = layer.forward(x[:, k + 1 : t + 1], state=state).state
        return np.concatenate([np.ravel(a) for a in end]) if has_c else np.ravel(end)

    fd = np.stack([(run(s0 + e) - run(s0 - e)) / (2 * EPS) for e in EPS * np.eye(s0.size)], 1)
    ell = list(prof.lags).index(t - k)
    np.testing.assert_allclose(prof.products[ell], fd, rtol=1e-6, atol=1e-9)
    assert prof.measured[ell] == pytest.approx(np.linalg.norm(fd, 2), rel=1e-6)


def test_elman_step_jacobian_is_diag_dphi_times_W_and_bound_is_the_notes():
    layer, x = orthogonal_rnn(1.2, H=5, T=12, input_scale=0.3, seed=2)
    Js = dg.step_jacobians(layer, x)
    hs = layer.forward(x[:1]).output[0]  # (T, H)
    W = layer.params["weight_hh_l0"]
    for t in range(12):
        np.testing.assert_allclose(Js[t], (1 - hs[t] ** 2)[:, None] * W, rtol=1e-14)
    prof = dg.jacobian_products(layer, x, t=9)
    alpha, beta = 1.2, float(np.max(1 - hs[:10] ** 2))
    assert prof.alpha == pytest.approx(alpha, rel=1e-12)
    assert prof.beta == pytest.approx(beta, rel=1e-12)
    np.testing.assert_allclose(prof.bound, (alpha * beta) ** np.arange(1, 11), rtol=1e-12)
    worst = dg.jacobian_products(layer, x, t=9, max_dphi=1.0)
    np.testing.assert_allclose(worst.bound, 1.2 ** np.arange(1, 11), rtol=1e-12)
    assert np.all(prof.measured <= prof.bound * (1 + 1e-12))
    assert "(‖W_hh‖₂·max|φ'|)^(t−k)" in prof.verdict()


def test_the_jacobian_is_named_by_the_cell_s_state_and_class_not_its_name(monkeypatch,
                                                                          tmp_path):
    """The verdict and the plot called (h, c) products ∂h_t/∂h_k unless the cell was named
    "lstm", and left out the notes' bound (computed: the class is an ElmanCell) unless
    named rnn, relu or irnn: an LSTMCell or ElmanCell subclass of another name was
    mislabelled."""
    oracle("matplotlib")
    from rnnlab.cells import ElmanCell, LSTMCell
    from rnnlab.layers import Recurrent

    class Mine(LSTMCell):
        name = "mine"

    class MyElman(ElmanCell):
        def __init__(self):
            super().__init__()
            self.name = "my-elman"

    x = np.random.default_rng(0).standard_normal((1, 4, 2))
    lstm = dg.jacobian_products(Recurrent(Mine(), 2, 3, batch_first=True, rng=0), x)
    assert "‖∂(h,c)_t/∂(h,c)_k‖₂" in lstm.verdict() and lstm.to_json()["has_c"] is True
    ax = _drawn(monkeypatch, dg.plot_jacobian_bound, lstm, tmp_path).axes[0]
    label = ax.get_legend_handles_labels()[1][0]
    assert label == r"measured $\|\partial (h,c)_t/\partial (h,c)_k\|_2$"
    h_block = Recurrent(Mine(), 2, 3, batch_first=True, rng=0)
    assert "‖∂h_t/∂h_k‖₂" in dg.jacobian_products(h_block, x, block="h").verdict()
    elman = dg.jacobian_products(Recurrent(MyElman(), 2, 3, batch_first=True, rng=0), x)
    assert "with ‖W_hh‖₂ = " in elman.verdict()
    ax = _drawn(monkeypatch, dg.plot_jacobian_bound, elman, tmp_path).axes[0]
    assert len(ax.lines) == 3 and "max|\\phi'|" in ax.get_legend_handles_labels()[1][2]


def test_jacobian_power_iteration_agrees_with_svd_and_h_block():
    rng = np.random.default_rng(10)
    layer = make(LSTM, {}, 2, 4, 1, False, rng)
    x = rng.standard_normal((1, 9, 2))
    svd = dg.jacobian_products(layer, x, method="svd", keep_products=True)
    power = dg.jacobian_products(layer, x, method="power")
    np.testing.assert_allclose(power.measured, svd.measured, rtol=1e-8)
    np.testing.assert_allclose(power.step_norms, svd.step_norms, rtol=1e-8)
    h = dg.jacobian_products(layer, x, block="h")
    expect = [np.linalg.norm(P[:4, :4], 2) for P in svd.products]
    np.testing.assert_allclose(h.measured, expect, rtol=1e-12)
    assert np.all(h.measured <= svd.measured * (1 + 1e-12))


def test_jacobian_products_show_vanishing_and_exploding():
    layer, x = orthogonal_rnn(0.6, T=30)
    assert dg.jacobian_products(layer, x).fit.trend == "vanishing"
    layer, x = orthogonal_rnn(1.3, T=30, input_scale=1e-7)
    prof = dg.jacobian_products(layer, x)
    assert prof.fit.trend == "exploding"
    assert prof.fit.factor_per_step == pytest.approx(1.3, rel=1e-3)


# ----------------------------------------------------------------------------- spectra


def test_recurrent_spectrum_of_a_scaled_orthogonal_matrix():
    layer, _ = orthogonal_rnn(0.7, H=6)
    spec = dg.recurrent_spectrum(layer)
    (blk,) = spec.blocks
    np.testing.assert_allclose(blk.singular_values, 0.7, rtol=1e-12)
    np.testing.assert_allclose(np.abs(blk.eigenvalues), 0.7, rtol=1e-12)
    assert blk.spectral_norm == pytest.approx(0.7) and blk.spectral_radius == pytest.approx(0.7)
    assert "vanishing" in spec.verdict()
    layer, _ = orthogonal_rnn(1.5, H=6)
    assert "exploding possible" in dg.recurrent_spectrum(layer).verdict()


def test_recurrent_spectrum_splits_gate_blocks():
    rng = np.random.default_rng(11)
    layer = make(LSTM, {}, 2, 5, 2, True, rng)
    spec = dg.recurrent_spectrum(layer)
    assert len(spec.blocks) == 2 * 2 * 4
    assert spec.blocks[5].name == "weight_hh_l0_reverse[f]"
    W = layer.params["weight_hh_l0_reverse"][5:10]
    np.testing.assert_allclose(spec.blocks[5].singular_values, np.linalg.svd(W, compute_uv=False))
    assert spec.blocks[5].spectral_radius == pytest.approx(np.abs(np.linalg.eigvals(W)).max())
    gru = dg.recurrent_spectrum(rng.standard_normal((12, 4)))
    assert [b.gate for b in gru.blocks] == ["r", "z", "n"]


def test_a_cell_of_one_s_own_is_not_read_as_an_elman_unit_or_an_lstm():
    """A custom cell of one gate was judged as a tanh RNN ("must vanish") and one of four
    got an LSTM's gate names; its blocks are now own0, ... with a verdict that says so (a
    bare matrix's blocks keep their names and the gated verdict)."""
    from rnnlab.cells import ElmanCell
    from rnnlab.layers import Recurrent

    layer = Recurrent(type("Mine", (ElmanCell,), {})(), 2, 4, dtype=np.float64, rng=0)
    layer.params["weight_hh_l0"] *= 0.1
    spec = dg.recurrent_spectrum(layer)
    assert [b.gate for b in spec.blocks] == ["hh"]  # (a subclass of ElmanCell is one)
    custom = Recurrent(_custom_cell(), 2, 4, dtype=np.float64, rng=0)
    custom.params["weight_hh_l0"] *= 0.1
    spec = dg.recurrent_spectrum(custom)
    assert [b.gate for b in spec.blocks] == ["own0"]
    verdict = spec.verdict()
    assert "must vanish" not in verdict and "a cell of its own" in verdict
    bare = dg.recurrent_spectrum(np.random.default_rng(1).standard_normal((10, 5)))
    assert [b.gate for b in bare.blocks] == ["block0", "block1"]
    assert "gated cell" in bare.verdict() and "a cell of its own" not in bare.verdict()


def _custom_cell():
    from rnnlab.cells import Cell
    from rnnlab.cells.pointwise import one, tanh, units

    def step(xa, b_ih, ha, b_hh, q, h_prev, c_prev, h, c, tape):
        for j in units(h):
            a = tanh(xa[j] + b_ih[j] + ha[j] + b_hh[j])
            tape[j] = a
            h[j] = a

    def back(dh, dc, dsrc, q, h_prev, c_prev, h, c, tape, da, da_h, dq):
        for j in units(h):
            a, d = tape[j], dh[j]
            da[j] = d * (one(a) - a * a)
            dh[j] = d - d

    return type("Plain", (Cell,), {"name": "plain", "tape": 1, "stages": (step,),
                                   "backward_stages": (back,)})()


def test_spectrum_over_checkpoints_tracks_the_scale():
    rng = np.random.default_rng(12)
    q, _ = np.linalg.qr(rng.standard_normal((4, 4)))
    cks = [
        (s, {"0.weight": np.ones((2, 2)), "1.weight_hh_l0": (1 + s / 10) * q}) for s in (0, 10, 20)
    ]
    hist = dg.spectrum_over_checkpoints(cks)
    assert hist.names == ["1.weight_hh_l0"]
    np.testing.assert_allclose(hist.spectral_norms[:, 0], [1, 2, 3], rtol=1e-12)
    np.testing.assert_allclose(hist.spectral_radii[:, 0], [1, 2, 3], rtol=1e-12)
    assert hist.singular_values[0].shape == (3, 4)
    assert "‖W‖₂ 1 → 3" in hist.verdict()


# ----------------------------------------------------------------------------- gates


def test_gate_saturation_respects_masks():
    rng = np.random.default_rng(13)
    B, T, I, H = 3, 6, 2, 4
    lengths = [4, 2, 3]  # no sequence reaches steps 4 and 5
    for layer in (
        make(GRU, {}, I, H, 1, True, rng, scale=2.0),
        make(LSTM, {}, I, H, 2, False, rng, scale=2.0),
    ):
        x = rng.standard_normal((B, T, I))
        x[valid_bt(lengths, B, T) == 0] = 1e3  # garbage in the padding must not count
        sat = dg.gate_saturation(layer, x, lengths)
        G = len(sat.gates)
        low, high = np.zeros((len(sat.names), G, T)), np.zeros((len(sat.names), G, T))
        n = np.zeros(T)
        for b, length in enumerate(lengths):
            tapes = layer.forward(x[b : b + 1, :length]).cache["tapes"]
            n[:length] += H
            for j, tape in enumerate(tapes):
                acts = tape.saved[:, 0]  # the gate activations come first
                for g in range(G):
                    a = acts[:, g * H : (g + 1) * H]
                    u = (a + 1) / 2 if sat.gates[g] in ("g", "n") else a
                    low[j, g, :length] += (u < 0.05).sum(axis=1)
                    high[j, g, :length] += (u > 0.95).sum(axis=1)
        np.testing.assert_array_equal(sat.counts, n)
        np.testing.assert_allclose(sat.low_fraction[:, :, :4], low[:, :, :4] / n[:4])
        np.testing.assert_allclose(sat.high_fraction[:, :, :4], high[:, :, :4] / n[:4])
        assert np.all(np.isnan(sat.low_fraction[:, :, 4:]))
        np.testing.assert_allclose(sat.overall_high, high.sum(axis=2) / n.sum())
        for frac in (sat.low_fraction[:, :, :4], sat.high_fraction[:, :, :4]):
            assert np.all((frac >= 0) & (frac <= 1))
        assert (sat.high_fraction[:, :, :4] + sat.low_fraction[:, :, :4]).max() > 0


def test_gate_saturation_takes_float64_input_for_a_float32_layer():
    """As every analysis does (it was refused: the layer's dtype against the input's)."""
    layer = LSTM(3, 4, rng=0)  # float32
    x = np.random.default_rng(0).standard_normal((2, 5, 3))
    a, b = dg.gate_saturation(layer, x), dg.gate_saturation(layer, x.astype(np.float32))
    np.testing.assert_array_equal(a.high_fraction, b.high_fraction)


def test_forget_gate_with_a_large_bias_is_saturated_open():
    layer = LSTM(3, 6, forget_bias=20.0, dtype=np.float64, rng=0)
    x = np.random.default_rng(0).standard_normal((2, 5, 3))
    sat = dg.gate_saturation(layer, x)
    f = sat.gates.index("f")
    assert sat.overall_high[0, f] == 1.0 and sat.overall_low[0, f] == 0.0
    assert "forget (f) near 0 in 0%, near 1 in 100%: saturated" in sat.verdict()
    # a tanh's bottom is −1: its fractions are read on (a + 1)/2, the verdict says so
    assert "candidate (g) near −1 in " in sat.verdict()
    assert sat.activations == ["sigmoid", "sigmoid", "tanh", "sigmoid"]
    rnn = dg.gate_saturation(RNN(3, 4, dtype=np.float64, rng=0), x)
    assert rnn.gates == ["h"] and "hidden (h) near −1 in " in rnn.verdict()


# The gate activations from the cells' equations, written out here: what gate_saturation
# reads off the tape where each cell's gate_activations point is checked against them.
def sigma(v):
    return 1.0 / (1.0 + np.exp(-v))


def _ln(v):
    mu = v.mean()
    return (v - mu) / np.sqrt(((v - mu) ** 2).mean() + 1e-5)


def built_in_gates(layer, x, lengths):
    """{symbol: (T, B, H), NaN at padded steps} of a one-layer, one-direction layer of a
    built-in cell, with what goes around it (projection, zoneout in evaluation)."""
    from rnnlab.cells import GRUCell, LSTMCell

    cell, p = layer.cell, {k[: -len("_l0")]: v for k, v in layer.params.items()}
    B, T, _ = x.shape
    H, (z_h, z_c) = layer.hidden_size, layer.zoneout
    acts = {}
    for b in range(B):
        h, c = np.zeros(layer.carry_size), np.zeros(H)
        for t in range(lengths[b]):
            xa = p["weight_ih"] @ x[b, t] + p["bias_ih"]
            hh = p["weight_hh"] @ h + p["bias_hh"]
            c_new = c
            if isinstance(cell, LSTMCell):
                z = (p["ln_gain_ih"] * _ln(xa) + p["ln_gain_hh"] * _ln(hh) + p["ln_bias"]
                     if cell.layer_norm else xa + hh)  # fmt: skip
                blocks = "fgo" if cell.coupled else "ifgo"
                zs = dict(zip(blocks, np.split(z, cell.gates), strict=True))

                def peep(name, state):
                    return p[name] * state if cell.peephole else 0.0

                f = sigma(zs["f"] + peep("weight_cf", c))
                i = 1.0 - f if cell.coupled else sigma(zs["i"] + peep("weight_ci", c))
                g = np.tanh(zs["g"])
                c_new = f * c + i * g
                if cell.cell_clip is not None:
                    c_new = np.clip(c_new, -cell.cell_clip, cell.cell_clip)
                o = sigma(zs["o"] + peep("weight_co", c_new))
                cc = p["ln_gain_c"] * _ln(c_new) + p["ln_bias_c"] if cell.layer_norm else c_new
                h_new, gates = o * np.tanh(cc), {"i": i, "f": f, "g": g, "o": o}
            elif isinstance(cell, GRUCell):
                (x_r, x_z, x_n), (h_r, h_z, h_n) = np.split(xa, 3), np.split(hh, 3)
                r, z = sigma(x_r + h_r), sigma(x_z + h_z)
                if not cell.reset_after:  # W_hn (r ⊙ h) + b_hn
                    h_n = p["weight_hh"][2 * H :] @ (r * h) + p["bias_hh"][2 * H :]
                    r_n = h_n
                else:
                    r_n = r * h_n
                n = np.tanh(x_n + r_n)
                h_new, gates = (1 - z) * n + z * h, {"r": r, "z": z, "n": n}
            else:  # the tanh Elman unit
                h_new = np.tanh(xa + hh)
                gates = {"h": h_new}
            if layer.proj_size:
                h = p["weight_hr"] @ h_new
            else:
                h = z_h * h + (1 - z_h) * h_new
            c = z_c * c + (1 - z_c) * c_new
            for s, v in gates.items():
                acts.setdefault(s, np.full((T, B, H), np.nan))[t, b] = v
    return acts


def fractions_of(acts, kind, low, high):
    """(low fraction, high fraction) per step, NaN where no sequence has the step, of
    activations (..., T, B, H) NaN at padded steps, read on their range's [0, 1] scale."""
    lo, hi = {"sigmoid": (0.0, 1.0), "tanh": (-1.0, 1.0)}[kind]
    valid = ~np.isnan(acts)
    u = (np.where(valid, acts, lo) - lo) / (hi - lo)
    n = valid.sum(axis=(-2, -1))
    with np.errstate(invalid="ignore"):
        return (((u < low) & valid).sum(axis=(-2, -1)) / n,
                ((u > high) & valid).sum(axis=(-2, -1)) / n)  # fmt: skip


BUILT_IN_GATES = {
    "lstm": (LSTM, {}),
    "lstm-peephole-clip": (LSTM, dict(peephole=True, cell_clip=0.6)),
    "lstm-coupled": (LSTM, dict(coupled=True)),
    "lstm-layer-norm": (LSTM, dict(layer_norm=True)),
    "lstm-layer-norm-all": (LSTM, dict(layer_norm=True, peephole=True, coupled=True,
                                       cell_clip=0.6)),  # fmt: skip
    "lstm-proj": (LSTM, dict(proj_size=3)),
    "lstm-zoneout": (LSTM, dict(zoneout=(0.3, 0.2))),
    "gru": (GRU, {}),
    "gru-orig": (GRU, dict(reset_after=False)),
    "gru-zoneout": (GRU, dict(zoneout=0.3)),
    "rnn": (RNN, {}),
    "rnn-proj": (RNN, dict(proj_size=3)),
    "rnn-zoneout": (RNN, dict(zoneout=0.4)),
}


@pytest.mark.parametrize("name", list(BUILT_IN_GATES))
def test_gate_saturation_of_the_built_in_cells_is_their_equations(name):
    """Each built-in cell declares its gates as a cell of one's own does (gate_saturation
    knows no cell class): the fractions are those of the activations its equations give,
    through a projection and zoneout, at padded steps too; the same as before the
    declarations (compared once, on 610 results over these cells and both paths)."""
    ctor, kw = BUILT_IN_GATES[name]
    rng = np.random.default_rng(41)
    layer = make(ctor, kw, 3, 5, rng=rng, scale=1.5)
    x = rng.standard_normal((4, 7, 3)) * 1.5
    lengths = np.array([7, 3, 5, 1])
    sat = dg.gate_saturation(layer, x, lengths, low=0.1, high=0.9)
    acts = built_in_gates(layer, x, lengths)
    coupled = getattr(layer.cell, "coupled", False)  # (i = 1 − f: not a gate of its own)
    assert sat.gates == [s for s in acts if not (coupled and s == "i")]
    assert sat.counts.tolist() == [4 * 5, 3 * 5, 3 * 5, 2 * 5, 2 * 5, 1 * 5, 1 * 5]
    for g, (gate, kind) in enumerate(zip(sat.gates, sat.activations, strict=True)):
        want_lo, want_hi = fractions_of(acts[gate], kind, 0.1, 0.9)
        np.testing.assert_allclose(sat.low_fraction[0, g], want_lo, rtol=1e-12, err_msg=gate)
        np.testing.assert_allclose(sat.high_fraction[0, g], want_hi, rtol=1e-12, err_msg=gate)
    assert 0 < np.nanmax(sat.low_fraction + sat.high_fraction)  # (something to count)
    assert sat.left_out == []


def mgu_gates(layer, x, lengths, candidate):
    """{"f", "n": (J, T, B, H), NaN at padded steps} of a stack of helpers.mgu_cell layers,
    from its equations: each sequence's valid steps, each direction, layer by layer."""
    B, T, _ = x.shape
    H, D, (z_h, _) = layer.hidden_size, len(layer.directions), layer.zoneout
    phi = np.tanh if candidate == "tanh" else (lambda v: np.maximum(v, 0.0))
    acts = {s: np.full((layer.num_layers * D, T, B, H), np.nan) for s in "fn"}
    for b in range(B):
        inp = x[b, : lengths[b]]
        for k in range(layer.num_layers):
            outs = []
            for d, sfx in enumerate(layer.directions):
                names = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
                W_ih, W_hh, b_ih, b_hh = (layer.params[f"{n}_l{k}{sfx}"] for n in names)
                h, out = np.zeros(H), np.zeros((len(inp), H))
                for t in range(len(inp))[:: -1 if d else 1]:
                    xa = W_ih @ inp[t] + b_ih
                    f = sigma(xa[:H] + W_hh[:H] @ h + b_hh[:H])
                    n = phi(xa[H:] + W_hh[H:] @ (f * h) + b_hh[H:])
                    h = z_h * h + (1 - z_h) * (h + f * (n - h))
                    out[t] = h
                    acts["f"][k * D + d, t, b], acts["n"][k * D + d, t, b] = f, n
                outs.append(out)
            inp = np.concatenate(outs, axis=1)
    return acts


@pytest.mark.parametrize("zoneout", [0.0, 0.25], ids=["plain", "zoneout"])
def test_gate_saturation_of_a_cell_of_one_s_own_is_its_equations(zoneout):
    """A minimal gated unit written in the tests declares f (sigmoid, tape block 0) and n
    (tanh, block 1); its fractions, two layers both ways on a padded batch, are those of
    the activations its equations give (helpers.mgu_cell's block 2, f ⊙ h, is no gate)."""
    from helpers import mgu_cell

    from rnnlab.layers import Recurrent

    rng = np.random.default_rng(42)
    layer = Recurrent(mgu_cell(), 3, 4, 2, bidirectional=True, zoneout=zoneout,
                      dtype=np.float64, rng=rng)  # fmt: skip
    for v in layer.params.values():
        v[...] = rng.uniform(-2.0, 2.0, v.shape)
    x = rng.standard_normal((3, 6, 3)) * 1.5
    lengths = np.array([6, 2, 4])
    sat = dg.gate_saturation(layer, x, lengths)
    assert (sat.gates, sat.gate_names, sat.activations) == (
        ["f", "n"], ["forget", "candidate"], ["sigmoid", "tanh"])
    assert sat.names == ["l0", "l0_reverse", "l1", "l1_reverse"]
    acts = mgu_gates(layer, x, lengths, "tanh")
    for g, (gate, kind) in enumerate((("f", "sigmoid"), ("n", "tanh"))):
        want_lo, want_hi = fractions_of(acts[gate], kind, 0.05, 0.95)
        np.testing.assert_allclose(sat.low_fraction[:, g], want_lo, rtol=1e-12, err_msg=gate)
        np.testing.assert_allclose(sat.high_fraction[:, g], want_hi, rtol=1e-12, err_msg=gate)
        valid = ~np.isnan(acts[gate])
        u = acts[gate] if kind == "sigmoid" else (acts[gate] + 1) / 2
        high = ((np.where(valid, u, 0.5) > 0.95) & valid).sum(axis=(1, 2, 3)) / valid[0].sum()
        np.testing.assert_allclose(sat.overall_high[:, g], high, rtol=1e-12)
    assert sat.overall_low.max() > 0 and sat.overall_high.max() > 0  # (something to count)
    assert (sat.overall_low + sat.overall_high).max() < 1
    assert "forget (f) near 0 in " in sat.verdict() and "candidate (n) near −1 in " in sat.verdict()


def test_a_relu_candidate_is_left_out_and_said():
    """Declared relu, a gate has no top to saturate at: the others are counted, and the
    verdict and the JSON say which one was not."""
    from helpers import mgu_cell

    from rnnlab.layers import Recurrent

    rng = np.random.default_rng(43)
    layer = Recurrent(mgu_cell("relu"), 3, 4, dtype=np.float64, rng=rng)
    for v in layer.params.values():
        v[...] = rng.uniform(-2.0, 2.0, v.shape)
    x = rng.standard_normal((3, 6, 3))
    sat = dg.gate_saturation(layer, x)
    assert sat.gates == ["f"] and sat.left_out == ["candidate (n, relu)"]
    want_lo, want_hi = fractions_of(mgu_gates(layer, x, [6, 6, 6], "relu")["f"], "sigmoid",
                                    0.05, 0.95)  # fmt: skip
    np.testing.assert_allclose(sat.low_fraction[:, 0], want_lo, rtol=1e-12)
    np.testing.assert_allclose(sat.high_fraction[:, 0], want_hi, rtol=1e-12)
    assert "not counted: candidate (n, relu) (no upper end to saturate at)" in sat.verdict()
    assert sat.to_json()["left_out"] == ["candidate (n, relu)"]


def test_a_cell_that_does_not_declare_its_gates_is_told_how():
    from helpers import mgu_cell

    from rnnlab.layers import Recurrent

    x = np.zeros((1, 3, 2))
    with pytest.raises(ValueError, match=(
            r"`layer` must be a layer whose cell declares gate activations with two ends "
            r"\(sigmoid or tanh\); got a layer of MGU\(mgu\) \(the cell does not say where its "
            r"gate activations lie \(Cell.gate_activations\)\) instead. A cell declares them as "
            r"a class attribute, gate_activations = \(\('f', 'forget', 0, 'sigmoid'\), .*'h', the "
            r"output h_t\).*'sigmoid', 'tanh', 'relu'")):  # fmt: skip
        dg.gate_saturation(Recurrent(mgu_cell(declare=False), 2, 3, rng=0), x)
    empty = mgu_cell()
    empty.gate_activations = ()
    with pytest.raises(ValueError, match=r"\(the cell declares no gate activations \(its "
                                         r"gate_activations is empty\)\) instead\.$"):
        dg.gate_saturation(Recurrent(empty, 2, 3, rng=0), x)
    with pytest.raises(ValueError, match=r"got a layer of ElmanCell\(relu\) \(relu units have "
                                         r"no upper end to saturate at\) instead\.$"):
        dg.gate_saturation(RNN(2, 3, nonlinearity="relu", rng=0), x)


def test_a_declaration_that_names_no_activation_is_refused_not_counted():
    """A declaration Recurrent's one step let through (changed after the layer was made):
    a value outside the activation's range is said with where it lies, not counted as
    saturated (the layer-normalised LSTM's block 4 holds x̂ of its input gate); a place past
    the tape is refused as Cell.check refuses it, not read as an empty block."""
    layer = LSTM(3, 4, layer_norm=True, dtype=np.float64, rng=0)
    layer.cell.gate_activations = (("x", "normalised input", 4, "tanh"),)
    x = np.random.default_rng(0).standard_normal((2, 5, 3))
    with pytest.raises(ValueError, match=(
            r"`layer` must be a layer whose cell's gate_activations name its activations; got a "
            r"layer of LSTMCell\(lstm \(layer_norm\)\), whose normalised input \(x\) at tape "
            r"block 4 holds -?\d.* at step \d of sequence \d \(l0\), outside tanh's range "
            r"\[−1, 1\] instead. A block the forward step leaves a pre-activation")):  # fmt: skip
        dg.gate_saturation(layer, x)
    layer.cell.gate_activations = (("x", "normalised input", 14, "tanh"),)  # (14 blocks)
    with pytest.raises(TypeError, match=r"`LSTMCell.gate_activations` must be entries whose "
                                        r"place is a tape block in \[0, 14\)"):  # fmt: skip
        dg.gate_saturation(layer, x)


# ----------------------------------------------------------------------------- loss slices


def one_unit_rnn(w, T):
    """h_t = tanh(w h_{t−1} + b) from h_0 = 0 with no input; loss (h_T − 1)²."""
    layer = RNN(1, 1, dtype=np.float64, rng=0)
    for v in layer.params.values():
        v[...] = 0.0
    layer.params["weight_hh_l0"][...] = w
    x = np.zeros((1, T, 1))
    base = layer.state_dict()

    def loss_fn(params):
        layer.load_state_dict(params)
        return float((layer.forward(x).output[0, -1, 0] - 1.0) ** 2)

    return layer, x, base, loss_fn


def test_loss_along_the_bias_has_a_cliff_when_the_recurrent_weight_is_large():
    _, _, base, loss_fn = one_unit_rnn(5.0, 30)
    alphas = np.linspace(-1, 1, 200)  # 0 is not on the grid: there h stays at 0
    sl = dg.loss_slice(loss_fn, base, "bias_hh_l0", alphas)
    assert sl.cliff and "a cliff" in sl.verdict()
    a, b = sl.jump_between
    assert a < 0 < b and sl.jump > 3.9  # from h_T ≈ −1 (loss 4) to h_T ≈ 1 (loss 0)
    assert sl.base_loss == pytest.approx(1.0)  # at α = 0, h_T = 0
    _, _, base, loss_fn = one_unit_rnn(0.5, 30)
    smooth = dg.loss_slice(loss_fn, base, "bias_hh_l0", alphas)
    assert not smooth.cliff and "smooth" in smooth.verdict()


def test_a_loss_that_turns_non_finite_along_the_slice_is_a_cliff_there():
    """Flat, then overflowing float64 between two neighbours: a wall too high to measure,
    a cliff where it overflows (it was "smooth": the non-finite slopes were dropped before
    the steepest one was looked for)."""
    params = {"w": np.array([0.0])}
    alphas = np.linspace(-1, 1, 21)

    def loss_fn(p):
        return 1.25 if p["w"][0] < 0.25 else float("inf")

    sl = dg.loss_slice(loss_fn, params, "w", alphas)
    assert sl.cliff and sl.overflows and not sl.undetermined
    a, b = sl.jump_between
    assert a == pytest.approx(0.2) and b == pytest.approx(0.3)
    assert sl.verdict().endswith("it overflows between α = 0.2 and 0.3: a cliff")
    assert "(8 non-finite values)" in sl.verdict()  # α = 0.3 .. 1
    # overflowing at both ends: the wall named is the one beside the largest finite loss
    def both_ends(p):
        w = p["w"][0]
        return float("inf") if abs(w) > 0.65 else (1.0 if w < 0 else 1e300 * w)

    two = dg.loss_slice(both_ends, params, "w", alphas)
    assert two.overflows and two.jump_between == pytest.approx((0.6, 0.7))
    nowhere = dg.loss_slice(lambda p: float("nan"), params, "w", alphas)
    assert nowhere.undetermined and not nowhere.cliff
    everywhere = dg.loss_slice(lambda p: float(p["w"][0]) ** 2, params, "w", alphas)
    assert not everywhere.cliff and not everywhere.overflows


def test_loss_slice_directions_and_params_untouched():
    params = {"a": np.array([1.0, 2.0]), "b": np.array([[0.5]])}
    seen = []

    def loss_fn(p):
        seen.append({k: v.copy() for k, v in p.items()})
        return float(sum(np.sum(v) for v in p.values()))

    alphas = [-1.0, 0.5, 2.0]
    dg.loss_slice(loss_fn, params, "random", alphas, seed=3)
    for alpha, p in zip(alphas, seen, strict=False):
        step = np.sqrt(sum(np.sum((p[k] - params[k]) ** 2) for k in params))
        assert step == pytest.approx(abs(alpha))
    sl = dg.loss_slice(loss_fn, params, "a", alphas)
    np.testing.assert_allclose(sl.losses - sl.base_loss, np.array(alphas) * 2 / np.sqrt(2))
    sl = dg.loss_slice(loss_fn, params, {"b": np.array([[3.0]])}, alphas)
    np.testing.assert_allclose(sl.losses - sl.base_loss, 3 * np.array(alphas))
    assert sl.direction == "custom"
    np.testing.assert_array_equal(params["a"], [1.0, 2.0])


def test_clipped_vs_unclipped_step():
    grads = {"a": np.array([3.0, 0.0]), "b": np.array([[4.0]])}
    params = {"a": np.array([1.0, 1.0]), "b": np.array([[1.0]])}

    def loss_fn(p):
        return float(0.5 * sum(np.sum(v**2) for v in p.values()))

    c = dg.clipped_vs_unclipped_step(grads, 0.5, 1.0, loss_fn=loss_fn, params=params)
    assert c.grad_norm == pytest.approx(5.0) and c.scale == pytest.approx(0.2)
    assert c.unclipped_step_norm == pytest.approx(2.5) and c.clipped_step_norm == pytest.approx(0.5)
    assert c.loss_before == pytest.approx(1.5)
    assert c.loss_unclipped == pytest.approx(0.5 * ((1 - 1.5) ** 2 + 1 + (1 - 2) ** 2))
    assert c.loss_clipped == pytest.approx(0.5 * ((1 - 0.3) ** 2 + 1 + (1 - 0.4) ** 2))
    assert "clipping scales the step by 0.2" in c.verdict()
    same = dg.clipped_vs_unclipped_step(grads, 0.5, 10.0)
    assert same.scale == 1.0 and "unchanged" in same.verdict() and same.loss_before is None
    assert same.verdict().startswith("‖g‖ = 5 < max_norm = 10: clipping leaves the step")


def test_clipping_verdict_at_exactly_max_norm():
    """‖g‖ = η: the step is left unchanged (scale 1), and the verdict said "‖g‖ < max_norm"."""
    c = dg.clipped_vs_unclipped_step({"a": np.array([3.0, 4.0])}, 0.5, 5.0)
    assert c.grad_norm == 5.0 and c.scale == 1.0
    assert c.verdict() == "‖g‖ = 5 = max_norm = 5: clipping leaves the step unchanged"


def test_clipping_bounds_the_step_at_a_cliff():
    layer, x, base, loss_fn = one_unit_rnn(5.0, 10)
    params = {k: v.copy() for k, v in base.items()}
    params["bias_hh_l0"][...] = -1e-7  # on the wall: h_T is between the two attractors
    layer.load_state_dict(params)
    f = layer.forward(x)
    dy = np.zeros_like(f.output)
    dy[0, -1, 0] = 2 * (f.output[0, -1, 0] - 1.0)
    grads = layer.backward(f, dy).params
    c = dg.clipped_vs_unclipped_step(grads, 0.1, 1.0, loss_fn=loss_fn, params=params)
    assert c.grad_norm > 1e5  # the wall's gradient
    assert c.unclipped_step_norm > 1e4 and c.clipped_step_norm == pytest.approx(0.1)


# ----------------------------------------------------------------------------- fixed points


def outer_fixed_point():
    """a = tanh(2a), a > 0, by iterating the map (it is stable there)."""
    a = 1.0
    for _ in range(100):
        a = np.tanh(2 * a)
    return a


def test_fixed_points_of_tanh_w_h():
    res = dg.iterated_map(0.5, 0.0)
    np.testing.assert_allclose(res.fixed_points, [[0.0]], atol=1e-12)
    assert res.kinds == ["stable"] and np.all(res.basin == 0)

    res = dg.iterated_map(2.0, 0.0)
    a = outer_fixed_point()
    np.testing.assert_allclose(res.fixed_points[:, 0], [-a, 0.0, a], atol=1e-10)
    assert res.kinds == ["stable", "unstable", "stable"]
    np.testing.assert_allclose(res.multipliers, [2 * (1 - a * a), 2.0, 2 * (1 - a * a)], rtol=1e-8)
    assert np.all(res.basin[res.axis < 0] == 0) and np.all(res.basin[res.axis > 0] == 2)
    assert res.basin[res.axis == 0] == -1  # h = 0 stays on the unstable fixed point
    assert np.argmax(res.log10_gain) == np.argmin(np.abs(res.axis))  # explodes at the boundary
    assert "basins meet at h ≈" in res.verdict()
    assert res.verdict().endswith("where the gradient explodes")  # 2^200 at h = 0
    # off the grid's 0 no start sits on the unstable point: every gain is far below 1, and
    # the verdict said "explodes" all the same (diagnostics review)
    off = dg.iterated_map(2.0, 0.0, h_range=(-2.0, 2.003))
    assert off.log10_gain.max() < 0 and "explodes" not in off.verdict()
    assert "below 1 from every start, so it vanishes everywhere" in off.verdict()
    assert "starting points in [-2, 2.003]" in off.verdict()
    assert dg.iterated_map(2.0, -0.5).verdict().startswith("h ← tanh(2·h − 0.5)")

    cycle = dg.iterated_map(-2.0, 0.0)  # a period-2 orbit takes every start but 0
    assert cycle.kinds == ["unstable"] and np.all(cycle.basin == -1)

    sig = dg.iterated_map(10.0, -5.0, "sigmoid", (0.0, 1.0))
    assert len(sig.kinds) == 3 and sig.kinds == ["stable", "unstable", "stable"]
    h = sig.fixed_points[:, 0]
    np.testing.assert_allclose(1 / (1 + np.exp(-(10 * h - 5))), h, atol=1e-12)


def test_a_marginal_fixed_point_of_two_units_is_listed_once():
    """h2 ← tanh(h2) has one fixed point, 0, with multiplier 1: Newton's starts end ~1e-7
    around it and were listed as two fixed points (the diagnostics review)."""
    res = dg.iterated_map(np.array([[-1.0, 0.0], [0.0, 1.0]]), np.zeros(2))
    assert res.kinds == ["marginal"]
    np.testing.assert_allclose(res.fixed_points, [[0.0, 0.0]], atol=1e-6)


def test_two_unit_fixed_points_and_basins():
    res = dg.iterated_map(2.0 * np.eye(2), np.zeros(2), n_points=41)
    assert len(res.kinds) == 9
    assert sorted(res.kinds).count("stable") == 4 and res.kinds.count("saddle") == 4
    assert res.kinds.count("unstable") == 1
    a = outer_fixed_point()
    ix, iy = np.argmin(np.abs(res.axis - 1.5)), np.argmin(np.abs(res.axis + 0.5))
    np.testing.assert_allclose(res.fixed_points[res.basin[iy, ix]], [a, -a], atol=1e-9)
    assert res.final.shape == (41, 41, 2) and res.basin.shape == (41, 41)

    contracting = dg.iterated_map(np.array([[0.5, -0.5], [0.5, 0.5]]), np.array([0.1, 0.0]))
    assert contracting.kinds == ["stable"] and np.all(contracting.basin == 0)
    assert "one attractor takes every start" in contracting.verdict()


# ----------------------------------------------------------------------------- JSON and plots


def all_results():
    rng = np.random.default_rng(14)
    lstm = make(LSTM, {}, 2, 3, 1, True, rng)
    x = rng.standard_normal((2, 6, 2))
    _, _, base, loss_fn = one_unit_rnn(5.0, 20)
    return {
        "lag": dg.gradient_by_lag(lstm, x, [6, 3]),
        "map": dg.gradient_map(lstm, x, [6, 3]),
        "jac": dg.jacobian_products(lstm, x, [6, 3], sample=1),
        "jac_rnn": dg.jacobian_products(make(RNN, {}, 2, 3, rng=rng), x),
        "spec": dg.recurrent_spectrum(lstm),
        "hist": dg.spectrum_over_checkpoints([(0, lstm.params), (5, lstm.params)]),
        "gates": dg.gate_saturation(lstm, x, [6, 3]),
        "slice": dg.loss_slice(loss_fn, base, "bias_hh_l0", np.linspace(-1, 1, 41)),
        "clip": dg.clipped_vs_unclipped_step({"a": np.ones(3)}, 0.1, 1.0),
        "map1": dg.iterated_map(2.0, 0.1),
        "map2": dg.iterated_map(2.0 * np.eye(2), np.array([0.1, 0.0]), n_points=31),
    }


def test_every_result_has_json_and_a_verdict():
    for key, res in all_results().items():
        data = res.to_json()
        text = json.dumps(data, allow_nan=False)
        assert json.loads(text)["verdict"] == res.verdict(), key
        assert isinstance(res.verdict(), str) and len(res.verdict()) > 20, key


def test_plots_are_written(tmp_path):
    oracle("matplotlib")
    res = all_results()
    calls = [
        (dg.plot_lag_profile, res["lag"]),
        (dg.plot_gradient_map, res["map"]),
        (dg.plot_jacobian_bound, res["jac"]),
        (dg.plot_jacobian_bound, res["jac_rnn"]),
        (dg.plot_spectrum, res["spec"]),
        (dg.plot_spectrum, res["hist"]),
        (dg.plot_gate_saturation, res["gates"]),
        (dg.plot_loss_slice, res["slice"]),
        (dg.plot_iterated_map, res["map1"]),
        (dg.plot_iterated_map, res["map2"]),
    ]
    for i, (plot, result) in enumerate(calls):
        path = plot(result, tmp_path / "sub" / f"{i}.png")
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", plot.__name__


def _drawn(monkeypatch, plot, result, tmp_path):
    """The figure `plot` draws for `result` (kept from save_png), with its PNG written."""
    from rnnlab.diagnostics import plots

    figures = []
    save = plots.save_png
    monkeypatch.setattr(plots, "save_png", lambda fig, path: figures.append(fig) or
                        save(fig, path))  # fmt: skip
    plot(result, tmp_path / "f.png")
    return figures[0]


def test_the_jacobian_plot_s_lag_axis_says_which_way_the_direction_runs(monkeypatch,
                                                                         tmp_path):
    """The axis said "lag t − k" for the reverse direction too, whose states k lie after t
    (the lag is k − t there: ∂h_0/∂h_3 is at lag 3, not −3)."""
    oracle("matplotlib")
    layer = RNN(2, 3, bidirectional=True, batch_first=True, dtype=np.float64, rng=0)
    x = np.random.default_rng(0).standard_normal((1, 4, 2))
    for d, expect in ((0, "lag t − k"), (1, "lag k − t (reverse: k after t)")):
        prof = dg.jacobian_products(layer, x, direction=d)
        ax = _drawn(monkeypatch, dg.plot_jacobian_bound, prof, tmp_path).axes[0]
        assert ax.get_xlabel() == expect


def test_log_plots_say_the_values_they_cannot_draw(monkeypatch, tmp_path):
    """A zero W_hh (every weight 0) passes no gradient back: the lag and Jacobian panels
    were blank, their legends naming the lines as if drawn, the lag axis ±0.04 around the
    one point left (drawn as a line of one point: nothing), and the map's colour bar the
    rounding of one value, ±5e-17 under a 1e-17 offset. Now the legends and the map's title
    say the zeros, the few points are marked, and the axes span the lags computed."""
    oracle("matplotlib")
    layer = RNN(2, 3, batch_first=True, dtype=np.float64, rng=1)
    for v in layer.params.values():
        v[...] = 0.0
    x = np.random.default_rng(0).standard_normal((2, 5, 2))

    ax = _drawn(monkeypatch, dg.plot_lag_profile, dg.gradient_by_lag(layer, x), tmp_path).axes[0]
    assert ax.get_legend_handles_labels()[1][0] == "l0 (0 at 4 of 5 lags: not drawn)"
    assert ax.get_xlim() == (-0.5, 4.5) and ax.lines[0].get_marker() == "o"

    ax = _drawn(monkeypatch, dg.plot_jacobian_bound, dg.jacobian_products(layer, x),
                tmp_path).axes[0]  # fmt: skip
    labels = ax.get_legend_handles_labels()[1]
    assert len(labels) == 3 and all(a.endswith(" (0 at all 5 lags: not drawn)") for a in labels)
    assert ax.get_xlim() == (0.5, 5.5)

    fig = _drawn(monkeypatch, dg.plot_gradient_map, dg.gradient_map(layer, x), tmp_path)
    ax = fig.axes[0]
    # the 10 zeros below the diagonal vanished (grey); above it no path reaches back (white)
    assert ax.get_title() == ("l0\n(grey: 10 of 25 cells exactly 0: vanished)"
                              "\n(white: 10 of 25 cells: no path from $L_t$ to $h_k$)")
    (grey,) = [im for im in ax.images if im.get_label() == "zero"]
    lag = np.subtract.outer(np.arange(5), np.arange(5))
    np.testing.assert_array_equal(~np.ma.getmaskarray(grey.get_array()), lag > 0)
    assert ax.images[0].get_clim() == pytest.approx((-0.5, 0.5))  # log10 1 ± half a decade

    one = dg.jacobian_products(RNN(2, 3, batch_first=True, dtype=np.float64, rng=1), x[:, :1])
    ax = _drawn(monkeypatch, dg.plot_jacobian_bound, one, tmp_path).axes[0]
    assert ax.get_xlim() == (0.5, 1.5) and ax.lines[0].get_marker() == "o"
    assert not any("not drawn" in a for a in ax.get_legend_handles_labels()[1])


def test_the_map_draws_the_cells_that_overflow_float64_red(monkeypatch, tmp_path):
    """map.png drew an entry past float64 white, as a 0 or an entry no sequence has, and the
    title counted it with them. It is red now (an image labelled "overflow"), and the title
    says so and that the fit leaves it out."""
    oracle("matplotlib")
    from rnnlab.diagnostics.plots import OVERFLOW_COLOR

    layer = exploding_at_rest(RNN(1, 1, dtype=np.float64, rng=0), 1.0)
    layer.params["weight_hh_l0"][...] = 1e200
    gmap = dg.gradient_map(layer, np.zeros((1, 3, 1)))
    ax = _drawn(monkeypatch, dg.plot_gradient_map, gmap, tmp_path).axes[0]
    (red,) = [im for im in ax.images if im.get_label() == "overflow"]
    np.testing.assert_array_equal(~np.ma.getmaskarray(red.get_array()), gmap.overflow[0])
    assert red.get_cmap().colors == [OVERFLOW_COLOR]
    # (white: the 3 zeros above the diagonal; the two 1e200 are drawn, log10 200)
    assert ax.get_title() == ("l0\n(white: 3 of 9 cells: no path from $L_t$ to $h_k$)"
                              "\n(red: 1 cell past float64, left out of the fit)")  # fmt: skip
    values = next(im for im in ax.images if im.get_label() != "overflow").get_array()
    assert not np.isfinite(np.ma.filled(values, np.nan)[2, 0])  # (no value: red alone)


def test_plot_without_matplotlib_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    monkeypatch.setitem(sys.modules, "matplotlib.backends.backend_agg", None)
    with pytest.raises(ImportError, match=r"pip install 'rnnlab\[plot\]'") as info:
        dg.plot_iterated_map(dg.iterated_map(0.5, 0.0, n_points=5), tmp_path / "a.png")
    assert isinstance(info.value, dg.PlotDependencyError)


# ----------------------------------------------------------------------------- bad input


def _bad_calls():
    rnn = RNN(2, 3, dtype=np.float64, rng=0)
    x = np.zeros((2, 4, 2))
    mp = dg.iterated_map(0.5, 0.0, n_points=5)
    return [
        (lambda: dg.gradient_by_lag("rnn", x), r"`layer` must be an rnnlab Recurrent layer"),
        (lambda: dg.gradient_by_lag(rnn, x, loss="first"), r"`loss` must be one of 'last', 'all'"),
        (
            lambda: dg.gradient_by_lag(rnn, x, d_output=np.zeros((2, 4, 5))),
            r"`d_output` must be an array of shape \(2, 4, 3\); got shape \(2, 4, 5\)",
        ),
        (lambda: dg.gradient_by_lag(rnn, x, seed=-1), r"`seed` must be an integer in \[0, "),
        (lambda: dg.gradient_by_lag(rnn, x, lengths=[4, 9]), r"`lengths` must be between 1 and"),
        (
            lambda: dg.gradient_map(rnn, np.zeros((2, 4, 7))),
            r"`x` must be an array with 2 features",
        ),
        (
            lambda: dg.jacobian_products(rnn, x, sample=2),
            r"`sample` must be an integer in \[0, 2\)",
        ),
        (lambda: dg.jacobian_products(rnn, x, t=4), r"`t` must be an integer in \[0, 4\)"),
        (
            lambda: dg.jacobian_products(rnn, x, direction=1),
            r"`direction` must be an integer in \[0, 1\)",
        ),
        (
            lambda: dg.jacobian_products(rnn, x, layer_index=1),
            r"`layer_index` must be an integer in \[0, 1\)",
        ),
        (lambda: dg.jacobian_products(rnn, x, block="c"), r"`block` must be one of 'state', 'h'"),
        (lambda: dg.jacobian_products(rnn, x, method="qr"), r"`method` must be one of 'auto'"),
        (
            lambda: dg.jacobian_products(rnn, x, max_dphi="max"),
            r"`max_dphi` must be a positive finite number; got 'max'",
        ),
        (lambda: dg.step_jacobians(rnn, np.zeros((4, 2))), r"`x` must be an array with 3 dim"),
        (
            lambda: dg.recurrent_spectrum(np.zeros((5, 3))),
            r"`source` must be a recurrent weight of shape \(G·H, H\).*got shape \(5, 3\)",
        ),
        (lambda: dg.recurrent_spectrum([1, 2]), r"`source` must be a Recurrent layer or"),
        (lambda: dg.spectrum_over_checkpoints([]), r"`checkpoints` must be a non-empty list"),
        (
            lambda: dg.spectrum_over_checkpoints([(0, {"w": np.eye(2)})]),
            r"`checkpoints\[0\]` must be params holding recurrent weights named like "
            r"'weight_hh_l0'",
        ),
        (
            lambda: dg.spectrum_over_checkpoints([("a", {})]),
            r"`checkpoints\[0\]` must be a pair \(step: int, params: dict\)",
        ),
        (
            lambda: dg.spectrum_over_checkpoints(
                [(0, {"weight_hh_l0": np.eye(2)}), (1, {"weight_hh_l1": np.eye(2)})]
            ),
            r"`checkpoints\[1\]` must be the same recurrent weights as checkpoint 0",
        ),
        (
            lambda: dg.gate_saturation(RNN(2, 3, nonlinearity="relu", dtype=np.float64, rng=0), x),
            r"`layer` must be a layer whose cell declares gate activations with two ends .*relu "
            r"units have no upper end",
        ),
        (lambda: dg.gate_saturation(rnn, x, low=0.0), r"`low` must be a number in \(0, 1\)"),
        (
            lambda: dg.gate_saturation(rnn, x, low=0.5, high=0.4),
            r"`high` must be a number in \(low, 1\) = \(0.5, 1\); got 0.4",
        ),
        (
            lambda: dg.loss_slice(3, {"a": np.ones(2)}, "a", [0.0, 1.0, 2.0]),
            r"`loss_fn` must be a function params -> loss",
        ),
        (
            lambda: dg.loss_slice(np.sum, {}, "a", [0.0, 1.0, 2.0]),
            r"`params` must be a non-empty dict of parameter arrays",
        ),
        (
            lambda: dg.loss_slice(np.sum, {"a": np.ones(2)}, "b", [0.0, 1.0, 2.0]),
            r"`direction` must be 'random', a parameter name \(a\) or a dict of arrays; got 'b'",
        ),
        (
            lambda: dg.loss_slice(np.sum, {"a": np.ones(2)}, {"a": np.ones(3)}, [0.0, 1.0, 2.0]),
            r"`direction\['a'\]` must be an array of shape \(2\)",
        ),
        (
            lambda: dg.loss_slice(np.sum, {"a": np.ones(2)}, "a", [0.0, 2.0, 1.0]),
            r"`alphas` must be an increasing array of at least 3 numbers",
        ),
        (
            lambda: dg.loss_slice(lambda p: "x", {"a": np.ones(2)}, "a", [0.0, 1.0, 2.0]),
            r"`loss_fn` must be a function returning one number \(the loss\); got a function "
            r"returning 'x'",
        ),
        (
            lambda: dg.clipped_vs_unclipped_step({"a": np.ones(2)}, 0.0, 1.0),
            r"`lr` must be a positive finite number; got 0.0",
        ),
        (
            lambda: dg.clipped_vs_unclipped_step({"a": np.ones(2)}, 0.1, -1.0),
            r"`max_norm` must be a positive finite number",
        ),
        (
            lambda: dg.clipped_vs_unclipped_step({"a": np.ones(2)}, 0.1, 1.0, loss_fn=np.sum),
            r"`params` must be a non-empty dict of parameter arrays; got None",
        ),
        (
            lambda: dg.clipped_vs_unclipped_step(
                {"a": np.ones(2)}, 0.1, 1.0, loss_fn=np.sum, params={"b": np.ones(2)}
            ),
            r"`params` must be a dict holding every array named in `grads`; got no \['a'\]",
        ),
        (
            lambda: dg.clipped_vs_unclipped_step(
                {"a": np.ones(2)}, 0.1, 1.0, loss_fn=np.sum, params={"a": np.ones(3)}
            ),
            r"`grads\['a'\]` must be an array of shape \(3,\) like params",
        ),
        (
            lambda: dg.clipped_vs_unclipped_step({"a": [1, 2]}, 0.1, 1.0),
            r"`grads\['a'\]` must be a floating-point array",
        ),
        (lambda: dg.iterated_map(0.5, 0.0, phi="relu"), r"`phi` must be one of 'tanh', 'sigmoid'"),
        (
            lambda: dg.iterated_map(np.eye(3), np.zeros(3)),
            r"`w` must be an array of shape \(2, 2\)",
        ),
        (lambda: dg.iterated_map(np.eye(2), 0.0), r"`b` must be a NumPy array of floats"),
        (lambda: dg.iterated_map(np.inf, 0.0), r"`w` must be a finite number; got inf"),
        (
            lambda: dg.iterated_map(0.5, 0.0, h_range=(1.0, -1.0)),
            r"`h_range` must be a pair \(low, high\) with low < high",
        ),
        (lambda: dg.iterated_map(0.5, 0.0, h_range=3), r"`h_range` must be a pair \(low, high\)"),
        (lambda: dg.iterated_map(0.5, 0.0, n_points=1), r"`n_points` must be an integer in \[2, "),
        (lambda: dg.fit_rate([0, 1], [1.0, 2.0], horizon=0), r"`horizon` must be an integer in"),
        (
            lambda: dg.plot_lag_profile(mp, "a.png"),
            r"`result` must be a LagProfile \(from gradient_by_lag\); got IteratedMap",
        ),
        (lambda: dg.plot_iterated_map(mp, "a.pdf"), r"`path` must be a file path ending in .png"),
    ]


@pytest.mark.parametrize("case", range(len(_bad_calls())))
def test_bad_input_is_named(case):
    call, message = _bad_calls()[case]
    with pytest.raises(ValueError, match=message):
        call()


def test_a_subject_without_a_trained_sequential_is_refused_by_name():
    """Subject.trained(): a bare dynamics map has nothing to analyse as a model, and a model
    that is not a Sequential is named as the wrong `model`."""
    from rnnlab.diagnostics import subjects
    from rnnlab.train import TrainConfig

    bare = subjects.Subject(None, None, None, None, None, None, {})
    with pytest.raises(ValueError, match="a bare dynamics map has no model, task or data"):
        bare.trained()
    layer = LSTM(2, 3, dtype=np.float64, rng=np.random.default_rng(0))
    x = np.zeros((1, 2, 2))
    odd = subjects.Subject(layer, object(), TrainConfig(), x, x, None, {}, spec={})
    with pytest.raises(ValueError, match=r"`model` must be a Sequential with one recurrent"):
        odd.trained()


@pytest.mark.parametrize("scale", [1.0, 1e-200, 1e200])
def test_the_one_step_norms_of_wide_states_are_exact(scale):
    """Above 128 columns the one-step norms of the bound come from the largest eigenvalue of
    the scaled Gram matrix (a third of the SVD's time at S = 1024): the same norm to rounding,
    an exact bound, at any scale inside float range."""
    from rnnlab.diagnostics import jacobians

    rng = np.random.default_rng(0)
    M = rng.standard_normal((200, 200)) * np.r_[np.ones(100), np.full(100, 1e-3)] * scale
    want = np.linalg.svd(M, compute_uv=False)[0]
    assert jacobians._exact_norm(M) == pytest.approx(want, rel=1e-12)
    assert jacobians._exact_norm(np.zeros((200, 200))) == 0.0


def test_gate_saturation_of_a_coupled_lstm_says_its_input_gate():
    """A coupled LSTM (i = 1 − f) has no input gate of its own: gate_saturation counted f, g
    and o and left i unsaid, as if the cell had none. The verdict now says i follows f,
    mirrored; its fractions are not counted twice. A plain LSTM says nothing of the kind."""
    from rnnlab.cells import LSTMCell
    from rnnlab.layers import Recurrent

    x = np.random.default_rng(0).standard_normal((3, 5, 2))
    coupled = Recurrent(LSTMCell(coupled=True), 2, 4, rng=0)
    sat = dg.gate_saturation(coupled, x)
    assert sat.gates == ["f", "g", "o"]
    assert "input (i) = 1 − forget (f) (a coupled LSTM)" in sat.verdict()
    assert sat.to_json()["derived"] == sat.derived
    plain = dg.gate_saturation(Recurrent(LSTMCell(), 2, 4, rng=0), x)
    assert plain.gates == ["i", "f", "g", "o"] and "coupled" not in plain.verdict()


def test_the_map_draws_every_finite_norm_and_tells_vanished_from_unreached(monkeypatch,
                                                                           tmp_path):
    """map.png's colour is linear in log10, yet it left every norm past 1e150 (or under
    1e-150) white, the log axes' limit, and drew a gradient that vanished to exactly 0 white
    like a state the loss cannot reach. Now every finite norm has its colour, a 0 where a
    path reaches back is grey ("vanished"), and white is what no path or no sequence
    reaches; below the top of a bidirectional stack a loss reaches both sides, so a 0 on
    either is one that vanished."""
    oracle("matplotlib")
    from rnnlab.diagnostics.lags import GradientMap
    from rnnlab.diagnostics.plots import _map_cells

    T = 4
    lag = np.subtract.outer(np.arange(T), np.arange(T))
    norms = np.where(lag >= 0, 10.0 ** (100.0 * lag), 0.0)  # 1, 1e100, 1e200, 1e300
    norms[3, 1] = 0.0  # a gradient that vanished
    counts = np.full((T, T), 2)
    counts[0, 0] = 0  # no sequence has it
    norms[0, 0] = np.nan
    fits = [dg.fit_rate([0, 1, 2], [1.0, 1e100, 1e200])] * 2
    both = np.stack([norms, norms.copy()])
    both[1, 0, 3] = 1e-300  # this map's loss reaches a state after it
    gmap = GradientMap(["l0", "l1"], both, counts, fits, np.zeros((2, T, T), bool))
    logs, vanished, unreached = _map_cells(gmap, 0)
    np.testing.assert_array_equal(logs[lag > 0], [100, 200, 100, 300, np.nan, 100])
    assert list(zip(*np.nonzero(vanished), strict=True)) == [(3, 1)]
    np.testing.assert_array_equal(unreached, lag < 0)
    logs, vanished, unreached = _map_cells(gmap, 1)
    assert logs[0, 3] == -300 and not unreached.any()
    assert vanished.sum() == 1 + 5  # (3, 1) and the other five above the diagonal
    fig = _drawn(monkeypatch, dg.plot_gradient_map, gmap, tmp_path)
    assert fig.axes[0].get_title() == (
        "l0\n(grey: 1 of 16 cells exactly 0: vanished)\n(white: 7 of 16 cells: no path "
        "from $L_t$ to $h_k$; no sequence)")  # fmt: skip
    assert fig.axes[1].get_title() == ("l1\n(grey: 6 of 16 cells exactly 0: vanished)"
                                       "\n(white: 1 of 16 cells: no sequence)")  # fmt: skip
