"""Seq2Seq against PyTorch 2.13 on copied weights, float64: the teacher-forced masked loss and
every gradient, for each cell PyTorch has (rnn, relu, irnn as nn.RNN; lstm; gru as nn.GRU,
reset after), layer for layer, stacked, bidirectional and bridged encoders, each attention.

The PyTorch model is the textbook one, written independently of rnnlab's code: the source
packed (pack_padded_sequence), so the encoder's final state is each source's state at its
own last step, forward and backward direction; that state starts the decoder as it is, or
through the bridge h_0 = tanh(W_h [h_S ; h'_1] + b_h), c_0 = W_c [c_S ; c'_1] + b_c (the
top layer's directions side by side, module docstring); the decoder reads BOS and the
target shifted by one; the attention (Luong's general score or Bahdanau's, masked over the
source's padding) and a Linear readout; cross entropy summed over each target's own steps.
Sources and targets are padded past the batch's longest, with ids in the padding.
gru-orig (reset before the product) has no PyTorch module: its gradient is checked by
finite differences (test_seq2seq.py).
"""


import numpy as np
import pytest
from helpers import oracle

from rnnlab.losses import softmax_cross_entropy
from rnnlab.seq2seq import Seq2Seq

torch = oracle("torch")

V, W, E, H = 7, 6, 3, 4
B, S, T = 4, 8, 6  # padded beyond the longest source (6) and target (5)
SRC_LENGTHS, TGT_LENGTHS = np.array([6, 2, 4, 1]), np.array([5, 3, 1, 2])
CELLS = {"rnn": ("RNN", "tanh"), "relu": ("RNN", "relu"), "irnn": ("RNN", "relu"),
         "lstm": ("LSTM", None), "gru": ("GRU", None)}  # fmt: skip
SHAPES = [(1, 1, False), (2, 2, False), (1, 1, True), (2, 1, False), (2, 2, True)]


def torch_loss(m, cell, Lenc, Ldec, bi, attention, src, tgt_in, tgt):
    """The loss of the same model in PyTorch, and its parameters under rnnlab's names."""
    kind, nonlinearity = CELLS[cell]
    kw = {"nonlinearity": nonlinearity} if nonlinearity else {}
    enc = getattr(torch.nn, kind)(E, H, Lenc, bidirectional=bi, batch_first=True,
                                  dtype=torch.float64, **kw)  # fmt: skip
    dec = getattr(torch.nn, kind)(E, H, Ldec, batch_first=True, dtype=torch.float64, **kw)
    enc.load_state_dict({k[8:]: torch.tensor(v) for k, v in m.params.items()
                         if k.startswith("encoder.")})  # fmt: skip
    dec.load_state_dict({k[8:]: torch.tensor(v) for k, v in m.params.items()
                         if k.startswith("decoder.")})  # fmt: skip
    P = {k: torch.tensor(v, requires_grad=True) for k, v in m.params.items()
         if not k.startswith(("encoder.", "decoder."))}  # fmt: skip
    P.update({f"encoder.{k}": v for k, v in enc.named_parameters()})
    P.update({f"decoder.{k}": v for k, v in dec.named_parameters()})

    packed = torch.nn.utils.rnn.pack_padded_sequence(
        P["src_embed.weight"][torch.tensor(src)], torch.tensor(SRC_LENGTHS), batch_first=True,
        enforce_sorted=False)  # fmt: skip
    out, state = enc(packed)
    out, _ = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=S)
    if bi or Lenc != Ldec:
        D = 2 if bi else 1

        def top(a):  # (B, D·H): the top layer's directions side by side
            return torch.cat(list(a[-D:]), dim=1)

        def layers(a):  # (B, Ldec·H) → (Ldec, B, H)
            return a.reshape(B, Ldec, H).permute(1, 0, 2).contiguous()

        h = state[0] if cell == "lstm" else state
        h0 = layers(torch.tanh(top(h) @ P["bridge_h.weight"].T + P["bridge_h.bias"]))
        if cell == "lstm":
            state = (h0, layers(top(state[1]) @ P["bridge_c.weight"].T + P["bridge_c.bias"]))
        else:
            state = h0
    y, _ = dec(P["tgt_embed.weight"][torch.tensor(tgt_in)], state)
    if attention != "none":
        if attention == "multiplicative":
            score = y @ (out @ P["attention.weight"].T).transpose(1, 2)
        else:
            u = torch.tanh((out @ P["attention.weight_source"].T)[:, None]
                           + (y @ P["attention.weight_target"].T)[:, :, None])  # fmt: skip
            score = u @ P["attention.v"]
        valid = torch.tensor(np.arange(S)[None, None, :] < SRC_LENGTHS[:, None, None])
        ctx = torch.softmax(score.masked_fill(~valid, -torch.inf), dim=-1) @ out
        y = torch.tanh(torch.cat([ctx, y], dim=-1) @ P["combine.weight"].T + P["combine.bias"])
    logits = y @ P["out.weight"].T + P["out.bias"]
    ce = torch.nn.functional.cross_entropy(logits.reshape(-1, W), torch.tensor(tgt).reshape(-1),
                                           reduction="none").reshape(B, T)  # fmt: skip
    own = torch.tensor(np.arange(T)[None, :] < TGT_LENGTHS[:, None])
    return (ce * own).sum(), P


@pytest.mark.parametrize("attention", ["none", "multiplicative", "additive"])
@pytest.mark.parametrize("Lenc,Ldec,bi", SHAPES,
                         ids=["1-1", "2-2", "bi-bridge", "2-1-bridge", "bi-2-2-bridge"])
@pytest.mark.parametrize("cell", list(CELLS))
def test_loss_and_every_gradient_equal_pytorchs(cell, Lenc, Ldec, bi, attention):
    m = Seq2Seq(V, W, embed=E, hidden=H, cell=cell, encoder_layers=Lenc, decoder_layers=Ldec,
                bidirectional=bi, attention=attention, dtype=np.float64, rng=3,
                attention_size=3 if attention == "additive" else None)  # fmt: skip
    g = np.random.default_rng(5)
    for v in m.params.values():  # weights large enough that no gradient is tiny
        v[...] = g.uniform(-0.8, 0.8, v.shape)
    src, tgt = g.integers(0, V, (B, S)), g.integers(0, W, (B, T))  # ids in the padding too
    tgt_in = np.concatenate([np.zeros((B, 1), int), tgt[:, :-1]], axis=1)
    f = m.forward(src, tgt_in, src_lengths=SRC_LENGTHS, tgt_lengths=TGT_LENGTHS)
    loss, d_logits = softmax_cross_entropy(f.output, tgt, lengths=TGT_LENGTHS)
    grads = m.backward(f, d_logits).params

    theirs, P = torch_loss(m, cell, Lenc, Ldec, bi, attention, src, tgt_in, tgt)
    theirs.backward()
    assert loss == pytest.approx(theirs.item(), rel=1e-12)
    assert set(P) == set(grads)
    for name, g_ours in grads.items():
        g_theirs = P[name].grad.numpy()
        scale = max(np.abs(g_theirs).max(), 1e-3)
        assert np.abs(g_ours - g_theirs).max() / scale < 1e-10, name
