"""Defects found by a review of resources, shared memory and crash cleanup.

Each test fails because of one defect and passes once it is fixed. Every test
is bounded by a timeout and leaves no process and no /dev/shm entry (the
conftest fixture checks): what a defect would leak is unlinked in ``finally``.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import netmcore
from netmcore import _cleanup, _ipc

CLI = [sys.executable, "-m", "netmcore"]
SHM_DIR = "/dev/shm"
WITHIN = 5.0  # seconds: a wait that should end, ends well within this


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=60)


def run_first(first: Any, arg: Any, **kwargs: Any) -> Any:
    outcome = netmcore.run(
        first_process=lambda: first.start(arg),
        extract_result=lambda _c, pid: first.join_outcome_nowait(pid),
        **kwargs,
    )
    assert isinstance(outcome, netmcore.Success), outcome
    return outcome.value


def in_thread(call: Callable[[], object], timeout: float) -> str:
    """Run ``call`` in a daemon thread: how it ended, or "still waiting"."""
    said: list[str] = []

    def body() -> None:
        try:
            said.append(f"returned {call()!r}")
        except BaseException as exc:  # reported, not swallowed
            said.append(f"raised {type(exc).__name__}: {exc}")

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    thread.join(timeout)
    return said[0] if said else f"still waiting after {timeout} s"


def unlink_shm_of_pid(pid: int) -> None:
    """Unlink what a crashed subprocess (outside run) left under its own prefix."""
    for entry in os.listdir(SHM_DIR):
        if entry.startswith((f"nmc.{pid}.", f"sem.nmc.{pid}.")):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(SHM_DIR, entry))


# --- 1. admin unlink trusts a record in a directory that is not private ---------


def test_admin_unlink_refuses_a_directory_that_other_users_can_write(tmp_path: Path) -> None:
    """run() refuses a socket directory writable by others (anyone could have
    planted its files); `netmcore unlink` must too, or a planted
    netmcore.pmanage makes it delete any file of the user running it."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (shared / _cleanup.PMANAGE_NAME).write_text(f'+ file "{victim}"\n')

    result = cli("unlink", str(shared))

    assert victim.exists(), f"`netmcore unlink` deleted {victim} listed by a planted record"
    assert result.returncode == 1
    assert "Traceback" not in result.stderr


# --- 2. a shared-memory object used after close/release crashes the process ----


USE_AFTER_CLOSE = {
    "ShmMutex": "m = netmcore.ShmMutex.create(); m.release(); m.lock(timeout=0.1)",
    "ShmCondition": "c = netmcore.ShmCondition.create(); c.release(); c.signal()",
    "Mailbox": "b = netmcore.Mailbox.create(int); b.close(); b.receive(timeout=0.1)",
    "Buffer": "b = netmcore.Buffer.create(64); b.release(); b.write(b'x')",
}


@pytest.mark.parametrize("kind", sorted(USE_AFTER_CLOSE))
def test_use_after_close_or_release_raises_instead_of_a_segfault(kind: str) -> None:
    code = textwrap.dedent(
        f"""
        import netmcore
        try:
            {USE_AFTER_CLOSE[kind]}
        except Exception as exc:
            print("raised", type(exc).__name__, exc)
        else:
            print("no error")
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        unlink_shm_of_pid(proc.pid)  # a crashed process ran no exit hook
    assert proc.returncode != -signal.SIGSEGV, f"{kind} used after close: SIGSEGV\n{err}"
    assert proc.returncode == 0, err
    assert out.startswith("raised "), out


# --- 3. a Buffer's reader waits forever once its writer has died -----------------


@netmcore.process
def write_then_die(job: tuple[netmcore.ResId, str]) -> int:
    buffer = netmcore.Buffer.open(job[0])
    buffer.write(b"abc")
    if job[1] == "exit":
        os._exit(3)
    raise RuntimeError("the producer fails before it closes the stream")


@netmcore.process
def read_after_writer_died(how: str) -> list[str]:
    buffer = netmcore.Buffer.create(64)
    try:
        pid = write_then_die.start((buffer.res_id, how))
        write_then_die.join(pid)  # the writer is gone now, without close()
        first = buffer.read()
        return [repr(first), in_thread(buffer.read, WITHIN)]
    finally:
        buffer.release()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("how", ["exit", "raise"])
def test_buffer_reader_learns_that_its_writer_died(how: str) -> None:
    first, second = run_first(read_after_writer_died, how)
    assert first == repr(b"abc")
    assert not second.startswith("still waiting"), (
        "read() on a Buffer whose writer died without close() waits forever: " + second
    )


# --- 4. a Mailbox's sender waits forever once its receiver has died ----------------


@netmcore.process
def receive_once_then_die(_: int) -> int:
    box = netmcore.Mailbox.create(int, slots=1, slot_size=16)
    netmcore.SharedVar("review-box", int).set(box.res_id.n)
    box.receive()
    os._exit(3)


@netmcore.process
def send_after_receiver_died(_: int) -> str:
    var = netmcore.SharedVar("review-box", int)
    var.create()
    pid = receive_once_then_die.start(0)
    box = netmcore.Mailbox.open(netmcore.ResId(var.wait_for_value()), int)
    try:
        box.send(1)
        receive_once_then_die.join(pid)  # the receiver is gone now
        box.send(2)  # fills the only slot
        return in_thread(lambda: box.send(3), WITHIN)
    finally:
        box.release()


@pytest.mark.timeout(60)
def test_mailbox_sender_learns_that_the_receiver_died() -> None:
    said = run_first(send_after_receiver_died, 0, init_ctrl=netmcore.add_plugins)
    assert not said.startswith("still waiting"), (
        "send() to a full Mailbox whose receiver died waits forever: " + said
    )


# --- 5. one bad entry in a leftover record breaks the next start and the CLI -----


def _bad_record(sockdir: Path, tmp_path: Path, bad: str) -> str:
    """A dead master's record: one entry that cannot be removed, and a live
    shm object after it. Returns the shm object's name."""
    sockdir.mkdir(mode=0o700)
    name = _ipc.random_name("/nmc.test-review.")
    _ipc.create_mapped(name, 16).close()
    record = _cleanup.Record(str(sockdir / _cleanup.PMANAGE_NAME))
    if bad == "file-now-a-directory":
        (tmp_path / "was-a-file").mkdir()
        record.write("+", "file", str(tmp_path / "was-a-file"))
    else:  # a kind this version does not know (another version's record)
        record.write("+", "posix_mq", "/queue")
    record.write("+", "posix_shm", name)
    record.close(clean=False)
    return name


@pytest.mark.parametrize("bad", ["file-now-a-directory", "unknown-kind"])
def test_next_start_survives_a_record_entry_it_cannot_remove(tmp_path: Path, bad: str) -> None:
    sockdir = tmp_path / "sd"
    name = _bad_record(sockdir, tmp_path, bad)
    try:
        assert run_first(_identity, 5, socket_directory=str(sockdir)) == 5
        assert not os.path.exists(os.path.join(SHM_DIR, name[1:])), "the rest was not cleaned"
    finally:
        _ipc.unlink(name)


@pytest.mark.parametrize("bad", ["file-now-a-directory", "unknown-kind"])
def test_admin_unlink_survives_a_record_entry_it_cannot_remove(tmp_path: Path, bad: str) -> None:
    sockdir = tmp_path / "sd"
    name = _bad_record(sockdir, tmp_path, bad)
    try:
        result = cli("unlink", str(sockdir))
        assert "Traceback" not in result.stderr, result.stderr
        assert not os.path.exists(os.path.join(SHM_DIR, name[1:])), "the rest was not cleaned"
    finally:
        _ipc.unlink(name)


@netmcore.process
def _identity(x: int) -> int:
    return x


# --- 6. what the program manages outside run leaks when it is SIGKILLed -----------


BETWEEN_RUNS = textwrap.dedent(
    """
    import time, netmcore
    table = netmcore.SharedArray.create((1000,), "int64")   # module level, as the README says

    @netmcore.process
    def mark(k: int) -> int:
        table.open()[k] = 1
        return k

    netmcore.run(first_process=lambda: mark.start(1), extract_result=lambda c, p: None)
    print(netmcore.get_shm(table.res_id), flush=True)   # between two runs
    time.sleep(60)
    """
)


@pytest.mark.timeout(60)
def test_array_made_before_run_does_not_outlive_a_sigkill_between_runs() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", BETWEEN_RUNS],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    name = ""
    try:
        assert proc.stdout is not None
        name = proc.stdout.readline().strip()
        assert name.startswith("/"), name
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=WITHIN)
        deadline = time.monotonic() + WITHIN
        while os.path.exists(os.path.join(SHM_DIR, name[1:])) and time.monotonic() < deadline:
            time.sleep(0.02)  # polling a condition, with a deadline
        assert not os.path.exists(os.path.join(SHM_DIR, name[1:])), (
            f"{name}, made before run, outlived the SIGKILLed program"
        )
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if name:
            _ipc.unlink(name)


# --- 7. opening an object of another kind: no clear error -------------------------


def _mutex_on_condition() -> None:
    cond = netmcore.ShmCondition.create()
    try:
        netmcore.ShmMutex.open(cond.res_id)
    finally:
        cond.release()


def _mutex_on_plain_shm() -> None:
    segment = netmcore.create_shm(128)
    segment.buffer[64] = 7  # user data where a mutex keeps its kind
    try:
        netmcore.ShmMutex.open(segment.res_id)
    finally:
        segment.release()


def _condition_on_small_shm() -> None:
    segment = netmcore.create_shm(16)
    try:
        netmcore.ShmCondition.open(segment.res_id)
    finally:
        segment.release()


def _buffer_on_mailbox() -> None:
    box = netmcore.Mailbox.create(int)
    try:
        netmcore.Buffer.open(box.res_id)
    finally:
        box.release()


@pytest.mark.parametrize(
    "wrong",
    [_mutex_on_condition, _mutex_on_plain_shm, _condition_on_small_shm, _buffer_on_mailbox],
    ids=lambda f: f.__name__.lstrip("_"),
)
def test_opening_another_kind_of_object_is_a_clear_value_error(
    wrong: Callable[[], None], master_cleanup: None
) -> None:
    """Mailbox.open and SharedArray.open say "is not a mailbox/shared array";
    ShmMutex.open, ShmCondition.open and Buffer.open give IndexError,
    StopIteration or a ctypes message, or open the wrong thing silently."""
    with pytest.raises(ValueError, match=r"ResId\(\d+\)"):
        wrong()


# --- 8. an infinite timeout ---------------------------------------------------------


def _sem_wait_inf() -> object:
    sem = netmcore.create_sem(1)
    try:
        return sem.wait(timeout=math.inf)
    finally:
        sem.release()


def _mutex_lock_inf() -> object:
    mutex = netmcore.ShmMutex.create()
    try:
        got = mutex.lock(timeout=math.inf)
        mutex.unlock()
        return got
    finally:
        mutex.release()


@pytest.mark.parametrize("call", [_sem_wait_inf, _mutex_lock_inf], ids=["sem", "mutex"])
def test_infinite_timeout_waits_or_is_a_clear_error(
    call: Callable[[], object], master_cleanup: None
) -> None:
    """PosixSemaphore.wait(math.inf) raised posix_ipc.ExistentialError "The
    semaphore does not exist" (it does, with value 1); ShmMutex.lock(math.inf)
    an OverflowError about converting a float."""
    try:
        got = call()
    except (ValueError, TypeError) as exc:
        assert "timeout" in str(exc)
    else:
        assert got is True
