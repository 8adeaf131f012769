"""The socket directory: private, locked to one running master, short enough.

It holds the control socket (``netmcore.sock``) and the lock file
(``netmcore.lock``, holding the master's pid) that keeps a second master out.
By default it is a fresh private directory under ``$TMPDIR`` (or ``/tmp``),
removed at the end.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import stat
import time

from ._cleanup import PMANAGE_NAME
from ._errors import SocketDirectoryError

SOCKET_NAME = "netmcore.sock"
LOCK_NAME = "netmcore.lock"
# sockaddr_un.sun_path holds 108 bytes on Linux, including the final NUL.
MAX_SOCKET_PATH = 107
_CLEANUP_WAIT = 5.0  # seconds to wait for a dead master's watchdog


def check_path(path: object) -> str:
    """Return the absolute form of ``path``; ValueError if its socket would not fit."""
    if isinstance(path, os.PathLike):
        path = os.fspath(path)
    if not isinstance(path, str) or not path:
        raise (TypeError if not isinstance(path, str) else ValueError)(
            f"socket_directory must be a non-empty str or path, not {path!r}: name a "
            "directory (it is created if missing), or pass None for a fresh private one"
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


class SocketDir:
    """An opened, locked socket directory."""

    def __init__(self, path: str | os.PathLike[str] | None) -> None:
        self.temporary = path is None
        if path is None:
            self.path = _make_temporary_dir()
        else:
            self.path = check_path(path)
            _make_private_dir(self.path)
        self.token = os.urandom(6).hex()
        try:
            self.lock_fd = self._lock()
        except BaseException:
            self._remove_dir()
            raise

    @property
    def socket_path(self) -> str:
        return os.path.join(self.path, SOCKET_NAME)

    def _lock(self) -> int:
        lock_path = os.path.join(self.path, LOCK_NAME)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        deadline = time.monotonic() + _CLEANUP_WAIT
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
                # A dead master's lock is held by its watchdog while it cleans up.
                if _alive(holder) or time.monotonic() > deadline:
                    os.close(fd)
                    raise SocketDirectoryError(
                        f"socket directory {self.path!r} is in use by a running "
                        f"netmcore master (pid {holder}): pass another "
                        "socket_directory, or stop that master first"
                    ) from None
                time.sleep(0.01)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return fd

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
        except OSError:
            import shutil  # only for leftovers: see _master.KEPT_OUT_OF_MASTER

            shutil.rmtree(self.path, ignore_errors=True)


def _alive(pid_text: str) -> bool:
    try:
        os.kill(int(pid_text), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


def _make_temporary_dir() -> str:
    """A fresh directory, mode 0700, under $TMPDIR (or /tmp if that is unset,
    or too long for a socket path): what ``tempfile.mkdtemp`` makes, without
    tempfile (see _master.KEPT_OUT_OF_MASTER)."""
    base = os.path.abspath(os.environ.get("TMPDIR") or "/tmp")
    try:
        check_path(os.path.join(base, "netmcore-" + "x" * 12))
    except ValueError:
        base = "/tmp"
    while True:
        path = os.path.join(base, f"netmcore-{os.urandom(6).hex()}")
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            continue  # 48 random bits taken: draw again
        except OSError as exc:
            raise SocketDirectoryError(
                f"cannot create a socket directory in {base!r}: {exc}; set TMPDIR to a "
                "writable directory, or pass socket_directory"
            ) from exc
        return path


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
