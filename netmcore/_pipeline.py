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
most ``queue_size`` items at a time (credits), so no send ever blocks and
memory stays flat on an endless input. Because the driver knows which items
each worker holds, a worker that dies (SIGKILL, a crash) loses nothing
silently: its items are given to another worker once, or reported.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Generator, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar

import msgspec

from ._encap import Encap
from ._errors import NetmcoreError
from ._ids import ProcessId, ResId
from ._mailbox import Mailbox
from ._process import ProcessDef, process
from ._registry import by_fork_point

if TYPE_CHECKING:
    import tqdm

In = TypeVar("In")
Out = TypeVar("Out")
Next = TypeVar("Next")


# --- messages between the driver and the stage workers ---------------------------


# Items travel in batches (up to BATCH small items a message): one wake-up of
# a worker, and one of the driver, for many items.
BATCH_BYTES = 64 * 1024
BATCH = 16


class Work(msgspec.Struct, frozen=True, tag=True):
    items: list[tuple[int, bytes]]  # (index, encoded item)


class Stop(msgspec.Struct, frozen=True, tag=True):
    pass


class Ready(msgspec.Struct, frozen=True, tag=True):
    worker: int
    box: ResId


class Done(msgspec.Struct, frozen=True, tag=True):
    worker: int
    results: list[tuple[int, bytes]]  # (index, encoded result)
    failures: list[tuple[int, str]]  # (index, "Type: message")


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
    queue_size: int
    item_size: int
    batch: int


@process
def stage_worker(job: StageJob) -> int:
    """Run one stage's process function on every item the driver sends."""
    definition = by_fork_point[job.fork_point.n]
    driver = Mailbox.open(job.driver, ToDriver)
    size = job.batch * (job.item_size + 16) + 64
    inbox = Mailbox.create(ToWorker, slots=job.queue_size, slot_size=size)
    driver.send(Ready(job.worker, inbox.res_id))
    done = 0
    while isinstance(msg := inbox.receive(), Work):
        results, failures = [], []
        for index, data in msg.items:
            try:
                encap = definition.function(Encap(job.input_name, job.input_fingerprint, (data,)))
                results.append((index, bytes(encap.data)))
            except Exception as exc:
                failures.append((index, f"{type(exc).__qualname__}: {exc}"))
        driver.send(Done(job.worker, results, failures))
        done += len(msg.items)
    inbox.release()
    driver.send(Finished(job.worker))
    driver.close()
    return done


class PipelineError(NetmcoreError, RuntimeError):
    """An item failed and the policy was ``"stop"``: the pipeline was shut down.

    Attributes
    ----------
    index : int
        The position of the item in the input.
    stage : str
        The process type that failed on it.
    cause : str
        The exception (type and message), or how the worker died.
    """

    def __init__(self, index: int, stage: str, cause: str) -> None:
        super().__init__(f"item {index} failed in stage {stage}: {cause}")
        self.index, self.stage, self.cause = index, stage, cause


@dataclass(frozen=True)
class ItemFailure:
    """An item that failed, as a ``"skip"`` pipeline reports it."""

    index: int
    stage: str
    cause: str


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
        if before.fingerprint != added.process.input_type.fingerprint:
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
        progress: bool | None = None,
    ) -> PipelineRun[Out]:
        """Run every item through the stages; iterate over the results.

        Call it in a netmcore process (the first process, or any worker).

        Parameters
        ----------
        ordered :
            Results in input order (True), or as they complete (False).
        on_error :
            ``"stop"``: the first failing item shuts the pipeline down and
            raises :class:`PipelineError`, with its index and cause.
            ``"skip"``: failing items are left out of the results and listed
            in the run's ``failures``.
        queue_size :
            Items a worker may hold at a time; memory stays flat however long
            the input is.
        item_size :
            The largest encoded item, in bytes (a larger one is refused).
        retries :
            How often an item lost with a worker that died is given to another
            worker before it counts as failed.
        progress :
            Show a progress bar per stage: items in, items out, rate. By
            default, only when stderr is a terminal.
        """
        if on_error not in ("stop", "skip"):
            raise ValueError(f"on_error={on_error!r} is not valid: use 'stop' or 'skip'")
        sizes: tuple[tuple[object, str], ...] = (
            (queue_size, "queue_size"),
            (item_size, "item_size"),
        )
        for value, what in sizes:
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{what}={value!r} is not valid: it must be at least 1")
        return PipelineRun(
            self, iter(items), ordered, on_error, queue_size, item_size, retries, progress
        )


def _stage(stage: object, workers: object) -> Stage:
    if not (
        isinstance(stage, type) and issubclass(stage, ProcessDef) and "input_type" in dir(stage)
    ):
        raise TypeError(f"a pipeline stage must be a ProcessDef subclass, not {stage!r}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers={workers!r} is not valid: at least 1 worker per stage")
    return Stage(stage, workers)


@dataclass(eq=False)
class _Worker:
    stage: int
    number: int
    pid: ProcessId[int]
    box: Mailbox[ToWorker] | None = None
    holding: dict[int, bytes] = field(default_factory=dict)  # the items it has, by index
    batches: deque[list[int]] = field(default_factory=deque)  # as sent, oldest first


class PipelineRun(Generic[Out]):
    """A running pipeline: iterate over it for the results.

    ``failures`` lists the items that failed (with ``on_error="skip"``).
    Leaving the iteration early (``break``, an exception) shuts the pipeline
    down cleanly: every worker stops and every mailbox is released.
    """

    def __init__(
        self,
        pipeline: Pipeline[Any, Out],
        items: Iterator[Any],
        ordered: bool,
        on_error: str,
        queue_size: int,
        item_size: int,
        retries: int,
        progress: bool | None,
    ) -> None:
        self._stages = pipeline.stages
        self._items = items
        self._ordered, self._on_error = ordered, on_error
        self._queue_size, self._item_size, self._retries = queue_size, item_size, retries
        self.failures: list[ItemFailure] = []
        self._progress = progress
        self._results: Generator[Out, None, None] = self._drive()

    def __iter__(self) -> Iterator[Out]:
        return self._results

    def __next__(self) -> Out:
        return next(self._results)

    def close(self) -> None:
        """Shut the pipeline down now (iteration does it when it ends)."""
        self._results.close()

    # --- the driver ---------------------------------------------------------------

    def _drive(self) -> Generator[Out, None, None]:
        slots = sum(s.workers for s in self._stages) * self._queue_size + 8
        self._batch = max(1, min(BATCH, BATCH_BYTES // self._item_size))
        self._inbox: Mailbox[ToDriver] = Mailbox.create(
            ToDriver, slots=slots, slot_size=self._batch * (self._item_size + 16) + 64
        )
        self._workers: dict[int, _Worker] = {}
        self._pending: list[deque[tuple[int, bytes]]] = [deque() for _ in self._stages]
        self._tries: dict[tuple[int, int], int] = {}  # (stage, index) -> times lost
        self._suspects: set[tuple[int, int]] = set()  # (stage, index): sent alone
        self._next_worker = 0
        self._lost = 0  # items failed with a dead worker, not yet counted out
        self._skipped: set[int] = set()  # failed indexes, passed over in order
        self._bars = [self._bar(i, s) for i, s in enumerate(self._stages)]
        try:
            for stage in range(len(self._stages)):
                for _ in range(self._stages[stage].workers):
                    self._spawn(stage)
            yield from self._flow()
        finally:
            self._shutdown()

    def _bar(self, i: int, stage: Stage) -> tqdm.tqdm[Any]:
        # Imported here, not by the master: tqdm pulls in importlib.metadata,
        # email and zipfile, 1.6 MB that every fork would copy and tear down.
        import tqdm

        disable = None if self._progress is None else not self._progress
        return tqdm.tqdm(
            desc=f"{stage.name} x{stage.workers}",
            unit="item",
            position=i,
            disable=disable,
            leave=True,  # the final counts and rate stay on screen
        )

    def _spawn(self, stage: int) -> None:
        number = self._next_worker
        self._next_worker += 1
        process = self._stages[stage].process
        job = StageJob(
            number,
            process.fork_point,
            process.input_type.name,
            process.input_type.fingerprint,
            self._inbox.res_id,
            self._queue_size,
            self._item_size,
            self._batch,
        )
        self._workers[number] = _Worker(stage, number, stage_worker.start(job))

    def _flow(self) -> Iterator[Out]:
        first = self._stages[0].process.input_type
        last = self._stages[-1].process.output_type
        fed, left, exhausted = 0, 0, False  # items read; items out (result or failure)
        expect = 0  # in input order: the index to hand out next
        waiting: list[tuple[int, bytes]] = []  # results held back for the input order
        while True:
            # Feed stage 0 while it has room: the input is read lazily.
            while not exhausted and len(self._pending[0]) < self._room(0):
                try:
                    item = next(self._items)
                except StopIteration:
                    exhausted = True
                    break
                self._pending[0].append((fed, first.encode(item, f"pipeline item {fed}")))
                fed += 1
            for stage in range(len(self._stages)):
                self._dispatch(stage)
            left += self._lost  # items failed by a dead worker
            self._lost = 0
            while self._ordered:  # hand out what comes next in the input order
                if expect in self._skipped:
                    self._skipped.discard(expect)
                elif waiting and waiting[0][0] == expect:
                    yield last.decode(heapq.heappop(waiting)[1])
                else:
                    break
                expect += 1
            if exhausted and left == fed and not waiting:
                return
            msg = self._receive()
            if msg is None:
                continue
            if isinstance(msg, Ready):
                self._workers[msg.worker].box = Mailbox.open(msg.box, ToWorker)
                continue
            if isinstance(msg, Finished):  # not before Stop, which only _shutdown sends
                continue
            worker = self._workers[msg.worker]
            worker.batches.popleft()  # a worker answers its batches in order
            stage = worker.stage
            self._bars[stage].update(len(msg.results) + len(msg.failures))
            for index, cause in msg.failures:
                worker.holding.pop(index, None)
                self._fail(index, stage, cause)
                left += 1
            for index, data in msg.results:
                worker.holding.pop(index, None)
                if stage + 1 < len(self._stages):
                    self._pending[stage + 1].append((index, data))
                elif not self._ordered:
                    left += 1
                    yield last.decode(data)
                else:
                    left += 1
                    heapq.heappush(waiting, (index, data))

    def _room(self, stage: int) -> int:
        """How many more items the ready workers of ``stage`` may take."""
        return sum(
            self._queue_size - len(w.holding)
            for w in self._workers.values()
            if w.stage == stage and w.box is not None
        )

    def _dispatch(self, stage: int) -> None:
        queue = self._pending[stage]
        workers = [w for w in self._workers.values() if w.stage == stage and w.box is not None]
        while queue and workers:
            worker = min(workers, key=lambda w: len(w.holding))  # the least busy
            room = min(self._queue_size - len(worker.holding), self._batch)
            if room <= 0:
                return
            batch = [queue.popleft()]
            if (stage, batch[0][0]) not in self._suspects:
                while queue and len(batch) < room and (stage, queue[0][0]) not in self._suspects:
                    batch.append(queue.popleft())
            assert worker.box is not None
            worker.box.send(Work(batch))
            worker.holding.update(batch)
            worker.batches.append([index for index, _ in batch])
            self._bars[stage].total = (self._bars[stage].total or 0) + len(batch)
            self._bars[stage].refresh()

    def _receive(self) -> ToDriver | None:
        try:
            return self._inbox.receive(timeout=0.25)
        except TimeoutError:
            self._check_workers()
            return None

    def _check_workers(self) -> None:
        """A worker that ended before it was told to stop has died: give its items
        to another worker (``retries`` times), or report them; replace it."""
        for worker in list(self._workers.values()):
            outcome = stage_worker.join_outcome_nowait(worker.pid)
            if outcome is None:
                continue
            del self._workers[worker.number]
            if worker.box is not None:
                worker.box.close()
            # It answers its batches in order: it died working on the oldest
            # one. A batch of one item is charged a try; the items of a larger
            # batch become suspects, sent alone from now on, so that the item
            # that kills its worker is found and the others go through.
            for batch in reversed(worker.batches):
                for index in reversed(batch):
                    self._pending[worker.stage].appendleft((index, worker.holding[index]))
            if len(worker.batches[0] if worker.batches else ()) > 1:
                self._suspects.update((worker.stage, i) for i in worker.batches[0])
            elif worker.batches:
                index = worker.batches[0][0]
                key = (worker.stage, index)
                self._tries[key] = self._tries.get(key, 0) + 1
                if self._tries[key] > self._retries:
                    self._pending[worker.stage].popleft()
                    self._fail(index, worker.stage, f"its worker died ({outcome})")
                    self._lost += 1
            self._spawn(worker.stage)

    def _fail(self, index: int, stage: int, cause: str) -> None:
        name = self._stages[stage].name
        if self._on_error == "stop":
            raise PipelineError(index, name, cause)
        self.failures.append(ItemFailure(index, name, cause))
        self._skipped.add(index)

    def _shutdown(self) -> None:
        for worker in self._workers.values():
            if worker.box is not None:
                worker.box.send(Stop())
        # Drain what workers still send, so that none blocks on a full inbox,
        # until each has said it finished, or died.
        running, died = set(self._workers), set()
        while running:
            try:
                msg = self._inbox.receive(timeout=0.25)
            except TimeoutError:  # a worker that died never says it finished
                for n in list(running):
                    if stage_worker.join_outcome_nowait(self._workers[n].pid) is not None:
                        running.discard(n)
                        died.add(n)  # joined now
                continue
            if isinstance(msg, Finished):
                running.discard(msg.worker)
            elif isinstance(msg, Ready):  # started, never used: stop it too
                worker = self._workers[msg.worker]
                worker.box = Mailbox.open(msg.box, ToWorker)
                worker.box.send(Stop())
        for worker in self._workers.values():
            if worker.number not in died:
                stage_worker.join_outcome(worker.pid)
            if worker.box is not None:
                worker.box.close()
        for bar in self._bars:
            bar.close()
        self._inbox.release()
