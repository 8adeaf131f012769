"""A netmcore master that sends a signal at an exact point of its own run.

Used by tests/test_crash_cleanup.py. An audit hook (``sys.addaudithook``)
watches the master's audit events, and at the point named on the command line
sends a signal: to the master itself (as if it came from outside at that very
moment) or to another process. No delay decides where it lands.

usage: audit_master.py [--socket-directory D] [--pidfile F] [--when start|end]
                       [--at EVENT:NAME ...] [--signal NAME] [--to PID]
                       [--keep K] [--churn N] [--hold]
                       [--stop-watchdog-at EVENT:NAME] [--cleanup-wait SECONDS]
                       [--after-extract] [--tag WORD]

- ``--at``: the signal goes at the last of these events, each one looked for
  after the one before it is seen; looking starts before ``run`` is called
  (``--when start``) or when ``extract_result`` is called (``--when end``).
  An event matches if its name is EVENT and, if NAME is not empty, the base
  name of its first argument is NAME (``os.remove:netmcore.lock``).
- ``--signal`` (TERM, KILL, INT, CONT; TERM by default) goes to ``--to`` (by
  default the master itself).
- The first process makes ``--keep`` shm objects and keeps them, then makes
  and releases one ``--churn`` times; with ``--hold`` it then waits for a line
  on stdin before it returns.
- ``--stop-watchdog-at``: the watchdog stops itself (SIGSTOP) at that event,
  once the master is dead (the watchdog leads a session of its own then).
- ``--after-extract``: the signal's handler runs in the master at the first
  bytecode of the ``ExitStack.__exit__`` that follows ``extract_result``'s
  return: where ``run`` begins to tear down. A profile hook calls the handler
  there, as Python does for a signal that has just come (no audit event
  marks that moment, and a signal sent from the hook would be handled a few
  bytecodes later, inside the cleanup's own exception handling).
- ``--cleanup-wait``: sets how long a new master gives a dead one's
  watchdog to say it is cleaning up (netmcore._socketdir._CLEANUP_WAIT).
- ``--tag``: ignored; the test finds every process of the program (each a
  fork of the master, the watchdog too) by this word in its command line.

Lines written to stdout, each flushed at once (``left`` too when ``run``
raised: its children and the entries of TMPDIR, before this process exits):

- ``master PID`` first, and ``pre NAME``: preallocated shm the program made
  before ``run`` (the master records it when it starts); ``guard PID``: the
  program's guard, which unlinks it if the program dies (see _watchdog);
- ``sockdir PATH`` from ``init_ctrl``;
- ``objects JSON`` (the names of the kept objects) from the first process,
  and ``ready`` after its churn;
- ``done VALUE`` when ``run`` has returned, or ``exit NAME CODE`` when it raised.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
from typing import Any

import netmcore
from netmcore import _socketdir, _watchdog


def guard_pid() -> int:
    guard = _watchdog._made.guard  # no public way: the guard is netmcore's own business
    assert guard is not None, "no guard after an object was made outside run"
    return guard.os_pid


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


@netmcore.process
def work(conf: dict[str, int]) -> int:
    kept = [netmcore.create_shm(4096) for _ in range(conf["keep"])]
    say("objects " + json.dumps([shm.name for shm in kept]))
    for _ in range(conf["churn"]):
        netmcore.create_shm(4096).release()
    say("ready")
    if conf["hold"]:
        sys.stdin.readline()
    return 7


def parse_point(text: str) -> tuple[str, str]:
    event, _, name = text.partition(":")
    return event, name


def matches(point: tuple[str, str], event: str, args: tuple[Any, ...]) -> bool:
    name = point[1]
    return event == point[0] and (
        not name or (bool(args) and os.path.basename(str(args[0])) == name)
    )


class Hook:
    """Sends the signal at the last of ``points``: installed before ``run``."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.master = os.getpid()
        self.points = [parse_point(p) for p in args.at]
        self.signum = signal.Signals["SIG" + args.signal]
        self.to = args.to or self.master
        self.looking = args.when == "start" and bool(self.points)
        self.stop_at = parse_point(args.stop_watchdog_at) if args.stop_watchdog_at else None

    def __call__(self, event: str, args: tuple[Any, ...]) -> None:
        if self.looking and os.getpid() == self.master and matches(self.points[0], event, args):
            self.points.pop(0)
            if not self.points:
                self.looking = False  # before the kill: it is an audit event too
                os.kill(self.to, self.signum)
        elif (
            self.stop_at is not None
            and os.getpid() != self.master
            and os.getsid(0) == os.getpid()  # the watchdog: it leads its own session
            and matches(self.stop_at, event, args)
        ):
            self.stop_at = None
            os.kill(os.getpid(), signal.SIGSTOP)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--socket-directory")
    parser.add_argument("--pidfile")
    parser.add_argument("--when", choices=["start", "end"], default="start")
    parser.add_argument("--at", action="append", default=[])
    parser.add_argument("--signal", default="TERM", choices=["TERM", "KILL", "INT", "CONT"])
    parser.add_argument("--to", type=int)
    parser.add_argument("--keep", type=int, default=0)
    parser.add_argument("--churn", type=int, default=0)
    parser.add_argument("--hold", action="store_true")
    parser.add_argument("--stop-watchdog-at")
    parser.add_argument("--cleanup-wait", type=float)
    parser.add_argument("--after-extract", action="store_true")
    parser.add_argument("--tag")
    args = parser.parse_args()
    if args.cleanup_wait is not None:
        _socketdir._CLEANUP_WAIT = args.cleanup_wait
    say(f"master {os.getpid()}")
    # Named for this process, as netmcore names what it makes, so that a test
    # run beside ours (tests/conftest.py) does not take it for its own leak.
    _, pre = netmcore.create_preallocated_shm(f"/nmc.{os.getpid()}.audittest.", 4096)
    say(f"pre {pre}")
    say(f"guard {guard_pid()}")
    hook = Hook(args)
    sys.addaudithook(hook)
    conf = {"keep": args.keep, "churn": args.churn, "hold": int(args.hold)}

    def extract(_ctrl: netmcore.Controller, pid: netmcore.ProcessId[int]) -> int | None:
        hook.looking = args.when == "end" and bool(hook.points)
        return work.join_nowait(pid)

    returned = False

    def after_extract(frame: Any, event: str, _arg: Any) -> None:
        nonlocal returned
        if event == "return" and frame.f_code is extract.__code__:
            returned = True
        elif (
            returned and event == "call" and frame.f_code is contextlib.ExitStack.__exit__.__code__
        ):
            sys.setprofile(None)
            signum = signal.Signals["SIG" + args.signal]
            handler = signal.getsignal(signum)
            assert callable(handler)
            handler(signum, frame)

    if args.after_extract:
        sys.setprofile(after_extract)

    try:
        result = netmcore.run(
            first_process=lambda: work.start(conf),
            extract_result=extract,
            socket_directory=args.socket_directory,
            pidfile=args.pidfile,
            init_ctrl=lambda ctrl: say(f"sockdir {ctrl.socket_directory}"),
        )
    except BaseException as exc:
        say(f"left {' '.join(left_behind()) or 'nothing'}")
        say(f"exit {type(exc).__name__} {getattr(exc, 'code', '')}".rstrip())
        raise
    say(f"done {result}")


def left_behind() -> list[str]:
    """What run left while this process lives: children (the watchdog, once
    run is over, is gone; the program's guard stays while ``pre`` lives) and
    the run's socket directory."""
    left = []
    guard = str(guard_pid())
    for task in os.listdir(f"/proc/{os.getpid()}/task"):
        with open(f"/proc/{os.getpid()}/task/{task}/children") as f:
            left += [f"child:{pid}" for pid in f.read().split() if pid != guard]
    left += [f"dir:{name}" for name in os.listdir(os.environ.get("TMPDIR", "/tmp"))]
    return left


if __name__ == "__main__":
    main()
