"""The output-feedback (Jordan) network on the library's loop: the notes' equations written
out, the compiled loop equal to the NumPy one, finite differences on the NumPy path (the
compiled path's are in test_gradients), inference without a tape."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import oracle

from rnnlab import fast, gradcheck, settings
from rnnlab.feedback import OutputFeedback

B, T, I, H, K = 4, 6, 3, 5, 4
LENGTHS = np.array([6, 4, 1, 5])


def _layer(feedback, hidden, nonlinearity="tanh", dtype=np.float64):
    rng = np.random.default_rng(2)
    layer = OutputFeedback(I, H, K, feedback=feedback, hidden_recurrence=hidden,
                           nonlinearity=nonlinearity, dtype=dtype, rng=rng)  # fmt: skip
    for v in layer.params.values():
        v[...] = rng.uniform(-0.7, 0.7, v.shape)
    return layer


def _data(feedback, dtype=np.float64):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((B, T, I)).astype(dtype)
    if feedback == "softmax":
        ids = rng.integers(0, K, (B, T))
        return x, ids, np.eye(K, dtype=dtype)[ids]
    y = rng.uniform(0, 1, (B, T, K)).astype(dtype)
    return x, y, y


def _notes(layer, x, truth, use, h0, y0, lengths):
    """The notes' Jordan network, one step at a time:
    h_t = φ(U x_t + R y_{t-1} + b [+ W h_{t-1}]),  o_t = V h_t + c,  y_t = f(o_t), or the
    truth y*_t where the next step is teacher-forced; a finished sequence keeps its state."""
    P = layer.params
    phi = np.tanh if layer.nonlinearity == "tanh" else (lambda a: np.maximum(a, 0.0))
    f = {
        "identity": lambda o: o,
        "sigmoid": lambda o: 1 / (1 + np.exp(-o)),
        "softmax": lambda o: np.exp(o) / np.exp(o).sum(axis=-1, keepdims=True),
    }[layer.feedback]
    h, y = h0.copy(), y0.copy()
    O = np.zeros((B, T, K))
    for t in range(T):
        a = x[:, t] @ P["weight_ih"].T + y @ P["weight_fh"].T + P["bias"]
        if layer.hidden_recurrence:
            a += h @ P["weight_hh"].T
        h_new = phi(a)
        o = h_new @ P["weight_out"].T + P["bias_out"]
        y_new = np.where(use[t][:, None], f(o), truth[:, t])
        valid = (t < lengths)[:, None]
        O[:, t] = np.where(valid, o, 0.0)
        h, y = np.where(valid, h_new, h), np.where(valid, y_new, y)
    return O, h, y


@pytest.fixture(params=["compiled", "numpy"])
def path(request):
    if request.param == "compiled":
        if not fast.available():
            pytest.skip("needs the compiled loops")
        yield request.param
    else:
        with settings.override(no_numba=True):
            yield request.param


@pytest.mark.parametrize("feedback", ["identity", "softmax", "sigmoid"])
@pytest.mark.parametrize("hidden", [False, True], ids=["jordan", "jordan+elman"])
@pytest.mark.parametrize("mode", ["teacher", "free", "scheduled"])
def test_the_notes_equations(path, feedback, hidden, mode):
    layer = _layer(feedback, hidden, "relu" if feedback == "identity" else "tanh")
    x, targets, truth = _data(feedback)
    rng = np.random.default_rng(4)
    h0 = rng.standard_normal((B, H)) if hidden else np.zeros((B, H))
    y0 = rng.standard_normal((B, K))
    f = layer.forward(x, targets=targets, mode=mode, p=0.5, lengths=LENGTHS,
                      state=h0 if hidden else None, y0=y0,
                      rng=np.random.default_rng(7))  # fmt: skip
    # scheduled sampling draws, for every step t, whether step t + 1 (a next call's first
    # step after the last) is fed step t's prediction rather than the truth
    use = np.full((T, B), mode != "teacher")
    if mode == "scheduled":
        use[:] = np.random.default_rng(7).random((T, B)) >= 0.5
    O, h_T, y_T = _notes(layer, x, truth, use, h0, y0, LENGTHS)
    np.testing.assert_allclose(f.output, O, rtol=0, atol=1e-12)
    np.testing.assert_allclose(f.cache["y_last"], y_T, rtol=0, atol=1e-12)
    if hidden:
        np.testing.assert_allclose(f.state, h_T, rtol=0, atol=1e-12)
    if mode == "scheduled":
        assert 0 < (~use[:-1]).sum() < use[:-1].size  # the draws fed both kinds
        last = LENGTHS - 1
        assert 0 < use[last, np.arange(B)].sum() < B  # y_last: the truth or the prediction


def test_scheduled_sampling_feeds_a_next_window_the_truth_with_probability_p():
    """Truncated BPTT's windows are calls in a row: the value a window hands the next
    (y_last) is the truth with probability p, as at every other step. It was always the
    prediction, so one step in `bptt` never saw the truth (the training review's case)."""
    layer = _layer("softmax", False)
    rng = np.random.default_rng(0)
    n = 4000
    x = rng.standard_normal((n, 3, I))
    ids = rng.integers(0, K, (n, 3))
    truth = np.eye(K)[ids[:, -1]]
    for p, near in ((1.0, 1.0), (0.9, 0.9), (0.5, 0.5), (0.0, 0.0)):
        mode = "teacher" if p == 1.0 else "scheduled"
        f = layer.forward(x, targets=ids, mode=mode, p=p, rng=np.random.default_rng(1))
        fed_truth = np.all(np.isclose(f.cache["y_last"], truth), axis=1).mean()
        assert abs(fed_truth - near) < 0.03, (p, fed_truth)


def _run(layer, x, targets, mode):
    rng = np.random.default_rng(3)
    state = rng.standard_normal((B, H)) if layer.hidden_recurrence else None
    f = layer.forward(x, targets=targets, mode=mode, p=0.4, lengths=LENGTHS, state=state,
                      rng=np.random.default_rng(8))  # fmt: skip
    d_state = rng.standard_normal((B, H)) if layer.hidden_recurrence else None
    b = layer.backward(f, rng.standard_normal(f.output.shape), d_state,
                       d_y_last=rng.standard_normal((B, K)))  # fmt: skip
    return f, b


@pytest.mark.skipif(not fast.available(), reason="needs the compiled loops")
@pytest.mark.parametrize("feedback", ["identity", "softmax", "sigmoid"])
@pytest.mark.parametrize("hidden", [False, True], ids=["jordan", "jordan+elman"])
def test_compiled_equals_numpy(feedback, hidden):
    layer = _layer(feedback, hidden)
    x, targets, _ = _data(feedback)
    f1, b1 = _run(layer, x, targets, "scheduled")
    with settings.override(no_numba=True):
        f2, b2 = _run(layer, x, targets, "scheduled")
    np.testing.assert_allclose(f1.output, f2.output, rtol=0, atol=1e-12)
    np.testing.assert_allclose(f1.cache["y_last"], f2.cache["y_last"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(b1.input, b2.input, rtol=0, atol=1e-12)
    if hidden:
        np.testing.assert_allclose(b1.state, b2.state, rtol=0, atol=1e-12)
    for k in layer.params:
        np.testing.assert_allclose(b1.params[k], b2.params[k], rtol=0, atol=1e-12, err_msg=k)


@pytest.mark.parametrize("feedback", ["softmax", "sigmoid"])
@pytest.mark.parametrize("mode", ["teacher", "free", "scheduled"])
def test_finite_differences_on_numpy(feedback, mode):
    layer = _layer(feedback, True)
    x, targets, _ = _data(feedback)
    with settings.override(no_numba=True):
        report = gradcheck(layer, x, rng_seed=1, targets=targets, mode=mode, p=0.5,
                           lengths=LENGTHS, state=np.random.default_rng(1).standard_normal((B, H)))
    report.assert_ok()


def test_float32_runs_the_compiled_loop_near_float64():
    x64, targets, _ = _data("softmax")
    a = _layer("softmax", True, dtype=np.float64)
    b = _layer("softmax", True, dtype=np.float32)
    fa = a.forward(x64, targets=targets, mode="free", lengths=LENGTHS)
    fb = b.forward(x64.astype(np.float32), targets=targets, mode="free", lengths=LENGTHS)
    assert fb.output.dtype == np.float32
    np.testing.assert_allclose(fb.output, fa.output, rtol=0, atol=1e-5)
    bb = b.backward(fb, np.ones_like(fb.output))
    assert all(g.dtype == np.float32 and np.isfinite(g).all() for g in bb.params.values())


def test_inference_keeps_no_tape_and_computes_the_same():
    layer = _layer("softmax", True)
    x, targets, _ = _data("softmax")
    with_tape = layer.forward(x, mode="free", lengths=LENGTHS)
    without = layer.forward(x, mode="free", lengths=LENGTHS, grad=False)
    np.testing.assert_allclose(without.output, with_tape.output, rtol=0, atol=1e-12)
    np.testing.assert_allclose(without.cache["y_last"], with_tape.cache["y_last"], atol=1e-12)
    with pytest.raises(ValueError, match="grad=True"):
        layer.backward(without, np.ones_like(without.output))


def test_the_loop_refuses_feedback_it_does_not_run():
    """Output feedback runs forward only, without noise, with the output map and its bias."""
    from rnnlab import recurrence
    from rnnlab.cells import ElmanCell

    layer = _layer("identity", False)
    rp = layer._loop_params()
    X = np.zeros((T, B, I))
    fb = recurrence.Feedback("identity", False, np.empty((T, B, K)), np.ones((T, B)),
                             np.zeros((T, B, K)))  # fmt: skip
    with pytest.raises(ValueError, match="output feedback runs forward, without noise"):
        recurrence.forward(ElmanCell(), rp, X, np.zeros((B, K)), reverse=True, feedback=fb)
    rp.b_hr = None
    with pytest.raises(ValueError, match="with W_hr and b_hr"):
        recurrence.forward(ElmanCell(), rp, X, np.zeros((B, K)), feedback=fb)


@pytest.mark.parametrize("cell", ["jordan", "jordan-elman"])
def test_the_model_gives_the_gradient_of_the_fed_back_start(path, cell):
    """FeedbackModel's state is [h, y]: the gradient of y0 (what the first step is fed) comes
    back beside h0's, exact against finite differences, and a sequence split over two calls
    backpropagates through the seam (the second call's ∂L/∂y0 as the first's d_y_last) to
    the gradients of one call over the whole."""
    from rnnlab.models import build

    spec = {"input": {"type": "vectors", "size": I}, "rnn": {"cell": cell, "hidden_size": H},
            "output_size": K, "feedback": "sigmoid"}  # fmt: skip
    model = build(spec, dtype=np.float64, rng=3)
    rng = np.random.default_rng(6)
    x = rng.standard_normal((B, T, I))
    h0 = rng.standard_normal((B, H)) if cell == "jordan-elman" else None
    y0 = rng.uniform(0.1, 0.9, (B, K))
    report = gradcheck(model, x, teacher=0.0, state=[h0, y0])
    assert "initial_state[1]" in report.errors or "initial_state" in report.errors
    report.assert_ok()

    d = rng.standard_normal((B, T, K))
    whole = model.forward(x, teacher=0.0, state=[h0, y0])
    b_whole = model.backward(whole, d)
    cut = T // 2
    first = model.forward(x[:, :cut], teacher=0.0, state=[h0, y0])
    second = model.forward(x[:, cut:], teacher=0.0, state=first.state)
    np.testing.assert_allclose(np.concatenate([first.output, second.output], axis=1),
                               whole.output, rtol=0, atol=1e-12)  # fmt: skip
    b2 = model.backward(second, d[:, cut:])
    b1 = model.backward(first, d[:, :cut], b2.state)
    for k in model.params:
        np.testing.assert_allclose(b1.params[k] + b2.params[k], b_whole.params[k], rtol=0,
                                   atol=1e-12, err_msg=k)  # fmt: skip
    for got, want in zip(b1.state, b_whole.state, strict=True):
        if want is not None:
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


def test_the_model_refuses_a_teacher_probability_outside_0_1():
    from rnnlab.models import build

    spec = {"input": {"type": "vectors", "size": I}, "rnn": {"cell": "jordan", "hidden_size": H},
            "output_size": K, "feedback": "sigmoid"}  # fmt: skip
    model = build(spec, dtype=np.float64, rng=3)
    x = np.zeros((B, T, I))
    for bad in (2.0, -1.0, float("nan"), None, "0.5"):
        with pytest.raises(ValueError, match=r"`teacher` must be a number in \[0, 1\]"):
            model.forward(x, targets=np.zeros((B, T, K)), teacher=bad)


def test_padded_targets_may_hold_any_value_as_the_losses_allow():
    """The padded steps are never fed back: their target ids are not checked (the loss
    takes -1 there; the layer refused it). An id out of range at a valid step is refused."""
    layer = _layer("softmax", True)
    x, ids, _ = _data("softmax")
    lengths = np.array([T, 2, T, T])
    padded = ids.copy()
    padded[1, 2:] = -1
    f = layer.forward(x, targets=padded, mode="teacher", lengths=lengths)
    g = layer.forward(x, targets=ids, mode="teacher", lengths=lengths)
    np.testing.assert_array_equal(f.output, g.output)
    padded[0, 1] = K
    with pytest.raises(ValueError, match=r"`targets` must be class ids in \[0, 4\) at the "
                                         r"valid steps; got values from 0 to 4"):  # fmt: skip
        layer.forward(x, targets=padded, mode="teacher", lengths=lengths)


def test_a_feedback_model_s_state_is_a_pair_and_scheduled_sampling_takes_a_seed():
    """FeedbackModel's state is [h, y]: [None], three items or a bare array (unpacked row by
    row, then said to be y0 of the wrong shape) are refused as what they are; scheduled
    sampling takes an integer seed as every module's rng does (it asked for a Generator
    "for mode='scheduled'", a mode the caller never named)."""
    from rnnlab.models import build

    spec = {"input": {"type": "tokens", "vocab_size": 5, "embed_dim": 3},
            "rnn": {"cell": "jordan-elman", "hidden_size": 4}, "output_size": 5,
            "feedback": "softmax"}  # fmt: skip
    model = build(spec, dtype=np.float64, rng=0)
    ids = np.random.default_rng(1).integers(0, 5, (2, 6))
    for state in ([None], [None, None, None], np.zeros((2, 4))):
        with pytest.raises(ValueError, match=r"`state` must be None or a pair \[h, y\]"):
            model.forward(ids, state=state)
    f = model.forward(ids)
    with pytest.raises(ValueError, match=r"`d_state` must be None or a pair \[h, y\]"):
        model.backward(f, np.zeros_like(f.output), d_state=np.zeros((2, 4)))
    a = model.forward(ids, targets=ids, teacher=0.5, rng=2).output
    b = model.forward(ids, targets=ids, teacher=0.5, rng=np.random.default_rng(2)).output
    np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match=r"`rng` must be a numpy Generator or a seed when "
                       r"training with scheduled sampling"):
        model.forward(ids, targets=ids, teacher=0.5)


def _torch_reference(layer, x, truth, use, h0, y0, lengths, d_out, d_h, d_y):
    """The notes' Jordan network written in PyTorch, differentiated by its autograd: the
    outputs, the value fed to a next call, and the gradients of L = Σ d_out·o + d_h·h_T +
    d_y·y_last with respect to every parameter, x, h0 and y0."""
    import torch

    P = {k: torch.tensor(v, requires_grad=True) for k, v in layer.params.items()}
    X, H0, Y0 = (torch.tensor(a, requires_grad=True) for a in (x, h0, y0))
    phi = torch.tanh if layer.nonlinearity == "tanh" else torch.relu
    f = {"identity": lambda o: o, "sigmoid": torch.sigmoid,
         "softmax": lambda o: torch.softmax(o, -1)}[layer.feedback]  # fmt: skip
    h, y, outs = H0, Y0, []
    for t in range(x.shape[1]):
        a = X[:, t] @ P["weight_ih"].T + y @ P["weight_fh"].T + P["bias"]
        if layer.hidden_recurrence:
            a = a + h @ P["weight_hh"].T
        h_new = phi(a)
        o = h_new @ P["weight_out"].T + P["bias_out"]
        y_new = torch.where(torch.tensor(use[t])[:, None], f(o), torch.tensor(truth[:, t]))
        valid = torch.tensor(t < lengths)[:, None]
        outs.append(torch.where(valid, o, torch.zeros_like(o)))
        h, y = torch.where(valid, h_new, h), torch.where(valid, y_new, y)
    O = torch.stack(outs, 1)
    loss = (O * torch.tensor(d_out)).sum() + (y * torch.tensor(d_y)).sum()
    if layer.hidden_recurrence:
        loss = loss + (h * torch.tensor(d_h)).sum()
    loss.backward()
    grads = {k: v.grad.numpy() for k, v in P.items()}
    return O.detach().numpy(), y.detach().numpy(), grads, X.grad.numpy(), H0.grad, Y0.grad.numpy()


@pytest.mark.parametrize("feedback", ["identity", "softmax", "sigmoid"])
@pytest.mark.parametrize("hidden", [False, True], ids=["jordan", "jordan+elman"])
@pytest.mark.parametrize("mode", ["teacher", "free", "scheduled"])
def test_forward_and_bptt_equal_pytorch_autograd_on_copied_weights(path, feedback, hidden, mode):
    """PyTorch has no Jordan cell, but its autograd differentiates the notes' equations
    written out: every gradient of BPTT through the feedback path (the softmax's Jacobian
    when run free, none through the truth when teacher-forced), with padding, a given h0
    and y0, and a loss on the value handed to a next call (d_y_last), to 1e-12 on both
    loops."""
    oracle("torch")
    layer = _layer(feedback, hidden, "relu" if feedback == "identity" else "tanh")
    x, targets, truth = _data(feedback)
    rng = np.random.default_rng(9)
    h0 = rng.standard_normal((B, H)) if hidden else np.zeros((B, H))
    y0 = rng.standard_normal((B, K))
    d_out, d_h, d_y = (rng.standard_normal(s) for s in ((B, T, K), (B, H), (B, K)))
    f = layer.forward(x, targets=targets, mode=mode, p=0.5, lengths=LENGTHS,
                      state=h0 if hidden else None, y0=y0,
                      rng=np.random.default_rng(7))  # fmt: skip
    b = layer.backward(f, d_out, d_h if hidden else None, d_y_last=d_y)
    use = np.full((T, B), mode != "teacher")
    if mode == "scheduled":
        use[:] = np.random.default_rng(7).random((T, B)) >= 0.5
    O, y_T, grads, dX, dH0, dY0 = _torch_reference(layer, x, truth, use, h0, y0, LENGTHS,
                                                   d_out, d_h, d_y)  # fmt: skip
    np.testing.assert_allclose(f.output, O, rtol=0, atol=1e-12)
    np.testing.assert_allclose(f.cache["y_last"], y_T, rtol=0, atol=1e-12)
    np.testing.assert_allclose(b.input, dX, rtol=0, atol=1e-12)
    np.testing.assert_allclose(b.y0, dY0, rtol=0, atol=1e-12)
    if hidden:
        np.testing.assert_allclose(b.state, dH0.numpy(), rtol=0, atol=1e-12)
    for k in layer.params:
        np.testing.assert_allclose(b.params[k], grads[k], rtol=0, atol=1e-12, err_msg=k)
    assert np.abs(grads["weight_fh"]).max() > 1e-3  # (the feedback weight does get a gradient)


def test_class_ids_as_a_list_are_read_as_an_array_of_ids():
    """Targets given as a list of class ids were refused as floats ("Token ids go through
    an Embedding first", advice for the input, not the targets)."""
    layer = _layer("softmax", True)
    x, ids, _ = _data("softmax")
    want = layer.forward(x, targets=ids, mode="teacher").output
    got = layer.forward(x, targets=ids.tolist(), mode="teacher").output
    np.testing.assert_array_equal(got, want)
    with pytest.raises(ValueError, match=r"`targets` must be class ids in \[0, 4\)"):
        layer.forward(x, targets=(ids + K).tolist(), mode="teacher")


def test_the_layer_s_switches_and_sizes_are_refused_by_name():
    """hidden_recurrence="no" built a layer with hidden-to-hidden recurrence (bool() of a
    string); `p` was read only in scheduled mode, so p=2 or "x" passed with the mode
    "teacher"; a batch without sequences or steps ran where every other layer refuses it."""
    with pytest.raises(ValueError, match=r"`hidden_recurrence` must be True or False; got 'no'"):
        OutputFeedback(I, H, K, hidden_recurrence="no")
    layer = _layer("softmax", False)
    x, ids, _ = _data("softmax")
    for mode in ("teacher", "free", "scheduled"):
        for bad in (2.0, "x", None):
            with pytest.raises(ValueError, match=r"`p` must be a number in \[0, 1\]"):
                layer.forward(x, targets=ids, mode=mode, p=bad, rng=0)
    for shape in ((B, 0, I), (0, T, I)):
        with pytest.raises(ValueError, match=r"`x` must be an array of one sequence and one "
                                             r"step at least"):  # fmt: skip
            layer.forward(np.zeros(shape), mode="free")


def test_backward_refuses_what_its_forward_did_not_make():
    """Another module's Forward failed with KeyError 'X'; a string with AttributeError."""
    from rnnlab.layers import RNN

    layer = _layer("sigmoid", True)
    x, _, _ = _data("sigmoid")
    wider = OutputFeedback(I, H, K + 1, dtype=np.float64, rng=0).forward(x, mode="free")
    for f in (RNN(I, K, dtype=np.float64, rng=0).forward(x), wider, "f"):
        with pytest.raises(ValueError, match=r"`f` must be the result of this OutputFeedback's "
                                             r"forward \(3 inputs, 4 outputs\); got "
                                             r"(the result of another module's forward|'f')"):
            layer.backward(f, np.zeros((B, T, K)))
    f = _layer("sigmoid", True).forward(x, mode="free")  # another layer of the same form
    layer.backward(f, np.zeros((B, T, K)))
