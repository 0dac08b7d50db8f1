"""The two sides of a comparison: rnnlab's layer and torch's module holding the same weights,
the step each runs, and the check that they compute the same thing before either is timed.

PyTorch is imported only here, lazily: it is the reference, never a dependency of the library.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from rnnlab import losses
from rnnlab.bench.configs import CELL_TYPES, Config
from rnnlab.layers import Recurrent

TORCH_MISSING = "the benchmark needs PyTorch 2.13 as its reference: pip install 'rnnlab[bench]'"
# Largest relative difference |ours - torch| / max|torch| accepted over the outputs and every
# gradient: well above float32 rounding, which grows like √T over long sums (bench/README.md
# has the measured differences), and far below a wrong computation's, which is of order 1.
TOLERANCE = 1e-4


def import_torch() -> ModuleType:
    """PyTorch, or ImportError(TORCH_MISSING)."""
    try:
        import torch
    except ImportError as e:
        raise ImportError(TORCH_MISSING) from e
    return torch


@dataclass
class Pair:
    """rnnlab's layer and torch's module with the same weights, and one batch of data."""

    ours: Recurrent
    theirs: Any  # torch.nn.RNN | LSTM | GRU
    x: np.ndarray  # (B, T, I) float32
    y: np.ndarray  # (B, T, D·H) float32, the MSE target
    xt: Any  # torch views of x and y (shared memory)
    yt: Any


def make_pair(torch, config: Config, seed: int = 0) -> Pair:
    """Build both layers from one seed: rnnlab draws the weights, torch gets a copy.

    With torch None, only rnnlab's side (the memory child of rnnlab never imports torch).
    """
    B, T, I, H = config.dims
    D = 2 if config.bidirectional else 1
    rng = np.random.default_rng(seed)
    ours = Recurrent(
        CELL_TYPES[config.cell](),
        I,
        H,
        config.layers,
        bidirectional=config.bidirectional,
        dtype=np.float32,
        rng=rng,
    )
    x = rng.standard_normal((B, T, I), dtype=np.float32)
    y = rng.standard_normal((B, T, D * H), dtype=np.float32)
    if torch is None:
        return Pair(ours, None, x, y, None, None)
    torch_class = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[config.cell]
    theirs = torch_class(
        I,
        H,
        config.layers,
        batch_first=True,
        bidirectional=config.bidirectional,
        dtype=torch.float32,
    )
    theirs.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in ours.params.items()})
    return Pair(ours, theirs, x, y, torch.from_numpy(x), torch.from_numpy(y))


def rnnlab_step(pair: Pair, mode: str, checkpoint_every: int = 0) -> Callable[[], Any]:
    """What a user runs: forward; for training also the loss and the full backward."""
    layer, x, y = pair.ours, pair.x, pair.y
    if mode == "infer":  # as torch's inference_mode: no tape for a backward pass
        return lambda: layer.forward(x, grad=False)
    draws = getattr(layer, "recurrent_dropout", 0) or any(getattr(layer, "zoneout", ()))
    rng = np.random.default_rng(0) if draws else None  # the masks' draws

    def train():
        f = layer.forward(x, training=True, checkpoint_every=checkpoint_every, rng=rng)
        _, d_output = losses.mean_squared_error(f.output, y)
        # the loss's gradient is a temporary the step gives up, as the trainer does
        b = layer.backward(f, d_output, input_grad=False, overwrite_d_output=True)
        return f.output, b.params

    return train


def torch_step(torch, pair: Pair, mode: str) -> Callable[[], Any]:
    """The same step in torch. The input needs no gradient (both skip it)."""
    module, xt, yt = pair.theirs, pair.xt, pair.yt
    params = list(module.parameters())
    if mode == "infer":

        def infer():
            with torch.inference_mode():
                return module(xt)[0]

        return infer
    mse = torch.nn.functional.mse_loss

    def train():
        for p in params:
            p.grad = None  # fresh gradients each step, as rnnlab's backward returns
        out = module(xt)[0]
        mse(out, yt).backward()
        return out

    return train


def relative_error(a: np.ndarray, b: np.ndarray) -> float:
    """max |a − b| / max |b| (0 when both are all zeros; inf when the shapes differ: NumPy
    would broadcast one against the other and compare, say, one step's output with every
    step's, or a (1, n) gradient with an (n,) one, and call a wrong shape agreement)."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        return math.inf
    scale = float(np.abs(b).max())
    diff = float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max())
    return diff / scale if scale > 0 else diff


def worst_error(errs: dict[str, float]) -> tuple[str, float]:
    """(name, error) of the largest error, a NaN before any number: `err > worst` and max()
    both pass a NaN over (every comparison with it is False), and a NaN gradient after a
    good output was taken for agreement."""
    nan = [k for k, e in errs.items() if math.isnan(e)]
    where = nan[0] if nan else max(errs, key=errs.__getitem__)
    return where, errs[where]


def check_inference_agreement(torch, pair: Pair, label: str) -> float:
    """Compare the inference pass's outputs and final state (h_n, and c_n for an LSTM) with
    torch's: it runs other code than a training step's forward (no tape, the per-step
    projection where it wins, the cell state kept in two rows), so the training step's
    agreement does not vouch for it, and the training step's loss never reads the final
    state. RuntimeError above TOLERANCE."""
    f = rnnlab_step(pair, "infer")()
    with torch.inference_mode():
        out_t, state_t = pair.theirs(pair.xt)
    mine = [("outputs", f.output)]
    theirs = [out_t]
    if isinstance(state_t, tuple):  # (h_n, c_n)
        h, c = f.state if isinstance(f.state, tuple) else (f.state, None)
        mine += [("final h_n", h), ("final c_n", c)]
        theirs += list(state_t)
    else:
        mine.append(("final h_n", f.state))
        theirs.append(state_t)
    errs = {name: math.inf if a is None else relative_error(a, b.numpy())
            for (name, a), b in zip(mine, theirs, strict=True)}  # fmt: skip
    where, worst = worst_error(errs)
    if not worst <= TOLERANCE:  # also catches NaN
        raise RuntimeError(
            f"{label}: rnnlab and PyTorch disagree on the inference {where} (relative error "
            f"{worst:.2e} > {TOLERANCE:g}); not timing a wrong computation."
        )
    return worst


def check_agreement(torch, pair: Pair, label: str, checkpoint_every: int = 0) -> float:
    """Compare one training step's outputs and every gradient with torch's.

    Returns the largest relative error; raises RuntimeError above TOLERANCE so that a wrong
    computation is never timed.
    """
    output, grads = rnnlab_step(pair, "train", checkpoint_every)()
    torch_step(torch, pair, "train")()
    out_t = pair.theirs(pair.xt)[0].detach().numpy()
    errs = {"the outputs": relative_error(output, out_t)}
    for name, p in pair.theirs.named_parameters():
        mine = grads.get(name)  # (one rnnlab does not return: not computed, so not the same work)
        errs[f"the gradient of {name}"] = (
            math.inf if mine is None else relative_error(mine, p.grad.numpy())
        )
    where, worst = worst_error(errs)
    if not worst <= TOLERANCE:  # also catches NaN
        raise RuntimeError(
            f"{label}: rnnlab and PyTorch disagree on {where} (relative error {worst:.2e} > "
            f"{TOLERANCE:g}); not timing a wrong computation."
        )
    return worst
