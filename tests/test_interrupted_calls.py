"""Calls that a signal handler's exception interrupts leave nothing behind.

- A Mailbox's receiver that steps over a dead sender's slot try-locks the
  slot's claim: an exception just as that lock was taken left the claim
  held by the receiver's thread, the slot stuck for good, and the release
  of the box unmapped a mutex on the thread's robust list (the next robust
  mutex call could die of SIGSEGV).
- A Mailbox's receive interrupted once it had taken a message out of its
  slot, before its caller had the value, lost that message for good.
- An open or a create whose caller the master already counted as a user,
  interrupted before the handle that would release that use existed (or
  before the caller had the object built on it), left the process a user
  until it ended: the object outlived its last release.
- A worker's resource call withdrawn after an interrupt gave back its grant
  in a function that held further interrupts only once its loop began: a
  second one at its start left the use.
- The master's own resource calls (and a program's before run), cut short
  once they had changed the table, left the master a user, or the object
  managed, that nothing released.

Each test here failed before its fix; the docstring of each says how. The
signals are sent by the tests themselves where a real one could land
(``interrupting``); SIGINT's handler raises, as a Ctrl-C's or a timeout's.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

# SharedArray imports numpy at its first use: imported here, so that the
# interrupted points are the create's, not those of an import cut short.
import msgspec
import numpy  # noqa: F401
import posix_ipc
import pytest
from interrupting import (
    Interrupted,
    at_every_point,
    handler_raises,
    interrupted_after,
    through_another_thread,
)
from scenario import in_master, joined, outcome_text, own_shm_entries, run_scenario, wait_until

import netmcore
from netmcore import (
    Buffer,
    Mailbox,
    ResId,
    SharedArray,
    ShmCondition,
    ShmMutex,
    _ipc,
    _mailbox,
    _pthread,
    _resource_api,
    _resources,
    _shared_array,
)
from netmcore._wire import Link

pytestmark = pytest.mark.timeout(60)

# The bit the kernel sets in a robust mutex's futex word when its holder
# ends holding it (the kernel's ABI).
OWNER_DIED = 0x40000000
SLOTS = 2

# --------------------------------------------------------------------------
# A Mailbox's receiver interrupted as it steps over a dead sender's slot
# --------------------------------------------------------------------------


def _leave_a_claimed_slot(box: Mailbox[int], how: str) -> None:
    """Claim the cursor's slot as a sender does (it is slot 0, the box
    fresh), and go, leaving it claimed: ``died``, a sender thread that ends
    holding the claim (the kernel marks the robust mutex, and the next
    locker gets EOWNERDEAD); ``abandoned``, a send cut short after its
    claim, which gave the claim back."""
    if how == "died":
        sender = threading.Thread(target=box._claim_slot)
        sender.start()
        sender.join()
        word = _pthread.MutexState(box._claims[0]).word
        wait_until(lambda: bool(word.value & OWNER_DIED), "the dead sender's mark")
    else:
        assert box._claim_slot() == 0
        _pthread.raw_mutex_unlock(box._claims[0])


def _claims_held_here(box: Mailbox[int]) -> int:
    return sum(_pthread.MutexState(claim).depth() for claim in box._claims)


def _round_trips(box: Mailbox[int]) -> list[int]:
    """Send and receive a message at a time, round the box twice: a slot
    that stays stuck makes a send find the box full."""
    got = []
    for k in range(2 * SLOTS):
        box.send(k, timeout=0)
        got.append(box.receive(timeout=0))
    return got


def _lock_another_robust_mutex() -> None:
    """Lock and unlock a robust mutex: glibc links it into this thread's
    robust list, writing into the entry already there (a crash, if that
    one's memory was unmapped)."""
    mutex = ShmMutex.create()
    try:
        with mutex:
            pass
    finally:
        mutex.release()


@netmcore.process
def interrupted_receiver(arg: tuple[str, str, str]) -> list[str]:
    """A box whose slot 0 a sender left claimed (``how``), and a message in
    slot 1; ``call`` (receive or reclaim) is interrupted just after its
    ``point`` call returns (the claim's trylock, as it took the lock; or its
    unlock, the slot already marked): then say what the box does."""
    call, point, how = arg
    box = Mailbox.create(int, slots=SLOTS, slot_size=16)
    seen = []
    try:
        _leave_a_claimed_slot(box, how)
        box.send(1, timeout=0)
        real = getattr(_mailbox, point)
        took = (0, errno.EOWNERDEAD)
        with handler_raises(signal.SIGINT):
            setattr(_mailbox, point, interrupted_after(real, lambda rc: rc in took))
            try:
                seen.append(outcome_text(getattr(box, call)))
            finally:
                setattr(_mailbox, point, real)
        seen.append(f"claims held by this thread: {_claims_held_here(box)}")
        if call == "reclaim":
            seen.append(outcome_text(box.reclaim))
        seen.append(outcome_text(lambda: box.receive(timeout=0)))
        seen.append(outcome_text(lambda: _round_trips(box)))
        seen.append(outcome_text(box.qsize))
    finally:
        box.release()
    seen.append(outcome_text(_lock_another_robust_mutex))
    return seen


@pytest.mark.parametrize("how", ["died", "abandoned"])
@pytest.mark.parametrize(
    ("call", "point"),
    [("receive", "_trylock"), ("reclaim", "_trylock"), ("receive", "_unlock")],
)
def test_a_receiver_interrupted_stepping_over_a_dead_senders_slot_leaves_the_box_working(
    call: str, point: str, how: str
) -> None:
    """Before, at the trylock: the receiver's thread kept the claim ("claims
    held by this thread: 1"), the slot was never stepped over, and the box
    was full for good after one round (TimeoutError); its release left the
    mutex on the thread's robust list. At the unlock (receive): the slot,
    marked taken, stayed at the window start, which never moved on again,
    and the box was full after one round too."""
    seen = run_scenario(interrupted_receiver, (call, point, how))
    expected = [
        "Interrupted: the handler of SIGINT",
        "claims held by this thread: 0",
        *(["returned 1"] if call == "reclaim" else []),  # the slot given back
        "returned 1",  # the message after it
        f"returned {list(range(2 * SLOTS))}",
        "returned 0",
        "returned None",
    ]
    assert seen == expected


# --------------------------------------------------------------------------
# A Mailbox's receive interrupted anywhere, as a Ctrl-C could
# --------------------------------------------------------------------------


def _leave_one_pending(box: Mailbox[int]) -> None:
    """Receive, interrupted as the decode returns: its message is left for
    the next receive."""
    real = box._decode
    box._decode = interrupted_after(real, lambda _: True)
    try:
        with handler_raises(signal.SIGINT), pytest.raises(Interrupted):
            box.receive(timeout=0)
    finally:
        box._decode = real


@pytest.mark.parametrize("first", ["in the box", "pending"])
def test_a_receive_interrupted_anywhere_loses_no_message(first: str, master_cleanup: None) -> None:
    """Each receive finds the next two messages waiting: both in the box
    (full: the receive wakes senders as it takes one), or the first one
    pending, left by a receive before it that was interrupted as its
    decode returned. After a receive interrupted anywhere, a whole one
    must return the message that one did not, and qsize() count it
    meanwhile. Before: a SIGINT once the message was out of its slot (as
    _take woke senders, as ``with self._receiving`` ended, as the decode
    returned) lost it: the next receive returned the message after it."""
    box = Mailbox.create(int, slots=SLOTS, slot_size=16)
    try:
        sent = 0

        def send_one() -> None:
            nonlocal sent
            box.send(sent, timeout=0)
            sent += 1

        def set_up() -> None:
            send_one()
            if first == "pending":
                _leave_one_pending(box)

        send_one()
        set_up()
        got: list[int] = []

        def check(result: int | None) -> list[str]:
            problems = []
            if result is None:  # interrupted: the next receive gets its message
                if (waiting := box.qsize()) != 2:
                    problems.append(f"qsize() said {waiting} after it, not 2")
                try:
                    result = box.receive(timeout=0)
                except TimeoutError:
                    return [*problems, f"the next receive found nothing, after {got}"]
            got.append(result)
            if got != list(range(len(got))):
                return [*problems, f"received {got}"]
            set_up()
            return problems

        problem = at_every_point(lambda: box.receive(timeout=0), check)
        assert problem is None, problem
        # Nothing received twice, nothing left behind: only the last two sent.
        assert [box.receive(timeout=0), box.receive(timeout=0)] == [sent - 2, sent - 1]
        with pytest.raises(TimeoutError):
            box.receive(timeout=0)
    finally:
        box.release()


def test_a_message_of_another_type_is_raised_once_even_by_a_receive_after_an_interrupted_one(
    master_cleanup: None,
) -> None:
    """A message that does not decode as the box's type (from a sender of
    another version of it, say) is raised by the receive that takes it, a
    msgspec.ValidationError, and is gone: the next receive returns the next
    message. So it is when that receive was interrupted anywhere: the one
    after raises it, once. Before: interrupted once it was out of its slot,
    the message was lost, and the next receive returned the one after it."""
    box = Mailbox.create(int, slots=SLOTS, slot_size=16)
    forger = Mailbox.open(box.res_id, int)
    forger._encode = lambda value, _what: msgspec.msgpack.encode(value)  # unchecked
    try:
        sent = 0

        def send_both() -> None:
            nonlocal sent
            forger.send("not an int", timeout=0)  # type: ignore[arg-type]
            box.send(sent, timeout=0)
            sent += 1

        def receive_the_other_type() -> str:
            try:
                return f"returned {box.receive(timeout=0)!r}"
            except msgspec.ValidationError as exc:
                return f"raised {exc}"

        def check(result: str | None) -> list[str]:
            if result is None:  # interrupted: the next receive raises the message
                result = receive_the_other_type()
            problems = []
            if result != "raised Expected `int`, got `str`":
                problems.append(f"the other type's message: {result}")
            if (then := outcome_text(lambda: box.receive(timeout=0))) != f"returned {sent - 1}":
                problems.append(f"the message after it: {then}")
            if (waiting := box.qsize()) != 0:
                problems.append(f"qsize() said {waiting} after both, not 0")
            send_both()
            return problems

        send_both()
        problem = at_every_point(receive_the_other_type, check)
        assert problem is None, problem
    finally:
        forger.release()
        box.release()


# --------------------------------------------------------------------------
# An open or a create interrupted anywhere, as a Ctrl-C could
# --------------------------------------------------------------------------

CREATES: dict[str, Callable[[], Any]] = {
    "ShmSegment": lambda: netmcore.create_shm(64),
    "PosixSemaphore": netmcore.create_sem,
    "Mailbox": lambda: Mailbox.create(int, slots=2, slot_size=16),
    "ShmMutex": ShmMutex.create,
    "ShmCondition": ShmCondition.create,
    "Buffer": lambda: Buffer.create(64),
    "SharedArray": lambda: SharedArray.create(4),
    # (It writes the data in, once made: an interrupt there too leaves nothing.)
    "SharedArray.from_array": lambda: SharedArray.from_array([[1.0, 2.0], [3.0, 4.0]]),
}
OPENS: dict[str, Callable[[ResId], Any]] = {
    "ShmSegment": netmcore.open_shm,
    "PosixSemaphore": netmcore.open_sem,
    "Mailbox": lambda res_id: Mailbox.open(res_id, int),
    "ShmMutex": ShmMutex.open,
    "ShmCondition": ShmCondition.open,
    "Buffer": Buffer.open,
}


def _held() -> set[str]:
    """What this process holds: its handles, and the /dev/shm entries named
    for it (or for its master, which names a worker's objects)."""
    handles = {f"a handle on resource {n}" for n in _resource_api._uses.handles}
    arrays = {f"a use of array {n}" for n in [*_shared_array._keep, *_shared_array._used]}
    arrays |= {f"a read-only mapping of array {n}" for n in _shared_array._read_only}
    return handles | arrays | {f"/dev/shm entry {name}" for name in own_shm_entries()}


def _released(made: Any) -> None:
    if made is not None:
        made.release()


@pytest.mark.parametrize("kind", sorted(CREATES))
def test_a_create_interrupted_anywhere_leaves_no_object(kind: str, master_cleanup: None) -> None:
    """Outside run, where the process is its own master. Before: a SIGINT
    as the object had just been made (the table counting this process as
    its user), before its handle, left it in the table and in /dev/shm;
    one just after a Mailbox's, ShmMutex's, ShmCondition's or Buffer's
    segment was made, before the object was built on it, too."""
    keep = netmcore.create_shm(8)  # the guard lives on: not forked again for each object
    try:
        before = _held() | {f"table entry {e.name}" for e in _resources.table.values()}

        def check(made: Any) -> list[str]:
            _released(made)
            table = {f"table entry {e.name}" for e in _resources.table.values()}
            return [f"left {sorted(left)}"] if (left := (_held() | table) - before) else []

        problem = at_every_point(CREATES[kind], check)
    finally:
        keep.release()
    assert problem is None, problem


@netmcore.process
def interrupted_in_a_worker(arg: tuple[str, str, ResId]) -> str | None:
    """Create (``what``) an object of ``kind``, or open ``res_id`` (made by
    the master), with a SIGINT at each point in turn: the first problem."""
    what, kind, res_id = arg
    check = _left_no_use(what, res_id)
    if what == "open":
        return at_every_point(lambda: OPENS[kind](res_id), check)
    return at_every_point(CREATES[kind], check)


@pytest.mark.parametrize("kind", ["SharedArray", "SharedArray.from_array"])
def test_an_array_create_interrupted_anywhere_in_a_worker_leaves_no_use(
    kind: str, master_cleanup: None
) -> None:
    """A worker's array is a segment it makes through the master, kept by
    this process (not a handle): before, a SIGINT once it was kept, before
    the caller had the array, left the worker its user until it ended."""
    keep = netmcore.create_shm(8)  # any id: a create opens nothing
    try:
        problem = run_scenario(interrupted_in_a_worker, ("create", kind, keep.res_id))
    finally:
        keep.release()
    assert problem is None, problem


@pytest.mark.parametrize("kind", sorted(OPENS))
@pytest.mark.parametrize("what", ["open", "create"])
def test_an_open_or_create_interrupted_anywhere_in_a_worker_leaves_no_use(
    what: str, kind: str, master_cleanup: None
) -> None:
    """In a worker, each call a request to the master. Before: a SIGINT
    once the master had the request (it counts the worker as a user as it
    answers), before the worker's handle, left the worker a user until it
    ended ("this process was still a user", or its object left)."""
    made = CREATES[kind]()  # the master's own, opened by the worker
    try:
        problem = run_scenario(interrupted_in_a_worker, (what, kind, made.res_id))
    finally:
        made.release()
    assert problem is None, problem


def _read_only_mappings(name: str) -> list[str]:
    """The address ranges where this process maps shm object ``name`` read-only."""
    with open("/proc/self/maps") as f:
        fields = [line.split() for line in f]
    return [f[0] for f in fields if f[1] == "r--s" and f[5:6] == [f"/dev/shm{name}"]]


@netmcore.process
def array_open_interrupted(arg: tuple[SharedArray, str, bool]) -> str | None:
    """Open ``array`` (shm object ``name``), read-only or not, with a SIGINT
    at each point in turn, then release it, whether the open returned or
    not (the use is the process's, not the view's: its release gives it
    back, however the open ended): the first problem."""
    array, name, readonly = arg
    before = _held()

    def opened() -> tuple[bool, list[float]]:
        view = array.open(readonly=readonly)
        return bool(view.flags.writeable), view.tolist()  # the view goes as it returns

    def check(got: tuple[bool, list[float]] | None) -> list[str]:
        array.release()
        gc.collect()  # the interrupted open's frames, in cycles through their tracebacks
        problems = []
        if got is not None and got != (not readonly, [0.0] * 4):
            problems.append(f"the open gave a view {got}")
        if left := _held() - before:
            problems.append(f"left {sorted(left)}")
        if mapped := _read_only_mappings(name):
            problems.append(f"left the array mapped read-only at {mapped}")
        return problems + _still_a_user(array.res_id)

    return at_every_point(opened, check)


@netmcore.process
def array_made_then_open_interrupted(readonly: bool) -> str | None:
    array = SharedArray.create(4)  # a worker's: a segment that the other opens
    try:
        name = netmcore.get_shm(array.res_id)
        return joined(array_open_interrupted, array_open_interrupted.start((array, name, readonly)))
    finally:
        array.release()


@pytest.mark.parametrize("readonly", [False, True])
@pytest.mark.parametrize("made", ["by the master", "by a worker"])
def test_an_array_open_interrupted_anywhere_in_a_worker_leaves_nothing_after_its_release(
    made: str, readonly: bool, master_cleanup: None
) -> None:
    """An array's open takes the process's use (a segment, or a count of the
    master's mapping), which release() gives back however the open ended;
    a read-only open maps the array read-only too, which the release lets
    go. Interrupted anywhere, then released, the worker is no user of the
    array, holds nothing of it, and maps none of it read-only."""
    if made == "by a worker":
        problem = run_scenario(array_made_then_open_interrupted, readonly)
    else:
        array = SharedArray.create(4)  # preallocated: the worker inherits its mapping
        try:
            name = netmcore.get_shm(array.res_id)
            problem = run_scenario(array_open_interrupted, (array, name, readonly))
        finally:
            array.release()
    assert problem is None, problem


# --------------------------------------------------------------------------
# Any resource call of a worker interrupted anywhere, by any signal
# --------------------------------------------------------------------------

# The prefix of the preallocated objects the tests make: named so that
# ``_held`` sees one that is left, and for this test process (a worker's
# is the same), so that another's run of these tests is not seen.
PREFIX = f"/nmctest.interrupted.{os.getpid()}."


def _left_in_dev_shm() -> set[str]:
    return {f"/dev/shm entry {name}" for name in own_shm_entries(PREFIX)}


def _table_entries() -> set[str]:
    return {f"table entry {entry.name}" for entry in _resources.table.values()}


def _left_no_use(what: str, res_id: ResId) -> Callable[[Any], list[str]]:
    """The check of a worker's create or open (``what``) of ``res_id``, for
    at_every_point: what it made released, nothing left that this process
    held before, and, for an open, this process no longer a user."""
    before = _held()

    def check(made: Any) -> list[str]:
        _released(made)
        problems = [f"left {sorted(left)}"] if (left := _held() - before) else []
        if what == "open":
            problems += _still_a_user(res_id)
        return problems

    return check


def _still_a_user(res_id: ResId) -> list[str]:
    """Whether this process is a user of ``res_id``, as the master says
    (it is not, after this: the get made it one, and it releases)."""
    was_user = _resource_api._get(res_id, ()).was_user
    netmcore.release(res_id)
    return [f"this process was still a user of {res_id!r}"] if was_user else []


def _in_step_with_the_master() -> None:
    """Return once the master has served what this worker sent before: a
    release that went out as a second interrupt came, whose answer nothing
    waited for (the master serves a worker's requests in order)."""
    netmcore.release(ResId(10**9))  # an id nothing has: it does nothing


def _managed_still(name: str) -> list[str]:
    """Whether the object ``name`` is still managed after its manage was
    interrupted: a manage that never reached the master leaves it as it
    was (managing it now works); one that did is given back (its object
    unlinked, its only user gone). Managed still: nothing would release it."""
    if not os.path.exists(f"/dev/shm/{name[1:]}"):
        return []
    try:
        netmcore.manage_shm(name).release()  # unlinks it
    except ValueError as exc:
        return [f"the object was still managed: {exc}"]
    return []


def _first_signal(first: str) -> Callable[[Callable[[], None]], Any] | None:
    """For ``at_every_point``: a first SIGINT in a worker's resource call,
    in its wait for the master's answer, which withdraws the request;
    ``first`` says where ("": none):

    - "with the answer in": as the wait returns, the answer stored;
    - "in the wait": as the peek at the answer returns, before it is stored.

    The points, where a second SIGINT comes, are then those of the
    withdrawal and of the give-back of what the answer granted; in the
    wait, those from the withdrawal's wait for the answer on. Before that
    wait (the start of the withdrawal, which ``Link.request`` calls as it
    handles the first exception) a second exception still leaves the
    answer unread: that is Link's to hold, not the resource call's."""
    if not first:
        return None

    @contextlib.contextmanager
    def sent_there(arm: Callable[[], None]) -> Iterator[None]:
        real: dict[str, Any] = {name: getattr(Link, name) for name in ("recv", "wait_reply")}
        waits = 0

        def now(_result: object) -> bool:
            if first == "with the answer in":
                arm()
            return True

        def wait_reply(link: Link, rid: int) -> Any:
            nonlocal waits
            waits += 1
            if waits == 2:  # the withdrawal's wait
                arm()
            return real["wait_reply"](link, rid)

        if first == "with the answer in":
            patched = {"wait_reply": interrupted_after(real["wait_reply"], now)}
        else:
            patched = {"recv": interrupted_after(real["recv"], now), "wait_reply": wait_reply}
        for name, value in patched.items():
            setattr(Link, name, value)
        try:
            yield
        finally:
            for name, value in real.items():
                setattr(Link, name, value)

    return sent_there


def _resource_call_interrupted(
    call: str, res_id: ResId, first: str = "", how: str = "raised"
) -> str | None:
    """``call`` (on ``res_id``, where it takes one: an object this process
    does not use) with a SIGINT at each point in turn, raised in this
    thread or taken by another (``how``), and a second one if ``first``
    says where the first comes (see _first_signal): the first problem. In
    a worker, or in the master (and before run), whose table it looks at
    too (a worker's is a copy that nothing changes)."""
    before = _held() | _left_in_dev_shm() | _table_entries()
    names = iter(range(1_000_000))
    managed = ""

    def make_one_to_manage() -> None:
        """A new object, for the next manage."""
        nonlocal managed
        managed = f"{PREFIX}managed.{next(names)}"
        _ipc.create_mapped(managed, 64).close()

    def check(result: Any) -> list[str]:
        _in_step_with_the_master()
        problems = []
        if call in ("get_resource", "get_shm"):
            if result is not None:
                netmcore.release(res_id)
            problems += _still_a_user(res_id)
        elif call == "manage_shm":
            if result is not None:
                result.release()
            problems += _managed_still(managed)
        elif call == "create_preallocated_shm":
            if result is not None:
                netmcore.release(result[0])
        else:  # a handle
            _released(result)
            if call == "open_shm":
                problems += _still_a_user(res_id)
        if left := (_held() | _left_in_dev_shm() | _table_entries()) - before:
            problems.append(f"left {sorted(left)}")
        if call == "manage_shm":
            make_one_to_manage()
        return problems

    if call == "manage_shm":
        make_one_to_manage()
    calls: dict[str, Callable[[], Any]] = {
        "get_resource": lambda: netmcore.get_resource(res_id),
        "get_shm": lambda: netmcore.get_shm(res_id),
        "manage_shm": lambda: netmcore.manage_shm(managed),
        "create_preallocated_shm": lambda: netmcore.create_preallocated_shm(PREFIX, 64),
        "open_shm": lambda: netmcore.open_shm(res_id),
        "create_shm": lambda: netmcore.create_shm(64),
    }
    try:
        if how == "thread":
            with through_another_thread(signal.SIGINT) as send:
                return at_every_point(calls[call], check, signal.SIGINT, send)
        return at_every_point(calls[call], check, first=_first_signal(first))
    finally:
        if managed:
            _ipc.unlink(managed)  # the one made for a next round


@netmcore.process
def resource_call_interrupted_in_a_worker(arg: tuple[str, ResId, str]) -> str | None:
    """:func:`_resource_call_interrupted` in a worker, on the master's ``res_id``."""
    return _resource_call_interrupted(*arg)


@pytest.mark.parametrize(
    "call", ["get_resource", "get_shm", "manage_shm", "create_preallocated_shm"]
)
def test_a_resource_call_interrupted_anywhere_in_a_worker_leaves_no_use(
    call: str, master_cleanup: None
) -> None:
    """These calls make no handle. Before, nothing withdrew them: a SIGINT
    once the master had the request, before the caller had its answer (the
    wait for it, the read of it, the making of what the call returns), left
    the worker a user of the object until it ended ("still a user", an
    object still managed, or a preallocated object left in /dev/shm)."""
    made = netmcore.create_shm(64)  # the master's own, which the worker gets
    try:
        problem = run_scenario(resource_call_interrupted_in_a_worker, (call, made.res_id, ""))
    finally:
        made.release()
    assert problem is None, problem
    assert not own_shm_entries(PREFIX)


# One of each way a call gives back what it got: a get, a manage, a create
# of preallocated memory, an open, a create.
GIVE_BACK_CALLS = [
    "get_resource",
    "get_shm",
    "manage_shm",
    "create_preallocated_shm",
    "open_shm",
    "create_shm",
]


@pytest.mark.parametrize("first", ["in the wait", "with the answer in"])
@pytest.mark.parametrize("call", GIVE_BACK_CALLS)
def test_a_second_interrupt_as_a_withdrawn_call_gives_back_leaves_no_use(
    call: str, first: str, master_cleanup: None
) -> None:
    """A first SIGINT in the wait for the master's answer withdraws the
    request, and what the answer granted is given back; a second SIGINT at
    each point from there on (see _first_signal). Before, one at the start of the give-back
    (the entry of a function that did it, before its own loop; for an open,
    of _settle_owed) ended it before any loop held interrupts: the worker
    stayed a user of the object until it ended ("still a user", an object
    still managed, or left in /dev/shm)."""
    made = netmcore.create_shm(64)
    try:
        problem = run_scenario(resource_call_interrupted_in_a_worker, (call, made.res_id, first))
    finally:
        made.release()
    assert problem is None, problem
    assert not own_shm_entries(PREFIX)


@netmcore.process
def interrupted_in_a_worker_by(arg: tuple[str, str, ResId]) -> str | None:
    """Create a segment, or open ``res_id`` (made by the master), with, at
    each point in turn, ``how``: a SIGINT that another thread of the worker
    takes (``thread``), or a SIGALRM whose handler raises (``alarm``)."""
    what, how, res_id = arg
    check = _left_no_use(what, res_id)

    def call() -> Any:
        return netmcore.open_shm(res_id) if what == "open" else netmcore.create_shm(64)

    if how == "alarm":
        return at_every_point(call, check, signal.SIGALRM)
    with through_another_thread(signal.SIGINT) as send:
        return at_every_point(call, check, signal.SIGINT, send)


@pytest.mark.parametrize("how", ["thread", "alarm"])
@pytest.mark.parametrize("what", ["open", "create"])
def test_an_open_or_create_interrupted_anywhere_by_what_it_does_not_hold_leaves_no_use(
    what: str, how: str, master_cleanup: None
) -> None:
    """Before, an open or a create held SIGINT and SIGTERM in its own
    thread from its request until its handle counted the use: a SIGINT that
    another thread took (the main thread runs the handler at its next
    check, whatever it blocks), or a SIGALRM (a timeout), still came in
    between, and left the worker a user until it ended ("still a user", or
    the created object left)."""
    made = netmcore.create_shm(64)
    try:
        problem = run_scenario(interrupted_in_a_worker_by, (what, how, made.res_id))
    finally:
        made.release()
    assert problem is None, problem


# --------------------------------------------------------------------------
# Any resource call of the master's own code interrupted anywhere
# --------------------------------------------------------------------------

# A process id that no run here reaches: the user that keeps an object alive
# that this process does not use, as a worker would.
ANOTHER_USER = 10**6


def _used_by_another() -> ResId:
    """A shm object that only ANOTHER_USER uses: a get here makes this
    process (the master) a new user of it, which an interrupted get must
    not leave behind."""
    made = netmcore.create_shm(64)
    _resources.table[made.res_id.n].users.add(ANOTHER_USER)
    made.release()  # this process's use ends; the other's keeps it
    return made.res_id


def _resource_call_interrupted_here(call: str, how: str) -> str | None:
    """:func:`_resource_call_interrupted` in this process, the master (or
    the master-to-be, before run)."""
    res_id = _used_by_another()
    try:
        return _resource_call_interrupted(call, res_id, how=how)
    finally:
        _resources.release(res_id.n, ANOTHER_USER)  # its last user: destroyed


@pytest.mark.parametrize("how", ["raised", "thread"])
@pytest.mark.parametrize("where", ["before run", "in the master"])
@pytest.mark.parametrize("call", GIVE_BACK_CALLS)
def test_a_resource_call_interrupted_anywhere_in_the_master_leaves_no_use(
    call: str, where: str, how: str, master_cleanup: None
) -> None:
    """The master's own calls (and a program's before run) work on the
    table in this process. Before: a get or a manage cut short once the
    table had changed (as op_get had added the caller, or as add had taken
    the object in), before the call returned, left the master a user (the
    object managed) that nothing released; a create_preallocated_shm, one
    as op_create's hold let the SIGINT through, the object made; an open or
    a create (whose SIGINT _counted held in this thread) the same with a
    SIGINT taken by another thread ("still a user", "left"), and a create
    cut short just after the object was made left it in /dev/shm. (An open
    or a create with the SIGINT raised in this thread, which _counted held,
    passed before too: they pin that nothing needs holding now.)"""
    if where == "before run":
        problem = _resource_call_interrupted_here(call, how)
    else:
        found = in_master(lambda: [p] if (p := _resource_call_interrupted_here(call, how)) else [])
        problem = found[0] if found else None
    assert problem is None, problem
    assert not own_shm_entries(PREFIX)


# What the unlink of an object meets, as posix_ipc raises it, and the errno
# the caller gets: refused (as another user's object in a sticky /dev/shm
# is), or a posix_ipc.Error of no cause it names (before, an OSError with no
# errno, taken for an interrupt).
UNLINK_FAILURES: dict[str, tuple[Callable[[], Exception], int]] = {
    "refused": (lambda: PermissionError(errno.EPERM, "Operation not permitted"), errno.EPERM),
    "posix_ipc.Error": (lambda: posix_ipc.Error("Unable to initialize object"), errno.EIO),
}


@pytest.mark.parametrize("failure", list(UNLINK_FAILURES))
def test_a_give_back_that_fails_of_its_own_raises_its_error_and_stops(
    failure: str, monkeypatch: pytest.MonkeyPatch, master_cleanup: None
) -> None:
    # The give-back of an interrupted open repeats through interrupts, but a
    # failure of its own would fail every time: it goes on as it is, once.
    # Before, the give-back tried again for ever, and a Ctrl-C could not end
    # it (each was held as an interrupt). The unlink fails once here, so that
    # a retry ends: the tries say whether there was one.
    name = f"{PREFIX}refused"
    posix_ipc.SharedMemory(name, posix_ipc.O_CREX, size=4096).close_fd()
    res = netmcore.manage_shm(name)  # before run: the master's use, its only user
    tries: list[str] = []
    real_unlink = posix_ipc.unlink_shared_memory
    fail, number = UNLINK_FAILURES[failure]

    def fails_once(path: str) -> None:
        tries.append(path)
        if len(tries) == 1:
            raise fail()
        real_unlink(path)

    def interrupt_once_counted(frame: Any, event: str, arg: Any) -> None:
        if event == "c_return" and res.id.n in _resource_api._uses.handles:
            sys.setprofile(None)
            signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(posix_ipc, "unlink_shared_memory", fails_once)
    sys.setprofile(interrupt_once_counted)
    try:
        with pytest.raises(OSError) as raised:
            netmcore.open_shm(res.id)
    finally:
        sys.setprofile(None)
        monkeypatch.undo()
        _ipc.unlink(name)
        # The handle whose give-back failed still counts (see _give_back),
        # and the open that made it is gone: not the next test's.
        _resource_api._uses.handles.pop(res.id.n, None)
    assert tries == [name]
    assert raised.value.errno == number


# --- a join interrupted anywhere ------------------------------------------------


@netmcore.process
def squared(k: int) -> int:
    return k * k


_JOINS: dict[str, Callable[[netmcore.ProcessId[int]], Any]] = {
    "join": squared.join,
    "result": squared.result,
    "join_outcome": squared.join_outcome,
}


@netmcore.process
def join_interrupted_anywhere(arg: tuple[str, str]) -> str | None:
    """Join processes that have ended (an outcome is there), a SIGINT at
    each point of the join in turn; after a join cut short, the next join of
    that process must give its result."""
    call, how = arg
    join = _JOINS[call]
    k, pid = 0, squared.start(0)

    def ended(pid: netmcore.ProcessId[int]) -> netmcore.ProcessId[int]:
        for _ in squared.as_completed([pid]):  # waits for its end, joins nothing
            pass
        return pid

    def check(result: Any) -> list[str]:
        nonlocal k, pid
        problems = []
        if result is None:  # cut short: the next join has the outcome
            try:
                result = join(pid)
            except Exception as exc:
                problems.append(f"the next join raised {type(exc).__name__}: {exc}")
        want = netmcore.Success(k * k) if call == "join_outcome" else k * k
        if not problems and result != want:
            problems.append(f"{result!r}, not {want!r}")
        k += 1
        pid = ended(squared.start(k))
        return problems

    pid = ended(pid)
    if how == "thread":
        with through_another_thread(signal.SIGINT) as send:
            return at_every_point(lambda: join(pid), check, signal.SIGINT, send)
    return at_every_point(lambda: join(pid), check)


@pytest.mark.parametrize("how", ["here", "thread"])
@pytest.mark.parametrize("call", list(_JOINS))
def test_a_join_interrupted_anywhere_loses_no_result(call: str, how: str) -> None:
    """Before: result() told a success from a failure by an isinstance call
    after it had handed the outcome over: a SIGINT as that call returned
    lost the result (the next join raised UnknownProcess)."""
    assert run_scenario(join_interrupted_anywhere, (call, how)) is None
