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
