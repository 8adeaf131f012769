"""repeat_through_interrupts: a step repeated through signal handlers'
exceptions, not through failures of its own.

Before, it repeated a step after every exception but MasterGone: one that
failed every time (a bug's TypeError, a link closed underneath, an OSError
of the system's) was tried again for ever, and each Ctrl-C meanwhile was
held as an interrupt, so nothing could end it. Each step here fails once
and then completes, so that the old code ends too: the tests count the
tries.
"""

from __future__ import annotations

import errno
import os
import signal
from collections.abc import Callable
from typing import Any

import msgspec
import pytest
from scenario import outcome_text, run_scenario

import netmcore
from netmcore import _context
from netmcore._errors import ContextError
from netmcore._wire import TRIES_MAX, repeat_through_interrupts

pytestmark = pytest.mark.timeout(60)


def _steps(*script: BaseException | None) -> tuple[Callable[[], None], list[int]]:
    """A step that raises the script's exceptions, one a try, and completes
    at a None or past the script's end; and the list of its tries."""
    tries: list[int] = []

    def step() -> None:
        tries.append(1)
        if len(tries) <= len(script) and (exc := script[len(tries) - 1]) is not None:
            raise exc

    return step, tries


OWN_FAILURES = [
    TypeError("a bug's"),
    ValueError("a message too large for the link"),
    OSError(errno.EIO, "Input/output error"),
    ContextError("the link was closed in this process"),
    BufferError("a mapping still exported"),
    RecursionError("maximum recursion depth exceeded"),  # a call too deep in the stack
    RuntimeError("cannot release un-acquired lock"),
    MemoryError(),
    msgspec.EncodeError("an encoding that failed"),
]


@pytest.mark.parametrize("failure", OWN_FAILURES, ids=lambda e: type(e).__name__)
def test_a_failure_of_the_steps_own_is_raised_at_once_not_retried(failure: Exception) -> None:
    step, tries = _steps(failure)
    with pytest.raises(type(failure)) as raised:
        repeat_through_interrupts(step)
    assert raised.value is failure
    assert len(tries) == 1, "a step that fails of its own was tried again"


class _Unforeseen(Exception):
    """What no rule names: a step that raises it every time still ends."""


def test_a_step_that_fails_every_time_with_what_no_rule_names_ends_at_the_last_try() -> None:
    step, tries = _steps(*[_Unforeseen("every time")] * (TRIES_MAX + 5))
    with pytest.raises(_Unforeseen):
        repeat_through_interrupts(step)
    assert len(tries) == TRIES_MAX


def test_interrupts_are_held_until_the_step_is_done_and_failures_of_its_own_are_not() -> None:
    # A handler's exceptions (a Ctrl-C's, a timeout's: an OSError with no
    # errno) are held, the step repeated, and the last raised once it is done.
    step, tries = _steps(KeyboardInterrupt(), timeout := TimeoutError("a timeout"))
    with pytest.raises(TimeoutError) as raised:
        repeat_through_interrupts(step)
    assert raised.value is timeout
    assert len(tries) == 3
    # A failure of its own after an interrupt goes on in the interrupt's
    # place, the step not tried again (as in the give-backs).
    step, tries = _steps(KeyboardInterrupt(), failure := TypeError("a bug's"))
    with pytest.raises(TypeError) as failed:
        repeat_through_interrupts(step)
    assert failed.value is failure
    assert len(tries) == 2, "a step that fails of its own was tried again"


# --------------------------------------------------------------------------
# Through a join withdrawn after a signal handler's exception
# --------------------------------------------------------------------------


class Interrupted(Exception):
    """What the SIGALRM handler raises: a timeout, as users write one."""


def _raise_interrupted(_signum: int, _frame: object) -> None:
    raise Interrupted


@netmcore.process
def gated(gate_r: int) -> str:
    """Block until one byte can be read from the gate, then return it."""
    return os.read(gate_r, 1).decode()


def _join_withdrawn(pid: netmcore.ProcessId[str], in_the_withdrawal: type[BaseException]) -> str:
    """Join ``pid``, which still runs: a SIGALRM's handler raises as the
    join reads the link (its request sent), and the withdrawal of the join
    meets ``in_the_withdrawal`` as it looks for a late outcome (the cancel
    answered), once. What the join raised, and how often the withdrawal
    looked."""
    link: Any = _context.current.link
    recv, take = link.recv, link.take
    looked: list[int] = []

    def interrupted_recv(flags: int = 0) -> Any:
        link.recv = recv
        signal.raise_signal(signal.SIGALRM)  # its handler raises as this returns
        return recv(flags)

    def failing_take(rid: int) -> Any:
        looked.append(rid)
        if len(looked) == 1:  # an Interrupted: a second handler's exception
            raise in_the_withdrawal("in the withdrawal")
        return take(rid)

    old = signal.signal(signal.SIGALRM, _raise_interrupted)
    link.recv, link.take = interrupted_recv, failing_take
    try:
        text = outcome_text(lambda: gated.join(pid))
    finally:
        link.recv, link.take = recv, take
        signal.signal(signal.SIGALRM, old)
    return f"{text}; looked {len(looked)} time(s)"


@netmcore.process
def withdrawn_joins(gate: tuple[int, int]) -> list[str]:
    gate_r, gate_w = gate
    pid = gated.start(gate_r)
    seen = [_join_withdrawn(pid, Interrupted), _join_withdrawn(pid, TypeError)]
    os.write(gate_w, b"g")
    seen.append(outcome_text(lambda: gated.join(pid)))  # neither join used it up
    return seen


def test_a_joins_withdrawal_holds_a_second_interrupt_and_stops_at_a_failure_of_its_own(
    pipes: Callable[[], tuple[int, int]],
) -> None:
    """Before, the withdrawal tried again after the TypeError too (looked
    twice), as it would have for ever at one that came every time."""
    held, failed, joined = run_scenario(withdrawn_joins, pipes())
    assert held == "Interrupted: in the withdrawal; looked 2 time(s)"
    assert failed == "TypeError: in the withdrawal; looked 1 time(s)"
    assert joined == "returned 'g'"
