"""What splitting an LSTM step's units between the two threads, instead of its batch, could
win at the S4 inference shape (B, I, H) = (128, 256, 512): the per-step product each thread
makes, timed as two one-thread processes at once (as the two threads share the caches and
the memory bus). By batch, each thread multiplies 64 rows by all of [W_ih; W_hh] (768 × 2048,
6 MB); by units, all 128 rows by its half (768 × 1024, 3 MB). Torch's `mm` (MKL) stands in
for the loops' product: an upper bound on the split's gain before the per-step barrier it
would need.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE sh -c \
        'python bench/split_by_units.py batch & python bench/split_by_units.py batch; wait'
    (then the same with `units`)
"""

from __future__ import annotations

import sys
import time

import torch

B, I, H = 128, 256, 512
CALLS, ROUNDS = 200, 7


def main() -> None:
    torch.set_num_threads(1)
    split = sys.argv[1] if len(sys.argv) > 1 else "batch"
    if split not in ("batch", "units"):
        raise SystemExit(f"split: 'batch' or 'units', not {split!r}")
    m, n = (B // 2, 4 * H) if split == "batch" else (B, 2 * H)
    k = I + H
    w, x, out = torch.randn(k, n), torch.randn(m, k), torch.empty(m, n)
    for _ in range(50):
        torch.mm(x, w, out=out)
    times = []
    for _ in range(ROUNDS):
        t0 = time.perf_counter()
        for _ in range(CALLS):
            torch.mm(x, w, out=out)
        times.append((time.perf_counter() - t0) / CALLS)
    median = sorted(times)[ROUNDS // 2]
    print(f"{split}: {m} × {k} × {n}, {median * 1e6:.1f} µs, {2 * m * n * k / median / 1e9:.1f} "
          "GFLOP/s")


if __name__ == "__main__":
    main()
