"""The memory tasks' defaults per cell and length, and the digits' for the ReLU cells: what
`rnnlab train TASK --cell C --T N` trains with when nothing else is said
(rnnlab.tasks.defaults_for merges them over the task's defaults).

One set of defaults for every length fails: a budget that solves T = 100 stops an LSTM at
T = 200 just before it would have solved the task, and a learning rate that suits one task
throws another back to chance. So:

- the step budget grows linearly with T (STEPS_PER_T), and the run stops at the first
  validation that solves the task (the task's `solved`), so easy settings stay cheap;
- the temporal order trains at a learning rate of 3e-4: at 3e-3 (the issue's runs) and 1e-3
  the LSTM learns part of the order, then falls back to chance and stays there;
- on copy the LSTM's forget gate starts nearly open, keeping what the cell holds (bias 3:
  σ(3) = 0.95, σ(3)^100 ≈ 0.008, where σ(1) gives 1e-14), so the ten symbols survive the
  delay at initialisation;
- the IRNN trains on adding as Le, Jaitly & Hinton (2015) trained it: plain SGD with the
  gradient clipped, which keeps a ReLU network with identity recurrence stable.

The settings here are the ones that reproduced the papers' contrasts in the runs recorded
in docs/results.md ("what was tried"); `rnnlab reproduce` runs them.
"""

from __future__ import annotations

from rnnlab.train import INT_LIMIT

MEMORY_TASKS = ("adding", "copy", "temporal-order")

# Training steps per unit of T (the budget; early stop ends a solved run sooner).
STEPS_PER_T = {"adding": 60, "copy": 40, "temporal-order": 40}

# Settings by task, for every cell and length.
_BY_TASK: dict[str, dict[str, object]] = {
    # 3e-3 and 1e-3 (Adam) learn part of the order, then fall back to chance and stay there
    "temporal-order": dict(lr=3e-4),
}

# Settings by task and cell, whatever the length (over the task's).
_BY_CELL: dict[tuple[str, str], dict[str, object]] = {
    ("adding", "irnn"): dict(optimizer="sgd", momentum=0.0, lr=1e-2, clip_at=1.0),
    ("adding", "relu"): dict(optimizer="sgd", momentum=0.0, lr=1e-2, clip_at=1.0),
    ("copy", "lstm"): dict(forget_bias=3.0),
    ("digits", "irnn"): dict(lr=3e-4, clip_at=1.0),
    ("digits", "relu"): dict(lr=3e-4, clip_at=1.0),
}


def budget(task: str, T: int) -> int:
    """Training steps for a memory task at length T."""
    return STEPS_PER_T[task] * T


def overrides(task: str, cell: str, T: int | None) -> dict[str, object]:
    """The settings that `task` trains `cell` with at length T, over the task's own defaults
    (empty for tasks without such a table)."""
    out = {**_BY_TASK.get(task, {}), **_BY_CELL.get((task, cell), {})}
    if task in MEMORY_TASKS and isinstance(T, int) and not isinstance(T, bool) and T > 0:
        # a bad T is left to TrainConfig.validate, which names it; so is a T whose budget
        # would not fit in 64 bits (`--T 9223372036854775807` was refused as an `eval_every`
        # or `steps` of 64 bits, options never typed): the task's own budget stands then,
        # and T is refused by name (too long for memory, or for 64 bits)
        steps = budget(task, T)
        if steps <= INT_LIMIT:
            out.update(steps=steps, eval_every=max(250, steps // 40))
    return out
