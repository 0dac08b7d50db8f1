"""The built-in tasks as training recipes: data (from rnnlab.tasks), model spec, loss, metrics
and the baselines printed beside every result.

Each task object keeps the Trainer's protocol (rnnlab.train.Task): `batch(step, rng)`,
`loss(output, batch)`, `evaluate(model, split)`, plus `metric` / `higher_is_better` for
early stopping. Training batches are a pure function of (seed, step), which is what makes
resumed runs identical to uninterrupted ones.
"""

from __future__ import annotations

import hashlib
import math
import sys
from pathlib import Path

import numpy as np

from rnnlab import _checks, models
from rnnlab.losses import mean_squared_error, softmax_cross_entropy
from rnnlab.train import Batch, TrainConfig

TASK_NAMES = ("charlm", "digits", "pytokens", "adding", "copy", "temporal-order", "numbers",
              "dates", "caption")  # fmt: skip
SEQ2SEQ_TASKS = ("numbers", "dates", "caption")  # encoder–decoder tasks (rnnlab.translation)

_DESCRIPTIONS = {
    "charlm": "character language model on a text file (default: CPython's pydoc topics), "
    "with n-gram baselines and sampling",
    "digits": "many-to-one classification of scikit-learn's 8x8 digits read row by row "
    "(or pixel by pixel)",
    "pytokens": "label each character of Python source with its token class; 'called or "
    "defined' needs the right context (compare --bidirectional)",
    "adding": "adding problem (Le et al. 2015): sum the two marked numbers of a length-T "
    "sequence; baseline MSE 1/6",
    "copy": "copy memory (Arjovsky et al. 2016): recall 10 symbols after T blanks; "
    "baseline 10 ln 8 / (T + 20)",
    "temporal-order": "temporal order (Hochreiter & Schmidhuber 1997, exp. 6a): classify the "
    "order of two far-apart symbols; chance 1/4",
    "numbers": "encoder-decoder: English number words -> German ones ('three hundred and "
    "forty-seven' -> 'dreihundertsiebenundvierzig'), 0-999,999, held out by value",
    "dates": "encoder-decoder: dates in 13 locales and styles -> ISO 8601 ('7. März 2023' -> "
    "'2023-03-07'), held out by day",
    "caption": "encoder-decoder: images of 1-3 handwritten digits read column by column -> the "
    "number in English words ('forty-two'), test images never seen",
}

# What each task trains with unless the user says otherwise (TrainConfig fields).
_DEFAULTS = {
    "charlm": dict(
        cell="lstm",
        hidden=512,
        embed=64,
        batch_size=32,
        seq_len=100,
        lr=2e-3,
        steps=3600,
        eval_every=400,
        checkpoint_every=400,
        schedule="cosine",
        clip="global_norm",
        clip_at=1.0,
        dropout=0.2,
        time_limit=1140.0,
    ),
    "digits": dict(
        cell="gru",
        hidden=128,
        batch_size=32,
        lr=3e-3,
        steps=3000,
        eval_every=250,
        checkpoint_every=1000,
        schedule="cosine",
        clip_at=1.0,
    ),
    "pytokens": dict(
        cell="lstm",
        hidden=64,
        embed=32,
        batch_size=32,
        seq_len=100,
        lr=3e-3,
        steps=1500,
        eval_every=250,
        checkpoint_every=500,
        schedule="cosine",
    ),
    "adding": dict(
        cell="lstm",
        hidden=64,
        batch_size=32,
        lr=2e-3,
        steps=6000,
        T=100,
        eval_every=250,
        checkpoint_every=1000,
        clip_at=1.0,
    ),
    "copy": dict(
        cell="lstm",
        hidden=128,
        embed=16,
        batch_size=32,
        lr=2e-3,
        steps=3000,
        T=50,
        eval_every=250,
        checkpoint_every=1000,
        clip_at=1.0,
    ),
    "temporal-order": dict(
        cell="lstm",
        hidden=64,
        batch_size=32,
        lr=3e-3,
        steps=2000,
        T=100,
        eval_every=250,
        checkpoint_every=1000,
        clip_at=1.0,
    ),
    "numbers": dict(
        cell="lstm",
        hidden=128,
        embed=32,
        attention="additive",
        attention_size=32,
        batch_size=64,
        lr=3e-3,
        steps=1500,
        eval_every=500,
        checkpoint_every=500,
        schedule="cosine",
        clip_at=1.0,
        time_limit=1140.0,
    ),
    "dates": dict(
        cell="lstm",
        hidden=96,
        embed=32,
        attention="additive",
        batch_size=64,
        lr=3e-3,
        steps=2000,
        eval_every=500,
        checkpoint_every=500,
        schedule="cosine",
        clip_at=1.0,
        time_limit=570.0,
    ),
    "caption": dict(
        cell="lstm",
        hidden=96,
        embed=32,
        attention="additive",
        batch_size=64,
        lr=3e-3,
        steps=3000,
        eval_every=500,
        checkpoint_every=500,
        schedule="cosine",
        clip_at=1.0,
        time_limit=570.0,
    ),
}

# `rnnlab demo`: a character LSTM small enough to learn in about two minutes on two cores.
DEMO = dict(
    hidden=256,
    embed=48,
    batch_size=32,
    seq_len=64,
    lr=3e-3,
    steps=1500,
    eval_every=300,
    checkpoint_every=300,
    schedule="cosine",
)


def describe(name: str) -> str:
    return _DESCRIPTIONS[name]


def defaults(name: str) -> dict:
    return dict(_DEFAULTS[name], task=name)


def defaults_for(name: str, cell: str | None = None, T: int | None = None) -> dict:
    """What `rnnlab train` trains with: the task's defaults with, for the memory tasks, those
    of the cell and length asked for (rnnlab.tuned: learning rate, forget-gate bias, a step
    budget that grows with T). None: the task's default cell or length."""
    from rnnlab import tuned

    base = defaults(name)
    return dict(base, **tuned.overrides(name, cell or base["cell"], T or base.get("T")))


def build_model(spec: dict, seed: int = 0):
    rng = np.random.default_rng([seed, 7919])
    if isinstance(spec, dict) and spec.get("type") == "seq2seq":
        from rnnlab import translation

        return translation.build(spec, rng)
    return models.build(spec, rng=rng)


def model_spec(cfg: TrainConfig, task) -> dict:
    if task.readout == "seq2seq":
        from rnnlab import translation

        return translation.model_spec(cfg, task)
    if cfg.cell in models.FEEDBACK_CELLS:
        if task.readout != "steps":
            raise ValueError(
                f"`cell` {cfg.cell!r} (an output-feedback model) needs a task with "
                f"an output at every step (charlm, pytokens, copy); got {cfg.task}"
            )
        if cfg.bidirectional or cfg.layers != 1:
            raise ValueError(
                f"`cell` {cfg.cell!r} is one unidirectional layer; drop "
                f"--bidirectional and --layers"
            )
    spec = {
        "input": task.input_spec(cfg),
        "rnn": {
            "cell": cfg.cell,
            "hidden_size": cfg.hidden,
            "num_layers": cfg.layers,
            "bidirectional": cfg.bidirectional,
            "dropout": cfg.dropout,
            "initial_state": cfg.initial_state,
            "forget_bias": cfg.forget_bias if cfg.cell == "lstm" else None,
            "peephole": cfg.peephole,
            "coupled": cfg.coupled,
            "cell_clip": cfg.cell_clip or None,
            "layer_norm": cfg.layer_norm,
            "proj_size": cfg.proj_size,
            "recurrent_dropout": cfg.recurrent_dropout,
            "zoneout": cfg.zoneout,
        },
        "readout": task.readout,
        "output_size": task.output_size,
        "output_dropout": cfg.dropout,
    }
    if cfg.cell in models.FEEDBACK_CELLS:
        spec["feedback"] = "softmax"  # every per-step task here is a classification
    return models.with_defaults(spec)


def make_task(cfg: TrainConfig, data: dict | None = None, *, text: bool = True):
    """The task a config names. `data`: what a run stored of its data (`task.data_record()`,
    in config.json), so that a trained charlm run keeps its own vocabulary; `text=False`:
    the vocabulary only (sampling needs no corpus)."""
    name = cfg.task
    if name == "charlm":
        return CharLM(cfg, data, text=text)
    if name == "digits":
        return Digits(cfg)
    if name == "pytokens":
        return PyTokens(cfg)
    if name == "adding":
        return Adding(cfg)
    if name == "copy":
        return Copy(cfg)
    if name == "temporal-order":
        return TemporalOrder(cfg)
    if name in SEQ2SEQ_TASKS:
        from rnnlab import translation

        return translation.Transduction(cfg, data)
    _checks.fail("task", "one of " + ", ".join(TASK_NAMES), repr(name))


def report(task, result: dict) -> list[str]:
    return task.report(result)


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
        per_epoch = max(n // B, 1)
        epoch, i = divmod(index, per_epoch)
        order = np.random.default_rng([self.cfg.seed, epoch, 23]).permutation(n)
        if lengths is not None:
            # Bucketing: within pools of 16 batches, sequences of similar length go together,
            # so little of each batch is padding; the pools themselves stay shuffled.
            pool = 16 * B
            for a in range(0, n, pool):
                chunk = order[a : a + pool]
                order[a : a + pool] = chunk[np.argsort(lengths[chunk], kind="stable")]
        idx = order[i * B : (i + 1) * B]
        if lengths is None:
            return x[idx], y[idx], None
        if not trim:
            return x[idx], y[idx], lengths[idx]
        return _trim(x[idx], y[idx], lengths[idx], self.per_step)

    def prepare(self, x, y, lengths):
        """Arrange a batch as the model sees it (the task's reverse_input applied), also for
        batches drawn outside training (rnnlab.gradflow)."""
        if self.cfg.reverse_input:
            x = _reverse_within(x, lengths)
            if self.per_step:
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
        for i in range(0, len(x), batch_size):
            sl = slice(i, i + batch_size)
            outs.append(
                model.forward(x[sl], lengths=None if lengths is None else lengths[sl]).output
            )
        return np.concatenate(outs), y, lengths


def _stored_vocab(data):
    """The CharVocab a run stored, or None for a run from before runs stored it."""
    from rnnlab.tasks import text

    if not data:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("vocab"), str):
        _checks.fail("config.json's 'data'", "a record with the vocabulary ('vocab': a string)",
                     _checks.describe(data))  # fmt: skip
    return text.CharVocab.from_json({"type": "CharVocab", "chars": data["vocab"]})


class CharLM:
    """Character language model with a stateful stream of windows (classic truncated BPTT)."""

    name = "charlm"
    metric = "nats_per_char"
    higher_is_better = False
    readout = "steps"

    def __init__(self, cfg: TrainConfig, data: dict | None = None, *, text: bool = True):
        """`data`: a trained run's record (data_record): its vocabulary is used, whatever the
        text holds now, and its corpus is read from the absolute path it stored; a text that
        changed since is said on stderr. `text=False`: the vocabulary only (for sampling)."""
        from rnnlab.tasks import text as text_mod

        if cfg.reverse_input:
            raise ValueError(
                "`reverse_input` must be off for charlm: a language model reads "
                "its stream in order (use it for tasks that read whole sequences)"
            )
        if cfg.bidirectional:
            raise ValueError(
                "`bidirectional` must be off for charlm: a language model cannot "
                "read the characters it has to predict"
            )
        self.cfg = cfg
        stored = _stored_vocab(data)
        if stored is not None and not text:
            self.vocab, self.output_size, self._record = stored, stored.size, dict(data)
            return
        path = cfg.data
        if data and data.get("path") and Path(data["path"]).is_file():
            path = data["path"]  # absolute, so the run works from any directory
        try:
            raw = text_mod.read_text(path) if path else text_mod.default_corpus()
        except ValueError as e:
            raise ValueError(f"--data: {e}") from None
        self.source = path or "the pydoc topics of CPython"
        digest = hashlib.sha256(raw.encode("utf-8")).hexdigest()
        train, valid, test = text_mod.split_text(raw)
        self.vocab = stored or text_mod.CharVocab(train)
        if data and data.get("corpus_sha256") not in (None, digest):
            print(
                f"rnnlab: warning: the text of {self.source} has changed since the run was "
                "trained (its SHA-256 differs); its pieces are read with the run's vocabulary, "
                "characters it does not know as the unknown symbol (counted in 'unknown_chars')",
                file=sys.stderr,
            )
        self._record = {
            "path": str(Path(path).resolve()) if path else "",
            "corpus_sha256": digest,
            "vocab": self.vocab.chars,
        }
        self.ids = {
            "train": self.vocab.encode(train),
            "valid": self.vocab.encode(valid),
            "test": self.vocab.encode(test),
        }
        self.chars = len(raw)
        self.window = cfg.bptt or cfg.seq_len
        B = cfg.batch_size
        usable = (len(self.ids["train"]) - 1) // B
        if usable < self.window + 1:
            raise ValueError(
                f"`data` must hold enough text for {B} tracks of {self.window} "
                f"characters; got {len(raw)} characters"
            )
        flat = self.ids["train"][: usable * B + 1]
        self.tracks_x = flat[:-1].reshape(B, usable)
        self.tracks_y = flat[1:].reshape(B, usable)
        self.per_epoch = usable // self.window
        self._baselines: dict = {}
        self.output_size = self.vocab.size

    def input_spec(self, cfg):
        return {"type": "tokens", "vocab_size": self.vocab.size, "embed_dim": cfg.embed}

    def data_record(self) -> dict:
        """What a run stores of its data (config.json's "data"): the vocabulary, the SHA-256
        of the corpus and its absolute path, so that evaluate and sample never rebuild the
        mapping from a file that may have moved or changed."""
        return dict(self._record)

    def describe_data(self) -> str:
        return (
            f"{self.source}: {self.chars:,} characters, {self.vocab.size} symbols; "
            f"train/valid/test {len(self.ids['train']):,}/{len(self.ids['valid']):,}/"
            f"{len(self.ids['test']):,}"
        )

    def batch(self, step: int, rng) -> Batch:
        w = step % self.per_epoch
        k = self.window
        x = self.tracks_x[:, w * k : (w + 1) * k]
        y = self.tracks_y[:, w * k : (w + 1) * k]
        return Batch(x, y, None, carry=w > 0, items=int(x.size))

    def loss(self, output, batch: Batch):
        return softmax_cross_entropy(output, batch.y, reduction="mean")

    def evaluate(self, model, split: str) -> dict:
        ids = self.ids[split]
        tracks = 8
        n = (len(ids) - 1) // tracks
        xs = ids[: n * tracks].reshape(tracks, n)
        ys = ids[1 : n * tracks + 1].reshape(tracks, n)
        total, state = 0.0, None
        for i in range(0, n, 256):
            f = model.forward(xs[:, i : i + 256], state=state)
            loss, _ = softmax_cross_entropy(f.output, ys[:, i : i + 256], reduction="sum")
            total += loss
            state = f.state
        nats = total / (n * tracks)
        result = {"nats_per_char": nats, "bits_per_char": nats / math.log(2), "chars": n * tracks,
                  "unknown_chars": int((ids == self.vocab.unknown).sum())}  # fmt: skip
        if split == "test":
            result["baselines"] = self.baselines(split)
        return result

    def baselines(self, split: str = "test") -> dict:
        from rnnlab.tasks import ngram

        if split not in self._baselines:
            self._baselines[split] = ngram.ngram_baselines(
                self.ids["train"], self.ids[split], self.vocab.size, max_order=5
            )
        return self._baselines[split]

    def sample(self, model, prime: str, length: int, *, temperature=0.8, top_k=None, seed=0) -> str:
        from rnnlab.generate import sample_ids

        ids = self.vocab.encode(prime or "\n")
        out = sample_ids(
            model,
            ids,
            length,
            temperature=temperature,
            top_k=top_k,
            rng=np.random.default_rng(seed),
        )
        return (prime or "") + self.vocab.decode(out)

    def report(self, result: dict) -> list[str]:
        lines = [
            f"held-out: {result['nats_per_char']:.3f} nats/char = "
            f"{result['bits_per_char']:.3f} bits/char"
        ]
        base = result.get("baselines") or self.baselines("test")
        best = min(base.values(), key=lambda b: b["nats_per_char"])
        for name, b in base.items():
            mark = "  <- best n-gram" if b is best else ""
            lines.append(
                f"  {name:<8} {b['nats_per_char']:.3f} nats/char = "
                f"{b['bits_per_char']:.3f} bits/char{mark}"
            )
        beaten = [n for n, b in base.items() if result["nats_per_char"] < b["nats_per_char"]]
        lines.append("beats: " + (", ".join(beaten) if beaten else "no n-gram baseline yet"))
        return lines


class Digits(_SequenceTask):
    name = "digits"
    metric = "accuracy"
    higher_is_better = True
    output_size = 10

    def __init__(self, cfg: TrainConfig):
        super().__init__(cfg)
        from rnnlab.tasks import digits, synthetic

        self._synthetic_baselines = synthetic
        x_tr, y_tr, x_te, y_te = digits.load_digits_sequences(mode=cfg.digits_mode, seed=cfg.seed)
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
        result = {"accuracy": float((pred == y).mean()), "loss": loss, "chance": 0.1,
                  "majority": self._synthetic_baselines.majority_accuracy(y)}  # fmt: skip
        if split == "test":
            cm = np.zeros((10, 10), np.int64)
            np.add.at(cm, (y, pred), 1)
            result["confusion"] = cm.tolist()
        return result

    def report(self, result):
        lines = [_chance_line(result)]
        if "confusion" in result:
            lines.append("confusion matrix (rows: true digit, columns: predicted):")
            lines.append("     " + " ".join(f"{j:4d}" for j in range(10)))
            for i, row in enumerate(result["confusion"]):
                lines.append(f"  {i}  " + " ".join(f"{v:4d}" for v in row))
        return lines


class PyTokens(_SequenceTask):
    name = "pytokens"
    metric = "accuracy"
    higher_is_better = True
    per_step = True
    readout = "steps"

    def __init__(self, cfg: TrainConfig):
        super().__init__(cfg)
        from rnnlab.tasks import pytokens, text

        max_chars = cfg.train_size or 400_000
        chars, labels = pytokens.load_pytokens(max_chars=max_chars, seed=cfg.seed)
        n = len(chars)
        a, b = int(n * 0.9), int(n * 0.95)
        self.vocab = text.CharVocab(chars[:a])
        self.classes = pytokens.CLASSES
        self.output_size = len(self.classes)
        ids = self.vocab.encode(chars)
        L = cfg.seq_len
        self._splits = {}
        for name, sl in (("train", slice(0, a)), ("valid", slice(a, b)), ("test", slice(b, n))):
            x, y = pytokens.chunk(ids[sl], labels[sl], L)
            self._splits[name] = (x.astype(np.int64), y.astype(np.int64), None)

    def input_spec(self, cfg):
        return {"type": "tokens", "vocab_size": self.vocab.size, "embed_dim": cfg.embed}

    def split(self, name):
        return self._splits[name]

    def evaluate(self, model, split):
        out, y, _ = self._eval_outputs(model, split)
        loss, _ = softmax_cross_entropy(out, y, reduction="mean")
        pred = out.argmax(axis=-1)
        result = {"accuracy": float((pred == y).mean()), "loss": loss}
        per_class = {}
        for c, name in enumerate(self.classes):
            m = y == c
            if m.any():
                per_class[name] = float((pred[m] == c).mean())
        result["per_class_accuracy"] = per_class
        return result

    def report(self, result):
        lines = [f"per-character accuracy {100 * result['accuracy']:.2f} %"]
        for name, acc in result.get("per_class_accuracy", {}).items():
            lines.append(f"  {name:<12} {100 * acc:6.2f} %")
        return lines


class _SyntheticTask(_SequenceTask):
    """Fresh training sequences at every step; fixed validation and test sets."""

    fresh = True
    held_out = 1000  # sequences in each of the validation and test sets

    def __init__(self, cfg):
        super().__init__(cfg)
        from rnnlab.tasks import synthetic

        self._synthetic = synthetic
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
        x, y = self._synthetic.adding(n, self.cfg.T, rng)
        return x, y.astype(np.float32), None

    def input_spec(self, cfg):
        return {"type": "vectors", "size": 2}

    def loss(self, output, batch):
        return mean_squared_error(output, batch.y, reduction="mean")

    def evaluate(self, model, split):
        out, y, _ = self._eval_outputs(model, split)
        mse = float(np.mean((out.astype(np.float64) - y) ** 2))
        one, mean = self._synthetic.adding_baseline_on(y)
        return {"mse": mse, "baseline_mse": self._synthetic.adding_baseline(),
                "baseline_mse_one": one, "baseline_mse_empirical": mean}  # fmt: skip

    def solved(self, result) -> bool:
        return result["mse"] < 0.01

    def report(self, result):
        below = result["mse"] < result["baseline_mse_empirical"]
        return [
            f"test MSE {result['mse']:.5f}; baseline of answering 1: {result['baseline_mse']:.4f}"
            f" (1/6); on this test set {result['baseline_mse_one']:.4f}, and "
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
        x, y = self._synthetic.copy_memory(n, self.cfg.T, rng)
        return x.astype(np.int64), y.astype(np.int64), None

    def seq_len_hint(self):
        return self.cfg.T + 20

    def input_spec(self, cfg):
        return {"type": "tokens", "vocab_size": 10, "embed_dim": cfg.embed}

    def evaluate(self, model, split):
        out, y, _ = self._eval_outputs(model, split)
        loss, _ = softmax_cross_entropy(out, y, reduction="mean")
        recall = _accuracy(out[:, -10:], y[:, -10:])
        base_loss, base_recall = self._synthetic.copy_baseline_on(y)
        return {
            "loss": loss,
            "recall_accuracy": recall,
            "baseline_loss": self._synthetic.copy_baseline(self.cfg.T),
            "baseline_loss_empirical": base_loss,
            "baseline_recall_empirical": base_recall,
        }

    def solved(self, result) -> bool:
        return result["recall_accuracy"] >= 0.99

    def report(self, result):
        below = result["loss"] < result["baseline_loss_empirical"]
        return [
            f"test cross-entropy {result['loss']:.4f} nats/step; memoryless baseline "
            f"{result['baseline_loss']:.4f} (10 ln 8 / (T + 20)), "
            f"{result['baseline_loss_empirical']:.4f} on this test set: "
            f"{'below' if below else 'not below'} it",
            f"recalled symbols correct {100 * result['recall_accuracy']:.1f} % (chance 12.5 %, "
            f"{100 * result['baseline_recall_empirical']:.1f} % on this test set); "
            f"{'solved' if self.solved(result) else 'not solved'} (recall >= 99 %)",
        ]


class TemporalOrder(_SyntheticTask):
    name = "temporal-order"
    metric = "accuracy"
    higher_is_better = True
    output_size = 4

    def sample(self, n, rng):
        x, lengths, y = self._synthetic.temporal_order(n, self.cfg.T, rng)
        return x, y.astype(np.int64), lengths

    def input_spec(self, cfg):
        return {"type": "vectors", "size": 8}

    def evaluate(self, model, split):
        out, y, _ = self._eval_outputs(model, split)
        loss, _ = softmax_cross_entropy(out, y, reduction="mean")
        return {"accuracy": _accuracy(out, y), "loss": loss,
                "chance": self._synthetic.temporal_order_baseline(),
                "majority": self._synthetic.majority_accuracy(y)}  # fmt: skip

    def solved(self, result) -> bool:
        return result["accuracy"] >= 0.98

    def report(self, result):
        return [_chance_line(result) + "; " + ("solved" if self.solved(result) else "not solved")
                + " (accuracy >= 98 %)"]  # fmt: skip


def _chance_line(result: dict) -> str:
    """A classifier's accuracy beside chance (analytic) and its held-out set's commonest class
    (empirical), judged against the latter."""
    above = result["accuracy"] > result["majority"]
    return (
        f"test accuracy {100 * result['accuracy']:.2f} % (chance {100 * result['chance']:g} %, "
        f"commonest class of this test set {100 * result['majority']:.1f} %: "
        f"{'above' if above else 'not above'} it)"
    )
