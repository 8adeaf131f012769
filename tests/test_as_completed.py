"""ProcessDef.as_completed, netmcore.as_completed and ProcessDef.map: what
concurrent.futures' as_completed and Executor.map give, over processes.

as_completed yields each process once it has ended, first ended first, and
joins nothing (netmcore.as_completed over processes of several types); map
runs a window of processes and yields their results in order, each error
where its result would have been.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest
from interrupting import at_every_point, through_another_thread
from scenario import (
    SYSCALLS,
    WAIT,
    in_master,
    run_counting_unjoined,
    run_scenario,
    sigusr1_raises,
    wait_until,
    wait_until_main_thread_blocks,
)

import netmcore
from netmcore import _client, _master, _wire
from netmcore._master import Conn
from netmcore._wire import Failed, KillReq


@netmcore.process
def ac_gated(gate_r: int) -> str:
    """Block until one byte can be read from the gate, then return it."""
    return os.read(gate_r, 1).decode()


@netmcore.process
def ac_square(k: int) -> int:
    if k < 0:
        raise ValueError(f"no square of a negative here: {k}")
    if k == 1000:
        os._exit(3)
    return k * k


class Tick(Exception):
    """What the test's signal handler raises."""


def _error_text(call: Any) -> str:
    try:
        call()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return "no error"


# --- as_completed ------------------------------------------------------------


def test_as_completed_yields_each_process_once_as_it_ends(gate: tuple[int, int]) -> None:
    count, same, values = run_scenario(ac_two_steps, gate)
    assert count == 2 and same
    assert values == ["a", "b"]


@netmcore.process
def ac_two_steps(gate: tuple[int, int]) -> list[Any]:
    """Neither process has ended at the call; the first yielded is the one
    the first byte let end, and the second comes only once a second byte
    lets it end: each waited for, in the order they end."""
    gate_r, gate_w = gate
    first, second = ac_gated.start(gate_r), ac_gated.start(gate_r)
    seen: list[Any] = []
    it = ac_gated.as_completed([second, first, second])  # a repeat is yielded once
    os.write(gate_w, b"a")
    seen.append(next(it))
    got = [ac_gated.result(seen[0], timeout=0)]  # it has ended: a try is enough
    os.write(gate_w, b"b")
    seen.extend(it)
    got.append(ac_gated.result(seen[1], timeout=0))
    return [len(seen), set(seen) == {first, second}, got]


@netmcore.process
def ac_many(n: int) -> list[Any]:
    """Many processes, chunked into several waits (PIDS_MAX made small),
    failures among them: each comes once, and joins as it should."""
    _wire.PIDS_MAX = 3
    pids = [ac_square.start(k) for k in range(n)] + [ac_square.start(-1), ac_square.start(1000)]
    results: dict[int, Any] = {}
    for pid in ac_square.as_completed(pids):
        outcome = ac_square.join_outcome(pid, timeout=0)
        ok = isinstance(outcome, netmcore.Success)
        results[pid.n] = outcome.value if ok else type(outcome).__name__
    return [results[pid.n] for pid in pids]


def test_as_completed_over_many_processes_chunked_and_failing() -> None:
    got = run_scenario(ac_many, 20)
    assert got == [k * k for k in range(20)] + ["Raised", "Crashed"]


@netmcore.process
def ac_timeout(gate: tuple[int, int]) -> list[str]:
    gate_r, gate_w = gate
    pids = [ac_gated.start(gate_r) for _ in range(12)]
    t0 = time.monotonic()
    text = _error_text(lambda: list(ac_gated.as_completed(pids, timeout=0.05)))
    waited = time.monotonic() - t0 >= 0.05
    tried = _error_text(lambda: next(ac_gated.as_completed(pids, timeout=0)))
    os.write(gate_w, b"x" * len(pids))
    # Not used up: each joins now.
    return [text, str(waited), tried, "".join(ac_gated.result(pid) for pid in pids)]


def test_as_completed_past_its_timeout_raises_and_joins_nothing(gate: tuple[int, int]) -> None:
    text, waited, tried, joined = run_scenario(ac_timeout, gate)
    assert text.startswith("TimeoutError: as_completed timed out after 0.05 s: 12 of its 12")
    assert ", ... (2 more)" in text and "None of them is joined" in text
    assert waited == "True"
    assert tried.startswith("TimeoutError: as_completed timed out after 0 s")
    assert joined == "x" * 12


@netmcore.process
def ac_bad_ids(_: int) -> list[str]:
    square = ac_square.start(2)
    gated_pid = netmcore.ProcessId[str](square.n)  # a pid of another type, as if
    joined = ac_square.start(3)
    ac_square.join(joined)
    calls: list[Any] = [
        lambda: ac_square.as_completed([square, netmcore.ProcessId(10**6)]),
        lambda: ac_gated.as_completed([gated_pid]),
        lambda: ac_square.as_completed([square, joined]),
        lambda: ac_square.as_completed([square, 5]),  # type: ignore[list-item]
        lambda: ac_square.as_completed([square], timeout=-1),
        lambda: ac_square.as_completed([netmcore.self_process_id()]),
    ]
    texts = [_error_text(call) for call in calls]
    texts.append(str(ac_square.result(square)))  # none of the calls took it
    return texts


def test_as_completed_refuses_bad_ids_at_the_call() -> None:
    never, other, joined, not_an_id, negative, itself, value = run_scenario(ac_bad_ids, 0)
    assert never.startswith("UnknownProcess: process 1000000 was never started")
    assert (
        other.startswith("WrongJoinPoint: process") and "not a test_as_completed.ac_gated" in other
    )
    assert joined.startswith("UnknownProcess:") and "joined already" in joined
    assert not_an_id.startswith("TypeError: as_completed takes the ProcessIds")
    assert negative.startswith("ValueError: timeout")
    assert itself.startswith("ContextError:") and "its own end" in itself
    assert value == "4"


@netmcore.process
def ac_joined_meanwhile(gate: tuple[int, int]) -> list[Any]:
    """Another thread joins the process while as_completed waits for it:
    it has ended for the wait too, and its join here says who took it."""
    gate_r, gate_w = gate
    pid = ac_gated.start(gate_r)
    it = ac_gated.as_completed([pid])
    taken: list[str] = []
    joiner = threading.Thread(target=lambda: taken.append(ac_gated.result(pid)))
    joiner.start()
    os.write(gate_w, b"j")
    yielded = next(it)
    joiner.join()
    return [yielded == pid, taken, _error_text(lambda: ac_gated.result(pid))]


def test_a_process_joined_by_another_thread_counts_as_ended(gate: tuple[int, int]) -> None:
    same, taken, again = run_scenario(ac_joined_meanwhile, gate)
    assert same is True and taken == ["j"]
    assert again.startswith("UnknownProcess:") and "joined already" in again


@netmcore.process
def ac_interrupted(gate: tuple[int, int]) -> list[str]:
    """A signal handler's exception as as_completed waits: the wait is
    withdrawn, and the link answers the calls after it rightly."""
    gate_r, gate_w = gate
    pid = ac_gated.start(gate_r)
    recvfrom = SYSCALLS["recvfrom"] if SYSCALLS else -1
    main = threading.get_ident()

    def interrupt_once_it_waits() -> None:
        wait_until_main_thread_blocks(lambda call: call[0] == recvfrom)
        signal.pthread_kill(main, signal.SIGUSR1)

    interrupter = threading.Thread(target=interrupt_once_it_waits)
    seen = []
    with sigusr1_raises(Tick):
        interrupter.start()
        seen.append(_error_text(lambda: next(ac_gated.as_completed([pid]))))
        interrupter.join()
    other = ac_square.start(9)
    seen.append(str(ac_square.result(other)))  # its reply is its own, no stale one
    os.write(gate_w, b"i")
    seen.append(str(next(ac_gated.as_completed([pid])) == pid))
    seen.append(ac_gated.result(pid))
    return seen


@pytest.mark.skipif(SYSCALLS is None, reason="the system call numbers of this machine are unknown")
def test_an_interrupted_wait_is_withdrawn(gate: tuple[int, int]) -> None:
    assert run_scenario(ac_interrupted, gate) == ["Tick: ", "81", "True", "i"]


def test_a_withdrawn_or_orphaned_wait_leaves_nothing_in_the_master() -> None:
    """JoinCancel withdraws a waiting wait; a closed link drops its watches,
    and each process's list of the watches it is in loses them (kept, they
    grew with every as_completed over a process that ran on)."""

    def checks() -> list[str]:
        master = netmcore._context.current.master
        assert master is not None
        pid = ac_square.start(3)
        conn = Conn.__new__(Conn)  # a waiter's link: only its identity counts
        conn.closed, conn.fd, conn.sock = False, -1, _ClosedSock()
        master.watches.add(
            (conn, 1), master._watch_of((conn, 1), ac_square.join_point.n, fork=False), pid.n, False
        )
        master.watches.wait((conn, 1), master.watches.by_key[(conn, 1)], 10)
        master._cancel_join(conn, 10, -1)  # a wait's: no process
        seen = [str(master.watches.waiting), str(master.watches.by_key[(conn, 1)].waiter)]
        master._unwatch = lambda fd: None  # type: ignore[method-assign]
        master._close_conn(conn)
        del master._unwatch
        watches = master.watches
        seen += [str(watches.by_key), str(watches.of_link), str(watches.of_process)]
        return seen

    assert in_master(checks) == ["{}", "None", "{}", "{}", "{}"]


class _ClosedSock:
    def close(self) -> None:
        pass


def test_as_completed_and_map_refuse_the_master() -> None:
    def checks() -> list[str]:
        pid = ac_square.start(4)
        return [
            _error_text(lambda: ac_square.as_completed([pid])),
            _error_text(
                lambda: ac_square.as_completed([])
            ),  # at the call, with nothing to wait for
            _error_text(lambda: ac_square.map([1])),
            _error_text(lambda: netmcore.as_completed([pid, netmcore.ProcessId[str](pid.n)])),
            _error_text(lambda: netmcore.as_completed([])),
        ]

    texts = in_master(checks)
    assert len(texts) == 5
    for text in texts:
        assert text.startswith("ContextError:") and "the master never waits" in text
        assert "join_nowait()" in text


def test_as_completed_and_map_outside_run_say_where_to_call_them() -> None:
    pid = netmcore.ProcessId[int](0)
    calls = {  # each names the call as it was written
        "ac_square.as_completed()": lambda: ac_square.as_completed([pid]),
        "ac_square.map()": lambda: ac_square.map([1]),
        "netmcore.as_completed()": lambda: netmcore.as_completed([pid]),
    }
    for name, call in calls.items():
        text = _error_text(call)
        assert text.startswith(f"ContextError: {name} was called outside netmcore.run()"), text


# --- netmcore.as_completed: processes of any types ---------------------------


@netmcore.process
def ac_text(k: int) -> str:
    if k < 0:
        raise ValueError(f"no text of a negative here: {k}")
    return str(k)


@netmcore.process
def any_in_end_order(gates: list[tuple[int, int]]) -> list[Any]:
    """Processes of two types, none ended at the call, let end one at a
    time in an order of their own (neither the list's nor the starts'):
    each is yielded as it ends, once (an id given twice, as another
    object, is yielded once, as the first), as the object given, and joins
    through its own type."""
    (r0, w0), (r1, w1), (r2, w2) = gates
    a, b, c = ac_gated.start(r0), ac_gated_echo.start((r1, 7)), ac_gated.start(r2)
    it = netmcore.as_completed([a, b, c, netmcore.ProcessId[int](b.n), a])
    order = []
    for w, byte in ((w1, b"b"), (w2, b"c"), (w0, b"a")):
        os.write(w, byte)  # only that process can end now
        order.append(next(it))
    rest = list(it)
    return [
        [got is given for got, given in zip(order, [b, c, a], strict=True)],
        len(rest),
        ac_gated_echo.result(order[0], timeout=0),  # it has ended: a try is enough
        ac_gated.result(order[1], timeout=0),
        ac_gated.result(order[2], timeout=0),
    ]


def test_netmcore_as_completed_yields_processes_of_several_types_as_they_end(
    pipes: Any,
) -> None:
    assert run_scenario(any_in_end_order, [pipes() for _ in range(3)]) == [
        [True, True, True],
        0,
        7,
        "c",
        "a",
    ]


@netmcore.process
def any_many(n: int) -> list[Any]:
    """Processes of two types, failures among them, in several requests
    (PIDS_MAX made small): each comes once, and joins through its type."""
    _wire.PIDS_MAX = 3
    squares = [ac_square.start(k) for k in range(n)] + [ac_square.start(-1), ac_square.start(1000)]
    texts = [ac_text.start(k) for k in range(n)] + [ac_text.start(-1)]
    type_of: dict[int, Any] = {p.n: ac_square for p in squares} | {p.n: ac_text for p in texts}
    seen: list[int] = []
    results: dict[int, Any] = {}
    for pid in netmcore.as_completed(texts + squares):
        seen.append(pid.n)
        outcome = type_of[pid.n].join_outcome(pid, timeout=0)
        ok = isinstance(outcome, netmcore.Success)
        results[pid.n] = outcome.value if ok else type(outcome).__name__
    return [
        len(seen) == len(set(seen)) and set(seen) == set(type_of),
        [results[p.n] for p in squares],
        [results[p.n] for p in texts],
    ]


def test_netmcore_as_completed_over_many_processes_of_two_types() -> None:
    once, squares, texts = run_scenario(any_many, 10)
    assert once is True
    assert squares == [k * k for k in range(10)] + ["Raised", "Crashed"]
    assert texts == [str(k) for k in range(10)] + ["Raised"]


@netmcore.process
def any_timeout(gate: tuple[int, int]) -> list[Any]:
    """Past its timeout, the iteration raises; nothing is joined: each
    process joins through its own type afterwards."""
    gate_r, gate_w = gate
    pids: list[netmcore.ProcessId[Any]] = [ac_gated.start(gate_r), ac_gated_echo.start((gate_r, 5))]
    t0 = time.monotonic()
    text = _error_text(lambda: list(netmcore.as_completed(pids, timeout=0.05)))
    waited = time.monotonic() - t0 >= 0.05
    tried = _error_text(lambda: next(netmcore.as_completed(pids, timeout=0)))
    os.write(gate_w, b"xx")
    return [text, waited, tried, ac_gated.result(pids[0]), ac_gated_echo.result(pids[1])]


def test_netmcore_as_completed_past_its_timeout_raises_and_joins_nothing(
    gate: tuple[int, int],
) -> None:
    text, waited, tried, *joined = run_scenario(any_timeout, gate)
    assert text.startswith("TimeoutError: as_completed timed out after 0.05 s: 2 of its 2 ")
    assert "None of them is joined" in text
    assert waited is True
    assert tried.startswith("TimeoutError: as_completed timed out after 0 s")
    assert joined == ["x", 5]


@netmcore.process
def any_bad_ids(_: int) -> list[str]:
    """Each call is refused at once (no next()), and takes nothing: the
    good id given beside the bad one joins afterwards."""
    square, text = ac_square.start(2), ac_text.start(3)
    joined = ac_text.start(4)
    ac_text.join(joined)
    calls: list[Any] = [
        lambda: netmcore.as_completed([square, text, netmcore.ProcessId(10**6)]),
        lambda: netmcore.as_completed([square, text, joined]),
        lambda: netmcore.as_completed([square, text, 5]),
        lambda: netmcore.as_completed(square),
        lambda: netmcore.as_completed([square, text], timeout=-1),
        lambda: netmcore.as_completed([text, netmcore.self_process_id()]),
    ]
    texts = [_error_text(call) for call in calls]
    texts += [str(ac_square.result(square)), ac_text.result(text)]  # none of the calls took them
    return texts


def test_netmcore_as_completed_refuses_bad_ids_at_the_call() -> None:
    never, joined, not_an_id, not_iterable, negative, itself, *values = run_scenario(any_bad_ids, 0)
    assert never.startswith("UnknownProcess: process 1000000 was never started")
    assert joined.startswith("UnknownProcess:") and "joined already" in joined
    assert not_an_id == (
        "TypeError: as_completed takes the ProcessIds that start() returned, and 5 is a "
        "int: pass only ProcessIds (an id kept as its number n is ProcessId(n))"
    )
    assert not_iterable.startswith(
        "TypeError: as_completed takes an iterable of the ProcessIds that start() returned, "
        "and ProcessId("
    )
    assert not_iterable.endswith(
        ") is a ProcessId, not iterable: pass them in a list, as in as_completed([pid])"
    )
    assert negative.startswith("ValueError: timeout")
    assert itself.startswith("ContextError:") and "its own end" in itself
    assert values == ["4", "3"]


@netmcore.process
def ac_released_any(gate_r: int) -> str:
    """A type of its own: its join point is released (for the rest of the
    test session: the master's registry is this process's)."""
    return os.read(gate_r, 1).decode()


@netmcore.process
def ac_released_idle(gate_r: int) -> str:
    """As ac_released_any, released between a call and its first next()."""
    return os.read(gate_r, 1).decode()


@netmcore.process
def any_release_while_waiting(gates: tuple[tuple[int, int], tuple[int, int]]) -> list[Any]:
    """The join point of one of the types is released while the iteration
    waits: its process, still running, is yielded at once (nobody can join
    it: there is nothing to wait for, as a cancelled future is done), and
    the iteration goes on for the other type's. Its join says why; an id of
    it is refused at a later call; one released between a call and its
    first next() is yielded as ended too. (The timeouts bound a failure,
    which would wait for ever: none is reached.)"""
    (released_r, released_w), (other_r, other_w) = gates
    at_gate = {released_w: 0, other_w: 0}  # processes still waiting at each
    names: dict[int, str] = {}  # the id() of each ProcessId given -> its name

    def at(name: str, proc: Any, gate_r: int, gate_w: int) -> Any:
        at_gate[gate_w] += 1
        pid = proc.start(gate_r)
        names[id(pid)] = name
        return pid

    def let_one_end(gate_w: int) -> None:
        at_gate[gate_w] -= 1
        os.write(gate_w, b"g")

    def following(it: Iterator[Any]) -> str:
        """The name of the id that ``it`` yields next (the object given), or its error."""
        try:
            return names.get(id(pid := next(it)), repr(pid))
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}"

    try:
        a = at("a", ac_released_any, released_r, released_w)
        b = at("b", ac_gated, other_r, other_w)
        it = netmcore.as_completed([a, b], timeout=WAIT)
        seen: list[str] = []
        waiting = threading.Event()
        real_wait = _client.wait_watch

        def wait_watch(*args: Any) -> Any:
            waiting.set()  # its other requests are answered: the next one read is this
            return real_wait(*args)

        _client.wait_watch = wait_watch
        waiter = threading.Thread(target=lambda: seen.append(following(it)))
        waiter.start()
        waiting.wait()
        _until_a_thread_waits_for_a_reply()
        ac_released_any.release_join_point()
        waiter.join()
        _client.wait_watch = real_wait
        got: list[Any] = [seen, netmcore.kill(a, 0)]
        got.append(_error_text(lambda: ac_released_any.result(a)))
        c = at("c", ac_released_any, released_r, released_w)  # its fork point is still there
        got.append(_error_text(lambda: netmcore.as_completed([b, c])))
        let_one_end(other_w)
        got += [following(it), following(it), ac_gated.result(b, timeout=0)]
        # Released after the call, before the iteration watches: ended too.
        d = at("d", ac_released_idle, released_r, released_w)
        e = at("e", ac_gated, other_r, other_w)
        it = netmcore.as_completed([d, e], timeout=WAIT)
        ac_released_idle.release_join_point()
        got.append(following(it))
        let_one_end(other_w)
        got += [following(it), ac_gated.result(e)]
        return got
    finally:
        for gate_w, count in at_gate.items():  # (their results are dropped, or joined)
            os.write(gate_w, b"g" * count)


def test_a_released_join_point_counts_its_processes_as_ended_for_several_types(
    pipes: Any,
) -> None:
    got = run_scenario(any_release_while_waiting, (pipes(), pipes()))
    first, still_running, joined_a, refused_c, *rest = got
    assert first == ["a"], f"as the join point was released, the iteration gave {first}"
    assert still_running is True
    assert joined_a.startswith("NoResource:") and "not a join point" in joined_a
    assert refused_c.startswith("NoResource:")
    assert "is a test_as_completed.ac_released_any process, whose join point was released" in (
        refused_c
    )
    assert "Leave it out of the ids" in refused_c
    assert rest == ["b", "StopIteration: ", "g", "d", "e", "g"]


@netmcore.process
def ac_released_ends(k: int) -> int:
    return k


@netmcore.process
def released_and_ended(_: int) -> list[str]:
    pid = ac_released_ends.start(1)
    ac_released_ends.release_join_point()

    def forgotten() -> bool:  # ended: its result dropped, the master forgets it
        try:
            netmcore.kill(pid, 0)
        except netmcore.UnknownProcess:
            return True
        return False

    wait_until(forgotten, "the master to forget the process")
    return [
        _error_text(lambda: netmcore.as_completed([pid])),
        _error_text(lambda: netmcore.kill(pid, 0)),
    ]


def test_a_process_of_a_released_join_point_that_ended_is_not_said_never_started() -> None:
    """Before, both said "it was never started, or it has been joined
    already": neither was so."""
    waited, signalled = run_scenario(released_and_ended, 0)
    assert re.fullmatch(
        r"UnknownProcess: process \d+ is unknown: it has been joined already \(only the "
        r"first join of a process succeeds\), or it has ended with nobody to join it \(its "
        r"type's join point was released, or the map that started it was left\)",
        waited,
    ), waited
    assert re.match(
        r"UnknownProcess: cannot signal process \d+, which is unknown: it has been joined "
        r"already, or it has ended with nobody to join it \(its type's join point",
        signalled,
    ), signalled


# --- map ---------------------------------------------------------------------


@netmcore.process
def ac_gated_echo(job: tuple[int, int]) -> int:
    """Block until one byte can be read from the gate, then return ``k``."""
    gate_r, k = job
    os.read(gate_r, 1)
    return k


def _running(first: int, last: int) -> int:
    """How many of processes ``first`` to ``last - 1`` still run their
    function: kill(pid, 0) says False once it has finished, and raises
    UnknownProcess once it is joined."""
    count = 0
    for n in range(first, last):
        with contextlib.suppress(netmcore.UnknownProcess):  # joined: ended
            count += netmcore.kill(netmcore.ProcessId(n), 0)
    return count


@netmcore.process
def map_window(gate: tuple[int, int]) -> list[Any]:
    """map reads the next item once a slot is free: with ``processes=2``,
    each item after the first is read with exactly one process running.
    Each read lets one process end (one byte through the gate), and the end
    of the input lets the last one end."""
    gate_r, gate_w = gate
    first = netmcore.self_process_id().n + 1
    busy: list[int] = []

    def items() -> Iterator[tuple[int, int]]:
        for k in range(8):
            busy.append(_running(first, first + k))
            if k:
                os.write(gate_w, b"r")
            yield gate_r, k
        os.write(gate_w, b"e")

    return [list(ac_gated_echo.map(items(), processes=2)), busy]


def test_map_runs_a_bounded_window_and_yields_results_in_order(gate: tuple[int, int]) -> None:
    results, busy = run_scenario(map_window, gate)
    assert results == list(range(8))
    assert busy == [0, 1, 1, 1, 1, 1, 1, 1]


@netmcore.process
def map_slow_head(gates: tuple[tuple[int, int], tuple[int, int]]) -> list[int]:
    """The first item waits until the input has been read to its end: the
    others go through the second slot meanwhile. (A window that waited for
    the first result to start the third item would wait for ever.)"""
    (slow_r, slow_w), (open_r, open_w) = gates
    os.write(open_w, b"o" * 5)

    def items() -> Iterator[tuple[int, int]]:
        yield slow_r, 0
        for k in range(1, 6):
            yield open_r, k
        os.write(slow_w, b"s")

    return list(ac_gated_echo.map(items(), processes=2))


def test_map_keeps_its_slots_busy_behind_a_slow_item(pipes: Any) -> None:
    assert run_scenario(map_slow_head, (pipes(), pipes())) == list(range(6))


@netmcore.process
def map_errors(case_and_chunksize: tuple[str, int]) -> list[Any]:
    """An item's error comes where its result would have, after the results
    before it; and every process started is joined, none left behind."""
    case, chunksize = case_and_chunksize
    if case == "argument":
        args: Any = [1, 2, "three", 4]
    elif case == "process":
        args = [1, 2, -3, 4, 5]
    elif case == "crash":
        args = [1, 2, 1000, 4, 5]
    else:

        def failing() -> Iterator[int]:
            yield 1
            yield 2
            raise OSError("the input broke")

        args = failing()
    got: list[Any] = []
    try:
        for value in ac_square.map(args, processes=2, chunksize=chunksize):
            got.append(value)
    except Exception as exc:
        got.append(f"{type(exc).__name__}: {exc}")
    return got


@pytest.mark.parametrize("chunksize", [1, 3])
@pytest.mark.parametrize("case", ["argument", "process", "crash", "iterator"])
def test_map_raises_an_items_error_in_its_place_and_leaves_nothing(
    case: str, chunksize: int
) -> None:
    got, unjoined = run_counting_unjoined(map_errors, (case, chunksize))
    assert unjoined == []
    if case == "crash" and chunksize > 1:
        # The process of items 0-2 died in item 2: none of their results came.
        assert len(got) == 1 and "(ac_square, items 0-2 of the map) exited with code 3" in got[0]
        return
    assert got[:2] == [1, 4]
    assert len(got) == 3
    error = got[2]
    # Each named by its item's index in args, which the caller knows (it
    # never saw the process's id, nor called start).
    if case == "argument":
        assert error.startswith("ArgumentTypeError: item 2 of ac_square.map: "), error
    elif case == "process":
        assert (
            error.startswith("ProcessFailed: process ") and "no square of a negative here" in error
        )
        assert "(ac_square, item 2 of the map) raised ValueError" in error, error
    elif case == "crash":
        assert "(ac_square, item 2 of the map) exited with code 3" in error, error
    else:
        assert error == "OSError: the input broke"


@netmcore.process
def map_break(n: int) -> list[Any]:
    """Left early, map leaves no process of it for a join."""
    got = []
    for value in ac_square.map(range(n), processes=4):
        got.append(value)
        if len(got) == 2:
            break
    return got


def test_map_left_early_joins_what_it_started() -> None:
    assert run_counting_unjoined(map_break, 50) == ([0, 1], [])


@netmcore.process
def map_closed_while_others_run(gates: tuple[tuple[int, int], tuple[int, int]]) -> list[int]:
    """Closed with processes still running, map returns at once: they go on
    (here, they wait at their gate until after the close), and the master
    drops their results as they come."""
    (slow_r, slow_w), (fast_r, fast_w) = gates
    os.write(fast_w, b"f")
    it = ac_gated_echo.map([(fast_r, 0), (slow_r, 1), (slow_r, 2)], processes=3)
    got = [next(it)]
    it.close()  # a wait for the other two would wait for ever
    os.write(slow_w, b"ss")
    return got


def test_map_closed_early_does_not_wait_for_its_processes(pipes: Any) -> None:
    gates = (pipes(), pipes())
    assert run_counting_unjoined(map_closed_while_others_run, gates) == ([0], [])


@netmcore.process
def map_timed_out(gates: tuple[tuple[int, int], tuple[int, int]]) -> list[Any]:
    """A result not there ``timeout`` seconds after the first next() raises
    TimeoutError, as Executor.map's; the processes still running are killed
    (their gate is never opened: the run would wait for them for ever), and
    none is left to join."""
    (slow_r, _never_opened), (fast_r, fast_w) = gates
    os.write(fast_w, b"f")
    t0 = time.monotonic()
    it = ac_gated_echo.map([(fast_r, 0), (slow_r, 1), (slow_r, 2)], processes=3, timeout=0.05)
    got: list[Any] = [next(it)]
    got.append(_error_text(lambda: next(it)))
    got.append(time.monotonic() - t0 >= 0.05)
    got.append(_error_text(lambda: next(it)))  # ended: nothing more
    # A bad timeout is refused at the call, before anything starts.
    got += [_error_text(lambda b=bad: ac_square.map([1], timeout=b)) for bad in (-1, "1")]
    return got


@netmcore.process
def map_iterated_later(gate: tuple[int, int]) -> list[int]:
    """A map made, then iterated past its timeout: nothing has run yet,
    and its items have the whole timeout from the first next(), where they
    start (counted from the call, they timed out at once, and were killed)."""
    gate_r, gate_w = gate
    it = ac_gated_echo.map([(gate_r, 0), (gate_r, 1)], processes=2, timeout=1.0)
    time.sleep(1.2)  # the time between the call and the iteration, under test
    recvfrom = SYSCALLS["recvfrom"] if SYSCALLS else -1

    def open_once_it_waits() -> None:  # (its processes blocked on the gate until then)
        wait_until_main_thread_blocks(lambda call: call[0] == recvfrom)
        os.write(gate_w, b"ab")

    opener = threading.Thread(target=open_once_it_waits)
    opener.start()
    try:
        return list(it)
    finally:
        opener.join()


@pytest.mark.skipif(SYSCALLS is None, reason="the system call numbers of this machine are unknown")
def test_a_maps_timeout_counts_from_its_first_next(gate: tuple[int, int]) -> None:
    assert run_scenario(map_iterated_later, gate) == [0, 1]


def test_map_past_its_timeout_raises_and_leaves_nothing_to_join(pipes: Any) -> None:
    (first, timed_out, waited, after, negative, text), unjoined = run_counting_unjoined(
        map_timed_out, (pipes(), pipes())
    )
    assert first == 0
    # Named by its item, which the caller knows (not only by its process).
    assert timed_out.startswith(
        "TimeoutError: map timed out after 0.05 s: the result of item 1 (process "
    ), timed_out
    assert "its 2 process(es) still running were killed" in timed_out
    assert waited is True
    assert after.startswith("StopIteration")
    assert negative.startswith("ValueError: timeout -1 is not valid"), negative
    assert text.startswith("TypeError: timeout '1' is not valid"), text
    assert unjoined == []


@netmcore.process
def map_defaults(n: int) -> list[Any]:
    return [list(ac_square.map(range(n))), list(ac_square.map([]))]


def test_map_with_one_process_per_cpu_and_an_empty_input() -> None:
    assert run_scenario(map_defaults, 5) == [[0, 1, 4, 9, 16], []]


@netmcore.process
def ac_square_where(k: int) -> tuple[int, int]:
    """k's square, and the process that made it; item -1 raises."""
    if k < 0:
        raise ValueError(f"item {k} raised")
    return k * k, netmcore.self_process_id().n


@netmcore.process
def map_chunks(n: int) -> list[Any]:
    got = list(ac_square_where.map(range(n), processes=2, chunksize=5))
    return [[value for value, _ in got], len({where for _, where in got})]


def test_a_chunked_map_runs_chunksize_items_per_process_in_order() -> None:
    values, processes = run_scenario(map_chunks, 23)
    assert values == [k * k for k in range(23)]
    assert processes == 5  # 5 + 5 + 5 + 5 + 3


@netmcore.process
def ac_logged_square(item: tuple[int, int]) -> int:
    """Write k to the pipe, then square it (a negative raises)."""
    k, fd = item
    os.write(fd, f"{k},".encode())
    if k < 0:
        raise ValueError(f"no square of {k}")
    return k * k


@netmcore.process
def map_chunk_stops(pipe: tuple[int, int]) -> list[Any]:
    r, w = pipe
    got: list[Any] = []
    try:
        for value in ac_logged_square.map([(k, w) for k in (0, 1, -2, 3, 4)], chunksize=5):
            got.append(value)
    except netmcore.ProcessFailed as failed:
        outcome = failed.outcome
        assert isinstance(outcome, netmcore.Raised)
        got += [str(failed), outcome.type_name, outcome.message]
    os.set_blocking(r, False)  # the one process has ended: all it wrote is there
    got.append(os.read(r, 100).decode())
    return got


def test_an_item_that_fails_ends_its_chunk_and_is_named() -> None:
    """The items after it in its chunk are not run; its outcome is its own."""
    with_pipe = os.pipe()
    try:
        got = run_scenario(map_chunk_stops, with_pipe)
    finally:
        for fd in with_pipe:
            os.close(fd)
    assert got[:2] == [0, 1]
    assert "(ac_logged_square, item 2 of the map) raised ValueError: no square of -2" in got[2]
    assert got[3:] == ["ValueError", "no square of -2", "0,1,-2,"]


@netmcore.process
def ac_not_an_int(k: int) -> int:
    return k if k != 2 else "two"  # type: ignore[return-value]


@netmcore.process
def map_chunk_invalid(_: int) -> list[Any]:
    got: list[Any] = []
    try:
        for value in ac_not_an_int.map(range(5), chunksize=4):
            got.append(value)
    except netmcore.ProcessFailed as failed:
        got += [str(failed), type(failed.outcome).__name__]
    return got


def test_an_item_whose_result_is_invalid_fails_in_its_place() -> None:
    got = run_scenario(map_chunk_invalid, 0)
    assert got[:2] == [0, 1]
    assert (
        "(ac_not_an_int, item 2 of the map) invalid result at $: result of ac_not_an_int.run: "
        "'two' does not match int"
    ) in got[2], got
    assert got[3] == "InvalidResult"


class Refused(Exception):
    """A result's validator's own exception class."""


class Checked(msgspec.Struct):
    k: int

    def __post_init__(self) -> None:
        if self.k == 2:
            raise Refused(f"{self.k} is refused")


@netmcore.process
def ac_checked_or_exits(k: int) -> Checked:
    if k == 5:
        sys.exit(5)
    return Checked(k)


@netmcore.process
def map_chunk_fails_late(args: list[int]) -> list[Any]:
    got: list[Any] = []
    try:
        for value in ac_checked_or_exits.map(args, chunksize=4):
            got.append(value.k)
    except netmcore.ProcessFailed as failed:
        outcome = failed.outcome
        if isinstance(outcome, netmcore.Raised):
            got += [str(failed), outcome.type_name, outcome.message]
        else:
            got += [str(failed), repr(outcome)]
    return got


def test_an_items_result_refused_or_its_exit_fails_that_item_not_its_chunk() -> None:
    """Before, a validator's own exception as the result was checked, or a
    sys.exit in an item, ended the chunk's process: the results before it
    were lost, and the chunk's first item was named."""
    refused = run_scenario(map_chunk_fails_late, [0, 1, 2, 3])
    assert refused[:2] == [0, 1]
    assert "(ac_checked_or_exits, item 2 of the map) raised " in refused[2], refused
    assert refused[3].endswith("Refused") and refused[4] == "2 is refused"
    exited = run_scenario(map_chunk_fails_late, [3, 4, 5, 6])
    assert exited[:2] == [3, 4]
    assert "(ac_checked_or_exits, item 2 of the map) exited with code 5" in exited[2], exited
    assert exited[3] == repr(netmcore.Crashed(5, None))


def _times_out(_signum: int, _frame: object) -> None:
    raise TimeoutError("the item's timer")


@netmcore.process
def ac_leaves_a_timer(k: int) -> int:
    """Item 1 leaves a signal that comes between it and the next item (as a
    timer of its own that fires once it has returned)."""
    if k == 1:

        def at_the_next_item(frame: Any, event: str, _arg: object) -> None:
            if event == "call" and frame.f_code.co_name == "_item_end":
                sys.setprofile(None)
                signal.raise_signal(signal.SIGUSR1)  # raises as the next item's run begins

        signal.signal(signal.SIGUSR1, _times_out)
        sys.setprofile(at_the_next_item)
    return k


@netmcore.process
def map_chunk_interrupted_between_items(_: int) -> list[Any]:
    got: list[Any] = []
    try:
        for value in ac_leaves_a_timer.map(range(4), chunksize=4):
            got.append(value)
    except netmcore.ProcessFailed as failed:
        got.append(str(failed))
    return got


def test_an_exception_between_two_items_fails_the_next_not_the_chunk() -> None:
    """Before, it failed the chunk's process: no result of it came, and its
    first item was named."""
    got = run_scenario(map_chunk_interrupted_between_items, 0)
    assert got[:2] == [0, 1]
    assert "(ac_leaves_a_timer, item 2 of the map) raised TimeoutError: the item's timer" in got[2]


@netmcore.process
def ac_inner(k: int) -> int:
    if k == 3:
        raise ValueError("inner item 3 fails")
    return k


@netmcore.process
def map_of_a_map(chunksize: int) -> str:
    try:
        list(ac_square.map(ac_inner.map(range(6)), chunksize=chunksize))
    except netmcore.ProcessFailed as failed:
        return str(failed)
    return "no error"


@pytest.mark.parametrize("chunksize", [1, 2])
def test_a_process_failed_that_args_raises_goes_on_as_it_came(chunksize: int) -> None:
    """Before, a chunked map took it for one of its own chunks' deaths, and
    renamed it after its own item."""
    assert "(ac_inner, item 3 of the map) raised ValueError" in run_scenario(
        map_of_a_map, chunksize
    )


@netmcore.process
def ac_forks_once(item: tuple[int, int]) -> int:
    k, fd = item
    os.write(fd, f"{k}:{os.getpid()},".encode())
    if k == 1 and os.fork() == 0:
        return k  # the forked child returns from run: the worker ends it there
    return k


@netmcore.process
def ac_child_exits(k: int) -> int:
    """Item 1 forks a child that exits with code 3, and returns how it ended."""
    if k != 1:
        return k
    pid = os.fork()
    if pid == 0:
        sys.exit(3)  # the child: it ends with that code, as with one item a process
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


@netmcore.process
def map_chunk_child_exits(_: int) -> list[int]:
    return list(ac_child_exits.map(range(3), chunksize=3))


def test_a_child_an_item_forks_exits_with_its_own_code() -> None:
    """Before, the chunk took its sys.exit for the item's, and the child
    went on to the worker's end: it exited 0."""
    assert run_scenario(map_chunk_child_exits, 0) == [0, 3, 2]


@netmcore.process
def map_chunk_with_a_fork(pipe: tuple[int, int]) -> list[Any]:
    r, w = pipe
    got = list(ac_forks_once.map([(k, w) for k in range(4)], chunksize=4))
    os.set_blocking(r, False)
    written = os.read(r, 1000).decode().rstrip(",").split(",")
    return [got, sorted(int(entry.split(":")[0]) for entry in written)]


def test_a_forked_child_that_returns_from_an_item_runs_no_more_of_the_chunk() -> None:
    """Before, it ran the rest of the chunk again (items 2 and 3 twice)."""
    pipe = os.pipe()
    try:
        got, items = run_scenario(map_chunk_with_a_fork, pipe)
    finally:
        for fd in pipe:
            os.close(fd)
    assert got == [0, 1, 2, 3]
    assert items == [0, 1, 2, 3]


@netmcore.process
def map_bad_chunksizes(_: int) -> list[str]:
    bads: list[Any] = [0, -1, True, 2.5, "2"]
    return [_error_text(lambda b=bad: ac_square.map([1], chunksize=b)) for bad in bads]


def test_map_refuses_a_bad_chunksize_at_the_call() -> None:
    texts = run_scenario(map_bad_chunksizes, 0)
    for text, bad, kind in zip(
        texts,
        ("0", "-1", "True", "2.5", "'2'"),
        ("ValueError", "ValueError", "TypeError", "TypeError", "TypeError"),
        strict=True,
    ):
        assert text.startswith(f"{kind}: chunksize={bad} is not valid"), text
        assert "an int of 1 or more" in text


@netmcore.process
def map_bad_processes(_: int) -> list[str]:
    bads: list[Any] = [0, -1, True, 2.5, "2", None.__class__]
    texts = [_error_text(lambda b=bad: ac_square.map([1], processes=b)) for bad in bads]
    texts.append(_error_text(lambda: ac_square.map(5)))  # type: ignore[arg-type]
    return texts


def test_map_refuses_a_bad_window_at_the_call() -> None:
    *texts, not_iterable = run_scenario(map_bad_processes, 0)
    # A value below 1 is a ValueError; another type a TypeError, as
    # Pipeline's workers= (a float, a str: ValueError before).
    for text, bad, kind in zip(
        texts,
        ("0", "-1", "True", "2.5", "'2'", "<class 'NoneType'>"),
        ("ValueError", "ValueError", "TypeError", "TypeError", "TypeError", "TypeError"),
        strict=True,
    ):
        assert text.startswith(f"{kind}: processes={bad} is not valid"), text
        assert "an int of 1 or more" in text
        if kind == "TypeError":
            assert "it must be an int, not " in text, text
    assert not_iterable.startswith("TypeError:") and "not iterable" in not_iterable


# --- a watch: beyond one request's ids, a released join point ------------------


@netmcore.process
def ac_beyond_one_request(gates: list[tuple[int, int]]) -> list[Any]:
    """More ids than one request names (PIDS_MAX made small): the last
    process is the only one let end, and is yielded; they are all watched."""
    _wire.PIDS_MAX = 2
    pids = [ac_gated.start(r) for r, _ in gates]
    it = ac_gated.as_completed(pids)
    os.write(gates[-1][1], b"z")
    first = next(it)
    for _, w in gates[:-1]:
        os.write(w, b"a")
    rest = list(it)
    return [first == pids[-1], sorted(p.n for p in rest) == sorted(p.n for p in pids[:-1])]


def test_as_completed_watches_more_ids_than_one_request_names(pipes: Any) -> None:
    assert run_scenario(ac_beyond_one_request, [pipes() for _ in range(5)]) == [True, True]


@netmcore.process
def ac_more_ended_than_one_answer_names(gates: list[tuple[int, int]]) -> list[Any]:
    """The first process is let end and yielded; then the others end, all
    of them, before the next wait: more than one answer names (PIDS_MAX made
    small in the master). Each comes once."""
    pids = [ac_gated.start(r) for r, _ in gates]
    it = ac_gated.as_completed(pids)
    os.write(gates[0][1], b"a")
    first = next(it)
    for _, w in gates[1:]:
        os.write(w, b"b")
    wait_until(lambda: not any(netmcore.kill(p, 0) for p in pids[1:]), "the others to end")
    rest = list(it)
    return [first == pids[0], sorted(p.n for p in rest) == sorted(p.n for p in pids[1:])]


def test_as_completed_takes_more_ended_processes_than_one_answer_names(
    pipes: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A watch's ended processes went out in one Ready, however many: past
    # about 40,000 ids, more than a message holds, and the wait failed.
    monkeypatch.setattr(_wire, "PIDS_MAX", 2)  # in the master, and the workers it forks
    sizes: list[int] = []
    real_send = Conn.send

    def send(conn: Conn, msg: Any) -> bool:
        if isinstance(msg, _wire.Ready):
            sizes.append(len(msg.pids))
        return real_send(conn, msg)

    monkeypatch.setattr(Conn, "send", send)
    assert run_scenario(ac_more_ended_than_one_answer_names, [pipes() for _ in range(7)]) == [
        True,
        True,
    ]
    assert sizes and max(sizes) <= 2, sizes


@netmcore.process
def ac_released_gated(gate_r: int) -> str:
    return os.read(gate_r, 1).decode()


@netmcore.process
def ac_release_while_waiting(gate: tuple[int, int]) -> list[str]:
    """The join point of the type is released while as_completed waits: it
    raises NoResource, as a waiting join does."""
    gate_r, gate_w = gate
    pid = ac_released_gated.start(gate_r)
    seen: list[str] = []
    waiting = threading.Event()
    real_wait = _client.wait_watch

    def wait_watch(*args: Any) -> Any:
        waiting.set()  # its other requests are answered: the next one read is this
        return real_wait(*args)

    _client.wait_watch = wait_watch
    waiter = threading.Thread(
        target=lambda: seen.append(_error_text(lambda: list(ac_released_gated.as_completed([pid]))))
    )
    waiter.start()
    waiting.wait()
    _until_a_thread_waits_for_a_reply()
    ac_released_gated.release_join_point()
    waiter.join()
    os.write(gate_w, b"r")
    return seen


def test_a_released_join_point_ends_a_waiting_as_completed(gate: tuple[int, int]) -> None:
    (text,) = run_scenario(ac_release_while_waiting, gate)
    assert text.startswith("NoResource:") and "was released" in text


# --- map through signal handlers' exceptions ------------------------------------


def _once(real: Any, exc: BaseException, when: Any = lambda *a: True) -> Any:
    """``real``, but raising ``exc`` the first time ``when`` accepts its arguments."""
    raised: list[bool] = []

    def call(*args: Any, **kwargs: Any) -> Any:
        if not raised and when(*args, **kwargs):
            raised.append(True)
            raise exc
        return real(*args, **kwargs)

    return call


@netmcore.process
def map_interrupted(point: str) -> list[Any]:
    """A handler's exception (here raised by a wrapped step) at ``point``:
    it reaches the caller, and no process map started is left to join, nor
    an outcome kept in this worker."""
    from netmcore import _wire

    tick = Tick(point)
    if point == "join":  # as a join of a result returns: its outcome is kept
        _client.handed_over = _once(_client.handed_over, tick)
        args: Any = range(6)
    elif point == "cleanup":  # as map's end asks the master to let go, after a break
        args = range(6)
        closing = _wire.Link.request
        is_close = lambda _link, msg, *a, **k: isinstance(msg, _wire.WaitReq) and msg.close  # noqa: E731
    else:  # "start": once the start is sent, before its answer is in
        real = _wire.Link.wait_reply
        _wire.Link.wait_reply = _once(real, tick)  # type: ignore[method-assign]
        args = range(6)
    got: list[Any] = []
    it = ac_square.map(args, processes=2)
    try:
        for value in it:
            got.append(value)
            if point == "cleanup":
                _wire.Link.request = _once(closing, tick, is_close)  # type: ignore[method-assign]
                break
        it.close()  # (closed as it is dropped, its exception would be unraisable)
    except Tick as exc:
        got.append(f"Tick {exc}")
    return [got, len(_client._interrupted)]


@pytest.mark.parametrize("point", ["start", "join", "cleanup"])
def test_map_through_a_handlers_exception_leaves_nothing(point: str) -> None:
    (got, kept), unjoined = run_counting_unjoined(map_interrupted, point)
    assert got[-1] == f"Tick {point}"
    assert unjoined == [] and kept == 0


# --- processes map let go of -----------------------------------------------------


def _until_a_thread_waits_for_a_reply() -> None:
    link = netmcore._context.current.link
    assert link is not None
    deadline = time.monotonic() + 10
    while link._reader is None:
        assert time.monotonic() < deadline, "the thread never sent its request"
        time.sleep(0.001)  # polling a condition, with a deadline


@netmcore.process
def map_forgets_what_a_thread_joins(gates: tuple[tuple[int, int], tuple[int, int]]) -> list[Any]:
    """A process map lets go of as it closes, while another thread joins it
    (by its id, which is sequential): the join gets its outcome."""
    (first_r, first_w), (rest_r, rest_w) = gates
    me = netmcore.self_process_id().n
    it = ac_gated_echo.map([(first_r, 0), (rest_r, 1), (rest_r, 2)], processes=3)
    os.write(first_w, b"f")
    got: list[Any] = [next(it)]
    joiner = threading.Thread(
        target=lambda: got.append(repr(ac_gated_echo.join_outcome(netmcore.ProcessId(me + 2))))
    )
    joiner.start()
    _until_a_thread_waits_for_a_reply()
    it.close()
    os.write(rest_w, b"rr")
    joiner.join()
    return got


def test_a_join_of_a_process_map_let_go_of_is_answered(pipes: Any) -> None:
    got, joined = run_scenario(map_forgets_what_a_thread_joins, (pipes(), pipes()))
    assert got == 0 and joined == "Success(value=1)"


@netmcore.process
def map_and_die(how: str) -> int:
    """Leave a map unclosed: end with it kept, or crash."""
    it = ac_square.map(range(10), processes=4)
    first = next(it)
    if how == "crash":
        os._exit(1)
    KEPT.append(it)  # never closed: the process ends with os._exit, no finalizer runs
    return first


KEPT: list[Any] = []


@netmcore.process
def map_driver_ends(how: str) -> str:
    return type(map_and_die.join_outcome(map_and_die.start(how))).__name__


@pytest.mark.parametrize("how", ["kept", "crash"])
def test_a_map_whose_process_ends_unclosed_leaves_nothing_to_join(how: str) -> None:
    outcome, unjoined = run_counting_unjoined(map_driver_ends, how)
    assert outcome == ("Success" if how == "kept" else "Crashed")
    assert unjoined == []


@netmcore.process
def ac_big(job: tuple[int, int]) -> bytes:
    gate_r, k = job
    os.read(gate_r, 1)
    return bytes([k]) * 150_000


@netmcore.process
def map_join_cut_short(gates: tuple[tuple[int, int], tuple[int, int]]) -> list[Any]:
    """A join of a large result cut short in map (an exception once its
    answer is in): map lets go of the kept outcome, and of its shared
    memory, which nothing here had mapped."""
    from netmcore import _payload, _wire

    (first_r, first_w), (rest_r, rest_w) = gates
    os.write(first_w, b"f")
    real = _wire.Link.request
    cut: list[bool] = []

    def request(link: Any, msg: Any, *args: Any, **kwargs: Any) -> Any:
        reply = real(link, msg, *args, **kwargs)
        if isinstance(msg, _wire.JoinReq) and not cut:
            cut.append(True)
            raise Tick("join")
        return reply

    _wire.Link.request = request  # type: ignore[method-assign]
    try:
        list(ac_big.map([(first_r, 0), (rest_r, 1)], processes=2))
    except Tick:
        pass
    finally:
        _wire.Link.request = real  # type: ignore[method-assign]
    prefix = netmcore._context.current.shm_prefix.lstrip("/")
    mapped = {r.name.lstrip("/") for r in _payload._received}
    left = [name for name in os.listdir("/dev/shm") if name.startswith(prefix)]
    os.write(rest_w, b"r")  # the other one ends: the master drops its result
    return [cut, len(_client._interrupted), sorted(set(left) - mapped)]


def test_a_join_cut_short_in_map_leaves_no_shared_memory(pipes: Any) -> None:
    cut, kept, unowned = run_scenario(map_join_cut_short, (pipes(), pipes()))
    assert cut == [True] and kept == 0 and unowned == []


# --- a storm of signal handlers' exceptions ------------------------------------

PROBE = 10**9  # a process id never started: the probe's KillReq (see below)
STORMING = [False]


def _tick(_signum: int, _frame: Any) -> None:
    if STORMING[0]:
        raise Tick("storm")


def _in_a_storm(body: Any) -> None:
    """Run ``body`` under a SIGALRM every 300 us, each raising Tick."""
    try:
        try:
            STORMING[0] = True
            signal.setitimer(signal.ITIMER_REAL, 0.0003, 0.0003)
            body()
        finally:
            STORMING[0] = False
    except Tick:
        pass
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0, 0)


@netmcore.process
def maps_in_a_storm(trials: int) -> Any:
    """Maps and as_completed loops cut short anywhere by handlers'
    exceptions: the master keeps no watch of them, and every process they
    started is joined or let go of."""
    signal.signal(signal.SIGALRM, _tick)
    for _ in range(trials):
        _in_a_storm(lambda: list(ac_square.map(range(8), processes=3)))
        pids = [ac_square.start(j) for j in range(3)]
        _in_a_storm(lambda p=pids: [ac_square.result(q) for q in ac_square.as_completed(p)])
        for pid in pids:  # (those the loop did not join)
            with contextlib.suppress(netmcore.UnknownProcess):
                ac_square.join_outcome(pid)
    # An iteration left suspended in a reference cycle (its traceback's) is
    # closed by the garbage collector, maybe as this thread reads the link:
    # its close is then sent with the next start, join or watch.
    gc.collect()
    assert list(ac_square.map([3])) == [9]
    return _probe()


def _probe() -> Any:
    """In a worker: what the master keeps now (see master_probe)."""
    try:
        netmcore.kill(netmcore.ProcessId(PROBE), 0)
    except netmcore.NetmcoreError as exc:
        return json.loads(str(exc))
    return "no probe"


@pytest.fixture
def master_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    """The master answers a kill of process PROBE with what it keeps: its
    watches, and the processes it holds for a join (of those it has not
    let go of), and the asker's own id."""
    real = _master.Master._dispatch

    def dispatch(master: _master.Master, conn: Conn, msg: Any) -> None:
        if isinstance(msg, KillReq) and msg.pid == PROBE:
            record = conn.child.record if conn.child is not None else None
            held = [n for n, r in master.records.items() if not (r.joined or r.dropped)]
            stats = {"watches": len(master.watches.by_key), "held": held, "me": record and record.n}
            conn.send(Failed("NetmcoreError", json.dumps(stats), req=msg.req))
            return
        real(master, conn, msg)

    monkeypatch.setattr(_master.Master, "_dispatch", dispatch)


def test_maps_cut_short_by_a_storm_leave_nothing_in_the_master(master_probe: None) -> None:
    stats = run_scenario(maps_in_a_storm, 100)
    assert stats["watches"] == 0, stats
    assert stats["held"] == [stats["me"]]


@netmcore.process
def map_closed_as_the_link_is_read(then: str) -> list[Any]:
    """A map closed while its thread reads the link (as the garbage
    collector may finalize it there): no request can be made then, and a
    try to send its close meanwhile keeps it. It goes with the next watch
    (``then`` "map"), or with the next start or join ("start", "join": a
    worker that goes on with those only kept the watch, and the map's
    processes' results, to its end)."""
    earlier = ac_square.start(3)  # (none queued yet: this start sends nothing more)
    it = ac_square.map(range(3), processes=1)
    next(it)
    link = netmcore._context.current.link
    assert link is not None
    link._reader = threading.get_ident()  # as in the read
    try:
        it.close()
        _client.send_unsent_closes()  # (still reading: kept for later)
    finally:
        link._reader = None
    kept = [_probe()["watches"], list(_client._unsent_closes)]
    if then == "map":
        assert list(ac_square.map([2])) == [4]
    elif then == "start":
        assert ac_square.result(ac_square.start(2)) == 4
    else:
        assert ac_square.result(earlier) == 9
    after = [_probe()["watches"], list(_client._unsent_closes)]
    if then != "join":
        assert ac_square.result(earlier) == 9
    return [*kept, *after]


@pytest.mark.parametrize("then", ["map", "start", "join"])
def test_a_close_that_cannot_be_sent_goes_with_the_next_watch_start_or_join(
    master_probe: None, then: str
) -> None:
    waiting, queued, after, left = run_scenario(map_closed_as_the_link_is_read, then)
    assert waiting == 1 and len(queued) == 1
    assert after == 0 and left == []


@netmcore.process
def any_interrupted_anywhere(how_and_gate: tuple[str, tuple[int, int]]) -> str | None:
    """A SIGINT at each point of an iteration over processes of two types,
    one ended and one running, that times out (timeout=0) once it has
    yielded the one and watched the other: it leaves no watch in the
    master, and joins neither. ``how``: raised in this thread (the close of
    the watch blocks it), or sent through another thread (it comes even so)."""
    how, (gate_r, gate_w) = how_and_gate
    running, ended = ac_gated.start(gate_r), ac_square.start(3)
    for _ in ac_square.as_completed([ended]):  # waits for its end, joins nothing
        pass

    def call() -> list[Any]:
        got: list[Any] = []
        try:
            for pid in netmcore.as_completed([running, ended], timeout=0):
                got.append(pid)
        except TimeoutError:
            got.append("timed out")
        return got

    def check(result: Any) -> list[str]:
        problems = []
        if result is not None and result != [ended, "timed out"]:
            problems.append(f"the whole call gave {result!r}")
        watches = _probe()["watches"]
        if watches:
            problems.append(f"the master keeps {watches} watch(es)")
        try:
            if not netmcore.kill(running, 0) or netmcore.kill(ended, 0):
                problems.append("a process ended, or ran on, unlike its gate")
        except netmcore.UnknownProcess as exc:
            problems.append(f"a process was joined: {exc}")
        return problems

    try:
        if how == "thread":
            with through_another_thread(signal.SIGINT) as send:
                return at_every_point(call, check, signal.SIGINT, send)
        return at_every_point(call, check)
    finally:
        os.write(gate_w, b"g")
        assert (ac_gated.result(running), ac_square.result(ended)) == ("g", 9)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("how", ["here", "thread"])
def test_netmcore_as_completed_interrupted_anywhere_leaves_nothing(
    master_probe: None, gate: tuple[int, int], how: str
) -> None:
    assert run_scenario(any_interrupted_anywhere, (how, gate)) is None
