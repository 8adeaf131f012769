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

Each call counts itself in progress (``_pthread.InUse``), so that a
``release()`` by another thread unmaps the buffer only once the last call
has left; it broadcasts both conditions to wake this process's waiters,
which then raise. The mutex, held by the other side for a copy at most, is
also waited for in slices, so that a signal handler's exception ends that
wait without it.
"""

from __future__ import annotations

import ctypes
import errno
import struct
import time
from types import TracebackType
from typing import NoReturn

from . import _context, _pthread
from ._errors import OwnerDiedError
from ._ids import ResId
from ._pthread import this_pid
from ._resource_api import ShmSegment, closed_error, create_shm, open_marked_shm
from ._resource_api import release as release_resource
from ._resources import validate_size
from ._shm_sync import closed_during

_MARK = b"nmcbuf01"
_MUTEX, _NOT_FULL, _NOT_EMPTY = _pthread.SLOT, 2 * _pthread.SLOT, 3 * _pthread.SLOT
_STATE = 4 * _pthread.SLOT
_LAYOUT = struct.Struct("=QQQQ")  # head, tail (bytes ever read, written), capacity, ended
_PID = struct.Struct("=I")
_WRITER, _READER = _STATE + _LAYOUT.size, _STATE + _LAYOUT.size + _PID.size  # os pids
# Who could end a wait on each condition: the other side, whose pid is there.
_WAKER = {_NOT_EMPTY: _WRITER, _NOT_FULL: _READER}
_RING = _STATE + 64
# What a wait is for, by the condition it waits on.
_WAITING_FOR = {_NOT_EMPTY: "an empty buffer", _NOT_FULL: "a full buffer"}


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
        try:
            segment = create_shm(_RING + capacity)
        except OSError as exc:
            if exc.errno != errno.ENOMEM:
                raise
            raise OSError(  # the mapping, which validate_size does not bound
                errno.ENOMEM,
                f"a Buffer of capacity {capacity:,} needs {_RING + capacity:,} bytes of shared "
                "memory, more than this process can map: create it with a smaller capacity",
            ) from exc
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
        self._use = _pthread.InUse(self._unmap)
        self._mutex = _pthread.MutexState(self._base + _MUTEX)

    @property
    def res_id(self) -> ResId:
        return self._segment.res_id

    def __repr__(self) -> str:
        return f"Buffer({self.res_id!r}, capacity={self.capacity})"

    def _at(self, offset: int) -> int:
        return self._base + offset

    def _lock(self) -> None:
        """Count this call in progress (ValueError once released) and take the mutex."""
        if not self._use.enter():  # the C calls would touch unmapped memory
            raise closed_error(self)
        try:
            self._take_mutex()
        except BaseException:
            self._use.leave()
            raise

    def _take_mutex(self) -> None:
        addr = self._at(_MUTEX)
        try:
            rc = _pthread.raw_mutex_trylock(addr)
            if rc == errno.EBUSY:
                # The other side holds it for a copy at most: no deadline.
                rc = _pthread.lock_in_slices(addr, None, self._stop_if_released)
        except BaseException:
            self._mutex.give_back(0)  # taken just before the exception came
            raise
        try:
            _pthread.locked(rc, addr)
        except _pthread.OwnerDied:
            # The other side died inside a call: the stream cannot be trusted.
            self._set_end()
            _pthread.mutex_unlock(addr)
            raise OwnerDiedError(f"the other side of {self!r} died while using it") from None

    def _stop_if_released(self) -> None:
        if self._use.closed:
            raise closed_during(self, "a call")

    def _unlock(self) -> None:
        try:
            _pthread.mutex_unlock(self._at(_MUTEX))
        finally:
            self._use.leave()

    def _wait(self, cond: int, deadline: float | None, call: str) -> bool:
        """Wait on ``cond`` for a slice (holding the mutex); the caller looks
        at the state and waits again. False, without waiting, once ``deadline``
        has passed. OwnerDiedError if the side that could wake it has ended:
        the stream ends there."""
        left = _pthread.SLICE
        if deadline is not None:
            left = min(left, deadline - time.monotonic())
            if left <= 0:
                return False
        if _context.in_master_loop():  # first: the message costs more than a wait
            _context.refuse_wait_in_master(f"{self!r}.{call} on {_WAITING_FOR[cond]}")
        try:
            woken = _pthread.cond_wait(self._at(cond), self._at(_MUTEX), left)
        except _pthread.OwnerDied:
            self._end_after_death("died while using it")
        if self._use.closed:  # release() by another thread woke it
            raise closed_during(self, call)
        if not woken:
            pid = _PID.unpack_from(self._buf, _WAKER[cond])[0]
            if pid and _pthread.ended(pid):
                self._end_after_death(f"(os pid {pid}) ended without closing it")
        return True

    def _end_after_death(self, what: str) -> NoReturn:
        self._set_end()  # the caller, holding the mutex, unlocks it
        raise OwnerDiedError(f"the other side of {self!r} {what}: the stream ends here") from None

    def _state(self) -> tuple[int, int, int, int]:
        head, tail, capacity, ended = _LAYOUT.unpack_from(self._buf, _STATE)
        return head, tail, capacity, ended

    def _set_end(self) -> None:
        head, tail, capacity, _ = self._state()
        _LAYOUT.pack_into(self._buf, _STATE, head, tail, capacity, 1)

    def write(self, data: bytes | bytearray | memoryview, timeout: float | None = None) -> None:
        """Append ``data``, waiting while the buffer is full, for up to
        ``timeout`` seconds in all (None: without limit).

        Raises
        ------
        ValueError
            If the stream was closed, or the buffer released (also by another
            thread during the wait).
        TimeoutError
            If the buffer stayed full until the timeout; it says how many
            bytes were written.
        ContextError
            If it would wait in the master, unless ``timeout`` is 0.
        """
        timeout = _pthread.check_timeout(timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        view = memoryview(data).cast("B")
        total = len(view)
        while view:
            self._lock()
            try:
                _PID.pack_into(self._buf, _WRITER, this_pid[0])
                self._acted.add(_WRITER)
                head, tail, capacity, ended = self._state()
                while tail - head == capacity and not ended:
                    if not self._wait(_NOT_FULL, deadline, "write()"):
                        raise TimeoutError(
                            f"{self!r} stayed full for {timeout} s: {total - len(view)} of "
                            f"{total} bytes were written"
                        )
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

    def peek(self, limit: int | None = None, timeout: float | None = None) -> memoryview:
        """The bytes at the head (at most ``limit``), as a view of the ring: no
        copy. Waits while the buffer is empty, for up to ``timeout`` seconds
        (None: without limit); an empty view means the stream has ended. The
        view is valid until :meth:`consume`.

        Raises
        ------
        ValueError
            If ``limit`` is not a positive int (0 would read as the end), or
            the buffer is released (also by another thread during the wait).
        TimeoutError
            If no byte came within ``timeout`` seconds.
        ContextError
            If it would wait in the master, unless ``timeout`` is 0.
        """
        return self._peek(limit, timeout, "peek()")

    def _peek(self, limit: int | None, timeout: float | None, call: str) -> memoryview:
        if limit is not None and (type(limit) is not int or limit < 1):
            raise ValueError(
                f"limit={limit!r} is not valid: it must be an int of at least 1, or None for "
                "all the bytes that are there (an empty result means the end of the stream)"
            )
        timeout = _pthread.check_timeout(timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        self._lock()
        try:
            _PID.pack_into(self._buf, _READER, this_pid[0])
            self._acted.add(_READER)
            head, tail, capacity, ended = self._state()
            while head == tail and not ended:
                if not self._wait(_NOT_EMPTY, deadline, call):
                    raise TimeoutError(f"no bytes came into {self!r} within {timeout} s")
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

    def read(self, limit: int | None = None, timeout: float | None = None) -> bytes:
        """:meth:`peek` (with its ``timeout``), copy and :meth:`consume`; b"" at the
        end of the stream."""
        view = self._peek(limit, timeout, "read()")
        data = bytes(view)
        view.release()
        self.consume(len(data))
        return data

    def release(self) -> None:
        """Unmap it and stop using it; it goes when its last user releases.

        A call that another thread is making on it ends with ValueError (a
        waiting one at once), and the memory is unmapped when the last of
        them has left.
        """
        self._use.close(self._let_go)
        release_resource(self.res_id)  # a mapping that calls still use stays until they leave

    def _let_go(self, others: int) -> None:
        for side in (_WRITER, _READER):
            # A side it only opened is no longer one whose end cuts the stream.
            if side not in self._acted and _PID.unpack_from(self._buf, side)[0] == this_pid[0]:
                _PID.pack_into(self._buf, side, 0)
        if others:
            # This process's waits end (another process's wait again).
            _pthread.cond_broadcast(self._at(_NOT_EMPTY))
            _pthread.cond_broadcast(self._at(_NOT_FULL))

    def _unmap(self) -> None:
        self._anchor = None
        self._segment.close()

    def __enter__(self) -> Buffer:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()
