"""A pipeline's failed item says how it failed as a process's outcome does:
``PipelineError`` and ``ItemFailure`` carry an ``outcome`` (what the item
raised, with its traceback and classes; a result refused; how its worker
ended) and ``raised(...)``, as ``ProcessFailed`` does."""

from __future__ import annotations

import os
import signal
from typing import Any

import msgspec
from scenario import run_scenario

import netmcore
from netmcore import _pipeline
from netmcore._wire import Raised as WireRaised


class CacheMiss(KeyError):
    """A program's own exception class, under a builtin one."""


def look_up(k: int) -> int:
    if k % 4 == 3:
        raise CacheMiss(f"k{k}")
    return k


@netmcore.process
def cached(k: int) -> int:
    return look_up(k)


def told(failure: netmcore.ItemFailure | netmcore.PipelineError) -> list[Any]:
    """What a failure says, as plain values a process can return."""
    outcome = failure.outcome
    return [
        failure.index,
        failure.stage,
        failure.cause,
        type(outcome).__name__,
        failure.raised(KeyError),
        failure.raised(LookupError, OSError),
        failure.raised(CacheMiss),
        failure.raised(ValueError),
        list(outcome.classes) if isinstance(outcome, netmcore.Raised) else None,
        outcome.traceback if isinstance(outcome, netmcore.Raised) else None,
    ]


@netmcore.process
def skipping(_: int) -> list[Any]:
    run = netmcore.Pipeline(cached, workers=2).run(range(8), on_error="skip")
    # (two workers: the failures come in the order they happened)
    return [list(run), sorted(told(f) for f in run.failures)]


def test_a_skipped_item_that_raised_tells_its_classes_and_traceback() -> None:
    results, failures = run_scenario(skipping, 0)
    assert results == [0, 1, 2, 4, 5, 6]
    assert [f[:3] for f in failures] == [
        [3, "cached", f"{__name__}.CacheMiss: 'k3'"],
        [7, "cached", f"{__name__}.CacheMiss: 'k7'"],
    ]
    for failure in failures:
        kind, key, lookup, own, value, classes, traceback = failure[3:]
        assert (kind, key, lookup, own, value) == ("Raised", True, True, True, False)
        assert classes[:3] == [f"{__name__}.CacheMiss", "KeyError", "LookupError"]
        # The user's frames, down to the line that raised; none of netmcore's.
        assert "in look_up" in traceback
        assert 'raise CacheMiss(f"k{k}")' in traceback
        assert "_pipeline.py" not in traceback


@netmcore.process
def stopping(_: int) -> list[Any]:
    try:
        list(netmcore.Pipeline(cached).then(cached_twice, workers=2).run(range(8)))
    except netmcore.PipelineError as exc:
        return [told(exc), str(exc), getattr(exc, "__notes__", [])]
    return []


@netmcore.process
def cached_twice(k: int) -> int:
    return k * 2


def test_the_error_of_a_stopped_pipeline_carries_the_outcome_and_the_traceback_as_a_note() -> None:
    failure, text, notes = run_scenario(stopping, 0)
    assert failure[:8] == [
        3,
        "cached",
        f"{__name__}.CacheMiss: 'k3'",
        "Raised",
        True,
        True,
        True,
        False,
    ]
    assert text == f"item 3 failed in stage cached: {__name__}.CacheMiss: 'k3'"
    [note] = notes
    assert note.startswith(_pipeline.ITEM_TRACEBACK + "\n")
    assert "in look_up" in note and note.rstrip().endswith("CacheMiss: 'k3'")


@netmcore.process
def dies_on_2(k: int) -> int:
    if k == 2:
        os.kill(os.getpid(), signal.SIGKILL)
    return k


@netmcore.process
def killed(policy: str) -> list[Any]:
    run = netmcore.Pipeline(dies_on_2).run(range(4), on_error=policy, retries=0)  # type: ignore[arg-type]
    try:
        return [list(run), [[*told(f)[:8], repr(f.outcome)] for f in run.failures]]
    except netmcore.PipelineError as exc:
        return [None, [[*told(exc)[:8], repr(exc.outcome)]]]


def test_an_item_whose_worker_died_has_the_workers_end_as_its_outcome() -> None:
    died = "its worker died (killed by SIGKILL)"
    crashed = repr(netmcore.Crashed(None, int(signal.SIGKILL)))
    failure = [2, "dies_on_2", died, "Crashed", False, False, False, False, crashed]
    results, failures = run_scenario(killed, "skip")
    assert (results, failures) == ([0, 1, 3], [failure])
    assert run_scenario(killed, "stop") == [None, [failure]]


@netmcore.process
def big(k: int) -> bytes:
    return b"y" * 10_000 if k == 1 else b""


@netmcore.process
def refused(_: int) -> list[Any]:
    run = netmcore.Pipeline(big).run(range(3), on_error="skip", item_size=1024)
    return [len(list(run)), [[f.index, repr(f.outcome), f.raised(Exception)] for f in run.failures]]


def test_a_result_over_item_size_is_an_invalid_result() -> None:
    why = (
        "its result is 10003 bytes encoded, more than item_size=1024: give run() a larger item_size"
    )
    got = run_scenario(refused, 0)
    assert got == [2, [[1, repr(netmcore.InvalidResult("$", why)), False]]]


@netmcore.process
def loud(k: int) -> int:
    if k == 1:
        raise CacheMiss("é" * 300_000)  # 600 kB encoded: far over a message
    return k


@netmcore.process
def clipped(_: int) -> list[Any]:
    run = netmcore.Pipeline(loud).run(range(3), on_error="skip")
    results = list(run)
    [failure] = run.failures
    outcome = failure.outcome
    assert isinstance(outcome, netmcore.Raised)
    return [
        results,
        failure.raised(KeyError),
        "characters cut" in outcome.message,
        "characters cut" in outcome.traceback,
        "in loud" in outcome.traceback,
    ]


def test_a_failure_too_large_for_a_message_is_clipped_and_still_told_by_its_classes() -> None:
    """Its head and tail kept: the traceback's first frames, and its last line."""
    assert run_scenario(clipped, 0) == [[0, 2], True, True, True, True]


def test_fitting_cuts_the_traceback_then_the_message_then_the_classes_keeping_its_own() -> None:
    # Names of 200 four-byte characters: 64 of them are 51 kB, over any room.
    classes = tuple(f"{n:03}" + "\U0001f600" * 197 for n in range(64))
    huge = WireRaised(classes[0], "m" * 50_000, "t" * 50_000, classes)
    fitted = _pipeline._fitted(huge, 4096)
    room = _pipeline._slot_size(4096) - _pipeline.MESSAGE_HEAD - _pipeline.ENTRY_HEAD
    assert len(msgspec.msgpack.encode(fitted)) <= room
    assert (fitted.traceback, fitted.message) == ("", "")
    # Its own class, and the farthest (the user's base classes, Exception), kept.
    assert fitted.classes[0] == classes[0] and fitted.classes[-1] == classes[-1]
    assert 2 <= len(fitted.classes) < 64
    small = WireRaised("KeyError", "'k'", "Traceback ...", ("KeyError", "LookupError"))
    assert _pipeline._fitted(small, 4096) is small
