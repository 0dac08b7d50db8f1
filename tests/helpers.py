"""Shared builders for the engine tests."""

import contextlib
import signal

import numpy as np

from rnnlab.layers import GRU, LSTM, RNN

# (name, constructor, keyword arguments): every cell rnnlab has.
CELLS = [
    ("tanh", RNN, {}),
    ("relu", RNN, {"nonlinearity": "relu"}),
    ("lstm", LSTM, {}),
    ("gru", GRU, {}),
    ("gru_orig", GRU, {"reset_after": False}),
]


def make(ctor, kw, I, H, L=1, bi=False, rng=None, scale=0.5, **extra):
    """A float64 layer whose every parameter is redrawn in [-scale, scale] (biases non-zero)."""
    rng = rng or np.random.default_rng(0)
    m = ctor(I, H, L, bidirectional=bi, dtype=np.float64, rng=rng, **kw, **extra)
    for v in m.params.values():
        v[...] = rng.uniform(-scale, scale, v.shape)
    return m


def random_state(name, L, D, B, H, rng):
    h = rng.standard_normal((L * D, B, H))
    return (h, rng.standard_normal((L * D, B, H))) if name == "lstm" else h


@contextlib.contextmanager
def hang_guard(seconds: int):
    """A case still running after `seconds` has hung: SIGALRM interrupts it (a blocked open
    of a FIFO too) with a TimeoutError that fails the case instead of the whole run."""

    def stop(signum, frame):
        raise TimeoutError("the case hung")

    old = signal.signal(signal.SIGALRM, stop)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
