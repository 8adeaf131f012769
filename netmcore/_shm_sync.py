"""Cross-process mutexes and condition variables in shared memory.

Each lives in a managed shm object (``create_shm``), so it is shared by
resource id and cleaned up like any other resource. The mutexes are robust:
if a holder dies, the next ``lock`` raises :class:`OwnerDiedError` while
holding the (repaired) mutex, and never deadlocks silently. The segment
starts with a mark of its kind, so that opening another kind of object by
mistake is refused rather than misread.
"""

from __future__ import annotations

import ctypes
import errno
from types import TracebackType
from typing import Literal

from . import _pthread
from ._errors import OwnerDiedError
from ._ids import ResId
from ._resource_api import ShmSegment, closed_error, create_shm, open_marked_shm

MutexKind = Literal["normal", "errorcheck", "recursive"]
_KINDS: dict[MutexKind, int] = {
    "normal": _pthread.MUTEX_NORMAL,
    "errorcheck": _pthread.MUTEX_ERRORCHECK,
    "recursive": _pthread.MUTEX_RECURSIVE,
}
_KIND_AT = 8  # a mutex's kind, after its mark


class _InShm:
    """An object in a mapped shm segment: a header with its mark, then the
    pthread object, at an address kept for the C calls (none after close)."""

    _MARK: bytes  # the first bytes of the segment: which kind of object it holds

    def __init__(self, segment: ShmSegment) -> None:
        self._segment = segment
        self._anchor: ctypes.Array[ctypes.c_char] | None = (
            ctypes.c_char * _pthread.SLOT
        ).from_buffer(segment.buffer, _pthread.SLOT)
        self._addr = ctypes.addressof(self._anchor)

    @classmethod
    def _create_segment(cls) -> ShmSegment:
        segment = create_shm(2 * _pthread.SLOT)
        segment.buffer[: len(cls._MARK)] = cls._MARK
        return segment

    @classmethod
    def _open_segment(cls, res_id: ResId) -> ShmSegment:
        return open_marked_shm(res_id, cls._MARK, cls.__name__)

    def _open_addr(self) -> int:
        """The object's address; ValueError once it is unmapped in this process
        (the C call would touch memory that is gone, and crash)."""
        if self._anchor is None:
            raise closed_error(self)
        return self._addr

    @property
    def res_id(self) -> ResId:
        """Give this to other processes, which open it with ``.open(res_id)``."""
        return self._segment.res_id

    def close(self) -> None:
        """Unmap it in this process (idempotent)."""
        self._anchor = None
        self._segment.close()

    def release(self) -> None:
        """Unmap it and stop using it; it is destroyed when its last user releases."""
        self.close()
        self._segment.release()


class ShmMutex(_InShm):
    """A robust, process-shared mutex: ``normal``, ``errorcheck`` or ``recursive``.

    ::

        m = netmcore.ShmMutex.create("errorcheck")   # pass m.res_id to others
        with m:
            ...
    """

    kind: MutexKind
    _MARK = b"nmcmtx01"

    @classmethod
    def create(cls, kind: MutexKind = "normal") -> ShmMutex:
        if kind not in _KINDS:
            raise ValueError(
                f"kind {kind!r} is not valid: use 'normal', 'errorcheck' or 'recursive'"
            )
        segment = cls._create_segment()
        try:
            segment.buffer[_KIND_AT] = _KINDS[kind]
            mutex = cls(segment)
            _pthread.mutex_init(mutex._addr, _KINDS[kind])
        except BaseException:
            segment.release()
            raise
        return mutex

    @classmethod
    def open(cls, res_id: ResId) -> ShmMutex:
        """Open the mutex ``res_id``. ValueError if it is not a ShmMutex."""
        return cls(cls._open_segment(res_id))

    def __init__(self, segment: ShmSegment) -> None:
        super().__init__(segment)
        code = segment.buffer[_KIND_AT]
        self.kind = next(k for k, v in _KINDS.items() if v == code)

    def lock(self, timeout: float | None = None) -> bool:
        """Lock it, waiting up to ``timeout`` seconds (forever if None).

        Returns False on timeout. Raises :class:`OwnerDiedError` (holding the
        lock) if the previous holder died, and OSError(EDEADLK) when an
        error-checking mutex is locked twice by its holder.
        """
        addr = self._open_addr()
        try:
            return _pthread.mutex_lock(addr, _pthread.check_timeout(timeout))
        except _pthread.OwnerDied:
            raise OwnerDiedError(
                f"the holder of {self!r} died while holding it; you hold it now (it is "
                "consistent again): repair the shared state, then unlock"
            ) from None

    def unlock(self) -> None:
        """Unlock it. PermissionError if this thread does not hold it."""
        addr = self._open_addr()
        try:
            _pthread.mutex_unlock(addr)
        except OSError as exc:
            if exc.errno != errno.EPERM:
                raise
            raise PermissionError(errno.EPERM, f"{self!r} is not held by this thread") from None

    def __repr__(self) -> str:
        return f"ShmMutex({self.res_id!r}, {self.kind})"

    def __enter__(self) -> ShmMutex:
        try:
            self.lock()
        except OwnerDiedError:
            self.unlock()  # the with-body will not run: leave nothing locked
            raise
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.unlock()


class ShmCondition(_InShm):
    """A process-shared condition variable, used with a :class:`ShmMutex`.

    ::

        with mutex:
            while not ready():
                cond.wait(mutex)
        ...
        with mutex:
            make_ready(); cond.broadcast()
    """

    _MARK = b"nmccnd01"

    @classmethod
    def create(cls) -> ShmCondition:
        segment = cls._create_segment()
        try:
            cond = cls(segment)
            _pthread.cond_init(cond._addr)
        except BaseException:
            segment.release()
            raise
        return cond

    @classmethod
    def open(cls, res_id: ResId) -> ShmCondition:
        """Open the condition ``res_id``. ValueError if it is not a ShmCondition."""
        return cls(cls._open_segment(res_id))

    def wait(self, mutex: ShmMutex, timeout: float | None = None) -> bool:
        """Release ``mutex`` (held by the caller), wait for a signal, and take it
        back; False if ``timeout`` seconds passed first."""
        addr, mutex_addr = self._open_addr(), mutex._open_addr()
        try:
            return _pthread.cond_wait(addr, mutex_addr, _pthread.check_timeout(timeout))
        except _pthread.OwnerDied:
            raise OwnerDiedError(
                f"the holder of {mutex!r} died while holding it; you hold it now"
            ) from None

    def signal(self) -> None:
        """Wake one waiter."""
        _pthread.cond_signal(self._open_addr())

    def broadcast(self) -> None:
        """Wake every waiter."""
        _pthread.cond_broadcast(self._open_addr())

    def __repr__(self) -> str:
        return f"ShmCondition({self.res_id!r})"
