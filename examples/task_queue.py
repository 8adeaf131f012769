"""Upstream's task queue (the basics chapter): a supervisor, workers, and mboxes.

The supervisor hands tasks to a pool of workers through one message box and
collects their results through another. Both boxes are bounded, so the roles
are split to rule out a deadlock: a feeder process sends the tasks (then one
stop message per worker), while the supervisor only receives results.
"""

from __future__ import annotations

import msgspec

import netmcore

WORKERS = 3
TASKS = 40


class Task(msgspec.Struct, frozen=True):
    id: int
    n: int


class Result(msgspec.Struct, frozen=True):
    id: int
    primes: int
    worker: int


tasks = netmcore.Mbox("tasks", Task | None, capacity=WORKERS)  # None: stop
results = netmcore.Mbox("results", Result, capacity=WORKERS)


def count_primes(n: int) -> int:
    sieve = bytearray([1]) * (n + 1)
    sieve[:2] = b"\0\0"
    for k in range(2, int(n**0.5) + 1):
        if sieve[k]:
            sieve[k * k :: k] = bytes(len(range(k * k, n + 1, k)))
    return sum(sieve)


@netmcore.process
def worker(number: int) -> int:
    """Take tasks until told to stop; return how many it did."""
    done = 0
    while (task := tasks.receive()) is not None:
        results.send(Result(task.id, count_primes(task.n), number))
        done += 1
    return done


@netmcore.process
def feeder(count: int) -> int:
    for k in range(count):
        tasks.send(Task(k, 20_000 + 1_000 * k))
    for _ in range(WORKERS):
        tasks.send(None)
    return count


@netmcore.process
def supervisor(count: int) -> list[Result]:
    tasks.create()
    results.create()
    pool = [worker.start(k) for k in range(WORKERS)]
    feed = feeder.start(count)
    collected = sorted((results.receive() for _ in range(count)), key=lambda r: r.id)
    if feeder.join(feed) != count or sum(worker.join(p) or 0 for p in pool) != count:
        raise RuntimeError("a worker or the feeder failed")
    return collected


def main() -> list[Result]:
    collected = netmcore.run(
        first_process=lambda: supervisor.start(TASKS),
        extract_result=lambda _ctrl, pid: supervisor.join_nowait(pid),
        init_ctrl=netmcore.add_plugins,
    )
    if collected is None:
        raise SystemExit("the supervisor failed")
    per_worker = {w: sum(1 for r in collected if r.worker == w) for w in range(WORKERS)}
    print(f"Tasks done: {len(collected)} by {WORKERS} workers {per_worker}")
    print(f"Primes counted: {sum(r.primes for r in collected)}")
    return collected


if __name__ == "__main__":
    main()
