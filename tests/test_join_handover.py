"""A join cut short by a signal handler's exception after the master has
answered it: the outcome is kept for the next join of the process here (the
master has forgotten the process), and a result is never taken for an
invalid one. The exception is raised, at the call named, by a profile hook,
in a worker: where a real signal may land."""

from __future__ import annotations

import pytest
from scenario import run_snippet, signal_at_call

LARGE = 100_000  # a result that travels through shared memory

_JOIN_CUT_SHORT = """
import netmcore

class Tick(Exception):
    pass

def handler(*_):
    raise Tick

signal.signal(signal.SIGUSR1, handler)
CALL, SIZE = sys.argv[1], int(sys.argv[2])

@netmcore.process
def made(k: int) -> bytes:
    return bytes([k]) * SIZE

@netmcore.process
def echo(data: bytes) -> int:
    return len(data)

@netmcore.process
def joiner(k: int) -> list[str]:
    pid = made.start(k)
    made.join(made.start(0))  # every path warmed: the hook fires in the join below
    said = []
    sys.setprofile(_at_call)
    try:
        said.append(f"{len(made.join(pid))} bytes, not cut")
    except Tick:
        said.append("cut")
    finally:
        sys.setprofile(None)
    if sys.argv[3:] == ["reuse"]:  # large arguments sent meanwhile: shm that pack may reuse
        for _ in range(2):  # (the warm-up's result, then this one's)
            echo.join(echo.start(bytes(SIZE)))
    value = made.join(pid)
    said.append(f"{len(value)} bytes of {value[0]}")
    return said

print(netmcore.run(first_process=lambda: joiner.start(7),
                   extract_result=lambda c, p: joiner.join_nowait(p)))
"""


@pytest.mark.parametrize("size", [10, LARGE], ids=["inline", "shm"])
@pytest.mark.parametrize("call", ["_keep", "_outcome", "encap_of", "unwrap", "_value"])
def test_a_join_cut_short_after_its_answer_leaves_the_outcome_to_the_next(
    call: str, size: int
) -> None:
    """Before: the next join raised UnknownProcess (the result was lost),
    or, cut in the result's decoding, the join returned an invalid result
    (with no message) for a valid one."""
    snippet = signal_at_call(call) + _JOIN_CUT_SHORT
    code, out = run_snippet(snippet, 40, call, str(size))
    assert (code, out) == (0, f"['cut', '{size} bytes of 7']\n")


def test_a_result_left_to_the_next_join_is_not_overwritten_meanwhile() -> None:
    """The result's shared memory, read once, is kept from reuse until the
    next join has it: a large argument sent in between could have been
    written into it."""
    snippet = signal_at_call("unwrap") + _JOIN_CUT_SHORT
    code, out = run_snippet(snippet, 40, "unwrap", str(LARGE), "reuse")
    assert (code, out) == (0, f"['cut', '{LARGE} bytes of 7']\n")
