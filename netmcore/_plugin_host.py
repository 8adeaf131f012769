"""Plugins served by the master (upstream's Netplex_sharedvar, _mutex, _semaphore
and _mbox): named shared variables, mutexes, semaphores and message boxes; and,
beyond upstream, barriers (``threading.Barrier`` across processes).

They live in the master's memory, so they survive any worker's crash, and the
master cleans up after a dead worker: its mutexes are released, a protected
semaphore's count is put back (what live processes took already is owed, and
settled by a later dead process's give-back: see ``_undo_effect``), a barrier
it took part in is broken if it failed (its parties would wait for ever), and
its queued requests are dropped. Every operation is non-blocking in the master: a
worker that must wait is a reply the master sends later, never a blocked loop.
A wait for a shared variable's value may come before the variable is created
(by a peer that creates and sets it): it waits for both, its type checked
against the variable's once it is made (see ``_var_create``).

A waiting call left by an exception in the worker (a signal handler's) is
withdrawn by two more operations of its service: ``cancel`` drops its waiter
if it is still queued (safe to repeat), and ``undo`` gives back what its reply
granted if that reply was already sent (a mutex, a count, a message). An undo
made twice would give back twice: its sender makes it once, whatever
interrupts come (see ``_plugins._withdrawal``), so the master keeps no record
of the undone requests, which grew with every give-back for as long as the
process lived.

A request may carry a deadline. One that would wait past it is not queued:
it is answered at once with a timeout (so ``timeout=0`` is a try). A queued
one is timed out by the master's loop, which wakes at the next deadline
(``next_deadline``) and calls ``expire_due``: every overdue waiter is dropped
and answered with a timeout. The master decides alone, in one step, whether a
request was granted or timed out, so a request that times out has changed
nothing, and nothing is given to it later.

A request that would wait in the master's own code (``init_ctrl``,
``first_process``, ``extract_result``) raises ContextError there: the master
serves the workers, so nothing could change while it waits. What is there
already is taken. (Other threads of the master's process are refused any
plugin call: this state is the loop's, and has no lock.)
"""

from __future__ import annotations

import heapq
import math
import reprlib
import time
from collections import deque
from collections.abc import Callable, Iterable, MutableSequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple, TypeVar

from ._context import refuse_wait_in_master
from ._errors import EncapTypeMismatch, PluginError
from ._wire import Failed, PluginReply, PluginReq

if TYPE_CHECKING:
    from ._master import Conn

Waiter = tuple["Conn", int, int]  # (connection, request id, process id)
Send = Callable[["Conn", PluginReply | Failed], bool]
X = TypeVar("X")

TIMERS_PRUNE_AT = 1024  # timers kept at least before a rebuild

# The num of a reply with an error: a failure (PluginError), a timeout, a
# broken barrier (BrokenBarrierError), the end of every sender a box's
# receive waited for (SendersEnded).
FAILED = -2
TIMED_OUT = -3
BROKEN = -4
ENDED = -5
SENDERS_ENDED = "its senders have ended"  # an ENDED reply's error (the caller words its own)
RECEIVERS_ENDED = "its receivers have ended"  # a send's


class Waiting(NamedTuple):
    """A queued request: whom to answer, and when it times out (None: never).
    A box's receive (or send) with while_alive: ``alive``, those of its
    processes still running, which it waits only while one is."""

    conn: Conn
    req: int
    user: int
    deadline: float | None
    alive: frozenset[int] = frozenset()


@dataclass
class _Var:
    fingerprint: str
    type_name: str  # for the error of a request of another type
    value: bytes | None = None
    digest: bytes = b""  # of the value as it reads back, its writer's: see _var_cas
    waiters: list[Waiting] = field(default_factory=list)


@dataclass
class _Mutex:
    holder: int | None = None
    waiters: deque[Waiting] = field(default_factory=deque)


@dataclass
class _Sem:
    value: int
    protected: bool
    effect: dict[int, int] = field(default_factory=dict)  # process id -> net change
    # What undoing dead processes' increments could not take back (the count
    # was at 0: live processes had taken it). The next undos of a dead
    # process's decrements settle it before they add to the count.
    debt: int = 0
    waiters: deque[Waiting] = field(default_factory=deque)


@dataclass
class _Mbox:
    fingerprint: str
    type_name: str  # for the error of a request of another type
    capacity: int
    queue: deque[bytes] = field(default_factory=deque)
    senders: deque[tuple[Waiting, bytes]] = field(default_factory=deque)
    receivers: deque[Waiting] = field(default_factory=deque)
    # The messages sent to receivers that have not said they have them yet,
    # by (process, request id): a reply sent is not a reply read, and one
    # sent to a process that dies before it reads it (killed as it waited,
    # say) goes back to the head of the box (see forget), not with it.
    unread: dict[tuple[int, int], bytes] = field(default_factory=dict)


@dataclass
class _Barrier:
    parties: int
    waiters: list[Waiting] = field(default_factory=list)  # this round's, in arrival order
    broken: str | None = None  # why it is broken (None: it is not)
    # The processes that took part (create or wait): a failure of one breaks it.
    members: set[int] = field(default_factory=set)


class PluginHost:
    """The plugins' state in the master, and their operations."""

    def __init__(self, send: Send, ended: Callable[[list[int]], list[int]]) -> None:
        self._send = send
        self._ended = ended  # which of some processes have ended (Master.which_ended)
        self.vars: dict[str, _Var] = {}
        # The waits for a value of a shared variable not created yet, by its
        # name, each with its request: its type is the variable's to be, and
        # is checked once it is created. A name goes once nothing waits for it.
        self.unmade: dict[str, list[tuple[Waiting, PluginReq]]] = {}
        self.mutexes: dict[str, _Mutex] = {}
        self.sems: dict[str, _Sem] = {}
        self.mboxes: dict[str, _Mbox] = {}
        self.barriers: dict[str, _Barrier] = {}
        # (deadline, service, name) of each queued request with a deadline;
        # an entry outlives its request (answered, withdrawn): it then times
        # out nothing. Rebuilt from the queues once it reaches prune_at, so
        # that it stays in proportion to what waits.
        self.timers: list[tuple[float, str, str]] = []
        self.prune_at = TIMERS_PRUNE_AT

    def serve(self, req: PluginReq, waiter: Waiter | None) -> PluginReply | None:
        """Answer ``req`` now, or return None when ``waiter`` is answered later."""
        name = f"_{req.service}_{req.op}"
        if name not in _HANDLERS:  # not any method: "_pass_mutex" is no operation
            raise PluginError(f"unknown plugin operation {req.service}.{req.op}")
        if req.deadline is not None and not math.isfinite(req.deadline):
            # NaN is never due: its timer stayed first, and no timeout fired again
            raise PluginError(f"a deadline must be a finite time, not {req.deadline!r}")
        handler = getattr(self, name)
        reply: PluginReply | None = handler(req, waiter)
        return reply

    def _reply(self, waiter: Waiter | Waiting, data: bytes | None = None, num: int = 0) -> bool:
        return self._send(waiter[0], PluginReply(data, num, req=waiter[1]))

    def _wait_in(
        self, queue: MutableSequence[Waiting], req: PluginReq, waiter: Waiter | None, what: str
    ) -> PluginReply | None:
        """Queue ``waiter`` in ``queue`` (None: it is answered later), or
        answer it at once (see :func:`_waiting`)."""
        waiting = self._waiting(req, waiter, what)
        if isinstance(waiting, PluginReply):
            return waiting
        queue.append(waiting)
        return None

    def _waiting(self, req: PluginReq, waiter: Waiter | None, what: str) -> Waiting | PluginReply:
        """The queue entry of ``waiter``, which must wait for what ``what``
        says; or the answer at once: a timeout if the deadline of ``req`` has
        passed (so nothing changes), ContextError if it is the master's own call."""
        if req.deadline is not None and req.deadline <= time.monotonic():
            return PluginReply(None, TIMED_OUT, error="timed out")
        if waiter is None:  # the master's own call (see _plugins._call)
            refuse_wait_in_master(what)  # from any thread: it has no way to wait
        if req.deadline is not None:
            if len(self.timers) >= self.prune_at:
                self._rebuild_timers()
            heapq.heappush(self.timers, (req.deadline, req.service, req.name))
        return Waiting(*waiter, req.deadline)

    def _rebuild_timers(self) -> None:
        """The timers of the requests that wait now, only."""
        self.timers = [
            (w.deadline, service, name)
            for service, name, _, queue in self._queues()
            for w in queue
            if w.deadline is not None
        ]
        heapq.heapify(self.timers)
        self.prune_at = max(TIMERS_PRUNE_AT, 2 * len(self.timers))

    def _queues(self) -> list[tuple[str, str, str, Iterable[Waiting]]]:
        """Every queue of calls that wait here: its object's service and
        name, what its calls wait for (as status shows it), and the calls."""
        return [
            *(
                ("var", n, f"SharedVar({reprlib.repr(n)}).wait_for_value()", v.waiters)
                for n, v in self.vars.items()
            ),
            *(
                (
                    "var",
                    n,
                    f"SharedVar({reprlib.repr(n)}).wait_for_value(), before its create",
                    [w for w, _ in ws],
                )
                for n, ws in self.unmade.items()
            ),
            *(
                (
                    "mutex",
                    n,
                    f"PluginMutex({reprlib.repr(n)}).lock(), held by {_holder(m.holder)}",
                    m.waiters,
                )
                for n, m in self.mutexes.items()
            ),
            *(
                ("sem", n, f"PluginSemaphore({reprlib.repr(n)}).decrement()", s.waiters)
                for n, s in self.sems.items()
            ),
            *(
                ("mbox", n, f"Mbox({reprlib.repr(n)}).receive()", b.receivers)
                for n, b in self.mboxes.items()
            ),
            *(
                (
                    "mbox",
                    n,
                    f"Mbox({reprlib.repr(n)}).send() to a full box",
                    [w for w, _ in b.senders],
                )
                for n, b in self.mboxes.items()
            ),
            *(
                ("barrier", n, f"PluginBarrier({reprlib.repr(n)}).wait()", b.waiters)
                for n, b in self.barriers.items()
            ),
        ]

    def waits(self) -> list[tuple[int, str]]:
        """Each call that waits here: its process id, and what it is."""
        return [(w.user, what) for _, _, what, queue in self._queues() for w in queue]

    def waits_with_deadline(self) -> bool:
        """Whether a call waits here with a deadline (it will end then)."""
        return any(w.deadline is not None for *_, queue in self._queues() for w in queue)

    def next_deadline(self) -> float | None:
        """When the master's loop must call :meth:`expire_due` next (None: never)."""
        return self.timers[0][0] if self.timers else None

    def expire_due(self) -> None:
        """Time out every queued request whose deadline has passed."""
        now = time.monotonic()
        objects = set()
        while self.timers and self.timers[0][0] <= now:
            _, service, name = heapq.heappop(self.timers)
            objects.add((service, name))
        for service, name in objects:
            self._expire(service, name, now)

    def _expire(self, service: str, name: str, now: float) -> None:
        """Drop every request that waits on that object and whose deadline
        has passed, and answer it with a timeout."""

        def due(w: Waiting) -> bool:
            return w.deadline is not None and w.deadline <= now

        expired: list[Waiting] = []
        if service == "var":
            if name in self.vars:
                expired = _take(self.vars[name].waiters, due)
            expired += self._take_unmade(name, due)
        elif service == "mutex" and name in self.mutexes:
            expired = _take(self.mutexes[name].waiters, due)
        elif service == "sem" and name in self.sems:
            expired = _take(self.sems[name].waiters, due)
        elif service == "mbox" and name in self.mboxes:
            box = self.mboxes[name]
            expired = _take(box.receivers, due)
            expired += [w for w, _ in _take(box.senders, lambda sender: due(sender[0]))]
        elif service == "barrier" and name in self.barriers:
            # As threading.Barrier's: a party that stops waiting leaves the
            # others waiting for it for ever, so a timeout breaks it.
            barrier = self.barriers[name]
            late = next((w for w in barrier.waiters if due(w)), None)
            if late is not None:
                self._break(barrier, f"a wait of process {late.user} timed out")
        for w in expired:
            self._send(w.conn, PluginReply(None, TIMED_OUT, error="timed out", req=w.req))

    # --- shared variables --------------------------------------------------

    def _var(self, req: PluginReq) -> _Var:
        var = self.vars.get(req.name)
        if var is None:
            raise PluginError(f"there is no shared variable {req.name!r}: create it first")
        _check(req, var, "shared variable")
        return var

    def _var_create(self, req: PluginReq, waiter: Waiter | None) -> PluginReply:
        if req.name in self.vars:
            _check(req, self.vars[req.name], "shared variable")
            return PluginReply(None, 0)
        var = self.vars[req.name] = _Var(req.fingerprint, req.type_name)
        # Those that waited for it to be created wait for its value now, but
        # for a wait of another type: it fails, as it would have, made now.
        for w, asked in self.unmade.pop(req.name, []):
            mismatch = _mismatch(asked, var, "shared variable")
            if mismatch is None:
                var.waiters.append(w)
            else:
                self._send(w.conn, Failed(EncapTypeMismatch.__name__, mismatch, req=w.req))
        if req.data is not None:
            self._var_set(req, waiter)
        return PluginReply(None, 1)

    def _var_set(self, req: PluginReq, waiter: Waiter | None) -> PluginReply:
        self._hold(self._var(req), req)
        return PluginReply(None, 0)

    def _var_cas(self, req: PluginReq, waiter: Waiter | None) -> PluginReply:
        # By the digests its writer and the caller made (the master has no
        # types to decode with); ``flag``: no value matches (an expected None).
        var = self._var(req)
        matched = req.flag if var.value is None else var.digest in req.expected
        if matched:
            self._hold(var, req)
        return PluginReply(None, 1 if matched else 0)

    def _var_swap(self, req: PluginReq, waiter: Waiter | None) -> PluginReply:
        var = self._var(req)
        old = var.value
        self._hold(var, req)
        return PluginReply(old, 0 if old is None else 1)

    def _hold(self, var: _Var, req: PluginReq) -> None:
        """Make ``var`` hold the value of ``req``, waking every waiter with it."""
        if req.data is None:
            raise PluginError(f"a {req.service}.{req.op} of {req.name!r} without a value")
        var.value, var.digest = req.data, req.digest
        waiting, var.waiters = var.waiters, []
        for w in waiting:
            self._reply(w, var.value)

    def _var_get(self, req: PluginReq, waiter: Waiter | None) -> PluginReply:
        var = self._var(req)
        return PluginReply(var.value, 0 if var.value is None else 1)

    def _var_wait(self, req: PluginReq, waiter: Waiter | None) -> PluginReply | None:
        if req.name not in self.vars:  # it waits for the variable to be created, too
            what = f"SharedVar({req.name!r}).wait_for_value() of a variable not created yet"
            waiting = self._waiting(req, waiter, what)
            if isinstance(waiting, PluginReply):
                return waiting
            self.unmade.setdefault(req.name, []).append((waiting, req))
            return None
        var = self._var(req)
        if var.value is not None:
            return PluginReply(var.value, 1)
        what = f"SharedVar({req.name!r}).wait_for_value() of a variable without a value"
        return self._wait_in(var.waiters, req, waiter, what)

    def _var_cancel(self, req: PluginReq, waiter: Waiter | None) -> PluginReply:
        var = self.vars.get(req.name)
        if var is not None:
            return _cancel(var.waiters, req, waiter)
        taken = self._take_unmade(req.name, lambda w: _mine(w, req, waiter))
        return PluginReply(None, 1 if taken else 0)

    def _var_delete(self, req: PluginReq, waiter: Waiter | None) -> PluginReply:
        if req.name in self.vars:
            _check(req, self.vars[req.name], "shared variable")
        var = self.vars.pop(req.name, None)
        gone = f"shared variable {req.name!r} was deleted"
        if var is None:  # a wait for it to be created fails too: it would wait on
            waiters = [w for w, _ in self.unmade.pop(req.name, [])]
            gone += " before it was created"
        else:
            waiters = var.waiters
        for w in waiters:
            self._send(w.conn, _failure(w, gone))
        return PluginReply(None, 0 if var is None else 1)

    def _take_unmade(self, name: str, taken: Callable[[Waiting], bool]) -> list[Waiting]:
        """Take from the waits for variable ``name`` to be created those that
        ``taken`` accepts; drop its entry once none is left."""
        waits = self.unmade.get(name)
        if waits is None:
            return []
        out = [w for w, _ in _take(waits, lambda entry: taken(entry[0]))]
        if not waits:
            del self.unmade[name]
        return out

    # --- mutexes -------------------------------------------------------------

    def _mutex_lock(self, req: PluginReq, waiter: Waiter | None) -> PluginReply | None:
        mutex = self.mutexes.setdefault(req.name, _Mutex())
        user = waiter[2] if waiter is not None else -1
        if mutex.holder is None:
            mutex.holder = user
            return PluginReply(None, 0)
        if mutex.holder == user:
            raise PluginError(f"mutex {req.name!r} is already locked by this process")
        what = f"PluginMutex({req.name!r}).lock() of a mutex held by {_holder(mutex.holder)}"
        return self._wait_in(mutex.waiters, req, waiter, what)

    def _mutex_unlock(self, req: PluginReq, waiter: Waiter | None) -> PluginReply:
        mutex = self.mutexes.get(req.name)
        user = waiter[2] if waiter is not None else -1
        if mutex is None or mutex.holder != user:
            holder = "nobody" if mutex is None or mutex.holder is None else _holder(mutex.holder)
            raise PluginError(
                f"mutex {req.name!r} cannot be unlocked by process {user}: it is held by {holder}"
            )
        self._pass_mutex(req.name, mutex)
        return PluginReply(None, 0)

    def _mutex_cancel(self, req: PluginReq, waiter: Waiter | None) -> PluginReply:
        mutex = self.mutexes.get(req.name)
        return _cancel(mutex.waiters if mutex else [], req, waiter)

    def _mutex_undo(self, req: PluginReq, waiter: Waiter | None) -> PluginReply:
        mutex = self.mutexes.get(req.name)
        user = waiter[2] if waiter is not None else -1  # -1: the master's own (_mutex_lock)
        if mutex and mutex.holder == user:
            self._pass_mutex(req.name, mutex)
        return PluginReply(None, 0)

    def _pass_mutex(self, name: str, mutex: _Mutex) -> None:
        mutex.holder = None
        while mutex.waiters:
            w = mutex.waiters.popleft()
            if self._reply(w):
                mutex.holder = w[2]
                return
        del self.mutexes[name]

    # --- semaphores ----------------------------------------------------------

    def _sem(self, req: PluginReq) -> _Sem:
        sem = self.sems.get(req.name)
        if sem is None:
            raise PluginError(f"there is no semaphore {req.name!r}: create it first")
        return sem

    def _sem_create(self, req: PluginReq, waiter: Waiter | None) -> PluginReply:
        if req.name in self.sems:
            return PluginReply(None, 0)
        _check_count(req.num, 0, "a semaphore's initial count")
        self.sems[req.name] = _Sem(req.num, req.flag)
        return PluginReply(None, 1)

    def _sem_increment(self, req: PluginReq, waiter: Waiter | None) -> PluginReply:
        sem = self._sem(req)
        user = None if waiter is None else waiter[2]
        if sem.debt and user is not None and sem.effect.get(user, 0) < 0:
            # A unit it took given back, while a dead process's addition is
            # owed (see _undo_effect): it repays that, and the count stays. To
            # the count, it left a debt that nothing repaid once the giver
            # too had died, and the count stayed above what it had been.
            sem.debt -= 1
        else:
            sem.value += 1
        self._account(sem, user, +1)
        self._wake_sem(sem)
        return PluginReply(None, sem.value)

    def _sem_decrement(self, req: PluginReq, waiter: Waiter | None) -> PluginReply | None:
        sem = self._sem(req)
        if sem.value > 0:
            sem.value -= 1
            self._account(sem, None if waiter is None else waiter[2], -1)
            return PluginReply(None, sem.value)
        if not req.flag:  # not waiting: upstream's -1
            return PluginReply(None, -1)
        what = f"PluginSemaphore({req.name!r}).decrement() of a count at 0"
        return self._wait_in(sem.waiters, req, waiter, what)

    def _sem_cancel(self, req: PluginReq, waiter: Waiter | None) -> PluginReply:
        sem = self.sems.get(req.name)
        return _cancel(sem.waiters if sem else [], req, waiter)

    def _sem_undo(self, req: PluginReq, waiter: Waiter | None) -> PluginReply:
        if req.name in self.sems:
            self._sem_increment(req, waiter)
        return PluginReply(None, 0)

    def _sem_get(self, req: PluginReq, waiter: Waiter | None) -> PluginReply:
        return PluginReply(None, self._sem(req).value)

    def _sem_destroy(self, req: PluginReq, waiter: Waiter | None) -> PluginReply:
        sem = self.sems.pop(req.name, None)
        if sem is not None:
            for w in sem.waiters:
                self._send(w[0], _failure(w, f"semaphore {req.name!r} was destroyed"))
        return PluginReply(None, 0 if sem is None else 1)

    def _account(self, sem: _Sem, user: int | None, change: int) -> None:
        """Note a worker's change of a protected count (the master's, user
        None, is never undone)."""
        if sem.protected and user is not None:
            sem.effect[user] = sem.effect.get(user, 0) + change

    def _wake_sem(self, sem: _Sem) -> None:
        while sem.value > 0 and sem.waiters:
            w = sem.waiters.popleft()
            sem.value -= 1
            if self._reply(w, None, sem.value):
                self._account(sem, w.user, -1)
            else:
                sem.value += 1

    # --- message boxes ---------------------------------------------------------

    def _mbox(self, req: PluginReq) -> _Mbox:
        box = self.mboxes.get(req.name)
        if box is None:
            raise PluginError(f"there is no message box {req.name!r}: create it first")
        _check(req, box, "message box")
        return box

    def _mbox_create(self, req: PluginReq, waiter: Waiter | None) -> PluginReply:
        # Creating an existing box opens it, at once (upstream blocks here).
        if req.name in self.mboxes:  # opening: the creator's capacity holds
            _check(req, self.mboxes[req.name], "message box")
            return PluginReply(None, 0)
        _check_count(req.num, 1, "a message box's capacity")
        self.mboxes[req.name] = _Mbox(req.fingerprint, req.type_name, req.num)
        return PluginReply(None, 1)

    def _mbox_send(self, req: PluginReq, waiter: Waiter | None) -> PluginReply | None:
        box = self._mbox(req)
        if req.data is None:
            raise PluginError("a message box send without a message")
        if len(box.queue) < box.capacity:  # then no sender waits (see _deliver)
            box.queue.append(req.data)
            self._deliver(box)
            return PluginReply(None, 0)
        alive = self._alive(req)
        if alive is not None and not alive:
            return PluginReply(None, ENDED, error=RECEIVERS_ENDED)
        waiting = self._waiting(req, waiter, f"Mbox({req.name!r}).send() to a full box")
        if isinstance(waiting, PluginReply):
            return waiting
        box.senders.append((waiting._replace(alive=alive or frozenset()), req.data))
        return None

    def _alive(self, req: PluginReq) -> frozenset[int] | None:
        """Of a box call's while_alive (``req.pids``), those still running;
        None without one. An end of each shrinks a waiting call's (see forget)."""
        if not req.flag:
            return None
        return frozenset(req.pids) - frozenset(self._ended(list(req.pids)))

    def _mbox_receive(self, req: PluginReq, waiter: Waiter | None) -> PluginReply | None:
        box = self._mbox(req)
        if box.queue:  # then no receiver waits (see _deliver)
            if waiter is None:  # the master's own receive takes what is there
                data = box.queue.popleft()
                self._deliver(box)
                return PluginReply(data, 0)
            # Taken only once its reply is sent, and held until read: a
            # dead receiver loses nothing.
            if self._hand(box, waiter, box.queue[0]):
                box.queue.popleft()
                self._deliver(box)
            return None
        alive = self._alive(req)
        if alive is not None and not alive:
            return PluginReply(None, ENDED, error=SENDERS_ENDED)
        what = f"Mbox({req.name!r}).receive() from an empty box"
        waiting = self._waiting(req, waiter, what)
        if isinstance(waiting, PluginReply):
            return waiting
        box.receivers.append(waiting._replace(alive=alive or frozenset()))
        return None

    def _mbox_delete(self, req: PluginReq, waiter: Waiter | None) -> PluginReply:
        if req.name in self.mboxes:
            _check(req, self.mboxes[req.name], "message box")
        box = self.mboxes.pop(req.name, None)
        if box is not None:  # its messages go with it
            gone = f"message box {req.name!r} was deleted"
            for w in [*(s[0] for s in box.senders), *box.receivers]:
                self._send(w[0], _failure(w, gone))
        return PluginReply(None, 0 if box is None else 1)

    def _mbox_cancel(self, req: PluginReq, waiter: Waiter | None) -> PluginReply:
        box = self.mboxes.get(req.name)
        if box is None:
            return PluginReply(None, 0)
        for sender in box.senders:
            if _mine(sender[0], req, waiter):
                box.senders.remove(sender)
                return PluginReply(None, 1)
        return _cancel(box.receivers, req, waiter)

    def _mbox_undo(self, req: PluginReq, waiter: Waiter | None) -> PluginReply:
        # The message received goes back to the head of the box, where it was.
        box = self.mboxes.get(req.name)
        if box is not None and req.data is not None:
            if waiter is not None:
                box.unread.pop((waiter[2], req.num), None)
            box.queue.appendleft(req.data)
            self._deliver(box)
        return PluginReply(None, 0)

    def _mbox_read(self, req: PluginReq, waiter: Waiter | None) -> None:
        # Unanswered: the receiver of request ``req.num`` has its message.
        box = self.mboxes.get(req.name)
        if box is not None and waiter is not None:
            box.unread.pop((waiter[2], req.num), None)

    def _hand(self, box: _Mbox, w: Waiter | Waiting, data: bytes) -> bool:
        """Send ``data`` to the receive of ``w``, held until it says it has
        read it; False if it could not be sent."""
        if not self._reply(w, data):
            return False
        box.unread[w[2], w[1]] = data
        return True

    def _deliver(self, box: _Mbox) -> None:
        while True:
            while box.senders and len(box.queue) < box.capacity:
                w, data = box.senders.popleft()
                if self._reply(w):  # the sender's send is done
                    box.queue.append(data)
            if not (box.queue and box.receivers):
                return
            w = box.receivers.popleft()
            if self._hand(box, w, box.queue[0]):
                box.queue.popleft()

    # --- barriers ----------------------------------------------------------------

    def _barrier(self, req: PluginReq) -> _Barrier:
        """The barrier ``req`` names, made if need be with ``req.num``
        parties, which must be its number."""
        _check_count(req.num, 1, "a barrier's parties")
        barrier = self.barriers.get(req.name)
        if barrier is not None and barrier.parties != req.num:
            raise PluginError(
                f"barrier {req.name!r} has {barrier.parties} parties, not {req.num}: it keeps "
                f"the number it was made with; use PluginBarrier({req.name!r}, "
                f"{barrier.parties}), or another name"
            )
        return self.barriers.setdefault(req.name, _Barrier(req.num))

    def _barrier_create(self, req: PluginReq, waiter: Waiter | None) -> PluginReply:
        made = req.name not in self.barriers
        barrier = self._barrier(req)
        if waiter is not None:
            barrier.members.add(waiter[2])
        return PluginReply(None, 1 if made else 0)

    def _barrier_wait(self, req: PluginReq, waiter: Waiter | None) -> PluginReply | None:
        _check_count(req.num, 1, "a barrier's parties")
        found = self.barriers.get(req.name)
        if found is not None and found.broken is not None:
            # Told, it is no party any more: its end, of this error say, does
            # not break the barrier again once the others have reset it.
            if waiter is not None:
                found.members.discard(waiter[2])
            return PluginReply(None, BROKEN, error=found.broken)
        index = 0 if found is None else len(found.waiters)
        if index + 1 < req.num:
            # Refused in the master's own code, or timed out, before anything
            # changes (the barrier is not even made).
            what = (
                f"PluginBarrier({req.name!r}, {req.num}).wait() with {index} of its parties there"
            )
            waiting = self._waiting(req, waiter, what)
            barrier = self._barrier(req)
            if isinstance(waiting, PluginReply):  # past its deadline: as threading's, it breaks
                who = "the master" if waiter is None else f"process {waiter[2]}"
                why = f"a wait of {who} timed out"
                self._break(barrier, why)
                return PluginReply(None, BROKEN, error=why)
            assert waiter is not None  # (_waiting refused the master's)
            barrier.members.add(waiter[2])
            barrier.waiters.append(waiting)
            return None
        barrier = self._barrier(req)
        if waiter is not None:
            barrier.members.add(waiter[2])
        # The last party: the round is over, and every one of it goes on.
        waiters, barrier.waiters = barrier.waiters, []
        for i, w in enumerate(waiters):
            self._reply(w, None, i)
        return PluginReply(None, index)

    def _barrier_cancel(self, req: PluginReq, waiter: Waiter | None) -> PluginReply:
        # Its arrival is taken back, if the round still waits for others.
        barrier = self.barriers.get(req.name)
        return _cancel(barrier.waiters if barrier else [], req, waiter)

    def _barrier_abort(self, req: PluginReq, waiter: Waiter | None) -> PluginReply:
        # (No party for it: a supervisor may abort and reset.)
        who = "the master" if waiter is None else f"process {waiter[2]}"
        self._break(self._barrier(req), f"it was aborted by {who}")
        return PluginReply(None, 0)

    def _barrier_reset(self, req: PluginReq, waiter: Waiter | None) -> PluginReply:
        barrier = self._barrier(req)
        if barrier.broken is None:  # the parties waiting now are told, as threading's are
            self._break(barrier, "it was reset as they waited")
        barrier.broken = None
        return PluginReply(None, 0)

    def _barrier_destroy(self, req: PluginReq, waiter: Waiter | None) -> PluginReply:
        barrier = self.barriers.pop(req.name, None)
        if barrier is not None:
            for w in barrier.waiters:
                self._send(w[0], _failure(w, f"barrier {req.name!r} was destroyed"))
        return PluginReply(None, 0 if barrier is None else 1)

    def _break(self, barrier: _Barrier, why: str) -> None:
        """Break ``barrier`` (until a reset): its waiters, and every later
        wait, are told ``why``; those told are no parties any more (see
        _barrier_wait)."""
        barrier.broken = why
        waiters, barrier.waiters = barrier.waiters, []
        for w in waiters:
            barrier.members.discard(w.user)
            self._send(w.conn, PluginReply(None, BROKEN, error=why, req=w.req))

    # --- a process ended --------------------------------------------------------

    def forget(self, user: int, failure: str | None = None) -> None:
        """Undo what a dead process holds, and drop what it waits for. If it
        failed (``failure`` says how: it raised, or died), a barrier it took
        part in breaks: its other parties would wait for it for ever."""
        for barrier in self.barriers.values():
            left = [w for w in barrier.waiters if w[2] == user]
            barrier.waiters = [w for w in barrier.waiters if w[2] != user]
            if user in barrier.members:
                barrier.members.discard(user)
                why = failure
                if why is None and left:
                    # It returned as a thread of it waited there: that
                    # arrival is gone, and the others would wait for ever.
                    why = f"process {user} ended as a thread of it waited at it"
                if why is not None and barrier.broken is None:
                    self._break(barrier, why)
        for name, mutex in list(self.mutexes.items()):
            mutex.waiters = deque(w for w in mutex.waiters if w[2] != user)
            if mutex.holder == user:
                self._pass_mutex(name, mutex)
        for sem in self.sems.values():
            sem.waiters = deque(w for w in sem.waiters if w[2] != user)
            if sem.protected and user in sem.effect:
                _undo_effect(sem, sem.effect.pop(user))
                self._wake_sem(sem)
        for var in self.vars.values():
            var.waiters = [w for w in var.waiters if w[2] != user]
        for name in list(self.unmade):
            self._take_unmade(name, lambda w: w.user == user)
        for box in self.mboxes.values():
            box.senders = deque(s for s in box.senders if s[0][2] != user)
            box.receivers = deque(w for w in box.receivers if w[2] != user)
            unread = [key for key in box.unread if key[0] == user]
            for key in reversed(unread):  # back at the head, in the order they left it
                box.queue.appendleft(box.unread.pop(key))
            # Handed on first: a receive that waited only while this process
            # ran takes what it left, rather than hear that it ended. (Answering
            # the waits of its end after only takes waiters away: nothing more
            # to hand on.)
            self._deliver(box)
            if any(user in w.alive for w in box.receivers):
                self._sender_ended(box, user)
            if any(user in w.alive for w, _ in box.senders):
                self._receiver_ended(box, user)

    def _sender_ended(self, box: _Mbox, user: int) -> None:
        """Process ``user`` ended: the receives of ``box`` that waited only
        while it (and others, ended since) ran are answered so."""
        receivers: deque[Waiting] = deque()
        for w in box.receivers:
            if user in w.alive:
                w = w._replace(alive=w.alive - {user})
                if not w.alive:
                    self._send(w.conn, PluginReply(None, ENDED, error=SENDERS_ENDED, req=w.req))
                    continue
            receivers.append(w)
        box.receivers = receivers

    def _receiver_ended(self, box: _Mbox, user: int) -> None:
        """Process ``user`` ended: the sends to ``box`` that waited only
        while it (and others, ended since) ran are answered so, their
        messages left out of the box."""
        senders: deque[tuple[Waiting, bytes]] = deque()
        for w, data in box.senders:
            if user in w.alive:
                w = w._replace(alive=w.alive - {user})
                if not w.alive:
                    self._send(w.conn, PluginReply(None, ENDED, error=RECEIVERS_ENDED, req=w.req))
                    continue
            senders.append((w, data))
        box.senders = senders


def _holder(user: int | None) -> str:
    """Who holds a mutex, in words (the master's own calls are user -1)."""
    return "the master" if user == -1 else f"process {user}"


# The largest count a plugin takes (a semaphore's initial count, a box's
# capacity): counts travel to and from the master as msgpack integers, which
# end at 2**64-1, and a semaphore's count must stay below that however often
# it is incremented.
COUNT_MAX = 2**63 - 1

# The operations a request may name (as "_service_op"): the handlers, not
# every method of PluginHost.
_HANDLERS = frozenset(
    f"_{service}_{op}"
    for service, ops in {
        "var": ("create", "set", "get", "wait", "cancel", "delete", "cas", "swap"),
        "mutex": ("lock", "unlock", "cancel", "undo"),
        "sem": ("create", "increment", "decrement", "cancel", "undo", "get", "destroy"),
        "mbox": ("create", "send", "receive", "read", "cancel", "undo", "delete"),
        "barrier": ("create", "wait", "cancel", "abort", "reset", "destroy"),
    }.items()
    for op in ops
)


def _check_count(num: int, low: int, what: str) -> None:
    """Refuse a count the plugins' API would not have sent (it checks them):
    one past COUNT_MAX could pass msgpack's 2**64-1 as it grows."""
    if not low <= num <= COUNT_MAX:
        raise PluginError(f"{what} is {low} to {COUNT_MAX}, not {num}")


def _undo_effect(sem: _Sem, effect: int) -> None:
    """Take a dead process's net ``effect`` back from ``sem``'s count.

    The count cannot go below 0: what it cannot give back (live processes
    took it) becomes a debt, which the undo of a later dead process's
    decrements settles first, as does a live process's increment while its
    own net effect is negative (a unit it took, given back). So once every
    process that touched the count is dead and undone, it is what it would
    have been had they never run, whatever the order they died in."""
    if effect > 0:  # it added: take that back, as far as there is
        taken = min(sem.value, effect)
        sem.value -= taken
        sem.debt += effect - taken
    else:  # it took: give back what no debt claims
        settled = min(sem.debt, -effect)
        sem.debt -= settled
        sem.value += -effect - settled


def _check(req: PluginReq, found: _Var | _Mbox, what: str) -> None:
    """Refuse ``req`` if its values are of another type than those of ``found``."""
    mismatch = _mismatch(req, found, what)
    if mismatch is not None:
        raise EncapTypeMismatch(mismatch)


def _mismatch(req: PluginReq, found: _Var | _Mbox, what: str) -> str | None:
    """Why ``req`` is refused if its values are of another type than those
    of ``found`` (None: they are not)."""
    if not req.fingerprint or req.fingerprint == found.fingerprint:
        return None
    return (
        f"{what} {req.name!r} holds values of type {found.type_name} (fingerprint "
        f"{found.fingerprint}), not {req.type_name} (fingerprint {req.fingerprint}): "
        f"it keeps the type it was created with; use {found.type_name} for it, "
        "or another name for values of another type"
    )


def _mine(w: Waiting, req: PluginReq, waiter: Waiter | None) -> bool:
    """Whether ``w`` waits for request ``req.num`` of ``waiter``'s connection."""
    return waiter is not None and w[0] is waiter[0] and w[1] == req.num


def _cancel(
    waiters: MutableSequence[Waiting], req: PluginReq, waiter: Waiter | None
) -> PluginReply:
    """Drop the waiter of request ``req.num``, if queued; its num says whether it was."""
    for w in waiters:
        if _mine(w, req, waiter):
            waiters.remove(w)
            return PluginReply(None, 1)
    return PluginReply(None, 0)


def _failure(waiter: Waiting, message: str) -> PluginReply:
    return PluginReply(None, FAILED, error=message, req=waiter.req)


def _take(items: MutableSequence[X], taken: Callable[[X], bool]) -> list[X]:
    """Remove from ``items`` those that ``taken`` accepts; return them, in order."""
    out = [item for item in items if taken(item)]
    if out:
        kept = [item for item in items if not taken(item)]
        items.clear()
        items.extend(kept)
    return out
