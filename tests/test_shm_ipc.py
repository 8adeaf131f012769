"""Shared-memory IPC: the typed Mailbox, ShmMutex, ShmCondition and PosixSemaphore.

Scenarios run as the first process, as in ``test_resources``: a process type
defined at module level does the calls under test inside a worker and asserts
there (``assert``, ``pytest.raises(..., match=...)``); a failed assertion in any
worker comes back to the test as a ``Raised`` outcome, and the test fails with
the worker's traceback. Outside ``run`` the test process is the master, so the
single-process cases are tested there directly.

Synchronisation is deterministic, never a sleep: the primitives under test
themselves, joins (a joined worker has ended), and pipes made in the test
before ``run`` (every worker is forked from the test process, so every worker
inherits both ends). The only timeouts that matter are ones that must expire
(``SHORT``); ``GUARD`` only bounds a wait that would otherwise hang a broken
build.

Every primitive is a managed resource: the autouse fixture in conftest checks
that each test leaves ``/dev/shm`` clean.
"""

from __future__ import annotations

import ctypes
import dataclasses
import errno
import gc
import math
import os
import re
import signal
import threading
import tracemalloc
from collections import Counter
from collections.abc import Callable
from typing import Any

import msgspec
import pydantic
import pytest
from scenario import (
    end_a_thread_holding,
    interrupted_on_owner_died,
    joined,
    outcome_text,
    outcome_value,
    run_scenario,
    run_sigusr1_handler_here,
    run_snippet,
    shm_partly_used,
    shm_space,
    sigusr1_raises,
)

import netmcore
from netmcore import (
    Buffer,
    EncapTypeMismatch,
    Mailbox,
    OwnerDiedError,
    ResId,
    ShmCondition,
    ShmMutex,
    _mailbox,
    _pthread,
    _shm_sync,
)
from netmcore._buffer import _RING
from netmcore._encap import TYPE_NAME_MAX, clipped_name
from netmcore._mailbox import _SLOT_HEAD, _first_slot, _stride

SHM_DIR = "/dev/shm"
GUARD = 10.0  # bounds a wait that must not expire; never asserted on
SHORT = 0.05  # a timeout that must expire

# --------------------------------------------------------------------------
# Message types (module level: workers decode them)
# --------------------------------------------------------------------------


class Msg(msgspec.Struct, frozen=True):
    sender: int
    seq: int


class KStruct(msgspec.Struct):
    k: int
    label: str = ""


@dataclasses.dataclass
class KData:
    k: int
    label: str = ""


class KModel(pydantic.BaseModel):
    k: int = pydantic.Field(ge=0)
    label: str = ""


MESSAGE_TYPES: dict[str, Any] = {"struct": KStruct, "dataclass": KData, "pydantic": KModel}
# How a message can fail to match: "pydantic" has a field of the wrong type,
# "pydantic_constraint" one of the right type that breaks a constraint.
MISMATCHES = ["struct", "dataclass", "pydantic", "pydantic_constraint"]


def message_type(kind: str) -> Any:
    return MESSAGE_TYPES[kind.removesuffix("_constraint")]


def good_message(kind: str, k: int) -> Any:
    return message_type(kind)(k=k, label=f"{kind}-{k}")


def bad_message(kind: str) -> Any:
    """A message whose field ``k`` is bad, constructed without validation."""
    if kind == "pydantic_constraint":
        return KModel.model_construct(k=-1, label="bad")
    if kind == "pydantic":
        return KModel.model_construct(k="not an int", label="bad")
    return MESSAGE_TYPES[kind](k="not an int", label="bad")


# --------------------------------------------------------------------------
# Helpers, used in the test process and inside workers
# --------------------------------------------------------------------------


def shm_path(name: str) -> str:
    return os.path.join(SHM_DIR, name[1:])


def sem_path(name: str) -> str:
    return os.path.join(SHM_DIR, "sem." + name[1:])


def patch_mailbox(**hooks: Callable[[int], int]) -> None:
    """In a worker: replace the mailbox module's C calls (module globals) with hooks."""
    vars(_mailbox).update(hooks)


def crashed(proc: Any, pid: Any) -> None:
    """In a worker: join ``pid``, which must have been killed."""
    outcome = proc.join_outcome(pid)
    assert isinstance(outcome, netmcore.Crashed), f"expected a crash, got {outcome!r}"


def receive_all(box: Mailbox[Any], n: int) -> list[Any]:
    return [box.receive(timeout=GUARD) for _ in range(n)]


def assert_empty(box: Mailbox[Any]) -> None:
    with pytest.raises(TimeoutError, match=r"no message arrived"):
        box.receive(timeout=SHORT)


def errno_name(exc: BaseException) -> str:
    """EDEADLK and EPERM by name ("" if none); Linux also calls EDEADLK EDEADLOCK."""
    code = getattr(exc, "errno", None)
    names = {errno.EDEADLK: "EDEADLK", errno.EPERM: "EPERM"}
    return names.get(code, errno.errorcode.get(code, "")) if code is not None else ""


def read_int(seg: netmcore.ShmSegment) -> int:
    return int.from_bytes(seg.buffer[:8], "little")


def write_int(seg: netmcore.ShmSegment, value: int) -> None:
    seg.buffer[:8] = value.to_bytes(8, "little")


# --------------------------------------------------------------------------
# Process types: mailbox senders
# --------------------------------------------------------------------------


@netmcore.process
def mb_send(arg: tuple[ResId, list[Msg]]) -> int:
    """Open the box by id and send every message (waiting while it is full)."""
    res_id, messages = arg
    box = Mailbox.open(res_id, Msg)
    try:
        for m in messages:
            box.send(m, timeout=GUARD)
    finally:
        box.release()
    return len(messages)


@netmcore.process
def mb_fill(arg: tuple[ResId, int]) -> int:
    """Send Msg(sender, 0), Msg(sender, 1)... with timeout 0 (each must find a
    free slot at once) until the box is full; return how many went in."""
    res_id, sender = arg
    box = Mailbox.open(res_id, Msg)
    sent = 0
    try:
        while sent < 1000:
            try:
                box.send(Msg(sender, sent), timeout=0)
            except TimeoutError:
                break
            sent += 1
    finally:
        box.release()
    return sent


def capacity(box: Mailbox[Msg]) -> int:
    """In the receiver: how many messages the box (empty) takes from a sender,
    checking that it gets back exactly those, whole, then nothing."""
    n: int = joined(mb_fill, mb_fill.start((box.res_id, 99)))
    assert receive_all(box, n) == [Msg(99, i) for i in range(n)]
    assert_empty(box)
    return n


@netmcore.process
def mb_send_with_progress(arg: tuple[ResId, ResId, int]) -> int:
    """Send ``count`` messages; post ``progress`` after each send returns."""
    box_id, progress_id, count = arg
    box = Mailbox.open(box_id, Msg)
    progress = netmcore.open_sem(progress_id)
    try:
        for seq in range(count):
            box.send(Msg(0, seq), timeout=GUARD)
            progress.post()
    finally:
        box.release()
        progress.release()
    return count


@netmcore.process
def mb_send_oversized(arg: tuple[ResId, int]) -> str:
    """A message one byte larger than a slot is refused at send."""
    res_id, slot_size = arg
    box = Mailbox.open(res_id, bytes)
    try:
        # msgpack encodes bytes shorter than 256 as a 2-byte header + the bytes.
        with pytest.raises(ValueError) as info:
            box.send(b"x" * (slot_size - 1), timeout=0)
    finally:
        box.release()
    return str(info.value)


@netmcore.process
def mb_send_exact_fit(arg: tuple[ResId, int, int]) -> int:
    """Fill the box with messages of exactly ``slot_size`` encoded bytes."""
    res_id, slot_size, slots = arg
    box = Mailbox.open(res_id, bytes)
    try:
        for i in range(slots):
            box.send(bytes([i]) * (slot_size - 2), timeout=0)
        with pytest.raises(TimeoutError):
            box.send(b"", timeout=0)
    finally:
        box.release()
    return slots


@netmcore.process
def mb_send_typed(arg: tuple[ResId, str, int]) -> int:
    """Open a box of MESSAGE_TYPES[kind]; send ``count`` good messages."""
    res_id, kind, count = arg
    box = Mailbox.open(res_id, MESSAGE_TYPES[kind])
    try:
        for k in range(count):
            box.send(good_message(kind, k), timeout=GUARD)
    finally:
        box.release()
    return count


@netmcore.process
def mb_send_mismatch(arg: tuple[ResId, str]) -> list[str]:
    """Send messages that do not match the box's type; return the error paths.
    Then send one good message."""
    res_id, kind = arg
    box = Mailbox.open(res_id, message_type(kind))
    paths = []
    try:
        # The message names the field (msgspec: "at `$.k`", pydantic: "field .k").
        with pytest.raises(
            netmcore.ArgumentTypeError, match=r"^message .*(`\$\.k`|field \.k\b)"
        ) as info:
            box.send(bad_message(kind), timeout=0)
        paths.append(info.value.path)
        with pytest.raises(netmcore.ArgumentTypeError) as info:
            box.send(12, timeout=0)  # not even the right kind of value
        paths.append(info.value.path)
        box.send(good_message(kind, 7), timeout=0)
    finally:
        box.release()
    return paths


@netmcore.process
def mb_open_as(arg: tuple[ResId, str]) -> str:
    """Open ``res_id`` as a box of MESSAGE_TYPES[kind]; return the error."""
    res_id, kind = arg
    with pytest.raises((netmcore.EncapTypeMismatch, ValueError)) as info:
        Mailbox.open(res_id, MESSAGE_TYPES[kind]).release()
    return f"{type(info.value).__name__}: {info.value}"


@netmcore.process
def mb_sender_receives(res_id: ResId) -> str:
    """A sender may not receive, even when a message is there."""
    box = Mailbox.open(res_id, Msg)
    try:
        with pytest.raises(netmcore.ContextError) as info:
            box.receive(timeout=0)
    finally:
        box.release()
    return str(info.value)


# Where in send() a sender dies: right after it claimed a slot (its robust
# claim mutex is held, the slot is marked claimed); half-way through writing
# the payload into its slot.
DEATH_POINTS = ["claimed", "payload_half_written"]
# Other points, whose slot the box does not lose: between marking its slot
# claimed and moving the cursor on (its slot is the cursor's again); after it
# marked its message full and unlocked, before it posted ``filled`` (the
# message is in the box, without its token).
CURSOR_UNMOVED, FULL_NOT_POSTED = "claimed_cursor_unmoved", "full_not_posted"
DEAD_MESSAGE = Msg(666, 666_666_666)


@netmcore.process
def mb_die_mid_send(arg: tuple[ResId, str]) -> None:
    """Take the steps of ``send`` up to ``point``, then die (SIGKILL).

    The payload is a valid message's encoding, half written: a receiver that
    read this slot would see a torn message."""
    res_id, point = arg
    box = Mailbox.open(res_id, Msg)
    if point == FULL_NOT_POSTED:  # send() itself, killed at its last call
        filled, post = box._filled, _mailbox._post

        def killed_at_post(addr: int) -> int:
            if addr == filled:
                os.kill(os.getpid(), signal.SIGKILL)
            rc: int = post(addr)
            return rc

        patch_mailbox(_post=killed_at_post)
        box.send(DEAD_MESSAGE)
        raise AssertionError("the sender outlived its send")
    if point == CURSOR_UNMOVED:  # _mark_claimed's steps, up to the cursor's move
        seq = box._cursor[0]
        i = seq % box.slots
        assert _mailbox._trylock(box._claims[i]) == 0
        box._quads[(box._heads[i] + 8) >> 3] = seq
        box._segment.buffer[box._heads[i]] = _mailbox._CLAIMED
        os.kill(os.getpid(), signal.SIGKILL)
    data = box.type.encode(DEAD_MESSAGE)
    slot = box._claim_slot()
    assert slot is not None, "the box should have had a free slot"
    if point == "payload_half_written":
        start = box._heads[slot] + _SLOT_HEAD.size
        box._segment.buffer[start : start + len(data) // 2] = data[: len(data) // 2]
    os.kill(os.getpid(), signal.SIGKILL)


@netmcore.process
def mb_send_meeting_a_death(res_id: ResId) -> None:
    """Send two messages; the first one's claim of the cursor's slot, which it
    saw empty, meets another sender killed in the middle of claiming that
    slot (its claim mutex says "owner died")."""
    box = Mailbox.open(res_id, Msg)
    trylock = _mailbox._trylock

    def other_sender_dies_first(addr: int) -> int:
        _mailbox._trylock = trylock
        crashed(mb_die_mid_send, mb_die_mid_send.start((res_id, CURSOR_UNMOVED)))
        rc: int = trylock(addr)
        assert rc == errno.EOWNERDEAD
        return rc

    patch_mailbox(_trylock=other_sender_dies_first)
    try:
        box.send(Msg(1, 0), timeout=GUARD)
        box.send(Msg(1, 1), timeout=GUARD)
    finally:
        _mailbox._trylock = trylock
        box.release()


@netmcore.process
def mb_blocked_sender(arg: tuple[ResId, int]) -> None:
    """Say our pid, then send to a full box: block until killed."""
    res_id, pid_w = arg
    box = Mailbox.open(res_id, Msg)
    os.write(pid_w, f"{os.getpid()}\n".encode())
    box.send(Msg(666, 0))  # the box is full: this blocks
    raise AssertionError("a send to a full box returned")


# --------------------------------------------------------------------------
# Process types: mailbox scenarios (the receiver is the box's creator)
# --------------------------------------------------------------------------


@netmcore.process
def many_senders_scenario(arg: tuple[int, int, int]) -> list[tuple[int, int]]:
    senders, count, slots = arg
    box = Mailbox.create(Msg, slots=slots, slot_size=32)
    try:
        pids = [
            mb_send.start((box.res_id, [Msg(s, i) for i in range(count)])) for s in range(senders)
        ]
        got = receive_all(box, senders * count)
        for pid in pids:
            assert joined(mb_send, pid) == count
        assert_empty(box)
    finally:
        box.release()
    return [(m.sender, m.seq) for m in got]


@netmcore.process
def later_sender_scenario(_: int) -> list[list[int]]:
    """Two single senders, one after the other: each one's order is kept."""
    box = Mailbox.create(Msg, slots=8, slot_size=32)
    try:
        first = [Msg(1, i) for i in range(3)]
        assert joined(mb_send, mb_send.start((box.res_id, first))) == 3
        got_first = receive_all(box, 3)
        # The second sender sends all four before the receiver looks.
        second = [Msg(2, i) for i in range(4)]
        assert joined(mb_send, mb_send.start((box.res_id, second))) == 4
        got_second = receive_all(box, 4)
        assert_empty(box)
    finally:
        box.release()
    return [[m.seq for m in got_first], [m.seq for m in got_second]]


@netmcore.process
def full_box_scenario(arg: tuple[int, int]) -> dict[str, Any]:
    """The receiver reads one message at a time; before each, it lets the
    sender run as far as it can, and checks that it got exactly ``slots``
    messages ahead and no further (its next progress does not come)."""
    slots, count = arg
    box = Mailbox.create(Msg, slots=slots, slot_size=32)
    progress = netmcore.create_sem(0)
    ahead: list[int] = []
    blocked: list[bool] = []
    got: list[Msg] = []
    try:
        pid = mb_send_with_progress.start((box.res_id, progress.res_id, count))
        sent = 0
        for received in range(count):
            while sent < min(received + slots, count):
                assert progress.wait(timeout=GUARD), "the sender stopped early"
                sent += 1
            if sent < count:
                # The sender is blocked in send: no more progress can come.
                blocked.append(not progress.wait(timeout=SHORT))
            ahead.append(sent - received)
            got.append(box.receive(timeout=GUARD))
        assert joined(mb_send_with_progress, pid) == count
        assert progress.wait(timeout=0) is False
        assert_empty(box)
    finally:
        box.release()
        progress.release()
    return {"seqs": [m.seq for m in got], "ahead": ahead, "blocked": blocked}


@netmcore.process
def oversized_scenario(arg: tuple[int, int]) -> str:
    slots, slot_size = arg
    box = Mailbox.create(bytes, slots=slots, slot_size=slot_size)
    try:
        error: str = joined(mb_send_oversized, mb_send_oversized.start((box.res_id, slot_size)))
        assert_empty(box)  # nothing was written, nothing posted
        # Every slot is still free, and a message of exactly slot_size fits.
        assert joined(mb_send_exact_fit, mb_send_exact_fit.start((box.res_id, slot_size, slots)))
        for i in range(slots):
            assert box.receive(timeout=GUARD) == bytes([i]) * (slot_size - 2)
        assert_empty(box)
    finally:
        box.release()
    return error


@netmcore.process
def typed_messages_scenario(kind: str) -> list[str]:
    box = Mailbox.create(MESSAGE_TYPES[kind], slots=4, slot_size=128)
    try:
        pid = mb_send_typed.start((box.res_id, kind, 10))
        got = receive_all(box, 10)
        assert joined(mb_send_typed, pid) == 10
        assert_empty(box)
    finally:
        box.release()
    assert got == [good_message(kind, k) for k in range(10)]
    return [type(m).__name__ for m in got]


@netmcore.process
def mismatch_scenario(kind: str) -> list[str]:
    box = Mailbox.create(message_type(kind), slots=2, slot_size=128)
    try:
        paths: list[str] = joined(mb_send_mismatch, mb_send_mismatch.start((box.res_id, kind)))
        # The refused messages left nothing behind: only the good one is there.
        assert box.receive(timeout=GUARD) == good_message(kind, 7)
        assert_empty(box)
    finally:
        box.release()
    return paths


@netmcore.process
def open_as_scenario(_: int) -> list[str]:
    box = Mailbox.create(KStruct, slots=2, slot_size=64)
    plain = netmcore.create_shm(4096)
    plain.close()
    try:
        errors = [
            joined(mb_open_as, mb_open_as.start((box.res_id, "dataclass"))),
            joined(mb_open_as, mb_open_as.start((plain.res_id, "struct"))),
        ]
        # The box still works for a sender of the right type.
        assert joined(mb_send_typed, mb_send_typed.start((box.res_id, "struct", 1))) == 1
        assert box.receive(timeout=GUARD) == good_message("struct", 0)
    finally:
        box.release()
        netmcore.release(plain.res_id)
    return errors


@netmcore.process
def sender_receives_scenario(_: int) -> str:
    box = Mailbox.create(Msg, slots=2, slot_size=32)
    try:
        box.send(Msg(0, 1))  # the owner may send to its own box
        error: str = joined(mb_sender_receives, mb_sender_receives.start(box.res_id))
        # The refused receive did not take the message.
        assert box.receive(timeout=0) == Msg(0, 1)
        assert_empty(box)
    finally:
        box.release()
    return error


@netmcore.process
def killed_mid_send_scenario(arg: tuple[int, str, bool]) -> dict[str, Any]:
    slots, point, reclaim_first = arg
    box = Mailbox.create(Msg, slots=slots, slot_size=32)
    out: dict[str, Any] = {}
    try:
        crashed(mb_die_mid_send, mb_die_mid_send.start((box.res_id, point)))
        out["claimed_slots"] = sum(box._segment.buffer[box._heads[i]] == 1 for i in range(slots))
        if reclaim_first:
            out["freed"] = [box.reclaim(), box.reclaim()]
        # Either way the box takes all its messages again, once the receiver
        # has stepped over the dead sender's slot, and the receiver sees only
        # whole ones (capacity() checks every message it gets back).
        out["capacity"] = [capacity(box), capacity(box)]
        out["freed_after"] = box.reclaim()
    finally:
        box.release()
    return out


@netmcore.process
def killed_before_post_scenario(slots: int) -> int:
    box = Mailbox.create(Msg, slots=slots, slot_size=32)
    try:
        # As many such messages as slots: the box is full of messages without
        # a token, and the receiver must see them all.
        for _ in range(slots):
            crashed(mb_die_mid_send, mb_die_mid_send.start((box.res_id, FULL_NOT_POSTED)))
        assert receive_all(box, slots) == [DEAD_MESSAGE] * slots
        assert_empty(box)
        return capacity(box)
    finally:
        box.release()


@netmcore.process
def sender_meets_a_death_scenario(slots: int) -> int:
    box = Mailbox.create(Msg, slots=slots, slot_size=32)
    try:
        joined(mb_send_meeting_a_death, mb_send_meeting_a_death.start(box.res_id))
        assert receive_all(box, 2) == [Msg(1, 0), Msg(1, 1)]
        assert_empty(box)
        return capacity(box)
    finally:
        box.release()


class Interrupted(Exception):
    """What a signal handler raises in the middle of a send."""


# Where in send() a signal handler raises: just after the claim mutex was
# taken, before Python has the lock call's result (and there, then again as
# the give-back of the claim starts); with the slot claimed and the cursor
# moved on; after the message was marked full and unlocked, before
# ``filled`` was posted.
SIGNAL_POINTS = ["after_trylock", "after_trylock_twice", "claimed", "unlocked_not_posted"]


@netmcore.process
def interrupted_send_scenario(arg: tuple[int, str]) -> dict[str, Any]:
    slots, point = arg
    box = Mailbox.create(Msg, slots=slots, slot_size=32)
    trylock, unlock = _mailbox._trylock, _mailbox._unlock
    tries: list[int] = []

    def hooked_trylock(addr: int) -> int:
        tries.append(addr)
        if point == "claimed" and len(tries) == 1:
            return errno.EBUSY  # another sender claiming it: send() takes the slow path
        rc: int = trylock(addr)
        if point.startswith("after_trylock"):
            run_sigusr1_handler_here()
        return rc

    abandon = box._abandon

    def abandon_interrupted_first(full: bool) -> None:
        if point == "after_trylock_twice" and not tries.count(-1):
            tries.append(-1)
            run_sigusr1_handler_here()  # a second handler, as the give-back starts
        abandon(full)

    def hooked_unlock(addr: int) -> int:
        rc: int = unlock(addr)
        if point == "unlocked_not_posted":
            run_sigusr1_handler_here()
        return rc

    claim_or_wait = box._claim_or_wait

    def claimed_then_interrupted(timeout: float | None, receivers: Any) -> int:
        i = claim_or_wait(timeout, receivers)
        run_sigusr1_handler_here()
        return i

    out: dict[str, Any] = {}
    try:
        with sigusr1_raises(Interrupted):
            patch_mailbox(_trylock=hooked_trylock, _unlock=hooked_unlock)
            box.__dict__["_claim_or_wait"] = claimed_then_interrupted
            box.__dict__["_abandon"] = abandon_interrupted_first
            try:
                with pytest.raises(Interrupted):
                    box.send(Msg(7, 7), timeout=0)
            finally:
                _mailbox._trylock, _mailbox._unlock = trylock, unlock
                del box.__dict__["_claim_or_wait"], box.__dict__["_abandon"]
        out["abandons"] = tries.count(-1)
        if point == "unlocked_not_posted":  # the message went in, whole
            assert box.receive(timeout=GUARD) == Msg(7, 7)
            assert_empty(box)
        # Another process's sends find every slot again (a claim mutex still
        # held by this thread would make the box full for ever).
        out["capacity"] = [capacity(box), capacity(box)]
    finally:
        box.release()
    return out


@netmcore.process
def interrupted_step_over_scenario(slots: int) -> dict[str, Any]:
    """The receiver's look at a slot claimed and left (as a sender that a
    handler's exception ended leaves it) is interrupted just after it took
    the slot's claim mutex, then again as the give-back starts."""
    box = Mailbox.create(Msg, slots=slots, slot_size=32)
    trylock, abandon = _mailbox._trylock, box._abandon
    seen: list[str] = []

    def hooked_trylock(addr: int) -> int:
        rc: int = trylock(addr)
        if addr == box._claims[0] and "trylock" not in seen:
            seen.append("trylock")
            run_sigusr1_handler_here()
        return rc

    def abandon_interrupted_first(full: bool) -> None:
        if "abandon" not in seen:
            seen.append("abandon")
            run_sigusr1_handler_here()
        abandon(full)

    out: dict[str, Any] = {}
    try:
        box._mark_claimed(0, box._heads[0])  # claimed, its lock free: stepped over
        box.send(Msg(7, 7), timeout=0)
        with sigusr1_raises(Interrupted):
            patch_mailbox(_trylock=hooked_trylock)
            box.__dict__["_abandon"] = abandon_interrupted_first
            try:
                with pytest.raises(Interrupted):
                    box.receive(timeout=GUARD)
            finally:
                _mailbox._trylock = trylock
                del box.__dict__["_abandon"]
        out["seen"] = seen
        out["then"] = repr(box.receive(timeout=GUARD))
        out["capacity"] = [capacity(box), capacity(box)]
    finally:
        box.release()
    return out


@netmcore.process
def interrupted_receive_scenario(slots: int) -> list[str]:
    """A receive interrupted just after it took a message's token, then
    receives each interrupted in its wait, as by a handler that fires more
    often than the receiver's first slice: the message must still come."""
    box = Mailbox.create(Msg, slots=slots, slot_size=32)
    trywait = _mailbox._trywait
    wait, spinning = _pthread.sem_wait, _pthread.sem_wait_spinning

    def token_then_interrupted(addr: int) -> int:
        rc: int = trywait(addr)
        if rc == 0:
            run_sigusr1_handler_here()
        return rc

    def interrupted_wait(addr: int, timeout: float | None) -> bool:
        run_sigusr1_handler_here()
        raise AssertionError("the handler did not raise")

    seen: list[str] = []
    try:
        with sigusr1_raises(Interrupted):
            box.send(Msg(7, 7), timeout=0)
            patch_mailbox(_trywait=token_then_interrupted)
            try:
                with pytest.raises(Interrupted):  # having taken the message's token
                    box.receive(timeout=GUARD)
                seen.append("Interrupted")
            finally:
                _mailbox._trywait = trywait
            _pthread.sem_wait = _pthread.sem_wait_spinning = interrupted_wait
            try:
                for _ in range(3):
                    try:
                        seen.append(repr(box.receive(timeout=GUARD)))
                        break
                    except Interrupted:
                        seen.append("Interrupted")
            finally:
                _pthread.sem_wait, _pthread.sem_wait_spinning = wait, spinning
            box.send(Msg(8, 8), timeout=0)  # and the box works on, token and all
            seen.append(repr(box.receive(timeout=GUARD)))
            seen.append(f"{box.qsize()} left")
    finally:
        box.release()
    return seen


@netmcore.process
def killed_blocked_sender_scenario(arg: tuple[int, int, int]) -> list[int]:
    slots, pid_r, pid_w = arg
    box = Mailbox.create(Msg, slots=slots, slot_size=32)
    try:
        assert joined(mb_fill, mb_fill.start((box.res_id, 1))) == slots  # full
        pid = mb_blocked_sender.start((box.res_id, pid_w))
        os.kill(int(os.read(pid_r, 64)), signal.SIGKILL)
        crashed(mb_blocked_sender, pid)
        assert receive_all(box, slots) == [Msg(1, i) for i in range(slots)]
        assert_empty(box)
        return [box.reclaim(), capacity(box)]
    finally:
        box.release()


# --------------------------------------------------------------------------
# Process types: mutexes
# --------------------------------------------------------------------------


def _do(mutex: ShmMutex, op: str) -> str:
    """One operation on ``mutex``: its result, or the exception's class:errno."""
    try:
        if op == "lock":
            result: object = mutex.lock(timeout=GUARD)
        elif op == "trylock":
            result = mutex.lock(timeout=SHORT)
        elif op == "unlock":
            mutex.unlock()
            result = None
        elif op == "kind":
            result = mutex.kind
        else:
            raise AssertionError(f"unknown op {op!r}")
    except Exception as exc:
        return f"{type(exc).__name__}:{errno_name(exc)}"
    return str(result)


@netmcore.process
def mx_probe(arg: tuple[ResId, list[str]]) -> list[str]:
    """Open the mutex by id and do ``ops`` on it in order."""
    res_id, ops = arg
    mutex = ShmMutex.open(res_id)
    try:
        return [_do(mutex, op) for op in ops]
    finally:
        mutex.release()


def probe(mutex: ShmMutex, *ops: str) -> list[str]:
    """In a worker: what another process sees doing ``ops`` on ``mutex``."""
    result: list[str] = joined(mx_probe, mx_probe.start((mutex.res_id, list(ops))))
    return result


@netmcore.process
def mx_increment(arg: tuple[ResId, ResId, ResId, int]) -> int:
    """Wait for the start, then add 1 to the counter ``rounds`` times under the lock."""
    mutex_id, counter_id, start_id, rounds = arg
    mutex = ShmMutex.open(mutex_id)
    counter = netmcore.open_shm(counter_id)
    start = netmcore.open_sem(start_id)
    try:
        assert start.wait(timeout=GUARD)
        for _ in range(rounds):
            with mutex:
                value = read_int(counter)
                os.sched_yield()  # invite a lost update, should the lock not exclude
                write_int(counter, value + 1)
    finally:
        mutex.release()
        counter.release()
        start.release()
    return rounds


@netmcore.process
def mx_hold(arg: tuple[ResId, int, int]) -> None:
    """Lock the mutex, say our pid, and hold it until the gate opens (never)."""
    res_id, pid_w, gate_r = arg
    mutex = ShmMutex.open(res_id)
    assert mutex.lock(timeout=GUARD)
    os.write(pid_w, f"{os.getpid()}\n".encode())
    os.read(gate_r, 1)
    mutex.unlock()


@netmcore.process
def mutual_exclusion_scenario(arg: tuple[str, int, int]) -> int:
    kind, workers, rounds = arg
    mutex = ShmMutex.create(kind)  # type: ignore[arg-type]
    counter = netmcore.create_shm(8)
    start = netmcore.create_sem(0)
    try:
        pids = [
            mx_increment.start((mutex.res_id, counter.res_id, start.res_id, rounds))
            for _ in range(workers)
        ]
        for _ in range(workers):
            start.post()  # all go at once
        for pid in pids:
            assert joined(mx_increment, pid) == rounds
        return read_int(counter)
    finally:
        mutex.release()
        counter.release()
        start.release()


@netmcore.process
def errorcheck_scenario(_: int) -> dict[str, Any]:
    mutex = ShmMutex.create("errorcheck")
    out: dict[str, Any] = {}
    try:
        assert mutex.lock() is True
        with pytest.raises(OSError) as info:
            mutex.lock()
        out["relock"] = [type(info.value).__name__, errno_name(info.value)]
        with pytest.raises(OSError) as info:
            mutex.lock(timeout=0)
        out["relock_timeout"] = [type(info.value).__name__, errno_name(info.value)]
        # Another process: it may not unlock, and cannot lock while we hold it.
        out["other_while_held"] = probe(mutex, "unlock", "trylock")
        mutex.unlock()
        with pytest.raises(PermissionError):
            mutex.unlock()  # not held any more
        out["other_after"] = probe(mutex, "lock", "unlock")
        assert mutex.lock(timeout=0) is True
        mutex.unlock()
    finally:
        mutex.release()
    return out


@netmcore.process
def recursive_scenario(_: int) -> dict[str, list[str]]:
    mutex = ShmMutex.create("recursive")
    out: dict[str, list[str]] = {}
    try:
        assert mutex.lock() is True
        assert mutex.lock(timeout=0) is True
        assert mutex.lock() is True
        mutex.unlock()
        mutex.unlock()
        out["held_once"] = probe(mutex, "trylock")  # locked 3 times, unlocked twice
        mutex.unlock()
        out["released"] = probe(mutex, "lock", "unlock")
        with pytest.raises(PermissionError):
            mutex.unlock()
    finally:
        mutex.release()
    return out


@netmcore.process
def kinds_scenario(_: int) -> dict[str, list[str]]:
    """Each kind, opened by id in another process, keeps its kind and behaviour."""
    out: dict[str, list[str]] = {}
    for kind in ("normal", "errorcheck", "recursive"):
        mutex = ShmMutex.create(kind)
        try:
            assert mutex.kind == kind
            out[kind] = probe(mutex, "kind", "lock", "trylock", "unlock", "unlock")
        finally:
            mutex.release()
    return out


@netmcore.process
def owner_died_scenario(arg: tuple[str, str, int, int, int, int]) -> dict[str, Any]:
    """Kill the holder of the mutex; then lock it (``how``: "lock" or "with")."""
    kind, how, pid_r, pid_w, gate_r, gate_w = arg
    mutex = ShmMutex.create(kind)  # type: ignore[arg-type]
    out: dict[str, Any] = {}
    try:
        holder = mx_hold.start((mutex.res_id, pid_w, gate_r))
        os.kill(int(os.read(pid_r, 64)), signal.SIGKILL)
        crashed(mx_hold, holder)
        if how == "lock":
            with pytest.raises(OwnerDiedError, match=r"died while holding it"):
                mutex.lock(timeout=GUARD)
            out["held_by_us"] = probe(mutex, "trylock")
            mutex.unlock()
        else:
            ran = []
            with pytest.raises(OwnerDiedError, match=r"died while holding it"), mutex:
                ran.append("body")
            out["body"] = ran
        out["other_after"] = probe(mutex, "lock", "unlock")
        out["again"] = mutex.lock(timeout=GUARD)  # no OwnerDiedError any more
        mutex.unlock()
    finally:
        os.write(gate_w, b"x")  # lets the holder end, were it still alive
        mutex.release()
    return out


@netmcore.process
def blocked_waiter_scenario(arg: tuple[int, int, int, int]) -> list[str]:
    """A process waiting for a held mutex learns of its holder's death."""
    pid_r, pid_w, gate_r, gate_w = arg
    mutex = ShmMutex.create("normal")
    try:
        holder = mx_hold.start((mutex.res_id, pid_w, gate_r))
        holder_pid = int(os.read(pid_r, 64))
        # The waiter waits in lock() (or starts after the death; it must learn
        # of it either way).
        waiter = mx_probe.start((mutex.res_id, ["lock", "unlock", "trylock", "unlock"]))
        os.kill(holder_pid, signal.SIGKILL)
        crashed(mx_hold, holder)
        seen: list[str] = joined(mx_probe, waiter)
    finally:
        os.write(gate_w, b"x")  # lets the holder end, were it still alive
        mutex.release()
    return seen


# --------------------------------------------------------------------------
# Process types: conditions
# --------------------------------------------------------------------------


@netmcore.process
def cv_consumer(arg: tuple[ResId, ResId, ResId, int]) -> list[int]:
    """Wait until the flag is set; say (holding the mutex) when about to wait.

    Returns [how many waits returned True, the flag seen]."""
    mutex_id, cond_id, flag_id, ready_w = arg
    mutex = ShmMutex.open(mutex_id)
    cond = ShmCondition.open(cond_id)
    flag = netmcore.open_shm(flag_id)
    woken = 0
    try:
        with mutex:
            os.write(ready_w, b"w")
            while flag.buffer[0] == 0:
                if not cond.wait(mutex, timeout=GUARD):
                    raise AssertionError("no signal came")
                woken += 1
            seen = flag.buffer[0]
    finally:
        mutex.release()
        cond.release()
        flag.release()
    return [woken, seen]


@netmcore.process
def condition_scenario(arg: tuple[int, str, int, int]) -> list[list[int]]:
    """``consumers`` wait; once all wait, set the flag and ``signal`` or ``broadcast``."""
    consumers, how, ready_r, ready_w = arg
    mutex = ShmMutex.create("errorcheck")
    cond = ShmCondition.create()
    flag = netmcore.create_shm(1)
    try:
        ids = (mutex.res_id, cond.res_id, flag.res_id, ready_w)
        pids = [cv_consumer.start(ids) for _ in range(consumers)]
        for _ in range(consumers):
            assert os.read(ready_r, 1) == b"w"
        # Each consumer said "w" while holding the mutex and lets go of it only
        # in wait(): once we hold it, every consumer is waiting.
        with mutex:
            flag.buffer[0] = 7
            if how == "signal":
                cond.signal()
            else:
                cond.broadcast()
        return [joined(cv_consumer, pid) for pid in pids]
    finally:
        mutex.release()
        cond.release()
        flag.release()


@netmcore.process
def condition_timeout_scenario(_: int) -> dict[str, Any]:
    mutex = ShmMutex.create("normal")
    cond = ShmCondition.create()
    out: dict[str, Any] = {}
    try:
        assert mutex.lock()
        out["wait"] = cond.wait(mutex, timeout=SHORT)
        out["held_after_wait"] = probe(mutex, "trylock")  # we hold it again
        cond.signal()  # nobody waits: a no-op
        cond.broadcast()
        mutex.unlock()
        out["other_after"] = probe(mutex, "lock", "unlock")
    finally:
        mutex.release()
        cond.release()
    return out


# --------------------------------------------------------------------------
# Process types: semaphores
# --------------------------------------------------------------------------


@netmcore.process
def sem_pong(arg: tuple[ResId, ResId, int]) -> int:
    ping_id, pong_id, rounds = arg
    ping = netmcore.open_sem(ping_id)
    pong = netmcore.open_sem(pong_id)
    try:
        for _ in range(rounds):
            assert ping.wait(timeout=GUARD)
            pong.post()
        assert ping.wait(timeout=SHORT) is False
    finally:
        ping.release()
        pong.release()
    return rounds


@netmcore.process
def sem_take(arg: tuple[ResId, int]) -> list[bool]:
    """Decrement ``n`` times without waiting."""
    res_id, n = arg
    sem = netmcore.open_sem(res_id)
    try:
        return [sem.wait(timeout=0) for _ in range(n)]
    finally:
        sem.release()


@netmcore.process
def sem_scenario(rounds: int) -> dict[str, Any]:
    ping = netmcore.create_sem(0)
    pong = netmcore.create_sem(0)
    start = netmcore.create_sem(2)
    try:
        pid = sem_pong.start((ping.res_id, pong.res_id, rounds))
        for _ in range(rounds):
            ping.post()
            assert pong.wait(timeout=GUARD)
        out: dict[str, Any] = {
            "pong": joined(sem_pong, pid),
            "values": [ping.value, pong.value],
            "taken": joined(sem_take, sem_take.start((start.res_id, 3))),
            "start_value": start.value,
        }
    finally:
        ping.release()
        pong.release()
        start.release()
    return out


# --------------------------------------------------------------------------
# Process types: cleanup
# --------------------------------------------------------------------------


@netmcore.process
def use_and_keep(arg: tuple[ResId, ResId, ResId, ResId]) -> None:
    """Open each primitive by id, use it, release nothing."""
    box_id, mutex_id, cond_id, sem_id = arg
    Mailbox.open(box_id, Msg).send(Msg(5, 5), timeout=GUARD)
    mutex = ShmMutex.open(mutex_id)
    with mutex:
        ShmCondition.open(cond_id).broadcast()
    netmcore.open_sem(sem_id).post()


@netmcore.process
def lock_then_signal(ids: tuple[ResId, ResId]) -> bool:
    """Lock (it is free only while the other process waits), signal, unlock."""
    mutex, cond = ShmMutex.open(ids[0]), ShmCondition.open(ids[1])
    if not mutex.lock(timeout=GUARD):
        return False
    cond.signal()
    mutex.unlock()
    return True


@netmcore.process
def recursive_condition_wait_scenario(_: int) -> list[str]:
    """A condition wait with a recursive mutex held twice, as with an RLock
    and threading.Condition."""
    mutex, cond = ShmMutex.create("recursive"), ShmCondition.create()
    mutex.lock()
    mutex.lock()
    out = [f"timed out: {cond.wait(mutex, timeout=SHORT)}"]  # no signaller yet
    signaller = lock_then_signal.start((mutex.res_id, cond.res_id))
    out.append(f"woken: {cond.wait(mutex, timeout=GUARD)}")
    out.append(f"signaller locked: {joined(lock_then_signal, signaller)}")
    mutex.unlock()
    mutex.unlock()  # held twice again after the wait
    with pytest.raises(PermissionError):
        mutex.unlock()
    return out


@netmcore.process
def create_and_keep_scenario(_: int) -> list[str]:
    """Create one of each primitive, let another process use them, release nothing."""
    box = Mailbox.create(Msg, slots=2, slot_size=32)
    mutex = ShmMutex.create("recursive")
    cond = ShmCondition.create()
    sem = netmcore.create_sem(0)
    joined(use_and_keep, use_and_keep.start((box.res_id, mutex.res_id, cond.res_id, sem.res_id)))
    assert box.receive(timeout=GUARD) == Msg(5, 5)
    assert sem.wait(timeout=GUARD)
    paths = [shm_path(netmcore.get_shm(r)) for r in (box.res_id, mutex.res_id, cond.res_id)]
    paths.append(sem_path(sem.name))
    for p in paths:
        assert os.path.exists(p), p
    return paths


# --------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------


# --------------------------------------------------------------------------
# 1. Mailbox: delivery, order, blocking, sizes, timeouts, types, context
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("senders", "slots", "count"), [(1, 8, 300), (4, 1, 300), (4, 8, 20000), (4, 256, 20000)]
)
def test_mailbox_delivers_every_message_once_and_each_senders_in_order(
    senders: int, slots: int, count: int
) -> None:
    """Senders racing for slots, for a small box and a large one: every
    message arrives whole, once, and each sender's in the order it sent them."""
    got = run_scenario(many_senders_scenario, (senders, count, slots))
    expected = [(s, i) for s in range(senders) for i in range(count)]
    duplicates = [m for m, n in Counter(got).items() if n > 1]
    assert not duplicates, f"received more than once: {duplicates[:5]}"
    assert sorted(got) == expected
    for s in range(senders):
        seqs = [seq for sender, seq in got if sender == s]
        assert seqs == list(range(count)), f"sender {s}'s messages arrived out of order"


@netmcore.process
def mb_send_from_threads(arg: tuple[ResId, int, int]) -> int:
    """Send from ``threads`` threads sharing one opened box, each its own
    numbered stream (sender = thread number)."""
    res_id, threads, count = arg
    box = Mailbox.open(res_id, Msg)

    def stream(t: int) -> None:
        for i in range(count):
            box.send(Msg(t, i), timeout=GUARD)

    try:
        workers = [threading.Thread(target=stream, args=(t,)) for t in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
    finally:
        box.release()
    return threads * count


@netmcore.process
def threaded_sender_scenario(arg: tuple[int, int]) -> list[tuple[int, int]]:
    threads, count = arg
    box = Mailbox.create(Msg, slots=4, slot_size=32)
    try:
        pid = mb_send_from_threads.start((box.res_id, threads, count))
        got = receive_all(box, threads * count)
        assert joined(mb_send_from_threads, pid) == threads * count
        assert_empty(box)
    finally:
        box.release()
    return [(m.sender, m.seq) for m in got]


def test_mailbox_threads_of_one_sender_each_keep_their_order() -> None:
    threads, count = 3, 2000
    got = run_scenario(threaded_sender_scenario, (threads, count))
    assert sorted(got) == [(t, i) for t in range(threads) for i in range(count)]
    for t in range(threads):
        assert [i for s, i in got if s == t] == list(range(count)), f"thread {t} out of order"


def test_mailbox_single_senders_one_after_another_keep_their_order() -> None:
    """A sender that opens the box after another one's messages were received
    still has its messages received in the order it sent them."""
    first, second = run_scenario(later_sender_scenario, 0)
    assert first == [0, 1, 2]
    assert second == [0, 1, 2, 3], "the second sender's messages arrived out of order"


def test_mailbox_of_many_slots_costs_little_memory_and_uses_every_slot() -> None:
    """A box of 70,000 slots (9 MB of shm) does not cost each process that
    opens it Python objects in proportion (~80 bytes a slot before), and its
    slots past the first 65,536 work, the same as the first ones."""
    slots = 70_000
    tracemalloc.start()
    try:
        box = Mailbox.create(int, slots=slots, slot_size=8)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    with box:
        assert peak < 1_000_000, f"{peak:,} bytes of Python objects for {slots:,} slots"
        # Sent and received one by one, the messages take slot after slot.
        for k in range(slots):
            box.send(k)
            assert box.receive() == k
        box.send(-1)  # in slot 0 again
        assert box.receive() == -1


def test_mailbox_sender_blocks_while_the_box_is_full() -> None:
    slots, count = 2, 10
    result = run_scenario(full_box_scenario, (slots, count))
    assert result["seqs"] == list(range(count))
    # Before each receive the sender was exactly `slots` messages ahead (fewer
    # only at the end), and could not go further: it was blocked in send.
    assert result["ahead"] == [min(slots, count - r) for r in range(count)]
    assert result["blocked"] == [True] * (count - slots)


def test_mailbox_message_larger_than_a_slot_is_refused_before_anything_is_written() -> None:
    error = run_scenario(oversized_scenario, (3, 16))
    assert "a message of 17 bytes does not fit" in error
    assert "slots hold 16 bytes" in error
    assert "slot_size" in error  # says what to change


def test_mailbox_receive_timeout_raises_timeout_error(master_cleanup: None) -> None:
    box = Mailbox.create(Msg, slots=2, slot_size=32)
    try:
        with pytest.raises(TimeoutError, match=r"no message arrived in .* within 0.05 s"):
            box.receive(timeout=SHORT)
        with pytest.raises(TimeoutError):
            box.receive(timeout=0)
        box.send(Msg(1, 1))
        assert box.receive(timeout=0) == Msg(1, 1)  # a waiting message: no wait
    finally:
        box.release()


def test_mailbox_send_timeout_on_a_full_box_raises_timeout_error(master_cleanup: None) -> None:
    box = Mailbox.create(Msg, slots=2, slot_size=32)
    try:
        box.send(Msg(0, 0), timeout=0)
        box.send(Msg(0, 1), timeout=0)
        with pytest.raises(TimeoutError, match=r"stayed full for 0.05 s"):
            box.send(Msg(0, 2), timeout=SHORT)
        assert box.receive(timeout=0) == Msg(0, 0)
        box.send(Msg(0, 3), timeout=0)  # one slot came free
        assert box.receive(timeout=0) == Msg(0, 1)
        assert box.receive(timeout=0) == Msg(0, 3)
        assert_empty(box)
    finally:
        box.release()


# Message types whose decoded values could be views of the encoding.
VIEW_TYPES: dict[str, tuple[Any, Callable[[bytes], Any]]] = {
    "bytes": (bytes, lambda b: b),
    "memoryview": (memoryview, memoryview),
    "msgspec.Raw": (msgspec.Raw, lambda b: msgspec.Raw(msgspec.msgpack.encode(b))),
}


@pytest.mark.parametrize("name", sorted(VIEW_TYPES))
def test_mailbox_received_message_is_not_a_view_of_its_slot(
    name: str, master_cleanup: None
) -> None:
    """A received message stays as it was when the receiver took it, and the
    box can be released while it is alive: it does not alias the slot, which the
    next message reuses."""
    typ, make = VIEW_TYPES[name]
    box = Mailbox.create(typ, slots=1, slot_size=64)
    try:
        box.send(make(b"first"), timeout=0)
        first = box.receive(timeout=0)
        seen = bytes(first)
        box.send(make(b"SECOND"), timeout=0)  # into the same, only slot
        second = box.receive(timeout=0)
        assert bytes(first) == seen, "a received message changed when its slot was reused"
        assert bytes(second) != seen
    finally:
        box.release()  # while the received values are alive


@pytest.mark.parametrize("kind", sorted(MESSAGE_TYPES))
def test_mailbox_carries_structs_dataclasses_and_pydantic_models(kind: str) -> None:
    names = run_scenario(typed_messages_scenario, kind)
    assert names == [MESSAGE_TYPES[kind].__name__] * 10


@pytest.mark.parametrize("kind", MISMATCHES)
def test_mailbox_message_of_the_wrong_type_names_the_path(kind: str) -> None:
    paths = run_scenario(mismatch_scenario, kind)
    assert paths == ["$.k", "$"]


def open_mismatch(box_type: Any, asked: Any) -> str:
    """A pattern of the error of Mailbox.open with type ``asked`` on a box of
    ``box_type``: it names both types, not only their fingerprints."""
    held, wanted = netmcore.EncapType(box_type), netmcore.EncapType(asked)
    found = re.escape(clipped_name(held.name))
    return (
        rf"mailbox ResId\(\d+\) carries messages of type {found} \(fingerprint "
        rf"{held.fingerprint}\), not {re.escape(wanted.name)} \(fingerprint {wanted.fingerprint}"
        rf"\): open it with the type it was created with, {found}"
    )


def test_mailbox_open_with_another_type_or_on_a_non_mailbox_is_refused() -> None:
    wrong_type, not_a_box = run_scenario(open_as_scenario, 0)
    assert re.fullmatch("EncapTypeMismatch: " + open_mismatch(KStruct, KData), wrong_type)
    # Saying what it is (it said only "open it with the class that created it").
    assert re.fullmatch(
        r"ValueError: resource ResId\(\d+\) is not a mailbox: it is a shm object of 4096 bytes "
        r"with no netmcore object's mark \(a plain segment, of create_shm or "
        r"create_preallocated_shm, say\)",
        not_a_box,
    ), not_a_box


def test_mailbox_receive_by_a_sender_is_a_context_error() -> None:
    error = run_scenario(sender_receives_scenario, 0)
    assert "only the process that created" in error
    assert "senders use send()" in error


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"slots": 0}, r"slots=0 is not valid"),
        ({"slot_size": 0}, r"slot_size=0 is not valid"),
        (
            {"slots": 1, "slot_size": 2**32},
            r"slot_size=4,294,967,296 is not valid: .* below 2\*\*32",
        ),
        ({"slots": 2**32}, r"slots=4,294,967,296 is not valid: it must be below 2\*\*32"),
    ],
)
def test_mailbox_create_with_bad_sizes_raises_value_error(
    kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        Mailbox.create(Msg, **kwargs)  # nothing made: the conftest fixture checks


SLOTS_RULE = r"it must be an int \(how many messages it holds, at least 1\)"
SLOT_SIZE_RULE = r"it must be an int \(a message's bytes, at least 1\)"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"slots": "4"},
            rf"slots='4' is not valid: {SLOTS_RULE}, not str; pass an int, like slots=4",
        ),
        (
            {"slots": 4.0},
            rf"slots=4\.0 is not valid: {SLOTS_RULE}, not float; pass an int, like slots=4",
        ),
        (
            {"slots": True},
            rf"slots=True is not valid: {SLOTS_RULE}, not bool; pass an int, like slots=16",
        ),
        (
            {"slot_size": "64"},
            rf"slot_size='64' is not valid: {SLOT_SIZE_RULE}, not str; pass an int, like "
            r"slot_size=64",
        ),
        (
            {"slot_size": None},
            rf"slot_size=None is not valid: {SLOT_SIZE_RULE}, not NoneType; pass an int, like "
            r"slot_size=512",
        ),
    ],
)
def test_mailbox_create_with_sizes_of_another_type_raises_type_error(
    kwargs: dict[str, Any], message: str
) -> None:
    """A wrong type is a TypeError, as create_shm's and create_sem's are (it
    was a ValueError), naming the value, the rule and the fix."""
    with pytest.raises(TypeError, match=f"^{message}$"):
        Mailbox.create(Msg, **kwargs)  # nothing made: the conftest fixture checks


# --------------------------------------------------------------------------
# 2. Mailbox: senders killed
# --------------------------------------------------------------------------


@pytest.mark.parametrize("point", DEATH_POINTS)
def test_mailbox_sender_killed_mid_send_leaves_no_torn_message_and_is_reclaimed(
    point: str,
) -> None:
    """Wherever in send() a sender dies, the receiver never sees a torn message,
    and reclaim() gives the dead sender's slot back at once."""
    slots = 3
    out = run_scenario(killed_mid_send_scenario, (slots, point, True))
    assert out["claimed_slots"] == 1  # the dead sender's slot, never marked full
    assert out["freed"] == [1, 0], "reclaim() did not give the dead sender's slot back"
    assert out["capacity"] == [slots, slots]
    assert out["freed_after"] == 0


@pytest.mark.parametrize("point", DEATH_POINTS)
def test_mailbox_slot_of_a_sender_killed_mid_send_is_stepped_over_by_the_receiver(
    point: str,
) -> None:
    """Without reclaim(), the dead sender's slot holds its place in the ring
    until the receiver comes to it: the receiver gets its robust claim mutex
    ("owner died"), skips it, and the box has all its slots again."""
    slots = 3
    out = run_scenario(killed_mid_send_scenario, (slots, point, False))
    assert out["claimed_slots"] == 1
    assert out["capacity"] == [slots - 1, slots], "the dead sender's slot stayed lost"
    assert out["freed_after"] == 0


def test_mailbox_messages_of_senders_killed_before_they_posted_are_received() -> None:
    """A sender killed after it marked its message full, before it posted
    ``filled``, leaves a message without its token: the receiver still gets
    it, even when the whole box is such messages, and the box works on."""
    slots = 2
    assert run_scenario(killed_before_post_scenario, slots) == slots


def test_mailbox_send_that_meets_a_sender_killed_mid_claim_takes_the_slot() -> None:
    """A send that saw the cursor's slot empty, then got its claim mutex with
    "owner died" (a sender killed before it moved the cursor): the slot is
    the cursor's, so the send takes it, and the box loses nothing."""
    slots = 4
    assert run_scenario(sender_meets_a_death_scenario, slots) == slots


@pytest.mark.parametrize("point", SIGNAL_POINTS)
def test_mailbox_send_interrupted_by_a_signal_handler_leaves_the_box_usable(point: str) -> None:
    """An exception from a signal handler anywhere in the middle of a send
    gives back the slot's claim mutex: the box is not full for ever to
    every process. A slot claimed and published is stepped over as a dead
    sender's; a message marked full still reaches the receiver."""
    slots = 3
    out = run_scenario(interrupted_send_scenario, (slots, point))
    expected = [slots - 1, slots] if point == "claimed" else [slots, slots]
    assert out["capacity"] == expected
    assert out["abandons"] == (point == "after_trylock_twice")


def test_a_receivers_step_over_a_claimed_slot_interrupted_twice_leaves_the_box_usable() -> None:
    """Before: the second exception, as the give-back of the claim started,
    left the claim mutex held by the receiver's thread; the slot was never
    stepped over, and the box stayed a slot short (a box later, full)."""
    out = run_scenario(interrupted_step_over_scenario, 3)
    assert out["seen"] == ["trylock", "abandon"]
    assert out["then"] == "Msg(sender=7, seq=7)"
    assert out["capacity"] == [3, 3]


def test_mailbox_receive_interrupted_after_taking_a_token_loses_no_message() -> None:
    """A receive that a signal handler's exception ends after it took a
    message's token leaves that message without one. Before the fix, the
    next receives waited for a token first and looked for such a message only
    after 2 ms: a handler firing more often than that stalled the box."""
    assert run_scenario(interrupted_receive_scenario, 2) == [
        "Interrupted",
        repr(Msg(7, 7)),
        repr(Msg(8, 8)),
        "0 left",
    ]


def test_mailbox_sender_killed_while_blocked_on_a_full_box(pipes: Any) -> None:
    pid_r, pid_w = pipes()
    freed, capacity_after = run_scenario(killed_blocked_sender_scenario, (2, pid_r, pid_w))
    assert freed == 0  # the dead sender had claimed nothing
    assert capacity_after == 2


# --------------------------------------------------------------------------
# 3. ShmMutex
# --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["normal", "errorcheck", "recursive"])
def test_mutex_excludes_across_processes(kind: str) -> None:
    workers, rounds = 4, 2000
    total = run_scenario(mutual_exclusion_scenario, (kind, workers, rounds))
    assert total == workers * rounds, f"{workers * rounds - total} updates were lost"


def test_errorcheck_mutex_refuses_relock_and_unlock_by_a_non_holder() -> None:
    out = run_scenario(errorcheck_scenario, 0)
    assert out["relock"] == ["OSError", "EDEADLK"]
    assert out["relock_timeout"] == ["OSError", "EDEADLK"]
    assert out["other_while_held"] == ["PermissionError:EPERM", "False"]
    assert out["other_after"] == ["True", "None"]


def test_a_condition_wait_releases_every_level_of_a_recursive_mutex() -> None:
    """The C wait released one level of two: the signaller could never lock
    it, a silent deadlock. Like threading.Condition with an RLock, every
    level is released, and all of them are held again after the wait."""
    assert run_scenario(recursive_condition_wait_scenario, 0) == [
        "timed out: False",
        "woken: True",
        "signaller locked: True",
    ]


def test_recursive_mutex_counts_its_locks() -> None:
    out = run_scenario(recursive_scenario, 0)
    assert out["held_once"] == ["False"]
    assert out["released"] == ["True", "None"]


def test_mutex_kind_is_kept_when_opened_by_res_id() -> None:
    out = run_scenario(kinds_scenario, 0)
    # ops: kind, lock, lock again (timed), unlock, unlock
    assert out["normal"] == ["normal", "True", "False", "None", "PermissionError:EPERM"]
    assert out["errorcheck"] == [
        "errorcheck",
        "True",
        "OSError:EDEADLK",
        "None",
        "PermissionError:EPERM",
    ]
    assert out["recursive"] == ["recursive", "True", "True", "None", "None"]


@pytest.mark.parametrize("kind", ["normal", "errorcheck", "recursive"])
def test_mutex_holder_killed_next_locker_gets_owner_died(kind: str, pipes: Any) -> None:
    pid_r, pid_w = pipes()
    gate_r, gate_w = pipes()
    out = run_scenario(owner_died_scenario, (kind, "lock", pid_r, pid_w, gate_r, gate_w))
    assert out["held_by_us"] == ["False"], "OwnerDiedError was raised without the lock held"
    assert out["other_after"] == ["True", "None"]
    assert out["again"] is True


def test_with_mutex_after_owner_death_raises_and_leaves_it_unlocked(pipes: Any) -> None:
    pid_r, pid_w = pipes()
    gate_r, gate_w = pipes()
    out = run_scenario(owner_died_scenario, ("normal", "with", pid_r, pid_w, gate_r, gate_w))
    assert out["body"] == [], "the with-body ran after OwnerDiedError"
    assert out["other_after"] == ["True", "None"], "the with block left the mutex locked"


def test_waiter_blocked_on_a_dead_holder_learns_of_the_death(pipes: Any) -> None:
    pid_r, pid_w = pipes()
    gate_r, gate_w = pipes()
    seen = run_scenario(blocked_waiter_scenario, (pid_r, pid_w, gate_r, gate_w))
    assert seen == ["OwnerDiedError:", "None", "True", "None"]


@pytest.mark.parametrize("kind", ["fast", ["normal"], None], ids=["str", "list", "none"])
def test_mutex_bad_kind_raises_value_error(kind: object) -> None:
    # A list is not hashable: the check must not fail with that instead.
    with pytest.raises(
        ValueError, match=rf"kind {re.escape(repr(kind))} is not valid: use 'normal'"
    ):
        ShmMutex.create(kind)  # type: ignore[arg-type]  # nothing made: conftest checks


def test_mutex_in_one_process(master_cleanup: None) -> None:
    mutex = ShmMutex.create("errorcheck")
    try:
        with mutex:
            with pytest.raises(OSError) as info:
                mutex.lock(timeout=0)
            assert info.value.errno == errno.EDEADLK
        with pytest.raises(PermissionError, match=r"is not held by this thread"):
            mutex.unlock()
        assert mutex.lock(timeout=0) is True
        mutex.unlock()
    finally:
        mutex.release()


# --------------------------------------------------------------------------
# 4. ShmCondition
# --------------------------------------------------------------------------


def test_condition_signal_wakes_a_waiter_in_another_process(pipes: Any) -> None:
    ready_r, ready_w = pipes()
    [(woken, seen)] = run_scenario(condition_scenario, (1, "signal", ready_r, ready_w))
    assert seen == 7
    assert woken >= 1


def test_condition_broadcast_wakes_every_waiter(pipes: Any) -> None:
    ready_r, ready_w = pipes()
    results = run_scenario(condition_scenario, (3, "broadcast", ready_r, ready_w))
    assert len(results) == 3
    for woken, seen in results:
        assert seen == 7
        assert woken >= 1


def test_condition_wait_timeout_returns_false_holding_the_mutex() -> None:
    out = run_scenario(condition_timeout_scenario, 0)
    assert out["wait"] is False
    assert out["held_after_wait"] == ["False"]
    assert out["other_after"] == ["True", "None"]


def test_condition_wait_timeout_in_one_process(master_cleanup: None) -> None:
    mutex = ShmMutex.create("errorcheck")
    cond = ShmCondition.create()
    try:
        assert mutex.lock()
        assert cond.wait(mutex, timeout=SHORT) is False
        with pytest.raises(OSError) as info:  # this thread holds it again
            mutex.lock(timeout=0)
        assert info.value.errno == errno.EDEADLK
        mutex.unlock()
    finally:
        mutex.release()
        cond.release()


@pytest.mark.parametrize("kind", ["normal", "recursive"])
def test_a_condition_wait_cut_short_as_it_takes_a_dead_holders_mutex_leaves_it_usable(
    kind: str, master_cleanup: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A signal handler's exception just as the wait's relock returned
    EOWNERDEAD (the mutex's holder died while this thread waited) lost that
    code: the mutex, held and inconsistent, was unlocked by ``with`` and
    became unrecoverable (ENOTRECOVERABLE, for every process, for ever).
    The holder dies here as a thread that ends holding it."""
    mutex = ShmMutex.create(kind)  # type: ignore[arg-type]
    other = ShmMutex.open(mutex.res_id)
    cond = ShmCondition.create()
    relocks: list[int] = []

    def die_holding() -> None:
        other.lock(timeout=GUARD)  # taken once the wait gives it up; then the thread ends

    relock = interrupted_on_owner_died(_pthread._mutex_lock, relocks)
    monkeypatch.setattr(_pthread, "_mutex_lock", relock)
    holder = threading.Thread(target=die_holding)
    try:
        with sigusr1_raises(Interrupted):
            with pytest.raises(Interrupted) as info, mutex:
                if kind == "recursive":
                    mutex.lock()  # twice: the wait gives up, and takes back, both levels
                try:
                    holder.start()
                    cond.wait(mutex, timeout=GUARD)
                finally:
                    if kind == "recursive":
                        mutex.unlock()  # held, it must not be unmapped (glibc's robust list)
            holder.join()
            assert relocks[-1] == errno.EOWNERDEAD
            assert other.lock(timeout=0) is True  # before: OSError ENOTRECOVERABLE
            other.unlock()
            notes = getattr(info.value, "__notes__", [])
            assert any("died while holding it" in note for note in notes), notes
            # And it counts itself out of the condition's waiters, as on a return
            # (counted for ever, every signal would make a system call).
            assert ctypes.c_uint32.from_address(cond._addr + _pthread._WAITERS).value == 0
    finally:
        cond.release()
        other.release()
        mutex.release()


@pytest.mark.parametrize("how", ["lock", "with"])
def test_a_lock_cut_short_as_it_takes_a_dead_holders_mutex_passes_the_death_on(
    how: str, master_cleanup: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A signal handler's exception just as lock() took the mutex from a
    holder that died (EOWNERDEAD) ends lock() without it, repaired; and the
    death is passed on: the next locker gets OwnerDiedError, as it would had
    the exception come before. Before, the death was lost (the next lock
    "returned True"): nobody repaired what the dead holder left half done."""
    mutex = ShmMutex.create("normal")
    other = ShmMutex.open(mutex.res_id)
    end_a_thread_holding(other.lock, mutex._state.word)
    tries: list[int] = []
    monkeypatch.setattr(_shm_sync, "_trylock", interrupted_on_owner_died(_shm_sync._trylock, tries))
    try:
        with sigusr1_raises(Interrupted):
            with pytest.raises(Interrupted):
                if how == "lock":
                    mutex.lock()
                else:
                    with mutex:
                        pytest.fail("the with-body ran")
            monkeypatch.undo()
            assert tries == [errno.EOWNERDEAD]
            assert mutex._state.depth() == 0, "lock() raised, and left the mutex held"
            with pytest.raises(OwnerDiedError, match=r"died while holding it; you hold it now"):
                other.lock(timeout=0)
            other.unlock()
            assert mutex.lock(timeout=0) is True  # told once
            mutex.unlock()
    finally:
        other.release()
        mutex.release()


# --------------------------------------------------------------------------
# 5. PosixSemaphore
# --------------------------------------------------------------------------


def test_semaphore_post_and_wait_across_processes() -> None:
    out = run_scenario(sem_scenario, 200)
    assert out["pong"] == 200
    assert out["values"] == [0, 0]
    assert out["taken"] == [True, True, False]
    assert out["start_value"] == 0


# --------------------------------------------------------------------------
# 6. Cleanup: every primitive is a managed resource
# --------------------------------------------------------------------------


def test_primitives_are_gone_once_their_users_have_ended() -> None:
    paths = run_scenario(create_and_keep_scenario, 0)
    assert len(paths) == 4
    left = [p for p in paths if os.path.exists(p)]
    assert not left, f"primitives outlived every process that used them: {left}"


def test_primitives_held_by_the_master_outlive_run_until_released(
    master_cleanup: None,
) -> None:
    box = Mailbox.create(Msg, slots=2, slot_size=32)
    mutex = ShmMutex.create("normal")
    cond = ShmCondition.create()
    sem = netmcore.create_sem(0)
    primitives: list[Any] = [box, mutex, cond, sem]
    paths = [shm_path(netmcore.get_shm(p.res_id)) for p in (box, mutex, cond)]
    paths.append(sem_path(sem.name))
    try:
        netmcore.run(
            first_process=lambda: use_and_keep.start(
                (box.res_id, mutex.res_id, cond.res_id, sem.res_id)
            ),
            extract_result=lambda _c, pid: outcome_value(use_and_keep.join_outcome_nowait(pid)),
        )
        assert all(os.path.exists(p) for p in paths), "run() destroyed what the master holds"
        # The master, which owns the box, gets what the worker sent.
        assert box.receive(timeout=0) == Msg(5, 5)
        assert sem.wait(timeout=0) is True
        assert mutex.lock(timeout=0) is True
        mutex.unlock()
    finally:
        for p in primitives:
            p.release()
    left = [p for p in paths if os.path.exists(p)]
    assert not left, f"released by the master, their last user, yet still there: {left}"


# --------------------------------------------------------------------------
# 7. Ends and misuse: a receiver that ended, closed objects, other kinds,
#    timeouts
# --------------------------------------------------------------------------


@netmcore.process
def mb_receive_once_then_die(res_w: int) -> None:
    box = Mailbox.create(Msg, slots=1, slot_size=32)
    os.write(res_w, f"{box.res_id.n}\n".encode())
    box.receive(timeout=GUARD)
    os._exit(3)


@netmcore.process
def receiver_ended_scenario(arg: tuple[int, int]) -> str:
    res_r, res_w = arg
    pid = mb_receive_once_then_die.start(res_w)
    box = Mailbox.open(ResId(int(os.read(res_r, 64))), Msg)
    try:
        box.send(Msg(0, 1))
        mb_receive_once_then_die.join(pid)  # the receiver has ended
        box.send(Msg(0, 2))  # fills the only slot
        with pytest.raises(BrokenPipeError) as info:
            box.send(Msg(0, 3), timeout=GUARD)
        return str(info.value)
    finally:
        box.release()


def test_mailbox_send_to_a_full_box_whose_receiver_ended_raises_broken_pipe(pipes: Any) -> None:
    """As for a pipe's writer: a full box whose receiver has ended will never
    have room again, so send() raises BrokenPipeError instead of waiting."""
    message = run_scenario(receiver_ended_scenario, pipes())
    assert "has ended, and the box is full: nothing will take this message" in message
    assert message.startswith("[Errno 32] the receiver of Mailbox(ResId(")


USE_AFTER_CLOSE = {
    "ShmMutex": "m = netmcore.ShmMutex.create(); m.release(); m.lock()",
    "ShmCondition": "c = netmcore.ShmCondition.create(); c.close(); c.signal()",
    "Mailbox": "b = netmcore.Mailbox.create(int); b.close(); b.receive(timeout=0)",
}


@pytest.mark.parametrize("kind", sorted(USE_AFTER_CLOSE))
def test_primitive_used_after_close_or_release_raises_value_error(kind: str) -> None:
    """A closed object's memory is unmapped: using it is a ValueError (in a
    subprocess, since a regression would crash the process with SIGSEGV)."""
    code = (
        f"import netmcore\ntry:\n    {USE_AFTER_CLOSE[kind]}\nexcept ValueError as e:\n    print(e)"
    )
    returncode, out = run_snippet(code, timeout=GUARD)
    assert returncode == 0
    assert re.fullmatch(
        rf"{kind}\(ResId\(\d+\).*\) is closed or released in this process: .*\n", out
    )


@pytest.mark.parametrize(
    ("cls", "make"),
    [
        (ShmMutex, ShmCondition.create),
        (ShmMutex, lambda: netmcore.create_shm(128)),
        (ShmCondition, ShmMutex.create),
        (ShmCondition, lambda: netmcore.create_shm(16)),  # smaller than a condition
    ],
    ids=["mutex-on-condition", "mutex-on-shm", "condition-on-mutex", "condition-on-small-shm"],
)
def test_opening_another_kind_of_object_is_a_value_error(
    cls: Any, make: Callable[[], Any], master_cleanup: None
) -> None:
    """As Mailbox.open does: a mutex or condition is recognised by the mark its
    creator wrote, and anything else is refused, naming the resource."""
    other = make()
    try:
        with pytest.raises(ValueError, match=rf"^resource ResId\({other.res_id.n}\) is not a "):
            cls.open(other.res_id)
    finally:
        other.release()


def test_opening_a_semaphore_as_a_mutex_is_no_resource_naming_both_types(
    master_cleanup: None,
) -> None:
    sem = netmcore.create_sem(0)
    try:
        with pytest.raises(netmcore.NoResource, match=r"it is a POSIX_SEM, not a POSIX_SHM"):
            ShmMutex.open(sem.res_id)
    finally:
        sem.release()


@netmcore.process
def mx_open_plain_shm(arg: tuple[ResId, int, int]) -> str:
    """Open a plain shm object as a mutex, say so, and live on until told to go."""
    res_id, said_w, go_r = arg
    try:
        ShmMutex.open(res_id)
        message = "opened"
    except Exception as exc:
        message = f"{type(exc).__name__}: {exc}"
    os.write(said_w, b"x")
    os.read(go_r, 1)
    return message


@netmcore.process
def failed_open_scenario(arg: tuple[int, int, int, int]) -> list[Any]:
    said_r, said_w, go_r, go_w = arg
    segment = netmcore.create_shm(128)
    path = shm_path(segment.name)
    pid = mx_open_plain_shm.start((segment.res_id, said_w, go_r))
    try:
        assert os.read(said_r, 1) == b"x"
        segment.release()  # the last user, unless the refused open kept its caller
        gone = not os.path.exists(path)
    finally:
        os.write(go_w, b"x")
    return [gone, joined(mx_open_plain_shm, pid)]


def test_refused_open_leaves_the_caller_out_of_the_users_set(pipes: Any) -> None:
    gone, message = run_scenario(failed_open_scenario, (*pipes(), *pipes()))
    assert message.startswith("ValueError: resource ResId(")
    assert gone, "a refused open kept its caller as a user of the object"


def _lock_mutex(timeout: float) -> bool:
    mutex = ShmMutex.create()
    try:
        got = mutex.lock(timeout=timeout)
        mutex.unlock()
        return got
    finally:
        mutex.release()


def _wait_sem(timeout: float) -> bool:
    sem = netmcore.create_sem(1)
    try:
        return sem.wait(timeout=timeout)
    finally:
        sem.release()


def _receive(timeout: float) -> bool:
    box = Mailbox.create(int, slots=1, slot_size=16)
    try:
        box.send(1)
        return box.receive(timeout=timeout) == 1
    finally:
        box.release()


WAITS = {"mutex": _lock_mutex, "semaphore": _wait_sem, "mailbox": _receive}


@pytest.mark.parametrize("wait", ["mutex", "semaphore"])
def test_infinite_timeout_waits_without_limit(wait: str, master_cleanup: None) -> None:
    """math.inf is a timeout like None: no deadline."""
    assert WAITS[wait](math.inf) is True


@pytest.mark.parametrize("timeout", [math.nan, -1.0])
@pytest.mark.parametrize("wait", sorted(WAITS))
def test_nan_or_negative_timeout_is_a_value_error(
    wait: str, timeout: float, master_cleanup: None
) -> None:
    with pytest.raises(ValueError, match=rf"^timeout {timeout} is not valid: give a number"):
        WAITS[wait](timeout)


# --------------------------------------------------------------------------
# A refused open (another kind of object) keeps the caller's earlier use
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "wrong_open", "right_open"),
    [
        (ShmMutex.create, ShmCondition.open, ShmMutex.open),
        (ShmCondition.create, ShmMutex.open, ShmCondition.open),
        (lambda: Buffer.create(64), ShmMutex.open, Buffer.open),
    ],
    ids=["mutex-opened-as-condition", "condition-opened-as-mutex", "buffer-opened-as-mutex"],
)
def test_refused_open_by_its_creator_does_not_destroy_the_object(
    make: Callable[[], Any],
    wrong_open: Callable[[ResId], Any],
    right_open: Callable[[ResId], Any],
    master_cleanup: None,
) -> None:
    """The creator is a user of the object; opening it as the wrong kind by
    mistake is a ValueError and leaves the object as it was (a release there
    would end the creator's own use, the last one: the object would go)."""
    obj = make()
    try:
        with pytest.raises(ValueError, match="is not a"):
            wrong_open(obj.res_id)
        right_open(obj.res_id).release()  # still there
    finally:
        obj.release()


# --------------------------------------------------------------------------
# A sender that asked whether the receiver lives holds no descriptor after
# --------------------------------------------------------------------------


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@netmcore.process
def full_box_sender(res_id: ResId) -> int:
    """Open the full box, time out sending to it, drop it; return fds leaked."""
    before = _fds()
    for _ in range(5):
        box = Mailbox.open(res_id, int)
        with pytest.raises(TimeoutError):
            box.send(1, timeout=0.002)  # waits, then asks whether the receiver lives
        del box
        gc.collect()
    return _fds() - before


@netmcore.process
def dropped_sender_scenario(_: int) -> int:
    box = Mailbox.create(int, slots=1, slot_size=16)
    try:
        box.send(0)  # the box is full now
        leaked: int = joined(full_box_sender, full_box_sender.start(box.res_id))
    finally:
        box.release()
    return leaked


def test_dropped_sender_mailbox_leaks_no_file_descriptor() -> None:
    """A sender waiting on a full box asks, through a pidfd, whether the
    receiver lives; a Mailbox dropped without close() leaves no descriptor
    open (an earlier version kept the pidfd in the Mailbox)."""
    assert run_scenario(dropped_sender_scenario, 0) == 0


# --------------------------------------------------------------------------
# Mailbox.open with the wrong type, by the box's own creator: the refused open
# releases the creator's use (segment.release() in Mailbox.open), and the box
# is destroyed under its receiver. b76dd43 (ResInfo.was_user, _let_go) fixed
# this for a wrong mark only.
# --------------------------------------------------------------------------


def test_mailbox_open_with_the_wrong_type_keeps_the_creators_use(master_cleanup: None) -> None:
    box = Mailbox.create(int, slots=2, slot_size=64)
    try:
        with pytest.raises(EncapTypeMismatch):
            Mailbox.open(box.res_id, str)
        sender = Mailbox.open(box.res_id, int)  # NoResource once it is destroyed
        sender.send(7)
        sender.release()  # (closed only, its use stayed counted in this process)
        assert box.receive(timeout=1) == 7
    finally:
        box.release()


# --------------------------------------------------------------------------
# Errors that name the value, the rule and the fix
# --------------------------------------------------------------------------


def test_mailbox_open_with_another_type_names_a_long_box_type_clipped(
    master_cleanup: None,
) -> None:
    """The box's type name is kept in its header, in a room of TYPE_NAME_MAX
    bytes: a longer one is cut there (here in the middle of a 2-byte
    character, which is dropped), and what follows the room still works."""
    long_name = msgspec.defstruct("Long" + "é" * 300, [("k", int)], module="tests")
    clipped = clipped_name(netmcore.EncapType(long_name).name)
    assert clipped == "tests.Long" + "é" * 89 + "..."
    assert len(clipped.encode()) == TYPE_NAME_MAX - 1
    with Mailbox.create(long_name, slots=2, slot_size=64) as box:
        with pytest.raises(EncapTypeMismatch) as info:
            Mailbox.open(box.res_id, int)
        assert re.fullmatch(open_mismatch(long_name, int), str(info.value)), str(info.value)
        sender = Mailbox.open(box.res_id, long_name)
        sender.send(long_name(k=1), timeout=0)
        sender.release()
        assert box.receive(timeout=0) == long_name(k=1)


@pytest.mark.parametrize("kind", ["normal", "errorcheck"])
def test_condition_wait_on_a_mutex_not_held_names_both_and_the_rule(
    kind: str, master_cleanup: None
) -> None:
    mutex = ShmMutex.create(kind)  # type: ignore[arg-type]
    cond = ShmCondition.create()
    try:
        with pytest.raises(PermissionError) as info:
            cond.wait(mutex, timeout=SHORT)
        assert info.value.errno == errno.EPERM
        assert re.fullmatch(
            rf"\[Errno 1\] ShmMutex\(ResId\(\d+\), {kind}\) is not held by this thread: lock "
            r"the mutex before ShmCondition\(ResId\(\d+\)\)\.wait\(\), as threading\.Condition "
            r"requires \(with mutex: while not ready\(\): cond\.wait\(mutex\)\)",
            str(info.value),
        )
    finally:
        mutex.release()
        cond.release()


def test_errorcheck_relock_names_the_mutex_and_the_fix(master_cleanup: None) -> None:
    mutex = ShmMutex.create("errorcheck")
    try:
        with mutex, pytest.raises(OSError) as info:
            mutex.lock()
        assert info.value.errno == errno.EDEADLK
        assert re.fullmatch(
            r"\[Errno 35\] ShmMutex\(ResId\(\d+\), errorcheck\) is already held by this thread, "
            "and an errorcheck mutex refuses to be locked again by its holder: unlock it "
            "first, or create it with kind 'recursive' to lock it more than once",
            str(info.value),
        )
    finally:
        mutex.release()


def test_condition_wait_on_something_else_than_a_mutex_is_a_type_error(
    master_cleanup: None,
) -> None:
    cond = ShmCondition.create()
    try:
        with pytest.raises(
            TypeError,
            match=r"^ShmCondition\(ResId\(\d+\)\)\.wait\(\) takes the "
            r"ShmMutex that guards the condition \(locked by the caller\), not "
            r"object: call cond\.wait\(mutex\)$",
        ):
            cond.wait(object())  # type: ignore[arg-type]
    finally:
        cond.release()


def _lock_twice(timeout: Any) -> object:
    mutex = ShmMutex.create()
    try:
        return mutex.lock(timeout=timeout)
    finally:
        mutex.release()


def _wait_on_condition(timeout: Any) -> object:
    mutex, cond = ShmMutex.create(), ShmCondition.create()
    try:
        with mutex:
            return cond.wait(mutex, timeout=timeout)
    finally:
        mutex.release()
        cond.release()


def _receive_nothing(timeout: Any) -> object:
    box = Mailbox.create(int, slots=1, slot_size=16)
    try:
        return box.receive(timeout=timeout)
    finally:
        box.release()


@pytest.mark.parametrize("timeout", ["1", True, b"1"], ids=["str", "bool", "bytes"])
@pytest.mark.parametrize("wait", [_lock_twice, _wait_on_condition, _receive_nothing])
def test_timeout_that_is_not_a_number_is_a_type_error(
    wait: Callable[[Any], object], timeout: Any, master_cleanup: None
) -> None:
    """Not a comparison's TypeError from deep inside (and a bool is no number of seconds)."""
    with pytest.raises(
        TypeError,
        match=rf"^timeout {re.escape(repr(timeout))} is not valid: "
        r"give a number of seconds \(an int or a float\) of 0 or more, or None",
    ):
        wait(timeout)


def test_mailbox_too_large_for_dev_shm_names_its_slots_and_the_fix() -> None:
    """Just past /dev/shm's total size: it could never be filled."""
    total = shm_space()[1]
    if not total:
        pytest.skip("/dev/shm has no size limit (a tmpfs mounted with size=0)")
    slots = (total - _first_slot(False)) // _stride(512) + 1
    size = _first_slot(False) + slots * _stride(512)
    assert size - _stride(512) <= total < size
    with pytest.raises(ValueError) as info:
        Mailbox.create(int, slots=slots)
    assert re.fullmatch(
        rf"a Mailbox of {slots:,} slots of 512 bytes needs {size:,} bytes, which is too "
        rf"large: /dev/shm, where shared memory lives, is {total:,} bytes in all, so an object "
        r"larger than that could never be filled \(a process that writes past the space there "
        r"is killed by SIGBUS\)\. Create it with fewer slots or a smaller slot_size, or "
        r"enlarge /dev/shm \(mount -o remount,size=\.\.\., or docker run --shm-size=\.\.\.\)",
        str(info.value),
    ), str(info.value)


def test_mailbox_whose_creation_would_fill_past_the_free_space_is_refused(
    master_cleanup: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past the free space (here made to show 1 MiB), but creating it writes a
    lock in every slot, and small slots share pages: it fills the whole box at
    once, and its maker would die of SIGBUS. Refused before anything is made."""
    real = os.statvfs(SHM_DIR)
    if not real.f_blocks:
        pytest.skip("/dev/shm has no size limit (a tmpfs mounted with size=0)")
    free = 1 << 20
    shown = os.statvfs_result((*real[:4], free // real.f_frsize, *real[5:]))
    monkeypatch.setattr(os, "statvfs", lambda path: shown)
    slots = 8192
    size = _first_slot(False) + slots * _stride(512)
    assert free < size <= shm_space()[1]
    with pytest.raises(ValueError) as info:
        Mailbox.create(int, slots=slots)
    assert re.fullmatch(
        rf"a Mailbox of 8,192 slots of 512 bytes needs {size:,} bytes, and creating it fills "
        r"[\d,]+ bytes at once \(the pages of a lock in every slot\), which is too much: "
        r"/dev/shm, where shared memory lives, has 1,048,576 bytes free, and a process that "
        r"writes past its free space is killed by SIGBUS\. Create it with fewer slots or a "
        r"smaller slot_size, or make room in /dev/shm \(or enlarge it: mount -o "
        r"remount,size=\.\.\., or docker run --shm-size=\.\.\.\)",
        str(info.value),
    ), str(info.value)


def test_mailbox_larger_than_the_free_space_with_few_slots_is_made(master_cleanup: None) -> None:
    """Creating it writes a page per slot: a box of a few slots (of under
    2 GiB) as large as /dev/shm, past its free space, is made, and carries
    messages while they fit. It was refused, naming the free space."""
    with shm_partly_used() as (free, total):
        slots = total // 2**31 + 2
        slot_size = (total - _first_slot(False)) // slots - 3 * 64  # its stride: a little more
        assert free < _first_slot(False) + slots * _stride(slot_size) <= total
        with Mailbox.create(bytes, slots=slots, slot_size=slot_size) as box:
            sender = Mailbox.open(box.res_id, bytes)
            try:
                for message in (b"first", b"second" * 1000):
                    sender.send(message, timeout=0)
                    assert box.receive(timeout=0) == message
            finally:
                sender.release()


GIB = 1 << 30
TOO_LARGE_TO_MAP = {
    # 1 GiB each, more than the address space this process is left
    "Mailbox": (
        "netmcore.Mailbox.create(int, slots=1 << 18, slot_size=4000)",
        r"\[Errno 12\] a Mailbox of 262,144 slots of 4,000 bytes needs "
        f"{_first_slot(False) + (1 << 18) * _stride(4000):,} bytes, more than this process "
        "can map: create it with fewer slots or a smaller slot_size",
    ),
    "Buffer": (
        "netmcore.Buffer.create(1 << 30)",
        r"\[Errno 12\] a Buffer of capacity 1,073,741,824 needs "
        f"{_RING + GIB:,} bytes of shared "
        "memory, more than this process can map: create it with a smaller capacity",
    ),
}


@pytest.mark.skipif(
    0 < shm_space()[1] < 2 * GIB,
    reason="needs a /dev/shm of 2 GiB, so that only the mapping fails",
)
@pytest.mark.parametrize("kind", sorted(TOO_LARGE_TO_MAP))
def test_object_too_large_to_map_names_its_size_and_the_fix(kind: str) -> None:
    """/dev/shm has room, but the process cannot map that much (RLIMIT_AS
    here): a bare "Cannot allocate memory" named neither the size nor the fix.
    In a subprocess, whose address space is limited; nothing is left behind."""
    make, message = TOO_LARGE_TO_MAP[kind]
    code = (
        "import re, resource, netmcore\n"
        "size = int(re.search(r'VmSize:\\s+(\\d+)', open('/proc/self/status').read())[1]) * 1024\n"
        "resource.setrlimit(resource.RLIMIT_AS, (size + (256 << 20), resource.RLIM_INFINITY))\n"
        f"try:\n    {make}\nexcept OSError as e:\n    print(e)\n"
    )
    returncode, out = run_snippet(code, timeout=GUARD)
    assert returncode == 0
    assert re.fullmatch(message + "\n", out), out


# --------------------------------------------------------------------------
# Mailbox: qsize(), with
# --------------------------------------------------------------------------


def test_mailbox_qsize_counts_the_messages_waiting(master_cleanup: None) -> None:
    box = Mailbox.create(int, slots=4, slot_size=16)
    sender = Mailbox.open(box.res_id, int)
    try:
        sizes = [box.qsize()]
        for k in range(3):
            sender.send(k)
            sizes.append(box.qsize())
        assert box.receive(timeout=0) == 0
        sizes += [box.qsize(), sender.qsize()]  # a sender may ask too
        assert sizes == [0, 1, 2, 3, 2, 2]
    finally:
        sender.release()
        box.release()


def test_mailbox_with_releases_it(master_cleanup: None) -> None:
    with Mailbox.create(int, slots=1, slot_size=16) as box:
        box.send(1)
    with pytest.raises(ValueError, match=r"is closed or released in this process"):
        box.receive(timeout=0)
    # Released: the box is gone (the fixture finds no /dev/shm entry left).
    with pytest.raises(netmcore.NoResource):
        Mailbox.open(box.res_id, int)


# --------------------------------------------------------------------------
# with mutex: after its close() or release() (it died of SIGSEGV)
# --------------------------------------------------------------------------


@netmcore.process
def with_closed_mutex(arg: tuple[str, str]) -> str:
    """Close or release a mutex, then enter ``with`` on it; say what it did."""
    kind, how = arg
    mutex = ShmMutex.create(kind)  # type: ignore[arg-type]
    try:
        getattr(mutex, how)()

        def enter() -> None:
            with mutex:
                pass

        return outcome_text(enter)
    finally:
        mutex.release()


@pytest.mark.parametrize("how", ["close", "release"])
@pytest.mark.parametrize("kind", ["normal", "errorcheck", "recursive"])
def test_with_on_a_closed_or_released_mutex_raises_value_error(kind: str, how: str) -> None:
    """The with-statement read the mutex's word, in memory unmapped by the
    close, before lock() could refuse: the process died of SIGSEGV. It runs
    in a worker, whose outcome tells such a crash apart (a failed test, not
    a dead pytest)."""
    said = run_scenario(with_closed_mutex, (kind, how))
    assert re.fullmatch(
        rf"ValueError: ShmMutex\(ResId\(\d+\), {kind}\) is closed or released in this "
        "process: open it again by its res_id to use it",
        said,
    ), said


# --------------------------------------------------------------------------
# Several handles on one object in one process: each counts, and the
# process's use ends with the last (a second handle's release destroyed the
# object for everyone: a users set counts the process once)
# --------------------------------------------------------------------------


def _use_box(box: Mailbox[int]) -> None:
    box.send(1, timeout=0)


def _use_mutex(mutex: ShmMutex) -> None:
    assert mutex.lock(timeout=0)
    mutex.unlock()


def _use_condition(cond: ShmCondition) -> None:
    cond.signal()


def _use_segment(segment: netmcore.ShmSegment) -> None:
    segment.buffer[0] = 1


def _use_semaphore(sem: netmcore.PosixSemaphore) -> None:
    sem.post()


# Each kind of handle: make one, open another by res_id, use one.
HANDLES: dict[str, tuple[Callable[[], Any], Callable[[ResId], Any], Callable[[Any], None]]] = {
    "Mailbox": (
        lambda: Mailbox.create(int, slots=4, slot_size=16),
        lambda res_id: Mailbox.open(res_id, int),
        _use_box,
    ),
    "ShmMutex": (ShmMutex.create, ShmMutex.open, _use_mutex),
    "ShmCondition": (ShmCondition.create, ShmCondition.open, _use_condition),
    "ShmSegment": (lambda: netmcore.create_shm(64), netmcore.open_shm, _use_segment),
    "PosixSemaphore": (netmcore.create_sem, netmcore.open_sem, _use_semaphore),
}


def open_use_release(kind: str, res_id: ResId) -> None:
    _, reopen, use = HANDLES[kind]
    handle = reopen(res_id)
    try:
        use(handle)
    finally:
        handle.release()


@netmcore.process
def other_process_opens(arg: tuple[str, ResId]) -> str:
    kind, res_id = arg
    return outcome_text(lambda: open_use_release(kind, res_id))


@netmcore.process
def second_handle_scenario(kind: str) -> list[str]:
    """Make an object, open and release a second handle on it in the same
    process (a helper would, ``with Mailbox.open(...)``); then use the first,
    and have another process open it; then release the first."""
    make, _, use = HANDLES[kind]
    obj = make()
    try:
        open_use_release(kind, obj.res_id)
        seen = [outcome_text(lambda: use(obj))]
        seen.append(joined(other_process_opens, other_process_opens.start((kind, obj.res_id))))
    finally:
        obj.release()  # its last handle in this process, its last user: it goes
    seen.append(joined(other_process_opens, other_process_opens.start((kind, obj.res_id))))
    return seen


@pytest.mark.parametrize("kind", sorted(HANDLES))
def test_releasing_a_second_handle_in_one_process_leaves_the_object(kind: str) -> None:
    first, other, after = run_scenario(second_handle_scenario, kind)
    assert first == "returned None"
    assert other == "returned None", "a second handle's release destroyed the object"
    assert after.startswith("NoResource: "), "the last handle's release left the object"


def test_mailbox_helper_that_opens_the_creators_box_leaves_it_to_the_creator(
    master_cleanup: None,
) -> None:
    """The reviewer's case, in the creator's process: a helper that sends
    through ``with Mailbox.open(...)`` released the creator's use, and the
    box was gone (its senders got NoResource, its receive waited for ever)."""

    def notify(res_id: ResId, value: int) -> None:
        with Mailbox.open(res_id, int) as box:
            box.send(value, timeout=0)

    box = Mailbox.create(int, slots=2, slot_size=16)
    try:
        notify(box.res_id, 1)
        notify(box.res_id, 2)  # NoResource once the box is gone
        assert receive_all(box, 2) == [1, 2]
    finally:
        box.release()
    with pytest.raises(netmcore.NoResource):  # the creator's was the last handle
        Mailbox.open(box.res_id, int)


INHERITED: list[Any] = []  # handles the master makes before run: every worker has them


def uses(res_id: ResId) -> str:
    """Whether this process uses ``res_id``, by hand_over: NoResource for a
    process that does not (and nothing changes for one that does, the
    master using it too)."""
    return outcome_text(lambda: netmcore.hand_over(res_id)).split(":")[0]


@netmcore.process
def inherited_handle_scenario(res_id: ResId) -> list[str]:
    """In a worker, which has the master's handle ``INHERITED[0]`` on the
    box: say whether it uses the box after its own handle's release, and
    while its own handle is open once the inherited one is released."""
    own = Mailbox.open(res_id, int)
    own.send(5, timeout=0)
    own.release()  # its only handle of its own: its use ends
    seen = [uses(res_id)]
    own = Mailbox.open(res_id, int)
    INHERITED[0].release()  # the master's use, not this process's: it ends none
    seen.append(uses(res_id))
    own.release()
    seen.append(uses(res_id))
    return seen


def test_handles_inherited_by_a_worker_are_not_its_own_uses(master_cleanup: None) -> None:
    """A worker is a copy of the master, handles included: they are the
    master's uses, not the worker's. The worker's own handles count from
    none (the master's counts, copied, kept it a user after its own last
    handle's release), and releasing an inherited one ends no use of the
    worker's (it ended the worker's own, while its own handle was open)."""
    box = Mailbox.create(int, slots=2, slot_size=16)
    INHERITED[:] = [box]
    try:
        seen = run_scenario(inherited_handle_scenario, box.res_id)
        assert seen == ["NoResource", "returned None", "NoResource"]
        assert box.receive(timeout=0) == 5  # the master's handle, and use, are intact
    finally:
        INHERITED.clear()
        box.release()
    with pytest.raises(netmcore.NoResource):
        Mailbox.open(box.res_id, int)
