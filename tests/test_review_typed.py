"""Defects found by a review of the typed layer and the public API surface.

Each test fails because of one defect and passes once it is fixed. Process
types are defined at module level (they must exist before the master starts),
or inside a test when defining them is the thing under test.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import ipaddress
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, TypedDict, TypeVar

import msgspec
import pydantic
import pytest
from pydantic import ConfigDict, Field
from scenario import run_scenario

import netmcore

SUBPROCESS_TIMEOUT = 30  # a guard against a hung child, not an assertion

T = TypeVar("T")
O = TypeVar("O")  # noqa: E741


def _catch(fn: Any) -> list[str]:
    """Call ``fn``; ["none", repr(result)] or [exception class name, message]."""
    try:
        result = fn()
    except Exception as exc:
        return [type(exc).__name__, str(exc)]
    return ["none", repr(result)]


# --------------------------------------------------------------------------
# 1. Generic ProcessDef subclasses, specialised by a subclass
# --------------------------------------------------------------------------


class Identity(netmcore.ProcessDef[T, T]):
    """Generic in one type variable: ProcessDef[T, T]."""

    def run(self, arg: T) -> T:
        return arg


class IntIdentity(Identity[int]):
    pass


class FromInt(netmcore.ProcessDef[int, O]):
    """Specialised in its input only."""

    def run(self, arg: int) -> O:
        raise NotImplementedError


class IntToStr(FromInt[str]):
    def run(self, arg: int) -> str:
        return f"<{arg}>"


class Firsts(netmcore.ProcessDef[list[T], dict[str, T]]):
    """Generic, with the type variable inside the type arguments."""

    def run(self, arg: list[T]) -> dict[str, T]:
        return {"base": arg[0]}


class IntFirsts(Firsts[int]):
    def run(self, arg: list[int]) -> dict[str, int]:
        return {"sub": arg[0]}


@netmcore.process
def generic_scenario(_: int) -> list[list[str]]:
    return [
        _catch(lambda: IntIdentity.join_outcome(IntIdentity.start(3))),
        _catch(lambda: IntToStr.join_outcome(IntToStr.start(4))),
    ]


def test_a_specialised_generic_process_type_can_start_and_join() -> None:
    # Identity[int] and FromInt[str] are concrete process types for mypy
    # (IntIdentity.start(3) type-checks); at run time they were never
    # registered, and start raised AttributeError: no attribute 'input_type'.
    assert run_scenario(generic_scenario, 0) == [
        ["none", "Success(value=3)"],
        ["none", "Success(value='<4>')"],
    ]


@netmcore.process
def nested_generic_scenario(_: int) -> list[list[str]]:
    return [
        _catch(lambda: IntFirsts.join_outcome(IntFirsts.start([5]))),
        _catch(lambda: IntFirsts.start(["x"])),  # type: ignore[list-item]
    ]


def test_a_subclass_of_a_generic_process_type_runs_its_own_run_and_checks_its_own_types() -> None:
    # Firsts(ProcessDef[list[T], dict[str, T]]) was registered as a concrete
    # type over list[~T]; IntFirsts inherited its fork point, so starting
    # IntFirsts ran Firsts.run ({"base": 5}) and let ["x"] through.
    first, bad = run_scenario(nested_generic_scenario, 0)
    assert first == ["none", "Success(value={'sub': 5})"]
    assert bad[0] == "ArgumentTypeError"


def test_starting_a_generic_process_type_is_a_clear_type_error() -> None:
    # Was AttributeError: type object 'Identity' has no attribute 'input_type'.
    with pytest.raises(TypeError, match="Identity"):
        Identity.start(3)
    with pytest.raises(TypeError, match="ProcessDef"):
        netmcore.ProcessDef.start(3)


# --------------------------------------------------------------------------
# 2. Values msgspec cannot encode
# --------------------------------------------------------------------------


def test_an_unencodable_argument_is_an_argument_type_error() -> None:
    # Was a bare NotImplementedError from _encap._enc_hook, not ArgumentTypeError.
    with pytest.raises(netmcore.ArgumentTypeError):
        netmcore.EncapType(str).wrap(Path("/x"))  # type: ignore[arg-type]
    with pytest.raises(netmcore.ArgumentTypeError):
        netmcore.EncapType(list[int]).wrap([1, object()])  # type: ignore[list-item]


@netmcore.process
def returns_a_path(_: int) -> str:
    return Path("/x")  # type: ignore[return-value]


@netmcore.process
def unencodable_result_scenario(_: int) -> str:
    return type(returns_a_path.join_outcome(returns_a_path.start(0))).__name__


def test_an_unencodable_result_is_an_invalid_result() -> None:
    # A result that does not match Out gives InvalidResult (README); this one
    # gave Raised(NotImplementedError, "msgspec cannot encode PosixPath values").
    assert run_scenario(unencodable_result_scenario, 0) == "InvalidResult"


# --------------------------------------------------------------------------
# 3. Types msgspec and pydantic support that failed
# --------------------------------------------------------------------------


class AnyStruct(msgspec.Struct):
    x: object


@dataclasses.dataclass
class AnyDataclass:
    x: object


class AnyTypedDict(TypedDict):
    x: object


@pytest.mark.parametrize(
    ("typ", "value"),
    [
        pytest.param(AnyStruct, AnyStruct([1, "a"]), id="struct"),
        pytest.param(AnyDataclass, AnyDataclass({"k": 1}), id="dataclass"),
        pytest.param(AnyTypedDict, {"x": 2.5}, id="typeddict"),
    ],
)
def test_a_field_typed_object_is_allowed(typ: Any, value: Any) -> None:
    # list[object] and dict[str, object] work; an `object` field of a Struct,
    # dataclass or TypedDict raised "cannot be a process argument or result:
    # ... type <class 'object'> is not supported" (no JSON Schema for object).
    et = netmcore.EncapType(typ)
    assert et.unwrap(et.wrap(value)) == value


class PathModel(pydantic.BaseModel):
    path: Path


class UrlModel(pydantic.BaseModel):
    url: pydantic.AnyUrl


class IpModel(pydantic.BaseModel):
    ip: ipaddress.IPv4Address


class SecretModel(pydantic.BaseModel):
    secret: pydantic.SecretStr


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(PathModel(path=Path("/tmp/x")), id="Path"),
        pytest.param(UrlModel(url="https://example.org/a"), id="AnyUrl"),  # type: ignore[arg-type]
        pytest.param(IpModel(ip="10.0.0.1"), id="IPv4Address"),  # type: ignore[arg-type]
        pytest.param(SecretModel(secret="pw"), id="SecretStr"),  # type: ignore[arg-type]
    ],
)
def test_valid_pydantic_models_with_common_field_types_round_trip(value: Any) -> None:
    # model_dump(mode="python") keeps these objects, which msgspec cannot
    # encode: wrap raised NotImplementedError("msgspec cannot encode ... values").
    et = netmcore.EncapType(type(value))
    assert et.unwrap(et.wrap(value)) == value


class SerializationAlias(pydantic.BaseModel):
    count: int = Field(serialization_alias="Count")


class ValidationAlias(pydantic.BaseModel):
    count: int = Field(validation_alias="Count")


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(SerializationAlias(count=1), id="serialization_alias"),
        pytest.param(ValidationAlias(Count=1), id="validation_alias"),  # type: ignore[call-arg]
    ],
)
def test_pydantic_models_with_one_sided_aliases_round_trip(value: Any) -> None:
    # Dumped by serialization alias, validated by validation alias: a valid
    # model was refused with "Field required (pydantic field .count)".
    et = netmcore.EncapType(type(value))
    assert et.unwrap(et.wrap(value)) == value


class StrictModel(pydantic.BaseModel):
    model_config = ConfigDict(strict=True)
    n: int


def test_a_strict_model_is_validated_strictly_in_the_caller() -> None:
    # The caller's check validates in lax mode: an int field holding "5" (a
    # model_construct'ed value a strict model refuses) went through as 5.
    with pytest.raises(netmcore.ArgumentTypeError, match=r"\.n"):
        netmcore.EncapType(StrictModel).wrap(StrictModel.model_construct(n="5"))  # type: ignore[arg-type]


# --------------------------------------------------------------------------
# 4. Crashed outcomes for any signal
# --------------------------------------------------------------------------


RT_SIGNAL = int(signal.SIGRTMIN) + 2


def test_crashed_str_names_a_realtime_signal() -> None:
    # str() raised ValueError: 36 is not a valid Signals.
    text = str(netmcore.Crashed(None, RT_SIGNAL))
    assert str(RT_SIGNAL) in text or "SIGRTMIN" in text


@netmcore.process
def killed_by_realtime_signal(_: int) -> int:
    os.kill(os.getpid(), RT_SIGNAL)
    return 0


@netmcore.process
def realtime_signal_scenario(_: int) -> list[Any]:
    outcome = killed_by_realtime_signal.join_outcome(killed_by_realtime_signal.start(0))
    assert isinstance(outcome, netmcore.Crashed)
    return [outcome.signal, outcome.exitcode]


def test_a_worker_killed_by_a_realtime_signal_is_crashed_and_the_run_goes_on() -> None:
    # The master's _describe (netmcore/_master.py) called signal.Signals(36)
    # when it logged the end: run itself raised ValueError.
    assert run_scenario(realtime_signal_scenario, 0) == [RT_SIGNAL, None]


# --------------------------------------------------------------------------
# 5. @netmcore.process on functions that cannot be a process body
# --------------------------------------------------------------------------


def test_process_rejects_functions_that_cannot_take_the_argument_positionally() -> None:
    # Accepted, then every start raised in the worker:
    # "kw() takes 0 positional arguments but 1 was given".
    def keyword_only(*, x: int) -> int:
        return x

    def var_keyword(**kw: int) -> int:
        return len(kw)

    for f in (keyword_only, var_keyword):
        with pytest.raises(TypeError, match=f.__name__):
            netmcore.process(f)  # type: ignore[arg-type]


def test_process_rejects_a_coroutine_function() -> None:
    # Accepted with Out = int (mypy infers Coroutine[Any, Any, int]); every
    # start then ended in Raised(NotImplementedError, "msgspec cannot encode
    # coroutine values"), and a "never awaited" warning.
    async def fetch(x: int) -> int:
        return x

    with pytest.raises(TypeError, match="fetch"):
        netmcore.process(fetch)


def _add(x: int, y: int) -> int:
    return x + y


class _Doubler:
    def __call__(self, x: int) -> int:
        return 2 * x


@pytest.mark.parametrize(
    "f",
    [
        pytest.param(functools.partial(_add, y=1), id="partial"),
        pytest.param(_Doubler(), id="callable"),
    ],
)
def test_process_on_a_callable_without_qualname_gives_its_type_error(f: Any) -> None:
    # The error message itself read f.__qualname__: AttributeError
    # ("'functools.partial' object has no attribute '__qualname__'").
    with contextlib.suppress(TypeError):
        netmcore.process(f)


# --------------------------------------------------------------------------
# 6. A quoted forward reference in a ProcessDef's parameters
# --------------------------------------------------------------------------


class Point(msgspec.Struct):
    x: int
    y: int


def test_a_quoted_type_in_process_def_parameters_is_resolved() -> None:
    # mypy accepts ProcessDef["Point", int]; at run time the class statement
    # raised TypeError: ForwardRef('Point') cannot be a process argument or result.
    class NormOf(netmcore.ProcessDef["Point", int]):
        def run(self, arg: Point) -> int:
            return abs(arg.x) + abs(arg.y)

    assert NormOf.input_type.fingerprint == netmcore.EncapType(Point).fingerprint


# --------------------------------------------------------------------------
# 7. The schemas command on bad input
# --------------------------------------------------------------------------


def _schemas_cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "netmcore", "schemas", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=SUBPROCESS_TIMEOUT,
        check=False,
    )


@pytest.mark.parametrize(
    ("args", "named"),
    [
        pytest.param(("missing.py",), "missing.py", id="missing-file"),
        pytest.param(("no_such_module_here",), "no_such_module_here", id="missing-module"),
    ],
)
def test_schemas_of_a_missing_module_is_an_error_message_not_a_traceback(
    tmp_path: Path, args: tuple[str, ...], named: str
) -> None:
    result = _schemas_cli(tmp_path, *args)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr
    assert named in result.stderr


def test_schemas_out_that_is_a_file_is_an_error_message_not_a_traceback(tmp_path: Path) -> None:
    (tmp_path / "mod.py").write_text("import netmcore\nFLOAT = netmcore.EncapType(float)\n")
    (tmp_path / "out").write_text("")
    result = _schemas_cli(tmp_path, "mod.py", "--out", "out")
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr
    assert "out" in result.stderr
