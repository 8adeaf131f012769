"""A netmcore master that runs until told to stop on stdin.

Used by tests/test_socketdir.py to hold a socket directory while the test
tries to use it from another master, or talks to the control socket.

usage: hold_master.py --socket-directory D [--pidfile P]

The first process prints ``ready MASTER_PID WORKER_PID`` and then waits for a
line on stdin; when it ends, the master shuts down and ``done`` is printed.
"""

from __future__ import annotations

import argparse
import os
import sys

import netmcore


@netmcore.process
def hold(_: int) -> int:
    sys.stdout.write(f"ready {os.getppid()} {os.getpid()}\n")
    sys.stdout.flush()
    sys.stdin.readline()
    return 0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--socket-directory", required=True)
    parser.add_argument("--pidfile")
    args = parser.parse_args()
    netmcore.run(
        first_process=lambda: hold.start(0),
        extract_result=lambda _ctrl, pid: hold.join_nowait(pid),
        socket_directory=args.socket_directory,
        pidfile=args.pidfile,
    )
    sys.stdout.write("done\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
