"""Which kind of netmcore process this is: none, the master, or a worker."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, NoReturn

from ._errors import ContextError
from ._pthread import this_pid

if TYPE_CHECKING:
    from ._master import Master
    from ._wire import Link


@dataclass
class Context:
    role: Literal["none", "master", "worker"] = "none"
    master: Master | None = None
    link: Link | None = None
    process_id: int | None = None
    shm_prefix: str = ""
    master_thread: int | None = None  # the thread that runs run(): the master's loop


current = Context()


def in_master_loop() -> bool:
    """Whether this thread runs the master's loop (and its own code, such as
    ``first_process``). The master serves every worker's request there, so a
    wait for something a worker does (or opens) would never end. Another
    thread of the master's process may wait: the loop goes on meanwhile."""
    return current.role == "master" and threading.get_ident() == current.master_thread


def refuse_other_master_thread(what: str, owns: str) -> None:
    """ContextError if this thread is another thread of the master's process
    than the loop's: the master's tables (``owns``) have no lock, and the
    loop changes them meanwhile. The master's own code runs in the loop's.
    So is a child that the master's own code forked: it has a copy of the
    tables, which no worker talks to, and starts of its own would be forks
    that no master tracks."""
    if current.role != "master":
        return
    master = current.master
    if master is not None and master.os_pid != this_pid[0]:
        raise ContextError(
            f"{what} was called in a child that the master's own code forked (os pid "
            f"{this_pid[0]}): only the master serves netmcore's calls there. Start a "
            "netmcore process instead of forking, or make the call in the master itself"
        )
    if not in_master_loop():
        raise ContextError(
            f"{what} was called in another thread of the master's process: the master's "
            f"loop owns {owns}; call it in the master's own code (init_ctrl, "
            "first_process, extract_result) or in a worker"
        )


def refuse_wait_in_master(what: str) -> NoReturn:
    """Raise ContextError for ``what``, which would wait where
    :func:`in_master_loop` is true."""
    raise ContextError(
        f"{what} would wait in the master, which never blocks: while it waits, no "
        "worker's request is served, and what it waits for may need one. "
        "Wait in a worker (start a process for it), or only take what is "
        "already there in the master"
    )
