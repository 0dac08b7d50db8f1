"""rnnlab's worker threads: each waits for its next part busily for a moment, then sleeps.

`rnnlab.fast.parallel.run_parts` hands parts of a batch to these threads. A thread that
sleeps between two parts (blocked on a lock, as a ThreadPoolExecutor's workers are) has to
be woken for the next one, and on the virtual machines rnnlab is measured on a sleeping
core is slow to wake: a part handed to a worker that had slept started 40-80 µs later when
the worker had been idle for 0.1-1 ms, and 200-330 µs later after 5-20 ms (docs/design.md,
"Using the cores", has the measurements). A training step hands over about 11 times, an
LSTM's inference once per call, and the thread handing over then waits for the other parts
the same way. OpenMP's threads (PyTorch's) and OpenBLAS's wait busily instead.

So a worker that finishes a part watches a flag for the next one for `spin` seconds
(RNNLAB_SPIN, 0.005 s unless set; 0 sleeps at once) before it sleeps on a condition
variable, and the thread that handed the parts out watches each worker's done-flag the same
way. The GIL is the other place a thread can fall asleep: CPython's `take_gil` sleeps on a
condition variable whenever another thread holds it. So a worker publishes its part done and
watches for the next from compiled code, without the GIL (it wakes a caller that sleeps only
where that caller says so, by a flag each side writes then reads the other's, sequentially
consistent), and one that saw its next part waits a grace of GRACE seconds more before it
takes the GIL, while the caller goes from handing the part over into its own part's compiled
code. The watching runs in compiled code that holds no GIL: a pause instruction per turn, the
time-stamp counter read against the budget every YIELD_EVERY turns, and sched_yield then
too, so that a thread ready to run on the same core (more busy threads than cores) is not
kept off it for a scheduler tick. It stops at once when no rnnlab session is open
(`set_spinning`, which rnnlab.fast.parallel calls at the edges of its outermost session),
or LINGER seconds after it: outside a session NumPy's OpenBLAS has its own threads back.
Where there is no time-stamp counter to spin by (not x86) the threads sleep at once, as
before.

A worker's part writes into the caller's arrays, so `Team.run` returns, or raises, only once
every part it handed out has ended, whatever interrupts it: the caller waits for each
worker's done-number to reach the number last published to that worker (read when it waits:
only the thread holding the team publishes), a KeyboardInterrupt meanwhile is raised after
the wait, and a worker whose thread has ended raises a RuntimeError after the others' waits.
A part's number travels with the part in the worker's slot, so a hand-over interrupted
halfway never leaves the worker without its slot or its number.

    Team(size).run(fn, parts)    fn(*parts[0]) here, fn(*parts[i]) on worker i; returns
                                 or raises once every part has ended
    Team.close()                 ends the workers' threads
    set_spinning(on, linger)     let the workers watch (inside a session) or not (at once,
                                 or after LINGER seconds)
    ticks_per_second() -> float  the rate of the clock the watching reads (measured once)
"""

from __future__ import annotations

import atexit
import ctypes
import ctypes.util
import functools
import platform
import threading
import time
from collections.abc import Callable
from typing import Any

import llvmlite.binding as ll
import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from rnnlab import _mkl, settings

_X86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686", "x86")
YIELD_EVERY = 64  # turns of the watching loop between two looks at the clock and yields


def _sched_yield_known() -> bool:
    """Give LLVM the address of the C library's sched_yield (POSIX), for `_watch` to call;
    False where there is none (Windows), and the watching loop then never yields."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else ctypes.CDLL(None)
        address = ctypes.cast(libc.sched_yield, ctypes.c_void_p).value
    except (OSError, AttributeError, TypeError):
        return False
    if not address:
        return False
    ll.add_symbol("sched_yield", address)
    return True


_YIELDS = _sched_yield_known()
_sched_yield = types.ExternalFunction("sched_yield", types.int32())


def _atomic_load(ordering: str) -> Any:
    """An intrinsic load(flags, i): flags[i] read atomically with this LLVM ordering."""

    @intrinsic
    def load(typingctx: Any, flags: Any, i: Any) -> Any:
        sig = types.int64(flags, i)

        def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
            data = context.make_array(signature.args[0])(context, builder, args[0]).data
            return builder.load_atomic(builder.gep(data, [args[1]]), ordering, 8)

        return sig, codegen

    return load


_load_acquire = _atomic_load("acquire")
"""flags[i] read with acquire ordering: a read LLVM may not hoist out of a loop."""
_load_seq_cst = _atomic_load("seq_cst")
"""flags[i] read in the single total order of sequentially consistent accesses (after this
thread's `_store_seq_cst` before it, which a plain or acquire read on x86 is not)."""


@intrinsic
def _store_seq_cst(typingctx: Any, flags: Any, i: Any, value: Any) -> Any:
    """flags[i] = value, sequentially consistent: no later read of this thread is done
    before it (x86: an xchg, a full fence)."""
    sig = types.void(flags, i, value)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        data = context.make_array(signature.args[0])(context, builder, args[0]).data
        builder.store_atomic(builder.sext(args[2], ir.IntType(64))
                             if args[2].type != ir.IntType(64) else args[2],
                             builder.gep(data, [args[1]]), "seq_cst", 8)  # fmt: skip
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def _relax(typingctx: Any) -> Any:
    """The CPU's pause instruction (x86; nothing elsewhere): a spinning core yields its
    pipeline to the other hardware thread and draws less power."""
    sig = types.void()

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        if _X86:
            pause = cgutils.get_or_insert_function(  # type: ignore[no-untyped-call]
                builder.module, ir.FunctionType(ir.VoidType(), []), "llvm.x86.sse2.pause"
            )
            builder.call(pause, [])
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def _ticks(typingctx: Any) -> Any:
    """The CPU's time-stamp counter (x86 rdtsc: a constant rate on every x86-64 CPU of the
    last fifteen years), a clock that costs no system call."""
    sig = types.int64()

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        if not _X86:  # never read: no thread spins there (ticks_per_second is 0)
            return ir.Constant(ir.IntType(64), 0)
        read = cgutils.get_or_insert_function(  # type: ignore[no-untyped-call]
            builder.module, ir.FunctionType(ir.IntType(64), []), "llvm.readcyclecounter"
        )
        return builder.call(read, [])

    return sig, codegen


@njit(cache=True, nogil=True)
def _now() -> int:
    # (type: ignore: numba's stubs type an intrinsic's call with the typing context that
    # numba passes it when it compiles the call, and which compiled code does not pass)
    return _ticks()  # type: ignore[call-arg]


@njit(cache=True, nogil=True)
def _watch(flags: Any, i: int, value: int, equal: bool, ticks: int, allowed: Any) -> bool:
    """Wait until (flags[i] == value) is `equal`, for at most `ticks` ticks of the time-stamp
    counter (and as many turns: a turn takes more than a tick) and while allowed[0] is
    nonzero or the counter is below allowed[1] (`_allowed`); True if it came. Every
    YIELD_EVERY turns the thread offers its core to another thread ready to run on it
    (sched_yield, which returns at once when there is none): where
    a program has more busy threads than cores, the thread being waited for may be the one
    waiting for this core. Without a time-stamp counter (not x86) it looks once."""
    if ticks > 0 and _X86:
        start: int = _ticks()  # type: ignore[call-arg]  # (as in _now)
        turn = 0
        while (_load_acquire(flags, i) == value) != equal and (
            _load_acquire(allowed, 0) != 0 or _ticks() < _load_acquire(allowed, 1)
        ):
            turn += 1
            if turn % YIELD_EVERY == 0:
                if _ticks() - start > ticks or turn > ticks:
                    break
                if _YIELDS:
                    _sched_yield()
            else:
                _relax()
    return bool((_load_acquire(flags, i) == value) == equal)


@njit(cache=True, nogil=True)
def _publish(flags: Any, i: int, value: int) -> None:
    """flags[i] = value, sequentially consistent (the caller going to sleep: `_Worker.wait`)."""
    _store_seq_cst(flags, i, value)  # type: ignore[call-arg]  # (as in _now)


@njit(cache=True, nogil=True)
def _done_then_watch(flags: Any, done: int, seen: int, ticks: int, grace: int,
                     allowed: Any) -> int:  # fmt: skip
    """A worker between two parts, without the GIL: publish `done` as its last part done
    (done ≥ 0), then watch for a part numbered other than `seen` as `_watch` does. 1 when one
    came (after `grace` ticks more, see `_Worker`), 0 when none came, -1 at once when the
    caller sleeps waiting for `done` (it must be woken)."""
    if done >= 0:
        _store_seq_cst(flags, _DONE, done)  # type: ignore[call-arg]  # (as in _now)
        if _load_seq_cst(flags, _WAITING) != 0:
            return -1
    if not _watch(flags, _POSTED, seen, False, ticks, allowed):
        return 0
    if grace > 0 and _X86:
        start: int = _ticks()  # type: ignore[call-arg]
        turn = 0
        while _ticks() - start < grace and turn < grace:
            _relax()
            turn += 1
    return 1


# [0]: 1 while a session is open, the workers may spin; [1]: the tick until which they may
# spin on after it closed (LINGER)
_allowed = np.zeros(2, np.int64)

LINGER = 1e-3
"""Seconds the workers go on watching for a part after the last session closed (RNNLAB_SPIN
if shorter), so that a program that calls rnnlab layer by layer, or a forward then a
backward pass with a loss between them in NumPy, finds them awake at its next session
instead of waking a sleeping thread (~50 µs a session on a virtual machine). A watcher
offers its core to any thread ready to run on it every YIELD_EVERY turns, so NumPy's own
OpenBLAS threads meanwhile lose nothing measurable: a two-thread 256³–1024³ product right
after an rnnlab call took as long with 1 ms of lingering as without (bench/README.md,
"Workers that linger after a session")."""


def set_spinning(on: bool, linger: bool = False) -> None:
    """Let the workers (and the thread waiting for them) watch their flags busily, or stop
    them watching: at once, or (linger) after LINGER seconds (RNNLAB_SPIN if shorter)."""
    if on:
        _allowed[0] = 1
        return
    lasting = min(LINGER, settings.current().spin) if linger else 0.0
    _allowed[1] = _now() + int(lasting * ticks_per_second()) if lasting > 0 and _X86 else 0
    _allowed[0] = 0


atexit.register(set_spinning, False)  # no daemon thread spins while the interpreter ends


@functools.cache
def ticks_per_second() -> float:
    """The time-stamp counter's rate, measured once against time.perf_counter over 2 ms; 0
    where there is no such counter (not x86), and the threads then never spin."""
    if not _X86:
        return 0.0
    _watch(np.ones(1, np.int64), 0, 0, False, 0, np.ones(2, np.int64))  # compiled or loaded
    _now()
    start, t0 = _reading()
    while time.perf_counter() - t0 < 0.002:
        pass
    end, t1 = _reading()
    return float(end - start) / (t1 - t0)


def _reading(tries: int = 10, within: float = 20e-6) -> tuple[int, float]:
    """The counter and the perf_counter time it was read at: the midpoint of perf_counter
    read before and after it, the first of `tries` readings bracketed within `within`
    seconds (else the narrowest). `_now` lets go of the GIL, and a thread that takes it then
    (a worker starting up, measuring this rate itself for its GRACE) may keep it for a
    switch interval (5 ms) before this one reads perf_counter: a rate measured from such a
    reading came out 0.34-1.6x of the true rate on a 2-core VM, and every spin, grace and
    linger with it."""
    best = (float("inf"), 0, 0.0)
    for _ in range(tries):
        before = time.perf_counter()
        ticks = _now()
        after = time.perf_counter()
        if after - before < best[0]:
            best = (after - before, ticks, (before + after) / 2)
        if after - before < within:
            break
    return best[1], best[2]


MAX_TICKS = 1 << 62  # any RNNLAB_SPIN, however large, fits an int64 of ticks
GRACE = 10e-6
"""Seconds a worker that saw its next part waits on, still without the GIL, before it takes
the GIL to start the part (`_done_then_watch`). The caller holds the GIL from publishing the
part until its own part's compiled code releases it (a few µs of Python and numba's dispatch);
a worker that asks for the GIL meanwhile sleeps on CPython's GIL condition variable and is
woken only when the caller lets it go, tens of µs later on a virtual machine. On an Intel
Xeon (model 167) a hand-over inside a session took 55 µs, 31 with the worker publishing its
part done without the GIL, 16 with a grace of 3 µs as well for an empty part; over the
bench's S1–S2 steps 10 µs did best of 3, 5, 10, 20 and 40 (bench/README.md, "Hand-overs
without waiting for the GIL")."""


@functools.cache
def _grace_ticks() -> int:
    return int(GRACE * ticks_per_second())


def _ticks_to_spin() -> int:
    return min(int(settings.current().spin * ticks_per_second()), MAX_TICKS)


# Each flag on a cache line of its own (int64s 8 apart): the handing thread writes one, the
# worker the other, and each watches the one the other writes.
_POSTED, _DONE, _WAITING = 0, 8, 16  # _WAITING: 1 while the caller sleeps on `woken`
_CLOSE = object()  # the job that ends a worker's thread (Team.close)

_Job = tuple[Callable[[int, int], object], int, int, Any, int]  # fn, a, b, errstate, ticks


class _Worker:
    """One thread, its two flags (the number of the last part handed to it, and of the last
    part it did) and its slot: the last part handed to it, with its number."""

    def __init__(self, index: int) -> None:
        self.flags = np.zeros(24, np.int64)
        self.woken = threading.Condition()
        self.slot: tuple[int, _Job | object] | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._serve, name=f"rnnlab_{index}", daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        try:
            _mkl.one_thread_here()
        except Exception:  # noqa: BLE001  (a speed setting: the parts run right without it)
            pass
        seen = ticks = 0
        done = -1
        while True:
            came = _done_then_watch(self.flags, done, seen, ticks, _grace_ticks(), _allowed)
            if came < 0:  # the caller sleeps waiting for this part: wake it, then watch
                with self.woken:
                    self.woken.notify_all()
                came = _done_then_watch(self.flags, -1, seen, ticks, _grace_ticks(), _allowed)
            done = -1
            if came == 0:
                with self.woken:
                    while self.flags[_POSTED] == seen:
                        self.woken.wait()
            seen = int(self.flags[_POSTED])
            slot, self.slot = self.slot, None
            if slot is None:  # taken at the last turn (a hand-over that was interrupted)
                number = seen
            else:
                number, job = slot
                if job is _CLOSE:
                    return
                assert isinstance(job, tuple)
                ticks = job[4]
                self.error = _do(job)
                slot = job = None  # nothing of the part's (its closure's arrays) kept alive
            done = number  # published by _done_then_watch, without the GIL

    def post(self, job: _Job | object) -> None:
        """Hand the worker a job (_CLOSE: end its thread). The slot is filled before the
        number is published: the worker reads the slot once the number changes."""
        posted = int(self.flags[_POSTED]) + 1
        self.slot = (posted, job)
        self.flags[_POSTED] = posted
        with self.woken:
            self.woken.notify_all()

    def wait(self, ticks: int) -> BaseException | None:
        """Wait until the worker has done the last part handed to it (the number published
        then: only the thread that holds the team posts, so it does not move meanwhile); the
        error that part raised, if any. Sleeping, it looks at its thread every second: a
        thread that ended raises here instead of leaving the caller waiting for ever."""
        posted = int(self.flags[_POSTED])
        if not _watch(self.flags, _DONE, posted, True, ticks, _allowed):
            with self.woken:
                try:  # (the flag cleared however this is interrupted)
                    _publish(self.flags, _WAITING, 1)  # then read _DONE: see _done_then_watch
                    # A worker asleep for the part whose hand-over was interrupted before its
                    # notify (`post`) would sleep on, and this wait with it, for ever.
                    self.woken.notify_all()
                    while self.flags[_DONE] != posted:
                        if not self.woken.wait(timeout=1.0) and not self.thread.is_alive():
                            raise RuntimeError(f"rnnlab's worker thread {self.thread.name} "
                                               "ended with a part still to do")  # fmt: skip
                finally:
                    self.flags[_WAITING] = 0
        error, self.error = self.error, None
        return error


def _do(job: _Job) -> BaseException | None:
    """Run one part under the caller's NumPy error handling (np.errstate is per thread); the
    error it raised, for the caller's thread to raise."""
    fn, a, b, handling, _ = job
    try:
        with np.errstate(**handling):
            fn(a, b)
    except BaseException as exc:
        return exc
    return None


class Team:
    """`size` worker threads, used by one caller at a time."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._workers = [_Worker(i) for i in range(size)]
        self._busy = threading.Lock()
        self._closed = False

    def run(self, fn: Callable[[int, int], object], parts: list[tuple[int, int]]) -> None:
        """fn(a, b) for every (a, b) in parts: the first here, the others on the workers
        (at most `size` of them). It returns, or raises (the caller's error first, else the
        first worker's), only once every part handed out has ended, however it was
        interrupted: they write into the caller's arrays; a KeyboardInterrupt meanwhile is
        raised after the wait. While another thread's parts are on the workers (two threads
        of a program computing at once), or the team was closed, the parts run here, one
        after the other: they are independent, so the results are the same, and a worker's
        own part never waits for a worker."""
        if len(parts) - 1 > self.size:
            raise ValueError(f"{len(parts)} parts for a team of {self.size} workers and the caller")
        if not self._busy.acquire(blocking=False):
            for a, b in parts:
                fn(a, b)
            return
        try:
            if self._closed:
                for a, b in parts:
                    fn(a, b)
                return
            handling, ticks = np.geterr(), _ticks_to_spin()
            used = self._workers[: len(parts) - 1]
            try:
                for w, (a, b) in zip(used, parts[1:], strict=True):
                    w.post((fn, a, b, handling, ticks))
                fn(*parts[0])
            finally:
                errors = _wait_all(used, ticks)
            for error in errors:
                if error is not None:
                    raise error
        finally:
            self._busy.release()

    def close(self) -> None:
        """End the workers' threads (a team replaced by a larger one); its later runs run
        their parts on the caller's thread."""
        with self._busy:
            self._closed = True
            for w in self._workers:
                w.post(_CLOSE)


def _wait_all(workers: list[_Worker], ticks: int) -> list[BaseException | None]:
    """Every worker's error (or None) once each has done the last part handed to it, even
    where a wait is interrupted or one worker's thread has ended: the first such error is
    raised after every wait."""
    errors: list[BaseException | None] = []
    failed: BaseException | None = None
    for w in workers:
        while True:
            try:
                errors.append(w.wait(ticks))
                break
            except KeyboardInterrupt as exc:  # wait on: the part still writes
                failed = failed or exc
            except RuntimeError as exc:  # its thread ended: nothing more to wait for
                failed = failed or exc
                break
    if failed is not None:
        raise failed
    return errors
