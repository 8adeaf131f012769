"""Typed handles on the plugins the master serves (see ``_plugin_host``).

A handle is a name plus, for values, their type: it can be made anywhere (at
module level, in a worker) and used in any worker; ``SharedVar.get`` also works
in the master, for example in ``extract_result``. Values are msgspec-encoded and
checked like process arguments, and the master refuses a value of another type
than the one the variable or box was created with.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, TypeVar, overload

from . import _context
from ._client import _error, _link
from ._encap import EncapType
from ._errors import (
    ArgumentTypeError,
    BrokenBarrierError,
    ContextError,
    PluginError,
    SendersEnded,
    receivers_ended,
)
from ._ids import ProcessId, senders_of
from ._master import Controller
from ._plugin_host import BROKEN, COUNT_MAX, ENDED, RECEIVERS_ENDED, TIMED_OUT
from ._pthread import check_timeout
from ._resources import require_int
from ._wire import Asked, Link, PluginReply, PluginReq, failed_of_its_own

if TYPE_CHECKING:
    from typing_extensions import TypeForm  # see EncapType.__init__

T = TypeVar("T")


def add_plugins(controller: Controller) -> None:
    """Attach the plugins to the master (call it from ``init_ctrl``).

    Attaching them twice does nothing.

    Raises
    ------
    ContextError
        After the run of ``controller`` has ended, or in a worker.
    """
    controller._running_master("add_plugins(controller)").attach_plugins()


def _call(
    service: str,
    op: str,
    name: str,
    *,
    typ: EncapType[Any] | None = None,
    data: bytes | None = None,
    digest: bytes = b"",
    expected: tuple[bytes, ...] = (),
    num: int = 0,
    flag: bool = False,
    senders: tuple[ProcessId[Any], ...] = (),
    waits: bool = False,
    timeout: float | None = None,
    what: str = "",
    finish: Callable[[PluginReply], None] | None = None,
) -> PluginReply:
    """Make request ``service``.``op`` on ``name`` (of values of type ``typ``):
    serve it in the master, or send it there; a call that ``waits`` in the
    master is withdrawn if an exception leaves its wait.

    With a ``timeout`` (checked already), the master times the call out if it
    would still wait then, and it raises TimeoutError naming ``what``.

    What the master granted a call that ``waits`` (a mutex, a count, a
    message) is given back if an exception comes once its reply is in,
    before the call returns, ``finish`` of the reply included (a message
    decoded, say): its caller never has it. (One that comes in the wait is
    the withdrawal's: see :func:`_withdrawal`.) The give-back is repeated
    through further interrupts, as the withdrawal is.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    fingerprint, type_name = ("", "") if typ is None else (typ.fingerprint, typ.clipped_name)
    req = PluginReq(
        service,
        op,
        name,
        fingerprint,
        data,
        num,
        flag,
        deadline=deadline,
        type_name=type_name,
        digest=digest,
        expected=expected,
        pids=tuple(pid.n for pid in senders),
    )
    ctx = _context.current
    if ctx.role == "master" and ctx.master is not None:
        _context.refuse_other_master_thread(f"{service}.{op}", "the plugins")
        host = ctx.master._plugins()
        answer = host.serve(req, None)
        assert answer is not None  # the master never waits: waiting ops raise there
        finishing = False
        try:
            checked = _checked(answer, timeout, what, senders)
            if finish is not None:
                finishing = True
                finish(checked)
            return checked
        except BaseException as first:
            # Given back in the master's table, once: made again after a
            # further exception inside it, it could give back twice.
            if waits and not (finishing and failed_of_its_own(first, 1)) and _granted(req, answer):
                host.serve(PluginReq(service, "undo", name, data=answer.data), None)
            raise
    if ctx.role != "worker":
        raise ContextError(f"{service}.{op}: plugins work inside netmcore.run()")
    link: Link = _link(f"{service}.{op}")
    asked, undo, withdrawn = Asked(), Asked(), [False]
    withdrawal = _withdrawal(link, req, undo, withdrawn) if waits else None
    finishing = False
    try:
        reply = _checked(link.request(req, withdrawal, asked), timeout, what, senders)
        if finish is not None:
            finishing = True
            finish(reply)
        _say_read(link, req, reply)
        return reply
    except BaseException as first:
        # Given back here, in this frame, in a loop (see Link.request), which
        # also makes every test: a further exception before it would lose it.
        # Not for a failure of ``finish``'s own (a message that does not
        # decode: put back, it would fail every receive after it).
        held: BaseException | None = None
        tries = 0
        while True:
            try:
                got = asked.reply
                if (
                    waits
                    and not (finishing and failed_of_its_own(first, 1))
                    and not withdrawn[0]
                    and not undo.sent
                    and isinstance(got, PluginReply)
                    and _granted(req, got)
                ):
                    give_back = PluginReq(service, "undo", name, data=got.data, num=got.req)
                    link.request(give_back, asked=undo)
                elif finishing and failed_of_its_own(first, 1) and isinstance(got, PluginReply):
                    _say_read(link, req, got)  # a message that does not decode is gone
                break
            except BaseException as exc:
                tries += 1
                if failed_of_its_own(exc, tries):
                    raise
                held = exc
        if held is not None:
            raise held  # noqa: B904 (as in Link.request)
        raise


def _checked(
    answer: Any, timeout: float | None, what: str, senders: tuple[ProcessId[Any], ...]
) -> PluginReply:
    """``answer``, if it is a plugin's reply; else, or if it says so, the
    error (of a box's receive that waited while ``senders`` ran, too)."""
    if not isinstance(answer, PluginReply):
        raise _error(answer)
    if answer.error and answer.num == ENDED:  # a send's receivers, or a receive's senders
        if answer.error == RECEIVERS_ENDED:
            raise receivers_ended(what, senders)
        raise SendersEnded.of_box(what, senders)
    if answer.error and answer.num == TIMED_OUT:
        raise TimeoutError(
            f"{what} timed out after {timeout} s: the master dropped the call, which "
            "changed nothing (timeout=None waits without limit)"
        )
    if answer.error and answer.num == BROKEN:
        raise BrokenBarrierError(
            f"{what}: the barrier is broken, as {answer.error}; every wait raises this until "
            "a reset() (which the parties that go on with it make once they agree to)"
        )
    if answer.error:
        raise PluginError(answer.error)
    return answer


def _withdrawal(
    link: Link, req: PluginReq, undo: Asked, withdrawn: list[bool]
) -> Callable[[int], None]:
    """How to withdraw ``req`` if an exception leaves its wait, so that the
    master is as if it had never been made (``Link.request`` repeats it
    through further interrupts).

    ``cancel`` drops it if it is still queued. Replies on a link come in
    order, so once ``cancel`` is answered, any reply sent to it before has
    come too: a grant in it is given back by ``undo``, sent once whatever
    comes (a cancel again is harmless; an undo again would give back twice).
    ``withdrawn`` is set once it is done: nothing is left to give back.
    """

    def withdraw(rid: int) -> None:
        if not undo.sent:
            link.request(PluginReq(req.service, "cancel", req.name, num=rid))
            reply = link.take(rid)
            if isinstance(reply, PluginReply) and _granted(req, reply):
                link.request(
                    PluginReq(req.service, "undo", req.name, data=reply.data, num=rid), asked=undo
                )
        withdrawn[0] = True

    return withdraw


def _say_read(link: Link, req: PluginReq, reply: PluginReply) -> None:
    """Tell the master that the message ``reply`` brought a box's receive is
    read: it holds it until then, to put it back in the box if this process
    dies before (see PluginHost._hand). Unanswered, so it costs no wait."""
    if req.service == "mbox" and req.op == "receive" and _granted(req, reply):
        link.send(PluginReq("mbox", "read", req.name, num=reply.req))


def _granted(req: PluginReq, reply: PluginReply) -> bool:
    """Whether ``reply`` to ``req`` gave something that ``undo`` gives back."""
    if reply.error:
        return False
    if req.service == "mutex":
        return True
    if req.service == "sem":
        return reply.num >= 0  # decrement(wait=False) returns -1 when it took nothing
    # A message a send has put in the box may be received already: it stays.
    return req.service == "mbox" and req.op == "receive"


def _whole(value: object, what: str, low: int) -> int:
    value = require_int(value, what, f"a count, at least {low}", max(low, 1))
    if value < low:
        raise ValueError(f"{what} {value} is not valid: it must be at least {low}")
    if value > COUNT_MAX:
        raise ValueError(
            f"{what} {value} is not valid: it must be at most 2**63-1 (counts travel to "
            f"the master as 64-bit integers); pass a number from {low} to 2**63-1"
        )
    return value


def _check_name(name: object) -> str:
    if not isinstance(name, str) or not name:
        raise ValueError(f"a plugin name must be a non-empty str, not {name!r}")
    return name


# The encoded size of a value a plugin holds (a shared variable's value, a
# message in a box): with its request or reply it must fit one message on a
# link to the master (see _wire.MESSAGE_MAX), in either direction.
VALUE_MAX = 128 * 1024


def _encode_value(typ: EncapType[T], value: T, what: str, holder: str, hint: str) -> bytes:
    """``value`` encoded, refused before anything is sent if it is over
    VALUE_MAX; ``what`` names it, ``holder`` says what holds at most VALUE_MAX,
    and ``hint`` where to keep a reference to larger data."""
    data = typ.encode(value, what)
    if len(data) > VALUE_MAX:
        raise ValueError(
            f"the {what} is {len(data):,} bytes encoded, over the {VALUE_MAX:,} {holder} "
            "holds (it travels in one message to and from the master): share larger "
            f"data through a SharedArray or a shm resource, and {hint}"
        )
    return data


def _digest(data: bytes) -> bytes:
    """What the master compares for a shared variable's value: 256 bits of
    BLAKE2b, so that a compare_and_set's expected value, beside its new one,
    need not travel whole (two values of VALUE_MAX are over MESSAGE_MAX)."""
    return hashlib.blake2b(data, digest_size=32).digest()


class SharedVar(Generic[T]):
    """A named variable in the master holding a value of type ``T``.

    ::

        best = netmcore.SharedVar("best", float)
        best.create(0.0)        # False if it exists already
        best.set(3.5)
        best.get()              # 3.5 (None while it has no value)
        best.wait_for_value()   # waits until it has a value
        best.compare_and_set(3.5, 4.0)  # True: it held 3.5, and holds 4.0 now
        best.swap(5.0)          # 4.0, what it held
    """

    @overload
    def __init__(self, name: str, typ: type[T]) -> None: ...
    @overload
    def __init__(self, name: str, typ: TypeForm[T]) -> None: ...
    def __init__(self, name: str, typ: Any) -> None:
        self.name = _check_name(name)
        self.type: EncapType[T] = EncapType(typ)

    def __repr__(self) -> str:
        return f"SharedVar({self.name!r}, {self.type.name})"

    def create(self, value: T | None = None) -> bool:
        """Create it, with ``value`` if given; False if it existed (then unchanged)."""
        data, digest = (None, b"") if value is None else self._encode_held(value)
        return _call("var", "create", self.name, typ=self.type, data=data, digest=digest).num == 1

    def set(self, value: T) -> None:
        """Set its value, waking every process waiting for one."""
        data, digest = self._encode_held(value)
        _call("var", "set", self.name, typ=self.type, data=data, digest=digest)

    def compare_and_set(self, expected: T | None, new: T) -> bool:
        """Set it to ``new`` if it holds ``expected``, in one step in the
        master (nothing comes between the compare and the set); return
        whether it did. As :meth:`set`, it wakes every process waiting for a
        value. ``expected=None`` expects no value (what :meth:`get` returns
        None for), or None where ``T`` admits it.

        Values are compared by their msgspec encoding, not by ``==``:
        ``expected`` matches if it encodes, as given or read back as ``T``,
        to the bytes that the value held encodes to read back (as
        :meth:`get` returns it). So a value that :meth:`get` returned
        matches for as long as it is held, and an int matches the equal
        float in a ``float`` variable; but a dict matches only with its
        items in the same order, and a set only in the order it encodes in
        (take it from :meth:`get`); ``0.0`` does not match ``-0.0``, and a
        NaN matches a NaN. (The master compares 256-bit BLAKE2b digests of
        those bytes: the expected value does not travel whole.)

        A read-modify-write that loses no update, whatever other processes
        do meanwhile (a :meth:`get` then a :meth:`set` loses theirs)::

            count = netmcore.SharedVar("count", int)
            while True:
                old = count.get()  # None: it has no value yet
                if count.compare_and_set(old, (old or 0) + 1):
                    break

        Raises
        ------
        ValueError
            If ``new`` or ``expected`` is over ``VALUE_MAX`` (128 KiB)
            encoded; nothing was sent.
        ArgumentTypeError
            If ``new`` or ``expected`` is not a ``T``; nothing was sent.
        PluginError
            If it does not exist.
        EncapTypeMismatch
            If it holds values of another type than this handle's.
        """
        data, digest = self._encode_held(new, "new value")
        if expected is None:
            no_value, digests = True, self._digests_of_none()
        else:
            no_value, digests = False, self._digests(self._encode(expected, "expected value"))
        reply = _call(
            "var",
            "cas",
            self.name,
            typ=self.type,
            data=data,
            digest=digest,
            expected=digests,
            flag=no_value,
        )
        return reply.num == 1

    def swap(self, new: T) -> T | None:
        """Set it to ``new`` and return the value it held (None if it had
        none), in one step in the master. As :meth:`set`, it wakes every
        process waiting for a value.

        Raises
        ------
        ValueError
            If ``new`` is over ``VALUE_MAX`` (128 KiB) encoded; nothing was sent.
        ArgumentTypeError
            If ``new`` is not a ``T``; nothing was sent.
        PluginError
            If it does not exist.
        EncapTypeMismatch
            If it holds values of another type than this handle's.
        """
        data, digest = self._encode_held(new, "new value")
        reply = _call("var", "swap", self.name, typ=self.type, data=data, digest=digest)
        return None if reply.data is None else self.type.decode(reply.data)

    def get(self) -> T | None:
        """Its value, or None while it has none."""
        reply = _call("var", "get", self.name, typ=self.type)
        return None if reply.data is None else self.type.decode(reply.data)

    def wait_for_value(self, timeout: float | None = None) -> T:
        """Its value, waiting until it has one, at most ``timeout`` seconds
        (None or ``math.inf``: no limit). A variable not created yet is
        waited for too: a worker may wait for what a peer creates and sets.

        Raises
        ------
        TimeoutError
            If it has no value by then (or does not exist).
        PluginError
            If it is deleted as this call waits (before it was created, too).
        EncapTypeMismatch
            If it holds values of another type than this handle's, or is
            created with another type as this call waits.
        ContextError
            In the master's own code, if it has no value: nothing could set
            it while the master waits.
        """
        reply = _call(
            "var",
            "wait",
            self.name,
            typ=self.type,
            waits=True,
            timeout=check_timeout(timeout),
            what=f"{self!r}.wait_for_value()",
        )
        assert reply.data is not None
        return self.type.decode(reply.data)

    def delete(self) -> bool:
        """Delete it; False if it did not exist. Waiters get a PluginError."""
        return _call("var", "delete", self.name, typ=self.type).num == 1

    def _encode(self, value: T, what: str = "value") -> bytes:
        return _encode_value(
            self.type,
            value,
            f"{what} of shared variable {self.name!r}",
            "a shared variable",
            "keep its name in the variable",
        )

    def _encode_held(self, value: T, what: str = "value") -> tuple[bytes, bytes]:
        """``value`` encoded, and the digest that a compare_and_set matches
        it by: of its bytes read back, as a value that get() returned
        encodes (a set's items may come in another order, say). ``what``
        names it in an error: "new value" beside an expected one."""
        data = self._encode(value, what)
        return data, _digest(self.type.reencode(data))

    def _digests(self, data: bytes) -> tuple[bytes, ...]:
        """The digests an expected value encoded as ``data`` matches by: of
        its bytes as given (a value get() returned) and read back (an int
        given for a float)."""
        return tuple(dict.fromkeys((_digest(data), _digest(self.type.reencode(data)))))

    def _digests_of_none(self) -> tuple[bytes, ...]:
        """Those of None if ``T`` admits it (a held None matches it too), else none."""
        try:
            data = self.type.encode(None)  # type: ignore[arg-type]  # (T may admit None)
        except ArgumentTypeError:
            return ()
        return self._digests(data)


class PluginMutex:
    """A named mutex served by the master (upstream's Netplex_mutex).

    It is released automatically when its holder dies. Unlocking it from a
    process that does not hold it raises :class:`PluginError`.
    """

    def __init__(self, name: str) -> None:
        self.name = _check_name(name)

    def __repr__(self) -> str:
        return f"PluginMutex({self.name!r})"

    def lock(self, timeout: float | None = None) -> None:
        """Lock it, waiting while another process holds it, at most
        ``timeout`` seconds (None or ``math.inf``: no limit; 0: a try).

        Raises
        ------
        TimeoutError
            If it is still held by then; this process does not hold it.
        PluginError
            If this process holds it already.
        ContextError
            In the master's own code, if another process holds it.
        """
        timeout = check_timeout(timeout)
        _call("mutex", "lock", self.name, waits=True, timeout=timeout, what=f"{self!r}.lock()")

    def unlock(self) -> None:
        _call("mutex", "unlock", self.name)

    def __enter__(self) -> PluginMutex:
        self.lock()
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.unlock()


class PluginSemaphore:
    """A named counting semaphore served by the master (upstream's
    Netplex_semaphore). A *protected* one undoes a dead process's net effect."""

    def __init__(self, name: str) -> None:
        self.name = _check_name(name)

    def __repr__(self) -> str:
        return f"PluginSemaphore({self.name!r})"

    def create(self, initial: int = 0, *, protected: bool = False) -> bool:
        """Create it; False if it existed (then unchanged)."""
        initial = _whole(initial, "initial", 0)
        return _call("sem", "create", self.name, num=initial, flag=protected).num == 1

    def increment(self) -> int:
        """Add one; return the new count."""
        return _call("sem", "increment", self.name).num

    def decrement(self, *, wait: bool = True, timeout: float | None = None) -> int:
        """Take one, waiting while the count is 0, at most ``timeout`` seconds
        (None or ``math.inf``: no limit); return the new count. With
        ``wait=False`` it returns -1 instead of waiting (and ``timeout`` does
        not apply).

        Raises
        ------
        TimeoutError
            If the count is still 0 by then; nothing was taken.
        ContextError
            In the master's own code, if it would wait.
        """
        timeout = check_timeout(timeout)
        what = f"{self!r}.decrement()"
        return _call(
            "sem", "decrement", self.name, flag=wait, waits=True, timeout=timeout, what=what
        ).num

    def get(self) -> int:
        return _call("sem", "get", self.name).num

    def destroy(self) -> bool:
        """Destroy it; False if it did not exist. Waiters get a PluginError."""
        return _call("sem", "destroy", self.name).num == 1


class Mbox(Generic[T]):
    """A named message box served by the master (upstream's Netplex_mbox).

    ``send`` waits while the box is full (``capacity`` messages, 1 by default);
    ``receive`` waits for a message. Creating a box that exists opens it, and
    the capacity it was created with holds.
    """

    @overload
    def __init__(self, name: str, typ: type[T], *, capacity: int = 1) -> None: ...
    @overload
    def __init__(self, name: str, typ: TypeForm[T], *, capacity: int = 1) -> None: ...
    def __init__(self, name: str, typ: Any, *, capacity: int = 1) -> None:
        self.capacity = _whole(capacity, "capacity", 1)
        self.name = _check_name(name)
        self.type: EncapType[T] = EncapType(typ)

    def __repr__(self) -> str:
        return f"Mbox({self.name!r}, {self.type.name})"

    def create(self) -> bool:
        """Create the box, or open it if it exists (never waits); True if created."""
        return _call("mbox", "create", self.name, typ=self.type, num=self.capacity).num == 1

    def send(
        self,
        value: T,
        timeout: float | None = None,
        *,
        while_alive: ProcessId[Any] | Iterable[ProcessId[Any]] | None = None,
    ) -> None:
        """Put ``value`` in the box, waiting while it is full, at most
        ``timeout`` seconds (None or ``math.inf``: no limit).

        With ``while_alive`` (a ProcessId, or several: the receivers), it
        waits only while one of those processes runs, as
        :meth:`Mailbox.send` does: once every one has ended, it raises
        BrokenPipeError. The master answers it as the last of them ends.

        Raises
        ------
        ValueError
            If ``value`` is over ``VALUE_MAX`` (128 KiB) encoded; nothing was sent.
        TimeoutError
            If the box is still full by then; the message is not in it.
        BrokenPipeError
            If the box is full and every process of ``while_alive`` has
            ended; the message is not in it.
        UnknownProcess
            For an id of ``while_alive`` that no start returned.
        TypeError
            If ``while_alive`` is not a ProcessId or an iterable of them.
        ContextError
            In the master's own code, if the box is full (unless every
            process of ``while_alive`` has ended).
        """
        timeout = check_timeout(timeout)
        receivers = None if while_alive is None else senders_of(while_alive)
        data = _encode_value(
            self.type,
            value,
            f"message for box {self.name!r}",
            "a message in a box",
            "send its name in the message",
        )
        what = f"{self!r}.send()"
        _call(
            "mbox",
            "send",
            self.name,
            typ=self.type,
            data=data,
            flag=receivers is not None,
            senders=receivers or (),
            waits=True,
            timeout=timeout,
            what=what,
        )

    def receive(
        self,
        timeout: float | None = None,
        *,
        while_alive: ProcessId[Any] | Iterable[ProcessId[Any]] | None = None,
    ) -> T:
        """Take the oldest message, waiting for one at most ``timeout``
        seconds (None or ``math.inf``: no limit).

        With ``while_alive`` (a ProcessId, or several), it waits only while
        one of those processes runs, as :meth:`Mailbox.receive` does: once
        every one has ended (returned, raised or died) and the box is empty,
        it raises SendersEnded. The master answers it as the last of them
        ends: the wait costs nothing meanwhile.

        The master holds a message it sent until the receive says it has it:
        one sent to a receiver that dies before (killed as it waited, say)
        goes back to the head of the box, for the next receive.

        Raises
        ------
        TimeoutError
            If no message came by then; none that comes later is taken.
        SendersEnded
            If the box is empty and every process of ``while_alive`` has
            ended (an ``EOFError`` too).
        UnknownProcess
            For an id of ``while_alive`` that no start returned.
        TypeError
            If ``while_alive`` is not a ProcessId or an iterable of them.
        ContextError
            In the master's own code, if the box is empty (unless every
            process of ``while_alive`` has ended).
        """
        timeout = check_timeout(timeout)
        senders = None if while_alive is None else senders_of(while_alive)
        got: list[T] = []  # decoded in the call: see _call
        _call(
            "mbox",
            "receive",
            self.name,
            typ=self.type,
            flag=senders is not None,
            senders=senders or (),
            waits=True,
            timeout=timeout,
            what=f"{self!r}.receive()",
            finish=lambda reply: got.append(self._decoded(reply)),
        )
        return got[0]

    def delete(self) -> bool:
        """Delete the box and the messages in it; False if it did not exist.
        Waiting senders and receivers get a PluginError. The master keeps
        each box until then (or until the run ends): a program that makes
        a box per task deletes each once it is done with it."""
        return _call("mbox", "delete", self.name, typ=self.type).num == 1

    def _decoded(self, reply: PluginReply) -> T:
        assert reply.data is not None
        return self.type.decode(reply.data)


class PluginBarrier:
    """A named barrier served by the master: ``threading.Barrier`` across
    processes. Each of ``parties`` processes that calls :meth:`wait` waits
    until all of them have, and then they all go on, round after round.

    Beyond threading's, a party that fails (it raises, or dies) breaks it:
    the others would wait for it for ever, and get a
    :class:`BrokenBarrierError` instead, which names it. A process becomes
    a party at its first ``create`` or ``wait`` (``abort`` and ``reset``
    make none): a worker that may fail before its first wait calls
    ``create()`` as it starts. A process that ends as a thread of it waits
    breaks it too.
    """

    def __init__(self, name: str, parties: int) -> None:
        self.name = _check_name(name)
        self.parties = _whole(parties, "parties", 1)

    def __repr__(self) -> str:
        return f"PluginBarrier({self.name!r}, {self.parties})"

    def create(self) -> bool:
        """Make it if need be (never waits), and make this process one of its
        parties; True if it was made now.

        Raises
        ------
        PluginError
            If it exists with another number of parties.
        """
        return _call("barrier", "create", self.name, num=self.parties).num == 1

    def wait(self, timeout: float | None = None) -> int:
        """Wait until all the parties have called ``wait``, at most
        ``timeout`` seconds (None or ``math.inf``: no limit); return this
        call's place among them, 0 to ``parties - 1`` in the order they
        came (as ``threading.Barrier.wait``). It makes the barrier if need be.

        Raises
        ------
        BrokenBarrierError
            If it is broken, or breaks as this call waits: a party failed,
            a wait timed out (this one included: as threading's, a timeout
            breaks it, since the others would wait for ever), or it was
            aborted or reset.
        PluginError
            If it exists with another number of parties, or is destroyed
            as this call waits.
        ContextError
            In the master's own code, if it would wait.
        """
        timeout = check_timeout(timeout)
        what = f"{self!r}.wait()"
        return _call(
            "barrier", "wait", self.name, num=self.parties, waits=True, timeout=timeout, what=what
        ).num

    def abort(self) -> None:
        """Break it: the parties waiting, and every later wait, get a
        :class:`BrokenBarrierError`, until a :meth:`reset`."""
        _call("barrier", "abort", self.name, num=self.parties)

    def reset(self) -> None:
        """Put it back to its first state, not broken, with nobody waiting:
        the parties waiting now get a :class:`BrokenBarrierError`."""
        _call("barrier", "reset", self.name, num=self.parties)

    def destroy(self) -> bool:
        """Destroy it; False if it did not exist. Waiters get a PluginError."""
        return _call("barrier", "destroy", self.name).num == 1
