"""Upstream's create_join example: a manager squares 1..10 in separate processes.

Each square runs in its own worker process. The manager is itself a worker: its
``start`` calls go to the master, which forks every process.
"""

from __future__ import annotations

import netmcore


@netmcore.process
def square(k: int) -> int:
    return k * k


@netmcore.process
def manager(n: int) -> int:
    pids = [square.start(k) for k in range(1, n + 1)]
    results = [square.join(pid) for pid in pids]
    if any(r is None for r in results):
        raise RuntimeError(f"some squares failed: {results}")
    return sum(r for r in results if r is not None)


def main() -> int:
    total = netmcore.run(
        first_process=lambda: manager.start(10),
        extract_result=lambda _ctrl, pid: manager.join_nowait(pid),
    )
    if total is None:
        raise SystemExit("the manager process failed")
    print(f"Final result: {total}")
    return total


if __name__ == "__main__":
    main()
