"""Requests that no API of netmcore sends (a forged message, a bug) are
refused by the master, which goes on serving: each used to crash it, or
wedge it, and the whole run with it.

A worker sends each through its link, as the API would, and gets a Failed
answer; then it checks that the master still starts and joins a process.
"""

from __future__ import annotations

from typing import Any

import pytest
from scenario import run_scenario

import netmcore
from netmcore._client import _link
from netmcore._wire import (
    Failed,
    JoinReq,
    Message,
    PluginReq,
    ResCreateReq,
    StartReq,
    WaitReq,
    WatchReq,
    WireEncap,
)

NUL_PREFIX = "/nmc.malformed\0x"


@netmcore.process
def square(k: int) -> int:
    return k * k


def _start_of(proc: Any, arg: Any, watch: int) -> StartReq:
    encap = proc.input_type.wrap(arg)
    return StartReq(proc.fork_point.n, WireEncap.of(encap, bytes(encap.data)), None, watch)


@netmcore.process
def send_malformed(case: str) -> list[Any]:
    link = _link("a test")
    answers = [link.request(msg) for msg in CASES[case]]
    last = answers[-1]
    refused = f"{last.error}: {last.message}" if isinstance(last, Failed) else repr(last)
    return [refused, square.join(square.start(7))]


# Each case: the requests to send, in order; the last must be refused.
CASES: dict[str, list[Message]] = {
    # Dispatched by name: a helper method of the plugin host was reachable.
    "plugin operation 'rebuild.timers'": [PluginReq("rebuild", "timers", "x")],
    "plugin operation 'pass.mutex'": [PluginReq("pass", "mutex", "x")],
    "a box send without a message": [
        PluginReq("mbox", "create", "box", num=1),
        PluginReq("mbox", "send", "box", data=None),
    ],
    # A count past 2**63-1 could overflow msgpack's 2**64-1 in an answer.
    "a semaphore's count of 2**64-1": [PluginReq("sem", "create", "sem", num=2**64 - 1)],
    "a box's capacity of 0": [PluginReq("mbox", "create", "box0", num=0)],
    # NaN is never due: no timeout of any plugin call fired again.
    "a NaN deadline": [PluginReq("mutex", "lock", "mutex", deadline=float("nan"))],
    # posix_ipc crashes (SIGSEGV) on a name with a NUL.
    "shm with a NUL in its prefix": [ResCreateReq("posix_shm", NUL_PREFIX, 64)],
    "semaphore with a NUL in its prefix": [ResCreateReq("posix_sem", NUL_PREFIX, 0)],
    "shm of another kind": [ResCreateReq("fork_point", "", 64)],
    "semaphore of a value past SEM_VALUE_MAX": [ResCreateReq("posix_sem", "", 2**63)],
    "shm of size 0": [ResCreateReq("posix_shm", "", 0)],
    # NaN is never due, and stayed first in the heap: no join timed out again.
    "a join's NaN deadline": [JoinReq(square.join_point.n, 10**6, True, float("nan"))],
    "a wait's NaN deadline": [WaitReq(1, float("nan"))],
    "a wait on no watch": [WaitReq(12345)],
    # Refused before the process starts: it was started, then refused.
    "a start into a watch of another type": [
        WatchReq(square.join_point.n, [], 9),
        _start_of(send_malformed, "never run", 9),
    ],
    # (netmcore.as_completed's: no start goes into it.)
    "a start into a watch of any type": [
        WatchReq(None, [], 9),
        _start_of(send_malformed, "never run", 9),
    ],
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_master_refuses_a_malformed_request_and_goes_on(case: str) -> None:
    refused, after = run_scenario(send_malformed, case, init_ctrl=netmcore.add_plugins)
    assert not refused.startswith(("PluginReply", "ResInfo")), f"{case}: accepted ({refused})"
    assert refused.split(":")[0] in ("PluginError", "ValueError", "TypeError"), refused
    assert after == 49  # the master still serves
