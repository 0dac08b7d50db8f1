"""charlm's data as a user's own text meets it (review 128): the memory a corpus takes while
it is read and encoded, a vocabulary too large for a training step or an evaluation chunk,
a text too short for the batches, characters a run's vocabulary lacks in a score, and the
layout's promises (training windows never reach the held-out text, the carried state is
dropped where an epoch wraps, each held-out character is scored once)."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from rnnlab import tasks
from rnnlab.layers import Forward
from rnnlab.tasks import text
from rnnlab.train import TrainConfig


def _peak(fn):
    """(fn(), the bytes Python and NumPy allocated at the peak of the call)."""
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        out = fn()
        return out, tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


def _charlm(path, **settings) -> text.CharLM:
    cfg = TrainConfig.from_dict({**tasks.defaults("charlm"), "data": str(path), **settings})
    task = tasks.make_task(cfg)
    assert isinstance(task, text.CharLM)
    return task


class _Recorder:
    """A model that predicts every symbol alike and records what evaluate feeds it."""

    def __init__(self, size: int):
        self.size, self.calls = size, []

    def forward(self, x, state=None, **_):
        self.calls.append((x.copy(), state))
        return Forward(np.zeros((*x.shape, self.size)), ("state", len(self.calls)))


# ------------------------------------------------------------------ memory


def test_decoding_normalises_on_the_bytes_not_on_copies_of_a_wide_text():
    """A str of ASCII and one emoji takes 4 bytes a character; the BOM and the CRLF and CR
    line ends were dropped from it by three str steps, each a whole copy (11 bytes a byte
    of the file at the peak). On the bytes they cost one byte a byte; the text is the same,
    and a refusal still names the file's own byte offset."""
    data = b"\xef\xbb\xbf" + "\U0001f600".encode() + b"ab\r\n" * 1_000_000 + b"\rend"
    got, peak = _peak(lambda: text.decode_text(data, Path("wide.txt")))
    want = data.decode("utf-8").removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    assert got == want
    assert peak < 7 * len(data), peak / len(data)
    bad = b"a\r\n" * 10 + b"\xff" + b"b" * 2000
    with pytest.raises(text.TextFileError, match=r"whose byte 30 \(0xff\) is not UTF-8"):
        text.decode_text(bad, Path("bad.txt"))


def test_the_vocabulary_and_its_ids_are_made_a_piece_at_a_time(monkeypatch):
    """CharVocab's passes took the code points, their sorted copy, the int64 lookups and
    their int32 copy of the whole text at once: 264 MB for the 32 MB of ids of 8 million
    characters, 34 bytes a byte of a 200 MB corpus in all. A piece at a time the ids are
    most of it; pieces end anywhere, astral characters and unknown ones included."""
    monkeypatch.setattr(text, "_CHUNK", 1 << 16)
    body = "abcdefgh" * 1_000_000
    vocab, peak = _peak(lambda: text.CharVocab(body))
    assert vocab.chars == "abcdefgh" and peak < 2 << 20, peak
    ids, peak = _peak(lambda: vocab.encode(body))
    assert peak < 1.25 * ids.nbytes, peak / ids.nbytes
    np.testing.assert_array_equal(ids[:10], [0, 1, 2, 3, 4, 5, 6, 7, 0, 1])

    monkeypatch.setattr(text, "_CHUNK", 7)
    train = "x\U0001f600y e\u0301 z\U0001d518\n" * 5
    vocab = text.CharVocab(train)
    assert vocab.chars == "".join(sorted(set(train)))
    other = train + "Q\U0001f601"
    want = [vocab.chars.index(c) if c in vocab.chars else vocab.unknown for c in other]
    np.testing.assert_array_equal(vocab.encode(other), want)
    assert vocab.decode(vocab.encode(other)) == train + "\ufffd\ufffd"


def test_a_lone_surrogate_is_refused_where_it_is():
    """A Python str may hold one (no UTF-8 file does): the vocabulary said "'utf-32-le'
    codec can't encode character '\\ud800' in position 2: surrogates not allowed"."""
    with pytest.raises(ValueError, match=r"^`text` must be valid Unicode text; got the lone "
                       r"surrogate U\+D800 at character 2 instead\.$"):  # fmt: skip
        text.CharVocab("ab\ud800")
    with pytest.raises(ValueError, match=r"the lone surrogate U\+DC80 at character 3 instead"):
        text.CharVocab("abc").encode("abc\udc80")


def test_a_corpus_is_held_once_beside_its_ids(monkeypatch):
    """The task kept the whole text beside its three pieces while their ids were made, and
    made each with whole-text temporaries: 9.4 times the text's str at the peak (a text of
    ASCII and one emoji, 4 bytes a character). Now its pieces and their ids: 2.1."""
    monkeypatch.setattr(text, "_CHUNK", 1 << 16)
    monkeypatch.setattr(text, "read_text", lambda path: "\U0001f600" + "abcdefgh\n" * 450_000)
    cfg = TrainConfig.from_dict({**tasks.defaults("charlm"), "data": "wide.txt",
                                 "batch_size": 4, "seq_len": 10})  # fmt: skip
    task, peak = _peak(lambda: text.CharLM(cfg))
    wide = 4 * task.chars  # the bytes of the text's str
    assert sum(a.nbytes for a in task.ids.values()) == wide
    assert peak < 2.5 * wide, peak / wide

