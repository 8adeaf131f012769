"""What the benchmark modules share: running a measuring process as the first process."""

from __future__ import annotations

from typing import TypeVar

from . import _runtime
from ._process import ProcessDef

A = TypeVar("A")
R = TypeVar("R")


def in_first_process(process: type[ProcessDef[A, R]], arg: A) -> R:
    """Run ``process(arg)`` as the first process of a fresh ``run``; its result."""
    result = _runtime.run(
        first_process=lambda: process.start(arg),
        extract_result=lambda _ctrl, pid: process.join_nowait(pid),
    )
    if result is None:
        raise SystemExit(f"the benchmark process {process.__qualname__} failed; see the log above")
    return result
