"""ShmMutex and ShmCondition through signal handlers' exceptions and closes.

Each test here failed before its fix; the docstring of each says how.

- A lock() that took the mutex from a dead holder, cut short by a signal
  handler's exception anywhere after (in the code that tells the death),
  raised while still holding the mutex, inconsistent (unusable for every
  process), or gave it back and lost the death: the next locker got it
  without OwnerDiedError. ``with`` lost it the same way, and so did a
  condition wait whose relock met the death.
- A second exception, during the give-back of a mutex taken from a dead
  holder that the first one cut short, left the mutex held or lost the death.
- unlock() through a handle that another thread closed was refused while
  any other call on that handle was still in progress (a lock() waiting):
  the holder kept the mutex.
- A condition wait with a recursive mutex held several times could end,
  cut short as it took the extra levels back, holding fewer levels than
  its caller's with-statements unlock: mutual exclusion gone.
- A signal() made without the mutex, landing between two slices of a
  condition wait, was missed for a whole slice: on the last slice, wait()
  returned False although the signal came before the deadline.

The signals are sent by the tests themselves, at every point where a
real one's handler could run (``interrupting``); the handler raises.
"""

from __future__ import annotations

import contextlib
import errno
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from interrupting import at_every_point, interrupted_after
from scenario import end_a_thread_holding

from netmcore import OwnerDiedError, ShmCondition, ShmMutex, _pthread, _shm_sync

pytestmark = pytest.mark.timeout(120)

GUARD = 10.0  # bounds a wait that must not expire; never asserted on
SHORT = 0.05  # a timeout that must expire


def _chain(exc: BaseException | None) -> Iterator[BaseException]:
    while exc is not None:
        yield exc
        exc = exc.__context__


def _told_by(exc: BaseException | None) -> bool:
    """Whether ``exc`` (or one it was raised in place of) tells a death."""
    return any(
        isinstance(e, OwnerDiedError)
        or any("died while holding it" in note for note in getattr(e, "__notes__", []))
        for e in _chain(exc)
    )


class _DeadHolder:
    """A normal mutex, and a second handle on it, through which a thread
    that ends holding it takes it (a holder that dies)."""

    def __init__(self) -> None:
        self.mutex = ShmMutex.create("normal")
        self.other = ShmMutex.open(self.mutex.res_id)

    def die_holding(self) -> None:
        end_a_thread_holding(self.other.lock, self.mutex._state.word)

    def next_locker(self) -> str:
        """Lock it by the other handle, as the next locker, and unlock: what it was told."""
        try:
            assert self.other.lock(timeout=0) is True, "the mutex was left held"
            told = "nothing"
        except OwnerDiedError:
            told = "OwnerDiedError"
        self.other.unlock()
        return told

    def release(self) -> None:
        self.other.release()
        self.mutex.release()


@pytest.fixture
def dead_holder(master_cleanup: None) -> Iterator[_DeadHolder]:
    made = _DeadHolder()
    try:
        yield made
    finally:
        made.release()


# --------------------------------------------------------------------------
# 1. A death is never lost, and a lock never raises holding the mutex
# --------------------------------------------------------------------------


def _lock_by(how: str, mutex: ShmMutex, raised: list[BaseException]) -> Callable[[], str]:
    def call() -> str:
        try:
            if how == "lock":
                mutex.lock(timeout=0)
                return "locked"
            with mutex:
                return "locked"
        except OwnerDiedError:
            return "ownerdied"
        except BaseException as exc:
            raised.append(exc)
            raise

    return call


@pytest.mark.parametrize("how", ["lock", "with"])
def test_a_lock_of_a_dead_holders_mutex_interrupted_anywhere_leaves_it_free_and_tells_the_death(
    how: str, dead_holder: _DeadHolder
) -> None:
    """Before: an exception as _took() began (lock) left the mutex held, and
    inconsistent: "Interrupted, yet this thread holds it"; with ``with``,
    one as the repair returned lost the death (the next lock "returned
    True"). Now lock() either raises OwnerDiedError holding it, or raises
    the handler's exception without it, and the death reaches someone: the
    exception (a note on it, for ``with``, whose give-back came after it
    was told) or the next locker."""
    mutex = dead_holder.mutex
    raised: list[BaseException] = []

    def check(result: Any) -> list[str]:
        problems = []
        held = mutex._state.depth()
        if result == "ownerdied" and how == "lock":
            if held != 1:
                problems.append(f"OwnerDiedError, holding it {held} times")
            mutex.unlock()
            held = 0
            told_next = dead_holder.next_locker()
            if told_next != "nothing":
                problems.append(f"told twice: the next locker got {told_next}")
        elif result == "ownerdied":
            told_next = dead_holder.next_locker() if not held else "-"
            if held:
                problems.append(f"with raised OwnerDiedError holding it {held} times")
            elif told_next != "nothing":
                problems.append(f"told twice: the next locker got {told_next}")
        elif result is None:
            if held:
                problems.append(f"interrupted, yet this thread holds it {held} times")
                _pthread.raw_mutex_consistent(mutex._addr)
                mutex.unlock()
            told_next = dead_holder.next_locker()
            if told_next == "nothing" and not _told_by(raised[-1]):
                problems.append("the death was lost: neither the exception nor the next locker")
        else:
            problems.append(f"lock returned {result!r}: the death was not told")
            mutex.unlock()
        dead_holder.die_holding()  # for the next run
        return problems

    dead_holder.die_holding()
    assert at_every_point(_lock_by(how, mutex, raised), check) is None


def test_a_condition_wait_whose_relock_meets_a_death_interrupted_anywhere_tells_it(
    dead_holder: _DeadHolder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The wait gives the mutex up, a holder takes it and dies, and the
    wait's relock takes it back (EOWNERDEAD); a signal handler's exception
    comes at every point from then on. Before: one as the death's message
    was made (its record already cleared) lost it: "death not told nor
    passed on". Now the wait ends holding the mutex, consistent, and the
    death is told by OwnerDiedError, by a note on the exception, or to the
    next locker."""
    mutex = dead_holder.mutex
    cond = ShmCondition.create()
    raised: list[BaseException] = []
    real_unlock = _pthread.raw_mutex_unlock

    @contextlib.contextmanager
    def dies_as_the_wait_gives_it_up(arm: Callable[[], None]) -> Iterator[None]:
        done = [False]

        def unlock(addr: int) -> int:
            rc: int = real_unlock(addr)
            if addr == mutex._addr and not done[0]:
                done[0] = True
                dead_holder.die_holding()
                arm()  # the points are counted from the relock on
            return rc

        with monkeypatch.context() as patch:
            patch.setattr(_pthread, "raw_mutex_unlock", unlock)
            yield

    def call() -> str:
        try:
            cond.wait(mutex, timeout=0)
            return "returned"
        except OwnerDiedError:
            return "ownerdied"
        except BaseException as exc:
            raised.append(exc)
            raise

    def check(result: Any) -> list[str]:
        problems = []
        held = mutex._state.depth()
        if held != 1:
            problems.append(f"the wait ended holding the mutex {held} times, not once")
        if held:
            mutex.unlock()
        told_next = dead_holder.next_locker()
        told_here = result == "ownerdied" or (result is None and _told_by(raised[-1]))
        if not told_here and told_next == "nothing":
            problems.append(f"{result}: the death was lost")
        if told_here and told_next != "nothing":
            problems.append(f"{result}: told twice, the next locker got {told_next}")
        assert mutex.lock(timeout=0) is True  # for the next run
        return problems

    try:
        assert mutex.lock(timeout=0) is True
        assert at_every_point(call, check, first=dies_as_the_wait_gives_it_up) is None
    finally:
        while mutex._state.depth():
            mutex.unlock()
        cond.release()


# --------------------------------------------------------------------------
# 4. A second exception during the give-back
# --------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["lock", "with"])
def test_a_second_interrupt_as_a_dead_holders_mutex_is_given_back_leaves_it_free_and_told(
    how: str, dead_holder: _DeadHolder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A first exception as the lock call returned EOWNERDEAD, then a second
    at every point of the give-back. Before: one as the give-back began
    left the mutex held ("held after"), and one between the repair and the
    record of the death lost it. Now it is given back, and the next locker
    gets OwnerDiedError."""
    mutex = dead_holder.mutex
    real_trylock = _shm_sync._trylock
    raised: list[BaseException] = []

    @contextlib.contextmanager
    def interrupted_as_it_takes_it(arm: Callable[[], None]) -> Iterator[None]:
        def owner_died(rc: int) -> bool:
            if rc != errno.EOWNERDEAD:
                return False
            arm()
            return True

        with monkeypatch.context() as patch:
            patch.setattr(_shm_sync, "_trylock", interrupted_after(real_trylock, owner_died))
            yield

    def check(result: Any) -> list[str]:
        problems = []
        held = mutex._state.depth()
        if result is not None:
            problems.append(f"the first interrupt was lost: {result}")
        if held:
            problems.append(f"held after, {held} times")
            _pthread.raw_mutex_consistent(mutex._addr)
            mutex.unlock()
        told_next = dead_holder.next_locker()
        if told_next == "nothing" and not _told_by(raised[-1] if raised else None):
            problems.append("the death was lost")
        dead_holder.die_holding()
        return problems

    dead_holder.die_holding()
    call = _lock_by(how, mutex, raised)
    assert at_every_point(call, check, first=interrupted_as_it_takes_it) is None


# --------------------------------------------------------------------------
# 2. unlock() through a closed handle, other calls on it in progress
# --------------------------------------------------------------------------


def test_unlock_through_a_handle_closed_while_another_call_on_it_waits_works(
    master_cleanup: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A thread holds the mutex through a handle; this thread waits in a
    lock() on the same handle, and between two slices of that wait the
    handle is closed and the holder unlocks through it. Before: the unlock
    raised ValueError ("closed or released") and the holder kept the
    mutex, as the waiting lock() still used the handle. Now it unlocks."""
    mutex = ShmMutex.create("normal")
    other = ShmMutex.open(mutex.res_id)
    holding, closed, unlocked, finish = (threading.Event() for _ in range(4))
    outcome: dict[str, Any] = {}

    def holder() -> None:
        mutex.lock()
        holding.set()
        closed.wait(GUARD)
        try:
            mutex.unlock()
            outcome["unlock"] = "unlocked"
        except BaseException as exc:
            outcome["unlock"] = repr(exc)
        outcome["held"] = mutex._state.word.value & _pthread.FUTEX_TID_MASK == (
            threading.get_native_id()
        )
        unlocked.set()
        finish.wait(GUARD)  # alive: a thread that ended would free the mutex

    real_stop = ShmMutex._stop_if_closed

    def stop_if_closed(self: ShmMutex) -> None:
        # Between two slices of this thread's lock(), counted on the handle.
        if self is mutex and not closed.is_set():
            mutex.close()
            closed.set()
            assert unlocked.wait(GUARD)
        real_stop(self)

    thread = threading.Thread(target=holder)
    thread.start()
    try:
        assert holding.wait(GUARD)
        monkeypatch.setattr(ShmMutex, "_stop_if_closed", stop_if_closed)
        with pytest.raises(ValueError, match="during lock"):
            mutex.lock(timeout=GUARD)
        monkeypatch.undo()
        assert outcome["unlock"] == "unlocked"
        assert outcome["held"] is False
        assert other.lock(timeout=0) is True  # free, and no death to tell
        other.unlock()
    finally:
        finish.set()
        thread.join()
        with contextlib.suppress(OwnerDiedError):
            other.lock(timeout=0)
        other.unlock()
        other.release()
        mutex.release()


# --------------------------------------------------------------------------
# 3. A condition wait takes every level of a recursive mutex back
# --------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [2, 3])
def test_a_condition_wait_with_a_recursive_mutex_interrupted_anywhere_takes_every_level_back(
    depth: int, master_cleanup: None
) -> None:
    """Before: an exception as the extra levels were taken back (at a call
    of depth() in that loop) ended the wait holding one level, "not 2": the
    inner with's exit then freed the mutex while the outer body ran."""
    mutex = ShmMutex.create("recursive")
    cond = ShmCondition.create()

    def check(result: Any) -> list[str]:
        held = mutex._state.depth()
        problems = [] if held == depth else [f"{result}: held {held} times after, not {depth}"]
        while mutex._state.depth() > depth:
            mutex.unlock()
        while mutex._state.depth() < depth:
            mutex.lock()
        return problems

    try:
        for _ in range(depth):
            mutex.lock()
        assert at_every_point(lambda: cond.wait(mutex, timeout=0), check) is None
    finally:
        while mutex._state.depth():
            mutex.unlock()
        cond.release()
        mutex.release()


# --------------------------------------------------------------------------
# 5. A signal without the mutex between two slices of a wait
# --------------------------------------------------------------------------


def test_a_signal_between_two_slices_of_a_wait_wakes_its_next_slice(
    master_cleanup: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """signal(), made without the mutex (another thread's, as this thread
    waits; here this thread's own), lands as the wait's last slice begins:
    after the wait looked for a signal that came between the slices, before
    it counts itself a waiter again. Before, nothing it sleeps on changed:
    the slice slept to the deadline and wait() returned False (timed out),
    although the signal came before the deadline. Now the slice ends at
    once, and wait() returns True."""
    mutex = ShmMutex.create("normal")
    cond = ShmCondition.create()
    real_next_slice = _pthread._next_slice
    signalled: list[bool] = []

    def next_slice(deadline: float | None) -> tuple[float, bool]:
        at, last = real_next_slice(deadline)
        if last and not signalled:
            signalled.append(True)
            cond.signal()
        return at, last

    monkeypatch.setattr(_pthread, "_next_slice", next_slice)
    try:
        with mutex:
            woken = cond.wait(mutex, timeout=SHORT)
        assert signalled == [True]
        assert woken is True
    finally:
        cond.release()
        mutex.release()
