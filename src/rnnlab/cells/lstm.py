"""The LSTM cell (Hochreiter & Schmidhuber 1997, with the forget gate of Gers et al. 2000).

Gate order and weight layout are PyTorch's (i, f, g, o stacked in the rows of W_ih and W_hh),
so a PyTorch state_dict loads unchanged. One step:

    z   = (W_ih x_t + b_ih) + (W_hh h_{t-1} + b_hh)   (4H: the blocks z_i, z_f, z_g, z_o)
    i   = σ(z_i)      input gate
    f   = σ(z_f)      forget gate
    g   = tanh(z_g)   candidate
    o   = σ(z_o)      output gate
    c_t = f ⊙ c_{t-1} + i ⊙ g
    h_t = o ⊙ tanh(c_t)

and back, in the order of the lines of `backward` (tanh(c_t) recomputed from c_t: one tanh
an element, where keeping it would cost a (T, B, H) array):

    dc   = dc_t + dh_t ⊙ o ⊙ (1 − tanh²(c_t))
    dz_i = dc ⊙ g ⊙ i(1 − i);   dz_f = dc ⊙ c_{t-1} ⊙ f(1 − f)
    dz_g = dc ⊙ i ⊙ (1 − g²);   dz_o = dh_t ⊙ tanh(c_t) ⊙ o(1 − o)
    dc_{t-1} = dc ⊙ f;          dh_{t-1} = dz W_hh   (the library's product)

The cell state is updated only by ⊙ and +, which is why its gradient need not vanish with
the lag: dc_{t-1} = dc_t ⊙ f.
"""

from __future__ import annotations

import functools

from rnnlab import _checks
from rnnlab.cells.base import Cell, check_init
from rnnlab.cells.elman import orthogonal_blocks
from rnnlab.cells.pointwise import blocks, one, sigmoid, tanh, units, zero


@functools.cache
def _steps():
    def forward(xa, b_ih, ha, b_hh, q, h_prev, c_prev, h, c, tape):
        for j in units(tape):  # z, written where the gates go (xa may be there already)
            tape[j] = xa[j] + b_ih[j] + ha[j] + b_hh[j]
        i, f, g, o = blocks(tape, 4)
        for j in units(i):
            i[j] = sigmoid(i[j])
        for j in units(f):
            f[j] = sigmoid(f[j])
        for j in units(g):
            g[j] = tanh(g[j])
        for j in units(o):
            o[j] = sigmoid(o[j])
        for j in units(c):
            c[j] = f[j] * c_prev[j] + i[j] * g[j]
        for j in units(h):
            h[j] = o[j] * tanh(c[j])

    def backward(dh, dc, dsrc, q, h_prev, c_prev, h, c, tape, da, da_h, dq):
        i, f, g, o = blocks(tape, 4)
        dz_i, dz_f, dz_g, dz_o = blocks(da, 4)  # may be i, f, g, o themselves
        for j in units(c):
            i_, f_, g_, o_ = i[j], f[j], g[j], o[j]
            tc = tanh(c[j])
            d_c = dc[j] + dh[j] * o_ * (one(tc) - tc * tc)
            dz_o[j] = (dh[j] * tc) * (o_ * (one(tc) - o_))
            dz_i[j] = (d_c * g_) * (i_ * (one(tc) - i_))
            dz_f[j] = (d_c * c_prev[j]) * (f_ * (one(tc) - f_))
            dz_g[j] = (d_c * i_) * (one(tc) - g_ * g_)
            dc[j] = d_c * f_
            dh[j] = zero(tc)

    return (forward,), (backward,)


class LSTMCell(Cell):
    """The LSTM of PyTorch's nn.LSTM; `forget_bias=b` starts the forget gate's bias at b
    (b_ih's f block; b_hh's at 0), as Jozefowicz et al. (2015) recommend (b = 1)."""

    gates = 4
    has_c = True
    tape = 4  # i, f, g, o
    products = (((0, 4), None),)
    in_place = True

    def __init__(self, *, forget_bias: float | None = None, init: str = "uniform"):
        if forget_bias is not None:
            forget_bias = _checks.finite_float(forget_bias, "forget_bias")
        self.forget_bias = forget_bias
        self.init_name = check_init(init, ("uniform", "orthogonal"), "an LSTM or GRU")
        self.stages, self.backward_stages = _steps()
        super().__init__()

    name = "lstm"

    def init(self, params, H, rng):
        if self.init_name == "orthogonal":
            orthogonal_blocks(params["weight_hh"], H, rng)
        if self.forget_bias is not None:
            params["bias_ih"][H : 2 * H] = self.forget_bias
            params["bias_hh"][H : 2 * H] = 0.0
