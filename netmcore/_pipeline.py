"""Typed pipelines: stages of process types, N workers each, checked by mypy.

::

    results = netmcore.Pipeline(Parse, workers=2).then(Score, workers=4).then(Top).run(lines)

``Pipeline[In, Out]``: ``then`` accepts only a stage whose input is the
previous stage's output, so mypy rejects a pipeline whose stages do not fit.

The process that calls ``run`` drives the pipeline (a hub)::

    items ──▶ driver ──Work──▶ stage 0 workers ──Done──▶ driver ──Work──▶ stage 1 ...
                 ▲                                           │
                 └──────────────── results, in order ◀───────┘

Each worker owns a shared-memory Mailbox of its input; everything a worker
produces comes back to the driver's Mailbox. The driver gives each worker at
most ``queue_size`` items at a time (credits), so no send ever blocks, and it
reads the input only while the pipeline holds fewer items than its workers
can (and, in input order, holds back fewer results than that, for the items
before them), so memory stays flat on an endless input. Because the driver
knows which items each worker holds, a worker that dies (SIGKILL, a crash)
loses nothing silently: its items are given to another worker, or reported.

Items go in batches sized by what they cost, as joblib's auto batch size: each
worker times its items and says so in its answers, and the driver sizes each
stage's batches to about ``BATCH_SECONDS`` of work, and gives a worker about
two batches at a time (one it works on, one queued, so that it never waits
for the driver between two), never more than ``queue_size`` items. Tiny items
still travel many a message. Items that take over ``LONE_SECONDS`` travel one
at a time, and a worker holds only the one it is on: each goes to the first
worker free, in input order, as ``Executor.map`` gives them out. Until a
stage's first answer, nothing is known: one item a batch, two a worker.

A worker answers a batch with one message, as it ends. An item may take far
longer than its stage's others did (or never end): once the worker has been
on one over ``LONE_SECONDS``, a thread of the worker sends the results of the
items before it in its batch, as if the batch had ended there. No result
waits for a long item but its own: not those taken as they complete, nor
those before it in input order (a loop that leaves the iteration once it has
them need not wait for the long item, whose worker is killed at shutdown).

An item queued in a worker does not wait behind a long item there (one the
worker has been on over ``LONE_SECONDS``) while another worker of its stage
has nothing to do: the driver takes it back and gives it to that one, before
any later item. Each item given to a worker has a claim cell in shared
memory, which the worker takes (an atomic test-and-set) before it begins the
item, and the driver takes to take the item back: exactly one of them wins, so
no item runs twice, and a worker passes over an item taken from it. The cells
also tell the driver which items a dead worker had begun: the others go to
another worker as they came, never charged a retry.

Shutdown does not wait for queued work: a flag in shared memory, read by each
worker before each item, tells it to stop; a worker still busy after
``GRACE`` seconds (stuck on an item), or whose process has not ended ``GRACE``
seconds after its last word (a non-daemon thread it started keeps it), is
killed.

With an ``item_timeout``, items travel one a message, so that the time since
a worker's last answer is the time it has spent on its current item: each
answer carries the time the worker sent it (when it went on to its next
item), and the driver judges a worker only once it has read every answer
waiting, so that a caller slow to take the results is not charged to the
items. One that goes over is killed, and its item counts as one that killed
its worker.

A kill goes through the master (``netmcore.kill``, by process id): the driver
is not its workers' parent, and an OS pid it had been told could belong to
another program by the time it signals (the worker reaped, the pid reused).
"""

from __future__ import annotations

import contextlib
import ctypes
import heapq
import math
import os
import select
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Generator, Iterable, Iterator, Sized
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar

import msgspec

from . import _context, _posix, _pthread
from ._client import kill
from ._debug import log
from ._encap import Encap, EncapType, same_to_mypy
from ._errors import ContextError, MasterGone, NetmcoreError, NoResource
from ._ids import ProcessId, ResId
from ._mailbox import SIZE_LIMIT, Mailbox, footprint
from ._outcome import Crashed, FailedWithOutcome, InvalidResult, Outcome, Raised, Success
from ._posix import VALID_SIGNALS, with_signals_blocked
from ._process import ProcessDef, check_ordered, process
from ._registry import Definition, by_fork_point
from ._resource_api import create_shm, open_shm
from ._resources import SHM_ROOM_FIX, free_problem, size_problem, space_fix
from ._wire import Invalid, failed_of_its_own
from ._wire import Raised as WireRaised
from ._worker import _clip, raised_quietly

if TYPE_CHECKING:
    import tqdm

In = TypeVar("In")
Out = TypeVar("Out")
Next = TypeVar("Next")


# --- messages between the driver and the stage workers ---------------------------


# Items travel in batches (up to BATCH small items a message): one wake-up of
# a worker, and one of the driver, for many items.
BATCH = 16
# A message's bytes: those of its items (or results), each with its index and
# its length (ENTRY_HEAD), and a fixed part (its type, the worker, the clock
# readings: MESSAGE_HEAD). Every slot of the pipeline's mailboxes has room for
# one item of item_size, or for BATCH_BYTES of smaller ones, whichever is more:
# a batch, or its answer, that would not fit goes in several messages. A slot
# is sized by what a message carries, not by BATCH items of item_size (which
# took about 16 times as much shared memory, most of it never used).
ENTRY_HEAD = 16
MESSAGE_HEAD = 128
BATCH_BYTES = 16 * 1024 - MESSAGE_HEAD

# Seconds of work a batch is sized for, from its stage's time per item: long
# enough that a message's cost (tens of microseconds) is small beside it,
# short enough that the last batches leave no worker waiting long for another.
BATCH_SECONDS = 0.005
# Seconds per item from which a worker holds only the item it is on: a
# message's round trip to the driver, between two items, is then a small part
# of an item (under 1% on a quiet machine), and nothing queued in a worker can
# wait behind a long item while another worker takes later ones: each item
# goes to the first worker free, in input order, as Executor.map's do.
LONE_SECONDS = 4 * BATCH_SECONDS
# How much each answer's time per item counts in its stage's estimate (a
# moving average: a first item slowed by a worker's warm-up is soon forgotten).
COST_WEIGHT = 0.2


# Seconds a worker has, once told to stop, to finish the item it is on.
GRACE = 1.0

# Seconds an idle worker waits for work before it looks whether the driver
# still lives: one that died in its iteration never shuts the pipeline down.
DRIVER_LOOK_AGAIN = 0.25

# Seconds between two looks of the driver for dead workers, however busy the
# others keep it (sooner after it killed one that went over item_timeout).
# Each look is a request to the master per worker: not one per message.
LOOK_AGAIN = 0.25
KILLED_LOOK_AGAIN = 0.02


# --- claim cells: an item is begun by its worker, or taken back, never both -------

# Each item given to a worker has a cell in shared memory, a pthread spinlock
# of which only the try-lock is used: an atomic test-and-set across processes.
# The worker takes the cell before it begins the item; the driver takes it to
# give the item to another worker. Exactly one of them wins, so an item taken
# back is never begun where it was, and one begun is never taken back.
_libc = ctypes.PyDLL(None)  # keeps the GIL: a try-lock never waits, and is shorter
_spin_trylock = _libc.pthread_spin_trylock  # 0: taken now; EBUSY: taken before
_spin_trylock.argtypes = [ctypes.c_void_p]
_spin_trylock.restype = ctypes.c_int
_spin_init = _libc.pthread_spin_init
_spin_init.argtypes = [ctypes.c_void_p, ctypes.c_int]
_spin_init.restype = ctypes.c_int
_PTHREAD_PROCESS_SHARED = 1
CELL = ctypes.sizeof(ctypes.c_int)  # glibc's pthread_spinlock_t


def _free_cell() -> bytes:
    """The bytes of a cell nobody has taken, as the C library makes them: the
    driver frees a batch's cells with one copy, not a call per item."""
    cell = ctypes.c_int(-1)
    if _spin_init(ctypes.byref(cell), _PTHREAD_PROCESS_SHARED) != 0:
        raise OSError("pthread_spin_init failed")
    return bytes(cell)


FREE_CELL = _free_cell()
# Where the cells begin in the pipeline's shared memory, after the stop flag
# (byte 0): each worker's place has cells_per_worker() cells from there on.
CELLS_AT = 64
RUNNING = ctypes.sizeof(ctypes.c_int64)  # after the cells: see _running_at


def _running_at(places: int, cells: int, place: int) -> int:
    """Where, in the pipeline's shared memory, the worker at ``place`` says
    which item it is running (its index; -1 between items): after every
    place's claim cells. The driver reads it if the worker dies, to tell the
    item it died on from those it had run, whose results died with it."""
    return CELLS_AT + places * cells * CELL + place * RUNNING


def _cells_per_worker(queue_size: int) -> int:
    """A worker's cells, used in turn: the n-th item it is given has cell n
    modulo this. The driver gives a worker an item only while every item whose
    cell it would reuse is behind the worker (answered, or passed over once
    taken back): it holds at most queue_size items, and room for as many taken
    back from it, which it may not have reached yet (it is on a long item)."""
    return 2 * queue_size


def _inbox_slots(queue_size: int) -> int:
    """The slots of a worker's Mailbox. Messages it has not read may hold more
    than the queue_size items it holds: items taken back from it stay in
    them until it passes over them (it is on a long item), and the driver
    gives it others meanwhile. But each message brings one item at least, and
    every item it has not passed has a claim cell: as many messages as cells,
    and a Stop. (With queue_size slots, the driver's send waited for the long
    item, and the items it no longer sent with it.)"""
    return _cells_per_worker(queue_size) + 1


class Work(msgspec.Struct, frozen=True, tag=True):
    items: list[tuple[int, bytes]]  # (index, encoded item)


class Stop(msgspec.Struct, frozen=True, tag=True):
    pass


class Ready(msgspec.Struct, frozen=True, tag=True):
    worker: int
    box: ResId


class Done(msgspec.Struct, frozen=True, tag=True):
    """Answers to the next items of the worker's oldest batch, in order."""

    worker: int
    results: list[tuple[int, bytes]]  # (index, encoded result)
    failures: list[tuple[int, WireRaised | Invalid]]  # (index, how it failed), one at most
    seconds: float  # spent on these items
    # time.monotonic() when the worker went on to its next item (if it had
    # one): when it sent this, at a batch's end or a failure; when it began
    # the item it is on, if it sends this because that item takes long (see
    # _Helper). CLOCK_MONOTONIC is the whole system's (on Linux): the driver
    # compares it with its own.
    at: float


class Finished(msgspec.Struct, frozen=True, tag=True):
    """A worker's last message, after Stop: the driver can join it now."""

    worker: int


ToWorker = Work | Stop
ToDriver = Ready | Done | Finished


class StageJob(msgspec.Struct, frozen=True):
    worker: int
    fork_point: ResId
    input_name: str
    input_fingerprint: str
    driver: ResId
    # Byte 0: not 0 once the driver shuts the pipeline down; from CELLS_AT on,
    # each worker's claim cells, ``cells`` per place (of ``places``); then
    # the item each is running (see _running_at).
    shared: ResId
    place: int
    places: int
    cells: int
    queue_size: int
    item_size: int
    batch: int


def _slot_size(item_size: int) -> int:
    """The slot size of the pipeline's mailboxes (see BATCH_BYTES)."""
    return MESSAGE_HEAD + max(ENTRY_HEAD + item_size, BATCH_BYTES)


def _largest_batch(item_timeout: float | None) -> int:
    """The most items a message carries (see the module's docstring)."""
    return BATCH if item_timeout is None else 1


def _driver_box(workers: int, queue_size: int, item_size: int) -> tuple[int, int]:
    """The slots and slot size of the driver's Mailbox. Each worker holds at
    most queue_size items, and each of its answers is to one of them at
    least; and a Ready, a Finished."""
    return workers * queue_size + 8, _slot_size(item_size)


def _chunks(entries: list[tuple[int, bytes]], room: int) -> list[list[tuple[int, bytes]]]:
    """``entries`` (index, bytes) in order, in runs that each fit ``room``
    bytes of a message: as many a run as fit, one at least."""
    runs: list[list[tuple[int, bytes]]] = []
    run: list[tuple[int, bytes]] = []
    used = 0
    for entry in entries:
        size = ENTRY_HEAD + len(entry[1])
        if run and used + size > room:
            runs.append(run)
            run, used = [], 0
        run.append(entry)
        used += size
    runs.append(run)
    return runs


def _fitted(raised: WireRaised, item_size: int) -> WireRaised:
    """``raised`` cut to a message's room: the longer of its traceback and
    its message halved (to its head and tail) in turn, then its classes
    (see _fewer): a failure always fits a message."""
    room = _slot_size(item_size) - MESSAGE_HEAD - ENTRY_HEAD
    while len(msgspec.msgpack.encode(raised)) > room:
        traceback, message = raised.traceback, raised.message
        if traceback and len(traceback) >= len(message):
            raised = msgspec.structs.replace(raised, traceback=_halved(traceback))
        elif message:
            raised = msgspec.structs.replace(raised, message=_halved(message))
        else:  # (a class's name is NAME_MAX characters at most: one fits)
            raised = msgspec.structs.replace(raised, classes=_fewer(raised.classes))
    return raised


def _fewer(classes: tuple[str, ...]) -> tuple[str, ...]:
    """About half of ``classes``: its nearest and its farthest (the user's
    base classes, ``Exception``), as exception_classes keeps a deep
    hierarchy's; its own always."""
    keep = len(classes) // 2
    if keep <= 1:
        return classes[:1]
    return classes[: keep - keep // 2] + classes[len(classes) - keep // 2 :]


def _halved(text: str) -> str:
    """``text`` cut to about half, as _clip cuts; nothing once that is short."""
    most = len(text) // 2
    return _clip(text, most) if most > 200 else ""


@process
def stage_worker(job: StageJob) -> int:
    """Run one stage's process function on every item the driver sends."""
    definition = by_fork_point[job.fork_point.n]
    driver = Mailbox.open(job.driver, ToDriver)
    shared = open_shm(job.shared)
    stopping = shared.buffer
    # Held while the cells are used by address: the mapping cannot go under them.
    anchor = ctypes.c_char.from_buffer(shared.buffer)
    cells = ctypes.addressof(anchor) + CELLS_AT + job.place * job.cells * CELL
    running = ctypes.c_int64.from_address(
        ctypes.addressof(anchor) + _running_at(job.places, job.cells, job.place)
    )
    slot_size = _slot_size(job.item_size)
    inbox = Mailbox.create(ToWorker, slots=_inbox_slots(job.queue_size), slot_size=slot_size)
    driver.send(Ready(job.worker, inbox.res_id))
    answers = _Answers(job.worker, driver, slot_size - MESSAGE_HEAD)
    # Items one a message (item_timeout) have nothing ahead of them in their
    # batch to hold back: no thread then.
    helper = _Helper(answers) if job.batch > 1 else None
    clock = time.monotonic
    done = given = 0
    try:
        # The flag, not Stop, ends a busy worker: Stop waits behind the queued work.
        while isinstance(msg := _next_order(inbox, driver), Work) and not stopping[0]:
            results = answers.results
            answers.begin_batch()
            for index, data in msg.items:
                cell = cells + given % job.cells * CELL
                given += 1
                if stopping[0]:
                    break
                running.value = index  # first: one that dies holding the claim died on it
                if _spin_trylock(cell):  # the driver took it back: another worker runs it
                    running.value = -1
                    continue
                # One store of a new tuple: the helper reads both of one item.
                answers.current = (clock(), len(results))
                answer = _run_item(definition, job, data)
                running.value = -1
                if isinstance(answer, bytes):
                    results.append((index, answer))
                else:  # at once: a Done has room for one failure (_fitted)
                    answers.send_failure(index, answer)
                done += 1
            answers.end_batch()
    finally:
        # Before Finished, and before the driver's box is closed: nothing is
        # sent after them.
        if helper is not None:
            helper.stop()
    del anchor, stopping, running
    shared.release()
    inbox.release()
    if msg is not None:  # None: the driver has ended, and nobody reads its box
        driver.send(Finished(job.worker))
    driver.close()
    return done


class _Answers:
    """The results of a worker's current batch, sent in order, each once: by
    its loop as the batch ends (or with a failure), and by its helper thread
    while the loop is on a long item (see _Helper).

    The loop appends to ``results``, and stores ``current``, without the lock
    (a list's append is atomic, and so is an attribute's store): per item, it
    costs a clock's reading and a store, no lock. Whatever takes the unsent
    results and sends them holds the lock, so the Done messages leave in the
    order the items ran, and none carries a result another has carried. The
    loop takes it only for a failure, and at a batch's end.
    """

    __slots__ = ("began", "busy", "current", "driver", "lock", "results", "room", "sent", "worker")

    def __init__(self, worker: int, driver: Mailbox[ToDriver], room: int) -> None:
        self.worker, self.driver = worker, driver
        self.room = room  # the bytes of results (and a failure) a Done may carry
        self.lock = threading.Lock()
        self.results: list[tuple[int, bytes]] = []  # the current batch's
        self.sent = 0  # results[:sent] have been sent
        self.began = 0.0  # when the first item of results[sent:] began
        # The item the loop is on: when it began, and how many results came
        # before it in its batch.
        self.current: tuple[float, int] = (math.inf, 0)
        # Set while the loop is on a batch: the helper sleeps while it is not.
        self.busy = threading.Event()

    def begin_batch(self) -> None:
        # No lock: the helper reads ``began`` only once ``current`` names an
        # item of this batch with a result before it, stored after this.
        self.began = time.monotonic()
        self.busy.set()

    def send_failure(self, index: int, failure: WireRaised | Invalid) -> None:
        """Send the results not sent yet, and the failure of the item after them."""
        with self.lock:
            self._send_unsent([(index, failure)])

    def end_batch(self) -> None:
        """Send the results not sent yet; make room for the next batch's."""
        with self.lock:
            if len(self.results) > self.sent:
                self._send_unsent([])
            self.results, self.sent, self.current = [], 0, (math.inf, 0)
            self.busy.clear()

    def _send_unsent(self, failures: list[tuple[int, WireRaised | Invalid]]) -> None:
        # Called holding the lock.
        now = time.monotonic()
        self._send(self.results[self.sent :], failures, now - self.began, now)
        self.sent, self.began = len(self.results), now

    def _send(
        self,
        results: list[tuple[int, bytes]],
        failures: list[tuple[int, WireRaised | Invalid]],
        seconds: float,
        at: float,
    ) -> None:
        """Send ``results``, then ``failures`` (one at most), in as many Done
        messages as their bytes take, each with its items' share of ``seconds``."""
        runs = _chunks(results, self.room)
        if failures:
            size = len(msgspec.msgpack.encode(failures[0][1]))
            used = sum(ENTRY_HEAD + len(data) for _, data in runs[-1])
            if runs[-1] and used + ENTRY_HEAD + size > self.room:
                runs.append([])
        each = seconds / (len(results) + len(failures))
        for run in runs[:-1]:
            self.driver.send(Done(self.worker, run, [], each * len(run), at))
        last = runs[-1]
        self.driver.send(Done(self.worker, last, failures, each * (len(last) + len(failures)), at))

    def send_held(self) -> None:
        """Send the results held behind the item the loop is on, once it has
        been on it LONE_SECONDS: a Done of the items before it, as if the
        batch had ended there (its ``seconds`` theirs, its ``at`` when that
        item began: as any Done's, when the worker went on to its next item)."""
        began, before = self.current
        if before <= self.sent or time.monotonic() - began < LONE_SECONDS:
            return  # the usual case, when items are short: no lock
        with self.lock:
            # Again, under the lock: ``current`` is then this batch's (the loop
            # goes on to the next batch only through end_batch, under the lock).
            began, before = self.current
            if before > self.sent and time.monotonic() - began >= LONE_SECONDS:
                self._send(self.results[self.sent : before], [], began - self.began, began)
                self.sent, self.began = before, began


class _Helper:
    """A thread of a stage worker that sends, while the worker's loop is on a
    long item, the results of the items before it in its batch. A batch is
    sized by what its stage's items took so far, and one item may take far
    longer (or never end): sent at the batch's end, those results would wait
    for it, and so would a consumer that takes results as they complete, or
    in input order.

    It looks every LONE_SECONDS while the loop is on a batch (the loop's
    thread is in the stage function, and says nothing as it begins each item
    but what ``current`` holds), and sleeps while the worker waits for one.
    A daemon, and stopped before the worker ends: it never keeps the process.
    """

    def __init__(self, answers: _Answers) -> None:
        self._answers = answers
        # Released to stop it. A lock, not an Event: its timed wait is one C
        # call, which the thread makes 1/LONE_SECONDS times a second while busy.
        self._quit = threading.Lock()
        self._quit.acquire()
        self._thread = threading.Thread(
            target=self._run, name="netmcore-pipeline-answers", daemon=True
        )
        # Started with every signal blocked, which it keeps: a signal sent to
        # the process goes to the main thread, as it did with no helper, and
        # interrupts its waits (a thread's mask is its creator's).
        with_signals_blocked(VALID_SIGNALS, self._thread.start)

    def _run(self) -> None:
        send_held, busy, quit = self._answers.send_held, self._answers.busy, self._quit
        while busy.wait() and not quit.acquire(timeout=LONE_SECONDS):
            try:
                send_held()
            except BrokenPipeError:  # the driver ended: nobody reads its box
                return

    def stop(self) -> None:
        self._quit.release()
        self._answers.busy.set()  # wakes it if it sleeps
        self._thread.join()


def _next_order(inbox: Mailbox[ToWorker], driver: Mailbox[ToDriver]) -> ToWorker | None:
    """The next message from the driver; None if the driver has ended (it
    died in the middle of its iteration, and will send nothing more)."""
    while True:
        try:
            return inbox.receive(timeout=DRIVER_LOOK_AGAIN)
        except TimeoutError:
            if _pthread.ended(driver.owner_pid):
                return None


def _cause_of(failure: WireRaised | Invalid) -> str:
    """An item's failure as its error says it: "ValueError: unlucky", or why
    its result was refused."""
    if isinstance(failure, Invalid):
        return failure.message
    return f"{failure.type_name}: {failure.message}"


def _ending(worker: _Worker) -> Raised | InvalidResult | Crashed:
    """How a dead worker ended, as the outcome of the items it failed with."""
    dead = worker.dead
    assert dead is not None
    # (A worker's function returns only when told to stop, or as the run
    # ends: one that did before either ended as if it had exited.)
    return Crashed(0, None) if isinstance(dead, Success) else dead


def _run_item(definition: Definition, job: StageJob, data: bytes) -> bytes | WireRaised | Invalid:
    """The encoded result of one item, or why there is none."""
    try:
        encap = definition.function(Encap(job.input_name, job.input_fingerprint, (data,)))
    except (KeyboardInterrupt, SystemExit, MasterGone):
        raise  # the worker's end, not the item's failure
    except BaseException as exc:  # a CancelledError too: the item's, as any exception
        return _fitted(raised_quietly(exc), job.item_size)
    result = bytes(encap.data)
    if len(result) > job.item_size:  # it would not fit the next mailbox
        return Invalid(
            "$",
            f"its result is {len(result)} bytes encoded, more than item_size={job.item_size}: "
            "give run() a larger item_size",
        )
    return result


# How the note of a PipelineError that holds the item's traceback begins.
ITEM_TRACEBACK = "The item's traceback, in its stage's worker:"


class PipelineError(NetmcoreError, RuntimeError, FailedWithOutcome):
    """An item failed and the policy was ``"stop"``: the pipeline was shut down.
    The traceback of an item that raised is a note of this exception, shown
    under its own.

    Attributes
    ----------
    index : int
        The position of the item in the input.
    stage : str
        The process type that failed on it.
    cause : str
        The exception (type and message), how the worker died, or why the
        result was refused.
    outcome : Raised | InvalidResult | Crashed
        The same, as a process's outcome says it (see :meth:`raised`): what
        the item raised, with its traceback; a result refused (over
        ``item_size``); or how its worker ended (killed for ``item_timeout``,
        or it died).
    """

    def __init__(
        self, index: int, stage: str, cause: str, outcome: Raised | InvalidResult | Crashed
    ) -> None:
        super().__init__(f"item {index} failed in stage {stage}: {cause}")
        self.index, self.stage, self.cause, self.outcome = index, stage, cause, outcome
        if isinstance(outcome, Raised) and outcome.traceback:
            self.add_note(f"{ITEM_TRACEBACK}\n{outcome.traceback.rstrip()}")


class StageWorkerError(NetmcoreError, RuntimeError):
    """A worker of a stage failed as it started, not on an item (no room
    left in /dev/shm for its mailbox, say), and so did the one that replaced
    it: the pipeline was shut down. Their log has the traceback.

    Attributes
    ----------
    stage : str
        The process type of the stage.
    cause : str
        The exception the worker raised (type and message).
    """

    def __init__(self, stage: str, cause: str) -> None:
        super().__init__(
            f"a worker of pipeline stage {stage} failed as it started, not on an item, "
            f"and so did its replacement: {cause}. The pipeline was shut down (their "
            "log has the traceback)"
        )
        self.stage, self.cause = stage, cause


@dataclass(frozen=True)
class ItemFailure(FailedWithOutcome):
    """An item that failed, as a ``"skip"`` pipeline reports it: its
    attributes are those of :class:`PipelineError`."""

    index: int
    stage: str
    cause: str
    outcome: Raised | InvalidResult | Crashed


@dataclass(frozen=True)
class Stage:
    process: type[ProcessDef[Any, Any]]
    workers: int

    @property
    def name(self) -> str:
        return self.process.__qualname__


class Pipeline(Generic[In, Out]):
    """Stages of process types, run over an iterable of inputs.

    Parameters
    ----------
    stage :
        The first stage's process type.
    workers :
        How many worker processes run it.
    """

    def __init__(self, stage: type[ProcessDef[In, Out]], *, workers: int = 1) -> None:
        self.stages: tuple[Stage, ...] = (_stage(stage, workers),)

    def then(self, stage: type[ProcessDef[Out, Next]], *, workers: int = 1) -> Pipeline[In, Next]:
        """A pipeline with ``stage`` after this one's last stage."""
        added = _stage(stage, workers)
        before = self.stages[-1].process.output_type
        # As mypy: the same type, Annotated constraints aside, or Any on either
        # side (the next stage validates each item against its own type and
        # constraints as it decodes it).
        if not same_to_mypy(before, added.process.input_type):
            raise TypeError(
                f"stage {added.name} takes {added.process.input_type.name}, but the stage "
                f"before it, {self.stages[-1].name}, gives {before.name}"
            )
        longer: Pipeline[In, Next] = Pipeline.__new__(Pipeline)
        longer.stages = (*self.stages, added)
        return longer

    def run(
        self,
        items: Iterable[In],
        *,
        ordered: bool = True,
        on_error: Literal["stop", "skip"] = "stop",
        queue_size: int = 32,
        item_size: int = 4096,
        retries: int = 1,
        item_timeout: float | None = None,
        progress: bool | None = None,
    ) -> PipelineRun[Out]:
        """Run every item through the stages; iterate over the results.

        Call it in a netmcore worker process (the first process, or any
        other): the master's loop, which serves the stage workers, does not
        run while the master's own code does.

        Parameters
        ----------
        ordered :
            Results in input order (True), or as they complete (False).
        on_error :
            ``"stop"``: a failing item shuts the pipeline down and raises
            :class:`PipelineError`, with its index and cause. Unordered, at
            once. Ordered, as ``concurrent.futures.Executor.map``: the
            results of every item before it are yielded first (those still
            in flight are waited for), then the error is raised for the
            first failing item in input order. The items after it are
            abandoned: no more input is read once an item has failed. (An
            item before it that never ends keeps the error waiting: bound
            it with ``item_timeout``.)
            ``"skip"``: failing items are left out of the results and listed
            in the run's ``failures``.
        queue_size :
            Items a worker may hold at a time (it is given fewer, about two
            batches, sized by what its items take; only the item it is on,
            when they take long). The input is read only
            while the pipeline holds fewer items than all its workers may,
            and, in input order, holds back fewer results than that too for
            the items before them, so memory stays flat however long the
            input is.
        item_size :
            The largest encoded item, and stage result, in bytes: a larger
            input item raises ValueError; a larger result fails its item.
        retries :
            How many times an item is given to a fresh worker after its
            worker died while working on it (or after it had run it, its
            result not sent yet); after that, the item fails. With 0 no item
            runs twice. Items the worker had not begun go on, never charged.
        item_timeout :
            Seconds a stage worker may spend on one item. A worker that goes
            over is killed, and the item counts as one that killed its worker
            (given to a fresh worker up to ``retries`` times, then failed).
            Items then travel one a message, which costs throughput when they
            are tiny. None (the default) or ``math.inf``: no limit.
        progress :
            Show a progress bar per stage: items in, items out, rate. By
            default, only when stderr is a terminal. For an input with a
            length (a list, a range), each bar's total is that length (less
            the items that failed before the stage), with the time left; for
            another iterable, the items that have reached the stage so far.

        Raises
        ------
        TypeError
            If an argument is of the wrong type (at once).
        ValueError
            If an argument is out of range, or ``queue_size`` and
            ``item_size`` need mailboxes larger than shared memory can hold
            (at once), or an input item is larger than ``item_size`` (when it
            is read).
        ContextError
            If called outside a netmcore worker process.
        """
        check_ordered(ordered)
        if on_error not in ("stop", "skip"):
            raise ValueError(f"on_error={on_error!r} is not valid: use 'stop' or 'skip'")
        if progress is not None and not isinstance(progress, bool):
            raise TypeError(
                f"progress={progress!r} is not valid: give True, False, or None "
                "(bars only when stderr is a terminal)"
            )
        _check_int(queue_size, "queue_size", 1, "the items a worker may hold at a time")
        _check_int(item_size, "item_size", 1, "the largest encoded item, in bytes")
        _check_int(retries, "retries", 0, "0: no item runs twice")
        # As every timeout (TypeError, ValueError; inf is no limit), and above
        # 0, in words of its own: check_timeout's speak of "timeout", and of 0.
        rule = "give a number of seconds above 0, or None (or math.inf) for no limit"
        try:
            checked = _pthread.check_timeout(item_timeout)
        except TypeError:
            raise TypeError(f"item_timeout={item_timeout!r} is not valid: {rule}") from None
        except ValueError:
            raise ValueError(f"item_timeout={item_timeout!r} is not valid: {rule}") from None
        if checked == 0:
            raise ValueError(f"item_timeout={item_timeout!r} is not valid: {rule}")
        item_timeout = checked
        workers = sum(s.workers for s in self.stages)
        _check_boxes(workers, queue_size, item_size)
        role = _context.current.role
        if role != "worker":
            where = "in the master" if role == "master" else "outside netmcore.run()/startup()"
            raise ContextError(
                f"Pipeline.run() was called {where}: run pipelines in a netmcore worker "
                "process, e.g. in the first process that run() starts (the master serves "
                "the stage workers only once first_process has returned)"
            )
        settings = _Settings(
            ordered, on_error, queue_size, item_size, retries, item_timeout, progress
        )
        # The count of a sized input (a list, a range) is every bar's total:
        # the bars then show how far along the run is, and the time left.
        count = len(items) if isinstance(items, Sized) else None
        return PipelineRun(_Driver(self.stages, iter(items), settings, count))


def _stage(stage: object, workers: object) -> Stage:
    if not (
        isinstance(stage, type) and issubclass(stage, ProcessDef) and "input_type" in dir(stage)
    ):
        raise TypeError(f"a pipeline stage must be a ProcessDef subclass, not {stage!r}")
    workers = _check_int(
        workers,
        "workers",
        1,
        "how many worker processes run the stage",
        "at least 1 worker per stage; give workers=1 or more",
    )
    return Stage(stage, workers)


def _check_int(value: object, what: str, least: int, meaning: str, rule: str = "") -> int:
    """``value`` of the argument ``what``, refused unless an int of at least
    ``least``: TypeError for another type (bool too), ValueError (saying
    ``rule``, by default run()'s) below."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(
            f"{what}={value!r} is not valid: it must be an int ({meaning}), "
            f"not {type(value).__name__}"
        )
    if value < least:
        rule = rule or f"it must be an int of at least {least}; give run() {what}={least} or more"
        raise ValueError(f"{what}={value!r} is not valid: {rule}")
    return value


def _check_boxes(workers: int, queue_size: int, item_size: int) -> None:
    """Refuse, naming queue_size and item_size, sizes for which Mailbox.create
    would refuse the pipeline's mailboxes, with the Mailbox's own limits: here,
    at once, not once the run has begun, with a message about slots (in a
    stage worker, as it starts: see _Driver._check_workers).

    Every box has slots of one size. The driver's has the most slots (all
    its workers' items), but for a pipeline of one worker, whose own
    (2 x queue_size, and 1) has more: both are checked. The claim cells (8
    bytes per item a worker may hold) are written only as they are used.
    Creating a box writes a lock in every slot, and all the boxes are made
    together: the pages of all of them must fit /dev/shm's free space at once.
    """
    slot_size = _slot_size(item_size)
    boxes = (
        ("the driver's mailbox", _driver_box(workers, queue_size, item_size)[0],
         f"{workers} worker(s) x queue_size, and 8"),
        ("each worker's mailbox", _inbox_slots(queue_size), "2 x queue_size, and 1"),
    )  # fmt: skip
    if any(slots >= SIZE_LIMIT for _, slots, _ in boxes):
        most = min((SIZE_LIMIT - 1 - 8) // workers, (SIZE_LIMIT - 2) // 2)
        raise ValueError(
            f"queue_size={queue_size:,} is not valid: a mailbox has fewer than 2**32 slots, "
            f"and queue_size sets those of the pipeline's (the driver's: {boxes[0][2]}; "
            f"each worker's: {boxes[1][2]}): give run() a queue_size of at most {most:,}"
        )
    if slot_size >= SIZE_LIMIT:
        most = SIZE_LIMIT - 1 - MESSAGE_HEAD - ENTRY_HEAD
        raise ValueError(
            f"item_size={item_size:,} is not valid: a mailbox's slot holds an item of "
            f"item_size bytes (and {MESSAGE_HEAD + ENTRY_HEAD} more), and is smaller than "
            f"2**32 bytes: give run() an item_size of at most {most:,}"
        )
    fix = "Give run() a smaller queue_size or item_size, or the pipeline fewer workers"
    for name, slots, why in boxes:
        size = footprint(slots, slot_size)[0]
        problem = size_problem(size)
        if problem is not None:
            raise ValueError(
                f"queue_size={queue_size:,} and item_size={item_size:,} are too large for "
                f"{workers} worker(s): {name}, {slots:,} slots ({why}) of {slot_size:,} "
                f"bytes (an item of item_size, or {BATCH_BYTES:,} bytes of smaller ones, a "
                f"message), needs {size:,} bytes, which is too large: {problem}. "
                f"{fix}{space_fix(size)}"
            )
    written = footprint(boxes[0][1], slot_size)[1] + workers * footprint(boxes[1][1], slot_size)[1]
    problem = free_problem(written)
    if problem is not None:
        raise ValueError(
            f"queue_size={queue_size:,} and item_size={item_size:,} are too large for "
            f"{workers} worker(s): creating the mailboxes of the driver ({boxes[0][1]:,} "
            f"slots: {boxes[0][2]}) and of each worker ({boxes[1][1]:,} slots: "
            f"{boxes[1][2]}), of {slot_size:,} bytes a slot, fills {written:,} bytes at "
            f"once (the pages of a lock in every slot), which is too much: {problem}. "
            f"{fix}{SHM_ROOM_FIX}"
        )


class PipelineRun(Generic[Out]):
    """A running pipeline: iterate over it for the results.

    ``failures`` lists the items that failed (with ``on_error="skip"``).
    Leaving the iteration early shuts the pipeline down at once: every worker
    stops (one stuck on an item is killed) and every mailbox is released.
    ``close()`` does it, and so does leaving a ``with`` block over the run;
    so does ``break``, or an exception, out of a ``for`` loop over
    ``run(...)`` itself, and dropping the last reference to the run.
    """

    def __init__(self, driver: _Driver) -> None:
        self.failures: list[ItemFailure] = driver.failures
        # The generator's frame holds the driver, never this object: with no
        # reference cycle, CPython closes the generator (and so shuts the
        # pipeline down) as soon as the last reference to it goes, as when a
        # for loop over run(...) is left; nothing waits for the gc.
        self._results: Generator[Out, None, None] = driver.drive()

    def __iter__(self) -> Iterator[Out]:
        return self._results

    def __enter__(self) -> PipelineRun[Out]:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __next__(self) -> Out:
        return next(self._results)

    def close(self) -> None:
        """Shut the pipeline down now (iteration does it when it ends)."""
        self._results.close()


@dataclass(frozen=True)
class _Settings:
    ordered: bool
    on_error: str
    queue_size: int
    item_size: int
    retries: int
    item_timeout: float | None
    progress: bool | None


@dataclass(eq=False, slots=True)
class _Batch:
    """The items of one Work message that its worker has not answered yet."""

    sent: float  # when
    first: int  # the worker's number for indexes[0] (which picks its claim cell)
    indexes: list[int]  # in order; those taken back stay, until the worker is past them
    taken: int = 0  # how many of indexes were taken back


@dataclass(eq=False)
class _Worker:
    stage: int
    number: int
    place: int  # where its claim cells are
    pid: ProcessId[int]
    box: Mailbox[ToWorker] | None = None  # from its Ready on
    holding: dict[int, bytes] = field(default_factory=dict)  # the items it has, by index
    # Unanswered, oldest first (a batch whose items were all taken back goes).
    batches: deque[_Batch] = field(default_factory=deque)
    # The items it has been given (the next one's number), and the number
    # below which it has begun or passed over every item: its cells from
    # there on may still be read by it.
    given: int = 0
    passed: int = 0
    # When it began its current item (the stamp of its last answer, or when
    # the item was sent, if later), and the item it was killed for, over
    # item_timeout.
    busy_since: float = 0.0
    overdue: int | None = None
    ready: bool = False  # its Ready has been read
    # How it ended, once found dead: it is buried (its items given back, a
    # new worker in its place) once the messages it sent before are read.
    dead: Outcome[int] | None = None


@dataclass(eq=False)
class _Closing:
    """How far a run's shutdown has gone (see _Driver._shutdown): what each
    step did is noted as it is done, so that, made again after an exception,
    it is not done twice."""

    deadline: float  # when the workers still running are killed (inf once they are)
    joined: set[int]  # workers joined (those found dead, by _check_workers)
    finished: dict[int, float] = field(default_factory=dict)  # worker: when it said so
    stopped: set[int] = field(default_factory=set)  # workers sent a Stop
    late_killed: bool = False  # those whose process had not ended (see _not_ended)

    def running(self, workers: dict[int, _Worker]) -> list[int]:
        """The workers that have neither said they finished nor been joined."""
        return [n for n in workers if n not in self.finished and n not in self.joined]


@dataclass(frozen=True)
class _Dead:
    """In the driver's backlog, after the messages a dead worker sent: the
    moment to bury it."""

    worker: int


class _Driver:
    """The state of a running pipeline, and the generator that drives it."""

    def __init__(
        self,
        stages: tuple[Stage, ...],
        items: Iterator[Any],
        settings: _Settings,
        count: int | None = None,
    ) -> None:
        self._stages, self._items, self._settings = stages, items, settings
        self._count = count  # the input's length, if it has one: the bars' total
        self.failures: list[ItemFailure] = []
        self._queue_size = settings.queue_size
        self._cells = _cells_per_worker(settings.queue_size)
        self._batch = _largest_batch(settings.item_timeout)
        # The bytes of items a Work message may carry.
        self._room_bytes = _slot_size(settings.item_size) - MESSAGE_HEAD
        # One place of claim cells per worker of the pipeline: a worker that
        # replaces a dead one takes its place (nothing touches the dead one's).
        self._place_count = sum(s.workers for s in stages)
        self._places = list(range(self._place_count))
        # At most: items in the pipeline (read, not yet handed out or failed),
        # results held back for the input order aside; and results held back.
        self._capacity = sum(s.workers for s in stages) * settings.queue_size
        # Per stage: seconds per item (a moving average), None until known.
        self._cost: list[float | None] = [None for _ in stages]
        self._look_at = 0.0  # when to look for dead workers next (_receive)
        # When a worker's queued items will have waited long enough behind its
        # current item to be taken back for an idle worker (_rebalance).
        self._rebalance_at = float("inf")
        self._workers: dict[int, _Worker] = {}
        self._pending: list[deque[tuple[int, bytes]]] = [deque() for _ in stages]
        # Of items in a stage, those lost with a worker there (see _forget).
        self._tries: dict[tuple[int, int], int] = {}  # (stage, index) -> times lost
        self._suspects: set[tuple[int, int]] = set()  # (stage, index): sent alone
        self._next_worker = 0
        self._lost = 0  # items failed with a dead worker, not yet counted out
        # Messages read ahead of their turn, as a worker is found dead (see
        # _check_workers), and the markers to bury it after them.
        self._backlog: deque[ToDriver | _Dead] = deque()
        # For item_timeout: when a worker could next be overdue; and, of each
        # worker's Dones read into the backlog and not yet handled (see
        # _receive), the latest "went on to its next item" stamp and the
        # items they answer.
        self._overdue_at = 0.0
        self._unread: dict[int, tuple[float, set[int]]] = {}
        # Per stage: its workers that failed as they started, since one of
        # it was last ready (see _bury).
        self._start_failures = [0 for _ in stages]
        self._skipped: set[int] = set()  # failed indexes, passed over in order
        # Ordered "stop": the failure of the first failing item in input order
        # so far, raised once every result before it has been yielded.
        self._failed: PipelineError | None = None
        self._closing: _Closing | None = None  # once the shutdown has begun

    def drive(self) -> Generator[Any, None, None]:
        places = self._place_count
        self._shared = create_shm(_running_at(places, self._cells, places))
        # Held while the cells are used by address: the mapping cannot go under them.
        self._anchor: ctypes.c_char | None = ctypes.c_char.from_buffer(self._shared.buffer)
        self._address = ctypes.addressof(self._anchor)
        self._cells_address = self._address + CELLS_AT
        try:
            slots, slot_size = _driver_box(
                sum(s.workers for s in self._stages), self._queue_size, self._settings.item_size
            )
            self._inbox: Mailbox[ToDriver] = Mailbox.create(
                ToDriver, slots=slots, slot_size=slot_size
            )
        except BaseException:
            self._release_shared()
            raise
        self._bars: list[tqdm.tqdm[Any]] = []
        try:
            # In the try: a bar that fails (an interrupt as tqdm is first
            # imported) leaves nothing made behind.
            for i, stage_def in enumerate(self._stages):
                self._bars.append(self._bar(i, stage_def))
            for stage in range(len(self._stages)):
                for _ in range(self._stages[stage].workers):
                    self._spawn(stage)
            self._look_at = time.monotonic() + LOOK_AGAIN
            yield from self._flow()
        finally:
            # A signal handler's exception (a Ctrl-C) does not leave the
            # shutdown half-way, as it does not leave _resources.destroy: its
            # steps are made again until all are (see _shutdown), and the
            # first exception is raised after. Cut short, a worker not yet
            # told to stop waited for work, and the run's mailboxes and shared
            # memory stayed, for as long as the driver lived. Blocking the
            # signals cannot keep them out: a Ctrl-C to the process may go to
            # another thread (tqdm's monitor), and Python runs the handler in
            # this one all the same. A failure of a step's own (the master
            # gone: see failed_of_its_own), which a retry would meet again, is
            # raised at once, as is the TRIES_MAX-th exception. The loop is
            # here, not in a function: a handler runs as a function starts,
            # before its try.
            held: BaseException | None = None
            tries = 0
            while True:
                try:
                    self._shutdown()
                    break
                except BaseException as exc:
                    tries += 1
                    if failed_of_its_own(exc, tries):
                        raise
                    if held is None:  # the first: a second Ctrl-C asks for nothing more
                        held = exc
            if held is not None:
                raise held

    def _bar(self, i: int, stage: Stage) -> tqdm.tqdm[Any]:
        # Imported here, not by the master: tqdm pulls in importlib.metadata,
        # email and zipfile, 1.6 MB that every fork would copy and tear down.
        import tqdm

        progress = self._settings.progress
        if sys.stderr is None:  # a daemon's, pythonw's: no bar to draw (tqdm fails)
            progress = False
        return tqdm.tqdm(
            desc=f"{stage.name} x{stage.workers}",
            total=self._count,
            unit="item",
            position=i,
            disable=None if progress is None else not progress,
            leave=True,  # the final counts and rate stay on screen
        )

    def _release_shared(self) -> None:
        self._anchor = None  # no export of the buffer left: it can be unmapped
        self._shared.release()

    def _spawn(self, stage: int) -> None:
        number = self._next_worker
        self._next_worker += 1
        place = self._places.pop()
        self._running(place).value = -1  # not the item a dead worker there was on
        process = self._stages[stage].process
        job = StageJob(
            number,
            process.fork_point,
            process.input_type.name,
            process.input_type.fingerprint,
            self._inbox.res_id,
            self._shared.res_id,
            place,
            self._place_count,
            self._cells,
            self._queue_size,
            self._settings.item_size,
            self._batch,
        )

        def start() -> None:
            self._workers[number] = _Worker(stage, number, place, stage_worker.start(job))

        # A Ctrl-C as the start returns, once the master has started the
        # worker, left it unrecorded: never stopped, it waited for work for as
        # long as the driver lived. It waits until the worker is recorded.
        _posix.with_signals_blocked(_posix.INTERRUPTS, start)

    def _flow(self) -> Iterator[Any]:
        first = self._stages[0].process.input_type
        last = self._stages[-1].process.output_type
        ordered, capacity, entry = self._settings.ordered, self._capacity, self._pending[0]
        fed, out, exhausted = 0, 0, False  # items read; items handed out or failed
        expect = 0  # in input order: the index to hand out next
        waiting: list[tuple[int, bytes]] = []  # results held back for the input order
        outgoing: list[bytes] = []  # results to hand out now, counted out already
        while True:
            out += self._lost  # items failed by a dead worker
            self._lost = 0
            while ordered:  # take what comes next in the input order
                if expect in self._skipped:
                    self._skipped.discard(expect)
                elif waiting and waiting[0][0] == expect:
                    outgoing.append(heapq.heappop(waiting)[1])
                    out += 1
                else:
                    break
                expect += 1
            # Read lazily: while stage 0 has room, while the pipeline holds
            # fewer items than its workers may (those waiting for a busy later
            # stage count too), and, apart from those, fewer results held back
            # for the input order than that: a slow item lets the other workers
            # go on a while, not for ever. Before the results are handed out:
            # the workers work while the caller takes them, and whatever room
            # they leave is filled before the next wait for a message.
            # (Stage 0's room does not change while the input is read.)
            room = 0 if exhausted or self._failed is not None else self._room(0) - len(entry)
            read = fed
            while room > 0 and fed - out - len(waiting) < capacity and len(waiting) < capacity:
                try:
                    item = next(self._items)
                except StopIteration:
                    exhausted = True
                    break
                entry.append((fed, self._encode(first, item, fed)))
                fed += 1
                room -= 1
            else:  # (for 3.12: see test_backedges)
                pass
            if fed > read:
                self._arrived(0, fed - read)
            self._rebalance_at = float("inf")
            for stage in range(len(self._stages)):
                self._dispatch(stage)
            for data in outgoing:
                yield last.decode(data)
            outgoing.clear()
            if self._failed is not None and self._failed.index == expect:
                raise self._failed  # every result before it is out
            if exhausted and out == fed:
                return
            msg = self._receive()
            if msg is None or msg.worker not in self._workers:  # (a buried one's: none expected)
                continue
            if isinstance(msg, _Dead):
                self._bury(self._workers.pop(msg.worker))
                continue
            if isinstance(msg, Ready):
                self._ready(msg)
                continue
            if isinstance(msg, Finished):  # not before Stop, which only _shutdown sends
                continue
            stage = self._answered(msg)
            for index, failure in msg.failures:
                self._fail(index, stage, _cause_of(failure), failure.outcome())
                out += 1
            if stage + 1 < len(self._stages):
                self._pending[stage + 1].extend(msg.results)
                self._arrived(stage + 1, len(msg.results))
            elif not ordered:
                outgoing.extend(data for _, data in msg.results)
                out += len(msg.results)
            else:
                for result in msg.results:
                    heapq.heappush(waiting, result)

    def _arrived(self, stage: int, count: int) -> None:
        """Count ``count`` items into ``stage``'s progress bar, if its total
        is not the input's length: once each, as they come to it, not again
        when one goes to another worker. Drawn with the bar's next update,
        as tqdm paces it (a redraw here drew once a batch: thousands a
        second, hundreds of kilobytes to the terminal)."""
        if self._count is None:
            bar = self._bars[stage]
            bar.total = (bar.total or 0) + count

    def _encode(self, first: EncapType[Any], item: Any, index: int) -> bytes:
        data = first.encode(item, f"pipeline item {index}: the value")
        if len(data) > self._settings.item_size:
            raise ValueError(
                f"pipeline item {index} is {len(data)} bytes encoded, more than "
                f"item_size={self._settings.item_size}: give run() a larger item_size"
            )
        return data

    def _ready(self, msg: Ready) -> None:
        worker = self._workers[msg.worker]
        worker.ready = True
        self._start_failures[worker.stage] = 0
        if worker.dead is not None:
            return  # read after its death (see _check_workers): given no work
        # NoResource: it died after its Ready, and the master has taken its box
        # back. Left without one (given no work), it is found dead, buried
        # and replaced, as any other.
        with contextlib.suppress(NoResource):
            worker.box = Mailbox.open(msg.box, ToWorker)

    def _answered(self, msg: Done) -> int:
        """Take the items ``msg`` answers off its worker; return the stage."""
        worker = self._workers[msg.worker]
        answered = (*msg.results, *msg.failures) if msg.failures else msg.results
        count = len(answered)
        # A worker answers in order, and a Done never spans two batches; it
        # passes over the items taken back from it without a word.
        oldest = worker.batches[0]
        behind = count
        if oldest.taken:
            behind = 0
            for index, _ in answered:
                while oldest.indexes[behind] != index:
                    behind += 1
                behind += 1
            oldest.taken -= behind - count
        del oldest.indexes[:behind]
        oldest.first += behind
        worker.passed = oldest.first
        if len(oldest.indexes) == oldest.taken:  # it will answer no more of them
            worker.batches.popleft()
        for index, _ in answered:
            del worker.holding[index]
        stage = worker.stage
        if self._tries:  # (usually empty: nothing to look up per item)
            for index, _ in answered:
                self._forget(stage, index)
        unread = self._unread.get(msg.worker)
        if unread is not None:  # read ahead (see _receive): handled now
            unread[1].difference_update(index for index, _ in answered)
            if not unread[1]:
                del self._unread[msg.worker]
        if worker.holding:
            # On to its next item when it sent this, or when that item came,
            # if later. Its stamp, not the time this is read: the caller may
            # have kept the driver away from its messages for a while.
            worker.busy_since = max(msg.at, worker.batches[0].sent)
        if count:
            cost, sample = self._cost[stage], msg.seconds / count
            self._cost[stage] = sample if cost is None else cost + COST_WEIGHT * (sample - cost)
        self._bars[stage].update(count)
        return stage

    def _sizes(self, stage: int, ready: list[_Worker]) -> tuple[int, int]:
        """The items a batch for ``stage`` takes, and the most a worker of it
        holds: about one batch it works on and one queued (so that it never
        waits for the driver between two, even while the caller keeps the
        driver busy), or only the item it is on, for items over LONE_SECONDS;
        only one batch until every worker of the stage is ready, lest the
        first to be ready take all of a short input."""
        cost = self._cost[stage]
        if cost is None:  # nothing known yet: one item a batch
            batch, hold = 1, 2
        elif cost >= LONE_SECONDS:
            batch, hold = 1, 1
        else:
            per_batch = BATCH_SECONDS / max(cost, 1e-9)  # items in BATCH_SECONDS
            # Held in time, not in batches: items that travel one a message for
            # another reason (item_timeout, their size) may take little time.
            batch, hold = max(1, min(self._batch, round(per_batch))), max(2, round(2 * per_batch))
        if len(ready) < self._stages[stage].workers:  # a worker is starting
            hold = batch
        return batch, min(hold, self._queue_size)

    def _ready_workers(self, stage: int) -> list[_Worker]:
        return [w for w in self._workers.values() if w.stage == stage and w.box is not None]

    def _room(self, stage: int) -> int:
        """How many more items the ready workers of ``stage`` may take."""
        ready = self._ready_workers(stage)
        _, hold = self._sizes(stage, ready)
        return sum(max(0, self._room_in(w, hold)) for w in ready)

    def _room_in(self, worker: _Worker, hold: int) -> int:
        """How many more items ``worker`` may take: up to ``hold``, and as many
        as have a cell that it will not read again."""
        return min(hold - len(worker.holding), self._cells - (worker.given - worker.passed))

    def _dispatch(self, stage: int) -> None:
        queue = self._pending[stage]
        if not queue and self._stages[stage].workers == 1:
            return  # nothing to send, nobody to take back items for
        workers = self._ready_workers(stage)
        if not workers:
            return
        batch, hold = self._sizes(stage, workers)
        if len(workers) > 1:  # first: items queued in a worker came before these
            self._rebalance(workers, batch, hold)
        cells = self._cells
        while queue:
            worker = min(workers, key=lambda w: len(w.holding))  # the least busy
            # _room_in, inline (one call less per message)
            room = min(hold - len(worker.holding), cells - worker.given + worker.passed, batch)
            if room <= 0:
                # Another may have room yet: the least busy can be short of
                # cells only when items were taken back from it.
                worker = max(workers, key=lambda w: self._room_in(w, hold))
                room = min(self._room_in(worker, hold), batch)
                if room <= 0:
                    return
            items = [queue.popleft()]
            if (stage, items[0][0]) not in self._suspects:
                used = ENTRY_HEAD + len(items[0][1])
                while queue and len(items) < room and (stage, queue[0][0]) not in self._suspects:
                    used += ENTRY_HEAD + len(queue[0][1])
                    if used > self._room_bytes:
                        break
                    items.append(queue.popleft())
            self._send(worker, items)

    def _send(self, worker: _Worker, items: list[tuple[int, bytes]]) -> None:
        """Give ``items`` to ``worker``, each with a free claim cell."""
        first, count, cells = worker.given, len(items), self._cells
        # The cells of its next items, in turn: the items that had them last
        # are behind it (_room_in). Freed before the message that brings the
        # items is sent: the worker reads them free.
        at = CELLS_AT + (worker.place * cells + first % cells) * CELL
        end = first % cells + count
        if end <= cells:
            self._shared.buffer[at : at + count * CELL] = FREE_CELL * count
        else:  # round the end of its cells
            wrapped = end - cells
            self._shared.buffer[at : at + (count - wrapped) * CELL] = FREE_CELL * (count - wrapped)
            at = CELLS_AT + worker.place * cells * CELL
            self._shared.buffer[at : at + wrapped * CELL] = FREE_CELL * wrapped
        assert worker.box is not None
        worker.box.send(Work(items))
        now = time.monotonic()
        if not worker.holding:
            worker.busy_since = now
            limit = self._settings.item_timeout
            if limit is not None:  # judged by then (see _receive)
                self._overdue_at = min(self._overdue_at, now + limit)
        worker.holding.update(items)
        worker.batches.append(_Batch(now, first, [index for index, _ in items]))
        worker.given += count

    def _rebalance(self, workers: list[_Worker], batch: int, hold: int) -> None:
        """Give each of ``workers`` (a stage's) that holds nothing the items
        queued in another that it has not begun, once that one has been on its
        current item over LONE_SECONDS: from the one longest on it first, and
        before any item pending for the stage (those came first). Executor.map's
        workers take their next item from one queue, only once free, and never
        leave one behind a long item so. (Items that take less come out soon
        enough: taking them back would cost more than it saves, as it would
        for a worker of a later stage, idle between two batches.)"""
        idle = [w for w in workers if not w.holding]
        if not idle:
            return
        # A worker's oldest item is the one it is on (or done with, its answer
        # on its way): only those behind it can be waiting.
        queued = [w for w in workers if len(w.holding) > 1]
        if not queued:
            return
        since = time.monotonic() - LONE_SECONDS
        recent = [w.busy_since for w in queued if w.busy_since > since]
        if recent:  # look again when the first of them has been on its item long
            self._rebalance_at = min(self._rebalance_at, min(recent) + LONE_SECONDS)
        long = sorted((w for w in queued if w.busy_since <= since), key=lambda w: w.busy_since)
        for worker in idle:
            room = min(self._room_in(worker, hold), batch)
            for other in long if room > 0 else ():
                items = self._take_back(other, room)
                if items:
                    self._send(worker, items)
                    break

    def _running(self, place: int) -> ctypes.c_int64:
        """The item the worker at ``place`` is running (see _running_at)."""
        return ctypes.c_int64.from_address(
            self._address + _running_at(self._place_count, self._cells, place)
        )

    def _claim(self, worker: _Worker, number: int) -> bool:
        """Take the claim cell of the ``number``-th item given to ``worker``:
        True if the driver got it, the worker not having begun the item."""
        cells = self._cells_address + worker.place * self._cells * CELL
        rc: int = _spin_trylock(cells + number % self._cells * CELL)
        return rc == 0

    def _take_back(self, worker: _Worker, most: int) -> list[tuple[int, bytes]]:
        """Take back up to ``most`` of the items queued in ``worker`` (after
        the one it is on) that it has not begun, in order, as many as one
        message holds. An item the pipeline suspects travels alone
        (_give_back), so it ends the take."""
        taken: list[tuple[int, bytes]] = []
        stage, holding, skip, full, used = worker.stage, worker.holding, True, False, 0
        for batch in list(worker.batches):
            for number, index in enumerate(batch.indexes, batch.first):
                if index not in holding:  # taken back already
                    continue
                if skip:
                    skip = False
                    continue
                alone = (stage, index) in self._suspects
                size = ENTRY_HEAD + len(holding[index])
                if taken and (alone or used + size > self._room_bytes):
                    full = True
                    break
                if not self._claim(worker, number):
                    continue  # begun: the worker goes on with it
                taken.append((index, holding.pop(index)))
                used += size
                batch.taken += 1
                if alone or len(taken) == most:
                    full = True
                    break
            if len(batch.indexes) == batch.taken:  # none left for it to answer
                worker.batches.remove(batch)
            if full:
                break
        return taken

    def _receive(self) -> ToDriver | _Dead | None:
        """The next message, or None after a wait of up to LOOK_AGAIN s."""
        now = time.monotonic()
        if now >= self._look_at:  # however many messages come: one may never
            self._check_workers()
            self._look_at = now + LOOK_AGAIN
        limit = self._settings.item_timeout
        if limit is not None and now >= self._overdue_at:
            # Each message waiting says when its worker went on to its next
            # item: all are read (into the backlog, in order) before any worker
            # is judged overdue. Judged only once the inbox was empty, a stuck
            # worker went unjudged while the others kept it busy.
            self._read_ahead()
            self._overdue_at = now + self._kill_overdue(limit)
        if self._backlog:
            return self._backlog.popleft()
        wait = min(self._look_at, self._rebalance_at) - now
        if limit is not None:
            wait = min(wait, self._overdue_at - now)
        try:
            return self._inbox.receive(timeout=max(0.0, wait))
        except TimeoutError:
            return None

    def _kill_overdue(self, limit: float) -> float:
        """Kill each worker that has spent over ``limit`` seconds on its
        current item; return the seconds until the next one could."""
        now, wait = time.monotonic(), LOOK_AGAIN
        for worker in self._workers.values():
            if not worker.holding or worker.overdue is not None or worker.dead is not None:
                continue
            # A Done read but not yet handled moves its start on (as it will),
            # or says it is done with what it holds.
            start = worker.busy_since
            unread = self._unread.get(worker.number)
            if unread is not None:
                if worker.holding.keys() <= unread[1]:
                    continue
                start = max(start, unread[0])
            left = start + limit - now
            if left > 0:
                wait = min(wait, left)
                continue
            worker.overdue = next(i for i in worker.batches[0].indexes if i in worker.holding)
            log.warning(
                "netmcore: a worker of pipeline stage %s (process %d) spent over "
                "item_timeout=%s s on item %d: killing it",
                self._stages[worker.stage].name,
                worker.pid.n,
                limit,
                worker.overdue,
            )
            _kill(worker)
            self._look_at = min(self._look_at, now + KILLED_LOOK_AGAIN)  # to see it dead soon
            wait = min(wait, KILLED_LOOK_AGAIN)
        return wait

    def _check_workers(self) -> None:
        """Find the workers that ended before they were told to stop: they
        have died. Each is given no more work, and buried once the messages
        waiting now are read (the last it sent are among them: results it
        sent are not lost with it, nor taken for begun items)."""
        dead = []
        for worker in self._workers.values():
            if worker.dead is None:
                worker.dead = stage_worker.join_outcome_nowait(worker.pid)
                if worker.dead is not None:
                    dead.append(worker)
        if not dead:
            return
        for worker in dead:
            if worker.box is not None:
                worker.box.release()
                worker.box = None
        self._read_ahead()
        self._backlog.extend(_Dead(worker.number) for worker in dead)

    def _read_ahead(self) -> None:
        """Read every message waiting into the backlog, in order, noting what
        each Done says for item_timeout (see _kill_overdue): handled later."""
        with contextlib.suppress(TimeoutError):
            while True:
                msg = self._inbox.receive(timeout=0)
                if isinstance(msg, Done):
                    at, answered = self._unread.get(msg.worker, (0.0, set()))
                    answered.update(i for i, _ in (*msg.results, *msg.failures))
                    self._unread[msg.worker] = (max(at, msg.at), answered)
                self._backlog.append(msg)

    def _bury(self, worker: _Worker) -> None:
        """Give a dead worker's items back to its stage, or report them;
        replace it. One that raised before it was ready failed as it started
        (no room left for its mailbox, say), not on an item: it is replaced
        once (the cause may pass), not again until a worker of its stage is
        ready (it would fail the same way, for ever)."""
        assert worker.dead is not None
        if isinstance(worker.dead, Raised) and not worker.ready:
            self._start_failures[worker.stage] += 1
            if self._start_failures[worker.stage] > 1:
                raise StageWorkerError(self._stages[worker.stage].name, str(worker.dead))
        self._give_back(worker)
        self._places.append(worker.place)  # it is dead: its cells are free
        self._spawn(worker.stage)

    def _give_back(self, worker: _Worker) -> None:
        """Queue a dead worker's items again. An item whose claim cell the
        driver can still take was never begun: it goes as it came. Each of the
        others it had begun and not answered (it died on one of them; the
        others ran, their results unsent) is charged a try and is sent alone
        from now on, so that the item that kills its worker is found and the
        others go through; an item over ``retries`` tries fails."""
        stage, holding = worker.stage, worker.holding
        again, begun, failed = [], set(), []
        for batch in worker.batches:
            for number, index in enumerate(batch.indexes, batch.first):
                if index not in holding:  # taken back before: another worker has it
                    continue
                if self._claim(worker, number):
                    again.append((index, holding[index]))  # never begun
                    continue
                begun.add(index)
                key = (stage, index)
                self._suspects.add(key)
                self._tries[key] = self._tries.get(key, 0) + 1
                if self._tries[key] > self._settings.retries:
                    failed.append(index)
                else:
                    again.append((index, holding[index]))
        self._pending[stage].extendleft(reversed(again))
        for index in failed:
            self._forget(stage, index)
            self._fail(index, stage, self._cause(worker, begun, index), _ending(worker))
            self._lost += 1
        self._bars[stage].update(len(failed))  # out of the stage, as answered ones

    def _forget(self, stage: int, index: int) -> None:
        """``index`` is done with ``stage`` (answered, or failed for good):
        its tries there, counted as its workers died, go. Kept, they grew by
        one per worker death for as long as the run lasted (an endless input)."""
        key = (stage, index)
        self._tries.pop(key, None)
        self._suspects.discard(key)

    def _cause(self, worker: _Worker, begun: set[int], index: int) -> str:
        """Why ``index``, one of the items a dead worker had ``begun``, fails.
        The worker says in shared memory which one it was running (see
        _running_at): every other it had begun, it had run."""
        if worker.overdue is not None:  # the driver killed it for that item
            limit = f"item_timeout={self._settings.item_timeout} s"
            if index == worker.overdue:
                return f"it ran over {limit}, and its worker was killed"
            return (
                f"its worker was killed for item {worker.overdue}, which ran over {limit}, "
                "before this item's result was sent"
            )
        died = f"its worker died ({worker.dead})"
        on = self._running(worker.place).value
        if index == on:
            return died
        if on in begun:
            died += f" on item {on}"
        return f"its result was lost: {died}, after it had run this item"

    def _fail(
        self, index: int, stage: int, cause: str, outcome: Raised | InvalidResult | Crashed
    ) -> None:
        name = self._stages[stage].name
        if self._settings.on_error == "stop":
            if not self._settings.ordered:
                raise PipelineError(index, name, cause, outcome)
            # Raised by _flow when its turn in the input order comes: an
            # earlier item may fail too while we wait for the ones before it.
            if self._failed is None or index < self._failed.index:
                self._failed = PipelineError(index, name, cause, outcome)
            return
        self.failures.append(ItemFailure(index, name, cause, outcome))
        if self._count is not None:  # an item that will not reach the later stages
            for bar in self._bars[stage + 1 :]:
                bar.total = (bar.total or 0) - 1
        if self._settings.ordered:  # passed over in input order (_flow), then forgotten
            self._skipped.add(index)

    # --- shutdown -----------------------------------------------------------------

    def _shutdown(self) -> None:
        """Stop every worker now, without the work queued for it; kill one that
        is still busy after GRACE seconds, or whose process has not ended
        GRACE seconds after it finished; release everything.

        Made again after an exception (see drive), it goes on from where the
        exception left it: each step done is noted (see _Closing), and passed
        over. Each is bounded in time (a worker that does not stop is
        killed): the interrupts held meanwhile are raised soon."""
        closing = self._closing
        if closing is None:
            self._shared.buffer[0] = 1
            # Those found dead, not yet buried, are joined already.
            joined = {n for n, worker in self._workers.items() if worker.dead is not None}
            closing = self._closing = _Closing(time.monotonic() + GRACE, joined)
        self._stop_workers(closing)
        # Drain what workers still send, so that none blocks on a full inbox,
        # until each has said it finished, or died. First what was read and
        # not yet handled (see _check_workers): a Ready there, left, kept its
        # worker waiting for a Stop for ever, and this loop with it. A message
        # leaves the backlog once handled: one an exception cut short is
        # handled again (as the inbox keeps one a receive was cut short in).
        while self._backlog or closing.running(self._workers):
            if not self._backlog:
                if time.monotonic() > closing.deadline:
                    # (Cut short, killed again: a kill of one that ended does nothing.)
                    self._kill([self._workers[n] for n in closing.running(self._workers)])
                    closing.deadline = math.inf
                try:
                    self._backlog.append(self._inbox.receive(timeout=0.05))
                except TimeoutError:  # a worker that died never says it finished
                    for n in closing.running(self._workers):
                        if stage_worker.join_outcome_nowait(self._workers[n].pid) is not None:
                            closing.joined.add(n)
                    continue
            msg = self._backlog[0]
            if not isinstance(msg, _Dead):
                self._on_shutdown_message(msg, closing)
            self._backlog.popleft()
        # A worker's process ends once its process function has returned and
        # its non-daemon threads have ended: one that a stage function started,
        # and that runs on, would keep it, and this join, for ever.
        if not closing.late_killed:
            for n in self._not_ended(closing.finished):
                worker = self._workers[n]
                if not _kill(worker):  # it ended meanwhile (its os pid now another's)
                    continue
                log.warning(
                    "netmcore: a worker of pipeline stage %s (process %d) had finished, but "
                    "its process had not ended %s s later: killing it. A process ends only "
                    "once its non-daemon threads have: did the stage function start one "
                    "that runs on? Make it a daemon thread, or end it",
                    self._stages[worker.stage].name,
                    worker.pid.n,
                    GRACE,
                )
            closing.late_killed = True
        for worker in self._workers.values():
            if worker.number not in closing.joined:
                stage_worker.join_outcome(worker.pid)  # (cut short, it keeps the outcome)
                closing.joined.add(worker.number)
            if worker.box is not None:
                worker.box.release()  # (again, if cut short: harmless)
                worker.box = None
        for bar in self._bars:
            bar.close()  # once: closed, it does nothing
        self._inbox.release()
        self._release_shared()

    def _stop_workers(self, closing: _Closing) -> None:
        """Send a Stop to each worker with a mailbox that was not sent one (cut
        short, maybe twice to one: the second stays in its box, unread)."""
        for worker in self._workers.values():
            if worker.box is not None and worker.number not in closing.stopped:
                _stop(worker)
                closing.stopped.add(worker.number)

    def _on_shutdown_message(self, msg: ToDriver, closing: _Closing) -> None:
        """A message read as the pipeline shuts down: a worker that finished,
        or one that started and was never used (stopped too). A result is
        dropped: nobody reads it now. Handled again, it changes nothing."""
        if isinstance(msg, Finished):
            closing.finished.setdefault(msg.worker, time.monotonic())
        elif isinstance(msg, Ready) and msg.worker in self._workers:
            # (One found dead, and replaced, before the shutdown is no longer listed.)
            if self._workers[msg.worker].box is None:
                self._ready(msg)
            self._stop_workers(closing)

    def _not_ended(self, finished: dict[int, float]) -> list[int]:
        """Wait until the process of each worker in ``finished`` (which said
        so at the time given) has ended, for up to GRACE seconds after that;
        return those that had not by then.

        A pidfd (of its os pid, from its box) wakes the wait the moment a
        process ends: no polling, and no delay when they end at once, as they
        do. The pid was its own when it said it finished; one since ended and
        reaped, and taken by another program, passes for not ended: it is then
        killed through the master, by process id, which does nothing to the
        other program."""
        watched: dict[int, int] = {}  # pidfd: worker
        poller = select.poll()
        late = []
        try:
            for n in finished:
                box = self._workers[n].box
                if box is None:
                    continue
                try:
                    fd = os.pidfd_open(box.owner_pid)
                except ProcessLookupError:
                    continue  # ended, and reaped
                except OSError:
                    continue  # no pidfds (Linux before 5.3): joined without a limit
                watched[fd] = n
                poller.register(fd, select.POLLIN)  # readable once it has ended
            while watched:
                soonest = min(finished[n] for n in watched.values()) + GRACE
                # Each fd out of ``watched`` before it is closed: closed, then
                # cut short (a Ctrl-C as the close returns), it was closed again
                # below (EBADF, or another thread's new fd of that number).
                for fd, _ in poller.poll(max(0.0, soonest - time.monotonic()) * 1000):
                    poller.unregister(fd)
                    del watched[fd]
                    os.close(fd)
                now = time.monotonic()
                for fd, n in list(watched.items()):
                    if finished[n] + GRACE <= now:
                        late.append(n)
                        poller.unregister(fd)
                        del watched[fd]
                        os.close(fd)
        finally:
            for fd in watched:
                os.close(fd)
        return late

    def _kill(self, workers: list[_Worker]) -> None:
        for worker in workers:
            # One not ready yet holds no item: killed without a word. Waited
            # for, one stuck as it started (a fork hook, say) kept the shutdown
            # for ever, and the interrupts it holds (see _shutdown) with it.
            if worker.box is None:
                _kill(worker)
                continue
            log.warning(
                "netmcore: a worker of pipeline stage %s (process %d) did not stop within "
                "%s s of the shutdown, stuck on an item: killing it",
                self._stages[worker.stage].name,
                worker.pid.n,
                GRACE,
            )
            _kill(worker)


def _kill(worker: _Worker) -> bool:
    """Whether ``worker`` got SIGKILL: sent by process id, through the master's
    pidfd, since it may have ended and been reaped, and its os pid gone to
    another program (kill is then False)."""
    return kill(worker.pid, signal.SIGKILL)


def _stop(worker: _Worker) -> None:
    """Wake ``worker`` if it waits for work, so that it reads the stop flag."""
    if worker.box is not None:
        # A full box (TimeoutError) means it is busy: it reads the flag at its
        # next item. BrokenPipeError: it has died.
        with contextlib.suppress(TimeoutError, BrokenPipeError):
            worker.box.send(Stop(), timeout=0)
