"""join(pid, timeout=...): a wait with a limit, as Future.result and
Process.join have. Past it, TimeoutError, and the join is not used up."""

from __future__ import annotations

import math
import os
import threading
import time
from typing import Any

import pytest
from scenario import SYSCALLS, in_master, run_scenario, wait_until_main_thread_blocks

import netmcore
from netmcore._master import JOIN_TIMERS_MIN, Conn

TIMEOUT_TEXT = "timed out after"


@netmcore.process
def jt_gated(gate_r: int) -> str:
    """Block until one byte can be read from the gate, then return it."""
    return os.read(gate_r, 1).decode()


@netmcore.process
def jt_square(k: int) -> int:
    return k * k


def _timeout_text(call: Any) -> str:
    try:
        call()
    except TimeoutError as exc:
        return str(exc)
    return "no TimeoutError"


@netmcore.process
def jt_times_out_then_joins(gate: tuple[int, int]) -> list[Any]:
    gate_r, gate_w = gate
    pid = jt_gated.start(gate_r)
    t0 = time.monotonic()
    seen: list[Any] = [pid.n, _timeout_text(lambda: jt_gated.join(pid, timeout=0.05))]
    seen.append(time.monotonic() - t0 >= 0.05)
    seen.append(_timeout_text(lambda: jt_gated.join(pid, timeout=0)))  # a try
    seen.append(_timeout_text(lambda: jt_gated.join_outcome(pid, timeout=0.01)))
    os.write(gate_w, b"g")
    seen.append(jt_gated.join(pid, timeout=math.inf))  # no limit
    return seen


def test_a_join_past_its_timeout_raises_and_the_process_can_be_joined_again(
    gate: tuple[int, int],
) -> None:
    n, first, waited, tried, outcome, value = run_scenario(jt_times_out_then_joins, gate)
    # The message names the process and the timeout, and says what to do.
    assert f"join of process {n} timed out after 0.05 s: it has not ended" in first
    assert "not used up: join it again" in first
    assert waited is True
    assert "timed out after 0 s" in tried
    assert "timed out after 0.01 s" in outcome
    assert value == "g"


@netmcore.process
def jt_opened_while_waiting(gate: tuple[int, int]) -> list[Any]:
    """The process ends while a timed join waits for it (in the master): the
    outcome answers the join, the timer does not, and nothing comes later."""
    gate_r, gate_w = gate
    pid = jt_gated.start(gate_r)

    def open_once_the_join_waits() -> None:
        recvfrom = SYSCALLS["recvfrom"] if SYSCALLS else -1
        wait_until_main_thread_blocks(lambda call: call[0] == recvfrom)
        os.write(gate_w, b"w")

    opener = threading.Thread(target=open_once_the_join_waits)
    opener.start()
    got = jt_gated.join_outcome(pid, timeout=0.5)
    opener.join()
    assert isinstance(got, netmcore.Success)
    # Past the first join's deadline (its timer is left in the master): a
    # second timed join on this link gets its own answer, not the stale one.
    pid2 = jt_gated.start(gate_r)
    late = _timeout_text(lambda: jt_gated.join(pid2, timeout=0.7))
    os.write(gate_w, b"x")
    return [got.value, late, jt_gated.join(pid2)]


@pytest.mark.skipif(SYSCALLS is None, reason="the system call numbers of this machine are unknown")
def test_a_timed_join_is_answered_by_an_outcome_that_comes_in_time(gate: tuple[int, int]) -> None:
    got, late, second = run_scenario(jt_opened_while_waiting, gate)
    assert got == "w"
    assert "timed out after 0.7 s" in late
    assert second == "x"


@netmcore.process
def jt_race(n: int) -> list[int | None]:
    """Joins whose deadline falls about when their process ends: each gives
    the value, or TimeoutError and then the value. None is lost either way."""
    values: list[int | None] = []
    for k in range(n):
        pid = jt_square.start(k)
        try:
            values.append(jt_square.join(pid, timeout=(k % 5) * 0.0005))
        except TimeoutError:
            values.append(jt_square.join(pid))
    return values


def test_an_outcome_racing_the_deadline_is_never_lost() -> None:
    assert run_scenario(jt_race, 60) == [k * k for k in range(60)]


@netmcore.process
def jt_threads(gate: tuple[int, int]) -> list[Any]:
    """One thread waits without limit for one process while the main thread's
    timed join of another times out: threads share the worker's link."""
    gate_r, gate_w = gate
    first, second = jt_gated.start(gate_r), jt_gated.start(gate_r)
    got: list[str | None] = []
    waiter = threading.Thread(target=lambda: got.append(jt_gated.join(first)))
    waiter.start()
    timed_out = _timeout_text(lambda: jt_gated.join(second, timeout=0.05))
    os.write(gate_w, b"ab")
    waiter.join()
    return [timed_out, got, jt_gated.join(second)]


def test_a_timed_join_times_out_while_another_thread_waits_on(gate: tuple[int, int]) -> None:
    timed_out, got, other = run_scenario(jt_threads, gate)
    assert TIMEOUT_TEXT in timed_out
    assert sorted([*got, other]) == ["a", "b"]  # either process may read either byte


@netmcore.process
def jt_bad_timeouts(gate: tuple[int, int]) -> list[str]:
    gate_r, gate_w = gate
    pid = jt_gated.start(gate_r)
    errors = []
    for bad in (-1, math.nan, "1", True):
        try:
            jt_gated.join(pid, timeout=bad)  # type: ignore[arg-type]
            errors.append("no error")
        except (TypeError, ValueError) as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
    os.write(gate_w, b"k")
    errors.append(str(jt_gated.join(pid)))  # not used up by the refused calls
    return errors


def test_a_bad_timeout_is_refused_in_the_caller_and_uses_up_nothing(gate: tuple[int, int]) -> None:
    *errors, value = run_scenario(jt_bad_timeouts, gate)
    assert [e.split(":")[0] for e in errors] == [
        "ValueError",
        "ValueError",
        "TypeError",
        "TypeError",
    ]
    assert all("timeout" in e and "None (or math.inf)" in e for e in errors)
    assert errors[0].startswith("ValueError: timeout -1 is not valid")
    assert value == "k"


@netmcore.process
def jt_low_level(gate: tuple[int, int]) -> list[str]:
    gate_r, gate_w = gate
    pid = jt_gated.start(gate_r)
    seen = [_timeout_text(lambda: netmcore.join(jt_gated.join_point, pid, timeout=0.02))]
    os.write(gate_w, b"z")
    encap = netmcore.join(jt_gated.join_point, pid, timeout=60)
    assert encap is not None
    seen.append(jt_gated.output_type.unwrap(encap))
    return seen


def test_the_low_level_join_takes_a_timeout(gate: tuple[int, int]) -> None:
    timed_out, value = run_scenario(jt_low_level, gate)
    assert "timed out after 0.02 s" in timed_out
    assert value == "z"


def test_timers_of_joins_answered_early_are_swept() -> None:
    """A join answered before its deadline leaves its timer in the master's
    heap: a program that joins with timeout=3600 in a loop must not grow it
    without bound. Timers of joins that no longer wait are swept out."""

    def checks() -> list[str]:
        master = netmcore._context.current.master
        assert master is not None
        conn = Conn.__new__(Conn)  # a waiter's link: only its identity counts
        far = time.monotonic() + 3600
        for req in range(10 * JOIN_TIMERS_MIN):
            master._time_join(-1, (conn, req), far)  # process -1 is not waited on
        sizes = [str(len(master.join_timers) <= JOIN_TIMERS_MIN)]
        master.join_timers.clear()
        master._join_timers_sweep_at = JOIN_TIMERS_MIN
        return sizes

    assert in_master(checks) == ["True"]


def test_a_join_with_timeout_0_is_a_try_in_the_master() -> None:
    """The master never waits, but it may try, as its resource calls may."""
    seen: list[str] = []

    def first() -> netmcore.ProcessId[int]:
        pid = jt_square.start(6)
        # The master's loop has not run yet: the process cannot have ended for it.
        seen.append(_timeout_text(lambda: jt_square.join(pid, timeout=0)))
        try:
            jt_square.join(pid, timeout=1)
        except netmcore.ContextError as exc:
            seen.append(str(exc))
        return pid

    result = netmcore.run(
        first_process=first, extract_result=lambda _c, pid: jt_square.join(pid, timeout=0)
    )
    assert result == 36  # run has waited for every worker: it has ended
    assert "timed out after 0 s: it has not ended" in seen[0]
    assert "join(pid, timeout=0), a try" in seen[1]
