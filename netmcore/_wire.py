"""The master/worker protocol: messages and the socket they travel on.

::

      worker X                       master                        spare S
      ────────                       ──────                        ───────
      start(fp, arg) ── StartReq ──▶ new pid n, pop spare ─ Assign ─▶ run f(arg)
                     ◀── Started ──┘ fork a new spare when idle           │
      join(jp, n) ──── JoinReq ───▶ waits for n ...                       │
                                     ◀──────────────── Finished(outcome) ─┘
                     ◀── Joined ───┘ (outcome handed over once, then forgotten)

Every process has one SOCK_SEQPACKET socketpair to the master, made before the
fork, so nobody else can connect to it. SEQPACKET keeps message boundaries:
one ``send`` is one message, and no framing is needed. Each message is a
frozen, tagged msgspec Struct of the union :data:`Message`, encoded as msgpack.
Values larger than ``INLINE_MAX`` travel as :class:`~._payload.ShmRef`.
"""

from __future__ import annotations

import socket
import threading

import msgspec

from ._errors import MasterGone
from ._payload import Payload

# Large enough for the largest inline payload plus its message.
RECV_SIZE = 256 * 1024


class _Msg(msgspec.Struct, frozen=True, tag=True, array_like=True):
    pass


class WireEncap(msgspec.Struct, frozen=True, array_like=True):
    type_name: str
    fingerprint: str
    payload: Payload


# Outcomes, as stored by the master until a process is joined.
class Returned(_Msg, frozen=True):
    value: WireEncap


class Raised(_Msg, frozen=True):
    type_name: str
    message: str
    traceback: str


class Invalid(_Msg, frozen=True):
    path: str
    message: str


class Ended(_Msg, frozen=True):
    """The process ended without delivering an outcome."""

    exitcode: int | None
    signal: int | None


WireOutcome = Returned | Raised | Invalid | Ended


# Worker -> master requests, each answered by one reply.
class StartReq(_Msg, frozen=True):
    fork_point: int
    arg: WireEncap
    inherit: list[int] | None


class JoinReq(_Msg, frozen=True):
    join_point: int
    pid: int
    wait: bool


class ReleaseReq(_Msg, frozen=True):
    res_id: int


# Worker -> master, unanswered: the worker's own outcome, just before it exits.
class Finished(_Msg, frozen=True):
    outcome: WireOutcome


# Master -> worker.
class Assign(_Msg, frozen=True):
    pid: int
    fork_point: int
    arg: WireEncap
    inherit: list[int] | None


class Started(_Msg, frozen=True):
    pid: int


class Joined(_Msg, frozen=True):
    outcome: WireOutcome | None


class Done(_Msg, frozen=True):
    pass


class Failed(_Msg, frozen=True):
    error: str
    message: str
    res_id: int | None = None


# Admin client -> master on the control socket, and the reply.
class StatusReq(_Msg, frozen=True):
    pass


class ProcessInfo(msgspec.Struct, frozen=True):
    id: int
    os_pid: int
    type: str
    state: str
    seconds: float


class Status(_Msg, frozen=True):
    master_pid: int
    processes: list[ProcessInfo]


Message = (
    StartReq
    | JoinReq
    | ReleaseReq
    | Finished
    | Assign
    | Started
    | Joined
    | Done
    | Failed
    | StatusReq
    | Status
)

encoder = msgspec.msgpack.Encoder()
decoder: msgspec.msgpack.Decoder[Message] = msgspec.msgpack.Decoder(Message)


class Link:
    """A blocking connection to the master, used by a worker or an admin client.

    Requests from several threads of one worker are serialized by a lock: each
    thread sends its request and reads its own reply before the next starts.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._buf = bytearray(RECV_SIZE)
        self._lock = threading.Lock()

    def send(self, msg: Message) -> None:
        try:
            self.sock.send(encoder.encode(msg))
        except OSError as exc:
            raise MasterGone("the netmcore master is gone") from exc

    def recv(self) -> Message | None:
        """The next message, or None at end of stream."""
        try:
            n = self.sock.recv_into(self._buf)
        except OSError as exc:
            raise MasterGone("the netmcore master is gone") from exc
        if n == 0:
            return None
        return decoder.decode(memoryview(self._buf)[:n])

    def request(self, msg: Message) -> Message:
        with self._lock:
            self.send(msg)
            reply = self.recv()
        if reply is None:
            raise MasterGone("the netmcore master closed the connection")
        return reply

    def close(self) -> None:
        self.sock.close()
