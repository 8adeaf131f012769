"""A Mailbox's receive faced with a message its type refuses, a close, or
another handle on the box in its creator.

- A message that the box's type's own validation refuses with an error
  that is not msgspec's (a ``__post_init__`` raising RuntimeError, say)
  was kept as if a signal handler had interrupted its decode: every later
  receive raised the same error again, and the box was stuck for its
  receiver. Such a message is raised once and gone, as one of another
  type is, and a decode that a handler did interrupt still keeps its
  message, wherever the handler's exception comes.
- Two threads receiving at once judged the same refused message, and
  each raised its error: it is raised once in all.
- A close by another thread as a receive takes a message: the receive
  that took it returns it; one that raises, because the close came first,
  took nothing (the message is still in the box).
- A handle that ``Mailbox.open`` gave in the box's creator received, from
  a window of its own: messages came out of order. It only sends now.

Each test says whether it failed before the change, and how. The box's
type here is a Struct whose ``__post_init__`` refuses the notes listed in
``refused``, and raises SIGINT once for those in ``interrupted``: its
handler runs there, in the decode, as a Ctrl-C's could.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable, Iterator
from types import FrameType

import msgspec
import pytest
from interrupting import Interrupted, at_every_point, handler_raises

from netmcore import Mailbox

pytestmark = pytest.mark.timeout(60)

refused: set[int] = set()
interrupted: set[int] = set()
decodes: list[int] = []  # the n of each Note built (each decode builds one)


class Note(msgspec.Struct):
    n: int

    def __post_init__(self) -> None:
        decodes.append(self.n)
        # Interrupted first: a refused note can be interrupted too.
        if self.n in interrupted:
            interrupted.discard(self.n)
            signal.raise_signal(signal.SIGINT)  # its handler raises here, in the decode
        if self.n in refused:
            raise RuntimeError(f"note {self.n} is refused")


@pytest.fixture
def note_box(master_cleanup: None) -> Iterator[tuple[Mailbox[Note], Mailbox[Note]]]:
    """A box of Notes, and a sender's handle on it (which also sees the box
    as a sender would: its qsize() counts the messages in the slots only)."""
    box = Mailbox.create(Note, slots=4, slot_size=64)
    sender = Mailbox.open(box.res_id, Note)
    try:
        yield box, sender
    finally:
        sender.release()
        box.release()
        refused.clear()
        interrupted.clear()
        decodes.clear()


def _received(box: Mailbox[Note]) -> str:
    """What a receive does, as text; a handler's exception is let through."""
    try:
        return f"returned {box.receive(timeout=0)!r}"
    except Interrupted:
        raise
    except TimeoutError:  # its message names the box
        return "TimeoutError"
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"


# --------------------------------------------------------------------------
# A message the type's own validation refuses
# --------------------------------------------------------------------------


def test_a_message_its_validation_refuses_is_raised_once_and_gone(
    note_box: tuple[Mailbox[Note], Mailbox[Note]],
) -> None:
    """Before: the refused note stayed first for good, every receive raised
    its RuntimeError, and the note after it never came."""
    box, sender = note_box
    sender.send(Note(1))
    sender.send(Note(2))
    refused.add(1)  # after the send, whose check decodes it too
    seen = [_received(box), f"waiting: {box.qsize()}", _received(box), _received(box)]
    assert seen == [
        "RuntimeError: note 1 is refused",
        "waiting: 1",
        "returned Note(n=2)",
        "TimeoutError",
    ]


def test_a_refused_message_is_raised_once_even_if_its_receive_is_interrupted_anywhere(
    note_box: tuple[Mailbox[Note], Mailbox[Note]],
) -> None:
    """A receive of a refused note, then a good one, with SIGINT at each
    point of the receive in turn: the refusal is raised once, by it or by
    the next receive, then the good note comes. The second decode is the
    decisive one: a SIGINT there must keep the note (and its refusal) for
    the next receive. Before: the refusal was raised by every receive."""
    box, sender = note_box
    refused.add(-1)
    sent = 0

    def send_both() -> None:
        nonlocal sent
        refused.discard(-1)  # the send's check decodes it
        sender.send(Note(-1))
        refused.add(-1)
        sender.send(Note(sent))
        sent += 1

    def check(result: str | None) -> list[str]:
        if result is None:  # interrupted: the next receive raises the refusal
            result = _received(box)
        problems = []
        if result != "RuntimeError: note -1 is refused":
            problems.append(f"the refused note: {result}")
        if (then := _received(box)) != f"returned Note(n={sent - 1})":
            problems.append(f"the note after it: {then}")
        if (waiting := box.qsize()) != 0:
            problems.append(f"qsize() said {waiting} after both, not 0")
        send_both()
        return problems

    send_both()
    problem = at_every_point(lambda: _received(box), check)
    assert problem is None, problem


def test_a_note_whose_decode_was_interrupted_is_kept_wherever_a_second_signal_comes(
    note_box: tuple[Mailbox[Note], Mailbox[Note]],
) -> None:
    """A good note whose first decode a handler's exception interrupts (in
    its ``__post_init__``): the receive raises that exception and keeps
    the note, decoded once more, so that the next receive returns it
    without decoding it again. With a second SIGINT at each point of the
    receive in turn, the note still comes, once, and is decoded no more
    than twice after its send. Before: with the second SIGINT in the first
    decode, the note was decoded three times (each decode but the last
    interrupted); now the second decode, with signals blocked, keeps its
    value for the next receive."""
    box, sender = note_box
    sent = 0

    def send_one() -> None:
        nonlocal sent
        sender.send(Note(sent))
        interrupted.add(sent)  # after the send, whose check decodes it
        decodes.clear()
        sent += 1

    def check(result: str | None) -> list[str]:
        got = ["Interrupted"] if result is None else [result]
        for _ in range(2):  # an interruption from each signal at most: then the note comes
            if got[-1] != "Interrupted":
                break
            try:
                got.append(_received(box))
            except Interrupted:
                got.append("Interrupted")
        problems = []
        if got[-1] != f"returned Note(n={sent - 1})":
            problems.append(f"receives did {got}")
        if len(decodes) > 2:
            problems.append(f"decoded {len(decodes)} times")
        if (then := _received(box)) != "TimeoutError":
            problems.append(f"then a receive did {then}")
        send_one()
        return problems

    send_one()
    problem = at_every_point(lambda: _received(box), check)
    assert problem is None, problem


# --------------------------------------------------------------------------
# A close by another thread in the middle of a receive
# --------------------------------------------------------------------------


_MAILBOX_CODE = Mailbox.receive.__code__.co_filename


class _AnotherThreadAt:
    """A profile function that, at the ``at``-th point where Python could
    switch threads (a Python call's start, a C call's return), has another
    thread ``act`` (close the box, say), to its end, and goes on; at a
    point where ``waits()`` says that the act would wait for this thread
    (for a lock it holds), it passes by (``where`` still names the point).
    ``before`` says whether that point came before the receive's first
    line."""

    def __init__(
        self, at: int, act: Callable[[], None], waits: Callable[[], bool] = lambda: False
    ) -> None:
        self.at = at
        self.act = act
        self.waits = waits
        self.seen = 0
        self.where: str | None = None
        self.before = False

    def __call__(self, frame: FrameType, event: str, arg: object) -> None:
        if event not in ("call", "c_return"):
            return
        self.seen += 1
        if self.seen - 1 != self.at:
            return
        code = frame.f_code
        what = getattr(arg, "__qualname__", repr(arg)) if event == "c_return" else ""
        self.where = f"{event} {what} in {code.co_name}, {code.co_filename}:{frame.f_lineno}"
        self.before = code.co_filename != _MAILBOX_CODE or (
            event == "call" and code.co_name == "receive"
        )
        if self.waits():
            return
        other = threading.Thread(target=self.act)
        other.start()
        other.join()


def _receive_closed_at(box: Mailbox[Note], hook: _AnotherThreadAt) -> str:
    sys.setprofile(hook)
    try:
        return f"returned {box.receive(timeout=0)!r}"
    except ValueError as exc:
        return f"ValueError: {exc}"
    finally:
        sys.setprofile(None)


@pytest.mark.parametrize("how", ["close", "release"])
@pytest.mark.parametrize("first", ["in the box", "pending"])
def test_a_close_as_a_receive_takes_a_message_never_loses_it(
    first: str, how: str, master_cleanup: None
) -> None:
    """A note waits (in the box, or pending: left by a receive whose decode
    a handler's exception interrupted), and another thread closes (or
    releases) the receiver's handle at each point of a receive in turn.
    The receive returns the note, or raises the ValueError of a close,
    and then the note is still in the box: it took nothing. (A pending
    note is lost with a close that came before the receive began, as the
    close's docstring says: the receive raises at its first line.) Passed
    before too: pins that nothing after the take looks at the close."""
    closed_before = "is closed or released in this process"  # not "during receive()"
    for at in range(1000):  # more points than a receive has: a guard, not an expectation
        box = Mailbox.create(Note, slots=4, slot_size=64)
        sender = Mailbox.open(box.res_id, Note)
        try:
            sender.send(Note(7))
            if first == "pending":
                interrupted.add(7)
                with handler_raises(signal.SIGINT), pytest.raises(Interrupted):
                    box.receive(timeout=0)
            hook = _AnotherThreadAt(at, getattr(box, how))
            result = _receive_closed_at(box, hook)
            in_box = sender.qsize()
        finally:
            sender.release()
            box.release()
            interrupted.clear()
            decodes.clear()
        if result == "returned Note(n=7)":
            ok = in_box == 0
        elif first == "pending":
            ok = hook.before and closed_before in result
        else:
            ok = result.startswith("ValueError") and in_box == 1
        where = hook.where
        assert ok, f"closed at point {at} ({where}): the receive did {result}; in the box: {in_box}"
        if where is None:  # the receive had fewer points: each was tried
            return
    raise AssertionError("the receive still had points after 1000")


# --------------------------------------------------------------------------
# Two threads receiving
# --------------------------------------------------------------------------


@pytest.mark.parametrize("first", ["in the box", "pending"])
def test_a_refused_message_is_raised_once_by_two_threads_receiving(
    first: str, note_box: tuple[Mailbox[Note], Mailbox[Note]]
) -> None:
    """A refused note, then a good one, and two threads receiving through
    the box's handle: at each point of one's receive in turn, the other
    makes a whole receive. Between them, the refusal is raised once and
    the good note returned once. The refused note waits in the box, or
    pending: left there by a receive whose first decode a handler's
    exception interrupted (the second decode's refusal is then not taken
    for the message's). Before: where the other thread came while the
    first had the note pending (in its second decode, say), it judged the
    note too, and both raised its refusal."""
    box, sender = note_box
    refusal = "RuntimeError: note -1 is refused"
    results: list[str] = []  # what each receive did, in the other thread too
    for at in range(1000):  # more points than a receive has: a guard, not an expectation
        sender.send(Note(-1))
        refused.add(-1)  # after the send, whose check decodes it
        if first == "pending":
            interrupted.add(-1)
            with handler_raises(signal.SIGINT), pytest.raises(Interrupted):
                box.receive(timeout=0)
        sender.send(Note(at))
        results.clear()
        hook = _AnotherThreadAt(
            at,
            lambda: results.append(_received(box)),
            waits=box._receiving.locked,  # the other's _take would wait for it
        )
        sys.setprofile(hook)
        try:
            results.append(_received(box))
        finally:
            sys.setprofile(None)
        while (result := _received(box)) != "TimeoutError":
            results.append(result)
        got = sorted(r for r in results if r != "TimeoutError")
        assert got == sorted([refusal, f"returned Note(n={at})"]), (
            f"the other thread at point {at} ({hook.where}): the receives did {results}"
        )
        assert box.qsize() == 0
        refused.clear()
        if hook.where is None:  # the receive had fewer points: each was tried
            return
    raise AssertionError("the receive still had points after 1000")


# --------------------------------------------------------------------------
# Another handle on the box in its creator
# --------------------------------------------------------------------------


def test_a_handle_that_open_gives_in_the_creator_only_sends(
    note_box: tuple[Mailbox[Note], Mailbox[Note]],
) -> None:
    """A helper's handle on the box, opened in its creator, sends; its
    receive and reclaim are refused, naming the rule, and the box's own
    handle receives every message, in order. Before: the opened handle
    received from a window of its own, which began where the next message
    would go: it returned Note(2) before the two sent earlier, and the
    box's handle then waited for Note(2) at a slot emptied already (a
    TimeoutError, with the box taking every message out of order from
    there on)."""
    box, _ = note_box
    box.send(Note(0))
    box.send(Note(1))
    helper = Mailbox.open(box.res_id, Note)
    try:
        helper.send(Note(2))
        seen = [_received(helper)]
        try:
            seen.append(f"reclaimed {helper.reclaim()}")
        except Exception as exc:
            seen.append(f"{type(exc).__name__}: {exc}")
    finally:
        helper.release()
    seen += [_received(box) for _ in range(4)]
    rule = (
        f"{helper!r} was opened with Mailbox.open(), which gives a sender's handle, in the "
        "box's creator too, and only the handle that Mailbox.create() gave can {}: a second "
        "receiving handle would take messages out of order, or twice. Use the created handle "
        "(its threads may share it), and keep it until done (a box that several processes "
        "receive from is created with Mailbox.create(T, many_receivers=True), and opened "
        "with Mailbox.open(res_id, T, receive=True))"
    )
    assert seen == [
        "ContextError: " + rule.format("receive from it"),
        "ContextError: " + rule.format("reclaim its slots"),
        "returned Note(n=0)",
        "returned Note(n=1)",
        "returned Note(n=2)",
        "TimeoutError",
    ]
