"""Consistency of the engine with itself: directions, padding, initial states, the step loop."""

import numpy as np
import pytest
from helpers import CELLS, make

from rnnlab import recurrence
from rnnlab.layers import LSTM, RNN

B, T, I, H = 4, 6, 3, 5
IDS = [c[0] for c in CELLS]


def run(m, x, **kw):
    f = m.forward(x, **kw)
    rng = np.random.default_rng(99)
    dy = rng.standard_normal(f.output.shape)
    return f, m.backward(f, dy), dy


@pytest.mark.parametrize("name,ctor,kw", CELLS, ids=IDS)
def test_reverse_equals_forward_on_flipped_input(name, ctor, kw):
    rng = np.random.default_rng(0)
    bi = make(ctor, kw, I, H, 1, True, rng)
    uni = ctor(I, H, 1, dtype=np.float64, rng=rng, **kw)
    for s in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"):
        uni.params[s][...] = bi.params[s + "_reverse"]
    x = rng.standard_normal((B, T, I))
    f = bi.forward(x)
    g = uni.forward(x[:, ::-1].copy())
    np.testing.assert_allclose(f.output[:, :, H:], g.output[:, ::-1], rtol=0, atol=1e-14)
    hb = f.state[0] if name == "lstm" else f.state
    hu = g.state[0] if name == "lstm" else g.state
    np.testing.assert_allclose(hb[1], hu[0], atol=1e-14)


@pytest.mark.parametrize("bi", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("name,ctor,kw", CELLS, ids=IDS)
def test_padded_batch_equals_each_sequence_alone(name, ctor, kw, bi):
    rng = np.random.default_rng(1)
    m = make(ctor, kw, I, H, 2, bi, rng)
    lengths = np.array([6, 2, 4, 1])
    x = rng.standard_normal((B, T, I))
    x[np.arange(T)[None, :] >= lengths[:, None]] = 123.0  # garbage in the padding must not leak
    f = m.forward(x, lengths=lengths)
    dy = rng.standard_normal(f.output.shape)
    b = m.backward(f, dy)
    total = {k: np.zeros_like(v) for k, v in m.params.items()}
    for i, n in enumerate(lengths):
        g = m.forward(x[i : i + 1, :n])
        c = m.backward(g, dy[i : i + 1, :n])
        np.testing.assert_allclose(f.output[i, :n], g.output[0], atol=1e-13)
        assert np.all(f.output[i, n:] == 0.0), "padded outputs must be zero"
        hf = f.state[0] if name == "lstm" else f.state
        hg = g.state[0] if name == "lstm" else g.state
        np.testing.assert_allclose(hf[:, i], hg[:, 0], atol=1e-13)
        np.testing.assert_allclose(b.input[i, :n], c.input[0], atol=1e-12)
        assert np.all(b.input[i, n:] == 0.0)
        for k in total:
            total[k] += c.params[k]
    for k in total:
        np.testing.assert_allclose(b.params[k], total[k], atol=1e-12, err_msg=k)


def test_mask_and_lengths_agree_and_left_padding_works():
    rng = np.random.default_rng(2)
    m = make(LSTM, {}, I, H, 1, True, rng)
    lengths = np.array([6, 2, 4, 1])
    x = rng.standard_normal((B, T, I))
    mask = np.arange(T)[None, :] < lengths[:, None]
    a = m.forward(x, lengths=lengths)
    b = m.forward(x, mask=mask)
    np.testing.assert_array_equal(a.output, b.output)
    # left padding: the same sequences shifted to the end give the same final states
    left = np.zeros_like(x)
    lmask = np.zeros_like(mask)
    for i, n in enumerate(lengths):
        left[i, T - n :] = x[i, :n]
        lmask[i, T - n :] = True
    c = m.forward(left, mask=lmask)
    np.testing.assert_allclose(c.state[0], a.state[0], atol=1e-13)
    np.testing.assert_allclose(c.state[1], a.state[1], atol=1e-13)


@pytest.mark.parametrize("name,ctor,kw", CELLS, ids=IDS)
def test_learned_initial_state_gradient_is_sum_over_batch(name, ctor, kw):
    rng = np.random.default_rng(3)
    m = make(ctor, kw, I, H, 2, True, rng, initial_state="learned")
    x = rng.standard_normal((B, T, I))
    f, b, dy = run(m, x)
    # the same computation with the learned state passed explicitly
    h0 = np.stack(
        [
            np.broadcast_to(m.params[f"h0_l{k}{s}"], (B, H))
            for k in range(2)
            for s in ("", "_reverse")
        ]
    )
    state = h0
    if name == "lstm":
        c0 = np.stack(
            [
                np.broadcast_to(m.params[f"c0_l{k}{s}"], (B, H))
                for k in range(2)
                for s in ("", "_reverse")
            ]
        )
        state = (h0, c0)
    g = m.forward(x, state=state)
    c = m.backward(g, dy)
    np.testing.assert_array_equal(f.output, g.output)
    dh0 = c.state[0] if name == "lstm" else c.state
    for j, (k, s) in enumerate([(k, s) for k in range(2) for s in ("", "_reverse")]):
        np.testing.assert_allclose(b.params[f"h0_l{k}{s}"], dh0[j].sum(axis=0), atol=1e-13)
        assert np.all(c.params[f"h0_l{k}{s}"] == 0.0)  # the given state replaced it


def test_constant_initial_state_is_the_notes_half():
    rng = np.random.default_rng(4)
    m = make(RNN, {}, I, H, 1, True, rng, initial_state=0.5)
    x = rng.standard_normal((B, T, I))
    a = m.forward(x)
    b = m.forward(x, state=np.full((2, B, H), 0.5))
    np.testing.assert_array_equal(a.output, b.output)


@pytest.mark.parametrize("name,ctor,kw", CELLS, ids=IDS)
def test_loop_equals_manual_step_loop(name, ctor, kw):
    """The recurrence equals calling the cell's equations one step at a time by hand."""
    rng = np.random.default_rng(5)
    m = make(ctor, kw, I, H, 1, False, rng)
    x = rng.standard_normal((B, T, I))
    p = m._layer_params(0, "")
    h = np.zeros((B, H))
    c = np.zeros((B, H))
    sig = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
    for t in range(T):
        xa = x[:, t] @ p.W_ih.T + p.b_ih
        ha = h @ p.W_hh.T + p.b_hh
        if name == "tanh":
            h = np.tanh(xa + ha)
        elif name == "relu":
            h = np.maximum(xa + ha, 0)
        elif name == "lstm":
            z = xa + ha
            i, f, g, o = (
                sig(z[:, :H]),
                sig(z[:, H : 2 * H]),
                np.tanh(z[:, 2 * H : 3 * H]),
                sig(z[:, 3 * H :]),
            )
            c = f * c + i * g
            h = o * np.tanh(c)
        else:
            r = sig(xa[:, :H] + ha[:, :H])
            zg = sig(xa[:, H : 2 * H] + ha[:, H : 2 * H])
            if name == "gru":
                n = np.tanh(xa[:, 2 * H :] + r * ha[:, 2 * H :])
            else:
                n = np.tanh(xa[:, 2 * H :] + (r * h) @ p.W_hh[2 * H :].T + p.b_hh[2 * H :])
            h = (1 - zg) * n + zg * h
        np.testing.assert_allclose(m.forward(x[:, : t + 1]).output[:, t], h, atol=1e-14)


def test_float32_and_float64_agree():
    rng = np.random.default_rng(6)
    m64 = make(LSTM, {}, I, H, 2, True, rng)
    m32 = LSTM(I, H, 2, bidirectional=True, rng=rng)
    m32.load_state_dict(m64.params)
    x = rng.standard_normal((B, T, I))
    f64, f32 = m64.forward(x), m32.forward(x.astype(np.float32))
    assert f32.output.dtype == np.float32
    np.testing.assert_allclose(f32.output, f64.output, atol=1e-6)
    dy = rng.standard_normal(f64.output.shape)
    b64, b32 = m64.backward(f64, dy), m32.backward(f32, dy.astype(np.float32))
    for k in m64.params:
        assert b32.params[k].dtype == np.float32
        np.testing.assert_allclose(b32.params[k], b64.params[k], atol=2e-5, err_msg=k)


def test_irnn_and_forget_bias_initialisation():
    irnn = RNN(3, 8, nonlinearity="relu", init="irnn", rng=0)
    np.testing.assert_array_equal(irnn.params["weight_hh_l0"], np.eye(8))
    assert np.all(irnn.params["bias_ih_l0"] == 0) and np.all(irnn.params["bias_hh_l0"] == 0)
    assert np.abs(irnn.params["weight_ih_l0"]).max() < 0.01
    lstm = LSTM(3, 8, forget_bias=1.0, rng=0)
    total = lstm.params["bias_ih_l0"] + lstm.params["bias_hh_l0"]
    np.testing.assert_array_equal(total[8:16], 1.0)
    orth = LSTM(3, 8, init="orthogonal", rng=0).params["weight_hh_l0"][:8]
    np.testing.assert_allclose(orth @ orth.T, np.eye(8), atol=1e-6)


def test_lengths_to_mask():
    np.testing.assert_array_equal(
        recurrence.lengths_to_mask(np.array([2, 1]), 3),
        [[True, True], [True, False], [False, False]],
    )


def test_a_mask_is_batch_by_time_for_time_major_input_too():
    """The documented (B, T) mask was transposed for batch_first=False: refused when B ≠ T,
    with a message showing the shape the user did not pass, and silently wrong when B = T."""
    rng = np.random.default_rng(0)
    layer = make(CELLS[2][1], {}, 2, 3, 1, False, rng, batch_first=False)
    lengths = np.array([3, 1, 2])
    mask = np.arange(3)[None, :] < lengths[:, None]  # (B, T)
    x = rng.standard_normal((3, 3, 2))  # (T, B, I) with T = B
    by_lengths = layer.forward(x, lengths=lengths)
    by_mask = layer.forward(x, mask=mask)
    np.testing.assert_array_equal(by_mask.state, by_lengths.state)
    np.testing.assert_array_equal(by_mask.output, by_lengths.output)
    x4 = rng.standard_normal((4, 3, 2))  # T = 4, B = 3
    mask4 = np.arange(4)[None, :] < lengths[:, None]
    np.testing.assert_array_equal(layer.forward(x4, mask=mask4).state,
                                  layer.forward(x4, lengths=lengths).state)  # fmt: skip


def test_forget_bias_acts_in_a_layer_normalised_lstm():
    """In the layer-normalised cell b_ih sits inside LN(x W_ihᵀ + b_ih), which normalised the
    forget bias away (f 0.85 whether it was 1 or 10): it now goes into β, added after."""
    for coupled in (False, True):
        f = slice(0, 8) if coupled else slice(8, 16)
        plain = LSTM(3, 8, layer_norm=True, coupled=coupled, rng=0)
        biased = LSTM(3, 8, layer_norm=True, coupled=coupled, forget_bias=3.0, rng=0)
        np.testing.assert_array_equal(biased.params["ln_bias_l0"][f], 3.0)
        np.testing.assert_array_equal(biased.params["bias_ih_l0"], plain.params["bias_ih_l0"])
        gates = []
        for layer in (plain, biased):
            tape = layer.forward(np.zeros((4, 1, 3), np.float32)).cache["tapes"][0]
            gates.append(float(np.asarray(tape.saved)[0, :, f].mean()))
        assert gates[1] > gates[0] + 0.2  # σ(z + 3) against σ(z)


def test_orthogonal_init_with_a_projection_and_irnn_without():
    """init="orthogonal" with proj_size drew H × H blocks into H × P ones (NumPy's broadcast
    error): each block now has orthonormal columns. The IRNN's identity needs P = H."""
    w = LSTM(3, 6, init="orthogonal", proj_size=2, dtype=np.float64, rng=0).params
    for g in range(4):
        block = w["weight_hh_l0"][g * 6 : (g + 1) * 6]
        np.testing.assert_allclose(block.T @ block, np.eye(2), atol=1e-12)
    square = LSTM(3, 6, init="orthogonal", rng=0).params["weight_hh_l0"][:6]
    np.testing.assert_allclose(square @ square.T, np.eye(6), atol=1e-6)  # as before
    RNN(3, 6, init="orthogonal", proj_size=2)
    with pytest.raises(ValueError, match=r"`proj_size` must be 0 with init='irnn'; got 2"):
        RNN(3, 6, nonlinearity="relu", init="irnn", proj_size=2)


def test_numpy_scalars_and_seeds_are_taken_where_numbers_are():
    x = np.random.default_rng(1).standard_normal((2, 5, 3)).astype(np.float32)
    layer = LSTM(3, 4, initial_state=np.float32(0.5), zoneout=0.2, rng=0)
    assert layer.initial_state == 0.5 and type(layer.initial_state) is float
    a = layer.forward(x, training=True, rng=3, checkpoint_every=np.int64(2)).output
    b = layer.forward(x, training=True, rng=np.random.default_rng(3)).output
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
