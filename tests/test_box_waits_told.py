"""A send or a receive of a Mailbox that waits with no timeout tells the
master, after a while, what it waits for: status shows it, and the stall
notice counts it, as it does a wait in the master. A producer that waits
for room in a box its joiner has not read yet (a port that joins before it
reads) hung a program without a word."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
from scenario import notice_then_ctrl_c, wait_until

import netmcore
from netmcore import _admin, _mailbox, _master
from netmcore._client import _link
from netmcore._wire import WaitingIn


@netmcore.process
def fills(box: netmcore.ResId) -> int:
    out = netmcore.Mailbox.open(box, int)
    for k in range(3):  # one slot: the second waits for the driver to read
        out.send(k)
    return 3


@netmcore.process
def listens(arg: tuple[netmcore.ResId, int]) -> int:
    calls, gate_r = arg
    got = netmcore.Mailbox.open(calls, int, receive=True).receive()
    os.read(gate_r, 1)  # a wait netmcore cannot see: none shows
    return got


@netmcore.process
def told_scenario(arg: tuple[str, int, int]) -> list[Any]:
    socket_dir, gate_r, gate_w = arg
    box = netmcore.Mailbox.create(int, slots=1)
    calls = netmcore.Mailbox.create(int, many_receivers=True)
    producer = fills.start(box.res_id)
    listener = listens.start((calls.res_id, gate_r))

    def waits() -> dict[int, list[str]]:
        return {p.id: p.waits for p in _admin.status(socket_dir).processes if p.waits}

    wait_until(lambda: set(waits()) == {producer.n, listener.n}, "both waits to show")
    shown = waits()
    calls.send(7)
    got = [box.receive() for _ in range(3)]
    # The listener went on to a wait of its own: its told wait is gone.
    wait_until(lambda: set(waits()) == {producer.n} or not waits(), "the listener's to go")
    fills.result(producer)
    after = waits()
    os.write(gate_w, b"x")
    return [
        shown[producer.n],
        shown[listener.n],
        repr(box),
        repr(calls),
        got,
        listens.result(listener),
        after,
    ]


def test_status_shows_what_a_box_wait_with_no_timeout_waits_for(
    tmp_path: Path, gate: tuple[int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_mailbox, "WAIT_TOLD_SECONDS", 0.05)
    sd = str(tmp_path / "sd")
    producer, listener, box, calls, got, heard, after = netmcore.run(
        first_process=lambda: told_scenario.start((sd, *gate)),
        extract_result=lambda _c, pid: told_scenario.result(pid, timeout=0),
        socket_directory=sd,
    )
    assert producer == [f"room in {box}, which is full"]
    assert listener == [f"a message in {calls}"]
    assert got == [0, 1, 2] and heard == 7  # the message that ended a told wait is had
    assert after == {}  # both told waits ended, with the processes on


@netmcore.process
def waits_long(arg: tuple[netmcore.ResId, float]) -> int:
    calls, timeout = arg
    try:
        return netmcore.Mailbox.open(calls, int, receive=True).receive(timeout=timeout)
    except TimeoutError:
        return -1


@netmcore.process
def timed_scenario(socket_dir: str) -> list[Any]:
    calls = netmcore.Mailbox.create(int, many_receivers=True)
    pid = waits_long.start((calls.res_id, 0.5))
    seen = []
    while (ended := waits_long.join_nowait(pid)) is None:
        seen.extend(p.waits for p in _admin.status(socket_dir).processes if p.id == pid.n)
    return [ended, [w for w in seen if w]]


def test_a_wait_with_a_timeout_is_not_told(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """It ends by itself: no stall."""
    monkeypatch.setattr(_mailbox, "WAIT_TOLD_SECONDS", 0.01)
    sd = str(tmp_path / "sd")
    ended, told = netmcore.run(
        first_process=lambda: timed_scenario.start(sd),
        extract_result=lambda _c, pid: timed_scenario.result(pid, timeout=0),
        socket_directory=sd,
    )
    assert (ended, told) == (-1, [])


_JOINS_BEFORE_IT_READS = """
import sys
import netmcore
from netmcore import _mailbox, _master

_master.STALL_NOTICE_SECONDS = 0.2
_mailbox.WAIT_TOLD_SECONDS = 0.05

@netmcore.process
def produces(box: netmcore.ResId) -> int:
    out = netmcore.Mailbox.open(box, int)
    for k in range(20):
        out.send(k)
    return 20

@netmcore.process
def listens(box: netmcore.ResId) -> int:
    return netmcore.Mailbox.open(box, int, receive=True).receive()  # nobody sends

@netmcore.process
def driver(_: int) -> int:
    if sys.argv[1] == "send":
        results = netmcore.Mailbox.create(int, slots=2)
        pid = produces.start(results.res_id)
        produces.join(pid)  # before it reads: the producer waits for room
        return sum(results.receive() for _ in range(20))
    calls = netmcore.Mailbox.create(int, many_receivers=True)
    return listens.join(listens.start(calls.res_id)) or 0

netmcore.run(first_process=lambda: driver.start(0), extract_result=lambda c, pid: None)
"""


@pytest.mark.parametrize("case", ["send", "receive"])
def test_a_process_waiting_in_a_box_for_ever_is_part_of_the_stall_notice(
    tmp_path: Path, case: str
) -> None:
    notice, _, _ = notice_then_ctrl_c(tmp_path, _JOINS_BEFORE_IT_READS, case)
    name = "produces" if case == "send" else "listens"
    found = re.search(
        r": \d+ \(__main__\.driver, running for \d+ s, waiting for the join of process \d+\), "
        rf"\d+ \(__main__\.{name}, running for \d+ s, waiting for (.*)\)\. Unless ",
        notice,
    )
    assert found is not None, notice
    if case == "send":
        assert re.fullmatch(r"room in Mailbox\(.*\), which is full", found[1]), found[1]
    else:
        assert re.fullmatch(r"a message in Mailbox\(.*\)", found[1]), found[1]
    assert "waited in the master or in a box" in notice, notice


@netmcore.process
def floods(socket_dir: str) -> list[Any]:
    """Tells of more waits than any process has threads, each of a long text
    (a forged message, a bug): the master keeps a bounded, clipped few."""
    link = _link("a test")
    for thread in range(_master.SHM_WAITS_MAX + 50):
        link.send(WaitingIn(thread, "x" * 100_000))
    me = netmcore.self_process_id().n

    def mine() -> list[str]:
        return next(p.waits for p in _admin.status(socket_dir).processes if p.id == me)

    shown = mine()  # a status request: answered after every message sent before it
    for thread in range(_master.SHM_WAITS_MAX + 50):
        link.send(WaitingIn(thread, ""))
    return [shown, mine()]


def test_the_waits_a_process_tells_of_are_bounded(tmp_path: Path) -> None:
    sd = str(tmp_path / "sd")
    shown, after = netmcore.run(
        first_process=lambda: floods.start(sd),
        extract_result=lambda _c, pid: floods.result(pid, timeout=0),
        socket_directory=sd,
    )
    # One kind, counted: status groups the waits of one kind (see _grouped).
    assert shown == ["x" * _master.SHM_WAIT_TEXT_MAX + f" (x{_master.SHM_WAITS_MAX})"], [
        w[-20:] for w in shown
    ]
    assert after == []
