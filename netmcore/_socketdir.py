"""The socket directory: private, locked to one running master, short enough.

It holds the control socket (``netmcore.sock``) and the lock file
(``netmcore.lock``, holding the master's pid) that keeps a second master out;
the master's watchdog holds the lock too, and adds its own pid when it cleans
up after a dead master, so that a new one waits for it. By default it is a
fresh private directory under ``$TMPDIR`` (or ``/tmp``), made by the watchdog
(see _watchdog), and removed at the end.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import stat
import time
from collections.abc import Callable

from ._cleanup import PMANAGE_NAME
from ._debug import log
from ._errors import SocketDirectoryError
from ._watchdog import TEMPORARY_PREFIX, Watchdog

SOCKET_NAME = "netmcore.sock"
LOCK_NAME = "netmcore.lock"
# sockaddr_un.sun_path holds 108 bytes on Linux, including the final NUL.
MAX_SOCKET_PATH = 107
_CLEANUP_WAIT = 5.0  # seconds for a dead master's watchdog to say it is cleaning up


def check_path(path: object) -> str:
    """Return the absolute form of ``path``; ValueError if its socket would not fit."""
    if isinstance(path, os.PathLike):
        path = os.fspath(path)
    if not isinstance(path, str) or not path:
        raise (TypeError if not isinstance(path, str) else ValueError)(
            f"socket_directory must be a non-empty str or path, not {path!r}: name a "
            "directory (it is created if missing), or pass None for a fresh private one"
        )
    if "\0" in path:
        raise ValueError(
            f"socket_directory {path!r} has a NUL character, which no file name may "
            "have: name a directory without one, or pass None for a fresh private one"
        )
    absolute = os.path.abspath(path)
    sock = os.path.join(absolute, SOCKET_NAME)
    if len(os.fsencode(sock)) > MAX_SOCKET_PATH:
        raise ValueError(
            f"socket_directory {path!r} is too long: the control socket "
            f"{sock!r} would be {len(os.fsencode(sock))} bytes, and a Unix socket "
            f"path may have at most {MAX_SOCKET_PATH}; choose a shorter directory"
        )
    return absolute


def _refuse_a_users_file(path: str) -> None:
    """SocketDirectoryError if the names netmcore uses in the socket
    directory ``path`` hold what is not its own: a master replaces its
    socket, writes its pid into its lock file, and removes both at its end
    (a user's file of either name was lost)."""
    socket_path, lock_path = os.path.join(path, SOCKET_NAME), os.path.join(path, LOCK_NAME)
    with contextlib.suppress(FileNotFoundError):
        if not stat.S_ISSOCK(os.lstat(socket_path).st_mode):
            raise SocketDirectoryError(
                f"{socket_path!r} is not a socket: netmcore binds its control socket at "
                "that name in a socket directory, and removes it at the end. Move that "
                "file, or pass another socket_directory"
            )
    with contextlib.suppress(FileNotFoundError):
        mode = os.lstat(lock_path).st_mode
        content = b""
        if stat.S_ISREG(mode):
            with open(lock_path, "rb") as f:
                content = f.read(64)
        # A master's lock holds its pid, or "MASTER watchdog PID" (see _holders).
        if not stat.S_ISREG(mode) or content.replace(b"watchdog", b"").strip(b"0123456789 \n"):
            raise SocketDirectoryError(
                f"{lock_path!r} is not a netmcore lock file: netmcore writes its master's "
                "pid at that name in a socket directory, and removes it at the end. Move "
                "that file, or pass another socket_directory"
            )


class SocketDir:
    """An opened, locked socket directory.

    ``watchdog`` (the master's) makes a temporary directory and keeps a copy
    of the lock; ``waiting`` is called while the lock is held by a dead
    master's watchdog, and may raise to stop the wait.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None,
        watchdog: Watchdog,
        waiting: Callable[[], None] = lambda: None,
    ) -> None:
        self.temporary = path is None
        self.closed = False
        if path is None:
            self.path = _make_temporary_dir(watchdog)
        else:
            self.path = check_path(path)
            _make_private_dir(self.path)
            _refuse_a_users_file(self.path)
        self.token = os.urandom(6).hex()
        try:
            self.lock_fd = self._lock(waiting)
        except BaseException:
            self._remove_dir()
            raise
        watchdog.hold_lock(self.lock_fd, self.path)

    @property
    def socket_path(self) -> str:
        return os.path.join(self.path, SOCKET_NAME)

    def _lock(self, waiting: Callable[[], None]) -> int:
        lock_path = os.path.join(self.path, LOCK_NAME)
        while True:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                self._wait_for_lock(fd, waiting)
                # A master that ended as this one opened the file removed it,
                # then let go of its lock: the lock taken then is on a file no
                # longer at the path, where the next master would make and
                # lock one of its own, and run beside this one. So the lock
                # counts only on the file at the path; else the open is redone.
                if is_at(fd, lock_path):
                    break
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return fd

    def _wait_for_lock(self, fd: int, waiting: Callable[[], None]) -> None:
        """Take the lock, waiting while a dead master's watchdog holds it.

        The lock file holds the master's pid, and the watchdog adds its own
        when it starts to clean up (see _watchdog._clean_up). For as long as
        that watchdog lives, however long it takes, the wait goes on: to
        start beside it would race it for the objects it unlinks. The master
        dead and no watchdog named: the watchdog has not said so yet, and gets
        _CLEANUP_WAIT seconds to.
        """
        deadline = time.monotonic() + _CLEANUP_WAIT
        told = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                pass
            master, watchdog = _holders(os.pread(fd, 64, 0))
            cleaning = watchdog is not None and _alive(watchdog)
            # A watchdog named: its master is dead (its pid may be reused already).
            if watchdog is None and _alive(master):
                raise SocketDirectoryError(
                    f"socket directory {self.path!r} is in use by a running "
                    f"netmcore master (pid {master}): pass another "
                    "socket_directory, or stop that master first"
                )
            if not cleaning and time.monotonic() > deadline:
                raise SocketDirectoryError(
                    f"socket directory {self.path!r} is still locked, though its "
                    f"netmcore master (pid {master}) is dead and no watchdog of it "
                    "cleans up: a process that master started may hold the lock; "
                    "stop it, or pass another socket_directory"
                )
            if cleaning and not told and time.monotonic() > deadline:
                told = True
                log.warning(
                    "netmcore: waiting for the watchdog (pid %s) of a dead master (pid %s) "
                    "to finish cleaning up after it in %s",
                    watchdog,
                    master,
                    self.path,
                )
            waiting()
            time.sleep(0.01)

    @property
    def pmanage_path(self) -> str:
        return os.path.join(self.path, PMANAGE_NAME)

    def listen(self) -> socket.socket:
        """Bind the control socket (replacing a stale one) and listen on it."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket_path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        sock.bind(self.socket_path)
        os.chmod(self.socket_path, 0o600)
        sock.listen(16)
        sock.setblocking(False)
        return sock

    def fds(self) -> list[int]:
        return [self.lock_fd]

    def close(self) -> None:
        """Remove the socket and the lock file (and a temporary directory), and
        let go of the lock. Harmless to repeat: once the lock is let go, the
        files at these paths may be another master's."""
        if self.closed:
            return
        self.closed = True
        try:
            for name in (SOCKET_NAME, LOCK_NAME):
                with contextlib.suppress(OSError):  # gone, or not ours to remove
                    os.unlink(os.path.join(self.path, name))
        finally:
            os.close(self.lock_fd)
            self._remove_dir()

    def _remove_dir(self) -> None:
        if not self.temporary:
            return
        try:
            os.rmdir(self.path)  # empty by now, as a rule
        except FileNotFoundError:
            pass
        except OSError:
            import shutil  # only for leftovers: see _master.KEPT_OUT_OF_MASTER

            shutil.rmtree(self.path, ignore_errors=True)


def is_at(fd: int, path: str) -> bool:
    """Whether the file open at ``fd`` is the one at ``path``."""
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except FileNotFoundError:
        return False


def _holders(text: bytes) -> tuple[str, str | None]:
    """The master's pid, and its watchdog's if the watchdog is cleaning up
    after it, from the lock file's text: ``MASTER`` or ``MASTER watchdog PID``."""
    words = text.decode(errors="replace").split()
    if len(words) >= 3 and words[1] == "watchdog":
        return words[0], words[2]
    return (words[0] if words else "?"), None


def _alive(pid_text: str) -> bool:
    """Whether the process ``pid_text`` runs. A zombie does not: it has died,
    and only waits for its parent to reap it (which a supervisor may do late),
    but ``kill(pid, 0)`` still finds it."""
    try:
        pid = int(pid_text)
    except ValueError:
        return False
    if pid <= 0:
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat_line = f.read()
    except FileNotFoundError:
        return False
    except OSError:  # no /proc to look in: ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    # pid (comm) state ...: comm may hold anything, parentheses too.
    state = stat_line.rpartition(b")")[2].split()[:1]
    return state not in ([b"Z"], [b"X"], [])


def temporary_base() -> str:
    """Where a run's own socket directory is made: $TMPDIR, or /tmp if that
    is unset, or too long for a socket path."""
    base = os.path.abspath(os.environ.get("TMPDIR") or "/tmp")
    try:
        check_path(os.path.join(base, TEMPORARY_PREFIX + "x" * 12))
    except ValueError:
        return "/tmp"
    return base


def running_masters() -> list[tuple[str, int]]:
    """The socket directories of this user's masters running in their own
    directories (the default), with each master's pid, oldest first."""
    base = temporary_base()
    found: list[tuple[float, str, int]] = []
    with contextlib.suppress(OSError), os.scandir(base) as entries:
        for entry in entries:
            if not entry.name.startswith(TEMPORARY_PREFIX):
                continue
            try:
                info = entry.stat(follow_symlinks=False)
                with open(os.path.join(entry.path, LOCK_NAME), "rb") as f:
                    master, cleaning = _holders(f.read(64))
            except OSError:
                continue
            if info.st_uid == os.getuid() and cleaning is None and _alive(master):
                found.append((info.st_mtime, entry.path, int(master)))
    return [(path, pid) for _, path, pid in sorted(found)]


def _make_temporary_dir(watchdog: Watchdog) -> str:
    """A fresh directory, mode 0700, under :func:`temporary_base`, made by
    ``watchdog``: so that from the moment it exists, a dead master's watchdog
    removes it."""
    base = temporary_base()
    try:
        return watchdog.make_dir(base)
    except OSError as exc:
        raise SocketDirectoryError(
            f"cannot create a socket directory in {base!r}: {exc}; set TMPDIR to a "
            "writable directory, or pass socket_directory"
        ) from exc


def _make_private_dir(path: str) -> None:
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
    except OSError as exc:
        raise SocketDirectoryError(f"cannot create socket_directory {path!r}: {exc}") from exc
    check_private_dir(path)


def check_private_dir(path: str) -> None:
    """Raise SocketDirectoryError unless ``path`` is a directory of the caller's
    that nobody else can write to: anyone who can could plant a record there
    that names the caller's files for removal, or a socket of their own."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise SocketDirectoryError(f"cannot use socket_directory {path!r}: {exc}") from exc
    if not stat.S_ISDIR(st.st_mode):
        raise SocketDirectoryError(f"socket_directory {path!r} is not a directory")
    if st.st_uid != os.getuid():
        raise SocketDirectoryError(
            f"socket_directory {path!r} belongs to uid {st.st_uid}, not to you: "
            "use a directory of your own"
        )
    if st.st_mode & 0o022:
        raise SocketDirectoryError(
            f"socket_directory {path!r} is writable by other users (mode "
            f"{stat.S_IMODE(st.st_mode):o}): use a private directory (chmod 700)"
        )
