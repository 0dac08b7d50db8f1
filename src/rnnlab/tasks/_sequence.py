"""The machinery the sequence tasks share (rnnlab.tasks.digits, pytokens, synthetic): epochs
over a fixed training set or fresh samples per step, truncated-BPTT windows, reversed input,
batched evaluation."""

from __future__ import annotations

import math

import numpy as np

from rnnlab.losses import softmax_cross_entropy
from rnnlab.train import Batch, TrainConfig

# How a report names the held-out set its result is of (`rnnlab evaluate --split valid` was
# reported as "test MSE ... on this test set").
SET_NAMES = {"test": "test", "valid": "validation"}


def _reverse_within(x: np.ndarray, lengths: np.ndarray | None) -> np.ndarray:
    """Reverse each sequence (axis 1) within its valid length; padding stays at the end."""
    if lengths is None:
        return x[:, ::-1].copy()
    T = x.shape[1]
    t = np.arange(T)[None, :]
    idx = np.where(t < lengths[:, None], lengths[:, None] - 1 - t, t)
    return np.take_along_axis(x, idx.reshape(idx.shape + (1,) * (x.ndim - 2)), axis=1)


def _trim(x, y, lengths, per_step: bool):
    """Drop the time steps past the longest sequence of a batch (all padding)."""
    if lengths is None:
        return x, y, None
    T = int(lengths.max())
    return x[:, :T], (y[:, :T] if per_step else y), lengths


def epoch_batches(n: int, B: int, lengths: np.ndarray | None, seed: int, epoch: int
                  ) -> np.ndarray:  # fmt: skip
    """The batches of one epoch over n training items, as rows of B indices (one row of all
    n when n < B), drawn from (seed, epoch).

    A random n mod B items sit the epoch out. With `lengths`, bucketing: within pools of 16
    batches the items are sorted by length, so that little of a batch is padding, and the
    batches then come in random order. (Until 2026-12-04 the remainder dropped was the
    longest items of the last pool and each pool's batches came shortest first: with one
    pool, n ≤ 16 B, the same longest items never trained, and every epoch ran short to long.)
    """
    rng = np.random.default_rng([seed, epoch, 23])
    order = rng.permutation(n)
    if n < B:
        return order[None]
    per_epoch = n // B
    order = order[: per_epoch * B]
    if lengths is None:
        return order.reshape(per_epoch, B)
    pool = 16 * B
    for a in range(0, len(order), pool):
        chunk = order[a : a + pool]
        order[a : a + pool] = chunk[np.argsort(lengths[chunk], kind="stable")]
    return order.reshape(per_epoch, B)[rng.permutation(per_epoch)]


def _accuracy(logits: np.ndarray, y: np.ndarray, mask: np.ndarray | None = None) -> float:
    hit = logits.argmax(axis=-1) == y
    if mask is not None:
        return float(hit[mask].mean())
    return float(hit.mean())


class _SequenceTask:
    """Shared machinery: epochs over a fixed training set (or fresh samples per step),
    truncated-BPTT windows, reversed input, batched evaluation."""

    per_step = False  # one target per step (labelling) or one per sequence
    readout = "last"
    fresh = False  # draw new training sequences at every step (synthetic tasks)

    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg
        if cfg.bptt and not self.per_step:
            raise ValueError(
                f"`bptt` must be 0 for the {cfg.task} task: it has one target per "
                f"sequence, which truncated BPTT would cut off from the inputs"
            )
        if cfg.bptt and cfg.bidirectional:
            raise ValueError(
                "`bptt` must be 0 for a bidirectional model: the reverse direction's "
                "state flows from the future and cannot be carried across windows"
            )

    def check_new_run(self) -> list[str]:
        """What a new run of this task may not ask for, though a saved run that did still
        loads (it evaluates, resumes and is analysed as it trained); returns what it asks
        for that changes nothing (warnings, for the caller to say once)."""
        if self.cfg.reverse_input and self.per_step:
            raise ValueError(
                f"`reverse_input` must be off for the {self.cfg.task} task: its target at "
                "step t follows from the inputs up to t, and read backwards they come after "
                "it (the copy task's symbols to recall would be asked for before they are "
                "shown, a token model's next token would already have been read); reversed "
                "input is for tasks that read a whole sequence, then answer"
            )
        said = []
        if self.cfg.bptt and self.per_step:
            # (untrimmed: the split's padded length, the longest of its sequences)
            x, _, _ = self._full_batch(0, np.random.default_rng(0), trim=False)
            if self.cfg.bptt >= x.shape[1]:  # one window: the setting changes nothing
                said.append(f"`bptt` ({self.cfg.bptt}) is not shorter than the {self.cfg.task} "
                            f"task's sequences ({x.shape[1]} steps): each is one window, "
                            "trained with full BPTT")  # fmt: skip
        if not self.fresh and self.cfg.batch_size > len(self.split("train")[0]):
            # (digits --batch-size 10**9 trained on its 1,295 images a step, and nothing said
            # that the batch asked for was not the one trained with)
            n = len(self.split("train")[0])
            said.append(f"`batch_size` ({self.cfg.batch_size:,}) is more than the "
                        f"{self.cfg.task} task's {n:,} training sequences: every step trains "
                        f"on all {n:,}")  # fmt: skip
        return said

    # --- the data a subclass provides
    def sample(self, n: int, rng: np.random.Generator):  # fresh tasks
        raise NotImplementedError

    def split(self, name: str):  # fixed sets: (x, y, lengths)
        raise NotImplementedError

    # --- batches
    def _windows(self, T: int) -> int:
        return 1 if not self.cfg.bptt else math.ceil(T / self.cfg.bptt)

    def _full_batch(self, index: int, rng: np.random.Generator, trim: bool = True):
        B = self.cfg.batch_size
        if self.fresh:
            x, y, lengths = self.sample(B, np.random.default_rng([self.cfg.seed, index, 17]))
            return _trim(x, y, lengths, self.per_step) if trim else (x, y, lengths)
        x, y, lengths = self.split("train")
        n = len(x)
        epoch, i = divmod(index, max(n // B, 1))
        idx = epoch_batches(n, B, lengths, self.cfg.seed, epoch)[i]
        if lengths is None:
            return x[idx], y[idx], None
        if not trim:
            return x[idx], y[idx], lengths[idx]
        return _trim(x[idx], y[idx], lengths[idx], self.per_step)

    def prepare(self, x, y, lengths):
        """Arrange a batch as the model sees it (the task's reverse_input applied), also for
        batches drawn outside training (rnnlab.diagnostics.subjects)."""
        if self.cfg.reverse_input:
            x = _reverse_within(x, lengths)
            if self.per_step:  # a run saved before new runs were refused it (check_new_run)
                y = _reverse_within(y, lengths)
        return x, y, lengths

    def batch(self, step: int, rng: np.random.Generator) -> Batch:
        T = self.seq_len_hint()
        W = self._windows(T)
        index, w = divmod(step, W)
        x, y, lengths = self.prepare(*self._full_batch(index, rng, trim=W == 1))
        active = None
        if W > 1:  # untrimmed, so every one of the W windows has steps (maybe all padding)
            k = self.cfg.bptt
            x, y = x[:, w * k : (w + 1) * k], y[:, w * k : (w + 1) * k]
            if lengths is not None:
                left = lengths - w * k  # ≤ 0: the sequence ended in an earlier window
                active = None if left.min() > 0 else left > 0
                lengths = np.clip(left, 1, x.shape[1])
        items = int(x.shape[0] * x.shape[1])
        return Batch(x, y, lengths, carry=w > 0, items=items, active=active)

    def seq_len_hint(self) -> int:
        return self.split("train")[0].shape[1] if not self.fresh else self.cfg.T

    def loss(self, output, batch: Batch):
        if not self.per_step:
            return softmax_cross_entropy(output, batch.y, reduction="mean")
        a = batch.active
        if a is None or a.all():
            return softmax_cross_entropy(output, batch.y, lengths=batch.lengths, reduction="mean")
        # Rows whose sequence ended before this window count neither in the loss nor in
        # its mean; their padding step gets no gradient.
        if not a.any():
            return 0.0, np.zeros_like(output)  # the Trainer makes no update for this window
        assert batch.lengths is not None  # (`batch` sets active only for a batch with lengths)
        loss, d_active = softmax_cross_entropy(
            output[a], batch.y[a], lengths=batch.lengths[a], reduction="mean"
        )
        d_output = np.zeros_like(output)
        d_output[a] = d_active
        return loss, d_output

    # --- evaluation
    def _eval_outputs(self, model, split: str, batch_size: int = 256):
        x, y, lengths = self.split(split)
        x, y, lengths = self.prepare(x, y, lengths)
        outs = []
        greedy = getattr(model, "wants_targets", False) and model.feeds_back_classes
        for i in range(0, len(x), batch_size):
            sl = slice(i, i + batch_size)
            if greedy:
                outs.append(_fed_own_classes(model, x[sl]))
                continue
            outs.append(model.forward(x[sl], lengths=None if lengths is None else lengths[sl],
                                      grad=False).output)  # fmt: skip
        return np.concatenate(outs), y, lengths


def _fed_own_classes(model, x: np.ndarray) -> np.ndarray:
    """The outputs of an output-feedback model of classes run free as it is sampled
    (rnnlab.generate) and as it was trained: each step fed the one-hot class the previous
    step ranked first, not its soft prediction, a vector it never saw in training. One call
    a step: steps past a sequence's end are computed and never read (right padding)."""
    outs, state = [], None
    for t in range(x.shape[1]):
        f = model.forward(x[:, t : t + 1], state=state, grad=False)
        outs.append(f.output)
        state = model.fed_back(f.state, f.output[:, 0].argmax(axis=-1))
    return np.concatenate(outs, axis=1)
