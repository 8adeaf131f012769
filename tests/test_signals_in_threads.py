"""A signal handler's exception in a worker with several threads loses no reply.

Each scenario runs in a worker (the first process). The signal used to
interrupt a wait is sent with ``pthread_kill`` to a helper thread, as the
kernel does with a process-directed signal whenever the main thread is not
the one that takes it: the main thread's blocking ``recv`` is then not
interrupted, and Python raises the handler's exception in the main thread
only after ``recv`` has returned a message. The link peeks at a reply, stores
it, and only then takes it off the socket, so that exception loses nothing.

The delays only make the interrupt likely to come while the call waits; if
it comes after (a slow machine), the call simply is not interrupted, which
the assertions accept.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time

import pytest
import scenario

import netmcore
from netmcore import PluginMutex, PluginSemaphore

pytestmark = pytest.mark.timeout(20)


class Interrupt(Exception):
    pass


def _raise_interrupt(signum: int, frame: object) -> None:
    raise Interrupt()


def _signal_from_helper(delay: float) -> threading.Thread:
    """After ``delay`` s, SIGALRM lands on a helper thread; its Python handler
    runs in the main thread at its next bytecode."""

    def poke() -> None:
        time.sleep(delay)
        signal.pthread_kill(threading.get_ident(), signal.SIGALRM)

    helper = threading.Thread(target=poke, daemon=True)
    helper.start()
    return helper


@netmcore.process
def review_slow_square(k: int) -> int:
    time.sleep(0.5)
    return k * k


@netmcore.process
def review_square(k: int) -> int:
    return k * k


@netmcore.process
def review_interrupted_join(_: int) -> str:
    signal.signal(signal.SIGALRM, _raise_interrupt)
    pid = review_slow_square.start(7)
    _signal_from_helper(0.1)
    try:
        return f"not interrupted: {review_slow_square.join(pid)}"
    except Interrupt:
        pass
    try:
        return f"rejoined: {review_slow_square.join(pid)}"
    except netmcore.NetmcoreError as exc:
        return f"lost: {type(exc).__name__}"


def test_interrupted_join_keeps_result_when_signal_lands_on_another_thread() -> None:
    """An interrupted join "loses nothing" (README): the Joined reply read just
    before the handler's exception is kept for the next join (it was dropped,
    and the next join raised UnknownProcess)."""
    seen = scenario.run_scenario(review_interrupted_join, 0)
    assert seen in ("rejoined: 49", "not interrupted: 49")


@netmcore.process
def review_interrupt_starves_thread(_: int) -> list[str]:
    signal.signal(signal.SIGALRM, _raise_interrupt)
    slow = review_slow_square.start(3)
    got: list[str] = []

    def other() -> None:
        time.sleep(0.2)  # the main thread is the link's reader by now
        pid = review_square.start(5)
        got.append(f"started, joined {review_square.join(pid)}")

    thread = threading.Thread(target=other, daemon=True)
    thread.start()
    _signal_from_helper(0.1)
    with contextlib.suppress(Interrupt):
        review_slow_square.join(slow)
    thread.join(5)
    if thread.is_alive():
        got.append("the other thread still waits for its reply")
    with contextlib.suppress(netmcore.NetmcoreError):
        review_slow_square.join(slow)
    return got


def test_interrupt_in_reader_thread_does_not_lose_another_threads_reply() -> None:
    """The main thread, reading the shared link, reads the Started reply of
    another thread's start just before the handler's exception: the reply
    still reaches that thread (it waited for ever)."""
    got = scenario.run_scenario(review_interrupt_starves_thread, 0)
    assert got == ["started, joined 25"]


@netmcore.process
def review_interrupted_lock(_: int) -> str:
    signal.signal(signal.SIGALRM, _raise_interrupt)
    mutex = PluginMutex("review-m")
    go = PluginSemaphore("review-go")
    go.create(0)
    holder = review_hold_mutex.start(0)
    go.decrement()  # the holder has the mutex
    _signal_from_helper(0.1)
    try:
        mutex.lock()  # granted at ~0.4 s, when the holder unlocks
        mutex.unlock()
        return "not interrupted"
    except Interrupt:
        pass
    review_hold_mutex.join(holder)
    try:
        mutex.lock()
    except netmcore.PluginError as exc:
        return f"stuck: {exc}"
    mutex.unlock()
    return "ok"


@netmcore.process
def review_hold_mutex(_: int) -> int:
    mutex = PluginMutex("review-m")
    mutex.lock()
    PluginSemaphore("review-go").increment()
    time.sleep(0.4)
    mutex.unlock()
    return 0


def test_interrupted_lock_gives_back_a_grant_read_by_recv() -> None:
    """A mutex "the master had already granted it is given back" (README), also
    when the grant was read just before the handler's exception (the process
    kept the mutex it was told it did not get; its next lock raised PluginError)."""
    outcome = netmcore.run(
        first_process=lambda: review_interrupted_lock.start(0),
        extract_result=lambda _c, pid: review_interrupted_lock.join_outcome_nowait(pid),
        init_ctrl=netmcore.add_plugins,
    )
    assert scenario.outcome_value(outcome) in ("ok", "not interrupted")
