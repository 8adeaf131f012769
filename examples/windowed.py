"""A pool's limit for submit-style code: at most N processes at a time, each
item's outcome kept (an item that raises does not end the others), and an
item that runs past its time limit killed.

``ProcessPoolExecutor(N)`` with ``submit`` and ``as_completed`` becomes
``start`` and ``as_completed`` here, but ``start`` has no limit of its own:
a loop keeps N running, starting the next item as one ends.
"""

from __future__ import annotations

import itertools
import math
import time

import netmcore

ITEMS = 8
PROCESSES = 2
LIMIT = 2.0  # seconds an item may run


@netmcore.process
def work(n: int) -> int:
    if n == 3:
        raise ValueError(f"item {n} is bad")
    if n == 5:
        time.sleep(3600)  # hangs
    return n * n


def run_windowed(args: list[int], processes: int, limit: float) -> dict[int, netmcore.Outcome[int]]:
    """How each of ``args`` ended, with at most ``processes`` running at a
    time, each killed (SIGKILL) once it has run ``limit`` seconds."""
    todo = iter(args)
    running: dict[netmcore.ProcessId[int], tuple[int, float]] = {}  # pid: (arg, deadline)
    outcomes: dict[int, netmcore.Outcome[int]] = {}
    while True:
        for arg in itertools.islice(todo, processes - len(running)):
            running[work.start(arg)] = (arg, time.monotonic() + limit)
        if not running:
            return outcomes
        soonest = min(deadline for _, deadline in running.values())
        try:
            pid = next(work.as_completed(running, timeout=max(0.0, soonest - time.monotonic())))
        except TimeoutError:  # some ran past their limit: killed, they end as Crashed
            now = time.monotonic()
            for late, (arg, deadline) in running.items():
                if deadline <= now:
                    netmcore.kill(late)
                    running[late] = (arg, math.inf)  # its end comes, as as_completed's
            continue
        arg, _ = running.pop(pid)
        outcomes[arg] = work.join_outcome(pid)


def described(outcome: netmcore.Outcome[int]) -> str:
    if isinstance(outcome, netmcore.Success):
        return f"{outcome.value}"
    if isinstance(outcome, netmcore.Raised):
        return f"raised {outcome.type_name}: {outcome.message}"
    return f"ended without a result ({outcome!r})"


@netmcore.process
def driver(items: int) -> list[str]:
    outcomes = run_windowed(list(range(items)), PROCESSES, LIMIT)
    return [f"{arg}: {described(outcomes[arg])}" for arg in sorted(outcomes)]


def main() -> None:
    lines = netmcore.run(
        first_process=lambda: driver.start(ITEMS),
        extract_result=lambda _ctrl, pid: driver.result(pid, timeout=0),
    )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
