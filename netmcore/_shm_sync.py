"""Cross-process mutexes and condition variables in shared memory.

Each lives in a managed shm object (``create_shm``), so it is shared by
resource id and cleaned up like any other resource. The mutexes are robust:
if a holder dies, the next ``lock`` raises :class:`OwnerDiedError` while
holding the (repaired) mutex, and never deadlocks silently. The segment
starts with a mark of its kind, so that opening another kind of object by
mistake is refused rather than misread.

Waits go in slices (see ``_pthread``), so that a signal handler's exception
ends them and a ``close()`` by another thread is seen: a lock ends without the
mutex, a condition wait with it held again, as ``threading`` does.

A held mutex is linked into its holder thread's robust list through the
mapping it was locked by (see ``_pthread.held_through``), so a mutex's
mapping never goes while a thread of the process holds it through it. The
close (or release) of a handle by the thread that holds the mutex through it
unlocks it first, every level, and the next locker, in any process, gets
OwnerDiedError, as after a holder's death: the shared state may be half
updated (:meth:`ShmMutex._let_go_held`). When another thread holds it, the
mapping is kept until no thread of the process holds it any more; that
thread's ``unlock()`` through the closed handle still works, and lets it go
(``_kept``).
"""

from __future__ import annotations

import ctypes
import errno
import functools
import itertools
import os
import threading
import time
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Any, Literal, Self

from . import _context, _pthread
from ._debug import log
from ._errors import OwnerDiedError
from ._ids import ResId
from ._resource_api import (
    MARKS,
    ShmSegment,
    closed_during,
    closed_error,
    create_marked,
    open_marked,
)

MutexKind = Literal["normal", "errorcheck", "recursive"]
_KINDS: dict[MutexKind, int] = {
    "normal": _pthread.MUTEX_NORMAL,
    "errorcheck": _pthread.MUTEX_ERRORCHECK,
    "recursive": _pthread.MUTEX_RECURSIVE,
}
_KIND_AT = 8  # a mutex's kind, after its mark
# Then what the next locker must be told, written under the mutex by the one
# that let it go without unlocking it itself: why (0: nothing to tell), its
# os pid and its thread's id, three 32-bit words. Read under the mutex by the
# next locker, which clears it and raises OwnerDiedError.
_LET_GO_AT = 16
_RELEASED = 1  # the handle it was held through was closed or released by its holder
_DIED = 2  # taken from a dead holder, and given back as a signal handler's exception came
_STAMP_AT = 8  # a condition's stamp (8 bytes), after its mark
_ONE = _pthread.ONE
_trylock = _pthread.raw_mutex_trylock
_unlock = _pthread.raw_mutex_unlock


def _fresh_stamps() -> Iterator[int]:
    return itertools.count(int.from_bytes(os.urandom(8), "little") >> 1)


# What signal() and broadcast() write into the condition: a value no process
# wrote before (a random start per process, then counting), so that a waiter
# that saw one value sees that a signal came, even from two signallers at once.
# A forked child draws its own at its first stamp: emptied at the fork by a C
# call, as cheap as a hook can be (see _buffer's hooks).
_stamps = [_fresh_stamps()]
os.register_at_fork(after_in_child=_stamps.clear)


def _first_stamp() -> int:
    """The first stamp of a forked child (see ShmCondition._notify)."""
    _stamps.append(_fresh_stamps())  # two threads at once: both draw, one is used
    return next(_stamps[0])


# Closed mutex handles whose mapping is kept because a thread of this process
# held the mutex when the last call on the handle left (see ShmMutex._unmap):
# unmapped once no thread of the process holds it, by _sweep_kept. Reentrant:
# a signal handler may close or unlock a mutex.
_kept: set[ShmMutex] = set()
_kept_lock = threading.RLock()
# Another thread may have held it at the fork. A C call: see _buffer's hooks.
os.register_at_fork(after_in_child=_kept_lock._at_fork_reinit)  # type: ignore[attr-defined]
_forgetting_unlocks = [False]  # registered with the first mutex kept (see _keep)


def _forget_kept_unlocks() -> None:
    for mutex in _kept:
        mutex._kept_unlocks = 0  # the parent's threads are not here: their unlocks neither


def _keep(mutex: ShmMutex) -> None:
    """Keep ``mutex``'s mapping (``_kept_lock`` held). The hook first: a
    handler's exception between the two leaves it registered for nothing."""
    if not _forgetting_unlocks[0]:
        os.register_at_fork(after_in_child=_forget_kept_unlocks)
        _forgetting_unlocks[0] = True
    _kept.add(mutex)


def _held_here(state: _pthread.MutexState) -> bool:
    """Whether a thread of this process holds the mutex (by any mapping)."""
    holder = state.word.value & _pthread.FUTEX_TID_MASK
    return bool(holder) and _pthread.thread_of_this_process(holder)


def _sweep_kept() -> None:
    """Unmap the kept mappings of mutexes that no thread of the process holds
    any more (unlocked through another handle, or the holder thread ended:
    the kernel, walking its robust list, found it mapped)."""
    with _kept_lock:
        free = [m for m in _kept if not m._kept_unlocks and not _held_here(m._state)]
        _kept.difference_update(free)
    for mutex in free:
        mutex._unmap_now()


def _record(let_go: memoryview, why: int) -> None:
    """Write what the next locker must be told (holding the mutex)."""
    let_go[1] = _pthread.this_pid[0]
    let_go[2] = threading.get_native_id()
    let_go[0] = why


class _InShm:
    """An object in a mapped shm segment: a header with its mark, then the
    pthread object, at an address kept for the C calls while the mapping is
    in use (see :class:`_pthread.InUse`)."""

    _MARK: bytes  # the first bytes of the segment: which kind of object it holds

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "_MARK" in cls.__dict__:  # netmcore's classes (not a program's subclass of one)
            MARKS[cls._MARK] = f"a {cls.__name__} ({cls.__name__}.open(res_id) opens it)"

    def __init__(self, segment: ShmSegment) -> None:
        self._segment = segment
        self._anchor: ctypes.Array[ctypes.c_char] | None = (
            ctypes.c_char * _pthread.SLOT
        ).from_buffer(segment.buffer, _pthread.SLOT)
        self._addr = ctypes.addressof(self._anchor)
        self._use = _pthread.InUse(self._unmap)

    @classmethod
    def _create(cls, build: Callable[[ShmSegment], Self]) -> Self:
        """Create the object, which ``build`` makes on its marked segment: if
        that fails (or is interrupted), the segment goes with it."""
        return create_marked(2 * _pthread.SLOT, cls._MARK, build)

    @classmethod
    def _open(cls, res_id: ResId) -> Self:
        """Open the object ``res_id``, built as part of the open: if that
        fails, the open gives back the use it took."""
        return open_marked(res_id, cls._MARK, cls.__name__, cls)

    def _enter(self) -> int:
        """Count a call in progress and return the object's address; ValueError
        once it is closed (the C call would touch memory that is gone, and crash).
        The caller calls ``self._use.leave()`` when done."""
        if not self._use.enter():
            raise closed_error(self)
        return self._addr

    @property
    def res_id(self) -> ResId:
        """Give this to other processes, which open it with ``.open(res_id)``."""
        return self._segment.res_id

    def close(self) -> None:
        """Unmap it in this process (idempotent).

        A call that another thread is making on it ends with ValueError (a
        waiting lock within 20 ms, ``_pthread.SLICE``; a condition wait at
        once, as soon as it has its mutex back, or within 20 ms when it is
        its mutex that is closed), and the memory is unmapped when the last
        of them has left.
        """
        self._use.close(self._wake)

    def _wake(self, others: int) -> None:
        """Wake this process's waits on it, for close(): ``others`` calls are in progress."""

    def _unmap(self) -> None:
        self._anchor = None
        self._segment.close()

    def release(self) -> None:
        """Unmap it and stop using it. The process stops using it when its
        last handle on it is released (another open of it stays usable), and
        it is destroyed when its last user does. Harmless to repeat."""
        self.close()
        self._segment._give_back()  # a mapping that calls still use stays until they leave


class ShmMutex(_InShm):
    """A robust, process-shared mutex: ``normal``, ``errorcheck`` or ``recursive``.

    ::

        m = netmcore.ShmMutex.create("errorcheck")   # pass m.res_id to others
        with m:
            ...

    Unlock it before you close or release the handle you locked it through.
    If the thread that holds it closes (or releases) that handle, it is
    unlocked for it, every level, a warning is logged, and its next locker,
    in any process, gets OwnerDiedError, as after a holder's death: the
    shared state it guards may be half updated. If another thread of the
    process holds it, the handle's memory stays mapped until none does:
    that thread's ``unlock()`` (its ``with``'s exit) through the closed
    handle still works, the one call a closed handle takes.
    """

    kind: MutexKind
    _MARK = b"nmcmtx01"

    @classmethod
    def create(cls, kind: MutexKind = "normal") -> ShmMutex:
        if kind not in tuple(_KINDS):  # compared, not hashed: a list is not hashable
            raise ValueError(
                f"kind {kind!r} is not valid: use 'normal', 'errorcheck' or 'recursive'"
            )

        def build(segment: ShmSegment) -> ShmMutex:
            segment.buffer[_KIND_AT] = _KINDS[kind]
            mutex = cls(segment)
            _pthread.mutex_init(mutex._addr, _KINDS[kind])
            return mutex

        return cls._create(build)

    @classmethod
    def open(cls, res_id: ResId) -> ShmMutex:
        """Open the mutex ``res_id``. ValueError if it is not a ShmMutex."""
        return cls._open(res_id)

    def __init__(self, segment: ShmSegment) -> None:
        super().__init__(segment)
        code = segment.buffer[_KIND_AT]
        self.kind = next(k for k, v in _KINDS.items() if v == code)
        self._state = _pthread.MutexState(self._addr)
        self._let_go = segment.buffer[_LET_GO_AT : _LET_GO_AT + 12].cast("I")
        # A give-back of a mutex taken from a dead holder, whose EOWNERDEAD a
        # signal handler's exception lost, passes the death on to the next locker.
        self._state.on_repair = functools.partial(_record, self._let_go, _DIED)
        self._kept_unlocks = 0  # unlock() calls through the kept mapping, in progress
        self._may_be_held = True  # through this mapping, by a thread of this process (_wake)

    def lock(self, timeout: float | None = None) -> bool:
        """Lock it, waiting up to ``timeout`` seconds (forever if None).

        Returns False on timeout. A signal handler's exception ends the wait,
        with the mutex not taken.

        Raises
        ------
        OwnerDiedError
            Holding the lock, if the previous holder died, or closed (or
            released) the handle it held it through without unlocking it.
        OSError
            EDEADLK when an error-checking mutex is locked again by its holder.
        ContextError
            If it would wait in the master (``timeout=0`` does not wait).
        ValueError
            If it is closed, or another thread closes it during the wait.
        """
        if timeout is not None:
            timeout = _pthread.check_timeout(timeout)
        use = self._use
        use.calls += _ONE  # inline self._enter(): the uncontended path counts
        try:
            if use.closed:
                raise closed_error(self)
            state = self._state
            before = state.depth() if state.word.value else 0  # held already (recursive)?
            try:
                rc = _trylock(self._addr)
                if rc == errno.EBUSY and timeout != 0:
                    rc = self._wait(self._addr, timeout)
                if rc == 0 and not self._let_go[0] and not use.closed:
                    return True  # the usual case, first
                return self._took(rc)
            except BaseException as exc:
                if exc.__class__ is OwnerDiedError:  # _took's (no call to tell it by): held
                    raise
                # Taken just before the exception came (a signal handler's,
                # as a call returned, even in _took): given back, in a loop
                # through further ones, each held and raised after (see
                # MutexState.give_back), with no call before the loop's try.
                held: BaseException | None = None
                while True:
                    try:
                        state.give_back(before)
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

    def _wait(self, addr: int, timeout: float | None) -> int:
        if _context.in_master_loop():  # first: the message costs more than a wait
            what = f"locking {self!r}, which is held (by another thread or process, or by this "
            what += "thread: a 'normal' mutex cannot tell),"
            _context.refuse_wait_in_master(what)
        deadline = None if timeout is None else time.monotonic() + timeout
        return _pthread.lock_in_slices(addr, deadline, self._stop_if_closed)

    def _stop_if_closed(self) -> None:
        if self._use.closed:
            raise closed_during(self, "lock()")

    def _took(self, rc: int, tell: bool = True) -> bool:
        """Whether the lock call that returned ``rc`` took the mutex; raises for
        an owner that died (holding it) and for errors.

        A death is recorded before the repair that hides it, and the record
        is cleared (``tell``) only as its OwnerDiedError is raised, with no
        call between: a signal handler's exception anywhere before, which
        the caller gives the mutex back for, leaves it to the next locker.
        Not ``tell``: the record is left for the caller (``__enter__``),
        which clears it as it unlocks."""
        if rc in (errno.ETIMEDOUT, errno.EBUSY):
            return False
        if rc not in (0, errno.EOWNERDEAD):
            raise self._error(rc)
        if self._use.closed:  # nobody could unlock it by this handle: give it back
            self._state.give_back(self._state.depth() - 1)
            raise closed_during(self, "lock()")
        if rc == errno.EOWNERDEAD:
            _record(self._let_go, _DIED)
            _pthread.mutex_consistent(self._addr)
        if self._let_go[0]:
            err = self._owner_died()
            if tell:
                self._let_go[0] = 0  # told once, as EOWNERDEAD is: by err, raised now
            raise err
        return True

    def _told(self) -> str:
        """Holding it: why the shared state it guards may be half updated (its
        holder died, or let go of it without unlocking it), from the record.
        The caller clears the record once it has what tells it, with no call
        between that and the telling: told once, as EOWNERDEAD is."""
        why, pid, tid = self._let_go.tolist()
        if why == _RELEASED:
            return (
                f"the holder of {self!r} (os pid {pid}, thread {tid}) closed or released the "
                "handle it held it through, without unlocking it, so it was unlocked for it"
            )
        return f"the holder of {self!r} died while holding it"

    def _owner_died(self) -> OwnerDiedError:
        """The error of a lock that took it from a holder that died or let go
        of it (see :meth:`_told`): the caller holds it."""
        return OwnerDiedError(
            f"{self._told()}; you hold it now (it is consistent again): repair the "
            "shared state it guards, which may be half updated, then unlock"
        )

    def _error(self, rc: int) -> OSError:
        if rc == errno.EDEADLK:
            return OSError(
                rc,
                f"{self!r} is already held by this thread, and an errorcheck mutex "
                "refuses to be locked again by its holder: unlock it first, or create "
                "it with kind 'recursive' to lock it more than once",
            )
        return OSError(rc, f"locking {self!r}: {os.strerror(rc)}")

    def unlock(self) -> None:
        """Unlock it. PermissionError if this thread does not hold it.

        Through a handle that another thread closed (or released) while this
        one held the mutex, it still works; ValueError otherwise once closed."""
        use = self._use
        use.calls += _ONE
        try:
            if use.closed:
                if self._unlock_kept():  # another thread closed it while this one held it
                    return
                raise closed_error(self)
            rc = _unlock(self._addr)
            if rc == errno.EPERM:
                raise PermissionError(errno.EPERM, f"{self!r} is not held by this thread")
            if rc:
                raise OSError(rc, f"unlocking {self!r}: {os.strerror(rc)}")
            if _kept:  # a kept mapping may be free to go now
                _sweep_kept()
        finally:
            del use.calls[-1]
            if use.closed:
                use.left()

    def _unlock_kept(self) -> bool:
        """Unlock it through its mapping, closed but kept (see :meth:`_unmap`)
        or not yet unmapped (other calls on the handle are still in progress,
        a lock() waiting, say): whether that was done. False once the
        mapping is gone (or going), or if this thread does not hold it: the
        closed handle's ValueError then. Counted in ``_kept_unlocks`` the
        while: an unmap that comes meanwhile keeps the mapping, for
        :func:`_sweep_kept`."""
        with _kept_lock:
            # Not yet unmapped: the last call has not left (and this one is
            # counted), or it has and its unmap waits for _kept_lock to choose.
            if self not in _kept and self._use.unmapped:
                return False
            self._kept_unlocks += 1
        try:
            rc: int = _unlock(self._addr)
        finally:
            with _kept_lock:
                self._kept_unlocks -= 1
        _sweep_kept()
        return rc == 0

    def _wake(self, others: int) -> None:
        """For close(), in the closing thread, the mapping still there: if
        this thread holds the mutex through this handle, let it go. Then
        note whether a thread of this process may still hold it through
        this mapping when the last call leaves (see :meth:`_unmap`): one
        that held it (another thread's list cannot be read), or one of the
        ``others`` calls in progress, which may take it before they leave."""
        holder = self._state.word.value & _pthread.FUTEX_TID_MASK
        through: bool | None = False  # None: it cannot be told
        if holder and _pthread.thread_of_this_process(holder):
            through = None
            if holder == threading.get_native_id():
                through = _pthread.held_through(self._addr)
                if through:
                    self._let_go_held()
                    through = False
        self._may_be_held = bool(others) or through is not False

    def _let_go_held(self) -> None:
        """This thread closes (or releases) the handle it holds the mutex
        through: unlock it, every level, before the mapping goes (glibc's
        robust list links it through this mapping), and have the next
        locker told, as after a holder's death. A plain unlock would hide
        that the state it guards may be half updated; keeping it held would
        hold up every other process until this thread ends."""
        state, addr = self._state, self._addr
        levels = state.depth()
        if not self._let_go[0]:  # a death not yet told stays the one to tell
            _record(self._let_go, _RELEASED)
        while state.depth():
            _pthread.raw_mutex_consistent(addr)  # if taken from a dead holder: else EINVAL
            if _unlock(addr):
                break
        log.warning(
            "netmcore: %r was closed or released by the thread that held it (os pid %d, "
            "thread %d; %d level%s): it was unlocked, and its next locker gets "
            "OwnerDiedError, as after a holder's death. Unlock a mutex before you close or "
            "release the handle you locked it through (with mutex: ...)",
            self,
            _pthread.this_pid[0],
            threading.get_native_id(),
            levels,
            "" if levels == 1 else "s",
        )

    def _unmap(self) -> None:
        """The last call on the closed handle has left: unmap it, unless a
        thread of this process may hold the mutex through this mapping (see
        :meth:`_wake`) and one holds it (through which mapping, another
        thread's list does not say), or unlocks it through the closed handle
        (:meth:`_unlock_kept`): it is kept until none does."""
        with _kept_lock:
            if self._kept_unlocks or (self._may_be_held and _held_here(self._state)):
                _keep(self)
                return
        self._unmap_now()
        if _kept:
            _sweep_kept()

    def _unmap_now(self) -> None:
        self._let_go.release()
        super()._unmap()

    def __repr__(self) -> str:
        return f"ShmMutex({self.res_id!r}, {self.kind})"

    def __enter__(self) -> ShmMutex:
        use = self._use
        use.calls += _ONE  # the mapping stays until this call leaves (see lock)
        try:
            # Before the mutex's word is read: once closed, it may be unmapped
            # (a with-statement after close() or release() died of SIGSEGV).
            if use.closed:
                raise closed_error(self)
            state = self._state
            before = state.depth() if state.word.value else 0  # held already (recursive)?
            try:
                # lock(), whose death is told here, as the mutex is given back.
                rc = _trylock(self._addr)
                if rc == errno.EBUSY:
                    rc = self._wait(self._addr, None)
                if rc == 0 and not self._let_go[0] and not use.closed:
                    return self
                self._took(rc, tell=False)
                return self
            except BaseException as exc:
                # The with-body will not run, and nothing would unlock what was
                # taken: after OwnerDiedError (which holds it), or a signal
                # handler's exception just as it was taken (Python runs handlers
                # after each call). Given back in a loop through further
                # exceptions, as in lock(). OwnerDiedError tells the death: its
                # record is cleared just as the mutex is unlocked, no call
                # between; a handler's exception before that leaves the record
                # to the next locker, and one after takes it as a note.
                telling = exc.__class__ is OwnerDiedError  # _took's (no call to tell it by)
                told = False
                held: BaseException | None = None
                while True:
                    try:
                        if telling:  # held once more than before (its lock took one level)
                            telling = False
                            self._let_go[0] = 0
                            told = True
                            _unlock(self._addr)
                            break
                        state.give_back(before)
                        break
                    except BaseException as again:
                        held = again
                if held is None:
                    raise
                if told:
                    held.add_note(f"{exc} (unlocked again: the with-body did not run)")
                raise held  # noqa: B904 (the first is its __context__)
        finally:
            del use.calls[-1]
            if use.closed:
                use.left()

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        # A handler's exception at the very start of this call (before the
        # unlock) would leave the mutex held: a window no Python code can
        # close, which threading.Lock, in C, does not have.
        self.unlock()


def _repair_held(mutex: ShmMutex, exc: BaseException) -> None:
    """A condition wait is leaving by ``exc`` (a signal handler's, say) with
    ``mutex`` held again, maybe taken back from a holder that died: the
    relock's EOWNERDEAD is lost when the exception comes as the lock call
    returns (Python runs handlers then). Repair the mutex, as the mutex word
    says that this thread holds it: the caller's ``with`` would unlock it
    inconsistent, which makes it unusable for every process, for good
    (ENOTRECOVERABLE). The death is recorded first, before the repair (as
    in :meth:`ShmMutex._took`): a record, of a death or of a holder that
    let go of it without unlocking it, is told by a note on ``exc``, in
    OwnerDiedError's place, and cleared just before the note is added; a
    further exception before that leaves it to the next locker."""
    state = mutex._state
    if not state.depth():
        return
    if state.inconsistent():  # recorded before the repair, as in ShmMutex._took
        _record(mutex._let_go, _DIED)
    _pthread.raw_mutex_consistent(mutex._addr)
    if mutex._let_go[0]:
        note = (
            f"{mutex._told()}, as this wait took it back; it is held and consistent "
            "again: repair the shared state it guards"
        )
        mutex._let_go[0] = 0  # told by the note, added now
        exc.add_note(note)


class ShmCondition(_InShm):
    """A process-shared condition variable, used with a :class:`ShmMutex`.

    ::

        with mutex:
            while not ready():
                cond.wait(mutex)
        ...
        with mutex:
            make_ready(); cond.broadcast()
    """

    _MARK = b"nmccnd01"

    @classmethod
    def create(cls) -> ShmCondition:

        def build(segment: ShmSegment) -> ShmCondition:
            cond = cls(segment)
            _pthread.cond_init(cond._addr)
            return cond

        return cls._create(build)

    @classmethod
    def open(cls, res_id: ResId) -> ShmCondition:
        """Open the condition ``res_id``. ValueError if it is not a ShmCondition."""
        return cls._open(res_id)

    def __init__(self, segment: ShmSegment) -> None:
        super().__init__(segment)
        # One aligned 8-byte word: a store is one instruction, never torn.
        self._stamp = segment.buffer[_STAMP_AT : _STAMP_AT + 8].cast("Q")
        self._words = _pthread.cond_words(self._addr)  # for signal(): see _notify

    def wait(self, mutex: ShmMutex, timeout: float | None = None) -> bool:
        """Release ``mutex`` (held by the caller), wait for a signal, and take it
        back; False if ``timeout`` seconds passed first.

        It may also return True when a signal came for another waiter (a
        spurious wake-up, which POSIX allows): wait in a loop on your
        condition. A signal handler's exception ends the wait with the mutex
        held again, as on every return; if a holder of the mutex had died
        meanwhile, the mutex is repaired (consistent again) and the
        exception carries a note that says so, as it takes OwnerDiedError's
        place.

        Raises
        ------
        TypeError
            If ``mutex`` is not a ShmMutex.
        PermissionError
            If this thread does not hold ``mutex``.
        OwnerDiedError
            Holding the mutex, if a holder of it died.
        ContextError
            In the master, unless ``timeout`` is 0: the mutex is still held.
        ValueError
            If the condition or the mutex is closed, or another thread closes
            it during the wait (a closed mutex is not held after).
        """
        if not isinstance(mutex, ShmMutex):
            raise TypeError(
                f"{self!r}.wait() takes the ShmMutex that guards the condition (locked by "
                f"the caller), not {type(mutex).__name__}: call cond.wait(mutex)"
            )
        timeout = _pthread.check_timeout(timeout)
        addr = self._enter()
        use, mutex_use = self._use, mutex._use
        try:
            mutex_addr = mutex._enter()
            try:
                woken = self._wait_all_levels(addr, mutex, mutex_addr, timeout)
                # Held again, every level: a death (recorded by the relock that
                # met it, before its repair), or a release without unlocking,
                # is told last, the record cleared as its error is raised,
                # with no call between that and the caller (the leaves are
                # inline): a handler's exception before takes it as a note.
                if mutex._let_go[0]:
                    err = mutex._owner_died()
                    mutex._let_go[0] = 0
                    raise err
                return woken
            except BaseException as exc:
                if exc.__class__ is not OwnerDiedError:  # not the one above (no call to tell)
                    _repair_held(mutex, exc)
                raise
            finally:
                del mutex_use.calls[-1]  # mutex._use.leave(), inline: no call
                if mutex_use.closed:
                    mutex_use.left()
        finally:
            del use.calls[-1]
            if use.closed:
                use.left()

    def _wait_all_levels(
        self, addr: int, mutex: ShmMutex, mutex_addr: int, timeout: float | None
    ) -> bool:
        """:meth:`_wait`, with a recursive mutex held more than once released
        to one level first, and taken back to as many after, as
        threading.Condition does with an RLock: the C wait releases only one
        level, and the signaller could never lock it (a silent deadlock)."""
        state = mutex._state
        depth = state.depth() if mutex.kind == "recursive" else 0
        if depth <= 1:
            return self._wait(addr, mutex, mutex_addr, timeout)
        try:
            while state.depth() > 1:
                if _unlock(mutex_addr) != 0:
                    break
            return self._wait(addr, mutex, mutex_addr, timeout)
        finally:
            # Held again (once) on every return, and on every exception but a
            # close of the mutex (which gave it back): take the other levels,
            # in a loop through signal handlers' exceptions, each held and
            # raised after (one that ended it would leave fewer levels held
            # than the caller's with-statements unlock: mutual exclusion gone).
            held: BaseException | None = None
            while True:
                try:
                    while 0 < state.depth() < depth:
                        if _trylock(mutex_addr) != 0:
                            break
                    break
                except BaseException as exc:
                    held = exc
            if held is not None:
                raise held  # in place of the return, or of the first exception

    def _wait(self, addr: int, mutex: ShmMutex, mutex_addr: int, timeout: float | None) -> bool:
        if timeout != 0 and _context.in_master_loop():
            _context.refuse_wait_in_master(f"{self!r}.wait()")
        deadline = None if timeout is None else time.monotonic() + timeout
        stamp = self._stamp[0]

        def woken() -> bool:
            self._stop_if_closed(mutex)
            return bool(self._stamp[0] != stamp)

        rc = _pthread.cond_wait_in_slices(addr, mutex_addr, deadline, woken)
        if rc == errno.EPERM:
            raise PermissionError(
                errno.EPERM,
                f"{mutex!r} is not held by this thread: lock the mutex before "
                f"{self!r}.wait(), as threading.Condition requires (with mutex: "
                "while not ready(): cond.wait(mutex))",
            )
        if rc not in (0, errno.ETIMEDOUT, errno.EOWNERDEAD):
            raise OSError(rc, f"waiting on {self!r} with {mutex!r}: {os.strerror(rc)}")
        # The mutex is held again here, as on every return of the wait.
        if rc == errno.EOWNERDEAD:
            # Recorded first: passed on to the next locker if this wait does not
            # tell it (the mutex was closed meanwhile, and is given back).
            _record(mutex._let_go, _DIED)
            _pthread.mutex_consistent(mutex_addr)
        self._stop_if_closed(mutex)
        return rc == 0  # a death is told by wait(), once every level is back

    def _stop_if_closed(self, mutex: ShmMutex) -> None:
        """Holding ``mutex``: raise if another thread closed either object."""
        if mutex._use.closed:
            # Nobody could unlock it by this handle, which is closed: unlock it.
            mutex._state.give_back(mutex._state.depth() - 1)
            raise closed_during(mutex, f"{self!r}.wait()")
        if self._use.closed:
            raise closed_during(self, "wait()")  # the mutex is held, as on every return

    def signal(self) -> None:
        """Wake one waiter."""
        self._notify(1)

    def broadcast(self) -> None:
        """Wake every waiter."""
        self._notify(_pthread.ALL)

    def _notify(self, count: int) -> None:
        use = self._use
        use.calls += _ONE  # inline self._enter(): as fast as it can be
        try:
            if use.closed:
                raise closed_error(self)
            # A fresh stamp: a waiter between two slices of its wait sees
            # that a signal came (see wait).
            try:
                stamp = next(_stamps[0])
            except IndexError:  # the first in a forked child
                stamp = _first_stamp()
            else:  # (for 3.12: see test_backedges)
                pass
            self._stamp[0] = stamp & 0xFFFF_FFFF_FFFF_FFFF
            # The sequence changes even with no waiter counted: the caller
            # need not hold the mutex (see _pthread.cond_notify).
            _pthread.cond_notify(self._addr, self._words, count)
        finally:
            del use.calls[-1]
            if use.closed:
                use.left()

    def _wake(self, others: int) -> None:
        if others:
            # Other processes' waiters wake too, and wait again (or return
            # True, as a spurious wake-up may).
            _pthread.cond_broadcast(self._addr)

    def _unmap(self) -> None:
        self._stamp.release()
        super()._unmap()

    def __repr__(self) -> str:
        return f"ShmCondition({self.res_id!r})"
