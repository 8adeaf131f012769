"""``python -m netmcore bench`` runs and prints every row (small sizes: no figure is checked)."""

from __future__ import annotations

import subprocess
import sys

TIMEOUT = 120
MP = "multiprocessing Process"


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


def test_bench_rejects_too_few_round_trips_before_measuring() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "netmcore", "bench", "--roundtrips", "1"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert proc.returncode == 2
    assert "--roundtrips: 1 is too small: give at least 4" in proc.stderr
    assert proc.stdout == ""
