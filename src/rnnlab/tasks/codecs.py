"""Texts ↔ ids for the encoder–decoder tasks (rnnlab.tasks.transduction): a text is cut into
pieces, characters (`CharCodec`) or words (`WordCodec`), each piece an id after four
specials (padding, begin and end of sequence, unknown). The codec is fitted on the training
side and saved with the run (config.json's "data"), so a run decodes as it was trained.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from rnnlab._checks import choice, describe, fail, token_ids

__all__ = ["BOS", "EOS", "PAD", "SPECIALS", "UNK", "CharCodec", "Codec", "WordCodec"]

PAD, BOS, EOS, UNK = 0, 1, 2, 3
SPECIALS = ("<pad>", "<s>", "</s>", "<unk>")


def _texts(texts: object) -> list[str]:
    """`texts` checked to be strings, one per text, as a list: a string alone was read as a
    list of one-character texts (encoded as that many rows, a word codec fitted to its
    letters), bytes as unknown characters named by their byte values; a generator was spent
    by `WordCodec.fit`'s check, which left it no words."""
    if isinstance(texts, (str, bytes)) or not isinstance(texts, Iterable):
        fail("texts", "a sequence of strings, one per text", describe(texts))
    out = list(texts)
    for i, text in enumerate(out):
        if not isinstance(text, str):
            fail("texts", "a sequence of strings, one per text",
                 f"{describe(text)} at index {i}")  # fmt: skip
    return out


class Codec:
    """Texts ↔ ids by their pieces (a subclass's `split` and `join`, its `tokens`), with PAD 0,
    BOS 1, EOS 2 and UNK 3 before the pieces."""

    unit = "pieces"  # the name of a piece in errors ("unknown characters [...]")

    @property
    def tokens(self) -> tuple[str, ...]:
        raise NotImplementedError

    @staticmethod
    def split(text: str) -> list[str]:
        raise NotImplementedError

    @staticmethod
    def join(pieces: Sequence[str]) -> str:
        raise NotImplementedError

    @property
    def size(self) -> int:
        return len(SPECIALS) + len(self.tokens)

    def encode(
        self, texts: Sequence[str], *, eos: bool = True, unknown: str = "error"
    ) -> tuple[np.ndarray, np.ndarray]:
        """(ids (N, L) padded with PAD, lengths (N,)); EOS closes each text if `eos`.
        `unknown`: "error" (say which pieces) or "map" (to UNK)."""
        choice(unknown, "unknown", ("error", "map"))
        texts = _texts(texts)
        index = {c: i + len(SPECIALS) for i, c in enumerate(self.tokens)}
        pieces = [self.split(t) for t in texts]
        missing = sorted({c for p in pieces for c in p} - set(index))
        if missing and unknown == "error":
            fail("texts", f"{self.unit} the codec knows", f"unknown {self.unit} {missing[:10]}")
        rows = [[index.get(c, UNK) for c in p] + ([EOS] if eos else []) for p in pieces]
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
        return [self.join(p) for p in self.pieces(ids)]

    def pieces(self, ids: np.ndarray) -> list[list[str]]:
        """Rows of ids → their pieces, each up to its first EOS (the attention plot's labels).
        `ids` is checked to be rows of ids in [0, size): an id past the end raised NumPy's
        IndexError, a negative one was dropped as a special, one row alone failed iterating
        an integer."""
        out = []
        for row in token_ids(ids, "ids", self.size, ndim=2):
            pieces = []
            for i in row:
                if i == EOS:
                    break
                if i == UNK:
                    pieces.append("\N{REPLACEMENT CHARACTER}")
                elif i >= len(SPECIALS):
                    pieces.append(self.tokens[i - len(SPECIALS)])
            out.append(pieces)
        return out


@dataclass
class CharCodec(Codec):
    """Characters ↔ ids (every source, and numbers' and dates' outputs)."""

    chars: tuple[str, ...]
    unit = "characters"

    @property
    def tokens(self) -> tuple[str, ...]:
        return self.chars

    @staticmethod
    def split(text: str) -> list[str]:
        return list(text)

    @staticmethod
    def join(pieces: Sequence[str]) -> str:
        return "".join(pieces)

    @classmethod
    def fit(cls, texts: Sequence[str]) -> CharCodec:
        texts = _texts(texts)
        return cls(tuple(sorted(set("".join(texts)))))


@dataclass
class WordCodec(Codec):
    """Words ↔ ids, for outputs made of a small set of words (caption's number words), where
    a decoder that writes a word at a time makes one decision per word instead of one per
    letter. A word carries the hyphen that follows it ("forty-two" is "forty-", "two");
    words are otherwise joined by single spaces, so a text is its words joined back (`fit`
    refuses texts that are not)."""

    words: tuple[str, ...]
    unit = "words"

    @property
    def tokens(self) -> tuple[str, ...]:
        return self.words

    @staticmethod
    def split(text: str) -> list[str]:
        return re.findall(r"[^ -]+-?|-", text)

    @staticmethod
    def join(pieces: Sequence[str]) -> str:
        return "".join(w + ("" if w.endswith("-") or i == len(pieces) - 1 else " ")
                       for i, w in enumerate(pieces))  # fmt: skip

    @classmethod
    def fit(cls, texts: Sequence[str]) -> WordCodec:
        texts = _texts(texts)
        for t in texts:
            if cls.join(cls.split(t)) != t:
                fail("texts", "words joined by single spaces or after a hyphen", repr(t))
        return cls(tuple(sorted({w for t in texts for w in cls.split(t)})))
