"""Long-range memory benchmarks, drawn fresh from an explicit np.random.Generator, each with
the score of the best answer that remembers nothing, so a result can be read at a glance.

- adding problem: Hochreiter & Schmidhuber (1997, "Long short-term memory", experiment 4) in
  the form of Le, Jaitly & Hinton (2015, "A simple way to initialize recurrent networks of
  rectified linear units") and Arjovsky, Shah & Bengio (2016, "Unitary evolution recurrent
  neural networks", whose code draws the markers as below): values U[0, 1], one marker
  uniformly in the first half, one in the second half; target the sum of the marked values.
- copy memory: Arjovsky, Shah & Bengio (2016), §4.1 and their `memory_problem.py`.
- temporal order: Hochreiter & Schmidhuber (1997), experiment 6a ("two relevant, widely
  separated symbols"), with the lengths scaled by T (T = 100 is the paper's setup).
"""

from __future__ import annotations

import math

import numpy as np

from rnnlab import _checks
from rnnlab._checks import describe, fail, positive_int
from rnnlab.losses import mean_squared_error, softmax_cross_entropy
from rnnlab.tasks._sequence import SET_NAMES, _accuracy, _SequenceTask


def _check_rng(rng: object) -> np.random.Generator:
    if not isinstance(rng, np.random.Generator):
        fail(
            "rng",
            "a numpy.random.Generator (e.g. np.random.default_rng(0))",
            describe(rng),
            "Randomness is always passed explicitly.",
        )
    return rng


def _check_T(T: object, least: int, why: str) -> int:
    T = positive_int(T, "T")
    if T < least:
        fail("T", f"at least {least} ({why})", f"{T}")
    return T


# --------------------------------------------------------------------------------------------
# Adding problem
# --------------------------------------------------------------------------------------------


def adding(n: int, T: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """n adding-problem sequences of length T.

    x (n, T, 2) float32: channel 0 holds values u_t ~ U[0, 1]; channel 1 is 0 except for two
    markers, one at t₁ uniform in [0, ⌊T/2⌋) and one at t₂ uniform in [⌊T/2⌋, T).
    y (n, 1) float32: u_{t₁} + u_{t₂}.
    """
    n = positive_int(n, "n")
    T = _check_T(T, 2, "one marker in each half")
    rng = _check_rng(rng)
    half = T // 2
    x = np.zeros((n, T, 2), np.float32)
    x[:, :, 0] = rng.uniform(0.0, 1.0, (n, T))
    rows = np.arange(n)
    t1 = rng.integers(0, half, n)
    t2 = rng.integers(half, T, n)
    x[rows, t1, 1] = 1.0
    x[rows, t2, 1] = 1.0
    y = (x[rows, t1, 0] + x[rows, t2, 0])[:, None]
    return x, y


def adding_baseline() -> float:
    """MSE of always answering 1 (the mean of the target): Var(u₁ + u₂) = 2 · 1/12 = 1/6."""
    return 1.0 / 6.0


def adding_baseline_on(y: np.ndarray) -> tuple[float, float]:
    """(MSE of always answering 1, MSE of always answering the mean of y) on the targets y of
    one held-out set. A set of 1,000 sequences scores a few percent away from 1/6, and the
    second answer, fitted to the set, is the best that ignores the input: a model is judged
    against it. (y is checked: an empty set gave NumPy's "Mean of empty slice" warning and
    NaN, text a ValueError naming no argument.)"""
    y = np.asarray(y) if isinstance(y, (list, tuple)) else y
    if not isinstance(y, np.ndarray) or y.dtype.kind not in "iuf" or not y.size:
        fail("y", "the targets (numbers) of at least one sequence", describe(y))
    y = y.astype(np.float64)
    return float(np.mean((y - 1.0) ** 2)), float(np.var(y))


# --------------------------------------------------------------------------------------------
# Copy memory
# --------------------------------------------------------------------------------------------

COPY_LENGTH = 10  # symbols to remember
COPY_SYMBOLS = 8  # drawn from {1, ..., 8}
COPY_BLANK = 0
COPY_DELIMITER = 9
COPY_VOCAB = 10  # input ids 0..9; targets use 0..8


def copy_memory(n: int, T: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """n copy-memory sequences with a delay T: length T + 20, int64 tokens.

    x = [s_1 … s_10, 0 × (T − 1), 9, 0 × 10]   with s_i uniform in {1, …, 8}
    y = [0 × (T + 10), s_1 … s_10]

    The delimiter 9 is at index T + 9, and the model must output s_1 … s_10 at the last ten
    steps (indices T + 10 … T + 19), blanks everywhere else.
    """
    n = positive_int(n, "n")
    T = positive_int(T, "T")
    rng = _check_rng(rng)
    K = COPY_LENGTH
    s = rng.integers(1, COPY_SYMBOLS + 1, (n, K))
    x = np.full((n, T + 2 * K), COPY_BLANK, np.int64)
    y = np.full((n, T + 2 * K), COPY_BLANK, np.int64)
    x[:, :K] = s
    x[:, T + K - 1] = COPY_DELIMITER
    y[:, T + K :] = s
    return x, y


def copy_baseline(T: int) -> float:
    """Cross-entropy per step (nats) of the memoryless answer: blanks with certainty for the
    first T + 10 steps, uniform over the 8 symbols for the last 10:

        −(1 / (T + 20)) Σ_t ln o_t = 10 ln 8 / (T + 20)      (Arjovsky et al. 2016, eq. 7)
    """
    T = positive_int(T, "T")
    return COPY_LENGTH * math.log(COPY_SYMBOLS) / (T + 2 * COPY_LENGTH)


def copy_baseline_on(y: np.ndarray) -> tuple[float, float]:
    """(cross-entropy per step, recall accuracy) of the best memoryless answer on the targets y
    (n, T + 20) of one held-out set: blanks for the first T + 10 steps and, at each of the
    last ten, the symbol frequencies of that set (for the accuracy, its commonest symbol).
    This answer is fitted to the set it is scored on, so it is a little better than
    `copy_baseline` and chance (1/8), and a model below it is below both. (y is checked: a
    row shorter than the ten recalled steps raised NumPy's IndexError, an empty set
    ZeroDivisionError, float targets a casting TypeError.)"""
    y = _checks.token_ids(y, "y", COPY_SYMBOLS + 1, ndim=2)
    if not len(y) or y.shape[1] < 2 * COPY_LENGTH:
        fail("y", f"copy-memory targets: at least one row of T + {2 * COPY_LENGTH} steps "
             "(T ≥ 1)", f"shape {y.shape}")  # fmt: skip
    recall = y[:, -COPY_LENGTH:]
    # (targets with a symbol before the last ten steps, or a blank among them, were scored
    # as if blanks came first and symbols last: a baseline of 0 nats for np.full((3, 30), 5))
    wrong = np.flatnonzero(np.concatenate([(y[:, :-COPY_LENGTH] != COPY_BLANK).any(axis=0),
                                           (recall == COPY_BLANK).any(axis=0)]))  # fmt: skip
    if len(wrong):
        t = int(wrong[0])
        what = "a symbol" if t < y.shape[1] - COPY_LENGTH else "a blank"
        fail("y", f"copy-memory targets: blanks ({COPY_BLANK}) up to the last {COPY_LENGTH} "
             f"steps, symbols 1 to {COPY_SYMBOLS} at them", f"{what} at step {t}")  # fmt: skip
    nats, hits = 0.0, 0
    for k in range(COPY_LENGTH):
        counts = np.bincount(recall[:, k], minlength=COPY_SYMBOLS + 1)
        p = counts[counts > 0] / len(recall)
        nats -= float(np.sum(p * np.log(p)))
        hits += int(counts.max())
    return nats / y.shape[1], hits / recall.size


# --------------------------------------------------------------------------------------------
# Temporal order
# --------------------------------------------------------------------------------------------

# One-hot input channels, in this order.
TEMPORAL_SYMBOLS = ("a", "b", "c", "d", "B", "E", "X", "Y")
# Classes y = 2·[first is Y] + [second is Y] (the paper's Q, R, S, U).
TEMPORAL_CLASSES = ("XX", "XY", "YX", "YY")


def temporal_order_ranges(T: int) -> dict[str, tuple[int, int]]:
    """Inclusive ranges of the length and of the 0-based positions t₁, t₂ for a scale T.

    length ∈ [T, T + ⌊T/10⌋], t₁ ∈ [⌊T/10⌋, ⌊T/5⌋], t₂ ∈ [⌊T/2⌋, ⌊T/2⌋ + ⌊T/10⌋]; T = 100
    gives the paper's 100–110, 10–20 and 50–60.
    """
    T = _check_T(T, 10, "so that t₁ ≥ 1 comes after the start symbol")
    return {
        "length": (T, T + T // 10),
        "t1": (T // 10, T // 5),
        "t2": (T // 2, T // 2 + T // 10),
    }


def temporal_order(
    n: int, T: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """n temporal-order sequences (Hochreiter & Schmidhuber 1997, task 6a) at scale T.

    Each sequence starts with B and ends with E (the trigger symbol; the paper's text names
    the two markers the other way round, which changes nothing); position t₁ holds X or Y,
    position t₂ holds X or Y, every other position a random symbol of {a, b, c, d}, with the
    ranges of `temporal_order_ranges(T)` (T = 100: length 100–110, t₁ 10–20, t₂ 50–60).
    The class is the order of the two relevant symbols: XX → 0, XY → 1, YX → 2, YY → 3.

    Returns x (n, L_max, 8) float32 one-hot over TEMPORAL_SYMBOLS, zero after each
    sequence's end, with L_max = T + ⌊T/10⌋ whatever the draw (so shapes depend on T only);
    lengths (n,) int64; y (n,) int64. Chance accuracy is 1/4 (`temporal_order_baseline`).
    """
    n = positive_int(n, "n")
    r = temporal_order_ranges(T)
    rng = _check_rng(rng)
    L_max = r["length"][1]
    lengths = rng.integers(r["length"][0], r["length"][1] + 1, n)
    t1 = rng.integers(r["t1"][0], r["t1"][1] + 1, n)
    t2 = rng.integers(r["t2"][0], r["t2"][1] + 1, n)
    first_is_y = rng.integers(0, 2, n)
    second_is_y = rng.integers(0, 2, n)
    symbols = rng.integers(0, 4, (n, L_max))  # distractors a, b, c, d
    rows = np.arange(n)
    B, E, X = (TEMPORAL_SYMBOLS.index(s) for s in "BEX")
    symbols[:, 0] = B
    symbols[rows, t1] = X + first_is_y
    symbols[rows, t2] = X + second_is_y
    symbols[rows, lengths - 1] = E
    valid = np.arange(L_max)[None, :] < lengths[:, None]
    x = np.zeros((n, L_max, len(TEMPORAL_SYMBOLS)), np.float32)
    x[valid, symbols[valid]] = 1.0
    y = (2 * first_is_y + second_is_y).astype(np.int64)
    return x, lengths.astype(np.int64), y


def temporal_order_baseline() -> float:
    """Accuracy of any answer that ignores the input: the 4 classes are equally likely."""
    return 1.0 / len(TEMPORAL_CLASSES)


def majority_accuracy(y: np.ndarray) -> float:
    """Accuracy on the labels y of one held-out set of always answering its commonest class:
    the empirical twin of chance (above 1/k by the set's sampling noise). (y is checked:
    float labels raised a casting TypeError, an empty set NumPy's ValueError.)"""
    if not np.size(y):  # (first: NumPy makes [] an array of floats)
        fail("y", "the class labels (integers >= 0) of at least one item", describe(y))
    y = _checks.int_array(y, "y").ravel()
    if y.min() < 0:
        fail("y", "the class labels (integers >= 0) of at least one item",
             f"the label {int(y.min())}")  # fmt: skip
    return float(np.bincount(y).max() / len(y))


# -------------------- the task, as the Trainer drives it (rnnlab.train.Task)


class _SyntheticTask(_SequenceTask):
    """Fresh training sequences at every step; fixed validation and test sets."""

    fresh = True
    held_out = 1000  # sequences in each of the validation and test sets
    step_bytes = 32  # bytes a step of a held-out sequence takes, with the draw's temporaries

    def __init__(self, cfg):
        super().__init__(cfg)
        # Both held-out sets are made here, before the first step: a huge T is refused by
        # name, not met as an out-of-memory error that blames --hidden or --batch-size.
        _checks.affordable(2 * self.held_out * self.seq_len_hint() * self.step_bytes, "T",
                           f"validation and test sequences (2 x {self.held_out} of about "
                           f"{self.seq_len_hint():,} steps)")  # fmt: skip
        self._fixed = {
            s: self.sample(self.held_out, np.random.default_rng([cfg.seed, 10**6, k]))
            for k, s in enumerate(("valid", "test"))
        }

    def split(self, name):
        return self._fixed[name]


class Adding(_SyntheticTask):
    name = "adding"
    metric = "mse"
    higher_is_better = False
    output_size = 1

    def sample(self, n, rng):
        x, y = adding(n, self.cfg.T, rng)
        return x, y.astype(np.float32), None

    def input_spec(self, cfg):
        return {"type": "vectors", "size": 2}

    def loss(self, output, batch):
        return mean_squared_error(output, batch.y, reduction="mean")

    def evaluate(self, model, split):
        out, y, _ = self._eval_outputs(model, split)
        mse = float(np.mean((out.astype(np.float64) - y) ** 2))
        one, mean = adding_baseline_on(y)
        return {"mse": mse, "baseline_mse": adding_baseline(),
                "baseline_mse_one": one, "baseline_mse_empirical": mean}  # fmt: skip

    @staticmethod
    def solved(result) -> bool:
        """(Static, as the other tasks': rnnlab.reproduce judges a stored row by its test
        numbers, without the task.)"""
        return result["mse"] < 0.01

    def report(self, result, split: str = "test"):
        below = result["mse"] < result["baseline_mse_empirical"]
        name = SET_NAMES[split]
        return [
            f"{name} MSE {result['mse']:.5f}; baseline of answering 1: "
            f"{result['baseline_mse']:.4f} (1/6); on this {name} set "
            f"{result['baseline_mse_one']:.4f}, and "
            f"{result['baseline_mse_empirical']:.4f} answering its mean: "
            f"{'below' if below else 'not below'} that; "
            f"{'solved' if self.solved(result) else 'not solved'} (MSE < 0.01)"
        ]


class Copy(_SyntheticTask):
    name = "copy"
    metric = "loss"
    higher_is_better = False
    per_step = True
    readout = "steps"
    output_size = 9

    held_out = 500

    def sample(self, n, rng):
        x, y = copy_memory(n, self.cfg.T, rng)
        return x.astype(np.int64), y.astype(np.int64), None

    def seq_len_hint(self):
        return self.cfg.T + 20

    def input_spec(self, cfg):
        return {"type": "tokens", "vocab_size": 10, "embed_dim": cfg.embed}

    def evaluate(self, model, split):
        out, y, _ = self._eval_outputs(model, split)
        loss, _ = softmax_cross_entropy(out, y, reduction="mean")
        # A run saved with reverse_input (before per-step tasks refused it) reads its targets
        # reversed, the ten symbols first: its recall was scored on ten blanks (a model of
        # blanks recalled 100 %), and its baseline on them too (0 nats). The recalled steps
        # are where the symbols are, and the baseline is of the targets as drawn.
        at = slice(0, COPY_LENGTH) if self.cfg.reverse_input else slice(-COPY_LENGTH, None)
        recall = _accuracy(out[:, at], y[:, at])
        base_loss, base_recall = copy_baseline_on(self.split(split)[1])
        return {
            "loss": loss,
            "recall_accuracy": recall,
            "baseline_loss": copy_baseline(self.cfg.T),
            "baseline_loss_empirical": base_loss,
            "baseline_recall_empirical": base_recall,
        }

    @staticmethod
    def solved(result) -> bool:
        return result["recall_accuracy"] >= 0.99

    def report(self, result, split: str = "test"):
        below = result["loss"] < result["baseline_loss_empirical"]
        name = SET_NAMES[split]
        return [
            f"{name} cross-entropy {result['loss']:.4f} nats/step; memoryless baseline "
            f"{result['baseline_loss']:.4f} (10 ln 8 / (T + 20)), "
            f"{result['baseline_loss_empirical']:.4f} on this {name} set: "
            f"{'below' if below else 'not below'} it",
            f"recalled symbols correct {100 * result['recall_accuracy']:.1f} % (chance 12.5 %, "
            f"{100 * result['baseline_recall_empirical']:.1f} % on this {name} set); "
            f"{'solved' if self.solved(result) else 'not solved'} (recall >= 99 %)",
        ]


class TemporalOrder(_SyntheticTask):
    name = "temporal-order"
    metric = "accuracy"
    higher_is_better = True
    output_size = 4
    step_bytes = 48  # 8 float32 a step, on up to 1.1 T steps

    def sample(self, n, rng):
        x, lengths, y = temporal_order(n, self.cfg.T, rng)
        return x, y.astype(np.int64), lengths

    def input_spec(self, cfg):
        return {"type": "vectors", "size": 8}

    def evaluate(self, model, split):
        out, y, _ = self._eval_outputs(model, split)
        loss, _ = softmax_cross_entropy(out, y, reduction="mean")
        return {"accuracy": _accuracy(out, y), "loss": loss,
                "chance": temporal_order_baseline(),
                "majority": majority_accuracy(y)}  # fmt: skip

    @staticmethod
    def solved(result) -> bool:
        return result["accuracy"] >= 0.98

    def report(self, result, split: str = "test"):
        return [chance_line(result, split) + "; "
                + ("solved" if self.solved(result) else "not solved")
                + " (accuracy >= 98 %)"]  # fmt: skip


def chance_line(result: dict, split: str = "test") -> str:
    """A classifier's accuracy beside chance (analytic) and its held-out set's commonest class
    (empirical), judged against the latter; `split` names the set."""
    above = result["accuracy"] > result["majority"]
    name = SET_NAMES[split]
    return (
        f"{name} accuracy {100 * result['accuracy']:.2f} % (chance {100 * result['chance']:g} %, "
        f"commonest class of this {name} set {100 * result['majority']:.1f} %: "
        f"{'above' if above else 'not above'} it)"
    )
