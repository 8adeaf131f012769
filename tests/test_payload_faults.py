"""Faults on the large-payload path: an interrupted join or start, and a thread
switch at the wrong moment, lose no value and unlink no live object.

The processes run as in tests/test_core.py: a
scenario process type is the first process, does the starts and joins under
test, and returns what it saw. Synchronisation is by pipes (the ``gate``
fixture) and events, never by sleeps.
"""

from __future__ import annotations

import dataclasses
import os
import select
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

import pytest
from scenario import SYSCALLS, WAIT, run_scenario, wait_until, wait_until_main_thread_blocks

import netmcore
from netmcore import _payload

LARGE = 200_000  # over the 64 KiB that travel inline: values go through shm
SMALLER = LARGE - 100  # large, and fits in the object of a LARGE value


@netmcore.process
def rf_echo(data: bytes) -> bytes:
    return data


@netmcore.process
def rf_gated_large(arg: tuple[int, int]) -> bytes:
    """Block until the gate opens, then return a large result."""
    gate_r, size = arg
    os.read(gate_r, 1)
    return b"r" * size


class _Interrupted(Exception):
    pass


def _raise_interrupted(_signum: int, _frame: FrameType | None) -> None:
    raise _Interrupted


@netmcore.process
def rf_interrupted_join(gate: tuple[int, int]) -> list[str]:
    """Join a process, interrupted by a signal handler's exception (a timeout);
    then let the process finish and join it again."""
    gate_r, gate_w = gate
    pid = rf_gated_large.start((gate_r, LARGE))
    seen = []
    signal.signal(signal.SIGALRM, _raise_interrupted)
    signal.setitimer(signal.ITIMER_REAL, 0.1)
    try:
        rf_gated_large.join(pid)
        seen.append("joined before the gate opened")
    except _Interrupted:
        seen.append("interrupted")
    os.write(gate_w, b"g")
    try:
        result = rf_gated_large.join(pid)
        seen.append("none" if result is None else f"{len(result)} bytes")
    except Exception as exc:
        seen.append(f"{type(exc).__name__}: {exc}")
    return seen


@netmcore.process
def rf_join_timed_out(gate: tuple[int, int]) -> list[str]:
    """As rf_interrupted_join, with the natural exception for a timeout: a
    TimeoutError is an OSError, and must not pass for the master's end."""
    gate_r, gate_w = gate
    pid = rf_gated_large.start((gate_r, LARGE))

    def timed_out(_signum: int, _frame: FrameType | None) -> None:
        raise TimeoutError("the join took too long")

    signal.signal(signal.SIGALRM, timed_out)
    signal.setitimer(signal.ITIMER_REAL, 0.1)
    seen = []
    try:
        rf_gated_large.join(pid)
        seen.append("joined before the gate opened")
    except Exception as exc:
        seen.append(type(exc).__name__)
    os.write(gate_w, b"g")
    result = rf_gated_large.join(pid)
    seen.append("none" if result is None else f"{len(result)} bytes")
    return seen


def test_a_join_timed_out_by_a_handler_is_a_timeout_and_loses_nothing(
    gate: tuple[int, int],
) -> None:
    # It was MasterGone ("the netmcore master is gone"), not withdrawn, and the
    # next join raised UnknownProcess: the link took any OSError for the socket's.
    assert run_scenario(rf_join_timed_out, gate) == ["TimeoutError", f"{LARGE} bytes"]


def test_an_interrupted_join_leaves_the_result_for_the_next_join(gate: tuple[int, int]) -> None:
    # An interrupted join is withdrawn (JoinCancel), and an outcome that was
    # already on its way is kept for the next join in the process: the result
    # is not lost (it went to the dropped request, before), and the next join
    # does not raise UnknownProcess ("joined by another caller first").
    assert run_scenario(rf_interrupted_join, gate) == ["interrupted", f"{LARGE} bytes"]


class _PausingLock:
    """Stands in for _payload's lock in one worker: when the thread named
    "joiner" leaves it in _payload.view, that thread says so and waits to be
    let go, as a thread switch at that point would."""

    def __init__(self, inner: Any, paused: threading.Event, go: threading.Event) -> None:
        self.inner, self.paused, self.go = inner, paused, go

    def __enter__(self) -> Any:
        return self.inner.__enter__()

    def __exit__(self, *exc: object) -> Any:
        released = self.inner.__exit__(*exc)
        caller = sys._getframe(1).f_code.co_name
        if threading.current_thread().name == "joiner" and caller == "view":
            self.paused.set()
            self.go.wait(WAIT)
        return released


@netmcore.process
def rf_view_races_reuse(_: int) -> list[str]:
    """One thread joins a large result; as it maps it, another thread starts a
    process with a large argument (threads may share a worker's link)."""
    first = os.urandom(LARGE)
    pid = rf_echo.start(first)
    paused, go = threading.Event(), threading.Event()
    _payload._lock = _PausingLock(_payload._lock, paused, go)  # type: ignore[assignment]
    seen: list[str] = []

    def joiner() -> None:
        try:
            seen.append("intact" if rf_echo.join(pid) == first else "wrong result")
        except Exception as exc:
            seen.append(f"{type(exc).__name__}: {exc}")

    thread = threading.Thread(target=joiner, name="joiner")
    thread.start()
    try:
        if not paused.wait(WAIT):
            return ["the joiner never mapped its result"]
        second = os.urandom(LARGE // 2)
        other = rf_echo.start(second)
    finally:
        go.set()
        thread.join()
    seen.append("intact" if rf_echo.join(other) == second else "wrong result")
    return seen


def test_a_result_being_mapped_is_not_reused_by_another_thread() -> None:
    # _payload.view makes its memoryview under the lock that pack() takes to
    # pick an object for reuse: in between, pack() in another thread would
    # find the mapping viewed by nobody and write its own value into it (the
    # joiner got "ValueError: mmap closed or invalid", its result lost).
    assert run_scenario(rf_view_races_reuse, 0) == ["intact", "intact"]


class _PausingEntry:
    """Stands in for _payload's lock in one worker: when the thread named
    "packer" comes to take it in _payload._reusable, that thread says so
    and waits to be let go before it takes it, as a thread switch at that
    point would."""

    def __init__(self, inner: Any, paused: threading.Event, go: threading.Event) -> None:
        self.inner, self.paused, self.go = inner, paused, go

    def __enter__(self) -> Any:
        caller = sys._getframe(1).f_code.co_name
        if threading.current_thread().name == "packer" and caller == "_reusable":
            self.paused.set()
            self.go.wait(WAIT)
        return self.inner.__enter__()

    def __exit__(self, *exc: object) -> Any:
        return self.inner.__exit__(*exc)


# Decodes of Cut that raise _Interrupted (as a signal handler's exception
# would, once the result is viewed): one per entry, in the process that
# puts one in.
_CUTS: list[bool] = []


@dataclasses.dataclass
class Cut:
    data: bytes

    def __post_init__(self) -> None:
        if _CUTS:
            _CUTS.pop()
            raise _Interrupted


@netmcore.process
def rf_cut(_: int) -> Cut:
    return Cut(b"c" * LARGE)


@netmcore.process
def rf_kept_result_races_reuse(_: int) -> list[str]:
    """One thread starts a process with a large argument, and pauses as its
    pack comes to look for an object to reuse; meanwhile this one joins a
    large result, cut short once it has viewed it (the outcome is kept for
    the next join, its object listed). Then the start goes on, and the
    result is joined again."""
    pid = rf_cut.start(0)
    paused, go = threading.Event(), threading.Event()
    _payload._lock = _PausingEntry(_payload._lock, paused, go)  # type: ignore[assignment]
    seen: list[str] = []

    def packer() -> None:
        data = b"p" * SMALLER  # large, and fits in the result's object
        try:
            seen.append("intact" if rf_echo.result(rf_echo.start(data)) == data else "wrong echo")
        except Exception as exc:
            seen.append(f"{type(exc).__name__}: {exc}")

    thread = threading.Thread(target=packer, name="packer")
    thread.start()
    try:
        if not paused.wait(WAIT):
            return ["the packer never looked for an object"]
        _CUTS.append(True)
        try:
            rf_cut.join(pid)
            seen.append("not cut short")
        except _Interrupted:
            pass
    finally:
        go.set()
        thread.join()
    try:
        seen.append("intact" if rf_cut.join(pid) == Cut(b"c" * LARGE) else "wrong result")
    except Exception as exc:
        seen.append(f"{type(exc).__name__}: {exc}")
    return seen


def test_a_result_kept_for_a_join_is_not_reused_by_another_thread() -> None:
    # pack read the names of the results kept for joins (see
    # _payload.kept_elsewhere) before it took the lock: a join in another
    # thread, cut short meanwhile once it had viewed its result, kept it
    # after that read, and pack took its object for its own value, as
    # nothing viewed it any more. The join, made again, read that value.
    assert run_scenario(rf_kept_result_races_reuse, 0) == ["intact", "intact"]


@netmcore.process
def rf_reader(arg: tuple[int, bytes]) -> int:
    """Say (one byte on the pipe) that it read its large argument."""
    said_w, data = arg
    os.write(said_w, b"r")
    return len(data)


@netmcore.process
def rf_interrupted_start(said_w: int) -> list[int]:
    """A start whose wait for the master's reply is interrupted by a signal
    handler's exception, then a plain start; return both process ids."""
    from netmcore import _wire

    real_read_one = _wire.Link._read_one
    signal.signal(signal.SIGALRM, _raise_interrupted)

    def interrupted_read_one(link: _wire.Link) -> None:
        _wire.Link._read_one = real_read_one  # type: ignore[method-assign]
        signal.raise_signal(signal.SIGALRM)  # the request is sent: its wait ends here
        real_read_one(link)

    _wire.Link._read_one = interrupted_read_one  # type: ignore[method-assign,assignment]
    try:
        rf_reader.start((said_w, b"a" * LARGE))
        return [-1]  # not interrupted
    except _Interrupted:
        pass
    pid = rf_reader.start((said_w, b"b" * LARGE))
    assert rf_reader.join(pid) == LARGE
    return [pid.n - netmcore.self_process_id().n]


def test_an_interrupted_start_does_not_unlink_the_argument_of_the_process_it_started(
    pipes: Any,
) -> None:
    # Once the start is sent, the argument belongs to the master and the
    # process: an exception that leaves the wait for Started must not unlink
    # it (the process failed with "No shared memory exists"). The start went
    # ahead (the next start's id skips one), and its process reads its argument.
    said_r, said_w = pipes()
    gap = netmcore.run(
        first_process=lambda: rf_interrupted_start.start(said_w),
        extract_result=lambda _ctrl, pid: rf_interrupted_start.join_nowait(pid),
    )
    assert gap is not None and gap != [-1]
    os.set_blocking(said_r, False)
    said = os.read(said_r, 16)
    assert gap == [2], "the interrupted start did not start a process"
    assert said == b"rr", said


@netmcore.process
def rf_interrupted_join_nowait(_: int) -> list[str]:
    """join_nowait until a reply carries the outcome; an exception comes right
    after that reply is read (as a signal handler's may); then join_nowait again."""
    from netmcore import _wire

    real_recv, real_take_off = _wire.Link.recv, _wire.Link._take_off
    armed: list[bool] = []

    def noting_recv(link: _wire.Link, flags: int = 0) -> Any:
        reply = real_recv(link, flags)
        if isinstance(reply, _wire.Joined) and reply.outcome is not None and not armed:
            armed.append(True)
        return reply

    def interrupted_take_off(link: _wire.Link) -> None:
        if armed == [True]:
            armed.append(False)  # once
            raise _Interrupted
        real_take_off(link)

    _wire.Link.recv = noting_recv  # type: ignore[method-assign,assignment]
    _wire.Link._take_off = interrupted_take_off  # type: ignore[method-assign]
    pid = rf_echo.start(b"n" * LARGE)
    seen = []
    try:
        while True:
            try:
                if rf_echo.join_nowait(pid) is not None:
                    seen.append("not interrupted")
                    break
            except _Interrupted:
                seen.append("interrupted")
                break
    finally:
        _wire.Link.recv, _wire.Link._take_off = real_recv, real_take_off  # type: ignore[method-assign]
    result = rf_echo.join_nowait(pid)
    seen.append("none" if result is None else f"{len(result)} bytes")
    return seen


def test_an_interrupted_join_nowait_leaves_the_result_for_the_next_join() -> None:
    # As for join: the master handed the outcome over at once, so the reply
    # read before the exception is kept (it was lost, and the next join_nowait
    # raised UnknownProcess).
    assert run_scenario(rf_interrupted_join_nowait, 0) == ["interrupted", f"{LARGE} bytes"]


def _payload_objects() -> list[str]:
    """The run's large-value objects in /dev/shm (named under its prefix)."""
    from netmcore import _context

    prefix = _context.current.shm_prefix.lstrip("/")
    return sorted(name for name in os.listdir("/dev/shm") if name.startswith(prefix))


@netmcore.process
def rf_join_large_then_die(size: int) -> int:
    """Join two large results (kept, as every process keeps its last ones for
    reuse), then die holding them."""
    for _ in range(2):
        assert rf_echo.join(rf_echo.start(b"j" * size)) is not None
    os.kill(os.getpid(), signal.SIGKILL)
    return 0


@netmcore.process
def rf_crashes_with_kept_results(_: int) -> list[str]:
    """Objects left once each of three killed processes has ended."""
    left = []
    for _ in range(3):
        outcome = rf_join_large_then_die.join_outcome(rf_join_large_then_die.start(LARGE))
        assert outcome == netmcore.Crashed(None, signal.SIGKILL), outcome
        left += _payload_objects()
    return left


def test_the_large_results_a_crashed_process_kept_go_with_it() -> None:
    # A process keeps the objects of the large results it joined, for its
    # next large values, and unlinks them when it ends. One that crashed left
    # them in /dev/shm until the end of run: in a user's review, 200 MB after
    # ten crashes (a long run fills /dev/shm). The master unlinks them when it
    # hears of the crash, before the joiner does.
    assert run_scenario(rf_crashes_with_kept_results, 0) == []


@netmcore.process
def rf_blocked_reader(arg: tuple[int, bytes]) -> int:
    gate_r, data = arg
    os.read(gate_r, 1)
    return len(data)


@netmcore.process
def rf_passes_a_result_on(gate_r: int) -> tuple[int, int]:
    """Join a large result, then start a reader whose large argument goes out
    in that result's object (free once the result is decoded and dropped);
    return the reader's id and this process's os pid."""
    result = rf_echo.join(rf_echo.start(b"r" * LARGE))
    assert result is not None
    del result
    pid = rf_blocked_reader.start((gate_r, b"p" * SMALLER))
    return pid.n, os.getpid()


@netmcore.process
def rf_object_outlives_the_process_that_passed_it_on(gate: tuple[int, int]) -> list[object]:
    gate_r, gate_w = gate
    passed = rf_passes_a_result_on.join(rf_passes_a_result_on.start(gate_r))
    assert passed is not None
    reader_n, os_pid = passed
    try:  # wait for the passer's end, which the master hears of at once
        pidfd = os.pidfd_open(os_pid)
    except ProcessLookupError:
        pass  # reaped already
    else:
        select.select([pidfd], [], [], WAIT)
        os.close(pidfd)
    rf_echo.join(rf_echo.start(b"s"))  # a round trip: the master has handled that end
    left = _payload_objects()
    os.write(gate_w, b"g")
    reader = netmcore.ProcessId[int](reader_n)
    return [left != [], rf_blocked_reader.join(reader)]


def test_a_result_passed_on_in_its_object_outlives_the_process_that_joined_it(
    gate: tuple[int, int],
) -> None:
    # A process that joined a large result writes its next large value (here
    # a start's argument) into that result's object. The master unlinks the
    # objects of the results a process joined when it ends (for a crash, see
    # above), but not one the process passed on: the reader may not have
    # mapped it yet (a busy machine), and would fail with "No shared memory
    # exists".
    outcome = run_scenario(rf_object_outlives_the_process_that_passed_it_on, gate)
    assert outcome == [True, SMALLER]


def _stopped(os_pid: int) -> bool:
    with open(f"/proc/{os_pid}/stat") as f:  # the state, after the name in parentheses
        return f.read().rpartition(")")[2].split()[0] == "T"


@netmcore.process
def rf_joins_then_dies(arg: tuple[int, int, int]) -> None:
    """Stop the master, send it a join of process ``n``, and die as the join
    waits: the master reads the request once this process has ended."""
    n, told_w, go_r = arg
    os.write(told_w, os.getpid().to_bytes(8, "little"))
    os.read(go_r, 1)
    master = os.getppid()
    os.kill(master, signal.SIGSTOP)
    wait_until(lambda: _stopped(master), "the master to stop")
    assert SYSCALLS is not None

    def die_once_the_join_waits() -> None:
        wait_until_main_thread_blocks(lambda call: call[0] == SYSCALLS["recvfrom"])
        os._exit(3)

    threading.Thread(target=die_once_the_join_waits, daemon=True).start()
    rf_echo.join(netmcore.ProcessId[bytes](n))


@netmcore.process
def rf_result_after_a_dead_joiner(arg: tuple[int, int, int, int]) -> list[object]:
    told_r, told_w, go_r, go_w = arg
    pid = rf_echo.start(b"r" * LARGE)
    wait_until(lambda: not netmcore.kill(pid, 0), "the large process to finish")
    joiner = rf_joins_then_dies.start((pid.n, told_w, go_r))
    pidfd = os.pidfd_open(int.from_bytes(os.read(told_r, 8), "little"))
    try:
        os.write(go_w, b"g")
        ended, _, _ = select.select([pidfd], [], [], WAIT)
    finally:
        os.close(pidfd)
        os.kill(os.getppid(), signal.SIGCONT)
    # Else the master reads the join while its joiner lives, and answers it:
    # the result is that join's, and the one below fails for another reason.
    assert ended, f"the joiner did not die within {WAIT} s of the master's stop"
    result = rf_echo.join(pid)
    return [str(rf_joins_then_dies.join_outcome(joiner)), None if result is None else len(result)]


@pytest.mark.skipif(SYSCALLS is None, reason="system call numbers known for x86_64 and aarch64")
def test_a_join_whose_joiner_died_before_the_master_read_it_leaves_the_result(
    pipes: Callable[[], tuple[int, int]],
) -> None:
    # The master used the outcome up as it answered the join, before the send,
    # which failed: the joiner had ended. A live joiner then got
    # UnknownProcess, and the large result's object stayed in /dev/shm until
    # the end of the run. (The master, stopped, reads the request only once
    # its joiner has ended.)
    told, go = pipes(), pipes()
    outcome = run_scenario(rf_result_after_a_dead_joiner, (*told, *go))
    assert outcome == [str(netmcore.Crashed(3, None)), LARGE]
