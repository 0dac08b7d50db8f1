"""safetensors files: the `safetensors` package reads and writes them, rnnlab checks around it.

The package does the format (so our files stay byte for byte what PyTorch's loader reads).
What this module adds, and why:

- Before the package sees a file, its header is checked here (`_check_header`), so that a
  damaged or hostile file is refused in one line naming the file and what exactly is wrong:
  the package's own errors say "invalid offset for tensor" at best, and it accepts some of
  what rnnlab refuses (BOOL bytes other than 0 and 1, keys beside dtype/shape/data_offsets).
- Arguments are checked before anything is written, and arrays reach the package
  C-contiguous and little-endian: it copies raw memory from the pointer it is given.
- Files are written atomically (`files.atomic_path`) and made durable.
- `save_weights` puts the SHA-256 of the file's content in its own metadata, which
  `load_weights` checks: a flipped byte in a weight is still valid safetensors.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.numpy
from safetensors import SafetensorError, safe_open

from rnnlab._checks import (
    NotRegularFile,
    available_memory,
    describe,
    describe_bytes,
    fail,
    open_file,
)
from rnnlab.io.files import PathLike, as_path, atomic_path, fsync_file, refuse


class CheckpointError(ValueError):
    """A safetensors file or a checkpoint is missing, truncated or corrupt."""


# The format's dtype codes that NumPy has a type for, in the order of the format's enum.
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
_CODE = {(dt.kind, dt.itemsize): code for code, dt in _DTYPES.items()}
_NO_NUMPY_TYPE = ("BF16", "F8_E5M2", "F8_E4M3", "F8_E8M0", "F6_E2M3", "F6_E3M2", "F4")
_HEADER_LIMIT = 100_000_000  # the package's own bound on the header
_MAX_NDIM = 64  # NumPy's NPY_MAXDIMS
_MAX_BYTES = 2**63 - 1  # NumPy's bound on an array's size in bytes (npy_intp), zero dims aside
_HASH_KEY = "sha256"  # save_weights' entry in a file's __metadata__
_STEP_KEY = "step"  # and the training step of its weights, where given

Arrays = dict[str, np.ndarray]


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def checked(tensors: object, metadata: object, name: str) -> tuple[Arrays, dict[str, str] | None]:
    """`tensors` as the package needs them (C-contiguous, little-endian, a supported dtype)
    and `metadata`, after checking both; `name` is the argument errors name."""
    if not isinstance(tensors, Mapping):
        fail(name, "a dict of str -> NumPy array", describe(tensors))
    assert isinstance(tensors, Mapping)
    arrays = {}
    for key, value in tensors.items():
        if not isinstance(key, str) or key == "__metadata__":
            fail(name, "a dict with str keys other than '__metadata__'", f"the key {key!r}")
        if not _is_utf8(key):
            fail(name, "a dict whose keys are text a file can hold (UTF-8)", f"the key {key!r}",
                 _SURROGATE_HINT)
        if isinstance(value, np.generic):  # a NumPy scalar is a 0-d tensor
            value = np.asarray(value)
        if not isinstance(value, np.ndarray):
            fail(f"{name}[{key!r}]", "a NumPy array", describe(value))
        masked = int(np.count_nonzero(value.mask)) if isinstance(value, np.ma.MaskedArray) else 0
        if masked:  # (a file holds no mask: it was dropped, and the values under it were
            # written as if they were data, without a word)
            fail(f"{name}[{key!r}]", "a NumPy array without masked entries (a safetensors "
                 "file holds no mask)", f"a masked array with {masked} masked "
                 f"entr{'y' if masked == 1 else 'ies'}",
                 "Write value.filled(FILL) to store a value of your choice in their place, "
                 "or np.asarray(value) to store the data under the mask as it is.")
        code = _CODE.get((value.dtype.kind, value.dtype.itemsize))
        if code is None:
            supported = ", ".join(str(dt.newbyteorder("=")) for dt in _DTYPES.values())
            refuse(ValueError, f"{name}[{key!r}]", f"an array of dtype {supported}",
                   f"dtype {value.dtype}")  # fmt: skip
        # Not ascontiguousarray: it turns a 0-d array into shape (1,).
        arrays[key] = np.asarray(value, dtype=_DTYPES[code], order="C")
    if metadata is not None:
        if not isinstance(metadata, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
        ):
            fail("metadata", "None or a dict of str -> str", describe(metadata))
        for text in (t for item in metadata.items() for t in item):
            if not _is_utf8(text):
                fail("metadata", "a dict of text a file can hold (UTF-8)", _short(text),
                     _SURROGATE_HINT)
    assert metadata is None or isinstance(metadata, Mapping)
    return arrays, None if metadata is None else dict(metadata)


_SURROGATE_HINT = ("It holds a lone surrogate, which no UTF-8 text has (an undecodable byte of a "
                   "file name, as os.fsdecode gives it?).")


def _is_utf8(text: str) -> bool:
    """Whether `text` can be written in a header (UTF-8 JSON): a lone surrogate cannot, and
    the package said so with a bare UnicodeEncodeError naming no argument."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def write(path: Path, arrays: Arrays, metadata: dict[str, str] | None = None, *,
          name: Path | None = None) -> None:  # fmt: skip
    """Write checked `arrays` to `path` and put them on disk (durable, not atomic).

    The package puts a file of its own, private to the user, in place of `path`; it gets the
    mode an ordinary `open` gives (what the umask allows), as rnnlab's other files have.
    `name`: the file errors name, where `path` is a temporary that will become it.
    """
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o666))
    mode = os.stat(path).st_mode & 0o777
    try:
        if metadata is not None and len(metadata) > 1:  # (bytes of a fixed order, below)
            data = _metadata_sorted(safetensors.numpy.save(arrays, metadata=metadata))
            with open(path, "wb") as f:
                f.write(data)
        else:
            safetensors.numpy.save_file(arrays, path, metadata=metadata)
    except safetensors.SafetensorError as e:  # (its I/O errors: a full disk, say)
        raise OSError(f"'{name or path}' could not be written: {e}") from None
    os.chmod(path, mode)
    fsync_file(path)


def _metadata_sorted(data: bytes) -> bytes:
    """`data` (a safetensors encoding) with its __metadata__ entries in sorted order. The
    package writes them from a hash map, in an order that changes from call to call: the
    same weights with the same step and SHA-256 made files of other bytes (a resumed run's
    model.safetensors against the uninterrupted run's). Done only where the header reads
    back to its own bytes (compact JSON, the entries permuted in place: the length, the
    padding and the tensors' offsets stay); any other layout is left as written."""
    n = int.from_bytes(data[:8], "little")
    raw = data[8 : 8 + n]
    text = raw.decode("utf-8").rstrip(" ")
    header = json.loads(text)
    meta = header.get("__metadata__")
    compact = {"separators": (",", ":"), "ensure_ascii": False}
    if not isinstance(meta, dict) or json.dumps(header, **compact) != text:  # type: ignore[arg-type]
        return data
    header["__metadata__"] = dict(sorted(meta.items()))
    ordered = json.dumps(header, **compact).encode("utf-8")  # type: ignore[arg-type]
    return data[:8] + ordered + raw[len(ordered) :] + data[8 + n :]


def save(path: Path, arrays: Arrays, metadata: dict[str, str] | None = None) -> None:
    """Write checked `arrays` to `path` atomically."""
    with atomic_path(path) as tmp:
        write(tmp, arrays, metadata, name=path)


def safetensors_bytes(
    tensors: Mapping[str, np.ndarray], metadata: Mapping[str, str] | None = None
) -> bytes:
    """The safetensors encoding of `tensors` (and string `metadata`), as bytes."""
    arrays, meta = checked(tensors, metadata, "tensors")
    return safetensors.numpy.save(arrays, metadata=meta)


def save_safetensors(
    path: PathLike,
    tensors: Mapping[str, np.ndarray],
    metadata: Mapping[str, str] | None = None,
) -> None:
    """Write `tensors` to a safetensors file atomically."""
    path = as_path(path, "path")
    save(path, *checked(tensors, metadata, "tensors"))


def save_weights(path: PathLike, tensors: Mapping[str, np.ndarray], *,
                 step: int | None = None) -> None:  # fmt: skip
    """`save_safetensors` with the SHA-256 of the file's content in its own metadata
    (`__metadata__["sha256"]`: the hash of the file as written without that entry), which
    `load_weights` checks. One file carries its hash, so one atomic rename writes both: a crash
    leaves the old file with its hash or the new one with its own (a hashes.json beside it
    would be a second write, and a crash between the two would make a sound file look
    corrupt). For weights outside a checkpoint (a run's best.safetensors); `step`, the
    training step the weights are of, is recorded too (`__metadata__["step"]`)."""
    path = as_path(path, "path")
    arrays, _ = checked(tensors, None, "tensors")
    if step is not None and (isinstance(step, bool) or not isinstance(step, (int, np.integer))
                             or not 0 <= step <= MAX_RECORDED_STEP):  # fmt: skip
        fail("step", f"None or an integer from 0 to {MAX_RECORDED_STEP:,} (what a weights "
             "file's metadata records and load_weights reads back)", describe(step))
    extra = None if step is None else {_STEP_KEY: str(int(step))}
    digest = hashlib.sha256(safetensors.numpy.save(arrays, metadata=extra)).hexdigest()
    save(path, arrays, {**(extra or {}), _HASH_KEY: digest})


def load_weights(path: PathLike, *, step: int | None = None) -> dict[str, np.ndarray]:
    """The tensors of a file `save_weights` wrote, checked against the SHA-256 in its
    metadata (CheckpointError naming the file when they differ). A file without the hash
    (written before rnnlab recorded one, or by another program) loads unchecked. `step`: the
    step the weights must be of, where the file records one (a best.safetensors written
    after the checkpoint a run resumed from holds weights of a continuation since dropped)."""
    return load_weights_and_step(path, step=step)[0]


def load_weights_and_step(path: PathLike, *, step: int | None = None
                          ) -> tuple[dict[str, np.ndarray], int | None]:  # fmt: skip
    """`load_weights`, and the step the file records (None where it records none)."""
    path = as_path(path, "path")
    # (compared as text with the file's: 5.0, True or "5" were taken for steps, and a file of
    # step 5 was said to hold "the weights of step 5, not of step 5.0")
    if step is not None and (isinstance(step, bool) or not isinstance(step, (int, np.integer))
                             or step < 0):  # fmt: skip
        fail("step", "None or an integer >= 0 (the step the weights must be of)", describe(step))
    tensors, metadata = load_safetensors(path)
    want = metadata.pop(_HASH_KEY, None)
    if want is not None:
        got = hashlib.sha256(safetensors_bytes(tensors, metadata or None)).hexdigest()
        if want != got:
            raise CheckpointError(
                f"'{path}' does not match the SHA-256 recorded in its metadata (recorded "
                f"{want[:16]}..., the content has {got[:16]}...): the file changed or is "
                "corrupt since it was saved."
            )
    recorded = _recorded_step(path, metadata.get(_STEP_KEY))
    if step is not None and recorded is not None and str(recorded) != str(step):
        raise CheckpointError(f"'{path}' holds the weights of step {recorded}, not of step "
                              f"{step}.")  # fmt: skip
    return tensors, recorded


MAX_RECORDED_STEP = 10**18 - 1
"""The largest step a weights file records: 18 decimal digits, which _recorded_step reads
back (save_weights refuses a larger one, which it wrote and load_weights then refused)."""


def _recorded_step(path: Path, text: str | None) -> int | None:
    """The step a file's metadata records, as save_weights writes it (decimal ASCII digits);
    None where it records none. Anything else is refused naming the file: str.isdigit took
    '²' (then int() failed, naming no file) and 5000 digits (int() refused them too), and
    'abc' was said as a file from before rnnlab recorded steps."""
    if text is None:
        return None
    if re.fullmatch(r"0|[1-9][0-9]{0,17}", text) is None:  # (MAX_RECORDED_STEP's digits)
        raise CheckpointError(f"'{path}' records the step {_short(text)} in its metadata; "
                              "expected a non-negative integer in decimal digits, as rnnlab "
                              "writes it (the file was edited or written by another "
                              "program).")  # fmt: skip
    return int(text)


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


def _header_length(source: str, prefix: bytes, size: int) -> int:
    """Header length N from the first 8 bytes of a file of `size` bytes, checked before
    anything of that length is read (a garbage length would be an allocation of up to 2^64
    bytes) and said as a truncated file, which is what a short one usually is. A length past
    the format's bound in a file long enough to hold it is said as that: it was said as
    "N bytes but only M follow (truncated file?)" with M larger than N."""
    if size == 0:
        raise CheckpointError(f"{source} is not a valid safetensors file: it is empty (0 bytes).")
    if size < 8:
        raise CheckpointError(
            f"{source} is not a valid safetensors file: it has {size} bytes, "
            "fewer than the 8-byte header length (truncated file?)."
        )
    n = int.from_bytes(prefix[:8], "little")
    if _HEADER_LIMIT < n <= size - 8:
        raise CheckpointError(
            f"{source} is not a valid safetensors file: the header length says {n:,} bytes, "
            f"more than the format allows ({_HEADER_LIMIT:,})."
        )
    if n > size - 8:
        raise CheckpointError(
            f"{source} is not a valid safetensors file: the header length "
            f"says {n} bytes but only {size - 8} follow (truncated file?)."
        )
    return n


def _check_header(source: str, header: bytes, data_size: int) -> tuple[list[str], dict[str, str]]:
    """The tensor names in header order and the metadata, after checking the header against
    a data section of `data_size` bytes: every tensor inside it, no overlap, no hole, nothing
    after the last. All that the package checks too, said so that the file can be mended."""

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
                raise bad(f"the key {_short(key)} appears twice in the header")
            seen[key] = value
        return seen

    try:
        parsed = json.loads(text, object_pairs_hook=no_duplicates)
    except json.JSONDecodeError as e:
        raise bad(f"the header is not valid JSON ({e.msg} at column {e.colno})") from None
    except RecursionError:
        raise bad("the header is nested too deeply") from None
    except CheckpointError:  # (no_duplicates': said as it is, not as JSON's)
        raise
    except ValueError as e:  # (an integer of more digits than Python converts)
        if "integer string conversion" in str(e):
            raise bad("the header holds an integer of more than 4300 digits") from None
        raise bad(f"the header is not valid JSON ({e})") from None
    if not isinstance(parsed, dict):
        raise bad(f"the header must be a JSON object, not {type(parsed).__name__}")

    metadata = parsed.pop("__metadata__", None)
    metadata = {} if metadata is None else metadata
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise bad("__metadata__ must map strings to strings")

    def is_count(v: object) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and v >= 0

    spans = []
    for name, info in parsed.items():
        keys = {"dtype", "shape", "data_offsets"}
        if not isinstance(info, dict) or set(info) != keys:
            found = ", ".join(info) if isinstance(info, dict) else type(info).__name__
            found = found if len(found) <= 80 else found[:77] + "..."
            raise bad(
                f"tensor {_short(name)} must have the keys dtype, shape, data_offsets; "
                f"found {found}"
            )
        code = info["dtype"]
        if not isinstance(code, str) or code not in _DTYPES:
            why = (" (NumPy has no such type)" if code in _NO_NUMPY_TYPE else
                   " (complex numbers: rnnlab's tensors are real)" if code == "C64" else "")
            raise bad(
                f"tensor {_short(name)} has the unknown dtype {_short(code)}{why}; "
                f"supported: {', '.join(_DTYPES)}"
            )
        shape, offsets = info["shape"], info["data_offsets"]
        if not isinstance(shape, list) or not all(is_count(n) for n in shape):
            raise bad(
                f"tensor {_short(name)} has shape {_short(shape)}, not a list of non-negative "
                "integers"
            )
        if len(shape) > _MAX_NDIM:
            raise bad(
                f"tensor {_short(name)} has {len(shape)} dimensions; NumPy arrays have at most "
                f"{_MAX_NDIM}"
            )
        itemsize = _DTYPES[code].itemsize
        if any(n > _MAX_BYTES for n in shape) or (
            math.prod(n for n in shape if n) * itemsize > _MAX_BYTES
        ):  # (each dimension bounded first, the product stays small enough to compute)
            raise bad(
                f"tensor {_short(name)} of shape {_short(shape)} and dtype {code} is too big for "
                f"an array: its non-zero dimensions take more than 2**63-1 bytes"
            )
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(is_count(n) for n in offsets)
            or offsets[0] > offsets[1]
        ):
            raise bad(
                f"tensor {_short(name)} has data_offsets {_short(offsets)}, "
                "expected [begin, end] with 0 <= begin <= end"
            )
        size = math.prod(shape) * itemsize
        begin, end = offsets
        if end - begin != size:
            raise bad(
                f"tensor {_short(name)} of shape {shape} and dtype {code} needs {size} bytes "
                f"but its data_offsets {_short(offsets)} span {_short(end - begin)}"
            )
        if end > data_size:
            raise bad(
                f"tensor {_short(name)} ends at byte {_short(end)} of the data but the data has "
                "only "
                f"{data_size} bytes (truncated file?)"
            )
        spans.append((begin, end, name))

    position, previous = 0, None
    for begin, end, name in sorted(spans):
        if begin < position:
            assert previous is not None
            raise bad(
                f"tensors {_short(previous[2])} and {_short(name)} overlap (bytes "
                f"[{previous[0]}, {previous[1]}) and [{begin}, {end}))"
            )
        if begin > position:
            raise bad(
                f"{begin - position} bytes before tensor {_short(name)} belong to "
                "no tensor (the data must be contiguous)"
            )
        position, previous = end, (begin, end, name)
    if position != data_size:
        raise bad(f"{data_size - position} bytes after the last tensor belong to no tensor")
    return list(parsed), metadata


def _check_memory(source: str, nbytes: int) -> None:
    """The tensors are read into memory whole: a file whose data outgrows the memory
    available is refused before any of it is read. Its header fits its size (checked), but
    the size may be a lie too: a sparse file of a terabyte costs no disk, and its copy ended
    in MemoryError or the OOM killer (which may pick another process)."""
    if nbytes < 1 << 28:  # (not worth a look at /proc/meminfo)
        return
    have = available_memory()
    if have is not None and nbytes > have:
        raise CheckpointError(
            f"{source} holds {describe_bytes(nbytes)} of tensors, more than the memory "
            f"available ({describe_bytes(have)}): it is not read."
        )


def _short(value: object) -> str:
    """repr(value) cut to a line: a hostile header's values can be megabytes long, and an int
    of more than 4300 digits has no repr at all."""
    try:
        text = repr(value)
    except (ValueError, RecursionError):
        text = f"a {type(value).__name__} too large to show"
    return text if len(text) <= 80 else text[:77] + "..."


def _check_bools(source: str, tensors: Arrays) -> None:
    """The format allows only 0 and 1 in a BOOL tensor; NumPy (and the package) would accept
    any byte as a bool, which then misbehaves."""
    for name, array in tensors.items():
        if array.dtype.kind == "b" and array.size and array.view(np.uint8).max() > 1:
            raise CheckpointError(
                f"{source} is not a valid safetensors file: the BOOL tensor "
                f"{_short(name)} holds bytes other than 0 and 1."
            )


def parse_safetensors(
    data: bytes | bytearray | memoryview,
) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Decode safetensors bytes into (tensors, metadata); the arrays are fresh, writable copies."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        fail("data", "bytes", describe(data))
    source = "the data"
    # (bytes: what the package takes; a strided memoryview too, which cast() refused with
    # a TypeError; bytes of bytes are the same object, not a copy)
    raw = bytes(data)
    n = _header_length(source, raw[:8], len(raw))
    names, metadata = _check_header(source, raw[8 : 8 + n], len(raw) - 8 - n)
    _check_memory(source, len(raw) - 8 - n)
    try:
        loaded = safetensors.numpy.load(raw)
    except (SafetensorError, ValueError) as e:  # (ValueError: NumPy's, after the package)
        raise CheckpointError(f"{source} is not a valid safetensors file: {e}.") from None
    tensors = {name: loaded[name] for name in names}
    _check_bools(source, tensors)
    return tensors, metadata


def load_safetensors(path: PathLike) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Read a safetensors file into (tensors, metadata), in the order of the header.

    Each array is a fresh copy: writable, C-contiguous, native byte order and independent of
    the file. Anything inconsistent raises CheckpointError naming the file and the problem.
    """
    path = as_path(path, "path")
    source = f"'{path}'"
    try:  # (a FIFO is refused, not waited on for ever: open_file opens without blocking)
        f = open_file(path)
    except FileNotFoundError:
        raise CheckpointError(f"Cannot read {source}: the file does not exist.") from None
    except IsADirectoryError:
        raise CheckpointError(f"Cannot read {source}: it is a directory.") from None
    except NotRegularFile as e:
        raise CheckpointError(f"Cannot read {source}: it is not a regular file ({e.kind})."
                              ) from None  # fmt: skip
    except OSError as e:  # (permission denied, a loop of links, ...)
        raise CheckpointError(f"Cannot read {source}: {e.strerror or e}.") from None
    with f:
        size = os.fstat(f.fileno()).st_size
        n = _header_length(source, f.read(8), size)
        names, metadata = _check_header(source, f.read(n), size - 8 - n)
    _check_memory(source, size - 8 - n)
    try:
        with safe_open(path, framework="numpy") as file:
            tensors = {name: file.get_tensor(name) for name in names}
    except (SafetensorError, ValueError) as e:  # changed since it was checked, or NumPy's
        raise CheckpointError(f"{source} is not a valid safetensors file: {e}.") from None
    _check_bools(source, tensors)
    return tensors, metadata
