"""A process killed while it waits on a condition leaves the condition working.

glibc's process-shared condition variables count their waiters inside the
object: one killed in its wait was counted for ever, and the next signal (a
ShmCondition's, or a Buffer's, whose reads and writes wait on two) waited for
it to leave, for ever, deaf to timeouts and signals, holding the mutex.
"""

from __future__ import annotations

import os
from pathlib import Path

import scenario

import netmcore
from netmcore import Buffer, ResId, ShmCondition, ShmMutex, ShmSegment


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
