"""Generating sequences from a trained language model: one-to-many, run free.

The model reads the priming ids in one pass, then feeds each sampled id back as the next
input, carrying its recurrent state, one step at a time:

    p(x_{t+1} | x_≤t) = softmax(o_t / temperature), restricted to the top-k ids if asked.
"""

from __future__ import annotations

import numpy as np

from rnnlab import _checks
from rnnlab.layers import Module


def sample_ids(
    model: Module,
    prime: np.ndarray,
    length: int,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    rng: np.random.Generator,
) -> np.ndarray:
    """Sample `length` ids after the 1-d array `prime` (at least one id) from a token model."""
    length = int(length)
    if length < 0:
        _checks.fail("length", "a non-negative integer", str(length))
    if not (isinstance(temperature, (int, float)) and temperature > 0):
        _checks.fail("temperature", "a positive number", _checks.describe(temperature))
    if top_k is not None:
        top_k = _checks.positive_int(top_k, "top_k")
    prime = np.asarray(prime, dtype=np.int64).reshape(1, -1)
    if prime.shape[1] == 0:
        _checks.fail("prime", "at least one token", "an empty prime")
    f = model.forward(prime)
    state = f.state
    logits = f.output[0, -1]
    out = np.empty(length, np.int64)
    for i in range(length):
        z = logits.astype(np.float64) / temperature
        if top_k is not None and top_k < z.size:
            cut = np.partition(z, -top_k)[-top_k]
            z = np.where(z >= cut, z, -np.inf)
        p = np.exp(z - z.max())
        p /= p.sum()
        out[i] = rng.choice(p.size, p=p)
        f = model.forward(out[i : i + 1].reshape(1, 1), state=state)
        state = f.state
        logits = f.output[0, -1]
    return out
