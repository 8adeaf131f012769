"""The admin command line: `netmcore status`, `kill`, `unlink`, and `--help`.

A worker runs the command against its own master, which is running at that
moment: no sleeps, no second master to coordinate with.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest
from scenario import wait_until

import netmcore
from netmcore import _admin, _cleanup, _ipc
from netmcore._wire import (
    MESSAGE_MAX,
    STATUS_USERS_MAX,
    ProcessInfo,
    ResourceUse,
    Status,
    encoder,
    join_status,
    status_parts,
)

CLI = [sys.executable, "-m", "netmcore"]


class CliRun(msgspec.Struct):
    code: int
    out: str
    err: str


def cli(*args: str) -> CliRun:
    done = subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=60)
    return CliRun(done.returncode, done.stdout, done.stderr)


@netmcore.process
def ask_status(args: list[str]) -> CliRun:
    segment = netmcore.create_shm(64)  # something of this process's to list
    try:
        return cli("status", *args)
    finally:
        segment.release()


@netmcore.process
def blocked_on_a_pipe(gate_r: int) -> int:
    """Waits, but not in the master: no wait shows."""
    return len(os.read(gate_r, 1))


@netmcore.process
def joins_it(pid: netmcore.ProcessId[int]) -> int:
    return blocked_on_a_pipe.join(pid) or 0


@netmcore.process
def watches_it(pid: netmcore.ProcessId[int]) -> int:
    return next(iter(blocked_on_a_pipe.as_completed([pid]))).n


@netmcore.process
def reads_the_box(_: int) -> int:
    return netmcore.Mbox("jobs", int).receive()


@netmcore.process
def threads_read_the_box(threads: int) -> int:
    got: list[int] = []
    readers = [
        threading.Thread(target=lambda: got.append(netmcore.Mbox("jobs", int).receive()))
        for _ in range(threads)
    ]
    for reader in readers:
        reader.start()
    for reader in readers:
        reader.join()
    return len(got)


@netmcore.process
def locks_the_mutex(_: int) -> int:
    with netmcore.PluginMutex("m"):
        return 1


@netmcore.process
def waits_scenario(arg: tuple[str, int, int]) -> list[Any]:
    socket_dir, gate_r, gate_w = arg
    box = netmcore.Mbox("jobs", int)
    box.create()
    mutex = netmcore.PluginMutex("m")
    mutex.lock()
    blocked = blocked_on_a_pipe.start(gate_r)
    pids = [
        joins_it.start(blocked),
        watches_it.start(blocked),
        reads_the_box.start(0),
        locks_the_mutex.start(0),
    ]
    threads = threads_read_the_box.start(3)
    dies = joins_it.start(blocked)
    me = netmcore.self_process_id().n
    expected = {
        pids[0].n: [f"the join of process {blocked.n}"],
        pids[1].n: [f"the first end of processes [{blocked.n}]"],
        pids[2].n: ["Mbox('jobs').receive()"],
        pids[3].n: [f"PluginMutex('m').lock(), held by process {me}"],
        threads.n: ["Mbox('jobs').receive() (x3)"],  # each kind once, counted
        dies.n: [f"the join of process {blocked.n}"],
    }

    def waits() -> dict[int, list[str]]:
        return {p.id: p.waits for p in _admin.status(socket_dir).processes if p.waits}

    wait_until(lambda: waits() == expected, "every wait to show")
    netmcore.kill(dies)  # its join is still in the table: it waits no more
    joins_it.join_outcome(dies)
    del expected[dies.n]
    gone = waits() == expected
    printed = [line.strip() for line in cli("status", socket_dir).out.splitlines()]
    mutex.unlock()
    for k in range(4):
        box.send(5 + k)
    os.write(gate_w, b"x")
    ends = [
        joins_it.join(pids[0]),
        watches_it.join(pids[1]),
        reads_the_box.join(pids[2]) < 9,
        locks_the_mutex.join(pids[3]),
        threads_read_the_box.join(threads),
    ]
    return [[line for line in printed if line.startswith("waits for ")], ends, blocked.n, gone]


def test_status_says_what_each_process_waits_for_in_the_master(
    tmp_path: Path, gate: tuple[int, int]
) -> None:
    """Its joins, its as_completed, its plugin calls; a process blocked
    elsewhere (a pipe, shared memory) shows none."""
    sd = str(tmp_path / "sd")
    printed, ends, blocked, gone = netmcore.run(
        first_process=lambda: waits_scenario.start((sd, *gate)),
        extract_result=lambda _c, pid: waits_scenario.result(pid, timeout=0),
        socket_directory=sd,
        init_ctrl=netmcore.add_plugins,
    )
    assert sorted(printed) == sorted(
        [
            f"waits for the join of process {blocked}",
            f"waits for the first end of processes [{blocked}]",
            "waits for Mbox('jobs').receive()",
            f"waits for PluginMutex('m').lock(), held by process {blocked - 1}",
            "waits for Mbox('jobs').receive() (x3)",
        ]
    )
    assert ends == [1, blocked, True, 1, 3]
    assert gone, "a process that died still showed its join"


def test_status_shows_a_process_s_waits_each_kind_once_and_at_most_some() -> None:
    from netmcore._master import WAITS_SHOWN, _grouped

    many = [f"the join of process {k}" for k in range(WAITS_SHOWN + 5)]
    assert _grouped(many) == [*many[:WAITS_SHOWN], "and 5 more"]
    assert _grouped(["a", "b", "a", "a"]) == ["a (x3)", "b"]


@netmcore.process
def ask_unlink(socket_dir: str) -> CliRun:
    return cli("unlink", socket_dir)


def test_status_lists_processes_and_resources(tmp_path: Path) -> None:
    sd = tmp_path / "sd"
    first, result = netmcore.run(
        first_process=lambda: ask_status.start([str(sd)]),
        extract_result=lambda _c, pid: (pid.n, ask_status.join_nowait(pid)),
        socket_directory=str(sd),
    )
    assert result is not None and result.code == 0, result
    lines = result.out.splitlines()
    assert lines[0].startswith("master pid ")
    assert any(line.endswith(f" {__name__}.ask_status") for line in lines)
    shm_lines = [line for line in lines if " posix_shm " in line]
    assert len(shm_lines) == 1
    assert shm_lines[0].split()[2] == str(first)  # used by the first process


def test_status_json(tmp_path: Path) -> None:
    sd = tmp_path / "sd"
    result = netmcore.run(
        first_process=lambda: ask_status.start([str(sd), "--json"]),
        extract_result=lambda ctrl, pid: (ctrl.master_pid, pid.n, ask_status.join_nowait(pid)),
        socket_directory=str(sd),
    )
    master_pid, first, answer = result
    assert answer is not None and answer.code == 0, answer
    status = json.loads(answer.out)
    assert status["master_pid"] == master_pid
    (process,) = status["processes"]
    assert process["id"] == first
    assert process["type"] == f"{__name__}.ask_status"
    assert process["state"] == "running"
    assert process["os_pid"] > 0
    kinds = {r["kind"]: r for r in status["resources"]}
    assert kinds["posix_shm"]["users"] == [first]
    assert kinds["posix_shm"]["name"].startswith(f"/nmc.{master_pid}.")
    assert "fork_point" in kinds
    assert "join_point" in kinds


def _long_named(k: int) -> int:
    return k


# Names this long make a run of LONG_NAMED_COUNT processes describe itself in
# more than the 200 KiB a message takes: as a run of thousands would.
_long_named.__qualname__ = "long_named_" + "x" * 2_000
long_named = netmcore.process(_long_named)
LONG_NAMED_COUNT = 120


@netmcore.process
def ask_status_of_many(args: list[str]) -> CliRun:
    pids = [long_named.start(k) for k in range(LONG_NAMED_COUNT)]
    try:
        return cli("status", *args)
    finally:
        for pid in pids:
            long_named.join(pid)


def test_status_larger_than_a_message_comes_whole(tmp_path: Path) -> None:
    # Before the fix the master refused to send it, and the tool said only
    # "unexpected reply from the master: Failed".
    sd = tmp_path / "sd"
    first, answer = netmcore.run(
        first_process=lambda: ask_status_of_many.start([str(sd), "--json"]),
        extract_result=lambda _c, pid: (pid.n, ask_status_of_many.join_nowait(pid)),
        socket_directory=str(sd),
    )
    assert answer is not None and answer.code == 0, answer
    assert len(answer.out) > 200 * 1024
    status = json.loads(answer.out)
    long_name = f"{__name__}.{_long_named.__qualname__}"
    types = sorted(p["type"] for p in status["processes"])
    assert types == [f"{__name__}.ask_status_of_many"] + [long_name] * LONG_NAMED_COUNT
    ids = [p["id"] for p in status["processes"]]
    assert ids == sorted(ids) and ids[0] == first and len(set(ids)) == len(ids)
    points = [r for r in status["resources"] if r["name"] == long_name]
    assert sorted(r["kind"] for r in points) == ["fork_point", "join_point"]


def test_status_parts_each_fit_a_message_and_join_back() -> None:
    # A resource with more users than one entry lists (thousands of live
    # processes) is cut into entries in a row, and put back together.
    processes = [ProcessInfo(n, 1000 + n, "p" * (n % 50), "running", 0.5) for n in range(6_000)]
    resources = [
        ResourceUse(1, "posix_shm", "/a", list(range(STATUS_USERS_MAX * 2 + 5))),
        ResourceUse(2, "posix_sem", "/b", []),
        ResourceUse(3, "posix_shm", "/c", [7, -1]),
    ]
    parts = status_parts(42, processes, resources)
    assert len(parts) > 2
    assert [p.more for p in parts] == [True] * (len(parts) - 1) + [False]
    assert all(len(encoder.encode(p)) <= MESSAGE_MAX for p in parts)
    assert join_status(parts) == Status(42, processes, resources)


def test_status_without_master_fails_clearly(tmp_path: Path) -> None:
    result = cli("status", str(tmp_path))
    assert result.code == 1
    assert "no netmcore master answers in" in result.err


@netmcore.process
def waits_on(gate_r: int) -> bytes:
    return os.read(gate_r, 1)


class Kills(msgspec.Struct):
    ids: list[int]
    both: CliRun
    outcomes: list[str]
    joined: CliRun
    ended: CliRun
    value: bytes | None


@netmcore.process
def kills_through_the_cli(arg: tuple[str, int, int]) -> Kills:
    """Start two processes that wait, and end them with `netmcore kill`;
    then try it on one that was joined, and on one that has ended."""
    socket_dir, gate_r, gate_w = arg
    first, second = waits_on.start(gate_r), waits_on.start(gate_r)
    both = cli("kill", socket_dir, str(first.n), str(second.n), "-s", "TERM")
    outcomes = [str(waits_on.join_outcome(first)), str(waits_on.join_outcome(second))]
    joined = cli("kill", socket_dir, str(first.n))  # joined: unknown by now
    ended = waits_on.start(gate_r)
    os.write(gate_w, b"x")
    deadline = time.monotonic() + 30
    while netmcore.kill(ended, 0) and time.monotonic() < deadline:
        os.sched_yield()  # polling a condition: until it has returned
    after = cli("kill", socket_dir, str(ended.n))
    ids = [first.n, second.n, ended.n]
    return Kills(ids, both, outcomes, joined, after, waits_on.join(ended))


def test_kill_has_the_master_signal_its_processes(tmp_path: Path, gate: tuple[int, int]) -> None:
    sd = str(tmp_path / "sd")
    seen = netmcore.run(
        first_process=lambda: kills_through_the_cli.start((sd, *gate)),
        extract_result=lambda _c, pid: kills_through_the_cli.result(pid, timeout=0),
        socket_directory=sd,
    )
    n1, n2, n3 = seen.ids
    assert seen.both.code == 0 and seen.both.err == "", seen.both
    assert seen.both.out.splitlines() == [f"process {n}: sent SIGTERM" for n in (n1, n2)]
    assert seen.outcomes == [str(netmcore.Crashed(None, signal.SIGTERM))] * 2
    assert seen.joined.code == 1 and seen.joined.out == "", seen.joined
    assert seen.joined.err.startswith(
        f"netmcore kill: process {n1}: the master in {sd!r} refused: cannot signal process "
        f"{n1}, which is unknown"
    ), seen.joined
    ended = seen.ended
    assert (ended.code, ended.out, ended.err) == (0, f"process {n3}: it had ended already\n", "")
    assert seen.value == b"x"


@pytest.mark.parametrize(
    ("signal_given", "said"),
    [("BOGUS", "'BOGUS' is not a signal: pass a name, like TERM, KILL or INT, or a number")],
)
def test_kill_refuses_a_bad_signal_before_asking(
    tmp_path: Path, signal_given: str, said: str
) -> None:
    result = cli("kill", str(tmp_path), "1", "--signal", signal_given)
    assert (result.code, result.out, result.err) == (2, "", f"netmcore kill: {said}\n")


def test_kill_without_master_fails_clearly(tmp_path: Path) -> None:
    result = cli("kill", str(tmp_path), "1")
    assert result.code == 1, result
    assert result.err.startswith(
        f"netmcore kill: process 1: no netmcore master answers in {str(tmp_path)!r}"
    ), result


def test_unlink_refuses_while_master_alive(tmp_path: Path) -> None:
    sd = tmp_path / "sd"
    result = netmcore.run(
        first_process=lambda: ask_unlink.start(str(sd)),
        extract_result=lambda ctrl, pid: (ctrl.master_pid, ask_unlink.join_nowait(pid)),
        socket_directory=str(sd),
    )
    master_pid, answer = result
    assert answer is not None
    assert answer.code == 1
    assert f"a netmcore master (pid {master_pid}) is alive in" in answer.err
    assert "nothing was removed" in answer.err


def test_unlink_removes_what_a_dead_master_left(tmp_path: Path) -> None:
    # What a SIGKILLed master leaves: a record listing live objects, a stale
    # socket and an unlocked lock file.
    sd = tmp_path / "sd"
    sd.mkdir(mode=0o700)
    shm_name = _ipc.random_name(f"/nmc.{os.getpid()}.test-admin.")
    _ipc.create_mapped(shm_name, 16).close()
    stale_file = tmp_path / "scratch"
    stale_file.write_text("x")
    record = _cleanup.Record(str(sd / _cleanup.PMANAGE_NAME))
    record.write("+", "posix_shm", shm_name)
    record.write("+", "file", str(stale_file))
    record.close(clean=False)
    (sd / "netmcore.sock").touch()
    (sd / "netmcore.lock").write_text("999999999\n")

    result = cli("unlink", str(sd))

    assert result.code == 0, result.err
    assert f"removed {shm_name}" in result.out
    assert f"removed {stale_file}" in result.out
    assert f"removed {sd / 'netmcore.sock'}" in result.out
    assert not os.path.exists(f"/dev/shm/{shm_name[1:]}")
    assert not stale_file.exists()
    assert os.listdir(sd) == []
    again = cli("unlink", str(sd))
    assert again.code == 0
    assert again.out.strip() == f"nothing to remove in {sd}"


@pytest.mark.parametrize("kind", ["SOCK_STREAM", "SOCK_SEQPACKET"])
def test_unlink_leaves_a_socket_that_another_program_listens_on(tmp_path: Path, kind: str) -> None:
    """No netmcore lock held, but a live listener on netmcore.sock: it was
    removed, as a dead master's."""
    sd = tmp_path / "sd"
    sd.mkdir(mode=0o700)
    with socket.socket(socket.AF_UNIX, getattr(socket, kind)) as listener:
        listener.bind(str(sd / "netmcore.sock"))
        listener.listen()
        result = cli("unlink", str(sd))
        assert result.code == 1
        assert f"a process listens on {sd / 'netmcore.sock'}" in result.err
        assert "nothing was removed" in result.err
        assert (sd / "netmcore.sock").exists()


def test_unlink_of_a_missing_directory_fails_clearly(tmp_path: Path) -> None:
    result = cli("unlink", str(tmp_path / "absent"))
    assert result.code == 1
    assert "is not a directory" in result.err


@pytest.mark.parametrize("command", ["bench", "status", "kill", "unlink"])
def test_subcommands_document_their_options(command: str) -> None:
    result = cli(command, "--help")
    assert result.code == 0
    assert result.out.startswith(f"usage: netmcore {command}")
    top = cli("--help")
    assert command in top.out


def test_unlink_refuses_a_directory_that_others_can_write(tmp_path: Path) -> None:
    """Like run(), `netmcore unlink` acts only on a private directory: anyone
    who can write to it could have planted a record naming any of the user's
    files for removal."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (shared / _cleanup.PMANAGE_NAME).write_text(f'+ file "{victim}"\n')

    result = cli("unlink", str(shared))

    assert victim.exists()
    assert result.code == 1
    assert f"socket_directory {str(shared)!r} is writable by other users" in result.err
    assert "Traceback" not in result.err


def test_unlink_refuses_a_record_that_others_can_write(tmp_path: Path) -> None:
    """In a private directory, a record that others can write is not trusted
    either: nothing it lists is removed."""
    sd = tmp_path / "sd"
    sd.mkdir(mode=0o700)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    record = sd / _cleanup.PMANAGE_NAME
    record.write_text(f'+ file "{victim}"\n')
    record.chmod(0o666)

    result = cli("unlink", str(sd))

    assert victim.exists()
    assert result.code == 1
    assert "is not a regular file of yours that only you can write (mode 666" in result.err
    assert "Traceback" not in result.err


def leftover_record(sd: Path, tmp_path: Path, bad: str) -> str:
    """A dead master's directory whose record lists an entry that cannot be
    removed, then a live shm object; returns the object's name."""
    sd.mkdir(mode=0o700)
    name = _ipc.random_name(f"/nmc.{os.getpid()}.test-admin.")
    _ipc.create_mapped(name, 16).close()
    record = _cleanup.Record(str(sd / _cleanup.PMANAGE_NAME))
    if bad == "file-now-a-directory":
        (tmp_path / "was-a-file").mkdir()
        record.write("+", "file", str(tmp_path / "was-a-file"))
    elif bad == "unknown-kind":  # another version's record
        record.write("+", "posix_mq", "/queue")
    elif bad == "not-utf-8":
        os.write(record.fd, b'+ file "/tmp/\xff\xfe"\n')
    else:  # a directory where the lock file would be
        (sd / "netmcore.lock").mkdir()
    record.write("+", "posix_shm", name)
    record.close(clean=False)
    return name


BAD_ENTRIES = ["file-now-a-directory", "unknown-kind", "not-utf-8", "lock-is-a-directory"]


@pytest.mark.parametrize("bad", BAD_ENTRIES)
def test_unlink_reports_what_it_cannot_remove_and_removes_the_rest(
    tmp_path: Path, bad: str
) -> None:
    sd = tmp_path / "sd"
    name = leftover_record(sd, tmp_path, bad)
    try:
        result = cli("unlink", str(sd))
    finally:
        _ipc.unlink(name)  # still there if the command gave up before it
    assert result.code == 0, result.err
    assert "Traceback" not in result.err, result.err
    assert f"removed {name}" in result.out
    said = {
        "file-now-a-directory": f"could not unlink file '{tmp_path / 'was-a-file'}'",
        "unknown-kind": "could not unlink posix_mq '/queue'",
        "not-utf-8": "skipped a line of",
        "lock-is-a-directory": f"could not remove {sd / 'netmcore.lock'}",
    }
    assert said[bad] in result.err


SECOND_MASTER = """
import sys
import netmcore

@netmcore.process
def waits(_: int) -> int:
    return len(sys.stdin.buffer.read(1))  # until the test writes a byte

netmcore.run(first_process=lambda: waits.start(0), extract_result=lambda c, p: None)
"""


def test_status_without_a_socket_directory_finds_your_running_master(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run given no socket_directory makes one nobody is told of: status
    finds it, or lists them if there are several (before, it took only a
    directory, which a user of a hung program had to find in $TMPDIR)."""
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    none = cli("status")
    assert none.code == 1
    assert none.err == (
        f"netmcore status: no master of yours runs in a socket directory of its own in "
        f"{str(tmp_path)!r}; pass the socket_directory that its run was given\n"
    )
    master_pid, one = netmcore.run(
        first_process=lambda: ask_status.start([]),
        extract_result=lambda ctrl, pid: (ctrl.master_pid, ask_status.result(pid, timeout=0)),
    )
    assert one.code == 0, one
    assert re.fullmatch(
        rf"master pid {master_pid}, socket directory {tmp_path}/netmcore-[0-9a-f]{{12}}",
        one.out.splitlines()[0],
    ), one.out
    other = subprocess.Popen([sys.executable, "-c", SECOND_MASTER], stdin=subprocess.PIPE)
    try:
        wait_until(lambda: len(_admin.running_masters()) == 1, "the second master")
        master_pid, several = netmcore.run(
            first_process=lambda: ask_status.start([]),
            extract_result=lambda ctrl, pid: (ctrl.master_pid, ask_status.result(pid, timeout=0)),
        )
    finally:
        assert other.stdin is not None
        other.stdin.write(b"x")
        other.stdin.close()
        assert other.wait(timeout=60) == 0
    assert several.code == 1
    lines = several.err.splitlines()
    assert lines[0] == (
        "netmcore status: 2 masters of yours are running; pass the socket directory of one:"
    )
    assert f"(master pid {other.pid}: {sys.executable} -c " in lines[1]  # the oldest first
    assert f"(master pid {master_pid}: " in lines[2]
    assert all(line.startswith(f"  {tmp_path}/netmcore-") for line in lines[1:]), lines
