"""The analyses of `rnnlab gradflow`, each run on a whole subject (rnnlab.diagnostics.subjects):
lag, map, jacobian, spectrum, gates, cliff and dynamics. Each gives an `Outcome`: a compact
summary for summary.json, one verdict line, the full results and the figures to draw.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rnnlab import _checks, io
from rnnlab import diagnostics as dg
from rnnlab.cells import ElmanCell
from rnnlab.diagnostics._common import json_value
from rnnlab.diagnostics.gates import unreadable
from rnnlab.diagnostics.landscape import UNDETERMINED
from rnnlab.diagnostics.model import (
    OutputOverflow,
    StateOverflow,
    fit_summary,
    float64_model,
    output_gradient,
    recurrent_io,
    split_model,
    task_loss,
)
from rnnlab.diagnostics.plots import plot_cliff
from rnnlab.diagnostics.spectrum import cell_gate_names
from rnnlab.diagnostics.subjects import Subject, cell_name

ANALYSES = ("lag", "map", "jacobian", "spectrum", "gates", "cliff", "dynamics")
LOSSES = ("auto", "task", "last", "all")
CLIFF_POINTS = 81


def applicable(subject: Subject) -> dict[str, str]:
    """{analysis: ""} for those that apply to the subject, {analysis: why not} otherwise."""
    if subject.model is None:
        return {
            a: ("" if a == "dynamics" else "the dynamics source is a bare map, not a model")
            for a in ANALYSES
        }
    _, layer = split_model(subject.model)
    why = dict.fromkeys(ANALYSES, "")
    cell = layer.cell
    why["gates"] = unreadable(cell)
    if not (isinstance(cell, ElmanCell) and cell.nonlinearity == "tanh" and layer.hidden_size <= 2):
        why["dynamics"] = (
            f"the iterated map needs a tanh RNN with 1 or 2 units; this is a "
            f"{layer.cell.name} layer with {layer.hidden_size} units"
        )
    elif layer.num_layers > 1 or layer.bidirectional:
        # The map h ← tanh(W_hh h + b) with the input at zero is one layer's in one direction;
        # a layer above the first gets the one below's states as input, which are not zero.
        shape = [f"has {layer.num_layers} layers"] if layer.num_layers > 1 else []
        shape += ["is bidirectional"] if layer.bidirectional else []
        why["dynamics"] = (
            "the iterated map (input at zero) is of one layer in one direction; this RNN "
            + " and ".join(shape)
        )
    around = [f"proj_size={layer.proj_size}"] if layer.proj_size else []
    around += [f"zoneout={layer.zoneout}"] if any(layer.zoneout) else []
    if around:  # the one-step analyses differentiate the cell's step alone
        for name in ("dynamics", "jacobian"):
            why[name] = why[name] or (
                f"the one-step map of a layer with {', '.join(around)} is not built yet"
            )
    return why


def _reference_ratio(norms: np.ndarray) -> tuple[int | None, float | None]:
    """(the first lag whose norm differs from the lag-0 norm by 10x or more, max/min over
    the lags where it is not 0). A norm of exactly 0 (no gradient reaches that far back: a
    dead ReLU, a W_hh of zeros) is further off than any factor."""
    ok = np.isfinite(norms) & (norms > 0)
    if not ok[:1].all():  # (no lag-0 value to be off from)
        return None, None
    logs = np.log10(norms[ok])
    lags = np.nonzero(ok)[0]
    far = [int(lags[i]) for i in np.nonzero(np.abs(logs - logs[0]) >= 1.0)[0][:1]]
    far += [int(k) for k in np.nonzero(np.isfinite(norms) & (norms == 0))[0][:1]]
    spread = float(10.0 ** (logs.max() - logs.min())) if ok.sum() >= 2 else None
    return (min(far) if far else None), spread


def lag_summary(profile: dg.LagProfile) -> dict:
    """Per (layer, direction): the mean norm by lag, the fitted factor per step, the first lag
    at which the norm is 10x off its lag-0 value (or 0), max/min over the lags where it is
    finite and not 0, the lags where it is exactly 0 and those where it overflows float64
    (null in "norms", as a lag no sequence reaches is: "overflow_lags" tells them apart)."""
    reached = profile.lags < int(np.max(profile.lengths))  # (longer lags: no sequence has them)
    out = {}
    for j, name in enumerate(profile.names):
        norms = profile.mean[j]
        lag10, spread = _reference_ratio(norms)
        out[name] = {
            "norms": norms,
            **fit_summary(profile.fits[j]),
            "lag_to_10x": lag10,
            "max_over_min": spread,
            "zero_lags": [int(k) for k in np.nonzero(np.isfinite(norms) & (norms == 0))[0]],
            "overflow_lags": [int(k) for k in np.nonzero(~np.isfinite(norms) & reached)[0]],
        }
    return json_value(out)


def _lag_verdict(profile: dg.LagProfile, summary: dict) -> str:
    T = len(profile.lags)
    parts = []
    for name, fit in zip(profile.names, profile.fits, strict=True):
        s = summary[name]
        text = f"{name}: " + fit.words("‖∂L/∂h_k‖")
        zeros, overflows = s["zero_lags"], s["overflow_lags"]
        if overflows:  # (null in the summary: said, not left for a gap in "norms")
            text += (f"; overflows float64 at {len(overflows)} of the {T} lags, from lag "
                     f"{overflows[0]} (exploding)")  # fmt: skip
        if zeros:
            text += (f"; exactly 0 at {len(zeros)} of the {T} lags, from lag {zeros[0]} "
                     "(no gradient reaches back that far)")  # fmt: skip
        if s["max_over_min"] is not None:
            where = (
                f"10x off its lag-0 value by lag {s['lag_to_10x']}"
                if s["lag_to_10x"] is not None
                else "never 10x off its lag-0 value"
            )
            over = {
                (False, False): f"over lags 0–{T - 1}",
                (True, False): "over the lags where it is not 0",
                (False, True): "over the lags where it is finite",
                (True, True): "over the lags where it is finite and not 0",
            }[bool(zeros), bool(overflows)]
            text += f"; {where}, max/min {over} = {s['max_over_min']:.3g}"
        parts.append(text)
    return "; ".join(parts)


def one_line(text: str) -> str:
    """A verdict of several lines as one, its lines joined by "; "."""
    return "; ".join(line for line in text.splitlines() if line)


def _loss_for(subject: Subject, loss: str) -> str:
    if loss != "auto":
        return loss
    from rnnlab.modules import LastStep

    modules = subject.trained().model.modules
    return "task" if any(isinstance(m, LastStep) for m in modules) else "last"


@dataclass
class Outcome:
    """What one analysis produced: its compact summary, the verdict line, the full results
    (written to <name>.json) and the figures to draw as (draw function, result, file name)."""

    summary: dict
    verdict: str
    details: dict
    figures: list = field(default_factory=list)


def analyse_lag(subject: Subject, loss: str) -> Outcome:
    loss = _loss_for(subject, loss)
    t = subject.trained()
    if loss == "task":
        try:
            x_rec, d_out, _, layer = output_gradient(t.model, t.task, t.x, t.y, subject.lengths)
        except StateOverflow as e:
            return _overflowed("lag_profile", {"loss": loss, "layers": None}, e)
        except OutputOverflow as e:  # (the states are finite: the layer alone can be read)
            return _overflowed("lag_profile", {"loss": loss, "layers": None}, e, (
                f"{e} even in float64, so the task's loss has no gradient to follow back "
                "(exploding: a smaller W_hh, or --loss last to see the recurrent layer alone)"
            ))  # fmt: skip
        with np.errstate(over="ignore", invalid="ignore"):  # (past 1e308: overflow_lags)
            prof = dg.gradient_by_lag(layer, x_rec, subject.lengths, d_output=d_out)
        prof.loss = "task"
    else:
        try:
            _, _, layer, x_rec = recurrent_io(t.model, t.x, subject.lengths, finite_states=True)
        except StateOverflow as e:
            return _overflowed("lag_profile", {"loss": loss, "layers": None}, e)
        with np.errstate(over="ignore", invalid="ignore"):
            prof = dg.gradient_by_lag(layer, x_rec, subject.lengths, loss=loss)
    layers = lag_summary(prof)
    summary = {"loss": loss, "layers": layers}
    return Outcome(
        summary,
        _lag_verdict(prof, layers),
        prof.to_json(),
        [(dg.plot_lag_profile, prof, "lag.png")],
    )


def _overflowed(kind: str, summary: dict, e: OutputOverflow, verdict: str = "") -> Outcome:
    """The outcome of an analysis where float64 overflows: exploding, said as such, with
    nothing measured (a gradient through NaN states reads as 0, i.e. "vanished"); `verdict`
    in place of the states' own words."""
    verdict = verdict or (f"{e}: exploding; no gradient through them can be measured (a "
                          "smaller W_hh or --init-scale)")  # fmt: skip
    summary = {**summary, "overflow": str(e)}
    return Outcome(summary, verdict, {"kind": kind, **summary, "verdict": verdict})


def analyse_map(subject: Subject) -> Outcome:
    t = subject.trained()
    try:
        _, _, layer, x_rec = recurrent_io(t.model, t.x, subject.lengths, finite_states=True)
    except StateOverflow as e:
        return _overflowed("gradient_map", {"layers": None}, e)
    gm = dg.gradient_map(layer, x_rec, subject.lengths)
    layers = {
        name: {
            **fit_summary(fit),
            # (null in map.json's "norms", as an entry no sequence has: "overflow" there marks
            # them, and the verdict says them; the fit leaves them out)
            "overflow_cells": int(gm.overflow[j].sum()),
            "overflow_lags": sorted({int(v) for v in gm.lags(j)[gm.overflow[j]]}),
        }
        for j, (name, fit) in enumerate(zip(gm.names, gm.fits, strict=True))
    }
    return Outcome(
        {"layers": json_value(layers)},
        one_line(gm.verdict()),
        gm.to_json(),
        [(dg.plot_gradient_map, gm, "map.png")],
    )


def analyse_jacobian(subject: Subject, sample: int) -> Outcome:
    t = subject.trained()
    try:
        _, _, layer, x_rec = recurrent_io(t.model, t.x, subject.lengths, finite_states=True)
    except StateOverflow as e:
        return _overflowed("jacobian_products", {"sample": sample, "layers": None}, e)
    layers, details, verdicts, figures = {}, {}, [], []
    for k in range(layer.num_layers):
        for d, sfx in enumerate(layer.directions):
            jp = dg.jacobian_products(
                layer, x_rec, subject.lengths, sample=sample, layer_index=k, direction=d
            )
            layers[jp.name] = {
                **fit_summary(jp.fit),
                "bound": jp.bound_name,
                "bound_factor_per_step": jp.bound_fit.factor_per_step,
                "W_hh_norm": jp.alpha,
                "max_dphi": jp.beta,
                "lags": int(jp.lags[-1]),
                "log10_measured_at_last_lag": jp.log10_measured[-1],
                "log10_bound_at_last_lag": jp.log10_bound[-1],
            }
            details[jp.name] = jp.to_json()
            verdicts.append(one_line(jp.verdict()))  # ("l0, sequence 0, ...": named once)
            figures.append((dg.plot_jacobian_bound, jp, f"jacobian-l{k}{sfx}.png"))
    return Outcome(
        {"sample": sample, "layers": json_value(layers)}, "; ".join(verdicts), details, figures
    )


def _checkpoint_history(subject: Subject, run_dir: Path
                        ) -> tuple[dg.SpectrumHistory | None, list[str]]:  # fmt: skip
    """The spectra at every kept checkpoint of the subject's run (up to its `until_step`, the
    checkpoint --step chose, when given), after the initialisation (step 0) rebuilt from the
    run's seed when no checkpoint of step 0 was kept; and what was left out: an older
    checkpoint that cannot be read is a gap in the history, not the end of the command (the
    analysed weights are the subject's own, read already)."""
    from rnnlab import tasks

    t = subject.trained()
    steps = io.checkpoint_steps(run_dir)
    if subject.until_step is not None:
        steps = [s for s in steps if s <= subject.until_step]
    pairs, unread = [], []
    if 0 not in steps:
        init = tasks.build_model(t.spec, seed=t.cfg.seed)
        pairs.append((0, init.params))
    for s in steps:
        try:
            pairs.append((s, io.load_checkpoint(run_dir, step=s).model))
        except (ValueError, OSError) as e:  # (io.CheckpointError is a ValueError)
            unread.append(f"step {s} ({' '.join(str(e).split())})")
    gates = cell_gate_names(split_model(subject.model)[1].cell)
    history = dg.spectrum_over_checkpoints(pairs, gates) if len(pairs) > 1 else None
    return history, unread


def analyse_spectrum(subject: Subject) -> Outcome:
    _, layer = split_model(subject.model)
    sp = dg.recurrent_spectrum(layer)
    blocks = {
        b.name: {
            "spectral_norm": b.spectral_norm,
            "spectral_radius": b.spectral_radius,
            "singular_values_top": b.singular_values[:5],
        }
        for b in sp.blocks
    }
    summary: dict = {"blocks": json_value(blocks), "history": None}
    details = {"spectrum": sp.to_json()}
    figures: list[tuple[object, object, str]] = [(dg.plot_spectrum, sp, "spectrum.png")]
    verdict = one_line(sp.verdict())
    if subject.run_dir is not None:
        hist, unread = _checkpoint_history(subject, subject.run_dir)
        if hist is not None:
            summary["history"] = json_value(
                {
                    "steps": hist.steps,
                    "names": hist.names,
                    "spectral_norms": hist.spectral_norms.T,
                    "spectral_radii": hist.spectral_radii.T,
                }
            )
            details["history"] = hist.to_json()
            figures.append((dg.plot_spectrum, hist, "spectrum-history.png"))
            upto = "" if subject.until_step is None else f" up to step {subject.until_step}"
            verdict += f"; during training{upto}: " + one_line(hist.verdict())
        if unread:
            summary["unread_checkpoints"] = unread
            verdict += (f"; left out of the history, {len(unread)} checkpoint(s) that cannot be "
                        f"read: {'; '.join(unread)}")  # fmt: skip
    return Outcome(summary, verdict, details, figures)


def analyse_gates(subject: Subject) -> Outcome:
    t = subject.trained()
    _, _, layer, x_rec = recurrent_io(t.model, t.x, subject.lengths)
    gs = dg.gate_saturation(layer, x_rec, subject.lengths)
    layers = {
        name: {
            gate: {"low": gs.overall_low[j, g], "high": gs.overall_high[j, g]}
            for g, gate in enumerate(gs.gate_names)
        }
        for j, name in enumerate(gs.names)
    }
    return Outcome(
        {"layers": json_value(layers)},
        one_line(gs.verdict()),
        gs.to_json(),
        [(dg.plot_gate_saturation, gs, "gates.png")],
    )


def _task_loss_fn(subject: Subject, model):
    """θ ↦ the task's loss on the batch with `model`'s parameters (a float64 copy of the
    subject's) set to θ; NaN when the output overflows: far along a direction the network
    can diverge."""
    _, task, _, _, x, y = subject.trained()
    x64 = x.astype(np.float64) if x.dtype.kind == "f" else x

    def loss_fn(params: dict[str, np.ndarray]) -> float:
        model.load_state_dict(params)
        with np.errstate(all="ignore"):
            out = model.forward(x64, lengths=subject.lengths).output
        try:
            return task_loss(out, task, x, y, subject.lengths)[0]
        except OutputOverflow:  # inf − inf between neighbours would be a warning: NaN
            return float("nan")

    return loss_fn


def _task_gradient(subject: Subject, model) -> dict[str, np.ndarray] | None:
    """The task loss's gradient by every parameter of `model` (float64), None when the output,
    the loss or the gradient overflows."""
    _, task, _, _, x, y = subject.trained()
    with np.errstate(all="ignore"):
        f = model.forward(x.astype(np.float64) if x.dtype.kind == "f" else x,
                          lengths=subject.lengths)  # fmt: skip
        try:
            _, d = task_loss(f.output, task, x, y, subject.lengths)
            grads = model.backward(f, d).params
        except (OutputOverflow, _checks.NonFiniteError):
            return None
    return grads if all(np.all(np.isfinite(v)) for v in grads.values()) else None


def analyse_cliff(subject: Subject, span: float, lr: float | None, max_norm: float) -> Outcome:
    """Loss slices along the hidden bias and a random direction, and the loss along −g from θ
    to θ − lr·g with the clipped step lr·clip(g) marked."""
    model, _, cfg, _, _, _ = subject.trained()
    r, _ = split_model(model)
    model = float64_model(model)  # the subject's own model is left alone
    theta = {k: v.copy() for k, v in model.params.items()}
    loss_fn = _task_loss_fn(subject, model)
    clip = step_slice = None
    lr = cfg.lr if lr is None else lr
    try:
        bias = f"{r}.bias_hh_l0"
        n_bias = theta[bias].size
        # d = 1/√n on every entry of b_hh, so α = s·√n moves each entry by s ∈ [−span, span].
        alphas = np.linspace(-span, span, CLIFF_POINTS) * math.sqrt(n_bias)
        bias_slice = dg.loss_slice(loss_fn, theta, bias, alphas)
        # ‖d‖ = 1 over every parameter: α up to ±(span/2)·‖θ‖, i.e. ±‖θ‖ for span = 2.
        norm_theta = math.sqrt(
            sum(float(np.sum(v.astype(np.float64) ** 2)) for v in theta.values())
        )
        alphas = np.linspace(-0.5 * span, 0.5 * span, CLIFF_POINTS) * norm_theta
        random_slice = dg.loss_slice(loss_fn, theta, "random", alphas)
        model.load_state_dict(theta)
        grads = _task_gradient(subject, model)
        if grads is not None:
            clip = dg.clipped_vs_unclipped_step(grads, lr, max_norm, loss_fn=loss_fn, params=theta)
        g = 0.0 if clip is None else clip.grad_norm
        if clip is not None and grads is not None and g > 0 and math.isfinite(g):
            # The loss along −g/‖g‖ out to 1.5× the unclipped step, on a log scale of α so the
            # clipped step (lr·η) and the unclipped one (lr·‖g‖) both show.
            far = 1.5 * clip.unclipped_step_norm
            near = min(clip.clipped_step_norm, far / 1.5) / 20.0
            alphas = np.concatenate([[0.0], np.geomspace(near, far, CLIFF_POINTS - 1)])
            direction = {k: -v / g for k, v in grads.items()}
            step_slice = dg.loss_slice(loss_fn, theta, direction, alphas)
            step_slice.direction = "−∇L"
    finally:
        model.load_state_dict(theta)
    summary = {
        "bias": _slice_summary(bias_slice, "per-entry shift", 1.0 / math.sqrt(n_bias)),
        "random": _slice_summary(random_slice, "α / ‖θ‖", 1.0 / norm_theta),
        "clip": None
        if clip is None
        else json_value({k: v for k, v in clip.to_json().items() if k != "kind"}),
        "lr": lr,
        "max_norm": max_norm,
    }
    verdict = (
        f"{_slice_words(bias_slice, 1.0 / math.sqrt(n_bias), 'every entry of bias_hh_l0')}; "
        f"{_slice_words(random_slice, 1.0 / norm_theta, 'a random direction (α/‖θ‖)')}; "
        + (
            f"SGD step (lr {lr:g}): {clip.verdict()}"
            if clip is not None
            else "SGD step: the output or the gradient overflows even in float64, no step to "
            "compare"
        )
    )
    details = {
        "bias": bias_slice.to_json(),
        "random": random_slice.to_json(),
        "clip": None if clip is None else clip.to_json(),
        "gradient_direction": None if step_slice is None else step_slice.to_json(),
    }
    fig = (bias_slice, random_slice, step_slice, clip, 1.0 / math.sqrt(n_bias), norm_theta)
    return Outcome(summary, verdict, details, [(plot_cliff, fig, "cliff.png")])


def _slice_words(s: dg.LossSlice, per_alpha: float, what: str) -> str:
    """LossSlice.verdict with α in the plotted units (a bias shift, a fraction of ‖θ‖)."""
    finite = s.losses[np.isfinite(s.losses)]
    if not finite.size:
        return f"loss along {what}: no finite values: {UNDETERMINED}"
    if s.undetermined:
        return (f"loss along {what}: {finite.size} finite value(s) of {s.losses.size}: "
                f"{UNDETERMINED}")  # fmt: skip
    a, b = (v * per_alpha for v in s.jump_between)
    if s.overflows:
        return (f"loss along {what} from {finite.min():.4g} to {finite.max():.4g}, and it "
                f"overflows float64 between {a:.3g} and {b:.3g}, beside its largest finite "
                f"value ({s.losses.size - finite.size} non-finite values): a cliff")  # fmt: skip
    text = (
        f"loss along {what} from {finite.min():.4g} to {finite.max():.4g}, largest jump "
        f"{s.jump:.3g} between {a:.3g} and {b:.3g} ({s.steepness:.3g}x the median slope)"
    )
    if finite.size < s.losses.size:
        text += f", {s.losses.size - finite.size} non-finite values"
    return text + (": a cliff" if s.cliff else ": smooth")


def _slice_summary(s: dg.LossSlice, unit: str, per_alpha: float) -> dict:
    a, b = s.jump_between
    return json_value(
        {
            "direction": s.direction,
            "unit": unit,
            "base_loss": s.base_loss,
            "min_loss": np.nanmin(s.losses) if np.isfinite(s.losses).any() else None,
            "max_loss": np.nanmax(s.losses) if np.isfinite(s.losses).any() else None,
            "jump": s.jump,
            "jump_between": [a * per_alpha, b * per_alpha],
            "steepness": s.steepness,
            "cliff": None if s.undetermined else s.cliff,
        }
    )


def analyse_dynamics(subject: Subject, h_range: tuple[float, float] = (-2.0, 2.0),
                     iters: int = 200) -> Outcome:  # fmt: skip
    """The iterated map of a bare map (its own range and steps) or of a 1- or 2-unit tanh
    RNN's layer at input 0, from starts over `h_range`, `iters` steps each."""
    if subject.model is None:
        im = dg.iterated_map(**subject.map_args)
    else:
        _, layer = split_model(subject.model)
        p = {k: v.astype(np.float64) for k, v in layer.params.items()}
        W, b = p["weight_hh_l0"], p["bias_ih_l0"] + p["bias_hh_l0"]  # input x = 0
        if W.shape == (1, 1):
            im = dg.iterated_map(float(W[0, 0]), float(b[0]), h_range=h_range, n_iter=iters)
        else:
            im = dg.iterated_map(W, b, h_range=h_range, n_iter=iters)
    stable = [i for i, k in enumerate(im.kinds) if k == "stable"]
    summary = json_value(
        {
            "units": im.units,
            "phi": im.phi,
            "W": im.W,
            "b": im.b,
            "fixed_points": im.fixed_points,
            "kinds": im.kinds,
            "multipliers": im.multipliers,
            "basin_shares": {str(i): float(np.mean(im.basin == i)) for i in stable},
            "unsettled": float(np.mean(im.basin < 0)),
        }
    )
    return Outcome(
        summary, one_line(im.verdict()), im.to_json(), [(dg.plot_iterated_map, im, "dynamics.png")]
    )


def run_analysis(
    name: str,
    subject: Subject,
    *,
    loss: str = "auto",
    sample: int = 0,
    cliff_range: float = 2.0,
    lr: float | None = None,
    max_norm: float = 1.0,
    h_range: tuple[float, float] = (-2.0, 2.0),
    iters: int = 200,
) -> Outcome:
    """One analysis of `subject`, with the options of the analyses that take them."""
    if name == "lag":
        return analyse_lag(subject, loss)
    if name == "map":
        return analyse_map(subject)
    if name == "jacobian":
        return analyse_jacobian(subject, sample)
    if name == "spectrum":
        return analyse_spectrum(subject)
    if name == "gates":
        return analyse_gates(subject)
    if name == "cliff":
        return analyse_cliff(subject, cliff_range, lr, max_norm)
    return analyse_dynamics(subject, h_range, iters)


def chosen_analyses(text: str | None, subject: Subject) -> tuple[list[str], dict[str, str]]:
    """The analyses to run, in ANALYSES order, and those skipped with the reason."""
    why = applicable(subject)
    if text is None:
        return [a for a in ANALYSES if not why[a]], {a: r for a, r in why.items() if r}
    names = [t.strip() for t in text.split(",") if t.strip()]
    for n in names:
        if n not in ANALYSES:
            _checks.fail(
                "--analyses",
                "a comma-separated list from " + ",".join(ANALYSES),
                repr(text),
                f"Unknown analysis: {n!r}.",
            )
        if why[n]:
            _checks.fail("--analyses", "analyses that apply to this source", f"{n!r} ({why[n]})")
    if not names:
        _checks.fail("--analyses", "at least one of " + ",".join(ANALYSES), repr(text))
    return [a for a in ANALYSES if a in names], {}


def describe_model(subject: Subject) -> dict | None:
    if subject.model is None:
        return None
    _, layer = split_model(subject.model)
    return {
        "cell": cell_name(subject.trained().spec),
        "hidden": layer.hidden_size,
        "layers": layer.num_layers,
        "bidirectional": layer.bidirectional,
        "proj_size": layer.proj_size,
        "recurrent_dropout": layer.recurrent_dropout,
        "zoneout": list(layer.zoneout),
        "parameters": int(sum(v.size for v in subject.model.params.values())),
    }
