"""A signal handler's exception in a worker with several threads loses no reply.

Each scenario runs in a worker (the first process). The signal that
interrupts a wait goes with ``pthread_kill`` to a helper thread, as the
kernel sends a process-directed signal whenever the main thread is not the
one that takes it: the main thread's blocking ``recv`` is then not
interrupted, and Python raises the handler's exception in the main thread
only after ``recv`` has returned a message. The link peeks at a reply, stores
it, and only then takes it off the socket, so that exception loses nothing.

The order is fixed, never left to delays: the helper waits until the main
thread is blocked reading the link (its system call, in /proc), trips the
signal, and only then lets the reply come (a gate pipe, or a request of its
own). So the exception always comes right after the main thread read that
reply.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from typing import Any

import pytest
import scenario

import netmcore
from netmcore import PluginMutex, PluginSemaphore

pytestmark = [
    pytest.mark.timeout(30),
    pytest.mark.skipif(scenario.SYSCALLS is None, reason="syscall numbers known: x86_64, aarch64"),
]


class Interrupt(Exception):
    pass


def _raise_interrupt(signum: int, frame: object) -> None:
    raise Interrupt()


def _interrupt_once_main_thread_reads(then: Callable[[], None]) -> threading.Thread:
    """In a helper thread: once the main thread is blocked reading the link,
    trip SIGALRM (its Python handler runs in the main thread as soon as the
    main thread's recv returns), then call ``then``, which makes a reply come."""

    def helper() -> None:
        assert scenario.SYSCALLS is not None
        recvfrom = scenario.SYSCALLS["recvfrom"]
        scenario.wait_until_main_thread_blocks(lambda call: call[0] == recvfrom)
        signal.pthread_kill(threading.get_ident(), signal.SIGALRM)
        then()

    thread = threading.Thread(target=helper, daemon=True)
    thread.start()
    return thread


@netmcore.process
def gated_square(arg: tuple[int, int]) -> int:
    """Wait until the gate opens, then return k * k."""
    gate_r, k = arg
    os.read(gate_r, 1)
    return k * k


@netmcore.process
def square(k: int) -> int:
    return k * k


@netmcore.process
def interrupted_join(gate: tuple[int, int]) -> str:
    gate_r, gate_w = gate
    signal.signal(signal.SIGALRM, _raise_interrupt)
    pid = gated_square.start((gate_r, 7))
    _interrupt_once_main_thread_reads(lambda: os.write(gate_w, b"g"))
    try:
        return f"not interrupted: {gated_square.join(pid)}"
    except Interrupt:
        pass
    try:
        return f"rejoined: {gated_square.join(pid)}"
    except netmcore.NetmcoreError as exc:
        return f"lost: {type(exc).__name__}"


def test_interrupted_join_keeps_the_result_read_just_before(gate: tuple[int, int]) -> None:
    """An interrupted join "loses nothing" (README): the result read just
    before the handler's exception is kept for the next join (it was dropped,
    and the next join raised UnknownProcess)."""
    assert scenario.run_scenario(interrupted_join, gate) == "rejoined: 49"


@netmcore.process
def interrupt_reads_another_threads_reply(gate: tuple[int, int]) -> list[str]:
    gate_r, gate_w = gate
    signal.signal(signal.SIGALRM, _raise_interrupt)
    slow = gated_square.start((gate_r, 3))
    got: list[str] = []

    def start_from_this_thread() -> None:
        # The main thread reads the link: it reads this Started reply.
        pid = square.start(5)
        got.append(f"started, joined {square.join(pid)}")

    helper = _interrupt_once_main_thread_reads(start_from_this_thread)
    try:
        got.append(f"not interrupted: {gated_square.join(slow)}")
    except Interrupt:
        got.append("interrupted")
    helper.join(scenario.WAIT)
    if helper.is_alive():
        got.append("the other thread still waits for its reply")
    os.write(gate_w, b"g")
    got.append(f"rejoined: {gated_square.join(slow)}")
    return got


def test_interrupt_in_the_reading_thread_keeps_another_threads_reply(
    gate: tuple[int, int],
) -> None:
    """The main thread, reading the shared link for its join, reads the
    Started reply of another thread's start just before the handler's
    exception: the reply still reaches that thread (it waited for ever)."""
    got = scenario.run_scenario(interrupt_reads_another_threads_reply, gate)
    # The two threads go on at once: they record in either order.
    assert sorted(got[:2]) == ["interrupted", "started, joined 25"]
    assert got[2:] == ["rejoined: 9"]


@netmcore.process
def interrupted_lock(gate: tuple[int, int]) -> str:
    gate_r, gate_w = gate
    signal.signal(signal.SIGALRM, _raise_interrupt)
    mutex = PluginMutex("threads-m")
    locked = PluginSemaphore("threads-locked")
    locked.create(0)
    holder = hold_mutex.start(gate_r)
    locked.decrement()  # the holder has the mutex
    _interrupt_once_main_thread_reads(lambda: os.write(gate_w, b"g"))  # it unlocks
    try:
        mutex.lock()
        mutex.unlock()
        return "not interrupted"
    except Interrupt:
        pass
    hold_mutex.join(holder)
    try:
        mutex.lock()
    except netmcore.PluginError as exc:
        return f"stuck: {exc}"
    mutex.unlock()
    return "ok"


@netmcore.process
def hold_mutex(gate_r: int) -> int:
    mutex = PluginMutex("threads-m")
    mutex.lock()
    PluginSemaphore("threads-locked").increment()
    os.read(gate_r, 1)
    mutex.unlock()
    return 0


def test_interrupted_lock_gives_back_a_grant_read_just_before(gate: tuple[int, int]) -> None:
    """A mutex "the master had already granted it is given back" (README), also
    when the grant was read just before the handler's exception (the process
    kept the mutex it was told it did not get; its next lock raised PluginError)."""
    outcome = netmcore.run(
        first_process=lambda: interrupted_lock.start(gate),
        extract_result=lambda _c, pid: interrupted_lock.join_outcome_nowait(pid),
        init_ctrl=netmcore.add_plugins,
    )
    assert scenario.outcome_value(outcome) == "ok"


@netmcore.process
def sem_wait_through_handlers(_: int) -> list[Any]:
    """A handler that returns does not end a semaphore's wait (PEP 475); one
    that raises does, with its exception (a posix_ipc.SignalError used to
    escape in both cases)."""
    sem = netmcore.create_sem(0)
    handled: list[int] = []
    signal.signal(signal.SIGUSR1, lambda signum, frame: handled.append(signum))
    signal.signal(signal.SIGALRM, _raise_interrupt)
    main = threading.get_ident()
    assert scenario.SYSCALLS is not None
    futex = scenario.SYSCALLS["futex"]

    def in_sem_wait(call: tuple[int, int]) -> bool:
        # A futex on the semaphore's memory: not on the GIL, not on a lock.
        return call[0] == futex and any(call[1] in r for r in scenario.mapped_ranges("/sem."))

    def interrupt_then_post() -> None:
        scenario.wait_until_main_thread_blocks(in_sem_wait)
        signal.pthread_kill(main, signal.SIGUSR1)
        scenario.wait_until_main_thread_blocks(lambda call: bool(handled) and in_sem_wait(call))
        sem.post()

    def interrupt_with_an_exception() -> None:
        scenario.wait_until_main_thread_blocks(in_sem_wait)
        signal.pthread_kill(main, signal.SIGALRM)

    got: list[Any] = []
    try:
        helper = threading.Thread(target=interrupt_then_post)
        helper.start()
        got.append(sem.wait(timeout=scenario.WAIT))
        helper.join()
        got.append(handled)
        helper = threading.Thread(target=interrupt_with_an_exception)
        helper.start()
        try:
            got.append(sem.wait())
        except Interrupt:
            got.append("interrupted")
        helper.join()
        got.append(sem.value)
    finally:
        sem.close()
    return got


def test_a_semaphore_wait_goes_on_through_a_handler_that_returns() -> None:
    got = scenario.run_scenario(sem_wait_through_handlers, 0)
    assert got == [True, [signal.SIGUSR1], "interrupted", 0]


@netmcore.process
def handler_calls_netmcore_during_a_join(gate: tuple[int, int]) -> list[str]:
    gate_r, gate_w = gate
    got: list[str] = []

    def handler(_signum: int, _frame: object) -> None:
        try:
            got.append(f"started {square.start(2)}")
        except netmcore.ContextError as exc:
            got.append(f"ContextError: {str(exc).split(' (')[0]}")

    signal.signal(signal.SIGUSR1, handler)
    pid = gated_square.start((gate_r, 7))
    main = threading.get_ident()

    def interrupt_then_open() -> None:
        assert scenario.SYSCALLS is not None
        recvfrom = scenario.SYSCALLS["recvfrom"]
        scenario.wait_until_main_thread_blocks(lambda call: call[0] == recvfrom)
        signal.pthread_kill(main, signal.SIGUSR1)
        scenario.wait_until(lambda: bool(got), "the handler's call to end")
        os.write(gate_w, b"g")

    helper = threading.Thread(target=interrupt_then_open, daemon=True)
    helper.start()
    got.append(f"joined {gated_square.join(pid)}")
    helper.join(scenario.WAIT)
    # After the handler, the thread's calls work again.
    got.append(f"then {square.join(square.start(3))}")
    return got


def test_a_handlers_call_during_its_threads_join_raises_and_the_join_goes_on(
    gate: tuple[int, int],
) -> None:
    """A worker's signal handler that calls netmcore while its thread waits
    in a join (reading the link): the call raises ContextError, before
    anything is sent, and the join goes on. It waited for ever."""
    got = scenario.run_scenario(handler_calls_netmcore_during_a_join, gate)
    assert got == ["ContextError: netmcore cannot make this call", "joined 49", "then 9"]
