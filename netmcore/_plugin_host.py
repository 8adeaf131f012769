"""Plugins served by the master (upstream's Netplex_sharedvar, _mutex, _semaphore
and _mbox): named shared variables, mutexes, semaphores and message boxes.

They live in the master's memory, so they survive any worker's crash, and the
master cleans up after a dead worker: its mutexes are released, a protected
semaphore's count is put back, and its queued requests are dropped. Every
operation is non-blocking in the master: a worker that must wait is a reply
the master sends later, never a blocked loop.

A waiting call left by an exception in the worker (a signal handler's) is
withdrawn by two more operations of its service, both safe to repeat: ``cancel``
drops its waiter if it is still queued, and ``undo`` gives back what its reply
granted if that reply was already sent (a mutex, a count, a message).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, MutableSequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ._errors import EncapTypeMismatch, PluginError
from ._wire import PluginReply, PluginReq

if TYPE_CHECKING:
    from ._master import Conn

Waiter = tuple["Conn", int, int]  # (connection, request id, process id)
Send = Callable[["Conn", PluginReply], bool]


@dataclass
class _Var:
    fingerprint: str
    value: bytes | None = None
    waiters: list[Waiter] = field(default_factory=list)


@dataclass
class _Mutex:
    holder: int | None = None
    waiters: deque[Waiter] = field(default_factory=deque)


@dataclass
class _Sem:
    value: int
    protected: bool
    effect: dict[int, int] = field(default_factory=dict)  # process id -> net change
    waiters: deque[Waiter] = field(default_factory=deque)


@dataclass
class _Mbox:
    fingerprint: str
    capacity: int
    queue: deque[bytes] = field(default_factory=deque)
    senders: deque[tuple[Waiter, bytes]] = field(default_factory=deque)
    receivers: deque[Waiter] = field(default_factory=deque)


class PluginHost:
    """The plugins' state in the master, and their operations."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self.vars: dict[str, _Var] = {}
        self.mutexes: dict[str, _Mutex] = {}
        self.sems: dict[str, _Sem] = {}
        self.mboxes: dict[str, _Mbox] = {}
        # (process id, request id) of the grants given back: an undo repeated
        # after a second interrupt must not give back twice.
        self.undone: set[tuple[int, int]] = set()

    def serve(self, req: PluginReq, waiter: Waiter | None) -> PluginReply | None:
        """Answer ``req`` now, or return None when ``waiter`` is answered later."""
        handler = getattr(self, f"_{req.service}_{req.op}", None)
        if handler is None:
            raise PluginError(f"unknown plugin operation {req.service}.{req.op}")
        reply: PluginReply | None = handler(req, waiter)
        return reply

    def _first_undo(self, req: PluginReq, waiter: Waiter | None) -> bool:
        """Whether this undo (of request ``req.num``) is the first."""
        if waiter is None or (waiter[2], req.num) in self.undone:
            return False
        self.undone.add((waiter[2], req.num))
        return True

    def _reply(self, waiter: Waiter, data: bytes | None = None, num: int = 0) -> bool:
        conn, req, _ = waiter
        return self._send(conn, PluginReply(data, num, req=req))

    # --- shared variables --------------------------------------------------

    def _var(self, req: PluginReq) -> _Var:
        var = self.vars.get(req.name)
        if var is None:
            raise PluginError(f"there is no shared variable {req.name!r}: create it first")
        _check(req, var.fingerprint, "shared variable")
        return var

    def _var_create(self, req: PluginReq, waiter: Waiter | None) -> PluginReply:
        if req.name in self.vars:
            _check(req, self.vars[req.name].fingerprint, "shared variable")
            return PluginReply(None, 0)
        self.vars[req.name] = _Var(req.fingerprint)
        if req.data is not None:
            self._var_set(req, waiter)
        return PluginReply(None, 1)

    def _var_set(self, req: PluginReq, waiter: Waiter | None) -> PluginReply:
        var = self._var(req)
        var.value = req.data
        waiting, var.waiters = var.waiters, []
        for w in waiting:
            self._reply(w, var.value)
        return PluginReply(None, 0)

    def _var_get(self, req: PluginReq, waiter: Waiter | None) -> PluginReply:
        var = self._var(req)
        return PluginReply(var.value, 0 if var.value is None else 1)

    def _var_wait(self, req: PluginReq, waiter: Waiter | None) -> PluginReply | None:
        var = self._var(req)
        if var.value is not None:
            return PluginReply(var.value, 1)
        if waiter is None:
            raise PluginError("the master cannot wait for a shared variable: use get()")
        var.waiters.append(waiter)
        return None

    def _var_cancel(self, req: PluginReq, waiter: Waiter | None) -> PluginReply:
        var = self.vars.get(req.name)
        return _cancel(var.waiters if var else [], req, waiter)

    def _var_delete(self, req: PluginReq, waiter: Waiter | None) -> PluginReply:
        if req.name in self.vars:
            _check(req, self.vars[req.name].fingerprint, "shared variable")
        var = self.vars.pop(req.name, None)
        if var is not None:
            for w in var.waiters:
                self._send(w[0], _failure(w, f"shared variable {req.name!r} was deleted"))
        return PluginReply(None, 0 if var is None else 1)

    # --- mutexes -------------------------------------------------------------

    def _mutex_lock(self, req: PluginReq, waiter: Waiter | None) -> PluginReply | None:
        mutex = self.mutexes.setdefault(req.name, _Mutex())
        user = waiter[2] if waiter is not None else -1
        if mutex.holder is None:
            mutex.holder = user
            return PluginReply(None, 0)
        if mutex.holder == user:
            raise PluginError(f"mutex {req.name!r} is already locked by this process")
        if waiter is None:
            raise PluginError("the master cannot wait for a mutex")
        mutex.waiters.append(waiter)
        return None

    def _mutex_unlock(self, req: PluginReq, waiter: Waiter | None) -> PluginReply:
        mutex = self.mutexes.get(req.name)
        user = waiter[2] if waiter is not None else -1
        if mutex is None or mutex.holder != user:
            holder = (
                "nobody" if mutex is None or mutex.holder is None else f"process {mutex.holder}"
            )
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
        if mutex and waiter and mutex.holder == waiter[2] and self._first_undo(req, waiter):
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
        self.sems[req.name] = _Sem(req.num, req.flag)
        return PluginReply(None, 1)

    def _sem_increment(self, req: PluginReq, waiter: Waiter | None) -> PluginReply:
        sem = self._sem(req)
        sem.value += 1
        self._account(sem, waiter, +1)
        self._wake_sem(sem)
        return PluginReply(None, sem.value)

    def _sem_decrement(self, req: PluginReq, waiter: Waiter | None) -> PluginReply | None:
        sem = self._sem(req)
        if sem.value > 0:
            sem.value -= 1
            self._account(sem, waiter, -1)
            return PluginReply(None, sem.value)
        if not req.flag:  # not waiting: upstream's -1
            return PluginReply(None, -1)
        if waiter is None:
            raise PluginError("the master cannot wait for a semaphore: use decrement(wait=False)")
        sem.waiters.append(waiter)
        return None

    def _sem_cancel(self, req: PluginReq, waiter: Waiter | None) -> PluginReply:
        sem = self.sems.get(req.name)
        return _cancel(sem.waiters if sem else [], req, waiter)

    def _sem_undo(self, req: PluginReq, waiter: Waiter | None) -> PluginReply:
        if req.name in self.sems and self._first_undo(req, waiter):
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

    def _account(self, sem: _Sem, waiter: Waiter | None, change: int) -> None:
        if sem.protected and waiter is not None:
            sem.effect[waiter[2]] = sem.effect.get(waiter[2], 0) + change

    def _wake_sem(self, sem: _Sem) -> None:
        while sem.value > 0 and sem.waiters:
            w = sem.waiters.popleft()
            sem.value -= 1
            if self._reply(w, None, sem.value):
                self._account(sem, w, -1)
            else:
                sem.value += 1

    # --- message boxes ---------------------------------------------------------

    def _mbox(self, req: PluginReq) -> _Mbox:
        box = self.mboxes.get(req.name)
        if box is None:
            raise PluginError(f"there is no message box {req.name!r}: create it first")
        _check(req, box.fingerprint, "message box")
        return box

    def _mbox_create(self, req: PluginReq, waiter: Waiter | None) -> PluginReply:
        # Creating an existing box opens it, at once (upstream blocks here).
        if req.name in self.mboxes:  # opening: the creator's capacity holds
            _check(req, self.mboxes[req.name].fingerprint, "message box")
            return PluginReply(None, 0)
        self.mboxes[req.name] = _Mbox(req.fingerprint, req.num)
        return PluginReply(None, 1)

    def _mbox_send(self, req: PluginReq, waiter: Waiter | None) -> PluginReply | None:
        box = self._mbox(req)
        assert req.data is not None
        if len(box.queue) < box.capacity:
            box.queue.append(req.data)
            self._deliver(box)
            return PluginReply(None, 0)
        if waiter is None:
            raise PluginError(f"message box {req.name!r} is full, and the master cannot wait")
        box.senders.append((waiter, req.data))
        return None

    def _mbox_receive(self, req: PluginReq, waiter: Waiter | None) -> PluginReply | None:
        box = self._mbox(req)
        if waiter is None:
            raise PluginError("the master cannot receive from a message box")
        box.receivers.append(waiter)
        self._deliver(box)
        return None

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
        if box is not None and req.data is not None and self._first_undo(req, waiter):
            box.queue.appendleft(req.data)
            self._deliver(box)
        return PluginReply(None, 0)

    def _deliver(self, box: _Mbox) -> None:
        while True:
            while box.senders and len(box.queue) < box.capacity:
                w, data = box.senders.popleft()
                if self._reply(w):  # the sender's send is done
                    box.queue.append(data)
            if not (box.queue and box.receivers):
                return
            w = box.receivers.popleft()
            if self._reply(w, box.queue[0]):
                box.queue.popleft()

    # --- a process ended --------------------------------------------------------

    def forget(self, user: int) -> None:
        """Undo what a dead process holds, and drop what it waits for."""
        for name, mutex in list(self.mutexes.items()):
            mutex.waiters = deque(w for w in mutex.waiters if w[2] != user)
            if mutex.holder == user:
                self._pass_mutex(name, mutex)
        for sem in self.sems.values():
            sem.waiters = deque(w for w in sem.waiters if w[2] != user)
            if sem.protected and user in sem.effect:
                sem.value = max(0, sem.value - sem.effect.pop(user))
                self._wake_sem(sem)
        for var in self.vars.values():
            var.waiters = [w for w in var.waiters if w[2] != user]
        for box in self.mboxes.values():
            box.senders = deque(s for s in box.senders if s[0][2] != user)
            box.receivers = deque(w for w in box.receivers if w[2] != user)
            self._deliver(box)
        self.undone = {u for u in self.undone if u[0] != user}


def _check(req: PluginReq, fingerprint: str, what: str) -> None:
    if req.fingerprint and req.fingerprint != fingerprint:
        raise EncapTypeMismatch(
            f"{what} {req.name!r} holds values of another type (fingerprint "
            f"{fingerprint}, not {req.fingerprint})"
        )


def _mine(w: Waiter, req: PluginReq, waiter: Waiter | None) -> bool:
    """Whether ``w`` waits for request ``req.num`` of ``waiter``'s connection."""
    return waiter is not None and w[0] is waiter[0] and w[1] == req.num


def _cancel(waiters: MutableSequence[Waiter], req: PluginReq, waiter: Waiter | None) -> PluginReply:
    """Drop the waiter of request ``req.num``, if queued; its num says whether it was."""
    for w in waiters:
        if _mine(w, req, waiter):
            waiters.remove(w)
            return PluginReply(None, 1)
    return PluginReply(None, 0)


def _failure(waiter: Waiter, message: str) -> PluginReply:
    return PluginReply(None, -2, error=message, req=waiter[1])
