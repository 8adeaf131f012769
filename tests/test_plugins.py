"""The plugins served by the master: SharedVar, PluginMutex, PluginSemaphore, Mbox.

Scenarios run as the first process, as in ``test_core``: a process type defined
at module level (process types must exist before the master starts) does the
calls under test inside a worker, starts the other workers it needs, and returns
what it saw; the test asserts on that in the test process, which is the master
during ``run``.

Synchronisation is deterministic, never a sleep:

* the plugins themselves: a worker signals a step with
  ``PluginSemaphore.increment`` and another waits for it with ``decrement``;
* :class:`Queued` makes a plugin call that waits (a lock, a receive...) in a
  thread of the worker and returns once the request is on the worker's link to
  the master. The master serves one link's requests in the order they were
  sent, so the *next* plugin call of that worker (typically the signal to the
  other side) is answered only after the master has queued the waiting one.
  It also fails if the master answered that call at once instead of queueing
  it: a call that should wait, but does not, is caught deterministically;
* a worker kills itself with SIGKILL once its waiting requests are queued, and
  the scenario joins it: by the time ``join`` returns a crash, the master has
  processed the death;
* a pipe made in the test before ``run`` (every worker inherits it) holds a
  worker between the moment it has sent its result and its exit.

A deadlock (a mutex never passed on, a message swallowed) shows as a hang,
which the per-test timeout turns into a failure.
"""

from __future__ import annotations

import os
import re
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any, Generic, NoReturn, TypeVar

import msgspec
import pytest
import scenario

import netmcore
from netmcore import Mbox, PluginMutex, PluginSemaphore, SharedVar, _context
from netmcore._encap import TYPE_NAME_MAX, clipped_name
from netmcore._plugin_host import PluginHost
from netmcore._wire import PluginReq

T = TypeVar("T")

pytestmark = pytest.mark.timeout(20)  # a hang is a failure, well inside the suite's budget


class Point(msgspec.Struct):
    x: int
    y: int


class Job(msgspec.Struct):
    id: int
    tags: list[str]


# A type whose name, 600 bytes of UTF-8 and more, is over what a request carries.
LongName = msgspec.defstruct("Long" + "é" * 300, [("k", int)], module="tests")


# --------------------------------------------------------------------------
# Helpers used inside workers
# --------------------------------------------------------------------------


def err(fn: Callable[[], object]) -> list[str]:
    """Call ``fn``; return [exception class name, message], or ["none", repr(result)]."""
    try:
        result = fn()
    except Exception as exc:
        return [type(exc).__name__, str(exc)]
    return ["none", repr(result)]


def path_of(fn: Callable[[], object]) -> list[str]:
    """Call ``fn``, which must raise ArgumentTypeError; return [class name, path]."""
    try:
        fn()
    except netmcore.ArgumentTypeError as exc:
        return [type(exc).__name__, exc.path]
    except Exception as exc:
        return [type(exc).__name__, str(exc)]
    return ["none", ""]


def signal_sem(name: str) -> PluginSemaphore:
    """A semaphore used to signal one step to another process (created at 0)."""
    sem = PluginSemaphore(name)
    sem.create(0)
    return sem


class Queued(Generic[T]):
    """Run a plugin call that waits, in a thread of this worker.

    The constructor returns once the master has the call's request, and checks
    that the master queued it rather than answering at once: the master serves
    one link's requests in order, so the reply to a later round trip comes after
    any immediate reply to this one. Any plugin call this worker makes afterwards
    is served after the master has queued this one. ``result()`` waits for it.
    """

    def __init__(self, call: Callable[[], T]) -> None:
        link = _context.current.link
        assert link is not None, "Queued works in a worker"
        sent = threading.Event()
        answered = threading.Event()
        request_ids: list[int] = []
        send, recv = link.send, link.recv

        def send_and_tell(msg: Any) -> None:
            request_ids.append(msg.req)
            send(msg)
            sent.set()

        def recv_and_note(flags: int = 0) -> Any:
            msg = recv(flags)
            if request_ids and getattr(msg, "req", None) == request_ids[0]:
                answered.set()
            return msg

        self._value: list[T] = []
        self._error: list[BaseException] = []

        def body() -> None:
            try:
                self._value.append(call())
            except BaseException as exc:
                self._error.append(exc)
            finally:
                sent.set()  # a call that failed before sending must not hang us

        link.recv = recv_and_note  # type: ignore[method-assign]
        link.send = send_and_tell  # type: ignore[method-assign]
        try:
            self._thread = threading.Thread(target=body, daemon=True)
            self._thread.start()
            sent.wait()
        finally:
            del link.send  # back to the class's method (recv_and_note stays: it only looks)
        SharedVar("queued.sync", int).create()  # a round trip behind the call
        if answered.is_set() and not self._error:
            raise AssertionError("the master answered at once: the call did not wait")

    def result(self) -> T:
        self._thread.join()
        if self._error:
            raise self._error[0]
        return self._value[0]


def die() -> NoReturn:
    """SIGKILL the calling worker."""
    os.kill(os.getpid(), signal.SIGKILL)
    raise AssertionError("SIGKILL did not kill the worker")


def crashed_by_sigkill(outcome: object) -> bool:
    return isinstance(outcome, netmcore.Crashed) and outcome.signal == signal.SIGKILL


class SlowStdout:
    """A stdout whose flush waits for a byte on a pipe.

    A worker flushes stdout after it has sent its result and before it exits,
    so with this one it stays alive (its link open) until the test lets it go,
    as behind a slow terminal.
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        os.read(self.fd, 1)


class Interrupted(Exception):
    """What a SIGALRM handler raises: a timeout, as users write one."""


def interrupted(call: Callable[[], object], queued: str, again_at: int = 0) -> str:
    """Call ``call``, a plugin call that waits, and have a SIGALRM handler
    interrupt its wait; return "interrupted" or "not interrupted".

    Deterministically: once the call's request is sent, semaphore ``queued`` is
    incremented behind it on the link (so the master has queued the call when
    it serves that), and the call's reply is not read before the SIGALRM, which
    another worker sends: that worker chooses whether the master has answered
    the call by then. With ``again_at``, a second interrupt leaves the
    withdrawal's wait before its ``again_at``-th read from the link.
    """
    link = _context.current.link
    assert link is not None, "interrupted works in a worker"
    recv = link.recv
    alarm_r, alarm_w = os.pipe()
    os.set_blocking(alarm_w, False)

    def handler(_signum: int, _frame: object) -> None:
        raise Interrupted

    reads: list[int] = []

    def recv_interrupted_again(flags: int = 0) -> Any:
        reads.append(1)
        if len(reads) == again_at:
            raise Interrupted("again")
        return recv(flags)

    def recv_after_the_alarm(flags: int = 0) -> Any:
        link.recv = recv_interrupted_again  # type: ignore[method-assign]
        link.send(PluginReq("sem", "increment", queued))  # its reply (request 0) is dropped
        os.read(alarm_r, 1)  # the SIGALRM writes to its wakeup fd; its handler raises
        raise AssertionError("the SIGALRM handler did not raise")

    old_handler = signal.signal(signal.SIGALRM, handler)
    old_wakeup = signal.set_wakeup_fd(alarm_w)
    link.recv = recv_after_the_alarm  # type: ignore[method-assign]
    try:
        call()
        return "not interrupted"
    except Interrupted:
        return "interrupted"
    finally:
        link.recv = recv  # type: ignore[method-assign]
        signal.set_wakeup_fd(old_wakeup)
        signal.signal(signal.SIGALRM, old_handler)
        os.close(alarm_r)
        os.close(alarm_w)


# --------------------------------------------------------------------------
# Process types (module level: they must exist before the master starts)
# --------------------------------------------------------------------------

# --- 1. attaching the plugins ---


@netmcore.process
def read_var(name: str) -> int | None:
    return SharedVar(name, int).get()


@netmcore.process
def every_service(_: int) -> list[list[str]]:
    box = Mbox("box", int)
    return [
        err(lambda: SharedVar("v", int).create(1)),
        err(lambda: SharedVar("v", int).get()),
        err(lambda: PluginMutex("m").lock()),
        err(lambda: PluginMutex("m").unlock()),
        err(lambda: PluginSemaphore("s").create(1)),
        err(lambda: PluginSemaphore("s").increment()),
        err(box.create),
        err(lambda: box.send(1)),
        err(box.receive),
    ]


@netmcore.process
def create_fresh(_: int) -> list[bool]:
    return [
        SharedVar("v", int).create(1),
        PluginSemaphore("s").create(1),
        Mbox("b", int).create(),
    ]


# --- 2. shared variables ---


@netmcore.process
def var_basics(_: int) -> dict[str, Any]:
    v = SharedVar("v", int)
    out: dict[str, Any] = {
        "get_before_create": err(v.get),
        "set_before_create": err(lambda: v.set(1)),
    }
    out["create"] = v.create()
    out["get_unset"] = v.get()
    v.set(3)
    out["get"] = v.get()
    out["create_again"] = v.create(9)
    out["get_after_create_again"] = v.get()
    out["other_process_reads"] = read_var.join(read_var.start("v"))
    v.set(4)
    out["other_process_reads_new"] = read_var.join(read_var.start("v"))
    zero = SharedVar("zero", int)
    out["create_with_zero"] = zero.create(0)
    out["zero"] = zero.get()
    out["delete"] = v.delete()
    out["delete_again"] = v.delete()
    out["get_after_delete"] = err(v.get)
    out["set_after_delete"] = err(lambda: v.set(5))
    out["create_after_delete"] = v.create()
    out["get_after_recreate"] = v.get()
    return out


@netmcore.process
def var_waiter(_: int) -> int:
    waiting = Queued(SharedVar("w", int).wait_for_value)
    PluginSemaphore("queued").increment()
    return waiting.result()


@netmcore.process
def wait_scenario(n: int) -> dict[str, Any]:
    v = SharedVar("w", int)
    v.create()
    queued = signal_sem("queued")
    pids = [var_waiter.start(0) for _ in range(n)]
    for _ in pids:
        queued.decrement()  # every waiter's wait_for_value is queued in the master
    unset = v.get()
    v.set(42)
    return {
        "unset_while_waiting": unset,
        "waiters": [var_waiter.join(pid) for pid in pids],
        "wait_with_value": v.wait_for_value(),
    }


@netmcore.process
def publish(k: int) -> int:
    SharedVar("result", list[int]).create([k, k + 1])
    SharedVar("empty", int).create()
    box = Mbox("full", int, capacity=1)
    box.create()
    box.send(k)
    Mbox("roomy", int, capacity=2).create()
    Mbox("roomy", int).send(k)
    return k


@netmcore.process
def var_type_mismatch(_: int) -> dict[str, Any]:
    SharedVar("x", int).create(1)
    s = SharedVar("x", str)
    return {
        "create": err(s.create),
        "get": err(s.get),
        "set": err(lambda: s.set("a")),
        "wait": err(s.wait_for_value),
        "still": SharedVar("x", int).get(),
        "long": (SharedVar("long", LongName).create(), err(SharedVar("long", int).get)),
    }


@netmcore.process
def var_bad_values(_: int) -> dict[str, Any]:
    p = SharedVar("p", Point)
    xs = SharedVar("xs", list[int])
    job = SharedVar("job", Job)
    n = SharedVar("n", int)
    out: dict[str, Any] = {
        "create_bad": path_of(lambda: p.create(Point(x="a", y=1))),  # type: ignore[arg-type]
        "create_after_refused_create": p.create(Point(1, 2)),
        "struct_field": path_of(lambda: p.set(Point(x=1, y="b"))),  # type: ignore[arg-type]
        "not_a_struct": path_of(lambda: p.set([1, 2])),  # type: ignore[arg-type]
        "still": p.get(),
    }
    xs.create([1])
    out["list_item"] = path_of(lambda: xs.set([1, "two", 3]))  # type: ignore[list-item]
    job.create(Job(1, ["a"]))
    out["nested"] = path_of(lambda: job.set(Job(2, ["a", 3])))  # type: ignore[list-item]
    n.create(0)
    out["bool_for_int"] = path_of(lambda: n.set(True))
    out["values_kept"] = [xs.get(), job.get(), n.get()]
    return out


@netmcore.process
def var_sizes(_: int) -> dict[str, Any]:
    from netmcore._plugins import VALUE_MAX

    v = SharedVar("big", bytes)
    largest = b"L" * (VALUE_MAX - 5)  # msgpack's bin 32 header is 5 bytes
    return {
        "create_over": err(lambda: v.create(b"o" * VALUE_MAX)),
        "create_largest": v.create(largest),
        "largest_back": v.get() == largest,
        "set_over": err(lambda: v.set(b"o" * (VALUE_MAX + 1000))),
        "kept": v.get() == largest,
    }


@netmcore.process
def deleted_waiter(_: int) -> list[str]:
    waiting = Queued(SharedVar("d", int).wait_for_value)
    PluginSemaphore("queued").increment()
    return err(waiting.result)


@netmcore.process
def delete_scenario(_: int) -> dict[str, Any]:
    v = SharedVar("d", int)
    v.create()
    queued = signal_sem("queued")
    pid = deleted_waiter.start(0)
    queued.decrement()
    deleted = v.delete()
    return {"deleted": deleted, "waiter": deleted_waiter.join(pid), "recreate": v.create(7)}


@netmcore.process
def early_waiter(arg: tuple[str, str]) -> list[str]:
    """Wait for the value of variable ``name`` (of ``int`` or ``str``,
    as ``kind`` says), which nobody has created yet."""
    name, kind = arg
    waiting = Queued(SharedVar(name, int if kind == "int" else str).wait_for_value)
    PluginSemaphore("queued").increment()
    return err(waiting.result)


@netmcore.process
def create_and_set(arg: tuple[str, bool]) -> int:
    name, at_create = arg
    v = SharedVar(name, int)
    if at_create:
        v.create(42)
    else:
        v.create()
        v.set(42)
    return 0


@netmcore.process
def wait_before_create_scenario(at_create: bool) -> list[list[str]]:
    queued = signal_sem("queued")
    pids = [early_waiter.start(("late", "int")) for _ in range(2)]
    for _ in pids:
        queued.decrement()  # both waits are queued, for a variable nobody has created
    create_and_set.join(create_and_set.start(("late", at_create)))
    return [early_waiter.join(pid) for pid in pids]


@netmcore.process
def wait_before_create_of_another_type(_: int) -> dict[str, Any]:
    queued = signal_sem("queued")
    wrong = early_waiter.start(("typed", "str"))
    right = early_waiter.start(("typed", "int"))
    queued.decrement()
    queued.decrement()
    v = SharedVar("typed", int)
    v.create()  # without a value: the wait of another type fails now, not at the set
    out: dict[str, Any] = {"wrong": early_waiter.join(wrong)}
    v.set(5)
    out["right"] = early_waiter.join(right)
    return out


@netmcore.process
def delete_before_create_scenario(_: int) -> dict[str, Any]:
    queued = signal_sem("queued")
    never = early_waiter.start(("never", "int"))
    later = early_waiter.start(("later", "int"))
    queued.decrement()
    queued.decrement()
    out: dict[str, Any] = {"deleted_never": SharedVar("never", int).delete()}
    out["never"] = early_waiter.join(never)
    out["recreate_never"] = SharedVar("never", int).create(7)
    SharedVar("later", int).create()  # its waiter now waits for a value
    out["deleted_later"] = SharedVar("later", int).delete()
    out["later"] = early_waiter.join(later)
    return out


@netmcore.process
def unmade_timeout_scenario(n: int) -> dict[str, Any]:
    v = SharedVar("unmade", int)
    out: dict[str, Any] = {
        "unmade": timed_out(lambda: v.wait_for_value(timeout=SHORT)),
        "try": timed_out(lambda: v.wait_for_value(timeout=0)),
    }
    for i in range(n):  # each on a name that is never created
        timed_out(lambda i=i: SharedVar(f"never-{i}", int).wait_for_value(timeout=0.001))
    v.create(5)  # a timed-out wait still queued would be answered now
    out["value"] = v.wait_for_value(timeout=0)
    return out


@netmcore.process
def wait_unmade_and_die(_: int) -> int:
    Queued(SharedVar("ghost", int).wait_for_value)
    Queued(SharedVar("ghost", str).wait_for_value)
    PluginSemaphore("queued").increment()  # served after the two waits above
    die()


@netmcore.process
def dead_unmade_waiter_scenario(_: int) -> dict[str, Any]:
    queued = signal_sem("queued")
    victim = wait_unmade_and_die.start(0)
    queued.decrement()
    out: dict[str, Any] = {"crashed": crashed_by_sigkill(wait_unmade_and_die.join_outcome(victim))}
    SharedVar("ghost", int).create(1)
    out["value"] = SharedVar("ghost", int).wait_for_value()
    return out


# What each kind of compare_and_set loop adds to its variable, which it
# creates with a value (an int for the float: a get reads it back as 0.0).
CAS_KINDS: dict[str, tuple[Any, Any]] = {
    "int": (int, 0),
    "float": (float, 0),
    # Sets encode in the order their items come, which may differ once read
    # back: {11, 53, 39, 51} reads back as {11, 51, 53, 39}, say.
    "set": (set[int], set()),
}


def cas_add(old: Any, token: int) -> Any:
    return old | {token} if isinstance(old, set) else old + 1


@netmcore.process
def cas_adder(arg: tuple[str, int, int]) -> int:
    """Add to variable "total" ``k`` times, each in a compare_and_set loop."""
    kind, worker, k = arg
    total = SharedVar("total", CAS_KINDS[kind][0])
    PluginSemaphore("ready").increment()
    PluginSemaphore("go").decrement()  # all start at once
    for i in range(k):
        while True:
            old = total.get()
            if total.compare_and_set(old, cas_add(old, worker * 1000 + i)):
                break
    return k


@netmcore.process
def cas_counter_scenario(arg: tuple[str, int, int]) -> Any:
    kind, n, k = arg
    typ, initial = CAS_KINDS[kind]
    total = SharedVar("total", typ)
    total.create(initial)
    ready, go = signal_sem("ready"), signal_sem("go")
    pids = [cas_adder.start((kind, worker, k)) for worker in range(n)]
    for _ in pids:
        ready.decrement()
    for _ in pids:
        go.increment()
    assert [cas_adder.join(pid) for pid in pids] == [k] * n
    got = total.get()
    return sorted(got) if isinstance(got, set) else got


@netmcore.process
def cas_no_value(_: int) -> dict[str, Any]:
    v = SharedVar("v", int)
    v.create()
    out: dict[str, Any] = {
        "expects_5": v.compare_and_set(5, 1),
        "still_none": v.get(),
        "expects_none": v.compare_and_set(None, 1),
        "now": v.get(),
        "expects_none_again": v.compare_and_set(None, 2),
        "expects_1": v.compare_and_set(1, 2),
        "stale": v.compare_and_set(1, 3),
        "kept": v.get(),
    }
    o = SharedVar("o", int | None)  # None is a value of its type too
    o.create()
    out["optional"] = [
        o.compare_and_set(None, None),  # no value: it holds None now
        o.get(),
        o.compare_and_set(None, 4),  # a held None matches None too
        o.get(),
        o.compare_and_set(None, 5),
        o.get(),
    ]
    return out


@netmcore.process
def cas_equality(_: int) -> dict[str, Any]:
    f = SharedVar("f", float)
    f.create(1)  # an int given for a float
    out: dict[str, Any] = {"int_for_float": [f.compare_and_set(1, 2.0), f.get()]}
    out["float_for_int_given"] = f.compare_and_set(2, -0.0)  # it holds 2.0: an int matches
    out["zero"] = [f.compare_and_set(0.0, 3.0), f.compare_and_set(-0.0, float("nan"))]
    out["nan"] = [f.compare_and_set(float("nan"), 4.0), f.get()]
    d = SharedVar("d", dict[str, int])
    d.create({"a": 1, "b": 2})
    out["dict_other_order"] = d.compare_and_set({"b": 2, "a": 1}, {})
    out["dict_same_order"] = d.compare_and_set({"a": 1, "b": 2}, {"c": 3})
    out["dict_read"] = d.compare_and_set(d.get(), {"d": 4})
    out["dict_stale"] = d.compare_and_set({"c": 3}, {})
    out["dict"] = d.get()
    return out


@netmcore.process
def swap_scenario(_: int) -> dict[str, Any]:
    queued = signal_sem("queued")
    swapped_waiter = early_waiter.start(("swapped", "int"))
    cas_waiter = early_waiter.start(("compared", "int"))
    queued.decrement()
    queued.decrement()
    v, c = SharedVar("swapped", int), SharedVar("compared", int)
    v.create()
    c.create()
    out: dict[str, Any] = {"swaps": [v.swap(1), v.swap(2), v.get()]}
    out["cas"] = c.compare_and_set(None, 8)
    out["waiters"] = [early_waiter.join(swapped_waiter), early_waiter.join(cas_waiter)]
    return out


@netmcore.process
def cas_refused(_: int) -> dict[str, Any]:
    from netmcore._plugins import VALUE_MAX

    v = SharedVar("big", bytes)
    v.create(b"held")
    over = b"o" * VALUE_MAX
    out: dict[str, Any] = {
        "expected_over": err(lambda: v.compare_and_set(over, b"new")),
        "new_over": err(lambda: v.compare_and_set(b"held", over)),
        "swap_over": err(lambda: v.swap(over)),
        "kept": v.get(),
        "unknown": [
            err(lambda: SharedVar("nobody", int).compare_and_set(None, 1)),
            err(lambda: SharedVar("nobody", int).swap(1)),
        ],
        "mismatch": [
            err(lambda: SharedVar("big", str).compare_and_set("held", "x")),
            err(lambda: SharedVar("big", str).swap("x")),
        ],
        "still": v.get(),
    }
    return out


@netmcore.process
def mbox_deleted_waiter(role: str) -> list[str]:
    box = Mbox("gone", int)
    waiting = Queued(box.receive if role == "receiver" else lambda: box.send(2))
    PluginSemaphore("queued").increment()
    return err(waiting.result)


@netmcore.process
def mbox_delete_scenario(role: str) -> dict[str, Any]:
    """A box deleted while a receiver (of an empty box) or a sender (to a
    full one) waits on it: the waiter fails, the box and its messages are
    gone, and its name can be made again, with another type even."""
    box = Mbox("gone", int)
    box.create()
    if role == "sender":
        box.send(1)  # full: the next send waits
    queued = signal_sem("queued")
    pid = mbox_deleted_waiter.start(role)
    queued.decrement()
    mismatch = err(lambda: Mbox("gone", str).delete())
    out: dict[str, Any] = {"mismatch": mismatch, "deleted": box.delete()}
    out["waiter"] = mbox_deleted_waiter.join(pid)
    out["again"] = box.delete()
    out["receive"] = err(box.receive)
    other = Mbox("gone", str)
    out["recreated"] = other.create()
    other.send("new")
    out["new"] = other.receive()
    return out


@pytest.mark.parametrize("role", ["receiver", "sender"])
def test_mbox_delete_fails_its_waiters_and_frees_its_name(role: str) -> None:
    out = run_scenario(mbox_delete_scenario, role)
    assert out["mismatch"][0] == "EncapTypeMismatch"
    assert out["deleted"] is True
    assert out["waiter"] == ["PluginError", "message box 'gone' was deleted"]
    assert out["again"] is False
    assert out["receive"][0] == "PluginError"
    assert out["recreated"] is True
    assert out["new"] == "new"


# --- 3. mutexes ---


@netmcore.process
def count_under_mutex(k: int) -> int:
    m = PluginMutex("m")
    count = SharedVar("count", int)
    for i in range(k):
        if i % 2:
            with m:
                value = count.get()
                assert value is not None
                count.set(value + 1)
        else:
            m.lock()
            value = count.get()
            assert value is not None
            count.set(value + 1)
            m.unlock()
    return k


@netmcore.process
def exclusion_scenario(arg: tuple[int, int]) -> int | None:
    n, k = arg
    count = SharedVar("count", int)
    count.create(0)
    pids = [count_under_mutex.start(k) for _ in range(n)]
    for pid in pids:
        assert count_under_mutex.join(pid) == k
    return count.get()


@netmcore.process
def lock_waiter(_: int) -> list[str]:
    m = PluginMutex("m")
    locking = Queued(m.lock)
    PluginSemaphore("queued").increment()
    locking.result()
    seen = SharedVar("log", list[str]).get()
    m.unlock()
    return seen or []


@netmcore.process
def lock_order_scenario(_: int) -> list[str]:
    m = PluginMutex("m")
    log = SharedVar("log", list[str])
    log.create([])
    queued = signal_sem("queued")
    m.lock()
    pid = lock_waiter.start(0)
    queued.decrement()  # the waiter's lock is queued in the master
    log.set(["the holder wrote this before unlocking"])
    m.unlock()
    return lock_waiter.join(pid) or ["the waiter failed"]


@netmcore.process
def hold_until_told(_: int) -> list[str]:
    m = PluginMutex("m")
    m.lock()
    PluginSemaphore("locked").increment()
    PluginSemaphore("done").decrement()
    return err(m.unlock)


@netmcore.process
def non_holder_scenario(_: int) -> dict[str, Any]:
    locked = signal_sem("locked")
    done = signal_sem("done")
    pid = hold_until_told.start(0)
    try:
        locked.decrement()
        other = err(PluginMutex("m").unlock)
        never = err(PluginMutex("never-locked").unlock)
    finally:
        done.increment()
    return {
        "holder": pid.n,
        "me": netmcore.self_process_id().n,
        "other": other,
        "never": never,
        "holder_unlock": hold_until_told.join(pid),
    }


@netmcore.process
def lock_and_die(_: int) -> int:
    PluginMutex("m").lock()
    PluginSemaphore("locked").increment()
    PluginSemaphore("queued").decrement()  # the waiter is queued behind us
    die()


@netmcore.process
def wait_for_dead_holder(_: int) -> str:
    m = PluginMutex("m")
    PluginSemaphore("locked").decrement()
    locking = Queued(m.lock)
    PluginSemaphore("queued").increment()
    locking.result()
    m.unlock()
    return "got the lock"


@netmcore.process
def dead_holder_scenario(_: int) -> dict[str, Any]:
    signal_sem("locked")
    signal_sem("queued")
    holder = lock_and_die.start(0)
    waiter = wait_for_dead_holder.start(0)
    holder_outcome = lock_and_die.join_outcome(holder)
    return {
        "holder_crashed": crashed_by_sigkill(holder_outcome),
        "waiter": wait_for_dead_holder.join(waiter),
        "after": err(PluginMutex("m").unlock),  # free again: held by nobody
    }


@netmcore.process
def lock_twice(_: int) -> dict[str, Any]:
    m = PluginMutex("m")
    m.lock()
    out = {"again": err(m.lock), "unlock": err(m.unlock), "unlock_again": err(m.unlock)}
    out["relock"] = err(m.lock)
    m.unlock()
    return out


# --- 4. semaphores ---


@netmcore.process
def sem_basics(_: int) -> dict[str, Any]:
    s = PluginSemaphore("s")
    out: dict[str, Any] = {"get_before_create": err(s.get)}
    out["create"] = s.create(2)
    out["create_again"] = s.create(5)
    out["get"] = s.get()
    out["increment"] = s.increment()
    out["decrements"] = [s.decrement(), s.decrement(), s.decrement()]
    out["nowait_at_zero"] = s.decrement(wait=False)
    out["get_at_zero"] = s.get()
    s.increment()
    out["nowait_at_one"] = s.decrement(wait=False)
    z = PluginSemaphore("z")
    out["create_zero"] = [z.create(), z.get()]
    out["destroy"] = s.destroy()
    out["destroy_again"] = s.destroy()
    out["get_after_destroy"] = err(s.get)
    out["increment_after_destroy"] = err(s.increment)
    out["recreate"] = [s.create(1), s.get()]
    out["bad_initial"] = [err(lambda: s.create(-1)), err(lambda: s.create("1"))]  # type: ignore[arg-type]
    return out


@netmcore.process
def sem_waiter(_: int) -> list[int]:
    """Wait on a decrement; return its value and the count right after (while alive)."""
    s = PluginSemaphore("s")
    waiting = Queued(s.decrement)
    PluginSemaphore("queued").increment()
    return [waiting.result(), s.get()]


@netmcore.process
def sem_wake_scenario(_: int) -> dict[str, Any]:
    s = PluginSemaphore("s")
    s.create(0)
    queued = signal_sem("queued")
    pid = sem_waiter.start(0)
    queued.decrement()
    while_waiting = s.get()
    increment = s.increment()
    return {
        "while_waiting": while_waiting,
        "increment": increment,
        "waiter": sem_waiter.join(pid),
        "after": s.get(),
    }


@netmcore.process
def sem_ops_and_die(ops: list[str]) -> int:
    s = PluginSemaphore("s")
    for op in ops:
        if op == "dec":
            s.decrement()
        else:
            s.increment()
    PluginSemaphore("done").increment()
    PluginSemaphore("read").decrement()  # alive until the scenario has read the count
    die()


@netmcore.process
def protect_scenario(arg: tuple[bool, int, list[str]]) -> dict[str, int]:
    protected, initial, ops = arg
    s = PluginSemaphore("s")
    s.create(initial, protected=protected)
    done = signal_sem("done")
    read = signal_sem("read")
    pid = sem_ops_and_die.start(ops)
    done.decrement()
    before = s.get()
    read.increment()
    assert crashed_by_sigkill(sem_ops_and_die.join_outcome(pid))
    return {"before_death": before, "after_death": s.get()}


@netmcore.process
def take_then_die(_: int) -> int:
    PluginSemaphore("s").decrement()
    PluginSemaphore("taken").increment()
    PluginSemaphore("queued").decrement()
    die()


@netmcore.process
def protect_wake_scenario(_: int) -> dict[str, Any]:
    s = PluginSemaphore("s")
    s.create(1, protected=True)
    taken = signal_sem("taken")
    signal_sem("queued")  # the waiter signals it, the victim waits for it
    victim = take_then_die.start(0)
    taken.decrement()
    waiter = sem_waiter.start(0)  # its decrement waits: the count is 0
    victim_outcome = take_then_die.join_outcome(victim)
    return {
        "victim_crashed": crashed_by_sigkill(victim_outcome),
        "waiter": sem_waiter.join(waiter),
    }


@netmcore.process
def destroyed_waiter(_: int) -> list[str]:
    waiting = Queued(PluginSemaphore("s").decrement)
    PluginSemaphore("queued").increment()
    return err(waiting.result)


@netmcore.process
def destroy_scenario(_: int) -> dict[str, Any]:
    s = PluginSemaphore("s")
    s.create(0)
    queued = signal_sem("queued")
    pid = destroyed_waiter.start(0)
    queued.decrement()
    return {"destroy": s.destroy(), "waiter": destroyed_waiter.join(pid)}


# --- 5. message boxes ---


@netmcore.process
def open_and_send(msg: str) -> bool:
    box = Mbox("box", str)
    created = box.create()  # upstream blocks here until a send: a deadlock
    box.send(msg)
    return created


@netmcore.process
def mbox_open_scenario(_: int) -> dict[str, Any]:
    box = Mbox("box", str)
    created = box.create()
    again = box.create()
    pid = open_and_send.start("hello")
    return {
        "created": created,
        "again": again,
        "received": box.receive(),
        "sender_created": open_and_send.join(pid),
    }


@netmcore.process
def send_all(arg: tuple[str, int, int]) -> int:
    """Send (sender, i) for i in range(count) to the box ``name``."""
    name, sender, count = arg
    box = Mbox(name, tuple[int, int])
    box.create()
    for i in range(count):
        box.send((sender, i))
    return count


@netmcore.process
def mbox_fifo_scenario(_: int) -> dict[str, Any]:
    roomy = Mbox("roomy", tuple[int, int], capacity=5)
    roomy.create()
    assert send_all.join(send_all.start(("roomy", 0, 5))) == 5  # 5 fit: the sender never waits
    in_box = [roomy.receive() for _ in range(5)]
    narrow = Mbox("narrow", tuple[int, int], capacity=1)
    narrow.create()
    pid = send_all.start(("narrow", 1, 20))
    streamed = [narrow.receive() for _ in range(20)]
    send_all.join(pid)
    return {"in_box": in_box, "streamed": streamed}


@netmcore.process
def send_when_full(_: int) -> str:
    sending = Queued(lambda: Mbox("box", str).send("second"))
    PluginSemaphore("queued").increment()
    sending.result()
    return SharedVar("log", str).get() or "nothing"


@netmcore.process
def mbox_full_scenario(_: int) -> dict[str, Any]:
    box = Mbox("box", str, capacity=1)
    box.create()
    log = SharedVar("log", str)
    log.create("")
    queued = signal_sem("queued")
    box.send("first")  # the box is full
    pid = send_when_full.start(0)
    queued.decrement()  # the second send is queued in the master
    log.set("the receiver made room")
    first = box.receive()
    return {
        "first": first,
        "sender_saw": send_when_full.join(pid),
        "second": box.receive(),
    }


@netmcore.process
def receive_one(_: int) -> str:
    receiving = Queued(Mbox("box", str).receive)
    PluginSemaphore("queued").increment()
    return receiving.result()


@netmcore.process
def mbox_receive_waits_scenario(_: int) -> str | None:
    box = Mbox("box", str)
    box.create()
    queued = signal_sem("queued")
    pid = receive_one.start(0)
    queued.decrement()  # the receive is queued, and the box is empty
    box.send("late")
    return receive_one.join(pid)


@netmcore.process
def many_senders_scenario(arg: tuple[int, int]) -> list[tuple[int, int]]:
    senders, count = arg
    box = Mbox("box", tuple[int, int], capacity=2)
    box.create()
    pids = [send_all.start(("box", s, count)) for s in range(senders)]
    got = [box.receive() for _ in range(senders * count)]
    for pid in pids:
        assert send_all.join(pid) == count
    return got


@netmcore.process
def mbox_type_mismatch(_: int) -> dict[str, Any]:
    box = Mbox("b", int)
    box.create()
    other = Mbox("b", str)
    out: dict[str, Any] = {
        "create": err(other.create),
        "send": err(lambda: other.send("x")),
        "receive": err(other.receive),
    }
    box.send(5)
    out["still"] = box.receive()
    out["unknown_box"] = [
        err(Mbox("nobody", int).receive),
        err(lambda: Mbox("nobody", int).send(1)),
    ]
    return out


@netmcore.process
def mbox_bad_messages(_: int) -> dict[str, Any]:
    points = Mbox("points", Point, capacity=4)
    points.create()
    jobs = Mbox("jobs", Job, capacity=4)
    jobs.create()
    out: dict[str, Any] = {
        "field": path_of(lambda: points.send(Point(x="a", y=1))),  # type: ignore[arg-type]
        "not_a_struct": path_of(lambda: points.send([1, 2])),  # type: ignore[arg-type]
        "nested": path_of(lambda: jobs.send(Job(1, ["a", 2, "c"]))),  # type: ignore[list-item]
        "id": path_of(lambda: jobs.send(Job("one", []))),  # type: ignore[arg-type]
    }
    points.send(Point(1, 2))  # nothing of the refused sends reached the box
    jobs.send(Job(3, ["ok"]))
    out["received"] = [points.receive(), jobs.receive()]
    return out


# --- 6. the master's plugin state after a crash ---


@netmcore.process
def hold_wait_and_die(_: int) -> int:
    PluginMutex("m").lock()
    Queued(PluginSemaphore("s").decrement)
    Queued(Mbox("box", str).receive)
    Queued(SharedVar("v", int).wait_for_value)
    PluginSemaphore("queued").increment()  # served after the three waits above
    die()


@netmcore.process
def receive_after(_: int) -> str:
    PluginSemaphore("go").decrement()
    return Mbox("box", str).receive()


@netmcore.process
def after_crash_scenario(_: int) -> dict[str, Any]:
    s = PluginSemaphore("s")
    s.create(0)
    box = Mbox("box", str, capacity=1)
    box.create()
    v = SharedVar("v", int)
    v.create()
    queued = signal_sem("queued")
    go = signal_sem("go")
    victim = hold_wait_and_die.start(0)
    queued.decrement()
    crashed = crashed_by_sigkill(hold_wait_and_die.join_outcome(victim))
    out: dict[str, Any] = {"victim_crashed": crashed}
    out["mutex_holder"] = err(PluginMutex("m").unlock)  # nobody holds it now
    assert "held by nobody" in out["mutex_holder"][1], out  # fail now rather than hang below
    PluginMutex("m").lock()
    PluginMutex("m").unlock()
    out["increment"] = s.increment()
    out["sem_after_increment"] = s.get()
    out["decrement"] = s.decrement(wait=False)
    receiver = receive_after.start(0)
    box.send("for a live receiver")
    go.increment()
    out["received"] = receive_after.join(receiver)
    v.set(5)
    out["var"] = v.get()
    out["var_reader"] = read_var.join(read_var.start("v"))
    return out


@netmcore.process
def hold_and_return(fd: int) -> str:
    """Lock, take a protected count, wait for a message in a thread, and return
    while all of it is held; then stay alive until ``fd`` gives a byte."""
    sys.stdout = SlowStdout(fd)
    PluginMutex("m").lock()
    PluginSemaphore("s").decrement()
    Queued(Mbox("box", str).receive)
    PluginSemaphore("queued").increment()
    return "returned"


@netmcore.process
def after_return_scenario(gate: tuple[int, int]) -> dict[str, Any]:
    gate_r, gate_w = gate
    s = PluginSemaphore("s")
    s.create(1, protected=True)
    box = Mbox("box", str, capacity=2)
    box.create()
    queued = signal_sem("queued")
    try:
        pid = hold_and_return.start(gate_r)
        queued.decrement()
        out: dict[str, Any] = {"joined": hold_and_return.join(pid)}
        # The worker has returned and been joined; it is still flushing its stdout.
        out["mutex_holder"] = err(PluginMutex("m").unlock)
        out["sem"] = s.get()
        box.send("first")
        box.send("second")
        out["received"] = box.receive()
    finally:
        os.write(gate_w, b"x")  # let the worker exit
    return out


# --- 7. a waiting call that is interrupted ---


def two_box() -> Mbox[int]:
    return Mbox("b", int, capacity=2)


def lock_and_unlock() -> str:
    m = PluginMutex("m")
    try:
        m.lock()
    except netmcore.PluginError as exc:
        return str(exc)
    m.unlock()
    return "locked"


def receive_send_receive() -> int:
    two_box().receive()
    two_box().send(7)
    return two_box().receive()


# Each kind of interrupted call: the call, what another worker does that
# answers it (the mutex is that worker's), and what the caller sees afterwards.
INTERRUPTED: dict[str, tuple[Callable[[], object], Callable[[], object], Callable[[], object]]] = {
    "lock": (PluginMutex("m").lock, PluginMutex("m").unlock, lock_and_unlock),
    "decrement": (
        PluginSemaphore("s").decrement,
        PluginSemaphore("s").increment,
        PluginSemaphore("s").get,
    ),
    "receive": (
        two_box().receive,
        lambda: [two_box().send(1), two_box().send(2)],
        two_box().receive,
    ),
    # The box is full (two messages); the other worker takes one.
    "send": (lambda: two_box().send(5), two_box().receive, receive_send_receive),
    # A wait for a variable nobody has created yet; the other worker creates it.
    "wait_for_value": (
        SharedVar("u", int).wait_for_value,
        lambda: SharedVar("u", int).create(9),
        SharedVar("u", int).get,
    ),
}


@netmcore.process
def answer_and_alarm(arg: tuple[str, bool, int]) -> int:
    kind, answered_first, victim = arg
    if kind == "lock":
        PluginMutex("m").lock()
    PluginSemaphore("ready").increment()
    PluginSemaphore("queued").decrement()  # the victim's call is queued in the master
    answer = INTERRUPTED[kind][1]
    if answered_first:
        answer()  # the master answers the call before the victim withdraws it
    os.kill(victim, signal.SIGALRM)
    PluginSemaphore("withdrawn").decrement()
    if not answered_first:
        answer()  # as if the interrupted call had never been made
    PluginSemaphore("answered").increment()
    return 0


@netmcore.process
def interrupted_scenario(arg: tuple[str, bool, int]) -> list[object]:
    kind, answered_first, again_at = arg
    for name in ("ready", "queued", "withdrawn", "answered"):
        signal_sem(name)
    PluginSemaphore("s").create(0)
    two_box().create()
    if kind == "send":
        two_box().send(0)
        two_box().send(0)
    call, _, afterwards = INTERRUPTED[kind]
    pid = answer_and_alarm.start((kind, answered_first, os.getpid()))
    PluginSemaphore("ready").decrement()
    out = [interrupted(call, "queued", again_at)]
    PluginSemaphore("withdrawn").increment()
    PluginSemaphore("answered").decrement()
    out.append(afterwards())
    answer_and_alarm.join(pid)
    return out


# --- 8. timeouts ---

SHORT = 0.05  # a timeout that runs out; tests assert what it leaves, never how long it took


def timed_out(call: Callable[[], object]) -> str:
    """Call ``call``, which must raise TimeoutError; return its message."""
    try:
        result = call()
    except TimeoutError as exc:
        return str(exc)
    raise AssertionError(f"the call did not time out: it returned {result!r}")


@netmcore.process
def receive_timeout_scenario(_: int) -> dict[str, Any]:
    box = Mbox("box", int, capacity=2)
    box.create()
    out: dict[str, Any] = {
        "empty": timed_out(lambda: box.receive(timeout=SHORT)),
        "try": timed_out(lambda: box.receive(timeout=0)),
    }
    # A timed-out receive still queued in the master would swallow the first.
    box.send(1)
    box.send(2)
    out["after"] = [box.receive(timeout=0), box.receive(timeout=0)]
    return out


@netmcore.process
def send_timeout_scenario(_: int) -> dict[str, Any]:
    box = Mbox("box", int)  # capacity 1
    box.create()
    box.send(1)
    out: dict[str, Any] = {
        "full": timed_out(lambda: box.send(2, timeout=SHORT)),
        "try": timed_out(lambda: box.send(3, timeout=0)),
    }
    # A timed-out send still queued would put its message in the freed slot.
    out["first"] = box.receive(timeout=0)
    out["then"] = err(lambda: box.receive(timeout=0))
    return out


@netmcore.process
def lock_timeout_scenario(_: int) -> dict[str, Any]:
    m = PluginMutex("m")
    locked = signal_sem("locked")
    done = signal_sem("done")
    pid = hold_until_told.start(0)
    locked.decrement()
    out: dict[str, Any] = {
        "held": timed_out(lambda: m.lock(timeout=SHORT)),
        "try": timed_out(lambda: m.lock(timeout=0)),
    }
    done.increment()
    # The holder unlocks and ends: a timed-out lock still queued would get the
    # mutex, for this process, and the next lock would find it "already locked".
    out["holder_unlock"] = hold_until_told.join(pid)
    out["after"] = err(lambda: m.lock(timeout=0))
    out["unlock"] = err(m.unlock)
    return out


@netmcore.process
def decrement_timeout_scenario(_: int) -> dict[str, Any]:
    s = PluginSemaphore("s")
    s.create(0)
    out: dict[str, Any] = {
        "zero": timed_out(lambda: s.decrement(timeout=SHORT)),
        "try": timed_out(lambda: s.decrement(timeout=0)),
    }
    out["increment"] = s.increment()  # a timed-out decrement still queued would take it
    out["take"] = s.decrement(timeout=0)
    return out


@netmcore.process
def var_timeout_scenario(_: int) -> dict[str, Any]:
    v = SharedVar("v", int)
    v.create()
    out: dict[str, Any] = {
        "unset": timed_out(lambda: v.wait_for_value(timeout=SHORT)),
        "try": timed_out(lambda: v.wait_for_value(timeout=0)),
    }
    v.set(5)
    out["value"] = v.wait_for_value(timeout=0)
    return out


@netmcore.process
def receive_in_time(timeout: float) -> int:
    receiving = Queued(lambda: Mbox("box", int).receive(timeout=timeout))
    PluginSemaphore("queued").increment()
    return receiving.result()


@netmcore.process
def lock_in_time(timeout: float) -> str:
    m = PluginMutex("m")
    locking = Queued(lambda: m.lock(timeout=timeout))
    PluginSemaphore("queued").increment()
    locking.result()
    m.unlock()
    return "locked"


@netmcore.process
def answered_in_time_scenario(timeout: float) -> list[Any]:
    box = Mbox("box", int)
    box.create()
    queued = signal_sem("queued")
    receiver = receive_in_time.start(timeout)
    queued.decrement()  # its receive waits in the master, with a deadline
    box.send(7)
    m = PluginMutex("m")
    m.lock()
    locker = lock_in_time.start(timeout)
    queued.decrement()  # its lock waits in the master, with a deadline
    m.unlock()
    return [receive_in_time.join(receiver), lock_in_time.join(locker)]


# --------------------------------------------------------------------------
# Test helpers
# --------------------------------------------------------------------------


def run_scenario(proc: Any, arg: Any, *, plugins: bool = True) -> Any:
    """Run ``proc(arg)`` as the first process, with the plugins attached."""
    return scenario.run_scenario(proc, arg, init_ctrl=netmcore.add_plugins if plugins else None)


# --------------------------------------------------------------------------
# 1. Attaching the plugins
# --------------------------------------------------------------------------


def test_add_plugins_twice_keeps_the_plugins_and_their_state() -> None:
    def init(ctrl: netmcore.Controller) -> None:
        netmcore.add_plugins(ctrl)
        assert SharedVar("v", int).create(7) is True  # the master can use them at once
        netmcore.add_plugins(ctrl)  # a second attach must not replace the first

    value = netmcore.run(
        first_process=lambda: read_var.start("v"),
        extract_result=lambda _ctrl, pid: read_var.join_nowait(pid),
        init_ctrl=init,
    )
    assert value == 7


def test_add_plugins_after_its_run_raises_context_error() -> None:
    # It attached plugins to a master that was gone, and said nothing: the
    # program went on as if its plugins were there for a next run.
    controllers: list[netmcore.Controller] = []

    def init(ctrl: netmcore.Controller) -> None:
        netmcore.add_plugins(ctrl)
        assert SharedVar("v", int).create(7) is True
        controllers.append(ctrl)

    value = netmcore.run(
        first_process=lambda: read_var.start("v"),
        extract_result=lambda _ctrl, pid: read_var.join_nowait(pid),
        init_ctrl=init,
    )
    assert value == 7
    (ctrl,) = controllers
    with pytest.raises(netmcore.ContextError) as info:
        netmcore.add_plugins(ctrl)
    assert str(info.value).startswith(
        f"add_plugins(controller) was called after its run (master pid {os.getpid()}) had ended"
    )
    assert "Call it in init_ctrl or extract_result" in str(info.value)


def test_without_add_plugins_every_call_raises_plugin_error_naming_add_plugins() -> None:
    results = run_scenario(every_service, 0, plugins=False)
    assert len(results) == 9
    for name, message in results:
        assert name == "PluginError", (name, message)
        assert "add_plugins" in message

    def extract(_ctrl: netmcore.Controller, _pid: Any) -> list[str]:
        return err(SharedVar("v", int).get)

    in_master = netmcore.run(first_process=lambda: every_service.start(0), extract_result=extract)
    assert in_master[0] == "PluginError"
    assert "add_plugins" in in_master[1]


def test_each_run_starts_with_empty_plugins() -> None:
    assert run_scenario(create_fresh, 0) == [True, True, True]
    assert run_scenario(create_fresh, 0) == [True, True, True]


@pytest.mark.parametrize(
    "call",
    [
        lambda: SharedVar("v", int).create(1),
        lambda: SharedVar("v", int).get(),
        lambda: SharedVar("v", int).set(1),
        lambda: SharedVar("v", int).wait_for_value(),
        lambda: SharedVar("v", int).delete(),
        lambda: PluginMutex("m").lock(),
        lambda: PluginMutex("m").unlock(),
        lambda: PluginSemaphore("s").create(1),
        lambda: PluginSemaphore("s").decrement(),
        lambda: Mbox("b", int).create(),
        lambda: Mbox("b", int).send(1),
        lambda: Mbox("b", int).receive(),
        lambda: Mbox("b", int).delete(),
        lambda: PluginSemaphore("s").destroy(),
    ],
    ids=[
        "var.create",
        "var.get",
        "var.set",
        "var.wait",
        "var.delete",
        "mutex.lock",
        "mutex.unlock",
        "sem.create",
        "sem.decrement",
        "mbox.create",
        "mbox.send",
        "mbox.receive",
        "mbox.delete",
        "sem.destroy",
    ],
)
def test_plugin_calls_outside_run_raise_context_error(call: Callable[[], object]) -> None:
    with pytest.raises(netmcore.ContextError, match=r"netmcore\.run"):
        call()


def test_handles_check_their_arguments_where_they_are_made() -> None:
    with pytest.raises(ValueError, match="non-empty"):
        SharedVar("", int)
    with pytest.raises(ValueError, match="non-empty"):
        PluginMutex("")
    with pytest.raises(ValueError, match="at least 1"):
        Mbox("b", int, capacity=0)
    with pytest.raises(
        TypeError,
        match=re.escape(
            "capacity=True is not valid: it must be an int (a count, at least 1), not bool; "
            "pass an int, like capacity=1"
        ),
    ):
        Mbox("b", int, capacity=True)
    with pytest.raises(TypeError):
        SharedVar("v", threading.Lock)  # msgspec cannot encode it


# --------------------------------------------------------------------------
# 2. Shared variables
# --------------------------------------------------------------------------


def test_shared_var_create_set_get_delete() -> None:
    out = run_scenario(var_basics, 0)
    assert out["get_before_create"][0] == "PluginError"
    assert "create it first" in out["get_before_create"][1]
    assert out["set_before_create"][0] == "PluginError"
    assert out["create"] is True
    assert out["get_unset"] is None
    assert out["get"] == 3
    assert out["create_again"] is False, "creating an existing variable must say so"
    assert out["get_after_create_again"] == 3, "creating an existing variable changed it"
    assert out["other_process_reads"] == 3
    assert out["other_process_reads_new"] == 4
    assert out["create_with_zero"] is True
    assert out["zero"] == 0, "a falsy initial value was dropped"
    assert out["delete"] is True
    assert out["delete_again"] is False
    assert out["get_after_delete"][0] == "PluginError"
    assert out["set_after_delete"][0] == "PluginError"
    assert out["create_after_delete"] is True
    assert out["get_after_recreate"] is None


def test_wait_for_value_blocks_until_another_worker_sets_it() -> None:
    out = run_scenario(wait_scenario, 3)
    assert out["unset_while_waiting"] is None
    assert out["waiters"] == [42, 42, 42], "one set must wake every waiter with the value"
    assert out["wait_with_value"] == 42


def test_in_the_master_plugins_take_what_is_there_and_refuse_to_wait() -> None:
    # The master's own code (here extract_result) blocks the master, which
    # serves every worker: a call that would wait there raises ContextError
    # (it was a PluginError), one that needs no wait works (a receive always
    # raised), and timeout=0 is a try.
    def extract(_ctrl: netmcore.Controller, pid: netmcore.ProcessId[int]) -> dict[str, Any]:
        full = Mbox("full", int)
        empty = SharedVar("empty", int)
        s = PluginSemaphore("master-sem")
        m = PluginMutex("master-mutex")
        return {
            "joined": publish.join_nowait(pid),
            "result": SharedVar("result", list[int]).get(),
            "empty": empty.get(),
            "wait_empty": err(empty.wait_for_value),
            "wait_empty_timeout": err(lambda: empty.wait_for_value(timeout=5)),
            "wait_empty_try": err(lambda: empty.wait_for_value(timeout=0)),
            "wait_set": SharedVar("result", list[int]).wait_for_value(),
            "wait_unmade": err(SharedVar("unmade", int).wait_for_value),
            "cas": [
                SharedVar("result", list[int]).compare_and_set([10, 11], [1]),
                SharedVar("result", list[int]).compare_and_set([10, 11], [2]),
                SharedVar("result", list[int]).swap([3]),
                SharedVar("result", list[int]).get(),
            ],
            "wait_unmade_try": err(lambda: SharedVar("unmade", int).wait_for_value(timeout=0)),
            "send_full": err(lambda: full.send(1)),
            "send_full_try": err(lambda: full.send(1, timeout=0)),
            "receive": err(full.receive),  # the message publish sent
            "receive_empty": err(full.receive),  # the refused sends put nothing in
            "receive_empty_try": err(lambda: full.receive(timeout=0)),
            "send_roomy": err(lambda: Mbox("roomy", int).send(2)),
            "sem": [
                s.create(0),
                err(s.decrement),
                err(lambda: s.decrement(timeout=0)),
                s.increment(),
                err(s.decrement),
            ],
            "mutex": [err(m.lock), err(lambda: m.lock(timeout=0)), err(m.unlock)],
        }

    out = netmcore.run(
        first_process=lambda: publish.start(10),
        extract_result=extract,
        init_ctrl=netmcore.add_plugins,
    )
    assert out["joined"] == 10
    assert out["result"] == [10, 11]
    assert out["empty"] is None
    refused = "would wait in the master, which never blocks"
    for key, what in [
        ("wait_empty", "SharedVar('empty').wait_for_value()"),
        ("wait_empty_timeout", "SharedVar('empty').wait_for_value()"),
        ("wait_unmade", "SharedVar('unmade').wait_for_value() of a variable not created yet"),
        ("send_full", "Mbox('full').send() to a full box"),
        ("receive_empty", "Mbox('full').receive() from an empty box"),
    ]:
        assert out[key][0] == "ContextError", (key, out[key])
        assert what in out[key][1] and refused in out[key][1], (key, out[key])
    assert out["wait_empty_try"][0] == "TimeoutError"
    assert (
        "SharedVar('empty', int).wait_for_value() timed out after 0 s" in out["wait_empty_try"][1]
    )
    assert out["wait_unmade_try"][0] == "TimeoutError"
    assert out["send_full_try"][0] == "TimeoutError"
    assert out["wait_set"] == [10, 11]
    assert out["cas"] == [True, False, [1], [3]]
    assert out["receive"] == ["none", "10"]
    assert out["receive_empty_try"][0] == "TimeoutError"
    assert out["send_roomy"] == ["none", "None"], "a box with room took no message from the master"
    created, wait, try_, increment, take = out["sem"]
    assert [created, wait[0], try_[0], increment, take] == [
        True,
        "ContextError",
        "TimeoutError",
        1,
        ["none", "0"],
    ]
    assert out["mutex"][0] == ["none", "None"]
    assert out["mutex"][1][0] == "PluginError" and "already locked" in out["mutex"][1][1]
    assert out["mutex"][2] == ["none", "None"]


def mismatch_message(what: str, held: type, asked: type) -> str:
    """The master's error for a request with values of type ``asked`` on a
    plugin ``what`` created with values of type ``held``: both, by name."""
    held_type, asked_type = netmcore.EncapType(held), netmcore.EncapType(asked)
    held_name, asked_name = clipped_name(held_type.name), clipped_name(asked_type.name)
    return (
        f"{what} holds values of type {held_name} (fingerprint {held_type.fingerprint}), "
        f"not {asked_name} (fingerprint {asked_type.fingerprint}): it keeps the type it "
        f"was created with; use {held_name} for it, or another name for values of "
        "another type"
    )


def test_shared_var_of_another_type_raises_encap_type_mismatch() -> None:
    out = run_scenario(var_type_mismatch, 0)
    for op in ("create", "get", "set", "wait"):
        assert out[op] == [
            "EncapTypeMismatch",
            mismatch_message("shared variable 'x'", int, str),
        ], op
    assert out["still"] == 1
    # A long name travels clipped, so that a request stays small.
    clipped = clipped_name(netmcore.EncapType(LongName).name)
    assert clipped.endswith("...") and len(clipped.encode()) <= TYPE_NAME_MAX
    long = mismatch_message("shared variable 'long'", LongName, int)
    assert clipped in long and LongName.__qualname__ not in long
    assert out["long"] == [True, ["EncapTypeMismatch", long]]


def test_bad_shared_var_value_raises_argument_type_error_with_its_path() -> None:
    out = run_scenario(var_bad_values, 0)
    assert out["create_bad"] == ["ArgumentTypeError", "$.x"]
    assert out["create_after_refused_create"] is True, "a refused create created the variable"
    assert out["struct_field"] == ["ArgumentTypeError", "$.y"]
    assert out["not_a_struct"] == ["ArgumentTypeError", "$"]
    assert out["still"] == {"x": 1, "y": 2}
    assert out["list_item"] == ["ArgumentTypeError", "$[1]"]
    assert out["nested"] == ["ArgumentTypeError", "$.tags[1]"]
    assert out["bool_for_int"] == ["ArgumentTypeError", "$"]
    assert out["values_kept"] == [[1], {"id": 1, "tags": ["a"]}, 0]


def test_shared_var_value_over_the_limit_is_a_clear_error_and_changes_nothing() -> None:
    from netmcore._plugins import VALUE_MAX

    out = run_scenario(var_sizes, 0)
    for key, size in (("create_over", VALUE_MAX + 5), ("set_over", VALUE_MAX + 1005)):
        kind, message = out[key]
        assert kind == "ValueError", out[key]
        assert f"'big' is {size:,} bytes" in message and "SharedArray" in message, message
    assert out["create_largest"] is True, "a refused create created the variable"
    assert out["largest_back"] is True
    assert out["kept"] is True


def test_deleting_a_shared_var_fails_its_waiters() -> None:
    out = run_scenario(delete_scenario, 0)
    assert out["deleted"] is True
    assert out["waiter"][0] == "PluginError"
    assert "deleted" in out["waiter"][1]
    assert out["recreate"] is True


@pytest.fixture
def unmade_seen(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[Any]]:
    """What the master holds of the waits for shared variables not created
    yet: how many wait for each variable as it is created ("at_create"), and
    the names waited for as each process ends, before and after the master
    forgets it ("at_end")."""
    seen: dict[str, list[Any]] = {"at_create": [], "at_end": []}
    create, forget = PluginHost._var_create, PluginHost.forget

    def create_seen(host: PluginHost, req: PluginReq, waiter: Any) -> Any:
        if req.name != "queued.sync":  # Queued's
            seen["at_create"].append([req.name, len(host.unmade.get(req.name, ()))])
        return create(host, req, waiter)

    def forget_seen(host: PluginHost, user: int, failure: str | None = None) -> None:
        before = sorted(host.unmade)
        forget(host, user, failure)
        seen["at_end"].append([before, sorted(host.unmade)])

    monkeypatch.setattr(PluginHost, "_var_create", create_seen)
    monkeypatch.setattr(PluginHost, "forget", forget_seen)
    return seen


@pytest.mark.parametrize("at_create", [False, True], ids=["create-then-set", "create-with-value"])
def test_wait_for_value_before_create_gets_what_another_process_creates_and_sets(
    at_create: bool, unmade_seen: dict[str, list[Any]]
) -> None:
    # It raised PluginError ("there is no shared variable 'late': create it
    # first"): a worker that waited for a peer's value raced with its create.
    assert run_scenario(wait_before_create_scenario, at_create) == [["none", "42"]] * 2
    assert unmade_seen["at_create"] == [["late", 2]]


def test_a_wait_before_create_of_another_type_fails_as_it_is_created(
    unmade_seen: dict[str, list[Any]],
) -> None:
    out = run_scenario(wait_before_create_of_another_type, 0)
    assert out["wrong"] == [
        "EncapTypeMismatch",
        mismatch_message("shared variable 'typed'", int, str),
    ]
    assert out["right"] == ["none", "5"]


def test_a_delete_fails_the_waits_before_create_too() -> None:
    out = run_scenario(delete_before_create_scenario, 0)
    assert out["deleted_never"] is False, "it never existed"
    assert out["never"] == [
        "PluginError",
        "shared variable 'never' was deleted before it was created",
    ]
    assert out["recreate_never"] is True
    assert out["deleted_later"] is True
    assert out["later"] == ["PluginError", "shared variable 'later' was deleted"]


def test_waits_before_create_that_time_out_leave_nothing_in_the_master(
    unmade_seen: dict[str, list[Any]],
) -> None:
    out = run_scenario(unmade_timeout_scenario, 50)
    assert out["unmade"] == (
        "SharedVar('unmade', int).wait_for_value() timed out after 0.05 s: the master "
        "dropped the call, which changed nothing (timeout=None waits without limit)"
    )
    assert out["try"].startswith("SharedVar('unmade', int).wait_for_value() timed out after 0 s")
    assert out["value"] == 5
    assert unmade_seen["at_create"] == [["unmade", 0]]
    # As the process ended, before the master forgot it: none of its 52 waits.
    assert unmade_seen["at_end"] and all(seen == [[], []] for seen in unmade_seen["at_end"])


def test_waits_before_create_of_a_dead_process_are_dropped(
    unmade_seen: dict[str, list[Any]],
) -> None:
    out = run_scenario(dead_unmade_waiter_scenario, 0)
    assert out == {"crashed": True, "value": 1}
    # The victim's two waits, until it is forgotten; then nothing of them.
    assert unmade_seen["at_end"][0] == [["ghost"], []]
    assert unmade_seen["at_create"] == [["ghost", 0]]


@pytest.mark.parametrize("kind", CAS_KINDS)
def test_compare_and_set_loops_lose_no_update(kind: str) -> None:
    # A get then a set would: two workers read the same value, and one's
    # update overwrites the other's. A loop whose compare never held (an int
    # held for a float, a set read back in another order) would hang.
    n, k = 4, 50
    total = run_scenario(cas_counter_scenario, (kind, n, k))
    if kind == "set":
        assert total == sorted(w * 1000 + i for w in range(n) for i in range(k))
    else:
        assert total == n * k and type(total) is (float if kind == "float" else int)


def test_compare_and_set_expects_none_for_no_value() -> None:
    out = run_scenario(cas_no_value, 0)
    assert out == {
        "expects_5": False,
        "still_none": None,
        "expects_none": True,
        "now": 1,
        "expects_none_again": False,
        "expects_1": True,
        "stale": False,
        "kept": 2,
        "optional": [True, None, True, 4, False, 4],
    }


def test_compare_and_set_compares_encodings_as_read_back() -> None:
    out = run_scenario(cas_equality, 0)
    assert out["int_for_float"] == [True, 2.0]
    assert out["float_for_int_given"] is True
    assert out["zero"] == [False, True], "0.0 matched -0.0"
    assert out["nan"] == [True, 4.0]
    assert out["dict_other_order"] is False, "documented: a dict matches in its order only"
    assert out["dict_same_order"] is True
    assert out["dict_read"] is True
    assert out["dict_stale"] is False
    assert out["dict"] == {"d": 4}


def test_swap_returns_what_it_held_and_wakes_waiters_as_set_does() -> None:
    out = run_scenario(swap_scenario, 0)
    assert out["swaps"] == [None, 1, 2]
    assert out["cas"] is True
    assert out["waiters"] == [["none", "1"], ["none", "8"]]


def test_compare_and_set_and_swap_refuse_what_set_refuses() -> None:
    from netmcore._plugins import VALUE_MAX

    out = run_scenario(cas_refused, 0)
    size = f"{VALUE_MAX + 5:,} bytes encoded, over the {VALUE_MAX:,} a shared variable holds"
    assert out["expected_over"][0] == "ValueError"
    assert out["expected_over"][1].startswith(
        f"the expected value of shared variable 'big' is {size}"
    )
    for key in ("new_over", "swap_over"):
        assert out[key][0] == "ValueError", out[key]
        assert out[key][1].startswith(f"the new value of shared variable 'big' is {size}"), out[key]
    assert out["kept"] == b"held"
    for kind, message in out["unknown"]:
        assert [kind, message] == [
            "PluginError",
            "there is no shared variable 'nobody': create it first",
        ]
    for got in out["mismatch"]:
        assert got == ["EncapTypeMismatch", mismatch_message("shared variable 'big'", bytes, str)]
    assert out["still"] == b"held"


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (
            lambda v: v.compare_and_set("1", 2),
            netmcore.ArgumentTypeError,
            "expected value of shared variable 'v' '1' does not match int",
        ),
        (
            lambda v: v.compare_and_set(1, "2"),
            netmcore.ArgumentTypeError,
            "new value of shared variable 'v' '2' does not match int",
        ),
        (
            lambda v: v.swap(2.5),
            netmcore.ArgumentTypeError,
            "new value of shared variable 'v' 2.5",
        ),
        (lambda v: v.swap(2**70), netmcore.ArgumentTypeError, "pass such an int as a str"),
        (
            lambda v: v.compare_and_set(2**70, 1),
            netmcore.ArgumentTypeError,
            "pass such an int as a str",
        ),
    ],
    ids=["expected", "new", "swap", "swap-too-large-int", "expected-too-large-int"],
)
def test_bad_compare_and_set_or_swap_values_are_refused_before_anything_is_sent(
    call: Callable[[SharedVar[int]], object], error: type[Exception], message: str
) -> None:
    # Outside run: had it got as far as a request, the error would be ContextError.
    with pytest.raises(error, match=re.escape(message)):
        call(SharedVar("v", int))


def test_values_over_the_limit_are_refused_before_anything_is_sent() -> None:
    from netmcore._plugins import VALUE_MAX

    v, over = SharedVar("v", bytes), b"o" * VALUE_MAX
    for call in (
        lambda: v.compare_and_set(over, b""),
        lambda: v.compare_and_set(None, over),
        lambda: v.swap(over),
    ):
        with pytest.raises(ValueError, match="a shared variable holds"):
            call()


# --------------------------------------------------------------------------
# 3. Mutexes
# --------------------------------------------------------------------------


def test_mutex_gives_mutual_exclusion_no_update_is_lost() -> None:
    n, k = 4, 25
    assert run_scenario(exclusion_scenario, (n, k)) == n * k


def test_lock_waits_until_the_holder_unlocks() -> None:
    assert run_scenario(lock_order_scenario, 0) == ["the holder wrote this before unlocking"]


def test_unlock_by_a_non_holder_raises_plugin_error_naming_the_holder() -> None:
    out = run_scenario(non_holder_scenario, 0)
    name, message = out["other"]
    assert name == "PluginError"
    assert f"held by process {out['holder']}" in message
    assert f"process {out['me']}" in message
    name, message = out["never"]
    assert name == "PluginError"
    assert "held by nobody" in message
    assert out["holder_unlock"] == ["none", "None"], "a refused unlock released the mutex"


def test_mutex_of_a_sigkilled_holder_passes_to_the_waiter() -> None:
    out = run_scenario(dead_holder_scenario, 0)
    assert out["holder_crashed"] is True
    assert out["waiter"] == "got the lock"
    assert out["after"][0] == "PluginError"
    assert "held by nobody" in out["after"][1]


def test_locking_twice_from_one_process_raises_plugin_error() -> None:
    out = run_scenario(lock_twice, 0)
    assert out["again"][0] == "PluginError"
    assert "already locked" in out["again"][1]
    assert out["unlock"] == ["none", "None"], "the failed second lock lost the mutex"
    assert out["unlock_again"][0] == "PluginError"
    assert out["relock"] == ["none", "None"]


# --------------------------------------------------------------------------
# 4. Semaphores
# --------------------------------------------------------------------------


def test_semaphore_counts() -> None:
    out = run_scenario(sem_basics, 0)
    assert out["get_before_create"][0] == "PluginError"
    assert out["create"] is True
    assert out["create_again"] is False
    assert out["get"] == 2, "creating an existing semaphore changed it"
    assert out["increment"] == 3
    assert out["decrements"] == [2, 1, 0]
    assert out["nowait_at_zero"] == -1
    assert out["get_at_zero"] == 0, "a decrement that did not wait changed the count"
    assert out["nowait_at_one"] == 0
    assert out["create_zero"] == [True, 0]
    assert out["destroy"] is True
    assert out["destroy_again"] is False
    assert out["get_after_destroy"][0] == "PluginError"
    assert out["increment_after_destroy"][0] == "PluginError"
    assert out["recreate"] == [True, 1]
    assert out["bad_initial"][0][0] == "ValueError"
    assert out["bad_initial"][1][0] == "TypeError"


@netmcore.process
def count_limits(_: int) -> dict[str, Any]:
    big = PluginSemaphore("big")
    out: dict[str, Any] = {"refused": [err(lambda n=n: big.create(n)) for n in (2**63, 2**70)]}
    out["nothing_sent"] = err(big.get)
    top = PluginSemaphore("top")
    out["largest"] = [top.create(2**63 - 1), top.increment(), top.get()]
    out["capacity"] = err(lambda: Mbox("m", int, capacity=2**63))
    out["largest_capacity"] = Mbox("m", int, capacity=2**63 - 1).create()
    out["value"] = err(lambda: SharedVar("v", int).create(2**70))
    return out


def test_a_count_past_64_bits_is_refused_naming_the_limit_before_it_is_sent() -> None:
    """A semaphore's initial count and a box's capacity travel to the master
    as msgpack integers: past them, create() raised msgspec's bare
    OverflowError. They are at most 2**63-1, so that increments never take a
    count past what a reply can carry (from 2**64-1, one crashed the master)."""
    out = run_scenario(count_limits, 0)
    for n, (kind, message) in zip((2**63, 2**70), out["refused"], strict=True):
        assert kind == "ValueError"
        assert message == (
            f"initial {n} is not valid: it must be at most 2**63-1 (counts travel to the "
            "master as 64-bit integers); pass a number from 0 to 2**63-1"
        )
    assert out["nothing_sent"] == ["PluginError", "there is no semaphore 'big': create it first"]
    assert out["largest"] == [True, 2**63, 2**63]
    assert out["capacity"] == [
        "ValueError",
        f"capacity {2**63} is not valid: it must be at most 2**63-1 (counts travel to the "
        "master as 64-bit integers); pass a number from 1 to 2**63-1",
    ]
    assert out["largest_capacity"] is True
    # A shared variable's value is checked as any value: an int msgpack cannot hold.
    assert out["value"][0] == "ArgumentTypeError"
    assert out["value"][1].endswith("> 2**64 - 1; pass such an int as a str")


def test_waiting_decrement_is_woken_by_an_increment_from_another_worker() -> None:
    out = run_scenario(sem_wake_scenario, 0)
    assert out["while_waiting"] == 0
    assert out["waiter"] == [0, 0]
    assert out["increment"] == 0, "the waiter took the increment: the count is back at 0"
    assert out["after"] == 0


@pytest.mark.parametrize(
    ("initial", "ops", "before", "protected_after"),
    [
        (1, ["dec"], 0, 1),
        (0, ["inc"], 1, 0),
        (2, ["dec", "inc"], 2, 2),
        (1, ["inc", "inc", "dec"], 2, 1),
        (3, ["dec", "dec"], 1, 3),
    ],
    ids=["took-one", "gave-one", "net-zero", "net-plus-one", "took-two"],
)
@pytest.mark.parametrize("protected", [True, False], ids=["protected", "unprotected"])
def test_protected_semaphore_undoes_a_sigkilled_workers_net_effect(
    protected: bool, initial: int, ops: list[str], before: int, protected_after: int
) -> None:
    out = run_scenario(protect_scenario, (protected, initial, ops))
    assert out["before_death"] == before
    assert out["after_death"] == (protected_after if protected else before)


def test_protected_count_given_back_by_a_dead_worker_wakes_a_waiter() -> None:
    out = run_scenario(protect_wake_scenario, 0)
    assert out["victim_crashed"] is True
    assert out["waiter"] == [0, 0], "the count the dead worker gave back did not wake the waiter"


@netmcore.process
def sem_ops_then_die(arg: tuple[list[str], str]) -> int:
    """Apply ``ops`` to "s", signal done-``tag``, and die once go-``tag`` is signalled."""
    ops, tag = arg
    s = PluginSemaphore("s")
    for op in ops:
        if op == "dec":
            s.decrement(wait=False)
        else:
            s.increment()
    PluginSemaphore(f"done-{tag}").increment()
    PluginSemaphore(f"go-{tag}").decrement()
    die()


@netmcore.process
def sem_debt_scenario(first_to_die: str) -> dict[str, Any]:
    s = PluginSemaphore("s")
    s.create(0, protected=True)
    for tag in ("a", "b"):
        signal_sem(f"done-{tag}")
        signal_sem(f"go-{tag}")
    pids = {"a": sem_ops_then_die.start((["inc", "inc"], "a"))}
    PluginSemaphore("done-a").decrement()
    pids["b"] = sem_ops_then_die.start((["dec", "dec"], "b"))  # takes what a gave
    PluginSemaphore("done-b").decrement()
    out: dict[str, Any] = {"both_alive": s.get()}
    first, second = ("a", "b") if first_to_die == "a" else ("b", "a")
    PluginSemaphore(f"go-{first}").increment()
    out["crashed"] = [crashed_by_sigkill(sem_ops_then_die.join_outcome(pids[first]))]
    out["after_first"] = s.get()
    out["live_increment"] = s.increment()  # this process lives on: it stays
    PluginSemaphore(f"go-{second}").increment()
    out["crashed"].append(crashed_by_sigkill(sem_ops_then_die.join_outcome(pids[second])))
    out["after_both"] = s.get()
    return out


@pytest.mark.parametrize(
    ("first_to_die", "after_first"),
    [("a", 0), ("b", 2)],
    ids=["incrementer-dies-first", "decrementer-dies-first"],
)
def test_protected_semaphore_undoes_each_dead_process_whatever_the_order(
    first_to_die: str, after_first: int
) -> None:
    # a gives 2, b takes both and lives on: when a dies, its +2 cannot be taken
    # back from a count at 0. It is owed, and b's death settles it: the count
    # ends as if neither had run (only the scenario's own increment stays).
    out = run_scenario(sem_debt_scenario, first_to_die)
    assert out["crashed"] == [True, True]
    assert out["both_alive"] == 0
    assert out["after_first"] == after_first
    assert out["live_increment"] == after_first + 1
    assert out["after_both"] == 1, "a dead process's net effect was not undone"


@netmcore.process
def take_then_give_back(_: int) -> int:
    """Take a unit of "s", signal done-b, and once go-b is signalled give it
    back; the count the increment answers."""
    s = PluginSemaphore("s")
    s.decrement()
    PluginSemaphore("done-b").increment()
    PluginSemaphore("go-b").decrement()
    return s.increment()


@netmcore.process
def sem_debt_repaid_scenario(_: int) -> list[Any]:
    s = PluginSemaphore("s")
    s.create(0, protected=True)
    for tag in ("a", "b"):
        signal_sem(f"done-{tag}")
        signal_sem(f"go-{tag}")
    a = sem_ops_then_die.start((["inc"], "a"))
    PluginSemaphore("done-a").decrement()
    b = take_then_give_back.start(0)  # takes what a gave
    PluginSemaphore("done-b").decrement()
    PluginSemaphore("go-a").increment()
    out: list[Any] = [crashed_by_sigkill(sem_ops_then_die.join_outcome(a)), s.get()]
    PluginSemaphore("go-b").increment()
    out += [take_then_give_back.join(b), s.get()]
    return out


def test_a_protected_semaphores_debt_is_repaid_by_the_process_that_took_the_unit() -> None:
    """a adds 1 and dies after b took it: its +1 cannot be taken back from a
    count at 0, and is owed. b gives the unit back, then ends: the count is
    what it was before either ran, 0. It was 1 (the give-back went to the
    count, and the debt stayed for ever)."""
    crashed, after_a, b_increment, after_both = run_scenario(sem_debt_repaid_scenario, 0)
    assert crashed is True
    assert after_a == 0
    assert b_increment == 0  # it repaid the debt: the count stays
    assert after_both == 0


def test_destroying_a_semaphore_fails_its_waiters() -> None:
    out = run_scenario(destroy_scenario, 0)
    assert out["destroy"] is True
    assert out["waiter"][0] == "PluginError"
    assert "destroyed" in out["waiter"][1]


@netmcore.process
def mbox_sizes(_: int) -> dict[str, Any]:
    from netmcore._plugins import VALUE_MAX

    box = Mbox("big", bytes, capacity=2)
    box.create()
    largest = b"L" * (VALUE_MAX - 5)  # msgpack's bin 32 header is 5 bytes
    return {
        "over": err(lambda: box.send(b"o" * (VALUE_MAX + 1000), timeout=0)),
        "largest": err(lambda: box.send(largest)),
        "largest_back": box.receive(timeout=10) == largest,
        "nothing_else": err(lambda: box.receive(timeout=0))[0],
    }


def test_mbox_message_over_the_limit_is_a_clear_error_in_a_worker() -> None:
    from netmcore._plugins import VALUE_MAX

    out = run_scenario(mbox_sizes, 0)
    kind, message = out["over"]
    assert kind == "ValueError", out["over"]
    assert f"box 'big' is {VALUE_MAX + 1005:,} bytes" in message, message
    assert f"{VALUE_MAX:,}" in message and "SharedArray" in message, message
    assert out["largest"] == ["none", "None"]
    assert out["largest_back"] is True
    assert out["nothing_else"] == "TimeoutError", "the refused message is in the box"


@netmcore.process
def big_receiver(_: int) -> list[int]:
    box = Mbox("big", bytes, capacity=2)
    got = [len(box.receive(timeout=10))]
    try:
        box.receive(timeout=0)
    except TimeoutError:
        return got
    raise AssertionError("the refused message is in the box")


def test_mbox_message_over_the_limit_is_refused_in_the_master_too() -> None:
    # The master's own send is served in place: before the check, the box took
    # it, and the reply to the worker that received it was over what a link
    # takes. Dropped, it left that worker waiting forever, and the run hung.
    from netmcore._plugins import VALUE_MAX

    box = Mbox("big", bytes, capacity=2)
    largest = b"L" * (VALUE_MAX - 5)
    seen: dict[str, Any] = {}

    def first() -> netmcore.ProcessId[list[int]]:
        box.create()
        box.send(largest)
        seen["over"] = err(lambda: box.send(b"o" * (VALUE_MAX + 1)))
        return big_receiver.start(0)

    got = netmcore.run(
        first_process=first,
        extract_result=lambda _c, pid: big_receiver.join_outcome_nowait(pid),
        init_ctrl=netmcore.add_plugins,
    )
    kind, message = seen["over"]
    assert kind == "ValueError", seen["over"]
    assert f"box 'big' is {VALUE_MAX + 6:,} bytes" in message, message
    assert scenario.outcome_value(got) == [len(largest)]


class _NoLoop:
    """The master's side a Conn uses: only its writable watch."""

    def watch_writable(self, conn: object, on: bool) -> None:
        pass


def test_a_reply_too_large_for_the_link_fails_its_request_and_keeps_the_link() -> None:
    # The kernel refuses it (EMSGSIZE): it once marked the connection broken,
    # so that every later reply to that worker was dropped and it hung.
    import socket

    from netmcore._master import Conn
    from netmcore._wire import MESSAGE_MAX, Failed, PluginReply, decoder

    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with ours, theirs:
        conn = Conn(ours, _NoLoop())  # type: ignore[arg-type]
        # Over the link's limit; and over any socket buffer the kernel takes.
        for req, size in ((7, MESSAGE_MAX), (8, 1 << 20)):
            assert conn.send(PluginReply(b"x" * size, 0, req=req)) is False
            assert not conn.broken
        assert conn.send(PluginReply(b"fine", 0, req=9)) is True
        for req in (7, 8):
            failed = decoder.decode(theirs.recv(MESSAGE_MAX))
            assert isinstance(failed, Failed) and failed.req == req, failed
            assert failed.error == "PluginError" and "over the" in failed.message, failed
        assert decoder.decode(theirs.recv(MESSAGE_MAX)) == PluginReply(b"fine", 0, req=9)


# --------------------------------------------------------------------------
# 5. Message boxes
# --------------------------------------------------------------------------


def test_creating_an_existing_box_opens_it_without_blocking() -> None:
    # Upstream's deadlock: the receiver creates the box, then the sender's create
    # waits for a first message that only the sender would send.
    out = run_scenario(mbox_open_scenario, 0)
    assert out == {"created": True, "again": False, "received": "hello", "sender_created": False}


def test_box_delivers_in_fifo_order() -> None:
    out = run_scenario(mbox_fifo_scenario, 0)
    assert out["in_box"] == [[0, i] for i in range(5)]
    assert out["streamed"] == [[1, i] for i in range(20)]


def test_send_waits_while_the_box_is_full() -> None:
    out = run_scenario(mbox_full_scenario, 0)
    assert out["first"] == "first"
    assert out["sender_saw"] == "the receiver made room", "send returned while the box was full"
    assert out["second"] == "second"


def test_receive_waits_for_a_send() -> None:
    assert run_scenario(mbox_receive_waits_scenario, 0) == "late"


def test_many_senders_every_message_received_exactly_once() -> None:
    senders, count = 4, 25
    got = run_scenario(many_senders_scenario, (senders, count))
    assert sorted(map(tuple, got)) == [(s, i) for s in range(senders) for i in range(count)]
    for s in range(senders):
        assert [i for who, i in got if who == s] == list(range(count)), "one sender's order broke"


def test_box_of_another_type_raises_encap_type_mismatch() -> None:
    out = run_scenario(mbox_type_mismatch, 0)
    for op in ("create", "send", "receive"):
        assert out[op] == ["EncapTypeMismatch", mismatch_message("message box 'b'", int, str)], op
    assert out["still"] == 5
    for name, message in out["unknown_box"]:
        assert name == "PluginError"
        assert "create it first" in message


def test_message_of_the_wrong_type_raises_argument_type_error_with_its_path() -> None:
    out = run_scenario(mbox_bad_messages, 0)
    assert out["field"] == ["ArgumentTypeError", "$.x"]
    assert out["not_a_struct"] == ["ArgumentTypeError", "$"]
    assert out["nested"] == ["ArgumentTypeError", "$.tags[1]"]
    assert out["id"] == ["ArgumentTypeError", "$.id"]
    assert out["received"] == [{"x": 1, "y": 2}, {"id": 3, "tags": ["ok"]}]


# --------------------------------------------------------------------------
# 6. The master's plugin state after a worker ends
# --------------------------------------------------------------------------


def test_master_serves_everyone_after_a_waiting_worker_is_sigkilled() -> None:
    out = run_scenario(after_crash_scenario, 0)
    assert out["victim_crashed"] is True
    assert out["mutex_holder"][0] == "PluginError"
    assert "held by nobody" in out["mutex_holder"][1], "the dead worker still holds the mutex"
    assert out["increment"] == 1, "the dead waiter took the increment"
    assert out["sem_after_increment"] == 1
    assert out["decrement"] == 0
    assert out["received"] == "for a live receiver", "the dead receiver swallowed the message"
    assert out["var"] == 5
    assert out["var_reader"] == 5


def test_joined_worker_holds_no_plugin_state(gate: tuple[int, int]) -> None:
    # Once join has returned a worker's result, the worker runs no more code: what
    # it held must be let go, as its resources are (see test_resources). The worker
    # here is still flushing its stdout when it is joined, as behind a slow pipe:
    # that holds open the window between its result reaching the master and its
    # exit, which is where the master forgets its plugin state.
    out = run_scenario(after_return_scenario, gate)
    assert out["joined"] == "returned"
    assert out["mutex_holder"][0] == "PluginError"
    problems = []
    if "held by nobody" not in out["mutex_holder"][1]:
        problems.append(f"the joined worker still holds the mutex: {out['mutex_holder'][1]}")
    if out["sem"] != 1:
        problems.append(f"its protected decrement was not undone: the count is {out['sem']}")
    if out["received"] != "first":
        problems.append(
            f"its receive swallowed a message: the next receive got {out['received']!r}"
        )
    assert not problems, "; ".join(problems)


class Picky(msgspec.Struct):
    """A message that a receiver set to refuse it (REFUSE) cannot decode."""

    k: int

    def __post_init__(self) -> None:
        if REFUSE:
            raise ValueError("refused by this receiver")


REFUSE: list[bool] = []  # true (non-empty) in a receiver that refuses every Picky


def _stopped(os_pid: int) -> bool:
    with open(f"/proc/{os_pid}/stat") as f:  # the state, after the name in parentheses
        return f.read().rpartition(")")[2].split()[0] == "T"


@netmcore.process
def receive_queued(_: int) -> str:
    """Queue a receive, say so (with this process's os pid), and wait for it."""
    receiving = Queued(Mbox("box", str).receive)
    SharedVar("receiver", int).set(os.getpid())
    PluginSemaphore("queued").increment()
    return receiving.result()


@netmcore.process
def receive_stopped_then_killed(_: int) -> dict[str, Any]:
    """A message sent to a queued receive as its process is stopped (so it
    never reads it) and then SIGKILLed: the kernel took the reply, the
    process died before it read it."""
    box = Mbox("box", str)
    box.create()
    SharedVar("receiver", int).create()
    queued = signal_sem("queued")
    pid = receive_queued.start(0)
    queued.decrement()  # its receive waits in the master
    os_pid = SharedVar("receiver", int).get()
    assert os_pid is not None
    os.kill(os_pid, signal.SIGSTOP)
    scenario.wait_until(lambda: _stopped(os_pid), "the receiver to stop")
    box.send("handed to the receiver")  # the master has sent it on when this returns
    netmcore.kill(pid, signal.SIGKILL)
    return {
        "receiver": str(receive_queued.join_outcome(pid)),  # once the master forgot it
        "then": err(lambda: box.receive(timeout=0)),
    }


@netmcore.process
def receive_while_it_runs(pid: netmcore.ProcessId[str]) -> list[str]:
    """Queue a receive that waits only while process ``pid`` runs."""
    receiving = Queued(lambda: Mbox("box", str).receive(while_alive=pid))
    PluginSemaphore("queued").increment()
    return err(receiving.result)


@netmcore.process
def receive_stopped_then_killed_beside_another(_: int) -> list[str]:
    """As receive_stopped_then_killed, with a second receive queued that
    waits only while the first receiver runs: it must get the message the
    dead one left, not hear that it ended."""
    box = Mbox("box", str)
    box.create()
    SharedVar("receiver", int).create()
    queued = signal_sem("queued")
    pid = receive_queued.start(0)
    queued.decrement()
    os_pid = SharedVar("receiver", int).get()
    assert os_pid is not None
    os.kill(os_pid, signal.SIGSTOP)
    scenario.wait_until(lambda: _stopped(os_pid), "the receiver to stop")
    box.send("handed to the receiver")
    other = receive_while_it_runs.start(pid)
    queued.decrement()  # its receive waits in the master, the box empty
    netmcore.kill(pid, signal.SIGKILL)
    receive_queued.join_outcome(pid)
    return receive_while_it_runs.result(other)


def test_a_message_a_dead_receiver_left_goes_to_a_receive_that_waited_while_it_ran() -> None:
    """Before: the master told the second receive that its sender had ended
    (SendersEnded) before it put the dead one's message back, and the
    message stayed in the box, unseen."""
    got = run_scenario(receive_stopped_then_killed_beside_another, 0)
    assert got == ["none", "'handed to the receiver'"]


@netmcore.process
def receive_then_wait(refuse: bool) -> None:
    """Receive one message from "box" (what came of it goes to "out"), and
    wait, until killed."""
    if refuse:
        REFUSE.append(True)
    got = err(Mbox("box", Picky).receive)
    Mbox("out", str).send(" ".join(got))
    PluginSemaphore("never").decrement()


@netmcore.process
def received_then_killed(refuse: bool) -> dict[str, Any]:
    box, out = Mbox("box", Picky), Mbox("out", str)
    box.create()
    out.create()
    signal_sem("never")
    pid = receive_then_wait.start(refuse)
    box.send(Picky(1))
    got = out.receive()  # its receive has returned (or raised)
    netmcore.kill(pid, signal.SIGKILL)
    return {
        "got": got,
        "receiver": str(receive_then_wait.join_outcome(pid)),
        "then": err(lambda: box.receive(timeout=0)),
    }


def test_a_message_sent_to_a_receiver_that_dies_before_reading_it_stays_in_the_box() -> None:
    # The master took the message out of the box once the kernel took its
    # reply: a receiver killed before it read it (say, just after a kill()
    # that the sender waited for) took it with it.
    out = run_scenario(receive_stopped_then_killed, 0)
    assert out["receiver"] == str(netmcore.Crashed(None, signal.SIGKILL))
    assert out["then"] == ["none", "'handed to the receiver'"], "the dead receiver took it"


@pytest.mark.parametrize("refuse", [False, True], ids=["decoded", "refused"])
def test_a_message_a_receive_took_is_not_given_again_when_its_receiver_dies(
    refuse: bool,
) -> None:
    # What a receive returned is its caller's; one that did not decode is
    # raised once, and gone (as Mailbox's): neither goes back to the box as
    # the receiver dies.
    out = run_scenario(received_then_killed, refuse)
    if refuse:
        assert out["got"].startswith("ValidationError refused by this receiver"), out["got"]
    else:
        assert out["got"] == "none Picky(k=1)"
    assert out["receiver"] == str(netmcore.Crashed(None, signal.SIGKILL))
    assert out["then"][0] == "TimeoutError", f"given again: {out['then']}"


# --------------------------------------------------------------------------
# 7. A waiting call that is interrupted
# --------------------------------------------------------------------------

# An exception that leaves a waiting call (here a SIGALRM handler's, as a timeout)
# reaches the caller, and the master is as if the call had never been made:
# whether the interrupt came while the call was queued in the master
# (answered_first=False) or once the master had answered it, its answer not yet
# read (answered_first=True). Then the other worker's step (an unlock, an
# increment, a send, a receive) goes to whoever waits for it, not to the
# abandoned call.

answered_first = pytest.mark.parametrize("answered_first", [False, True])


@answered_first
def test_interrupted_lock_does_not_leave_the_mutex_held_by_its_process(
    answered_first: bool,
) -> None:
    # Before the fix the mutex passed to the abandoned request: every other
    # process would wait for ever, and the next lock() raised "mutex 'm' is
    # already locked by this process".
    out = run_scenario(interrupted_scenario, ("lock", answered_first, 0))
    assert out == ["interrupted", "locked"]


@answered_first
def test_interrupted_receive_loses_no_message(answered_first: bool) -> None:
    # Before the fix message 1 went to the abandoned receive and was lost.
    assert run_scenario(interrupted_scenario, ("receive", answered_first, 0)) == ["interrupted", 1]


@answered_first
def test_interrupted_decrement_does_not_take_a_count(answered_first: bool) -> None:
    # Before the fix the increment went to the abandoned decrement: the count stayed 0.
    assert run_scenario(interrupted_scenario, ("decrement", answered_first, 0)) == [
        "interrupted",
        1,
    ]


@answered_first
def test_interrupted_wait_before_create_leaves_no_wait_in_the_master(
    answered_first: bool, unmade_seen: dict[str, list[Any]]
) -> None:
    out = scenario.run_scenario(
        interrupted_scenario,
        ("wait_for_value", answered_first, 0),
        init_ctrl=netmcore.add_plugins,
    )
    assert out == ["interrupted", 9]
    # As "u" is created: the wait, if it was not withdrawn yet; else nothing.
    assert unmade_seen["at_create"] == [["u", 1 if answered_first else 0]]


def test_interrupted_send_to_a_full_box_puts_nothing_in_it() -> None:
    # Withdrawn while the box was full, the send's message (5) must not reach
    # the box when room is made. (Once the box has taken it, it stays sent.)
    assert run_scenario(interrupted_scenario, ("send", False, 0)) == ["interrupted", 7]


@netmcore.process
def send_timed_out(_: int) -> list[str]:
    """A send to a full box, left by the natural exception for a timeout
    (TimeoutError is an OSError); then the box must hold only the first."""
    box = Mbox("timed-out", int)
    box.create()
    box.send(1)  # capacity 1: the box is full now

    def timed_out(_signum: int, _frame: Any) -> None:
        raise TimeoutError("the send took too long")

    signal.signal(signal.SIGALRM, timed_out)
    signal.setitimer(signal.ITIMER_REAL, 0.1)
    seen = err(lambda: box.send(2))[:1]
    seen.append(str(box.receive()))
    signal.setitimer(signal.ITIMER_REAL, 0.1)
    seen.append(err(box.receive)[0])  # empty: it waits, and times out too
    return seen


def test_a_send_timed_out_by_a_handler_is_a_timeout_and_leaves_no_trace() -> None:
    # It was MasterGone, not withdrawn, and its message reached the box later:
    # the link took any OSError for the socket's.
    assert run_scenario(send_timed_out, 0) == ["TimeoutError", "1", "TimeoutError"]


@pytest.mark.parametrize("again_at", [2, 4])
def test_a_second_interrupt_during_the_withdrawal_leaves_no_trace(again_at: int) -> None:
    # The withdrawal reads the reply to the "queued" signal (1), the late
    # answer, a count (2), the cancel's reply (3) and the undo's (4). A second
    # interrupt before the answer is read, or once the undo is sent, must
    # neither keep the count nor give it back twice; it reaches the caller.
    out = run_scenario(interrupted_scenario, ("decrement", True, again_at))
    assert out == ["interrupted", 1]


# --------------------------------------------------------------------------
# 8. Timeouts
# --------------------------------------------------------------------------

# The master times a waiting call out (not the caller, by leaving its wait): the
# call raises TimeoutError, and the plugin is as if it had never been made.


def test_a_timed_out_receive_swallows_no_later_message() -> None:
    out = run_scenario(receive_timeout_scenario, 0)
    assert out["empty"] == (
        "Mbox('box', int).receive() timed out after 0.05 s: the master dropped the call, "
        "which changed nothing (timeout=None waits without limit)"
    )
    assert out["try"].startswith("Mbox('box', int).receive() timed out after 0 s")
    assert out["after"] == [1, 2]


def test_a_timed_out_send_puts_nothing_in_the_box() -> None:
    out = run_scenario(send_timeout_scenario, 0)
    assert out["full"].startswith("Mbox('box', int).send() timed out after 0.05 s")
    assert out["try"].startswith("Mbox('box', int).send() timed out after 0 s")
    assert out["first"] == 1
    assert out["then"][0] == "TimeoutError", "a timed-out send's message reached the box"


def test_a_timed_out_lock_is_never_granted_later() -> None:
    out = run_scenario(lock_timeout_scenario, 0)
    assert out["held"].startswith("PluginMutex('m').lock() timed out after 0.05 s")
    assert out["try"].startswith("PluginMutex('m').lock() timed out after 0 s")
    assert out["holder_unlock"] == ["none", "None"]
    assert out["after"] == ["none", "None"], "the mutex went to the timed-out lock"
    assert out["unlock"] == ["none", "None"]


def test_a_timed_out_decrement_takes_no_count() -> None:
    out = run_scenario(decrement_timeout_scenario, 0)
    assert out["zero"].startswith("PluginSemaphore('s').decrement() timed out after 0.05 s")
    assert out["try"].startswith("PluginSemaphore('s').decrement() timed out after 0 s")
    assert out["increment"] == 1, "the increment went to the timed-out decrement"
    assert out["take"] == 0


def test_wait_for_value_times_out_while_the_variable_has_no_value() -> None:
    out = run_scenario(var_timeout_scenario, 0)
    assert out["unset"].startswith("SharedVar('v', int).wait_for_value() timed out after 0.05 s")
    assert out["try"].startswith("SharedVar('v', int).wait_for_value() timed out after 0 s")
    assert out["value"] == 5


@pytest.mark.parametrize("timeout", [60, 1e9, 1e300])
def test_waits_with_a_timeout_are_answered_when_served_in_time(timeout: float) -> None:
    # 1e9 s ("for ever"): longer than the master's loop can sleep at once
    # (epoll takes at most 2**31 ms; it raised OverflowError, and the run died).
    assert run_scenario(answered_in_time_scenario, timeout) == [7, "locked"]


@netmcore.process
def many_timed_waits(n: int) -> list[int]:
    m = PluginMutex("m")
    m.lock()
    for _ in range(n):  # each queued with a deadline, then granted at once
        locker = lock_in_time.start(3600.0)
        PluginSemaphore("queued").decrement()
        m.unlock()
        assert lock_in_time.join(locker) == "locked"
        m.lock()
    m.unlock()
    return [n]


def test_timers_of_answered_waits_do_not_pile_up_in_the_master() -> None:
    """A wait granted before its deadline leaves a stale timer, which the
    master drops when it rebuilds its timers: they stay in proportion to
    what waits (they grew by one per timed wait, for as long as its timeout)."""
    from netmcore._plugin_host import TIMERS_PRUNE_AT

    n = TIMERS_PRUNE_AT + 200
    seen: list[int] = []

    def extract(ctrl: netmcore.Controller, pid: Any) -> Any:
        master = _context.current.master
        assert master is not None and master.plugins is not None
        seen.append(len(master.plugins.timers))
        return many_timed_waits.join_outcome_nowait(pid)

    def first() -> Any:
        signal_sem("queued")
        return many_timed_waits.start(n)

    outcome = netmcore.run(
        first_process=first, extract_result=extract, init_ctrl=netmcore.add_plugins
    )
    assert scenario.outcome_value(outcome) == [n]
    assert seen[0] <= 200 + 1, seen


TIMED_CALLS: dict[str, Callable[[Any], object]] = {
    "send": lambda t: Mbox("b", int).send(1, timeout=t),
    "receive": lambda t: Mbox("b", int).receive(timeout=t),
    "lock": lambda t: PluginMutex("m").lock(timeout=t),
    "decrement": lambda t: PluginSemaphore("s").decrement(timeout=t),
    "wait_for_value": lambda t: SharedVar("v", int).wait_for_value(timeout=t),
}


@pytest.mark.parametrize(
    ("timeout", "error", "message"),
    [
        (-1, ValueError, r"timeout -1 is not valid: give a number of seconds of 0 or more"),
        (float("nan"), ValueError, r"timeout nan is not valid"),
        ("1", TypeError, r"timeout '1' is not valid: give a number of seconds \(an int or a"),
        (True, TypeError, r"timeout True is not valid"),
    ],
    ids=["negative", "nan", "str", "bool"],
)
@pytest.mark.parametrize("call", TIMED_CALLS.values(), ids=TIMED_CALLS.keys())
def test_bad_timeouts_are_refused_before_anything_is_sent(
    call: Callable[[Any], object], timeout: Any, error: type[Exception], message: str
) -> None:
    # Outside run: had it got as far as a request, the error would be ContextError.
    with pytest.raises(error, match=message):
        call(timeout)


def test_a_plugin_call_from_another_thread_of_the_master_is_refused() -> None:
    """The plugins' state is the master loop's, and has no lock: a thread
    the master's own code started would change it under the loop."""
    got: list[str] = []

    def first() -> Any:
        SharedVar("v", int).create(1)
        thread = threading.Thread(
            target=lambda: got.append(scenario.outcome_text(lambda: SharedVar("v", int).get()))
        )
        thread.start()
        thread.join()
        got.append(scenario.outcome_text(lambda: SharedVar("v", int).get()))
        return answered_nothing.start(0)

    outcome = netmcore.run(
        first_process=first,
        extract_result=lambda _c, pid: answered_nothing.join_outcome_nowait(pid),
        init_ctrl=netmcore.add_plugins,
    )
    assert isinstance(outcome, netmcore.Success)
    assert got[0].startswith("ContextError: var.get was called in another thread"), got
    assert got[1] == "returned 1"


@netmcore.process
def answered_nothing(_: int) -> int:
    return 0
