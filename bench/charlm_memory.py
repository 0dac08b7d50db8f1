"""The peak memory of reading and encoding a charlm corpus, and of a training step of a large
vocabulary: bench/README.md, "charlm's memory", and the constants they set
(rnnlab.tasks.text.PEAK_PER_BYTE, STEP_BYTES_PER_OUTPUT).

    python bench/charlm_memory.py read prose 200     # a 200 MB file of the pydoc topics' lines
    python bench/charlm_memory.py read wide 200      # ASCII and one emoji, a BOM, CRLF and CR
    python bench/charlm_memory.py step 20000         # a training step of 20,000 symbols
    python bench/charlm_memory.py eval 20000         # evaluate's 256 steps of 8 tracks

`read`: the file is written to a temporary folder, then a fresh process makes the task
(`CharLM`, as `rnnlab train charlm --data FILE` does) and its training tracks; its peak
resident set (getrusage's ru_maxrss) is printed, per byte of the file. `step`: a fresh
process runs `rnnlab train charlm` for 2 steps (batch 32, window 100, hidden 16) on a text of
V distinct characters, its evaluation left out (stubbed), and prints its peak. `eval`: a
fresh process makes that task and a model, then evaluates its validation piece 256 steps at
a time (EVAL_CHUNK_BYTES lifted), and prints the rise of its peak per output. Linux.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path


def _write(kind: str, megabytes: int, path: Path) -> None:
    import random

    from rnnlab.tasks.text import default_corpus

    lines, rng, size = default_corpus().split("\n"), random.Random(0), megabytes * 10**6
    out, have = [], 0
    while have < size:  # runs of 50 lines from random places: prose, not one text repeated
        i = rng.randrange(len(lines) - 50)
        out.append("\n".join(lines[i : i + 50]) + "\n")
        have += len(out[-1].encode())
    data = "".join(out).encode()[:size]
    if kind == "wide":
        data = b"\xef\xbb\xbf" + "\U0001f600".encode() + data.replace(b"\n", b"\r\n") + b"\rend"
    path.write_bytes(data)


_READ = """
import resource, sys
from rnnlab.tasks.text import CharLM
from rnnlab.train import TrainConfig
task = CharLM(TrainConfig(task="charlm", data=sys.argv[1], batch_size=32, seq_len=100))
task._training_tracks()
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, task.vocab.size)
"""

_EVAL = """
import os, sys
from rnnlab import tasks
from rnnlab.tasks import text
from rnnlab.train import TrainConfig
def high():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmHWM"))
cfg = TrainConfig.from_dict({**tasks.defaults("charlm"), "data": sys.argv[1], "batch_size": 4,
                             "seq_len": 10, "hidden": 16})
task = tasks.make_task(cfg)
model = tasks.build_model(tasks.model_spec(cfg, task), seed=0)
text.EVAL_CHUNK_BYTES = 1 << 40
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # (VmHWM from here)
before = high()
task.evaluate(model, "valid", baselines=False)
print((high() - before) / (256 * text.EVAL_TRACKS * task.vocab.size))
"""

_STEP = """
import resource, sys
from rnnlab.cli import main
from rnnlab.tasks import text
one = {"nats_per_char": 1.0, "bits_per_char": 1.0, "order": 1}
text.CharLM.evaluate = lambda self, model, split, **kw: {**one, "chars": 1, "unknown_chars": 0}
text.CharLM.baselines = lambda self, split="test": {"unigram": one}
main(["train", "charlm", "--data", sys.argv[1], "--steps", "2", "--hidden", "16", "--quiet",
      "--run-dir", sys.argv[2]])
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
"""


def main() -> None:
    what = sys.argv[1]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "corpus.txt"
        if what == "read":
            kind, megabytes = sys.argv[2], int(sys.argv[3])
            _write(kind, megabytes, path)
            out = subprocess.run([sys.executable, "-c", _READ, str(path)], check=True,
                                 capture_output=True, text=True).stdout.split()  # fmt: skip
            peak, size = int(out[0]), path.stat().st_size
            print(f"read {kind}: {size:,} bytes, {out[1]} symbols: peak {peak / 1e9:.2f} GB, "
                  f"{peak / size:.1f} bytes a byte")  # fmt: skip
        else:
            what, V = sys.argv[1], int(sys.argv[2])
            symbols = [chr(c) for c in range(0x4E00, 0x30000) if not 0xD800 <= c < 0xE000][:V]
            rng = __import__("random").Random(0)
            body = "".join(symbols) + "".join(rng.choice(symbols) for _ in range(100_000))
            path.write_text(body, encoding="utf-8")
            code = _STEP if what == "step" else _EVAL
            out = subprocess.run([sys.executable, "-c", code, str(path), str(Path(tmp) / "r")],
                                 check=True, capture_output=True, text=True).stdout.split()
            if what == "step":
                print(f"step of {V:,} characters: peak {int(out[-1]) / 1e9:.2f} GB")
            else:
                print(f"evaluate of {V:,} characters: {float(out[-1]):.1f} bytes an output")


if __name__ == "__main__":
    main()
