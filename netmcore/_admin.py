"""The admin tool's work (upstream's ``netplex-admin``): ask a running master
for its state, have it signal one of its processes, or clean up what a dead
one left in its socket directory."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket
from collections.abc import Iterator

from . import _cleanup
from ._debug import log
from ._errors import SocketDirectoryError
from ._socketdir import (
    LOCK_NAME,
    SOCKET_NAME,
    check_private_dir,
    running_masters,
    temporary_base,
)
from ._wire import Failed, KillReq, Link, Message, Signalled, Status, StatusReq, join_status


def the_running_master() -> str:
    """The socket directory of this user's one master running in a
    directory of its own (a run given no ``socket_directory``).

    Raises
    ------
    SocketDirectoryError
        If there is none, or more than one: naming each, with its command.
    """
    masters = running_masters()
    if len(masters) == 1:
        return masters[0][0]
    if not masters:
        raise SocketDirectoryError(
            f"no master of yours runs in a socket directory of its own in "
            f"{temporary_base()!r}; pass the socket_directory that its run was given"
        )
    listed = "\n".join(f"  {path}  (master pid {pid}: {_command(pid)})" for path, pid in masters)
    raise SocketDirectoryError(
        f"{len(masters)} masters of yours are running; pass the socket directory of one:\n" + listed
    )


def _command(pid: int) -> str:
    """The command line of process ``pid``, as ps shows it, clipped."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            words = f.read(4096).rstrip(b"\0").split(b"\0")
    except OSError:
        return "?"
    text = " ".join(" ".join(word.decode(errors="replace").split()) for word in words)
    return text if len(text) <= 100 else text[:97] + "..."


def status(socket_directory: str) -> Status:
    """Ask the master running in ``socket_directory`` for its processes and resources.

    Raises
    ------
    SocketDirectoryError
        If no master answers there.
    """
    parts: list[Status] = []
    with _link_to(socket_directory) as link:
        reply: Message | None = link.request(StatusReq())
        while isinstance(reply, Status):
            parts.append(reply)
            if not reply.more:
                return join_status(parts)
            reply = link.recv()
    raise _unanswered(socket_directory, reply)


def kill(socket_directory: str, n: int, signum: int) -> bool:
    """Have the master running in ``socket_directory`` send ``signum`` to
    its process ``n``, as ``netmcore.kill`` does; whether the process got it
    (False: it had ended, or finished its function and only waits to exit).

    Raises
    ------
    SocketDirectoryError
        If no master answers there, or it refuses (a process it does not
        know, an invalid signal), saying why.
    """
    with _link_to(socket_directory) as link:
        reply = link.request(KillReq(pid=n, signum=signum))
    if isinstance(reply, Signalled):
        return reply.delivered
    raise _unanswered(socket_directory, reply)


@contextlib.contextmanager
def _link_to(socket_directory: str) -> Iterator[Link]:
    """A link to the master running in ``socket_directory``; its errors (a
    master that is not there, or ends) are a SocketDirectoryError."""
    path = os.path.join(socket_directory, SOCKET_NAME)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        sock.connect(path)
        yield Link(sock)
    except OSError as exc:  # MasterGone too: the master ended while it answered
        raise SocketDirectoryError(
            f"no netmcore master answers in {socket_directory!r} ({exc.strerror or exc})"
        ) from exc
    finally:
        sock.close()


def _unanswered(socket_directory: str, reply: Message | None) -> SocketDirectoryError:
    """The error for a ``reply`` that is not the answer asked for."""
    if reply is None:
        return SocketDirectoryError(f"the master in {socket_directory!r} ended while it answered")
    if isinstance(reply, Failed):
        return SocketDirectoryError(f"the master in {socket_directory!r} refused: {reply.message}")
    return SocketDirectoryError(f"unexpected reply from the master: {type(reply).__name__}")


def _refuse_a_listener(path: str) -> None:
    """Raise SocketDirectoryError if a process listens on the socket
    ``path``, which no netmcore master then holds the lock of (another
    program's, or a master's whose lock file was removed): its socket file
    is not a dead master's."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        probe.connect(path)
    except (FileNotFoundError, ConnectionRefusedError):
        return  # no socket, or nobody listens on it: a dead master's
    except OSError as exc:
        if exc.errno != errno.EPROTOTYPE:  # (a listener of another socket type)
            return  # not a socket
    else:  # (for 3.12: see test_backedges)
        pass
    finally:
        probe.close()
    raise SocketDirectoryError(
        f"a process listens on {path}, but no netmcore master holds the directory's lock: "
        "nothing was removed; end that process, or use another socket directory"
    )


def unlink(socket_directory: str) -> list[str]:
    """Remove what a dead master left in ``socket_directory``; return what went.

    What cannot be removed is logged, and the rest still goes.

    Raises
    ------
    SocketDirectoryError
        If a master (or its watchdog) is alive there, or the directory (or its
        record) is not private: as ``run`` does, it acts only on what nobody
        but the user could have put there.
    """
    if not os.path.isdir(socket_directory):
        raise SocketDirectoryError(f"{socket_directory!r} is not a directory")
    check_private_dir(socket_directory)
    lock_path = os.path.join(socket_directory, LOCK_NAME)
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CLOEXEC)
    except (FileNotFoundError, IsADirectoryError):
        fd = None  # no master can hold a lock on it
    else:  # (for 3.12: see test_backedges)
        pass
    try:
        if fd is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
                raise SocketDirectoryError(
                    f"a netmcore master (pid {holder}) is alive in {socket_directory!r}: "
                    "nothing was removed; stop it first (its own shutdown cleans up)"
                ) from None
        _refuse_a_listener(os.path.join(socket_directory, SOCKET_NAME))
        removed = _cleanup.unlink_pending(os.path.join(socket_directory, _cleanup.PMANAGE_NAME))
        for name in (SOCKET_NAME, LOCK_NAME):
            path = os.path.join(socket_directory, name)
            try:
                os.unlink(path)
            except FileNotFoundError:
                continue
            except OSError as exc:
                log.warning("netmcore: could not remove %s: %s", path, exc.strerror or exc)
                continue
            removed.append(path)
        return removed
    finally:
        if fd is not None:
            os.close(fd)
