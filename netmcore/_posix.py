"""Linux process facilities the standard library does not wrap."""

from __future__ import annotations

import _signal  # type: ignore[import-not-found]  # signal's C half: no stub
import _thread
import ctypes
import os
import resource
import signal
import socket
import struct
import threading
from collections.abc import Callable
from collections.abc import Set as AbstractSet
from typing import TypeVar

T = TypeVar("T")

INTERRUPTS = frozenset({signal.SIGINT, signal.SIGTERM})
# As plain ints, made once: signal.valid_signals() makes a set of 62 enum
# members a call (0.1 ms: it was most of a kill request's cost in the master).
VALID_SIGNALS = frozenset(_signal.valid_signals())
# The signals whose Python handler could raise in a step that must not be
# cut (a second decode of a mailbox message, a withdrawal): not those a
# fault raises (blocked, the kernel kills the process at once), nor those
# none can block.
ASYNC_SIGNALS = VALID_SIGNALS - frozenset(
    {
        signal.SIGKILL,
        signal.SIGSTOP,
        signal.SIGSEGV,
        signal.SIGBUS,
        signal.SIGFPE,
        signal.SIGILL,
        signal.SIGTRAP,
        signal.SIGSYS,
    }
)


def with_signals_blocked(signals: AbstractSet[int], call: Callable[[], T]) -> T:
    """``call()`` with ``signals`` blocked in this thread; the mask is
    restored after (a signal that came meanwhile then takes effect:
    KeyboardInterrupt, ...).

    The mask is read first, and the block made inside the try: pthread_sigmask
    runs the Python handlers of signals that came before it as it returns, and
    a handler's exception there must not skip the restore (the signals would
    stay blocked for good). A function, not a context manager: the handler of
    a signal not blocked can run as a Python ``__enter__`` returns, where no
    ``__exit__`` restores the mask (a generator's only once it is collected).

    In the main thread, SIGINT and SIGTERM among ``signals`` are also held
    from their Python handlers (see :func:`deferred`): a mask is one
    thread's, and a signal sent to the process goes to another thread that
    does not block it (a progress bar's monitor, a pool's, a BLAS
    library's), whose Python handler runs in the main thread all the same,
    here. Python's own SIGINT handler (``signal.default_int_handler``, which
    workers keep: asyncio looks for it) is replaced for the while by one
    that asks; a program's own handlers are left as they are."""
    hold = (
        not INTERRUPTS.isdisjoint(signals) and threading.main_thread().ident == _thread.get_ident()
    )
    # Python's own, or the stand-in left by a hold whose restore failed
    # (see below): this hold's end puts Python's back.
    handler = _signal.getsignal(signal.SIGINT)
    swap = hold and (
        handler is signal.default_int_handler or (handler is _held_or_raised and not _hold[0])
    )
    # signal's C half: signal.pthread_sigmask is a Python function, whose
    # start is a point where a handler runs, before the mask is restored.
    before = _signal.pthread_sigmask(signal.SIG_BLOCK, ())
    if hold:
        _hold[0] += 1  # no call up to the try: no handler runs in between
    try:
        if swap:
            _signal.signal(signal.SIGINT, _held_or_raised)
        _signal.pthread_sigmask(signal.SIG_BLOCK, signals)
        return call()
    finally:
        if hold and _hold[0] > 0:  # (0 in a child forked in the hold: see _forget_holds)
            _hold[0] -= 1
        try:
            _signal.pthread_sigmask(signal.SIG_SETMASK, before)
        finally:
            try:
                if swap:
                    try:
                        _signal.signal(signal.SIGINT, signal.default_int_handler)
                    except BaseException:
                        # signal.signal runs the handlers of signals that came
                        # first, and changes nothing if one raises (a timer's,
                        # a SIGTERM's sys.exit, as a SIGINT's KeyboardInterrupt
                        # is on its way): once more, that handler has run.
                        _signal.signal(signal.SIGINT, signal.default_int_handler)
                        raise
            finally:
                # Even past another handler's exception above: a held
                # Ctrl-C must not wait for the next hold's end.
                if hold and not _hold[0] and _held:
                    held, _held[:] = _held[:], []  # in one store: see _raise_held
                    _raise_held(held)


# How many with_signals_blocked calls of the main thread hold SIGINT and
# SIGTERM now, and those of them that came meanwhile (see deferred).
_hold = [0]
_held: list[int] = []


def _forget_holds() -> None:
    # A child forked in a hold (the master forks in one) is not in it: the
    # signals held are its parent's, and its way out of the hold, if it
    # takes it, leaves the count at 0. (One forked by another thread never
    # takes it: Python's SIGINT handler goes back in place here.)
    _hold[0] = 0
    _held.clear()
    if _signal.getsignal(signal.SIGINT) is _held_or_raised:
        try:  # noqa: SIM105  # not suppress: a child's first steps touch few pages
            _signal.signal(signal.SIGINT, signal.default_int_handler)
        except BaseException:  # (an at-fork hook's exception is dropped anyway)
            pass


os.register_at_fork(after_in_child=_forget_holds)


def deferred(signum: int) -> bool:
    """What netmcore's Python handlers of SIGINT and SIGTERM ask first:
    whether the main thread holds them (see :func:`with_signals_blocked`).
    If so, ``signum`` is noted, and handled as the hold ends; the handler
    returns at once. If not, one noted earlier is dropped: the handler acts
    on it now (two that come before either is handled are one, as the
    kernel keeps them)."""
    if _hold[0]:
        if signum not in _held:
            _held.append(signum)
        return True
    if signum in _held:
        _held.remove(signum)
    return False


def forget_held() -> None:
    """Drop the signals held and not yet handled (a run's start: they were
    another's)."""
    _held.clear()


def _held_or_raised(signum: int, _frame: object) -> None:
    """Python's SIGINT handler, in a hold: KeyboardInterrupt unless held.
    Out of any hold (its restore failed twice), it puts Python's back
    first, for the code that looks for it (asyncio)."""
    if deferred(signum):
        return
    if not _hold[0] and _signal.getsignal(signal.SIGINT) is _held_or_raised:
        try:  # noqa: SIM105  # not suppress: see _forget_holds
            _signal.signal(signal.SIGINT, signal.default_int_handler)
        except BaseException:  # another handler's: this Ctrl-C is raised all the same
            pass
    raise KeyboardInterrupt


def _raise_held(held: list[int]) -> None:
    """Handle each signal held (see :func:`deferred`), in the order they
    came, by its handler as it is now, in this thread; the first exception
    is raised once every one is handled. They were taken off the list in
    one store first: a further handler's exception from there on drops
    them, rather than leave them for some later hold's end."""
    first: BaseException | None = None
    for signum in held:
        try:
            handler = _signal.getsignal(signum)
            if callable(handler):
                handler(signum, None)
            elif handler == signal.SIG_DFL:
                signal.raise_signal(signum)  # its default action: the end, as a rule
        except BaseException as exc:
            if first is None:
                first = exc
    if first is not None:
        raise first


_libc = ctypes.CDLL(None, use_errno=True)
_prctl = _libc["prctl"]  # a handle of its own: no argtypes to convert through
_prctl.restype = ctypes.c_int
_PR_SET_PDEATHSIG = 1
# The call's arguments, made once in the master as the C types the kernel
# reads (an int, then unsigned longs). Every worker makes this call first
# thing, and converting Python ints through argtypes there cost it ~25
# copy-on-write faults; with the arguments ready, ~14 (measured).
_DIE_WITH_PARENT = (
    ctypes.c_int(_PR_SET_PDEATHSIG),
    ctypes.c_ulong(signal.SIGKILL),
    *(ctypes.c_ulong(0) for _ in range(3)),
)


def die_with_parent() -> None:
    """Have the kernel send SIGKILL to this process when its parent dies."""
    if _prctl(*_DIE_WITH_PARENT) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))


def peer_uid(sock: socket.socket) -> int:
    """The user id of the process at the other end of a Unix socket."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return int(uid)


def raise_fd_limit() -> None:
    """Raise the soft limit on open files to the hard limit.

    The master holds two descriptors per live worker (its socket and a pidfd),
    so a fan-out of a thousand workers needs more than the usual 1024.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
