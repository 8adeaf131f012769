"""Buffer under faults: a signal handler's exception at any point of a call,
and a side stopped while it holds the buffer's lock."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from types import FrameType

import pytest
import scenario

import netmcore
from netmcore import Buffer, _pthread
from netmcore import _buffer as buffer_module

pytestmark = pytest.mark.timeout(60)

NETMCORE = os.path.dirname(buffer_module.__file__)
# The holder's thread id in a robust mutex's futex word (the kernel's ABI).
TID_MASK = 0x3FFFFFFF


def _held_by_this_thread(buffer: Buffer) -> bool:
    return buffer._mutex.word.value & TID_MASK == threading.get_native_id()


class Injected(Exception):
    """What the signal handler of the model raises."""


class _Hook:
    """A profile function that counts the events inside the Buffer module
    (a function's start or return, a C function's call or return) and, at
    event ``at``, raises: where Python would run a signal handler, which
    raises there. It unsets itself by raising (sys.setprofile's rule)."""

    def __init__(self, at: int | None) -> None:
        self.at = at
        self.events: list[str] = []

    def __call__(self, frame: FrameType, event: str, arg: object) -> None:
        if not frame.f_code.co_filename.startswith(NETMCORE):
            return  # not netmcore's code: a garbage collector's callback, say
        f: FrameType | None = frame
        while f is not None and f.f_code.co_filename != buffer_module.__file__:
            f = f.f_back
        if f is None:
            return  # not in a Buffer call
        if len(self.events) == self.at:
            raise Injected(f"at {event} in {frame.f_code.co_name}")
        self.events.append(f"{event} {frame.f_code.co_name}")


def _filled(capacity: int, data: bytes) -> tuple[Buffer, Buffer]:
    writer = Buffer.create(capacity)
    reader = Buffer.open(writer.res_id)
    if data:
        writer.write(data)
    return writer, reader


def _read_then_write(reader: Buffer, writer: Buffer) -> None:
    assert reader.read(4) == b"1234"
    writer.write(b"abcdef")  # wraps round the end of the ring


# What each case runs (on the writer and the reader handles), after filling
# the buffer with its bytes: the fast paths, and a wait that times out.
CASES: dict[str, tuple[int, bytes, Callable[[Buffer, Buffer], object]]] = {
    "write": (64, b"", lambda w, r: w.write(b"x" * 8)),
    "write-wrapping": (8, b"123456", lambda w, r: _read_then_write(r, w)),
    "write-full-timeout": (4, b"full", lambda w, r: w.write(b"x", timeout=0)),
    "read": (64, b"abc", lambda w, r: r.read()),
    "read-empty-timeout": (64, b"", lambda w, r: r.read(timeout=0)),
    "peek": (64, b"abc", lambda w, r: r.peek(2)),
    "consume": (64, b"abc", lambda w, r: r.consume(2)),
    "close": (64, b"", lambda w, r: w.close()),
}


def _run_with_hook(name: str, at: int | None) -> tuple[_Hook, BaseException | None]:
    capacity, data, call = CASES[name]
    writer, reader = _filled(capacity, data)
    hook = _Hook(at)
    raised: BaseException | None = None
    try:
        sys.setprofile(hook)
        try:
            call(writer, reader)
        except (Injected, TimeoutError) as exc:
            raised = exc
        finally:
            sys.setprofile(None)
        # The lock must be free, whatever the exception interrupted: checked
        # on the mutex word first, since a call would wait for it for ever.
        for handle in (writer, reader):
            assert not _held_by_this_thread(handle), (
                f"{name}: the buffer's lock is still held by this thread after {raised!r}"
            )
            assert handle._use.calls == [], f"{name}: a call is still counted after {raised!r}"
        # ... and both sides can use it: nothing waits for the lock.
        writer.close()
        while reader.read(timeout=0):
            pass
    finally:
        reader.release()
        writer.release()
    return hook, raised


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_signal_handler_exception_anywhere_in_a_call_leaves_the_lock_free(
    name: str, master_cleanup: None
) -> None:
    """A raising signal handler runs at a function's start and after a call
    returns: raise at each such point in turn (the profile hook's events),
    and the buffer's lock is free after, and no call stays counted."""
    hook, raised = _run_with_hook(name, None)
    assert hook.events, "the hook saw no event in the Buffer call"
    for at in range(len(hook.events)):
        _, raised = _run_with_hook(name, at)
        assert isinstance(raised, Injected), f"{name}: nothing was injected at {at}"


# --------------------------------------------------------------------------
# A side stopped (SIGSTOP) while it holds the buffer's lock
# --------------------------------------------------------------------------


@contextlib.contextmanager
def _stopped_while_holding(buffer: Buffer, call: Callable[[Buffer], object]) -> Iterator[None]:
    """A child process makes ``call`` on its own handle, and stops itself
    (SIGSTOP) at the first point where it holds the buffer's lock (a profile
    hook); inside the ``with`` it is stopped there. It goes on after."""
    other = Buffer.open(buffer.res_id)
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.close(ready_r)

            def hook(frame: FrameType, event: str, arg: object) -> None:
                if _held_by_this_thread(other):
                    sys.setprofile(None)
                    os.write(ready_w, b"1")
                    os.kill(os.getpid(), signal.SIGSTOP)

            sys.setprofile(hook)
            call(other)
            sys.setprofile(None)
        finally:
            os._exit(0)
    os.close(ready_w)
    try:
        assert os.read(ready_r, 1) == b"1", "the child ended before it held the lock"
        os.waitpid(pid, os.WUNTRACED)  # stopped, holding the lock
        yield
    finally:
        os.kill(pid, signal.SIGCONT)
        _, status = os.waitpid(pid, 0)
        os.close(ready_r)
        other.release()
    assert os.waitstatus_to_exitcode(status) == 0


def test_a_timeout_bounds_the_wait_for_a_lock_held_by_a_stopped_side(
    master_cleanup: None,
) -> None:
    buffer = Buffer.create(64)
    name = re.escape(repr(buffer))
    held = "waiting for the buffer's lock, which its other side held all that time"
    try:
        with _stopped_while_holding(buffer, lambda b: b.write(b"abc")):
            for call, timeout in (("read", 0), ("peek", 0.05)):
                with pytest.raises(TimeoutError) as info:
                    getattr(buffer, call)(timeout=timeout)
                assert re.match(
                    rf"{name}\.{call}\(\) timed out after {timeout} s {held}", str(info.value)
                ), info.value
            with pytest.raises(TimeoutError) as info:
                buffer.write(b"xy", timeout=0.05)
            assert re.fullmatch(
                rf"{name}\.write\(\) timed out after 0\.05 s {held} .*: 0 of 2 bytes were written",
                str(info.value),
            ), info.value
        assert buffer.read(timeout=0) == b"abc"  # once it went on
    finally:
        buffer.release()


def _lock_held_in_master() -> list[str]:
    buffer = Buffer.create(64)
    try:
        with _stopped_while_holding(buffer, lambda b: b.write(b"abc")):
            return [
                scenario.outcome_text(lambda: buffer.read(timeout=0.05)),
                scenario.outcome_text(lambda: buffer.read(timeout=0)),
                scenario.outcome_text(lambda: buffer.write(b"xy", timeout=0.05)),
                repr(buffer),
            ]
    finally:
        buffer.release()


def test_in_the_master_a_wait_for_the_lock_is_a_wait_like_any_other() -> None:
    """The other side holds the lock for a copy, and needs nothing from the
    master to let it go: the master waits for it, as any process does (a
    refusal would have depended on the moment), and its timeout bounds the
    wait; ``timeout=0`` does not wait."""
    *got, name = scenario.in_master(_lock_held_in_master)
    waited = "timed out after 0.05 s waiting for the buffer's lock"
    assert got[0].startswith(f"TimeoutError: {name}.read() {waited}"), got
    assert got[1].startswith(f"TimeoutError: {name}.read() timed out after 0 s waiting"), got
    assert got[2].startswith(f"TimeoutError: {name}.write() {waited}"), got
    assert got[2].endswith(": 0 of 2 bytes were written"), got


# --------------------------------------------------------------------------
# A write refused in the master says how much went in
# --------------------------------------------------------------------------


def _partial_write_in_master() -> list[str]:
    buffer = Buffer.create(4)
    try:
        got = [
            scenario.outcome_text(lambda: buffer.write(b"123456")),
            scenario.outcome_text(buffer.read),
        ]
    finally:
        buffer.release()
    return got


def test_a_write_refused_in_the_master_says_how_many_bytes_went_in() -> None:
    got = scenario.in_master(_partial_write_in_master)
    assert re.fullmatch(
        r"ContextError: Buffer\(ResId\(\d+\), capacity=4\)\.write\(\) on a full buffer "
        r"would wait in the master, .*\. 4 of 6 bytes were written",
        got[0],
    ), got
    assert got[1] == "returned b'1234'"


# --------------------------------------------------------------------------
# A signal handler's exception as a call takes the lock from a dead side
# --------------------------------------------------------------------------


_trylock = buffer_module._trylock  # the real one


class Interrupted(Exception):
    """What the signal handler raises (a timeout's, say)."""


def _die_holding_the_lock(buffer: Buffer, lock: Callable[[int], int]) -> None:
    """A side that dies in the middle of a call: a thread takes the buffer's
    lock, as every call does, and ends holding it (the kernel marks it, and
    its next locker gets EOWNERDEAD). Waits for the lock if it is held; does
    not wait for the kernel's mark (see scenario.end_a_thread_holding): the
    lock's next locker may take it, and clear the mark, at once."""
    thread = threading.Thread(target=lock, args=(buffer._mutex.addr,))
    thread.start()
    thread.join()


BUFFER = r"Buffer\(ResId\(\d+\), capacity=64\)"
TOLD = (
    rf"OwnerDiedError: the other side of {BUFFER} died while using it \(seen by a call "
    r"that an exception ended, and told now\): the stream ends here"
)
ENDED = (
    rf"ValueError: {BUFFER} is closed: nothing more can be written \(0 of 3 bytes were written\)"
)
# Each case: the interrupted call (on the writer and reader handles), whose
# lock finds the lock of a side that died in a call; then what follows, and
# what each gives. The stream ends where the side died, and the first call to
# come to its end says why, once, as OwnerDiedError would have at once.
LOST: dict[str, tuple[Callable[[Buffer, Buffer], object], list[tuple[str, str]]]] = {
    "read": (
        lambda w, r: r.read(),
        [("read", "returned b'abc'"), ("read", TOLD), ("read", "returned b''"), ("write", ENDED)],
    ),
    "peek": (
        lambda w, r: r.peek(),
        [("read", "returned b'abc'"), ("read", TOLD), ("read", "returned b''"), ("write", ENDED)],
    ),
    "consume": (
        lambda w, r: r.consume(1),
        [("read", "returned b'abc'"), ("read", TOLD), ("read", "returned b''"), ("write", ENDED)],
    ),
    "write": (
        lambda w, r: w.write(b"def"),
        [("write", TOLD), ("write", ENDED), ("read", "returned b'abc'"), ("read", "returned b''")],
    ),
    "close": (
        lambda w, r: w.close(),
        [("read", "returned b'abc'"), ("read", TOLD), ("read", "returned b''"), ("write", ENDED)],
    ),
}


def _assert_what_follows(
    writer: Buffer, reader: Buffer, follows: list[tuple[str, str]], after: str
) -> None:
    """Make each call of ``follows`` in turn (a read or a write, without
    waiting) once ``after`` was cut short; each gives what it says, a regular
    expression over its outcome's text."""
    ops: dict[str, Callable[[], object]] = {
        "read": lambda: reader.read(timeout=0),
        "write": lambda: writer.write(b"xyz", timeout=0),
    }
    got = [scenario.outcome_text(ops[op]) for op, _ in follows]
    for (op, expected), outcome in zip(follows, got, strict=True):
        assert re.fullmatch(expected, outcome), f"{after}, then {op}: {got}"


@pytest.mark.parametrize("name", sorted(LOST))
def test_a_call_cut_short_as_it_takes_a_dead_sides_lock_ends_the_stream(
    name: str, master_cleanup: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The exception took the place of EOWNERDEAD: the call's ``finally``
    repaired the lock and gave it back, but the stream went on as if
    nothing had happened (the reader read on into what the dead side left
    half written, and a writer wrote on: "returned None", a read "timed
    out" waiting for more)."""
    call, follows = LOST[name]
    writer, reader = _filled(64, b"abc")
    seen: list[int] = []
    try:
        lock = _pthread._mutex_lock
        scenario.end_a_thread_holding(lambda: lock(writer._mutex.addr), writer._mutex.word)
        lost = scenario.interrupted_on_owner_died(_trylock, seen)
        monkeypatch.setattr(buffer_module, "_trylock", lost)
        with scenario.sigusr1_raises(Interrupted), pytest.raises(Interrupted):
            call(writer, reader)
        monkeypatch.undo()
        assert seen == [errno.EOWNERDEAD], seen  # the case is what it says
        _assert_what_follows(writer, reader, follows, name)
    finally:
        monkeypatch.undo()
        reader.release()
        writer.release()


def test_a_wait_cut_short_as_it_takes_back_a_dead_sides_lock_ends_the_stream(
    master_cleanup: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same, in a read's wait for data: the wait gives the lock up while
    it sleeps, a side takes it and dies in its call, and the exception comes
    as the wait takes it back (EOWNERDEAD). Before: the read after timed out
    waiting for more, as if the stream went on."""
    writer, reader = _filled(64, b"")
    real_lock = _pthread._mutex_lock
    relocks: list[int] = []
    dying: list[threading.Thread] = []

    def lock_then_let_a_side_die(addr: int) -> int:
        rc: int = _trylock(addr)
        if rc == 0 and not dying:  # held: the side waits for it, and takes it in the wait
            dying.append(threading.Thread(target=_die_holding_the_lock, args=(reader, real_lock)))
            dying[0].start()
        return rc

    try:
        monkeypatch.setattr(buffer_module, "_trylock", lock_then_let_a_side_die)
        relock = scenario.interrupted_on_owner_died(real_lock, relocks)
        monkeypatch.setattr(_pthread, "_mutex_lock", relock)
        with scenario.sigusr1_raises(Interrupted), pytest.raises(Interrupted):
            reader.read(timeout=scenario.WAIT)
        monkeypatch.undo()
        dying[0].join()
        assert relocks[-1] == errno.EOWNERDEAD, relocks
        assert not _held_by_this_thread(reader)
        follows = [("read", TOLD), ("read", "returned b''"), ("write", ENDED)]
        _assert_what_follows(writer, reader, follows, "a read's wait")
    finally:
        monkeypatch.undo()
        reader.release()
        writer.release()


@netmcore.process
def _reads_10_then_dies(res_id: netmcore.ResId) -> int:
    buffer = Buffer.open(res_id)
    buffer.read(10)
    os.kill(os.getpid(), signal.SIGKILL)
    return 0


@netmcore.process
def _writes_100_into_16(_: int) -> str:
    buffer = Buffer.create(16)
    try:
        pid = _reads_10_then_dies.start(buffer.res_id)
        try:
            buffer.write(b"y" * 100, timeout=60)  # the timeout: a guard against a hang
        except netmcore.OwnerDiedError as exc:
            return str(exc)
        finally:
            _reads_10_then_dies.join_outcome(pid)
        return "written"
    finally:
        buffer.release()


def test_a_write_that_its_readers_death_ends_says_how_many_bytes_went_in() -> None:
    """As its timeout and its refusal in the master say it: it did not."""
    said = scenario.run_scenario(_writes_100_into_16, 0)
    found = re.search(r": (\d+) of 100 bytes were written$", said)
    assert found is not None and int(found.group(1)) >= 16, said
