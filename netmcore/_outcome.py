"""How a process ended, as :meth:`ProcessDef.join_outcome` reports it.

``join`` keeps upstream's answer: the result, or None. An outcome tells the
cases apart::

    match Square.join_outcome(pid):
        case netmcore.Success(value):
            ...
        case netmcore.Raised(type_name, message, traceback):
            ...   # raised.is_a(OSError): whether `except OSError` would have caught it
        case netmcore.InvalidResult(path, message):
            ...
        case netmcore.Crashed(exitcode, signum):
            ...   # both None: its exit status was lost (see Crashed)
"""

from __future__ import annotations

import signal as _signal
from dataclasses import dataclass, field
from typing import Generic, TypeVar

# How many of an exception's classes travel (its MRO, without object), and
# how many characters of each name: with its message and traceback (see
# _worker.TEXT_MAX) they fit one message to the master. A deeper hierarchy
# keeps its nearest and its farthest classes.
CLASSES_MAX = 64
NAME_MAX = 200

# Covariant: an outcome is read, never written, so an Outcome[int] is an
# Outcome[float] or an Outcome[object] (a helper over outcomes of any type).
T = TypeVar("T", covariant=True)


@dataclass(frozen=True, slots=True)
class Success(Generic[T]):
    """The process returned ``value``."""

    value: T


@dataclass(frozen=True, slots=True)
class Raised:
    """The process raised an exception; ``traceback`` is the remote traceback
    text, and ``classes`` the qualified names of the exception's classes, its
    own first (its MRO, without ``object``): what :meth:`is_a` tells by."""

    type_name: str
    message: str
    traceback: str
    classes: tuple[str, ...] = field(default=(), compare=False)

    def is_a(self, typ: type[BaseException], *more: type[BaseException]) -> bool:
        """Whether the exception is an instance of one of the classes given,
        as an ``except`` of them would tell: ``raised.is_a(OSError)`` for a
        FileNotFoundError. The exception itself does not travel (nothing is
        unpickled), so its classes are told by their qualified names, which
        are those of the same classes in every process of a run (each a
        copy of the master). Two classes of one qualified name (made by one
        factory function called twice) are one here."""
        types = (typ, *more)
        check_exception_classes("is_a", types)
        return any(class_name(typ) in self.classes for typ in types)

    def __str__(self) -> str:
        return f"raised {self.type_name}: {self.message}"


def check_exception_classes(call: str, types: tuple[object, ...]) -> None:
    """TypeError, before anything is told, for one of ``types`` (given to
    ``call``) that is not an exception class."""
    for typ in types:
        if not (isinstance(typ, type) and issubclass(typ, BaseException)):
            raise TypeError(
                f"{call}({typ!r}): {typ!r} is not an exception class; give the classes an "
                f"except clause would name, like {call}(OSError, ValueError)"
            )


def class_name(cls: type) -> str:
    """``ValueError``, ``json.decoder.JSONDecodeError``: a class as an
    outcome names it, by its qualified name, encodable; one over NAME_MAX
    characters cut to its head and tail, the same cut in every process, so
    that :meth:`Raised.is_a` still finds it."""
    name = (
        cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
    )
    if not name.isascii():  # a lone surrogate, as type() takes one, would not encode
        name = name.encode("utf-8", "backslashreplace").decode("utf-8")
    if len(name) > NAME_MAX:
        half = NAME_MAX // 2
        name = f"{name[:half]}...{name[-half:]}"
    return name


def exception_classes(cls: type[BaseException]) -> tuple[str, ...]:
    """The names of ``cls``'s classes, as a ``Raised`` holds them."""
    mro = cls.__mro__[:-1]
    if len(mro) > CLASSES_MAX:
        mro = mro[: CLASSES_MAX // 2] + mro[-CLASSES_MAX // 2 :]
    return tuple(class_name(c) for c in mro)


@dataclass(frozen=True, slots=True)
class InvalidResult:
    """The process returned a value that does not match its result type.

    ``path`` locates the fault in msgspec's ``$.field[3].x`` style.
    """

    path: str
    message: str

    def __str__(self) -> str:
        return f"invalid result at {self.path}: {self.message}"


@dataclass(frozen=True, slots=True)
class Crashed:
    """The process ended without a result: it exited (``exitcode``) or was
    killed (``signal``). Both are None when its exit status is lost: another
    part of the program reaped it before the master could (a SIGCHLD handler,
    ``os.wait()``); or when it never ran: its start had its id, and then no
    process could be forked for it (the log says so)."""

    exitcode: int | None
    signal: int | None

    def __str__(self) -> str:
        if self.signal is not None:
            return f"killed by {signal_name(self.signal)}"
        if self.exitcode is None:
            return (
                "ended before returning, its exit status unknown (reaped by another "
                "part of the program, or never forked: the log says which)"
            )
        return f"exited with code {self.exitcode} before returning"


def signal_name(signum: int) -> str:
    """``SIGKILL``, ``SIGRTMIN+2``, or ``signal 99``: any number a process may die of."""
    try:
        return _signal.Signals(signum).name
    except ValueError:  # the real-time signals have no names in the enum
        if _signal.SIGRTMIN <= signum <= _signal.SIGRTMAX:
            return f"SIGRTMIN+{signum - _signal.SIGRTMIN}"
        return f"signal {signum}"


Outcome = Success[T] | Raised | InvalidResult | Crashed


class FailedWithOutcome:
    """A failure that says how it came in ``outcome``: a process's
    (``ProcessFailed``), a pipeline's item's (``PipelineError``,
    ``ItemFailure``)."""

    __slots__ = ()
    outcome: Raised | InvalidResult | Crashed

    def raised(self, typ: type[BaseException], *more: type[BaseException]) -> bool:
        """Whether the process (or the item's run) raised an instance of one
        of the classes given, as an ``except`` of them would have caught it
        there (see :meth:`Raised.is_a`); False if it did not raise (it
        crashed, or its result was invalid)::

            try:
                value = Lookup.result(pid)
            except netmcore.ProcessFailed as failed:
                if not failed.raised(KeyError):
                    raise
                value = default
        """
        check_exception_classes("raised", (typ, *more))  # (named so, whatever the outcome)
        outcome = self.outcome
        return isinstance(outcome, Raised) and outcome.is_a(typ, *more)
