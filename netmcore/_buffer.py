"""A shared byte Buffer: a FIFO byte stream between processes, in shared memory.

Upstream's pipeline example streams bytes through a shared buffer guarded by
a mutex and two condition variables; so does this one, all inside one managed
shm object::

    mark | mutex | not_full | not_empty | head, tail, capacity, end, writer, reader | ring

The producer appends, waiting while the ring is full; ``close()`` marks the
end of the stream. The consumer ``peek``s at the bytes at the head without
copying them (a view of the ring), then ``consume``s them, which deletes them
from the head and wakes the producer. The mutex is robust: a process that dies
holding it does not hang the other (it sees the stream end instead).

A side that dies outside a call (or ends without ``close()``) holds nothing
the kernel could release, so a waiter waits in slices and, between two, asks
whether the other side still lives: the pid of the last writer, or of the
last reader, is recorded when it writes or reads, and an opener's fills a
side nobody has taken yet (so that the creator knows its other side before it
writes or reads anything). ``release()`` takes back a side this handle never
wrote or read on: a process that opened the buffer only to look at it, and let
it go, is no side; one that wrote (or read) and let go without ``close()`` is
still the side whose end the other learns of.
"""

from __future__ import annotations

import ctypes
import struct
from types import TracebackType
from typing import NoReturn

from . import _pthread
from ._errors import OwnerDiedError
from ._ids import ResId
from ._pthread import this_pid
from ._resource_api import ShmSegment, closed_error, create_shm, open_marked_shm
from ._resources import validate_size

_MARK = b"nmcbuf01"
_MUTEX, _NOT_FULL, _NOT_EMPTY = _pthread.SLOT, 2 * _pthread.SLOT, 3 * _pthread.SLOT
_STATE = 4 * _pthread.SLOT
_LAYOUT = struct.Struct("=QQQQ")  # head, tail (bytes ever read, written), capacity, ended
_PID = struct.Struct("=I")
_WRITER, _READER = _STATE + _LAYOUT.size, _STATE + _LAYOUT.size + _PID.size  # os pids
# Who could end a wait on each condition: the other side, whose pid is there.
_WAKER = {_NOT_EMPTY: _WRITER, _NOT_FULL: _READER}
_RING = _STATE + 64
_LOOK_AGAIN = 0.1  # seconds a waiter waits before it looks whether the other side lives


class Buffer:
    """A bounded FIFO byte stream in shared memory.

    ::

        buf = netmcore.Buffer.create(1 << 20)    # pass buf.res_id to the other side
        buf.write(b"...")                        # producer; waits while full
        buf.close()                              # end of stream
        ...
        view = buf.peek()                        # consumer: b"" at the end of stream
        use(view); buf.consume(len(view))
    """

    @classmethod
    def create(cls, capacity: int = 1 << 20) -> Buffer:
        """A buffer holding at most ``capacity`` bytes not yet consumed."""
        capacity = validate_size(capacity, "capacity")
        segment = create_shm(_RING + capacity)
        try:
            segment.buffer[: len(_MARK)] = _MARK
            _LAYOUT.pack_into(segment.buffer, _STATE, 0, 0, capacity, 0)
            buffer = cls(segment)
            _pthread.mutex_init(buffer._at(_MUTEX), _pthread.MUTEX_NORMAL)
            _pthread.cond_init(buffer._at(_NOT_FULL))
            _pthread.cond_init(buffer._at(_NOT_EMPTY))
        except BaseException:
            segment.release()
            raise
        return buffer

    @classmethod
    def open(cls, res_id: ResId) -> Buffer:
        """Open the buffer ``res_id``. ValueError if it is not a Buffer."""
        buffer = cls(open_marked_shm(res_id, _MARK, "Buffer"))
        for side in (_WRITER, _READER):
            if not _PID.unpack_from(buffer._buf, side)[0]:
                _PID.pack_into(buffer._buf, side, this_pid[0])
        return buffer

    def __init__(self, segment: ShmSegment) -> None:
        self._segment = segment
        self._buf = segment.buffer
        self._anchor: ctypes.Array[ctypes.c_char] | None = (
            ctypes.c_char * len(segment.buffer)
        ).from_buffer(segment.buffer)
        self._base = ctypes.addressof(self._anchor)
        self.capacity: int = _LAYOUT.unpack_from(self._buf, _STATE)[2]
        self._acted: set[int] = set()  # the sides this handle wrote or read on

    @property
    def res_id(self) -> ResId:
        return self._segment.res_id

    def __repr__(self) -> str:
        return f"Buffer({self.res_id!r}, capacity={self.capacity})"

    def _at(self, offset: int) -> int:
        return self._base + offset

    def _lock(self) -> None:
        if self._anchor is None:  # the C calls would touch unmapped memory
            raise closed_error(self)
        try:
            _pthread.mutex_lock(self._at(_MUTEX), None)
        except _pthread.OwnerDied:
            # The other side died inside a call: the stream cannot be trusted.
            self._set_end()
            _pthread.mutex_unlock(self._at(_MUTEX))
            raise OwnerDiedError(f"the other side of {self!r} died while using it") from None

    def _unlock(self) -> None:
        _pthread.mutex_unlock(self._at(_MUTEX))

    def _wait(self, cond: int) -> None:
        """Wait on ``cond`` for a while (holding the mutex); the caller looks
        at the state and waits again. OwnerDiedError if the side that could
        wake it has ended: the stream ends there."""
        try:
            if _pthread.cond_wait(self._at(cond), self._at(_MUTEX), _LOOK_AGAIN):
                return
        except _pthread.OwnerDied:
            self._end_after_death("died while using it")
        pid = _PID.unpack_from(self._buf, _WAKER[cond])[0]
        if pid and _pthread.ended(pid):
            self._end_after_death(f"(os pid {pid}) ended without closing it")

    def _end_after_death(self, what: str) -> NoReturn:
        self._set_end()  # the caller, holding the mutex, unlocks it
        raise OwnerDiedError(f"the other side of {self!r} {what}: the stream ends here") from None

    def _state(self) -> tuple[int, int, int, int]:
        head, tail, capacity, ended = _LAYOUT.unpack_from(self._buf, _STATE)
        return head, tail, capacity, ended

    def _set_end(self) -> None:
        head, tail, capacity, _ = self._state()
        _LAYOUT.pack_into(self._buf, _STATE, head, tail, capacity, 1)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Append ``data``, waiting while the buffer is full.

        Raises
        ------
        ValueError
            If the stream was closed.
        """
        view = memoryview(data).cast("B")
        while view:
            self._lock()
            try:
                _PID.pack_into(self._buf, _WRITER, this_pid[0])
                self._acted.add(_WRITER)
                head, tail, capacity, ended = self._state()
                while tail - head == capacity and not ended:
                    self._wait(_NOT_FULL)
                    head, tail, capacity, ended = self._state()
                if ended:
                    raise ValueError(f"{self!r} is closed: nothing more can be written")
                n = min(len(view), capacity - (tail - head))
                start = tail % capacity
                first = min(n, capacity - start)  # up to the end of the ring, then wrap
                self._buf[_RING + start : _RING + start + first] = view[:first]
                self._buf[_RING : _RING + n - first] = view[first:n]
                _LAYOUT.pack_into(self._buf, _STATE, head, tail + n, capacity, 0)
                _pthread.cond_signal(self._at(_NOT_EMPTY))
            finally:
                self._unlock()
            view = view[n:]

    def close(self) -> None:
        """Mark the end of the stream: the consumer then reads what is left, then b""."""
        self._lock()
        try:
            self._set_end()
            _pthread.cond_broadcast(self._at(_NOT_EMPTY))
            _pthread.cond_broadcast(self._at(_NOT_FULL))
        finally:
            self._unlock()

    def peek(self, limit: int | None = None) -> memoryview:
        """The bytes at the head (at most ``limit``), as a view of the ring: no
        copy. Waits while the buffer is empty; an empty view means the stream
        has ended. The view is valid until :meth:`consume`.

        Raises
        ------
        ValueError
            If ``limit`` is not a positive int (0 would read as the end).
        """
        if limit is not None and (type(limit) is not int or limit < 1):
            raise ValueError(
                f"limit={limit!r} is not valid: it must be an int of at least 1, or None for "
                "all the bytes that are there (an empty result means the end of the stream)"
            )
        self._lock()
        try:
            _PID.pack_into(self._buf, _READER, this_pid[0])
            self._acted.add(_READER)
            head, tail, capacity, ended = self._state()
            while head == tail and not ended:
                self._wait(_NOT_EMPTY)
                head, tail, capacity, ended = self._state()
            if head == tail:
                return memoryview(b"")  # the end of the stream (not a view of the ring)
            start = head % capacity
            n = min(tail - head, capacity - start)  # contiguous: up to the wrap
            if limit is not None:
                n = min(n, limit)
            return self._buf[_RING + start : _RING + start + n]
        finally:
            self._unlock()

    def consume(self, n: int) -> None:
        """Delete ``n`` bytes from the head (after :meth:`peek`), waking the producer."""
        self._lock()
        try:
            head, tail, capacity, ended = self._state()
            if not 0 <= n <= tail - head:
                raise ValueError(f"cannot consume {n} bytes: {tail - head} are there")
            _LAYOUT.pack_into(self._buf, _STATE, head + n, tail, capacity, ended)
            _pthread.cond_signal(self._at(_NOT_FULL))
        finally:
            self._unlock()

    def read(self, limit: int | None = None) -> bytes:
        """:meth:`peek`, copy and :meth:`consume`; b"" at the end of the stream."""
        view = self.peek(limit)
        data = bytes(view)
        view.release()
        self.consume(len(data))
        return data

    def release(self) -> None:
        """Unmap it and stop using it; it goes when its last user releases."""
        if self._anchor is not None:
            for side in (_WRITER, _READER):
                # A side it only opened is no longer one whose end cuts the stream.
                if side not in self._acted and _PID.unpack_from(self._buf, side)[0] == this_pid[0]:
                    _PID.pack_into(self._buf, side, 0)
        self._anchor = None
        self._segment.release()

    def __enter__(self) -> Buffer:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()
