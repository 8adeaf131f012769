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


_handler: logging.Handler | None = None


def trace(msg: str, *args: object) -> None:
    """Log an event of upstream's debug trace, if ``Debug.enable`` is set."""
    if Debug.enable:
        _ensure_handler()
        log.debug("[%d] " + msg, os.getpid(), *args)


def _ensure_handler() -> None:
    global _handler
    if _handler is None:
        _handler = logging.StreamHandler(sys.stderr)
        _handler.setFormatter(logging.Formatter("netmcore: %(message)s"))
        log.addHandler(_handler)
    if log.level == logging.NOTSET or log.level > logging.DEBUG:
        log.setLevel(logging.DEBUG)
