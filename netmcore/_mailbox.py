"""A typed mailbox in shared memory, in the spirit of upstream's camlbox.

One receiver (the process that created it), many senders, a fixed number of
slots of fixed size, and a msgspec-encoded message per slot. The whole box is
one managed shm object: its semaphores and mutexes live inside it.

::

    header | free | filled | slot 0: claim, state, length, sender, payload | slot 1 ...

A sender claims an empty slot by try-locking its ``claim`` mutex, so senders
never share a lock. It writes the payload, marks the slot full, unlocks, and
posts ``filled``. The receiver waits on ``filled``, takes the next full slot,
marks it empty and posts ``free``, on which senders of a full box wait.

The claim mutexes are robust. A sender killed in the middle of a send holds
its slot's mutex and never marked the slot full, so the receiver never sees a
torn message; the next sender that tries that slot gets the mutex with
"owner died", and takes the slot over.
"""

from __future__ import annotations

import ctypes
import os
import struct
import time
from typing import Any, Generic, TypeVar, overload

from . import _pthread
from ._encap import EncapType
from ._errors import ContextError, EncapTypeMismatch
from ._ids import ResId
from ._resource_api import ShmSegment, create_shm, open_shm

T = TypeVar("T")

_MAGIC = b"nmcbox01"
# magic, slots, slot size, owner pid, fingerprint; then two shared hints: the
# next slot to send into, and the next message stamp. The receiver takes the
# oldest stamp first, so each sender's messages keep their order.
_HEADER = struct.Struct("=8sIII8sII")
_CURSOR = struct.calcsize("=8sIII8s")
_HINTS = struct.Struct("=II")  # cursor, stamp
# state, length, sender os pid, stamp; little-endian: byte 0 is the state
_SLOT_HEAD = struct.Struct("<IIII")
_STAMP = struct.Struct("<I")  # at offset 12 of a slot head
_EMPTY, _CLAIMED, _FULL = 0, 1, 2
_SEMS = 64  # offset of the free semaphore; filled follows at 2 * SLOT
_FIRST_SLOT = 3 * _pthread.SLOT

# This process's pid, without a getpid() system call per message.
_pid = [os.getpid()]
os.register_at_fork(after_in_child=lambda: _pid.__setitem__(0, os.getpid()))


class Mailbox(Generic[T]):
    """A shared-memory mailbox for messages of type ``T``.

    The process that calls :meth:`create` owns it and is the only one that may
    :meth:`receive`; others :meth:`open` it by resource id and :meth:`send`.
    """

    @overload
    @classmethod
    def create(cls, typ: type[T], *, slots: int = 16, slot_size: int = 512) -> Mailbox[T]: ...
    @overload
    @classmethod
    def create(cls, typ: Any, *, slots: int = 16, slot_size: int = 512) -> Mailbox[Any]: ...
    @classmethod
    def create(cls, typ: Any, *, slots: int = 16, slot_size: int = 512) -> Mailbox[Any]:
        """Create a box of ``slots`` messages of at most ``slot_size`` bytes each."""
        encap: EncapType[Any] = EncapType(typ)
        sizes: tuple[tuple[object, str], ...] = ((slots, "slots"), (slot_size, "slot_size"))
        for value, what in sizes:
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{what}={value!r} is not valid: it must be an int of at least 1")
        stride = _pthread.SLOT + _SLOT_HEAD.size + slot_size
        segment = create_shm(_FIRST_SLOT + slots * stride)
        try:
            fp = bytes.fromhex(encap.fingerprint)
            _HEADER.pack_into(segment.buffer, 0, _MAGIC, slots, slot_size, _pid[0], fp, 0, 0)
            box = cls(segment, encap)
            _pthread.sem_init(box._free, 0)
            _pthread.sem_init(box._filled, 0)
            for i in range(slots):
                _pthread.mutex_init(box._claim(i), _pthread.MUTEX_NORMAL)
        except BaseException:
            segment.release()
            raise
        return box

    @overload
    @classmethod
    def open(cls, res_id: ResId, typ: type[T]) -> Mailbox[T]: ...
    @overload
    @classmethod
    def open(cls, res_id: ResId, typ: Any) -> Mailbox[Any]: ...
    @classmethod
    def open(cls, res_id: ResId, typ: Any) -> Mailbox[Any]:
        """Open the box ``res_id`` to send to it; ``typ`` must be its type."""
        encap: EncapType[Any] = EncapType(typ)
        segment = open_shm(res_id)
        try:
            magic, *_, fp, _, _ = _HEADER.unpack_from(segment.buffer, 0)
            if magic != _MAGIC:
                raise ValueError(f"resource {res_id!r} is not a mailbox")
            if fp.hex() != encap.fingerprint:
                raise EncapTypeMismatch(
                    f"mailbox {res_id!r} carries another type than {encap.name} "
                    f"(fingerprint {fp.hex()}, not {encap.fingerprint})"
                )
            return cls(segment, encap)
        except BaseException:
            segment.release()
            raise

    def __init__(self, segment: ShmSegment, encap: EncapType[T]) -> None:
        self._segment = segment
        self.type = encap
        _, slots, slot_size, owner_pid, _, _, _ = _HEADER.unpack_from(segment.buffer, 0)
        self.slots: int = slots
        self.slot_size: int = slot_size
        self.owner_pid: int = owner_pid
        self._stride: int = _pthread.SLOT + _SLOT_HEAD.size + self.slot_size
        self._anchor: ctypes.Array[ctypes.c_char] | None = (
            ctypes.c_char * len(segment.buffer)
        ).from_buffer(segment.buffer)
        self._base: int = ctypes.addressof(self._anchor)
        self._free = self._base + _SEMS
        self._filled = self._base + 2 * _pthread.SLOT
        self._buf = segment.buffer
        self._next_receive = 0
        self._last_stamp = 0xFFFFFFFF  # the receiver's; the first stamp is 0

    @property
    def res_id(self) -> ResId:
        """Give this to senders; they :meth:`open` it."""
        return self._segment.res_id

    def __repr__(self) -> str:
        return f"Mailbox({self.res_id!r}, {self.type.name}, {self.slots}x{self.slot_size})"

    def _claim(self, i: int) -> int:
        return self._base + _FIRST_SLOT + i * self._stride

    def _head(self, i: int) -> int:
        return _FIRST_SLOT + i * self._stride + _pthread.SLOT

    def send(self, value: T, timeout: float | None = None) -> None:
        """Put a message in the box, waiting while it is full.

        Raises
        ------
        ArgumentTypeError
            If ``value`` does not match the box's type (with the path).
        ValueError
            If the encoded message is larger than a slot.
        TimeoutError
            If no slot came free within ``timeout`` seconds.
        """
        data = self.type.encode(value, "message")
        if len(data) > self.slot_size:
            raise ValueError(
                f"a message of {len(data)} bytes does not fit {self!r}, whose slots hold "
                f"{self.slot_size} bytes: create the box with a larger slot_size"
            )
        deadline = None if timeout is None else time.monotonic() + timeout
        while (i := self._claim_slot()) is None:
            # Full: wait until the receiver frees a slot, then look again.
            left = None if deadline is None else deadline - time.monotonic()
            if not _pthread.sem_wait(self._free, left):
                raise TimeoutError(f"{self!r} stayed full for {timeout} s")
        head = self._head(i)
        start = head + _SLOT_HEAD.size
        self._buf[start : start + len(data)] = data
        cursor, stamp = _HINTS.unpack_from(self._buf, _CURSOR)
        _HINTS.pack_into(self._buf, _CURSOR, cursor, (stamp + 1) & 0xFFFFFFFF)
        # The state goes last: a sender killed before this line leaves no message.
        _SLOT_HEAD.pack_into(self._buf, head, _FULL, len(data), _pid[0], stamp)
        _pthread.mutex_unlock(self._claim(i))
        _pthread.sem_post(self._filled)

    def _claim_slot(self) -> int | None:
        """Lock the claim of an empty slot and mark it claimed; None if all are full."""
        cursor: int = _HINTS.unpack_from(self._buf, _CURSOR)[0]
        for k in range(self.slots):
            i = (cursor + k) % self.slots
            head = self._head(i)
            if self._buf[head] == _FULL or not self._try_claim(i):
                continue
            if self._buf[head] == _FULL:  # filled since we looked
                _pthread.mutex_unlock(self._claim(i))
                continue
            _SLOT_HEAD.pack_into(self._buf, head, _CLAIMED, 0, _pid[0], 0)
            struct.pack_into("=I", self._buf, _CURSOR, (i + 1) % self.slots)
            return i
        return None

    def _try_claim(self, i: int) -> bool:
        try:
            return _pthread.mutex_trylock(self._claim(i))
        except _pthread.OwnerDied:
            # Its last sender died mid-send: the slot holds no message (it was
            # never marked full), and it is ours now.
            _SLOT_HEAD.pack_into(self._buf, self._head(i), _EMPTY, 0, 0, 0)
            return True

    def receive(self, timeout: float | None = None) -> T:
        """Take the next message, waiting for one up to ``timeout`` seconds.

        Raises
        ------
        ContextError
            If the caller is not the process that created the box.
        TimeoutError
            If no message came within ``timeout`` seconds.
        """
        if _pid[0] != self.owner_pid:
            raise ContextError(
                f"only the process that created {self!r} (os pid {self.owner_pid}) can "
                f"receive from it; this is os pid {_pid[0]}: senders use send()"
            )
        if not _pthread.sem_wait(self._filled, timeout):
            raise TimeoutError(f"no message arrived in {self!r} within {timeout} s")
        i = self._oldest()
        buf = self._buf
        head = self._head(i)
        _, length, _, self._last_stamp = _SLOT_HEAD.unpack_from(buf, head)
        start = head + _SLOT_HEAD.size
        # A copy: a memoryview or Raw value must not view the slot.
        data = bytes(buf[start : start + length])
        _SLOT_HEAD.pack_into(buf, head, _EMPTY, 0, 0, 0)
        self._next_receive = (i + 1) % self.slots
        if _pthread.sem_value(self._free) < self.slots:  # bounded: a wake-up hint
            _pthread.sem_post(self._free)
        return self.type.decode(data)

    def _oldest(self) -> int:
        """The full slot holding the oldest message (one is, after ``filled``)."""
        last = self._last_stamp
        state, _, _, stamp = _SLOT_HEAD.unpack_from(self._buf, self._head(self._next_receive))
        if state == _FULL and stamp == (last + 1) & 0xFFFFFFFF:  # the usual case
            return self._next_receive
        # Stamps are taken without a lock, so two senders may share one, and a
        # slow sender's stamp may be behind the last one received: a signed
        # distance puts such a message first instead of last.
        best, best_i = 1 << 32, 0
        buf, stride, first = self._buf, self._stride, _FIRST_SLOT + _pthread.SLOT
        for i in range(self.slots):
            head = first + i * stride
            if buf[head] != _FULL:  # the state's low byte: no unpacking for most slots
                continue
            stamp = _STAMP.unpack_from(buf, head + 12)[0]
            distance = ((stamp - last + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)
            if distance < best:
                best, best_i = distance, i
        return best_i

    def reclaim(self) -> int:
        """Give back the slots of senders that died in the middle of a send, now.

        Senders do it on their own when they come to such a slot; this is for
        a receiver that wants its full capacity back at once. Returns how many.
        """
        freed = 0
        for i in range(self.slots):
            if self._buf[self._head(i)] != _CLAIMED:
                continue
            try:
                if _pthread.mutex_trylock(self._claim(i)):  # pragma: no cover - a race
                    _pthread.mutex_unlock(self._claim(i))
            except _pthread.OwnerDied:
                _SLOT_HEAD.pack_into(self._buf, self._head(i), _EMPTY, 0, 0, 0)
                _pthread.mutex_unlock(self._claim(i))
                _pthread.sem_post(self._free)
                freed += 1
        return freed

    def close(self) -> None:
        """Unmap it in this process (idempotent)."""
        self._anchor = None
        self._segment.close()  # also releases self._buf, the same view

    def release(self) -> None:
        """Unmap it and stop using it; the box goes when its last user releases."""
        self.close()
        self._segment.release()
