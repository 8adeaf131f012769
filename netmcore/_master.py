"""The master: a lean, single-threaded event loop that forks and supervises.

The master never runs payload work and never blocks on a worker. It owns the
process table (one :class:`Record` per library process), the OS children that
carry them, and a small pool of *spares*: children forked ahead of time that
wait, as untouched copies of the master, to be assigned a process. Assigning a
spare takes one message; the forks that replace them happen, several back to
back, when the loop is idle, off the start/join path. See ``_wire`` for the
messages.

A child's end is seen through a pidfd, never by guessing from a closed socket,
and its outcome is kept until the one join that succeeds takes it.
"""

from __future__ import annotations

import collections
import contextlib
import heapq
import itertools
import math
import os
import reprlib
import selectors
import shlex
import signal
import socket
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import msgspec

from . import (
    _cleanup,
    _context,
    _ipc,
    _payload,
    _registry,
    _resources,
    _watchdog,
    _watches,
    _worker,
)
from ._debug import log, trace
from ._errors import (
    ContextError,
    NetmcoreError,
    NoResource,
    PluginError,
    ShuttingDown,
    UnknownProcess,
    WrongJoinPoint,
)
from ._ids import ResId, give_back_process_id, next_process_id, peek_process_id
from ._outcome import signal_name
from ._payload import Payload, ShmRef
from ._plugin_host import PluginHost
from ._posix import ASYNC_SIGNALS, INTERRUPTS, VALID_SIGNALS, peer_uid, with_signals_blocked
from ._resources import ResourceType
from ._socketdir import SocketDir
from ._wire import (
    MESSAGE_MAX,
    Assign,
    Done,
    Ended,
    EndedReq,
    Failed,
    Finished,
    HandOverReq,
    Invalid,
    JoinCancel,
    Joined,
    JoinReq,
    KillReq,
    Message,
    PluginReply,
    PluginReq,
    ProcessInfo,
    Raised,
    Ready,
    Rehearse,
    ReleaseReq,
    ResCreateReq,
    ResDestroyAllReq,
    ResGetReq,
    ResInfo,
    ResManageReq,
    Returned,
    Signalled,
    Started,
    StartReq,
    StatusReq,
    WaitingIn,
    WaitReq,
    WatchReq,
    WireEncap,
    WireOutcome,
    decoder,
    encoder,
    failed_of_its_own,
    recv_buffer,
    status_parts,
)

# Standard modules that `import netmcore` must not load (a test checks it).
# A fork copies the page-table entries of every page the master maps, and an
# exit tears them down: with these four (and what they import: bz2, lzma,
# hmac, OpenSSL) a fork+exit cost ~11% more CPU, and random's at-fork handler
# reseeds in every child. Code that needs one imports it where it is used.
KEPT_OUT_OF_MASTER = ("random", "secrets", "shutil", "tempfile")

SPARES = 4  # children kept forked ahead of time
SPARES_LOW = 1  # the pool is topped up, in one batch of forks, when this low:
# after a fork, each page the master writes is a copy-on-write fault (~2.5 us),
# so its bookkeeping is done once per batch, and the round trips after the
# first one that follows a batch meet no such fault.
# Forking a spare costs the master 0.4-0.8 ms, and a child's exit costs a CPU
# about 1 ms of kernel work that nothing preempts. Done while a short process's
# result is on its way, or while its joiner wakes up, either one delays the
# result by that much. So both wait until the master is quiet: no event for
# IDLE_SECONDS, and no process started in the last QUIET_SECONDS still waiting
# for its join. Until then finished children wait to exit ("parked"), at most
# PARKED_MAX of them; with no spare left, spares are forked at once (the next
# start would fork anyway).
IDLE_SECONDS = 0.001
QUIET_SECONDS = 0.005
PARKED_MAX = 4
SPARES_RETRY_SECONDS = 1.0  # after a spare could not be forked
RECENT_TYPES = 4  # process types whose objects a spare takes ahead (see _worker._warm_up)
KEPT_SWEEP_MIN = 16  # names in a child's kept before the gone ones are swept (see Child.keep)
# At most one sweep of the processes that ended with their result sent per
# this many seconds (see _on_exit): a listing of /dev/shm costs as many
# entries as it holds (10 ms for 20,000), and one per process end cost a
# fan-out 20-80% of its rate on a machine with thousands of them.
ENDED_SWEEP_SECONDS = 0.5
GRACE_SECONDS = 2.0  # between SIGTERM and SIGKILL when the master is interrupted
# Between a SIGINT to the serving master and the SIGTERM to the workers still
# running. A Ctrl-C reaches every process of the terminal's group: each worker
# gets its own KeyboardInterrupt, and ends running its finally blocks, which a
# SIGTERM at once cut short. (A SIGINT to the master alone, or a worker that
# ignores it, waits this long.) A second SIGINT or SIGTERM ends the wait.
INTERRUPT_GRACE_SECONDS = 1.0
LONGEST_WAIT = 3600.0  # seconds the loop sleeps at most: it then looks at the time again
# Once the first process has ended, run waits for every other one: after this
# many seconds (then twice as long each time), it says for which, so that a
# process left running (a join that timed out, say) is no silent hang.
WAIT_NOTICE_SECONDS = 10.0
# Before that: when every running process has waited in the master this
# long, and none has sent anything or used the CPU meanwhile, run says so
# (then after twice as long each time): processes that wait for each other
# (a join cycle, a box nobody sends to) would otherwise hang the program
# without a word.
STALL_NOTICE_SECONDS = 10.0
WAITS_SHOWN = 20  # kinds of wait status shows per process (see _grouped)
# The waits in shared memory one process may tell of (one a thread), and the
# characters of each kept: what a malformed flood of them may hold.
SHM_WAITS_MAX = 1024
SHM_WAIT_TEXT_MAX = 200
_MAX_BATCH = 64  # messages read from one socket before others get a turn
JOIN_TIMERS_MIN = 64  # join timers kept before stale ones are swept (see _time_join)
# The process number of a wait's timer (see _time_join): a WaitReq is for several.
ANY_PROCESS = -1


class Conn:
    """The master's non-blocking end of a socket to a child or an admin client."""

    def __init__(self, sock: socket.socket, master: Master) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.fd = sock.fileno()
        self.master = master
        self.outq: deque[bytes] = deque()
        self.broken = False  # the peer is gone: sends are dropped
        self.closed = False  # our end is closed: its fd number may be reused
        self.child: Child | None = None

    def send(self, msg: Message) -> bool:
        """Queue ``msg``; False if the peer is gone, or if ``msg`` is too large
        for the link (then its request gets a failure instead)."""
        if self.broken:
            return False
        data = encoder.encode(msg)
        if len(data) > MESSAGE_MAX:
            return self._too_large(msg, len(data))
        if not self.outq:
            try:
                self.sock.send(data)
                return True
            except BlockingIOError:
                pass
            except OSError:  # not EMSGSIZE: MESSAGE_MAX is below the kernel's limit
                self.broken = True
                return False
        self.outq.append(data)
        self.master.watch_writable(self, True)
        return True

    def _too_large(self, msg: Message, size: int) -> bool:
        """Drop ``msg``, which the link cannot carry, and fail its request: a
        bug to report, but never a reason to stop answering this peer (its
        request would wait forever, and every later one too)."""
        text = (
            f"the master's {type(msg).__name__} reply of {size:,} bytes is over the "
            f"{MESSAGE_MAX:,} a link takes: the reply was dropped and the request failed"
        )
        log.error("netmcore: %s", text)
        req = getattr(msg, "req", 0)
        if req and not isinstance(msg, Failed):
            error = "PluginError" if isinstance(msg, PluginReply) else "NetmcoreError"
            self.send(Failed(error, text, None, req=req))
        return False

    def flush(self) -> None:
        while self.outq:
            try:
                self.sock.send(self.outq[0])
            except BlockingIOError:
                return
            except OSError:
                self.broken = True
                self.outq.clear()
                break
            self.outq.popleft()
        self.master.watch_writable(self, False)


@dataclass(eq=False, repr=False)
class Child:
    """An OS child of the master: a spare, or the carrier of a process."""

    os_pid: int
    conn: Conn
    pidfd: int
    record: Record | None = None
    # The shm objects of the large results it was handed in joins and has
    # not sent on: it may hold any of them (its last ones, kept for reuse,
    # one that each of its threads decodes, those its joins keep for their
    # callers: see _payload), and unlinks them when it ends, unless it
    # crashes; the master does it then (see _on_exit). A count could not
    # tell which: its threads map them in another order than they were handed.
    kept: set[str] = field(default_factory=set)
    kept_sweep_at: int = KEPT_SWEEP_MIN

    def keep(self, name: str) -> None:
        """It was handed the object ``name`` (see kept). Those unlinked
        since (by it, as it took newer ones) are swept out as the set
        doubles, so that it holds about twice those the child may still
        hold, at a constant cost a join."""
        kept = self.kept
        kept.add(name)
        if len(kept) >= self.kept_sweep_at:
            # No name is made twice (random, created exclusively): one gone
            # has nothing left to unlink, now or later.
            self.kept = kept = {name for name in kept if _ipc.exists(name)}
            self.kept_sweep_at = max(KEPT_SWEEP_MIN, 2 * len(kept))


@dataclass(eq=False, repr=False)
class Record:
    """A library process, from its start until it has ended and been joined."""

    n: int
    definition: _registry.Definition
    # The argument's shm object (a large one's), until the process sends it
    # on or ends. A small one's bytes are not kept: once the assignment has
    # gone out (or the child was forked with it), nothing needs them.
    arg: ShmRef | None
    started: float
    child: Child | None = None
    outcome: WireOutcome | None = None
    joined: bool = False
    dropped: bool = False  # nobody will join it: its outcome goes as it comes
    waiters: list[tuple[Conn, int]] = field(default_factory=list)  # (conn, request id)
    signalled: int | None = None  # the last signal a kill request sent it

    @property
    def state(self) -> str:
        if self.child is not None:
            return "running" if self.outcome is None else "finishing"
        return "ended"


class Controller:
    """The master's handle, passed to ``init_ctrl`` and ``extract_result``.

    Attributes
    ----------
    socket_directory : str
        The directory holding the control socket.
    master_pid : int
        The OS pid of the master.
    """

    def __init__(self, master: Master) -> None:
        self._master = master
        self.socket_directory = master.sockdir.path
        self.master_pid = master.os_pid

    def processes(self) -> list[ProcessInfo]:
        """The processes the master knows about, as the admin tool shows them.

        Raises
        ------
        ContextError
            After the run has ended: it had no processes left, and the
            master is gone (an empty list would say that it runs, idle).
            In a worker too, whose copy of the master is as it was when it
            was forked.
        """
        return self._running_master("Controller.processes()").process_infos()

    def _running_master(self, call: str) -> Master:
        """The master, for ``call``; ContextError once the run has ended, or
        in another process than the master (a worker's copy of the master,
        forked with it, describes the run as it was at the fork)."""
        if os.getpid() != self.master_pid:
            raise ContextError(
                f"{call} was called in os process {os.getpid()}, not in the master (os pid "
                f"{self.master_pid}): a controller works in the master's own code, such as "
                "init_ctrl and extract_result. A worker's copy of it would describe the run "
                "as it was when the worker was forked"
            )
        if self._master.ended:
            raise ContextError(
                f"{call} was called after its run (master pid {self.master_pid}) had "
                "ended: a controller describes its run while it goes on. Call it in "
                "init_ctrl or extract_result, and keep what you need from there"
            )
        return self._master


class Master:
    """The event loop of ``run``; one instance per ``run`` call."""

    def __init__(
        self, sockdir: SocketDir, watchdog: _watchdog.Watchdog, *, pmanage: bool = True
    ) -> None:
        self.sockdir = sockdir
        self.os_pid = os.getpid()
        self.ended = False  # close() has run: the run is over
        # Names say which master made them; the token makes them unguessable.
        # Managed objects get the object prefix, payloads in flight the payload
        # prefix (swept at the end; "p" never starts a random hex suffix).
        self.object_prefix = f"/nmc.{self.os_pid}.{sockdir.token}."
        self.shm_prefix = self.object_prefix + "p."
        self.record = _cleanup.Record(sockdir.pmanage_path) if pmanage else None
        self.watchdog = watchdog
        try:
            # In the run, the master's record (if any) is told of each object;
            # the program's guard keeps what it had, and takes over what the
            # run keeps at its end (see _watchdog.noted_in_run).
            _resources.on_change = self._on_resource_change
            if self.record is not None:
                _cleanup.record_prefix(self.record, self.shm_prefix)
                for typ, name in _resources.recorded_objects():
                    self.record.write("+", typ.value, name)
            watchdog.guard_prefix(self.shm_prefix)  # run told it of the rest
            self._init_loop()
        except BaseException:
            self._end_cleanup()  # a start that fails leaves no record and no watchdog
            raise

    def _init_loop(self) -> None:
        self.sel = selectors.EpollSelector()
        self.records: dict[int, Record] = {}
        self.children: dict[int, Child] = {}  # by os pid
        self.spares: deque[Child] = deque()
        self.parked: deque[Child] = deque()  # finished, waiting to be let exit
        # The links of admin clients (netmcore status, kill): closed at the
        # end with the rest, if the client has not closed its own yet.
        self.clients: set[Conn] = set()
        # The run's objects in /dev/shm, listed once a loop for _sweep_unsent
        # (None: not yet): the processes a burst of kills ends share a listing.
        self.shm_listing: list[str] | None = None
        # Processes that ended with their result sent, and its object's name:
        # swept in a batch (see _on_exit), when unswept_due has passed.
        self.unswept: list[tuple[int, str | None]] = []
        self.unswept_due = 0.0
        self.spares_retry_at = 0.0  # no spare is forked before (after a failed fork)
        self.signal_mask: set[int | signal.Signals] = set()  # the program's, for its children
        self.awaited: dict[int, float] = {}  # recent starts not yet joined: start time
        # The fork points of the last few process types started, the latest
        # last: those a spare is likely to run, whose objects it takes ahead.
        self.recent_types: dict[int, None] = {}
        self.last_event = 0.0
        self.first: int | None = None
        self.serving = False  # the loop runs (no user code of the master does)
        self.shutting_down = False
        self.plugins: PluginHost | None = None
        self.watches = _watches.Watches()
        # Joins and waits that wait with a timeout, as a heap of (deadline,
        # order, process or ANY_PROCESS, waiter); an entry stays after it is
        # answered, until its deadline or a sweep (see _time_join).
        self.join_timers: list[tuple[float, int, int, tuple[Conn, int]]] = []
        self._join_timer_order = itertools.count()
        self._join_timers_sweep_at = JOIN_TIMERS_MIN
        self.interrupted: int | None = None
        self.signals = 0  # SIGINTs and SIGTERMs got
        self.first_caught_interrupt = False  # see _settle
        self.term_deadline: float | None = None  # when the workers get SIGTERM
        self.kill_deadline: float | None = None  # when stragglers get SIGKILL
        self.notice_at: float | None = None  # when run says what it waits for
        self.notice_after = WAIT_NOTICE_SECONDS
        # The stall notice (see _look_for_stall): when the master looks next;
        # and the count of messages processes had sent, and the CPU time of
        # each, when it last looked and found them all waiting.
        self.stall_at: float | None = None
        self.stall_after = STALL_NOTICE_SECONDS
        self.sent = 0
        # The waits in shared memory that processes have told of (see
        # _client.tell_waiting), by process id, then thread: for the stall
        # notice and status, which see no other.
        self.shm_waits: dict[int, dict[int, str]] = {}
        self.when_looked: tuple[int, dict[int, int | None]] | None = None
        self.killed = False
        self._buf = recv_buffer()
        self._view = memoryview(self._buf)
        # The receive buffer of every child's link, made once here and never
        # touched by the master: a child that made its own would pay ~20
        # copy-on-write faults for the Python objects that takes.
        self.child_buffer = recv_buffer()
        self._fds: set[int] = set()  # every descriptor a child must close
        self._listener = self.sockdir.listen()
        self._watch(self._listener.fileno(), self._accept)
        self._wakeup_r, self._wakeup_w = socket.socketpair()
        for s in (self._wakeup_r, self._wakeup_w):
            s.setblocking(False)
        self._watch(self._wakeup_r.fileno(), self._on_wakeup)
        self._fds.add(self._wakeup_w.fileno())
        self._fds.add(self.sel.fileno())
        self._fds.add(self.watchdog.fd)
        guard_fd = _watchdog.guard_fd()
        if guard_fd is not None:
            self._fds.add(guard_fd)
        if self.record is not None:
            self._fds.add(self.record.fd)
        self._fds.update(self.sockdir.fds())

    # --- descriptors -------------------------------------------------------

    def _watch(self, fd: int, handler: Callable[[int], None]) -> None:
        self.sel.register(fd, selectors.EVENT_READ, handler)
        self._fds.add(fd)

    def _unwatch(self, fd: int) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self.sel.unregister(fd)
        self._fds.discard(fd)

    def watch_writable(self, conn: Conn, on: bool) -> None:
        if conn.closed:
            return
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if on else 0)
        with contextlib.suppress(KeyError):
            self.sel.modify(conn.fd, events, self._conn_handler(conn))

    def _conn_handler(self, conn: Conn) -> Callable[[int], None]:
        return lambda mask: self._on_conn(conn, mask)

    def keep_from_children(self, fd: int, keep: bool = True) -> None:
        """Have every child forked from now on close ``fd`` (a descriptor of
        the run's, such as the pidfile's); with ``keep`` False, no longer."""
        if keep:
            self._fds.add(fd)
        else:
            self._fds.discard(fd)

    def close_in_child(self) -> None:
        """Drop every master descriptor in a freshly forked child."""
        # try, not contextlib.suppress, here and on the rest of a child's way
        # (see _worker.main): every object a new child touches has its page
        # copied (~2.5 us), and the suppress machinery is ~8 pages.
        for fd in self._fds:
            try:  # noqa: SIM105
                os.close(fd)
            except OSError:
                pass

    # --- forking -----------------------------------------------------------

    def _fork(self, assigns: list[Assign | None], record: Record | None = None) -> list[Child]:
        """Fork and track the children of ``assigns`` (see _fork_children),
        the first one bound to ``record``, if given (the process it runs).

        SIGINT and SIGTERM wait until every child forked is tracked, and the
        first bound: a handler's exception between a fork and its
        bookkeeping left a child that nothing killed or reaped, and one
        raised in the fork itself (in an at-fork hook, where Python drops
        it) was lost. One raised as the hold ended, before the binding, left
        a process with no record: its outcome ignored, it was never let
        exit, and run waited for it for ever if the master's own code caught
        the Ctrl-C. The children set their own handlers, then take the
        program's mask back.
        """
        self.signal_mask = signal.pthread_sigmask(signal.SIG_BLOCK, ())

        def fork() -> list[Child]:
            children = self._fork_children(assigns)
            if record is not None:
                _bind(children[0], record, self.records)
            return children

        # Every asynchronous signal, not SIGINT and SIGTERM alone: a program's
        # timer handler whose TimeoutError came as a fork returned lost the
        # child's pid (a process run with its link closed, its id reused).
        return with_signals_blocked(ASYNC_SIGNALS, fork)

    def _fork_children(self, assigns: list[Assign | None]) -> list[Child]:
        """Fork one child per entry: a spare (added to the pool) for None, else
        the carrier of that assignment. Only the first child must come to be:
        if a later one cannot be made or tracked (no memory, too many
        processes or descriptors), the batch is just smaller.

        The forks run back to back, and the bookkeeping comes after the last.
        A fork makes every page of the master copy-on-write, so the pages that
        bookkeeping writes are copied once per batch, not once per child.
        """
        pairs: list[tuple[socket.socket, socket.socket]] = []
        os_pids: list[int] = []
        error: BaseException | None = None
        try:
            for _ in assigns:
                try:
                    pairs.append(socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET))
                except OSError:
                    if not pairs:
                        raise
                    break
            _worker.flush_std_streams()
            for (_, child_sock), assign in zip(pairs, assigns, strict=False):
                try:
                    os_pid = os.fork()
                except OSError:
                    if not os_pids:
                        raise
                    break
                if os_pid == 0:  # the child: it never leaves this branch
                    try:
                        for sock in (s for pair in pairs for s in pair if s is not child_sock):
                            self._fds.add(sock.detach())  # closed by close_in_child
                        _worker.main(self, child_sock, assign)
                    finally:
                        os._exit(70)
                os_pids.append(os_pid)
        except BaseException as exc:  # what was forked is tracked all the same
            error = exc
        else:  # (for 3.12: see test_backedges)
            pass
        children = []
        for i, (parent_sock, child_sock) in enumerate(pairs):
            child_sock.close()
            if i >= len(os_pids):
                parent_sock.close()
                continue
            try:
                child = self._adopt(parent_sock, os_pids[i])
            except OSError as exc:
                if i == 0:
                    error = error or exc
                continue
            children.append(child)
            if assigns[i] is None:
                self.spares.append(child)
        if error is not None:
            raise error
        return children

    def _adopt(self, parent_sock: socket.socket, os_pid: int) -> Child:
        """Track a new child. If that fails, it is killed and reaped: a child
        the master does not track would never be let exit."""
        pidfd = -1
        try:
            pidfd = os.pidfd_open(os_pid)
            conn = Conn(parent_sock, self)
            child = Child(os_pid, conn, pidfd)
            conn.child = child
            self._watch(conn.fd, self._conn_handler(conn))
            self._watch(pidfd, lambda mask: self._on_exit(child))
        except BaseException:
            self._unwatch(parent_sock.fileno())
            parent_sock.close()
            if pidfd >= 0:
                self._unwatch(pidfd)
                os.close(pidfd)
            with contextlib.suppress(ProcessLookupError):
                os.kill(os_pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):  # a SIGCHLD handler of the program's
                os.waitpid(os_pid, 0)
            raise
        self.children[os_pid] = child
        return child

    def _spares_low(self) -> bool:
        return (
            not self.shutting_down
            and len(self.spares) <= SPARES_LOW
            and time.monotonic() >= self.spares_retry_at
        )

    def _top_up_spares(self, rehearse: bool) -> None:
        """Fork spares if the pool is low; if ``rehearse``, have them rehearse
        an assignment (see _worker._warm_up) once the batch is forked: as
        they were forked, the first ones slowed the forks of the others, and
        the batch could still hold the master as the next start came."""
        if not self._spares_low():
            return
        try:
            spares = self._fork([None] * (SPARES - len(self.spares)))
            if rehearse:
                rehearsal = Rehearse(list(self.recent_types))
                for spare in spares:
                    spare.conn.send(rehearsal)
        except OSError as exc:
            # Spares are a head start, not a need: starts fork for themselves
            # (and report it if they cannot) until the next try.
            log.warning("netmcore: could not fork a spare process: %s", exc)
            self.spares_retry_at = time.monotonic() + SPARES_RETRY_SECONDS

    # --- the loop ----------------------------------------------------------

    def serve(self, first: int) -> None:
        """Run until the first process has ended and every child is gone."""
        self.first = first
        if first not in self.records:
            self._begin_shutdown()
        self.stall_at = time.monotonic() + self.stall_after
        self.serving = True
        try:
            self._loop()
        finally:
            self.serving = False

    def _loop(self) -> None:
        while self.children or not self.shutting_down:
            timeout = None
            stop_at = self._next_stop()
            if stop_at is not None:
                timeout = max(0.0, stop_at - time.monotonic())
            spares_low = self._spares_low()
            if self.parked or spares_low:
                # Then poll: background work runs when no event is waiting.
                wait = 0.0 if spares_low and not self.spares else self._quiet_in()
                timeout = wait if timeout is None else min(timeout, wait)
            plugins = self.plugins
            expiry = plugins.next_deadline() if plugins is not None else None
            if self.join_timers:
                first = self.join_timers[0][0]
                expiry = first if expiry is None else min(expiry, first)
            if self.notice_at is not None:
                expiry = self.notice_at if expiry is None else min(expiry, self.notice_at)
            # Woken for the stall's look too, which runs no expiry below.
            wake = expiry
            if self.stall_at is not None:
                wake = self.stall_at if wake is None else min(wake, self.stall_at)
            if wake is not None:  # a plugin request, a join or a notice times out then
                # Capped: epoll takes at most 2**31 ms, and a timeout may be 1e9 s.
                wait = min(max(0.0, wake - time.monotonic()), LONGEST_WAIT)
                timeout = wait if timeout is None else min(timeout, wait)
            if self.unswept:
                now = time.monotonic()
                if timeout is None or now >= self.unswept_due:
                    # Due, or nothing else to do before the next event.
                    self._sweep_ended(now)
                else:  # woken for it when it is due
                    timeout = min(timeout, self.unswept_due - now)
            events = self.sel.select(timeout)
            self.shm_listing = None
            if events:
                self.last_event = time.monotonic()
            for key, mask in events:
                key.data(mask)
            if expiry is not None:
                if plugins is not None:
                    plugins.expire_due()
                self._expire_joins()
                if self.notice_at is not None and time.monotonic() >= self.notice_at:
                    self._notice_waiting()
            if self.stall_at is not None and time.monotonic() >= self.stall_at:
                self._look_for_stall()
            # The stop steps are timed, and taken even when events never
            # stop coming (workers that keep asking).
            if stop_at is not None and time.monotonic() >= stop_at:
                self._stop_step()
            elif not events:
                self._background()
        if self.unswept:  # the last ones (close() unlinks the rest of the run's too)
            self.shm_listing = None
            self._sweep_ended(time.monotonic())

    def _sweep_ended(self, now: float) -> None:
        """Sweep the processes that ended with their result sent (see
        _on_exit), together; the next such sweep is due in ENDED_SWEEP_SECONDS."""
        unswept, self.unswept = self.unswept, []
        self.unswept_due = now + ENDED_SWEEP_SECONDS
        self._sweep_unsent(unswept)

    def _quiet_in(self) -> float:
        """Seconds until the master is quiet (0 if it is)."""
        now = time.monotonic()
        idle_in = self.last_event + IDLE_SECONDS - now
        if self.awaited:
            latest = next(reversed(self.awaited.values()))  # starts are in time order
            if latest + QUIET_SECONDS <= now:
                self.awaited.clear()  # long runs: their results are not imminent
            else:
                idle_in = max(idle_in, latest + QUIET_SECONDS - now)
        return max(idle_in, 0.0)

    def _background(self) -> None:
        """Work kept off the critical path: let parked children exit, top up
        the spares. With no spare left the next start would fork anyway, so
        spares are forked at once: a stream of starts gets the forks of the
        next processes done while the last ones run."""
        quiet = self._quiet_in() == 0
        if quiet:
            while self.parked:
                self._let_exit(self.parked.popleft())
        if quiet or not self.spares:
            # Starts that took every spare are likely to take these at once:
            # then a rehearsal would only hold them up (see _worker._warm_up).
            self._top_up_spares(rehearse=quiet)  # it checks that the pool is low

    def _let_exit(self, child: Child) -> None:
        # A finished child waits for its link to close (see _worker.main).
        self._close_conn(child.conn)

    def _notice_waiting(self) -> None:
        """Say which processes run still waits for, and how to end them."""
        now = time.monotonic()
        running = self._running()
        if running:
            log.warning(
                "netmcore: the first process has ended, and run waits for %d process(es) "
                "still running: %s. run returns once every process has ended: let them "
                "finish, or end them, from a shell (python -m netmcore kill %s %s) or from a "
                "worker that runs on (netmcore.kill(pid)); a Ctrl-C ends them all, and run "
                "then raises KeyboardInterrupt",
                len(running),
                self._shown(running, self.waits(), now),
                shlex.quote(self.sockdir.path),
                " ".join(str(r.n) for r in running),
            )
        self.notice_after *= 2
        self.notice_at = now + self.notice_after

    def _look_for_stall(self) -> None:
        """Say so if every running process waits in the master (a join, a
        wait for the first of several ends, a plugin call) or in a Mailbox
        (as it has told: see _client.tell_waiting), none with a timeout
        still to come, and since the last look none has sent
        anything or used any CPU: none can go on, unless something outside
        netmcore wakes one. Looked at every ``stall_after`` seconds, doubled
        after each notice, until something moves. Not once run has begun
        to end: _notice_waiting says what it waits for then."""
        if self.shutting_down:
            self.stall_at = None
            return
        now = time.monotonic()
        running = self._running()
        waits = self.waits() if running else {}
        seen = None
        if running and all(r.n in waits for r in running) and not self._timed_waits():
            # CPU time, too: a thread of a process that computes while another
            # waits here sends nothing, and its process is not stalled.
            seen = (self.sent, {r.n: _cpu_ticks(r) for r in running})
        if seen is not None and seen == self.when_looked:
            log.warning(
                "netmcore: every running process has waited in the master or in a box for "
                "%g s or more, and none has sent anything or used the CPU meanwhile: %s. Unless "
                "something outside netmcore wakes one (a signal, a timer of its own), they "
                "wait for each other, for ever (a deadlock: a join cycle, a box that nobody "
                "sends to). python -m netmcore status %s shows them; end them with python "
                "-m netmcore kill %s %s, or a Ctrl-C ends the run",
                self.stall_after,
                self._shown(running, waits, now),
                shlex.quote(self.sockdir.path),
                shlex.quote(self.sockdir.path),
                " ".join(str(r.n) for r in running),
            )
            self.stall_after *= 2
        elif seen is None or self.when_looked is None or seen[0] != self.when_looked[0]:
            self.stall_after = STALL_NOTICE_SECONDS
        self.when_looked = seen
        self.stall_at = now + self.stall_after

    def _timed_waits(self) -> bool:
        """Whether a wait in the master has a timeout still to come (a join's
        or a plugin call's): then it ends by itself. A timer outlives the
        wait it was for, which is not counted."""
        joins = any(self._still_waits(n, waiter) for _, _, n, waiter in self.join_timers)
        return joins or (self.plugins is not None and self.plugins.waits_with_deadline())

    def _running(self) -> list[Record]:
        """The processes started and not ended, in the order they started."""
        return [r for r in self.records.values() if r.child is not None and r.outcome is None]

    @staticmethod
    def _shown(running: list[Record], waits: dict[int, list[str]], now: float) -> str:
        """The first five of ``running``, for a notice: each one's id, type,
        time running and ``waits``."""
        shown = ", ".join(
            f"{r.n} ({r.definition.name}, running for {now - r.started:.0f} s"
            + "".join(f", waiting for {what}" for what in waits.get(r.n, []))
            + ")"
            for r in running[:5]
        )
        return shown + (", ..." if len(running) > 5 else "")

    def _on_wakeup(self, mask: int) -> None:
        with contextlib.suppress(BlockingIOError):
            while self._wakeup_r.recv(64):
                pass
        if self.interrupted is not None and self.kill_deadline is None:
            self._terminate()

    def on_signal(self, signum: int) -> None:
        """Called (from the Python signal handler) on SIGINT or SIGTERM: it is
        noted, and the loop stops the workers (at once, or when it starts)."""
        if self.interrupted is None:
            self.interrupted = signum
        self.signals += 1
        with contextlib.suppress(OSError):
            self._wakeup_w.send(b"\0")

    def _terminate(self) -> None:
        """Stop the workers: SIGTERM, at once for a SIGTERM, after
        INTERRUPT_GRACE_SECONDS for a SIGINT (or at a second signal); then
        SIGKILL after GRACE_SECONDS. Called at each signal, until SIGTERM."""
        if self.term_deadline is None:
            log.warning(
                "netmcore: the master got %s: stopping %d worker(s)",
                signal.Signals(self.interrupted or signal.SIGTERM).name,
                len(self.children) - len(self.spares),
            )
            self._begin_shutdown()
            self.notice_at = None  # it stops them
            grace = INTERRUPT_GRACE_SECONDS if self.interrupted == signal.SIGINT else 0.0
            self.term_deadline = time.monotonic() + grace
        if self.signals > 1 or time.monotonic() >= self.term_deadline:
            self._stop_step()

    def _next_stop(self) -> float | None:
        """When the next step of a stop is due (see _terminate), if one is."""
        if self.kill_deadline is not None:
            return None if self.killed else self.kill_deadline
        return self.term_deadline

    def _stop_step(self) -> None:
        if self.kill_deadline is None:
            self._kill_all(signal.SIGTERM)
            self.kill_deadline = time.monotonic() + GRACE_SECONDS
        elif not self.killed:
            self._kill_all(signal.SIGKILL)
            self.killed = True

    def _kill_all(self, signum: int) -> None:
        if signum == signal.SIGKILL and self.children:
            log.warning("netmcore: %d worker(s) ignored SIGTERM: killing them", len(self.children))
        for child in self.children.values():
            _send(child, signum)

    def _begin_shutdown(self) -> None:
        if self.shutting_down:
            return
        self.shutting_down = True
        trace("shutdown: waiting for %d worker(s)", len(self.children) - len(self.spares))
        if self.interrupted is None:
            self.notice_at = time.monotonic() + self.notice_after
        while self.parked:
            self._let_exit(self.parked.popleft())
        while self.spares:
            _send(self.spares.popleft(), signal.SIGKILL)

    # --- events from children ---------------------------------------------

    def _on_conn(self, conn: Conn, mask: int) -> None:
        if mask & selectors.EVENT_WRITE:
            conn.flush()
        if mask & selectors.EVENT_READ:
            self._read(conn)

    def _read(self, conn: Conn, batch: int | None = _MAX_BATCH) -> None:
        """Read and dispatch what ``conn`` has sent: ``batch`` messages at
        most (None: all), so that other links get their turn."""
        for _ in itertools.repeat(None) if batch is None else range(batch):
            try:
                n = conn.sock.recv_into(self._buf)
            except BlockingIOError:
                return
            except OSError:
                n = 0
            else:  # (for 3.12: see test_backedges)
                pass
            if n == 0:
                self._close_conn(conn)
                return
            try:
                msg = decoder.decode(self._view[:n])
            except msgspec.DecodeError as exc:
                log.error("netmcore: the master dropped a malformed message: %s", exc)
                continue
            self._dispatch(conn, msg)

    def _close_conn(self, conn: Conn) -> None:
        if conn.closed:
            return
        self._unwatch(conn.fd)
        conn.broken = conn.closed = True
        conn.sock.close()
        self.clients.discard(conn)
        # Nobody to tell; and the processes a map of that link started and
        # did not join (it crashed, or left its iteration unclosed) never will be.
        for watch in self.watches.drop_link(conn):
            self._forget_outcomes(watch.definition, watch.started)

    def _dispatch(self, conn: Conn, msg: Message) -> None:
        if conn.child is not None:
            self.sent += 1  # a process went on (see _look_for_stall)
        try:
            reply: Message | None
            if isinstance(msg, StartReq):
                _passed_on(conn, msg.arg.payload)
                if not msg.watch:
                    self.start(msg.fork_point, msg.arg, msg.inherit, (conn, msg.req))
                else:
                    # The watch first: a bad one is refused before anything starts.
                    key = (conn, msg.watch)
                    watch = self._watch_of(key, msg.fork_point, fork=True)
                    n = self.start(msg.fork_point, msg.arg, msg.inherit, (conn, msg.req))
                    self.watches.add(key, watch, n, self._has_ended(n))
                    self._note_started(watch, n)
                reply = None  # start answered it
            elif isinstance(msg, JoinReq):
                reply = self._join_request(conn, msg)
            elif isinstance(msg, WatchReq):
                reply = self._watch_request(conn, msg)
            elif isinstance(msg, WaitReq):
                reply = self._wait_request(conn, msg)
            elif isinstance(msg, EndedReq):
                reply = Ready(self.which_ended(msg.pids))
            elif isinstance(msg, JoinCancel):
                self._cancel_join(conn, msg.rid, msg.pid)
                reply = Done()
            elif isinstance(msg, Finished):
                reply = None
                self._on_finished(conn, msg.outcome)
            elif isinstance(msg, WaitingIn):
                reply = None
                self._note_shm_wait(conn, msg)
            elif isinstance(msg, ReleaseReq):
                self.release(msg.res_id, self._user(conn))
                reply = Done()
            elif isinstance(msg, ResGetReq):
                reply = _resources.op_get(msg.res_id, msg.kinds, self._user(conn), msg.mapped)
            elif isinstance(msg, HandOverReq):
                reply = _resources.op_hand_over(msg.res_id, self._user(conn))
            elif isinstance(msg, KillReq):
                reply = Signalled(self.kill(msg.pid, msg.signum))
            elif isinstance(msg, ResManageReq):
                reply = _resources.op_manage(msg.kind, msg.name, self._user(conn))
            elif isinstance(msg, ResCreateReq):
                reply = self._create(msg, self._user(conn))
            elif isinstance(msg, PluginReq):
                reply = self._plugins().serve(msg, (conn, msg.req, self._user(conn)))
            elif isinstance(msg, ResDestroyAllReq):
                _resources.destroy_all()
                reply = Done()
            elif isinstance(msg, StatusReq):
                *parts, reply = status_parts(self.os_pid, self.process_infos(), _resources.in_use())
                for part in parts:
                    conn.send(msgspec.structs.replace(part, req=msg.req))
            else:
                reply = Failed("NetmcoreError", f"unexpected message {type(msg).__name__}", None)
        except NoResource as exc:
            reply = Failed(type(exc).__name__, str(exc), getattr(exc.res_id, "n", None))
        except NetmcoreError as exc:
            reply = Failed(type(exc).__name__, str(exc), None)
        except (OSError, ValueError, TypeError) as exc:  # bad names, missing objects
            reply = Failed(type(exc).__name__, str(exc), None)
        except Exception as exc:  # a request no API sends: the master goes on
            log.error(
                "netmcore: the master refused a malformed %s", type(msg).__name__, exc_info=True
            )
            reply = Failed(type(exc).__name__, str(exc), None)
        else:  # (for 3.12: see test_backedges)
            pass
        if reply is None:
            return
        conn.send(msgspec.structs.replace(reply, req=getattr(msg, "req", 0)))
        if isinstance(msg, StartReq) and isinstance(reply, Failed):
            _payload.discard(msg.arg.payload)  # nobody else will read it

    def _note_shm_wait(self, conn: Conn, msg: WaitingIn) -> None:
        """A thread of a process waits in shared memory (or no longer does)."""
        record = _process_of(conn)
        if record is None or record.outcome is not None:
            return
        threads = self.shm_waits.setdefault(record.n, {})
        if not msg.what:
            threads.pop(msg.thread, None)
        elif msg.thread in threads or len(threads) < SHM_WAITS_MAX:
            threads[msg.thread] = msg.what[:SHM_WAIT_TEXT_MAX]
        if not threads:
            del self.shm_waits[record.n]

    def _on_finished(self, conn: Conn, outcome: WireOutcome) -> None:
        child = conn.child
        if child is None or child.record is None or child.record.outcome is not None:
            return
        record = child.record
        trace("deliver: process %d (%s) finished", record.n, record.definition.name)
        if isinstance(outcome, Returned):
            _passed_on(conn, outcome.value.payload)
        # It runs no more user code: it lets go of its resources and plugin
        # state before the joiner hears of it, so the joiner never sees them.
        self._forget_process(record, outcome)
        self._settle(record, outcome)
        if record.n == self.first or self.shutting_down:
            self._let_exit(child)  # the end of run waits for it
        else:
            self.parked.append(child)
            if len(self.parked) > PARKED_MAX:
                self._let_exit(self.parked.popleft())

    def _on_exit(self, child: Child) -> None:
        if not child.conn.closed:
            # Take all it sent before it ended (its Finished may come after
            # many requests of its threads); nobody reads the answers (a
            # forked child of it may hold the socket open), so none is sent.
            child.conn.broken = True
            self._read(child.conn, batch=None)
        self._close_conn(child.conn)
        ended = _reap(child)
        self._unwatch(child.pidfd)
        os.close(child.pidfd)
        if self.children.get(child.os_pid) is child:  # reaped elsewhere, its pid may be reused
            del self.children[child.os_pid]
        for name in child.kept:  # gone already, unless it crashed
            _ipc.unlink(name)
        record = child.record
        if record is None:  # a spare: killed at shutdown, or died unassigned
            self.spares = deque(c for c in self.spares if c is not child)
            return
        if self.parked:
            self.parked = deque(c for c in self.parked if c is not child)
        self.awaited.pop(record.n, None)
        record.child = None
        if record.arg is not None:
            _payload.discard(record.arg)  # read or not, nobody needs it now
        # Whatever its end, it may have made an object it never sent. Killed,
        # say, or with no result (a signal handler's exception as it packed
        # one): swept now, before its joiner hears of the end. With its
        # result sent, only in a rare case (a daemon thread of it in the
        # middle of a start, which a process does not wait for): swept with
        # the others that ended so, at most once per ENDED_SWEEP_SECONDS.
        outcome = record.outcome
        result = outcome.value.payload if isinstance(outcome, Returned) else None
        own = (record.n, result.name if isinstance(result, ShmRef) else None)
        if ended != _CLEAN_EXIT or not isinstance(outcome, Returned):
            self._sweep_unsent([own])
        else:
            self.unswept.append(own)
        self._forget_process(record, outcome if outcome is not None else ended)
        if record.outcome is None:
            if ended is None:
                log.warning(
                    "netmcore: process %d (%s, os pid %d) ended without a result, and was "
                    "reaped by another part of the program (a SIGCHLD handler, os.wait(), "
                    "os.waitpid(-1, ...)): its exit status is lost, and its outcome is "
                    "Crashed(None, None). netmcore reaps the processes it starts: wait only "
                    "for the os pids of the children you start yourself",
                    record.n,
                    record.definition.name,
                    child.os_pid,
                )
                ended = Ended(None, None)
            else:
                log.warning(
                    "netmcore: process %d (%s) ended without a result: %s",
                    record.n,
                    record.definition.name,
                    _describe(ended),
                )
            self._settle(record, ended)
        trace("worker end: process %d (os pid %d)", record.n, child.os_pid)
        if record.joined:
            self.records.pop(record.n, None)
        if record.n == self.first:
            self._begin_shutdown()

    # --- start, join, release ----------------------------------------------

    def start(
        self,
        fork_point: int,
        arg: WireEncap,
        inherit: list[int] | None,
        asker: tuple[Conn, int] | None = None,
    ) -> int:
        """Start a process; return its id. Called in the master, or for a
        worker: ``asker``, its link and request id, which get the id."""
        if self.shutting_down:
            why = (
                "the first process has ended and netmcore is shutting down; start every "
                "process before the first one returns"
                if self.interrupted is None
                # A SIGINT to the master alone (a kill -INT, a notebook's
                # interrupt, a supervisor): its workers run on until stopped.
                else f"the master got {signal.Signals(self.interrupted).name} and netmcore "
                "is stopping every process"
            )
            raise ShuttingDown(f"cannot start a process: {why}")
        definition = _registry.fork_point(fork_point)
        for res in inherit or ():
            entry = _resources.table.get(res)
            # One whose destroy has begun is no more than a gone one: no get finds it.
            if (entry is None or entry.destroying) and not _registry.is_point(res):
                gone = (
                    _resources.BEING_DESTROYED
                    if entry is not None
                    else _resources.ended_reason(res)
                )
                raise NoResource(
                    ResId(res),
                    f"inherit_resources names it, starting {definition.name}, and {gone}"
                    if gone
                    else f"inherit_resources names it, and no resource has this id (never "
                    f"made, or released): starting {definition.name}, pass the ids of "
                    "live resources, or 'all'",
                )
        n = next_process_id()
        shm = arg.payload if isinstance(arg.payload, ShmRef) else None
        record = Record(n, definition, shm, time.monotonic())
        assign = Assign(n, fork_point, arg, inherit)
        child = None
        told = False
        if asker is not None and self.serving and self.spares:
            # The asker hears first. A process woken by a send on a Unix socket
            # may take the sender's CPU at once: woken first, the spare held
            # the master (and so the asker, whose join it then also held)
            # until its result was sent. So a worker's start and join are in
            # before its process has run.
            _tell(asker, n)
            told = True
        while self.serving and self.spares and child is None:
            spare = self.spares.popleft()
            if spare.conn.send(assign):
                child = spare
            else:
                # Dead, or alive and unable to take it (a send error of the
                # link): a spare out of the pool must end, or the run would
                # wait for it. A spare exits as its link closes.
                self._close_conn(spare.conn)
        if child is None:
            # In the loop (a worker's start), only the master's bookkeeping
            # changes, so the pool's worth of spares is forked in the same batch.
            # A start from the master's own user code (init_ctrl, first_process)
            # forks just its process: that code may change the master's state
            # before its next start, and a spare forked now would not see it.
            spares = SPARES - 1 if self.serving else 0
            try:
                child = self._fork([assign, *[None] * spares], record)[0]
            except OSError as exc:
                if told:
                    # Every spare had died, and no process could be forked:
                    # the asker has the id, of a process that ended at once.
                    log.error(
                        "netmcore: process %d (%s) could not be started: no process for "
                        "it (%s); the system is short of processes, memory or descriptors",
                        n,
                        definition.name,
                        exc,
                    )
                    _payload.discard(arg.payload)
                    self.records[n] = record
                    self._settle(record, Ended(None, None))
                    return n
                give_back_process_id(n)
                raise NetmcoreError(
                    f"cannot start {definition.name}: no process for it ({exc}); the system "
                    "is short of processes, memory or descriptors (see `ulimit -u` and "
                    "`ulimit -n`): end some, or start fewer"
                ) from exc
        if child.record is None:  # a spare's (a child forked for it is bound already)
            _bind(child, record, self.records)
        self.awaited[n] = record.started
        recent = self.recent_types
        recent.pop(fork_point, None)
        recent[fork_point] = None
        if len(recent) > RECENT_TYPES:
            del recent[next(iter(recent))]
        trace("start: process %d (%s) in os pid %d", n, definition.name, child.os_pid)
        if asker is not None and not told:
            _tell(asker, n)
        return n

    def join(
        self, join_point: int, n: int, keep: Callable[[WireOutcome], None]
    ) -> WireOutcome | None:
        """The outcome of process ``n``, for the master's own join_nowait: it
        is used up if it is there; None if it is not yet. ``keep`` has it
        first (see _client._interrupted), and the record is marked joined
        with no call in between: a signal handler's exception at any point
        leaves the outcome either in the table or kept, never in both, nor
        in neither."""
        record = self._joinable(join_point, n)
        if record.outcome is None:
            return None
        keep(record.outcome)  # its last step is its store: it returns with no call after
        record.joined = True
        return self._deliver_outcome(record)

    def _joinable(self, join_point: int | None, n: int) -> Record:
        """The record of process ``n``, if a join through ``join_point`` may
        take it; None: through its own type's, whichever it is (a watch of
        any type's, netmcore.as_completed's)."""
        definition = None if join_point is None else _registry.join_point(join_point)
        record = self.records.get(n)
        if record is None or record.joined:
            if _never_started(n):
                raise UnknownProcess(f"process {n} was never started: {_ids_so_far()}")
            raise UnknownProcess(
                f"process {n} is unknown: it has been joined already (only the first join "
                f"of a process succeeds), or it has ended with nobody to join it {_UNJOINABLE}"
            )
        if definition is None:
            started_by = record.definition
            if started_by.join_point.n not in _registry.by_join_point:
                raise NoResource(
                    started_by.join_point,
                    f"process {n} is a {started_by.name} process, whose join point was "
                    "released: nobody can join it, so there is no end to wait for. Leave it "
                    "out of the ids (it runs on, and its result is dropped as it ends)",
                )
            return record
        if record.definition is not definition:
            started_by = record.definition
            if started_by.name == definition.name:
                # Two process types of one name: a module or a notebook cell
                # run twice defines a new type, with its own join point.
                raise WrongJoinPoint(
                    f"process {n} is a {started_by.name} process of join point "
                    f"{started_by.join_point!r}, and this join point, "
                    f"{definition.join_point!r}, is of another process type of the same "
                    f"name: {definition.name} was defined twice (a module or a notebook "
                    "cell run again, say), and each definition is a type of its own. Join "
                    "it through the definition that started it"
                )
            raise WrongJoinPoint(
                f"process {n} is a {started_by.name} process, not a "
                f"{definition.name}: join it through the join point of "
                f"{started_by.name}"
            )
        return record

    def _join_request(self, conn: Conn, msg: JoinReq) -> Message | None:
        _check_deadline(msg.deadline)
        if _has_returned(conn):
            # Its answer would go to a process about to exit, and the
            # outcome with it.
            raise ContextError(
                "a thread of a process whose function has returned cannot join: the "
                "process is ending. Join before the function returns"
            )
        record = _process_of(conn)
        if msg.wait and record is not None and record.n == msg.pid:
            raise ContextError(
                f"process {msg.pid} cannot join itself: it would wait for its own end "
                "forever; its joiner is another process (or extract_result)"
            )
        joined = self._joinable(msg.join_point, msg.pid)
        if joined.outcome is not None:
            self._answer(joined, conn, msg.req)
            return None
        if not msg.wait:
            return Joined(None)
        if msg.deadline is not None and msg.deadline <= time.monotonic():
            return _join_timed_out(msg.pid)  # so timeout=0 is a try
        waiter = (conn, msg.req)
        joined.waiters.append(waiter)
        if msg.deadline is not None:
            self._time_join(msg.pid, waiter, msg.deadline)
        return None  # answered when the outcome arrives, or at the deadline

    def _watch_request(self, conn: Conn, msg: WatchReq) -> Message:
        """Answer which of ``msg.pids`` have ended; look each up first as a
        join would (no watch), or watch the others."""
        record = _process_of(conn)
        for n in msg.pids if not msg.watch else ():
            if record is not None and record.n == n:
                raise ContextError(
                    f"process {n} cannot wait for its own end: it would wait forever"
                )
            self._joinable(msg.join_point, n)
        key = (conn, msg.watch)
        watch = self._watch_of(key, msg.join_point, fork=False) if msg.watch else None
        ended = []
        for n in msg.pids:
            if self._has_ended(n):
                ended.append(n)
            elif watch is not None:
                self.watches.add(key, watch, n, False)
        return Ready(ended)

    def _watch_of(self, key: tuple[Conn, int], point: int | None, *, fork: bool) -> _watches.Watch:
        """The watch ``key``, of the processes of fork (or join) point
        ``point``; None: of any type."""
        if point is None:
            return self.watches.get(key, None)
        definition = _registry.fork_point(point) if fork else _registry.join_point(point)
        return self.watches.get(key, definition)

    def _note_started(self, watch: _watches.Watch, n: int) -> None:
        """Process ``n`` was started into ``watch``: its close may forget it.
        Those joined since are swept out as the set doubles, so that it
        holds about twice those not yet joined, at a constant cost a start."""
        watch.started.add(n)
        if len(watch.started) >= watch.sweep_at:
            watch.started = {m for m in watch.started if not self._joined_or_gone(m)}
            watch.sweep_at = max(64, 2 * len(watch.started))

    def _joined_or_gone(self, n: int) -> bool:
        record = self.records.get(n)
        return record is None or record.joined

    def _forget_outcomes(self, definition: _registry.Definition, pids: set[int]) -> None:
        """Nobody will join these processes of ``definition``: the outcome
        of each is dropped now, or as it comes."""
        for n in pids:
            record = self.records.get(n)
            if record is None or record.joined or record.definition is not definition:
                continue
            if record.outcome is None:
                record.dropped = True  # see _settle
            else:
                self._drop(record)

    def which_ended(self, pids: list[int]) -> list[int]:
        """Those of processes ``pids``, of any types, that have ended (a
        joined one has); UnknownProcess for an id never handed out."""
        for n in pids:
            if _never_started(n):
                raise UnknownProcess(f"process {n} was never started: {_ids_so_far()}")
        # Not _has_ended: a process whose join point was released still runs,
        # and may still send.
        records = self.records
        return [n for n in pids if (r := records.get(n)) is None or r.outcome is not None]

    def _has_ended(self, n: int) -> bool:
        """Whether process ``n`` has ended, for a watch: gone from the table
        (joined) counts too, and so does one that nobody can join any more
        (its join point released: see release)."""
        record = self.records.get(n)
        return (
            record is None
            or record.outcome is not None
            or record.definition.join_point.n not in _registry.by_join_point
        )

    def _wait_request(self, conn: Conn, msg: WaitReq) -> Message | None:
        """Answer what ended in the watch ``msg.watch``, or wait for it."""
        _check_deadline(msg.deadline)
        key = (conn, msg.watch)
        watch = self.watches.by_key.get(key)
        if msg.close:
            dropped = self.watches.drop(key)
            if dropped is not None and msg.forget:
                # Those started into it that nobody joined are forgotten.
                self._forget_outcomes(dropped.definition, dropped.started)
            return Done()
        if watch is None:
            raise ValueError(f"this link has no watch {msg.watch}")
        definition = watch.definition  # (None: of any type, which no release ends)
        if definition is not None and definition.join_point.n not in _registry.by_join_point:
            raise NoResource(definition.join_point, _released(definition))
        if watch.waiter is not None:
            raise ValueError(f"watch {msg.watch} is waited on already")
        if watch.ended or not watch.left:
            return Ready(_watches.take_ended(watch))
        if msg.deadline is not None and msg.deadline <= time.monotonic():
            return _wait_timed_out()
        self.watches.wait(key, watch, msg.req)
        if msg.deadline is not None:
            self._time_join(ANY_PROCESS, (conn, msg.req), msg.deadline)
        return None  # answered when one of them ends, or at the deadline

    def _answer(self, record: Record, conn: Conn, req: int) -> bool:
        """Send ``record``'s outcome to the join ``req`` of ``conn``; it is used
        up only if it went out. A joiner that died with its request unread
        (read at its end, or just before) takes nothing: the outcome stays
        for a live joiner."""
        assert record.outcome is not None
        if not conn.send(Joined(record.outcome, req=req)):
            return False
        _handed(conn, record.outcome)
        self._deliver_outcome(record)
        return True

    def _time_join(self, n: int, waiter: tuple[Conn, int], deadline: float) -> None:
        """Answer the waiting join ``waiter`` of process ``n`` with a timeout
        at ``deadline``, if it still waits then.

        A join answered (or withdrawn) before its deadline leaves its entry in
        the heap. Such entries are swept out when the heap has doubled since
        the last sweep, so that it holds at most about twice the joins that
        wait with a timeout, at a constant cost per join.
        """
        timers = self.join_timers
        if len(timers) >= self._join_timers_sweep_at:
            timers[:] = [t for t in timers if self._still_waits(t[2], t[3])]
            heapq.heapify(timers)
            self._join_timers_sweep_at = max(JOIN_TIMERS_MIN, 2 * len(timers))
        heapq.heappush(timers, (deadline, next(self._join_timer_order), n, waiter))

    def _still_waits(self, n: int, waiter: tuple[Conn, int]) -> bool:
        if n == ANY_PROCESS:
            return waiter in self.watches.waiting
        record = self.records.get(n)
        return record is not None and waiter in record.waiters

    def _expire_joins(self) -> None:
        """Answer with a timeout every join whose deadline has passed and that
        still waits. It is not used up: the process can be joined again."""
        timers, now = self.join_timers, time.monotonic()
        while timers and timers[0][0] <= now:
            _, _, n, waiter = heapq.heappop(timers)
            if not self._still_waits(n, waiter):
                continue
            conn, req = waiter
            if n == ANY_PROCESS:
                self.watches.cancel(conn, req)
                conn.send(msgspec.structs.replace(_wait_timed_out(), req=req))
                continue
            self.records[n].waiters.remove(waiter)
            trace("join: process %d not ended by the join's deadline", n)
            conn.send(msgspec.structs.replace(_join_timed_out(n), req=req))

    def kill(self, n: int, signum: int) -> bool:
        """Send ``signum`` to the OS process carrying process ``n``; whether it
        got it (False: it has ended, or finished and only waits to exit).

        Through the child's pidfd: an os pid may belong to another program by
        now (the child reaped, its pid reused), a pidfd never does. The pidfd
        stays open until ``_on_exit`` reaps the child, and that runs in this
        thread, never during this call.
        """
        record = self.records.get(n)
        if record is None or record.joined:
            if _never_started(n):
                raise UnknownProcess(
                    f"cannot signal process {n}, which was never started: {_ids_so_far()}"
                )
            raise UnknownProcess(
                f"cannot signal process {n}, which is unknown: it has been joined already, "
                f"or it has ended with nobody to join it {_UNJOINABLE}. Pass an id that "
                "start() returned and no join has taken yet (a process that has ended "
                "has nothing to signal)"
            )
        if signum != 0 and signum not in VALID_SIGNALS:  # a request made by hand
            raise ValueError(f"cannot signal process {n}: {signum} is not a valid signal")
        child = record.child
        if child is None or record.outcome is not None:
            return False
        # Ended but not yet reaped (a zombie): a signal would "reach" it and do
        # nothing. WNOWAIT leaves it for _on_exit to reap. ECHILD: it has ended,
        # and another part of the program reaped it (a SIGCHLD handler).
        try:
            if os.waitid(os.P_PIDFD, child.pidfd, os.WEXITED | os.WNOHANG | os.WNOWAIT):
                return False
        except ChildProcessError:
            return False
        try:
            signal.pidfd_send_signal(child.pidfd, signum)
        except ProcessLookupError:
            return False
        trace("kill: process %d (os pid %d) sent %s", n, child.os_pid, signal_name(signum))
        if signum != 0:
            record.signalled = signum
        return True

    def _cancel_join(self, conn: Conn, rid: int, n: int) -> None:
        """Drop the waiting join (of process ``n``) or wait ``rid`` of
        ``conn``, if it still waits. (If its outcome went out already, it
        comes before this answer, and the caller keeps it: see
        _client.join_outcome.) Found through ``n``: a search of every
        record cost each withdrawn join as many steps as processes live."""
        if self.watches.cancel(conn, rid):
            return
        record = self.records.get(n)
        if record is not None and (conn, rid) in record.waiters:
            record.waiters.remove((conn, rid))

    def _deliver_outcome(self, record: Record) -> WireOutcome:
        assert record.outcome is not None
        self._joined(record)
        trace("join: process %d's outcome delivered, forgotten", record.n)
        return record.outcome

    def _joined(self, record: Record) -> None:
        """No join will take ``record`` any more: it goes once its process has too."""
        record.joined = True
        self.awaited.pop(record.n, None)
        if record.child is None:
            self.records.pop(record.n, None)

    def _settle(self, record: Record, outcome: WireOutcome) -> None:
        """Record an outcome, tell the waits for it, and hand it to the first
        live waiter."""
        record.outcome = outcome
        if record.n == self.first and isinstance(outcome, Returned):
            # After the signal that stops the run: it caught the Ctrl-C (see
            # run). Not before it: the Ctrl-C then stopped the processes run
            # waited for, or a startup() program's services. (A SIGINT to the
            # master alone, which no worker got, counts too when the first
            # process returns within the grace second: see README.)
            self.first_caught_interrupt = self.interrupted is not None
        self._tell_watches(record.n)
        if (record.dropped and not record.waiters) or (
            record.definition.join_point.n not in _registry.by_join_point
        ):
            # Nobody will join: let go (a join that waits for it all the
            # same has it, below), or its join point released.
            self._drop(record)
            return
        waiters, record.waiters = record.waiters, []
        for i, (conn, req) in enumerate(waiters):
            if _has_returned(conn):
                # A thread still waiting in a process that has returned ends
                # with it, unanswered: the outcome stays for a live joiner.
                continue
            if self._answer(record, conn, req):
                for late, late_req in waiters[i + 1 :]:
                    message = f"process {record.n} was joined by another caller first"
                    late.send(Failed("UnknownProcess", message, None, req=late_req))
                return

    def _tell_watches(self, n: int) -> None:
        """Process ``n`` has ended, for the watches it is in: answer their waits."""
        for key in self.watches.process_ended(n):
            req, ended = self.watches.answer(key)
            key[0].send(Ready(ended, req=req))

    def _drop(self, record: Record) -> None:
        if isinstance(record.outcome, Returned):
            _payload.discard(record.outcome.value.payload)
        self._joined(record)
        trace("forget: process %d (nobody will join it)", record.n)

    def release(self, res_id: int, user: int) -> None:
        """Release a resource for ``user`` (a no-op if it was released already)."""
        released = _registry.release_point(res_id)
        if released is None:
            _resources.release(res_id, user)
            return
        definition, was_join_point = released
        if was_join_point:
            message = (
                f"the join point of {definition.name} was released while this join "
                "waited: nobody can join its processes any more"
            )
            # The waits of its type's watches fail first: those of the
            # watches of any type then hear of its processes still running
            # as ended (nobody can join them: there is nothing to wait for),
            # as a cancelled future is done for concurrent.futures.
            for conn, req in self.watches.release(definition):
                conn.send(Failed("NoResource", _released(definition), res_id, req=req))
            for record in list(self.records.values()):
                if record.definition is not definition:
                    continue
                waiters, record.waiters = record.waiters, []
                for conn, req in waiters:
                    conn.send(Failed("NoResource", message, res_id, req=req))
                if record.outcome is not None:
                    self._drop(record)
                else:
                    self._tell_watches(record.n)

    def _sweep_unsent(self, ended: list[tuple[int, str | None]]) -> None:
        """Unlink the objects that the processes ``ended`` (numbers, with the
        name of the object of the result each sent, if it had one), which
        have ended, made and never sent on: a result or an argument one was
        writing or sending as it died, or packing as a signal handler's
        exception cut it short; or, its result sent, an argument that a
        daemon thread of it was sending as it exited (or sent once the
        master had stopped reading it). They are named with its tag (see
        _payload.tag_of), and nothing else knows of them.
        The listing of /dev/shm (every program's objects) is made once a
        loop: one per process was quadratic as thousands were killed. One
        made before this process ended has all it made, and a name listed
        and gone since is no harm.

        Those it sent on are the objects of payloads the master knows of:
        another process's argument, a result not yet joined, or one handed
        to a process in a join (which may have sent it on again, under the
        same name); they are not touched. The tables are looked through
        only when a process left some other than its own result, which a
        process that returned a large value leaves as a rule.
        """
        if self.shm_listing is None:
            self.shm_listing = _ipc.names_under(self.shm_prefix)
        results = dict(ended)
        made = []
        for name in self.shm_listing:
            n = _payload.maker_of(name, self.shm_prefix)
            if n in results and name != results[n]:
                made.append(name)
        if not made:
            return
        known: set[str] = set()
        for record in self.records.values():
            outcome = record.outcome
            for payload in (
                record.arg,
                outcome.value.payload if isinstance(outcome, Returned) else None,
            ):
                if isinstance(payload, ShmRef):
                    known.add(payload.name)
        for child in self.children.values():
            known |= child.kept
        for name in made:
            if name not in known:
                _ipc.unlink(name)

    def _forget_process(self, record: Record, outcome: WireOutcome | None) -> None:
        """The process of ``record`` runs no more code (``outcome`` is how it
        ended): it leaves every users set, its mutexes pass on, a protected
        semaphore takes back its effect, a barrier it failed breaks. What
        fails here is logged: the end of the process (its outcome for the
        joiner, its exit) goes on whatever it is."""
        n = record.n
        self.shm_waits.pop(n, None)
        try:
            _resources.leave_all(n, _resource_user_end(record, outcome))
        except Exception:
            log.exception("netmcore: the master could not release what process %d used", n)
        else:  # (for 3.12: see test_backedges)
            pass
        if self.plugins is not None:
            try:
                self.plugins.forget(n, _how_it_failed(record, outcome))
            except Exception:
                log.exception("netmcore: the plugins could not forget process %d", n)

    # --- plugins ----------------------------------------------------------------

    def attach_plugins(self) -> None:
        """Attach the plugins (shared variables, mutexes, semaphores, message
        boxes); attaching them twice does nothing."""
        if self.plugins is None:
            self.plugins = PluginHost(lambda conn, reply: conn.send(reply), self.which_ended)

    def _plugins(self) -> PluginHost:
        if self.plugins is None:
            raise PluginError(
                "the plugins are not attached to this master: call "
                "netmcore.add_plugins(controller) in run's init_ctrl"
            )
        return self.plugins

    # --- resources -------------------------------------------------------------

    def _user(self, conn: Conn) -> int:
        record = _process_of(conn)
        if record is None:
            raise ContextError("only a running process can use resources")
        return record.n

    def _create(self, msg: ResCreateReq, user: int) -> ResInfo:
        _check_create(msg)
        prefix = msg.prefix or self.object_prefix
        info = _resources.op_create(msg.kind, prefix, msg.size, user)
        if msg.kind == ResourceType.POSIX_SHM_PREALLOCATED.value:
            self.refresh_spares()
        return info

    def refresh_spares(self) -> None:
        """The master's memory changed (a new mapping): spares forked before are
        no longer copies of it, so they go, and fresh ones are forked."""
        while self.spares:
            _send(self.spares.popleft(), signal.SIGKILL)

    def _on_resource_change(self, op: str, typ: ResourceType, name: str) -> None:
        if self.record is not None:
            self.record.write(op, typ.value, name)
        _watchdog.noted_in_run(op, typ, name)

    # --- the control socket --------------------------------------------------

    def _accept(self, mask: int) -> None:
        try:
            sock, _ = self._listener.accept()
        except BlockingIOError:
            return
        if peer_uid(sock) != os.getuid():
            log.warning("netmcore: refused a control connection from another user")
            sock.close()
            return
        conn = Conn(sock, self)
        self.clients.add(conn)
        self._watch(conn.fd, self._conn_handler(conn))

    def process_infos(self) -> list[ProcessInfo]:
        now = time.monotonic()
        waits = self.waits()
        return [
            ProcessInfo(
                r.n,
                r.child.os_pid if r.child else 0,
                r.definition.name,
                r.state,
                round(now - r.started, 3),
                waits.get(r.n, []),
            )
            for r in self.records.values()
        ]

    def waits(self) -> dict[int, list[str]]:
        """What each process waits for in the master, by process id: its
        joins, its waits for the first of several ends (as_completed, map),
        its plugin calls; and the waits in a Mailbox it has told of (see
        _client.tell_waiting). Other waits in shared memory (a ShmMutex, a
        semaphore) are the process's own, and not seen here."""
        found: dict[int, list[str]] = {}

        def note(conn: Conn, what: str) -> None:
            waiter = _process_of(conn)
            # A join of a process that died stays in the joined one's record
            # (skipped as its outcome comes), but it waits no more.
            if waiter is not None and not (conn.closed or conn.broken):
                found.setdefault(waiter.n, []).append(what)

        for record in self.records.values():
            for conn, _ in record.waiters:
                note(conn, f"the join of process {record.n}")
        for (conn, _), watch in self.watches.by_key.items():
            if watch.waiter is not None:
                left = reprlib.repr(sorted(watch.left))
                note(conn, f"the first end of processes {left}")
        for n, what in self.plugins.waits() if self.plugins is not None else ():
            found.setdefault(n, []).append(what)
        for n, threads in self.shm_waits.items():
            found.setdefault(n, []).extend(threads.values())
        return {n: _grouped(whats) for n, whats in found.items()}

    # --- the end -------------------------------------------------------------

    def close(self) -> None:
        """Kill and reap whatever is left, and free every descriptor and shm object.

        SIGINT and SIGTERM wait until it is done: a Ctrl-C that stopped it
        half-way would leave children running. They are blocked meanwhile, and
        take effect (as KeyboardInterrupt, ...) when it returns.
        """
        self.ended = True
        with_signals_blocked(INTERRUPTS, self._close)

    def _close(self) -> None:
        for child in list(self.children.values()):
            _send(child, signal.SIGKILL)
            _reap(child)
            os.close(child.pidfd)
            child.conn.sock.close()
        self.children.clear()
        self.spares.clear()
        self.parked.clear()
        for conn in self.clients:
            conn.sock.close()
        self.clients.clear()
        for record in self.records.values():
            if not record.joined:  # startup's first process, or one nobody joined
                trace("forget: process %d (never joined; the run has ended)", record.n)
        self.records.clear()
        self.sel.close()
        self._listener.close()
        self._wakeup_r.close()
        self._wakeup_w.close()
        _payload.forget_recycled()
        swept = _ipc.unlink_prefix(self.shm_prefix)
        if swept:
            trace("swept %d unread payload(s) from shared memory", len(swept))
        self._end_cleanup()

    def _end_cleanup(self) -> None:
        # Outside run again: the program's guard takes over what is still
        # managed, before this run's watchdog goes (no moment is uncovered).
        # Repeated through signal handlers' exceptions: one that cut it short
        # left what the run kept with no guard until the program's next
        # change. Safe to repeat: see _watchdog.guard_table. Whatever ends it,
        # the end below goes on (the exception is raised after): a record
        # left unfinished would have the next run in the directory unlink
        # what this living program keeps.
        interrupt: BaseException | None = None
        failure: BaseException | None = None
        tries = 0
        while True:
            try:
                _watchdog.guard_table()
                break
            except BaseException as exc:
                tries += 1
                if not failed_of_its_own(exc, tries):
                    interrupt = exc  # raised once the guard has it all
                    continue
                if isinstance(exc, OSError) and exc.errno is not None:
                    log.warning(  # the run's result stands
                        "netmcore: no guard process could be forked at the end of run (%s): "
                        "what the program still manages is destroyed at its normal exit, "
                        "but not if it is killed",
                        exc,
                    )
                else:
                    failure = exc  # a bug's, or a handler's of those kinds
                break
        if self.record is not None:
            # A clean end: what is still managed belongs to this living program,
            # so the next start must not unlink it.
            self.record.close(clean=True)
        # The run ends when the watchdog is told so: it puts the clean record
        # in place, removes a temporary directory, and goes. A master killed
        # before that leaves nothing (its watchdog cleans up); one killed
        # after leaves what the program manages for itself, as outside run.
        # The directory's lock is let go only after this (sockdir.close runs
        # later): a master that took it before this watchdog had finished
        # could have its record replaced or removed by ``finish_record``.
        ended = self.watchdog.stand_down(ended=True)
        if not ended and self.record is not None:
            _cleanup.finish_record(self.record.path)  # no watchdog: someone killed it
        if failure is not None:
            raise failure
        if interrupt is not None:
            raise interrupt


# What a worker's ResCreateReq may make: the kinds its API creates.
_CREATABLE = frozenset(
    kind.value
    for kind in (
        ResourceType.POSIX_SHM,
        ResourceType.POSIX_SEM,
        ResourceType.POSIX_SHM_PREALLOCATED,
    )
)


def _check_create(msg: ResCreateReq) -> None:
    """Refuse a create request the worker's API would not have sent (its
    checks are made there, before anything is sent): a name with a NUL made
    posix_ipc crash the master (SIGSEGV), and another kind went into the
    table as a fork point, say."""
    if msg.kind not in _CREATABLE:
        raise ValueError(f"a worker cannot create a {msg.kind!r}")
    if msg.prefix:
        _resources.validate_prefix(msg.prefix)
    if msg.kind == ResourceType.POSIX_SEM.value:
        if not 0 <= msg.size <= _ipc.SEM_VALUE_MAX:
            raise ValueError(f"a semaphore's first value is 0 to {_ipc.SEM_VALUE_MAX}")
    else:
        _resources.validate_size(msg.size)


def _process_of(conn: Conn) -> Record | None:
    """The process ``conn`` links to (None for a spare or an admin client)."""
    return conn.child.record if conn.child is not None else None


def _grouped(waits: list[str]) -> list[str]:
    """A process's waits as status shows them: each kind once, counted
    ("... (x1500)", the threads that wait so), at most WAITS_SHOWN of them,
    so that one process's entry fits a message."""
    counts = collections.Counter(waits)  # in the order first met
    shown = [what if k == 1 else f"{what} (x{k})" for what, k in counts.items()]
    if len(shown) > WAITS_SHOWN:
        shown[WAITS_SHOWN:] = [f"and {len(shown) - WAITS_SHOWN} more"]
    return shown


# Why a process that was started, and is not joined, is unknown once it has ended.
_UNJOINABLE = "(its type's join point was released, or the map that started it was left)"


def _never_started(n: int) -> bool:
    """Whether no process of this program ever had the id ``n``: they are
    handed out in order, from 0 (see _ids.next_process_id)."""
    return not 0 <= n < peek_process_id()


def _ids_so_far() -> str:
    """The ids handed out so far, and the fix, for a process never started."""
    issued = peek_process_id()
    if issued == 0:
        return "no process has been started yet; pass the id that start() returned"
    return (
        f"process ids are handed out in order, and the last one so far is {issued - 1}; "
        "pass the id that start() returned"
    )


def _join_timed_out(n: int) -> Failed:
    # The joiner words the error: it knows the timeout it gave.
    return Failed("TimeoutError", f"process {n} has not ended by the join's deadline")


def _check_deadline(deadline: float | None) -> None:
    # NaN is never due, and would stay first in the heap: no join timed out again.
    if deadline is not None and not math.isfinite(deadline):
        raise ValueError(f"a deadline must be a finite time, not {deadline!r}")


def _released(definition: _registry.Definition) -> str:
    return (
        f"the join point of {definition.name} was released: nobody can join its processes any more"
    )


def _wait_timed_out() -> Failed:
    return Failed("TimeoutError", "none of the processes had ended by the wait's deadline")


def _passed_on(conn: Conn, payload: Payload) -> None:
    """A child sent ``payload`` on (a start's argument, its result). If it
    wrote it into an object it was given (its argument, a result it
    joined), the object is the reader's now: the end of the child must
    not unlink it under the reader, who may not have mapped it yet."""
    child = conn.child
    if child is None or not isinstance(payload, ShmRef):
        return
    child.kept.discard(payload.name)
    record = child.record
    if record is not None and record.arg is not None and record.arg.name == payload.name:
        record.arg = None


# How a process that ended as a process does exits (see _worker.main).
_CLEAN_EXIT = Ended(0, None)


def _bind(child: Child, record: Record, records: dict[int, Record]) -> None:
    """``child`` carries the process of ``record``, which the table has."""
    child.record = record
    record.child = child
    records[record.n] = record


def _tell(asker: tuple[Conn, int], n: int) -> None:
    conn, req = asker
    conn.send(Started(n, req=req))


def _handed(conn: Conn, outcome: WireOutcome | None) -> None:
    """``conn`` was sent ``outcome`` in a join: a large result's object is its
    child's to keep now (see Child.kept)."""
    if conn.child is not None and isinstance(outcome, Returned):
        payload = outcome.value.payload
        if isinstance(payload, ShmRef):
            conn.child.keep(payload.name)


def _has_returned(conn: Conn) -> bool:
    """Whether ``conn`` is the link of a process whose function has returned."""
    record = _process_of(conn)
    return record is not None and record.outcome is not None


def _send(child: Child, signum: int) -> None:
    """Send ``signum`` to ``child`` (if it is still there). Through its pidfd,
    never its os pid: a child that another part of the program reaped (a
    SIGCHLD handler, os.wait()) may have left its os pid to another program."""
    with contextlib.suppress(ProcessLookupError):
        signal.pidfd_send_signal(child.pidfd, signum)


def _reap(child: Child) -> Ended | None:
    """Reap ``child``, waiting for it to end; how it ended, or None if another
    part of the program reaped it first (its exit status is lost then).

    Through its pidfd, never its os pid: once another has reaped the child,
    its os pid may be another child's, whose end waitpid would wait for.
    """
    try:
        info = os.waitid(os.P_PIDFD, child.pidfd, os.WEXITED)
    except ChildProcessError:
        return None
    assert info is not None  # None only with WNOHANG
    if info.si_code == os.CLD_EXITED:
        return Ended(info.si_status, None)
    return Ended(None, info.si_status)  # CLD_KILLED, CLD_DUMPED


def _how_it_failed(record: Record, outcome: WireOutcome | None) -> str | None:
    """How the process of ``record`` failed (``outcome`` None: reaped by
    another part of the program), for those it leaves waiting; None if it
    returned."""
    how = _failure(outcome, message=True)
    if how is None:
        return None
    return f"process {record.n} ({record.definition.name}), one of its parties, {how}"


def _cpu_ticks(record: Record) -> int | None:
    """The CPU time the process of ``record`` has used, all its threads', in
    clock ticks (None if it cannot be read: it has just ended)."""
    assert record.child is not None
    try:
        with open(f"/proc/{record.child.os_pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except OSError:
        return None
    return int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)


def _resource_user_end(record: Record, outcome: WireOutcome | None) -> _resources.Failure | None:
    """How the process of ``record`` failed, for the error of a get of a
    resource gone with it: its own error, or a kill asked for."""
    how = _failure(outcome)
    if how is None:
        return None
    if isinstance(outcome, Ended) and outcome.signal is not None:
        if outcome.signal == record.signalled:
            how = (
                f"was killed ({signal_name(outcome.signal)}) on request: netmcore.kill, a "
                "map's timeout, or python -m netmcore kill"
            )
        return _resources.Failure(how, own_error=False)
    return _resources.Failure(how, own_error=isinstance(outcome, Raised | Invalid))


def _failure(outcome: WireOutcome | None, *, message: bool = False) -> str | None:
    """How a process failed, as "raised KeyError" (with its ``message``, if
    asked): ``outcome`` None is one reaped by another part of the program.
    None if it returned."""
    if isinstance(outcome, Returned):
        return None
    if isinstance(outcome, Raised):
        return f"raised {outcome.type_name}" + (f": {outcome.message}" if message else "")
    if isinstance(outcome, Invalid):
        return "returned an invalid result" + (f" ({outcome.message})" if message else "")
    if isinstance(outcome, Ended):
        return f"ended without a result ({_describe(outcome)})"
    return "ended without a result"


def _describe(ended: Ended) -> str:
    if ended.signal is not None:
        return f"killed by signal {signal_name(ended.signal)}"
    return f"exit code {ended.exitcode}"


def current_master(what: str) -> Master:
    master = _context.current.master
    if master is None:
        raise ContextError(f"{what} needs a running netmcore master")
    return master
