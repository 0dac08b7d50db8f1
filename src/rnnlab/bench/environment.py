"""Every read of the process environment in the benchmark, in one place.

The bench records the variables that change how either library runs, hands its memory
children an environment of their own, and measures the GEMM once more without the variables
that hold a BLAS to another kernel. These are the raw strings of the process environment,
deliberately: the report records what the user set (the BLAS libraries read theirs, not
rnnlab's), and a child inherits variables, not objects. What rnnlab itself makes of its
RNNLAB_* switches is `rnnlab.settings.current()`, which the engine reads and this file does not.
"""

from __future__ import annotations

import os

from rnnlab import _blaschoice
from rnnlab.info import FORCING

# What the report records of the environment: the threads, the BLAS kernels, rnnlab's switches.
RECORDED = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_CORETYPE",
    "OPENBLAS_L2_SIZE",
    "MKL_ENABLE_INSTRUCTIONS",
    "MKL_CBWR",
    "MKL_DEBUG_CPU_TYPE",
    "RNNLAB_NO_NUMBA",
    "RNNLAB_NUM_THREADS",
    "RNNLAB_BLAS",
    "RNNLAB_MALLOC",
    "RNNLAB_TILES",
    "RNNLAB_PACKED",
    "RNNLAB_VECTOR_WIDTH",
    "RNNLAB_SPIN",
)

# glibc returns freed blocks above this size to the OS at once. Without it the threshold grows
# to 32 MB after the first large free, a step's arrays then come from the retained heap, and
# the peak of a step after warm-up is invisible to the process's peak RSS. (rnnlab.fast asks
# glibc to retain freed blocks for speed, and rnnlab.fast.parallel pools large tapes and keeps
# scratch buffers; RNNLAB_MALLOC=system stops all three here for the same reason: the child
# measures what a step needs, not what a process keeps.)
CHILD_ENV = {"MALLOC_MMAP_THRESHOLD_": "131072", "RNNLAB_MALLOC": "system"}


def recorded() -> dict[str, str]:
    """The variables of RECORDED that are set, with their values."""
    return {k: os.environ[k] for k in RECORDED if k in os.environ}


def forced_kernels() -> dict[str, str]:
    """The set variables that hold a BLAS to another kernel than the machine's best (set to
    a value: an empty one forces nothing), as the BLAS choice's cache key reads them."""
    return _blaschoice.forcing()


def without_forcing() -> dict[str, str]:
    """This environment less the variables of rnnlab.info.FORCING."""
    return {k: v for k, v in os.environ.items() if k not in FORCING}


def memory_child() -> dict[str, str]:
    """This environment with CHILD_ENV on top: what a memory child runs under."""
    return {**os.environ, **CHILD_ENV}
