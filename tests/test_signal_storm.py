"""A storm of signal handlers' exceptions in a worker's netmcore calls.

A SIGALRM every half millisecond raises in the main thread of a worker
whenever a netmcore frame is on its stack (never in the test's own code, so
that each cut-short call can be retried), while another thread of the worker
uses the same link to the master. Each program runs in a subprocess: a hang
(the defect) is killed at the bound, and fails the test.
"""

from __future__ import annotations

import pytest
from scenario import run_snippet

STORM = """
import os, signal, sys, threading
import netmcore

class Tick(Exception):
    pass

def handler(signum, frame):
    while frame is not None:
        name = frame.f_code.co_filename
        if "/netmcore/" in name:
            raise Tick
        if name == "<string>":  # this program's own code: never cut
            return
        frame = frame.f_back

def retried(f, *args):
    while True:
        try:
            return f(*args)
        except Tick:
            pass

@netmcore.process
def leaf(k: int) -> int:
    return k + 1

@netmcore.process
def storm(rounds: int) -> int:
    stop, wrong = [], []

    def other_thread():
        k = 0
        while not stop:
            if sys.argv[1] == "join":
                if leaf.join(leaf.start(k)) != k + 1:
                    wrong.append(k)
            else:
                netmcore.create_shm(100).release()
            k += 1

    thread = threading.Thread(target=other_thread)
    thread.start()
    signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, 0.0005, 0.0005)
    try:
        for _ in range(rounds):
            retried(retried(netmcore.create_shm, 100).release)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0, 0)
        stop.append(True)
        thread.join()
    return len(wrong)

print(netmcore.run(first_process=lambda: storm.start(3000),
                   extract_result=lambda c, p: storm.join_nowait(p)))
"""


@pytest.mark.timeout(120)
@pytest.mark.parametrize("other", ["shm", "join"])
def test_a_storm_in_one_thread_never_hangs_the_links_other_threads(other: str) -> None:
    """The link's lock was a threading.Condition, taken in Python code: an
    exception just after its lock was acquired, in its __enter__, left it
    taken, and the other thread (and then this one) waited for it for ever
    (the run hung within seconds, every time)."""
    assert run_snippet(STORM, 60, other) == (0, "0\n")
