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
the value, so no test item (in any of its spellings) is ever trained on. Strings become ids
through a `CharCodec` built from the training side. `scores` gives exact match, the
character error rate (`editdistance`) and BLEU and chrF (`sacrebleu`).
"""

from __future__ import annotations

import datetime
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from rnnlab._checks import choice, fail
from rnnlab.tasks.digits import MissingDependencyError

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


def numbers(split: str, n: int, seed: int = 0) -> list[tuple[str, str]]:
    """n (English, German) pairs of number words of the split, values uniform on
    0 – 999,999 (drawn with `seed`)."""
    words = _num2words()
    rng = np.random.default_rng([seed, SPLITS.index(choice(split, "split", SPLITS))])
    return [(words(v, lang="en"), words(v, lang="de")) for v in
            _values(split, n, "numbers", MAX_NUMBER, rng)]  # fmt: skip


def dates(split: str, n: int, seed: int = 0) -> list[tuple[str, str]]:
    """n (written date, ISO 8601) pairs of the split: days uniform on 1900 – 2099, each in a
    style drawn from DATE_STYLES."""
    fmt = _format_date()
    rng = np.random.default_rng([seed, SPLITS.index(choice(split, "split", SPLITS)), 1])
    days = (LAST_DAY - FIRST_DAY).days
    out = []
    for k in _values(split, n, "dates", days, rng):
        day = FIRST_DAY + datetime.timedelta(days=k)
        locale, style = DATE_STYLES[int(rng.integers(len(DATE_STYLES)))]
        out.append((fmt(day, style, locale=locale), day.isoformat()))
    return out


PAD, BOS, EOS, UNK = 0, 1, 2, 3
SPECIALS = ("<pad>", "<s>", "</s>", "<unk>")


@dataclass
class CharCodec:
    """Characters ↔ ids, with PAD 0, BOS 1, EOS 2 and UNK 3 before the characters."""

    chars: tuple[str, ...]

    @classmethod
    def fit(cls, texts: Sequence[str]) -> CharCodec:
        return cls(tuple(sorted(set("".join(texts)))))

    @property
    def size(self) -> int:
        return len(SPECIALS) + len(self.chars)

    def encode(self, texts: Sequence[str], *, eos: bool = True, unknown: str = "error"):
        """(ids (N, L) padded with PAD, lengths (N,)); EOS closes each text if `eos`.
        `unknown`: "error" (say which characters) or "map" (to UNK)."""
        choice(unknown, "unknown", ("error", "map"))
        index = {c: i + len(SPECIALS) for i, c in enumerate(self.chars)}
        missing = sorted({c for t in texts for c in t} - set(index))
        if missing and unknown == "error":
            fail("texts", "characters the codec knows", f"unknown characters {missing[:10]}")
        rows = [[index.get(c, UNK) for c in t] + ([EOS] if eos else []) for t in texts]
        lengths = np.array([len(r) for r in rows], dtype=np.int64)
        if len(rows) and lengths.min() == 0:
            fail("texts", "non-empty texts (or eos=True)", "an empty text")
        ids = np.full((len(rows), max(lengths, default=0)), PAD, dtype=np.int64)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = r
        return ids, lengths

    def decode(self, ids: np.ndarray) -> list[str]:
        """Rows of ids → texts, each up to its first EOS (specials other than UNK dropped,
        UNK as '�')."""
        out = []
        for row in np.asarray(ids):
            text = []
            for i in row:
                if i == EOS:
                    break
                if i == UNK:
                    text.append("\N{REPLACEMENT CHARACTER}")
                elif i >= len(SPECIALS):
                    text.append(self.chars[i - len(SPECIALS)])
            out.append("".join(text))
        return out


def teacher_inputs(targets: np.ndarray) -> np.ndarray:
    """The decoder's input under teacher forcing: BOS, then the targets shifted right."""
    return np.concatenate([np.full((targets.shape[0], 1), BOS), targets[:, :-1]], axis=1)


def caption(split: str, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """n images of 1–3 digit numbers (uniform number of digits, then uniform digits; no
    leading zero) as column sequences: (x (n, 8·d_max, 8) float32, lengths (n,) = 8·digits,
    English words). Train and valid take scikit-learn's training images, test its test
    images (rnnlab.tasks.digits's stratified split), so a test image is never seen."""
    from rnnlab.tasks.digits import load_digits_sequences

    words = _num2words()
    choice(split, "split", SPLITS)
    x_tr, y_tr, x_te, y_te = load_digits_sequences("rows", seed=0)
    images, labels = (x_te, y_te) if split == "test" else (x_tr, y_tr)
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
        texts.append(words(int("".join(map(str, digits))), lang="en"))
    return x, lengths, texts


def scores(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """exact_match and cer (character error rate: edit distance over the references'
    length, `editdistance`), and corpus bleu and chrf (`sacrebleu`, its defaults)."""
    if len(hypotheses) != len(references) or not references:
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
