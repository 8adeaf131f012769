"""netmcore: multi-core compute jobs with a lean master and typed, forked workers.

A Python take on Ocamlnet's Netmulticore. See the README for a tour.
"""

from __future__ import annotations

import contextlib

from ._client import join as join
from ._client import join_nowait as join_nowait
from ._client import release as release
from ._client import self_process_id as self_process_id
from ._client import start as start
from ._debug import Debug as Debug
from ._encap import Encap as Encap
from ._encap import EncapType as EncapType
from ._errors import ArgumentTypeError as ArgumentTypeError
from ._errors import ContextError as ContextError
from ._errors import EncapTypeMismatch as EncapTypeMismatch
from ._errors import MasterGone as MasterGone
from ._errors import NetmcoreError as NetmcoreError
from ._errors import NoResource as NoResource
from ._errors import ResultTypeError as ResultTypeError
from ._errors import ShuttingDown as ShuttingDown
from ._errors import SocketDirectoryError as SocketDirectoryError
from ._errors import UnknownProcess as UnknownProcess
from ._errors import WrongJoinPoint as WrongJoinPoint
from ._ids import ProcessId as ProcessId
from ._ids import ResId as ResId
from ._master import Controller as Controller
from ._outcome import Crashed as Crashed
from ._outcome import InvalidResult as InvalidResult
from ._outcome import Outcome as Outcome
from ._outcome import Raised as Raised
from ._outcome import Success as Success
from ._process import ProcessDef as ProcessDef
from ._process import process as process
from ._registry import def_process as def_process
from ._runtime import run as run
from ._runtime import startup as startup

__all__ = (
    "ArgumentTypeError",
    "ContextError",
    "Controller",
    "Crashed",
    "Debug",
    "Encap",
    "EncapType",
    "EncapTypeMismatch",
    "InvalidResult",
    "MasterGone",
    "NetmcoreError",
    "NoResource",
    "Outcome",
    "ProcessDef",
    "ProcessId",
    "Raised",
    "ResId",
    "ResultTypeError",
    "ShuttingDown",
    "SocketDirectoryError",
    "Success",
    "UnknownProcess",
    "WrongJoinPoint",
    "def_process",
    "join",
    "join_nowait",
    "process",
    "release",
    "run",
    "self_process_id",
    "start",
    "startup",
)


def _fixup_module_metadata() -> None:
    # Tracebacks and reprs then say netmcore.X, the name users import (as trio does).
    for name in __all__:
        obj = globals()[name]
        if getattr(obj, "__module__", "").startswith("netmcore._"):
            with contextlib.suppress(AttributeError, TypeError):
                obj.__module__ = "netmcore"


_fixup_module_metadata()
