"""ProcessDef.map(ordered=False): each result as its process ends, as
``Pool.imap_unordered`` yields them. Each test holds item 0 back until the
caller has had a later item's result, through a pipe: an ordered map would
wait for item 0 for ever there (its timeout ends it), so the test can only
pass if a result comes before one started earlier."""

from __future__ import annotations

import itertools
import os
import struct
from collections.abc import Callable, Iterator

import pytest
from scenario import run_counting_unjoined, run_scenario, wait_until

import netmcore

Pipes = Callable[[], tuple[int, int]]


@netmcore.process
def held_item(item: tuple[int, int]) -> int:
    """Item 0 waits for a byte on fd ``r`` (the caller's word that it has
    had the others); a negative item raises; any other returns itself."""
    k, r = item
    if k == 0:
        os.read(r, 1)
    if k < 0:
        raise ValueError(f"item {k} fails")
    return k


@netmcore.process
def unordered(ks_chunksize_fds: tuple[list[int], int, int, int]) -> list[int]:
    """The results of held_item over ``ks``, unordered, as they came; item
    0 let go once the results of every chunk but its own have come."""
    ks, chunksize, r, w = ks_chunksize_fds
    got: list[int] = []
    items = [(k, r) for k in ks]
    for value in held_item.map(items, processes=2, chunksize=chunksize, ordered=False, timeout=60):
        got.append(value)
        if len(got) == len(ks) - chunksize:
            os.write(w, b"x")
    return got


@pytest.mark.parametrize(
    ("ks", "chunksize", "expected"),
    [
        ([0, 1], 1, [1, 0]),  # item 1 ends first: it comes first
        ([0, 1, 2], 1, [1, 2, 0]),  # and the one started after it, in item 0's process's place
        ([0, 1, 2, 3], 2, [2, 3, 0, 1]),  # a chunk's items in turn, chunks as they end
    ],
)
def test_results_come_as_their_processes_end(
    pipes: Pipes, ks: list[int], chunksize: int, expected: list[int]
) -> None:
    r, w = pipes()
    got, unjoined = run_counting_unjoined(unordered, (ks, chunksize, r, w))
    assert got == expected
    assert unjoined == []  # each was joined


@netmcore.process
def failing_unordered(fds: tuple[int, int]) -> str:
    """An unordered map whose item 1 raises while item 0 is held: the error
    comes first; item 0 is let go after, and its result dropped."""
    r, w = fds
    try:
        for _ in held_item.map([(0, r), (-1, r)], processes=2, ordered=False, timeout=60):
            pass
    except netmcore.ProcessFailed as failed:
        os.write(w, b"x")
        assert failed.raised(ValueError)
        return str(failed)
    return "no error"


def test_an_items_error_comes_as_its_process_ends_and_names_its_item(pipes: Pipes) -> None:
    r, w = pipes()
    message, unjoined = run_counting_unjoined(failing_unordered, (r, w))
    assert "item 1 of the map" in message
    assert "ValueError: item -1 fails" in message
    assert unjoined == []  # item 0's result, dropped


def items_then_error(r: int) -> Iterator[tuple[int, int]]:
    yield (0, r)
    yield (1, r)
    raise LookupError("args ran out of luck")


@netmcore.process
def args_failing(fds: tuple[int, int]) -> list[str]:
    """An unordered map whose ``args`` raises after two items: their
    results come first (item 0 let go after item 1's), then the error."""
    r, w = fds
    got: list[str] = []
    try:
        for value in held_item.map(items_then_error(r), processes=2, ordered=False, timeout=60):
            got.append(str(value))
            if value == 1:
                os.write(w, b"x")
    except LookupError as exc:
        got.append(str(exc))
    return got


def test_an_error_of_args_comes_once_every_item_before_it_is_given(pipes: Pipes) -> None:
    r, w = pipes()
    assert run_scenario(args_failing, (r, w)) == ["1", "0", "args ran out of luck"]


@netmcore.process
def timed_out(fds: tuple[int, int]) -> str:
    """An unordered map of held items past its timeout: the error names
    the first item still running; every item held is killed."""
    r, _ = fds
    got: list[int] = []
    try:
        items = [(0, r), (1, r), (0, r)]
        for value in held_item.map(items, processes=3, ordered=False, timeout=3):
            got.append(value)
    except TimeoutError as exc:
        return f"{got} {exc}"
    return "no timeout"


def test_a_timeout_names_the_first_item_still_running(pipes: Pipes) -> None:
    r, w = pipes()
    told = run_scenario(timed_out, (r, w))
    assert told.startswith("[1] map timed out after 3 s: the result of item 0 (process ")
    assert told.endswith("its 2 process(es) still running were killed")


@netmcore.process
def refused(value: str) -> str:
    """A map whose ``ordered`` is not a bool: refused at the call (the map
    is not iterated), as its other options are."""
    try:
        held_item.map([(1, 0)], ordered=value)  # type: ignore[arg-type]
    except TypeError as exc:
        return str(exc)
    return "accepted"


def test_ordered_must_be_a_bool() -> None:
    told = run_scenario(refused, "yes")
    assert told == (
        "ordered='yes' is not valid: give True (results in input order) or False (as they complete)"
    )


@netmcore.process
def reporting_item(item: tuple[int, int, int]) -> int:
    """Write (k, os pid) to fd ``report``, wait for a byte on fd ``gate``, return k."""
    k, gate, report = item
    os.write(report, struct.pack("ii", k, os.getpid()))
    os.read(gate, 1)
    return k


def _reaped(os_pid: int) -> bool:
    return not os.path.exists(f"/proc/{os_pid}")


@netmcore.process
def ended_while_reading(fds: list[int]) -> list[int]:
    """Items 0 and 1 both end before the map waits again, item 1 first: its
    result comes first. (Taken in input order, item 0's came first.)"""
    a_r, a_w, b_r, b_w, c_r, c_w, report_r, report_w = fds

    def items() -> Iterator[tuple[int, int, int]]:
        yield (0, a_r, report_w)
        yield (1, b_r, report_w)
        # Read as the map starts its next process: it has not waited since.
        os_pids = dict(struct.unpack("ii", os.read(report_r, 8)) for _ in range(2))
        os.write(b_w, b"x")
        wait_until(lambda: _reaped(os_pids[1]), "item 1 to end")
        os.write(a_w, b"x")
        wait_until(lambda: _reaped(os_pids[0]), "item 0 to end")
        yield (2, c_r, report_w)

    got: list[int] = []
    for value in reporting_item.map(items(), processes=3, ordered=False, timeout=60):
        got.append(value)
        if len(got) == 2:
            os.write(c_w, b"x")
    return got


def test_results_that_came_together_are_given_in_the_order_their_processes_ended(
    pipes: Pipes,
) -> None:
    fds = [fd for _ in range(4) for fd in pipes()]
    assert run_scenario(ended_while_reading, fds) == [1, 0, 2]


@netmcore.process
def endless_left(_: int) -> list[int]:
    """An unordered map of an endless input, left after 3 results: it had
    read only its window's worth of items, and nothing is left to join."""
    read: list[int] = []

    def items() -> Iterator[tuple[int, int]]:
        for k in itertools.count(1):
            read.append(k)
            yield (k, -1)

    got = []
    for value in held_item.map(items(), processes=2, ordered=False):
        got.append(value)
        if len(got) == 3:
            break
    return [len(got), len(read)]


def test_an_endless_input_left_early_leaves_nothing() -> None:
    told, unjoined = run_counting_unjoined(endless_left, 0)
    given, read = told
    assert given == 3 and read <= given + 2 * 4  # at most its window (MAP_AHEAD * processes)
    assert unjoined == []


@netmcore.process
def chunk_fails(fds: tuple[int, int]) -> str:
    """Chunks of 2 over 0-3, item 0 held and item 3 failing: item 3's error
    comes while item 0's chunk still runs, after item 2's result."""
    r, w = fds
    got: list[int] = []
    try:
        items = [(0, r), (1, r), (2, r), (-3, r)]
        for value in held_item.map(items, processes=2, chunksize=2, ordered=False, timeout=60):
            got.append(value)
    except netmcore.ProcessFailed as failed:
        os.write(w, b"x")
        return f"{got} {failed}"
    return "no error"


def test_an_items_error_in_a_chunk_comes_as_its_chunk_ends(pipes: Pipes) -> None:
    told, unjoined = run_counting_unjoined(chunk_fails, pipes())
    assert told.startswith("[2] process "), told
    assert "item 3 of the map) raised ValueError: item -3 fails" in told, told
    assert unjoined == []
