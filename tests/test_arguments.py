"""Arguments that netmcore refuses before anything is forked, sent or made.

* The functions given to ``run`` and ``startup`` (``first_process``,
  ``extract_result``, ``init_ctrl``) must accept the call run makes: one that
  does not is a TypeError before the master forks anything, not after all the
  work is done.
* A ``ProcessDef`` subclass is checked when it is defined, as ``@process``
  checks a function: each worker calls ``cls().run(arg)``, so an ``__init__``
  that needs arguments, or a ``run`` that is async, a generator, or has no
  parameter for the argument, is a TypeError naming the class. Generic bases,
  which are not process types, are checked when they are specialised.
* The pidfile may not be a symbolic link (not even one made after run's
  checks), nor be in, be, or hold the socket directory.
* A value msgspec cannot encode is an ArgumentTypeError with the fix, before
  it is sent (a buffer that is not C-contiguous was msgspec's bare
  BufferError); a netmcore handle declared as a process's argument or result
  type is refused, naming what to pass instead; ``EncapType.unwrap`` names
  what it takes.

Each refusal is checked with ``os.fork`` failing if called (test_socketdir's
helper), so it must come before anything is forked.
"""

from __future__ import annotations

import errno
import gc
import inspect
import os
import socket
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Generic, TypedDict, TypeVar

import msgspec
import numpy as np
import pytest
from scenario import run_scenario
from test_socketdir import _no_fork

import netmcore
from netmcore import _runtime

T = TypeVar("T")


@netmcore.process
def echo(k: int) -> int:
    return k


def _run_echo(**kwargs: Any) -> Any:
    args: dict[str, Any] = {
        "first_process": lambda: echo.start(7),
        "extract_result": lambda _ctrl, pid: echo.join_nowait(pid),
    }
    return netmcore.run(**(args | kwargs))


# --------------------------------------------------------------------------
# The functions given to run and startup
# --------------------------------------------------------------------------


def _needs_a_keyword(*, k: int) -> netmcore.ProcessId[int]:
    return echo.start(k)


def _why_not_bound(f: Any) -> str:
    """Python's own reason why ``f()`` cannot be called, which the refusal
    quotes (3.13 says "missing a required keyword-only argument")."""
    try:
        inspect.signature(f).bind()
    except TypeError as exc:
        return str(exc)
    raise AssertionError(f"{f} takes no arguments")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param(
            {"extract_result": lambda pid: echo.join_nowait(pid)},
            "extract_result is called as extract_result(controller, pid), which "
            "<lambda>(pid) does not accept (too many positional arguments): give it two "
            "parameters, as in `extract_result=lambda ctrl, pid: P.join_nowait(pid)`",
            id="extract_result_without_ctrl",
        ),
        pytest.param(
            {"first_process": lambda k: echo.start(k)},
            "first_process is called as first_process(), which <lambda>(k) does not "
            "accept (missing a required argument: 'k'): give it no parameters, as in "
            "`first_process=lambda: P.start(arg)`",
            id="first_process_with_a_parameter",
        ),
        pytest.param(
            {"first_process": _needs_a_keyword},
            "first_process is called as first_process(), which _needs_a_keyword(*, k) "
            f"does not accept ({_why_not_bound(_needs_a_keyword)}): give it no parameters, "
            "as in `first_process=lambda: P.start(arg)`",
            id="first_process_with_a_keyword_only_parameter",
        ),
        pytest.param(
            {"init_ctrl": lambda: None},
            "init_ctrl is called as init_ctrl(controller), which <lambda>() does not "
            "accept (too many positional arguments): give it one parameter, as in "
            "`init_ctrl=lambda ctrl: ...`",
            id="init_ctrl_without_ctrl",
        ),
        pytest.param(
            {"init_ctrl": lambda ctrl, pid: None},
            "init_ctrl is called as init_ctrl(controller), which <lambda>(ctrl, pid) "
            "does not accept (missing a required argument: 'pid'): give it one "
            "parameter, as in `init_ctrl=lambda ctrl: ...`",
            id="init_ctrl_with_two_parameters",
        ),
    ],
)
def test_a_function_run_cannot_call_is_refused_before_anything_is_forked(
    monkeypatch: pytest.MonkeyPatch, kwargs: dict[str, Any], message: str
) -> None:
    _no_fork(monkeypatch)
    with pytest.raises(TypeError) as info:
        _run_echo(**kwargs)
    assert str(info.value) == message


def test_startup_refuses_a_function_it_cannot_call_before_anything_is_forked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _no_fork(monkeypatch)
    with pytest.raises(TypeError, match=r"^first_process is called as first_process\(\)"):
        netmcore.startup(first_process=lambda k: echo.start(k))
    with pytest.raises(TypeError, match=r"^init_ctrl is called as init_ctrl\(controller\)"):
        netmcore.startup(first_process=lambda: echo.start(1), init_ctrl=lambda: None)


def test_functions_that_accept_the_call_or_whose_signature_cannot_be_read_are_run() -> None:
    # A guard against refusing too much (it passes without the checks too):
    # defaults, *args, and a builtin without a readable signature (dir).
    def extract(ctrl: netmcore.Controller, *rest: Any, scale: int = 2) -> int | None:
        value = echo.join_nowait(rest[0])
        return None if value is None else value * scale

    def first(k: int = 5) -> netmcore.ProcessId[int]:
        return echo.start(k)

    assert _run_echo(first_process=first, extract_result=extract, init_ctrl=dir) == 10


# --------------------------------------------------------------------------
# ProcessDef subclasses
# --------------------------------------------------------------------------


def _init_with_an_argument() -> type:
    class Scaled(netmcore.ProcessDef[int, int]):
        def __init__(self, k: int) -> None:
            self.k = k

        def run(self, arg: int) -> int:
            return arg * self.k

    return Scaled


def _init_with_a_keyword() -> type:
    class Keyed(netmcore.ProcessDef[int, int]):
        def __init__(self, *, k: int) -> None:
            self.k = k

        def run(self, arg: int) -> int:
            return arg * self.k

    return Keyed


def _run_without_the_argument() -> type:
    class NoArg(netmcore.ProcessDef[int, int]):
        def run(self) -> int:  # type: ignore[override]
            return 1

    return NoArg


def _run_async() -> type:
    class Later(netmcore.ProcessDef[int, int]):
        async def run(self, arg: int) -> int:  # type: ignore[override]
            return arg

    return Later


def _run_a_generator() -> type:
    class Gen(netmcore.ProcessDef[int, list[int]]):
        def run(self, arg: int) -> Iterator[int]:  # type: ignore[override]
            yield arg

    return Gen


def _run_with_two_arguments() -> type:
    class Pair(netmcore.ProcessDef[int, int]):
        def run(self, arg: int, other: int) -> int:  # type: ignore[override]
            return arg + other

    return Pair


def _run_refused(q: str, reason: str, define_as: str = "def run(self, arg: int) -> int") -> str:
    return (
        f"{q}.run must be a plain method that takes the argument after self and returns "
        f"the result, as each worker calls `{q}().run(arg)`; {q}.run does not fit: "
        f"{reason}. Define it as `{define_as}`"
    )


def _init_refused(q: str, why: str = "missing a required argument: 'k'") -> str:
    return (
        f"{q} cannot be made without arguments (`{q}()`: {why}"
        f"), and each worker makes it as `{q}()` before it calls run: give every "
        f"parameter of {q}.__init__ a default, or pass what run needs in the argument "
        f"of {q}.start"
    )


@pytest.mark.parametrize(
    ("define", "message"),
    [
        pytest.param(
            _init_with_an_argument,
            _init_refused("_init_with_an_argument.<locals>.Scaled"),
            id="init_with_an_argument",
        ),
        pytest.param(
            _init_with_a_keyword,
            _init_refused(  # (its __init__ takes `*, k` as _needs_a_keyword does)
                "_init_with_a_keyword.<locals>.Keyed", _why_not_bound(_needs_a_keyword)
            ),
            id="init_with_a_keyword_only_argument",
        ),
        pytest.param(
            _run_without_the_argument,
            _run_refused(
                "_run_without_the_argument.<locals>.NoArg", "it has no parameter for the argument"
            ),
            id="run_without_the_argument",
        ),
        pytest.param(
            _run_async,
            _run_refused(
                "_run_async.<locals>.Later", "it is async, and a process runs a plain function"
            ),
            id="async_run",
        ),
        pytest.param(
            _run_a_generator,
            _run_refused(
                "_run_a_generator.<locals>.Gen",
                "it is a generator function (it has `yield`), and a process returns its "
                "result: collect the values and return them, as a list for example",
                "def run(self, arg: int) -> list[int]",
            ),
            id="generator_run",
        ),
        pytest.param(
            _run_with_two_arguments,
            _run_refused(
                "_run_with_two_arguments.<locals>.Pair",
                "its parameter `other` has no default, and the worker passes the argument alone",
            ),
            id="run_with_two_arguments",
        ),
    ],
)
def test_a_process_class_a_worker_cannot_call_is_refused_when_defined(
    monkeypatch: pytest.MonkeyPatch, define: Callable[[], type], message: str
) -> None:
    class Before(netmcore.ProcessDef[int, int]):
        def run(self, arg: int) -> int:
            return arg

    _no_fork(monkeypatch)
    with pytest.raises(TypeError) as info:
        define()
    assert str(info.value) == message

    # Nothing was registered for it: the next process type's ids follow on
    # from the last one's, none used up in between.
    class After(netmcore.ProcessDef[int, int]):
        def run(self, arg: int) -> int:
            return arg

    assert After.fork_point.n == Before.join_point.n + 1


class _NeedsScale(netmcore.ProcessDef[list[T], list[T]], Generic[T]):
    """A generic base: not a process type, so not checked until specialised."""

    def __init__(self, scale: int) -> None:
        self.scale = scale

    def run(self, arg: list[T]) -> list[T]:
        return arg * self.scale


class _Lazy(netmcore.ProcessDef[list[T], T], Generic[T]):
    def run(self) -> T:  # type: ignore[override]
        raise NotImplementedError


def test_a_generic_base_is_checked_when_it_is_specialised() -> None:
    with pytest.raises(TypeError, match=r"\.IntScale cannot be made without arguments") as info:

        class IntScale(_NeedsScale[int]):
            pass

    assert "give every parameter of _NeedsScale.__init__ a default" in str(info.value)
    with pytest.raises(TypeError, match=r"\.IntLazy\.run must be a plain method"):

        class IntLazy(_Lazy[int]):
            pass


class _Defaults(netmcore.ProcessDef[int, int]):
    def __init__(self, scale: int = 3, *extra: int, **options: int) -> None:
        self.scale = scale

    def run(self, arg: int, offset: int = 0) -> int:
        return arg * self.scale + offset


class _Static(netmcore.ProcessDef[int, int]):
    @staticmethod
    def run(arg: int) -> int:
        return -arg


def test_defaults_and_a_static_run_are_accepted_and_run() -> None:
    # A guard against refusing too much (it passes without the checks too).
    assert run_scenario(_Defaults, 2) == 6
    assert run_scenario(_Static, 2) == -2


def test_process_refuses_a_generator_function_when_applied() -> None:
    def numbers(k: int) -> list[int]:
        yield k  # type: ignore[misc]

    with pytest.raises(TypeError) as info:
        netmcore.process(numbers)
    assert str(info.value) == (
        "@netmcore.process needs a function of one annotated positional argument with an "
        "annotated return type, like `def f(x: int) -> int`; "
        "test_process_refuses_a_generator_function_when_applied.<locals>.numbers does not "
        "fit: it is a generator function (it has `yield`), and a process returns its "
        "result: collect the values and return them, as a list for example"
    )


# --------------------------------------------------------------------------
# The pidfile
# --------------------------------------------------------------------------


@pytest.mark.parametrize("target_exists", [False, True], ids=["dangling", "to_a_file"])
def test_a_pidfile_that_is_a_symbolic_link_is_refused_before_anything_is_made(
    short_tmp: Path, monkeypatch: pytest.MonkeyPatch, target_exists: bool
) -> None:
    target, link = short_tmp / "real.pid", short_tmp / "m.pid"
    if target_exists:
        target.write_text("someone else's\n")
    link.symlink_to(target)
    _no_fork(monkeypatch)
    with pytest.raises(ValueError) as info:
        _run_echo(pidfile=link)
    assert str(info.value) == (
        f"pidfile {str(link)!r} is a symbolic link (to {str(target)!r}), and run writes the "
        "pidfile itself and removes it at the end: name a file that is not a link, or "
        "remove the link first"
    )
    # The link stays, its target untouched: nothing else was made there.
    assert link.is_symlink()
    if target_exists:
        assert target.read_text() == "someone else's\n"
    assert sorted(os.listdir(short_tmp)) == (["m.pid", "real.pid"] if target_exists else ["m.pid"])


def test_a_pidfile_that_ends_with_a_slash_is_refused(
    short_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A directory's name: the slash was dropped, and a file of that name
    was written over, then removed at the end."""
    pidfile = short_tmp / "m.pid"
    pidfile.write_text("someone else's\n")
    _no_fork(monkeypatch)
    with pytest.raises(ValueError) as info:
        _run_echo(pidfile=f"{pidfile}/")
    assert str(info.value) == (
        f"pidfile {str(pidfile) + '/'!r} ends with a slash, as a directory's name does: name "
        "the file to write the master's pid to"
    )
    assert pidfile.read_text() == "someone else's\n"


def test_a_pidfile_that_is_not_a_regular_file_is_refused_before_anything_is_made(
    short_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A socket file: it cannot be opened for writing (a device could, and
    # would be unlinked at the end).
    pidfile = short_tmp / "m.pid"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(pidfile))
        _no_fork(monkeypatch)
        with pytest.raises(ValueError) as info:
            _run_echo(pidfile=pidfile)
    assert str(info.value) == (
        f"pidfile {str(pidfile)!r} exists and is not a regular file, and run writes the "
        "pidfile and removes it at the end: name a regular file, or one that does not "
        "exist yet"
    )
    assert stat.S_ISSOCK(os.lstat(pidfile).st_mode)


def test_a_pidfile_that_becomes_a_link_after_the_checks_is_not_written_through(
    short_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target, link = short_tmp / "real.pid", short_tmp / "m.pid"
    limit = _runtime.raise_fd_limit

    def link_then_limit() -> None:
        # Between run's checks and its writing of the pidfile, which comes after.
        link.symlink_to(target)
        limit()

    monkeypatch.setattr(_runtime, "raise_fd_limit", link_then_limit)
    with pytest.raises(OSError, match="became a symbolic link after run checked it") as info:
        _run_echo(pidfile=link)
    assert info.value.errno == errno.ELOOP
    gc.collect()  # what the failed run left to finalize warns here (an error), if anything
    assert not target.exists()
    assert link.is_symlink()  # not ours to remove: run did not make it


@pytest.mark.parametrize("reader", [False, True])
def test_a_pidfile_that_becomes_a_fifo_after_the_checks_is_not_written_to(
    short_tmp: Path, monkeypatch: pytest.MonkeyPatch, reader: bool
) -> None:
    # Before the fix, a FIFO with no reader made run wait for one for ever.
    pidfile = short_tmp / "m.pid"
    limit = _runtime.raise_fd_limit
    opened: list[int] = []

    def fifo_then_limit() -> None:
        os.mkfifo(pidfile)
        if reader:
            opened.append(os.open(pidfile, os.O_RDONLY | os.O_NONBLOCK))
        limit()

    monkeypatch.setattr(_runtime, "raise_fd_limit", fifo_then_limit)
    try:
        with pytest.raises(OSError, match=r"pidfile .* became .* after run checked it") as info:
            _run_echo(pidfile=pidfile)
        if reader:
            assert os.read(opened[0], 64) == b""  # nothing was written to it
    finally:
        for fd in opened:
            os.close(fd)
    gc.collect()
    assert info.value.errno == (errno.EINVAL if reader else errno.ENXIO)
    assert stat.S_ISFIFO(os.lstat(pidfile).st_mode)  # not ours to remove


@netmcore.process
def replace_pidfile(path: str) -> int:
    with open(path + ".new", "w") as f:
        f.write("another program's\n")
    os.replace(path + ".new", path)
    return 0


def test_a_pidfile_replaced_during_the_run_is_not_removed(short_tmp: Path) -> None:
    pidfile = short_tmp / "m.pid"
    netmcore.run(
        first_process=lambda: replace_pidfile.start(str(pidfile)),
        extract_result=lambda _ctrl, pid: replace_pidfile.join_nowait(pid),
        pidfile=pidfile,
    )
    assert pidfile.read_text() == "another program's\n"


@pytest.mark.parametrize(
    ("socket_directory", "pidfile", "where"),
    [
        pytest.param("sd", "sd", "is", id="the_directory"),
        pytest.param("sd", "sd/m.pid", "is inside", id="in_it"),
        pytest.param("sd", "sd/netmcore.sock", "is inside", id="its_socket"),
        pytest.param("sd", "sd/sub/m.pid", "is inside", id="below_it"),
        pytest.param("sd", "alias/m.pid", "is inside", id="in_it_through_a_link"),
        pytest.param("a/sd", "a", "is a parent directory of", id="holding_it"),
    ],
)
def test_a_pidfile_in_the_socket_directory_is_refused_before_anything_is_made(
    short_tmp: Path,
    monkeypatch: pytest.MonkeyPatch,
    socket_directory: str,
    pidfile: str,
    where: str,
) -> None:
    (short_tmp / "alias").symlink_to(short_tmp / "sd")
    if pidfile.startswith("sd/sub/"):
        (short_tmp / "sd" / "sub").mkdir(parents=True, mode=0o700)
    before = sorted(os.listdir(short_tmp))
    sd, pf = short_tmp / socket_directory, short_tmp / pidfile
    _no_fork(monkeypatch)
    with pytest.raises(ValueError) as info:
        _run_echo(socket_directory=sd, pidfile=pf)
    assert str(info.value) == (
        f"pidfile {str(pf)!r} {where} the socket directory {str(sd)!r}, which netmcore "
        "owns during the run (it makes it if missing, puts its control socket and lock "
        "file in it, and removes them at the end): name a pidfile outside it"
    )
    assert sorted(os.listdir(short_tmp)) == before  # no directory made


# --------------------------------------------------------------------------
# Values and types that cannot travel
# --------------------------------------------------------------------------


@netmcore.process
def length(data: bytes) -> int:
    return len(data)


@netmcore.process
def send_strided(_: int) -> dict[str, Any]:
    strided = memoryview(np.arange(20, dtype=np.int64)[::2])  # every other int64
    box = netmcore.Mailbox.create(bytes, slots=2, slot_size=1024)
    out: dict[str, Any] = {}
    for name, call in (
        ("start", lambda: length.start(strided)),
        ("wrap", lambda: netmcore.EncapType(bytes).wrap(strided)),
        ("send", lambda: box.send(strided)),
    ):
        try:
            call()
        except netmcore.ArgumentTypeError as exc:
            out[name] = [str(exc), exc.path]
    out["queued"] = box.qsize()  # nothing was sent
    box.release()
    # The failed start took no process id: nothing reached the master.
    pid = length.start(bytes(strided))
    out["next_pid"] = pid.n - netmcore.self_process_id().n
    out["length"] = length.join(pid)
    return out


def test_a_buffer_that_is_not_contiguous_is_an_argument_type_error_with_the_fix() -> None:
    """README: "A value msgspec cannot encode at all is an ArgumentTypeError
    in the caller". A strided memoryview given where bytes are declared was
    msgspec's bare BufferError, from start, EncapType.wrap and Mailbox.send."""
    out = run_scenario(send_strided, 0)
    for name, what in (
        ("start", "argument of length.start:"),
        ("wrap", "value"),
        ("send", "message"),
    ):
        message, path = out[name]
        assert message.startswith(f"{what} <memory at 0x"), message
        assert message.endswith(
            "> cannot be encoded as bytes: memoryview: underlying buffer is not "
            "C-contiguous; pass a contiguous copy: bytes(view), or "
            "numpy.ascontiguousarray(a)"
        ), message
        assert path == "$"
    assert out["queued"] == 0
    assert out["next_pid"] == 1
    assert out["length"] == 80


class _Job(msgspec.Struct):
    n: int
    out: netmcore.Buffer


_BY_RES_ID = "put its res_id (a netmcore.ResId) in it instead, and open it in the process with"


@pytest.mark.parametrize(
    ("typ", "handle", "fix"),
    [
        (netmcore.ShmMutex, "ShmMutex", f"{_BY_RES_ID} netmcore.ShmMutex.open(res_id)"),
        (netmcore.Mailbox[int], "Mailbox", f"{_BY_RES_ID} netmcore.Mailbox.open(res_id, T)"),
        (list[netmcore.ShmSegment], "ShmSegment", f"{_BY_RES_ID} netmcore.open_shm(res_id)"),
        (_Job, "Buffer", f"{_BY_RES_ID} netmcore.Buffer.open(res_id)"),
        (
            netmcore.PluginMutex,
            "PluginMutex",
            "put its name (a str) in it instead, and open it in the process with "
            "netmcore.PluginMutex(name)",
        ),
        (
            netmcore.PluginBarrier,
            "PluginBarrier",
            "put its name (a str) and parties in it instead, and open it in the process "
            "with netmcore.PluginBarrier(name, parties)",
        ),
    ],
    ids=[
        "ShmMutex",
        "Mailbox",
        "list-of-ShmSegment",
        "Struct-field",
        "PluginMutex",
        "PluginBarrier",
    ],
)
@pytest.mark.parametrize("side", ["argument", "result"])
def test_a_netmcore_handle_as_a_process_type_is_refused_naming_what_to_pass(
    typ: Any, handle: str, fix: str, side: str
) -> None:
    """A handle holds this process's mapping of its object (or is bound to a
    name and type): what names the object travels, also from a Struct's
    field. The error said only "not supported", with advice on msgspec's types."""
    arg, result = (typ, int) if side == "argument" else (int, typ)
    with pytest.raises(TypeError) as info:

        class _Bad(netmcore.ProcessDef[arg, result]):  # type: ignore[valid-type]
            def run(self, arg: Any) -> Any:
                return arg

    message = str(info.value)
    assert " cannot be a process argument or result: type <class " in message
    assert message.endswith(f"is not supported; for a netmcore.{handle}, {fix}"), message


def test_unwrap_names_what_it_takes() -> None:
    """unwrap of what is not an Encap was an AttributeError, and of an Encap
    whose data does not decode as its fingerprint's type (built by hand) a
    bare msgspec.ValidationError. Another type's Encap is still
    EncapTypeMismatch."""
    ints = netmcore.EncapType(list[int])
    with pytest.raises(TypeError) as info:
        ints.unwrap(b"\x91\x01")  # type: ignore[arg-type]
    assert not isinstance(info.value, AttributeError)
    assert str(info.value) == (
        "EncapType(list[int]).unwrap takes an Encap, not bytes b'\\x91\\x01': pass what "
        "EncapType(list[int]).wrap(value) returned (msgpack bytes that "
        "EncapType(list[int]).encode made are read by EncapType(list[int]).decode(data))"
    )
    forged = netmcore.Encap(ints.name, ints.fingerprint, (b"\x92\x01\xa1x",))  # [1, "x"]
    with pytest.raises(netmcore.ArgumentTypeError) as error:
        ints.unwrap(forged)
    assert error.value.path == "$[1]"
    assert str(error.value) == (
        "value does not match list[int]: Expected `int`, got `str` - at `$[1]`"
    )
    with pytest.raises(netmcore.EncapTypeMismatch):
        ints.unwrap(netmcore.EncapType(int).wrap(1))
    assert ints.unwrap(ints.wrap([1, 2])) == [1, 2]


class Job(msgspec.Struct):
    r0: int
    label: str = "a label long enough that the value's repr is clipped"


class Cell(msgspec.Struct, array_like=True):
    x: int
    y: int


class TaggedCell(msgspec.Struct, array_like=True, tag=True):
    x: int
    y: int


class Counts(TypedDict):
    k: int


class Lazy(dict[str, Any]):
    """A mapping whose own item lookup fails: msgspec reads it without it."""

    def __getitem__(self, key: str) -> Any:
        raise RuntimeError("lazy")


def _refusal(typ: Any, value: Any) -> str:
    with pytest.raises(netmcore.ArgumentTypeError) as error:
        netmcore.EncapType(typ).wrap(value)
    return str(error.value)


def test_a_nested_fault_names_the_value_at_its_path() -> None:
    """The message shows the whole value clipped to 60 characters, which may
    not reach the part at fault: that part is named after the path. Before:
    "... - at `$[1].r0`" alone, 0.0 nowhere in sight."""
    jobs = _refusal(list[Job], [Job(1), Job(0.0)])  # type: ignore[arg-type]
    assert jobs.endswith("Expected `int`, got `float` - at `$[1].r0`, where the value is 0.0")
    assert "0.0" not in jobs.split(" does not match ")[0]  # clipped out of the whole
    assert _refusal(dict[str, list[int]], {"k": [1, "two"]}).endswith(
        "- at `$[...][1]`"  # a dict's values are not told apart: no value named
    )
    assert _refusal(tuple[int, Cell], (1, Cell(2, "y"))).endswith(  # type: ignore[arg-type]
        "- at `$[1][1]`, where the value is 'y'"
    )
    assert _refusal(TaggedCell, TaggedCell("x", 2)).endswith(  # type: ignore[arg-type]
        "- at `$[1]`, where the value is 'x'"  # [0] is the tag
    )
    assert _refusal(list[int], ["top"]).endswith("- at `$[0]`, where the value is 'top'")
    assert _refusal(list[Counts], [Lazy(k="x")]).endswith("- at `$[0].k`")  # none named
    assert _refusal(int, "top").endswith("Expected `int`, got `str`")  # the whole is the part
