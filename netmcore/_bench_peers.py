"""The peers part of ``netmcore bench``: netmcore against the executors its
users know (ProcessPoolExecutor, loky, Dask, Ray), each used as its own
documentation shows, on the same four measures.

Each peer keeps a pool of workers, which netmcore does not: a netmcore task
is a fresh fork of the master. The table shows what that costs (a trivial
task) and where it stops mattering (a task of tens of milliseconds).

loky, Dask and Ray are optional (``pip install 'netmcore[peers]'``; the
project's dev tools, which ``make`` installs, include them). A peer that is
not installed is named in a note and skipped. The peers run last, in the
bench's own process, after every netmcore measure: their imports and
threads (Ray's gRPC, Dask's event loop) are then never inherited by a fork
of netmcore's.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

import msgspec

from . import _runtime
from ._bench_support import paced_times
from ._process import process

CPU_TASK_S = 0.05  # the work of one CPU-bound task, in seconds of one core
CPU_TASKS_PER_CORE = 8


def identity(k: int) -> int:
    return k


def spin(n: int) -> int:
    """Pure-Python arithmetic, ``n`` steps: a CPU-bound task that holds the GIL."""
    total = 0
    for i in range(n):
        total += i * i % 7
    return total


@process
def _identity(k: int) -> int:
    return identity(k)


@process
def _spin(n: int) -> int:
    return spin(n)


class Plan(msgspec.Struct, frozen=True):
    roundtrips: int
    tasks: int  # trivial tasks in the map
    cpu_tasks: int
    spin_steps: int  # one CPU task's steps: CPU_TASK_S of this machine's core


# The chunksize of the second map of trivial tasks: executors that take one
# (ProcessPoolExecutor's, loky's, netmcore's) send that many tasks at a time.
CHUNKSIZE = 50


class Figures(msgspec.Struct, frozen=True):
    roundtrip_s: float  # the median, paced
    map_s: float  # the whole map of plan.tasks trivial tasks
    chunked_map_s: float  # the same, with chunksize=CHUNKSIZE where the peer takes one
    cpu_s: float  # the whole map of plan.cpu_tasks CPU tasks
    cold_s: float = 0.0  # set-up, one task, shut-down
    auto_map_s: float = 0.0  # netmcore's only: the map of trivial tasks, chunksize="auto"


class Client(Protocol):
    """One task submitted and its result awaited, and a map, as a peer does them."""

    def call(self, fn: Callable[[int], int], arg: int) -> int: ...

    def map(self, fn: Callable[[int], int], args: list[int], chunksize: int = 1) -> list[int]: ...


@dataclass(frozen=True)
class Peer:
    name: str
    module: str  # what must be importable
    open: Callable[[int], contextlib.AbstractContextManager[Client]]  # with this many workers


def measure(client: Client, plan: Plan) -> Figures:
    """The figures of a running peer (or of netmcore, in its first process)."""
    roundtrip = paced_times(lambda: client.call(identity, 7), plan.roundtrips)[0]
    client.map(identity, list(range(20)))  # warm up: every worker has run a task
    args = list(range(plan.tasks))
    t0 = time.perf_counter()
    if client.map(identity, args) != args:
        raise RuntimeError("a map lost or reordered its results")
    map_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    if client.map(identity, args, CHUNKSIZE) != args:
        raise RuntimeError("a chunked map lost or reordered its results")
    chunked_map_s = time.perf_counter() - t0
    # The expected results first: computing them must not count as the map's time.
    work, expected = [plan.spin_steps] * plan.cpu_tasks, [spin(plan.spin_steps)] * plan.cpu_tasks
    t0 = time.perf_counter()
    done = client.map(spin, work)
    cpu_s = time.perf_counter() - t0
    if done != expected:
        raise RuntimeError("a CPU-bound map lost its results")
    return Figures(roundtrip, map_s, chunked_map_s, cpu_s)


_DEFINITIONS = {identity: _identity, spin: _spin}


class _Netmcore:
    """netmcore's side: a fresh process per task, started and joined by a worker."""

    def call(self, fn: Callable[[int], int], arg: int) -> int:
        definition = _DEFINITIONS[fn]
        return definition.result(definition.start(arg))

    def map(self, fn: Callable[[int], int], args: list[int], chunksize: int = 1) -> list[int]:
        return list(_DEFINITIONS[fn].map(args, chunksize=chunksize))


@process
def _measure_netmcore(plan: Plan) -> Figures:
    figures = measure(_Netmcore(), plan)
    args = list(range(plan.tasks))
    t0 = time.perf_counter()
    if list(_identity.map(args, chunksize="auto")) != args:
        raise RuntimeError("an auto-chunked map lost or reordered its results")
    return msgspec.structs.replace(figures, auto_map_s=time.perf_counter() - t0)


def netmcore_figures(plan: Plan) -> Figures:
    """netmcore's figures, and its cold start: a run of one trivial process."""
    t0 = time.perf_counter()
    _runtime.run(
        first_process=lambda: _identity.start(7),
        extract_result=lambda _ctrl, pid: _identity.result(pid, timeout=0),
    )
    cold = time.perf_counter() - t0
    figures = _runtime.run(
        first_process=lambda: _measure_netmcore.start(plan),
        extract_result=lambda _ctrl, pid: _measure_netmcore.result(pid, timeout=0),
    )
    return msgspec.structs.replace(figures, cold_s=cold)


class _Futures:
    """A concurrent.futures executor (ProcessPoolExecutor, loky's)."""

    def __init__(self, executor: Executor) -> None:
        self._executor = executor

    def call(self, fn: Callable[[int], int], arg: int) -> int:
        return self._executor.submit(fn, arg).result()

    def map(self, fn: Callable[[int], int], args: list[int], chunksize: int = 1) -> list[int]:
        return list(self._executor.map(fn, args, chunksize=chunksize))


@contextlib.contextmanager
def _process_pool(workers: int) -> Iterator[Client]:
    with ProcessPoolExecutor(workers) as executor:
        yield _Futures(executor)


@contextlib.contextmanager
def _loky(workers: int) -> Iterator[Client]:
    loky: Any = importlib.import_module("loky")
    executor = loky.get_reusable_executor(max_workers=workers)
    try:
        yield _Futures(executor)
    finally:
        executor.shutdown(wait=True, kill_workers=True)


class _Dask:
    def __init__(self, client: Any) -> None:
        self._client = client

    def call(self, fn: Callable[[int], int], arg: int) -> int:
        result: int = self._client.submit(fn, arg, pure=False).result()
        return result

    def map(self, fn: Callable[[int], int], args: list[int], chunksize: int = 1) -> list[int]:
        # No chunksize: Dask schedules each task on its own.
        results: list[int] = self._client.gather(self._client.map(fn, args, pure=False))
        return results


@contextlib.contextmanager
def _dask(workers: int) -> Iterator[Client]:
    dask: Any = importlib.import_module("dask")
    distributed: Any = importlib.import_module("distributed")
    with (
        _private_directory("dask") as scratch,  # by default /tmp/dask-scratch-space, kept
        dask.config.set({"temporary-directory": scratch}),
        distributed.LocalCluster(
            n_workers=workers,
            threads_per_worker=1,  # a process per task at a time, as the others
            processes=True,
            dashboard_address=None,
            silence_logs=logging.ERROR,
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        yield _Dask(client)


@contextlib.contextmanager
def _private_directory(peer: str) -> Iterator[str]:
    """A directory for a peer's own files (sockets, logs, scratch), removed after."""
    path = tempfile.mkdtemp(prefix=f"netmcore-bench-{peer}-")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


class _Ray:
    def __init__(self, ray: Any) -> None:
        self._ray = ray
        self._remote: dict[Callable[[int], int], Any] = {}

    def _remote_of(self, fn: Callable[[int], int]) -> Any:
        if fn not in self._remote:
            self._remote[fn] = self._ray.remote(fn)
        return self._remote[fn]

    def call(self, fn: Callable[[int], int], arg: int) -> int:
        result: int = self._ray.get(self._remote_of(fn).remote(arg))
        return result

    def map(self, fn: Callable[[int], int], args: list[int], chunksize: int = 1) -> list[int]:
        # No chunksize: each task is a remote call of its own.
        remote = self._remote_of(fn)
        results: list[int] = self._ray.get([remote.remote(a) for a in args])
        return results


@contextlib.contextmanager
def _ray(workers: int) -> Iterator[Client]:
    ray: Any = importlib.import_module("ray")
    with _private_directory("ray") as session:  # by default /tmp/ray, kept
        ray.init(
            address="local",  # a cluster of its own: not one RAY_ADDRESS names
            num_cpus=workers,
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging.ERROR,
            _temp_dir=session,
        )
        try:
            yield _Ray(ray)
        finally:
            ray.shutdown()


PPE = "ProcessPoolExecutor"
PEERS = (
    Peer(PPE, "concurrent.futures", _process_pool),
    Peer("loky (reusable executor)", "loky", _loky),
    Peer("Dask (LocalCluster, processes)", "distributed", _dask),
    Peer("Ray (local)", "ray", _ray),
)


def installed(peer: Peer) -> bool:
    return importlib.util.find_spec(peer.module) is not None


def peer_figures(peer: Peer, plan: Plan, workers: int) -> Figures:
    """A peer's figures; its cold start is its set-up to a first result,
    plus its shut-down (its import before: netmcore's is done too)."""
    importlib.import_module(peer.module)
    t0 = time.perf_counter()
    with peer.open(workers) as client:
        client.call(identity, 7)
        cold = time.perf_counter() - t0
        figures = measure(client, plan)
        t0 = time.perf_counter()
    return msgspec.structs.replace(figures, cold_s=cold + time.perf_counter() - t0)


def spin_steps(seconds: float) -> int:
    """The steps of ``spin`` that take ``seconds`` of this machine's core."""
    n = 20_000
    while True:
        # The fastest of three: a preempted run must not pass for a slow core.
        elapsed = min(_time_of(spin, n) for _ in range(3))
        if elapsed >= 0.02:
            return max(1, round(n * seconds / elapsed))
        n *= 2


def _time_of(f: Callable[[int], object], arg: int) -> float:
    t0 = time.perf_counter()
    f(arg)
    return time.perf_counter() - t0


def plan_for(roundtrips: int, tasks: int, cores: int) -> Plan:
    return Plan(roundtrips, tasks, CPU_TASKS_PER_CORE * cores, spin_steps(CPU_TASK_S))


def sequential_s(plan: Plan) -> float:
    """The CPU-bound tasks, one after another, in this process: as many
    times the fastest of three (a preempted one must not make the speed-ups
    look larger than they are)."""
    return plan.cpu_tasks * min(_time_of(spin, plan.spin_steps) for _ in range(3))


def workers_count() -> int:
    """One worker per CPU this process may use, as netmcore's map runs."""
    return len(os.sched_getaffinity(0))
