"""The program's guard: what a program makes outside ``run`` is unlinked if
it dies there (SIGKILL, SIGTERM, a crash), as what a run makes is.

A program runs in a subprocess and talks on its stdin and stdout; the guard
is found as its child in a session of its own.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from scenario import run_snippet, signal_at_call, wait_until

import netmcore
from netmcore import _ipc, _watchdog

SHM_DIR = Path("/dev/shm")

# A program that makes, on each line of stdin, what the line says, and
# answers with the names (one line, space-separated):
#   shm | sem | prealloc | file PATH  -> the object's name
#   run                                -> a run whose init_ctrl makes a shm kept after it
#   release N                          -> releases the N-th object made (from 0)
#   fork                               -> a forked child makes a shm and exits normally
#   linger                             -> the pid of a forked child that waits for ever
#   hold PATH                          -> a run that releases object 0, and waits
#   term-in-fork                       -> dies of a SIGTERM as the guard is forked
#   shm-then-group-kill                -> a shm's name, then SIGKILL to its process group
#   guard                              -> the pid of the guard, or "none"
PROGRAM = textwrap.dedent(
    """
    import os, signal, sys
    import netmcore

    @netmcore.process
    def nothing(k: int) -> int:
        return k

    @netmcore.process
    def wait(k: int) -> int:
        os.read(0, 1)  # the program's stdin, never written to again
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
        elif cmd == "hold":  # a run whose init_ctrl releases made[0] and makes a new,
            # unmanaged file of that name; its first process then waits for ever
            def init(ctrl):
                made[0].release()
                with open(args[0], "w") as f:
                    f.write("not managed")
                say("holding")
            netmcore.run(
                init_ctrl=init,
                first_process=lambda: wait.start(0),
                extract_result=lambda c, p: None,
            )
        elif cmd == "term-in-fork":  # a SIGTERM comes just as the guard is forked
            real_fork = os.fork
            def fork():
                os.kill(os.getpid(), signal.SIGTERM)
                return real_fork()
            os.fork = fork
            made.append(netmcore.create_shm(4096))
        elif cmd == "shm-then-group-kill":  # the whole process group dies at once
            made.append(netmcore.create_shm(4096))
            say(made[-1].name)
            os.killpg(0, signal.SIGKILL)
        elif cmd == "guard":
            say(guard_pid())
        elif cmd == "sockets":  # how many sockets it has open
            links = []
            for fd in os.listdir("/proc/self/fd"):
                try:
                    links.append(os.readlink(f"/proc/self/fd/{fd}"))
                except FileNotFoundError:  # listdir's own descriptor, closed since
                    pass
            say(sum(link.startswith("socket:") for link in links))
    """
)


class Program:
    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", PROGRAM],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            process_group=0,  # a group of its own, which it may kill
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

    def kinds() -> list[str]:
        fds = [int(fd) for fd in os.listdir(f"/proc/{guard.pid}/fd") if int(fd) > 2]
        return sorted(os.readlink(f"/proc/{guard.pid}/fd/{fd}").split(":")[0] for fd in fds)

    # Its pidfd of the program is opened once it has closed the rest.
    wait_until(lambda: "anon_inode" in kinds(), "the guard to start watching")
    assert kinds() == ["anon_inode", "socket"], kinds()
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
    assert program.ask("sockets") == "1"  # the new guard's: the dead one's is closed
    program.kill(signal.SIGKILL)
    wait_gone(new)
    assert not exists(first) and not exists(second)  # told of both


def test_a_sigkill_to_the_whole_group_as_the_first_object_is_made(program: Program) -> None:
    """The guard leaves the program's process group (and session) before the
    program makes anything: a SIGKILL to the group right after the object is
    made kills the program only, and the guard unlinks the object."""
    name = program.make("shm-then-group-kill")
    assert program.proc.wait() == -signal.SIGKILL
    wait_until(lambda: not exists(name), "the guard unlinks the object")


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
    # Out of the program's session and terminal before the object is made.
    assert os.getsid(guard.pid) == guard.pid
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


def test_a_signal_as_a_killed_guard_is_replaced_loses_nothing(program: Program) -> None:
    """The objects go to a new guard through its fork: a SIGTERM that comes
    as it is forked (it waits until the guard is known) kills the program,
    and the guard unlinks what the one before it had."""
    first = program.make("shm")
    guard = program.guard()
    assert guard is not None
    guard.kill()
    wait_gone(guard)
    assert program.proc.stdin is not None
    program.proc.stdin.write("term-in-fork\n")
    program.proc.stdin.flush()
    assert program.proc.wait() == -signal.SIGTERM
    wait_until(lambda: not exists(first), "the new guard to unlink the first object")


def test_an_object_released_in_a_run_is_no_longer_guarded(program: Program, tmp_path: Path) -> None:
    """A file managed before a run and released in it is the program's own
    again: if the program is killed in the run, the guard leaves it (a new
    file of that name, here)."""
    path = tmp_path / "data.txt"
    path.write_text("managed")
    program.make(f"file {path}")
    guard = program.guard()
    assert guard is not None
    assert program.ask(f"hold {path}") == "holding"
    assert guard.is_running()  # through the run (asked nothing: the run's process reads stdin)
    program.kill(signal.SIGKILL)
    wait_gone(guard)
    assert path.read_text() == "not managed"


def test_no_guard_at_the_end_of_a_run_keeps_its_result(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """If the guard cannot be forked as a run ends, the run still ends
    cleanly (its result, its record finished): a next run in the directory
    does not take what the program kept for a crashed master's leftover."""
    sockdir = tmp_path / "sock"
    kept: list[netmcore.ShmSegment] = []

    real_fork_watchdog = _watchdog.fork_watchdog
    forks: list[int] = []

    def run_watchdog_only(*args: Any, **kwargs: Any) -> _watchdog.Watchdog:
        forks.append(1)
        if len(forks) > 1:  # the guard, at the end of the run
            raise OSError(errno.EAGAIN, "Resource temporarily unavailable")
        return real_fork_watchdog(*args, **kwargs)

    monkeypatch.setattr(_watchdog, "fork_watchdog", run_watchdog_only)
    try:
        with caplog.at_level(logging.WARNING, logger="netmcore"):
            result = netmcore.run(
                socket_directory=str(sockdir),
                init_ctrl=lambda ctrl: kept.append(netmcore.create_shm(64)),
                first_process=lambda: _square.start(3),
                extract_result=lambda ctrl, pid: _square.join_nowait(pid),
            )
        assert result == 9
        assert "no guard process could be forked at the end of run" in caplog.text
        monkeypatch.undo()
        assert exists(kept[0].name)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="netmcore"):
            again = netmcore.run(
                socket_directory=str(sockdir),
                first_process=lambda: _square.start(4),
                extract_result=lambda ctrl, pid: _square.join_nowait(pid),
            )
        assert again == 16
        assert exists(kept[0].name), caplog.text
    finally:
        for seg in kept:
            seg.release()


@netmcore.process
def _square(k: int) -> int:
    return k * k


LOGGING_PROGRAM = textwrap.dedent(
    """
    import logging, os, sys
    import netmcore

    logging.basicConfig(filename=sys.argv[1], level=logging.WARNING)  # a descriptor

    @netmcore.process
    def wait(k: int) -> int:
        os.read(0, 1)
        return k

    def init(ctrl):
        path = sys.argv[3]
        netmcore.manage_file(path)
        os.unlink(path)
        os.mkdir(path)  # the watchdog cannot unlink it: it logs that
        print("ready", flush=True)

    netmcore.run(
        socket_directory=sys.argv[2],
        init_ctrl=init,
        first_process=lambda: wait.start(0),
        extract_result=lambda c, p: None,
    )
    """
)


def test_the_watchdog_logs_to_stderr_not_to_a_descriptor_it_closed(tmp_path: Path) -> None:
    """The watchdog closes the program's descriptors; the program's log
    handlers (a file here) would write to their numbers, now its own (the
    socket directory's lock). It logs to stderr instead."""
    log_file, sockdir, managed = tmp_path / "program.log", tmp_path / "sock", tmp_path / "f"
    managed.write_text("data")
    proc = subprocess.Popen(
        [sys.executable, "-c", LOGGING_PROGRAM, str(log_file), str(sockdir), str(managed)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        (watchdog,) = [c for c in psutil.Process(proc.pid).children() if os.getsid(c.pid) == c.pid]
        # Open now: the watchdog removes it once it is done.
        with (sockdir / "netmcore.lock").open() as lock_file:
            proc.kill()
            _, stderr = proc.communicate()  # the watchdog keeps stderr open until it is done
            wait_gone(watchdog)
            assert "could not unlink file" in stderr
            assert "could not unlink" not in lock_file.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        if managed.is_dir():
            managed.rmdir()


_HANDLER_CHANGES_OBJECTS_DURING_ON_CHANGE = (
    """
import os, signal, sys
import netmcore
from netmcore import _ipc
what = sys.argv[1]
name = f"/nmc.{os.getpid()}.main"
_ipc.create_mapped(name, 64).close()
keep = netmcore.create_shm(8)  # the guard lives on
other = netmcore.create_shm(8)
made = netmcore.manage_shm(name)
in_handler = []
def handler(*_):
    if what == "release":
        other.release()  # its last use: destroyed, and recorded
    else:
        in_handler.append(netmcore.create_shm(8))
signal.signal(signal.SIGUSR1, handler)
"""
    + signal_at_call("_live_guard")  # where the guard's lock is held
    + """
sys.setprofile(_at_call)
netmcore.release(made.id)
sys.setprofile(None)
for handle in [*in_handler, *([] if what == "release" else [other]), keep]:
    handle.release()
print(sorted(n for n in os.listdir("/dev/shm") if n.startswith(f"nmc.{os.getpid()}.")))
"""
)


@pytest.mark.parametrize("what", ["release", "create"])
def test_a_signal_handler_may_make_or_destroy_while_the_guard_is_told_of_a_change(
    what: str,
) -> None:
    """A handler that destroys (or makes) an object while its thread tells
    the guard of another: before, it waited for ever for the lock its own
    thread held there."""
    code, out = run_snippet(_HANDLER_CHANGES_OBJECTS_DURING_ON_CHANGE, 30, what)
    assert (code, out) == (0, "[]\n")


_HANDLER_MAKES_AS_THE_GUARD_IS_FORKED = (
    """
import os, signal, sys
import netmcore
from netmcore import _watchdog
inner = []
signal.signal(signal.SIGUSR1, lambda *_: inner.append(netmcore.create_shm(8)))
"""
    + signal_at_call("fork_watchdog")  # as the first guard is forked (in its mine.recv, say)
    + """
sys.setprofile(_at_call)
outer = netmcore.create_shm(8)
sys.setprofile(None)
made = _watchdog._made
alive = made.guard is not None and os.waitpid(made.guard.os_pid, os.WNOHANG)[0] == 0
print(
    all(os.path.exists("/dev/shm" + h.name) for h in (outer, *inner)),
    len(inner) == 1 and made.told == made.objects and len(made.objects) == 2,
    alive,
)
for h in (*inner, outer):
    h.release()
"""
)


def test_a_handler_that_makes_an_object_as_the_first_guard_is_forked_leaves_both_guarded() -> None:
    """Before (its thread's lock reentrant), the handler forked a guard of
    its own, which its thread then dropped: that guard took its closed
    socket for the program's death, and unlinked the live objects."""
    code, out = run_snippet(_HANDLER_MAKES_AS_THE_GUARD_IS_FORKED, 30)
    assert (code, out) == (0, "True True True\n")


_INTERRUPTED_AS_A_NEW_GUARD_IS_FORKED = (
    """
import os, signal, sys
import psutil
import netmcore
from netmcore import _ipc, _watchdog
z, x = netmcore.create_shm(8), netmcore.create_shm(8)
killed = _watchdog._made.guard.os_pid
os.kill(killed, signal.SIGKILL)  # someone kills the guard: the next change forks another
os.waitpid(killed, 0)
"""
    # held in the fork, raised as it is let go
    + signal_at_call("fork_watchdog", "os.kill(os.getpid(), signal.SIGINT)")
    + """
sys.setprofile(_at_call)
name = f"/nmc.{os.getpid()}.y"
_ipc.create_mapped(name, 64).close()
try:
    netmcore.manage_shm(name)
except KeyboardInterrupt:
    pass
sys.setprofile(None)
made = _watchdog._made
kept = made.guard.os_pid if made.guard is not None else None
# A guard forked then whose handle the exception dropped (before, it
# unlinked what it was told of, and went).
psutil.wait_procs([c for c in psutil.Process().children() if c.pid != kept], timeout=20)
print(
    [os.path.exists("/dev/shm" + h.name) for h in (z, x)],
    kept is not None and os.waitpid(kept, os.WNOHANG)[0] == 0,
    {z.name, x.name} <= {n for _, n in made.told},
)
for h in (z, x):
    h.release()
_ipc.unlink(name)
"""
)


def test_a_ctrl_c_as_a_killed_guard_is_replaced_keeps_the_new_one() -> None:
    """A SIGINT as a killed guard is replaced, raised as the fork lets
    signals go: the program keeps the new guard, told of every object.
    Before, it dropped it: its socket closed, the program alive, and the
    guard took that for the program's death and unlinked every object the
    program was using."""
    code, out = run_snippet(_INTERRUPTED_AS_A_NEW_GUARD_IS_FORKED, 40)
    assert (code, out) == (0, "[True, True] True True\n")


_MAKES_THEN_EXECS = """
import os, sys
import netmcore
from netmcore import _watchdog
made = netmcore.create_shm(8)
print(made.name, _watchdog._made.guard.os_pid, flush=True)
os.execv("/bin/cat", ["cat"])  # no exit hook runs: the guard is all there is
"""


def test_a_program_that_execs_leaves_nothing() -> None:
    """The exec closes the guard's socket (close-on-exec), the pid living
    on as another program: the guard unlinks what the first made."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _MAKES_THEN_EXECS],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    name, guard = proc.stdout.readline().split()
    try:
        wait_gone(psutil.Process(int(guard)))
        assert not exists(name)
    finally:
        proc.communicate("")  # cat ends at the end of its input
        if exists(name):  # what the failure left
            _ipc.unlink(name)


_INTERRUPTED_AS_THE_FORK_RETURNS = """
import ctypes, functools, os, signal
import psutil
import netmcore
from netmcore import _watchdog
a = netmcore.create_shm(8)
killed = _watchdog._made.guard.os_pid
os.kill(killed, signal.SIGKILL)  # someone kills the guard: the next change forks another
os.waitpid(killed, 0)
class Deadline(Exception):
    pass
armed = [True]
def handler(*_):
    if armed:
        armed.pop()
        raise Deadline
signal.signal(signal.SIGALRM, handler)
# Sent in C as the fork returns in the parent, before the pid is kept.
libc = ctypes.CDLL(None)
os.register_at_fork(after_in_parent=functools.partial(libc.kill, os.getpid(), signal.SIGALRM))
try:
    netmcore.create_shm(8)
except Deadline:
    pass
signal.signal(signal.SIGALRM, signal.SIG_IGN)
kept = _watchdog._made.guard.os_pid if _watchdog._made.guard is not None else None
others = [c for c in psutil.Process().children() if c.pid != kept]  # reaped already
psutil.wait_procs(others, timeout=20)  # (before: it unlinked, and went)
print(os.path.exists("/dev/shm" + a.name), others == [])
a.release()
"""


def test_a_signal_handlers_exception_as_a_guards_fork_returns_unlinks_nothing() -> None:
    """Before, the guard forked then was dropped with its socket (the
    parent's pid not yet kept): it took that for the program's death, and
    unlinked the program's live objects. Now it is told to go first, and
    reaped (it stayed a zombie)."""
    code, out = run_snippet(_INTERRUPTED_AS_THE_FORK_RETURNS, 40)
    assert (code, out) == (0, "True True\n")


_INTERRUPTED_AS_THE_RUN_HANDS_OVER = (
    signal_at_call("_guard_table")
    + """
import netmcore

@netmcore.process
def one(k: int) -> int:
    return k

class Deadline(Exception):
    pass

def handler(*_):
    raise Deadline

signal.signal(signal.SIGUSR1, handler)
kept = []

def init(ctrl):
    kept.append(netmcore.create_shm(8))
    sys.setprofile(_at_call)  # the master's thread: the signal comes as the run ends

try:
    netmcore.run(init_ctrl=init, first_process=lambda: one.start(1),
                 extract_result=lambda c, p: one.join_nowait(p))
except Deadline:
    print(kept[0].name, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""
)


def test_a_signal_handlers_exception_as_a_run_hands_over_leaves_its_objects_guarded() -> None:
    """A handler's exception as the guard was about to take over what a
    run keeps (the run raising it) left that with no guard: a program
    killed then left it in /dev/shm. Now the hand-over is finished first."""
    # Not run_snippet, which unlinks what the program left.
    proc = subprocess.run(
        [sys.executable, "-c", _INTERRUPTED_AS_THE_RUN_HANDS_OVER],
        capture_output=True,
        text=True,
        timeout=40,
        check=False,
    )
    name = proc.stdout.strip()
    try:
        assert proc.returncode == -signal.SIGKILL and name.startswith("/nmc."), proc
        wait_until(lambda: not exists(name), "the guard to unlink what the run kept")
    finally:
        _ipc.unlink_prefix(name.rpartition(".")[0] + ".")  # what a failure left


_OWN_KIND_AS_THE_RUN_HANDS_OVER = (
    signal_at_call("_guard_table")
    + """
import netmcore

@netmcore.process
def one(k: int) -> int:
    return k

def handler(*_):
    raise RuntimeError("a handler's")  # of a kind a retry would meet again (a bug's)

signal.signal(signal.SIGUSR1, handler)
kept, runs = [], []

def init(ctrl):
    kept.append(netmcore.create_shm(8))
    runs.append(1)
    if len(runs) == 1:  # the first run's end only
        sys.setprofile(_at_call)

def run():
    return netmcore.run(socket_directory=sys.argv[1], init_ctrl=init,
                        first_process=lambda: one.start(1),
                        extract_result=lambda c, p: one.join_nowait(p))

try:
    run()
except RuntimeError as exc:
    print(exc)
run()  # in the same directory
print(os.path.exists("/dev/shm" + kept[0].name))
"""
)


def test_a_handlers_error_as_a_run_hands_over_still_ends_the_run_cleanly(tmp_path: Path) -> None:
    """An exception that is not retried (a RuntimeError, as a bug raises)
    skipped the rest of the run's end: its record was left unfinished, and
    the next run in the directory unlinked what the living program kept,
    as a crashed master's leftover."""
    code, out = run_snippet(_OWN_KIND_AS_THE_RUN_HANDS_OVER, 40, str(tmp_path / "sock"))
    assert (code, out) == (0, "a handler's\nTrue\n")
