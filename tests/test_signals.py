"""Stopping a netmcore program: SIGINT, SIGTERM and SIGKILL to the master.

Each test runs ``tests/scripts/signal_master.py`` as a subprocess, in a session
of its own, so that the test process is never the master and every process of
the program (master, workers, spares) can be found by its session id even after
the master is gone and its children have been reparented. The script reports
the master's and the workers' pids on stdout; the tests wait for those lines
(with a deadline) before they send a signal.
"""

from __future__ import annotations

import _signal  # type: ignore[import-not-found]  # signal's C half: no stub
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import psutil
import pytest
from interrupting import Interrupted, handler_raises
from master_process import (
    ROOT,
    STARTUP_WITHIN,
    STOP_WITHIN,
    MasterProcess,
    assert_all_gone,
    master_with_a_worker_ready,
)
from scenario import SYSCALLS, main_thread_syscall, wait_until

import netmcore

SCRIPT = ROOT / "tests" / "scripts" / "signal_master.py"


class Master(MasterProcess):
    """The subprocess running signal_master.py, and what it printed."""

    def __init__(
        self, tmp: Path, modes: list[str], block_in: str | None = None, extra: tuple[str, ...] = ()
    ) -> None:
        self.pidfile = tmp / "master.pid"
        self.sockdir = tmp / "sd"
        self.stderr_path = tmp / "stderr.txt"
        self.modes = modes
        self.block_in = block_in
        argv = [
            sys.executable,
            str(SCRIPT),
            "--pidfile",
            str(self.pidfile),
            "--socket-directory",
            str(self.sockdir),
            *(["--block-in", block_in] if block_in else []),
            *extra,
            *modes,
        ]
        super().__init__(argv, self.stderr_path, ROOT, stdin=subprocess.DEVNULL)

    # --- output ------------------------------------------------------------

    def assert_printed(self, line: str) -> None:
        assert line in self.lines, f"{line!r} not in {self.lines!r}; stderr:\n{self.stderr()}"

    def read_to_eof(self, timeout: float) -> None:
        """Read stdout until every writer (master and workers) has closed it."""
        self.wait_for(lambda _lines: self.eof, "the end of stdout", timeout)

    def workers(self) -> dict[int, str]:
        """Worker os pid -> mode (or "manager"), as the workers reported."""
        found = {}
        for line in self.lines:
            word = line.split()
            if word and word[0] == "worker":
                found[int(word[1])] = word[2]
        return found

    def wait_ready(self) -> dict[int, str]:
        """Wait until the manager and every worker run, and the spare pool is topped up.

        Returns the workers, as :meth:`workers` does. Blocked in first_process,
        the master has started the workers itself, and forks no spare.
        """
        if self.block_in == "first_process":
            n = len(self.modes)
            self.wait_for(lambda lines: "blocked in first_process" in lines, "", STARTUP_WITHIN)
            self.wait_for(lambda _lines: len(self.workers()) == n, f"{n} workers", STARTUP_WITHIN)
            return self.workers()
        n = len(self.modes) + 1
        self.wait_for(lambda _lines: len(self.workers()) == n, f"{n} workers", STARTUP_WITHIN)
        assert self.lines[0] == f"master {self.pid}"
        # Spares are forked in batches; wait until an idle master's pool is
        # topped up. (The pool may be larger, and a batch still under way:
        # the checks that follow also look through the session.)
        spares = _spares_wanted()
        deadline = time.monotonic() + STARTUP_WITHIN
        while len(self.children()) < n + spares:
            assert time.monotonic() < deadline, f"the master never forked {spares} spares"
            time.sleep(0.01)  # polling a condition, with a deadline
        return self.workers()


@netmcore.process
def _noop(x: int) -> int:
    return x


def test_run_restores_signal_handlers() -> None:
    # In-process: the master routes SIGINT/SIGTERM to its loop only while it runs.
    def mine(_signum: int, _frame: object) -> None:
        pass

    old_term = signal.signal(signal.SIGTERM, mine)
    try:
        before_int = signal.getsignal(signal.SIGINT)
        assert (
            netmcore.run(
                first_process=lambda: _noop.start(5),
                extract_result=lambda _c, pid: _noop.join_nowait(pid),
            )
            == 5
        )
        assert signal.getsignal(signal.SIGTERM) is mine
        assert signal.getsignal(signal.SIGINT) is before_int
    finally:
        signal.signal(signal.SIGTERM, old_term)


def _spares_wanted() -> int:
    """The fewest spares an idle master keeps: it forks no more once it has them."""
    from netmcore import _master

    return _master.SPARES_LOW + 1


def _procs(pids: Iterable[int]) -> list[psutil.Process]:
    found = []
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            found.append(psutil.Process(pid))
    return found


@pytest.fixture
def master_factory(tmp_path: Path) -> Iterator[Callable[..., Master]]:
    started: list[Master] = []

    def start(modes: list[str], block_in: str | None = None, extra: tuple[str, ...] = ()) -> Master:
        m = Master(tmp_path, modes, block_in, extra)
        started.append(m)
        return m

    try:
        yield start
    finally:
        for m in started:
            m.cleanup()


def _stop_and_check(m: Master, send: Callable[[], None]) -> tuple[int, list[psutil.Process]]:
    """Signal a ready master; return its exit status and the processes it had.

    Checks the part every graceful stop shares: the master exits within 5 s,
    and by then every worker and spare it had is gone (it reaped them), and
    it has cleaned up its pidfile and control socket.
    """
    workers = m.wait_ready()
    procs = m.children() + _procs(workers)
    assert set(workers) <= {p.pid for p in procs}
    assert m.pidfile.read_text().strip() == str(m.pid)
    start = time.monotonic()
    send()
    status = m.wait_exit(STOP_WITHIN - (time.monotonic() - start))
    assert_all_gone(procs)  # at once: the master must not leave them to PDEATHSIG
    assert not m.session(), f"processes left in the master's session: {m.session()}"
    m.read_to_eof(STOP_WITHIN)  # nobody still holds the master's stdout
    assert not m.pidfile.exists()
    assert sorted(os.listdir(m.sockdir)) == []
    return status, procs


def test_sigint_to_master_stops_busy_workers(master_factory: Callable[..., Master]) -> None:
    m = master_factory(["spin", "pause", "read", "pause"])
    status, _ = _stop_and_check(m, lambda: os.kill(m.pid, signal.SIGINT))
    m.assert_printed("exit KeyboardInterrupt")
    # run() raised KeyboardInterrupt, which the script re-raised: Python then
    # ends by SIGINT, as any program stopped by Ctrl-C does.
    assert status == -signal.SIGINT, m.stderr()
    assert "KeyboardInterrupt" in m.stderr()


def test_sigterm_to_master_stops_workers(master_factory: Callable[..., Master]) -> None:
    m = master_factory(["spin", "pause", "read"])
    status, _ = _stop_and_check(m, lambda: os.kill(m.pid, signal.SIGTERM))
    m.assert_printed("exit SystemExit 143")
    assert status == 143, m.stderr()


# Each signal that stops a master, and what the script then prints.
STOPPING_SIGNALS = pytest.mark.parametrize(
    ("signum", "exit_line"),
    [(signal.SIGINT, "exit KeyboardInterrupt"), (signal.SIGTERM, "exit SystemExit 143")],
)


@STOPPING_SIGNALS
def test_signal_while_first_process_runs_stops_what_it_started(
    master_factory: Callable[..., Master], signum: int, exit_line: str
) -> None:
    # The master's own user code is interrupted as it would be without
    # netmcore, and run's cleanup ends the workers it had started.
    m = master_factory(["spin", "pause"], block_in="first_process")
    status, _ = _stop_and_check(m, lambda: os.kill(m.pid, signum))
    m.assert_printed(exit_line)
    assert status == (-signal.SIGINT if signum == signal.SIGINT else 143), m.stderr()


@STOPPING_SIGNALS
def test_signal_while_extract_result_runs_is_not_lost(
    master_factory: Callable[..., Master], signum: int, exit_line: str
) -> None:
    m = master_factory(["quick"], block_in="extract_result")
    m.wait_for(lambda lines: "blocked in extract_result" in lines, "", STARTUP_WITHIN)
    os.kill(m.pid, signum)
    m.wait_exit(STOP_WITHIN)
    m.read_to_eof(STOP_WITHIN)
    m.assert_printed(exit_line)
    assert not m.session(), f"processes left in the master's session: {m.session()}"
    assert not m.pidfile.exists()
    assert sorted(os.listdir(m.sockdir)) == []


def test_worker_ignoring_sigterm_is_killed_after_grace(
    master_factory: Callable[..., Master],
) -> None:
    m = master_factory(["stubborn", "pause"])
    status, _ = _stop_and_check(m, lambda: os.kill(m.pid, signal.SIGINT))
    (stubborn,) = (pid for pid, mode in m.workers().items() if mode == "stubborn")
    # It was sent SIGTERM first, ignored it, and was then killed all the same.
    m.assert_printed(f"stubborn {stubborn} got SIGTERM")
    m.assert_printed("exit KeyboardInterrupt")
    assert status == -signal.SIGINT, m.stderr()


def test_sigint_to_process_group_like_a_terminal(
    master_factory: Callable[..., Master],
) -> None:
    # A terminal's Ctrl-C reaches every process of the foreground group at
    # once: the workers get their own KeyboardInterrupt while the master stops.
    m = master_factory(["spin", "pause", "read", "stubborn"])
    status, _ = _stop_and_check(m, lambda: os.killpg(m.pid, signal.SIGINT))
    m.assert_printed("exit KeyboardInterrupt")
    assert status == -signal.SIGINT, m.stderr()


def _tidy_master(
    master_factory: Callable[..., Master], tmp_path: Path, modes: list[str]
) -> tuple[Master, Path, list[int]]:
    """A master whose tidy workers' cleanup waits on a FIFO; a long SIGINT grace."""
    gate = tmp_path / "gate"
    os.mkfifo(gate)
    m = master_factory(modes, extra=["--gate", str(gate), "--interrupt-grace", "60"])
    tidy = [pid for pid, mode in m.wait_ready().items() if mode == "tidy"]
    return m, gate, tidy


@pytest.mark.skipif(SYSCALLS is None, reason="system call numbers known: x86_64, aarch64")
def test_a_ctrl_c_lets_the_workers_run_their_cleanup(
    master_factory: Callable[..., Master], tmp_path: Path
) -> None:
    """A Ctrl-C reaches every worker: each ends through its KeyboardInterrupt,
    running its finally blocks, and dies of SIGINT, before the master sends
    the stragglers SIGTERM (it sent it at once, which cut that cleanup short)."""
    m, gate, tidy = _tidy_master(master_factory, tmp_path, ["tidy", "tidy", "pause"])
    procs = m.children()
    fd = os.open(gate, os.O_RDWR)  # a writer: the cleanups' opens go on, their reads wait
    try:
        os.killpg(m.pid, signal.SIGINT)
        m.wait_for(
            lambda lines: all(f"tidy {pid} interrupted" in lines for pid in tidy),
            "the tidy workers' cleanup",
            STARTUP_WITHIN,
        )
        # The master has acted on the SIGINT (it sent SIGTERM as it said so),
        # and waits again, while the cleanups still wait for the gate.
        wait_until(lambda: "the master got SIGINT" in m.stderr(), "the master's stop")
        assert SYSCALLS is not None
        epoll_wait = SYSCALLS["epoll_wait"]
        wait_until(
            lambda: (main_thread_syscall(m.pid) or (0, 0))[0] == epoll_wait,
            "the master's loop to wait again",
        )
        os.write(fd, b"g" * len(tidy))  # one byte for each cleanup
        m.wait_for(
            lambda lines: all(f"tidy {pid} done" in lines for pid in tidy),
            "the tidy workers' cleanup to end",
            STARTUP_WITHIN,
        )
    finally:
        os.close(fd)
    status = m.wait_exit(STOP_WITHIN)
    assert_all_gone(procs)
    m.read_to_eof(STOP_WITHIN)
    m.assert_printed("exit KeyboardInterrupt")
    assert status == -signal.SIGINT, m.stderr()
    assert "SIGTERM" not in m.stderr() and "SIGKILL" not in m.stderr(), m.stderr()
    assert not m.session(), f"processes left in the master's session: {m.session()}"


def test_a_second_ctrl_c_ends_the_workers_cleanup_wait(
    master_factory: Callable[..., Master], tmp_path: Path
) -> None:
    """An impatient user's second Ctrl-C: the workers still running get
    SIGTERM at once, however long the grace for their cleanup."""
    m, _gate, (tidy,) = _tidy_master(master_factory, tmp_path, ["tidy"])
    procs = m.children()
    os.killpg(m.pid, signal.SIGINT)
    m.wait_for(
        lambda lines: f"tidy {tidy} interrupted" in lines, "the tidy cleanup", STARTUP_WITHIN
    )
    # Once the master has acted on the first: two pending at once are one.
    wait_until(lambda: "the master got SIGINT" in m.stderr(), "the master's stop")
    start = time.monotonic()
    os.kill(m.pid, signal.SIGINT)
    status = m.wait_exit(STOP_WITHIN - (time.monotonic() - start))
    assert_all_gone(procs)
    m.read_to_eof(STOP_WITHIN)
    m.assert_printed("exit KeyboardInterrupt")
    assert f"tidy {tidy} done" not in m.lines
    assert status == -signal.SIGINT, m.stderr()
    assert "killed by signal SIGTERM" in m.stderr(), m.stderr()
    assert not m.session(), f"processes left in the master's session: {m.session()}"


def test_sigterm_to_process_group(master_factory: Callable[..., Master]) -> None:
    # As `kill -TERM -PGID` or a service manager would do it.
    m = master_factory(["spin", "pause"])
    status, _ = _stop_and_check(m, lambda: os.killpg(m.pid, signal.SIGTERM))
    assert status == 143, m.stderr()


def test_repeated_sigint_still_stops_cleanly(
    master_factory: Callable[..., Master],
) -> None:
    # An impatient user presses Ctrl-C several times during the grace period.
    m = master_factory(["stubborn", "read"])

    def hammer() -> None:
        for _ in range(5):
            os.kill(m.pid, signal.SIGINT)

    status, _ = _stop_and_check(m, hammer)
    m.assert_printed("exit KeyboardInterrupt")
    assert status == -signal.SIGINT, m.stderr()


def test_sigkill_of_master_leaves_no_worker(master_factory: Callable[..., Master]) -> None:
    m = master_factory(["spin", "pause", "read", "stubborn"])
    workers = m.wait_ready()
    children = m.children()  # the workers and the spares
    assert len(children) >= len(workers) + _spares_wanted()
    procs = children + _procs(workers)
    os.kill(m.pid, signal.SIGKILL)
    assert m.wait_exit(STOP_WITHIN) == -signal.SIGKILL
    # PR_SET_PDEATHSIG is delivered asynchronously: poll, with a deadline.
    assert_all_gone(procs, timeout=STOP_WITHIN)
    m.assert_session_ends(STOP_WITHIN)
    m.read_to_eof(STOP_WITHIN)
    # The manager, blocked in a join, may see its link close before the
    # parent-death signal lands: it ends quietly, without a traceback.
    assert "Traceback" not in m.stderr(), m.stderr()


def test_sigkill_of_master_right_after_start_leaves_no_worker(
    master_factory: Callable[..., Master],
) -> None:
    # Killed while it is still forking: a child forked just before the kill
    # must notice (PDEATHSIG is set after the fork) and not run on.
    m = master_factory(["pause", "pause", "pause"])
    m.wait_for(lambda lines: any(line.startswith("worker ") for line in lines), "a worker", 30)
    os.kill(m.pid, signal.SIGKILL)
    m.wait_exit(STOP_WITHIN)
    m.assert_session_ends(STOP_WITHIN)
    assert_all_gone(_procs(m.workers()))


@netmcore.process
def _exit_with_3(_: int) -> int:
    os._exit(3)


def test_a_program_that_ignores_sigchld_still_learns_how_its_processes_end() -> None:
    """With SIGCHLD ignored, the kernel reaps children itself and their exit
    status is lost: run sets it to its default for its time, and back."""
    old = signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    try:
        outcome = netmcore.run(
            first_process=lambda: _exit_with_3.start(0),
            extract_result=lambda ctrl, pid: _exit_with_3.join_outcome_nowait(pid),
        )
        assert outcome == netmcore.Crashed(3, None)
        assert signal.getsignal(signal.SIGCHLD) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGCHLD, old)


def test_run_outside_the_main_thread_refuses_an_ignored_sigchld() -> None:
    old = signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    got: list[BaseException] = []

    def in_thread() -> None:
        try:
            netmcore.run(
                first_process=lambda: _exit_with_3.start(0),
                extract_result=lambda ctrl, pid: None,
            )
        except BaseException as exc:
            got.append(exc)

    try:
        thread = threading.Thread(target=in_thread)
        thread.start()
        thread.join()
    finally:
        signal.signal(signal.SIGCHLD, old)
    assert len(got) == 1 and isinstance(got[0], netmcore.ContextError)
    assert "SIGCHLD" in str(got[0]) and "signal.SIG_DFL" in str(got[0])


def test_an_interrupt_during_a_fork_of_the_master_stops_the_run_and_its_child(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A SIGINT that lands in the master's fork, before the child is tracked:
    it must stop the run (it was lost, or raised before the child's
    bookkeeping, leaving a child nothing killed). The autouse leak check
    fails the test if a child is left."""
    real_fork = os.fork
    sent: list[int] = []

    def fork_then_interrupt() -> int:
        pid = real_fork()
        if pid and not sent and sys._getframe(1).f_code.co_name == "_fork_children":
            sent.append(pid)
            os.kill(os.getpid(), signal.SIGINT)  # right after the fork, in the master
        return pid

    monkeypatch.setattr(os, "fork", fork_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        netmcore.run(
            first_process=lambda: _noop.start(1),
            extract_result=lambda ctrl, pid: _noop.join_nowait(pid),
        )
    assert sent
    assert not psutil.pid_exists(sent[0]) or psutil.Process(sent[0]).status() == "zombie"


# --------------------------------------------------------------------------
# Signals the program ignores
# --------------------------------------------------------------------------


def _disposition(signum: int) -> str:
    handler = signal.getsignal(signum)
    if handler == signal.SIG_IGN:
        return "ignored"
    if handler == signal.SIG_DFL:
        return "default"
    if handler is signal.default_int_handler:
        return "KeyboardInterrupt"
    return "a handler"


@netmcore.process
def _signalled_while_ignoring(ignored: list[int]) -> list[str]:
    """Send each signal the program ignores to the master and to itself (the
    kernel drops an ignored one at once); how the process handles both."""
    for signum in ignored:
        os.kill(os.getppid(), signum)
        os.kill(os.getpid(), signum)
    return [_disposition(signal.SIGINT), _disposition(signal.SIGTERM)]


@pytest.mark.parametrize(
    ("ignored", "in_worker"),
    [
        ([signal.SIGINT, signal.SIGTERM], ["ignored", "ignored"]),
        ([signal.SIGINT], ["ignored", "default"]),
        ([signal.SIGTERM], ["KeyboardInterrupt", "ignored"]),
    ],
    ids=["both", "SIGINT", "SIGTERM"],
)
def test_a_signal_the_program_ignores_stays_ignored_in_the_master_and_its_workers(
    ignored: list[int], in_worker: list[str]
) -> None:
    """A shell starts a background job with SIGINT ignored, so that a Ctrl-C
    or `kill -INT 0` of its group passes it by (multiprocessing's children
    keep it so too). Before the fix, run took it over: the signal stopped
    the workers and run raised KeyboardInterrupt, and every worker had
    SIGINT at default_int_handler and SIGTERM at SIG_DFL."""
    old = {s: signal.signal(s, signal.SIG_IGN) for s in ignored}
    in_master: list[str] = []

    def first() -> netmcore.ProcessId[list[str]]:
        in_master.extend(_disposition(s) for s in (signal.SIGINT, signal.SIGTERM))
        return _signalled_while_ignoring.start([int(s) for s in ignored])

    try:
        try:
            outcome = netmcore.run(
                first_process=first,
                extract_result=lambda _c, pid: _signalled_while_ignoring.join_outcome_nowait(pid),
            )
        except (KeyboardInterrupt, SystemExit) as exc:
            pytest.fail(f"run raised {exc!r} for a signal the program ignores", pytrace=False)
        after = [_disposition(s) for s in ignored]
    finally:
        for signum, handler in old.items():
            signal.signal(signum, handler)
    assert outcome == netmcore.Success(in_worker)
    # In the master, during the run, it was ignored too; the other one is run's.
    expected = ["ignored" if s in ignored else "a handler" for s in (signal.SIGINT, signal.SIGTERM)]
    assert in_master == expected
    assert after == ["ignored"] * len(ignored)


# A program whose worker waits for a line on stdin, and prints its outcome.
_BACKGROUND_JOB = """
import signal, sys
import netmcore

@netmcore.process
def wait_for_a_line(_: int) -> str:
    print("ready", flush=True)
    line = sys.stdin.readline().strip()
    ignored = signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    return f"{line}, SIGINT ignored: {ignored}"

print(
    netmcore.run(
        first_process=lambda: wait_for_a_line.start(0),
        extract_result=lambda _c, pid: wait_for_a_line.join_outcome_nowait(pid),
    ),
    flush=True,
)
"""


def test_a_background_job_of_a_shell_outlives_a_sigint_to_its_group(tmp_path: Path) -> None:
    """`setsid sh -c 'python job.py & ...; kill -INT 0'`: a non-interactive
    shell starts its background job with SIGINT ignored (here, `trap '' INT`
    before the exec: the same disposition). Before the fix, the SIGINT to
    the group stopped the run, and killed the worker."""
    ignoring_sigint = ["sh", "-c", 'trap \'\' INT; exec "$0" "$1"']
    with master_with_a_worker_ready(
        tmp_path, "job.py", _BACKGROUND_JOB, launcher=ignoring_sigint
    ) as m:
        os.killpg(m.pid, signal.SIGINT)  # dropped at once by every process that ignores it
        m.write_line("go")
        assert m.proc.stdin is not None
        m.proc.stdin.close()
        status = m.wait_exit(STARTUP_WITHIN)
        m.wait_for(lambda _lines: m.eof, "the end of stdout", STOP_WITHIN)
        assert status == 0, m.stderr()
        assert m.lines[-1] == "Success(value='go, SIGINT ignored: True')", m.stderr()


def _blocked_here() -> set[int]:
    return set(signal.pthread_sigmask(signal.SIG_BLOCK, ()))


def test_a_handler_run_as_interrupts_are_blocked_leaves_them_unblocked(
    monkeypatch: pytest.MonkeyPatch, master_cleanup: None
) -> None:
    # A create in the master holds SIGINT and SIGTERM back while it makes the
    # kernel object (an open holds nothing: test_interrupted_calls). pthread_sigmask
    # runs the Python handlers of signals that came before it as it returns: one
    # that raised there (a timeout's) left the block made and skipped its
    # undoing, so the thread ignored Ctrl-C and SIGTERM for good (a worker then
    # outlived its master's SIGTERM).
    segment = netmcore.create_shm(8)
    real = _signal.pthread_sigmask  # the C function, which signal's calls too

    def block_then_run_a_handler(how: int, mask: Iterable[int]) -> set[int]:
        old: set[int] = real(how, mask)
        if how == signal.SIG_BLOCK and signal.SIGINT in set(mask):
            signal.raise_signal(signal.SIGUSR1)  # its handler runs as the call returns
        return old

    before = _blocked_here()
    monkeypatch.setattr(_signal, "pthread_sigmask", block_then_run_a_handler)
    with handler_raises(signal.SIGUSR1), pytest.raises(Interrupted):
        netmcore.create_shm(8)
    monkeypatch.undo()
    try:
        assert _blocked_here() == before
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)
        segment.release()


def _signal_when_ready(
    tmp_path: Path,
    source: str,
    send: Callable[[int], None],
    *args: str,
    then: Callable[[subprocess.Popen[str]], str] | None = None,
) -> tuple[int, str, str]:
    """Run ``source`` in a session of its own; once it prints "ready",
    ``send(its pid)``; then, if given, ``then(the process)`` says what to
    write to its stdin; its exit status, stdout and stderr."""
    script = tmp_path / "program.py"
    script.write_text(source)
    proc = subprocess.Popen(
        [sys.executable, str(script), *args],
        stdin=None if then is None else subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        send(proc.pid)
        data = None if then is None else then(proc)
        out, err = proc.communicate(data, timeout=STOP_WITHIN + 5)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    return proc.returncode, out, err


_STARTS_TILL_REFUSED = """
import netmcore

@netmcore.process
def one(k: int) -> int:
    return k

@netmcore.process
def driver(_: int) -> int:
    print("ready", flush=True)
    while True:
        one.result(one.start(1))

netmcore.run(first_process=lambda: driver.start(0), extract_result=lambda c, p: None)
"""


def test_a_start_refused_after_a_sigint_to_the_master_alone_says_so(tmp_path: Path) -> None:
    # As `kill -INT <pid>`, a notebook's interrupt or a supervisor do: the
    # workers get no signal, and the driver's next start is refused. It said
    # the first process had ended, and to start every process before that.
    _, _, err = _signal_when_ready(
        tmp_path, _STARTS_TILL_REFUSED, lambda pid: os.kill(pid, signal.SIGINT)
    )
    assert "cannot start a process: the master got SIGINT and netmcore is stopping" in err, err
    assert "the first process has ended" not in err, err


_KEEPS_WHAT_IT_HAS = """
import signal
import netmcore

@netmcore.process
def item(k: int) -> int:
    if k >= 3:
        signal.pause()  # the Ctrl-C ends it
    return k

@netmcore.process
def driver(n: int) -> list[int]:
    got: list[int] = []
    try:
        for value in item.map(range(n), processes=2):
            got.append(value)
            if len(got) == 3:
                print("ready", flush=True)
    except KeyboardInterrupt:
        pass  # keep what came
    return got

print(netmcore.run(first_process=lambda: driver.start(10),
                   extract_result=lambda c, pid: driver.result(pid, timeout=0)))
"""


def test_a_ctrl_c_the_first_process_catches_lets_run_return_its_result(tmp_path: Path) -> None:
    # As a multiprocessing program's main catches the KeyboardInterrupt to
    # keep the results it has: run returns what the first process returned
    # (it raised KeyboardInterrupt, and the results were lost).
    # A terminal's Ctrl-C: to the whole group.
    status, out, err = _signal_when_ready(
        tmp_path, _KEEPS_WHAT_IT_HAS, lambda pid: os.killpg(pid, signal.SIGINT)
    )
    assert status == 0, err
    assert out == "[0, 1, 2]\n", err
    assert "KeyboardInterrupt" not in err and "raised an exception" not in err, err


_KEEPS_WHAT_IT_HAS_AS_STARTS_ARE_REFUSED = """
import time
import netmcore

@netmcore.process
def item(k: int) -> int:
    if k >= 3:
        time.sleep(0.05)  # the work: the map starts items as long as it runs
    return k

@netmcore.process
def driver(n: int) -> list[int]:
    got: list[int] = []
    try:
        for value in item.map(range(n), processes=2):
            got.append(value)
            if len(got) == 3:
                print("ready", flush=True)
    except (KeyboardInterrupt, netmcore.ShuttingDown):
        pass  # keep what came
    return got

got = netmcore.run(first_process=lambda: driver.start(10_000),
                   extract_result=lambda c, pid: driver.result(pid, timeout=0))
print(got[:3], len(got) < 10_000)
"""


def test_a_sigint_to_the_master_alone_the_first_process_catches_lets_run_return_its_result(
    tmp_path: Path,
) -> None:
    # As the README says to keep the results a map has when the SIGINT comes
    # to the master alone (a notebook's interrupt): the workers get none, and
    # the map learns of it as its next start is refused.
    status, out, err = _signal_when_ready(
        tmp_path, _KEEPS_WHAT_IT_HAS_AS_STARTS_ARE_REFUSED, lambda pid: os.kill(pid, signal.SIGINT)
    )
    assert status == 0, err
    assert out == "[0, 1, 2] True\n", err


_RETURNED_BEFORE_THE_CTRL_C = """
import signal
import sys
import time
import netmcore

@netmcore.process
def left_running(first: int) -> int:
    # Once the first process has returned (kill(pid, 0): False), say so.
    deadline = time.monotonic() + 30
    while netmcore.kill(netmcore.ProcessId(first), 0) and time.monotonic() < deadline:
        time.sleep(0.01)  # polling a condition, with a deadline
    print("ready", flush=True)
    signal.pause()  # run waits for it: the Ctrl-C ends it
    return 0

@netmcore.process
def first(_: int) -> int:
    left_running.start(netmcore.self_process_id().n)
    return 42

entry = sys.argv[1]
if entry == "run":
    print(netmcore.run(first_process=lambda: first.start(0),
                       extract_result=lambda c, pid: first.result(pid, timeout=0)))
else:
    print(netmcore.startup(first_process=lambda: first.start(0)))
"""


@pytest.mark.parametrize("entry", ["run", "startup"])
def test_a_ctrl_c_after_the_first_process_returned_still_interrupts(
    tmp_path: Path, entry: str
) -> None:
    # The first process caught nothing: it had returned before the Ctrl-C,
    # which stopped the process run waited for (a startup() program's
    # services). run raises KeyboardInterrupt, as the program asked.
    status, out, err = _signal_when_ready(
        tmp_path, _RETURNED_BEFORE_THE_CTRL_C, lambda pid: os.killpg(pid, signal.SIGINT), entry
    )
    assert status == -signal.SIGINT, (out, err)
    assert out == "" and "KeyboardInterrupt" in err, (out, err)


_ASYNCIO_FIRST_PROCESS = """
import asyncio
import netmcore

async def main() -> int:
    print("ready", flush=True)
    try:
        await asyncio.sleep(3600)
    except asyncio.CancelledError:  # asyncio.run cancels its main task on a Ctrl-C
        return 42
    return 0

@netmcore.process
def first(_: int) -> int:
    return asyncio.run(main())

print(netmcore.run(first_process=lambda: first.start(0),
                   extract_result=lambda c, pid: first.result(pid, timeout=0)))
"""


def test_an_asyncio_first_process_handles_the_ctrl_c_as_asyncio_does(tmp_path: Path) -> None:
    # asyncio.run turns a Ctrl-C into its main task's cancellation only if
    # SIGINT's handler is Python's own (signal.default_int_handler). With a
    # handler of netmcore's in the workers (33426d2), the KeyboardInterrupt
    # came out of the event loop: the process died of it, and run raised.
    status, out, err = _signal_when_ready(
        tmp_path, _ASYNCIO_FIRST_PROCESS, lambda pid: os.killpg(pid, signal.SIGINT)
    )
    assert (status, out) == (0, "42\n"), err


_RETURNS_AS_THE_MASTER_ALONE_GETS_A_SIGINT = """
import os
import netmcore

@netmcore.process
def first(gate: int) -> int:
    print("ready", flush=True)
    os.read(gate, 1)  # stdin: the test sends the SIGINT to the master, then a byte
    return 42

try:
    print(netmcore.run(first_process=lambda: first.start(0),
                       extract_result=lambda c, pid: first.result(pid, timeout=0)))
except KeyboardInterrupt:
    print("KeyboardInterrupt")
"""


def test_a_first_process_that_returns_as_the_master_alone_gets_a_sigint_is_returned(
    tmp_path: Path,
) -> None:
    # A SIGINT to the master alone (kill -INT <pid>): the first process, which
    # got none, returns within the grace second. The master cannot tell it
    # from one that caught a Ctrl-C (a worker's handler that noted it broke
    # asyncio's, which looks for Python's own): run returns its value, as the
    # README says. (SIGTERM always stops.)

    def once_the_master_has_it(proc: subprocess.Popen[str]) -> str:
        # The master has it once it says it stops the workers; then the
        # gate's byte, within the grace second.
        assert proc.stderr is not None
        line = proc.stderr.readline()
        assert "the master got SIGINT" in line, line
        return "x"

    _, out, err = _signal_when_ready(
        tmp_path,
        _RETURNS_AS_THE_MASTER_ALONE_GETS_A_SIGINT,
        lambda pid: os.kill(pid, signal.SIGINT),
        then=once_the_master_has_it,
    )
    assert out == "42\n", (out, err)
    assert "ended without a result" not in err, err  # it returned: not killed


_INTERRUPTED_CLEAN_UP = """
import signal, sys
import netmcore

class Recorder:
    # Its flush runs in the worker's own clean-up, once the process function
    # has ended by its KeyboardInterrupt: it tells what a Ctrl-C then does.
    def __init__(self, stream):
        self.stream = stream
    def write(self, text):
        return self.stream.write(text)
    def flush(self):
        ignored = signal.getsignal(signal.SIGINT) == signal.SIG_IGN
        self.stream.write(f"a Ctrl-C in the clean-up is ignored: {ignored}\\n")
        self.stream.flush()

@netmcore.process
def interrupted(_: int) -> int:
    sys.stdout = Recorder(sys.__stdout__)
    raise KeyboardInterrupt

@netmcore.process
def first(_: int) -> str:
    return str(interrupted.join_outcome(interrupted.start(0)))

print(netmcore.run(first_process=lambda: first.start(0),
                   extract_result=lambda c, pid: first.result(pid, timeout=0)))
"""


def test_a_second_ctrl_c_in_an_interrupted_workers_clean_up_does_not_cut_it_short(
    tmp_path: Path,
) -> None:
    """A launcher that passes a Ctrl-C on to the group (GNU timeout) sends a
    second one: raised between the steps of netmcore's clean-up, it ended the
    worker with the bootstrap's exit code 70, and its log said so, not SIGINT."""
    script = tmp_path / "script.py"
    script.write_text(_INTERRUPTED_CLEAN_UP)
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "a Ctrl-C in the clean-up is ignored: True",
        "killed by SIGINT",
    ], done.stdout
