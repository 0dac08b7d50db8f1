"""Review of output feedback and generation: a Jordan character model against PyTorch's own
modules (nn.Embedding, nn.RNNCell, nn.Linear in a loop feeding back the truth, the softmax or
a coin between them) across two calls that carry the state; a Jordan model's samples drawn
again, draw for draw, from one teacher-forced pass; the sampler's extreme temperatures; and
`rnnlab sample` on a standard output that refuses the text."""

from __future__ import annotations

import errno
import sys

import numpy as np
import pytest
from helpers import RefusingStdout, oracle

from rnnlab import settings
from rnnlab.cli._base import EXIT_PIPE
from rnnlab.generate import next_token_probabilities, sample_ids
from rnnlab.models import build

V, E, H = 7, 3, 5
B, T = 3, 6


def _jordan(cell: str):
    spec = {"input": {"type": "tokens", "vocab_size": V, "embed_dim": E},
            "rnn": {"cell": cell, "hidden_size": H}, "output_size": V}  # fmt: skip
    m = build(spec, dtype=np.float64, rng=4)
    for k, v in m.params.items():  # feedback strong enough that what is fed back matters
        if k.endswith(("weight_fh", "weight_out", "bias_out")):
            v[...] = np.random.default_rng(len(k)).uniform(-1.5, 1.5, v.shape)
    return m


def _torch_loop(m, x, y, use, state, d_out, d_state):
    """PyTorch's modules on copied weights: nn.Embedding, then per step nn.RNNCell over
    [embedding; fed-back vector] (W_ih = [U R], b_ih = b, b_hh = 0; W_hh = W, or zero and
    h kept at zero without hidden recurrence), nn.Linear (V, c); the step after is fed
    the one-hot truth where `use` is 0, softmax(o) where it is 1. Returns the logits, the
    state [h, y] handed on, and every gradient of Σ d_out·o + d_state·state_T."""
    import torch

    L = m.layer
    P = {k: torch.tensor(v) for k, v in m.params.items()}
    emb = torch.nn.Embedding(V, E).double()
    cell = torch.nn.RNNCell(E + V, H).double()
    out = torch.nn.Linear(H, V).double()
    with torch.no_grad():
        emb.weight.copy_(P["0.weight"])
        cell.weight_ih.copy_(torch.cat([P["1.weight_ih"], P["1.weight_fh"]], 1))
        cell.bias_ih.copy_(P["1.bias"])
        cell.bias_hh.zero_()
        cell.weight_hh.copy_(P["1.weight_hh"] if L.hidden_recurrence else torch.zeros(H, H))
        out.weight.copy_(P["1.weight_out"])
        out.bias.copy_(P["1.bias_out"])
    h0 = torch.tensor(state[0] if state[0] is not None else np.zeros((B, H)),
                      requires_grad=True)  # fmt: skip
    y0 = torch.tensor(state[1], requires_grad=True)
    h, fed, outs = h0, y0, []
    truth = torch.nn.functional.one_hot(torch.tensor(y), V).double()
    for t in range(x.shape[1]):
        h = cell(torch.cat([emb(torch.tensor(x[:, t])), fed], 1), h)
        o = out(h)
        outs.append(o)
        fed = torch.where(torch.tensor(use[t])[:, None], torch.softmax(o, -1), truth[:, t])
        if not L.hidden_recurrence:
            h = torch.zeros_like(h)
    O = torch.stack(outs, 1)
    loss = (O * torch.tensor(d_out)).sum() + (fed * torch.tensor(d_state[1])).sum()
    if L.hidden_recurrence:
        loss = loss + (h * torch.tensor(d_state[0])).sum()
    loss.backward()
    grads = {"0.weight": emb.weight.grad, "1.weight_ih": cell.weight_ih.grad[:, :E],
             "1.weight_fh": cell.weight_ih.grad[:, E:], "1.bias": cell.bias_ih.grad,
             "1.weight_out": out.weight.grad, "1.bias_out": out.bias.grad}  # fmt: skip
    if L.hidden_recurrence:
        grads["1.weight_hh"] = cell.weight_hh.grad
    state_T = [h.detach().numpy() if L.hidden_recurrence else None, fed.detach().numpy()]
    d_state0 = [h0.grad.numpy() if L.hidden_recurrence else None, y0.grad.numpy()]
    return O.detach().numpy(), state_T, {k: g.numpy() for k, g in grads.items()}, d_state0


@pytest.fixture(params=["compiled", "numpy"])
def path(request):
    if request.param == "numpy":
        with settings.override(no_numba=True):
            yield request.param
    else:
        yield request.param


@pytest.mark.parametrize("teacher", [1.0, 0.0, 0.4], ids=["teacher", "free", "scheduled"])
@pytest.mark.parametrize("cell", ["jordan", "jordan-elman"])
def test_a_jordan_model_equals_pytorch_s_rnncell_and_linear_over_two_calls(path, cell, teacher):
    """The whole model (Embedding + OutputFeedback) in each training mode, the sequence cut
    into two calls whose state [h, y] the second continues from and whose state gradient
    flows back into the first (truncated BPTT's seam, here not cut): outputs, the state
    handed on, and every parameter's gradient equal PyTorch's autograd to 1e-12, on both
    loops. Scheduled sampling's coins are the ones FeedbackModel draws from the given
    generator (the truth where u < teacher)."""
    oracle("torch")
    m = _jordan(cell)
    rng = np.random.default_rng(2)
    x, y = rng.integers(0, V, (B, T)), rng.integers(0, V, (B, T))
    h0 = rng.standard_normal((B, H)) if cell == "jordan-elman" else None
    state0 = [h0, rng.standard_normal((B, V))]
    d_out = rng.standard_normal((B, T, V))
    d_state = [rng.standard_normal((B, H)), rng.standard_normal((B, V))]
    d_last = [d_state[0] if h0 is not None else None, d_state[1]]
    c = T // 2
    targets = None if teacher == 0.0 else y
    f1 = m.forward(x[:, :c], targets=None if targets is None else y[:, :c], teacher=teacher,
                   state=state0, rng=np.random.default_rng(11))  # fmt: skip
    f2 = m.forward(x[:, c:], targets=None if targets is None else y[:, c:], teacher=teacher,
                   state=f1.state, rng=np.random.default_rng(12))  # fmt: skip
    b2 = m.backward(f2, d_out[:, c:], d_last)
    b1 = m.backward(f1, d_out[:, :c], b2.state)
    use = np.full((T, B), teacher < 1.0)
    if 0.0 < teacher < 1.0:
        use[:c] = np.random.default_rng(11).random((c, B)) >= teacher
        use[c:] = np.random.default_rng(12).random((T - c, B)) >= teacher
        assert use.any() and not use.all()
    O, state_T, grads, d_state0 = _torch_loop(m, x, y, use, state0, d_out, d_state)
    np.testing.assert_allclose(np.concatenate([f1.output, f2.output], 1), O, rtol=0, atol=1e-12)
    np.testing.assert_allclose(f2.state[1], state_T[1], rtol=0, atol=1e-12)
    np.testing.assert_allclose(b1.state[1], d_state0[1], rtol=0, atol=1e-12)
    if h0 is not None:
        np.testing.assert_allclose(f2.state[0], state_T[0], rtol=0, atol=1e-12)
        np.testing.assert_allclose(b1.state[0], d_state0[0], rtol=0, atol=1e-12)
    for k, g in grads.items():
        np.testing.assert_allclose(b1.params[k] + b2.params[k], g, rtol=0, atol=1e-12,
                                   err_msg=k)  # fmt: skip
    assert np.abs(grads["1.weight_fh"]).max() > 1e-3  # (the feedback path carries gradient)


@pytest.mark.parametrize("cell", ["jordan", "jordan-elman"])
def test_a_jordan_model_s_samples_are_drawn_from_its_teacher_forced_distributions(path, cell):
    """Not only the greedy path: at temperature 1.7 with one id excluded, each id a Jordan
    model samples is the draw the same generator makes from softmax(o_t / 1.7) (the excluded
    id at 0), o_t read from ONE teacher-forced pass over the prime and the sample: the
    one-hot of the sampled id is what the next step is fed, and the draws follow the
    stated law, draw for draw. Feeding back the softmax (free running) draws other ids."""
    m = _jordan(cell)
    prime, n, tau, never = np.array([3, 0, 5]), 40, 1.7, 2
    out = sample_ids(m, prime, n, temperature=tau, rng=21, exclude=never)
    assert never not in out and len(set(out.tolist())) > 3
    seq = np.concatenate([prime, out])

    def redraw(logits_rows: np.ndarray) -> np.ndarray:
        gen = np.random.default_rng(21)
        drawn = []
        for z in logits_rows:
            z = z.copy()
            z[never] = -np.inf
            drawn.append(gen.choice(V, p=next_token_probabilities(z, tau)))
        return np.array(drawn)

    taught = m.forward(seq[None], targets=np.append(seq[1:], 0)[None], teacher=1.0)
    np.testing.assert_array_equal(redraw(taught.output[0, len(prime) - 1 : -1]), out)
    free = m.forward(seq[None]).output[0, len(prime) - 1 : -1]
    assert (redraw(free) != out).any()  # (the check tells the two feedbacks apart)


def test_extreme_temperatures_give_the_argmax_and_the_uniform_law_with_exclusions_kept():
    """τ → 0 (down to the smallest subnormal) is the argmax, ties shared; τ = 1e300 is
    uniform over the ids left, an excluded (−inf) id still at exactly 0; nothing is NaN."""
    z = np.array([0.3, -1e300, 2.0, 2.0, -np.inf, 1e300 / 3])
    for tau in (5e-324, 1e-300, 1e-8):
        p = next_token_probabilities(z, tau)
        np.testing.assert_array_equal(p, [0, 0, 0, 0, 0, 1])
    p = next_token_probabilities([0.3, 2.0, 2.0, -np.inf], 1e-300)
    np.testing.assert_array_equal(p, [0, 0.5, 0.5, 0])
    p = next_token_probabilities([0.3, -4.0, 2.0, -np.inf, 1.0], 1e300)
    np.testing.assert_allclose(p, [0.25, 0.25, 0.25, 0, 0.25], rtol=1e-15, atol=0)
    assert p[3] == 0


@pytest.fixture(scope="module")
def jordan_run(tmp_path_factory):
    from rnnlab.cli import main

    root = tmp_path_factory.mktemp("jordan")
    corpus = root / "cat.txt"
    corpus.write_text("the cat sat on the mat. " * 200)
    run = root / "run"
    assert main(["train", "charlm", "--data", str(corpus), "--cell", "jordan", "--steps", "2",
                 "--hidden", "6", "--quiet", "--run-dir", str(run)]) == 0  # fmt: skip
    return run


def test_sample_to_a_full_stdout_names_stdout_and_a_gone_reader_is_silent(
    jordan_run, capsys, monkeypatch
):
    """`rnnlab sample RUN > /dev/full` said "[Errno 28] No space left on device", naming
    neither stdout nor what was lost: it now says stdout refused the sample. A reader gone
    (`| head -c 1`) stays the silent exit of a broken pipe, as for every command."""
    from rnnlab.cli import main

    capsys.readouterr()
    full = OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(sys, "stdout", RefusingStdout(full))
    assert main(["sample", str(jordan_run), "--length", "5"]) == 2
    err = capsys.readouterr().err
    assert err == ("rnnlab: error: `stdout` must be what takes the whole of the sample; got a "
                   "stdout refusing it (No space left on device) instead. At most a part of the "
                   "sample reached it.\n")  # fmt: skip
    monkeypatch.setattr(sys, "stdout", RefusingStdout(OSError(errno.EPIPE, "Broken pipe")))
    assert main(["sample", str(jordan_run), "--length", "5"]) == EXIT_PIPE
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("feedback", ["softmax", "sigmoid", "identity"])
@pytest.mark.parametrize("hidden", [False, True], ids=["jordan", "jordan+elman"])
@pytest.mark.parametrize("mode", ["teacher", "free", "scheduled"])
def test_every_gradient_equals_central_differences_with_a_loss_on_what_is_handed_on(
    path, feedback, hidden, mode
):
    """Written here, not through rnnlab.gradcheck: float64 central differences of
    L = Σ w·o + Σ u·h_T + Σ v·y_last (the value a next call is fed) for every entry of every
    parameter (the output map's V and c too), of x, of the initial state h0 and of y0, the
    scheduled coins fixed by the seed; agreement to 1e-7 relative."""
    from rnnlab.feedback import OutputFeedback

    I, Hs, K, Bs, Ts = 2, 3, 3, 2, 4
    rng = np.random.default_rng(5)
    layer = OutputFeedback(I, Hs, K, feedback=feedback, hidden_recurrence=hidden,
                           dtype=np.float64, rng=1)  # fmt: skip
    for v in layer.params.values():
        v[...] = rng.uniform(-0.9, 0.9, v.shape)
    x = rng.standard_normal((Bs, Ts, I))
    targets = (rng.integers(0, K, (Bs, Ts)) if feedback == "softmax"
               else rng.uniform(0, 1, (Bs, Ts, K)))  # fmt: skip
    h0 = rng.standard_normal((Bs, Hs)) if hidden else None
    y0 = rng.standard_normal((Bs, K))
    w, u, v = rng.standard_normal((Bs, Ts, K)), rng.standard_normal((Bs, Hs)), \
        rng.standard_normal((Bs, K))  # fmt: skip
    lengths = np.array([Ts, Ts - 1])

    def run(x, h0, y0, grad=False):
        f = layer.forward(x, targets=None if mode == "free" else targets, mode=mode, p=0.5,
                          state=h0, y0=y0, lengths=lengths, rng=3, grad=grad)  # fmt: skip
        loss = (f.output * w).sum() + (f.cache["y_last"] * v).sum()
        return f, loss + ((f.state * u).sum() if hidden else 0.0)

    f, _ = run(x, h0, y0, grad=True)
    b = layer.backward(f, w, u if hidden else None, d_y_last=v)
    arrays = {**{k: (p, b.params[k]) for k, p in layer.params.items()},
              "x": (x, b.input), "y0": (y0, b.y0)}  # fmt: skip
    if hidden:
        arrays["h0"] = (h0, b.state)
    eps = 1e-6
    for name, (a, g) in arrays.items():
        num = np.zeros_like(a)
        for i in np.ndindex(a.shape):
            keep = a[i]
            a[i] = keep + eps
            up = run(x, h0, y0)[1]
            a[i] = keep - eps
            down = run(x, h0, y0)[1]
            a[i] = keep
            num[i] = (up - down) / (2 * eps)
        scale = max(np.abs(num).max(), 1.0)
        assert np.abs(num - g).max() / scale < 1e-7, name


def test_a_prime_id_a_jordan_model_reads_but_cannot_feed_back_is_named_as_the_prime():
    """A Jordan model of classes whose embedding reads more ids (10) than it has outputs
    (6): each prime id after the first is fed back as the class that followed, so an id
    from 6 on there was refused as "`targets` must be class ids in [0, 6)", an argument
    sample_ids' caller never passed. It is now said of the prime, with its position; the
    first id (only read) and ids below 6 sample as before."""
    spec = {"input": {"type": "tokens", "vocab_size": 10, "embed_dim": 3},
            "rnn": {"cell": "jordan", "hidden_size": 5}, "output_size": 6}  # fmt: skip
    m = build(spec, dtype=np.float64, rng=1)
    with pytest.raises(ValueError, match=r"^`prime` must be ids in \[0, 6\) after its first "
                                         r"\(this output-feedback model is fed each next id "
                                         r"back as one of its 6 classes\); got the id 8 at "
                                         r"position 2 instead\.$"):  # fmt: skip
        sample_ids(m, [1, 3, 8, 2], 5, rng=0)
    assert sample_ids(m, [8], 5, rng=0).shape == (5,)
    assert sample_ids(m, [9, 5, 0], 5, rng=0).max() < 6
