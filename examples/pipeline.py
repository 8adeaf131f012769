"""Upstream's pipeline example: a producer streams bytes to a consumer through a
shared byte Buffer (a ring in shared memory with a mutex and two conditions).

The producer writes N bytes of "0123456789..." and ends the stream; the
consumer reads every byte without copying it (``peek`` views the ring) and
computes upstream's checksum, ``cksum = (cksum << 3) + byte`` over every byte,
printed as ``cksum & 0x3fffffff``. It prints the checksum and the throughput.

Run it as ``python examples/pipeline.py [MEGABYTES]``.
"""

from __future__ import annotations

import sys
import time

import netmcore

CHUNK = 64 * 1024
MASK = 0x3FFFFFFF
PATTERN = b"0123456789" * (CHUNK // 10 + 2)  # any chunk, from any of the 10 offsets


def fold(cksum: int, data: bytes | memoryview) -> int:
    """``cksum = (cksum << 3) + byte`` over every byte of ``data``, kept to 30 bits.

    Only the low 30 bits are printed, and each step shifts by 3: a byte (or the
    checksum so far) that is 10 or more bytes from the end has been shifted out
    of the low 30 bits. So the last 10 bytes of a chunk decide the result, and
    folding just them is exactly the same as folding every byte.
    """
    if len(data) >= 10:
        cksum, data = 0, data[-10:]
    for byte in bytes(data):
        cksum = ((cksum << 3) + byte) & MASK
    return cksum


@netmcore.process
def producer(job: tuple[netmcore.ResId, int]) -> int:
    buffer = netmcore.Buffer.open(job[0])
    left = job[1]
    offset = 0
    while left:
        n = min(left, CHUNK)
        buffer.write(PATTERN[offset : offset + n])
        offset = (offset + n) % 10  # the pattern goes on where it stopped
        left -= n
    buffer.close()
    buffer.release()
    return job[1]


@netmcore.process
def consumer(size: int) -> tuple[int, int, float]:
    buffer = netmcore.Buffer.create(1 << 20)
    t0 = time.perf_counter()
    pid = producer.start((buffer.res_id, size))
    cksum = total = 0
    while view := buffer.peek():
        cksum = fold(cksum, view)
        total += len(view)
        n = len(view)
        view.release()
        buffer.consume(n)
    elapsed = time.perf_counter() - t0
    if producer.join(pid) != size or total != size:
        raise RuntimeError(f"the producer failed, or bytes were lost ({total} of {size})")
    buffer.release()
    return total, cksum, elapsed


def main(megabytes: int = 256) -> tuple[int, int, float]:
    if megabytes < 1:
        raise SystemExit(f"megabytes to stream: {megabytes} is not valid; pass 1 or more")
    size = megabytes * 1_000_000
    result = netmcore.run(
        first_process=lambda: consumer.start(size),
        extract_result=lambda _ctrl, pid: consumer.join_nowait(pid),
    )
    if result is None:
        raise SystemExit("the pipeline failed")
    total, cksum, elapsed = result
    print(f"bytes: {total}")
    print(f"cksum: {cksum}")
    print(f"throughput: {total / elapsed / 1e6:.1f} MB/s")
    return result


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 256)
