"""A netmcore master run as a subprocess (its own session), read line by line.

Shared by the kill tests (tests/test_signals.py, tests/test_crash_cleanup.py),
which wait for what the master prints, with deadlines, never with sleeps.
"""

from __future__ import annotations

import os
import select
import subprocess
import time
from collections.abc import Callable
from pathlib import Path


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
