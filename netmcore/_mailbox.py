"""A typed mailbox in shared memory, in the spirit of upstream's camlbox.

One receiver (the handle ``create`` gave, in the process that called it),
or many (``many_receivers``: a work queue), many senders, a fixed number of
slots of fixed size, and a msgspec-encoded message per slot. The whole box
is one managed shm object: its semaphores and mutexes live inside it.

::

    header (with the cursor) | type name | free | filled | receivers' words
        | receive mutex | seats (many receivers only) | slot 0 | slot 1 | ...

and each slot is: claim, state, length, seq, payload.

Slots are used as a ring, in the order of a shared 64-bit *cursor*: the
sequence number of the next message. A sender claims the slot of sequence
``cursor`` by try-locking that slot's ``claim`` mutex and, holding it,
checking that the cursor has not moved and the slot is empty; then it marks
the slot claimed and moves the cursor on. So senders never share a lock, and
each one only waits for the others in the instant of a claim. It writes the
payload and the length, marks the slot full (the state is written last, on
its own), unlocks, and posts ``filled``.

The receiver takes messages in cursor order from its *window start*, its own
count of the oldest message not yet taken. If that slot is still being
written, it takes the first full one after it and marks that one *taken*; the
window start moves over taken slots, emptying them, once its own slot is
done. A sender finishes a message before it claims its next one, so each
sender's messages arrive in the order it sent them. (The states are plain
bytes in shared memory, read in order: x86-64 keeps stores in order.)

With one receiver, the window start is the receiving handle's, a lock
of the handle lets one thread at a time take a message, and ``open``
gives a sender's handle, in the creator too, as upstream's
``camlbox_sender`` is. With many, the window start is in the box,
``open(receive=True)`` gives receiving handles, and a take holds the box's
*receive mutex* as well (robust, held for a few microseconds). A receiver
killed in a take leaves its message lost, as a reader of a
``multiprocessing.Queue`` killed in its ``get`` does. Each of its steps
leaves the box as a take leaves it, but one: a slot emptied at the window
start before the window moved on, a hole, which a take steps over
(``_hole``), whether a sender has filled it again since or not. Receivers
of a box of many wait without the spin of a single receiver: on few cores,
spinning receivers take the time the senders need. Each receiving handle
holds a *seat* (its os pid) from its open (create's, from its first
receive) to its close: a sender of a full box whose seats are all free, or
held by ended processes, once one was taken, knows that nothing will take
its message.

Senders that find the cursor's slot full wait on ``free``. The receiver
posts it every half box and before it waits for a message; waking a
blocked sender per message would cost both sides a system call and a
context switch each. A waiting sender also looks again on its own every
millisecond, and then also asks (a pidfd) whether the receiver still lives:
a full box whose receiver has ended will never have room again.

The claim mutexes are robust. A sender killed in the middle of a send holds
its slot's mutex and never marked the slot full, so the receiver never sees a
torn message: when that slot reaches the window start, the receiver gets the
mutex with "owner died" and skips the slot. A sender killed after it marked
its message full but before it posted ``filled`` leaves a message without a
token: so the receiver waits for a token in slices (of milliseconds, after a
spin), and after a slice with none takes a message that is there anyway. A
token with no message to go with it (that message was taken so) is a nudge:
the receiver finds nothing and waits again.

A signal handler that raises in the middle of a send (Python runs handlers
between calls, so even just after a lock was taken) must not leave this live
thread holding a claim mutex: the box would be full for ever. ``send`` gives
back the claim, leaving a published claimed slot as a killed sender's would
be, for the receiver to step over, and posts ``filled`` for it. Nor must
the receiver, whose look at a claimed slot (is its sender dead?) try-locks
its claim: it gives it back the same way, and a move of its window start
that an exception cut short is finished at its next look.

A message the receiver has taken out of its slot is its alone: the same
exception, coming before the caller has the value, would lose it. So the
receiver keeps it from then on, and such an exception puts it in the
handle's *pending* list, whose messages the next ``receive`` returns
first, in order, each taken off the list only as it is returned. A
decode that raises something else than msgspec's DecodeError may have
been interrupted, or the type's own validation may refuse the message:
a second decode, at once, tells them apart (``_decode_again``). Threads
receiving at once may judge the same pending message: only the one that
takes it off the list returns or raises it.

Each call counts itself in progress (``_pthread.InUse``), so that a
``close()`` by another thread unmaps the box only once the last call has
left: it posts ``filled`` to wake this process's receivers, and a waiting
sender sees it when it looks again.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import struct
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, TypeVar, overload

import msgspec

from . import _client, _context, _posix, _pthread
from ._encap import TYPE_NAME_MAX, EncapType
from ._errors import ContextError, EncapTypeMismatch, SendersEnded, receivers_ended
from ._ids import ProcessId, ResId, senders_of
from ._resource_api import (
    MARKS,
    ShmSegment,
    closed_during,
    closed_error,
    create_marked,
    open_marked,
)
from ._resources import (
    SHM_ROOM_FIX,
    free_problem,
    require_int,
    size_problem,
    space_fix,
)

if TYPE_CHECKING:
    from typing_extensions import TypeForm  # see EncapType.__init__

T = TypeVar("T")

# A new layout is a new mark: a box of another layout is not misread.
_MAGIC = b"nmcbox04"
MARKS[_MAGIC] = "a Mailbox (Mailbox.open(res_id, T) opens it)"
# magic, slots, slot size, owner pid, fingerprint, the type name's length (in
# bytes), whether many handles may receive (1) or the creator's alone (0),
# then the cursor.
_HEADER = struct.Struct("=8sIII8sHBxQ")
_CURSOR = struct.calcsize("=8sIII8sHBx")
# A slot's head: its state, the payload's length, and the sequence number of
# the message it was claimed for. Only byte 0 of the state is used, and it is
# written on its own, after the rest.
_SLOT_HEAD = struct.Struct("=IIQ")
_PAYLOAD = _SLOT_HEAD.size  # where a slot's payload starts, after its head
# The length is at offset 4 of the head, the sequence number (read and written
# under the slot's claim) at offset 8: both aligned, read and written as items
# of native word views of the box (cheaper than struct's pack_into).
_EMPTY, _CLAIMED, _FULL, _TAKEN = 0, 1, 2, 3
_LINE = 64  # bytes in a cache line
# The name of the messages' type, in UTF-8, for an open with another type to
# name it: in whole cache lines of its own, after the header's.
_TYPE_NAME = _LINE
_SEMS = _TYPE_NAME + TYPE_NAME_MAX  # offset of the free semaphore; filled follows it
# The receivers' line: the window start, the takes since the last wake of
# senders, and whether a receiving handle ever took a seat (8 bytes
# each), for a box of many receivers: any of them goes on where the last
# left off. A line of its own, as senders write the cursor all the time.
_RECEIVING = _SEMS + 2 * _pthread.SLOT
_WINDOW, _TAKES, _SEATED = range(3)  # its words
# A box of many receivers: the mutex they take messages under, then a seat
# (an os pid, 0 if free) per receiving handle open, for a sender of a full
# box to tell whether any still lives. A box of one receiver has none of
# these: its slots begin where the receivers' line would.
_RECEIVE_MUTEX = _RECEIVING + _LINE
_SEAT_TABLE = _RECEIVE_MUTEX + _pthread.SLOT
SEATS = 1024  # receiving handles open at once, at most, on a box of many receivers


def _first_slot(many_receivers: bool) -> int:
    return _SEAT_TABLE + 4 * SEATS if many_receivers else _RECEIVING


_LISTED_SLOTS = 1 << 16  # boxes with more slots find them by arithmetic (see __init__)
# How often a sender looks at a slot that another sender is claiming, and how
# long it waits for room before it looks again on its own: the receiver wakes
# blocked senders only every half box, and a receiver that takes one
# message and then waits for something else must not leave a sender blocked
# beside a free slot for longer than this.
_CLAIM_TRIES = 100
_LOOK_AGAIN = 0.001
_ASK_EVERY = 10  # looks of a sender of a full box between two questions to the master
# How long a receive waits for the receive mutex past its deadline: it is held
# for microseconds, by a receiver that is not stopped.
_MUTEX_GRACE = 0.01
# The receiver's first wait for a token, before it looks for a message that has
# none (a sender killed between marking it full and posting); later waits grow
# to _pthread.SLICE. Far longer than a message takes to come when one is on its
# way, so a busy box never gets there; short enough that such a message is
# soon seen.
_FIRST_SLICE = 0.002
# How long a send or a receive with no timeout waits before it tells the
# master what it waits for (see WaitTold): the master's stall notice and
# status see no wait in shared memory otherwise.
WAIT_TOLD_SECONDS = 1.0

# The hot paths' C calls, as module globals: each attribute lookup counts.
_trylock = _pthread.raw_mutex_trylock
_unlock = _pthread.raw_mutex_unlock
_post = _pthread.raw_sem_post
_trywait = _pthread.raw_sem_trywait

_pid = _pthread.this_pid
_ONE = _pthread.ONE
_ASYNC = _posix.ASYNC_SIGNALS


def _stride(slot_size: int) -> int:
    """Bytes per slot, in whole cache lines: a sender filling one slot and the
    receiver emptying the next never write to the same line."""
    return -(-(_pthread.SLOT + _SLOT_HEAD.size + slot_size) // _LINE) * _LINE


# The header holds the slots and the slot size in 32 bits each: both are below.
SIZE_LIMIT = 1 << 32


def footprint(slots: int, slot_size: int, many_receivers: bool = False) -> tuple[int, int]:
    """The bytes of a box of ``slots`` slots of ``slot_size`` bytes, and those
    creating it writes at once (the pages of a lock in every slot)."""
    stride, page, first = _stride(slot_size), mmap.PAGESIZE, _first_slot(many_receivers)
    size = first + slots * stride
    written = min(slots, (first + (slots - 1) * stride) // page + 1) * page
    return size, written


class Mailbox(Generic[T]):
    """A shared-memory mailbox for messages of type ``T``.

    The handle that :meth:`create` gives may :meth:`receive` (its threads
    may share it); a handle that :meth:`open` gives, in any process, the
    creator too, may :meth:`send` only. A box created with
    ``many_receivers=True`` is a work queue: ``open(res_id, T,
    receive=True)`` gives a receiving handle in any process, and each
    message goes to one of them.
    """

    @overload
    @classmethod
    def create(
        cls, typ: type[T], *, slots: int = 16, slot_size: int = 512, many_receivers: bool = False
    ) -> Mailbox[T]: ...
    @overload
    @classmethod
    def create(
        cls,
        typ: TypeForm[T],
        *,
        slots: int = 16,
        slot_size: int = 512,
        many_receivers: bool = False,
    ) -> Mailbox[T]: ...
    @classmethod
    def create(
        cls, typ: Any, *, slots: int = 16, slot_size: int = 512, many_receivers: bool = False
    ) -> Mailbox[Any]:
        """Create a box of ``slots`` messages of at most ``slot_size`` bytes
        each. With ``many_receivers``, any process may open a receiving
        handle on it (``open(res_id, T, receive=True)``), as
        ``multiprocessing.Queue`` is read by several processes."""
        encap: EncapType[Any] = EncapType(typ)
        slots = require_int(slots, "slots", "how many messages it holds, at least 1", 16)
        slot_size = require_int(slot_size, "slot_size", "a message's bytes, at least 1", 512)
        if not isinstance(many_receivers, bool):
            raise TypeError(
                f"many_receivers={many_receivers!r} is not valid: it must be a bool, True for a "
                "box that any process may receive from (open(res_id, T, receive=True)), False "
                "for the creator's handle alone"
            )
        for value, what in ((slots, "slots"), (slot_size, "slot_size")):
            if value < 1:
                raise ValueError(f"{what}={value!r} is not valid: it must be an int of at least 1")
            if value >= SIZE_LIMIT:
                raise ValueError(
                    f"{what}={value:,} is not valid: it must be below 2**32 "
                    f"({SIZE_LIMIT - 1:,} at most)"
                )
        size, written = footprint(slots, slot_size, many_receivers)
        too_large = f"a Mailbox of {slots:,} slots of {slot_size:,} bytes needs {size:,} bytes"
        fix = "create it with fewer slots or a smaller slot_size"
        problem = size_problem(size)  # create_shm's own message would name no argument
        if problem is not None:
            raise ValueError(
                f"{too_large}, which is too large: {problem}. {fix.capitalize()}{space_fix(size)}"
            )
        # Past /dev/shm's free space the object is accepted (its pages come as
        # they are written), but creating it writes a lock in every slot: the
        # pages those are in must fit, or the creator is killed by SIGBUS.
        problem = free_problem(written)
        if problem is not None:
            raise ValueError(
                f"{too_large}, and creating it fills {written:,} bytes at once (the pages "
                f"of a lock in every slot), which is too much: {problem}. "
                f"{fix.capitalize()}{SHM_ROOM_FIX}"
            )

        def build(segment: ShmSegment) -> Mailbox[Any]:
            fp = bytes.fromhex(encap.fingerprint)
            name = encap.clipped_name.encode()
            header = (_MAGIC, slots, slot_size, _pid[0], fp, len(name), many_receivers, 0)
            _HEADER.pack_into(segment.buffer, 0, *header)
            segment.buffer[_TYPE_NAME : _TYPE_NAME + len(name)] = name
            box = cls(segment, encap, receiving=True)
            _pthread.sem_init(box._free, 0)
            _pthread.sem_init(box._filled, 0)
            if many_receivers:
                _pthread.mutex_init(box._base + _RECEIVE_MUTEX, _pthread.MUTEX_NORMAL)
            for i in range(slots):
                _pthread.mutex_init(box._claims[i], _pthread.MUTEX_NORMAL)
            return box

        # mmap's ENOMEM: /dev/shm's free space does not bound it.
        enomem = f"{too_large}, more than this process can map: {fix}"
        return create_marked(size, _MAGIC, build, enomem)

    @overload
    @classmethod
    def open(cls, res_id: ResId, typ: type[T], *, receive: bool = False) -> Mailbox[T]: ...
    @overload
    @classmethod
    def open(cls, res_id: ResId, typ: TypeForm[T], *, receive: bool = False) -> Mailbox[T]: ...
    @classmethod
    def open(cls, res_id: ResId, typ: Any, *, receive: bool = False) -> Mailbox[Any]:
        """Open the box ``res_id`` to send to it; ``typ`` must be its type.

        With ``receive=True``, the handle receives too, from a box created
        with ``many_receivers=True``: it takes one of the box's
        :data:`SEATS` seats until it is closed (or its process ends)."""
        encap: EncapType[Any] = EncapType(typ)
        if not isinstance(receive, bool):
            raise TypeError(
                f"receive={receive!r} is not valid: it must be a bool, True for a receiving "
                "handle (on a box created with many_receivers=True), False to send only"
            )

        def build(segment: ShmSegment) -> Mailbox[Any]:
            box = cls(segment, encap)
            if receive:
                try:
                    box._open_to_receive(res_id)
                except BaseException:
                    box._unmap()
                    raise
            return box

        def check(header: memoryview) -> None:
            *_, fp, name_size, _, _ = _HEADER.unpack_from(header, 0)
            if fp.hex() != encap.fingerprint:
                # Bounded by its room: another process's memory is not trusted further.
                name = header[_TYPE_NAME : _TYPE_NAME + min(name_size, TYPE_NAME_MAX)]
                found = bytes(name).decode(errors="replace")
                raise EncapTypeMismatch(
                    f"mailbox {res_id!r} carries messages of type {found} (fingerprint "
                    f"{fp.hex()}), not {encap.name} (fingerprint {encap.fingerprint}): "
                    f"open it with the type it was created with, {found}"
                )

        # Built as part of the open: if that fails, the open gives back its use.
        return open_marked(res_id, _MAGIC, "mailbox", build, check)

    def __init__(
        self, segment: ShmSegment, encap: EncapType[T], *, receiving: bool = False
    ) -> None:
        self._segment = segment
        self.type = encap
        _, slots, slot_size, owner_pid, _, _, many, _ = _HEADER.unpack_from(segment.buffer, 0)
        self.slots: int = slots
        self.slot_size: int = slot_size
        self.owner_pid: int = owner_pid
        self.many_receivers: bool = bool(many)
        # The pid that may receive through this handle: the creator's, for
        # create's handle; none for an open's, unless it opened to receive
        # (see receive). A copy that a fork made is refused too: its pid is
        # another.
        self._receiver = owner_pid if receiving else 0
        # Its seat, on a box of many receivers, once it has one: create's
        # handle takes one as it first receives (a creator that only feeds
        # the box is no receiver a sender should wait for), an open's as it
        # opens.
        self._seat: int | None = None
        self._unseated = receiving and self.many_receivers
        self._stride = _stride(slot_size)
        self._first_slot = _first_slot(self.many_receivers)
        self._anchor: ctypes.Array[ctypes.c_char] | None = (
            ctypes.c_char * len(segment.buffer)
        ).from_buffer(segment.buffer)
        self._base: int = ctypes.addressof(self._anchor)
        self._free = self._base + _SEMS
        self._filled = self._base + _SEMS + _pthread.SLOT
        self._buf = segment.buffer
        # The cursor, as a view of one native 8-byte word: item assignment is
        # one aligned store. (struct.pack_into zeroes its bytes first, so a
        # reader in another process could see 0 in the middle of an update.)
        self._cursor = segment.buffer[_CURSOR : _CURSOR + 8].cast("Q")
        self._words = segment.buffer.cast("I")  # a slot's length: [(head + 4) >> 2]
        self._quads = segment.buffer.cast("Q")  # a slot's sequence number: [(head + 8) >> 3]
        # Each slot's claim lock (an address) and head (an offset). Lists, whose
        # indexing makes a send and receive ~17% faster; ranges past
        # _LISTED_SLOTS, so that a box of millions of slots does not cost
        # each process that opens it ~80 bytes a slot.
        first_claim = self._base + self._first_slot
        claims = range(first_claim, first_claim + slots * self._stride, self._stride)
        first_head = self._first_slot + _pthread.SLOT
        heads = range(first_head, first_head + slots * self._stride, self._stride)
        listed = slots <= _LISTED_SLOTS
        self._claims: Sequence[int] = list(claims) if listed else claims
        self._heads: Sequence[int] = list(heads) if listed else heads
        self._free_value = _pthread.IntCell()
        # One thread of this process at a time takes a message; on a box of
        # many receivers, under the box's receive mutex too (held so by at
        # most one thread here: MutexState tells whether this one holds it).
        self._receiving = threading.Lock()
        self._shared = self._base + _RECEIVE_MUTEX if self.many_receivers else 0
        self._shared_state = _pthread.MutexState(self._base + _RECEIVE_MUTEX)
        self._use = _pthread.InUse(self._unmap)
        self._encode = encap.encode
        self._decode = encap.decode
        # The receivers' words (see _RECEIVING): the window start (a
        # sequence number), and when a receive next wakes blocked senders.
        # The box's own, for many receivers; with one, the receiving
        # handle's alone, in a list, which is faster to use.
        self._recv: memoryview | list[int] = (
            segment.buffer[_RECEIVING : _RECEIVING + 24].cast("Q")
            if self.many_receivers
            else [0, 0, 0]
        )
        seats = _SEAT_TABLE + 4 * SEATS if self.many_receivers else _SEAT_TABLE
        self._seats = segment.buffer[_SEAT_TABLE:seats].cast("I")
        self._wake_every = max(1, slots // 2)
        # Whether a receive() left early (a signal handler's exception, a
        # timeout): it may have taken a token and not its message. The next
        # one then looks for a message before it waits for a token, or a
        # handler firing more often than _FIRST_SLICE would keep every call
        # from getting to its first look, and the box would stall.
        self._look_first = False
        # Messages taken out of their slots that a signal handler's exception
        # kept from their caller, oldest first: the next receive() returns
        # them first (see _take, _hand_over). Each is its bytes, or a 1-tuple
        # of its value once a decode of it succeeded (see _decode_again).
        self._pending: list[bytes | tuple[T]] = []

    @property
    def res_id(self) -> ResId:
        """Give this to senders; they :meth:`open` it."""
        return self._segment.res_id

    def __repr__(self) -> str:
        return f"Mailbox({self.res_id!r}, {self.type.name}, {self.slots}x{self.slot_size})"

    def send(
        self,
        value: T,
        timeout: float | None = None,
        *,
        while_alive: ProcessId[Any] | Iterable[ProcessId[Any]] | None = None,
    ) -> None:
        """Put a message in the box, waiting while it is full.

        With ``while_alive`` (a ProcessId, or several: the receivers), a
        send to a full box waits only while one of those processes runs:
        once every one of them has ended, it raises BrokenPipeError, where
        a plain send would wait for ever for receivers that are gone (ones
        that failed before they opened the box, say). A send into a free
        slot does not look. The master is asked every 10 ms of a wait.

        Raises
        ------
        ArgumentTypeError
            If ``value`` does not match the box's type (with the path).
        ValueError
            If the encoded message is larger than a slot, after :meth:`close`
            (or if another thread closes it while this call waits), or for a
            ``timeout`` below 0 or NaN.
        TypeError
            If ``timeout`` is not a number.
        TimeoutError
            If no slot came free within ``timeout`` seconds.
        BrokenPipeError
            If the box is full and its receiver has ended (with many
            receivers: every receiving handle has been closed, once one
            was open), or every process of ``while_alive`` has.
        ContextError
            If the box is full and this is the master (which must not wait),
            unless ``timeout`` is 0.
        UnknownProcess
            For an id of ``while_alive`` that no start returned, once the
            master is asked.
        """
        receivers = None if while_alive is None else senders_of(while_alive)
        use = self._use
        use.calls += _ONE  # the mapping stays until this call leaves (see close)
        try:
            if use.closed:  # its C calls would touch unmapped memory
                raise closed_error(self)
            if timeout is not None:
                timeout = _pthread.check_timeout(timeout)
            data = self._encode(value, "message")
            if len(data) > self.slot_size:
                raise ValueError(
                    f"a message of {len(data)} bytes does not fit {self!r}, whose slots hold "
                    f"{self.slot_size} bytes: create the box with a larger slot_size"
                )
            buf = self._buf
            # The usual case, inline: the cursor's slot is empty and nobody else claims it.
            seq = self._cursor[0]
            i = seq % self.slots
            head = self._heads[i]
            claim = self._claims[i]
            full = False
            # An exception (a signal handler's) can come between any two calls
            # here, even just after a lock was taken, before Python has the
            # result: _abandon() finds what this thread holds and gives it back.
            # (A try block costs nothing until something raises.)
            try:
                rc = _trylock(claim) if buf[head] == _EMPTY else errno.EBUSY
                if rc == 0 and buf[head] == _EMPTY and self._cursor[0] == seq:
                    # Claimed: what _mark_claimed() does, inline.
                    self._quads[(head + 8) >> 3] = seq
                    buf[head] = _CLAIMED
                    self._cursor[0] = seq + 1
                else:
                    claimed = False
                    if rc == 0:
                        _unlock(claim)  # another sender claimed that slot meanwhile
                    elif rc == errno.EOWNERDEAD:  # its sender died in the middle of a send
                        _pthread.mutex_consistent(claim)
                        # As _claim_slot() does: the slot may be ours to take,
                        # or a box old and the receiver must be told to step over it.
                        claimed = self._claimed_after_death(seq, i)
                    if not claimed:
                        i = self._claim_or_wait(timeout, receivers)
                        head = self._heads[i]
                n = len(data)
                buf[head + _PAYLOAD : head + _PAYLOAD + n] = data
                self._words[(head + 4) >> 2] = n
                # The state goes last: a sender killed before this line leaves no message.
                buf[head] = _FULL
                full = True
                _unlock(self._claims[i])
                # A sender killed here leaves a full message without its
                # token: the receiver finds it when its wait times out (_wait).
                _post(self._filled)
            except BaseException:
                # In a loop, written out here, signals blocked (see
                # _let_go_shared): a second handler's exception at the call's
                # start, or in it, would leave the claim held, and the box
                # stuck for good.
                held: BaseException | None = None
                while True:
                    try:
                        _posix.with_signals_blocked(_ASYNC, partial(self._abandon, full))
                        break
                    except BaseException as again:
                        held = again
                if held is not None:
                    raise held  # noqa: B904 (the first is its __context__)
                raise
        finally:
            del use.calls[-1]
            if use.closed:
                use.left()

    def _abandon(self, full: bool) -> None:
        """After an exception in :meth:`send` (or in the receiver's look at a
        claimed slot, :meth:`_sender_died`): give back the claim mutex this
        thread holds, if any, leaving its slot as a killed sender's would be
        (which the receiver steps over), and wake the receiver for it.

        Which slot is not known: the exception may have come just after a
        lock call returned, anywhere in the claim. So look for the claim
        whose holder is this thread; a sender holds at most one, and so does
        the receiver. ``full``: the message was marked full, so its
        ``filled`` token may be missing.
        """
        tid = threading.get_native_id()
        # Each slot's claim mutex starts with its futex word: its holder's
        # thread id, and flag bits above FUTEX_TID_MASK. One strided read.
        words = self._words[self._first_slot >> 2 :: self._stride >> 2].tolist()
        mask = _pthread.FUTEX_TID_MASK
        for i, word in enumerate(words):
            if word & mask != tid:
                continue
            state = _pthread.MutexState(self._claims[i])
            if not state.depth():
                continue
            head = self._heads[i]
            if self._buf[head] == _CLAIMED and self._cursor[0] == self._quads[(head + 8) >> 3]:
                # Claimed but the cursor never moved on: no one else can have
                # seen it (moving the cursor takes this lock), so undo it.
                self._buf[head] = _EMPTY
            state.give_back(0)
            # Claimed and published: left claimed with its lock free, which the
            # receiver takes for a dead sender's slot and steps over; full: the
            # message's token. Either way, wake the receiver (a surplus is a nudge).
            if self._buf[head] in (_CLAIMED, _FULL):
                _post(self._filled)
            return
        if full:  # unlocked, perhaps not posted yet: a second token is only a nudge
            _post(self._filled)

    def _claimed(self, seq: int, i: int) -> bool:
        """Holding slot ``i``'s claim mutex: take the slot for message ``seq``
        if the cursor is still there and the slot empty; else unlock."""
        buf, head = self._buf, self._heads[i]
        if buf[head] == _EMPTY and self._cursor[0] == seq:
            self._mark_claimed(seq, head)
            return True
        _unlock(self._claims[i])
        return False

    def _mark_claimed(self, seq: int, head: int) -> None:
        buf = self._buf
        self._quads[(head + 8) >> 3] = seq
        buf[head] = _CLAIMED
        self._cursor[0] = seq + 1

    def _claim_or_wait(
        self, timeout: float | None, receivers: tuple[ProcessId[Any], ...] | None
    ) -> int:
        """Claim the cursor's slot, waiting while the box is full (and one
        of ``receivers``, if given, runs)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        looks = 0
        told: WaitTold | None = None
        try:
            while (i := self._claim_slot()) is None:
                # Full: wait for the receiver to wake us, or look again soon.
                left = _LOOK_AGAIN if deadline is None else deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{self!r} stayed full for {timeout} s")
                if _context.in_master_loop():  # first: the message costs more than a wait
                    _context.refuse_wait_in_master(f"{self!r}.send() to a full box")
                if deadline is None:  # (made only once the box has been full a while)
                    if told is None:
                        told = WaitTold(lambda: f"room in {self!r}, which is full")
                    told.look()
                woken = _pthread.sem_wait(self._free, min(left, _LOOK_AGAIN))
                if self._use.closed:
                    raise closed_during(self, "send()")
                if not woken and self._receivers_ended():
                    if self.many_receivers:
                        raise BrokenPipeError(
                            errno.EPIPE,
                            f"every receiving handle of {self!r} has been closed, or its process "
                            "has ended, and the box is full: nothing will take this message. Keep "
                            "a receiving handle open while messages may come",
                        )
                    raise BrokenPipeError(
                        errno.EPIPE,
                        f"the receiver of {self!r} (os pid {self.owner_pid}) has ended, and "
                        "the box is full: nothing will take this message. Have the receiver take "
                        "its messages before it ends",
                    )
                looks += 1
                if receivers is not None and not looks % _ASK_EVERY:
                    what = f"{self!r}.send(while_alive=...)"
                    if len(_client.ended([pid.n for pid in receivers], what)) == len(receivers):
                        raise receivers_ended(what, receivers)
            return i
        finally:
            if told is not None:
                told.ended()

    def _receivers_ended(self) -> bool:
        """For a sender of a full box: whether no receiver will ever take a
        message. The creator, for a box of one receiver; for one of many,
        the seats: once a receiving handle has taken one, a box whose seats
        are all free or held by ended processes. (Before, the receivers may
        not have opened it yet.)"""
        if not self.many_receivers:
            return _pthread.ended(self.owner_pid)
        if not self._recv[_SEATED]:
            return False
        return all(not pid or _pthread.ended(pid) for pid in self._seats.tolist())

    def _claim_slot(self) -> int | None:
        """Claim the cursor's slot; None if the box is full."""
        buf, slots = self._buf, self.slots
        for tries in range(_CLAIM_TRIES):
            seq: int = self._cursor[0]
            i = seq % slots
            state = buf[self._heads[i]]
            if state in (_FULL, _TAKEN):
                if self._cursor[0] == seq:
                    return None  # the receiver has not taken the message a box ago
                continue
            rc = _trylock(self._claims[i])
            if rc == errno.EOWNERDEAD:
                _pthread.mutex_consistent(self._claims[i])
                if self._claimed_after_death(seq, i):
                    return i
                return None
            if rc == 0:
                if self._claimed(seq, i):
                    return i
            elif tries > 3:
                os.sched_yield()  # another sender is in the middle of claiming it
        return None

    def _claimed_after_death(self, seq: int, i: int) -> bool:
        """Holding slot ``i``'s claim mutex, whose last holder died: take the
        slot for message ``seq`` if that sender died before the cursor moved on."""
        buf, head = self._buf, self._heads[i]
        if self._cursor[0] == seq and (
            buf[head] == _EMPTY or (buf[head] == _CLAIMED and self._quads[(head + 8) >> 3] == seq)
        ):
            self._mark_claimed(seq, head)
            return True
        # It died a box ago, before the receiver came by: the box is full
        # until the receiver steps over that slot.
        _unlock(self._claims[i])
        self._nudge_receiver()
        return False

    def _nudge_receiver(self) -> None:
        """Wake the receiver, so that it steps over a dead sender's slot at its
        window start: it may be waiting for a message, and none can come."""
        _post(self._filled)

    def _not_the_receiver(self, what: str, other_process: str) -> ContextError:
        """The error for a receiver's call (``what`` it does) through a
        handle that may not make it; ``other_process`` ends the one for a
        process that did not create the box."""
        if self.many_receivers and self._receiver:  # a receiving handle that a fork copied
            return ContextError(
                f"this receiving handle on {self!r} is os pid {self._receiver}'s, and a fork "
                f"copied it into os pid {_pid[0]}: open one here with Mailbox.open(res_id, T, "
                f"receive=True) to {what}"
            )
        if self.many_receivers:
            return ContextError(
                f"this handle on {self!r} was opened to send: Mailbox.open(res_id, T, "
                f"receive=True) gives one that can {what}, in any process"
            )
        many = (
            " (a box that several processes receive from is created with "
            "Mailbox.create(T, many_receivers=True), and opened with "
            "Mailbox.open(res_id, T, receive=True))"
        )
        if _pid[0] != self.owner_pid:
            return ContextError(
                f"only the process that created {self!r} (os pid {self.owner_pid}) can "
                f"{what}; this is os pid {_pid[0]}{other_process}{many}"
            )
        return ContextError(
            f"{self!r} was opened with Mailbox.open(), which gives a sender's handle, in the "
            f"box's creator too, and only the handle that Mailbox.create() gave can {what}: "
            "a second receiving handle would take messages out of order, or twice. Use the "
            f"created handle (its threads may share it), and keep it until done{many}"
        )

    def _open_to_receive(self, res_id: ResId) -> None:
        """For ``open(receive=True)``: make this handle a receiving one, seated."""
        if not self.many_receivers:
            raise ContextError(
                f"Mailbox.open({res_id!r}, receive=True) needs a box created with "
                "many_receivers=True, and this one has a single receiver, the handle that "
                "Mailbox.create() gave: receive through that one, or create the box with "
                "Mailbox.create(T, many_receivers=True)"
            )
        self._receiver = _pid[0]
        try:  # a seat, under the receive mutex (no other thread has this handle yet)
            self._lock_shared(None)
            self._sit()
            _unlock(self._shared)
        except BaseException:
            held: BaseException | None = None
            while True:  # see _let_go_shared
                try:
                    _posix.with_signals_blocked(_ASYNC, self._let_go_shared)
                    break
                except BaseException as again:
                    held = again
            if held is not None:
                raise held  # noqa: B904 (the first is its __context__)
            raise

    def _sit(self) -> None:
        """Holding the receive mutex: take a free seat (one held by an ended
        process counts as free). Senders of a full box wait while some
        seat's process lives."""
        seats, me = self._seats, _pid[0]
        for k, pid in enumerate(seats.tolist()):
            if not pid or (pid != me and _pthread.ended(pid)):
                seats[k] = me
                self._seat = k  # no call between: see _unmap
                self._unseated = False
                self._recv[_SEATED] = 1
                return
        raise ValueError(
            f"{self!r} has {SEATS:,} receiving handles open, the most it takes: close one (or "
            "let its process end) before opening another with receive=True"
        )

    def _lock_shared(self, deadline: float | None) -> None:
        """Take the receive mutex of a box of many receivers, waiting until
        ``deadline`` (a receive's). Its holder may have died anywhere in a
        take: see the module's docstring for what that leaves."""
        addr = self._shared
        rc = _trylock(addr)
        if rc == errno.EBUSY:  # another receiver is taking one: microseconds, unless stopped
            in_master = _context.in_master_loop()
            if deadline is None and in_master:
                _context.refuse_wait_in_master(
                    f"{self!r}.receive(), whose receive mutex another receiver holds,"
                )
            # A receive whose time is up waits a little all the same: its
            # last look must not fail for a take of a few microseconds.
            if deadline is not None and not in_master:
                deadline = max(deadline, time.monotonic() + _MUTEX_GRACE)
            rc = _pthread.lock_in_slices(addr, deadline, self._check_open)
        if rc == errno.EOWNERDEAD:
            _pthread.mutex_consistent(addr)
        elif rc == errno.ETIMEDOUT and _context.in_master_loop():
            raise TimeoutError(
                f"another receiver of {self!r} was taking a message, and the master does "
                "not wait for it"
            )
        elif rc == errno.ETIMEDOUT:
            raise TimeoutError(
                f"another receiver of {self!r} held the box's receive mutex for the whole "
                "timeout: a receiver that is stopped (SIGSTOP, a debugger) in the middle of a "
                "take keeps the others waiting"
            )
        elif rc != 0:
            _pthread.locked(rc, addr)  # raises

    def _check_open(self) -> None:
        if self._use.closed:
            raise closed_during(self, "receive()")

    def _let_go_shared(self) -> None:
        """After an exception: give back the receive mutex if this thread
        holds it (the exception, a signal handler's, may have come just as
        a lock call returned).

        Each except block that calls it (or :meth:`_abandon`) does so with
        async signals blocked, in a loop written out there, through further
        handlers' exceptions, the last raised, as ShmMutex.lock does: a
        call would let one in at its start, before any try of its own, and
        a handler raising faster than a give-back of Python steps would
        keep it from ever ending, holding the mutex the while."""
        self._shared_state.give_back(0)

    def receive(
        self,
        timeout: float | None = None,
        *,
        while_alive: ProcessId[Any] | Iterable[ProcessId[Any]] | None = None,
    ) -> T:
        """Take the next message, waiting for one up to ``timeout`` seconds.

        With ``while_alive`` (a ProcessId, or several), it waits only while
        one of those processes runs: once every one of them has ended (its
        function returned or raised, or it died) and the box holds no
        message, it raises SendersEnded, where a plain receive would wait
        for ever for a sender that is gone. What they sent before they
        ended comes first. The master is asked only once a wait has gone
        on for a few milliseconds, and then at each of its looks (every 2
        to 20 ms): a message that comes at once costs nothing more.

        A signal handler's exception that ends a receive() once it has taken
        a message out of the box (a Ctrl-C, a timeout's) leaves the message
        for the next receive(), which returns it first. A message that does
        not decode as the box's type is raised once (msgspec.ValidationError)
        and is gone; so is one that the type's own validation refuses with
        another error (a validator's, a ``__post_init__``'s): it is decoded
        once more, and an error again means the message is bad, where a
        value means the first error was an interruption (raised, and the
        message kept).

        Raises
        ------
        ContextError
            If this is not the handle that :meth:`create` gave, in the process
            that called it (an :meth:`open`'s sends only, in the creator
            too), or if the box is empty and this is the master, unless
            ``timeout`` is 0.
        TimeoutError
            If no message came within ``timeout`` seconds.
        SendersEnded
            If the box is empty and every process of ``while_alive`` has
            ended (an ``EOFError`` too).
        UnknownProcess
            For an id of ``while_alive`` that no start returned, once the
            master is asked.
        ValueError
            After :meth:`close` (or if another thread closes it while this
            call waits), and for a ``timeout`` below 0 or NaN.
        TypeError
            If ``timeout`` is not a number, or ``while_alive`` not a
            ProcessId or an iterable of them.
        """
        if _pid[0] != self._receiver:
            raise self._not_the_receiver("receive from it", ": senders use send()")
        senders = None if while_alive is None else senders_of(while_alive)
        use = self._use
        use.calls += _ONE  # the mapping stays until this call leaves (see close)
        try:
            if use.closed:  # its C calls would touch unmapped memory
                raise closed_error(self)
            if timeout is not None:
                timeout = _pthread.check_timeout(timeout)
            deadline = None if timeout is None else time.monotonic() + timeout
            if self._pending:  # taken by a receive() that an exception cut short: first
                return self._hand_over(deadline, senders)
            data = self._take(deadline) if self._look_first else None
            if data is None:
                self._look_first = True  # until a message is taken: see __init__
                while True:
                    if _trywait(self._filled):
                        if timeout != 0 and _context.in_master_loop():
                            _context.refuse_wait_in_master(f"{self!r}.receive() on an empty box")
                        self._wake_senders()  # before the box waits: nothing else will
                        data = self._wait(deadline, timeout, senders)
                        if data == b"":  # pending: see _taken
                            return self._hand_over(deadline, senders)
                        if data is not None:  # a message whose token never came
                            break
                    data = self._take(
                        deadline
                    )  # each thread that took one from ``filled`` gets one
                    if data is not None:
                        break
                    # A sender's nudge (see _nudge_receiver), not a message: wait again,
                    # unless it was close()'s, taken by the _trywait above.
                    if use.closed:
                        raise closed_during(self, "receive()")
            self._look_first = False
            # No call since _take returned the message (see _take): here, a
            # signal handler's exception, as the decode returns or in a
            # validator, leaves it pending, for the next receive().
            try:
                return self._decode(data)
            except msgspec.DecodeError:  # ValidationError too: not of this box's type
                raise  # and gone, as it always was: kept, every receive() would raise it
            except BaseException as exc:
                self._pending.append(data)  # first: no call before it
                first = exc
            # Outside the except block: what the second decode raises is not
            # chained to the first.
            self._decode_again(data, first)
            # It returned: another thread raised the message, and this one
            # goes on to the next.
            return self._hand_over(deadline, senders)
        finally:
            del use.calls[-1]
            if use.closed:
                use.left()

    def _hand_over(self, deadline: float | None, senders: tuple[ProcessId[Any], ...] | None) -> T:
        """Return the oldest pending message, decoded, and only then, as the
        very last step, take it off the list.

        From that ``del`` to the caller having the value, Python runs no
        signal handler and switches to no other thread (it does either
        only as a call starts or a C call returns): an exception anywhere
        before leaves the message first for the next receive(). Threads
        receiving at once each return the oldest at the time; one whose
        message another thread returned (or raised) meanwhile returns the
        next, or looks in the box until ``deadline``.
        """
        pending = self._pending
        while True:
            try:
                item = pending[0]
            except IndexError:  # other threads returned them all
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                return self.receive(left, while_alive=senders)
            if isinstance(item, bytes):
                first: BaseException | None = None
                try:
                    value = self._decode(item)
                except msgspec.DecodeError:  # as in receive(): raised, and gone
                    if pending and pending[0] is item:
                        del pending[0]
                        raise
                    continue  # another thread raised this one
                except BaseException as exc:
                    first = exc
                else:  # (for 3.12: see test_backedges)
                    pass
                if first is not None:  # outside the except block, as in receive()
                    self._decode_again(item, first)
                    continue  # another thread raised it
            else:  # decoded already, by a _decode_again that kept it
                value = item[0]
            if pending and pending[0] is item:
                del pending[0]
                return value

    def _decode_again(self, data: bytes, first: BaseException) -> None:
        """Tell a bad message from an interrupted decode, and raise; or
        return, if another thread raised the bad message meanwhile.

        ``data``, pending, raised ``first`` as it was decoded, not a
        DecodeError: the box's type's own validation (a validator, a
        ``__post_init__``, a dec_hook) may raise anything, and so may a
        signal handler during the decode. Kept for good, a bad message
        would make every receive() raise; dropped, an interrupted one
        would be lost. A validation refuses the same message every time,
        so the message is decoded once more, with signals blocked (a
        handler's exception cannot stand for the outcome; but a signal that
        another thread took has its handler run in the main thread all the
        same, and two of one type, in both decodes, would drop the message):

        - it decodes: ``first`` was an interruption, raised; the message
          stays pending, decoded (the next receive() does not decode it
          a third time);
        - it raises an error of ``first``'s type: the message is bad,
          dropped, and that error raised, as a DecodeError is; unless
          another thread receiving judged it too (:meth:`_hand_over`) and
          took it off the pending list first: that thread raises it, and
          this one returns, to go on to the next message;
        - it raises another error: ``first`` was an interruption of a
          bad message, raised; the message stays pending, and the next
          receive() judges it afresh (and raises its error, once).

        It stays pending until then: an exception before the outcome is
        known, or as the block is lifted (a handler's), is raised and
        leaves it there, for the next receive() to judge afresh (or return,
        if it decoded).
        """
        tried: list[tuple[bool, Any]] = []

        def attempt() -> None:
            try:
                tried.append((True, self._decode(data)))
            except BaseException as exc:
                tried.append((False, exc))

        pending = self._pending
        try:
            _posix.with_signals_blocked(_posix.ASYNC_SIGNALS, attempt)
        finally:
            # Decoded: kept so, even if a handler's exception comes as the
            # block is lifted (the signal came during the decode).
            if tried and tried[0][0]:
                for i, item in enumerate(pending):
                    if item is data:
                        pending[i] = (tried[0][1],)
                        break
        decoded, outcome = tried[0]
        if decoded:
            raise first
        if type(outcome) is not type(first):
            raise first
        for i, item in enumerate(pending):
            # No call from the look to the raise: no other thread takes it
            # off in between, and no handler's exception takes its place.
            if item is data:
                del pending[i]
                raise outcome
        # Not there: another thread took it off, to raise it. (Or, if another
        # thread took off an older one as this loop went on, missed: it stays
        # pending, for the next receive() to judge, and raise, once.)

    def _wait(
        self,
        deadline: float | None,
        timeout: float | None,
        senders: tuple[ProcessId[Any], ...] | None,
    ) -> bytes | None:
        """Wait for a ``filled`` token (then None: the caller takes a message),
        in slices; after each slice with none, look for a message anyway, and
        whether the ``senders`` (if given) have all ended. A message taken so
        comes back, or, if the wait was told to the master (see WaitTold), b""
        with the message pending (see _taken).

        A sender killed after it marked its message full but before it posted
        leaves a message without a token: waiting for the token alone, the
        receiver would never see it, and ``slots`` of them would wedge the box.
        Taking a message without its token is safe either way: if its sender
        was only slow, its token comes later and is a nudge (``_take`` finds
        nothing and the caller waits again). The first slice spins first, as
        a plain wait did: a message usually comes within it.

        Senders that have ended have written all they will: the master
        learns of an end after the process's last store (its message, a
        full slot, comes before its exit or its result), so one more look,
        once the master says so, finds any message they left.
        """
        filled, use = self._filled, self._use
        wait = _pthread.sem_wait if self._shared else _pthread.sem_wait_spinning
        piece = _FIRST_SLICE
        told: WaitTold | None = None
        try:
            while True:
                left = None if deadline is None else deadline - time.monotonic()
                last = left is not None and left <= piece
                if wait(filled, left if last else piece):
                    if use.closed:  # close() posted ``filled`` to wake this wait
                        raise closed_during(self, "receive()")
                    return None
                if use.closed:
                    raise closed_during(self, "receive()")
                data = self._take(deadline)  # also steps over a dead sender's claimed slot
                if data is not None:
                    return self._taken(data, told)
                if senders is not None and self._all_ended(senders):
                    data = self._take(deadline)  # what they sent before they ended
                    if data is not None:
                        return self._taken(data, told)
                    raise SendersEnded.of_box(f"{self!r}.receive()", senders)
                if last:
                    raise TimeoutError(f"no message arrived in {self!r} within {timeout} s")
                if deadline is None:  # (made only once it has waited a slice)
                    if told is None:
                        told = WaitTold(lambda: f"a message in {self!r}")
                    told.look()
                wait = _pthread.sem_wait  # spinning again would only cost CPU
                piece = min(2 * piece, _pthread.SLICE)
        finally:
            if told is not None:
                told.ended()

    def _taken(self, data: bytes, told: WaitTold | None) -> bytes:
        """``data``, taken by _wait, for receive() to decode, with no call on
        the way (see _take); or, if the wait was told to the master, b""
        (never an encoding): the message is pending, for receive() to hand
        over, as the tell that the wait has ended is a call, which a signal
        handler's exception may cut short."""
        if told is None or not told.told:
            return data
        self._pending.append(data)  # first: no call before it
        told.ended()
        return b""

    def _all_ended(self, senders: tuple[ProcessId[Any], ...]) -> bool:
        what = f"{self!r}.receive(while_alive=...)"
        return len(_client.ended([pid.n for pid in senders], what)) == len(senders)

    def _take(self, deadline: float | None) -> bytes | None:
        """Take the oldest finished message; None if there is none. With
        many receivers, TimeoutError if another holds the receive mutex
        past ``deadline``.

        Once it is out of its slot, the message is the caller's alone: an
        exception (a signal handler's) before the caller has decoded it
        would lose it. So, from the slot's emptying on, it is in ``taken``
        (no call between: Python runs a handler only as a call starts or a
        C call returns), and an exception puts it in the pending list,
        which the next receive() empties first; and from the return to the
        decode in receive(), which does the same, there is no call.
        (Putting every message in that list, and taking it off as it is
        returned, would cost some 8% of a receive that finds one waiting.)
        """
        buf, heads, slots, recv = self._buf, self._heads, self.slots, self._recv
        taken = None
        try:
            with self._receiving:  # one thread at a time: each takes a message of its own
                shared = self._shared
                if shared:
                    self._lock_shared(deadline)
                    if self._unseated:  # create's handle, as it first receives
                        self._sit()
                # recv[0] is the window start, recv[1] the takes since senders
                # were last woken (_WINDOW, _TAKES: a global's lookup costs here).
                start = recv[0]
                at = start % slots
                head = heads[at]
                # With many receivers, the window start's slot may hold a
                # message a box later, in a hole (see _first_full).
                if buf[head] != _FULL or (shared and self._quads[(head + 8) >> 3] != start):
                    found = self._first_full()
                    if found is None:
                        if shared:
                            _unlock(shared)
                        return None
                    start = recv[0]  # it may have moved the window on
                    at, head = found, heads[found]
                length = self._words[(head + 4) >> 2]
                # A copy: a memoryview or Raw value must not view the slot.
                data = buf[head + _PAYLOAD : head + _PAYLOAD + length].tobytes()
                if at == start % slots:
                    buf[head] = _EMPTY
                    recv[0] = start = start + 1
                    taken = data
                    if buf[heads[start % slots]] == _TAKEN:
                        self._advance()
                else:
                    buf[head] = _TAKEN  # out of order: emptied when the window start gets here
                    taken = data
                takes = recv[1] + 1
                if takes >= self._wake_every:
                    takes = 0
                    self._wake_senders()
                recv[1] = takes
                if shared:
                    _unlock(shared)
            return data
        except BaseException:
            if taken is not None:
                self._pending.append(taken)  # first: no call before it
            held: BaseException | None = None
            while self._shared:  # see _let_go_shared
                try:
                    _posix.with_signals_blocked(_ASYNC, self._let_go_shared)
                    break
                except BaseException as again:
                    held = again
            if held is not None:
                raise held  # noqa: B904 (the first is its __context__)
            raise

    def _first_full(self) -> int | None:
        """The slot of the oldest full message, when the window start's slot
        is not one: it is still being written, or its sender died."""
        buf, heads, slots, recv = self._buf, self._heads, self.slots, self._recv
        start = recv[_WINDOW]
        if self._shared and self._hole(start):
            recv[_WINDOW] = start = start + 1
            self._advance()
            start = recv[_WINDOW]
        at_start = buf[heads[start % slots]]
        # Taken: a signal handler's exception cut short a move of the window
        # start over taken slots (or came as a dead sender's slot was marked):
        # it moves on now, or it would stay there, and the box fill up for good.
        if at_start == _TAKEN or (at_start == _CLAIMED and self._sender_died(start % slots)):
            self._advance()
            start = recv[_WINDOW]
            if buf[heads[start % slots]] == _FULL:
                return start % slots
        end = self._cursor[0]
        # Reading in sequence order, then again up to the one found: a sender
        # that finished a message there after our first look cannot have
        # finished a later one before it.
        found = None
        for seq in range(start, end):
            if buf[heads[seq % slots]] == _FULL:
                found = seq
                break
        if found is None:
            return None
        for seq in range(start, found):
            if buf[heads[seq % slots]] == _FULL:
                return seq % slots
        return found % slots

    def _sender_died(self, i: int) -> bool:
        """Whether slot ``i``, claimed, was claimed by a sender that died. If
        so, it holds no message: it becomes taken, for the window start to
        step over, or empty again if the cursor had not moved on from it."""
        buf, head, claim = self._buf, self._heads[i], self._claims[i]
        # As in send(), an exception (a signal handler's) can come just after
        # the lock was taken, before Python has the result: left held by this
        # thread, the slot would be stuck for good, and the release of the box
        # would unmap a mutex on this thread's robust list (SIGSEGV).
        try:
            rc = _trylock(claim)
            if rc == errno.EBUSY:
                return False
            if rc == errno.EOWNERDEAD:
                _pthread.mutex_consistent(claim)
            elif rc != 0:
                _pthread.locked(rc, claim)  # raises
            died = buf[head] == _CLAIMED
            if died:
                seq = self._quads[(head + 8) >> 3]
                buf[head] = _TAKEN if self._cursor[0] > seq else _EMPTY
            _unlock(claim)
        except BaseException:
            held: BaseException | None = None
            while True:  # as in send()
                try:
                    _posix.with_signals_blocked(_ASYNC, partial(self._abandon, False))
                    break
                except BaseException as again:
                    held = again
            if held is not None:
                raise held  # noqa: B904 (the first is its __context__)
            raise
        return died

    def _hole(self, start: int) -> bool:
        """Whether the window start's slot, of a box of many receivers, is
        a hole: a receiver killed between emptying it and moving the window
        on left it empty, and a sender may have claimed it since, for a
        message a box later. Taken for the window start's message, that
        one would move the window on by one, and the hole with it, for
        good (the box a slot short, and out of order).

        The cursor is read first: a sender marks a slot claimed before it
        moves the cursor past it, and gives one back (empty) only before,
        so an empty slot the cursor has passed was emptied by a receiver.
        A claimed or full slot's sequence number was written before its
        state, which is read first."""
        head = self._heads[start % self.slots]
        passed = self._cursor[0] > start
        state = self._buf[head]
        if state == _EMPTY:
            return passed
        return state in (_CLAIMED, _FULL) and self._quads[(head + 8) >> 3] != start

    def _advance(self) -> None:
        """Move the window start over slots taken out of order, emptying them."""
        buf, heads, slots, recv = self._buf, self._heads, self.slots, self._recv
        while buf[heads[recv[_WINDOW] % slots]] == _TAKEN:
            buf[heads[recv[_WINDOW] % slots]] = _EMPTY
            recv[_WINDOW] += 1

    def _wake_senders(self) -> None:
        """Post ``free`` for senders that wait for room, if it is not already up.

        The receiver does it every half box and before it waits; a sender
        that waits also looks again on its own every ``_LOOK_AGAIN`` seconds.
        The value is bounded by the slots, so senders of a full box never spin.
        """
        if _pthread.sem_value(self._free, self._free_value) < self.slots:
            _post(self._free)

    def reclaim(self) -> int:
        """Give back the slots of senders that died in the middle of a send, now.

        The receiver steps over such a slot on its own when it comes to it;
        this is for a receiver that wants its full capacity back at once.
        Returns how many.
        """
        if _pid[0] != self._receiver:
            raise self._not_the_receiver("reclaim its slots", "")
        if not self._use.enter():
            raise closed_error(self)
        try:
            with self._receiving:
                shared = self._shared
                if shared:
                    self._lock_shared(None)
                freed = sum(
                    self._sender_died(i)
                    for i in range(self.slots)
                    if self._buf[self._heads[i]] == _CLAIMED
                )
                self._advance()
                if shared:
                    _unlock(shared)
            if freed:
                self._wake_senders()
            return freed
        except BaseException:
            held: BaseException | None = None
            while self._shared:  # see _let_go_shared
                try:
                    _posix.with_signals_blocked(_ASYNC, self._let_go_shared)
                    break
                except BaseException as again:
                    held = again
            if held is not None:
                raise held  # noqa: B904 (the first is its __context__)
            raise
        finally:
            self._use.leave()

    def qsize(self) -> int:
        """How many messages wait in the box to be received.

        Approximate, as ``multiprocessing.Queue.qsize()`` is: senders and the
        receiver change it at any time, and a message still being written
        is not counted yet. Any process that opened the box may ask. In the
        receiver, it counts too the messages that a receive() cut short by a
        signal handler's exception had taken: the next receive() returns them.
        """
        if not self._use.enter():
            raise closed_error(self)
        try:
            first = self._first_slot + _pthread.SLOT  # slot 0's state byte
            states = self._buf[first : first + self.slots * self._stride : self._stride]
            # A sender's handle has none pending: only a receive() takes any.
            return states.tobytes().count(_FULL) + len(self._pending)
        finally:
            self._use.leave()

    def close(self) -> None:
        """Unmap it in this process (idempotent).

        A call that another thread is making on it ends with ValueError (a
        waiting receive at once, a waiting send within a millisecond), and
        the memory is unmapped when the last of them has left.
        """
        # The pending messages (taken by a receive() that an exception cut
        # short) are lost with it, as those still in the box are: no
        # receive() on this handle returns them now. A receive() that took
        # one (from the box or the list) as the close comes still returns
        # it: nothing after the take looks at ``closed``, and the mapping
        # stays until the call has left (it decodes a copy anyway).
        self._use.close(self._wake_receivers)

    def _wake_receivers(self, others: int) -> None:
        """For close(): wake this process's threads that wait in receive(), on
        ``filled`` without a deadline. A post too many is a nudge, and harmless."""
        if _pid[0] == self._receiver:
            for _ in range(others):
                _post(self._filled)

    def _unmap(self) -> None:
        seat = self._seat
        if seat is not None and _pid[0] == self._receiver:  # not a fork's copy
            self._seats[seat] = 0
        self._anchor = None
        for view in (self._cursor, self._words, self._quads, self._seats):
            view.release()
        if isinstance(self._recv, memoryview):
            self._recv.release()
        self._segment.close()  # also releases self._buf, the same view

    def release(self) -> None:
        """Unmap it and stop using it. The process stops using the box when
        its last handle on it is released (another open of it stays usable),
        and the box goes when its last user does. Harmless to repeat."""
        self.close()
        self._segment._give_back()  # a mapping that calls still use stays until they leave

    def __enter__(self) -> Mailbox[T]:
        if self._use.closed:  # as its calls: the body's first one would raise
            raise closed_error(self)
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Leaving ``with`` releases it, as it does a ShmSegment or a Buffer."""
        self.release()


class WaitTold:
    """A send's or a receive's wait with no timeout, told to the master once
    it has lasted WAIT_TOLD_SECONDS, and told again as it ends (see
    _client.tell_waiting): a process that waits in a box for ever, beside
    processes that wait in the master, is part of the stall its notice
    names, and status shows what it waits for. ``what`` says it, made only
    then (a box's repr is a few microseconds)."""

    __slots__ = ("began", "told", "what")

    def __init__(self, what: Callable[[], str]) -> None:
        self.what = what
        self.began: float | None = None
        self.told = False

    def look(self) -> None:
        """Called before each slice of the wait after its first."""
        now = time.monotonic()
        if self.began is None:
            self.began = now
        elif not self.told and now - self.began >= WAIT_TOLD_SECONDS:
            self.told = True  # first: an exception in the send never tells twice
            _client.tell_waiting(self.what())

    def ended(self) -> None:
        if self.told:
            self.told = False
            _client.tell_waiting("")
