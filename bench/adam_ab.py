"""A/B in one process: Adam's update of the end-to-end character LM's parameters (`rnnlab bench
--end-to-end`'s model: embedding 104 × 64, two LSTM layers of 256, the readout 256 → 104;
float32, 0.89 M values) on the compiled one-pass kernel (rnnlab.fast.adam_step) against the
NumPy path (RNNLAB_NO_NUMBA, switched inside the process with rnnlab.settings.override),
interleaved round by round, inside a session of rnnlab.fast.parallel as in Trainer.train_step.
Each round times `--updates` updates on each path; the figures are ms per update.

`--split` also times the kernel with the elements split over rnnlab's threads (two halves
of the whole parameter set, one hand-over a step, rnnlab.fast.parallel.run_parts).

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/adam_ab.py [--rounds 60]
        [--updates 20] [--split]
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import numpy as np

from rnnlab import fast, settings
from rnnlab.bench.end_to_end import Model, rnnlab_trainer
from rnnlab.fast import kernels, parallel
from rnnlab.optim import Adam


def _split_update(opt: Adam, params, grads, state, lr: float) -> None:
    """Adam.update's arithmetic on the kernel with the elements split in two halves over the
    threads (the bench's variant only: float32, C-contiguous, no weight decay)."""
    t = int(state["step"]) + 1
    b1, b2 = opt.betas
    c = (1.0 - b1, b2, 1.0 - b2, math.sqrt(1.0 - b2**t), opt.eps, lr / (1.0 - b1**t), 0.0)
    flat = [(params[k].reshape(-1), grads[k].reshape(-1), state[f"m/{k}"].reshape(-1),
             state[f"v/{k}"].reshape(-1)) for k in params]  # fmt: skip
    offsets = np.cumsum([0] + [a[0].size for a in flat])
    n = int(offsets[-1])

    def span(i0: int, i1: int) -> None:
        for k, arrays in enumerate(flat):
            lo, hi = max(i0, offsets[k]) - offsets[k], min(i1, offsets[k + 1]) - offsets[k]
            if lo < hi:
                kernels.adam_pass(*(a[lo:hi] for a in arrays), *c, kernels.PLAIN)

    parallel.run_parts(span, [(0, n // 2), (n // 2, n)])
    state["step"] = np.array(t, dtype=np.int64)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=60)
    ap.add_argument("--updates", type=int, default=20)
    ap.add_argument("--split", action="store_true")
    args = ap.parse_args()
    if not fast.available():
        raise SystemExit("rnnlab.fast is unavailable here (numba, or RNNLAB_NO_NUMBA=1)")
    with tempfile.TemporaryDirectory() as d:
        params = rnnlab_trainer(Model(), Path(d) / "run", 1).model.params
    rng = np.random.default_rng(0)
    grads = {k: (rng.standard_normal(p.shape) * 1e-3).astype(p.dtype) for k, p in params.items()}
    opt = Adam(lr=2e-3)
    print("parameters:", ", ".join(f"{k} {p.shape}" for k, p in params.items()),
          f"({sum(p.size for p in params.values()):,} {next(iter(params.values())).dtype})")

    paths = ["numpy", "compiled"] + (["split"] if args.split else [])
    runs = {name: ({k: p.copy() for k, p in params.items()}, None) for name in paths}
    states = {name: opt.init(runs[name][0]) for name in paths}
    times: dict[str, list[float]] = {name: [] for name in paths}

    def once(name: str) -> float:
        ps, st = runs[name][0], states[name]
        t0 = time.perf_counter()
        for _ in range(args.updates):
            if name == "split":
                _split_update(opt, ps, grads, st, opt.lr)
            else:
                with settings.override(no_numba=name == "numpy"):
                    opt.update(ps, grads, st)
        return (time.perf_counter() - t0) / args.updates * 1e3

    with parallel.session():
        for name in paths:  # warm up: compile or load the kernel
            once(name)
        for _ in range(args.rounds):
            for name in paths:
                times[name].append(once(name))
    for name in paths:
        x = np.array(times[name])
        p10, p90 = np.percentile(x, [10, 90])
        print(f"{name:9s} median {np.median(x):.3f} ms an update (p10-p90 {p10:.3f}-{p90:.3f})")
    ref = np.median(times["numpy"])
    for name in paths[1:]:
        print(f"numpy / {name}: {ref / np.median(times[name]):.2f}x")
    same = all(np.array_equal(runs["numpy"][0][k], runs["compiled"][0][k]) for k in params)
    print("compiled and NumPy weights bit for bit equal after the same updates:", same)


if __name__ == "__main__":
    main()
