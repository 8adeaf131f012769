"""The link a worker shares among its threads: one of them reads for all.

A signal handler's exception (a Ctrl-C's, a timeout's) can come in the
reading thread anywhere, and never leaves another thread waiting for good.
The master here is a thread at the other end of a socket pair, which
answers with Done when the test says.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import sys
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any

import pytest
from interrupting import Interrupted, handler_raises
from scenario import SYSCALLS, WAIT, wait_until, wait_until_main_thread_blocks

from netmcore import _wire
from netmcore._wire import Done, Link, Message, ReleaseReq, decoder, encoder


class FakeMaster:
    """Takes requests on its end of a socket pair; answers them with Done
    when told to."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.asked: list[int] = []  # the request ids, in order
        self.thread = threading.Thread(target=self._take, daemon=True)
        self.thread.start()

    def _take(self) -> None:
        with contextlib.suppress(OSError):  # the test's end closed
            while data := self.sock.recv(65536):
                msg: Any = decoder.decode(data)
                self.asked.append(msg.req)

    def answer_all(self) -> None:
        for req in self.asked:
            self.sock.send(encoder.encode(Done(req=req)))


@pytest.fixture
def link_and_master() -> Iterator[tuple[Link, FakeMaster]]:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    master = FakeMaster(theirs)
    try:
        yield Link(ours), master
    finally:
        ours.close()
        master.thread.join(WAIT)
        theirs.close()


@pytest.mark.skipif(SYSCALLS is None, reason="system call numbers known for x86_64 and aarch64")
def test_a_waiter_gets_its_reply_when_the_readers_wake_up_is_interrupted(
    link_and_master: tuple[Link, FakeMaster],
) -> None:
    """The main thread reads for both; as it wakes the other thread, whose
    reply is on the socket, a handler raises. Before, the other thread
    waited for a wake-up that never came, for good."""
    link, master = link_and_master
    replies: list[Message] = []
    other = threading.Thread(
        target=lambda: replies.append(link.request(ReleaseReq(2))), daemon=True
    )
    fired = False

    def on_call(frame: FrameType, event: str, _arg: object) -> None:
        nonlocal fired
        if event != "call" or fired:
            return
        if frame.f_code is Link._wake_waiters.__code__:
            fired = True  # its handler runs as the wake-up starts: no thread is woken
            signal.raise_signal(signal.SIGINT)

    def when_main_reads() -> None:
        # The main thread reads (blocked for its reply): the other thread's
        # request makes it wait for the main thread's read. Then both answers.
        wait_until_main_thread_blocks(lambda call: call[0] == SYSCALLS["recvfrom"])
        other.start()
        wait_until(lambda: len(master.asked) == 2, "the other thread's request")
        master.answer_all()

    starter = threading.Thread(target=when_main_reads, daemon=True)
    starter.start()
    with handler_raises(signal.SIGINT):
        sys.setprofile(on_call)
        try:
            with pytest.raises(Interrupted):
                link.request(ReleaseReq(1))
        finally:
            sys.setprofile(None)
    starter.join(WAIT)
    other.join(WAIT)
    assert fired
    assert not other.is_alive(), "the other thread still waits for its reply"
    assert replies == [Done(req=2)]


class _Bells(list[Any]):
    """The link's list of bells, counting what a waiter does with it."""

    looks = hangs = 0

    def __contains__(self, bell: object) -> bool:
        self.looks += 1
        return super().__contains__(bell)

    def append(self, bell: Any) -> None:
        self.hangs += 1
        super().append(bell)


def test_a_waiter_hangs_one_bell_however_often_its_wait_runs_out(
    link_and_master: tuple[Link, FakeMaster], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A waiter whose wait ran out hung a new bell each time it looked again
    (20 a second, for as long as the reader was blocked), all rung at once
    at the end."""
    link, master = link_and_master
    monkeypatch.setattr(_wire, "WAIT_SLICE", 0.001)
    bells = link._bells = _Bells()
    reader = threading.Thread(target=lambda: link.request(ReleaseReq(1)), daemon=True)
    reader.start()
    wait_until(lambda: link._reader is not None, "the first request's thread to read")
    waiter = threading.Thread(target=lambda: link.request(ReleaseReq(2)), daemon=True)
    waiter.start()
    wait_until(lambda: max(bells.looks, bells.hangs) >= 5, "the waiter's waits to run out")
    assert bells.hangs == 1
    master.answer_all()
    reader.join(WAIT)
    waiter.join(WAIT)
    assert not reader.is_alive() and not waiter.is_alive()


@pytest.mark.skipif(SYSCALLS is None, reason="system call numbers known for x86_64 and aarch64")
def test_a_handlers_request_in_the_reading_thread_is_refused_not_left_waiting(
    link_and_master: tuple[Link, FakeMaster],
) -> None:
    """A signal handler that makes a request while its thread reads the link
    for the reply of another: that reply, and the handler's, could only come
    through the read the handler interrupted. The request waited for ever;
    it is refused, before it is sent, and the interrupted call goes on."""
    link, master = link_and_master
    got: list[str] = []

    def handler(_signum: int, _frame: FrameType | None) -> None:
        try:
            got.append(f"answered {link.request(ReleaseReq(2))}")
        except _wire.ContextError as exc:
            got.append(f"ContextError: {exc}")

    def when_main_reads() -> None:
        wait_until_main_thread_blocks(lambda call: call[0] == SYSCALLS["recvfrom"])
        signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGUSR1)
        wait_until(lambda: bool(got), "the handler's request to end")
        master.answer_all()

    previous = signal.signal(signal.SIGUSR1, handler)
    try:
        starter = threading.Thread(target=when_main_reads, daemon=True)
        starter.start()
        assert link.request(ReleaseReq(1)) == Done(req=1)
        starter.join(WAIT)
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert len(got) == 1 and got[0].startswith("ContextError: netmcore cannot make"), got
    assert "in a signal handler" in got[0] and "after the handler" in got[0]
    assert master.asked == [1]  # nothing of the handler's was sent


@pytest.mark.skipif(SYSCALLS is None, reason="system call numbers known for x86_64 and aarch64")
def test_a_handler_sends_while_its_thread_waits_for_room_to_send() -> None:
    """A signal handler that sends as its thread waits for room on a full
    link: both messages go, whole, the handler's first. Its thread held the
    send lock: the handler waited for it, for ever."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    filler = encoder.encode(ReleaseReq(0))
    with ours, theirs:
        link = Link(ours)
        with contextlib.suppress(BlockingIOError):
            while True:  # nobody reads: fill the socket
                ours.send(filler, socket.MSG_DONTWAIT)
        sending: list[int] = []
        first: list[bytes] = []  # the first message after the fillers

        def handler(_signum: int, _frame: FrameType | None) -> None:
            sending.append(2)
            link.send(ReleaseReq(2))

        def interrupt_then_drain() -> None:
            in_poll = lambda call: call[0] == SYSCALLS["poll"]  # noqa: E731
            wait_until_main_thread_blocks(in_poll)
            signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGUSR1)
            wait_until(lambda: bool(sending), "the handler to send")
            wait_until_main_thread_blocks(in_poll)  # the handler's send waits for room
            while (data := theirs.recv(65536)) == filler:  # what the test filled it with
                pass
            first.append(data)

        previous = signal.signal(signal.SIGUSR1, handler)
        try:
            drainer = threading.Thread(target=interrupt_then_drain, daemon=True)
            drainer.start()
            link.send(ReleaseReq(1))
            drainer.join(WAIT)
        finally:
            signal.signal(signal.SIGUSR1, previous)
        assert not drainer.is_alive()
        assert first == [encoder.encode(ReleaseReq(2))]
        assert theirs.recv(65536) == encoder.encode(ReleaseReq(1))
