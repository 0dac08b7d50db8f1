"""Sequence-to-sequence data made offline, for the encoder–decoder (rnnlab.seq2seq): pairs of
strings whose output has its own length and order.

- `numbers`: English number words → German number words, 0 – 999,999 ("three hundred and
  forty-seven" → "dreihundertsiebenundvierzig"): German writes units before tens, so the
  model must reorder, which is what attention and reversed input are about. Both sides come
  from the `num2words` package.
- `dates`: a date written in one of several locales and styles ("Tuesday, 7 March 2023",
  "07.03.2023", "7 mars 2023", …, formatted by `babel`) → ISO 8601 ("2023-03-07"). Only
  styles that spell the year with four digits and put the day before the month whenever both
  are numbers are used, so that every source has exactly one answer.
- `caption`: the notes' one-to-many "image to text": scikit-learn's 8×8 digit images of a
  1–3 digit number side by side, read column by column (8 values a step) → the number in
  English words ("forty-two"). Test numbers are drawn from the test images only.

Splits are held out by value: a number or a day belongs to train, valid or test by a hash of
the value, so no test item (in any of its spellings) is ever trained on, whatever the seed.
The seed chooses which of a split's values (caption: which captions of its images) are
drawn, so runs of two seeds are scored on two samples of one held-out set. Strings become ids
through a codec built from the training side: characters (`CharCodec`) for the sources and
for numbers' and dates' outputs, words (`WordCodec`, 38 of them) for caption's, whose decoder
writes a number word at a time (docs/seq2seq.md has the runs behind that choice). `scores`
gives exact match, the character error rate (`editdistance`) and BLEU and chrF (`sacrebleu`).
"""

from __future__ import annotations

import datetime
import hashlib
import sys
from collections import Counter
from collections.abc import Sequence
from typing import Any, NoReturn, Unpack

import numpy as np

from rnnlab import _checks
from rnnlab._checks import choice, fail
from rnnlab.layers import Backward, Forward, PassOptions, _training_rng, pass_options
from rnnlab.losses import softmax, softmax_cross_entropy
from rnnlab.modules import _Module
from rnnlab.seq2seq import ATTENTIONS, Seq2Seq
from rnnlab.tasks._sequence import epoch_batches
from rnnlab.tasks.codecs import BOS, EOS, PAD, CharCodec, Codec, WordCodec
from rnnlab.tasks.digits import MissingDependencyError
from rnnlab.train import Batch, TrainConfig

SPLITS = ("train", "valid", "test")
HELD_OUT = {"valid": 0.05, "test": 0.05}  # the share of values in each held-out split
MAX_NUMBER = 999_999
FIRST_DAY, LAST_DAY = datetime.date(1900, 1, 1), datetime.date(2099, 12, 31)
DATE_STYLES = (
    ("en_US", "medium"),  # Mar 7, 2023
    ("en_US", "long"),  # March 7, 2023
    ("en_US", "full"),  # Tuesday, March 7, 2023
    ("en_GB", "short"),  # 07/03/2023
    ("en_GB", "medium"),  # 7 Mar 2023
    ("en_GB", "long"),  # 7 March 2023
    ("en_GB", "full"),  # Tuesday, 7 March 2023
    ("de_DE", "medium"),  # 07.03.2023
    ("de_DE", "long"),  # 7. März 2023
    ("de_DE", "full"),  # Dienstag, 7. März 2023
    ("fr_FR", "short"),  # 07/03/2023
    ("fr_FR", "long"),  # 7 mars 2023
    ("fr_FR", "full"),  # mardi 7 mars 2023
)


def split_of(value: int, salt: str) -> str:
    """The split a value belongs to, by a hash of it (stable across runs and machines)."""
    h = int.from_bytes(hashlib.sha256(f"{salt}:{value}".encode()).digest()[:8], "little")
    u = h / 2.0**64
    if u < HELD_OUT["test"]:
        return "test"
    if u < HELD_OUT["test"] + HELD_OUT["valid"]:
        return "valid"
    return "train"


def _num2words():
    try:
        from num2words import num2words
    except ImportError:
        raise MissingDependencyError(
            "the numbers task needs num2words: pip install 'rnnlab[seq2seq]'"
        ) from None
    return num2words


def _format_date():
    try:
        from babel.dates import format_date
    except ImportError:
        raise MissingDependencyError(
            "the dates task needs babel: pip install 'rnnlab[seq2seq]'"
        ) from None
    return format_date


def _values(split: str, n: int, salt: str, high: int, rng: np.random.Generator) -> list[int]:
    """n values in [0, high] of the split, drawn uniformly (rejection by split)."""
    choice(split, "split", SPLITS)
    out: list[int] = []
    while len(out) < n:
        for v in rng.integers(0, high + 1, size=max(64, 2 * (n - len(out)))):
            if split_of(int(v), salt) == split:
                out.append(int(v))
                if len(out) == n:
                    break
    return out


def _draws(split: str, n: object, seed: object) -> tuple[int, int]:
    """(n, seed) of a data function, checked: a float n was drawn as a count of another size
    (2.5 gave 4 items), a negative one as none, and a negative seed raised NumPy's own
    message, which names no argument."""
    choice(split, "split", SPLITS)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        fail("n", "a non-negative integer (the number of items)", _checks.describe(n))
    return int(n), _checks.seed(seed, "seed")


def numbers(split: str, n: int, seed: int = 0) -> list[tuple[str, str]]:
    """n (English, German) pairs of number words of the split, values uniform on
    0 – 999,999 (drawn with `seed`: which values a split holds does not depend on it, which
    of them are drawn does)."""
    n, seed = _draws(split, n, seed)
    words = _num2words()
    rng = np.random.default_rng([seed, SPLITS.index(split)])
    return [(words(v, lang="en"), words(v, lang="de")) for v in
            _values(split, n, "numbers", MAX_NUMBER, rng)]  # fmt: skip


def dates(split: str, n: int, seed: int = 0) -> list[tuple[str, str]]:
    """n (written date, ISO 8601) pairs of the split: days uniform on 1900 – 2099, each in a
    style drawn from DATE_STYLES (drawn with `seed`, as `numbers`)."""
    n, seed = _draws(split, n, seed)
    fmt = _format_date()
    rng = np.random.default_rng([seed, SPLITS.index(split), 1])
    days = (LAST_DAY - FIRST_DAY).days
    out = []
    for k in _values(split, n, "dates", days, rng):
        day = FIRST_DAY + datetime.timedelta(days=k)
        locale, style = DATE_STYLES[int(rng.integers(len(DATE_STYLES)))]
        out.append((fmt(day, style, locale=locale), day.isoformat()))
    return out


def teacher_inputs(targets: np.ndarray) -> np.ndarray:
    """The decoder's input under teacher forcing: BOS, then the targets shifted right."""
    return np.concatenate([np.full((targets.shape[0], 1), BOS), targets[:, :-1]], axis=1)


CAPTION_FOLDS = 10  # each digit's training images in tenths; one of them validates


def caption_images(split: str, fold: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The digit images (n, 8 rows, 8 columns) and their labels that `split`'s captions are
    made of. scikit-learn's test images (rnnlab.tasks.digits's stratified split, seed 0) are
    the test split's; each digit's training images are cut into CAPTION_FOLDS tenths (a fixed
    shuffle), tenth `fold` is the valid split's and the rest the train split's, so that
    validation, like the test, reads handwriting the model never trained on."""
    from rnnlab.tasks.digits import load_digits_sequences

    choice(split, "split", SPLITS)
    if isinstance(fold, bool) or not isinstance(fold, int) or not 0 <= fold < CAPTION_FOLDS:
        fail("fold", f"an integer from 0 to {CAPTION_FOLDS - 1}", repr(fold))
    x_tr, y_tr, x_te, y_te = load_digits_sequences("rows", seed=0)
    if split == "test":
        return x_te, y_te
    rng = np.random.default_rng([0, 29])  # the same tenths whatever the run's seed
    held = np.zeros(len(y_tr), bool)
    for d in range(10):
        members = rng.permutation(np.flatnonzero(y_tr == d))
        bounds = np.linspace(0, len(members), CAPTION_FOLDS + 1).round().astype(int)
        held[members[bounds[fold] : bounds[fold + 1]]] = True
    keep = held if split == "valid" else ~held
    return x_tr[keep], y_tr[keep]


def caption(split: str, n: int, seed: int = 0,
            fold: int = 0) -> tuple[np.ndarray, np.ndarray, list[str]]:  # fmt: skip
    """n images of 1–3 digit numbers (uniform number of digits, then uniform digits; no
    leading zero) as column sequences: (x (n, 8·d_max, 8) float32, lengths (n,) = 8·digits,
    English words). Each split draws its digits from its own images (`caption_images`, with
    the validation tenth `fold`): scikit-learn's test images for test, disjoint parts of its
    training images for train and valid, so neither a validation nor a test image is ever
    trained on. Which images a split reads does not depend on `seed`; the captions drawn
    from them do."""
    n, seed = _draws(split, n, seed)
    num2words = _num2words()
    spelt: dict[int, str] = {}  # num2words is the slow part: once per number
    images, labels = caption_images(split, fold)
    by_digit = [np.flatnonzero(labels == d) for d in range(10)]
    rng = np.random.default_rng([seed, SPLITS.index(split), 2])
    x = np.zeros((n, 24, 8), np.float32)
    lengths = np.zeros(n, np.int64)
    texts = []
    for i in range(n):
        k = int(rng.integers(1, 4))
        digits = [int(rng.integers(1 if k > 1 else 0, 10))] + [
            int(rng.integers(0, 10)) for _ in range(k - 1)
        ]
        for j, d in enumerate(digits):
            img = images[rng.choice(by_digit[d])]  # (8 rows, 8 columns)
            x[i, 8 * j : 8 * (j + 1)] = img.T  # step = one column, its 8 pixels
        lengths[i] = 8 * k
        v = int("".join(map(str, digits)))
        if v not in spelt:
            spelt[v] = num2words(v, lang="en")
        texts.append(spelt[v])
    return x, lengths, texts


def scores(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """exact_match and cer (character error rate: edit distance over the references'
    length, `editdistance`), and corpus bleu and chrf (`sacrebleu`, its defaults). Each
    argument is a sequence of strings, one per item: a string alone would be scored as a
    list of its characters."""
    for name, texts in (("hypotheses", hypotheses), ("references", references)):
        if isinstance(texts, (str, bytes)) or not isinstance(texts, (Sequence, np.ndarray)):
            fail(name, "a sequence of strings, one per item", _checks.describe(texts))
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                fail(name, "a sequence of strings, one per item",
                     f"{_checks.describe(text)} at index {i}")  # fmt: skip
    if len(hypotheses) != len(references) or len(references) == 0:
        fail("hypotheses", f"{len(references)} strings, one per reference (at least one)",
             f"{len(hypotheses)}")  # fmt: skip
    try:
        import editdistance
        import sacrebleu
    except ImportError:
        raise MissingDependencyError(
            "scoring needs editdistance and sacrebleu: pip install 'rnnlab[seq2seq]'"
        ) from None
    exact = float(np.mean([h == r for h, r in zip(hypotheses, references, strict=True)]))
    edits = sum(editdistance.eval(h, r) for h, r in zip(hypotheses, references, strict=True))
    cer = edits / max(1, sum(len(r) for r in references))
    refs = [list(references)]
    return {
        "exact_match": exact,
        "cer": float(cer),
        "bleu": float(sacrebleu.corpus_bleu(list(hypotheses), refs).score),
        "chrf": float(sacrebleu.corpus_chrf(list(hypotheses), refs).score),
    }


# -------------------- the encoder-decoder tasks, as the Trainer drives them
# `numbers`, `dates` and `caption` as training recipes, for the Trainer, `rnnlab evaluate`,
# `rnnlab translate` and the attention plot. The Trainer drives every model the same way
# (forward of a batch, a loss on its output, backward); `Trainee` puts a Seq2Seq under that
# protocol: the batch's x is the source, its y the target ids, and the decoder reads the
# target shifted by one (teacher forcing), or, with `--teacher-forcing a:b`, a mix of the truth
# and the model's own draws (scheduled sampling, Bengio et al. 2015, on the schedule the
# output-feedback models use). A run stores the source and target alphabets in config.json
# ("data"), so evaluation and translation read text with the mapping the model was trained
# with, whatever the data generators do later.


TASKS = ("numbers", "dates", "caption")
TRAIN_SIZE = {"numbers": 50_000, "dates": 50_000, "caption": 20_000}  # pairs (--train-size)
# The most training pairs a new run makes: a million numbers take about four minutes to
# spell (num2words), and more is no new data (values are drawn from at most a million).
MAX_TRAIN_SIZE = 1_000_000
HELD_OUT_SIZE = {"valid": 500, "test": 1000}
DECODE_BATCH = 250  # sources per greedy call; a beam of k decodes DECODE_BATCH // k at once


def target_lengths(y: np.ndarray) -> np.ndarray:
    """Tokens of each padded target row, its EOS included (PAD only after the end)."""
    return (np.asarray(y) != PAD).sum(axis=1)


class Trainee(_Module):
    """A Seq2Seq as the Trainer drives its models: `forward(x, lengths=…, targets=y,
    teacher=p)` with x the source (ids or vectors), lengths the source's, y the target ids
    ending in EOS and padded with PAD; the parameters are the Seq2Seq's own arrays."""

    wants_targets = True  # the Trainer passes the batch's targets and the teacher schedule

    def __init__(self, net: Seq2Seq):
        self.net = net
        self.params = net.params

    def forward(self, x, *, targets=None, teacher: float = 1.0,
                **options: Unpack[PassOptions]) -> Forward:  # fmt: skip
        """The pass options of every module (PassOptions) beside the targets and the teacher
        schedule; `lengths` are the source's. The encoder starts from the Seq2Seq's own
        state, so a `state` or a `mask` (pass lengths) is refused, not ignored."""
        o = pass_options(options, "Trainee.forward")
        lengths, training, rng, grad = o["lengths"], o["training"], o["rng"], o["grad"]
        for name in ("state", "mask"):
            if o[name] is not None:
                _checks.fail(name, "None for an encoder-decoder (it starts from its own state;"
                             " padding comes as lengths)", _checks.describe(o[name]))  # fmt: skip
        if targets is None:
            _checks.fail("targets", "the target ids (the decoder reads them shifted by one)",
                         "None")  # fmt: skip
        targets = _checks.int_array(targets, "targets", ndim=2)
        teacher = _checks.probability(teacher, "teacher", allow_one=True)
        tgt_in = teacher_inputs(targets)
        if training and teacher < 1.0:
            # the draws and the pass's masks from one Generator, as OutputFeedback's
            # scheduled sampling: a seed made into it, None refused (a fresh draw each call is
            # no run; both raised AttributeError on `.random`)
            rng = _training_rng(rng, "scheduled sampling (teacher < 1)")
            tgt_in = self.scheduled_inputs(x, lengths, tgt_in, teacher, rng)
        return self.net.forward(x, tgt_in, src_lengths=lengths,
                                tgt_lengths=target_lengths(targets), training=training,
                                rng=rng, grad=grad)  # fmt: skip

    def backward(self, f: Forward, d_output, d_state=None, *, input_grad=True,
                 overwrite_d_output=False) -> Backward:
        return self.net.backward(f, d_output, input_grad=input_grad,
                                 overwrite_d_output=overwrite_d_output)  # fmt: skip

    def scheduled_inputs(self, src, src_lengths, tgt_in, p: float, rng) -> np.ndarray:
        """Scheduled sampling (Bengio et al. 2015): after BOS, each decoder input is the true
        previous token with probability p, otherwise a token drawn from the model's own
        distribution at the previous step given the inputs chosen so far (the encoder and
        decoder run without dropout for the draws). A draw is a constant for the gradient, as
        in the paper, so the teacher-forced pass over the inputs chosen here is the exact
        forward and backward of the step. PAD and BOS are never drawn (`_draw`), as decoding
        never writes them (NEVER)."""
        net, out = self.net, tgt_in.copy()
        B, T = out.shape
        memory, state, _ = net._start(src, src_lengths, T)
        for t in range(1, T):
            logits, state = net._step(out[:, t - 1], state, memory)
            own = _draw(softmax(logits, axis=-1), rng.random((B, 1)))
            out[:, t] = np.where(rng.random(B) < p, out[:, t], own)
        return out


def _draw(probs: np.ndarray, u: np.ndarray) -> np.ndarray:
    """A token a row, drawn from each row of `probs` (B, V) with PAD and BOS left out (their
    probability zeroed, the rest scaled to sum to 1), by the uniform numbers `u` (B, 1).

    Inverse-CDF: the token where the cumulative sum first reaches u. PAD and BOS are ids 0
    and 1, the first stretch [0, s) of the sum (s their probability): a u there is a uniform
    number in it, so u / s is a fresh uniform one, and the token it falls on in the rest of
    the sum, scaled to its total (1 - s), is a draw of the other tokens in their proportions. A row
    whose u lands past s draws as before it was left out, with the same random numbers (the
    generator is read as it was): only the draws of PAD or BOS change. A row whose whole
    probability lies on PAD and BOS (nothing else to draw) gets the next id, EOS."""
    assert (PAD, BOS) == (0, 1)  # (the stretch below is theirs)
    V = probs.shape[-1]
    own = np.minimum((probs.cumsum(axis=-1) < u).sum(axis=-1), V - 1)
    hit = own <= BOS
    if hit.any():
        rows, u_hit = probs[hit], u[hit]
        s = rows[:, : BOS + 1].sum(axis=-1, keepdims=True)
        fresh = np.divide(u_hit, s, out=np.zeros_like(u_hit), where=s > 0)
        rest = rows[:, BOS + 1 :].cumsum(axis=-1)
        own[hit] = BOS + 1 + np.minimum((rest < fresh * rest[:, -1:]).sum(axis=-1), V - BOS - 2)
    return own


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
            # (specs record a size for every attention; only the additive one has one)
            attention_size=spec.get("attention_size") if spec["attention"] == "additive" else None,
            input_dropout=spec.get("input_dropout", 0.0),
            source_conv=spec.get("source_conv", 0),
            recurrent=spec["recurrent"],
            rng=rng,
        )
    except (KeyError, TypeError) as e:
        raise ValueError("`spec` must describe a seq2seq model (see "
                         f"rnnlab.tasks.transduction.model_spec); missing or malformed {e}"
                         ) from None  # fmt: skip
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
        if cfg.source_conv and cfg.task != "caption":
            _checks.fail("source_conv", f"0 for the {cfg.task} task (its source is characters, "
                         "not an image)", repr(cfg.source_conv))  # fmt: skip
        if cfg.task == "caption" and cfg.valid_fold >= CAPTION_FOLDS:
            _checks.fail("valid_fold", f"an integer from 0 to {CAPTION_FOLDS - 1} (the tenth "
                         "of the training images that validates)",
                         repr(cfg.valid_fold))  # fmt: skip
        if cfg.initial_state != "zeros":
            _checks.fail("initial_state", f"'zeros' for the {cfg.task} task (the decoder "
                         "starts from the encoder's state)", repr(cfg.initial_state))  # fmt: skip
        self.tokens = cfg.task != "caption"
        self._splits: dict = {}
        self._record: dict = {}
        if data:  # a trained run: its pairs are made again only to resume, never checked
            self._record = _checked_record(data)
        else:
            if cfg.train_size > MAX_TRAIN_SIZE:
                _checks.fail("train_size", f"at most {MAX_TRAIN_SIZE:,} pairs for the {cfg.task} "
                             "task (each is made before the first step)",
                             f"{cfg.train_size:,}")  # fmt: skip
            self._fit_record()
        r = self._record
        self.source_codec = CharCodec(tuple(r["source_chars"])) if self.tokens else None
        self.target_codec = _target_codec(r)
        self.output_size = self.target_codec.size

    def check_new_run(self) -> list[str]:
        """What a new run may not ask for, though a saved run that did still loads: a test
        beam wider than the symbols the decoder chooses among (evaluate and translate refuse
        it as --beam: the hypotheses grow to the beam's width at every step, so --beam
        100000 decoded for minutes, and a run stored with it stalled at its last evaluation
        on every resume)."""
        self.checked_beam(self.cfg.beam, "beam", f"the {self.name} task")
        return []

    def checked_beam(self, beam: object, name: str, whose: str) -> int:
        """A beam width no wider than the symbols the decoder chooses among: the hypotheses
        grow to the beam's width at every step, and a width of the target vocabulary already
        keeps every continuation of the first step (`name` and `whose` say where it came
        from: evaluate's and translate's --beam for a run, a new run's setting)."""
        beam = _beam(beam)
        if beam > self.output_size:
            _checks.fail(name, f"a width from 1 to {self.output_size} for {whose} (the symbols "
                         "its decoder chooses among; a wider beam multiplies the work for next "
                         "to nothing)", str(beam))  # fmt: skip
        return beam

    # ------------------------------------------------------------------ data
    def _raw(self, split: str):
        """(sources: strings or (images, lengths), targets: strings) of a split."""
        n = (self.cfg.train_size or TRAIN_SIZE[self.name]) if split == "train" else \
            HELD_OUT_SIZE[split]  # fmt: skip
        if self.name == "caption":
            x, lengths, words = caption(split, n, seed=self.cfg.seed, fold=self.cfg.valid_fold)
            return (x, lengths), words
        pairs = (numbers if self.name == "numbers" else dates)(split, n, seed=self.cfg.seed)
        return [s for s, _ in pairs], [t for _, t in pairs]

    def _fit_record(self) -> None:
        """The alphabets from the training split, and what evaluation needs to know of it."""
        sources, targets = self._raw("train")
        test = self._raw("test")
        # caption's decoder writes words (WordCodec), the others' characters
        outputs = {"target_words": list(WordCodec.fit(targets).words)} if not self.tokens else \
            {"target_chars": "".join(CharCodec.fit(targets).chars)}  # fmt: skip
        self._record = {
            "source_chars": "".join(CharCodec.fit(sources).chars) if self.tokens else None,
            **outputs,
            "max_source_len": max(len(s) for s in sources)
            if self.tokens
            else int(sources[1].max()),  # fmt: skip
            "max_target_len": max(len(_target_codec(outputs).split(t)) for t in targets),
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
            codec = CharCodec(tuple(self._record["source_chars"]))
            x, lengths = codec.encode(sources, eos=False, unknown=unknown)
        else:
            x, lengths = sources
        y, _ = _target_codec(self._record).encode(targets, unknown=unknown)
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
            from rnnlab.tasks._sequence import _reverse_within

            x = _reverse_within(x, lengths)
        return x

    # ------------------------------------------------------------------ training
    def batch(self, step: int, rng) -> Batch:
        """The step's batch: epochs over the training pairs, shuffled by (seed, epoch), with
        pools of 16 batches sorted by source length so that little of a batch is padding
        (`epoch_batches`)."""
        x, y, lengths = self._split("train")[:3]
        B, n = self.cfg.batch_size, len(y)
        epoch, i = divmod(step, max(n // B, 1))
        idx = epoch_batches(n, B, lengths, self.cfg.seed, epoch)[i]
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
        return self._decode(model, x, lengths, beam)[0]

    def max_output_len(self) -> int:
        """The decoders' length limit: twice training's longest target, and 10 more."""
        return 2 * self._record["max_target_len"] + 10

    def _decode(self, model, x, lengths, beam: int) -> tuple[list[str], list[bool]]:
        """`decode`'s texts, and for each whether it ended (EOS) before the length limit."""
        # (checked here: 0 divided DECODE_BATCH, a float sliced, True decoded greedily)
        beam = _beam(beam, "beam")
        net, out, ended = model.net if isinstance(model, Trainee) else model, [], []
        max_len = self.max_output_len()
        step = max(DECODE_BATCH // beam, 1)
        for a in range(0, len(x), step):
            sl = slice(a, a + step)
            kw = dict(src_lengths=lengths[sl], bos=BOS, eos=EOS, max_len=max_len, never=NEVER)
            if beam == 1:
                ids, _ = net.greedy(x[sl], **kw)
            else:
                ids, _ = net.beam_search(x[sl], width=beam, **kw)
            out += self.target_codec.decode(ids)
            ended += (ids == EOS).any(axis=1).tolist()
        return out, ended

    def evaluate(self, model, split: str, beam: int | None = None) -> dict:
        """Greedy exact match, CER, BLEU and chrF and the teacher-forced loss on `split`;
        with `beam` (the test split: the run's --beam unless given), beam search's too, and
        the baseline: copying the source (numbers, dates), or always answering the most
        frequent training caption (caption). A bad `beam` is refused before any decoding
        (it was found after the greedy pass, 0 and fractions as Python's own errors)."""
        if beam is not None:
            beam = _beam(beam, "beam")
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
        result: dict[str, Any] = {
            **scores(self.decode(model, xp, lengths), refs), "loss": total / count
        }
        if beam is None and split == "test":
            beam = self.cfg.beam
        if beam is not None:
            result["items"] = len(refs)
            result["beam"] = {"width": beam, **scores(self.decode(model, xp, lengths, beam),
                                                         refs)}  # fmt: skip
            if self.tokens:
                result["baseline"] = {"name": "copy the source", **scores(sources, refs)}
            else:
                constant = self._record["most_frequent_target"]
                result["baseline"] = {"name": f"always {constant!r}",
                                      **scores([constant] * len(refs), refs)}  # fmt: skip
        return result

    def report(self, result: dict, split: str = "test") -> list[str]:
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
                  where: list[str] | None = None, name: str = "source") -> list[str]:  # fmt: skip
        """Outputs for source texts (numbers, dates runs). `where`: how to name each text
        in an error ("line 3 of F"); `name`: what an error says the texts came as (the
        command's `text` or `--file`). Characters the model never saw are refused, naming
        them, unless `unknown="map"` (the unknown symbol); a source longer than any of
        training is decoded with a warning on stderr, and so is an output that reached the
        length limit without ending (it is cut there)."""
        if self.source_codec is None:  # (not self.tokens)
            _checks.fail("run", "a numbers or dates run (text sources)",
                         "a caption run, whose sources are images")  # fmt: skip
        beam = _beam(beam)
        _checks.choice(unknown, "unknown", ("error", "map"))
        if not isinstance(texts, (list, tuple)):  # (a str was translated character by
            # character, each its own source; a generator failed on len())
            fail("texts", "a list of source texts (one source: [text])", _checks.describe(texts))
        where = where or [f"source {i + 1}" for i in range(len(texts))]
        if len(where) != len(texts):
            fail("where", f"one name for each of the {len(texts)} texts", f"{len(where)} names")
        known = set(self._record["source_chars"])
        longest = self._record["max_source_len"]
        for text, w in zip(texts, where, strict=True):
            if not isinstance(text, str):  # (bytes were read as their byte values, an int
                # failed on .strip(), None was "an empty source")
                fail(name, "a str", f"{_checks.describe(text)} as {w}")
            # (a byte that is not UTF-8 was the character '\udcff' the model never saw, and
            # with --unknown map written back raw into --json's output, then not UTF-8)
            _checks.unicode_text(text, name, f" of {w}")
            if not text:
                _checks.fail(name, "non-empty text", f"an empty {w}")
            if not text.strip():  # (a blank line was decoded into the model's output for
                # nothing, among the real ones, without a word)
                _checks.fail(name, "non-empty text", f"a blank {w} (white space alone)")
            new = sorted(set(text) - known)
            if new and unknown == "error":
                _checks.fail(name, "characters the model saw in training",
                             f"{', '.join(map(repr, new))} in {w}",
                             "Map them to the unknown symbol with --unknown map.")  # fmt: skip
        # One warning for every source longer than training's, after every text is checked
        # (a line each was printed as it was read: a file of 5,000 long lines wrote 5,000,
        # and a bad line after them ended their warnings with an error)
        long = [i for i, text in enumerate(texts) if len(text) > longest]
        if len(long) == 1:
            i = long[0]
            print(f"rnnlab: warning: {where[i]} has {len(texts[i])} characters, more than any "
                  f"source in training ({longest}); the output may be poor",
                  file=sys.stderr)  # fmt: skip
        elif long:
            names = ", ".join(where[i] for i in long[:3]) + (f" and {len(long) - 3} more"
                                                             if len(long) > 3 else "")  # fmt: skip
            most = max(len(texts[i]) for i in long)
            print(f"rnnlab: warning: {names} have more characters than any source in training "
                  f"({longest}; up to {most:,} here); their outputs may be poor",
                  file=sys.stderr)  # fmt: skip
        if not texts:
            return []
        # Decoded shortest first, in batches of at most DECODE_BATCH // beam sources and of
        # as many padded characters as that many sources of training's longest length: in
        # the order given, one long line padded every source of its batch to its own length
        # (a line of 5,200 characters among 249 short ones: 2.9 GB at the peak, the short
        # ones alone 0.18 GB; docs/seq2seq.md). The outputs return in the order given.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        step = max(DECODE_BATCH // beam, 1)
        budget = step * longest
        batches: list[list[int]] = [[]]
        for i in order:  # (ascending: the source added is its batch's longest)
            b = batches[-1]
            if b and (len(b) == step or (len(b) + 1) * len(texts[i]) > budget):
                batches.append(b := [])
            b.append(i)
        result, cut = [""] * len(texts), []
        for b in batches:
            x, lengths = self.source_codec.encode([texts[i] for i in b], eos=False,
                                                  unknown="map")  # fmt: skip
            decoded, ended = self._decode(model, self.prepare(x, lengths), lengths, beam)
            for i, text, done in zip(b, decoded, ended, strict=True):
                result[i] = text
                if not done:
                    cut.append(i)
        if cut:  # (such an output was printed as if whole: an untrained model's 142 letters)
            cut.sort()
            names = ", ".join(where[i] for i in cut[:3]) + (f" and {len(cut) - 3} more"
                                                             if len(cut) > 3 else "")  # fmt: skip
            one = len(cut) == 1
            print(f"rnnlab: warning: the output{'' if one else 's'} of {names} reached the "
                  f"length limit ({self.max_output_len()} symbols) without ending; "
                  f"{'it is' if one else 'they are'} cut there", file=sys.stderr)  # fmt: skip
        return result

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
        ids, _ = net.greedy(xp, src_lengths=lengths, bos=BOS, eos=EOS, max_len=max_len,
                            never=NEVER)  # fmt: skip
        f = net.forward(xp, teacher_inputs(ids), src_lengths=lengths, grad=False)
        alpha = f.cache["head"][1][0]  # (B, T, S): the softmax over the source
        out = []
        for b in range(len(lengths)):
            L = int(lengths[b])
            n_out = int(np.argmax(ids[b] == EOS)) + 1 if (ids[b] == EOS).any() else \
                ids.shape[1]  # fmt: skip
            a = alpha[b, :n_out, :L]
            if self.cfg.reverse_input:
                a = a[:, ::-1]  # read order → the source's own order
            ys = self.target_codec.pieces(ids[b : b + 1, :n_out])[0]
            ylab = ys + (["</s>"] if n_out > len(ys) else [])
            xlab = list(sources[b]) if self.tokens else x[b, :L]
            out.append((xlab, ylab, a))
        return out


# Never a target, so never an output: a decoder that ranked one first wrote a symbol the
# text then dropped unsaid (and the attention plot's labels slid off its rows).
NEVER = (PAD, BOS)


def _beam(beam, name: str = "--beam") -> int:
    """A beam width, 1 (greedy) or more, named as the caller took it (translate's and
    evaluate's option, or `beam` of the Python methods)."""
    if isinstance(beam, bool) or not isinstance(beam, (int, np.integer)) or beam < 1:
        _checks.fail(name, "a positive integer (1: greedy)", repr(beam))
    return int(beam)


def _checked_record(data) -> dict:
    """A run's data record (`Transduction._fit_record`), each field of the kind and form it
    writes: an alphabet (a string) or word list sorted and distinct, as `fit` makes them (an
    edited one would map ids to other pieces, or past its end), lengths as positive
    integers, the most frequent target as a text. Whether the alphabets fit the model is
    `runs`' to check (it has the model's description)."""
    keys = ("source_chars", "target_chars or target_words", "max_source_len", "max_target_len",
            "most_frequent_target", "test_sha256")  # fmt: skip
    targets_ok = isinstance(data, dict) and (
        isinstance(data.get("target_chars"), str)
        or (isinstance(data.get("target_words"), list)
            and all(isinstance(w, str) and w for w in data["target_words"]))
    )  # fmt: skip
    if not targets_ok or any(k not in data for k in keys if " " not in k):
        _checks.fail("config.json's 'data'", "a record of the alphabets (" + ", ".join(keys) +
                     ")", _checks.describe(data))  # fmt: skip

    def refuse(key: str, expected: str) -> NoReturn:
        _checks.fail(f"config.json's 'data' {key!r}", expected, _checks.describe(data[key]))

    source = data["source_chars"]
    if source is not None and not (isinstance(source, str) and source):
        refuse("source_chars", "the source alphabet, a non-empty string (null for caption)")
    for key in ("source_chars", "target_chars", "target_words"):
        pieces = data.get(key)
        if pieces is not None and list(pieces) != sorted(set(pieces)):
            refuse(key, "sorted and distinct pieces, as training writes them")
    for key in ("max_source_len", "max_target_len"):
        # ≥ 1: training measures them on sequences of one piece at least; a 0 cut every
        # decoded output at 10 pieces (2·0 + 10), silently
        n = data[key]
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            refuse(key, "a positive integer (the longest sequence of training)")
    if not isinstance(data["most_frequent_target"], str):
        refuse("most_frequent_target", "a text (the baseline's constant output)")
    if not isinstance(data["test_sha256"], str):
        refuse("test_sha256", "the test split's SHA-256, a string of hex digits")
    return dict(data)


def _target_codec(record: dict) -> Codec:
    """The outputs' codec of a data record: words (caption runs since 2026-12-03), else
    characters (every numbers and dates run, and earlier caption runs)."""
    if record.get("target_words") is not None:
        return WordCodec(tuple(record["target_words"]))
    return CharCodec(tuple(record["target_chars"]))


def model_spec(cfg: TrainConfig, task: Transduction) -> dict:
    """config.json's "model" for an encoder–decoder run: the training options mapped onto the
    encoder (cell, hidden, layers, bidirectional) and the decoder (cell, hidden, layers)."""
    codec = task.source_codec  # (None: not task.tokens)
    source = ({"type": "tokens", "vocab_size": codec.size} if codec is not None else
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
        "input_dropout": cfg.input_dropout,
        "source_conv": cfg.source_conv,
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
