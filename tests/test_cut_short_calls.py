"""Calls cut short by a signal handler's exception after the master
answered them. A plugin call whose grant (a mutex, a count, a message) was
in: the grant is given back, so that the call can be made again. A create
whose object was half made: it is released, through a further exception.
The exceptions are raised at the call named, by a profile hook (or a
wrapper), in a worker: where a real signal may land."""

from __future__ import annotations

import pytest
from scenario import RAISES_TICK, run_snippet, signal_at_call, strict_d

_CUT_SHORT = """
import netmcore

class Tick(Exception):
    pass

KIND = {"Tick": Tick, "RuntimeError": RuntimeError}[sys.argv[3]]

def handler(*_):
    raise KIND("a handler's")

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
    except KIND:
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


_GRANTS = [
    ("_checked", "lock", "None"),
    ("_checked", "decrement", "0"),
    ("_checked", "receive", "'first'"),
    ("_decoded", "receive", "'first'"),  # a receive decodes its reply
]


@pytest.mark.parametrize(
    ("call", "what", "again", "kind"),
    [(*grant, "Tick") for grant in _GRANTS]
    # In a decode, a RuntimeError is taken for the decode's own failure.
    + [(*grant, "RuntimeError") for grant in _GRANTS if grant[0] != "_decoded"],
)
def test_a_grant_cut_short_before_its_call_returned_is_given_back(
    call: str, what: str, again: str, kind: str
) -> None:
    """Before: the mutex stayed locked (the call again: "already locked by
    this process"), the count taken, the message gone (the call again
    waited for another, and timed out). Whatever the handler raises: a
    RuntimeError was once taken for the call's own failure."""
    code, out = run_snippet(signal_at_call(call) + _CUT_SHORT, 40, call, what, kind)
    assert (code, out) == (0, f"['cut', {again!r}]\n")


_CREATE_CUT_TWICE = """
import os, signal, sys
import netmcore
from netmcore._resource_api import ShmSegment


def at_call(frame, event, arg):  # a first exception as the object is built
    if event == "call" and frame.f_code.co_name == "build":
        sys.setprofile(None)
        signal.raise_signal(signal.SIGUSR1)

real_release, releases = ShmSegment.release, []

def release(self):  # a second as its segment's release begins
    releases.append(1)
    if len(releases) == 1:
        raise Tick
    real_release(self)

ShmSegment.release = release

def ours():
    prefix = f"nmc.{os.getppid()}."  # the master's (the payloads' aside)
    return {e for e in os.listdir("/dev/shm") if e.startswith(prefix) and ".p." not in e}

@netmcore.process
def maker(_: int) -> list[str]:
    before = ours()
    sys.setprofile(at_call)
    try:
        netmcore.Mailbox.create(bytes)
    except Tick:
        pass
    finally:
        sys.setprofile(None)
    return [str(len(releases)), *sorted(ours() - before)]

print(netmcore.run(first_process=lambda: maker.start(0),
                   extract_result=lambda c, p: maker.join_nowait(p)))
"""


def test_a_create_cut_short_twice_leaves_no_object() -> None:
    """A second exception as the half-made object's segment was released
    left it in /dev/shm (until the process ended): the release is now
    repeated through it."""
    assert run_snippet(RAISES_TICK + _CREATE_CUT_TWICE, 40) == (0, "['2']\n")


_UNDECODABLE = (
    strict_d('ValueError("negative")')
    + """
import netmcore

@netmcore.process
def receiver(_: int) -> list[str]:
    box = netmcore.Mbox("b", D, capacity=4)
    box.create()
    box.send(D(-1))
    box.send(D(2))
    STRICT[0] = True  # here only: it was sent
    said = []
    for _ in range(2):
        try:
            said.append(repr(box.receive(timeout=5)))
        except Exception as exc:
            said.append(type(exc).__name__)
    return said

print(netmcore.run(first_process=lambda: receiver.start(0), init_ctrl=netmcore.add_plugins,
                   extract_result=lambda c, p: receiver.join_nowait(p)))
"""
)


def test_a_message_that_does_not_decode_is_not_put_back() -> None:
    """Its decode's own failure is not an interrupt: put back at the head
    of the box, it failed every receive after it, for good."""
    assert run_snippet(_UNDECODABLE, 40) == (0, "['ValidationError', 'D(x=2)']\n")


_CUT_SHORT_IN_THE_MASTER = """
import netmcore

@netmcore.process
def nothing(_: int) -> int:
    return 0

def extract(ctrl, pid):  # the master's own code
    mutex, sem = netmcore.PluginMutex("m"), netmcore.PluginSemaphore("s")
    box = netmcore.Mbox("b", str)
    sem.create(1)
    box.create()
    box.send("first")
    calls = {
        "lock": lambda: mutex.lock(timeout=0),
        "decrement": lambda: sem.decrement(wait=False),
        "receive": lambda: box.receive(timeout=0),
    }
    said = []
    sys.setprofile(_at_call)
    try:
        said.append(f"{calls[sys.argv[1]]()!r}, not cut")
    except Tick:
        said.append("cut")
    finally:
        sys.setprofile(None)
    try:
        said.append(repr(calls[sys.argv[1]]()))
    except Exception as exc:
        said.append(type(exc).__name__)
    return said

print(netmcore.run(first_process=lambda: nothing.start(0), init_ctrl=netmcore.add_plugins,
                   extract_result=extract))
"""


@pytest.mark.parametrize(
    ("what", "again"), [("lock", "None"), ("decrement", "0"), ("receive", "'first'")]
)
def test_a_grant_cut_short_in_the_masters_own_code_is_given_back(what: str, again: str) -> None:
    """The master's table has no waiter for its own undo: the mutex stayed
    locked (the call again: PluginError), the count taken, the message gone."""
    snippet = signal_at_call("_checked") + RAISES_TICK + _CUT_SHORT_IN_THE_MASTER
    assert run_snippet(snippet, 40, what) == (0, f"['cut', {again!r}]\n")
