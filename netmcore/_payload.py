"""How encoded values travel: inline in a message, or through POSIX shared memory.

Messages on the control sockets stay small. A value over ``INLINE_MAX`` bytes is
written once into a fresh shm object by its sender; only the object's name goes
through the master, which never holds a copy of the data. The receiver maps the
object, unlinks it at once, and decodes straight from the mapping.

Every such object is named under the run's private prefix, so the master can
sweep whatever a crashed process left in flight when the run ends.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from . import _ipc

INLINE_MAX = 64 * 1024


class ShmRef(msgspec.Struct, frozen=True, array_like=True):
    """A value that waits in a shm object to be read (and unlinked) once."""

    name: str
    size: int


Payload = bytes | ShmRef


def pack(parts: Sequence[bytes | memoryview], prefix: str) -> Payload:
    """The bytes of ``parts`` if they are small, else a reference to a new shm
    object that holds them one after the other."""
    size = sum(len(p) for p in parts)
    if size <= INLINE_MAX:
        return b"".join(parts)
    name = _ipc.random_name(prefix)
    _ipc.create_with_data(name, parts, size)
    return ShmRef(name, size)


def view(payload: Payload) -> bytes | memoryview:
    """The payload's bytes, consuming its shm object if it has one.

    A shm object is unlinked at once; its mapping stays valid for as long as the
    returned view is referenced, and is unmapped with it.
    """
    if isinstance(payload, bytes):
        return payload
    mapping = _ipc.map_existing(payload.name)
    _ipc.unlink(payload.name)
    return memoryview(mapping)


def discard(payload: Payload) -> None:
    """Free a payload nobody will read (a no-op if it was read already)."""
    if isinstance(payload, ShmRef):
        _ipc.unlink(payload.name)
