"""Crash cleanup: the pmanage record, the next-start cleanup, and the watchdog.

Most tests run ``tests/scripts/crash_master.py`` as a subprocess, in a session of
its own. Its first process makes one kernel object of each kind (a shm object,
a semaphore, preallocated shm, a managed file, and a shm object and a semaphore
made by the test and handed over with ``manage_shm``/``manage_sem``) and leaves
a large result waiting, unjoined, in shared memory (a payload in flight). The
tests then kill the master (SIGKILL), its watchdog, or both, and check what is
left in ``/dev/shm``, in the file system and in the socket directory.

Then tests run ``tests/scripts/crash_failed_start.py``: a start that fails
is not a crash, and must leave neither a record nor a locked directory.

The last ones run ``tests/scripts/audit_master.py``, whose audit hook sends a
signal at an exact point of the master's run: its first and last moments, a
wait for a dead master's watchdog, a compaction of the record.

A SIGKILLed master's workers and watchdog are reparented to init, where the
autouse fixture of conftest.py cannot see them: every test waits, with a
deadline, for each process it learned of to be gone.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import resource
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import posix_ipc
import psutil
import pytest
from master_process import STOP_WITHIN, MasterProcess, assert_all_gone, is_dead
from scenario import wait_until

import netmcore
from netmcore import _cleanup, _ipc, _master, _resources

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "tests" / "scripts" / "crash_master.py"
FAILED_START = ROOT / "tests" / "scripts" / "crash_failed_start.py"
SHM_DIR = "/dev/shm"
PMANAGE = "netmcore.pmanage"

CLEANUP_WITHIN = 5.0  # the watchdog cleans up "at once": well within 5 s
STARTUP_WITHIN = 30.0  # generous: only guards against a hang
LEFTOVER_WARNING = "object(s) that a crashed master left"


# --- small helpers ------------------------------------------------------------


def shm_path(name: str) -> str:
    return os.path.join(SHM_DIR, name.lstrip("/"))


def sem_path(name: str) -> str:
    return os.path.join(SHM_DIR, "sem." + name.lstrip("/"))


def getsid(pid: int) -> int | None:
    try:
        return os.getsid(pid)
    except ProcessLookupError:
        return None


def sig_ignored(pid: int) -> set[int]:
    """The signals that process ``pid`` ignores (SigIgn in /proc/PID/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigIgn:"):
            mask = int(line.split()[1], 16)
            return {n for n in range(1, 65) if mask & (1 << (n - 1))}
    raise AssertionError(f"no SigIgn in /proc/{pid}/status")


def read_pmanage(path: Path) -> list[tuple[str, str, str]]:
    """The (op, kind, name) lines of a pmanage record, checking their format."""
    entries = []
    for line in path.read_text(encoding="utf-8").splitlines():
        op, kind, raw = line.split(" ", 2)
        assert op in "+-" and len(op) == 1, f"bad line {line!r}"
        name = json.loads(raw)
        assert isinstance(name, str), f"bad line {line!r}"
        entries.append((op, kind, name))
    return entries


def listed(path: Path) -> set[tuple[str, str]]:
    """What a pmanage record still lists: added and not removed since."""
    now: set[tuple[str, str]] = set()
    for op, kind, name in read_pmanage(path):
        if op == "+":
            now.add((kind, name))
        else:
            now.discard((kind, name))
    return now


@netmcore.process
def _noop(x: int) -> int:
    return x


def run_trivial(**kwargs: object) -> None:
    """Run a master in this process with a trivial first process."""
    result = netmcore.run(
        first_process=lambda: _noop.start(7),
        extract_result=lambda _c, pid: _noop.join_nowait(pid),
        **kwargs,  # type: ignore[arg-type]
    )
    assert result == 7


# --- the objects of a run -------------------------------------------------------


@dataclass
class Objects:
    """What the first process of crash_master.py made or took over."""

    shm: str
    sem: str
    prealloc: str
    before: str
    file: str
    ext_shm: str
    ext_sem: str
    master_pid: int
    payloads: list[str] = field(default_factory=list)

    @property
    def object_prefix(self) -> str:
        # create_shm names objects /nmc.<master pid>.<token>.<16 hex digits>
        prefix = self.shm[: -len(self.shm.rsplit(".", 1)[1])]
        assert prefix.startswith(f"/nmc.{self.master_pid}."), self.shm
        return prefix

    @property
    def payload_prefix(self) -> str:
        return self.object_prefix + "p."

    def find_payloads(self) -> list[str]:
        bare = self.payload_prefix.lstrip("/")
        return ["/" + e for e in os.listdir(SHM_DIR) if e.startswith(bare)]

    def names(self) -> list[str]:
        return [
            self.shm,
            self.sem,
            self.prealloc,
            self.before,
            self.file,
            self.ext_shm,
            self.ext_sem,
            *self.payloads,
        ]

    def paths(self) -> dict[str, str]:
        """What each object is in the file system, by a readable label."""
        found = {
            "shm": shm_path(self.shm),
            "sem": sem_path(self.sem),
            "prealloc": shm_path(self.prealloc),
            "before": shm_path(self.before),
            "file": self.file,
            "ext_shm": shm_path(self.ext_shm),
            "ext_sem": sem_path(self.ext_sem),
        }
        for name in self.payloads:
            found[f"payload {name}"] = shm_path(name)
        return found

    def existing(self) -> dict[str, str]:
        return {k: p for k, p in self.paths().items() if os.path.exists(p)}

    def missing(self) -> dict[str, str]:
        return {k: p for k, p in self.paths().items() if not os.path.exists(p)}

    def expected_records(self) -> set[tuple[str, str]]:
        return {
            ("posix_shm", self.shm),
            ("posix_sem", self.sem),
            ("posix_shm_preallocated", self.prealloc),
            ("posix_shm_preallocated", self.before),
            ("file", self.file),
            ("posix_shm", self.ext_shm),
            ("posix_sem", self.ext_sem),
            ("prefix", self.payload_prefix),
        }

    def remove_all(self) -> None:
        """Clean up by hand (for the tests where netmcore must not)."""
        for name in (self.shm, self.prealloc, self.before, self.ext_shm, *self.find_payloads()):
            with contextlib.suppress(posix_ipc.ExistentialError):
                posix_ipc.unlink_shared_memory(name)
        for name in (self.sem, self.ext_sem):
            with contextlib.suppress(posix_ipc.ExistentialError):
                posix_ipc.unlink_semaphore(name)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.file)


# --- the master subprocess -------------------------------------------------------


class ScriptMaster(MasterProcess):
    """A master script of tests/scripts in a subprocess of its own session."""

    def wait_line(self, line: str, timeout: float = STOP_WITHIN) -> None:
        self.wait_for(lambda lines: line in lines, repr(line), timeout)

    def guard(self) -> psutil.Process:
        """The program's guard (it unlinks what the program made outside run)."""
        self.wait_for(
            lambda lines: any(x.startswith("guard ") for x in lines), "guard", STARTUP_WITHIN
        )
        return psutil.Process(int(self.word("guard")))

    def word(self, first: str) -> str:
        """The rest of the first line that starts with ``first``."""
        for line in self.lines:
            if line.startswith(first + " "):
                return line[len(first) + 1 :]
        raise AssertionError(f"no {first!r} line in {self.lines!r}")

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()

    def exit_status(self, timeout: float = STARTUP_WITHIN) -> int:
        """Wait for the master to exit, and read what it wrote (to the end:
        what it started holds its stdout too)."""
        status = self.wait_exit(timeout)
        deadline = time.monotonic() + timeout
        while not self.eof:
            assert time.monotonic() < deadline, f"stdout still open; got {self.lines!r}"
            self._read(deadline - time.monotonic())
        return status

    def close_streams(self) -> None:
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()


class CrashMaster(ScriptMaster):
    """crash_master.py in a subprocess of its own session, and what it printed."""

    def __init__(
        self,
        tmp: Path,
        *,
        socket_directory: Path | None,
        disable_pmanage: bool = False,
        stubborn: bool = False,
        pidfile: Path | None = None,
    ) -> None:
        self.tmp = tmp
        self.sockdir_arg = socket_directory
        # A file name with a space, a quote and a non-ASCII letter: the record
        # quotes names.
        self.file = tmp / 'managed "data" é.txt'
        self.file.write_text("managed\n")
        token = uuid.uuid4().hex[:12]
        self.ext_shm = f"/nmc_crashtest_ext_shm_{token}"
        self.ext_sem = f"/nmc_crashtest_ext_sem_{token}"
        posix_ipc.SharedMemory(self.ext_shm, posix_ipc.O_CREX, mode=0o600, size=4096).close_fd()
        posix_ipc.Semaphore(self.ext_sem, posix_ipc.O_CREX, mode=0o600, initial_value=0).close()
        self.stderr_path = tmp / f"stderr-{token}.txt"
        argv = [
            sys.executable,
            str(SCRIPT),
            "--file",
            str(self.file),
            "--ext-shm",
            self.ext_shm,
            "--ext-sem",
            self.ext_sem,
        ]
        if socket_directory is not None:
            argv += ["--socket-directory", str(socket_directory)]
        if disable_pmanage:
            argv.append("--disable-pmanage")
        if stubborn:
            argv.append("--stubborn")
        if pidfile is not None:
            argv += ["--pidfile", str(pidfile)]
        super().__init__(argv, self.stderr_path, ROOT, stdin=subprocess.PIPE)
        assert self.proc.stdin is not None
        self.procs: list[psutil.Process] = []  # every process of the program we saw
        self.objects: Objects | None = None
        self.init: dict[str, object] = {}
        self.watchdog: psutil.Process | None = None

    def ping(self) -> None:
        """A round trip through the master to the first process and back."""
        n = self.lines.count("pong")
        self.send("ping")
        self.wait_for(lambda lines: lines.count("pong") > n, "pong", STOP_WITHIN)

    # --- start-up ----------------------------------------------------------

    def wait_ready(self) -> Objects:
        """Wait until every object exists, the large result waits in shm, and
        the master has forked the children it wants; find the watchdog."""
        self.wait_line("ready", STARTUP_WITHIN)
        assert self.lines[0] == f"master {self.pid}"
        self.init = json.loads(self.word("init"))
        names = json.loads(self.word("objects"))
        objects = Objects(
            names["shm"],
            names["sem"],
            names["prealloc"],
            names["before"],
            names["file"],
            names["ext_shm"],
            names["ext_sem"],
            self.pid,
        )
        assert objects.file == str(self.file)
        # `big` has read (and unlinked) its large argument when it says so; its
        # large result is written to shm just after that.
        self.wait_for(
            lambda lines: any(line.startswith("big ") for line in lines), "big", STARTUP_WITHIN
        )
        assert int(self.word("big").split()[1]) > 64 * 1024
        wait_until(lambda: bool(objects.find_payloads()), "a payload in flight", STARTUP_WITHIN)
        objects.payloads = objects.find_payloads()
        assert len(objects.payloads) == 1, objects.payloads
        assert not objects.missing(), objects.missing()
        self.objects = objects
        self.watchdog = self.find_watchdog()
        # The first process, the watchdog, and the spare pool, topped up when
        # it is low. (It may hold more, a batch may be under way: the checks
        # at the end also look through the master's session.)
        spares = _master.SPARES_LOW + 1
        wait_until(lambda: len(self.children()) >= 2 + spares, "the spare pool", STARTUP_WITHIN)
        self.procs = [*self.children(), self.watchdog, self.guard()]
        first = int(self.word("worker").split()[0])
        assert first in {p.pid for p in self.procs}
        with contextlib.suppress(psutil.NoSuchProcess):  # it has ended, or soon will
            self.procs.append(psutil.Process(int(self.word("big").split()[0])))
        return objects

    def find_watchdog(self) -> psutil.Process:
        """The master's one child, but its guard, that is in a session of its own."""

        guard = self.guard().pid

        def candidates() -> list[psutil.Process]:
            return [
                c
                for c in psutil.Process(self.pid).children()
                if getsid(c.pid) not in (self.pid, None) and c.pid != guard
            ]

        wait_until(lambda: len(candidates()) == 1, "the watchdog", STARTUP_WITHIN)
        (watchdog,) = candidates()
        assert getsid(watchdog.pid) == watchdog.pid, "the watchdog leads its own session"
        return watchdog

    # --- processes ---------------------------------------------------------

    def kill_watchdog(self) -> None:
        """SIGKILL the watchdog and the program's guard (nothing but a next
        start cleans up then), and wait until they are dead (zombies of the master)."""
        assert self.watchdog is not None
        guard = self.guard()
        self.watchdog.kill()
        guard.kill()
        assert_all_gone([self.watchdog, guard], STOP_WITHIN)

    def quit(self) -> None:
        """Have the first process return; wait for a clean exit and every process gone."""
        self.send("quit")
        self.wait_line("done")
        assert self.wait_exit() == 0, self.stderr()
        self.wait_gone()

    def kill_master(self) -> None:
        """SIGKILL the master; wait for it, then for every process it had."""
        os.kill(self.pid, signal.SIGKILL)
        assert self.wait_exit() == -signal.SIGKILL
        self.wait_gone()

    def wait_gone(self) -> None:
        # Workers die by PR_SET_PDEATHSIG, asynchronously; the watchdog when it
        # is done.
        assert_all_gone(self.procs, STOP_WITHIN)
        wait_until(lambda: not self.session(), "the master's session to empty", STOP_WITHIN)

    def cleanup(self) -> None:
        """Kill whatever is left of the program, and remove what it made."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGKILL)
            self.proc.wait()
        for p in [*self.procs, *self.session()]:
            with contextlib.suppress(psutil.Error):
                p.kill()
        with contextlib.suppress(AssertionError):
            assert_all_gone([*self.procs, *self.session()], STOP_WITHIN)
        self.close_streams()
        if self.objects is not None:
            self.objects.remove_all()
        for name in (self.ext_shm,):
            with contextlib.suppress(posix_ipc.ExistentialError):
                posix_ipc.unlink_shared_memory(name)
        with contextlib.suppress(posix_ipc.ExistentialError):
            posix_ipc.unlink_semaphore(self.ext_sem)


@pytest.fixture
def crash_master(tmp_path: Path) -> Iterator[Callable[..., CrashMaster]]:
    started: list[CrashMaster] = []

    def start(**kwargs: object) -> CrashMaster:
        sub = tmp_path / f"m{len(started)}"
        sub.mkdir()
        m = CrashMaster(sub, **kwargs)  # type: ignore[arg-type]
        started.append(m)
        return m

    try:
        yield start
    finally:
        for m in started:
            m.cleanup()


@pytest.fixture
def sockdir(tmp_path: Path) -> Path:
    return tmp_path / "sd"


# --- 1. the watchdog cleans up after a SIGKILLed master ---------------------------


@pytest.mark.parametrize("group", [False, True], ids=["master", "process-group"])
def test_watchdog_cleans_up_after_sigkill(
    crash_master: Callable[..., CrashMaster], group: bool
) -> None:
    m = crash_master(socket_directory=None)
    objects = m.wait_ready()
    sockdir = Path(str(m.init["sockdir"]))
    assert sockdir.is_dir()
    assert (sockdir / PMANAGE).exists()
    # `kill -9 PID`, or `kill -9 -PGID` (every worker at once, as a harness or
    # a closing terminal might): the watchdog is in a session of its own.
    if group:
        os.killpg(m.pid, signal.SIGKILL)
    else:
        os.kill(m.pid, signal.SIGKILL)
    assert m.wait_exit() == -signal.SIGKILL
    # No next start: the watchdog alone removes everything, at once.
    wait_until(
        lambda: not objects.existing(),
        f"the watchdog to unlink {sorted(objects.existing())}",
        CLEANUP_WITHIN,
    )
    wait_until(lambda: not sockdir.exists(), "the temporary socket directory", CLEANUP_WITHIN)
    assert not objects.find_payloads()
    m.wait_gone()  # the watchdog exits when it is done; the workers die with the master


@pytest.mark.parametrize("replaced", [False, True], ids=["ours", "another's"])
def test_watchdog_removes_the_pidfile_of_a_sigkilled_master(
    crash_master: Callable[..., CrashMaster], tmp_path: Path, replaced: bool
) -> None:
    # Before the fix the pidfile stayed, with a dead pid in it.
    pidfile = tmp_path / "master.pid"
    m = crash_master(socket_directory=None, pidfile=pidfile)
    objects = m.wait_ready()
    assert pidfile.read_text() == f"{m.pid}\n"
    if replaced:  # another program's since: not the watchdog's to remove
        pidfile.write_text("4242\n")
    os.kill(m.pid, signal.SIGKILL)
    assert m.wait_exit() == -signal.SIGKILL
    wait_until(lambda: not objects.existing(), "the watchdog to clean up", CLEANUP_WITHIN)
    m.wait_gone()  # the watchdog has done all it does
    if replaced:
        assert pidfile.read_text() == "4242\n"
    else:
        assert not pidfile.exists()


def test_watchdog_cleans_up_a_given_socket_directory(
    crash_master: Callable[..., CrashMaster], sockdir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    m = crash_master(socket_directory=sockdir)
    objects = m.wait_ready()
    assert m.init["sockdir"] == str(sockdir)
    os.kill(m.pid, signal.SIGKILL)
    assert m.wait_exit() == -signal.SIGKILL
    wait_until(
        lambda: not objects.existing(),
        f"the watchdog to unlink {sorted(objects.existing())}",
        CLEANUP_WITHIN,
    )
    m.wait_gone()
    # As a clean end leaves it: no record, no socket, no lock file (they
    # stayed until a next start, or `netmcore unlink`, removed them).
    assert sorted(os.listdir(sockdir)) == []
    # The next start finds nothing left to clean.
    with caplog.at_level(logging.WARNING, logger="netmcore"):
        run_trivial(socket_directory=str(sockdir))
    assert LEFTOVER_WARNING not in caplog.text
    # A given directory is kept, and left empty.
    assert sorted(os.listdir(sockdir)) == []


def test_new_master_waits_while_the_watchdog_cleans(
    crash_master: Callable[..., CrashMaster], sockdir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    m = crash_master(socket_directory=sockdir)
    objects = m.wait_ready()
    watchdog = m.watchdog
    assert watchdog is not None
    # Stopped, the watchdog can do nothing, but it still holds the directory's
    # lock: a new master must wait for it, not clean up beside it. (The
    # program's guard is stopped too: it would unlink `before` meanwhile.)
    guard = m.guard()
    guard.suspend()
    watchdog.suspend()
    resume = threading.Timer(0.3, watchdog.resume)
    try:
        os.kill(m.pid, signal.SIGKILL)
        assert m.wait_exit() == -signal.SIGKILL
        assert not objects.missing(), objects.missing()
        # The delay only lets the new master reach its wait first; whenever the
        # watchdog resumes, the new master must not have cleaned up beside it.
        resume.start()
        with caplog.at_level(logging.WARNING, logger="netmcore"):
            run_trivial(socket_directory=str(sockdir))
    finally:
        resume.cancel()
        with contextlib.suppress(psutil.Error):
            watchdog.resume()
        with contextlib.suppress(psutil.Error):
            guard.resume()
    resume.join()
    assert LEFTOVER_WARNING not in caplog.text, "the new master did not wait for the watchdog"
    assert not objects.existing(), objects.existing()
    m.wait_gone()
    assert sorted(os.listdir(sockdir)) == []


# --- 2. the next start cleans up when the watchdog could not ------------------------


def test_next_start_unlinks_what_a_crashed_master_left(
    crash_master: Callable[..., CrashMaster], sockdir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    m = crash_master(socket_directory=sockdir)
    objects = m.wait_ready()
    m.kill_watchdog()
    m.kill_master()
    # Nobody cleaned up: everything is still there, and listed.
    assert not objects.missing(), objects.missing()
    record = sockdir / PMANAGE
    assert listed(record) == objects.expected_records()
    with caplog.at_level(logging.WARNING, logger="netmcore"):
        run_trivial(socket_directory=str(sockdir))
    assert not objects.existing(), objects.existing()
    assert not objects.find_payloads()
    warnings = [r for r in caplog.records if LEFTOVER_WARNING in r.getMessage()]
    assert len(warnings) == 1, caplog.text
    message = warnings[0].getMessage()
    assert warnings[0].levelno == logging.WARNING
    assert f"unlinked {len(objects.paths())} object(s)" in message, message
    for name in objects.names():
        assert name in message, (name, message)
    assert not record.exists()
    # The next start after that has nothing left to clean.
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="netmcore"):
        run_trivial(socket_directory=str(sockdir))
    assert LEFTOVER_WARNING not in caplog.text


@pytest.mark.parametrize("bad", ["file-now-a-directory", "unknown-kind", "not-utf-8"])
def test_next_start_reports_an_entry_it_cannot_remove_and_removes_the_rest(
    sockdir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, bad: str
) -> None:
    """A leftover entry that cannot be removed (a file that is now a directory,
    a kind of another version, a line that is not text) is logged and
    skipped: the entries after it are removed, and the start goes ahead."""
    sockdir.mkdir(mode=0o700)
    name = _ipc.random_name(f"/nmc.{os.getpid()}.test-crash.")
    _ipc.create_mapped(name, 16).close()
    record = _cleanup.Record(str(sockdir / PMANAGE))
    if bad == "file-now-a-directory":
        (tmp_path / "was-a-file").mkdir()
        record.write("+", "file", str(tmp_path / "was-a-file"))
    elif bad == "unknown-kind":
        record.write("+", "posix_mq", "/queue")
    else:
        os.write(record.fd, b'+ file "/tmp/\xff\xfe"\n')
    record.write("+", "posix_shm", name)
    record.close(clean=False)
    try:
        with caplog.at_level(logging.WARNING, logger="netmcore"):
            run_trivial(socket_directory=str(sockdir))
        assert not os.path.exists(shm_path(name)), "the entries after the bad one were kept"
    finally:
        _ipc.unlink(name)
    said = {
        "file-now-a-directory": f"could not unlink file '{tmp_path / 'was-a-file'}'",
        "unknown-kind": "could not unlink posix_mq '/queue'",
        "not-utf-8": "skipped a line of",
    }
    assert said[bad] in caplog.text
    assert f"unlinked 1 object(s) that a crashed master left in {sockdir}: {name}" in caplog.text


def test_next_start_refuses_a_record_that_others_can_write(sockdir: Path, tmp_path: Path) -> None:
    """The record names what the next start removes: one that others can write
    could name any of the user's files, so run() refuses it, removing nothing."""
    sockdir.mkdir(mode=0o700)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    record = sockdir / PMANAGE
    record.write_text(f'+ file "{victim}"\n')
    record.chmod(0o622)
    with pytest.raises(netmcore.SocketDirectoryError, match=r"is not a regular file of yours"):
        run_trivial(socket_directory=str(sockdir))
    assert victim.exists()


# --- 3. no_unlink -------------------------------------------------------------------


def test_no_unlink_leaves_leftovers_for_a_later_start(
    crash_master: Callable[..., CrashMaster], sockdir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    m = crash_master(socket_directory=sockdir)
    objects = m.wait_ready()
    m.kill_watchdog()
    m.kill_master()
    record = sockdir / PMANAGE
    left = listed(record)
    assert left == objects.expected_records()
    try:
        with caplog.at_level(logging.WARNING, logger="netmcore"):
            run_trivial(socket_directory=str(sockdir), no_unlink=True)
        assert not objects.missing(), f"no_unlink=True unlinked {objects.missing()}"
        assert LEFTOVER_WARNING not in caplog.text
        # What was not unlinked is still the crashed master's, and still
        # listed: a later start without no_unlink cleans it up.
        assert record.exists(), "the clean end of the no_unlink run dropped the record"
        assert left <= listed(record)
        run_trivial(socket_directory=str(sockdir))
        assert not objects.existing(), objects.existing()
    finally:
        objects.remove_all()


# --- 4. disable_pmanage ----------------------------------------------------------------


def test_disable_pmanage_records_nothing(
    crash_master: Callable[..., CrashMaster], sockdir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    m = crash_master(socket_directory=sockdir, disable_pmanage=True)
    objects = m.wait_ready()
    assert m.init["pmanage"] is False  # not at the start...
    assert not (sockdir / PMANAGE).exists()  # ...nor once every object exists
    m.kill_watchdog()
    m.kill_master()
    assert not (sockdir / PMANAGE).exists()
    try:
        assert not objects.missing(), objects.missing()
        with caplog.at_level(logging.WARNING, logger="netmcore"):
            run_trivial(socket_directory=str(sockdir))
        # Nothing was recorded, so the next start knows of nothing to unlink.
        assert not objects.missing(), objects.missing()
        assert LEFTOVER_WARNING not in caplog.text
    finally:
        objects.remove_all()
    assert not objects.existing()


# --- 5. the record while a master runs ----------------------------------------------------


def test_pmanage_record_is_private_and_lists_objects_until_a_clean_end(
    crash_master: Callable[..., CrashMaster], sockdir: Path
) -> None:
    m = crash_master(socket_directory=sockdir)
    objects = m.wait_ready()
    record = sockdir / PMANAGE
    assert m.init["pmanage"] is True
    assert stat.S_IMODE(record.stat().st_mode) == 0o600
    assert record.stat().st_uid == os.getuid()
    assert listed(record) == objects.expected_records()
    m.quit()
    assert not objects.existing(), objects.existing()
    assert not record.exists()
    assert sorted(os.listdir(sockdir)) == []


# --- 6. the watchdog never cleans up for a master that still runs -----------------------------


def test_killing_the_watchdog_leaves_the_master_running(
    crash_master: Callable[..., CrashMaster], sockdir: Path
) -> None:
    m = crash_master(socket_directory=sockdir)
    objects = m.wait_ready()
    m.kill_watchdog()
    assert m.proc.poll() is None
    m.ping()  # the master still serves the first process
    assert not objects.missing(), objects.missing()
    assert listed(sockdir / PMANAGE) == objects.expected_records()
    m.quit()
    # The master's own shutdown released everything.
    assert not objects.existing(), objects.existing()
    assert sorted(os.listdir(sockdir)) == []


def test_signals_to_the_watchdog_are_ignored(
    crash_master: Callable[..., CrashMaster], sockdir: Path
) -> None:
    m = crash_master(socket_directory=sockdir)
    objects = m.wait_ready()
    assert m.watchdog is not None
    ignored = sig_ignored(m.watchdog.pid)
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        assert signum in ignored, f"the watchdog does not ignore {signum.name}"
        m.watchdog.send_signal(signum)
    m.ping()
    assert not is_dead(m.watchdog)
    assert not objects.missing(), objects.missing()
    m.quit()
    assert not objects.existing(), objects.existing()


@pytest.mark.parametrize(
    ("signum", "stubborn", "status"),
    [
        (signal.SIGINT, False, -signal.SIGINT),  # Ctrl-C in a terminal
        (signal.SIGTERM, True, 143),  # a service manager, a first process that holds on
    ],
    ids=["sigint", "sigterm-stubborn"],
)
def test_signal_to_process_group_releases_objects_through_the_master(
    crash_master: Callable[..., CrashMaster],
    sockdir: Path,
    signum: signal.Signals,
    stubborn: bool,
    status: int,
) -> None:
    m = crash_master(socket_directory=sockdir, stubborn=stubborn)
    objects = m.wait_ready()
    watchdog = m.watchdog
    assert watchdog is not None
    os.killpg(m.pid, signum)
    if stubborn:
        # The first process holds on, and still uses every object: while the
        # master waits for it, the watchdog must not have touched them.
        m.wait_line(f"got {signal.Signals(signum).name}")
        assert not is_dead(watchdog)
        assert not objects.missing(), objects.missing()
    assert m.wait_exit() == status, m.stderr()
    m.wait_gone()
    assert not objects.existing(), objects.existing()
    assert sorted(os.listdir(sockdir)) == []


# --- 7. no watchdog outlives a clean run ----------------------------------------------------------


def test_no_watchdog_after_a_clean_run() -> None:
    me = os.getsid(0)
    seen: list[psutil.Process] = []
    dirs: list[str] = []

    def find_watchdog(ctrl: netmcore.Controller) -> None:
        dirs.append(ctrl.socket_directory)

        def others() -> list[psutil.Process]:
            return [c for c in psutil.Process().children() if getsid(c.pid) not in (me, None)]

        wait_until(lambda: len(others()) == 1, "the watchdog", STARTUP_WITHIN)
        seen.extend(others())

    run_trivial(init_ctrl=find_watchdog)
    (watchdog,) = seen
    # Gone and reaped by the time run returns: not even a zombie is left.
    assert not watchdog.is_running(), watchdog
    assert watchdog.pid not in {c.pid for c in psutil.Process().children(recursive=True)}
    assert not os.path.exists(dirs[0])


# --- a start that fails is not a crash -------------------------------------------------------


def failed_start_report(tmp_path: Path) -> dict[str, object]:
    """Run crash_failed_start.py: a program with preallocated shm whose first
    ``run`` fails (a directory stands where the control socket goes), then
    runs again in the same process."""
    sd = tmp_path / "sd"
    sd.mkdir(mode=0o700)
    (sd / "netmcore.sock").mkdir()
    proc = subprocess.run(
        [sys.executable, str(FAILED_START), str(sd)],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=STARTUP_WITHIN,
        start_new_session=True,
    )
    assert proc.returncode == 0, proc.stderr
    (line,) = (x for x in proc.stdout.splitlines() if x.startswith("report "))
    report: dict[str, object] = json.loads(line.removeprefix("report "))
    assert report["first_error"], report  # the first start did fail
    return report


def test_failed_start_leaves_no_record(tmp_path: Path) -> None:
    report = failed_start_report(tmp_path)
    # No master ran, so nothing can have been left by a crash: a record left
    # now would make the next start unlink what the living program still uses.
    assert report["record"] is None, (
        f"a start that failed ({report['first_error']}) left a crash-cleanup record:\n"
        f"{report['record']}"
    )
    if report["second_error"] is None:
        assert report["before_exists"], "the next start unlinked the program's own shm"
        assert report["leftover_warnings"] == [], report["leftover_warnings"]


def test_failed_start_leaves_the_socket_directory_usable(tmp_path: Path) -> None:
    report = failed_start_report(tmp_path)
    # Once the cause is gone, the same program can start in the directory.
    assert report["second_error"] is None, (
        f"after a failed start ({report['first_error']}), the next start failed: "
        f"{report['second_error']}"
    )
    assert report["second_result"] == 5


# --- the first and last moments of run, the restart, the record's size ------------------
#
# These run tests/scripts/audit_master.py: an audit hook in the master sends a
# signal at the exact point a test names (an audit event), as if it came from
# outside at that moment.

AUDIT = ROOT / "tests" / "scripts" / "audit_master.py"


class AuditMaster(ScriptMaster):
    """audit_master.py in a subprocess of its own session. Every process of
    the program (a fork of the master, its watchdog too) is found by a tag
    in its command line: a killed master's watchdog and workers are
    reparented out of the test's reach."""

    def __init__(self, tmp: Path, *args: str) -> None:
        self.tag = uuid.uuid4().hex
        argv = [sys.executable, str(AUDIT), "--tag", self.tag, *args]
        super().__init__(argv, tmp / f"stderr-{self.tag}.txt", ROOT, stdin=subprocess.PIPE)

    def pre_run_shm(self) -> str:
        self.wait_for(lambda lines: len(lines) >= 2, "the pre line", STARTUP_WITHIN)
        name = self.word("pre")
        assert name.startswith(f"/nmc.{self.pid}.audittest."), name
        return name

    def kept(self) -> list[str]:
        self.wait_for(
            lambda lines: any(line.startswith("objects ") for line in lines),
            "the objects line",
            STARTUP_WITHIN,
        )
        names: list[str] = json.loads(self.word("objects"))
        return names

    def program(self) -> list[psutil.Process]:
        """Every live process of the program, wherever it was reparented."""
        found = []
        for p in psutil.process_iter(["cmdline"]):
            with contextlib.suppress(psutil.Error):
                if self.tag in (p.info["cmdline"] or []) and not is_dead(p):
                    found.append(p)
        return found

    def watchdog(self) -> psutil.Process:
        """The one process of the program, but its guard, that leads a session of its own."""

        others = {self.pid, self.guard().pid}

        def candidates() -> list[psutil.Process]:
            return [p for p in self.program() if p.pid not in others and getsid(p.pid) == p.pid]

        wait_until(lambda: len(candidates()) == 1, "the watchdog", STARTUP_WITHIN)
        return candidates()[0]

    def wait_program_gone(self) -> None:
        wait_until(lambda: not self.program(), "every process of the program to end", STOP_WITHIN)

    def cleanup(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGKILL)
        self.proc.wait()
        for p in self.program():
            with contextlib.suppress(psutil.Error):
                p.kill()
                p.resume()  # a stopped process takes SIGKILL too, but say it
        with contextlib.suppress(AssertionError):
            self.wait_program_gone()
        self.close_streams()
        names = [line.split()[1] for line in self.lines if line.startswith("pre ")]
        with contextlib.suppress(ValueError, AssertionError):
            names += json.loads(self.word("objects"))
        for name in names:
            with contextlib.suppress(posix_ipc.ExistentialError):
                posix_ipc.unlink_shared_memory(name)


@pytest.fixture
def audit_master(tmp_path: Path) -> Iterator[Callable[..., AuditMaster]]:
    started: list[AuditMaster] = []

    def start(*args: str) -> AuditMaster:
        m = AuditMaster(tmp_path, *args)
        started.append(m)
        return m

    try:
        yield start
    finally:
        for m in started:
            m.cleanup()


@pytest.fixture
def tmpdir_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh, short TMPDIR (for the masters started as subprocesses), where
    a run makes its temporary socket directory; empty at the end, or the test fails."""
    path = Path(tempfile.mkdtemp(prefix="nmt-", dir="/tmp"))
    monkeypatch.setenv("TMPDIR", str(path))
    try:
        yield path
        assert os.listdir(path) == [], "a run left its temporary socket directory"
    finally:
        shutil.rmtree(path, ignore_errors=True)


# Where SIGTERM comes: when the hook starts to look, and the audit event
# (with the base name of its first argument) it looks for.
TERM_POINTS = {
    "start-fork": ("start", "os.fork:"),  # run forks the watchdog, its first step
    "start-lock": ("start", "fcntl.flock:"),  # the directory is made, not locked yet
    "end-sweep": ("end", "os.listdir:shm"),  # Master.close sweeps /dev/shm
    "end-unlock": ("end", "os.remove:netmcore.lock"),  # the directory is being removed
}


@pytest.mark.parametrize("given", [False, True], ids=["temporary", "given"])
@pytest.mark.parametrize("point", TERM_POINTS)
def test_sigterm_at_the_start_or_end_of_run_raises_after_cleaning_up(
    audit_master: Callable[..., AuditMaster],
    tmpdir_env: Path,
    sockdir: Path,
    point: str,
    given: bool,
) -> None:
    """run() documents SystemExit(143) after SIGTERM, its first and last
    moments included: the signal waits until everything is cleaned up (it
    once killed the master by the default action there, leaving the socket
    directory and what the program had made before run)."""
    when, at = TERM_POINTS[point]
    where = ["--socket-directory", str(sockdir)] if given else []
    m = audit_master(*where, "--when", when, "--at", at, "--signal", "TERM")
    pre = m.pre_run_shm()
    assert m.exit_status() == 143, m.stderr()
    assert m.lines[-1] == "exit SystemExit 143", m.lines
    m.wait_program_gone()
    assert not os.path.exists(shm_path(pre)), "the program's own shm outlived it"
    assert os.listdir(tmpdir_env) == []
    if given:
        assert sorted(os.listdir(sockdir)) == []


@pytest.mark.parametrize("signum", ["INT", "TERM"])
def test_a_signal_just_as_extract_result_returns_raises_after_cleaning_up(
    audit_master: Callable[..., AuditMaster], tmpdir_env: Path, signum: str
) -> None:
    """The master's own code is interrupted at once, but a signal just after
    it returns, as run begins to tear down, must wait for the cleanup (it
    was raised at the first step of the teardown, which then never ran: the
    socket directory, the watchdog and the master's descriptors stayed)."""
    m = audit_master("--after-extract", "--signal", signum)
    m.pre_run_shm()
    expected = "exit KeyboardInterrupt" if signum == "INT" else "exit SystemExit 143"
    m.exit_status()
    # Seen before the process exits (after it, the watchdog would clean up).
    assert m.lines[-2:] == ["left nothing", expected], (m.lines, m.stderr())
    m.wait_program_gone()  # the watchdog too
    assert os.listdir(tmpdir_env) == []


# Where SIGKILL comes, and whether the program had handed what it made before
# run to the master by then: a master killed before it forked the watchdog
# has made nothing yet, and once the watchdog is told the run has ended,
# what the program made is its own again, as before run.
KILL_POINTS = {
    "start-fork": ("start", "os.fork:", False),  # before the watchdog is forked
    "start-lock": ("start", "fcntl.flock:", True),  # the directory is made, not locked yet
    "end-unlink": ("end", "os.remove:netmcore.sock", False),  # the directory is being removed
}


@pytest.mark.parametrize("point", KILL_POINTS)
def test_sigkill_at_the_start_or_end_of_run_leaves_no_directory(
    audit_master: Callable[..., AuditMaster], tmpdir_env: Path, point: str
) -> None:
    """A temporary socket directory has no next start to clean it: whenever
    the master is killed, it must not outlive the run."""
    when, at, in_watchdog_care = KILL_POINTS[point]
    m = audit_master("--when", when, "--at", at, "--signal", "KILL")
    pre = m.pre_run_shm()
    assert m.exit_status() == -signal.SIGKILL, m.stderr()
    wait_until(
        lambda: os.listdir(tmpdir_env) == [], "the temporary directory to go", CLEANUP_WITHIN
    )
    m.wait_program_gone()
    if in_watchdog_care:
        assert not os.path.exists(shm_path(pre)), "the watchdog left the program's shm"


@pytest.mark.parametrize("old_master", ["zombie", "reaped"])
def test_restart_waits_for_the_watchdog_of_a_killed_master(
    audit_master: Callable[..., AuditMaster], sockdir: Path, old_master: str
) -> None:
    """A master that starts in the directory of a killed one waits for as
    long as that one's watchdog cleans up, and takes over after. The killed
    master counts as dead before its parent has reaped it, too."""
    # The watchdog stops itself as it starts to clean up (it opens the
    # record), holding the lock: as if it had a long way to go.
    old = audit_master(
        "--socket-directory", str(sockdir), "--keep", "3", "--hold",
        "--stop-watchdog-at", f"open:{PMANAGE}",
    )  # fmt: skip
    old.wait_line("ready", STARTUP_WITHIN)
    objects = [old.pre_run_shm(), *old.kept()]
    watchdog = old.watchdog()
    guard = old.guard()
    guard.kill()  # it would unlink the pre-run shm at once: the watchdog is tested here
    os.kill(old.pid, signal.SIGKILL)
    if old_master == "reaped":
        assert old.wait_exit() == -signal.SIGKILL
    else:  # the supervisor (this test) has not reaped it yet
        zombie = psutil.Process(old.pid)
        wait_until(lambda: zombie.status() == psutil.STATUS_ZOMBIE, "the master to die")
    wait_until(lambda: watchdog.status() == psutil.STATUS_STOPPED, "the watchdog to stop")
    assert all(os.path.exists(shm_path(name)) for name in objects)
    # The new master gives a dead master's watchdog no time at all to say
    # that it cleans up, and resumes it once it has found the lock held (at
    # its second attempt to take it).
    new = audit_master(
        "--socket-directory", str(sockdir), "--cleanup-wait", "0",
        "--at", "fcntl.flock:", "--at", "fcntl.flock:",
        "--signal", "CONT", "--to", str(watchdog.pid),
    )  # fmt: skip
    assert new.exit_status() == 0, new.stderr()
    assert new.lines[-1] == "done 7", new.lines
    # The watchdog cleaned up, not the new master beside it.
    assert LEFTOVER_WARNING not in new.stderr()
    assert [name for name in objects if os.path.exists(shm_path(name))] == []
    assert old.wait_exit() == -signal.SIGKILL  # reaped now, if it was not
    old.wait_program_gone()
    new.wait_program_gone()
    assert sorted(os.listdir(sockdir)) == []


def test_sigterm_stops_the_wait_for_a_killed_masters_watchdog(
    audit_master: Callable[..., AuditMaster], sockdir: Path
) -> None:
    """The wait for a dead master's watchdog has no time limit; SIGTERM ends
    it (as SystemExit(143), run's way), and disturbs nothing."""
    old = audit_master(
        "--socket-directory", str(sockdir), "--keep", "1", "--hold",
        "--stop-watchdog-at", f"open:{PMANAGE}",
    )  # fmt: skip
    old.wait_line("ready", STARTUP_WITHIN)
    objects = [old.pre_run_shm(), *old.kept()]
    watchdog = old.watchdog()
    old.guard().kill()  # it would unlink the pre-run shm at once: the watchdog is tested here
    os.kill(old.pid, signal.SIGKILL)
    assert old.wait_exit() == -signal.SIGKILL
    wait_until(lambda: watchdog.status() == psutil.STATUS_STOPPED, "the watchdog to stop")
    new = audit_master(
        "--socket-directory", str(sockdir), "--at", "fcntl.flock:", "--at", "fcntl.flock:"
    )
    assert new.exit_status() == 143, new.stderr()
    assert new.lines[-1] == "exit SystemExit 143", new.lines
    new.wait_program_gone()
    assert all(os.path.exists(shm_path(name)) for name in objects)
    watchdog.resume()
    old.wait_program_gone()
    assert [name for name in objects if os.path.exists(shm_path(name))] == []
    run_trivial(socket_directory=str(sockdir))
    assert sorted(os.listdir(sockdir)) == []


@netmcore.process
def _churn(args: tuple[str, int]) -> tuple[int, int, list[tuple[str, str]], list[str]]:
    """Keep 3 shm objects, make and release one ``n`` times; then say how big
    the record is (lines, bytes), what it lists, and what was kept."""
    record, n = Path(args[0]), args[1]
    kept = [netmcore.create_shm(64) for _ in range(3)]
    for _ in range(n):
        netmcore.create_shm(64).release()
    data = record.read_bytes()
    return data.count(b"\n"), len(data), sorted(listed(record)), [shm.name for shm in kept]


def test_record_stays_in_proportion_to_what_is_live(sockdir: Path) -> None:
    """5,000 objects made and released write 10,000 lines; a long-running
    master would fill the disk, and its watchdog, reading every line while it
    holds the lock, keep a restart out. The record is compacted as it goes."""
    before = {(e.typ.value, e.name) for e in _resources.table.values()}
    record = sockdir / PMANAGE
    result = netmcore.run(
        first_process=lambda: _churn.start((str(record), 5000)),
        extract_result=lambda _c, pid: _churn.join_nowait(pid),
        socket_directory=str(sockdir),
    )
    assert result is not None
    lines, size, now, kept = result
    # COMPACT_AT lines of churn at most, beside the live entries.
    assert lines <= 1100, f"{lines} lines after 5,000 objects came and went"
    assert size <= 1100 * 120, f"{size} bytes after 5,000 objects came and went"
    # And it still lists every live object: the kept ones, the payload
    # prefix, and what this test process managed before.
    kept_entries = {("posix_shm", name) for name in kept}
    assert kept_entries | before <= set(now)
    assert [kind for kind, _ in set(now) - kept_entries - before] == ["prefix"]
    assert not record.exists()


@pytest.mark.parametrize("inherited", [[], [("posix_shm", "/left.by.a.dead.master")]])
def test_finishing_a_record_twice_keeps_what_it_lists(
    tmp_path: Path, inherited: list[tuple[str, str]]
) -> None:
    """The watchdog finishes the record as the run ends; the master does it
    again if the watchdog may have died before it answered. The second time
    must not remove the record of what a dead master left (no_unlink)."""
    path = tmp_path / PMANAGE
    path.write_text("".join(f"+ {kind} {json.dumps(name)}\n" for kind, name in inherited))
    record = _cleanup.Record(str(path))
    record.write("+", "posix_shm", "/made.in.this.run")
    record.close(clean=True)
    _cleanup.finish_record(str(path))
    _cleanup.finish_record(str(path))
    if inherited:
        assert _cleanup.pending(str(path)) == inherited
    else:
        assert not path.exists()
    assert os.listdir(tmp_path) == ([PMANAGE] if inherited else [])


def test_a_master_killed_as_it_puts_its_pidfile_in_place_leaves_no_file(
    audit_master: Callable[..., AuditMaster], tmp_path: Path
) -> None:
    """Killed as it links the pidfile into place, the master leaves no file
    in the pidfile's directory. Before the fix, the file was written under a
    temporary name first (.master.pid.<random>.tmp), which stayed."""
    pidfile_dir = tmp_path / "run"
    pidfile_dir.mkdir()
    m = audit_master(
        "--pidfile", str(pidfile_dir / "master.pid"), "--at", "os.link", "--signal", "KILL"
    )  # fmt: skip
    m.pre_run_shm()
    assert m.exit_status() == -signal.SIGKILL, m.stderr()
    m.wait_program_gone()  # the watchdog is done
    assert os.listdir(pidfile_dir) == []


@pytest.mark.parametrize("nth", [1, 2], ids=["first", "second"])
def test_a_master_killed_while_it_compacts_its_record_loses_no_entry(
    audit_master: Callable[..., AuditMaster], sockdir: Path, nth: int
) -> None:
    """Killed as it renames a compacted record over the old one (the first
    compaction, or the second: after the first, the record is appended to
    in its new file), the master leaves a complete record, and its watchdog
    unlinks every live object."""
    renames = ["--at", f"os.rename:{PMANAGE}.tmp"] * nth
    m = audit_master(
        "--socket-directory", str(sockdir), "--keep", "3", "--churn", "5000", "--hold",
        *renames, "--signal", "KILL",
    )  # fmt: skip
    objects = [m.pre_run_shm(), *m.kept()]
    assert m.exit_status() == -signal.SIGKILL, m.stderr()
    m.wait_program_gone()  # the watchdog is done
    assert [name for name in objects if os.path.exists(shm_path(name))] == []
    made = f"nmc.{m.pid}."
    assert [e for e in os.listdir(SHM_DIR) if e.removeprefix("sem.").startswith(made)] == []
    assert not (sockdir / PMANAGE).exists()
    assert not (sockdir / f"{PMANAGE}.tmp").exists()


class _Alarm(Exception):
    pass


def _raise_alarm(_signum: int, _frame: object) -> None:
    raise _Alarm()


def test_a_handlers_exception_as_the_record_is_compacted_loses_no_later_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A signal whose handler raises, as the compacted record is renamed over
    the record: the lines after it went to the old file, no longer at the
    path, and the objects they listed were left by a crash."""
    path = tmp_path / PMANAGE
    record = _cleanup.Record(str(path))
    monkeypatch.setattr(_cleanup, "COMPACT_AT", 2)
    real_replace = os.replace

    def replace_then_signal(src: str, dst: str) -> None:
        real_replace(src, dst)
        signal.raise_signal(signal.SIGALRM)  # its handler runs as this returns, if it can

    monkeypatch.setattr(_cleanup.os, "replace", replace_then_signal)
    previous = signal.signal(signal.SIGALRM, _raise_alarm)
    try:
        with pytest.raises(_Alarm):  # raised once the rename and the switch are done
            for n in range(100):
                record.write("+", "posix_shm", f"/gone.{n}")
                record.write("-", "posix_shm", f"/gone.{n}")
    finally:
        signal.signal(signal.SIGALRM, previous)
    monkeypatch.setattr(_cleanup.os, "replace", real_replace)
    record.write("+", "posix_shm", "/made.after")
    assert _cleanup.pending(str(path)) == [("posix_shm", "/made.after")]
    record.close(clean=False)


def test_a_record_line_written_part_way_refuses_its_object_and_spoils_no_other(
    tmp_path: Path,
) -> None:
    """A full disk or a file size limit cuts a line short: os.write's count
    was not looked at, the object was made though the record cannot name it,
    and the next line ran on from the torn one (both skipped at a cleanup)."""
    path = tmp_path / PMANAGE
    record = _cleanup.Record(str(path))
    record.write("+", "posix_shm", "/made.before")
    limits = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG, not a signal
    try:
        resource.setrlimit(resource.RLIMIT_FSIZE, (path.stat().st_size + 20, limits[1]))
        with pytest.raises(OSError) as info:
            record.write("+", "posix_shm", "/refused.0123456789abcdef")
        assert info.value.errno == errno.EFBIG
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)
        signal.signal(signal.SIGXFSZ, previous)
    assert ("posix_shm", "/refused.0123456789abcdef") not in record.live
    record.write("+", "posix_shm", "/made.after")
    assert _cleanup.pending(str(path)) == [
        ("posix_shm", "/made.before"),
        ("posix_shm", "/made.after"),
    ]
    record.close(clean=False)


@netmcore.process
def _nothing_much(k: int) -> int:
    return k


def test_a_run_that_cannot_write_its_clean_record_leaves_the_next_nothing_to_unlink(
    sockdir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """At a clean end, the record is rewritten to list only what a crashed
    master left. If that cannot be written (a full disk), the record listed
    what the living program keeps, and the next run in the directory
    unlinked it as a crashed master's."""
    kept = netmcore.create_shm(64)  # the program's, listed in each run's record
    try:
        real = _cleanup._write_record

        def disk_full(path: str, entries: list[tuple[str, str]]) -> int:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)

        def run_once() -> int | None:
            return netmcore.run(
                first_process=lambda: _nothing_much.start(1),
                extract_result=lambda _c, pid: _nothing_much.join_nowait(pid),
                socket_directory=str(sockdir),
            )

        monkeypatch.setattr(_cleanup, "_write_record", disk_full)
        with caplog.at_level(logging.WARNING, logger="netmcore"):
            assert run_once() == 1
        assert "could not write the record" in caplog.text
        assert not (sockdir / PMANAGE).exists()
        monkeypatch.setattr(_cleanup, "_write_record", real)
        assert run_once() == 1
        assert os.path.exists(shm_path(kept.name)), "the next run unlinked the program's object"
    finally:
        kept.release()
