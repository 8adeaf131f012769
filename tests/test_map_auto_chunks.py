"""map(chunksize="auto"): chunks that grow as the map learns how long its
items run, as joblib's batch_size="auto": many small items share a few
processes, items that run long keep one each. Which process ran each item
is read from a pipe each item writes to."""

from __future__ import annotations

import collections
import os
import time
from collections.abc import Callable
from typing import Any

import pytest
from scenario import run_scenario

import netmcore
from netmcore import _process

Pipes = Callable[[], tuple[int, int]]


@netmcore.process
def noted(item: tuple[int, int, float]) -> int:
    """Write "k:os pid," to fd ``w`` (if not -1), run for ``seconds``,
    return k*k (raise for a negative)."""
    k, w, seconds = item
    if w >= 0:
        os.write(w, f"{k}:{os.getpid()},".encode())
    if seconds:
        time.sleep(seconds)  # the item's work, not a wait for anything
    if k < 0:
        raise ValueError(f"no square of {k}")
    return k * k


@netmcore.process
def auto_map(spec: tuple[str, int, float, int, int]) -> list[Any]:
    """An auto-chunked map of ``noted`` over 0..n-1, as ``how`` says."""
    how, n, seconds, w, processes = spec
    items: Any = [(k, w, seconds) for k in range(n)]
    if how == "endless":  # no length to cap the chunks with: only n of it are taken
        items = ((k, w if k < n else -1, seconds) for k in range(10**9))
        it = noted.map(items, processes=processes, chunksize="auto")
        return [next(it) for _ in range(n)]
    if how == "outcomes":
        outcomes = noted.map_outcomes(items, processes=processes, chunksize="auto")
        return [o.value if isinstance(o, netmcore.Success) else repr(o) for o in outcomes]
    return list(noted.map(items, processes=processes, chunksize="auto", ordered=how != "unordered"))


def run_noting(pipes: Pipes, spec: tuple[str, int, float, int]) -> tuple[list[Any], list[int]]:
    """Run auto_map; what it gave, and how many items each process ran, in
    the order the processes began."""
    got, process_of = run_noting_each(pipes, auto_map, spec)
    return got, list(collections.Counter(process_of.values()).values())


def run_noting_each(pipes: Pipes, proc: Any, spec: tuple[Any, ...]) -> tuple[Any, dict[int, str]]:
    """Run ``proc`` of ``spec`` with the pipe's write end inserted before its
    last field (as auto_map takes it); what it gave, and the process (its
    os pid) that ran each item."""
    r, w = pipes()
    got = run_scenario(proc, (*spec[:-1], w, spec[-1]))
    # Every process has ended: what they wrote is all in the pipe.
    os.set_blocking(r, False)
    data = b""
    while len(chunk := _read_some(r)):
        data += chunk
    runs = [run.split(":") for run in data.decode().split(",") if run]
    return got, {int(k): pid for k, pid in runs}


def _read_some(fd: int) -> bytes:
    try:
        return os.read(fd, 65536)
    except BlockingIOError:
        return b""


@pytest.mark.parametrize("how", ["ordered", "unordered", "outcomes"])
def test_small_items_share_few_processes_and_results_are_right(pipes: Pipes, how: str) -> None:
    got, per_process = run_noting(pipes, (how, 400, 0.0, 2))
    expected = [k * k for k in range(400)]
    assert (sorted(got) if how == "unordered" else got) == expected
    assert sum(per_process) == 400
    assert per_process[0] == 1  # the first chunks hold one item: nothing measured yet
    # Doubling from 1, to at most what is left over twice the processes
    # (400 / 4 at first): a few dozen processes, not 400, the last ones small.
    assert max(per_process) <= 100
    # (How few depends on how soon chunks end, which the machine's load
    # sets: a count that a busy machine reached is not the point.)
    assert len(per_process) < 100, per_process
    assert per_process[-1] <= 2, per_process
    assert len(set(per_process)) >= 4, per_process


def test_an_endless_input_grows_chunks_without_a_cap(pipes: Pipes) -> None:
    got, per_process = run_noting(pipes, ("endless", 3000, 0.0, 2))
    assert got == [k * k for k in range(3000)]
    # No length, so no quarter-share cap (3000 // 8 = 375 with one).
    assert max(per_process) > 3000 // (4 * 2)
    assert len(per_process) < 200, per_process  # not 3000: see above on the count


def test_items_that_run_long_keep_a_process_each(
    pipes: Pipes, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Items of 5 ms against a target of 1 ms (the workers inherit it from the master).
    monkeypatch.setattr(_process, "AUTO_CHUNK_SECONDS", 0.001)
    got, per_process = run_noting(pipes, ("ordered", 12, 0.005, 2))
    assert got == [k * k for k in range(12)]
    assert per_process == [1] * 12


@netmcore.process
def auto_failing(w: int) -> list[Any]:
    """An auto map whose item 150 raises: map stops there, map_outcomes goes on."""
    items = [(k if k != 150 else -1, w, 0.0) for k in range(200)]
    got: list[Any] = []
    try:
        for value in noted.map(items, processes=2, chunksize="auto"):
            got.append(value)
    except netmcore.ProcessFailed as failed:
        got.append("item 150 of the map) raised ValueError: no square of -1" in str(failed))
    outcomes = list(noted.map_outcomes(items, processes=2, chunksize="auto"))
    failures = [i for i, o in enumerate(outcomes) if not isinstance(o, netmcore.Success)]
    return [len(got), got[-1], len(outcomes), failures]


def test_a_failing_item_is_named_by_its_index_in_auto_chunks(pipes: Pipes) -> None:
    _, w = pipes()
    assert run_scenario(auto_failing, w) == [151, True, 200, [150]]


@netmcore.process
def refused(value: str) -> str:
    try:
        noted.map([(1, 1, 0.0)], chunksize=value)  # type: ignore[arg-type]
    except TypeError as exc:
        return str(exc)
    return "accepted"


def test_chunksize_is_an_int_or_auto() -> None:
    assert run_scenario(refused, "Auto") == (
        "chunksize='Auto' is not valid: it must be an int, not str; give how many items "
        'each process runs in turn, an int of 1 or more, or "auto"'
    )


@netmcore.process
def slow_tail(spec: tuple[int, int, int]) -> list[int]:
    """Many trivial items, then 4 of 20 ms: an auto map of them."""
    n, w, processes = spec
    items = [(k, w, 0.02 if k >= n - 4 else 0.0) for k in range(n)]
    return list(noted.map(items, processes=processes, chunksize="auto"))


def test_the_last_items_run_in_small_chunks(pipes: Pipes) -> None:
    """A chunk sized from a run of quick items took every slow item at the
    end, and one process ran them all while the other CPUs idled: the
    chunks shrink towards the end (to a half of what is left over twice
    the processes), so here each slow item has a process of its own."""
    got, process_of = run_noting_each(pipes, slow_tail, (300, 2))
    assert got == [k * k for k in range(300)]
    assert len({process_of[k] for k in range(296, 300)}) == 4


@netmcore.process
def big_items(spec: tuple[int, int, int]) -> list[int]:
    """An auto map of ``n`` items, each with 4,000 bytes of padding."""
    n, w, processes = spec
    items = ((k, w, 0.0, b"x" * 4000) for k in range(n))
    return list(padded.map(items, processes=processes, chunksize="auto"))


@netmcore.process
def padded(item: tuple[int, int, float, bytes]) -> int:
    return noted.run(noted(), item[:3])


def test_chunks_of_large_items_stop_at_a_byte_limit(
    pipes: Pipes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sized by time alone, chunks of large items took a gigabyte of
    /dev/shm: a chunk's arguments stop at AUTO_CHUNK_BYTES (here 10 KB,
    so 3 items of 4 KB), and its size then keeps to what its results hold."""
    monkeypatch.setattr(_process, "AUTO_CHUNK_BYTES", 10_000)
    got, process_of = run_noting_each(pipes, big_items, (200, 2))
    assert got == [k * k for k in range(200)]
    assert max(collections.Counter(process_of.values()).values()) == 3


class _LengthUntold:
    """An iterable whose __length_hint__ fails: auto maps it as an iterator."""

    def __init__(self, items: list[tuple[int, int, float]]) -> None:
        self.items = items

    def __iter__(self) -> Any:
        return iter(self.items)

    def __length_hint__(self) -> int:
        raise RuntimeError("no length here")


@netmcore.process
def untold_length(spec: tuple[int, int, int]) -> list[int]:
    n, w, processes = spec
    items = _LengthUntold([(k, w, 0.0) for k in range(n)])
    huge = square.map(range(10**20), chunksize="auto")  # a length past what a hint holds
    return [*noted.map(items, processes=processes, chunksize="auto"), next(huge)]


@netmcore.process
def square(k: int) -> int:
    return k * k


def test_an_untold_length_is_no_length(pipes: Pipes) -> None:
    got, _ = run_noting_each(pipes, untold_length, (50, 2))
    assert got == [k * k for k in range(50)] + [0]


def test_chunks_grow_from_what_was_measured_not_from_each_end(pipes: Pipes) -> None:
    """Eight one-item chunks that end together are eight measures of one
    item: the next chunks hold two, not 2**8 (each end doubled the size
    so far, whatever size had ended)."""
    got, per_process = run_noting(pipes, ("ordered", 3000, 0.0, 8))
    assert got == [k * k for k in range(3000)]
    # The first 20 processes: 8 of one item (nothing measured), then the
    # chunks sized from them (2), and at most their doubles.
    assert max(per_process[:20]) <= 4, per_process[:20]
