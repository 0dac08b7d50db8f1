"""Data-parallel training over MPI on one machine: steps/s for 1 and 2 ranks, allreduce time.

Two measurements, each in fresh processes started by the mpich wheel's mpiexec:

  steps/s    `rnnlab train` for the same global batch B: one process with --batch-size B,
             and `mpiexec -n 2` with --batch-size B/2 (each rank half the rows); the rate
             is taken from metrics.jsonl between step 20 and the last step, so start-up and
             the compiled loops' first calls are left out. Evaluation is pushed past the end.
  allreduce  rnnlab.distributed.Communicator.allreduce (Iallreduce, polled) and mpi4py's
             blocking Allreduce of float32 buffers of 0.25 to 16 MB between 2 ranks:
             the median of 30 calls after 5 warm-up calls, in ms and in ms per MB.

    python bench/mpi_scaling.py [--out bench/results/mpi-DATE.json] [--steps 120]

Every run records the load average at its start: on a shared 2-core machine 2 ranks compete
with everything else for the same two cores, and the figures move with the neighbours.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MAIN = "import sys; from rnnlab.cli import main; sys.exit(main(sys.argv[1:]))"
MPIEXEC = shutil.which("mpiexec", path=str(Path(sys.executable).parent)) or "mpiexec"

PROBE = """
import time, numpy as np
from mpi4py import MPI
from rnnlab import distributed
comm = distributed.Communicator()
out = []
for mb in (0.25, 1, 4, 16):
    buf = np.ones(int(mb * 2**20 // 4), np.float32)
    for name, fn in (("rnnlab", lambda: comm.allreduce(buf)),
                     ("blocking", lambda: MPI.COMM_WORLD.Allreduce(MPI.IN_PLACE, buf))):
        times = []
        for i in range(35):
            MPI.COMM_WORLD.Barrier()
            t = time.perf_counter(); fn(); times.append(time.perf_counter() - t)
        ms = float(np.median(times[5:])) * 1e3
        out.append({"MB": mb, "call": name, "ms": ms, "ms_per_MB": ms / mb})
if comm.rank == 0:
    import json; print(json.dumps(out))
"""

CASES = [
    # (name, global batch, arguments)
    ("adding lstm H128 T100", 64, ["adding", "--cell", "lstm", "--hidden", "128", "--T", "100"]),
    ("adding gru H128 T100", 64, ["adding", "--cell", "gru", "--hidden", "128", "--T", "100"]),
    ("charlm lstm H256 L64", 64, ["charlm", "--hidden", "256", "--seq-len", "64",
                                  "--dropout", "0", "--time-limit", "0"]),  # fmt: skip
]


def _rate(run: Path) -> float:
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().split("\n") if x]
    timed = [r for r in rows if "loss" in r and r["step"] >= 20]
    a, b = timed[0], timed[-1]
    return (b["step"] - a["step"]) / (b["time"] - a["time"])


def _train(ranks: int, batch: int, args: list[str], steps: int, where: Path) -> float:
    run = where / f"run-{ranks}"
    common = [*args, "--steps", str(steps), "--eval-every", str(10 * steps),
              "--checkpoint-every", str(10 * steps), "--quiet", "--run-dir", str(run)]  # fmt: skip
    cmd = [sys.executable, "-c", MAIN, "train", *common, "--batch-size", str(batch // ranks)]
    if ranks > 1:
        cmd = [MPIEXEC, "-launcher", "fork", "-n", str(ranks), *cmd]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    return _rate(run)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="")
    p.add_argument("--steps", type=int, default=120)
    a = p.parse_args()
    record = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cpu": _cpu(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "load_average_at_start": os.getloadavg(),
        "command": "python bench/mpi_scaling.py " + " ".join(sys.argv[1:]),
        "training": [],
    }
    done = subprocess.run([MPIEXEC, "-launcher", "fork", "-n", "2", sys.executable, "-c", PROBE],
                          check=True, capture_output=True, text=True)  # fmt: skip
    record["allreduce"] = json.loads(done.stdout)
    for r in record["allreduce"]:
        print(f"allreduce {r['call']:<8} {r['MB']:>5} MB {r['ms']:8.3f} ms "
              f"({r['ms_per_MB']:.3f} ms/MB)", file=sys.stderr)  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        for name, batch, args in CASES:
            row = {"case": name, "global_batch": batch}
            for ranks in (1, 2):
                row[f"steps_per_s_{ranks}"] = _train(ranks, batch, args, a.steps, Path(tmp))
                shutil.rmtree(Path(tmp) / f"run-{ranks}")
            row["speedup"] = row["steps_per_s_2"] / row["steps_per_s_1"]
            record["training"].append(row)
            print(f"{name:<24} B={batch}: 1 rank {row['steps_per_s_1']:.2f} steps/s, "
                  f"2 ranks {row['steps_per_s_2']:.2f} steps/s ({row['speedup']:.2f}x)",
                  file=sys.stderr)  # fmt: skip
    record["load_average_at_end"] = os.getloadavg()
    text = json.dumps(record, indent=1)
    if a.out:
        Path(a.out).write_text(text + "\n")
    print(text)


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


if __name__ == "__main__":
    main()
