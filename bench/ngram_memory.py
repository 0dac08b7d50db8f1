"""The peak memory of charlm's n-gram baselines (rnnlab.tasks.ngram.ngram_baselines, as
`rnnlab train charlm` computes them at its end) against the estimate that `check_new_run`
refuses a corpus by (ngram.baseline_memory): bench/README.md, "The n-gram baselines' memory".

    python bench/ngram_memory.py 4000000            # every kind of text, N characters each
    python bench/ngram_memory.py 4000000 random-6000

Each kind runs in a fresh process: tracemalloc's peak of the call and the rise of the
process's peak resident set (VmHWM, reset just before the call) over what it held then, both
per training character, beside the estimate and the peak of counting the distinct n-grams
(what `check_new_run` does first when the bound that counts nothing does not fit). Linux.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import tracemalloc

import numpy as np

KINDS = ("random-2", "random-16", "random-90", "random-1000", "random-6000", "base64",
         "python-source", "pydoc")  # fmt: skip


def _text(kind: str, n: int) -> str:
    if kind.startswith("random-"):
        V = int(kind.split("-")[1])
        alphabet = np.array([chr(0x4E00 + i) if V > 200 else chr(33 + i) for i in range(V)])
        return "".join(alphabet[np.random.default_rng(0).integers(0, V, n)])
    if kind == "base64":
        return base64.encodebytes(np.random.default_rng(0).bytes(n * 3 // 4)).decode()[:n]
    if kind == "python-source":
        import pathlib
        import sysconfig

        parts, size = [], 0
        for p in sorted(pathlib.Path(sysconfig.get_paths()["stdlib"]).rglob("*.py")):
            try:
                parts.append(p.read_text("utf-8"))
            except (OSError, UnicodeDecodeError):
                continue
            size += len(parts[-1])
            if size > n:
                break
        return "".join(parts)[:n]
    from rnnlab.tasks.text import default_corpus

    d = default_corpus()  # (repeated past its 465k characters: its longer n-grams repeat)
    return (d * (n // len(d) + 1))[:n]


def _resident() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _high_water() -> int:
    """The process's peak resident set (VmHWM), reset to the current one by `_reset_peak`."""
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as f:  # (Linux ≥ 4.0: "5" resets VmHWM)
        f.write("5")


def one(kind: str, n: int) -> dict:
    from rnnlab.tasks import ngram
    from rnnlab.tasks.text import EVAL_TRACKS, CharVocab, baseline_order, split_text

    train, _, test = split_text(_text(kind, n))
    vocab = CharVocab(train)
    a, b = vocab.encode(train), vocab.encode(test)
    del train, test
    top = baseline_order(vocab.size)
    scored = (len(b) - 1) // EVAL_TRACKS * EVAL_TRACKS
    tracemalloc.start()
    grams = ngram.distinct_grams(a, vocab.size, top)
    counting = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    estimate = ngram.baseline_memory(len(a), vocab.size, top, grams)
    _reset_peak()
    before = _resident()
    tracemalloc.start()
    ngram.ngram_baselines(a, b[: scored + 1], vocab.size, max_order=top, start=1)
    traced = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    rise = _high_water() - before
    N = len(a)
    return {"kind": kind, "train_chars": N, "vocab": vocab.size,
            "traced_per_char": traced / N, "rss_rise_per_char": rise / N,
            "estimate_per_char": estimate / N, "counting_per_char": counting / N}  # fmt: skip


def main() -> None:
    n = int(sys.argv[1])
    if len(sys.argv) > 2 and sys.argv[2] == "--one":
        print(json.dumps(one(sys.argv[3], n)))
        return
    for kind in sys.argv[2:] or KINDS:
        out = subprocess.run([sys.executable, __file__, str(n), "--one", kind], check=True,
                             capture_output=True, text=True).stdout  # fmt: skip
        r = json.loads(out)
        print(f"{r['kind']:<14} {r['train_chars']:>11,} chars  V {r['vocab']:>5}  traced "
              f"{r['traced_per_char']:6.1f}  RSS rise {r['rss_rise_per_char']:6.1f}  estimate "
              f"{r['estimate_per_char']:6.1f} bytes a training character (counting the "
              f"distinct n-grams: {r['counting_per_char']:4.1f})", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
