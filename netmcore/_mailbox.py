"""A typed mailbox in shared memory, in the spirit of upstream's camlbox.

One receiver (the process that created it), many senders, a fixed number of
slots of fixed size, and a msgspec-encoded message per slot. The whole box is
one managed shm object: its semaphores live inside it.

::

    header | free | filled | slot 0: claim, state, length, sender, payload | slot 1 ...

A sender waits on ``free`` (the number of empty slots), then claims one slot
with its own ``claim`` semaphore (``sem_trywait``), so senders never share a
lock. It writes the payload, then marks the slot full, then posts ``filled``.
The receiver waits on ``filled``, takes the next full slot, empties it and
posts ``claim`` and ``free``. A sender killed in the middle of a send never
posted ``filled`` nor marked its slot full, so the receiver never sees a torn
message; :meth:`Mailbox.reclaim` gives such a slot back.
"""

from __future__ import annotations

import ctypes
import os
import struct
from typing import Any, Generic, TypeVar, overload

from . import _pthread
from ._encap import EncapType
from ._errors import ContextError, EncapTypeMismatch
from ._ids import ResId
from ._resource_api import ShmSegment, create_shm, open_shm

T = TypeVar("T")

_MAGIC = b"nmcbox01"
_HEADER = struct.Struct("=8sIII8s")  # magic, slots, slot size, owner pid, fingerprint
_SLOT_HEAD = struct.Struct("=III")  # state, length, sender os pid
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
            _HEADER.pack_into(segment.buffer, 0, _MAGIC, slots, slot_size, _pid[0], fp)
            box = cls(segment, encap)
            _pthread.sem_init(box._free, slots)
            _pthread.sem_init(box._filled, 0)
            for i in range(slots):
                _pthread.sem_init(box._claim(i), 1)
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
            magic, *_, fp = _HEADER.unpack_from(segment.buffer, 0)
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
        _, slots, slot_size, owner_pid, _ = _HEADER.unpack_from(segment.buffer, 0)
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
        self._next_send = 0
        self._next_receive = 0

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
        if not _pthread.sem_wait(self._free, timeout):
            raise TimeoutError(f"{self!r} stayed full for {timeout} s")
        head = self._head(self._take_slot())
        start = head + _SLOT_HEAD.size
        self._buf[start : start + len(data)] = data
        # The state goes last: a sender killed before this line leaves no message.
        _SLOT_HEAD.pack_into(self._buf, head, _FULL, len(data), _pid[0])
        _pthread.sem_post(self._filled)

    def _take_slot(self) -> int:
        # `free` guarantees a slot whose claim is available: find it.
        while True:
            for k in range(self.slots):
                i = (self._next_send + k) % self.slots
                if _pthread.sem_trywait(self._claim(i)):
                    self._next_send = i + 1
                    _SLOT_HEAD.pack_into(self._buf, self._head(i), _CLAIMED, 0, _pid[0])
                    return i

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
        buf = self._buf
        for k in range(self.slots):
            i = (self._next_receive + k) % self.slots
            head = self._head(i)
            state, length, _ = _SLOT_HEAD.unpack_from(buf, head)
            if state == _FULL:
                start = head + _SLOT_HEAD.size
                try:
                    return self.type.decode(buf[start : start + length])  # no copy first
                finally:
                    _SLOT_HEAD.pack_into(buf, head, _EMPTY, 0, 0)
                    self._next_receive = i + 1
                    _pthread.sem_post(self._claim(i))
                    _pthread.sem_post(self._free)
        raise AssertionError("mailbox: a posted message was not found")  # pragma: no cover

    def reclaim(self) -> int:
        """Give back the slots of senders that died in the middle of a send.

        Returns how many. Only the receiver calls it.
        """
        freed = 0
        buf = self._segment.buffer
        for i in range(self.slots):
            head = self._head(i)
            state, _, sender = _SLOT_HEAD.unpack_from(buf, head)
            if state == _CLAIMED and not _alive(sender):
                _SLOT_HEAD.pack_into(buf, head, _EMPTY, 0, 0)
                _pthread.sem_post(self._claim(i))
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


def _alive(os_pid: int) -> bool:
    try:
        os.kill(os_pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
