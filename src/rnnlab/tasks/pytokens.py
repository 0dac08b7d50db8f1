"""Python token labelling: a sequence-labelling task with one label per character of Python
source, made from the standard library's own files with the standard library's `tokenize`
(so it needs nothing but an installed Python). Most classes can be read from the left
context, but CALLDEF ("the name being called or defined") needs the right context too: in
`print (x)` the model only knows that `print` is called once it has seen the "(", which a
left-to-right RNN reads after the name, so a bidirectional RNN should do markedly better on
it. In the spirit of the character-level code models of Karpathy, Johnson & Fei-Fei (2015,
"Visualizing and understanding recurrent networks"), which read the Linux kernel's source.

Classes (CLASSES, in label order):

- OTHER: spaces, tabs, newlines, indentation, line continuations, and anything else between
  tokens;
- NAME: an identifier; the soft keywords `match`, `case`, `type` and `_` are NAMEs, because
  in most code they are ordinary identifiers (`re.match(...)`, `_ = f()`);
- CALLDEF: a NAME whose next character, after optional spaces or tabs on the same line, is
  "(" (a call, or a definition's parameter list), or the NAME right after `def` or `class`;
- KEYWORD: a NAME in `keyword.kwlist` (hard keywords, including True, False and None);
- OPERATOR: operators and delimiters (tokenize's OP tokens: `+ = ( ) [ ] : , . ->` ...);
- NUMBER: numeric literals, including the `j` of complex ones and `_` separators;
- STRING: string and bytes literals with their prefix and quotes, docstrings included; an
  f-string is STRING from its prefix to its closing quote, replacement fields included (one
  token on Python 3.11; Python 3.12 splits f-strings into parts, which are merged here so
  labels do not depend on the Python version);
- COMMENT: from "#" to the end of the line.
"""

from __future__ import annotations

import hashlib
import io
import keyword
import os
import sys
import sysconfig
import tokenize
from pathlib import Path
from typing import Any

import numpy as np

from rnnlab import _checks
from rnnlab._checks import describe, fail, positive_int
from rnnlab.losses import softmax_cross_entropy
from rnnlab.tasks._sequence import _SequenceTask
from rnnlab.tasks.text import CharVocab
from rnnlab.train import TrainConfig

CLASSES = ("OTHER", "NAME", "CALLDEF", "KEYWORD", "OPERATOR", "NUMBER", "STRING", "COMMENT")
OTHER, NAME, CALLDEF, KEYWORD, OPERATOR, NUMBER, STRING, COMMENT = range(len(CLASSES))

# Parts of the standard library left out of the default selection: tests (many are
# deliberately odd or broken sources), generated data tables (pydoc_data is also charlm's
# corpus; encodings are mostly character tables), and third-party packages.
EXCLUDED_DIRS = frozenset(
    {
        "test",
        "tests",
        "idle_test",
        "pydoc_data",
        "encodings",
        "site-packages",
        "dist-packages",
        "__pycache__",
    }
)

# Tokens of Python 3.12+ (PEP 701) that make up an f-string; absent on 3.11.
_FSTRING_START = getattr(tokenize, "FSTRING_START", None)
_FSTRING_END = getattr(tokenize, "FSTRING_END", None)


class SourceError(ValueError):
    """A text that `tokenize` cannot split into Python tokens."""


# The class of each token type that gets one; NAME is refined into KEYWORD and CALLDEF.
_CLASS_OF = {
    tokenize.NAME: NAME,
    tokenize.OP: OPERATOR,
    tokenize.NUMBER: NUMBER,
    tokenize.STRING: STRING,
    tokenize.COMMENT: COMMENT,
}


def _line_starts(text: str) -> list[int]:
    """Offset of the first character of each line, lines ending at "\\n" as tokenize reads
    them through io.StringIO.readline (index 0 is line 1)."""
    newlines = np.flatnonzero(np.frombuffer(text.encode("utf-32-le"), "<u4") == ord("\n"))
    return [0, *(newlines + 1).tolist()]


def _no_token_starts(tok: tokenize.TokenInfo) -> bool:
    """A character no token can start with ("$", "?", a lone quote): an ERRORTOKEN on
    Python 3.11, an OP of no known operator type on Python 3.12+. Stray whitespace is not."""
    if tok.type == tokenize.ERRORTOKEN:
        return not tok.string.isspace()
    return tok.type == tokenize.OP and tok.exact_type == tokenize.OP


def label_source(text: str) -> np.ndarray:
    """One class id (int8, an index into CLASSES) per character of the Python source `text`.

    Raises SourceError (a ValueError) when tokenize fails: an unterminated string or
    bracket, inconsistent dedent, or a character that cannot start a token (such as "$").
    """
    if not isinstance(text, str):
        fail("text", "a str of Python source", describe(text))
    labels = np.full(len(text), OTHER, np.int8)
    starts = _line_starts(text)

    def next_char(i: int) -> str:
        """The first character at or after offset i that is not a space or a tab."""
        while i < len(text) and text[i] in " \t":
            i += 1
        return text[i : i + 1]

    fstring_depth = 0  # > 0 inside a 3.12+ f-string, whose parts are all STRING
    fstring_begin = 0
    previous = ""  # the previous token's text, to find the name after def/class
    try:
        for tok in tokenize.generate_tokens(io.StringIO(text).readline):
            kind = tok.type
            if kind == _FSTRING_START:
                if fstring_depth == 0:
                    fstring_begin = starts[tok.start[0] - 1] + tok.start[1]
                fstring_depth += 1
            elif kind == _FSTRING_END:
                fstring_depth -= 1
                if fstring_depth == 0:
                    labels[fstring_begin : starts[tok.end[0] - 1] + tok.end[1]] = STRING
                    previous = ""
            elif fstring_depth:
                continue
            elif _no_token_starts(tok):
                raise SourceError(
                    f"`text` must be Python source that tokenizes; got {tok.string!r} at line "
                    f"{tok.start[0]}, column {tok.start[1]}, where no token can start, instead."
                )
            elif kind in _CLASS_OF:
                a = starts[tok.start[0] - 1] + tok.start[1]
                b = starts[tok.end[0] - 1] + tok.end[1]
                label = _CLASS_OF[kind]
                if kind == tokenize.NAME:
                    if keyword.iskeyword(tok.string):
                        label = KEYWORD
                    elif previous in ("def", "class") or next_char(b) == "(":
                        label = CALLDEF
                labels[a:b] = label
                if kind != tokenize.COMMENT:
                    previous = tok.string
    except (tokenize.TokenError, SyntaxError) as e:  # IndentationError is a SyntaxError
        message, where = (
            (e.args[0], e.args[1])
            if isinstance(e, tokenize.TokenError)
            else (e.msg, (e.lineno, e.offset))
        )
        raise SourceError(
            f"`text` must be Python source that tokenizes; got an error at line {where[0]}: "
            f"{message} instead."
        ) from None
    return labels


def stdlib_files() -> list[Path]:
    """The default source files: every .py under the standard library's directory
    (sysconfig's "stdlib" path) outside EXCLUDED_DIRS, sorted by relative path. The list
    follows the installed Python, so it is deterministic for a given installation."""
    root = Path(sysconfig.get_paths()["stdlib"])
    found = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if d not in EXCLUDED_DIRS]  # prune: site-packages is large
        found += [Path(folder, name) for name in names if name.endswith(".py")]
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def _read_source(path: Path) -> str | None:
    """The file's text as Python reads it (PEP 263 encoding cookie, universal newlines), or
    None when it cannot be decoded."""
    try:
        with tokenize.open(path) as f:
            return f.read()
    except (SyntaxError, UnicodeDecodeError, LookupError):
        return None


def load_pytokens(
    max_chars: int = 400_000,
    files: list[str | os.PathLike[str]] | None = None,
    seed: int = 0,
    max_file_chars: int = 20_000,
) -> tuple[str, np.ndarray]:
    """(text, labels): Python source and one CLASSES id per character (int8).

    By default the files are `stdlib_files()` in an order shuffled by `seed`; given `files`
    are read in the order given. Each file is labelled whole (so labels see the complete
    context), then at most its first `max_file_chars` characters are kept, cut after a line
    end, so that no single large module dominates; files are concatenated until `max_chars`
    characters, the last one cut to fit. Files that cannot be decoded or tokenized are
    skipped; a given file that does not exist is an error.
    """
    max_chars = positive_int(max_chars, "max_chars")
    max_file_chars = positive_int(max_file_chars, "max_file_chars")
    seed = _checks.seed(seed, "seed")
    if files is None:
        candidates = stdlib_files()
        paths = [candidates[i] for i in np.random.default_rng(seed).permutation(len(candidates))]
    else:
        if not isinstance(files, (list, tuple)) or not files:
            fail("files", "a non-empty list of paths to Python files", describe(files))
        paths = []
        for i, f in enumerate(files):
            if not isinstance(f, (str, os.PathLike)):
                fail(f"files[{i}]", "a path (str or pathlib.Path)", describe(f))
            if not Path(f).is_file():
                why = "a directory" if Path(f).is_dir() else "missing"
                fail(f"files[{i}]", "an existing file", f"'{f}', which is {why}")
            paths.append(Path(f))
    texts, labels, total = [], [], 0
    for path in paths:
        source = _read_source(path)
        if source is None:
            continue
        try:
            y = label_source(source)
        except SourceError:
            continue
        keep = len(source)
        if keep > max_file_chars:
            cut = source.rfind("\n", 0, max_file_chars)
            keep = cut + 1 if cut >= 0 else max_file_chars
        keep = min(keep, max_chars - total)
        texts.append(source[:keep])
        labels.append(y[:keep])
        total += keep
        if total >= max_chars:
            break
    if not texts:
        fail(
            "files",
            "Python files of which at least one tokenizes",
            f"{len(paths)} files, none usable",
        )
    return "".join(texts), np.concatenate(labels)


def chunk(ids: object, labels: object, length: int) -> tuple[np.ndarray, np.ndarray]:
    """Cut aligned (ids, labels) into non-overlapping windows of `length` characters:
    x (n, length) and y (n, length) with n = ⌊len(ids) / length⌋ (the remainder is dropped).
    The dtypes are kept (CharVocab ids are int32, labels int8)."""
    L = positive_int(length, "length")
    arrays = []
    for name, value in (("ids", ids), ("labels", labels)):
        if isinstance(value, (list, tuple)):
            value = np.asarray(value)
        if not isinstance(value, np.ndarray) or value.dtype.kind not in "iu" or value.ndim != 1:
            fail(name, "a 1-D array of integers", describe(value))
        arrays.append(value)
    x, y = arrays
    if len(x) != len(y):
        fail("labels", f"one label per id ({len(x)})", f"{len(y)} labels")
    if len(x) < L:
        fail("ids", f"at least length = {L} ids (one window)", f"{len(x)}")
    n = len(x) // L
    return x[: n * L].reshape(n, L), y[: n * L].reshape(n, L)


# -------------------- the task, as the Trainer drives it (rnnlab.train.Task)


def _split_bounds(n: int) -> dict[str, tuple[int, int]]:
    """Contiguous pieces of n characters: 90 % train, 5 % valid, 5 % test."""
    a, b = int(n * 0.9), int(n * 0.95)
    return {"train": (0, a), "valid": (a, b), "test": (b, n)}


def _digest(text: str, labels: np.ndarray) -> str:
    h = hashlib.sha256(text.encode("utf-8"))
    h.update(np.ascontiguousarray(labels, np.int8).tobytes())
    return h.hexdigest()


def _stored_record(data) -> dict | None:
    """A run's record, checked; None for a run from before pytokens runs stored one."""
    if not data:
        return None
    if (not isinstance(data, dict) or not isinstance(data.get("vocab"), str)
            or not data["vocab"] or not isinstance(data.get("test_sha256"), str)):  # fmt: skip
        fail("config.json's 'data'", "a record of the vocabulary and the test split's digest "
             "('vocab', 'test_sha256')", describe(data))  # fmt: skip
    return data


class PyTokens(_SequenceTask):
    name = "pytokens"
    metric = "accuracy"
    higher_is_better = True
    per_step = True
    readout = "steps"

    def __init__(self, cfg: TrainConfig, data: dict | None = None, *, resume: bool = False):
        """`data`: a trained run's record (data_record): its vocabulary is used, so the ids
        fit the model whatever standard library this Python has; a test split that differs
        from the run's is said on stderr, and refused with `resume` (the run would train on
        on other text: `rnnlab train --resume` under another Python). None (a new run, or one
        from before runs stored it): the vocabulary of the training split."""
        super().__init__(cfg)
        max_chars = cfg.train_size or 400_000
        chars, labels = load_pytokens(max_chars=max_chars, seed=cfg.seed)
        n = len(chars)
        L = cfg.seq_len
        bounds = _split_bounds(n)
        shortest = min(hi - lo for lo, hi in bounds.values())
        if shortest < L and n < max_chars:
            # more --train-size gives no more text: "raise --train-size" sent the user round
            fail("seq_len", f"at most {shortest:,} for the {n:,} characters of Python source "
                 "this standard library gives (valid and test, 5 % each, hold one window of "
                 "seq_len characters)", f"{L:,}", "Lower --seq-len.")  # fmt: skip
        if shortest < L:
            need = next(m for m in range(20 * L, 20 * L + 100) if min(
                hi - lo for lo, hi in _split_bounds(m).values()) >= L)  # fmt: skip
            fail("train_size", f"at least {need:,} characters with seq_len = {L}, so that "
                 "valid and test (5 % each) hold one window of seq_len characters",
                 f"{n:,}", "Raise --train-size or lower --seq-len.")  # fmt: skip
        a, b = bounds["valid"]
        stored = _stored_record(data)
        self.vocab = (CharVocab.from_json({"type": "CharVocab", "chars": stored["vocab"]})
                      if stored else CharVocab(chars[:a]))  # fmt: skip
        self.classes = CLASSES
        self.output_size = len(self.classes)
        ids = self.vocab.encode(chars)
        digest = _digest(chars[b:], labels[b:])
        self._record = {"vocab": self.vocab.chars, "test_sha256": digest}
        if stored and stored["test_sha256"] != digest and resume:
            raise ValueError(
                "`--resume` must train on the text the run was trained on; the pytokens text "
                "this Python's standard library gives differs from the run's (its test "
                f"split's SHA-256 is now {digest[:12]}..., the run's config.json records "
                f"{str(stored['test_sha256'])[:12]}...): resume it under the Python it was "
                "trained with, or start a new run"
            )
        if stored and stored["test_sha256"] != digest:
            print("rnnlab: warning: the pytokens test split made now differs from the one of "
                  "the run's training (another Python, whose standard library differs?); it "
                  "is read with the run's vocabulary, characters the run never saw as its "
                  "unknown symbol, and the scores are on the new split",
                  file=sys.stderr)  # fmt: skip
        self._splits = {}
        for name, (lo, hi) in bounds.items():
            x, y = chunk(ids[lo:hi], labels[lo:hi], L)
            self._splits[name] = (x.astype(np.int64), y.astype(np.int64), None)

    def data_record(self) -> dict:
        """What a run stores of its data (config.json's "data"): the vocabulary and the
        SHA-256 of the test split, so that evaluate reads the text with the run's ids even
        where the standard library differs (another Python has other characters)."""
        return dict(self._record)

    def input_spec(self, cfg):
        return {"type": "tokens", "vocab_size": self.vocab.size, "embed_dim": cfg.embed}

    def split(self, name):
        return self._splits[name]

    def evaluate(self, model, split):
        out, y, _ = self._eval_outputs(model, split)
        loss, _ = softmax_cross_entropy(out, y, reduction="mean")
        pred = out.argmax(axis=-1)
        result: dict[str, Any] = {"accuracy": float((pred == y).mean()), "loss": loss}
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
