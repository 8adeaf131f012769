"""netmcore: multi-core compute jobs with a lean master and typed, forked workers.

A Python take on Ocamlnet's Netmulticore. See the README for a tour.
"""

from __future__ import annotations

import contextlib
import typing

import msgspec

from ._buffer import Buffer as Buffer
from ._client import join as join
from ._client import join_nowait as join_nowait
from ._client import kill as kill
from ._client import self_process_id as self_process_id
from ._client import start as start
from ._completed import as_completed as as_completed
from ._debug import Debug as Debug
from ._encap import Encap as Encap
from ._encap import EncapType as EncapType
from ._errors import ArgumentTypeError as ArgumentTypeError
from ._errors import BrokenBarrierError as BrokenBarrierError
from ._errors import ContextError as ContextError
from ._errors import EncapTypeMismatch as EncapTypeMismatch
from ._errors import MasterGone as MasterGone
from ._errors import NetmcoreError as NetmcoreError
from ._errors import NoResource as NoResource
from ._errors import NotInherited as NotInherited
from ._errors import OwnerDiedError as OwnerDiedError
from ._errors import PluginError as PluginError
from ._errors import ProcessFailed as ProcessFailed
from ._errors import ResultTypeError as ResultTypeError
from ._errors import SendersEnded as SendersEnded
from ._errors import ShuttingDown as ShuttingDown
from ._errors import SocketDirectoryError as SocketDirectoryError
from ._errors import UnknownProcess as UnknownProcess
from ._errors import WrongJoinPoint as WrongJoinPoint
from ._ids import ProcessId as ProcessId
from ._ids import ResId as ResId
from ._mailbox import Mailbox as Mailbox
from ._master import Controller as Controller
from ._outcome import Crashed as Crashed
from ._outcome import InvalidResult as InvalidResult
from ._outcome import Outcome as Outcome
from ._outcome import Raised as Raised
from ._outcome import Success as Success
from ._pipeline import ItemFailure as ItemFailure
from ._pipeline import Pipeline as Pipeline
from ._pipeline import PipelineError as PipelineError
from ._pipeline import PipelineRun as PipelineRun
from ._pipeline import StageWorkerError as StageWorkerError
from ._plugins import Mbox as Mbox
from ._plugins import PluginBarrier as PluginBarrier
from ._plugins import PluginMutex as PluginMutex
from ._plugins import PluginSemaphore as PluginSemaphore
from ._plugins import SharedVar as SharedVar
from ._plugins import add_plugins as add_plugins
from ._process import ProcessDef as ProcessDef
from ._process import process as process
from ._registry import def_process as def_process
from ._resource_api import ComputeResource as ComputeResource
from ._resource_api import PosixSemaphore as PosixSemaphore
from ._resource_api import ShmSegment as ShmSegment
from ._resource_api import create_preallocated_shm as create_preallocated_shm
from ._resource_api import create_sem as create_sem
from ._resource_api import create_shm as create_shm
from ._resource_api import destroy_resources as destroy_resources
from ._resource_api import get_file as get_file
from ._resource_api import get_resource as get_resource
from ._resource_api import get_sem as get_sem
from ._resource_api import get_shm as get_shm
from ._resource_api import hand_over as hand_over
from ._resource_api import manage_file as manage_file
from ._resource_api import manage_sem as manage_sem
from ._resource_api import manage_shm as manage_shm
from ._resource_api import open_sem as open_sem
from ._resource_api import open_shm as open_shm
from ._resource_api import release as release
from ._resources import File as File
from ._resources import PosixSem as PosixSem
from ._resources import PosixShm as PosixShm
from ._resources import PosixShmPreallocated as PosixShmPreallocated
from ._resources import ProcessPoint as ProcessPoint
from ._resources import ResourceType as ResourceType
from ._runtime import run as run
from ._runtime import startup as startup
from ._shared_array import SharedArray as SharedArray
from ._shm_sync import ShmCondition as ShmCondition
from ._shm_sync import ShmMutex as ShmMutex

__all__ = (
    "ArgumentTypeError",
    "BrokenBarrierError",
    "Buffer",
    "ComputeResource",
    "ContextError",
    "Controller",
    "Crashed",
    "Debug",
    "Encap",
    "EncapType",
    "EncapTypeMismatch",
    "File",
    "InvalidResult",
    "ItemFailure",
    "Mailbox",
    "MasterGone",
    "Mbox",
    "NetmcoreError",
    "NoResource",
    "NotInherited",
    "Outcome",
    "OwnerDiedError",
    "Pipeline",
    "PipelineError",
    "PipelineRun",
    "PluginBarrier",
    "PluginError",
    "PluginMutex",
    "PluginSemaphore",
    "PosixSem",
    "PosixSemaphore",
    "PosixShm",
    "PosixShmPreallocated",
    "ProcessDef",
    "ProcessFailed",
    "ProcessId",
    "ProcessPoint",
    "Raised",
    "ResId",
    "ResourceType",
    "ResultTypeError",
    "SendersEnded",
    "SharedArray",
    "SharedVar",
    "ShmCondition",
    "ShmMutex",
    "ShmSegment",
    "ShuttingDown",
    "SocketDirectoryError",
    "StageWorkerError",
    "Success",
    "UnknownProcess",
    "WrongJoinPoint",
    "add_plugins",
    "as_completed",
    "create_preallocated_shm",
    "create_sem",
    "create_shm",
    "def_process",
    "destroy_resources",
    "get_file",
    "get_resource",
    "get_sem",
    "get_shm",
    "hand_over",
    "join",
    "join_nowait",
    "kill",
    "manage_file",
    "manage_sem",
    "manage_shm",
    "open_sem",
    "open_shm",
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
            if isinstance(obj, type) and issubclass(obj, msgspec.Struct):
                # msgspec looks a Struct's field types up in its __module__, when
                # it is first used: resolved in their own module first, they need
                # not be names of netmcore's (SharedArray's Literal).
                found = typing.get_type_hints(obj, include_extras=True)
                obj.__annotations__ = {name: found[name] for name in obj.__annotations__}
            with contextlib.suppress(AttributeError, TypeError):
                obj.__module__ = "netmcore"


_fixup_module_metadata()
