"""A netmcore master whose workers block until they are stopped.

Used by tests/test_signals.py, which runs it as a subprocess and signals it.

usage: signal_master.py [--pidfile P] [--socket-directory D] [--block-in WHERE]
                        [--gate FIFO] [--interrupt-grace S] MODE [MODE ...]

The first process ("manager") starts one worker per MODE, then joins them:

- ``spin``: a busy loop;
- ``pause``: sleeps forever (see :func:`wait_for_a_signal`);
- ``read``: a blocking read on a pipe nobody writes to;
- ``stubborn``: ignores SIGTERM (saying so on stdout) and pauses forever;
- ``quick``: returns at once;
- ``tidy``: pauses until a KeyboardInterrupt, then cleans up: says so, reads
  one byte from the FIFO ``--gate``, says it is done, and re-raises.

``--block-in`` blocks the master's own user code, where a signal must then
interrupt it: ``first_process`` starts one worker per MODE from the master
itself (there is no manager) and then blocks; ``extract_result`` blocks
once the run is over.

Lines written to stdout, each flushed at once:

- ``master PID`` before ``run`` is called;
- ``worker PID NAME`` by the manager and by each worker once it runs;
- ``stubborn PID got SIGTERM`` when the stubborn worker ignores a SIGTERM;
- ``blocked in WHERE`` when the master's user code blocks;
- ``tidy PID interrupted`` and ``tidy PID done`` around a tidy worker's cleanup;
- ``exit NAME CODE`` when ``run`` ends with an exception, which is then re-raised.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from types import FrameType
from typing import NoReturn

import netmcore
from netmcore import _master

GATE: list[str] = []  # the FIFO a tidy worker's cleanup reads (set before run)


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


@netmcore.process
def blocker(mode: str) -> int:
    if mode == "stubborn":

        def ignore(signum: int, _frame: FrameType | None) -> None:
            say(f"stubborn {os.getpid()} got {signal.Signals(signum).name}")

        signal.signal(signal.SIGTERM, ignore)
    if mode == "tidy":
        try:  # from before it says it runs: a Ctrl-C then finds it in here
            say(f"worker {os.getpid()} {mode}")
            wait_for_a_signal()
        except KeyboardInterrupt:
            tidy_up()
            raise
    say(f"worker {os.getpid()} {mode}")
    if mode == "quick":
        return 0
    if mode == "spin":
        while True:
            pass
    if mode == "read":
        r, _w = os.pipe()
        os.read(r, 1)
    wait_for_a_signal()


def wait_for_a_signal() -> NoReturn:
    """Sleep until a signal's handler raises. In slices: Python runs a
    handler only once the system call it interrupts returns, and a signal
    that comes just before the call begins (signal.pause(), a long sleep)
    interrupts nothing, so its handler would wait for the next signal."""
    while True:
        time.sleep(0.05)


def tidy_up() -> None:
    """A tidy worker's cleanup, which waits for a byte on the gate."""
    say(f"tidy {os.getpid()} interrupted")
    fd = os.open(GATE[0], os.O_RDONLY)
    os.read(fd, 1)
    os.close(fd)
    say(f"tidy {os.getpid()} done")


@netmcore.process
def manager(modes: list[str]) -> int:
    say(f"worker {os.getpid()} manager")
    pids = [blocker.start(mode) for mode in modes]
    for pid in pids:
        blocker.join(pid)
    return len(pids)


def block(where: str) -> NoReturn:
    say(f"blocked in {where}")
    wait_for_a_signal()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pidfile")
    parser.add_argument("--socket-directory")
    parser.add_argument("--block-in", choices=["first_process", "extract_result"])
    parser.add_argument("--gate")
    parser.add_argument("--interrupt-grace", type=float)
    parser.add_argument(
        "modes", nargs="+", choices=["spin", "pause", "read", "stubborn", "quick", "tidy"]
    )
    args = parser.parse_args()
    if args.gate:
        GATE.append(args.gate)
    if args.interrupt_grace is not None:
        _master.INTERRUPT_GRACE_SECONDS = args.interrupt_grace

    def first() -> netmcore.ProcessId[int]:
        if args.block_in != "first_process":
            return manager.start(args.modes)
        for mode in args.modes:
            blocker.start(mode)
        block("first_process")

    def extract(_ctrl: netmcore.Controller, pid: netmcore.ProcessId[int]) -> int | None:
        if args.block_in == "extract_result":
            block("extract_result")
        return manager.join_nowait(pid)

    say(f"master {os.getpid()}")
    try:
        netmcore.run(
            first_process=first,
            extract_result=extract,
            pidfile=args.pidfile,
            socket_directory=args.socket_directory,
        )
    except BaseException as exc:
        say(f"exit {type(exc).__name__} {getattr(exc, 'code', '')}".rstrip())
        raise
    say("exit normally")


if __name__ == "__main__":
    main()
