"""The core runtime: start/join, ids, the one-join rule, outcomes, shutdown, payloads.

Most tests run a *scenario*: a process type, defined at module level (process
types must exist before the master starts), that is run as the first process,
does the starts and joins under test, and returns what it saw. The test then
asserts on that value in the test process, which is the master during ``run``.

Deterministic synchronisation, never sleeps:

* A *gate* is an ``os.pipe()`` made in the test before ``run``. Every worker is
  forked from the master (the test process), so every worker inherits both
  ends: a gated process blocks reading one byte until a scenario writes it.
* A late worker that must act only after the first process has ended waits on
  a pidfd of the first process's OS pid.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import errno
import logging
import os
import re
import resource
import select
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, TypedDict

import msgspec
import psutil
import pytest
from scenario import joined, outcome_text, run_scenario, run_script

import netmcore
from netmcore import _context, _master, _registry, _worker
from netmcore._wire import Assign, Link, Rehearse, Started, recv_buffer

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SUBPROCESS_TIMEOUT = 30  # a guard against a hung child, not an assertion

# --------------------------------------------------------------------------
# Helpers used inside workers
# --------------------------------------------------------------------------


def _catch(fn: Callable[[], object]) -> list[str]:
    """Call ``fn``; return [qualified exception class, message], or ["none", repr(result)]."""
    try:
        result = fn()
    except Exception as exc:
        return [f"{type(exc).__module__}.{type(exc).__qualname__}", str(exc)]
    return ["none", repr(result)]


def _outcome_dict(outcome: object) -> dict[str, Any]:
    """An outcome (or None) as a plain dict, so that a scenario can return it."""
    if outcome is None:
        return {"kind": "None"}
    fields = {f.name: getattr(outcome, f.name) for f in dataclasses.fields(outcome)}  # type: ignore[arg-type]
    return {"kind": type(outcome).__name__, **fields}


def _wait_for_exit(os_pid: int) -> None:
    """Block until the OS process ``os_pid`` has ended (it is not our child)."""
    try:
        fd = os.pidfd_open(os_pid)
    except ProcessLookupError:
        return  # already ended and reaped
    try:
        select.select([fd], [], [])
    finally:
        os.close(fd)


# --------------------------------------------------------------------------
# Process types (module level: they must exist before the master starts)
# --------------------------------------------------------------------------


class Add(netmcore.ProcessDef[tuple[float, float], float]):
    def run(self, arg: tuple[float, float]) -> float:
        return arg[0] + arg[1]


@netmcore.process
def square(k: int) -> int:
    return k * k


@netmcore.process
def cube(k: int) -> int:
    return k * k * k


@netmcore.process
def gated(gate_r: int) -> str:
    """Block until one byte can be read from the gate, then return it."""
    return os.read(gate_r, 1).decode()


@netmcore.process
def leaves_a_thread(marker: str) -> str:
    """Return, leaving a non-daemon thread that writes ``marker`` once the
    main thread has stopped (which happens only at the process's end)."""

    def after_main() -> None:
        threading.main_thread().join()
        Path(marker).write_text("the function had returned")

    threading.Thread(target=after_main).start()
    return "returned"


# Consecutive definitions: their ResIds must be consecutive too.
@netmcore.process
def seq_a(k: int) -> int:
    return k


@netmcore.process
def seq_b(k: int) -> int:
    return k


_c = 0  # upstream's tutorial global


@netmcore.process
def proc_y(k: int) -> int:
    return k + 1 + _c


@netmcore.process
def proc_x(k: int) -> list[int]:
    global _c
    _c = 1
    y = proc_y.join(proc_y.start(k))
    return [-1 if y is None else y, _c]


@netmcore.process
def start_three(_: int) -> list[int]:
    return [netmcore.self_process_id().n] + [square.start(k).n for k in (1, 2, 3)]


@netmcore.process
def start_and_join_some(n: int) -> list[int]:
    pids = [square.start(k) for k in range(n)]
    for pid in pids:
        square.join(pid)
    return [netmcore.self_process_id().n] + [p.n for p in pids]


@netmcore.process
def fan_out(n: int) -> list[int | None]:
    pids = [square.start(k) for k in range(n)]
    return [square.join(pid) for pid in pids]


def _sockets() -> set[str]:
    """The sockets this process holds, by inode ("socket:[123]")."""
    held = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(FileNotFoundError):  # the listing's own, closed
            link = os.readlink(f"/proc/self/fd/{fd}")
            if link.startswith("socket:"):
                held.add(link)
    return held


@netmcore.process
def held_sockets(_: int) -> list[str]:
    return sorted(_sockets())


@netmcore.process
def sockets_of_many(n: int) -> list[list[str]]:
    # Started at once, so that most run in spares forked in one batch.
    pids = [held_sockets.start(k) for k in range(n)]
    return [joined(held_sockets, pid) for pid in pids]


@netmcore.process
def start_or_error(n: int) -> list[str]:
    out = []
    for k in range(n):
        try:
            out.append(str(square.join(square.start(k))))
        except netmcore.NetmcoreError as exc:
            out.append(str(exc))
    return out


@netmcore.process
def second_join_scenario(k: int) -> dict[str, Any]:
    pid = square.start(k)
    return {
        "first": square.join(pid),
        "second_join": _catch(lambda: square.join(pid)),
        "second_join_nowait": _catch(lambda: square.join_nowait(pid)),
        "second_join_outcome": _catch(lambda: square.join_outcome(pid)),
        "never_started": _catch(lambda: square.join(netmcore.ProcessId[int](10**9))),
    }


@netmcore.process
def wrong_join_point_scenario(k: int) -> dict[str, Any]:
    pid = square.start(k)
    return {
        "typed": _catch(lambda: cube.join(pid)),  # type: ignore[arg-type]
        "low_level": _catch(lambda: netmcore.join(cube.join_point, pid)),
        "right": square.join(pid),
    }


@netmcore.process
def nowait_scenario(gate: tuple[int, int]) -> dict[str, Any]:
    gate_r, gate_w = gate
    out: dict[str, Any] = {}
    try:
        pid = gated.start(gate_r)
        out["nowait"] = [gated.join_nowait(pid), gated.join_nowait(pid)]
        out["low_level_nowait"] = netmcore.join_nowait(gated.join_point, pid)
        out["outcome_nowait"] = _outcome_dict(gated.join_outcome_nowait(pid))
    finally:
        os.write(gate_w, b"g")  # whatever happened, let the gated process end
    out["join"] = gated.join(pid)
    return out


@netmcore.process
def outcome_nowait_scenario(gate: tuple[int, int]) -> int:
    """Check join_outcome_nowait while gated runs; hand its pid to extract_result."""
    gate_r, gate_w = gate
    try:
        pid = gated.start(gate_r)
        early = gated.join_outcome_nowait(pid)
    finally:
        os.write(gate_w, b"h")
    if early is not None:
        raise AssertionError(f"join_outcome_nowait gave {early!r} while the process was running")
    return pid.n


@netmcore.process
def define_late(kind: str) -> list[str]:
    def define() -> object:
        if kind == "class":

            class Late(netmcore.ProcessDef[int, int]):
                def run(self, arg: int) -> int:
                    return arg

            return Late
        if kind == "decorator":

            def late(k: int) -> int:
                return k

            return netmcore.process(late)
        return netmcore.def_process(_low_double)

    return _catch(define)


def _define_class_in_master() -> netmcore.ProcessId[int]:
    class LateInMaster(netmcore.ProcessDef[int, int]):
        def run(self, arg: int) -> int:
            return arg

    return LateInMaster.start(1)


@netmcore.process
def bad_argument_scenario(_: int) -> dict[str, Any]:
    before = Add.start((1.0, 2.0))
    try:
        Add.start(("a", 1.0))  # type: ignore[arg-type]
    except netmcore.ArgumentTypeError as exc:
        error: list[str] = [type(exc).__qualname__, str(exc), exc.path]
    else:
        error = ["none", "", ""]
    after = Add.start((3.0, 4.0))
    return {
        "error": error,
        "before": before.n,
        "after": after.n,
        "results": [Add.join(before), Add.join(after)],
    }


@netmcore.process
def boom(message: str) -> int:
    raise ValueError(message)


@netmcore.process
def raise_scenario(message: str) -> dict[str, Any]:
    return {
        "join": boom.join(boom.start(message)),
        "outcome": _outcome_dict(boom.join_outcome(boom.start(message))),
    }


SYS_EXITS: dict[str, object] = {"sys.exit(3)": 3, "sys.exit()": None, "sys.exit('bye')": "bye"}


@netmcore.process
def crash(how: str) -> int:
    if how == "exit":
        os._exit(3)
    if how in SYS_EXITS:  # ends the process as it would a program
        sys.exit(SYS_EXITS[how])
    os.kill(os.getpid(), signal.SIGRTMIN + 2 if how == "realtime" else signal.SIGKILL)
    return 0  # not reached


@netmcore.process
def crash_scenario(how: str) -> dict[str, Any]:
    joined = crash.start(how)
    outcome = crash.start(how)
    return {
        "pids": [joined.n, outcome.n],
        "join": crash.join(joined),
        "outcome": _outcome_dict(crash.join_outcome(outcome)),
    }


@netmcore.process
def liar(k: int) -> int:
    return "x"  # type: ignore[return-value]


@netmcore.process
def nested_liar(k: int) -> list[int]:
    return [k, "x"]  # type: ignore[list-item]


@netmcore.process
def invalid_result_scenario(which: str) -> dict[str, Any]:
    proc: Any = liar if which == "liar" else nested_liar
    return {
        "join": proc.join(proc.start(1)),
        "outcome": _outcome_dict(proc.join_outcome(proc.start(1))),
    }


@netmcore.process
def touch(path: str) -> None:
    Path(path).write_text(f"touched by process {netmcore.self_process_id().n}")


@netmcore.process
def late_writer(arg: tuple[int, str]) -> str:
    first_os_pid, path = arg
    _wait_for_exit(first_os_pid)
    Path(path).write_text("written after the first process ended")
    return "late"


@netmcore.process
def first_starts_late_writer(path: str) -> int:
    return late_writer.start((os.getpid(), path)).n


@netmcore.process
def late_starter(first_os_pid: int) -> list[Any]:
    """After the first process has ended, start until the master refuses.

    The master learns that the first process ended from its pidfd, as this
    process does, so a start or two may still get in; the loop is bounded.
    """
    _wait_for_exit(first_os_pid)
    accepted = 0
    for _ in range(1000):
        try:
            pid = square.start(2)
        except netmcore.ShuttingDown as exc:
            return [f"{type(exc).__module__}.{type(exc).__qualname__}", str(exc), accepted]
        square.join(pid)
        accepted += 1
    return ["none", "", accepted]


@netmcore.process
def first_starts_late_starter(_: int) -> int:
    return late_starter.start(os.getpid()).n


@netmcore.process
def echo_reversed(data: bytes) -> bytes:
    return data[::-1]


@netmcore.process
def relay_reversed(data: bytes) -> bytes:
    result = echo_reversed.join(echo_reversed.start(data))
    if result is None:
        raise RuntimeError("echo_reversed failed")
    return result


@netmcore.process
def echo_prefix(arg: tuple[bytes, int]) -> bytes:
    data, n = arg
    return data[:n]


@netmcore.process
def prefix_relay(sizes: list[tuple[int, int]]) -> list[bool]:
    """Start echo_prefix on arguments of these sizes, one after another: large
    values go out and come back in shm objects used before for other sizes."""
    ok = []
    for size, keep in sizes:
        data = os.urandom(size)
        ok.append(echo_prefix.join(echo_prefix.start((data, keep))) == data[:keep])
    return ok


@netmcore.process
def echo_view(data: bytes) -> memoryview:
    return memoryview(data)


@netmcore.process
def view_keeper(size: int) -> bool:
    """Keep a result that views its shm mapping (a memoryview), then send more
    large values: the object it views must not be written again."""
    first = os.urandom(size)
    kept = echo_view.join(echo_view.start(first))
    assert kept is not None
    for _ in range(3):  # smaller, so that its object would fit them
        other = os.urandom(size // 2)
        assert echo_prefix.join(echo_prefix.start((other, size))) == other
    return bytes(kept) == first


@netmcore.process
def read_then_die(data: bytes) -> int:
    """Read a large argument, then die: its object is still named."""
    os.kill(os.getpid(), signal.SIGKILL)
    return len(data)


@netmcore.process
def keep_large_result_then_die(size: int) -> int:
    """Receive a large result (kept for reuse), start one that dies holding a
    large argument, then die too."""
    data = os.urandom(size)
    assert echo_prefix.join(echo_prefix.start((data, size))) == data
    assert read_then_die.join_outcome(read_then_die.start(data)) is not None
    os.kill(os.getpid(), signal.SIGKILL)
    return size


class Point(msgspec.Struct, frozen=True):
    x: int
    y: int
    label: str = ""


@dataclasses.dataclass(frozen=True)
class Box:
    w: float
    h: float


class Movie(TypedDict):
    title: str
    year: int


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"


@netmcore.process
def move(p: Point) -> Point:
    return Point(p.x + 1, p.y + 1, p.label + "!")


@netmcore.process
def move_relay(p: Point) -> Point | None:
    return move.join(move.start(p))


# Dedicated to the release test: releasing changes the registry for good.
@netmcore.process
def released_fork(k: int) -> int:
    return k


@netmcore.process
def released_join(gate_r: int) -> str:
    return os.read(gate_r, 1).decode()


@netmcore.process
def release_scenario(gate: tuple[int, int]) -> dict[str, Any]:
    gate_r, gate_w = gate
    out: dict[str, Any] = {}
    released_fork.release_fork_point()
    out["fork_twice"] = _catch(released_fork.release_fork_point)
    out["start"] = _catch(lambda: released_fork.start(1))
    try:
        pid = released_join.start(gate_r)
        out["pid"] = pid.n
        released_join.release_join_point()
        out["join_twice"] = _catch(released_join.release_join_point)
    finally:
        os.write(gate_w, b"r")
    out["join"] = _catch(lambda: released_join.join(pid))
    out["join_nowait"] = _catch(lambda: released_join.join_nowait(pid))
    return out


@netmcore.process
def threads_scenario(ks: list[int]) -> list[int | None]:
    results: list[int | None] = [None] * len(ks)
    barrier = threading.Barrier(len(ks))

    def one(i: int) -> None:
        barrier.wait()
        results[i] = square.join(square.start(ks[i]))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(ks))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


@netmcore.process
def open_gate(gate_w: int) -> None:
    os.write(gate_w, b"o")


@netmcore.process
def thread_blocked_in_join_scenario(gate: tuple[int, int]) -> list[Any]:
    """One thread waits in join for a gated process; another opens the gate.

    The gate is opened by a process that the second thread starts and joins,
    so this ends only if a thread waiting in join does not stop the other
    threads of its worker from talking to the master.
    """
    gate_r, gate_w = gate
    pid = gated.start(gate_r)
    joined: list[str | None] = []
    about_to_join = threading.Event()

    def joiner() -> None:
        about_to_join.set()
        joined.append(gated.join(pid))

    t = threading.Thread(target=joiner)
    t.start()
    about_to_join.wait()
    opener = open_gate.start(gate_w)
    opened = open_gate.join_outcome(opener)
    t.join()
    return [type(opened).__name__, joined]


# Low level: def_process with an Encap -> Encap function.
INT = netmcore.EncapType(int)


def _low_double(e: netmcore.Encap) -> netmcore.Encap:
    return INT.wrap(2 * INT.unwrap(e))


LOW_FORK, LOW_JOIN = netmcore.def_process(_low_double)


@netmcore.process
def low_level_scenario(k: int) -> int:
    result = netmcore.join(LOW_JOIN, netmcore.start(LOW_FORK, INT.wrap(k)))
    assert result is not None
    return INT.unwrap(result)


# --------------------------------------------------------------------------
# Test helpers
# --------------------------------------------------------------------------


# --------------------------------------------------------------------------
# 1. The examples
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("hello.py", "Sum: 7.000000"),
        ("create_join.py", "Final result: 385"),
        ("shared_sum.py", "Sum of 1..1000000: 500000500000 (expected 500000500000)"),
        ("heat.py", "10000 cells, 200 steps, 2 workers: max difference 0 from one process"),
    ],
)
def test_example_prints_upstream_result(name: str, expected: str) -> None:
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / name)],
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [expected]


def run_example(name: str, *args: str) -> list[str]:
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines()


def test_task_queue_example_collects_every_result() -> None:
    lines = run_example("task_queue.py")
    assert lines[0].startswith("Tasks done: 40 by 3 workers {0: ")
    # The per-worker counts add up to every task.
    counts = lines[0].split("{", 1)[1].rstrip("}").split(", ")
    assert sum(int(c.split(": ")[1]) for c in counts) == 40
    assert lines[1] == "Primes counted: 165605"  # a sequential sieve gives the same


def test_windowed_example_keeps_each_outcome_and_kills_the_hung_item() -> None:
    assert run_example("windowed.py") == [
        "0: 0",
        "1: 1",
        "2: 4",
        "3: raised ValueError: item 3 is bad",
        "4: 16",
        "5: ended without a result (Crashed(exitcode=None, signal=9))",
        "6: 36",
        "7: 49",
    ]


@pytest.mark.parametrize("meetings", ["1", "101"])
def test_chameneos_example_meetings_add_up_to_twice_n(meetings: str) -> None:
    lines = run_example("chameneos.py", meetings)
    games = "\n".join(lines).split("\n\n")
    assert len(games) == 2
    for game, size in zip(games, (3, 10), strict=True):
        rows = game.splitlines()
        assert len(rows[0].split()) == size  # the creatures' colours
        tallies = [int(row.split()[0]) for row in rows[1 : 1 + size]]
        assert all(row.endswith("meetings, 0 with itself") for row in rows[1 : 1 + size])
        n = int(meetings)
        assert sum(tallies) == 2 * n
        assert rows[1 + size] == f"total: {2 * n} (2 x {n} = {2 * n})"


@pytest.mark.parametrize(
    ("args", "refused"),
    [
        (["nqueens.py", "4", "-1"], "argument workers: -1 is not valid"),  # hung for ever
        (["nqueens.py", "0"], "argument n: 0 is not valid"),
        (["chameneos.py", "-1"], "argument meetings: -1 is not valid"),  # hung for ever
        (["heat.py", "100", "10", "0"], "argument workers: 0 is not valid"),
        (["nqueens.py", "x"], "argument n: 'x' is not a whole number"),  # named a helper
        (["chameneos.py", "2.5"], "argument meetings: '2.5' is not a whole number"),
    ],
)
def test_examples_refuse_counts_they_cannot_run_with(args: list[str], refused: str) -> None:
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / args[0]), *args[1:]],
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    assert refused in proc.stderr


# --------------------------------------------------------------------------
# 2. Master-copy semantics
# --------------------------------------------------------------------------


def test_new_process_is_a_copy_of_the_master_not_of_the_requesting_worker() -> None:
    # X sets c = 1 and starts Y; Y is forked from the master, where c is still 0.
    assert run_scenario(proc_x, 10) == [11, 1]
    assert _c == 0


def test_each_worker_holds_its_own_link_and_no_other_socket() -> None:
    # The master's sockets, and the links of the children forked with it,
    # stay out of every worker: a worker holding another child's link would
    # keep it open after the master closes it (that child would never exit).
    before = _sockets()
    n = 3 * _master.SPARES
    reports = [*run_scenario(sockets_of_many, n), run_scenario(held_sockets, 0)]
    assert len(reports) == n + 1
    for held in reports:
        own = set(held) - before
        assert len(own) == 1, f"a worker holds {sorted(own)}, not just its link"
    assert len({own for held in reports[:n] for own in set(held) - before}) == n


# --------------------------------------------------------------------------
# 3. Ids
# --------------------------------------------------------------------------


def test_consecutive_starts_get_consecutive_process_ids() -> None:
    self_n, *started = run_scenario(start_three, 0)
    assert started == [self_n + 1, self_n + 2, self_n + 3]


def test_first_process_id_is_the_one_first_process_returned() -> None:
    seen: list[int] = []

    def extract(_ctrl: netmcore.Controller, pid: netmcore.ProcessId[list[int]]) -> Any:
        seen.append(pid.n)
        return start_three.join_nowait(pid)

    result = netmcore.run(first_process=lambda: start_three.start(0), extract_result=extract)
    assert result is not None
    assert result[0] == seen[0]


def test_def_process_takes_two_consecutive_res_ids() -> None:
    fork1, join1 = netmcore.def_process(_low_double)
    fork2, join2 = netmcore.def_process(_low_double)
    try:
        assert join1.n == fork1.n + 1
        assert fork2.n == join1.n + 1
        assert join2.n == fork2.n + 1
        # Module-level process types defined one after the other, likewise.
        assert (seq_a.join_point.n, seq_b.fork_point.n, seq_b.join_point.n) == (
            seq_a.fork_point.n + 1,
            seq_a.fork_point.n + 2,
            seq_a.fork_point.n + 3,
        )
    finally:
        for res in (fork1, join1, fork2, join2):
            netmcore.release(res)


def test_process_ids_are_not_reused_across_run_calls() -> None:
    first_run = run_scenario(start_and_join_some, 3)
    second_run = run_scenario(start_and_join_some, 3)
    assert len(set(first_run)) == 4
    assert set(first_run).isdisjoint(second_run)
    assert min(second_run) > max(first_run)


def test_ids_are_immutable_hashable_and_serializable() -> None:
    pid = netmcore.ProcessId[int](5)
    res = netmcore.ResId(7)
    assert pid == netmcore.ProcessId[int](5)
    assert hash(pid) == hash(netmcore.ProcessId[int](5))
    assert {res: 1}[netmcore.ResId(7)] == 1
    with pytest.raises(AttributeError):
        pid.n = 6  # type: ignore[misc]
    decoded_pid = msgspec.msgpack.decode(msgspec.msgpack.encode(pid), type=netmcore.ProcessId[int])
    assert decoded_pid == pid
    decoded_res = msgspec.msgpack.decode(msgspec.msgpack.encode(res), type=netmcore.ResId)
    assert decoded_res == res


def test_fan_out_every_result_arrives() -> None:
    # Many children ending while others are forked: each result must reach its joiner
    # (a master that confuses a reused descriptor number loses some, or hangs).
    assert run_scenario(fan_out, 200) == [k * k for k in range(200)]


class _Counted(netmcore.ProcessDef[int, int]):
    calls: ClassVar[list[str]] = []

    def __init__(self) -> None:
        self.calls.append("__init__")

    def run(self, arg: int) -> int:
        self.calls.append("run")
        return arg


@pytest.mark.parametrize("debug", [False, True], ids=["quiet", "debug"])
def test_a_spare_rehearses_an_assignment_without_a_trace(
    debug: bool, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Spares rehearse while they wait (_worker._warm_up), through a socket
    # pair of their own, and take references to the objects of the process
    # types started last: that must send, log, create and call nothing, leave
    # no descriptor open, and its process type must be one nothing can start.
    monkeypatch.setattr(netmcore.Debug, "enable", debug)
    caplog.set_level(logging.DEBUG, logger="netmcore")
    shm_before = set(os.listdir("/dev/shm"))
    fds_before = set(os.listdir("/proc/self/fd"))
    buffer = recv_buffer()
    sent: list[tuple[int, str]] = []
    real_send = Link.send

    def send(link: Link, msg: Any) -> None:
        sent.append((link.fd, type(msg).__name__))
        real_send(link, msg)

    monkeypatch.setattr(Link, "send", send)
    _worker._warm_up(buffer, [_Counted.fork_point.n, -5])  # -5: a released type
    assert set(os.listdir("/proc/self/fd")) == fds_before
    # Quiet, it goes as far as the send of the outcome, on a socket of its own.
    assert [kind for _, kind in sent] == ([] if debug else ["Finished"])
    for fd, _ in sent:
        with pytest.raises(OSError):
            os.fstat(fd)  # closed: a socket of its own
    assert _Counted.calls == []
    assert caplog.records == []
    assert set(os.listdir("/dev/shm")) == shm_before
    assert _registry.rehearsal is not None
    definition, _ = _registry.rehearsal
    assert definition.fork_point.n not in _registry.by_fork_point
    assert definition.join_point.n not in _registry.by_join_point
    # What it takes ahead: the class, its run, and the EncapTypes' decoders.
    used = {id(o) for o in _registry.by_fork_point[_Counted.fork_point.n].used}
    assert {id(_Counted), id(_Counted.__dict__["run"]), id(_Counted.input_type)} <= used


def test_a_spare_short_of_descriptors_skips_its_rehearsal(monkeypatch: pytest.MonkeyPatch) -> None:
    # A rehearsal is a head start, not a need: a spare that cannot make its
    # socket pair waits for its assignment as it is (before, it died, and
    # with it a process assigned to it meanwhile).
    def no_descriptor(*_: Any) -> Any:
        raise OSError(errno.ENFILE, "Too many open files in system")

    monkeypatch.setattr(_worker.socket, "socketpair", no_descriptor)
    _worker._warm_up(recv_buffer(), [])


def test_heavy_modules_stay_out_of_the_master_through_a_run() -> None:
    # In a fresh interpreter (pytest itself imports these modules), and after a
    # whole run too, so that a second run in the same program forks as lean.
    check = textwrap.dedent(
        """
        import sys
        import netmcore
        loaded = lambda: sorted(set(sys.modules) & set(sys.argv[1:]))
        after_import = loaded()
        @netmcore.process
        def square(k: int) -> int:
            return k * k
        assert netmcore.run(
            first_process=lambda: square.start(5),
            extract_result=lambda _ctrl, pid: square.join_nowait(pid),
        ) == 25
        print(after_import, loaded())
        """
    )
    kept_out = _master.KEPT_OUT_OF_MASTER
    proc = subprocess.run(
        [sys.executable, "-c", check, *kept_out], capture_output=True, text=True, check=True
    )
    assert proc.stdout.split() == ["[]", "[]"]
    assert kept_out  # the check above would pass vacuously without it


def test_workers_run_when_descriptor_numbers_pass_1023() -> None:
    # A large fan-out, or a program with many files open, puts the master's
    # links above 1023, where select.select cannot go: nothing may use it.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 2048:
        pytest.skip(f"the hard limit on open files is {hard}: 2048 are needed")
    resource.setrlimit(resource.RLIMIT_NOFILE, (2048, hard))
    held = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    try:
        assert run_scenario(fan_out, 3 * _master.SPARES) == [
            k * k for k in range(3 * _master.SPARES)
        ]
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


class Failing:
    """``real`` (os.fork, os.pidfd_open...), failing with EAGAIN the calls
    (counted from 1) that ``fails`` picks."""

    def __init__(self, real: Callable[..., int], fails: Callable[[int], bool]) -> None:
        self.real = real
        self.fails = fails
        self.calls = self.failed = 0

    def __call__(self, *args: Any) -> int:
        self.calls += 1
        if self.fails(self.calls):
            self.failed += 1
            raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")
        return self.real(*args)


def test_a_spare_that_cannot_be_forked_loses_no_process(monkeypatch: pytest.MonkeyPatch) -> None:
    # Call 1 forks the watchdog, call 2 the first process (alone: the master's
    # own code started it); from then on every even call fails, so each batch
    # of spares ends after one or two forks (it has at least 3 entries) and
    # the next one starts on an odd call. Each start still gets its process, and the spares forked
    # before a failure are used, or ended at the end.
    fork = Failing(os.fork, lambda n: n > 2 and n % 2 == 0)
    monkeypatch.setattr(os, "fork", fork)
    assert run_scenario(fan_out, 12) == [k * k for k in range(12)]
    assert fork.failed > 0


def test_a_start_that_cannot_fork_raises_in_its_caller_and_the_run_ends(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    fork = Failing(os.fork, lambda n: n > 2)  # nothing forks after the first process
    monkeypatch.setattr(os, "fork", fork)
    errors = run_scenario(start_or_error, 2)
    assert len(errors) == 2
    for error in errors:
        assert error.startswith("cannot start test_core.square: no process for it"), error
        assert "ulimit -u" in error
    # (Whether the loop also tried, and logged, a batch of spares before the
    # first process ended depends on timing: not asserted.)


@netmcore.process
def start_until_it_works(_: int) -> list[int | str]:
    me = netmcore.self_process_id().n
    out: list[int | str] = []
    while True:
        try:
            pid = square.start(3)
        except netmcore.NetmcoreError:
            out.append("failed")
            continue
        out.append(pid.n - me)
        joined(square, pid)
        return out


def test_a_start_that_cannot_fork_uses_up_no_id(monkeypatch: pytest.MonkeyPatch) -> None:
    # Calls 3 and 4 fail: the worker's first start meets one of them (the
    # other may be a batch of spares, which is retried only a second later).
    fork = Failing(os.fork, lambda n: n in (3, 4))
    monkeypatch.setattr(os, "fork", fork)
    out = run_scenario(start_until_it_works, 0)
    assert out[0] == "failed" and out[-1] == 1, out


@netmcore.process
def start_when_no_spare_lives(_: int) -> str:
    # The first start may come before the master has forked any spare: then
    # it forks its process with a batch of them. The next two go to spares.
    joined(square, square.start(1))
    joined(square, square.start(2))
    return str(square.join_outcome(square.start(3)))


def test_a_start_told_its_id_before_no_process_could_run_it_ends_at_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # The master tells a worker its new id before it wakes a spare with the
    # assignment. If every spare turns out dead, and no process can be forked
    # in their place, the id is out already: that process ended at once, and
    # the log says why. Here each spare is killed as it is assigned square(3),
    # and forks fail from then on.
    assigned: list[int] = []  # the process of square(3)
    dead: list[int] = []
    fork = Failing(os.fork, lambda _: bool(dead))
    monkeypatch.setattr(os, "fork", fork)
    real_send = _master.Conn.send

    def send(conn: _master.Conn, msg: Any) -> bool:
        if isinstance(msg, Assign) and conn.child is not None and msg.arg.payload == b"\x03":
            assigned.append(msg.pid)
            os.kill(conn.child.os_pid, signal.SIGKILL)
            select.select([conn.child.pidfd], [], [])  # until it is dead
            dead.append(conn.child.os_pid)
        return real_send(conn, msg)

    monkeypatch.setattr(_master.Conn, "send", send)
    caplog.set_level(logging.ERROR, logger="netmcore")
    assert run_scenario(start_when_no_spare_lives, 0) == str(netmcore.Crashed(None, None))
    assert dead and fork.failed > 0
    expected = f"process {assigned[0]} (test_core.square) could not be started: no process for it"
    assert any(expected in r.getMessage() for r in caplog.records), caplog.text


def test_a_worker_hears_its_new_id_before_a_spare_is_woken_to_run_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A spare woken first could take the master's CPU until it had sent its
    # result, holding up the start's answer, and so the join (see Master.start).
    sent: list[tuple[str, int]] = []
    real_send = _master.Conn.send

    def send(conn: _master.Conn, msg: Any) -> bool:
        if isinstance(msg, Started | Assign):
            sent.append((type(msg).__name__, msg.pid))
        return real_send(conn, msg)

    monkeypatch.setattr(_master.Conn, "send", send)
    assert run_scenario(start_when_no_spare_lives, 0) == str(netmcore.Success(9))
    # Its last two processes ran on spares (the first process was forked with its own).
    assigned = [pid for kind, pid in sent if kind == "Assign"]
    assert len(assigned) >= 2, sent
    for pid in assigned:
        assert sent.index(("Started", pid)) < sent.index(("Assign", pid)), sent


@netmcore.process
def squares_with_a_pause(n: int) -> list[int]:
    out = [joined(square, square.start(k)) for k in range(n)]
    time.sleep(0.05)  # idle: the master tops the spares up now, and has them rehearse
    return [*out, *(joined(square, square.start(k)) for k in range(n))]


def test_spares_forked_in_a_quiet_time_rehearse_with_the_types_started_last(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sent: list[tuple[str, bool, list[int]]] = []
    real_send = _master.Conn.send

    def send(conn: _master.Conn, msg: Any) -> bool:
        if isinstance(msg, Rehearse | Assign) and conn.child is not None:
            types = msg.types if isinstance(msg, Rehearse) else []
            sent.append((type(msg).__name__, conn.child.record is None, types))
        return real_send(conn, msg)

    monkeypatch.setattr(_master.Conn, "send", send)
    n = _master.SPARES - _master.SPARES_LOW  # then the pool is low, not empty: it waits
    assert run_scenario(squares_with_a_pause, n) == [k * k for k in range(n)] * 2
    rehearsals = [(spare, types) for kind, spare, types in sent if kind == "Rehearse"]
    assert rehearsals, sent
    for spare, types in rehearsals:
        assert spare  # never a process's own child
        # The type started last: the first process's, in a quiet time before
        # its first start (a loaded machine makes one), else square.
        assert types[-1] in (square.fork_point.n, squares_with_a_pause.fork_point.n)
    assert any(types[-1] == square.fork_point.n for _, types in rehearsals), rehearsals


def test_a_child_the_master_cannot_track_is_ended(monkeypatch: pytest.MonkeyPatch) -> None:
    # A forked child whose pidfd cannot be opened is killed and reaped at
    # once: untracked, it would never be let exit, and the run would not end.
    # Its start, if it carried one, fails in its caller; the others go on.
    pidfd_open = Failing(os.pidfd_open, lambda n: n % 2 == 0)
    monkeypatch.setattr(os, "pidfd_open", pidfd_open)
    before = {p.pid for p in psutil.Process().children()}
    n = 3 * _master.SPARES
    results = run_scenario(start_or_error, n)
    assert pidfd_open.failed > 0
    # Every child was reaped by the end of run, untracked or not (a zombie counts).
    assert {p.pid for p in psutil.Process().children()} == before
    assert len(results) == n
    for k, result in enumerate(results):
        assert result == str(k * k) or result.startswith("cannot start"), result


# --------------------------------------------------------------------------
# 4. The one-join rule
# --------------------------------------------------------------------------


def test_second_join_raises_unknown_process() -> None:
    result = run_scenario(second_join_scenario, 5)
    assert result["first"] == 25
    for key in ("second_join", "second_join_nowait", "second_join_outcome"):
        assert result[key][0] == "netmcore.UnknownProcess", key
        assert "unknown: it has been joined already" in result[key][1], key
    # An id no start handed out is only one thing.
    assert result["never_started"][0] == "netmcore.UnknownProcess"
    assert "was never started: process ids are handed out in order" in result["never_started"][1]


def test_join_through_another_types_join_point_raises_and_does_not_consume() -> None:
    result = run_scenario(wrong_join_point_scenario, 3)
    for key in ("typed", "low_level"):
        kind, message = result[key]
        assert kind == "netmcore.WrongJoinPoint", key
        assert re.search(r"square.*not a .*cube", message), message
    assert result["right"] == 9


def test_join_nowait_on_running_process_returns_none_without_consuming(
    gate: tuple[int, int],
) -> None:
    result = run_scenario(nowait_scenario, gate)
    assert result["nowait"] == [None, None]
    assert result["low_level_nowait"] is None
    assert result["outcome_nowait"] == {"kind": "None"}
    assert result["join"] == "g"


# --------------------------------------------------------------------------
# 5. join in the master
# --------------------------------------------------------------------------


@pytest.mark.parametrize("layer", ["typed", "low_level"])
def test_join_in_master_raises_context_error_pointing_to_join_nowait(layer: str) -> None:
    def extract(_ctrl: netmcore.Controller, pid: netmcore.ProcessId[int]) -> object:
        if layer == "typed":
            return square.join(pid)
        return netmcore.join(square.join_point, pid)

    with pytest.raises(netmcore.ContextError, match=r"use join_nowait\(\)\s+there"):
        netmcore.run(first_process=lambda: square.start(4), extract_result=extract)


def test_join_nowait_works_in_extract_result() -> None:
    result = netmcore.run(
        first_process=lambda: square.start(4),
        extract_result=lambda _ctrl, pid: square.join_nowait(pid),
    )
    assert result == 16


def test_low_level_def_process_start_join() -> None:
    # From the master (first_process / extract_result) and from a worker.
    direct = netmcore.run(
        first_process=lambda: netmcore.start(LOW_FORK, INT.wrap(21)),
        extract_result=lambda _ctrl, pid: netmcore.join_nowait(LOW_JOIN, pid),
    )
    assert direct is not None
    assert INT.unwrap(direct) == 42
    assert run_scenario(low_level_scenario, 8) == 16


# --------------------------------------------------------------------------
# 6. Calls in the wrong context
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda: square.start(1), id="typed-start"),
        pytest.param(lambda: square.join(netmcore.ProcessId[int](0)), id="typed-join"),
        pytest.param(lambda: square.join_nowait(netmcore.ProcessId[int](0)), id="typed-nowait"),
        pytest.param(lambda: netmcore.start(square.fork_point, INT.wrap(1)), id="start"),
        pytest.param(lambda: netmcore.join(square.join_point, netmcore.ProcessId(0)), id="join"),
        pytest.param(
            lambda: netmcore.join_nowait(square.join_point, netmcore.ProcessId(0)), id="nowait"
        ),
    ],
)
def test_start_and_join_outside_run_raise_context_error(call: Callable[[], object]) -> None:
    with pytest.raises(
        netmcore.ContextError,
        match=r"outside netmcore\.run\(\)/startup\(\): call it from (first_process or from )?"
        r"inside a worker process",
    ):
        call()


@pytest.mark.parametrize("kind", ["class", "decorator", "def_process"])
def test_defining_a_process_type_in_a_worker_raises_context_error(kind: str) -> None:
    error, message = run_scenario(define_late, kind)
    assert error == "netmcore.ContextError"
    assert "defined after the master started" in message
    assert "define process types at module level" in message


def test_defining_a_process_type_in_the_master_raises_context_error() -> None:
    with pytest.raises(netmcore.ContextError, match="defined after the master started"):
        netmcore.run(first_process=_define_class_in_master, extract_result=lambda _c, _p: None)


# --------------------------------------------------------------------------
# 7. A bad argument type
# --------------------------------------------------------------------------


def test_bad_argument_raises_in_caller_before_anything_starts() -> None:
    result = run_scenario(bad_argument_scenario, 0)
    kind, message, path = result["error"]
    assert kind == "ArgumentTypeError"
    assert path == "$[0]"
    assert re.search(r"argument of Add\.start: .* does not match tuple\[float, float\]", message)
    # No process id was consumed by the refused start.
    assert result["after"] == result["before"] + 1
    assert result["results"] == [3.0, 7.0]


def test_bad_argument_outside_run_is_an_argument_type_error() -> None:
    # The argument is checked before anything else, even the context.
    with pytest.raises(netmcore.ArgumentTypeError, match="does not match") as info:
        Add.start((1.0, "b"))  # type: ignore[arg-type]
    assert info.value.path == "$[1]"


# --------------------------------------------------------------------------
# 8. Exceptions and crashes
# --------------------------------------------------------------------------


def test_raising_process_joins_none_and_reports_the_exception() -> None:
    result = run_scenario(raise_scenario, "kaput")
    assert result["join"] is None
    outcome = result["outcome"]
    assert outcome["kind"] == "Raised"
    assert outcome["type_name"] == "ValueError"
    assert outcome["message"] == "kaput"
    assert "raise ValueError(message)" in outcome["traceback"]
    assert "ValueError: kaput" in outcome["traceback"]
    # It starts in the process function, as a program's starts in its own
    # code: netmcore's calls into it (three frames, before) tell nothing.
    lines = outcome["traceback"].splitlines()
    assert lines[0] == "Traceback (most recent call last):"
    assert lines[1].endswith(", in boom"), lines[1]
    assert "netmcore" + os.sep not in outcome["traceback"]


@netmcore.process
def undecodable(k: int) -> int:
    return k


def test_a_traceback_wholly_netmcores_is_kept_whole() -> None:
    """An argument that does not decode fails before the process function
    runs: every frame is netmcore's, and none is dropped."""
    bad = netmcore.EncapType(str).wrap("not an int")
    pid = netmcore.ProcessId[int](-1)

    def first() -> netmcore.ProcessId[int]:
        nonlocal pid
        pid = netmcore.start(undecodable.fork_point, bad)  # past start's typed check
        return pid

    outcome = netmcore.run(
        first_process=first, extract_result=lambda _c, p: undecodable.join_outcome_nowait(p)
    )
    assert isinstance(outcome, netmcore.Raised), outcome
    assert outcome.traceback.startswith("Traceback (most recent call last):")
    assert "netmcore" + os.sep in outcome.traceback


class _BrokenStr(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no text for this one")


@netmcore.process
def raises_unprintable(_: int) -> int:
    raise _BrokenStr


def test_an_exception_whose_str_fails_is_still_reported_as_raised() -> None:
    outcome = netmcore.run(
        first_process=lambda: raises_unprintable.start(0),
        extract_result=lambda ctrl, pid: raises_unprintable.join_outcome_nowait(pid),
    )
    assert isinstance(outcome, netmcore.Raised), outcome
    assert outcome.type_name.endswith("_BrokenStr")
    assert outcome.message == "<exception str() failed>"  # as Python prints it
    assert "raise _BrokenStr" in outcome.traceback


@netmcore.process
def raises_about_a_file_name(_: int) -> int:
    # os.fsdecode turns a byte that is not UTF-8 into a lone surrogate.
    name = os.fsdecode(b"/data/caf\xe9.csv")
    raise ValueError(f"no header in {name}")


def test_an_exception_text_that_is_not_utf8_is_reported_as_raised_escaped() -> None:
    outcome = netmcore.run(
        first_process=lambda: raises_about_a_file_name.start(0),
        extract_result=lambda ctrl, pid: raises_about_a_file_name.join_outcome_nowait(pid),
    )
    assert isinstance(outcome, netmcore.Raised), outcome
    assert outcome.type_name == "ValueError"
    assert outcome.message == "no header in /data/caf\\udce9.csv"
    assert "ValueError: no header in /data/caf\\udce9.csv" in outcome.traceback


@pytest.mark.parametrize(
    ("how", "exitcode", "signum", "logged"),
    [
        ("exit", 3, None, "exit code 3"),
        # sys.exit() is no exception of the process's, but its end, as in
        # multiprocessing: Python's status for it, and no traceback.
        ("sys.exit(3)", 3, None, "exit code 3"),
        ("sys.exit()", 0, None, "exit code 0"),
        ("sys.exit('bye')", 1, None, "exit code 1"),
        ("kill", None, 9, "killed by signal SIGKILL"),
        # Real-time signals are not in signal.Signals: naming one broke the run.
        ("realtime", None, signal.SIGRTMIN + 2, "killed by signal SIGRTMIN+2"),
    ],
)
def test_crashed_process_joins_none_and_master_logs_it(
    caplog: pytest.LogCaptureFixture,
    how: str,
    exitcode: int | None,
    signum: int | None,
    logged: str,
) -> None:
    caplog.set_level(logging.WARNING, logger="netmcore")
    result = run_scenario(crash_scenario, how)
    assert result["join"] is None
    assert result["outcome"] == {"kind": "Crashed", "exitcode": exitcode, "signal": signum}
    messages = [r.getMessage() for r in caplog.records if r.name == "netmcore"]
    for n in result["pids"]:
        pattern = rf"process {n} \([^)]*crash\) ended without a result: {re.escape(logged)}$"
        assert any(re.search(pattern, m) for m in messages), messages
    assert not [m for m in messages if "raised an exception" in m]


@netmcore.process
def results_scenario(gate: tuple[int, int]) -> list[str]:
    """result() of each way a process ends, then of one still running."""

    def result_of(call: Callable[[], object]) -> str:
        try:
            return f"returned {call()!r}"
        except netmcore.ProcessFailed as exc:
            notes = getattr(exc, "__notes__", [])
            note = notes[0].splitlines()[0] if notes else "no note"
            return f"ProcessFailed({type(exc.outcome).__name__}): {exc} | {note}"

    got = [
        result_of(lambda: square.result(square.start(7))),
        result_of(lambda: boom.result(boom.start("kaput"))),
        result_of(lambda: crash.result(crash.start("exit"))),
        result_of(lambda: liar.result(liar.start(1))),
    ]
    gate_r, gate_w = gate  # made in the master: gated, its copy, has it
    pid = gated.start(gate_r)
    try:
        got.append(outcome_text(lambda: gated.result(pid, timeout=0)))
    finally:
        os.write(gate_w, b"g")
    got.append(outcome_text(lambda: gated.result(pid)))  # not used up by the timeout
    got.append(outcome_text(lambda: gated.result(pid)))  # used up now
    return got


def test_result_returns_the_value_or_raises_process_failed_with_the_outcome(
    gate: tuple[int, int],
) -> None:
    """result() is Future.result(): the value, typed Out (never None), or an
    exception saying how the process ended, its outcome attached."""
    got = run_scenario(results_scenario, gate)
    assert got[0] == "returned 49"
    assert re.fullmatch(
        r"ProcessFailed\(Raised\): process \d+ \(boom\) raised ValueError: kaput \| "
        r"The process's traceback:",
        got[1],
    ), got[1]
    assert re.fullmatch(
        r"ProcessFailed\(Crashed\): process \d+ \(crash\) exited with code 3 before "
        r"returning \| no note",
        got[2],
    ), got[2]
    assert re.fullmatch(
        r"ProcessFailed\(InvalidResult\): process \d+ \(liar\) invalid result at \$: .* \| "
        r"no note",
        got[3],
    ), got[3]
    assert re.fullmatch(r"TimeoutError: .*", got[4]), got[4]
    assert got[5] == "returned 'g'"
    assert re.fullmatch(r"UnknownProcess: .*", got[6]), got[6]


def test_result_in_extract_result_is_a_try() -> None:
    """In the master's own code, result() takes timeout=0 (the first process
    has ended by extract_result); waiting there is refused, as for join."""
    assert (
        netmcore.run(
            first_process=lambda: square.start(6),
            extract_result=lambda _c, pid: square.result(pid, timeout=0),
        )
        == 36
    )
    refused = netmcore.run(
        first_process=lambda: square.start(6),
        extract_result=lambda _c, pid: outcome_text(lambda: square.result(pid)),
    )
    assert refused == (
        "ContextError: result() cannot wait in the master, which never blocks: use "
        "result(pid, timeout=0), a try (in extract_result, the first process has ended)"
    ), refused
    # Each waiting join names itself and its try.
    refused = netmcore.run(
        first_process=lambda: square.start(6),
        extract_result=lambda _c, pid: outcome_text(lambda: square.join_outcome(pid)),
    )
    assert refused.startswith(
        "ContextError: join_outcome() cannot wait in the master, which never blocks: use "
        "join_outcome_nowait() there, or join_outcome(pid, timeout=0), a try"
    ), refused


def test_crashed_outcome_str() -> None:
    assert str(netmcore.Crashed(3, None)) == "exited with code 3 before returning"
    assert str(netmcore.Crashed(None, 9)) == "killed by SIGKILL"
    assert str(netmcore.Crashed(None, signal.SIGRTMIN + 2)) == "killed by SIGRTMIN+2"
    assert str(netmcore.Crashed(None, 99)) == "killed by signal 99"


@pytest.mark.parametrize(
    ("proc", "arg", "logged"),
    [
        ("boom", "'kaput'", r"process \d+ \([^)]*boom\) raised an exception:\nTraceback"),
        ("liar", "1", r"process \d+ \([^)]*liar\) returned an invalid result"),
    ],
)
def test_worker_failure_is_logged_to_stderr(
    tmp_path: Path, proc: str, arg: str, logged: str
) -> None:
    result = run_script(
        tmp_path,
        f"""
        import netmcore

        @netmcore.process
        def boom(message: str) -> int:
            raise ValueError(message)

        @netmcore.process
        def liar(k: int) -> int:
            return "x"

        kind = netmcore.run(
            first_process=lambda: {proc}.start({arg}),
            extract_result=lambda _c, pid: type({proc}.join_outcome_nowait(pid)).__name__,
        )
        print("outcome:", kind)
        """,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"outcome: {'Raised' if proc == 'boom' else 'InvalidResult'}\n"
    assert re.search(logged, result.stderr), result.stderr
    if proc == "boom":
        assert "ValueError: kaput" in result.stderr


# --------------------------------------------------------------------------
# 9. A result of the wrong type
# --------------------------------------------------------------------------


@pytest.mark.parametrize(("which", "path"), [("liar", "$"), ("nested_liar", "$[1]")])
def test_result_of_wrong_type_is_never_handed_over(which: str, path: str) -> None:
    result = run_scenario(invalid_result_scenario, which)
    assert result["join"] is None
    outcome = result["outcome"]
    assert outcome["kind"] == "InvalidResult"
    assert outcome["path"] == path
    assert "Expected `int`, got `str`" in outcome["message"]


# --------------------------------------------------------------------------
# 10. run, startup, several runs
# --------------------------------------------------------------------------


def test_several_run_calls_in_one_program() -> None:
    results = [
        netmcore.run(
            first_process=lambda k=k: square.start(k),  # type: ignore[misc]
            extract_result=lambda _ctrl, pid: square.join_nowait(pid),
        )
        for k in range(3)
    ]
    assert results == [0, 1, 4]


def test_startup_returns_none_and_runs_the_first_process(tmp_path: Path) -> None:
    target = tmp_path / "touched"
    result = netmcore.startup(first_process=lambda: touch.start(str(target)))
    assert result is None
    assert target.read_text().startswith("touched by process ")


def test_a_second_run_in_another_thread_is_refused_before_it_makes_anything() -> None:
    """One master per process: a run started while another thread's run goes on
    would share its process table (it hung, or failed with a false error)."""
    in_run, tried = threading.Event(), threading.Event()
    refused: list[BaseException] = []

    def hold_the_run(ctrl: netmcore.Controller) -> None:
        in_run.set()
        assert tried.wait(30)

    def second_run() -> None:
        assert in_run.wait(30)
        children = set(psutil.Process().children())
        try:
            netmcore.run(
                first_process=lambda: square.start(2),
                extract_result=lambda ctrl, pid: square.join_nowait(pid),
            )
        except BaseException as exc:
            refused.append(exc)
        finally:
            assert set(psutil.Process().children()) == children  # nothing forked
            tried.set()

    other = threading.Thread(target=second_run)
    other.start()
    result = netmcore.run(
        first_process=lambda: square.start(3),
        extract_result=lambda ctrl, pid: square.join_nowait(pid),
        init_ctrl=hold_the_run,
    )
    other.join()
    assert result == 9
    assert len(refused) == 1 and isinstance(refused[0], netmcore.ContextError)
    assert "running in another thread" in str(refused[0])
    # Once the first run has returned, another thread's run works.
    later: list[int | None] = []
    after = threading.Thread(
        target=lambda: later.append(
            netmcore.run(
                first_process=lambda: square.start(4),
                extract_result=lambda ctrl, pid: square.join_nowait(pid),
            )
        )
    )
    after.start()
    after.join()
    assert later == [16]


# --------------------------------------------------------------------------
# 11-12. Shutdown: run waits for the workers; no start after the first ended
# --------------------------------------------------------------------------


def test_run_waits_for_remaining_workers(tmp_path: Path) -> None:
    target = tmp_path / "late"

    def extract(_ctrl: netmcore.Controller, pid: netmcore.ProcessId[int]) -> Any:
        late_n = first_starts_late_writer.join_nowait(pid)
        assert late_n is not None
        return late_writer.join_outcome_nowait(netmcore.ProcessId(late_n))

    late_outcome = netmcore.run(
        first_process=lambda: first_starts_late_writer.start(str(target)), extract_result=extract
    )
    # The late writer wrote only once the first process had ended; run waited for it.
    assert target.read_text() == "written after the first process ended"
    assert late_outcome == netmcore.Success("late")


@netmcore.process
def squares_then_return(n: int) -> int:
    """Start and join ``n`` short processes, and return at once: the master
    still keeps some of them from exiting (it lets them go when quiet)."""
    pids = [square.start(k) for k in range(n)]
    return sum(joined(square, pid) for pid in pids)


def test_run_ends_while_finished_processes_wait_to_exit() -> None:
    # A finished process waits for the master to let it exit; the end of run
    # must let every one go (else run waits for them forever).
    assert run_scenario(squares_then_return, 6) == sum(k * k for k in range(6))


def test_output_buffered_in_the_master_is_not_printed_again_by_workers(tmp_path: Path) -> None:
    # Each worker is a fork of the master: unless the master flushes before it
    # forks, every worker inherits its buffered text and prints it again.
    script = tmp_path / "script.py"
    script.write_text(
        textwrap.dedent(
            """
            import netmcore

            @netmcore.process
            def square(k: int) -> int:
                return k * k

            @netmcore.process
            def first(n: int) -> int:
                return sum(square.join(square.start(k)) or 0 for k in range(n))

            print("printed once, before run")
            print(netmcore.run(
                first_process=lambda: first.start(5),
                extract_result=lambda _ctrl, pid: first.join_nowait(pid),
            ))
            """
        )
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    proc = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,  # a pipe: stdout is block-buffered
        text=True,
        timeout=SUBPROCESS_TIMEOUT,
        check=False,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["printed once, before run", "30"]


def test_ctrl_c_while_run_cleans_up_leaves_no_child(tmp_path: Path) -> None:
    # first_process fails with workers running; run's cleanup kills and
    # reaps them, and a Ctrl-C arrives in the middle of it (at its first
    # reap, a waitid on the child's pidfd): it takes effect only once every
    # child is gone.
    result = run_script(
        tmp_path,
        """
        import os, signal, psutil, netmcore
        from netmcore import _master

        @netmcore.process
        def blocked(fd: int) -> int:
            return len(os.read(fd, 1))

        real_waitid = os.waitid
        closing = []

        def waitid(idtype, ident, options):
            if closing and len(closing) == 1:
                closing.append(True)
                os.kill(os.getpid(), signal.SIGINT)
            return real_waitid(idtype, ident, options)

        real_close = _master.Master.close

        def close(self):
            closing.append(True)
            real_close(self)

        _master.os.waitid = waitid
        _master.Master.close = close
        r, w = os.pipe()

        def first():
            for _ in range(3):
                blocked.start(r)
            raise RuntimeError("first_process failed")

        try:
            netmcore.run(first_process=first, extract_result=lambda c, p: None)
        except BaseException as exc:
            print(type(exc).__name__, len(closing), len(psutil.Process().children()))
        """,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "KeyboardInterrupt 2 0\n", result.stderr


def test_start_after_first_process_ended_raises_shutting_down() -> None:
    def extract(_ctrl: netmcore.Controller, pid: netmcore.ProcessId[int]) -> Any:
        late_n = first_starts_late_starter.join_nowait(pid)
        assert late_n is not None
        return late_starter.join_outcome_nowait(netmcore.ProcessId(late_n))

    outcome = netmcore.run(
        first_process=lambda: first_starts_late_starter.start(0), extract_result=extract
    )
    assert isinstance(outcome, netmcore.Success), outcome
    kind, message, _accepted = outcome.value
    assert kind == "netmcore.ShuttingDown"
    assert "the first process has ended and netmcore is shutting down" in message


# --------------------------------------------------------------------------
# 13. Large payloads
# --------------------------------------------------------------------------


@pytest.mark.parametrize("size", [1 << 20, 10 << 20], ids=["1MiB", "10MiB"])
@pytest.mark.parametrize("origin", ["master", "worker"])
def test_large_payload_round_trip(size: int, origin: str) -> None:
    data = os.urandom(size)
    proc = echo_reversed if origin == "master" else relay_reversed
    result = netmcore.run(
        first_process=lambda: proc.start(data),
        extract_result=lambda _ctrl, pid: proc.join_nowait(pid),
    )
    assert result is not None
    assert len(result) == size
    assert result == data[::-1]


def test_large_payloads_of_changing_sizes_through_reused_objects() -> None:
    """Results smaller than the object they come back in, arguments larger
    than the last one, and a small result after large ones: all intact."""
    mib = 1 << 20
    sizes = [(mib, mib), (mib, 100_000), (300_000, 300_000), (2 * mib, 70_000), (200_000, 10)]
    sizes += [(mib, mib), (3 * mib, 3 * mib)]
    assert run_scenario(prefix_relay, sizes) == [True] * len(sizes)


def test_processes_that_die_holding_large_values_leave_no_shm_object() -> None:
    """The autouse fixture fails this test if a /dev/shm entry is left."""
    outcome = netmcore.run(
        first_process=lambda: keep_large_result_then_die.start(1 << 20),
        extract_result=lambda _ctrl, pid: keep_large_result_then_die.join_outcome_nowait(pid),
    )
    assert isinstance(outcome, netmcore.Crashed) and outcome.signal == signal.SIGKILL


def test_a_kept_view_of_a_large_result_is_never_overwritten() -> None:
    assert run_scenario(view_keeper, 1 << 20) is True


# --------------------------------------------------------------------------
# 14-15. Types and EncapType
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("typ", "value"),
    [
        (int, 42),
        (bool, True),
        (float, 2.5),
        (str, "héllo"),
        (bytes, b"\x00\xff\x10"),
        (tuple[int, str], (1, "a")),
        (list[int], [1, 2, 3]),
        (dict[str, int], {"a": 1, "b": 2}),
        (Point, Point(1, 2, "p")),
        (Box, Box(1.5, 2.0)),
        (Movie, {"title": "Brazil", "year": 1985}),
        (Color, Color.GREEN),
        (datetime, datetime(2024, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)),
        (int | None, None),
        (int | None, 5),
    ],
    ids=lambda v: getattr(v, "__name__", None) or repr(v),
)
def test_encap_type_round_trip(typ: Any, value: Any) -> None:
    et = netmcore.EncapType(typ)
    back = et.unwrap(et.wrap(value))
    assert back == value
    assert type(back) is type(value)


def test_struct_through_a_real_process() -> None:
    assert run_scenario(move_relay, Point(1, 2, "a")) == Point(2, 3, "a!")


def test_unwrap_with_another_encap_type_raises_mismatch() -> None:
    encap = netmcore.EncapType(int).wrap(1)
    with pytest.raises(netmcore.EncapTypeMismatch, match=r"encapsulated as int .* as str"):
        netmcore.EncapType(str).unwrap(encap)


# --------------------------------------------------------------------------
# 16. Releasing fork and join points
# --------------------------------------------------------------------------


def test_release_fork_and_join_points(gate: tuple[int, int]) -> None:
    def extract(ctrl: netmcore.Controller, pid: netmcore.ProcessId[dict[str, Any]]) -> Any:
        known = [p.id for p in ctrl.processes()]
        return known, release_scenario.join_outcome_nowait(pid)

    known, outcome = netmcore.run(
        first_process=lambda: release_scenario.start(gate), extract_result=extract
    )
    assert isinstance(outcome, netmcore.Success), outcome
    result = outcome.value
    assert result["fork_twice"] == ["none", "None"]
    assert result["join_twice"] == ["none", "None"]
    assert result["start"][0] == "netmcore.NoResource"
    assert result["join"][0] == "netmcore.NoResource"
    assert result["join_nowait"][0] == "netmcore.NoResource"
    # The released join point's result was dropped: the master no longer holds it.
    assert result["pid"] not in known


# --------------------------------------------------------------------------
# 17. Debug tracing
# --------------------------------------------------------------------------


@pytest.mark.parametrize("configured", [False, True], ids=["own-handler", "basicConfig"])
@pytest.mark.parametrize("enable", [True, False])
def test_debug_enable_logs_start_and_join(tmp_path: Path, enable: bool, configured: bool) -> None:
    # With the program's own logging set up, its handler prints each line,
    # once, in its format; else netmcore's does. An error line is not
    # prefixed twice ("netmcore: netmcore: ").
    result = run_script(
        tmp_path,
        f"""
        import logging, netmcore

        if {configured}:
            logging.basicConfig(format="app: %(message)s")

        @netmcore.process
        def square(k: int) -> int:
            if k == 0:
                raise ValueError("zero")
            return k * k

        netmcore.Debug.enable = {enable}
        print(netmcore.run(
            first_process=lambda: (square.start(0), square.start(6))[1],
            extract_result=lambda _c, pid: square.join_nowait(pid),
        ))
        """,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "36\n"
    prefix = "app: netmcore: " if configured else "netmcore: "
    for event in (r"start: process \d+", r"join: process \d+"):
        lines = re.findall(rf"(?m)^.*{event}.*$", result.stderr)
        assert len(lines) == (2 if "start" in event else 1) * enable, result.stderr
        assert all(line.startswith(f"{prefix}[") for line in lines), lines
    errors = re.findall(r"(?m)^.*raised an exception:$", result.stderr)
    assert len(errors) == 1, result.stderr
    assert errors[0].startswith("app: netmcore: process" if configured else "netmcore: process")


def test_a_failure_in_nested_maps_logs_its_traceback_once(tmp_path: Path) -> None:
    # Each level logs its own failure; the one below it is named, its
    # traceback referred to: it was logged again at every level above it.
    # The outcome keeps it whole, for the program.
    result = run_script(
        tmp_path,
        """
        import netmcore

        @netmcore.process
        def leaf(k: int) -> int:
            if k == 2:
                raise KeyError(k)  # the leaf's line
            return k

        @netmcore.process
        def mid(k: int) -> int:
            return sum(leaf.map(range(k)))

        @netmcore.process
        def top(_: int) -> int:
            return sum(mid.map([1, 3]))

        try:
            netmcore.run(
                first_process=lambda: top.start(0),
                extract_result=lambda c, pid: top.result(pid, timeout=0),
            )
        except netmcore.ProcessFailed as exc:
            print(exc.outcome.traceback.count("the leaf's line"))
        """,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "1\n"  # the outcome's traceback holds the leaf's, whole
    assert result.stderr.count("the leaf's line") == 1, result.stderr
    raised = re.findall(r"(?m)^netmcore: process \d+ .* raised an exception:$", result.stderr)
    assert len(raised) == 3, result.stderr
    assert result.stderr.count("The process's traceback: logged above, as that process raised") == 2


@pytest.mark.parametrize("entry", ["run", "startup"])
def test_debug_traces_each_event_upstream_logs(tmp_path: Path, entry: str) -> None:
    # start, deliver, join, forget, worker end and abnormal exit, each for
    # its process. "forget" also for what nobody joined by the end: in
    # startup, its first process; in run, a process left unjoined.
    result = run_script(
        tmp_path,
        f"""
        import os, netmcore

        @netmcore.process
        def square(k: int) -> int:
            if k == 0:
                os._exit(3)
            return k * k

        @netmcore.process
        def first(_: int) -> int:
            crashed, joined, left = square.start(0), square.start(6), square.start(7)
            print("ids", crashed.n, joined.n, left.n, flush=True)
            assert square.join(crashed) is None and square.join(joined) == 36
            return 0

        netmcore.Debug.enable = True
        if {entry == "run"}:
            netmcore.run(first_process=lambda: first.start(0),
                         extract_result=lambda _c, pid: first.join_nowait(pid))
        else:
            netmcore.startup(first_process=lambda: first.start(0))
        """,
    )
    assert result.returncode == 0, result.stderr
    crashed, joined, left = map(int, result.stdout.split()[1:])
    first = 0
    err = result.stderr

    def traced(event: str) -> set[int]:
        return {int(n) for n in re.findall(rf"(?m)\] {event}: process (\d+)", err)}

    assert traced("start") == {first, crashed, joined, left}, err
    assert traced("deliver") == {first, joined, left}, err  # the crashed one sent nothing
    assert traced("worker end") == {first, crashed, joined, left}, err
    assert traced("join") >= {crashed, joined}, err
    assert left not in traced("join"), err
    forgotten = {left} if entry == "run" else {left, first}
    assert traced("forget") == forgotten, err
    assert re.search(
        rf"process {crashed} \(__main__.square\) ended without a result: exit code 3", err
    ), err


def test_debug_traces_each_item_of_a_chunked_map(tmp_path: Path) -> None:
    # A chunk's process starts and ends as any does; its items are traced in
    # it, each as it runs and as it returns (one that raises is logged).
    result = run_script(
        tmp_path,
        """
        import netmcore

        @netmcore.process
        def square(k: int) -> int:
            if k == 4:
                raise ValueError("four")
            return k * k

        @netmcore.process
        def first(_: int) -> int:
            got = []
            try:
                for value in square.map(range(6), chunksize=3):
                    got.append(value)
            except netmcore.ProcessFailed:
                pass
            return len(got)

        netmcore.Debug.enable = True
        print(netmcore.run(first_process=lambda: first.start(0),
                           extract_result=lambda _c, pid: first.join_nowait(pid)))
        """,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "4\n"
    err = result.stderr

    def traced(event: str) -> list[int]:
        return [int(n) for n in re.findall(rf"(?m)\] map: item (\d+) of square.map {event}$", err)]

    # (The two chunks run at once: their lines interleave.)
    assert sorted(traced("runs")) == [0, 1, 2, 3, 4], err
    assert sorted(traced("returned")) == [0, 1, 2, 3], err
    assert re.search(r"(?m)^netmcore: item 4 of square.map \(in process \d+\) raised", err), err


# --------------------------------------------------------------------------
# 18. Threads in a worker
# --------------------------------------------------------------------------


def test_threads_in_a_worker_start_and_join_concurrently() -> None:
    assert run_scenario(threads_scenario, [3, 4]) == [9, 16]


@pytest.mark.timeout(5)
def test_thread_waiting_in_join_does_not_block_other_threads(gate: tuple[int, int]) -> None:
    # Failing means a deadlock: the per-test timeout turns it into a failure.
    assert run_scenario(thread_blocked_in_join_scenario, gate) == ["Success", ["o"]]


def test_a_process_ends_once_its_non_daemon_threads_have(tmp_path: Path) -> None:
    """As a Python program, and a multiprocessing Process: the outcome goes
    out (and the process exits) only after the threads it left running end."""
    marker = tmp_path / "thread-done"
    outcome = netmcore.run(
        first_process=lambda: leaves_a_thread.start(str(marker)),
        extract_result=lambda ctrl, pid: leaves_a_thread.join_outcome_nowait(pid),
    )
    assert outcome == netmcore.Success("returned")
    assert marker.read_text() == "the function had returned"


# --------------------------------------------------------------------------
# 19. join_outcome_nowait
# --------------------------------------------------------------------------


def test_join_outcome_nowait_none_while_running_then_success(gate: tuple[int, int]) -> None:
    def extract(_ctrl: netmcore.Controller, pid: netmcore.ProcessId[int]) -> Any:
        gated_n = outcome_nowait_scenario.join_nowait(pid)
        assert gated_n is not None
        gated_pid = netmcore.ProcessId[str](gated_n)
        # run has waited for every worker: the gated process has ended by now.
        return [gated.join_outcome_nowait(gated_pid), _catch(lambda: gated.join_nowait(gated_pid))]

    outcome, again = netmcore.run(
        first_process=lambda: outcome_nowait_scenario.start(gate), extract_result=extract
    )
    assert outcome == netmcore.Success("h")
    assert again[0] == "netmcore.UnknownProcess"


# 1 and 2: boards too small for the two-queen subproblems (1 was counted 0).
@pytest.mark.parametrize(("n", "unique"), [("1", 1), ("2", 0), ("6", 1), ("8", 12), ("10", 92)])
def test_nqueens_example_modes_agree_on_the_known_counts(n: str, unique: int) -> None:
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / "nqueens.py"), n, "2"],
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == f"{n}-queens: {unique} solutions unique up to symmetry"
    rows = {line.split()[0]: int(line.split()[1]) for line in lines[2:]}
    assert set(rows) == {"sequential", "processes", "mailbox", "table", "ProcessPoolExecutor"}
    assert set(rows.values()) == {unique}
    # The progress bars stay off when stderr is not a terminal.
    assert proc.stderr == ""


# --------------------------------------------------------------------------
# 20. Edge cases: the master's own starts, ids, self-joins, released join
#     points, huge exception texts, arguments of crashed processes
# --------------------------------------------------------------------------

MASTER_STATE = {"x": 0}


@netmcore.process
def read_master_state(_: int) -> int:
    return MASTER_STATE["x"]


def _until_a_thread_waits_for_a_reply() -> None:
    """In a worker: return once another thread has sent its request on the link
    and reads the reply (requests on one link reach the master in order)."""
    link = _context.current.link
    assert link is not None
    deadline = time.monotonic() + SUBPROCESS_TIMEOUT
    while link._reader is None:
        assert time.monotonic() < deadline, "the thread never sent its request"
        time.sleep(0.001)  # polling a condition, with a deadline


@netmcore.process
def join_self(_: int) -> list[str]:
    me = netmcore.self_process_id()
    return _catch(lambda: join_self.join(me))


@netmcore.process
def return_while_a_thread_joins(gate_r: int) -> int:
    """Leave a thread waiting in the join of a gated process, and return."""
    pid = gated.start(gate_r)
    threading.Thread(target=lambda: gated.join(pid), daemon=True).start()
    _until_a_thread_waits_for_a_reply()
    return pid.n


@netmcore.process
def join_what_a_returned_process_waited_for(gate: tuple[int, int]) -> list[str]:
    gate_r, gate_w = gate
    n = joined(return_while_a_thread_joins, return_while_a_thread_joins.start(gate_r))
    os.write(gate_w, b"g")  # the gated process ends while that thread still waits
    return _catch(lambda: gated.join(netmcore.ProcessId[str](n)))


@netmcore.process
def released_while_waited(gate_r: int) -> str:
    return os.read(gate_r, 1).decode()


@netmcore.process
def release_while_a_thread_joins(gate: tuple[int, int]) -> list[str]:
    gate_r, gate_w = gate
    pid = released_while_waited.start(gate_r)
    seen: list[str] = []
    t = threading.Thread(
        target=lambda: seen.extend(_catch(lambda: released_while_waited.join(pid)))
    )
    t.start()
    _until_a_thread_waits_for_a_reply()
    released_while_waited.release_join_point()
    t.join()  # answered by the release itself: the process still runs
    os.write(gate_w, b"r")
    return seen


@netmcore.process
def raise_huge(n: int) -> int:
    raise ValueError("<" + "x" * n + ">")


@netmcore.process
def crash_with(_: bytes) -> int:
    os._exit(1)


@netmcore.process
def start_crashers(size: int) -> int:
    pids = [crash_with.start(b"z" * size) for _ in range(3)]
    return sum(isinstance(crash_with.join_outcome(pid), netmcore.Crashed) for pid in pids)


def test_each_start_from_first_process_sees_the_master_as_it_is_then() -> None:
    # The master's own code may change its state between two starts: each
    # start from it forks a fresh copy, never a spare forked before the change.
    pids: list[netmcore.ProcessId[int]] = []

    def first() -> netmcore.ProcessId[int]:
        pids.append(read_master_state.start(0))
        MASTER_STATE["x"] = 1
        pids.append(read_master_state.start(0))
        return pids[-1]

    try:
        seen = netmcore.run(
            first_process=first,
            extract_result=lambda _c, _p: [read_master_state.join_nowait(p) for p in pids],
        )
    finally:
        MASTER_STATE["x"] = 0
    assert seen == [0, 1]


@pytest.mark.parametrize("make", [netmcore.ProcessId, netmcore.ResId])
@pytest.mark.parametrize("bad", ["1", 1.0, True, None])
def test_an_id_of_anything_but_an_int_is_a_type_error_at_once(make: type, bad: object) -> None:
    # Unchecked, it reached the master as a message it could not read, and
    # a join with it waited for ever.
    expected = rf"{make.__name__}\(n\) needs an int, not {type(bad).__name__}"
    with pytest.raises(TypeError, match=expected):
        make(bad)


@pytest.mark.parametrize("make", [netmcore.ProcessId, netmcore.ResId])
def test_an_id_beyond_64_bits_is_a_value_error_at_once(make: type) -> None:
    # It could not travel: join, kill or inherit_resources with it failed
    # with msgspec's bare OverflowError.
    with pytest.raises(ValueError, match=rf"{make.__name__}\(2\*\*70\)|ids are 64-bit ints"):
        make(2**70)
    assert make(2**63 - 1).n == 2**63 - 1


@pytest.mark.timeout(30)
def test_a_process_joining_itself_raises_and_its_result_stays() -> None:
    kind, message = run_scenario(join_self, 0)  # its result, joined in extract_result
    assert kind == "netmcore.ContextError"
    assert re.fullmatch(r"process \d+ cannot join itself: .*", message), message


@pytest.mark.timeout(30)
def test_a_thread_left_waiting_by_a_returned_process_does_not_take_the_result(
    gate: tuple[int, int],
) -> None:
    # The returned process waits to be let exit, its thread still in join:
    # the result goes to a live joiner instead.
    assert run_scenario(join_what_a_returned_process_waited_for, gate) == ["none", "'g'"]


@pytest.mark.timeout(30)
def test_releasing_a_join_point_answers_the_joins_waiting_on_it(gate: tuple[int, int]) -> None:
    kind, message = run_scenario(release_while_a_thread_joins, gate)
    assert kind == "netmcore.NoResource"
    assert "join point of test_core.released_while_waited was released while this join waited" in (
        message
    )


def test_a_huge_exception_text_comes_back_clipped() -> None:
    # Whole, it did not fit one message to the master: the worker died with
    # a bogus "master is gone", and the outcome was a crash.
    n = 300_000
    outcome = netmcore.run(
        first_process=lambda: raise_huge.start(n),
        extract_result=lambda _c, pid: raise_huge.join_outcome_nowait(pid),
    )
    assert isinstance(outcome, netmcore.Raised), outcome
    assert outcome.type_name == "ValueError"
    assert outcome.message.startswith("<xxx") and outcome.message.endswith("xxx>")
    cut = n + 2 - _worker.TEXT_MAX
    assert f"\n[... {cut:,} characters cut ...]\n" in outcome.message
    assert outcome.traceback.startswith("Traceback (most recent call last):")
    assert outcome.traceback.endswith("xxx>\n")


@pytest.mark.parametrize("origin", ["master", "worker"])
def test_arguments_of_crashed_processes_are_freed_when_they_end(origin: str) -> None:
    # Not only by the sweep at the end of the run (startup() may run for long).
    prefix = f"nmc.{os.getpid()}."
    size = 1 << 20

    def first() -> netmcore.ProcessId[int]:
        if origin == "worker":
            return start_crashers.start(size)
        for _ in range(3):
            crash_with.start(b"z" * size)
        return crash_with.start(b"z")

    left = netmcore.run(
        first_process=first,
        # Every worker has ended by now: run waits for them.
        extract_result=lambda _c, _p: [e for e in os.listdir("/dev/shm") if e.startswith(prefix)],
    )
    assert left == []


# --------------------------------------------------------------------------
# 21. Advice that works, and a Ctrl-C that is not an exception
# --------------------------------------------------------------------------


def test_join_outside_run_advises_a_worker_not_first_process() -> None:
    # join blocks, so it cannot be called in first_process (the master never
    # blocks): the advice names a worker, and join_nowait for the master.
    with pytest.raises(netmcore.ContextError) as info:
        square.join(netmcore.ProcessId(1))
    assert str(info.value) == (
        "netmcore.join() was called outside netmcore.run()/startup(): call it from inside "
        "a worker process (in the master, use join_nowait())"
    )


def test_a_keyboard_interrupt_in_a_worker_is_not_logged_as_its_exception(tmp_path: Path) -> None:
    # A Ctrl-C reaches every process of the group and the master reports it; a
    # worker's function interrupted by it (here, raising it itself, as the
    # signal handler would) is not "raised an exception": the worker dies of
    # SIGINT, as an interrupted program does, and its outcome says so.
    result = run_script(
        tmp_path,
        """
        import netmcore

        @netmcore.process
        def interrupted(_: int) -> int:
            raise KeyboardInterrupt

        print(repr(netmcore.run(
            first_process=lambda: interrupted.start(0),
            extract_result=lambda _c, pid: interrupted.join_outcome_nowait(pid),
        )))
        """,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"Crashed(exitcode=None, signal={int(signal.SIGINT)})\n"
    assert "raised an exception" not in result.stderr
    assert "Traceback" not in result.stderr, result.stderr


# --------------------------------------------------------------------------
# Resources that went with the worker that used them last
# --------------------------------------------------------------------------


@netmcore.process
def make_and_end(how: str) -> tuple[int, int]:
    """Make a resource, and end: it goes with this process, its last user."""
    if how == "preallocated":
        res_id, _name = netmcore.create_preallocated_shm("/nmc-test", 8)
    else:
        segment = netmcore.create_shm(8)
        res_id = segment.res_id
        if how == "released":
            segment.release()  # gone before this process ends
    return res_id.n, netmcore.self_process_id().n


@netmcore.process
def nothing(_: int) -> int:
    return 0


@netmcore.process
def gone_with_its_last_user(_: int) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for how, use in (
        ("shm", lambda res: netmcore.open_shm(res)),
        ("preallocated", lambda res: nothing.start(0, inherit_resources=[res])),
        ("released", lambda res: netmcore.open_shm(res)),
    ):
        res_id, maker = joined(make_and_end, make_and_end.start(how))
        out[how] = [res_id, maker, outcome_text(lambda: use(netmcore.ResId(res_id)))]  # noqa: B023
    return out


def test_a_resource_gone_with_the_worker_that_used_it_last_names_hand_over() -> None:
    """A worker's resources are destroyed when it ends, unless it hands them
    over: getting one afterwards said only "no such resource, or it has been
    destroyed". It now says why, and names hand_over; a resource released
    before its user ended still gets the plain message."""
    out = run_scenario(gone_with_its_last_user, 0)

    def ended(res_id: int, maker: int) -> str:
        return (
            f"it was destroyed when process {maker}, its last user, ended: a worker's "
            "resources are destroyed when it ends, unless it hands them over. Call "
            f"netmcore.hand_over(ResId({res_id})) in process {maker} before it ends, and the "
            "resource lives on until another process gets it; or, for a resource several "
            "processes use in turn, keep it in use (open it) in a process that outlives them, "
            "such as the one that passes its id on"
        )

    res_id, maker, text = out["shm"]
    assert text == f"NoResource: no resource ResId({res_id}): {ended(res_id, maker)}"
    res_id, maker, text = out["preallocated"]
    assert text == (
        f"NoResource: no resource ResId({res_id}): inherit_resources names it, starting "
        f"{nothing.__module__}.nothing, and {ended(res_id, maker)}"
    )
    res_id, _maker, text = out["released"]
    assert text == (
        f"NoResource: no resource ResId({res_id}): no such resource, or it has been destroyed"
    )


@netmcore.process
def make_and_fail(how_fd: tuple[str, int]) -> int:
    """Make a resource, write its id to the pipe, and fail: raise, or be
    killed. It goes with this process, its last user."""
    how, fd = how_fd
    os.write(fd, netmcore.create_shm(8).res_id.n.to_bytes(8, "little"))
    if how == "killed":
        os.kill(os.getpid(), signal.SIGKILL)
    if how == "killed on request":
        signal.pause()  # until its caller's netmcore.kill
    raise KeyError("the work broke")


@netmcore.process
def gone_with_a_failed_user(fds: tuple[int, int]) -> dict[str, list[Any]]:
    r, w = fds
    out: dict[str, list[Any]] = {}
    for how in ("raised", "killed", "killed on request"):
        pid = make_and_fail.start((how, w))
        res_id = int.from_bytes(os.read(r, 8), "little")
        if how == "killed on request":
            netmcore.kill(pid)
        make_and_fail.join_outcome(pid)
        text = outcome_text(lambda: netmcore.open_shm(netmcore.ResId(res_id)))  # noqa: B023
        out[how] = [res_id, pid.n, text]
    return out


def test_a_resource_gone_with_a_failed_user_names_that_failure(
    pipes: Callable[[], tuple[int, int]],
) -> None:
    """A get after the worker that used a resource last failed follows from
    that failure (a map's items opening their driver's array, after the
    driver raised, advised hand_over beside the driver's real error): the
    error says how it failed, and where to look."""
    out = run_scenario(gone_with_a_failed_user, pipes())
    for how, failure in (
        ("raised", "raised KeyError"),
        ("killed", "ended without a result (killed by signal SIGKILL)"),
        (
            "killed on request",
            "was killed (SIGKILL) on request: netmcore.kill, a map's timeout, or python -m "
            "netmcore kill",
        ),
    ):
        res_id, maker, text = out[how]
        # Its own error to look at, where it has one.
        see = f"see process {maker}'s own error first; " if how == "raised" else ""
        assert text == (
            f"NoResource: no resource ResId({res_id}): it was destroyed when process {maker}, "
            f"its last user, ended: it {failure}, and a worker's resources go when it ends, "
            f"however it ends. This follows from that end: {see}to outlive it, keep the "
            "resource in use (open it) in a process that outlives it"
        )


@netmcore.process
def hand_over_and_end(_: int) -> int:
    """Make a resource and hand it over, as a worker that returns it does."""
    res_id = netmcore.create_shm(8).res_id
    netmcore.hand_over(res_id)
    return res_id.n


@netmcore.process
def open_and_end(res_id: int) -> int:
    netmcore.open_shm(netmcore.ResId(res_id))
    return netmcore.self_process_id().n


@netmcore.process
def passed_on_unopened(_: int) -> list[Any]:
    """A joiner that passes a handed-over id on without getting it first:
    the first process to get it takes it over, and it goes with that one;
    the next one's get says so, and what to do."""
    giver = hand_over_and_end.start(0)
    res_id = joined(hand_over_and_end, giver)
    taker = joined(open_and_end, open_and_end.start(res_id))
    second = open_and_end.join_outcome(open_and_end.start(res_id))
    assert isinstance(second, netmcore.Raised)
    return [res_id, giver.n, taker, second.message]


def test_a_handed_over_resource_gone_with_its_taker_says_to_get_it_first() -> None:
    res_id, giver, taker, message = run_scenario(passed_on_unopened, 0)
    assert message == (
        f"no resource ResId({res_id}): it was destroyed when process {taker}, its last user, "
        f"ended. Process {giver} had handed it over, and process {taker} took it over as the "
        "first process to get it after: a handed-over resource taken over goes once the "
        "processes that got it have ended. For several processes to use it in turn, get it "
        "(open it) first in the process that passes its id on: that one then keeps it for "
        "them all"
    )
