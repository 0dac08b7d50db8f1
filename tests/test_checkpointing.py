"""Gradient checkpointing: the same gradients as full BPTT, with O(√T) memory."""

import tracemalloc

import numpy as np
import pytest
from helpers import CELLS, make, random_state

from rnnlab.layers import LSTM


@pytest.mark.parametrize("k", [1, 3, 7])
@pytest.mark.parametrize("bi", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("name,ctor,kw", CELLS, ids=[c[0] for c in CELLS])
def test_same_gradients_as_full_bptt(name, ctor, kw, bi, k, engine_path):
    rng = np.random.default_rng(0)
    B, T, I, H = 3, 10, 2, 4
    m = make(ctor, kw, I, H, 2, bi, rng)
    x = rng.standard_normal((B, T, I))
    lengths = np.array([10, 4, 7])
    state = random_state(name, 2, 2 if bi else 1, B, H, rng)
    full = m.forward(x, lengths=lengths, state=state)
    ckpt = m.forward(x, lengths=lengths, state=state, checkpoint_every=k)
    np.testing.assert_allclose(ckpt.output, full.output, rtol=1e-13, atol=1e-15)
    dy = rng.standard_normal(full.output.shape)
    a, b = m.backward(full, dy), m.backward(ckpt, dy)
    np.testing.assert_allclose(b.input, a.input, rtol=1e-12, atol=1e-14)
    for name_ in a.params:
        np.testing.assert_allclose(
            b.params[name_], a.params[name_], rtol=1e-12, atol=1e-14, err_msg=name_
        )
    sa = a.state if isinstance(a.state, tuple) else (a.state,)
    sb = b.state if isinstance(b.state, tuple) else (b.state,)
    for u, v in zip(sa, sb, strict=True):
        np.testing.assert_allclose(v, u, rtol=1e-12, atol=1e-14)


def peak_bytes(fn) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_grows_like_sqrt_T():
    """Peak memory of a training step beyond input and output (numpy reports its buffers
    to tracemalloc): with k = √T it stays far below full BPTT's 7 H floats per step."""
    B, I, H = 4, 8, 64
    m = LSTM(I, H, rng=0)
    warm = np.zeros((B, 16, I), np.float32)
    for k in (0, 4):  # first calls may compile or load kernels: not what we measure
        m.backward(m.forward(warm, checkpoint_every=k), np.ones((B, 16, H), np.float32))
    peaks = {}
    for T in (256, 1024):
        x = np.random.default_rng(1).standard_normal((B, T, I)).astype(np.float32)
        dy = np.ones((B, T, H), np.float32)
        io_bytes = x.nbytes + dy.nbytes  # what any method allocates: the output and ∂L/∂x
        for k in (0, int(np.sqrt(T))):

            def step(k=k, x=x, dy=dy):
                m.backward(m.forward(x, checkpoint_every=k), dy)

            peaks[T, k] = peak_bytes(step) - io_bytes
    full_growth = peaks[1024, 0] / peaks[256, 0]
    ckpt_growth = peaks[1024, 32] / peaks[256, 16]
    assert full_growth > 3.0  # linear in T
    assert ckpt_growth < 2.6  # about √4 = 2, plus the input gradient's share
    assert peaks[1024, 32] < 0.5 * peaks[1024, 0]


def test_the_memory_check_counts_what_a_checkpointed_tape_keeps(monkeypatch):
    """The check before a forward pass counted T steps of tape whatever checkpoint_every
    was: it refused the very long sequences checkpointing is for (T = 100,000 asked for
    684 MiB, and the pass peaked at 127 MiB). It now counts the outputs, the states every k
    steps and one segment's tape."""
    from rnnlab import _checks

    asked = {}

    class Seen(Exception):
        pass

    def affordable(nbytes, name, what):
        asked["bytes"] = nbytes
        raise Seen

    layer = LSTM(1, 256)
    monkeypatch.setattr(_checks, "affordable", affordable)
    x = np.zeros((1, 100_000, 1), np.float32)
    sizes = {}
    for k in (0, 316):
        with pytest.raises(Seen):
            layer.forward(x, checkpoint_every=k)
        sizes[k] = asked["bytes"]
    assert sizes[0] == 100_000 * 7 * 256 * 4  # gates, c, h and output of every step
    assert sizes[316] == (100_000 + 2 * 317 + 316 * 7) * 256 * 4 < sizes[0] / 6
