"""Parity with PyTorch 2.13 on copied weights, float64: outputs, final states, every gradient.

PyTorch is a test oracle only. Locally the module is skipped without torch; under CI
(CI set in the environment) a missing torch is an error, so these tests always run there.
"""


import numpy as np
import pytest
from helpers import oracle

from rnnlab.layers import GRU, LSTM, RNN

torch = oracle("torch")

RTOL = 1e-10

CASES = [
    ("rnn_tanh", RNN, lambda: torch.nn.RNN, {}),
    ("rnn_relu", RNN, lambda: torch.nn.RNN, {"nonlinearity": "relu"}),
    ("lstm", LSTM, lambda: torch.nn.LSTM, {}),
    ("gru", GRU, lambda: torch.nn.GRU, {}),
]


def close(a, b, what):
    a, b = np.asarray(a), np.asarray(b)
    scale = max(np.abs(b).max(), 1e-300)
    err = np.abs(a - b).max() / scale
    assert err < RTOL, f"{what}: relative error {err:.2e}"


def pair(ctor, tctor, kw, I, H, L, bi, batch_first, rng):
    ours = ctor(I, H, L, bidirectional=bi, batch_first=batch_first, dtype=np.float64, rng=rng, **kw)
    theirs = tctor()(I, H, L, bidirectional=bi, batch_first=batch_first, dtype=torch.float64, **kw)
    theirs.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in ours.params.items()})
    return ours, theirs


@pytest.mark.parametrize("batch_first", [True, False], ids=["batch_first", "time_major"])
@pytest.mark.parametrize(
    "L,bi",
    [(1, False), (2, False), (1, True), (2, True)],
    ids=["1layer", "2layers", "bi", "bi_2layers"],
)
@pytest.mark.parametrize("name,ctor,tctor,kw", CASES, ids=[c[0] for c in CASES])
def test_parity(name, ctor, tctor, kw, L, bi, batch_first, engine_path):
    rng = np.random.default_rng(0)
    B, T, I, H = 4, 7, 5, 6
    D = 2 if bi else 1
    ours, theirs = pair(ctor, tctor, kw, I, H, L, bi, batch_first, rng)
    x = rng.standard_normal((B, T, I) if batch_first else (T, B, I))
    h0 = rng.standard_normal((L * D, B, H))
    c0 = rng.standard_normal((L * D, B, H))
    state = (h0, c0) if name == "lstm" else h0

    f = ours.forward(x, state=state)
    xt = torch.from_numpy(x.copy()).requires_grad_()
    h0t = torch.from_numpy(h0.copy()).requires_grad_()
    c0t = torch.from_numpy(c0.copy()).requires_grad_()
    yt, st = theirs(xt, (h0t, c0t) if name == "lstm" else h0t)
    close(f.output, yt.detach(), "output")
    if name == "lstm":
        close(f.state[0], st[0].detach(), "h_n")
        close(f.state[1], st[1].detach(), "c_n")
    else:
        close(f.state, st.detach(), "h_n")

    dy = rng.standard_normal(f.output.shape)
    dh = rng.standard_normal((L * D, B, H))
    dc = rng.standard_normal((L * D, B, H))
    b = ours.backward(f, dy, (dh, dc) if name == "lstm" else dh)
    loss = (yt * torch.from_numpy(dy)).sum()
    if name == "lstm":
        loss = loss + (st[0] * torch.from_numpy(dh)).sum() + (st[1] * torch.from_numpy(dc)).sum()
    else:
        loss = loss + (st * torch.from_numpy(dh)).sum()
    loss.backward()
    for pname, p in theirs.named_parameters():
        close(b.params[pname], p.grad, pname)
    close(b.input, xt.grad, "input gradient")
    if name == "lstm":
        close(b.state[0], h0t.grad, "h0 gradient")
        close(b.state[1], c0t.grad, "c0 gradient")
    else:
        close(b.state, h0t.grad, "h0 gradient")


@pytest.mark.parametrize("bi", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("name,ctor,tctor,kw", CASES, ids=[c[0] for c in CASES])
def test_parity_with_packed_sequences(name, ctor, tctor, kw, bi, engine_path):
    """Variable lengths: ours (lengths) against torch's PackedSequence, unsorted batch."""
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    rng = np.random.default_rng(1)
    B, T, I, H, L = 4, 6, 3, 5, 2
    lengths = np.array([3, 6, 1, 4])
    ours, theirs = pair(ctor, tctor, kw, I, H, L, bi, True, rng)
    x = rng.standard_normal((B, T, I))
    f = ours.forward(x, lengths=lengths)
    xt = torch.from_numpy(x.copy()).requires_grad_()
    packed = pack_padded_sequence(
        xt, torch.from_numpy(lengths), batch_first=True, enforce_sorted=False
    )
    yp, st = theirs(packed)
    yt, _ = pad_packed_sequence(yp, batch_first=True, total_length=T)
    close(f.output, yt.detach(), "output")
    hn = st[0] if name == "lstm" else st
    close(f.state[0] if name == "lstm" else f.state, hn.detach(), "h_n")

    dy = rng.standard_normal(f.output.shape)
    dh = rng.standard_normal(hn.shape)
    b = ours.backward(f, dy, (dh, None) if name == "lstm" else dh)
    ((yt * torch.from_numpy(dy)).sum() + (hn * torch.from_numpy(dh)).sum()).backward()
    for pname, p in theirs.named_parameters():
        close(b.params[pname], p.grad, pname)
    close(b.input, xt.grad, "input gradient")


def test_float32_default_matches_torch_float32():
    rng = np.random.default_rng(2)
    ours = LSTM(8, 16, 2, bidirectional=True, rng=rng)
    assert all(v.dtype == np.float32 for v in ours.params.values())
    theirs = torch.nn.LSTM(8, 16, 2, bidirectional=True, batch_first=True)
    theirs.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in ours.params.items()})
    x = rng.standard_normal((3, 20, 8)).astype(np.float32)
    f = ours.forward(x)
    assert f.output.dtype == np.float32
    yt, _ = theirs(torch.from_numpy(x))
    np.testing.assert_allclose(f.output, yt.detach().numpy(), atol=2e-6)


def test_a_torch_state_dict_loads_by_name():
    theirs = torch.nn.GRU(4, 6, 2, bidirectional=True, batch_first=True, dtype=torch.float64)
    ours = GRU(4, 6, 2, bidirectional=True, dtype=np.float64, rng=0)
    ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})
    x = np.random.default_rng(3).standard_normal((2, 5, 4))
    yt, _ = theirs(torch.from_numpy(x))
    close(ours.forward(x).output, yt.detach(), "output after loading torch weights")


@pytest.mark.parametrize("how", ["float16", "bfloat16", "parameters", "strided"])
@pytest.mark.parametrize("name", ["lstm_proj", "gru"])
def test_torch_tensors_load_as_they_come(name, how):
    """A state_dict's tensors need no .numpy(): half precision, bfloat16 (which NumPy has
    not), parameters that require grad and strided views load, each exactly: the loaded
    float64 layer computes what torch computes in float64 with the same rounded weights."""
    kw = {"proj_size": 3} if name == "lstm_proj" else {}
    tctor, ctor = (torch.nn.LSTM, LSTM) if name == "lstm_proj" else (torch.nn.GRU, GRU)
    torch.manual_seed(0)
    theirs = tctor(4, 6, 2, bidirectional=True, batch_first=True, **kw)
    if how in ("float16", "bfloat16"):
        theirs = theirs.to(getattr(torch, how))
        state = theirs.state_dict()
    elif how == "parameters":
        state = dict(theirs.named_parameters())
        assert all(v.requires_grad for v in state.values())
    else:
        state = {}
        for k, v in theirs.state_dict().items():  # every other element of a wider tensor
            wide = torch.zeros(*v.shape[:-1], 2 * v.shape[-1])
            wide[..., ::2] = v
            state[k] = wide[..., ::2]
            assert not state[k].is_contiguous()
    ours = ctor(4, 6, 2, bidirectional=True, dtype=np.float64, **kw)
    ours.load_state_dict(state)
    theirs = theirs.double()
    x = np.random.default_rng(0).standard_normal((3, 5, 4))
    with torch.no_grad():
        yt, st = theirs(torch.from_numpy(x))
    f = ours.forward(x)
    close(f.output, yt, "output")
    for a, b in zip(f.state if name == "lstm_proj" else [f.state],
                    st if name == "lstm_proj" else [st], strict=True):  # fmt: skip
        close(a, b, "final state")
