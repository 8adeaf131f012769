"""Managed resources: the table of kernel objects that outlive processes.

Each entry keeps a *set of users* (process ids, or ``MASTER``), as upstream's
does: getting a resource adds the caller, releasing removes it, and when the
set becomes empty the kernel object is destroyed. A worker that ends leaves
every set. The table lives in the master; before ``run`` starts the calling
process is the master-to-be, so preallocated memory can be made there first.
"""

from __future__ import annotations

import atexit
import contextlib
import enum
import errno
import mmap
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from . import _ipc, _posix, _registry
from ._debug import log
from ._errors import NetmcoreError, NoResource, NotInherited
from ._ids import ResId, handed_out, next_res_id, peek_process_id
from ._wire import Asked, ResInfo, ResourceUse, failed_of_its_own

MASTER = -1  # the master's place in a users set
NAME_MAX = 255  # the longest file name in /dev/shm
_SEM_PREFIX = len("sem.")  # /dev/shm/sem.NAME holds a semaphore


class ResourceType(enum.Enum):
    """The kinds of resources (upstream's ``compute_resource_type``)."""

    FILE = "file"
    POSIX_SHM = "posix_shm"
    POSIX_SHM_PREALLOCATED = "posix_shm_preallocated"
    POSIX_SEM = "posix_sem"
    FORK_POINT = "fork_point"
    JOIN_POINT = "join_point"


@dataclass(frozen=True, slots=True)
class File:
    """A file, by absolute path."""

    name: str


@dataclass(frozen=True, slots=True)
class PosixShm:
    """A named POSIX shared memory object."""

    name: str


@dataclass(frozen=True, slots=True)
class PosixShmPreallocated:
    """Shared memory mapped by the master and inherited by workers.

    ``memory`` is a writable buffer over the mapping (usable with
    ``numpy.frombuffer``); every process that inherited it sees the others'
    writes.
    """

    name: str
    memory: memoryview


@dataclass(frozen=True, slots=True)
class PosixSem:
    """A named POSIX semaphore."""

    name: str


@dataclass(frozen=True, slots=True)
class ProcessPoint:
    """A fork point or join point of a process type."""

    process_type: str


ResourceRepr = File | PosixShm | PosixShmPreallocated | PosixSem | ProcessPoint


@dataclass(eq=False)
class Entry:
    """A managed kernel object, as the table knows it."""

    res_id: ResId
    typ: ResourceType
    name: str
    users: set[int] = field(default_factory=set)
    size: int = 0
    first_pid: int = 0  # the first process id that can inherit it (preallocated)
    creator: int = MASTER
    # The OS process that made it: a child forked outside run has a copy of
    # its parent's table, and must not destroy those objects at its exit.
    made_in: int = field(default_factory=os.getpid)
    mapping: mmap.mmap | None = None  # preallocated only, in the master and inheritors
    # The process that handed it over (see op_hand_over): until another one
    # gets it, the master holds a use for it. That use is held for the
    # taker, not the master's own code's, which has nothing to release.
    handed_by: int | None = None
    # Who handed it over and who took it over, the first to get it after
    # (a worker): for the error of a get once it has gone (see ended_reason).
    taken: tuple[int, int] | None = None
    # Its destroy has begun (see destroy): no get finds it any more. Then
    # the steps done, so that a destroy made again does only the rest.
    destroying: bool = False
    unlinked: bool = False
    recorded_gone: bool = False  # on_change has been told it is gone
    # Its destroy's loop runs (below a signal handler that releases
    # something, or in another thread): a destroy called meanwhile leaves it
    # to that one.
    running: bool = False


table: dict[int, Entry] = {}
# The destroys begun and not done (see destroy), by id: an entry stays here
# until it has left the table.
_unfinished: dict[int, Entry] = {}


def record_nothing(op: str, typ: ResourceType, name: str) -> None:
    pass


# Called with ("+" or "-", kind, name) whenever a kernel object is taken into
# the table or leaves it: before it is made, and after it is destroyed. The
# master points this at its crash-cleanup record; outside run, the program's
# guard is told (_watchdog.guard_outside_run, set when that module loads).
on_change: Callable[[str, ResourceType, str], None] = record_nothing


def validate_object_name(name: object, what: str, limit: int = NAME_MAX) -> str:
    """Check a POSIX shm or semaphore name; return it."""
    if not isinstance(name, str):
        raise TypeError(f"{what} name must be a str, not {type(name).__name__}")
    if not name.startswith("/") or "/" in name[1:] or len(name) < 2 or "\0" in name:
        raise ValueError(
            f"{what} name {name!r} is not valid: it must be a slash followed by at "
            "least one character and no other slash or NUL character, like '/mydata'"
        )
    if len(name) - 1 > limit:
        raise ValueError(
            f"{what} name {name[:20]!r}... is {len(name) - 1} characters after the "
            f"slash; the system allows at most {limit}: choose a shorter name"
        )
    return name


def validate_prefix(prefix: object) -> str:
    if not isinstance(prefix, str):
        raise TypeError(f"prefix must be a str, not {type(prefix).__name__}")
    bare = prefix[1:] if prefix.startswith("/") else prefix
    if "/" in bare or "\0" in bare:  # posix_ipc crashes (SIGSEGV) on a NUL
        raise ValueError(
            f"prefix {prefix!r} is not valid: it may start with a slash but have no "
            "other one, and no NUL character, like '/mydata'"
        )
    if len(bare) + 16 > NAME_MAX:
        raise ValueError(
            f"prefix {prefix!r} is too long: with the 16-character random suffix, a "
            f"name may have at most {NAME_MAX} characters"
        )
    return "/" + bare


OFF_T_MAX = 2**63 - 1  # the largest file size (off_t) the kernel has
_ENLARGE = "mount -o remount,size=..., or docker run --shm-size=..."
SHM_SPACE_FIX = f", or enlarge {_ipc.SHM_DIR} ({_ENLARGE})"  # past its total size
SHM_ROOM_FIX = (
    f", or make room in {_ipc.SHM_DIR} (or enlarge it: {_ENLARGE})"  # past its free space
)


def space_fix(size: int) -> str:
    """The end of a too-large message's fix: enlarging /dev/shm, for a size
    that a larger /dev/shm could hold (none past a file's largest size)."""
    return SHM_SPACE_FIX if size <= OFF_T_MAX else ""


def require_int(value: object, what: str, rule: str, example: int) -> int:
    """``value``, given for the argument ``what``, if it is an int; else a
    TypeError naming it, the rule and the fix (one wording for every size and
    count the resource calls take). A bool is refused: True is no size. An
    int-like value (a float, a numeric str) is refused too, as ``range``
    refuses it, but the fix names the int it stands for."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(
            f"{what}={value!r} is not valid: it must be an int ({rule}), not "
            f"{type(value).__name__}; pass an int, like {what}={_int_like(value, example)}"
        )
    return value


def _int_like(value: object, example: int) -> int:
    """The int that ``value`` (a float or str) stands for, else ``example``."""
    try:
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            return int(value)
    except (ValueError, OverflowError):
        pass
    return example


def validate_size(size: object, what: str = "size") -> int:
    """Check the size in bytes of a shm object to be made; return it.

    Checked in the caller, before anything is made: the kernel would give a
    bare ENOMEM or EINVAL for a size it cannot take, or take one larger than
    /dev/shm itself, which no process could ever fill. See size_problem.
    """
    size = require_int(size, what, "a number of bytes, at least 1", 4096)
    if size <= 0:
        raise ValueError(f"{what} {size} is not valid: it must be at least 1 byte")
    problem = size_problem(size)
    if problem is not None:
        raise ValueError(
            f"{what} {size:,} bytes is too large: {problem}. Use a smaller {what}{space_fix(size)}"
        )
    return size


def size_problem(size: int) -> str | None:
    """Why a shm object of ``size`` bytes could never work here, or None.

    Refused: a size past a file's (2**63-1), or past the total size of
    /dev/shm, which no object could ever fill. A shm object is a sparse file
    there, whose pages are taken when first written: like the kernel (and
    ``multiprocessing.shared_memory``), this accepts an object larger than the
    free space, which works as long as what is written fits. As with any shm
    object, a process that writes past the free space is killed by SIGBUS: no
    check at creation could prevent that, as other objects and processes
    share the space, now and later.
    """
    if size > OFF_T_MAX:
        return f"a shared memory object holds at most {OFF_T_MAX:,} bytes (2**63-1, a file's size)"
    total = largest_shm()
    if total < size:
        return (
            f"{_ipc.SHM_DIR}, where shared memory lives, is {total:,} bytes in all, so an "
            "object larger than that could never be filled (a process that writes past the "
            "space there is killed by SIGBUS)"
        )
    return None


def largest_shm() -> int:
    """The size of the largest shm object that could be filled here (see
    :func:`size_problem`): all of /dev/shm, or a file's largest size."""
    space = os.statvfs(_ipc.SHM_DIR)
    total = space.f_blocks * space.f_frsize  # 0 for a tmpfs mounted without a limit (size=0)
    return total if 0 < total < OFF_T_MAX else OFF_T_MAX


def free_problem(written: int) -> str | None:
    """Why ``written`` bytes of new shm cannot be written now, or None: they
    are more than /dev/shm has free, and the writer would be killed by SIGBUS.
    For an object whose creation writes them at once (a Mailbox's slot locks);
    what a program writes afterwards is its own to fit."""
    space = os.statvfs(_ipc.SHM_DIR)
    free = space.f_bavail * space.f_frsize
    if space.f_blocks and written > free:  # no f_blocks: a tmpfs without a limit
        return (
            f"{_ipc.SHM_DIR}, where shared memory lives, has {free:,} bytes free, and a "
            "process that writes past its free space is killed by SIGBUS"
        )
    return None


@contextlib.contextmanager
def enomem_said(message: str) -> Iterator[None]:
    """Raise an ENOMEM from the block as OSError(ENOMEM, ``message``), chained:
    a message that says what failed, and names the caller's arguments. Other
    errors go on as they are."""
    try:
        yield
    except OSError as exc:
        if exc.errno != errno.ENOMEM:
            raise
        raise OSError(errno.ENOMEM, message) from exc


def enomem_said_plainly(name: str, size: int) -> contextlib.AbstractContextManager[None]:
    """:func:`enomem_said` for mapping shm object ``name``: the size fits
    /dev/shm, but not this process's memory or address space (or its
    RLIMIT_AS)."""
    sized = f" of {size:,} bytes" if size else ""  # a managed object's is not known
    return enomem_said(
        f"cannot map shared memory object {name!r}{sized}: this process has not that "
        "much memory or address space left (see ulimit -v). Use a smaller size, or "
        "map it in a process with more room"
    )


def add(
    typ: ResourceType,
    name: str,
    user: int,
    size: int = 0,
    *,
    recorded: bool = False,
    into: Asked | None = None,
) -> Entry:
    """Take a kernel object into the table, with ``user`` as its first user.

    ``into``, if given, is a local caller's (see :func:`op_get`): it gets
    the answer, as its reply, before the table has the object."""
    _destroy_at_exit()
    entry = Entry(next_res_id(), typ, name, {user}, size)
    if into is not None:
        into.reply = info(entry)  # nothing called from here to the entry's being in the table
    table[entry.res_id.n] = entry
    if not recorded:
        on_change("+", typ, name)
    return entry


# Why no get finds an entry whose destroy has begun (see destroy).
BEING_DESTROYED = (
    "it is being destroyed: its last user released it (or destroy_resources was "
    "called), so its object is gone or going; make a new one"
)


def lookup(res_id: ResId, *kinds: ResourceType) -> Entry:
    entry = table.get(res_id.n)
    if entry is None:
        reason = ended_reason(res_id.n) or (
            "no such resource, or it has been destroyed"
            if handed_out(res_id.n)
            else "no such resource: none was ever made with this id (pass the res_id of "
            "a resource made in this program)"
        )
        raise NoResource(res_id, reason)
    if entry.destroying:
        raise NoResource(res_id, BEING_DESTROYED)
    if kinds and entry.typ not in kinds:
        wanted = " or ".join(k.name for k in kinds)
        raise of_another_kind(res_id, entry.typ, wanted)
    return entry


# What takes a resource of each kind (the error of a call for another kind).
_TAKEN_BY = {
    ResourceType.FILE: "get_file(res_id) takes it",
    ResourceType.POSIX_SHM: (
        "open_shm(res_id) or get_shm(res_id) takes it, or the class that made an object "
        "in it (Mailbox, SharedArray, Buffer, ShmMutex, ShmCondition)"
    ),
    ResourceType.POSIX_SHM_PREALLOCATED: (
        "get_resource(res_id).repr.memory is its memory, in a process that inherited it"
    ),
    ResourceType.POSIX_SEM: "open_sem(res_id) or get_sem(res_id) takes it",
    ResourceType.FORK_POINT: "it is a process type's: start processes with its class",
    ResourceType.JOIN_POINT: "it is a process type's: join processes with its class",
}


def of_another_kind(res_id: ResId, typ: ResourceType, wanted: str) -> NoResource:
    """The error of a call for a ``wanted`` resource on one of kind ``typ``."""
    return NoResource(
        res_id, f"it is a {typ.name}, not a {wanted}; {_TAKEN_BY[typ]}", other_kind=True
    )


def release(res_id: int, user: int) -> None:
    """Remove ``user``; destroy the object when nobody uses it. Never raises
    for an unknown id or a user not in the set: releasing twice is harmless.
    A destroy that an exception cut short is finished here (see destroy)."""
    if _unfinished:
        _finish_destroys()
    entry = table.get(res_id)
    if entry is None or (user == MASTER and entry.handed_by is not None):
        # The master's place in the set is held for the next process to get
        # it (a hand-over's), not a use of the master's own code, which never
        # got it: releasing what was never got does nothing. Ending the hold
        # here destroyed the object under the process it was handed to.
        return
    if entry.destroying or entry.users <= {user}:
        # The last use ends in destroy, not here: an exception between the
        # two would leave an entry that nobody uses and no get refuses.
        destroy(entry)
    else:
        entry.users.discard(user)


@dataclass(frozen=True)
class Failure:
    """How a process failed, as "raised KeyError", for the error of a get of
    a resource gone with it; ``own_error``: an error of its own (raised, an
    invalid result) that its log and its joiner have, not a signal or an
    exit."""

    how: str
    own_error: bool


def leave_all(user: int, failure: Failure | None = None) -> None:
    """A process ended (``failure``: how it failed; None if it returned):
    take it out of every users set. A destroy that
    fails of its own (an unlink refused: the file of `manage_file` in a
    directory nobody may write to, say) is logged and left for
    destroy_all; the others go on (one such failure used to stop the
    master's bookkeeping of the process's end, and its result with it)."""
    if _unfinished:
        _finish_destroys()
    for entry in list(table.values()):
        if user in entry.users:
            try:
                release(entry.res_id.n, user)
            except (OSError, BufferError, NetmcoreError) as exc:
                if not _failed_of_its_own(exc):
                    raise
                _log_left(entry, exc, "left for destroy_resources()")
                continue
            if entry.res_id.n not in table:  # it was the last user
                _ended_with[entry.res_id.n] = _Ending(user, failure, entry.taken)
                if len(_ended_with) > _ENDED_WITH_MAX:
                    del _ended_with[next(iter(_ended_with))]  # the oldest


@dataclass(frozen=True)
class _Ending:
    """How an object went with the end of its last user, a worker: that
    process, how it failed (None if it returned), and the hand-over of the
    object, if another process took it over (see Entry.taken)."""

    user: int
    failure: Failure | None
    taken: tuple[int, int] | None


# Objects destroyed because their last user, a worker, ended: id -> how. A
# later get of one most likely wanted it handed over, or kept (see
# ended_reason). Only the latest are kept, ids being never reused: an older
# one gets the plain "destroyed".
_ended_with: dict[int, _Ending] = {}
_ENDED_WITH_MAX = 4096


def ended_reason(res_id: int) -> str | None:
    """Why ``res_id`` is gone, if it went with the end of its last user,
    and the fix: that user's own failure, which the get only follows from;
    a hand-over taken over by one process where several would use it; or
    a hand-over missing."""
    ending = _ended_with.get(res_id)
    if ending is None:
        return None
    user, failure = ending.user, ending.failure
    if failure is not None:
        see = f"see process {user}'s own error first; " if failure.own_error else ""
        return (
            f"it was destroyed when process {user}, its last user, ended: it {failure.how}, "
            "and a worker's resources go when it ends, however it ends. This follows from "
            f"that end: {see}to outlive it, keep the resource in use (open it) in a process "
            "that outlives it"
        )
    if ending.taken is not None:
        giver, taker = ending.taken
        return (
            f"it was destroyed when process {user}, its last user, ended. Process {giver} "
            f"had handed it over, and process {taker} took it over as the first process to "
            "get it after: a handed-over resource taken over goes once the processes that "
            "got it have ended. For several processes to use it in turn, get it (open it) "
            "first in the process that passes its id on: that one then keeps it for them all"
        )
    return (
        f"it was destroyed when process {user}, its last user, ended: a worker's "
        "resources are destroyed when it ends, unless it hands them over. Call "
        f"netmcore.hand_over(ResId({res_id})) in process {user} before it ends, and the "
        "resource lives on until another process gets it; or, for a resource several "
        "processes use in turn, keep it in use (open it) in a process that outlives them, "
        "such as the one that passes its id on"
    )


def destroy(entry: Entry) -> None:
    """Destroy the kernel object of ``entry`` and forget it.

    Marked first: from there no get finds it (``lookup``), whatever cuts
    the destroy short. Forgotten last, after the unlink and the record of
    its end (``on_change``): forgotten first, the object could stay in
    /dev/shm, or in the record of what is left, with nothing to destroy it.

    A signal handler's exception in between does not stop it: the steps not
    done yet are made again until all are (the exceptions held, the last
    raised after), as the give-backs of ``_resource_api`` repeat theirs.
    So an interrupted release, in the master's own code or as it serves a
    worker, leaves no half-destroyed entry for a get, or for the run's end,
    to find. One that still escapes (a second exception just as the loop
    goes round again: as the first is classified, or at the jump back)
    stays in ``_unfinished``, its object still recorded: the next release
    or leave_all, destroy_all, or the exit hook finishes it. A failure of
    its own (an unlink refused: see ``_wire.failed_of_its_own``) is raised
    at once, as a retry would meet it again, and an exception held before
    it is dropped; the entry stays, unusable, for a release of its id or
    destroy_all to try again.

    The ``-`` is recorded once, unless the exception comes as ``on_change``
    returns, having recorded it: it is recorded again then, which changes
    nothing (a ``-`` of what is not listed is none, in the record as in
    the guard), where never recording it would leave a gone object listed.

    A destroy called while this one's loop runs (by a signal handler's
    release, which finishes the destroys left, or by another thread)
    returns at once: this one finishes it. Run again meanwhile, its steps
    would be made twice over, one destroy inside the other."""
    if entry.running:
        return
    # Nothing called from the start to the try: the mark and the loop come
    # together, or neither.
    entry.destroying = True
    _unfinished[entry.res_id.n] = entry
    entry.running = True
    held: BaseException | None = None
    tries = 0
    try:
        while True:
            try:
                _destroy_steps(entry)
                break
            except BaseException as exc:
                tries += 1
                if failed_of_its_own(exc, tries):  # a retry would meet it again
                    _unfinished.pop(entry.res_id.n, None)
                    raise
                held = exc
    finally:
        entry.running = False
    if held is not None:
        raise held


def _destroy_steps(entry: Entry) -> None:
    """What :func:`destroy` does, each step once; the entry is marked."""
    entry.users.clear()  # its last use ends with its destroy
    if entry.mapping is not None:
        with contextlib.suppress(BufferError):
            entry.mapping.close()  # closing it again does nothing
    if not entry.unlinked:
        # Unlinked again if an exception came as it returned: False then.
        unlink_object(entry.typ, entry.name)
        entry.unlinked = True
    if not entry.recorded_gone:
        on_change("-", entry.typ, entry.name)
        entry.recorded_gone = True
    table.pop(entry.res_id.n, None)
    _unfinished.pop(entry.res_id.n, None)


def _finish_destroys() -> None:
    """Finish the destroys an exception cut short (see :func:`destroy`).
    Those of this process only: a forked child's copy holds its parent's.
    One that fails of its own (an unlink refused) is logged and left for
    destroy_all: the release that found it, of another resource, goes on."""
    me = os.getpid()
    mine = [e for e in _unfinished.values() if e.made_in == me and not e.running]
    _destroy_each(mine, raise_failure=False)


def _failed_of_its_own(exc: BaseException) -> bool:
    """Whether a destroy's ``exc`` is its own failure (an unlink refused),
    not a signal handler's exception, even of a kind a bug raises (an
    OSError without errno): that one is the caller's."""
    return not (isinstance(exc, OSError) and exc.errno is None)


def _log_left(entry: Entry, exc: BaseException, left: str) -> None:
    log.warning(
        "netmcore: %s %s could not be destroyed (%s): %s", entry.typ.name, entry.name, exc, left
    )


def recorded_objects() -> list[tuple[ResourceType, str]]:
    """The objects of the table that ``on_change`` has not heard gone: a
    destroy cut short after recording its end leaves an entry whose name
    may be another object's by now."""
    return [(e.typ, e.name) for e in table.values() if not e.recorded_gone]


def destroy_all() -> None:
    """Destroy every entry. One whose destroy fails of its own (an unlink
    refused) stays, for another try, and does not stop the others: the
    first such failure is raised after them."""
    _destroy_each(list((table | _unfinished).values()), raise_failure=True)


def _destroy_own() -> None:
    """What this process made (a forked child's copy of the table holds its
    parent's objects too), at its exit: a failure is logged."""
    me = os.getpid()
    own = [e for e in (table | _unfinished).values() if e.made_in == me]
    _destroy_each(own, raise_failure=False, left="left at exit")


def _destroy_each(
    entries: list[Entry], *, raise_failure: bool, left: str = "left for destroy_resources()"
) -> None:
    """Destroy each of ``entries``. One that fails of its own is logged as
    ``left``, or, the first with ``raise_failure``, raised after the others."""
    failed: BaseException | None = None
    for entry in entries:
        try:
            destroy(entry)
        except (OSError, BufferError, NetmcoreError) as exc:
            if not _failed_of_its_own(exc):
                raise
            if raise_failure and failed is None:
                failed = exc
            else:
                _log_left(entry, exc, left)
    if failed is not None:
        raise failed


_exit_hook_pid: int | None = None


def _destroy_at_exit() -> None:
    # A program that ends (normally, or by an exception) without releasing what
    # it manages still leaves nothing behind. The pid checks keep a forked child
    # that runs atexit handlers from destroying its parent's objects.
    global _exit_hook_pid
    if _exit_hook_pid != os.getpid():
        _exit_hook_pid = os.getpid()
        pid = _exit_hook_pid
        atexit.register(lambda: _destroy_own() if os.getpid() == pid else None)


def unlink_object(typ: ResourceType, name: str) -> bool:
    """Unlink a kernel object by kind and name; False if it was gone already."""
    if typ is ResourceType.POSIX_SEM:
        return _ipc.unlink_semaphore(name)
    if typ is not ResourceType.FILE:
        return _ipc.unlink(name)
    try:
        os.unlink(name)
    except FileNotFoundError:
        return False
    return True


def create_preallocated(
    prefix: str, size: int, user: int, first_pid: int, into: Asked | None = None
) -> Entry:
    """Create, size and map a fresh shm object (0600, exclusive). ``into``:
    see :func:`add`."""
    name = _ipc.random_name(prefix)
    typ = ResourceType.POSIX_SHM_PREALLOCATED
    mapping: mmap.mmap | None = None
    try:
        on_change("+", typ, name)  # recorded first: a crash right after creating leaks nothing
        with enomem_said_plainly(name, size):
            mapping = _ipc.create_mapped(name, size)
        entry = add(typ, name, user, size, recorded=True, into=into)
    except FileExistsError:
        on_change("-", typ, name)  # the name is another object's, which stays untouched
        raise
    except BaseException:
        # Before the table had it (add calls nothing after), but maybe made:
        # see _create.
        if mapping is not None:
            mapping.close()
        _ipc.unlink(name)
        on_change("-", typ, name)
        raise
    entry.mapping = mapping
    entry.first_pid = first_pid
    return entry


def keep_only_inherited(inherit: list[int] | None) -> None:
    """In a new worker: unmap the preallocated memory it did not inherit."""
    if inherit is None:
        return
    wanted = set(inherit)
    for entry in table.values():
        if entry.mapping is not None and entry.res_id.n not in wanted:
            with contextlib.suppress(BufferError):
                entry.mapping.close()
            entry.mapping = None


def check_kernel_object(typ: ResourceType, name: str) -> None:
    """Raise if the object to be managed does not exist."""
    exists: bool
    if typ is ResourceType.FILE:
        if os.path.isdir(name):
            raise IsADirectoryError(
                f"cannot manage FILE {name!r}: it is a directory, and only a file can be "
                "managed (unlinked with its last user): name a file"
            )
        exists = os.path.isfile(name)
    elif typ is ResourceType.POSIX_SEM:
        exists = os.path.exists(os.path.join(_ipc.SHM_DIR, "sem." + name[1:]))
    else:
        exists = os.path.exists(os.path.join(_ipc.SHM_DIR, name[1:]))
    if not exists:
        raise FileNotFoundError(f"cannot manage {typ.name} {name!r}: it does not exist")


# --- operations, for the master serving a worker or for a local caller ---------


def in_use() -> list[ResourceUse]:
    """Every resource, as the admin tool lists it."""
    points = [
        ResourceUse(d.fork_point.n, ResourceType.FORK_POINT.value, d.name, [])
        for d in _registry.by_fork_point.values()
    ] + [
        ResourceUse(d.join_point.n, ResourceType.JOIN_POINT.value, d.name, [])
        for d in _registry.by_join_point.values()
    ]
    objects = [
        ResourceUse(e.res_id.n, e.typ.value, e.name, sorted(e.users)) for e in table.values()
    ]
    return sorted(points + objects, key=lambda r: r.id)


def info(entry: Entry, was_user: bool = False) -> ResInfo:
    return ResInfo(entry.res_id.n, entry.typ.value, entry.name, entry.size, was_user=was_user)


def op_get(
    res_id: int, kinds: list[str], user: int, mapped: bool, into: Asked | None = None
) -> ResInfo:
    """Add ``user`` to the users of ``res_id`` and describe it.

    ``into``: a local caller's (the master's own code, or a program before
    run), whose call a signal handler's exception may cut short anywhere
    in here, as it may a worker's request. The answer is stored in it, as
    its reply, before the table changes: an exception after the change, as
    this returns, still finds what it granted, and the caller gives that
    back (see ``_resource_api._local_or_remote``). Had the change not been
    made, the give-back does nothing: the caller was not a user before."""
    wanted = [ResourceType(k) for k in kinds]
    point = _registry.by_fork_point.get(res_id) or _registry.by_join_point.get(res_id)
    if point is not None:
        typ = ResourceType.FORK_POINT if point.fork_point.n == res_id else ResourceType.JOIN_POINT
        if wanted and typ not in wanted:
            raise of_another_kind(ResId(res_id), typ, " or ".join(k.name for k in wanted))
        return ResInfo(res_id, typ.value, point.name, 0)
    entry = lookup(ResId(res_id), *wanted)
    if entry.typ is ResourceType.POSIX_SHM_PREALLOCATED and user != MASTER and not mapped:
        raise NotInherited(ResId(res_id), _why_not_inherited(entry, user))
    was_user = user in entry.users
    answer = info(entry, was_user)
    if into is not None:
        into.reply = answer  # nothing called from here to the add
    entry.users.add(user)
    if entry.handed_by is not None and user != entry.handed_by:
        # The first to get it after the hand-over takes it over: the master's
        # use, held for it, ends (the master's own code keeps it as its own).
        if user != MASTER:
            entry.users.discard(MASTER)
            entry.taken = (entry.handed_by, user)
        entry.handed_by = None
    return answer


def op_hand_over(res_id: int, user: int) -> ResInfo:
    """Keep ``res_id`` alive for the next process that gets it, after ``user``
    (one of its users) lets go or ends: the master holds a use until then."""
    entry = lookup(ResId(res_id))
    if user not in entry.users:
        raise NoResource(
            ResId(res_id),
            f"process {user} does not use it, so it has nothing to hand over: "
            "hand over what this process made or got",
        )
    # The master using it already (made there, or before run): it lives on
    # with that use, which a hand-over must never end.
    if user != MASTER and MASTER not in entry.users:
        entry.users.add(MASTER)
        entry.handed_by = user
    return info(entry, True)


def _why_not_inherited(entry: Entry, user: int) -> str:
    rule = "a process inherits the preallocated memory that exists when it starts"
    if entry.creator == user:
        return f"process {user} created it, so it cannot map it itself ({rule})"
    if user < entry.first_pid:
        return f"it was created after process {user} started ({rule})"
    return f"process {user} was started with inherit_resources that leave it out"


def op_manage(kind: str, name: str, user: int, into: Asked | None = None) -> ResInfo:
    """Take an existing kernel object into the table. ``into``: see :func:`op_get`."""
    typ = ResourceType(kind)
    if typ is ResourceType.FILE:
        name = os.path.abspath(name)
    else:
        limit = NAME_MAX - _SEM_PREFIX if typ is ResourceType.POSIX_SEM else NAME_MAX
        validate_object_name(name, typ.name, limit)
    _finish_destroys_of(typ, name)
    check_kernel_object(typ, name)
    _refuse_managed_twice(typ, name)
    return info(add(typ, name, user, into=into))


# Kinds whose objects share one namespace: a shm name is one object, whether
# it was made preallocated or not.
_NAMESPACE = {
    ResourceType.FILE: ResourceType.FILE,
    ResourceType.POSIX_SEM: ResourceType.POSIX_SEM,
    ResourceType.POSIX_SHM: ResourceType.POSIX_SHM,
    ResourceType.POSIX_SHM_PREALLOCATED: ResourceType.POSIX_SHM,
}


def _finish_destroys_of(typ: ResourceType, name: str) -> None:
    """Finish the destroy of an entry of the object ``name`` that is being
    destroyed (see :func:`destroy`): the name is free once it is done, and
    its ``-`` is recorded before the new entry's ``+``."""
    space = _NAMESPACE[typ]
    for entry in list(table.values()):
        if entry.destroying and entry.name == name and _NAMESPACE.get(entry.typ) is space:
            # At once if its loop runs below this call (a signal handler's
            # manage): the name is still taken then.
            destroy(entry)


def _refuse_managed_twice(typ: ResourceType, name: str) -> None:
    """Refuse to manage an object the table has already.

    A second entry would unlink the object when its own users let go, under
    the users of the first. Handing back the first entry instead would not do
    what the caller expects either: a users set counts each process once, so
    the caller's release would also end the use it had of the first entry
    (its creator's, say), and unlink it all the same. The caller is told the
    id to use instead.
    """
    space = _NAMESPACE[typ]
    for entry in table.values():
        if entry.name == name and _NAMESPACE.get(entry.typ) is space:
            raise ValueError(
                f"cannot manage {typ.name} {name!r}: it is managed already, as "
                f"{entry.res_id!r}; managing it twice would unlink it under that entry's "
                f"users. Use {entry.res_id!r} instead (get_resource({entry.res_id!r}) "
                "makes this process one of its users)"
            )


def op_create(kind: str, prefix: str, size: int, user: int, into: Asked | None = None) -> ResInfo:
    """Create a kernel object (0600, exclusive, unguessable name) in the
    table. ``into``: see :func:`op_get`."""
    typ = ResourceType(kind)
    # SIGINT and SIGTERM wait while the object is made and taken into the
    # table: a handler's exception in between (once it exists, before it is
    # in the table) left it in /dev/shm with nothing to unlink it.
    return _posix.with_signals_blocked(
        _posix.INTERRUPTS, lambda: _create(typ, prefix, size, user, into)
    )


def _create(typ: ResourceType, prefix: str, size: int, user: int, into: Asked | None) -> ResInfo:
    if typ is ResourceType.POSIX_SHM_PREALLOCATED:
        entry = create_preallocated(prefix, size, user, peek_process_id(), into)
        entry.creator = user
        return info(entry)
    name = _ipc.random_name(prefix)
    try:
        # Recorded first: a crash right after creating leaks nothing. Inside
        # the try: an exception as the record returns is undone with it.
        on_change("+", typ, name)
        if typ is ResourceType.POSIX_SEM:
            _ipc.create_semaphore(name, size)
            size = 0
        else:
            with enomem_said_plainly(name, size):
                _ipc.create_mapped(name, size).close()
        entry = add(typ, name, user, size, recorded=True, into=into)
    except FileExistsError:
        on_change("-", typ, name)  # the name is another object's, which stays untouched
        raise
    except BaseException:
        # Before the table had it (add calls nothing after), but maybe made:
        # the hold above keeps out only SIGINT and SIGTERM (netmcore's
        # handlers), and another signal's handler (or a handler the program
        # put in their place) can raise as a call in the create returns, the
        # object made. Its name
        # is fresh and random: unlinked, whatever exists under it is this
        # call's.
        unlink_object(typ, name)
        on_change("-", typ, name)
        raise
    return info(entry)
