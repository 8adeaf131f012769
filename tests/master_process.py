"""A netmcore master run as a subprocess (its own session), read line by line.

Shared by the kill tests (tests/test_signals.py, tests/test_crash_cleanup.py),
which wait for what the master prints, with deadlines, never with sleeps.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import psutil

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

    def wait_exit(self, timeout: float = STOP_WITHIN) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"the master did not exit within {timeout} s; stdout: {self.lines!r}; "
                f"stderr:\n{self.stderr()}"
            ) from None
