"""Process definitions: the fork point and join point of each process type.

Definitions are made in the master before ``run`` (workers are copies of the
master, so each inherits the table). The master's copy is the authority on what
is released.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

from . import _context
from ._encap import Encap
from ._errors import ContextError, NoResource
from ._ids import ResId, handed_out, next_res_id


@dataclass(frozen=True)
class Definition:
    fork_point: ResId
    join_point: ResId
    function: Callable[[Encap], Encap]
    name: str
    # The master's objects that a run of it takes references to first: a
    # spare takes them ahead (see _worker._warm_up), so that the copy-on-write
    # faults of their pages are not on the way of the result.
    used: tuple[object, ...] = ()


by_fork_point: dict[int, Definition] = {}
by_join_point: dict[int, Definition] = {}

# A typed process type that nothing can start (it is in neither table), and an
# argument for it: spares run it once so that the path of an assignment is
# warm when one comes (see _worker._warm_up). _process, where typed process
# functions are made, sets it.
rehearsal: tuple[Definition, Encap] | None = None


def def_process(f: Callable[[Encap], Encap], *, name: str | None = None) -> tuple[ResId, ResId]:
    """Define a process type that runs ``f``; return its (fork point, join point).

    Parameters
    ----------
    f :
        Called in a fresh worker with the argument given to :func:`start`; its
        return value is what :func:`join` returns.
    name :
        How logs and the admin tool name the process type (default: f's name).

    Raises
    ------
    ContextError
        When called in a worker, or while ``run`` is active: process types must
        be defined in the master before it starts, for example at module level.
    """
    label = name or str(getattr(f, "__qualname__", repr(f)))
    return define(f, label, objects_used_by(f))


def define(
    f: Callable[[Encap], Encap], label: str, used: tuple[object, ...]
) -> tuple[ResId, ResId]:
    """:func:`def_process`, with the objects a run of ``f`` uses (see Definition)."""
    if _context.current.role != "none":
        raise ContextError(
            f"process type {label} is defined after the master started "
            f"(this is {_context.current.role} context): define process types "
            "at module level, before netmcore.run() or netmcore.startup()"
        )
    definition = Definition(next_res_id(), next_res_id(), f, label, (label, *used))
    by_fork_point[definition.fork_point.n] = definition
    by_join_point[definition.join_point.n] = definition
    return definition.fork_point, definition.join_point


def objects_used_by(*roots: object) -> tuple[object, ...]:
    """``roots``, and for each function among them its code and what its
    closure holds: a wrapper's function, and that one's code."""
    used: list[object] = []
    for root in roots:
        used.append(root)
        if inspect.isfunction(root):
            used.append(root.__code__)
            for cell in root.__closure__ or ():
                try:
                    held = cell.cell_contents
                except ValueError:  # an empty cell
                    continue
                used.append(held)
                if inspect.isfunction(held):
                    used.append(held.__code__)
    return tuple(used)


def fork_point(n: int) -> Definition:
    try:
        return by_fork_point[n]
    except KeyError:
        raise NoResource(ResId(n), _not_a_point(n, "fork")) from None


def join_point(n: int) -> Definition:
    try:
        return by_join_point[n]
    except KeyError:
        raise NoResource(ResId(n), _not_a_point(n, "join")) from None


def _not_a_point(n: int, which: str) -> str:
    """Why ``n`` is no process type's ``which`` point, for NoResource."""
    if not handed_out(n):
        return (
            f"not a {which} point: no resource was ever made with this id; pass a process "
            f"type's {which}_point"
        )
    return (
        f"not a {which} point (another resource's id, or a released one); pass a process "
        f"type's {which}_point"
    )


def is_point(n: int) -> bool:
    """Whether ``n`` is a live fork or join point."""
    return n in by_fork_point or n in by_join_point


def release_point(n: int) -> tuple[Definition, bool] | None:
    """Release fork or join point ``n``: (its definition, whether it was the join
    point), or None if ``n`` is neither (or was released already)."""
    definition = by_fork_point.pop(n, None)
    if definition is not None:
        return definition, False
    definition = by_join_point.pop(n, None)
    return None if definition is None else (definition, True)
