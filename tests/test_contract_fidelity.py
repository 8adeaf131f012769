"""Contracts that say what crosses: nothing a type declares is left unchecked or unhashed.

1. A dict's key type is in the fingerprint (and so in ``schemas --check``):
   ``dict[str, int]`` was ``dict[int, int]`` was ``dict[date, int]``.
2. pydantic's and annotated_types' constraints in ``Annotated``, outside a
   pydantic model, which msgspec skips, are refused where the type is defined.
3. A pydantic dataclass is validated by pydantic, as a model is (it travelled
   as a plain dataclass, its validators never run).
4. A validator that raises something else than a validation error (a
   ``__post_init__``'s LookupError), or a malformed ``msgspec.Raw``, is the
   value's ArgumentTypeError, or InvalidResult: it escaped as it came.
5. A subclass of bytes (``np.bytes_``) travels as bytes, small or large.
6. A contract's type name is the same in every run and for every spelling
   (``Optional[int]``, ``int | None``): ``schemas --check`` failed on it.
7. What says nothing of the wire (docstrings, descriptions, the order of a
   map's fields or of a union's members in msgspec) leaves the fingerprint be.
8. Clear errors: two types of one name, a name not defined yet, a model
   pydantic has no JSON Schema for; a strict pydantic model is held to its
   strict config in the caller.
9. After review: a pydantic type's class name and field order count in the
   fingerprint, its schema names fields as they travel (not by alias); a
   valid strict model is taken; a pydantic dataclass with an init=False
   field round-trips; one class held by msgspec and by a model is no clash;
   pydantic metadata that checks nothing is taken.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import re
import subprocess
import sys
import textwrap
import typing
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

import annotated_types
import msgspec
import numpy as np
import pydantic
import pytest
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator
from scenario import run_scenario
from test_contracts import schemas_cli

import netmcore
from netmcore import ArgumentTypeError, Encap, EncapType, EncapTypeMismatch


def _outcome_dict(outcome: object) -> dict[str, Any]:
    fields = {f.name: getattr(outcome, f.name) for f in dataclasses.fields(outcome)}  # type: ignore[arg-type]
    return {"kind": type(outcome).__name__, **fields}


# ==========================================================================
# 1. Dict key types
# ==========================================================================


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (dict[str, int], dict[int, int]),
        (dict[str, int], dict[datetime.date, int]),
        (dict[str, int], dict[uuid.UUID, int]),
        (dict[str, int], dict[Literal["a"], int]),
        (dict[Literal["a"], int], dict[Literal["b"], int]),
        (dict[int, int], dict[Annotated[int, msgspec.Meta(ge=0)], int]),
        (list[dict[int, str]], list[dict[float, str]]),
    ],
    ids=["int", "date", "uuid", "literal", "literal_values", "constrained", "nested"],
)
def test_a_dict_key_type_changes_the_fingerprint(old: Any, new: Any) -> None:
    assert EncapType(old).fingerprint == EncapType(old).fingerprint
    assert EncapType(old).fingerprint != EncapType(new).fingerprint


def test_a_dict_is_not_unwrapped_with_keys_of_another_type() -> None:
    # It was: the str keys came out as dates.
    encap = EncapType(dict[str, int]).wrap({"2024-01-01": 1})
    with pytest.raises(EncapTypeMismatch, match=r"as dict\[datetime\.date, int\]"):
        EncapType(dict[datetime.date, int]).unwrap(encap)


def _keyed(key: Any) -> type[msgspec.Struct]:
    return msgspec.defstruct("Tally", [("counts", dict[key, int])])


def _keyed_model(key: Any) -> type[BaseModel]:
    return pydantic.create_model("Tally", counts=(dict[key, int], ...))


@pytest.mark.parametrize("make", [_keyed, _keyed_model], ids=["struct", "model"])
def test_a_field_whose_dict_keys_change_changes_the_fingerprint(make: Any) -> None:
    prints = {key: EncapType(make(key)).fingerprint for key in (str, int, datetime.date)}
    assert len(set(prints.values())) == 3, prints
    assert EncapType(make(str)).fingerprint == prints[str]


def test_a_pydantic_dict_schema_names_its_key_type() -> None:
    schema = EncapType(_keyed_model(int)).schema
    assert schema["properties"]["counts"]["propertyNames"] == {"type": "integer"}
    assert "propertyNames" not in EncapType(_keyed_model(str)).schema["properties"]["counts"]


def test_check_catches_a_struct_field_whose_dict_keys_changed(tmp_path: Path) -> None:
    module = tmp_path / "tally_jobs.py"
    body = """
        import msgspec
        import netmcore

        class Tally(msgspec.Struct):
            counts: dict[str, int]

        @netmcore.process
        def total(t: Tally) -> int:
            return sum(t.counts.values())
        """
    module.write_text(textwrap.dedent(body))
    made = schemas_cli(tmp_path, "tally_jobs.py", "--out", "out")
    assert made.returncode == 0, made.stderr
    module.write_text(textwrap.dedent(body.replace("dict[str, int]", "dict[int, int]")))
    check = schemas_cli(tmp_path, "tally_jobs.py", "--out", "out", "--check")
    assert check.returncode == 1, check.stdout + check.stderr
    assert "has drifted from the code" in check.stderr
    assert '-    "fingerprint": ' in check.stdout


# ==========================================================================
# 2. Constraints msgspec would skip
# ==========================================================================


def _positive(v: int) -> int:
    if v <= 0:
        raise ValueError("not positive")
    return v


class GuardedJob(msgspec.Struct):
    k: Annotated[int, annotated_types.Ge(0)]


@pytest.mark.parametrize(
    ("typ", "shown", "fix"),
    [
        (Annotated[int, annotated_types.Ge(0)], "Ge(ge=0)", "msgspec.Meta(ge=0)"),
        (Annotated[int, Field(ge=0, le=9)], "Field(...)", "msgspec.Meta(ge=0, le=9)"),
        (
            Annotated[list[int], annotated_types.MaxLen(2)],
            "MaxLen(max_length=2)",
            "msgspec.Meta(max_length=2)",
        ),
        (list[Annotated[str, annotated_types.MinLen(1)]], "MinLen(min_length=1)", "min_length=1"),
        (Annotated[int, AfterValidator(_positive)], "AfterValidator(func=<function", "BaseModel"),
        (GuardedJob, "Ge(ge=0) in a field of test_contract_fidelity.GuardedJob", "ge=0"),
        (Annotated[int, pydantic.Strict()], "Strict(strict=True)", "BaseModel"),
    ],
    ids=["ge", "field", "max_len", "in_list", "validator", "struct_field", "strict"],
)
def test_pydantic_constraints_outside_a_model_are_refused_where_the_type_is_defined(
    typ: Any, shown: str, fix: str
) -> None:
    # msgspec skips metadata it does not know: -1 passed Annotated[int, Ge(0)].
    with pytest.raises(TypeError) as info:
        EncapType(typ)
    message = str(info.value)
    assert "cannot be a process argument or result: " in message
    assert shown in message
    assert "msgspec, which checks this type, skips: values that break it would cross" in message
    assert fix in message
    assert "0x" not in message  # the function's repr, without its address
    with pytest.raises(TypeError, match="pydantic reads and msgspec"):

        class Guarded(netmcore.ProcessDef[typ, int]):  # type: ignore[valid-type]
            def run(self, arg: Any) -> int:
                return 0


def test_a_constraint_is_refused_with_pydantic_imported_but_its_fields_module_not_loaded(
    tmp_path: Path,
) -> None:
    # pydantic loads its submodules on first use: after `import pydantic`
    # alone, pydantic.fields was an AttributeError, not the refusal.
    script = tmp_path / "fresh.py"
    script.write_text(
        textwrap.dedent(
            """
            import sys
            from typing import Annotated
            import annotated_types, pydantic, netmcore
            assert "pydantic.fields" not in sys.modules  # the case at hand
            try:
                netmcore.EncapType(Annotated[int, annotated_types.Ge(0)])
            except TypeError as exc:
                print("refused:", exc)
            """
        )
    )
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("refused: Annotated[int, Ge(ge=0)] cannot be a process argument")
    assert "write it as msgspec.Meta(ge=0)" in done.stdout


def test_process_refuses_a_pydantic_constraint_on_its_argument() -> None:
    def sqrt_of(k: Annotated[int, Field(ge=0)]) -> float:
        return float(k) ** 0.5

    with pytest.raises(TypeError) as info:
        netmcore.process(sqrt_of)
    assert str(info.value) == (
        "Annotated[int, FieldInfo(annotation=NoneType, required=True, metadata=[Ge(ge=0)])] "
        "cannot be a process argument or result: Field(...) is Annotated metadata that "
        "pydantic reads and msgspec, which checks this type, skips: values that break it "
        "would cross unchecked; write it as msgspec.Meta(ge=0), which msgspec checks, or "
        "declare the value as a field of a pydantic BaseModel, which pydantic checks"
    )


class Unit:
    """A marker of the program's own: no constraint anyone checks."""


class Ranged(BaseModel):
    k: Annotated[int, annotated_types.Ge(0)]


@pytest.mark.parametrize(
    "typ",
    [Annotated[int, msgspec.Meta(ge=0)], Annotated[float, Unit()], Ranged, list[Ranged]],
    ids=["meta", "marker", "model", "list_of_models"],
)
def test_constraints_that_are_checked_are_taken(typ: Any) -> None:
    EncapType(typ)


# ==========================================================================
# 3. pydantic dataclasses
# ==========================================================================


@pydantic.dataclasses.dataclass
class Shipment:
    qty: Annotated[int, Field(ge=0)]
    label: str = ""

    @field_validator("qty")
    @classmethod
    def at_most_a_hundred(cls, v: int) -> int:
        if v > 100:
            raise ValueError("too many")
        return v

    @field_validator("label")
    @classmethod
    def upper(cls, v: str) -> str:
        return v.upper()


def _unvalidated_shipment(qty: int, label: str = "") -> Shipment:
    shipment = Shipment(1)
    shipment.qty, shipment.label = qty, label  # no validate_assignment: unchecked
    return shipment


@netmcore.process
def ship(s: Shipment) -> str:
    return f"{type(s).__name__} {s.qty} {s.label}"


@netmcore.process
def make_a_bad_shipment(qty: int) -> Shipment:
    return _unvalidated_shipment(qty)


@netmcore.process
def shipments(_: int) -> dict[str, Any]:
    errors = {}
    for qty in (500, -1):
        try:
            ship.start(_unvalidated_shipment(qty))
        except ArgumentTypeError as exc:
            errors[qty] = [exc.path, str(exc)]
    return {
        # The receiver validates too: its validator upper-cases the label.
        "shipped": ship.result(ship.start(_unvalidated_shipment(3, "box"))),
        "errors": errors,
        "bad_result": _outcome_dict(
            make_a_bad_shipment.join_outcome(make_a_bad_shipment.start(500))
        ),
    }


def test_a_pydantic_dataclass_is_validated_by_pydantic_in_every_process() -> None:
    result = run_scenario(shipments, 0)
    assert result["shipped"] == "Shipment 3 BOX"
    assert result["errors"][500] == [
        "$.qty",
        "argument of ship.start: Shipment(qty=500, label='') does not match "
        "test_contract_fidelity.Shipment: Value error, too many (pydantic field .qty), "
        "where the value is 500",
    ]
    assert result["errors"][-1][0] == "$.qty"
    assert "greater than or equal to 0" in result["errors"][-1][1]
    bad = result["bad_result"]
    assert (bad["kind"], bad["path"]) == ("InvalidResult", "$.qty")
    assert "too many" in bad["message"]


def _shipment_with_minimum(low: int) -> Any:
    # Its annotation an object, not text (this module's annotations are): the
    # class's own name each time, and `low` not looked up in the module.
    box = type("Box", (), {"__annotations__": {"qty": Annotated[int, Field(ge=low)]}})
    return pydantic.dataclasses.dataclass(box)


def test_a_pydantic_dataclass_constraint_is_in_its_schema_and_fingerprint() -> None:
    zero, ten = EncapType(_shipment_with_minimum(0)), EncapType(_shipment_with_minimum(10))
    assert zero.schema["properties"]["qty"]["minimum"] == 0
    assert zero.fingerprint != ten.fingerprint
    assert zero.fingerprint == EncapType(_shipment_with_minimum(0)).fingerprint


def test_a_pydantic_dataclass_with_a_field_default_is_validated() -> None:
    # `x: int = Field(ge=0)` was refused: "Encoding objects of type FieldInfo".
    @pydantic.dataclasses.dataclass
    class Count:
        x: int = Field(ge=0)

    et = EncapType(list[Count] | None)
    assert et.unwrap(et.wrap([Count(3)])) == [Count(3)]
    bad = Count(1)
    bad.x = -5
    with pytest.raises(ArgumentTypeError, match="greater than or equal to 0") as info:
        et.wrap([Count(1), bad])
    assert info.value.path == "$[1].x"


class Crate(msgspec.Struct):
    shipment: Shipment


def test_a_pydantic_dataclass_msgspec_would_decode_as_a_plain_one_is_refused() -> None:
    with pytest.raises(TypeError) as info:
        EncapType(Crate)
    assert str(info.value) == (
        "test_contract_fidelity.Crate cannot be a process argument or result: "
        "test_contract_fidelity.Shipment is a pydantic dataclass in a field of "
        "test_contract_fidelity.Crate, which msgspec decodes, as it decodes a plain "
        "dataclass: its pydantic validation would never run; make "
        "test_contract_fidelity.Crate a pydantic model or dataclass too, or "
        "test_contract_fidelity.Shipment a pydantic BaseModel"
    )


# ==========================================================================
# 4. Validators that raise something else
# ==========================================================================


@dataclasses.dataclass
class Job:
    n: int

    def __post_init__(self) -> None:
        if self.n < 0:
            raise LookupError(f"no table for {self.n}")


def _bad_job(n: int) -> Job:
    job = Job(0)
    job.n = n  # past __post_init__
    return job


@netmcore.process
def times_ten(job: Job) -> int:
    return job.n * 10


@netmcore.process
def returns_a_bad_job(n: int) -> Job:
    return _bad_job(n)


@netmcore.process
def jobs_with_a_bad_one(_: int) -> dict[str, Any]:
    got: list[int] = []
    try:
        for value in times_ten.map([Job(1), Job(2), _bad_job(-1)], processes=2):
            got.append(value)
    except ArgumentTypeError as exc:
        map_error = [exc.path, str(exc), type(exc.__cause__).__name__]
    try:
        times_ten.start(_bad_job(-2))
    except ArgumentTypeError as exc:
        start_error = [exc.path, str(exc), type(exc.__cause__).__name__]
    outcome = returns_a_bad_job.join_outcome(returns_a_bad_job.start(-3))
    return {"got": got, "map": map_error, "start": start_error, "result": _outcome_dict(outcome)}


def test_a_validator_that_raises_another_kind_is_an_argument_type_error() -> None:
    # It escaped raw: start raised a LookupError, map raised it before the
    # results before it, and a result became Raised.
    result = run_scenario(jobs_with_a_bad_one, 0)
    assert result["got"] == [10, 20]
    assert result["map"] == [
        "$",
        "item 2 of times_ten.map: Job(n=-1) does not match test_contract_fidelity.Job: "
        "LookupError: no table for -1",
        "LookupError",
    ]
    assert result["start"][2] == "LookupError"
    assert result["start"][1].endswith("LookupError: no table for -2")
    assert result["result"] == {
        "kind": "InvalidResult",
        "path": "$",
        "message": "result of returns_a_bad_job.run: Job(n=-3) does not match "
        "test_contract_fidelity.Job: LookupError: no table for -3",
    }


def test_unwrap_of_a_value_its_validator_refuses_otherwise_is_an_argument_type_error() -> None:
    et = EncapType(Job)
    encap = Encap(et.name, et.fingerprint, (msgspec.msgpack.encode({"n": -4}),))
    with pytest.raises(ArgumentTypeError) as info:
        et.unwrap(encap)
    assert str(info.value) == (
        "value does not match test_contract_fidelity.Job: LookupError: no table for -4"
    )
    assert isinstance(info.value.__cause__, LookupError)


def test_a_malformed_raw_is_an_argument_type_error() -> None:
    with pytest.raises(ArgumentTypeError, match=re.escape("a msgspec.Raw must hold one msgpack")):
        EncapType(list[int]).wrap(msgspec.Raw(b"\x92\x01"))  # type: ignore[arg-type]


@dataclasses.dataclass
class Interrupted:
    n: int

    def __post_init__(self) -> None:
        raise KeyboardInterrupt


def test_an_interrupt_in_a_validator_goes_on_as_it_came() -> None:
    value = Interrupted.__new__(Interrupted)
    value.n = 1
    with pytest.raises(KeyboardInterrupt):
        EncapType(Interrupted).wrap(value)


# ==========================================================================
# 5. bytes subclasses
# ==========================================================================


class Tag(bytes):
    pass


@netmcore.process
def byte_count(b: bytes) -> str:
    return f"{type(b).__name__} {len(b)}"


@netmcore.process
def count_bytes_subclasses(_: int) -> list[str]:
    values: list[bytes] = [
        np.bytes_(b"ab"),
        Tag(b"ab"),
        np.bytes_(b"a" * 70_000),
        Tag(b"a" * 70_000),
    ]
    return [byte_count.result(byte_count.start(v)) for v in values]


def test_a_bytes_subclass_travels_as_bytes_small_or_large() -> None:
    # A small one was refused ("msgspec cannot encode bytes_ values"), a large one taken.
    assert run_scenario(count_bytes_subclasses, 0) == [
        "bytes 2",
        "bytes 2",
        "bytes 70000",
        "bytes 70000",
    ]


@pytest.mark.parametrize("value", [np.bytes_(b"ab"), Tag(b"\x00\xff")], ids=["numpy", "own"])
def test_a_bytes_subclass_unwraps_as_bytes(value: bytes) -> None:
    et = EncapType(bytes)
    back = et.unwrap(et.wrap(value))
    assert (type(back), back) == (bytes, bytes(value))
    with pytest.raises(ArgumentTypeError, match="Expected `str`, got `bytes`"):
        EncapType(str).wrap(value)  # type: ignore[arg-type]


# ==========================================================================
# 6. Type names
# ==========================================================================


def test_a_type_name_is_the_same_for_every_spelling_and_run() -> None:
    assert EncapType(Optional[int]).name == EncapType(int | None).name == "int | None"  # noqa: UP045
    assert EncapType(list[Optional[str]]).name == "list[str | None]"  # noqa: UP045
    assert EncapType(Annotated[float, Unit()]).name == (
        "Annotated[float, <test_contract_fidelity.Unit object>]"
    )


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ("Annotated[float, Unit()]", "Annotated[float, Unit()]"),
        ("Optional[float]", "float | None"),
    ],
    ids=["address", "optional"],
)
def test_check_passes_when_only_the_spelling_of_a_type_changed(
    tmp_path: Path, before: str, after: str
) -> None:
    module = tmp_path / "scaled_jobs.py"
    body = """
        from typing import Annotated, Optional

        import netmcore

        class Unit:
            pass

        @netmcore.process
        def scale(x: TYPE) -> float:
            return 2.0
        """
    module.write_text(textwrap.dedent(body.replace("TYPE", before)))
    made = schemas_cli(tmp_path, "scaled_jobs.py", "--out", "out")
    assert made.returncode == 0, made.stderr
    module.write_text(textwrap.dedent(body.replace("TYPE", after)))
    check = schemas_cli(tmp_path, "scaled_jobs.py", "--out", "out", "--check")
    assert check.returncode == 0, check.stdout + check.stderr


# ==========================================================================
# 7. What the fingerprint leaves out
# ==========================================================================


def _struct(fields: list[tuple[str, Any]], doc: str = "", **options: Any) -> type[msgspec.Struct]:
    return msgspec.defstruct("Job", fields, namespace={"__doc__": doc}, **options)


def _model(doc: str, description: str) -> type[BaseModel]:
    return pydantic.create_model(
        "Member", __doc__=doc, age=(int, Field(ge=0, description=description))
    )


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (_struct([("x", int)], "One."), _struct([("x", int)], "Two, edited.")),
        (
            _struct([("x", int), ("at", datetime.datetime)]),
            _struct([("at", datetime.datetime), ("x", int)]),
        ),
        (int | str, str | int),
        (list[datetime.datetime | int], list[int | datetime.datetime]),
        (Annotated[int, msgspec.Meta(description="d", title="t", examples=[1])], int),
        (_model("A member.", "in years"), _model("Someone.", "how old")),
    ],
    ids=["docstring", "field_order", "union_order", "union_order_kinds", "meta", "pydantic_docs"],
)
def test_what_says_nothing_of_the_wire_leaves_the_fingerprint_be(a: Any, b: Any) -> None:
    assert EncapType(a).fingerprint == EncapType(b).fingerprint


def test_a_docstrings_description_is_the_same_whatever_python_compiled_it() -> None:
    # Python 3.13 dedents a docstring as it compiles it, and msgspec takes it
    # as it is: schemas/ written under 3.11 had drifted under 3.13.
    indented = "First line.\n\n    Said in an indented source.\n        A deeper line.\n    "
    dedented = "First line.\n\nSaid in an indented source.\n    A deeper line.\n"
    schemas = [EncapType(_struct([("x", int)], doc)).schema for doc in (indented, dedented)]
    assert schemas[0] == schemas[1]
    assert schemas[0]["$defs"]["Job"]["description"] == (
        "First line.\n\nSaid in an indented source.\n    A deeper line."
    )
    # A description given as such is no docstring: kept as it was written.
    written = "  a Markdown block:\n\n      code"
    meta = EncapType(Annotated[int, msgspec.Meta(description=written)]).schema
    assert meta["description"] == written


def _ordered_model(first: str) -> type[BaseModel]:
    fields = {"a": (int, ...), "b": (int, ...)}
    return pydantic.create_model(
        "Pair", **dict(sorted(fields.items(), key=lambda f: f[0] != first))
    )


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (
            _struct([("x", int), ("y", str)], array_like=True),
            _struct([("y", str), ("x", int)], array_like=True),
        ),
        (tuple[int, str], tuple[str, int]),
        (_struct([("x", int)], "Doc."), _struct([("x", str)], "Doc.")),
        # A validator may read the fields validated before its own.
        (_ordered_model("a"), _ordered_model("b")),
    ],
    ids=["array_like_order", "tuple_order", "field_type", "pydantic_field_order"],
)
def test_what_changes_the_wire_changes_the_fingerprint(a: Any, b: Any) -> None:
    assert EncapType(a).fingerprint != EncapType(b).fingerprint


# ==========================================================================
# 8. Clear errors, and strict models
# ==========================================================================


class Left:
    class Item(BaseModel):
        n: int

    class Order(BaseModel):
        items: list[Item]


class Right:
    class Item(BaseModel):
        name: str

    class Order(BaseModel):
        items: list[Item]


class Item(msgspec.Struct):
    z: float


@pytest.mark.parametrize(
    ("typ", "both"),
    [
        (
            tuple[Left.Order, Right.Order],
            "test_contract_fidelity.Left.Item and test_contract_fidelity.Right.Item",
        ),
        (
            tuple[Item, Left.Order],
            "test_contract_fidelity.Item and test_contract_fidelity.Left.Item",
        ),
    ],
    ids=["two_models", "struct_and_model"],
)
def test_two_types_of_one_name_are_named_with_the_fix(typ: Any, both: str) -> None:
    with pytest.raises(TypeError) as info:
        EncapType(typ)
    assert f"it holds two different types named Item ({both})" in str(info.value)
    assert str(info.value).endswith("rename one of them")


class Early(msgspec.Struct):
    later: _DefinedLater | None = None  # type: ignore[name-defined]  # noqa: F821


def test_a_field_type_not_defined_yet_is_a_clear_error() -> None:
    with pytest.raises(TypeError) as info:
        EncapType(Early)
    assert str(info.value) == (
        "test_contract_fidelity.Early cannot be a process argument or result yet: name "
        "'_DefinedLater' is not defined, in the field types of a class it holds, which are "
        "looked up when its process type or EncapType is made; define _DefinedLater above it"
    )


class Callback(BaseModel):
    f: Callable[[int], int]


def test_a_model_pydantic_has_no_json_schema_for_is_a_clear_type_error() -> None:
    # It was pydantic's PydanticInvalidForJsonSchema, a RuntimeError.
    with pytest.raises(TypeError) as info:
        EncapType(list[Callback])
    message = str(info.value)
    assert message.startswith(
        "list[test_contract_fidelity.Callback] cannot be a process argument or result: "
        "pydantic has no JSON Schema for Callback"
    )
    assert message.endswith("not a Callable or an instance of an arbitrary class")


class StrictPoint(BaseModel):
    model_config = ConfigDict(strict=True)
    x: int
    pair: tuple[int, int]
    when: datetime.datetime


def test_a_strict_model_is_held_to_its_strict_config_in_the_caller() -> None:
    et = EncapType(StrictPoint)
    good = StrictPoint(x=1, pair=(1, 2), when=datetime.datetime(2024, 1, 1))
    assert et.unwrap(et.wrap(good)) == good  # its tuple travels as a list, all the same
    for field, value in (("x", "5"), ("when", "2024-01-01")):
        bad = good.model_copy()
        setattr(bad, field, value)  # no validate_assignment: unchecked
        with pytest.raises(
            ArgumentTypeError, match="StrictPoint is strict: Input should be"
        ) as info:
            et.wrap(bad)
        assert info.value.path == f"$.{field}"
        with pytest.raises(ArgumentTypeError, match="StrictPoint is strict"):
            EncapType(list[StrictPoint]).wrap([good, bad])


# ==========================================================================
# 9. After review: a model's name, aliases, valid strict models, init=False
# ==========================================================================


class Alpha(BaseModel):
    x: int


class Beta(BaseModel):
    x: int


@pydantic.dataclasses.dataclass
class AlphaData:
    x: int


@pydantic.dataclasses.dataclass
class BetaData:
    x: int


@pytest.mark.parametrize(
    ("a", "b"),
    [(Alpha, Beta), (list[Alpha], list[Beta]), (AlphaData, BetaData)],
    ids=["model", "list_of_models", "dataclass"],
)
def test_pydantic_types_of_other_names_have_other_fingerprints(a: Any, b: Any) -> None:
    # Its class name is in an inlined schema's "title" alone, which the
    # fingerprint had left out with the documentation: Alpha unwrapped as Beta.
    assert EncapType(a).fingerprint != EncapType(b).fingerprint
    with pytest.raises(EncapTypeMismatch):
        EncapType(Beta).unwrap(EncapType(Alpha).wrap(Alpha(x=1)))


def _order(src: str) -> type[BaseModel]:
    namespace: dict[str, Any] = {"__name__": "orders"}
    exec(textwrap.dedent(src), namespace)
    return typing.cast(type[BaseModel], namespace["Order"])


def test_a_pydantic_schema_names_the_fields_as_they_travel() -> None:
    # By field name, not alias: a field renamed to its old alias kept its
    # fingerprint, and a value of the old model was refused by the new one.
    aliased = _order(
        """
        import pydantic
        class Order(pydantic.BaseModel):
            qty: int = pydantic.Field(alias="quantity")
        """
    )
    renamed = _order(
        """
        import pydantic
        class Order(pydantic.BaseModel):
            quantity: int
        """
    )
    assert list(EncapType(aliased).schema["properties"]) == ["qty"]
    assert EncapType(aliased).schema["required"] == ["qty"]
    assert EncapType(aliased).fingerprint != EncapType(renamed).fingerprint


class Hue(enum.Enum):
    RED = "red"


@dataclasses.dataclass
class Spot:
    x: int


class StrictEnumValues(BaseModel):
    model_config = ConfigDict(strict=True, use_enum_values=True)
    hue: Hue


class StrictSerialized(BaseModel):
    model_config = ConfigDict(strict=True)
    when: datetime.datetime
    n: Annotated[int, pydantic.PlainSerializer(str, return_type=str)]

    @pydantic.field_serializer("when")
    def _when(self, when: datetime.datetime) -> str:
        return when.isoformat()


class StrictWithDataclass(BaseModel):
    model_config = ConfigDict(strict=True)
    spot: Spot


@pytest.mark.parametrize(
    "value",
    [
        StrictEnumValues(hue=Hue.RED),
        StrictSerialized(when=datetime.datetime(2024, 1, 1), n=3),
        StrictWithDataclass(spot=Spot(1)),
    ],
    ids=["use_enum_values", "serializers", "stdlib_dataclass"],
)
def test_a_valid_strict_model_is_taken(value: BaseModel) -> None:
    # The caller's strict check judged the dump, not the values held: an
    # enum's value, a serializer's str, a dataclass's dict were refused.
    et = EncapType(type(value))
    assert et.unwrap(et.wrap(value)) == value


def test_a_strict_model_refuses_a_field_the_receiver_would_change() -> None:
    # Beside a field whose dump its strict validation refuses but which arrives
    # as it is held (the enum's value).
    bad = StrictEnumValues(hue=Hue.RED)
    bad.hue = "red"  # type: ignore[assignment]  # its held form: it is valid
    EncapType(StrictEnumValues).wrap(bad)
    point = StrictPoint(x=1, pair=(1, 2), when=datetime.datetime(2024, 1, 1))
    point.pair = [1, 2]  # type: ignore[assignment]
    with pytest.raises(ArgumentTypeError, match=r"StrictPoint is strict: .*tuple") as info:
        EncapType(StrictPoint).wrap(point)
    assert info.value.path == "$.pair"


@pydantic.dataclasses.dataclass(config=ConfigDict(extra="forbid"))
class Derived:
    x: int
    double: int = dataclasses.field(init=False, default=0)

    def __post_init__(self) -> None:
        self.double = 2 * self.x


def test_a_pydantic_dataclass_with_an_init_false_field_round_trips() -> None:
    # msgspec encodes every field; pydantic took `double` for an extra
    # argument, which extra="forbid" refused: every value was.
    et = EncapType(list[Derived])
    assert et.unwrap(et.wrap([Derived(3)])) == [Derived(3)]


class Shade(enum.Enum):
    DARK = "dark"


@dataclasses.dataclass
class Corner:
    x: int


class Drawing(BaseModel):
    shade: Shade
    corner: Corner


class Sketch(msgspec.Struct):
    shade: Shade
    corner: Corner
    drawing: Drawing


@pytest.mark.parametrize(
    "typ", [Sketch, tuple[Shade, Drawing], tuple[Drawing, Corner]], ids=["struct", "enum", "dc"]
)
def test_one_class_held_by_msgspec_and_by_a_model_is_no_name_clash(typ: Any) -> None:
    # msgspec and pydantic describe it each their own way, under its one name:
    # "two different types are named Shade", and the fix, "rename one of them".
    et = EncapType(typ)
    assert et.fingerprint == EncapType(typ).fingerprint
    if typ is Sketch:
        value = Sketch(Shade.DARK, Corner(1), Drawing(shade=Shade.DARK, corner=Corner(2)))
        assert et.unwrap(et.wrap(value)) == value


@pytest.mark.parametrize(
    "typ",
    [
        Annotated[int, Field(description="count")],
        Annotated[int, pydantic.WithJsonSchema({"type": "integer"})],
        list[Annotated[str, Field(title="name", examples=["a"])]],
    ],
    ids=["description", "with_json_schema", "title"],
)
def test_pydantic_metadata_that_checks_nothing_is_taken(typ: Any) -> None:
    EncapType(typ)


def _optional_pair(first: str) -> type[BaseModel]:
    fields = {"a": (int, 0), "b": (int, 0)}
    return pydantic.create_model(  # type: ignore[no-any-return, call-overload]
        "OptionalPair", **dict(sorted(fields.items(), key=lambda f: f[0] != first))
    )


def test_the_order_of_a_models_optional_fields_changes_the_fingerprint() -> None:
    # A validator may read the fields validated before its own; that of
    # required fields counted (in "required"), that of the others did not.
    assert EncapType(_optional_pair("a")).fingerprint != EncapType(_optional_pair("b")).fingerprint
    assert EncapType(_optional_pair("a")).fingerprint == EncapType(_optional_pair("a")).fingerprint
    assert "netmcore-field-order" not in EncapType(_optional_pair("a")).schema
