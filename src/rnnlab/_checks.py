"""Validation at the door: every public entry point checks its arguments here.

Messages follow one shape: "`name` must be <what was expected>; got <what came> instead."
Internals trust their callers and never re-check.
"""

from __future__ import annotations

import math
import os
import stat
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import BinaryIO, NoReturn

import numpy as np


def a(noun: str) -> str:
    """The noun with its indefinite article: "an adding run", "a copy run"."""
    return ("an " if noun[:1].lower() in "aeiou" else "a ") + noun


def describe(value: object) -> str:
    """A short description of what came, for error messages."""
    if isinstance(value, np.ndarray):
        kind = "an array" if type(value) is np.ndarray else f"a {_class_name(value)}"
        return f"{kind} of shape {value.shape} and dtype {value.dtype}"
    if isinstance(value, (list, tuple)):
        return f"a {type(value).__name__} of length {len(value)}"
    if value is None:
        return "None"
    if type(value).__repr__ is object.__repr__:  # (<... object at 0x7f...>: an address)
        return f"{a(type(value).__name__)} ({type(value).__module__})"
    if isinstance(value, int) and value.bit_length() > 10_000:  # (repr refuses > 4300 digits)
        digits = int(value.bit_length() * 0.30103) + 1
        return f"an integer of about {digits:,} digits ({type(value).__name__})"
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} ({type(value).__name__})"


def _class_name(value: object) -> str:
    """The class of `value` as code names it: "numpy.matrix", "numpy.ma.MaskedArray"."""
    return f"{type(value).__module__}.{type(value).__qualname__}"


ELEMENTWISE = (np.ndarray, np.memmap)
"""The array classes whose arithmetic is NumPy's own, element by element (a memmap is a
file's bytes under an ndarray's arithmetic)."""


def plain_array(value: object, name: str, masked: str) -> None:
    """Refuse an ndarray subclass other than a memmap where code reads values, not masks or
    matrices: a masked array's min, all and range checks skip its masked entries (a masked
    length or target id was read silently as something else), np.matrix keeps 2-D through
    every operation. `masked`: what a masked array's owner should give instead."""
    if isinstance(value, np.ndarray) and type(value) not in ELEMENTWISE:
        fail(name, "a plain NumPy array (numpy.ndarray)", describe(value),
             masked if isinstance(value, np.ma.MaskedArray)
             else "np.asarray(...) of it is one, with the same values.")  # fmt: skip


def elementwise(value: np.ndarray, name: str) -> None:
    """Refuse an ndarray subclass whose arithmetic is not element by element: np.matrix's `*`
    is a matrix product (Adam's and RMSprop's g·g then squared the matrix, silently) and its
    every result 2-D (the compiled Adam step failed inside numba), a masked array's updates
    skip its masked elements. An array written in place by code made for arrays (an
    optimizer's step) would compute something else without a word."""
    if type(value) not in ELEMENTWISE:
        fail(name, "a plain NumPy array (numpy.ndarray: arithmetic element by element)",
             describe(value), "np.asarray(...) of it is one, with the same values.")  # fmt: skip


class NonFiniteError(ValueError):
    """A value computed inside a model, not given by its caller, is NaN or inf: the model
    has diverged (rnnlab.train stops the run with the step and a remedy)."""


def all_finite(value: np.ndarray) -> bool:
    """Whether every element of a float array is finite (one fast pass in the common case)."""
    return _sum_is_finite(value) or bool(np.all(np.isfinite(value)))


def fail(name: str, expected: str, got: str, hint: str = "") -> NoReturn:
    message = f"`{name}` must be {expected}; got {got} instead."
    if hint:
        message += " " + hint
    raise ValueError(message)


def _sum_is_finite(value: np.ndarray) -> bool:
    """Whether the sum of `value` is finite (a NaN or ±inf anywhere makes it NaN or ±inf).
    Summed as a matrix-vector product with a vector of ones where the rows suit: BLAS reads
    the array faster than NumPy's pairwise sum (docs/design.md, "Measurements behind small
    choices")."""
    with np.errstate(over="ignore", invalid="ignore"):
        n = value.shape[-1] if value.ndim >= 2 else 0
        if n >= 16 and value.dtype in (np.float32, np.float64) and value.flags.c_contiguous:
            total = (value.reshape(-1, n) @ np.ones(n, value.dtype)).sum()
        else:
            total = value.sum()
        return bool(np.isfinite(total))


_MASK_NOT_READ = ("Its mask is not read here (the values under it were used, or NumPy failed "
                  "inside): pass np.asarray(...) of it, and a batch's padded steps as `lengths` "
                  "or `mask`.")


def unicode_text(text: str, name: str, where: str = "") -> None:
    """Refuse a str that is not Unicode text: a byte of the command line that is not UTF-8
    reaches Python as a lone surrogate (surrogateescape: U+DC80 + the byte), said as that
    byte; any other lone surrogate by its code point. `where` follows "at character N" (" of
    line 3 of F")."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        bad = ord(text[e.start])
        what = (f"the byte {bad - 0xDC00:#04x}, which is not UTF-8," if 0xDC80 <= bad <= 0xDCFF
                else f"the lone surrogate U+{bad:04X}")  # fmt: skip
        fail(name, "valid Unicode text", f"{what} at character {e.start}{where}")


def listed(value: list[object] | tuple[object, ...], name: str) -> np.ndarray:
    """A list or tuple as its array; nested lists of unequal lengths refused by name (NumPy's
    "setting an array element with a sequence" named no argument)."""
    try:
        return np.asarray(value)
    except ValueError:  # (inhomogeneous shape)
        fail(name, "an array, or nested lists of equal lengths",
             f"ragged nested lists ({describe(value)})")  # fmt: skip


def float_array(
    value: object,
    name: str,
    *,
    ndim: int | Sequence[int] | None = None,
    shape: Sequence[int | None] | None = None,
    finite: bool = True,
    dtype: np.dtype | type | None = None,
    ids_hint: bool = True,
) -> np.ndarray:
    """Check that `value` is a floating-point array of the expected rank/shape, and finite.

    `shape` may hold None for free axes. If `dtype` is given the array is converted to it
    (a copy only when needed). Integer and boolean arrays are refused: a float layer fed
    token ids is almost always a mistake (use an Embedding), which the error says unless
    `ids_hint` is False (a loss's targets or logits are no layer's input).
    """
    if not isinstance(value, np.ndarray):
        if isinstance(value, (list, tuple)):
            value = listed(value, name)
        else:
            fail(name, "a NumPy array of floats", describe(value))
    assert isinstance(value, np.ndarray)
    plain_array(value, name, _MASK_NOT_READ)
    if value.dtype.kind != "f":
        hint = ("Token ids go through an Embedding first."
                if ids_hint and value.dtype.kind in "iu" else "")  # fmt: skip
        fail(name, "a floating-point array (float32 or float64)", f"dtype {value.dtype}", hint)
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if value.ndim not in allowed:
            want = " or ".join(str(n) for n in allowed)
            fail(name, f"an array with {want} dimensions", f"shape {value.shape}")
    if shape is not None:
        if value.ndim != len(shape) or any(
            want is not None and want != got for want, got in zip(shape, value.shape, strict=True)
        ):
            want = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
            fail(name, f"an array of shape {want}", f"shape {value.shape}")
    # One pass for the common case: a sum of finite values is finite unless it overflows, and
    # only then (or for a real NaN/inf) are the elements looked at one by one.
    if finite and not _sum_is_finite(value) and not np.all(np.isfinite(value)):
        bad = np.argwhere(~np.isfinite(value))[0]
        fail(
            name,
            "finite (no NaN or inf)",
            f"{value[tuple(bad)]} at index {tuple(int(i) for i in bad)}",
        )
    if dtype is not None and value.dtype != dtype:
        if finite and np.dtype(dtype).kind == "f" and np.dtype(dtype).itemsize < value.itemsize:
            return _narrowed(value, np.dtype(dtype), name)
        value = value.astype(dtype)
    return value


def _narrowed(value: np.ndarray, dtype: np.dtype, name: str) -> np.ndarray:
    """A finite `value` cast to the narrower float `dtype`, refusing a value beyond its range:
    the cast made a float64 state or gradient of 1e300 inf in a float32 layer, after the
    check for finite values had passed it, and the pass NaN with only NumPy's
    RuntimeWarning."""
    with np.errstate(over="ignore"):
        cast = value.astype(dtype)
    if not _sum_is_finite(cast) and not np.all(np.isfinite(cast)):
        at = tuple(int(i) for i in np.argwhere(~np.isfinite(cast))[0])
        big = float(np.finfo(dtype).max)
        fail(name, f"within {dtype}'s range (|x| ≤ {big:.3g}), as it is cast to {dtype}",
             f"{float(value[at]):g} at index {at}")  # fmt: skip
    return cast


F32_MAX = float(np.finfo(np.float32).max)


def fits_float32(model: object, export: str) -> None:
    """Refuse a float64 model with a finite weight (or a constant initial state) beyond
    float32's range: the float32 exports (ONNX, PyTorch, Keras) would hold it as inf, and
    give inf or NaN where the model does not. An infinite one (a class masked off by a bias
    of −inf) is float32's as it is. `model`: a Sequential (its `modules`) or one module."""
    modules = getattr(model, "modules", None)
    values: dict[str, object] = dict(getattr(model, "params", {}))
    for i, m in enumerate(modules if isinstance(modules, list) else [model]):
        start = getattr(m, "initial_state", None)
        if isinstance(start, (int, float)) and not isinstance(start, bool):
            values["initial_state" + (f" of module {i}" if modules is not None else "")] = start
    for key, value in values.items():
        a = np.asarray(value)
        if a.dtype.kind != "f" or a.dtype == np.float32:
            continue
        over = np.isfinite(a) & (np.abs(a) > F32_MAX)  # (±inf is float32's too: exported)
        if over.any():
            at = tuple(int(i) for i in np.argwhere(over)[0])
            fail("model", f"a model whose weights float32 holds (|w| ≤ {F32_MAX:.3g}: the "
                 f"{export} export is float32)",
                 f"{float(a[at]):g} in {key}" + (f" at index {at}" if at else ""))  # fmt: skip


def finite_weights(model: object, export: str) -> None:
    """Refuse weights the float32 file of the `export` ("ONNX", "PyTorch", "Keras") would
    hold wrong: a NaN, an infinite weight other than a bias's, or a float64 value past
    float32's range (fits_float32). The one check of the three exporters (rnnlab.onnx,
    rnnlab.export and rnnlab.keras): loading a run refuses NaN and inf already, but a model
    trained in Python whose weights diverged was written as a file computing NaN, without a
    word. An infinite bias stays exportable: a bias of −inf masks a class off (or shuts a
    gate), and computes as it does in rnnlab; an infinite matrix or embedding entry makes NaN
    of 0·inf. `model`: a Sequential (its `modules`) or one module."""
    modules = getattr(model, "modules", None)
    for i, m in enumerate(modules if isinstance(modules, list) else [model]):
        for name, value in getattr(m, "params", {}).items():
            a = np.asarray(value)
            if a.dtype.kind != "f" or all_finite(a):
                continue
            bad = np.isnan(a) if name.startswith("bias") else ~np.isfinite(a)
            if not bad.any():
                continue
            at = tuple(int(j) for j in np.argwhere(bad)[0])
            kind = type(m).__name__ + (f", {type(m.cell).__name__}" if hasattr(m, "cell") else "")
            where = f"module {i} ({kind})" if modules is not None else f"the {kind}"
            fail(
                "model",
                f"a model with finite weights for the {export} export (no NaN; inf only in a "
                "bias)",
                f"{float(a[at])} in parameter {name!r} of {where}"
                + (f" at index {at}" if at else ""),
                "Its weights have diverged: export an earlier checkpoint's (or train again "
                "with a lower learning rate or gradient clipping).",
            )
    fits_float32(model, export)


def int_array(value: object, name: str, *, ndim: int | None = None) -> np.ndarray:
    if isinstance(value, (list, tuple)):
        value = listed(value, name)
    if not isinstance(value, np.ndarray) or value.dtype.kind not in "iu":
        fail(name, "an array of integers", describe(value))
    assert isinstance(value, np.ndarray)
    plain_array(value, name, _MASK_NOT_READ)
    if ndim is not None and value.ndim != ndim:
        fail(name, f"an array with {ndim} dimensions", f"shape {value.shape}")
    return value


def untied(arrays: Mapping[str, object], name: str,
           what: str = "arrays of their own, one for each entry",
           way_out: str = "Give each its own copy (np.copy).") -> None:
    """Refuse two entries of `arrays` (parameters by name) that share memory: an optimizer
    keeps one state an entry, so a weight held twice (one module used twice, or one array
    given to two modules) would take two steps a step with its Adam moments split in two,
    and clipping by the global norm would count its gradients apart (‖g₁‖² + ‖g₂‖², not
    ‖g₁ + g₂‖²): silently not the tied model's training. rnnlab does not tie weights.
    Elements shared, not bounds: np.may_share_memory compares only the bounds, so the two
    column blocks of one matrix (w[:, :3], w[:, 3:]: no element in common, each stepped
    rightly) were refused; its cheap answer only settles the common no."""
    items = [(k, v) for k, v in arrays.items() if isinstance(v, np.ndarray) and v.size]
    for i, (k1, v1) in enumerate(items):
        for k2, v2 in items[i + 1 :]:
            if np.may_share_memory(v1, v2) and _shares_elements(v1, v2):
                fail(name, f"{what} (rnnlab does not tie weights: each would be stepped on "
                     "its own, its optimizer state and its share of the gradient's norm apart)",
                     f"{k1!r} and {k2!r} sharing memory", way_out)  # fmt: skip


def _shares_elements(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether `a` and `b` have an element in common, exactly (NumPy's search grows with the
    number of axes, a few for a parameter; asked only where the bounds overlap)."""
    return bool(np.shares_memory(a, b))


def id_sequence(value: object, name: str, what: str = "a 1-D array of integer ids") -> np.ndarray:
    """A 1-D array of integer ids (a list or tuple becomes one; an empty one holds int64, not
    NumPy's float64 for []); the range is the caller's to check."""
    if isinstance(value, (list, tuple)):
        value = np.asarray(value) if len(value) else np.zeros(0, np.int64)
    if not isinstance(value, np.ndarray) or value.dtype.kind not in "iu" or value.ndim != 1:
        fail(name, what, describe(value))
    return value


def token_ids(
    value: object, name: str, vocab: int | None, *, ndim: int | None = None
) -> np.ndarray:
    """Integer ids in [0, vocab): an embedding's lookup would raise NumPy's IndexError past
    the end, and silently read from the end for a negative id. `vocab` None: not known
    (an ONNX file exported before it was recorded), so only negative ids are refused."""
    ids = int_array(value, name, ndim=ndim)
    if ids.size and (ids.min() < 0 or (vocab is not None and ids.max() >= vocab)):
        bad = (ids < 0) if vocab is None else (ids < 0) | (ids >= vocab)
        fail(name, f"token ids in [0, {vocab if vocab is not None else 'the vocabulary size'})",
             f"the id {int(ids[bad][0])}")  # fmt: skip
    return ids


def positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        fail(name, "a positive integer", describe(value))
    return int(value)


def seed(value: object, name: str) -> int:
    """A seed for np.random.default_rng: an integer ≥ 0 (NumPy's own refusals of -1 or 1.5
    name its SeedSequence)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        fail(name, "a non-negative integer (a seed)", describe(value))
    return int(value)


def probability(value: object, name: str, *, allow_one: bool = False) -> float:
    upper = "1]" if allow_one else "1)"
    if (
        isinstance(value, bool)  # (np.int64(0) is 0, as 0 is: it was refused as not in [0, 1))
        or not isinstance(value, (int, float, np.integer, np.floating))
        or not (0.0 <= as_float(value) <= 1.0)
        or (not allow_one and as_float(value) == 1.0)
    ):
        fail(name, f"a number in [0, {upper}", describe(value))
    return float(value)


def choice(value: object, name: str, options: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in options:
        fail(name, "one of " + ", ".join(repr(o) for o in options), describe(value))
    return value


def finite_float(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        fail(name, "a finite number", describe(value))
    if not math.isfinite(as_float(value)):
        fail(name, "a finite number", describe(value))
    return float(value)


def as_float(value: int | float | np.integer | np.floating) -> float:
    """float(value), but ±inf for an integer too large for a float: float(10**400) raises
    OverflowError, a traceback where a range check that then refuses it says what came."""
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


def boolean(value: object, name: str) -> bool:
    """True or False (NumPy's bool too); a string such as "false" is refused, not truthy."""
    if not isinstance(value, (bool, np.bool_)):
        fail(name, "True or False", describe(value))
    return bool(value)


def booleans(**flags: object) -> None:
    """Each keyword True or False (`boolean`): a backward pass's switches, where a truthy
    string would silently write over the caller's gradient or skip ∂L/∂x."""
    for name, value in flags.items():
        boolean(value, name)


def batch_of_steps(x: np.ndarray, name: str = "x") -> None:
    """A (batch, time, ...) array with one sequence and one step at least (NumPy's own errors
    for an empty batch name its internals)."""
    if x.ndim >= 2 and (x.shape[0] == 0 or x.shape[1] == 0):
        fail(name, "an array of one sequence and one step at least", f"shape {x.shape}")


def available_memory() -> int | None:
    """Bytes of memory available now, or None when unknown: the machine's (Linux:
    MemAvailable), or less where this process's control group caps it (a container's
    memory limit, `docker run -m`: its OOM killer strikes at the group's limit, however much
    the machine has free)."""
    have = _machine_available()
    capped = cgroup_headroom()
    if capped is None:
        return have
    return capped if have is None else min(have, capped)


def _machine_available() -> int | None:
    try:
        with open("/proc/meminfo", "rb") as f:
            for line in f.read(1 << 16).splitlines():
                if line.startswith(b"MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, AttributeError):
        return None


NO_LIMIT = 1 << 60
"""cgroup v1 writes "no limit" as a number near 2⁶³ (9223372036854771712)."""


def cgroup_headroom(
    membership: str = "/proc/self/cgroup", root: str = "/sys/fs/cgroup"
) -> int | None:
    """Bytes this process may still take before a memory limit of its control group or of
    one of the group's ancestors: the tightest limit's headroom, its group's usage less its
    file cache (the page cache the kernel reclaims before the group's OOM killer strikes: a
    generous reading, as a refusal is the costlier mistake here); None where no
    group sets a limit or none can be read (no Linux, no cgroup filesystem). cgroup v2
    (memory.max, memory.current) and v1 (memory.limit_in_bytes, memory.usage_in_bytes)."""
    try:
        with open(membership, encoding="utf-8", errors="replace") as f:
            lines = f.read(1 << 16).splitlines()
    except OSError:
        return None
    tightest: int | None = None
    for line in lines:
        _, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        if controllers == "":  # v2: the unified hierarchy
            base, files = Path(root), ("memory.max", "memory.current", "file")
        elif "memory" in controllers.split(","):
            base = Path(root) / "memory"
            files = ("memory.limit_in_bytes", "memory.usage_in_bytes", "total_cache")
        else:
            continue
        group = base / path.lstrip("/")
        while True:
            room = _group_headroom(group, *files)
            if room is not None and (tightest is None or room < tightest):
                tightest = room
            if group == base or base not in group.parents:
                break
            group = group.parent
    return tightest


def _group_headroom(group: Path, limit_file: str, usage_file: str, cache_key: str) -> int | None:
    """limit − (usage − file cache) of one control group's directory, or None (no limit,
    or its files missing or unreadable)."""
    try:
        limit = (group / limit_file).read_text().strip()
        if limit == "max" or int(limit) >= NO_LIMIT:
            return None
        usage = int((group / usage_file).read_text().strip())
        cache = 0
        try:
            for line in (group / "memory.stat").read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == cache_key:
                    cache = int(value)
                    break
        except (OSError, ValueError):
            pass
        return max(int(limit) - max(usage - cache, 0), 0)
    except (OSError, ValueError):
        return None


def affordable(nbytes: int, name: str, what: str) -> None:
    """Refuse, before allocating, a request for more memory than the machine has available
    (a hidden_size of 10⁹ otherwise ends in MemoryError or the OOM killer)."""
    if nbytes < 1 << 28:  # not worth a look at /proc/meminfo
        return
    have = available_memory()
    if have is not None and nbytes > have:
        fail(name, f"a size whose {what} fit in the memory available ({describe_bytes(have)})",
             f"a request of about {describe_bytes(nbytes)}")  # fmt: skip


def describe_bytes(n: float) -> str:
    """A size in bytes as people read it: "1.5 GiB"."""
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"


class NotRegularFile(OSError):
    """A path that opens but holds no file to read to its end: `kind` says what it is."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


def open_file(path: Path | str) -> BinaryIO:
    """`path` opened for reading in binary if it is a regular file; else OSError (as `open`
    raises it) or NotRegularFile. Opened without blocking and checked before any read:
    opening a FIFO for reading otherwise waits for a writer forever, and a device
    (`/dev/zero`) never ends. The callers word the errors (open_regular, text.read_text)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):  # (Windows opens a directory)
            raise IsADirectoryError(21, "Is a directory", str(path))
        if not stat.S_ISREG(mode):
            raise NotRegularFile("a FIFO, a named pipe" if stat.S_ISFIFO(mode) else
                                 "a device or a socket")  # fmt: skip
        # Blocking again for plain reads (a regular file never blocks). Only where it was
        # made non-blocking: Windows has no O_NONBLOCK, and its set_blocking (3.12+) is for
        # pipes and fails on a file.
        if getattr(os, "O_NONBLOCK", 0) and hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
    except OSError:
        os.close(fd)
        raise
    return os.fdopen(fd, "rb")


def open_regular(path: Path, what: str, error: type[ValueError] = ValueError) -> BinaryIO:
    """`open_file`, its refusals as `error`s naming `what` and the path."""
    try:
        return open_file(path)
    except NotRegularFile as e:
        raise error(f"Cannot read {what} '{path}': it is not a regular file ({e.kind}).") from None
    except FileNotFoundError:
        raise error(f"Cannot read {what} '{path}': the file does not exist.") from None
    except IsADirectoryError:
        raise error(f"Cannot read {what} '{path}': it is a directory.") from None
    except PermissionError:
        raise error(f"Cannot read {what} '{path}': permission denied.") from None
    except OSError as e:
        raise error(f"Cannot read {what} '{path}': {e.strerror or e}.") from None


def file_to_write(value: object, name: str) -> Path:
    """The path argument `name` of a file an exporter writes, refused where no file of that
    name can be meant. The write is atomic (rnnlab.io.atomic_path): a new file replaces
    whatever the name held, so an existing FIFO, device or socket (or a link to one) would
    be deleted and a regular file left in its place: the reader of a named pipe waits
    forever, and `--out /dev/stdout` run as root replaced the system's own link. A name
    ending in a separator means a folder (`--out exports/` wrote a file named `exports`),
    and an empty one none."""
    if not isinstance(value, (str, os.PathLike)):
        fail(name, "a path (str or pathlib.Path)", describe(value))
    text = os.fspath(value)
    if not isinstance(text, str):  # (a PathLike of bytes)
        fail(name, "a path (str or pathlib.Path)", describe(value))
    if not text:
        fail(name, "a file path", "an empty path")
    path = Path(text)
    if text.endswith(tuple(s for s in (os.sep, os.altsep) if s)) or path.is_dir():
        what = "a directory" if path.is_dir() else "a folder's path (it ends in a separator)"
        fail(name, "a file path", f"'{text}', {what}")
    try:
        mode = path.stat().st_mode  # (through links: what the replacement would delete)
    except OSError:  # nothing there yet (or a dangling link): the write says what fails
        return path
    if not stat.S_ISREG(mode):
        kind = "a FIFO (named pipe)" if stat.S_ISFIFO(mode) else "a device or a socket"
        fail(name, "a regular file's path (or a new one)", f"'{text}', {kind}",
             "Writing the file would replace it: write to a file and copy it there.")  # fmt: skip
    return path


EXPORT_SUFFIXES = {"onnx": ".onnx", "safetensors-torch": ".torch.safetensors",
                   "keras": ".weights.h5"}  # fmt: skip
"""The name each export's file ends in (rnnlab export RUN --format F writes RUN/model<suffix>)."""

# Names that say another format than the one written: the formats' own suffixes, rnnlab's
# (and PyTorch's) .safetensors, Keras' .h5 and its whole-model .keras, torch.save's .pt and
# .pth (refused for every format). Lower case: a name's suffix is compared in lower case
# (M.ONNX is an ONNX graph's name too). Longest first.
_FORMAT_SUFFIXES = {
    ".torch.safetensors": ("safetensors-torch", "a PyTorch state_dict"),
    ".safetensors": ("safetensors-torch", "safetensors weights"),
    ".weights.h5": ("keras", "Keras weights"),
    ".h5": ("keras", "Keras weights"),
    ".keras": ("keras", "a whole Keras model (rnnlab writes the weights, .weights.h5)"),
    ".onnx": ("onnx", "an ONNX graph"),
    # (what torch.save writes and torch.load unpickles: rnnlab writes no pickle, and a graph
    # or safetensors file under such a name is what a PyTorch user opens with torch.load)
    ".pth": ("pickle", "a pickled PyTorch file (torch.save's; rnnlab writes no pickle)"),
    ".pt": ("pickle", "a pickled PyTorch file (torch.save's; rnnlab writes no pickle)"),
}

# What writes each format from Python (said where a Python caller gave a name of another's).
_PYTHON_WRITERS = {
    "onnx": ("the ONNX export", "rnnlab.onnx.export"),
    "safetensors-torch": ("the PyTorch export",
                          "rnnlab.export.torch_state_dict (saved with safetensors)"),
    "keras": ("the Keras export", "rnnlab.keras.save_weights"),
}


def export_file_name(path: Path, fmt: str, name: str) -> None:
    """Refuse the file name `path` for the `fmt` export ("onnx", "safetensors-torch",
    "keras") where its suffix names another format: an ONNX graph under m.torch.safetensors
    is what a PyTorch user takes for a state_dict, and reads as one until it fails (the
    longest suffix that names a format decides: m.torch.safetensors is PyTorch's, not only
    safetensors); and a Keras name not ending in .weights.h5, which Keras' load_weights
    refuses. The one check of `rnnlab export --out` (`name` "--out": the hint names
    --format) and of the Python exporters, rnnlab.onnx.export, rnnlab.export.torch_snippet
    and rnnlab.keras.save_weights and snippet (`name` "path": the hint names the function
    that writes the other format)."""
    cli = name.startswith("--")
    lower = path.name.lower()
    suffix = next((s for s in _FORMAT_SUFFIXES if lower.endswith(s)), None)  # (longest first)
    if suffix is not None and _FORMAT_SUFFIXES[suffix][0] != fmt:
        other, what = _FORMAT_SUFFIXES[suffix]
        own = EXPORT_SUFFIXES[fmt]
        expected = (f"a file name for --format {fmt}" if cli
                    else f"a file name for {_PYTHON_WRITERS[fmt][0]}") + f", such as model{own}"
        if suffix == ".keras" or other == "pickle":  # (rnnlab writes no whole Keras model,
            # no pickle)
            hint = f"Give a name ending in {own}."
        elif cli:
            hint = f"Give --format {other} to write that, or a name ending in {own}."
        else:
            hint = f"{_PYTHON_WRITERS[other][1]} writes that; give a name ending in {own}."
        fail(name, expected, f"'{path}', whose suffix {suffix} names {what}", hint)
    if fmt == "keras" and not path.name.endswith(".weights.h5"):  # (its case too)
        fail(name, "a file name ending in .weights.h5 (Keras insists)", f"'{path}'")


def read_bounded(path: Path, limit: int, what: str, error: type[ValueError] = ValueError) -> bytes:
    """The bytes of a regular file of at most `limit` bytes: a device, a FIFO or a huge file
    (`--data /dev/zero`) is refused instead of read until memory runs out, or waited on."""
    with open_regular(path, what, error) as f:
        size = os.fstat(f.fileno()).st_size
        if size > limit:
            said, most = describe_bytes(size), describe_bytes(limit)
            if said == most:  # (64 MiB and a byte was "64.0 MiB, more than the 64.0 MiB")
                said, most = f"{size:,} bytes", f"{limit:,} bytes ({most})"
            raise error(f"Cannot read {what} '{path}': it has {said}, more than the {most} "
                        "rnnlab reads.")  # fmt: skip
        try:
            data = f.read(limit + 1)
        except OSError as e:
            raise error(f"Cannot read {what} '{path}': {e.strerror or e}.") from None
    if len(data) > limit:  # it grew while read
        raise error(f"Cannot read {what} '{path}': it holds more than {describe_bytes(limit)}.")
    return data
