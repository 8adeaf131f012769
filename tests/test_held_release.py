"""A ShmMutex handle closed or released while a thread of the process holds
the mutex through it.

glibc links every robust mutex a thread holds into that thread's robust
list, through the mutex's own memory, at the address of the mapping it was
locked by: the thread's next lock or unlock of any robust mutex writes into
its neighbours there, and the kernel walks the list when the thread ends.
Before, the close unmapped that memory all the same: the next lock of another
mutex by that thread died of SIGSEGV (or wrote into whatever was mapped there
since), and a thread that ended holding it left it held for ever (the
kernel's walk stopped at the unmapped entry, so no locker ever got
EOWNERDEAD).

Now the holder's own close unlocks it, every level, and its next locker, in
any process, gets OwnerDiedError, as after a holder's death; another
thread's close leaves the mapping until that thread lets go: its unlock
through the closed handle still works, and if it ends holding the mutex, the
next locker gets OwnerDiedError from the kernel's walk.

Each case runs in a fresh interpreter (``_run``): the old code's failure was
a crash or a hang, which must not take pytest with it. A second process (a
fork of it) then locks the mutex, through the handle it inherited.
"""

from __future__ import annotations

import logging
import re
import signal
import subprocess
import sys

import pytest

from netmcore import ShmMutex, _ipc

pytestmark = pytest.mark.timeout(120)

# The snippet's start: a mutex, a handle on it that the process keeps (and
# that the second process, its fork, locks through), and another mutex made
# before the handle goes (its lock links into the list next to the held one).
PRELUDE = """
import logging, os, sys, threading, time
logging.basicConfig(stream=sys.stdout, format="%(message)s")
from netmcore import OwnerDiedError, ShmMutex

mutex = ShmMutex.create(KIND)
keep = ShmMutex.open(mutex.res_id)
other = ShmMutex.create()
name = mutex._segment.name


def say(line):
    sys.stdout.write(line + "\\n")  # one write: print's two may let another thread's in between
    sys.stdout.flush()


def mappings():
    with open("/proc/self/maps") as f:
        return sum(name in line for line in f)


def in_thread(body):
    thread = threading.Thread(target=body)
    thread.start()
    thread.join()


def released_while_another_thread_holds(then):
    # Another thread locks the mutex through ``mutex`` and holds it while the
    # main thread releases that handle; it then does ``then``, and ends.
    held, released = threading.Event(), threading.Event()

    def body():
        mutex.lock()
        held.set()
        released.wait()
        then()

    thread = threading.Thread(target=body)
    thread.start()
    held.wait()
    mutex.release()
    say(f"mapped while held: {mappings()}")
    released.set()
    thread.join()
"""

# What a second process gets when it locks the mutex (5 s: the old code left
# it held for ever), then the first process's own lock, then the cleanup.
EPILOGUE = """
say(f"mapped after: {mappings()}")
read_end, write_end = os.pipe()
pid = os.fork()
if pid == 0:
    try:
        try:
            got = f"returned {keep.lock(timeout=5)}"
        except OwnerDiedError as exc:
            got = f"OwnerDiedError: {exc}"
        if keep._state.depth():
            keep.unlock()
        os.write(write_end, got.encode())
    finally:
        os._exit(0)
os.close(write_end)
with os.fdopen(read_end) as pipe:
    say(f"second process: {pipe.read()}")
os.waitpid(pid, 0)
again = keep.lock(timeout=0)  # the second process has let go of it
say(f"then this one: {again}")
if again:
    keep.unlock()
for handle in (mutex, keep, other):
    handle.release()
say("done")
"""

# Each case: what it does, and what it prints (before the epilogue's lines).
CASES = {
    # The brief's scenario: a thread locks, releases the handle it locked
    # through, locks and unlocks another mutex, and ends.
    "holder-releases-then-locks-another": """
def body():
    mutex.lock()
    if KIND == "recursive":
        mutex.lock(); mutex.lock()
    say(f"holder: os pid {os.getpid()}, thread {threading.get_native_id()}")
    mutex.release()
    other.lock()
    other.unlock()
    say("locked and unlocked another")
in_thread(body)
""",
    # It only ends: the kernel's walk of its list at its end.
    "holder-closes-then-ends": """
def body():
    mutex.lock()
    say(f"holder: os pid {os.getpid()}, thread {threading.get_native_id()}")
    mutex.close()
in_thread(body)
""",
    # Another thread holds it through the handle the main thread releases:
    # its unlock through the released handle lets it go, and the mapping.
    "other-thread-unlocks-through-the-released-handle": """
def unlock():
    try:
        mutex.unlock()
        say("unlocked through the released handle")
    except ValueError as exc:
        say(f"ValueError: {exc}")
released_while_another_thread_holds(then=unlock)
""",
    # Another thread holds it, and ends holding it: the next locker learns it
    # from the kernel (the mapping was kept), and the mapping goes after.
    "other-thread-ends-holding": """
released_while_another_thread_holds(then=lambda: None)  # it ends holding it
# The kernel's mark, at the thread's end (which comes after the join: the
# thread ends in the kernel after it leaves Python). Polled, with a deadline.
deadline = time.monotonic() + 5
while not keep._state.word.value & 0x40000000 and time.monotonic() < deadline:
    time.sleep(0.001)
say(f"marked by the kernel: {bool(keep._state.word.value & 0x40000000)}")
other.lock()
other.unlock()  # the kept mapping is looked at again, and goes
""",
    # A condition's waiter: the holder it gave the mutex up to signals, and
    # releases its handle without unlocking; the wait takes the mutex back.
    "a-waiters-relock-is-the-next-locker": """
from netmcore import ShmCondition
cond = ShmCondition.create()
def body():
    handle = ShmMutex.open(mutex.res_id)
    handle.lock()  # once the main thread waits: the wait gives it up
    cond.signal()
    say(f"holder: os pid {os.getpid()}, thread {threading.get_native_id()}")
    handle.release()
mutex.lock()
thread = threading.Thread(target=body)
thread.start()
try:
    say(f"waiter: returned {cond.wait(mutex, timeout=10)}")
except OwnerDiedError as exc:
    say(f"waiter: OwnerDiedError: {exc}")
mutex.unlock()
thread.join()
cond.release()
""",
}

MUTEX = r"ShmMutex\(ResId\(\d+\), (normal|errorcheck|recursive)\)"
HELD_NOW = (
    r"; you hold it now \(it is consistent again\): repair the shared state it guards, which "
    r"may be half updated, then unlock"
)
RELEASED_BY = (
    r"the holder of {mutex} \(os pid {pid}, thread {tid}\) closed or released the handle it "
    r"held it through, without unlocking it, so it was unlocked for it" + HELD_NOW
)
DIED = rf"the holder of {MUTEX} died while holding it" + HELD_NOW
WARNING = (
    r"netmcore: {mutex} was closed or released by the thread that held it \(os pid {pid}, "
    r"thread {tid}; {levels}\): it was unlocked, and its next locker gets OwnerDiedError, as "
    r"after a holder's death\. Unlock a mutex before you close or release the handle you "
    r"locked it through \(with mutex: \.\.\.\)"
)


SCRIPT_TIMEOUT = 30  # a guard: the old code left some of these waiting for ever


def _run(case: str, kind: str) -> list[str]:
    """Run ``case`` in a fresh interpreter; the lines it printed. A crash or
    a hang (killed at SCRIPT_TIMEOUT) fails the test with what it printed."""
    code = PRELUDE + CASES[case] + EPILOGUE
    code = code.replace("KIND", repr(kind))
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        out, _ = proc.communicate(timeout=SCRIPT_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        pytest.fail(f"the script hung for {SCRIPT_TIMEOUT} s; it printed:\n{out}", pytrace=False)
    finally:
        _ipc.unlink_prefix(f"/nmc.{proc.pid}.")  # what a crashed process left
    rc = proc.returncode
    if rc < 0:
        pytest.fail(
            f"the script died of {signal.Signals(-rc).name}; it printed:\n{out}", pytrace=False
        )
    assert rc == 0, f"the script failed (exit status {rc}); it printed:\n{out}"
    return out.splitlines()


def _fullmatch(pattern: str, line: str) -> None:
    assert re.fullmatch(pattern, line), f"{line!r}\ndoes not match\n{pattern!r}"


def _holder(line: str, printed: list[str]) -> tuple[str, str]:
    """The os pid and thread id of the holder that ``line`` names (the
    snippet's "holder: ..." line): what the messages after it must name."""
    holder = re.fullmatch(r"holder: os pid (\d+), thread (\d+)", line)
    assert holder, printed
    pid, tid = holder.groups()
    return pid, tid


@pytest.mark.parametrize("kind", ["normal", "errorcheck", "recursive"])
def test_a_holder_that_releases_its_handle_then_locks_another_mutex_lives_on(kind: str) -> None:
    """Before: SIGSEGV in the other lock (glibc linked it next to the held
    mutex, in memory that was gone). Now the release unlocks it (all three
    levels of a recursive one), says so, and the second process gets
    OwnerDiedError naming the holder; once told, it is a plain mutex."""
    lines = _run("holder-releases-then-locks-another", kind)
    pid, tid = _holder(lines[0], lines)
    levels = "3 levels" if kind == "recursive" else "1 level"
    _fullmatch(WARNING.format(mutex=MUTEX, pid=pid, tid=tid, levels=levels), lines[1])
    assert lines[2:4] == ["locked and unlocked another", "mapped after: 1"], lines
    _fullmatch(
        "second process: OwnerDiedError: " + RELEASED_BY.format(mutex=MUTEX, pid=pid, tid=tid),
        lines[4],
    )
    assert lines[5:] == ["then this one: True", "done"], lines


def test_a_holder_that_closes_its_handle_and_ends_leaves_the_mutex_to_the_next_locker() -> None:
    """Before: the kernel's walk of the ending thread's list stopped at the
    unmapped mutex, which stayed held by a dead thread for ever (the second
    process's lock timed out: "returned False")."""
    lines = _run("holder-closes-then-ends", "normal")
    pid, tid = _holder(lines[0], lines)
    _fullmatch(
        "second process: OwnerDiedError: " + RELEASED_BY.format(mutex=MUTEX, pid=pid, tid=tid),
        lines[-3],
    )
    _fullmatch(WARNING.format(mutex=MUTEX, pid=pid, tid=tid, levels="1 level"), lines[1])
    assert lines[2:] == [
        "mapped after: 1",
        lines[-3],
        "then this one: True",
        "done",
    ], lines


def test_another_threads_unlock_through_the_released_handle_lets_it_go() -> None:
    """The release by a thread that does not hold it keeps the mapping while
    the holder holds it; the holder's unlock (its ``with``'s exit, say) then
    works, and the mapping goes. Before: the unlock was refused (ValueError),
    the mapping was gone, and the mutex stayed held for ever (the second
    process's lock timed out: "returned False")."""
    lines = _run("other-thread-unlocks-through-the-released-handle", "normal")
    assert lines == [
        "mapped while held: 2",
        "unlocked through the released handle",
        "mapped after: 1",
        "second process: returned True",  # a plain unlock: nothing to tell
        "then this one: True",
        "done",
    ]


def test_another_thread_that_ends_holding_it_after_the_release_is_a_dead_holder() -> None:
    """The kept mapping lets the kernel's walk at the thread's end mark the
    mutex: the next locker gets OwnerDiedError, and the mapping goes at the
    next lock or unlock. Before: held by a dead thread for ever."""
    lines = _run("other-thread-ends-holding", "normal")
    assert lines[:3] == ["mapped while held: 2", "marked by the kernel: True", "mapped after: 1"]
    _fullmatch(f"second process: OwnerDiedError: {DIED}", lines[3])
    assert lines[4:] == ["then this one: True", "done"], lines


def test_a_condition_waits_relock_after_such_a_release_is_told_of_it() -> None:
    """The wait takes the mutex back, after the holder released its handle
    without unlocking: it is the next locker, and OwnerDiedError says so,
    holding the mutex, as after a holder's death. Before: the holder's
    release left it held by its thread for ever, and the wait never took it
    back (the script hung)."""
    printed = _run("a-waiters-relock-is-the-next-locker", "errorcheck")
    # The holder thread's warning and the waiter's line come in either order.
    warnings = [line for line in printed if line.startswith("netmcore: ")]
    lines = [line for line in printed if not line.startswith("netmcore: ")]
    pid, tid = _holder(lines[0], printed)
    _fullmatch(
        "waiter: OwnerDiedError: " + RELEASED_BY.format(mutex=MUTEX, pid=pid, tid=tid), lines[1]
    )
    assert len(warnings) == 1, printed
    _fullmatch(WARNING.format(mutex=MUTEX, pid=pid, tid=tid, levels="1 level"), warnings[0])
    assert lines[2:] == [
        "mapped after: 2",  # mutex and keep: the holder's handle went
        "second process: returned True",  # told once, to the waiter
        "then this one: True",
        "done",
    ], printed


def test_closing_another_handle_leaves_a_lock_taken_through_this_one(
    master_cleanup: None, caplog: pytest.LogCaptureFixture
) -> None:
    """Each handle is a mapping of its own: the thread holds the mutex
    through ``mutex``, and a handle it only opened goes without touching
    it (no unlock, no warning, and ``with``'s exit unlocks as usual)."""
    mutex = ShmMutex.create("errorcheck")
    try:
        with caplog.at_level(logging.WARNING, logger="netmcore"), mutex:
            other = ShmMutex.open(mutex.res_id)
            other.release()
            assert mutex._state.depth() == 1
        assert caplog.records == []
        assert mutex.lock(timeout=0) is True  # free, and nothing to tell
        mutex.unlock()
    finally:
        mutex.release()
