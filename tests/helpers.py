"""Shared builders for the engine tests."""

import contextlib
import importlib
import io
import os
import signal
from types import ModuleType

import numpy as np
import pytest

from rnnlab.layers import GRU, LSTM, RNN, Forward, Recurrent
from rnnlab.modules import Linear, Sequential

# (name, constructor, keyword arguments): every cell rnnlab has.
CELLS = [
    ("tanh", RNN, {}),
    ("relu", RNN, {"nonlinearity": "relu"}),
    ("lstm", LSTM, {}),
    ("gru", GRU, {}),
    ("gru_orig", GRU, {"reset_after": False}),
]


def oracle(name: str) -> ModuleType:
    """The test extra's module `name` (torch, onnx, onnxruntime, keras, h5py, mpi4py, ...),
    imported. Under CI (CI set in the environment: .ci/run sets it) a missing one is an
    error, so that the comparisons with it always run there; locally, the test that asks
    (or, at a module's top, the whole module) is skipped without it."""
    if os.environ.get("CI"):
        return importlib.import_module(name)
    return pytest.importorskip(name)


def keras_oracle() -> ModuleType:
    """Keras 3 on its torch backend (never tensorflow or jax: set before its first import,
    a KERAS_BACKEND of the caller's own kept), with h5py, which rnnlab.keras reads and writes
    its files with: both oracles as `oracle` takes them."""
    os.environ.setdefault("KERAS_BACKEND", "torch")
    oracle("h5py")
    return oracle("keras")


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


def mgu_cell(candidate="tanh", declare=True):
    """The minimal gated unit (Zhou et al. 2016), a cell of one's own as a user writes one,
    with its candidate squashed by tanh or relu and, when `declare`, its gates declared:

        f = σ(W_f x + b_if + U_f h + b_hf);  n = φ(W_n x + b_in + U_n (f ⊙ h) + b_hn)
        h' = h + f ⊙ (n − h);                tape: f, n, f ⊙ h
    """
    from rnnlab.cells import Cell
    from rnnlab.cells.pointwise import one, positive, relu, sigmoid, tanh, units

    use_relu = candidate == "relu"

    def gate(xa, b_ih, ha, b_hh, q, h_prev, c_prev, h, c, tape):
        H = h.shape[-1]
        for j in units(h):
            f = sigmoid(xa[..., :H][j] + b_ih[..., :H][j] + ha[j] + b_hh[..., :H][j])
            tape[..., :H][j] = f
            tape[..., 2 * H :][j] = f * h_prev[j]

    def new(xa, b_ih, ha, b_hh, q, h_prev, c_prev, h, c, tape):
        H = h.shape[-1]
        f, n = tape[..., :H], tape[..., H : 2 * H]
        if use_relu:
            for j in units(h):
                n[j] = relu(xa[..., H:][j] + b_ih[..., H:][j] + ha[j] + b_hh[..., H:][j])
        else:
            for j in units(h):
                n[j] = tanh(xa[..., H:][j] + b_ih[..., H:][j] + ha[j] + b_hh[..., H:][j])
        for j in units(h):
            h[j] = h_prev[j] + f[j] * (n[j] - h_prev[j])

    def new_back(dh, dc, dsrc, q, h_prev, c_prev, h, c, tape, da, da_h, dq):
        H = h.shape[-1]
        for j in units(h):
            f, n, d = tape[..., :H][j], tape[..., H : 2 * H][j], dh[j]
            if use_relu:
                da[..., H:][j] = (d * f) * positive(n)
            else:
                da[..., H:][j] = (d * f) * (one(d) - n * n)
            da[..., :H][j] = d * (n - h_prev[j])
            dh[j] = d * (one(d) - f)

    def gate_back(dh, dc, dsrc, q, h_prev, c_prev, h, c, tape, da, da_h, dq):
        H = h.shape[-1]
        for j in units(h):
            f, du = tape[..., :H][j], dsrc[j]
            da[..., :H][j] = (da[..., :H][j] + du * h_prev[j]) * (f * (one(f) - f))
            dh[j] = dh[j] + du * f

    attrs = {"name": "mgu", "gates": 2, "tape": 3, "products": (((0, 1), None), ((1, 2), 2)),
             "stages": (gate, new), "backward_stages": (gate_back, new_back)}  # fmt: skip
    if declare:
        attrs["gate_activations"] = (("f", "forget", 0, "sigmoid"),
                                     ("n", "candidate", 1, candidate))  # fmt: skip
    return type("MGU", (Cell,), attrs)()


# ----------------------------------------------------------------- modules of one's own
# Subclasses whose forward computes otherwise than their base's: what an exporter must
# refuse, since it writes the base's computation from the parameters.
class Residual(Recurrent):
    """A layer of one's own: the recurrent output plus its input."""

    def forward(self, x, **options):
        f = super().forward(x, **options)
        return Forward(f.output + x, f.state, f.cache)


class TanhLinear(Linear):
    def forward(self, x, **options):
        f = super().forward(x, **options)
        return Forward(np.tanh(f.output), None, f.cache)


class Softmaxed(Sequential):
    def forward(self, x, **options):
        f = super().forward(x, **options)
        e = np.exp(f.output - f.output.max(axis=-1, keepdims=True))
        return Forward(e / e.sum(axis=-1, keepdims=True), f.state, f.cache)


class RefusingStdout(io.TextIOBase):
    """A standard output every write of which fails with `error`: a reader gone (`| head -c
    10`: EPIPE) or a full disk (`> /dev/full`: ENOSPC). Its `buffer` is itself, for code
    that writes bytes there."""

    def __init__(self, error: OSError):
        self.error = error
        self.buffer = self

    def isatty(self) -> bool:
        return False

    def writable(self) -> bool:
        return True

    def write(self, data):  # type: ignore[override]  # (text or bytes: both refused)
        raise self.error

    def flush(self) -> None:
        pass
