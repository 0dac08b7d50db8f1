"""The state-to-state Jacobian ∂h_t/∂h_k of one sequence, against the notes' bound.

The notes write ∂h_t/∂h_k = ∏_{i=k+1}^{t} ∂h_i/∂h_{i−1} = ∏ diag(φ'(a_i)) W_hh for the Elman
cell and bound its norm by (‖W_hh‖₂ · max|φ'|)^(t−k). This module builds each one-step
Jacobian exactly, for any cell, by pushing the rows of the identity through one step of the
cell's own BPTT, `recurrence.step_backward` (a vector-Jacobian product per row: row i of
∂s_i/∂s_{i−1} is e_iᵀ J), multiplies
them out from t backwards and measures the spectral norm of every partial product. For an LSTM
the state is s = (h, c), 2H wide; `block="h"` reads only the h → h block of the product
(∂h_t/∂h_k with c_k held fixed). Measured ≤ ∏‖J_i‖₂ ≤ (‖W_hh‖₂·max|φ'|)^(t−k) always holds;
the tests check both inequalities and the products against finite differences of one step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from rnnlab import _checks, recurrence
from rnnlab.cells import ElmanCell
from rnnlab.diagnostics._common import (
    RateFit,
    check_int,
    check_layer,
    check_number,
    fit_log10,
    float64_copy,
    json_value,
    labels,
    layer_params,
)
from rnnlab.layers import Recurrent
from rnnlab.recurrence import valid_mask

# With method="auto", the products' norms by SVD up to this state width, by power iteration
# above it (the one-step norms, which bound the products, are always exact SVDs).
SVD_MAX_STATE = 128


@dataclass
class JacobianProfile:
    """‖∂s_t/∂s_k‖₂ of one sequence against the lag t − k (in processing order), with bounds.

    `bound` is the notes' (‖W_hh‖₂·max|φ'|)^(t−k) for the Elman cell and the product of the
    one-step norms ∏‖∂s_i/∂s_{i−1}‖₂ for the gated cells (`bound_name` says which).
    """

    name: str  # layer and direction, e.g. "l0"
    cell: str  # the cell's name (Cell.name): "rnn", "relu", "irnn", "lstm", "gru", ...
    sample: int
    t: int  # time index of the end state s_t
    block: str  # "state" (h, or (h, c) for an LSTM) or "h"
    method: str  # "svd" or "power"
    lags: np.ndarray  # (P,) 1 … P, back to the initial state
    measured: np.ndarray  # (P,) ‖∂s_t/∂s_{t−ℓ}‖₂
    step_norms: np.ndarray  # (P,) ‖J‖₂ of the step at lag ℓ (the step that wrote s_{t−ℓ+1})
    product_bound: np.ndarray  # (P,) ∏ of step_norms up to lag ℓ
    bound: np.ndarray  # (P,)
    bound_name: str
    log10_measured: np.ndarray  # (P,) log10 of `measured`, exact where it under- or overflows
    log10_bound: np.ndarray  # (P,)
    alpha: float  # ‖W_hh‖₂ (Elman), NaN for gated cells
    beta: float  # the max|φ'| used in the bound (Elman), NaN for gated cells
    fit: RateFit  # rate of `measured`
    bound_fit: RateFit  # rate of `bound`
    products: np.ndarray | None = None  # (P, S, S) when keep_products=True
    # the state carries a cell state, s = (h, c): any cell's `has_c`, not the name "lstm"
    # (a cell of one's own, or an LSTMCell subclass named otherwise, was said to give ∂h/∂h)
    has_c: bool = False

    @property
    def state(self) -> str:
        """What the products differentiate: "(h,c)" for the whole state of a cell with a
        cell state, "h" otherwise (block "h" of it too)."""
        return "(h,c)" if self.block == "state" and self.has_c else "h"

    @property
    def elman(self) -> bool:
        """Whether `bound` is the notes' Elman bound (α, β finite): from the cell's class, as
        jacobian_products decided it, not from its name."""
        return math.isfinite(self.alpha)

    def verdict(self) -> str:
        what = f"‖∂{self.state}_t/∂{self.state}_k‖₂"
        lines = [
            f"{self.name}, sequence {self.sample}, from step t={self.t}: " + self.fit.words(what)
        ]
        if self.elman:
            lines.append(
                f"the bound {self.bound_name} with ‖W_hh‖₂ = {self.alpha:.3g} and "
                f"max|φ'| = {self.beta:.3g}: ×{self.alpha * self.beta:.3g} per step"
            )
        else:
            lines.append(self.bound_fit.words(f"the bound {self.bound_name}"))
        measured, bound = self.log10_measured[-1], self.log10_bound[-1]
        with np.errstate(invalid="ignore"):  # −inf − (−inf): both exactly zero
            gap = measured - bound
        if np.isfinite(gap):
            lines.append(
                f"at lag {int(self.lags[-1])} the measured norm is {10.0**gap:.3g} of the bound"
            )
        elif measured == bound == -np.inf:
            lines.append(
                f"at lag {int(self.lags[-1])} the measured norm and the bound are both exactly 0 "
                "(a zero W_hh, or units with φ′ = 0, pass no gradient back)"
            )
        elif measured == -np.inf:  # (only "too few non-zero values ...: undetermined" was said)
            first = int(self.lags[np.argmax(self.log10_measured == -np.inf)])
            lines.append(
                f"the measured norm is exactly 0 from lag {first} on, under a bound that is "
                "not: no gradient reaches back that far (units with φ′ = 0, saturated or "
                "dead, pass none)"
            )
        return "\n".join(lines)

    def to_json(self) -> dict:
        data = {k: json_value(v) for k, v in self.__dict__.items() if k != "products"}
        return {"kind": "jacobian_products", **data, "verdict": self.verdict()}


def _sample_tape(layer, x, lengths, sample, layer_index, direction):
    """Run the layer on one sequence cut to its valid length; return its tape for (k, d)."""
    layer, x = float64_copy(layer, x)
    # x as given, before one sequence is cut out of it: an empty batch was "`sample` must be
    # an integer in [0, 0)", and the forward's checks said the cut's shape, "got shape
    # (1, 0, 4)" of the x of shape (3, 0, 4) given, "(1, 7, 5)" of one with 5 features
    _checks.batch_of_steps(x if layer.batch_first else np.swapaxes(x, 0, 1))
    if x.shape[2] != layer.input_size:
        _checks.fail("x", f"an array with {layer.input_size} features in its last axis "
                     "(input_size)", f"shape {x.shape}")  # fmt: skip
    B, T = (x.shape[0], x.shape[1]) if layer.batch_first else (x.shape[1], x.shape[0])
    m = valid_mask(lengths, None, B, T)
    sample = check_int(sample, "sample", 0, B)
    k = check_int(layer_index, "layer_index", 0, layer.num_layers)
    d = check_int(direction, "direction", 0, len(layer.directions))
    n = T if m is None else int(m[:, sample].sum())
    xs = x[sample : sample + 1, :n] if layer.batch_first else x[:n, sample : sample + 1]
    f = layer.forward(xs)
    j = k * len(layer.directions) + d
    return f.cache["tapes"][j], layer_params(layer, k, layer.directions[d]), n, j, sample, layer


def _step_jacobian(cell, p: recurrence.Params, tape: recurrence.Tape, t: int) -> np.ndarray:
    """∂s_t/∂s_prev (S × S, float64) of step t of the tape's only sequence.

    One step of BPTT maps a row dh (and dc) to (dh_prev, dc_prev) = [dh, dc] · J, so feeding
    the S rows of the identity as a batch returns J row by row.
    """
    H = p.W_hh.shape[1]
    S = 2 * H if cell.has_c else H
    prev, out = (t + 1, t) if tape.reverse else (t, t + 1)
    hs, cs, saved = tape.hs, tape.cs, tape.saved
    assert hs is not None and saved is not None  # (a whole tape: _sample_tape's forward)

    def rows(a):  # the sequence's row repeated S times, as a batch
        return np.repeat(a[0:1], S, axis=0)

    no_c = np.empty((S, 0))
    if cell.has_c:
        assert cs is not None  # (a cell with a cell state keeps it on the tape)
        c_prev, c = rows(cs[prev]), rows(cs[out])
    else:
        c_prev = c = no_c
    E = np.eye(S)
    dh = E[:, :H].copy()
    dc = E[:, H:].copy() if cell.has_c else no_c
    G = cell.gates
    q = np.empty(0) if p.q is None else p.q.reshape(-1)
    recurrence.step_backward(
        cell,
        p.W_hh,
        q,
        rows(hs[prev]),
        c_prev,
        rows(hs[out]),
        c,
        rows(saved[t]),
        dh,
        dc,
        np.empty((S, G * H)),
        np.empty((S, len(cell.hh_own) * H)),
        np.zeros((S, q.size)),
    )
    J = np.concatenate([dh, dc], axis=1) if cell.has_c else dh
    return np.asarray(J, dtype=np.float64)


def _spectral_norm(
    M: np.ndarray, method: str, u: np.ndarray | None
) -> tuple[float, np.ndarray | None]:
    """(‖M‖₂, a left singular vector estimate) by SVD, or by power iteration on M Mᵀ from `u`
    (the vector is only carried along by SVD).

    Power iteration returns ‖Mᵀu‖ for a unit u, a lower estimate converging to σ_max. Started
    from the previous lag's vector it needs few iterations: the products ∂s_t/∂s_k share their
    left end, so their leading left singular vectors settle as the lag grows.
    """
    if method == "svd":
        try:
            return float(np.linalg.svd(M, compute_uv=False)[0]), u
        except np.linalg.LinAlgError:  # LAPACK's SVD, rarely, does not converge: fall back
            pass
    n: int = M.shape[0]
    if u is None or u.shape[0] != n:
        u = np.random.default_rng(0).standard_normal(n)
        u /= np.linalg.norm(u)
    sigma = 0.0
    for _ in range(1000):
        w = M.T @ u
        new = float(np.linalg.norm(w))
        v = M @ w
        nv = float(np.linalg.norm(v))
        if nv == 0.0:
            return new, u
        u = v / nv
        if abs(new - sigma) <= 1e-12 * new:
            break
        sigma = new
    return new, u


def _exact_norm(M: np.ndarray) -> float:
    """‖M‖₂ to rounding, never a lower estimate (it enters the bound). Up to SVD_MAX_STATE
    columns LAPACK's SVD; wider, the root of the largest eigenvalue of AᵀA for A = M/max|M|
    (scaled so that neither leaves float range): as exact for the largest singular value
    (relative error of order n·ε; charlm's step norms agree with the SVD's to 2e-15) and
    faster at S = 1024 (0.48 against 1.7 s a norm on a loaded 2-core Zen 3; a whole
    `rnnlab gradflow charlm --analyses jacobian` on the idle host: 38.4 → 34.4 s)."""
    if M.shape[1] <= SVD_MAX_STATE:
        return _spectral_norm(M, "svd", None)[0]
    top = float(np.abs(M).max())
    if top == 0.0 or not math.isfinite(top):
        return top if top == 0.0 else _spectral_norm(M, "svd", None)[0]
    A = M / top
    G = A.T @ A
    try:
        from scipy.linalg import eigvalsh

        largest = float(eigvalsh(G, subset_by_index=[len(G) - 1, len(G) - 1], driver="evr")[0])
    except ImportError:  # (scipy is optional: NumPy's solver finds every eigenvalue)
        largest = float(np.linalg.eigvalsh(G)[-1])
    return top * math.sqrt(max(largest, 0.0))


def step_jacobians(
    layer: Recurrent,
    x: np.ndarray,
    lengths: np.ndarray | None = None,
    *,
    sample: int = 0,
    layer_index: int = 0,
    direction: int = 0,
) -> np.ndarray:
    """The one-step Jacobians J_t = ∂s_t/∂s_prev (T_b, S, S) of one sequence, in time order.

    s is h (Elman, GRU) or (h, c) concatenated (LSTM, S = 2H); s_prev is the state step t read:
    s_{t−1} running forward, s_{t+1} in reverse. Elman: J_t = diag(φ'(a_t)) W_hh.
    """
    check_layer(layer, one_step=True)
    tape, p, n, _, _, layer = _sample_tape(layer, x, lengths, sample, layer_index, direction)
    return np.stack([_step_jacobian(layer.cell, p, tape, t) for t in range(n)])


def jacobian_products(
    layer: Recurrent,
    x: np.ndarray,
    lengths: np.ndarray | None = None,
    *,
    sample: int = 0,
    layer_index: int = 0,
    direction: int = 0,
    t: int | None = None,
    block: str = "state",
    max_dphi: str | float = "trajectory",
    method: str = "auto",
    keep_products: bool = False,
) -> JacobianProfile:
    """‖∂s_t/∂s_k‖₂ for every earlier state k of one sequence, against the bounds.

        ∂s_t/∂s_k = J_t J_{t−1} ⋯ J_{k+1}          (forward; in reverse the indices run up)
        ‖∂s_t/∂s_k‖₂ ≤ ∏ ‖J_i‖₂ ≤ (‖W_hh‖₂ · β)^(t−k)   (Elman: ‖diag(φ')W‖₂ ≤ max|φ'|·‖W‖₂)

    `t`: the end step (default: the last one the direction processes); the lags run back to
    the initial state. β = `max_dphi`: "trajectory" takes the largest φ'(a_i) over the steps
    used (tanh: 1 − h_i², relu: 0 or 1); a number (e.g. 1.0, the worst case) is used as given
    (an Elman cell's only: the other cells' bound is the product of the one-step norms).
    `method` for the norms of the products: "svd" (exact), "power" (power iteration on the
    explicit product, warm-started from the previous lag: a lower estimate converged to 1e-12
    relative, much faster for wide states), "auto" (svd up to a state width of 128). The
    one-step norms in the bound are always exact, so the bound holds either way. The cost is
    O(T·S³) for S-wide states: seconds for S of a few hundred and T of a hundred.
    """
    check_layer(layer, one_step=True)
    _checks.choice(block, "block", ("state", "h"))
    _checks.choice(method, "method", ("auto", "svd", "power"))
    keep_products = _checks.boolean(keep_products, "keep_products")  # ("no" kept them)
    if not (isinstance(max_dphi, str) and max_dphi == "trajectory"):
        max_dphi = check_number(max_dphi, "max_dphi", positive=True)
        if not isinstance(layer.cell, ElmanCell):  # (it was ignored without a word)
            _checks.fail("max_dphi", f"'trajectory' for a layer of {layer.cell!r}: β enters "
                         "only the Elman cell's bound (another cell's is ∏‖∂s_i/∂s_{i−1}‖₂)",
                         _checks.describe(max_dphi))  # fmt: skip
    tape, p, n, j, sample, layer = _sample_tape(layer, x, lengths, sample, layer_index, direction)
    reverse = tape.reverse
    t = (0 if reverse else n - 1) if t is None else check_int(t, "t", 0, n)
    steps = list(range(t, n)) if reverse else list(range(t, -1, -1))
    H = layer.hidden_size
    S = 2 * H if layer.cell.has_c else H
    method = ("svd" if S <= SVD_MAX_STATE else "power") if method == "auto" else method

    P_count = len(steps)
    log_measured = np.empty(P_count)  # log10 ‖∂s_t/∂s_{t−ℓ}‖₂
    log_steps = np.empty(P_count)  # log10 ‖J‖₂ of the step at lag ℓ
    products = np.empty((P_count, S, S)) if keep_products else None
    # The product is kept as P·10^scale with max|P| = 1, so long lags neither overflow nor
    # underflow; the norms are reported in log10 and as numbers (0 or inf past float range).
    P, scale = np.eye(S), 0.0
    u_prod = None
    with np.errstate(divide="ignore", under="ignore", over="ignore"):
        for ell, s in enumerate(steps):
            J = _step_jacobian(layer.cell, p, tape, s)
            sigma = _exact_norm(J)  # exact: it enters the bound
            log_steps[ell] = np.log10(sigma)
            P = P @ J
            top = float(np.abs(P).max())
            if top > 0:
                P /= top
                scale += np.log10(top)
            if products is not None:
                products[ell] = P * 10.0**scale
            M = P[:H, :H] if block == "h" else P
            sigma, u_prod = _spectral_norm(M, method, u_prod)
            log_measured[ell] = np.log10(sigma) + scale if top > 0 else -np.inf
        lags = np.arange(1, P_count + 1)
        measured = 10.0**log_measured
        step_norms = 10.0**log_steps
        log_product_bound = np.cumsum(log_steps)
        product_bound = np.cumprod(step_norms)

        if isinstance(layer.cell, ElmanCell):
            alpha = _spectral_norm(p.W_hh, "svd", None)[0]
            if max_dphi == "trajectory":
                hs = tape.hs[[(s if reverse else s + 1) for s in steps], 0]  # states written
                tanh = layer.cell.nonlinearity == "tanh"
                dphi = 1.0 - hs * hs if tanh else (hs > 0).astype(float)
                beta = float(dphi.max())
            else:
                beta = float(max_dphi)
            rate = alpha * beta
            bound: np.ndarray = rate ** lags.astype(np.float64)
            log_bound = lags * np.log10(rate)
            bound_name = "(‖W_hh‖₂·max|φ'|)^(t−k)"
        else:
            alpha = beta = float("nan")
            bound, log_bound = product_bound.copy(), log_product_bound
            bound_name = "∏‖∂s_i/∂s_{i−1}‖₂"
    return JacobianProfile(
        labels(layer)[j],
        layer.cell.name,
        sample,
        t,
        block,
        method,
        lags,
        measured,
        step_norms,
        product_bound,
        bound,
        bound_name,
        log_measured,
        log_bound,
        alpha,
        beta,
        fit_log10(lags, log_measured),
        fit_log10(lags, log_bound),
        products,
        bool(layer.cell.has_c),
    )
