"""Helpers for tests that run a process type as the first process of a run."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import mmap
import os
import platform
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

import netmcore
from netmcore import _ipc


def outcome_value(outcome: Any) -> Any:
    """The value of a Success; otherwise fail, with the remote traceback."""
    if isinstance(outcome, netmcore.Success):
        return outcome.value
    if isinstance(outcome, netmcore.Raised):
        pytest.fail(
            f"a process raised {outcome.type_name}: {outcome.message}\n{outcome.traceback}",
            pytrace=False,
        )
    pytest.fail(f"a process did not succeed: {outcome!r}", pytrace=False)


def run_snippet(
    code: str, timeout: float, *args: str, without_proc: bool = False
) -> tuple[int, str]:
    """Run ``code`` in a fresh interpreter (a regression may crash it, with
    SIGSEGV, say), ``args`` its ``sys.argv[1:]``; return its exit status and
    what it printed. What it left in /dev/shm, named for its pid, is
    unlinked. ``without_proc``: with no /proc, as in a container or a chroot
    that does not mount it (see :func:`_without_proc`)."""
    argv = [sys.executable, "-c", code, *args]
    if without_proc:
        argv = _without_proc(argv)
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()  # a hung one (the failure) is not left behind
        proc.communicate()
        raise
    finally:
        _ipc.unlink_prefix(f"/nmc.{proc.pid}.")  # what a crashed process left
    return proc.returncode, out


def _without_proc(argv: list[str]) -> list[str]:
    """``argv`` run in a mount namespace of its own where an empty tmpfs
    hides /proc (and in a user namespace, which gives the right to mount
    there): the same pid, files and /dev/shm. The test is skipped where no
    such namespace can be made."""
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("no mount namespace to hide /proc in: no unshare command")
    hide = "mount -t tmpfs none /proc"
    tried = subprocess.run(
        [unshare, "-rm", "sh", "-c", hide], check=False, capture_output=True, text=True
    )
    if tried.returncode != 0:
        pytest.skip(f"no mount namespace to hide /proc in: {tried.stderr.strip()}")
    # unshare and sh exec in turn: the interpreter keeps the pid Popen gives.
    return [unshare, "-rm", "sh", "-c", f'{hide} && exec "$@"', "sh", *argv]


def signal_at_call(function: str, send: str = "signal.raise_signal(signal.SIGUSR1)") -> str:
    """Lines of a snippet (see :func:`run_snippet`) that define ``_at_call``,
    a profile function that runs ``send`` once, as ``function`` is next
    called: where a real signal may land. The snippet sets it with
    ``sys.setprofile(_at_call)``."""
    return textwrap.dedent(
        f"""
        import os, signal, sys
        def _at_call(frame, event, arg):
            if event == "call" and frame.f_code.co_name == {function!r}:
                sys.setprofile(None)
                {send}
        """
    )


# Lines of a snippet: a SIGUSR1 handler that raises Tick (as a signal
# handler's timeout would), for :func:`signal_at_call` to send.
RAISES_TICK = """
import signal

class Tick(Exception):
    pass

def handler(*_):
    raise Tick

signal.signal(signal.SIGUSR1, handler)
"""


def strict_d(error: str) -> str:
    """Lines of a snippet: a dataclass ``D`` whose validator raises
    ``error`` for a negative ``x`` once ``STRICT[0]`` is set (in the
    process that decodes it, say, not in the one that made it)."""
    return f"""
import dataclasses

STRICT = [False]

@dataclasses.dataclass
class D:
    x: int

    def __post_init__(self):
        if STRICT[0] and self.x < 0:
            raise {error}
"""


SCRIPT_TIMEOUT = 30  # a guard against a hung child, not an assertion


def run_script(tmp_path: Path, body: str) -> subprocess.CompletedProcess[str]:
    """Run ``body`` (dedented) as a script in a fresh interpreter, where what
    its workers log and print reaches its stderr and stdout, captured."""
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(body))
    return subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=SCRIPT_TIMEOUT,
        check=False,
    )


def outcome_text(call: Callable[[], object]) -> str:
    """What ``call`` did, as text: "returned X", or "ErrorType: message"."""
    try:
        return f"returned {call()!r}"
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"


@netmcore.process
def _nothing(_: int) -> int:
    return 0


def in_master(checks: Callable[[], list[str]]) -> list[str]:
    """Run ``checks`` in the master's own code (first_process), then a worker."""
    got: list[str] = []

    def first() -> netmcore.ProcessId[int]:
        got.extend(checks())
        return _nothing.start(0)

    netmcore.run(
        first_process=first,
        extract_result=lambda _c, pid: outcome_value(_nothing.join_outcome_nowait(pid)),
    )
    return got


def joined(proc: Any, pid: Any) -> Any:
    """In a worker: join ``pid`` and return its value, or fail with its outcome."""
    return outcome_value(proc.join_outcome(pid))


def run_scenario(
    proc: Any, arg: Any, *, init_ctrl: Callable[[netmcore.Controller], None] | None = None
) -> Any:
    """Run ``proc(arg)`` as the first process; return its value, or fail with its outcome."""
    outcome = netmcore.run(
        first_process=lambda: proc.start(arg),
        extract_result=lambda _ctrl, pid: proc.join_outcome_nowait(pid),
        init_ctrl=init_ctrl,
    )
    return outcome_value(outcome)


def run_counting_unjoined(proc: Any, arg: Any) -> tuple[Any, list[int]]:
    """Run ``proc(arg)`` as the first process; its value, and the processes
    the master still holds for a join at the end of the run (every other
    one has ended by then): none but the first process, if nothing was left."""
    left: list[int] = []

    def extract(ctrl: netmcore.Controller, pid: Any) -> Any:
        left.extend(p.id for p in ctrl.processes() if p.id != pid.n)
        return proc.join_outcome_nowait(pid)

    outcome = netmcore.run(first_process=lambda: proc.start(arg), extract_result=extract)
    return outcome_value(outcome), left


# System call numbers, to see what the main thread is blocked in (/proc).
SYSCALLS = {
    "x86_64": {"recvfrom": 45, "futex": 202, "poll": 7, "epoll_wait": 232},
    # ppoll, epoll_pwait: where aarch64 has no poll, no epoll_wait
    "aarch64": {"recvfrom": 207, "futex": 98, "poll": 73, "epoll_wait": 22},
}.get(platform.machine())
WAIT = 10.0  # a guard against a hang, not an assertion


def main_thread_syscall(pid: int | None = None) -> tuple[int, int] | None:
    """The system call the main thread (of this process, or of ``pid``) is
    blocked in, and its first argument; None while it runs. (The main
    thread's tid is the pid.)"""
    pid = os.getpid() if pid is None else pid
    with open(f"/proc/{pid}/task/{pid}/syscall") as f:
        fields = f.read().split()
    if fields[0] == "running" or int(fields[0]) < 0:
        return None
    return int(fields[0]), int(fields[1], 16)


def wait_until(cond: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    """Poll ``cond``, with a deadline: AssertionError naming ``what`` if it passes."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.001)  # polling a condition, with a deadline


def wait_until_main_thread_blocks(where: Callable[[tuple[int, int]], bool]) -> None:
    """Wait until the main thread is blocked in a system call that ``where``
    accepts: (number, first argument)."""

    def blocked_there() -> bool:
        call = main_thread_syscall()
        return call is not None and where(call)

    wait_until(blocked_there, "the main thread to block there")


def mapped_ranges(fragment: str) -> list[range]:
    """The address ranges of this process's mappings whose path holds ``fragment``."""
    ranges = []
    with open("/proc/self/maps") as f:
        for line in f:
            if fragment in line:
                low, high = line.split()[0].split("-")
                ranges.append(range(int(low, 16), int(high, 16)))
    return ranges


SHM_DIR = "/dev/shm"


def own_shm_entries(*prefixes: str) -> set[str]:
    """The /dev/shm entries a test in this process could have made, to compare
    before and after it: netmcore's named for this process or its parent
    (``nmc.<pid>.``, ``sem.nmc.<pid>.``: a worker's objects are its master's,
    named for the master), and those under ``prefixes`` (the test's own names,
    like ``/nmctest.``). /dev/shm is machine-wide: a whole listing changes
    whenever any other process makes or removes an object."""
    pids = {os.getpid(), os.getppid()}
    owned = tuple(f"nmc.{pid}." for pid in pids) + tuple(p.lstrip("/") for p in prefixes)
    return {name for name in os.listdir(SHM_DIR) if name.removeprefix("sem.").startswith(owned)}


def shm_space() -> tuple[int, int]:
    """/dev/shm's free space and total size, in bytes (a total of 0: no limit)."""
    space = os.statvfs(SHM_DIR)
    return space.f_bavail * space.f_frsize, space.f_blocks * space.f_frsize


@contextlib.contextmanager
def shm_partly_used(pages: int = 64) -> Iterator[tuple[int, int]]:
    """Hold a written shm object of ``pages`` pages, so that /dev/shm's free
    space is below its total even where nothing else uses it; yield both,
    measured with it there. Skip the test where they cannot be told apart
    (a /dev/shm without a limit) or there is no room for it."""
    free, total = shm_space()
    if not total:
        pytest.skip("/dev/shm has no size limit, so no free space below its total")
    if free < 2 * pages * mmap.PAGESIZE:
        pytest.skip(f"/dev/shm has only {free:,} bytes free")
    with netmcore.create_shm(pages * mmap.PAGESIZE) as filler:
        filler.buffer[:] = b"\x01" * len(filler.buffer)  # every page taken
        free, total = shm_space()
        if free >= total:
            pytest.skip(f"/dev/shm shows {free:,} bytes free of {total:,} with {pages} pages used")
        yield free, total


# --------------------------------------------------------------------------
# A signal handler at a chosen point: the fault-injection tests raise SIGUSR1
# themselves where a real signal could land, and its handler runs there.
# --------------------------------------------------------------------------


@contextlib.contextmanager
def sigusr1_handled_by(handler: Callable[[int, FrameType | None], object]) -> Iterator[None]:
    """SIGUSR1 goes to ``handler`` while inside, and back to what it was
    after, whatever the test did: a handler left installed would run in a
    later test, or a default one kill the process."""
    old = signal.signal(signal.SIGUSR1, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGUSR1, old)


def sigusr1_raises(exc_type: type[BaseException]) -> contextlib.AbstractContextManager[None]:
    """While inside, SIGUSR1's handler raises ``exc_type``: the model of a
    handler that raises (a timeout's, say), whose exception comes wherever
    Python runs handlers, in the middle of a call under test."""

    def handler(_signum: int, _frame: FrameType | None) -> None:
        raise exc_type

    return sigusr1_handled_by(handler)


def run_sigusr1_handler_here() -> None:
    """Run SIGUSR1's handler here, at once: as a real signal's runs where a C
    call returns, before Python has its result."""
    signal.raise_signal(signal.SIGUSR1)


def interrupted_on_owner_died(lock: Callable[[int], int], seen: list[int]) -> Callable[[int], int]:
    """``lock`` (a lock call on a robust mutex, by address), recording each
    code it returns in ``seen``; where the code is EOWNERDEAD (its holder
    died), SIGUSR1's handler runs as the call returns: the handler's
    exception takes the place of the one word that says so, and the test
    sees whether the death is lost with it."""

    def lock_then_interrupt(addr: int) -> int:
        rc = lock(addr)
        seen.append(rc)
        if rc == errno.EOWNERDEAD:
            run_sigusr1_handler_here()
        return rc

    return lock_then_interrupt


# The bit the kernel sets in a robust mutex's futex word when its holder ends
# holding it (the kernel's ABI).
OWNER_DIED = 0x40000000


def end_a_thread_holding(lock: Callable[[], object], word: ctypes.c_int) -> None:
    """A holder that dies: ``lock`` runs in a thread that ends holding what
    it took. Returns once the kernel has marked the robust mutex's futex
    ``word`` (OWNER_DIED), which it does at the thread's end in the kernel,
    after the join: only then does the next locker get EOWNERDEAD for sure."""
    thread = threading.Thread(target=lock)
    thread.start()
    thread.join()
    wait_until(lambda: bool(word.value & OWNER_DIED), "the dead holder's mark")


# How the master's stall notice begins (see Master._look_for_stall).
STALL_NOTICE = "every running process has waited in the master"


def notice_then_ctrl_c(tmp_path: Path, script: str, arg: str) -> tuple[str, str, int]:
    """Run ``script`` with ``arg`` in a session of its own until it logs the
    stall notice, then Ctrl-C it, as the notice says; the notice's line, the
    rest of its stderr and its exit status. A program that never gives the
    notice fails at the per-test timeout."""
    path = tmp_path / "stalls.py"
    path.write_text(script)
    proc = subprocess.Popen(
        [sys.executable, str(path), arg],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert proc.stderr is not None
        notice = next(line for line in proc.stderr if STALL_NOTICE in line)
        os.killpg(proc.pid, signal.SIGINT)
        _, rest = proc.communicate(timeout=30)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    return notice, rest, proc.returncode
