"""A signal at chosen points of a call under test, whose handler raises.

Python runs a signal's handler where the interpreter checks for one: at
the start of a Python function, and as a C function returns, before the
caller has its result. Those are the points a profile function sees as
"call" and "c_return" events, so one can send the signal at each of them
in turn (:func:`at_every_point`). A handler that raises ends the call
there, unless the code under test holds the signal back (blocks it) at
that point: the handler then runs where the code lets it through again.
The signal is raised in this thread (``signal.raise_signal``), so it
never reaches another thread, which would not block it; or, with
:func:`through_another_thread`, sent to another thread, whose C handler
takes it (the Python handler then runs in the main thread at its next
check, whatever the main thread blocks: what a Ctrl-C to a process with
threads does).
"""

from __future__ import annotations

import contextlib
import gc
import inspect
import os
import select
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any


class Interrupted(Exception):
    """What the handlers installed here raise: a timeout's, or a Ctrl-C's."""


def _raise_interrupted(signum: int, _frame: FrameType | None) -> None:
    raise Interrupted(f"the handler of {signal.Signals(signum).name}")


@contextlib.contextmanager
def handler_raises(signum: int) -> Iterator[None]:
    """While inside, the handler of ``signum`` raises :class:`Interrupted`;
    after, it is what it was (a handler left installed would run in a
    later test)."""
    old = signal.signal(signum, _raise_interrupted)
    try:
        yield
    finally:
        signal.signal(signum, old)


def interrupted_after(
    call: Callable[..., Any], when: Callable[[Any], bool], signum: int = signal.SIGINT
) -> Callable[..., Any]:
    """``call``, which sends ``signum`` to this thread as it returns a
    result that ``when`` accepts: the handler runs there, as a real
    signal's does when a C call returns, and its exception takes the
    place of the result. Only once: later calls are left alone."""
    sent = False

    def call_then_signal(*args: Any) -> Any:
        nonlocal sent
        result = call(*args)
        if not sent and when(result):
            sent = True
            signal.raise_signal(signum)
        return result

    return call_then_signal


# The profile events after which Python may run a signal handler.
_POINTS = ("call", "c_return")
# A generator's frame starts again both when it is resumed, where a handler
# may run, and when it is closed (a GeneratorExit thrown in, as it is
# dropped half-way), where none runs: its "call" events are left out.
_GENERATORS = inspect.CO_GENERATOR | inspect.CO_COROUTINE | inspect.CO_ASYNC_GENERATOR


@contextlib.contextmanager
def through_another_thread(signum: int) -> Iterator[Callable[[], None]]:
    """While inside, a function that sends ``signum`` to another thread of
    this process, which does not block it, and returns once that thread's C
    handler has taken it: the main thread's Python handler runs at the
    sender's next check, in the middle of the call under test, even if the
    call blocks the signal in its own thread. (The C handler writes to the
    wakeup fd, which is how the sender knows it has run: no timing.)"""
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError("through_another_thread: Python runs handlers in the main thread only")
    if signum in signal.pthread_sigmask(signal.SIG_BLOCK, []):
        raise RuntimeError(f"through_another_thread: {signum} is blocked, the taker would block it")
    woken_r, woken_w = os.pipe()
    stop_r, stop_w = os.pipe()
    os.set_blocking(woken_w, False)  # as set_wakeup_fd requires
    taker = threading.Thread(target=os.read, args=(stop_r, 1), name="signal taker")
    old = signal.set_wakeup_fd(woken_w, warn_on_full_buffer=False)
    try:
        taker.start()
        assert taker.ident is not None
        ident = taker.ident

        def send() -> None:
            os.set_blocking(woken_r, False)
            with contextlib.suppress(BlockingIOError):
                os.read(woken_r, 512)  # what an earlier send's handler left
            os.set_blocking(woken_r, True)
            signal.pthread_kill(ident, signum)
            select.select([woken_r], [], [])  # until the taker's C handler has run

        yield send
    finally:
        os.write(stop_w, b"x")
        taker.join()
        signal.set_wakeup_fd(old)
        for fd in (woken_r, woken_w, stop_r, stop_w):
            os.close(fd)


class _SignalAt:
    """A profile function that sends a signal (``send``) at the ``at``-th
    point of the call (counted from 0), and says where (``where``). Not
    ``armed``, it counts no point until :meth:`arm` is called."""

    def __init__(self, at: int, send: Callable[[], None], armed: bool = True) -> None:
        self.at = at
        self.send = send
        self.armed = armed
        self.seen = 0
        self.where: str | None = None

    def arm(self) -> None:
        self.armed = True

    def __call__(self, frame: FrameType, event: str, arg: object) -> None:
        if not self.armed or event not in _POINTS:
            return
        if event == "call" and frame.f_code.co_flags & _GENERATORS:
            return
        self.seen += 1
        if self.seen - 1 != self.at:
            return
        code = frame.f_code
        what = getattr(arg, "__qualname__", repr(arg)) if event == "c_return" else code.co_name
        self.where = f"{event} of {what} (in {code.co_name}, {code.co_filename}:{frame.f_lineno})"
        # Its handler runs here, as raise_signal returns, unless the signal
        # is blocked: then where the code under test unblocks it. (Sent
        # through another thread, it runs here whatever this thread blocks.)
        self.send()


# More points than any call under test has: a guard against a call that
# never completes uninterrupted, not an expectation.
_POINTS_MAX = 100_000


def at_every_point(
    call: Callable[[], Any],
    check: Callable[[Any], list[str]],
    signum: int = signal.SIGINT,
    send: Callable[[], None] | None = None,
    first: Callable[[Callable[[], None]], contextlib.AbstractContextManager[None]] | None = None,
) -> str | None:
    """Run ``call`` once for each point of it where a signal's handler could
    run, ``signum`` sent there (by ``send``; by default raised in this
    thread), and its handler raising :class:`Interrupted`; then once more,
    whole. After each run, ``check`` is given what the call returned (None
    if it was interrupted) and says what is wrong (it also releases what
    the call made). Returns the first problem found, with the point that
    caused it; None if there is none.

    ``first``, if given, makes the signal at each point a second one: each
    run is made inside ``first(arm)``, which sends ``signum`` once where it
    chooses (with :func:`interrupted_after`, say), and calls ``arm()`` where
    the points are to be counted from (just before it sends, or later); a
    run that calls no ``arm()`` is an error. (A first signal cannot come
    from the profile function, as the second does: one whose handler raises
    there is unset by Python, and sees no point after it.)

    Each run must also leave the signal as it found it: not blocked, nothing
    pending.

    The cyclic garbage collector waits until the end: run at a point of the
    call, it would call back (a weak reference's callback, say) code that
    is not the call's, where the handler's exception could not be raised
    to the call, only reported as unraisable.
    """
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _at_every_point(
            call, check, signum, send or (lambda: signal.raise_signal(signum)), first
        )
    finally:
        if collecting:
            gc.enable()
        gc.collect()  # what the interrupted runs left, in cycles through their tracebacks


def _at_every_point(
    call: Callable[[], Any],
    check: Callable[[Any], list[str]],
    signum: int,
    send: Callable[[], None],
    first: Callable[[Callable[[], None]], contextlib.AbstractContextManager[None]] | None,
) -> str | None:
    name = signal.Signals(signum).name
    with handler_raises(signum):
        for at in range(_POINTS_MAX):
            hook = _SignalAt(at, send, armed=first is None)
            result = None
            with contextlib.nullcontext() if first is None else first(hook.arm):
                sys.setprofile(hook)
                try:
                    result = call()
                except Interrupted:
                    pass
                finally:
                    sys.setprofile(None)
            if not hook.armed:  # each run would have been whole: nothing tried
                raise AssertionError(f"the first {name} was never sent")
            whole = "the first signal alone" if first else "the call ran whole"
            where = hook.where or f"no point ({whole})"
            problems = check(result)
            if signum in signal.pthread_sigmask(signal.SIG_BLOCK, []):
                problems.append(f"{name} was left blocked")
                with contextlib.suppress(Interrupted):  # its handler runs now, if it is pending
                    signal.pthread_sigmask(signal.SIG_UNBLOCK, [signum])
            if problems:
                return f"{name} at point {at}, {where}: " + "; ".join(problems)
            if hook.where is None:  # the call has fewer points: each was tried
                return None
    raise AssertionError(f"the call still had points after {_POINTS_MAX}")
