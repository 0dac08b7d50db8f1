"""rnnlab's environment switches (`RNNLAB_*`), read once into one typed, frozen object.

Every module asks `current()` instead of reading `os.environ`, so each variable has one
parser, one default and one error message, and a process sees one consistent set of values.
The table of the variables is in docs/design.md, section "Environment".

Parsing follows one rule per kind: surrounding spaces are ignored and an empty value is the
default; a boolean is one of 1/0, true/false, yes/no, on/off (any case); a count is a
positive integer (up to MAX_THREADS); a choice is one of its words (any case); a duration is
a positive number of seconds (RNNLAB_SPIN's may be 0); a folder is an absolute path (~
expanded). A value that parses as none of these raises ValueError naming the variable, what
it must be and what came, at the first `current()` (every variable is checked, used or not),
which the `rnnlab` command calls before any of its commands runs.

`current()` reads the environment at its first call and keeps the result. Code that changes
the process's own environment afterwards (tests, `rnnlab.distributed.share_cores`) calls
`reload()`, which reads it again. Tests that want other values in this process only use
`with override(no_numba=True): ...` (child processes read their environment instead).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from rnnlab import _checks

BLAS_CHOICES = ("auto", "mkl", "numpy")
TILES_CHOICES = ("auto", "on", "off")
MALLOC_CHOICES = ("retain", "system")
VECTOR_WIDTHS = tuple(1 << k for k in range(7))
DEFAULT_MPI_TIMEOUT = 600.0
DEFAULT_SPIN = 0.005
MAX_THREADS = 1024  # RNNLAB_NUM_THREADS above this is a typo, not a machine
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


@dataclass(frozen=True)
class Settings:
    """The values of the `RNNLAB_*` variables (see the module's docstring for the rules)."""

    blas: str = "auto"
    """RNNLAB_BLAS: the BLAS of the compiled loops, "mkl", "numpy" or "auto" (measured)."""
    num_threads: int | None = None
    """RNNLAB_NUM_THREADS: rnnlab's threads; None when unset (then `threads` is the cores)."""
    malloc: str = "retain"
    """RNNLAB_MALLOC: "retain" keeps freed memory and scratch buffers, "system" does not."""
    vector_width: int | None = None
    """RNNLAB_VECTOR_WIDTH: lanes forced on the kernels' vectoriser; 0 for LLVM's own choice
    ("default"), None for rnnlab's choice by CPU ("auto")."""
    no_numba: bool = False
    """RNNLAB_NO_NUMBA: run the NumPy loop even where numba is installed."""
    packed: bool = True
    """RNNLAB_PACKED: let the per-step products take MKL's packed weights."""
    tiles: str = "auto"
    """RNNLAB_TILES: the per-step products on rnnlab's own kernel (rnnlab.fast.tiles), "on",
    "off" or "auto" (measured against the BLAS, with the BLAS choice)."""
    cache_dir: str = ""
    """RNNLAB_CACHE_DIR (~ expanded), else $XDG_CACHE_HOME/rnnlab where that is an absolute
    path, else ~/.cache/rnnlab, else (no home directory) rnnlab-cache-<uid> in the temporary
    folder."""
    mpi_timeout: float = DEFAULT_MPI_TIMEOUT
    """RNNLAB_MPI_TIMEOUT: seconds a rank waits in a collective before it aborts every rank."""
    spin: float = DEFAULT_SPIN
    """RNNLAB_SPIN: seconds a worker thread waits busily for its next part before it sleeps
    (rnnlab.fast.team); 0 sleeps at once."""

    @property
    def threads(self) -> int:
        """The threads rnnlab may use: RNNLAB_NUM_THREADS, else the cores it may run on."""
        return self.num_threads if self.num_threads is not None else cores()


def cores() -> int:
    """The cores this process may run on (its CPU affinity where the system tells it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def read(environ: Mapping[str, str]) -> Settings:
    """The settings `environ` gives; ValueError for a value that does not parse."""

    def text(name: str) -> str:
        return environ.get(name, "").strip()

    _warn_unknown(environ)
    return Settings(
        blas=_choice("RNNLAB_BLAS", text("RNNLAB_BLAS"), BLAS_CHOICES, "auto"),
        num_threads=_count("RNNLAB_NUM_THREADS", text("RNNLAB_NUM_THREADS")),
        malloc=_choice("RNNLAB_MALLOC", text("RNNLAB_MALLOC"), MALLOC_CHOICES, "retain"),
        vector_width=_vector_width(text("RNNLAB_VECTOR_WIDTH")),
        no_numba=_flag("RNNLAB_NO_NUMBA", text("RNNLAB_NO_NUMBA"), False),
        packed=_flag("RNNLAB_PACKED", text("RNNLAB_PACKED"), True),
        tiles=_choice("RNNLAB_TILES", text("RNNLAB_TILES"), TILES_CHOICES, "auto"),
        cache_dir=_cache_dir(environ),
        mpi_timeout=_seconds("RNNLAB_MPI_TIMEOUT", text("RNNLAB_MPI_TIMEOUT"), DEFAULT_MPI_TIMEOUT),
        spin=_seconds("RNNLAB_SPIN", text("RNNLAB_SPIN"), DEFAULT_SPIN, zero=True),
    )


_held: list[Settings] = []  # what was read, then the overrides in force, innermost last


def current() -> Settings:
    """The settings of this process, read from its environment at the first call."""
    if not _held:
        _held.append(read(os.environ))
    return _held[-1]


def reload() -> Settings:
    """Read the environment again (after the process changed it) and return the new settings;
    overrides in force are dropped."""
    _held.clear()
    return current()


@contextlib.contextmanager
def override(**values: object) -> Iterator[Settings]:
    """The settings with `values` replaced inside the block, in this process (for tests)."""
    _held.append(dataclasses.replace(current(), **values))  # type: ignore[arg-type]
    try:
        yield _held[-1]
    finally:
        _held.pop()


VARIABLES = tuple(f"RNNLAB_{f.name.upper()}" for f in dataclasses.fields(Settings))
"""The names of rnnlab's variables: one per setting."""


def _warn_unknown(environ: Mapping[str, str]) -> None:
    """A variable that looks like rnnlab's and is not (RNNLAB_THREADS=1, or rnnlab_blas=mkl:
    the names are case-sensitive) would be ignored without a word, and the run would not do
    what its user set: say so, with the nearest name."""
    import difflib
    import warnings

    for name in sorted(environ):
        if name.upper().startswith("RNNLAB_") and name not in VARIABLES:
            near = difflib.get_close_matches(name.upper(), VARIABLES, n=1)
            warnings.warn(f"rnnlab: {name} is not one of rnnlab's variables and is ignored"
                          + (f" (did you mean {near[0]}?)" if near else
                             f" (they are {', '.join(VARIABLES)})"), stacklevel=3)  # fmt: skip


def _cache_dir(environ: Mapping[str, str]) -> str:
    """Where rnnlab keeps what it measured (the BLAS choice). A relative XDG_CACHE_HOME is
    ignored, as the XDG base directory specification says; with no home directory at all (a
    container's user without a passwd entry, HOME unset) the folder goes to the temporary
    folder under the user's id, not to a directory named "~" wherever the process started."""
    given = environ.get("RNNLAB_CACHE_DIR", "").strip()
    if given:
        # absolute, as XDG_CACHE_HOME must be: a relative folder (or a ~user with no
        # account) made a cache in whatever directory each process started from
        folder = os.path.expanduser(given)
        if not os.path.isabs(folder):
            _checks.fail("RNNLAB_CACHE_DIR", "an absolute path (~ is expanded)", repr(given))
        return folder
    xdg = environ.get("XDG_CACHE_HOME", "").strip()
    if os.path.isabs(xdg):
        return os.path.join(xdg, "rnnlab")
    home = environ.get("HOME", "").strip() or _account_home()
    if os.path.isabs(home):
        return os.path.join(home, ".cache", "rnnlab")
    return os.path.join(tempfile.gettempdir(), f"rnnlab-cache-{getattr(os, 'getuid', str)()}")


def _account_home() -> str:
    """The home directory of this process's user account, or "" without one."""
    try:
        import pwd
    except ImportError:  # not on a POSIX system
        home = os.path.expanduser("~")
        return "" if home == "~" else home
    try:
        return pwd.getpwuid(os.getuid()).pw_dir
    except KeyError:
        return ""


def _flag(name: str, value: str, default: bool) -> bool:
    if not value:
        return default
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    _checks.fail(name, "1, 0, true, false, yes, no, on or off", repr(value))


def _count(name: str, value: str) -> int | None:
    if not value:
        return None
    if not (value.isascii() and value.isdigit()) or not 1 <= int(value) <= MAX_THREADS:
        _checks.fail(name, f"a positive integer up to {MAX_THREADS}", repr(value))
    return int(value)


def _choice(name: str, value: str, choices: tuple[str, ...], default: str) -> str:
    if not value:
        return default
    if value.lower() not in choices:
        words = [repr(c) for c in choices]
        _checks.fail(name, ", ".join(words[:-1]) + " or " + words[-1], repr(value))
    return value.lower()


def _vector_width(value: str) -> int | None:
    if value.lower() in ("", "auto"):
        return None
    if value.lower() == "default":
        return 0
    if value not in {str(n) for n in VECTOR_WIDTHS}:
        _checks.fail("RNNLAB_VECTOR_WIDTH", "'default', 'auto' or a power of two from 1 to 64",
                     repr(value))  # fmt: skip
    return int(value)


def _seconds(name: str, value: str, default: float, zero: bool = False) -> float:
    if not value:
        return default
    try:
        seconds = float(value)
    except ValueError:
        seconds = float("nan")
    if not (0 <= seconds if zero else 0 < seconds) or seconds == float("inf"):
        expected = "a number of seconds, 0 or more" if zero else "a positive number of seconds"
        _checks.fail(name, expected, repr(value))
    return seconds
