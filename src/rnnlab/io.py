"""Persistence without pickles: safetensors weights, JSON configuration, run directories.

Weights and optimizer state go in safetensors files (a pure-NumPy reader and writer, byte for
byte what the `safetensors` package writes); configuration and progress go in JSON (TOML can be
read too). Every file is written atomically (temporary sibling, fsync, rename, fsync of the
directory), so a crash leaves either the old file or the new one, never half of each. A run
directory holds `config.json`, `metrics.jsonl` and `checkpoints/step-XXXXXXXX/`, each checkpoint
built in a temporary directory and renamed into place, with `checkpoints/latest` naming the
newest; `model.safetensors` and `config.json` at the top level are always the latest weights.
Random generators are saved as JSON data so that a resumed run draws the same numbers.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import secrets
import shutil
import tomllib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any, NoReturn

import numpy as np

from rnnlab._checks import describe, fail, read_bounded

PathLike = str | os.PathLike[str]


class CheckpointError(ValueError):
    """A safetensors file or a checkpoint is missing, truncated or corrupt."""


class ConfigError(ValueError):
    """A JSON, JSON Lines or TOML file is missing or cannot be parsed."""


class RunDirError(ValueError):
    """A path that should be a run directory is not one."""


def _raise(cls: type[ValueError], name: str, expected: str, got: str, hint: str = "") -> NoReturn:
    """`_checks.fail` for any ValueError class, typed NoReturn so that type checkers narrow."""
    message = f"`{name}` must be {expected}; got {got} instead."
    raise cls(message + (" " + hint if hint else ""))


def _path(value: object, name: str) -> Path:
    if not isinstance(value, (str, os.PathLike)):
        fail(name, "a path (str or pathlib.Path)", describe(value))
    return Path(value)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# Atomic writes
# --------------------------------------------------------------------------------------------


def _fsync_dir(directory: Path) -> None:
    """Make a rename inside `directory` durable (POSIX only: Windows cannot open directories)."""
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def _atomic_file(path: Path) -> Iterator[IO[bytes]]:
    """Yield a binary file that replaces `path` only once it is completely on disk.

    The temporary file is created with O_EXCL and mode 0o666 so that the umask applies as for
    an ordinary `open` (mkstemp would leave it private to the user).
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            fd = os.open(tmp, flags, 0o666)
            break
        except FileExistsError:
            continue
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def atomic_write_bytes(path: PathLike, data: bytes | bytearray | memoryview) -> None:
    """Write `data` to `path` so that readers see the old file or the new one, never a mix."""
    path = _path(path, "path")
    if not isinstance(data, (bytes, bytearray, memoryview)):
        fail("data", "bytes", describe(data))
    with _atomic_file(path) as f:
        f.write(data)


def atomic_write_text(path: PathLike, text: str) -> None:
    """Write `text` as UTF-8 to `path` atomically (no newline translation)."""
    path = _path(path, "path")
    if not isinstance(text, str):
        fail("text", "a str", describe(text))
    with _atomic_file(path) as f:
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
    _raise(
        ValueError,
        where,
        "JSON data (dict with str keys, list, str, int, finite float, bool or None)",
        describe(value),
        hint if isinstance(value, np.ndarray) else "",
    )


def _dumps(obj: object, name: str) -> str:
    return json.dumps(_jsonable(obj, name), indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def atomic_write_json(path: PathLike, obj: object) -> None:
    """Write `obj` as indented UTF-8 JSON atomically. Strict JSON: no NaN, no arrays."""
    path = _path(path, "path")
    text = _dumps(obj, "obj")
    with _atomic_file(path) as f:
        f.write(text.encode("utf-8"))


# --------------------------------------------------------------------------------------------
# Reading configuration
# --------------------------------------------------------------------------------------------


# Configuration, progress and metrics files are small: a larger one is not rnnlab's.
READ_LIMIT = 1 << 30


def _read_bytes(path: Path, error: type[ValueError], what: str) -> bytes:
    return read_bounded(path, READ_LIMIT, what, error)


def _decode(data: bytes, path: Path, error: type[ValueError], what: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise error(
            f"'{path}' is not valid {what}: byte {e.start} ({data[e.start]:#04x}) is not UTF-8."
        ) from None


def _parse_json(path: Path, error: type[ValueError]) -> Any:
    text = _decode(_read_bytes(path, error, "JSON file"), path, error, "JSON")
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise error(
            f"'{path}' is not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}."
        ) from None
    except RecursionError:
        raise error(f"'{path}' is not rnnlab's JSON: it is nested too deeply.") from None


def read_json(path: PathLike) -> Any:
    """Parse a JSON file; ConfigError (with line and column) when it is missing or invalid."""
    return _parse_json(_path(path, "path"), ConfigError)


def read_toml(path: PathLike) -> dict[str, Any]:
    """Parse a TOML file with the standard library; ConfigError when missing or invalid."""
    path = _path(path, "path")
    text = _decode(_read_bytes(path, ConfigError, "TOML file"), path, ConfigError, "TOML")
    try:
        return tomllib.loads(text)
    except RecursionError:
        raise ConfigError(f"'{path}' is not rnnlab's TOML: it is nested too deeply.") from None
    except tomllib.TOMLDecodeError as e:
        # The message already ends with "(at line L, column C)".
        raise ConfigError(f"'{path}' is not valid TOML: {e}.") from None


def append_jsonl(path: PathLike, obj: Mapping[str, Any]) -> None:
    """Append `obj` as one line of JSON to `path` (created if missing).

    A line left incomplete by a crash (no final newline and not valid JSON) is cut off first,
    so that the new record does not fuse with it and the file stays one record per line.
    """
    path = _path(path, "path")
    if not isinstance(obj, Mapping):
        fail("obj", "a dict (one JSON object per line)", describe(obj))
    line = json.dumps(_jsonable(obj, "obj"), ensure_ascii=False, allow_nan=False) + "\n"
    with _open_no_follow(path) as f:
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
        _raise(RunDirError, "path", "a regular file (rnnlab does not write through links)",
               f"'{path}', a symbolic link to '{os.readlink(path)}'")  # fmt: skip
    try:
        fd = os.open(path, flags | getattr(os, "O_BINARY", 0), 0o666)
    except OSError as e:
        if path.is_symlink():  # planted between the check and the open
            _raise(RunDirError, "path", "a regular file (rnnlab does not write through links)",
                   f"'{path}', a symbolic link")  # fmt: skip
        raise RunDirError(f"Cannot append to '{path}': {e.strerror or e}.") from None
    return os.fdopen(fd, "a+b")


def keep_jsonl_until(path: PathLike, step: int) -> int:
    """Drop the records of `path` whose "step" is above `step` (what a run resumed at `step`
    will write again, so that each step is logged once); returns how many were dropped.
    Rewritten atomically; records without a step, and a missing file, are left alone."""
    path = _path(path, "path")
    if path.is_symlink():
        _raise(RunDirError, "path", "a regular file (rnnlab does not write through links)",
               f"'{path}', a symbolic link to '{os.readlink(path)}'")  # fmt: skip
    if not path.is_file():
        return 0
    records = read_jsonl(path)
    keep = [r for r in records if not (isinstance(r, dict) and isinstance(r.get("step"), int)
                                       and r["step"] > step)]  # fmt: skip
    if len(keep) != len(records):
        lines = (json.dumps(r, ensure_ascii=False, allow_nan=False) + "\n" for r in keep)
        atomic_write_text(path, "".join(lines))
    return len(records) - len(keep)


_ORPHAN = re.compile(r"\..+\.[0-9a-f]{8}\.tmp")


def remove_orphans(directory: PathLike) -> list[Path]:
    """Remove the temporary files of atomic writes that a crash left in `directory`
    (`.NAME.XXXXXXXX.tmp`, never renamed into place); returns their paths."""
    directory = _path(directory, "directory")
    gone = []
    if directory.is_dir():
        for p in directory.iterdir():
            if _ORPHAN.fullmatch(p.name) and p.is_file() and not p.is_symlink():
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
    a record torn by a crash while it was appended (the next append_jsonl cuts it off).
    """
    path = _path(path, "path")
    text = _decode(_read_bytes(path, ConfigError, "JSON Lines file"), path, ConfigError, "JSON")
    lines = text.split("\n")  # not splitlines(): JSON strings may hold U+2028 and friends
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except RecursionError:
            raise ConfigError(f"'{path}' line {number} is nested too deeply.") from None
        except json.JSONDecodeError as e:
            if number == len(lines):
                break
            raise ConfigError(
                f"'{path}' is not valid JSON Lines: {e.msg} at line {number}, column {e.colno}."
            ) from None
    return records


# --------------------------------------------------------------------------------------------
# safetensors
# --------------------------------------------------------------------------------------------

# The format's dtype codes. The order is that of the reference implementation's enum: it writes
# tensors sorted by this rank (descending) and then by name, which puts the widest types first,
# so that every tensor starts at a multiple of its item size. We follow it to the byte.
_DTYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype("|b1"),
    "U8": np.dtype("|u1"),
    "I8": np.dtype("|i1"),
    "I16": np.dtype("<i2"),
    "U16": np.dtype("<u2"),
    "F16": np.dtype("<f2"),
    "I32": np.dtype("<i4"),
    "U32": np.dtype("<u4"),
    "F32": np.dtype("<f4"),
    "F64": np.dtype("<f8"),
    "I64": np.dtype("<i8"),
    "U64": np.dtype("<u8"),
}
_RANK = {code: rank for rank, code in enumerate(_DTYPES)}
_CODE = {(dt.kind, dt.itemsize): code for code, dt in _DTYPES.items()}
_NO_NUMPY_TYPE = ("BF16", "F8_E5M2", "F8_E4M3", "F8_E8M0", "F6_E2M3", "F6_E3M2", "F4", "C64")
_HEADER_LIMIT = 100_000_000  # the reference reader's limit; a larger value means garbage


def _prepare(tensors: object, metadata: object, name: str) -> tuple[bytes, list[np.ndarray]]:
    """Check the arguments and build the padded header and the arrays in file order."""
    if not isinstance(tensors, Mapping):
        fail(name, "a dict of str -> NumPy array", describe(tensors))
    assert isinstance(tensors, Mapping)
    entries = []
    for key, value in tensors.items():
        if not isinstance(key, str) or key == "__metadata__":
            fail(name, "a dict with str keys other than '__metadata__'", f"the key {key!r}")
        if isinstance(value, np.generic):  # a NumPy scalar is a 0-d tensor
            value = np.asarray(value)
        if not isinstance(value, np.ndarray):
            fail(f"{name}[{key!r}]", "a NumPy array", describe(value))
        code = _CODE.get((value.dtype.kind, value.dtype.itemsize))
        if code is None:
            supported = ", ".join(str(dt.newbyteorder("=")) for dt in _DTYPES.values())
            _raise(
                ValueError,
                f"{name}[{key!r}]",
                f"an array of dtype {supported}",
                f"dtype {value.dtype}",
            )
        entries.append((code, key, value))
    if metadata is not None:
        if not isinstance(metadata, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
        ):
            fail("metadata", "None or a dict of str -> str", describe(metadata))
    assert metadata is None or isinstance(metadata, Mapping)

    entries.sort(key=lambda e: (-_RANK[e[0]], e[1]))
    header: dict[str, Any] = {}
    if metadata is not None:
        header["__metadata__"] = dict(metadata)
    arrays = []
    offset = 0
    for code, key, value in entries:
        # Not ascontiguousarray: it turns a 0-d array into shape (1,).
        array = np.asarray(value, dtype=_DTYPES[code], order="C")
        header[key] = {
            "dtype": code,
            "shape": list(array.shape),
            "data_offsets": [offset, offset + array.nbytes],
        }
        offset += array.nbytes
        arrays.append(array)
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text, arrays


def _raw(array: np.ndarray) -> np.ndarray:
    """The bytes of a C-contiguous array as a flat uint8 view (0-d and bool included)."""
    return array.reshape(-1).view(np.uint8)


def safetensors_bytes(
    tensors: Mapping[str, np.ndarray], metadata: Mapping[str, str] | None = None
) -> bytes:
    """The safetensors encoding of `tensors` (and string `metadata`), as bytes.

    Layout: u64 little-endian N, N bytes of JSON header padded with spaces to a multiple of 8,
    then every tensor's little-endian C-order data, one after the other.
    """
    header, arrays = _prepare(tensors, metadata, "tensors")
    return b"".join([header, *(_raw(a).tobytes() for a in arrays)])


def save_safetensors(
    path: PathLike,
    tensors: Mapping[str, np.ndarray],
    metadata: Mapping[str, str] | None = None,
) -> None:
    """Write `tensors` to a safetensors file atomically (streamed, no copy of the whole file)."""
    path = _path(path, "path")
    header, arrays = _prepare(tensors, metadata, "tensors")
    with _atomic_file(path) as f:
        _write_tensors(f, header, arrays)


HASH_KEY = "sha256"  # save_weights' entry in a safetensors file's __metadata__


def save_weights(path: PathLike, tensors: Mapping[str, np.ndarray]) -> None:
    """`save_safetensors` with the SHA-256 of the file's content in its own metadata
    (`__metadata__["sha256"]`: the hash of the file as written without that entry), which
    `load_weights` checks. One file carries its hash, so one atomic rename writes both: a crash
    leaves the old file with its hash or the new one with its own (a hashes.json beside it
    would be a second write, and a crash between the two would make a sound file look
    corrupt). For weights outside a checkpoint (a run's best.safetensors)."""
    path = _path(path, "path")
    digest = _sha256(*_prepare(tensors, None, "tensors"))
    header, arrays = _prepare(tensors, {HASH_KEY: digest}, "tensors")
    with _atomic_file(path) as f:
        _write_tensors(f, header, arrays)


def load_weights(path: PathLike) -> dict[str, np.ndarray]:
    """The tensors of a file `save_weights` wrote, checked against the SHA-256 in its
    metadata (CheckpointError naming the file when they differ: a flipped byte in a weight is
    valid safetensors and would load without a word). A file without the hash (written before
    rnnlab recorded one, or by another program) loads unchecked."""
    path = _path(path, "path")
    tensors, metadata = load_safetensors(path)
    want = metadata.pop(HASH_KEY, None)
    if want is None:
        return tensors
    got = _sha256(*_prepare(tensors, metadata or None, "tensors"))
    if want != got:
        raise CheckpointError(
            f"'{path}' does not match the SHA-256 recorded in its metadata (recorded "
            f"{want[:16]}..., the content has {got[:16]}...): the file changed or is corrupt "
            "since it was saved."
        )
    return tensors


def _write_tensors(f: IO[bytes], header: bytes, arrays: list[np.ndarray]) -> None:
    f.write(header)
    for array in arrays:
        f.write(_raw(array).data)


@dataclass(frozen=True)
class _Entry:
    name: str
    dtype: np.dtype
    shape: tuple[int, ...]
    begin: int
    end: int


def _parse_header(
    source: str, header: bytes, data_size: int
) -> tuple[list[_Entry], dict[str, str]]:
    """Validate the header against a data section of `data_size` bytes.

    Returns the entries in header order and the metadata. The data must be
    covered exactly: no tensor beyond the end, no overlap, no hole, nothing after the last.
    """

    def bad(what: str) -> CheckpointError:
        return CheckpointError(f"{source} is not a valid safetensors file: {what}.")

    try:
        text = header.decode("utf-8")
    except UnicodeDecodeError:
        raise bad("the header is not UTF-8 text") from None

    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        seen: dict[str, Any] = {}
        for key, value in pairs:
            if key in seen:
                raise bad(f"the key {key!r} appears twice in the header")
            seen[key] = value
        return seen

    try:
        parsed = json.loads(text, object_pairs_hook=no_duplicates)
    except json.JSONDecodeError as e:
        raise bad(f"the header is not valid JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(parsed, dict):
        raise bad(f"the header must be a JSON object, not {type(parsed).__name__}")

    metadata = parsed.pop("__metadata__", None)
    metadata = {} if metadata is None else metadata
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise bad("__metadata__ must map strings to strings")

    def is_count(v: object) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and v >= 0

    entries = []
    for name, info in parsed.items():
        keys = {"dtype", "shape", "data_offsets"}
        if not isinstance(info, dict) or set(info) != keys:
            found = ", ".join(info) if isinstance(info, dict) else type(info).__name__
            raise bad(
                f"tensor {name!r} must have the keys dtype, shape, data_offsets; found {found}"
            )
        code = info["dtype"]
        if code not in _DTYPES:
            why = " (NumPy has no such type)" if code in _NO_NUMPY_TYPE else ""
            raise bad(
                f"tensor {name!r} has the unknown dtype {code!r}{why}; "
                f"supported: {', '.join(_DTYPES)}"
            )
        shape, offsets = info["shape"], info["data_offsets"]
        if not isinstance(shape, list) or not all(is_count(n) for n in shape):
            raise bad(f"tensor {name!r} has shape {shape!r}, not a list of non-negative integers")
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(is_count(n) for n in offsets)
            or offsets[0] > offsets[1]
        ):
            raise bad(
                f"tensor {name!r} has data_offsets {offsets!r}, "
                "expected [begin, end] with 0 <= begin <= end"
            )
        dtype = _DTYPES[code]
        size = math.prod(shape) * dtype.itemsize
        begin, end = offsets
        if end - begin != size:
            raise bad(
                f"tensor {name!r} of shape {shape} and dtype {code} needs {size} bytes "
                f"but its data_offsets {offsets} span {end - begin}"
            )
        if end > data_size:
            raise bad(
                f"tensor {name!r} ends at byte {end} of the data but the data has only "
                f"{data_size} bytes (truncated file?)"
            )
        entries.append(_Entry(name, dtype, tuple(shape), begin, end))

    position, previous = 0, None
    for entry in sorted(entries, key=lambda e: (e.begin, e.end)):
        if entry.begin < position:
            assert previous is not None
            raise bad(
                f"tensors {previous.name!r} and {entry.name!r} overlap (bytes "
                f"[{previous.begin}, {previous.end}) and [{entry.begin}, {entry.end}))"
            )
        if entry.begin > position:
            raise bad(
                f"{entry.begin - position} bytes before tensor {entry.name!r} belong to "
                "no tensor (the data must be contiguous)"
            )
        position, previous = entry.end, entry
    if position != data_size:
        raise bad(f"{data_size - position} bytes after the last tensor belong to no tensor")
    return entries, metadata


def _split_header(source: str, prefix: bytes, size: int) -> int:
    """Header length N from the first 8 bytes of a file of `size` bytes, checked."""
    if size == 0:
        raise CheckpointError(f"{source} is not a valid safetensors file: it is empty (0 bytes).")
    if size < 8:
        raise CheckpointError(
            f"{source} is not a valid safetensors file: it has {size} bytes, "
            "fewer than the 8-byte header length (truncated file?)."
        )
    n = int.from_bytes(prefix[:8], "little")
    if n > size - 8 or n > _HEADER_LIMIT:
        raise CheckpointError(
            f"{source} is not a valid safetensors file: the header length "
            f"says {n} bytes but only {size - 8} follow (truncated file?)."
        )
    return n


def _check_bool(source: str, entry: _Entry, array: np.ndarray) -> None:
    # NumPy would accept any byte as a bool and then misbehave; the format allows only 0 and 1.
    if entry.dtype.kind == "b" and array.size and _raw(array).max() > 1:
        raise CheckpointError(
            f"{source} is not a valid safetensors file: the BOOL tensor "
            f"{entry.name!r} holds bytes other than 0 and 1."
        )


def parse_safetensors(
    data: bytes | bytearray | memoryview,
) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Decode safetensors bytes into (tensors, metadata); the arrays are fresh, writable copies."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        fail("data", "bytes", describe(data))
    source = "the data"
    view = memoryview(data).cast("B")
    n = _split_header(source, bytes(view[:8]), len(view))
    entries, metadata = _parse_header(source, bytes(view[8 : 8 + n]), len(view) - 8 - n)
    start = 8 + n
    tensors = {}
    for entry in entries:
        chunk = view[start + entry.begin : start + entry.end]
        array = np.frombuffer(chunk, dtype=entry.dtype).reshape(entry.shape)
        _check_bool(source, entry, array)
        tensors[entry.name] = array.astype(entry.dtype.newbyteorder("="), copy=True)
    return tensors, metadata


def load_safetensors(path: PathLike) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Read a safetensors file into (tensors, metadata), in the order of the header.

    Each array is read straight into its own fresh buffer: writable, C-contiguous, native byte
    order and independent of the file. Anything inconsistent raises CheckpointError naming the
    file and the problem.
    """
    path = _path(path, "path")
    source = f"'{path}'"
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise CheckpointError(f"Cannot read {source}: the file does not exist.") from None
    except IsADirectoryError:
        raise CheckpointError(f"Cannot read {source}: it is a directory.") from None
    with f:
        size = os.fstat(f.fileno()).st_size
        n = _split_header(source, f.read(8), size)
        entries, metadata = _parse_header(source, f.read(n), size - 8 - n)
        arrays = {}
        # In file order, so that each tensor is one sequential read into its own buffer.
        for entry in sorted(entries, key=lambda e: (e.begin, e.end)):
            array = np.empty(entry.shape, dtype=entry.dtype)
            if array.nbytes and f.readinto(_raw(array).data) != array.nbytes:
                raise CheckpointError(
                    f"{source} is not a valid safetensors file: it ended "
                    f"inside tensor {entry.name!r} (changed while read?)."
                )
            _check_bool(source, entry, array)
            arrays[entry.name] = array.astype(entry.dtype.newbyteorder("="), copy=False)
    return {entry.name: arrays[entry.name] for entry in entries}, metadata


# --------------------------------------------------------------------------------------------
# Random generators as JSON
# --------------------------------------------------------------------------------------------

# NumPy's bit generators, to rebuild one from the name in its state (a closed list, not a
# registry: these are the only classes whose state numpy_rng_state can describe).
_BIT_GENERATORS: dict[str, type[np.random.BitGenerator]] = {
    "PCG64": np.random.PCG64,
    "PCG64DXSM": np.random.PCG64DXSM,
    "MT19937": np.random.MT19937,
    "Philox": np.random.Philox,
    "SFC64": np.random.SFC64,
}


def _encode_state(value: Any) -> Any:
    # Arrays in bit-generator states (MT19937 key, Philox counter, SFC64 words) become tagged
    # lists; Python ints stay ints, however large (PCG64's are 128-bit; Python's json is exact).
    if isinstance(value, np.ndarray):
        return {"__ndarray__": value.dtype.name, "values": value.tolist()}
    if isinstance(value, dict):
        return {key: _encode_state(item) for key, item in value.items()}
    if isinstance(value, np.generic):
        return value.item()
    return value


def _decode_state(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"__ndarray__", "values"}:
            return np.array(value["values"], dtype=value["__ndarray__"])
        return {key: _decode_state(item) for key, item in value.items()}
    return value


def numpy_rng_state(rng: np.random.Generator) -> dict[str, Any]:
    """The complete state of `rng` as JSON data; `rng_from_state` rebuilds the generator.

    Holds the bit generator's state (so the next draws are identical) and its SeedSequence
    (so `rng.spawn` gives the same children after a resume).
    """
    if not isinstance(rng, np.random.Generator):
        fail("rng", "a np.random.Generator", describe(rng))
    bit_generator = rng.bit_generator
    if type(bit_generator) not in _BIT_GENERATORS.values():
        fail(
            "rng",
            f"a Generator over one of NumPy's bit generators ({', '.join(_BIT_GENERATORS)})",
            f"a {type(bit_generator).__name__}",
        )
    seed_seq = bit_generator.seed_seq
    sequence = None
    if isinstance(seed_seq, np.random.SeedSequence):
        entropy = seed_seq.entropy
        if isinstance(entropy, (int, np.integer)):
            entropy = int(entropy)
        elif entropy is not None:
            entropy = [int(e) for e in entropy]
        sequence = {
            "entropy": entropy,
            "spawn_key": [int(k) for k in seed_seq.spawn_key],
            "pool_size": int(seed_seq.pool_size),
            "n_children_spawned": int(seed_seq.n_children_spawned),
        }
    return {"bit_generator": _encode_state(bit_generator.state), "seed_sequence": sequence}


def rng_from_state(state: Mapping[str, Any]) -> np.random.Generator:
    """The generator saved by `numpy_rng_state` (also after a round trip through JSON text)."""
    expected = "a dict made by numpy_rng_state"
    if not isinstance(state, Mapping) or set(state) != {"bit_generator", "seed_sequence"}:
        fail("state", expected, describe(state))
    inner = state["bit_generator"]
    name = inner.get("bit_generator") if isinstance(inner, Mapping) else None
    if not isinstance(name, str) or name not in _BIT_GENERATORS:
        _raise(
            ValueError,
            "state",
            f"{expected} (for one of {', '.join(_BIT_GENERATORS)})",
            f"the bit generator {name!r}",
        )
    cls = _BIT_GENERATORS[name]
    try:
        sequence = state["seed_sequence"]
        if sequence is None:
            bit_generator = cls()
        else:
            bit_generator = cls(
                np.random.SeedSequence(
                    sequence["entropy"],
                    spawn_key=tuple(sequence["spawn_key"]),
                    pool_size=sequence["pool_size"],
                    n_children_spawned=sequence["n_children_spawned"],
                )
            )
        bit_generator.state = _decode_state(dict(inner))
    except (KeyError, TypeError, ValueError) as e:
        fail("state", expected, f"a dict that {name} refuses ({type(e).__name__}: {e})")
    return np.random.Generator(bit_generator)


# --------------------------------------------------------------------------------------------
# Run directories and checkpoints
# --------------------------------------------------------------------------------------------

_STEP_DIR = re.compile(r"step-(\d{8,})")
_NAME_HINT = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")


def _step_name(step: int) -> str:
    return f"step-{step:08d}"


def is_run_dir(path: PathLike) -> bool:
    """True when `path` is a directory holding a config.json."""
    path = _path(path, "path")
    return path.is_dir() and (path / "config.json").is_file()


def open_run_dir(path: PathLike) -> Path:
    """`path` as a Path, after checking that it is a run directory (RunDirError otherwise)."""
    path = _path(path, "run")
    if not path.exists():
        why = "does not exist"
    elif not path.is_dir():
        why = "is not a directory"
    elif not (path / "config.json").is_file():
        why = "has no config.json"
    else:
        return path
    _raise(RunDirError, "run", "a run directory (with config.json)", f"'{path}' which {why}")


def make_run_dir(
    base: PathLike | None,
    name_hint: str,
    *,
    config: Mapping[str, Any] | None = None,
    now: datetime | None = None,
) -> Path:
    """Create a fresh directory `base/<name_hint>-YYYYMMDD-HHMMSS` and return its path.

    `base` defaults to ./runs and is created if needed. When the name is taken (two runs in the
    same second) "-2", "-3", ... is appended; the directory is created exclusively, so two
    processes never share one. With `config` its config.json is written, making it a run
    directory at once.
    """
    base = Path("runs") if base is None else _path(base, "base")
    if not isinstance(name_hint, str) or not _NAME_HINT.fullmatch(name_hint):
        fail(
            "name_hint",
            "a name of letters, digits, '.', '_' or '-' (not starting with '.')",
            describe(name_hint),
        )
    if now is not None and not isinstance(now, datetime):
        fail("now", "None or a datetime", describe(now))
    text = None if config is None else _dumps(config, "config")
    if base.exists() and not base.is_dir():
        _raise(RunDirError, "base", "a directory", f"'{base}' which is not a directory")
    base.mkdir(parents=True, exist_ok=True)
    stem = f"{name_hint}-{(now or datetime.now()):%Y%m%d-%H%M%S}"
    suffix = 1
    while True:
        path = base / (stem if suffix == 1 else f"{stem}-{suffix}")
        try:
            path.mkdir()
            break
        except FileExistsError:
            suffix += 1
    if text is not None:
        atomic_write_text(path / "config.json", text)
    return path


@dataclass
class Checkpoint:
    """What `load_checkpoint` returns: the directory it read and its contents."""

    path: Path
    step: int
    model: dict[str, np.ndarray]
    optimizer: dict[str, np.ndarray]
    state: dict[str, Any]
    config: dict[str, Any]


def checkpoint_steps(run_dir: PathLike) -> list[int]:
    """The steps of the complete checkpoints in `run_dir`, ascending (temporaries ignored)."""
    directory = _path(run_dir, "run_dir") / "checkpoints"
    if not directory.is_dir():
        return []
    matches = (_STEP_DIR.fullmatch(p.name) for p in directory.iterdir() if p.is_dir())
    return sorted(int(m.group(1)) for m in matches if m)


def _write_durably(path: Path, data: bytes | None = None, tensors: Any = None) -> None:
    # Inside the temporary checkpoint directory: no per-file rename needed, the directory
    # rename is the atomic step; only make sure the bytes are on disk before it.
    with open(path, "wb") as f:
        if tensors is not None:
            _write_tensors(f, *tensors)
        else:
            assert data is not None
            f.write(data)
        f.flush()
        os.fsync(f.fileno())


def save_checkpoint(
    run_dir: PathLike,
    step: int,
    *,
    model: Mapping[str, np.ndarray],
    optimizer: Mapping[str, np.ndarray],
    state: Mapping[str, Any],
    config: Mapping[str, Any],
    keep: int | None = 3,
) -> Path:
    """Save a checkpoint as `run_dir/checkpoints/step-XXXXXXXX/` and return its path.

    The directory holds model.safetensors, optimizer.safetensors, hashes.json (the SHA-256 of
    both, checked by load_checkpoint), state.json (progress: step,
    epoch, RNG state from numpy_rng_state, best metric...) and config.json. It is built in a
    temporary sibling and renamed into place; then `checkpoints/latest` is rewritten, then the
    top-level model.safetensors and config.json, then old checkpoints are pruned, each step
    atomic. So a crash at any point leaves the previous checkpoint and `latest` usable.

    `keep` is how many checkpoints remain: the new one plus the `keep - 1` others with the
    highest steps (None keeps all). Saving a step that exists replaces it.
    """
    run_dir = _path(run_dir, "run_dir")
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
        fail("step", "a non-negative integer", describe(step))
    step = int(step)
    if keep is not None and (isinstance(keep, bool) or not isinstance(keep, int) or keep < 1):
        fail("keep", "None or a positive integer", describe(keep))
    model_file = _prepare(model, None, "model")
    optimizer_file = _prepare(optimizer, None, "optimizer")
    for value, name in ((state, "state"), (config, "config")):
        if not isinstance(value, Mapping):
            fail(name, "a dict of JSON data", describe(value))
    state_text = _dumps(state, "state").encode("utf-8")
    config_text = _dumps(config, "config").encode("utf-8")

    if run_dir.exists() and not run_dir.is_dir():
        _raise(RunDirError, "run_dir", "a directory", f"'{run_dir}' which is not a directory")
    checkpoints = run_dir / "checkpoints"
    if checkpoints.is_symlink():
        _raise(RunDirError, "run_dir", "a run directory whose checkpoints/ is a directory",
               f"'{checkpoints}', a symbolic link",
               "rnnlab does not write through links.")  # fmt: skip
    checkpoints.mkdir(parents=True, exist_ok=True)
    hashes = {"model.safetensors": _sha256(*model_file),
              "optimizer.safetensors": _sha256(*optimizer_file)}  # fmt: skip
    hashes_text = _dumps({"sha256": hashes}, "hashes").encode("utf-8")
    name = _step_name(step)
    final = checkpoints / name
    tmp = checkpoints / f".tmp-{name}-{secrets.token_hex(4)}"
    tmp.mkdir()
    try:
        _write_durably(tmp / "model.safetensors", tensors=model_file)
        _write_durably(tmp / "optimizer.safetensors", tensors=optimizer_file)
        _write_durably(tmp / "state.json", state_text)
        _write_durably(tmp / "config.json", config_text)
        _write_durably(tmp / "hashes.json", hashes_text)
        _fsync_dir(tmp)
        if final.exists():  # re-saving a step (a resumed run): move the old one aside first
            os.rename(final, checkpoints / f".trash-{name}-{secrets.token_hex(4)}")
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fsync_dir(checkpoints)
    atomic_write_text(checkpoints / "latest", name + "\n")

    with _atomic_file(run_dir / "config.json") as f:
        f.write(config_text)
    with _atomic_file(run_dir / "model.safetensors") as f:
        _write_tensors(f, *model_file)

    if keep is not None:
        older = sorted((s for s in checkpoint_steps(run_dir) if s != step), reverse=True)
        for old in older[keep - 1 :]:
            # Renamed first, so that a crash mid-delete never leaves a partial "step-" dir.
            os.rename(
                checkpoints / _step_name(old),
                checkpoints / f".trash-{_step_name(old)}-{secrets.token_hex(4)}",
            )
    for leftover in checkpoints.iterdir():  # this save's trash and earlier crashed saves'
        if leftover.is_symlink():
            continue
        if leftover.is_dir() and leftover.name.startswith((".tmp-", ".trash-")):
            shutil.rmtree(leftover, ignore_errors=True)
    remove_orphans(checkpoints)
    remove_orphans(run_dir)
    return final


def _sha256(header: bytes, arrays: list[np.ndarray]) -> str:
    """The SHA-256 of the safetensors file `_write_tensors` writes, without writing it."""
    h = hashlib.sha256(header)
    for array in arrays:
        h.update(_raw(array).data)
    return h.hexdigest()


def _check_hash(file: Path, hashes: dict | None) -> None:
    """A weights file must have the SHA-256 its checkpoint recorded (hashes.json): a flipped
    byte in a weight is valid safetensors and would load without a word. Checkpoints saved
    before hashes were recorded have no hashes.json and load unchecked."""
    if hashes is None:
        return
    want = hashes.get(file.name)
    h = hashlib.sha256()
    with open(file, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    if want != h.hexdigest():
        raise CheckpointError(
            f"'{file}' does not match the SHA-256 its checkpoint recorded in hashes.json "
            f"(recorded {str(want)[:16]}..., the file has {h.hexdigest()[:16]}...): the file "
            "changed or is corrupt since it was saved."
        )


def _read_checkpoint_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise CheckpointError(f"The checkpoint file '{path}' is missing (incomplete checkpoint).")
    value = _parse_json(path, CheckpointError)
    if not isinstance(value, dict):
        raise CheckpointError(f"'{path}' must hold a JSON object, not {type(value).__name__}.")
    return value


def load_checkpoint(run_dir: PathLike, step: int | None = None) -> Checkpoint:
    """Load the checkpoint `step` of a run directory, or the latest one by default.

    The latest is the one `checkpoints/latest` names (or, if that file is missing, the highest
    step). A missing, truncated or corrupt file raises CheckpointError naming it.
    """
    run = open_run_dir(run_dir)
    checkpoints = run / "checkpoints"
    steps = checkpoint_steps(run)
    if step is None:
        latest = checkpoints / "latest"
        if latest.is_file():
            data = read_bounded(latest, 4096, "the file", CheckpointError)
            text = _decode(data, latest, CheckpointError, "text").strip()
            match = _STEP_DIR.fullmatch(text)
            if match is None:
                raise CheckpointError(
                    f"'{latest}' must name a checkpoint like 'step-00000100'; "
                    f"it holds {text[:40]!r}."
                )
            if not (checkpoints / text).is_dir():
                raise CheckpointError(
                    f"'{latest}' names {text} but '{checkpoints / text}' does not exist."
                )
            step = int(match.group(1))
        elif steps:
            step = steps[-1]
        else:
            raise CheckpointError(f"The run directory '{run}' has no checkpoints.")
    elif isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step not in steps:
        saved = ", ".join(map(str, steps)) if steps else "none"
        fail("step", f"None or a saved step of '{run}' (saved: {saved})", describe(step))
    step = int(step)
    directory = checkpoints / _step_name(step)
    try:
        tensors, state, config = _read_checkpoint(directory)
    except CheckpointError as e:
        raise CheckpointError(f"{e} {way_back(run, step)}") from None
    return Checkpoint(
        path=directory,
        step=step,
        model=tensors["model"],
        optimizer=tensors["optimizer"],
        state=state,
        config=config,
    )


def _read_checkpoint(directory: Path) -> tuple[dict[str, dict[str, np.ndarray]], dict, dict]:
    """The weights (checked against hashes.json), state and config of one checkpoint."""
    tensors = {}
    hashes = None
    if (directory / "hashes.json").exists():
        record = _read_checkpoint_json(directory / "hashes.json").get("sha256")
        if not isinstance(record, dict):
            raise CheckpointError(
                f"'{directory / 'hashes.json'}' must hold {{\"sha256\": {{FILE: HASH}}}}."
            )
        hashes = record
    for part in ("model", "optimizer"):
        file = directory / f"{part}.safetensors"
        if not file.is_file():
            raise CheckpointError(
                f"The checkpoint file '{file}' is missing (incomplete checkpoint)."
            )
        tensors[part], _ = load_safetensors(file)  # its own errors first: they say more
        _check_hash(file, hashes)
    state = _read_checkpoint_json(directory / "state.json")
    return tensors, state, _read_checkpoint_json(directory / "config.json")


def way_back(run_dir: PathLike, step: int) -> str:
    """What to do when the checkpoint `step` of `run_dir` cannot be used: go back to another
    one (the run then continues from there, drawing what it drew the first time), or, with
    none left, start again. One sentence, for the end of an error message."""
    checkpoints = _path(run_dir, "run_dir") / "checkpoints"
    others = [s for s in checkpoint_steps(run_dir) if s != step]
    if not others:
        return (f"The run has no other checkpoint: remove '{checkpoints}' and `rnnlab train "
                f"--resume {checkpoints.parent}` starts it again from step 0.")  # fmt: skip
    back = max((s for s in others if s < step), default=max(others))
    return (f"To go back to the checkpoint {_step_name(back)}, write {_step_name(back)} into "
            f"'{checkpoints / 'latest'}' and resume: the run continues from there.")  # fmt: skip
