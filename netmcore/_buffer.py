"""A shared byte Buffer: a FIFO byte stream between processes, in shared memory.

Upstream's pipeline example streams bytes through a shared buffer guarded by
a mutex and two condition variables; so does this one, all inside one managed
shm object::

    mark | mutex | not_full | not_empty | table mutex | head, tail, capacity, end,
    writer, reader, holders, overflow, filled writer, filled reader | ring

The producer appends, waiting while the ring is full; ``close()`` marks the
end of the stream. The consumer ``peek``s at the bytes at the head without
copying them (a view of the ring), then ``consume``s them, which deletes them
from the head and wakes the producer. The mutex is robust: a process that dies
holding it does not hang the other (it sees the stream end instead).

A side that dies outside a call (or ends without ``close()``) holds nothing
the kernel could release, so a waiter waits in slices and, between two, asks
whether the other side still lives: the pid of the last writer, or of the last
reader, is recorded when it writes or reads, and an opener's fills a side
nobody has taken yet (so that the creator knows its other side before it
writes or reads anything). Each has a word of its own, and the waiter reads
the recorded pid first: an open (or the release that takes its fill back)
looks at its word then stores, under the table's lock, which a write (read)
does not take; in one word, a first write between the two was overwritten (or
erased), and the other side never learned of that writer's end. The creator
and the openers that have not yet written or read are also kept as its holders
(a few: see ``_HOLDERS``): a waiter whose other side is not known (no pid, or
its own, filled in when it opened) takes it to be any holder but itself, and
learns of its end once every one of them has ended. So a creator that dies
before its first write (or read) is the other side of the process it handed
the buffer to. The release of the process's last handle on it takes back a
side the process never wrote or read on, and its place among the holders: a
process that opened (or created) the buffer only to look at it, or to pass it
on, and let it go, is no side; one that wrote (or read) and let go without
``close()`` is still the side whose end the other learns of. Sides and places
are the process's, not a handle's (see ``_Here``): the release of a second
handle, a helper's that only looked, leaves those of the process's other
handles.

Each call counts itself in progress (``_pthread.InUse``), so that a
``release()`` by another thread unmaps the buffer only once the last call
has left; it broadcasts both conditions to wake this process's waiters,
which then raise. The mutex, held by the other side for a copy at most, is
also waited for in slices, so that a signal handler's exception ends that
wait without it, and until the call's deadline: a side stopped (SIGSTOP, a
debugger) while it holds it would otherwise hold up the other for ever. A
signal handler's exception anywhere in a call leaves the mutex free: each
call gives back, on its way out, what this thread still holds. If it had
taken the mutex from a side that died in a call (the exception came as the
lock returned EOWNERDEAD, and took its place), the stream ends there, as
when EOWNERDEAD is seen, and the next call to come to the end of the stream
raises the OwnerDiedError that was lost (``_DIED``).
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct
import threading
import time
import weakref
from types import TracebackType
from typing import Literal, NoReturn, overload

from . import _context, _pthread
from ._encap import CONTIGUOUS_FIX
from ._errors import ContextError, OwnerDiedError
from ._ids import ResId
from ._pthread import this_pid
from ._resource_api import (
    MARKS,
    ShmSegment,
    closed_during,
    closed_error,
    create_marked,
    open_marked,
)
from ._resources import largest_shm, size_problem, space_fix, validate_size

_MARK = b"nmcbuf03"
MARKS[_MARK] = "a Buffer (Buffer.open(res_id) opens it)"
_MUTEX, _NOT_FULL, _NOT_EMPTY = _pthread.SLOT, 2 * _pthread.SLOT, 3 * _pthread.SLOT
# Guards the holders table against two opens at once, which would both take
# the same free place. Not the buffer's mutex: an opener that died holding it
# would read, to the sides, as a side that died in a call, and end the stream.
_TABLE = 4 * _pthread.SLOT
_STATE = 5 * _pthread.SLOT
_LAYOUT = struct.Struct("=QQQQ")  # head, tail (bytes ever read, written), capacity, ended
# Ended: 0 not yet; _CLOSED by close(), or by a side's death that a call has
# told of (OwnerDiedError); _DIED by a side's death inside a call that no call
# has told of yet: the next call to come to the end tells it (see _tell_death).
_CLOSED, _DIED = 1, 2
_ENDED = struct.Struct("=Q")
_ENDED_AT = _STATE + 24
_PID = struct.Struct("=I")
# The pids of the last writer and reader, recorded by write() and read()
# under the mutex (never cleared: a side that let go is still the side).
_WRITER, _READER = _STATE + _LAYOUT.size, _STATE + _LAYOUT.size + _PID.size  # os pids
# Who could end a wait on each condition: the other side, whose pid is there.
_WAKER = {_NOT_EMPTY: _WRITER, _NOT_FULL: _READER}
# The processes that created or opened it and have not written, read or
# released it yet: the candidates for a side nobody has taken. A holder that
# finds no free place (none whose process has ended) sets the overflow word:
# from then on a side nobody has taken is never taken to have ended.
_HOLDERS = _READER + _PID.size
_N_HOLDERS = 5
_OVERFLOW = _HOLDERS + _N_HOLDERS * _PID.size
# An opener's pid on each side nobody has taken: filled by _join, taken back
# by _let_go_marks, for the waiter when no pid was recorded there (_waker).
_FILLED = {_WRITER: _OVERFLOW + _PID.size, _READER: _OVERFLOW + 2 * _PID.size}
_RING = _STATE + 128  # the ring starts on a 64-byte boundary still
assert _FILLED[_READER] + _PID.size <= _RING
# What a wait is for, by the condition it waits on.
_WAITING_FOR = {_NOT_EMPTY: "an empty buffer", _NOT_FULL: "a full buffer"}
_ONE = _pthread.ONE
_trylock = _pthread.raw_mutex_trylock  # 0, EBUSY, EOWNERDEAD
_unlock = _pthread.raw_mutex_unlock
# The holder's thread id in a robust mutex's futex word (the kernel's ABI).
_TID_MASK = _pthread.FUTEX_TID_MASK
# Module globals, not attribute look-ups on _pthread, on the hot paths.
_cond_signal = _pthread.cond_signal
_consistent = _pthread.raw_mutex_consistent  # EINVAL when it is consistent


class _Here:
    """This process's handles on one buffer, and the sides (``_WRITER``,
    ``_READER``) any of them wrote or read on.

    The marks in the buffer (a side's pid, a place among the holders) are
    the process's: a handle's release must not take back those that another
    handle of the process still stands for (the reader would take a writer
    that writes on for one that only opened it, and its end for the end of
    the holders), and the last handle's release must keep the side that
    any of them took. Per process: a forked child starts with none (the
    handles it inherits mark nothing of its own; see :meth:`Buffer._let_go`).
    """

    __slots__ = ("acted", "handles")

    def __init__(self) -> None:
        self.handles: weakref.WeakSet[Buffer] = weakref.WeakSet()  # dropped ones go
        self.acted: set[int] = set()


_here: dict[int, _Here] = {}  # by resource id
# Around the changes to _here, and the look at a record's other handles on a
# release (another thread may open one meanwhile). Reentrant: a signal
# handler may open or release a handle.
_here_lock = threading.RLock()
# A forked child has none of its parent's handles, and a free lock (another
# thread may have held it at the fork). C calls, as threading's own hooks:
# every object a new process touches (a function of ours, its globals) has
# its page copied, at each fork of the program. Freed in place, as logging
# frees its handlers' locks: a child forked by a signal handler while the
# forking thread held it, which went on into the rest of that block, would
# find it not held there (netmcore's own children never go back).
os.register_at_fork(after_in_child=_here.clear)
os.register_at_fork(after_in_child=_here_lock._at_fork_reinit)  # type: ignore[attr-defined]


def _bytes_of(data: object) -> memoryview:
    """``data`` for :meth:`Buffer.write`, as a flat view of its bytes; a clear
    TypeError, before anything is written, for what has no such view."""
    try:
        view = memoryview(data)  # type: ignore[arg-type]
    except TypeError:
        fix = "encode it first (text.encode())" if isinstance(data, str) else "pass its bytes"
        raise TypeError(
            f"Buffer.write takes bytes-like data (bytes, bytearray, memoryview, a numpy "
            f"array), not {type(data).__name__}: {fix}"
        ) from None
    if not view.c_contiguous:  # its bytes are not one run in memory, as a write copies them
        raise TypeError(
            f"Buffer.write takes C-contiguous data, and this {type(data).__name__} of shape "
            f"{view.shape} and strides {view.strides} is not (a slice with a step, or a "
            f"transposed array): {CONTIGUOUS_FIX}"
        )
    return view.cast("B")


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
        size = _RING + capacity
        problem = size_problem(size)  # create_shm's own message would name a size not passed
        if problem is not None:
            raise ValueError(
                f"capacity {capacity:,} bytes is too large: a Buffer of capacity {capacity:,} "
                f"needs {size:,} bytes of shared memory ({_RING} for its header), and {problem}. "
                f"Use a capacity of at most {largest_shm() - _RING:,}{space_fix(size)}"
            )

        def build(segment: ShmSegment) -> Buffer:
            _LAYOUT.pack_into(segment.buffer, _STATE, 0, 0, capacity, 0)
            _PID.pack_into(segment.buffer, _HOLDERS, this_pid[0])  # a side, until released
            buffer = cls(segment)
            try:
                _pthread.mutex_init(buffer._at(_MUTEX), _pthread.MUTEX_NORMAL)
                _pthread.mutex_init(buffer._at(_TABLE), _pthread.MUTEX_NORMAL)
                _pthread.cond_init(buffer._at(_NOT_FULL))
                _pthread.cond_init(buffer._at(_NOT_EMPTY))
            except BaseException:
                buffer.release()  # this process's handle, counted in _here, goes with it
                raise
            return buffer

        # The mapping's ENOMEM, which validate_size does not bound.
        enomem = (
            f"a Buffer of capacity {capacity:,} needs {_RING + capacity:,} bytes of shared "
            "memory, more than this process can map: create it with a smaller capacity"
        )
        return create_marked(_RING + capacity, _MARK, build, enomem)

    @classmethod
    def open(cls, res_id: ResId) -> Buffer:
        """Open the buffer ``res_id``. ValueError if it is not a Buffer."""
        buffer = open_marked(res_id, _MARK, "Buffer", cls)  # a failed build gives back its use
        try:
            buffer._join()
        except BaseException:
            buffer.release()
            raise
        return buffer

    def _join(self) -> None:
        """Fill the sides nobody has taken, and count this process among the
        holders, under the table's lock: two processes that open it at once
        would otherwise both take the same free place, and a waiter that takes
        its other side to be any holder could think the one left out ended.
        Waited for without limit: it is held for these few writes only."""
        addr, tid = self._at(_TABLE), threading.get_native_id()
        word = _pthread.MutexState(addr).word
        try:
            rc = _trylock(addr)
            if rc == errno.EBUSY:
                rc = _pthread.lock_in_slices(addr, None, lambda: None)
            if rc == errno.EOWNERDEAD:  # an opener died here: each place is written whole
                _consistent(addr)
            elif rc:
                raise OSError(rc, f"locking the table lock of {self!r}: {os.strerror(rc)}")
            # In the fills' own words: a first write (read) between the look
            # and the store records its pid in the side's, which wins (_waker).
            for filled in _FILLED.values():
                if not _PID.unpack_from(self._buf, filled)[0]:
                    _PID.pack_into(self._buf, filled, this_pid[0])
            self._hold()
            _unlock(addr)
        finally:
            if word.value & _TID_MASK == tid:  # an exception came
                try:  # repaired first if taken from a dead holder: else broken for good
                    _consistent(addr)
                finally:  # and unlocked, even if an exception comes between the two
                    _unlock(addr)

    def _holders(self) -> list[int]:
        buf = self._buf
        return [_PID.unpack_from(buf, _HOLDERS + i * _PID.size)[0] for i in range(_N_HOLDERS)]

    def _hold(self) -> None:
        """Count this process among the holders (once)."""
        pid = this_pid[0]
        holders = self._holders()
        if pid in holders:
            return
        free = [i for i, holder in enumerate(holders) if not holder]
        if not free:  # a holder that ended is a candidate still: given up only for room
            free = [i for i, holder in enumerate(holders) if _pthread.ended(holder)]
        if free:
            _PID.pack_into(self._buf, _HOLDERS + free[0] * _PID.size, pid)
            return
        _PID.pack_into(self._buf, _OVERFLOW, 1)  # not counted: sides nobody took never end

    def _took(self, side: int) -> None:
        """This handle writes (reads) for the first time: the process has
        taken that side (whichever of its handles it was), and is known by it
        from now on, no longer as a holder."""
        self._acted.add(side)
        here = _here.get(self.res_id.n)
        if here is not None:
            here.acted.add(side)
        self._unhold()

    def _took_here(self, side: int) -> bool:
        """Whether this process wrote (read) on the buffer, by any handle."""
        if side in self._acted:
            return True
        here = _here.get(self.res_id.n)
        return here is not None and side in here.acted

    def _unhold(self) -> None:
        """This process is no longer a holder: it has taken a side, or let go."""
        pid = this_pid[0]
        for i, holder in enumerate(self._holders()):
            if holder == pid:
                _PID.pack_into(self._buf, _HOLDERS + i * _PID.size, 0)

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
        self._pid = this_pid[0]  # the process whose handle it is (see _let_go)
        with _here_lock:
            _here.setdefault(segment.res_id.n, _Here()).handles.add(self)

    @property
    def res_id(self) -> ResId:
        return self._segment.res_id

    def __repr__(self) -> str:
        return f"Buffer({self.res_id!r}, capacity={self.capacity})"

    def _at(self, offset: int) -> int:
        return self._base + offset

    # Every call takes the mutex the same way, written out in each (a helper
    # function would be a point where a signal handler's exception can come:
    # at its start, or just after a C call returns)::
    #
    #     use.calls += _ONE         # counted: neither a call nor undone by one
    #     mapped = False
    #     try:
    #         if use.closed: raise closed_error(self)
    #         mapped = True           # the mapping stays while this call counts
    #         rc = _trylock(addr)
    #         if rc: self._contended(rc, ...)  # waits, or raises
    #         ...
    #         _unlock(addr)
    #     finally:
    #         try:
    #             if mapped and word.value & _TID_MASK == tid:  # an exception came
    #                 try:
    #                     if not _consistent(addr):  # taken from a dead holder: see below
    #                         _ENDED.pack_into(buf, _ENDED_AT, _DIED)
    #                 finally: _unlock(addr)
    #         finally:
    #             del use.calls[-1]
    #             if use.closed: use.left()
    #
    # The mutex word says whether this thread holds it, wherever the exception
    # came: before the lock call, just after it returned, in a wait, or just
    # after the unlock (then it is free, and nothing is given back). It is given
    # back by C calls only, not by MutexState.give_back: the start of a Python
    # function is one more point where a signal handler's exception can come.
    #
    # pthread_mutex_consistent succeeds only on a mutex taken from a holder that
    # died (EINVAL otherwise): then the exception came as the lock call returned
    # EOWNERDEAD, and took its place. The other side died in a call, as in
    # _contended: the stream ends there, and the next call to come to its end
    # tells it (_DIED, then _tell_death), as the lost OwnerDiedError would have.

    def _contended(
        self,
        rc: int,
        deadline: float | None,
        timeout: float | None,
        call: str,
        written: tuple[int, int] | None = None,
    ) -> None:
        """The mutex was not free (``rc`` from the trylock): wait for it until
        ``deadline``, and return holding it, or raise."""
        addr = self._base + _MUTEX
        if rc == errno.EBUSY:
            if deadline is None or deadline > time.monotonic():
                # Waited for in the master too: the other side holds it for a
                # copy, and needs nothing from the master to let it go.
                rc = _pthread.lock_in_slices(addr, deadline, self._stop_if_released)
            if rc in (errno.EBUSY, errno.ETIMEDOUT):
                # Held for a copy at most by a live side: one that was stopped
                # (SIGSTOP, a debugger) or wedged inside a call.
                message = (
                    f"{self!r}.{call} timed out after {timeout} s waiting for the buffer's "
                    "lock, which its other side held all that time (stopped or wedged in a call)"
                )
                if written:
                    message += f": {written[0]} of {written[1]} bytes were written"
                raise TimeoutError(message)
        if rc == errno.EOWNERDEAD:
            # The other side died inside a call: the stream cannot be trusted.
            # Ended first: an exception from here on, a signal handler's, leaves
            # the death to be told by the next call (the caller's finally unlocks).
            _ENDED.pack_into(self._buf, _ENDED_AT, _DIED)
            _pthread.mutex_consistent(addr)
            self._set_end()
            raise OwnerDiedError(f"the other side of {self!r} died while using it") from None
        if rc:
            raise OSError(rc, f"locking the lock of {self!r}: {os.strerror(rc)}")

    @staticmethod
    def _refuse(what: str, written: tuple[int, int] | None) -> NoReturn:
        """ContextError for ``what``, which would wait for room (for data) in the
        master; a write's says how many bytes went in (the part before the
        wait stays written)."""
        try:
            _context.refuse_wait_in_master(what)
        except ContextError as exc:
            if not written:
                raise
            raise ContextError(f"{exc}. {written[0]} of {written[1]} bytes were written") from None

    def _stop_if_released(self) -> None:
        if self._use.closed:
            raise closed_during(self, "a call")

    def _wait(
        self,
        cond: int,
        deadline: float | None,
        call: str,
        written: tuple[int, int] | None = None,
    ) -> bool:
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
            self._refuse(f"{self!r}.{call} on {_WAITING_FOR[cond]}", written)
        try:
            woken = _pthread.cond_wait(self._at(cond), self._at(_MUTEX), left)
        except _pthread.OwnerDied:  # held, not yet consistent: ended first, as in _contended
            _ENDED.pack_into(self._buf, _ENDED_AT, _DIED)
            _pthread.mutex_consistent(self._at(_MUTEX))
            self._end_after_death("died while using it")
        else:  # (for 3.12: see test_backedges)
            pass
        if self._use.closed:  # release() by another thread woke it
            raise closed_during(self, call)
        if not woken:
            pid = self._waker(cond)
            if pid and pid != this_pid[0]:
                if _pthread.ended(pid):
                    self._end_after_death(f"(os pid {pid}) ended without closing it")
            elif (
                not self._took_here(_WAKER[cond]) and not _PID.unpack_from(self._buf, _OVERFLOW)[0]
            ):
                # Nobody has taken the other side (this process's pid there is only
                # its open's, not another thread's writes or reads on this handle,
                # or on another of its handles): it is one of the holders.
                others = [h for h in self._holders() if h and h != this_pid[0]]
                if others and all(_pthread.ended(h) for h in others):
                    pids = ("os pids " if len(others) > 1 else "os pid ") + ", ".join(
                        map(str, others)
                    )
                    self._end_after_death(f"({pids}) ended without closing it")
        return True

    def _waker(self, cond: int) -> int:
        """The pid of the side that could end a wait on ``cond``: the last to
        write (read) on it, or, before any did, an opener's fill; 0 if none."""
        side = _WAKER[cond]
        pid: int = (
            _PID.unpack_from(self._buf, side)[0] or _PID.unpack_from(self._buf, _FILLED[side])[0]
        )
        return pid

    def _end_after_death(self, what: str) -> NoReturn:
        self._set_end()  # the caller, holding the mutex, unlocks it
        raise OwnerDiedError(f"the other side of {self!r} {what}: the stream ends here") from None

    def _tell_death(self) -> NoReturn:
        """At the end of a stream that a side's death inside a call ended, and
        that no call has told of yet (its EOWNERDEAD was lost to a signal
        handler's exception): tell it now, once (holding the mutex)."""
        self._end_after_death(
            "died while using it (seen by a call that an exception ended, and told now)"
        )

    def _state(self) -> tuple[int, int, int, int]:
        head, tail, capacity, ended = _LAYOUT.unpack_from(self._buf, _STATE)
        return head, tail, capacity, ended

    def _set_end(self) -> None:
        """End the stream: a close, or a death told now (by OwnerDiedError)."""
        _ENDED.pack_into(self._buf, _ENDED_AT, _CLOSED)

    def write(self, data: bytes | bytearray | memoryview, timeout: float | None = None) -> None:
        """Append ``data``, waiting while the buffer is full, for up to
        ``timeout`` seconds in all (None: without limit).

        Raises
        ------
        ValueError
            If the stream was closed, or the buffer released (also by another
            thread during the wait), even for empty ``data`` (which never
            waits for room).
        TimeoutError
            If the buffer stayed full (or its other side held its lock) until
            the timeout; it says how many bytes were written.
        ContextError
            If it would wait for room in the master, unless ``timeout`` is 0;
            it says how many bytes were written. (The wait for the buffer's
            lock is not refused there: it is waited for, as anywhere.)
        OwnerDiedError
            If it waits for room and the reader has ended (or the other side
            died during a call on the buffer): the stream ends there. It
            says how many bytes were written, if some were.
        """
        timeout = _pthread.check_timeout(timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        view = _bytes_of(data)
        total = len(view)
        use, buf, mutex = self._use, self._buf, self._mutex
        addr, word, tid = mutex.addr, mutex.word, threading.get_native_id()
        while True:  # once at least: write(b"") on a closed stream raises too
            use.calls += _ONE  # see "Every call takes the mutex" above
            mapped = False
            try:
                if use.closed:
                    raise closed_error(self)
                mapped = True
                rc = _trylock(addr)
                if rc:
                    self._contended(rc, deadline, timeout, "write()", (total - len(view), total))
                _PID.pack_into(buf, _WRITER, this_pid[0])
                if _WRITER not in self._acted:
                    self._took(_WRITER)
                head, tail, capacity, ended = _LAYOUT.unpack_from(buf, _STATE)
                while tail - head == capacity and not ended and view:  # b"" needs no room
                    if not self._wait(_NOT_FULL, deadline, "write()", (total - len(view), total)):
                        raise TimeoutError(
                            f"{self!r} stayed full for {timeout} s: {total - len(view)} of "
                            f"{total} bytes were written"
                        )
                    head, tail, capacity, ended = _LAYOUT.unpack_from(buf, _STATE)
                if ended:
                    if ended == _DIED:
                        self._tell_death()
                    written = f" ({total - len(view)} of {total} bytes were written)"
                    raise ValueError(
                        f"{self!r} is closed: nothing more can be written{written if total else ''}"
                    )
                n = min(len(view), capacity - (tail - head))
                start = tail % capacity
                first = min(n, capacity - start)  # up to the end of the ring, then wrap
                buf[_RING + start : _RING + start + first] = view[:first]
                if n > first:
                    buf[_RING : _RING + n - first] = view[first:n]
                _LAYOUT.pack_into(buf, _STATE, head, tail + n, capacity, 0)
                _cond_signal(self._base + _NOT_EMPTY)
                _unlock(addr)
            except OwnerDiedError as exc:
                if len(view) == total:
                    raise
                # What went in stays written: said, as a timeout says it.
                raise OwnerDiedError(
                    f"{exc}: {total - len(view)} of {total} bytes were written"
                ) from None
            finally:
                try:
                    if mapped and word.value & _TID_MASK == tid:  # an exception came
                        try:  # repaired first if taken from a dead holder: else broken for good
                            if not _consistent(addr):  # it was: the exception lost EOWNERDEAD
                                _ENDED.pack_into(buf, _ENDED_AT, _DIED)  # told by the next call
                        finally:  # and unlocked, even if an exception comes between the two
                            _unlock(addr)
                finally:
                    del use.calls[-1]
                    if use.closed:
                        use.left()
            view = view[n:]
            if not view:
                return

    def close(self) -> None:
        """Mark the end of the stream: the consumer then reads what is left, then b""."""
        use, buf, mutex = self._use, self._buf, self._mutex
        addr, word, tid = mutex.addr, mutex.word, threading.get_native_id()
        use.calls += _ONE  # see "Every call takes the mutex" above
        mapped = False
        try:
            if use.closed:
                raise closed_error(self)
            mapped = True
            rc = _trylock(addr)
            if rc:
                self._contended(rc, None, None, "close()")
            if _ENDED.unpack_from(buf, _ENDED_AT)[0] != _DIED:  # a death is still to be told
                _ENDED.pack_into(buf, _ENDED_AT, _CLOSED)
            _pthread.cond_broadcast(self._at(_NOT_EMPTY))
            _pthread.cond_broadcast(self._at(_NOT_FULL))
            _unlock(addr)
        finally:
            try:
                if mapped and word.value & _TID_MASK == tid:  # an exception came
                    try:  # repaired first if taken from a dead holder: else broken for good
                        if not _consistent(addr):  # it was: the exception lost EOWNERDEAD
                            _ENDED.pack_into(buf, _ENDED_AT, _DIED)  # told by the next call
                    finally:  # and unlocked, even if an exception comes between the two
                        _unlock(addr)
            finally:
                del use.calls[-1]
                if use.closed:
                    use.left()

    def peek(self, limit: int | None = None, timeout: float | None = None) -> memoryview:
        """The bytes at the head (at most ``limit``), as a read-only view of the
        ring: no copy, so only those up to where the ring wraps (the next peek
        has the rest). Waits while the buffer is empty, for up to ``timeout`` seconds
        (None: without limit); an empty view means the stream has ended. The
        view is valid until :meth:`consume`.

        Raises
        ------
        TypeError
            If ``limit`` is not an int or None (a bool, a float, a numpy
            integer included), before anything is done.
        ValueError
            If ``limit`` is below 1 (0 would read as the end), or the buffer
            is released (also by another thread during the wait).
        TimeoutError
            If no byte came (or the other side held the buffer's lock) within
            ``timeout`` seconds.
        ContextError
            If it would wait for data in the master, unless ``timeout`` is 0.
            (The wait for the buffer's lock is not refused there: it is
            waited for, as anywhere.)
        OwnerDiedError
            If the writer ended without :meth:`close`, once everything it
            wrote has been read (or if the other side died during a call on
            the buffer): the stream ends there.
        """
        return self._head(limit, timeout, "peek()", False)

    def read(self, limit: int | None = None, timeout: float | None = None) -> bytes:
        """:meth:`peek` (with its ``timeout``), copy and :meth:`consume`; b"" at the
        end of the stream. It takes every byte there (at most ``limit``),
        across the ring's wrap.

        Raises
        ------
        TypeError, ValueError, TimeoutError
            As :meth:`peek`.
        ContextError
            If it would wait for data in the master, unless ``timeout`` is 0.
        OwnerDiedError
            If the writer ended without :meth:`close`, once everything it
            wrote has been read (or if the other side died during a call on
            the buffer): the stream ends there.
        """
        return self._head(limit, timeout, "read()", True)

    @overload
    def _head(
        self, limit: int | None, timeout: float | None, call: str, take: Literal[False]
    ) -> memoryview: ...

    @overload
    def _head(
        self, limit: int | None, timeout: float | None, call: str, take: Literal[True]
    ) -> bytes: ...

    def _head(
        self, limit: int | None, timeout: float | None, call: str, take: bool
    ) -> memoryview | bytes:
        """The bytes at the head, waiting for some: a view of them, or with
        ``take`` a copy, consumed under the same lock (one lock for a read)."""
        if limit is not None and type(limit) is not int:  # as consume(n)
            raise TypeError(
                f"limit={limit!r} is not valid: it must be an int of at least 1, or None for "
                f"all the bytes that are there, not {type(limit).__name__}: pass int(limit)"
            )
        if limit is not None and limit < 1:
            raise ValueError(
                f"limit={limit!r} is not valid: it must be an int of at least 1, or None for "
                "all the bytes that are there (an empty result means the end of the stream)"
            )
        timeout = _pthread.check_timeout(timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        use, buf, mutex = self._use, self._buf, self._mutex
        addr, word, tid = mutex.addr, mutex.word, threading.get_native_id()
        use.calls += _ONE  # see "Every call takes the mutex" above
        mapped = False
        try:
            if use.closed:
                raise closed_error(self)
            mapped = True
            rc = _trylock(addr)
            if rc:
                self._contended(rc, deadline, timeout, call)
            _PID.pack_into(buf, _READER, this_pid[0])
            if _READER not in self._acted:
                self._took(_READER)
            head, tail, capacity, ended = _LAYOUT.unpack_from(buf, _STATE)
            while head == tail and not ended:
                if not self._wait(_NOT_EMPTY, deadline, call):
                    raise TimeoutError(f"no bytes came into {self!r} within {timeout} s")
                head, tail, capacity, ended = _LAYOUT.unpack_from(buf, _STATE)
            start = head % capacity
            n = tail - head
            if not take:
                n = min(n, capacity - start)  # a view is of one run: up to the wrap
            if limit is not None and limit < n:
                n = limit
            got: memoryview | bytes
            if not n:
                if ended == _DIED:
                    self._tell_death()
                got = b"" if take else memoryview(b"")  # the end (not a view of the ring)
            elif take:
                first = min(n, capacity - start)  # up to the end of the ring, then wrap
                if n > first:  # the two runs copied once, into one new bytes
                    got = b"".join(
                        (buf[_RING + start : _RING + capacity], buf[_RING : _RING + n - first])
                    )
                else:
                    got = buf[_RING + start : _RING + start + n].tobytes()
                _LAYOUT.pack_into(buf, _STATE, head + n, tail, capacity, ended)
                _cond_signal(self._base + _NOT_FULL)
            else:  # read-only: a write through it would change bytes the writer sent
                got = buf[_RING + start : _RING + start + n].toreadonly()
            _unlock(addr)
            return got
        finally:
            try:
                if mapped and word.value & _TID_MASK == tid:  # an exception came
                    try:  # repaired first if taken from a dead holder: else broken for good
                        if not _consistent(addr):  # it was: the exception lost EOWNERDEAD
                            _ENDED.pack_into(buf, _ENDED_AT, _DIED)  # told by the next call
                    finally:  # and unlocked, even if an exception comes between the two
                        _unlock(addr)
            finally:
                del use.calls[-1]
                if use.closed:
                    use.left()

    def consume(self, n: int) -> None:
        """Delete ``n`` bytes from the head (after :meth:`peek`), waking the producer.

        Raises
        ------
        TypeError
            If ``n`` is not an int (a bool, a float, a numpy integer included),
            before anything is done.
        ValueError
            If ``n`` is negative or more than the bytes there.
        """
        if type(n) is not int:  # as peek's limit: not a bool, nor a subclass's own "+"
            # Checked before the lock: a value that struct cannot pack would reach the
            # shared state, and pack_into zeroes it before it fails.
            raise TypeError(
                f"n={n!r} is not valid: consume(n) takes an int, the number of bytes to "
                f"delete from the head (0 or more, at most the bytes there), not "
                f"{type(n).__name__}: pass len(view) of what peek() returned, or int(n)"
            )
        use, buf, mutex = self._use, self._buf, self._mutex
        addr, word, tid = mutex.addr, mutex.word, threading.get_native_id()
        use.calls += _ONE  # see "Every call takes the mutex" above
        mapped = False
        try:
            if use.closed:
                raise closed_error(self)
            mapped = True
            rc = _trylock(addr)
            if rc:
                self._contended(rc, None, None, "consume()")
            head, tail, capacity, ended = _LAYOUT.unpack_from(buf, _STATE)
            if n < 0:
                raise ValueError(f"n={n} is not valid: consume(n) deletes 0 bytes or more")
            if n > tail - head:
                raise ValueError(f"cannot consume {n} bytes: {tail - head} are there")
            _LAYOUT.pack_into(buf, _STATE, head + n, tail, capacity, ended)
            _cond_signal(self._base + _NOT_FULL)
            _unlock(addr)
        finally:
            try:
                if mapped and word.value & _TID_MASK == tid:  # an exception came
                    try:  # repaired first if taken from a dead holder: else broken for good
                        if not _consistent(addr):  # it was: the exception lost EOWNERDEAD
                            _ENDED.pack_into(buf, _ENDED_AT, _DIED)  # told by the next call
                    finally:  # and unlocked, even if an exception comes between the two
                        _unlock(addr)
            finally:
                del use.calls[-1]
                if use.closed:
                    use.left()

    def release(self) -> None:
        """Unmap it and stop using it; it goes when its last user releases.

        A call that another thread is making on it ends with ValueError (a
        waiting one at once), and the memory is unmapped when the last of
        them has left.
        """
        self._use.close(self._let_go)
        # This handle's use: the process's, once its last handle goes. A
        # mapping that calls still use stays until they leave.
        self._segment._give_back()

    def _let_go(self, others: int) -> None:
        if self._pid == this_pid[0]:  # inherited over a fork, it marked nothing of this process
            self._let_go_marks()
        if others:
            # This process's waits end (another process's wait again).
            _pthread.cond_broadcast(self._at(_NOT_EMPTY))
            _pthread.cond_broadcast(self._at(_NOT_FULL))

    def _let_go_marks(self) -> None:
        """For the process's last handle on the buffer: take back the sides its
        open filled, which are no longer ones whose end cuts the stream (one it
        wrote or read on keeps its pid in the side's own word), and its place
        among the holders. Another handle of it still open keeps them (see
        _Here)."""
        n = self.res_id.n
        with _here_lock:
            here = _here.get(n)
            if here is None:  # another thread's release, at once, was the last
                return
            if any(h is not self and not h._use.closed for h in list(here.handles)):
                return
            del _here[n]
        # No lock: a fill is stored only in an empty word, so this process's
        # pid stays there until it is taken back here; and a write (read)
        # meanwhile records in the side's own word, which this leaves.
        for filled in _FILLED.values():
            if _PID.unpack_from(self._buf, filled)[0] == this_pid[0]:
                _PID.pack_into(self._buf, filled, 0)
        self._unhold()

    def _unmap(self) -> None:
        self._anchor = None
        self._segment.close()

    def __enter__(self) -> Buffer:
        if self._use.closed:  # released: as its calls (a close() only ends the stream)
            raise closed_error(self)
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()
