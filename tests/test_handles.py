"""Handles on shared objects: ``with`` after a close, a failed open, and an
open that a signal handler's release of the process's last handle crosses.

Each test here failed before its fix; the docstring of each says how.
Outside ``run`` the test process is the master, so the single-process cases
are tested there directly; the others run as the first process of a run, and
synchronise through pipes made before ``run`` (every worker inherits them).
"""

from __future__ import annotations

import contextlib
import os
import re
import struct
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from scenario import (
    joined,
    outcome_text,
    run_scenario,
    run_sigusr1_handler_here,
    sigusr1_handled_by,
)

import netmcore
from netmcore import (
    Buffer,
    Mailbox,
    ResId,
    ShmMutex,
    _buffer,
    _mailbox,
    _resource_api,
)

SHM_DIR = "/dev/shm"


def shm_path(name: str) -> str:
    return os.path.join(SHM_DIR, name[1:])


# --------------------------------------------------------------------------
# with on a closed handle: ValueError in __enter__, as ShmMutex gives
# (Mailbox, ShmSegment, PosixSemaphore and Buffer returned the handle, and the
# first call in the body raised, or a body that made none ran on a dead handle)
# --------------------------------------------------------------------------

# Each kind: make one; the ValueError a call on it gives once closed.
CLOSED = {
    "Mailbox": (
        lambda: Mailbox.create(int, slots=2, slot_size=16),
        r"Mailbox\(ResId\(\d+\), int, 2x16\) is closed or released in this "
        r"process: open it again by its res_id to use it",
    ),
    "ShmSegment": (
        lambda: netmcore.create_shm(8),
        r"ShmSegment\(ResId\(\d+\), '/nmc\.[^']+', size=8, closed\) is closed or released "
        r"in this process: open it again by its res_id to use it",
    ),
    "PosixSemaphore": (
        netmcore.create_sem,
        r"semaphore /nmc\.\S+ is closed in this process: open it again by its res_id "
        r"\(open_sem\) to use it",
    ),
    "Buffer": (
        lambda: Buffer.create(16),
        r"Buffer\(ResId\(\d+\), capacity=16\) is closed or released in this process: open "
        r"it again by its res_id to use it",
    ),
    "ShmMutex": (  # as it was already: the others now say the same
        ShmMutex.create,
        r"ShmMutex\(ResId\(\d+\), normal\) is closed or released in this process: open it "
        r"again by its res_id to use it",
    ),
}


@pytest.mark.parametrize("how", ["close", "release"])
def test_a_closed_segments_buffer_is_the_value_error_that_names_it(
    how: str, master_cleanup: None
) -> None:
    """Before: ``buffer`` was its released memoryview, and its use (its
    ``size`` too) raised CPython's "operation forbidden on released
    memoryview object", which names nothing."""
    make, said = CLOSED["ShmSegment"]
    segment = make()
    try:
        getattr(segment, how)()
        with pytest.raises(ValueError, match=said):
            segment.buffer[0] = 1
        assert segment.size == 8  # still known
    finally:
        segment.release()


@pytest.mark.parametrize(
    ("kind", "how"),
    [
        ("Mailbox", "close"),
        ("Mailbox", "release"),
        ("ShmSegment", "close"),
        ("ShmSegment", "release"),
        ("PosixSemaphore", "close"),
        ("PosixSemaphore", "release"),
        ("Buffer", "release"),  # a Buffer's close() ends the stream, and leaves it usable
        ("ShmMutex", "close"),
        ("ShmMutex", "release"),
    ],
)
def test_with_on_a_closed_handle_is_the_value_error_of_its_calls(
    kind: str, how: str, master_cleanup: None
) -> None:
    """Before: ``with`` gave the closed handle to its body (DID NOT RAISE)."""
    make, said = CLOSED[kind]
    handle = make()
    try:
        getattr(handle, how)()
        body_ran = False
        with pytest.raises(ValueError) as info, handle:
            body_ran = True
        assert not body_ran
        assert re.fullmatch(said, str(info.value)), str(info.value)
    finally:
        handle.release()


def test_with_on_a_buffer_whose_stream_was_closed_still_reads_what_is_left(
    master_cleanup: None,
) -> None:
    """close() ends a Buffer's stream; the handle is not closed: with works."""
    buffer = Buffer.create(16)
    try:
        buffer.write(b"ab")
        buffer.close()
        with buffer:
            assert [buffer.read(), buffer.read()] == [b"ab", b""]
    finally:
        buffer.release()


# --------------------------------------------------------------------------
# A failed open gives back the use it took (a ShmMutex.open or Mailbox.open
# whose object failed to build, after the segment was opened and counted,
# left the process a user of it until the process ended)
# --------------------------------------------------------------------------


def _mutex_too_small(res_id: ResId) -> Any:
    return ShmMutex.open(res_id)


def _mailbox_of_a_torn_length(res_id: ResId) -> Any:
    return Mailbox.open(res_id, int)


def _buffer_too_small(res_id: ResId) -> Any:
    return Buffer.open(res_id)


def _forged(kind: str) -> netmcore.ShmSegment:
    """A shm object that passes ``kind``'s open checks (its mark, its type)
    but that the object cannot be built on: it is too small for it."""
    if kind == "mutex":
        segment = netmcore.create_shm(16)  # a mutex needs 128 bytes
        segment.buffer[:8] = ShmMutex._MARK
    elif kind == "mailbox":
        header = _mailbox._HEADER
        segment = netmcore.create_shm(header.size + 2)  # its words views need a multiple of 4
        fingerprint = bytes.fromhex(netmcore.EncapType(int).fingerprint)
        header.pack_into(
            segment.buffer, 0, _mailbox._MAGIC, 1, 16, os.getpid(), fingerprint, 0, 0, 0
        )
    else:
        segment = netmcore.create_shm(16)  # a Buffer's state is at 320
        segment.buffer[:8] = _buffer._MARK
    return segment


FAILED_OPENS: dict[str, Callable[[ResId], Any]] = {
    "mutex": _mutex_too_small,
    "mailbox": _mailbox_of_a_torn_length,
    "buffer": _buffer_too_small,
}
# What each build raises: ctypes's, memoryview's and struct's own errors.
BUILD_ERRORS = {"mutex": ValueError, "mailbox": TypeError, "buffer": struct.error}


@netmcore.process
def opens_a_forged_object(arg: tuple[str, ResId, int, int]) -> str:
    """Open the forged object as ``kind``, say so, and live on until told to go."""
    kind, res_id, said_w, go_r = arg
    said = outcome_text(lambda: FAILED_OPENS[kind](res_id))
    os.write(said_w, b"x")
    os.read(go_r, 1)
    return said


@netmcore.process
def failed_build_scenario(arg: tuple[str, int, int, int, int]) -> list[Any]:
    kind, said_r, said_w, go_r, go_w = arg
    segment = _forged(kind)
    path = shm_path(segment.name)
    pid = opens_a_forged_object.start((kind, segment.res_id, said_w, go_r))
    try:
        assert os.read(said_r, 1) == b"x"
        segment.release()  # the last user, unless the failed open kept its caller one
        gone = not os.path.exists(path)
    finally:
        os.write(go_w, b"x")
    return [gone, joined(opens_a_forged_object, pid)]


@pytest.mark.parametrize("kind", sorted(FAILED_OPENS))
def test_an_open_that_fails_to_build_its_object_gives_back_its_use(kind: str, pipes: Any) -> None:
    """Before: the object stayed after its creator's release, the failed
    opener (alive) still one of its users."""
    gone, said = run_scenario(failed_build_scenario, (kind, *pipes(), *pipes()))
    assert not said.startswith("returned"), said
    assert gone, f"a failed open kept its caller a user of the object ({said})"


@pytest.mark.parametrize("kind", sorted(FAILED_OPENS))
def test_an_open_that_fails_to_build_keeps_the_creators_use(
    kind: str, master_cleanup: None
) -> None:
    """The same failure in the object's creator, whose own handle stays."""
    segment = _forged(kind)
    try:
        with pytest.raises(BUILD_ERRORS[kind]):
            FAILED_OPENS[kind](segment.res_id)
        assert os.path.exists(shm_path(segment.name))
        netmcore.open_shm(segment.res_id).release()  # the creator's use, intact
        assert os.path.exists(shm_path(segment.name))
    finally:
        segment.release()
    assert not os.path.exists(shm_path(segment.name))


# --------------------------------------------------------------------------
# An open, and the release of the process's last handle on the same object by
# a signal handler in the middle of it (between the open's request to the
# master and its count): the release used to give the object back, and the
# new handle was made on an object destroyed under it
# --------------------------------------------------------------------------


class _Released:
    """A SIGUSR1 handler that releases ``handle`` (the process's last one on
    its object), and a patch of ``_resource_api._get`` that has it run just
    after the master has answered an open, as a signal could."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle
        self.ran = False

    def handler(self, _signum: int, _frame: Any) -> None:
        if not self.ran:
            self.ran = True
            self.handle.release()

    def get(self, real: Callable[..., Any]) -> Callable[..., Any]:
        def get_then_signal(*args: Any) -> Any:
            got = real(*args)
            run_sigusr1_handler_here()  # its handler runs as this call returns
            return got

        return get_then_signal


@pytest.fixture
def released_in_open(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[Any], _Released]]:
    """Install, for a handle, the handler and the patch of :class:`_Released`."""
    with contextlib.ExitStack() as handlers:

        def install(handle: Any) -> _Released:
            released = _Released(handle)
            handlers.enter_context(sigusr1_handled_by(released.handler))
            monkeypatch.setattr(_resource_api, "_get", released.get(_resource_api._get))
            return released

        yield install


# Each kind: make one, open another by res_id, use it.
REOPEN: dict[str, tuple[Callable[[], Any], Callable[[ResId], Any], Callable[[Any], Any]]] = {
    "ShmSegment": (
        lambda: netmcore.create_shm(8),
        netmcore.open_shm,
        lambda segment: segment.buffer.__setitem__(0, 7),
    ),
    "PosixSemaphore": (netmcore.create_sem, netmcore.open_sem, lambda sem: sem.post()),
    "Mailbox": (
        lambda: Mailbox.create(int, slots=2, slot_size=16),
        lambda res_id: Mailbox.open(res_id, int),
        lambda box: box.send(1, timeout=0),
    ),
    "ShmMutex": (
        ShmMutex.create,
        ShmMutex.open,
        lambda mutex: (mutex.lock(timeout=0), mutex.unlock()),
    ),
}


def _exists(handle: Any) -> bool:
    """Whether the kernel object of ``handle`` is still in /dev/shm."""
    names = [n for n in os.listdir(SHM_DIR) if n.endswith(_name(handle)[1:])]
    return bool(names)


def _name(handle: Any) -> str:
    segment = getattr(handle, "_segment", handle)
    return str(segment.name)


@pytest.mark.parametrize("kind", sorted(REOPEN))
def test_a_release_by_a_signal_handler_during_an_open_leaves_the_object_to_the_open(
    kind: str, released_in_open: Callable[[Any], _Released], master_cleanup: None
) -> None:
    """Before: the handler's release gave back the process's use (its last
    handle), the object was destroyed, and the open failed with NoResource
    (its object gone) or made a handle on nothing."""
    make, reopen, use = REOPEN[kind]
    first = make()
    name = _name(first)
    released = released_in_open(first)
    second = reopen(first.res_id)
    try:
        assert released.ran, "the handler did not run in the open"
        assert _exists(second), "the object was destroyed under the new handle"
        use(second)
        again = reopen(first.res_id)  # the master still lists this process as a user
        again.release()
    finally:
        second.release()
    # Its last handle gone, the process used it no more: nothing is left.
    assert not [n for n in os.listdir(SHM_DIR) if n.endswith(name[1:])]


@netmcore.process
def released_during_open_in_a_worker(kind: str) -> list[str]:
    """As the test above, in a worker: its open and release go to the master."""
    make, reopen, use = REOPEN[kind]
    first = make()
    real_get = _resource_api._get
    released = _Released(first)
    with sigusr1_handled_by(released.handler):
        _resource_api._get = released.get(real_get)  # type: ignore[assignment]
        try:
            second = reopen(first.res_id)
        finally:
            _resource_api._get = real_get  # type: ignore[assignment]
    try:
        seen = [f"handler ran: {released.ran}", outcome_text(lambda: use(second))]
        seen.append(outcome_text(lambda: reopen(first.res_id).release()))
    finally:
        second.release()
    seen.append(outcome_text(lambda: reopen(first.res_id)).split(":")[0])
    return seen


@pytest.mark.parametrize("kind", ["Mailbox", "ShmSegment"])
def test_a_release_by_a_signal_handler_during_an_open_in_a_worker(kind: str) -> None:
    seen = run_scenario(released_during_open_in_a_worker, kind)
    assert seen[0] == "handler ran: True"
    assert seen[1].startswith("returned"), seen[1]
    assert seen[2] == "returned None", "the object was destroyed under the new handle"
    assert seen[3] == "NoResource", "the last handle's release left the object"


def test_a_release_by_a_signal_handler_during_an_open_that_fails_is_given_back_after(
    released_in_open: Callable[[Any], _Released], master_cleanup: None
) -> None:
    """The release left to the open is the process's: the open fails (the
    box carries another type), and its end gives the use back (before: the
    handler's release destroyed the box, and the open said NoResource)."""
    box = Mailbox.create(int, slots=2, slot_size=16)
    name = _name(box)
    released = released_in_open(box)
    with pytest.raises(netmcore.EncapTypeMismatch):
        Mailbox.open(box.res_id, str)
    assert released.ran
    assert not [n for n in os.listdir(SHM_DIR) if n.endswith(name[1:])]
    with pytest.raises(netmcore.NoResource):
        Mailbox.open(box.res_id, int)
