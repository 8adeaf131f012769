"""The watchdog: cleans up after a master that dies, at once.

A small child that ``run`` forks before it makes anything, and which holds a
socket from the master. The master tells it, before it makes each thing, what
to clean up: a temporary socket directory (the watchdog makes it), the
directory's lock, the record, the payload prefix. When the socket closes
before the master has said that the run ended, the master has died (SIGKILL,
a crash); the watchdog then unlinks every object still recorded (or, before
the master recorded them, what the program made before ``run``), sweeps the
run's payload prefix, and removes a temporary socket directory. When the run
ends, the watchdog finishes the record and removes a temporary directory: the
run ends at that word, so a kill at no moment leaves the directory behind.

The watchdog also keeps a copy of the directory's lock until it is done, and
writes its pid into the lock file, so a new master in that directory waits
for it, and it never touches an object of a master that is still running.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
from collections.abc import Sequence
from dataclasses import dataclass

from . import _ipc, _resources
from ._cleanup import finish_record, unlink_pending
from ._resources import ResourceType

# The master's orders to its watchdog, one message each on a SOCK_SEQPACKET
# socket pair: an opcode, then a path (os.fsencode); _LOCK carries a descriptor.
_MAKE_DIR = b"D"  # make a fresh private directory in this one, and answer its path
_LOCK = b"L"  # keep this descriptor: the socket directory's lock
_RECORD = b"R"  # the record whose objects to unlink
_PREFIX = b"P"  # the run's payload prefix
_ENDED = b"E"  # the run has ended: finish the record, remove the temporary directory, answer
_CLEAN = b"C"  # the master ends cleanly (but never ran): do nothing, and go
_MAX_MESSAGE = 8192  # an opcode and a path (PATH_MAX is 4096 bytes)


@dataclass
class Watchdog:
    """The master's end of its watchdog.

    ``run`` forks the watchdog before it makes anything, and tells it what
    to clean up before each thing is made: whenever the master dies, the
    watchdog then knows of all it left. Only the master holds this end of
    the socket (every worker closes its copy), so when it closes without
    ``_ENDED`` or ``_CLEAN``, the master is dead.
    """

    os_pid: int
    sock: socket.socket | None
    fd: int  # the descriptor of ``sock``, for the workers to close

    def make_dir(self, base: str) -> str:
        """Have the watchdog make a fresh private directory in ``base``, so
        that from the moment it exists, a dead master's watchdog removes it.

        Raises
        ------
        OSError
            If it cannot be made there.
        """
        answer = self._order(_MAKE_DIR, base, answer=True)
        if answer.startswith(b"+"):
            return os.fsdecode(answer[1:])
        if answer.startswith(b"-"):
            errno, strerror, filename = json.loads(answer[1:])
            raise OSError(errno, strerror, filename)
        return make_fresh_dir(base)  # the watchdog was killed: do it here

    def hold_lock(self, fd: int) -> None:
        """Give the watchdog a copy of the socket directory's lock: it keeps
        a new master out while it cleans up after a dead one."""
        self._order(_LOCK, "", fds=[fd])

    def guard_record(self, path: str) -> None:
        """If the master dies, unlink what the record ``path`` lists (it may not exist yet)."""
        self._order(_RECORD, path)

    def guard_prefix(self, prefix: str) -> None:
        """If the master dies, also unlink everything named with ``prefix``
        (the run's payloads in flight)."""
        self._order(_PREFIX, prefix)

    def stand_down(self, *, ended: bool = False) -> bool:
        """The master ends cleanly: tell the watchdog, and wait for it to go.
        Harmless to repeat.

        With ``ended``, the run has ended, and the watchdog finishes the
        record (:func:`finish_record`) and removes a temporary directory
        before it goes: the run ends at that order, and a master killed
        before it or after it leaves nothing. Returns whether the watchdog
        did (it does not if someone killed it).
        """
        if self.sock is None:
            return False
        if ended:
            done = self._order(_ENDED, "", answer=True) == b"+"
        else:
            done = False
            self._order(_CLEAN, "")
        self.sock.close()
        self.sock = None
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self.os_pid, 0)
        return done

    def _order(
        self, op: bytes, arg: str, *, fds: Sequence[int] = (), answer: bool = False
    ) -> bytes:
        """Send an order; with ``answer``, wait for the reply (b"" if the
        watchdog is gone: someone killed it, and the master runs on without)."""
        assert self.sock is not None, "the watchdog has stood down"
        try:
            # MSG_NOSIGNAL: to a dead watchdog, EPIPE, not a SIGPIPE (which a
            # program may have set back to its default action, death).
            socket.send_fds(self.sock, [op + os.fsencode(arg)], fds, socket.MSG_NOSIGNAL)
            return self.sock.recv(_MAX_MESSAGE) if answer else b""
        except OSError:
            return b""


def fork_watchdog(*, before_run: bool = False) -> Watchdog:
    """Fork a watchdog. ``run`` forks it before it makes anything, so it
    holds none of the master's descriptors.

    With ``before_run``, what the program manages now (made before ``run``)
    is unlinked if the master dies before it has recorded it.
    """
    mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        os_pid = os.fork()
    except BaseException:
        mine.close()
        theirs.close()
        raise
    if os_pid == 0:  # the watchdog
        code = 0
        try:
            mine.close()
            signal.set_wakeup_fd(-1)
            for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                signal.signal(signum, signal.SIG_IGN)
            os.setsid()  # out of the master's process group and terminal
            _watch(theirs, before_run)
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    theirs.close()
    return Watchdog(os_pid, mine, mine.fileno())


def make_fresh_dir(base: str) -> str:
    """A fresh directory ``base/netmcore-<random>``, mode 0700 (what
    ``tempfile.mkdtemp`` makes, without tempfile: see _master.KEPT_OUT_OF_MASTER)."""
    while True:
        path = os.path.join(base, f"netmcore-{os.urandom(6).hex()}")
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            continue  # 48 random bits taken: draw again
        return path


@dataclass
class _Orders:
    """What the watchdog is to clean up if the master dies."""

    master_pid: int
    # What the program made before run, from the table as it was at the
    # fork: the master records it (and then tells of its payload prefix),
    # but one killed before had not yet.
    before_run: list[tuple[ResourceType, str]]
    lock_fd: int | None = None
    record_path: str | None = None
    prefix: str | None = None
    temp_dir: str | None = None


def _watch(sock: socket.socket, before_run: bool) -> None:
    """The watchdog: take orders until the master goes, then clean up after
    it, unless it said it ended cleanly."""
    made = [(e.typ, e.name) for e in _resources.table.values()] if before_run else []
    orders = _Orders(os.getppid(), made)
    while True:
        try:
            msg, fds, _flags, _addr = socket.recv_fds(sock, _MAX_MESSAGE, 1)
        except ConnectionResetError:
            continue  # the master died with an answer unread; its last orders follow
        if not msg:
            break  # closed without _CLEAN: the master is dead
        op, arg = msg[:1], os.fsdecode(msg[1:])
        if op == _CLEAN:
            return
        if op == _ENDED:
            _end(orders)
            with contextlib.suppress(OSError):
                sock.send(b"+", socket.MSG_NOSIGNAL)
            return
        if op == _LOCK and fds:
            orders.lock_fd = fds[0]
        elif op == _RECORD:
            orders.record_path = arg
        elif op == _PREFIX:
            orders.prefix = arg
        elif op == _MAKE_DIR:
            try:
                orders.temp_dir = make_fresh_dir(arg)
                answer = b"+" + os.fsencode(orders.temp_dir)
            except OSError as exc:
                answer = b"-" + json.dumps([exc.errno, exc.strerror, exc.filename]).encode()
            with contextlib.suppress(OSError):  # the master has died meanwhile
                sock.send(answer, socket.MSG_NOSIGNAL)
    _clean_up(orders)


def _end(orders: _Orders) -> None:
    """What the watchdog does when the run has ended cleanly."""
    if orders.record_path is not None:
        with contextlib.suppress(OSError):
            finish_record(orders.record_path)
    _remove_tree(orders.temp_dir)


def _remove_tree(path: str | None) -> None:
    if path is None:
        return
    try:
        names = os.listdir(path)
    except FileNotFoundError:
        return
    try:  # a socket directory holds files only, as a rule: no shutil to import
        for name in names:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(path, name))
        os.rmdir(path)
    except OSError:
        import shutil  # in the watchdog only: see _master.KEPT_OUT_OF_MASTER

        shutil.rmtree(path, ignore_errors=True)


def _clean_up(orders: _Orders) -> None:
    """What the watchdog does when the master has died."""
    if orders.lock_fd is not None:
        # Say so in the lock file: a master that starts in this directory
        # meanwhile waits for as long as this process lives (_socketdir._wait_for_lock).
        with contextlib.suppress(OSError):
            marker = f"{orders.master_pid} watchdog {os.getpid()}\n"
            os.pwrite(orders.lock_fd, marker.encode(), 0)
    # Each step on its own: one that fails must not keep the others from their work.
    if orders.prefix is None:
        for typ, name in orders.before_run:
            with contextlib.suppress(OSError):
                _resources.unlink_object(typ, name)
    if orders.record_path is not None:
        with contextlib.suppress(OSError):  # also a record that is not private
            unlink_pending(orders.record_path)
    if orders.prefix is not None:
        with contextlib.suppress(OSError):
            _ipc.unlink_prefix(orders.prefix)
    _remove_tree(orders.temp_dir)
