"""``run`` and ``startup``: turn the calling process into the master for a while."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import inspect
import os
import signal
import stat
import threading
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any, TypeVar

from . import _cleanup, _context, _posix, _resources, _thread_pools, _watchdog
from ._debug import log
from ._errors import ContextError
from ._ids import ProcessId
from ._master import Controller, Master
from ._posix import raise_fd_limit
from ._socketdir import SocketDir, check_path

T = TypeVar("T")
R = TypeVar("R")

# Held for the whole of a run: the master's state (its context, process table
# and resource table) is the process's, so a second run from another thread
# would share it and hang or fail. It is refused instead, before anything is
# made.
_running = threading.Lock()


def run(
    *,
    first_process: Callable[[], ProcessId[R]],
    extract_result: Callable[[Controller, ProcessId[R]], T],
    socket_directory: str | os.PathLike[str] | None = None,
    pidfile: str | os.PathLike[str] | None = None,
    init_ctrl: Callable[[Controller], object] | None = None,
    disable_pmanage: bool = False,
    no_unlink: bool = False,
) -> T:
    """Become the master, run the first process, and return what it gave.

    ``first_process()`` is called in the master and normally just starts a
    process. When that process ends, the master waits for every other worker
    to end on its own, then calls ``extract_result(controller, pid)`` (where
    ``join_nowait`` still works) and returns its value.

    Parameters
    ----------
    socket_directory :
        Where the control socket lives. By default a fresh private directory,
        removed at the end. A given directory is created if missing; it must be
        private and short enough for a Unix socket path.
    pidfile :
        If given, the master's pid is written there (to a new file, renamed
        into place whole), and the file is removed at the end if it is still
        the one written. The master holds its lock for the run: a second run
        naming it meanwhile is refused, and a stale one is replaced.
    init_ctrl :
        Called with the :class:`Controller` before the first process starts.
    disable_pmanage, no_unlink :
        Control the crash-cleanup record of managed kernel objects.

    Raises
    ------
    ValueError, TypeError
        If ``socket_directory`` is empty, has a NUL, is too long for a Unix
        socket, or is not a str or path; if ``pidfile`` is not a file name, is
        a symbolic link or another file than a regular one, or is in
        ``socket_directory`` (or is it); if
        ``first_process``, ``extract_result`` or ``init_ctrl`` is not callable
        as run calls it (``first_process()``, ``extract_result(controller,
        pid)``, ``init_ctrl(controller)``). Raised before anything is made or
        forked.
    FileNotFoundError
        If the directory ``pidfile`` is to be written in does not exist.
    OSError
        With errno ``EBUSY``, if a running master holds ``pidfile``.
    SocketDirectoryError
        If the directory is in use by a running master, or is not private.
    KeyboardInterrupt, SystemExit
        After SIGINT or SIGTERM (``SystemExit(143)``), whenever it comes
        during ``run``, its first and last moments included: every worker has
        been stopped, and everything ``run`` made removed, first. A signal
        that the program ignores (``SIG_IGN``) when ``run`` starts stays
        ignored, in the master and in every worker.
    """
    if _context.current.role == "worker" or _context.in_master_loop():
        raise ContextError(
            f"netmcore.run() was called in {_context.current.role} context: a running "
            "netmcore program cannot start another; call start() instead"
        )
    # Before anything is made:
    _check_callables(first_process=first_process, extract_result=extract_result)
    if init_ctrl is not None:
        _check_callables(init_ctrl=init_ctrl)
    _check_flags(disable_pmanage=disable_pmanage, no_unlink=no_unlink)
    if socket_directory is not None:
        socket_directory = check_path(socket_directory)
    if pidfile is not None:
        pidfile = _check_pidfile(pidfile, socket_directory)
    with _one_run(), _Interrupts() as interrupts:
        with contextlib.ExitStack() as cleanup:
            # Unwound in reverse: the routing of signals, the context, the
            # pidfile, the master's children and shm, the directory, the
            # watchdog, SIGCHLD's handling, and the thread pools last. The
            # watchdog comes first of what is made: it is told of each thing
            # before it is made, and cleans up if the master is killed.
            cleanup.enter_context(_thread_pools.one_thread_each())
            cleanup.enter_context(_children_waited())
            # What the program made before run is its too, until the master
            # has recorded it (the guard keeps it as well).
            made = [] if disable_pmanage else _resources.recorded_objects()
            watchdog = _watchdog.fork_watchdog(made)
            cleanup.callback(watchdog.stand_down)
            sockdir = SocketDir(socket_directory, watchdog, waiting=interrupts.check)
            cleanup.callback(sockdir.close)
            if not disable_pmanage:
                watchdog.guard_record(sockdir.pmanage_path)
            if not no_unlink:
                _report_leftovers(_cleanup.unlink_pending(sockdir.pmanage_path), sockdir.path)
            raise_fd_limit()
            master = Master(sockdir, watchdog, pmanage=not disable_pmanage)
            cleanup.callback(master.close)
            cleanup.enter_context(_pidfile(pidfile, watchdog, master))
            cleanup.enter_context(_master_context(master))
            cleanup.enter_context(interrupts.routed_to(master))
            controller = Controller(master)
            with interrupts.interruptible():
                if init_ctrl is not None:
                    init_ctrl(controller)
                first = first_process()
            if not isinstance(first, ProcessId):
                raise TypeError(
                    f"first_process must return the ProcessId of the process it "
                    f"started, not {type(first).__name__}"
                )
            master.serve(first.n)
            # A Ctrl-C that the first process caught, to return what it had
            # (as a multiprocessing program's main catches it, to keep the
            # results in): its result is run's, as if nothing interrupted it.
            caught = (
                master.interrupted is not None
                and interrupts.seen == {signal.SIGINT}  # no SIGTERM: that one stops
                and master.first_caught_interrupt
            )
            if caught:
                interrupts.signum = None  # handled: nothing to raise
            if master.interrupted is None or caught:
                with interrupts.interruptible():
                    return extract_result(controller, first)
            else:  # (for 3.12: see test_backedges)
                pass
        raise interrupts.reported(master.interrupted)


def startup(
    *,
    first_process: Callable[[], ProcessId[Any]],
    socket_directory: str | os.PathLike[str] | None = None,
    pidfile: str | os.PathLike[str] | None = None,
    init_ctrl: Callable[[Controller], object] | None = None,
    disable_pmanage: bool = False,
    no_unlink: bool = False,
) -> None:
    """:func:`run` without a result: returns when the system has shut down."""
    run(
        first_process=first_process,
        extract_result=lambda _ctrl, _pid: None,
        socket_directory=socket_directory,
        pidfile=pidfile,
        init_ctrl=init_ctrl,
        disable_pmanage=disable_pmanage,
        no_unlink=no_unlink,
    )


# How run calls each function it is given (with how many arguments), and
# what a fitting one looks like.
_CALLS = {
    "first_process": (
        "first_process()",
        0,
        "no parameters, as in `first_process=lambda: P.start(arg)`",
    ),
    "extract_result": (
        "extract_result(controller, pid)",
        2,
        "two parameters, as in `extract_result=lambda ctrl, pid: P.join_nowait(pid)`",
    ),
    "init_ctrl": ("init_ctrl(controller)", 1, "one parameter, as in `init_ctrl=lambda ctrl: ...`"),
}


def _check_callables(**given: object) -> None:
    """TypeError unless each function can be called as run calls it: one that
    cannot would fail only when called, extract_result after all the work."""
    for name, value in given.items():
        if not callable(value):
            raise TypeError(f"{name} must be a function, not {value!r}")
        call, count, fitting = _CALLS[name]
        try:
            signature = inspect.signature(value)
        except (TypeError, ValueError):
            continue  # nothing to read (some builtins): called unchecked
        try:
            signature.bind(*[None] * count)
        except TypeError as exc:
            label = getattr(value, "__qualname__", None) or repr(value)
            # Names alone: annotations (strings, under `from __future__ import
            # annotations`) would bury them.
            bare = signature.replace(
                parameters=[p.replace(annotation=p.empty) for p in signature.parameters.values()],
                return_annotation=signature.empty,
            )
            raise TypeError(
                f"{name} is called as {call}, which {label}{bare} does not accept "
                f"({exc}): give it {fitting}"
            ) from None


def _check_flags(**given: object) -> None:
    """TypeError, naming it, for a flag that is not a bool: a str such as
    "no" is true, and would have set it."""
    for name, value in given.items():
        if not isinstance(value, bool):
            raise TypeError(
                f"{name}={value!r} is not valid: it is a bool (True or False), not "
                f"{type(value).__name__}"
            )


def _check_pidfile(path: object, socket_directory: str | None = None) -> str:
    """The absolute path of ``pidfile``; an error now if it cannot be written
    there. ``socket_directory`` is the checked one, if one was given."""
    if isinstance(path, os.PathLike):
        path = os.fspath(path)
    if not isinstance(path, str) or not path or "\0" in path:
        raise (TypeError if not isinstance(path, str) else ValueError)(
            f"pidfile must be a non-empty str or path without NUL characters, not "
            f"{path!r}: name the file to write the master's pid to, or pass None"
        )
    absolute = os.path.abspath(path)
    if os.path.islink(absolute):
        # Written through, the link's target would stay when the link is removed.
        raise ValueError(
            f"pidfile {path!r} is a symbolic link (to {os.readlink(absolute)!r}), and run "
            "writes the pidfile itself and removes it at the end: name a file that is "
            "not a link, or remove the link first"
        )
    if os.path.isdir(absolute):
        raise ValueError(f"pidfile {path!r} is a directory: name a file in it")
    if path.endswith("/"):  # abspath dropped it: a file of that name was written over
        raise ValueError(
            f"pidfile {path!r} ends with a slash, as a directory's name does: name the "
            "file to write the master's pid to"
        )
    if os.path.exists(absolute) and not os.path.isfile(absolute):
        # A socket or FIFO cannot be written as a file; a device (/dev/null)
        # can, and would be unlinked at the end.
        raise ValueError(
            f"pidfile {path!r} exists and is not a regular file, and run writes the "
            "pidfile and removes it at the end: name a regular file, or one that does "
            "not exist yet"
        )
    where = None if socket_directory is None else _overlap(absolute, socket_directory)
    if where is not None:
        raise ValueError(
            f"pidfile {path!r} {where} the socket directory {socket_directory!r}, which "
            "netmcore owns during the run (it makes it if missing, puts its control "
            "socket and lock file in it, and removes them at the end): name a pidfile "
            "outside it"
        )
    if not os.path.isdir(os.path.dirname(absolute)):
        raise FileNotFoundError(
            f"pidfile {path!r}: the directory {os.path.dirname(absolute)!r} does not "
            "exist: create it first, or name a file in an existing directory"
        )
    return absolute


def _overlap(pidfile: str, directory: str) -> str | None:
    """How ``pidfile`` (not a link) and ``directory`` overlap, if they do:
    compared with the links in their paths resolved, as the system sees them.
    (A pidfile that is to hold the directory would be made a directory.)"""
    pidfile = os.path.join(os.path.realpath(os.path.dirname(pidfile)), os.path.basename(pidfile))
    directory = os.path.realpath(directory)
    common = os.path.commonpath([pidfile, directory])
    if pidfile == directory:
        return "is"
    if common == directory:
        return "is inside"
    if common == pidfile:
        return "is a parent directory of"
    return None


def _report_leftovers(removed: list[str], path: str) -> None:
    if removed:
        log.warning(
            "netmcore: unlinked %d object(s) that a crashed master left in %s: %s",
            len(removed),
            path,
            ", ".join(removed),
        )


@contextlib.contextmanager
def _one_run() -> Iterator[None]:
    """Hold ``_running`` for the run; ContextError if another thread holds it."""
    if not _running.acquire(blocking=False):
        raise ContextError(
            "netmcore.run() is running in another thread of this process already, and "
            "a process is the master of one run at a time: wait until that run returns "
            "before calling run() again, or start this work as processes of that run"
        )
    try:
        yield
    finally:
        _running.release()


@contextlib.contextmanager
def _master_context(master: Master) -> Iterator[None]:
    ctx = _context.current
    ctx.role, ctx.master, ctx.shm_prefix = "master", master, master.shm_prefix
    ctx.master_thread = threading.get_ident()
    try:
        yield
    finally:
        ctx.role, ctx.master, ctx.shm_prefix = "none", None, ""
        ctx.master_thread = None


@contextlib.contextmanager
def _pidfile(path: str | None, watchdog: _watchdog.Watchdog, master: Master) -> Iterator[None]:
    """The master's pid in ``path`` for the run; removed at the end if it is
    still the file this run wrote.

    The file is written whole, then put in place (see :func:`_put_in_place`),
    so a reader never sees it half written, and a file that anything else
    puts at ``path`` later is another file, which the end leaves alone. The master
    holds an flock on it for the run: a second run naming it while this one
    runs is refused, and a stale one (its run gone, whatever pid it holds)
    is replaced.
    """
    if path is None:
        yield
        return
    watchdog.guard_pidfile(path)  # first: a master killed from here on leaves none
    fd = _write_pidfile(path)
    st = os.fstat(fd)
    master.keep_from_children(fd)  # the lock is the master's: no worker holds it on
    try:
        yield
    finally:
        try:
            with contextlib.suppress(FileNotFoundError):
                now = os.lstat(path)
                if (now.st_dev, now.st_ino) == (st.st_dev, st.st_ino):  # not another's since
                    try:
                        os.unlink(path)
                    except PermissionError:
                        # A directory closed to this user (see _write_in_place):
                        # the file stays, emptied, naming no process.
                        os.ftruncate(fd, 0)
                    else:  # (for 3.12: see test_backedges)
                        pass
        finally:
            master.keep_from_children(fd, keep=False)
            os.close(fd)  # the lock goes after the file: a new run then makes its own


def _write_pidfile(path: str) -> int:
    """Put a file holding the master's pid at ``path``; its descriptor, with
    the file's flock held.

    The file is made without a name (O_TMPFILE) and given its name once
    whole: a master killed before that leaves nothing, where a temporary
    name would stay. A file system without unnamed files (NFS, vfat) gets
    the named way, and so does a system without /proc (a container or a
    chroot that does not mount it), through which the unnamed file is linked."""
    directory = os.path.dirname(path)
    pid = f"{os.getpid()}\n".encode()
    try:
        fd = os.open(directory, os.O_TMPFILE | os.O_WRONLY | os.O_CLOEXEC, 0o666)
    except PermissionError as exc:
        return _write_in_place(path, pid, exc)
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
            raise
        return _write_named(path, pid)
    source = _proc_path(fd)
    if not _names(source, fd):
        # The other way to link it, linkat(fd, "", ..., AT_EMPTY_PATH), is not
        # in os.link, and before Linux 6.10 needs CAP_DAC_READ_SEARCH.
        os.close(fd)
        return _write_named(path, pid)
    return _fill_and_place(fd, pid, source, path, named=False)


def _proc_path(fd: int) -> str:
    """A path to the file ``fd`` that needs no name of its own (unnamed, or
    renamed since), through /proc."""
    return f"/proc/self/fd/{fd}"


def _names(source: str, fd: int) -> bool:
    """Whether the path ``source`` leads to the file ``fd``: asked before
    anything is written, so that a link's failure never has to be told
    apart from one of the pidfile's own directory."""
    try:
        there, here = os.stat(source), os.fstat(fd)
    except OSError:
        return False
    return (there.st_dev, there.st_ino) == (here.st_dev, here.st_ino)


def _write_named(path: str, pid: bytes) -> int:
    """:func:`_write_pidfile` under a temporary name first."""
    directory, name = os.path.split(path)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    while True:
        # Hidden, and short enough for any file system's names.
        temp = os.path.join(directory, f".{name[:64]}.{os.urandom(6).hex()}.tmp")
        try:
            fd = os.open(temp, flags, 0o666)
            break
        except FileExistsError:
            continue  # 48 random bits taken: draw again
        except PermissionError as exc:
            return _write_in_place(path, pid, exc)
    try:
        return _fill_and_place(fd, pid, temp, path, named=True)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)  # the second name a link left, or a file never placed


def _fill_and_place(fd: int, pid: bytes, source: str, path: str, *, named: bool) -> int:
    """Lock the new file ``fd``, write ``pid`` into it, and give it the name
    ``path`` (see :func:`_put_in_place`); ``fd``, or closed if that fails."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # nobody else knows of it yet
        os.write(fd, pid)
        _put_in_place(source, path, named=named)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _write_in_place(path: str, pid: bytes, exc: PermissionError) -> int:
    """The pidfile written into the file at ``path``, in a directory where
    this user can make no file (``exc``), as a pidfile made there beforehand
    for a program (/var/run/prog.pid) is: not atomic, but under its lock."""
    found = _lock_existing(path)
    if found is None:
        raise PermissionError(
            exc.errno,
            f"pidfile {path!r} cannot be made: no file can be created in "
            f"{os.path.dirname(path)!r} ({exc.strerror}): name a pidfile in a directory "
            "you can write to, or create the file there beforehand, writable by you",
        ) from None
    fd, _ = found
    try:
        os.ftruncate(fd, 0)
        os.write(fd, pid)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _put_in_place(source: str, path: str, *, named: bool) -> None:
    """Give the file ``source`` the name ``path``: if no file has it, by a
    link (which fails if one has it by then); else, if no run holds that
    file's lock (it is stale), it is replaced, with its lock held so that no
    other run replaces it meanwhile: by a rename over it (``named``), or, for
    a file with no name to rename (/proc/self/fd/N), by its unlink and a new
    link (a run that links in between wins, and this one is refused). OSError
    if a run holds it, or if it is not a regular file (any more): it is then
    left as it is."""
    # Python calls linkat, which follows /proc/self/fd/N to the file, only
    # with a directory descriptor: any one, ignored for an absolute path.
    root = None if named else os.open("/", os.O_PATH | os.O_CLOEXEC)
    try:
        while True:
            try:
                os.link(source, path, src_dir_fd=root)
                return
            except FileExistsError:
                pass
            except OSError as exc:
                if not named or exc.errno not in (errno.EPERM, errno.EOPNOTSUPP):
                    raise
                # A file system without hard links (vfat): the rename of a second
                # run starting at this very moment could replace this one.
                if not os.path.lexists(path):
                    os.rename(source, path)
                    return
            # (None: it went meanwhile. Not a `continue`: see test_backedges.)
            found = _lock_existing(path)
            if found is not None:
                old, st = found
                try:
                    with contextlib.suppress(FileNotFoundError):
                        now = os.lstat(path)
                        if (now.st_dev, now.st_ino) == (st.st_dev, st.st_ino):
                            if named:
                                os.rename(source, path)
                                return
                            os.unlink(path)
                    # Replaced or removed since it was opened, or unlinked: look again.
                finally:
                    os.close(old)
    finally:
        if root is not None:
            os.close(root)


def _lock_existing(path: str) -> tuple[int, os.stat_result] | None:
    """The file at ``path`` (None if there is none), opened, with its lock
    taken. OSError if it is not a regular file (any more), or if a running
    master holds its lock: nothing is written to it then."""
    # Not O_RDONLY: a FIFO opens for writing only if it has a reader, and so
    # is told apart without a wait.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno not in (errno.ELOOP, errno.ENXIO):
            raise
        what = "a symbolic link" if exc.errno == errno.ELOOP else "a FIFO or a socket"
        raise OSError(exc.errno, _changed(path, what)) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, _changed(path, "something other than a regular file"))
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OSError(errno.EBUSY, _in_use(path, fd)) from None
    except BaseException:
        os.close(fd)
        raise
    return fd, st


def _in_use(path: str, fd: int) -> str:
    """The error for a pidfile whose lock another run holds (its file ``fd``)."""
    holder = "?"
    # The same file, opened again for reading; unreadable, the message does without.
    with contextlib.suppress(OSError, ValueError), open(_proc_path(fd), "rb") as f:
        holder = str(int(f.read(32)))
    return (
        f"pidfile {path!r} is in use by a running netmcore master (pid {holder}), which "
        "holds its lock: pass another pidfile, or stop that master first"
    )


def _changed(path: str, what: str) -> str:
    return (
        f"pidfile {path!r} became {what} after run checked it, and is not written "
        "to: name a regular file, or one that does not exist yet"
    )


@contextlib.contextmanager
def _children_waited() -> Iterator[None]:
    """SIGCHLD at its default for the run: a program that ignores it has the
    kernel reap its children, and the master would lose their exit status
    (a process that died would have no outcome: ChildProcessError)."""
    if signal.getsignal(signal.SIGCHLD) != signal.SIG_IGN:
        yield
        return
    if threading.current_thread() is not threading.main_thread():
        raise ContextError(
            "netmcore.run() needs SIGCHLD at its default to learn how its processes "
            "end, and this program ignores it (SIG_IGN), which only the main thread can "
            "change: call run() in the main thread, or restore SIGCHLD first with "
            "signal.signal(signal.SIGCHLD, signal.SIG_DFL)"
        )
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    try:
        yield
    finally:
        signal.signal(signal.SIGCHLD, signal.SIG_IGN)


class _Interrupts:
    """SIGINT and SIGTERM for the whole of ``run``, from before anything is
    made until all of it is gone again.

    While the master sets up or tears down, a signal is only noted: to act on
    it there (by the default action, or by an exception out of the middle of
    a cleanup step) would leave what was half made or half removed. It is
    raised once the run is over, as ``KeyboardInterrupt`` or ``SystemExit(128
    + signum)``. Once the master exists, its loop is told too
    (:meth:`Master.on_signal`), and stops the workers. Only in the master's
    own code (``init_ctrl``, ``first_process``, ``extract_result``) does the
    signal interrupt at once, as it would without netmcore: run's cleanup
    then kills whatever that code started. The first signal is the one raised.

    A signal the program ignores (``SIG_IGN``) when ``run`` starts is left
    ignored, in the master and in every worker (see ``_worker.main``): it
    stops nothing, as ``multiprocessing`` keeps it too. A shell starts its
    background jobs with SIGINT ignored, so that the terminal's Ctrl-C and a
    ``kill -INT 0`` of their group pass them by.

    Only the main thread can install handlers; from another thread the master
    runs with the process's handlers as they are.
    """

    def __init__(self) -> None:
        self.signum: int | None = None  # the first that came
        self.seen: set[int] = set()  # every one that came
        self.raised = False  # ... and was raised already
        self.master: Master | None = None
        self.in_user_code = False
        self.old: dict[int, Any] = {}

    def __enter__(self) -> _Interrupts:
        _posix.forget_held()  # (left by a hold cut short before this run)
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                if signal.getsignal(signum) != signal.SIG_IGN:
                    self.old[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for signum, previous in self.old.items():
            signal.signal(signum, previous)
        if self.signum is not None and not self.raised:
            raise self.reported(self.signum)

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        if _posix.deferred(signum):  # in a step that must not be cut: handled as it ends
            return
        self.seen.add(signum)
        if self.signum is None:
            self.signum = signum
        if self.in_user_code:
            raise self.reported(signum)
        if self.master is not None:
            self.master.on_signal(signum)

    def check(self) -> None:
        """Raise the signal that came, if one did (where stopping is safe)."""
        if self.signum is not None and not self.raised:
            raise self.reported(self.signum)

    def reported(self, signum: int | None) -> BaseException:
        """The exception for ``signum``, to be raised now."""
        self.raised = True
        return KeyboardInterrupt() if signum == signal.SIGINT else SystemExit(128 + (signum or 0))

    @contextlib.contextmanager
    def routed_to(self, master: Master) -> Iterator[None]:
        """Tell ``master`` of signals within; one that came before is raised now."""
        self.master = master  # first: a signal that comes after the check is not held
        try:
            self.check()
            yield
        finally:
            self.master = None

    @contextlib.contextmanager
    def interruptible(self) -> Iterator[None]:
        """The master's own code: a signal within raises there, at once (one
        that came before, on entry). A signal that comes just as it returns
        is noted, and raised when run is over, never in run's cleanup."""
        self.in_user_code = True
        try:
            self.check()
            yield
        finally:
            self.in_user_code = False
