"""Text for character language models: a corpus that ships with every Python, reading a user's
UTF-8 file with clear errors, a character vocabulary, contiguous train/valid/test pieces, and
the two classic ways to cut a stream of ids into (inputs, targets) with targets shifted by one:
independent windows, and the stateful layout of Zaremba, Sutskever & Vinyals (2014,
"Recurrent neural network regularization", and its PTB code) where the stream is cut into
`batch_size` parallel contiguous tracks read `bptt` steps at a time, so the hidden state of one
block is the right initial state for the next. The default corpus is CPython's own reference
documentation, `pydoc_data.topics.topics` (the text `help("if")` prints): about 465,000
characters of English prose with code examples, available offline in every installation.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from rnnlab import _checks
from rnnlab._checks import describe, fail, positive_int, probability
from rnnlab.layers import RngLike
from rnnlab.losses import softmax_cross_entropy
from rnnlab.train import Batch, TrainConfig

# A file shorter than this cannot give three useful pieces (5 % of 1000 is 50 characters).
MIN_CHARS = 1000
# and one larger than this is not read: its ids alone would take 4 bytes a character.
MAX_BYTES = 1 << 30
# Peak memory of a charlm task over its file's size, for the text of widest characters a
# byte (ASCII and one emoji: a str of 4 bytes a character): its text and pieces, then the
# pieces and their int32 ids. Measured on 200 MB files (bench/charlm_memory.py, bench/
# README.md "charlm's memory"): 8.0 bytes a byte for that text with a BOM and CRLF line
# ends, 6.4 for prose with a few characters past U+00FF. The vocabulary and its lookup go a
# million characters at a time (`_CHUNK`): in one pass they took 34 to 37 bytes a byte.
PEAK_PER_BYTE = 9

# What `decode` prints for the unknown id: U+FFFD REPLACEMENT CHARACTER, Unicode's own
# symbol for "a character that could not be represented".
UNKNOWN_CHAR = "\ufffd"


class TextFileError(ValueError):
    """A text file cannot be used as a corpus (missing, a directory, empty, not UTF-8, short)."""


class TextTooShortError(TextFileError):
    """A text of fewer than MIN_CHARS characters (`chars` of them): a new charlm run says the
    length its batches need instead, where that is more."""

    def __init__(self, message: str, chars: int):
        super().__init__(message)
        self.chars = chars


def _raise(name: str, expected: str, got: str, hint: str = "") -> NoReturn:
    """`_checks.fail` with our own exception class: the same message shape."""
    message = f"`{name}` must be {expected}; got {got} instead."
    raise TextFileError(message + (" " + hint if hint else ""))


def default_corpus() -> str:
    """CPython's pydoc topics (`help()` pages), joined in sorted-key order with blank lines.

    About 465k characters and ~100 distinct symbols on CPython 3.11; the exact text follows
    the installed Python version, so figures measured on it are per-version.
    """
    from pydoc_data.topics import topics

    return "\n\n".join(topics[key] for key in sorted(topics))


# The byte-order marks of UTF-32 and UTF-16 (UTF-32's first: FF FE 00 00 begins with FF FE).
_BYTE_ORDER_MARKS = ((b"\xff\xfe\x00\x00", "utf-32"), (b"\x00\x00\xfe\xff", "utf-32"),
                     (b"\xff\xfe", "utf-16"), (b"\xfe\xff", "utf-16"))  # fmt: skip


def _reads_as(data: bytes, bom: bytes, encoding: str) -> bool:
    """Whether bytes that begin with `bom` are text in `encoding` beyond doubt: they decode,
    and their first KiBs hold a NUL byte, which a UTF-16 or UTF-32 text of any Latin script
    has (its ASCII characters' other byte) and a latin1 or UTF-8 one never. (A UTF-16 text
    of CJK characters alone holds none: it is then said as possibly either.)"""
    if b"\x00" not in data[len(bom) : 4096]:
        return False
    try:
        data.decode(encoding)
    except UnicodeDecodeError:
        return False
    return True


def _wide_without_mark(data: bytes) -> str | None:
    """The codec of a UTF-16 or UTF-32 text without a byte-order mark ("utf-16le", ...), or
    None: its first 64 KiB are a quarter NUL bytes at least, as such a text of any Latin
    script is (its ASCII characters' other bytes), where they fall says the width and byte
    order, and the whole decodes so. A UTF-8 text of ASCII decodes too, NULs and all, and
    trained with a NUL between its characters; a latin1 or UTF-8 text holds no NUL.
    UTF-32 by its lanes, not its share of NULs: its top byte is always NUL and the next at
    most 0x10 (no code point is past U+10FFFF), where a UTF-16 text of Latin letters has one
    in every other of those bytes. A UTF-32 text of Greek, Cyrillic or CJK is half NUL, as
    UTF-16 of ASCII is, and was named UTF-16BE with an iconv that garbles it. No bytes are
    no wide text: an empty file passed every test below, and translate's empty --file was
    said to be "UTF-32LE without a byte-order mark (0 of its first 0 bytes are NUL)"."""
    head = data[: 1 << 16]
    if not head or head.count(0) * 4 < len(head):
        return None
    lanes = {"utf-32le": (3, 2), "utf-32be": (0, 1)}  # (top byte's, next byte's)
    wide = [c for c, (top, nxt) in lanes.items()
            if not any(head[top::4]) and max(head[nxt::4], default=0) <= 0x10]  # fmt: skip
    if wide:
        codec = wide[0]
    else:
        codec = "utf-16le" if head[0::2].count(0) * 2 < len(head[0::2]) else "utf-16be"
    try:
        data.decode(codec)
    except UnicodeDecodeError:
        return None
    return codec


def read_text(path: str | os.PathLike[str]) -> str:
    """Read a UTF-8 corpus file, with an error naming the path for every way it can fail.

    A leading byte-order mark is dropped and Windows (CRLF) and old Mac (CR) line ends become
    "\\n", as Python's text mode does, so the same text gives the same vocabulary anywhere.
    Refused (TextFileError, a ValueError): a missing or unreadable path, a directory, an empty
    file, bytes that are not UTF-8 (the message gives the byte offset), fewer than 1000
    characters (too short to split into train/valid/test).
    """
    if not isinstance(path, (str, os.PathLike)):
        fail("path", "a path (str or pathlib.Path)", describe(path))
    p = Path(path)
    expected = "a readable UTF-8 text file"
    if p.is_dir():
        _raise("path", expected, f"'{p}', which is a directory")
    try:
        with _checks.open_file(p) as f:  # (a FIFO or /dev/zero: refused, never waited on)
            size = os.fstat(f.fileno()).st_size
            if size > MAX_BYTES:
                _raise("path", f"{expected} of at most {MAX_BYTES:,} bytes",
                       f"'{p}', which has {size:,}")  # fmt: skip
            have = _checks.available_memory() if size > 1 << 22 else None
            if have is not None and PEAK_PER_BYTE * size > have:  # (the OOM killer says none)
                _raise("path", f"{expected} that fits in the memory available "
                       f"({_checks.describe_bytes(have)}; reading it takes about "
                       f"{PEAK_PER_BYTE} bytes a byte of text)",
                       f"'{p}', of {size:,} bytes (about "
                       f"{_checks.describe_bytes(PEAK_PER_BYTE * size)})")  # fmt: skip
            data = f.read(MAX_BYTES + 1)
    except _checks.NotRegularFile as e:
        _raise("path", expected, f"'{p}', which is not a regular file ({e.kind})")
    except IsADirectoryError:
        _raise("path", expected, f"'{p}', which is a directory")
    except FileNotFoundError:
        _raise("path", expected, f"'{p}', which does not exist")
    except OSError as e:
        _raise("path", expected, f"'{p}', which cannot be read ({e.strerror or e})")
    if len(data) > MAX_BYTES:
        _raise("path", f"{expected} of at most {MAX_BYTES:,} bytes", f"'{p}', which grew past it")
    if not data:
        _raise("path", expected, f"'{p}', which is empty")
    text = decode_text(data, p)
    if len(text) < MIN_CHARS:
        raise TextTooShortError(
            f"`path` must be a text of at least {MIN_CHARS} characters (to split into "
            f"train/valid/test); got '{p}' with {_count(len(text), 'character')} instead.",
            len(text),
        )
    return text


def _count(n: int, noun: str) -> str:
    """`n` of `noun` as said to a user: "1 character", "1,000 characters"."""
    return f"{n:,} {noun}" + ("" if n == 1 else "s")


def decode_text(data: bytes, p: Path, name: str = "path") -> str:
    """The text of a file's bytes (`p`, named as `name` in errors: `path`, or translate's
    `--file`), as `read_text` reads a corpus: UTF-8, its byte-order mark dropped and CRLF and
    CR line ends as "\\n". Refused (TextFileError) with what they are: UTF-16 and UTF-32 with
    or without a byte-order mark (UTF-8 takes a BOM-less one's NUL bytes as characters, so
    it read as text with a NUL between its letters), and bytes that are not UTF-8."""
    expected = "a readable UTF-8 text file"
    marked = data.startswith(tuple(bom for bom, _ in _BYTE_ORDER_MARKS))
    wide = None if marked else _wide_without_mark(data)
    if wide is not None:
        head = data[: 1 << 16]
        _raise(name, expected,
               f"'{p}', which reads as {wide.upper()} without a byte-order mark "
               f"({head.count(0):,} of its first {len(head):,} bytes are NUL)",
               f"Convert it first, e.g. `iconv -f {wide} -t utf-8`.")  # fmt: skip
    # The mark and the line ends go on the bytes, before they are decoded: a str of ASCII
    # and one emoji takes 4 bytes a character, and each of three str steps copied it whole
    # (such a file with a BOM, CRLF and a lone CR: 11 bytes a byte at the peak, now 4.5).
    # CR and LF are bytes of no longer UTF-8 sequence, so bytes and text agree on both, and
    # the bytes are UTF-8 exactly when the file's are; a refusal names the file's own offset.
    body = data.removeprefix(b"\xef\xbb\xbf").replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        pass
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as e:
        # (latin1 would turn UTF-16 or UTF-32 into text with NULs between the characters)
        for bom, encoding in _BYTE_ORDER_MARKS:
            if not data.startswith(bom):
                continue
            codec, mark = encoding.upper(), bom.hex(" ").upper()
            if _reads_as(data, bom, encoding):
                _raise(name, expected,
                       f"'{p}', which is {codec} (it starts with the byte-order mark {mark})",
                       f"Convert it first, e.g. `iconv -f {encoding} -t utf-8`.")  # fmt: skip
            # a latin1 text may begin with ÿþ (FF FE) too: both ways out are said
            _raise(name, expected,
                   f"'{p}', whose byte {e.start} ({data[e.start]:#04x}) is not UTF-8 and which "
                   f"starts with {mark}, {codec}'s byte-order mark",
                   f"Convert it first: `iconv -f {encoding} -t utf-8` if it is {codec}, "
                   "`iconv -f latin1 -t utf-8` if it is latin1.")  # fmt: skip
        _raise(
            name,
            expected,
            f"'{p}', whose byte {e.start} ({data[e.start]:#04x}) is not UTF-8",
            "Convert it first, e.g. `iconv -f latin1 -t utf-8`."
            if _single_byte_codec(data, e.start) == "latin1"
            else "Convert it first, e.g. `iconv -f cp1252 -t utf-8` (Windows-1252: it holds "
            "bytes from 0x80 to 0x9F, that code page's quotes and dashes, which latin1 reads "
            "as control characters).",
        )
    raise AssertionError("bytes that are UTF-8 but not once CR and the BOM are dropped")


def _single_byte_codec(data: bytes, bad: int) -> str:
    """The iconv name to advise for bytes that are not UTF-8 from their first byte past ASCII
    (`bad`): "cp1252" where they hold a byte from 0x80 to 0x9F and none that Windows-1252
    leaves undefined, else "latin1". Those bytes are Windows-1252's curly quotes, dashes and
    euro sign, and control characters in latin1: a Windows text sent to latin1's iconv
    trained with U+0093 for its quotes, no error said. A text that is UTF-8 before `bad`
    (one damaged byte) or of another code page gets latin1's, an example as before."""
    first_high = re.search(rb"[\x80-\xff]", data)
    if first_high is None or first_high.start() != bad:
        return "latin1"
    if re.search(rb"[\x80-\x9f]", data) and not re.search(rb"[\x81\x8d\x8f\x90\x9d]", data):
        return "cp1252"
    return "latin1"


# Characters `CharVocab` looks at in one pass: its arrays for them (the code points' 4 bytes
# a character, the lookup's int64 8 and a few more) stay under 40 MiB whatever the text's
# length. In one pass over the whole, the task of a 200 MB corpus peaked at 6.8 GB.
_CHUNK = 1 << 20


def _code_points(text: str, start: int = 0, name: str = "text") -> np.ndarray:
    """The Unicode code points of `text` as uint32, without a Python loop over characters.
    A lone surrogate, which no UTF-8 file gives but a Python str may hold, is refused naming
    `name` and where it is (`start`: the offset of this piece in the whole)."""
    try:
        data = text.encode("utf-32-le")
    except UnicodeEncodeError as e:
        fail(
            name,
            "valid Unicode text",
            f"the lone surrogate U+{ord(text[e.start]):04X} at character {start + e.start}",
        )
    return np.frombuffer(data, dtype="<u4")


def _pieces(text: str) -> Iterator[tuple[int, str]]:
    """(offset, text[offset : offset + _CHUNK]) over `text`, in order."""
    for i in range(0, len(text), _CHUNK):
        yield i, text[i : i + _CHUNK]


class CharVocab:
    """Characters ↔ ids: the sorted distinct characters of the training text get ids 0..n-1,
    and id n (`unknown`) stands for every character never seen in training, so validation
    and test text always encode. `size` = n + 1 is the number of model outputs.

        vocab = CharVocab(train)
        ids = vocab.encode("hello")        # int32 array
        vocab.decode(ids) == "hello"       # if every character occurred in `train`
    """

    def __init__(self, text: str):
        if not isinstance(text, str) or not text:
            fail("text", "a non-empty str (the training text)", describe(text))
        # sorted: id = position
        self._codes = np.unique(
            np.concatenate([np.unique(_code_points(piece, i)) for i, piece in _pieces(text)])
        )
        self.chars: str = "".join(map(chr, self._codes.tolist()))
        self.unknown: int = len(self.chars)
        # decode's table: one code point per id, the unknown id printing as U+FFFD
        self._table = np.append(self._codes, np.uint32(ord(UNKNOWN_CHAR))).astype("<u4")

    @property
    def size(self) -> int:
        """Number of ids, the unknown id included."""
        return self.unknown + 1

    def __len__(self) -> int:
        return self.size

    def __repr__(self) -> str:
        return f"CharVocab(size={self.size})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CharVocab) and other.chars == self.chars

    __hash__ = None  # type: ignore[assignment]

    def encode(self, text: str) -> np.ndarray:
        """Ids of the characters of `text` (int32, one per character; unseen → `unknown`)."""
        if not isinstance(text, str):
            fail("text", "a str", describe(text))
        ids = np.empty(len(text), dtype=np.int32)
        for i, piece in _pieces(text):
            points = _code_points(piece, i)
            idx = np.searchsorted(self._codes, points)
            idx_safe = np.minimum(idx, len(self._codes) - 1)
            known = self._codes[idx_safe] == points
            ids[i : i + len(points)] = np.where(known, idx, self.unknown)
        return ids

    def decode(self, ids: object) -> str:
        """The text of a 1-D sequence of ids; the unknown id decodes as U+FFFD."""
        ids = _checks.id_sequence(ids, "ids", "a 1-D array (or list) of integer ids")
        bad = (ids < 0) | (ids >= self.size)
        if bad.any():
            fail("ids", f"ids in [0, {self.size})", f"the id {int(ids[bad][0])}")
        return self._table[ids].tobytes().decode("utf-32-le")

    def to_json(self) -> str:
        """A JSON text that `CharVocab.from_json` turns back into an equal vocabulary."""
        return json.dumps({"type": "CharVocab", "chars": self.chars}, ensure_ascii=False)

    @classmethod
    def from_json(cls, data: str | Mapping[str, object]) -> CharVocab:
        """Rebuild from `to_json()`'s text (or the dict it parses to)."""
        if isinstance(data, str):
            try:
                data = json.loads(data)
            except json.JSONDecodeError as e:
                fail("data", "the JSON text of CharVocab.to_json()", f"invalid JSON ({e.msg})")
        if (
            not isinstance(data, Mapping)
            or data.get("type") != "CharVocab"
            or not isinstance(data.get("chars"), str)
            or not data["chars"]
        ):
            fail(
                "data",
                'a CharVocab JSON object {"type": "CharVocab", "chars": ...}',
                describe(data),
            )
        chars = data["chars"]
        assert isinstance(chars, str)
        if list(chars) != sorted(set(chars)):
            fail(
                "data",
                "a CharVocab whose characters are sorted and distinct",
                f"chars={chars[:40]!r}",
            )
        return cls(chars)


def split_text(
    text: str, valid_fraction: float = 0.05, test_fraction: float = 0.05
) -> tuple[str, str, str]:
    """Contiguous pieces (train, valid, test) = text[:a], text[a:b], text[b:], in this order.

    Contiguous rather than shuffled lines, so held-out text is genuinely unseen prose and not
    the next sentence of a training paragraph. A non-zero fraction gives at least one
    character; valid_fraction + test_fraction must leave a training piece.
    """
    if not isinstance(text, str):
        fail("text", "a str", describe(text))
    vf = probability(valid_fraction, "valid_fraction")
    tf = probability(test_fraction, "test_fraction")
    if vf + tf >= 1.0:
        fail(
            "valid_fraction + test_fraction",
            "less than 1 (to leave a training piece)",
            f"{vf} + {tf}",
        )
    n = len(text)
    a, n_valid = _piece_sizes(n, vf, tf)
    if a < 1:
        fail("text", "long enough to leave a training piece", f"{n} characters")
    return text[:a], text[a : a + n_valid], text[a + n_valid :]


def _piece_sizes(n: int, vf: float = 0.05, tf: float = 0.05) -> tuple[int, int]:
    """(train, valid) characters of `split_text`'s pieces of a text of n characters."""
    n_valid = max(1, round(n * vf)) if vf > 0 else 0
    n_test = max(1, round(n * tf)) if tf > 0 else 0
    return n - n_valid - n_test, n_valid


def text_for_training_piece(chars: int) -> int:
    """The fewest characters of a text whose training piece (`split_text`, 90 %) holds
    `chars`: the rounding of the 5 % pieces makes chars / 0.9 a few short at times (a text
    of the length said was refused again)."""
    n = max(1, math.floor((chars - 1) / 0.9))  # (≤ the answer: a piece is ≤ 0.9 n + 1)
    while _piece_sizes(n)[0] < chars:
        n += 1
    return n


def windows(ids: object, length: int, stride: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Windows x[i] = ids[s_i : s_i + length], y[i] = ids[s_i + 1 : s_i + length + 1].

    s_i = i · stride (default stride = length: non-overlapping windows), for every window
    whose target fits, so the last ids may go unused. Returns two (num_windows, length)
    arrays of the ids' dtype; each window is an independent sequence (no carried state).
    """
    ids = _checks.id_sequence(ids, "ids")
    L = positive_int(length, "length")
    S = L if stride is None else positive_int(stride, "stride")
    if len(ids) < L + 1:
        fail("ids", f"at least length + 1 = {L + 1} ids", f"{len(ids)}")
    count = (len(ids) - L - 1) // S + 1
    starts = np.arange(count) * S
    offsets = starts[:, None] + np.arange(L)[None, :]
    return ids[offsets], ids[offsets + 1]


def stream_batches(
    ids: object, batch_size: int, bptt: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The stateful LM layout: (x, y) blocks of shape (batch_size, bptt), in reading order.

    The stream is cut into B = batch_size contiguous tracks of K = ⌊(N − 1) / B⌋ ids each,
    track b holding ids[b·K : (b+1)·K] and its targets ids[b·K + 1 : (b+1)·K + 1]. Block w
    is columns [w·bptt, (w+1)·bptt) of every track, so row b of block w+1 continues row b of
    block w exactly: carry the final hidden state from one block to the next. Only whole
    blocks are yielded (⌊K / bptt⌋ of them); the last K mod bptt columns are dropped.
    """
    ids = _checks.id_sequence(ids, "ids")
    B = positive_int(batch_size, "batch_size")
    k = positive_int(bptt, "bptt")
    K = (len(ids) - 1) // B
    if K < k:
        fail("ids", f"at least batch_size · bptt + 1 = {B * k + 1} ids (one block)", f"{len(ids)}")
    xs = ids[: B * K].reshape(B, K)
    ys = ids[1 : B * K + 1].reshape(B, K)
    for w in range(K // k):
        cols = slice(w * k, (w + 1) * k)
        yield xs[:, cols], ys[:, cols]


# -------------------- the task, as the Trainer drives it (rnnlab.train.Task)


def _stored_vocab(data: object) -> CharVocab | None:
    """The CharVocab a run stored, or None for a run from before runs stored it."""
    if not data:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("vocab"), str):
        _checks.fail("config.json's 'data'", "a record with the vocabulary ('vocab': a string)",
                     _checks.describe(data))  # fmt: skip
    return CharVocab.from_json({"type": "CharVocab", "chars": data["vocab"]})


# The n-gram baselines beside a charlm score: orders 1 to this,
MAX_BASELINE_ORDER = 5


def baseline_order(vocab_size: int) -> int:
    """The highest baseline order a vocabulary allows, at most MAX_BASELINE_ORDER: an n-gram
    is coded as an int64 (rnnlab.tasks.ngram), so vocab_size ** order stays below 2 ** 63.
    Five for up to 6,208 symbols, four for up to 55,108, three for any Unicode text."""
    from rnnlab.tasks import ngram

    return max(k for k in range(1, MAX_BASELINE_ORDER + 1) if vocab_size**k < ngram._INT64_LIMIT)


EVAL_TRACKS = 8
"""`CharLM.evaluate` reads a split as 8 tracks side by side, each from a zero state."""

# Bytes an output (a logit of one symbol at one step of one track) takes at the peak of a
# training step: the float32 logits, their gradient and a little more, 8.4 between 20,000
# and 60,000 symbols (bench/charlm_memory.py, bench/README.md "charlm's memory"). A text of
# every code point once (1,000,829 symbols in its training piece) made 32 x 100 x 1,000,829
# outputs a step, about 30 GiB, and was killed by the out-of-memory killer.
STEP_BYTES_PER_OUTPUT = 10
# `evaluate` reads 8 tracks `_eval_steps` steps at a time, its outputs (13 to 15 bytes each,
# measured; 16 budgeted) under this: 256 steps for up to 8,192 symbols, fewer past it (2
# for a million symbols, whose 256 would take about 25 GiB).
EVAL_CHUNK_BYTES = 256 << 20


class CharLM:
    """Character language model with a stateful stream of windows (classic truncated BPTT)."""

    name = "charlm"
    metric = "nats_per_char"
    higher_is_better = False
    readout = "steps"

    def __init__(self, cfg: TrainConfig, data: dict | None = None, *, text: bool = True,
                 resume: bool = False):  # fmt: skip
        """`data`: a trained run's record (data_record): its vocabulary is used, whatever the
        text holds now, and its corpus is read from the absolute path it stored; a text that
        changed since is said on stderr. `text=False`: the vocabulary only (for sampling).
        `resume`: the run is to train on, which a text that changed since is refused for (it
        would train on other text than the run's checkpoint promises, and the run's record
        would take the new text's hash, so no later command could say it)."""
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
        if stored is not None and data is not None and not text:  # (stored: data is not None)
            self.vocab, self.output_size, self._record = stored, stored.size, dict(data)
            return
        path = cfg.data
        stored_path = data.get("path") if data else None
        if stored_path and Path(stored_path).is_file():
            path = stored_path  # absolute, so the run works from any directory
        elif stored_path and not (path and Path(path).is_file()):
            raise ValueError(
                f"the run's training text '{stored_path}' (config.json's \"data\") is not there "
                "any more; put it back to train or evaluate the run on it, or score other text "
                "with the run's vocabulary: rnnlab evaluate RUN --data FILE"
            )
        self.source = path or "the pydoc topics of CPython"
        self.window = cfg.bptt or cfg.seq_len
        try:
            raw = read_text(path) if path else default_corpus()
        except ValueError as e:
            # a new run's batches may need more than the split's 1000: said at once, not
            # after the text was made 1000 long ("at least 3,593 characters in all" then)
            if isinstance(e, TextTooShortError) and data is None:
                if self._training_needs() > MIN_CHARS:
                    raise self._too_short(e.chars) from None
            if path and path == stored_path:  # (evaluate RUN, train --resume: no --data typed)
                raise ValueError(
                    f"the run's training text (config.json's \"data\") no longer reads as it "
                    f"did: {e} Put it back as it was to train or evaluate the run on it, or "
                    "score other text with the run's vocabulary: rnnlab evaluate RUN --data FILE"
                ) from None
            raise ValueError(f"--data: {e}") from None
        digest = hashlib.sha256(raw.encode("utf-8")).hexdigest()
        self.chars = len(raw)
        train, valid, test = split_text(raw)
        del raw  # (its pieces hold its text: not twice beside the ids)
        self.vocab = stored or CharVocab(train)
        recorded = data.get("corpus_sha256") if data else None
        if recorded is not None and recorded != digest and resume:
            what, back = ((f"'{path}'", "put the run's text back") if path else
                          (self.source, "resume it under the Python it was trained with"))
            raise ValueError(
                f"`--resume` must train on the text the run was trained on; {what} has changed "
                f"since (its SHA-256 is now {digest[:12]}..., the run's config.json records "
                f"{str(recorded)[:12]}...): {back}, or start a new run on this text"
            )
        if recorded is not None and recorded != digest:
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
        self._tracks: tuple[np.ndarray, np.ndarray, int] | None = None  # (training's, made at
        # its first batch: scoring other text with `evaluate --data` needs no tracks)
        self._baselines: dict = {}
        self._baselines_fit_checked = False
        self.output_size = self.vocab.size
        self.max_order = baseline_order(self.vocab.size)
        if resume:  # (the baselines come at the end of the training it resumes)
            self._baselines_fit()

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
        ) + (f"; n-gram baselines up to order {self.max_order} (the vocabulary is too large "
             "for more)" if self.max_order < MAX_BASELINE_ORDER else "")  # fmt: skip

    def check_new_run(self) -> list[str]:
        """A new run's text holds its batches, a training step's outputs (one a symbol, a
        character and a track) and its n-gram baselines, counted at the end of training, fit
        in the memory available (all said before the run directory is made)."""
        self._training_tracks()
        self._step_fits()
        self._baselines_fit()
        return []

    def _step_fits(self) -> None:
        """A training step's outputs, `batch_size` x the window x the vocabulary's symbols,
        take about STEP_BYTES_PER_OUTPUT bytes each: a text of many distinct characters
        (the settings' weights are checked as they are made, the step's outputs were not)
        was killed by the out-of-memory killer at its first step."""
        B, V = self.cfg.batch_size, self.vocab.size
        need = STEP_BYTES_PER_OUTPUT * B * self.window * V
        if need < 1 << 28:  # (not worth a look at /proc/meminfo, as _checks.affordable)
            return
        have = _checks.available_memory()
        if have is None or need <= have:
            return
        window = "`bptt`" if self.cfg.bptt else "`seq_len`"
        raise ValueError(
            f"`data` must be a text whose training steps fit in the memory available "
            f"({_checks.describe_bytes(have)}); got {self.source!r}, of {V:,} symbols: a "
            f"step of {B} tracks (`batch_size`) of {self.window} characters ({window}) "
            f"makes {B * self.window * V:,} outputs, about {_checks.describe_bytes(need)} "
            f"({STEP_BYTES_PER_OUTPUT} bytes an output), instead. Give a smaller `batch_size` "
            f"or {window}, or a text of fewer distinct characters."
        )

    def _eval_steps(self) -> int:
        """Steps `evaluate` reads at a time: 256, fewer for a vocabulary whose outputs for
        them would pass EVAL_CHUNK_BYTES (the state is carried across: the same score)."""
        return max(1, min(256, EVAL_CHUNK_BYTES // (16 * EVAL_TRACKS * self.vocab.size)))

    def _baselines_fit(self) -> None:
        """The test score's n-gram baselines, counted from the training piece at the end of
        `rnnlab train` (a new run or a resumed one) and by `rnnlab evaluate` (of the text
        given with --data), need up to ngram.PEAK_PER_ID bytes a character and PEAK_PER_GRAM
        a distinct n-gram: under 40 bytes a character of prose, up to 285 of random text
        (reading the text takes PEAK_PER_BYTE = 9 a byte), so a text that read well could
        be killed by the out-of-memory killer after the whole training. A bound that counts nothing
        (as if every n-gram were distinct) settles most texts; past it, with too little
        memory for it, the distinct n-grams are counted (a pass of about 25 bytes a
        character, a tenth of the baselines' time) for the estimate. Asked once a task."""
        from rnnlab.tasks import ngram

        if self._baselines_fit_checked:
            return
        n, V = len(self.ids["train"]), self.vocab.size
        bound = ngram.baseline_memory(n, V, self.max_order)
        if bound < 1 << 28:  # (not worth a look at /proc/meminfo, as _checks.affordable)
            self._baselines_fit_checked = True
            return
        have = _checks.available_memory()
        if have is None or bound <= have:
            self._baselines_fit_checked = True
            return
        grams = ngram.distinct_grams(self.ids["train"], V, self.max_order)
        need = ngram.baseline_memory(n, V, self.max_order, grams)
        if need > have:
            raise ValueError(
                f"`--data` must be a text whose n-gram baselines (counted from its training "
                f"piece, beside the test score) fit in the memory "
                f"available ({_checks.describe_bytes(have)}); got {self.source!r}, whose "
                f"{n:,} training characters hold {sum(grams):,} distinct n-grams of orders 1 "
                f"to {self.max_order} (about {_checks.describe_bytes(need)} to count) instead. "
                "Give a shorter text, or free memory."
            )
        self._baselines_fit_checked = True

    def _training_tracks(self) -> tuple[np.ndarray, np.ndarray, int]:
        """(inputs, targets, windows an epoch): the training piece cut into `batch_size`
        tracks, read `seq_len` (or `bptt`) characters a step, the state carried along. A text
        too short is refused naming the settings as TrainConfig does (`batch_size`), as the
        Python caller set them; rnnlab train says the options (`--batch-size`, its _as_given)."""
        if self._tracks is None:
            B = self.cfg.batch_size
            usable = (len(self.ids["train"]) - 1) // B
            if usable < self.window + 1:
                raise self._too_short(self.chars)
            flat = self.ids["train"][: usable * B + 1]
            self._tracks = (flat[:-1].reshape(B, usable), flat[1:].reshape(B, usable),
                            usable // self.window)  # fmt: skip
        return self._tracks

    def _training_needs(self) -> int:
        """The fewest characters of a text whose training piece holds `batch_size` tracks of
        the window and one more character (the last target)."""
        return text_for_training_piece(self.cfg.batch_size * (self.window + 1) + 1)

    def _too_short(self, chars: int) -> ValueError:
        """The refusal of a text of `chars` characters, too short for the batches."""
        B = self.cfg.batch_size
        window = "`bptt`" if self.cfg.bptt else "`seq_len`"
        need = max(MIN_CHARS, self._training_needs())
        return ValueError(
            f"`data` must hold enough text for {B} tracks (`batch_size`) of "
            f"{self.window} characters ({window}) in its training piece (at least "
            f"{need:,} characters in all); got {self.source!r} with "
            f"{_count(chars, 'character')} instead. Give more text, or a smaller "
            f"`batch_size` or {window}."
        )

    def batch(self, step: int, rng) -> Batch:
        tracks_x, tracks_y, per_epoch = self._training_tracks()
        w = step % per_epoch
        k = self.window
        x = tracks_x[:, w * k : (w + 1) * k]
        y = tracks_y[:, w * k : (w + 1) * k]
        return Batch(x, y, None, carry=w > 0, items=int(x.size))

    def loss(self, output, batch: Batch):
        return softmax_cross_entropy(output, batch.y, reduction="mean")

    def evaluate(self, model, split: str, *, baselines: bool | None = None) -> dict:
        """nats and bits per character on a split; with `baselines` (default: on the test
        split) the n-gram baselines of that same split beside them."""
        with_baselines = split == "test" if baselines is None else baselines
        if with_baselines:  # (before the model's pass: refused, it wastes none)
            self._baselines_fit()
        ids = self.ids[split]
        tracks = EVAL_TRACKS
        n = (len(ids) - 1) // tracks
        xs = ids[: n * tracks].reshape(tracks, n)
        ys = ids[1 : n * tracks + 1].reshape(tracks, n)
        total, state = 0.0, None
        # An output-feedback (Jordan) model is fed the true previous character, as in
        # training and in sampling: the likelihood of the text is P(x_t | the true x_<t); run
        # free it would be fed its own soft predictions, which it never saw.
        feedback = getattr(model, "wants_targets", False)
        k = self._eval_steps()
        for i in range(0, n, k):
            teacher = {"targets": ys[:, i : i + k], "teacher": 1.0} if feedback else {}
            f = model.forward(xs[:, i : i + k], state=state, grad=False, **teacher)
            loss, _ = softmax_cross_entropy(f.output, ys[:, i : i + k], reduction="sum")
            total += loss
            state = f.state
        nats = total / (n * tracks)
        # unknown_chars: of the `chars` scored, not of the split (its first character, read
        # only, and the tail short of a track's length too: a split of one unknown script
        # had more unknown characters than characters)
        result: dict[str, Any] = {
            "nats_per_char": nats, "bits_per_char": nats / math.log(2), "chars": n * tracks,
            "unknown_chars": int((ys == self.vocab.unknown).sum()),
        }  # fmt: skip
        if with_baselines:
            result["baselines"] = self.baselines(split)
        return result

    def baselines(self, split: str = "test") -> dict:
        from rnnlab.tasks import ngram

        if split not in self._baselines:
            self._baselines_fit()
            # the characters `evaluate` scores: the split's 2nd to (8n+1)-th (its first is
            # read, never predicted; the tail short of a track's full length is left out)
            ids = self.ids[split]
            scored = (len(ids) - 1) // EVAL_TRACKS * EVAL_TRACKS
            self._baselines[split] = ngram.ngram_baselines(
                self.ids["train"], ids[: scored + 1], self.vocab.size,
                max_order=self.max_order, start=1,
            )
        return self._baselines[split]

    def default_prime(self) -> str:
        """What sampling starts from when given no prime: a line end, as a text starts after
        one; for a vocabulary without one, a space, else its first character (never the
        unknown symbol, which would start the model from a character it was not trained on)."""
        for start in ("\n", " "):
            if start in self.vocab.chars:
                return start
        return self.vocab.chars[0]

    def sample(
        self, model, prime: str | None, length: int, *, temperature=0.8, top_k=None,
        seed: RngLike = 0, unknown: str = "error", name: str = "prime",
    ) -> str:  # fmt: skip
        """`prime` followed by `length` sampled characters. A prime's line ends are read as the
        corpus's are (CRLF and CR become "\\n"); a character the run's vocabulary lacks is
        refused (`unknown="error"`) or read as the unknown symbol (`"map"`). The unknown
        symbol is never sampled. `name`: the prime's name in errors (the CLI's --prime).

        `seed` is rnnlab.generate.sample_ids' `rng`, checked here under its own name: an
        integer seed (or a SeedSequence, a BitGenerator) draws the same text at each call,
        as the default 0 does (`rnnlab sample` without --seed); a Generator is drawn from,
        advanced, as NumPy's own methods do; None takes fresh entropy from the operating
        system, NumPy's `default_rng()`: a new text each call, which no seed reproduces."""
        from rnnlab.generate import sample_ids

        _checks.choice(unknown, "unknown", ("error", "map"))
        seeds = (int, np.integer, np.random.SeedSequence, np.random.BitGenerator,
                 np.random.Generator, type(None))  # fmt: skip
        if isinstance(seed, bool) or not isinstance(seed, seeds):  # (NumPy took True, and
            # refused -1 or 1.5 naming its SeedSequence)
            fail("seed", "an integer seed, a numpy Generator, a SeedSequence, a BitGenerator "
                 "or None", describe(seed))  # fmt: skip
        if isinstance(seed, (int, np.integer)):
            _checks.seed(seed, "seed")
        if prime is None or prime == "":
            prime = self.default_prime()
        elif not isinstance(prime, str):
            fail(name, "a str", describe(prime))
        _checks.unicode_text(prime, name)  # (a command line's byte that is not UTF-8)
        prime = prime.replace("\r\n", "\n").replace("\r", "\n")
        ids = self.vocab.encode(prime)
        unseen = np.flatnonzero(ids == self.vocab.unknown)
        if unseen.size and unknown == "error":
            # (said as the caller sets it: `name` is the CLI's option where it starts with --)
            as_map = "--unknown map" if str(name).startswith("--") else 'unknown="map"'
            chars = "".join(dict.fromkeys(prime[i] for i in unseen.tolist()))
            fail(name, "text of characters the run was trained on",
                 f"{len(chars)} it never saw ({chars[:20]!r}, first at character "
                 f"{int(unseen[0])})",
                 f"Leave them out, or read them as the unknown symbol ({as_map}).")  # fmt: skip
        out = sample_ids(
            model,
            ids,
            length,
            temperature=temperature,
            top_k=top_k,
            rng=seed,
            exclude=[self.vocab.unknown],
        )
        return prime + self.vocab.decode(out)

    def report(self, result: dict, split: str = "test") -> list[str]:
        lines = [
            f"held-out: {result['nats_per_char']:.3f} nats/char = "
            f"{result['bits_per_char']:.3f} bits/char"
        ]
        unknown, chars = result.get("unknown_chars") or 0, result.get("chars") or 0
        if unknown:  # (evaluate --data of another text: a score the table alone misleads on)
            lines.append(f"  unknown: {unknown:,} of the {_count(chars, 'character')} scored "
                         f"({unknown / max(chars, 1):.1%}) are not in the run's vocabulary; "
                         "each is scored as its unknown symbol")  # fmt: skip
        base = result.get("baselines") or self.baselines("test")
        best = min(base.values(), key=lambda b: b["nats_per_char"])
        for name, b in base.items():
            mark = "  <- best n-gram" if b is best else ""
            lines.append(
                f"  {name:<8} {b['nats_per_char']:.3f} nats/char = "
                f"{b['bits_per_char']:.3f} bits/char{mark}"
            )
        top = max(b["order"] for b in base.values())
        if top < MAX_BASELINE_ORDER:
            lines.append(f"  (no n-gram above order {top}: with {self.vocab.size:,} symbols "
                         "its counts would not fit rnnlab's int64 n-gram codes)")  # fmt: skip
        beaten = [n for n, b in base.items() if result["nats_per_char"] < b["nats_per_char"]]
        lines.append("beats: " + (", ".join(beaten) if beaten else "no n-gram baseline yet"))
        return lines
