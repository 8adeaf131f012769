"""Crash cleanup: the pmanage record, and the watchdog that acts on it.

Upstream writes every kernel object it manages into ``netplex.pmanage`` in the
socket directory, and unlinks what is still listed at the next start. netmcore
does the same (``netmcore.pmanage``: ``+``/``-`` lines, mode 0600), and adds a
watchdog: a small child forked by the master at start, which holds a pipe from
the master. When the pipe closes without the master's "clean" word, the master
has died (SIGKILL, a crash); the watchdog then unlinks every object still
recorded, sweeps the run's payload prefix, and removes a temporary socket
directory, at once, without waiting for a next start.

The watchdog also keeps a copy of the directory's lock until it is done, so no
new master can start in that directory while it cleans, and it never touches
an object of a master that is still running.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import stat
from dataclasses import dataclass

from . import _ipc, _resources
from ._debug import log
from ._errors import SocketDirectoryError
from ._resources import ResourceType

PMANAGE_NAME = "netmcore.pmanage"
_PREFIX_KIND = "prefix"  # a payload prefix: every object whose name starts with it
_CLEAN = b"clean"


class Record:
    """The append-only record of managed kernel objects (one writer: the master)."""

    def __init__(self, path: str) -> None:
        self.path = path
        # What an earlier, crashed master left and nobody unlinked (no_unlink):
        # it stays listed after this run, for a later start to clean.
        self.inherited = pending(path)
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        os.fchmod(self.fd, 0o600)

    def write(self, op: str, kind: str, name: str) -> None:
        os.write(self.fd, f"{op} {kind} {json.dumps(name)}\n".encode())

    def close(self, *, clean: bool) -> None:
        """Close it. After a ``clean`` end, what this run recorded is no longer
        anybody's to clean (what is left belongs to the living program), so only
        the inherited leftovers stay listed."""
        os.close(self.fd)
        if not clean:
            return
        if not self.inherited:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
            return
        lines = "".join(f"+ {kind} {json.dumps(name)}\n" for kind, name in self.inherited)
        tmp = self.path + ".tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, lines.encode())
        finally:
            os.close(fd)
        os.replace(tmp, self.path)


def pending(path: str) -> list[tuple[str, str]]:
    """The (kind, name) pairs a record still lists, in the order they were added.

    Raises
    ------
    SocketDirectoryError
        If the record is not a regular file of the user's that only the user
        can write: its entries name what is to be removed, so anyone who can
        write it could have the user remove any of the user's files.
    """
    listed: dict[tuple[str, str], None] = {}
    for line in _read_record(path).splitlines():
        entry = _parse(line)
        if entry is None:
            log.warning("netmcore: skipped a line of %s that is no record entry: %r", path, line)
            continue
        op, kind, name = entry
        if op == "+":
            listed[kind, name] = None
        else:
            listed.pop((kind, name), None)
    return list(listed)


def _read_record(path: str) -> bytes:
    """The record's bytes (none if there is no record); see :func:`pending`."""
    try:
        # Not through a symlink, and never blocking on a FIFO planted there.
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return b""
    except OSError as exc:
        raise SocketDirectoryError(
            f"cannot read the record {path!r} ({exc.strerror or exc}): nothing it lists "
            "was removed; look at it, and remove it"
        ) from exc
    with open(fd, "rb") as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o022:
            raise SocketDirectoryError(
                f"the record {path!r} is not a regular file of yours that only you can "
                f"write (mode {stat.S_IMODE(st.st_mode):o}, uid {st.st_uid}): nothing it "
                "lists was removed; look at it, and remove it"
            )
        return f.read()


def _parse(line: bytes) -> tuple[str, str, str] | None:
    """A record line's op, kind and name; None for a line that is none (torn
    by a crash, or not written by netmcore)."""
    try:
        op, kind, raw = line.decode().split(" ", 2)
        name = json.loads(raw)
    except ValueError:  # also not UTF-8, or not JSON
        return None
    if op not in ("+", "-") or not isinstance(name, str):
        return None
    return op, kind, name


def unlink_pending(path: str) -> list[str]:
    """Unlink whatever a record still lists, remove the record, and say what went.

    An entry that cannot be unlinked (a kind of another version of netmcore,
    a file that is now a directory, one the user may not remove) is logged and
    left: it must not keep the entries after it, or the next start, from going
    ahead. The record goes anyway, so it is reported once.
    """
    removed = []
    for kind, name in pending(path):
        try:
            if kind == _PREFIX_KIND:
                removed += _ipc.unlink_prefix(name)
            elif _resources.unlink_object(ResourceType(kind), name):
                removed.append(name)
        except (OSError, ValueError) as exc:  # ValueError: a kind this version does not know
            log.warning(
                "netmcore: could not unlink %s %r, listed in %s: %s; remove it yourself "
                "if it is a leftover",
                kind,
                name,
                path,
                exc,
            )
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    return removed


def record_prefix(record: Record, prefix: str) -> None:
    record.write("+", _PREFIX_KIND, prefix)


@dataclass
class Watchdog:
    os_pid: int
    pipe_w: int

    def stand_down(self) -> None:
        """The master ends cleanly: tell the watchdog, and wait for it to go."""
        with contextlib.suppress(OSError):
            os.write(self.pipe_w, _CLEAN)
        os.close(self.pipe_w)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self.os_pid, 0)


def start_watchdog(
    close_fds: list[int], record_path: str | None, prefix: str, temp_dir: str | None
) -> Watchdog:
    """Fork the watchdog; ``close_fds`` are master descriptors it must not hold."""
    pipe_r, pipe_w = os.pipe()
    os_pid = os.fork()
    if os_pid == 0:  # the watchdog
        code = 0
        try:
            os.close(pipe_w)
            for fd in close_fds:
                with contextlib.suppress(OSError):
                    os.close(fd)
            signal.set_wakeup_fd(-1)
            for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                signal.signal(signum, signal.SIG_IGN)
            os.setsid()  # out of the master's process group and terminal
            _watch(pipe_r, record_path, prefix, temp_dir)
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    os.close(pipe_r)
    return Watchdog(os_pid, pipe_w)


def _watch(pipe_r: int, record_path: str | None, prefix: str, temp_dir: str | None) -> None:
    said = b""
    while chunk := os.read(pipe_r, 64):
        said += chunk
    if said.endswith(_CLEAN):
        return
    # The pipe closed without the word: the master is dead.
    if record_path is not None:
        unlink_pending(record_path)
    _ipc.unlink_prefix(prefix)
    if temp_dir is not None:
        import shutil  # in the watchdog only: see _master.KEPT_OUT_OF_MASTER

        shutil.rmtree(temp_dir, ignore_errors=True)
