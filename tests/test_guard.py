"""The program's guard: what a program makes outside ``run`` is unlinked if
it dies there (SIGKILL, SIGTERM, a crash), as what a run makes is.

A program runs in a subprocess and talks on its stdin and stdout; the guard
is found as its child in a session of its own.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from scenario import wait_until

import netmcore
from netmcore import _ipc

SHM_DIR = Path("/dev/shm")

# A program that makes, on each line of stdin, what the line says, and
# answers with the names (one line, space-separated):
#   shm | sem | prealloc | file PATH  -> the object's name
#   run                                -> a run whose init_ctrl makes a shm kept after it
#   release N                          -> releases the N-th object made (from 0)
#   fork                               -> a forked child makes a shm and exits normally
#   linger                             -> the pid of a forked child that waits for ever
#   guard                              -> the pid of the guard, or "none"
PROGRAM = textwrap.dedent(
    """
    import os, sys
    import netmcore

    @netmcore.process
    def nothing(k: int) -> int:
        return k

    made = []

    def say(*words):
        print(*words, flush=True)

    lingering = set()

    def guard_pid():
        # The one live child that is not lingering (a killed guard is a
        # zombie until the next call reaps it).
        for task in os.listdir(f"/proc/{os.getpid()}/task"):
            with open(f"/proc/{os.getpid()}/task/{task}/children") as f:
                for pid in f.read().split():
                    with open(f"/proc/{pid}/stat") as stat:
                        state = stat.read().rpartition(")")[2].split()[0]
                    if pid not in lingering and state != "Z":
                        return pid
        return "none"

    for line in sys.stdin:
        cmd, *args = line.split()
        if cmd == "shm":
            made.append(netmcore.create_shm(4096))
            say(made[-1].name)
        elif cmd == "sem":
            made.append(netmcore.create_sem(0))
            say(made[-1].name)
        elif cmd == "prealloc":
            res_id, name = netmcore.create_preallocated_shm(f"/nmc.{os.getpid()}.pre.", 4096)
            made.append(res_id)
            say(name)
        elif cmd == "file":
            made.append(netmcore.manage_file(args[0]))
            say(args[0])
        elif cmd == "run":
            def init(ctrl):
                made.append(netmcore.create_shm(4096))
            netmcore.run(
                init_ctrl=init,
                first_process=lambda: nothing.start(1),
                extract_result=lambda c, p: nothing.join_nowait(p),
            )
            say(made[-1].name)
        elif cmd == "release":
            obj = made[int(args[0])]
            obj.release() if hasattr(obj, "release") else netmcore.release(obj)
            say("released")
        elif cmd == "fork":
            r, w = os.pipe()
            pid = os.fork()
            if pid == 0:
                os.close(r)
                seg = netmcore.create_shm(4096)
                os.write(w, seg.name.encode())
                sys.exit(0)  # normally: the exit hook destroys what it made, only that
            os.close(w)
            name = os.read(r, 4096).decode()
            os.close(r)
            os.waitpid(pid, 0)
            say(name)
        elif cmd == "linger":  # it keeps every descriptor of the program open
            r, w = os.pipe()
            pid = os.fork()
            if pid == 0:
                os.read(r, 1)
                os._exit(0)
            lingering.add(str(pid))
            say(pid)
        elif cmd == "guard":
            say(guard_pid())
    """
)


class Program:
    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", PROGRAM],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.names: list[str] = []

    def ask(self, line: str) -> str:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline().strip()
        assert answer, f"the program died on {line!r}: {self.proc.wait()}"
        return answer

    def make(self, what: str) -> str:
        name = self.ask(what)
        self.names.append(name)
        return name

    def guard(self) -> psutil.Process | None:
        pid = self.ask("guard")
        return None if pid == "none" else psutil.Process(int(pid))

    def kill(self, signum: int) -> None:
        self.proc.send_signal(signum)
        assert self.proc.wait() == -signum

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()


@pytest.fixture
def program() -> Iterator[Program]:
    p = Program()
    try:
        yield p
    finally:
        p.close()
        for name in p.names:  # what a failed test left
            if name.startswith("/nmc."):
                _ipc.unlink(name)
                _ipc.unlink_semaphore(name)
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(name)


def exists(name: str) -> bool:
    if not name.startswith("/nmc."):
        return os.path.exists(name)
    return (SHM_DIR / name[1:]).exists() or (SHM_DIR / f"sem.{name[1:]}").exists()


def wait_gone(guard: psutil.Process) -> None:
    wait_until(
        lambda: not guard.is_running() or guard.status() == psutil.STATUS_ZOMBIE, "the guard"
    )


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM], ids=["KILL", "TERM"])
def test_a_program_killed_outside_run_leaves_nothing(
    program: Program, tmp_path: Path, signum: int
) -> None:
    managed = tmp_path / "managed.txt"
    managed.write_text("data")
    for what in ("shm", "sem", "prealloc", f"file {managed}"):
        program.make(what)
    assert all(exists(name) for name in program.names)
    guard = program.guard()
    assert guard is not None
    program.kill(signum)
    wait_gone(guard)
    assert [name for name in program.names if exists(name)] == []


def test_a_descendant_that_holds_the_guards_socket_does_not_delay_it(
    program: Program,
) -> None:
    """The guard sees the program die by its pidfd, not only by its socket
    closing: a child the program forked keeps a copy of that socket."""
    name = program.make("shm")
    lingering = psutil.Process(int(program.ask("linger")))
    try:
        guard = program.guard()
        assert guard is not None
        program.kill(signal.SIGKILL)
        wait_gone(guard)
        assert not exists(name)
        assert lingering.is_running()
    finally:
        lingering.kill()
        lingering.wait()


def test_the_guard_goes_with_the_last_object(program: Program) -> None:
    assert program.guard() is None  # nothing made: no process
    program.make("shm")
    guard = program.guard()
    assert guard is not None
    program.make("sem")
    assert program.guard() == guard  # one guard for all
    program.ask("release 0")
    assert program.guard() == guard
    program.ask("release 1")
    assert program.guard() is None  # gone, and reaped: no zombie is left either
    assert not guard.is_running()


def test_what_a_run_keeps_is_guarded_after_it(program: Program) -> None:
    """A run's end hands over to the guard what the program still manages:
    made before it, and made in it by the master's own code."""
    before = program.make("shm")
    kept = program.make("run")
    assert exists(before) and exists(kept)
    guard = program.guard()
    assert guard is not None
    program.kill(signal.SIGKILL)
    wait_gone(guard)
    assert not exists(before) and not exists(kept)


def test_a_guard_made_at_the_end_of_a_run_holds_none_of_its_descriptors(
    program: Program,
) -> None:
    """The guard forked as a run ends (to take over what the run kept) holds
    nothing of the run's (the socket directory's lock, its record, the
    watchdog's socket): only its own socket and a pidfd of the program."""
    program.make("run")  # no guard before: it is forked at the run's end
    guard = program.guard()
    assert guard is not None
    fds = [int(fd) for fd in os.listdir(f"/proc/{guard.pid}/fd") if int(fd) > 2]
    kinds = sorted(os.readlink(f"/proc/{guard.pid}/fd/{fd}").split(":")[0] for fd in fds)
    assert kinds == ["anon_inode", "socket"], kinds
    program.ask("release 0")
    assert program.guard() is None


def test_a_killed_guard_is_replaced(program: Program) -> None:
    first = program.make("shm")
    guard = program.guard()
    assert guard is not None
    guard.kill()
    wait_gone(guard)
    assert exists(first)  # killed, it cleans nothing
    second = program.make("shm")
    new = program.guard()
    assert new is not None and new.pid != guard.pid
    program.kill(signal.SIGKILL)
    wait_gone(new)
    assert not exists(first) and not exists(second)  # told of both


def test_a_forked_child_guards_and_destroys_only_its_own(program: Program) -> None:
    """A child forked outside run that makes an object and exits normally
    destroys that one, not the objects of its parent it inherited in its
    table; the parent's guard still has its own."""
    mine = program.make("shm")
    theirs = program.make("fork")
    assert exists(mine)
    assert not exists(theirs)
    guard = program.guard()
    assert guard is not None
    program.kill(signal.SIGKILL)
    wait_gone(guard)
    assert not exists(mine)


def test_this_process_has_no_guard_without_objects() -> None:
    """The test process itself: making and releasing leaves no process (the
    leak fixture also checks it)."""
    children = psutil.Process().children()
    seg = netmcore.create_shm(64)
    (guard,) = [c for c in psutil.Process().children() if c not in children]
    # Out of the program's session and terminal (it calls setsid as it starts).
    wait_until(lambda: os.getsid(guard.pid) == guard.pid, "the guard's own session")
    seg.release()
    assert not guard.is_running()


def test_no_guard_no_object(monkeypatch: pytest.MonkeyPatch) -> None:
    """If the guard cannot be forked, the object is not made, and the error
    says why and what to do."""
    entries = set(os.listdir(SHM_DIR))

    def no_fork() -> int:
        raise OSError(errno.EAGAIN, "Resource temporarily unavailable")

    monkeypatch.setattr(os, "fork", no_fork)
    with pytest.raises(OSError, match=r"cannot fork netmcore's guard process.*ulimit -u") as got:
        netmcore.create_shm(64)
    assert got.value.errno == errno.EAGAIN
    assert set(os.listdir(SHM_DIR)) == entries
    assert psutil.Process().children() == []
