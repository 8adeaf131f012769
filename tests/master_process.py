"""A netmcore master run as a subprocess (its own session), read line by line.

Shared by the tests that run a whole program (tests/test_signals.py,
tests/test_crash_cleanup.py, tests/test_run_edges.py), which wait for what the
master prints, with deadlines, never with sleeps.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent  # the repository: where a program runs
STARTUP_WITHIN = 30.0  # generous: only guards against a hang
STOP_WITHIN = 5.0  # the issue: SIGINT/SIGTERM end everything within 5 s


def is_dead(p: psutil.Process) -> bool:
    try:
        return not p.is_running() or p.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def assert_all_gone(procs: list[psutil.Process], timeout: float = 0.0) -> None:
    """Every process in ``procs`` has ended (waiting up to ``timeout``)."""
    deadline = time.monotonic() + timeout
    while True:
        alive = [p for p in procs if not is_dead(p)]
        if not alive or time.monotonic() >= deadline:
            break
        time.sleep(0.01)  # polling a condition, with a deadline
    assert not alive, f"processes still alive after {timeout} s: {alive}"


class MasterProcess:
    def __init__(self, argv: list[str], stderr_path: Path, cwd: Path, *, stdin: int) -> None:
        self.stderr_path = stderr_path
        with open(stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                argv,
                cwd=cwd,
                stdin=stdin,
                stdout=subprocess.PIPE,
                stderr=err,
                start_new_session=True,
            )
        self.pid = self.proc.pid
        assert self.proc.stdout is not None
        self.fd = self.proc.stdout.fileno()
        self._buf = b""
        self.lines: list[str] = []
        self.eof = False

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def _read(self, timeout: float) -> None:
        if self.eof:
            return
        ready, _, _ = select.select([self.fd], [], [], max(0.0, timeout))
        if not ready:
            return
        data = os.read(self.fd, 65536)
        if not data:
            self.eof = True
            return
        self._buf += data
        *complete, self._buf = self._buf.split(b"\n")
        self.lines.extend(line.decode() for line in complete)

    def wait_for(self, done: Callable[[list[str]], bool], what: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not done(self.lines):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.eof:
                raise AssertionError(
                    f"timed out waiting for {what}; stdout so far: {self.lines!r}; "
                    f"exit status {self.proc.poll()}; stderr:\n{self.stderr()}"
                )
            self._read(remaining)

    def children(self) -> list[psutil.Process]:
        try:
            found = psutil.Process(self.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []
        return [c for c in found if not is_dead(c)]

    def session(self) -> list[psutil.Process]:
        """Every live process in the master's session (it is the session leader)."""
        found = []
        for p in psutil.process_iter():
            with contextlib.suppress(ProcessLookupError, PermissionError, psutil.Error):
                if os.getsid(p.pid) == self.pid and not is_dead(p):
                    found.append(p)
        return found

    def cleanup(self) -> None:
        """Kill whatever is left of the program, whatever the test did, and
        close the pipes to it."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGKILL)
            self.proc.wait()
        for p in self.session():
            with contextlib.suppress(psutil.Error):
                p.kill()
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        if self.proc.stdin is not None:
            with contextlib.suppress(BrokenPipeError):
                self.proc.stdin.close()

    def write_line(self, line: str) -> None:
        """Write ``line`` and a newline to the program's stdin, flushed: what
        a worker blocked in ``sys.stdin.readline()`` waits for."""
        assert self.proc.stdin is not None, "the program was started without a pipe to its stdin"
        self.proc.stdin.write(f"{line}\n".encode())
        self.proc.stdin.flush()

    def assert_session_ends(self, timeout: float) -> None:
        """Every process of the master's session ends within ``timeout``:
        polled, since the parent-death signal (PR_SET_PDEATHSIG) that ends a
        killed master's children is delivered asynchronously."""
        deadline = time.monotonic() + timeout
        while self.session() and time.monotonic() < deadline:
            time.sleep(0.01)  # polling a condition, with a deadline
        assert not self.session(), f"processes outlived the master: {self.session()}"

    def wait_exit(self, timeout: float = STOP_WITHIN) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"the master did not exit within {timeout} s; stdout: {self.lines!r}; "
                f"stderr:\n{self.stderr()}"
            ) from None


@contextlib.contextmanager
def master_with_a_worker_ready(
    tmp: Path, name: str, source: str, *, args: Sequence[str] = (), launcher: Sequence[str] = ()
) -> Iterator[MasterProcess]:
    """Run ``source`` as the program ``tmp/name`` (with ``args``, through
    ``launcher`` if given, as ``sh -c ...``), its stdin a pipe and its stderr
    in ``tmp/stderr.txt``; yield it once its worker has printed "ready", and
    kill whatever is left of it at the end, whatever the test did.

    The shape of every test whose program's worker says "ready" and then
    waits for a line on stdin (:meth:`MasterProcess.write_line`): the test
    acts on the running program in between, with no sleep."""
    script = tmp / name
    script.write_text(source)
    argv = [*launcher, sys.executable, str(script), *args]
    m = MasterProcess(argv, tmp / "stderr.txt", ROOT, stdin=subprocess.PIPE)
    try:
        m.wait_for(lambda lines: "ready" in lines, "its worker to print ready", STARTUP_WITHIN)
        yield m
    finally:
        m.cleanup()
