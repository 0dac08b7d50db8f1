"""The encoder–decoder tasks as training recipes: `numbers`, `dates` and `caption`
(rnnlab.tasks.transduction's data) for the Trainer, `rnnlab evaluate`, `rnnlab translate` and
the attention plot.

The Trainer drives every model the same way (forward of a batch, a loss on its output,
backward); `Trainee` puts a Seq2Seq under that protocol: the batch's x is the source, its y
the target ids, and the decoder reads the target shifted by one (teacher forcing), or, with
`--teacher-forcing a:b`, a mix of the truth and the model's own draws (scheduled sampling,
Bengio et al. 2015, on the schedule the output-feedback models use). A run stores the source
and target alphabets in config.json ("data"), so evaluation and translation read text with
the mapping the model was trained with, whatever the data generators do later.
"""

from __future__ import annotations

import hashlib
import sys
from collections import Counter

import numpy as np

from rnnlab import _checks
from rnnlab.layers import Backward, Forward
from rnnlab.losses import softmax, softmax_cross_entropy
from rnnlab.modules import _Module
from rnnlab.seq2seq import ATTENTIONS, Seq2Seq
from rnnlab.tasks import transduction as td
from rnnlab.train import Batch, TrainConfig

TASKS = ("numbers", "dates", "caption")
TRAIN_SIZE = {"numbers": 50_000, "dates": 50_000, "caption": 20_000}  # pairs (--train-size)
HELD_OUT_SIZE = {"valid": 500, "test": 1000}
DECODE_BATCH = 250  # sources per greedy call; a beam of k decodes DECODE_BATCH // k at once


def target_lengths(y: np.ndarray) -> np.ndarray:
    """Tokens of each padded target row, its EOS included (PAD only after the end)."""
    return (np.asarray(y) != td.PAD).sum(axis=1)


class Trainee(_Module):
    """A Seq2Seq as the Trainer drives its models: `forward(x, lengths=…, targets=y,
    teacher=p)` with x the source (ids or vectors), lengths the source's, y the target ids
    ending in EOS and padded with PAD; the parameters are the Seq2Seq's own arrays."""

    wants_targets = True  # the Trainer passes the batch's targets and the teacher schedule

    def __init__(self, net: Seq2Seq):
        self.net = net
        self.params = net.params

    def forward(self, x, *, lengths=None, state=None, training=False, rng=None,
                targets=None, teacher: float = 1.0, grad=True) -> Forward:  # fmt: skip
        if targets is None:
            _checks.fail("targets", "the target ids (the decoder reads them shifted by one)",
                         "None")  # fmt: skip
        targets = _checks.int_array(targets, "targets", ndim=2)
        tgt_in = td.teacher_inputs(targets)
        if training and teacher < 1.0:
            tgt_in = self.scheduled_inputs(x, lengths, tgt_in, teacher, rng)
        return self.net.forward(x, tgt_in, src_lengths=lengths,
                                tgt_lengths=target_lengths(targets), training=training,
                                rng=rng, grad=grad)  # fmt: skip

    def backward(self, f: Forward, d_output, d_state=None, *, input_grad=True) -> Backward:
        return self.net.backward(f, d_output)

    def scheduled_inputs(self, src, src_lengths, tgt_in, p: float, rng) -> np.ndarray:
        """Scheduled sampling (Bengio et al. 2015): after BOS, each decoder input is the true
        previous token with probability p, otherwise a token drawn from the model's own
        distribution at the previous step given the inputs chosen so far (the encoder and
        decoder run without dropout for the draws). A draw is a constant for the gradient, as
        in the paper, so the teacher-forced pass over the inputs chosen here is the exact
        forward and backward of the step."""
        net, out = self.net, tgt_in.copy()
        B, T = out.shape
        enc, state, src_mask, _ = net._start(src, src_lengths, T)
        for t in range(1, T):
            logits, state = net._step(out[:, t - 1], state, enc, src_mask)
            u = rng.random((B, 1))
            own = np.minimum((softmax(logits, axis=-1).cumsum(axis=-1) < u).sum(axis=-1),
                             logits.shape[-1] - 1)  # fmt: skip
            out[:, t] = np.where(rng.random(B) < p, out[:, t], own)
        return out


def build(spec: dict, rng) -> Trainee:
    """The model a run's spec ({"type": "seq2seq", ...}, from `model_spec`) describes."""
    try:
        src = spec["source"]
        net = Seq2Seq(
            src["vocab_size"] if src["type"] == "tokens" else None,
            spec["target_vocab"],
            source_features=src["size"] if src["type"] == "vectors" else None,
            embed=spec["embed"],
            hidden=spec["hidden"],
            cell=spec["cell"],
            encoder_layers=spec["encoder_layers"],
            decoder_layers=spec["decoder_layers"],
            bidirectional=spec["bidirectional"],
            attention=spec["attention"],
            attention_size=spec.get("attention_size"),
            recurrent=spec["recurrent"],
            rng=rng,
        )
    except (KeyError, TypeError) as e:
        raise ValueError(f"`spec` must describe a seq2seq model (see rnnlab.translation.model_spec)"
                         f"; missing or malformed {e}") from None  # fmt: skip
    return Trainee(net)


class Transduction:
    """numbers, dates or caption as a Trainer task: fixed training pairs (`--train-size`,
    made when first needed), batches of similar source lengths, greedy exact match on the
    validation split for early stopping, and at the end greedy and beam search on the test
    split beside a baseline."""

    metric = "exact_match"
    higher_is_better = True
    readout = "seq2seq"

    def __init__(self, cfg: TrainConfig, data: dict | None = None):
        from rnnlab.models import CELLS

        self.name = cfg.task
        self.cfg = cfg
        why = {
            "bptt": "0 (full BPTT: the decoder reads the whole source)",
            "proj_size": "0 (the bridge and the attention read h at full size)",
        }
        for key, what in why.items():
            if getattr(cfg, key):
                _checks.fail(key, what + f" for the {cfg.task} task", repr(getattr(cfg, key)))
        if cfg.cell not in CELLS:
            _checks.fail("cell", f"one of {', '.join(CELLS)} for the {cfg.task} task (encoder "
                         "and decoder)", repr(cfg.cell))  # fmt: skip
        if cfg.initial_state != "zeros":
            _checks.fail("initial_state", f"'zeros' for the {cfg.task} task (the decoder "
                         "starts from the encoder's state)", repr(cfg.initial_state))  # fmt: skip
        self.tokens = cfg.task != "caption"
        self._splits: dict = {}
        self._record = _checked_record(data) if data else None
        if self._record is None:
            self._fit_record()
        r = self._record
        self.source_codec = td.CharCodec(tuple(r["source_chars"])) if self.tokens else None
        self.target_codec = td.CharCodec(tuple(r["target_chars"]))
        self.output_size = self.target_codec.size

    # ------------------------------------------------------------------ data
    def _raw(self, split: str):
        """(sources: strings or (images, lengths), targets: strings) of a split."""
        n = (self.cfg.train_size or TRAIN_SIZE[self.name]) if split == "train" else \
            HELD_OUT_SIZE[split]  # fmt: skip
        if self.name == "caption":
            x, lengths, words = td.caption(split, n, seed=self.cfg.seed)
            return (x, lengths), words
        pairs = (td.numbers if self.name == "numbers" else td.dates)(split, n, seed=self.cfg.seed)
        return [s for s, _ in pairs], [t for _, t in pairs]

    def _fit_record(self) -> None:
        """The alphabets from the training split, and what evaluation needs to know of it."""
        sources, targets = self._raw("train")
        test = self._raw("test")
        self._record = {
            "source_chars": "".join(td.CharCodec.fit(sources).chars) if self.tokens else None,
            "target_chars": "".join(td.CharCodec.fit(targets).chars),
            "max_source_len": max(len(s) for s in sources)
            if self.tokens
            else int(sources[1].max()),  # fmt: skip
            "max_target_len": max(len(t) for t in targets),
            "most_frequent_target": Counter(targets).most_common(1)[0][0],
            "test_sha256": self._digest(*test),
        }
        self._keep("train", sources, targets)
        self._keep("test", *test)

    def _digest(self, sources, targets) -> str:
        h = hashlib.sha256()
        if self.tokens:
            h.update("\n".join(sources).encode())
        else:
            h.update(np.ascontiguousarray(sources[0]).tobytes() + sources[1].tobytes())
        h.update("\n".join(targets).encode())
        return h.hexdigest()

    def _keep(self, split, sources, targets):
        """Encode a split once: (x, y, lengths, source texts or None, target texts)."""
        unknown = "error" if split == "train" else "map"  # held-out may hold a rare character
        if self.tokens:
            codec = td.CharCodec(tuple(self._record["source_chars"]))
            x, lengths = codec.encode(sources, eos=False, unknown=unknown)
        else:
            x, lengths = sources
        y, _ = td.CharCodec(tuple(self._record["target_chars"])).encode(targets, unknown=unknown)
        self._splits[split] = (x, y, lengths, sources if self.tokens else None, targets)

    def _split(self, split: str):
        if split not in self._splits:
            sources, targets = self._raw(split)
            self._keep(split, sources, targets)
            if split == "test" and self._digest(sources, targets) != self._record["test_sha256"]:
                print(f"rnnlab: warning: the {self.name} test split made now differs from the "
                      "one of the run's training (another version of num2words, babel or "
                      "scikit-learn?); the scores are on the new one", file=sys.stderr)  # fmt: skip
        return self._splits[split]

    def data_record(self) -> dict:
        """config.json's "data": the alphabets (source_chars, target_chars), the longest
        source and target of training, the most frequent training target (caption's
        baseline) and the SHA-256 of the test split."""
        return dict(self._record)

    def prepare(self, x, lengths):
        """The source as the model reads it: reversed within its length with reverse_input."""
        if self.cfg.reverse_input:
            from rnnlab.recipes import _reverse_within

            x = _reverse_within(x, lengths)
        return x

    # ------------------------------------------------------------------ training
    def batch(self, step: int, rng) -> Batch:
        """The step's batch: epochs over the training pairs, shuffled by (seed, epoch), with
        pools of 16 batches sorted by source length so that little of a batch is padding."""
        x, y, lengths = self._split("train")[:3]
        B, n = self.cfg.batch_size, len(y)
        epoch, i = divmod(step, max(n // B, 1))
        order = np.random.default_rng([self.cfg.seed, epoch, 23]).permutation(n)
        pool = 16 * B
        for a in range(0, n, pool):
            chunk = order[a : a + pool]
            order[a : a + pool] = chunk[np.argsort(lengths[chunk], kind="stable")]
        idx = order[i * B : (i + 1) * B]
        ls = lengths[idx]
        xb = self.prepare(x[idx][:, : ls.max()], ls)
        yb = y[idx]
        ty = target_lengths(yb)
        return Batch(xb, yb[:, : ty.max()], ls, items=int(ty.sum()))

    def row_weights(self, batch: Batch) -> np.ndarray:
        """What each row weighs in the batch's mean loss: its target tokens (the loss is the
        mean over them). Data-parallel training weighs each rank's mean by its rows' share
        (rnnlab.distributed), so K ranks equal one process with the whole batch."""
        return target_lengths(batch.y)

    def loss(self, output, batch: Batch):
        """Cross entropy per target token (EOS included), averaged over the batch's tokens."""
        return softmax_cross_entropy(output, batch.y, lengths=target_lengths(batch.y),
                                     reduction="mean")  # fmt: skip

    # ------------------------------------------------------------------ evaluation
    def decode(self, model, x, lengths, beam: int = 1) -> list[str]:
        """Greedy (beam 1) or beam-search outputs of a prepared batch of sources, as text."""
        net, out = model.net if isinstance(model, Trainee) else model, []
        max_len = 2 * self._record["max_target_len"] + 10
        step = max(DECODE_BATCH // beam, 1)
        for a in range(0, len(x), step):
            sl = slice(a, a + step)
            kw = dict(src_lengths=lengths[sl], bos=td.BOS, eos=td.EOS, max_len=max_len)
            if beam == 1:
                ids, _ = net.greedy(x[sl], **kw)
            else:
                ids, _ = net.beam_search(x[sl], width=beam, **kw)
            out += self.target_codec.decode(ids)
        return out

    def evaluate(self, model, split: str, beam: int | None = None) -> dict:
        """Greedy exact match, CER, BLEU and chrF and the teacher-forced loss on `split`;
        with `beam` (the test split: the run's --beam unless given), beam search's too, and
        the baseline: copying the source (numbers, dates), or always answering the most
        frequent training caption (caption)."""
        x, y, lengths, sources, refs = self._split(split)
        xp = self.prepare(x, lengths)
        total = count = 0.0
        for a in range(0, len(y), DECODE_BATCH):
            sl = slice(a, a + DECODE_BATCH)
            f = model.forward(xp[sl], lengths=lengths[sl], targets=y[sl], grad=False)
            loss, _ = softmax_cross_entropy(f.output, y[sl], lengths=target_lengths(y[sl]),
                                            reduction="sum")  # fmt: skip
            total += loss
            count += target_lengths(y[sl]).sum()
        result = {**td.scores(self.decode(model, xp, lengths), refs), "loss": total / count}
        if beam is None and split == "test":
            beam = self.cfg.beam
        if beam is not None:
            result["items"] = len(refs)
            result["beam"] = {"width": beam, **td.scores(self.decode(model, xp, lengths, beam),
                                                         refs)}  # fmt: skip
            if self.tokens:
                result["baseline"] = {"name": "copy the source", **td.scores(sources, refs)}
            else:
                constant = self._record["most_frequent_target"]
                result["baseline"] = {"name": f"always {constant!r}",
                                      **td.scores([constant] * len(refs), refs)}  # fmt: skip
        return result

    def report(self, result: dict) -> list[str]:
        items = result.get("items", "all")
        lines = [f"held-out ({items} items):   exact match    CER     BLEU    chrF"]
        rows = [("greedy", result)]
        if "beam" in result:
            rows.append((f"beam {result['beam']['width']}", result["beam"]))
        if "baseline" in result:
            rows.append((result["baseline"]["name"], result["baseline"]))
        for name, r in rows:
            lines.append(f"  {name:<24} {100 * r['exact_match']:7.2f} %  {r['cer']:6.3f}  "
                         f"{r['bleu']:6.2f}  {r['chrf']:6.2f}")  # fmt: skip
        return lines

    # ------------------------------------------------------------------ translation
    def translate(self, model, texts: list[str], *, beam: int, unknown: str = "error",
                  where: list[str] | None = None) -> list[str]:  # fmt: skip
        """Outputs for source texts (numbers, dates runs). `where`: how to name each text
        in an error ("line 3 of F"). Characters the model never saw are refused, naming
        them, unless `unknown="map"` (the unknown symbol); a source longer than any of
        training is decoded with a warning on stderr."""
        if not self.tokens:
            _checks.fail("run", "a numbers or dates run (text sources)",
                         "a caption run, whose sources are images")  # fmt: skip
        beam = _beam(beam)
        _checks.choice(unknown, "unknown", ("error", "map"))
        where = where or [f"source {i + 1}" for i in range(len(texts))]
        known = set(self._record["source_chars"])
        longest = self._record["max_source_len"]
        for text, w in zip(texts, where, strict=True):
            if not text:
                _checks.fail("source", "non-empty text", f"an empty {w}")
            new = sorted(set(text) - known)
            if new and unknown == "error":
                _checks.fail("source", "characters the model saw in training",
                             f"{', '.join(map(repr, new))} in {w}",
                             "Map them to the unknown symbol with --unknown map.")  # fmt: skip
            if len(text) > longest:
                print(
                    f"rnnlab: warning: {w} has {len(text)} characters, more than any source "
                    f"in training ({longest}); the output may be poor",
                    file=sys.stderr,
                )
        if not texts:
            return []
        x, lengths = self.source_codec.encode(texts, eos=False, unknown="map")
        return self.decode(model, self.prepare(x, lengths), lengths, beam)

    # ------------------------------------------------------------------ attention
    def attention_examples(self, model, n: int = 4):
        """(source labels, output labels, weights (T, S) in the source's own order) of the
        first n test items, decoded greedily; the image columns for caption."""
        x, _, lengths, sources, _ = self._split("test")
        x, lengths = x[:n], lengths[:n]
        xp = self.prepare(x, lengths)
        net = model.net
        # an output longer than any target of training is cut there (an untrained model's)
        max_len = self._record["max_target_len"] + 1
        ids, _ = net.greedy(xp, src_lengths=lengths, bos=td.BOS, eos=td.EOS, max_len=max_len)
        f = net.forward(xp, td.teacher_inputs(ids), src_lengths=lengths, grad=False)
        alpha = f.cache["head"][1][0]  # (B, T, S): the softmax over the source
        out = []
        for b in range(len(lengths)):
            L = int(lengths[b])
            n_out = int(np.argmax(ids[b] == td.EOS)) + 1 if (ids[b] == td.EOS).any() else \
                ids.shape[1]  # fmt: skip
            a = alpha[b, :n_out, :L]
            if self.cfg.reverse_input:
                a = a[:, ::-1]  # read order → the source's own order
            ys = self.target_codec.decode(ids[b : b + 1, :n_out])[0]
            ylab = list(ys) + (["</s>"] if n_out > len(ys) else [])
            xlab = list(sources[b]) if self.tokens else x[b, :L]
            out.append((xlab, ylab, a))
        return out


def _beam(beam) -> int:
    if isinstance(beam, bool) or not isinstance(beam, int) or beam < 1:
        _checks.fail("--beam", "a positive integer (1: greedy)", repr(beam))
    return beam


def _checked_record(data) -> dict:
    keys = ("source_chars", "target_chars", "max_source_len", "max_target_len",
            "most_frequent_target", "test_sha256")  # fmt: skip
    if (
        not isinstance(data, dict)
        or any(k not in data for k in keys)
        or not isinstance(data["target_chars"], str)
    ):
        _checks.fail("config.json's 'data'", "a record of the alphabets (" + ", ".join(keys) +
                     ")", _checks.describe(data))  # fmt: skip
    return dict(data)


def model_spec(cfg: TrainConfig, task: Transduction) -> dict:
    """config.json's "model" for an encoder–decoder run: the training options mapped onto the
    encoder (cell, hidden, layers, bidirectional) and the decoder (cell, hidden, layers)."""
    source = ({"type": "tokens", "vocab_size": task.source_codec.size} if task.tokens else
              {"type": "vectors", "size": 8})  # fmt: skip
    lstm = cfg.cell == "lstm"
    return {
        "type": "seq2seq",
        "source": source,
        "target_vocab": task.output_size,
        "embed": cfg.embed,
        "hidden": cfg.hidden,
        "cell": cfg.cell,
        "encoder_layers": cfg.layers,
        "decoder_layers": cfg.layers,
        "bidirectional": cfg.bidirectional,
        "attention": _checks.choice(cfg.attention, "attention", ATTENTIONS),
        "attention_size": cfg.attention_size or cfg.hidden,
        "recurrent": {
            "dropout": cfg.dropout,
            "forget_bias": cfg.forget_bias if lstm else None,
            "peephole": cfg.peephole,
            "coupled": cfg.coupled,
            "cell_clip": cfg.cell_clip or None,
            "layer_norm": cfg.layer_norm,
            "recurrent_dropout": cfg.recurrent_dropout,
            "zoneout": cfg.zoneout,
        },
    }
