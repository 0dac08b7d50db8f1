"""Files written whole or a line at a time: atomic writes, JSON, JSON Lines and TOML.

Every file is written atomically (a temporary sibling, fsync, rename, fsync of the
directory), so that a crash leaves the old file or the new one, never half of each; what a
crash leaves behind is a temporary that `remove_orphans` recognises. Metrics are appended to
JSON Lines files, whose last line a crash may tear: the reader skips it and the next append
cuts it off. Errors name the file and where in it the problem is (ConfigError), and a run
directory's files are never written through a planted symbolic link (RunDirError).
"""

from __future__ import annotations

import errno
import json
import math
import os
import re
import secrets
import tomllib
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, NoReturn

import numpy as np

from rnnlab._checks import describe, fail, file_to_write, read_bounded

PathLike = str | os.PathLike[str]


class ConfigError(ValueError):
    """A JSON, JSON Lines or TOML file is missing or cannot be parsed."""


class RunDirError(ValueError):
    """A path that should be a run directory is not one."""


def refuse(cls: type[ValueError], name: str, expected: str, got: str, hint: str = "") -> NoReturn:
    """`_checks.fail` for any ValueError class, typed NoReturn so that type checkers narrow."""
    message = f"`{name}` must be {expected}; got {got} instead."
    raise cls(message + (" " + hint if hint else ""))


def as_path(value: object, name: str) -> Path:
    """The path argument `name` as a Path; a one-line ValueError for anything else."""
    if not isinstance(value, (str, os.PathLike)):
        fail(name, "a path (str or pathlib.Path)", describe(value))
    return Path(value)


# --------------------------------------------------------------------------------------------
# Atomic writes
# --------------------------------------------------------------------------------------------


def fsync_dir(directory: Path) -> None:
    """Make a rename inside `directory` durable (POSIX only: Windows cannot open directories)."""
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    """Put on disk a file that another library wrote and closed (safetensors writes by name)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_error(e: OSError, path: Path) -> OSError:
    """`e`, raised while writing `path`, as an OSError of the same errno naming `path`: a
    write to an open file that fails (a full disk, a quota) says "[Errno 28] No space left on
    device" and no file, and a failed rename names the temporary, which the user never heard
    of. An error already naming the file (rnnlab's own "cannot write") is returned as it is."""
    if e.strerror is None or (e.filename is None and e.strerror.startswith("cannot write '")):
        return e
    return OSError(e.errno, f"cannot write '{path}' ({e.strerror})")


@contextmanager
def naming(path: Path) -> Iterator[None]:
    """Raise an OSError of the block as `write_error` names it after `path`."""
    try:
        yield
    except OSError as e:
        raise write_error(e, path) from None


NAME_MAX = 255
"""The longest file name in bytes on Linux's file systems (ext4, XFS, Btrfs, tmpfs) and
macOS's, which a temporary's name must keep to as well as the file's own."""


def _temporary_stem(name: str) -> str:
    """What atomic_path's temporary for a file `name` is named after: the name, or as much of
    it as leaves room for the 14 bytes the temporary adds (".", ".XXXXXXXX.tmp"), cut between
    characters. A name of 242 to 255 bytes is a valid file name whose temporary's was not:
    the write failed as "File name too long" of a name that is not."""
    room = NAME_MAX - len(".") - len(".00000000.tmp")
    while len(os.fsencode(name)) > room:  # (rare: at most a few hundred short steps)
        name = name[:-1]
    return name


@contextmanager
def atomic_path(path: Path, name: str = "path") -> Iterator[Path]:
    """Yield an empty temporary sibling of `path` to fill and make durable; it replaces `path`
    when the block ends, and is removed if the block fails.

    The temporary file is created with O_EXCL and mode 0o666 so that the umask applies as for
    an ordinary `open` (mkstemp would leave it private to the user). What no file of that name
    can be meant by is refused first, naming the argument `name` (_checks.file_to_write, the
    exporters' check): a directory, where the rename would fail with an error naming the
    temporary file, which the caller never heard of; a FIFO, device or socket (or a link to
    one), which the rename would delete, a regular file left in its place.
    """
    path = file_to_write(path, name)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    while True:
        tmp = path.with_name(f".{_temporary_stem(path.name)}.{secrets.token_hex(4)}.tmp")
        try:
            os.close(os.open(tmp, flags, 0o666))
            break
        except FileExistsError:
            continue
        except OSError as e:  # named by the file it was for, not by the temporary's name
            raise OSError(e.errno, f"cannot write '{path}' ({e.strerror})") from None
    try:
        with naming(path):
            yield tmp
            try:
                os.replace(tmp, path)
            except FileNotFoundError:
                if not tmp.parent.is_dir() or tmp.exists():
                    raise
                # (said as "cannot write 'PATH' (No such file or directory)", with PATH's
                # folder there: the run's start removes what it takes for a crash's leftovers)
                raise OSError(errno.ENOENT, f"cannot write '{path}': its temporary file "
                              f"'{tmp}' was removed while it was written, by another process "
                              "(`rnnlab train` starting a run there removes the temporary files "
                              "of interrupted writes); write it again") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    with naming(path):
        fsync_dir(path.parent)


@contextmanager
def atomic_file(path: Path, name: str = "path") -> Iterator[IO[bytes]]:
    """Yield a binary file that replaces `path` only once it is completely on disk."""
    with atomic_path(path, name) as tmp, open(tmp, "wb") as f:
        yield f
        f.flush()
        os.fsync(f.fileno())


def atomic_write_bytes(path: PathLike, data: bytes | bytearray | memoryview) -> None:
    """Write `data` to `path` so that readers see the old file or the new one, never a mix."""
    path = file_to_write(path, "path")  # (the str: "out/" means a folder)
    if not isinstance(data, (bytes, bytearray, memoryview)):
        fail("data", "bytes", describe(data))
    with atomic_file(path) as f:
        f.write(data)


def atomic_write_text(path: PathLike, text: str) -> None:
    """Write `text` as UTF-8 to `path` atomically (no newline translation)."""
    path = file_to_write(path, "path")  # (the str: "out/" means a folder)
    if not isinstance(text, str):
        fail("text", "a str", describe(text))
    with atomic_file(path) as f:
        f.write(text.encode("utf-8"))


def _jsonable(value: object, where: str) -> Any:
    """A copy of `value` holding only JSON types; NumPy scalars become Python numbers.

    Refused: non-string keys, non-finite floats (JSON has neither NaN nor infinity) and
    arrays (they belong in safetensors), each with the place where it was found.
    """
    if isinstance(value, (np.bool_, np.integer, np.floating)):
        value = value.item()
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            hint = "JSON has no NaN or infinity; store None instead."
            fail(where, "JSON data", repr(value), hint)
        return value
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                fail(where, "JSON data (a dict with str keys)", f"the key {describe(key)}")
            out[key] = _jsonable(item, f"{where}[{key!r}]")
        return out
    if isinstance(value, (list, tuple)):
        return [_jsonable(item, f"{where}[{i}]") for i, item in enumerate(value)]
    hint = "Arrays belong in safetensors (or use .tolist() for a few numbers)."
    refuse(
        ValueError,
        where,
        "JSON data (dict with str keys, list, str, int, finite float, bool or None)",
        describe(value),
        hint if isinstance(value, np.ndarray) else "",
    )


def json_text(obj: object, name: str) -> str:
    """`obj` as rnnlab writes JSON files (indented, UTF-8, strict); `name` is the argument
    that errors name."""
    return json.dumps(_jsonable(obj, name), indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def atomic_write_json(path: PathLike, obj: object) -> None:
    """Write `obj` as indented UTF-8 JSON atomically. Strict JSON: no NaN, no arrays."""
    path = file_to_write(path, "path")  # (the str: "out/" means a folder)
    text = json_text(obj, "obj")
    with atomic_file(path) as f:
        f.write(text.encode("utf-8"))


# --------------------------------------------------------------------------------------------
# Reading configuration; metrics as JSON Lines
# --------------------------------------------------------------------------------------------


# Configuration, progress and metrics files are small: a larger one is not rnnlab's.
_READ_LIMIT = 1 << 30


def _read_bytes(path: Path, error: type[ValueError], what: str) -> bytes:
    return read_bounded(path, _READ_LIMIT, what, error)


def decode_utf8(data: bytes, path: Path, error: type[ValueError], what: str) -> str:
    """The text of a file's `data`, without a leading byte-order mark (Windows editors write
    one, and TOML and JSON parsers refuse it as a character at line 1, column 1); `error`
    (naming the file and the first bad byte) if it is not UTF-8."""
    try:
        return data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as e:
        raise error(
            f"'{path}' is not valid {what}: byte {e.start} ({data[e.start]:#04x}) is not UTF-8."
        ) from None


# A string, or one of the constants Python's json reads and JSON has not (outside strings
# they are the only places "NaN" and "Infinity" can be: no number or keyword holds them).
_STRING_OR_CONSTANT = re.compile(r'"(?:[^"\\]|\\.)*"|(-?Infinity|NaN)')


# A string, or a number (the places a number's digits can be).
_STRING_OR_NUMBER = re.compile(r'"(?:[^"\\]|\\.)*"|(-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?'
                               r'(?:[eE][-+]?[0-9]+)?)')


# A string, or an integer of more than 4300 digits (Python's default limit on int()).
_LONG_INT = re.compile(r'"(?:[^"\\]|\\.)*"|(-?[0-9]{4301,})(?![.eE0-9])')


class _Unreadable(ValueError):
    """A number json.loads reads but rnnlab refuses: said where it is by _loads."""

    def __init__(self, message: str, find: re.Pattern[str], token: str | None) -> None:
        super().__init__(message)
        self.find, self.token = find, token  # (token None: the first of `find`'s)


def _refuse_constant(name: str) -> NoReturn:
    raise _Unreadable(f"{name} is not a JSON number (JSON has no NaN or infinity)",
                      _STRING_OR_CONSTANT, None)  # fmt: skip


def _finite_float(literal: str) -> float:
    value = float(literal)
    if math.isinf(value):
        shown = literal if len(literal) <= 40 else literal[:37] + "..."
        raise _Unreadable(f"{shown} is beyond the range of a float (JSON has no infinity)",
                          _STRING_OR_NUMBER, literal)  # fmt: skip
    return value


class _DuplicateKey(ValueError):
    """An object holding a key twice, found by _unique_keys: said where it is by _loads."""


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """json.loads' object_pairs_hook: the object, unless it holds a key twice (json.loads
    keeps the last value without a word: a config.json edited by hand to hold "lr" twice
    trained with whichever came last)."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise _DuplicateKey()
    return obj


class _TwiceError(json.JSONDecodeError):
    """A JSON object holds `key` twice, first at `first` (a position in the text), again at
    `pos` (its line and column, as a JSONDecodeError's); parse_json says both."""

    def __init__(self, key: str, text: str, first: int, pos: int) -> None:
        super().__init__(f"the key {_shown_key(key)} appears twice in one object", text, pos)
        self.key = key
        self.first_lineno = text.count("\n", 0, first) + 1
        self.first_colno = first - text.rfind("\n", 0, first)


def _shown_key(key: str) -> str:
    shown = json.dumps(key, ensure_ascii=False)
    return shown if len(shown) <= 40 else shown[:37] + '..."'


# A string, or one of the marks that open, close or separate (numbers and keywords between
# them are skipped): what finding an object's keys needs.
_STRING_OR_MARK = re.compile(r'"(?:[^"\\]|\\.)*"|[{}\[\],:]')


def _duplicate_key(text: str) -> _TwiceError | None:
    """The first key an object of `text` holds twice, in the order of the text, with where
    each of the two is written (found again only once json.loads met one: the hook cannot
    say where its object is)."""
    objects: list[dict[str, int] | None] = []  # each open object's keys (None: an array)
    key_next = False
    for m in _STRING_OR_MARK.finditer(text):
        mark = m.group()
        if mark[0] == '"':
            keys = objects[-1] if objects else None
            if key_next and keys is not None:
                key = json.loads(mark)
                if key in keys:
                    return _TwiceError(key, text, keys[key], m.start())
                keys[key] = m.start()
            key_next = False
        elif mark == "{":
            objects.append({})
            key_next = True
        elif mark == "[":
            objects.append(None)
            key_next = False
        elif mark in "}]":
            if objects:
                objects.pop()
            key_next = False
        else:  # "," (a key follows in an object) or ":"
            key_next = mark == "," and bool(objects) and objects[-1] is not None
    return None


def _loads(text: str, unique: bool = True) -> Any:
    """`json.loads(text)` of strict JSON: NaN, Infinity and -Infinity (which json.loads takes
    and rnnlab never writes: its writers refuse non-finite numbers) are a JSONDecodeError at
    the constant, like any other token that is not JSON; so are the numbers Python cannot
    hold: a float beyond its range (1e999, which json.loads read as inf: a resume then failed
    rewriting metrics.jsonl with "Out of range float values are not JSON compliant", no file
    named) and an integer of more digits than int() converts (its bare ValueError). With
    `unique`, a key an object holds twice, which json.loads takes (keeping the last value), is
    a _TwiceError at its second place: no file rnnlab writes holds one (its writers dump
    dicts), and the check costs a Python call an object (read_jsonl goes without it)."""
    try:
        return json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float,
                          object_pairs_hook=_unique_keys if unique else None)  # fmt: skip
    except _DuplicateKey:
        found = _duplicate_key(text)
        if found is None:  # (cannot be: the hook met one; said without its place)
            raise json.JSONDecodeError("a key appears twice in one object", text, 0) from None
        raise found from None
    except _Unreadable as e:
        message, find, token = str(e), e.find, e.token
    except ValueError as e:
        if "integer string conversion" not in str(e):
            raise
        # (int()'s limit, sys.get_int_max_str_digits(); a float's digits go to float())
        message, find, token = "an integer of more digits than Python reads", _LONG_INT, None
    # the first place it is written (parsing goes from left to right)
    pos = next((m.start(1) for m in find.finditer(text) if m.group(1) is not None
                and (token is None or m.group(1) == token)), 0)  # fmt: skip
    raise json.JSONDecodeError(message, text, pos)


_WHICH = ("rnnlab does not guess which value is meant (a JSON reader keeps one of them without "
          "a word); remove the other.")


def parse_json(path: Path, error: type[ValueError]) -> Any:
    """The JSON value in `path`, or `error` naming the file, the line and the column."""
    text = decode_utf8(_read_bytes(path, error, "JSON file"), path, error, "JSON")
    try:
        return _loads(text)
    except _TwiceError as e:
        raise error(f"'{path}' holds the key {_shown_key(e.key)} twice in one object, at line "
                    f"{e.first_lineno}, column {e.first_colno} and at line {e.lineno}, column "
                    f"{e.colno}: {_WHICH}") from None
    except json.JSONDecodeError as e:
        raise error(
            f"'{path}' is not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}."
        ) from None
    except RecursionError:
        raise error(f"'{path}' is not rnnlab's JSON: it is nested too deeply.") from None


def read_json(path: PathLike) -> Any:
    """Parse a JSON file; ConfigError (with line and column) when it is missing or invalid."""
    return parse_json(as_path(path, "path"), ConfigError)


def read_toml(path: PathLike) -> dict[str, Any]:
    """Parse a TOML file with the standard library; ConfigError when missing or invalid."""
    path = as_path(path, "path")
    text = decode_utf8(_read_bytes(path, ConfigError, "TOML file"), path, ConfigError, "TOML")
    try:
        return tomllib.loads(text)
    except RecursionError:
        raise ConfigError(f"'{path}' is not rnnlab's TOML: it is nested too deeply.") from None
    except tomllib.TOMLDecodeError as e:
        # The message already ends with "(at line L, column C)"; the line itself is quoted,
        # since tomllib names no key ("Cannot overwrite a value" for a key given twice).
        said = str(e).replace("Cannot overwrite a value", "a key given a value twice", 1)
        named = re.search(r"\(at line (\d+), column \d+\)$", said)
        quoted = ""
        if named is not None and 0 < int(named.group(1)) <= text.count("\n") + 1:
            content = text.split("\n")[int(named.group(1)) - 1].strip()
            if content:
                quoted = f": {content if len(content) <= 80 else content[:77] + '...'!r}"
        raise ConfigError(f"'{path}' is not valid TOML: {said}{quoted}.") from None
    except ValueError as e:  # int()'s own, which tomllib lets through, naming no file
        if "integer string conversion" not in str(e):
            raise
        # (where a key is given such an integer; found otherwise, in an array, it goes unsaid)
        where = re.search(r"^[^#\n=]*=[ \t]*[-+]?([0-9][0-9_]{4300,})", text, re.MULTILINE)
        at = ""
        if where is not None:
            pos = where.start(1)
            line, column = text.count("\n", 0, pos) + 1, pos - text.rfind("\n", 0, pos)
            at = f" (at line {line}, column {column})"
        raise ConfigError(f"'{path}' is not valid TOML: an integer of more digits than Python "
                          f"reads{at}.") from None


def finite_or_null(value: Any, where: str = "") -> tuple[Any, list[str]]:
    """`value` (JSON data: dicts, lists, numbers, ...) with every NaN or inf replaced by None,
    and the names of the replaced entries ("loss", "test.mse", "curve[3]"): what a result is
    written as, since JSON has no NaN and `json.dumps` would print one no JSON reader takes."""
    if isinstance(value, float) and not math.isfinite(value):
        return None, [where or "the value"]
    if isinstance(value, dict):
        out, bad = {}, []
        for k, v in value.items():
            out[k], b = finite_or_null(v, f"{where}.{k}" if where else str(k))
            bad += b
        return out, bad
    if isinstance(value, list):
        pairs = [finite_or_null(v, f"{where}[{i}]") for i, v in enumerate(value)]
        return [v for v, _ in pairs], [n for _, b in pairs for n in b]
    return value, []


def append_jsonl(path: PathLike, obj: Mapping[str, Any]) -> None:
    """Append `obj` as one line of JSON to `path` (created if missing).

    A line left incomplete by a crash (no final newline and not valid JSON) is cut off first,
    so that the new record does not fuse with it and the file stays one record per line.
    """
    path = as_path(path, "path")
    if not isinstance(obj, Mapping):
        fail("obj", "a dict (one JSON object per line)", describe(obj))
    line = json.dumps(_jsonable(obj, "obj"), ensure_ascii=False, allow_nan=False) + "\n"
    with _open_no_follow(path) as f, naming(path):
        end = f.seek(0, os.SEEK_END)
        if end > 0:
            f.seek(end - 1)
            if f.read(1) != b"\n":
                _repair_tail(f, end)
        f.write(line.encode("utf-8"))
        f.flush()


def _open_no_follow(path: Path) -> IO[bytes]:
    """`open(path, "a+b")` that refuses a symbolic link: a link planted in a run directory
    would make rnnlab append to (or overwrite) whatever file it points to."""
    flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
    if path.is_symlink():
        refuse(RunDirError, "path", "a regular file (rnnlab does not write through links)",
               f"'{path}', a symbolic link to '{os.readlink(path)}'")  # fmt: skip
    try:
        fd = os.open(path, flags | getattr(os, "O_BINARY", 0), 0o666)
    except OSError as e:
        if path.is_symlink():  # planted between the check and the open
            refuse(RunDirError, "path", "a regular file (rnnlab does not write through links)",
                   f"'{path}', a symbolic link")  # fmt: skip
        raise RunDirError(f"Cannot append to '{path}': {e.strerror or e}.") from None
    return os.fdopen(fd, "a+b")


def keep_jsonl_until(path: PathLike, step: int) -> int:
    """Drop the records of `path` whose "step" is above `step` (what a run resumed at `step`
    will write again, so that each step is logged once); returns how many were dropped.
    Rewritten atomically; records without a step, and a missing file, are left alone. A
    link is refused, as the appends after it refuse it, and so is what is no regular file: a
    FIFO or a directory, which the appends failed on only once steps had trained."""
    path = as_path(path, "path")
    if path.is_symlink():
        refuse(RunDirError, "path", "a regular file (rnnlab does not write through links)",
               f"'{path}', a symbolic link to '{os.readlink(path)}'")  # fmt: skip
    if not path.exists():
        return 0
    if not path.is_file():
        refuse(RunDirError, "path", "a regular file (a JSON Lines log)",
               f"'{path}', " + ("a directory" if path.is_dir() else "a FIFO, device or socket"))
    records = read_jsonl(path)
    keep = [r for r in records if not (isinstance(r, dict) and isinstance(r.get("step"), int)
                                       and r["step"] > step)]  # fmt: skip
    if len(keep) != len(records):
        lines = (json.dumps(r, ensure_ascii=False, allow_nan=False) + "\n" for r in keep)
        atomic_write_text(path, "".join(lines))
    return len(records) - len(keep)


# Ours (.NAME.XXXXXXXX.tmp, atomic_path), and the safetensors package's, which writes a file
# of its own (.tmpXXXXXX) and renames it into place.
_OURS = r"\..+\.[0-9a-f]{8}\.tmp"
_ORPHAN = re.compile(_OURS + r"|\.tmp[A-Za-z0-9]{6}")


def is_our_temporary(path: Path) -> bool:
    """Whether `path` is a file named as atomic_path names its temporaries (a crash may leave
    one; a name of the safetensors package's pattern may be anyone's)."""
    return path.is_file() and re.fullmatch(_OURS, path.name) is not None


def remove_orphans(directory: PathLike, names: Iterable[str] | None = None) -> list[Path]:
    """Remove the temporary files of atomic writes that a crash left in `directory`, never
    renamed into place; returns their paths. With `names`, only atomic_path's temporaries of
    the files of those names: a checkpoint's save removes those of the files it writes, not
    those of another process's write in progress in the run directory (an export of the run,
    a result `rnnlab evaluate` writes), which it deleted under the writer's feet. Without,
    every temporary, the safetensors package's too: the clean-up at a run's start."""
    directory = as_path(directory, "directory")
    wanted = None if names is None else re.compile(
        "|".join(r"\." + re.escape(_temporary_stem(name)) + r"\.[0-9a-f]{8}\.tmp"
                 for name in names) or "(?!)")  # fmt: skip
    gone = []
    if directory.is_dir():
        for p in directory.iterdir():
            if (wanted or _ORPHAN).fullmatch(p.name) and p.is_file() and not p.is_symlink():
                p.unlink(missing_ok=True)
                gone.append(p)
    return gone


def _repair_tail(f: IO[bytes], end: int) -> None:
    """The file does not end in a newline: end a complete last record, cut off a torn one."""
    start = end
    while start > 0:
        step = min(start, 1 << 16)
        f.seek(start - step)
        chunk = f.read(step)
        cut = chunk.rfind(b"\n")
        if cut >= 0:
            start = start - step + cut + 1
            break
        start -= step
    f.seek(start)
    tail = f.read(end - start)
    try:
        json.loads(tail.decode("utf-8"))
    except ValueError:  # torn by a crash (JSONDecodeError and UnicodeDecodeError are both)
        f.truncate(start)
    else:
        f.write(b"\n")


def read_jsonl(path: PathLike) -> list[Any]:
    """Read a JSON Lines file; ConfigError naming the first line that is not JSON.

    Blank lines are skipped, and so is an unparsable last line without a final newline: that is
    a record torn by a crash while it was appended (the next append_jsonl cuts it off). Torn
    inside a character (records are written as UTF-8, not ASCII), it is not even UTF-8: it is
    dropped before the file is decoded, which refused the whole log (and a resume with it).
    """
    path = as_path(path, "path")
    data = _read_bytes(path, ConfigError, "JSON Lines file")
    cut = data.rfind(b"\n") + 1  # (the last line's start; it is unterminated where not empty)
    try:
        data[cut:].decode("utf-8")
    except UnicodeDecodeError:
        data = data[:cut]
    text = decode_utf8(data, path, ConfigError, "JSON")
    lines = text.split("\n")  # not splitlines(): JSON strings may hold U+2028 and friends
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            # (a key twice in a record is taken as json.loads takes it, the last value: rnnlab
            # appends dicts, and the check costs 13-17% of a long log's parse, which a resume
            # reads before its first step; docs/design.md)
            records.append(_loads(line, unique=False))
        except RecursionError:
            raise ConfigError(f"'{path}' line {number} is nested too deeply.") from None
        except json.JSONDecodeError as e:
            if number == len(lines):
                break
            raise ConfigError(
                f"'{path}' is not valid JSON Lines: {e.msg} at line {number}, column {e.colno}."
            ) from None
    return records
