"""What the master keeps for a worker's plugin calls stays in proportion to
what is live, not to how many calls a long-running worker made; and a
resource a worker handed over is the taker's, whatever the master's own
code releases before it is taken. Each test here failed before.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from typing import Any

import pytest
from scenario import outcome_text, outcome_value, run_scenario

import netmcore
from netmcore import _plugins
from netmcore._plugin_host import PluginHost
from netmcore._wire import PluginReply

pytestmark = pytest.mark.timeout(60)


# --------------------------------------------------------------------------
# Give-backs of plugin grants leave no record in the master
# --------------------------------------------------------------------------


class Interrupt(Exception):
    """What a signal handler raises once a grant is in, before its call returns."""


INTERRUPTING = [False]  # set in the worker, around the calls it cuts short


@dataclasses.dataclass
class Picky:
    x: int

    def __post_init__(self) -> None:
        if INTERRUPTING[0]:  # as a receive decodes its message: it is given back
            raise Interrupt


def _interrupt(_reply: PluginReply) -> None:
    raise Interrupt


def _cut_short(service: str) -> None:
    """One call of ``service`` whose grant an Interrupt follows: it gives it back."""
    if service == "mbox":
        netmcore.Mbox("box", Picky).receive()
    else:  # the same path, the exception in the call's finish: no API has one
        op = "lock" if service == "mutex" else "decrement"
        _plugins._call(service, op, service, flag=True, waits=True, finish=_interrupt)


@netmcore.process
def cut_short_calls(job: tuple[str, int]) -> list[str]:
    service, n = job
    netmcore.Mbox("box", Picky).create()
    netmcore.Mbox("box", Picky).send(Picky(7))
    netmcore.PluginSemaphore("sem").create(1)
    INTERRUPTING[0] = True
    cut = [outcome_text(lambda: _cut_short(service)) for _ in range(n)]
    INTERRUPTING[0] = False
    # Each grant was given back once: the one message, the mutex, the count.
    return [
        *sorted(set(cut)),
        outcome_text(lambda: netmcore.Mbox("box", Picky).receive().x),
        outcome_text(lambda: netmcore.Mbox("box", Picky).receive(timeout=0))[:12],
        outcome_text(lambda: netmcore.PluginMutex("mutex").lock(timeout=0)),
        outcome_text(netmcore.PluginSemaphore("sem").get),
    ]


def _held(host: PluginHost) -> int:
    """The entries of the plugins' state in the master: its tables, and the
    collections of each object in them (waiters, messages, effects)."""
    kinds = (dict, set, list, deque)
    total = 0
    for value in vars(host).values():
        if isinstance(value, kinds):
            total += len(value)
        if isinstance(value, dict):
            for obj in value.values():
                total += sum(len(v) for v in vars(obj).values() if isinstance(v, kinds))
    return total


@pytest.mark.parametrize("service", ["mbox", "mutex", "sem"])
def test_give_backs_leave_no_record_in_the_master(
    monkeypatch: pytest.MonkeyPatch, service: str
) -> None:
    """Before, the master kept (process, request) of every undo until the
    process ended: a worker's give-backs grew its memory without bound."""
    seen: list[int] = []  # the state, as each process ends
    forget = PluginHost.forget

    def forget_seen(host: PluginHost, user: int, failure: str | None = None) -> None:
        seen.append(_held(host))
        forget(host, user, failure)

    monkeypatch.setattr(PluginHost, "forget", forget_seen)
    held = {}
    for n in (3, 100):
        seen.clear()
        out = run_scenario(cut_short_calls, (service, n), init_ctrl=netmcore.add_plugins)
        assert out == ["Interrupt: ", "returned 7", "TimeoutError", "returned None", "returned 1"]
        held[n] = max(seen)
    assert held[100] == held[3], f"the master's state grew with the give-backs: {held}"


# --------------------------------------------------------------------------
# A release in the master's own code leaves a hand-over to its taker
# --------------------------------------------------------------------------


@netmcore.process
def make_and_hand_over(_: int) -> netmcore.ResId:
    seg = netmcore.create_shm(16)
    seg.buffer[:5] = b"hello"
    netmcore.hand_over(seg.res_id)
    seg.close()
    return seg.res_id


@netmcore.process
def read_handed(res: netmcore.ResId) -> bytes:
    with netmcore.open_shm(res) as seg:  # takes it over; its release is the last
        return bytes(seg.buffer[:5])


def _release_then_read(res: netmcore.ResId) -> bytes:
    netmcore.release(res)  # never got here: nothing to release
    with netmcore.open_shm(res) as seg:  # takes it over; its release is the last
        return bytes(seg.buffer[:5])


def _gone(res: netmcore.ResId) -> str:
    return outcome_text(lambda: netmcore.open_shm(res))[:10]


def test_a_release_in_extract_result_leaves_a_handed_over_resource_to_its_taker() -> None:
    """Before, the release ended the master's hold: the object was destroyed,
    and the open raised NoResource."""
    made: list[Any] = []

    def extract(_ctrl: netmcore.Controller, pid: Any) -> bytes:
        made.append(outcome_value(make_and_hand_over.join_outcome_nowait(pid)))
        return _release_then_read(made[0])

    read = netmcore.run(first_process=lambda: make_and_hand_over.start(0), extract_result=extract)
    assert read == b"hello"
    assert _gone(made[0]) == "NoResource"


def test_a_release_between_runs_leaves_a_handed_over_resource_to_its_taker(
    master_cleanup: None,
) -> None:
    """Before, the release destroyed it, and the next run's worker found nothing."""
    res = run_scenario(make_and_hand_over, 0)
    netmcore.release(res)
    assert run_scenario(read_handed, res) == b"hello"
    assert _gone(res) == "NoResource"
