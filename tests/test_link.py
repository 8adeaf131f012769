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
    wait_until(lambda: link._reading, "the first request's thread to read")
    waiter = threading.Thread(target=lambda: link.request(ReleaseReq(2)), daemon=True)
    waiter.start()
    wait_until(lambda: max(bells.looks, bells.hangs) >= 5, "the waiter's waits to run out")
    assert bells.hangs == 1
    master.answer_all()
    reader.join(WAIT)
    waiter.join(WAIT)
    assert not reader.is_alive() and not waiter.is_alive()
