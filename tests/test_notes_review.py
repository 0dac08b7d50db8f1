"""The course notes' own equations, written out by hand in float64 NumPy, against rnnlab.

Each test names the notes' formula it checks and the convention rnnlab follows where it
departs (docs/notes.md): the notes' single bias b is rnnlab's (and PyTorch's) b_ih + b_hh,
the notes' GRU update gate Γ_u is rnnlab's 1 − z, the notes' clipping η g/‖g‖ is torch's
η g/(‖g‖ + 1e-6). The other checks of these layers are against PyTorch; these are against
the notes themselves, symbol for symbol.
"""

from __future__ import annotations

import numpy as np
import pytest

import rnnlab
from rnnlab.losses import softmax_cross_entropy
from rnnlab.optim import clip_by_global_norm, clip_by_value

B, T, I, H, K = 3, 5, 4, 6, 5


def _softmax(o):
    e = np.exp(o - o.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


def _randomise(params, rng, scale=0.6):
    for v in params.values():
        v[...] = rng.uniform(-scale, scale, v.shape)


def test_the_elman_network_and_its_bptt_are_the_notes_symbol_for_symbol():
    """Notes 001 (Goodfellow et al. 10.2.2): a = b + W h_{t-1} + U x_t, h = tanh(a),
    o = c + V h, ŷ = softmax(o), L = Σ_t −log ŷ_t[y_t]; and the gradients the notes derive:
    ∇_o = ŷ − 1_y; ∇_{h(τ)} = Vᵀ∇_{o(τ)}; ∇_{h(t)} = Wᵀ diag(1 − h(t+1)²) ∇_{h(t+1)} + Vᵀ∇_{o(t)};
    ∇_c = Σ ∇_o, ∇_b = Σ diag(1 − h²)∇_h, ∇_V = Σ ∇_o hᵀ, ∇_W = Σ diag(1 − h²)∇_h h(t−1)ᵀ,
    ∇_U = Σ diag(1 − h²)∇_h xᵀ, and the initial state's ∇_{h(0)}. The notes' one b is
    rnnlab's b_ih + b_hh, each of which gets ∇_b."""
    rng = np.random.default_rng(0)
    rnn = rnnlab.RNN(I, H, dtype=np.float64, rng=rng)
    lin = rnnlab.Linear(H, K, dtype=np.float64, rng=rng)
    _randomise(rnn.params, rng)
    _randomise(lin.params, rng)
    x = rng.standard_normal((B, T, I))
    y = rng.integers(0, K, (B, T))
    h0 = rng.standard_normal((B, H)) * 0.5

    U, W = rnn.params["weight_ih_l0"], rnn.params["weight_hh_l0"]
    b = rnn.params["bias_ih_l0"] + rnn.params["bias_hh_l0"]
    V, c = lin.params["weight"], lin.params["bias"]
    hs = [h0]
    os_ = []
    for t in range(T):
        a = b + hs[-1] @ W.T + x[:, t] @ U.T
        hs.append(np.tanh(a))
        os_.append(c + hs[-1] @ V.T)
    yhat = _softmax(np.stack(os_, axis=1))
    onehot = np.eye(K)[y]
    L = -np.log(yhat[onehot == 1]).sum()
    g_o = yhat - onehot
    g = {k: 0.0 for k in ("U", "W", "b", "V", "c")}
    g_h = g_o[:, T - 1] @ V  # ∇_{h(τ)}
    g_h_next = g_h
    for t in range(T, 0, -1):  # hs[t] is h(t)
        if t < T:
            g_h = (g_h_next * (1 - hs[t + 1] ** 2)) @ W + g_o[:, t - 1] @ V
        da = g_h * (1 - hs[t] ** 2)
        g["c"] = g["c"] + g_o[:, t - 1].sum(0)
        g["V"] = g["V"] + g_o[:, t - 1].T @ hs[t]
        g["b"] = g["b"] + da.sum(0)
        g["W"] = g["W"] + da.T @ hs[t - 1]
        g["U"] = g["U"] + da.T @ x[:, t - 1]
        g_h_next = g_h
    g_h0 = (g_h_next * (1 - hs[1] ** 2)) @ W

    f1 = rnn.forward(x, state=h0[None])
    f2 = lin.forward(f1.output)
    loss, d = softmax_cross_entropy(f2.output, y, reduction="sum")
    b2 = lin.backward(f2, d)
    b1 = rnn.backward(f1, b2.input)
    np.testing.assert_allclose(f2.output, np.stack(os_, axis=1), rtol=0, atol=1e-13)
    np.testing.assert_allclose(f1.state[0], hs[-1], rtol=0, atol=1e-13)
    assert abs(loss - L) < 1e-12 * L
    np.testing.assert_allclose(d, g_o, rtol=0, atol=1e-14)
    for got, want in [
        (b2.params["weight"], g["V"]), (b2.params["bias"], g["c"]),
        (b1.params["weight_ih_l0"], g["U"]), (b1.params["weight_hh_l0"], g["W"]),
        (b1.params["bias_ih_l0"], g["b"]), (b1.params["bias_hh_l0"], g["b"]),
        (b1.state[0], g_h0),
    ]:  # fmt: skip
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


def test_the_univariate_encoder_s_gradient_is_the_notes_product():
    """Notes 002: for h_t = φ(w h_{t-1} + u x_t) with one unit, h̄(1) = w^{T−1} φ'(z(2))···
    φ'(z(T)) h̄(T); rnnlab's ∂L/∂h(0) for a loss on h(T) alone is w^T φ'(z(1))···φ'(z(T)) h̄(T)
    (the same product, one step further back)."""
    rng = np.random.default_rng(1)
    rnn = rnnlab.RNN(1, 1, dtype=np.float64, rng=rng)
    w, u = 1.3, 0.7
    rnn.params["weight_hh_l0"][...] = w
    rnn.params["weight_ih_l0"][...] = u
    rnn.params["bias_ih_l0"][...] = 0.0
    rnn.params["bias_hh_l0"][...] = 0.0
    x = rng.standard_normal((1, 12, 1))
    f = rnn.forward(x)
    d = np.zeros_like(f.output)
    d[0, -1, 0] = 2.5  # h̄(T)
    got = rnn.backward(f, d).state[0, 0, 0]
    h, z = 0.0, []
    for t in range(12):
        z.append(w * h + u * x[0, t, 0])
        h = np.tanh(z[-1])
    want = w**12 * np.prod(1 - np.tanh(np.array(z)) ** 2) * 2.5
    assert abs(got - want) <= 1e-14 * abs(want) + 1e-300


def test_the_bidirectional_readout_and_its_output_gradients_are_the_notes():
    """Notes 000: h_t = tanh(U x_t + W h_{t-1}), h'_t = tanh(U' x_t + W' h'_{t+1}) with the
    boundary states the constant 0.5, ŷ_t = softmax(V h_t + V' h'_t) (+ c, which the notes
    leave out with every bias), L = −(1/N) Σ_t y_t log ŷ_t, ∂E/∂q = ŷ − y, ∂E/∂V = (ŷ − y) ⊗ h_t
    and ∂E/∂V' = (ŷ − y) ⊗ h'_t summed over the steps. rnnlab's "mean" divides by the B·T valid
    steps (N of the notes, counted over the batch)."""
    rng = np.random.default_rng(2)
    m = rnnlab.RNN(I, H, bidirectional=True, merge="readout", output_size=K,
                   initial_state=0.5, dtype=np.float64, rng=rng)  # fmt: skip
    _randomise(m.params, rng)
    P = m.params
    x = rng.standard_normal((B, T, I))
    y = rng.integers(0, K, (B, T))

    def run(U, W, b, steps):
        h, out = np.full((B, H), 0.5), np.zeros((B, T, H))
        for t in steps:
            h = np.tanh(x[:, t] @ U.T + h @ W.T + b)
            out[:, t] = h
        return out

    hf = run(P["weight_ih_l0"], P["weight_hh_l0"], P["bias_ih_l0"] + P["bias_hh_l0"], range(T))
    hb = run(P["weight_ih_l0_reverse"], P["weight_hh_l0_reverse"],
             P["bias_ih_l0_reverse"] + P["bias_hh_l0_reverse"], range(T - 1, -1, -1))  # fmt: skip
    q = hf @ P["readout_weight"].T + hb @ P["readout_weight_reverse"].T + P["readout_bias"]
    onehot = np.eye(K)[y]
    yhat = _softmax(q)
    L = -(onehot * np.log(yhat)).sum() / (B * T)
    dq = (yhat - onehot) / (B * T)
    gV = np.einsum("btk,bth->kh", dq, hf)
    gV2 = np.einsum("btk,bth->kh", dq, hb)

    f = m.forward(x)
    loss, d = softmax_cross_entropy(f.output, y, reduction="mean")
    bk = m.backward(f, d)
    np.testing.assert_allclose(f.output, q, rtol=0, atol=1e-13)
    assert abs(loss - L) < 1e-12 * L
    np.testing.assert_allclose(d, dq, rtol=0, atol=1e-15)
    np.testing.assert_allclose(bk.params["readout_weight"], gV, rtol=0, atol=1e-14)
    np.testing.assert_allclose(bk.params["readout_weight_reverse"], gV2, rtol=0, atol=1e-14)
    np.testing.assert_allclose(bk.params["readout_bias"], dq.sum((0, 1)), rtol=0, atol=1e-14)


def test_the_notes_lstm_is_rnnlab_s_in_pytorch_s_gate_order():
    """Notes 001/002: Γ_u = i, Γ_f = f, Γ_o = o, c̃ = g (PyTorch's rows i, f, g, o);
    c_t = Γ_u ⊙ c̃ + Γ_f ⊙ c_{t−1}, a_t = Γ_o ⊙ tanh c_t, each gate over [a_{t−1}, x_t] with
    one bias (rnnlab's b_ih + b_hh). (Notes 002 writes W_hi h_t where h_{t−1} is meant.)"""
    rng = np.random.default_rng(3)
    m = rnnlab.LSTM(I, H, dtype=np.float64, rng=rng)
    _randomise(m.params, rng)
    P = m.params
    x = rng.standard_normal((B, T, I))
    Wcat = np.concatenate([P["weight_hh_l0"], P["weight_ih_l0"]], axis=1)  # W[a, x]
    bias = P["bias_ih_l0"] + P["bias_hh_l0"]
    a, c = np.zeros((B, H)), np.zeros((B, H))
    out = np.zeros((B, T, H))
    for t in range(T):
        s = np.concatenate([a, x[:, t]], axis=1) @ Wcat.T + bias
        G_u, G_f, c_tilde, G_o = (s[:, k * H : (k + 1) * H] for k in range(4))
        G_u, G_f, c_tilde, G_o = _sigmoid(G_u), _sigmoid(G_f), np.tanh(c_tilde), _sigmoid(G_o)
        c = G_u * c_tilde + G_f * c
        a = G_o * np.tanh(c)
        out[:, t] = a
    f = m.forward(x)
    np.testing.assert_allclose(f.output, out, rtol=0, atol=1e-13)
    np.testing.assert_allclose(f.state[1][0], c, rtol=0, atol=1e-13)


def test_the_notes_gru_is_the_original_form_with_the_update_gate_flipped():
    """Notes 001 (Ng's full GRU): c̃ = tanh(W_c[Γ_r ⊙ c_{t−1}, x_t] + b_c),
    Γ_u = σ(W_u[c_{t−1}, x_t] + b_u), Γ_r = σ(W_r[c_{t−1}, x_t] + b_r),
    c_t = Γ_u ⊙ c̃ + (1 − Γ_u) ⊙ c_{t−1}. That is GRU(reset_after=False) with Γ_u = 1 − z:
    rnnlab (as PyTorch, Keras and Cho et al.) keeps h_{t−1} with z, so the notes' W_u, b_u
    are rnnlab's update-gate weights and biases negated. With Γ_u = z instead the two differ."""
    rng = np.random.default_rng(4)
    m = rnnlab.GRU(I, H, reset_after=False, dtype=np.float64, rng=rng)
    _randomise(m.params, rng)
    P = m.params
    x = rng.standard_normal((B, T, I))
    Wcat = np.concatenate([P["weight_hh_l0"], P["weight_ih_l0"]], axis=1)
    bias = P["bias_ih_l0"] + P["bias_hh_l0"]
    W_r, W_z, W_c = (Wcat[k * H : (k + 1) * H] for k in range(3))
    b_r, b_z, b_c = (bias[k * H : (k + 1) * H] for k in range(3))
    W_u, b_u = -W_z, -b_z  # the notes' update gate, from rnnlab's

    def notes(W_u, b_u):
        c, out = np.zeros((B, H)), np.zeros((B, T, H))
        for t in range(T):
            cx = np.concatenate([c, x[:, t]], axis=1)
            G_u = _sigmoid(cx @ W_u.T + b_u)
            G_r = _sigmoid(cx @ W_r.T + b_r)
            c_tilde = np.tanh(np.concatenate([G_r * c, x[:, t]], axis=1) @ W_c.T + b_c)
            c = G_u * c_tilde + (1 - G_u) * c
            out[:, t] = c
        return out

    f = m.forward(x)
    np.testing.assert_allclose(f.output, notes(W_u, b_u), rtol=0, atol=1e-13)
    assert np.abs(f.output - notes(W_z, b_z)).max() > 1e-2


def test_the_irnn_starts_from_the_identity_with_zero_biases():
    """Notes 002 (Le et al. 2015): ReLU units, the recurrent matrix the identity. rnnlab sets
    W_hh = I and both biases to 0; W_ih (not square in general, so it cannot be the identity the
    notes' "all the weight matrices" says) is N(0, 0.001²), the paper's choice. With no input a
    positive state is kept exactly, the notes' 'positive activations simply retain their value'."""
    m = rnnlab.RNN(I, H, nonlinearity="relu", init="irnn", dtype=np.float64,
                   rng=np.random.default_rng(5))  # fmt: skip
    np.testing.assert_array_equal(m.params["weight_hh_l0"], np.eye(H))
    assert not m.params["bias_ih_l0"].any() and not m.params["bias_hh_l0"].any()
    assert 0 < np.abs(m.params["weight_ih_l0"]).max() < 0.01
    h0 = np.array([[0.3, 1.7, 0.0, 2.0, -0.4, 0.9]])
    f = m.forward(np.zeros((1, 50, I)), state=h0[None])
    np.testing.assert_array_equal(f.state[0, 0], np.maximum(h0[0], 0.0))


@pytest.mark.parametrize("scale", [0.3, 3.0])
def test_clipping_by_norm_is_the_notes_rule_up_to_torch_s_epsilon(scale):
    """Notes 002: if ‖g‖ ≥ η then g ← η g/‖g‖, g all the gradients together. rnnlab follows
    torch.nn.utils.clip_grad_norm_: g ← η g/(‖g‖ + 1e-6) when that shrinks g, so a clipped norm
    is η‖g‖/(‖g‖ + 1e-6), 1e-6/‖g‖ relatively below η; a gradient under η is left alone."""
    rng = np.random.default_rng(6)
    grads = {"a": rng.standard_normal((4, 3)) * scale, "b": rng.standard_normal(5) * scale}
    norm = np.sqrt(sum((g**2).sum() for g in grads.values()))
    eta = 1.0
    notes = {k: (eta * g / norm if norm >= eta else g) for k, g in grads.items()}
    torch_rule = {k: (eta * g / (norm + 1e-6) if norm >= eta else g) for k, g in grads.items()}
    got = {k: g.copy() for k, g in grads.items()}
    assert abs(clip_by_global_norm(got, eta) - norm) < 1e-12 * norm
    for k in grads:
        np.testing.assert_allclose(got[k], torch_rule[k], rtol=1e-15, atol=0)
        np.testing.assert_allclose(got[k], notes[k], rtol=2e-6 / min(norm, eta), atol=0)


def test_clipping_by_value_clips_each_element():
    """Notes 001: "clips according to some maximum value": each element to [−v, v]."""
    g = {"a": np.array([-3.0, -0.5, 0.0, 0.7, 9.0])}
    clip_by_value(g, 1.0)
    np.testing.assert_array_equal(g["a"], [-1.0, -0.5, 0.0, 0.7, 1.0])


def test_the_step_jacobian_and_the_notes_bound():
    """Notes 002: ∂h_t/∂h_k = Π_{i=k+1..t} ∂h_i/∂h_{i−1}, each factor bounded by
    ‖W‖₂·‖diag(φ')‖₂ ≤ αβ. (The notes write the factor Wᵀ diag(g'(h_{i−1})); for h_i =
    tanh(W h_{i−1} + U x_i + b) it is diag(1 − h_i²) W, whose transpose is what BPTT multiplies
    by: the same norm.) rnnlab.diagnostics.step_jacobians gives diag(1 − h_i²) W, float64."""
    from rnnlab import diagnostics as dg

    rng = np.random.default_rng(7)
    m = rnnlab.RNN(I, H, dtype=np.float64, rng=rng)
    _randomise(m.params, rng, scale=0.9)
    x = rng.standard_normal((1, T, I))
    W = m.params["weight_hh_l0"]
    hs = m.forward(x).output[0]
    J = dg.step_jacobians(m, x)
    for t in range(T):
        np.testing.assert_allclose(J[t], (1 - hs[t] ** 2)[:, None] * W, rtol=0, atol=1e-14)
    alpha, beta = np.linalg.norm(W, 2), (1 - hs**2).max()
    prod = np.eye(H)
    for t in range(T):
        prod = J[t] @ prod
        assert np.linalg.norm(prod, 2) <= (alpha * beta) ** (t + 1) * (1 + 1e-12)


def test_the_binary_cross_entropy_is_the_notes_summed_over_time():
    """Notes 004: ŷ = σ(W_ya a + b_y), ℒ = −y log ŷ − (1 − y) log(1 − ŷ), summed over the steps;
    rnnlab's binary_cross_entropy takes the logits and gives ∂ℒ/∂z = ŷ − y."""
    from rnnlab.losses import binary_cross_entropy

    rng = np.random.default_rng(8)
    z = rng.standard_normal((B, T))
    y = rng.integers(0, 2, (B, T)).astype(np.float64)
    yhat = _sigmoid(z)
    loss, d = binary_cross_entropy(z, y, reduction="sum")
    want = (-y * np.log(yhat) - (1 - y) * np.log(1 - yhat)).sum()
    assert abs(loss - want) < 1e-13 * want
    np.testing.assert_allclose(d, yhat - y, rtol=0, atol=1e-15)


def test_the_page_s_options_and_choices_are_train_s():
    """docs/notes.md names `rnnlab train` options and values (`--cell irnn`, `--clip value`,
    ...): each is in `rnnlab train --help`, so a renamed one fails here rather than in a reader's
    shell."""
    import contextlib
    import io
    import re
    from pathlib import Path

    from rnnlab.cli import main

    text = (Path(__file__).parents[1] / "docs" / "notes.md").read_text(encoding="utf-8")
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
        main(["train", "--help"])
    helptext = out.getvalue()
    named = re.findall(r"`(--[a-z-]+)(?: ([a-z_-]+))?", text)
    assert len(named) >= 8
    for option, value in named:
        assert re.search(rf"{re.escape(option)}(?![\w-])", helptext), option
        if value and value not in ("N", "K"):
            assert re.search(rf"(?<![\w-]){re.escape(value)}(?![\w-])", helptext), (option, value)
