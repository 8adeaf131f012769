"""A release cut short by a signal handler's exception destroys its object
whole, or not at all.

Before, ``_resources.release`` took the last user out of the entry's set,
and ``destroy`` then closed the mapping, unlinked the kernel object,
recorded that it was gone, and forgot the entry last. An exception anywhere
in between (a Ctrl-C, a timeout's handler, any handler that raises) left
the entry in the table with no user: a get of its id then succeeded, on an
object that was unlinked already (or that no release would ever unlink),
and the record of what is left (the guard's, the run's) could list it still.
The give-back loops of ``_resource_api`` repeat their release, but a
program's own ``release`` (and the master serving a worker's) does not.

Each test here failed before its fix; the docstring of each says how. The
signals are sent by the tests themselves where a real one could land
(``interrupting``, and the master's side through ``_SignalAt`` below);
their handler raises, as a Ctrl-C's or a timeout's.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import itertools
import os
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

import psutil
import pytest
from interrupting import Interrupted, _SignalAt, at_every_point, handler_raises
from scenario import in_master, outcome_value, run_snippet, signal_at_call

import netmcore
from netmcore import NoResource, ResId, _cleanup, _context, _ipc, _resources, _watchdog
from netmcore._resources import MASTER, ResourceType

pytestmark = pytest.mark.timeout(60)

# Names of this test process (a worker's objects are named the same way), so
# that another run of these tests beside this one is not seen.
PREFIX = f"/nmctest.destroy.{os.getpid()}."
KINDS = ["shm", "sem", "file", "preallocated"]
_numbers = itertools.count()


class Made(NamedTuple):
    res_id: ResId
    typ: ResourceType
    name: str


def _new_name(kind: str) -> str:
    return f"{PREFIX}{kind}.{next(_numbers)}"


def _make(kind: str, directory: Path) -> Made:
    """A managed object of ``kind``, whose only user is this process."""
    if kind == "shm":
        name = _new_name(kind)
        _ipc.create_mapped(name, 64).close()
        return Made(netmcore.manage_shm(name).id, ResourceType.POSIX_SHM, name)
    if kind == "sem":
        name = _new_name(kind)
        _ipc.create_semaphore(name, 0)
        return Made(netmcore.manage_sem(name).id, ResourceType.POSIX_SEM, name)
    if kind == "file":
        path = directory / f"file.{next(_numbers)}"
        path.write_bytes(b"")
        return Made(netmcore.manage_file(str(path)).id, ResourceType.FILE, str(path))
    res_id, name = netmcore.create_preallocated_shm(PREFIX, 64)
    return Made(res_id, ResourceType.POSIX_SHM_PREALLOCATED, name)


def _exists(made: Made) -> bool:
    if made.typ is ResourceType.FILE:
        return os.path.exists(made.name)
    if made.typ is ResourceType.POSIX_SEM:
        return os.path.exists(f"/dev/shm/sem.{made.name[1:]}")
    return os.path.exists(f"/dev/shm/{made.name[1:]}")


def _records(made: Made) -> list[str]:
    """Which records of what is left list ``made``: this process's (the
    guard's, outside run; the watchdog's, in it) and, in run, the
    master's crash-cleanup record."""
    found = []
    if (made.typ, made.name) in _watchdog._mine().objects:
        found.append("this process's")
    master = _context.current.master
    record = master.record if master is not None else None
    if record is not None and (made.typ.value, made.name) in _cleanup.pending(record.path):
        found.append("the run's pmanage")
    return found


def _as_before(made: Made, users: set[int]) -> list[str]:
    """A release that had not begun: the object there, and recorded."""
    problems = []
    if not _exists(made):
        problems.append(f"its users are {sorted(users)}, yet its object is gone")
    if not _records(made):
        problems.append("its object is there, yet no record lists it")
    return problems


def _gone_whole(made: Made) -> list[str]:
    """A release that has begun: the object gone, no record listing it, and
    a get of its id refused (NoResource)."""
    problems = []
    if _exists(made):
        problems.append("its object was left")
    if recorded := _records(made):
        problems.append(f"{' and '.join(recorded)} record still listed it")
    try:
        netmcore.get_resource(made.res_id)
    except NoResource:
        pass
    else:
        problems.append(
            "a get of its id succeeded"
            + ("" if _exists(made) else ", on an object that no longer exists")
        )
        netmcore.release(made.res_id)  # whole now (the old code's too): for the next round
    return problems


def _after_release(made: Made, user: int) -> list[str]:
    """What a release of ``made`` by ``user``, maybe interrupted, left half
    done. Not begun, it is released here, whole (and checked again)."""
    entry = _resources.table.get(made.res_id.n)
    if entry is not None and user in entry.users:
        problems = _as_before(made, set(entry.users))
        if user == MASTER:
            netmcore.release(made.res_id)
        else:
            _resources.release(made.res_id.n, user)  # as the master serves the worker's
        return problems + _gone_whole(made)
    return _gone_whole(made)


# --------------------------------------------------------------------------
# The master's own release (and a program's before run), interrupted anywhere
# --------------------------------------------------------------------------


def _release_interrupted_anywhere(kind: str, directory: Path) -> str | None:
    """``netmcore.release`` of an object of ``kind`` whose last user is this
    process, with a SIGINT at each point in turn: the first problem."""
    keep = netmcore.create_shm(8)  # the guard lives on: not forked again for each object
    try:
        made = _make(kind, directory)

        def check(_result: object) -> list[str]:
            nonlocal made
            problems = _after_release(made, MASTER)
            made = _make(kind, directory)
            return problems

        try:
            return at_every_point(lambda: netmcore.release(made.res_id), check)
        finally:
            netmcore.release(made.res_id)
    finally:
        keep.release()


@pytest.mark.parametrize("where", ["before run", "in the master"])
@pytest.mark.parametrize("kind", KINDS)
def test_a_release_interrupted_anywhere_in_the_master_destroys_whole_or_not_at_all(
    kind: str, where: str, tmp_path: Path, master_cleanup: None
) -> None:
    """Before: a SIGINT as the discard of the last user returned (the
    first point after it) left the entry with no user: its object was left,
    listed still, and a get of its id succeeded. So did one at each later
    point up to the entry's removal, on an object unlinked already from
    the unlink on, and listed still until the record of its end."""
    if where == "before run":
        problem = _release_interrupted_anywhere(kind, tmp_path)
    else:
        found = in_master(
            lambda: [p] if (p := _release_interrupted_anywhere(kind, tmp_path)) else []
        )
        problem = found[0] if found else None
    assert problem is None, problem
    assert not _leftovers()


def _leftovers() -> list[str]:
    """What these tests made that is still in /dev/shm or in the table."""
    bare = PREFIX[1:]
    entries = [e for e in os.listdir("/dev/shm") if e.removeprefix("sem.").startswith(bare)]
    managed = [e.name for e in _resources.table.values() if e.name.startswith(PREFIX)]
    return entries + managed


# --------------------------------------------------------------------------
# Interrupted in init_ctrl: the exception ends the run, and the end of the
# run finds nothing half destroyed
# --------------------------------------------------------------------------


def _unlink_interrupted(name: str, when: str) -> Callable[[str], bool]:
    """``_ipc.unlink``, which runs SIGUSR1's handler as the unlink of
    ``name`` begins (before it) or as it returns (after it), once."""
    real = _ipc.unlink
    sent = False

    def unlink(target: str) -> bool:
        nonlocal sent
        if target != name or sent:
            return real(target)
        sent = True
        if when == "begins":
            signal.raise_signal(signal.SIGUSR1)
        result = real(target)
        signal.raise_signal(signal.SIGUSR1)
        return result

    return unlink


@netmcore.process
def _nothing(_: int) -> int:
    return 0


@pytest.mark.parametrize("when", ["begins", "returns"])
def test_a_release_in_init_ctrl_interrupted_leaves_nothing_after_the_run(
    when: str, monkeypatch: pytest.MonkeyPatch, master_cleanup: None
) -> None:
    """The handler's exception ends the run (it is raised by run, after the
    run's end). Before: the entry stayed with no user; after the run, a get
    of its id succeeded, on an object that was still there (the release's
    unlink never came) or one that no longer existed, and which the
    program's guard, forked at the run's end, was still told to unlink."""
    made: list[Made] = []

    def init_ctrl(_ctrl: netmcore.Controller) -> None:
        made.append(_make("shm", Path()))
        monkeypatch.setattr(_ipc, "unlink", _unlink_interrupted(made[0].name, when))
        netmcore.release(made[0].res_id)

    with handler_raises(signal.SIGUSR1), pytest.raises(Interrupted):
        netmcore.run(
            first_process=lambda: _nothing.start(0),
            extract_result=lambda _c, pid: outcome_value(_nothing.join_outcome_nowait(pid)),
            init_ctrl=init_ctrl,
        )
    monkeypatch.undo()
    problems = _gone_whole(made[0])
    assert not problems, problems
    assert not _children(), "a guard was left for the object"


def _children() -> list[psutil.Process]:
    return [c for c in psutil.Process().children() if c.status() != psutil.STATUS_ZOMBIE]


# --------------------------------------------------------------------------
# A worker's release, interrupted anywhere in the master that serves it
# --------------------------------------------------------------------------


@netmcore.process
def manage_then_release(name: str) -> str:
    """Manage ``name`` (this worker its only user), then release it: the
    master destroys it as it serves the release."""
    netmcore.release(netmcore.manage_shm(name).id)
    return "released"


class _ServedRelease:
    """While inside, the master's ``_resources.release`` of a worker's use of
    the object ``name`` runs with SIGUSR1 sent at its ``at``-th point (see
    ``interrupting._SignalAt``), once: the id and the worker, once it came."""

    def __init__(self, name: str, at: int) -> None:
        self.name = name
        self.hook = _SignalAt(at, lambda: signal.raise_signal(signal.SIGUSR1))
        self.made: Made | None = None
        self.user = 0

    def __enter__(self) -> _ServedRelease:
        real = self.real = _resources.release

        def release(res_id: int, user: int) -> None:
            entry = _resources.table.get(res_id)
            if self.made is not None or entry is None or entry.name != self.name:
                return real(res_id, user)
            self.made = Made(ResId(res_id), entry.typ, entry.name)
            self.user = user
            # As at_every_point: a collection at a point would run code
            # that is not the release's.
            gc.disable()
            try:
                sys.setprofile(self.hook)  # its return is the first point
                real(res_id, user)
            finally:
                sys.setprofile(None)
                gc.enable()

        _resources.release = release
        return self

    def __exit__(self, *exc: object) -> None:
        _resources.release = self.real


def _outcome_of(_ctrl: netmcore.Controller, pid: netmcore.ProcessId[str]) -> object:
    return manage_then_release.join_outcome_nowait(pid)


def _served_release_interrupted_anywhere() -> Iterator[str]:
    """A run per point of the master's release of the worker's use: what
    each run (which the handler's exception ended) left wrong."""
    for at in itertools.count():
        name = _new_name("worker")
        _ipc.create_mapped(name, 64).close()  # the worker manages it
        with handler_raises(signal.SIGUSR1), _ServedRelease(name, at) as served:
            try:
                outcome = netmcore.run(
                    first_process=lambda: manage_then_release.start(name),  # noqa: B023
                    extract_result=_outcome_of,
                )
            except Interrupted:
                outcome = None
        if served.made is None:
            _ipc.unlink(name)  # the worker never managed it
            yield f"point {at}: the master never served the release ({outcome!r})"
            return
        where = served.hook.where or "no point (the release ran whole)"
        problems = _after_release(served.made, served.user)
        if served.hook.where is None and outcome_value(outcome) != "released":
            problems.append(f"the run without a signal ended {outcome!r}")
        if _children():
            problems.append("a process (the guard) was left after the run")
        netmcore.destroy_resources()  # what a failed round left, for the next
        _ipc.unlink(name)
        if problems:
            yield f"SIGUSR1 at point {at}, {where}: " + "; ".join(problems)
        if served.hook.where is None:
            return


def test_a_workers_release_interrupted_anywhere_in_the_master_leaves_nothing_after_the_run(
    master_cleanup: None,
) -> None:
    """The master destroys a worker's object as it serves the worker's
    release of its last use; a SIGUSR1 whose handler raises there ends the
    run. Before: one as the discard of the worker's use returned left the
    entry with no user, its object there and listed as live (the program's
    guard forked for it at the run's end), and after the run a get of its
    id succeeded; so did one at each later point, on an object unlinked
    already from the unlink on."""
    problem = next(_served_release_interrupted_anywhere(), None)
    assert problem is None, problem
    assert not _leftovers()


# --------------------------------------------------------------------------
# A destroy that fails of its own: the entry is unusable, and destroyed later
# --------------------------------------------------------------------------


@contextlib.contextmanager
def _unlink_refused(made: Made) -> Iterator[None]:
    """Have the unlink of ``made`` refused (EPERM), as that of another
    user's object in a sticky /dev/shm is."""
    real = _ipc.unlink

    def refused(name: str) -> bool:
        if name != made.name:
            return real(name)
        raise PermissionError(errno.EPERM, "Operation not permitted", name)

    with pytest.MonkeyPatch.context() as patched:
        patched.setattr(_ipc, "unlink", refused)
        yield


@pytest.mark.parametrize("then", ["release", "destroy_resources"])
def test_a_destroy_that_failed_is_unusable_and_finished_later(
    then: str, master_cleanup: None
) -> None:
    """The unlink of the object refused (as for another user's object in a
    sticky /dev/shm): the release raises that error. Before, the entry
    stayed with no user, and a get of its id succeeded: the object lived
    on, used again, though its last user had released it. Now the get
    raises NoResource, and a later release of the id (or
    destroy_resources) tries the destroy again."""
    made = _make("shm", Path())
    with _unlink_refused(made):
        with pytest.raises(PermissionError):
            netmcore.release(made.res_id)
        with pytest.raises(NoResource, match="being destroyed"):
            netmcore.get_resource(made.res_id)
        assert _exists(made) and _records(made), "the object is there: it is still recorded"
    if then == "release":
        netmcore.release(made.res_id)
    else:
        netmcore.destroy_resources()
    problems = _gone_whole(made)
    assert not problems, problems


# --------------------------------------------------------------------------
# A destroy's loop and what runs inside it (found in review)
# --------------------------------------------------------------------------

_HANDLER_RELEASES_DURING_A_DESTROY = (
    """
import os, signal, sys
import netmcore
from netmcore import _ipc, _resources
name = f"/nmc.{os.getpid()}.dl"
_ipc.create_mapped(name, 64).close()
keep = netmcore.create_shm(8)  # the guard lives on
stale = netmcore.create_shm(8)
stale.release()
made = netmcore.manage_shm(name)
signal.signal(signal.SIGUSR1, lambda *_: netmcore.release(stale.res_id))
recorded = _resources.on_change
ends = []
def on_change(op, typ, n):
    if (op, n) == ("-", name):
        ends.append(n)
    recorded(op, typ, n)
_resources.on_change = on_change
"""
    + signal_at_call("_live_guard")  # inside on_change, the guard's lock held
    + """
sys.setprofile(_at_call)
netmcore.release(made.id)
sys.setprofile(None)
keep.release()
print("released", os.path.exists("/dev/shm" + name), "ends recorded", len(ends))
"""
)


def test_a_handlers_release_during_a_destroy_leaves_it_to_that_destroy() -> None:
    """A signal handler that releases an id released already ("harmless")
    while a destroy records its end: before, the handler's release
    finished that same destroy, inside it (its record of the end waited
    for ever for the lock the destroy below held; with that lock let go,
    the end was recorded twice)."""
    code, out = run_snippet(_HANDLER_RELEASES_DURING_A_DESTROY, 30)
    assert (code, out) == (0, "released False ends recorded 1\n")


_RELEASES_TOO_DEEP = """
import os, sys, traceback
import netmcore
from netmcore import NoResource, _ipc, _resources

def depth_here():
    # The recursion depth as the limit counts it (C calls too): the lowest
    # limit that can be set here.
    depth = len(traceback.extract_stack())
    while True:
        try:
            sys.setrecursionlimit(depth)
            return depth
        except RecursionError:
            depth += 1

limit = sys.getrecursionlimit()
depth = depth_here()
sys.setrecursionlimit(limit)
keep = netmcore.create_shm(8)  # the guard lives on
steps = _resources._destroy_steps
tries = []
def counted(entry):
    tries[-1] += 1
    steps(entry)
_resources._destroy_steps = counted
raised = []
for room in range(5, 80, 3):
    name = f"/nmc.{os.getpid()}.{room}"
    _ipc.create_mapped(name, 64).close()
    made = netmcore.manage_shm(name)
    tries.append(0)
    sys.setrecursionlimit(depth + room)
    try:
        netmcore.release(made.id)
    except RecursionError:
        raised.append((made, name))
    finally:
        sys.setrecursionlimit(limit)
if max(tries) > 1:
    print("a destroy tried again after a RecursionError")
for made, name in raised:
    netmcore.release(made.id)  # finishes it (or makes it, if it had not begun)
    try:
        netmcore.get_resource(made.id)
    except NoResource:
        pass
    else:
        print("a get succeeded")
    if os.path.exists("/dev/shm" + name):
        print("left", name)
keep.release()
print("raised", bool(raised))
"""


def test_a_release_too_deep_in_the_stack_raises_and_is_finished_later() -> None:
    """Releases with less and less room below the recursion limit: where
    the destroy's loop meets the RecursionError, it is its own failure.
    Before, the loop took it for an interrupt and tried again for ever."""
    code, out = run_snippet(_RELEASES_TOO_DEEP, 30)
    assert (code, out) == (0, "raised True\n")


def test_a_destroy_left_that_fails_again_does_not_fail_another_release(
    caplog: pytest.LogCaptureFixture, master_cleanup: None
) -> None:
    """The release of B finishes the destroys left (A's, cut short by a
    second exception as its loop went round: set up here as that leaves
    it), and A's unlink is refused. Before, B's release raised A's error
    and B stayed used; now A's failure is logged, and A is left for
    destroy_resources."""
    a, b = _make("shm", Path()), _make("shm", Path())
    entry = _resources.table[a.res_id.n]
    entry.destroying = True
    _resources._unfinished[a.res_id.n] = entry
    with _unlink_refused(a):
        netmcore.release(b.res_id)
    assert not _gone_whole(b)
    assert f"{a.name} could not be destroyed" in caplog.text
    netmcore.destroy_resources()
    assert not _gone_whole(a)


def test_what_a_run_records_at_its_start_leaves_out_what_was_recorded_gone(
    master_cleanup: None,
) -> None:
    """An entry whose destroy was cut short after its end was recorded: its
    name may be another object's by now, so neither the watchdog of a run
    nor the master's record take it (they would unlink it after a crash)."""
    made, other = _make("shm", Path()), _make("shm", Path())
    entry = _resources.table[made.res_id.n]
    entry.destroying = entry.unlinked = entry.recorded_gone = True
    _resources._unfinished[made.res_id.n] = entry
    try:
        listed = _resources.recorded_objects()
        assert (made.typ, made.name) not in listed
        assert (other.typ, other.name) in listed
    finally:
        entry.unlinked = entry.recorded_gone = False
        netmcore.release(made.res_id)
        netmcore.release(other.res_id)
