"""The plots of a run directory: its metrics.jsonl (training loss, validation metrics,
gradient norms before and after clipping, per layer, the lag profile over training) and, for
an encoder–decoder with attention, the attention of its latest weights (`rnnlab plot`, and
the end of `rnnlab train`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rnnlab import _checks, io, runs, tasks
from rnnlab.diagnostics.plots import plot_attention, plot_curves, plot_lag_history
from rnnlab.diagnostics.training import lag_history
from rnnlab.tasks import SEQ2SEQ_TASKS


def _series(records: list[dict], key: str) -> tuple[np.ndarray, np.ndarray]:
    pts = [(r["step"], r[key]) for r in records if isinstance(r.get(key), (int, float))]
    if not pts:
        return np.empty(0), np.empty(0)
    s, v = zip(*pts, strict=True)
    return np.array(s, float), np.array(v, float)


# What a validation record holds beside its metrics: counts, not drawn, and references that
# do not move with training (a baseline, chance), drawn dashed in the panel of the metric
# they are the reference for, not as panels of their own.
_COUNTS = {"chars", "unknown_chars"}
_REFERENCE_OF = {"chance": "accuracy", "majority": "accuracy"}
_VARIANTS = ("_one", "_empirical")  # baseline_mse_one: a variant of baseline_mse


def _reference_of(key: str, metrics: list[str]) -> str | None:
    """The metric `key` is a reference line for (baseline_<metric>[_variant], chance and
    majority for accuracy), if the record has it."""
    if key in _REFERENCE_OF:
        return _REFERENCE_OF[key] if _REFERENCE_OF[key] in metrics else None
    if not key.startswith("baseline_"):
        return None
    stem = key.removeprefix("baseline_")
    for variant in _VARIANTS:
        stem = stem.removesuffix(variant)
    # baseline_recall_empirical is the reference for recall_accuracy
    return next((m for m in metrics if m == stem or m.startswith(stem + "_")), None)


def valid_panels(valid: list[dict]) -> list[tuple[str, list, bool]]:
    """valid.png's panels: one per metric of the validation records, with its references
    (dashed) in it; a reference whose metric the records lack keeps a panel of its own."""
    keys = sorted(
        {
            k
            for r in valid
            for k, v in r.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "step"
        }
        - _COUNTS
    )
    plain = [k for k in keys if k not in _REFERENCE_OF and not k.startswith("baseline_")]
    refs: dict[str, list[str]] = {k: [] for k in keys}
    for k in keys:
        of = _reference_of(k, plain)
        if of is not None:
            refs[of].append(k)
            refs.pop(k)
    return [
        (f"valid {k}", [(k, *_series(valid, k))] + [(r, *_series(valid, r), "--") for r in rs],
         False)
        for k, rs in refs.items()
    ]  # fmt: skip


def plot_run(run, out=None) -> list[Path]:
    """PNGs of a run's metrics.jsonl: training loss, validation metrics, gradient norms before
    and after clipping, per-layer gradient norms, the lag profile over training."""
    run = io.open_run_dir(run)
    metrics = run / "metrics.jsonl"
    if not metrics.is_file() and (metrics.exists() or metrics.is_symlink()):
        # (a directory, a FIFO or a link to nothing was said to be no metrics.jsonl at all:
        # "the run has logged no metrics yet")
        kind = ("a directory" if metrics.is_dir() else "a symbolic link to nothing"
                if not metrics.exists() else "a FIFO, device or socket")  # fmt: skip
        raise io.RunDirError(f"'{metrics}' is {kind}, not the metrics file rnnlab writes "
                             "(a damaged run directory)")  # fmt: skip
    if not metrics.is_file():
        # said as a note at the end of `rnnlab train` too (a run stopped early): what is
        # missing and why, not the error form's "must be ...; got ... instead"
        raise io.RunDirError(
            f"'{run}' has logged no metrics yet (no metrics.jsonl): training logs the loss "
            "every 10 steps and the validation metrics every --eval-every steps, and the run "
            "has reached neither"
        )
    records = [r for r in io.read_jsonl(metrics) if isinstance(r, dict) and "step" in r]
    for i, r in enumerate(records, start=1):
        step = r["step"]
        if isinstance(step, bool) or not isinstance(step, (int, float)) or step != step:
            # every curve is drawn against the step: name the file, not numpy's conversion
            raise io.ConfigError(
                f"'{metrics}' record {i} (of those with a \"step\"): \"step\" must be a number "
                f"(the training step); got {_checks.describe(step)} instead."
            )
    train = [r for r in records if "loss" in r and "split" not in r and "kind" not in r]
    valid = [r for r in records if r.get("split") == "valid"]
    grads = [r for r in records if r.get("kind") == "gradients"]
    if out is None:  # RUN/plots, which no option named: said as the run's own directory
        out = run / "plots"
        if out.is_symlink() or (out.exists() and not out.is_dir()):
            # ("`--out` must be a directory ...; got 'RUN/plots', a symbolic link" of a
            # command given no --out, and "[Errno 17] File exists: 'RUN/plots'" of a file)
            kind = "a symbolic link" if out.is_symlink() else "a file"
            raise io.RunDirError(f"`run` must be a run directory whose plots is a directory "
                                 f"(rnnlab does not write through links); got '{run}', whose "
                                 f"plots is {kind} instead. Remove it, or plot into another "
                                 "directory (rnnlab plot RUN --out DIR).")  # fmt: skip
    else:
        out = Path(out)
        if out.is_symlink():
            _checks.fail("--out", "a directory (rnnlab does not write through links)",
                         f"'{out}', a symbolic link")  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    written = []
    if train:
        written.append(
            plot_curves(
                out / "loss.png",
                [
                    ("training loss", [("loss", *_series(train, "loss"))], False),
                    ("learning rate", [("lr", *_series(train, "lr"))], False),
                ],
            )
        )
    panels = valid_panels(valid)
    if panels:
        written.append(plot_curves(out / "valid.png", panels))
    norm_lines = [("every 10 steps, before clipping", *_series(train, "grad_norm"))]
    if grads:
        norm_lines += [
            ("before clipping", *_series(grads, "grad_norm_before")),
            ("after clipping", *_series(grads, "grad_norm_after")),
        ]
    if train or grads:
        written.append(
            plot_curves(out / "grad-norm.png", [("global gradient norm", norm_lines, True)])
        )
    if grads:
        # (a per-layer entry that is no object, a list or a string, is not drawn, as a norm
        # that is no number is not: it was "'list' object has no attribute 'get'")
        def layer_norms(r: dict, key: str) -> dict:
            v = r.get(key)
            return v if isinstance(v, dict) else {}

        names = next((list(layer_norms(r, "layer_norms_before")) for r in reversed(grads)
                      if layer_norms(r, "layer_norms_before")), [])  # fmt: skip
        panels = []
        for key, title in (
            ("layer_norms_before", "per-layer ‖g‖ before clipping"),
            ("layer_norms_after", "per-layer ‖g‖ after clipping"),
        ):
            lines = []
            for n in names:
                pts = [(r["step"], layer_norms(r, key).get(n)) for r in grads]
                pts = [(s, v) for s, v in pts if isinstance(v, (int, float))]
                if pts:
                    s, v = zip(*pts, strict=True)
                    lines.append((n, np.array(s, float), np.array(v, float)))
            panels.append((title, lines, True))
        written.append(plot_curves(out / "grad-layers.png", panels))
        # a record whose lags are null because the gradient overflowed is drawn too (marked):
        # the steps where it explodes are the ones to see
        if lag_history(grads) is not None:
            written.append(plot_lag_history(out / "lag-history.png", grads))
    written += plot_attention_of_run(run, out)
    return written


def overflow_warning(run) -> str | None:
    """What `rnnlab plot RUN` and the end of `rnnlab train` warn of on stderr after plotting:
    the steps whose gradient (or states) overflowed float64 by the lag records of the run's
    metrics.jsonl, or None when none did. One function, so that both say it alike: a user
    watching for an exploding gradient reads the warning before opening lag-history.png."""
    records = io.read_jsonl(io.open_run_dir(run) / "metrics.jsonl")
    grads = [r for r in records if isinstance(r, dict) and r.get("kind") == "gradients"]
    history = lag_history(grads)
    note = None if history is None else history.overflow_note()
    return f"{note}; lag-history.png marks them" if note else None


def plot_attention_of_run(run_dir, out) -> list:
    """[out/attention.png] for an encoder–decoder run with attention that has a checkpoint:
    the weights of the first four test items, decoded greedily by the latest weights; []
    for any other run."""
    try:
        config = io.read_json(Path(run_dir) / "config.json")
    except (OSError, ValueError):
        return []
    train = config.get("train") if isinstance(config, dict) else None
    if not isinstance(train, dict) or train.get("task") not in SEQ2SEQ_TASKS:
        return []
    if train.get("attention", "none") == "none" or not io.checkpoint_steps(run_dir):
        return []
    _, cfg, model, data = runs.load_run(run_dir)
    task = tasks.make_task(cfg, data)
    return [plot_attention(task.attention_examples(model), Path(out) / "attention.png")]
