"""Time io.read_jsonl on a metrics.jsonl of 100,000 lines: what `train --resume` reads before
its first step (io.keep_jsonl_until) and `rnnlab plot` reads. The log is made as a charlm run
logs (per 10 steps a training record and a gradient record, with three layers' norms before
and after clipping; an evaluation every 50 steps), into a temporary folder; best and median
of repeated reads, beside the parse of its lines with and without the check of a key given
twice that the JSON files read whole have (io.files._loads).

    PYTHONPATH=src python bench/read_jsonl_time.py [LINES] [REPEATS]
"""

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from rnnlab import io
from rnnlab.io import files


def make_log(path: Path, lines: int) -> None:
    rng = np.random.default_rng(0)
    out = []
    step = 0
    while len(out) < lines:
        step += 10
        norms = {k: float(v) for k, v in zip(("0.embedding", "1.l0", "3.linear"),
                                             rng.random(3), strict=True)}  # fmt: skip
        out.append({"step": step, "kind": "gradients", "grad_norm_before": float(rng.random()),
                    "grad_norm_after": float(rng.random()), "layer_norms_before": norms,
                    "layer_norms_after": dict(norms), "lags": None})  # fmt: skip
        out.append({"step": step, "loss": float(rng.random() * 4), "grad_norm": float(rng.random()),
                    "lr": 0.002 * float(rng.random()), "time": float(rng.random() * 100)})
        if step % 50 == 0:
            out.append({"step": step, "split": "valid", "loss": float(rng.random() * 4),
                        "bpc": float(rng.random() * 6), "time": float(rng.random() * 100)})
    # (as append_jsonl writes each line; written at once: 100,000 appends take a while)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in out[:lines]),
                    encoding="utf-8")  # fmt: skip


def main() -> None:
    lines = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    repeats = int(sys.argv[2]) if len(sys.argv) > 2 else 7
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "metrics.jsonl"
        make_log(path, lines)
        times: dict[str, list[float]] = {"read_jsonl": [], "parse": [], "parse, keys checked": []}
        for _ in range(repeats):
            t0 = time.perf_counter()
            n = len(io.read_jsonl(path))  # (not held: the next read's collector would walk it)
            times["read_jsonl"].append(time.perf_counter() - t0)
        # the parse of its lines as read_jsonl parses them (without the check of keys given
        # twice) and with it, as the files read whole are parsed: interleaved (after the reads,
        # whose timing the lines held in memory would change: more objects for the collector)
        text = path.read_text(encoding="utf-8").split("\n")[:-1]
        for _ in range(repeats):
            for name, unique in (("parse", False), ("parse, keys checked", True)):
                t0 = time.perf_counter()
                for line in text:
                    files._loads(line, unique=unique)
                times[name].append(time.perf_counter() - t0)
        print(f"{n:,} records ({path.stat().st_size / 1e6:.1f} MB), {repeats} times:")
        for name, t in times.items():
            print(f"  {name:<20} best {min(t) * 1e3:4.0f} ms, median "
                  f"{statistics.median(t) * 1e3:4.0f} ms")


if __name__ == "__main__":
    main()
