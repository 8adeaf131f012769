"""A Mailbox of many receivers (``many_receivers=True``): a work queue in
shared memory, which any process reads through ``open(res_id, T,
receive=True)``, as several processes read one ``multiprocessing.Queue``.

- Each message goes to one receiver, none twice, none lost; each
  receiver's share comes in the order it was sent.
- The creator's handle receives beside the opened ones; threads share one.
- A receiver killed anywhere (holding the receive mutex; after it emptied
  a slot, before it moved the window on) leaves the box working for the
  others: only the message it had taken goes with it.
- A sender of a full box whose receivers have all ended (or closed their
  handles) gets BrokenPipeError; before any receiver came, it waits.
- The seats: at most ``SEATS`` receiving handles at once, a dead
  process's seat taken again, a closed handle's given back.
- Bad flags, and a receiving open of a box of one receiver, are refused
  before anything is taken.

Tests that kill a receiver inside a take reach into the handle (its lock
and slot states) to stop it at an exact point, as a SIGKILL there would.
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

import pytest
from scenario import joined, outcome_text, run_scenario

import netmcore
from netmcore import Mailbox, ResId, _mailbox

pytestmark = pytest.mark.timeout(60)

Item = int | None  # None: stop


def _drain(box: Mailbox[Item]) -> list[int]:
    got: list[int] = []
    while (k := box.receive(timeout=20)) is not None:
        got.append(k)
    return got


@netmcore.process
def consumer(arg: tuple[ResId, int]) -> list[list[int]]:
    """Receive until None through one receiving handle, in ``threads``
    threads; what each thread got."""
    res_id, threads = arg
    with Mailbox.open(res_id, Item, receive=True) as box:
        shares: list[list[int]] = [[] for _ in range(threads)]

        def run(k: int) -> None:
            shares[k] = _drain(box)

        workers = [threading.Thread(target=run, args=(k,)) for k in range(1, threads)]
        for t in workers:
            t.start()
        run(0)
        for t in workers:
            t.join()
        return shares


@netmcore.process
def producer(arg: tuple[ResId, int, int]) -> int:
    res_id, count, stops = arg
    with Mailbox.open(res_id, Item) as box:
        for k in range(count):
            box.send(k, timeout=20)
        for _ in range(stops):
            box.send(None, timeout=20)
    return count


@netmcore.process
def feed_consumers(arg: tuple[int, int]) -> list[list[int]]:
    """Create a box of many receivers, start ``consumers`` of it (two
    threads each), feed it, and say what each thread got."""
    count, consumers = arg
    box = Mailbox.create(Item, slots=8, slot_size=16, many_receivers=True)
    pids = [consumer.start((box.res_id, 2)) for _ in range(consumers)]
    for k in range(count):
        box.send(k, timeout=20)
    for _ in range(2 * consumers):
        box.send(None, timeout=20)
    shares = [share for pid in pids for share in joined(consumer, pid)]
    box.release()
    return shares


def test_each_message_goes_to_one_receiver_of_several_in_the_order_sent() -> None:
    count = 3000
    shares = run_scenario(feed_consumers, (count, 3))
    assert len(shares) == 6
    assert sorted(k for share in shares for k in share) == list(range(count))
    for share in shares:  # one sender: each receiver's share in its order
        assert share == sorted(share)


@netmcore.process
def creator_receives(count: int) -> list[list[int]]:
    """The creator's handle receives beside two processes' handles, from a
    producer of its own."""
    box = Mailbox.create(Item, slots=4, slot_size=16, many_receivers=True)
    pids = [consumer.start((box.res_id, 1)) for _ in range(2)]
    feeder = producer.start((box.res_id, count, 3))
    mine = _drain(box)
    shares = [mine] + [joined(consumer, pid)[0] for pid in pids]
    assert joined(producer, feeder) == count
    box.release()
    return shares


def test_the_creators_handle_receives_beside_opened_ones() -> None:
    shares = run_scenario(creator_receives, 2000)
    assert sorted(k for share in shares for k in share) == list(range(2000))


# --------------------------------------------------------------------------
# Refusals: nothing is taken
# --------------------------------------------------------------------------


@netmcore.process
def opens_to_receive(arg: tuple[ResId, int, int]) -> str:
    """Try a receiving open, say how it went, and live on until told to go."""
    res_id, said_w, go_r = arg
    said = outcome_text(lambda: Mailbox.open(res_id, int, receive=True))
    os.write(said_w, b"x")
    os.read(go_r, 1)
    return said


@netmcore.process
def refused_open(arg: tuple[int, int, int, int]) -> list[Any]:
    said_r, said_w, go_r, go_w = arg
    box = Mailbox.create(int, slots=2, slot_size=16)
    path = "/dev/shm/" + box._segment.name.lstrip("/")
    pid = opens_to_receive.start((box.res_id, said_w, go_r))
    try:
        assert os.read(said_r, 1) == b"x"
        box.release()  # the last user, unless the refused open kept its caller one
        gone = not os.path.exists(path)
    finally:
        os.write(go_w, b"x")
    return [gone, joined(opens_to_receive, pid)]


def test_a_receiving_open_of_a_box_of_one_receiver_is_refused_and_takes_nothing(
    pipes: Any,
) -> None:
    gone, said = run_scenario(refused_open, (*pipes(), *pipes()))
    assert said.startswith("ContextError: Mailbox.open(ResId("), said
    assert said.endswith(
        "receive=True) needs a box created with many_receivers=True, and this one has a "
        "single receiver, the handle that Mailbox.create() gave: receive through that one, "
        "or create the box with Mailbox.create(T, many_receivers=True)"
    ), said
    assert gone, "the refused open kept its process a user of the box"


def test_bad_flags_are_type_errors_naming_them(master_cleanup: None) -> None:
    before = set(os.listdir("/dev/shm"))
    with pytest.raises(TypeError) as create_error:
        Mailbox.create(int, many_receivers="yes")  # type: ignore[call-overload]
    assert str(create_error.value).startswith(
        "many_receivers='yes' is not valid: it must be a bool"
    )
    assert set(os.listdir("/dev/shm")) == before
    with Mailbox.create(int, many_receivers=True) as box:
        with pytest.raises(TypeError) as open_error:
            Mailbox.open(box.res_id, int, receive=1)  # type: ignore[call-overload]
        assert str(open_error.value).startswith("receive=1 is not valid: it must be a bool")


def test_a_sending_handle_on_a_box_of_many_receivers_says_how_to_receive(
    master_cleanup: None,
) -> None:
    with Mailbox.create(int, many_receivers=True) as box, Mailbox.open(box.res_id, int) as sender:
        sender.send(1)
        with pytest.raises(netmcore.ContextError) as error:
            sender.receive(timeout=0)
        assert str(error.value).startswith(
            f"this handle on {sender!r} was opened to send: Mailbox.open(res_id, T, "
            "receive=True) gives one that can receive from it"
        )
        assert box.receive(timeout=0) == 1  # the message stayed


@netmcore.process
def forks_a_receiving_handle(_: int) -> list[str]:
    """A fork's copy of a receiving handle is refused, and the copy's end
    leaves the parent's seat (and the parent's receives) alone."""
    box = Mailbox.create(Item, slots=2, slot_size=16, many_receivers=True)
    reader = Mailbox.open(box.res_id, Item, receive=True)
    r, w = os.pipe()
    child = os.fork()
    if child == 0:  # a plain fork, as a library the process calls may make
        os.write(w, outcome_text(lambda: reader.receive(timeout=0)).encode())
        reader.close()
        os._exit(0)
    os.close(w)
    with os.fdopen(r, encoding="utf-8") as said:
        child_said = said.read()
    os.waitpid(child, 0)
    seat = reader._seat
    seated = seat is not None and reader._seats[seat] == os.getpid()
    box.send(5)
    got = outcome_text(lambda: reader.receive(timeout=20))
    reader.release()
    box.release()
    return [child_said, f"seated: {seated}", got]


def test_a_receiving_handle_that_a_fork_copied_is_refused_in_the_child() -> None:
    child_said, seated, got = run_scenario(forks_a_receiving_handle, 0)
    assert child_said.startswith("ContextError: this receiving handle on Mailbox("), child_said
    assert "and a fork copied it into os pid " in child_said
    assert child_said.endswith(
        ": open one here with Mailbox.open(res_id, T, receive=True) to receive from it"
    ), child_said
    assert seated == "seated: True"
    assert got == "returned 5"


# --------------------------------------------------------------------------
# A receiver killed in the middle of a take
# --------------------------------------------------------------------------


@netmcore.process
def dies_in_a_take(arg: tuple[ResId, str]) -> int:
    """Open to receive, take the receive mutex, and die: holding it alone
    (``how`` "holding"), or after emptying the window start's slot, before
    moving the window on ("emptied"), as a SIGKILL there would leave it."""
    res_id, how = arg
    box = Mailbox.open(res_id, Item, receive=True)
    box._lock_shared(None)
    if how == "emptied":
        start = box._recv[_mailbox._WINDOW]
        box._buf[box._heads[start % box.slots]] = _mailbox._EMPTY
    os.kill(os.getpid(), signal.SIGKILL)
    return 0


@netmcore.process
def after_a_receiver_died(how: str) -> list[Any]:
    slots = 4
    box = Mailbox.create(Item, slots=slots, slot_size=16, many_receivers=True)
    for k in range(slots):  # full
        box.send(k, timeout=20)
    dead = dies_in_a_take.start((box.res_id, how))
    died = outcome_text(lambda: dies_in_a_take.join_outcome(dead))
    if how == "emptied":  # a message a box later, in the hole, before anyone looks
        box.send(100, timeout=0)
    # Boxes' worth more, through the slot the dead receiver emptied (if it
    # did): the box must not be stuck, nor lose or repeat a message.
    feeder = producer.start((box.res_id, 10 * slots, 0))
    got = [box.receive(timeout=20) for _ in range(10 * slots + slots)]
    assert joined(producer, feeder) == 10 * slots
    left = outcome_text(lambda: box.receive(timeout=0))
    # Its whole room again: a box's worth goes in at once, and comes out in order.
    for k in range(slots):
        box.send(k, timeout=0)
    again = [box.receive(timeout=0) for _ in range(slots)]
    box.release()
    return [died, got, left, again]


@pytest.mark.parametrize("how", ["holding", "emptied"])
def test_a_receiver_killed_in_a_take_leaves_the_box_working(how: str) -> None:
    """Before (emptied): the hole's message a box later was taken as the
    window start's, the window stayed a slot behind for good, the messages
    came out of order once a box from then on, and the box held one fewer."""
    died, got, left, again = run_scenario(after_a_receiver_died, how)
    assert died == "returned Crashed(exitcode=None, signal=9)", died
    # 0 died with its taker, if it had emptied its slot; the rest in order.
    assert got == ([0, 1, 2, 3] if how == "holding" else [1, 2, 3, 100]) + list(range(40))
    assert left.startswith("TimeoutError"), left
    assert again == [0, 1, 2, 3]


@netmcore.process
def holds_the_receive_mutex(arg: tuple[ResId, int, int]) -> int:
    """Take the receive mutex, as a receiver stopped in a take holds it,
    until told to go."""
    res_id, held_w, go_r = arg
    box = Mailbox.open(res_id, Item, receive=True)
    box._lock_shared(None)
    os.write(held_w, b"x")
    os.read(go_r, 1)
    _mailbox._unlock(box._shared)
    box.close()
    return 0


@netmcore.process
def receive_beside_a_stopped_receiver(arg: tuple[int, int, int, int]) -> list[str]:
    held_r, held_w, go_r, go_w = arg
    box = Mailbox.create(Item, slots=2, slot_size=16, many_receivers=True)
    box.send(1)
    pid = holds_the_receive_mutex.start((box.res_id, held_w, go_r))
    try:
        assert os.read(held_r, 1) == b"x"
        said = [outcome_text(lambda: box.receive(timeout=0.05))]
    finally:
        os.write(go_w, b"x")
    assert joined(holds_the_receive_mutex, pid) == 0
    said.append(outcome_text(lambda: box.receive(timeout=20)))
    box.release()
    return said


def test_a_receive_beside_a_receiver_stopped_in_a_take_keeps_its_timeout(pipes: Any) -> None:
    """Before: the receive waited for the mutex with no limit."""
    said = run_scenario(receive_beside_a_stopped_receiver, (*pipes(), *pipes()))
    assert said[0].startswith("TimeoutError: another receiver of Mailbox("), said
    assert said[0].endswith(
        "held the box's receive mutex for the whole timeout: a receiver that is stopped "
        "(SIGSTOP, a debugger) in the middle of a take keeps the others waiting"
    ), said
    assert said[1] == "returned 1"


# --------------------------------------------------------------------------
# A full box whose receivers have gone
# --------------------------------------------------------------------------


@netmcore.process
def receives_one(arg: tuple[ResId, int, int]) -> int | None:
    """Open to receive, take one message, then either end (``go_r`` -1) or
    close the handle and live on until told to go."""
    res_id, closed_w, go_r = arg
    box = Mailbox.open(res_id, Item, receive=True)
    got = box.receive(timeout=20)
    if go_r >= 0:
        box.close()
        os.write(closed_w, b"x")
        os.read(go_r, 1)
    return got


@netmcore.process
def sends_to_a_box_without_receivers(arg: tuple[int, int, int, int]) -> list[str]:
    closed_r, closed_w, go_r, go_w = arg
    box = Mailbox.create(Item, slots=2, slot_size=16, many_receivers=True)
    box.send(0)
    box.send(1)
    # No receiver has come yet (the creator's handle, which only sends, is none):
    # the sender waits for one.
    said = [outcome_text(lambda: box.send(2, timeout=0.05))]
    ended = receives_one.start((box.res_id, -1, -1))
    closing = receives_one.start((box.res_id, closed_w, go_r))
    try:
        assert os.read(closed_r, 1) == b"x"  # one has closed its handle, alive
        said.append(outcome_text(lambda: joined(receives_one, ended)))
        box.send(2)
        box.send(3)
        said.append(outcome_text(lambda: box.send(4, timeout=20)))
    finally:
        os.write(go_w, b"x")
    said.append(outcome_text(lambda: joined(receives_one, closing)))
    box.release()
    return said


def test_a_sender_of_a_full_box_whose_receivers_have_gone_gets_broken_pipe(
    pipes: Any,
) -> None:
    said = run_scenario(sends_to_a_box_without_receivers, (*pipes(), *pipes()))
    assert said[0].startswith("TimeoutError: Mailbox("), said
    assert said[1] in ("returned 0", "returned 1"), said
    assert said[2].startswith("BrokenPipeError: [Errno 32] every receiving handle of Mailbox("), (
        said
    )
    assert said[2].endswith(
        "has been closed, or its process has ended, and the box is full: nothing will take "
        "this message. Keep a receiving handle open while messages may come"
    ), said
    assert said[3] in ("returned 0", "returned 1") and said[3] != said[1], said


# --------------------------------------------------------------------------
# Seats
# --------------------------------------------------------------------------


@netmcore.process
def opens_and_dies(res_id: ResId) -> int:
    """Open to receive, and die: its seat holds a dead pid."""
    Mailbox.open(res_id, Item, receive=True)
    os.kill(os.getpid(), signal.SIGKILL)
    return 0


@netmcore.process
def seats_scenario(_: int) -> list[str]:
    box = Mailbox.create(Item, slots=2, slot_size=16, many_receivers=True)
    dead = opens_and_dies.start(box.res_id)
    said = [outcome_text(lambda: opens_and_dies.join_outcome(dead))]
    first = Mailbox.open(box.res_id, Item, receive=True)
    second = Mailbox.open(box.res_id, Item, receive=True)  # the dead one's seat
    said.append(outcome_text(lambda: Mailbox.open(box.res_id, Item, receive=True)))
    first.close()
    third = Mailbox.open(box.res_id, Item, receive=True)  # the closed one's seat
    box.send(7)
    said.append(outcome_text(lambda: third.receive(timeout=20)))
    for handle in (second, third, box):
        handle.release()
    return said


def test_seats_of_ended_processes_and_closed_handles_are_taken_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two seats here (the workers are forks of this process, the master):
    the third receiving handle open at once is refused, naming the limit."""
    monkeypatch.setattr(_mailbox, "SEATS", 2)
    said = run_scenario(seats_scenario, 0)
    assert said[0] == "returned Crashed(exitcode=None, signal=9)", said
    assert said[1].startswith("ValueError: Mailbox("), said
    assert said[1].endswith(
        "has 2 receiving handles open, the most it takes: close one (or let its process "
        "end) before opening another with receive=True"
    ), said
    assert said[2] == "returned 7"


# --------------------------------------------------------------------------
# A send that waits only while its receivers run
# --------------------------------------------------------------------------


@netmcore.process
def fails_before_it_opens(_: ResId) -> int:
    raise RuntimeError("a bug before the open")


@netmcore.process
def feeds_receivers_that_failed(_: int) -> list[Any]:
    box = Mailbox.create(Item, slots=2, slot_size=16, many_receivers=True)
    pids = [fails_before_it_opens.start(box.res_id) for _ in range(2)]
    said = [outcome_text(lambda: box.send(0, while_alive="worker"))]  # type: ignore[arg-type]
    said.append(str(box.qsize()))  # the refused send put nothing in
    said.append(outcome_text(lambda: [box.send(k, timeout=20, while_alive=pids) for k in range(3)]))
    said.append(str(box.qsize()))  # the sends into free slots did not look
    said.append(str([pid.n for pid in pids]))
    box.release()
    return said


def test_a_send_with_while_alive_stops_waiting_once_its_receivers_have_ended() -> None:
    """The receivers fail before they open the box, so no seat tells the
    sender: without while_alive, the third send would wait for ever."""
    refused, before, said, after, pids = run_scenario(feeds_receivers_that_failed, 0)
    assert refused.startswith("TypeError: while_alive must be a ProcessId or an iterable"), refused
    assert before == "0" and after == "2"
    assert said.startswith("BrokenPipeError: [Errno 32] Mailbox("), said
    assert said.endswith(
        f".send(while_alive=...): the box is full and the processes it waited for, {pids}, "
        "have all ended: nothing will take this message (a join of each says how it ended). "
        "Send without while_alive to wait for other receivers"
    ), said
