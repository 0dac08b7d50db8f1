"""The LSTM cell (Hochreiter & Schmidhuber 1997, with the forget gate of Gers et al. 2000),
and the variants users ask for, each an option of the one cell.

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

    dz_o = dh_t ⊙ tanh(c_t) ⊙ o(1 − o)
    dc   = dc_t + dh_t ⊙ o ⊙ (1 − tanh²(c_t))
    dz_i = dc ⊙ g ⊙ i(1 − i);   dz_f = dc ⊙ c_{t-1} ⊙ f(1 − f);   dz_g = dc ⊙ i ⊙ (1 − g²)
    dc_{t-1} = dc ⊙ f;          dh_{t-1} = dz W_hh   (the library's product)

The cell state is updated only by ⊙ and +, which is why its gradient need not vanish with
the lag: dc_{t-1} = dc_t ⊙ f.

Variants (options of LSTMCell, any combination):

- `peephole=True` (Gers & Schmidhuber 2000): the gates also see the cell state through
  diagonal weights, i = σ(z_i + w_ci ⊙ c_{t-1}), f = σ(z_f + w_cf ⊙ c_{t-1}),
  o = σ(z_o + w_co ⊙ c_t); parameters `weight_ci`, `weight_cf`, `weight_co` (H,). Back:
  dc gains dz_o ⊙ w_co, dc_{t-1} gains dz_i ⊙ w_ci + dz_f ⊙ w_cf, dw_c· = dz_· ⊙ c.
- `coupled=True` (CIFG; Greff et al. 2017): no input gate, i = 1 − f; the weights then
  stack three blocks, f, g, o. Back: dz_f = dc ⊙ (c_{t-1} − g) ⊙ f(1 − f).
- `cell_clip=x` (as Keras/TF's LSTMCell): c_t = clip(f ⊙ c_{t-1} + i ⊙ g, −x, x), the
  notes' "clip in the cell"; no gradient flows through a clipped unit.
- `layer_norm=True` (Ba, Kiros & Hinton 2016): the input and recurrent projections and c_t
  layer-normalised, with gains and biases (`_layer_norm_steps`), with or without the
  options above.
"""

from __future__ import annotations

import functools

import numpy as np

from rnnlab import _checks
from rnnlab.cells.base import Cell, Row, Steps, check_init
from rnnlab.cells.elman import orthogonal_blocks
from rnnlab.cells.pointwise import (
    blocks,
    clip,
    column,
    inside,
    normalise,
    normalise_back,
    one,
    select,
    sigmoid,
    tanh,
    units,
    zero,
)

LN_EPS = 1e-5  # layer normalisation's ε, as PyTorch's LayerNorm


@functools.cache
def _steps(peephole: bool, coupled: bool, bound: float | None) -> Steps:
    clipping = bound is not None
    G = 3 if coupled else 4

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
        # z goes through ha (the product's own buffer): xa may lie where the gates go, and a
        # loop that read xa and wrote the gates would run scalar (see pointwise)
        H = h.shape[-1]
        for j in units(ha):
            ha[j] = xa[j] + b_ih[j] + ha[j] + b_hh[j]
        if coupled:
            f, g, o = blocks(tape, 3, H)
            z_f, z_g, z_o = blocks(ha, 3, H)
        else:
            i, f, g, o = blocks(tape, 4, H)
            z_i, z_f, z_g, z_o = blocks(ha, 4, H)
            if peephole:
                w_ci = q[..., :H]
                for j in units(i):
                    i[j] = sigmoid(z_i[j] + w_ci[j] * c_prev[j])
            else:
                for j in units(i):
                    i[j] = sigmoid(z_i[j])
        if peephole:
            w_cf = q[..., (G - 3) * H : (G - 2) * H]
            for j in units(f):
                f[j] = sigmoid(z_f[j] + w_cf[j] * c_prev[j])
        else:
            for j in units(f):
                f[j] = sigmoid(z_f[j])
        for j in units(g):
            g[j] = tanh(z_g[j])
        if not peephole:
            for j in units(o):
                o[j] = sigmoid(z_o[j])
        if coupled:
            for j in units(c):
                c[j] = f[j] * c_prev[j] + (one(g[j]) - f[j]) * g[j]
        else:
            for j in units(c):
                c[j] = f[j] * c_prev[j] + i[j] * g[j]
        if clipping:  # bound: a float (mypy doesn't narrow via `clipping`)
            for j in units(c):
                c[j] = clip(c[j], bound)  # type: ignore[arg-type]
        if peephole:
            w_co = q[..., (G - 2) * H : (G - 1) * H]
            for j in units(o):
                o[j] = sigmoid(z_o[j] + w_co[j] * c[j])
        for j in units(h):
            h[j] = o[j] * tanh(c[j])

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
        # da holds the gates on entry (Cell.in_place) and their pre-activations' gradients
        # on return: each loop reads and writes the same places
        H = h.shape[-1]
        if coupled:
            f, g, o = blocks(da, 3, H)
            dz_f, dz_g, dz_o = f, g, o
            for j in units(c):  # every read before the first write (pointwise's rules)
                f_, g_, o_ = f[j], g[j], o[j]
                tc = tanh(c[j])
                d_o = (dh[j] * tc) * (o_ * (one(tc) - o_))
                d_c = dc[j] + dh[j] * o_ * (one(tc) - tc * tc)
                if peephole:
                    d_c = d_c + d_o * q[..., H : 2 * H][j]
                if clipping:  # bound: a float (mypy doesn't narrow via `clipping`)
                    d_c = select(inside(c[j], bound), d_c, zero(tc))  # type: ignore[arg-type]
                d_f = (d_c * (c_prev[j] - g_)) * (f_ * (one(tc) - f_))
                d_g = (d_c * (one(tc) - f_)) * (one(tc) - g_ * g_)
                dc_prev = d_c * f_
                if peephole:
                    dc_prev = dc_prev + d_f * q[..., :H][j]
                    dq[..., :H][j] += d_f * c_prev[j]
                    dq[..., H : 2 * H][j] += d_o * c[j]
                dz_o[j] = d_o
                dz_g[j] = d_g
                dz_f[j] = d_f
                dc[j] = dc_prev
                dh[j] = zero(tc)
        else:
            i, f, g, o = blocks(da, 4, H)
            dz_i, dz_f, dz_g, dz_o = i, f, g, o
            for j in units(c):  # every read before the first write (pointwise's rules)
                i_, f_, g_, o_ = i[j], f[j], g[j], o[j]
                tc = tanh(c[j])
                d_o = (dh[j] * tc) * (o_ * (one(tc) - o_))
                d_c = dc[j] + dh[j] * o_ * (one(tc) - tc * tc)
                if peephole:
                    d_c = d_c + d_o * q[..., 2 * H : 3 * H][j]
                if clipping:  # bound: a float (mypy doesn't narrow via `clipping`)
                    d_c = select(inside(c[j], bound), d_c, zero(tc))  # type: ignore[arg-type]
                d_i = (d_c * g_) * (i_ * (one(tc) - i_))
                d_f = (d_c * c_prev[j]) * (f_ * (one(tc) - f_))
                d_g = (d_c * i_) * (one(tc) - g_ * g_)
                dc_prev = d_c * f_
                if peephole:
                    dc_prev = dc_prev + d_i * q[..., :H][j] + d_f * q[..., H : 2 * H][j]
                    dq[..., :H][j] += d_i * c_prev[j]
                    dq[..., H : 2 * H][j] += d_f * c_prev[j]
                    dq[..., 2 * H : 3 * H][j] += d_o * c[j]
                dz_o[j] = d_o
                dz_i[j] = d_i
                dz_f[j] = d_f
                dz_g[j] = d_g
                dc[j] = dc_prev
                dh[j] = zero(tc)

    return (forward,), (backward,)


@functools.cache
def _layer_norm_steps(peephole: bool, coupled: bool, bound: float | None) -> Steps:
    """The layer-normalised LSTM (Ba, Kiros & Hinton 2016), per step:

        x̂ = LN(x_t W_ihᵀ + b_ih),  ĥ = LN(h_{t-1} W_hhᵀ + b_hh)        (over all G·H)
        z = γ_x ⊙ x̂ + γ_h ⊙ ĥ + β;  i, f, o = σ(·), g = tanh(·) of z's blocks
        c_t = f ⊙ c_{t-1} + i ⊙ g;   h_t = o ⊙ tanh(γ_c ⊙ LN(c_t) + β_c)

    with LN(v) = (v − mean v) / √(var v + ε). The tape keeps the gates, x̂, ĥ, LN(c_t) and the
    three 1/√(var + ε); back, LN's gradient is r ⊙ (dv̂ − mean dv̂ − v̂ ⊙ mean(dv̂ ⊙ v̂)).
    W_hh sees ĥ's gradient, not z's: all its blocks are its own (hh_own). The other variants
    combine as in `_steps`: peepholes on c_{t-1} (i, f) and on the raw c_t (o), i = 1 − f
    when coupled, c_t clipped before it is normalised."""
    clipping = bound is not None
    NG = 3 if coupled else 4

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
        H = h.shape[-1]
        G = NG * H
        x_hat, h_hat = tape[..., G : 2 * G], tape[..., 2 * G : 3 * G]
        c_hat, stats = tape[..., 3 * G : 3 * G + H], tape[..., 3 * G + H : 3 * G + 2 * H]
        gamma_x, gamma_h, beta = q[..., :G], q[..., G : 2 * G], q[..., 2 * G : 3 * G]
        gamma_c, beta_c = q[..., 3 * G : 3 * G + H], q[..., 3 * G + H : 3 * G + 2 * H]
        peep = 3 * G + 2 * H  # the peephole weights follow: w_ci (unless coupled), w_cf, w_co
        for j in units(x_hat):
            x_hat[j] = xa[j] + b_ih[j]
        r_x = normalise(x_hat, x_hat, LN_EPS)
        for j in units(h_hat):
            h_hat[j] = ha[j] + b_hh[j]
        r_h = normalise(h_hat, h_hat, LN_EPS)
        z = tape[..., :G]
        for j in units(z):
            z[j] = gamma_x[j] * x_hat[j] + gamma_h[j] * h_hat[j] + beta[j]
        if coupled:
            f, g, o = blocks(tape, 3, H)
        else:
            i, f, g, o = blocks(tape, 4, H)
            if peephole:
                w_ci = q[..., peep : peep + H]
                for j in units(i):
                    i[j] = sigmoid(i[j] + w_ci[j] * c_prev[j])
            else:
                for j in units(i):
                    i[j] = sigmoid(i[j])
        if peephole:
            w_cf = q[..., peep + (NG - 3) * H : peep + (NG - 2) * H]
            for j in units(f):
                f[j] = sigmoid(f[j] + w_cf[j] * c_prev[j])
        else:
            for j in units(f):
                f[j] = sigmoid(f[j])
        for j in units(g):
            g[j] = tanh(g[j])
        if coupled:
            for j in units(c):
                c[j] = f[j] * c_prev[j] + (one(g[j]) - f[j]) * g[j]
        else:
            for j in units(c):
                c[j] = f[j] * c_prev[j] + i[j] * g[j]
        if clipping:  # bound: a float (mypy doesn't narrow via `clipping`)
            for j in units(c):
                c[j] = clip(c[j], bound)  # type: ignore[arg-type]
        if peephole:
            w_co = q[..., peep + (NG - 2) * H : peep + (NG - 1) * H]
            for j in units(o):
                o[j] = sigmoid(o[j] + w_co[j] * c[j])
        else:
            for j in units(o):
                o[j] = sigmoid(o[j])
        r_c = normalise(c, c_hat, LN_EPS)
        for j in units(h):
            h[j] = o[j] * tanh(gamma_c[j] * c_hat[j] + beta_c[j])
        stats[..., 0:1] = r_x
        stats[..., 1:2] = r_h
        stats[..., 2:3] = r_c

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
        H = h.shape[-1]
        G = NG * H
        x_hat, h_hat = tape[..., G : 2 * G], tape[..., 2 * G : 3 * G]
        c_hat, stats = tape[..., 3 * G : 3 * G + H], tape[..., 3 * G + H : 3 * G + 2 * H]
        gamma_x, gamma_h = q[..., :G], q[..., G : 2 * G]
        gamma_c, beta_c = q[..., 3 * G : 3 * G + H], q[..., 3 * G + H : 3 * G + 2 * H]
        d_gamma_x, d_gamma_h, d_beta = dq[..., :G], dq[..., G : 2 * G], dq[..., 2 * G : 3 * G]
        d_gamma_c, d_beta_c = dq[..., 3 * G : 3 * G + H], dq[..., 3 * G + H : 3 * G + 2 * H]
        peep = 3 * G + 2 * H
        o = tape[..., (NG - 1) * H : G]
        dz_o = da[..., (NG - 1) * H : G]
        for j in units(c):  # through h = o ⊙ tanh(y_c), y_c = γ_c ⊙ ĉ + β_c; dh becomes dĉ
            o_ = o[j]
            t = tanh(gamma_c[j] * c_hat[j] + beta_c[j])
            dy = dh[j] * o_ * (one(t) - t * t)
            dz_o[j] = (dh[j] * t) * (o_ * (one(t) - o_))
            d_gamma_c[j] += dy * c_hat[j]
            d_beta_c[j] += dy
            dh[j] = dy * gamma_c[j]
        normalise_back(dh, c_hat, column(stats, 2))
        if coupled:
            f, g, _ = blocks(tape, 3, H)
            dz_f, dz_g, _ = blocks(da, 3, H)
            for j in units(c):
                f_, g_ = f[j], g[j]
                d_c = dc[j] + dh[j]
                if peephole:
                    d_c = d_c + dz_o[j] * q[..., peep + H : peep + 2 * H][j]
                    dq[..., peep + H : peep + 2 * H][j] += dz_o[j] * c[j]
                if clipping:  # bound: a float (mypy doesn't narrow via `clipping`)
                    d_c = select(inside(c[j], bound), d_c, zero(d_c))  # type: ignore[arg-type]
                d_f = (d_c * (c_prev[j] - g_)) * (f_ * (one(d_c) - f_))
                dz_g[j] = (d_c * (one(d_c) - f_)) * (one(d_c) - g_ * g_)
                dc_prev = d_c * f_
                if peephole:
                    dc_prev = dc_prev + d_f * q[..., peep : peep + H][j]
                    dq[..., peep : peep + H][j] += d_f * c_prev[j]
                dz_f[j] = d_f
                dc[j] = dc_prev
                dh[j] = zero(d_c)
        else:
            i, f, g, _ = blocks(tape, 4, H)
            dz_i, dz_f, dz_g, _ = blocks(da, 4, H)
            for j in units(c):
                i_, f_, g_ = i[j], f[j], g[j]
                d_c = dc[j] + dh[j]
                if peephole:
                    d_c = d_c + dz_o[j] * q[..., peep + 2 * H : peep + 3 * H][j]
                    dq[..., peep + 2 * H : peep + 3 * H][j] += dz_o[j] * c[j]
                if clipping:  # bound: a float (mypy doesn't narrow via `clipping`)
                    d_c = select(inside(c[j], bound), d_c, zero(d_c))  # type: ignore[arg-type]
                d_i = (d_c * g_) * (i_ * (one(d_c) - i_))
                d_f = (d_c * c_prev[j]) * (f_ * (one(d_c) - f_))
                dz_g[j] = (d_c * i_) * (one(d_c) - g_ * g_)
                dc_prev = d_c * f_
                if peephole:
                    w_ci, w_cf = q[..., peep : peep + H], q[..., peep + H : peep + 2 * H]
                    dc_prev = dc_prev + d_i * w_ci[j] + d_f * w_cf[j]
                    dq[..., peep : peep + H][j] += d_i * c_prev[j]
                    dq[..., peep + H : peep + 2 * H][j] += d_f * c_prev[j]
                dz_i[j] = d_i
                dz_f[j] = d_f
                dc[j] = dc_prev
                dh[j] = zero(d_c)
        for j in units(da):  # z = γ_x ⊙ x̂ + γ_h ⊙ ĥ + β
            dz = da[j]
            d_beta[j] += dz
            d_gamma_x[j] += dz * x_hat[j]
            d_gamma_h[j] += dz * h_hat[j]
            da_h[j] = dz * gamma_h[j]
            da[j] = dz * gamma_x[j]
        normalise_back(da, x_hat, column(stats, 0))
        normalise_back(da_h, h_hat, column(stats, 1))

    return (forward,), (backward,)


class LSTMCell(Cell):
    """The LSTM of PyTorch's nn.LSTM, and its variants (see the module's docstring).

    `forget_bias=b` starts the forget gate's bias at b (b_ih's f block; b_hh's at 0), as
    Jozefowicz et al. (2015) recommend (b = 1). `init="orthogonal"` draws each H × H block
    of W_hh orthogonal."""

    name = "lstm"
    has_c = True
    in_place = True
    reads_h_prev = False  # h_{t-1} enters through W_hh only: a projected carry may be narrower

    def __init__(
        self,
        *,
        forget_bias: float | None = None,
        init: str = "uniform",
        peephole: bool = False,
        coupled: bool = False,
        cell_clip: float | None = None,
        layer_norm: bool = False,
    ):
        if forget_bias is not None:
            forget_bias = _checks.finite_float(forget_bias, "forget_bias")
        self.forget_bias = forget_bias
        self.init_name = check_init(init, ("uniform", "orthogonal"), "an LSTM or GRU")
        self.peephole = _checks.boolean(peephole, "peephole")
        self.coupled = _checks.boolean(coupled, "coupled")
        if cell_clip is not None:
            cell_clip = _checks.finite_float(cell_clip, "cell_clip")
            if cell_clip <= 0:
                _checks.fail("cell_clip", "a positive number (the bound on |c_t|)", repr(cell_clip))
        self.cell_clip = cell_clip
        self.layer_norm = _checks.boolean(layer_norm, "layer_norm")
        self.gates = G = 3 if self.coupled else 4  # f, g, o or i, f, g, o
        # the activations come first on the tape (the layer-normalised step squashes its
        # blocks of z in place); coupled, i = 1 − f is kept nowhere: its saturation is f's,
        # mirrored
        gates = (("i", "input", "sigmoid"), ("f", "forget", "sigmoid"),
                 ("g", "candidate", "tanh"), ("o", "output", "sigmoid"))[4 - G :]  # fmt: skip
        self.gate_activations = tuple((s, n, k, a) for k, (s, n, a) in enumerate(gates))
        self.products = (((0, G), None),)
        names = ("weight_ci", "weight_cf", "weight_co")[1 if self.coupled else 0 :]
        peepholes = names if self.peephole else ()
        if self.layer_norm:  # the tape: gates, x̂, ĥ (G blocks each), ĉ, statistics
            self.tape, self.in_place, self.hh_own = 3 * G + 2, False, tuple(range(G))
            # the statistics block holds three values (r_x, r_h, r_c); normalising over one
            # or two units leaves 0 or ±1 anyway
            self.min_hidden = 3
            self.extra = (("ln_gain_ih", G), ("ln_gain_hh", G), ("ln_bias", G), "ln_gain_c",
                          "ln_bias_c") + peepholes  # fmt: skip
            steps = _layer_norm_steps(self.peephole, self.coupled, cell_clip)
        else:
            self.tape, self.extra = G, peepholes  # the gate activations
            steps = _steps(self.peephole, self.coupled, cell_clip)
        self.stages, self.backward_stages = steps
        super().__init__()

    def describe(self) -> str:
        flags = (("peephole", self.peephole), ("coupled", self.coupled))
        options = [o for o, on in flags + (("layer_norm", self.layer_norm),) if on]
        if self.cell_clip is not None:
            options.append(f"cell_clip={self.cell_clip:g}")
        return "lstm" + (f" ({', '.join(options)})" if options else "")

    def init(self, params: dict[str, np.ndarray], H: int, rng: np.random.Generator) -> None:
        if self.layer_norm:  # gains 1, biases 0 (zeros already), as PyTorch's LayerNorm
            for name in ("ln_gain_ih", "ln_gain_hh", "ln_gain_c"):
                params[name][...] = 1.0
        bound = 1.0 / H**0.5
        for name in ("weight_ci", "weight_cf", "weight_co"):  # as the other weights
            if name in params:
                params[name][...] = rng.uniform(-bound, bound, H)
        if self.init_name == "orthogonal":
            orthogonal_blocks(params["weight_hh"], H, rng)
        if self.forget_bias is not None:
            f = slice(0, H) if self.coupled else slice(H, 2 * H)
            if self.layer_norm:  # b_ih sits inside x̂ = LN(x W_ihᵀ + b_ih), which normalises
                params["ln_bias"][f] = self.forget_bias  # it away: β is added after
            else:
                params["bias_ih"][f] = self.forget_bias
                params["bias_hh"][f] = 0.0
