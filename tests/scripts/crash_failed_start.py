"""A master that fails to start, then a second start in the same program.

Used by tests/test_crash_cleanup.py. It runs in a subprocess so that whatever
the failed start leaves in the process (descriptors, locks, hooks) stays there.

usage: crash_failed_start.py SOCKET_DIR

The program first makes preallocated shm (before ``run``, as the master-to-be
may), then calls ``run`` on SOCKET_DIR, where the test has put a directory in
place of the control socket, so the master cannot listen and ``run`` fails. It
then removes that directory and calls ``run`` again. It prints one line,
``report JSON``, with:

- ``first_error``: the exception of the failed start (type and message);
- ``after_failure``: the entries of SOCKET_DIR right after it;
- ``record``: the text of the crash-cleanup record then (null if there is none);
- ``second_error``: the exception of the second start, or null if it worked;
- ``second_result``: what the second start returned;
- ``before_exists``: whether the preallocated shm still exists after both;
- ``leftover_warnings``: the warnings about a crashed master's leftovers.

The preallocated shm is released at the end, whatever happened.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

import netmcore


@netmcore.process
def noop(x: int) -> int:
    return x


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def start(sockdir: str) -> tuple[str | None, int | None]:
    try:
        result = netmcore.run(
            first_process=lambda: noop.start(5),
            extract_result=lambda _ctrl, pid: noop.join_nowait(pid),
            socket_directory=sockdir,
        )
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}", None
    return None, result


def main() -> None:
    sockdir = sys.argv[1]
    collect = Collect()
    logging.getLogger("netmcore").addHandler(collect)
    res_id, before = netmcore.create_preallocated_shm("/nmc_crashtest_pre_", 4096)
    try:
        first_error, _ = start(sockdir)
        record_path = os.path.join(sockdir, "netmcore.pmanage")
        report: dict[str, object] = {
            "first_error": first_error,
            "after_failure": sorted(os.listdir(sockdir)),
            "record": Path(record_path).read_text() if os.path.exists(record_path) else None,
        }
        os.rmdir(os.path.join(sockdir, "netmcore.sock"))
        second_error, second_result = start(sockdir)
        report["second_error"] = second_error
        report["second_result"] = second_result
        report["before_exists"] = os.path.exists("/dev/shm/" + before.lstrip("/"))
        report["leftover_warnings"] = [m for m in collect.messages if "crashed master" in m]
        sys.stdout.write("report " + json.dumps(report) + "\n")
        sys.stdout.flush()
    finally:
        netmcore.release(res_id)


if __name__ == "__main__":
    main()
