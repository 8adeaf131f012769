"""A process killed while it waits on a condition leaves the condition working;
and the futex those conditions are made of.

glibc's process-shared condition variables count their waiters inside the
object: one killed in its wait was counted for ever, and the next signal (a
ShmCondition's, or a Buffer's, whose reads and writes wait on two) waited for
it to leave, for ever, deaf to timeouts and signals, holding the mutex.
"""

from __future__ import annotations

import os
import platform
import signal
from pathlib import Path

import pytest
import scenario

import netmcore
from netmcore import Buffer, ResId, ShmCondition, ShmMutex, ShmSegment, _pthread


def _note_pid(note: ShmSegment) -> None:
    note.buffer[:8] = os.getpid().to_bytes(8, "little")


def _sleeping_waiter(note: ShmSegment) -> None:
    """Wait until the process that noted its pid in ``note`` sleeps (after the
    note, it blocks only in its wait); clear the note for the next one."""

    def asleep() -> bool:
        pid = int.from_bytes(note.buffer[:8], "little")
        if not pid:
            return False
        try:  # the state, after the name in parentheses: S is asleep
            return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "S"
        except FileNotFoundError:
            return False

    scenario.wait_until(asleep, "the waiter to sleep in its wait")
    note.buffer[:8] = bytes(8)


@netmcore.process
def condition_waiter(ids: tuple[ResId, ResId, ResId]) -> bool:
    """True if signalled within scenario.WAIT seconds."""
    note, mutex, cond = netmcore.open_shm(ids[0]), ShmMutex.open(ids[1]), ShmCondition.open(ids[2])
    try:
        with mutex:
            _note_pid(note)
            return cond.wait(mutex, timeout=scenario.WAIT)
    finally:
        cond.close()
        mutex.close()
        note.close()


@netmcore.process
def condition_after_a_killed_waiter(_: int) -> list[str]:
    note, mutex, cond = netmcore.create_shm(8), ShmMutex.create(), ShmCondition.create()
    ids = (note.res_id, mutex.res_id, cond.res_id)
    try:
        victim = condition_waiter.start(ids)
        _sleeping_waiter(note)
        netmcore.kill(victim)
        seen = [str(condition_waiter.join_outcome(victim))]
        with mutex:
            cond.broadcast()  # nobody waits
        live = condition_waiter.start(ids)
        _sleeping_waiter(note)
        with mutex:
            cond.signal()  # waited for the dead waiter, for ever
        seen.append(f"signalled: {condition_waiter.join(live)}")
        return seen
    finally:
        cond.release()
        mutex.release()
        note.release()


def test_a_condition_whose_waiter_was_killed_still_signals_the_next() -> None:
    assert scenario.run_scenario(condition_after_a_killed_waiter, 0) == [
        "killed by SIGKILL",
        "signalled: True",
    ]


@netmcore.process
def buffer_reader(ids: tuple[ResId, ResId]) -> list[bytes]:
    """Two reads of the buffer, each waiting up to scenario.WAIT seconds."""
    note, buffer = netmcore.open_shm(ids[0]), Buffer.open(ids[1])
    try:
        _note_pid(note)
        return [buffer.read(timeout=scenario.WAIT) for _ in range(2)]
    finally:
        buffer.close()
        note.close()


@netmcore.process
def buffer_after_a_killed_reader(_: int) -> list[str]:
    note, buffer = netmcore.create_shm(8), Buffer.create(64)
    ids = (note.res_id, buffer.res_id)
    try:
        victim = buffer_reader.start(ids)
        _sleeping_waiter(note)  # in its first read, the buffer empty
        netmcore.kill(victim)
        seen = [str(buffer_reader.join_outcome(victim))]
        buffer.write(b"1", timeout=scenario.WAIT)  # nobody waits
        live = buffer_reader.start(ids)
        _sleeping_waiter(note)  # in its second read
        buffer.write(b"2", timeout=scenario.WAIT)  # waited for the dead reader, for ever
        seen.append(f"read: {buffer_reader.join(live)}")
        return seen
    finally:
        buffer.release()
        note.release()


def test_a_buffer_whose_reader_was_killed_in_its_wait_serves_the_next() -> None:
    assert scenario.run_scenario(buffer_after_a_killed_reader, 0) == [
        "killed by SIGKILL",
        "read: [b'1', b'2']",
    ]


@netmcore.process
def writer_that_never_closes(res_id: ResId) -> None:
    Buffer.open(res_id).write(b"x")
    os._exit(0)  # without close(): the reader must find the stream ended by its death


@netmcore.process
def reader_under_a_timer(_: int) -> str:
    """A read whose writer died, while SIGALRM comes every 5 ms to a Python
    handler that returns: each cuts a slice of the wait short."""
    with Buffer.create(64) as buffer:
        writer_that_never_closes.join(writer_that_never_closes.start(buffer.res_id))
        assert buffer.read() == b"x"
        signal.signal(signal.SIGALRM, lambda signum, frame: None)
        signal.setitimer(signal.ITIMER_REAL, 0.005, 0.005)
        try:
            return scenario.outcome_text(lambda: buffer.read(timeout=scenario.WAIT))
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)


def test_a_buffer_wait_cut_short_by_signals_still_sees_its_writer_dead() -> None:
    """A slice a signal cut short counted as a wake-up, after which the reader
    did not look whether its writer had died: under a frequent timer it never
    did, and waited out its timeout (or for ever)."""
    got = scenario.run_scenario(reader_under_a_timer, 0)
    assert got.startswith("OwnerDiedError: the other side of Buffer("), got


def test_the_futex_call_is_checked_before_conditions_use_it() -> None:
    """A wrong number would make every condition wait return at once, for
    ever (a spinning waiter, a Buffer that never sees its other side die)."""
    assert _pthread._futex_number("x86_64", 8) == 202
    assert _pthread._futex_number("x86_64", 4) == 240  # a 32-bit Python on it
    assert _pthread._futex_number("aarch64", 8) == 98
    assert _pthread._futex_number("aarch64", 4) == 240
    _pthread.check_futex(_pthread._SYS_FUTEX)
    getpid = {"x86_64": 39, "aarch64": 172}[platform.machine()]
    with pytest.raises(OSError, match=f"system call {getpid} is not the futex call"):
        _pthread.check_futex(getpid)
