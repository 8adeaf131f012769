"""A process's exception, told by its classes: ``ProcessFailed.raised`` and
``Raised.is_a`` say what an ``except`` of a class would have caught, though
the exception itself does not travel (nothing is unpickled)."""

from __future__ import annotations

import os
from typing import Any

import pytest
from scenario import run_scenario

import netmcore


class CacheMiss(KeyError):
    """A program's own exception class, under a builtin one."""


def _another_cache_miss() -> type[Exception]:
    class CacheMiss(Exception):  # the same name, another class (another qualified name)
        pass

    return CacheMiss


@netmcore.process
def rc_fails(how: str) -> int:
    if how == "missing file":
        with open("/nonexistent/netmcore-test"):
            pass
    if how == "cache miss":
        raise CacheMiss("k")
    if how == "exit":
        os._exit(3)
    if how == "invalid":
        return "no int"  # type: ignore[return-value]
    return 0


CHECKS: list[tuple[type[BaseException], ...]] = [
    (OSError,),
    (FileNotFoundError,),
    (KeyError,),
    (LookupError,),
    (CacheMiss,),
    (_another_cache_miss(),),
    (ValueError, OSError),
    (Exception,),
]


@netmcore.process
def rc_told(_: int) -> list[Any]:
    """For each way rc_fails ends: which of CHECKS ``raised`` says yes to,
    and the outcome's classes."""
    told: list[Any] = []
    for how in ("missing file", "cache miss", "exit", "invalid"):
        try:
            rc_fails.result(rc_fails.start(how))
        except netmcore.ProcessFailed as failed:
            classes = getattr(failed.outcome, "classes", None)
            told.append([[failed.raised(*types) for types in CHECKS], classes])
    return told


def test_raised_says_what_an_except_of_a_class_would_have_caught() -> None:
    missing, miss, exited, invalid = run_scenario(rc_told, 0)
    assert missing == [
        [True, True, False, False, False, False, True, True],
        ["FileNotFoundError", "OSError", "Exception", "BaseException"],
    ]
    assert miss == [
        [False, False, True, True, True, False, False, True],
        ["test_raised_classes.CacheMiss", "KeyError", "LookupError", "Exception", "BaseException"],
    ]
    # No exception: nothing was raised, whatever the class asked.
    assert exited == [[False] * len(CHECKS), None]
    assert invalid == [[False] * len(CHECKS), None]


@netmcore.process
def rc_item(k: int) -> int:
    if k % 2:
        raise CacheMiss(k)
    return k


@netmcore.process
def rc_map_told(chunksize: int) -> list[Any]:
    """The outcomes of a map's items tell their classes too, in a chunk or not."""
    return [
        [type(outcome).__name__, isinstance(outcome, netmcore.Raised) and outcome.is_a(KeyError)]
        for outcome in rc_item.map_outcomes(range(4), chunksize=chunksize)
    ]


@pytest.mark.parametrize("chunksize", [1, 4])
def test_the_outcomes_of_a_maps_items_tell_their_classes(chunksize: int) -> None:
    assert run_scenario(rc_map_told, chunksize) == [
        ["Success", False],
        ["Raised", True],
        ["Success", False],
        ["Raised", True],
    ]


def test_a_class_that_is_not_an_exception_class_is_refused() -> None:
    raised = netmcore.Raised("KeyError", "'k'", "", ("KeyError", "LookupError"))
    assert raised.is_a(LookupError) and not raised.is_a(OSError)
    with pytest.raises(TypeError, match=r"^is_a\('KeyError'\): 'KeyError' is not an exception cl"):
        raised.is_a("KeyError")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^is_a\(<class 'int'>\): .* like is_a\(OSError, V"):
        raised.is_a(KeyError, int)  # type: ignore[arg-type]
    failed = netmcore.ProcessFailed(netmcore.ProcessId(3), "f", netmcore.Crashed(3, None))
    with pytest.raises(TypeError, match=r"^raised\('KeyError'\): 'KeyError' is not an exc"):
        failed.raised("KeyError")  # type: ignore[arg-type]


def _deep(levels: int, name: str = "Level") -> list[type[Exception]]:
    """A hierarchy ``levels`` deep under ValueError, the deepest last."""
    classes: list[type[Exception]] = [ValueError]
    for level in range(levels):
        classes.append(type(f"{name}{level}", (classes[-1],), {"__module__": __name__}))
    return classes


DEEP = _deep(70)
LONG = type("L" * 600, (LookupError,), {"__module__": __name__})
# Names of 4 UTF-8 bytes a character, as long as a name may travel, and a
# message and a traceback as long as they may: the most an outcome can hold.
WIDE = _deep(12, "\U0001f4a5" * 20_000)


@netmcore.process
def rc_raises(which: str) -> int:
    if which == "deep":
        raise DEEP[-1]("deep")
    if which == "long":
        raise LONG("long")
    raise WIDE[-1]("\U0001f4a5" * 20_000)


@netmcore.process
def rc_told_of(which: str) -> list[Any]:
    try:
        rc_raises.result(rc_raises.start(which))
    except netmcore.ProcessFailed as failed:
        outcome = failed.outcome
        assert isinstance(outcome, netmcore.Raised), outcome
        named = [failed.raised(c) for c in (DEEP[-1], DEEP[34], ValueError, Exception, LONG)]
        return [named, outcome.type_name == outcome.classes[0], len(outcome.classes)]
    return ["no failure"]


def test_a_deep_hierarchy_keeps_its_farthest_classes() -> None:
    """Before, the 64 nearest were kept: ValueError and Exception were not."""
    named, same, count = run_scenario(rc_told_of, "deep")
    assert named == [True, False, True, True, False]  # the middle ones are left out
    assert same and count == 64


def test_a_long_class_name_is_cut_the_same_way_on_both_sides() -> None:
    """Before, the raised class itself was not found by its name cut."""
    named, same, count = run_scenario(rc_told_of, "long")
    assert named == [False, False, False, True, True]
    assert same and count == 4


def test_an_outcome_at_its_largest_still_fits_its_message() -> None:
    """Before, classes of long names took the outcome over a message's
    room: the process was reported as exited with code 70."""
    named, same, count = run_scenario(rc_told_of, "wide")
    assert named == [False, False, True, True, False]
    assert same and count == 15
