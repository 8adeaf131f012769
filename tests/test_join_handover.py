"""A join cut short by a signal handler's exception after the master has
answered it: the outcome is kept for the next join of the process here (the
master has forgotten the process), and a result is never taken for an
invalid one. The exception is raised, at the call named, by a profile hook,
in a worker: where a real signal may land."""

from __future__ import annotations

import pytest
from scenario import RAISES_TICK, run_snippet, signal_at_call, strict_d

LARGE = 100_000  # a result that travels through shared memory

_JOIN_CUT_SHORT = """
import netmcore

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
    if sys.argv[3:] == ["others"]:  # other results read meanwhile: this process keeps 2
        for k in (1, 2):
            made.join(made.start(k))
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
    snippet = signal_at_call(call) + RAISES_TICK + _JOIN_CUT_SHORT
    code, out = run_snippet(snippet, 40, call, str(size))
    assert (code, out) == (0, f"['cut', '{size} bytes of 7']\n")


# Cut as the outcome is kept (the join's except keeps it), or once it was read.
@pytest.mark.parametrize("call", ["_keep", "unwrap"])
def test_a_result_left_to_the_next_join_is_not_overwritten_meanwhile(call: str) -> None:
    """The result's shared memory, read once, is kept from reuse until the
    next join has it: a large argument sent in between could have been
    written into it."""
    snippet = signal_at_call(call) + RAISES_TICK + _JOIN_CUT_SHORT
    code, out = run_snippet(snippet, 40, call, str(LARGE), "reuse")
    assert (code, out) == (0, f"['cut', '{LARGE} bytes of 7']\n")


def test_a_result_left_to_the_next_join_outlives_other_results_read() -> None:
    """A process keeps the last two results it read for reuse, and unlinked
    older ones: the kept one went too, and its next join failed (for good)."""
    snippet = signal_at_call("unwrap") + RAISES_TICK + _JOIN_CUT_SHORT
    code, out = run_snippet(snippet, 40, "unwrap", str(LARGE), "others")
    assert (code, out) == (0, f"['cut', '{LARGE} bytes of 7']\n")


_NOWAIT_CUT_SHORT = """
import netmcore


@netmcore.process
def held(sem: netmcore.ResId) -> int:
    netmcore.open_sem(sem).wait()
    return 7

@netmcore.process
def joiner(_: int) -> list[str]:
    go = netmcore.create_sem(0)
    pid = held.start(go.res_id)
    said = []
    sys.setprofile(_at_call)
    try:
        said.append(f"{held.join_nowait(pid)!r}, not cut")
    except Tick:
        said.append("cut")
    finally:
        sys.setprofile(None)
    go.post()
    for _ in range(2):
        try:
            said.append(repr(held.join(pid)))
        except netmcore.UnknownProcess:
            said.append("UnknownProcess")
    return said

print(netmcore.run(first_process=lambda: joiner.start(0),
                   extract_result=lambda c, p: joiner.join_nowait(p)))
"""


def test_a_join_nowait_cut_short_before_the_process_ended_leaves_nothing_in_the_way() -> None:
    """Its withdrawal kept the master's "not ended yet" as an outcome: every
    join after it failed (an AssertionError) or gave None."""
    code, out = run_snippet(signal_at_call("wait_reply") + RAISES_TICK + _NOWAIT_CUT_SHORT, 40)
    assert (code, out) == (0, "['cut', '7', 'UnknownProcess']\n")


_VALIDATOR_FAILS = (
    strict_d('LookupError(f"no entry for {self.x}")')
    + """
import netmcore

@netmcore.process
def made(k: int) -> D:
    return D(k)

@netmcore.process
def joiner(_: int) -> list[str]:
    pid = made.start(-1)
    STRICT[0] = True  # here only: the process returned it
    said = []
    for _ in range(2):
        try:
            said.append(type(made.join_outcome(pid)).__name__)
        except netmcore.UnknownProcess:
            said.append("UnknownProcess")
    return said

print(netmcore.run(first_process=lambda: joiner.start(0),
                   extract_result=lambda c, p: joiner.join_nowait(p)))
"""
)


def test_a_result_whose_validator_fails_is_an_invalid_result_once() -> None:
    """Not taken for a signal handler's exception, kept for the next join,
    which raised it again, for ever."""
    assert run_snippet(_VALIDATOR_FAILS, 40) == (0, "['InvalidResult', 'UnknownProcess']\n")


_TWO_THREADS = """
import threading
import netmcore

@netmcore.process
def made(k: int) -> int:
    return k

@netmcore.process
def joiner(_: int) -> list[str]:
    pid = made.start(5)
    in_hand, go_on = threading.Event(), threading.Event()

    def pause(frame, event, arg):  # thread A: its outcome in hand, not yet returned
        if event == "call" and frame.f_code.co_name == "_outcome":
            sys.setprofile(None)
            in_hand.set()
            go_on.wait(20)

    said = {}

    def a():
        sys.setprofile(pause)
        said["A"] = repr(made.join(pid))

    thread = threading.Thread(target=a)
    thread.start()
    in_hand.wait(20)
    try:
        said["B"] = repr(made.join(pid))
    except netmcore.UnknownProcess:
        said["B"] = "UnknownProcess"
    go_on.set()
    thread.join()
    return [said["A"], said["B"]]

print(netmcore.run(first_process=lambda: joiner.start(0),
                   extract_result=lambda c, p: joiner.join_nowait(p)))
"""


def test_a_join_in_another_thread_does_not_take_an_outcome_in_hand() -> None:
    """Thread A's join has the outcome, not yet returned; thread B's join of
    the same process took it too (two joins of one process succeeded)."""
    assert run_snippet("import sys\n" + _TWO_THREADS, 40) == (0, "['5', 'UnknownProcess']\n")


_IN_THE_MASTER = """
import netmcore


@netmcore.process
def made(k: int) -> int:
    return k

def extract(ctrl, pid):  # the master's own code: the first process has ended
    said = []
    sys.setprofile(_at_call)
    try:
        said.append(made.join_nowait(pid))
    except Tick:
        said.append("cut")
    finally:
        sys.setprofile(None)
    for _ in range(2):  # the kept outcome, then nothing: it is joined
        try:
            said.append(made.join_nowait(pid))
        except netmcore.UnknownProcess:
            said.append("UnknownProcess")
    return said

print(netmcore.run(first_process=lambda: made.start(7), extract_result=extract))
"""


# In the master's join: as it keeps the outcome, and as its table uses it up.
@pytest.mark.parametrize("call", ["_keep", "_deliver_outcome", "_joined", "trace"])
def test_a_join_in_the_masters_own_code_cut_short_leaves_the_outcome_to_the_next(
    call: str,
) -> None:
    """Its table said joined already: the next join raised UnknownProcess.
    Or, cut after it was kept, before the table said so, two joins got it."""
    snippet = signal_at_call(call) + RAISES_TICK + _IN_THE_MASTER
    assert run_snippet(snippet, 40) == (0, "['cut', 7, 'UnknownProcess']\n")
