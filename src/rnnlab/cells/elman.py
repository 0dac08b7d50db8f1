"""The Elman cell: the plain recurrent unit of the notes, with tanh or ReLU units.

One step, in PyTorch's naming (the notes write U = W_ih, W = W_hh, b = b_ih + b_hh):

    a_t = (W_ih x_t + b_ih) + (W_hh h_{t-1} + b_hh)
    h_t = φ(a_t),   φ ∈ {tanh, relu}

and back:

    da_t = dh_t ⊙ φ'(a_t),   φ' = 1 − h_t² (tanh) or [h_t > 0] (relu), read off h_t
    dh_{t-1} = da_t W_hh     (the library's product)

With ReLU units and the identity initialisation (W_hh = I, zero biases, small input
weights; Le, Jaitly & Hinton 2015) it is the IRNN.
"""

from __future__ import annotations

import functools

import numpy as np

from rnnlab import _checks
from rnnlab.cells.base import Cell, Row, Steps
from rnnlab.cells.pointwise import one, positive, relu, tanh, units, zero


@functools.cache
def _steps(use_relu: bool) -> Steps:
    def forward(
        xa: Row,
        b_ih: Row,
        ha: Row,
        b_hh: Row,
        q: Row,
        h_prev: Row,
        c_prev: Row,
        h: Row,
        c: Row,
        tape: Row,
    ) -> None:
        for j in units(ha):  # a, through ha: xa may lie where h goes
            ha[j] = xa[j] + b_ih[j] + ha[j] + b_hh[j]
        if use_relu:
            for j in units(h):
                h[j] = relu(ha[j])
        else:
            for j in units(h):
                h[j] = tanh(ha[j])

    def backward(
        dh: Row,
        dc: Row,
        dsrc: Row,
        q: Row,
        h_prev: Row,
        c_prev: Row,
        h: Row,
        c: Row,
        tape: Row,
        da: Row,
        da_h: Row,
        dq: Row,
    ) -> None:
        if use_relu:
            for j in units(h):
                da[j] = dh[j] * positive(h[j])
        else:
            for j in units(h):
                da[j] = dh[j] * (one(h[j]) - h[j] * h[j])
        for j in units(dh):
            dh[j] = zero(dh[j])

    return (forward,), (backward,)


class ElmanCell(Cell):
    """h_t = φ(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh), φ = tanh or relu.

    `init="irnn"` (relu units only) starts from the identity: the IRNN."""

    gates = 1
    products = (((0, 1), None),)
    in_place = True  # h_t[j] is written after xa[j] is read: the projection goes into hs
    reads_h_prev = False

    def __init__(self, nonlinearity: str = "tanh", *, init: str = "uniform"):
        self.nonlinearity = _checks.choice(nonlinearity, "nonlinearity", ("tanh", "relu"))
        self.init_name = _checks.choice(init, "init", ("uniform", "irnn", "orthogonal"))
        if self.init_name == "irnn" and self.nonlinearity != "relu":
            _checks.fail(
                "init",
                "'uniform' or 'orthogonal' for tanh units",
                "'irnn'",
                "The IRNN initialisation is for nonlinearity='relu'.",
            )
        if self.init_name == "irnn":
            self.name = "irnn"
        else:
            self.name = "rnn" if self.nonlinearity == "tanh" else "relu"
        self.stages, self.backward_stages = _steps(self.nonlinearity == "relu")
        # no tape: the units' activation is h_t itself (relu's has no top to saturate at)
        self.gate_activations = (("h", "hidden", "h", self.nonlinearity),)
        super().__init__()

    def init(self, params: dict[str, np.ndarray], H: int, rng: np.random.Generator) -> None:
        if self.init_name == "irnn":  # Le, Jaitly & Hinton 2015
            W_ih = params["weight_ih"]
            W_ih[...] = rng.standard_normal(W_ih.shape) * 0.001
            params["weight_hh"][...] = np.eye(H)
            params["bias_ih"][...] = 0.0
            params["bias_hh"][...] = 0.0
        elif self.init_name == "orthogonal":
            orthogonal_blocks(params["weight_hh"], H, rng)


def orthogonal_blocks(W_hh: np.ndarray, H: int, rng: np.random.Generator) -> None:
    """Each H × P block of W_hh's rows a random orthogonal matrix (Saxe et al. 2014): P = H,
    or a projection's P < H, whose blocks then have orthonormal columns."""
    P = W_hh.shape[1]
    for g in range(W_hh.shape[0] // H):
        q, r = np.linalg.qr(rng.standard_normal((H, P)))
        W_hh[g * H : (g + 1) * H] = q * np.sign(np.diag(r))
