"""netmcore.kill: signal a library process through the master's pidfd of it.

Scenarios run as the first process, as in ``test_resources``: a process type
defined at module level makes the calls under test inside a worker and
asserts there; a failed assertion comes back as a ``Raised`` outcome, and the
test fails with the worker's traceback. The master's own code
(``first_process``, ``extract_result``) is tested through ``run`` directly.

Synchronisation is deterministic, never a sleep: a ``stuck`` process writes a
byte on a pipe made in the test before ``run`` (every worker inherits it) once
it runs its function, then waits for ever, so that only a signal ends it.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import threading
from collections.abc import Callable
from typing import Any

import psutil
import pytest
from scenario import outcome_value, run_scenario, wait_until

import netmcore
from netmcore import _master

NEVER_STARTED = netmcore.ProcessId[int](10**9)
UNKNOWN = "which is unknown: it has been joined already, or it has ended with nobody to join"
# Beyond every id handed out: it can only never have been started.
NEVER = (
    f"cannot signal process {NEVER_STARTED.n}, which was never started: process ids are "
    "handed out in order, and the last one so far is "
)


@netmcore.process
def stuck(ready_w: int) -> int:
    """Say that it runs (a byte on the pipe), then wait for ever."""
    os.write(ready_w, b"r")
    threading.Event().wait()
    return 0


@netmcore.process
def square(k: int) -> int:
    return k * k


def _crashed(outcome: object) -> list[Any]:
    assert isinstance(outcome, netmcore.Crashed), outcome
    return [outcome.exitcode, outcome.signal]


# --- a running process ----------------------------------------------------------


@netmcore.process
def kill_stuck(job: tuple[int, int, int | None]) -> dict[str, Any]:
    ready_r, ready_w, signum = job
    pid = stuck.start(ready_w)
    try:
        assert os.read(ready_r, 1) == b"r"  # it runs its function
        running = netmcore.kill(pid, 0)
        delivered = netmcore.kill(pid) if signum is None else netmcore.kill(pid, signum)
    except BaseException:
        netmcore.kill(pid)  # left running, it would hold up the end of the run
        raise
    return {
        "pid": pid.n,
        "running": running,
        "delivered": delivered,
        "outcome": stuck.join_outcome(pid),  # this process's one join
    }


@pytest.mark.parametrize(
    ("signum", "name"),
    [
        (None, "SIGKILL"),  # the default
        (signal.SIGTERM, "SIGTERM"),
        (signal.SIGRTMIN + 1, "SIGRTMIN+1"),  # valid, though not in signal.Signals
    ],
)
def test_kill_ends_a_process_stuck_in_an_endless_wait(
    gate: tuple[int, int], caplog: pytest.LogCaptureFixture, signum: int | None, name: str
) -> None:
    caplog.set_level(logging.WARNING, logger="netmcore")
    result = run_scenario(kill_stuck, (*gate, signum))
    assert result["running"] is True  # signal 0: it runs, nothing is sent
    assert result["delivered"] is True
    expected = signal.SIGKILL if signum is None else signum
    # Crashed, naming the signal (its join gives None), and the master says why.
    assert result["outcome"] == {"exitcode": None, "signal": expected}
    cause = f"ended without a result: killed by signal {name}"
    logged = rf"process {result['pid']} \([^)]*stuck\) {re.escape(cause)}$"
    messages = [r.getMessage() for r in caplog.records if r.name == "netmcore"]
    assert any(re.search(logged, m) for m in messages), messages


@netmcore.process
def kill_self(_: int) -> int:
    netmcore.kill(netmcore.self_process_id())
    return 1  # never reached: the master signals the process that asks


@netmcore.process
def join_self_killed(_: int) -> list[Any]:
    return _crashed(kill_self.join_outcome(kill_self.start(0)))


def test_a_process_may_kill_itself() -> None:
    assert run_scenario(join_self_killed, 0) == [None, signal.SIGKILL]


# --- a process that has finished, or ended, or been joined ------------------------


@netmcore.process
def own_os_pid(_: int) -> int:
    return os.getpid()


@netmcore.process
def kill_finished(_: int) -> list[Any]:
    pid = own_os_pid.start(0)
    # Signal 0 asks whether it still runs its function; it is not a join.
    wait_until(lambda: not netmcore.kill(pid, 0), "the process to finish")
    after = [netmcore.kill(pid), netmcore.kill(pid, signal.SIGTERM)]
    outcome = own_os_pid.join_outcome(pid)  # kept, as it was
    assert isinstance(outcome, netmcore.Success), outcome
    # It was alive all along, waiting for the master to let it exit.
    assert psutil.Process(outcome.value).status() != psutil.STATUS_ZOMBIE
    with pytest.raises(netmcore.UnknownProcess, match=f"cannot signal process {pid.n}, {UNKNOWN}"):
        netmcore.kill(pid)  # joined: forgotten
    with pytest.raises(netmcore.UnknownProcess, match=NEVER):
        netmcore.kill(NEVER_STARTED)
    return after


def test_kill_of_a_process_that_finished_and_waits_to_exit_is_false_and_keeps_its_outcome(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The master lets a finished process exit once it is quiet (IDLE_SECONDS
    # without an event): never, now, before the shutdown. So the process is
    # still there, finished, when it is killed.
    monkeypatch.setattr(_master, "IDLE_SECONDS", 3600.0)
    assert run_scenario(kill_finished, 0) == [False, False]


@netmcore.process
def start_unjoined(k: int) -> int:
    return square.start(k).n  # never joined here: extract_result finds it


def test_kill_in_extract_result() -> None:
    def extract(_ctrl: netmcore.Controller, pid: netmcore.ProcessId[int]) -> list[Any]:
        inner = netmcore.ProcessId[int](outcome_value(start_unjoined.join_outcome_nowait(pid)))
        got: list[Any] = [netmcore.kill(inner), netmcore.kill(inner, 0)]  # ended: False
        got.append(square.join_nowait(inner))  # its outcome was kept
        for joined in (pid, inner):
            with pytest.raises(netmcore.UnknownProcess, match=UNKNOWN):
                netmcore.kill(joined)
        with pytest.raises(netmcore.UnknownProcess, match=NEVER):
            netmcore.kill(NEVER_STARTED)
        return got

    result = netmcore.run(first_process=lambda: start_unjoined.start(6), extract_result=extract)
    assert result == [False, False, 36]


def test_kill_in_first_process_also_of_an_ended_process_not_yet_reaped(
    gate: tuple[int, int],
) -> None:
    """In first_process the master's loop does not run, so a killed child
    stays a zombie until it does: it has ended, and a signal would reach
    nothing, so kill says False."""
    got: list[Any] = []
    ready_r, ready_w = gate

    def first() -> netmcore.ProcessId[int]:
        pid = stuck.start(ready_w)
        got.append(netmcore.kill(pid, 0))  # started: it runs
        assert os.read(ready_r, 1) == b"r"
        got.append(netmcore.kill(pid))
        wait_until(
            lambda: any(c.status() == psutil.STATUS_ZOMBIE for c in psutil.Process().children()),
            "the killed process to end",
        )
        got.extend([netmcore.kill(pid), netmcore.kill(pid, 0)])
        return pid

    outcome = netmcore.run(
        first_process=first, extract_result=lambda _c, pid: stuck.join_outcome_nowait(pid)
    )
    assert got == [True, True, False, False]
    assert _crashed(outcome) == [None, signal.SIGKILL]


# --- bad input, the wrong context -------------------------------------------------

# (id, call on a pid, error, message)
BAD_INPUT: list[tuple[str, Callable[[netmcore.ProcessId[int]], object], type[Exception], str]] = [
    (
        "pid-int",
        lambda pid: netmcore.kill(3),  # type: ignore[arg-type]
        TypeError,
        "pid must be a ProcessId, not int (3): pass the id that start() returned",
    ),
    (
        "signum-99",
        lambda pid: netmcore.kill(pid, 99),
        ValueError,
        "signum=99 is not a valid signal: it must be 1 to 64, except 32 and 33, or 0 to "
        "only ask whether the process runs; pass e.g. signal.SIGKILL, signal.SIGTERM or "
        "signal.SIGRTMIN + 1",
    ),
    ("negative", lambda pid: netmcore.kill(pid, -9), ValueError, "signum=-9 is not"),
    ("glibc-reserved", lambda pid: netmcore.kill(pid, 32), ValueError, "signum=32 is not"),
    ("huge", lambda pid: netmcore.kill(pid, 2**40), ValueError, f"signum={2**40} is not"),
    (
        "signum-bool",
        lambda pid: netmcore.kill(pid, True),
        TypeError,
        "signum must be an int, not bool (True): pass a signal number such as "
        "signal.SIGKILL or signal.SIGTERM",
    ),
    (
        "signum-str",
        lambda pid: netmcore.kill(pid, "SIGKILL"),  # type: ignore[arg-type]
        TypeError,
        "signum must be an int, not str ('SIGKILL')",
    ),
]


@pytest.mark.parametrize(
    ("call", "error", "message"), [pytest.param(*case[1:], id=case[0]) for case in BAD_INPUT]
)
def test_bad_input_is_refused_before_the_context_is_even_looked_at(
    call: Callable[[netmcore.ProcessId[int]], object], error: type[Exception], message: str
) -> None:
    # Outside run there is no master to send to: a ContextError would mean the
    # input was not checked first.
    with pytest.raises(error, match=re.escape(message)):
        call(netmcore.ProcessId[int](0))


@netmcore.process
def bad_kills(job: tuple[int, int]) -> list[Any]:
    ready_r, ready_w = job
    pid = stuck.start(ready_w)
    try:
        assert os.read(ready_r, 1) == b"r"
        for _, call, error, message in BAD_INPUT:
            with pytest.raises(error, match=re.escape(message)):
                call(pid)
        still = netmcore.kill(pid, 0)  # nothing reached it
    finally:
        netmcore.kill(pid)  # the end of it, and of the run, which waits for it
    return [still, *_crashed(stuck.join_outcome(pid))]


def test_bad_input_in_a_worker_sends_nothing(gate: tuple[int, int]) -> None:
    assert run_scenario(bad_kills, gate) == [True, None, signal.SIGKILL]


def test_kill_outside_run_is_a_context_error() -> None:
    with pytest.raises(
        netmcore.ContextError,
        match=r"netmcore\.kill\(\) was called outside netmcore\.run\(\)/startup\(\): call it "
        r"from first_process, extract_result or from inside a worker process",
    ):
        netmcore.kill(netmcore.ProcessId[int](0))


# The master's tables have no lock: its loop changes them while another thread
# of its process would. Each call there is refused, before it touches them.
THREAD_CALLS: dict[str, Callable[[netmcore.ProcessId[int]], object]] = {
    "netmcore.kill()": netmcore.kill,
    "start()": lambda pid: square.start(2),
    "join_nowait() (or join_outcome_nowait())": square.join_nowait,
    "create": lambda pid: netmcore.create_shm(8),
    "release": lambda pid: netmcore.release(netmcore.ResId(0)),
}


@pytest.mark.parametrize("what", sorted(THREAD_CALLS))
def test_calls_in_another_thread_of_the_master_are_context_errors(what: str) -> None:
    errors: list[BaseException] = []

    def extract(_ctrl: netmcore.Controller, pid: netmcore.ProcessId[int]) -> int | None:
        def call() -> None:
            try:
                THREAD_CALLS[what](pid)
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=call)
        thread.start()
        thread.join()
        return square.join_nowait(pid)

    result = netmcore.run(first_process=lambda: square.start(5), extract_result=extract)
    assert result == 25, "the refused call changed the run"
    assert len(errors) == 1
    assert isinstance(errors[0], netmcore.ContextError)
    assert f"{what} was called in another thread of the master's process" in str(errors[0])


# --- the pipeline kills its stuck workers through the master ----------------------


@netmcore.process
def stage_stuck_on_1(k: int) -> int:
    if k == 1:
        threading.Event().wait()  # only a kill ends it
    return k


def _refuse_os_kill(pid: int, signum: int) -> None:
    raise AssertionError(
        f"os.kill({pid}, {signum}) by the pipeline's driver: that OS pid may belong to "
        "another program by now"
    )


@netmcore.process
def drive_stuck_pipelines(_: int) -> list[Any]:
    os.kill = _refuse_os_kill  # in this process only: the driver's
    pipeline = netmcore.Pipeline(stage_stuck_on_1, workers=2)
    # Killed for going over item_timeout (retries=0: the item then fails) ...
    timed = pipeline.run(range(5), ordered=False, on_error="skip", retries=0, item_timeout=2.0)
    results = sorted(timed)
    failures = [(f.index, f.cause) for f in timed.failures]
    # ... and for not stopping within the grace of a shutdown.
    run = pipeline.run(range(20), ordered=False, queue_size=1)
    first = sorted(next(run) for _ in range(3))
    run.close()
    return [results, failures, first]


def test_the_pipeline_kills_stuck_workers_by_process_id_never_by_os_pid() -> None:
    """The driver is not its workers' parent: by the time it signals one by
    OS pid, the master may have reaped it and the OS given the pid to another
    program. So it asks the master, which signals through its pidfd."""
    results, failures, first = run_scenario(drive_stuck_pipelines, 0)
    assert results == [0, 2, 3, 4]
    assert failures == [[1, "it ran over item_timeout=2.0 s, and its worker was killed"]]
    assert first == [0, 2, 3]
