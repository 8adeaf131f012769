"""``run`` and ``startup``: turn the calling process into the master for a while."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any, TypeVar

from . import _cleanup, _context
from ._debug import log
from ._errors import ContextError
from ._ids import ProcessId
from ._master import Controller, Master
from ._posix import raise_fd_limit
from ._socketdir import SocketDir

T = TypeVar("T")
R = TypeVar("R")


def run(
    *,
    first_process: Callable[[], ProcessId[R]],
    extract_result: Callable[[Controller, ProcessId[R]], T],
    socket_directory: str | os.PathLike[str] | None = None,
    pidfile: str | None = None,
    init_ctrl: Callable[[Controller], None] | None = None,
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
        If given, the master's pid is written there, and the file is removed at
        the end.
    init_ctrl :
        Called with the :class:`Controller` before the first process starts.
    disable_pmanage, no_unlink :
        Control the crash-cleanup record of managed kernel objects.

    Raises
    ------
    ValueError, TypeError
        If ``socket_directory`` is empty or too long for a Unix socket, or
        not a str or path.
    SocketDirectoryError
        If the directory is in use by a running master, or is not private.
    KeyboardInterrupt, SystemExit
        After SIGINT or SIGTERM: every worker has been stopped first.
    """
    if _context.current.role != "none":
        raise ContextError(
            f"netmcore.run() was called in {_context.current.role} context: a running "
            "netmcore program cannot start another; call start() instead"
        )
    sockdir = SocketDir(socket_directory)  # checks the path before it creates anything
    with contextlib.ExitStack() as cleanup:
        # Unwound in reverse: the signal handlers, the context, the pidfile,
        # then the master's children and shm, and the directory last.
        cleanup.callback(sockdir.close)
        if not no_unlink:
            _report_leftovers(_cleanup.unlink_pending(sockdir.pmanage_path), sockdir.path)
        raise_fd_limit()
        master = Master(sockdir, pmanage=not disable_pmanage)
        cleanup.callback(master.close)
        cleanup.enter_context(_pidfile(pidfile))
        cleanup.enter_context(_master_context(master))
        cleanup.enter_context(_signals(master))
        controller = Controller(master)
        if init_ctrl is not None:
            init_ctrl(controller)
        first = first_process()
        if not isinstance(first, ProcessId):
            raise TypeError(
                f"first_process must return the ProcessId of the process it "
                f"started, not {type(first).__name__}"
            )
        master.serve(first.n)
        if master.interrupted is None:
            return extract_result(controller, first)
    if master.interrupted == signal.SIGINT:
        raise KeyboardInterrupt
    raise SystemExit(128 + (master.interrupted or 0))


def startup(
    *,
    first_process: Callable[[], ProcessId[Any]],
    socket_directory: str | os.PathLike[str] | None = None,
    pidfile: str | None = None,
    init_ctrl: Callable[[Controller], None] | None = None,
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


def _report_leftovers(removed: list[str], path: str) -> None:
    if removed:
        log.warning(
            "netmcore: unlinked %d object(s) that a crashed master left in %s: %s",
            len(removed),
            path,
            ", ".join(removed),
        )


@contextlib.contextmanager
def _master_context(master: Master) -> Iterator[None]:
    ctx = _context.current
    ctx.role, ctx.master, ctx.shm_prefix = "master", master, master.shm_prefix
    try:
        yield
    finally:
        ctx.role, ctx.master, ctx.shm_prefix = "none", None, ""


@contextlib.contextmanager
def _pidfile(path: str | None) -> Iterator[None]:
    if path is None:
        yield
        return
    with open(path, "w") as f:
        f.write(f"{os.getpid()}\n")
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


@contextlib.contextmanager
def _signals(master: Master) -> Iterator[None]:
    """Route SIGINT and SIGTERM to the master's loop while it runs.

    Only the main thread can install handlers; from another thread the
    master runs with the process's handlers as they are.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, _frame: FrameType | None) -> None:
        master.on_signal(signum)

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, previous in old.items():
            signal.signal(signum, previous)
