"""The watchdog: cleans up after a master that dies, at once.

A small child that ``run`` forks before it makes anything, and which holds a
socket from the master. The master tells it, before it makes each thing, what
to clean up: a temporary socket directory (the watchdog makes it), the
directory's lock, the record, the payload prefix, the pidfile. When the
socket closes before the master has said that the run ended, the master has
died (SIGKILL, a crash); the watchdog then unlinks every object still
recorded (or, before the master recorded them, what the program made before
``run``), sweeps the run's payload prefix, removes the pidfile if it is
still the master's, and removes a temporary socket directory. When the run
ends, the watchdog finishes the record and removes a temporary directory: the
run ends at that word, so a kill at no moment leaves the directory behind.

The watchdog also keeps a copy of the directory's lock until it is done, and
writes its pid into the lock file, so a new master in that directory waits
for it, and it never touches an object of a master that is still running.

Outside ``run``, the same kind of process is the program's *guard*: forked
when the program first makes a kernel object outside ``run``, told of each
one it makes and destroys, and gone (reaped) when none is left. If the
program dies with some left (SIGKILL, SIGTERM, a crash), the guard unlinks
them. A guard and a watchdog both see their parent die by its pidfd, and by
their socket closing (an ``exec`` closes it): a descendant that inherited
the socket does not keep them waiting.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import select
import signal
import socket
import stat
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from . import _ipc, _posix, _resources
from ._cleanup import finish_record, unlink_pending
from ._debug import log
from ._resources import ResourceType

# The master's orders to its watchdog, one message each on a SOCK_SEQPACKET
# socket pair: an opcode, then a path (os.fsencode); _LOCK carries a descriptor.
_MAKE_DIR = b"D"  # make a fresh private directory in this one, and answer its path
_LOCK = b"L"  # keep this descriptor: the socket directory's lock
_RECORD = b"R"  # the record whose objects to unlink
_PREFIX = b"P"  # the run's payload prefix
_PIDFILE = b"F"  # the run's pidfile: removed if it still holds the master's pid
_ENDED = b"E"  # the run has ended: finish the record, remove the temporary directory, answer
_CLEAN = b"C"  # the master ends cleanly (but never ran): do nothing, and go
_ADD = b"+"  # (guard) unlink this object if the program dies: kind, NUL, name
_DROP = b"-"  # (guard) the program destroyed this object: kind, NUL, name
_STARTED = b"S"  # (the watchdog's first word, then its pid) it has left the parent's session
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

    def hold_lock(self, fd: int, path: str) -> None:
        """Give the watchdog a copy of the lock of the socket directory
        ``path``: it keeps a new master out while it cleans up after a dead
        one, then removes the dead one's socket and lock file."""
        self._order(_LOCK, path, fds=[fd])

    def guard_record(self, path: str) -> None:
        """If the master dies, unlink what the record ``path`` lists (it may not exist yet)."""
        self._order(_RECORD, path)

    def guard_prefix(self, prefix: str) -> None:
        """If the master dies, also unlink everything named with ``prefix``
        (the run's payloads in flight)."""
        self._order(_PREFIX, prefix)

    def guard_pidfile(self, path: str) -> None:
        """If the master dies, remove the pidfile ``path`` if it is still a
        regular file that holds the master's pid (not another program's since).
        Told before the file is written, so no moment is uncovered."""
        self._order(_PIDFILE, path)

    def guard_object(self, typ: ResourceType, name: str, *, guarded: bool = True) -> None:
        """(A guard) unlink ``name`` if the program dies; or, without
        ``guarded``, no longer."""
        self._order(_ADD if guarded else _DROP, f"{typ.value}\0{name}")

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

    def close(self) -> None:
        """Close this end of the socket of a watchdog that is gone (killed)."""
        if self.sock is not None:
            self.sock.close()
            self.sock = None

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


Object = tuple[ResourceType, str]
T = TypeVar("T")


def fork_watchdog(objects: Iterable[Object] = ()) -> Watchdog:
    """Fork a watchdog (or a guard). ``run`` forks it before it makes
    anything; a guard keeps none of the program's descriptors either.

    ``objects`` are unlinked if the parent dies (a master: before it has
    recorded them): what the program made before ``run``, or what a guard
    guards. They go through the fork itself, so no moment is uncovered.
    """
    objects = set(objects)
    mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    parent = os.getpid()
    try:
        os_pid = os.fork()
    except BaseException:
        # A failed fork; or a signal handler's exception as it returned, in
        # the parent or in the child (before the pid is stored). Each says
        # so first, in C calls: a child told to go cleans nothing up (its
        # socket closing would have said that the program died), and a copy
        # of the program must not run on.
        if os.getpid() != parent:
            os._exit(1)
        try:  # noqa: SIM105 (not suppress: Python code, where a handler may run)
            mine.send(_CLEAN, socket.MSG_NOSIGNAL)
        except OSError:
            pass
        theirs.close()
        # A child says its pid first (with none, the socket is closed, or
        # reset: _CLEAN was not read): it is reaped.
        started = b""
        with contextlib.suppress(OSError):
            started = mine.recv(64)
        mine.close()
        if started[1:].isdigit():
            with contextlib.suppress(ChildProcessError):
                os.waitpid(int(started[1:]), 0)
        raise
    if os_pid == 0:  # the watchdog
        code = 0
        try:
            # Out of the parent's process group and terminal before the
            # parent makes anything (it waits for the word): a SIGKILL to
            # its whole group, or a Ctrl-C, must not take this process too.
            os.setsid()
            theirs.send(_STARTED + str(os.getpid()).encode())
            # It keeps no descriptor but its socket (and 0-2): one forked at
            # the end of a run would hold the socket directory's lock, say.
            # No garbage collection from here: a collected object of the
            # parent's would close its descriptor's number, now maybe another;
            # and the program's log handlers may write to such a number too.
            gc.disable()
            mine.close()
            fd = theirs.fileno()
            os.closerange(3, fd)
            os.closerange(fd + 1, os.sysconf("SC_OPEN_MAX"))
            log.handlers = [logging.StreamHandler()]  # to stderr, which it keeps
            log.propagate = False
            signal.set_wakeup_fd(-1)
            for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                signal.signal(signum, signal.SIG_IGN)
            _watch(theirs, parent, objects)
        except BaseException:
            code = 1
        else:  # (for 3.12: see test_backedges)
            pass
        finally:
            os._exit(code)
    try:
        theirs.close()
        mine.recv(1)  # _STARTED; or b"" if someone killed it already
        return Watchdog(os_pid, mine, mine.fileno())
    except BaseException:
        # A signal handler's exception, before the caller has it: it goes,
        # and cleans nothing up (its socket closing would say the program
        # died). Said first, in a C call.
        try:  # noqa: SIM105 (not suppress: Python code, where a handler may run)
            mine.send(_CLEAN, socket.MSG_NOSIGNAL)
        except OSError:
            pass
        mine.close()
        with contextlib.suppress(ChildProcessError):
            os.waitpid(os_pid, 0)
        raise


@dataclass
class _Made:
    """What this process made and has not destroyed (as ``on_change`` heard
    it, outside ``run`` and in it), and its guard."""

    pid: int = field(default_factory=os.getpid)
    # Threads of the program may make objects at once: one at a time is in
    # here (see _holding). Reentrant, for a signal handler that runs as its
    # thread takes it or gives it back (holder not set then).
    lock: threading.RLock = field(default_factory=threading.RLock)
    holder: int | None = None  # the thread in here
    # Changes that its signal handlers made meanwhile, which it makes itself
    # before it lets go (see _holding).
    queued: list[tuple[Callable[[_Made, str, Object], None], str, Object]] = field(
        default_factory=list
    )
    objects: set[Object] = field(default_factory=set)
    guard: Watchdog | None = None
    told: set[Object] = field(default_factory=set)  # what the guard knows of


_made = _Made()


def _mine() -> _Made:
    """This process's: a forked child starts with nothing made, a lock of its
    own, and no guard (by pid, not an at-fork handler, which every worker would run)."""
    global _made
    if _made.pid != os.getpid():
        _made = _Made()
    return _made


def _holding(made: _Made, work: Callable[[], T]) -> T:
    """``work()``, holding ``made`` for this thread; then the changes its
    signal handlers queued meanwhile (see _change), before letting go.
    Inline, not a generator's context manager: an exception at its yield
    would leave the lock taken and the holder set, for ever."""
    me = threading.get_ident()
    with made.lock:
        outer = made.holder  # this thread's, if a handler of it calls run (else None)
        made.holder = me  # no call from the lock to the try: nothing comes between
        try:
            if outer is None:
                _made_queued(made)  # what an exception left in the queue before
            return work()
        finally:
            try:
                if outer is None:
                    _made_queued(made)
            finally:
                made.holder = outer


def _made_queued(made: _Made) -> None:
    """Make the queued changes in order. Each stays first in the queue until
    it is made (made twice, it changes nothing more): an exception leaves
    it for the next holder."""
    while made.queued:
        change, op, obj = made.queued[0]
        try:
            change(made, op, obj)
        except OSError as exc:
            if exc.errno is None:  # a signal handler's (a TimeoutError)
                raise
            # The handler's call went well (its object is made): its thread's goes on.
            if op == "+":
                made.objects.add(obj)  # for the next guard
            log.warning("netmcore: could not tell the guard of %s: %s", obj[1], exc)
        else:  # (for 3.12: see test_backedges)
            pass
        del made.queued[0]


def _change(change: Callable[[_Made, str, Object], None], op: str, obj: Object) -> None:
    """Make ``change`` to this process's ``_Made``. A signal handler that
    makes or destroys an object while its thread is in here (a guard half
    forked, its list of objects taken) queues it for that thread, which
    makes it before it lets go: made at once, in the middle, it could leave
    an object with no guard, or a guard told of one that is gone (after a
    crash, it would unlink what has that name then). Waiting for the lock
    there, it waited for ever. An object a handler makes is then guarded
    as its thread leaves here, not before it is made."""
    made = _mine()
    if made.holder == threading.get_ident():
        made.queued.append((change, op, obj))
        return
    _holding(made, lambda: change(made, op, obj))


def guard_outside_run(op: str, typ: ResourceType, name: str) -> None:
    """``_resources.on_change`` outside ``run``: the guard is told of each
    object before it is made (it is forked for the first) and after it is
    destroyed, and goes with the last one."""
    _change(_guard_change, op, (typ, name))


def _guard_change(made: _Made, op: str, obj: Object) -> None:
    typ, name = obj
    guard = _live_guard(made)
    if op == "+":
        if guard is None:
            try:
                _start_guard(made, {obj})
            except OSError as exc:
                if exc.errno is None:  # a signal handler's (a TimeoutError)
                    raise
                raise OSError(
                    exc.errno,
                    f"cannot fork netmcore's guard process, which unlinks what this "
                    f"program makes outside run if it dies ({exc.strerror}): nothing "
                    "was made. The system is short of processes or memory (see "
                    "`ulimit -u`): end some, and retry",
                ) from exc
        elif obj not in made.told:
            guard.guard_object(typ, name)
            made.told.add(obj)
        made.objects.add(obj)
        return
    if made.objects == {obj}:
        _stop_guard(made)  # the last one: the guard goes
    _forget(made, obj)


def noted_in_run(op: str, typ: ResourceType, name: str) -> None:
    """What the master's process makes and destroys in ``run`` (its record
    and its watchdog look after it): kept for the guard at the run's end;
    an object the guard had is dropped from it at once (a name given to
    ``manage_*`` may be reused)."""
    _change(_noted_change, op, (typ, name))


def _noted_change(made: _Made, op: str, obj: Object) -> None:
    if op == "+":
        made.objects.add(obj)
    else:
        _forget(made, obj)


def _forget(made: _Made, obj: Object) -> None:
    """``obj`` is destroyed: a guard that has it lets go of it."""
    made.objects.discard(obj)
    if made.guard is not None and obj in made.told:
        made.guard.guard_object(*obj, guarded=False)
        made.told.discard(obj)


def guard_table() -> None:
    """Outside ``run`` again (its end): the guard takes over every object
    this process still manages, made before the run or during it.

    Raises
    ------
    OSError
        If no guard could be forked (``on_change`` is the guard's again).
    """
    made = _mine()
    # First: a handler's change from here on is the guard's, not the run's.
    _resources.on_change = guard_outside_run
    _holding(made, lambda: _guard_table(made))


def _guard_table(made: _Made) -> None:
    guard = _live_guard(made)
    if not made.objects:
        _stop_guard(made)
    elif guard is None:
        _start_guard(made, set())
    else:
        for typ, name in made.objects - made.told:
            guard.guard_object(typ, name)
        made.told = set(made.objects)


def guard_fd() -> int | None:
    """The descriptor of this process's end of its guard's socket, if any
    (a worker closes its copy)."""
    made = _mine()
    guard = _holding(made, lambda: _live_guard(made))
    return guard.fd if guard is not None else None


def _live_guard(made: _Made) -> Watchdog | None:
    """The guard, if it lives; if someone killed it, a new one (told of
    everything) replaces it."""
    guard = made.guard
    if guard is None:
        return _restarted(made)
    try:
        pid, _ = os.waitpid(guard.os_pid, os.WNOHANG)
    except ChildProcessError:
        pid = guard.os_pid  # reaped by someone else: it is gone too
    else:  # (for 3.12: see test_backedges)
        pass
    if pid == 0:
        return guard
    made.guard, made.told = None, set()
    guard.close()
    return _restarted(made)


def _restarted(made: _Made) -> Watchdog | None:
    """A guard for the objects left, if there are some (none was, or the
    last was killed, or could not be forked)."""
    if made.objects and _resources.on_change is guard_outside_run:
        try:
            _start_guard(made, set())
        except OSError as exc:  # the next change tries again
            if exc.errno is None:  # a signal handler's (a TimeoutError)
                raise
            log.warning(
                "netmcore: no guard process could be forked (%s): what this program made "
                "outside run is not unlinked if it is killed",
                exc,
            )
    return made.guard


def _start_guard(made: _Made, more: set[Object]) -> None:
    """Fork a guard for ``made.objects`` and ``more``, and keep it. Kept as
    its fork returns, with SIGINT and SIGTERM waiting: a Ctrl-C raised as
    they are let go dropped it, and its socket closing then told it that
    the program had died (it unlinked every live object)."""
    objects = made.objects | more

    def start() -> None:
        guard = fork_watchdog(objects)
        # No call from the return to the stores: no handler runs between.
        made.guard, made.told = guard, objects

    _posix.with_signals_blocked(_posix.INTERRUPTS, start)


def _stop_guard(made: _Made) -> None:
    guard = made.guard
    if guard is not None:
        # Stood down first (harmless to repeat): dropped first, an exception
        # before its stand-down left it running, its socket open, until a
        # collection closed it, when it took the program for dead.
        guard.stand_down()
        made.guard, made.told = None, set()


_resources.on_change = guard_outside_run  # outside run, from the start


# How a run's own socket directory is named, before its random part.
TEMPORARY_PREFIX = "netmcore-"


def make_fresh_dir(base: str) -> str:
    """A fresh directory ``base/netmcore-<random>``, mode 0700 (what
    ``tempfile.mkdtemp`` makes, without tempfile: see _master.KEPT_OUT_OF_MASTER)."""
    while True:
        path = os.path.join(base, f"{TEMPORARY_PREFIX}{os.urandom(6).hex()}")
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            continue  # 48 random bits taken: draw again
        return path


@dataclass
class _Orders:
    """What the watchdog is to clean up if the master dies."""

    master_pid: int
    # Objects to unlink unless the master recorded them (it then tells of
    # its payload prefix): what the program made before run; a guard's.
    objects: set[Object] = field(default_factory=set)
    lock_fd: int | None = None
    socket_dir: str | None = None
    record_path: str | None = None
    prefix: str | None = None
    temp_dir: str | None = None
    pidfile: str | None = None


def _watch(sock: socket.socket, parent: int, objects: set[Object]) -> None:
    """The watchdog: take orders until the master goes, then clean up after
    it, unless it said it ended cleanly."""
    orders = _Orders(parent, objects)
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    pidfd = _pidfd_of_parent(parent)
    if pidfd is not None:
        poller.register(pidfd, select.POLLIN)
    while pidfd is not None:
        ready = {fd for fd, _ in poller.poll()}
        if sock.fileno() in ready:  # orders first: the last ones come before its death
            ended = _take_order(sock, orders)
            if ended is None:
                break  # closed without _CLEAN: the master is dead (or it exec'd)
            if ended:
                return
        elif pidfd in ready:
            break  # dead, with the socket still open in a descendant
    # Its last orders may still be queued.
    sock.setblocking(False)
    with contextlib.suppress(BlockingIOError):
        while (ended := _take_order(sock, orders)) is not None:
            if ended:
                return
    _clean_up(orders)


def _pidfd_of_parent(parent: int) -> int | None:
    """A pidfd of the process that forked this one; None if it has died."""
    try:
        pidfd = os.pidfd_open(parent)
    except ProcessLookupError:
        return None
    # Open first, then look: while it is still our parent, the pid is its.
    if os.getppid() != parent:
        os.close(pidfd)
        return None
    return pidfd


def _take_order(sock: socket.socket, orders: _Orders) -> bool | None:
    """Read and carry out one order: None if the socket has closed, True
    if the master ended (the watchdog goes), else False."""
    try:
        msg, fds, _flags, _addr = socket.recv_fds(sock, _MAX_MESSAGE, 1)
    except ConnectionResetError:
        return False  # the master died with an answer unread; its last orders follow
    if not msg:
        return None
    op, arg = msg[:1], os.fsdecode(msg[1:])
    if op == _CLEAN:
        return True
    if op == _ENDED:
        _end(orders)
        with contextlib.suppress(OSError):
            sock.send(b"+", socket.MSG_NOSIGNAL)
        return True
    if op in (_ADD, _DROP):
        kind, _, name = arg.partition("\0")
        obj = (ResourceType(kind), name)
        if op == _ADD:
            orders.objects.add(obj)
        else:
            orders.objects.discard(obj)
    elif op == _LOCK and fds:
        orders.lock_fd, orders.socket_dir = fds[0], arg
    elif op == _RECORD:
        orders.record_path = arg
    elif op == _PREFIX:
        orders.prefix = arg
    elif op == _PIDFILE:
        orders.pidfile = arg
    elif op == _MAKE_DIR:
        try:
            orders.temp_dir = make_fresh_dir(arg)
            answer = b"+" + os.fsencode(orders.temp_dir)
        except OSError as exc:
            answer = b"-" + json.dumps([exc.errno, exc.strerror, exc.filename]).encode()
        else:  # (for 3.12: see test_backedges)
            pass
        with contextlib.suppress(OSError):  # the master has died meanwhile
            sock.send(answer, socket.MSG_NOSIGNAL)
    return False


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
        for typ, name in orders.objects:
            with contextlib.suppress(OSError):
                _resources.unlink_object(typ, name)
    if orders.record_path is not None:
        with contextlib.suppress(OSError):  # also a record that is not private
            unlink_pending(orders.record_path)
    if orders.prefix is not None:
        with contextlib.suppress(OSError):
            _ipc.unlink_prefix(orders.prefix)
    if orders.pidfile is not None:
        with contextlib.suppress(OSError):
            _remove_pidfile(orders.pidfile, orders.master_pid)
    if orders.lock_fd is not None and orders.socket_dir is not None:
        with contextlib.suppress(OSError):
            _remove_master_files(orders.socket_dir, orders.lock_fd)
    _remove_tree(orders.temp_dir)


def _remove_master_files(path: str, lock_fd: int) -> None:
    """The dead master's socket and lock file in its socket directory, as a
    clean end removes them (a given directory stays). Only while the lock
    held is the file at the path; the lock file last, still locked: a
    master that opened it meanwhile then makes a new one (see
    ``_socketdir.SocketDir._lock``)."""
    from ._socketdir import LOCK_NAME, SOCKET_NAME, is_at  # _socketdir imports this module

    lock_path = os.path.join(path, LOCK_NAME)
    if not is_at(lock_fd, lock_path):
        return  # another's, made since (or gone)
    socket_path = os.path.join(path, SOCKET_NAME)
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISSOCK(os.lstat(socket_path).st_mode):
            os.unlink(socket_path)
    os.unlink(lock_path)


def _remove_pidfile(path: str, master_pid: int) -> None:
    """Remove the dead master's pidfile: only a regular file (no link)
    that holds its pid, as run wrote it."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if stat.S_ISREG(os.fstat(fd).st_mode) and os.read(fd, 64) == f"{master_pid}\n".encode():
            os.unlink(path)
    finally:
        os.close(fd)
