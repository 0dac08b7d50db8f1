"""How rnnlab uses the cores: its own threads, with NumPy's OpenBLAS held at one thread.

The rows of a batch never interact, so the compiled time loops (rnnlab.fast) run parts of a
batch on several threads at once, each part with its own small per-step products; the large
products before and after the loop (the input projection, the deferred weight gradients, a
readout) are split the same way, by rows of their result.

OpenBLAS's own threads get in the way of that. Each multi-threaded product leaves OpenBLAS's
workers busy-waiting for about 0.1 s, and a worker spinning on a core halves the speed of the
loop thread that runs there: a split loop after a two-thread OpenBLAS product was slower than
one thread, and twice as fast with OpenBLAS kept at one thread throughout. Two threads of ours
each running a one-thread product matched a two-thread OpenBLAS product on the large shapes
(docs/design.md, "Using the cores", has the measurements).

So, while rnnlab computes (inside `session()`: every forward and backward of its layers and
modules), NumPy's OpenBLAS runs at one thread and rnnlab's threads do the parallel work;
the previous thread count is restored when the outermost session ends. Sessions nest and
may overlap across threads of a program (the count is restored when the last one ends).

The same spinning reaches across sessions: NumPy work between two of them runs on OpenBLAS's
threads again (a dot product over the gradients for their norm is enough), and the next
session's split loops then share a core with a spinning worker. Between the forward passes of
two training steps that made the end-to-end step 0.25 s instead of 0.20 (bench/README,
"Between two sessions"). So a training step runs in one session from its batch to its update
(Trainer.train_step), and rnnlab's own NumPy work outside the layers, the gradients' global
norm, opens one too.

    num_threads() -> int        RNNLAB_NUM_THREADS, else the cores this process may run on
    enabled() -> bool           splitting is on: more than one thread, the compiled loops
                                available, and NumPy's OpenBLAS thread count under control
    session()                   context manager, see above (a no-op when not enabled)
    row_parts(n, min_rows)      [start, stop) ranges splitting n rows over the threads
    run_parts(fn, parts)        fn(start, stop) for every part, in parallel (on the worker
                                threads of rnnlab.fast.team, which wait busily for their
                                next part inside a session)
    spin_seconds() -> float     how long they wait so (RNNLAB_SPIN; 0: they sleep at once)
    concurrently(fns, flops)    independent jobs (the two directions of a layer) each on a
                                thread of its own, with no splits inside
    matmul(a, b)                a @ b for 2-D arrays, rows of the result split over threads
    empty(shape, dtype)         np.empty for arrays of 32 MB and more that outlive their call,
                                from a pool of freed blocks (the tapes; see its docstring)
    release_pool() -> int       hand the pool's blocks and the threads' scratch back

Without numba (rnnlab.fast unavailable) or with RNNLAB_NUM_THREADS=1 nothing is split and
NumPy's BLAS keeps its own threads, as in any NumPy program.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import queue
import threading
import weakref
from collections.abc import Callable, Sequence
from typing import Any, ParamSpec, TypeVar

import numpy as np

from rnnlab import _blaschoice, _checks, _mkl, settings
from rnnlab.fast import probe

P = ParamSpec("P")
R = TypeVar("R")

MIN_FLOPS = 30_000_000  # a product smaller than this does not repay a hand-over: not split
_MIN_ROWS_MATMUL = 64

_THREAD_NAMES = (
    ("scipy_openblas_get_num_threads64_", "scipy_openblas_set_num_threads64_"),
    ("openblas_get_num_threads64_", "openblas_set_num_threads64_"),
    ("openblas_get_num_threads", "openblas_set_num_threads"),
)


def _find_thread_control():
    """(get_num_threads, set_num_threads) of the OpenBLAS bundled with NumPy, or None."""
    found = _blaschoice.numpy_blas_symbols(_THREAD_NAMES)
    if found is None:
        return None
    get, set_ = found
    get.restype, get.argtypes = ctypes.c_int, []
    set_.restype, set_.argtypes = None, [ctypes.c_int]
    return get, set_


_CONTROL = _find_thread_control()


def num_threads() -> int:
    """The threads rnnlab may use: the environment variable RNNLAB_NUM_THREADS if set (1 turns
    every split off), else the cores this process may run on (rnnlab.settings)."""
    return settings.current().threads


def enabled() -> bool:
    """True when rnnlab splits work over its own threads (see the module's docstring)."""
    if _CONTROL is None or num_threads() < 2:
        return False
    return probe.available()


# ----------------------------------------------------------------------- the BLAS session
_depth = 0  # open sessions, in all threads
_saved = 1
_depth_lock = threading.Lock()
_own = threading.local()  # .depth: the sessions this thread has open (what a fork keeps)


@contextlib.contextmanager
def session():
    """NumPy's OpenBLAS at one thread inside the block (if enabled()), restored after the
    outermost block ends; inside it rnnlab's worker threads wait busily for their next part
    (rnnlab.fast.team), outside it they sleep."""
    global _depth, _saved
    if not enabled():
        yield
        return
    from rnnlab.fast import team  # enabled(): numba is there

    get, set_ = _CONTROL
    with _depth_lock:
        if _depth == 0:
            _saved = get()
            set_(1)
            team.set_spinning(True)
        _depth += 1
        _own.depth = getattr(_own, "depth", 0) + 1
    try:
        yield
    finally:
        with _depth_lock:
            _depth -= 1
            _own.depth -= 1
            if _depth == 0:
                team.set_spinning(False, linger=True)
                set_(_saved)


def spin_seconds() -> float:
    """How long a worker thread waits busily for its next part before it sleeps, inside a
    session (rnnlab.fast.team): RNNLAB_SPIN where the threads split work and the CPU has a
    clock to spin by (x86), else 0."""
    if not enabled():
        return 0.0
    from rnnlab.fast import team

    return settings.current().spin if team.ticks_per_second() > 0 else 0.0


def in_session() -> bool:
    """True inside an enabled session (the only place where work is split)."""
    return _depth > 0


# ----------------------------------------------------------------------- splitting work
_local = threading.local()  # per thread: "unsplit" inside a job of concurrently; scratch
_team: Any = None  # rnnlab.fast.team.Team, made at the first split (it imports numba)
_team_pid = 0
_team_lock = threading.Lock()


def _workers(n: int) -> Any:
    """A team of at least n worker threads (as many as rnnlab's threads allow, so that it is
    made once), made anew in a process forked from one that had them (a fork copies the team
    but not its threads: work handed to it would wait forever); a team replaced by a larger
    one (RNNLAB_NUM_THREADS raised) ends its threads."""
    global _team, _team_pid
    from rnnlab.fast import team

    replaced = None
    with _team_lock:
        forked = _team is not None and _team_pid != os.getpid()
        if _team is None or _team.size < n or forked:
            replaced = None if forked else _team
            _team, _team_pid = team.Team(max(n, num_threads() - 1)), os.getpid()
        made = _team
    if replaced is not None:  # outside the lock: it waits for a run of the old team to end
        replaced.close()
    return made


def _locks_after_fork() -> None:
    """A fork copies a lock held by another thread, which the child does not have: fresh
    locks in the child (its team is made anew at its first split), and an empty pool of
    freed blocks (one copied in the middle of a change would not add up). Of the open
    sessions the child keeps the forking thread's: another thread's would never close,
    leaving the child's BLAS at one thread and its work split for good."""
    global _team_lock, _depth_lock, _blocks_lock, _free_blocks, _free_bytes, _returned, _depth
    _team_lock, _depth_lock, _blocks_lock = threading.Lock(), threading.Lock(), threading.Lock()
    _free_blocks, _free_bytes, _returned = [], 0, queue.SimpleQueue()
    kept = getattr(_own, "depth", 0)
    if _depth > 0 and kept == 0 and _CONTROL is not None:
        from rnnlab.fast import team  # (a session was open: numba is there)

        team.set_spinning(False)
        _CONTROL[1](_saved)
    _depth = kept


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_locks_after_fork)


def row_parts(n: int, min_rows: int) -> list[tuple[int, int]]:
    """[start, stop) ranges of n rows, one per thread, each of at least `min_rows` rows; one
    range (no split) outside a session, and inside a job that `concurrently` runs."""
    splitting = in_session() and not getattr(_local, "unsplit", False)
    k = min(num_threads(), n // max(min_rows, 1)) if splitting else 1
    if k < 2:
        return [(0, n)]
    return [(n * i // k, n * (i + 1) // k) for i in range(k)]


def run_parts(fn: Callable[[int, int], object], parts: list[tuple[int, int]]) -> None:
    """fn(start, stop) for every part: the first in this thread, the rest on rnnlab's worker
    threads (rnnlab.fast.team: they wait busily for their next part inside a session; fn
    must release the GIL for this to gain anything: compiled kernels, BLAS).
    Every part calls MKL on one thread (rnnlab._mkl.one_thread) and runs under the caller's
    NumPy error handling (np.errstate is per thread: a worker would otherwise warn where the
    caller asked to ignore or raise)."""
    with _mkl.one_thread():
        if len(parts) == 1 or not probe.available():
            for a, b in parts:
                fn(a, b)
            return
        _workers(len(parts) - 1).run(fn, parts)


MIN_CONCURRENT_FLOPS = 8_000_000  # jobs smaller than this run one after the other
MAX_CONCURRENT_STEP_BYTES = 1 << 19  # jobs whose steps touch more are split by rows instead


def concurrently(fns: Sequence[Callable[[], R]], flops: float, step_bytes: float = 0) -> list[R]:
    """[fn() for fn in fns], each job on a thread of its own (the first on this one) when
    there are threads for all of them, each job comes to `flops` ≥ MIN_CONCURRENT_FLOPS and
    the data one of its time steps works on, `step_bytes` (a recurrent layer's gates for the
    whole batch), stays under MAX_CONCURRENT_STEP_BYTES; nothing inside a job is split
    further (row_parts gives one part there). Otherwise the jobs run one after the other,
    each split by rows as usual.

    For the two directions of a bidirectional layer: one hand-over instead of one for each
    direction's projection, loop and weight gradients, and each thread's per-step product
    takes the whole batch; faster up to H = 256. Where one step's gates outgrow half of a
    core's L2 (an LSTM at H = 512) running both at once lost, hence the bound; with the
    weights packed for MKL (rnnlab.fast.packs) the per-step products no longer suffer from
    that, and the layers pass step_bytes=0 (docs/design.md, "Using the cores", has the
    measurements)."""
    if (
        len(fns) < 2
        or flops < MIN_CONCURRENT_FLOPS
        or step_bytes >= MAX_CONCURRENT_STEP_BYTES
        or not in_session()
        or getattr(_local, "unsplit", False)
        or num_threads() < len(fns)
    ):
        return [fn() for fn in fns]
    results: list[Any] = [None] * len(fns)  # each None replaced by its job's result

    def job(i: int, _: int) -> None:
        before = getattr(_local, "unsplit", False)
        _local.unsplit = True
        try:
            results[i] = fns[i]()
        finally:
            _local.unsplit = before

    run_parts(job, [(i, i + 1) for i in range(len(fns))])
    return results


def _product_parts(m: int, n: int, k: int) -> list[tuple[int, int]]:
    if 2 * m * n * k < MIN_FLOPS:
        return [(0, m)]
    return row_parts(m, _MIN_ROWS_MATMUL)


_MATMUL = np.matmul  # (a name of its own: tests put a BLAS that leaves a flag in its place)


def numpy_product(a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """a @ b by NumPy's matmul, its floating-point errors judged by the product's result.

    OpenBLAS's kernels can leave the CPU's sticky invalid, overflow or divide-by-zero flag
    set from vector lanes past the operands (numpy/numpy#24067, #28967): NumPy then warns,
    or raises under np.seterr(all="raise"), of a finite product of finite operands (one of
    our tests, once in thousands of runs: a 1 × 5 by 5 × 3 float32 product on an AVX-512
    Xeon). So the product runs with the flags ignored, and where its result is not finite
    (an overflow, an inf or NaN operand) once more under the caller's settings, which warn
    or raise as NumPy's would. MKL's products (through ctypes) report no flags at all, and
    neither do the large ones split over the threads (`_gemm_into`): a pass over their
    output would cost a step on a host whose large products are NumPy's."""
    if all(mode == "ignore" for mode in np.geterr().values()):
        return _MATMUL(a, b, out=out)
    with np.errstate(all="ignore"):
        product = _MATMUL(a, b, out=out)
        # (the sum's test, not np.isfinite's boolean array: a tape's product took a third
        # of a (T, B, H) array more at its peak, tests/test_tape.py)
        finite = _checks.all_finite(product)
    if not finite:
        product = _MATMUL(a, b, out=out)
    return product


def _gemm_into(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    """out = a @ b on this thread: MKL's gemm (one thread) when the `mkl` extra is installed
    (and the operands suit it), else NumPy's matmul (held at one thread in a session)."""
    mkl = _mkl.load(large=True)
    if mkl is None or not mkl.gemm(a, b, out):
        with np.errstate(all="ignore"):  # (as MKL's: no flags, see numpy_product)
            _MATMUL(a, b, out=out)


def matmul(a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """a @ b for 2-D arrays, rows split over the threads; into `out` (C-contiguous, of a's and
    b's dtype) if given. Transposed views are fine on either side: matmul(dA.T, X) is the
    deferred weight gradient, split by rows of dAᵀ, i.e. by column blocks of dA."""
    m, k = a.shape
    n = b.shape[1]
    parts = _product_parts(m, n, k)
    if len(parts) == 1 and (not in_session() or 2 * m * n * k < MIN_FLOPS):
        return numpy_product(a, b, out)
    if out is None:
        out = np.empty((m, n), np.result_type(a, b))
    run_parts(lambda i, j: _gemm_into(a[i:j], b, out[i:j]), parts)
    return out


@functools.cache
def _numpy_gemms() -> dict[np.dtype[Any], Callable[..., None]]:
    """NumPy's own cblas_sgemm and cblas_dgemm (ILP64) as ctypes functions by dtype, or {}
    where NumPy's BLAS does not export them."""
    found = _blaschoice.numpy_blas_symbols(_blaschoice.CBLAS_GEMM_NAMES)
    if found is None:
        return {}
    gemms: dict[np.dtype[Any], Callable[..., None]] = {}
    for fn, real, dt in zip(found, (ctypes.c_float, ctypes.c_double), (np.float32, np.float64),
                            strict=True):  # fmt: skip
        address = ctypes.cast(fn, ctypes.c_void_p).value
        gemms[np.dtype(dt)] = _blaschoice.cblas_gemm_type(real)(address)
    return gemms


def _gemm_acc(a: np.ndarray, b: np.ndarray, out: np.ndarray, beta: float) -> None:
    """out = a @ b + beta·out on this thread, by MKL's or NumPy's own CBLAS, which add into
    `out` where it lies (a and b may be transposed or strided views); NumPy's matmul and a
    sum where neither can."""
    mkl = _mkl.load(large=True)
    if mkl is not None and mkl.gemm(a, b, out, beta=beta):
        return
    gemm = _numpy_gemms().get(out.dtype) if a.dtype == b.dtype == out.dtype else None
    ops = (_mkl.operand(a), _mkl.operand(b), _mkl.operand(out))
    m, k = a.shape
    n = b.shape[1]
    if gemm is None or None in ops or ops[2][0] != _mkl.NO_TRANS or 0 in (m, n, k):  # type: ignore[index]
        if beta:
            out += numpy_product(a, b)
        else:
            numpy_product(a, b, out)
        return
    (ta, lda), (tb, ldb), (_, ldc) = ops  # type: ignore[misc]
    gemm(_mkl.ROW_MAJOR, ta, tb, m, n, k, 1.0, a.ctypes.data, lda, b.ctypes.data, ldb, beta,
         out.ctypes.data, ldc)  # fmt: skip


# ------------------------------------------------- inputs read where they lie (time-major views)
STEPS_COPIED_VALUES = 1 << 16  # values of a strided input one thread copies at a time...
STEPS_COPIED_SHARE = 4  # ...and at most a quarter of its steps...
ROWS_COPIED_MIN = 1024  # ...but rows enough for a product near the GEMM's speed


def _steps_at_a_time(X: np.ndarray) -> int:
    T, B, I = X.shape
    step = min(STEPS_COPIED_VALUES // max(B * I, 1), -(-T // STEPS_COPIED_SHARE))
    return max(1, step, -(-ROWS_COPIED_MIN // max(B, 1)))


def _copy_steps(X: np.ndarray, a: int, b: int, buf: np.ndarray) -> np.ndarray:
    """Steps a..b of X (T, B, I) as one ((b − a)·B, I) array, in buf."""
    B, I = X.shape[1], X.shape[2]
    rows = buf[: (b - a) * B]
    np.copyto(rows.reshape(b - a, B, I), X[a:b])
    return rows


def time_major_matmul(X: np.ndarray, W: np.ndarray, out: np.ndarray, whole: bool = False) -> None:
    """out = X W over X's T·B rows in time order, for X (T, B, I) whose rows are not one array
    in that order (the time-major view of a batch-first input); out (T·B, N) C-contiguous.
    Each thread takes a range of steps and copies a few of them at a time into a buffer of
    its own (all of its range at once if `whole`), so no time-major copy of X outlives the
    product (T·B·I values, that would be alive from the forward pass to the weight
    gradients)."""
    T, B, I = X.shape
    step = T if whole else _steps_at_a_time(X)

    def part(t0: int, t1: int) -> None:
        buf = scratch("steps", (min(step, t1 - t0) * B, I), X.dtype)
        for a in range(t0, t1, step):
            b = min(a + step, t1)
            _gemm_into(_copy_steps(X, a, b, buf), W, out[a * B : b * B])

    flops = 2 * T * B * I * W.shape[1]
    min_steps = -(-_MIN_ROWS_MATMUL // max(B, 1))
    run_parts(part, row_parts(T, min_steps) if flops >= MIN_FLOPS else [(0, T)])


class StepRows:
    """The T·B rows of X (T, B, I) in time order, for X whose rows are not one array in that
    order (the time-major view of a batch-first input, kept where it lies): a right factor
    of inner_products, which multiplies it a few steps at a time, copied into a buffer of
    the calling thread (as time_major_matmul reads it)."""

    def __init__(self, X: np.ndarray) -> None:
        T, B, I = X.shape
        self.X, self.B = X, B
        self.shape = (T * B, I)
        self.dtype = X.dtype

    def inner(self, g: np.ndarray, out: np.ndarray, start: int = 0) -> None:
        """out = gᵀ (rows start .. start + len(g)), on this thread; start and len(g) are
        multiples of B (whole steps)."""
        B, I = self.B, self.shape[1]
        a0 = start // B
        a1 = a0 + g.shape[0] // B
        step = _steps_at_a_time(self.X)
        buf = scratch("steps", (min(step, max(a1 - a0, 1)) * B, I), self.dtype)
        for a in range(a0, a1, step):
            b = min(a + step, a1)
            rows = _copy_steps(self.X, a, b, buf)
            _gemm_acc(g[(a - a0) * B : (b - a0) * B].T, rows, out, 0.0 if a == a0 else 1.0)


# inner_products splits the summed rows while the other threads' partial results hold at
# most this many values (on two threads: results of this many values; with more threads, a
# bound on their memory): 2^20 since an LSTM's [X|h] products went side by side for
# batch-first inputs too, where the summed-rows split gained 0.8 ms at (B, T, I, H) =
# (64, 100, 128, 256) and was level at results of 1.5 M values (bench/README.md,
# "Batch-first inputs side by side")
MAX_PARTIAL_ELEMENTS = 1 << 20


def inner_products(
    pairs: Sequence[tuple[np.ndarray, np.ndarray | StepRows]],
    sums: list[np.ndarray],
    outs: Sequence[np.ndarray | None] = (),
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """([gᵀ x for g, x in pairs], [g.sum(axis=0) for g in sums]) for 2-D arrays that share
    their first axis: the deferred weight and bias gradients of a direction, summed over its
    T·B rows, all in one hand-over to the threads. outs[i], where given and not None, is
    where the i-th product goes (C-contiguous, of its shape and dtype: a block of rows of a
    weight gradient, written where it lies instead of made apart and copied in).

    Small results (the other threads' partial results ≤ MAX_PARTIAL_ELEMENTS values in all:
    results of up to 2^20 values on two threads, fewer on more) split the summed rows: each
    thread sums its own contiguous block and the blocks' results are added after, faster than
    splitting the results' rows, where both threads stream every row of each g
    (docs/design.md, "Using the cores"). The sums are then added in another order (results
    differ by rounding). For large results both ways took the same time, and each extra
    thread's partial results would cost memory: there each thread takes a block of the
    results' rows, as one thread would. A right factor may be StepRows (a batch-first
    input where it lies): the summed rows are then split at whole steps. Either way, narrow
    right factors of one left factor go side by side (`_shared_left_factors`)."""
    K = pairs[0][0].shape[0] if pairs else sums[0].shape[0]
    flops = sum(2 * K * g.shape[1] * x.shape[1] for g, x in pairs)
    given = list(outs) + [None] * (len(pairs) - len(outs))
    products = [
        np.empty((g.shape[1], x.shape[1]), np.result_type(g.dtype, x.dtype)) if out is None
        else out
        for (g, x), out in zip(pairs, given, strict=True)
    ]  # fmt: skip
    totals = [np.empty(g.shape[1], g.dtype) for g in sums]
    if not in_session():
        for (g, x), out in zip(pairs, products, strict=True):
            _inner_into(g, x, out)
        return products, [g.sum(axis=0) for g in sums]
    P = len(row_parts(K, _MIN_ROWS_MATMUL)) if flops >= MIN_FLOPS else 1
    if P == 1 or (P - 1) * sum(out.size for out in products) > MAX_PARTIAL_ELEMENTS:
        groups = _shared_left_factors(pairs, products)

        def block(p: int, _: int) -> None:  # rows p·m/P .. (p+1)·m/P of every result
            for g, xs, outs in groups:
                m = outs[0].shape[0]
                r0, r1 = m * p // P, m * (p + 1) // P
                if len(xs) > 1:
                    _side_by_side(g[:, r0:r1], xs, [out[r0:r1] for out in outs])
                else:  # MKL, also inside `concurrently`
                    _inner_into(g[:, r0:r1], xs[0], outs[0][r0:r1])
            for g, out in zip(sums, totals, strict=True):
                m = out.shape[0]
                r0, r1 = m * p // P, m * (p + 1) // P
                _column_sums(g[:, r0:r1], out[r0:r1])

        run_parts(block, [(p, p + 1) for p in range(P)])
        return products, totals
    B = max((x.B for _, x in pairs if isinstance(x, StepRows)), default=1)  # whole steps
    parts = [(a * B, b * B) for a, b in row_parts(K // B, -(-_MIN_ROWS_MATMUL // B))]
    results = [(products, totals)] + [
        ([np.empty_like(out) for out in products], [np.empty_like(out) for out in totals])
        for _ in parts[1:]
    ]
    which = {start: i for i, (start, _) in enumerate(parts)}

    groups = _shared_left_factors(pairs, products)
    index = {id(out): n for n, out in enumerate(products)}

    def part(i: int, j: int) -> None:
        outs, sums_out = results[which[i]]
        for g, xs, group_outs in groups:
            mine = [outs[index[id(o)]] for o in group_outs]
            if len(xs) > 1:
                _side_by_side(g[i:j], [_rows(x, i, j) for x in xs], mine)
            else:
                _inner_into(g[i:j], xs[0], mine[0], i)
        for g, out in zip(sums, sums_out, strict=True):
            _column_sums(g[i:j], out)

    run_parts(part, parts)
    for more_products, more_totals in results[1:]:
        for out, more in zip(products + totals, more_products + more_totals, strict=True):
            out += more
    return products, totals


def _inner_into(g: np.ndarray, x: np.ndarray | StepRows, out: np.ndarray, start: int = 0) -> None:
    """out = gᵀ x[start : start + len(g)] on this thread."""
    if isinstance(x, StepRows):
        x.inner(g, out, start)
    else:
        _gemm_into(g.T, x[start : start + g.shape[0]], out)


def _column_sums(g: np.ndarray, out: np.ndarray) -> None:
    """out = g.sum(axis=0) on this thread (a bias gradient): as the product of a row of ones
    and g on MKL where it is installed, else NumPy's sum. MKL's was faster and nearer the
    float64 sum (docs/design.md, "Measurements behind small choices")."""
    reals = (np.float32, np.float64)
    if _mkl.load(large=True) is None or g.dtype not in reals or out.dtype != g.dtype:
        np.sum(g, axis=0, out=out)
        return
    _gemm_into(_ones_row(g.shape[0], g.dtype), g, out.reshape(1, -1))


@functools.lru_cache(maxsize=16)
def _ones_row(n: int, dtype: np.dtype) -> np.ndarray:
    ones = np.ones((1, n), dtype)
    ones.flags.writeable = False
    return ones


NARROW = 256  # right factors narrower than this are multiplied side by side (see below)...
WIDE = 1024  # ...with a left factor at least this wide
SIDE_BY_SIDE_ROWS = 800  # summed rows per chunk of a side-by-side product


def _same_array(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether a and b are the same values in the same memory (two views of one block, such
    as dA_x and dA_x[:, 0:GH], are: identity alone would miss them)."""
    return a is b or (
        a.shape == b.shape
        and a.strides == b.strides
        and a.dtype == b.dtype
        and a.__array_interface__["data"][0] == b.__array_interface__["data"][0]
    )


def _shared_left_factors(pairs, products) -> list[tuple[np.ndarray, list, list]]:
    """[(g, [x, ...], [out, ...])]: the pairs grouped by their left factor where MKL can
    multiply a group side by side (`_side_by_side`), one of its right factors is narrow, g
    is wide (an LSTM's 4H from H = 256 on) and the products sum at least 4 chunks of rows
    (so that the chunk's copy takes at most a quarter of the right factors' memory); every
    other pair alone. An LSTM's or Elman layer's dW_ih and dW_hh share g = dA. With g
    narrower (an Elman layer's H = 256, an LSTM's 4H = 512) the products apart were as fast
    and the block and its result cost 0.5–2.4 MB a step more (bench/README.md, "Batch-first
    inputs side by side")."""
    groups: list[tuple[np.ndarray, list, list]] = []
    for (g, x), out in zip(pairs, products, strict=True):
        for group in groups:
            if _same_array(group[0], g):
                group[1].append(x)
                group[2].append(out)
                break
        else:
            groups.append((g, [x], [out]))
    mkl = _mkl.load(large=True)
    result = []
    for g, xs, outs in groups:
        together = (
            len(xs) > 1
            and mkl is not None
            and g.dtype in (np.float32, np.float64)
            and all(x.dtype == g.dtype for x in xs)
            and min(x.shape[1] for x in xs) < NARROW
            and g.shape[1] >= WIDE
            and g.shape[0] >= 4 * _chunk_rows(xs)  # the chunk: ≤ 1/4 of the right factors
        )
        if together:
            result.append((g, xs, outs))
        else:
            result += [(g, [x], [out]) for x, out in zip(xs, outs, strict=True)]
    return result


def _chunk_rows(xs: Sequence[np.ndarray | StepRows]) -> int:
    """The summed rows of one chunk of `_side_by_side`: SIDE_BY_SIDE_ROWS, rounded down to
    whole steps (at least one) where a factor is StepRows."""
    B = max((x.B for x in xs if isinstance(x, StepRows)), default=1)
    return max(1, SIDE_BY_SIDE_ROWS // B) * B


def _rows(x: np.ndarray | StepRows, i: int, j: int) -> np.ndarray | StepRows:
    """Rows i..j of a right factor (whole steps of a StepRows)."""
    if isinstance(x, StepRows):
        return StepRows(x.X[i // x.B : j // x.B])
    return x[i:j]


def _side_by_side(
    g: np.ndarray, xs: Sequence[np.ndarray | StepRows], outs: list[np.ndarray]
) -> None:
    """outs[i] = gᵀ xs[i] on this thread, for right factors that share g (K × m): chunk by
    chunk of summed rows (`_chunk_rows`), the chunk's rows of every x copied side by side
    into one scratch block, so that g's chunk is read once, by one wider product that MKL
    runs faster than the narrow ones: MKL's products gᵀx with long K run well below their
    peak for an x under 256 columns (docs/design.md, "Measurements behind small choices").
    A batch-first input (StepRows) is copied into its columns step by step, as it would be
    into a buffer of its own for a product alone."""
    K = g.shape[0]
    widths = [x.shape[1] for x in xs]
    chunk = _chunk_rows(xs)
    block = scratch("side_by_side", (min(K, chunk), sum(widths)), g.dtype)
    acc = scratch("side_by_side_out", (g.shape[1], sum(widths)), g.dtype)
    mkl = _mkl.load(large=True)
    assert mkl is not None  # (products go side by side only with MKL: _shared_left_factors)
    for a in range(0, K, chunk):
        b = min(a + chunk, K)
        col = 0
        for x, w in zip(xs, widths, strict=True):
            if isinstance(x, StepRows):  # (splitting the first axis of a view: still a view)
                steps = block[: b - a, col : col + w].reshape(-1, x.B, w, copy=False)
                np.copyto(steps, x.X[a // x.B : b // x.B])
            else:
                block[: b - a, col : col + w] = x[a:b]
            col += w
        beta = 0.0 if a == 0 else 1.0
        if not mkl.gemm(g[a:b].T, block[: b - a], acc, beta=beta):  # a layout MKL cannot take
            _gemm_acc(g[a:b].T, block[: b - a], acc, beta)  # (a reversed g: NumPy's matmul)
    col = 0
    for out, w in zip(outs, widths, strict=True):
        out[...] = acc[:, col : col + w]
        col += w


# ----------------------------------------------------------------------- scratch buffers


def retain_buffers() -> bool:
    """False under RNNLAB_MALLOC=system: no memory kept between calls (see scratch)."""
    return settings.current().malloc == "retain"


def scratch(name: str, shape: tuple[int, ...], dtype) -> np.ndarray:
    """An uninitialised array of `shape` for a temporary that dies before the call that asks
    for it returns (the input projection, the pre-activation gradients), reused by the next
    call of the same thread instead of mapped afresh: blocks above 32 MB always come fresh
    from the kernel, page-faulted and zeroed, ~10 % of an LSTM step at (128, 50, 256, 512).
    The buffer of each name grows to the largest size asked for and stays with its thread;
    under RNNLAB_MALLOC=system every call gets a new array."""
    dtype = np.dtype(dtype)
    if not retain_buffers():
        return np.empty(shape, dtype)
    size = int(np.prod(shape))
    buffers = _local.__dict__.setdefault("buffers", {})
    buf = buffers.get((name, dtype))
    if buf is None or buf.size < size:
        buf = buffers[(name, dtype)] = np.empty(size, dtype)
    return buf[:size].reshape(shape)


POOL_MIN_BYTES = 32 * 1024 * 1024  # glibc's largest mmap threshold: bigger blocks are mapped
POOL_MAX_FREE_BYTES = 1024 * 1024 * 1024  # freed memory the pool keeps at most
_free_blocks: list[np.ndarray] = []  # freed blocks, uint8, in the order they came back
_free_bytes = 0
_blocks_lock = threading.Lock()
_returned: queue.SimpleQueue[np.ndarray] = queue.SimpleQueue()  # came back while locked


def empty(shape: tuple[int, ...], dtype) -> np.ndarray:
    """np.empty(shape, dtype) for arrays that outlive the call that makes them (the tapes of
    the recurrent layers): one of at least 32 MB takes the memory of such an array that was
    freed, where NumPy's would come fresh from the kernel.

    glibc maps every block above 32 MB (its largest threshold) fresh and unmaps it when it
    is freed, so each training step page-faulted its big tapes anew, and on virtual machines
    that hand freed memory back to their host each fault can cost ten times more
    (docs/design.md, "Using the cores", has the measurements). The pool keeps freed blocks
    (up to 1 GB in all) for the next array of their size; the process keeps its peak memory
    mapped, as with glibc's retained heap (rnnlab.fast.keep_freed_memory). Under
    RNNLAB_MALLOC=system this is np.empty. Returned arrays are C-contiguous; they go back to
    the pool when they and every view of them are gone."""
    dtype = np.dtype(dtype)
    count = int(np.prod(shape))
    nbytes = count * dtype.itemsize
    if nbytes < POOL_MIN_BYTES or not retain_buffers():
        return np.empty(shape, dtype)
    block = _take_block(nbytes)
    flat = np.frombuffer(block.data, dtype, count)  # block.data: a memoryview of block
    # With a memoryview between block and flat, `flat` is the base of every view of it
    # (NumPy collapses bases through arrays only), so its finalizer runs after the last view.
    weakref.finalize(flat, _give_back, block).atexit = False
    return flat.reshape(shape)


def _take_block(nbytes: int) -> np.ndarray:
    """The smallest kept block of nbytes up to a quarter more, or a new one."""
    global _free_bytes
    with _blocks_lock:
        _sort_in_returned()
        best = None
        for i, block in enumerate(_free_blocks):
            if nbytes <= block.size <= nbytes + nbytes // 4:  # at most a quarter unused
                if best is None or block.size < _free_blocks[best].size:
                    best = i
        if best is not None:
            block = _free_blocks.pop(best)
            _free_bytes -= block.size
            return block
    return np.empty(nbytes, np.uint8)


def _give_back(block: np.ndarray) -> None:
    """The finalizer of a pooled array. It may run on a thread that holds _blocks_lock
    already (a garbage collection started by an allocation inside the lock frees a pooled
    array), so it never waits for the lock: where the lock is taken the block waits in
    _returned (a SimpleQueue, safe to put to from a finalizer) for the next holder."""
    if not _blocks_lock.acquire(blocking=False):
        _returned.put(block)
        return
    try:
        _keep(block)
        _sort_in_returned()
    finally:
        _blocks_lock.release()


def _sort_in_returned() -> None:
    """The blocks that came back while the lock was taken, into the pool (lock held)."""
    while True:
        try:
            block = _returned.get_nowait()
        except queue.Empty:
            return
        _keep(block)


def _keep(block: np.ndarray) -> None:
    """Keep a freed block (lock held). Where the pool is full, the blocks that have waited
    longest make room: one larger batch (an evaluation, a long bucket) would otherwise
    leave the pool full of blocks no later array fits, and every later block would go."""
    global _free_bytes
    if block.size > POOL_MAX_FREE_BYTES:
        return  # NumPy frees it
    while _free_blocks and _free_bytes + block.size > POOL_MAX_FREE_BYTES:
        _free_bytes -= _free_blocks.pop(0).size
    _free_blocks.append(block)
    _free_bytes += block.size


def release_pool() -> int:
    """Hand every block the pool keeps back to the system, and the scratch buffers of
    rnnlab's threads (`scratch`: each keeps the largest size its thread asked for, a whole
    tape's copy after a backward pass with retain_tape=True), after a large evaluation batch
    or before a long pause; returns the bytes released. Arrays in use are not affected."""
    global _free_bytes
    with _blocks_lock:
        _sort_in_returned()
        released = _free_bytes
        _free_blocks.clear()
        _free_bytes = 0
    dropped = [0] * max(num_threads(), 1)

    def drop(i: int, _: int) -> None:  # each part on a thread of its own: its own buffers
        dropped[i] = sum(b.nbytes for b in _local.__dict__.pop("buffers", {}).values())

    with session():
        run_parts(drop, [(i, i + 1) for i in range(len(dropped) if enabled() else 1)])
    return released + sum(dropped)


def sessioned(method: Callable[P, R]) -> Callable[P, R]:
    """Decorator: run a module's forward or backward inside session()."""

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with session():
            return method(*args, **kwargs)

    return wrapper
