"""Edges of a run: a process another part of the program reaps, the pidfile
of two runs, and what the master says (its log, its errors, its controller
once the run is over).
"""

from __future__ import annotations

import ast
import errno
import logging
import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from master_process import STARTUP_WITHIN, master_with_a_worker_ready
from scenario import outcome_text, run_snippet

import netmcore


@netmcore.process
def _noop(k: int) -> int:
    return k


@netmcore.process
def _exit_at_once(code: int) -> int:
    os._exit(code)  # no result: it ends before the master hears from it


# --------------------------------------------------------------------------
# A process that another part of the program reaps
# --------------------------------------------------------------------------


def test_a_process_the_program_reaps_itself_has_crashed_with_its_exit_status_lost(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """os.waitpid() of a worker's os pid in the master's own code (or a
    SIGCHLD handler, or os.wait()) takes its exit status before the master
    can. Before the fix, run crashed with ChildProcessError from the
    master's waitpid."""
    controllers: list[netmcore.Controller] = []
    reaped: list[int] = []  # its process id and os pid

    def first() -> netmcore.ProcessId[int]:
        pid = _exit_at_once.start(3)
        (info,) = (p for p in controllers[0].processes() if p.id == pid.n)
        reaped.extend((pid.n, info.os_pid))
        os.waitpid(info.os_pid, 0)  # it exits at once
        return pid

    with caplog.at_level(logging.WARNING, logger="netmcore"):
        outcome = netmcore.run(
            first_process=first,
            extract_result=lambda _c, pid: _exit_at_once.join_outcome_nowait(pid),
            init_ctrl=controllers.append,
        )
    assert outcome == netmcore.Crashed(None, None)
    assert str(outcome) == (
        "ended before returning, its exit status unknown (reaped by another part of the "
        "program, or never forked: the log says which)"
    )
    said = [r.getMessage() for r in caplog.records if "reaped" in r.getMessage()]
    assert said == [
        f"netmcore: process {reaped[0]} (test_run_edges._exit_at_once, os pid "
        f"{reaped[1]}) ended without a result, and was reaped by another part of the program "
        "(a SIGCHLD handler, os.wait(), os.waitpid(-1, ...)): its exit status is lost, and "
        "its outcome is Crashed(None, None). netmcore reaps the processes it starts: wait "
        "only for the os pids of the children you start yourself"
    ]


# A program with a SIGCHLD handler that reaps every child that has ended, as
# the reviewer's was. A subprocess: in the test process it would reap the
# children of other tests' fixtures too.
_SIGCHLD_HANDLER = """
import os, signal
import netmcore

def reap(signum, frame):
    try:
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    except ChildProcessError:
        pass

signal.signal(signal.SIGCHLD, reap)

@netmcore.process
def exit_at_once(code: int) -> int:
    os._exit(code)

@netmcore.process
def manager(_: int) -> list[str]:
    joined = exit_at_once.join(exit_at_once.start(3))
    outcome = exit_at_once.join_outcome(exit_at_once.start(4))
    return [repr(joined), repr(outcome)]

print(netmcore.run(
    first_process=lambda: manager.start(0),
    extract_result=lambda _c, pid: manager.join_outcome_nowait(pid),
))
"""


def test_a_sigchld_handler_that_reaps_the_workers_leaves_the_run_going() -> None:
    """The reviewer's case. Before the fix, run crashed with ChildProcessError.

    The handler runs before the master's next Python line once SIGCHLD has
    come, and so reaps first; but the kernel wakes the master's wait on the
    child's pidfd a moment before it sends SIGCHLD, and the master may reap
    in that moment (the exit status is then known). The test above has the
    program reap first for certain."""
    status, out = run_snippet(_SIGCHLD_HANDLER, timeout=STARTUP_WITHIN)
    assert status == 0, out
    assert out in (
        "Success(value=['None', 'Crashed(exitcode=None, signal=None)'])\n",
        "Success(value=['None', 'Crashed(exitcode=4, signal=None)'])\n",
    )


# --------------------------------------------------------------------------
# The pidfile
# --------------------------------------------------------------------------

# A master whose worker waits for a line on stdin; the pidfile is argv[1].
_HOLDS_PIDFILE = """
import sys
import netmcore

@netmcore.process
def wait_for_a_line(_: int) -> int:
    print("ready", flush=True)
    sys.stdin.readline()
    return 0

netmcore.run(
    first_process=lambda: wait_for_a_line.start(0),
    extract_result=lambda _c, pid: wait_for_a_line.join_nowait(pid),
    pidfile=sys.argv[1],
)
print("done", flush=True)
"""


def _run_noop_with_pidfile(pidfile: Path, k: int, look: Callable[[], object] | None = None) -> int:
    """Run ``_noop(k)`` as the first process, with ``pidfile``; return its
    value. ``look``, if given, runs in first_process before the start: where
    a test sees what the master has made of the pidfile by then."""

    def first() -> netmcore.ProcessId[int]:
        if look is not None:
            look()
        return _noop.start(k)

    result: int = netmcore.run(
        first_process=first,
        extract_result=lambda _c, pid: _noop.join_nowait(pid),
        pidfile=pidfile,
    )
    return result


def test_a_second_run_naming_the_pidfile_of_a_running_one_is_refused(
    short_tmp: Path,
) -> None:
    """Before the fix, the second run wrote its pid into the first's file,
    and the first removed it at its end, while the second still ran."""
    pidfile = short_tmp / "m.pid"
    with master_with_a_worker_ready(
        short_tmp, "holder.py", _HOLDS_PIDFILE, args=[str(pidfile)]
    ) as first:
        written = os.stat(pidfile)
        assert pidfile.read_text() == f"{first.pid}\n"
        with pytest.raises(OSError) as info:
            _run_noop_with_pidfile(pidfile, 1)
        assert info.value.errno == errno.EBUSY
        assert info.value.strerror == (
            f"pidfile {str(pidfile)!r} is in use by a running netmcore master (pid "
            f"{first.pid}), which holds its lock: pass another pidfile, or stop that master "
            "first"
        )
        # The first run's file, untouched; and no temporary file is left.
        assert pidfile.read_text() == f"{first.pid}\n"
        assert os.stat(pidfile).st_ino == written.st_ino
        assert sorted(os.listdir(short_tmp)) == ["holder.py", "m.pid", "stderr.txt"]
        first.write_line("go")
        assert first.wait_exit(STARTUP_WITHIN) == 0, first.stderr()
    assert not pidfile.exists()  # the first run removed its own file at its end


def _no_unnamed_files(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make os.open refuse O_TMPFILE, as a file system without unnamed files
    (NFS, vfat) does."""
    real_open = os.open

    def refusing_open(path: Any, flags: int, mode: int = 0o777, **kw: Any) -> int:
        if flags & os.O_TMPFILE == os.O_TMPFILE:
            raise OSError(errno.EOPNOTSUPP, "Operation not supported", os.fspath(path))
        return real_open(path, flags, mode, **kw)

    monkeypatch.setattr(os, "open", refusing_open)


@pytest.mark.parametrize("unnamed", [True, False], ids=["unnamed", "named-first"])
def test_the_pidfile_is_a_new_file_put_in_place_whole(
    short_tmp: Path, monkeypatch: pytest.MonkeyPatch, unnamed: bool
) -> None:
    """A stale pidfile (its run gone) is replaced, not rewritten: a reader
    never sees a file half written, and a run removes at its end only the
    file it wrote. It holds a live process's pid here: only a run holding
    its lock keeps another out, since a pid may be reused. Before the fix,
    the stale file itself was truncated and rewritten. Where no file can be
    made without a name, the new one is made under a temporary name first,
    which goes."""
    if not unnamed:
        _no_unnamed_files(monkeypatch)
    pidfile, other_name = short_tmp / "m.pid", short_tmp / "other-name"
    stale = f"{os.getppid()}\n"  # alive, and no netmcore master
    pidfile.write_text(stale)
    os.link(pidfile, other_name)  # the stale file, under a second name
    seen: list[object] = []

    def look() -> None:
        seen.append(os.stat(pidfile).st_ino != os.stat(other_name).st_ino)
        seen.append(pidfile.read_text())
        seen.append(sorted(os.listdir(short_tmp)))

    assert _run_noop_with_pidfile(pidfile, 2, look) == 2
    assert seen == [True, f"{os.getpid()}\n", ["m.pid", "other-name"]]
    assert other_name.read_text() == stale
    assert sorted(os.listdir(short_tmp)) == ["other-name"]


# A master with a pidfile (argv[1]) where a stale one is: what it sees there
# during the run and after it.
_PIDFILE_WITHOUT_PROC = """
import os, sys
import netmcore

@netmcore.process
def noop(k: int) -> int:
    return k

pidfile = sys.argv[1]
directory = os.path.dirname(pidfile)
with open(pidfile, "w") as f:
    f.write("stale\\n")
seen = [os.path.exists("/proc/self"), os.getpid()]

def first():
    with open(pidfile) as f:
        seen.append(f.read())
    seen.append(sorted(os.listdir(directory)))
    return noop.start(4)

seen.append(netmcore.run(
    first_process=first,
    extract_result=lambda _c, pid: noop.join_nowait(pid),
    pidfile=pidfile,
))
seen.append(sorted(os.listdir(directory)))
print(repr(seen))
"""


def test_the_pidfile_is_put_in_place_without_proc(short_tmp: Path) -> None:
    """Where /proc is not mounted (a container, a chroot), the unnamed file
    cannot be linked through /proc/self/fd, and the named way is taken.
    Before the fix, run failed with FileNotFoundError: [Errno 2] No such
    file or directory: '/proc/self/fd/N' -> '.../m.pid'."""
    pidfile = short_tmp / "m.pid"
    status, out = run_snippet(
        _PIDFILE_WITHOUT_PROC, STARTUP_WITHIN, str(pidfile), without_proc=True
    )
    assert status == 0, out
    seen = ast.literal_eval(out)
    master = seen[1]
    assert seen == [False, master, f"{master}\n", ["m.pid"], 4, []]


def _closed_to_the_user(directory: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make os.open refuse to create a file in ``directory``, and os.unlink
    to remove one, as in a directory this user cannot write to (a mode does
    not stop root, whom the tests may run as)."""
    real_open, real_unlink = os.open, os.unlink

    def refuse(path: Any) -> None:
        if os.path.dirname(os.fspath(path)) == str(directory):
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))

    def refusing_open(path: Any, flags: int, mode: int = 0o777, **kw: Any) -> int:
        if flags & os.O_TMPFILE == os.O_TMPFILE and os.fspath(path) == str(directory):
            refuse(os.path.join(path, "unnamed"))
        if flags & os.O_CREAT:
            refuse(path)
        return real_open(path, flags, mode, **kw)

    def refusing_unlink(path: Any, **kw: Any) -> None:
        refuse(path)
        real_unlink(path, **kw)

    monkeypatch.setattr(os, "open", refusing_open)
    monkeypatch.setattr(os, "unlink", refusing_unlink)


def test_a_pidfile_made_beforehand_in_a_directory_closed_to_the_user_is_written_in_place(
    short_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As /var/run/prog.pid, made for the program by root: no new file can be
    put there, so the file itself is written, under its lock; nor can it be
    removed at the end, so it is emptied, naming no process. (Not a defect
    of the old code, which always wrote in place: it guards the new way's
    fallback. The old code's end raised PermissionError, though.)"""
    pidfile, other_name = short_tmp / "m.pid", short_tmp / "other-name"
    pidfile.write_text("stale\n")
    os.link(pidfile, other_name)
    _closed_to_the_user(short_tmp, monkeypatch)
    seen: list[str] = []

    def look() -> None:
        seen.append(other_name.read_text())  # the same file: written in place

    assert _run_noop_with_pidfile(pidfile, 3, look) == 3
    assert seen == [f"{os.getpid()}\n"]
    assert sorted(os.listdir(short_tmp)) == ["m.pid", "other-name"]
    assert pidfile.read_text() == ""


def test_a_pidfile_that_cannot_be_made_says_so(
    short_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pidfile = short_tmp / "m.pid"
    _closed_to_the_user(short_tmp, monkeypatch)
    with pytest.raises(PermissionError) as info:
        _run_noop_with_pidfile(pidfile, 1)
    assert info.value.strerror == (
        f"pidfile {str(pidfile)!r} cannot be made: no file can be created in "
        f"{str(short_tmp)!r} (Permission denied): name a pidfile in a directory you can "
        "write to, or create the file there beforehand, writable by you"
    )
    assert os.listdir(short_tmp) == []


# --------------------------------------------------------------------------
# What the master says
# --------------------------------------------------------------------------


@netmcore.process
def _interrupt_the_master(_: int) -> int:
    # Once the master serves (it answers this in its loop): before, the
    # signal could come while run still called first_process, the master's
    # own code, where it interrupts at once, as without netmcore.
    netmcore.create_shm(8).release()
    os.kill(os.getppid(), signal.SIGINT)
    threading.Event().wait()  # until the master stops it
    return 0


def test_every_message_of_an_interrupted_master_starts_with_netmcore(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Before the fix: "netmcore master got SIGINT: stopping 1 worker(s)"."""
    with caplog.at_level(logging.WARNING, logger="netmcore"), pytest.raises(KeyboardInterrupt):
        netmcore.run(
            first_process=lambda: _interrupt_the_master.start(0),
            extract_result=lambda _c, pid: _interrupt_the_master.join_nowait(pid),
        )
    said = [r.getMessage() for r in caplog.records]
    assert "netmcore: the master got SIGINT: stopping 1 worker(s)" in said
    assert [m for m in said if not m.startswith("netmcore: ")] == []


def _square(k: int) -> int:
    return k * k


# One function made a process type twice, as a module or a notebook cell
# run again does: two types of one name.
_SquareBefore = netmcore.process(_square)
_SquareAgain = netmcore.process(_square)


def test_a_join_through_another_type_of_the_same_name_tells_them_apart() -> None:
    """Before the fix: "process 1 is a m._square process, not a m._square"."""
    said: list[str] = []

    def first() -> netmcore.ProcessId[int]:
        pid = _SquareBefore.start(3)
        said.append(outcome_text(lambda: _SquareAgain.join_nowait(pid)))
        said.append(str(pid.n))
        return pid

    result = netmcore.run(
        first_process=first,
        extract_result=lambda _c, pid: _SquareBefore.join_nowait(pid),
    )
    assert result == 9  # the wrong join took nothing
    text, n = said
    assert text == (
        f"WrongJoinPoint: process {n} is a test_run_edges._square process of join point "
        f"{_SquareBefore.join_point!r}, and this join point, {_SquareAgain.join_point!r}, "
        "is of another process type of the same name: test_run_edges._square was defined "
        "twice (a module or a notebook cell run again, say), and each definition is a type "
        "of its own. Join it through the definition that started it"
    )


@pytest.mark.parametrize("past_the_last", [True, False], ids=["past_the_last", "negative"])
def test_a_process_id_never_handed_out_is_said_never_started(past_the_last: bool) -> None:
    """first_process returning an id that no start gave. Before the fix: "it
    was never started, or it has been joined already (only the first join
    ...)", though no process ever had it."""
    last: list[int] = []

    def first() -> netmcore.ProcessId[int]:
        last.append(_noop.start(0).n)  # the last id handed out
        return netmcore.ProcessId[int](last[0] + 10**6 if past_the_last else -1)

    said = netmcore.run(
        first_process=first,
        extract_result=lambda _c, pid: outcome_text(lambda: _noop.join_nowait(pid)),
    )
    bogus = last[0] + 10**6 if past_the_last else -1
    assert said == (
        f"UnknownProcess: process {bogus} was never started: process ids are handed out in "
        f"order, and the last one so far is {last[0]}; pass the id that start() returned"
    )


def test_the_controller_refuses_processes_once_its_run_has_ended() -> None:
    """Before the fix, processes() gave [] after the run: a master idle, not gone."""
    controllers: list[netmcore.Controller] = []

    def extract(ctrl: netmcore.Controller, pid: netmcore.ProcessId[int]) -> int | None:
        controllers.append(ctrl)
        assert [p.id for p in ctrl.processes()] == [pid.n]  # in the run: its processes
        return _noop.join_nowait(pid)

    assert netmcore.run(first_process=lambda: _noop.start(1), extract_result=extract) == 1
    (ctrl,) = controllers
    with pytest.raises(netmcore.ContextError) as info:
        ctrl.processes()
    assert str(info.value) == (
        f"Controller.processes() was called after its run (master pid {os.getpid()}) had "
        "ended: a controller describes its run while it goes on. Call it in init_ctrl or "
        "extract_result, and keep what you need from there"
    )
