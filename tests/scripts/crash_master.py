"""A netmcore master whose first process holds one kernel object of each kind.

Used by tests/test_crash_cleanup.py, which runs it as a subprocess and kills
the master, its watchdog, or both, then checks what is left.

usage: crash_master.py --file PATH --ext-shm NAME --ext-sem NAME
                       [--socket-directory D] [--disable-pmanage] [--stubborn]

``--ext-shm`` and ``--ext-sem`` name a shm object and a semaphore that the test
has created; the first process hands them (and the file) to the manager.

Lines written to stdout, each flushed at once:

- ``master PID`` before ``run`` is called, then ``guard PID``: the program's
  guard, which unlinks ``before`` if the program dies (see _watchdog);
- ``init JSON`` from ``init_ctrl``: ``{"sockdir": ..., "pmanage": bool}`` (is
  there a crash-cleanup record in the socket directory at that point);
- ``worker PID first`` once the first process runs;
- ``objects JSON``: the names of what the first process made or took over
  (``shm``, ``sem``, ``prealloc``, ``file``, ``ext_shm``, ``ext_sem``, and
  ``before``, preallocated shm that the master made before ``run``), and
  ``big``, the id of a process started with a large argument, whose large
  result waits, unjoined, in shared memory;
- ``big PID SIZE`` when ``big`` runs (its argument has been read);
- ``ready``, then the first process serves stdin: ``ping`` is answered with
  ``pong``; ``quit`` (or the end of stdin) makes it join ``big`` and return;
- ``got SIGNAME`` (``--stubborn``) when the first process ignores a SIGTERM
  or SIGINT;
- ``done`` when ``run`` has returned, or ``exit NAME CODE`` when it raised.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from types import FrameType

import netmcore
from netmcore import _watchdog

BIG = 100_000  # over the 64 KiB that travel inline: it goes through shm


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


@netmcore.process
def big(data: bytes) -> bytes:
    # The argument came through shm, and its shm object is gone by now (the
    # worker unlinks it as it reads it). The result goes back through shm too,
    # and stays there until it is joined.
    say(f"big {os.getpid()} {len(data)}")
    return bytes(reversed(data))


@netmcore.process
def first(conf: dict[str, str]) -> int:
    if conf["stubborn"]:

        def ignore(signum: int, _frame: FrameType | None) -> None:
            say(f"got {signal.Signals(signum).name}")

        signal.signal(signal.SIGTERM, ignore)
        signal.signal(signal.SIGINT, ignore)
    say(f"worker {os.getpid()} first")
    shm = netmcore.create_shm(8192)
    shm.buffer[:5] = b"hello"
    sem = netmcore.create_sem(1)
    _, prealloc = netmcore.create_preallocated_shm("/nmc_crashtest_", 4096)
    managed = netmcore.manage_file(conf["file"])
    ext_shm = netmcore.manage_shm(conf["ext_shm"])
    ext_sem = netmcore.manage_sem(conf["ext_sem"])
    pid = big.start(bytes(range(256)) * (BIG // 256 + 1))
    objects = {
        "shm": shm.name,
        "sem": sem.name,
        "prealloc": prealloc,
        "before": conf["before"],
        "file": getattr(managed.repr, "name", ""),
        "ext_shm": getattr(ext_shm.repr, "name", ""),
        "ext_sem": getattr(ext_sem.repr, "name", ""),
        "big": str(pid.n),
    }
    say("objects " + json.dumps(objects))
    say("ready")
    while True:
        line = sys.stdin.readline()
        if not line or line.strip() == "quit":
            break
        if line.strip() == "ping":
            say("pong")
    result = big.join(pid)
    assert result is not None and len(result) > BIG
    shm.close()
    sem.close()
    return 0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--socket-directory")
    parser.add_argument("--disable-pmanage", action="store_true")
    parser.add_argument("--stubborn", action="store_true")
    parser.add_argument("--pidfile")
    parser.add_argument("--file", required=True)
    parser.add_argument("--ext-shm", required=True)
    parser.add_argument("--ext-sem", required=True)
    args = parser.parse_args()
    # Preallocated memory made by the master-to-be, before run: the master
    # records it when it starts.
    _, before = netmcore.create_preallocated_shm("/nmc_crashtest_pre_", 4096)
    conf = {
        "before": before,
        "file": args.file,
        "ext_shm": args.ext_shm,
        "ext_sem": args.ext_sem,
        "stubborn": "yes" if args.stubborn else "",
    }

    def init(ctrl: netmcore.Controller) -> None:
        record = os.path.join(ctrl.socket_directory, "netmcore.pmanage")
        info = {"sockdir": ctrl.socket_directory, "pmanage": os.path.exists(record)}
        say("init " + json.dumps(info))

    say(f"master {os.getpid()}")
    guard = _watchdog._made.guard  # no public way: the guard is netmcore's own business
    assert guard is not None, "no guard after an object was made outside run"
    say(f"guard {guard.os_pid}")
    try:
        netmcore.run(
            first_process=lambda: first.start(conf),
            extract_result=lambda _ctrl, pid: first.join_nowait(pid),
            socket_directory=args.socket_directory,
            init_ctrl=init,
            disable_pmanage=args.disable_pmanage,
            pidfile=args.pidfile,
        )
    except BaseException as exc:
        say(f"exit {type(exc).__name__} {getattr(exc, 'code', '')}".rstrip())
        raise
    say("done")


if __name__ == "__main__":
    main()
