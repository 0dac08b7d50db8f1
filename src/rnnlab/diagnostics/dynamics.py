"""An RNN without input as a dynamical system: fixed points, their stability, basins.

The notes study h ← f(h) by iterating it (their example is the logistic map) and picture an
RNN as a system with attractors: inside a basin of attraction the state ends at the same
attractor whatever small change is made, so the gradient vanishes; across a basin boundary a
tiny change moves the end state to another attractor, so the gradient explodes. For a 1-unit
RNN h ← φ(w h + b) and a 2-unit one h ← φ(W h + b) this module finds the fixed points
h* = φ(W h* + b), classifies them by the Jacobian J = diag(φ'(a*)) W (stable when every
|eigenvalue| < 1; in 1-D when |w φ'(a*)| < 1), iterates a grid of starting points to label
each with the attractor it reaches, and records log10 ‖∂h_N/∂h_0‖ along each trajectory.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from rnnlab import _checks
from rnnlab.diagnostics._common import check_int, check_number, json_value

PHIS = ("tanh", "sigmoid")


def _phi(kind: str, a: Any) -> Any:  # (an array or a scalar, as it came)
    """tanh, or σ(a) = ½ tanh(a/2) + ½ (ops.sigmoid's overflow-free form, scalars too)."""
    return np.tanh(a) if kind == "tanh" else 0.5 * np.tanh(0.5 * a) + 0.5


def _dphi(kind: str, y: np.ndarray) -> np.ndarray:
    """φ'(a) from the value y = φ(a): tanh' = 1 − y², σ' = y(1 − y)."""
    return 1.0 - y * y if kind == "tanh" else y * (1.0 - y)


@dataclass
class IteratedMap:
    """Fixed points and basins of h ← φ(W h + b) for 1 or 2 units.

    Starting points: `axis` (1 unit), or the grid (h₁, h₂) = (axis[ix], axis[iy]) stored at
    [iy, ix] (2 units, image layout). `basin` holds the index into `fixed_points` of the
    stable fixed point each start reaches within `n_iter` steps, −1 if none.
    """

    units: int
    phi: str
    W: np.ndarray  # (units, units)
    b: np.ndarray  # (units,)
    fixed_points: np.ndarray  # (n, units)
    multipliers: np.ndarray  # (n,) 1 unit: w φ'(a*); 2 units: max |eigenvalue of J|
    kinds: list[str]  # "stable", "unstable", "saddle" or "marginal"
    axis: np.ndarray  # (P,)
    basin: np.ndarray  # (P,) or (P, P)
    final: np.ndarray  # (P,) or (P, P, 2)
    log10_gain: np.ndarray  # (P,) or (P, P): log10 ‖∂h_N/∂h_0‖ (−inf once it is exactly 0)
    n_iter: int
    curve: np.ndarray  # 1 unit: (2, C) rows h and φ(w h + b) for plots; 2 units: (2, 0)

    def _map_text(self) -> str:
        if self.units == 1:
            b = float(self.b[0])
            return f"h ← {self.phi}({self.W[0, 0]:.4g}·h {'−' if b < 0 else '+'} {abs(b):.4g})"
        return f"h ← {self.phi}(W h + b) with 2 units"

    def verdict(self) -> str:
        fps = ", ".join(
            f"{_fmt(p)} ({k}, {'w·φ′' if self.units == 1 else 'ρ(J)'} = {m:.4g})"
            for p, k, m in zip(self.fixed_points, self.kinds, self.multipliers, strict=True)
        )
        n = len(self.kinds)
        lines = [f"{self._map_text()}: {n} fixed point{'s' if n != 1 else ''}: {fps}"]
        total = self.basin.size
        shares = [
            f"{np.mean(self.basin == i):.0%} settle at {_fmt(self.fixed_points[i])}"
            for i in range(n)
            if self.kinds[i] == "stable" and np.any(self.basin == i)
        ]
        lo, hi = float(self.axis[0]), float(self.axis[-1])
        where = f"[{lo:.6g}, {hi:.6g}]" + ("²" if self.units == 2 else "")
        line = f"of {total} starting points in {where}: " + ("; ".join(shares) or "none settle")
        lost = int(np.sum(self.basin < 0))
        if lost:
            line += (
                f"; {lost} {'does' if lost == 1 else 'do'} not settle on a stable fixed "
                f"point within {self.n_iter} steps (a cycle, an unstable or a marginal "
                "fixed point)"
            )
        lines.append(line)
        if self.units == 1:
            # Between neighbouring starts that settle in two basins, past those between them
            # that do not: the edges of every label change were said, so a start on the
            # unstable fixed point between two basins made two meeting points of one
            # (h ≈ -0.005, 0.005 for h ← tanh(2h)), and the edge of the starts that had not
            # settled yet one where a single basin met nothing.
            settled = np.nonzero(self.basin >= 0)[0]
            edges = [(i, k) for i, k in zip(settled[:-1], settled[1:], strict=True)
                     if self.basin[i] != self.basin[k]]  # fmt: skip
            if edges:
                span = float(self.axis[-1] - self.axis[0])
                mids = [(self.axis[i] + self.axis[k]) / 2 for i, k in edges]
                # (the grid's rounding left 1.11e-16 for the midpoint of ±0.01)
                at = ", ".join(f"{0.0 if abs(m) < 1e-12 * span else m:.3g}" for m in mids)
                lines.append(f"basins meet at h ≈ {at}")
        gain = self.log10_gain[np.isfinite(self.log10_gain)]
        if gain.size:
            text = (
                f"after {self.n_iter} steps ‖∂h_N/∂h_0‖ ranges from 1e{gain.min():.0f} to "
                f"1e{gain.max():.0f}"
            )
            basins = np.unique(self.basin[self.basin >= 0]).size
            if basins > 1 and gain.max() > 0:
                text += (
                    ": it vanishes inside a basin and is largest near the boundaries "
                    "between basins, where the gradient explodes"
                )
            elif basins > 1:  # (said "explodes" at gains of 1e-146 too)
                text += (": below 1 from every start, so it vanishes everywhere, near the "
                         "boundaries between basins too")  # fmt: skip
            elif basins == 1 and lost == 0:
                text += ": one attractor takes every start, so the gradient vanishes"
            lines.append(text)
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": "iterated_map",
            **{k: json_value(v) for k, v in self.__dict__.items()},
            "verdict": self.verdict(),
        }


def _fmt(p: np.ndarray) -> str:
    return f"{p[0]:.4g}" if p.size == 1 else "(" + ", ".join(f"{v:.4g}" for v in p) + ")"


def _roots_1d(w: float, b: float, phi: str) -> np.ndarray:
    """Every crossing of g(h) = φ(w h + b) − h in φ's range, by bracketing then bisection."""
    lo, hi = (-1.0, 1.0) if phi == "tanh" else (0.0, 1.0)
    grid = np.linspace(lo, hi, 20001)
    g = _phi(phi, w * grid + b) - grid
    sign = np.sign(g)
    roots = list(grid[sign == 0])
    for i in np.nonzero(sign[:-1] * sign[1:] < 0)[0]:
        a, c, ga = grid[i], grid[i + 1], g[i]
        for _ in range(200):
            m = 0.5 * (a + c)
            if m in (a, c):
                break
            gm = _phi(phi, w * m + b) - m
            if gm == 0:
                a = c = m
                break
            if np.sign(gm) == np.sign(ga):
                a, ga = m, gm
            else:
                c = m
        roots.append(0.5 * (a + c))
    return np.sort(np.array(roots))


_SAME = 1e-5  # fixed points of a 2-unit map closer than this are one


def _roots_2d(W: np.ndarray, b: np.ndarray, phi: str, extra: np.ndarray) -> np.ndarray:
    """Newton's method on F(h) = φ(W h + b) − h from a grid over φ's range (and `extra`)."""
    lo, hi = (-1.0, 1.0) if phi == "tanh" else (0.0, 1.0)
    ax = np.linspace(lo, hi, 21)
    h = np.concatenate([np.stack(np.meshgrid(ax, ax), axis=-1).reshape(-1, 2), extra])
    # (a W of 1e300 makes det(JF) overflow: inf, and a start's step 0 or NaN, whose NaN
    # residual leaves it out; the warnings of making them only said so)
    with np.errstate(under="ignore", over="ignore", invalid="ignore"):
        for _ in range(60):
            y = _phi(phi, h @ W.T + b)
            F = y - h
            JF = _dphi(phi, y)[:, :, None] * W[None] - np.eye(2)
            det = JF[:, 0, 0] * JF[:, 1, 1] - JF[:, 0, 1] * JF[:, 1, 0]
            ok = np.abs(det) > 1e-14
            num0 = F[:, 0] * JF[:, 1, 1] - F[:, 1] * JF[:, 0, 1]
            num1 = JF[:, 0, 0] * F[:, 1] - JF[:, 1, 0] * F[:, 0]
            step = np.zeros_like(h)
            np.divide(num0, det, out=step[:, 0], where=ok)
            np.divide(num1, det, out=step[:, 1], where=ok)
            h = np.clip(h - step, lo - 1.0, hi + 1.0)
        res = np.linalg.norm(_phi(phi, h @ W.T + b) - h, axis=1)
    found = h[res < 1e-12]
    # Newton closes in on a marginal fixed point (multiplier 1, as h ← tanh(h) at 0) only
    # slowly: its starts end ~1e-7 around it, residuals below 1e-12 all, and were listed as
    # several fixed points. Points within 1e-5 of one another are one.
    unique: list[np.ndarray] = []
    for p in found[np.lexsort(found.T[::-1])]:
        if not unique or np.linalg.norm(p - unique[-1]) > _SAME:
            if all(np.linalg.norm(p - q) > _SAME for q in unique):
                unique.append(p)
    return np.array(unique).reshape(-1, 2)


def _classify(moduli: np.ndarray) -> str:
    if np.all(moduli < 1 - 1e-9):
        return "stable"
    if np.all(moduli > 1 + 1e-9):
        return "unstable"
    if np.any(moduli < 1 - 1e-9) and np.any(moduli > 1 + 1e-9):
        return "saddle"
    return "marginal"


def _label(final: np.ndarray, fixed: np.ndarray, kinds: list[str], tol: float) -> np.ndarray:
    """Index of the stable fixed point within `tol` of each final state, −1 if none."""
    out = np.full(final.shape[0], -1)
    for i, (p, kind) in enumerate(zip(fixed, kinds, strict=True)):
        if kind == "stable":
            out[np.linalg.norm(final - p, axis=1) < tol] = i
    return out


def iterated_map(
    w: object,
    b: object,
    phi: str = "tanh",
    h_range: tuple[float, float] = (-2.0, 2.0),
    *,
    n_points: int | None = None,
    n_iter: int = 200,
    tol: float = 1e-4,
) -> IteratedMap:
    """Fixed points, their stability and the basins of attraction of h ← φ(w h + b).

    One unit: `w`, `b` numbers; fixed points are every crossing of φ(w h + b) = h (found by
    bisection on a fine grid of φ's range, so a tangent double root can be missed), stable
    when |w φ'(a*)| < 1. Two units: `w` a (2, 2) array and `b` a (2,) array; fixed points by
    Newton's method from a grid of starts, stable when every |eigenvalue| of
    diag(φ'(a*)) W is < 1 ("saddle" when one is above 1 and one below).
    Starting points: `n_points` (default 401 for one unit, 101 per axis for two) evenly over
    `h_range`; each is iterated `n_iter` times and labelled with the stable fixed point it
    ends within `tol` of.
    """
    _checks.choice(phi, "phi", PHIS)
    n_iter = check_int(n_iter, "n_iter", 1, 10**7)
    tol = check_number(tol, "tol", positive=True)
    if not isinstance(h_range, (tuple, list)) or len(h_range) != 2:
        _checks.fail("h_range", "a pair (low, high)", _checks.describe(h_range))
    lo = check_number(h_range[0], "h_range[0]")
    hi = check_number(h_range[1], "h_range[1]")
    if not lo < hi:
        _checks.fail("h_range", "a pair (low, high) with low < high", f"({lo}, {hi})")

    scalar = isinstance(w, (int, float, np.integer, np.floating)) and not isinstance(w, bool)
    if scalar:
        W = np.array([[check_number(w, "w")]])
        bb = np.array([check_number(b, "b")])
    else:
        W = _checks.float_array(w, "w", shape=(2, 2), dtype=np.float64)
        bb = _checks.float_array(b, "b", shape=(2,), dtype=np.float64)
    units = W.shape[0]
    default = 401 if units == 1 else 101
    P = check_int(default if n_points is None else n_points, "n_points", 2, 10**6)
    axis = np.linspace(lo, hi, P)

    if units == 1:
        h = axis[:, None].copy()
    else:
        X, Y = np.meshgrid(axis, axis)  # [iy, ix] = (axis[ix], axis[iy])
        h = np.stack([X.ravel(), Y.ravel()], axis=1)
    M = np.broadcast_to(np.eye(units), (h.shape[0], units, units)).copy()
    log_gain = np.zeros(h.shape[0])
    # ∂h_N/∂h_0 = J_N ⋯ J_1, renormalised every step so long products neither overflow nor
    # underflow; a Jacobian that is exactly zero (saturated units) makes the gain −inf. The
    # norm is taken of M scaled by its largest entry: the squares of a w of 1e300's product
    # overflowed (a RuntimeWarning, and the gain NaN where it is 1e300 a step).
    with np.errstate(under="ignore", divide="ignore"):
        for _ in range(n_iter):
            h = _phi(phi, h @ W.T + bb)
            J = _dphi(phi, h)[:, :, None] * W[None]
            M = J @ M
            top = np.abs(M).max(axis=(1, 2))
            np.divide(M, top[:, None, None], out=M, where=top[:, None, None] > 0)
            rel = np.sqrt(np.sum(M * M, axis=(1, 2)))  # (1 to √(units²) where top > 0)
            log_gain += np.log10(top) + np.log10(rel)
            np.divide(M, rel[:, None, None], out=M, where=rel[:, None, None] > 0)
        sigma = np.linalg.norm(M, 2, axis=(1, 2))
        log_gain += np.log10(sigma)

    if units == 1:
        fixed = _roots_1d(float(W[0, 0]), float(bb[0]), phi)[:, None]
    else:
        fixed = _roots_2d(W, bb, phi, h)
    kinds, mult = [], []
    for p in fixed:
        J = _dphi(phi, _phi(phi, W @ p + bb))[:, None] * W
        moduli = np.abs(np.linalg.eigvals(J))
        kinds.append(_classify(moduli))
        mult.append(float(J[0, 0]) if units == 1 else float(moduli.max()))
    basin = _label(h, fixed, kinds, tol)
    if units == 1:
        curve_h = np.linspace(lo, hi, 400)
        curve = np.stack([curve_h, _phi(phi, W[0, 0] * curve_h + bb[0])])
        return IteratedMap(
            1,
            phi,
            W,
            bb,
            fixed,
            np.array(mult),
            kinds,
            axis,
            basin,
            h[:, 0],
            log_gain,
            n_iter,
            curve,
        )
    return IteratedMap(
        2,
        phi,
        W,
        bb,
        fixed,
        np.array(mult),
        kinds,
        axis,
        basin.reshape(P, P),
        h.reshape(P, P, 2),
        log_gain.reshape(P, P),
        n_iter,
        np.empty((2, 0)),
    )
