"""A worker's life: from the fork in the master to ``os._exit``.

A child never returns into the master's code. It makes itself die with the
master (PR_SET_PDEATHSIG), drops the master's descriptors and signal handlers,
waits for an assignment if it is a spare, runs the process function, sends its
outcome, waits for the master to let it exit, and exits.
"""

from __future__ import annotations

import _signal  # type: ignore[import-not-found]  # signal's C half: no stub
import _thread
import contextlib
import mmap
import os
import select
import signal
import socket
import sys
import threading
import traceback
from collections.abc import Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Any, NoReturn

from . import _context, _payload, _posix, _pthread, _registry, _resources
from ._debug import Debug, log, trace
from ._encap import Encap
from ._errors import REMOTE_TRACEBACK, MasterGone, ResultTypeError
from ._outcome import class_name, exception_classes
from ._wire import (
    Asked,
    Assign,
    Finished,
    Invalid,
    Link,
    Raised,
    Rehearse,
    Returned,
    WireEncap,
    WireOutcome,
    encoder,
)

if TYPE_CHECKING:
    from ._master import Master


def main(master: Master, sock: socket.socket, assign: Assign | None) -> NoReturn:
    code = 70  # EX_SOFTWARE: reached only if the bootstrap itself failed
    interrupted = False
    outcome: WireOutcome | Encap | None = None
    finished = Asked()  # the Finished message: sent exactly once it has gone out
    try:
        _posix.die_with_parent()
        if os.getppid() != master.os_pid:  # the master died before the line above
            os._exit(code)
        signal.set_wakeup_fd(-1)
        # The C function, not signal.signal, which turns the handler it
        # replaces into an enum: for the master's Python handler that raises
        # and catches a ValueError, ~40 copy-on-write faults per call here.
        # A signal the program ignores stays ignored (run left it so in the
        # master: see _runtime._Interrupts), as multiprocessing's children
        # keep it: a shell's background job must outlive a Ctrl-C.
        if _signal.getsignal(signal.SIGINT) != _signal.SIG_IGN:
            _signal.signal(signal.SIGINT, signal.default_int_handler)
        if _signal.getsignal(signal.SIGTERM) != _signal.SIG_IGN:
            _signal.signal(signal.SIGTERM, _signal.SIG_DFL)
        _signal.pthread_sigmask(signal.SIG_SETMASK, master.signal_mask)  # see Master._fork
        master.close_in_child()
        link = Link(sock, master.child_buffer)
        ctx = _context.current
        ctx.role, ctx.master, ctx.link = "worker", None, link
        ctx.shm_prefix = master.shm_prefix
        while assign is None:  # a spare
            msg = link.recv()
            if isinstance(msg, Rehearse):
                if not _readable(sock):  # nothing assigned meanwhile
                    _warm_up(master.child_buffer, msg.types)
            elif isinstance(msg, Assign):
                assign = msg
            else:
                os._exit(0)  # a spare the master no longer needs
        ctx.process_id = assign.pid
        _resources.keep_only_inherited(assign.inherit)
        definition = _registry.by_fork_point[assign.fork_point]
        outcome = execute(assign, definition)
        if _pthread.this_pid[0] != link.owner_pid:
            _end_forked_child(assign, outcome)
        # A Python program ends once its non-daemon threads have: so does a
        # process, as in multiprocessing, which calls this too. It runs the
        # threading atexit calls (a ThreadPoolExecutor's shutdown), then joins
        # those threads. Before the outcome goes out: on hearing of it, the
        # master takes back what the process holds, which its threads may use.
        if _thread._count():  # the usual case, alone, skips its cost
            _wait_for_threads()
        # Packed only now, right before the send: a large result packed
        # before the wait above was an object that a kill during the wait
        # (which may be long) left behind. (One that comes between the pack
        # and the send: see the finally below, and Master._sweep_unsent.)
        outcome = _packed(assign, definition, outcome)
        # Marked sent exactly when it has gone out (see Link._transmit): the
        # finally below must not unlink a result the master has.
        link._transmit(Finished(outcome), finished)
    except SystemExit as exc:
        # sys.exit() in the process function ends the process as it would a
        # program, with no result: its outcome is Crashed(exitcode), as in
        # multiprocessing, and not an exception with a traceback.
        code = exit_status(exc)
    except KeyboardInterrupt:
        interrupted = True  # Ctrl-C reaches every process of the group: the master reports it
    except MasterGone:
        # The master died (its parent-death SIGKILL is on its way here): that
        # is the event to report, and nobody is left to report this one to.
        pass
    except BaseException:
        traceback.print_exc()
    else:  # (for 3.12: see test_backedges)
        code = 0
    finally:
        if interrupted:
            # A second Ctrl-C (a launcher, such as timeout, passes one on to
            # the group) must not cut the clean-up short: raised between its
            # steps, it left the process with the bootstrap's exit code 70.
            # It dies of the first one below.
            _signal.signal(signal.SIGINT, _signal.SIG_IGN)
        flush_std_streams()
        if finished.sent:
            try:  # noqa: SIM105  # not suppress: see Master.close_in_child
                _wait_until_let_go(sock)
            except BaseException:  # an interrupt: exit now
                pass
        elif isinstance(outcome, Returned):
            try:  # not suppress: see Master.close_in_child
                _payload.discard(outcome.value.payload)  # packed, never sent
            except BaseException:  # the master's sweep has it (see Master._sweep_unsent)
                pass
            else:  # (for 3.12: see test_backedges)
                pass
        try:  # not suppress: see Master.close_in_child
            _payload.forget_recycled()
        except BaseException:  # the run's end sweeps what is left
            pass
        else:  # (for 3.12: see test_backedges)
            pass
        if interrupted:
            # Die of SIGINT, as an interrupted program should (and as the master
            # does): its outcome is then Crashed(signal=SIGINT), not an exit code.
            _signal.signal(signal.SIGINT, _signal.SIG_DFL)
            signal.raise_signal(signal.SIGINT)
        os._exit(code)


def _wait_for_threads() -> None:
    """threading._shutdown(), as a program's end runs it: threading's atexit
    calls, then a wait for the non-daemon threads. An exception that cuts
    the wait short (a Ctrl-C's KeyboardInterrupt) is raised here, as Python
    3.11 and 3.12 raise it: 3.13 writes it to sys.unraisablehook and ends
    the wait, and the process went on to send its result."""
    shutdown = threading._shutdown  # type: ignore[attr-defined]  # private, no stub
    if sys.version_info < (3, 13):  # the wait raises what cuts it short
        shutdown()
        return
    reported: list[Any] = []
    previous = sys.unraisablehook
    # A C method, no Python frame: no handler runs (and raises) in it. A
    # Python hook lost both signals when a second came as it ran.
    sys.unraisablehook = reported.append
    try:
        shutdown()
    finally:
        sys.unraisablehook = previous
    if not reported:  # (the usual case: nothing to look through)
        return
    me = threading.current_thread()
    cut_short = any(t is not me and not t.daemon and t.is_alive() for t in threading.enumerate())
    raised = None
    for unraisable in reported:
        # The wait's own report has neither object nor message; others (a
        # full signal wakeup fd's, say) are reports only, as they were.
        if cut_short and raised is None and unraisable.object is None and not unraisable.err_msg:
            raised = unraisable.exc_value
        else:
            previous(unraisable)
    if raised is not None:
        raise raised


def _end_forked_child(assign: Assign, outcome: WireOutcome | Encap) -> NoReturn:
    """A child that the process function forked has returned from it (or
    raised out of it), as the process itself will. Its outcome is not the
    process's, which only the process sends: it is dropped (a result, never
    packed, made no object), and the child exits, as a program ends, saying
    where its result went."""
    log.warning(
        "netmcore: a child that process %d forked (os pid %d) returned from the process "
        "function: its result goes nowhere (only the process's own does). End a forked "
        "child with os._exit()",
        assign.pid,
        os.getpid(),
    )
    flush_std_streams()
    os._exit(0 if isinstance(outcome, Encap) else 1)


def exit_status(exc: SystemExit) -> int:
    """The status a program exits with for ``exc``, as Python's, as the
    system reports it: None is 0, an int (a bool too) its low byte (one past
    a C long's range, -1's), anything else is printed to stderr and is 1."""
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return (exc.code if -(2**63) <= exc.code < 2**63 else -1) & 0xFF
    with contextlib.suppress(BaseException):
        print(exc.code, file=sys.stderr)
    return 1


def flush_std_streams() -> None:
    """Write out what sys.stdout and sys.stderr hold. The master calls it before
    each fork, so that no child inherits, and prints again, its buffered text."""
    for stream in (sys.stdout, sys.stderr):
        try:  # noqa: SIM105  # not suppress: see Master.close_in_child
            stream.flush()
        except BaseException:  # nothing left to report it to
            pass


def _wait_until_let_go(sock: socket.socket) -> None:
    """Sleep until the master closes the link. The master picks a quiet moment
    for the exit, whose kernel work (~1 ms, not preemptible) would otherwise
    hold up a result in flight. Replies are left unread: a stray thread of the
    process may still wait for one."""
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLRDHUP)
    while not poller.poll():
        pass


def _readable(sock: socket.socket) -> bool:
    poller = select.poll()  # not select.select: descriptors may be above 1023
    poller.register(sock.fileno(), select.POLLIN)
    return bool(poller.poll(0))


def _warm_up(buffer: mmap.mmap, recent_types: Iterable[int] = ()) -> None:
    """Rehearse an assignment while the spare waits for one, through a
    stand-in link (a socket pair of its own), with a process type nothing can
    start and a throwaway argument.

    A fork shares every page with the master until one side writes to it, and
    the first write costs a copy-on-write fault (~2.5 us on a VM); in Python a
    reference taken to an object is a write. The rehearsal takes the path of
    an assignment as the real one will: the receive (into ``buffer``, the
    link's own), the run, the encoding of the outcome and its send. The pages
    that path writes (the buffer, the code and the objects it uses, msgspec,
    the wire types, the allocator's) are then private, and so are those of
    the objects of the process types started last (``recent_types``), which
    it takes references to without running any of their code. A paced trivial
    process then faults ~7 times between its assignment and its result, and
    ~48 times after a rehearsal of the decode and the encode alone (measured
    with getrusage in the worker).

    A spare does it when the master says so (Rehearse): after the batch that
    forked it, and only when forked in a quiet time (see Master._background;
    spares forked as starts take every spare as it comes would rehearse only
    to hold their assignments up). It skips it if its assignment is there
    already, and while Debug is on (the trace would show it). Nothing reaches
    the master, nothing is logged or created (the value is too small for shm).
    """
    if _registry.rehearsal is None or Debug.enable:  # then its trace would show it
        return
    for n in recent_types:
        definition = _registry.by_fork_point.get(n)
        for _used in () if definition is None else definition.used:
            pass  # a reference taken and dropped: a write to the object's page
    definition, arg = _registry.rehearsal
    wire = WireEncap.of(arg, bytes(arg.data))
    with contextlib.suppress(OSError):  # short of descriptors: a head start, not a need
        _rehearse(buffer, definition, wire)


def _rehearse(buffer: mmap.mmap, definition: _registry.Definition, wire: WireEncap) -> None:
    """The rehearsal of _warm_up, through a socket pair of its own."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with ours, theirs:
        theirs.send(encoder.encode(Assign(-1, definition.fork_point.n, wire, None)))
        stand_in = Link(ours, buffer)
        assign = stand_in.recv()
        assert isinstance(assign, Assign)
        _resources.keep_only_inherited(assign.inherit)
        # A Ctrl-C meanwhile ends the spare (_run lets KeyboardInterrupt through).
        outcome = execute(assign, definition)
        # As main asks before it sends (a spare has no other thread).
        if _pthread.this_pid[0] == stand_in.owner_pid and not _thread._count():
            stand_in.send(Finished(_packed(assign, definition, outcome)))


# What ends a worker without being the process's failure (see main).
NOT_ITS_FAILURE = (KeyboardInterrupt, MasterGone, SystemExit)


def execute(assign: Assign, definition: _registry.Definition) -> WireOutcome | Encap:
    """Run the process function of ``assign`` (of ``definition``'s type) and
    describe how it went: its result as it returned it (see :func:`_packed`),
    or how it failed."""
    trace("process %d (%s) runs in os pid %d", assign.pid, definition.name, os.getpid())
    return _run(definition, assign)


def _run(definition: _registry.Definition, assign: Assign) -> WireOutcome | Encap:
    arg = assign.arg
    try:
        result = definition.function(arg.encap())
        if not isinstance(result, Encap):
            raise TypeError(
                f"the function of {definition.name} returned {type(result).__name__}, "
                "not an Encap: wrap the result with an EncapType"
            )
    except ResultTypeError as exc:
        log.error(
            "netmcore: process %d (%s) returned an invalid result at %s: %s",
            assign.pid,
            definition.name,
            exc.path,
            exc,
        )
        return Invalid(_clip(exc.path), _clip(str(exc)))
    except NOT_ITS_FAILURE:
        raise  # not the function's failure: main ends the worker, unlogged
    except BaseException as exc:
        return _raised(definition, assign, exc)
    return result


def _packed(
    assign: Assign, definition: _registry.Definition, outcome: WireOutcome | Encap
) -> WireOutcome:
    """``outcome`` as it goes to the master: a result packed (into a shm
    object if it is large; see _payload.pack), or a failure to pack it."""
    if not isinstance(outcome, Encap):
        return outcome
    try:
        ctx = _context.current
        payload = _payload.pack(outcome.parts, ctx.shm_prefix, ctx.process_id)
    except NOT_ITS_FAILURE:
        raise
    except BaseException as exc:  # no room in /dev/shm, no descriptor left
        return _raised(definition, assign, exc)
    return Returned(WireEncap.of(outcome, payload))


def _raised(definition: _registry.Definition, assign: Assign, exc: BaseException) -> Raised:
    """The outcome of process ``assign`` that raised ``exc``, logged."""
    return raised_by(f"process {assign.pid} ({definition.name})", exc)


def raised_by(who: str, exc: BaseException) -> Raised:
    """How ``who`` (a process, an item of a map's chunk) raised ``exc``, logged."""
    report = _report(exc)
    raised = _raised_as(exc, report)  # whole, before the log's shortening below
    _refer_to_logged(report)
    log.error("netmcore: %s raised an exception:\n%s", who, "".join(report.format()).rstrip())
    return raised


def raised_quietly(exc: BaseException) -> Raised:
    """How ``exc`` was raised, not logged: a pipeline's item's failure, which
    its error or its run's ``failures`` hand over (a run that skips failing
    items would log each)."""
    return _raised_as(exc, _report(exc))


def _report(exc: BaseException) -> traceback.TracebackException:
    return traceback.TracebackException(
        type(exc), exc, _from_user_code(exc.__traceback__), compact=True
    )


def _raised_as(exc: BaseException, report: traceback.TracebackException) -> Raised:
    cls = type(exc)
    text = "".join(report.format())
    return Raised(class_name(cls), _clip(_message(exc)), _clip(text), exception_classes(cls))


def _refer_to_logged(report: traceback.TracebackException) -> None:
    """In ``report``, as it is logged, the notes that hold the traceback of a
    process that failed (a ProcessFailed's) become a line: that process
    logged it as it raised. Logged whole, a failure deep in nested maps was
    logged again at every level above it (the outcome keeps it whole)."""
    seen: set[int] = set()
    todo = [report]
    while todo:
        node = todo.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        notes = getattr(node, "__notes__", None)
        if notes:  # a ProcessFailed's alone begins so (not exc_type: deprecated in 3.13)
            node.__notes__ = [
                f"{REMOTE_TRACEBACK} logged above, as that process raised"
                if note.startswith(REMOTE_TRACEBACK)
                else note
                for note in notes
            ]
        todo += [n for n in (node.__cause__, node.__context__) if n is not None]
        todo += getattr(node, "exceptions", None) or []


_PACKAGE = os.path.dirname(__file__) + os.sep


def _from_user_code(tb: TracebackType | None) -> TracebackType | None:
    """The traceback from its first frame outside netmcore, as a program's
    starts in its own code: netmcore's calls into the process function tell
    the user nothing. Whole if every frame is netmcore's (the argument did
    not decode, say)."""
    first = tb
    while first is not None and first.tb_frame.f_code.co_filename.startswith(_PACKAGE):
        first = first.tb_next
    return tb if first is None else first


# The characters of each text an outcome carries, so that they fit one message
# to the master (4 UTF-8 bytes a character at worst), with its class names
# (see _outcome.NAME_MAX). The whole text is in the worker's log; the joiner
# gets its head and its tail.
TEXT_MAX = 16_000


def _clip(text: str, most: int = TEXT_MAX) -> str:
    """``text``, encodable, cut to its head and tail if over ``most`` characters."""
    if not text.isascii():
        # A lone surrogate (os.fsdecode's for a file name that is not UTF-8)
        # cannot be encoded, and would turn the outcome into a crash: escaped.
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    if len(text) <= most:
        return text
    half = most // 2
    return f"{text[:half]}\n[... {len(text) - 2 * half:,} characters cut ...]\n{text[-half:]}"


def _message(exc: BaseException) -> str:
    """``str(exc)``, or what Python prints when that fails: a broken __str__
    must not turn the process's exception into a crash."""
    try:
        return str(exc)
    except BaseException:
        return "<exception str() failed>"
