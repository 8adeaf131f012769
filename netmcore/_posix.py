"""Linux process facilities the standard library does not wrap."""

from __future__ import annotations

import _signal  # type: ignore[import-not-found]  # signal's C half: no stub
import ctypes
import os
import resource
import signal
import socket
import struct
from collections.abc import Callable, Iterable
from typing import TypeVar

T = TypeVar("T")

INTERRUPTS = frozenset({signal.SIGINT, signal.SIGTERM})


def with_signals_blocked(signals: Iterable[int], call: Callable[[], T]) -> T:
    """``call()`` with ``signals`` blocked in this thread; the mask is
    restored after (a signal that came meanwhile then takes effect:
    KeyboardInterrupt, ...).

    The mask is read first, and the block made inside the try: pthread_sigmask
    runs the Python handlers of signals that came before it as it returns, and
    a handler's exception there must not skip the restore (the signals would
    stay blocked for good). A function, not a context manager: the handler of
    a signal not blocked can run as a Python ``__enter__`` returns, where no
    ``__exit__`` restores the mask (a generator's only once it is collected)."""
    # signal's C half: signal.pthread_sigmask is a Python function, whose
    # start is a point where a handler runs, before the mask is restored.
    before = _signal.pthread_sigmask(signal.SIG_BLOCK, ())
    try:
        _signal.pthread_sigmask(signal.SIG_BLOCK, signals)
        return call()
    finally:
        _signal.pthread_sigmask(signal.SIG_SETMASK, before)


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
