"""A plugin call cut short by a signal handler's exception after the master
granted it (a mutex, a count, a message), before the call returned: what was
granted is given back, so that the call can be made again. The exception
is raised, at the call named, by a profile hook, in a worker: where a real
signal may land."""

from __future__ import annotations

import pytest
from scenario import run_snippet, signal_at_call

_CUT_SHORT = """
import netmcore

class Tick(Exception):
    pass

def handler(*_):
    raise Tick

signal.signal(signal.SIGUSR1, handler)
WHAT = sys.argv[2]

@netmcore.process
def caller(_: int) -> list[str]:
    mutex, sem = netmcore.PluginMutex("m"), netmcore.PluginSemaphore("s")
    box = netmcore.Mbox("b", str)
    sem.create(1)
    box.create()
    box.send("first")
    calls = {"lock": mutex.lock, "decrement": sem.decrement, "receive": box.receive}
    said = []
    sys.setprofile(_at_call)
    try:
        said.append(f"{calls[WHAT]()!r}, not cut")
    except Tick:
        said.append("cut")
    finally:
        sys.setprofile(None)
    try:
        said.append(repr(calls[WHAT](timeout=5)))
    except Exception as exc:
        said.append(f"{type(exc).__name__}: {exc}")
    return said

print(netmcore.run(first_process=lambda: caller.start(0), init_ctrl=netmcore.add_plugins,
                   extract_result=lambda c, p: caller.join_nowait(p)))
"""


@pytest.mark.parametrize(
    ("call", "what", "again"),
    [
        ("_checked", "lock", "None"),
        ("_same", "lock", "None"),
        ("_checked", "decrement", "0"),
        ("_same", "decrement", "0"),
        ("_checked", "receive", "'first'"),
        ("_decoded", "receive", "'first'"),  # a receive decodes its reply
    ],
)
def test_a_grant_cut_short_before_its_call_returned_is_given_back(
    call: str, what: str, again: str
) -> None:
    """Before: the mutex stayed locked (the call again: "already locked by
    this process"), the count taken, the message gone (the call again
    waited for another, and timed out)."""
    code, out = run_snippet(signal_at_call(call) + _CUT_SHORT, 40, call, what)
    assert (code, out) == (0, f"['cut', {again!r}]\n")
