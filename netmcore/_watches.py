"""Watches: processes a worker waits on, whichever ends first
(``ProcessDef.as_completed``, ``netmcore.as_completed`` and
``ProcessDef.map``), kept by the master.

A watch belongs to one link and has a number its worker chose. Processes
join it as they are started (a StartReq's ``watch``) or named (a WatchReq).
The master notes each end in the watches of that process, and answers the
watch's waiting WaitReq, if one waits, with every process of it that ended
since its last answer. A wait names no process, so the cost is a constant
per process, however many are watched (a wait that named them all cost the
master their number at each answer).

A watch's processes are of one process type, or (``netmcore.as_completed``'s)
of any: each of those is looked up by its own record as it is named, which
costs the same. A release of a join point fails the waits of its type's
watches; the watches of any type hear of its processes still running as
ended (nobody can join them), in the release's pass over the table.

This is bookkeeping only: the master sends what it says to send.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from . import _wire

Key = tuple[Any, int]  # (the master's Conn of the link, the watch's number)


@dataclass(eq=False)
class Watch:
    # The process type (_registry.Definition) of its processes; None: of any.
    definition: Any
    left: set[int] = field(default_factory=set)  # watched, not known to have ended
    ended: list[int] = field(default_factory=list)  # ended, not yet told
    waiter: int | None = None  # the request id of the WaitReq that waits, if one does
    # The processes started into it (by map), until they are known joined:
    # those its close may forget. Swept of the joined ones as it doubles.
    started: set[int] = field(default_factory=set)
    sweep_at: int = 64


def take_ended(watch: Watch) -> list[int]:
    """The processes of ``watch`` that ended since its last answer, at
    most PIDS_MAX of them, which one Ready takes (the rest answer its next
    wait, at once): those of a watch nobody waited on for a while may be
    more than a message holds."""
    most = _wire.PIDS_MAX
    ended, watch.ended = watch.ended[:most], watch.ended[most:]
    return ended


class Watches:
    """Every link's watches, and which watches each process is in."""

    def __init__(self) -> None:
        self.by_key: dict[Key, Watch] = {}
        self.of_link: dict[Any, set[int]] = {}  # conn -> its watches' numbers
        self.of_process: dict[int, list[Key]] = {}  # the watches it is left in
        self.waiting: dict[tuple[Any, int], Key] = {}  # (conn, request id) -> its watch

    def get(self, key: Key, definition: Any) -> Watch:
        """The watch ``key``, of processes of ``definition`` (None: of
        any), made if it is new; ValueError if it is of processes of another
        type (no API sends that)."""
        watch = self.by_key.get(key)
        if watch is None:
            watch = self.by_key[key] = Watch(definition)
            self.of_link.setdefault(key[0], set()).add(key[1])
        elif watch.definition is not definition:
            raise ValueError(f"watch {key[1]} is of processes of another type")
        return watch

    def add(self, key: Key, watch: Watch, n: int, ended: bool) -> None:
        """Put process ``n`` in ``watch``: told at once if it has ``ended``."""
        if ended:
            watch.ended.append(n)
        elif n not in watch.left:
            watch.left.add(n)
            self.of_process.setdefault(n, []).append(key)

    def process_ended(self, n: int) -> list[Key]:
        """Note the end of process ``n``; the watches to answer now."""
        if not self.of_process:  # (as a rule: no call past this on a fan-out's path)
            return []
        answer = []
        for key in self.of_process.pop(n, ()):
            watch = self.by_key[key]  # (a watch that goes takes itself off its lists)
            watch.left.discard(n)
            watch.ended.append(n)
            if watch.waiter is not None:
                answer.append(key)
        return answer

    def wait(self, key: Key, watch: Watch, req: int) -> None:
        watch.waiter = req
        self.waiting[(key[0], req)] = key

    def answer(self, key: Key) -> tuple[int, list[int]]:
        """The request id of the wait of ``key`` and what ended: it waits no more."""
        watch = self.by_key[key]
        req = watch.waiter
        assert req is not None
        watch.waiter = None
        del self.waiting[(key[0], req)]
        return req, take_ended(watch)

    def cancel(self, conn: Any, req: int) -> bool:
        """Withdraw the wait ``req`` of ``conn``, if it waits; whether it did."""
        key = self.waiting.pop((conn, req), None)
        if key is None:
            return False
        self.by_key[key].waiter = None
        return True

    def drop(self, key: Key) -> Watch | None:
        """The watch ``key`` goes, off every list: the watch, if there was one."""
        watch = self.by_key.pop(key, None)
        if watch is None:
            return None
        numbers = self.of_link[key[0]]
        numbers.discard(key[1])
        if not numbers:
            del self.of_link[key[0]]
        if watch.waiter is not None:
            del self.waiting[(key[0], watch.waiter)]
        for n in watch.left:
            keys = self.of_process[n]
            keys.remove(key)
            if not keys:
                del self.of_process[n]
        return watch

    def drop_link(self, conn: Any) -> list[Watch]:
        """Drop every watch of ``conn``; return them."""
        if conn not in self.of_link:
            return []
        dropped = [self.drop((conn, number)) for number in list(self.of_link.get(conn, ()))]
        return [watch for watch in dropped if watch is not None]

    def release(self, definition: Any) -> list[tuple[Any, int]]:
        """The join point of ``definition`` is released: the waits on its
        watches, as (conn, request id), which wait no more (the master
        answers them, and any later one, with why). The watches of any type
        are left: the master tells them of its processes as ended."""
        waits = []
        for key, watch in self.by_key.items():
            if watch.definition is definition and watch.waiter is not None:
                waits.append((key[0], watch.waiter))
                del self.waiting[(key[0], watch.waiter)]
                watch.waiter = None
        return waits
