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

The task (`rnnlab train pytokens`) holds out whole files by a hash of their path relative to
the standard library's directory (file_split: SHA-256 mod 20, one value the test files, one
the validation files, the rest the training files), whatever --seed and --train-size: no run
ever trains on a file another run tests on, and no file is cut across two splits. Of
--train-size characters, 90 % are read from the training files in an order shuffled by
--seed, 5 % each from the validation and test files in the order of their path's hash, so
that runs of any seed test on the same text. Runs trained before this split (their
config.json's "data" says no "split") keep the contiguous one they were trained with.
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
from rnnlab.tasks._sequence import SET_NAMES, _SequenceTask
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

# At most this many characters of each file are kept (cut after a line end), so that no
# single large module dominates a piece.
MAX_FILE_CHARS = 20_000

# Tokens of Python 3.12+ (PEP 701) that make up an f-string; absent on 3.11.
_FSTRING_START = getattr(tokenize, "FSTRING_START", None)
_FSTRING_END = getattr(tokenize, "FSTRING_END", None)


class SourceError(ValueError):
    """A text that `tokenize` cannot split into Python tokens (or a file that does not
    decode). `detail`: why, in a few words, for a message that names the file."""

    def __init__(self, message: str, detail: str = ""):
        super().__init__(message)
        self.detail = detail or message


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
                at = (f"{tok.string!r} at line {tok.start[0]}, column {tok.start[1]}, where no "
                      "token can start")  # fmt: skip
                raise SourceError(
                    f"`text` must be Python source that tokenizes; got {at}, instead.",
                    f"it does not tokenize: {at}",
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
            f"{message} instead.",
            f"it does not tokenize: {message} at line {where[0]}",
        ) from None
    return labels


def stdlib_root() -> Path:
    """The standard library's directory (sysconfig's "stdlib" path), whose files are the
    data; the held-out split of a file is drawn from its path relative to this directory."""
    return Path(sysconfig.get_paths()["stdlib"])


def stdlib_files(root: str | os.PathLike[str] | None = None) -> list[Path]:
    """The default source files: every .py under `root` (default: `stdlib_root()`) outside
    EXCLUDED_DIRS, sorted by relative path. The list follows the installed Python, so it is
    deterministic for a given installation."""
    root = stdlib_root() if root is None else Path(root)
    found = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if d not in EXCLUDED_DIRS]  # prune: site-packages is large
        found += [Path(folder, name) for name in names if name.endswith(".py")]
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def _read_source(path: Path) -> str:
    """The file's text as Python reads it (PEP 263 encoding cookie, universal newlines).
    Raises SourceError saying why when it cannot be read or decoded."""
    try:
        with tokenize.open(path) as f:
            return f.read()
    except SyntaxError as e:  # a missing or unknown coding cookie for bytes that are not UTF-8
        raise SourceError(f"it does not decode: {e.msg.replace(f' for {str(path)!r}', '')}"
                          ) from None  # fmt: skip
    except (UnicodeDecodeError, LookupError) as e:
        raise SourceError(f"it does not decode: {e}") from None
    except OSError as e:  # (/proc/self/mem is a file whose read fails: an OSError naming
        # no file escaped load_pytokens; it is skipped, as a file that does not decode is)
        raise SourceError(f"it cannot be read: {e.strerror or e}") from None


def load_pytokens(
    max_chars: int = 400_000,
    files: list[str | os.PathLike[str]] | None = None,
    seed: int = 0,
    max_file_chars: int = MAX_FILE_CHARS,
) -> tuple[str, np.ndarray]:
    """(text, labels): Python source and one CLASSES id per character (int8).

    By default the files are `stdlib_files()` in an order shuffled by `seed`; given `files`
    are read in the order given. Each file is labelled whole (so labels see the complete
    context), then at most its first `max_file_chars` characters are kept, cut after a line
    end, so that no single large module dominates; files are concatenated until `max_chars`
    characters, the last one cut to fit. Files that cannot be read, decoded or tokenized, or are
    empty, are skipped (none left is an error naming the first and why); a given file that
    does not exist is an error.
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
                # (/dev/null was "missing": it exists, and is no regular file)
                why = ("a directory" if Path(f).is_dir() else "no regular file"
                       if Path(f).exists() else "missing")  # fmt: skip
                fail(f"files[{i}]", "an existing file", f"'{f}', which is {why}")
            paths.append(Path(f))
    texts, labels, total = [], [], 0
    skipped: list[tuple[Path, str]] = []
    for source, y in _usable(paths, max_file_chars, skipped):
        keep = min(len(source), max_chars - total)
        texts.append(source[:keep])
        labels.append(y[:keep])
        total += keep
        if total >= max_chars:
            break
    if not texts:
        # (which file and why: "1 files, none usable" left a user to guess, and a list of
        # empty files gave an empty text and no labels, silently)
        path, why = skipped[0]
        fail("files", "Python files of which at least one tokenizes and is not empty",
             f"{len(paths)} file{'s' * (len(paths) != 1)}, none usable ('{path}': {why}"
             f"{f'; and {len(skipped) - 1} more' if len(skipped) > 1 else ''})")  # fmt: skip
    return "".join(texts), np.concatenate(labels)


def _usable(paths: list[Path], max_file_chars: int, skipped: list | None = None):
    """(text, labels) of each of `paths` that decodes, tokenizes and is not empty, in order:
    labelled whole (so labels see the complete context), then cut to at most
    `max_file_chars` characters after a line end, so that no single large module dominates.
    `skipped`: a list that gets (path, why) of each file left out."""
    for path in paths:
        try:
            source = _read_source(path)
            if not source:
                raise SourceError("it is empty")
            y = label_source(source)
        except SourceError as e:
            if skipped is not None:
                skipped.append((path, e.detail))
            continue
        keep = len(source)
        if keep > max_file_chars:
            cut = source.rfind("\n", 0, max_file_chars)
            keep = cut + 1 if cut >= 0 else max_file_chars
        yield source[:keep], y[:keep]


# -------------------- held-out files: the split of `rnnlab train pytokens`

SPLITS = ("train", "valid", "test")
_MODULUS = 20  # a file's path hash mod 20: 0 is a test file, 1 a validation file


def _path_hash(relative: str) -> int:
    return int.from_bytes(hashlib.sha256(relative.encode("utf-8")).digest(), "big")


def file_split(relative: str) -> str:
    """The split ("train", "valid" or "test") of the standard-library file at `relative`, its
    POSIX path relative to the standard library's directory ("json/decoder.py"): the SHA-256
    of that path mod 20 is 0 for a test file, 1 for a validation file, else a training one.
    It depends on the path alone, never on --seed or --train-size, so that no run trains on
    a file another run tests on, and a whole file is held out (a file cut across a split
    would test on the rest of a module trained on). A module a newer Python adds falls
    where its path says; the others keep theirs."""
    if not isinstance(relative, str) or not relative:
        fail("relative", "a file's path relative to the standard library's directory, a "
             "non-empty str", describe(relative))  # fmt: skip
    r = _path_hash(relative) % _MODULUS
    return "test" if r == 0 else "valid" if r == 1 else "train"


def split_budgets(max_chars: int) -> dict[str, int]:
    """How many characters each split reads of `max_chars` (--train-size): 5 % (rounded
    down) each for valid and test, the rest (90 % or a little more) for train."""
    held = positive_int(max_chars, "max_chars") // _MODULUS
    return {"train": max_chars - 2 * held, "valid": held, "test": held}


def split_files(seed: int = 0, root: str | os.PathLike[str] | None = None) -> dict[str, list[Path]]:
    """The files of each split (file_split) in the order they are read: the training files
    shuffled by `seed`, the validation and test files in the order of their path's hash
    whatever the seed, so that runs of any seed and --train-size test on the same text (a
    smaller --train-size reads a beginning of a larger one's)."""
    seed = _checks.seed(seed, "seed")
    root = stdlib_root() if root is None else Path(root)
    by_split: dict[str, list[tuple[int, str, Path]]] = {name: [] for name in SPLITS}
    for path in stdlib_files(root):
        relative = path.relative_to(root).as_posix()
        by_split[file_split(relative)].append((_path_hash(relative), relative, path))
    train = [path for _, _, path in sorted(by_split["train"], key=lambda t: t[1])]
    order = np.random.default_rng(seed).permutation(len(train))
    out = {"train": [train[i] for i in order]}
    for name in ("valid", "test"):
        out[name] = [path for _, _, path in sorted(by_split[name])]
    return out


def _piece(paths: list[Path], budget: int, least: int, max_file_chars: int):
    """(text, labels, need, total): the usable files of `paths` read in order up to `budget`
    characters, the last one cut after a line end (a piece is at most its budget, ending at
    a line end or a file's end); `need`: the smallest budget whose piece holds at least
    `least` characters, None when all the files together hold fewer (`total`, read whole
    then)."""
    texts, labels = [], []
    seen, full, need = 0, False, None
    for source, y in _usable(paths, max_file_chars):
        n = len(source)
        if not full:
            keep = n if seen + n <= budget else source.rfind("\n", 0, budget - seen) + 1
            if keep:
                texts.append(source[:keep])
                labels.append(y[:keep])
            full = keep < n
        if need is None and seen + n >= least:
            at = source.find("\n", max(least - seen - 1, 0))
            need = seen + (at + 1 if at >= 0 else n)
        seen += n
        if full and need is not None:
            break
    y_all = np.concatenate(labels) if labels else np.zeros(0, np.int8)
    return "".join(texts), y_all, need, seen


def load_pytokens_splits(
    max_chars: int = 400_000, seed: int = 0, max_file_chars: int = MAX_FILE_CHARS
) -> dict[str, tuple[str, np.ndarray]]:
    """{"train", "valid", "test"}: (text, labels) of each split of the standard library's
    files (split_files: whole files held out by their path's hash), read up to its budget of
    `max_chars` (split_budgets: 90/5/5 %), each file labelled whole and kept to at most
    `max_file_chars` characters as in load_pytokens, the last one cut after a line end."""
    max_chars = positive_int(max_chars, "max_chars")
    max_file_chars = positive_int(max_file_chars, "max_file_chars")
    budgets = split_budgets(max_chars)
    files = split_files(seed)
    out = {}
    for name in SPLITS:
        text, labels, _, _ = _piece(files[name], budgets[name], 1, max_file_chars)
        out[name] = (text, labels)
    return out


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
    """Contiguous pieces of n characters: 90 % train, 5 % valid, 5 % test (the split of
    runs trained before whole files were held out; `_contiguous_pieces`)."""
    a, b = int(n * 0.9), int(n * 0.95)
    return {"train": (0, a), "valid": (a, b), "test": (b, n)}


def _digest(text: str, labels: np.ndarray) -> str:
    h = hashlib.sha256(text.encode("utf-8"))
    h.update(np.ascontiguousarray(labels, np.int8).tobytes())
    return h.hexdigest()


# config.json's "data" "split": "files" (whole files held out by their path's hash, runs
# since 2026-12-05); a record without it is of a run trained on the contiguous split.
# runs.data_record gives {"split": "contiguous"} alone for a run from before runs stored a
# record, so that it is read with the split it was trained with.
SPLIT_KINDS = ("files", "contiguous")


def _stored_record(data) -> dict | None:
    """A run's record, checked; None for a new run. {"split": "contiguous"} alone: a run from
    before pytokens runs stored a record (runs.data_record), whose vocabulary is rebuilt."""
    if not data:
        return None
    if isinstance(data, dict) and data.get("split") == "contiguous" and set(data) == {"split"}:
        return data
    if (not isinstance(data, dict) or not isinstance(data.get("vocab"), str)
            or not data["vocab"] or not isinstance(data.get("test_sha256"), str)):  # fmt: skip
        fail("config.json's 'data'", "a record of the vocabulary and the test split's digest "
             "('vocab', 'test_sha256')", describe(data))  # fmt: skip
    if data.get("split", "contiguous") not in SPLIT_KINDS:
        fail("config.json's 'data' 'split'", "'files' or 'contiguous' (how the run's text was "
             "split)", describe(data["split"]))  # fmt: skip
    return data


def _split_of(stored: dict | None) -> str:
    """The split a run reads: a new run's (None) is "files"; a stored record's says its own,
    "contiguous" when it says none (written before whole files were held out)."""
    return "files" if stored is None else str(stored.get("split", "contiguous"))


def _contiguous_pieces(max_chars: int, seed: int, L: int) -> dict[str, tuple[str, np.ndarray]]:
    """The split of runs trained before 2026-12-05: the files shuffled by `seed`, concatenated
    to `max_chars` and cut 90/5/5 % (a file could straddle two pieces, and runs of two seeds
    or sizes tested on different text). Kept so that those runs evaluate and resume on the
    text they were trained on."""
    chars, labels = load_pytokens(max_chars=max_chars, seed=seed)
    n = len(chars)
    bounds = _split_bounds(n)
    shortest = min(hi - lo for lo, hi in bounds.values())
    if shortest < L and n < max_chars:
        # more --train-size gives no more text: "raise --train-size" sent the user round
        fail("seq_len", f"at most {shortest:,} for the {n:,} characters of Python source "
             "this standard library gives (valid and test, 5 % each, hold one window of "
             "`seq_len` characters)", f"{L:,}", "Lower `seq_len`.")  # fmt: skip
    if shortest < L:
        need = next(m for m in range(20 * L, 20 * L + 100) if min(
            hi - lo for lo, hi in _split_bounds(m).values()) >= L)  # fmt: skip
        fail("train_size", f"at least {need:,} characters with `seq_len` = {L}, so that "
             "valid and test (5 % each) hold one window of `seq_len` characters",
             f"{n:,}", "Raise `train_size` or lower `seq_len`.")  # fmt: skip
    return {name: (chars[lo:hi], labels[lo:hi]) for name, (lo, hi) in bounds.items()}


def _file_pieces(max_chars: int, seed: int, L: int, exhausted: dict | None = None
                 ) -> dict[str, tuple[str, np.ndarray]]:  # fmt: skip
    """The split of whole files (split_files, split_budgets), each piece checked to hold one
    window of L characters: a --seq-len too long for what this standard library's files of a
    split hold, or a --train-size too small for a window in each piece, is said naming the
    setting that helps as TrainConfig names it (`seq_len`; the CLI says --seq-len).
    `exhausted`: a dict that gets {split: (characters read, its budget)} of each split whose
    files hold less than its budget of --train-size (all of them read)."""
    files = split_files(seed)
    budgets = split_budgets(max_chars)
    pieces, needs, totals = {}, {}, {}
    for name in SPLITS:
        text, labels, needs[name], totals[name] = _piece(
            files[name], budgets[name], L, MAX_FILE_CHARS
        )
        pieces[name] = (text, labels)
    short = [name for name in SPLITS if needs[name] is None]
    if short:
        # more --train-size gives no more text: "raise --train-size" sent the user round
        name = min(short, key=lambda n: totals[n])
        if totals[name] == 0:
            raise ValueError(f"the standard library at '{stdlib_root()}' gives no usable "
                             f"{name} file (the files whose relative path's SHA-256 mod 20 "
                             f"makes them {name} files): pytokens has no {name} text")  # fmt: skip
        # the longest window this --train-size's pieces hold (the files' all, if one is empty)
        at_most = min(len(text) for text, _ in pieces.values()) or totals[name]
        which = "training" if name == "train" else f"{name} (held-out)"
        fail("seq_len", f"at most {at_most:,} for the Python source this standard library "
             f"gives (its {which} files hold {totals[name]:,} characters in all, and each "
             "split holds one window of `seq_len` characters)", f"{L:,}",
             "Lower `seq_len`.")  # fmt: skip
    if any(len(text) < L for text, _ in pieces.values()):
        need = _MODULUS * max(needs["valid"], needs["test"], 1)
        while split_budgets(need)["train"] < needs["train"]:
            need += 1
        fail("train_size", f"at least {need:,} characters with `seq_len` = {L}, so that "
             "valid and test (5 % each, cut after a line end) hold one window of `seq_len` "
             "characters", f"{max_chars:,}", "Raise `train_size` or lower `seq_len`.")  # fmt: skip
    if exhausted is not None:
        for name, (text, _) in pieces.items():
            if len(text) == totals[name] < budgets[name]:  # every file read whole
                exhausted[name] = (len(text), budgets[name])
    return pieces


class PyTokens(_SequenceTask):
    name = "pytokens"
    metric = "accuracy"
    higher_is_better = True
    per_step = True
    readout = "steps"

    def __init__(self, cfg: TrainConfig, data: dict | None = None, *, resume: bool = False):
        """`data`: a trained run's record (data_record): its vocabulary is used, so the ids
        fit the model whatever standard library this Python has, and the split it says (a
        record without one is of the contiguous split runs had before whole files were held
        out); a test split that differs from the run's is said on stderr, and refused with
        `resume` (the run would train on other text: `rnnlab train --resume` under another
        Python). None: a new run, on whole files held out by their path's hash, with the
        vocabulary of its training piece."""
        super().__init__(cfg)
        max_chars = cfg.train_size or 400_000
        L = cfg.seq_len
        stored = _stored_record(data)
        split = _split_of(stored)
        self._short: dict[str, tuple[int, int]] = {}
        self._max_chars = max_chars
        if split == "files":
            pieces = _file_pieces(max_chars, cfg.seed, L, self._short)
        else:
            pieces = _contiguous_pieces(max_chars, cfg.seed, L)
        if stored and "vocab" in stored:
            self.vocab = CharVocab.from_json({"type": "CharVocab", "chars": stored["vocab"]})
        else:
            self.vocab = CharVocab(pieces["train"][0])
        self.classes = CLASSES
        self.output_size = len(self.classes)
        digest = _digest(*pieces["test"])
        self._record = {"vocab": self.vocab.chars, "test_sha256": digest}
        if split == "files":
            self._record["split"] = "files"
        if stored and "vocab" in stored and stored["test_sha256"] != digest and resume:
            raise ValueError(
                "`--resume` must train on the text the run was trained on; the pytokens text "
                "this Python's standard library gives differs from the run's (its test "
                f"split's SHA-256 is now {digest[:12]}..., the run's config.json records "
                f"{str(stored['test_sha256'])[:12]}...): resume it under the Python it was "
                "trained with, or start a new run"
            )
        if stored and "vocab" in stored and stored["test_sha256"] != digest:
            print("rnnlab: warning: the pytokens test split made now differs from the one of "
                  "the run's training (another Python, whose standard library differs?); it "
                  "is read with the run's vocabulary, characters the run never saw as its "
                  "unknown symbol, and the scores are on the new split",
                  file=sys.stderr)  # fmt: skip
        self._splits = {}
        for name, (text, labels) in pieces.items():
            x, y = chunk(self.vocab.encode(text), labels, L)
            self._splits[name] = (x.astype(np.int64), y.astype(np.int64), None)

    def check_new_run(self) -> list[str]:
        """The shared checks, and a --train-size more than this standard library's files of
        a split hold (--train-size 10**11 trained on what there is, and said nothing)."""
        said = super().check_new_run()
        if self._short:
            said.append(f"`train_size` ({self._max_chars:,}) asks for more Python source "
                        "than this standard library's files hold: " + ", ".join(
                            f"{name} {got:,} characters (of {want:,})"
                            for name, (got, want) in self._short.items()))  # fmt: skip
        return said

    def data_record(self) -> dict:
        """What a run stores of its data (config.json's "data"): the vocabulary, the SHA-256
        of the test split and the split ("files"; none for a run of the contiguous split
        before it), so that evaluate and --resume read the text the run was trained on,
        with the run's ids even where the standard library differs (another Python has
        other characters)."""
        return dict(self._record)

    def input_spec(self, cfg):
        return {"type": "tokens", "vocab_size": self.vocab.size, "embed_dim": cfg.embed}

    def split(self, name):
        return self._splits[name]

    def evaluate(self, model, split):
        out, y, _ = self._eval_outputs(model, split)
        loss, _ = softmax_cross_entropy(out, y, reduction="mean")
        pred = out.argmax(axis=-1)
        # The commonest class's share is said beside the accuracy, as digits and the synthetic
        # tasks say theirs: a held-out piece of a small --train-size can be one docstring,
        # where a model that answers STRING everywhere scored 92 % and nothing said so.
        counts = np.bincount(y.ravel(), minlength=len(self.classes))
        result: dict[str, Any] = {"accuracy": float((pred == y).mean()), "loss": loss,
                                  "majority": float(counts.max() / counts.sum()),
                                  "majority_class": self.classes[int(counts.argmax())]}  # fmt: skip
        per_class = {}
        for c, name in enumerate(self.classes):
            m = y == c
            if m.any():
                per_class[name] = float((pred[m] == c).mean())
        result["per_class_accuracy"] = per_class
        return result

    def report(self, result, split: str = "test"):
        lines = [f"per-character accuracy {100 * result['accuracy']:.2f} %"]
        if "majority" in result:  # (a result.json written before it was added has none)
            above = result["accuracy"] > result["majority"]
            name = SET_NAMES[split]
            lines[0] += (f" (commonest class of this {name} set, {result['majority_class']}, "
                         f"{100 * result['majority']:.1f} %: {'above' if above else 'not above'} "
                         "it)")  # fmt: skip
        for name, acc in result.get("per_class_accuracy", {}).items():
            lines.append(f"  {name:<12} {100 * acc:6.2f} %")
        return lines
