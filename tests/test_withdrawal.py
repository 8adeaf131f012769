"""A request's withdrawal (``Link.request``'s ``abandon``), repeated through
signal handlers' exceptions, not through failures of its own.

Before, a function of each caller (repeat_through_interrupts) repeated it:
a second exception as that function started ended the withdrawal (a join's
outcome, or a resource's grant, was then lost), and it was repeated after
every exception but MasterGone, so one that failed every time (a bug's
TypeError, a RecursionError) was tried again for ever, each Ctrl-C
meanwhile held. The withdrawal is now repeated in ``Link.request``'s own
frame. Each test here failed before.
"""

from __future__ import annotations

import dis
import errno
import os
import select
import signal
import socket
import sys
import threading
from collections.abc import Callable
from typing import Any

import msgspec
import pytest
from scenario import outcome_text, run_scenario
from test_holds_beside_threads import held, left_since

import netmcore
from netmcore import _context, _plugins
from netmcore._errors import ContextError
from netmcore._wire import TRIES_MAX, Asked, JoinCancel, Link, PluginReply, PluginReq

pytestmark = pytest.mark.timeout(60)


def _steps(*script: BaseException | None) -> tuple[Callable[[int], None], list[int]]:
    """A withdrawal that raises the script's exceptions, one a try, and
    completes at a None or past the script's end; and the list of its tries."""
    tries: list[int] = []

    def step(_rid: int) -> None:
        tries.append(1)
        if len(tries) <= len(script) and (exc := script[len(tries) - 1]) is not None:
            raise exc

    return step, tries


class Left(Exception):
    """What a signal handler raises as the request waits: it is withdrawn."""


def _withdrawn(withdraw: Callable[[int], None]) -> None:
    """A request that went out, on a link whose master never answers, left
    by a handler's exception (``Left``) as it waits: ``withdraw`` is its
    withdrawal. Raises what the request raises."""
    ours, masters = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    link = Link(ours)

    def read_one() -> None:
        raise Left

    link._read_one = read_one  # type: ignore[method-assign]
    try:
        link.request(JoinCancel(1), withdraw)
    finally:
        ours.close()
        masters.close()


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
def test_a_failure_of_the_withdrawals_own_is_raised_at_once_not_retried(failure: Exception) -> None:
    step, tries = _steps(failure)
    with pytest.raises(type(failure)) as raised:
        _withdrawn(step)
    assert raised.value is failure
    assert isinstance(raised.value.__context__, Left)
    assert len(tries) == 1, "a withdrawal that fails of its own was tried again"


class _Unforeseen(Exception):
    """What no rule names: a step that raises it every time still ends."""


def test_a_withdrawal_that_fails_every_time_with_what_no_rule_names_ends_at_the_last_try() -> None:
    step, tries = _steps(*[_Unforeseen("every time")] * (TRIES_MAX + 5))
    with pytest.raises(_Unforeseen):
        _withdrawn(step)
    assert len(tries) == TRIES_MAX


def test_interrupts_are_held_until_the_withdrawal_is_done_and_failures_of_its_own_are_not() -> None:
    # A handler's exceptions (a Ctrl-C's, a timeout's: an OSError with no
    # errno) are held, the step repeated, and the last raised once it is done.
    step, tries = _steps(KeyboardInterrupt(), timeout := TimeoutError("a timeout"))
    with pytest.raises(TimeoutError) as raised:
        _withdrawn(step)
    assert raised.value is timeout
    assert len(tries) == 3
    # With none, the first goes on once the withdrawal is done.
    step, tries = _steps()
    with pytest.raises(Left):
        _withdrawn(step)
    assert len(tries) == 1
    # A failure of its own after an interrupt goes on in the interrupt's
    # place, the step not tried again (as in the give-backs).
    step, tries = _steps(KeyboardInterrupt(), failure := TypeError("a bug's"))
    with pytest.raises(TypeError) as failed:
        _withdrawn(step)
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


def _join_interrupted_twice(pid: netmcore.ProcessId[str]) -> str:
    """Join ``pid``, which still runs: a SIGALRM's handler raises as the
    join reads the link (its request sent), and again just as the
    withdrawal of the join begins (at the start of its function). What the
    join raised."""
    link: Any = _context.current.link
    recv = link.recv

    def interrupted_recv(flags: int = 0) -> Any:
        link.recv = recv
        signal.raise_signal(signal.SIGALRM)  # its handler raises as this returns
        return recv(flags)

    def at_the_withdrawals_start(frame: Any, event: str, _arg: object) -> None:
        if event == "call" and frame.f_code.co_name == "_withdraw_join":
            sys.setprofile(None)
            signal.raise_signal(signal.SIGALRM)  # raises in the new frame, at its start

    old = signal.signal(signal.SIGALRM, _raise_interrupted)
    link.recv = interrupted_recv
    sys.setprofile(at_the_withdrawals_start)
    try:
        return outcome_text(lambda: gated.join(pid))
    finally:
        sys.setprofile(None)
        link.recv = recv
        signal.signal(signal.SIGALRM, old)


@netmcore.process
def joined_after_a_second_interrupt(gate: tuple[int, int]) -> list[str]:
    gate_r, gate_w = gate
    pid = gated.start(gate_r)
    seen = [_join_interrupted_twice(pid)]
    os.write(gate_w, b"g")
    seen.append(outcome_text(lambda: gated.join(pid, timeout=10)))  # not used up
    return seen


def test_a_second_interrupt_as_a_joins_withdrawal_begins_is_held(
    pipes: Callable[[], tuple[int, int]],
) -> None:
    """Before, the second exception ended the withdrawal before the loop
    that held interrupts began: the master still waited to answer the
    interrupted join, and the next join got no outcome."""
    interrupted, joined = run_scenario(joined_after_a_second_interrupt, pipes())
    assert interrupted == "Interrupted: "
    assert joined == "returned 'g'"


def _withdrawal_ends(call: Callable[[], object], step: str) -> str:
    """Make ``call`` (a request that waits) in a worker: a SIGALRM's handler
    raises as it reads the link (its request sent). The withdrawal's
    ``step`` (the link's method it calls first: a join's cancel, a resource
    call's wait for its answer) meets an interrupt; a third comes as that
    one is classified (at the start of ``failed_of_its_own``), which leaves
    ``_withdraw``; and a fourth at the jump back of ``Link.request``'s loop
    that makes it again, outside the loop's try: it ends the withdrawal,
    which is left to the thread's next request. What ``call`` raised."""
    link: Any = _context.current.link
    recv, method = link.recv, getattr(link, step)
    # (3.11 also has POP_JUMP_BACKWARD_IF_TRUE, ..., which a while loop ends with)
    jumps_back = {code for name, code in dis.opmap.items() if "JUMP_BACKWARD" in name}
    calls: list[int] = []
    failed: list[int] = []

    def interrupted_recv(flags: int = 0) -> Any:
        link.recv = recv
        signal.raise_signal(signal.SIGALRM)  # its handler raises as this returns
        return recv(flags)

    def interrupted_step(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if (
            (step == "request" and not isinstance(args[0], JoinCancel))
            or (step == "wait_reply" and len(calls) == 1)  # the request's own wait
            or failed
        ):
            return method(*args, **kwargs)
        failed.append(1)  # once (a caller may hold this function: a bound method it took)
        setattr(link, step, method)
        sys.setprofile(as_it_is_classified)
        raise Interrupted(f"in the withdrawal's {step}")

    def as_it_is_classified(frame: Any, event: str, _arg: object) -> None:
        if event == "call" and frame.f_code.co_name == "failed_of_its_own":
            sys.setprofile(None)
            outer = frame
            while outer.f_code is not Link.request.__code__:
                outer = outer.f_back
            outer.f_trace, outer.f_trace_opcodes = at_the_jump_back, True
            sys.settrace(lambda *_: None)  # (a frame's own tracer runs only with one)
            signal.raise_signal(signal.SIGALRM)  # raises in the new frame, at its start

    def at_the_jump_back(frame: Any, event: str, _arg: object) -> Any:
        if event == "opcode" and frame.f_code.co_code[frame.f_lasti] in jumps_back:
            frame.f_trace = None
            sys.settrace(None)
            signal.raise_signal(signal.SIGALRM)  # raises as the jump is made
        return at_the_jump_back

    old = signal.signal(signal.SIGALRM, _raise_interrupted)
    link.recv = interrupted_recv
    setattr(link, step, interrupted_step)
    try:
        return outcome_text(call)
    finally:
        sys.setprofile(None)
        sys.settrace(None)
        link.recv = recv
        setattr(link, step, method)
        signal.signal(signal.SIGALRM, old)


def _join_whose_withdrawal_ends(pid: netmcore.ProcessId[str]) -> str:
    """Join ``pid``, which still runs, its withdrawal ended (see
    _withdrawal_ends): the master still waits to answer the join."""
    return _withdrawal_ends(lambda: gated.join(pid), "request")


@netmcore.process
def created_as_its_withdrawal_ends(_: int) -> list[str]:
    before = held()
    seen = [_withdrawal_ends(lambda: netmcore.create_shm(64), "wait_reply")]
    link: Any = _context.current.link
    seen.append(f"unfinished: {len(link._unfinished)}")
    seen += left_since(before) or ["nothing left"]  # (its request finishes the withdrawal)
    return seen


def test_a_resource_grant_is_given_back_when_its_withdrawal_is_finished_later() -> None:
    """Before, the thread's next request read the answer, and nothing gave
    the grant back: the process stayed a user of the new object, which
    stayed in /dev/shm until it ended."""
    assert run_scenario(created_as_its_withdrawal_ends, 0) == [
        "Interrupted: ",
        "unfinished: 1",
        "nothing left",
    ]


@netmcore.process
def joined_after_an_ended_withdrawal(gates: tuple[int, int, str]) -> list[str]:
    gate_r, gate_w, next_call = gates
    pid = gated.start(gate_r)
    seen = [_join_whose_withdrawal_ends(pid)]
    os.write(gate_w, b"g")
    # The master answers the join it still waits to answer once the process
    # has ended: wait until that answer is on the link (nothing else comes
    # unasked), so that the withdrawal finds it.
    link: Any = _context.current.link
    ready, _, _ = select.select([link.fd], [], [], 30)
    seen.append("answered" if ready else "no answer within 30 s")
    other: list[netmcore.ProcessId[str]] = []
    if next_call == "start":
        # A request of any kind of this thread finishes it: the outcome is
        # kept for its next join.
        other.append(gated.start(gate_r))
        seen.append(f"unfinished: {len(link._unfinished)}")
    elif next_call == "another thread's start":
        # Another thread's leaves it to this one (run by two at once, a
        # plugin's withdrawal could give a grant back twice).
        thread = threading.Thread(target=lambda: other.append(gated.start(gate_r)))
        thread.start()
        thread.join()
        seen.append(f"unfinished: {len(link._unfinished)}")
    seen.append(outcome_text(lambda: gated.join(pid, timeout=10)))
    for p in other:
        os.write(gate_w, b"o")
        seen.append(outcome_text(lambda p=p: gated.join(p, timeout=10)))
    return seen


@pytest.mark.parametrize("next_call", ["join", "start", "another thread's start"])
def test_a_joins_withdrawal_ended_by_a_further_interrupt_is_finished_by_the_next_call(
    pipes: Callable[[], tuple[int, int]], next_call: str
) -> None:
    """Before, an exception as the withdrawal's loop went round again (as
    the last one was classified, or at its jump back) ended it: the master
    kept the join waiting, and gave the outcome to it once the process
    ended, which the worker dropped; the next join got UnknownProcess
    ("joined by another caller first"). Under a 100 us timer whose handler
    raised in netmcore's frames, about one join in 200-400 was lost so."""
    gate_r, gate_w = pipes()
    seen = run_scenario(joined_after_an_ended_withdrawal, (gate_r, gate_w, next_call))
    assert seen[:2] == ["Interrupted: ", "answered"]
    if next_call == "join":
        assert seen[2:] == ["returned 'g'"]
    else:
        left = "0" if next_call == "start" else "1"
        assert seen[2:] == [f"unfinished: {left}", "returned 'g'", "returned 'o'"]


def test_finishing_skips_a_withdrawal_done_meanwhile_and_runs_none_within_one() -> None:
    """A withdrawal finished meanwhile (by a request a signal handler made
    between two of them) is skipped: it raised KeyError. And a join made
    within a withdrawal (a handler's) leaves the others be: it ran them
    again, inside."""
    ours, masters = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    link = Link(ours)
    me = threading.get_ident()
    ran: list[int] = []

    def first(rid: int) -> None:
        ran.append(rid)
        link.finish_withdrawals()  # within a withdrawal: it does nothing
        link._unfinished.pop(3)  # the third, done meanwhile

    link._unfinished.update({1: (me, first), 2: (me, ran.append), 3: (me, ran.append)})
    try:
        link.finish_withdrawals()
    finally:
        ours.close()
        masters.close()
    assert ran == [1, 2]
    assert not link._unfinished and not link._withdrawing


def test_a_request_interrupted_as_its_slot_is_made_leaves_no_slot() -> None:
    """A handler's exception as the lock that guards the reply slots is let
    go, right after the slot is made: before, the slot stayed for good."""
    ours, masters = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    link = Link(ours)

    def as_the_lock_is_let_go(frame: Any, event: str, arg: Any) -> None:
        if (
            event == "c_return"
            and frame.f_code is Link.request.__code__
            and getattr(arg, "__name__", "") == "__exit__"
        ):
            sys.setprofile(None)
            signal.raise_signal(signal.SIGALRM)

    old = signal.signal(signal.SIGALRM, _raise_interrupted)
    try:
        for _ in range(3):
            sys.setprofile(as_the_lock_is_let_go)
            with pytest.raises(Interrupted):
                link.request(JoinCancel(1), lambda rid: None)
    finally:
        sys.setprofile(None)
        signal.signal(signal.SIGALRM, old)
        ours.close()
        masters.close()
    assert link._replies == {}


class _Master:
    """A link's stand-in for a plugin's withdrawal: it answers each request
    (the cancel, then the undo of the mutex the request got), and the
    first undo's wait for its answer is left by a handler's exception."""

    def __init__(self) -> None:
        self.ops: list[str] = []

    def request(self, msg: PluginReq, abandon: object = None, asked: Asked | None = None) -> Any:
        if asked is not None:
            asked.sent = True  # as Link.request marks it, as the request goes out
        self.ops.append(msg.op)
        if msg.op == "undo" and self.ops.count("undo") == 1:
            raise Left  # in the wait for the undo's answer
        return PluginReply(None, 0)

    def take(self, rid: int) -> PluginReply:
        return PluginReply(None, 0)  # the lock the withdrawn request got


def test_a_plugins_withdrawal_gives_back_once_however_often_it_is_repeated() -> None:
    """A grant is given back by an undo: a repeat of the withdrawal (after
    an interrupt in the undo's wait) must not undo it again, which would
    unlock a mutex twice or give a semaphore back twice. Before, each try
    sent its own."""
    master = _Master()
    withdrawn = [False]
    withdraw = _plugins._withdrawal(
        master,  # type: ignore[arg-type]
        PluginReq("mutex", "lock", "m"),
        Asked(),
        withdrawn,
    )
    with pytest.raises(Left):
        withdraw(7)
    assert not withdrawn[0]
    withdraw(7)  # the repeat, as Link.request makes it
    assert master.ops == ["cancel", "undo"]
    assert withdrawn[0]
