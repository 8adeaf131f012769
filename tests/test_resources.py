"""Managed resources: users sets, manage/get/release, preallocated shm, typed helpers.

Scenarios run as the first process, as in ``test_core``: a process type defined
at module level does the calls under test inside a worker and asserts there
(with ``assert`` and ``pytest.raises(..., match=...)``); a failed assertion in
any worker comes back to the test as a ``Raised`` outcome, and the test fails
with the worker's traceback. Outside ``run`` the test process is the master
(user -1), so the same calls are tested there directly.

Synchronisation is deterministic, never a sleep:

* pipes made in the test before ``run`` are inherited by every worker (all are
  forked from the test process); a worker blocks reading a byte until another
  process writes it;
* a crashed worker has left every users set by the time ``join`` returns its
  outcome; a worker that returned normally is only guaranteed to have left
  them once ``run`` has returned (see
  ``test_joined_worker_has_left_its_users_sets``).

Every test leaves ``/dev/shm`` clean: the autouse fixture in conftest checks.
"""

from __future__ import annotations

import errno
import itertools
import os
import re
import resource
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import posix_ipc
import pytest
from scenario import joined, own_shm_entries, run_scenario, shm_partly_used, shm_space

import netmcore
from netmcore import ResId, ResourceType, _ipc, _resource_api

SHM_DIR = "/dev/shm"
UNKNOWN = ResId(10**9)  # an id nothing has
HEX16 = r"[0-9a-f]{16}"


@pytest.fixture(autouse=True)
def no_handle_left_counted() -> Iterator[None]:
    """Fail a test that leaves a handle of this process counted (made and
    closed, never released): the count stays for the rest of the session,
    and a later test that waits for a handle to count (the give-back tests
    of test_interrupted_calls) would see it at once, and send its SIGINT
    before the call it meant to interrupt."""
    yield
    left = dict(_resource_api._uses.handles)
    _resource_api._uses.handles.clear()  # not counted against the next test too
    assert not left, f"handles left counted, by resource id: {left}"


# --------------------------------------------------------------------------
# Helpers, used in the test process and inside workers
# --------------------------------------------------------------------------


def shm_path(name: str) -> str:
    """Where the POSIX shm object ``name`` (``/x``) lives."""
    return os.path.join(SHM_DIR, name[1:])


def sem_path(name: str) -> str:
    """Where the POSIX semaphore ``name`` (``/x``) lives."""
    return os.path.join(SHM_DIR, "sem." + name[1:])


def listing() -> set[str]:
    """The /dev/shm entries a test here could have made: netmcore's for this
    process (or its master) and the tests' own, not other processes'."""
    return own_shm_entries("/nmctest.", "/nmcbad")


def new_shm(tag: str, data: bytes = b"") -> str:
    """Create a POSIX shm object the way a user's own code would; return its name."""
    name = f"/nmctest.{os.getpid()}.{tag}"
    shm = posix_ipc.SharedMemory(name, posix_ipc.O_CREX, mode=0o600, size=max(len(data), 1))
    try:
        if data:
            os.pwrite(shm.fd, data, 0)
    finally:
        shm.close_fd()
    return name


def new_sem(tag: str, value: int = 0) -> str:
    """Create a POSIX semaphore the way a user's own code would; return its name."""
    name = f"/nmctest.{os.getpid()}.{tag}"
    posix_ipc.Semaphore(name, posix_ipc.O_CREX, mode=0o600, initial_value=value).close()
    return name


def new_file(directory: str, tag: str) -> str:
    path = os.path.join(directory, f"nmctest.{tag}")
    Path(path).write_text("managed")
    return path


def file_of(res: netmcore.ComputeResource) -> str:
    """The path of a managed file, from its ComputeResource."""
    assert isinstance(res.repr, netmcore.File), res
    return res.repr.name


def needs_a_shm_size(case: str) -> None:
    """Skip a case past /dev/shm's size where it has none (0 blocks)."""
    if ("/dev/shm" in case or "2**62" in case) and not shm_total():
        pytest.skip("/dev/shm has no size limit (a tmpfs mounted with size=0)")


def mode(path: str) -> int:
    return os.stat(path).st_mode & 0o777


def shm_total() -> int:
    """The size of /dev/shm in bytes: no object larger than it can be filled."""
    return shm_space()[1]


# --------------------------------------------------------------------------
# Bad input: each case, a call and the error it must give (in the caller)
# --------------------------------------------------------------------------

LONG = "/" + "x" * 300
# The rule and the fix for a size past /dev/shm's total (after "Use a smaller ").
PAST_TOTAL = (
    rf"/dev/shm, where shared memory lives, is {shm_total():,} bytes in all, so an object "
    r"larger than that could never be filled \(a process that writes past the space there "
    r"is killed by SIGBUS\)\. Use a smaller "
)
ENLARGE = (
    r", or enlarge /dev/shm \(mount -o remount,size=\.\.\., or docker run --shm-size=\.\.\.\)$"
)
MISSING_FILE = "/nonexistent-netmcore-test-dir/missing.txt"

BAD_INPUT: dict[str, tuple[Callable[[], object], type[Exception], str]] = {
    "prealloc size 0": (
        lambda: netmcore.create_preallocated_shm("/nmcbad", 0),
        ValueError,
        r"size 0 is not valid: it must be at least 1 byte",
    ),
    "prealloc size -1": (
        lambda: netmcore.create_preallocated_shm("/nmcbad", -1),
        ValueError,
        r"size -1 is not valid: it must be at least 1 byte",
    ),
    "create_shm size 0": (
        lambda: netmcore.create_shm(0),
        ValueError,
        r"size 0 is not valid: it must be at least 1 byte",
    ),
    "create_shm size -1": (
        lambda: netmcore.create_shm(-1),
        ValueError,
        r"size -1 is not valid: it must be at least 1 byte",
    ),
    "manage_shm without slash": (
        lambda: netmcore.manage_shm("nmcbad"),
        ValueError,
        r"'nmcbad' is not valid: it must be a slash followed by",
    ),
    "manage_sem without slash": (
        lambda: netmcore.manage_sem("nmcbad"),
        ValueError,
        r"'nmcbad' is not valid: it must be a slash followed by",
    ),
    "manage_shm name too long": (
        lambda: netmcore.manage_shm(LONG),
        ValueError,
        r"'/x+'\.\.\. is 300 characters after the slash; the system allows at most 255",
    ),
    "manage_sem name too long": (
        lambda: netmcore.manage_sem(LONG),
        ValueError,
        r"'/x+'\.\.\. is 300 characters after the slash; the system allows at most 251",
    ),
    "prealloc prefix too long": (
        lambda: netmcore.create_preallocated_shm(LONG, 8),
        ValueError,
        r"prefix '/x+' is too long: .* at most 255 characters",
    ),
    "prealloc prefix with a slash inside": (
        lambda: netmcore.create_preallocated_shm("/a/b", 8),
        ValueError,
        r"prefix '/a/b' is not valid: it may start with a slash but have no other one",
    ),
    # posix_ipc crashed the process (SIGSEGV) on a name with a NUL in it.
    "prealloc prefix with a NUL": (
        lambda: netmcore.create_preallocated_shm("/a\0b", 8),
        ValueError,
        r"prefix '/a\\x00b' is not valid: .* no NUL character",
    ),
    "manage_sem name with a NUL": (
        lambda: netmcore.manage_sem("/a\0b"),
        ValueError,
        r"name '/a\\x00b' is not valid: .* no other slash or NUL character",
    ),
    "manage_file of a missing file": (
        lambda: netmcore.manage_file(MISSING_FILE),
        FileNotFoundError,
        re.escape(f"cannot manage FILE '{MISSING_FILE}': it does not exist"),
    ),
    "manage_file of a directory": (
        lambda: netmcore.manage_file("/tmp"),
        IsADirectoryError,
        re.escape("cannot manage FILE '/tmp': it is a directory, and only a file can be managed"),
    ),
    # A wrong type: a TypeError naming the value, the rule and the fix, in
    # one wording (Mailbox.create's sizes say it too).
    **{
        f"{name} of a {type(bad).__name__} id": (
            lambda opener=opener, bad=bad: opener(bad),
            TypeError,
            rf"^res_id must be a ResId, not {type(bad).__name__} \({bad!r}\): pass the res_id "
            r"of the object \(its \.res_id\), as its creator has it$",
        )
        for name, opener in {
            "open_shm": netmcore.open_shm,
            "open_sem": netmcore.open_sem,
            "Buffer.open": netmcore.Buffer.open,
            "ShmMutex.open": netmcore.ShmMutex.open,
            "ShmCondition.open": netmcore.ShmCondition.open,
            "Mailbox.open": lambda res_id: netmcore.Mailbox.open(res_id, int),
        }.items()
        for bad in (1, "1")
    },
    "create_shm size str": (
        lambda: netmcore.create_shm("10"),  # type: ignore[arg-type]
        TypeError,
        r"^size='10' is not valid: it must be an int \(a number of bytes, at least 1\), not "
        r"str; pass an int, like size=10$",
    ),
    "prealloc size bool": (
        lambda: netmcore.create_preallocated_shm("/nmcbad", True),
        TypeError,
        r"^size=True is not valid: it must be an int \(a number of bytes, at least 1\), not "
        r"bool; pass an int, like size=4096$",
    ),
    "create_sem value float": (
        lambda: netmcore.create_sem(1.0),  # type: ignore[arg-type]
        TypeError,
        r"^value=1\.0 is not valid: it must be an int \(the semaphore's first value, from 0 "
        r"to 2147483647\), not float; pass an int, like value=1$",
    ),
    "create_sem value -1": (
        lambda: netmcore.create_sem(-1),
        ValueError,
        r"value -1 is not valid: a semaphore starts at 0 or more",
    ),
    # Past SEM_VALUE_MAX (2**31 - 1): must be refused, not wrapped around.
    "create_sem value 2**32": (
        lambda: netmcore.create_sem(2**32),
        ValueError,
        r"4294967296",
    ),
    # Past what a file's size (off_t) holds: it was posix_ipc's "The size is
    # invalid or the memory is read-only".
    "create_shm size 2**63": (
        lambda: netmcore.create_shm(2**63),
        ValueError,
        r"^size 9,223,372,036,854,775,808 bytes is too large: a shared memory object holds "
        r"at most 9,223,372,036,854,775,807 bytes \(2\*\*63-1, a file's size\)\. Use a "
        r"smaller size$",
    ),
    # Past /dev/shm's total size: it was a bare ENOMEM (2**62), or it was
    # made, sparse, and a process filling it would die of SIGBUS (just past).
    # (Past its free space but within its total, an object is made: see
    # test_an_object_larger_than_the_free_space_within_the_total_is_made.)
    "create_shm size 2**62": (
        lambda: netmcore.create_shm(2**62),
        ValueError,
        r"^size 4,611,686,018,427,387,904 bytes is too large: " + PAST_TOTAL + r"size" + ENLARGE,
    ),
    "create_shm size past /dev/shm": (
        lambda: netmcore.create_shm(shm_total() + 1),
        ValueError,
        rf"^size {shm_total() + 1:,} bytes is too large: " + PAST_TOTAL + r"size" + ENLARGE,
    ),
    "prealloc size past /dev/shm": (
        lambda: netmcore.create_preallocated_shm("/nmcbad", shm_total() + 1),
        ValueError,
        rf"^size {shm_total() + 1:,} bytes is too large: " + PAST_TOTAL + r"size" + ENLARGE,
    ),
}


# --------------------------------------------------------------------------
# Process types (module level: they must exist before the master starts)
# --------------------------------------------------------------------------


@netmcore.process
def hold_shm(arg: tuple[ResId, int, int]) -> bool:
    """Get the shm, say so on ``got_w``, wait for a byte on ``go_r``, release it;
    return whether the object still exists after that release."""
    res_id, got_w, go_r = arg
    name = netmcore.get_shm(res_id)
    os.write(got_w, b"g")
    if os.read(go_r, 1) != b"o":
        raise AssertionError("the gate was closed without a go")
    netmcore.release(res_id)
    return os.path.exists(shm_path(name))


@netmcore.process
def start_inheriting(res_ids: list[ResId]) -> str:
    """Start a process that inherits ``res_ids``; what start() raised."""
    try:
        get_then_release.start(res_ids[0], inherit_resources=res_ids)
    except netmcore.NoResource as exc:
        return f"{type(exc).__name__}: {exc}"
    return "started"


@netmcore.process
def two_users_scenario(fds: list[int]) -> str:
    got_r, got_w, go_a_r, go_a_w, go_b_r, go_b_w = fds
    seg = netmcore.create_shm(16)
    seg.close()
    path = shm_path(seg.name)
    a = b = None
    try:
        a = hold_shm.start((seg.res_id, got_w, go_a_r))
        b = hold_shm.start((seg.res_id, got_w, go_b_r))
        assert os.read(got_r, 1) + os.read(got_r, 1) == b"gg"
        netmcore.release(seg.res_id)  # the creator leaves; a and b still use it
        assert os.path.exists(path), "unlinked while two workers still used it"
        os.write(go_a_w, b"o")
        go_a_w = -1
        assert joined(hold_shm, a) is True, "unlinked at the first of two releases"
        os.write(go_b_w, b"o")
        go_b_w = -1
        assert joined(hold_shm, b) is False, "not unlinked when its last user released it"
        assert not os.path.exists(path)
    finally:  # whatever happened, let the holders end
        for fd in (go_a_w, go_b_w):
            if fd >= 0:
                os.write(fd, b"x")
    return seg.name


@netmcore.process
def get_then_release(res_id: ResId) -> bool:
    """Get the shm and release it; return whether it still exists."""
    name = netmcore.get_shm(res_id)
    netmcore.release(res_id)
    return os.path.exists(shm_path(name))


@netmcore.process
def creator_is_user_scenario(_: int) -> str:
    seg = netmcore.create_shm(8)
    seg.close()
    assert joined(get_then_release, get_then_release.start(seg.res_id)) is True, (
        "another worker's release unlinked it although its creator still uses it"
    )
    assert os.path.exists(shm_path(seg.name))
    netmcore.release(seg.res_id)
    assert not os.path.exists(shm_path(seg.name)), "the creator, its last user, released it"
    return seg.name


@netmcore.process
def make_and_keep(arg: tuple[ResId, str]) -> list[str]:
    """Create one object of each kind and manage a file, get a master-held shm,
    release none of them; return the paths (the master-held one last)."""
    master_held, file_path = arg
    seg = netmcore.create_shm(8)
    sem = netmcore.create_sem(0)
    _, pre_name = netmcore.create_preallocated_shm("/nmctest.keep.", 8)
    managed = netmcore.manage_file(file_path)
    name = netmcore.get_shm(master_held)
    seg.close()
    sem.close()
    paths = [shm_path(seg.name), sem_path(sem.name), shm_path(pre_name), file_of(managed)]
    for p in paths:
        assert os.path.exists(p)
    return [*paths, shm_path(name)]


@netmcore.process
def make_and_keep_scenario(arg: tuple[ResId, str]) -> list[str]:
    paths: list[str] = joined(make_and_keep, make_and_keep.start(arg))
    return paths


@netmcore.process
def create_and_return(_: int) -> list[str]:
    seg = netmcore.create_shm(8)
    sem = netmcore.create_sem(0)
    seg.close()
    sem.close()
    return [shm_path(seg.name), sem_path(sem.name)]


@netmcore.process
def join_then_look_scenario(rounds: int) -> list[str]:
    """Join workers that made objects they alone used; return what is still there."""
    left: list[str] = []
    for _ in range(rounds):
        paths = joined(create_and_return, create_and_return.start(0))
        left += [p for p in paths if os.path.exists(p)]
    return left


@netmcore.process
def crasher(arg: tuple[str, int]) -> int:
    how, names_w = arg
    seg = netmcore.create_shm(8)
    sem = netmcore.create_sem(0)
    _, pre_name = netmcore.create_preallocated_shm("/nmctest.crash.", 8)
    paths = [shm_path(seg.name), sem_path(sem.name), shm_path(pre_name)]
    os.write(names_w, "\n".join(paths).encode())
    if how == "exit":
        os._exit(3)
    os.kill(os.getpid(), signal.SIGKILL)
    return 0  # not reached


@netmcore.process
def crash_scenario(arg: tuple[str, int, int]) -> list[str]:
    how, names_r, names_w = arg
    outcome = crasher.join_outcome(crasher.start((how, names_w)))
    assert isinstance(outcome, netmcore.Crashed), outcome
    paths = os.read(names_r, 65536).decode().split("\n")
    assert len(paths) == 3
    for p in paths:
        assert not os.path.exists(p), f"{p} outlived its only user, which crashed ({outcome})"
    return paths


@netmcore.process
def release_never_got(arg: tuple[ResId, ResId]) -> bool:
    """Release, twice, something this worker never got, and an unknown id."""
    res_id, other = arg
    netmcore.release(res_id)
    netmcore.release(res_id)
    netmcore.release(UNKNOWN)
    return os.path.exists(shm_path(netmcore.get_shm(other)))


@netmcore.process
def release_noop_scenario(_: int) -> bool:
    x = netmcore.create_shm(8)
    y = netmcore.create_shm(8)
    x.close()
    y.close()
    # A worker that never got x releases it: x is still the creator's.
    assert joined(release_never_got, release_never_got.start((x.res_id, y.res_id))) is True
    assert os.path.exists(shm_path(x.name)), "a release by a non-user destroyed it"
    netmcore.release(x.res_id)
    assert not os.path.exists(shm_path(x.name))
    netmcore.release(x.res_id)  # twice: a no-op
    netmcore.release(UNKNOWN)
    assert os.path.exists(shm_path(y.name)), "a no-op release destroyed something else"
    y.release()
    y.release()
    return True


@netmcore.process
def no_resource_scenario(_: int) -> str:
    check_no_resource()
    # A start through another resource's id, or one never handed out.
    int_arg = netmcore.EncapType(int).wrap(1)
    with (
        netmcore.create_shm(8) as seg,
        pytest.raises(
            netmcore.NoResource,
            match=r"not a fork point \(another resource's id, or a released one\); pass a "
            r"process type's fork_point",
        ),
    ):
        netmcore.start(seg.res_id, int_arg)
    with pytest.raises(
        netmcore.NoResource, match=r"not a fork point: no resource was ever made with this id"
    ):
        netmcore.start(UNKNOWN, int_arg)
    # Preallocated memory is named with the way to its memory (get_shm gives a name).
    pre, _name = netmcore.create_preallocated_shm("/nmc-test", 8)
    try:
        with pytest.raises(
            netmcore.NoResource,
            match=r"it is a POSIX_SHM_PREALLOCATED, not a POSIX_SEM; "
            r"get_resource\(res_id\).repr.memory is its memory",
        ):
            netmcore.get_sem(pre)
    finally:
        netmcore.release(pre)
    return "checked"


def check_no_resource() -> None:
    """NoResource for unknown ids and ids of the wrong kind; process points."""
    for getter in (
        netmcore.get_resource,
        netmcore.get_file,
        netmcore.get_shm,
        netmcore.get_sem,
        netmcore.open_shm,
        netmcore.open_sem,
    ):
        # An id beyond every one handed out was never made: said so.
        never = r"no such resource: none was ever made with this id"
        with pytest.raises(netmcore.NoResource, match=never) as info:
            getter(UNKNOWN)
        assert info.value.res_id == UNKNOWN
        assert not isinstance(info.value, netmcore.NotInherited)
    seg = netmcore.create_shm(8)
    sem = netmcore.create_sem(0)
    try:
        # A resource of another kind: named as there, with what takes it
        # (it said "no resource ResId(n)", then described the resource).
        shm_taker = r"; open_shm\(res_id\) or get_shm\(res_id\) takes it"
        with pytest.raises(
            netmcore.NoResource,
            match=rf"^resource ResId\(\d+\) is of another kind: it is a "
            rf"POSIX_SHM, not a FILE{shm_taker}",
        ) as info:
            netmcore.get_file(seg.res_id)
        assert info.value.res_id == seg.res_id
        with pytest.raises(netmcore.NoResource, match=r"it is a POSIX_SHM, not a POSIX_SEM; "):
            netmcore.get_sem(seg.res_id)
        sem_taker = r"; open_sem\(res_id\) or get_sem\(res_id\) takes it$"
        with pytest.raises(
            netmcore.NoResource, match=rf"it is a POSIX_SEM, not a POSIX_SHM or \w+{sem_taker}"
        ):
            netmcore.get_shm(sem.res_id)
        with pytest.raises(
            netmcore.NoResource, match=rf"it is a POSIX_SEM, not a POSIX_SHM{sem_taker}"
        ):
            netmcore.open_shm(sem.res_id)
        with pytest.raises(
            netmcore.NoResource,
            match=r"it is a FORK_POINT, not a POSIX_SHM or POSIX_SHM_PREALLOCATED; it is a "
            r"process type's: start processes",
        ):
            netmcore.get_shm(no_resource_scenario.fork_point)

        name = f"{no_resource_scenario.__module__}.{no_resource_scenario.__qualname__}"
        fork = netmcore.get_resource(no_resource_scenario.fork_point)
        assert fork.id == no_resource_scenario.fork_point
        assert fork.typ is ResourceType.FORK_POINT
        assert fork.repr == netmcore.ProcessPoint(name)
        join = netmcore.get_resource(no_resource_scenario.join_point)
        assert join.typ is ResourceType.JOIN_POINT
        assert join.repr == netmcore.ProcessPoint(name)
    finally:
        seg.release()
        sem.release()
    # A get of the wrong kind did not make the caller a user.
    assert not os.path.exists(shm_path(seg.name)), "a failed get_file made the caller a user"


@netmcore.process
def write_slot(arg: tuple[ResId, int]) -> int:
    import numpy as np

    res_id, slot = arg
    res = netmcore.get_resource(res_id)
    assert res.typ is ResourceType.POSIX_SHM_PREALLOCATED
    assert isinstance(res.repr, netmcore.PosixShmPreallocated)
    arr = np.frombuffer(res.repr.memory, dtype=np.int64)
    arr[slot] = 1000 + slot
    res.release()  # explicitly: the worker's end is not awaited by join
    return int(arr[slot])


@netmcore.process
def read_slots(res_id: ResId) -> list[int]:
    import numpy as np

    res = netmcore.get_resource(res_id)
    assert isinstance(res.repr, netmcore.PosixShmPreallocated)
    values = [int(v) for v in np.frombuffer(res.repr.memory, dtype=np.int64)]
    res.release()
    return values


@netmcore.process
def prealloc_from_master_scenario(res_id: ResId) -> list[int]:
    import numpy as np

    pids = [write_slot.start((res_id, slot)) for slot in range(4)]
    assert [joined(write_slot, pid) for pid in pids] == [1000, 1001, 1002, 1003]
    res = netmcore.get_resource(res_id)
    assert isinstance(res.repr, netmcore.PosixShmPreallocated)
    arr = np.frombuffer(res.repr.memory, dtype=np.int64)
    arr[4] = 4242  # the first process writes too: the master must see it
    return [int(v) for v in arr]


@netmcore.process
def prealloc_from_worker_scenario(_: int) -> list[int]:
    res_id, name = netmcore.create_preallocated_shm("/nmctest.fromworker.", 4 * 8)
    assert re.fullmatch(rf"/nmctest\.fromworker\.{HEX16}", name), name
    with pytest.raises(
        netmcore.NotInherited,
        match=r"process \d+ created it, so it cannot map it itself "
        r"\(a process inherits the preallocated memory that exists when it starts\)",
    ) as info:
        netmcore.get_resource(res_id)
    assert info.value.res_id == res_id
    assert isinstance(info.value, netmcore.NoResource)
    pids = [write_slot.start((res_id, slot)) for slot in range(3)]
    assert [joined(write_slot, pid) for pid in pids] == [1000, 1001, 1002]
    values: list[int] = joined(read_slots, read_slots.start(res_id))
    netmcore.release(res_id)
    assert not os.path.exists(shm_path(name)), "its creator, its last user, released it"
    return values


@netmcore.process
def early_getter(gate_r: int) -> str:
    """Started before the memory exists: read its id from the gate, then ask for it."""
    n = int(os.read(gate_r, 64).decode())
    with pytest.raises(
        netmcore.NotInherited,
        match=r"it was created after process \d+ started \(a process inherits the "
        r"preallocated memory that exists when it starts\)",
    ) as info:
        netmcore.get_resource(ResId(n))
    assert info.value.res_id == ResId(n)
    with pytest.raises(netmcore.NotInherited, match=r"created after process"):
        netmcore.get_shm(ResId(n))
    return "refused"


@netmcore.process
def created_after_scenario(gate: tuple[int, int]) -> str:
    gate_r, gate_w = gate
    pid = early_getter.start(gate_r)
    res_id = UNKNOWN
    try:
        res_id, _ = netmcore.create_preallocated_shm("/nmctest.after.", 8)
    finally:  # whatever happened, let the early worker go on
        os.write(gate_w, str(res_id.n).encode())
    result: str = joined(early_getter, pid)
    netmcore.release(res_id)
    return result


@netmcore.process
def refused(res_id: ResId) -> str:
    with pytest.raises(
        netmcore.NotInherited,
        match=r"process \d+ was started with inherit_resources that leave it out",
    ) as info:
        netmcore.get_resource(res_id)
    assert info.value.res_id == res_id
    return "refused"


@netmcore.process
def inherit_scenario(ids: tuple[ResId, ResId]) -> list[Any]:
    a, b = ids
    return [
        joined(refused, refused.start(a, inherit_resources=[])),
        joined(refused, refused.start(a, inherit_resources=[b])),
        joined(read_slots, read_slots.start(b, inherit_resources=[b])),
        joined(write_slot, write_slot.start((a, 0), inherit_resources=[a])),
        joined(write_slot, write_slot.start((a, 1), inherit_resources=[b, a])),
    ]


@netmcore.process
def use_managed(ids: tuple[ResId, ResId, ResId]) -> list[str]:
    """Get the managed file, shm and semaphore, read them, and release them."""
    f, s, m = ids
    path = netmcore.get_file(f)
    shm_name = netmcore.get_shm(s)
    sem_name = netmcore.get_sem(m)
    seg = netmcore.open_shm(s)
    sem = netmcore.open_sem(m)
    try:
        seen = [path, shm_name, sem_name, bytes(seg.buffer[:5]).decode(), str(sem.value)]
    finally:
        seg.release()
        sem.release()
    for r in ids:
        netmcore.release(r)
    return seen


@netmcore.process
def manage_scenario(arg: tuple[str, str]) -> list[Any]:
    directory, tag = arg
    path = new_file(directory, tag)
    shm_name = new_shm(tag, b"hello")
    sem_name = new_sem(tag, 2)
    f = netmcore.manage_file(path)
    s = netmcore.manage_shm(shm_name)
    m = netmcore.manage_sem(sem_name)
    assert (f.typ, f.repr) == (ResourceType.FILE, netmcore.File(path))
    assert (s.typ, s.repr) == (ResourceType.POSIX_SHM, netmcore.PosixShm(shm_name))
    assert (m.typ, m.repr) == (ResourceType.POSIX_SEM, netmcore.PosixSem(sem_name))
    seen = joined(use_managed, use_managed.start((f.id, s.id, m.id)))
    kept = [os.path.exists(p) for p in (path, shm_path(shm_name), sem_path(sem_name))]
    for r in (f, s, m):
        r.release()
    gone = [not os.path.exists(p) for p in (path, shm_path(shm_name), sem_path(sem_name))]
    return [seen, kept, gone]


@netmcore.process
def manage_missing_scenario(tag: str) -> bool:
    check_manage_missing(tag)
    return True


def check_manage_missing(tag: str) -> None:
    """manage_shm/manage_sem of a name that does not exist create nothing."""
    name = f"/nmctest.{os.getpid()}.{tag}"
    before = listing()
    with pytest.raises(FileNotFoundError, match=rf"cannot manage POSIX_SHM '{name}'"):
        netmcore.manage_shm(name)
    with pytest.raises(FileNotFoundError, match=rf"cannot manage POSIX_SEM '{name}'"):
        netmcore.manage_sem(name)
    assert listing() == before, "managing a missing object created one"


@netmcore.process
def destroy_scenario(arg: tuple[ResId, str]) -> list[str]:
    master_held, directory = arg
    seg = netmcore.create_shm(8)
    sem = netmcore.create_sem(1)
    pre_id, pre_name = netmcore.create_preallocated_shm("/nmctest.destroy.", 8)
    managed = netmcore.manage_file(new_file(directory, "destroy-worker"))
    master_name = netmcore.get_shm(master_held)
    seg.close()
    sem.close()
    paths = [
        shm_path(seg.name),
        sem_path(sem.name),
        shm_path(pre_name),
        file_of(managed),
        shm_path(master_name),
    ]
    assert all(os.path.exists(p) for p in paths)
    netmcore.destroy_resources()
    left = [p for p in paths if os.path.exists(p)]
    assert not left, f"destroy_resources() left {left}"
    netmcore.destroy_resources()  # twice: harmless
    for res_id in (seg.res_id, sem.res_id, pre_id, managed.id, master_held):
        with pytest.raises(netmcore.NoResource, match=r"no such resource"):
            netmcore.get_resource(res_id)
    netmcore.release(seg.res_id)  # releasing what was destroyed: a no-op
    return paths


@netmcore.process
def security_scenario(rounds: int) -> list[Any]:
    seg = netmcore.create_shm(8)
    sem = netmcore.create_sem(0)
    pre_id, pre_name = netmcore.create_preallocated_shm("/nmctest.sec.", 8)
    try:
        names = [seg.name, sem.name, pre_name]
        modes = [mode(shm_path(seg.name)), mode(sem_path(sem.name)), mode(shm_path(pre_name))]
        many = []
        for _ in range(rounds):
            s = netmcore.create_shm(1)
            many.append(s.name)
            s.release()
    finally:
        seg.release()
        sem.release()
        netmcore.release(pre_id)
    return [os.getppid(), names, modes, many]


@netmcore.process
def bad_input_scenario(case: str) -> str:
    check_bad_input(case)
    return case


def check_bad_input(case: str) -> None:
    call, error, message = BAD_INPUT[case]
    before = listing()
    with pytest.raises(error, match=message):
        call()
    assert listing() == before, f"{case}: something was created half-way"


@netmcore.process
def read_shm(res_id: ResId) -> bytes:
    """Open the shm by id, read what the creator wrote, and answer in it."""
    seg = netmcore.open_shm(res_id)
    try:
        data = bytes(seg.buffer[:14])
        seg.buffer[32:36] = b"pong"
    finally:
        seg.release()
    return data


@netmcore.process
def shm_helper_scenario(_: int) -> list[Any]:
    seg = netmcore.create_shm(64)
    try:
        assert seg.size == 64
        seg.buffer[:14] = b"hello netmcore"
        got = joined(read_shm, read_shm.start(seg.res_id))
        answer = bytes(seg.buffer[32:36])
    finally:
        seg.release()
    return [got, answer, os.path.exists(shm_path(seg.name))]


@netmcore.process
def post_sem(res_id: ResId) -> int:
    sem = netmcore.open_sem(res_id)
    try:
        sem.post()
    finally:
        sem.release()
    return 1


@netmcore.process
def wait_sem(res_id: ResId) -> bool:
    with netmcore.open_sem(res_id) as sem:
        return sem.wait()


@netmcore.process
def sem_helper_scenario(_: int) -> list[Any]:
    sem = netmcore.create_sem(0)
    waiter = None
    posted = False
    try:
        assert sem.value == 0
        assert sem.wait(timeout=0.05) is False, "waited on a 0 semaphore and got it"
        # Another worker posts; after the join, the post has happened.
        assert joined(post_sem, post_sem.start(sem.res_id)) == 1
        assert sem.value == 1
        assert sem.wait() is True
        assert sem.value == 0
        # Another worker waits; this one posts, and the join returns its wait.
        waiter = wait_sem.start(sem.res_id)
        sem.post()
        posted = True
        woke = joined(wait_sem, waiter)
    finally:
        if waiter is not None and not posted:
            sem.post()
        sem.release()
    return [woke, os.path.exists(sem_path(sem.name))]


@netmcore.process
def context_manager_scenario(_: int) -> bool:
    check_context_managers()
    return True


def check_context_managers() -> None:
    with netmcore.create_shm(32) as seg:
        assert isinstance(seg, netmcore.ShmSegment)
        path = shm_path(seg.name)
        seg.buffer[:3] = b"abc"
        assert os.path.exists(path)
    assert not os.path.exists(path), "leaving the with block did not release it"
    with pytest.raises(ValueError, match=r"is closed or released in this process"):
        seg.buffer[0]
    with pytest.raises(netmcore.NoResource, match=r"no such resource"):
        netmcore.open_shm(seg.res_id)
    with netmcore.create_sem(1) as sem:
        assert isinstance(sem, netmcore.PosixSemaphore)
        path = sem_path(sem.name)
        assert sem.wait(timeout=0) is True
    assert not os.path.exists(path), "leaving the with block did not release it"
    with pytest.raises(ValueError, match=r"semaphore .* is closed in this process"):
        sem.post()


@netmcore.process
def master_created(res_id: ResId) -> str:
    return netmcore.get_shm(res_id)


@netmcore.process
def manage_twice_scenario(directory: str) -> bool:
    check_manage_twice(directory)
    return True


def check_manage_twice(directory: str) -> None:
    """manage_* of an object the table has already is refused, naming the
    entry to use; the object and its entry are left as they were."""
    seg = netmcore.create_shm(8)
    sem = netmcore.create_sem(1)
    pre_id, pre_name = netmcore.create_preallocated_shm("/nmctest.twice.", 8)
    managed = netmcore.manage_file(new_file(directory, "twice"))
    try:
        seg.buffer[:5] = b"hello"
        cases: list[tuple[Callable[[str], object], str, ResId, str]] = [
            (netmcore.manage_shm, seg.name, seg.res_id, "POSIX_SHM"),
            (netmcore.manage_shm, pre_name, pre_id, "POSIX_SHM"),
            (netmcore.manage_sem, sem.name, sem.res_id, "POSIX_SEM"),
            (netmcore.manage_file, file_of(managed), managed.id, "FILE"),
        ]
        for manage, name, res_id, kind in cases:
            with pytest.raises(ValueError) as info:
                manage(name)
            assert str(info.value) == (
                f"cannot manage {kind} {name!r}: it is managed already, as {res_id!r}; "
                "managing it twice would unlink it under that entry's users. Use "
                f"{res_id!r} instead (get_resource({res_id!r}) makes this process one of "
                "its users)"
            )
        again = netmcore.open_shm(seg.res_id)  # the first entry still has its object
        assert bytes(again.buffer[:5]) == b"hello"
        again.release()  # seg's use goes on
        with netmcore.open_sem(sem.res_id) as opened:
            assert opened.value == 1
        assert os.path.exists(file_of(managed))
    finally:
        seg.release()
        sem.release()
        netmcore.release(pre_id)
        managed.release()


@netmcore.process
def unlinked_underneath_scenario(_: int) -> bool:
    check_unlinked_underneath()
    return True


def check_unlinked_underneath() -> None:
    """Opening a managed object that something unlinked outside the manager
    is NoResource, not posix_ipc's FileNotFoundError; releasing it is harmless."""
    seg = netmcore.create_shm(8)
    sem = netmcore.create_sem(0)
    seg.close()
    sem.close()
    posix_ipc.unlink_shared_memory(seg.name)
    posix_ipc.unlink_semaphore(sem.name)
    for opener, res_id, name in [
        (netmcore.open_shm, seg.res_id, seg.name),
        (netmcore.open_sem, sem.res_id, sem.name),
    ]:
        with pytest.raises(netmcore.NoResource) as info:
            opener(res_id)
        assert str(info.value) == (
            f"no resource {res_id!r}: its kernel object {name!r} no longer exists, though "
            "the manager still lists it: something unlinked it outside the manager. Release "
            f"{res_id!r}, and make the object again"
        )
    seg.release()
    sem.release()


def vm_size() -> int:
    """This process's virtual memory size, in bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmSize in /proc/self/status")


@netmcore.process
def map_past_rlimit(size: int) -> list[Any]:
    """create_shm of ``size`` bytes, which /dev/shm holds but this worker's
    address space (RLIMIT_AS) does not: the master makes it, the mapping here fails."""
    before = listing()
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (vm_size() + size // 4, hard))
    try:
        with pytest.raises(OSError) as info:
            netmcore.create_shm(size)
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
    assert listing() == before, "a create that could not be mapped left its object"
    return [info.value.errno, str(info.value)]


@netmcore.process
def wait_in_master_scenario(_: int) -> int:
    return 0


# --------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------


# --------------------------------------------------------------------------
# 1. Users sets
# --------------------------------------------------------------------------


def test_resource_got_by_two_workers_is_unlinked_at_the_second_release(pipes: Any) -> None:
    got_r, got_w = pipes()
    go_a_r, go_a_w = pipes()
    go_b_r, go_b_w = pipes()
    name = run_scenario(two_users_scenario, [got_r, got_w, go_a_r, go_a_w, go_b_r, go_b_w])
    assert not os.path.exists(shm_path(name))


def test_creator_counts_as_a_user() -> None:
    name = run_scenario(creator_is_user_scenario, 0)
    assert not os.path.exists(shm_path(name))


def test_users_set_is_a_set_not_a_counter(master_cleanup: None) -> None:
    seg = netmcore.create_shm(8)
    seg.close()
    assert netmcore.get_shm(seg.res_id) == seg.name  # the creator gets it again:
    assert netmcore.get_resource(seg.res_id).typ is ResourceType.POSIX_SHM  # and again
    netmcore.release(seg.res_id)  # one release takes the one user out
    assert not os.path.exists(shm_path(seg.name))
    seg.release()  # its use has ended: only the handle's count goes


def test_release_by_res_id_ends_the_process_use_whatever_its_handles(
    master_cleanup: None,
) -> None:
    """Handles (open_shm, open_sem, Mailbox.open ...) each count, and the
    process's use ends with the last one's release; release(res_id) is
    upstream's, on the users set: it ends the process's use at once."""
    seg = netmcore.create_shm(8)
    other = netmcore.open_shm(seg.res_id)
    try:
        netmcore.release(seg.res_id)
        assert not os.path.exists(shm_path(seg.name))
        with pytest.raises(netmcore.NoResource):
            netmcore.open_shm(seg.res_id)
    finally:
        other.release()
        seg.release()


# --------------------------------------------------------------------------
# 2. A worker that ends leaves every users set
# --------------------------------------------------------------------------


def test_worker_that_returns_leaves_every_users_set(tmp_path: Path, master_cleanup: None) -> None:
    master_seg = netmcore.create_shm(8)
    master_seg.close()
    file_path = new_file(str(tmp_path), "returns")
    paths = run_scenario(make_and_keep_scenario, (master_seg.res_id, file_path))
    *own, master_held = paths
    assert len(own) == 4
    left = [p for p in own if os.path.exists(p)]
    assert not left, f"objects only an ended worker used are still there: {left}"
    assert master_held == shm_path(master_seg.name)
    assert os.path.exists(master_held), "the worker's end took the master out of the users"
    master_seg.release()
    assert not os.path.exists(master_held)


def test_joined_worker_has_left_its_users_sets() -> None:
    # Once join has returned a worker's result, the worker has ended: what only
    # it used must be gone. Repeated, so that a race cannot pass by luck.
    left = run_scenario(join_then_look_scenario, 20)
    assert not left, (
        f"{len(left)} object(s) that only a joined worker used were still there after "
        f"join returned: {left[:4]}"
    )


@pytest.mark.parametrize("how", ["exit", "kill"])
def test_crashed_worker_leaves_every_users_set(how: str, pipes: Any) -> None:
    r, w = pipes()
    paths = run_scenario(crash_scenario, (how, r, w))
    assert not [p for p in paths if os.path.exists(p)]


# --------------------------------------------------------------------------
# 3. Releasing twice, or something never got: no-ops
# --------------------------------------------------------------------------


def test_release_twice_and_release_never_got_are_noops_in_workers() -> None:
    assert run_scenario(release_noop_scenario, 0) is True


def test_release_twice_and_release_unknown_are_noops_outside_run(master_cleanup: None) -> None:
    x = netmcore.create_shm(8)
    y = netmcore.create_shm(8)
    x.close()
    y.close()
    x.release()
    assert not os.path.exists(shm_path(x.name))
    x.release()
    netmcore.release(x.res_id)
    netmcore.release(UNKNOWN)
    assert os.path.exists(shm_path(y.name)), "a no-op release destroyed something else"
    y.release()
    assert not os.path.exists(shm_path(y.name))


# --------------------------------------------------------------------------
# 4. NoResource: unknown ids, wrong kinds; fork and join points
# --------------------------------------------------------------------------


def test_no_resource_outside_run(master_cleanup: None) -> None:
    check_no_resource()


def test_no_resource_in_a_worker() -> None:
    assert run_scenario(no_resource_scenario, 0) == "checked"


# --------------------------------------------------------------------------
# 5. Preallocated shm and inheritance
# --------------------------------------------------------------------------


def test_preallocated_shm_from_the_master_is_shared_by_later_workers(
    master_cleanup: None,
) -> None:
    np = pytest.importorskip("numpy")
    res_id, name = netmcore.create_preallocated_shm("/nmctest.master.", 5 * 8)
    assert re.fullmatch(rf"/nmctest\.master\.{HEX16}", name), name
    values = run_scenario(prealloc_from_master_scenario, res_id)
    assert values == [1000, 1001, 1002, 1003, 4242]
    # The master's own mapping sees the workers' writes as well.
    res = netmcore.get_resource(res_id)
    assert isinstance(res.repr, netmcore.PosixShmPreallocated)
    assert res.repr.name == name
    mem = res.repr.memory
    arr = np.frombuffer(mem, dtype=np.int64)
    assert arr.flags.writeable
    assert arr.tolist() == [1000, 1001, 1002, 1003, 4242]
    del arr
    mem.release()
    assert os.path.exists(shm_path(name)), "the master still uses it"
    netmcore.release(res_id)
    assert not os.path.exists(shm_path(name))


def test_preallocated_shm_from_a_worker_is_inherited_by_later_workers() -> None:
    pytest.importorskip("numpy")
    assert run_scenario(prealloc_from_worker_scenario, 0) == [1000, 1001, 1002, 0]


def test_worker_started_before_the_creation_gets_not_inherited(pipes: Any) -> None:
    assert run_scenario(created_after_scenario, pipes()) == "refused"


def test_inherit_resources_restricts_the_inherited_mappings(master_cleanup: None) -> None:
    pytest.importorskip("numpy")
    a, a_name = netmcore.create_preallocated_shm("/nmctest.inherit-a.", 2 * 8)
    b, _ = netmcore.create_preallocated_shm("/nmctest.inherit-b.", 8)
    results = run_scenario(inherit_scenario, (a, b))
    assert results == ["refused", "refused", [0], 1000, 1001]
    netmcore.release(a)
    netmcore.release(b)
    assert not os.path.exists(shm_path(a_name))


def test_inherit_resources_naming_no_resource_is_refused_in_the_caller(
    master_cleanup: None,
) -> None:
    """A typo in inherit_resources would surface only in the worker, as
    NotInherited, once its code used the resource."""
    live = netmcore.create_shm(8)
    unknown = ResId(999_999)
    message = "no resource ResId(999999): inherit_resources names it, and no resource"
    text = run_scenario(start_inheriting, [live.res_id, unknown])
    assert text.startswith(f"NoResource: {message}"), text
    assert "live resources, or 'all'" in text
    with pytest.raises(netmcore.NoResource, match=re.escape(message)):  # from the master
        netmcore.run(
            first_process=lambda: get_then_release.start(live.res_id, inherit_resources=[unknown]),
            extract_result=lambda ctrl, pid: None,
        )
    assert run_scenario(start_inheriting, [live.res_id]) == "started"
    live.release()


def test_inherit_resources_naming_a_resource_being_destroyed_is_refused_in_the_caller(
    monkeypatch: pytest.MonkeyPatch, master_cleanup: None
) -> None:
    """An entry whose destroy has begun (its unlink refused here, which
    leaves it in the table, unusable) is as gone as a released one. Before,
    the start took it, and the worker's get of it failed."""
    res_id, _name = netmcore.create_preallocated_shm("/nmctest.destroying.", 8)

    def refused(path: str) -> None:
        raise PermissionError(errno.EPERM, "Operation not permitted", path)

    monkeypatch.setattr(_ipc, "unlink", refused)
    with pytest.raises(PermissionError):
        netmcore.release(res_id)
    monkeypatch.undo()  # master_cleanup's destroy then unlinks it
    message = (
        f"no resource {res_id!r}: inherit_resources names it, starting "
        "test_resources.get_then_release, and it is being destroyed: its last user released it"
    )
    text = run_scenario(start_inheriting, [res_id])
    assert text.startswith(f"NoResource: {message}"), text
    with pytest.raises(netmcore.NoResource, match=re.escape(message)):  # from the master
        netmcore.run(
            first_process=lambda: get_then_release.start(res_id, inherit_resources=[res_id]),
            extract_result=lambda ctrl, pid: None,
        )


# --------------------------------------------------------------------------
# 6. manage_*: handing existing objects over
# --------------------------------------------------------------------------


def test_manage_file_outside_run_gives_the_absolute_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, master_cleanup: None
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("data.txt").write_text("x")
    res = netmcore.manage_file("data.txt")
    expected = str(tmp_path / "data.txt")
    assert res.typ is ResourceType.FILE
    assert res.repr == netmcore.File(expected)
    assert netmcore.get_file(res.id) == expected
    assert os.path.isabs(netmcore.get_file(res.id))
    res.release()
    assert not os.path.exists(expected), "the last user released it: it must be unlinked"


def test_manage_shm_outside_run_keeps_the_object_and_unlinks_at_the_end(
    master_cleanup: None,
) -> None:
    name = new_shm("manage-shm", b"kept data")
    inode = os.stat(shm_path(name)).st_ino
    res = netmcore.manage_shm(name)
    assert res.typ is ResourceType.POSIX_SHM
    assert res.repr == netmcore.PosixShm(name)
    assert netmcore.get_shm(res.id) == name
    assert os.stat(shm_path(name)).st_ino == inode, "manage_shm recreated the object"
    seg = netmcore.open_shm(res.id)
    assert bytes(seg.buffer) == b"kept data"
    seg.close()
    res.release()
    assert not os.path.exists(shm_path(name))
    seg.release()  # its use has ended: only the handle's count goes


def test_manage_sem_outside_run_keeps_the_value_and_unlinks_at_the_end(
    master_cleanup: None,
) -> None:
    name = new_sem("manage-sem", 3)
    res = netmcore.manage_sem(name)
    assert res.typ is ResourceType.POSIX_SEM
    assert res.repr == netmcore.PosixSem(name)
    assert netmcore.get_sem(res.id) == name
    sem = netmcore.open_sem(res.id)
    assert sem.value == 3
    sem.close()
    res.release()
    assert not os.path.exists(sem_path(name))
    sem.release()  # its use has ended: only the handle's count goes


def test_managed_objects_live_until_their_last_user_releases_in_workers(
    tmp_path: Path,
) -> None:
    seen, kept, gone = run_scenario(manage_scenario, (str(tmp_path), "in-worker"))
    path, shm_name, sem_name, data, value = seen
    assert path == str(tmp_path / "nmctest.in-worker")
    assert shm_name.startswith("/nmctest.") and sem_name.startswith("/nmctest.")
    assert (data, value) == ("hello", "2")
    assert kept == [True, True, True], "another worker's release unlinked a managed object"
    assert gone == [True, True, True], "the last user's release left a managed object"


def test_manage_of_a_missing_object_creates_nothing(master_cleanup: None) -> None:
    check_manage_missing("missing")
    assert run_scenario(manage_missing_scenario, "missing-w") is True


# --------------------------------------------------------------------------
# 7. destroy_resources
# --------------------------------------------------------------------------


def test_destroy_resources_outside_run(tmp_path: Path, master_cleanup: None) -> None:
    seg = netmcore.create_shm(8)
    seg.close()
    sem = netmcore.create_sem(0)
    sem.close()
    pre_id, pre_name = netmcore.create_preallocated_shm("/nmctest.destroy.", 8)
    managed = netmcore.manage_file(new_file(str(tmp_path), "destroy"))
    paths = [shm_path(seg.name), sem_path(sem.name), shm_path(pre_name), file_of(managed)]
    assert all(os.path.exists(p) for p in paths)
    netmcore.destroy_resources()
    assert not [p for p in paths if os.path.exists(p)]
    netmcore.destroy_resources()  # twice: harmless
    for res_id in (seg.res_id, sem.res_id, pre_id, managed.id):
        with pytest.raises(netmcore.NoResource, match=r"no such resource"):
            netmcore.get_resource(res_id)
    seg.release()  # releasing what was destroyed: a no-op
    sem.release()


def test_destroy_resources_in_a_worker(tmp_path: Path, master_cleanup: None) -> None:
    master_seg = netmcore.create_shm(8)
    master_seg.close()
    paths = run_scenario(destroy_scenario, (master_seg.res_id, str(tmp_path)))
    assert not [p for p in paths if os.path.exists(p)]
    master_seg.release()  # destroyed by the worker: releasing is a no-op
    with pytest.raises(netmcore.NoResource, match=r"no such resource"):
        netmcore.get_shm(master_seg.res_id)


# --------------------------------------------------------------------------
# 8. Security: mode 0600, unguessable names, exclusive creation
# --------------------------------------------------------------------------


def _distinct_random_suffixes(names: list[str]) -> None:
    suffixes = [n[-16:] for n in names]
    assert all(re.fullmatch(HEX16, s) for s in suffixes), names
    assert len(set(names)) == len(names), "two creations got the same name"
    values = [int(s, 16) for s in suffixes]
    # A counter or a clock would give close neighbours; 64 random bits do not.
    close = [(a, b) for a, b in itertools.pairwise(values) if abs(a - b) < 2**32]
    assert not close, f"consecutive names are guessable from one another: {close[:3]}"


def test_objects_are_private_and_randomly_named_outside_run(master_cleanup: None) -> None:
    seg = netmcore.create_shm(8)
    sem = netmcore.create_sem(0)
    pre_id, pre_name = netmcore.create_preallocated_shm("/nmctest.sec.", 8)
    try:
        assert mode(shm_path(seg.name)) == 0o600
        assert mode(sem_path(sem.name)) == 0o600
        assert mode(shm_path(pre_name)) == 0o600
        for name in (seg.name, sem.name):
            assert re.fullmatch(rf"/nmc\.{os.getpid()}\.{HEX16}", name), name
        assert re.fullmatch(rf"/nmctest\.sec\.{HEX16}", pre_name), pre_name
    finally:
        seg.release()
        sem.release()
        netmcore.release(pre_id)
    names = []
    for _ in range(50):
        res_id, name = netmcore.create_preallocated_shm("/nmctest.many.", 1)
        names.append(name)
        netmcore.release(res_id)
    _distinct_random_suffixes(names)


def test_objects_are_private_and_randomly_named_in_workers() -> None:
    master_pid, names, modes, many = run_scenario(security_scenario, 50)
    assert master_pid == os.getpid()
    assert modes == [0o600, 0o600, 0o600]
    seg_name, sem_name, pre_name = names
    prefix = re.escape(f"/nmc.{os.getpid()}.") + r"[0-9a-f]+\."
    assert re.fullmatch(prefix + HEX16, seg_name), seg_name
    assert re.fullmatch(prefix + HEX16, sem_name), sem_name
    assert re.fullmatch(rf"/nmctest\.sec\.{HEX16}", pre_name), pre_name
    _distinct_random_suffixes(many)


def test_objects_made_by_the_master_in_run_share_the_workers_prefix(
    master_cleanup: None,
) -> None:
    made: list[netmcore.ShmSegment] = []

    def first() -> netmcore.ProcessId[str]:
        made.append(netmcore.create_shm(8))  # in the master, during run
        made[0].close()
        return master_created.start(made[0].res_id)

    worker_saw = netmcore.run(
        first_process=first,
        extract_result=lambda _c, pid: master_created.join_nowait(pid),
    )
    seg = made[0]
    assert worker_saw == seg.name
    assert re.fullmatch(re.escape(f"/nmc.{os.getpid()}.") + rf"[0-9a-f]+\.{HEX16}", seg.name)
    assert os.path.exists(shm_path(seg.name)), "the master created it and still uses it"
    assert mode(shm_path(seg.name)) == 0o600
    seg.release()
    assert not os.path.exists(shm_path(seg.name))


@pytest.mark.parametrize("kind", ["shm", "sem", "preallocated"])
def test_creation_never_clobbers_an_existing_name(
    kind: str, monkeypatch: pytest.MonkeyPatch, master_cleanup: None
) -> None:
    # Force the "random" suffix, so that the name collides with an object that
    # is already there: creation must fail, and leave that object as it was.
    suffix = "0123456789abcdef"
    monkeypatch.setattr("netmcore._ipc.random_name", lambda prefix: prefix + suffix)
    if kind == "sem":
        existing = f"/nmc.{os.getpid()}.{suffix}"
        posix_ipc.Semaphore(existing, posix_ipc.O_CREX, mode=0o600, initial_value=5).close()
        path = sem_path(existing)
    else:
        prefix = f"/nmc.{os.getpid()}." if kind == "shm" else "/nmctest.excl."
        existing = prefix + suffix
        shm = posix_ipc.SharedMemory(existing, posix_ipc.O_CREX, mode=0o600, size=4)
        os.pwrite(shm.fd, b"mine", 0)
        shm.close_fd()
        path = shm_path(existing)
    inode = os.stat(path).st_ino
    try:
        with pytest.raises(Exception, match=r"exists"):
            if kind == "shm":
                netmcore.create_shm(8)
            elif kind == "sem":
                netmcore.create_sem(0)
            else:
                netmcore.create_preallocated_shm("/nmctest.excl.", 8)
        assert os.stat(path).st_ino == inode, "the existing object was replaced"
        if kind == "sem":
            sem = posix_ipc.Semaphore(existing)
            assert sem.value == 5
            sem.close()
        else:
            with open(path, "rb") as f:
                assert f.read() == b"mine", "the existing object was overwritten"
    finally:
        if kind == "sem":
            posix_ipc.unlink_semaphore(existing)
        else:
            posix_ipc.unlink_shared_memory(existing)


# --------------------------------------------------------------------------
# 9. Bad input: a clear error in the caller, and nothing created
# --------------------------------------------------------------------------


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_outside_run(case: str, master_cleanup: None) -> None:
    needs_a_shm_size(case)
    check_bad_input(case)


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_in_a_worker(case: str) -> None:
    needs_a_shm_size(case)
    before = listing()
    assert run_scenario(bad_input_scenario, case) == case
    assert listing() == before


# --------------------------------------------------------------------------
# 10. Typed helpers
# --------------------------------------------------------------------------


def test_shm_segment_is_shared_by_res_id_between_workers() -> None:
    got, answer, exists = run_scenario(shm_helper_scenario, 0)
    assert got == b"hello netmcore"
    assert answer == b"pong"
    assert exists is False


def test_semaphore_is_shared_by_res_id_between_workers() -> None:
    woke, exists = run_scenario(sem_helper_scenario, 0)
    assert woke is True
    assert exists is False


def test_helpers_as_context_managers_release_outside_run(master_cleanup: None) -> None:
    check_context_managers()


def test_helpers_as_context_managers_release_in_a_worker() -> None:
    assert run_scenario(context_manager_scenario, 0) is True


def test_shm_buffer_works_with_numpy(master_cleanup: None) -> None:
    np = pytest.importorskip("numpy")
    with netmcore.create_shm(4 * 8) as seg:
        arr = np.frombuffer(seg.buffer, dtype=np.int64)
        arr[:] = [1, 2, 3, 4]
        assert bytes(seg.buffer[8:16]) == (2).to_bytes(8, "little")
        del arr


# --------------------------------------------------------------------------
# 11. The master's table after run
# --------------------------------------------------------------------------


def test_after_run_only_what_the_master_holds_is_left(tmp_path: Path, master_cleanup: None) -> None:
    master_seg = netmcore.create_shm(8)
    master_seg.close()
    pre_id, pre_name = netmcore.create_preallocated_shm("/nmctest.held.", 8)
    paths = run_scenario(make_and_keep_scenario, (master_seg.res_id, new_file(str(tmp_path), "h")))
    assert not [p for p in paths[:-1] if os.path.exists(p)]
    held = [shm_path(master_seg.name), shm_path(pre_name)]
    assert all(os.path.exists(p) for p in held), "run() destroyed what the master still holds"
    assert netmcore.get_shm(master_seg.res_id) == master_seg.name
    assert netmcore.get_shm(pre_id) == pre_name
    netmcore.destroy_resources()
    assert not [p for p in held if os.path.exists(p)]
    master_seg.release()  # destroyed: only the handle's count goes


# --------------------------------------------------------------------------
# 12. Objects managed twice, or unlinked underneath the manager
# --------------------------------------------------------------------------


def test_managing_a_managed_object_again_is_refused_outside_run(
    tmp_path: Path, master_cleanup: None
) -> None:
    # It made a second entry, and releasing either unlinked the object under the other.
    check_manage_twice(str(tmp_path))


def test_managing_a_managed_object_again_is_refused_in_a_worker(tmp_path: Path) -> None:
    assert run_scenario(manage_twice_scenario, str(tmp_path)) is True


def test_an_object_unlinked_underneath_is_no_resource_outside_run(master_cleanup: None) -> None:
    check_unlinked_underneath()


def test_an_object_unlinked_underneath_is_no_resource_in_a_worker() -> None:
    assert run_scenario(unlinked_underneath_scenario, 0) is True


# --------------------------------------------------------------------------
# 13. Sizes past what this process can map; reprs; waits in the master
# --------------------------------------------------------------------------


def test_a_size_this_process_cannot_map_is_an_enomem_naming_it() -> None:
    size = 256 * 1024 * 1024
    if 0 < shm_total() <= size:  # Docker's default /dev/shm is 64 MiB
        pytest.skip(f"needs a /dev/shm of more than {size:,} bytes, so that only the mapping fails")
    code, message = run_scenario(map_past_rlimit, size)
    assert code == errno.ENOMEM
    assert re.fullmatch(
        r"\[Errno 12\] cannot map shared memory object '/nmc\.[0-9a-f.]+' of 268,435,456 "
        r"bytes: this process has not that much memory or address space left \(see ulimit "
        r"-v\)\. Use a smaller size, or map it in a process with more room",
        message,
    ), message


def test_an_object_larger_than_the_free_space_within_the_total_is_made(
    master_cleanup: None,
) -> None:
    """A shm object is sparse: its pages come as they are written. One larger
    than /dev/shm's free space is made, as the kernel and
    multiprocessing.shared_memory make it, and works while what is written
    fits. It was refused, naming the free space."""
    with shm_partly_used() as (free, total):
        size = total  # past the free space; the largest size accepted
        assert size > free
        with netmcore.create_shm(size) as seg:
            assert os.path.getsize(shm_path(seg.name)) == size
            seg.buffer[0], seg.buffer[size - 1] = 1, 2  # a page at each end
            assert (seg.buffer[0], seg.buffer[size - 1]) == (1, 2)
            name = seg.name
        assert not os.path.exists(shm_path(name))


def test_a_dev_shm_without_a_size_limit_bounds_no_size(monkeypatch: pytest.MonkeyPatch) -> None:
    """A tmpfs mounted with size=0 has no limit, and reports 0 blocks (and 0
    free): no size below 2**63 may be refused for it."""
    real = os.statvfs(SHM_DIR)
    unlimited = os.statvfs_result((real.f_bsize, real.f_frsize, 0, 0, 0, *real[5:]))
    monkeypatch.setattr(os, "statvfs", lambda path: unlimited)
    assert netmcore._resources.validate_size(2**62) == 2**62
    with pytest.raises(ValueError, match=r"^size 9,223,372,036,854,775,808 bytes is too large"):
        netmcore._resources.validate_size(2**63)


def test_helpers_show_their_id_name_and_size(master_cleanup: None) -> None:
    seg = netmcore.create_shm(64)
    sem = netmcore.create_sem(0)
    assert repr(seg) == f"ShmSegment({seg.res_id!r}, {seg.name!r}, size=64)"
    assert repr(sem) == f"PosixSemaphore({sem.res_id!r}, {sem.name!r})"
    seg.release()
    sem.release()
    assert repr(seg) == f"ShmSegment({seg.res_id!r}, {seg.name!r}, size=64, closed)"
    assert repr(sem) == f"PosixSemaphore({sem.res_id!r}, {sem.name!r}, closed)"


@pytest.mark.timeout(20)  # before the fix the wait below hung the master for ever
def test_a_semaphore_wait_in_the_master_takes_a_post_or_refuses_to_wait() -> None:
    seen: list[Any] = []

    def first() -> netmcore.ProcessId[int]:
        # The master serves every worker: a worker's open_sem (to post it)
        # would wait for the master, which would wait for the post.
        with netmcore.create_sem(0) as sem:
            seen.append(sem.wait(timeout=0))
            for timeout in (None, 5.0):
                with pytest.raises(netmcore.ContextError) as info:
                    sem.wait(timeout)
                seen.append(str(info.value))
            sem.post()
            seen.append(sem.wait())  # a post already there is taken
            seen.append(sem.value)
        return wait_in_master_scenario.start(0)

    netmcore.run(
        first_process=first,
        extract_result=lambda _ctrl, pid: wait_in_master_scenario.join_nowait(pid),
    )
    nothing, refused, refused_with_timeout, taken, value = seen
    assert nothing is False
    for message in (refused, refused_with_timeout):
        assert re.match(
            r"PosixSemaphore\(ResId\(\d+\), '/nmc\.[0-9a-f.]+'\)\.wait\(\) on a semaphore "
            r"at 0 would wait in the master, which never blocks",
            message,
        ), message
    assert (taken, value) == (True, 0)


# --------------------------------------------------------------------------
# hand_over: a resource made in a worker outlives it, for the next to get it
# --------------------------------------------------------------------------


@netmcore.process
def make_handed_over(keep: bool) -> netmcore.ResId:
    seg = netmcore.create_shm(16)
    seg.buffer[:5] = b"hello"
    if keep:
        netmcore.hand_over(seg.res_id)
        netmcore.get_shm(seg.res_id)  # its maker getting it again takes nothing over
    seg.close()
    return seg.res_id


@netmcore.process
def read_handed(res: netmcore.ResId) -> bytes:
    with netmcore.open_shm(res) as seg:  # opens, and at the end releases, a use
        return bytes(seg.buffer[:5])


@netmcore.process
def hand_over_scenario(_: int) -> list[Any]:
    got: list[Any] = []
    gone = joined(make_handed_over, make_handed_over.start(False))  # gone with its maker
    try:
        netmcore.open_shm(gone)
    except netmcore.NoResource:
        got.append("gone")
    res = joined(make_handed_over, make_handed_over.start(True))
    with netmcore.open_shm(res) as seg:  # this process takes it over...
        got.append(bytes(seg.buffer[:5]))
        got.append(joined(read_handed, read_handed.start(res)))  # its release leaves it
        got.append(bytes(seg.buffer[:5]))
    try:
        netmcore.open_shm(res)  # the last use ended: it is gone
    except netmcore.NoResource:
        got.append("gone")
    try:
        netmcore.hand_over(res)
    except netmcore.NoResource as exc:
        got.append(str(exc).split(": ", 1)[1][:30])
    return got


def test_a_handed_over_resource_outlives_its_maker_until_taken_over() -> None:
    assert run_scenario(hand_over_scenario, 0) == [
        "gone",
        b"hello",
        b"hello",
        b"hello",
        "gone",
        "no such resource, or it has be",
    ]


@netmcore.process
def hand_over_unused(res: netmcore.ResId) -> str:
    try:
        netmcore.hand_over(res)
    except netmcore.NoResource as exc:
        return str(exc)
    return "handed over"


def test_hand_over_of_a_resource_this_process_does_not_use_is_refused(
    master_cleanup: None,
) -> None:
    seg = netmcore.create_shm(16)
    message = run_scenario(hand_over_unused, seg.res_id)
    assert "does not use it, so it has nothing to hand over" in message
    seg.release()


def test_a_handed_over_resource_nobody_took_is_the_masters_after_run() -> None:
    res = run_scenario(make_handed_over, True)
    try:
        with netmcore.open_shm(res) as seg:  # still there, held by the master
            assert bytes(seg.buffer[:5]) == b"hello"
    finally:
        netmcore.release(res)
    with pytest.raises(netmcore.NoResource):
        netmcore.open_shm(res)


@netmcore.process
def get_and_hand_over(res: netmcore.ResId) -> int:
    netmcore.get_shm(res)
    netmcore.hand_over(res)
    return 0


@netmcore.process
def get_and_release(res: netmcore.ResId) -> int:
    netmcore.get_shm(res)
    netmcore.release(res)
    return 0


@netmcore.process
def hand_over_then_get_scenario(res: netmcore.ResId) -> int:
    joined(get_and_hand_over, get_and_hand_over.start(res))
    return joined(get_and_release, get_and_release.start(res))


def test_a_hand_over_never_ends_the_masters_own_use(master_cleanup: None) -> None:
    """Made in the master (here, before run), handed over by a worker, got
    by another: the master's own use stays (it was taken for the hand-over's,
    and ended when the other took it over)."""
    seg = netmcore.create_shm(16)
    assert run_scenario(hand_over_then_get_scenario, seg.res_id) == 0
    with netmcore.open_shm(seg.res_id) as again:  # still there
        assert len(again.buffer) == 16
    seg.release()


@pytest.mark.parametrize("kind", ["sem", "shm", "preallocated"])
def test_an_interrupt_just_after_an_object_is_made_leaves_nothing(
    monkeypatch: pytest.MonkeyPatch, master_cleanup: None, kind: str
) -> None:
    """A SIGINT that lands once the object exists, before the table has it
    (it waits until the table has it): the object is not left in /dev/shm,
    nor managed. The interrupted call never handed it over, so nobody could
    release it later: it is destroyed at once, with or without a handle.
    Before, a preallocated one, which has none, stayed managed until
    destroy_resources."""
    made: list[str] = []
    target = "create_semaphore" if kind == "sem" else "create_mapped"
    real = getattr(netmcore._ipc, target)

    def make_then_interrupt(name: str, *args: Any) -> Any:
        made.append(name)
        result = real(name, *args)
        os.kill(os.getpid(), signal.SIGINT)
        return result

    monkeypatch.setattr(netmcore._ipc, target, make_then_interrupt)
    create: Callable[[], object] = {
        "sem": lambda: netmcore.create_sem(0),
        "shm": lambda: netmcore.create_shm(8),
        "preallocated": lambda: netmcore.create_preallocated_shm("/nmctest.interrupted.", 8),
    }[kind]
    with pytest.raises(KeyboardInterrupt):
        create()
    assert len(made) == 1
    path = netmcore._ipc.SHM_DIR + ("/sem." if kind == "sem" else "/") + made[0][1:]
    assert made[0] not in {entry.name for entry in netmcore._resources.table.values()}
    assert not os.path.exists(path)


@netmcore.process
def map_until_out_of_descriptors(room: int) -> tuple[int, str, list[str]]:
    """With ``room`` descriptors left under the soft limit, make shm objects
    until one cannot be mapped; release them all. The error, and the objects
    left (the one that failed must not be)."""
    before = own_shm_entries()
    made: list[netmcore.ShmSegment] = []
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + room, hard))
    try:
        while len(made) < 1000:
            made.append(netmcore.create_shm(64))
        number, message = 0, "no error"
    except OSError as exc:
        number, message = exc.errno or 0, str(exc)
    finally:
        for segment in made:
            segment.release()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return number, message, sorted(own_shm_entries() - before)


def test_out_of_descriptors_the_error_says_why_and_what_to_do() -> None:
    number, message, left = run_scenario(map_until_out_of_descriptors, 8)
    assert number == errno.EMFILE, message
    assert re.match(
        r"\[Errno 24\] too many open files \(\d+, this process's limit\): each shared memory "
        r"object mapped in a process holds a descriptor\. Release the objects no longer "
        r"used, or raise the limit",
        message,
    ), message
    assert left == []


def test_open_shm_of_an_empty_object_names_it_and_keeps_it_managed(master_cleanup: None) -> None:
    name = f"/nmctest.{os.getpid()}.empty"
    posix_ipc.SharedMemory(name, posix_ipc.O_CREX, mode=0o600, size=0).close_fd()
    res = netmcore.manage_shm(name)
    try:
        with pytest.raises(ValueError, match=rf"shm object {re.escape(name)} is empty \(0 bytes\)"):
            netmcore.open_shm(res.id)
        shm = posix_ipc.SharedMemory(name)
        os.ftruncate(shm.fd, 8)
        shm.close_fd()
        seg = netmcore.open_shm(res.id)  # the refused open left it managed
        assert len(seg.buffer) == 8
        seg.release()
    finally:
        res.release()
    assert not os.path.exists(shm_path(name))


def test_semaphore_post_past_its_largest_value_is_a_value_error(master_cleanup: None) -> None:
    top = posix_ipc.SEMAPHORE_VALUE_MAX
    sem = netmcore.create_sem(top)
    try:
        with pytest.raises(
            ValueError, match=rf"is at the largest value a semaphore holds \({top}\)"
        ):
            sem.post()
        assert sem.value == top
        assert sem.wait(0) is True
        sem.post()  # below the top again
        assert sem.value == top
    finally:
        sem.release()
