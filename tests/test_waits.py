"""Waits on the shared-memory objects: close by another thread, signals, the master.

Three promises that every waiting call (``Mailbox.send``/``receive``,
``ShmMutex.lock``, ``ShmCondition.wait``, ``Buffer.read``/``peek``/``write``,
``PosixSemaphore.wait``) keeps:

- **close() by another thread** of the same process ends the wait with a
  ValueError that says so, and never unmaps memory that the wait still uses
  (the process died of SIGSEGV);
- **a signal handler** runs during the wait: one that raises ends it (a lock
  without the mutex, a condition wait with it held again), one that returns
  lets it go on (PEP 475);
- **in the master**, a call that would wait is a ContextError (the master
  serves every worker's request: no request is served while it waits), while one that
  need not wait, or does not (``timeout=0``), works.

The order is fixed, never left to delays: a helper thread waits until the
main thread is blocked in a futex on the object's own memory (its system
call, in /proc; not the GIL, not a lock), then acts. Where a regression
would wait for ever, the helper also ends the wait (a message, a broadcast,
an unlock through a second handle), so that the test fails instead of
hanging; with the old code, that wake-up touched the unmapped memory.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fractions
import os
import re
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
import scenario

import netmcore
from netmcore import Buffer, Mailbox, ShmCondition, ShmMutex
from netmcore._buffer import _NOT_EMPTY, _NOT_FULL

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(scenario.SYSCALLS is None, reason="syscall numbers known: x86_64, aarch64"),
]

PTHREAD_OBJECT = 48  # bytes of a pthread mutex, condition or semaphore: its futexes are there


class Interrupt(Exception):
    pass


def _raise_interrupt(signum: int, frame: object) -> None:
    raise Interrupt()


def _futex_on(addr: int) -> Callable[[tuple[int, int]], bool]:
    """Whether a system call is a futex wait on the pthread object at ``addr``."""
    assert scenario.SYSCALLS is not None
    futex = scenario.SYSCALLS["futex"]
    return lambda call: call[0] == futex and addr <= call[1] < addr + PTHREAD_OBJECT


def _main_thread_waits_on(addr: int) -> bool:
    call = scenario.main_thread_syscall()
    return call is not None and _futex_on(addr)(call)


class Helper:
    """A thread that does ``steps`` while the main thread waits; what it
    raises is raised again by :meth:`join` (not lost in the thread)."""

    def __init__(self, steps: Callable[[], None]) -> None:
        self.errors: list[BaseException] = []

        def run() -> None:
            try:
                steps()
            except BaseException as exc:
                self.errors.append(exc)

        self._thread = threading.Thread(target=run)
        self._thread.start()

    def join(self) -> None:
        self._thread.join()
        if self.errors:
            raise self.errors[0]


# --------------------------------------------------------------------------
# 1. close() or release() by another thread while the main thread waits
# --------------------------------------------------------------------------


@dataclasses.dataclass
class _Case:
    """What a close-while-waiting case waits on, and how it ends the wait."""

    wait: Callable[[], object]
    addr: int  # the pthread object the wait blocks on
    close: Callable[[], None]
    wake: Callable[[], object]  # through a second handle: woke the old code into unmapped memory
    cleanup: list[Callable[[], None]]
    # Done by the helper thread before the main thread waits; then, by the
    # main thread after its wait, what the wait left.
    before: Callable[[], object] = lambda: None
    after: Callable[[], str] = lambda: ""


def _mailbox_receive() -> _Case:
    box = Mailbox.create(int, slots=2, slot_size=16)
    other = Mailbox.open(box.res_id, int)
    return _Case(
        box.receive, box._filled, box.close, lambda: other.send(1), [other.release, box.release]
    )


def _mailbox_send() -> _Case:
    box = Mailbox.create(int, slots=1, slot_size=16)
    sender = Mailbox.open(box.res_id, int)
    sender.send(0)  # the box is full
    return _Case(
        lambda: sender.send(1),
        sender._free,
        sender.close,
        box.receive,
        [sender.release, box.release],
    )


def _mutex_lock() -> _Case:
    mutex = ShmMutex.create("normal")
    holder = ShmMutex.open(mutex.res_id)  # the helper thread holds it through this one

    def free_after() -> str:
        free = holder.lock(timeout=0)  # False if the main thread kept it
        if free:
            holder.unlock()
        return f"; free after: {free}"

    return _Case(
        mutex.lock,
        mutex._addr,
        mutex.close,
        holder.unlock,
        [holder.release, mutex.release],
        before=holder.lock,
        after=free_after,
    )


def _condition_wait() -> _Case:
    mutex = ShmMutex.create("errorcheck")
    cond = ShmCondition.create()
    other = ShmCondition.open(cond.res_id)
    held: list[str] = []

    def wait() -> object:
        mutex.lock()
        try:
            return cond.wait(mutex)
        finally:
            try:
                mutex.unlock()
                held.append("; the mutex was held again")
            except PermissionError:
                held.append("; the mutex was not held")

    return _Case(
        wait,
        cond._addr,
        cond.close,
        other.broadcast,
        [other.release, cond.release, mutex.release],
        after=lambda: "".join(held),
    )


def _buffer_read() -> _Case:
    buffer = Buffer.create(16)
    writer = Buffer.open(buffer.res_id)
    return _Case(
        buffer.read,
        buffer._at(_NOT_EMPTY),
        buffer.release,
        lambda: writer.write(b"x"),
        [writer.release, buffer.release],
    )


def _buffer_write() -> _Case:
    buffer = Buffer.create(4)
    buffer.write(b"full")
    reader = Buffer.open(buffer.res_id)
    return _Case(
        lambda: buffer.write(b"more"),
        buffer._at(_NOT_FULL),
        buffer.release,
        reader.read,
        [reader.release, buffer.release],
    )


def _semaphore_wait(timeout: float | None, close: str) -> Callable[[], _Case]:
    def case() -> _Case:
        sem = netmcore.create_sem(0)
        other = netmcore.open_sem(sem.res_id)
        assert sem.wait(timeout=0) is False  # opens the C library's handle that waits
        addr = sem._sem._waitable
        assert addr is not None
        return _Case(
            lambda: sem.wait(timeout=timeout),
            addr,
            getattr(sem, close),
            other.post,  # the old code's wait took it and returned True
            [other.release, sem.release],
        )

    return case


_SEMAPHORE = r"PosixSemaphore\(ResId\(\d+\), '/nmc[^']*', closed\) .* during wait\(\)"
CLOSE_CASES: dict[str, tuple[Callable[[], _Case], str]] = {
    # Without a timeout the old code's waiter was never woken by the close;
    # with one, the close freed the handle under the wait (SIGSEGV).
    "semaphore-wait": (_semaphore_wait(None, "close"), _SEMAPHORE),
    "semaphore-wait-timeout-release": (_semaphore_wait(30, "release"), _SEMAPHORE),
    "mailbox-receive": (
        _mailbox_receive,
        r"Mailbox\(ResId\(\d+\), int, 2x16\) .* during receive\(\)",
    ),
    "mailbox-send": (_mailbox_send, r"Mailbox\(ResId\(\d+\), int, 1x16\) .* during send\(\)"),
    "mutex-lock": (_mutex_lock, r"ShmMutex\(ResId\(\d+\), normal\) .* during lock\(\)"),
    "condition-wait": (_condition_wait, r"ShmCondition\(ResId\(\d+\)\) .* during wait\(\)"),
    "buffer-read": (_buffer_read, r"Buffer\(ResId\(\d+\), capacity=16\) .* during read\(\)"),
    "buffer-write": (_buffer_write, r"Buffer\(ResId\(\d+\), capacity=4\) .* during write\(\)"),
}
AFTER = {"mutex-lock": "; free after: True", "condition-wait": "; the mutex was held again"}


@netmcore.process
def close_during_wait(name: str) -> str:
    case = CLOSE_CASES[name][0]()
    try:
        ready = threading.Event()

        def close_once_the_main_thread_waits() -> None:
            case.before()
            ready.set()
            scenario.wait_until(lambda: _main_thread_waits_on(case.addr), "the main thread's wait")
            case.close()
            case.wake()

        helper = Helper(close_once_the_main_thread_waits)
        ready.wait()
        outcome = scenario.outcome_text(case.wait)
        helper.join()
        return outcome + case.after()
    finally:
        for release in case.cleanup:
            release()


@pytest.mark.parametrize("name", sorted(CLOSE_CASES))
def test_close_by_another_thread_ends_a_wait_with_a_value_error(name: str) -> None:
    """The "close to unblock" pattern (socket.shutdown, Queue.close): the
    waiter gets a ValueError naming the object and the call, a lock ends
    without the mutex and a condition wait with it; the process lives on (the
    memory was unmapped under the wait, and the worker died of SIGSEGV)."""
    outcome = scenario.run_scenario(close_during_wait, name)
    pattern = CLOSE_CASES[name][1]
    suffix = re.escape(AFTER.get(name, ""))
    assert re.fullmatch(
        rf"ValueError: {pattern}: close an object only once no thread uses it, or catch "
        rf"this error to end a waiting thread{suffix}",
        outcome,
    ), outcome


# --------------------------------------------------------------------------
# 2. A signal handler during a mutex or condition wait
# --------------------------------------------------------------------------


def _not_held(outcome: str) -> bool:
    return outcome.startswith("PermissionError: [Errno 1] ShmMutex(") and outcome.endswith(
        "is not held by this thread"
    )


@netmcore.process
def interrupted_lock(arg: tuple[str, str]) -> list[str]:
    """Main thread: lock a mutex that a helper thread holds; a SIGALRM
    handler raises during the wait. ``when``: the helper unlocks once the
    main thread was interrupted ("after"), or at once ("at-once": the
    exception may come just after the wait took the mutex)."""
    kind, when = arg
    signal.signal(signal.SIGALRM, _raise_interrupt)
    mutex = ShmMutex.create(kind)  # type: ignore[arg-type]
    holder = ShmMutex.open(mutex.res_id)
    main = threading.get_ident()
    ready, interrupted = threading.Event(), threading.Event()
    seen: list[str] = []

    def hold_then_interrupt() -> None:
        holder.lock()
        ready.set()
        scenario.wait_until(lambda: _main_thread_waits_on(mutex._addr), "the main thread's wait")
        signal.pthread_kill(main, signal.SIGALRM)
        if when == "after":  # a guard: a wait the handler cannot end ends here
            seen.append(f"interrupted while held: {interrupted.wait(scenario.WAIT)}")
        holder.unlock()

    try:
        helper = Helper(hold_then_interrupt)
        ready.wait()
        try:
            seen.append(scenario.outcome_text(mutex.lock))
        finally:
            interrupted.set()
            helper.join()
        seen.append(f"not held after: {_not_held(scenario.outcome_text(mutex.unlock))}")
        seen.append(f"another can lock it: {holder.lock(timeout=0)}")
        holder.unlock()
    finally:
        holder.release()
        mutex.release()
    return seen


@pytest.mark.parametrize("kind", ["normal", "errorcheck", "recursive"])
def test_a_signal_handler_exception_ends_a_lock_wait_without_the_mutex(kind: str) -> None:
    """As threading.Lock.acquire: the handler's exception comes during the
    wait, and the mutex is not taken (it came only once the holder let go,
    with the mutex held: leaked for good)."""
    seen = scenario.run_scenario(interrupted_lock, (kind, "after"))
    assert seen == [
        "Interrupt: ",
        "interrupted while held: True",
        "not held after: True",
        "another can lock it: True",
    ]


@pytest.mark.parametrize("kind", ["normal", "errorcheck", "recursive"])
def test_a_signal_handler_exception_just_as_the_lock_is_taken_gives_it_back(kind: str) -> None:
    """The holder unlocks right after the signal: the wait may take the
    mutex before Python runs the handler. The exception must not leave it
    held (the caller learns that lock() failed, and would never unlock)."""
    seen = scenario.run_scenario(interrupted_lock, (kind, "at-once"))
    assert seen == ["Interrupt: ", "not held after: True", "another can lock it: True"]


@netmcore.process
def lock_through_a_handler_that_returns(_: int) -> list[str]:
    mutex = ShmMutex.create("normal")
    holder = ShmMutex.open(mutex.res_id)
    handled = threading.Event()
    signal.signal(signal.SIGUSR1, lambda signum, frame: handled.set())
    main = threading.get_ident()
    ready = threading.Event()
    seen: list[str] = []

    def hold_then_signal() -> None:
        holder.lock()
        ready.set()
        scenario.wait_until(lambda: _main_thread_waits_on(mutex._addr), "the main thread's wait")
        signal.pthread_kill(main, signal.SIGUSR1)
        handled_in_time = handled.wait(scenario.WAIT)  # a guard, too
        seen.append(f"handled while held: {handled_in_time}")
        holder.unlock()

    try:
        helper = Helper(hold_then_signal)
        ready.wait()
        seen.append(scenario.outcome_text(mutex.lock))
        helper.join()
        mutex.unlock()
    finally:
        holder.release()
        mutex.release()
    return seen


def test_a_lock_wait_goes_on_through_a_signal_handler_that_returns() -> None:
    """PEP 475: the handler runs during the wait (it ran only once the lock
    was taken), and the wait goes on until the holder lets go."""
    seen = scenario.run_scenario(lock_through_a_handler_that_returns, 0)
    assert seen == ["handled while held: True", "returned True"]


@netmcore.process
def interrupted_condition_wait(how: str) -> list[str]:
    """Main thread: wait on a condition, holding the mutex; a signal comes
    during the wait. ``how``: "raise" (the handler raises) or "signal" (the
    handler signals the condition itself, while the main thread is between
    two slices of its wait: a wake-up that must not be lost)."""
    mutex = ShmMutex.create("errorcheck")
    cond = ShmCondition.create()
    main = threading.get_ident()
    ended = threading.Event()
    seen: list[str] = []
    if how == "raise":
        signal.signal(signal.SIGALRM, _raise_interrupt)
    else:
        signal.signal(signal.SIGALRM, lambda signum, frame: cond.signal())

    def interrupt() -> None:
        scenario.wait_until(lambda: _main_thread_waits_on(cond._addr), "the main thread's wait")
        signal.pthread_kill(main, signal.SIGALRM)
        seen.append(f"ended before any broadcast: {ended.wait(scenario.WAIT)}")  # a guard
        cond.broadcast()

    try:
        mutex.lock()
        helper = Helper(interrupt)
        try:
            seen.append(scenario.outcome_text(lambda: cond.wait(mutex)))
        finally:
            ended.set()
            helper.join()
        seen.append(f"held after: {not _not_held(scenario.outcome_text(mutex.unlock))}")
    finally:
        cond.release()
        mutex.release()
    return seen


def test_a_signal_handler_exception_ends_a_condition_wait_with_the_mutex_held() -> None:
    """As threading.Condition.wait: the exception comes during the wait (it
    came only after a broadcast), with the mutex held again, so that the
    caller's ``with`` unlocks it."""
    seen = scenario.run_scenario(interrupted_condition_wait, "raise")
    assert seen == ["Interrupt: ", "ended before any broadcast: True", "held after: True"]


def test_a_signal_given_between_two_slices_of_a_condition_wait_wakes_it() -> None:
    """A condition wait goes in slices; a signal() given while the waiter
    holds the mutex between two of them (here by its own signal handler)
    wakes it, instead of being lost for a wait that would go on for ever."""
    seen = scenario.run_scenario(interrupted_condition_wait, "signal")
    assert seen == ["returned True", "ended before any broadcast: True", "held after: True"]


# --------------------------------------------------------------------------
# 3. In the master: what would wait is refused, what need not wait works
# --------------------------------------------------------------------------


@contextlib.contextmanager
def _ended_if_it_waits(addr: int, wake: Callable[[], object]) -> Iterator[None]:
    """Should the main thread wait on the object at ``addr`` (a wait that was
    not refused), ``wake`` ends it, so that the test fails instead of hanging."""
    done = threading.Event()

    def watch() -> None:
        scenario.wait_until(
            lambda: done.is_set() or _main_thread_waits_on(addr), "the call or its wait"
        )
        if not done.is_set():
            wake()

    helper = Helper(watch)
    try:
        yield
    finally:
        done.set()
        helper.join()


WOULD_WAIT = r"ContextError: {what} would wait in the master, which never blocks: .*"


def _refused(outcome: str, what: str) -> bool:
    return re.fullmatch(WOULD_WAIT.format(what=what), outcome) is not None


def _mailbox_in_master() -> list[str]:
    box = Mailbox.create(int, slots=1, slot_size=16)
    other = Mailbox.open(box.res_id, int)
    got = []
    try:
        with _ended_if_it_waits(box._filled, lambda: other.send(7)):
            got.append(scenario.outcome_text(box.receive))
        got.append(scenario.outcome_text(lambda: box.receive(timeout=0)))
        other.send(5)
        got.append(scenario.outcome_text(box.receive))  # a message already there
        box.send(1)  # the box is full now
        with _ended_if_it_waits(box._free, box.receive):
            got.append(scenario.outcome_text(lambda: box.send(2)))
        got.append(scenario.outcome_text(lambda: box.send(2, timeout=0)))
    finally:
        other.release()
        box.release()
    return got


def test_mailbox_waits_in_the_master_are_refused() -> None:
    """The master serves every worker's request: a wait there could never
    end (it hung for ever). Taking a message already there works, and so
    does a try without waiting (timeout=0)."""
    got = scenario.in_master(_mailbox_in_master)
    box = r"Mailbox\(ResId\(\d+\), int, 1x16\)"
    assert _refused(got[0], rf"{box}\.receive\(\) on an empty box"), got
    assert re.fullmatch(rf"TimeoutError: no message arrived in {box} within 0 s", got[1]), got
    assert got[2] == "returned 5"
    assert _refused(got[3], rf"{box}\.send\(\) to a full box"), got
    assert re.fullmatch(rf"TimeoutError: {box} stayed full for 0 s", got[4]), got


def _mutex_in_master() -> list[str]:
    mutex = ShmMutex.create("errorcheck")  # a lock it kept by mistake: EDEADLK, not a hang
    holder = ShmMutex.open(mutex.res_id)
    cond = ShmCondition.create()
    got = [scenario.outcome_text(mutex.lock)]  # free: taken at once
    mutex.unlock()
    held, done = threading.Event(), threading.Event()

    def hold() -> None:
        holder.lock()
        held.set()
        scenario.wait_until(
            lambda: done.is_set() or _main_thread_waits_on(mutex._addr), "the call or its wait"
        )
        holder.unlock()

    try:
        helper = Helper(hold)
        held.wait()
        try:
            got.append(scenario.outcome_text(mutex.lock))
            got.append(scenario.outcome_text(lambda: mutex.lock(timeout=0)))
        finally:
            done.set()
            helper.join()
        mutex.lock()
        with _ended_if_it_waits(cond._addr, cond.broadcast):
            got.append(scenario.outcome_text(lambda: cond.wait(mutex)))
        got.append(scenario.outcome_text(lambda: cond.wait(mutex, timeout=0)))
        got.append(scenario.outcome_text(mutex.unlock))  # still held
    finally:
        holder.release()
        mutex.release()
        cond.release()
    return got


def test_mutex_and_condition_waits_in_the_master_are_refused() -> None:
    """A free mutex is taken in the master; a held one is a ContextError
    (False with timeout=0), and so is a condition wait, which leaves the
    mutex held (it returns False at once with timeout=0)."""
    got = scenario.in_master(_mutex_in_master)
    mutex = r"ShmMutex\(ResId\(\d+\), errorcheck\)"
    assert got[0] == "returned True"
    assert _refused(
        got[1],
        rf"locking {mutex}, which is held \(by another thread or process, or by this "
        r"thread: a 'normal' mutex cannot tell\),",
    ), got
    assert got[2] == "returned False"
    assert _refused(got[3], r"ShmCondition\(ResId\(\d+\)\)\.wait\(\)"), got
    assert got[4:] == ["returned False", "returned None"]


def _buffer_in_master() -> list[str]:
    buffer = Buffer.create(4)
    other = Buffer.open(buffer.res_id)
    got = []
    try:
        with _ended_if_it_waits(buffer._at(_NOT_EMPTY), lambda: other.write(b"x")):
            got.append(scenario.outcome_text(buffer.read))
        got.append(scenario.outcome_text(lambda: buffer.read(timeout=0)))
        got.append(scenario.outcome_text(lambda: buffer.write(b"full")))
        with _ended_if_it_waits(buffer._at(_NOT_FULL), other.read):  # room for one byte at least
            got.append(scenario.outcome_text(lambda: buffer.write(b"m")))
        got.append(scenario.outcome_text(lambda: buffer.write(b"m", timeout=0)))
        got.append(scenario.outcome_text(buffer.read))  # bytes already there
    finally:
        other.release()
        buffer.release()
    return got


def test_buffer_waits_in_the_master_are_refused() -> None:
    got = scenario.in_master(_buffer_in_master)
    buffer = r"Buffer\(ResId\(\d+\), capacity=4\)"
    assert _refused(got[0], rf"{buffer}\.read\(\) on an empty buffer"), got
    assert re.fullmatch(rf"TimeoutError: no bytes came into {buffer} within 0 s", got[1]), got
    assert got[2] == "returned None"
    assert _refused(got[3], rf"{buffer}\.write\(\) on a full buffer"), got
    assert re.fullmatch(
        rf"TimeoutError: {buffer} stayed full for 0 s: 0 of 1 bytes were written", got[4]
    ), got
    assert got[5] == "returned b'full'"


@netmcore.process
def send_seven(box: netmcore.ResId) -> int:
    with Mailbox.open(box, int) as sender:
        sender.send(7)
    return 0


def test_another_thread_of_the_master_may_wait_while_the_loop_serves() -> None:
    """Only the thread that runs the master's loop must not wait: a thread
    that the master's own code started waits while the loop serves the
    worker that opens the box and sends."""
    got: list[str] = []
    waiting: list[tuple[threading.Thread, Mailbox[int]]] = []

    def first() -> netmcore.ProcessId[int]:
        box = Mailbox.create(int, slots=1, slot_size=16)
        thread = threading.Thread(target=lambda: got.append(scenario.outcome_text(box.receive)))
        thread.start()
        waiting.append((thread, box))
        return send_seven.start(box.res_id)

    def extract(_c: netmcore.Controller, pid: netmcore.ProcessId[int]) -> object:
        thread, box = waiting[0]
        thread.join()
        box.release()
        return scenario.outcome_value(send_seven.join_outcome_nowait(pid))

    assert netmcore.run(first_process=first, extract_result=extract) == 0
    assert got == ["returned 7"]


@netmcore.process
def _joins_and_waits_with(timeout: float) -> list[str]:
    """A join and a plugin wait, each given ``timeout`` as numpy's float64."""
    sem = netmcore.PluginSemaphore("s")
    sem.create(0)
    said = [repr(_one.join(_one.start(1), timeout=np.float64(timeout)))]
    try:
        sem.decrement(timeout=np.float64(0))
    except TimeoutError:
        said.append("timed out")
    return said


@netmcore.process
def _one(k: int) -> int:
    return k


def test_a_numpy_float_is_a_timeout_of_calls_to_the_master() -> None:
    """It is a float's subclass, and went as it was into the message to the
    master: msgspec refused to encode it (a TypeError)."""
    assert scenario.run_scenario(_joins_and_waits_with, 30.0, init_ctrl=netmcore.add_plugins) == [
        "1",
        "timed out",
    ]


@pytest.mark.parametrize(
    "timeout",
    [np.int64(0), np.float32(0.0), np.float64(0.0), fractions.Fraction(0)],
    ids=["int64", "f32", "f64", "frac"],
)
def test_a_real_number_of_any_type_is_a_timeout(timeout: Any, master_cleanup: None) -> None:
    """As threading takes them: numpy's numbers and Fractions are seconds too
    (they were refused with a TypeError)."""
    box = Mailbox.create(int, slots=1, slot_size=16)
    mutex = ShmMutex.create()
    try:
        with pytest.raises(TimeoutError):
            box.receive(timeout=timeout)
        assert mutex.lock(timeout=timeout) is True
        mutex.unlock()
    finally:
        box.release()
        mutex.release()


@pytest.mark.parametrize(
    "timeout",
    [10**400, 1e300, fractions.Fraction(10**400), threading.TIMEOUT_MAX + 1],
    ids=["int-beyond-float", "1e300", "frac-beyond-float", "beyond-threading"],
)
def test_a_timeout_too_large_for_a_deadline_waits_without_limit(
    timeout: Any, master_cleanup: None
) -> None:
    """As math.inf does: an int or Fraction too large for a float raised a bare
    OverflowError from every waiting call."""
    sem = netmcore.create_sem(0)
    box = Mailbox.create(int, slots=1, slot_size=16)
    mutex = ShmMutex.create()
    buffer = Buffer.create(16)
    try:
        sem.wait(timeout=0)  # opens the handle that waits
        addr = sem._sem._waitable
        assert addr is not None

        def post_once_the_main_thread_waits() -> None:
            scenario.wait_until(lambda: _main_thread_waits_on(addr), "the main thread's wait")
            sem.post()

        helper = Helper(post_once_the_main_thread_waits)
        assert scenario.outcome_text(lambda: sem.wait(timeout=timeout)) == "returned True"
        helper.join()
        box.send(5, timeout=timeout)
        assert box.receive(timeout=timeout) == 5
        assert mutex.lock(timeout=timeout) is True
        mutex.unlock()
        buffer.write(b"abc", timeout=timeout)
        assert buffer.read(timeout=timeout) == b"abc"
    finally:
        for obj in (sem, box, mutex, buffer):
            obj.release()


class _Raised(Exception):
    pass


@pytest.mark.parametrize("kind", ["normal", "errorcheck", "recursive"])
def test_an_exception_just_after_the_lock_in_with_leaves_it_unlocked(
    kind: str, master_cleanup: None
) -> None:
    """A signal handler's exception can come just after the mutex is taken,
    in ``with mutex:``'s enter: the body does not run, and nothing would
    unlock (the mutex stayed held). A trace hook raises at that very point:
    the first line of the enter that runs with the mutex held."""
    mutex = ShmMutex.create(kind)  # type: ignore[arg-type]
    enter_code = ShmMutex.__enter__.__code__

    def raise_once_held(frame: Any, event: str, _arg: Any) -> Any:
        if event == "line" and mutex._state.depth():
            sys.settrace(None)
            raise _Raised
        return raise_once_held

    def trace_the_enter(frame: Any, event: str, _arg: Any) -> Any:
        return raise_once_held if frame.f_code is enter_code else None

    try:
        sys.settrace(trace_the_enter)
        try:
            with pytest.raises(_Raised), mutex:
                pytest.fail("the body ran")
        finally:
            sys.settrace(None)
        got: list[bool] = []
        other = threading.Thread(target=lambda: got.append(mutex.lock(timeout=0)))
        other.start()
        other.join()
        assert got == [True], "the mutex stayed held by the thread that raised"
    finally:
        mutex.release()


def test_a_fork_while_another_thread_waits_leaves_close_able_to_unmap(
    master_cleanup: None,
) -> None:
    """A forked child has only the thread that forked: the calls the other
    threads had in progress never leave there, and its close() kept the box
    mapped for ever (the calls were inherited)."""
    box = Mailbox.create(int, slots=2, slot_size=16)
    other = Mailbox.open(box.res_id, int)
    codes: list[int] = []

    def fork_and_wake() -> None:
        scenario.wait_until(lambda: _main_thread_waits_on(box._filled), "the receive to wait")
        pid = os.fork()
        if pid == 0:  # the child: only this thread; close, and say if it unmapped
            # (The flag, not /proc/self/maps: the dead thread's frame still
            # holds views of the mapping in the child, which keep it mapped.)
            box.close()
            os._exit(0 if box._use._unmapped else 1)
        codes.append(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
        other.send(1)

    try:
        helper = Helper(fork_and_wake)
        assert box.receive() == 1
        helper.join()
        assert codes == [0], "the child's close() left the box mapped"
    finally:
        other.release()
        box.release()
