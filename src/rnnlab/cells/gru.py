"""The GRU cell (Cho et al. 2014) in its two published forms.

Gate order and layout are PyTorch's: r (reset, the notes' "relevance"), z (update), n
(candidate) stacked in the rows of W_ih and W_hh. Both forms share

    r   = σ((W_ir x_t + b_ir) + (W_hr h_{t-1} + b_hr))
    z   = σ((W_iz x_t + b_iz) + (W_hz h_{t-1} + b_hz))
    h_t = (1 − z) ⊙ n + z ⊙ h_{t-1}      computed as (h_{t-1} − n) ⊙ z + n

and differ in where the reset gate acts on the candidate:

    reset_after=True  (PyTorch, cuDNN, Keras' default):
        n = tanh((W_in x_t + b_in) + r ⊙ (W_hn h_{t-1} + b_hn))
    reset_after=False (the original paper):
        n = tanh((W_hn (r ⊙ h_{t-1}) + b_hn) + (W_in x_t + b_in))

The notes' GRU (Ng's: c_t = Γ_u ⊙ c̃ + (1 − Γ_u) ⊙ c_{t-1}, c̃ = tanh(W_c[Γ_r ⊙ c_{t-1}, x_t]
+ b_c)) is the original form with the update gate the other way round: Γ_u = 1 − z, so its
W_u and b_u are the z rows and biases negated (docs/notes.md; tests/test_notes_review.py).

Back, for both (a_* are pre-activations):

    da_z = dh ⊙ (h_{t-1} − n) ⊙ z(1 − z);   da_n = dh ⊙ (1 − z) ⊙ (1 − n²)
    reset_after:  W_hh sees da_n ⊙ r in the n block (da_h);  da_r = da_n ⊙ hn ⊙ r(1 − r)
                  with hn = W_hn h_{t-1} + b_hn
    original:     du = da_n W_hn (u = r ⊙ h_{t-1});  da_r = du ⊙ h_{t-1} ⊙ r(1 − r)
                  dh_{t-1} gets du ⊙ r besides
    dh_{t-1} = dh ⊙ z + (what W_hh sees) W_hh

In the original form the candidate's product needs r first, so the step has two products:
h_{t-1} by the r and z rows of W_hh, then r ⊙ h_{t-1} (kept on the tape) by the n rows,
whose weight gradient pairs with r ⊙ h_{t-1} instead of h_{t-1}.
"""

from __future__ import annotations

import functools

import numpy as np

from rnnlab.cells.base import Cell, Row, Steps, check_init
from rnnlab.cells.elman import orthogonal_blocks
from rnnlab.cells.pointwise import blocks, one, sigmoid, tanh, units


@functools.cache
def _reset_after_steps() -> Steps:
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
        # The sums go through ha (the product's own buffer): xa may lie where r, z, n go,
        # and a loop that read xa and wrote the gates would run scalar (see pointwise).
        H = h.shape[-1]
        r, z, n, hn = blocks(tape, 4, H)
        ha_rz, ha_n = ha[..., : 2 * H], ha[..., 2 * H : 3 * H]
        xa_n, b_in, b_hn = (
            xa[..., 2 * H : 3 * H],
            b_ih[..., 2 * H : 3 * H],
            b_hh[..., 2 * H : 3 * H],
        )
        xa_rz, b_irz, b_hrz = xa[..., : 2 * H], b_ih[..., : 2 * H], b_hh[..., : 2 * H]
        for j in units(ha_rz):
            ha_rz[j] = (xa_rz[j] + b_irz[j]) + (ha_rz[j] + b_hrz[j])
        rz = tape[..., : 2 * H]
        for j in units(rz):
            rz[j] = sigmoid(ha_rz[j])
        for j in units(hn):
            hn[j] = ha_n[j] + b_hn[j]
        for j in units(ha_n):
            ha_n[j] = (xa_n[j] + b_in[j]) + r[j] * hn[j]
        for j in units(n):
            n[j] = tanh(ha_n[j])
        for j in units(h):
            h[j] = (h_prev[j] - n[j]) * z[j] + n[j]

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
        # da holds r, z, n and da_h holds hn on entry (Cell.in_place)
        H = h.shape[-1]
        r, z, n = blocks(da, 3, H)
        hn = da_h
        da_r, da_z, da_n = r, z, n
        for j in units(n):  # every read before the first write (pointwise's rules)
            r_, z_, n_, hn_, d = r[j], z[j], n[j], hn[j], dh[j]
            dn = (d * (one(d) - z_)) * (one(d) - n_ * n_)
            dz = (d * (h_prev[j] - n_)) * (z_ * (one(d) - z_))
            dr = (dn * hn_) * (r_ * (one(d) - r_))
            dh_prev = d * z_
            da_z[j] = dz
            da_n[j] = dn
            da_h[j] = dn * r_
            da_r[j] = dr
            dh[j] = dh_prev

    return (forward,), (backward,)


@functools.cache
def _original_steps() -> Steps:
    def gates(
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
        H = h.shape[-1]
        r, z, n, u = blocks(tape, 4, H)
        xa_rz, b_irz, b_hrz = xa[..., : 2 * H], b_ih[..., : 2 * H], b_hh[..., : 2 * H]
        for j in units(ha):  # through ha: xa may lie where r and z go
            ha[j] = (xa_rz[j] + b_irz[j]) + (ha[j] + b_hrz[j])
        rz = tape[..., : 2 * H]
        for j in units(rz):
            rz[j] = sigmoid(ha[j])
        for j in units(u):
            u[j] = r[j] * h_prev[j]

    def candidate(
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
        H = h.shape[-1]
        r, z, n, u = blocks(tape, 4, H)
        xa_n, b_in, b_hn = (
            xa[..., 2 * H : 3 * H],
            b_ih[..., 2 * H : 3 * H],
            b_hh[..., 2 * H : 3 * H],
        )
        for j in units(ha):
            ha[j] = (ha[j] + b_hn[j]) + (xa_n[j] + b_in[j])
        for j in units(n):
            n[j] = tanh(ha[j])
        for j in units(h):
            h[j] = (h_prev[j] - n[j]) * z[j] + n[j]

    def candidate_back(
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
        H = h.shape[-1]
        _, z, n = blocks(da, 3, H)  # the gates on entry (Cell.in_place)
        da_z, da_n = z, n
        for j in units(n):  # every read before the first write (pointwise's rules)
            z_, n_, d = z[j], n[j], dh[j]
            dz = (d * (h_prev[j] - n_)) * (z_ * (one(d) - z_))
            dn = (d * (one(d) - z_)) * (one(d) - n_ * n_)
            dh_prev = d * z_
            da_z[j] = dz
            da_n[j] = dn
            dh[j] = dh_prev

    def gates_back(
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
        H = h.shape[-1]
        r = da[..., :H]  # r on entry (Cell.in_place), then da_r
        da_r = r
        for j in units(r):  # every read before the first write (pointwise's rules)
            r_, du = r[j], dsrc[j]
            dr = (du * h_prev[j]) * (r_ * (one(du) - r_))
            dh_prev = dh[j] + du * r_
            da_r[j] = dr
            dh[j] = dh_prev

    return (gates, candidate), (gates_back, candidate_back)


class GRUCell(Cell):
    """The GRU; `reset_after=True` is PyTorch's form, `reset_after=False` the original's."""

    gates = 3
    tape = 4  # r, z, n and hn = W_hn h_{t-1} + b_hn (reset-after) or u = r ⊙ h_{t-1}
    in_place = True
    # both forms (block 3, hn or u, is a product's operand, no activation)
    gate_activations = (("r", "reset", 0, "sigmoid"), ("z", "update", 1, "sigmoid"),
                        ("n", "candidate", 2, "tanh"))  # fmt: skip

    def __init__(self, *, reset_after: bool = True, init: str = "uniform"):
        from rnnlab import _checks

        self.reset_after = _checks.boolean(reset_after, "reset_after")
        self.name = "gru" if self.reset_after else "gru-orig"
        self.init_name = check_init(init, ("uniform", "orthogonal"), "an LSTM or GRU")
        if self.reset_after:
            self.products = (((0, 3), None),)
            self.hh_own = (2,)  # W_hh's n block sees da_n ⊙ r
            self.stages, self.backward_stages = _reset_after_steps()
        else:
            self.products = (((0, 2), None), ((2, 3), 3))  # then u = tape block 3 by W_hn
            self.hh_own = ()
            self.stages, self.backward_stages = _original_steps()
        super().__init__()

    def init(self, params: dict[str, np.ndarray], H: int, rng: np.random.Generator) -> None:
        if self.init_name == "orthogonal":
            orthogonal_blocks(params["weight_hh"], H, rng)
