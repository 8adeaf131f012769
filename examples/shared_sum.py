"""Workers fill disjoint slices of one shared numpy array; the first process sums it.

The array lives in preallocated shared memory: the master maps it before the
workers start, and every worker inherits the mapping, so their writes land in
the same memory without a copy. (numpy is the ``numpy`` extra of netmcore.)
"""

from __future__ import annotations

import numpy as np

import netmcore

N = 1_000_000
WORKERS = 4

# Made before run: every worker started afterwards inherits the mapping.
ARRAY, _NAME = netmcore.create_preallocated_shm("/shared_sum", N * 8)


def shared_array() -> np.ndarray[tuple[int], np.dtype[np.int64]]:
    memory = netmcore.get_resource(ARRAY).repr
    assert isinstance(memory, netmcore.PosixShmPreallocated)
    return np.frombuffer(memory.memory, dtype=np.int64)


@netmcore.process
def fill(part: tuple[int, int]) -> int:
    """Write k+1 at every index k of [start, stop)."""
    start, stop = part
    shared_array()[start:stop] = np.arange(start + 1, stop + 1, dtype=np.int64)
    netmcore.release(ARRAY)
    return stop - start


@netmcore.process
def first(n: int) -> int:
    step = -(-n // WORKERS)
    parts = [(k, min(k + step, n)) for k in range(0, n, step)]
    pids = [fill.start(part) for part in parts]
    if sum(fill.join(pid) or 0 for pid in pids) != n:
        raise RuntimeError("a worker failed")
    total = int(shared_array().sum())
    netmcore.release(ARRAY)
    return total


def main() -> int:
    try:
        total = netmcore.run(
            first_process=lambda: first.start(N),
            extract_result=lambda _ctrl, pid: first.join_nowait(pid),
        )
    finally:
        netmcore.release(ARRAY)  # the master created it: the last user lets go
    if total is None:
        raise SystemExit("the first process failed")
    print(f"Sum of 1..{N}: {total} (expected {N * (N + 1) // 2})")
    return total


if __name__ == "__main__":
    main()
