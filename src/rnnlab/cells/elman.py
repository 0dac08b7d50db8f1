"""The Elman cell: the plain recurrent unit of the notes, with tanh or ReLU units.

One step, in PyTorch's naming (the notes write U = W_ih, W = W_hh, b = b_ih + b_hh):

    a_t = W_ih x_t + b_ih + W_hh h_{t-1} + b_hh
    h_t = φ(a_t),   φ ∈ {tanh, relu}

The recurrence (rnnlab.recurrence) hoists W_ih x_t + b_ih out of the time loop and hands the
cell its row `xa`; the cell owns only the pointwise math and the one recurrent product.
"""

from __future__ import annotations

import numpy as np


class ElmanCell:
    """h_t = φ(xa_t + h_{t-1} W_hhᵀ + b_hh) with φ = tanh or relu.

    With `nonlinearity="relu"` and the `irnn` initialisation (identity W_hh, zero biases,
    small input weights; Le, Jaitly & Hinton 2015) this is the IRNN.
    """

    gates = 1
    has_c = False
    shares_preact_grad = True  # ∂L/∂(W_ih x) and ∂L/∂(W_hh h) are the same vector da
    preact_in_output = True  # h_t = φ(a_t) elementwise: a_t can be written where h_t goes

    def __init__(self, nonlinearity: str = "tanh"):
        self.nonlinearity = nonlinearity
        self.kind = nonlinearity  # the name of its compiled loop in rnnlab.fast

    def new_tape(self, T: int, B: int, H: int, dtype: np.dtype) -> dict[str, np.ndarray]:
        return {}  # h_t itself is all the backward needs: tanh' = 1 - h², relu' = [h > 0]

    def forward_step(self, t, xa, h_prev, c_prev, W_hhT, b_hh, h, c, tape):
        a = xa + h_prev @ W_hhT
        a += b_hh
        if self.nonlinearity == "tanh":
            np.tanh(a, out=h)
        else:
            np.maximum(a, 0.0, out=h)

    def backward_step(self, t, dh, dc, h_prev, c_prev, h, c, W_hh, tape, da_x, da_h):
        """da = dh ⊙ φ'(a);  dh_prev = da W_hh.  (da_h is da_x: the gradients coincide.)"""
        if self.nonlinearity == "tanh":
            np.multiply(dh, 1.0 - h * h, out=da_x)
        else:
            np.multiply(dh, h > 0.0, out=da_x)
        return da_x @ W_hh, None
