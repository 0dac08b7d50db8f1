"""A/B in one process: the bench's training step with the input projection before the loop
("hoisted") and with x_t multiplied inside the loop ("projecting", rnnlab.fast.projecting_loop
with a full tape), interleaved with PyTorch's step so that both variants see the same host.

The switch is fast.projects_each_step for training only (inference is left as it is). Each
round times 3 steps of each variant and of PyTorch; the medians over the rounds are printed
with PyTorch's median over each (above 1: rnnlab is faster). Before timing, each variant's
step is run once with fast.projecting_loop counted: the script stops where the "projecting"
variant does not take that path (the tiles off on this host, or G·H not a multiple of their
panel width: both variants would be the same code) or the "hoisted" one does, and where the
two variants' outputs or gradients differ by more than float32 rounding (relative 1e-4 of
the largest value).

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/projecting_ab.py \\
        --cell lstm --shapes S1,S2,S3,S4 [--bidirectional] [--layers 2] [--rounds 10]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

import rnnlab.fast as fast
from rnnlab.bench import configs, runners

_DECIDE = fast.projects_each_step
_LOOP = fast.projecting_loop
_taken: list[bool] = []


def _counting(*args, training=False, **kw):
    _taken.append(training)
    return _LOOP(*args, training=training, **kw)


def _switch(projecting: bool) -> None:
    def decide(cell, I, H, dtype=np.float32, training=False):
        return _DECIDE(cell, I, H, dtype, training) and (projecting or not training)

    fast.projects_each_step = decide


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cell", default="lstm", choices=["rnn", "lstm", "gru"])
    ap.add_argument("--shapes", default="S1,S2,S3,S4")
    ap.add_argument("--bidirectional", action="store_true")
    ap.add_argument("--layers", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=10)
    a = ap.parse_args()
    torch = runners.import_torch()
    torch.set_num_threads(2)
    variants = {"hoisted": False, "projecting": True}
    fast.projecting_loop = _counting
    for shape in a.shapes.split(","):
        pair = runners.make_pair(torch, configs.Config(a.cell, shape, a.bidirectional, a.layers))
        ours, theirs = runners.rnnlab_step(pair, "train"), runners.torch_step(torch, pair, "train")
        results = {}
        for name, on in variants.items():
            _switch(on)
            ours()
            _taken.clear()
            out, grads = ours()
            if any(_taken) != on:
                raise SystemExit(
                    f"{a.cell} {shape}: the {name} variant "
                    f"{'did not take' if on else 'took'} the projecting loop in training "
                    "(is rnnlab info's tiles line 'on', and G·H a multiple of their panels?)"
                )
            results[name] = (out.copy(), {k: v.copy() for k, v in grads.items()})
        (o1, g1), (o2, g2) = results.values()
        pairs = [(o1, o2), *((g1[k], g2[k]) for k in g1)]
        differ = max(float(np.abs(x - y).max() / max(np.abs(x).max(), 1e-30)) for x, y in pairs)
        if differ > 1e-4:
            raise SystemExit(f"{a.cell} {shape}: the variants differ by {differ:.1e} (relative)")
        theirs()
        times: dict[str, list[float]] = {name: [] for name in [*variants, "torch"]}
        for _ in range(a.rounds):
            for name, on in variants.items():
                _switch(on)
                start = time.perf_counter()
                for _ in range(3):
                    ours()
                times[name].append((time.perf_counter() - start) / 3)
            start = time.perf_counter()
            for _ in range(3):
                theirs()
            times["torch"].append((time.perf_counter() - start) / 3)
            time.sleep(0.05)
        torch_ms = statistics.median(times["torch"])
        cells = "  ".join(
            f"{name} {statistics.median(v) * 1e3:.2f} ms ({torch_ms / statistics.median(v):.2f}x)"
            for name, v in times.items()
        )
        layout = f"{a.layers}-layer" if a.layers > 1 else ("bi" if a.bidirectional else "uni")
        print(f"{a.cell} {shape} {layout}: {cells}; relative difference {differ:.1e}", flush=True)


if __name__ == "__main__":
    main()
