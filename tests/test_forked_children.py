"""A child that a process function forks (os.fork) shares the process's link
to the master. It must not use it: its calls are refused at once, and its
return from the process function is not the process's result. A process that
closes its link's descriptor is told so, not that the master is gone."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from scenario import run_scenario, run_script

import netmcore


@netmcore.process
def fc_square(k: int) -> int:
    return k * k


def _child_says(call: Any, w: int) -> None:
    """In a forked child: write what ``call`` raised (or returned) to ``w``, and exit."""
    try:
        text = f"returned {call()!r}"
    except BaseException as exc:
        text = f"{type(exc).__name__}: {exc}"
    os.write(w, text.encode()[:4000])
    os._exit(0)


@netmcore.process
def fc_forks_and_calls(_: int) -> list[Any]:
    """The child calls netmcore while the process itself does too (the race
    that swapped their results, or left both joins waiting for ever)."""
    r, w = os.pipe()
    calls = [
        lambda: fc_square.join(fc_square.start(3), timeout=10),
        lambda: fc_square.join_nowait(netmcore.ProcessId[int](0)),
        lambda: netmcore.create_shm(64),
    ]
    said = []
    for call in calls:
        child = os.fork()
        if child == 0:
            _child_says(call, w)
        own = fc_square.join(fc_square.start(4), timeout=10)
        os.waitpid(child, 0)
        said.append((os.read(r, 4096).decode(), own))
    os.close(r)
    os.close(w)
    return said


def test_a_forked_child_cannot_use_its_parents_link() -> None:
    said = run_scenario(fc_forks_and_calls, 0)
    for text, own in said:
        assert text.startswith("ContextError: netmcore."), text
        assert "in a child that process" in text
        assert "Start a netmcore process instead of forking" in text
        assert own == 16  # the process's own calls got their own replies


def test_a_forked_child_that_returns_does_not_give_the_processs_result(tmp_path: Path) -> None:
    # Before, the child's return was sent as the process's result, and the
    # process's own was dropped.
    result = run_script(
        tmp_path,
        """
        import os
        import netmcore

        @netmcore.process
        def forks(_: int) -> str:
            child = os.fork()
            if child == 0:
                return "the child's"  # not os._exit: it returns into netmcore's code
            _, status = os.waitpid(child, 0)
            return f"the process's (its child exited {os.waitstatus_to_exitcode(status)})"

        print(netmcore.run(
            first_process=lambda: forks.start(0),
            extract_result=lambda _c, pid: forks.join_nowait(pid),
        ))
        """,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "the process's (its child exited 0)\n"
    assert "returned from the process function: its result goes nowhere" in result.stderr
    assert "End a forked child with os._exit()" in result.stderr


def test_a_process_that_closed_its_link_is_told_so(tmp_path: Path) -> None:
    # It was MasterGone ("the netmcore master is gone"), with the master alive,
    # and the process ended with no word of why.
    result = run_script(
        tmp_path,
        """
        import os
        import netmcore

        @netmcore.process
        def square(k: int) -> int:
            return k * k

        @netmcore.process
        def closes_its_link(w: int) -> int:
            os.closerange(3, w)  # what a daemon's set-up or a sandbox does
            os.closerange(w + 1, 65536)
            try:
                square.start(2)
                said = "started"
            except BaseException as exc:
                said = f"{type(exc).__name__}: {exc}"
            os.write(w, said.encode())
            return 0  # cannot reach the master: the process ends without a result

        r, w = os.pipe()
        outcome = netmcore.run(
            first_process=lambda: closes_its_link.start(w),
            extract_result=lambda _c, pid: closes_its_link.join_outcome_nowait(pid),
        )
        print(os.read(r, 4096).decode())
        print(outcome)
        """,
    )
    said, outcome = result.stdout.splitlines()
    assert said.startswith("ContextError: this process's link to the netmcore master"), said
    assert "was closed in this process" in said
    assert "Close only the descriptors you opened" in said
    assert outcome == "exited with code 70 before returning"
    # Its end says why too: the outcome could not be sent, for the same reason.
    assert "was closed in this process" in result.stderr


def test_a_link_whose_number_a_socket_of_the_program_took_again_is_refused(
    tmp_path: Path,
) -> None:
    """The link's descriptor closed, and its number taken again by a socket
    the program opened: a start wrote its request into that socket (the
    program's own data corrupted) and waited for ever for a reply."""
    result = run_script(
        tmp_path,
        """
        import os, signal, socket
        import netmcore

        @netmcore.process
        def square(k: int) -> int:
            return k * k

        @netmcore.process
        def reuses_its_links_number(w: int) -> int:
            os.closerange(3, w)
            os.closerange(w + 1, 65536)
            pairs = [socket.socketpair() for _ in range(20)]  # they take the numbers again
            signal.alarm(20)  # a hang, should the request go out, ends as a failure
            try:
                square.start(2)
                said = "started"
            except BaseException as exc:
                said = f"{type(exc).__name__}: {exc}"
            signal.alarm(0)
            written = []
            for a, b in pairs:
                for end in (a, b):
                    end.setblocking(False)
                    try:
                        written.append(end.recv(4096))
                    except BlockingIOError:
                        pass
            os.write(w, f"{said}\\n{written}".encode())
            return 0

        r, w = os.pipe()
        outcome = netmcore.run(
            first_process=lambda: reuses_its_links_number.start(w),
            extract_result=lambda _c, pid: reuses_its_links_number.join_outcome_nowait(pid),
        )
        print(os.read(r, 4096).decode())
        print(outcome)
        """,
    )
    said, written, outcome = result.stdout.splitlines()
    assert said.startswith("ContextError: this process's link to the netmcore master"), said
    assert "its number may hold another file now" in said
    assert written == "[]"  # nothing of netmcore's went into the program's sockets
    assert outcome == "exited with code 70 before returning"


def test_a_child_the_masters_own_code_forks_cannot_act_as_the_master() -> None:
    """Its copy of the master's tables is no master: a start there forked a
    process that no master tracked, and joins read a stale copy."""
    r, w = os.pipe()

    def first() -> netmcore.ProcessId[int]:
        child = os.fork()
        if child == 0:
            _child_says(lambda: fc_square.start(3), w)
        os.waitpid(child, 0)
        return fc_square.start(4)

    try:
        result = netmcore.run(
            first_process=first, extract_result=lambda _c, pid: fc_square.join_nowait(pid)
        )
        said = os.read(r, 4096).decode()
    finally:
        os.close(r)
        os.close(w)
    assert result == 16
    assert said.startswith("ContextError: start() was called in a child that the master's own")
    assert "Start a netmcore process instead of forking" in said
