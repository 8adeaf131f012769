"""N-queens: count the solutions that are unique up to the 8 symmetries of the board.

Upstream's flagship example. The search is split into subproblems (the queens
of the first two rows, or the one row of a 1x1 board); every mode must find the
same count:

- sequential: one process does every subproblem;
- processes: one netmcore process per chunk of subproblems, WORKERS of them
  running at a time (``ProcessDef.map``);
- mailbox: workers send batches of canonical solutions to a collector (the
  first process) through a shared-memory Mailbox, which removes duplicates;
- table: workers write each subproblem's count of canonical solutions into a
  shared numpy table (a SharedArray), which the first process sums.

For comparison, the processes mode's chunks also go through a
``concurrent.futures.ProcessPoolExecutor``. Run it as
``python examples/nqueens.py [N] [WORKERS]`` (N is 13 by default, WORKERS the
number of CPUs).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from typing import Never

import numpy as np
import tqdm

import netmcore

BATCH = 256  # solutions per mailbox message
Prefix = tuple[int, ...]


def extend(n: int, board: list[int], cols: int, d1: int, d2: int) -> Iterator[tuple[int, ...]]:
    """Every solution that extends ``board`` (queen columns, one per row so far)."""
    if len(board) == n:
        yield tuple(board)
        return
    full = (1 << n) - 1
    free = full & ~(cols | d1 | d2)
    while free:
        bit = free & -free
        free ^= bit
        board.append(bit.bit_length() - 1)
        yield from extend(n, board, cols | bit, ((d1 | bit) << 1) & full, (d2 | bit) >> 1)
        board.pop()


def subproblems(n: int) -> list[Prefix]:
    """The valid placements of the first two queens (of the one queen if n is 1)."""
    if n == 1:
        return [(0,)]
    return [(a, b) for a in range(n) for b in range(n) if abs(a - b) > 1]


def solutions(n: int, prefix: Prefix) -> Iterator[tuple[int, ...]]:
    full = (1 << n) - 1
    cols = d1 = d2 = 0
    for column in prefix:  # the prefix's queens, placed row by row as extend does
        bit = 1 << column
        cols, d1, d2 = cols | bit, ((d1 | bit) << 1) & full, (d2 | bit) >> 1
    yield from extend(n, list(prefix), cols, d1, d2)


def canonical(board: tuple[int, ...]) -> tuple[int, ...]:
    """The least of the 8 images of ``board`` under rotations and reflections."""
    n = len(board)
    images = []
    b = board
    for _ in range(4):
        # A quarter turn: the queen at (row r, column c) goes to (c, n - 1 - r).
        b = tuple(n - 1 - b.index(r) for r in range(n))
        images += [b, b[::-1]]  # and its mirror image
    return min(images)


def count_canonical(n: int, prefixes: list[Prefix]) -> int:
    """Solutions that are their own canonical image: one per symmetry class."""
    return sum(board == canonical(board) for p in prefixes for board in solutions(n, p))


# --- the parallel modes -------------------------------------------------------------


@netmcore.process
def chunk_worker(job: tuple[int, list[Prefix]]) -> int:
    n, prefixes = job
    return count_canonical(n, prefixes)


@netmcore.process
def mailbox_worker(job: tuple[int, list[Prefix], netmcore.ResId]) -> int:
    """Send every solution's canonical image, in batches; an empty batch ends a
    subproblem (the collector counts them for its progress bar)."""
    n, prefixes, box_id = job
    box = netmcore.Mailbox.open(box_id, bytes)
    for p in prefixes:
        batch = bytearray()
        for board in solutions(n, p):
            batch += bytes(canonical(board))
            if len(batch) >= BATCH * n:
                box.send(bytes(batch))
                batch.clear()
        if batch:
            box.send(bytes(batch))
        box.send(b"")
    box.close()
    return len(prefixes)


@netmcore.process
def table_worker(job: tuple[int, list[int], netmcore.SharedArray]) -> int:
    n, indexes, table = job
    counts = table.open()
    every = subproblems(n)
    for i in indexes:
        counts[i] = count_canonical(n, [every[i]])
    return len(indexes)


def deal(items: list[Prefix], workers: int) -> list[list[Prefix]]:
    """Interleave ``items`` over ``workers``, for an even load."""
    return [items[k::workers] for k in range(workers)]


def progress(total: int, mode: str) -> tqdm.tqdm[Never]:
    # disable=None: on when stderr is a terminal, off in logs and CI.
    return tqdm.tqdm(total=total, desc=f"{mode:<10}", unit="task", disable=None, leave=False)


@netmcore.process
def processes_mode(job: tuple[int, int]) -> int:
    n, workers = job
    chunks = deal(subproblems(n), workers * 4)
    total = 0
    with progress(len(chunks), "processes") as bar:
        # A failed chunk raises ProcessFailed here, with its cause.
        for count in chunk_worker.map([(n, c) for c in chunks], processes=workers):
            total += count
            bar.update()
    return total


@netmcore.process
def mailbox_mode(job: tuple[int, int]) -> int:
    n, workers = job
    every = subproblems(n)
    box = netmcore.Mailbox.create(bytes, slots=64, slot_size=BATCH * n + 16)
    pids = [mailbox_worker.start((n, c, box.res_id)) for c in deal(every, workers)]
    seen: set[bytes] = set()
    with progress(len(every), "mailbox") as bar:
        done = 0
        while done < len(every):
            batch = box.receive()
            if not batch:
                done += 1
                bar.update()
            seen.update(batch[k : k + n] for k in range(0, len(batch), n))
    if any(mailbox_worker.join(pid) is None for pid in pids):
        raise RuntimeError("a mailbox worker failed")
    box.release()
    return len(seen)


@netmcore.process
def table_mode(job: tuple[int, int]) -> int:
    n, workers = job
    every = subproblems(n)
    table = netmcore.SharedArray.create(len(every), "int64")
    indexes = list(range(len(every)))
    shares = [indexes[k::workers] for k in range(workers)]
    pids = [table_worker.start((n, share, table)) for share in shares]
    with progress(len(every), "table") as bar:
        for pid, share in zip(pids, shares, strict=True):
            if table_worker.join(pid) is None:
                raise RuntimeError("a table worker failed")
            bar.update(len(share))
    # numpy is imported at module level, so that every worker (a copy of the
    # master) has it already, instead of importing it on its first use.
    total = int(np.sum(table.open()))
    table.release()
    return total


MODES = {"processes": processes_mode, "mailbox": mailbox_mode, "table": table_mode}
PEER = "ProcessPoolExecutor"  # the same chunks as the processes mode, for comparison


def run_mode(mode: str, n: int, workers: int) -> tuple[int, float]:
    t0 = time.perf_counter()
    if mode == "sequential":
        with progress(1, mode) as bar:
            count = count_canonical(n, subproblems(n))
            bar.update()
    elif mode == PEER:
        chunks = deal(subproblems(n), workers * 4)
        fork = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(workers, mp_context=fork) as pool:
            count = sum(pool.map(count_canonical, [n] * len(chunks), chunks))
    else:
        process = MODES[mode]
        result = netmcore.run(
            first_process=lambda: process.start((n, workers)),
            extract_result=lambda _ctrl, pid: process.join_nowait(pid),
        )
        if result is None:
            raise SystemExit(f"the {mode} mode failed")
        count = result
    return count, time.perf_counter() - t0


def main(n: int = 13, workers: int | None = None) -> dict[str, tuple[int, float]]:
    workers = workers or os.cpu_count() or 2
    results = {mode: run_mode(mode, n, workers) for mode in ("sequential", *MODES, PEER)}
    counts = {count for count, _ in results.values()}
    sequential = results["sequential"][1]
    print(f"{n}-queens: {results['sequential'][0]} solutions unique up to symmetry")
    print(f"{'mode':<20}{'count':>8}{'time':>10}{'speed-up':>10}   ({workers} workers)")
    for mode, (count, seconds) in results.items():
        print(f"{mode:<20}{count:>8}{seconds:>9.2f}s{sequential / seconds:>9.2f}x")
    if len(counts) != 1:
        raise SystemExit(f"the modes disagree: {results}")
    return results


def _at_least_one(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not valid: give 1 or more")
    return value


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("n", nargs="?", type=_at_least_one, default=13, help="board size")
    parser.add_argument("workers", nargs="?", type=_at_least_one, help="default: the CPUs")
    args = parser.parse_args()
    main(args.n, args.workers)
