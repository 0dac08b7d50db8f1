"""A cell of your own: the minimal gated unit (Zhou et al. 2016), in about forty lines.

    f_t = σ(W_f x_t + b_if + U_f h_{t-1} + b_hf)
    n_t = tanh(W_n x_t + b_in + U_n (f_t ⊙ h_{t-1}) + b_hn)
    h_t = h_{t-1} + f_t ⊙ (n_t − h_{t-1})

Two products per step (the second on f ⊙ h_{t-1}, kept on the tape), two stages each way.
Recurrent gives it depth, directions, masks, checkpointing, gradcheck and the compiled loop;
declaring where its gates lie on the tape gives it rnnlab.diagnostics.gate_saturation:

    python examples/custom_cell.py
"""

import numpy as np

import rnnlab
import rnnlab.diagnostics
import rnnlab.losses
import rnnlab.optim
from rnnlab.cells import Cell
from rnnlab.cells.pointwise import one, sigmoid, tanh, units


def gate(xa, b_ih, ha, b_hh, q, h_prev, c_prev, h, c, tape):
    H = h.shape[-1]  # every array a loop indexes is cut to the loop's H units
    for j in units(h):
        f = sigmoid(xa[..., :H][j] + b_ih[..., :H][j] + ha[j] + b_hh[..., :H][j])
        tape[..., :H][j] = f  # tape: f, n, u = f ⊙ h_{t-1}
        tape[..., 2 * H :][j] = f * h_prev[j]


def candidate(xa, b_ih, ha, b_hh, q, h_prev, c_prev, h, c, tape):
    H = h.shape[-1]
    f, n = tape[..., :H], tape[..., H : 2 * H]
    for j in units(h):
        n[j] = tanh(xa[..., H:][j] + b_ih[..., H:][j] + ha[j] + b_hh[..., H:][j])
        h[j] = h_prev[j] + f[j] * (n[j] - h_prev[j])


def candidate_back(dh, dc, dsrc, q, h_prev, c_prev, h, c, tape, da, da_h, dq):
    H = h.shape[-1]
    for j in units(h):
        f, n, d = tape[..., :H][j], tape[..., H : 2 * H][j], dh[j]
        da[..., H:][j] = (d * f) * (one(d) - n * n)  # ∂L/∂(n's pre-activation)
        da[..., :H][j] = d * (n - h_prev[j])  # ∂L/∂f so far; the gate's stage adds the rest
        dh[j] = d * (one(d) - f)


def gate_back(dh, dc, dsrc, q, h_prev, c_prev, h, c, tape, da, da_h, dq):
    H = h.shape[-1]
    for j in units(h):
        f, du = tape[..., :H][j], dsrc[j]  # dsrc: ∂L/∂(f ⊙ h_{t-1}) from U_n's product
        da[..., :H][j] = (da[..., :H][j] + du * h_prev[j]) * (f * (one(f) - f))
        dh[j] = dh[j] + du * f


class MGUCell(Cell):
    name = "mgu"
    gates = 2  # f, n
    tape = 3  # f, n, f ⊙ h_{t-1}
    products = (((0, 1), None), ((1, 2), 2))  # U_f h_{t-1}, then U_n (tape block 2)
    stages = (gate, candidate)
    backward_stages = (gate_back, candidate_back)
    gate_activations = (("f", "forget", 0, "sigmoid"), ("n", "candidate", 1, "tanh"))


if __name__ == "__main__":
    rng = np.random.default_rng(0)
    layer = rnnlab.Recurrent(MGUCell(), 3, 8, num_layers=2, bidirectional=True,
                             dtype=np.float64, rng=rng)  # fmt: skip
    x, lengths = rng.standard_normal((4, 12, 3)), np.array([12, 7, 3, 10])
    report = rnnlab.gradcheck(layer, x, lengths=lengths)
    print(f"gradient check, float64: worst relative error {report.max_error:.1e}")

    # learn to output the running mean of the input's first feature, compiled when numba is
    model = rnnlab.Sequential(rnnlab.Recurrent(MGUCell(), 3, 32, rng=rng), rnnlab.Linear(32, 1))
    opt = rnnlab.optim.Adam(lr=1e-2)
    state = opt.init(model.params)
    for step in range(301):
        xs = rng.standard_normal((32, 20, 3)).astype(np.float32)
        target = np.cumsum(xs[:, :, :1], axis=1) / np.arange(1, 21)[None, :, None]
        f = model.forward(xs)
        loss, d = rnnlab.losses.mean_squared_error(f.output, target.astype(np.float32))
        opt.update(model.params, model.backward(f, d, input_grad=False).params, state)
        if step % 100 == 0:
            print(f"step {step:3d}  mean squared error {loss:.4f}")
    print("gate saturation:", rnnlab.diagnostics.gate_saturation(model.modules[0], xs).verdict())
