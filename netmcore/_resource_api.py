"""The resource calls (upstream's ``get_resource``, ``manage_*`` ...), and typed
helpers so that users never call posix_ipc themselves.

In a worker each call is a request to the master, which owns the table; in the
master, and before ``run``, it works on the table directly, as the master.
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
import threading
import time
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Protocol, TypeVar

from . import _context, _ipc, _registry, _resources
from ._client import _error, _link
from ._errors import NoResource
from ._ids import ResId
from ._pthread import ONE, SLICE, InUse, check_timeout
from ._resources import (
    MASTER,
    File,
    PosixSem,
    PosixShm,
    PosixShmPreallocated,
    ProcessPoint,
    ResourceRepr,
    ResourceType,
)
from ._wire import (
    Asked,
    Done,
    Failed,
    HandOverReq,
    Message,
    ReleaseReq,
    ResCreateReq,
    ResDestroyAllReq,
    ResGetReq,
    ResInfo,
    ResManageReq,
    failed_of_its_own,
)

R = TypeVar("R")
T = TypeVar("T")


class ComputeResource:
    """A resource the caller uses (upstream's ``compute_resource``).

    Attributes
    ----------
    id : ResId
    typ : ResourceType
    repr : File | PosixShm | PosixShmPreallocated | PosixSem | ProcessPoint
        What the resource is, by kind.
    """

    def __init__(self, res_id: ResId, typ: ResourceType, repr: ResourceRepr) -> None:
        self.id = res_id
        self.typ = typ
        self.repr = repr

    def release(self) -> None:
        """Stop using it (see :func:`release`)."""
        release(self.id)

    def __repr__(self) -> str:
        return f"ComputeResource({self.id!r}, {self.typ.name}, {self.repr!r})"


def get_resource(res_id: ResId) -> ComputeResource:
    """Use the resource ``res_id``: the caller becomes one of its users.

    Raises
    ------
    NoResource
        If there is no such resource. ``NotInherited`` (a subclass) for
        preallocated memory the caller did not inherit.
    """
    return _local_or_remote(_getting(res_id, ()), _resource)


def get_file(res_id: ResId) -> str:
    """The path of the managed file ``res_id``; the caller becomes a user."""
    return _local_or_remote(_getting(res_id, (ResourceType.FILE,)), _name)


def get_shm(res_id: ResId) -> str:
    """The name of the managed shm object ``res_id``; the caller becomes a user."""
    kinds = (ResourceType.POSIX_SHM, ResourceType.POSIX_SHM_PREALLOCATED)
    return _local_or_remote(_getting(res_id, kinds), _name)


def get_sem(res_id: ResId) -> str:
    """The name of the managed semaphore ``res_id``; the caller becomes a user."""
    return _local_or_remote(_getting(res_id, (ResourceType.POSIX_SEM,)), _name)


def release(res_id: ResId) -> None:
    """Stop using ``res_id``. When nobody uses a kernel object any more, it is
    unlinked. Releasing a fork or join point ends the process type's use.

    Releasing twice, or releasing something never got, does nothing.
    """
    _check_res_id(res_id)
    ctx = _context.current
    if ctx.role == "worker":
        _expect(_link("release").request(ReleaseReq(res_id.n)), Done)
    elif ctx.role == "master" and ctx.master is not None:
        _context.refuse_other_master_thread("release", "the resource table")
        ctx.master.release(res_id.n, MASTER)
    elif _registry.release_point(res_id.n) is None:
        _resources.release(res_id.n, MASTER)


def hand_over(res_id: ResId) -> None:
    """Keep ``res_id`` alive for the next process that gets it, after this
    one ends or releases it: made in a worker, a resource goes with its last
    user, even if its id is in the worker's result. The first other process
    to get (open) it takes it over; until then the master holds it (a
    ``release`` in the master's own code, which never got it, leaves it
    alone; a get there takes it over), and if nobody ever does, it is
    destroyed with what the program manages (at its exit, or by
    ``destroy_resources``).

    Raises
    ------
    NoResource
        If there is no such resource, or this process does not use it.
    """
    _check_res_id(res_id)
    # It grants no use (its answer says the caller was a user): interrupted
    # once it went out, the hand-over stands, as a kill's signal goes.
    call: _Call = (
        lambda _asked: _resources.op_hand_over(res_id.n, MASTER),
        HandOverReq(res_id.n),
        "hand_over",
    )
    _local_or_remote(call, _as_is)


def manage_file(path: str) -> ComputeResource:
    """Hand an existing file over to the manager; it is unlinked when unused."""
    if not isinstance(path, str | os.PathLike):
        raise TypeError(f"path must be a str, not {type(path).__name__}")
    path = os.path.abspath(path)
    _resources.check_kernel_object(ResourceType.FILE, path)
    return _local_or_remote(_managing(ResourceType.FILE, path), _resource)


def manage_shm(name: str) -> ComputeResource:
    """Hand an existing POSIX shm object (``/name``) over to the manager."""
    _resources.validate_object_name(name, "shm")
    return _local_or_remote(_managing(ResourceType.POSIX_SHM, name), _resource)


def manage_sem(name: str) -> ComputeResource:
    """Hand an existing POSIX semaphore (``/name``) over to the manager."""
    _resources.validate_object_name(name, "semaphore", _resources.NAME_MAX - 4)
    return _local_or_remote(_managing(ResourceType.POSIX_SEM, name), _resource)


def create_preallocated_shm(prefix: str, size: int) -> tuple[ResId, str]:
    """Create shared memory mapped by the master and inherited by every worker
    started afterwards; return its id and name.

    A worker may call it too (the master creates it); that worker cannot map
    it itself, but counts as a user and should release it.

    Raises
    ------
    ValueError
        If ``size`` is below 1, or ``prefix`` has a slash after its first
        character.
    """
    prefix = _resources.validate_prefix(prefix)
    size = _resources.validate_size(size)
    return _local_or_remote(
        _creating(ResourceType.POSIX_SHM_PREALLOCATED, prefix, size),
        lambda info: (ResId(info.res_id), info.name),
    )


def destroy_resources() -> None:
    """Destroy every managed kernel object that is left. Harmless to repeat."""
    ctx = _context.current
    if ctx.role == "worker":
        _expect(_link("destroy_resources").request(ResDestroyAllReq()), Done)
    else:
        _resources.destroy_all()


# --- typed helpers: create, open and use kernel objects by resource id -------


class _Uses:
    """This process's handles on each resource, by resource id.

    The master keeps a *set* of users per resource (upstream's semantics,
    which ``release`` keeps): a process is one user however many handles it
    holds. So a handle's release must not end the process's use while another
    of its handles is still in use (a helper that opens the box its caller
    created, ``with Mailbox.open(...)``, would destroy it under the caller).
    Every handle counts here; the last one released gives the process's use
    back to the master.

    Per process: a forked child starts with a fresh one (see
    :func:`_fresh_uses`), since its handles inherited over the fork are its
    parent's uses, not its own (a worker is not a user of what it inherited).
    """

    def __init__(self) -> None:
        # Held across a count's change and the request to the master that
        # goes with it, so that an open in one thread and the release of the
        # last handle in another cannot cross (the release would end the use
        # that the open counts on). Reentrant: a signal handler may open or
        # release a handle.
        self.lock = threading.RLock()
        self.handles: dict[int, int] = {}
        # The lock cannot keep out a signal handler of the thread that holds
        # it: one that releases the last handle on an object in the middle of
        # an open of that object, between the master's answer and the count,
        # would give back the use that the new handle is made on, and the
        # object would be destroyed under it. So the opens in progress are
        # counted here, by resource id, and such a release is owed instead:
        # given back when the last of them ends, if none made a handle.
        self.opening: dict[int, int] = {}
        self.owed: set[int] = set()


_uses = _Uses()


def _fresh_uses() -> None:
    global _uses
    _uses = _Uses()  # also a lock that another thread may have held at the fork


os.register_at_fork(after_in_child=_fresh_uses)


class _Counted:
    """A handle that is one of this process's uses of its resource (see
    :class:`_Uses`): ``_uses`` is where it is counted, None once given back
    (or never counted)."""

    res_id: ResId
    _uses: _Uses | None = None
    _release: Asked | None = None  # the give-back's release, once it is made

    def _give_back(self) -> None:
        """Stop counting this handle, and give the process's use back to the
        master if it was the last (idempotent), or, in the middle of an open
        of the same object (a signal handler's release), leave it to that
        open (see :class:`_Uses`). The mapping, if any, is the caller's to
        close: calls in progress may still use it."""
        uses = self._uses
        if uses is not _uses:  # given back already, or inherited over a fork: not this process's
            self._uses = None
            return
        with uses.lock:
            if self._uses is not uses:  # another thread gave it back meanwhile
                return
            n = self.res_id.n
            if uses.handles[n] == 1:
                if n in uses.opening:  # see _Uses: the open's handle carries the use on
                    uses.owed.add(n)
                else:
                    # First: if it raises, the handle still counts. Once: a
                    # repeat (a give-back through interrupts) sends it no more.
                    if self._release is None:
                        self._release = Asked()
                    _release_once(n, self._release)
                del uses.handles[n]
            else:
                uses.handles[n] -= 1
            self._uses = None


class _Releasable(Protocol):
    """What an open or a create makes: a handle, or an object (a Mailbox ...)
    built on one, whose release gives back the use the open took."""

    def release(self) -> None: ...


H = TypeVar("H", bound=_Counted)
X = TypeVar("X", bound=_Releasable)


def _itself(handle: H) -> tuple[H, H]:
    """For :func:`_counted`: a handle that is its own counted part."""
    return handle, handle


def _counted(
    get: Callable[[], ResInfo],
    make: Callable[[ResInfo], tuple[X, _Counted]],
    res_id: ResId | None = None,
) -> X:
    """Get (or create) a resource and ``make`` an object on it, with the
    handle in it that counts as one of this process's uses of it (the
    object's segment, say). If ``make`` fails, or a signal handler's
    exception comes before the caller has the object, what the call took
    is given back: the object, once its handle counts (it is released);
    before, the use that the answer granted, unless the caller used the
    resource before (its creator, say: a release then would destroy the
    object under its other handles): see :func:`_give_up`. ``get`` gives
    back what it granted itself if the exception comes before it returns
    (see :func:`_local_or_remote`).

    ``res_id``, for an open (a create's is not known before its answer):
    while it goes on, a release of this process's last handle on the object
    is left to it (see :class:`_Uses`), and made as it ends, if no handle
    then carries the use.

    Nothing here holds a signal, in a worker or in the master: each step
    is undone by the state it left, whichever point of it a handler's
    exception comes at (``get``'s answer is known even if the exception
    cut it short: see :func:`_local_or_remote`)."""
    if res_id is not None:
        _check_res_id(res_id)  # in every open: a Buffer's, a Mailbox's, ...
    uses = _uses
    n = None if res_id is None else res_id.n
    got: ResInfo | None = None
    made: X | None = None
    counted = False
    try:
        with uses.lock:
            if n is not None:
                uses.opening[n] = uses.opening.get(n, 0) + 1
            try:
                got = get()
                made, handle = make(got)
                k = got.res_id
                # Nothing is called from here to the handle's knowing it
                # counts: Python runs a handler only at a call (or a loop's
                # jump back), so its exception comes before the count and
                # the mark, or after both.
                uses.handles[k] = uses.handles[k] + 1 if k in uses.handles else 1
                handle._uses = uses
                counted = True
            finally:
                if n is not None:
                    # Nothing called until the count is down: an open left
                    # counted in progress would make every later release of
                    # the object's last handle wait for it, for good.
                    left = uses.opening[n] - 1
                    if left:
                        uses.opening[n] = left
                    else:
                        del uses.opening[n]
            if n is not None and n not in uses.opening:
                uses.owed.discard(n)  # a release left to this open: its handle carries the use
        # No call from here to the caller's hands (its callers return this as
        # it is): Python runs a handler only at a call, or a loop's jump back.
        assert made is not None
        return made
    except BaseException:
        # Given back here, as in _local_or_remote (see there): the lock is
        # taken in the loop, as a wait for it can raise a handler's exception.
        held: BaseException | None = None
        release: Asked | None = None
        tries = 0
        while True:
            try:
                if release is None:
                    release = Asked()
                with uses.lock:
                    if counted and made is not None:
                        made.release()  # its give-back is sent once (see _give_back)
                    else:
                        _give_up(got, uses, release)
                    if n is not None and n not in uses.opening and n in uses.owed:
                        _settle_owed(uses, n, release)
                break
            except BaseException as exc:
                tries += 1
                if failed_of_its_own(exc, tries):  # a retry would meet it again: as it is
                    raise
                held = exc
        if held is not None:
            raise held  # noqa: B904 (as in _local_or_remote)
        raise


def _settle_owed(uses: _Uses, n: int, release: Asked) -> None:
    """The last open of resource ``n`` in progress has ended without a
    handle (``uses.lock`` held), and a release was left to it (see
    :class:`_Uses`): give it back, unless a handle now carries the use.
    Safe to repeat, with the same ``release`` (see :func:`_release_once`)."""
    if n not in uses.handles:
        _release_once(n, release)
    uses.owed.discard(n)


def _give_up(got: Message | None, uses: _Uses, release: Asked) -> None:
    """The caller does not get what the answer ``got`` granted: a signal
    handler's exception came first, or the object could not be made on it.
    If the answer made this process a user (it was not one before), it
    stops being one, as it would have by releasing what it never got:

    - not while an open of the object is in progress in this process (an
      open it interrupted, or the caller's own): the last of them to end
      gives it back, unless its handle then carries the use (see
      :class:`_Uses`);
    - not if a handle of this process counts on it already (made since the
      answer, by a signal handler's open, or another thread's, answered
      after it): that handle's release gives it back.

    A fork or join point has no users (its answer never says the caller was
    one), and releasing it would end its process type: nothing to give back.
    Nor does a hand-over grant anything (its answer says the caller was a user).

    Safe to repeat, with the same ``release`` (see :func:`_release_once`):
    the caller repeats it until it is done."""
    if not isinstance(got, ResInfo) or got.was_user or got.kind in _POINTS:
        return
    n = got.res_id
    with uses.lock:
        if n in uses.opening:
            uses.owed.add(n)
        elif n not in uses.handles:
            _release_once(n, release)


_POINTS = frozenset({ResourceType.FORK_POINT.value, ResourceType.JOIN_POINT.value})


def _release_once(n: int, asked: Asked) -> None:
    """:func:`release` of resource ``n``, unless ``asked`` (the release's,
    made before the first try) shows it has gone to the master already: a
    second could end a use that this process took since (another thread's
    open). So it is safe to repeat until it is done, through interrupts. In
    the master (and before run) the release is on the table here, and is
    made again until it has returned: one cut short (the object not yet
    destroyed) is completed by the next."""
    if asked.sent:
        return
    if _context.current.role == "worker":
        _expect(_link("release").request(ReleaseReq(n), None, asked), Done)
    else:
        release(ResId(n))
        asked.sent = True  # nothing called from the release's return to here


class ShmSegment(_Counted):
    """A managed POSIX shared memory object, mapped read-write.

    ``buffer`` is a writable memoryview of it (``numpy.frombuffer`` works on
    it). ``close()`` unmaps it; ``release()`` unmaps it and stops using it:
    the process stops using the object when its last handle on it (this
    segment, or another open of it, or a Mailbox, ShmMutex ... built on it)
    is released, and the object is unlinked once its last user lets go. As a
    context manager it releases on exit.
    """

    def __init__(self, res_id: ResId, name: str, mapping: mmap.mmap) -> None:
        self.res_id = res_id
        self.name = name
        self._mapping: mmap.mmap | None = mapping
        self._buffer = memoryview(mapping)
        self._size = len(mapping)  # for repr: a released buffer has no length

    def __repr__(self) -> str:
        closed = ", closed" if self._mapping is None else ""
        return f"ShmSegment({self.res_id!r}, {self.name!r}, size={self._size}{closed})"

    @property
    def buffer(self) -> memoryview:
        """The mapping, as a writable memoryview. ValueError, naming the
        segment, once it is closed or released (its view is released then)."""
        if self._mapping is None:
            raise closed_error(self)
        return self._buffer

    @property
    def size(self) -> int:
        """Its size in bytes (known after its close too)."""
        return self._size

    def close(self) -> None:
        """Unmap (idempotent). If views of ``buffer`` are still alive, the
        mapping goes with the last of them instead."""
        if self._mapping is not None:
            mapping, self._mapping = self._mapping, None
            try:
                self._buffer.release()
                mapping.close()
            except BufferError:
                pass  # unmapped when the last view is collected

    def release(self) -> None:
        """Unmap it and stop using it (see the class). Harmless to repeat."""
        self.close()
        self._give_back()

    def __enter__(self) -> ShmSegment:
        if self._mapping is None:  # as every use of a closed one: its buffer is released
            raise closed_error(self)
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def create_shm(size: int) -> ShmSegment:
    """Create a shm object of ``size`` bytes (mode 0600, unguessable name),
    managed, and map it. Other processes open it with :func:`open_shm`."""
    size = _resources.validate_size(size)
    return _counted(
        lambda: _create(ResourceType.POSIX_SHM, _object_prefix(), size),
        lambda got: _itself(_map(got)),
    )


def open_shm(res_id: ResId) -> ShmSegment:
    """Map the managed shm object ``res_id``; the caller becomes a user.

    Each open is a handle of its own: releasing one leaves the process's
    other handles on the object usable."""
    return _counted(
        lambda: _get(res_id, (ResourceType.POSIX_SHM,)), lambda got: _itself(_map(got)), res_id
    )


# The mark of each class whose objects start with one (see create_marked),
# and how to open them: an open with another class's says what it found.
MARKS: dict[bytes, str] = {}


def found_in(buffer: memoryview) -> str:
    """What the shm object ``buffer`` holds, by its mark, for an error."""
    for mark, what in MARKS.items():
        if buffer[: len(mark)] == mark:
            return what
    return (
        f"a shm object of {len(buffer)} bytes with no netmcore object's mark "
        "(a plain segment, of create_shm or create_preallocated_shm, say)"
    )


def open_marked(
    res_id: ResId,
    mark: bytes,
    what: str,
    build: Callable[[ShmSegment], X],
    check: Callable[[memoryview], None] | None = None,
) -> X:
    """:func:`open_shm` for an object whose creator wrote ``mark`` first, and
    whose header ``check`` (if given) accepts or raises about; ``build``
    makes the object (a Mailbox, a ShmMutex ...) on the segment, as part of
    the open: if it fails, the open has failed, and gives back what it took.

    Raises
    ------
    ValueError
        If the object does not start with ``mark``: it is another kind of
        object, whose layout would be misread. After this, or what ``check``
        or ``build`` raises, the caller is a user of it only if it was before
        (its creator, say).
    """

    def checked(got: ResInfo) -> tuple[X, ShmSegment]:
        segment = _map(got)
        try:
            if segment.buffer[: len(mark)] != mark:
                raise ValueError(
                    f"resource {res_id!r} is not a {what}: it is {found_in(segment.buffer)}"
                )
            if check is not None:
                check(segment.buffer)
            return build(segment), segment
        except BaseException:
            segment.close()
            raise

    return _counted(lambda: _get(res_id, (ResourceType.POSIX_SHM,)), checked, res_id)


def create_marked(
    size: int, mark: bytes, build: Callable[[ShmSegment], X], enomem: str | None = None
) -> X:
    """:func:`create_shm` for an object that :func:`open_marked` opens:
    ``mark`` is written first, then ``build`` makes the object (a Mailbox, a
    ShmMutex ...) on the segment. If that fails, or a signal handler's
    exception comes before the caller has the object, the segment is
    released, and with it the object. ``enomem``: the message of an ENOMEM
    (a mapping too large for this process), in the caller's terms.

    The segment is made first, the object built on it after: a large one
    (a Mailbox of many slots) takes a while, and SIGINT must not wait for it.
    """
    said = contextlib.nullcontext() if enomem is None else _resources.enomem_said(enomem)
    segment = None
    try:
        with said:
            # Assigned before any call can come after it: the end of the
            # with-statement is one, and this try covers it.
            segment = create_shm(size)
        segment.buffer[: len(mark)] = mark
        return build(segment)
    except BaseException:
        # Released here, in a loop through further interrupts (a release is
        # harmless to repeat): one as it began left the segment, and the
        # object, in /dev/shm until the process ended.
        held: BaseException | None = None
        tries = 0
        while True:
            try:
                if segment is not None:
                    segment.release()
                break
            except BaseException as exc:
                tries += 1
                if failed_of_its_own(exc, tries):
                    raise
                held = exc
        if held is not None:
            raise held  # noqa: B904 (as in _local_or_remote)
        raise


def closed_error(obj: object) -> ValueError:
    """The error for using ``obj``, a mapped object, after its close() or release()."""
    return ValueError(
        f"{obj!r} is closed or released in this process: open it again by its res_id to use it"
    )


def closed_during(obj: object, call: str) -> ValueError:
    """The error for a call that another thread's close() (or release()) ended."""
    return ValueError(
        f"{obj!r} was closed or released (by another thread, or a signal handler) during "
        f"{call}: close an "
        "object only once no thread uses it, or catch this error to end a waiting thread"
    )


class PosixSemaphore(_Counted):
    """A managed named POSIX semaphore, open in this process.

    ``post()`` increments it; ``wait(timeout=None)`` decrements it, waiting
    while it is 0, and returns False if ``timeout`` seconds pass first.

    Each call counts itself in progress (``_pthread.InUse``): a close() by
    another thread closes the C library's handle only once the last call has
    left (a wait uses it), and a wait sees the close between two slices of
    ``_pthread.SLICE`` seconds and ends with ValueError. Nothing is posted to
    wake it: other processes' waiters could take such a post.
    """

    def __init__(self, res_id: ResId, name: str) -> None:
        self.res_id = res_id
        self.name = name
        with _gone_underneath(res_id, name):
            self._sem = _ipc.Semaphore(name)
        self._use = InUse(self._sem.close)

    def __repr__(self) -> str:
        closed = ", closed" if self._use.closed else ""
        return f"PosixSemaphore({self.res_id!r}, {self.name!r}{closed})"

    def _closed(self) -> ValueError:
        return ValueError(
            f"semaphore {self.name} is closed in this process: open it again by its "
            "res_id (open_sem) to use it"
        )

    def post(self) -> None:
        use = self._use
        use.calls += ONE  # the handle stays open until this call leaves (see close)
        try:
            if use.closed:
                raise self._closed()
            try:
                self._sem.post()
            except OSError as exc:
                if exc.errno != errno.EOVERFLOW:
                    raise
                raise ValueError(
                    f"semaphore {self.name} is at the largest value a semaphore holds "
                    f"({_ipc.SEM_VALUE_MAX}): post() cannot raise it further. Post no "
                    "more often than waits take, or create it with a lower value"
                ) from None
        finally:
            del use.calls[-1]
            if use.closed:
                use.left()

    def wait(self, timeout: float | None = None) -> bool:
        """Decrement, waiting while the value is 0; False if ``timeout``
        seconds pass first (None or ``math.inf``: no limit).

        In the master's own code (``first_process``, ``extract_result``) it
        takes a post that is there already, and with ``timeout=0`` returns
        False if there is none; a wait there raises :class:`ContextError`.

        Raises ValueError if it is closed, or if another thread closes it
        during the wait (within ``_pthread.SLICE`` seconds).
        """
        use = self._use
        use.calls += ONE
        try:
            if use.closed:
                raise self._closed()
            timeout = check_timeout(timeout)
            if not _context.in_master_loop():
                return self._wait(timeout)
            # The master serves every worker's request: while it waits, the
            # open_sem of the worker that would post waits for it. So it takes
            # only what is there.
            if self._sem.wait(0):
                return True
            if timeout != 0:
                _context.refuse_wait_in_master(f"{self!r}.wait() on a semaphore at 0")
            return False
        finally:
            del use.calls[-1]
            if use.closed:
                use.left()

    def _wait(self, timeout: float | None) -> bool:
        """Wait in slices, to see a close() by another thread between two.
        A post taken once it is closed is given back: the wait ends with
        ValueError, and nothing is lost for the other users."""
        sem, use = self._sem, self._use
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            piece = SLICE if deadline is None else min(SLICE, deadline - time.monotonic())
            if sem.wait(max(0.0, piece)):
                if use.closed:
                    sem.post()
                    raise closed_during(self, "wait()")
                return True
            if piece < SLICE:
                return False
            if use.closed:
                raise closed_during(self, "wait()")

    @property
    def value(self) -> int:
        use = self._use
        use.calls += ONE
        try:
            if use.closed:
                raise self._closed()
            return self._sem.value
        finally:
            del use.calls[-1]
            if use.closed:
                use.left()

    def close(self) -> None:
        """Close it in this process (idempotent). A wait by another thread
        ends with ValueError within 20 ms, and the handle is closed once the
        last call in progress has left."""
        self._use.close(lambda others: None)

    def release(self) -> None:
        """Close it and stop using it: the process stops using the semaphore
        when its last handle on it is released. Harmless to repeat."""
        self.close()
        self._give_back()

    def __enter__(self) -> PosixSemaphore:
        if self._use.closed:  # as its calls: the body's first one would raise
            raise self._closed()
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


def create_sem(value: int = 0) -> PosixSemaphore:
    """Create a semaphore with initial ``value`` (mode 0600, unguessable
    name), managed, and open it. Others open it with :func:`open_sem`."""
    rule = f"the semaphore's first value, from 0 to {_ipc.SEM_VALUE_MAX}"
    value = _resources.require_int(value, "value", rule, 0)
    if not 0 <= value <= _ipc.SEM_VALUE_MAX:
        raise ValueError(
            f"value {value} is not valid: a semaphore starts at 0 or more, and holds "
            f"at most {_ipc.SEM_VALUE_MAX}"
        )
    return _counted(
        lambda: _create(ResourceType.POSIX_SEM, _object_prefix(), value),
        lambda got: _itself(_sem(got)),
    )


def open_sem(res_id: ResId) -> PosixSemaphore:
    """Open the managed semaphore ``res_id``; the caller becomes a user.

    Each open is a handle of its own, as for :func:`open_shm`."""
    return _counted(
        lambda: _get(res_id, (ResourceType.POSIX_SEM,)), lambda got: _itself(_sem(got)), res_id
    )


def _sem(got: ResInfo) -> PosixSemaphore:
    return PosixSemaphore(ResId(got.res_id), got.name)


# --- plumbing -----------------------------------------------------------------


def _check_res_id(res_id: object) -> None:
    if not isinstance(res_id, ResId):
        raise TypeError(
            f"res_id must be a ResId, not {type(res_id).__name__} ({res_id!r}): pass the "
            "res_id of the object (its .res_id), as its creator has it"
        )


# A resource call, as :func:`_local_or_remote` serves it: its work on the
# table (in the master, or before run), its request (in a worker), its name.
# The work on the table stores the answer in the call's Asked before it
# grants a use (see _resources.op_get).
_Call = tuple[Callable[[Asked], ResInfo], Message, str]


def _as_is(info: ResInfo) -> ResInfo:
    return info


def _name(info: ResInfo) -> str:
    return info.name


def _local_or_remote(call: _Call, use: Callable[[ResInfo], T]) -> T:
    """Serve a resource call, and return what ``use`` makes of its answer.

    In a worker it is the request ``remote`` to the master; elsewhere,
    ``local`` on the table here. If the caller does not get what ``use``
    makes (a signal handler's exception anywhere from the request on, or
    ``use`` failing), what the answer granted is given back (see
    :func:`_give_up`): the process would otherwise stay a user that nothing
    releases, until it ended.

    In a worker, an exception once the request went out (in the wait for
    its answer, or just as it was sent) withdraws it: the master answers
    every resource request at once, so the wait goes on for the answer,
    through further interrupts (each held, and raised after), and the grant
    in it is given back.

    Here (in the master, or before run), ``local`` works on the table in
    this process: it stores its answer in ``asked`` before it changes the
    table, so an exception that cuts it short after the change finds the
    answer there too, and it is given back as above. Nothing is held.

    The give-back is made in this frame, and repeated until it is done
    (the release in it is never sent twice: see :func:`_release_once`). A
    function that repeated it itself would let a second exception (a second
    Ctrl-C) come at its start, before its loop: Python runs a handler as a
    function starts, and as a call returns. Nothing is called from the
    exception to the loop's try, and a ``release`` lost to an exception as
    it is made there had not been used. (A third exception just as the
    loop goes round again, as the second is classified or at the jump
    back, would still end it.)
    """
    local, remote, what = call
    asked, release = Asked(), Asked()
    try:
        if _context.current.role == "worker":
            link = _link(what)

            def withdraw(rid: int) -> None:
                # By waiting on for the answer (the master answers every
                # resource request at once), whose grant is given back:
                # here, if a further exception ended the withdrawal, when
                # the thread's next request finishes it (see Link.request);
                # and below, once (the same ``release``).
                link.wait_reply(rid)
                _give_up(asked.reply, _uses, release)

            link.request(remote, withdraw, asked)
        else:
            _context.refuse_other_master_thread(what, "the resource table")
            asked.reply = local(asked)
        return use(_expect(asked.reply, ResInfo))
    except BaseException:
        held: BaseException | None = None
        tries = 0
        while True:
            try:
                _give_up(asked.reply, _uses, release)
                break
            except BaseException as exc:
                # A failure, not an interrupt (the master gone, an unlink
                # refused), which a retry would meet again: it goes on as
                # it is. A handler that runs as the check is called ends
                # the loop, as at the jump back (see above).
                tries += 1
                if failed_of_its_own(exc, tries):
                    raise
                held = exc
        if held is not None:
            # The later one, as an exception raised in an except clause is
            # (the first is its __context__).
            raise held  # noqa: B904
        raise


def _expect(reply: Message | None, kind: type[R]) -> R:
    if isinstance(reply, kind):
        return reply
    raise _error(reply if isinstance(reply, Failed) else Failed("NetmcoreError", repr(reply)))


def _getting(res_id: ResId, kinds: tuple[ResourceType, ...]) -> _Call:
    _check_res_id(res_id)
    entry = _resources.table.get(res_id.n)
    mapped = entry is not None and entry.mapping is not None
    names = [k.value for k in kinds]
    return (
        lambda asked: _resources.op_get(res_id.n, names, MASTER, mapped, asked),
        ResGetReq(res_id.n, names, mapped),
        "get_resource",
    )


def _get(res_id: ResId, kinds: tuple[ResourceType, ...]) -> ResInfo:
    return _local_or_remote(_getting(res_id, kinds), _as_is)


def _managing(typ: ResourceType, name: str) -> _Call:
    return (
        lambda asked: _resources.op_manage(typ.value, name, MASTER, asked),
        ResManageReq(typ.value, name),
        "manage",
    )


def _creating(typ: ResourceType, prefix: str, size: int) -> _Call:
    def local(asked: Asked) -> ResInfo:
        info = _resources.op_create(typ.value, prefix, size, MASTER, asked)
        master = _context.current.master
        if master is not None and typ is ResourceType.POSIX_SHM_PREALLOCATED:
            master.refresh_spares()
        return info

    return local, ResCreateReq(typ.value, prefix, size), "create"


def _create(typ: ResourceType, prefix: str, size: int) -> ResInfo:
    return _local_or_remote(_creating(typ, prefix, size), _as_is)


def _object_prefix() -> str:
    # A worker leaves it to the master, which names objects under its own prefix.
    ctx = _context.current
    if ctx.role == "worker":
        return ""
    return ctx.master.object_prefix if ctx.master is not None else f"/nmc.{os.getpid()}."


def _map(got: ResInfo) -> ShmSegment:
    """Map the shm object ``got`` (just created, or got), for :func:`_counted`."""
    res_id = ResId(got.res_id)
    with _gone_underneath(res_id, got.name), _resources.enomem_said_plainly(got.name, got.size):
        mapping = _ipc.map_writable(got.name)
    return ShmSegment(res_id, got.name, mapping)


@contextlib.contextmanager
def _gone_underneath(res_id: ResId, name: str) -> Iterator[None]:
    """Raise NoResource, not posix_ipc's FileNotFoundError, for a managed
    object that no longer exists although the table lists it: something
    unlinked it outside the manager."""
    try:
        yield
    except FileNotFoundError as exc:
        raise NoResource(
            res_id,
            f"its kernel object {name!r} no longer exists, though the manager still lists "
            "it: something unlinked it outside the manager. Release "
            f"{res_id!r}, and make the object again",
        ) from exc


def _resource(info: ResInfo) -> ComputeResource:
    typ = ResourceType(info.kind)
    res_id = ResId(info.res_id)
    repr: ResourceRepr
    if typ is ResourceType.FILE:
        repr = File(info.name)
    elif typ is ResourceType.POSIX_SHM:
        repr = PosixShm(info.name)
    elif typ is ResourceType.POSIX_SEM:
        repr = PosixSem(info.name)
    elif typ is ResourceType.POSIX_SHM_PREALLOCATED:
        entry = _resources.table.get(res_id.n)
        if entry is None or entry.mapping is None:
            raise NoResource(res_id, "its mapping is not in this process")
        repr = PosixShmPreallocated(info.name, memoryview(entry.mapping))
    else:
        repr = ProcessPoint(info.name)
    return ComputeResource(res_id, typ, repr)
