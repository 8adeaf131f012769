"""The low-level calls (upstream ``Netmcore``), from the master or from a worker.

In a worker each call is a request to the master over the worker's link; in
the master it is a direct call into the loop's tables. Arguments are checked
here, in the caller, before anything is sent.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import threading
import time
from collections.abc import Iterable
from typing import Any, Literal

from . import _context, _payload, _posix
from ._encap import Encap
from ._errors import (
    REMOTE_ERRORS,
    ContextError,
    NetmcoreError,
    NoResource,
    NotInherited,
)
from ._ids import ProcessId, ResId
from ._master import current_master
from ._payload import ShmRef
from ._pthread import check_timeout, this_pid
from ._wire import (
    PIDS_MAX,
    Asked,
    EndedReq,
    Failed,
    JoinCancel,
    Joined,
    JoinReq,
    KillReq,
    Message,
    Ready,
    Returned,
    Signalled,
    Started,
    StartReq,
    WaitingIn,
    WaitReq,
    WatchReq,
    WireEncap,
    WireOutcome,
)

InheritRequest = Literal["all"] | Iterable[ResId]


def start(
    fork_point: ResId, arg: Encap, *, inherit_resources: InheritRequest = "all"
) -> ProcessId[Any]:
    """Start a process of the type ``fork_point`` with the argument ``arg``.

    Parameters
    ----------
    fork_point :
        From :func:`def_process`.
    arg :
        The argument, wrapped by an :class:`EncapType`.
    inherit_resources :
        ``"all"`` (the default) or the ids of the resources the new process
        inherits.

    Returns
    -------
    ProcessId
        The new process's id, returned at once.

    Raises
    ------
    NoResource
        If ``fork_point`` is not a (live) fork point.
    ContextError
        Outside ``run``/``startup``.
    ShuttingDown
        After the first process has ended.
    """
    return start_into(fork_point, arg, inherit_resources, 0)


def start_into(
    fork_point: ResId, arg: Encap, inherit_resources: InheritRequest, watch: int
) -> ProcessId[Any]:
    """:func:`start`, the process joining the watch ``watch`` of this
    worker's link (see _watches; 0: none)."""
    _check_res_id(fork_point, "fork_point")
    if not isinstance(arg, Encap):
        raise TypeError(
            f"arg must be an Encap, not {type(arg).__name__}: wrap it with an EncapType"
        )
    inherit = _inherit_list(inherit_resources)
    ctx = _context.current
    if ctx.role == "master":
        _context.refuse_other_master_thread("start()", "the process table")
        master = current_master("start")
        # A large argument goes through shm, as a worker's does: joined into
        # one inline value here, it was a second copy of it in the master.
        payload = _payload.pack(arg.parts, ctx.shm_prefix, ctx.process_id)
        try:
            return ProcessId(master.start(fork_point.n, WireEncap.of(arg, payload), inherit))
        except NetmcoreError:  # refused, or no process to run it: nobody will read it
            _payload.discard(payload)
            raise
    link = _link("start")
    if _unsent_closes:
        send_unsent_closes()
    payload = _payload.pack(arg.parts, ctx.shm_prefix, ctx.process_id)
    asked = Asked()
    try:
        request = StartReq(fork_point.n, WireEncap.of(arg, payload), inherit, watch)
        # Left by an exception once sent (as it waits, or as the reply is
        # in), the master starts the process with the argument, or discards
        # it if it cannot: it is this process's no more.
        reply = link.request(request, None, asked)
    except BaseException:
        if not asked.sent:
            _payload.discard(payload)
        raise
    if isinstance(reply, Started):
        return ProcessId(reply.pid)
    _payload.discard(payload)
    raise _error(reply)


def join(join_point: ResId, pid: ProcessId[Any], *, timeout: float | None = None) -> Encap | None:
    """Wait until process ``pid`` ends; return its result, or None if it has none.

    Only the first join of a process succeeds. Not allowed in the master, which
    never blocks: use :func:`join_nowait` there.

    With a ``timeout`` in seconds (None or ``math.inf``: no limit; 0: a try),
    a process that has not ended by then raises TimeoutError, and this join
    is not used up: the process can be joined again.
    """
    encap = encap_of(join_outcome(join_point, pid, wait=True, timeout=timeout))
    handed_over(pid.n)
    return encap


def join_nowait(join_point: ResId, pid: ProcessId[Any]) -> Encap | None:
    """Like :func:`join`, but return None at once if ``pid`` has not ended.

    It works in the master too (for example in ``extract_result``).
    """
    encap = encap_of(join_outcome(join_point, pid, wait=False))
    handed_over(pid.n)
    return encap


def join_outcome(
    join_point: ResId,
    pid: ProcessId[Any],
    *,
    wait: bool,
    timeout: float | None = None,
    call: str = "join",
) -> WireOutcome | None:
    """The raw outcome of ``pid``, or None when not waiting and it has not ended.
    A wait past ``timeout`` raises TimeoutError (see :func:`join`). ``call``:
    the public call that asked, which a refusal names.

    The outcome stays in ``_interrupted`` until the public call that asked
    hands it over: see there."""
    _check_res_id(join_point, "join_point")
    if not isinstance(pid, ProcessId):
        raise TypeError(f"pid must be a ProcessId, not {type(pid).__name__}")
    timeout = check_timeout(timeout)
    ctx = _context.current
    if ctx.role == "master":
        if wait and timeout != 0:
            # result() has no _nowait twin: its try is timeout=0 alone.
            instead = "" if call == "result" else f"{call}_nowait() there, or "
            raise ContextError(
                f"{call}() cannot wait in the master, which never blocks: use {instead}"
                f"{call}(pid, timeout=0), a try (in extract_result, the first process "
                "has ended)"
            )
        _context.refuse_other_master_thread(
            "join_nowait() (or join_outcome_nowait())", "the process table"
        )
        kept = _kept(pid.n, join_point.n)
        if kept is not None:
            return kept
        # Kept before the master's table uses it up (see _keep).
        outcome = current_master("join_nowait").join(
            join_point.n, pid.n, lambda out: _keep(join_point.n, pid.n, out)
        )
        if outcome is None and wait:
            raise _timed_out(pid, timeout)
        return outcome
    if wait:  # it blocks, so not in first_process, which runs in the master
        link = _link("join", f"{_IN_WORKER} (in the master, use join_nowait())")
    else:
        link = _link("join_nowait")
    # A withdrawal of this thread's interrupted join that a further exception
    # ended (see Link.request) keeps the outcome it finds: before the look.
    link.finish_withdrawals()
    kept = _kept(pid.n, join_point.n)
    if kept is not None:
        return kept  # (one kept for another join point: the master says it is joined)
    if _unsent_closes:
        send_unsent_closes()
    # The master times the wait out, and decides alone, in one step, whether
    # the outcome or the timeout answers it: an outcome is never lost to one.
    deadline = None if timeout is None else time.monotonic() + timeout
    asked, me = Asked(), threading.get_ident()
    try:
        reply = link.request(
            JoinReq(join_point.n, pid.n, wait, deadline),
            lambda rid: _withdraw_join(link, join_point.n, pid.n, rid),
            asked,
        )
        if isinstance(reply, Joined) and reply.outcome is not None:
            _keep(join_point.n, pid.n, reply.outcome)
    except BaseException:
        # In as the exception came (the master has forgotten the process):
        # kept, with no call before it is stored (a second exception there
        # lost it: __class__ is an attribute, isinstance a call).
        got = asked.reply
        if got.__class__ is Joined and got.outcome is not None:
            _interrupted.setdefault(pid.n, (me, join_point.n, got.outcome))
        raise
    if isinstance(reply, Joined):
        return reply.outcome
    if isinstance(reply, Failed) and reply.error == "TimeoutError":
        raise _timed_out(pid, timeout)
    raise _error(reply)


_watch_numbers = itertools.count(1)


# Closes of watches that could not be sent when asked for, as (number,
# forget): their iteration was closed while its thread read the link (the
# garbage collector finalized it there). Sent by the next start, join or
# watch: till then the master keeps the watch, and a map's processes'
# results (their shm objects too).
_unsent_closes: list[tuple[int, bool]] = []
os.register_at_fork(after_in_child=_unsent_closes.clear)


def send_unsent_closes() -> None:
    """Send the closes of _unsent_closes, unless this thread reads the link."""
    for number, forget in list(_unsent_closes):  # (one put back meanwhile waits for the next)
        if close_watch(number, forget=forget):
            with contextlib.suppress(ValueError):  # (a repeat, cut short, has taken it)
                _unsent_closes.remove((number, forget))


def new_watch() -> int:
    """A number for a new watch of this worker's link (see _watches)."""
    send_unsent_closes()
    return next(_watch_numbers)


def watch(what: str, join_point: ResId | None, pids: list[int], number: int = 0) -> list[int]:
    """Which of processes ``pids`` (at most PIDS_MAX) have ended.
    With ``number`` 0, an id that a join through ``join_point`` would
    refuse is refused, as it would be (None: a join through its own type's);
    else the others join the watch ``number``. Nothing is joined."""
    link = waiting_link(what)
    reply = link.request(WatchReq(None if join_point is None else join_point.n, pids, number))
    if isinstance(reply, Ready):
        return reply.pids
    raise _error(reply)


def wait_watch(what: str, number: int, deadline: float | None) -> list[int] | None:
    """Wait until processes of the watch ``number`` have ended, and return
    them (none if none is left); None past ``deadline`` (a time.monotonic()
    value)."""
    link = waiting_link(what)
    # Withdrawn if interrupted. A late answer is dropped: the exception ends
    # the iteration that waited, and the watch with it.
    reply = link.request(WaitReq(number, deadline), lambda rid: link.request(JoinCancel(rid)))
    if isinstance(reply, Ready):
        return reply.pids
    if isinstance(reply, Failed) and reply.error == "TimeoutError":
        return None
    raise _error(reply)


def close_watch(number: int, *, forget: bool = False) -> bool:
    """The watch ``number`` of this worker's link goes (with the master, if
    it is gone: nothing to close). With ``forget``, nobody will join the
    processes started into it and not yet joined (see _wire.WaitReq). Safe
    to repeat, as the callers' retry loops do (see _process._mapped).
    False if it could not be sent now, and waits in _unsent_closes."""
    with contextlib.suppress(NetmcoreError):
        link = _link("a watch's close")
        if link.reads_here():  # no request can be made now: see _unsent_closes
            if (number, forget) not in _unsent_closes:  # (a repeat, cut short)
                _unsent_closes.append((number, forget))
            return False
        link.request(WaitReq(number, close=True, forget=forget))
    return True


def _timed_out(pid: ProcessId[Any], timeout: float | None) -> TimeoutError:
    return TimeoutError(
        f"join of process {pid.n} timed out after {timeout} s: it has not ended. "
        "This join is not used up: join it again to wait on (timeout=None waits "
        "without limit)"
    )


# Outcomes that reached a join of this process but not, yet, its caller, by
# process id, with the thread and the join point that asked. A join puts
# its outcome here as it comes (or a withdrawal, one that came after an
# exception), and the public call that asked takes it off as it returns, in
# its own frame, after its last call: an exception before (a signal
# handler's) leaves it for the next join of that process in that thread,
# which gets it as the interrupted one would have. The master counts it as
# joined. A result's shm object is neither reused nor unlinked meanwhile
# (see _payload.kept_elsewhere): read again, it holds the same bytes.
_interrupted: dict[int, tuple[int, int, WireOutcome]] = {}
# A new process starts with none: its parent's joins are not its own. (A C
# call: it runs in every fork of the program.)
os.register_at_fork(after_in_child=_interrupted.clear)


def _keep(join_point: int, n: int, outcome: WireOutcome) -> None:
    """Keep ``outcome`` of process ``n`` until its caller has it (see
    _interrupted): one store, the last thing it does."""
    _interrupted[n] = (threading.get_ident(), join_point, outcome)


def _kept(n: int, join_point: int) -> WireOutcome | None:
    """The outcome of process ``n`` kept for a join of this thread through
    ``join_point``, if there is one. Another thread's is not this join's:
    it is in the hands of a join of that thread (or was left to its next)."""
    kept = _interrupted.get(n)
    if kept is None or kept[0] != threading.get_ident() or kept[1] != join_point:
        return None
    return kept[2]


def handed_over(n: int) -> None:
    """The caller of a join has the outcome of process ``n``: its kept copy
    goes. Called last, as the public call returns: an exception at its
    start (as a function starts, Python runs handlers) comes before it takes
    anything; after the deletion it makes no call."""
    kept = _interrupted.get(n)
    if kept is not None and kept[0] == threading.get_ident():
        del _interrupted[n]


def let_go(n: int) -> None:
    """Drop the outcome of process ``n`` kept for this thread (see
    _interrupted), nobody to take it: with the shm object of its result,
    unless this process has mapped it (then it is this one's to reuse)."""
    kept = _interrupted.get(n)
    if kept is None or kept[0] != threading.get_ident():
        return
    del _interrupted[n]
    payload = kept[2].value.payload if isinstance(kept[2], Returned) else None
    if isinstance(payload, ShmRef) and not _payload.is_received(payload.name):
        _payload.discard(payload)


def _kept_names() -> set[str]:
    """The shm objects of the results kept (see _payload.kept_elsewhere)."""
    return {
        kept[2].value.payload.name
        for kept in tuple(_interrupted.values())
        if isinstance(kept[2], Returned) and isinstance(kept[2].value.payload, ShmRef)
    }


_payload.kept_elsewhere = _kept_names


def _withdraw_join(link: Any, join_point: int, n: int, rid: int) -> None:
    """Withdraw the join ``rid`` of process ``n`` (waiting or not), which an
    exception (a signal handler's) has left, so that its outcome is not lost.

    JoinCancel drops the waiter in the master if it still waits. Replies on a
    link come in order, so once JoinCancel is answered, an outcome sent to the
    join before it has come too: it is kept for the next join here. Safe to
    repeat, as ``Link.request`` does through a second interrupt (held, then
    raised), or later, when a further one ended it.
    """
    link.request(JoinCancel(rid, n))
    late = link.take(rid)
    if isinstance(late, Joined) and late.outcome is not None:  # (None: it had not ended)
        _keep(join_point, n, late.outcome)


def kill(pid: ProcessId[Any], signum: int = signal.SIGKILL) -> bool:
    """Send the signal ``signum`` to the OS process that carries process ``pid``.

    The master sends it through the pidfd it tracks the process by, never by
    OS pid: a process that has ended cannot be confused with another program
    that got its OS pid since. A process killed this way ends as any killed
    process does: its join gives None, the master logs the cause, and
    ``join_outcome`` gives ``Crashed(signal=signum)``, unless the process
    delivered its result just before the signal (the result then stands).
    It does not count as a join.

    Parameters
    ----------
    pid :
        The id that ``start`` returned.
    signum :
        A signal number (``signal.SIGKILL`` by default, ``signal.SIGTERM``,
        ``signal.SIGRTMIN + 2``, ...). 0 sends nothing: it only asks, as
        ``os.kill(pid, 0)`` does, whether the process still runs its function.

    Returns
    -------
    bool
        True if the process got the signal (with 0: it still runs); False if
        it has ended already, or has finished its function and only waits to
        exit (its outcome is kept for its join).

    Raises
    ------
    TypeError
        If ``pid`` is not a ProcessId, or ``signum`` not an int.
    ValueError
        If ``signum`` is not a valid signal number.
    UnknownProcess
        If ``pid`` was never started, or has been joined already.
    ContextError
        Outside ``run``/``startup``, or in another thread of the master's
        process (the master's own code, such as ``extract_result``, may call it).
    """
    if not isinstance(pid, ProcessId):
        raise TypeError(
            f"pid must be a ProcessId, not {type(pid).__name__} ({pid!r}): pass the id "
            "that start() returned"
        )
    signum = _check_signal(signum)
    ctx = _context.current
    if ctx.role == "master":
        # The pidfds are the loop's too: it closes one when it reaps its child.
        _context.refuse_other_master_thread("netmcore.kill()", "the process table")
        return current_master("kill").kill(pid.n, signum)
    # Left while waiting (an interrupt), the request was sent: the signal goes.
    link = _link("kill", "from first_process, extract_result or " + _IN_WORKER)
    reply = link.request(KillReq(pid.n, signum))
    if isinstance(reply, Signalled):
        return reply.delivered
    raise _error(reply)


def ended(pids: list[int], what: str) -> set[int]:
    """Those of processes ``pids`` (of any types) that have ended, for
    ``what``: one joined already has. UnknownProcess for an id never
    handed out."""
    if _context.current.role == "master":
        _context.refuse_other_master_thread(what, "the process table")
        return set(current_master(what).which_ended(pids))
    link = _link(what, "from first_process, extract_result or " + _IN_WORKER)
    found: set[int] = set()
    for i in range(0, len(pids), PIDS_MAX):  # what one message takes
        reply = link.request(EndedReq(pids[i : i + PIDS_MAX]))
        if not isinstance(reply, Ready):
            raise _error(reply)
        found.update(reply.pids)
    return found


def tell_waiting(what: str) -> None:
    """Tell the master that this thread waits, with no timeout, for ``what``
    in shared memory (which it cannot see), or with "" that it no longer
    does: a process that waits there for ever, beside others that wait in
    the master, is then part of the stall its notice names (a producer that
    waits for room in a box its joiner has not read yet). Nothing outside a
    worker's own process (the master, a child the process forked)."""
    ctx = _context.current
    link = ctx.link
    if ctx.role != "worker" or link is None or this_pid[0] != link.owner_pid:
        return
    link.send(WaitingIn(threading.get_ident(), what))


def _check_signal(signum: object) -> int:
    """``signum`` as a plain int, if it is 0 or a signal this system has."""
    if isinstance(signum, bool) or not isinstance(signum, int):
        raise TypeError(
            f"signum must be an int, not {type(signum).__name__} ({signum!r}): "
            "pass a signal number such as signal.SIGKILL or signal.SIGTERM"
        )
    valid = _posix.VALID_SIGNALS
    if signum != 0 and signum not in valid:
        low, high = min(valid), max(valid)
        gaps = sorted(set(range(low, high + 1)) - valid)  # 32 and 33: glibc's own
        but = f", except {' and '.join(map(str, gaps))}" if gaps else ""
        raise ValueError(
            f"signum={signum} is not a valid signal: it must be {low} to {high}{but}, "
            "or 0 to only ask whether the process runs; pass e.g. signal.SIGKILL, "
            "signal.SIGTERM or signal.SIGRTMIN + 1"
        )
    return int(signum)


def encap_of(outcome: WireOutcome | None) -> Encap | None:
    return outcome.value.encap() if isinstance(outcome, Returned) else None


def self_process_id() -> ProcessId[Any]:
    """The id of the calling process. Raises ContextError outside a worker."""
    ctx = _context.current
    if ctx.role != "worker" or ctx.process_id is None:
        raise ContextError(
            f"self_process_id() is only meaningful in a worker; this is {ctx.role} context"
        )
    return ProcessId(ctx.process_id)


_IN_WORKER = "from inside a worker process"


def _link(what: str, where: str = "from first_process or " + _IN_WORKER) -> Any:
    """The calling worker's link to the master; ``where`` says where ``what``
    may be called, for the error outside ``run``."""
    ctx = _context.current
    link = ctx.link
    call = what if "." in what else f"netmcore.{what}"  # a method names its class
    if link is None:
        raise ContextError(f"{call}() was called outside netmcore.run()/startup(): call it {where}")
    if link.owner_pid != this_pid[0]:
        # Its replies would be read by whichever of the two processes reads
        # first: results swapped, or a join (even a timed one) waiting for ever.
        raise ContextError(
            f"{call}() was called in a child that process {ctx.process_id} forked "
            f"(os pid {this_pid[0]}), which shares that process's link to the master: only "
            "netmcore's own processes reach it. Start a netmcore process instead of "
            "forking, or make the call in the process itself"
        )
    return link


def waiting_link(what: str) -> Any:
    """The calling worker's link, for ``what``, a call that may wait for
    other processes: ContextError in the master, which never waits."""
    if _context.current.role == "master":
        raise ContextError(
            f"{what}() waits for processes to end, and the master never waits: call it "
            f"{_IN_WORKER}. In the master (in extract_result, say), use join_nowait()"
        )
    return _link(what, _IN_WORKER)


def _check_res_id(value: object, name: str) -> None:
    if not isinstance(value, ResId):
        raise TypeError(f"{name} must be a ResId, not {type(value).__name__} ({value!r})")


def _inherit_list(value: object) -> list[int] | None:
    if isinstance(value, str):
        if value == "all":
            return None
        raise ValueError(
            f"inherit_resources={value!r} is not valid: pass 'all' or an iterable of ResId"
        )
    try:
        items = list(value)  # type: ignore[call-overload]
    except TypeError:
        raise TypeError(
            f"inherit_resources must be 'all' or an iterable of ResId, not {type(value).__name__}"
        ) from None
    bad = [item for item in items if not isinstance(item, ResId)]
    if bad:
        raise TypeError(f"inherit_resources holds {bad[0]!r}, which is not a ResId")
    return [item.n for item in items]


def _error(reply: Message) -> Exception:
    """The exception a Failed reply from the master stands for."""
    if not isinstance(reply, Failed):
        return NetmcoreError(f"unexpected reply from the master: {type(reply).__name__}")
    if reply.error in ("NoResource", "NotInherited"):
        cls = NotInherited if reply.error == "NotInherited" else NoResource
        err = cls(ResId(reply.res_id if reply.res_id is not None else -1), "")
        err.args = (reply.message,)
        return err
    return REMOTE_ERRORS.get(reply.error, NetmcoreError)(reply.message)
