"""run says so when every running process waits in the master and none has
sent anything for a while: processes that wait for each other (a join
cycle, a box nobody sends to) hung a program without a word until its
first process ended, which here never comes."""

from __future__ import annotations

import logging
import os
import re
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from scenario import STALL_NOTICE, notice_then_ctrl_c, run_scenario

import netmcore
from netmcore import _master

NOTICE = STALL_NOTICE

_DEADLOCK = """
import sys
import netmcore
from netmcore import _master

_master.STALL_NOTICE_SECONDS = 0.2
calls = netmcore.Mbox("stall.calls", int, capacity=1)

@netmcore.process
def joins_its_starter(starter: int) -> int:
    if sys.argv[1] == "box":
        return calls.receive()  # nobody sends
    return driver.join(netmcore.ProcessId(starter)) or 0  # a join cycle

@netmcore.process
def driver(_: int) -> int:
    if sys.argv[1] == "box":
        calls.create()
    return joins_its_starter.join(
        joins_its_starter.start(netmcore.self_process_id().n)) or 0

netmcore.run(first_process=lambda: driver.start(0),
             extract_result=lambda c, pid: None, init_ctrl=netmcore.add_plugins)
"""


@pytest.mark.parametrize("case", ["join", "box"])
def test_processes_waiting_for_each_other_are_named_and_a_ctrl_c_ends_them(
    tmp_path: Path, case: str
) -> None:
    notice, rest, returncode = notice_then_ctrl_c(tmp_path, _DEADLOCK, case)
    found = re.search(
        r": (\d+) \(__main__\.driver, running for \d+ s, waiting for the join of process (\d+)\), "
        r"(\d+) \(__main__\.joins_its_starter, running for \d+ s, waiting for (.*)\)\. Unless ",
        notice,
    )
    assert found is not None, notice
    driver, joined, joiner, its_wait = found.groups()
    assert joined == joiner
    if case == "join":
        assert its_wait == f"the join of process {driver}"
    else:
        assert its_wait == "Mbox('stall.calls').receive()", its_wait
    assert (
        "waited in the master or in a box for 0.2 s or more, and none has sent anything or "
        "used the CPU" in notice
    )
    assert "(a deadlock: a join cycle, a box that nobody sends to)" in notice
    assert "python -m netmcore kill " in notice and notice.rstrip().endswith(
        f"{driver} {joiner}, or a Ctrl-C ends the run"
    )
    assert returncode != 0 and "KeyboardInterrupt" in rest, rest


def after_five_looks(
    monkeypatch: pytest.MonkeyPatch, then: Callable[[_master.Master], object]
) -> list[int]:
    """Have the master look every 0.05 s, and call ``then(master)`` after
    its fifth look; the looks made, as they are made."""
    monkeypatch.setattr(_master, "STALL_NOTICE_SECONDS", 0.05)
    looks: list[int] = []
    look = _master.Master._look_for_stall

    def counted(master: _master.Master) -> None:
        look(master)
        looks.append(1)
        if len(looks) == 5:
            then(master)

    monkeypatch.setattr(_master.Master, "_look_for_stall", counted)
    return looks


@netmcore.process
def reads_its_pipe(r: int) -> int:
    return len(os.read(r, 1))  # a wait of its own, which the master does not see


@netmcore.process
def joins_a_reader(r: int) -> int:
    return reads_its_pipe.join(reads_its_pipe.start(r)) or 0


def test_no_notice_while_a_process_waits_outside_the_master(
    pipes: Callable[[], tuple[int, int]],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The joiner waits in the master, the joined one on a pipe (it could as
    well be computing): no notice, however many times the master looks.
    The reader is let go once the master has looked five times."""
    r, w = pipes()
    looks = after_five_looks(monkeypatch, lambda _: os.write(w, b"x"))
    with caplog.at_level(logging.WARNING, logger="netmcore"):
        assert run_scenario(joins_a_reader, r) == 1
    assert len(looks) >= 5
    assert not [rec for rec in caplog.records if NOTICE in rec.getMessage()]


TICKS = netmcore.SharedVar("stall.ticks", int)
WAKE = netmcore.Mbox("stall.wake", int)


@netmcore.process
def waits_while_its_thread_works(ticks_r: int) -> int:
    """Its main thread waits in the master (a box's receive) while another
    thread sends the master a request at each tick from the test, and the
    box's message once told to stop."""

    def work() -> None:
        while os.read(ticks_r, 1) == b"t":
            TICKS.set(TICKS.get() + 1)
        WAKE.send(1)

    threading.Thread(target=work).start()
    return WAKE.receive()


@netmcore.process
def joins_a_busy_waiter(ticks_r: int) -> int:
    TICKS.create(0)
    WAKE.create()
    return waits_while_its_thread_works.join(waits_while_its_thread_works.start(ticks_r)) or 0


def test_no_notice_while_a_thread_of_a_waiting_process_talks_to_the_master(
    pipes: Callable[[], tuple[int, int]],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Every process waits in the master at each look, but a thread of one
    sends it requests between the looks: it is at work, so no notice. Each
    look is made once a request has come since the one before (a tick
    asks for it), so the test does not depend on how fast the thread is."""
    r, w = pipes()
    monkeypatch.setattr(_master, "STALL_NOTICE_SECONDS", 0.05)
    looks: list[int] = []  # the count of requests at each look
    look = _master.Master._look_for_stall

    def ticked(master: _master.Master) -> None:
        if looks and master.sent == looks[-1]:
            master.stall_at = time.monotonic() + 0.01  # the tick's request has not come yet
            return
        look(master)
        looks.append(master.sent)
        os.write(w, b"t" if len(looks) < 6 else b"s")

    monkeypatch.setattr(_master.Master, "_look_for_stall", ticked)
    with caplog.at_level(logging.WARNING, logger="netmcore"):
        assert run_scenario(joins_a_busy_waiter, r, init_ctrl=netmcore.add_plugins) == 1
    assert len(looks) >= 6
    assert not [rec for rec in caplog.records if NOTICE in rec.getMessage()]


@netmcore.process
def joins_its_joiner(joiner: int) -> int:
    return timed_joiner.join(netmcore.ProcessId(joiner)) or 0


@netmcore.process
def timed_joiner(_: int) -> int:
    pid = joins_its_joiner.start(netmcore.self_process_id().n)
    return joins_its_joiner.join(pid, timeout=60) or -1


def test_no_notice_while_a_wait_has_a_timeout(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A join cycle, one of whose joins has a timeout: it ends by itself, so
    no notice. The master looks five times, then kills the inner process."""

    def kill_the_inner_one(master: _master.Master) -> None:
        for record in master._running():
            if record.definition.name.endswith("joins_its_joiner") and record.child:
                os.kill(record.child.os_pid, signal.SIGKILL)

    looks = after_five_looks(monkeypatch, kill_the_inner_one)
    with caplog.at_level(logging.WARNING, logger="netmcore"):
        assert run_scenario(timed_joiner, 0) == -1  # its join gave None: killed
    assert len(looks) >= 5
    assert not [rec for rec in caplog.records if NOTICE in rec.getMessage()]


GATE = netmcore.PluginMutex("stall.gate")
NOBODY = netmcore.Mbox("stall.nobody", int)


@netmcore.process
def locks_then_waits(_: int) -> int:
    """Take the gate with a timeout (it waits: the driver holds it), then
    wait for a box nobody sends to."""
    GATE.lock(timeout=3600)
    return NOBODY.receive()


@netmcore.process
def stalls_after_timed_waits(fds: tuple[int, int]) -> int:
    """A join with a timeout, and a lock with one, both answered long
    before their deadlines (let go by the test's look, once each waits in
    the master); then a join of a process that waits for ever."""
    r, _ = fds
    NOBODY.create()
    quick = reads_its_pipe.start(r)
    reads_its_pipe.join(quick, timeout=3600)
    GATE.lock()
    locker = locks_then_waits.start(0)
    os.read(r, 1)
    GATE.unlock()
    return locks_then_waits.join(locker) or -1


def test_timed_waits_answered_long_ago_hold_back_no_notice(
    pipes: Callable[[], tuple[int, int]],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A timer outlives its wait: a join and a lock, each with an hour's
    timeout and answered at once, kept the notice back for that hour. The
    test's look lets each waiter go once the master shows it waiting, and
    ends the stall, once told, by killing the process stalled in the box."""
    r, w = pipes()
    monkeypatch.setattr(_master, "STALL_NOTICE_SECONDS", 0.05)
    look = _master.Master._look_for_stall
    let_go: set[str] = set()

    def driving(master: _master.Master) -> None:
        look(master)
        waits = " ".join(what for whats in master.waits().values() for what in whats)
        for what in ("the join of process", "PluginMutex('stall.gate').lock()"):
            if what in waits and what not in let_go:
                let_go.add(what)
                os.write(w, b"x")
        if any(NOTICE in rec.getMessage() for rec in caplog.records):
            for record in master._running():
                if record.definition.name.endswith("locks_then_waits") and record.child:
                    os.kill(record.child.os_pid, signal.SIGKILL)

    monkeypatch.setattr(_master.Master, "_look_for_stall", driving)
    with caplog.at_level(logging.WARNING, logger="netmcore"):
        result = run_scenario(stalls_after_timed_waits, (r, w), init_ctrl=netmcore.add_plugins)
    assert result == -1  # its join gave None: killed
    assert len(let_go) == 2
    notices = [rec.getMessage() for rec in caplog.records if NOTICE in rec.getMessage()]
    assert notices and "Mbox('stall.nobody').receive()" in notices[0]


WAKE_VAR = netmcore.SharedVar("stall.wake", int)


@netmcore.process
def computes_while_a_thread_waits(r: int) -> int:
    """A thread waits in the master for a variable nobody sets, while the
    main thread computes (until a byte comes on fd ``r``)."""
    threading.Thread(target=WAKE_VAR.wait_for_value, daemon=True).start()
    os.set_blocking(r, False)
    spins = 0
    while True:
        spins += 1  # the work
        try:
            os.read(r, 1)
        except BlockingIOError:
            continue
        return min(spins, 1)


@netmcore.process
def joins_a_computer(r: int) -> int:
    return computes_while_a_thread_waits.join(computes_while_a_thread_waits.start(r)) or 0


def test_no_notice_while_a_process_computes_beside_a_thread_that_waits(
    pipes: Callable[[], tuple[int, int]],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Every process has a wait in the master and sends nothing, but one
    computes: its CPU time grows between the looks, so no notice. Let go
    after five looks."""
    r, w = pipes()
    looks = after_five_looks(monkeypatch, lambda _: os.write(w, b"x"))
    with caplog.at_level(logging.WARNING, logger="netmcore"):
        assert run_scenario(joins_a_computer, r, init_ctrl=netmcore.add_plugins) == 1
    assert len(looks) >= 5
    assert not [rec for rec in caplog.records if NOTICE in rec.getMessage()]


def test_a_look_far_off_does_not_overflow_the_masters_wait(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """After many notices the next look is far off: the wait is capped, as
    epoll takes at most 2**31 ms (it raised OverflowError, and the master died)."""
    monkeypatch.setattr(_master, "STALL_NOTICE_SECONDS", 10.0 * 2**30)
    assert run_scenario(trivial, 7) == 7


@netmcore.process
def trivial(k: int) -> int:
    return k
