"""PNG figures of the diagnostics' results; matplotlib is an optional extra (rnnlab[plot]).

Each function takes a result and a path ending in .png and returns the Path written. Figures
are drawn on matplotlib's Agg canvas directly (no pyplot), so plotting changes no global
state: not the backend, not the current figure.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from rnnlab import _checks
from rnnlab.diagnostics.dynamics import IteratedMap, _phi
from rnnlab.diagnostics.gates import GateSaturation
from rnnlab.diagnostics.jacobians import JacobianProfile
from rnnlab.diagnostics.lags import GradientMap, LagProfile
from rnnlab.diagnostics.landscape import LossSlice
from rnnlab.diagnostics.spectrum import Spectrum, SpectrumHistory


class PlotDependencyError(ImportError):
    """Plotting was asked for but matplotlib is not installed."""


def new_figure(width: float, height: float):
    """A matplotlib Figure of width x height inches on the Agg canvas, touching no global state;
    PlotDependencyError without matplotlib."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as e:
        raise PlotDependencyError(
            "rnnlab's plots need matplotlib, which is not installed: pip install 'rnnlab[plot]'"
        ) from e
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _check(result: object, types: tuple[type, ...], what: str, path: object) -> Path:
    if not isinstance(result, types):
        _checks.fail("result", what, _checks.describe(result))
    if not isinstance(path, (str, Path)) or Path(path).suffix.lower() != ".png":
        _checks.fail("path", "a file path ending in .png", _checks.describe(path))
    return Path(path)


def _save(fig, path: Path) -> Path:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # (a parent that is a file was "[Errno 17] File exists: 'PARENT'")
        raise OSError(e.errno, f"cannot write '{path}': its folder cannot be made "
                      f"({e.strerror}: '{e.filename}')") from None  # fmt: skip
    return save_png(fig, path)


def save_png(fig, path: Path, dpi: int = 110) -> Path:
    """Write `fig` as a PNG atomically: a run directory's loss.png planted as a symbolic link
    is replaced, never written through (savefig opens the link's target)."""
    from io import BytesIO

    from rnnlab import io

    buffer = BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    io.atomic_write_bytes(path, buffer.getvalue())
    return Path(path)


LOG_RANGE = (1e-150, 1e150)
"""What a log axis draws: over hundreds of decades matplotlib's ticks step by tens of
decades past the data, and a tick at 10^309 is inf (an OverflowError in its tick code:
a 1..1e280 axis fails, one within 1e±150 draws), so values beyond, such as an exploding
gradient's, are left out like the non-finite ones; the title says how many."""


def _positive(a: np.ndarray) -> np.ndarray:
    """Values for a log axis: those outside LOG_RANGE (non-positive, non-finite, or within a
    few decades of float64's limits) become NaN, not drawn."""
    a = np.asarray(a, dtype=np.float64)
    lo, hi = LOG_RANGE
    return np.where(np.isfinite(a) & (a >= lo) & (a <= hi), a, np.nan)


def _left_out(*arrays: np.ndarray) -> str:
    """A title's note of the finite values beyond LOG_RANGE that a log axis leaves out."""
    lo, hi = LOG_RANGE
    n = sum(int(np.sum(np.isfinite(a) & ((a > hi) | ((a > 0) & (a < lo))))) for a in
            (np.asarray(x, dtype=np.float64) for x in arrays))  # fmt: skip
    return f"\n({n} values beyond {lo:.0e}..{hi:.0e} not drawn)" if n else ""


def _log10(a: np.ndarray) -> np.ndarray:
    a = _positive(a)
    return np.log10(a, out=np.full(a.shape, np.nan), where=np.isfinite(a))


def _undrawn(label: str, values: np.ndarray, what: str = "lags") -> str:
    """`label` with what a log axis leaves out of `values` said: a zero (no gradient reaches
    back that far, a zero W_hh) or a non-finite value (an overflow) is no point on it, and
    a line of them alone was a blank panel whose legend named the line as if drawn."""
    v = np.asarray(values, dtype=np.float64)
    notes = []
    for count, said in ((int(np.sum(v == 0)), "0"), (int(np.sum(~np.isfinite(v))), "not finite")):
        if count:
            notes.append(f"{said} at all {v.size} {what}" if count == v.size
                         else f"{said} at {count} of {v.size} {what}")  # fmt: skip
    return label + (f" ({'; '.join(notes)}: not drawn)" if notes else "")


def _lag_axis(ax, lags: np.ndarray) -> None:
    """Whole lags on the x axis, over the lags computed (one lag alone spanned ±0.04)."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlim(float(lags[0]) - 0.5, float(lags[-1]) + 0.5)


def _fitted(fit, lags: np.ndarray, values: np.ndarray) -> np.ndarray | None:
    """The fitted line 10^(a + slope·lag) through the points the fit used."""
    if fit.trend == "undetermined":
        return None
    keep = np.isfinite(values) & (values > 0)
    a = np.mean(np.log10(values[keep])) - fit.slope * np.mean(lags[keep])
    with np.errstate(over="ignore", under="ignore"):  # (out of LOG_RANGE: not drawn)
        return _positive(10.0 ** (a + fit.slope * lags))


def plot_lag_profile(result: LagProfile, path) -> Path:
    """log ‖∂L/∂h_k‖ against the lag: the batch mean (thick), each sequence (thin), the fit."""
    path = _check(result, (LagProfile,), "a LagProfile (from gradient_by_lag)", path)
    fig = new_figure(6.4, 4.2)
    ax = fig.add_subplot()
    lags = result.lags.astype(np.float64)
    for j, name in enumerate(result.names):
        (line,) = ax.plot(lags, _positive(result.mean[j]), lw=2,
                          marker="o" if lags.size < 30 else None, ms=3,
                          label=_undrawn(name, result.mean[j]))  # fmt: skip
        for seq in result.per_sequence[j][:16]:
            ax.plot(lags, _positive(seq), lw=0.5, alpha=0.3, color=line.get_color())
        fitted = _fitted(result.fits[j], lags, result.mean[j])
        if fitted is not None:
            ax.plot(
                lags,
                fitted,
                ls="--",
                lw=1,
                color=line.get_color(),
                label=f"{name} fit: ×{result.fits[j].factor_per_step:.3g}/step",
            )
    ax.set_yscale("log")
    _lag_axis(ax, lags)
    ax.set_xlabel("lag (steps before the end of the pass)")
    ax.set_ylabel(r"$\|\partial L / \partial h_k\|$")
    ax.set_title(f"gradient against the lag (loss: {result.loss})"
                 + _left_out(result.mean, *[s[:16] for s in result.per_sequence]))  # fmt: skip
    ax.legend(fontsize=8)
    return _save(fig, path)


def _map_cells(result: GradientMap, j: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(log10 of every finite positive entry of map j, else NaN; the entries exactly 0 where
    the loss reaches the state: the gradient vanished, ZERO_COLOR; the entries no path
    reaches: states after the loss step, white like those no sequence has).

    The map's colour is linear in log10, so unlike a log axis (LOG_RANGE) it draws every
    finite value, 1e-300 and 1e300 alike. A 0 at a lag below 0 (the state after the loss
    step, before it in reverse) is the network's causality, not a vanished gradient, unless
    some such entry is not 0 (below the top of a bidirectional stack a loss reaches both
    sides): then every 0 is one that vanished."""
    norms = np.asarray(result.norms[j], dtype=np.float64)
    logs = np.log10(norms, out=np.full(norms.shape, np.nan),
                    where=np.isfinite(norms) & (norms > 0))  # fmt: skip
    counted = result.counts > 0
    ahead = (result.lags(j) < 0) & counted
    reached = ~ahead | bool(np.any((norms != 0) & ahead))  # (NaN != 0: an overflow reaches)
    zero = (norms == 0) & counted
    return logs, zero & reached, zero & ~reached


def plot_gradient_map(result: GradientMap, path) -> Path:
    """One image per (layer, direction): log10 ‖∂L_t/∂h_k‖, rows t, columns k; the entries
    that overflow float64 in red (OVERFLOW_COLOR, labelled "overflow"), said in the title
    with the fit's leaving them out, never white like a 0 or an entry no sequence has; those
    exactly 0 where the loss reaches the state grey (ZERO_COLOR, "vanished"), as
    lag-history.png draws them; white what no gradient path or no sequence reaches."""
    from matplotlib.colors import ListedColormap

    path = _check(result, (GradientMap,), "a GradientMap (from gradient_map)", path)
    J = len(result.names)
    fig = new_figure(4.2 * J, 3.8)
    axes = fig.subplots(1, J, squeeze=False)[0]
    for j, ax in enumerate(axes):
        logs, vanished, unreached = _map_cells(result, j)
        seen = logs[np.isfinite(logs)]
        # one value everywhere (a gradient of 1 on the diagonal alone): a colour scale of
        # its own rounding, ±5e-17, which matplotlib labels by an offset; a decade around it
        flat = seen.size and seen.max() - seen.min() < 1e-9
        middle = float(seen.mean()) if flat else 0.0
        im = ax.imshow(
            logs,
            origin="lower",
            aspect="auto",
            interpolation="nearest",
            cmap="viridis",
            **({"vmin": middle - 0.5, "vmax": middle + 0.5} if flat else {}),
        )
        over = result.overflow[j]
        for cells, color, label in ((vanished, ZERO_COLOR, "zero"),
                                    (over, OVERFLOW_COLOR, "overflow")):  # fmt: skip
            if cells.any():
                ax.imshow(np.ma.masked_array(np.ones(cells.shape), ~cells), origin="lower",
                          aspect="auto", interpolation="nearest",
                          cmap=ListedColormap([color]), label=label)  # fmt: skip
        ax.set_xlabel("state step k")
        ax.set_ylabel("loss step t")
        n, grey, size = int(over.sum()), int(vanished.sum()), logs.size
        nowhere, nothing = int(unreached.sum()), int(np.sum(result.counts == 0))
        why = "; ".join(w for w, c in (("no path from $L_t$ to $h_k$", nowhere),
                                       ("no sequence", nothing)) if c)  # fmt: skip
        ax.set_title(result.names[j]
                     + (f"\n(grey: {grey} of {size} cells exactly 0: vanished)" if grey else "")
                     + (f"\n(white: {nowhere + nothing} of {size} cells: {why})" if why else "")
                     + (f"\n(red: {n} {'cell' if n == 1 else 'cells'} past float64, "
                        "left out of the fit)" if n else ""),
                     fontsize=9)  # fmt: skip
        fig.colorbar(im, ax=ax, label=r"$\log_{10}\|\partial L_t/\partial h_k\|$")
    return _save(fig, path)


def plot_jacobian_bound(result: JacobianProfile, path) -> Path:
    """‖∂s_t/∂s_k‖₂ against the lag, with ∏‖J_i‖₂ and the notes' bound."""
    path = _check(result, (JacobianProfile,), "a JacobianProfile (from jacobian_products)", path)
    fig = new_figure(6.4, 4.2)
    ax = fig.add_subplot()
    lags = result.lags.astype(np.float64)
    s = result.state  # "(h,c)" or "h", as the verdict says
    label = rf"measured $\|\partial {s}_t/\partial {s}_k\|_2$"
    dots = {"marker": "o", "ms": 3} if lags.size < 30 else {}
    ax.plot(lags, _positive(result.measured), lw=2, label=_undrawn(label, result.measured),
            **dots)  # fmt: skip
    ax.plot(lags, _positive(result.product_bound), ls=":",
            label=_undrawn(r"$\prod_i \|J_i\|_2$", result.product_bound))  # fmt: skip
    if result.elman:  # the notes' bound of an Elman cell
        ax.plot(
            lags,
            _positive(result.bound),
            ls="--",
            label=_undrawn(rf"$(\|W_{{hh}}\|_2 \max|\phi'|)^{{t-k}}$, "
                           rf"{result.alpha:.3g}$\times${result.beta:.3g}", result.bound),
        )
    ax.set_yscale("log")
    _lag_axis(ax, lags)
    # (a reverse direction's states k lie after t: its lag is k − t)
    reverse = result.name.endswith("_reverse")
    ax.set_xlabel("lag k − t (reverse: k after t)" if reverse else "lag t − k")
    ax.set_ylabel("spectral norm")
    ax.set_title(f"{result.name}, sequence {result.sample}, t = {result.t}"
                 + _left_out(result.measured, result.product_bound))  # fmt: skip
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_spectrum(result: Spectrum | SpectrumHistory, path) -> Path:
    """A Spectrum: singular values and eigenvalues (with the unit circle) of every block.
    A SpectrumHistory: ‖W‖₂ and ρ of every block against the training step."""
    path = _check(
        result,
        (Spectrum, SpectrumHistory),
        "a Spectrum or SpectrumHistory (from recurrent_spectrum or spectrum_over_checkpoints)",
        path,
    )
    if isinstance(result, SpectrumHistory):
        fig = new_figure(6.4, 4.2)
        ax = fig.add_subplot()
        for k, name in enumerate(result.names):
            (line,) = ax.plot(result.steps, result.spectral_norms[:, k], label=rf"{name} $\|W\|_2$")
            ax.plot(
                result.steps,
                result.spectral_radii[:, k],
                ls="--",
                color=line.get_color(),
                label=rf"{name} $\rho$",
            )
        ax.axhline(1.0, color="gray", lw=0.8)
        ax.set_xlabel("training step")
        ax.set_ylabel(r"$\|W\|_2$ (solid), spectral radius $\rho$ (dashed)")
        ax.legend(fontsize=7)
        return _save(fig, path)
    fig = new_figure(10, 4.2)
    ax1, ax2 = fig.subplots(1, 2)
    theta = np.linspace(0, 2 * np.pi, 200)
    ax2.plot(np.cos(theta), np.sin(theta), color="gray", lw=0.8)
    for blk in result.blocks:
        ax1.plot(
            np.arange(1, blk.singular_values.size + 1),
            blk.singular_values,
            marker=".",
            label=blk.name,
        )
        ax2.scatter(blk.eigenvalues.real, blk.eigenvalues.imag, s=10, label=blk.name)
    ax1.axhline(1.0, color="gray", lw=0.8)
    ax1.set_xlabel("index")
    ax1.set_ylabel("singular value")
    ax1.legend(fontsize=7)
    ax2.set_aspect("equal")
    ax2.set_xlabel("Re λ")
    ax2.set_ylabel("Im λ")
    ax2.set_title("eigenvalues and the unit circle")
    return _save(fig, path)


def plot_gate_saturation(result: GateSaturation, path) -> Path:
    """Per (layer, direction): the fraction of each gate near the top of its range (solid)
    and near the bottom (dashed), the thresholds in the gate's own values (a tanh's
    a > 2·high − 1 and a < 2·low − 1)."""
    path = _check(result, (GateSaturation,), "a GateSaturation (from gate_saturation)", path)
    J = len(result.names)
    fig = new_figure(6.4, 3.0 * J)
    axes = fig.subplots(J, 1, squeeze=False)[:, 0]
    t = np.arange(result.low_fraction.shape[2])
    for j, ax in enumerate(axes):
        for g, gate in enumerate(result.gate_names):
            low, high = result.thresholds(g)
            (line,) = ax.plot(t, result.high_fraction[j, g], label=f"{gate} > {high:.3g}")
            ax.plot(
                t,
                result.low_fraction[j, g],
                ls="--",
                color=line.get_color(),
                label=f"{gate} < {low:.3g}",
            )
        ax.set_ylim(-0.02, 1.02)
        ax.set_ylabel("fraction")
        ax.set_title(result.names[j])
        ax.legend(fontsize=7, ncol=2)
    axes[-1].set_xlabel("time step")
    return _save(fig, path)


def plot_loss_slice(result: LossSlice, path) -> Path:
    """The loss against α, with the steepest jump marked."""
    path = _check(result, (LossSlice,), "a LossSlice (from loss_slice)", path)
    fig = new_figure(6.4, 4.2)
    ax = fig.add_subplot()
    losses = np.where(np.isfinite(result.losses), result.losses, np.nan)
    ax.plot(result.alphas, losses, marker=".", ms=3)
    a, b = result.jump_between
    if result.cliff:
        ax.axvspan(a, b, color="red", alpha=0.3, label="cliff")
        ax.legend()
    ax.set_xlabel(f"α along {result.direction}")
    ax.set_ylabel("loss")
    return _save(fig, path)


def plot_iterated_map(result: IteratedMap, path) -> Path:
    """One unit: the map with its fixed points and a cobweb, then basins and the gain against
    the starting point. Two units: the basin map with the fixed points, and the gain."""
    path = _check(result, (IteratedMap,), "an IteratedMap (from iterated_map)", path)
    fig = new_figure(11, 4.2)
    ax1, ax2 = fig.subplots(1, 2)
    style = {"stable": "o", "unstable": "x", "saddle": "s", "marginal": "d"}
    if result.units == 1:
        h, fh = result.curve
        ax1.plot(h, fh, label=f"{result.phi}(w h + b)")
        ax1.plot(h, h, color="gray", lw=0.8, label="identity")
        w, b = result.W[0, 0], result.b[0]
        for start in (result.axis[len(result.axis) // 3], result.axis[2 * len(result.axis) // 3]):
            x = start
            xs, ys = [x], [x]
            for _ in range(min(result.n_iter, 30)):
                y = float(_phi(result.phi, np.array([w * x + b]))[0])
                xs += [x, y]
                ys += [y, y]
                x = y
            ax1.plot(xs, ys, lw=0.6, color="tab:red")
        for p, kind in zip(result.fixed_points[:, 0], result.kinds, strict=True):
            ax1.plot(
                [p],
                [p],
                style[kind],
                color="black",
                ms=7,
                mfc="black" if kind == "stable" else "none",
            )
        ax1.set_xlabel(r"$h_{t-1}$")
        ax1.set_ylabel(r"$h_t$")
        ax1.legend(fontsize=8)
        ax2.plot(result.axis, result.log10_gain, color="tab:purple")
        ax2.set_xlabel(r"$h_0$")
        ax2.set_ylabel(r"$\log_{10}|\partial h_N/\partial h_0|$")
        ax3 = ax2.twinx()
        ax3.step(result.axis, result.basin, where="mid", color="tab:green", lw=0.8)
        ax3.set_ylabel("basin (fixed point index, −1: none)")
    else:
        ext = (result.axis[0], result.axis[-1], result.axis[0], result.axis[-1])
        ax1.imshow(
            result.basin,
            origin="lower",
            extent=ext,
            cmap="tab10",
            interpolation="nearest",
            vmin=-1,
            vmax=9,
        )
        for p, kind in zip(result.fixed_points, result.kinds, strict=True):
            ax1.plot([p[0]], [p[1]], style[kind], color="white", ms=7, mec="black")
        ax1.set_xlabel(r"$h_1$")
        ax1.set_ylabel(r"$h_2$")
        ax1.set_title("basins of attraction")
        im = ax2.imshow(
            np.where(np.isfinite(result.log10_gain), result.log10_gain, np.nan),
            origin="lower",
            extent=ext,
            cmap="magma",
            interpolation="nearest",
        )
        fig.colorbar(im, ax=ax2, label=r"$\log_{10}\|\partial h_N/\partial h_0\|$")
        ax2.set_title("gain after N steps")
    return _save(fig, path)


def plot_attention(examples: list, path) -> Path:
    """The attention weights of an encoder–decoder, one panel per example: rows the output
    characters (or words), columns the source (characters, or an image's columns drawn above it).
    `examples`: (source labels or image columns (S, 8), output labels, weights (T, S)), as
    rnnlab.tasks.transduction.Transduction.attention_examples gives them."""
    if not isinstance(examples, list) or not examples:
        _checks.fail("examples", "a non-empty list of (source, output, weights)",
                     _checks.describe(examples))  # fmt: skip
    if not isinstance(path, (str, Path)) or Path(path).suffix.lower() != ".png":
        _checks.fail("path", "a file path ending in .png", _checks.describe(path))
    images = not isinstance(examples[0][0], list)
    n = len(examples)
    T = max(len(a[1]) for a in examples)
    height = 1.2 + 0.16 * T + (1.2 if images else 0.0)
    fig = new_figure(min(4.5 * n, 20.0), height)
    fig.set_layout_engine("none")  # constrained layout measures every tick label: seconds
    rows = 2 if images else 1
    margins = dict(left=0.05, right=0.99, bottom=0.6 / height, top=1 - 0.3 / height,
                   wspace=0.2, hspace=0.15)  # fmt: skip
    axes = fig.subplots(rows, n, squeeze=False, gridspec_kw=margins,
                        height_ratios=[1, 4] if images else None)  # fmt: skip
    for j, (src, out, w) in enumerate(examples):
        ax = axes[-1][j]
        ax.imshow(w, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto", interpolation="nearest")
        ax.set_yticks(range(len(out)), out, fontsize=6)
        if images:
            img = axes[0][j]
            img.imshow(np.asarray(src).T, cmap="gray_r", aspect="auto", interpolation="nearest")
            img.set_xticks([])
            img.set_yticks([])
            ax.set_xlabel("image column", fontsize=7)
            ax.tick_params(axis="x", labelsize=6)
        else:
            ax.set_xticks(range(len(src)), ["␣" if c == " " else c for c in src], fontsize=6)
            ax.set_xlabel("source", fontsize=7)
        ax.set_ylabel("output", fontsize=7)
        ax.set_title(_output_text([c for c in out if c != "</s>"])[:40], fontsize=8)
    return _save(fig, Path(path))


def _output_text(labels: list[str]) -> str:
    """The output as text from its labels, joined by their codec: characters, or words
    (caption's decoder)."""
    from rnnlab.tasks.codecs import CharCodec, WordCodec

    codec = CharCodec if all(len(c) <= 1 for c in labels) else WordCodec
    return codec.join(labels)


def _log_band(values: np.ndarray) -> tuple[float, float] | None:
    """What a log axis draws of `values`: LOG_RANGE where any of them lies in it, else
    nothing (None). Past it matplotlib's log ticks overflow ("cannot convert float infinity
    to integer": a loss of 1e297), and an axis made log with nothing on it fails ("Data
    cannot be log-scaled": every step of an lr of 1e-300)."""
    v = np.asarray(values, dtype=np.float64)
    lo, hi = LOG_RANGE
    with np.errstate(invalid="ignore"):
        return LOG_RANGE if np.any(np.isfinite(v) & (v >= lo) & (v <= hi)) else None


def _in_band(values: np.ndarray, band: tuple[float, float] | None) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64)
    if band is None:
        return np.zeros(v.shape, bool)
    with np.errstate(invalid="ignore"):
        return np.isfinite(v) & (v >= band[0]) & (v <= band[1])


def _log_if_wide(ax, losses: np.ndarray) -> tuple[np.ndarray, str, tuple[float, float] | None]:
    """A log y axis when the positive losses span more than a factor of 100 (and a log axis
    can draw some of them, `_log_band`); returns the values to draw (NaN: not drawn), a note
    of those left out, and the band drawn (None on a linear axis). An exploding model's loss
    of 1e297 made the log ticks overflow, and rnnlab gradflow's cliff a traceback."""
    v = losses[np.isfinite(losses) & (losses > 0)]
    band = _log_band(losses)
    if (band is not None and v.size == np.isfinite(losses).sum() and v.size
            and v.max() > 100 * v.min()):  # fmt: skip
        ax.set_yscale("log")
        keep = _in_band(losses, band)
        left = int(np.sum(np.isfinite(losses) & ~keep))
        note = f"\n({left} values beyond {band[0]:.0e}..{band[1]:.0e} not drawn)" if left else ""
        return np.where(keep, losses, np.nan), note, band
    return np.where(np.isfinite(losses), losses, np.nan), "", None


def plot_cliff(data, path) -> Path:
    """Three panels: the loss along the hidden bias, along a random direction, and along −g
    with the clipped and unclipped SGD steps marked."""
    bias_slice, random_slice, step_slice, clip, per_bias, norm_theta = data
    fig = new_figure(14, 4.0)
    axes = fig.subplots(1, 3)
    for ax, s, scale, label in (
        (axes[0], bias_slice, per_bias, "shift of every entry of bias_hh_l0"),
        (axes[1], random_slice, 1.0 / norm_theta, r"$\alpha/\|\theta\|$"),
    ):
        a = s.alphas * scale
        drawn, note, _ = _log_if_wide(ax, s.losses)
        ax.plot(a, drawn, marker=".", ms=3)
        if s.cliff:
            lo, hi = s.jump_between
            ax.axvspan(lo * scale, hi * scale, color="red", alpha=0.3, label="cliff")
            ax.legend(fontsize=8)
        ax.axvline(0.0, color="gray", lw=0.8)
        ax.set_xlabel(label)
        ax.set_ylabel("loss")
        ax.set_title(f"along {s.direction}" + note)
    ax = axes[2]
    note = ""
    if step_slice is not None:
        # both axes are log: what a log axis cannot draw (a step of 1e200 beside one of
        # 0.01, a loss of 1e297) is left out and said (_log_band)
        drawn, note, y_band = _log_if_wide(ax, step_slice.losses)
        a = step_slice.alphas[1:]
        x_band = _log_band(a)
        keep = _in_band(a, x_band)
        if keep.any():
            ax.plot(a[keep], drawn[1:][keep])
        if int(np.sum(~keep)):
            note += f"\n({int(np.sum(~keep))} distances not drawn)"
        on_y = (lambda v: bool(_in_band(np.array([v]), y_band)[0])) if y_band else math.isfinite
        if on_y(step_slice.base_loss):
            ax.axhline(step_slice.base_loss, color="gray", lw=0.8, label="loss at θ")
        lines = 0
        for at, value, color, which in (
            (clip.clipped_step_norm, clip.loss_clipped, "tab:green", "clipped"),
            (clip.unclipped_step_norm, clip.loss_unclipped, "tab:red", "unclipped"),
        ):
            if not _in_band(np.array([at]), x_band)[0]:
                note += f"\n({which} step {at:.3g}: not drawn)"
                continue
            ax.axvline(at, color=color, ls="--", label=f"{which} step {at:.3g}")
            lines += 1
            if value is not None and on_y(value):
                ax.plot([at], [value], "o", color=color)
        if keep.any() or lines:  # (a log axis with nothing on it fails)
            ax.set_xscale("log")
        ax.legend(fontsize=8)
    ax.set_xlabel("distance along −∇L")
    ax.set_ylabel("loss")
    ax.set_title(
        "SGD step: the gradient overflowed"
        if clip is None
        else f"SGD step, lr {clip.lr:g}, ‖g‖ = {clip.grad_norm:.3g}, max_norm {clip.max_norm:g}"
        + note
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_png(fig, path)


def plot_curves(
    path: Path, panels: list[tuple[str, list[tuple[Any, ...]], bool]]
) -> Path:
    """One row of panels (title, [(label, steps, values[, line style])], log y axis); a line
    with a style of its own ("--": a reference, such as a baseline) is drawn without markers."""
    fig = new_figure(4.6 * len(panels), 3.6)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (title, lines, log) in zip(axes, panels, strict=True):
        said = False  # (a label that says what is not drawn: shown in a legend)
        for label, s, v, *style in lines:
            if log:
                zeros = int(np.sum(v == 0))
                if zeros:  # a log axis cannot show them: say so in the legend
                    label += " (0 at every step)" if zeros == v.size else f" ({zeros} zeros)"
                # (past LOG_RANGE matplotlib's log ticks overflow: a norm of 1e300 in a
                # hand-edited log drew with "RuntimeWarning: overflow encountered in exp")
                far = int(np.sum(np.isfinite(v) & (v > 0))) - int(np.sum(np.isfinite(_positive(v))))
                if far:
                    lo, hi = LOG_RANGE
                    label += f" ({far} beyond {lo:.0e}..{hi:.0e}: not drawn)"
                said = said or bool(zeros or far)
                v = _positive(v)
            if style:
                ax.plot(s, v, style[0], lw=1, label=label)
            else:
                ax.plot(s, v, lw=1, marker="o" if len(s) < 30 else None, ms=3, label=label)
        if log:
            ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_title(title, fontsize=10)
        # (the lines' own labels were searched for the zeros' note, which is added to a
        # copy: a single line's "(3 zeros)" was never shown)
        if len(lines) > 1 or said:
            ax.legend(fontsize=7)
    return save_png(fig, path)


OVERFLOW_COLOR = "tab:red"
"""What the figures of a training log draw an overflow in: a colour of its own, not one of
viridis' values, so that a gradient past float64 is never read as a large finite norm."""

ZERO_COLOR = "0.6"
"""What lag-history.png draws a norm of exactly 0 in (the gradient vanished to nothing: a
dead ReLU, a zero W_hh, an underflow): a grey of its own, neither one of viridis' values
(which would read as a small finite norm) nor white (a lag no sequence reaches: no data)."""


def _row_edges(steps: np.ndarray) -> np.ndarray:
    """Edges of one row per step, halfway between neighbours (±0.5 around a single step)."""
    if len(steps) == 1:
        return np.array([steps[0] - 0.5, steps[0] + 0.5])
    return np.concatenate([
        [steps[0] - (steps[1] - steps[0]) / 2],
        (steps[1:] + steps[:-1]) / 2,
        [steps[-1] + (steps[-1] - steps[-2]) / 2],
    ])  # fmt: skip


def plot_lag_history(path: Path, grads: list[dict]) -> Path:
    """Per (layer, direction): log10 ‖∂L/∂h_k‖ by lag (x) and training step (y), and the
    fitted factor per step against the step.

    A record whose gradient overflowed float64 is drawn, not skipped: its lags up to the
    overflow in colour, the overflowing ones red; a record whose states overflowed (no
    profile) is a hatched red band across its row; the factor panel has a dashed red line
    at every step that overflowed; each labelled "overflow" in the legend. The log holds None
    there, which is never drawn as a value (white: a lag no sequence of the batch reaches).
    A norm of exactly 0 (no place on a log scale) is grey, labelled "zero", so that a
    gradient that vanished to nothing is not read as a lag with no data; the legend names
    both.
    """
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    from rnnlab.diagnostics.training import lag_history

    history = lag_history(grads)
    if history is None:
        _checks.fail("grads", 'gradient records with "lags" or a "lag_overflow"',
                     "none among " + _checks.describe(grads))  # fmt: skip
    steps, names = history.steps, history.names
    edges = _row_edges(steps)
    fig = new_figure(4.4 * (max(len(names), 1) + 1), 4.2)
    axes = fig.subplots(1, max(len(names), 1) + 1, squeeze=False)[0]
    states = np.nonzero(history.states_overflow)[0]
    panels: list[str | None] = list(names) or [None]  # (None: no profile at any step)
    for ax, name in zip(axes, panels, strict=False):
        handles = []
        if name is not None and history.norms[name].shape[1]:  # (0: no record has norms)
            grid = history.norms[name]
            x_edges = np.arange(grid.shape[1] + 1) - 0.5
            logs = np.log10(grid, out=np.full(grid.shape, np.nan),
                            where=np.isfinite(grid) & (grid > 0))  # fmt: skip
            if np.isfinite(logs).any():  # (none: every record overflowed; no colour scale)
                im = ax.pcolormesh(x_edges, edges, logs, cmap="viridis", shading="flat")
                fig.colorbar(im, ax=ax, label=r"$\log_{10}\|\partial L/\partial h_k\|$")
            over = history.overflow[name]
            zero = grid == 0  # (NaN, a None of the log, is not 0)
            if zero.any():
                ax.pcolormesh(x_edges, edges, np.ma.masked_array(np.ones(zero.shape), ~zero),
                              cmap=ListedColormap([ZERO_COLOR]), shading="flat",
                              label="zero")  # fmt: skip
                handles.append(Patch(color=ZERO_COLOR, label=r"$\|\partial L/\partial h_k\|$ "
                                     "exactly 0: vanished"))  # fmt: skip
                # white, beside the grey, is named too: no data, not a vanished gradient
                if (np.isnan(grid) & ~over & ~history.states_overflow[:, None]).any():
                    handles.append(Patch(facecolor="white", edgecolor="0.3", lw=0.5,
                                         label="white: a lag no sequence reaches (no data)"))
            if over.any():
                ax.pcolormesh(x_edges, edges, np.ma.masked_array(np.ones(over.shape), ~over),
                              cmap=ListedColormap([OVERFLOW_COLOR]), shading="flat",
                              label="overflow")  # fmt: skip
                # a few red cells at the end of a long profile are a sliver: a marker at the
                # first overflowing lag of each row shows where, at any length
                rows = np.nonzero(over.any(axis=1))[0]
                ax.plot(over[rows].argmax(axis=1), steps[rows], ls="none", marker="D", ms=6,
                        color=OVERFLOW_COLOR, mec="black", mew=0.8, clip_on=False,
                        label="overflow: first lag")  # fmt: skip
                handles.append(Patch(color=OVERFLOW_COLOR,
                                     label=r"overflow: $\|\partial L/\partial h_k\|$ past float64"
                                     " (◆ its first lag)"))
            ax.set_xlabel("lag")
        for i in states:
            ax.axhspan(edges[i], edges[i + 1], facecolor="none", edgecolor=OVERFLOW_COLOR,
                       hatch="xx", lw=0, label="overflow")  # fmt: skip
        if states.size:
            handles.append(Patch(facecolor="none", edgecolor=OVERFLOW_COLOR, hatch="xx",
                                 label="overflow: the states past float64, no profile"))
        if name is None:
            ax.set_ylim(edges[0], edges[-1])
            ax.set_xticks([])
            ax.text(0.5, 0.5, "no lag profile:\nthe recurrent states overflowed\nfloat64 "
                    "at every logged step", transform=ax.transAxes, ha="center", va="center",
                    fontsize=9, bbox={"facecolor": "white", "edgecolor": "none"})  # fmt: skip
        if handles:
            ax.legend(handles=handles, fontsize=7, loc="upper center",
                      bbox_to_anchor=(0.5, -0.14))  # fmt: skip
        ax.set_ylabel("training step")
        ax.set_title(name or "recurrent layer")
    ax = axes[-1]
    for name in names:
        ax.plot(steps, history.factors[name], marker="o", ms=3, label=name)
    for j, at in enumerate(steps[history.overflowed]):
        ax.axvline(at, color=OVERFLOW_COLOR, ls="--", lw=1,
                   label="overflow (float64)" if j == 0 else "_overflow")  # fmt: skip
    ax.axhline(1.0, color="gray", lw=0.8)
    if not any(np.isfinite(history.factors[n]).any() for n in names):
        ax.text(0.5, 0.5, "no fitted factor at any step", transform=ax.transAxes,
                ha="center", va="center", fontsize=9)  # fmt: skip
    ax.set_xlabel("training step")
    ax.set_ylabel("fitted factor per step of lag (1: flat)")
    ax.legend(fontsize=7)
    return save_png(fig, path)
