"""The memory tasks' defaults per cell and length: what `rnnlab train TASK --cell C --T N`
trains with when nothing else is said (rnnlab.recipes.defaults merges them over the task's).

One set of defaults for every length fails in both directions: a budget that solves T = 100
stops an LSTM at T = 200 just before it would have solved the task, and the forget-gate bias
of 1 that suits short lags lets the memory of the first marker decay as f^lag, which at
f = σ(1) ≈ 0.73 and a lag of 90 steps leaves nothing to learn from. So:

- the step budget grows linearly with T (`steps_per_T`), and the run stops at the first
  validation that solves the task (the task's `solved`), so easy settings stay cheap;
- the LSTM's forget gate starts nearly shut (bias 3 or more: σ(3)^90 ≈ 0.01, not 1e-12);
- the IRNN trains as Le, Jaitly & Hinton (2015) trained it: plain SGD with a small learning
  rate and clipping, which is what keeps a ReLU network with identity recurrence stable.

The settings here are the ones that reproduced the papers' contrasts in the runs recorded
in docs/results.md ("what was tried"); `rnnlab reproduce` runs them.
"""

from __future__ import annotations

MEMORY_TASKS = ("adding", "copy", "temporal-order")

# Training steps per unit of T (the budget; early stop ends a solved run sooner).
STEPS_PER_T = {"adding": 60, "copy": 40, "temporal-order": 40}

# Settings by task, for every cell and length.
_BY_TASK = {
    # 3e-3 and 1e-3 (Adam) learn part of the order, then fall back to chance and stay there
    "temporal-order": dict(lr=3e-4),
}

# Settings by task and cell, whatever the length (over the task's).
_BY_CELL = {
    ("adding", "lstm"): dict(forget_bias=3.0),
    ("adding", "irnn"): dict(optimizer="sgd", momentum=0.0, lr=1e-3, clip_at=1.0),
    ("adding", "relu"): dict(optimizer="sgd", momentum=0.0, lr=1e-3, clip_at=1.0),
    ("copy", "lstm"): dict(forget_bias=3.0),
    ("digits", "irnn"): dict(lr=3e-4, clip_at=1.0),
    ("digits", "relu"): dict(lr=3e-4, clip_at=1.0),
}


def budget(task: str, T: int) -> int:
    """Training steps for a memory task at length T."""
    return STEPS_PER_T[task] * T


def overrides(task: str, cell: str, T: int | None) -> dict:
    """The settings that `task` trains `cell` with at length T, over the task's own defaults
    (empty for tasks without such a table)."""
    out = {**_BY_TASK.get(task, {}), **_BY_CELL.get((task, cell), {})}
    if task in MEMORY_TASKS and T:
        steps = budget(task, T)
        out.update(steps=steps, eval_every=max(250, steps // 40), checkpoint_every=steps)
    return out
