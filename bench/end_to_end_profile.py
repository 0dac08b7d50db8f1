"""Where the time of rnnlab's end-to-end training step goes (the character LM of `rnnlab bench
--end-to-end`): cProfile of 12 steps after 3 warm-up steps, on the main thread (the worker
thread's share of a split shows as the main thread's wait for it, `acquire`).

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/end_to_end_profile.py
    RNNLAB_BLAS=mkl ... (the loops' products on MKL), RNNLAB_NUM_THREADS=1 ... (one thread)
"""

from __future__ import annotations

import cProfile
import io
import pstats
import tempfile
import time
from pathlib import Path

from rnnlab.bench.end_to_end import Model, rnnlab_trainer
from rnnlab.fast import parallel


def main() -> None:
    with tempfile.TemporaryDirectory() as d:
        trainer = rnnlab_trainer(Model(), Path(d) / "run", 40)
        for s in range(3):
            trainer.train_step(s)
        times = []
        profile = cProfile.Profile()
        for s in range(3, 15):
            t0 = time.perf_counter()
            profile.enable()
            trainer.train_step(s)
            profile.disable()
            times.append(time.perf_counter() - t0)
        print("threads", parallel.num_threads(), "seconds a step:",
              " ".join(f"{t:.3f}" for t in times))  # fmt: skip
        out = io.StringIO()
        pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(15)
        print(out.getvalue())


if __name__ == "__main__":
    main()
