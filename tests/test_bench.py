"""``python -m netmcore bench`` runs and prints every row (small sizes: no figure is checked)."""

from __future__ import annotations

import ctypes
import importlib.util
import os
import subprocess
import sys
from collections.abc import Iterator

import psutil
import pytest

TIMEOUT = 120
MP = "multiprocessing Process"
PR_SET_CHILD_SUBREAPER = 36
SMALL_PEERS = ["bench", "--section", "peers", "--roundtrips", "4", "--tasks", "5"]
PEERS = {  # the name in the table: the module that must be importable
    "ProcessPoolExecutor": "concurrent.futures",
    "loky (reusable executor)": "loky",
    "Dask (LocalCluster, processes)": "distributed",
    "Ray (local)": "ray",
}


def test_bench_runtime_section_prints_each_measure_with_its_peer_and_target() -> None:
    small = ["--roundtrips", "4", "--fanout", "5", "--payload-mib", "1"]
    proc = subprocess.run(
        [sys.executable, "-m", "netmcore", "bench", "--section", "runtime", *small],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    rows = [
        line
        for line in proc.stdout.splitlines()
        if line.startswith(("start->", "fan-out", "1 MiB"))
    ]
    measures = [(row[:34].strip(), row.split("  ")[-1].strip()) for row in rows if "x " in row]
    peers = [MP, "ProcessPoolExecutor (reused)", "os.fork+_exit+waitpid"]
    for what in ("start->join, 5 ms apart", "start->join, back to back"):
        assert [p for p in peers if any(r.startswith(what) and p in r for r in rows)] == peers
    assert ("start->join, 5 ms apart", "<= 0.25x") in measures
    assert ("start->join, 5 ms apart", "<= 1.0x") in measures
    assert ("start->join, 5 ms apart, p90", "(info)") in measures
    fanout = [r for r in rows if r.startswith("fan-out 5: s per process")]
    assert len(fanout) == 3 and "raw fork" in fanout[0] and MP in fanout[1]
    assert "bare fork, result to a pipe" in fanout[2]
    assert sum(r.startswith("1 MiB arg + result") for r in rows) == 2
    assert "fan-out rate:" in proc.stdout
    # where the CPU goes, for both, per process (this machine has /proc)
    assert "fan-out CPU per process: netmcore " in proc.stdout
    assert " (master " in proc.stdout and " vs raw fork " in proc.stdout


def test_bench_ipc_section_prints_each_measure_with_its_peer() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "netmcore", "bench", "--section", "ipc"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    rows = {line[:40].strip(): line[40:] for line in proc.stdout.splitlines() if "x " in line}
    queue = "multiprocessing.Queue"
    assert "raw posix sem ping-pong" in rows["Mailbox ping-pong round trip"]
    assert queue in rows["64-byte messages 1->1: s per message"]
    assert queue in rows["64-byte messages 4->1: s per message"]
    assert f"{queue}, 4 readers" in rows["64-byte messages 1->4: s per message"]
    assert "multiprocessing.Pipe" in rows["Buffer stream 256 MB: s per MB"]
    assert " msg/s vs multiprocessing.Queue " in proc.stdout.split("work queue (4 receivers): ")[1]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--roundtrips", "1"], "--roundtrips: 1 is too small: give at least 4"),
        (["--section", "peers", "--tasks", "0"], "--tasks: 0 is too small: give at least 1"),
    ],
)
def test_bench_rejects_a_count_too_small_before_measuring(args: list[str], message: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "netmcore", "bench", *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert proc.returncode == 2
    assert message in proc.stderr
    assert proc.stdout == ""


@pytest.fixture
def subreaper() -> Iterator[None]:
    """Make this process the reaper of its orphaned descendants: a server a
    peer left after its shut-down (Ray's, Dask's) becomes a child of this
    process. Each must end within a few seconds of the bench: one still
    running fails the test (and is killed). All are reaped here, those that
    end late too: a zombie child left behind confused later tests."""
    libc = ctypes.CDLL(None, use_errno=True)
    before = {c.pid for c in psutil.Process().children()}
    assert libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0, os.strerror(ctypes.get_errno())
    try:
        yield
    finally:
        libc.prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
        adopted = [c for c in psutil.Process().children() if c.pid not in before]
        _, alive = psutil.wait_procs(adopted, timeout=10)  # reaps each that ends
        for child in alive:
            child.kill()
        psutil.wait_procs(alive, timeout=10)
        assert not alive, f"the peers left processes running after the bench: {alive}"


def test_bench_peers_section_measures_netmcore_and_each_installed_peer_alike(
    subreaper: None,
) -> None:
    installed = {name for name, module in PEERS.items() if importlib.util.find_spec(module)}
    proc = subprocess.run(
        [sys.executable, "-m", "netmcore", *SMALL_PEERS],
        capture_output=True,
        text=True,
        timeout=3 * TIMEOUT,  # Ray's start and stop take ~7 s on a quiet machine
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    cpu = f"map, {8 * (os.cpu_count() or 1)} CPU tasks of 50 ms"  # 8 a core, 50 ms of one each
    measures = (
        "task round trip, 5 ms apart",
        "map, 5 tasks: s per task",
        "map, 5 tasks, chunksize 50: s per task",
        "map, 5 tasks, ours chunksize 'auto', theirs plain: s per task",
        cpu,
        "set-up + ",
    )
    for what in measures:
        rows = [line for line in proc.stdout.splitlines() if line.startswith(what)]
        assert len(rows) == len(installed), (what, rows)
        assert {name for name in PEERS if any(name in row for row in rows)} == installed, what
        assert all(row.rstrip().endswith("x   (info)") for row in rows), rows
    speed_ups = next(line for line in proc.stdout.splitlines() if "speed-up" in line)
    assert "netmcore " in speed_ups and all(name in speed_ups for name in installed)
    missing = [module for name, module in PEERS.items() if name not in installed]
    if missing:
        assert f"not installed, so not measured: {', '.join(missing)}" in proc.stdout
    else:
        assert "not installed" not in proc.stdout


def test_bench_names_a_peer_not_installed_and_one_that_failed_and_measures_the_others() -> None:
    # Beside the standard library's peer: one whose module does not exist,
    # and one that fails as it starts (Ray with no cluster to reach, say).
    code = (
        "import sys; from netmcore import _bench_peers as p, __main__ as m\n"
        "def broken(workers): raise RuntimeError('no cluster')\n"
        "p.PEERS = (p.PEERS[0], p.Peer('Absent', 'netmcore_no_such_peer', p.PEERS[0].open),"
        " p.Peer('Broken', 'concurrent.futures', broken))\n"
        "sys.exit(m.main(sys.argv[1:]))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, *SMALL_PEERS],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "not installed, so not measured: netmcore_no_such_peer (pip install" in proc.stdout
    assert "failed, so not measured: Broken (RuntimeError: no cluster)" in proc.stdout
    assert "Absent" not in proc.stdout
    assert proc.stdout.count("ProcessPoolExecutor") == 7  # 6 rows and the speed-ups
