"""``Mailbox.receive(while_alive=...)`` and ``Mbox.receive(while_alive=...)``:
a receiver that waits only while the processes it expects messages from run;
and ``Mbox.send(while_alive=...)``, a sender that waits for room only while
its receivers run (``Mailbox.send``'s is in test_mailbox_receivers).

A receiver whose senders are gone (an actor that crashed, a producer that
returned early) would otherwise wait for ever: nothing tells a shared-memory
box that its senders have ended. Each scenario below is synchronised by the
messages themselves and by joins, never by sleeps.
"""

from __future__ import annotations

import os
import signal
import threading

import pytest
from interrupting import at_every_point
from scenario import (
    SYSCALLS,
    in_master,
    outcome_text,
    run_scenario,
    wait_until_main_thread_blocks,
)

import netmcore
from netmcore import Mailbox, ProcessId, ResId, SendersEnded, UnknownProcess


@netmcore.process
def send_then_end(arg: tuple[ResId, list[str], str]) -> None:
    """Send ``words`` to the box, then end as ``how`` says."""
    res_id, words, how = arg
    with Mailbox.open(res_id, str) as box:
        for word in words:
            box.send(word)
    end_as(how)


def end_as(how: str) -> None:
    """End the calling process as ``how`` says (or return, for "return")."""
    if how == "raise":
        raise ValueError("the sender failed")
    if how == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    if how == "exit":
        os._exit(3)


@netmcore.process
def receive_from_one(how: str) -> list[str]:
    """Receive, with while_alive, until the one sender has ended."""
    box = Mailbox.create(str, slots=8, slot_size=64)
    try:
        sender = send_then_end.start((box.res_id, ["a", "b"], how))
        got = []
        with pytest.raises(SendersEnded) as caught:
            while True:
                got.append(box.receive(while_alive=sender))
        error = caught.value
        assert isinstance(error, EOFError) and isinstance(error, netmcore.NetmcoreError)
        assert error.pids == (sender,)
        got.append(str(error))
        got.append(outcome_text(lambda: send_then_end.join_outcome(sender)))
        return got
    finally:
        box.release()


@pytest.mark.parametrize("how", ["return", "raise", "sigkill", "exit"])
def test_a_receive_while_its_sender_lives_ends_once_the_sender_has_ended(how: str) -> None:
    """What the sender sent comes first; then, however it ended (its
    function returned or raised, it was killed, it exited), SendersEnded
    where a plain receive would wait for ever."""
    *got, message, outcome = run_scenario(receive_from_one, how)
    assert got == ["a", "b"]
    assert ".receive(): the box is empty and process" in message
    assert "which it waited for, has ended: nothing more will come from them" in message
    if how == "raise":
        assert "the sender failed" in outcome
    if how == "sigkill":
        assert f"signal={int(signal.SIGKILL)}" in outcome
    if how == "exit":
        assert "exitcode=3" in outcome


@netmcore.process
def held_sender(arg: tuple[ResId, ResId]) -> None:
    """Send the res id of a box of its own, wait for a word in it, send
    that word on, and end."""
    out_id, _ = arg
    out = Mailbox.open(out_id, str)
    with Mailbox.create(str, slots=1, slot_size=64) as go:
        out.send(f"go:{go.res_id.n}")
        out.send(go.receive())
    out.release()


@netmcore.process
def receive_from_two(_: None) -> list[str]:
    """One sender ends at once; the other is held: the receive goes on
    waiting while the held one lives, and ends only once both have."""
    box = Mailbox.create(str, slots=8, slot_size=64)
    try:
        quick = send_then_end.start((box.res_id, ["quick"], "return"))
        held = held_sender.start((box.res_id, box.res_id))
        senders = [quick, held]
        first = {box.receive(while_alive=senders) for _ in range(2)}
        go_word = next(w for w in first if w.startswith("go:"))
        assert first == {"quick", go_word}
        assert send_then_end.join(quick) is None  # quick has ended for sure
        got = []
        # The held sender lives: not SendersEnded, but the timeout.
        got.append(outcome_text(lambda: box.receive(timeout=0.05, while_alive=senders)))
        with Mailbox.open(ResId(int(go_word[3:])), str) as go:
            go.send("late")
        got.append(box.receive(while_alive=senders))
        got.append(outcome_text(lambda: box.receive(while_alive=senders)))
        assert held_sender.join(held) is None
        got.append(outcome_text(lambda: box.receive(timeout=0, while_alive=(quick, quick))))
        return got
    finally:
        box.release()


def test_a_receive_while_several_senders_live_waits_for_the_last_of_them() -> None:
    timed_out, late, ended, ended_at_once = run_scenario(receive_from_two, None)
    assert timed_out.startswith("TimeoutError")
    assert late == "late"
    assert ended.startswith("SendersEnded")
    assert "the processes it waited for, [" in ended and "have all ended" in ended
    # A process joined already has ended, and timeout=0 asks all the same.
    assert ended_at_once.startswith("SendersEnded")


@netmcore.process
def input_checks(_: None) -> list[str]:
    box = Mailbox.create(str, slots=4, slot_size=64)
    try:
        box.send("kept")
        never = ProcessId[None](10**9)
        got = [
            outcome_text(lambda: box.receive(while_alive="3")),  # type: ignore[arg-type]
            outcome_text(lambda: box.receive(while_alive=5)),  # type: ignore[arg-type]
            outcome_text(lambda: box.receive(while_alive=[never, 7])),  # type: ignore[list-item]
        ]
        # Nothing was taken by the refused calls; a message that is there
        # comes without the master being asked (so not even the unknown id).
        got.append(box.receive(while_alive=never))
        got.append(outcome_text(lambda: box.receive(timeout=0, while_alive=never)))
        # No process to wait for: an empty box has nothing more to come.
        got.append(outcome_text(lambda: box.receive(while_alive=[])))
        return got
    finally:
        box.release()


def test_while_alive_of_the_wrong_type_is_refused_before_anything_is_taken() -> None:
    text, number, mixed, kept, unknown, none = run_scenario(input_checks, None)
    assert text.startswith("TypeError: while_alive must be a ProcessId or an iterable of them")
    assert "not str ('3')" in text and "pass the ProcessId that start() returned" in text
    assert number.startswith("TypeError: while_alive must be") and "not int (5)" in number
    assert mixed.startswith("TypeError: while_alive holds 7, a int, where each item must be")
    assert kept == "kept"
    assert unknown.startswith("UnknownProcess: process 1000000000 was never started")
    assert none.startswith("SendersEnded")


def test_while_alive_in_the_masters_own_code_asks_the_master_directly() -> None:
    def checks() -> list[str]:
        box = Mailbox.create(str, slots=2, slot_size=64)
        try:
            pid = ProcessId[None](10**9)
            return [
                outcome_text(lambda: box.receive(timeout=0, while_alive=pid)),
                outcome_text(lambda: box.receive(timeout=0, while_alive=[])),
            ]
        finally:
            box.release()

    unknown, ended = in_master(checks)
    assert unknown.startswith("UnknownProcess: process 1000000000 was never started")
    assert ended.startswith("SendersEnded")


def test_senders_ended_is_raised_in_the_callers_except_clauses() -> None:
    assert issubclass(SendersEnded, EOFError)
    assert issubclass(SendersEnded, netmcore.NetmcoreError)
    assert not issubclass(SendersEnded, UnknownProcess)


def test_a_message_that_lands_as_the_senders_end_is_seen_is_received(
    master_cleanup: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sender's last message may land between the receiver's look and
    the master's answer that it has ended: one more look finds it, so
    SendersEnded never hides a message that is there."""
    box = Mailbox.create(str, slots=2, slot_size=64)
    late = Mailbox.open(box.res_id, str)
    try:
        asked: list[list[int]] = []

        def ended_as_its_last_message_lands(pids: list[int], what: str) -> set[int]:
            if not asked:
                late.send("last")
            asked.append(pids)
            return set(pids)

        monkeypatch.setattr(netmcore._client, "ended", ended_as_its_last_message_lands)
        sender = ProcessId[None](0)
        assert box.receive(timeout=0, while_alive=sender) == "last"
        with pytest.raises(SendersEnded):
            box.receive(timeout=0, while_alive=sender)
        assert asked == [[0], [0]]
    finally:
        late.release()
        box.release()


@netmcore.process
def interrupted_everywhere(_: None) -> str | None:
    """A receive(timeout=0) that asks the master whether its sender lives,
    interrupted at each point: the next one still says the sender has
    ended, and the link to the master still answers (a reply left over
    from an interrupted request would be taken as a later one's)."""
    box = Mailbox.create(str, slots=2, slot_size=64)
    try:
        gone = send_then_end.start((box.res_id, [], "return"))
        send_then_end.join(gone)
        running = held_sender.start((box.res_id, box.res_id))
        go = ResId(int(box.receive()[3:]))

        def call() -> str:
            try:
                return f"returned {box.receive(timeout=0, while_alive=gone)!r}"
            except (SendersEnded, TimeoutError) as exc:  # not the handler's
                return f"{type(exc).__name__}: {exc}"

        def check(result: str | None) -> list[str]:
            problems = []
            if result is None:
                result = call()
            if not result.startswith("SendersEnded"):
                problems.append(f"the receive gave {result}")
            if not netmcore.kill(running, 0):
                problems.append("the link lost track of a running process")
            return problems

        problem = at_every_point(call, check)
        with Mailbox.open(go, str) as sender:
            sender.send("done")
        assert box.receive(while_alive=running) == "done"
        return problem
    finally:
        box.release()


def test_a_receive_interrupted_as_it_asks_whether_its_senders_live_leaves_the_link_working() -> (
    None
):
    assert run_scenario(interrupted_everywhere, None) is None


@netmcore.process
def released_sender(arg: tuple[ResId, ResId]) -> None:
    """held_sender's steps, as a type of its own, whose join point the
    test releases (for the rest of the test process: it is the master)."""
    held_sender().run(arg)


@netmcore.process
def receive_from_a_released_type(_: None) -> list[str]:
    """A process nobody can join any more (its join point released) still
    runs, and may still send: a receive goes on waiting for it."""
    box = Mailbox.create(str, slots=4, slot_size=64)
    try:
        sender = released_sender.start((box.res_id, box.res_id))
        released_sender.release_join_point()
        go = ResId(int(box.receive(while_alive=sender)[3:]))
        got = [outcome_text(lambda: box.receive(timeout=0.05, while_alive=sender))]
        with Mailbox.open(go, str) as to_sender:
            to_sender.send("after the release")
        got.append(box.receive(while_alive=sender))
        got.append(outcome_text(lambda: box.receive(while_alive=sender)))
        return got
    finally:
        box.release()


def test_a_sender_whose_join_point_was_released_is_waited_for_while_it_runs() -> None:
    timed_out, late, ended = run_scenario(receive_from_a_released_type, None)
    assert timed_out.startswith("TimeoutError")  # not SendersEnded: it runs
    assert late == "after the release"
    assert ended.startswith("SendersEnded")


# --------------------------------------------------------------------------
# Mbox, the master's box: the master answers the receive as the last ends
# --------------------------------------------------------------------------


@netmcore.process
def mbox_send_then_end(arg: tuple[str, list[int], str]) -> None:
    name, values, how = arg
    box = netmcore.Mbox(name, int, capacity=8)
    box.create()
    for value in values:
        box.send(value)
    end_as(how)


@netmcore.process
def mbox_receive_from_one(how: str) -> list[str]:
    box = netmcore.Mbox(f"one-{how}", int, capacity=8)
    box.create()
    sender = mbox_send_then_end.start((box.name, [1, 2], how))
    got: list[str] = []
    with pytest.raises(SendersEnded) as caught:
        while True:
            got.append(str(box.receive(while_alive=sender)))
    assert caught.value.pids == (sender,)
    got.append(str(caught.value))
    box.delete()
    return got


@pytest.mark.parametrize("how", ["return", "raise", "sigkill"])
def test_an_mbox_receive_while_its_sender_lives_ends_once_the_sender_has_ended(how: str) -> None:
    *got, message = run_scenario(mbox_receive_from_one, how, init_ctrl=netmcore.add_plugins)
    assert got == ["1", "2"]
    assert ".receive(): the box is empty and process" in message and "has ended" in message


@netmcore.process
def mbox_held_sender(name: str) -> None:
    """Send 0, wait for a word in a box of its own, send 1, and end."""
    box = netmcore.Mbox(name, int, capacity=8)
    go = netmcore.Mbox(f"{name}.go", int)
    go.create()
    box.send(0)
    box.send(go.receive() + 1)


@netmcore.process
def mbox_receive_from_two(_: None) -> list[str]:
    box = netmcore.Mbox("two", int, capacity=8)
    box.create()
    quick = mbox_send_then_end.start((box.name, [7], "return"))
    held = mbox_held_sender.start(box.name)
    senders = [quick, held]
    first = sorted([box.receive(while_alive=senders), box.receive(while_alive=senders)])
    assert first == [0, 7], first
    assert mbox_send_then_end.join(quick) is None  # quick has ended for sure
    got = [outcome_text(lambda: box.receive(timeout=0.05, while_alive=senders))]
    go = netmcore.Mbox("two.go", int)
    go.create()  # (as the held sender may not have yet: either makes it)
    go.send(9)
    got.append(str(box.receive(while_alive=senders)))
    # Waiting as the held one ends: the master answers it then.
    got.append(outcome_text(lambda: box.receive(while_alive=senders)))
    got.append(outcome_text(lambda: box.receive(timeout=0, while_alive=quick)))
    got.append(outcome_text(lambda: box.receive(while_alive=[])))
    box.delete()
    go.delete()
    return got


def test_an_mbox_receive_while_several_senders_live_waits_for_the_last_of_them() -> None:
    timed_out, late, ended, ended_at_once, none = run_scenario(
        mbox_receive_from_two, None, init_ctrl=netmcore.add_plugins
    )
    assert timed_out.startswith("TimeoutError")  # the held one runs
    assert late == "10"
    assert ended.startswith("SendersEnded") and "have all ended" in ended
    assert ended_at_once.startswith("SendersEnded")  # joined already, and timeout=0
    assert none.startswith("SendersEnded")


@netmcore.process
def mbox_input_checks(_: None) -> list[str]:
    box = netmcore.Mbox("checks", int, capacity=2)
    box.create()
    box.send(5)
    never = ProcessId[None](10**9)
    got = [
        outcome_text(lambda: box.receive(while_alive="3")),  # type: ignore[arg-type]
        outcome_text(lambda: box.receive(while_alive=[never, 7])),  # type: ignore[list-item]
        # A message that is there comes without a look at the processes.
        outcome_text(lambda: box.receive(while_alive=never)),
        outcome_text(lambda: box.receive(timeout=0, while_alive=never)),
    ]
    box.delete()
    return got


def test_an_mbox_while_alive_of_the_wrong_type_is_refused_before_anything_is_sent() -> None:
    text, mixed, kept, unknown = run_scenario(
        mbox_input_checks, None, init_ctrl=netmcore.add_plugins
    )
    assert text.startswith("TypeError: while_alive must be a ProcessId or an iterable of them")
    assert mixed.startswith("TypeError: while_alive holds 7, a int")
    assert kept == "returned 5"
    assert unknown.startswith("UnknownProcess: process 1000000000 was never started")


def test_an_mbox_while_alive_in_the_masters_own_code_is_answered_without_a_wait() -> None:
    def checks() -> list[str]:
        box = netmcore.Mbox("in-master", int)
        box.create()
        try:
            return [
                outcome_text(lambda: box.receive(while_alive=[])),
                outcome_text(lambda: box.receive(while_alive=ProcessId[None](10**9))),
            ]
        finally:
            box.delete()

    got: list[str] = []

    def first() -> ProcessId[None]:
        got.extend(checks())
        return mbox_send_then_end.start(("in-master", [], "return"))

    netmcore.run(
        first_process=first,
        extract_result=lambda _c, pid: mbox_send_then_end.join_outcome_nowait(pid),
        init_ctrl=netmcore.add_plugins,
    )
    ended, unknown = got
    assert ended.startswith("SendersEnded")  # nothing to wait for: no ContextError
    assert unknown.startswith("UnknownProcess")


@netmcore.process
def mbox_interrupted_everywhere(_: None) -> str | None:
    """An Mbox receive that waits while a held sender runs, interrupted at
    each point: the master keeps no waiter of it (the next receive, with a
    message sent, gets it), and one whole ends with the sender's end."""
    box = netmcore.Mbox("storm", int, capacity=8)
    box.create()
    held = mbox_held_sender.start(box.name)
    assert box.receive(while_alive=held) == 0

    def call() -> str:
        try:
            return f"returned {box.receive(timeout=0.001, while_alive=held)!r}"
        except (SendersEnded, TimeoutError) as exc:  # not the handler's
            return type(exc).__name__

    def check(result: str | None) -> list[str]:
        box.send(-1)  # a receive the master still kept would take it
        got = box.receive(timeout=0)
        return [] if got == -1 else [f"the next receive got {got}"]

    problem = at_every_point(call, check)
    go = netmcore.Mbox("storm.go", int)
    go.create()
    go.send(1)
    assert box.receive(while_alive=held) == 2
    if problem is None:
        problem = (
            None
            if outcome_text(lambda: box.receive(while_alive=held)).startswith("SendersEnded")
            else "no SendersEnded once the held sender ended"
        )
    box.delete()
    go.delete()
    return problem


def test_an_mbox_receive_interrupted_anywhere_leaves_no_waiter_in_the_master() -> None:
    assert run_scenario(mbox_interrupted_everywhere, None, init_ctrl=netmcore.add_plugins) is None


@netmcore.process
def mbox_sender_ends_as_the_receive_waits(_: None) -> str:
    """The receive is queued in the master before its sender ends: the
    master answers it as it hears of the end (not at the receive's call)."""
    assert SYSCALLS is not None
    box = netmcore.Mbox("queued", int)
    box.create()
    held = mbox_held_sender.start(box.name)
    assert box.receive(while_alive=held) == 0

    def kill_once_the_receive_waits() -> None:
        wait_until_main_thread_blocks(lambda call: call[0] == SYSCALLS["recvfrom"])
        netmcore.kill(held, signal.SIGKILL)

    killer = threading.Thread(target=kill_once_the_receive_waits)
    killer.start()
    try:
        return outcome_text(lambda: box.receive(while_alive=held))
    finally:
        killer.join()
        box.delete()


@pytest.mark.skipif(SYSCALLS is None, reason="system call numbers known for x86_64 and aarch64")
def test_an_mbox_receive_that_waits_is_answered_as_its_sender_ends() -> None:
    said = run_scenario(mbox_sender_ends_as_the_receive_waits, None, init_ctrl=netmcore.add_plugins)
    assert said.startswith("SendersEnded") and "has ended" in said


# --------------------------------------------------------------------------
# Mbox.send(while_alive=...): a sender that waits only while its receivers run
# --------------------------------------------------------------------------


@netmcore.process
def fails_before_it_receives(_: int) -> int:
    raise RuntimeError("a bug before the first receive")


@netmcore.process
def mbox_send_to_receivers_that_fail(_: int) -> list[str]:
    box = netmcore.Mbox("full", int, capacity=1)
    box.create()
    box.send(0)  # full
    failing = [fails_before_it_receives.start(0) for _ in range(2)]
    said = [outcome_text(lambda: box.send(1, while_alive=failing))]  # answered as they end
    said.append(outcome_text(lambda: box.send(2, timeout=0.05, while_alive=failing)))  # at once
    said.append(outcome_text(lambda: box.send(3, while_alive="worker")))  # type: ignore[arg-type]
    said.append(outcome_text(lambda: box.receive(timeout=0)))
    said.append(outcome_text(lambda: box.receive(timeout=0)))  # none of theirs went in
    said.append(str([pid.n for pid in failing]))
    box.delete()
    return said


def test_an_mbox_send_with_while_alive_stops_waiting_once_its_receivers_have_ended() -> None:
    """Before: no while_alive on an Mbox send; a sender to a full box whose
    receivers had failed waited for ever (a porting review's ETL hung so)."""
    *said, pids = run_scenario(mbox_send_to_receivers_that_fail, 0, init_ctrl=netmcore.add_plugins)
    gone = (
        f"the box is full and the processes it waited for, {pids}, have all ended: nothing "
        "will take this message (a join of each says how it ended). Send without while_alive "
        "to wait for other receivers"
    )
    assert said[0] == f"BrokenPipeError: [Errno 32] Mbox('full', int).send(): {gone}", said
    assert said[1] == said[0]
    assert said[2].startswith("TypeError: while_alive must be a ProcessId"), said
    assert said[3] == "returned 0"
    assert said[4].startswith("TimeoutError"), said
