"""Steps that must not be cut (``_posix.with_signals_blocked``) hold a
Ctrl-C that another thread of the process takes, as they hold one sent to
the thread that runs them, and raise it once, as the step ends.

A signal mask is one thread's: a SIGINT sent to a process whose main thread
blocks it goes to another thread (a progress bar's monitor, a pool's), and
Python runs its handler in the main thread all the same. Each test sends it
through such a thread (``through_another_thread``), in a worker: Python's
own SIGINT handler is the one workers keep."""

from __future__ import annotations

import os
import signal

from interrupting import through_another_thread
from scenario import run_scenario

import netmcore
from netmcore import _posix


def _held_once(nested: bool) -> list[str]:
    seen: list[str] = []

    with through_another_thread(signal.SIGINT) as send:  # (its thread started unblocked)

        def step() -> None:
            send()  # its C handler has run: the Python one runs at the next check
            seen.append("step went on")
            if nested:
                _posix.with_signals_blocked(_posix.INTERRUPTS, lambda: seen.append("inner"))
                seen.append("after the inner hold")

        try:
            _posix.with_signals_blocked(_posix.INTERRUPTS, step)
            seen.append("not raised")
        except KeyboardInterrupt:
            seen.append("KeyboardInterrupt")
    seen.append(f"held {_posix._held}, depth {_posix._hold[0]}")
    try:
        signal.raise_signal(signal.SIGINT)  # the handler is Python's own again
    except KeyboardInterrupt:
        seen.append("a later Ctrl-C raises")
    return seen


@netmcore.process
def held_once(nested: bool) -> list[str]:
    return _held_once(nested)


def test_a_ctrl_c_another_thread_takes_in_a_hold_is_raised_once_at_its_end() -> None:
    assert run_scenario(held_once, False) == [
        "step went on",
        "KeyboardInterrupt",
        "held [], depth 0",
        "a later Ctrl-C raises",
    ]


def test_an_inner_hold_ends_without_raising_what_the_outer_one_holds() -> None:
    assert run_scenario(held_once, True) == [
        "step went on",
        "inner",
        "after the inner hold",
        "KeyboardInterrupt",
        "held [], depth 0",
        "a later Ctrl-C raises",
    ]


@netmcore.process
def forks_in_a_hold(_: int) -> str:
    """A child forked in a hold is not in it, and leaves it all the same, as
    the step returns in both: its count must stay at 0 (at -1, every later
    Ctrl-C there was held for good)."""
    r, w = os.pipe()
    child = _posix.with_signals_blocked(_posix.INTERRUPTS, os.fork)
    if child == 0:
        try:
            os.write(w, f"depth {_posix._hold[0]}".encode())
        finally:
            os._exit(0)
    said = os.read(r, 100).decode()
    os.waitpid(child, 0)
    return said


def test_a_child_forked_in_a_hold_is_not_in_it() -> None:
    assert run_scenario(forks_in_a_hold, 0) == "depth 0"


@netmcore.process
def two_signals_at_a_holds_end(_: int) -> list[str]:
    """SIGINT and SIGALRM (whose handler raises, as a timeout's does) both
    come in a hold: as its mask is restored, SIGINT's stand-in raises, and
    SIGALRM's handler runs in the call that puts Python's back. That call
    changed nothing then: the stand-in stayed, and asyncio found no
    Python handler to take over (as the review showed)."""

    def timeout(signum: int, frame: object) -> None:
        raise TimeoutError("the timer's")

    signal.signal(signal.SIGALRM, timeout)
    seen: list[str] = []

    def step() -> None:
        signal.raise_signal(signal.SIGINT)  # both blocked here: they wait
        signal.raise_signal(signal.SIGALRM)

    try:
        _posix.with_signals_blocked(_posix.ASYNC_SIGNALS, step)
    except (KeyboardInterrupt, TimeoutError) as exc:
        seen.append(type(exc).__name__)
        if exc.__context__ is not None:
            seen.append(type(exc.__context__).__name__)
    handler = signal.getsignal(signal.SIGINT)
    seen.append("Python's" if handler is signal.default_int_handler else repr(handler))
    return seen


def test_python_s_sigint_handler_is_back_after_two_signals_at_a_holds_end() -> None:
    assert run_scenario(two_signals_at_a_holds_end, 0) == [
        "TimeoutError",
        "KeyboardInterrupt",
        "Python's",
    ]
