"""The LSTM cell (Hochreiter & Schmidhuber 1997, with the forget gate of Gers et al. 2000).

Gate order and weight layout are PyTorch's (i, f, g, o stacked in the rows of W_ih and W_hh),
so a PyTorch state_dict loads unchanged. One step:

    z   = W_ih x_t + b_ih + W_hh h_{t-1} + b_hh        (4H: the blocks z_i, z_f, z_g, z_o)
    i   = σ(z_i)      input gate
    f   = σ(z_f)      forget gate
    g   = tanh(z_g)   candidate
    o   = σ(z_o)      output gate
    c_t = f ⊙ c_{t-1} + i ⊙ g
    h_t = o ⊙ tanh(c_t)

The cell state c is updated only by ⊙ and +, which is why its gradient does not have to
vanish with the lag: dc_{t-1} = dc_t ⊙ f.
"""

from __future__ import annotations

import numpy as np

from rnnlab import parallel
from rnnlab.ops import sigmoid


class LSTMCell:
    kind = "lstm"  # the name of its compiled loop in rnnlab.fast
    gates = 4
    has_c = True
    shares_preact_grad = True  # dz feeds both W_ih and W_hh
    preact_tape = "ifgo"  # the compiled loops keep XA, then dz, in the gates' place

    def new_tape(self, T: int, B: int, H: int, dtype: np.dtype) -> dict[str, np.ndarray]:
        # gate activations i, f, g, o; tanh(c_t) is recomputed in BPTT from c_t (one tanh an
        # element, ~1 % of a step) rather than kept: a (T, B, H) array less
        return {"ifgo": parallel.empty((T, B, 4 * H), dtype)}

    def forward_step(self, t, xa, h_prev, c_prev, W_hhT, b_hh, h, c, tape):
        H = h.shape[1]
        z = xa + h_prev @ W_hhT
        z += b_hh
        ifgo = tape["ifgo"][t]
        sigmoid(z[:, : 2 * H], out=ifgo[:, : 2 * H])  # i, f
        np.tanh(z[:, 2 * H : 3 * H], out=ifgo[:, 2 * H : 3 * H])  # g
        sigmoid(z[:, 3 * H :], out=ifgo[:, 3 * H :])  # o
        i, f, g, o = ifgo[:, :H], ifgo[:, H : 2 * H], ifgo[:, 2 * H : 3 * H], ifgo[:, 3 * H :]
        np.multiply(f, c_prev, out=c)
        c += i * g
        np.multiply(o, np.tanh(c), out=h)

    def backward_step(self, t, dh, dc, h_prev, c_prev, h, c, W_hh, tape, da_x, da_h):
        """In the order of the lines:

        do   = dh ⊙ tanh(c_t)
        dc   = dc + dh ⊙ o ⊙ (1 − tanh²(c_t))
        di   = dc ⊙ g;   df = dc ⊙ c_{t-1};   dg = dc ⊙ i
        dz_i = di ⊙ i(1−i);  dz_f = df ⊙ f(1−f);  dz_g = dg ⊙ (1−g²);  dz_o = do ⊙ o(1−o)
        dc_{t-1} = dc ⊙ f;   dh_{t-1} = dz W_hh
        """
        H = dh.shape[1]
        ifgo = tape["ifgo"][t]
        tanh_c = np.tanh(c)
        i, f, g, o = ifgo[:, :H], ifgo[:, H : 2 * H], ifgo[:, 2 * H : 3 * H], ifgo[:, 3 * H :]
        do = dh * tanh_c
        dc = dc + dh * o * (1.0 - tanh_c * tanh_c)
        di = dc * g
        df = dc * c_prev
        dg = dc * i
        np.multiply(di, i * (1.0 - i), out=da_x[:, :H])
        np.multiply(df, f * (1.0 - f), out=da_x[:, H : 2 * H])
        np.multiply(dg, 1.0 - g * g, out=da_x[:, 2 * H : 3 * H])
        np.multiply(do, o * (1.0 - o), out=da_x[:, 3 * H :])
        dc_prev = dc * f
        return da_x @ W_hh, dc_prev
