"""`rnnlab plot RUN`: PNGs of a run's metrics (rnnlab.diagnostics.report)."""

from __future__ import annotations

import sys
from pathlib import Path

from rnnlab import _checks, io
from rnnlab.cli.options import Parser
from rnnlab.cli.options import path as path_option
from rnnlab.diagnostics import report
from rnnlab.diagnostics.training import lag_history


def main(argv: list[str] | None = None) -> int:
    """`rnnlab plot RUN [--out DIR]`; returns the exit status."""
    p = Parser(
        prog="rnnlab plot",
        description="Plot a run's metrics.jsonl: training loss, validation metrics, "
        "gradient norms before/after clipping, per-layer gradient norms and the lag "
        "profile over training, and an encoder-decoder's attention (PNGs; needs "
        "matplotlib).",
    )
    p.add_argument("run", type=path_option("run", "a run directory"), help="a run directory")
    p.add_argument("--out", default=None, type=path_option("--out", "a directory"),
                   help="where to write the PNGs (default: RUN/plots)")  # fmt: skip
    args = p.parse_args(sys.argv[1:] if argv is None else list(argv))
    if args.out and Path(args.out).exists() and not Path(args.out).is_dir():
        _checks.fail("--out", "a directory (new or existing) for the PNGs",
                     f"'{args.out}', which is a file")  # fmt: skip
    try:
        paths = report.plot_run(args.run, args.out)
    except OSError as e:  # making --out or writing in it ("[Errno 20] Not a directory: ...")
        if args.out is None or not _within(e.filename, Path(args.out)):
            raise
        _checks.fail("--out", "a directory (new or existing) for the PNGs that rnnlab can "
                     "write into", f"'{args.out}' ({e.strerror}: '{e.filename}')")  # fmt: skip
    records = io.read_jsonl(Path(args.run) / "metrics.jsonl")
    grads = [r for r in records if isinstance(r, dict) and r.get("kind") == "gradients"]
    if not grads:
        print(
            'rnnlab: warning: no gradient records ("kind": "gradients") in metrics.jsonl, so '
            "no per-layer norms or lag profile",
            file=sys.stderr,
        )
    elif lag_history(grads) is None:  # the README's `rnnlab plot RUN` promises one: say why not
        print(
            'rnnlab: warning: no lag profile in metrics.jsonl ("lags" is null in every gradient '
            "record), so no lag-history.png: it is logged at evaluation steps (multiples of "
            "--eval-every) that start from a zero state, which a run shorter than --eval-every, "
            "one that carries its state across windows (charlm, --bptt) or an output-feedback "
            "model has none of (docs/gradients.md)",
            file=sys.stderr,
        )
    warning = report.overflow_warning(args.run)
    if warning:
        print(f"rnnlab: warning: {warning}", file=sys.stderr)
    for path in paths:
        print(path)
    return 0


def _within(filename: object, out: Path) -> bool:
    """Whether an OSError's `filename` is `out`, one of its parents or a file in it."""
    if not isinstance(filename, (str, Path)):
        return False
    return Path(filename) in (out, *out.parents) or Path(filename).parent == out
