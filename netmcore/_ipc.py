"""Typed wrappers around posix_ipc (shared memory, semaphores): the one place that imports it.

Objects are created exclusively (``O_CREX``, never clobbering a name) with mode
0600, so only the user can open them.
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
from collections.abc import Iterator, Sequence

import posix_ipc

from ._pthread import check_timeout, named_sem_close, named_sem_open, sem_wait

SHM_DIR = "/dev/shm"
SEM_VALUE_MAX: int = posix_ipc.SEMAPHORE_VALUE_MAX


# posix_ipc's OSErrors that it raises with a message and no errno, by message.
_NO_ERRNO = {
    "This process already has the maximum number of files open": errno.EMFILE,
    "The system limit on the total number of open files has been reached": errno.ENFILE,
}


@contextlib.contextmanager
def _os_errors(name: str, creating: bool) -> Iterator[None]:
    """posix_ipc's own exceptions, as the OSErrors callers expect, each
    with an errno: an OSError with none is what a signal handler's
    TimeoutError is, and the loops that repeat a step through handlers'
    exceptions would repeat one that fails every time (see
    ``_wire.failed_of_its_own``)."""
    try:
        yield
    except posix_ipc.ExistentialError as exc:
        cls = FileExistsError if creating else FileNotFoundError
        raise cls(errno.EEXIST if creating else errno.ENOENT, str(exc), name) from exc
    except posix_ipc.PermissionsError as exc:
        raise PermissionError(errno.EACCES, str(exc), name) from exc
    except posix_ipc.Error as exc:  # one it gives no cause for
        raise OSError(errno.EIO, str(exc), name) from exc
    except OSError as exc:
        number = exc.errno if exc.errno is not None else _NO_ERRNO.get(str(exc))
        if number is None:
            raise  # a signal handler's (a TimeoutError)
        if number != errno.EMFILE:
            if number == exc.errno:
                raise
            raise OSError(number, str(exc), name) from exc
        import resource  # rarely needed: not in every worker's pages

        soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        raise OSError(
            errno.EMFILE,
            f"too many open files ({soft}, this process's limit): each shared memory "
            "object mapped in a process holds a descriptor. Release the objects no longer "
            "used, or raise the limit (`ulimit -n`, or resource.setrlimit(RLIMIT_NOFILE))",
            name,
        ) from exc


def random_name(prefix: str) -> str:
    """An unguessable object name under ``prefix`` (which starts with a slash)."""
    # What secrets.token_hex does, without secrets: see _master.KEPT_OUT_OF_MASTER.
    return f"{prefix}{os.urandom(8).hex()}"


def create_with_data(name: str, parts: Sequence[bytes | memoryview], size: int) -> None:
    """Create ``name`` exclusively with mode 0600, holding ``parts`` back to back."""
    with _os_errors(name, creating=True):
        shm = posix_ipc.SharedMemory(name, posix_ipc.O_CREX, mode=0o600, size=size)
    try:
        _write_parts(shm.fd, parts)
    except BaseException:
        posix_ipc.unlink_shared_memory(name)
        raise
    finally:
        shm.close_fd()


def write_existing(name: str, parts: Sequence[bytes | memoryview]) -> None:
    """Write ``parts`` back to back at the start of the existing object ``name``."""
    with _os_errors(name, creating=False):
        shm = posix_ipc.SharedMemory(name)
    try:
        _write_parts(shm.fd, parts)
    finally:
        shm.close_fd()


def _write_parts(fd: int, parts: Sequence[bytes | memoryview]) -> None:
    # pwritev() into the object's fd lets the kernel fill its pages directly
    # from the parts, with no user-space mapping or joined copy first.
    views = [memoryview(p).cast("B") for p in parts]
    offset = 0
    while views:
        written = os.pwritev(fd, views, offset)
        offset += written
        while views and written >= len(views[0]):
            written -= len(views.pop(0))
        if views and written:
            views[0] = views[0][written:]


def create_mapped(name: str, size: int) -> mmap.mmap:
    """Create ``name`` exclusively with mode 0600 and map it read-write."""
    with _os_errors(name, creating=True):
        shm = posix_ipc.SharedMemory(name, posix_ipc.O_CREX, mode=0o600, size=size)
    try:
        with _os_errors(name, creating=True):  # mmap keeps a copy of the descriptor
            return mmap.mmap(shm.fd, size, flags=mmap.MAP_SHARED)
    except BaseException:
        posix_ipc.unlink_shared_memory(name)
        raise
    finally:
        shm.close_fd()


def map_writable(name: str) -> mmap.mmap:
    """Map an existing object read-write, at its whole size."""
    return _map(name, None, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)[0]


def map_read_only(name: str) -> mmap.mmap:
    """Map an existing object read-only, at its whole size, through a
    descriptor opened read-only (O_RDONLY): nothing writes through this
    mapping, and it cannot be made writable (mprotect refuses: EACCES)."""
    return _map(name, None, mmap.MAP_SHARED, mmap.PROT_READ, read_only=True)[0]


def map_existing(name: str, length: int) -> tuple[mmap.mmap, int]:
    """Map the first ``length`` bytes of an existing object read-only, with
    their pages populated up front; and give the object's whole size."""
    return _map(name, length, mmap.MAP_SHARED | mmap.MAP_POPULATE, mmap.PROT_READ)


def _map(
    name: str, length: int | None, flags: int, prot: int, read_only: bool = False
) -> tuple[mmap.mmap, int]:
    with _os_errors(name, creating=False):
        shm = posix_ipc.SharedMemory(name, read_only=read_only)
    try:
        size = shm.size if length is None else length
        if not size:  # mmap's own error names neither the object nor the cause
            raise ValueError(
                f"shm object {name} is empty (0 bytes), so it cannot be mapped: give it a "
                "size first (os.ftruncate), or create it with create_shm(size)"
            )
        with _os_errors(name, creating=False):  # mmap keeps a copy of the descriptor
            return mmap.mmap(shm.fd, size, flags=flags, prot=prot), shm.size
    finally:
        shm.close_fd()


def unlink(name: str) -> bool:
    """Unlink ``name``; False if it was already gone."""
    try:
        with _os_errors(name, creating=False):
            posix_ipc.unlink_shared_memory(name)
    except FileNotFoundError:
        return False
    return True


def unlink_prefix(prefix: str) -> list[str]:
    """Unlink every object whose name starts with ``prefix``; return their names."""
    return [name for name in names_under(prefix) if unlink(name)]


def names_under(prefix: str) -> list[str]:
    """The names of the objects whose names start with ``prefix``."""
    bare = prefix.lstrip("/")
    try:
        entries = os.listdir(SHM_DIR)
    except FileNotFoundError:
        return []
    return [f"/{e}" for e in entries if e.startswith(bare)]


def exists(name: str) -> bool:
    """Whether the object ``name`` is there (one path lookup, no exception)."""
    return os.access(SHM_DIR + name, os.F_OK)


def create_semaphore(name: str, value: int) -> None:
    """Create the semaphore ``name`` exclusively with mode 0600."""
    with _os_errors(name, creating=True):
        posix_ipc.Semaphore(name, posix_ipc.O_CREX, mode=0o600, initial_value=value).close()


def unlink_semaphore(name: str) -> bool:
    """Unlink the semaphore ``name``; False if it was already gone."""
    try:
        with _os_errors(name, creating=False):
            posix_ipc.unlink_semaphore(name)
    except FileNotFoundError:
        return False
    return True


class Semaphore:
    """An open named POSIX semaphore."""

    def __init__(self, name: str) -> None:
        with _os_errors(name, creating=False):
            self._sem = posix_ipc.Semaphore(name)
        self._waitable: int | None = None  # glibc's handle, opened by the first wait

    def post(self) -> None:
        self._sem.release()

    def wait(self, timeout: float | None) -> bool:
        """Decrement, waiting up to ``timeout`` seconds (forever if None or inf).

        A signal handler that returns does not end the wait (PEP 475); one
        that raises ends it with its exception.
        """
        timeout = check_timeout(timeout)
        if self._waitable is None:
            with _os_errors(self._sem.name, creating=False):
                self._waitable = named_sem_open(self._sem.name)
        return sem_wait(self._waitable, timeout)

    @property
    def value(self) -> int:
        return int(self._sem.value)

    def close(self) -> None:
        if self._waitable is not None:
            named_sem_close(self._waitable)
            self._waitable = None
        self._sem.close()
