"""Loss and metric curves of a run directory as PNG files (matplotlib is an optional extra)."""

from __future__ import annotations

import json
from pathlib import Path


def _pyplot():
    try:
        import matplotlib
    except ImportError as e:
        raise ImportError("plots need matplotlib: pip install 'rnnlab[plot]'") from e
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def read_metrics(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_run(run_dir) -> list[Path]:
    """Write loss.png (training loss, gradient norm) and valid.png (validation metrics)."""
    run_dir = Path(run_dir)
    records = read_metrics(run_dir)
    train = [r for r in records if "loss" in r and "split" not in r]
    valid = [r for r in records if r.get("split") == "valid"]
    if not train:
        return []
    plt = _pyplot()
    written = []
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.5))
    ax1.plot([r["step"] for r in train], [r["loss"] for r in train], lw=1)
    ax1.set_xlabel("step")
    ax1.set_ylabel("training loss")
    ax2.semilogy([r["step"] for r in train], [max(r["grad_norm"], 1e-12) for r in train], lw=1)
    ax2.set_xlabel("step")
    ax2.set_ylabel("gradient norm (before clipping)")
    fig.tight_layout()
    path = run_dir / "loss.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    written.append(path)
    keys = sorted(
        {
            k
            for r in valid
            for k, v in r.items()
            if isinstance(v, (int, float)) and k not in ("step",)
        }
    )
    if valid and keys:
        fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.2), squeeze=False)
        for ax, k in zip(axes[0], keys, strict=True):
            ax.plot([r["step"] for r in valid if k in r], [r[k] for r in valid if k in r], "o-")
            ax.set_xlabel("step")
            ax.set_ylabel(f"valid {k}")
        fig.tight_layout()
        path = run_dir / "valid.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written
