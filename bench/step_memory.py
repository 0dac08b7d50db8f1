"""A training step's memory and time, one configuration of `rnnlab bench` at a time: what an
A/B of two source trees needs (bench/README.md, "An input read where it lies").

    python bench/step_memory.py memory [--out FILE]   # the 27 training configs: rnnlab's and
                                                      # torch's peak extra MB, as the bench
                                                      # measures it (a fresh process each)
    python bench/step_memory.py peak lstm S4 [--bi]   # the arrays alive at rnnlab's peak
    python bench/step_memory.py time [--out FILE]     # best-of-N ms of rnnlab's step

Run each with PYTHONPATH=<tree>/src for the trees compared, alternately, and without the
OPENBLAS_* variables (`env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE`). `peak` needs
RNNLAB_MALLOC=system and MALLOC_MMAP_THRESHOLD_=131072 (what the bench's memory child sets),
so that no retained buffer hides an array.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import sys
import time
import tracemalloc
from typing import Any

from rnnlab.bench import memory
from rnnlab.bench.configs import Config
from rnnlab.bench.runners import make_pair, rnnlab_step

SHAPES = ("S1", "S2", "S3", "S4")


def configs() -> list[Config]:
    """The bench's training configurations: every cell × shape × direction, then each cell's
    2-layer S2 stack."""
    out = []
    for cell in ("rnn", "lstm", "gru"):
        out += [Config(cell, s, bi, 1) for s in SHAPES for bi in (False, True)]
        out.append(Config(cell, "S2", False, 2))
    return out


def label(c: Config) -> str:
    return f"{c.cell} {c.shape} {'bi' if c.bidirectional else 'uni'} {c.layers}"


def measure_memory() -> dict[str, Any]:
    rows = []
    for c in configs():
        ours = memory.measure_memory("rnnlab", c)[0]["delta_mb"]
        theirs = memory.measure_memory("torch", c)[0]["delta_mb"]
        rows.append({"config": label(c), "rnnlab_mb": ours, "torch_mb": theirs})
        print(f"{label(c):16} rnnlab {ours:8.2f} MB  torch {theirs:8.2f} MB  "
              f"{theirs / ours:5.2f}x", flush=True)  # fmt: skip
    geomean = math.exp(sum(math.log(r["torch_mb"] / r["rnnlab_mb"]) for r in rows) / len(rows))
    print(f"geomean torch / rnnlab {geomean:.3f} (rnnlab {1 / geomean:.3f}x of torch's)")
    return {"rows": rows, "geomean_torch_over_rnnlab": geomean}


def peak_arrays(cell: str, shape: str, bi: bool) -> None:
    """One training step under tracemalloc (NumPy reports its arrays to it): the arrays alive
    at the highest point seen on a function return, by where they were made."""
    step = rnnlab_step(make_pair(None, Config(cell, shape, bi, 1)), "train")
    step()
    gc.collect()
    tracemalloc.start(6)
    base = tracemalloc.get_traced_memory()[0]
    best: list[Any] = [0, None]

    def hook(frame: Any, event: str, arg: Any) -> None:
        if event in ("return", "c_return"):
            now = tracemalloc.get_traced_memory()[0]
            if now > best[0] + (1 << 20):
                best[0], best[1] = now, tracemalloc.take_snapshot()

    sys.setprofile(hook)
    step()
    sys.setprofile(None)
    peak = tracemalloc.get_traced_memory()[1]
    print(f"{cell} {shape} {'bi' if bi else 'uni'}: peak {(peak - base) / 2**20:.1f} MB, "
          f"snapshot at {(best[0] - base) / 2**20:.1f} MB")  # fmt: skip
    for stat in best[1].statistics("traceback")[:12]:
        if stat.size < 1 << 19:
            break
        where = " <- ".join(f"{f.filename.split('src/')[-1]}:{f.lineno}" for f in stat.traceback)
        print(f"  {stat.size / 2**20:6.1f} MB  {where}")


def step_times(seconds: float = 1.0) -> dict[str, float]:
    """Best-of-N ms of rnnlab's training step (forward, MSE, backward) for each one-layer
    configuration, N steps filling `seconds` (at least 5)."""
    out = {}
    for c in configs():
        if c.layers != 1:
            continue
        step = rnnlab_step(make_pair(None, c), "train")
        step()
        step()
        best, total, n = math.inf, 0.0, 0
        while total < seconds or n < 5:
            t0 = time.perf_counter()
            step()
            dt = time.perf_counter() - t0
            best, total, n = min(best, dt), total + dt, n + 1
        out[label(c)] = best * 1e3
        print(f"{label(c):16} {best * 1e3:9.3f} ms", flush=True)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=("memory", "peak", "time"))
    parser.add_argument("cell", nargs="?", default="lstm")
    parser.add_argument("shape", nargs="?", default="S4", choices=SHAPES)
    parser.add_argument("--bi", action="store_true")
    parser.add_argument("--out", help="write the results as JSON to this file")
    args = parser.parse_args()
    if args.what == "peak":
        peak_arrays(args.cell, args.shape, args.bi)
        return 0
    result = measure_memory() if args.what == "memory" else step_times()
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
