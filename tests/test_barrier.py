"""PluginBarrier: threading.Barrier across processes, served by the master.

Scenarios run as the first process (see test_plugins). Synchronisation is
deterministic: :class:`test_plugins.Queued` returns once the master has
queued a waiting call, and a semaphore tells one step to another process.
A barrier that does not break when it should shows as a hang, which the
per-test timeout turns into a failure.
"""

from __future__ import annotations

import os
import re
import signal
import threading
from collections.abc import Callable
from typing import Any

import pytest
import scenario
from test_plugins import Queued, err, signal_sem

import netmcore
from netmcore import PluginBarrier, PluginSemaphore, _context

pytestmark = pytest.mark.timeout(30)


def _run(proc: Any, arg: Any) -> Any:
    return scenario.run_scenario(proc, arg, init_ctrl=netmcore.add_plugins)


def broken(call: Callable[[], object]) -> str:
    """What ``call`` raised, which must be a BrokenBarrierError (also
    threading's); its message."""
    try:
        got = call()
    except netmcore.BrokenBarrierError as exc:
        assert isinstance(exc, threading.BrokenBarrierError)
        return str(exc)
    raise AssertionError(f"the barrier let the call through: {got!r}")


# --------------------------------------------------------------------------
# Rounds
# --------------------------------------------------------------------------


@netmcore.process
def party(rounds: int) -> list[tuple[int, int]]:
    """Arrive (counted by the semaphore), wait, and see how many have arrived."""
    barrier, arrived = PluginBarrier("rounds", 3), PluginSemaphore("arrived")
    seen = []
    for _ in range(rounds):
        arrived.increment()
        place = barrier.wait()
        seen.append((place, arrived.get()))
    return seen


@netmcore.process
def three_parties(rounds: int) -> list[list[tuple[int, int]]]:
    PluginSemaphore("arrived").create(0)
    pids = [party.start(rounds) for _ in range(3)]
    return [party.result(pid) for pid in pids]


def test_each_round_lets_its_parties_go_once_all_have_come() -> None:
    rounds = 5
    seen = _run(three_parties, rounds)
    for k in range(rounds):
        places = sorted(s[k][0] for s in seen)
        assert places == [0, 1, 2], f"round {k}: places {places}"
        # Nobody passed round k before all three had arrived at it.
        assert all(s[k][1] >= 3 * (k + 1) for s in seen), f"round {k}: {seen}"


# --------------------------------------------------------------------------
# A party that fails breaks it
# --------------------------------------------------------------------------


@netmcore.process
def waits_at(name: str) -> str:
    return broken(lambda: PluginBarrier(name, 2).wait())


@netmcore.process
def fails_before_its_first_wait(name: str) -> None:
    PluginBarrier(name, 2).create()  # a party from here on
    raise RuntimeError("diverged at step 10")


@netmcore.process
def a_party_fails(_: None) -> list[str]:
    barrier = PluginBarrier("fail", 2)
    waiter = waits_at.start("fail")
    failer = fails_before_its_first_wait.start("fail")
    seen = [
        waits_at.result(waiter),
        type(fails_before_its_first_wait.join_outcome(failer)).__name__,
    ]
    seen.append(broken(barrier.wait))  # broken until a reset
    barrier.reset()
    helper = Queued(barrier.wait)
    seen.append(str(sorted([barrier.wait(), helper.result()])))
    return seen


def test_a_party_that_fails_breaks_it_for_those_that_wait_and_those_that_come_later() -> None:
    """A party's failure, before or as the other waits: without the break,
    the other waited for ever (a hand-built barrier hung the whole run)."""
    waited, failed, later, after_reset = _run(a_party_fails, None)
    assert "raised RuntimeError: diverged at step 10" in waited
    assert "one of its parties" in waited and "fails_before_its_first_wait" in waited
    assert "reset()" in waited
    assert failed == "Raised"
    assert "raised RuntimeError: diverged at step 10" in later
    assert after_reset == "[0, 1]"


@netmcore.process
def killed_as_it_waits(name: str) -> None:
    barrier = PluginBarrier(name, 3)
    barrier.create()
    PluginSemaphore("victim.ready").increment()
    barrier.wait()


@netmcore.process
def waits_at_3(name: str) -> str:
    return broken(lambda: PluginBarrier(name, 3).wait())


@netmcore.process
def a_party_is_killed(_: None) -> str:
    ready = signal_sem("victim.ready")
    victim = killed_as_it_waits.start("killed")
    ready.decrement()  # a party now, waiting or about to
    bystander = waits_at_3.start("killed")
    netmcore.kill(victim)
    killed_as_it_waits.join_outcome(victim)
    return waits_at_3.result(bystander)


def test_a_party_killed_breaks_it() -> None:
    message = _run(a_party_is_killed, None)
    assert "killed_as_it_waits), one of its parties, ended without a result" in message
    assert "killed by signal SIGKILL" in message


# --------------------------------------------------------------------------
# Timeouts, interrupts, abort, reset, destroy
# --------------------------------------------------------------------------


class Interrupted(Exception):
    """What the SIGALRM handler raises: a timeout, as users write one."""


def _raise_interrupted(_signum: int, _frame: object) -> None:
    raise Interrupted


def interrupted_wait(barrier: PluginBarrier) -> str:
    """A wait whose request is sent, left by a SIGALRM handler's exception
    as it reads the link for the answer."""
    link: Any = _context.current.link
    recv = link.recv

    def interrupted_recv(flags: int = 0) -> Any:
        link.recv = recv
        signal.raise_signal(signal.SIGALRM)  # its handler raises as this returns
        return recv(flags)

    old = signal.signal(signal.SIGALRM, _raise_interrupted)
    link.recv = interrupted_recv
    try:
        return f"not interrupted: {barrier.wait()}"
    except Interrupted:
        return "interrupted"
    finally:
        link.recv = recv
        signal.signal(signal.SIGALRM, old)


@netmcore.process
def interrupted_then_timed_out(_: None) -> list[str]:
    barrier = PluginBarrier("t", 2)
    seen = [interrupted_wait(barrier)]
    # Its arrival was withdrawn: this wait is alone, and times out (had
    # the interrupted one stayed, it would have ended the round, at place 1).
    seen.append(broken(lambda: barrier.wait(timeout=0.2)))
    seen.append(broken(barrier.wait))  # broken until a reset
    barrier.reset()
    helper = Queued(barrier.wait)
    seen.append(str(sorted([barrier.wait(timeout=10), helper.result()])))
    return seen


def test_an_interrupted_wait_is_withdrawn_and_a_timeout_breaks_it() -> None:
    interrupted, timed_out, later, after_reset = _run(interrupted_then_timed_out, None)
    assert interrupted == "interrupted"
    assert "PluginBarrier('t', 2).wait(): the barrier is broken" in timed_out
    assert re.search(r"as a wait of process \d+ timed out", timed_out)
    assert re.search(r"as a wait of process \d+ timed out", later)
    assert after_reset == "[0, 1]"


@netmcore.process
def abort_reset_destroy(_: None) -> list[str]:
    barrier = PluginBarrier("a", 2)
    waiting = Queued(barrier.wait)
    barrier.abort()
    seen = [broken(waiting.result), broken(barrier.wait)]
    barrier.reset()
    waiting = Queued(barrier.wait)
    barrier.reset()  # as one waits: told, and the barrier is fresh
    seen.append(broken(waiting.result))
    waiting = Queued(barrier.wait)
    seen.append(str(sorted([barrier.wait(), waiting.result()])))
    waiting = Queued(barrier.wait)
    seen.append(str(barrier.destroy()))
    seen.append(str(err(waiting.result)))
    seen.append(str(barrier.destroy()))
    return seen


def test_abort_breaks_it_reset_mends_it_and_destroy_fails_its_waiters() -> None:
    aborted, later, reset, after_reset, destroyed, waiter, again = _run(abort_reset_destroy, None)
    assert re.search(r"as it was aborted by process \d+;", aborted)
    assert re.search(r"as it was aborted by process \d+;", later)
    assert "as it was reset as they waited" in reset
    assert after_reset == "[0, 1]"
    assert destroyed == "True"
    assert waiter == str(["PluginError", "barrier 'a' was destroyed"])
    assert again == "False"


# --------------------------------------------------------------------------
# Bad uses
# --------------------------------------------------------------------------


@netmcore.process
def bad_uses(_: None) -> list[list[str]]:
    PluginBarrier("two", 2).create()
    return [
        err(lambda: PluginBarrier("two", 3).wait()),
        err(lambda: PluginBarrier("two", 3).create()),
        err(lambda: PluginBarrier("x", 0)),
        err(lambda: PluginBarrier("x", "2")),  # type: ignore[arg-type]
        err(lambda: PluginBarrier("", 2)),
        err(lambda: PluginBarrier("one", 1).wait()),  # the only party: it goes at once
    ]


def test_bad_uses_are_refused_before_anything_changes() -> None:
    other, create, zero, text, name, alone = _run(bad_uses, None)
    assert other[0] == "PluginError"
    assert "barrier 'two' has 2 parties, not 3" in other[1]
    assert "PluginBarrier('two', 2)" in other[1]
    assert create == other
    assert zero[0] == "ValueError" and "parties 0" in zero[1]
    assert text[0] == "TypeError" and "parties" in text[1]
    assert name[0] == "ValueError"
    assert alone == ["none", "0"]


@netmcore.process
def noop(_: None) -> None:
    pass


def test_a_wait_in_the_masters_own_code_is_refused_if_it_would_wait() -> None:
    seen: list[list[str]] = []

    def first() -> netmcore.ProcessId[None]:
        seen.append(err(lambda: PluginBarrier("m", 2).wait()))
        seen.append(err(lambda: PluginBarrier("solo", 1).wait()))
        # The refused wait made nothing: not even the barrier, with its parties.
        seen.append(err(lambda: PluginBarrier("m", 3).create()))
        return noop.start(None)

    netmcore.run(
        first_process=first,
        extract_result=lambda _c, pid: noop.join_outcome_nowait(pid),
        init_ctrl=netmcore.add_plugins,
    )
    assert seen[0][0] == "ContextError"
    assert "PluginBarrier('m', 2).wait() with 0 of its parties there" in seen[0][1]
    assert seen[1] == ["none", "0"]
    assert seen[2] == ["none", "True"]


# --------------------------------------------------------------------------
# Who is a party
# --------------------------------------------------------------------------


@netmcore.process
def supervisor(name: str) -> None:
    barrier = PluginBarrier(name, 2)
    barrier.abort()
    barrier.reset()
    raise RuntimeError("the supervisor failed")


@netmcore.process
def a_supervisor_fails(_: None) -> list[str]:
    pid = supervisor.start("sup")
    seen = [type(supervisor.join_outcome(pid)).__name__]
    barrier = PluginBarrier("sup", 2)
    other = Queued(barrier.wait)
    seen.append(str(sorted([barrier.wait(), other.result()])))
    return seen


def test_abort_and_reset_do_not_make_a_party() -> None:
    """Before, they did: the supervisor's failure broke the barrier."""
    assert _run(a_supervisor_fails, None) == ["Raised", "[0, 1]"]


@netmcore.process
def returns_as_its_thread_waits(name: str) -> str:
    Queued(PluginBarrier(name, 2).wait)  # queued in the master; the process returns
    return "returned"


@netmcore.process
def a_party_returns_as_its_thread_waits(_: None) -> list[str]:
    pid = returns_as_its_thread_waits.start("thread")
    seen = [returns_as_its_thread_waits.result(pid)]  # its end is known to the master now
    seen.append(broken(PluginBarrier("thread", 2).wait))
    return seen


def test_a_process_that_returns_as_a_thread_of_it_waits_breaks_it() -> None:
    """Before, that arrival was dropped, and the others waited for ever."""
    returned, message = _run(a_party_returns_as_its_thread_waits, None)
    assert returned == "returned"
    assert re.search(r"as process \d+ ended as a thread of it waited at it", message), message


@netmcore.process
def told_then_fails(gate_r: int) -> None:
    try:
        PluginBarrier("told", 2).wait()
    except netmcore.BrokenBarrierError:
        PluginSemaphore("told.seen").increment()
        os.read(gate_r, 1)
        raise


@netmcore.process
def a_told_party_fails_after_the_reset(gate: tuple[int, int]) -> str:
    gate_r, gate_w = gate
    seen = signal_sem("told.seen")
    told = told_then_fails.start(gate_r)
    barrier = PluginBarrier("told", 2)
    barrier.create()
    barrier.abort()  # the waiting party is told
    seen.decrement()
    barrier.reset()
    os.write(gate_w, b"g")  # now it fails, of the error it was told
    told_then_fails.join_outcome(told)
    other = Queued(barrier.wait)
    return str(sorted([barrier.wait(), other.result()]))


def test_a_party_told_of_the_break_does_not_break_it_again_by_failing(
    pipes: Callable[[], tuple[int, int]],
) -> None:
    """Before, its failure, reaching the master after the reset, broke the
    barrier the others had just mended."""
    assert _run(a_told_party_fails_after_the_reset, pipes()) == "[0, 1]"
