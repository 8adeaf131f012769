"""Helpers for tests that run a process type as the first process of a run."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

import netmcore


def outcome_value(outcome: Any) -> Any:
    """The value of a Success; otherwise fail, with the remote traceback."""
    if isinstance(outcome, netmcore.Success):
        return outcome.value
    if isinstance(outcome, netmcore.Raised):
        pytest.fail(
            f"a process raised {outcome.type_name}: {outcome.message}\n{outcome.traceback}",
            pytrace=False,
        )
    pytest.fail(f"a process did not succeed: {outcome!r}", pytrace=False)


def joined(proc: Any, pid: Any) -> Any:
    """In a worker: join ``pid`` and return its value, or fail with its outcome."""
    return outcome_value(proc.join_outcome(pid))


def run_scenario(
    proc: Any, arg: Any, *, init_ctrl: Callable[[netmcore.Controller], None] | None = None
) -> Any:
    """Run ``proc(arg)`` as the first process; return its value, or fail with its outcome."""
    outcome = netmcore.run(
        first_process=lambda: proc.start(arg),
        extract_result=lambda _ctrl, pid: proc.join_outcome_nowait(pid),
        init_ctrl=init_ctrl,
    )
    return outcome_value(outcome)
