"""Output-feedback (Jordan) layer speed: one training step (forward, then BPTT to every
gradient) and one inference pass of rnnlab.feedback.OutputFeedback, free running and with
scheduled sampling, softmax fed back, float32.

It times whatever rnnlab is importable, so an A/B of two trees is two runs, e.g. the loop of
its own the layer had before it ran on the library's (commit cb336b3) against today's:

    git worktree add /tmp/old cb336b3
    for i in 1 2 3; do
      PYTHONPATH=/tmp/old/src python bench/feedback_speed.py --out old$i.json
      python bench/feedback_speed.py --out new$i.json
    done

and RNNLAB_NO_NUMBA=1 times today's NumPy path. Figures: median of --rounds calls, ms. On a
busy machine run `OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 ... --clock cpu`: with one thread
the process's CPU time is its compute time whatever the neighbours do.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np

from rnnlab.feedback import OutputFeedback

SHAPES = {"S2": (32, 100, 64, 128, 64), "S5": (64, 50, 32, 256, 32)}  # B, T, I, H, K


def _cpu() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _cases(layer, x, y, dO) -> dict:
    def train(mode):
        f = layer.forward(x, targets=y, mode=mode, p=0.5, rng=np.random.default_rng(1))
        layer.backward(f, dO)

    return {
        "train teacher": lambda: train("teacher"),
        "train free": lambda: train("free"),
        "train scheduled": lambda: train("scheduled"),
        "infer": lambda: layer.forward(x, mode="free", grad=False),
    }


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--out", help="write the figures as JSON here")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    args = ap.parse_args(argv)
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    res = {"host": _cpu(), "clock": args.clock, "ms": {}}
    for hidden in (False, True):
        for name, (B, T, I, H, K) in SHAPES.items():
            rng = np.random.default_rng(0)
            layer = OutputFeedback(I, H, K, feedback="softmax", hidden_recurrence=hidden,
                                   dtype=np.float32, rng=rng)  # fmt: skip
            x = rng.standard_normal((B, T, I)).astype(np.float32)
            y = rng.integers(0, K, (B, T))
            dO = rng.standard_normal((B, T, K)).astype(np.float32)

            cases = _cases(layer, x, y, dO)
            for label, fn in cases.items():
                fn()
                fn()
                times = []
                for _ in range(args.rounds):
                    t0 = clock()
                    fn()
                    times.append(clock() - t0)
                key = f"{label} {'jordan-elman' if hidden else 'jordan'} {name}"
                res["ms"][key] = round(float(np.median(times)) * 1e3, 3)
                print(f"{key:40s} {res['ms'][key]:9.2f} ms")
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(res, fh, indent=1)


if __name__ == "__main__":
    main()
