"""Edges of the master found by a review of the core runtime:

- a spare the master could not send its assignment to was dropped from the
  pool but never ended, and the run waited for it for ever;
- a type's name travelled whole in every start and result: a long one (a
  Literal of many values) made them too large for a message;
- a Controller used in a worker described its copy of the master, as it was
  at the fork ("no processes"), instead of refusing;
- the link of a child that ended was read 64 messages at most: a Finished
  behind more was lost;
- a thread of a process that had returned could use up a join, its outcome
  going with the process as it exited.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import re
import select
import shlex
import socket
import subprocess
import sys
import typing
from pathlib import Path
from typing import Any

import pytest
from scenario import in_master, run_scenario

import netmcore
from netmcore import _master, _wire
from netmcore._wire import (
    Assign,
    Done,
    JoinCancel,
    JoinReq,
    Returned,
    StartReq,
    WireEncap,
    decoder,
    encoder,
)


@netmcore.process
def me_square(k: int) -> int:
    return k * k


@netmcore.process
def me_squares(n: int) -> list[int]:
    return [me_square.result(me_square.start(k)) for k in range(n)]


def test_a_spare_that_cannot_take_its_assignment_is_ended(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each first send of an Assign to a spare fails, as a send error of a
    live peer would: the spare is ended, the process goes to another one
    (or a fresh fork), and the run ends."""
    real_send = _master.Conn.send
    refused: set[int] = set()

    def send(conn: _master.Conn, msg: Any) -> bool:
        if isinstance(msg, Assign) and msg.pid not in refused:
            refused.add(msg.pid)
            return False
        return real_send(conn, msg)

    monkeypatch.setattr(_master.Conn, "send", send)
    assert run_scenario(me_squares, 12) == [k * k for k in range(12)]
    assert refused  # spares took starts, and were refused


Code = typing.Literal[tuple(f"code_{i:05d}" for i in range(20_000))]  # type: ignore[valid-type]


class LongNamed(netmcore.ProcessDef[Code, Code]):  # type: ignore[valid-type]
    """Its types' names take 240,000 characters."""

    def run(self, arg: Code) -> Code:  # type: ignore[valid-type]
        return arg


@netmcore.process
def me_long_names(k: int) -> str:
    pid = LongNamed.start(f"code_{k:05d}")
    return str(LongNamed.result(pid))


def test_a_type_with_a_long_name_starts_and_returns() -> None:
    assert run_scenario(me_long_names, 7) == "code_00007"


CONTROLLERS: list[netmcore.Controller] = []


@netmcore.process
def me_use_controller(_: int) -> list[str]:
    texts = []
    for call in (CONTROLLERS[0].processes, lambda: netmcore.add_plugins(CONTROLLERS[0])):
        try:
            call()
            texts.append("no error")
        except netmcore.ContextError as exc:
            texts.append(str(exc))
    return texts


def test_a_controller_refuses_a_worker() -> None:
    CONTROLLERS.clear()
    try:
        texts = run_scenario(me_use_controller, 0, init_ctrl=CONTROLLERS.append)
    finally:
        CONTROLLERS.clear()
    assert len(texts) == 2
    for text in texts:
        assert "not in the master" in text and "init_ctrl and extract_result" in text


def test_the_link_of_an_ended_child_is_read_to_its_end() -> None:
    """More messages than one turn's batch: all are read and answered."""

    def checks() -> list[str]:
        master = netmcore._context.current.master
        assert master is not None
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with ours, theirs:
            conn = _master.Conn(ours, master)
            count = 3 * _master._MAX_BATCH
            for rid in range(1, count + 1):
                theirs.send(encoder.encode(JoinCancel(rid=0, req=rid)))
            master._read(conn, batch=None)
            theirs.setblocking(False)
            answers = []
            while True:
                try:
                    answers.append(decoder.decode(theirs.recv(1024)))
                except BlockingIOError:
                    break
        return [str(len(answers)), str(all(isinstance(a, Done) for a in answers)), str(count)]

    answered, all_done, sent = in_master(checks)
    assert answered == sent and all_done == "True"


def test_a_thread_of_a_returned_process_cannot_join() -> None:
    def checks() -> list[str]:
        master = netmcore._context.current.master
        assert master is not None
        pid = me_square.start(3)
        record = master.records[pid.n]
        returned = Returned(WireEncap("int", "f", b"\x09"))
        conn = _master.Conn.__new__(_master.Conn)
        conn.child = _master.Child(
            0,
            conn,
            -1,
            record=_master.Record(-5, record.definition, record.arg, 0.0, outcome=returned),
        )
        try:
            master._join_request(conn, JoinReq(me_square.join_point.n, pid.n, False))
        except netmcore.ContextError as exc:
            return [str(exc)]
        return ["no error"]

    (text,) = in_master(checks)
    assert "whose function has returned cannot join" in text


@netmcore.process
def me_large_arg(job: tuple[int, bytes]) -> int:
    """Say through the pipe that the argument came whole."""
    fd, data = job
    os.write(fd, b"ok" if data == b"L" * len(data) else b"no")
    return len(data)


class _Tick(Exception):
    pass


@netmcore.process
def me_start_cut_after_its_answer(gate: tuple[int, int]) -> list[str]:
    """An exception (a signal handler's) once a start's answer is in, before
    start returns: the process started, and its argument, in shared memory
    (over 64 KiB), is still there for it (the start threw it away)."""
    gate_r, gate_w = gate
    real = _wire.Link.request
    cut: list[bool] = []

    def request(link: Any, msg: Any, *args: Any, **kwargs: Any) -> Any:
        reply = real(link, msg, *args, **kwargs)
        if isinstance(msg, StartReq) and not cut:
            cut.append(True)
            raise _Tick
        return reply

    _wire.Link.request = request  # type: ignore[method-assign]
    try:
        me_large_arg.start((gate_w, b"L" * 200_000))
    except _Tick:
        pass
    finally:
        _wire.Link.request = real  # type: ignore[method-assign]
    ready, _, _ = select.select([gate_r], [], [], 10)  # a guard against a hang, not a wait
    return [os.read(gate_r, 2).decode() if ready else "nothing came"]


def test_a_start_cut_short_once_answered_leaves_its_argument(gate: tuple[int, int]) -> None:
    assert run_scenario(me_start_cut_after_its_answer, gate) == ["ok"]


@netmcore.process
def me_gated(gate_r: int) -> str:
    return os.read(gate_r, 1).decode()


@netmcore.process
def me_leave_one_running(gate_r: int) -> int:
    """Start a process, give up on it, and return its id: run waits for it."""
    pid = me_gated.start(gate_r)
    with contextlib.suppress(TimeoutError):
        me_gated.result(pid, timeout=0)
    return pid.n


def test_run_says_which_processes_it_still_waits_for(
    gate: tuple[int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process the first one left running keeps run waiting: after a
    while, the master says for which, and what to do. The log line opens
    the gate here, so that the process, and run, can end."""
    monkeypatch.setattr(_master, "WAIT_NOTICE_SECONDS", 0.05)
    gate_r, gate_w = gate
    said: list[str] = []

    class OpenTheGate(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "run waits for" in record.getMessage():
                said.append(record.getMessage())
                os.write(gate_w, b"x")

    handler = OpenTheGate()
    logging.getLogger("netmcore").addHandler(handler)
    try:
        n = run_scenario(me_leave_one_running, gate_r)
    finally:
        logging.getLogger("netmcore").removeHandler(handler)
    assert len(said) == 1
    assert f"waits for 1 process(es) still running: {n} (" in said[0]
    assert "me_gated, running for 0 s)" in said[0] and "netmcore.kill(pid)" in said[0]


@netmcore.process
def me_waits_on_a_box(_: int) -> str:
    try:
        return str(netmcore.Mbox("nobody sends", int).receive(timeout=2))
    except TimeoutError:
        return "timed out"


@netmcore.process
def me_leave_one_waiting(_: int) -> int:
    """Start a process that waits in the master (an Mbox receive, for 2 s),
    and return its id: run waits for it."""
    netmcore.Mbox("nobody sends", int).create()
    return me_waits_on_a_box.start(0).n


def test_run_says_what_the_processes_it_waits_for_wait_for(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """In the master: a wait in shared memory is not seen there."""
    monkeypatch.setattr(_master, "WAIT_NOTICE_SECONDS", 0.05)
    said: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "run waits for" in record.getMessage():
                said.append(record.getMessage())

    handler = Keep()
    logging.getLogger("netmcore").addHandler(handler)
    try:
        n = run_scenario(me_leave_one_waiting, 0, init_ctrl=netmcore.add_plugins)
    finally:
        logging.getLogger("netmcore").removeHandler(handler)
    waiting = (
        f"{n} (test_master_edges.me_waits_on_a_box, running for 0 s, "
        "waiting for Mbox('nobody sends')"
    )
    # The first notice may come before its receive has reached the master.
    assert any(f"{waiting}.receive())" in line for line in said), said


@netmcore.process
def me_echo(k: int) -> int:
    return k


def test_the_command_that_run_says_ends_the_processes_it_waits_for(
    gate: tuple[int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The notice names a shell command that ends them, for a first process
    that forgot one (a Ray user's actor, say): a worker that runs on, which
    its netmcore.kill(pid) needed, is rarely there. Run as the notice says,
    it ends the process, and run returns (a per-test timeout, if not)."""
    monkeypatch.setattr(_master, "WAIT_NOTICE_SECONDS", 0.05)
    gate_r, _ = gate
    commands: list[subprocess.Popen[str]] = []

    class RunTheCommand(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            found = re.search(
                r"from a shell \((python -m netmcore kill .*?)\)", record.getMessage()
            )
            if found and not commands:  # not waited for here: the master answers it
                argv = [sys.executable, *shlex.split(found.group(1))[1:]]
                commands.append(
                    subprocess.Popen(
                        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
                    )
                )

    handler = RunTheCommand()
    logging.getLogger("netmcore").addHandler(handler)
    try:
        n = run_scenario(me_leave_one_running, gate_r)
    finally:
        logging.getLogger("netmcore").removeHandler(handler)
    [command] = commands
    out, err = command.communicate(timeout=60)
    assert (command.returncode, out, err) == (0, f"process {n}: sent SIGKILL\n", "")


def test_an_admin_client_still_connected_as_run_ends_has_its_link_closed(
    tmp_path: Path,
) -> None:
    """Before: the master's end of an admin client's link (netmcore status,
    kill) that was still open as run ended was left to the garbage
    collector, whose ResourceWarning failed a test now and then."""
    sd = tmp_path / "sd"
    client = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)

    def first() -> netmcore.ProcessId[int]:
        client.connect(str(sd / "netmcore.sock"))  # the master accepts it in its loop
        return me_echo.start(1)

    try:
        result = netmcore.run(
            first_process=first,
            extract_result=lambda _c, pid: me_echo.join_nowait(pid),
            socket_directory=str(sd),
        )
        gc.collect()  # an unclosed socket object would warn here (an error under pytest)
        assert result == 1
        assert client.recv(1) == b""  # the master's end is closed
    finally:
        client.close()
