"""Contracts between processes: types, schemas, fingerprints, validation at every boundary.

Process types are defined at module level (they must exist before the master
starts). A round trip through real processes runs a *relay* as the first
process: it starts an *echo* of the same type, joins it and returns what it got,
so the value crosses four process boundaries (master -> relay -> echo -> relay
-> master) and is decoded, hence validated, by each receiver.

Sections:

1. Round trips, through EncapType and through real processes, for every kind of type.
2. Hypothesis: ``unwrap(wrap(v)) == v`` for generated values of msgspec types.
3. Invalid arguments: rejected in the caller, exact ``.path``, nothing started.
4. Invalid results: ``join`` gives None, ``InvalidResult(path, message)``, the worker logs it.
5. Fingerprints.
6. Schema files: ``netmcore schemas``, ``--check``, drift.
7. ``ProcessDef.contract()`` and ``input_type.schema``.
8. ``python -m netmcore --help`` and the subcommands' help.
9. Process types from generic bases, quoted types, and what ``@process`` accepts.
10. pydantic models that need care: aliases, computed fields, strict models.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import ipaddress
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import textwrap
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal, TypedDict, TypeVar

import msgspec
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import (
    AnyUrl,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    computed_field,
    field_validator,
)
from scenario import run_scenario

import netmcore
from netmcore import (
    ArgumentTypeError,
    EncapType,
)
from netmcore import __main__ as cli_main

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))
SCHEMAS = ROOT / "schemas"
SUBPROCESS_TIMEOUT = 30  # a guard against a hung child, not an assertion

# --------------------------------------------------------------------------
# Types
# --------------------------------------------------------------------------

NonNeg = Annotated[int, msgspec.Meta(ge=0)]
ShortName = Annotated[str, msgspec.Meta(min_length=1, max_length=5)]


class Color(enum.StrEnum):
    RED = "red"
    GREEN = "green"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


class Inner(msgspec.Struct, frozen=True):
    v: int
    tags: tuple[str, ...] = ()


class Outer(msgspec.Struct):
    name: str
    inner: Inner
    items: list[Inner] = msgspec.field(default_factory=list)
    maybe: Inner | None = None


class Order(msgspec.Struct):
    name: str
    items: list[int]
    count: NonNeg = 0


@dataclasses.dataclass
class Box:
    w: float
    h: float
    label: str = ""


class Movie(TypedDict):
    title: str
    year: int


class Address(BaseModel):
    city: str
    zip: str = Field(pattern=r"^\d{5}$")


class Person(BaseModel):
    name: str = Field(min_length=1)
    age: int = Field(ge=0, le=150)
    address: Address
    tags: list[str] = []

    @field_validator("name")
    @classmethod
    def no_exclamation(cls, v: str) -> str:
        if "!" in v:
            raise ValueError("no exclamation marks in names")
        return v.title()


class Measure(BaseModel):
    when: datetime
    id: uuid.UUID
    amount: Decimal
    data: bytes
    color: Color
    level: Level
    span: timedelta
    pair: tuple[int, str]
    ids: set[int]


class Envelope(msgspec.Struct):
    person: Person
    note: str


# A field typed `object` holds any value msgspec can encode, as in list[object].
class AnyStruct(msgspec.Struct):
    x: object


@dataclasses.dataclass
class AnyDataclass:
    x: object


class AnyTypedDict(TypedDict):
    x: object


# Fields whose values msgpack cannot hold: they travel in their JSON form.
class Locator(BaseModel):
    path: Path
    url: AnyUrl
    ip: ipaddress.IPv4Address
    secret: SecretStr


HOME = Address(city="Paris", zip="75001")
ADA = Person(name="ada", age=36, address=HOME, tags=["math"])
ALAN = Person(name="alan", age=41, address=Address(city="London", zip="12345"))
MEASURE = Measure(
    when=datetime(2024, 5, 6, 7, 8, 9, 10, tzinfo=UTC),
    id=uuid.UUID(int=42),
    amount=Decimal("12.50"),
    data=b"\x00\xff\x80",
    color=Color.GREEN,
    level=Level.HIGH,
    span=timedelta(days=2, seconds=3),
    pair=(1, "a"),
    ids={1, 2, 3},
)
LOCATOR = Locator(
    path=Path("/tmp/x"),
    url=AnyUrl("https://example.org/a"),
    ip=ipaddress.IPv4Address("10.0.0.1"),
    secret=SecretStr("pw"),  # equal only to a SecretStr of the same secret: never masked
)
OUTER = Outer(
    "o",
    Inner(1, ("a", "b")),
    [Inner(2), Inner(3, ("c",))],
    Inner(4),
)


def _unvalidated_person(**changes: Any) -> Person:
    """A Person built without running its validators (as a buggy caller could)."""
    fields: dict[str, Any] = {"name": "Ada", "age": 36, "address": HOME, "tags": []}
    fields.update(changes)
    return Person.model_construct(**fields)


# (id, type, value, expected after a round trip)
ROUND_TRIPS: list[tuple[str, Any, Any, Any]] = [
    ("int", int, 42, 42),
    ("int_min", int, -(2**63), -(2**63)),
    ("int_max", int, 2**64 - 1, 2**64 - 1),
    ("float", float, 2.5, 2.5),
    ("float_inf", float, float("-inf"), float("-inf")),
    ("float_from_int", float, 3, 3.0),
    ("str", str, "héllo ☃", "héllo ☃"),
    ("str_empty", str, "", ""),
    ("bytes", bytes, b"\x00\xff\x10", b"\x00\xff\x10"),
    ("bool_true", bool, True, True),
    ("bool_false", bool, False, False),
    ("none", type(None), None, None),
    ("tuple", tuple[int, str, float], (1, "a", 2.5), (1, "a", 2.5)),
    ("tuple_var", tuple[int, ...], (1, 2, 3), (1, 2, 3)),
    ("list", list[int], [1, 2, 3], [1, 2, 3]),
    ("list_nested", list[list[str]], [["a"], [], ["b", "c"]], [["a"], [], ["b", "c"]]),
    ("dict", dict[str, int], {"a": 1, "b": 2}, {"a": 1, "b": 2}),
    ("dict_int_keys", dict[int, str], {1: "a", -2: "b"}, {1: "a", -2: "b"}),
    ("set", set[int], {1, 2, 3}, {1, 2, 3}),
    ("frozenset", frozenset[str], frozenset({"a", "b"}), frozenset({"a", "b"})),
    ("struct_nested", Outer, OUTER, OUTER),
    ("struct_list", list[Inner], [Inner(1), Inner(2, ("x",))], [Inner(1), Inner(2, ("x",))]),
    ("dataclass", Box, Box(1.5, 2.0, "b"), Box(1.5, 2.0, "b")),
    ("typeddict", Movie, {"title": "Brazil", "year": 1985}, {"title": "Brazil", "year": 1985}),
    ("str_enum", Color, Color.GREEN, Color.GREEN),
    ("int_enum", Level, Level.HIGH, Level.HIGH),
    ("literal", Literal["a", "b"], "b", "b"),
    ("datetime_aware", datetime, MEASURE.when, MEASURE.when),
    (
        "datetime_offset",
        datetime,
        datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=2))),
        datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=2))),
    ),
    ("datetime_naive", datetime, datetime(2024, 1, 2, 3, 4, 5), datetime(2024, 1, 2, 3, 4, 5)),
    ("date", date, date(2024, 2, 29), date(2024, 2, 29)),
    ("time", time, time(23, 59, 58, 999), time(23, 59, 58, 999)),
    ("timedelta", timedelta, timedelta(days=-1, microseconds=5), timedelta(-1, 0, 5)),
    ("uuid", uuid.UUID, uuid.UUID(int=7), uuid.UUID(int=7)),
    ("decimal", Decimal, Decimal("-1.10"), Decimal("-1.10")),
    ("optional_none", int | None, None, None),
    ("optional_value", int | None, 5, 5),
    ("union_str", str | int, "a", "a"),
    ("union_int", str | int, 3, 3),
    ("struct_or_none", Inner | None, Inner(9), Inner(9)),
    ("annotated_int", NonNeg, 0, 0),
    ("annotated_list", list[NonNeg], [0, 1, 2], [0, 1, 2]),
    ("annotated_str", ShortName, "abcde", "abcde"),
    ("struct_constrained", Order, Order("o", [1, 2], 3), Order("o", [1, 2], 3)),
    ("struct_object_field", AnyStruct, AnyStruct([1, "a"]), AnyStruct([1, "a"])),
    ("dataclass_object_field", AnyDataclass, AnyDataclass({"k": 1}), AnyDataclass({"k": 1})),
    ("typeddict_object_field", AnyTypedDict, {"x": 2.5}, {"x": 2.5}),
    ("pydantic", Person, ADA, ADA),
    ("pydantic_nested", Address, HOME, HOME),
    ("pydantic_rich", Measure, MEASURE, MEASURE),
    ("pydantic_json_only_fields", Locator, LOCATOR, LOCATOR),
    ("pydantic_list", list[Person], [ADA, ALAN], [ADA, ALAN]),
    ("pydantic_or_none_value", Person | None, ADA, ADA),
    ("pydantic_or_none_none", Person | None, None, None),
    ("pydantic_dict", dict[str, Person], {"a": ADA}, {"a": ADA}),
    ("pydantic_in_tuple", tuple[int, Person], (1, ALAN), (1, ALAN)),
    ("pydantic_in_struct", Envelope, Envelope(ADA, "n"), Envelope(ADA, "n")),
    # The validator runs when the receiver decodes: it capitalises the name.
    (
        "pydantic_validator_runs_in_receiver",
        Person,
        _unvalidated_person(name="ada lovelace"),
        _unvalidated_person(name="Ada Lovelace"),
    ),
]


def _echo_pair(key: str, typ: Any) -> tuple[Any, Any]:
    """An echo process type for ``typ``, and a relay that starts and joins it."""

    class Echo(netmcore.ProcessDef[typ, typ]):
        def run(self, arg: Any) -> Any:
            return arg

    class Relay(netmcore.ProcessDef[typ, typ]):
        def run(self, arg: Any) -> Any:
            outcome = Echo.join_outcome(Echo.start(arg))
            if not isinstance(outcome, netmcore.Success):
                raise RuntimeError(f"echo of {key} failed: {outcome}")
            if type(outcome.value) is not type(arg):
                raise RuntimeError(f"echo of {key} gave a {type(outcome.value)}")
            return outcome.value

    return Echo, Relay


RELAYS: dict[str, Any] = {key: _echo_pair(key, typ)[1] for key, typ, _, _ in ROUND_TRIPS}

# --------------------------------------------------------------------------
# Process types for invalid arguments and results
# --------------------------------------------------------------------------


@netmcore.process
def ints(k: int) -> int:
    return k


@netmcore.process
def pair(p: tuple[int, str]) -> str:
    return p[1]


@netmcore.process
def orders(o: Order) -> int:
    return len(o.items)


class Counts(netmcore.ProcessDef[list[NonNeg], int]):
    def run(self, arg: list[NonNeg]) -> int:
        return sum(arg)


# The same with @process, whose annotations must keep their msgspec.Meta.
@netmcore.process
def counts_decorated(c: list[NonNeg]) -> NonNeg:
    return sum(c)


@netmcore.process
def greet(p: Person) -> str:
    return f"hello {p.name}"


@netmcore.process
def greet_all(ps: list[Person]) -> int:
    return len(ps)


@netmcore.process
def greet_maybe(p: Person | None) -> bool:
    return p is not None


def _cyclic() -> list[Any]:
    value: list[Any] = []
    value.append(value)
    return value


# (id, process type, argument, path, part of the message)
BAD_ARGUMENTS: list[tuple[str, Any, Any, str, str]] = [
    ("scalar", ints, "x", "$", "Expected `int`, got `str`"),
    ("bool_for_int", ints, True, "$", "Expected `int`, got `bool`"),
    ("tuple_element", pair, ("a", "b"), "$[0]", "Expected `int`, got `str`"),
    ("tuple_length", pair, (1, "a", 2), "$", "Expected `array` of length 2"),
    ("struct_field", orders, Order(3, []), "$.name", "Expected `str`, got `int`"),  # type: ignore[arg-type]
    (
        "struct_nested_list",
        orders,
        Order("o", [1, 2, "x"]),  # type: ignore[list-item]
        "$.items[2]",
        "Expected `int`, got `str`",
    ),
    ("struct_constraint", orders, Order("o", [], -1), "$.count", "Expected `int` >= 0"),
    ("constrained_int_in_list", Counts, [0, -1], "$[1]", "Expected `int` >= 0"),
    (
        "pydantic_field",
        greet,
        _unvalidated_person(age=-1),
        "$.age",
        "greater than or equal to 0",
    ),
    (
        "pydantic_nested_model",
        greet,
        _unvalidated_person(address=Address.model_construct(city="X", zip="nope")),
        "$.address.zip",
        "should match pattern",
    ),
    (
        "pydantic_in_list",
        greet_all,
        [ADA, _unvalidated_person(age=200)],
        "$[1].age",
        "less than or equal to 150",
    ),
    (
        "pydantic_first_in_list",
        greet_all,
        [_unvalidated_person(age=-5)],
        "$[0].age",
        "greater than or equal to 0",
    ),
    (
        "pydantic_validator",
        greet,
        _unvalidated_person(name="Ada!"),
        "$.name",
        "no exclamation marks in names",
    ),
    (
        "pydantic_optional",
        greet_maybe,
        _unvalidated_person(age=-1),
        "$.age",
        "greater than or equal to 0",
    ),
    ("pydantic_wrong_type", greet, 3, "$", "valid dictionary or instance of Person"),
    ("not_encodable", ints, object(), "$", "cannot be encoded as int: msgspec cannot encode"),
    # Too deep for the encoder (a bare RecursionError before).
    ("too_deep", ints, functools.reduce(lambda v, _: [v], range(50_000), []), "$", "recursion"),
    # A value that contains itself is too deep too: the fix names the cycle.
    ("cyclic", ints, _cyclic(), "$", "break the cycle if it contains itself"),
]


@netmcore.process
def bad_arguments_scenario(_: int) -> dict[str, Any]:
    """Try every bad argument between two good starts; report the errors."""
    before = ints.start(1)
    errors: dict[str, list[str]] = {}
    for key, proc, value, _path, _fragment in BAD_ARGUMENTS:
        try:
            proc.start(value)
        except netmcore.ArgumentTypeError as exc:
            errors[key] = [type(exc).__qualname__, exc.path, str(exc)]
        else:
            errors[key] = ["none", "", ""]
    after = ints.start(2)
    return {
        "before": before.n,
        "after": after.n,
        "errors": errors,
        "results": [ints.join(before), ints.join(after)],
    }


@netmcore.process
def wrong_type(_: int) -> int:
    return "x"  # type: ignore[return-value]


@netmcore.process
def struct_field_wrong(_: int) -> Order:
    return Order(3, [])  # type: ignore[arg-type]


@netmcore.process
def struct_nested_wrong(_: int) -> Order:
    return Order("o", [1, 2, "x"])  # type: ignore[list-item]


@netmcore.process
def struct_constraint_violated(_: int) -> Order:
    return Order("o", [], -3)


class ConstraintViolated(netmcore.ProcessDef[int, list[NonNeg]]):
    def run(self, arg: int) -> list[NonNeg]:
        return [0, 1, -1]


@netmcore.process
def pydantic_validator_fails(_: int) -> Person:
    return _unvalidated_person(name="bang!")


@netmcore.process
def pydantic_constraint_violated(_: int) -> Person:
    return _unvalidated_person(age=151)


@netmcore.process
def pydantic_nested_violated(_: int) -> list[Person]:
    return [ADA, _unvalidated_person(address=Address.model_construct(city="X", zip="1"))]


@netmcore.process
def pydantic_optional_violated(_: int) -> Person | None:
    return _unvalidated_person(age=-1)


@netmcore.process
def returns_a_path(_: int) -> str:
    return Path("/x")  # type: ignore[return-value]


@netmcore.process
def returns_a_comparison(k: int) -> int:
    return k > 0  # mypy takes a bool for an int; msgpack keeps them apart


# (process type, path, part of the message)
INVALID_RESULTS: dict[str, tuple[Any, str, str]] = {
    "wrong_type": (wrong_type, "$", "Expected `int`, got `str`"),
    "struct_field": (struct_field_wrong, "$.name", "Expected `str`, got `int`"),
    "struct_nested": (struct_nested_wrong, "$.items[2]", "Expected `int`, got `str`"),
    "struct_constraint": (struct_constraint_violated, "$.count", "Expected `int` >= 0"),
    "constraint": (ConstraintViolated, "$[2]", "Expected `int` >= 0"),
    "pydantic_validator": (pydantic_validator_fails, "$.name", "no exclamation marks in names"),
    "pydantic_constraint": (pydantic_constraint_violated, "$.age", "less than or equal to 150"),
    "pydantic_nested": (pydantic_nested_violated, "$[1].address.zip", "should match pattern"),
    "pydantic_optional": (pydantic_optional_violated, "$.age", "greater than or equal to 0"),
    "not_encodable": (returns_a_path, "$", "msgspec cannot encode PosixPath values"),
    "bool_for_int": (returns_a_comparison, "$", "declare bool, or pass int(flag)"),
}


def _outcome_dict(outcome: object) -> dict[str, Any]:
    if outcome is None:
        return {"kind": "None"}
    fields = {f.name: getattr(outcome, f.name) for f in dataclasses.fields(outcome)}  # type: ignore[arg-type]
    return {"kind": type(outcome).__name__, **fields}


@netmcore.process
def invalid_result_scenario(key: str) -> dict[str, Any]:
    proc = INVALID_RESULTS[key][0]
    return {
        "join_is_none": proc.join(proc.start(0)) is None,
        "join_nowait_is_none": proc.join_nowait(proc.start(0)) is None,
        "outcome": _outcome_dict(proc.join_outcome(proc.start(0))),
    }


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------


def run_python(
    args: list[str], cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return run_command([sys.executable, *args], cwd, env)


def run_command(
    argv: list[str], cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv,
        capture_output=True,
        text=True,
        cwd=cwd,
        env=None if env is None else {**os.environ, **env},
        timeout=SUBPROCESS_TIMEOUT,
        check=False,
    )


def run_script(
    tmp_path: Path, body: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(body))
    return run_python([str(script)], tmp_path, env)


def schemas_cli(
    cwd: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -m netmcore schemas ...`` in a fresh interpreter (no import caching)."""
    return run_python(["-m", "netmcore", "schemas", *args], cwd, env)


# ==========================================================================
# 1. Round trips
# ==========================================================================


@pytest.mark.parametrize(
    ("typ", "value", "expected"),
    [pytest.param(t, v, e, id=k) for k, t, v, e in ROUND_TRIPS],
)
def test_encap_type_round_trip(typ: Any, value: Any, expected: Any) -> None:
    et = netmcore.EncapType(typ)
    encap = et.wrap(value)
    assert encap.fingerprint == et.fingerprint
    assert encap.type_name == et.name
    back = et.unwrap(encap)
    assert back == expected
    assert type(back) is type(expected)


@pytest.mark.parametrize("key", [k for k, _, _, _ in ROUND_TRIPS])
def test_round_trip_through_real_processes(key: str) -> None:
    _, _typ, value, expected = next(c for c in ROUND_TRIPS if c[0] == key)
    back = run_scenario(RELAYS[key], value)
    assert back == expected
    assert type(back) is type(expected)


def test_pydantic_model_is_encoded_as_msgpack_not_json_text() -> None:
    et = netmcore.EncapType(Measure)
    data = bytes(et.wrap(MEASURE).data)
    decoded = msgspec.msgpack.decode(data)
    assert isinstance(decoded, dict)
    # bytes stay msgpack bin, the datetime a msgpack timestamp: no JSON text inside.
    assert decoded["data"] == b"\x00\xff\x80"
    assert decoded["when"] == MEASURE.when
    assert b"\x00\xff\x80" in data


def test_large_bytes_round_trip_in_process() -> None:
    et = netmcore.EncapType(bytes)
    value = os.urandom(200 * 1024)
    encap = et.wrap(value)
    assert et.unwrap(encap) == value


# A numpy scalar is its Python value where that type is declared: np.float64
# subclasses float (mypy accepts it) and every numpy reduction returns one. So
# is a subclass of int, float or str, whatever its __str__ says. The validating
# decode still refuses a wrong type.


class Celsius(float):
    def __str__(self) -> str:
        return f"{float(self)} C"


class Name(str):
    def __str__(self) -> str:
        return "not the value"


@pytest.mark.parametrize(
    ("typ", "value", "expected"),
    [
        (float, np.float64(1.5), 1.5),
        (int, np.int64(3), 3),
        (float, np.int64(3), 3.0),
        (bool, np.True_, True),
        (list[float], [np.float32(0.5)], [0.5]),
        (float, Celsius(2.5), 2.5),
        (str, Name("x"), "x"),
    ],
    ids=[
        "float64",
        "int64",
        "int64-as-float",
        "bool_",
        "float32-items",
        "float-subclass",
        "str-subclass",
    ],
)
def test_numpy_scalars_and_builtin_subclasses_travel_as_their_python_value(
    typ: Any, value: Any, expected: Any
) -> None:
    et = netmcore.EncapType(typ)
    back = et.unwrap(et.wrap(value))
    assert back == expected
    assert type(back) is type(expected)


def test_a_numpy_scalar_of_the_wrong_type_is_refused_by_validation() -> None:
    with pytest.raises(netmcore.ArgumentTypeError) as info:
        netmcore.EncapType(int).wrap(np.float64(6.0))  # type: ignore[arg-type]
    assert str(info.value) == (
        "value np.float64(6.0) does not match int: Expected `int`, got `float`"
    )


@netmcore.process
def numpy_sum(n: int) -> float:
    return np.float64(n) * 2.0  # mypy --strict accepts it: np.float64 is a float


@netmcore.process
def takes_floats(values: list[float]) -> float:
    return sum(values)


@netmcore.process
def start_with_numpy_floats(n: int) -> str:
    return repr(takes_floats.join_outcome(takes_floats.start([np.float64(1.5)] * n)))


def test_a_numpy_float64_result_is_a_valid_float_result() -> None:
    outcome = netmcore.run(
        first_process=lambda: numpy_sum.start(3),
        extract_result=lambda _c, pid: numpy_sum.join_outcome_nowait(pid),
    )
    assert outcome == netmcore.Success(6.0)


def test_numpy_float64_items_are_valid_float_arguments_in_a_worker() -> None:
    assert run_scenario(start_with_numpy_floats, 2) == "Success(value=3.0)"


# ==========================================================================
# 2. Hypothesis
# ==========================================================================

ints64 = st.integers(min_value=-(2**63), max_value=2**64 - 1)
floats = st.floats(allow_nan=False)
inners = st.builds(Inner, v=ints64, tags=st.lists(st.text(), max_size=3).map(tuple))
outers = st.builds(
    Outer,
    name=st.text(),
    inner=inners,
    items=st.lists(inners, max_size=3),
    maybe=st.none() | inners,
)
boxes = st.builds(Box, w=floats, h=floats, label=st.text())
movies = st.fixed_dictionaries({"title": st.text(), "year": ints64})


@pytest.mark.parametrize(
    ("typ", "strategy"),
    [
        pytest.param(int, ints64, id="int"),
        pytest.param(float, floats, id="float"),
        pytest.param(str, st.text(), id="str"),
        pytest.param(bytes, st.binary(), id="bytes"),
        pytest.param(bool, st.booleans(), id="bool"),
        pytest.param(list[int], st.lists(ints64), id="list"),
        pytest.param(dict[str, int], st.dictionaries(st.text(), ints64), id="dict"),
        pytest.param(
            tuple[int, str, bytes, float],
            st.tuples(ints64, st.text(), st.binary(), floats),
            id="tuple",
        ),
        pytest.param(set[int], st.sets(ints64), id="set"),
        pytest.param(int | None, st.none() | ints64, id="optional"),
        pytest.param(list[NonNeg], st.lists(st.integers(0, 2**63)), id="constrained"),
        pytest.param(Inner, inners, id="struct"),
        pytest.param(Outer, outers, id="struct_nested"),
        pytest.param(Box, boxes, id="dataclass"),
        pytest.param(Movie, movies, id="typeddict"),
        pytest.param(Color, st.sampled_from(Color), id="str_enum"),
        pytest.param(Level, st.sampled_from(Level), id="int_enum"),
        pytest.param(datetime, st.datetimes(timezones=st.just(UTC)), id="datetime"),
        pytest.param(date, st.dates(), id="date"),
        pytest.param(timedelta, st.timedeltas(), id="timedelta"),
        pytest.param(uuid.UUID, st.uuids(), id="uuid"),
        pytest.param(Decimal, st.decimals(allow_nan=False, allow_infinity=False), id="decimal"),
    ],
)
def test_hypothesis_round_trip(typ: Any, strategy: st.SearchStrategy[Any]) -> None:
    et = netmcore.EncapType(typ)

    @settings(max_examples=50, deadline=None)
    @given(strategy)
    def check(value: Any) -> None:
        back = et.unwrap(et.wrap(value))
        assert back == value
        assert type(back) is type(value)

    check()


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(0, 1000), max_size=10), st.data())
def test_hypothesis_constraint_path_is_the_index_at_fault(
    good: list[int], data: st.DataObject
) -> None:
    et = netmcore.EncapType(list[NonNeg])
    index = data.draw(st.integers(0, len(good)))
    value = [*good[:index], data.draw(st.integers(-(2**63), -1)), *good[index:]]
    with pytest.raises(netmcore.ArgumentTypeError, match=r"Expected `int` >= 0") as info:
        et.wrap(value)
    assert info.value.path == f"$[{index}]"


@settings(max_examples=50, deadline=None)
@given(st.lists(inners, max_size=5), st.data())
def test_hypothesis_struct_path_is_the_field_at_fault(
    items: list[Inner], data: st.DataObject
) -> None:
    et = netmcore.EncapType(Outer)
    index = data.draw(st.integers(0, len(items)))
    bad = [*items[:index], Inner("x"), *items[index:]]  # type: ignore[arg-type]
    with pytest.raises(netmcore.ArgumentTypeError) as info:
        et.wrap(Outer("o", Inner(0), bad))
    assert info.value.path == f"$.items[{index}].v"


# ==========================================================================
# 3. Invalid arguments
# ==========================================================================


@pytest.mark.parametrize(
    ("proc", "value", "path", "fragment"),
    [pytest.param(p, v, path, f, id=k) for k, p, v, path, f in BAD_ARGUMENTS],
)
def test_bad_argument_is_rejected_in_the_caller_with_its_path(
    proc: Any, value: Any, path: str, fragment: str
) -> None:
    # The argument is checked before anything else, even the context (no run here).
    with pytest.raises(netmcore.ArgumentTypeError) as info:
        proc.start(value)
    assert type(info.value) is netmcore.ArgumentTypeError
    assert info.value.path == path
    assert fragment in str(info.value)
    assert f"argument of {proc.__qualname__}.start:" in str(info.value)


def test_bad_arguments_in_a_worker_start_nothing() -> None:
    result = run_scenario(bad_arguments_scenario, 0)
    expected = {key: path for key, _, _, path, _ in BAD_ARGUMENTS}
    assert {key: err[1] for key, err in result["errors"].items()} == expected
    assert {err[0] for err in result["errors"].values()} == {"ArgumentTypeError"}
    for key, _, _, _, fragment in BAD_ARGUMENTS:
        assert fragment in result["errors"][key][2], key
    # No process id was consumed by the refused starts.
    assert result["after"] == result["before"] + 1
    assert result["results"] == [1, 2]


def test_encap_type_wrap_rejects_with_the_same_paths() -> None:
    with pytest.raises(netmcore.ArgumentTypeError) as info:
        netmcore.EncapType(list[Outer]).wrap([OUTER, Outer("p", Inner(1), [Inner("bad")])])  # type: ignore[arg-type]
    assert info.value.path == "$[1].items[0].v"
    with pytest.raises(netmcore.ArgumentTypeError) as info:
        netmcore.EncapType(ShortName).wrap("toolong")
    assert info.value.path == "$"
    assert "length <= 5" in str(info.value)


class _Ages(BaseModel):
    ages: dict[str, int]


@pytest.mark.parametrize("key", ["k", "x)y", "a) - at `$[9]`", "(pydantic field .z)"])
def test_pydantic_path_keeps_a_dict_key_holding_a_parenthesis(key: str) -> None:
    with pytest.raises(netmcore.ArgumentTypeError) as info:
        netmcore.EncapType(list[_Ages]).wrap([_Ages.model_construct(ages={key: "old"})])
    assert info.value.path == f"$[0].ages.{key}"


class _Size(enum.Enum):
    SMALL = (640, 480)


class _Screen(BaseModel):
    size: _Size


def test_pydantic_enum_of_tuples_is_refused_with_the_fix() -> None:
    # pydantic's own JSON round trip refuses it too: a tuple travels as a list.
    with pytest.raises(ValidationError):
        _Screen.model_validate_json(_Screen(size=_Size.SMALL).model_dump_json())
    with pytest.raises(netmcore.ArgumentTypeError) as info:
        netmcore.EncapType(_Screen).wrap(_Screen(size=_Size.SMALL))
    assert info.value.path == "$.size"
    assert "enum whose values are tuples" in str(info.value)
    assert "such as strings" in str(info.value)


def test_a_value_msgspec_cannot_encode_is_an_argument_type_error() -> None:
    # Refused as a whole ("$"): encoding stops before there is anything to validate.
    with pytest.raises(netmcore.ArgumentTypeError) as info:
        netmcore.EncapType(str).wrap(Path("/x"))  # type: ignore[arg-type]
    assert info.value.path == "$"
    assert str(info.value) == (
        "value PosixPath('/x') cannot be encoded as str: msgspec cannot encode PosixPath "
        "values, which cannot cross to another process: pass plain data of the declared "
        "type (numbers, str, bytes, lists, tuples, dicts, Structs, dataclasses, ...)"
    )
    with pytest.raises(netmcore.ArgumentTypeError, match="msgspec cannot encode object values"):
        netmcore.EncapType(list[int]).wrap([1, object()])  # type: ignore[list-item]


def test_a_numpy_array_where_a_list_is_declared_says_how_to_fix_it() -> None:
    with pytest.raises(netmcore.ArgumentTypeError) as info:
        netmcore.EncapType(list[float]).wrap(np.arange(3.0))  # type: ignore[arg-type]
    assert str(info.value) == (
        "value array([0., 1., 2.]) cannot be encoded as list[float]: msgspec cannot encode "
        "ndarray values: pass a.tolist() where a list is declared, a.tobytes() where bytes "
        "are, or declare a netmcore.SharedArray (the handle of an array in shared memory: "
        "netmcore.SharedArray.from_array(a) copies it there)"
    )


def test_process_decorator_keeps_annotated_constraints() -> None:
    # BUG: process() reads the annotations with typing.get_type_hints(f), which
    # strips Annotated[...] unless include_extras=True: the msgspec.Meta
    # constraints of an @process function are silently dropped.
    assert counts_decorated.input_type.schema == Counts.input_type.schema
    assert counts_decorated.output_type.schema == {"type": "integer", "minimum": 0}
    with pytest.raises(netmcore.ArgumentTypeError) as info:
        counts_decorated.start([0, -1])
    assert info.value.path == "$[1]"


def test_bad_dict_key_has_a_well_formed_path() -> None:
    # BUG: msgspec reports a bad key as "... - at `key` in `$`"; _path_of takes
    # everything after the first backtick, so .path is "key` in `$".
    with pytest.raises(netmcore.ArgumentTypeError) as info:
        netmcore.EncapType(dict[str, int]).wrap({1: 2})  # type: ignore[dict-item]
    assert re.fullmatch(r"\$[^`]*", info.value.path), info.value.path


@pytest.mark.parametrize("arg", [True, (False, "x")], ids=["int", "tuple_item"])
def test_a_bool_where_a_number_is_declared_says_how_to_fix_it(arg: Any) -> None:
    """mypy takes a bool for an int or a float, msgpack does not: the error says so."""
    proc: Any = ints if arg is True else pair
    with pytest.raises(netmcore.ArgumentTypeError, match=r"declare bool, or pass int\(flag\)"):
        proc.start(arg)


def test_int_out_of_msgpack_range_is_an_argument_type_error() -> None:
    # BUG: msgspec raises OverflowError for ints beyond 64 bits; encode only
    # catches TypeError and ValueError, so start() leaks a bare OverflowError.
    with pytest.raises(netmcore.ArgumentTypeError) as info:
        ints.start(2**64)
    assert info.value.path == "$"
    assert str(info.value).endswith("> 2**64 - 1; pass such an int as a str")


# ==========================================================================
# 4. Invalid results
# ==========================================================================


@pytest.mark.parametrize("key", list(INVALID_RESULTS))
def test_invalid_result_is_never_handed_over(key: str) -> None:
    proc, path, fragment = INVALID_RESULTS[key]
    result = run_scenario(invalid_result_scenario, key)
    assert result["join_is_none"] is True
    assert result["join_nowait_is_none"] is True
    outcome = result["outcome"]
    assert outcome["kind"] == "InvalidResult"
    assert outcome["path"] == path
    assert fragment in outcome["message"]
    assert f"result of {proc.__qualname__}.run:" in outcome["message"]


@pytest.mark.parametrize(
    ("proc", "path", "fragment"),
    [
        ("bad_order", "$.items[2]", "Expected `int`, got `str`"),
        ("bad_constraint", "$[1]", "Expected `int` >= 0"),
        ("bad_person", "$.age", "greater than or equal to 0"),
        ("bad_people", "$[1].age", "greater than or equal to 0"),
    ],
)
def test_worker_logs_an_invalid_result_with_its_path(
    tmp_path: Path, proc: str, path: str, fragment: str
) -> None:
    result = run_script(
        tmp_path,
        f"""
        from typing import Annotated

        import msgspec
        from pydantic import BaseModel, Field

        import netmcore

        class Order(msgspec.Struct):
            items: list[int]

        class Person(BaseModel):
            age: int = Field(ge=0)

        @netmcore.process
        def bad_order(_: int) -> Order:
            return Order([1, 2, "x"])

        class bad_constraint(netmcore.ProcessDef[int, list[Annotated[int, msgspec.Meta(ge=0)]]]):
            def run(self, arg: int) -> list[int]:
                return [0, -1]

        @netmcore.process
        def bad_person(_: int) -> Person:
            return Person.model_construct(age=-1)

        @netmcore.process
        def bad_people(_: int) -> list[Person]:
            return [Person(age=1), Person.model_construct(age=-1)]

        outcome = netmcore.run(
            first_process=lambda: {proc}.start(0),
            extract_result=lambda _c, pid: {proc}.join_outcome_nowait(pid),
        )
        print(type(outcome).__name__, outcome.path)
        """,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"InvalidResult {path}\n"
    line = next(
        (ln for ln in result.stderr.splitlines() if "returned an invalid result" in ln), None
    )
    assert line is not None, result.stderr
    assert re.search(rf"process \d+ \(__main__\.{proc}\) returned an invalid result", line)
    assert fragment in line
    # BUG for pydantic models: the log line names only msgspec's part of the
    # path ("- at `$[1]`") and the model's ("(pydantic field .age)"), never the
    # path that InvalidResult.path reports.
    assert path in line, line


# ==========================================================================
# 5. Fingerprints
# ==========================================================================


def test_unwrap_as_another_type_names_both_types() -> None:
    int_type, str_type = netmcore.EncapType(int), netmcore.EncapType(str)
    encap = int_type.wrap(1)
    with pytest.raises(netmcore.EncapTypeMismatch) as info:
        str_type.unwrap(encap)
    message = str(info.value)
    assert "encapsulated as int" in message
    assert "as str" in message
    assert int_type.fingerprint in message
    assert str_type.fingerprint in message
    assert isinstance(info.value, TypeError)


def test_types_with_the_same_schema_are_compatible() -> None:
    a, b = netmcore.EncapType(list[Inner]), netmcore.EncapType(list[Inner])
    assert a is not b
    assert a.fingerprint == b.fingerprint
    assert b.unwrap(a.wrap([Inner(1)])) == [Inner(1)]

    # Two separately defined Structs with the same name and fields: same schema.
    def define() -> type[msgspec.Struct]:
        class Job(msgspec.Struct):
            n: int

        return Job

    job1, job2 = define(), define()
    assert job1 is not job2
    e1, e2 = netmcore.EncapType(job1), netmcore.EncapType(job2)
    assert e1.fingerprint == e2.fingerprint
    back = e2.unwrap(e1.wrap(job1(n=3)))
    assert type(back) is job2
    assert back.n == 3  # type: ignore[attr-defined]


def _struct(*fields: tuple[str, Any] | tuple[str, Any, Any]) -> type[msgspec.Struct]:
    return msgspec.defstruct("Job", list(fields))


@pytest.mark.parametrize(
    "changed",
    [
        pytest.param([("n", int), ("label", str)], id="added_field"),
        pytest.param([("n", int), ("label", str, "")], id="added_optional_field"),
        pytest.param([("count", int)], id="renamed_field"),
        pytest.param([("n", float)], id="changed_type"),
        pytest.param([("n", NonNeg)], id="added_constraint"),
    ],
)
def test_a_changed_struct_changes_the_fingerprint(changed: list[Any]) -> None:
    old = netmcore.EncapType(_struct(("n", int)))
    new = netmcore.EncapType(_struct(*changed))
    assert old.fingerprint != new.fingerprint
    with pytest.raises(netmcore.EncapTypeMismatch, match=r"as .*Job .* as .*Job"):
        new.unwrap(old.wrap(old.type(n=1)))


# msgspec gives these the schema of str, {"type": "string"}: the fingerprint
# tells them apart all the same (a str used to unwrap as a datetime).
STRING_SCHEMA_TYPES = [str, datetime, time, Annotated[datetime, msgspec.Meta(tz=False)]]


@pytest.mark.parametrize("old_type", STRING_SCHEMA_TYPES, ids=["str", "dt", "time", "naive"])
@pytest.mark.parametrize("new_type", STRING_SCHEMA_TYPES, ids=["str", "dt", "time", "naive"])
def test_types_with_the_schema_of_str_have_their_own_fingerprints(
    old_type: Any, new_type: Any
) -> None:
    old = netmcore.EncapType(_struct(("at", old_type)))
    new = netmcore.EncapType(_struct(("at", new_type)))
    if old_type is new_type:
        assert old.fingerprint == new.fingerprint
        return
    assert old.fingerprint != new.fingerprint
    value = old.type(at={str: "12:00", time: time(12)}.get(old_type, datetime(2024, 1, 1)))
    with pytest.raises(netmcore.EncapTypeMismatch):
        new.unwrap(old.wrap(value))


def test_fields_of_the_schema_of_str_that_swap_types_change_the_fingerprint() -> None:
    before = netmcore.EncapType(_struct(("a", str), ("b", datetime)))
    after = netmcore.EncapType(_struct(("a", datetime), ("b", str)))
    assert before.fingerprint != after.fingerprint


class Timeline(msgspec.Struct):
    at: datetime
    then: Timeline | None = None


def test_a_recursive_struct_with_a_datetime_has_a_fingerprint() -> None:
    encap_type = netmcore.EncapType(Timeline)  # the walk of its type ends
    value = Timeline(datetime(2024, 1, 1), Timeline(datetime(2024, 1, 2)))
    assert encap_type.unwrap(encap_type.wrap(value)) == value


def test_a_changed_pydantic_model_changes_the_fingerprint() -> None:
    def define(constrained: bool) -> type[BaseModel]:
        if constrained:

            class Model(BaseModel):
                x: int = Field(ge=0)

        else:

            class Model(BaseModel):  # type: ignore[no-redef]
                x: int

        return Model

    plain, constrained = netmcore.EncapType(define(False)), netmcore.EncapType(define(True))
    assert plain.fingerprint != constrained.fingerprint
    assert plain.fingerprint == netmcore.EncapType(define(False)).fingerprint
    with pytest.raises(netmcore.EncapTypeMismatch):
        constrained.unwrap(plain.wrap(plain.type(x=1)))


FINGERPRINT_TYPES = """
import datetime
import enum
import uuid
from decimal import Decimal
from typing import Annotated, Literal

import msgspec
from pydantic import BaseModel, Field

import netmcore

class Color(enum.Enum):
    RED = "red"
    GREEN = "green"
    BLUE = "blue"

class Job(msgspec.Struct):
    n: int
    tags: set[str]
    when: datetime.datetime
    color: Color

class Person(BaseModel):
    name: str = Field(min_length=1)
    age: int = Field(ge=0)
    ids: frozenset[int] = frozenset()

@netmcore.process
def work(job: Job) -> list[Person]:
    return []

TYPES = {
    "int": int,
    "str": str,
    "tuple": tuple[float, float],
    "dict": dict[str, list[int]],
    "literal": Literal["x", "y", "z", "w"],
    "union": int | str | None,
    "constrained": Annotated[int, msgspec.Meta(ge=0, le=10)],
    "uuid": uuid.UUID,
    "decimal": Decimal,
    "job": Job,
    "person": Person,
    "people": list[Person] | None,
}
"""


def test_fingerprints_are_stable_across_interpreters(tmp_path: Path) -> None:
    (tmp_path / "fp_types.py").write_text(FINGERPRINT_TYPES)
    script = """
        import json
        import fp_types
        import netmcore

        prints = {k: netmcore.EncapType(t).fingerprint for k, t in fp_types.TYPES.items()}
        prints["work"] = fp_types.work.contract()["fingerprint"]
        print(json.dumps(prints, sort_keys=True))
        """
    runs = [run_script(tmp_path, script, {"PYTHONHASHSEED": seed}) for seed in ("1", "4242")]
    for r in runs:
        assert r.returncode == 0, r.stderr
    first, second = (json.loads(r.stdout) for r in runs)
    assert first == second
    assert len(set(first.values())) == len(first)  # all different
    assert all(re.fullmatch(r"[0-9a-f]{16}", fp) for fp in first.values())
    # And the same as this interpreter computes for the builtin types.
    assert first["int"] == netmcore.EncapType(int).fingerprint
    assert first["tuple"] == netmcore.EncapType(tuple[float, float]).fingerprint


def test_a_version_skew_is_caught_across_interpreters(tmp_path: Path) -> None:
    # An Encap made by "old code" in one interpreter, unwrapped by "new code".
    old = "import msgspec\nclass Job(msgspec.Struct):\n    n: int\n"
    (tmp_path / "job_old.py").write_text(old)
    result = run_script(
        tmp_path,
        """
        import sys
        import job_old
        import netmcore

        encap = netmcore.EncapType(job_old.Job).wrap(job_old.Job(1))
        sys.stdout.write(encap.type_name + " " + encap.fingerprint + " " + bytes(encap.data).hex())
        """,
    )
    assert result.returncode == 0, result.stderr
    type_name, fp, data = result.stdout.split()
    new_job = _struct(("n", int), ("label", str, ""))
    old_job = _struct(("n", int))
    encap = netmcore.Encap(type_name, fp, (bytes.fromhex(data),))
    assert netmcore.EncapType(old_job).unwrap(encap).n == 1  # type: ignore[attr-defined]
    with pytest.raises(netmcore.EncapTypeMismatch, match=r"job_old\.Job"):
        netmcore.EncapType(new_job).unwrap(encap)


# ==========================================================================
# 6. Schema files
# ==========================================================================

CONTRACT_MODULE = '''
"""A module of contracts for the schema tests."""

import msgspec
from pydantic import BaseModel, Field

import netmcore


class Job(msgspec.Struct):
    n: int
    label: str


class Member(BaseModel):
    name: str = Field(min_length=1)
    age: int = Field(ge=0, le=150)


class Work(netmcore.ProcessDef[Job, int]):
    def run(self, arg: Job) -> int:
        return arg.n


@netmcore.process
def double(k: int) -> int:
    return 2 * k


@netmcore.process
def welcome(m: Member) -> list[Member]:
    return [m]


JOB = netmcore.EncapType(Job)
'''

MODULE_FILES = {
    "contracts_mod.Work.json",
    "contracts_mod.double.json",
    "contracts_mod.welcome.json",
    "contracts_mod.JOB.json",
}


@pytest.fixture
def contracts_mod(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "contracts_mod.py"
    path.write_text(CONTRACT_MODULE)
    yield path


def _generate(tmp_path: Path, module: Path) -> Path:
    out = tmp_path / "out"
    result = schemas_cli(tmp_path, str(module), "--out", str(out))
    assert result.returncode == 0, result.stderr
    return out


def test_schemas_writes_one_sorted_indented_file_per_contract(
    tmp_path: Path, contracts_mod: Path
) -> None:
    out = tmp_path / "out"
    result = schemas_cli(tmp_path, str(contracts_mod), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert {p.name for p in out.iterdir()} == MODULE_FILES
    assert sorted(result.stdout.splitlines()) == sorted(
        f"wrote {out / name}" for name in MODULE_FILES
    )
    for path in out.iterdir():
        text = path.read_text()
        doc = json.loads(text)
        assert text == json.dumps(doc, indent=2, sort_keys=True) + "\n", path.name
        assert path.name == f"{doc['name']}.json"
        assert re.fullmatch(r"[0-9a-f]{16}", doc["fingerprint"])
        if doc["kind"] == "process":
            assert set(doc) == {"name", "kind", "input", "output", "fingerprint"}
            for side in ("input", "output"):
                assert set(doc[side]) == {"type", "schema", "fingerprint"}
        else:
            assert doc["kind"] == "encap"
            assert set(doc) == {"name", "kind", "type", "schema", "fingerprint"}

    work = json.loads((out / "contracts_mod.Work.json").read_text())
    assert work["name"] == "contracts_mod.Work"
    assert work["input"]["type"] == "contracts_mod.Job"
    assert work["input"]["schema"]["$defs"]["Job"]["required"] == ["n", "label"]
    assert work["output"] == {
        "type": "int",
        "schema": {"type": "integer"},
        "fingerprint": netmcore.EncapType(int).fingerprint,
    }
    job = json.loads((out / "contracts_mod.JOB.json").read_text())
    assert job["type"] == "contracts_mod.Job"
    assert job["schema"] == work["input"]["schema"]
    assert job["fingerprint"] == work["input"]["fingerprint"]

    # A second run writes nothing: the files are already up to date.
    again = schemas_cli(tmp_path, str(contracts_mod), "--out", str(out))
    assert again.returncode == 0, again.stderr
    assert again.stdout == ""


def test_pydantic_model_schema_in_a_schema_file(tmp_path: Path, contracts_mod: Path) -> None:
    out = _generate(tmp_path, contracts_mod)
    welcome = json.loads((out / "contracts_mod.welcome.json").read_text())
    schema = welcome["input"]["schema"]
    assert schema["title"] == "Member"
    assert schema["type"] == "object"
    assert schema["required"] == ["name", "age"]
    assert schema["properties"]["name"]["minLength"] == 1
    assert schema["properties"]["age"]["minimum"] == 0
    assert schema["properties"]["age"]["maximum"] == 150
    assert welcome["output"]["schema"]["type"] == "array"
    assert welcome["output"]["schema"]["items"]["title"] == "Member"
    assert welcome["output"]["type"] == "list[contracts_mod.Member]"


def test_schemas_accepts_dotted_module_names(tmp_path: Path, contracts_mod: Path) -> None:
    by_path = _generate(tmp_path, contracts_mod)
    by_name = tmp_path / "by_name"
    result = schemas_cli(
        tmp_path, "contracts_mod", "--out", str(by_name), env={"PYTHONPATH": str(tmp_path)}
    )
    assert result.returncode == 0, result.stderr
    for name in MODULE_FILES:
        assert (by_name / name).read_text() == (by_path / name).read_text()


def test_check_exits_0_when_in_sync(tmp_path: Path, contracts_mod: Path) -> None:
    out = _generate(tmp_path, contracts_mod)
    result = schemas_cli(tmp_path, str(contracts_mod), "--out", str(out), "--check")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == f"{out}: 4 contract(s) up to date\n"


def test_repo_schemas_are_in_sync_with_the_examples() -> None:
    result = schemas_cli(ROOT, *map(str, EXAMPLES), "--out", str(SCHEMAS), "--check")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "up to date" in result.stdout
    stems = {p.stem for p in EXAMPLES}
    assert {p.name.split(".")[0] for p in SCHEMAS.glob("*.json")} == stems


def test_check_shows_a_changed_struct_as_a_diff(tmp_path: Path, contracts_mod: Path) -> None:
    out = _generate(tmp_path, contracts_mod)
    before = (out / "contracts_mod.Work.json").read_text()
    contracts_mod.write_text(
        CONTRACT_MODULE.replace("    label: str\n", "    label: str\n    priority: float\n")
    )
    # A fresh interpreter: the changed module is imported anew.
    result = schemas_cli(tmp_path, str(contracts_mod), "--out", str(out), "--check")
    assert result.returncode == 1, result.stdout + result.stderr
    diff = result.stdout
    assert f"--- {out / 'contracts_mod.Work.json'}\n" in diff
    assert "+++ generated/contracts_mod.Work.json\n" in diff
    assert f"--- {out / 'contracts_mod.JOB.json'}\n" in diff
    assert re.search(r'^\+ +"priority": \{$', diff, re.M), diff
    assert re.search(r'^\+ +"priority"$', diff, re.M), diff  # in "required"
    assert re.search(r"^@@ .* @@", diff, re.M)
    # The fingerprints change too; the unchanged contracts are not in the diff.
    assert re.search(r'^- +"fingerprint": "[0-9a-f]{16}"', diff, re.M)
    assert "contracts_mod.double.json" not in diff
    assert "contracts_mod.welcome.json" not in diff
    assert "has drifted from the code" in result.stderr
    assert f"--out {out}" in result.stderr
    # --check wrote nothing.
    assert (out / "contracts_mod.Work.json").read_text() == before


def test_check_shows_a_removed_and_an_added_process_type(
    tmp_path: Path, contracts_mod: Path
) -> None:
    out = _generate(tmp_path, contracts_mod)
    changed = CONTRACT_MODULE.replace("def double(k: int)", "def triple(k: int)")
    contracts_mod.write_text(changed)
    result = schemas_cli(tmp_path, str(contracts_mod), "--out", str(out), "--check")
    assert result.returncode == 1, result.stdout + result.stderr
    diff = result.stdout
    removed = f"--- {out / 'contracts_mod.double.json'}\n+++ /dev/null\n"
    added = "--- /dev/null\n+++ generated/contracts_mod.triple.json\n"
    assert removed in diff, diff
    assert added in diff, diff
    assert '-  "name": "contracts_mod.double"' in diff
    assert '+  "name": "contracts_mod.triple"' in diff

    # Regenerating removes the stale file; then --check passes.
    regen = schemas_cli(tmp_path, str(contracts_mod), "--out", str(out))
    assert regen.returncode == 0, regen.stderr
    assert f"removed {out / 'contracts_mod.double.json'}" in regen.stdout.splitlines()
    assert f"wrote {out / 'contracts_mod.triple.json'}" in regen.stdout.splitlines()
    check = schemas_cli(tmp_path, str(contracts_mod), "--out", str(out), "--check")
    assert check.returncode == 0, check.stdout + check.stderr


def test_check_against_a_missing_directory_fails(tmp_path: Path, contracts_mod: Path) -> None:
    out = tmp_path / "absent"
    result = schemas_cli(tmp_path, str(contracts_mod), "--out", str(out), "--check")
    assert result.returncode == 1
    assert "--- /dev/null\n+++ generated/contracts_mod.Work.json\n" in result.stdout
    assert not out.exists()


@pytest.mark.parametrize(
    ("module", "message"),
    [
        pytest.param("missing.py", "missing.py: no such file", id="file"),
        pytest.param(
            "no_such_module_here",
            "no module named 'no_such_module_here' (for no_such_module_here); pass a "
            "dotted name importable from the current directory, or the path of a .py file",
            id="dotted",
        ),
    ],
)
def test_schemas_of_a_missing_module_is_a_one_line_error(
    tmp_path: Path, module: str, message: str
) -> None:
    result = schemas_cli(tmp_path, module)
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == f"netmcore schemas: {message}\n"


def test_schemas_of_a_file_that_is_not_python_says_so(tmp_path: Path) -> None:
    """It was read as a dotted name: "no module named 'notes'"."""
    (tmp_path / "notes.txt").write_text("")
    result = schemas_cli(tmp_path, "notes.txt")
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == (
        "netmcore schemas: notes.txt is a file, not a .py file: pass the path of a Python "
        "source file (NAME.py), or a dotted module name\n"
    )


@pytest.mark.parametrize("check", [False, True], ids=["write", "check"])
def test_schemas_out_that_is_a_file_is_a_one_line_error(
    tmp_path: Path, contracts_mod: Path, check: bool
) -> None:
    (tmp_path / "out").write_text("")
    result = schemas_cli(tmp_path, str(contracts_mod), "--out", "out", *["--check"] * check)
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == "netmcore schemas: --out out is not a directory\n"
    assert (tmp_path / "out").read_text() == ""


def _process_module(path: Path, *names: str) -> Path:
    """A module defining ``@netmcore.process`` functions ``names`` (none: no contract)."""
    defs = "".join(
        f"\n\n@netmcore.process\ndef {name}(x: int) -> int:\n    return x\n" for name in names
    )
    path.write_text(f"import netmcore\n{defs}")
    return path


def _contract_names(out: Path) -> list[str]:
    return sorted(p.name for p in out.glob("*.json"))


def test_schemas_of_one_module_leaves_other_modules_contracts_alone(tmp_path: Path) -> None:
    """Writing mod_b's contracts into the DIR of mod_a's removed mod_a's."""
    _process_module(tmp_path / "mod_a.py", "alpha")
    _process_module(tmp_path / "mod_b.py", "beta")
    first = schemas_cli(tmp_path, "mod_a.py", "--out", "out")
    assert (first.returncode, first.stdout) == (0, "wrote out/mod_a.alpha.json\n"), first.stderr
    second = schemas_cli(tmp_path, "mod_b.py", "--out", "out")
    assert (second.returncode, second.stdout) == (0, "wrote out/mod_b.beta.json\n"), second.stderr
    assert _contract_names(tmp_path / "out") == ["mod_a.alpha.json", "mod_b.beta.json"]


def test_schemas_removes_the_stale_contracts_of_the_given_modules_only(tmp_path: Path) -> None:
    # "mod" is a prefix of "mod_b": mod_b's files are not mod's.
    _process_module(tmp_path / "mod.py", "alpha", "beta")
    _process_module(tmp_path / "mod_b.py", "beta")
    both = schemas_cli(tmp_path, "mod.py", "mod_b.py", "--out", "out")
    assert both.returncode == 0, both.stderr
    out = tmp_path / "out"
    assert _contract_names(out) == ["mod.alpha.json", "mod.beta.json", "mod_b.beta.json"]

    _process_module(tmp_path / "mod.py", "alpha")
    result = schemas_cli(tmp_path, "mod.py", "--out", "out")
    assert (result.returncode, result.stdout) == (0, "removed out/mod.beta.json\n"), result.stderr
    assert _contract_names(out) == ["mod.alpha.json", "mod_b.beta.json"]

    # A module left without any process type: its last contract goes too.
    _process_module(tmp_path / "mod.py")
    result = schemas_cli(tmp_path, "mod.py", "--out", "out")
    assert (result.returncode, result.stdout) == (0, "removed out/mod.alpha.json\n"), result.stderr
    assert _contract_names(out) == ["mod_b.beta.json"]


def test_check_judges_only_the_given_modules_files(tmp_path: Path) -> None:
    _process_module(tmp_path / "mod_a.py", "alpha")
    _process_module(tmp_path / "mod_b.py", "beta")
    out = _generate(tmp_path, tmp_path / "mod_a.py")
    _generate(tmp_path, tmp_path / "mod_b.py")
    _process_module(tmp_path / "mod_a.py", "alpha2")  # mod_a drifts; mod_b does not

    b = schemas_cli(tmp_path, "mod_b.py", "--out", str(out), "--check")
    assert (b.returncode, b.stdout) == (0, f"{out}: 1 contract(s) up to date\n"), b.stderr

    a = schemas_cli(tmp_path, "mod_a.py", "--out", str(out), "--check")
    assert a.returncode == 1, a.stdout + a.stderr
    assert f"--- {out / 'mod_a.alpha.json'}\n+++ /dev/null\n" in a.stdout
    assert "--- /dev/null\n+++ generated/mod_a.alpha2.json\n" in a.stdout
    assert "mod_b" not in a.stdout
    assert a.stderr.endswith(f"`netmcore schemas mod_a.py --out {out}`\n"), a.stderr


def test_exact_removes_and_check_exact_reports_the_contracts_of_modules_not_given(
    tmp_path: Path,
) -> None:
    _process_module(tmp_path / "mod_a.py", "alpha")
    _process_module(tmp_path / "mod_b.py", "beta")
    out = _generate(tmp_path, tmp_path / "mod_a.py")
    _generate(tmp_path, tmp_path / "mod_b.py")
    (out / "notes.json").write_text("{}\n")  # not a contract: never touched

    check = schemas_cli(tmp_path, "mod_b.py", "--out", str(out), "--exact", "--check")
    assert check.returncode == 1, check.stdout + check.stderr
    assert check.stdout.startswith(f"--- {out / 'mod_a.alpha.json'}\n+++ /dev/null\n")
    assert "mod_b.beta.json" not in check.stdout and "notes.json" not in check.stdout
    assert check.stderr.endswith(f"`netmcore schemas mod_b.py --out {out} --exact`\n")

    write = schemas_cli(tmp_path, "mod_b.py", "--out", str(out), "--exact")
    assert (write.returncode, write.stdout) == (0, f"removed {out / 'mod_a.alpha.json'}\n")
    assert _contract_names(out) == ["mod_b.beta.json", "notes.json"]
    again = schemas_cli(tmp_path, "mod_b.py", "--out", str(out), "--exact", "--check")
    assert again.returncode == 0, again.stdout + again.stderr


def test_a_package_does_not_own_its_submodules_contracts(tmp_path: Path) -> None:
    """pkg.sub.leaf.json is named after pkg.sub, a module of its own, not after pkg."""
    (tmp_path / "pkg").mkdir()
    init = _process_module(tmp_path / "pkg" / "__init__.py", "top")
    _process_module(tmp_path / "pkg" / "sub.py", "leaf")
    env = {"PYTHONPATH": str(tmp_path)}
    both = schemas_cli(tmp_path, "pkg", "pkg.sub", "--out", "out", env=env)
    assert both.returncode == 0, both.stderr
    out = tmp_path / "out"
    assert _contract_names(out) == ["pkg.sub.leaf.json", "pkg.top.json"]

    _process_module(init, "top2")
    result = schemas_cli(tmp_path, "pkg", "--out", "out", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "wrote out/pkg.top2.json\nremoved out/pkg.top.json\n"
    assert _contract_names(out) == ["pkg.sub.leaf.json", "pkg.top2.json"]
    for module, count in [("pkg", 1), ("pkg.sub", 1)]:
        check = schemas_cli(tmp_path, module, "--out", "out", "--check", env=env)
        assert (check.returncode, check.stdout) == (0, f"out: {count} contract(s) up to date\n")


def test_the_netmcore_command_finds_a_dotted_module_in_the_current_directory(
    tmp_path: Path,
) -> None:
    # As `python -m netmcore` does. The console script's directory is what
    # Python put on sys.path: before the fix, "no module named 'pkg'".
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    _process_module(tmp_path / "pkg" / "jobs.py", "leaf")
    command = Path(sys.executable).parent / "netmcore"
    result = run_command([str(command), "schemas", "pkg.jobs", "--out", "out"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert _contract_names(tmp_path / "out") == ["pkg.jobs.leaf.json"]


def test_a_file_in_a_package_is_named_as_its_dotted_module(tmp_path: Path) -> None:
    # Given by path or by name, one module's contracts have one name: by path
    # it was "jobs.leaf.json" (and a relative import in it failed).
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "types_.py").write_text("Number = int\n")
    jobs = _process_module(tmp_path / "pkg" / "jobs.py", "leaf")
    jobs.write_text("from .types_ import Number as Number\n" + jobs.read_text())
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    by_path = schemas_cli(elsewhere, str(jobs), "--out", "by_path")
    assert by_path.returncode == 0, by_path.stderr
    by_name = schemas_cli(tmp_path, "pkg.jobs", "--out", "by_name")
    assert by_name.returncode == 0, by_name.stderr
    assert _contract_names(elsewhere / "by_path") == ["pkg.jobs.leaf.json"]
    assert (elsewhere / "by_path" / "pkg.jobs.leaf.json").read_text() == (
        tmp_path / "by_name" / "pkg.jobs.leaf.json"
    ).read_text()


def _makefile_schemas_command(check: bool, out: Path) -> list[str]:
    """The Makefile's ``netmcore schemas`` recipe line (``make test``'s check, or
    ``make schemas``), run on the examples with ``--out`` pointed at ``out``."""
    lines = [
        line.strip()
        for line in (ROOT / "Makefile").read_text().splitlines()
        if "-m netmcore schemas" in line
    ]
    [line] = [line for line in lines if ("--check" in line.split()) == check]
    tokens = shlex.split(line)
    assert "--out" in tokens, line
    command: list[str] = []
    for previous, token in zip(["", *tokens], tokens, strict=False):
        if token == "$(PY)":
            command.append(sys.executable)
        elif token == "$(EXAMPLES)":
            command.extend(map(str, EXAMPLES))
        elif previous == "--out":
            command.append(str(out))
        else:
            assert "$" not in token, line
            command.append(token)
    return command


@pytest.mark.parametrize("fault", ["none", "stale", "missing", "orphan"])
def test_makefile_schema_check_catches_a_stale_a_missing_and_an_orphan_contract(
    tmp_path: Path, fault: str
) -> None:
    """``make test``'s check fails when a contract of the examples changed or is
    missing, and when a file is left from a module that is not listed at all
    (an example deleted since); ``make schemas`` removes that file."""
    out = tmp_path / "schemas"
    shutil.copytree(SCHEMAS, out)
    hello = out / "hello.Add.json"
    faulty = {"stale": "hello.Add.json", "missing": "hello.Add.json", "orphan": "gone.Add.json"}
    if fault == "stale":
        hello.write_text(hello.read_text().replace('"float"', '"int"', 1))
    elif fault == "missing":
        hello.unlink()
    elif fault == "orphan":
        doc = json.loads(hello.read_text())
        (out / "gone.Add.json").write_text(json.dumps({**doc, "name": "gone.Add"}))

    check = run_command(_makefile_schemas_command(True, out), ROOT)
    if fault == "none":
        assert check.returncode == 0, check.stdout + check.stderr
        return
    assert check.returncode == 1, check.stdout + check.stderr
    assert faulty[fault] in check.stdout

    regen = run_command(_makefile_schemas_command(False, out), ROOT)
    assert regen.returncode == 0, regen.stderr
    assert faulty[fault] in regen.stdout
    assert not (out / "gone.Add.json").exists()
    for path in SCHEMAS.iterdir():
        assert (out / path.name).read_text() == path.read_text(), path.name


def test_schema_refs_resolve_from_the_document_root() -> None:
    # BUG: a pydantic model's schema is inlined with its own "$defs"; nested in a
    # container (list[Model], Model | None, a tuple), its "#/$defs/..." refs
    # point at the root of the document, where those $defs are not.
    class Leaf(BaseModel):
        x: int

    class Tree(BaseModel):
        leaf: Leaf

    # Any: mypy joins these type forms to no type form (Tree | None is a UnionType).
    forms: tuple[Any, ...] = (Tree, list[Tree], Tree | None, tuple[Inner, Tree])
    for typ in forms:
        schema = netmcore.EncapType(typ).schema
        for ref in _refs(schema):
            assert _resolve(schema, ref) is not None, f"{typ}: dangling {ref} in {schema}"


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def _resolve(root: Any, ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node = root
    for part in ref[2:].split("/"):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


# ==========================================================================
# 7. ProcessDef.contract() and the schemas
# ==========================================================================


@pytest.fixture
def hello() -> Iterator[Any]:
    """examples/hello.py, imported under its own name (as the CLI does)."""
    from netmcore import _schemas

    assert "hello" not in sys.modules
    try:
        yield _schemas.import_module(str(ROOT / "examples" / "hello.py"))
    finally:
        sys.modules.pop("hello", None)


def test_contract_equals_the_schema_file(hello: Any) -> None:
    text = (SCHEMAS / "hello.Add.json").read_text()
    assert hello.Add.contract() == json.loads(text)
    assert json.dumps(hello.Add.contract(), indent=2, sort_keys=True) + "\n" == text


def test_input_and_output_schemas(hello: Any) -> None:
    assert hello.Add.input_type.schema == {
        "type": "array",
        "prefixItems": [{"type": "number"}, {"type": "number"}],
        "items": False,
        "minItems": 2,
        "maxItems": 2,
    }
    assert hello.Add.output_type.schema == {"type": "number"}
    contract = hello.Add.contract()
    assert contract["input"]["fingerprint"] == hello.Add.input_type.fingerprint
    assert contract["output"]["fingerprint"] == hello.Add.output_type.fingerprint
    assert contract["input"]["fingerprint"] == netmcore.EncapType(tuple[float, float]).fingerprint


def test_contract_of_a_temporary_module_equals_its_file(
    tmp_path: Path, contracts_mod: Path
) -> None:
    out = _generate(tmp_path, contracts_mod)
    result = run_script(
        tmp_path,
        """
        import json
        import contracts_mod

        for proc in (contracts_mod.Work, contracts_mod.double, contracts_mod.welcome):
            print(json.dumps(proc.contract(), sort_keys=True))
        """,
    )
    assert result.returncode == 0, result.stderr
    contracts = [json.loads(line) for line in result.stdout.splitlines()]
    for contract in contracts:
        assert contract == json.loads((out / f"{contract['name']}.json").read_text())


def test_contract_of_a_process_type_in_this_module() -> None:
    contract = greet.contract()
    assert contract["name"] == f"{__name__}.greet"
    assert contract["kind"] == "process"
    assert contract["input"]["type"] == f"{__name__}.Person"
    assert contract["input"]["schema"] == greet.input_type.schema
    assert contract["input"]["schema"]["title"] == "Person"
    assert contract["output"] == {
        "type": "str",
        "schema": {"type": "string"},
        "fingerprint": netmcore.EncapType(str).fingerprint,
    }
    assert contract["fingerprint"] != greet_all.contract()["fingerprint"]


# ==========================================================================
# 8. The command line's help
# ==========================================================================


def test_python_m_netmcore_help_lists_every_subcommand(tmp_path: Path) -> None:
    result = run_python(["-m", "netmcore", "--help"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: netmcore ")
    for command in ("bench", "status", "unlink", "schemas"):
        assert command in result.stdout


@pytest.mark.parametrize(
    ("command", "options"),
    [
        ("bench", ["--roundtrips N", "--fanout N", "--payload-mib MIB"]),
        ("status", ["SOCKET_DIR", "--json"]),
        ("unlink", ["SOCKET_DIR"]),
        ("schemas", ["MODULE", "--out DIR", "--check", "--exact", "(default: schemas)"]),
    ],
)
def test_subcommand_help_documents_its_options(
    capsys: pytest.CaptureFixture[str], command: str, options: list[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        cli_main.main([command, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: netmcore {command}")
    for option in options:
        assert option in out, out


def test_schemas_help_through_python_m(tmp_path: Path) -> None:
    result = run_python(["-m", "netmcore", "schemas", "--help"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "--check" in result.stdout
    assert "--out DIR" in result.stdout
    text = " ".join(result.stdout.split())
    # What each mode does to the files of modules not given.
    assert "leaves other modules' files in DIR alone" in text, text
    assert "With --exact, DIR holds the given MODULEs' contracts and no others" in text, text


def test_schemas_without_a_module_is_a_usage_error(tmp_path: Path) -> None:
    result = run_python(["-m", "netmcore", "schemas"], tmp_path)
    assert result.returncode == 2
    assert "MODULE" in result.stderr


# ==========================================================================
# 9. Process types from generic bases, quoted types, what @process accepts
# ==========================================================================

T = TypeVar("T")
R = TypeVar("R")


class Identity(netmcore.ProcessDef[T, T]):
    """Generic: a base for process types, not one itself."""

    def run(self, arg: T) -> T:
        return arg


class IntIdentity(Identity[int]):
    """ProcessDef[int, int], running Identity.run."""


class FromInt(netmcore.ProcessDef[int, R]):
    def run(self, arg: int) -> R:
        raise NotImplementedError


class IntToStr(FromInt[str]):
    def run(self, arg: int) -> str:
        return f"<{arg}>"


class Firsts(netmcore.ProcessDef[list[T], dict[str, T]]):
    """Generic, with its type parameter inside the type arguments."""

    def run(self, arg: list[T]) -> dict[str, T]:
        return {"base": arg[0]}


class IntFirsts(Firsts[int]):
    def run(self, arg: list[int]) -> dict[str, int]:
        return {"sub": arg[0]}


class KeyedFirsts(Firsts[tuple[str, T]]):
    """Still generic, one level down."""


class FloatKeyedFirsts(KeyedFirsts[float]):
    """ProcessDef[list[tuple[str, float]], dict[str, tuple[str, float]]]."""


@netmcore.process
def specialised_scenario(_: int) -> list[Any]:
    try:
        IntFirsts.start(["x"])  # type: ignore[list-item]
        refused = ""
    except netmcore.ArgumentTypeError as exc:
        refused = exc.path
    return [
        _outcome_dict(IntIdentity.join_outcome(IntIdentity.start(3))),
        _outcome_dict(IntToStr.join_outcome(IntToStr.start(4))),
        _outcome_dict(IntFirsts.join_outcome(IntFirsts.start([5]))),
        refused,
    ]


def test_a_specialised_generic_process_type_runs_its_own_run_on_its_own_types() -> None:
    assert run_scenario(specialised_scenario, 0) == [
        {"kind": "Success", "value": 3},
        {"kind": "Success", "value": "<4>"},
        {"kind": "Success", "value": {"sub": 5}},
        "$[0]",
    ]


@pytest.mark.parametrize(
    ("proc", "arg", "result"),
    [
        pytest.param(IntIdentity, int, int, id="both"),
        pytest.param(IntToStr, int, str, id="output"),
        pytest.param(IntFirsts, list[int], dict[str, int], id="inside"),
        pytest.param(
            FloatKeyedFirsts,
            list[tuple[str, float]],
            dict[str, tuple[str, float]],
            id="two_levels",
        ),
    ],
)
def test_a_specialised_generic_process_type_has_the_substituted_types(
    proc: Any, arg: Any, result: Any
) -> None:
    assert proc.input_type.fingerprint == netmcore.EncapType(arg).fingerprint
    assert proc.output_type.fingerprint == netmcore.EncapType(result).fingerprint


@pytest.mark.parametrize(
    ("start", "message"),
    [
        pytest.param(
            lambda: Identity.start(3),
            "Identity is not a process type: it is generic in T; subclass it with concrete "
            "types, like `class P(Identity[...])` with no type parameter left, and start that",
            id="generic",
        ),
        pytest.param(lambda: Firsts.start([1]), "Firsts is not a process type", id="inside"),
        pytest.param(
            lambda: KeyedFirsts.join_nowait(netmcore.ProcessId(1)), "KeyedFirsts is not", id="join"
        ),
        pytest.param(
            lambda: netmcore.ProcessDef.join(netmcore.ProcessId(1)),
            "ProcessDef is not a process type: it is generic in In, Out;",
            id="process_def",
        ),
    ],
)
def test_a_generic_process_type_cannot_start_or_join(
    start: Callable[[], object], message: str
) -> None:
    with pytest.raises(TypeError, match=re.escape(message)):
        start()


@pytest.mark.parametrize(
    ("base", "message"),
    [
        pytest.param(
            netmcore.ProcessDef,
            "Bare subclasses ProcessDef without its argument and result types: give them, "
            "as in `class Bare(ProcessDef[In, Out])` with concrete types",
            id="process_def",
        ),
        pytest.param(
            Identity,
            "Bare subclasses Identity without its types: give them, as in "
            "`class Bare(Identity[T])`",
            id="generic_base",
        ),
    ],
)
def test_a_subclass_without_types_is_refused_where_it_is_defined(base: type, message: str) -> None:
    """Not at its first start(), with advice it could not follow ("generic in ;")."""
    with pytest.raises(TypeError, match=re.escape(message)):
        type("Bare", (base,), {"run": lambda self, arg: arg})


def test_schemas_writes_contracts_of_specialised_process_types_only(tmp_path: Path) -> None:
    (tmp_path / "generic_mod.py").write_text(
        textwrap.dedent(
            """
            from typing import TypeVar

            import netmcore

            T = TypeVar("T")

            class Firsts(netmcore.ProcessDef[list[T], dict[str, T]]):
                def run(self, arg: list[T]) -> dict[str, T]:
                    return {"first": arg[0]}

            class IntFirsts(Firsts[int]):
                pass
            """
        )
    )
    out = _generate(tmp_path, tmp_path / "generic_mod.py")
    assert [p.name for p in out.iterdir()] == ["generic_mod.IntFirsts.json"]
    doc = json.loads((out / "generic_mod.IntFirsts.json").read_text())
    assert (doc["input"]["type"], doc["output"]["type"]) == ("list[int]", "dict[str, int]")


def test_schemas_finds_process_types_and_encap_types_nested_in_classes(tmp_path: Path) -> None:
    """A process type nested in a class gets its contract, so its drift is
    checked (it was skipped); an alias of a class is not walked twice."""
    (tmp_path / "nested_mod.py").write_text(
        textwrap.dedent(
            """
            import netmcore

            class Jobs:
                class Resize(netmcore.ProcessDef[int, str]):
                    def run(self, arg: int) -> str:
                        return str(arg)

                class Inner:
                    codec = netmcore.EncapType(list[int])

                same = Inner

            @netmcore.process
            def top(k: int) -> int:
                return k
            """
        )
    )
    out = _generate(tmp_path, tmp_path / "nested_mod.py")
    assert sorted(p.name for p in out.iterdir()) == [
        "nested_mod.Jobs.Inner.codec.json",
        "nested_mod.Jobs.Resize.json",
        "nested_mod.top.json",
    ]
    doc = json.loads((out / "nested_mod.Jobs.Resize.json").read_text())
    assert (doc["input"]["type"], doc["output"]["type"]) == ("int", "str")


class Point(msgspec.Struct):
    x: int
    y: int


def test_a_quoted_type_in_process_def_parameters_is_looked_up_in_its_module() -> None:
    # As mypy reads it; nested quoted names too.
    class Norms(netmcore.ProcessDef["Point", list["Point"]]):
        def run(self, arg: Point) -> list[Point]:
            return [arg]

    assert Norms.input_type.fingerprint == netmcore.EncapType(Point).fingerprint
    assert Norms.output_type.fingerprint == netmcore.EncapType(list[Point]).fingerprint


def test_a_quoted_name_not_defined_yet_is_a_clear_error() -> None:
    with pytest.raises(
        TypeError,
        match=r"name 'Later' is not defined in module .*test_contracts: "
        r"a quoted name .* define that type above the process type",
    ):

        class Early(netmcore.ProcessDef["Later", int]):  # type: ignore[name-defined]
            def run(self, arg: Any) -> int:
                return 0


_T = TypeVar("_T")


def _generic(x: _T) -> _T:
    return x


def _naming_a_type_not_defined_yet() -> Any:
    """A module-level function whose annotation (text) names a type its module
    does not have yet: one defined below the function, when it is decorated."""

    def names_later(x: int) -> int:
        return x

    names_later.__annotations__ = {"x": "DefinedBelow", "return": "int"}
    names_later.__qualname__ = "names_later"  # at module level, as the decorator sees it
    return names_later


def _with_a_local_type() -> Any:
    """A function whose annotation (text, with __future__ annotations) names
    a class made in another function, which its module does not have."""

    class Local:
        pass

    def uses_local(x: Local) -> int:
        return 0

    return uses_local


def _keyword_only(*, x: int) -> int:
    return x


def _var_keyword(**kw: int) -> int:
    return len(kw)


def _var_positional(*xs: int) -> int:
    return len(xs)


async def _coroutine(x: int) -> int:
    return x


async def _async_generator(x: int) -> AsyncIterator[int]:
    yield x


def _add(x: int, y: int) -> int:
    return x + y


class _Doubler:
    def __call__(self, x: int) -> int:
        return 2 * x


@netmcore.process
def scaled(k: int, factor: int = 3, *rest: int, **options: int) -> int:
    return k * factor


def test_process_takes_a_function_whose_other_parameters_have_defaults() -> None:
    # Callable with the argument alone: mypy takes it as Callable[[int], int].
    assert scaled.input_type.type is int
    assert run_scenario(scaled, 5) == 15


@pytest.mark.parametrize(
    ("f", "reason"),
    [
        pytest.param(_keyword_only, "its parameter `x` is keyword-only", id="keyword_only"),
        pytest.param(_var_keyword, "its parameter `kw` is variadic keyword", id="kwargs"),
        pytest.param(_var_positional, "its parameter `xs` is variadic positional", id="args"),
        pytest.param(_coroutine, "it is async, and a process runs a plain function", id="async"),
        pytest.param(
            _async_generator, "it is async, and a process runs a plain function", id="async_gen"
        ),
        pytest.param(
            functools.partial(_add, y=1), "it is a partial object, not a function", id="partial"
        ),
        pytest.param(_Doubler(), "it is a _Doubler object, not a function", id="callable"),
        pytest.param(
            _add,
            "its parameter `y` has no default, and the worker passes the argument alone",
            id="two_required",
        ),
        pytest.param(
            _generic,
            "it is generic in ~_T: a process type needs concrete types (a ProcessDef "
            "subclass can be generic, and specialised)",
            id="generic",
        ),
        pytest.param(
            _with_a_local_type(),
            "name 'Local' is not defined: a type its annotations name must be found in its "
            "module; define it at module level",
            id="local_type",
        ),
        pytest.param(
            _naming_a_type_not_defined_yet(),
            "name 'DefinedBelow' is not defined: its annotations are looked up as it is "
            "decorated; define DefinedBelow above the function",
            id="type_below",
        ),
    ],
)
def test_process_refuses_what_a_worker_could_not_call_with_the_argument(
    f: Any, reason: str
) -> None:
    # Refused when decorated, naming the function and the rule, not in every worker.
    name = getattr(f, "__qualname__", repr(f))
    with pytest.raises(TypeError) as info:
        netmcore.process(f)
    assert str(info.value) == (
        "@netmcore.process needs a function of one annotated positional argument with an "
        f"annotated return type, like `def f(x: int) -> int`; {name} does not fit: {reason}"
    )


@netmcore.process
def _cube(k: int) -> int:
    return k**3


def test_a_process_type_called_as_a_function_says_how_to_run_it() -> None:
    # It was object.__init__'s "_cube() takes no arguments".
    with pytest.raises(TypeError) as info:
        _cube(3)  # type: ignore[call-arg]
    assert str(info.value) == (
        "_cube is a netmcore process type, not a function: start a process with "
        "_cube.start(arg) and join it, or run the function here with _cube().run(arg)"
    )
    assert _cube().run(3) == 27  # as the message says: a unit test's way in


# ==========================================================================
# 10. pydantic models that need care
# ==========================================================================


class Aliased(BaseModel):
    user_name: str = Field(alias="userName")


class WithComputed(BaseModel):
    model_config = ConfigDict(extra="forbid")
    a: int

    @computed_field  # type: ignore[prop-decorator]
    @property
    def double(self) -> int:
        return 2 * self.a


class StrictModel(BaseModel):
    model_config = ConfigDict(strict=True)
    pair: tuple[int, int]


class SerializationAlias(BaseModel):
    count: int = Field(serialization_alias="Count")


class ValidationAlias(BaseModel):
    count: int = Field(validation_alias="Count")


@pytest.mark.parametrize(
    ("typ", "value"),
    [
        pytest.param(Aliased, Aliased(userName="bob"), id="field_alias"),
        pytest.param(SerializationAlias, SerializationAlias(count=1), id="serialization_alias"),
        pytest.param(ValidationAlias, ValidationAlias(Count=1), id="validation_alias"),  # type: ignore[call-arg]
        pytest.param(WithComputed, WithComputed(a=2), id="computed_field_extra_forbid"),
        pytest.param(StrictModel, StrictModel(pair=(1, 2)), id="strict_model_tuple"),
    ],
)
def test_valid_pydantic_values_round_trip(typ: Any, value: Any) -> None:
    # Models travel by field name, whatever their aliases (one-sided ones too),
    # without computed fields, and are validated laxly (msgpack has no tuples).
    et = netmcore.EncapType(typ)
    assert et.unwrap(et.wrap(value)) == value


# --------------------------------------------------------------------------
# _encap._enc_hook turns a numpy scalar into value.item(): for datetime64 and
# timedelta64 in ns that is an int, so a date or a duration is silently
# accepted where int is declared (before: refused, "msgspec cannot encode").
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [np.datetime64("2020-01-01T00:00:00.000000001", "ns"), np.timedelta64(5, "ns")],
    ids=["datetime64-ns", "timedelta64-ns"],
)
def test_numpy_datetime64_or_timedelta64_in_ns_is_refused_where_int_is_declared(
    value: Any,
) -> None:
    with pytest.raises(ArgumentTypeError):
        EncapType(int).wrap(value)


# --------------------------------------------------------------------------
# np.longdouble(...).item() is a np.longdouble again: the hook is called on
# its own answer until RecursionError, which escapes instead of the
# ArgumentTypeError it was before.
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value", [np.longdouble(1.5), np.clongdouble(1 + 2j)], ids=["longdouble", "clongdouble"]
)
def test_numpy_longdouble_is_an_argument_type_error(value: Any) -> None:
    with pytest.raises(ArgumentTypeError):
        EncapType(float).wrap(value)


# ==========================================================================
# 11. types msgspec cannot encode
# ==========================================================================


class _Plain:
    """Neither a Struct, a dataclass nor a model: msgspec cannot encode it."""


@pytest.mark.parametrize(
    ("typ", "message"),
    [
        (
            dict[str, _Plain],
            "dict[str, test_contracts._Plain] cannot be a process argument or result: "
            "type <class 'test_contracts._Plain'> is not supported; use types msgspec can "
            "encode: builtins,",
        ),
        (
            list[np.ndarray],
            "list[numpy.ndarray] cannot be a process argument or result: type <class "
            "'numpy.ndarray'> is not supported; for a numpy array, put a netmcore.SharedArray",
        ),
    ],
)
def test_a_type_msgspec_cannot_encode_is_refused_where_the_process_is_defined(
    typ: Any, message: str
) -> None:
    # msgspec's own advice (a schema_hook, which netmcore does not take) is left out.
    with pytest.raises(TypeError) as info:

        class _Bad(netmcore.ProcessDef[typ, int]):  # type: ignore[valid-type]
            def run(self, arg: Any) -> int:
                return 0

    assert str(info.value).startswith(message), str(info.value)
    assert "schema_hook" not in str(info.value)
    # Nor shown above it, as the exception it was raised from.
    assert info.value.__cause__ is None and info.value.__suppress_context__
