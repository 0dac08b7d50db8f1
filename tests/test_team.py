"""rnnlab.fast.team: the worker threads that wait busily for their next part, then sleep."""

from __future__ import annotations

import os
import threading
import time

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


@pytest.mark.parametrize("spin", [0.0, 0.005])
def test_every_part_runs_once_the_first_on_the_caller_the_others_on_workers(spin):
    t = team.Team(2)
    team.set_spinning(True)
    try:
        with settings.override(spin=spin):
            for _ in range(20):  # hand-overs while the workers spin, and (spin 0) asleep
                seen = _threads_of(t, [(0, 1), (1, 2), (2, 3)])
                assert seen[0] == threading.current_thread().name
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


def test_watching_sees_a_change_gives_up_after_its_turns_and_stops_when_not_allowed():
    flags, allowed = np.zeros(1, np.int64), np.ones(1, np.int64)
    ms = int(team.ticks_per_second() / 1000)
    start = time.perf_counter()
    assert not team._watch(flags, 0, 0, 20 * ms, allowed)  # nothing changed: gives up
    if team._X86:
        assert 0.015 < time.perf_counter() - start < 5  # after about its 20 ms
    assert not team._watch(flags, 0, 0, 0, allowed)  # no ticks: looks once
    flags[0] = 1
    assert team._watch(flags, 0, 0, 0, allowed)  # changed before it looked
    later = threading.Timer(0.02, lambda: flags.__setitem__(0, 2))
    later.start()
    start = time.perf_counter()
    assert team._watch(flags, 0, 1, 10**15, allowed)  # changed by another thread meanwhile
    assert time.perf_counter() - start < 5
    allowed[0] = 0
    start = time.perf_counter()
    assert not team._watch(flags, 0, 2, 10**15, allowed)  # not allowed: stops at once
    assert time.perf_counter() - start < 1
    later.join()


def _state(thread: threading.Thread) -> str:
    """R (running) or S (sleeping): the thread's state as Linux reports it."""
    with open(f"/proc/self/task/{thread.native_id}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


def _settles(thread: threading.Thread, want: str) -> bool:
    for _ in range(200):  # a state read at one instant may catch a passing moment
        if _state(thread) == want:
            return True
        time.sleep(0.005)
    return False


@pytest.mark.skipif(not team._X86 or not os.path.exists("/proc/self/task"),
                    reason="spinning is x86-only; thread states are read from Linux's /proc")
def test_a_worker_spins_after_its_part_only_while_allowed_and_for_its_spin():
    t = team.Team(1)
    worker = t._workers[0].thread
    try:
        team.set_spinning(True)
        with settings.override(spin=30.0):
            t.run(lambda a, b: None, [(0, 1), (1, 2)])
            assert _settles(worker, "R")  # watching for its next part, not asleep
            team.set_spinning(False)  # the session ended
            assert _settles(worker, "S")
        team.set_spinning(True)
        with settings.override(spin=0.0):
            t.run(lambda a, b: None, [(0, 1), (1, 2)])
            assert _settles(worker, "S")  # asleep at once
        with settings.override(spin=0.05):
            t.run(lambda a, b: None, [(0, 1), (1, 2)])
            assert _settles(worker, "S")  # asleep after its 50 ms
    finally:
        team.set_spinning(False)


def test_the_workers_spin_only_inside_a_session(setenv):
    setenv(RNNLAB_NUM_THREADS="2")
    if not parallel.enabled():
        pytest.skip("splitting is off here (NumPy's OpenBLAS thread count not under control)")
    assert team._allowed[0] == 0
    with parallel.session():
        assert team._allowed[0] == 1
        with parallel.session():
            assert team._allowed[0] == 1
        assert team._allowed[0] == 1
    assert team._allowed[0] == 0


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
