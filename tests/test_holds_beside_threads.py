"""A Ctrl-C that another thread takes, in a step netmcore holds SIGINT from.

A signal mask is one thread's: a SIGINT sent to a process with a second
thread (a progress bar's monitor, a pool's, a BLAS library's) goes to that
thread when the main one blocks it, and CPython runs the Python handler in
the main thread all the same, in the middle of the step that blocked it.
netmcore's own handlers (a worker's, and the master's in its own code) ask
``_posix.deferred`` first: inside a ``with_signals_blocked`` of the main
thread they note the signal, which is raised again as the step ends.

Each test sends SIGINT through another thread (``through_another_thread``)
at each point of a call that has such a step (``at_every_point``), with
netmcore's own handler in place (at_every_point installs one of its own,
which raises at once as a program's would: here it calls netmcore's), and
checks what the step is for (no object left, no use left counted, no
process left untracked, no message lost), and that each SIGINT is raised
once, and after the step: never while the thread still blocks it.

The steps (``with_signals_blocked`` of SIGINT), and where they are tested:

- ``_resources.op_create``: a create in the master's own code (a worker's
  is made by the master's loop, whose handler only notes the signal);
- ``SharedArray.create``'s release of what it made, as a second Ctrl-C
  comes (a worker's, and the master's own);
- ``Master._fork``: a start in the master's own code;
- ``Master.close`` (``_close``) and, in it, the guard the program gets back
  at the run's end (``_watchdog._start_guard``); the guard's start before
  ``run`` too, where the handler is the program's (netmcore holds nothing
  there but this thread's mask);
- ``Mailbox._decode_again``, the second decode of an interrupted receive;
- ``Link.request``'s withdrawal of a worker's request;
- ``_cleanup.Record.compact``'s switch to the compacted record.

Not here: ``_pipeline`` starts a stage worker holding SIGINT, which
test_pipeline's test_a_worker_started_as_a_ctrl_c_comes_is_stopped_beside_
another_thread covers (at the point that matters, as the start returns); and
``_pipeline._Helper`` starts its thread with every signal blocked, so that
the thread has them blocked (a thread's mask is its creator's): an
interrupt there ends the stage worker's set-up whether it is held or not.
"""

from __future__ import annotations

import _signal  # type: ignore[import-not-found]  # signal's C half: no stub
import contextlib
import os
import signal
import sys
from collections.abc import Callable, Iterator
from typing import Any

import interrupting

# SharedArray imports numpy at its first use: imported here, so that the
# interrupted points are the create's, not those of an import cut short.
import numpy  # noqa: F401
import psutil
import pytest
from interrupting import Interrupted, at_every_point, through_another_thread
from scenario import in_master, own_shm_entries, run_scenario

import netmcore
from netmcore import (
    Mailbox,
    ResId,
    SharedArray,
    _cleanup,
    _context,
    _master,
    _posix,
    _resource_api,
    _resources,
    _shared_array,
    _watchdog,
)
from netmcore._wire import Link

pytestmark = pytest.mark.timeout(60)

First = Callable[[Callable[[], None]], contextlib.AbstractContextManager[None]]

# --------------------------------------------------------------------------
# netmcore's own handler, at every point, beside another thread
# --------------------------------------------------------------------------


class NetmcoresHandler:
    """What at_every_point's SIGINT handler does while inside
    :func:`beside_a_thread`: call the handler that was in place before
    (netmcore's: a worker's, or the master's in its own code), which holds
    the signal back in a step of the main thread that must not be cut. Its
    KeyboardInterrupt is raised as the Interrupted that at_every_point
    catches, and noted, with whether SIGINT was blocked in this thread then
    (raised in the step, not after it)."""

    def __init__(self) -> None:
        real = signal.getsignal(signal.SIGINT)
        assert callable(real), real
        if real is signal.default_int_handler:
            # A worker's, Python's own: netmcore puts its own in its place
            # for the length of a step (see _posix.with_signals_blocked),
            # which this one, in place of both, stands in for.
            real = _posix._held_or_raised
        self.real: Callable[[int, Any], object] = real
        self.sent = 0  # the SIGINTs the test sent in this run
        self.raised: list[bool] = []  # for each interrupt: SIGINT blocked then
        self.returned = False  # the call returned

    def __call__(self, signum: int, frame: Any) -> None:
        blocked = signum in _signal.pthread_sigmask(signal.SIG_BLOCK, ())
        try:
            self.real(signum, frame)
        except KeyboardInterrupt:
            self.raised.append(blocked)
            raise Interrupted("netmcore's handler of SIGINT") from None

    def problems(self, raised_elsewhere: int = 0, held: bool = True) -> list[str]:
        """What was wrong with the interrupts of the run just made, then
        counted afresh: each SIGINT sent raised once (``raised_elsewhere``:
        by other means than the handler, as run raises the one its handler
        noted), none lost on the way out, and, if ``held`` (the handler is
        netmcore's), none raised in a step that blocks SIGINT."""
        sent, raised, returned = self.sent, self.raised, self.returned
        self.sent, self.raised, self.returned = 0, [], False
        problems = []
        if len(raised) + raised_elsewhere != sent:
            times = len(raised) + raised_elsewhere
            problems.append(f"{sent} SIGINT sent, the interrupt raised {times} times")
        if sent and returned:
            problems.append("the call returned: the interrupt was lost on its way out")
        if held and any(raised):
            problems.append("the interrupt was raised in the step, SIGINT still blocked")
        return problems


@contextlib.contextmanager
def netmcores_handler_beside_a_thread() -> Iterator[tuple[NetmcoresHandler, Callable[[], None]]]:
    """The handler (see NetmcoresHandler), and a ``send`` for at_every_point
    that sends SIGINT to another thread and counts it. In a child that the
    call forks (a worker, a guard), which has a copy of the profile
    function, it sends nothing, and stops the profile."""
    handler = NetmcoresHandler()
    parent = os.getpid()
    saved = interrupting._raise_interrupted
    interrupting._raise_interrupted = handler  # type: ignore[assignment]  # what handler_raises installs
    try:
        with through_another_thread(signal.SIGINT) as to_another_thread:

            def send() -> None:
                if os.getpid() != parent:
                    sys.setprofile(None)
                    return
                handler.sent += 1
                to_another_thread()

            yield handler, send
    finally:
        interrupting._raise_interrupted = saved


def beside_a_thread(
    call: Callable[[], Any],
    check: Callable[[Any], list[str]],
    first: Callable[[NetmcoresHandler], First] | None = None,
    raised_elsewhere: Callable[[], int] = lambda: 0,
    held: bool = True,
    interrupts_checked: bool = True,
) -> str | None:
    """at_every_point, with a SIGINT at each point that another thread
    takes, netmcore's handler in place. ``first``, given the handler, makes
    at_every_point's ``first`` (it counts its SIGINT in ``handler.sent``).
    See NetmcoresHandler.problems for ``raised_elsewhere`` and ``held``;
    ``interrupts_checked`` False: ``check`` alone says what is wrong."""
    with netmcores_handler_beside_a_thread() as (handler, send):

        def called() -> Any:
            result = call()
            handler.returned = True  # no call from the return to here: no handler runs
            return result

        def checked(result: Any) -> list[str]:
            problems = handler.problems(raised_elsewhere(), held)
            return [*(problems if interrupts_checked else []), *check(result)]

        return at_every_point(
            called, checked, signal.SIGINT, send, None if first is None else first(handler)
        )


def first_as_it_returns(
    owner: Any, name: str, arm_at_first: bool = True
) -> Callable[[NetmcoresHandler], First]:
    """For beside_a_thread: a first SIGINT, raised in this thread as
    ``owner.name`` first returns (its handler's exception in place of the
    result); if ``arm_at_first``, the points are counted from there (from
    the exception on: not those of the handler, where a second SIGINT
    would make one interrupt of both)."""

    def first(handler: NetmcoresHandler) -> First:
        @contextlib.contextmanager
        def sent_there(arm: Callable[[], None]) -> Iterator[None]:
            real = getattr(owner, name)
            sent = False

            def call_then_signal(*args: Any) -> Any:
                nonlocal sent
                result = real(*args)
                if not sent:
                    sent = True
                    handler.sent += 1
                    try:
                        signal.raise_signal(signal.SIGINT)
                    finally:
                        if arm_at_first:
                            arm()
                return result

            setattr(owner, name, call_then_signal)
            try:
                yield
            finally:
                setattr(owner, name, real)

        return sent_there

    return first


def in_the_masters_own_code(body: Callable[[], str | None]) -> str | None:
    """``body()`` in the master's own code (first_process)."""
    found = in_master(lambda: [p] if (p := body()) else [])
    return found[0] if found else None


def _in(where: str, process: Any, body: Callable[[Any], str | None], arg: Any) -> str | None:
    """``body(arg)`` in a worker (``process``, which runs it), or in the
    master's own code."""
    if where == "worker":
        problem: str | None = run_scenario(process, arg)
        return problem
    return in_the_masters_own_code(lambda: body(arg))


def held() -> set[str]:
    """What this process holds: its handles, its arrays' uses, the entries
    of the table (the master's), and the /dev/shm entries named for it (or
    for its master, which names a worker's objects)."""
    handles = {f"a handle on resource {n}" for n in _resource_api._uses.handles}
    arrays = {f"a use of array {n}" for n in [*_shared_array._keep, *_shared_array._used]}
    table = {f"table entry {e.name}" for e in _resources.table.values()}
    return handles | arrays | table | {f"/dev/shm entry {n}" for n in own_shm_entries()}


def left_since(before: set[str]) -> list[str]:
    # In step with the master first: a release it has not served yet (one
    # a worker sent as an interrupt came, whose answer nobody waited for).
    netmcore.release(ResId(10**9))  # an id nothing has: it does nothing
    return [f"left {sorted(left)}"] if (left := held() - before) else []


# --------------------------------------------------------------------------
# _resources.op_create: a create in the master's own code
# --------------------------------------------------------------------------

CREATES: dict[str, Callable[[], Any]] = {
    "ShmSegment": lambda: netmcore.create_shm(64),
    "PosixSemaphore": netmcore.create_sem,
    "Mailbox": lambda: Mailbox.create(int, slots=2, slot_size=16),
    "SharedArray": lambda: SharedArray.create(4),
}


def _create_anywhere(kind: str) -> str | None:
    before = held()

    def check(made: Any) -> list[str]:
        if made is not None:
            made.release()
        return left_since(before)

    return beside_a_thread(CREATES[kind], check)


@pytest.mark.parametrize("kind", sorted(CREATES))
def test_a_create_in_the_masters_own_code_holds_a_ctrl_c_another_thread_takes(
    kind: str, master_cleanup: None
) -> None:
    """op_create makes the object and takes it into the table holding
    SIGINT. Before 33426d2 the master's handler raised in that step all the
    same ("raised in the step"); the create undid itself (see
    test_interrupted_calls' test_a_resource_call_interrupted_anywhere_in_
    the_master_leaves_no_use, with a handler that raises at once), so that
    is all that shows."""
    problem = in_the_masters_own_code(lambda: _create_anywhere(kind))
    assert problem is None, problem


# --------------------------------------------------------------------------
# SharedArray.create: the release of what it made, as a second Ctrl-C comes
# --------------------------------------------------------------------------


def _array_release_interrupted(from_: str) -> str | None:
    """A SharedArray.create cut short by a first SIGINT as its header is
    written (it then releases what it made, holding SIGINT), a second one
    at each point from there on: ``from_`` "the release", from the start of
    the release that the hold covers; "the first", from the first SIGINT."""
    worker = _context.current.role == "worker"
    release_of = (
        (_resource_api.ShmSegment, "release") if worker else (_shared_array._Use, "release")
    )
    before = held()

    def first(handler: NetmcoresHandler) -> First:
        header = first_as_it_returns(_shared_array, "_write_header", from_ == "the first")

        @contextlib.contextmanager
        def sent_there(arm: Callable[[], None]) -> Iterator[None]:
            owner, name = release_of
            real = getattr(owner, name)

            def release(made: Any) -> None:
                arm()  # already armed from the first: nothing more
                real(made)

            if from_ == "the release":
                setattr(owner, name, release)
            try:
                with header(handler)(arm):
                    yield
            finally:
                setattr(owner, name, real)

        return sent_there

    def check(made: Any) -> list[str]:
        if made is not None:
            made.release()
        return left_since(before)

    return beside_a_thread(lambda: SharedArray.create(4), check, first)


@netmcore.process
def array_release_interrupted_in_a_worker(from_: str) -> str | None:
    return _array_release_interrupted(from_)


@pytest.mark.parametrize("where", ["worker", "master"])
def test_an_array_creates_release_holds_a_second_ctrl_c_another_thread_takes(
    where: str, master_cleanup: None
) -> None:
    """The second SIGINT at each point of the release that the hold covers.
    Before 33426d2 the handler raised in it all the same, and a release cut
    short at its start left the use (the array's entry already forgotten,
    nothing would release it): "left [a handle ..., /dev/shm entry ...]"."""
    problem = _in(
        where, array_release_interrupted_in_a_worker, _array_release_interrupted, "the release"
    )
    assert problem is None, problem


@pytest.mark.parametrize("where", ["worker", "master"])
def test_an_array_creates_release_after_a_second_ctrl_c_anywhere_leaves_no_use(
    where: str, master_cleanup: None
) -> None:
    """The second SIGINT at each point from the first on: also at the
    points between the first exception and the hold (the two pops, and
    with_signals_blocked's own start), where nothing holds it, a SIGINT
    raised in this thread alike. Before: one there skipped the release,
    and the use (a handle, its /dev/shm object) stayed until the process
    ended; the pops are now in the held step, repeated until it is done."""
    problem = _in(
        where, array_release_interrupted_in_a_worker, _array_release_interrupted, "the first"
    )
    assert problem is None, problem


# --------------------------------------------------------------------------
# Master._fork: a start in the master's own code
# --------------------------------------------------------------------------


@netmcore.process
def nothing(_: int) -> int:
    return 0


def _start_anywhere(what: str) -> str | None:
    """A start in the master's own code, a SIGINT at each point; then
    checked (``what``): that every child forked is tracked ("tracked"), or
    that each one that runs a process has its record ("recorded"). One with
    none is killed: its Finished is ignored, it is never let exit, and run
    would wait for it for ever."""
    master = _master.current_master("the test")
    me = psutil.Process()
    before = {p.pid for p in me.children()}
    killed: set[int] = set()

    def check(_pid: Any) -> list[str]:
        untracked = {p.pid for p in me.children()} - before - set(master.children)
        unrecorded = {
            c.os_pid
            for c in master.children.values()
            if c.record is None and c not in master.spares
        } - killed
        for os_pid in unrecorded:
            os.kill(os_pid, signal.SIGKILL)
        killed.update(unrecorded)
        if what == "tracked":
            return [f"children left untracked: {sorted(untracked)}"] if untracked else []
        return (
            [f"children running a process with no record: {sorted(unrecorded)}"]
            if unrecorded
            else []
        )

    return beside_a_thread(lambda: nothing.start(0), check)


def test_a_start_in_the_masters_own_code_leaves_no_child_untracked() -> None:
    """_fork forks the children and tracks them holding SIGINT. Before
    33426d2 the master's handler raised in that step all the same: as the
    flush of stdout before the fork returned, where flush_std_streams
    swallows any exception (the Ctrl-C lost: "the call returned"); as
    os.fork returned, the child forked but never tracked (found with that
    check left out)."""
    problem = in_the_masters_own_code(lambda: _start_anywhere("tracked"))
    assert problem is None, problem


def test_a_start_in_the_masters_own_code_leaves_no_process_without_its_record() -> None:
    """At every point of _fork's hold (its end raises what it held), and
    before 33426d2 too (the exception left _fork the same way). Before: the
    record was bound to the child after the hold: the process ran with none,
    its outcome was ignored, it was never let exit, and run waited for it
    for ever once the master's own code caught the Ctrl-C."""
    problem = in_the_masters_own_code(lambda: _start_anywhere("recorded"))
    assert problem is None, problem


# --------------------------------------------------------------------------
# Master.close, and the guard the program gets back at the run's end
# --------------------------------------------------------------------------


def _guard_keeps(kept: Any) -> list[str]:
    """What is wrong with the program's guard: there is none, or it was not
    told of ``kept``, or ``kept`` is gone (a guard dropped half made takes
    the program for dead and unlinks what it was told of), or a child other
    than the guard is left running."""
    made = _watchdog._mine()
    problems = []
    running = [p.pid for p in psutil.Process().children() if p.status() != psutil.STATUS_ZOMBIE]
    if made.guard is None:
        problems.append("no guard")
    else:
        if (_resources.ResourceType.POSIX_SHM, kept.name) not in made.told:
            problems.append(f"the guard was not told of {kept.name}")
        running = [pid for pid in running if pid != made.guard.os_pid]
    if running:
        problems.append(f"children left running: {running}")
    if not os.path.exists(f"/dev/shm/{kept.name[1:]}"):
        problems.append(f"{kept.name} was unlinked")
    return problems


def test_a_runs_end_holds_a_ctrl_c_another_thread_takes(master_cleanup: None) -> None:
    """Master.close kills and reaps every child, frees what the run made,
    and forks the guard that takes what the program still manages
    (``kept``), holding SIGINT; the master's handler only notes it there,
    and run raises it after. A SIGINT at each point from close on: run
    returns its value, or raises KeyboardInterrupt once, no worker is
    left, and ``kept`` is in a guard's care. (It passed before 33426d2:
    outside the master's own code that handler never raises.)"""
    kept = netmcore.create_shm(8)  # made before run: the program's
    run_raised = 0

    def call() -> Any:
        nonlocal run_raised
        try:
            return netmcore.run(
                first_process=lambda: nothing.start(0),
                extract_result=lambda _c, pid: nothing.join_outcome_nowait(pid),
            )
        except KeyboardInterrupt:
            run_raised += 1
            raise Interrupted("run raised KeyboardInterrupt") from None

    def raised_by_run() -> int:
        nonlocal run_raised
        raised, run_raised = run_raised, 0
        return raised

    def check(outcome: Any) -> list[str]:
        problems = _guard_keeps(kept)
        if outcome is not None and outcome != netmcore.Success(0):
            problems.append(f"run returned {outcome!r}")
        return problems

    def from_close(_handler: NetmcoresHandler) -> First:
        @contextlib.contextmanager
        def armed_there(arm: Callable[[], None]) -> Iterator[None]:
            real = _master.Master._close

            def close(master: _master.Master) -> None:
                arm()
                real(master)

            _master.Master._close = close  # type: ignore[method-assign, assignment]
            try:
                yield
            finally:
                _master.Master._close = real  # type: ignore[method-assign]

        return armed_there

    try:
        problem = beside_a_thread(call, check, from_close, raised_by_run)
    finally:
        kept.release()
    assert problem is None, problem


def _guard_started_before_run(what: str) -> str | None:
    """Before run, a create that forks a guard again for what the program
    has (``kept``: its guard was killed), a SIGINT that another thread takes
    at each point, the handler the program's (Python's, which raises at
    once: netmcore holds only this thread's mask there); then checked
    (``what``): ``kept`` in a live guard's care ("objects"), or the interrupt
    raised once, never lost ("interrupt")."""
    kept = netmcore.create_shm(8)

    def kill_the_guard() -> None:
        guard = _watchdog._mine().guard
        assert guard is not None
        os.kill(guard.os_pid, signal.SIGKILL)
        # Until it has died, left for netmcore to reap (it sees it dead).
        os.waitid(os.P_PID, guard.os_pid, os.WEXITED | os.WNOWAIT)

    def check(made: Any) -> list[str]:
        if made is not None:
            made.release()
        problems = _guard_keeps(kept) if what == "objects" else []
        if _watchdog._mine().guard is not None:
            kill_the_guard()  # for the next run
        return problems

    try:
        kill_the_guard()
        return beside_a_thread(
            lambda: netmcore.create_shm(64),
            check,
            held=False,
            interrupts_checked=what == "interrupt",
        )
    finally:
        kept.release()


# The program's handler raises in an at-fork hook, where Python drops its exception.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_guard_started_before_run_beside_a_thread_keeps_the_programs_objects(
    master_cleanup: None,
) -> None:
    """fork_watchdog tells a guard the caller never got to go, cleaning
    nothing, and _start_guard has no point between the fork's return and
    its stores: the program's handler raising anywhere leaves ``kept`` in a
    guard's care (before 33426d2 too)."""
    problem = _guard_started_before_run("objects")
    assert problem is None, problem


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_guard_started_before_run_beside_a_thread_loses_no_ctrl_c(
    master_cleanup: None,
) -> None:
    # Before: outside run the handler is the program's (Python's own), which
    # held nothing: it raised in an at-fork hook (logging's), where Python
    # drops the exception. The hold now puts its own in place of Python's.
    problem = _guard_started_before_run("interrupt")
    assert problem is None, problem


# --------------------------------------------------------------------------
# Mailbox._decode_again: the second decode of an interrupted receive
# --------------------------------------------------------------------------


def _receive_interrupted() -> str | None:
    """A receive whose first decode a SIGINT cuts short, a second SIGINT at
    each point from there on: the message must stay, for the next receive."""
    box = Mailbox.create(int, slots=2, slot_size=16)
    try:
        sent = 0
        box.send(sent, timeout=0)

        def check(got: int | None) -> list[str]:
            nonlocal sent
            problems = []
            if got is None:  # interrupted: the next receive has the message
                try:
                    got = box.receive(timeout=0)
                except TimeoutError:
                    problems.append("the message was lost")
            if got is not None and got != sent:
                problems.append(f"received {got}, not {sent}")
            sent += 1
            box.send(sent, timeout=0)
            return problems

        return beside_a_thread(
            lambda: box.receive(timeout=0), check, first_as_it_returns(box, "_decode")
        )
    finally:
        box.release()


@netmcore.process
def receive_interrupted_in_a_worker(_: int) -> str | None:
    return _receive_interrupted()


@pytest.mark.parametrize("where", ["worker", "master"])
def test_a_second_decode_holds_a_ctrl_c_another_thread_takes(
    where: str, master_cleanup: None
) -> None:
    """Before 33426d2, the second SIGINT, taken by another thread, had the
    handler raise in the second decode too: two errors of one type, the
    message was taken for a bad one and dropped ("the message was lost")."""
    if where == "worker":
        problem = run_scenario(receive_interrupted_in_a_worker, 0)
    else:
        problem = in_the_masters_own_code(_receive_interrupted)
    assert problem is None, problem


# --------------------------------------------------------------------------
# Link.request: the withdrawal of a worker's request
# --------------------------------------------------------------------------


@netmcore.process
def withdrawal_interrupted(call: str) -> str | None:
    """A worker's create (or open) interrupted in its wait for the master's
    answer, as the link reads it (it is then withdrawn: the wait goes on,
    holding signals, and the grant is given back), a second SIGINT at each
    point from there on."""
    made = netmcore.create_shm(64)  # the worker's, opened below
    before = held()
    calls = {
        "create_shm": lambda: netmcore.create_shm(64),
        "open_shm": lambda: netmcore.open_shm(made.res_id),
    }

    def check(got: Any) -> list[str]:
        if got is not None:
            got.release()
        return left_since(before)

    try:
        return beside_a_thread(calls[call], check, first_as_it_returns(Link, "recv"))
    finally:
        made.release()


@pytest.mark.parametrize("call", ["create_shm", "open_shm"])
def test_a_withdrawal_holds_a_second_ctrl_c_another_thread_takes(
    call: str, master_cleanup: None
) -> None:
    """It passed before 33426d2 too: the handler raised in the withdrawal,
    and its loop made it again."""
    problem = run_scenario(withdrawal_interrupted, call)
    assert problem is None, problem


# --------------------------------------------------------------------------
# _cleanup.Record.compact: the switch to the compacted record
# --------------------------------------------------------------------------


def _record_files_open(record: _cleanup.Record) -> list[int]:
    """The descriptors of this process open on a record file (the record,
    or a compacted one, renamed over it or not), but ``record``'s own."""
    found = []
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the listing's own, closed since
            target = os.readlink(f"/proc/self/fd/{name}")
            if target.startswith(record.path) and int(name) != record.fd:
                found.append(int(name))
    return found


def _compaction_interrupted(what: str) -> str | None:
    """The master's record compacted in its own code, a SIGINT at each
    point; then checked (``what``): that the record's lines go to the file
    at its path, which lists what is live ("switched"); that no descriptor
    or file is left ("leaves nothing")."""
    master = _master.current_master("the test")
    record = master.record
    assert record is not None
    made = [netmcore.create_shm(8) for _ in range(2)]
    temporary = record.path + _cleanup._TMP_SUFFIX
    try:

        def check(_: Any) -> list[str]:
            problems = []
            if what == "switched":
                if os.fstat(record.fd).st_ino != os.stat(record.path).st_ino:
                    problems.append("the record's lines go to a file no longer at its path")
                if set(_cleanup.pending(record.path)) != set(record.live):
                    problems.append("the record at its path does not list what is live")
            else:
                if left := _record_files_open(record):
                    problems.append(f"descriptors left open on a record file: {left}")
                    for fd in left:
                        os.close(fd)
                if os.path.exists(temporary):
                    problems.append(f"{temporary} left")
                    os.unlink(temporary)
            return problems

        return beside_a_thread(record.compact, check)
    finally:
        for segment in made:
            segment.release()


def test_a_record_compaction_holds_a_ctrl_c_another_thread_takes() -> None:
    """The rename of the compacted record over the record and the switch of
    its descriptor are made holding every signal. Before 33426d2 the
    master's handler raised between them all the same: the record's lines
    went on to the old file, no longer at its path."""
    problem = in_the_masters_own_code(lambda: _compaction_interrupted("switched"))
    assert problem is None, problem


def test_a_record_compaction_interrupted_anywhere_leaves_nothing() -> None:
    """Not the hold: the points before it. Before: the hold began after the
    compacted record's open, and an interrupt in between left its descriptor
    open and the file beside the record."""
    problem = in_the_masters_own_code(lambda: _compaction_interrupted("leaves nothing"))
    assert problem is None, problem
