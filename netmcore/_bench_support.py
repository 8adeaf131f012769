"""What the benchmark modules share: running a measuring process as the first
process, and timing calls made at a user's pace."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import TypeVar

from . import _runtime
from ._process import ProcessDef

A = TypeVar("A")
R = TypeVar("R")

PAUSE_S = 0.005  # between paced calls: room for the background work of the last one


def in_first_process(process: type[ProcessDef[A, R]], arg: A) -> R:
    """Run ``process(arg)`` as the first process of a fresh ``run``; its result."""
    result = _runtime.run(
        first_process=lambda: process.start(arg),
        extract_result=lambda _ctrl, pid: process.join_nowait(pid),
    )
    if result is None:
        raise SystemExit(f"the benchmark process {process.__qualname__} failed; see the log above")
    return result


def paced_times(f: Callable[[], object], n: int) -> tuple[float, float]:
    """The median and the 90th percentile of the time of ``f``, called PAUSE_S apart."""
    for _ in range(min(n, 20)):
        f()
    times = []
    for _ in range(n):
        time.sleep(PAUSE_S)  # pacing, as a user's program between calls
        t0 = time.perf_counter()
        f()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), statistics.quantiles(times, n=10, method="inclusive")[-1]
