"""The master/worker protocol: messages and the socket they travel on.

::

      worker X                       master                        spare S
      ────────                       ──────                        ───────
      start(fp, arg) ── StartReq ──▶ new pid n, pop spare ─ Assign ─▶ run f(arg)
                     ◀── Started ──┘ fork spares when idle                │
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

import _thread
import errno
import itertools
import mmap
import os
import select
import socket
import threading
from collections.abc import Callable
from typing import NoReturn

import msgspec

from . import _outcome, _payload, _posix
from ._encap import Encap, clipped_name
from ._errors import ContextError, MasterGone, NetmcoreError
from ._payload import Payload
from ._pthread import this_pid

# Large enough for the largest inline payload plus its message.
RECV_SIZE = 256 * 1024
# The largest message one send on a link takes: a SEQPACKET message must fit
# the socket's send buffer (net.core.wmem_default, 208 KiB by default). Every
# message stays well below it: large values travel as ShmRef, texts are clipped.
MESSAGE_MAX = 200 * 1024
# The most process ids one message names (a WatchReq, a Ready): 5 bytes
# each at most, well within MESSAGE_MAX.
PIDS_MAX = 20_000
# Seconds a thread waiting for another's read of the link looks again at
# most: see Link.wait_reply.
WAIT_SLICE = 0.05


def recv_buffer() -> mmap.mmap:
    """A receive buffer of RECV_SIZE whose pages exist only once written: a
    bytearray would zero all 64 of them, a cost every forked worker paid."""
    return mmap.mmap(-1, RECV_SIZE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)


class _Msg(msgspec.Struct, frozen=True, tag=True, array_like=True):
    pass


class WireEncap(msgspec.Struct, frozen=True, array_like=True):
    type_name: str
    fingerprint: str
    payload: Payload

    @classmethod
    def of(cls, encap: Encap, payload: Payload) -> WireEncap:
        """``encap`` on the wire, its data sent as ``payload``. The type's
        name is clipped: only errors show it (the fingerprint is what is
        compared), and a long one (a Literal of many values) made a start
        or a result too large for a message."""
        return cls(clipped_name(encap.type_name), encap.fingerprint, payload)

    def encap(self) -> Encap:
        """The value as an Encap again, its data read where it lies (inline or shm)."""
        return Encap(self.type_name, self.fingerprint, (_payload.view(self.payload),))


# Outcomes, as stored by the master until a process is joined.
class Returned(_Msg, frozen=True):
    value: WireEncap


class Raised(_Msg, frozen=True):
    type_name: str
    message: str
    traceback: str
    classes: tuple[str, ...] = ()  # the exception's MRO, named (see _outcome.Raised)

    def outcome(self) -> _outcome.Raised:
        return _outcome.Raised(self.type_name, self.message, self.traceback, self.classes)


class Invalid(_Msg, frozen=True):
    path: str
    message: str

    def outcome(self) -> _outcome.InvalidResult:
        return _outcome.InvalidResult(self.path, self.message)


class Ended(_Msg, frozen=True):
    """The process ended without delivering an outcome."""

    exitcode: int | None
    signal: int | None


WireOutcome = Returned | Raised | Invalid | Ended


# Worker -> master requests, each answered by one reply. A request's ``req`` id
# comes back in its reply, so that several threads can share one link.
class StartReq(_Msg, frozen=True):
    fork_point: int
    arg: WireEncap
    inherit: list[int] | None
    watch: int = 0  # the watch of this link the process joins (see WatchReq); 0: none
    req: int = 0


class JoinReq(_Msg, frozen=True):
    join_point: int
    pid: int
    wait: bool
    # CLOCK_MONOTONIC time (one clock for every process) at which a join that
    # still waits is answered Failed("TimeoutError"), and not used up.
    deadline: float | None = None
    req: int = 0


class JoinCancel(_Msg, frozen=True):
    """Withdraw the waiting JoinReq or WaitReq ``rid`` of this link (its
    caller was interrupted). ``pid``: the process the JoinReq waits for,
    where the master finds its waiter (-1 for a WaitReq)."""

    rid: int
    pid: int = -1
    req: int = 0


class WatchReq(_Msg, frozen=True):
    """Processes ``pids`` (started through ``join_point``; None: of any
    type, netmcore.as_completed's): answered Ready with those that have
    ended (one gone from the table, joined by another caller, counts, and
    so does one whose join point was released). With ``watch`` 0, each is
    first looked up as a join would look it up (None: as a join through its
    own type's), for the same errors; else the others join the watch
    ``watch`` of this link (made by its first request, of the type of
    ``join_point``, or of any), whose WaitReq tells when they end (see
    _watches). Nothing is joined."""

    join_point: int | None
    pids: list[int]
    watch: int = 0
    req: int = 0


class WaitReq(_Msg, frozen=True):
    """Wait until a process of the watch ``watch`` of this link has ended:
    answered Ready with every one that has since the last answer (with none
    if none is left to end). It waits until ``deadline`` at most, as a
    JoinReq does, and JoinCancel withdraws it. ``close``: the watch goes,
    answered Done; with ``forget`` too, nobody will join the processes that
    were started into it (StartReq.watch) and not yet joined: the outcome of
    each is dropped, now or as it comes."""

    watch: int
    deadline: float | None = None
    close: bool = False
    forget: bool = False
    req: int = 0


class EndedReq(_Msg, frozen=True):
    """Which of processes ``pids`` (of any types) have ended: answered Ready
    with those (one joined already counts). For a receiver that waits only
    while its senders live (``Mailbox.receive(while_alive=...)``)."""

    pids: list[int]
    req: int = 0


class ReleaseReq(_Msg, frozen=True):
    res_id: int
    req: int = 0


class HandOverReq(_Msg, frozen=True):
    res_id: int
    req: int = 0


class KillReq(_Msg, frozen=True):
    """Send signal ``signum`` to the OS process carrying process ``pid``."""

    pid: int
    signum: int
    req: int = 0


class ResGetReq(_Msg, frozen=True):
    res_id: int
    kinds: list[str]  # ResourceType values the caller accepts; empty: any
    mapped: bool  # the caller holds a mapping of it (preallocated memory)
    req: int = 0


class ResManageReq(_Msg, frozen=True):
    kind: str
    name: str
    req: int = 0


class ResCreateReq(_Msg, frozen=True):
    kind: str  # posix_shm, posix_sem or posix_shm_preallocated
    prefix: str
    size: int  # bytes, or a semaphore's initial value
    req: int = 0


class ResDestroyAllReq(_Msg, frozen=True):
    req: int = 0


class PluginReq(_Msg, frozen=True):
    service: str  # var, mutex, sem or mbox
    op: str
    name: str
    fingerprint: str = ""  # of the value type, for vars and boxes
    data: bytes | None = None
    num: int = 0
    flag: bool = False
    req: int = 0
    # When a request that waits times out: a time.monotonic() value, which is
    # the system-wide CLOCK_MONOTONIC, the same in every process. None: never.
    deadline: float | None = None
    # The value type's name (clipped: see _encap.clipped_name), beside its
    # fingerprint, so that the master's error for a mismatch names both types.
    type_name: str = ""
    # A shared variable's: the digest of the value ``data`` holds as it reads
    # back, and those of the value a compare_and_set expects (see
    # _plugins.SharedVar.compare_and_set): the master compares, never decodes.
    digest: bytes = b""
    expected: tuple[bytes, ...] = ()
    # A box's receive with while_alive (flag set): the processes it waits
    # only while one of them runs.
    pids: tuple[int, ...] = ()


# Worker -> master, unanswered: the worker's own outcome, just before it exits.
class Finished(_Msg, frozen=True):
    outcome: WireOutcome


class WaitingIn(_Msg, frozen=True):
    """Thread ``thread`` of the process has waited a while, with no timeout,
    for ``what`` in shared memory (room in a full box, a message): for the
    stall notice and status (see _client.tell_waiting). Unanswered. An empty
    ``what``: that wait has ended."""

    thread: int
    what: str


# Master -> worker.
class Assign(_Msg, frozen=True):
    pid: int
    fork_point: int
    arg: WireEncap
    inherit: list[int] | None


# To a spare of a batch forked while the master was quiet, once the batch is
# forked: rehearse an assignment (see _worker._warm_up), and take references
# to the objects of these process types (fork points), the last started.
class Rehearse(_Msg, frozen=True):
    types: list[int]


class Started(_Msg, frozen=True):
    pid: int
    req: int = 0


class Joined(_Msg, frozen=True):
    outcome: WireOutcome | None
    req: int = 0


class Ready(_Msg, frozen=True):
    """The answer to a WatchReq, a WaitReq or an EndedReq: processes that
    have ended."""

    pids: list[int]
    req: int = 0


class Signalled(_Msg, frozen=True):
    """The answer to a KillReq: whether the process got the signal (False: it
    has ended, or finished its function and only waits to exit)."""

    delivered: bool
    req: int = 0


class ResInfo(_Msg, frozen=True):
    res_id: int
    kind: str
    name: str
    size: int
    req: int = 0
    was_user: bool = False  # for a get: the caller used it before (its creator, say)


class PluginReply(_Msg, frozen=True):
    data: bytes | None
    num: int
    error: str = ""  # set when a queued request failed later
    req: int = 0


class Done(_Msg, frozen=True):
    req: int = 0


class Failed(_Msg, frozen=True):
    error: str
    message: str
    res_id: int | None = None
    req: int = 0


# Admin client -> master on the control socket, and the reply.
class StatusReq(_Msg, frozen=True):
    req: int = 0


class ProcessInfo(msgspec.Struct, frozen=True):
    id: int
    os_pid: int
    type: str
    state: str
    seconds: float
    # What it waits for in the master (a join, a plugin call): see Master.waits.
    waits: list[str] = []


class ResourceUse(msgspec.Struct, frozen=True):
    id: int
    kind: str
    name: str
    users: list[int]  # process ids; -1 is the master


class Status(_Msg, frozen=True):
    """One part of the master's state: ``more`` says another part follows
    (see :func:`status_parts`)."""

    master_pid: int
    processes: list[ProcessInfo]
    resources: list[ResourceUse] = []
    req: int = 0
    more: bool = False


Message = (
    PluginReq
    | PluginReply
    | ResGetReq
    | ResManageReq
    | ResCreateReq
    | ResDestroyAllReq
    | ResInfo
    | StartReq
    | JoinReq
    | JoinCancel
    | WatchReq
    | WaitReq
    | EndedReq
    | ReleaseReq
    | HandOverReq
    | KillReq
    | Finished
    | WaitingIn
    | Assign
    | Rehearse
    | Started
    | Joined
    | Ready
    | Signalled
    | Done
    | Failed
    | StatusReq
    | Status
)

encoder = msgspec.msgpack.Encoder()
decoder: msgspec.msgpack.Decoder[Message] = msgspec.msgpack.Decoder(Message)

# What one Status part's entries may take: half a message, the rest is room.
STATUS_PART_BYTES = MESSAGE_MAX // 2
# The users of one resource an entry lists (a process id takes up to 9 bytes).
STATUS_USERS_MAX = 4096


def status_parts(
    master_pid: int, processes: list[ProcessInfo], resources: list[ResourceUse]
) -> list[Status]:
    """The master's state in as many :class:`Status` messages as it takes
    for each to fit a link: a master with some thousands of processes had
    its whole answer refused. A resource with more than STATUS_USERS_MAX
    users comes as several entries in a row, with its id; join_status puts
    them back together."""
    entries: list[ProcessInfo | ResourceUse] = [*processes]
    for r in resources:
        entries.extend(
            msgspec.structs.replace(r, users=r.users[i : i + STATUS_USERS_MAX])
            for i in range(0, max(len(r.users), 1), STATUS_USERS_MAX)
        )
    parts: list[Status] = []
    procs: list[ProcessInfo] = []
    res: list[ResourceUse] = []
    size = 0
    for entry in entries:
        n = len(encoder.encode(entry))
        if size + n > STATUS_PART_BYTES and (procs or res):
            parts.append(Status(master_pid, procs, res, more=True))
            procs, res, size = [], [], 0
        if isinstance(entry, ProcessInfo):
            procs.append(entry)
        else:
            res.append(entry)
        size += n
    parts.append(Status(master_pid, procs, res))
    return parts


def join_status(parts: list[Status]) -> Status:
    """The one Status that :func:`status_parts` cut into ``parts``."""
    processes = [p for part in parts for p in part.processes]
    resources: list[ResourceUse] = []
    for r in (r for part in parts for r in part.resources):
        if resources and resources[-1].id == r.id:  # a resource's users, continued
            r = msgspec.structs.replace(r, users=resources[-1].users + r.users)
            resources[-1] = r
        else:
            resources.append(r)
    return Status(parts[0].master_pid, processes, resources)


def _gone(exc: OSError, fd: int) -> NoReturn:
    """Raise what an OSError out of a send or recv on the link on ``fd``
    means. One with no errno was raised by a signal handler while the call
    waited (a TimeoutError, say): it is the caller's, and goes on as it is
    (and is withdrawn, see Link.request). A descriptor that is no longer the
    socket was closed in this process. The socket's other errors are the
    master's end."""
    if exc.errno is None:
        raise exc
    if exc.errno in (errno.EBADF, errno.ENOTSOCK):
        raise ContextError(
            f"this process's link to the netmcore master (file descriptor {fd}) was "
            "closed in this process (its number may hold another file now), by "
            "os.closerange() or os.close() of descriptors it did not open, say: netmcore "
            "reaches the master through it. Close only the descriptors you opened"
        ) from exc
    raise MasterGone("the netmcore master is gone") from exc


# The kinds that are a step's own failure whatever they hold (an OSError is
# one only with an errno): see failed_of_its_own.
_OWN_KINDS = (
    NetmcoreError,
    msgspec.MsgspecError,
    BufferError,
    MemoryError,
    ArithmeticError,
    AssertionError,
    AttributeError,
    ImportError,
    LookupError,
    NameError,
    RuntimeError,
    TypeError,
    ValueError,
)
# Tries after which a step that fails every time is taken to fail of its
# own, whatever it raises: a loop must end. A try takes microseconds (a
# give-back, a destroy) or a round trip to the master, which answers at
# once (a withdrawal): a thousand signal handlers' exceptions in a row, each
# within a try, are a storm that nothing would get through either.
TRIES_MAX = 1000


def failed_of_its_own(exc: BaseException, tries: int) -> bool:
    """Whether ``exc``, out of the ``tries``-th try of a step that a loop
    repeats through signal handlers' exceptions (the withdrawal in
    :meth:`Link.request`, the give-backs of ``_resource_api``,
    ``_resources.destroy``), is the
    step's own failure, which a retry would meet again, so that it must go
    on at once; not an interrupt, to be held until the step is done. Its
    own are:

    - a NetmcoreError: netmcore's verdict (the master gone, though
      MasterGone is an OSError with no errno; a link closed underneath ...);
    - a BufferError: a mapping that views still hold, which a retry cannot
      close either;
    - an OSError with an errno: the system refused (an unlink's EPERM, say).
      A signal handler's TimeoutError has none (nor has any OSError raised
      as ``OSError(message)``: see ``_ipc._os_errors``);
    - what a bug, or a limit, raises: a msgspec error, a MemoryError, a
      RuntimeError (a RecursionError: a call made too deep in the stack),
      an ArithmeticError, AssertionError, AttributeError, ImportError,
      LookupError, NameError, TypeError or ValueError;
    - anything, at the TRIES_MAX-th try.

    Anything else (KeyboardInterrupt, SystemExit, a TimeoutError, a
    handler's own exception class) is taken for an interrupt. A handler
    that raises one of the kinds above ends the loop with it: the step is
    left undone, as when the exception comes before the loop."""
    if isinstance(exc, _OWN_KINDS) or tries >= TRIES_MAX:
        return True
    return isinstance(exc, OSError) and exc.errno is not None


class Asked:
    """One request on a link, as far as it went: ``sent`` once it has gone
    out to the master, ``reply`` once its reply is in. A caller that passes
    its own to :meth:`Link.request` sees both after an exception anywhere,
    even one that came after the reply was in (as ``request`` returned, say):
    what the master granted can then be given back."""

    __slots__ = ("reply", "sent")

    def __init__(self) -> None:
        self.sent = False
        self.reply: Message | None = None


def _refuse_a_handlers_request(msg: Message) -> NoReturn:
    """A request made by a signal handler that interrupted its thread as it
    read the link for every thread: its reply could only come through that
    read, which goes on once the handler has returned. Refused before it is
    sent (it used to wait for ever)."""
    raise ContextError(
        f"netmcore cannot make this call ({type(msg).__name__}) in a signal handler that "
        "interrupted its thread as it waited for the master's answer to another call (a "
        "join, a lock, ...): this one's answer could only come through that wait, which "
        "goes on once the handler returns. Make the call after the handler: set a flag "
        "in it, or raise, and make the call once the exception is caught"
    )


class Link:
    """A blocking connection to the master, used by a worker or an admin client.

    Several threads of one worker may share it: each request carries an id
    that its reply echoes. Whichever waiting thread finds nobody reading
    becomes the reader, and hands every reply to the thread that asked.
    """

    def __init__(self, sock: socket.socket, buf: mmap.mmap | None = None) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        # The socket's identity: a descriptor number closed by the program
        # (os.closerange) and taken again by a socket of its own passed a
        # send, which wrote a request into that socket and waited for ever.
        self._inode = os.fstat(self.fd).st_ino
        # The process that may use it: a child that one of its threads forks
        # shares the socket, and would read replies meant for this process.
        self.owner_pid = this_pid[0]
        self._buf = recv_buffer() if buf is None else buf
        # Reentrant: a signal handler that sends, run in a thread that waits
        # for room to send, sends its own message (whole: SEQPACKET) first.
        self._send_lock = threading.RLock()
        # Taken with ``with``, a C lock: a signal handler's exception cannot
        # come between its acquire and the block that lets it go, as it can
        # in threading.Condition's Python __enter__ (the lock stayed taken,
        # and the link's other threads waited for ever). Reentrant, as the
        # Condition's was: a handler that runs as its thread holds it takes
        # it too.
        self._lock = threading.RLock()
        # A lock each thread waiting for the reader to hand over waits on,
        # released (rung) to wake it: threading.Condition's wait is Python
        # too, with such windows.
        self._bells: list[_thread.LockType] = []
        self._reader: int | None = None  # the thread reading for all, if one is
        self._replies: dict[int, Asked] = {}
        self._ids = itertools.count(1)
        # Requests whose withdrawal an exception ended before it was done,
        # with their thread and their withdrawal (see request): the next
        # request of that thread finishes them.
        self._unfinished: dict[int, tuple[int, Callable[[int], None]]] = {}
        # The threads that run a withdrawal now: its own requests leave the
        # thread's other withdrawals be.
        self._withdrawing: set[int] = set()

    def send(self, msg: Message) -> None:
        """Send ``msg``. A request that :meth:`request` registered is marked
        sent (its :class:`Asked`) exactly when it has gone out."""
        asked = self._replies.get(getattr(msg, "req", 0))
        self._transmit(msg, Asked() if asked is None else asked)

    def _transmit(self, msg: Message, asked: Asked) -> None:
        """Send ``msg``, and set ``asked.sent`` exactly when it has gone out.

        The mark is set just before the send, not after: Python runs a signal
        handler as a C call returns, and its exception would come between the
        send and a mark made after it, the request sent but thought unsent.
        Nothing is called between the mark and the send, and a send that does
        not wait (MSG_DONTWAIT) either sends the whole message (SEQPACKET) or
        fails having sent nothing, without running a handler; a waiting send
        runs the handlers as it waits, and a handler's exception there would
        leave it unsent but marked. A full socket is waited for apart."""
        data = encoder.encode(msg)
        if len(data) > MESSAGE_MAX:  # the kernel's EMSGSIZE, said plainly
            raise ValueError(
                f"a {type(msg).__name__} message of {len(data):,} bytes is over the "
                f"{MESSAGE_MAX:,} a link to the master takes"
            )
        with self._send_lock:
            self._check_identity()
            while True:
                asked.sent = True
                try:
                    self.sock.send(data, socket.MSG_DONTWAIT)
                    return
                except OSError as exc:
                    if exc.errno is None:  # a signal handler's (a TimeoutError), once sent
                        raise
                    asked.sent = False
                    if exc.errno not in (errno.EAGAIN, errno.EWOULDBLOCK):
                        _gone(exc, self.fd)
                self._wait_for_room()

    def _check_identity(self) -> None:
        """Raise ContextError if the link's descriptor was closed in this
        process, even if its number now holds another file."""
        try:
            inode = os.fstat(self.fd).st_ino
        except OSError as exc:
            _gone(exc, self.fd)
        if inode != self._inode:
            _gone(OSError(errno.ENOTSOCK, "another file"), self.fd)

    def _wait_for_room(self) -> None:
        # poll, not select, which refuses a descriptor over 1023
        poller = select.poll()
        poller.register(self.fd, select.POLLOUT)
        poller.poll()

    def recv(self, flags: int = 0) -> Message | None:
        """The next message (left on the socket with MSG_PEEK), or None at end
        of stream."""
        n = self._receive(0, flags)
        if n == 0:
            return None
        return decoder.decode(memoryview(self._buf)[:n])

    def request(
        self,
        msg: Message,
        abandon: Callable[[int], None] | None = None,
        asked: Asked | None = None,
    ) -> Message:
        """Send ``msg`` (with a fresh request id) and wait for its reply.

        If an exception (a signal handler's, say) leaves the call once the
        request has gone out (and before its reply is in), ``abandon`` is
        called with the request id before it goes on: the request may be
        queued in the master, or its reply on its way, and ``abandon`` can
        withdraw it (:meth:`wait_reply` and :meth:`take` see its reply).
        One that comes before it went out leaves nothing to withdraw.
        ``asked``, if given, shows how far the request went (see
        :class:`Asked`), even to an exception after its reply was in.

        ``abandon`` must be safe to repeat: it is repeated until it is done
        (see :meth:`_withdraw`), through further exceptions of handlers
        (each held, the last raised after it, in place of the first). A
        failure of its own (see :func:`failed_of_its_own`) goes on at once.
        The request is noted as unfinished (in ``_unfinished``) as the
        exception comes, with no call in between, and its reply's slot is
        kept until the withdrawal is done: one that a further exception
        ends all the same (at the jump back of the loop that makes it again)
        is finished by the next request of this thread, or by its
        :meth:`finish_withdrawals`. Only by this thread:
        run by two at once, a plugin's withdrawal could give a grant back
        twice, and it is the thread that asked that takes a join's outcome.
        """
        me = threading.get_ident()
        if self._reader == me:
            _refuse_a_handlers_request(msg)
        if self._unfinished:
            self.finish_withdrawals()
        if asked is None:
            asked = Asked()
        rid = next(self._ids)
        try:
            # In the try: a handler's exception as the lock is let go left
            # the slot, which nothing took out.
            with self._lock:
                self._replies[rid] = asked
            try:
                self.send(msgspec.structs.replace(msg, req=rid))  # marks ``asked.sent``
                self.wait_reply(rid)
            except MasterGone:
                raise
            except BaseException:
                if asked.sent and abandon is not None:
                    # No call up to this store, nor from it to the loop's
                    # try: no handler runs in between. The withdrawal is done
                    # here, before the caller's exception goes on (which
                    # gives back what the reply granted: see
                    # _resource_api._local_or_remote); made again after an
                    # exception at the start of _withdraw.
                    self._unfinished[rid] = (me, abandon)
                    held: BaseException | None = None
                    while rid in self._unfinished:
                        try:
                            held = self._withdraw(rid) or held
                        except BaseException as exc:
                            if rid not in self._unfinished:  # its own failure: dropped
                                raise
                            held = exc
                    if held is not None:
                        raise held  # noqa: B904 (the later one: the first is its __context__)
                raise
        finally:
            with self._lock:
                if rid not in self._unfinished:
                    self._replies.pop(rid, None)
        reply = asked.reply
        assert reply is not None
        return reply

    def _withdraw(self, rid: int) -> BaseException | None:
        """Run the unfinished withdrawal of request ``rid`` (of this thread)
        until it is done, and return the last interrupt held meanwhile (None
        if none came).

        Each try runs with the thread's signals blocked (SIGINT and SIGTERM
        held: see _posix.deferred): a withdrawal is a round trip to the
        master, which a timer's handler cut short time and again. Their
        handlers run as the block ends (or as it begins, for one that came
        just before), and an exception there, once the step is done, is held
        too. A failure of its own drops the withdrawal and goes on; one that
        comes once it is done is dropped (only an interrupt is held)."""
        me = threading.get_ident()
        entry = self._unfinished.get(rid)
        if entry is None:  # done meanwhile (by a request of a handler's, in this thread)
            return None
        abandon = entry[1]
        held: BaseException | None = None
        tries = 0

        def step() -> None:  # (made here, no call: no handler runs)
            abandon(rid)
            self._unfinished.pop(rid, None)

        # Its own requests leave this thread's other withdrawals be.
        was = me in self._withdrawing
        try:
            self._withdrawing.add(me)
            while rid in self._unfinished:
                try:
                    _posix.with_signals_blocked(_posix.ASYNC_SIGNALS, step)
                except BaseException as exc:
                    tries += 1
                    if not failed_of_its_own(exc, tries):
                        held = exc
                    elif rid in self._unfinished:
                        self._unfinished.pop(rid, None)
                        raise
                else:  # (for 3.12: see test_backedges)
                    pass
        finally:
            if not was:
                self._withdrawing.discard(me)
        return held

    def finish_withdrawals(self) -> None:
        """Finish this thread's withdrawals that further exceptions ended
        (see :meth:`request`); an interrupt held meanwhile is raised after
        them. Not while this thread reads the link for all (in a signal
        handler that interrupted that read): their requests would be
        refused, and they wait for the next call. Nor from within one of
        them (its own requests, a handler's join)."""
        if not self._unfinished:  # the rule (every join asks): no call more
            return
        me = threading.get_ident()
        if self._reader == me or me in self._withdrawing:
            return
        held: BaseException | None = None
        for rid in [rid for rid, (thread, _) in list(self._unfinished.items()) if thread == me]:
            try:
                held = self._withdraw(rid) or held
            finally:
                with self._lock:
                    if rid not in self._unfinished:
                        self._replies.pop(rid, None)
        if held is not None:
            raise held

    def wait_reply(self, rid: int) -> Message:
        """Wait for the reply to request ``rid``, which has gone out and is
        still awaited (for ``abandon``, which runs while it is): safe to
        repeat, and at once once the reply is in.

        One waiting thread at a time reads, without the lock, and stores
        each reply for its request; the others wait on a bell of their own.
        The reader hands over after each message: it clears the flag before
        any call, then rings the bells. A signal handler's exception can
        still come as it rings them (or as a waiter hangs its bell), so a
        waiter also looks again every WAIT_SLICE seconds: a lost wake-up
        costs that much, never a wait for ever."""
        asked = self._replies[rid]
        # This call's, hung once at a time; made only once another thread
        # reads (a thread alone on its link, the usual case, reads itself).
        bell: _thread.LockType | None = None
        while asked.reply is None:
            reading = False
            try:
                with self._lock:
                    if asked.reply is not None:  # stored since the look above
                        break
                    if self._reader is None:
                        self._reader, reading = threading.get_ident(), True
                    else:
                        if bell is None:
                            bell = _thread.allocate_lock()
                        bell.acquire(blocking=False)  # taken: a wait on it lasts until rung
                        if bell not in self._bells:  # (still there after a wait that ran out)
                            self._bells.append(bell)
                if not reading:
                    assert bell is not None
                    bell.acquire(timeout=WAIT_SLICE)
                    continue
                self._read_one()
            finally:
                if reading:
                    self._reader = None
                    self._wake_waiters()
        reply: Message = asked.reply
        return reply

    def _wake_waiters(self) -> None:
        with self._lock:
            bells, self._bells = self._bells, []
        for bell in bells:
            # RuntimeError: rung already, by a ring that took it off a list
            # before, as its waiter hung it on this one (its wait ran out). A
            # handler's exception here leaves the bells after it unrung: their
            # waiters look again after WAIT_SLICE (see wait_reply).
            try:  # noqa: SIM105  # not suppress: its Python calls are more places for a handler
                bell.release()
            except RuntimeError:
                pass

    def reads_here(self) -> bool:
        """Whether this thread is the one reading the link for all (a
        request made now, by code that interrupted that read, would be
        refused: see request)."""
        return self._reader == threading.get_ident()

    def take(self, rid: int) -> Message | None:
        """The reply to request ``rid``, abandoned, if it has come (for ``abandon``)."""
        with self._lock:
            asked = self._replies.get(rid)
            return None if asked is None else asked.reply

    def _read_one(self) -> None:
        # Read by the one reader (see wait_reply), without the condition.
        #
        # Python runs a signal handler in the main thread between two calls,
        # and its exception (a timeout, say) is the caller's. So the reply is
        # peeked at, stored, and only then taken off the socket: an exception
        # at any point loses no reply. At worst one is read twice, and its
        # second copy, finding its request answered (or gone), is dropped.
        reply = self.recv(socket.MSG_PEEK)
        if reply is None:
            raise MasterGone("the netmcore master closed the connection")
        asked = self._replies.get(getattr(reply, "req", 0))
        if asked is not None and asked.reply is None:
            asked.reply = reply
        self._take_off()

    def _take_off(self) -> None:
        """Take the next message off the socket, unread (it was peeked at)."""
        self._receive(1)  # SEQPACKET: the rest of the message goes with it

    def _receive(self, nbytes: int, flags: int = 0) -> int:
        """recv_into the buffer (``nbytes`` of it, 0 for all)."""
        try:
            return self.sock.recv_into(self._buf, nbytes, flags)
        except OSError as exc:
            _gone(exc, self.fd)

    def close(self) -> None:
        self.sock.close()
