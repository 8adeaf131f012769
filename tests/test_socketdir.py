"""The socket directory, the pidfile, and who may talk to the control socket.

Most tests run the master in the test process. Those that need a second,
running master (a directory in use, peer credentials, a stale directory) run
``tests/scripts/hold_master.py`` as a subprocess, which holds its socket
directory until it is sent a line on stdin.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import gc
import os
import select
import signal
import socket
import stat
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

import netmcore
from netmcore import _runtime, _socketdir, _wire

ROOT = Path(__file__).resolve().parent.parent
HOLD = ROOT / "tests" / "scripts" / "hold_master.py"
LIMIT = 107  # bytes in a Unix socket path, without the final NUL
SOCK = "netmcore.sock"
PMANAGE = "netmcore.pmanage"
LOCK = "netmcore.lock"
NOBODY = 65534


@netmcore.process
def echo(s: str) -> str:
    return s


@netmcore.process
def read_pidfile(path: str) -> tuple[str, int]:
    """The pidfile's text as a worker sees it, and the worker's parent pid."""
    with open(path) as f:
        return f.read(), os.getppid()


@netmcore.process
def listdir(path: str) -> list[str]:
    return sorted(os.listdir(path))


def run_echo(**kwargs: Any) -> str | None:
    return netmcore.run(
        first_process=lambda: echo.start("hi"),
        extract_result=lambda _ctrl, pid: echo.join_nowait(pid),
        **kwargs,
    )


def _mode(path: Path | str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


# --- the default directory --------------------------------------------------


def test_default_directory_is_private_and_removed() -> None:
    seen: dict[str, Any] = {}

    def init_ctrl(ctrl: netmcore.Controller) -> None:
        path = ctrl.socket_directory
        seen["path"] = path
        seen["mode"] = _mode(path)
        seen["owner"] = os.stat(path).st_uid
        seen["sock_is_socket"] = stat.S_ISSOCK(os.stat(os.path.join(path, SOCK)).st_mode)
        seen["sock_mode"] = _mode(os.path.join(path, SOCK))
        with open(os.path.join(path, LOCK)) as f:
            seen["lock"] = f.read().strip()

    assert run_echo(init_ctrl=init_ctrl) == "hi"
    assert seen["mode"] == 0o700
    assert seen["owner"] == os.getuid()
    assert seen["sock_is_socket"]
    assert seen["sock_mode"] & 0o077 == 0
    assert seen["lock"] == str(os.getpid())
    assert not os.path.exists(seen["path"])


def test_default_directories_differ_between_runs() -> None:
    paths = []
    for _ in range(2):
        run_echo(init_ctrl=lambda ctrl: paths.append(ctrl.socket_directory))
    assert paths[0] != paths[1]
    assert not any(os.path.exists(p) for p in paths)


def test_default_directory_seen_by_worker() -> None:
    # A worker can see the directory too (it holds just the socket and the lock).
    result = netmcore.run(
        first_process=lambda: listdir.start(_current_dir[0]),
        extract_result=lambda _ctrl, pid: listdir.join_nowait(pid),
        init_ctrl=lambda ctrl: _current_dir.__setitem__(0, ctrl.socket_directory),
    )
    assert result == [LOCK, PMANAGE, SOCK]


_current_dir = [""]


def test_default_directory_is_made_under_tmpdir(
    monkeypatch: pytest.MonkeyPatch, short_tmp: Path
) -> None:
    monkeypatch.setenv("TMPDIR", str(short_tmp))
    seen = []
    assert run_echo(init_ctrl=lambda ctrl: seen.append(ctrl.socket_directory)) == "hi"
    assert os.path.dirname(seen[0]) == str(short_tmp)
    assert os.path.basename(seen[0]).startswith("netmcore-")
    assert os.listdir(short_tmp) == []


def test_unusable_tmpdir_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, short_tmp: Path) -> None:
    missing = short_tmp / "missing"
    monkeypatch.setenv("TMPDIR", str(missing))
    with pytest.raises(netmcore.SocketDirectoryError, match="TMPDIR") as info:
        run_echo()
    assert str(missing) in str(info.value)
    assert not missing.exists()


@netmcore.process
def leave_file(path: str) -> None:
    with open(path, "w") as f:
        f.write("left behind")


def test_default_directory_is_removed_with_leftovers() -> None:
    # The run's end removes the directory even if a worker left a file in it.
    seen = []
    netmcore.run(
        first_process=lambda: leave_file.start(os.path.join(seen[0], "leftover")),
        extract_result=lambda _ctrl, pid: leave_file.join_nowait(pid),
        init_ctrl=lambda ctrl: seen.append(ctrl.socket_directory),
    )
    assert not os.path.exists(seen[0])


def test_default_directory_with_long_tmpdir(
    monkeypatch: pytest.MonkeyPatch, short_tmp: Path
) -> None:
    # A TMPDIR too long for a socket path must not break the default.
    long_tmp = short_tmp / ("t" * 120)
    long_tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(long_tmp))
    seen = []
    assert run_echo(init_ctrl=lambda ctrl: seen.append(ctrl.socket_directory)) == "hi"
    assert len(os.fsencode(os.path.join(seen[0], SOCK))) <= LIMIT
    assert not os.path.exists(seen[0])
    assert os.listdir(long_tmp) == []


# --- a given directory -------------------------------------------------------


def test_missing_directory_is_created_private(short_tmp: Path) -> None:
    sd = short_tmp / "a" / "sd"
    seen: dict[str, Any] = {}

    def init_ctrl(ctrl: netmcore.Controller) -> None:
        seen["path"] = ctrl.socket_directory
        seen["mode"] = _mode(sd)
        seen["entries"] = sorted(os.listdir(sd))

    assert run_echo(socket_directory=str(sd), init_ctrl=init_ctrl) == "hi"
    assert os.path.samefile(seen["path"], sd)
    assert seen["mode"] == 0o700
    assert seen["entries"] == [LOCK, PMANAGE, SOCK]
    # The directory is the user's: it stays, but netmcore's files are gone.
    assert sd.is_dir()
    assert _mode(sd) == 0o700
    assert os.listdir(sd) == []


def test_existing_private_directory_is_used_and_kept(short_tmp: Path) -> None:
    sd = short_tmp / "sd"
    sd.mkdir(mode=0o700)
    (sd / "user-file").write_text("mine")
    assert run_echo(socket_directory=str(sd)) == "hi"
    assert sorted(os.listdir(sd)) == ["user-file"]
    assert (sd / "user-file").read_text() == "mine"


def test_relative_directory(short_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(short_tmp)
    seen = []
    assert run_echo(socket_directory="rel", init_ctrl=lambda c: seen.append(c.socket_directory))
    assert os.path.isabs(seen[0])
    assert os.path.samefile(seen[0], short_tmp / "rel")
    assert os.listdir(short_tmp / "rel") == []


def test_path_object_directory(short_tmp: Path) -> None:
    assert run_echo(socket_directory=short_tmp / "p") == "hi"
    assert os.listdir(short_tmp / "p") == []


@pytest.mark.parametrize(
    ("bad", "error"), [("", ValueError), (b"/tmp/sd", TypeError), (3, TypeError)]
)
def test_bad_directory_value_is_a_clear_error(
    short_tmp: Path, monkeypatch: pytest.MonkeyPatch, bad: Any, error: type[Exception]
) -> None:
    monkeypatch.chdir(short_tmp)  # "" used to mean the current directory, silently
    with pytest.raises(error, match="socket_directory must be a non-empty str or path, not"):
        run_echo(socket_directory=bad)
    assert os.listdir(short_tmp) == []


def test_same_directory_reused_by_consecutive_runs(short_tmp: Path) -> None:
    sd = str(short_tmp / "sd")
    assert run_echo(socket_directory=sd) == "hi"
    assert run_echo(socket_directory=sd) == "hi"
    assert os.listdir(sd) == []


def test_directory_cleaned_when_first_process_raises(short_tmp: Path) -> None:
    sd = short_tmp / "sd"
    pidfile = short_tmp / "m.pid"

    def boom() -> netmcore.ProcessId[str]:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        netmcore.run(
            first_process=boom,
            extract_result=lambda _c, _p: None,
            socket_directory=str(sd),
            pidfile=str(pidfile),
        )
    assert os.listdir(sd) == []
    assert not pidfile.exists()
    assert run_echo(socket_directory=str(sd)) == "hi"  # and it is free again


def _socket_path_len(directory: str) -> int:
    return len(os.fsencode(os.path.join(os.path.abspath(directory), SOCK)))


def _dir_with_socket_path_of(base: Path, n: int, char: str = "d") -> str:
    """A directory under ``base`` whose control socket path is ``n`` bytes long."""
    filler = n - _socket_path_len(str(base / "x")) + 1
    per_char = len(char.encode())
    assert filler % per_char == 0 and filler > 0
    path = str(base / (char * (filler // per_char)))
    assert _socket_path_len(path) == n
    return path


def test_too_long_path_raises_before_anything_starts(short_tmp: Path) -> None:
    sd = _dir_with_socket_path_of(short_tmp, LIMIT + 1)
    pidfile = short_tmp / "m.pid"
    called = []

    def first() -> netmcore.ProcessId[str]:
        called.append(True)
        return echo.start("never")

    with pytest.raises(ValueError, match=str(LIMIT)) as info:
        netmcore.run(
            first_process=first,
            extract_result=lambda _c, _p: None,
            socket_directory=sd,
            pidfile=str(pidfile),
            init_ctrl=lambda _c: called.append(True),
        )
    assert "too long" in str(info.value)
    assert not called
    assert not os.path.exists(sd)
    assert not pidfile.exists()
    assert os.listdir(short_tmp) == []


def test_path_at_the_limit_works(short_tmp: Path) -> None:
    sd = _dir_with_socket_path_of(short_tmp, LIMIT)
    assert run_echo(socket_directory=sd) == "hi"
    assert os.listdir(sd) == []


def test_limit_counts_bytes_not_characters(short_tmp: Path) -> None:
    # "é" is two bytes in UTF-8: the path has fewer than 107 characters.
    sd = _dir_with_socket_path_of(short_tmp, LIMIT + 1, char="é")
    assert len(os.path.join(sd, SOCK)) <= LIMIT
    with pytest.raises(ValueError, match=str(LIMIT)):
        run_echo(socket_directory=sd)
    assert not os.path.exists(sd)


def test_relative_path_limit_is_checked_on_absolute_path(
    short_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Short as given, too long once resolved against the working directory:
    # DEEP/sd/netmcore.sock is 3 bytes longer than DEEP/netmcore.sock.
    deep = Path(_dir_with_socket_path_of(short_tmp, LIMIT - 2))
    deep.mkdir()
    monkeypatch.chdir(deep)
    assert len(os.path.join("sd", SOCK)) < LIMIT
    with pytest.raises(ValueError, match=str(LIMIT)):
        run_echo(socket_directory="sd")
    assert os.listdir(deep) == []


@pytest.mark.parametrize("mode", [0o777, 0o770, 0o702], ids=oct)
def test_directory_writable_by_others_is_refused(short_tmp: Path, mode: int) -> None:
    sd = short_tmp / "sd"
    sd.mkdir()
    os.chmod(sd, mode)
    with pytest.raises(netmcore.SocketDirectoryError, match="writable"):
        run_echo(socket_directory=str(sd))
    assert os.listdir(sd) == []  # no lock file, no socket left
    assert _mode(sd) == mode  # and not "fixed" behind the user's back


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to chown to another user")
def test_directory_of_another_user_is_refused(short_tmp: Path) -> None:
    sd = short_tmp / "sd"
    sd.mkdir(mode=0o700)
    os.chown(sd, NOBODY, NOBODY)
    with pytest.raises(netmcore.SocketDirectoryError, match=f"uid {NOBODY}"):
        run_echo(socket_directory=str(sd))
    assert os.listdir(sd) == []


def test_path_that_is_a_file_is_refused(short_tmp: Path) -> None:
    target = short_tmp / "file"
    target.write_text("not a directory")
    with pytest.raises(netmcore.SocketDirectoryError):
        run_echo(socket_directory=str(target))
    assert target.read_text() == "not a directory"


# --- the pidfile ---------------------------------------------------------------


def test_pidfile_holds_master_pid_during_run(short_tmp: Path) -> None:
    pidfile = short_tmp / "m.pid"
    result = netmcore.run(
        first_process=lambda: read_pidfile.start(str(pidfile)),
        extract_result=lambda _c, pid: read_pidfile.join_nowait(pid),
        pidfile=str(pidfile),
    )
    assert result is not None
    text, worker_parent = result
    assert text.strip() == str(os.getpid())
    assert worker_parent == os.getpid()  # the worker's parent is the master
    assert not pidfile.exists()


def test_pidfile_replaced_if_stale(short_tmp: Path) -> None:
    pidfile = short_tmp / "m.pid"
    pidfile.write_text("999999999\nleftover from a crash\n")
    result = netmcore.run(
        first_process=lambda: read_pidfile.start(str(pidfile)),
        extract_result=lambda _c, pid: read_pidfile.join_nowait(pid),
        pidfile=str(pidfile),
    )
    assert result is not None
    assert result[0] == f"{os.getpid()}\n"
    assert not pidfile.exists()


def _no_fork(monkeypatch: pytest.MonkeyPatch) -> None:
    def fork() -> int:
        raise AssertionError("run forked before it checked its arguments")

    monkeypatch.setattr(os, "fork", fork)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"first_process": None}, TypeError, "first_process must be a function, not None"),
        ({"extract_result": None}, TypeError, "extract_result must be a function, not None"),
        ({"init_ctrl": 3}, TypeError, "init_ctrl must be a function, not 3"),
        ({"socket_directory": "/tmp/a\0b"}, ValueError, "NUL character"),
        ({"pidfile": "m\0.pid"}, ValueError, "without NUL characters"),
        ({"pidfile": ""}, ValueError, "non-empty str or path"),
        ({"pidfile": 7}, TypeError, "non-empty str or path"),
        ({"pidfile": "/"}, ValueError, "is a directory: name a file in it"),
        ({"pidfile": "/no-such-dir/m.pid"}, FileNotFoundError, "create it first"),
        # A str is true: "no" set the flag.
        (
            {"disable_pmanage": "no"},
            TypeError,
            "disable_pmanage='no' is not valid: it is a bool",
        ),
        ({"no_unlink": 1}, TypeError, "no_unlink=1 is not valid: it is a bool"),
    ],
)
def test_bad_run_arguments_raise_before_anything_is_forked(
    monkeypatch: pytest.MonkeyPatch, kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    _no_fork(monkeypatch)
    args: dict[str, Any] = {
        "first_process": lambda: echo.start("never"),
        "extract_result": lambda _ctrl, pid: echo.join_nowait(pid),
    }
    with pytest.raises(error, match=message):
        netmcore.run(**(args | kwargs))
    if "extract_result" not in kwargs:  # startup has none
        with pytest.raises(error, match=message):
            netmcore.startup(**{k: v for k, v in (args | kwargs).items() if k != "extract_result"})


def test_pidfile_may_be_a_path(short_tmp: Path) -> None:
    pidfile = short_tmp / "m.pid"
    result = netmcore.run(
        first_process=lambda: read_pidfile.start(str(pidfile)),
        extract_result=lambda _c, pid: read_pidfile.join_nowait(pid),
        pidfile=pidfile,
    )
    assert result is not None and result[0] == f"{os.getpid()}\n"
    assert not pidfile.exists()


def _run_with_unwritable_pidfile(pidfile: Path, **kwargs: Any) -> None:
    with warnings.catch_warnings():
        # Whatever the failed run leaks is finalized here, not in a later test.
        warnings.simplefilter("ignore", ResourceWarning)
        with pytest.raises(OSError) as info:
            run_echo(pidfile=str(pidfile), **kwargs)
        assert info.value.errno == errno.ELOOP  # opened without following the link
        gc.collect()


def _dangling(short_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A pidfile that passes run's checks and fails when it is written, after
    the socket directory is made: a symbolic link, which run refuses up front,
    made once the checks have passed (just before the master is made)."""
    pidfile = short_tmp / "m.pid"
    raise_fd_limit = _runtime.raise_fd_limit

    def link_then_raise_fd_limit() -> None:
        pidfile.symlink_to(short_tmp / "no-such-dir" / "m.pid")
        raise_fd_limit()

    monkeypatch.setattr(_runtime, "raise_fd_limit", link_then_raise_fd_limit)
    return pidfile


def test_unwritable_pidfile_leaves_socket_directory_clean(
    short_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sd = short_tmp / "sd"
    pidfile = _dangling(short_tmp, monkeypatch)
    _run_with_unwritable_pidfile(pidfile, socket_directory=str(sd))
    pidfile.unlink()
    monkeypatch.undo()
    # Nothing of the failed run may be left: no lock held, no socket, no lock file.
    assert run_echo(socket_directory=str(sd)) == "hi"
    assert os.listdir(sd) == []


def test_unwritable_pidfile_leaves_no_default_directory(
    short_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tmp = short_tmp / "tmp"
    tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))
    _run_with_unwritable_pidfile(_dangling(short_tmp, monkeypatch))
    assert os.listdir(tmp) == []


# --- a second master -----------------------------------------------------------


class Holder:
    """hold_master.py in a subprocess of its own session."""

    def __init__(self, sd: Path, pidfile: Path | None = None) -> None:
        args = [sys.executable, str(HOLD), "--socket-directory", str(sd)]
        if pidfile is not None:
            args += ["--pidfile", str(pidfile)]
        self.proc = subprocess.Popen(
            args,
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            start_new_session=True,
        )
        self.lines: list[str] = []
        self._buf = b""
        self.master_pid = 0
        self.worker_pid = 0

    def read_line(self, timeout: float = 30.0) -> str:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no line from hold_master.py; got {self._buf!r}"
            ready, _, _ = select.select([fd], [], [], remaining)
            if ready:
                data = os.read(fd, 4096)
                assert data, f"hold_master.py closed stdout; got {self._buf!r}"
                self._buf += data
        line, self._buf = self._buf.split(b"\n", 1)
        self.lines.append(line.decode())
        return self.lines[-1]

    def wait_ready(self) -> None:
        word = self.read_line().split()
        assert word[0] == "ready", word
        self.master_pid, self.worker_pid = int(word[1]), int(word[2])
        assert self.master_pid == self.proc.pid

    def finish(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"\n")
        self.proc.stdin.flush()
        assert self.read_line() == "done"
        assert self.proc.wait(30) == 0

    def session(self) -> list[psutil.Process]:
        found = []
        for p in psutil.process_iter():
            try:
                if os.getsid(p.pid) == self.proc.pid and p.status() != psutil.STATUS_ZOMBIE:
                    found.append(p)
            except (ProcessLookupError, PermissionError, psutil.Error):
                pass
        return found

    def cleanup(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        for p in self.session():
            with contextlib.suppress(psutil.Error):
                p.kill()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()


@pytest.fixture
def holder() -> Iterator[Callable[..., Holder]]:
    started: list[Holder] = []

    def start(sd: Path, pidfile: Path | None = None) -> Holder:
        h = Holder(sd, pidfile)
        started.append(h)
        h.wait_ready()
        return h

    try:
        yield start
    finally:
        for h in started:
            h.cleanup()


def query_status(path: str, timeout: float = 10.0) -> _wire.Status | str:
    """Ask the control socket at ``path`` for the status.

    Returns the Status, or a word saying why there is none: ``connect-failed
    ERRNO``, ``closed`` (the master dropped the connection), ``timeout``, or
    ``unexpected NAME``.
    """
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as s:
        s.settimeout(timeout)
        try:
            s.connect(path)
        except OSError as exc:
            return f"connect-failed {errno.errorcode.get(exc.errno or 0, exc.errno)}"
        try:
            s.send(_wire.encoder.encode(_wire.StatusReq()))
            data = s.recv(_wire.RECV_SIZE)
        except (ConnectionResetError, BrokenPipeError):
            return "closed"
        except TimeoutError:
            return "timeout"
        if not data:
            return "closed"
        msg = _wire.decoder.decode(data)
        if isinstance(msg, _wire.Status):
            return msg
        return f"unexpected {type(msg).__name__}"


def query_status_as(uid: int, gid: int, path: str) -> str:
    """:func:`query_status` from a forked child that switched to ``uid``/``gid``."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        result = "child failed"
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
            reply = query_status(path)
            result = f"status {reply.master_pid}" if isinstance(reply, _wire.Status) else reply
        except BaseException as exc:
            result = f"child failed: {exc!r}"
        finally:
            try:
                os.write(w, result.encode())
            finally:
                os._exit(0)
    os.close(w)
    try:
        chunks = []
        while chunk := os.read(r, 4096):
            chunks.append(chunk)
    finally:
        os.close(r)
        os.waitpid(pid, 0)
    return b"".join(chunks).decode()


def test_directory_in_use_is_refused(short_tmp: Path, holder: Callable[..., Holder]) -> None:
    sd = short_tmp / "sd"
    h = holder(sd)
    called = []
    with pytest.raises(netmcore.SocketDirectoryError, match="in use") as info:
        netmcore.run(
            first_process=lambda: echo.start("x"),
            extract_result=lambda _c, _p: None,
            socket_directory=str(sd),
            init_ctrl=lambda _c: called.append(True),
        )
    assert str(h.master_pid) in str(info.value)
    assert not called
    # The refused attempt did not disturb the running master.
    assert sorted(os.listdir(sd)) == [LOCK, PMANAGE, SOCK]
    status = query_status(str(sd / SOCK))
    assert isinstance(status, _wire.Status), status
    assert status.master_pid == h.master_pid
    h.finish()
    # Once that master has ended, the directory is free.
    assert os.listdir(sd) == []
    assert run_echo(socket_directory=str(sd)) == "hi"


def test_a_master_whose_lock_file_went_as_it_locked_locks_the_next(
    short_tmp: Path, holder: Callable[..., Holder], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A master that opened the lock file of one that then ended (removed the
    file, let go of its lock) took the lock of a file no longer there: a
    third master made a lock file of its own, took its lock, and ran beside
    it, unlinking as a crashed master's the objects it kept."""
    sd = short_tmp / "sd"
    first = holder(sd)
    real = _socketdir.SocketDir._wait_for_lock

    def first_ends_meanwhile(self: _socketdir.SocketDir, fd: int, waiting: Any) -> None:
        monkeypatch.setattr(_socketdir.SocketDir, "_wait_for_lock", real)
        first.finish()  # between this master's open of the lock file and its lock
        real(self, fd, waiting)

    monkeypatch.setattr(_socketdir.SocketDir, "_wait_for_lock", first_ends_meanwhile)
    third: list[subprocess.CompletedProcess[str]] = []

    def try_a_third_master() -> netmcore.ProcessId[str]:
        assert (sd / LOCK).read_text() == f"{os.getpid()}\n"  # this master's, at the path
        command = [sys.executable, str(HOLD), "--socket-directory", str(sd)]
        third.append(
            subprocess.run(
                command,
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
        )
        return echo.start("x")

    result = netmcore.run(
        first_process=try_a_third_master,
        extract_result=lambda _c, pid: echo.join_nowait(pid),
        socket_directory=str(sd),
    )
    assert result == "x"
    assert third[0].returncode != 0, third[0].stdout
    assert f"in use by a running netmcore master (pid {os.getpid()})" in third[0].stderr


def test_directory_of_killed_master_is_reusable(
    short_tmp: Path, holder: Callable[..., Holder]
) -> None:
    # A master killed with SIGKILL: its watchdog cleans up, then removes its
    # socket and lock file, as a clean end does (they stayed, for the next
    # master to take over); the next master uses the directory.
    sd = short_tmp / "sd"
    h = holder(sd)
    os.kill(h.master_pid, signal.SIGKILL)
    h.proc.wait(30)
    deadline = time.monotonic() + 5
    while h.session() and time.monotonic() < deadline:
        time.sleep(0.01)  # polling a condition (PDEATHSIG), with a deadline
    assert not h.session()
    assert os.listdir(sd) == []
    assert run_echo(socket_directory=str(sd)) == "hi"
    assert os.listdir(sd) == []


def test_lock_of_a_dead_master_without_a_watchdog_is_a_clear_error(
    short_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The lock is held, the master it names is dead, and no watchdog of it
    # says it cleans up (a dead master's watchdog waits as long as it lives):
    # after a short wait, the error says what is going on.
    sd = short_tmp / "sd"
    sd.mkdir(mode=0o700)
    monkeypatch.setattr(_socketdir, "_CLEANUP_WAIT", 0.0)
    fd = os.open(sd / LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, b"999999999\n")  # above any pid_max: dead
        with pytest.raises(netmcore.SocketDirectoryError) as info:
            run_echo(socket_directory=str(sd))
    finally:
        os.close(fd)
    assert "is still locked, though its netmcore master (pid 999999999) is dead" in str(info.value)
    assert run_echo(socket_directory=str(sd)) == "hi"  # once the lock is let go
    assert os.listdir(sd) == []


def test_status_from_same_user(short_tmp: Path, holder: Callable[..., Holder]) -> None:
    sd = short_tmp / "sd"
    pidfile = short_tmp / "m.pid"
    h = holder(sd, pidfile)
    assert pidfile.read_text().strip() == str(h.master_pid)
    status = query_status(str(sd / SOCK))
    assert isinstance(status, _wire.Status), status
    assert status.master_pid == h.master_pid
    (info,) = status.processes
    assert info.os_pid == h.worker_pid
    assert info.state == "running"
    h.finish()
    assert not pidfile.exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")
def test_control_socket_refuses_another_user(
    short_tmp: Path, holder: Callable[..., Holder]
) -> None:
    sd = short_tmp / "sd"
    h = holder(sd)
    # Let the other user reach the socket, so that only the peer-credentials
    # check stands between it and the master.
    os.chmod(short_tmp, 0o755)
    os.chmod(sd, 0o755)
    os.chmod(sd / SOCK, 0o666)
    assert query_status_as(NOBODY, NOBODY, str(sd / SOCK)) == "closed"
    # Same user, after the refusal: the master is unharmed and answers.
    assert query_status_as(os.getuid(), os.getgid(), str(sd / SOCK)) == f"status {h.master_pid}"
    status = query_status(str(sd / SOCK))
    assert isinstance(status, _wire.Status), status
    assert status.master_pid == h.master_pid
    h.finish()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")
def test_control_socket_not_reachable_by_another_user_by_default(
    short_tmp: Path, holder: Callable[..., Holder]
) -> None:
    # Without any chmod the socket file itself (mode 0600) keeps others out.
    sd = short_tmp / "sd"
    h = holder(sd)
    os.chmod(short_tmp, 0o755)
    os.chmod(sd, 0o755)
    result = query_status_as(NOBODY, NOBODY, str(sd / SOCK))
    assert result.startswith("connect-failed") or result == "closed", result
    h.finish()


@pytest.mark.parametrize("name", ["netmcore.sock", "netmcore.lock"])
def test_a_users_file_of_a_name_netmcore_uses_is_refused_not_lost(
    short_tmp: Path, name: str
) -> None:
    """The socket was unlinked to bind it, the lock file written over, and
    both removed at the end: a user's file of either name was lost."""
    sd = short_tmp / "sd"
    sd.mkdir(mode=0o700)
    (sd / name).write_text("mine\n")
    with pytest.raises(netmcore.SocketDirectoryError) as info:
        run_echo(socket_directory=str(sd))
    assert f"{str(sd / name)!r} is not a" in str(info.value)
    assert "Move that file, or pass another socket_directory" in str(info.value)
    assert (sd / name).read_text() == "mine\n"
