"""rnnlab.fast.team: the worker threads that wait busily for their next part, then sleep."""

from __future__ import annotations

import os
import threading
import time
import types

import numpy as np
import pytest

from rnnlab import settings
from rnnlab.fast import parallel, probe

if not probe.available():
    pytest.skip("rnnlab.fast's kernels (numba) are not available", allow_module_level=True)

from rnnlab.fast import team  # noqa: E402  (imports numba)


def _threads_of(t: team.Team, parts: list[tuple[int, int]]) -> dict[int, str]:
    seen: dict[int, str] = {}

    def record(a: int, b: int) -> None:
        time.sleep(0.002)  # long enough for the parts to overlap
        seen[a] = threading.current_thread().name

    t.run(record, parts)
    return seen


def _within(fn, seconds: float = 60.0):
    """fn() on a thread of its own: its result, or a test failure (not a hang) if it has not
    returned after `seconds`; its exception re-raised here."""
    out: dict[str, object] = {}

    def call() -> None:
        try:
            out["value"] = fn()
        except BaseException as exc:  # noqa: BLE001  (re-raised below)
            out["error"] = exc

    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        pytest.fail(f"still waiting after {seconds} s")
    if "error" in out:
        raise out["error"]  # type: ignore[misc]
    return out.get("value")


@pytest.mark.parametrize("spin", [0.0, 0.005])
def test_every_part_runs_once_the_first_on_the_caller_the_others_on_workers(spin):
    t = team.Team(2)
    team.set_spinning(True)
    try:
        with settings.override(spin=spin):
            for _ in range(20):  # hand-overs while the workers spin, and (spin 0) asleep
                seen = _within(lambda: _threads_of(t, [(0, 1), (1, 2), (2, 3)]))
                assert seen[0] not in (w.thread.name for w in t._workers)
                assert sorted(seen) == [0, 1, 2]
                assert len(set(seen.values())) == 3
    finally:
        team.set_spinning(False)


def test_a_worker_s_error_is_raised_after_every_part_has_ended():
    t = team.Team(1)
    ended: list[int] = []

    def part(a: int, b: int) -> None:
        if a == 1:
            raise KeyError("worker")
        time.sleep(0.01)
        ended.append(a)

    with pytest.raises(KeyError, match="worker"):
        t.run(part, [(0, 1), (1, 2)])
    assert ended == [0]
    t.run(lambda a, b: ended.append(a), [(0, 1), (1, 2)])  # the team still works
    assert sorted(ended) == [0, 0, 1]


def test_the_caller_s_error_waits_for_the_workers_part():
    """The parts share the caller's buffers: nothing returns while a worker still writes."""
    t = team.Team(1)
    ended: list[int] = []

    def part(a: int, b: int) -> None:
        if a == 0:
            raise ValueError("caller")
        time.sleep(0.05)
        ended.append(a)

    with pytest.raises(ValueError, match="caller"):
        t.run(part, [(0, 1), (1, 2)])
    assert ended == [1]


def test_more_parts_than_the_team_has_threads_is_an_error():
    with pytest.raises(ValueError, match="3 parts for a team of 1"):
        team.Team(1).run(lambda a, b: None, [(0, 1), (1, 2), (2, 3)])


def test_two_callers_at_once_and_a_part_that_splits_again_both_finish():
    """A second caller (another thread of the program) or a worker's own part that asks for
    the team while it is busy runs its parts itself, one after the other: no deadlock, every
    part once."""
    t = team.Team(1)
    done: list[tuple[str, int]] = []
    lock = threading.Lock()

    def inner(tag: str):
        def part(a: int, b: int) -> None:
            time.sleep(0.001)
            with lock:
                done.append((tag, a))

        return part

    def outer(a: int, b: int) -> None:
        t.run(inner(f"nested{a}"), [(0, 1), (1, 2)])

    callers = [threading.Thread(target=t.run, args=(outer, [(0, 1), (1, 2)])) for _ in range(3)]
    for c in callers:
        c.start()
    for c in callers:
        c.join(timeout=30)
        assert not c.is_alive(), "a caller hung"
    assert sorted(done) == sorted([(f"nested{a}", p) for a in (0, 1) for p in (0, 1)] * 3)


def test_watching_waits_for_a_change_or_a_value_gives_up_and_stops_when_not_allowed():
    flags, allowed = np.zeros(1, np.int64), np.array([1, 0], np.int64)  # [1]: no lingering
    ms = int(team.ticks_per_second() / 1000)
    start = time.perf_counter()
    try:  # nothing changes: it gives up after its 20 ms (stopped by `allowed` if it does not)
        assert not _within(lambda: team._watch(flags, 0, 0, False, 20 * ms, allowed), 30)
    finally:
        allowed[0] = 0 if time.perf_counter() - start > 30 else 1
    if team._X86:
        assert 0.015 < time.perf_counter() - start < 5
    assert not team._watch(flags, 0, 0, False, 0, allowed)  # no ticks: looks once
    assert not team._watch(flags, 0, 3, True, 0, allowed)  # not 3 yet
    flags[0] = 1
    assert team._watch(flags, 0, 0, False, 0, allowed)  # changed before it looked
    assert team._watch(flags, 0, 1, True, 0, allowed)  # the value it waits for
    if team._X86:
        later = threading.Timer(0.02, lambda: flags.__setitem__(0, 2))
        later.start()
        start = time.perf_counter()
        assert team._watch(flags, 0, 2, True, 10**15, allowed)  # set by another thread
        assert time.perf_counter() - start < 5
        later.join()
    allowed[0] = 0
    start = time.perf_counter()
    assert not team._watch(flags, 0, 7, True, 10**15, allowed)  # not allowed: stops at once
    assert time.perf_counter() - start < 1


def test_a_worker_publishes_its_part_done_then_watches_for_the_next():
    """_done_then_watch, what a worker runs between two parts without the GIL: the part done
    published first; -1 at once where the caller sleeps waiting (it must be woken); else 1
    when a part numbered other than `seen` came (after its grace), 0 when none did."""
    flags, allowed = np.zeros(24, np.int64), np.array([1, 0], np.int64)
    assert team._done_then_watch(flags, 5, 0, 0, 0, allowed) == 0  # nothing posted: looks once
    assert flags[team._DONE] == 5
    flags[team._WAITING] = 1
    waking = lambda: team._done_then_watch(flags, 6, 0, 10**15, 0, allowed)  # noqa: E731
    assert _within(waking, 5) == -1  # at once: wake the caller
    assert flags[team._DONE] == 6
    flags[team._WAITING] = 0
    flags[team._POSTED] = 1
    assert team._done_then_watch(flags, -1, 0, 0, 0, allowed) == 1  # -1: nothing published
    assert flags[team._DONE] == 6
    if team._X86:
        grace = int(0.05 * team.ticks_per_second())
        start = time.perf_counter()
        assert team._done_then_watch(flags, 7, 0, 0, grace, allowed) == 1
        assert time.perf_counter() - start >= 0.04  # its grace waited out
        later = threading.Timer(0.02, lambda: flags.__setitem__(team._POSTED, 2))
        later.start()
        assert _within(lambda: team._done_then_watch(flags, 8, 1, 10**15, 0, allowed)) == 1
        later.join()
    allowed[0] = 0  # outside a session: looks once
    assert team._done_then_watch(flags, 9, 2, 10**15, 0, allowed) == 0


def test_a_caller_asleep_on_a_long_part_is_woken_when_it_ends():
    """With no spin the caller sleeps at once; the worker, publishing its part done without
    the GIL, sees the caller's flag and wakes it (without, it would find the part done only
    at its once-a-second look)."""
    t = team.Team(1)
    team.set_spinning(True)
    try:
        with settings.override(spin=0.0):
            for _ in range(3):
                start = time.perf_counter()
                _within(lambda: t.run(lambda a, b: time.sleep(0.05 * a), [(0, 1), (1, 2)]))
                assert time.perf_counter() - start < 0.9
                assert t._workers[0].flags[team._WAITING] == 0
    finally:
        team.set_spinning(False)
        t.close()


def _states(thread: threading.Thread, samples: int = 20, every: float = 0.01) -> list[str]:
    """The thread's state as Linux reports it (R running or ready to run, S asleep), sampled
    `samples` times. A spinning thread is R however busy the machine is (it yields its core
    but stays ready), a sleeping one S."""
    seen = []
    for _ in range(samples):
        with open(f"/proc/self/task/{thread.native_id}/stat") as f:
            seen.append(f.read().rsplit(")", 1)[1].split()[0])
        time.sleep(every)
    return seen


def _spins(thread: threading.Thread) -> bool:
    return _states(thread).count("R") >= 18  # (a sample may catch it between two states)


def _sleeps(thread: threading.Thread) -> bool:
    """Asleep, and staying so: on a loaded machine a thread that has just finished its part
    may wait a moment to be scheduled onto the futex it sleeps on (an R sample right after
    `run` returned failed a CI run under load), so it gets 0.5 s to get there first. One
    that spins is R all along and never passes."""
    deadline = time.perf_counter() + 0.5
    while _states(thread, samples=1, every=0.0) != ["S"]:
        if time.perf_counter() > deadline:
            return False
        time.sleep(0.005)
    return set(_states(thread)) == {"S"}


ON_LINUX_X86 = pytest.mark.skipif(
    not team._X86 or not os.path.exists("/proc/self/task"),
    reason="spinning is x86-only; threads' states are read from Linux's /proc",
)


@ON_LINUX_X86
def test_a_worker_spins_after_its_part_only_while_allowed_and_for_its_spin():
    t = team.Team(1)
    worker = t._workers[0].thread
    try:
        team.set_spinning(True)
        with settings.override(spin=30.0):
            t.run(lambda a, b: None, [(0, 1), (1, 2)])
            assert _spins(worker)  # watching for its next part, not asleep
            team.set_spinning(False)  # the session ended: it sleeps at once
            time.sleep(0.02)
            assert _sleeps(worker)
        team.set_spinning(True)
        with settings.override(spin=0.0):
            t.run(lambda a, b: None, [(0, 1), (1, 2)])
            assert _sleeps(worker)  # asleep at once
        with settings.override(spin=2.0):
            start = time.perf_counter()
            t.run(lambda a, b: None, [(0, 1), (1, 2)])
            assert _spins(worker)  # within its 2 s
            time.sleep(max(0.0, start + 2.3 - time.perf_counter()))
            assert _sleeps(worker)  # asleep after them
        with settings.override(spin=1e30):  # however large: the ticks are capped, no error
            t.run(lambda a, b: None, [(0, 1), (1, 2)])
            assert team._ticks_to_spin() == team.MAX_TICKS
    finally:
        team.set_spinning(False)
        t.close()


@ON_LINUX_X86
def test_the_workers_linger_after_a_session_then_sleep(setenv, monkeypatch):
    """After the last session closes the workers watch on for LINGER seconds (RNNLAB_SPIN if
    shorter), then sleep; a part handed over meanwhile is taken (the next session's)."""
    setenv(RNNLAB_NUM_THREADS="2")
    if not parallel.enabled():
        pytest.skip("splitting is off here (NumPy's OpenBLAS thread count not under control)")
    monkeypatch.setattr(team, "LINGER", 0.6)  # long enough to see (1 ms in use)
    with settings.override(spin=30.0):
        with parallel.session():
            parallel.run_parts(lambda a, b: None, [(0, 1), (1, 2)])
            worker = parallel._workers(1)._workers[0].thread
        closed = time.perf_counter()
        assert team._allowed[0] == 0 and team._allowed[1] > 0
        assert _spins(worker)  # 0.2 s of the 0.6
        with parallel.session():
            parallel.run_parts(lambda a, b: None, [(0, 1), (1, 2)])  # taken while lingering
        time.sleep(max(0.0, closed + 1.5 - time.perf_counter()))
        assert _sleeps(worker)  # asleep after the linger
    with settings.override(spin=0.1):  # RNNLAB_SPIN shorter: it bounds the linger
        with parallel.session():
            parallel.run_parts(lambda a, b: None, [(0, 1), (1, 2)])
        assert team._allowed[1] - team._now() <= 0.11 * team.ticks_per_second()
    team.set_spinning(False)  # at once (the interpreter's end, a fork): no lingering
    assert team._allowed[:].tolist() == [0, 0]


@ON_LINUX_X86
def test_the_workers_spin_only_inside_a_session(setenv):
    setenv(RNNLAB_NUM_THREADS="2")
    if not parallel.enabled():
        pytest.skip("splitting is off here (NumPy's OpenBLAS thread count not under control)")
    assert team._allowed[0] == 0
    with settings.override(spin=30.0):
        with parallel.session():
            assert team._allowed[0] == 1
            with parallel.session():
                parallel.run_parts(lambda a, b: None, [(0, 1), (1, 2)])
            assert team._allowed[0] == 1
            worker = parallel._workers(1)._workers[0].thread
            assert _spins(worker)
        assert team._allowed[0] == 0
        time.sleep(0.02)
        assert _sleeps(worker)


def test_a_worker_keeps_nothing_of_a_part_after_it():
    import gc
    import weakref

    class Operand:
        pass

    t = team.Team(1)
    try:
        operand = Operand()
        seen = weakref.ref(operand)
        t.run(lambda a, b, x=operand: None, [(0, 1), (1, 2)])
        del operand
        gc.collect()
        assert seen() is None
    finally:
        t.close()


def test_a_part_left_behind_by_an_interrupted_wait_does_not_end_the_next_run_early():
    """An interrupted caller returns while its worker still runs; the next run waits for
    its own part (not for any part to end)."""
    t = team.Team(1)
    w = t._workers[0]
    ended: list[str] = []
    started = threading.Event()

    def left(a: int, b: int) -> None:
        started.set()
        time.sleep(0.2)
        ended.append("left")

    try:
        w.post((left, 1, 2, np.geterr(), 0))  # handed out, never waited for
        assert started.wait(timeout=30)
        t.run(lambda a, b: ended.append(f"part {a}"), [(0, 1), (1, 2)])
        assert sorted(ended) == ["left", "part 0", "part 1"]  # its own part 1 too
    finally:
        t.close()


INTERRUPTED = """
import signal, threading, time
import numpy as np
from rnnlab import settings
from rnnlab.fast import team
t = team.Team(1)
team.ticks_per_second()  # compiled or loaded from numba's cache before the signal
t.run(lambda a, b: None, [(0, 1), (1, 2)])
ended = []
def part(a, b):
    if a == 1:
        time.sleep(0.6)
        ended.append(a)
main = threading.main_thread().ident
threading.Timer(0.2, lambda: signal.pthread_kill(main, signal.SIGINT)).start()
with settings.override(spin=0.0):  # the caller sleeps in its wait
    try:
        t.run(part, [(0, 1), (1, 2)])
    except KeyboardInterrupt:
        print("interrupted after the worker's part:", ended == [1])
"""


@pytest.mark.skipif(not hasattr(__import__("signal"), "pthread_kill"), reason="POSIX signals")
def test_a_keyboard_interrupt_is_raised_once_the_workers_part_has_ended():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", INTERRUPTED], capture_output=True, text=True,
                         timeout=120)  # fmt: skip
    assert out.stdout.strip() == "interrupted after the worker's part: True", out.stderr


def test_a_closed_team_runs_its_parts_on_the_caller():
    t = team.Team(1)
    t.close()
    t._workers[0].thread.join(timeout=30)
    assert not t._workers[0].thread.is_alive()
    names: list[str] = []
    _within(lambda: t.run(lambda a, b: names.append(threading.current_thread().name),
                          [(0, 1), (1, 2)]))  # fmt: skip
    assert len(names) == 2 and "rnnlab_0" not in names


def test_a_dead_worker_raises_after_the_others_parts_instead_of_waiting_for_ever():
    t = team.Team(2)
    dead = t._workers[0]
    dead.post(team._CLOSE)  # its thread ends (as one killed would), the team not told
    dead.thread.join(timeout=30)
    ended: list[int] = []

    def part(a: int, b: int) -> None:
        if a == 2:
            time.sleep(1.5)
            ended.append(a)

    with settings.override(spin=0.0), pytest.raises(RuntimeError, match="rnnlab_0 ended"):
        _within(lambda: t.run(part, [(0, 1), (1, 2), (2, 3)]))
    assert ended == [2]  # the live worker's part ended before the error came
    t.close()


class _NotifyInterrupted(threading.Condition):
    """A Condition whose first notify_all is interrupted (a KeyboardInterrupt landing in a
    hand-over after the part's number was published)."""

    interrupted = False

    def notify_all(self) -> None:
        if not self.interrupted:
            self.interrupted = True
            raise KeyboardInterrupt
        super().notify_all()


@ON_LINUX_X86
def test_an_interrupt_inside_a_hand_over_still_waits_for_the_part_handed_over():
    t = team.Team(1)
    w = t._workers[0]
    ended: list[int] = []

    def part(a: int, b: int) -> None:
        if a == 1:
            time.sleep(0.3)
            ended.append(a)

    try:
        team.set_spinning(True)
        with settings.override(spin=30.0):  # watching: it takes the part without the notify
            t.run(lambda a, b: None, [(0, 1), (1, 2)])  # the worker watches for its next part
            w.woken = _NotifyInterrupted()
            with pytest.raises(KeyboardInterrupt):
                _within(lambda: t.run(part, [(0, 1), (1, 2)]))
            assert ended == [1]  # not before the part handed over had ended
            _within(lambda: t.run(part, [(0, 1), (1, 2)]))  # and the team goes on
            assert ended == [1, 1]
    finally:
        team.set_spinning(False)
        t.close()


def test_a_larger_team_ends_the_threads_of_the_one_it_replaces(setenv, monkeypatch):
    setenv(RNNLAB_NUM_THREADS="2")
    monkeypatch.setattr(parallel, "_team", None)
    small = parallel._workers(1)
    assert small.size == 1 and parallel._workers(1) is small
    setenv(RNNLAB_NUM_THREADS="4")
    large = parallel._workers(3)
    assert large.size == 3
    for w in small._workers:
        w.thread.join(timeout=30)
        assert not w.thread.is_alive()
    large.close()


def test_ticks_per_second_is_measured_and_the_spin_converts_to_ticks():
    rate = team.ticks_per_second()
    if not team._X86:
        assert rate == 0  # no clock to spin by: the threads sleep at once
    else:
        assert 1e8 < rate < 1e11  # a time-stamp counter runs at 0.1-100 GHz
    with settings.override(spin=0.002):
        assert team._ticks_to_spin() == int(0.002 * rate)
    with settings.override(spin=0.0):
        assert team._ticks_to_spin() == 0


@ON_LINUX_X86
def test_an_interrupt_inside_a_hand_over_to_a_sleeping_worker_still_wakes_it(monkeypatch):
    """As above with the worker asleep (RNNLAB_SPIN=0): the hand-over's own notify
    interrupted, the caller's wait must wake the worker, else each waits for the other for
    ever. The worker's condition is the interrupting one from the start (swapped in later,
    a worker already asleep on the old one would never see it: the test hung under load)."""
    made: list[_NotifyInterrupted] = []

    def condition(*args: object) -> _NotifyInterrupted:
        made.append(_NotifyInterrupted(*args))
        made[-1].interrupted = True  # notifies as usual until told otherwise
        return made[-1]

    proxy = types.ModuleType("threading")
    proxy.__dict__.update(threading.__dict__)
    proxy.Condition = condition  # type: ignore[attr-defined]
    monkeypatch.setattr(team, "threading", proxy)
    t = team.Team(1)
    monkeypatch.undo()
    w = t._workers[0]
    assert w.woken is made[0]
    ended: list[int] = []

    def part(a: int, b: int) -> None:
        if a == 1:
            time.sleep(0.1)
            ended.append(a)

    try:
        with settings.override(spin=0.0):
            _within(lambda: t.run(lambda a, b: None, [(0, 1), (1, 2)]), 10)
            assert _sleeps(w.thread)  # asleep on its condition for the next part
            w.woken.interrupted = False  # this hand-over's notify raises
            with pytest.raises(KeyboardInterrupt):
                _within(lambda: t.run(part, [(0, 1), (1, 2)]), 10)
            assert ended == [1]
            _within(lambda: t.run(part, [(0, 1), (1, 2)]), 10)  # and the team goes on
            assert ended == [1, 1]
    finally:
        with w.woken:  # (a hung hand-over woken, so that close does not wait for it)
            threading.Condition.notify_all(w.woken)
        _within(t.close, 10)
def test_an_interrupt_as_the_caller_goes_to_sleep_leaves_no_flag_asking_for_wake_ups(monkeypatch):
    """_WAITING set and the wait interrupted before it slept: the flag is cleared all the
    same. Left at 1, the worker would take the GIL to notify after every later part, the
    hand-over cost that publishing without the GIL saves."""
    t = team.Team(1)
    w = t._workers[0]
    publish = team._publish
    interrupted: list[bool] = []

    def interrupted_after(flags, i, value):  # the flag published, then the interrupt
        publish(flags, i, value)
        if not interrupted:
            interrupted.append(True)
            deadline = time.perf_counter() + 10
            while flags[team._DONE] != flags[team._POSTED] and time.perf_counter() < deadline:
                # the worker's part done meanwhile, so that the retry finds it; waiting on the
                # condition, which the caller holds here and a worker woken from its sleep
                # must take again to run its part (time.sleep kept it: under load the worker
                # woke late, and this waited out its 10 s)
                w.woken.wait(0.001)
            raise KeyboardInterrupt

    monkeypatch.setattr(team, "_publish", interrupted_after)
    try:
        with settings.override(spin=0.0), pytest.raises(KeyboardInterrupt):
            _within(lambda: t.run(lambda a, b: time.sleep(0.05 * a), [(0, 1), (1, 2)]), 10)
        assert interrupted and w.flags[team._WAITING] == 0
    finally:
        t.close()


@pytest.mark.skipif(not team._X86, reason="no time-stamp counter: nothing measured")
def test_ticks_per_second_holds_when_another_thread_takes_the_gil_during_a_reading(monkeypatch):
    """_now lets go of the GIL; a thread that takes it then (a worker starting, measuring
    the rate itself) keeps it for up to a switch interval before the measuring thread reads
    perf_counter: every other reading held up 3 ms here, as such a thread would."""
    now = team._now
    now()  # compiled or loaded
    real = []
    for _ in range(2):  # the true rate, each reading bracketed by perf_counter
        before, ticks, after = time.perf_counter(), now(), time.perf_counter()
        real.append((ticks, (before + after) / 2))
        time.sleep(0.05)
    rate = (real[1][0] - real[0][0]) / (real[1][1] - real[0][1])
    calls = [0]

    def held_up() -> int:
        ticks = now()
        calls[0] += 1
        if calls[0] % 2 == 0:
            time.sleep(0.003)
        return ticks

    monkeypatch.setattr(team, "_now", held_up)
    team.ticks_per_second.cache_clear()
    try:
        assert team.ticks_per_second() == pytest.approx(rate, rel=0.1)
    finally:
        team.ticks_per_second.cache_clear()  # measured again, undisturbed, when next asked
