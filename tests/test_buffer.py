"""The shared byte Buffer, and upstream's pipeline example built on it."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import pytest

import netmcore

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
        out.append(buffer.read())  # up to the wrap: contiguous only
        out.append(buffer.read())
        buffer.close()
        out.append(buffer.read())
        try:
            buffer.write(b"x")
        except ValueError as exc:
            out.append(str(exc).encode())
        try:
            buffer.consume(1)
        except ValueError as exc:
            out.append(str(exc).encode())
    return out


def test_buffer_peek_read_wrap_and_end_of_stream() -> None:
    out = run(local_semantics, 0)
    assert out[:5] == [b"abcd", b"abc", b"defgh", b"ijk", b""]
    assert b"is closed: nothing more can be written" in out[5]
    assert out[6] == b"cannot consume 1 bytes: 0 are there"


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
