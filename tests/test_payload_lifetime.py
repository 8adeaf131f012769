"""How long the shm objects of large values live, and who holds their bytes.

No object of a run is left in /dev/shm once nothing can read it, even when a
process crashes: the checks look at /dev/shm in the middle of the run, from
its first process, not at its end (whose sweep takes what is left). The
master keeps no copy of a value, and an object is not reused for a value far
smaller than it.

As in tests/test_payload_faults.py, a scenario process type is the first
process, and synchronisation is by pipes and events, never by sleeps.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import socket
import sys
import threading
import tracemalloc
from collections.abc import Callable
from types import FrameType
from typing import Any

import pytest
from scenario import (
    SYSCALLS,
    WAIT,
    main_thread_syscall,
    own_shm_entries,
    run_scenario,
    wait_until,
    wait_until_main_thread_blocks,
)

import netmcore
from netmcore import _context, _payload

LARGE = 200_000  # over the 64 KiB that travel inline: values go through shm
SMALL = 60_000  # under them: inline, in the messages


def _stopped(os_pid: int) -> bool:
    with open(f"/proc/{os_pid}/stat") as f:  # the state, after the name in parentheses
        return f.read().rpartition(")")[2].split()[0] == "T"


@netmcore.process
def pl_large(size: int) -> bytes:
    return b"l" * size


@netmcore.process
def pl_echo(data: bytes) -> bytes:
    return data


@netmcore.process
def pl_gated_large(gate_r: int) -> bytes:
    os.read(gate_r, 1)
    return b"g" * LARGE


# --- a joiner that crashes holding objects ------------------------------------


@netmcore.process
def pl_joins_four_and_stops(arg: tuple[int, int]) -> int:
    """Join three large results (this process keeps their objects), then a
    fourth, and stop (SIGSTOP) as that join waits: its result is handed
    over, and not read. Say this process's os pid and the fourth's id."""
    gate_r, said_w = arg
    for _ in range(3):
        pl_large.result(pl_large.start(LARGE))
    pid = pl_gated_large.start(gate_r)
    assert SYSCALLS is not None

    def stop_once_the_join_waits() -> None:
        wait_until_main_thread_blocks(lambda call: call[0] == SYSCALLS["recvfrom"])
        os.write(said_w, os.getpid().to_bytes(8, "little") + pid.n.to_bytes(8, "little"))
        os.kill(os.getpid(), signal.SIGSTOP)

    threading.Thread(target=stop_once_the_join_waits, daemon=True).start()
    return len(pl_gated_large.result(pid))


@netmcore.process
def pl_kill_a_joiner_with_a_result_unread(
    gates: tuple[tuple[int, int], tuple[int, int]],
) -> list[object]:
    (gate_r, gate_w), (said_r, said_w) = gates
    joiner = pl_joins_four_and_stops.start((gate_r, said_w))
    said = os.read(said_r, 16)
    os_pid, last = int.from_bytes(said[:8], "little"), int.from_bytes(said[8:], "little")
    wait_until(lambda: _stopped(os_pid), "the joiner to stop")
    os.write(gate_w, b"g")

    # The joiner had sent its join before it said so: the master has read it
    # by the time it answers a request made here since. So the fourth
    # result, once in, has been handed over to the joiner.
    def handed_over() -> bool:
        try:
            return not netmcore.kill(netmcore.ProcessId[bytes](last), 0)
        except netmcore.UnknownProcess:
            return True  # joined

    wait_until(handed_over, "the fourth result to be handed over")
    netmcore.kill(joiner)
    outcome = pl_joins_four_and_stops.join_outcome(joiner)
    return [str(outcome), sorted(own_shm_entries())]


@pytest.mark.skipif(SYSCALLS is None, reason="system call numbers known for x86_64 and aarch64")
def test_a_joiner_killed_with_a_result_unread_leaves_none_of_its_objects(
    pipes: Callable[[], tuple[int, int]],
) -> None:
    # A process keeps three objects at rest (the last it read, and the two
    # before). The master kept the names of the last three results it handed
    # a process, to unlink them if it crashed: a fourth, handed over and not
    # yet read, pushed out the oldest, which the process still held. It stayed
    # in /dev/shm until the end of the run.
    outcome = run_scenario(pl_kill_a_joiner_with_a_result_unread, (pipes(), pipes()))
    assert outcome == [str(netmcore.Crashed(None, signal.SIGKILL)), []]


# The decodes of Held values wait here, in the process that puts a barrier
# in (see pl_threads_hold_four): nowhere else.
_DECODES: list[threading.Barrier] = []


@dataclasses.dataclass
class Held:
    data: bytes

    def __post_init__(self) -> None:
        for barrier in _DECODES:
            barrier.wait(WAIT)


@netmcore.process
def pl_held(size: int) -> Held:
    return Held(b"h" * size)


@netmcore.process
def pl_threads_hold_four(said_w: int) -> None:
    """Join large results (this process keeps the last three), then two
    more in two threads at once, whose decodes wait for each other: each
    maps its object while the other's is being read, so this process holds
    four. Say how many, and crash."""
    # 14: the master sweeps out the names it handed over that are gone as it
    # hands over the 16th (_master.KEPT_SWEEP_MIN), the last of the two below.
    for _ in range(14):
        pl_held.result(pl_held.start(LARGE))
    pids = [pl_held.start(LARGE) for _ in range(2)]
    _DECODES.append(threading.Barrier(len(pids)))
    threads = [threading.Thread(target=pl_held.result, args=(pid,)) for pid in pids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    os.write(said_w, bytes([len(_payload._received)]))
    os.kill(os.getpid(), signal.SIGKILL)  # as a crash would


@netmcore.process
def pl_crash_of_a_joiner_with_threads(said: tuple[int, int]) -> list[object]:
    said_r, said_w = said
    outcome = pl_threads_hold_four.join_outcome(pl_threads_hold_four.start(said_w))
    return [os.read(said_r, 1)[0], str(outcome), sorted(own_shm_entries())]


def test_a_joiner_whose_threads_read_results_at_once_leaves_none_when_it_crashes(
    pipes: Callable[[], tuple[int, int]],
) -> None:
    # Threads that join at once each hold the object they read: a process
    # holds more than its three then, and the master, which kept only the
    # last three names it handed over, left the others in /dev/shm.
    outcome = run_scenario(pl_crash_of_a_joiner_with_threads, pipes())
    assert outcome == [4, str(netmcore.Crashed(None, signal.SIGKILL)), []]


# --- a process that dies with its result, or an argument, unsent ---------------


@netmcore.process
def pl_returns_then_waits(arg: tuple[int, int]) -> bytes:
    """Return a large result, leaving a thread that runs on (until the gate
    opens, which it never does): the process waits for it before its result
    goes out. Say so once it waits."""
    gate_r, waits_w = arg
    # Run by threading._shutdown as the process waits for its threads.
    threading._register_atexit(os.write, waits_w, b"w")  # type: ignore[attr-defined]
    threading.Thread(target=os.read, args=(gate_r, 1)).start()
    return b"r" * LARGE


@netmcore.process
def pl_kill_as_it_waits_for_its_threads(arg: tuple[int, int, tuple[int, int]]) -> list[object]:
    signum, gate_r, (waits_r, waits_w) = arg
    pid = pl_returns_then_waits.start((gate_r, waits_w))
    os.read(waits_r, 1)
    delivered = netmcore.kill(pid, signum)
    outcome = pl_returns_then_waits.join_outcome(pid)
    return [delivered, str(outcome), sorted(own_shm_entries())]


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGINT], ids=["SIGKILL", "SIGINT"])
def test_a_process_killed_as_it_waits_for_its_threads_leaves_no_result_object(
    signum: int, gate: tuple[int, int], pipes: Callable[[], tuple[int, int]]
) -> None:
    # A large result was written into shm as the function returned, and the
    # process then waited for its threads (for as long as they run): killed
    # then, it left the object in /dev/shm until the end of the run. It is
    # written once they have ended, right before it is sent.
    outcome = run_scenario(pl_kill_as_it_waits_for_its_threads, (signum, gate[0], pipes()))
    assert outcome == [True, str(netmcore.Crashed(None, signum)), []]


_KEPT: list[object] = []


@netmcore.process
def pl_reports_an_ignored_error_as_it_waits(_: int) -> int:
    """An error Python only reports (its signal wakeup fd is full) as the
    process waits for its threads: the result goes out all the same. (A
    hook that took every report with no object for the wait's interrupt
    made the process die with code 70.)"""
    full, other = socket.socketpair()
    full.setblocking(False)
    with contextlib.suppress(BlockingIOError):
        while True:
            full.send(b"x" * 4096)
    signal.set_wakeup_fd(full.fileno())
    signal.signal(signal.SIGUSR1, lambda *_: None)
    main = threading.get_ident()
    futex = SYSCALLS["futex"] if SYSCALLS else -1

    def signal_once_it_waits() -> None:
        # In the wait for this very thread (threading._shutdown has begun).
        wait_until(
            lambda: (
                threading._SHUTTING_DOWN  # type: ignore[attr-defined]
                and (main_thread_syscall() or (-1,))[0] == futex
            ),
            "the process to wait for its threads",
        )
        signal.pthread_kill(main, signal.SIGUSR1)

    threading.Thread(target=signal_once_it_waits).start()
    _KEPT.append((full, other))
    return 42


@netmcore.process
def pl_outcome_of_a_reporting_waiter(_: int) -> str:
    waiter = pl_reports_an_ignored_error_as_it_waits
    return str(waiter.join_outcome(waiter.start(0)))


@pytest.mark.skipif(SYSCALLS is None, reason="the system call numbers of this machine are unknown")
def test_an_error_reported_as_a_process_waits_for_its_threads_leaves_its_result() -> None:
    outcome = run_scenario(pl_outcome_of_a_reporting_waiter, 0)
    assert outcome == str(netmcore.Success(42)), outcome


def _die_as_it_sends(frame: FrameType, event: str, _arg: Any) -> None:
    if event == "call" and frame.f_code.co_name == "_transmit":
        os.kill(os.getpid(), signal.SIGKILL)  # a crash, once the value is in shm


@netmcore.process
def pl_dies_as_it_sends(what: str) -> bytes:
    """Die as a large value goes out: an argument of a start, or the result,
    once written into shm, before the master has its name."""
    sys.setprofile(_die_as_it_sends)  # (a profile function is this thread's)
    if what == "argument":
        pl_echo.start(b"a" * LARGE)
    return b"r" * LARGE


@netmcore.process
def pl_crash_as_a_value_goes_out(what: str) -> list[object]:
    outcome = pl_dies_as_it_sends.join_outcome(pl_dies_as_it_sends.start(what))
    return [str(outcome), sorted(own_shm_entries())]


@pytest.mark.parametrize("what", ["argument", "result"])
def test_a_process_killed_as_it_sends_a_large_value_leaves_no_object(what: str) -> None:
    # The object was made, and its name never reached the master: nothing
    # unlinked it before the end of the run. The master finds the objects a
    # crashed process made and never sent on by their names.
    outcome = run_scenario(pl_crash_as_a_value_goes_out, what)
    assert outcome == [str(netmcore.Crashed(None, signal.SIGKILL)), []]


def _signal_as_the_result_is_packed(frame: FrameType, event: str, _arg: Any) -> None:
    if event == "return" and frame.f_code.co_name == "of" and "_wire" in frame.f_code.co_filename:
        sys.setprofile(None)
        os.kill(os.getpid(), signal.SIGALRM)  # its handler raises at the next instruction


@netmcore.process
def pl_handler_raises_as_it_packs(what: str) -> bytes:
    """A signal handler's exception (a sys.exit(0) in it, a TimeoutError)
    once the result is in its shm object, before it goes out."""

    def handler(_signum: int, _frame: FrameType | None) -> None:
        raise SystemExit(0) if what == "exit0" else TimeoutError("the handler's")

    signal.signal(signal.SIGALRM, handler)
    sys.setprofile(_signal_as_the_result_is_packed)
    return b"r" * LARGE


@netmcore.process
def pl_cut_short_as_a_result_is_packed(what: str) -> list[object]:
    outcome = pl_handler_raises_as_it_packs.join_outcome(pl_handler_raises_as_it_packs.start(what))
    return [type(outcome).__name__, sorted(own_shm_entries())]


@pytest.mark.parametrize("what", ["exit0", "timeout"])
def test_a_handlers_exception_as_a_result_is_packed_leaves_no_object(what: str) -> None:
    # The process ends as a process does (exit status 0), with no result
    # sent: the master sweeps what it made (it only did for a crash).
    kind, left = run_scenario(pl_cut_short_as_a_result_is_packed, what)
    assert kind in ("Crashed", "Raised")
    assert left == []


@netmcore.process
def pl_gated_echo(arg: tuple[int, bytes]) -> bytes:
    gate_r, data = arg
    os.read(gate_r, 1)
    return data  # it goes out in its argument's object, which must still be there


@netmcore.process
def pl_starts_then_dies(arg: tuple[int, int]) -> None:
    """Start a process with a large argument, say its id, and crash."""
    gate_r, said_w = arg
    pid = pl_gated_echo.start((gate_r, b"e" * LARGE))
    os.write(said_w, pid.n.to_bytes(8, "little"))
    os.kill(os.getpid(), signal.SIGKILL)


@netmcore.process
def pl_argument_of_a_crashed_starter(
    gates: tuple[tuple[int, int], tuple[int, int]],
) -> list[object]:
    (gate_r, gate_w), (said_r, said_w) = gates
    starter = pl_starts_then_dies.start((gate_r, said_w))
    n = int.from_bytes(os.read(said_r, 8), "little")
    crashed = pl_starts_then_dies.join_outcome(starter)  # the master has seen its end
    os.write(gate_w, b"g")
    echoed = pl_gated_echo.result(netmcore.ProcessId[bytes](n))
    return [str(crashed), echoed == b"e" * LARGE]


def test_the_objects_a_crashed_process_sent_on_stay_for_their_readers(
    pipes: Callable[[], tuple[int, int]],
) -> None:
    # Of the objects named for a crashed process, the master unlinks only
    # those it never sent on: the argument of a process it started is that
    # process's, which writes its result into it.
    outcome = run_scenario(pl_argument_of_a_crashed_starter, (pipes(), pipes()))
    assert outcome == [str(netmcore.Crashed(None, signal.SIGKILL)), True]


# --- no copy in the master ------------------------------------------------------


@netmcore.process
def pl_length(data: bytes) -> int:
    return len(data)


def test_a_start_in_the_masters_own_code_makes_no_copy_of_the_argument() -> None:
    # It joined the value's encoding into one inline value (a second copy,
    # as it was started), which the master then kept until the process was
    # joined: 300 MB held for a 300 MB argument the caller had dropped.
    size = 32 * 1024 * 1024
    traced: dict[str, int] = {}

    def first() -> netmcore.ProcessId[int]:
        before, _ = tracemalloc.get_traced_memory()
        data = b"m" * size
        made, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        pid = pl_length.start(data)
        traced["copied"] = tracemalloc.get_traced_memory()[1] - made
        del data
        traced["held"] = tracemalloc.get_traced_memory()[0] - before
        return pid

    tracemalloc.start()
    try:
        length = netmcore.run(
            first_process=first, extract_result=lambda _c, pid: pl_length.result(pid, timeout=0)
        )
    finally:
        tracemalloc.stop()
    assert length == size
    assert traced["copied"] < size // 2 and traced["held"] < size // 2, traced


@netmcore.process
def pl_starts_small_arguments(count: int) -> list[int]:
    """Start processes with inline arguments, and leave them unjoined once
    they have ended: the master keeps their records until the end of run."""
    pids = [pl_length.start(b"s" * SMALL) for _ in range(count)]
    for _ in pl_length.as_completed(pids):
        pass
    return [pid.n for pid in pids]


def test_the_master_keeps_no_inline_argument_once_its_process_has_it() -> None:
    # Each record held its process's argument until the process was joined:
    # 60 MB for a thousand 60 KB arguments of processes ended and not joined.
    count = 100
    traced: list[int] = []

    def init(_ctrl: netmcore.Controller) -> None:
        traced.append(tracemalloc.get_traced_memory()[0])

    def extract(_ctrl: netmcore.Controller, pid: netmcore.ProcessId[list[int]]) -> list[int]:
        traced.append(tracemalloc.get_traced_memory()[0])
        return pl_starts_small_arguments.result(pid, timeout=0)

    tracemalloc.start()
    try:
        pids = netmcore.run(
            first_process=lambda: pl_starts_small_arguments.start(count),
            extract_result=extract,
            init_ctrl=init,
        )
    finally:
        tracemalloc.stop()
    assert len(pids) == count
    assert traced[1] - traced[0] < count * SMALL // 2, traced


# --- reuse --------------------------------------------------------------------

HUGE = 8 * 1024 * 1024  # far larger than LARGE: over twice it, and over 1 MiB more


@netmcore.process
def pl_small_values_after_a_huge_one(_: int) -> list[int]:
    """Echo a huge value (this process keeps its object), then large ones
    far smaller; give the sizes of the run's objects."""
    assert pl_echo.result(pl_echo.start(b"H" * HUGE)) == b"H" * HUGE
    for k in range(3):
        data = bytes([k]) * LARGE
        assert pl_echo.result(pl_echo.start(data)) == data
    return sorted(os.stat(os.path.join("/dev/shm", e)).st_size for e in own_shm_entries())


def test_a_value_far_smaller_than_an_object_does_not_take_it() -> None:
    # The values went out in the huge object, which they took in turn: its
    # pages (8 MiB here, 200 MB in a user's review) stayed taken in /dev/shm
    # for values of 200 KB.
    sizes = run_scenario(pl_small_values_after_a_huge_one, 0)
    assert sizes and max(sizes) < 2 * LARGE, sizes


@netmcore.process
def pl_kept_for_reuse(size: int) -> list[object]:
    """Join five results of ``size`` bytes: how many objects this process
    keeps after each (the one it read last with them), and whether they are
    all it has in /dev/shm."""
    kept: list[object] = []
    for _ in range(5):
        pl_large.result(pl_large.start(size))
        kept.append(len(_payload._received))
    held = sorted("/" + e for e in own_shm_entries())
    return [*kept, held == sorted(r.name for r in _payload._received)]


@pytest.mark.parametrize(("size", "kept"), [(LARGE, 3), (3 * LARGE, 2), (6 * LARGE, 1)])
def test_a_process_keeps_large_objects_for_reuse_up_to_a_number_of_bytes(
    size: int, kept: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # It keeps the one it read last, and the two before it while they hold
    # at most RECYCLE_BYTES (5 x LARGE here, forked into every process): a
    # process that had read three values of 400 MB kept 1.2 GB taken in
    # /dev/shm until it ended.
    monkeypatch.setattr(_payload, "RECYCLE_BYTES", 5 * LARGE)
    assert run_scenario(pl_kept_for_reuse, size) == [1, min(2, kept), kept, kept, kept, True]


# --- a signal handler's exception as an object is let go ------------------------


class _Cut(Exception):
    """A signal handler's exception (a timeout's, say), raised where one may land."""


def _cut_once_in(function: str, after: bool) -> None:
    """Make the unlinks that ``function`` of _payload makes (itself, or
    through a helper) raise _Cut once, in this process: as the unlink
    starts, as a handler's exception would at the call, or once it is done,
    as one would as it returns."""
    from netmcore import _ipc

    real = _ipc.unlink

    def unlink(name: str) -> bool:
        if function not in (sys._getframe(1).f_code.co_name, sys._getframe(2).f_code.co_name):
            return real(name)
        _ipc.unlink = real
        if after:
            real(name)
        raise _Cut

    _ipc.unlink = unlink


def _untracked() -> list[str]:
    """The run's objects in /dev/shm that this process neither keeps for
    reuse nor keeps for a join: nothing would unlink them before it ends."""
    return sorted(
        e
        for e in own_shm_entries()
        if not _payload.is_received("/" + e) and "/" + e not in _payload.kept_elsewhere()
    )


@netmcore.process
def pl_rotation_cut_short(after: bool) -> list[object]:
    """Join large results: the fourth's view lets the first go (this process
    keeps the last three), and a handler's exception comes at its unlink.
    Join it again (its outcome was kept), then join one more."""
    for _ in range(3):
        pl_large.result(pl_large.start(LARGE))
    _cut_once_in("view", after)
    pid = pl_large.start(LARGE)
    try:
        pl_large.result(pid)
        cut = "not cut short"
    except _Cut:
        cut = "cut short"
    intact = pl_large.result(pid) == b"l" * LARGE
    untracked = _untracked()
    pl_large.result(pl_large.start(LARGE))
    held = sorted("/" + e for e in own_shm_entries())
    return [cut, intact, untracked, held == sorted(r.name for r in _payload._received)]


@pytest.mark.parametrize("after", [False, True], ids=["before_the_unlink", "after_it"])
def test_a_handlers_exception_as_a_result_object_is_let_go_leaves_none_behind(
    after: bool,
) -> None:
    # The view of a large result lets the oldest object this process keeps
    # go: it was forgotten, then unlinked. A signal handler's exception in
    # between (a stress run's 100 us timer: 2-4 a hundred joins) left it in
    # /dev/shm, with nothing to unlink it until the process ended. It is
    # unlinked, then forgotten: cut short, it is still listed, and the next
    # view finishes it.
    outcome = run_scenario(pl_rotation_cut_short, after)
    assert outcome == ["cut short", True, [], True]


@netmcore.process
def pl_huge_object_let_go_cut_short(after: bool) -> list[object]:
    """Echo a huge value (this process keeps its object), then start a
    process with a large value far smaller: the huge object goes, and a
    handler's exception comes at its unlink. Start it again; give the sizes
    of the run's objects."""
    assert pl_echo.result(pl_echo.start(b"H" * HUGE)) == b"H" * HUGE
    _cut_once_in("_reusable", after)
    data = b"s" * LARGE
    try:
        pl_echo.start(data)
        cut = "not cut short"
    except _Cut:
        cut = "cut short"
    untracked = _untracked()
    assert pl_echo.result(pl_echo.start(data)) == data
    sizes = sorted(os.stat(os.path.join("/dev/shm", e)).st_size for e in own_shm_entries())
    return [cut, untracked, max(sizes) < 2 * LARGE]


@pytest.mark.parametrize("after", [False, True], ids=["before_the_unlink", "after_it"])
def test_a_handlers_exception_as_a_huge_object_is_let_go_leaves_it_to_the_next_pack(
    after: bool,
) -> None:
    # The same in pack, which lets go of an object far larger than the value
    # (see test_a_value_far_smaller_than_an_object_does_not_take_it): the
    # huge object stayed in /dev/shm until the process ended.
    outcome = run_scenario(pl_huge_object_let_go_cut_short, after)
    assert outcome == ["cut short", [], True]


# --- a process that ends with its result, a daemon thread's object unsent ---------


def _unsent_by_a_daemon_thread(gate_r: int) -> str:
    """The name of a large value that a daemon thread of this process has
    packed and never sends (as a start does, before the send): it waits for
    the gate, which never opens, and the process ends without waiting for it."""
    made: list[str] = []
    packed = threading.Event()

    def pack_and_wait() -> None:
        ctx = _context.current
        payload = _payload.pack([b"u" * LARGE], ctx.shm_prefix, ctx.process_id)
        assert isinstance(payload, _payload.ShmRef)
        made.append(payload.name)
        packed.set()
        os.read(gate_r, 1)

    threading.Thread(target=pack_and_wait, daemon=True).start()
    assert packed.wait(WAIT)
    return made[0]


def _swept(name: str) -> bool:
    """Whether the object ``name`` goes: the master sweeps those of the
    processes that ended with their result together, every half second."""
    try:
        wait_until(lambda: not os.path.exists("/dev/shm" + name), f"the sweep of {name}")
    except AssertionError:
        return False
    return True


@netmcore.process
def pl_returns_as_a_daemon_thread_packs(arg: tuple[int, int]) -> bytes:
    """Return a large result, an object of a daemon thread's unsent (its
    name said first)."""
    gate_r, said_w = arg
    os.write(said_w, _unsent_by_a_daemon_thread(gate_r).encode())
    return b"r" * LARGE


@netmcore.process
def pl_clean_end_with_an_object_unsent(arg: tuple[int, tuple[int, int]]) -> list[object]:
    gate_r, (said_r, said_w) = arg
    pid = pl_returns_as_a_daemon_thread_packs.start((gate_r, said_w))
    name = os.read(said_r, 4096).decode()
    left = not _swept(name)
    # Its result, not joined until now, is no unsent object.
    return [left, pl_returns_as_a_daemon_thread_packs.result(pid) == b"r" * LARGE]


def test_a_daemon_threads_object_unsent_goes_with_a_process_that_ended_with_its_result(
    gate: tuple[int, int], pipes: Callable[[], tuple[int, int]]
) -> None:
    # A process ends once its function has returned and its non-daemon
    # threads have ended: a daemon thread in the middle of a start (its
    # argument packed into a new object, not yet sent) is ended with it. The
    # master swept the objects a process made and never sent only after a
    # crash or an end with no result sent: this one stayed until the end of
    # the run.
    outcome = run_scenario(pl_clean_end_with_an_object_unsent, (gate[0], pipes()))
    assert outcome == [False, True]


@netmcore.process
def pl_starts_then_returns(arg: tuple[int, int]) -> None:
    """Start a process with a large argument, and return, an object of a
    daemon thread's unsent: say the process's id, then that object's name."""
    gate_r, said_w = arg
    pid = pl_gated_echo.start((gate_r, b"e" * LARGE))
    unsent = _unsent_by_a_daemon_thread(gate_r)
    os.write(said_w, pid.n.to_bytes(8, "little") + unsent.encode())


@netmcore.process
def pl_argument_of_a_starter_that_returned(
    gates: tuple[tuple[int, int], tuple[int, int]],
) -> list[object]:
    (gate_r, gate_w), (said_r, said_w) = gates
    starter = pl_starts_then_returns.start((gate_r, said_w))
    said = os.read(said_r, 4096)
    n, unsent = int.from_bytes(said[:8], "little"), said[8:].decode()
    outcome = pl_starts_then_returns.join_outcome(starter)
    swept = _swept(unsent)  # the sweep of the starter's objects has been made
    os.write(gate_w, b"g")
    echoed = pl_gated_echo.result(netmcore.ProcessId[bytes](n))
    return [str(outcome), swept, echoed == b"e" * LARGE]


def test_the_objects_a_process_that_returned_sent_on_stay_for_their_readers(
    pipes: Callable[[], tuple[int, int]],
) -> None:
    # The master sweeps what a process made and never sent after any end
    # now: the argument of a process it started, not yet read, is that
    # process's, as after a crash.
    outcome = run_scenario(pl_argument_of_a_starter_that_returned, (pipes(), pipes()))
    assert outcome == [str(netmcore.Success(None)), True, True]
