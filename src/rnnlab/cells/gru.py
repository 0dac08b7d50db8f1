"""The GRU cell (Cho et al. 2014) in its two published forms.

Gate order and layout are PyTorch's: r (reset, the notes' "relevance"), z (update), n
(candidate) stacked in the rows of W_ih and W_hh. Both forms share

    r   = σ(W_ir x_t + b_ir + W_hr h_{t-1} + b_hr)
    z   = σ(W_iz x_t + b_iz + W_hz h_{t-1} + b_hz)
    h_t = (1 − z) ⊙ n + z ⊙ h_{t-1}

and differ in where the reset gate acts on the candidate:

    reset_after=True  (PyTorch, cuDNN, Keras' default):
        n = tanh(W_in x_t + b_in + r ⊙ (W_hn h_{t-1} + b_hn))
    reset_after=False (the original paper):
        n = tanh(W_in x_t + b_in + W_hn (r ⊙ h_{t-1}) + b_hn)

In the original form the candidate's recurrent product needs r first, so this cell computes
that product itself and its W_hn gradient pairs with r ⊙ h_{t-1} instead of h_{t-1}.
"""

from __future__ import annotations

import numpy as np

from rnnlab import parallel
from rnnlab.ops import sigmoid


class GRUCell:
    gates = 3
    has_c = False

    def __init__(self, reset_after: bool = True):
        self.reset_after = reset_after
        self.kind = "gru" if reset_after else "gru_orig"  # its compiled loop in rnnlab.fast
        # Reset-after: da feeds W_ih and W_hh alike except the n block (⊙ r on the W_hh side),
        # the only block kept apart (hh_grad_width). Original: W_hh sees da itself, its n rows
        # paired with r ⊙ h_{t-1} (weight_grad_blocks).
        self.shares_preact_grad = not reset_after
        self.preact_tape = "rzn"  # the compiled loops keep XA, then da, in the gates' place
        # ... and, reset-after, that n block in the place of W_hn h + b_hn, read just before
        self.hh_grad_tape = "hn" if reset_after else None

    def hh_grad_width(self, H: int) -> int:
        """Columns of da_h when it is not da_x: the n block of the W_hh side (reset_after)."""
        return H

    def new_tape(self, T: int, B: int, H: int, dtype: np.dtype) -> dict[str, np.ndarray]:
        # "rzn": gate activations. "hn": W_hn h + b_hn (reset_after) or r ⊙ h_{t-1} (original).
        return {"rzn": parallel.empty((T, B, 3 * H), dtype), "hn": parallel.empty((T, B, H), dtype)}

    def forward_step(self, t, xa, h_prev, c_prev, W_hhT, b_hh, h, c, tape):
        H = h.shape[1]
        rzn = tape["rzn"][t]
        hn = tape["hn"][t]
        r, z, n = rzn[:, :H], rzn[:, H : 2 * H], rzn[:, 2 * H :]
        if self.reset_after:
            ha = h_prev @ W_hhT
            ha += b_hh
            sigmoid(xa[:, : 2 * H] + ha[:, : 2 * H], out=rzn[:, : 2 * H])
            hn[...] = ha[:, 2 * H :]
            np.tanh(xa[:, 2 * H :] + r * hn, out=n)
        else:
            ha = h_prev @ W_hhT[:, : 2 * H]
            ha += b_hh[: 2 * H]
            sigmoid(xa[:, : 2 * H] + ha, out=rzn[:, : 2 * H])
            np.multiply(r, h_prev, out=hn)
            a_n = hn @ W_hhT[:, 2 * H :]
            a_n += b_hh[2 * H :]
            a_n += xa[:, 2 * H :]
            np.tanh(a_n, out=n)
        # h = (1 − z) ⊙ n + z ⊙ h_prev, written as n + z ⊙ (h_prev − n)
        np.subtract(h_prev, n, out=h)
        h *= z
        h += n

    def backward_step(self, t, dh, dc, h_prev, c_prev, h, c, W_hh, tape, da_x, da_h):
        """In the order of the lines (a_* are pre-activations):

        dn   = dh ⊙ (1 − z);   dz = dh ⊙ (h_{t-1} − n)
        da_n = dn ⊙ (1 − n²);  da_z = dz ⊙ z(1 − z)
        reset_after:  dr = da_n ⊙ (W_hn h_{t-1} + b_hn);   the W_hh side of the n block is da_n ⊙ r
        original:     d(r⊙h) = da_n W_hn;  dr = d(r⊙h) ⊙ h_{t-1}
        da_r = dr ⊙ r(1 − r)
        dh_{t-1} = dh ⊙ z + (W_hh side) W_hh  [+ d(r⊙h) ⊙ r in the original form]
        """
        H = dh.shape[1]
        rzn = tape["rzn"][t]
        hn = tape["hn"][t]
        r, z, n = rzn[:, :H], rzn[:, H : 2 * H], rzn[:, 2 * H :]
        dn = dh * (1.0 - z)
        dz = dh * (h_prev - n)
        da_n = da_x[:, 2 * H :]
        np.multiply(dn, 1.0 - n * n, out=da_n)
        np.multiply(dz, z * (1.0 - z), out=da_x[:, H : 2 * H])
        if self.reset_after:
            dr = da_n * hn
            np.multiply(dr, r * (1.0 - r), out=da_x[:, :H])
            np.multiply(da_n, r, out=da_h)  # the W_hh side's n block; r, z are da_x's
            dh_prev = np.concatenate([da_x[:, : 2 * H], da_h], axis=1) @ W_hh
            dh_prev += dh * z
        else:
            drh = da_n @ W_hh[2 * H :]
            dr = drh * h_prev
            np.multiply(dr, r * (1.0 - r), out=da_x[:, :H])
            dh_prev = da_x[:, : 2 * H] @ W_hh[: 2 * H]
            dh_prev += dh * z
            dh_prev += drh * r
        return dh_prev, None

    def weight_grad_blocks(self, hs_prev, tape, dA_x, dA_h):
        """The W_hh gradient as (row slice, pre-activation gradients, inputs) blocks, each
        over all T·B rows: dW_hh[rows] = gradsᵀ inputs, db_hh[rows] = Σ grads."""
        H = hs_prev.shape[-1]
        rz, n = slice(0, 2 * H), slice(2 * H, 3 * H)
        if self.reset_after:
            return [(rz, dA_x[:, rz], hs_prev), (n, dA_h, hs_prev)]
        return [(rz, dA_x[:, rz], hs_prev), (n, dA_x[:, n], tape["hn"].reshape(hs_prev.shape))]
