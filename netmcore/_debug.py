"""Logging: errors always, upstream's trace of events when ``Debug.enable`` is set."""

from __future__ import annotations

import logging
import os
import sys

log = logging.getLogger("netmcore")


class Debug:
    """Set ``netmcore.Debug.enable = True`` to log every start, deliver, join,
    forget and worker end to stderr, in the master and in the workers.

    Set it before ``run``: workers are copies of the master and inherit it.
    """

    enable: bool = False


_handler_set = False


def trace(msg: str, *args: object) -> None:
    """Log an event of upstream's debug trace, if ``Debug.enable`` is set."""
    if Debug.enable:
        _ensure_handler()
        log.debug("netmcore: [%d] " + msg, os.getpid(), *args)


def _ensure_handler() -> None:
    """Send the trace to stderr: through the program's own logging handlers
    if it has set some (a handler of ours as well would print each line
    twice), else through one of ours. Like every netmcore message, each
    starts with "netmcore: "."""
    global _handler_set
    if not _handler_set:
        _handler_set = True
        if not log.hasHandlers():
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(logging.Formatter("%(message)s"))
            log.addHandler(handler)
    if log.level == logging.NOTSET or log.level > logging.DEBUG:
        log.setLevel(logging.DEBUG)
