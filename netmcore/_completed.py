"""as_completed: the processes of some ids, yielded as they end, the first
ended first (``ProcessDef.as_completed``).

Each id is looked up at the call, as a join would look it up, so that a bad
one is an error of the call; those that had not ended then are watched
(see _watches) from the first ``next()`` on, and the watch goes as the
iteration ends, however it ends. Nothing is joined.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Collection, Iterable, Iterator
from typing import TypeVar

from . import _client, _posix, _wire
from ._ids import ProcessId, ResId
from ._pthread import check_timeout
from ._wire import failed_of_its_own

Out = TypeVar("Out")

# What the call is named in its errors.
AS_COMPLETED = "as_completed"


def through(
    join_point: ResId, pids: Iterable[ProcessId[Out]], timeout: float | None
) -> Iterator[ProcessId[Out]]:
    """``ProcessDef.as_completed``: ``pids`` yielded as their processes end,
    each looked up as a join through ``join_point`` would look it up."""
    _client.waiting_link(AS_COMPLETED)  # in a worker, even for no pids (as map)
    left: dict[int, ProcessId[Out]] = {}
    for pid in pids:
        if not isinstance(pid, ProcessId):
            raise TypeError(
                f"as_completed takes the ProcessIds that start() returned, and {pid!r} "
                f"is a {type(pid).__name__}"
            )
        left.setdefault(pid.n, pid)  # each yielded once, as concurrent.futures does
    timeout = check_timeout(timeout)
    deadline = None if timeout is None else time.monotonic() + timeout
    # Looked up now, so that a bad id is an error of this call; watched
    # from the first next() on, in the iteration, which ends the watch.
    ended = [n for ids in _chunks(list(left)) for n in _client.watch(AS_COMPLETED, join_point, ids)]
    return _iterate(join_point, left, ended, deadline, timeout)


def _iterate(
    join_point: ResId,
    left: dict[int, ProcessId[Out]],
    ended: list[int],
    deadline: float | None,
    timeout: float | None,
) -> Iterator[ProcessId[Out]]:
    """The iteration of :func:`through`: ``left`` are the
    processes not yet yielded, ``ended`` the ids of those known to have
    ended."""
    total = len(left)
    watch = 0
    try:
        # No `continue` in this loop, nor in map's: see test_backedges.
        while True:
            for n in ended:
                pid = left.pop(n, None)
                if pid is not None:
                    yield pid
            if not left:
                return
            if not watch:
                watch = _client.new_watch()
                ended = [
                    n
                    for ids in _chunks(list(left))
                    for n in _client.watch(AS_COMPLETED, join_point, ids, watch)
                ]
            else:
                got = _client.wait_watch(AS_COMPLETED, watch, deadline)
                if got is None:
                    raise TimeoutError(
                        f"as_completed timed out after {timeout} s: {len(left)} of its {total} "
                        f"processes had not ended (ids {_some(left)}). None of them is joined: "
                        "join them, or wait for them again"
                    )
                ended = got
    finally:
        # Closed through a signal handler's exception, in a loop here, as
        # map's watch is (see _process._mapped).
        held: BaseException | None = None
        tries = 0

        def close() -> None:  # (made here, no call: no handler runs)
            nonlocal watch
            _client.close_watch(watch)
            watch = 0  # done, even if an exception comes as the block ends

        while watch:
            try:
                while watch:
                    try:
                        _posix.with_signals_blocked(_posix.ASYNC_SIGNALS, close)
                    except BaseException as exc:
                        tries += 1
                        if failed_of_its_own(exc, tries):
                            raise
                        if held is None:
                            held = exc
                    else:  # (for 3.12: see test_backedges)
                        pass
            except BaseException as exc:  # as the loop within jumped back (see _mapped)
                tries += 1
                if failed_of_its_own(exc, tries):
                    raise
                if held is None:
                    held = exc
            else:  # (for 3.12: see test_backedges)
                pass
        if held is not None:
            raise held


def _chunks(ids: list[int]) -> Iterator[list[int]]:
    """``ids`` in pieces that one WatchReq takes."""
    for i in range(0, len(ids), _wire.PIDS_MAX):
        yield ids[i : i + _wire.PIDS_MAX]


def _some(ids: Collection[int], shown: int = 10) -> str:
    """Up to ``shown`` of ``ids``, and how many more."""
    text = ", ".join(map(str, itertools.islice(ids, shown)))
    return text if len(ids) <= shown else f"{text}, ... ({len(ids) - shown} more)"
