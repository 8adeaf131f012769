"""glibc's process-shared synchronisation, placed in shared memory, through ctypes.

Robust pthread mutexes are what make "the holder died" detectable: the kernel
releases a dead thread's robust mutexes and the next locker gets EOWNERDEAD,
even after SIGKILL. Unnamed POSIX semaphores (``sem_init`` with pshared) live
inside a shm object, so a mailbox needs no kernel object but its memory.
Condition variables are not glibc's but a futex of their own (see
:func:`cond_init`): glibc's keep counts of their waiters that a waiter killed
in its wait never takes back.
ctypes releases the GIL around every call, so a waiting thread never blocks
the others. Every object here takes its address in a mapping; :class:`InUse`
keeps that mapping while calls use it.

A wait that the C library restarts after a signal (a futex wait: mutex lock,
condition wait) is cut into slices of :data:`SLICE` seconds: Python runs a
signal handler only when the C call returns (PEP 475), so a handler that
raises (``signal.alarm`` as a timeout, Ctrl-C) ends the wait within a slice,
and a handler that returns lets it go on.
"""

from __future__ import annotations

import ctypes
import errno
import math
import numbers
import os
import platform
import select
import threading
import time
import weakref
from collections.abc import Callable

_libc = ctypes.CDLL(None, use_errno=True)

SLOT = 64  # bytes reserved per object: more than any glibc layout needs
MUTEX_NORMAL, MUTEX_RECURSIVE, MUTEX_ERRORCHECK = 0, 1, 2
_PTHREAD_PROCESS_SHARED = 1
_PTHREAD_MUTEX_ROBUST = 1
_CLOCK_MONOTONIC = time.CLOCK_MONOTONIC
# A robust mutex's futex word holds its holder's thread id under this mask
# (the kernel's robust-futex ABI), with the waiters and owner-died bits above.
FUTEX_TID_MASK = 0x3FFFFFFF
# How long each slice of a futex wait lasts: how late a signal handler runs,
# or a close() by another thread is seen, at worst. A waiter that wakes this
# often costs nothing measurable.
SLICE = 0.02


# struct timespec is two longs: seconds, nanoseconds.
_Timespec = ctypes.c_long * 2


def _bind(name: str, *args: type) -> ctypes._NamedFuncPointer:
    func = getattr(_libc, name)
    func.argtypes = list(args)
    func.restype = ctypes.c_int
    return func  # type: ignore[no-any-return]


_P = ctypes.c_void_p
_TS = ctypes.c_void_p
_mutexattr_init = _bind("pthread_mutexattr_init", _P)
_mutexattr_settype = _bind("pthread_mutexattr_settype", _P, ctypes.c_int)
_mutexattr_setpshared = _bind("pthread_mutexattr_setpshared", _P, ctypes.c_int)
_mutexattr_setrobust = _bind("pthread_mutexattr_setrobust", _P, ctypes.c_int)
_mutexattr_destroy = _bind("pthread_mutexattr_destroy", _P)
_mutex_init = _bind("pthread_mutex_init", _P, _P)
_mutex_lock = _bind("pthread_mutex_lock", _P)
_mutex_clocklock = _bind("pthread_mutex_clocklock", _P, ctypes.c_int, _TS)
_mutex_consistent = _bind("pthread_mutex_consistent", _P)
_sem_init = _bind("sem_init", _P, ctypes.c_int, ctypes.c_uint)
_sem_wait = _bind("sem_wait", _P)
_sem_clockwait = _bind("sem_clockwait", _P, ctypes.c_int, _TS)
_sem_trywait = _bind("sem_trywait", _P)
_sem_getvalue = _bind("sem_getvalue", _P, _P)
_sem_open = _libc.sem_open
_sem_open.argtypes = [ctypes.c_char_p, ctypes.c_int]
_sem_open.restype = _P
_sem_close = _bind("sem_close", _P)


def named_sem_open(name: str) -> int:
    """The address of the existing named semaphore ``name``, for :func:`sem_wait`.

    posix_ipc's own wait runs a signal handler inside and replaces the
    handler's exception with its SignalError: a timeout by ``signal.alarm``
    would be lost, and a handler that returns would end the wait.
    """
    addr = _sem_open(name.encode(), 0)
    if not addr:  # SEM_FAILED
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), name)
    return int(addr)


def named_sem_close(addr: int) -> None:
    _check(_sem_close(addr), "sem_close")


def _bind_nonblocking(name: str) -> ctypes._NamedFuncPointer:
    """Bind a call that never blocks without releasing the GIL around it:
    releasing and taking it back costs more than such a call."""
    func = getattr(_libc_keeping_gil, name)
    func.argtypes = [_P]
    func.restype = ctypes.c_int
    return func  # type: ignore[no-any-return]


_libc_keeping_gil = ctypes.PyDLL(None)
# Unchecked bindings for hot paths, which test the return code themselves: a
# Python wrapper around a ctypes call costs about as much as the call.
raw_mutex_trylock = _bind_nonblocking("pthread_mutex_trylock")  # 0, EBUSY, EOWNERDEAD
raw_mutex_unlock = _bind_nonblocking("pthread_mutex_unlock")  # 0; a non-owner gets EPERM
raw_sem_post = _bind_nonblocking("sem_post")  # 0; -1 only past SEM_VALUE_MAX
raw_sem_trywait = _bind_nonblocking("sem_trywait")  # 0 when it took one, -1 when it was 0
raw_mutex_consistent = _bind_nonblocking("pthread_mutex_consistent")  # 0; EINVAL if consistent

# How many times sem_wait_spinning polls before it sleeps: about 30 us. Going to
# sleep and being woken costs the waiter and the poster far more than that on a
# busy machine (a futex wake-up system call, a context switch, and on a VM
# often an idle virtual CPU to wake), and a message usually comes sooner.
SPINS = 200


# glibc's __owner of a robust mutex taken from a holder that died, until
# pthread_mutex_consistent (PTHREAD_MUTEX_INCONSISTENT).
_INCONSISTENT = 0x7FFF_FFFF


class OwnerDied(Exception):
    """Marker: the lock was taken from a holder that died (EOWNERDEAD)."""


# A timeout beyond this (about 292 years) waits without limit, as math.inf
# does: the largest that threading's waits take, and far below what would
# overflow a float (an int like 10**400) or a timespec.
NO_LIMIT_BEYOND = threading.TIMEOUT_MAX


def check_timeout(timeout: float | None) -> float | None:
    """A caller's ``timeout``, checked: None (or ``math.inf``, or any timeout
    beyond :data:`NO_LIMIT_BEYOND`) waits without limit.

    Raises ValueError for NaN and negative numbers, which no deadline can be
    made of (a timespec would overflow, or the wait would end at once by
    accident), and TypeError for what is not a real number (a bool included).
    A real number of another type (numpy's, a Fraction) is taken as a float,
    as ``threading`` takes it.
    """
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, numbers.Real):
        raise TypeError(
            f"timeout {timeout!r} is not valid: give a number of seconds (an int or a float) "
            "of 0 or more, or None (or math.inf) to wait without limit"
        )
    if type(timeout) is not int and type(timeout) is not float:
        # A subclass too (numpy's float64 is a float's): what travels to the
        # master must be a plain number, which msgspec encodes.
        try:
            timeout = float(timeout)
        except OverflowError:  # a Fraction beyond a float's range
            timeout = math.inf if timeout > 0 else -math.inf
        else:  # (for 3.12: see test_backedges)
            pass
    if timeout > NO_LIMIT_BEYOND:  # an int too large for a float included
        return None
    if not timeout >= 0:  # also NaN, which compares false with everything
        raise ValueError(
            f"timeout {timeout!r} is not valid: give a number of seconds of 0 or more, "
            "or None (or math.inf) to wait without limit"
        )
    return timeout


def _deadline(timeout: float) -> ctypes.Array[ctypes.c_long]:
    return _timespec(time.monotonic() + max(0.0, timeout))


def _timespec(at: float) -> ctypes.Array[ctypes.c_long]:
    """The time.monotonic() time ``at`` as a timespec (on Linux, time.monotonic()
    is CLOCK_MONOTONIC, the clock of every timed wait here)."""
    at = min(at, 2.0**62)  # ctypes would silently wrap seconds beyond a C long
    return _Timespec(int(at), int((at % 1) * 1e9))


def _check(rc: int, what: str) -> None:
    if rc != 0:
        raise OSError(rc, f"{what}: {os.strerror(rc)}")


def mutex_init(addr: int, kind: int) -> None:
    attr = ctypes.create_string_buffer(SLOT)
    _check(_mutexattr_init(attr), "pthread_mutexattr_init")
    try:
        _check(_mutexattr_settype(attr, kind), "pthread_mutexattr_settype")
        _check(_mutexattr_setpshared(attr, _PTHREAD_PROCESS_SHARED), "setpshared")
        _check(_mutexattr_setrobust(attr, _PTHREAD_MUTEX_ROBUST), "setrobust")
        _check(_mutex_init(addr, attr), "pthread_mutex_init")
    finally:
        _mutexattr_destroy(attr)


def _next_slice(deadline: float | None) -> tuple[float, bool]:
    """When the next slice of a wait until ``deadline`` ends, and whether it is the last."""
    at = time.monotonic() + SLICE
    if deadline is not None and at >= deadline:
        return deadline, True
    return at, False


def lock_in_slices(addr: int, deadline: float | None, between: Callable[[], object]) -> int:
    """Wait for the mutex at ``addr`` until ``deadline`` (a time.monotonic()
    time; None: no limit) in slices; return the code of the call that ended
    the wait: 0, EOWNERDEAD, ETIMEDOUT at the deadline, or an error.

    Between two slices Python runs signal handlers, and ``between`` is
    called, to raise if the wait must end (its object was closed). An
    exception can come just after the mutex was taken: the caller gives it
    back (ShmMutex by :meth:`MutexState.give_back`, Buffer by C calls in its
    ``finally``).
    """
    while True:
        at, last = _next_slice(deadline)
        rc: int = _mutex_clocklock(addr, _CLOCK_MONOTONIC, _timespec(at))
        if rc != errno.ETIMEDOUT or last:
            return rc
        between()


class MutexState:
    """Who holds a robust mutex, read from the mutex itself: to give back a
    lock that an exception interrupted just after it was taken (a signal
    handler runs when the C call returns, before Python has its result).

    ``on_repair``, if set, is called by :meth:`give_back` holding a mutex
    that it is about to make consistent: one taken from a holder that died,
    whose EOWNERDEAD the exception lost (the owner of the mutex passes that
    on). Called before the repair, so that a give-back cut short between
    the two and made again calls it again: the mutex still says so."""

    on_repair: Callable[[], object] | None = None

    def __init__(self, addr: int) -> None:
        self.addr = addr
        # The futex word (0 when free, else the holder's thread id, by the
        # kernel's ABI), then glibc's __count: how many times a recursive
        # mutex is held, then its __owner: _INCONSISTENT while it is held
        # from a holder that died and not yet made consistent (the first
        # three fields on every glibc ABI).
        self.word = ctypes.c_int.from_address(addr)
        self._count = ctypes.c_uint.from_address(addr + 4)
        self._owner = ctypes.c_int.from_address(addr + 8)

    def depth(self) -> int:
        """How many times this thread holds it (0: it does not)."""
        holder = self.word.value & FUTEX_TID_MASK
        if not holder or holder != threading.get_native_id():
            return 0
        return max(1, self._count.value)

    def inconsistent(self) -> bool:
        """Whether it is held, taken from a holder that died (EOWNERDEAD), and
        not yet made consistent: unlocked so, it would be unusable for good."""
        return self._owner.value == _INCONSISTENT

    def give_back(self, before: int) -> None:
        """Unlock what this thread holds beyond ``before`` locks.

        Safe to make again until it is done, through signal handlers'
        exceptions (its callers repeat it in their own frame, where nothing
        is called between the exception and the repeat): each step is done
        or not, and a death is passed on (``on_repair``) before the repair
        that would hide it."""
        while self.depth() > before:
            if self.on_repair is not None and self._owner.value == _INCONSISTENT:
                self.on_repair()
            # Taken with EOWNERDEAD and not yet repaired, it would become
            # unusable for good when unlocked: repair it (EINVAL otherwise).
            _mutex_consistent(self.addr)
            if raw_mutex_unlock(self.addr) != 0:
                return


def locked(rc: int, addr: int) -> bool:
    """Whether a lock call that returned ``rc`` took the mutex at ``addr``."""
    if rc in (errno.ETIMEDOUT, errno.EBUSY):
        return False
    if rc == errno.EOWNERDEAD:
        mutex_consistent(addr)
        raise OwnerDied
    _check(rc, "pthread_mutex_lock")
    return True


def mutex_consistent(addr: int) -> None:
    """Mark a robust mutex taken with EOWNERDEAD usable again (still held)."""
    _check(_mutex_consistent(addr), "pthread_mutex_consistent")


# --- which mapping a held robust mutex is linked through ---------------------------
#
# glibc links every robust mutex a thread holds into that thread's robust
# list, through the mutex's own memory, at the address the thread locked it
# by (each mapping of a shm object is at an address of its own). The thread's
# next lock or unlock of any robust mutex writes into its neighbours on the
# list, and the kernel walks it when the thread ends: a mapping unmapped while
# a mutex in it is on a list makes those writes hit memory that is gone
# (SIGSEGV) or whatever was mapped there since. The list is the kernel's ABI
# (Documentation/locking/robust-futex-ABI): get_robust_list gives a thread's
# head (a pointer to the first entry, the futex_offset, the pending entry);
# each entry holds the address of the next (the last, the head's), and an
# entry's address plus futex_offset is its mutex's futex word.
_ROBUST_LIST_LIMIT = 2048  # as the kernel's walk: a longer list is not believed


def _get_robust_list_number(machine: str, pointer_bytes: int) -> int | None:
    """get_robust_list's number for this Python's ABI; None where not known
    (an unknown call must not be made: the caller then cannot tell)."""
    if pointer_bytes == 4:
        if machine.startswith(("arm", "aarch64")):
            return 339
        table32 = {"i386": 312, "i486": 312, "i586": 312, "i686": 312, "x86_64": 312}
        return {**table32, "ppc": 299, "ppc64": 299, "s390": 305, "s390x": 305}.get(machine)
    generic = {"aarch64": 100, "riscv64": 100, "loongarch64": 100}
    return {**generic, "x86_64": 274, "ppc64": 299, "ppc64le": 299, "s390x": 305}.get(machine)


# A function pointer of its own (indexing makes a new one): _futex is
# _libc.syscall, with the futex call's argument types.
_get_robust_list = _libc["syscall"]
_get_robust_list.argtypes = [ctypes.c_long, ctypes.c_long, _P, _P]
_get_robust_list.restype = ctypes.c_long
_SYS_GET_ROBUST_LIST = _get_robust_list_number(platform.machine(), ctypes.sizeof(ctypes.c_void_p))
_HEAD_BYTES = 3 * ctypes.sizeof(ctypes.c_void_p)  # struct robust_list_head


def _robust_list_head() -> tuple[int, int] | None:
    """This thread's robust list head and futex_offset; None if unknown."""
    if _SYS_GET_ROBUST_LIST is None:
        return None
    head, size = ctypes.c_void_p(), ctypes.c_size_t()
    rc = _get_robust_list(_SYS_GET_ROBUST_LIST, 0, ctypes.byref(head), ctypes.byref(size))
    if rc != 0 or not head.value or size.value != _HEAD_BYTES:
        return None
    offset = ctypes.c_long.from_address(head.value + ctypes.sizeof(ctypes.c_void_p)).value
    return head.value, offset


def held_through(addr: int) -> bool | None:
    """Whether this thread's robust list links the mutex at ``addr`` by that
    very address: it holds the mutex, locked through this mapping of it.
    None if it cannot be told (no such call here, or a list too long).

    Only this thread changes its list, and it runs this: the walk sees a
    list at rest, of mutexes that are mapped (they are held)."""
    found = _robust_list_head()
    if found is None:
        return None
    head, offset = found
    entry = ctypes.c_void_p.from_address(head).value or head
    for _ in range(_ROBUST_LIST_LIMIT):
        entry &= ~1  # the low bit marks a PI mutex
        if entry == head:
            return False
        if entry + offset == addr:
            return True
        entry = ctypes.c_void_p.from_address(entry).value or head
    return None


def thread_of_this_process(tid: int) -> bool:
    """Whether ``tid`` (a mutex holder's, from its futex word) is a thread of
    this process; also True if that cannot be told (no /proc), which is
    the safe answer for a caller that would unmap the mutex."""
    if tid == threading.get_native_id():
        return True
    try:
        return os.path.exists(f"/proc/self/task/{tid}") or not os.path.isdir("/proc/self/task")
    except OSError:
        return True


# --- condition variables: a futex word, robust to a waiter that dies -------------
#
# glibc's process-shared condition variables count their waiters inside the
# object, and a waiter takes its count back only as it returns. A waiter
# killed in its wait (SIGKILL, a crash) never does: the next signal then waits,
# for ever and deaf to signals, for that waiter to leave, holding the mutex,
# and so does every wait after it. Here a condition is two 32-bit words: a
# sequence number, which every signal changes, and on which waiters sleep (a
# futex, which the kernel forgets a dead waiter of), and the number of
# waiters, so that a signal with nobody waiting makes no system call. A dead
# waiter leaves that number one too high: its signals then make the call.
_FUTEX_WAKE, _FUTEX_WAKE_OP, _FUTEX_WAIT_BITSET = 1, 5, 9
_FUTEX_BITSET_MATCH_ANY = 0xFFFF_FFFF
# FUTEX_OP(FUTEX_OP_ADD, 1, FUTEX_OP_CMP_EQ, 0): add 1 to the word, atomically
# (a signaller need not hold the mutex); the second wake, on the same word, is
# of 0 waiters.
_ADD_ONE = (1 << 28) | (1 << 12)
_INT_MAX = 0x7FFF_FFFF
ALL = _INT_MAX  # how many a broadcast wakes
_futex = _libc.syscall
_futex.argtypes = [
    ctypes.c_long,  # the call's number
    _P,  # the word
    ctypes.c_int,  # the operation
    ctypes.c_uint32,  # a value: the word's expected one, or how many to wake
    _P,  # a timespec, or (FUTEX_WAKE_OP) how many to wake on the second word
    _P,  # the second word
    ctypes.c_uint32,  # the bitset, or the operation on the second word
]
_futex.restype = ctypes.c_long
_WAITERS = 4  # bytes from the sequence number to the number of waiters


def _futex_number(machine: str, pointer_bytes: int) -> int:
    """The futex system call's number for this Python's ABI: a 32-bit Python
    on a 64-bit kernel (whose machine that is) uses the 32-bit one."""
    if pointer_bytes == 4:
        return {"mips": 4238, "ppc": 221, "s390": 238}.get(machine, 240)  # i386, ARM
    return {"x86_64": 202, "ppc64": 221, "ppc64le": 221, "s390x": 238}.get(machine, 98)


def check_futex(number: int) -> None:
    """Raise unless ``number`` is the futex call (a wrong one would make every
    condition wait return at once, for ever): a wake of a word nobody waits
    on wakes 0, and a wait for a value the word does not hold refuses."""
    word = ctypes.c_uint32(0)
    at = ctypes.addressof(word)
    woke = _futex(number, at, _FUTEX_WAKE, 1, None, None, 0)
    refused = _futex(number, at, _FUTEX_WAIT_BITSET, 1, None, None, _FUTEX_BITSET_MATCH_ANY)
    if woke != 0 or refused != -1 or ctypes.get_errno() != errno.EAGAIN:
        raise OSError(
            f"system call {number} is not the futex call on {platform.machine()} "
            "(netmcore's condition variables need it): please report it, naming your "
            "platform"
        )


_SYS_FUTEX = _futex_number(platform.machine(), ctypes.sizeof(ctypes.c_void_p))
check_futex(_SYS_FUTEX)


def cond_init(addr: int) -> None:
    """Make a condition variable at ``addr`` (two aligned 32-bit words). The
    sequence starts at 1: FUTEX_WAKE_OP's second wake, for an old value of
    0, would wake a second waiter on the first signal."""
    ctypes.c_uint32.from_address(addr).value = 1
    ctypes.c_uint32.from_address(addr + _WAITERS).value = 0


def _cond_timedwait(cond: int, mutex: int, at: float, expected: int | None = None) -> int:
    """pthread_cond_timedwait's work: give back ``mutex`` (held), sleep until
    a signal or until the time.monotonic() time ``at``, take the mutex back.
    0 (woken, or a spurious wake-up), ETIMEDOUT, EINTR (a signal handler
    is due), or the relock's code (EOWNERDEAD); EPERM, without waiting, if
    this thread did not hold the mutex. ``expected``: the sequence number
    the whole wait started at (a later slice of it: woken at once if it
    changed since), else the one read now."""
    holder, me = ctypes.c_int.from_address(mutex), threading.get_native_id()
    if holder.value & FUTEX_TID_MASK != me:  # a robust mutex's word holds its holder's id
        return errno.EPERM
    waiters = ctypes.c_uint32.from_address(cond + _WAITERS)
    if expected is None:
        expected = ctypes.c_uint32.from_address(cond).value  # under the mutex: no signal slips by
    waiters.value += 1  # under the mutex, as every change to it
    err = relock = 0
    try:
        if raw_mutex_unlock(mutex) == 0 and _futex(
            _SYS_FUTEX,
            cond,
            _FUTEX_WAIT_BITSET,
            expected,
            _timespec(at),
            None,
            _FUTEX_BITSET_MATCH_ANY,
        ):
            err = ctypes.get_errno()  # EAGAIN: a signal came before the sleep (woken)
    finally:
        # Held again on every return, and on a signal handler's exception:
        # Python runs handlers as a call returns, between any two of those
        # above. The mutex's word, not a variable, says whether it was given,
        # and whether it is held again: an exception as the relock returns
        # loses its code (the caller repairs a mutex taken from a dead
        # holder), and would leave this waiter counted for ever.
        try:
            if holder.value & FUTEX_TID_MASK != me:
                relock = _mutex_lock(mutex)
        finally:
            if holder.value & FUTEX_TID_MASK == me:
                waiters.value -= 1  # under the mutex, as every change to it
    if relock:
        return relock
    return err if err in (errno.ETIMEDOUT, errno.EINTR) else 0


def _cond_wake(cond: int, count: int) -> None:
    """Change the sequence number of ``cond`` and wake up to ``count`` waiters,
    if any is counted: for a signaller that holds the mutex (a waiter counts
    itself under it); see :func:`cond_notify` for one that need not."""
    if ctypes.c_uint32.from_address(cond + _WAITERS).value:
        _futex(_SYS_FUTEX, cond, _FUTEX_WAKE_OP, count, None, cond, _ADD_ONE)


def cond_words(addr: int) -> tuple[ctypes.c_uint32, ctypes.c_uint32]:
    """The sequence number and the number of waiters of the condition at
    ``addr``, for :func:`cond_notify` (made once: each costs a call)."""
    return ctypes.c_uint32.from_address(addr), ctypes.c_uint32.from_address(addr + _WAITERS)


def cond_notify(addr: int, words: tuple[ctypes.c_uint32, ctypes.c_uint32], count: int) -> None:
    """:func:`_cond_wake` for a signaller that need not hold the mutex: the
    sequence number changes even when no waiter is counted. A waiter
    between two slices of its wait is not counted, and has read the
    signaller's mark (ShmCondition's stamp) already: its next slice, which
    waits on the number its wait started at (:func:`cond_wait_in_slices`),
    then ends at once. With nobody counted, a plain add, no system call
    (two at once may make one change of two: a change all the same)."""
    seq, waiters = words
    if waiters.value:
        _futex(_SYS_FUTEX, addr, _FUTEX_WAKE_OP, count, None, addr, _ADD_ONE)
    else:
        seq.value += 1  # wraps at 2**32, as the kernel's add does


def cond_wait(cond: int, mutex: int, timeout: float) -> bool:
    """Wait on ``cond`` (``mutex`` held) for up to ``timeout`` seconds, one
    slice of a longer wait; False on timeout, and when a signal handler cut
    it short (the caller then looks around as after a slice: whether the
    side that could wake it has died, say).

    OwnerDied when the mutex was taken back from a holder that died: held,
    and still inconsistent, so that the caller notes the death before it
    repairs it (:func:`mutex_consistent`). An exception between the two
    would otherwise lose it; until the repair, the mutex says so itself."""
    rc = _cond_timedwait(cond, mutex, time.monotonic() + max(0.0, timeout))
    if rc == errno.EOWNERDEAD:
        raise OwnerDied
    return locked(errno.ETIMEDOUT if rc == errno.EINTR else rc, mutex)


def cond_wait_in_slices(
    cond: int, mutex: int, deadline: float | None, between: Callable[[], bool]
) -> int:
    """Wait on ``cond`` (``mutex`` held) until ``deadline`` (as for
    :func:`lock_in_slices`) in slices; return the code of the call that ended
    the wait: 0 (woken), ETIMEDOUT at the deadline, EOWNERDEAD or an error.

    Between two slices, holding the mutex, Python runs signal handlers and
    ``between`` is called: it says whether a wake-up came meanwhile (a
    signal given while this thread did not wait would be lost), or raises.
    Every slice waits on the sequence number the wait started at: one that
    changed since (a signal that came between two slices, after ``between``
    looked) ends the next slice at once, and the last one's timeout is
    taken for a wake-up, as the signal came before the deadline.
    """
    seq = ctypes.c_uint32.from_address(cond)
    expected = seq.value  # under the mutex, as every slice's own was read
    while True:
        at, last = _next_slice(deadline)
        rc = _cond_timedwait(cond, mutex, at, expected)
        # EINTR: a signal handler is due, which runs now; then the wait goes on.
        if rc != errno.EINTR and (rc != errno.ETIMEDOUT or last):
            if rc == errno.ETIMEDOUT and seq.value != expected:
                return 0
            return rc
        if between():
            return 0


def cond_signal(addr: int) -> None:
    """Wake one waiter of the condition at ``addr``, if there is one."""
    _cond_wake(addr, 1)


def cond_broadcast(addr: int) -> None:
    """Wake every waiter of the condition at ``addr``."""
    _cond_wake(addr, _INT_MAX)


def sem_init(addr: int, value: int) -> None:
    if _sem_init(addr, 1, value) != 0:
        raise OSError(ctypes.get_errno(), "sem_init failed")


def sem_wait(addr: int, timeout: float | None) -> bool:
    """Decrement, waiting up to ``timeout`` seconds; False on timeout."""
    deadline = None if timeout is None else _deadline(timeout)
    while True:
        if deadline is None:
            rc = _sem_wait(addr)
        else:
            rc = _sem_clockwait(addr, _CLOCK_MONOTONIC, deadline)
        if rc == 0:
            return True
        err = ctypes.get_errno()
        if err == errno.ETIMEDOUT:
            return False
        if err != errno.EINTR:  # a signal handler ran: wait again (PEP 475)
            raise OSError(err, os.strerror(err))


def sem_wait_spinning(addr: int, timeout: float | None) -> bool:
    """:func:`sem_wait`, polling for up to about 30 us before it sleeps."""
    if timeout is None or timeout > 0:
        for _ in range(SPINS):
            if _sem_trywait(addr) == 0:
                return True
    return sem_wait(addr, timeout)


class IntCell:
    """A C int to read a semaphore's value into, reused: allocating one per
    call costs as much as the call."""

    def __init__(self) -> None:
        self.cell = ctypes.c_int()
        self.addr = ctypes.addressof(self.cell)


def sem_value(addr: int, into: IntCell | None = None) -> int:
    """The semaphore's value. Pass ``into`` on hot paths, one per thread."""
    into = into or IntCell()
    _sem_getvalue(addr, into.addr)
    return into.cell.value


ONE = (None,)


class InUse:
    """The calls in progress on an object in a shm mapping, so that a close()
    by another thread unmaps it only once the last of them has left: a C call
    (a wait, above all) holds raw addresses into the mapping, and would touch
    memory that is gone (SIGSEGV).

    ``calls`` has an entry per call in progress. ``calls += ONE`` and ``del
    calls[-1]`` are each one step under the GIL, and neither is a call, after
    which a signal handler's exception could come between the count and the
    ``try`` that undoes it. Hot paths use them inline::

        use.calls += ONE
        try:
            if use.closed: raise closed_error(obj)
            ...
        finally:
            del use.calls[-1]
            if use.closed: use.left()
    """

    __slots__ = ("__weakref__", "_lock", "_unmap", "_unmapped", "calls", "closed")

    def __init__(self, unmap: Callable[[], None]) -> None:
        self.calls: list[None] = []
        self.closed = False
        self._unmap = unmap
        self._lock = threading.Lock()
        self._unmapped = False
        _every_in_use.add(self)
        if not _forgetting[0]:  # the first one (another thread's too, at worst: harmless)
            os.register_at_fork(after_in_child=_forget_calls_of_other_threads)
            _forgetting[0] = True

    def enter(self) -> bool:
        """Count a call; False (not counted) once closed."""
        self.calls += ONE
        if self.closed:
            self.leave()
            return False
        return True

    @property
    def unmapped(self) -> bool:
        """Whether the last call has left the closed object, and its unmap
        has begun (it may yet keep the mapping: see ShmMutex._unmap)."""
        return self._unmapped

    def leave(self) -> None:
        del self.calls[-1]
        if self.closed:
            self.left()

    def left(self) -> None:
        """After a call has left a closed object: unmap it if it was the last."""
        if not self.calls:
            with self._lock:
                if self._unmapped:
                    return
                self._unmapped = True
            self._unmap()

    def close(self, touch: Callable[[int], None]) -> None:
        """Refuse new calls; call ``touch`` with the number of calls still in
        progress (the mapping is there: it may wake their waits), then unmap
        once the last call has left. Only the first close does anything."""
        with self._lock:
            if self.closed:
                return
            self.calls += ONE  # the mapping stays while touch runs
            self.closed = True
        try:
            touch(len(self.calls) - 1)
        finally:
            self.leave()


# In a forked child, only the thread that forked runs on: the calls the
# others had in progress never leave there, and a close() would never unmap.
_every_in_use: weakref.WeakSet[InUse] = weakref.WeakSet()


# Its at-fork hook is registered with the first InUse: a program that made
# none does not run it at each of its forks, which copies the pages of the
# objects it touches.
_forgetting = [False]


def _forget_calls_of_other_threads() -> None:
    for use in _every_in_use:
        use.calls = []
        use._lock = threading.Lock()  # another thread may have held it at the fork


# This process's pid, without a getpid() system call per use.
this_pid = [os.getpid()]
os.register_at_fork(after_in_child=lambda: this_pid.__setitem__(0, os.getpid()))


def ended(pid: int) -> bool:
    """Whether process ``pid`` has ended, for a waiter whose wake-up only that
    process could bring.

    A pidfd tells a zombie from a live process, which kill(pid, 0) does not. It
    is opened for each question and closed at once, so nothing is held by an
    object its owner may drop unclosed. A process that ended and whose pid was
    taken again since passes for alive: the wait goes on, as it would without
    this check, and never ends by mistake.
    """
    if pid == this_pid[0]:
        return False
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    except OSError:
        return False  # no pidfds (Linux before 5.3): never conclude that it ended
    try:
        poll = select.poll()
        poll.register(fd, select.POLLIN)  # readable once the process has ended
        return bool(poll.poll(0))
    finally:
        os.close(fd)
