"""Handwritten digits read as sequences: a many-to-one classification task that needs no
download. The 1,797 8×8 images of scikit-learn's `load_digits` (a copy of the UCI "Optical
Recognition of Handwritten Digits" test set, Alpaydin & Kaynak 1998, shipped inside the
scikit-learn wheel) are read row by row (8 steps of 8 pixels) or pixel by pixel (64 steps of
one value, the small cousin of the pixel-by-pixel MNIST of Le, Jaitly & Hinton 2015), with a
deterministic stratified train/test split.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rnnlab import _checks
from rnnlab._checks import choice, fail, probability
from rnnlab.losses import softmax_cross_entropy
from rnnlab.tasks._sequence import _SequenceTask
from rnnlab.tasks.synthetic import chance_line, majority_accuracy
from rnnlab.train import TrainConfig

MODES = ("rows", "pixels")
INSTALL_HINT = "the digits task needs scikit-learn: pip install 'rnnlab[digits]'"


class MissingDependencyError(ImportError):
    """An optional dependency of a task is not installed."""


def _load_digits() -> tuple[np.ndarray, np.ndarray]:
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise MissingDependencyError(INSTALL_HINT) from None
    bunch = load_digits()
    return bunch.images, bunch.target


def load_digits_sequences(
    mode: str = "rows", test_fraction: float = 0.2, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_test, y_test) for the 8×8 digits as sequences.

    x is float32 in [0, 1] (the 0..16 grey levels divided by 16): (n, 8, 8) for
    mode="rows" (step t = image row t) or (n, 64, 1) for mode="pixels" (row-major pixel
    order). y is int64 in 0..9. The split is stratified: of each digit's images, a random
    round(test_fraction · count) (at least one, and at least one left for training) go to
    the test set; both sets are then shuffled. Everything follows from `seed`.
    """
    mode = choice(mode, "mode", MODES)
    fraction = probability(test_fraction, "test_fraction")
    if fraction == 0.0:
        fail("test_fraction", "a number in (0, 1)", "0.0", "The test set cannot be empty.")
    seed = _checks.seed(seed, "seed")
    images, target = _load_digits()
    rng = np.random.default_rng(seed)
    train_idx, test_idx = [], []
    for digit in range(10):
        members = rng.permutation(np.flatnonzero(target == digit))
        k = min(max(1, round(fraction * len(members))), len(members) - 1)
        test_idx.append(members[:k])
        train_idx.append(members[k:])
    train = rng.permutation(np.concatenate(train_idx))
    test = rng.permutation(np.concatenate(test_idx))
    x = (images / 16.0).astype(np.float32)
    x = x.reshape(len(x), 8, 8) if mode == "rows" else x.reshape(len(x), 64, 1)
    y = target.astype(np.int64)
    return x[train], y[train], x[test], y[test]


# -------------------- the task, as the Trainer drives it (rnnlab.train.Task)


class Digits(_SequenceTask):
    name = "digits"
    metric = "accuracy"
    higher_is_better = True
    output_size = 10

    def __init__(self, cfg: TrainConfig):
        super().__init__(cfg)
        x_tr, y_tr, x_te, y_te = load_digits_sequences(mode=cfg.digits_mode, seed=cfg.seed)
        n_valid = len(x_tr) // 10  # the last 10 % of the (shuffled) training split validates
        self._splits = {
            "train": (x_tr[:-n_valid], y_tr[:-n_valid], None),
            "valid": (x_tr[-n_valid:], y_tr[-n_valid:], None),
            "test": (x_te, y_te, None),
        }

    def input_spec(self, cfg):
        return {"type": "vectors", "size": self._splits["train"][0].shape[2]}

    def split(self, name):
        return self._splits[name]

    def evaluate(self, model, split):
        out, y, _ = self._eval_outputs(model, split)
        loss, _ = softmax_cross_entropy(out, y, reduction="mean")
        pred = out.argmax(axis=1)
        result: dict[str, Any] = {"accuracy": float((pred == y).mean()), "loss": loss,
                                  "chance": 0.1, "majority": majority_accuracy(y)}  # fmt: skip
        if split == "test":
            cm = np.zeros((10, 10), np.int64)
            np.add.at(cm, (y, pred), 1)
            result["confusion"] = cm.tolist()
        return result

    def report(self, result, split: str = "test"):
        lines = [chance_line(result, split)]
        if "confusion" in result:
            lines.append("confusion matrix (rows: true digit, columns: predicted):")
            lines.append("     " + " ".join(f"{j:4d}" for j in range(10)))
            for i, row in enumerate(result["confusion"]):
                lines.append(f"  {i}  " + " ".join(f"{v:4d}" for v in row))
        return lines
