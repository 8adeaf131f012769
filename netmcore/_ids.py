"""Resource and process ids: small, immutable, hashable and serializable.

Ids are the library's own sequential numbers, never OS pids. The master is the
only process that hands them out, so they are unique for the life of the
program, across several ``run`` calls too (as upstream's are).
"""

from __future__ import annotations

import reprlib
from collections.abc import Iterable
from typing import Any, Generic, TypeVar

import msgspec

OutT = TypeVar("OutT")


class ResId(msgspec.Struct, frozen=True, array_like=True):
    """The id of a resource: a fork point, a join point, or a kernel object."""

    n: int

    def __post_init__(self) -> None:
        _check_n(self.n, "ResId")

    def __repr__(self) -> str:
        return f"ResId({self.n})"


class ProcessId(msgspec.Struct, Generic[OutT], frozen=True, array_like=True):
    """The id of a started process.

    The type parameter is the result type of the process, so that mypy rejects
    joining a process through the join point of another process type.
    """

    n: int

    def __post_init__(self) -> None:
        _check_n(self.n, "ProcessId")

    def __repr__(self) -> str:
        return f"ProcessId({self.n})"


def _check_n(n: object, kind: str) -> None:
    # A Struct does not check its fields when built by hand, and an id whose n
    # is not an int would reach the master as a message it cannot read.
    if type(n) is not int:
        raise TypeError(
            f"{kind}(n) needs an int, not {type(n).__name__} ({n!r}): "
            f"pass int(...), for example {kind}(int(text))"
        )
    if not -ID_LIMIT <= n < ID_LIMIT:  # it travels as a 64-bit int
        raise ValueError(
            f"{kind}({n}) is not an id netmcore hands out: ids are 64-bit ints; "
            "pass the id that start() (or a resource call) returned"
        )


ID_LIMIT = 1 << 63


_res_ids = [0]
_process_ids = [0]


def next_res_id() -> ResId:
    n = _res_ids[0]
    _res_ids[0] = n + 1
    return ResId(n)


def handed_out(n: int) -> bool:
    """Whether ``n`` is an id a resource (or a process type's point) got,
    live or not: for the error of one that never was."""
    return 0 <= n < _res_ids[0]


def next_process_id() -> int:
    n = _process_ids[0]
    _process_ids[0] = n + 1
    return n


def give_back_process_id(n: int) -> None:
    """Undo :func:`next_process_id` for a start that failed, so that ids stay
    consecutive (only if no id was handed out since)."""
    if _process_ids[0] == n + 1:
        _process_ids[0] = n


def peek_process_id() -> int:
    """The id the next process will get."""
    return _process_ids[0]


def senders_of(while_alive: object) -> tuple[ProcessId[Any], ...]:
    """The processes ``while_alive`` names (a receive's, which waits only
    while one of them runs), each once; TypeError for anything but a
    ProcessId or an iterable of them."""
    if isinstance(while_alive, ProcessId):
        return (while_alive,)
    fix = "pass the ProcessId that start() returned, or a list of them"
    if isinstance(while_alive, (str, bytes)) or not isinstance(while_alive, Iterable):
        raise TypeError(
            f"while_alive must be a ProcessId or an iterable of them, not "
            f"{type(while_alive).__name__} ({reprlib.repr(while_alive)}): {fix}"
        )
    pids: dict[int, ProcessId[Any]] = {}
    for pid in while_alive:
        if not isinstance(pid, ProcessId):
            raise TypeError(
                f"while_alive holds {reprlib.repr(pid)}, a {type(pid).__name__}, where "
                f"each item must be a ProcessId: {fix}"
            )
        pids.setdefault(pid.n, pid)
    return tuple(pids.values())
