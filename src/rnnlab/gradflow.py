"""`rnnlab gradflow` and `rnnlab plot`: the diagnostics of rnnlab.diagnostics run on a whole
model and a batch of its task's data, from the command line and during training.

A *subject* is a model with one batch: a run directory's trained model (any checkpoint) on
its task's validation sequences, a fresh model built from a task's defaults (with the cell,
size and a W_hh scale overridden), or, for the dynamics view, a bare 1- or 2-unit map
h ← φ(W h + b). Each analysis (lag, map, jacobian, spectrum, gates, cliff, dynamics) writes a
PNG and a JSON file, adds a compact entry to summary.json and prints one verdict line.
`plot_main` draws the gradient records of the training log (rnnlab.diagnostics.training).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rnnlab import _checks, io
from rnnlab import diagnostics as dg
from rnnlab.cells import ElmanCell
from rnnlab.diagnostics._common import json_value
from rnnlab.diagnostics.model import fit_summary, output_gradient, recurrent_io, split_model
from rnnlab.layers import Recurrent

ANALYSES = ("lag", "map", "jacobian", "spectrum", "gates", "cliff", "dynamics")
LOSSES = ("auto", "task", "last", "all")
CLIFF_POINTS = 81


# ----------------------------------------------------------------------------- the subject


@dataclass
class Subject:
    """A model, the task it belongs to and one batch of that task's data, plus where they
    came from (for the summary). `task` and `cfg` are None for a bare dynamics map."""

    model: object | None
    task: object | None
    cfg: object | None
    x: np.ndarray | None
    y: np.ndarray | None
    lengths: np.ndarray | None
    source: dict
    spec: dict | None = None
    run_dir: Path | None = None
    map_args: dict = field(default_factory=dict)  # dynamics source: w, b, phi, range, iters


def _validation_batch(task, n: int):
    """The first n validation sequences as the model sees them (reversed if it was trained
    on reversed input); a charlm task gets n windows of its validation text."""
    if hasattr(task, "split"):
        x, y, lengths = task.split("valid")
        x, y, lengths = task.prepare(x[:n], y[:n], None if lengths is None else lengths[:n])
        return x, y, lengths
    ids = task.ids["valid"]
    L = task.window
    n = min(n, (len(ids) - 1) // L)
    if n < 1:
        _checks.fail("task", f"validation text of more than {L} characters", f"{len(ids)}")
    xs = ids[: n * L].reshape(n, L).astype(np.int64)
    ys = ids[1 : n * L + 1].reshape(n, L).astype(np.int64)
    return xs, ys, None


def _scale_recurrent(layer: Recurrent, scale: float) -> None:
    for name, v in layer.params.items():
        if name.startswith("weight_hh_"):
            v *= v.dtype.type(scale)


def _cell_name(spec: dict) -> str:
    return spec["rnn"]["cell"]


def task_subject(
    task_name: str,
    *,
    cell=None,
    hidden=None,
    layers=None,
    bidirectional=False,
    T=None,
    seed=None,
    init_scale=None,
    forget_bias=None,
    batch: int = 32,
) -> Subject:
    """A freshly initialised model from a task's defaults (with the options overriding them)
    and the first `batch` sequences of the task's validation set."""
    from rnnlab import models, recipes
    from rnnlab.train import TrainConfig

    _checks.choice(task_name, "source", recipes.TASK_NAMES)
    if task_name in recipes.SEQ2SEQ_TASKS:
        _checks.fail("source", "a task of one recurrent network (what the diagnostics read)",
                     f"{task_name!r}, an encoder-decoder task")  # fmt: skip
    over = {"cell": cell, "hidden": hidden, "layers": layers, "T": T, "seed": seed}
    over["forget_bias"] = forget_bias
    over = {k: v for k, v in over.items() if v is not None}
    if bidirectional:
        over["bidirectional"] = True
    if "cell" in over:
        _checks.choice(over["cell"], "--cell", models.CELLS)
    if "T" in over and task_name not in ("adding", "copy", "temporal-order"):
        _checks.fail(
            "--T",
            "given only for the adding, copy and temporal-order tasks",
            f"--T {T} for the {task_name} task",
        )
    cfg = TrainConfig.from_dict(
        {**recipes.defaults(task_name), **over, "task": task_name}, source="options"
    )
    if cfg.cell not in models.CELLS:
        _checks.fail("--cell", "one of " + ", ".join(models.CELLS), repr(cfg.cell))
    if forget_bias is not None and cfg.cell != "lstm":
        _checks.fail(
            "--forget-bias",
            "given only for an LSTM (it sets the forget gate's bias)",
            f"--cell {cfg.cell}",
        )
    task = recipes.make_task(cfg)
    spec = recipes.model_spec(cfg, task)
    model = recipes.build_model(spec, seed=cfg.seed)
    if init_scale is not None:
        _scale_recurrent(split_model(model)[1], init_scale)
    x, y, lengths = _validation_batch(task, batch)
    source = {
        "type": "task",
        "task": task_name,
        "cell": cfg.cell,
        "seed": cfg.seed,
        "init_scale": 1.0 if init_scale is None else float(init_scale),
        "forget_bias": cfg.forget_bias if cfg.cell == "lstm" else None,
        "step": 0,
    }
    return Subject(model, task, cfg, x, y, lengths, source, spec)


def run_subject(path, *, step: int | None = None, T=None, batch: int = 32) -> Subject:
    """A run directory's model (the latest checkpoint, or `step`) and the first `batch`
    sequences of its task's validation set (with `T`, at another sequence length)."""
    from rnnlab import recipes, runs

    run = io.open_run_dir(path)
    ckpt, cfg, model = runs.load_checkpoint_model(run, step)
    if getattr(model, "net", None) is not None:  # rnnlab.translation.Trainee
        _checks.fail("run", "a run of one recurrent network (what the diagnostics read)",
                     f"a {cfg.task} run, an encoder-decoder")  # fmt: skip
    if T is not None:
        if cfg.task not in ("adding", "copy", "temporal-order"):
            _checks.fail(
                "--T",
                "given only for the adding, copy and temporal-order tasks",
                f"--T {T} for a {cfg.task} run",
            )
        cfg.T = _checks.positive_int(T, "--T")
    # an old charlm run's vocabulary is rebuilt and checked, as for evaluate
    task = recipes.make_task(cfg, runs.data_record(run, cfg, ckpt.config))
    x, y, lengths = _validation_batch(task, batch)
    spec = ckpt.config["model"]
    source = {
        "type": "run",
        "run": str(run),
        "task": cfg.task,
        "cell": _cell_name(spec),
        "seed": cfg.seed,
        "step": ckpt.step,
        "checkpoints": io.checkpoint_steps(run),
    }
    return Subject(model, task, cfg, x, y, lengths, source, spec, run)


def _parse_matrix(text: str, name: str, shape: tuple[int, ...]) -> np.ndarray:
    rows = [r.split(",") for r in str(text).split(";")]
    try:
        a = np.array([[float(v) for v in r] for r in rows])
    except ValueError:
        a = None
    if a is None or a.size != math.prod(shape) or not np.all(np.isfinite(a)):
        want = "'a,b;c,d' (a 2 × 2 matrix, rows split by ';')" if len(shape) == 2 else "'e,f'"
        _checks.fail(name, f"{want} of finite numbers", repr(text))
    return a.reshape(shape)


def dynamics_subject(
    *, w=None, b=None, W=None, bias=None, phi="tanh", h_range="-2,2", iters: int = 200
) -> Subject:
    """A bare map h ← φ(w h + b) (1 unit: `w`, `b`) or h ← φ(W h + b) (2 units: `W` as
    'a,b;c,d', `bias` as 'e,f')."""
    one = w is not None or b is not None
    two = W is not None or bias is not None
    if one == two:
        _checks.fail(
            "--w",
            "given with --b (one unit), or --W with --bias (two units), for the dynamics source",
            "both forms" if one else "neither",
        )
    if one:
        if w is None or b is None:
            _checks.fail(
                "--w" if w is None else "--b",
                "given (a 1-unit map needs both --w and --b)",
                "nothing",
            )
        args = {"w": float(w), "b": float(b)}
    else:
        if W is None or bias is None:
            _checks.fail(
                "--W" if W is None else "--bias",
                "given (a 2-unit map needs both --W and --bias)",
                "nothing",
            )
        args = {"w": _parse_matrix(W, "--W", (2, 2)), "b": _parse_matrix(bias, "--bias", (2,))}
    lo_hi = _parse_matrix(h_range, "--range", (2,))
    if not lo_hi[0] < lo_hi[1]:
        _checks.fail("--range", "'lo,hi' with lo < hi", repr(h_range))
    args.update(phi=phi, h_range=(float(lo_hi[0]), float(lo_hi[1])), n_iter=iters)
    source = {"type": "dynamics", "units": 1 if one else 2, "phi": phi}
    return Subject(None, None, None, None, None, None, source, map_args=args)


# ----------------------------------------------------------------------------- analyses


def applicable(subject: Subject) -> dict[str, str]:
    """{analysis: ""} for those that apply to the subject, {analysis: why not} otherwise."""
    if subject.model is None:
        return {
            a: ("" if a == "dynamics" else "the dynamics source is a bare map, not a model")
            for a in ANALYSES
        }
    _, layer = split_model(subject.model)
    why = dict.fromkeys(ANALYSES, "")
    elman = isinstance(layer.cell, ElmanCell)
    if elman and layer.cell.nonlinearity == "relu":
        why["gates"] = "relu units have no upper end to saturate at (gates: LSTM, GRU, tanh RNN)"
    if not (elman and layer.cell.nonlinearity == "tanh" and layer.hidden_size <= 2):
        why["dynamics"] = (
            f"the iterated map needs a tanh RNN with 1 or 2 units; this is a "
            f"{layer.cell.name} layer with {layer.hidden_size} units"
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
    """(the first lag whose norm differs from the lag-0 norm by 10x or more, max/min)."""
    ok = np.isfinite(norms) & (norms > 0)
    if ok.sum() < 2:
        return None, None
    logs = np.log10(norms[ok])
    lags = np.nonzero(ok)[0]
    far = np.nonzero(np.abs(logs - logs[0]) >= 1.0)[0]
    return (int(lags[far[0]]) if far.size else None), float(10.0 ** (logs.max() - logs.min()))


def lag_summary(profile: dg.LagProfile) -> dict:
    """Per (layer, direction): the mean norm by lag, the fitted factor per step, the first lag
    at which the norm is 10x off its lag-0 value, and max/min over all lags."""
    out = {}
    for j, name in enumerate(profile.names):
        lag10, spread = _reference_ratio(profile.mean[j])
        out[name] = {
            "norms": profile.mean[j],
            **fit_summary(profile.fits[j]),
            "lag_to_10x": lag10,
            "max_over_min": spread,
        }
    return json_value(out)


def _lag_verdict(profile: dg.LagProfile, summary: dict) -> str:
    T = len(profile.lags)
    parts = []
    for name, fit in zip(profile.names, profile.fits, strict=True):
        s = summary[name]
        text = f"{name}: " + fit.words("‖∂L/∂h_k‖")
        if s["max_over_min"] is not None:
            where = (
                f"10x off its lag-0 value by lag {s['lag_to_10x']}"
                if s["lag_to_10x"] is not None
                else "never 10x off its lag-0 value"
            )
            text += f"; {where}, max/min over lags 0–{T - 1} = {s['max_over_min']:.3g}"
        parts.append(text)
    return "; ".join(parts)


def _one_line(text: str) -> str:
    return "; ".join(line for line in text.splitlines() if line)


def _loss_for(subject: Subject, loss: str) -> str:
    if loss != "auto":
        return loss
    from rnnlab.modules import LastStep

    return "task" if any(isinstance(m, LastStep) for m in subject.model.modules) else "last"


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
    m = subject.model
    if loss == "task":
        x_rec, d_out, value = output_gradient(
            m, subject.task, subject.x, subject.y, subject.lengths
        )
        _, layer = split_model(m)
        prof = dg.gradient_by_lag(layer, x_rec, subject.lengths, d_output=d_out)
        prof.loss = "task"
    else:
        _, _, layer, x_rec = recurrent_io(m, subject.x, subject.lengths)
        prof = dg.gradient_by_lag(layer, x_rec, subject.lengths, loss=loss)
    summary = {"loss": loss, "layers": lag_summary(prof)}
    return Outcome(
        summary,
        _lag_verdict(prof, summary["layers"]),
        prof.to_json(),
        [(dg.plot_lag_profile, prof, "lag.png")],
    )


def analyse_map(subject: Subject) -> Outcome:
    _, _, layer, x_rec = recurrent_io(subject.model, subject.x, subject.lengths)
    gm = dg.gradient_map(layer, x_rec, subject.lengths)
    layers = {name: fit_summary(fit) for name, fit in zip(gm.names, gm.fits, strict=True)}
    return Outcome(
        {"layers": json_value(layers)},
        _one_line(gm.verdict()),
        gm.to_json(),
        [(dg.plot_gradient_map, gm, "map.png")],
    )


def analyse_jacobian(subject: Subject, sample: int) -> Outcome:
    _, _, layer, x_rec = recurrent_io(subject.model, subject.x, subject.lengths)
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
            verdicts.append(f"{jp.name}: " + _one_line(jp.verdict()))
            figures.append((dg.plot_jacobian_bound, jp, f"jacobian-l{k}{sfx}.png"))
    return Outcome(
        {"sample": sample, "layers": json_value(layers)}, "; ".join(verdicts), details, figures
    )


def _checkpoint_history(subject: Subject) -> dg.SpectrumHistory | None:
    """The spectra at every kept checkpoint, after the initialisation (step 0) rebuilt from
    the run's seed when no checkpoint of step 0 was kept."""
    from rnnlab import recipes

    steps = io.checkpoint_steps(subject.run_dir)
    pairs = []
    if 0 not in steps:
        init = recipes.build_model(subject.spec, seed=subject.cfg.seed)
        pairs.append((0, init.params))
    for s in steps:
        pairs.append((s, io.load_checkpoint(subject.run_dir, step=s).model))
    return dg.spectrum_over_checkpoints(pairs) if len(pairs) > 1 else None


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
    figures = [(dg.plot_spectrum, sp, "spectrum.png")]
    verdict = _one_line(sp.verdict())
    if subject.run_dir is not None:
        hist = _checkpoint_history(subject)
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
            verdict += "; during training: " + _one_line(hist.verdict())
    return Outcome(summary, verdict, details, figures)


def analyse_gates(subject: Subject) -> Outcome:
    _, _, layer, x_rec = recurrent_io(subject.model, subject.x, subject.lengths)
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
        _one_line(gs.verdict()),
        gs.to_json(),
        [(dg.plot_gate_saturation, gs, "gates.png")],
    )


def _task_loss_fn(subject: Subject):
    """θ ↦ the task's loss on the batch with the model's parameters set to θ (NaN when the
    model's output overflows: far along a direction the network can diverge)."""
    model, task = subject.model, subject.task
    from rnnlab.train import Batch

    batch = Batch(subject.x, subject.y, subject.lengths)

    def loss_fn(params: dict[str, np.ndarray]) -> float:
        model.load_state_dict(params)
        with np.errstate(all="ignore"):
            out = model.forward(subject.x, lengths=subject.lengths).output
            if not np.all(np.isfinite(out)):
                return float("nan")
            value = float(task.loss(out, batch)[0])
        # An overflowed loss is NaN too: inf − inf between neighbours would be a warning.
        return value if math.isfinite(value) else float("nan")

    return loss_fn


def _task_gradient(subject: Subject) -> dict[str, np.ndarray]:
    from rnnlab.train import Batch

    model = subject.model
    with np.errstate(under="ignore"):
        f = model.forward(subject.x, lengths=subject.lengths)
        _, d = subject.task.loss(f.output, Batch(subject.x, subject.y, subject.lengths))
        return {k: v.astype(np.float64) for k, v in model.backward(f, d).params.items()}


def analyse_cliff(subject: Subject, span: float, lr: float | None, max_norm: float) -> Outcome:
    """Loss slices along the hidden bias and a random direction, and the loss along −g from θ
    to θ − lr·g with the clipped step lr·clip(g) marked."""
    model = subject.model
    r, _ = split_model(model)
    theta = {k: v.copy() for k, v in model.params.items()}
    loss_fn = _task_loss_fn(subject)
    clip = step_slice = None
    lr = subject.cfg.lr if lr is None else lr
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
        grads = _task_gradient(subject)
        if all(np.all(np.isfinite(v)) for v in grads.values()):
            clip = dg.clipped_vs_unclipped_step(grads, lr, max_norm, loss_fn=loss_fn, params=theta)
        g = 0.0 if clip is None else clip.grad_norm
        if g > 0 and math.isfinite(g):
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
        f"{_slice_words(bias_slice, 1.0 / math.sqrt(n_bias), 'every hidden bias')}; "
        f"{_slice_words(random_slice, 1.0 / norm_theta, 'a random direction (α/‖θ‖)')}; "
        + (
            f"SGD step (lr {lr:g}): {clip.verdict()}"
            if clip is not None
            else "SGD step: the gradient overflows the model's float type, no step to compare"
        )
    )
    details = {
        "bias": bias_slice.to_json(),
        "random": random_slice.to_json(),
        "clip": None if clip is None else clip.to_json(),
        "gradient_direction": None if step_slice is None else step_slice.to_json(),
    }
    fig = (bias_slice, random_slice, step_slice, clip, 1.0 / math.sqrt(n_bias), norm_theta)
    return Outcome(summary, verdict, details, [(_plot_cliff, fig, "cliff.png")])


def _slice_words(s: dg.LossSlice, per_alpha: float, what: str) -> str:
    """LossSlice.verdict with α in the plotted units (a bias shift, a fraction of ‖θ‖)."""
    finite = s.losses[np.isfinite(s.losses)]
    if not finite.size:
        return f"loss along {what}: no finite values"
    a, b = (v * per_alpha for v in s.jump_between)
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
            "cliff": s.cliff,
        }
    )


def analyse_dynamics(subject: Subject) -> Outcome:
    if subject.model is None:
        im = dg.iterated_map(**subject.map_args)
    else:
        _, layer = split_model(subject.model)
        p = {k: v.astype(np.float64) for k, v in layer.params.items()}
        W, b = p["weight_hh_l0"], p["bias_ih_l0"] + p["bias_hh_l0"]  # input x = 0
        if W.shape == (1, 1):
            im = dg.iterated_map(float(W[0, 0]), float(b[0]))
        else:
            im = dg.iterated_map(W, b)
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
        summary, _one_line(im.verdict()), im.to_json(), [(dg.plot_iterated_map, im, "dynamics.png")]
    )


def _log_if_wide(ax, losses: np.ndarray) -> None:
    """A log y axis when the positive losses span more than a factor of 100."""
    v = losses[np.isfinite(losses) & (losses > 0)]
    if v.size == np.isfinite(losses).sum() and v.size and v.max() > 100 * v.min():
        ax.set_yscale("log")


def _plot_cliff(data, path) -> Path:
    """Three panels: the loss along the hidden bias, along a random direction, and along −g
    with the clipped and unclipped SGD steps marked."""
    from rnnlab.diagnostics.plots import new_figure, save_png

    bias_slice, random_slice, step_slice, clip, per_bias, norm_theta = data
    fig = new_figure(14, 4.0)
    axes = fig.subplots(1, 3)
    for ax, s, scale, label in (
        (axes[0], bias_slice, per_bias, "shift of every hidden bias"),
        (axes[1], random_slice, 1.0 / norm_theta, r"$\alpha/\|\theta\|$"),
    ):
        a = s.alphas * scale
        ax.plot(a, np.where(np.isfinite(s.losses), s.losses, np.nan), marker=".", ms=3)
        if s.cliff:
            lo, hi = s.jump_between
            ax.axvspan(lo * scale, hi * scale, color="red", alpha=0.3, label="cliff")
            ax.legend(fontsize=8)
        ax.axvline(0.0, color="gray", lw=0.8)
        _log_if_wide(ax, s.losses)
        ax.set_xlabel(label)
        ax.set_ylabel("loss")
        ax.set_title(f"along {s.direction}")
    ax = axes[2]
    if step_slice is not None:
        a = step_slice.alphas[1:]
        ax.plot(a, np.where(np.isfinite(step_slice.losses[1:]), step_slice.losses[1:], np.nan))
        ax.axhline(step_slice.base_loss, color="gray", lw=0.8, label="loss at θ")
        ax.axvline(
            clip.clipped_step_norm,
            color="tab:green",
            ls="--",
            label=f"clipped step {clip.clipped_step_norm:.3g}",
        )
        ax.axvline(
            clip.unclipped_step_norm,
            color="tab:red",
            ls="--",
            label=f"unclipped step {clip.unclipped_step_norm:.3g}",
        )
        for at, value, color in (
            (clip.clipped_step_norm, clip.loss_clipped, "tab:green"),
            (clip.unclipped_step_norm, clip.loss_unclipped, "tab:red"),
        ):
            if value is not None and math.isfinite(value):
                ax.plot([at], [value], "o", color=color)
        ax.set_xscale("log")
        _log_if_wide(ax, step_slice.losses)
        ax.legend(fontsize=8)
    ax.set_xlabel("distance along −∇L")
    ax.set_ylabel("loss")
    ax.set_title(
        "SGD step: the gradient overflowed"
        if clip is None
        else f"SGD step, lr {clip.lr:g}, ‖g‖ = {clip.grad_norm:.3g}, max_norm {clip.max_norm:g}"
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_png(fig, path)


# ----------------------------------------------------------------------------- the command


class _Parser(argparse.ArgumentParser):
    """argparse that raises ValueError (printed as one line by the rnnlab command) instead of
    printing the usage and exiting."""

    def error(self, message):
        raise ValueError(f"{self.prog}: {message} (see {self.prog} -h)")


def _option_type(name: str, expected: str, convert, ok):
    """An argparse type: `convert(text)` accepted when `ok(value)`; otherwise the message
    "`--name` must be …; got … instead." (ArgumentTypeError: argparse keeps its text)."""

    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            value = None
        if value is None or not ok(value):
            try:
                _checks.fail(name, expected, repr(text))
            except ValueError as e:
                raise argparse.ArgumentTypeError(str(e)) from None
        return value

    parse.__name__ = name
    return parse


def _positive_float(name: str):
    return _option_type(name, "a positive number", float, lambda v: math.isfinite(v) and v > 0)


def _count(name: str):
    return _option_type(name, "a positive integer", int, lambda v: v >= 1)


def _number(name: str):
    return _option_type(name, "a finite number", float, math.isfinite)


def build_parser() -> argparse.ArgumentParser:
    from rnnlab import models, recipes

    p = _Parser(
        prog="rnnlab gradflow",
        description="See the gradients of a recurrent model on a batch of its task's data: "
        "‖∂L/∂h_k‖ by lag, the t×k map, Jacobian products against the bound, the recurrent "
        "spectrum (and its path through training), gate saturation, loss cliffs and "
        "clipping, and the iterated map of a 1- or 2-unit RNN. Each analysis writes a PNG "
        "and JSON into --out and prints one verdict line.",
    )
    p.add_argument(
        "source",
        help="a run directory, a task name ("
        + ", ".join(recipes.TASK_NAMES)
        + ": a fresh model from its defaults) or 'dynamics' (a bare map, see --w)",
    )
    p.add_argument(
        "--analyses",
        default=None,
        help="comma-separated, from " + ",".join(ANALYSES) + " (default: every one that applies)",
    )
    p.add_argument(
        "--out", default=None, help="output directory (default: runs/gradflow-<source>-<time>)"
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="print the summary as one JSON object on stdout (verdicts on stderr)",
    )
    g = p.add_argument_group("fresh model (task source)")
    g.add_argument("--cell", choices=models.CELLS, default=None)
    g.add_argument("--hidden", type=_count("--hidden"), default=None)
    g.add_argument("--layers", type=_count("--layers"), default=None)
    g.add_argument("--bidirectional", action="store_true")
    g.add_argument("--seed", type=int, default=None, help="initialisation and data seed")
    g.add_argument(
        "--init-scale",
        dest="init_scale",
        type=_positive_float("--init-scale"),
        default=None,
        help="multiply every W_hh by this after initialisation",
    )
    g.add_argument(
        "--forget-bias",
        dest="forget_bias",
        type=_number("--forget-bias"),
        default=None,
        help="LSTM: the forget gate's bias (default: the task's, 1)",
    )
    g = p.add_argument_group("data")
    g.add_argument(
        "--T",
        dest="T",
        type=_count("--T"),
        default=None,
        help="sequence length (adding, copy, temporal-order)",
    )
    g.add_argument(
        "--batch",
        type=_count("--batch"),
        default=32,
        help="validation sequences to analyse (default 32)",
    )
    g.add_argument(
        "--step",
        type=int,
        default=None,
        help="run source: the checkpoint to analyse (default: the latest)",
    )
    g = p.add_argument_group("analyses")
    g.add_argument(
        "--loss",
        choices=LOSSES,
        default="auto",
        help="lag profile: 'task' (the task's loss on the batch), 'last' (a random "
        "projection of the final state), 'all' (of every step's output); auto: task "
        "for many-to-one models, last otherwise",
    )
    g.add_argument("--sample", type=int, default=0, help="jacobian: the sequence (default 0)")
    g.add_argument(
        "--cliff-range",
        dest="cliff_range",
        type=_positive_float("--cliff-range"),
        default=2.0,
        help="cliff: every hidden bias moves by up to ±R; the random "
        "direction by up to ±(R/2)·‖θ‖ (default 2)",
    )
    g.add_argument(
        "--lr",
        type=_positive_float("--lr"),
        default=None,
        help="cliff: SGD learning rate of the compared steps (default: the task's)",
    )
    g.add_argument(
        "--max-norm",
        dest="max_norm",
        type=_positive_float("--max-norm"),
        default=1.0,
        help="cliff: clipping threshold η (default 1)",
    )
    g = p.add_argument_group("dynamics source")
    g.add_argument("--w", type=_number("--w"), default=None, help="1 unit: h ← φ(w h + b)")
    g.add_argument("--b", type=_number("--b"), default=None)
    g.add_argument("--W", dest="W", default=None, help="2 units: 'a,b;c,d'")
    g.add_argument("--bias", default=None, help="2 units: 'e,f'")
    g.add_argument("--phi", choices=dg.dynamics.PHIS, default="tanh")
    g.add_argument(
        "--range", dest="h_range", default="-2,2", help="starting states 'lo,hi' (default -2,2)"
    )
    g.add_argument("--iters", type=_count("--iters"), default=200)
    return p


_MODEL_OPTIONS = ("cell", "hidden", "layers", "seed", "init_scale", "forget_bias")
_MAP_OPTIONS = ("w", "b", "W", "bias")


def subject_from_args(args) -> Subject:
    from rnnlab import recipes

    src = args.source
    given = [o for o in _MODEL_OPTIONS if getattr(args, o) is not None]
    if args.bidirectional:
        given.append("bidirectional")
    maps = [o for o in _MAP_OPTIONS if getattr(args, o) is not None]
    if src == "dynamics":
        if given or args.T is not None or args.step is not None:
            what = given[0] if given else ("T" if args.T is not None else "step")
            _checks.fail(
                f"--{what.replace('_', '-')}",
                "left out for the dynamics source (it describes a model or its data)",
                "it was given",
            )
        return dynamics_subject(
            w=args.w,
            b=args.b,
            W=args.W,
            bias=args.bias,
            phi=args.phi,
            h_range=args.h_range,
            iters=args.iters,
        )
    if maps:
        _checks.fail(
            f"--{maps[0]}",
            "given only with the dynamics source (`rnnlab gradflow dynamics --w 2 --b 0`)",
            f"source {src!r}",
        )
    path = Path(src)
    if io.is_run_dir(path) or (path.exists() and src not in recipes.TASK_NAMES):
        if given:
            _checks.fail(
                f"--{given[0].replace('_', '-')}",
                "given only for a task source (a run directory's model is fixed)",
                f"the run directory '{src}'",
            )
        return run_subject(path, step=args.step, T=args.T, batch=args.batch)
    if src in recipes.TASK_NAMES:
        if args.step is not None:
            _checks.fail("--step", "given only for a run directory", f"the task {src!r}")
        return task_subject(
            src,
            cell=args.cell,
            hidden=args.hidden,
            layers=args.layers,
            bidirectional=args.bidirectional,
            T=args.T,
            seed=args.seed,
            init_scale=args.init_scale,
            forget_bias=args.forget_bias,
            batch=args.batch,
        )
    _checks.fail(
        "source",
        "a run directory, a task name (" + ", ".join(recipes.TASK_NAMES) + ") or 'dynamics'",
        f"{src!r}, which is none of these (no such directory)",
    )


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


def _name_hint(subject: Subject) -> str:
    s = subject.source
    if s["type"] == "run":
        stem = Path(s["run"]).resolve().name
    elif s["type"] == "task":
        stem = f"{s['task']}-{s['cell']}"
    else:
        stem = "dynamics"
    return "gradflow-" + (re.sub(r"[^A-Za-z0-9._-]", "-", stem).lstrip(".") or "run")


def run_analysis(name: str, subject: Subject, args) -> Outcome:
    if name == "lag":
        return analyse_lag(subject, args.loss)
    if name == "map":
        return analyse_map(subject)
    if name == "jacobian":
        return analyse_jacobian(subject, args.sample)
    if name == "spectrum":
        return analyse_spectrum(subject)
    if name == "gates":
        return analyse_gates(subject)
    if name == "cliff":
        return analyse_cliff(subject, args.cliff_range, args.lr, args.max_norm)
    return analyse_dynamics(subject)


def _describe_model(subject: Subject) -> dict | None:
    if subject.model is None:
        return None
    _, layer = split_model(subject.model)
    return {
        "cell": _cell_name(subject.spec),
        "hidden": layer.hidden_size,
        "layers": layer.num_layers,
        "bidirectional": layer.bidirectional,
        "proj_size": layer.proj_size,
        "recurrent_dropout": layer.recurrent_dropout,
        "zoneout": list(layer.zoneout),
        "parameters": int(sum(v.size for v in subject.model.params.values())),
    }


def main(argv: list[str] | None = None) -> int:
    """`rnnlab gradflow SOURCE [options]`; returns the exit status."""
    args = build_parser().parse_args(sys.argv[1:] if argv is None else list(argv))
    subject = subject_from_args(args)
    names, skipped = chosen_analyses(args.analyses, subject)
    if subject.x is not None and not 0 <= args.sample < len(subject.x):
        _checks.fail("--sample", f"a sequence index in [0, {len(subject.x)})", str(args.sample))
    out = Path(args.out) if args.out else io.make_run_dir("runs", _name_hint(subject))
    out.mkdir(parents=True, exist_ok=True)
    summary: dict = {
        "kind": "gradflow",
        "source": subject.source,
        "model": _describe_model(subject),
        "batch": None
        if subject.x is None
        else {"split": "valid", "sequences": int(subject.x.shape[0]), "T": int(subject.x.shape[1])},
        "out": str(out),
        "analyses": {},
        "skipped": skipped,
        "verdicts": {},
    }
    no_plots = ""
    for name in names:
        print(f"gradflow: {name} ...", file=sys.stderr, flush=True)
        result = run_analysis(name, subject, args)
        pngs = []
        for draw, data, file in result.figures:
            if no_plots:
                break
            try:
                pngs.append(draw(data, out / file).name)
            except ImportError as e:  # matplotlib is an optional extra: keep the JSON
                no_plots = str(e)
        io.atomic_write_json(out / f"{name}.json", json_value(result.details))
        summary["analyses"][name] = {
            **result.summary,
            "verdict": result.verdict,
            "png": pngs,
            "json": f"{name}.json",
        }
        summary["verdicts"][name] = result.verdict
        line = f"{name}: {result.verdict}"
        print(line, file=sys.stderr if args.json else sys.stdout, flush=True)
    if no_plots:
        summary["plots"] = f"no PNGs: {no_plots}"
        print(f"gradflow: no PNGs written: {no_plots}", file=sys.stderr)
    summary = json_value(summary)
    io.atomic_write_json(out / "summary.json", summary)
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"output: {out} (summary.json, one PNG and JSON per analysis)")
    return 0


# ----------------------------------------------------------------------------- rnnlab plot


def _series(records: list[dict], key: str) -> tuple[np.ndarray, np.ndarray]:
    pts = [(r["step"], r[key]) for r in records if isinstance(r.get(key), (int, float))]
    if not pts:
        return np.empty(0), np.empty(0)
    s, v = zip(*pts, strict=True)
    return np.array(s, float), np.array(v, float)


def _plot_curves(
    path: Path, panels: list[tuple[str, list[tuple[str, np.ndarray, np.ndarray]], bool]]
) -> Path:
    """One row of panels (title, [(label, steps, values)], log y axis)."""
    from rnnlab.diagnostics.plots import new_figure, save_png

    fig = new_figure(4.6 * len(panels), 3.6)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (title, lines, log) in zip(axes, panels, strict=True):
        for label, s, v in lines:
            if log:
                zeros = int(np.sum(v == 0))
                if zeros:  # a log axis cannot show them: say so in the legend
                    label += " (0 at every step)" if zeros == v.size else f" ({zeros} zeros)"
                v = np.where(np.isfinite(v) & (v > 0), v, np.nan)
            ax.plot(s, v, lw=1, marker="o" if len(s) < 30 else None, ms=3, label=label)
        if log:
            ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_title(title, fontsize=10)
        if len(lines) > 1 or any("(0 at" in ln[0] or "zeros)" in ln[0] for ln in lines):
            ax.legend(fontsize=7)
    return save_png(fig, path)


def _plot_lags(path: Path, grads: list[dict]) -> Path:
    """Per (layer, direction): log10 ‖∂L/∂h_k‖ by lag (x) and training step (y), and the
    fitted factor per step against the step."""
    from rnnlab.diagnostics.plots import new_figure, save_png

    with_lags = [r for r in grads if r.get("lags")]
    names = list(with_lags[0]["lags"])
    steps = np.array([r["step"] for r in with_lags], float)
    fig = new_figure(4.4 * (len(names) + 1), 3.8)
    axes = fig.subplots(1, len(names) + 1, squeeze=False)[0]
    for ax, name in zip(axes, names, strict=False):
        rows = [r["lags"].get(name, {}).get("norms") or [] for r in with_lags]
        T = max(len(row) for row in rows)
        grid = np.full((len(rows), T), np.nan)
        for i, row in enumerate(rows):
            v = np.array([np.nan if a is None else a for a in row], float)
            grid[i, : len(v)] = v
        logs = np.log10(grid, out=np.full(grid.shape, np.nan), where=np.isfinite(grid) & (grid > 0))
        if len(steps) > 1:
            edges = np.concatenate(
                [
                    [steps[0] - (steps[1] - steps[0]) / 2],
                    (steps[1:] + steps[:-1]) / 2,
                    [steps[-1] + (steps[-1] - steps[-2]) / 2],
                ]
            )
        else:
            edges = np.array([steps[0] - 0.5, steps[0] + 0.5])
        im = ax.pcolormesh(np.arange(T + 1) - 0.5, edges, logs, cmap="viridis", shading="flat")
        fig.colorbar(im, ax=ax, label=r"$\log_{10}\|\partial L/\partial h_k\|$")
        ax.set_xlabel("lag")
        ax.set_ylabel("training step")
        ax.set_title(name)
    ax = axes[-1]
    for name in names:
        f = [r["lags"].get(name, {}).get("factor_per_step") for r in with_lags]
        ax.plot(steps, [np.nan if v is None else v for v in f], marker="o", ms=3, label=name)
    ax.axhline(1.0, color="gray", lw=0.8)
    ax.set_xlabel("training step")
    ax.set_ylabel("fitted factor per step of lag (1: flat)")
    ax.legend(fontsize=7)
    return save_png(fig, path)


def plot_run(run, out=None) -> list[Path]:
    """PNGs of a run's metrics.jsonl: training loss, validation metrics, gradient norms before
    and after clipping, per-layer gradient norms, the lag profile over training."""
    run = io.open_run_dir(run)
    metrics = run / "metrics.jsonl"
    if not metrics.is_file():
        _checks.fail(
            "run",
            "a run directory with a metrics.jsonl (a run that has trained)",
            f"'{run}', which has none",
        )
    records = [r for r in io.read_jsonl(metrics) if isinstance(r, dict) and "step" in r]
    train = [r for r in records if "loss" in r and "split" not in r and "kind" not in r]
    valid = [r for r in records if r.get("split") == "valid"]
    grads = [r for r in records if r.get("kind") == "gradients"]
    out = run / "plots" if out is None else Path(out)
    if out.is_symlink():
        _checks.fail("--out", "a directory (rnnlab does not write through links)",
                     f"'{out}', a symbolic link")  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    written = []
    if train:
        written.append(
            _plot_curves(
                out / "loss.png",
                [
                    ("training loss", [("loss", *_series(train, "loss"))], False),
                    ("learning rate", [("lr", *_series(train, "lr"))], False),
                ],
            )
        )
    keys = sorted(
        {
            k
            for r in valid
            for k, v in r.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "step"
        }
    )
    if keys:
        written.append(
            _plot_curves(
                out / "valid.png", [(f"valid {k}", [(k, *_series(valid, k))], False) for k in keys]
            )
        )
    norm_lines = [("every 10 steps, before clipping", *_series(train, "grad_norm"))]
    if grads:
        norm_lines += [
            ("before clipping", *_series(grads, "grad_norm_before")),
            ("after clipping", *_series(grads, "grad_norm_after")),
        ]
    if train or grads:
        written.append(
            _plot_curves(out / "grad-norm.png", [("global gradient norm", norm_lines, True)])
        )
    if grads:
        names = list(grads[-1].get("layer_norms_before") or {})
        panels = []
        for key, title in (
            ("layer_norms_before", "per-layer ‖g‖ before clipping"),
            ("layer_norms_after", "per-layer ‖g‖ after clipping"),
        ):
            lines = []
            for n in names:
                pts = [(r["step"], (r.get(key) or {}).get(n)) for r in grads]
                pts = [(s, v) for s, v in pts if isinstance(v, (int, float))]
                if pts:
                    s, v = zip(*pts, strict=True)
                    lines.append((n, np.array(s, float), np.array(v, float)))
            panels.append((title, lines, True))
        written.append(_plot_curves(out / "grad-layers.png", panels))
        if any(r.get("lags") for r in grads):
            written.append(_plot_lags(out / "lag-profile.png", grads))
    from rnnlab.translation import plot_attention_of_run

    written += plot_attention_of_run(run, out)
    return written


def plot_main(argv: list[str] | None = None) -> int:
    """`rnnlab plot RUN [--out DIR]`; returns the exit status."""
    p = _Parser(
        prog="rnnlab plot",
        description="Plot a run's metrics.jsonl: training loss, validation metrics, "
        "gradient norms before/after clipping, per-layer gradient norms and the lag "
        "profile over training (PNGs; needs matplotlib).",
    )
    p.add_argument("run", help="a run directory")
    p.add_argument("--out", default=None, help="where to write the PNGs (default: RUN/plots)")
    args = p.parse_args(sys.argv[1:] if argv is None else list(argv))
    paths = plot_run(args.run, args.out)
    records = io.read_jsonl(Path(args.run) / "metrics.jsonl")
    if not any(isinstance(r, dict) and r.get("kind") == "gradients" for r in records):
        print(
            'rnnlab plot: no gradient records ("kind": "gradients") in metrics.jsonl, so '
            "no per-layer norms or lag profile",
            file=sys.stderr,
        )
    for path in paths:
        print(path)
    return 0
