"""Uses of netmcore's public API that mypy must accept, with the types it must infer.

Type-checked by ``tests/test_typing.py``; never imported or run. Each use is
pinned with ``assert_type``, so a wrong (or merely wider, or ``Any``) inferred
type fails the suite.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from typing import Annotated, Any, Literal, Optional, assert_never, assert_type

import msgspec
import numpy as np
import numpy.typing as npt
from pydantic import BaseModel

import netmcore


class Add(netmcore.ProcessDef[tuple[float, float], float]):
    def run(self, arg: tuple[float, float]) -> float:
        return arg[0] + arg[1]


@netmcore.process
def square(k: int) -> int:
    return k * k


class Point(netmcore.ProcessDef[list[int], dict[str, int]]):
    def run(self, arg: list[int]) -> dict[str, int]:
        return {"x": arg[0], "y": arg[1]}


class Member(BaseModel):
    name: str
    age: int = 0


class Welcome(netmcore.ProcessDef[Member, list[Member]]):
    def run(self, arg: Member) -> list[Member]:
        return [arg]


@netmcore.process
def oldest(members: list[Member] | None) -> Member | None:
    return max(members or [], key=lambda m: m.age, default=None)


def process_def_start_join() -> None:
    assert_type(square, type[netmcore.ProcessDef[int, int]])

    pid = Add.start((3.0, 4.0))
    assert_type(pid, netmcore.ProcessId[float])
    assert_type(pid.n, int)
    assert_type(Add.start((3, 4)), netmcore.ProcessId[float])  # int is accepted for float
    assert_type(Add.start((1.0, 2.0), inherit_resources="all"), netmcore.ProcessId[float])
    assert_type(
        Add.start((1.0, 2.0), inherit_resources=[Add.fork_point]), netmcore.ProcessId[float]
    )
    assert_type(Add.start((1.0, 2.0), inherit_resources=()), netmcore.ProcessId[float])
    assert_type(Add.join(pid), float | None)
    assert_type(Add.join_nowait(pid), float | None)
    assert_type(Add.join(pid, timeout=2.5), float | None)
    assert_type(Add.join(pid, timeout=None), float | None)
    assert_type(Add.join_outcome(pid, timeout=1), netmcore.Outcome[float])
    assert_type(Add.result(pid), float)  # no None: it raises ProcessFailed instead
    assert_type(Add.result(pid, timeout=0), float)
    try:
        Add.result(pid)
    except netmcore.ProcessFailed as failed:
        assert_type(failed.raised(ZeroDivisionError, OverflowError), bool)

    spid = square.start(3)
    assert_type(spid, netmcore.ProcessId[int])
    assert_type(square.join(spid), int | None)
    assert_type(square.join_nowait(spid), int | None)
    assert_type(square.join_outcome(spid), netmcore.Outcome[int])
    assert_type(square.result(spid), int)
    # as_completed yields the ids it is given; map yields results, in order.
    assert_type(square.as_completed([spid, square.start(4)]), Iterator[netmcore.ProcessId[int]])
    assert_type(Add.as_completed((pid,), timeout=1.5), Iterator[netmcore.ProcessId[float]])
    # netmcore.as_completed takes ids of any types, and yields the type of
    # their element: each joins through its own type. Ids of several types
    # in one display are ProcessId[Any] (mypy joins them into object).
    assert_type(netmcore.as_completed([spid]), Iterator[netmcore.ProcessId[int]])
    assert_type(netmcore.as_completed((pid,), timeout=1.5), Iterator[netmcore.ProcessId[float]])
    mixed: list[netmcore.ProcessId[int] | netmcore.ProcessId[float]] = [spid, pid]
    assert_type(
        netmcore.as_completed(mixed),
        Iterator[netmcore.ProcessId[int] | netmcore.ProcessId[float]],
    )
    assert_type(netmcore.as_completed([spid, pid]), Iterator[netmcore.ProcessId[Any]])
    assert_type(netmcore.as_completed({spid, Point.start([1])}), Iterator[netmcore.ProcessId[Any]])
    for done in netmcore.as_completed([spid, pid]):
        if done == spid:
            assert_type(square.result(done), int)
        else:
            assert_type(Add.result(done), float)
    assert_type(square.map(range(5)), Iterator[int])
    assert_type(Add.map([(1.0, 2.0)], processes=2), Iterator[float])
    assert_type(square.map(range(5), timeout=2.5), Iterator[int])
    assert_type(square.map(range(5), chunksize=2), Iterator[int])
    assert_type(square.map(range(5), ordered=False, chunksize=2), Iterator[int])
    assert_type(square.map(range(5), chunksize="auto"), Iterator[int])
    assert_type(square.map_outcomes(range(5), chunksize="auto"), Iterator[netmcore.Outcome[int]])
    # map_outcomes yields how each item went, the value typed by the match.
    assert_type(square.map_outcomes(range(5)), Iterator[netmcore.Outcome[int]])
    for item_outcome in Add.map_outcomes([(1.0, 2.0)], processes=2, chunksize=2, timeout=1.0):
        match item_outcome:
            case netmcore.Success(total):
                assert_type(total, float)
            case netmcore.Raised() | netmcore.InvalidResult() | netmcore.Crashed():
                pass
            case _:
                assert_never(item_outcome)

    ppid = Point.start([1, 2])
    assert_type(ppid, netmcore.ProcessId[dict[str, int]])
    assert_type(Point.join(ppid), dict[str, int] | None)

    result = Add.join(pid)
    if result is not None:
        assert_type(result, float)

    # A ProcessId[Any] (from the low-level start) may be joined by any process type.
    anypid: netmcore.ProcessId[Any] = netmcore.self_process_id()
    assert_type(Add.join(anypid), float | None)

    # kill takes the id of any process, and a signal number (SIGKILL by default).
    assert_type(netmcore.kill(pid), bool)
    assert_type(netmcore.kill(spid, signal.SIGTERM), bool)
    assert_type(netmcore.kill(anypid, 0), bool)

    assert_type(Add.release_fork_point(), None)
    assert_type(Add.release_join_point(), None)


def class_attributes() -> None:
    assert_type(Add.fork_point, netmcore.ResId)
    assert_type(Add.join_point, netmcore.ResId)
    assert_type(Add.fork_point.n, int)
    assert_type(square.fork_point, netmcore.ResId)
    assert_type(Add.input_type, netmcore.EncapType[Any])
    assert_type(Add.output_type, netmcore.EncapType[Any])
    assert_type(Add().run((1.0, 2.0)), float)


def outcomes() -> None:
    pid = Add.start((3.0, 4.0))
    outcome = Add.join_outcome(pid)
    assert_type(outcome, netmcore.Outcome[float])
    assert_type(
        outcome,
        netmcore.Success[float] | netmcore.Raised | netmcore.InvalidResult | netmcore.Crashed,
    )

    if isinstance(outcome, netmcore.Success):
        assert_type(outcome, netmcore.Success[float])
        assert_type(outcome.value, float)
    else:
        assert_type(outcome, netmcore.Raised | netmcore.InvalidResult | netmcore.Crashed)

    match outcome:
        case netmcore.Success(value):
            assert_type(value, float)
        case netmcore.Raised(type_name, message, traceback) as raised:
            assert_type(type_name, str)
            assert_type(message, str)
            assert_type(traceback, str)
            assert_type(raised.classes, tuple[str, ...])
            assert_type(raised.is_a(OSError, KeyError), bool)
        case netmcore.InvalidResult(path, message):
            assert_type(path, str)
            assert_type(message, str)
        case netmcore.Crashed(exitcode, signal):
            assert_type(exitcode, int | None)
            assert_type(signal, int | None)
        case _:
            assert_never(outcome)  # the four cases are all there is

    maybe = Add.join_outcome_nowait(pid)
    assert_type(maybe, netmcore.Outcome[float] | None)
    if maybe is not None and isinstance(maybe, netmcore.Success):
        assert_type(maybe.value, float)

    # Covariant: a helper over outcomes of any result type takes them all.
    def describe(outcome: netmcore.Outcome[object]) -> str:
        return str(outcome)

    describe(square.join_outcome(square.start(3)))
    mixed: list[netmcore.Outcome[float]] = [outcome, square.join_outcome(square.start(3))]
    assert_type(mixed, list[netmcore.Outcome[float]])


def encap() -> None:
    int_type = netmcore.EncapType(int)
    assert_type(int_type, netmcore.EncapType[int])
    e = int_type.wrap(3)
    assert_type(e, netmcore.Encap)
    assert_type(int_type.unwrap(e), int)
    assert_type(e.type_name, str)
    assert_type(e.fingerprint, str)
    assert_type(e.data, bytes | memoryview)

    pair_type = netmcore.EncapType(tuple[float, float])
    assert_type(pair_type.unwrap(pair_type.wrap((1.0, 2.0))), tuple[float, float])

    def body(arg: netmcore.Encap) -> netmcore.Encap:
        return int_type.wrap(int_type.unwrap(arg) + 1)

    assert_type(netmcore.def_process(body), tuple[netmcore.ResId, netmcore.ResId])
    fork_point, join_point = netmcore.def_process(body, name="incr")
    assert_type(fork_point, netmcore.ResId)

    pid = netmcore.start(fork_point, int_type.wrap(41))
    assert_type(pid, netmcore.ProcessId[Any])
    assert_type(
        netmcore.start(fork_point, e, inherit_resources=[join_point]), netmcore.ProcessId[Any]
    )
    result = netmcore.join(join_point, pid)
    assert_type(result, netmcore.Encap | None)
    assert_type(netmcore.join_nowait(join_point, pid), netmcore.Encap | None)
    assert_type(netmcore.join(join_point, pid, timeout=0.5), netmcore.Encap | None)
    if result is not None:
        assert_type(int_type.unwrap(result), int)
    assert_type(netmcore.release(fork_point), None)
    assert_type(netmcore.self_process_id(), netmcore.ProcessId[Any])


def run_and_startup() -> None:
    total = netmcore.run(
        first_process=lambda: Add.start((1.0, 2.0)),
        extract_result=lambda ctrl, pid: Add.join_nowait(pid),
    )
    assert_type(total, float | None)

    def first() -> netmcore.ProcessId[int]:
        return square.start(7)

    def extract(ctrl: netmcore.Controller, pid: netmcore.ProcessId[int]) -> str:
        return str(square.join_nowait(pid))

    def init(ctrl: netmcore.Controller) -> None:
        pass

    assert_type(netmcore.run(first_process=first, extract_result=extract), str)
    assert_type(
        netmcore.run(
            first_process=first,
            extract_result=extract,
            socket_directory="/tmp/x",
            pidfile=None,
            init_ctrl=init,
            disable_pmanage=True,
            no_unlink=True,
        ),
        str,
    )
    assert_type(netmcore.startup(first_process=lambda: square.start(3)), None)
    assert_type(netmcore.startup(first_process=first, init_ctrl=init), None)

    # A set-up function whose value is of no use here, as re.compile's.
    def compile_patterns(ctrl: netmcore.Controller) -> list[str]:
        return []

    assert_type(netmcore.startup(first_process=first, init_ctrl=compile_patterns), None)


def errors() -> None:
    assert_type(netmcore.Debug.enable, bool)
    try:
        Add.start((1.0, 2.0))
    except netmcore.ArgumentTypeError as exc:
        assert_type(exc, netmcore.ArgumentTypeError)
    except netmcore.NetmcoreError as exc:
        assert_type(exc, netmcore.NetmcoreError)


def pydantic_models() -> None:
    pid = Welcome.start(Member(name="ada", age=36))
    assert_type(pid, netmcore.ProcessId[list[Member]])
    assert_type(Welcome.start(Member(name="ada")), netmcore.ProcessId[list[Member]])
    assert_type(Welcome.join(pid), list[Member] | None)
    assert_type(Welcome.join_nowait(pid), list[Member] | None)
    assert_type(Welcome.join_outcome(pid), netmcore.Outcome[list[Member]])
    assert_type(Welcome.join_outcome_nowait(pid), netmcore.Outcome[list[Member]] | None)
    assert_type(Welcome().run(Member(name="x")), list[Member])

    assert_type(oldest, type[netmcore.ProcessDef[list[Member] | None, Member | None]])
    opid = oldest.start([Member(name="a"), Member(name="b", age=3)])
    assert_type(opid, netmcore.ProcessId[Member | None])
    assert_type(oldest.start(None), netmcore.ProcessId[Member | None])
    assert_type(oldest.join(opid), Member | None)

    member_type = netmcore.EncapType(Member)
    assert_type(member_type, netmcore.EncapType[Member])
    assert_type(member_type.unwrap(member_type.wrap(Member(name="x"))), Member)


def contracts() -> None:
    assert_type(Welcome.contract(), dict[str, Any])
    assert_type(square.contract(), dict[str, Any])
    assert_type(Add.input_type.schema, dict[str, Any])
    assert_type(Add.output_type.fingerprint, str)
    int_type = netmcore.EncapType(int)
    assert_type(int_type.schema, dict[str, Any])
    assert_type(int_type.fingerprint, str)
    assert_type(int_type.name, str)
    try:
        int_type.wrap(3)
    except netmcore.ArgumentTypeError as exc:
        assert_type(exc.path, str)
    except netmcore.EncapTypeMismatch as exc:
        assert_type(exc, netmcore.EncapTypeMismatch)


def resources() -> None:
    segment = netmcore.create_shm(10)
    assert_type(segment, netmcore.ShmSegment)
    assert_type(segment.buffer, memoryview)
    assert_type(segment.size, int)
    assert_type(segment.res_id, netmcore.ResId)
    assert_type(segment.name, str)
    assert_type(segment.close(), None)
    assert_type(segment.release(), None)
    with netmcore.open_shm(segment.res_id) as opened:
        assert_type(opened, netmcore.ShmSegment)
    assert_type(netmcore.open_shm(segment.res_id), netmcore.ShmSegment)

    sem = netmcore.create_sem()
    assert_type(sem, netmcore.PosixSemaphore)
    assert_type(netmcore.create_sem(3), netmcore.PosixSemaphore)
    assert_type(netmcore.create_sem(value=1), netmcore.PosixSemaphore)
    assert_type(sem.wait(0.1), bool)
    assert_type(sem.wait(), bool)
    assert_type(sem.wait(timeout=None), bool)
    assert_type(sem.post(), None)
    assert_type(sem.value, int)
    assert_type(sem.res_id, netmcore.ResId)
    assert_type(sem.release(), None)
    with netmcore.open_sem(sem.res_id) as opened_sem:
        assert_type(opened_sem, netmcore.PosixSemaphore)

    prealloc = netmcore.create_preallocated_shm("/p", 10)
    assert_type(prealloc, tuple[netmcore.ResId, str])
    rid, name = prealloc
    assert_type(name, str)
    resource = netmcore.get_resource(rid)
    assert_type(resource, netmcore.ComputeResource)
    assert_type(resource.id, netmcore.ResId)
    assert_type(resource.typ, netmcore.ResourceType)
    assert_type(
        resource.repr,
        netmcore.File
        | netmcore.PosixShm
        | netmcore.PosixShmPreallocated
        | netmcore.PosixSem
        | netmcore.ProcessPoint,
    )
    assert_type(resource.release(), None)
    assert_type(netmcore.get_file(rid), str)
    assert_type(netmcore.get_shm(rid), str)
    assert_type(netmcore.get_sem(rid), str)
    assert_type(netmcore.manage_file("/tmp/f"), netmcore.ComputeResource)
    assert_type(netmcore.manage_shm("/s"), netmcore.ComputeResource)
    assert_type(netmcore.manage_sem("/s"), netmcore.ComputeResource)
    assert_type(netmcore.release(rid), None)
    assert_type(netmcore.destroy_resources(), None)


@netmcore.process
def to_text(k: int) -> str:
    return str(k)


def pipelines() -> None:
    p = netmcore.Pipeline(square, workers=2)
    assert_type(p, netmcore.Pipeline[int, int])
    longer = p.then(to_text, workers=3)
    assert_type(longer, netmcore.Pipeline[int, str])
    run = longer.run(range(10), ordered=False, on_error="skip")
    assert_type(run, netmcore.PipelineRun[str])
    for text in run:
        assert_type(text, str)
    assert_type(run.failures, list[netmcore.ItemFailure])
    for failure in run.failures:
        assert_type(failure.raised(KeyError, OSError), bool)
        assert_type(failure.outcome, netmcore.Raised | netmcore.InvalidResult | netmcore.Crashed)
    try:
        list(p.run(range(3)))
    except netmcore.PipelineError as error:
        assert_type(error.raised(KeyError), bool)
        assert_type(error.outcome, netmcore.Raised | netmcore.InvalidResult | netmcore.Crashed)
    assert_type(next(iter(netmcore.Pipeline(Add).run([(1.0, 2.0)]))), float)


def typed_handles(rid: netmcore.ResId, some_type: Any) -> None:
    # A plain class gives T by itself; so does any other type form (a union, a
    # generic alias, Annotated, Literal), and an explicit subscript agrees with it.
    assert_type(netmcore.SharedVar("n", int), netmcore.SharedVar[int])
    assert_type(netmcore.SharedVar("m", Member), netmcore.SharedVar[Member])
    best = netmcore.SharedVar[float | None]("best", float | None)
    assert_type(best, netmcore.SharedVar[float | None])
    assert_type(best.get(), float | None)
    assert_type(best.create(None), bool)
    assert_type(netmcore.SharedVar("best", float | None), netmcore.SharedVar[float | None])
    # Optional[X] is another object than X | None at run time, and mypy's own.
    maybe_xs = netmcore.SharedVar("xs", Optional[list[int]])  # noqa: UP045
    assert_type(maybe_xs, netmcore.SharedVar[list[int] | None])
    assert_type(netmcore.SharedVar[list[int]]("xs", list[int]), netmcore.SharedVar[list[int]])
    count = netmcore.SharedVar("k", Annotated[int, msgspec.Meta(ge=0)])
    assert_type(count, netmcore.SharedVar[int])
    assert_type(count.wait_for_value(), int)
    # compare_and_set expects a T, or None for no value; swap gives what was held.
    assert_type(count.compare_and_set(None, 1), bool)
    assert_type(count.compare_and_set(count.get(), 2), bool)
    assert_type(count.swap(3), int | None)
    assert_type(best.swap(None), float | None)
    assert_type(
        netmcore.SharedVar("s", Literal["on", "off"]), netmcore.SharedVar[Literal["on", "off"]]
    )
    assert_type(netmcore.SharedVar("a", some_type), netmcore.SharedVar[Any])
    barrier = netmcore.PluginBarrier("step", 2)
    assert_type(barrier.wait(timeout=1.0), int)
    assert_type(barrier.create(), bool)

    box = netmcore.Mbox[int | None]("box", int | None)
    assert_type(box, netmcore.Mbox[int | None])
    assert_type(netmcore.Mbox("box", int | None, capacity=2), netmcore.Mbox[int | None])
    assert_type(netmcore.Mbox("box", int), netmcore.Mbox[int])
    assert_type(box.receive(), int | None)
    assert_type(box.receive(while_alive=netmcore.ProcessId[str](3)), int | None)

    mailbox = netmcore.Mailbox.create(int | None, slots=2, slot_size=64)
    assert_type(mailbox, netmcore.Mailbox[int | None])
    assert_type(mailbox.receive(), int | None)
    actor = netmcore.ProcessId[float](1)
    assert_type(mailbox.receive(while_alive=actor), int | None)
    assert_type(mailbox.receive(1.0, while_alive=[actor, netmcore.ProcessId[str](2)]), int | None)
    assert_type(netmcore.Mailbox[int | None].create(int | None), netmcore.Mailbox[int | None])
    assert_type(netmcore.Mailbox.create(int), netmcore.Mailbox[int])
    assert_type(netmcore.Mailbox.open(rid, int | None), netmcore.Mailbox[int | None])
    assert_type(netmcore.Mailbox.open(rid, Member), netmcore.Mailbox[Member])
    queue = netmcore.Mailbox.create(int | None, slots=64, many_receivers=True)
    assert_type(queue, netmcore.Mailbox[int | None])
    reader = netmcore.Mailbox.open(queue.res_id, int | None, receive=True)
    assert_type(reader, netmcore.Mailbox[int | None])
    assert_type(reader.receive(), int | None)
    queue.send(1, while_alive=[actor, netmcore.ProcessId[str](2)])
    box.send(None, while_alive=actor)

    assert_type(netmcore.EncapType(int | None), netmcore.EncapType[int | None])
    assert_type(netmcore.EncapType[int | None](int | None), netmcore.EncapType[int | None])
    assert_type(netmcore.EncapType(dict[str, int]), netmcore.EncapType[dict[str, int]])


def shared_arrays() -> None:
    table = netmcore.SharedArray.create((3, 4), "int64", order="F")
    assert_type(table, netmcore.SharedArray)
    assert_type(table.open(), npt.NDArray[Any])
    assert_type(table.open(np.int64), npt.NDArray[np.int64])
    assert_type(table.open(None), npt.NDArray[Any])
    assert_type(table.open(np.integer), npt.NDArray[np.integer[Any]])
    assert_type(table.open(np.dtype(np.int64)), npt.NDArray[np.int64])
    assert_type(table.open(readonly=True), npt.NDArray[Any])
    assert_type(table.open(np.int64, readonly=True), npt.NDArray[np.int64])
    assert_type(table.open(np.dtype(np.int64), readonly=False), npt.NDArray[np.int64])
    copy = netmcore.SharedArray.from_array(np.zeros((2, 2), np.float32))
    assert_type(copy.open(np.float32), npt.NDArray[np.float32])
    assert_type(netmcore.SharedArray.from_array([[1, 2], [3, 4]], order="K"), netmcore.SharedArray)
    assert_type(netmcore.SharedArray.from_array([1, 2], np.float32, "F"), netmcore.SharedArray)
    assert_type(table.order, Literal["C", "F"])
