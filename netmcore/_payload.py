"""How encoded values travel: inline in a message, or through POSIX shared memory.

Messages on the control sockets stay small. A value over ``INLINE_MAX`` bytes is
written once into a shm object by its sender; only the object's name goes
through the master, which never holds a copy of the data. The receiver maps the
object and decodes straight from the mapping.

A fresh object costs as much again as the copy into it: the kernel allocates
and zeroes each page on the first write. So the receiver keeps the object
(its last ``RECYCLE_MAX``, besides the one it reads, up to ``RECYCLE_BYTES``
of them) and, once nothing views
its mapping any more, writes its own next large value into it, if the value
is not far smaller (see :func:`_reusable`): a start's argument comes back as
the process's result, and the next start's argument goes out in the same
warm pages. A process unlinks what it kept when it ends
(:func:`forget_recycled`).

A crashed process unlinks nothing: the master unlinks the objects of the
results it handed that process. After any end, crashed or not, it unlinks
those the process made and never sent on (a daemon thread's, cut short by
the exit), which it finds by the process's tag in their names
(:func:`tag_of`; see Master._on_exit). Every such object is named under the
run's private prefix, so that the end of the run sweeps the rest.
"""

from __future__ import annotations

import mmap
import os
import threading
from collections.abc import Callable, Collection, Sequence

import msgspec

from . import _ipc

INLINE_MAX = 64 * 1024
# Objects a process keeps for its next values, besides the one it reads: so
# three at rest (see view), and more while its joins keep some for their
# callers (see kept_elsewhere). Fewer when they are large: those besides the
# one it read last hold at most RECYCLE_BYTES, so that a process which has
# read a few large values does not keep their memory taken several times over.
RECYCLE_MAX = 2
RECYCLE_BYTES = 256 << 20
# How much larger than a value an object that takes it may be: the object's
# pages past the value stay taken while it circulates. At most twice the
# value, or this much more.
REUSE_SLACK = 1 << 20


class ShmRef(msgspec.Struct, frozen=True, array_like=True):
    """A value in the first ``size`` bytes of a shm object, read once."""

    name: str
    size: int


Payload = bytes | ShmRef


class _Received:
    """An object this process read a value from: name, whole size, its
    mapping; ``going`` once it is to be unlinked (see _let_go)."""

    def __init__(self, name: str, capacity: int, mapping: mmap.mmap) -> None:
        self.name, self.capacity, self.mapping = name, capacity, mapping
        self.going = False


_received: list[_Received] = []  # oldest first
_lock = threading.Lock()
# A forked child must not write into its parent's objects.
os.register_at_fork(after_in_child=_received.clear)


def tag_of(n: int) -> str:
    """What follows the run's prefix in the names of the objects that
    process ``n`` makes: by it the master finds those that a process which
    has ended made and never sent on (see Master._sweep_unsent)."""
    return f"{n}."


def maker_of(name: str, prefix: str) -> int | None:
    """The process whose tag (see :func:`tag_of`) is in ``name``, an object
    under ``prefix``; None for another object of the run."""
    head, dot, _ = name[len(prefix) :].partition(".")
    return int(head) if dot and head.isdigit() else None


def pack(parts: Sequence[bytes | memoryview], prefix: str, process: int | None) -> Payload:
    """The bytes of ``parts`` if they are small, else a reference to a shm
    object that holds them one after the other: one this process received,
    that nothing views any more and that is not far larger, or a new one,
    named under ``prefix`` with the tag of ``process`` (None: the master,
    whose objects the end of the run sweeps)."""
    size = sum(len(p) for p in parts)
    if size <= INLINE_MAX:
        return b"".join(parts)
    name = _reusable(size)
    if name is None:
        name = _ipc.random_name(prefix if process is None else prefix + tag_of(process))
        _ipc.create_with_data(name, parts, size)
    else:
        try:
            _ipc.write_existing(name, parts)
        except BaseException:
            _ipc.unlink(name)
            raise
    return ShmRef(name, size)


# The names of objects a join of this process keeps for its caller (set by
# _client: see _client._interrupted): never taken for reuse, nor unlinked,
# until their caller has them.
kept_elsewhere: Callable[[], Collection[str]] = frozenset


def _reusable(size: int) -> str | None:
    with _lock:
        # Read under the lock: a join keeps its outcome before it views the
        # result, which lists its object under the lock (see
        # _client.join_outcome). Read before, the names could miss a result
        # that another thread's join kept meanwhile, listed by then, which
        # this would take for reuse: that join, made again, read this value.
        kept = kept_elsewhere()
        for received in tuple(_received):
            if received.going:  # left by an exception: see _let_go
                _let_go(received)
                continue
            if received.capacity < size or received.name in kept:
                continue
            try:
                received.mapping.close()
            except BufferError:  # a value still views it
                continue
            if received.capacity - size > max(size, REUSE_SLACK):
                # Far larger than the value: its pages past it would stay
                # taken as long as it circulates (200 MB of tmpfs for 100 KB
                # values). It goes, and a new object of the value's size is
                # made.
                _let_go(received)
                continue
            # (An exception as the lock is let go loses the name: the master
            # unlinks the object as this process ends, its argument's or a
            # result handed to it; see Master._on_exit.)
            _received.remove(received)
            return received.name
    return None


def _let_go(received: _Received) -> None:
    """Unlink the object of ``received``, then forget it (under the lock).

    In this order, each step safe to repeat: a signal handler's exception
    anywhere leaves it listed, for the next :func:`_reusable` or rotation
    (see :func:`view`) to take again, or to finish once it is marked (an
    unlink again does nothing). Forgotten first, it stayed in /dev/shm,
    with nothing to unlink it until the process ended. The mark, made
    before the unlink with no call in between, keeps it from reuse
    meanwhile: its object is gone, or going."""
    received.going = True
    _ipc.unlink(received.name)
    _received.remove(received)


def view(payload: Payload) -> bytes | memoryview:
    """The payload's bytes.

    A shm object's mapping stays valid for as long as the returned view is
    referenced; after that, :func:`pack` may write into the object again.
    """
    if isinstance(payload, bytes):
        return payload
    with _lock:
        # Viewed again (a join that an exception cut short, repeated): the
        # mapping it has, not a second one of the same object, which pack
        # could take for reuse while this one is read.
        for received in _received:
            if received.name == payload.name:
                return memoryview(received.mapping)[: payload.size]
    mapping, capacity = _ipc.map_existing(payload.name, payload.size)
    newest = _Received(payload.name, capacity, mapping)
    with _lock:
        # The view is made under the lock: pack, in another thread, takes an
        # object for reuse when no view of its mapping is left.
        data = memoryview(mapping)
        _received.append(newest)
    if len(_received) > 1:
        with _lock:
            kept = kept_elsewhere()  # under the lock: see _reusable
            going = [r for r in _received if r.going]  # left by an exception: see _let_go
            others = [r for r in _received if not r.going and r.name not in kept]
            for received in going + _rotated_out(others, newest):
                # Its mapping lives on with the views of it, if there are any.
                _let_go(received)
    return data


def _rotated_out(others: list[_Received], newest: _Received) -> list[_Received]:
    """Of ``others`` (oldest first), those not to keep for reuse: all but
    the last ``RECYCLE_MAX``, and of these, the oldest ones past
    ``RECYCLE_BYTES`` in all, not counting ``newest`` (which stays)."""
    stay = others[-RECYCLE_MAX:]
    held = 0
    for i in reversed(range(len(stay))):
        if stay[i] is not newest:
            held += stay[i].capacity
            if held > RECYCLE_BYTES:
                stay = stay[i + 1 :]
                break
    return [r for r in others if r not in stay]


def is_received(name: str) -> bool:
    """Whether this process has mapped the object ``name`` (and keeps it for reuse)."""
    with _lock:
        return any(received.name == name for received in _received)


def forget_recycled() -> None:
    """Unlink the objects this process kept for reuse (when it ends)."""
    with _lock:
        for received in _received:
            _ipc.unlink(received.name)
        _received.clear()


def discard(payload: Payload) -> None:
    """Free a payload nobody will read (a no-op if it is gone already)."""
    if isinstance(payload, ShmRef):
        _ipc.unlink(payload.name)
