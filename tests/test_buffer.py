"""The shared byte Buffer, and upstream's pipeline example built on it."""

from __future__ import annotations

import contextlib
import math
import os
import random
import re
import signal
import subprocess
import sys
import threading
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scenario import joined, outcome_text, run_scenario, run_snippet

import netmcore
from netmcore import (
    Buffer,
    OwnerDiedError,
    ResId,
    _buffer,
    _pthread,
    _resources,
)

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
sys.path.insert(0, str(EXAMPLES))
import pipeline  # noqa: E402


def run(first: type[netmcore.ProcessDef[int, list[bytes]]], arg: int) -> list[bytes]:
    result = netmcore.run(
        first_process=lambda: first.start(arg),
        extract_result=lambda _c, pid: first.join_nowait(pid),
    )
    assert result is not None
    return result


@netmcore.process
def write_all(job: tuple[netmcore.ResId, list[bytes]]) -> int:
    buffer = netmcore.Buffer.open(job[0])
    for chunk in job[1]:
        buffer.write(chunk)
    buffer.close()
    buffer.release()
    return len(job[1])


@netmcore.process
def stream_through_small_ring(capacity: int) -> list[bytes]:
    """A producer writes more than the ring holds, in uneven chunks, so it
    waits while full and the ring wraps; the consumer reads it all back."""
    rng = random.Random(capacity)
    chunks = [
        bytes(rng.randrange(256) for _ in range(rng.randrange(1, 3 * capacity))) for _ in range(40)
    ]
    buffer = netmcore.Buffer.create(capacity)
    pid = write_all.start((buffer.res_id, chunks))
    got = bytearray()
    while view := buffer.peek(limit=rng.randrange(1, capacity + 1)):
        assert len(view) <= capacity
        got += view
        n = len(view)
        view.release()
        buffer.consume(n)
    assert write_all.join(pid) == len(chunks)
    assert buffer.read() == b""  # the end of the stream stays the end
    buffer.release()
    return [bytes(got), b"".join(chunks)]


@pytest.mark.parametrize("capacity", [1, 7, 64, 4096])
def test_buffer_carries_every_byte_in_order_through_a_small_ring(capacity: int) -> None:
    got, sent = run(stream_through_small_ring, capacity)
    assert got == sent


@netmcore.process
def local_semantics(_: int) -> list[bytes]:
    out = []
    with netmcore.Buffer.create(8) as buffer:
        buffer.write(b"abcdef")
        out.append(bytes(buffer.peek(4)))  # no copy, nothing consumed
        out.append(buffer.read(3))
        buffer.write(b"ghijk")  # wraps around the 8-byte ring
        out.append(bytes(buffer.peek()))  # a view: up to the wrap only
        out.append(buffer.read())  # a copy: across the wrap (it stopped there)
        buffer.write(b"lmnopqr")  # wraps again
        out.append(buffer.read(5))  # across the wrap, at most the limit
        out.append(buffer.read())
        buffer.close()
        out.append(buffer.read())
        try:
            buffer.write(b"x")
        except ValueError as exc:
            out.append(str(exc).encode())
        for n in (1, -1):
            try:
                buffer.consume(n)
            except ValueError as exc:
                out.append(str(exc).encode())
    return out


def test_buffer_peek_read_wrap_and_end_of_stream() -> None:
    out = run(local_semantics, 0)
    assert out[:7] == [b"abcd", b"abc", b"defgh", b"defghijk", b"lmnop", b"qr", b""]
    assert out[7].endswith(b"is closed: nothing more can be written (0 of 1 bytes were written)")
    assert out[8] == b"cannot consume 1 bytes: 0 are there"
    assert out[9] == b"n=-1 is not valid: consume(n) deletes 0 bytes or more"


@netmcore.process
def write_through_a_peek(_: int) -> list[str]:
    with netmcore.Buffer.create(8) as buffer:
        buffer.write(b"abc")
        view = buffer.peek()
        readonly = view.readonly
        try:
            view[0] = ord("x")
            wrote = "written"
        except TypeError:
            wrote = "TypeError"
        view.release()
        return [str(readonly), wrote, buffer.read().decode()]


def test_buffer_peek_is_a_read_only_view() -> None:
    # A view of the ring, writable: a write through it changed the bytes
    # the writer had sent, as they were read.
    assert run_scenario(write_through_a_peek, 0) == ["True", "TypeError", "abc"]


@netmcore.process
def read_across_the_wrap(capacity: int) -> list[int]:
    """The bytes that read() allocates to take a full ring across its wrap."""
    with netmcore.Buffer.create(capacity) as buffer:
        buffer.write(b"a" * (capacity // 2))
        buffer.read()
        buffer.write(b"b" * capacity)  # from the middle of the ring: it wraps
        tracemalloc.start()
        try:
            got = buffer.read()
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        return [len(got), got.count(b"b"), peak]


def test_buffer_read_across_the_wrap_copies_once() -> None:
    # Each run was copied, then the two joined: twice the bytes allocated.
    capacity = 4 * 1024 * 1024
    length, count, peak = run_scenario(read_across_the_wrap, capacity)
    assert length == count == capacity
    assert peak < capacity * 3 // 2, peak


@netmcore.process
def write_what_has_no_flat_bytes(_: int) -> list[str]:
    out = []
    ints = np.arange(8, dtype=np.int64)
    with netmcore.Buffer.create(256) as buffer:
        for data in (memoryview(ints[::2]), ints.reshape(2, 4).T, "text", 5):
            try:
                buffer.write(data)  # type: ignore[arg-type]
            except TypeError as exc:
                out.append(str(exc))
        buffer.write(bytes(memoryview(ints[::2])))  # the fix: a contiguous copy
        buffer.close()
        out.append(buffer.read().hex())  # only the copy was written
    return out


def test_buffer_write_of_data_that_is_not_contiguous_bytes_names_the_fix() -> None:
    """A strided view, a transposed array and a str are refused before any
    of their bytes is written, with a TypeError naming the rule and the fix
    (they were memoryview's bare "casts are restricted to C-contiguous views"
    and "a bytes-like object is required")."""
    strided, transposed, text, number, written = run_scenario(write_what_has_no_flat_bytes, 0)
    assert strided == (
        "Buffer.write takes C-contiguous data, and this memoryview of shape (4,) and strides "
        "(16,) is not (a slice with a step, or a transposed array): pass a contiguous copy: "
        "bytes(view), or numpy.ascontiguousarray(a)"
    )
    assert transposed.startswith("Buffer.write takes C-contiguous data, and this ndarray of ")
    assert transposed.endswith("numpy.ascontiguousarray(a)")
    assert text == (
        "Buffer.write takes bytes-like data (bytes, bytearray, memoryview, a numpy array), "
        "not str: encode it first (text.encode())"
    )
    assert number == (
        "Buffer.write takes bytes-like data (bytes, bytearray, memoryview, a numpy array), "
        "not int: pass its bytes"
    )
    assert bytes.fromhex(written) == np.arange(0, 8, 2, dtype=np.int64).tobytes()


def test_buffer_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match="capacity 0 is not valid: it must be at least 1 byte"):
        netmcore.Buffer.create(0)


def naive_cksum(data: bytes) -> int:
    cksum = 0
    for byte in data:
        cksum = ((cksum << 3) + byte) & 0x3FFFFFFF
    return cksum


def test_fold_over_chunks_equals_upstream_per_byte_checksum() -> None:
    rng = random.Random(7)
    data = bytes(rng.randrange(256) for _ in range(5000))
    for _ in range(20):
        cuts = sorted(rng.sample(range(1, len(data)), rng.randrange(1, 50)))
        cksum = 0
        for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True):
            cksum = pipeline.fold(cksum, data[a:b])
        assert cksum == naive_cksum(data)


def test_pipeline_example_streams_every_byte() -> None:
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / "pipeline.py"), "1"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    expected = naive_cksum((b"0123456789" * 100_000)[:1_000_000])
    assert lines[0] == "bytes: 1000000"
    assert lines[1] == f"cksum: {expected}"
    assert lines[2].startswith("throughput: ") and lines[2].endswith(" MB/s")


@netmcore.process
def write_then_end(job: tuple[netmcore.ResId, str]) -> int:
    buffer = netmcore.Buffer.open(job[0])
    buffer.write(b"abc")
    if job[1] == "exit":
        os._exit(3)
    raise RuntimeError("the producer fails before it closes the stream")


@netmcore.process
def read_after_the_writer_ended(how: str) -> list[bytes]:
    buffer = netmcore.Buffer.create(64)
    try:
        pid = write_then_end.start((buffer.res_id, how))
        write_then_end.join(pid)  # the writer has ended, without close()
        first = buffer.read()
        with pytest.raises(netmcore.OwnerDiedError) as info:
            buffer.read()
        return [first, str(info.value).encode(), buffer.read()]
    finally:
        buffer.release()


@pytest.mark.parametrize("how", ["exit", "raise"])
def test_buffer_reader_learns_that_its_writer_ended_without_closing(how: str) -> None:
    """As at a pipe's end: once what was written is read, a reader whose writer
    ended without close() is not left waiting. It gets OwnerDiedError (the
    stream may be cut short), then the end of the stream."""
    first, error, after = run(read_after_the_writer_ended, how)  # type: ignore[arg-type]
    assert first == b"abc"
    assert re.fullmatch(
        rb"the other side of Buffer\(ResId\(\d+\), capacity=64\) \(os pid \d+\) ended "
        rb"without closing it: the stream ends here",
        error,
    )
    assert after == b""


@netmcore.process
def read_once_then_die(job: tuple[netmcore.ResId, int]) -> None:
    buffer = netmcore.Buffer.open(job[0])
    assert buffer.read(1) == b"a"
    os._exit(3)


@netmcore.process
def write_after_the_reader_died(_: int) -> list[bytes]:
    buffer = netmcore.Buffer.create(2)
    try:
        buffer.write(b"a")
        read_once_then_die.join(read_once_then_die.start((buffer.res_id, 0)))
        with pytest.raises(netmcore.OwnerDiedError, match=r"\(os pid \d+\) ended without"):
            buffer.write(b"bcd")  # fits only in part: waits for a reader that is gone
        return list(iter(buffer.read, b""))  # what it did write, then the end
    finally:
        buffer.release()


def test_buffer_writer_learns_that_its_reader_ended() -> None:
    """A writer waiting for room that only a dead reader could make gets
    OwnerDiedError; the stream has ended."""
    assert b"".join(run(write_after_the_reader_died, 0)) == b"bc"


def test_buffer_used_after_release_raises_value_error() -> None:
    """Its memory is unmapped: using it is a ValueError (in a subprocess, since
    a regression would crash the process with SIGSEGV)."""
    code = (
        "import netmcore\nb = netmcore.Buffer.create(64)\nb.release()\n"
        "try:\n    b.write(b'x')\nexcept ValueError as e:\n    print(e)"
    )
    returncode, out = run_snippet(code, timeout=30)
    assert returncode == 0
    assert re.fullmatch(r"Buffer\(ResId\(\d+\), capacity=64\) is closed or released .*\n", out)


def test_buffer_open_on_another_kind_of_object_is_a_value_error(master_cleanup: None) -> None:
    """As Mailbox.open does: a Buffer is recognised by the mark its creator wrote."""
    box = netmcore.Mailbox.create(int)
    try:
        with pytest.raises(
            ValueError,
            match=rf"^resource ResId\({box.res_id.n}\) is not a Buffer: it is a Mailbox "
            r"\(Mailbox.open\(res_id, T\) opens it\)$",
        ):
            netmcore.Buffer.open(box.res_id)
    finally:
        box.release()


# --------------------------------------------------------------------------
# Buffer: a process that only opened it (and ended) is not its reader
# --------------------------------------------------------------------------


@netmcore.process
def buffer_capacity(res_id: ResId) -> int:
    """Open the buffer only to look at it, then end: neither reader nor writer."""
    buffer = Buffer.open(res_id)
    capacity = buffer.capacity
    buffer.release()
    return capacity


@netmcore.process
def late_reader(arg: tuple[ResId, int]) -> int:
    res_id, gate_r = arg
    os.read(gate_r, 1)  # the writer's wait has looked at the recorded pids
    buffer = Buffer.open(res_id)
    try:
        total = 0
        while chunk := buffer.read(1024):
            total += len(chunk)
        return total
    finally:
        buffer.release()


def write_letting_the_reader_in_at_the_first_look(buffer: Buffer, gate_w: int) -> list[str]:
    """Write more than the buffer holds, then close it. The first wait for room
    that times out lets the reader in (a byte to ``gate_w``) just before the
    writer looks at the recorded pids, holding the mutex, so before the reader
    can read. ``["looked", outcome]``."""
    real_cond_wait = _pthread.cond_wait
    looks = []

    def cond_wait_then_let_reader_come(cond: int, mutex: int, timeout: float | None) -> bool:
        woken = real_cond_wait(cond, mutex, timeout)
        if not woken and not looks:
            looks.append("looked")
            os.write(gate_w, b"g")
        return woken

    _pthread.cond_wait = cond_wait_then_let_reader_come
    try:
        buffer.write(b"y" * 64)  # waits for the reader to make room
        buffer.close()
        outcome = "written"
    except OwnerDiedError as exc:
        outcome = f"OwnerDiedError: {exc}"
    finally:
        _pthread.cond_wait = real_cond_wait
    return [*looks, outcome]


@netmcore.process
def looked_at_buffer_scenario(gate: tuple[int, int]) -> list[str]:
    gate_r, gate_w = gate
    buffer = Buffer.create(16)
    try:
        assert joined(buffer_capacity, buffer_capacity.start(buffer.res_id)) == 16
        pid = late_reader.start((buffer.res_id, gate_r))
        looked = write_letting_the_reader_in_at_the_first_look(buffer, gate_w)
        late_reader.join(pid)
    finally:
        buffer.release()
    return looked


def test_buffer_opened_by_a_process_that_ended_is_not_a_dead_reader(
    gate: tuple[int, int],
) -> None:
    """Only reading makes a process the reader whose end cuts the stream: one
    that opened the buffer only to look at it, and ended, is not taken for it
    (the writer's wait for room goes on until the real reader comes)."""
    assert run_scenario(looked_at_buffer_scenario, gate) == ["looked", "written"]


# --------------------------------------------------------------------------
# Buffer: a process that opened the buffer and ended holding it (no write, no
# close, no release) is the reader's other side: the reader learns that it
# ended (OwnerDiedError, or the end of the stream) instead of waiting for ever.
# --------------------------------------------------------------------------


@netmcore.process
def writer_that_never_writes(res_id: ResId) -> int:
    buffer = Buffer.open(res_id)  # the writer: it opens, then ends without close()
    return buffer.capacity


class _Hung(Exception):
    pass


def _alarm(_signum: int, _frame: Any) -> None:
    raise _Hung


@netmcore.process
def reader_of_a_silent_writer(_: int) -> str:
    buffer = Buffer.create(16)
    try:
        assert joined(writer_that_never_writes, writer_that_never_writes.start(buffer.res_id)) == 16
        old = signal.signal(signal.SIGALRM, _alarm)
        signal.setitimer(signal.ITIMER_REAL, 2.0)  # the guard: the wait looks every 0.1 s
        try:
            return f"read {buffer.read()!r}"  # b"" (the end) would do as well
        except OwnerDiedError:
            return "OwnerDiedError"
        except _Hung:
            return "hung"
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)
    finally:
        buffer.release()


def test_buffer_reader_does_not_hang_when_its_writer_only_opened_it_and_ended() -> None:
    assert run_scenario(reader_of_a_silent_writer, 0) != "hung"


# --------------------------------------------------------------------------
# Buffer: a side that wrote (or read) inside `with`, and ended without close(),
# is still the side whose end the other learns of: leaving `with` releases the
# handle, it does not end the stream (the other side waited for ever).
# --------------------------------------------------------------------------


@netmcore.process
def writes_hello_in_with(res_id: ResId) -> int:
    with Buffer.open(res_id) as buffer:
        buffer.write(b"hello")
    return 0


@netmcore.process
def reader_of_a_writer_that_left_with(_: int) -> list[str]:
    with Buffer.create(16) as buffer:
        joined(writes_hello_in_with, writes_hello_in_with.start(buffer.res_id))
        got = [repr(buffer.read())]
        try:
            got.append(repr(buffer.read()))
        except OwnerDiedError as exc:
            got.append(f"OwnerDiedError: {exc}")
        return got


def test_buffer_reader_learns_that_a_writer_that_left_with_ended() -> None:
    first, second = run_scenario(reader_of_a_writer_that_left_with, 0)
    assert first == "b'hello'"
    assert second.startswith("OwnerDiedError: ") and "ended without closing it" in second


@netmcore.process
def reads_4_in_with(res_id: ResId) -> int:
    with Buffer.open(res_id) as buffer:
        return len(buffer.read(4))


@netmcore.process
def writer_of_a_reader_that_left_with(_: int) -> str:
    with Buffer.create(8) as buffer:
        buffer.write(b"x" * 8)  # full
        assert joined(reads_4_in_with, reads_4_in_with.start(buffer.res_id)) == 4
        try:
            buffer.write(b"y" * 8)  # 4 fit; then it waits for room nobody will make
        except OwnerDiedError as exc:
            return f"OwnerDiedError: {exc}"
        return "written"


def test_buffer_writer_learns_that_a_reader_that_left_with_ended() -> None:
    got = run_scenario(writer_of_a_reader_that_left_with, 0)
    assert got.startswith("OwnerDiedError: ") and "ended without closing it" in got


@netmcore.process
def bad_limits(_: int) -> list[str]:
    with Buffer.create(16) as buffer:
        buffer.write(b"hello")
        got = []
        for limit in (0, -1, "3", 2.0):
            try:
                got.append(repr(buffer.read(limit)))  # type: ignore[arg-type]
            except (TypeError, ValueError) as exc:
                got.append(f"{type(exc).__name__}: {str(exc).split(':')[0]}")
            try:
                buffer.peek(limit)  # type: ignore[arg-type]
            except (TypeError, ValueError) as exc:
                got.append(f"peek {type(exc).__name__}")
        got.append(repr(buffer.read()))  # nothing was lost
        return got


def test_buffer_limit_below_1_is_a_value_error_and_of_another_type_a_type_error() -> None:
    # 0 is not the end of the stream; a str or a float is not taken as a number.
    got = run_scenario(bad_limits, 0)
    assert got == [
        "ValueError: limit=0 is not valid",
        "peek ValueError",
        "ValueError: limit=-1 is not valid",
        "peek ValueError",
        "TypeError: limit='3' is not valid",
        "peek TypeError",
        "TypeError: limit=2.0 is not valid",
        "peek TypeError",
        "b'hello'",
    ]


# --------------------------------------------------------------------------
# Buffer: timeouts on the waits, as on every other wait
# --------------------------------------------------------------------------

SHORT = 0.05  # a timeout that must expire


@pytest.mark.parametrize("timeout", [0, SHORT])
def test_buffer_waits_end_with_timeout_error(timeout: float, master_cleanup: None) -> None:
    """A reader with nothing to read, and a writer with no room, give up
    after ``timeout`` (a writer says how much it wrote); nothing is lost."""
    buffer = Buffer.create(4)
    try:
        name = re.escape(repr(buffer))
        for call in (buffer.read, buffer.peek):
            with pytest.raises(TimeoutError, match=rf"^no bytes came into {name} within "):
                call(timeout=timeout)
        with pytest.raises(TimeoutError) as info:
            buffer.write(b"123456", timeout=timeout)
        assert str(info.value) == (
            f"{buffer!r} stayed full for {timeout} s: 4 of 6 bytes were written"
        )
        assert buffer.read(timeout=timeout) == b"1234"
        buffer.write(b"56", timeout=timeout)  # room: no wait
        buffer.close()
        assert [buffer.read(timeout=timeout), buffer.read(timeout=timeout)] == [b"56", b""]
    finally:
        buffer.release()


@pytest.mark.parametrize(
    ("timeout", "error"), [(-1, ValueError), (math.nan, ValueError), ("1", TypeError)]
)
def test_buffer_bad_timeout_is_refused(
    timeout: Any, error: type[Exception], master_cleanup: None
) -> None:
    buffer = Buffer.create(4)
    try:
        for call in (buffer.read, buffer.peek, lambda timeout: buffer.write(b"x", timeout)):
            with pytest.raises(error, match=r"^timeout .* is not valid: give"):
                call(timeout=timeout)
        buffer.close()
        assert buffer.read(timeout=0) == b"", "a refused write wrote"
    finally:
        buffer.release()


# --------------------------------------------------------------------------
# Buffer: consume(n) of what is not an int is refused before anything is done
# (struct.pack_into zeroed the shared state before it failed: the unread bytes
# were lost, and the capacity 0 left the buffer dead for both sides).
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "n",
    [1.5, 1.0, np.float64(1.0), np.int64(1), True, "1", None],
    ids=["1.5", "1.0", "np.float64", "np.int64", "True", "str", "None"],
)
def test_buffer_consume_of_what_is_not_an_int_is_a_type_error_that_changes_nothing(
    n: Any, master_cleanup: None
) -> None:
    buffer = Buffer.create(8)
    try:
        buffer.write(b"abcdef")
        assert bytes(buffer.peek(limit=2)) == b"ab"
        with pytest.raises(TypeError) as info:
            buffer.consume(n)
        assert str(info.value) == (
            f"n={n!r} is not valid: consume(n) takes an int, the number of bytes to delete "
            f"from the head (0 or more, at most the bytes there), not {type(n).__name__}: "
            "pass len(view) of what peek() returned, or int(n)"
        )
        buffer.write(b"gh", timeout=0)  # the capacity is still 8
        buffer.close()
        assert [buffer.read(timeout=0), buffer.read(timeout=0)] == [b"abcdefgh", b""]
    finally:
        buffer.release()


# --------------------------------------------------------------------------
# Buffer: a creator that ends before its first write (or read) is the other
# side of the process it handed the buffer to, which learns of its end
# (OwnerDiedError, then the end of the stream) instead of waiting for ever.
# --------------------------------------------------------------------------

GUARD = 5.0  # a guard against the old hang: the wait looks every 0.1 s


@netmcore.process
def creator_that_dies_unused(job: tuple[int, int, str]) -> None:
    out_w, opened_r, when = job
    buffer = Buffer.create(8)
    netmcore.hand_over(buffer.res_id)  # the buffer outlives this process
    os.write(out_w, f"{buffer.res_id.n} {os.getpid()}\n".encode())
    if when == "after_open":
        os.read(opened_r, 1)  # the other side has opened it
    os._exit(3)  # before its first write (or read), without close()


@netmcore.process
def other_side_of_a_creator_that_died(job: tuple[int, int, int, int, str, str]) -> list[str]:
    out_r, out_w, opened_r, opened_w, when, role = job
    pid = creator_that_dies_unused.start((out_w, opened_r, when))
    n, creator = os.read(out_r, 64).decode().split()
    if when == "before_open":
        creator_that_dies_unused.join_outcome(pid)
    buffer = Buffer.open(ResId(int(n)))
    try:
        if when == "after_open":
            os.write(opened_w, b"o")
            creator_that_dies_unused.join_outcome(pid)
        try:
            if role == "reader":  # the creator was the writer
                got = f"read {buffer.read(timeout=GUARD)!r}"
            else:  # the creator was the reader: 8 of 16 bytes fit
                buffer.write(b"x" * 16, timeout=GUARD)
                got = "written"
        except (OwnerDiedError, TimeoutError) as exc:
            got = f"{type(exc).__name__}: {exc}"
        return [creator, repr(buffer), got, outcome_text(lambda: buffer.read(timeout=0))]
    finally:
        buffer.release()


@pytest.mark.parametrize("when", ["before_open", "after_open"])
@pytest.mark.parametrize("role", ["reader", "writer"])
def test_buffer_other_side_learns_that_its_creator_ended_before_using_it(
    role: str, when: str, pipes: Any
) -> None:
    """As when the creator ends after its first write (or read): the reader
    gets OwnerDiedError then the end of the stream; the writer, waiting for
    room, gets OwnerDiedError (not "stayed full"), and what it wrote is there."""
    job = (*pipes(), *pipes(), when, role)
    creator, name, got, after = run_scenario(other_side_of_a_creator_that_died, job)
    assert got == (
        f"OwnerDiedError: the other side of {name} (os pid {creator}) ended without closing "
        "it: the stream ends here" + ("" if role == "reader" else ": 8 of 16 bytes were written")
    )
    assert after == ("returned b''" if role == "reader" else "returned b'xxxxxxxx'")


@netmcore.process
def reader_that_opens_then_waits(job: tuple[ResId, int, int]) -> int:
    res_id, opened_w, go_r = job
    buffer = Buffer.open(res_id)
    try:
        os.write(opened_w, b"o")
        os.read(go_r, 1)  # the writer's wait has looked at the holders
        return len(b"".join(iter(buffer.read, b"")))
    finally:
        buffer.release()


@netmcore.process
def writer_beside_a_creator_that_ended(job: tuple[int, int, int, int, int, int]) -> list[str]:
    out_r, out_w, opened_r, opened_w, go_r, go_w = job
    pid = creator_that_dies_unused.start((out_w, opened_r, "before_open"))
    n = int(os.read(out_r, 64).split()[0])
    creator_that_dies_unused.join_outcome(pid)
    buffer = Buffer.open(ResId(n))  # first: it fills both sides nobody has taken
    try:
        reader = reader_that_opens_then_waits.start((buffer.res_id, opened_w, go_r))
        os.read(opened_r, 1)
        # Its wait for room looks at the holders: its reader opened, and lives.
        looked = write_letting_the_reader_in_at_the_first_look(buffer, go_w)
        return [*looked, str(joined(reader_that_opens_then_waits, reader))]
    finally:
        buffer.release()


def test_buffer_writer_waits_for_a_reader_that_opened_it_after_the_creator_ended(
    pipes: Any,
) -> None:
    """The creator (a broker: it only made the buffer and passed it on) has
    ended; the writer opened it first, so its own pid fills the reader's side
    too. The reader that opened it after, and lives, is still its other side:
    the writer's wait goes on until it reads."""
    job = (*pipes(), *pipes(), *pipes())
    got = run_scenario(writer_beside_a_creator_that_ended, job)
    assert got == ["looked", "written", "64"]


# --------------------------------------------------------------------------
# Buffer: opens count their opener among the holders one at a time
# --------------------------------------------------------------------------


def test_buffer_open_counts_its_opener_under_the_table_lock(
    master_cleanup: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two opens at once would otherwise both take the same free place among
    the holders, and one opener would not be counted."""
    held = []
    real_hold = _buffer.Buffer._hold

    def hold(buffer: Buffer) -> None:
        word = _pthread.MutexState(buffer._at(_buffer._TABLE)).word.value
        held.append(word & _pthread.FUTEX_TID_MASK == threading.get_native_id())
        real_hold(buffer)

    monkeypatch.setattr(_buffer.Buffer, "_hold", hold)
    with Buffer.create(16) as buffer:
        Buffer.open(buffer.res_id).release()
        assert held == [True]
        assert _pthread.raw_mutex_trylock(buffer._at(_buffer._TABLE)) == 0, "open kept it"
        _pthread.raw_mutex_unlock(buffer._at(_buffer._TABLE))


@netmcore.process
def opener_that_dies_in_its_open(res_id: ResId) -> None:
    buffer = Buffer.open(res_id)
    if _pthread.raw_mutex_trylock(buffer._at(_buffer._TABLE)) != 0:
        os._exit(1)
    os._exit(3)  # holding the table lock, as if killed in the middle of an open


@netmcore.process
def open_after_an_opener_died_in_its_open(_: int) -> list[str]:
    with Buffer.create(16) as buffer:
        buffer.write(b"ab")
        died = opener_that_dies_in_its_open.join_outcome(
            opener_that_dies_in_its_open.start(buffer.res_id)
        )
        with Buffer.open(buffer.res_id) as again:  # the lock comes back to it
            return [
                repr(died),
                outcome_text(lambda: again.read(timeout=0)),
                outcome_text(lambda: again.read(timeout=0)),  # not the end: none came yet
            ]


def test_buffer_open_after_an_opener_died_in_its_open_leaves_the_stream_going() -> None:
    got = run_scenario(open_after_an_opener_died_in_its_open, 0)
    assert got[0] == "Crashed(exitcode=3, signal=None)"
    assert got[1:] == ["returned b'ab'", got[2]]
    assert got[2].startswith("TimeoutError: no bytes came into Buffer(")


@netmcore.process
def read_one(res_id: ResId) -> bytes:
    with Buffer.open(res_id) as buffer:
        return buffer.read(timeout=10)  # a guard against a hang


@netmcore.process
def second_handle_released_in_the_writer(_: int) -> list[str]:
    """As a helper would (``with Buffer.open(...)``), in the process that made
    the buffer: the buffer lives on for the first handle and the others."""
    with Buffer.create(16) as buffer:
        with Buffer.open(buffer.res_id):
            pass
        seen = [outcome_text(lambda: buffer.write(b"ab", timeout=0))]
        seen.append(repr(joined(read_one, read_one.start(buffer.res_id))))
        return seen


def test_releasing_a_second_handle_of_a_buffer_in_one_process_leaves_the_buffer() -> None:
    """It gave back the process's one use of the buffer, which was destroyed:
    the reader got NoResource."""
    assert run_scenario(second_handle_released_in_the_writer, 0) == [
        "returned None",
        "b'ab'",
    ]


# --------------------------------------------------------------------------
# Buffer: the side a process took (or its place among the holders) is the
# process's, and stays while any handle of it on the buffer does: releasing
# a second handle that never wrote nor read cleared the writer's mark (or
# the creator's place), which the other side's dead-peer detection reads
# --------------------------------------------------------------------------

LOOKS = 0.2  # a wait that must run out, looking at its other side every 20 ms


@netmcore.process
def opens_a_buffer_and_ends(res_id: ResId) -> int:
    Buffer.open(res_id)  # not released: one of its holders, which has ended
    return 0


@netmcore.process
def writer_with_an_idle_second_handle(job: tuple[ResId, int, int]) -> str:
    res_id, said_w, go_r = job
    buffer = Buffer.open(res_id)
    buffer.write(b"a")
    os.write(said_w, b"w")
    os.read(go_r, 1)
    Buffer.open(res_id).release()  # a helper's look: it neither writes nor reads
    os.write(said_w, b"r")
    os.read(go_r, 1)
    # The first handle writes on, then it ends without close(): its reader
    # learns of its end.
    return outcome_text(lambda: buffer.write(b"b"))


@netmcore.process
def reader_of_a_writer_with_two_handles(job: tuple[ResId, int, int]) -> list[str]:
    res_id, said_w, go_r = job
    with Buffer.open(res_id) as buffer:
        seen = [outcome_text(lambda: buffer.read(timeout=GUARD))]
        os.write(said_w, b"a")
        os.read(go_r, 1)  # the writer's second handle is released
        seen.append(outcome_text(lambda: buffer.read(timeout=LOOKS)).split(":")[0])
        os.write(said_w, b"t")
        seen.append(outcome_text(lambda: buffer.read(timeout=GUARD)))
        seen.append(outcome_text(lambda: buffer.read(timeout=GUARD)).split(":")[0])
        return seen


@netmcore.process
def two_handles_in_the_writer_scenario(pipes: tuple[int, ...]) -> list[str]:
    w_said_r, w_said_w, w_go_r, w_go_w, r_said_r, r_said_w, r_go_r, r_go_w = pipes
    buffer = Buffer.create(64)
    res_id = buffer.res_id
    writer = writer_with_an_idle_second_handle.start((res_id, w_said_w, w_go_r))
    assert os.read(w_said_r, 1) == b"w"
    reader = reader_of_a_writer_with_two_handles.start((res_id, r_said_w, r_go_r))
    assert os.read(r_said_r, 1) == b"a"
    joined(opens_a_buffer_and_ends, opens_a_buffer_and_ends.start(res_id))
    buffer.release()  # it never wrote nor read: no side, and no holder
    os.write(w_go_w, b"g")  # the writer opens and releases its second handle
    assert os.read(w_said_r, 1) == b"r"
    os.write(r_go_w, b"g")  # the reader waits, looking at its writer
    assert os.read(r_said_r, 1) == b"t"
    os.write(w_go_w, b"g")  # the writer writes, and ends
    wrote = joined(writer_with_an_idle_second_handle, writer)
    return [wrote, *joined(reader_of_a_writer_with_two_handles, reader)]


def test_releasing_a_writers_idle_second_handle_leaves_its_side_to_the_reader(
    pipes: Any,
) -> None:
    """Before: ["ValueError: ... is closed: nothing more can be written",
    "returned b'a'", "OwnerDiedError", ...]: the writer's mark gone, the
    reader took its other side to be the holders, all ended (a process that
    opened the buffer and ended), and ended the stream while the writer
    lived on."""
    got = run_scenario(
        two_handles_in_the_writer_scenario, tuple(p for _ in range(4) for p in pipes())
    )
    assert got == [
        "returned None",
        "returned b'a'",
        "TimeoutError",
        "returned b'b'",
        "OwnerDiedError",
    ]


@netmcore.process
def creator_with_a_released_second_handle(job: tuple[int, int]) -> None:
    out_w, opened_r = job
    buffer = Buffer.create(8)
    netmcore.hand_over(buffer.res_id)  # the buffer outlives this process
    Buffer.open(buffer.res_id).release()  # a helper's look: the first handle stays, unused
    os.write(out_w, f"{buffer.res_id.n} {os.getpid()}\n".encode())
    os.read(opened_r, 1)  # the other side has opened it
    os._exit(3)  # before its first write, without close()


@netmcore.process
def reader_of_a_creator_with_two_handles(job: tuple[int, int, int, int]) -> list[str]:
    out_r, out_w, opened_r, opened_w = job
    pid = creator_with_a_released_second_handle.start((out_w, opened_r))
    n, creator = os.read(out_r, 64).decode().split()
    with Buffer.open(ResId(int(n))) as buffer:
        os.write(opened_w, b"o")
        creator_with_a_released_second_handle.join_outcome(pid)
        return [creator, outcome_text(lambda: buffer.read(timeout=GUARD))]


def test_releasing_a_creators_idle_second_handle_leaves_it_a_holder(pipes: Any) -> None:
    """As when it has one handle: the reader learns that the creator ended
    before its first write. Before: "TimeoutError: no bytes came ..." after
    GUARD seconds, the creator no longer among the holders."""
    creator, got = run_scenario(reader_of_a_creator_with_two_handles, (*pipes(), *pipes()))
    assert got.startswith("OwnerDiedError: the other side of Buffer(")
    assert f"(os pid {creator}) ended without closing it" in got


# --------------------------------------------------------------------------
# Buffer: an opener's mark on a side nobody had taken (its open's, or its
# release's taking it back) never replaces the pid of a side that wrote
# meanwhile. Both were a look at the side's word and a store, under no lock
# the write respects: a first write between the two was overwritten (by the
# opener's pid) or erased, and the reader, its writer ended without close(),
# waited for ever.
# --------------------------------------------------------------------------


class _PidGatedIn:
    """``_buffer._PID``, whose first store made by ``function`` waits at a
    gate: it says so (a byte to ``said_w``), then waits for a byte on
    ``go_r``. It opens the window between that function's look at a side's
    mark and its store for as long as the other process needs."""

    def __init__(self, real: Any, function: str, said_w: int, go_r: int) -> None:
        self.real, self.function, self.said_w, self.go_r = real, function, said_w, go_r
        self.size, self.unpack_from = real.size, real.unpack_from
        self.gated = False

    def pack_into(self, buf: Any, offset: int, value: int) -> None:
        if not self.gated and sys._getframe(1).f_code.co_name == self.function:
            self.gated = True
            os.write(self.said_w, b"p")
            os.read(self.go_r, 1)
        self.real.pack_into(buf, offset, value)


@contextlib.contextmanager
def _pid_gated_in(function: str, said_w: int, go_r: int) -> Iterator[None]:
    real = _buffer._PID
    _buffer._PID = _PidGatedIn(real, function, said_w, go_r)  # type: ignore[assignment]
    try:
        yield
    finally:
        _buffer._PID = real


@netmcore.process
def creator_that_writes_during_an_open(job: tuple[int, int, int]) -> None:
    out_w, paused_r, go_w = job
    buffer = Buffer.create(16)
    os.write(out_w, f"{buffer.res_id.n} {os.getpid()}\n".encode())
    os.read(paused_r, 1)  # the reader's open has looked at the writer's side
    buffer.write(b"hello")  # its first write
    os.write(go_w, b"g")
    os._exit(3)  # without close()


@netmcore.process
def reader_whose_open_pauses(job: tuple[ResId, int, int]) -> list[str]:
    res_id, paused_w, go_r = job
    with _pid_gated_in("_join", paused_w, go_r):
        buffer = Buffer.open(res_id)
    with buffer:
        return [
            outcome_text(lambda: buffer.read(timeout=GUARD)),
            outcome_text(lambda: buffer.read(timeout=GUARD)),
        ]


@netmcore.process
def first_write_during_an_open(pipes: tuple[int, ...]) -> list[str]:
    out_r, out_w, paused_r, paused_w, go_r, go_w = pipes
    writer = creator_that_writes_during_an_open.start((out_w, paused_r, go_w))
    n, writer_pid = os.read(out_r, 64).decode().split()
    reader = reader_whose_open_pauses.start((ResId(int(n)), paused_w, go_r))
    died = creator_that_writes_during_an_open.join_outcome(writer)
    return [writer_pid, repr(died), *joined(reader_whose_open_pauses, reader)]


def test_buffer_open_does_not_take_the_writer_side_from_a_first_write_during_it(
    pipes: Any,
) -> None:
    """Before: "TimeoutError: no bytes came into ..." after GUARD seconds (a
    wait for ever without a timeout): the reader's open put its own pid over
    the writer's, and the writer was no holder any more."""
    _assert_the_writers_end_is_told(run_scenario(first_write_during_an_open, _gates(pipes)))


def _gates(pipes: Any) -> tuple[int, ...]:
    """Three pipes made in the master, both ends of each, flat."""
    return tuple(p for _ in range(3) for p in pipes())


def _assert_the_writers_end_is_told(got: list[str]) -> None:
    """The writer wrote, then ended without closing: the reader reads what it
    wrote, then learns of its end (it waited for ever)."""
    writer_pid, died, first, second = got
    assert died == "Crashed(exitcode=3, signal=None)"
    assert first == "returned b'hello'"
    assert second.startswith("OwnerDiedError: the other side of Buffer(")
    assert f"(os pid {writer_pid}) ended without closing it" in second


@netmcore.process
def passer_on_whose_release_pauses(job: tuple[ResId, int, int]) -> int:
    res_id, paused_w, go_r = job
    buffer = Buffer.open(res_id)  # fills both sides: nobody has taken them yet
    with _pid_gated_in("_let_go_marks", paused_w, go_r):
        buffer.release()  # it passed the buffer on: it takes back its marks
    return 0


@netmcore.process
def opener_that_writes_then_ends(job: tuple[ResId, int]) -> None:
    res_id, wrote_w = job
    buffer = Buffer.open(res_id)
    buffer.write(b"hello")  # its first write
    os.write(wrote_w, f"{os.getpid()}\n".encode())
    os._exit(3)  # without close()


@netmcore.process
def first_write_during_a_release(pipes: tuple[int, ...]) -> list[str]:
    paused_r, paused_w, go_r, go_w, wrote_r, wrote_w = pipes
    with Buffer.create(16) as buffer:  # the reader
        res_id = buffer.res_id
        passer = passer_on_whose_release_pauses.start((res_id, paused_w, go_r))
        os.read(paused_r, 1)  # its release has looked at the writer's side
        writer = opener_that_writes_then_ends.start((res_id, wrote_w))
        writer_pid = os.read(wrote_r, 64).decode().strip()
        os.write(go_w, b"g")
        joined(passer_on_whose_release_pauses, passer)
        died = opener_that_writes_then_ends.join_outcome(writer)
        return [
            writer_pid,
            repr(died),
            outcome_text(lambda: buffer.read(timeout=GUARD)),
            outcome_text(lambda: buffer.read(timeout=GUARD)),
        ]


def test_buffer_release_does_not_erase_a_first_write_during_it(pipes: Any) -> None:
    """Before: "TimeoutError: no bytes came into ..." after GUARD seconds (a
    wait for ever without a timeout): the release of a process that only
    passed the buffer on erased the writer's pid with the mark of its open."""
    _assert_the_writers_end_is_told(run_scenario(first_write_during_a_release, _gates(pipes)))


# --------------------------------------------------------------------------
# Buffer: small contracts
# --------------------------------------------------------------------------


def test_buffer_capacity_too_large_once_its_header_is_added_names_the_capacity() -> None:
    """A capacity that passes the size check alone, but not with the header:
    the error spoke of a "size" the caller never passed, and said "Use a
    smaller size"."""
    space = os.statvfs("/dev/shm")
    total = space.f_blocks * space.f_frsize
    limit = total if 0 < total < _resources.OFF_T_MAX else _resources.OFF_T_MAX
    capacity = limit - 10
    with pytest.raises(ValueError) as info:
        Buffer.create(capacity)
    message = str(info.value)
    assert message.startswith(f"capacity {capacity:,} bytes is too large: a Buffer of capacity ")
    assert f"Use a capacity of at most {limit - _buffer._RING:,}" in message
    assert "size " not in message.split("Use a capacity")[0]


def test_buffer_write_of_nothing_on_a_closed_stream_or_released_buffer_raises() -> None:
    """As the docstring says (ValueError): it returned, having done nothing.
    On an open stream it returns at once, full or not. In a subprocess: a
    regression might touch the unmapped memory (SIGSEGV)."""
    code = (
        "import netmcore\n"
        "def said(call):\n"
        "    try:\n"
        "        return f'returned {call()!r}'\n"
        "    except ValueError as e:\n"
        "        return f'ValueError: {e}'\n"
        "b = netmcore.Buffer.create(1)\n"
        "b.write(b'x')\n"
        "print(said(lambda: b.write(b'', timeout=0)))\n"  # full: no wait, no timeout
        "b.close()\n"
        "print(said(lambda: b.write(b'')))\n"
        "b.release()\n"
        "print(said(lambda: b.write(b'')))\n"
    )
    returncode, out = run_snippet(code, timeout=30)
    assert returncode == 0
    full, closed, released = out.splitlines()
    assert full == "returned None"
    assert re.fullmatch(
        r"ValueError: Buffer\(ResId\(\d+\), capacity=1\) is closed: nothing more can be written",
        closed,
    )
    assert re.fullmatch(
        r"ValueError: Buffer\(ResId\(\d+\), capacity=1\) is closed or released in this "
        r"process: .*",
        released,
    )


@pytest.mark.parametrize("megabytes", ["0", "-5"])
def test_pipeline_example_refuses_a_size_below_one(megabytes: str) -> None:
    # It ran, then said "the producer failed, or bytes were lost (0 of -5000000)".
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / "pipeline.py"), megabytes],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 1
    assert proc.stderr == f"megabytes to stream: {megabytes} is not valid; pass 1 or more\n"
