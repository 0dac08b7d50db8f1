"""One change of the end-to-end character LM's step, off (A) and on (B), in one process:
the trainer of `rnnlab bench --end-to-end` (bench/end_to_end_profile.py's), blocks of 3
steps alternating A and B (the order swapped every round), the median step of each block;
printed: both medians over the rounds and the per-round ratio A/B (median, p10, p90). One
process and alternating blocks, so a slow spell of the host falls on both.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/step_ab.py CHANGE [--rounds 30]

CHANGE, and what A does instead:
  lookup       the first layer projects every row (no Embedding fold in the forward pass)
  loss         softmax cross-entropy on NumPy's passes (no compiled pass)
  norm         the gradient norm from float64 copies and dot products
  groups       the embedding's distinct ids by np.unique's sort (not counted by id)
  update       the clip written into the gradients, then the weights and squares read
               again for NaN/inf (not the clip's scale and the check in Adam's pass)
"""

from __future__ import annotations

import argparse
import functools
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from rnnlab import fast, losses, optim, recurrence
from rnnlab.bench.end_to_end import Model, rnnlab_trainer


def _switch(change: str) -> Callable[[bool], None]:
    """set(on): the change on (B) or off (A)."""
    if change == "lookup":
        share = recurrence.LOOKUP_MAX_SHARE

        def set_lookup(on: bool) -> None:
            recurrence.LOOKUP_MAX_SHARE = share if on else -1.0

        return set_lookup
    if change == "update":
        takes, update = optim.takes_grad_scale, optim.Optimizer.update

        def unknown(self, *args, **kwargs):
            update(self, *args, **kwargs)
            return frozenset()

        def set_update(on: bool) -> None:
            optim.takes_grad_scale = takes if on else (lambda opt: False)
            optim.Optimizer.update = update if on else unknown  # type: ignore[method-assign]

        return set_update
    if change == "groups":
        counted = recurrence.Lookup.__dict__["groups"]

        def unique(self):
            seen, first, which = np.unique(self.ids.reshape(-1), return_index=True,
                                           return_inverse=True)  # fmt: skip
            return seen, first, which.reshape(-1)

        sorted_ = functools.cached_property(unique)
        sorted_.__set_name__(recurrence.Lookup, "groups")

        def set_groups(on: bool) -> None:
            recurrence.Lookup.groups = counted if on else sorted_  # type: ignore[method-assign]

        return set_groups
    owner, name = {"loss": (losses, "_compiled_cross_entropy"),
                   "norm": (fast, "sum_of_squares")}[change]  # fmt: skip
    compiled = getattr(owner, name)

    def set_compiled(on: bool) -> None:
        setattr(owner, name, compiled if on else (lambda *args: None))

    return set_compiled


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("change", choices=["lookup", "loss", "norm", "groups", "update"])
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    switch = _switch(args.change)
    with tempfile.TemporaryDirectory() as d:
        trainer = rnnlab_trainer(Model(), Path(d) / "run", 100_000)
        s = 0
        for _ in range(4):
            trainer.train_step(s)
            s += 1
        medians: dict[str, list[float]] = {"A": [], "B": []}
        for r in range(args.rounds):
            for label in ("A", "B") if r % 2 == 0 else ("B", "A"):
                switch(label == "B")
                times = []
                for _ in range(3):
                    t0 = time.perf_counter()
                    trainer.train_step(s)
                    times.append(time.perf_counter() - t0)
                    s += 1
                medians[label].append(statistics.median(times))
        switch(True)
    a, b = medians["A"], medians["B"]
    ratios = sorted(x / y for x, y in zip(a, b, strict=True))
    n = len(ratios)
    print(f"{args.change}: A (off) {statistics.median(a) * 1e3:.1f} ms, B (on) "
          f"{statistics.median(b) * 1e3:.1f} ms a step; per round A/B median "
          f"{statistics.median(ratios):.3f}, p10 {ratios[n // 10]:.3f}, "
          f"p90 {ratios[(9 * n) // 10]:.3f} ({n} rounds)")  # fmt: skip


if __name__ == "__main__":
    main()
