"""as_completed: the processes of some ids, yielded as they end, the first
ended first (``ProcessDef.as_completed``, of one process type, and
``netmcore.as_completed``, of any).

Each id is looked up at the call, as a join would look it up, so that a bad
one is an error of the call; those that had not ended then are watched
(see _watches) from the first ``next()`` on, and the watch goes as the
iteration ends, however it ends. Nothing is joined.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Collection, Iterable, Iterator
from typing import Any, TypeVar, overload

from . import _client, _posix, _wire
from ._ids import ProcessId, ResId
from ._pthread import check_timeout
from ._wire import failed_of_its_own

P = TypeVar("P", bound=ProcessId[Any])

# What the call is named in its errors.
AS_COMPLETED = "as_completed"


# The ids of processes of several types in one list display ([a, b], a a
# ProcessId[int] and b a ProcessId[str]) are joined by mypy into an object,
# which P's bound refuses: the second signature takes those, as ids of any
# type. mypy judges it never matched, since the first takes each of its
# argument types; it does match such a display (tests/typing/good.py).
@overload
def as_completed(pids: Iterable[P], *, timeout: float | None = None) -> Iterator[P]: ...
@overload
def as_completed(  # type: ignore[overload-cannot-match]
    pids: Iterable[ProcessId[Any]], *, timeout: float | None = None
) -> Iterator[ProcessId[Any]]: ...
def as_completed(
    pids: Iterable[ProcessId[Any]], *, timeout: float | None = None
) -> Iterator[ProcessId[Any]]:
    """Yield each of ``pids``, ids of processes of any types, once its
    process has ended, the first ended first, as
    ``concurrent.futures.as_completed`` yields futures of any functions.
    :meth:`ProcessDef.as_completed` does it for the processes of one type.
    A join of it through its own type then returns at once. Nothing is
    joined here: join each one as it comes. A process that another caller
    joined meanwhile counts as ended (its join then raises UnknownProcess),
    and so does one whose type's join point is released meanwhile (its join
    then raises NoResource), as a cancelled future does. In a worker only:
    the master never waits.

    Parameters
    ----------
    pids : iterable of ProcessId
        Ids that ``start`` returned and no join has taken yet. One given
        twice is yielded once. The ids yielded are the objects given.
    timeout : float, optional
        Seconds from the call (None or ``math.inf``: no limit).

    Raises
    ------
    UnknownProcess, NoResource
        At the call, before anything is yielded, for an id that a join of
        its own type would refuse (never started, joined already, its type's
        join point released).
    TypeError
        At the call, for ``pids`` that is no iterable of ProcessIds.
    TimeoutError
        From the iteration, once ``timeout`` seconds have passed since the
        call and some processes have not ended. None of those is joined:
        join them, or wait for them again.
    ContextError
        At the call, in the master's own code, which never waits.
    """
    return through(None, pids, timeout)


def through(
    join_point: ResId | None, pids: Iterable[P], timeout: float | None, what: str = AS_COMPLETED
) -> Iterator[P]:
    """as_completed (``what`` names the call): ``pids`` yielded as their
    processes end, each looked up as a join through ``join_point`` would
    look it up (None: a join through its own type's, whichever it is)."""
    _client.waiting_link(what)  # in a worker, even for no pids (as map)
    left: dict[int, P] = {}
    for pid in _iterable(pids):
        if not isinstance(pid, ProcessId):
            raise TypeError(
                f"as_completed takes the ProcessIds that start() returned, and {pid!r} "
                f"is a {type(pid).__name__}: pass only ProcessIds (an id kept as its "
                "number n is ProcessId(n))"
            )
        left.setdefault(pid.n, pid)  # each yielded once, as concurrent.futures does
    timeout = check_timeout(timeout)
    deadline = None if timeout is None else time.monotonic() + timeout
    # Looked up now, so that a bad id is an error of this call; watched
    # from the first next() on, in the iteration, which ends the watch.
    ended = [n for ids in _chunks(list(left)) for n in _client.watch(what, join_point, ids)]
    return _iterate(join_point, left, ended, deadline, timeout)


def _iterable(pids: Iterable[P]) -> Iterator[P]:
    """An iterator of ``pids``; a TypeError that says what to pass if it
    is none (a ProcessId alone, say)."""
    try:
        return iter(pids)
    except TypeError:
        raise TypeError(
            f"as_completed takes an iterable of the ProcessIds that start() returned, and "
            f"{pids!r} is a {type(pids).__name__}, not iterable: pass them in a list, as in "
            "as_completed([pid])"
        ) from None


def _iterate(
    join_point: ResId | None,
    left: dict[int, P],
    ended: list[int],
    deadline: float | None,
    timeout: float | None,
) -> Iterator[P]:
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
