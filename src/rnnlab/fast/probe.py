"""Whether the compiled loops run in this process, and the process setting they ask for.

`available()` is what rnnlab.fast and its parallel module both ask before they use the
compiled path; it lives apart from rnnlab.fast's loops so that rnnlab.fast.parallel, which
those loops use to split a batch, can ask it without importing them. `keep_freed_memory()`
tunes glibc's malloc for the tapes the compiled path allocates at every step.
"""

from __future__ import annotations

import functools
import warnings

from rnnlab import settings


def available() -> bool:
    """True when the kernels import (numba and scipy installed) and RNNLAB_NO_NUMBA is off.
    The first call imports numba (about half a second)."""
    if settings.current().no_numba:
        return False
    return _importable()


@functools.cache
def _importable() -> bool:
    try:
        import scipy.linalg  # noqa: F401  (numba's np.dot calls scipy's BLAS)

        from rnnlab.fast import kernels, loops  # noqa: F401  (numba, and its options we rely on)
    except ImportError:
        return False
    except Exception as exc:  # a numba that refuses our kernels: run the NumPy loop, and say so
        warnings.warn(f"rnnlab.fast is off, its kernels failed to load: {exc!r}", stacklevel=2)
        return False
    keep_freed_memory()
    return True


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters
MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's largest allowed value
TRIM_THRESHOLD = 1024 * 1024 * 1024  # free memory kept at the top of the heap


@functools.cache
def keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed blocks of up to 32 MB for reuse instead of returning
    them to the system (mallopt M_MMAP_THRESHOLD, M_TRIM_THRESHOLD: up to 1 GB of free heap
    is kept; the heap never grows past the process's peak use).

    Every forward pass allocates its tape anew and every backward pass its gradient buffers.
    By default glibc maps blocks that large fresh from the kernel and unmaps them when freed,
    so each step page-faulted its arrays in again (docs/design.md has the cost). The process
    then keeps its peak memory mapped after a step instead of handing it back. Done once,
    when the compiled loops are first used; RNNLAB_MALLOC=system leaves glibc's settings
    alone. Returns True when applied."""
    if settings.current().malloc == "system":
        return False
    import ctypes
    import ctypes.util
    import platform

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        libc = None
    if libc is None or not hasattr(libc, "mallopt") or platform.libc_ver()[0] != "glibc":
        return False
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    ok = libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
    return bool(libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1 and ok)
