"""The exceptions netmcore raises.

Every error derives from :class:`NetmcoreError` and, where one fits, from the
standard exception a caller would already catch (``LookupError`` for unknown
ids, ``TypeError`` for values of the wrong type, ``RuntimeError`` for calls made
in the wrong context).
"""

from __future__ import annotations

import errno
import reprlib
import threading
from typing import TYPE_CHECKING, Any

from ._outcome import Crashed, FailedWithOutcome, InvalidResult, Raised

if TYPE_CHECKING:
    from ._ids import ProcessId


class NetmcoreError(Exception):
    """Base class of every netmcore error."""


class NoResource(NetmcoreError, LookupError):
    """A resource id is unknown, released, or of the wrong kind.

    Attributes
    ----------
    res_id : ResId
        The id that was asked for.
    """

    def __init__(self, res_id: object, reason: str, *, other_kind: bool = False) -> None:
        # (A resource of another kind is there, but none of the kind asked for.)
        head = (
            f"resource {res_id!r} is of another kind" if other_kind else f"no resource {res_id!r}"
        )
        super().__init__(f"{head}: {reason}")
        self.res_id = res_id


class NotInherited(NoResource):
    """Preallocated memory that the calling process did not inherit: it was made
    after the process started, by the process itself, or left out of its
    ``inherit_resources``."""


class EncapTypeMismatch(NetmcoreError, TypeError):
    """An :class:`Encap` was unwrapped with an :class:`EncapType` of another type."""


class ArgumentTypeError(NetmcoreError, TypeError):
    """A value does not match the type its process or encap type declares.

    Attributes
    ----------
    path : str
        Where in the value the fault is, in msgspec's ``$.field[3].x`` style.
    """

    def __init__(self, message: str, path: str) -> None:
        super().__init__(message)
        self.path = path


class UnknownProcess(NetmcoreError, LookupError):
    """A process id is unknown: never started here, or already joined."""


class WrongJoinPoint(NetmcoreError, TypeError):
    """A process was joined through the join point of another process type."""


class ContextError(NetmcoreError, RuntimeError):
    """A call was made where it cannot work (outside ``run``, or in the master)."""


class ShuttingDown(NetmcoreError, RuntimeError):
    """A process was started after the first process ended and shutdown began."""


class SocketDirectoryError(NetmcoreError, OSError):
    """The socket directory cannot be used (in use, not private, not creatable)."""


class MasterGone(NetmcoreError, ConnectionError):
    """The connection to the master was lost: the master has ended."""


class PluginError(NetmcoreError, RuntimeError):
    """A plugin call that cannot be served: an unknown name, a mutex unlocked by
    a process that does not hold it, plugins not attached, a deleted variable."""


class BrokenBarrierError(NetmcoreError, threading.BrokenBarrierError):
    """A :class:`PluginBarrier` is broken: one of its parties failed, a wait
    timed out, or it was aborted or reset; until a ``reset()``, every wait
    raises it at once. (Also a ``threading.BrokenBarrierError``.)"""


class OwnerDiedError(NetmcoreError, RuntimeError):
    """A shared-memory mutex was taken from a holder that died while holding it.

    The caller now holds the mutex, which has been made consistent again: it
    may repair what the dead holder left half-done, then unlock as usual.
    """


class SendersEnded(NetmcoreError, EOFError):
    """A ``Mailbox.receive(while_alive=...)`` found the box empty once every
    process it waited on had ended: nothing more will come from them.
    ``pids`` are those processes."""

    def __init__(self, message: str, pids: tuple[ProcessId[Any], ...]) -> None:
        super().__init__(message)
        self.pids = pids

    @classmethod
    def of_box(cls, what: str, pids: tuple[ProcessId[Any], ...]) -> SendersEnded:
        """The error of ``what``, a box's receive, that waited for ``pids``."""
        return cls(
            f"{what}: the box is empty and {_all_ended(pids)}: nothing more will come from "
            "them (a join of each says how it ended). Receive without while_alive to wait "
            "for other senders",
            pids,
        )


def receivers_ended(what: str, pids: tuple[ProcessId[Any], ...]) -> BrokenPipeError:
    """The error of ``what``, a send to a full box that waited while
    ``pids`` (its receivers) ran, once every one of them has ended."""
    return BrokenPipeError(
        errno.EPIPE,
        f"{what}: the box is full and {_all_ended(pids)}: nothing will take this message "
        "(a join of each says how it ended). Send without while_alive to wait for other "
        "receivers",
    )


def _all_ended(pids: tuple[ProcessId[Any], ...]) -> str:
    """That the processes a box call waited for (its while_alive) have ended."""
    if len(pids) == 1:
        return f"process {pids[0].n}, which it waited for, has ended"
    numbers = reprlib.repr([pid.n for pid in pids])
    return f"the processes it waited for, {numbers}, have all ended"


class ResultTypeError(ArgumentTypeError):
    """A process returned a value that does not match its declared result type."""


# The errors the master reports to a worker travel by class name; this table
# turns the name back into the class on the worker's side.
REMOTE_ERRORS: dict[str, type[Exception]] = {
    cls.__name__: cls
    for cls in (
        UnknownProcess,
        WrongJoinPoint,
        PluginError,
        EncapTypeMismatch,
        ContextError,
        ShuttingDown,
        NetmcoreError,
        FileNotFoundError,
        PermissionError,
        FileExistsError,
        OSError,
        ValueError,
        TypeError,
    )
}


# How the note of a ProcessFailed that holds the process's traceback begins.
REMOTE_TRACEBACK = "The process's traceback:"


class ProcessFailed(NetmcoreError, FailedWithOutcome):
    """The process that ``ProcessDef.result`` joined ended without a result:
    ``outcome`` says how (a ``Raised``, an ``InvalidResult`` or a
    ``Crashed``), and ``pid`` which process it was. A ``Raised``'s remote
    traceback is a note of this exception, shown under its own."""

    def __init__(self, pid: ProcessId[Any], name: str, outcome: Raised | InvalidResult | Crashed):
        super().__init__(f"process {pid.n} ({name}) {outcome}")
        self.pid = pid
        self.outcome = outcome
        if isinstance(outcome, Raised) and outcome.traceback:
            self.add_note(f"{REMOTE_TRACEBACK}\n{outcome.traceback.rstrip()}")
