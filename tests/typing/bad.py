"""Uses of netmcore's public API that mypy must reject.

Type-checked by ``tests/test_typing.py``; never imported or run. Every bad line
ends with ``# type: ignore[<code>]``: the project's mypy config sets
``warn_unused_ignores``, so if a change to netmcore makes mypy accept one of
these uses, its ignore becomes unused and the suite fails. test_typing.py also
checks that, with the markers removed, each marked line gives exactly the errors
its marker names (one, except where a lambda also gives ``return-value``) and no
other line gives any.
"""

from __future__ import annotations

from typing import Annotated

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


@netmcore.process
def show(k: int) -> str:
    return str(k)


class Member(BaseModel):
    name: str
    age: int = 0


class Welcome(netmcore.ProcessDef[Member, list[Member]]):
    def run(self, arg: Member) -> list[Member]:
        return [arg]


@netmcore.process
def oldest(members: list[Member]) -> Member | None:
    return max(members, key=lambda m: m.age, default=None)


# run() must take the declared In and return the declared Out.
class WrongArg(netmcore.ProcessDef[int, int]):
    def run(self, arg: str) -> int:  # type: ignore[override]
        return len(arg)


class WrongResult(netmcore.ProcessDef[int, int]):
    def run(self, arg: int) -> str:  # type: ignore[override]
        return str(arg)


# @process keeps the function's argument and result types.
show_as_int: type[netmcore.ProcessDef[int, int]] = show  # type: ignore[assignment]
square_from_str: type[netmcore.ProcessDef[str, int]] = square  # type: ignore[assignment]


def bad_start() -> None:
    # The argument must be an In.
    Add.start("x")  # type: ignore[arg-type]
    Add.start((1, "a"))  # type: ignore[arg-type]
    Add.start((1.0, 2.0, 3.0))  # type: ignore[arg-type]
    square.start("3")  # type: ignore[arg-type]
    # inherit_resources is "all" or ResIds.
    square.start(3, inherit_resources="none")  # type: ignore[arg-type]
    square.start(3, inherit_resources=[3])  # type: ignore[list-item]


def bad_join() -> None:
    # A process is joined through the join point of its own type: ProcessId is invariant.
    pid = Add.start((3.0, 4.0))
    Add.join(square.start(3))  # type: ignore[arg-type]
    Add.join_nowait(square.start(3))  # type: ignore[arg-type]
    Add.join_outcome(square.start(3))  # type: ignore[arg-type]
    Add.join_outcome_nowait(square.start(3))  # type: ignore[arg-type]
    Add.result(square.start(3))  # type: ignore[arg-type]
    Add.result(pid, timeout="1")  # type: ignore[arg-type]
    square.join(pid)  # type: ignore[arg-type]
    Add.join(3)  # type: ignore[arg-type]
    # A timeout is a number of seconds, given by keyword.
    Add.join(pid, timeout="1")  # type: ignore[arg-type]
    Add.join(pid, 1.0)  # type: ignore[call-arg]
    Add.join_outcome(pid, timeout="1")  # type: ignore[arg-type]
    Add.join_nowait(pid, timeout=1.0)  # type: ignore[call-arg]
    # as_completed takes ids of its own type; map, arguments of it.
    Add.as_completed([square.start(3)])  # type: ignore[list-item]
    Add.as_completed(pid)  # type: ignore[arg-type]
    Add.as_completed([pid], timeout="1")  # type: ignore[arg-type]
    # netmcore.as_completed takes an iterable of ProcessIds, of any types.
    netmcore.as_completed(pid)  # type: ignore[call-overload]
    netmcore.as_completed([3])  # type: ignore[type-var]
    netmcore.as_completed([pid, 3])  # type: ignore[type-var]
    netmcore.as_completed([pid], 1.0)  # type: ignore[call-overload]
    netmcore.as_completed([pid], timeout="1")  # type: ignore[call-overload]
    for done in netmcore.as_completed([pid]):
        square.result(done)  # type: ignore[arg-type]
    square.map(["3"])  # type: ignore[list-item]
    square.map([3], processes="2")  # type: ignore[arg-type]
    square.map([3], timeout="1")  # type: ignore[arg-type]
    square.map([3], chunksize=2.0)  # type: ignore[arg-type]
    square.map([3], ordered="no")  # type: ignore[arg-type]
    square.map([3], chunksize="big")  # type: ignore[arg-type]
    square.map_outcomes([3], ordered=False)  # type: ignore[call-arg]
    print("".join(square.map([3])))  # type: ignore[arg-type]
    square.map_outcomes(["3"])  # type: ignore[list-item]
    try:
        square.result(square.start(3))
    except netmcore.ProcessFailed as failed:
        failed.raised("KeyError")  # type: ignore[arg-type]
        failed.raised(KeyError())  # type: ignore[arg-type]
        failed.raised()  # type: ignore[call-arg]
    square.map_outcomes([3], chunksize="2")  # type: ignore[arg-type]
    for item_outcome in square.map_outcomes([3]):
        if isinstance(item_outcome, netmcore.Success):
            item_outcome.value.upper()  # type: ignore[attr-defined]


def bad_results() -> float:
    # join may return None, and returns an Out.
    pid = Add.start((3.0, 4.0))
    x: float = Add.join(pid)  # type: ignore[assignment]
    y: float = Add.join_nowait(pid)  # type: ignore[assignment]
    z: int | None = Add.join(pid)  # type: ignore[assignment]
    s: str | None = square.join(square.start(3))  # type: ignore[assignment]
    return x + y + (z or 0) + len(s or "")


def bad_outcomes() -> None:
    # An Outcome is not always a Success; the nowait one may be None.
    pid = Add.start((3.0, 4.0))
    success: netmcore.Success[float] = Add.join_outcome(pid)  # type: ignore[assignment]
    outcome: netmcore.Outcome[float] = Add.join_outcome_nowait(pid)  # type: ignore[assignment]
    other: netmcore.Outcome[int] = Add.join_outcome(pid)  # type: ignore[assignment]
    wider: netmcore.Outcome[object] = other
    narrower: netmcore.Outcome[int] = wider  # type: ignore[assignment]
    if isinstance(outcome, netmcore.Success):
        label: str = outcome.value  # type: ignore[assignment]
        print(label)
    print(success, other, narrower)


def bad_encap() -> None:
    int_type = netmcore.EncapType(int)
    int_type.wrap("s")  # type: ignore[arg-type]
    int_type.unwrap(b"\x03")  # type: ignore[arg-type]
    e = int_type.wrap(3)
    text: str = int_type.unwrap(e)  # type: ignore[assignment]
    # Encap.data may be a memoryview (a value received through shared memory).
    netmcore.EncapType(str).wrap(text).data.decode()  # type: ignore[union-attr]
    print(text)


def to_int(e: netmcore.Encap) -> int:
    return len(e.data)


def bad_low_level() -> None:
    # def_process takes an Encap -> Encap function; start/join take ResIds and Encaps.
    fork_point, join_point = netmcore.def_process(lambda e: e)
    netmcore.def_process(len)  # type: ignore[arg-type]
    netmcore.def_process(to_int)  # type: ignore[arg-type]
    netmcore.start(fork_point, (3.0, 4.0))  # type: ignore[arg-type]
    netmcore.start(fork_point.n, netmcore.EncapType(int).wrap(3))  # type: ignore[arg-type]
    pid = netmcore.start(fork_point, netmcore.EncapType(int).wrap(3))
    netmcore.join(join_point, 3)  # type: ignore[arg-type]
    netmcore.join(pid, pid)  # type: ignore[arg-type]
    netmcore.join_nowait(join_point.n, pid)  # type: ignore[arg-type]
    netmcore.release(3)  # type: ignore[arg-type]
    netmcore.kill(3)  # type: ignore[arg-type]
    netmcore.kill(pid, "SIGKILL")  # type: ignore[arg-type]
    n: int = netmcore.join(join_point, pid)  # type: ignore[assignment]
    print(n)


def bad_run() -> None:
    # first_process returns a ProcessId; extract_result gets a ProcessId of the same type.
    netmcore.run(first_process=lambda: 3, extract_result=lambda ctrl, pid: None)  # type: ignore[arg-type, return-value]
    netmcore.run(first_process=Add.start, extract_result=lambda ctrl, pid: None)  # type: ignore[arg-type]
    netmcore.run(
        first_process=lambda: Add.start((1.0, 2.0)),
        extract_result=lambda ctrl, pid: square.join_nowait(pid),  # type: ignore[arg-type]
    )
    netmcore.run(first_process=lambda: Add.start((1.0, 2.0)))  # type: ignore[call-arg]
    # run returns what extract_result returns, here float | None.
    total: float = netmcore.run(  # type: ignore[assignment]
        first_process=lambda: Add.start((1.0, 2.0)),
        extract_result=lambda ctrl, pid: Add.join_nowait(pid),
    )
    netmcore.startup(first_process=lambda: None)  # type: ignore[arg-type, return-value]
    netmcore.startup(first_process=lambda: Add.start((1.0, 2.0)), socket_directory=3)  # type: ignore[arg-type]
    print(total)


def bad_ids() -> None:
    # Ids are frozen and hold ints.
    Add.fork_point.n = 3  # type: ignore[misc]
    netmcore.ResId("3")  # type: ignore[arg-type]
    netmcore.Debug.enable = "yes"  # type: ignore[assignment]


class WrongModelArg(netmcore.ProcessDef[Member, int]):
    def run(self, arg: dict[str, int]) -> int:  # type: ignore[override]
        return len(arg)


def bad_pydantic() -> None:
    # A pydantic model is its own type: a dict or another model is not one.
    Welcome.start({"name": "ada"})  # type: ignore[arg-type]
    Welcome.start(Member)  # type: ignore[arg-type]
    Welcome.start([Member(name="ada")])  # type: ignore[arg-type]
    oldest.start(Member(name="ada"))  # type: ignore[arg-type]
    oldest.start(None)  # type: ignore[arg-type]
    Member(name=3)  # type: ignore[arg-type]
    pid = Welcome.start(Member(name="ada"))
    members: list[Member] = Welcome.join(pid)  # type: ignore[assignment]
    first: Member | None = Welcome.join(pid)  # type: ignore[assignment]
    oldest.join(pid)  # type: ignore[arg-type]
    netmcore.EncapType(Member).wrap({"name": "ada"})  # type: ignore[arg-type]
    print(members, first)


def bad_contracts() -> None:
    text: str = Welcome.contract()  # type: ignore[assignment]
    schema: str = Welcome.input_type.schema  # type: ignore[assignment]
    fingerprint: int = netmcore.EncapType(int).fingerprint  # type: ignore[assignment]
    print(text, schema, fingerprint)


def bad_resources() -> None:
    # Sizes and values are ints; resources are named by ResIds, not ints.
    netmcore.create_shm("10")  # type: ignore[arg-type]
    netmcore.create_shm()  # type: ignore[call-arg]
    netmcore.open_shm(3)  # type: ignore[arg-type]
    netmcore.create_sem(value="1")  # type: ignore[arg-type]
    netmcore.open_sem(3)  # type: ignore[arg-type]
    netmcore.get_resource(3)  # type: ignore[arg-type]
    netmcore.get_file("/tmp/f")  # type: ignore[arg-type]
    netmcore.get_shm(3)  # type: ignore[arg-type]
    netmcore.get_sem(3)  # type: ignore[arg-type]
    netmcore.manage_file(3)  # type: ignore[arg-type]
    netmcore.create_preallocated_shm("/p")  # type: ignore[call-arg]
    netmcore.create_preallocated_shm("/p", "10")  # type: ignore[arg-type]
    rid: netmcore.ResId = netmcore.create_preallocated_shm("/p", 10)  # type: ignore[assignment]
    segment = netmcore.create_shm(10)
    data: bytes = segment.buffer  # type: ignore[assignment]
    sem = netmcore.create_sem()
    sem.wait("1")  # type: ignore[arg-type]
    ok: str = sem.wait(0.1)  # type: ignore[assignment]
    path: int = netmcore.get_file(segment.res_id)  # type: ignore[assignment]
    netmcore.release(segment)  # type: ignore[arg-type]
    shm: netmcore.ShmSegment = netmcore.get_resource(segment.res_id)  # type: ignore[assignment]
    print(rid, data, ok, path, shm)


def bad_pipelines() -> None:
    netmcore.Pipeline(square).then(oldest)  # type: ignore[arg-type]
    netmcore.Pipeline(square).run(["1"])  # type: ignore[list-item]
    netmcore.Pipeline(square).run(range(3), on_error="ignore")  # type: ignore[arg-type]
    texts: list[int] = list(netmcore.Pipeline(show).run([1]))  # type: ignore[arg-type]
    print(texts)
    for failure in netmcore.Pipeline(square).run([1], on_error="skip").failures:
        failure.raised("KeyError")  # type: ignore[arg-type]
        never: netmcore.Success[int] = failure.outcome  # type: ignore[assignment]
        print(never)


def bad_typed_handles(rid: netmcore.ResId) -> None:
    # The type given is T: a subscript must agree with it, also for a type form
    # that is not a plain class, and values must be T's.
    netmcore.SharedVar[int]("count", str)  # type: ignore[arg-type]
    netmcore.SharedVar[list[int]]("xs", list[str])  # type: ignore[arg-type]
    netmcore.SharedVar[int | None]("k", str | None)  # type: ignore[arg-type]
    netmcore.SharedVar[float | None]("best", float | None).create("idle")  # type: ignore[arg-type]
    netmcore.SharedVar("best", float | None).set("idle")  # type: ignore[arg-type]
    best: float = netmcore.SharedVar("best", float | None).wait_for_value()  # type: ignore[assignment]
    netmcore.SharedVar("xs", list[int] | None).set(["x"])  # type: ignore[list-item]
    netmcore.SharedVar("k", Annotated[int, msgspec.Meta(ge=0)]).set("1")  # type: ignore[arg-type]
    netmcore.SharedVar("n", int).compare_and_set("0", 1)  # type: ignore[arg-type]
    netmcore.SharedVar("n", int).compare_and_set(0, None)  # type: ignore[arg-type]
    netmcore.SharedVar("n", int).swap("1")  # type: ignore[arg-type]
    netmcore.SharedVar("n", int).swap(1) + 1  # type: ignore[operator]
    netmcore.PluginBarrier("step", "2")  # type: ignore[arg-type]
    netmcore.PluginBarrier("step", 2).wait().upper()  # type: ignore[attr-defined]
    netmcore.Mbox[int]("box", str)  # type: ignore[arg-type]
    netmcore.Mbox[int | None]("box", int | None).send("x")  # type: ignore[arg-type]
    netmcore.Mbox("box", int).receive(while_alive=[1])  # type: ignore[list-item]
    netmcore.Mailbox[int].create(str)  # type: ignore[arg-type]
    netmcore.Mailbox.create(int | None).send("x")  # type: ignore[arg-type]
    netmcore.Mailbox[int | None].create(int | None).send("x")  # type: ignore[arg-type]
    netmcore.Mailbox[int].open(rid, str)  # type: ignore[arg-type]
    netmcore.Mailbox.open(rid, int | None).send("x")  # type: ignore[arg-type]
    netmcore.Mailbox.create(int).receive(while_alive=rid)  # type: ignore[arg-type]
    netmcore.Mailbox.create(int).receive(while_alive=[3])  # type: ignore[list-item]
    netmcore.Mailbox.create(int, many_receivers="yes")  # type: ignore[call-overload]
    netmcore.Mailbox.open(rid, int, receive=1.0)  # type: ignore[call-overload]
    netmcore.Mailbox[str].open(rid, int, receive=True)  # type: ignore[arg-type]
    netmcore.Mailbox.create(int).send(1, while_alive=rid)  # type: ignore[arg-type]
    netmcore.EncapType[int](str)  # type: ignore[arg-type]
    netmcore.EncapType(int | None).wrap("x")  # type: ignore[arg-type]
    print(best)


def bad_shared_arrays(table: netmcore.SharedArray) -> None:
    netmcore.SharedArray.create(3, order="K")  # type: ignore[arg-type]
    netmcore.SharedArray.from_array([1.0], order="X")  # type: ignore[arg-type]
    table.open(float)  # type: ignore[type-var]
    table.open("f8")  # type: ignore[call-overload]
    floats: npt.NDArray[np.float64] = table.open(np.int64)  # type: ignore[arg-type]
    print(floats)
    table.open(readonly="yes")  # type: ignore[call-overload]
    table.open(np.int64, readonly=1)  # type: ignore[call-overload]
    table.open(np.int64, True)  # type: ignore[call-overload]
    read: npt.NDArray[np.float64] = table.open(np.int64, readonly=True)  # type: ignore[arg-type]
    print(read)
