"""``python -m netmcore bench``: netmcore side by side with its peers, as ratios.

Every figure comes from the same run on the same machine. The netmcore side is
measured inside the first process (a worker), which is where user code runs;
the baselines run in the master process before ``run`` starts, so both sides
fork from the same parent.

A start->join round trip is timed two ways, each the same way for every peer:
calls PAUSE_S apart (the latency of one call, with the fork of the next
process and the exit of the last one kept off its path), and back to back
(where, for a fresh process per call, the machine is busy forking and
tearing down processes, and the rate of that work is what is measured).
"""

from __future__ import annotations

import multiprocessing
import os
import resource
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import msgspec

from . import _bench_ipc, _bench_peers, _bench_pipeline
from ._bench_support import PAUSE_S, in_first_process, paced_times
from ._process import process

MIB = 1 << 20


class Timings(msgspec.Struct, frozen=True):
    paced_s: float
    paced_p90_s: float
    back_to_back_s: float
    fanout_s: float
    fanout_n: int
    payload_s: float
    # CPU seconds the fan-out took: the master's, the processes' (those
    # the master reaped meanwhile), and the starting worker's. None without /proc.
    fanout_cpu: tuple[float, float, float] | None


class Plan(msgspec.Struct, frozen=True):
    roundtrips: int
    fanout: int
    payload_mib: int


@process
def _trivial(k: int) -> int:
    return k


@process
def _echo(data: bytes) -> bytes:
    return data


def _roundtrip() -> None:
    if _trivial.join(_trivial.start(7)) != 7:
        raise RuntimeError("a round trip lost its value")


@process
def _measure(plan: Plan) -> Timings:
    paced, paced_p90 = paced_times(_roundtrip, plan.roundtrips)
    back_to_back = _per_call(_roundtrip, plan.roundtrips)
    cpu0 = _cpu_of_master_and_reaped(), _cpu(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    pids = [_trivial.start(k) for k in range(plan.fanout)]
    for pid in pids:
        if _trivial.join(pid) is None:
            raise RuntimeError("a fan-out process failed")
    fanout = time.perf_counter() - t0
    cpu1 = _cpu_of_master_and_reaped(), _cpu(resource.RUSAGE_SELF)
    fanout_cpu = None
    if cpu0[0] is not None and cpu1[0] is not None:
        (master0, reaped0), (master1, reaped1) = cpu0[0], cpu1[0]
        fanout_cpu = (master1 - master0, reaped1 - reaped0, cpu1[1] - cpu0[1])
    data = os.urandom(plan.payload_mib * MIB)
    payload = min(_payload_roundtrip(data) for _ in range(3))  # as the copy baseline
    return Timings(paced, paced_p90, back_to_back, fanout, plan.fanout, payload, fanout_cpu)


def _cpu_of_master_and_reaped() -> tuple[float, float] | None:
    """The CPU seconds of the master (this worker's parent), and of the
    children it has reaped, from /proc (None without it)."""
    try:
        with open(f"/proc/{os.getppid()}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
    except OSError:
        return None
    utime, stime, cutime, cstime = (int(x) / os.sysconf("SC_CLK_TCK") for x in fields[11:15])
    return utime + stime, cutime + cstime


def _cpu(who: int) -> float:
    """The CPU seconds of this process (RUSAGE_SELF), or of its reaped children."""
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def _payload_roundtrip(data: bytes) -> float:
    t0 = time.perf_counter()
    back = _echo.join(_echo.start(data))
    elapsed = time.perf_counter() - t0
    if back != data:
        raise RuntimeError("the payload did not come back intact")
    return elapsed


def _per_call(f: Callable[[], object], n: int) -> float:
    """The mean time of ``f`` called back to back."""
    for _ in range(min(n, 20)):  # warm up: code paths, caches, pools
        f()
    t0 = time.perf_counter()
    for _ in range(n):
        f()
    return (time.perf_counter() - t0) / n


def _raw_fork() -> None:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)


def _raw_fanout(n: int) -> tuple[float, float, float]:
    """The time of n raw forks started, then reaped; the CPU seconds of the
    parent and of the children."""
    cpu0 = _cpu(resource.RUSAGE_SELF), _cpu(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    pids = []
    for _ in range(n):
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        pids.append(pid)
    for pid in pids:
        os.waitpid(pid, 0)
    elapsed = time.perf_counter() - t0
    cpu1 = _cpu(resource.RUSAGE_SELF), _cpu(resource.RUSAGE_CHILDREN)
    return elapsed, cpu1[0] - cpu0[0], cpu1[1] - cpu0[1]


def _identity(k: int) -> int:
    return k


def _bare_fanout(n: int) -> float:
    """n bare forks that each run the function and write its result, encoded
    with msgspec, to one pipe; the parent reads every result, then reaps.
    What a fork per task costs with no protocol at all: no master, no ids,
    no join, no supervision."""
    encode = msgspec.msgpack.encode
    r, w = os.pipe()
    try:
        t0 = time.perf_counter()
        pids = []
        for k in range(n):
            pid = os.fork()
            if pid == 0:
                os.write(w, encode(_identity(k)).ljust(8))  # one 8-byte record each
                os._exit(0)
            pids.append(pid)
        got = 0
        while got < 8 * n:
            got += len(os.read(r, 65536))
        for pid in pids:
            os.waitpid(pid, 0)
        return time.perf_counter() - t0
    finally:
        os.close(r)
        os.close(w)


def _mp_fanout(n: int) -> float:
    """n multiprocessing Processes started, then joined (they return nothing)."""
    ctx = multiprocessing.get_context("fork")
    t0 = time.perf_counter()
    processes = [ctx.Process(target=_identity, args=(k,)) for k in range(n)]
    for p in processes:
        p.start()
    for p in processes:
        p.join()
    return time.perf_counter() - t0


def _mp_process() -> None:
    p = multiprocessing.get_context("fork").Process(target=_identity, args=(1,))
    p.start()
    p.join()


def _pipe_echo(conn: multiprocessing.connection.Connection) -> None:
    data = conn.recv_bytes()
    conn.send_bytes(data)
    conn.close()


def _mp_pipe_payload(data: bytes) -> float:
    ctx = multiprocessing.get_context("fork")
    parent, child = ctx.Pipe()
    t0 = time.perf_counter()
    p = ctx.Process(target=_pipe_echo, args=(child,))
    p.start()
    parent.send_bytes(data)
    back = parent.recv_bytes()
    p.join()
    elapsed = time.perf_counter() - t0
    assert len(back) == len(data)
    return elapsed


@dataclass
class Row:
    what: str
    ours: float
    theirs: float
    peer: str
    target: str
    unit: str = "us"

    def render(self, width: int = 34) -> str:
        """The row, its measure's name ``width`` characters wide."""
        scale = 1e6 if self.unit == "us" else 1e3
        ratio = self.ours / self.theirs
        return (
            f"{self.what:<{width}} {self.ours * scale:>10.1f} {self.unit}  "
            f"{self.peer:<30} {self.theirs * scale:>10.1f} {self.unit}  "
            f"{ratio:>6.2f}x   {self.target}"
        )


@dataclass
class Baselines:
    paced: dict[str, tuple[float, float]]  # peer -> median, p90 round trip, PAUSE_S apart
    back_to_back: dict[str, float]  # peer -> mean round trip
    raw_fanout: tuple[float, float, float]  # seconds; CPU seconds of the parent, the children
    mp_fanout: float
    bare_fanout: float


MP_PROCESS = "multiprocessing Process"
PPE = "ProcessPoolExecutor (reused)"
RAW_FORK = "os.fork+_exit+waitpid"


def _baselines(roundtrips: int, fanout: int) -> Baselines:
    # Forks from the master as it is when netmcore's master starts: nothing
    # large has been allocated yet (see _payload_baselines).
    paced: dict[str, tuple[float, float]] = {}
    back_to_back: dict[str, float] = {}
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("fork")) as ex:
        call = lambda: ex.submit(_identity, 1).result()  # noqa: E731
        paced[PPE] = paced_times(call, roundtrips)
        back_to_back[PPE] = _per_call(call, 4 * roundtrips)
    for peer, f in ((MP_PROCESS, _mp_process), (RAW_FORK, _raw_fork)):
        paced[peer] = paced_times(f, roundtrips // 2)
        back_to_back[peer] = _per_call(f, roundtrips // 2)
    return Baselines(
        paced, back_to_back, _raw_fanout(fanout), _mp_fanout(fanout), _bare_fanout(fanout)
    )


def _payload_baselines(payload_mib: int) -> tuple[float, float]:
    """One in-process copy, and a multiprocessing Pipe round trip.

    Measured after netmcore's run: the allocator keeps much of the freed
    64 MiB buffers resident (the master's anonymous memory grows from 14 to
    40 MB here), and every fork after that copies and tears down more page
    tables.
    """
    data = os.urandom(payload_mib * MIB)
    copy = min(_per_call(lambda: bytearray(data), 1) for _ in range(3))
    return copy, min(_mp_pipe_payload(data) for _ in range(3))


def runtime_rows(roundtrips: int, fanout: int, payload_mib: int) -> tuple[list[Row], str]:
    """The core runtime's figures, and a line on the fan-out rate."""
    base = _baselines(roundtrips, fanout)
    plan = Plan(roundtrips, fanout, payload_mib)
    t = in_first_process(_measure, plan)
    copy, pipe = _payload_baselines(payload_mib)
    fan_rate, raw_rate = t.fanout_n / t.fanout_s, fanout / base.raw_fanout[0]
    mib = f"{payload_mib} MiB arg + result"
    paced = f"start->join, {PAUSE_S * 1e3:g} ms apart"
    targets = {MP_PROCESS: "<= 0.25x", PPE: "<= 1.0x", RAW_FORK: "(info)"}
    rows = [Row(paced, t.paced_s, base.paced[p][0], p, targets[p]) for p in targets]
    # The slowest tenth: a call that meets the forks and exits of the last
    # ones (kept off the median's path, not off every call's).
    rows.append(Row(f"{paced}, p90", t.paced_p90_s, base.paced[PPE][1], PPE, "(info)"))
    rows += [
        Row("start->join, back to back", t.back_to_back_s, base.back_to_back[p], p, "(info)")
        for p in targets
    ]
    rows += [
        Row(f"fan-out {fanout}: s per process", 1 / fan_rate, 1 / raw_rate, "raw fork", "<= 1.25x"),
        Row(
            f"fan-out {fanout}: s per process",
            1 / fan_rate,
            base.mp_fanout / fanout,
            "multiprocessing Process",
            "(info)",
        ),
        Row(
            f"fan-out {fanout}: s per process",
            1 / fan_rate,
            base.bare_fanout / fanout,
            "bare fork, result to a pipe",
            "(info)",
        ),
        Row(mib, t.payload_s, copy, f"one {payload_mib} MiB copy", "<= 4x", "ms"),
        Row(mib, t.payload_s, pipe, "multiprocessing Pipe", "(info)", "ms"),
    ]
    note = (
        f"fan-out rate: {fan_rate:,.0f} processes/s vs raw fork {raw_rate:,.0f}/s "
        f"({fan_rate / raw_rate:.2f}x; target >= 0.8x)"
    )
    if t.fanout_cpu is not None:
        note += "\n" + _fanout_cpu_line(t.fanout_cpu, base.raw_fanout[1:], fanout)
    return rows, note


def _fanout_cpu_line(ours: tuple[float, ...], raw: tuple[float, ...], n: int) -> str:
    """Where the CPU of a fan-out goes, per process: both use every core,
    so the rates compare as these totals do. (The processes' CPU counts
    those the master reaped in the fan-out, which is close to all of them.)"""
    ms = [1e3 * x / n for x in (*ours, *raw)]
    master, processes, starter, parent, children = ms
    return (
        f"fan-out CPU per process: netmcore {master + processes + starter:.2f} ms "
        f"(master {master:.2f}, processes {processes:.2f}, the starting worker {starter:.2f}) "
        f"vs raw fork {parent + children:.2f} ms (parent {parent:.2f}, children {children:.2f})"
    )


def ipc_rows() -> tuple[list[Row], str]:
    """The shared-memory mailbox's figures."""
    f = _bench_ipc.measure()
    small = f"{_bench_ipc.MESSAGE}-byte messages"
    rows = [
        Row(
            "Mailbox ping-pong round trip",
            f.pingpong,
            f.raw_pingpong,
            "raw posix sem ping-pong",
            "<= 1.3x",
        ),
        Row(
            f"{small} 1->1: s per message",
            1 / f.rate_1,
            1 / f.queue_rate_1,
            "multiprocessing.Queue",
            "<= 0.5x",
        ),
        Row(
            f"{small} 4->1: s per message",
            1 / f.rate_4,
            1 / f.queue_rate_4,
            "multiprocessing.Queue",
            "<= 0.5x",
        ),
        Row(
            f"{small} 1->{_bench_ipc.RECEIVERS}: s per message",
            1 / f.work_rate,
            1 / f.queue_work_rate,
            f"multiprocessing.Queue, {_bench_ipc.RECEIVERS} readers",
            "(info)",
        ),
    ]
    mb = _bench_ipc.STREAM // 1_000_000
    rows.append(
        Row(
            f"Buffer stream {mb} MB: s per MB",
            1e6 / f.stream,
            1e6 / f.pipe_stream,
            "multiprocessing.Pipe",
            "(info)",
        )
    )
    note = (
        f"Buffer: {f.stream / 1e6:,.0f} MB/s vs multiprocessing.Pipe "
        f"{f.pipe_stream / 1e6:,.0f} MB/s; "
        f"mailbox throughput: {f.rate_1:,.0f} msg/s (1 sender), {f.rate_4:,.0f} msg/s (4 senders); "
        f"multiprocessing.Queue: {f.queue_rate_1:,.0f} / {f.queue_rate_4:,.0f} msg/s; "
        f"work queue ({_bench_ipc.RECEIVERS} receivers): {f.work_rate:,.0f} msg/s vs "
        f"multiprocessing.Queue {f.queue_work_rate:,.0f} msg/s"
    )
    return rows, note


def pipeline_rows() -> tuple[list[Row], str]:
    """Small items through a 3-stage pipeline."""
    ours, peers = _bench_pipeline.pipeline_rate(), _bench_pipeline.pool_chain_rate()
    n = _bench_pipeline.ITEMS
    rows = [
        Row(
            f"pipeline, 3 stages, {n} items: s/item",
            1 / ours,
            1 / peers,
            "chain of multiprocessing Pools",
            "<= 0.67x",
        )
    ]
    return rows, f"pipeline: {ours:,.0f} items/s vs chained Pool.imap {peers:,.0f} items/s"


# How a measure is read from a Figures.
Get = Callable[[_bench_peers.Figures], float]


def _same(get: Get) -> tuple[Get, Get]:
    """A measure read alike from netmcore's figures and a peer's."""
    return get, get


def peers_rows(roundtrips: int, tasks: int) -> tuple[list[Row], str]:
    """netmcore against the executors its users know (see _bench_peers)."""
    workers = _bench_peers.workers_count()
    plan = _bench_peers.plan_for(roundtrips, tasks, workers)
    ours = _bench_peers.netmcore_figures(plan)
    sequential = _bench_peers.sequential_s(plan)
    theirs: dict[str, _bench_peers.Figures] = {}
    failed: list[str] = []
    for peer in _bench_peers.PEERS:
        if not _bench_peers.installed(peer):
            continue
        try:
            theirs[peer.name] = _bench_peers.peer_figures(peer, plan, workers)
        except Exception as exc:  # one peer's failure loses none of the others' figures
            failed.append(f"{peer.name} ({type(exc).__name__}: {exc})")

    def per_task(f: _bench_peers.Figures) -> float:
        return f.map_s / plan.tasks

    measures: list[tuple[str, Get, Get, str]] = [
        (f"task round trip, {PAUSE_S * 1e3:g} ms apart", *_same(lambda f: f.roundtrip_s), "us"),
        (f"map, {plan.tasks} tasks: s per task", per_task, per_task, "us"),
        (
            f"map, {plan.tasks} tasks, chunksize {_bench_peers.CHUNKSIZE}: s per task",
            *_same(lambda f: f.chunked_map_s / plan.tasks),
            "us",
        ),
        # What each gives with the setting its users would take: netmcore's
        # chunksize="auto" against the peer's plain map (which may chunk too).
        (
            f"map, {plan.tasks} tasks, ours chunksize 'auto', theirs plain: s per task",
            lambda f: f.auto_map_s / plan.tasks,
            per_task,
            "us",
        ),
        (
            f"map, {plan.cpu_tasks} CPU tasks of {_bench_peers.CPU_TASK_S * 1e3:g} ms",
            *_same(lambda f: f.cpu_s),
            "ms",
        ),
        ("set-up + 1 task + shut-down", *_same(lambda f: f.cold_s), "ms"),
    ]
    rows = [
        Row(what, get_ours(ours), get_theirs(figures), name, "(info)", unit)
        for what, get_ours, get_theirs, unit in measures
        for name, figures in theirs.items()
    ]
    speed_ups = ", ".join(
        f"{name} {sequential / figures.cpu_s:.2f}x"
        for name, figures in [("netmcore", ours), *theirs.items()]
    )
    note = f"CPU-bound map, speed-up over one process ({workers} workers): {speed_ups}"
    note += "\n(Dask and Ray take no chunksize: their chunked map is a plain one)"
    missing = [p.module for p in _bench_peers.PEERS if not _bench_peers.installed(p)]
    if failed:
        note += f"\nfailed, so not measured: {'; '.join(failed)}"
    if missing:
        note += (
            f"\nnot installed, so not measured: {', '.join(missing)} "
            "(pip install 'netmcore[peers]'; make bench installs them)"
        )
    return rows, note


def main(
    roundtrips: int = 500,
    fanout: int = 1000,
    payload_mib: int = 64,
    sections: str = "all",
    tasks: int = 1000,
) -> list[Row]:
    """Measure, print the table, and return its rows."""
    rows: list[Row] = []
    notes: list[str] = []
    sections_to_run: list[tuple[str, Callable[[], tuple[list[Row], str]]]] = [
        ("runtime", lambda: runtime_rows(roundtrips, fanout, payload_mib)),
        ("ipc", ipc_rows),
        ("pipeline", pipeline_rows),
        # last: the peers' imports and threads must not be in a fork of ours
        ("peers", lambda: peers_rows(roundtrips, tasks)),
    ]
    for name, measure in sections_to_run:
        if sections in ("all", name):
            more, note = measure()
            rows += more
            notes.append(note)
    print(f"netmcore bench on {os.cpu_count()} cores (ratio = netmcore / peer; lower is better)")
    width = max([34, *(len(row.what) for row in rows)])  # the columns line up
    print(
        f"{'measure':<{width}} {'netmcore':>13}  {'peer':<30} {'peer time':>13}  "
        f"{'ratio':>7}   target"
    )
    for row in rows:
        print(row.render(width))
    for note in notes:
        print(note)
    return rows
