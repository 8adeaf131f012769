"""Typed process definitions (upstream ``Netmcore_process``).

A ``ProcessDef[In, Out]`` subclass is defined once, at module level, and
becomes a process type: defining the class calls :func:`def_process` with a
function that unwraps the ``In`` argument, calls ``run``, and wraps the ``Out``
result. ``start`` and ``join`` are then checked by mypy, and by msgspec at
run time.
"""

from __future__ import annotations

import functools
import inspect
import operator
import os
import sys
import time
import types
import typing
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator
from typing import Any, ClassVar, Generic, Literal, NamedTuple, TypeVar

import msgspec

from . import _client, _completed, _context, _posix, _pthread, _registry, _resource_api, _worker
from ._client import InheritRequest
from ._debug import log, trace
from ._encap import Encap, EncapType
from ._errors import ArgumentTypeError, NetmcoreError, ProcessFailed, ResultTypeError
from ._ids import ProcessId, ResId
from ._outcome import Crashed, InvalidResult, Outcome, Raised, Success
from ._pthread import check_timeout
from ._wire import Ended, Invalid, Returned, WireOutcome, failed_of_its_own
from ._wire import Raised as WireRaised

In = TypeVar("In")
Out = TypeVar("Out")
X = TypeVar("X")
Y = TypeVar("Y")

# ProcessDef.map holds at most this many times ``processes`` results ahead of
# the one it waits for (a slow item's), so that an endless input is read ahead
# only so far.
MAP_AHEAD = 4
# What map and map_outcomes are named in their errors.
MAP, MAP_OUTCOMES = "map", "map_outcomes"
# chunksize="auto" sizes chunks so that each runs its items for about this
# long: a fork costs ~3 ms of CPU, a few per cent of it; and a chunk this
# short still spreads the last items over the CPUs.
AUTO_CHUNK_SECONDS = 0.1
# ... and holds at most this many bytes of arguments (or, as measured, of
# results): a chunk of large items is sent whole, through /dev/shm.
AUTO_CHUNK_BYTES = 16 << 20


class ProcessDef(Generic[In, Out]):
    """A process type taking an ``In`` and returning an ``Out``.

    Subclass it with concrete types and define ``run``::

        class Add(netmcore.ProcessDef[tuple[float, float], float]):
            def run(self, arg: tuple[float, float]) -> float:
                return arg[0] + arg[1]

        pid = Add.start((3.0, 4.0))   # a ProcessId[float]
        Add.join(pid)                 # 7.0, or None if the process failed

    A generic subclass, such as ``class Firsts(ProcessDef[list[T], dict[str,
    T]])``, is a base for process types, not one itself: ``class
    IntFirsts(Firsts[int])`` is a ``ProcessDef[list[int], dict[str, int]]``.
    Quoted names (``ProcessDef["Point", int]``) are looked up in the module of
    the class. Each worker calls ``cls().run(arg)``: a class whose ``__init__``
    needs arguments, or whose ``run`` is async, a generator, or takes no
    argument, is a TypeError when it is defined (a generic one when it is
    specialised).

    Attributes
    ----------
    fork_point, join_point : ResId
        The resource ids of the process type, as :func:`def_process` made them.
    input_type, output_type : EncapType
        How the argument and the result are encoded and checked.
    """

    fork_point: ClassVar[ResId]
    join_point: ClassVar[ResId]
    input_type: ClassVar[EncapType[Any]]
    output_type: ClassVar[EncapType[Any]]

    def run(self, arg: In) -> Out:
        """The body of the process, run in a fresh worker."""
        raise NotImplementedError

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        params = _type_params(cls)
        if params is None and not _parameters(cls):
            # Types left open that no subscript can give: `class W(ProcessDef)`.
            parent = next(b for b in cls.__bases__ if issubclass(b, ProcessDef))
            wanted = ", ".join(p.__name__ for p in _parameters(parent))
            what = "its argument and result types" if parent is ProcessDef else "its types"
            raise TypeError(
                f"{cls.__qualname__} subclasses {parent.__qualname__} without {what}: "
                f"give them, as in `class {cls.__qualname__}({parent.__qualname__}[{wanted}])` "
                "with concrete types, e.g. `class Add(netmcore.ProcessDef[tuple[int, int], int])`"
            )
        if params is None:
            return  # still generic: a base for other process types
        if cls.run is ProcessDef.run:
            raise TypeError(f"{cls.__qualname__} must define run(self, arg)")
        # Each worker calls cls().run(arg): what it could not call is refused
        # here, once, rather than in every process of the type.
        _check_constructible(cls)
        _check_run(cls, params)
        cls.input_type = EncapType(params[0])
        cls.output_type = EncapType(params[1])
        cls.fork_point, cls.join_point = _registry.define(
            _entry(cls), f"{cls.__module__}.{cls.__qualname__}", _used_by_run(cls)
        )

    @classmethod
    def start(cls, arg: In, *, inherit_resources: InheritRequest = "all") -> ProcessId[Out]:
        """Start a process running ``run(arg)``; return its id at once.

        Raises
        ------
        ArgumentTypeError
            If ``arg`` does not match ``In``; nothing is sent. ``.path`` says
            where in the value the fault is.
        """
        return cls._start(arg, inherit_resources)

    @classmethod
    def _start_into(cls, arg: In, watch: int, what: str) -> ProcessId[Out]:
        """Start a process of map's, into its watch."""
        return cls._start(arg, "all", watch, what)

    @classmethod
    def _start(
        cls, arg: In, inherit: InheritRequest, watch: int = 0, what: str = ""
    ) -> ProcessId[Out]:
        """:meth:`start`, the process joining the watch ``watch`` (see _watches);
        ``what`` names the argument in its error (by default, start's)."""
        try:
            input_type, fork_point = cls.input_type, cls.fork_point
        except AttributeError:
            raise cls._not_a_process_type() from None
        encap = input_type.wrap_as(arg, what or f"argument of {cls.__qualname__}.start:")
        pid: ProcessId[Out] = _client.start_into(fork_point, encap, inherit, watch)
        return pid

    @classmethod
    def join(cls, pid: ProcessId[Out], *, timeout: float | None = None) -> Out | None:
        """Wait for ``pid`` to end; its result, or None if it has none.

        Why there is none (an exception, a crash, an invalid result) is logged;
        :meth:`join_outcome` returns it.

        Raises
        ------
        TimeoutError
            If ``pid`` has not ended within ``timeout`` seconds (None or
            ``math.inf``: no limit; 0: a try). This join is then not used up:
            ``pid`` can be joined again.
        """
        outcome = cls._join(pid, wait=True, timeout=timeout)
        assert outcome is not None
        value = _value(outcome)
        _client.handed_over(pid.n)  # last: see there
        return value

    @classmethod
    def join_nowait(cls, pid: ProcessId[Out]) -> Out | None:
        """The result of ``pid`` if it has ended (this is then its one join), else None."""
        outcome = cls._join(pid, wait=False)
        value = None if outcome is None else _value(outcome)
        _client.handed_over(pid.n)  # last: see there
        return value

    @classmethod
    def result(cls, pid: ProcessId[Out], *, timeout: float | None = None) -> Out:
        """Wait for ``pid`` to end; its result, as ``Future.result()`` gives
        it. This counts as its one join. In the master's own code (as in
        ``extract_result``), only ``timeout=0`` is allowed: a try.

        Raises
        ------
        ProcessFailed
            If it has no result: it raised (the remote traceback is the
            exception's note), it returned an invalid result, or it crashed.
            ``.outcome`` says which, as :meth:`join_outcome` would.
        TimeoutError
            As :meth:`join` (no join then).
        """
        outcome = cls._join(pid, wait=True, timeout=timeout, call="result")
        assert outcome is not None
        # Told apart before the hand-over, the last of the calls (see there):
        # the isinstance after it was a point where a handler's exception
        # came with the result handed over, lost (a retry: UnknownProcess).
        if isinstance(outcome, Success):
            value = outcome.value
            _client.handed_over(pid.n)
            return value
        failure = ProcessFailed(pid, cls.__qualname__, outcome)
        _client.handed_over(pid.n)
        raise failure

    @classmethod
    def join_outcome(cls, pid: ProcessId[Out], *, timeout: float | None = None) -> Outcome[Out]:
        """Wait for ``pid`` to end and say how: this counts as its one join.
        TimeoutError past ``timeout``, as :meth:`join` (no join then)."""
        outcome = cls._join(pid, wait=True, timeout=timeout, call="join_outcome")
        assert outcome is not None
        _client.handed_over(pid.n)  # last: see there
        return outcome

    @classmethod
    def join_outcome_nowait(cls, pid: ProcessId[Out]) -> Outcome[Out] | None:
        """:meth:`join_outcome` if ``pid`` has ended, else None (and no join)."""
        outcome = cls._join(pid, wait=False)
        _client.handed_over(pid.n)  # last: see there
        return outcome

    @classmethod
    def as_completed(
        cls, pids: Iterable[ProcessId[Out]], *, timeout: float | None = None
    ) -> Iterator[ProcessId[Out]]:
        """Yield each of ``pids`` once its process has ended, the first ended
        first, as ``concurrent.futures.as_completed`` yields futures. A join
        of it (:meth:`result`, :meth:`join`, :meth:`join_outcome`) then
        returns at once. Nothing is joined here: join each one as it comes.
        A process that another caller joined meanwhile counts as ended (its
        join here then raises UnknownProcess). In a worker only: the master
        never waits. :func:`netmcore.as_completed` takes ids of several
        types.

        Raises
        ------
        UnknownProcess, WrongJoinPoint
            At the call, before anything is yielded, for an id that a join
            of this type would refuse.
        TimeoutError
            From the iteration, once ``timeout`` seconds have passed since
            the call and some processes have not ended. None of those is
            joined: join them, or wait for them again.
        NoResource
            From the iteration, once the join point of this type is released.
        """
        return _completed.through(
            cls._join_point(), pids, timeout, f"{cls.__qualname__}.as_completed"
        )

    @classmethod
    def map(
        cls,
        args: Iterable[In],
        *,
        processes: int | None = None,
        timeout: float | None = None,
        chunksize: int | Literal["auto"] = 1,
        ordered: bool = True,
    ) -> Iterator[Out]:
        """Start a process for each item of ``args`` (for each ``chunksize``
        items), at most ``processes`` of them running at a time (None: one
        per CPU this process may use), and yield their results in order, as
        ``Executor.map`` does. The error of an item (its
        :class:`ProcessFailed`, its argument's :class:`ArgumentTypeError`, or
        the exception ``args`` raised) comes where its result would have,
        after every result before it (:meth:`map_outcomes` goes on past an
        item that fails). In a worker only: the master never waits.

        With a ``chunksize`` over 1, each process runs that many items in
        turn (``cls().run`` for each, in the same process: what one leaves
        in it, the next finds), which spreads the cost of a process over
        them: for many small items. An item that raises, returns an invalid
        result or exits is a :class:`ProcessFailed` for that item, whose
        ``outcome`` says how, and the items after it in its chunk are not
        run; a chunk's process that dies fails its first item not yielded,
        naming the chunk's items. The window below counts chunks.

        ``chunksize="auto"`` sizes the chunks as the map goes, as joblib's
        ``batch_size="auto"`` does: the first ones hold one item; each next
        one about 0.1 s of items (as the chunks yielded so far measured
        them; at most 16 MiB of arguments or results), at most twice the
        largest chunk measured; and, if ``args`` has a length, fewer
        towards its end, so that the last items spread over the CPUs.
        Items that run 0.1 s or more keep a process each, once measured;
        many small ones share a few.

        A process is started as soon as one has ended, in any order, and
        at most ``4 * processes`` results are held ahead of the one awaited.
        ``args`` is read as the processes go, from the first ``next()`` on,
        so it may be endless. Left before its end (a ``break``, an
        exception), it returns at once: the processes still running go on
        to their end, and the master drops their results.

        Past ``timeout`` seconds from the first ``next()`` (None: no limit),
        when its first processes start, a result not there yet raises
        TimeoutError, as ``Executor.map``'s (which starts them all at the
        call, and counts from there), and the iteration ends: unlike a
        pool's, the map's processes still running are killed (SIGKILL). A
        timeout is for a hung item, whose process would keep ``run``
        waiting, and their ids are the map's own.
        """
        flattened = functools.partial(_flattened, cls)
        return _map(
            cls,
            args,
            processes,
            timeout,
            chunksize,
            cls.result,
            flattened,
            go_on=False,
            ordered=ordered,
        )

    @classmethod
    def map_outcomes(
        cls,
        args: Iterable[In],
        *,
        processes: int | None = None,
        timeout: float | None = None,
        chunksize: int | Literal["auto"] = 1,
    ) -> Iterator[Outcome[Out]]:
        """:meth:`map`, yielding how each item went, in order, as
        :meth:`join_outcome` tells it: an item that raises, returns an
        invalid result or dies is an outcome in its place, and the map goes
        on. For a pool's ``imap`` whose loop catches an item's exception and
        goes on, or ``as_completed`` over futures of which some fail::

            for x, outcome in zip(xs, Square.map_outcomes(xs)):
                match outcome:
                    case netmcore.Success(value): ...
                    case failure: log.warning("%s: %s", x, failure)

        As in :meth:`map`, an argument that does not match ``In``, or the
        exception ``args`` raised, is raised in its place and ends the map
        (the caller's error, not an item's), and so does its ``timeout``.
        With a ``chunksize`` over 1, each item of a chunk runs whatever the
        one before it did; a chunk's process that dies loses its items'
        results, and each of them has its death as its outcome (one item a
        process keeps the items apart). The outcomes come in input order,
        which says whose each one is: to take them as they end, start the
        processes and iterate :meth:`as_completed` (``examples/windowed.py``).
        """
        return _map(
            cls,
            args,
            processes,
            timeout,
            chunksize,
            cls.join_outcome,
            _outcomes,
            go_on=True,
            ordered=True,
        )

    @classmethod
    def contract(cls) -> dict[str, Any]:
        """The contract between the caller and the process: qualified name,
        input and output JSON Schemas, and fingerprints (as in ``schemas/``)."""
        from ._schemas import contract

        return contract(cls)

    @classmethod
    def release_fork_point(cls) -> None:
        """Release the fork point: no more processes of this type can start."""
        _resource_api.release(cls.fork_point)

    @classmethod
    def release_join_point(cls) -> None:
        """Release the join point: nobody will join; results are dropped."""
        _resource_api.release(cls.join_point)

    @classmethod
    def _not_a_process_type(cls) -> TypeError:
        params = ", ".join(p.__name__ for p in _parameters(cls))
        return TypeError(
            f"{cls.__qualname__} is not a process type: it is generic in {params}; "
            f"subclass it with concrete types, like `class P({cls.__qualname__}[...])` "
            "with no type parameter left, and start that"
        )

    @classmethod
    def _join_point(cls) -> ResId:
        try:
            return cls.join_point
        except AttributeError:
            raise cls._not_a_process_type() from None

    @classmethod
    def _join(
        cls,
        pid: ProcessId[Out],
        *,
        wait: bool,
        timeout: float | None = None,
        call: str = "join",
    ) -> Outcome[Out] | None:
        wire = _client.join_outcome(cls._join_point(), pid, wait=wait, timeout=timeout, call=call)
        return None if wire is None else cls._outcome(pid, wire)

    @classmethod
    def _outcome(cls, pid: ProcessId[Out], wire: WireOutcome) -> Outcome[Out]:
        if isinstance(wire, Returned):
            encap = _client.encap_of(wire)
            assert encap is not None
            try:
                return Success(cls.output_type.unwrap(encap))
            except Exception as exc:
                # A signal handler's exception (see _wire.failed_of_its_own) is
                # raised: the outcome stays for the next join (see
                # _client._interrupted). Else a result that does not decode as
                # Out (or whose validator fails) never reaches the joiner.
                if not failed_of_its_own(exc, 1):
                    raise
                err = cls.output_type.decode_error(exc)
                log.error(
                    "netmcore: process %d (%s) gave an invalid result: %s",
                    pid.n,
                    cls.__qualname__,
                    err,
                )
                return InvalidResult(err.path, str(err))
        if isinstance(wire, WireRaised | Invalid):
            return wire.outcome()
        assert isinstance(wire, Ended)
        return Crashed(wire.exitcode, wire.signal)


def _chunksize(value: Any) -> int | None:
    """map's ``chunksize``, checked as ``processes`` is (see _at_least_one);
    None for "auto"."""
    if isinstance(value, str) and value == "auto":
        return None
    return _at_least_one(
        "chunksize",
        value,
        'give how many items each process runs in turn, an int of 1 or more, or "auto"',
    )


# --- map's chunks ------------------------------------------------------------
#
# A chunk travels to a process of the map's own type, as an Encap of a name
# and fingerprint of its own, which the type's entry tells from an argument
# (a fingerprint is a hex digest, which this one is not): the process runs
# each item through ``cls().run`` and returns how they went (_ChunkDone): up
# to the first that failed (map), or all of them (map_outcomes, ``go_on``).
# Both are made here, of values encoded and checked already: they are
# encoded once more, with no check, and the items and results are embedded
# as they are (msgspec.Raw), read where they lie.

_CHUNK_NAME, _CHUNK_MARK = "netmcore map chunk", "netmcore-map-chunk"
_DONE_NAME, _DONE_MARK = "netmcore map chunk done", "netmcore-map-chunk-done"


class _Chunk(msgspec.Struct, frozen=True):
    """Items of a map that one process runs in turn: ``first`` is the index
    of the first in the map, ``items`` their arguments, each encoded by the
    type's input type (checked in the caller, as a start checks one);
    ``go_on``: run each item whatever the one before it did."""

    first: int
    items: list[msgspec.Raw]
    go_on: bool = False


class _Fault(msgspec.Struct, frozen=True, omit_defaults=True):
    """How an item of a chunk failed: what it raised; or why its result was
    invalid (path, message); or the code it exited with."""

    raised: WireRaised | None = None
    invalid: tuple[str, str] | None = None
    exited: int | None = None


class _ChunkDone(msgspec.Struct, frozen=True):
    """How a chunk's items went, in order, as far as they were run: the
    result of each (encoded by the type's output type), and how those in
    ``faults`` (by their place in the chunk) failed instead, their result
    a nil; ``seconds``: how long running them took."""

    values: list[msgspec.Raw]
    faults: dict[int, _Fault] = {}
    seconds: float = 0.0


_chunk_decoder = msgspec.msgpack.Decoder(_Chunk)
_done_decoder = msgspec.msgpack.Decoder(_ChunkDone)
_NO_RESULT = msgspec.Raw(msgspec.msgpack.encode(None))

_Failure = Raised | InvalidResult | Crashed


class _ChunkEnd(NamedTuple):
    """What the process of a chunk gave: how its items went, in order, as
    far as they were run; or, if the process itself failed (``died``), how,
    for all of them."""

    pid: ProcessId[Any]
    first: int  # the index of its first item in the map
    size: int
    outcomes: list[Outcome[Any]]
    died: _Failure | None = None


class _Chunks:
    """How the processes of a chunked map start and end (see _mapped):
    ``go_on``, of map_outcomes; chunks of ``size`` items, or, if None
    ("auto"), of a size that grows as they end (see _measured) and shrinks
    towards the end of ``args``, if it has a ``length`` (see _room)."""

    def __init__(
        self,
        cls: type[ProcessDef[Any, Any]],
        go_on: bool,
        size: int | None,
        length: int | None,
        processes: int,
    ) -> None:
        self.cls = cls
        self.go_on = go_on
        self.name = _map_name(go_on)
        self.sizes: dict[int, tuple[int, int]] = {}  # process -> (first item, count)
        self.fixed = size is not None
        self.size = 1 if size is None else size
        self.length, self.processes = length, processes
        self.largest_measured = 0  # the largest chunk measured so far (auto)

    def _room(self, index: int) -> int:
        """The size of the chunk that begins at item ``index``: with "auto",
        at most half of what is left over twice the processes (as
        OpenMP's guided schedule), so that the last chunks are small and
        spread the last items over the CPUs (a fixed size has no length)."""
        if self.length is None:
            return self.size
        return max(1, min(self.size, -(-(self.length - index) // (2 * self.processes))))

    def of(self, items: Iterator[Any]) -> Iterator[_Chunk]:
        """``items`` in chunks, each argument encoded (and so checked) as it
        is read. An argument that does not match, or an exception of
        ``items``' own, comes after the chunk of those before it."""
        input_type, name, go_on = self.cls.input_type, self.cls.__qualname__, self.go_on
        index = 0
        encoded: list[msgspec.Raw] = []
        size, held = self._room(0), 0  # each chunk's, as it begins; its bytes
        most_held = sys.maxsize if self.fixed else AUTO_CHUNK_BYTES
        while True:
            try:
                arg = next(items)
                what = f"item {index} of {name}.{self.name}:"
                encoded.append(msgspec.Raw(input_type.encode(arg, what)))
                held += len(encoded[-1])
            except StopIteration:
                break
            except Exception:
                if encoded:
                    yield _Chunk(index - len(encoded), encoded, go_on)
                raise
            index += 1
            if len(encoded) == size or held >= most_held:
                yield _Chunk(index - len(encoded), encoded, go_on)
                encoded, size, held = [], self._room(index), 0
        if encoded:
            yield _Chunk(index - len(encoded), encoded, go_on)

    def items_of(self, pid: ProcessId[Any], _index: int) -> str:
        """The items of the chunk that process ``pid`` runs, as a timeout names them."""
        first, size = self.sizes.get(pid.n, (0, 1))
        return f"item {first}" if size == 1 else f"items {first}-{first + size - 1}"

    def start(self, chunk: _Chunk, watch: int, what: str) -> ProcessId[Any]:
        encap = Encap(_CHUNK_NAME, _CHUNK_MARK, (msgspec.msgpack.encode(chunk),))
        pid: ProcessId[Any] = _client.start_into(self.cls.fork_point, encap, "all", watch)
        self.sizes[pid.n] = (chunk.first, len(chunk.items))
        return pid

    def end(self, pid: ProcessId[Any]) -> _ChunkEnd:
        """Join the process of a chunk, and decode its items' results now:
        they may lie in a shared memory object that this process reuses
        once the join has handed it over. Its death is a value, not a
        ProcessFailed: a ProcessFailed out of the map's iteration is one
        that ``args`` raised (a nested map's), to go on as it came."""
        wire = _client.join_outcome(self.cls._join_point(), pid, wait=True, call=self.name)
        assert wire is not None
        first, size = self.sizes.pop(pid.n, (0, 0))
        if isinstance(wire, Returned):
            encap = _client.encap_of(wire)
            assert encap is not None
            done = _done_decoder.decode(encap.data)
            end = _ChunkEnd(
                pid, first, size, _item_outcomes(self.cls, pid, first, done, self.go_on)
            )
            self._measured(done)
        else:
            outcome = self.cls._outcome(pid, wire)
            assert not isinstance(outcome, Success)  # (not Returned)
            end = _ChunkEnd(pid, first, size, [], died=outcome)
        _client.handed_over(pid.n)
        return end

    def _measured(self, done: _ChunkDone) -> None:
        """For "auto": the next chunks' size, from how long the items of
        ``done`` ran and how large their results are: about
        AUTO_CHUNK_SECONDS' and at most AUTO_CHUNK_BYTES' worth, at most
        twice the largest chunk measured so far (a few quick items say
        little of the next ones), at least 1."""
        count = len(done.values)
        if self.fixed or not count:
            return
        self.largest_measured = max(self.largest_measured, count)
        worth = sys.maxsize
        if done.seconds > 0:
            worth = min(worth, int(AUTO_CHUNK_SECONDS * count / done.seconds))
        result_bytes = sum(len(value) for value in done.values)
        if result_bytes:
            worth = min(worth, AUTO_CHUNK_BYTES * count // result_bytes)
        self.size = max(1, min(worth, 2 * self.largest_measured))


def _length(args: Iterable[Any]) -> int | None:
    """How many items ``args`` says it has, if it says (a list, a range);
    None for an iterator, or one whose length cannot be told."""
    try:
        count = operator.length_hint(args, -1)
    except Exception:  # a __length_hint__ that raises, a range past ssize_t
        return None
    return count if count >= 0 else None


def _item_outcomes(
    cls: type[ProcessDef[Any, Any]], pid: ProcessId[Any], first: int, done: _ChunkDone, go_on: bool
) -> list[Outcome[Any]]:
    """How the items of ``done`` went, their results decoded: up to the
    first that failed (here, a validator's refusal; or there), or all of
    them if the map goes on past a failure."""
    outcomes: list[Outcome[Any]] = []
    for place, value in enumerate(done.values):
        fault = done.faults.get(place)
        outcome: Outcome[Any]
        if fault is None:
            try:
                outcome = Success(cls.output_type.decode(value))
            except Exception as exc:  # a validator that fails here, not in the process
                if not failed_of_its_own(exc, 1):
                    raise
                err = cls.output_type.decode_error(exc)
                name = f"{cls.__qualname__}, item {first + place} of the map"
                log.error("netmcore: process %d (%s) gave an invalid result: %s", pid.n, name, err)
                outcome = InvalidResult(err.path, str(err))
        elif fault.raised is not None:
            outcome = fault.raised.outcome()
        elif fault.invalid is not None:
            outcome = InvalidResult(*fault.invalid)
        else:
            outcome = Crashed(fault.exited, None)
        outcomes.append(outcome)
        if not (go_on or isinstance(outcome, Success)):
            break
    return outcomes


def _flattened(
    cls: type[ProcessDef[Any, Out]], chunks: Generator[_ChunkEnd, None, None]
) -> Iterator[Out]:
    """The results of the items of ``chunks``, in order; a ProcessFailed
    for the first that failed, naming it (or the items of a chunk whose
    process died)."""
    try:
        for done in chunks:
            for place, outcome in enumerate(done.outcomes):
                if not isinstance(outcome, Success):
                    name = f"{cls.__qualname__}, item {done.first + place} of the map"
                    raise ProcessFailed(done.pid, name, outcome)
                yield outcome.value
            if done.died is not None:
                first, last = done.first, done.first + done.size - 1
                items = f"item {first}" if last == first else f"items {first}-{last}"
                raise ProcessFailed(done.pid, f"{cls.__qualname__}, {items} of the map", done.died)
    finally:
        chunks.close()


def _outcomes(chunks: Generator[_ChunkEnd, None, None]) -> Iterator[Outcome[Any]]:
    """How each item of ``chunks`` went, in order: a chunk whose process
    died gives its death for each of its items."""
    try:
        for done in chunks:
            if done.died is None:
                assert len(done.outcomes) == done.size  # (or zip(args, outcomes) would shift)
                yield from done.outcomes
            else:
                for _ in range(done.size):
                    yield done.died
    finally:
        chunks.close()


def _run_chunk(cls: type[ProcessDef[Any, Any]], encap: Encap) -> Encap:
    """In the process of a chunk: run its items in turn, up to the first
    that fails (or all, for ``go_on``); how they went. An exception between
    two items (a signal handler's: an item's timer that fires once it has
    returned) is the failure of the next one, and one after the last item
    that item's: the results before it are kept. A forked child of an
    item's that returns stops here (the worker then ends it, with its
    warning)."""
    chunk = _chunk_decoder.decode(encap.data)
    items, go_on = chunk.items, chunk.go_on
    values: list[msgspec.Raw] = []
    faults: dict[int, _Fault] = {}
    began = time.perf_counter()
    # Two loops, so that an exception between two items is the next one's
    # failure and, for go_on, the loop goes on after it.
    while len(values) < len(items) and (go_on or not faults) and not _forked():
        try:
            while len(values) < len(items) and (go_on or not faults):
                end = _item_end(cls, chunk.first + len(values), items[len(values)], go_on)
                if isinstance(end, _Fault):
                    faults[len(values)] = end
                    values.append(_NO_RESULT)
                else:
                    values.append(end)
                    if _forked():
                        break
        except _worker.NOT_ITS_FAILURE:
            raise
        except BaseException as exc:
            if _forked():  # (the process's own, then)
                raise
            # The failure of the item it came at, or after (the last, after all).
            place = min(len(values), len(items) - 1)
            who = _item_of(cls, chunk.first + place, go_on)
            faults[place] = _Fault(raised=_worker.raised_by(who, exc))
            values[place:] = [_NO_RESULT]
    done = _ChunkDone(values, faults, time.perf_counter() - began)
    return Encap(_DONE_NAME, _DONE_MARK, (msgspec.msgpack.encode(done),))


def _item_end(
    cls: type[ProcessDef[Any, Any]], index: int, data: msgspec.Raw, go_on: bool
) -> msgspec.Raw | _Fault:
    """Run item ``index`` of a chunk: its result, encoded; or how it failed,
    told as a process's own end is (see _worker._run): a SystemExit is its
    exit code."""
    input_type, output_type = cls.input_type, cls.output_type
    # Debug's trace, item by item: the chunk's own start and end are its process's.
    name = _map_name(go_on)
    trace("map: item %d of %s.%s runs", index, cls.__qualname__, name)
    try:
        result = cls().run(
            input_type.unwrap(Encap(input_type.name, input_type.fingerprint, (data,)))
        )
        try:
            encoded = output_type.encode(result, f"result of {cls.__qualname__}.run:")
            trace("map: item %d of %s.%s returned", index, cls.__qualname__, name)
            return msgspec.Raw(encoded)
        except ArgumentTypeError as exc:
            who = _item_of(cls, index, go_on)
            log.error("netmcore: %s returned an invalid result at %s: %s", who, exc.path, exc)
            return _Fault(invalid=(exc.path, str(exc)))
    except BaseException as exc:
        if _forked():
            raise  # in a child the item forked: the worker ends it, as with one item a process
        if isinstance(exc, SystemExit):
            status = _worker.exit_status(exc)
            who = _item_of(cls, index, go_on)
            log.warning("netmcore: %s exited with code %d before returning", who, status)
            return _Fault(exited=status)
        if isinstance(exc, _worker.NOT_ITS_FAILURE):
            raise  # not the item's failure: the process ends, as for a process's own
        # In run, or a validator's own exception as its result is checked.
        return _Fault(raised=_worker.raised_by(_item_of(cls, index, go_on), exc))


def _map_name(go_on: bool) -> str:
    """What a map is named in its errors and logs: map_outcomes goes on."""
    return MAP_OUTCOMES if go_on else MAP


def _item_of(cls: type[ProcessDef[Any, Any]], index: int, go_on: bool) -> str:
    """Item ``index`` of a map of ``cls``, in this process, as its log names it
    (made only for a failure: not on an item's way)."""
    name = _map_name(go_on)
    return f"item {index} of {cls.__qualname__}.{name} (in process {_client.self_process_id().n})"


def _forked() -> bool:
    """Whether this is a child that an item forked, not the chunk's process."""
    link = _context.current.link
    return link is not None and _pthread.this_pid[0] != link.owner_pid


def _processes(value: Any) -> int:
    """map's ``processes``, checked: None is one per CPU this process may
    use; else see _at_least_one."""
    if value is None:
        return len(os.sched_getaffinity(0))
    rule = "give how many processes may run at once, an int of 1 or more (or None: one per CPU)"
    return _at_least_one("processes", value, rule)


def _at_least_one(name: str, value: Any, rule: str) -> int:
    """``value`` of map's argument ``name``: an int (numpy's too; not a
    bool) of 1 or more, TypeError for another type and ValueError below 1,
    as Pipeline's ``workers``; ``rule`` says what to give."""
    try:
        if isinstance(value, bool):
            raise TypeError
        count = operator.index(value)
    except TypeError:
        raise TypeError(
            f"{name}={value!r} is not valid: it must be an int, not {type(value).__name__}; {rule}"
        ) from None
    if count < 1:
        raise ValueError(f"{name}={value!r} is not valid: {rule}")
    return count


def _map(
    cls: type[ProcessDef[Any, Any]],
    args: Iterable[Any],
    processes: Any,
    timeout: Any,
    chunksize: Any,
    result: Callable[[ProcessId[Any]], Y],
    of_chunks: Callable[[Generator[_ChunkEnd, None, None]], Iterator[Y]],
    *,
    go_on: bool,
    ordered: Any,
) -> Iterator[Y]:
    """A map (``go_on``: map_outcomes) whose options are checked here, at
    the call, before anything starts: what ``result(pid)`` gives for each
    item, or, for a ``chunksize`` over 1, ``of_chunks`` of how the chunks
    ended."""
    name = _map_name(go_on)
    processes, timeout, chunksize = (
        _processes(processes),
        check_timeout(timeout),
        _chunksize(chunksize),
    )
    ordered = check_ordered(ordered)
    cls._join_point()  # a process type, or the error saying so
    _client.waiting_link(f"{cls.__qualname__}.{name}")
    if chunksize == 1:
        start: Callable[[Any, int, str], ProcessId[Any]] = cls._start_into
        return _mapped(cls, name, iter(args), processes, timeout, ordered, start, result)
    length = _length(args) if chunksize is None else None
    chunks = _Chunks(cls, go_on, chunksize, length, processes)
    items = chunks.of(iter(args))
    ends = _mapped(
        cls, name, items, processes, timeout, ordered, chunks.start, chunks.end, chunks.items_of
    )
    return of_chunks(ends)


def check_ordered(value: Any) -> bool:
    """A map's or a pipeline's ``ordered``, checked: a bool."""
    if not isinstance(value, bool):
        raise TypeError(
            f"ordered={value!r} is not valid: give True (results in input order) "
            "or False (as they complete)"
        )
    return value


def _mapped(
    cls: type[ProcessDef[Any, Any]],
    name: str,
    items: Iterator[X],
    processes: int,
    timeout: float | None,
    ordered: bool,
    start: Callable[[X, int, str], ProcessId[Any]],
    result: Callable[[ProcessId[Any]], Y],
    items_of: Callable[[ProcessId[Any], int], str] = lambda _pid, index: f"item {index}",
) -> Generator[Y, None, None]:
    """The iteration of :meth:`ProcessDef.map` (or of map_outcomes, which
    ``name`` is): ``start(item, watch, what)``
    starts the process of an item (or of a chunk of them) into the watch,
    ``what`` naming it in an error, ``result(pid)`` takes what it gives,
    and ``items_of(pid, index)`` names the items of the process, the
    ``index``-th started, for a timeout.
    A process is started as soon as one of the ``processes`` running has
    ended, not only once the result awaited has come: one slow item does
    not leave the CPUs idle behind it, up to ``MAP_AHEAD`` times
    ``processes`` results held. Its processes are in a watch, which says
    which ended. Results are given in order, or (not ``ordered``) as their
    processes end."""
    # Counted from here, where its first processes start: a map made and
    # iterated later gave its items less than ``timeout``, or none of it.
    deadline = None if timeout is None else time.monotonic() + timeout
    watch = _client.new_watch()
    # Started and not yielded, in order, with the index of each in ``items``.
    window: deque[tuple[int, ProcessId[Any] | Exception]] = deque()
    running: set[int] = set()  # of those, the ones not known to have ended
    # Unordered, the others, in the order they ended, as the master tells it.
    ended_first: dict[int, None] = {}
    read = 0  # items read: the next one's index
    more = True
    try:
        while True:
            while more and len(running) < processes and len(window) < MAP_AHEAD * processes:
                try:
                    arg = next(items)
                except StopIteration:
                    more = False
                    break
                except Exception as exc:  # the iterator's own: raised in its place
                    window.append((read, exc))
                    more = False
                    break
                index, read = read, read + 1
                try:
                    pid = start(arg, watch, f"item {index} of {cls.__qualname__}.{name}:")
                except (ArgumentTypeError, NetmcoreError) as exc:  # the item's, or the run's
                    window.append((index, exc))
                    more = False
                    break
                window.append((index, pid))
                running.add(pid.n)
            else:  # (for 3.12: see test_backedges)
                pass
            if not window:
                return
            place = _next_given(window, running, ended_first, ordered)
            if place is None:
                ended = _client.wait_watch(name, watch, deadline)
                if ended is None:
                    # A timeout is for a hung item: its process, and the others
                    # still running, would keep run waiting for ever, and
                    # nobody can take their results (their ids are the map's).
                    for _, started in window:
                        if isinstance(started, ProcessId) and started.n in running:
                            _client.kill(started)
                    # The result awaited: the first item's still running.
                    index, head = next(
                        (index, started)
                        for index, started in window
                        if isinstance(started, ProcessId) and started.n in running
                    )
                    raise TimeoutError(
                        f"{name} timed out after {timeout} s: the result of "
                        f"{items_of(head, index)} (process {head.n}) had not come; its "
                        f"{len(running)} process(es) still running were killed"
                    )
                running.difference_update(ended)
                if not ordered:
                    ended_first.update(dict.fromkeys(ended))
            else:
                index, given = window[place]
                if isinstance(given, Exception):
                    del window[place]
                    raise given
                # Joined while still in the window: a handler's exception in
                # the join leaves its outcome kept (see _client), which the end
                # below lets go.
                try:
                    value = result(given)
                except ProcessFailed as failed:
                    del window[place]
                    # Named by its item, which the caller knows (not its id).
                    name = f"{cls.__qualname__}, item {index} of the map"
                    raise ProcessFailed(given, name, failed.outcome) from None
                del window[place]
                yield value
    finally:
        # Ended, or left early: the master forgets the processes started
        # into the watch and not joined, those of the window and any whose
        # start an exception cut short once it was sent: each goes on to its
        # end, and its outcome is dropped. Nothing is left to join (and an
        # outcome kept here, of a join cut short, goes too). The close is
        # made again through a signal handler's exception (held, raised
        # after), in a loop here: a function holding it would let one in at
        # its start, before its try, and the watch with its processes stayed.
        # Two loops: a handler's exception just as the inner one jumps back
        # to its try (outside it) is caught by the outer one, which makes
        # the close again; the storm test left a watch once in ~30 runs.
        # And the close is made with this thread's signals blocked: each
        # exception that cut its round trip short was one more chance for a
        # further one to come at a jump back (the storm test still left a
        # watch in about 1 run in 40, through a garbage-collected iteration).
        held: BaseException | None = None
        tries = 0
        closed = False

        def close() -> None:  # (made here, no call: no handler runs)
            nonlocal closed
            _client.close_watch(watch, forget=True)
            closed = True  # done, even if an exception comes as the block ends

        while not closed:
            try:
                while not closed:
                    try:
                        _posix.with_signals_blocked(_posix.ASYNC_SIGNALS, close)
                    except BaseException as exc:
                        tries += 1
                        if failed_of_its_own(exc, tries):
                            raise
                        if held is None:
                            held = exc
                    else:  # (for 3.12: see test_backedges)
                        pass
            except BaseException as exc:
                tries += 1
                if failed_of_its_own(exc, tries):
                    raise
                if held is None:
                    held = exc
            else:  # (for 3.12: see test_backedges)
                pass
        for _, started in window:
            if isinstance(started, ProcessId):
                _client.let_go(started.n)
        if held is not None:
            raise held


def _next_given(
    window: deque[tuple[int, ProcessId[Any] | Exception]],
    running: set[int],
    ended_first: dict[int, None],
    ordered: bool,
) -> int | None:
    """The place in a map's ``window`` of what it gives next, or None if
    that is a result not there yet: the head's, in order; else the process
    that ended first of those not given (taken out of ``ended_first``), and
    an error (the last in the window: nothing is read past it) once no
    process before it is left."""
    if ordered:
        _, head = window[0]
        return 0 if isinstance(head, Exception) or head.n not in running else None
    for n in ended_first:
        del ended_first[n]
        return next(
            place
            for place, (_, started) in enumerate(window)
            if isinstance(started, ProcessId) and started.n == n
        )
    return None if running else 0


def process(f: Callable[[In], Out]) -> type[ProcessDef[In, Out]]:
    """Make a process type of a one-argument function with annotated types.

    ::

        @netmcore.process
        def square(k: int) -> int:
            return k * k

        square.join(square.start(7))   # 49
    """
    try:
        arg_type, result_type = _signature_types(f)
        generic = ProcessDef[arg_type, result_type].__parameters__  # type: ignore[valid-type,attr-defined]
        if generic:
            raise TypeError(
                f"it is generic in {', '.join(map(str, generic))}: a process type needs "
                "concrete types (a ProcessDef subclass can be generic, and specialised)"
            )
    except (NameError, TypeError) as exc:
        name = getattr(f, "__qualname__", repr(f))
        fix = ""
        if isinstance(exc, NameError):
            # Annotations kept as text (`from __future__ import annotations`)
            # are looked up in the function's module, where a type made in
            # another function is not, nor yet one defined below the function.
            fix = (
                ": a type its annotations name must be found in its module; define it "
                "at module level"
                if "<locals>" in name
                else f": its annotations are looked up as it is decorated; define "
                f"{exc.name or 'that type'} above the function"
            )
        raise TypeError(
            f"@netmcore.process needs a function of one annotated positional argument "
            f"with an annotated return type, like `def f(x: int) -> int`; {name} does "
            f"not fit: {exc}{fix}"
        ) from exc

    def not_a_call(self: Any, *args: Any, **kwargs: Any) -> None:
        # mypy refuses square(3) already (a process type takes no argument);
        # at run time, what object.__init__ said was "takes no arguments".
        if args or kwargs:
            name = f.__qualname__
            raise TypeError(
                f"{name} is a netmcore process type, not a function: start a process with "
                f"{name}.start(arg) and join it, or run the function here with "
                f"{name}().run(arg)"
            )

    def body(ns: dict[str, Any]) -> None:
        ns["run"] = lambda self, arg: f(arg)
        ns["__init__"] = not_a_call
        ns["__module__"] = f.__module__
        ns["__qualname__"] = f.__qualname__
        ns["__doc__"] = f.__doc__

    base = ProcessDef[arg_type, result_type]  # type: ignore[valid-type]
    cls: type[ProcessDef[In, Out]] = types.new_class(f.__name__, (base,), exec_body=body)
    return cls


def _signature_types(f: Callable[..., Any]) -> tuple[Any, Any]:
    """The argument and result types of a process function; TypeError if it is none."""
    param = _argument_parameter(f)
    hints = typing.get_type_hints(f, include_extras=True)
    missing = [n for n in (param.name, "return") if n not in hints]
    if missing:
        raise TypeError(f"no annotation for {' and '.join(missing)}")
    return hints[param.name], hints["return"]


def _argument_parameter(f: object, *, method: bool = False) -> inspect.Parameter:
    """The parameter of ``f`` that a worker passes the process's argument to;
    TypeError, saying why, unless a worker can call ``f(arg)`` (a ``method``:
    ``instance.f(arg)``) and send what it returns.

    Both kinds of process type go through it: functions made process types by
    ``@process``, and the ``run`` of ``ProcessDef`` subclasses.
    """
    if not inspect.isfunction(f):
        raise TypeError(f"it is a {type(f).__name__} object, not a function")
    if inspect.iscoroutinefunction(f) or inspect.isasyncgenfunction(f):
        raise TypeError("it is async, and a process runs a plain function")
    if inspect.isgeneratorfunction(f):
        # Its call returns a generator, which no Out can hold.
        raise TypeError(
            "it is a generator function (it has `yield`), and a process returns its "
            "result: collect the values and return them, as a list for example"
        )
    params = list(inspect.signature(f).parameters.values())
    if method and params and params[0].kind is not params[0].VAR_POSITIONAL:
        params = params[1:]  # self
    if not params:
        raise TypeError(
            "it has no parameter for the argument" if method else "it has no parameters"
        )
    # The worker calls f(arg): the others need defaults (as mypy sees it too).
    param, *others = params
    if param.kind not in (param.POSITIONAL_ONLY, param.POSITIONAL_OR_KEYWORD):
        raise TypeError(f"its parameter `{param.name}` is {param.kind.description}")
    for other in others:
        if other.default is other.empty and other.kind in (
            other.POSITIONAL_ONLY,
            other.POSITIONAL_OR_KEYWORD,
            other.KEYWORD_ONLY,
        ):
            raise TypeError(
                f"its parameter `{other.name}` has no default, and the worker passes "
                "the argument alone"
            )
    return param


def _check_run(cls: type, types_: tuple[Any, Any]) -> None:
    """TypeError unless a worker can call ``cls().run(arg)`` and send its result."""
    run = inspect.getattr_static(cls, "run")
    method = not isinstance(run, staticmethod)
    if isinstance(run, staticmethod | classmethod):
        run = run.__func__
    if not inspect.isfunction(run):
        # A callable object (a functools.partialmethod, a cache's wrapper) works
        # as run if it binds as a method, which its signature does not show.
        return
    try:
        _argument_parameter(run, method=method)
    except TypeError as exc:
        name = cls.__qualname__
        arg_type, result_type = map(_type_text, types_)
        raise TypeError(
            f"{name}.run must be a plain method that takes the argument after self and "
            f"returns the result, as each worker calls `{name}().run(arg)`; {name}.run "
            f"does not fit: {exc}. Define it as `def run(self, arg: {arg_type}) -> "
            f"{result_type}`"
        ) from exc


def _check_constructible(cls: type) -> None:
    """TypeError unless ``cls()`` works: each worker makes its instance so."""
    try:
        signature = inspect.signature(cls)
    except (TypeError, ValueError):
        return  # nothing to read (a builtin's __init__, say): made unchecked
    try:
        signature.bind()
    except TypeError as exc:
        name = cls.__qualname__
        # The method to change, maybe a base's: the one the signature came from.
        owner = next(c for c in cls.__mro__ if "__init__" in vars(c) or "__new__" in vars(c))
        method = "__init__" if "__init__" in vars(owner) else "__new__"
        raise TypeError(
            f"{name} cannot be made without arguments (`{name}()`: {exc}), and "
            f"each worker makes it as `{name}()` before it calls run: give every "
            f"parameter of {owner.__qualname__}.{method} a default, or pass what run "
            f"needs in the argument of {name}.start"
        ) from None


def _type_text(t: Any) -> str:
    """``t`` as it is written in a type annotation: ``int``, ``list[int]``."""
    return t.__qualname__ if isinstance(t, type) else repr(t).replace("typing.", "")


def _type_params(cls: type) -> tuple[Any, Any] | None:
    """The (In, Out) of a process class, or None while they hold type parameters."""
    alias = _process_alias(cls)
    if alias.__parameters__:
        return None
    arg_type, result_type = typing.get_args(alias)
    return arg_type, result_type


def _process_alias(cls: type) -> Any:
    """The ``ProcessDef[In, Out]`` that ``cls`` is, type parameters and all.

    ``class IntFirsts(Firsts[int])`` with ``class Firsts(ProcessDef[list[T],
    dict[str, T]])`` is ``ProcessDef[list[int], dict[str, int]]``: the base's
    own alias, with the base's parameters given the values ``cls`` gives them.
    """
    if cls is ProcessDef:
        return ProcessDef[In, Out]  # type: ignore[valid-type]  # a value here, not a type
    # vars(): a class without subscripted bases would show its parent's here.
    for base in vars(cls).get("__orig_bases__", cls.__bases__):
        parent = typing.get_origin(base) or base
        if isinstance(parent, type) and issubclass(parent, ProcessDef):
            alias = _process_alias(parent)
            if base is parent or not alias.__parameters__:
                return alias
            given = dict(zip(_parameters(parent), typing.get_args(base), strict=True))
            return alias[_resolved(tuple(given[p] for p in alias.__parameters__), cls.__module__)]
    raise AssertionError(f"{cls} has no ProcessDef base")


def _parameters(cls: type) -> tuple[Any, ...]:
    """The type parameters of a generic class, in order (Generic sets them)."""
    params: tuple[Any, ...] = cls.__parameters__  # type: ignore[attr-defined]
    return params


def _resolved(args: tuple[Any, ...], module: str) -> tuple[Any, ...]:
    """``args`` with quoted names (``"Point"``, ``list["Point"]``) looked up in
    ``module``, as mypy does."""
    # get_type_hints resolves nested names too; it takes them as annotations.
    holder = types.SimpleNamespace(
        __annotations__={f"arg{i}": a for i, a in enumerate(args)},
        __globals__=getattr(sys.modules.get(module), "__dict__", {}),
    )
    try:
        return tuple(typing.get_type_hints(holder, include_extras=True).values())
    except NameError as exc:
        raise TypeError(
            f"{exc} in module {module}: a quoted name in ProcessDef[...] is looked up when "
            "the class is made; define that type above the process type"
        ) from None


def _entry(cls: type[ProcessDef[Any, Any]]) -> Callable[[Encap], Encap]:
    def entry(encap: Encap) -> Encap:
        if encap.fingerprint == _CHUNK_MARK:
            return _run_chunk(cls, encap)
        result = cls().run(cls.input_type.unwrap(encap))
        try:
            return cls.output_type.wrap_as(result, f"result of {cls.__qualname__}.run:")
        except ArgumentTypeError as exc:
            raise ResultTypeError(str(exc), exc.path) from exc

    entry.__qualname__ = f"{cls.__qualname__}.run"
    return entry


def _used_by_run(cls: type[ProcessDef[Any, Any]]) -> tuple[object, ...]:
    """What a worker's ``entry`` of ``cls`` takes references to, other than
    what every process type shares: the class, its ``__init__`` and ``run``
    (with the function that @process wraps), and the two EncapTypes with
    their attributes (name, fingerprint, decoder)."""
    types_ = (cls.input_type, cls.output_type)
    return (
        cls,
        cls.__qualname__,
        *_registry.objects_used_by(cls.__init__, cls.run),
        *types_,
        *(value for t in types_ for value in vars(t).values()),
    )


def _value(outcome: Outcome[Out]) -> Out | None:
    return outcome.value if isinstance(outcome, Success) else None


_T = TypeVar("_T")


class _Rehearsal(ProcessDef[_T, _T]):
    """Generic, so never registered: the rehearsal of _registry.rehearsal."""

    def run(self, arg: _T) -> _T:
        return arg


_Rehearsal.input_type = _Rehearsal.output_type = EncapType(int)
_registry.rehearsal = (
    _registry.Definition(ResId(-1), ResId(-1), _entry(_Rehearsal), "netmcore.rehearsal"),
    _Rehearsal.input_type.wrap(0),
)
