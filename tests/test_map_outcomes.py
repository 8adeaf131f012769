"""ProcessDef.map_outcomes: a map that yields how each item went, in order,
and goes on past the items that fail, as a pool's ``imap`` loop that
catches an item's exception does."""

from __future__ import annotations

import os
import re
import signal
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from scenario import run_counting_unjoined, run_scenario

import netmcore


@netmcore.process
def mo_item(item: tuple[int, int]) -> int:
    """Write k to the pipe (which items ran, in which process), then:
    raise for a negative, return an invalid result for 50, exit with
    code 7 for 100, die (os._exit, the whole process) for 1000; else k*k."""
    k, fd = item
    os.write(fd, f"{k}:{os.getpid()},".encode())
    if k < 0:
        raise ValueError(f"no square of {k}")
    if k == 50:
        return "fifty"  # type: ignore[return-value]
    if k == 100:
        sys.exit(7)
    if k == 1000:
        os._exit(3)
    return k * k


@netmcore.process
def map_outcomes_of(ks_chunksize_fd: tuple[list[int], int, int]) -> list[Any]:
    """map_outcomes of mo_item over ``ks``: each outcome, told as a plain
    value."""
    ks, chunksize, fd = ks_chunksize_fd
    told: list[Any] = []
    for outcome in mo_item.map_outcomes([(k, fd) for k in ks], chunksize=chunksize):
        match outcome:
            case netmcore.Success(value):
                told.append(value)
            case netmcore.Raised(type_name, message, traceback):
                told.append(["raised", type_name, message, "mo_item" in traceback])
            case netmcore.InvalidResult(path, message):
                told.append(["invalid", path, "'fifty' does not match int" in message])
            case netmcore.Crashed(exitcode, signum):
                told.append(["crashed", exitcode, signum])
    return told


def outcomes_and_runs(
    ks: list[int], chunksize: int
) -> tuple[list[Any], list[int], list[int], list[int]]:
    """What map_outcomes_of told of ``ks``; the items that ran, in the order
    they ran, and the process of each of ``ks`` that ran; and the processes
    left to join at the end of the run."""
    r, w = os.pipe()
    try:
        told, unjoined = run_counting_unjoined(map_outcomes_of, (ks, chunksize, w))
    finally:
        os.close(w)
        with os.fdopen(r) as f:  # every process has ended: all they wrote is there
            runs = [tuple(map(int, run.split(":"))) for run in f.read().split(",") if run]
    processes = dict(runs)
    return told, [k for k, _ in runs], [processes[k] for k in ks if k in processes], unjoined


RAISED = ["raised", "ValueError", "no square of -2", True]
INVALID = ["invalid", "$", True]
EXITED = ["crashed", 7, None]


@pytest.mark.parametrize("chunksize", [1, 3])
def test_each_items_outcome_comes_in_its_place_and_the_map_goes_on(chunksize: int) -> None:
    """The items after one that failed run, in its chunk too, and nothing
    is left to join. (map would stop at the -2.)"""
    ks = [1, -2, 3, 50, 4, 100, 5]
    told, ran, where, unjoined = outcomes_and_runs(ks, chunksize)
    assert told == [1, RAISED, 9, INVALID, 16, EXITED, 25]
    assert sorted(ran) == sorted(ks)
    assert unjoined == []
    if chunksize == 3:  # the items of a chunk ran in one process, in turn
        assert where[0] == where[1] == where[2] != where[3] == where[4] == where[5] != where[6]
        assert ran.index(-2) < ran.index(3) and ran.index(50) < ran.index(4) < ran.index(100)
    else:
        assert len(set(where)) == len(ks)


@pytest.mark.parametrize("chunksize", [1, 2])
def test_a_process_that_dies_is_the_outcome_of_each_of_its_items(chunksize: int) -> None:
    """Its items' results die with it: with one item a process, only the
    item that killed it; with a chunk, each of the chunk's items."""
    ks = [1, 1000, 2, 3]
    told, ran, _, unjoined = outcomes_and_runs(ks, chunksize)
    died = ["crashed", 3, None]
    assert told == ([1, died, 4, 9] if chunksize == 1 else [died, died, 4, 9])
    assert sorted(ran) == sorted(ks)
    assert unjoined == []


@netmcore.process
def mo_square(k: int) -> int:
    return k * k


@netmcore.process
def map_outcomes_refusing(chunksize: int) -> list[str]:
    """An argument that does not match In, and the exception of ``args``'
    own, are raised in their place and end the map: the caller's errors."""
    got: list[str] = []

    def failing() -> Iterator[int]:
        yield 2
        raise OSError("the input broke")

    for args in ([2, "three", 4], failing()):
        it = mo_square.map_outcomes(args, chunksize=chunksize)  # type: ignore[arg-type]
        try:
            for outcome in it:
                got.append(repr(outcome))
        except Exception as exc:
            got.append(f"{type(exc).__name__}: {exc}")
        got.append(repr(next(it, "ended")))
    return got


@pytest.mark.parametrize("chunksize", [1, 2])
def test_a_bad_argument_or_a_failing_input_ends_the_map_in_its_place(chunksize: int) -> None:
    got, unjoined = run_counting_unjoined(map_outcomes_refusing, chunksize)
    assert got[0] == "Success(value=4)"
    assert got[1].startswith("ArgumentTypeError: item 1 of mo_square.map_outcomes: "), got
    assert got[2:] == ["'ended'", "Success(value=4)", "OSError: the input broke", "'ended'"]
    assert unjoined == []


def _times_out(_signum: int, _frame: object) -> None:
    raise TimeoutError("the item's timer")


@netmcore.process
def mo_leaves_a_timer(k: int) -> int:
    """Item 1 leaves a signal that comes as its run has returned, before
    its result is kept (as a timer of its own that fires then)."""
    if k == 1:

        def as_it_returns(frame: Any, event: str, _arg: object) -> None:
            if event == "return" and frame.f_code.co_name == "_item_end":
                sys.setprofile(None)
                signal.raise_signal(signal.SIGUSR1)  # raises back in the chunk's loop

        signal.signal(signal.SIGUSR1, _times_out)
        sys.setprofile(as_it_returns)
    return k


@netmcore.process
def map_outcomes_interrupted_between_items(_: int) -> list[str]:
    return [str(outcome) for outcome in mo_leaves_a_timer.map_outcomes(range(5), chunksize=5)]


def test_an_exception_between_two_items_is_a_failure_and_the_chunk_goes_on() -> None:
    """The item whose result it cut off fails, and the chunk's process runs
    the items after it."""
    got = run_scenario(map_outcomes_interrupted_between_items, 0)
    assert got == [
        "Success(value=0)",
        "raised TimeoutError: the item's timer",
        "Success(value=2)",
        "Success(value=3)",
        "Success(value=4)",
    ]


@netmcore.process
def map_outcomes_options(_: int) -> list[str]:
    """Bad options are refused at the call, before anything starts."""
    got = []
    for options in ({"chunksize": 0}, {"processes": "2"}, {"timeout": -1}):
        try:
            mo_leaves_a_timer.map_outcomes([1], **options)  # type: ignore[arg-type]
            got.append("no error")
        except (TypeError, ValueError) as exc:
            got.append(f"{type(exc).__name__}: {exc}")
    return got


def test_map_outcomes_refuses_bad_options_at_the_call_and_the_master() -> None:
    got, unjoined = run_counting_unjoined(map_outcomes_options, 0)
    assert got[0].startswith("ValueError: chunksize=0 is not valid"), got
    assert got[1].startswith("TypeError: processes='2' is not valid"), got
    assert got[2].startswith("ValueError: timeout -1 is not valid"), got
    assert unjoined == []

    def in_the_master() -> netmcore.ProcessId[int]:
        with pytest.raises(netmcore.ContextError, match=r"mo_leaves_a_timer\.map_outcomes\(\)"):
            mo_leaves_a_timer.map_outcomes([1])
        return mo_leaves_a_timer.start(0)

    netmcore.run(first_process=in_the_master, extract_result=lambda _c, _p: None)


EXITS: dict[str, Any] = {
    "true": True,
    "256": 256,
    "-1": -1,
    "2**70": 2**70,
    "text": "bye",
    "none": None,
}


@netmcore.process
def mo_exits(key: str) -> int:
    sys.exit(EXITS[key])


@netmcore.process
def map_outcomes_exits(chunksize: int) -> list[str]:
    return [str(outcome) for outcome in mo_exits.map_outcomes(EXITS, chunksize=chunksize)]


@pytest.mark.parametrize("chunksize", [1, len(EXITS)])
def test_an_items_exit_in_a_chunk_is_the_status_a_process_of_its_own_exits_with(
    chunksize: int,
) -> None:
    """Before, a sys.exit(True) in a chunk failed the caller's decoding of
    the chunk's end (a bool for an int), which ended the map; and codes out
    of a byte's range were given as they were (256, -1, 2**70)."""
    got = run_scenario(map_outcomes_exits, chunksize)
    assert got == [f"exited with code {code} before returning" for code in (1, 0, 255, 255, 1, 0)]


@netmcore.process
def mo_late_timer(k: int) -> int:
    """Item 4, the chunk's last, leaves a signal that comes once its result
    is kept, before the chunk's process returns."""
    if k == 4:

        def once_kept(frame: Any, event: str, arg: object) -> None:
            if (
                event == "c_return"
                and frame.f_code.co_name == "_run_chunk"
                and getattr(arg, "__name__", "") == "append"
            ):
                sys.setprofile(None)
                signal.raise_signal(signal.SIGUSR1)

        signal.signal(signal.SIGUSR1, _times_out)
        sys.setprofile(once_kept)
    return k


@netmcore.process
def maps_with_a_late_timer(_: int) -> list[str]:
    got = [str(outcome) for outcome in mo_late_timer.map_outcomes(range(5), chunksize=5)]
    values: list[int] = []
    try:
        values.extend(mo_late_timer.map(range(5), chunksize=5))
    except netmcore.ProcessFailed as failed:
        got.append(f"{values} then {str(failed).partition(') ')[0]})")
    return got


def test_an_exception_after_a_chunks_last_item_fails_that_item_alone() -> None:
    """Before, the chunk's process failed with it: each of its items had
    that failure for outcome, though all had returned."""
    got = run_scenario(maps_with_a_late_timer, 0)
    assert got[:5] == [
        "Success(value=0)",
        "Success(value=1)",
        "Success(value=2)",
        "Success(value=3)",
        "raised TimeoutError: the item's timer",
    ], got
    assert re.fullmatch(
        r"\[0, 1, 2, 3\] then process \d+ \(mo_late_timer, item 4 of the map\)", got[5]
    )


@netmcore.process
def mo_gated(gate_r: int) -> int:
    """Wait for a byte at the gate (never written here)."""
    return len(os.read(gate_r, 1))


@netmcore.process
def map_outcomes_timed_out(gate_r: int) -> str:
    try:
        list(mo_gated.map_outcomes([gate_r] * 5, chunksize=2, timeout=0.05))
    except TimeoutError as exc:
        return str(exc)
    return "no timeout"


def test_a_timeout_names_the_items_it_waited_for(pipes: Any) -> None:
    """Before, only their process, whose id the caller never saw."""
    told, unjoined = run_counting_unjoined(map_outcomes_timed_out, pipes()[0])
    assert re.fullmatch(
        r"map_outcomes timed out after 0\.05 s: the result of items 0-1 \(process \d+\) had "
        r"not come; its 2 process\(es\) still running were killed",
        told,
    ), told
    assert unjoined == []
