"""Encapsulated values: a msgpack encoding plus the fingerprint of its type.

Upstream's ``Netplex_encap`` makes values of any type travel as one opaque type
and checks, when a value is unwrapped, that it is unwrapped as the type it was
wrapped as. Here the check holds across processes and code versions: the type
is identified by a fingerprint, a hash of its canonical JSON Schema.
"""

from __future__ import annotations

import abc
import dataclasses
import functools
import hashlib
import importlib
import inspect
import json
import re
import signal
import sys
import types
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Generic, TypeVar, overload

import msgspec

from ._errors import ArgumentTypeError, EncapTypeMismatch

if TYPE_CHECKING:
    # PEP 747: a parameter typed TypeForm[T] takes any type expression (int | None,
    # list[int], Annotated[...]) and binds T to the type it spells, so that an
    # explicit subscript that disagrees with it is a type error. Only for mypy:
    # the annotations here are never evaluated at run time.
    from typing_extensions import TypeForm

T = TypeVar("T")


def _pydantic_model(typ: Any) -> bool:
    # pydantic is imported only by programs that use it; netmcore never does.
    pydantic = sys.modules.get("pydantic")
    return pydantic is not None and isinstance(typ, type) and issubclass(typ, pydantic.BaseModel)


def _pydantic_dataclass(typ: Any) -> bool:
    """Whether ``typ`` (or the class it specialises) is a pydantic dataclass."""
    made_by = sys.modules.get("pydantic.dataclasses")  # imported by whoever made one
    cls = typing.get_origin(typ) or typ
    return made_by is not None and isinstance(cls, type) and made_by.is_pydantic_dataclass(cls)


class _PydanticDataclass:
    """What msgspec is given in place of a pydantic dataclass: it would decode
    one as a plain dataclass, its validators never run. A class it does not
    know, whose values it hands to _dec_hook, which has pydantic validate them."""

    adapter: ClassVar[Any]  # the dataclass's pydantic TypeAdapter
    # Its init=False fields: msgspec encodes them, and pydantic takes them for
    # extra arguments (refused with extra="forbid"); _dec_hook drops them.
    not_init: ClassVar[frozenset[str]]


@functools.cache
def _validated_by_pydantic(typ: Any) -> type[_PydanticDataclass]:
    cls = typing.get_origin(typ) or typ
    namespace = {
        "__module__": cls.__module__,
        "__qualname__": cls.__qualname__,
        "adapter": sys.modules["pydantic"].TypeAdapter(typ),
        "not_init": frozenset(f.name for f in dataclasses.fields(cls) if not f.init),
    }
    # An ABC, with the dataclass registered: msgspec checks that what
    # _dec_hook returns is an instance of the type it asked for.
    stand_in = abc.ABCMeta(cls.__name__, (_PydanticDataclass,), namespace)
    stand_in.register(cls)
    return typing.cast(type[_PydanticDataclass], stand_in)


def _for_msgspec(typ: Any) -> Any:
    """``typ`` as msgspec is given it: a pydantic dataclass in it as a class
    that pydantic validates (_unchecked refuses one this cannot reach: in a
    field of a Struct, say)."""
    return _map_type(typ, lambda t: _validated_by_pydantic(t) if _pydantic_dataclass(t) else t)


@functools.cache
def _strict_somewhere(model: Any) -> bool:
    """Whether a pydantic model, or a model or field in it, is strict."""

    def strict(node: Any) -> bool:
        if isinstance(node, dict):
            return node.get("strict") is True or any(map(strict, node.values()))
        return isinstance(node, list | tuple) and any(map(strict, node))

    return strict(model.__pydantic_core_schema__)


def _strict_fault(value: Any, dump: Any) -> str | None:
    """What of a strict model's (or dataclass's) ``value`` its strict config
    refuses and the receiver would take, changed: None if nothing.

    The receiver validates laxly: msgpack carries a tuple as a list, an enum as
    its value, a UUID as a str. The dump, with its Python values still, is
    judged strictly here; but what the model's own serializers or
    use_enum_values made of a valid value (a str for a datetime, an enum's
    value, a dict for a dataclass) fails too. So a field is refused only if it
    also comes out of the receiver's lax validation other than it is held:
    "5" held in an int field, a list in a tuple field."""
    pydantic = sys.modules["pydantic"]
    try:
        _validated(type(value), dump, strict=None)
        return None
    except pydantic.ValidationError as exc:
        strict = exc
    try:
        received = _validated(type(value), dump, strict=False)
    except pydantic.ValidationError:
        return None  # refused by the receiver's validation too, which reports it
    for error in strict.errors():
        field = error["loc"][0] if error["loc"] else None
        if not isinstance(field, str) or getattr(received, field, None) != getattr(
            value, field, None
        ):
            return _pydantic_error(error)
    return None


def _validated(cls: Any, dump: Any, strict: bool | None) -> Any:
    """``dump`` validated, by field name, as the pydantic model or dataclass
    ``cls``: as its config says (``strict`` None), or laxly, as _dec_hook does."""
    if _pydantic_model(cls):
        return cls.model_validate(dump, strict=strict, by_alias=False, by_name=True)
    if strict is False:
        adapter = _validated_by_pydantic(cls).adapter
        return adapter.validate_python(dump, strict=False, by_alias=False, by_name=True)
    # As its constructor validates its arguments: strict, pydantic would take
    # nothing but an instance for the dataclass as a whole.
    instance = cls.__new__(cls)
    arguments = sys.modules["pydantic_core"].ArgsKwargs((), dump)
    cls.__pydantic_validator__.validate_python(
        arguments, self_instance=instance, by_alias=False, by_name=True
    )
    return instance


def _pydantic_encoded(value: Any, dump: Any) -> msgspec.Raw:
    """A pydantic model's or dataclass's dump, encoded; a _StrictFault if its
    strict config refuses what the receiver would take, changed (see
    _strict_fault)."""
    cls: Any = type(value)
    if _strict_somewhere(cls):
        try:
            fault = _strict_fault(value, dump)
        except Exception as exc:
            if _raised_in_a_signal_handler(exc):
                raise
            # A validator's own exception (not a ValidationError): the
            # validating decode that follows meets it too, and reports it.
            fault = None
        if fault is not None:
            raise _StrictFault(f"{cls.__qualname__} is strict: {fault}", value)
    return msgspec.Raw(_dump_encoder.encode(dump))


class _StrictFault(ValueError):
    """A value of a strict pydantic model or dataclass that its strict validation refuses."""

    def __init__(self, message: str, model: Any) -> None:
        super().__init__(message)
        self.model = model  # the value at fault, which _place_of finds


class _ValidatorRaised(ValueError):
    """A validator's own exception, of any class (``OutOfStock(Exception)``), as
    the value's fault: it refused the value, though not the way pydantic or
    msgspec take for a refusal. Not a signal handler's exception, which goes
    on as it came (see _raised_in_a_signal_handler)."""

    def __init__(self, raised: Exception) -> None:
        super().__init__(f"{type(raised).__name__}: {raised}")
        self.raised = raised  # the cause of the error that reports it (see _cause)


def _raised_in_a_signal_handler(exc: BaseException) -> bool:
    """Whether ``exc`` came out of a Python signal handler installed now: its
    traceback goes through the handler's code. Python runs a handler in the
    main thread between two bytecodes of whatever runs there, a validator
    too; a timer's exception, say, is then no fault of the value, though of a
    class that a validator might raise. (An exception that another thread
    sets in this one, PyThreadState_SetAsyncExc, shows no such mark.)"""
    handlers = {_code_of(signal.getsignal(signum)) for signum in signal.valid_signals()}
    handlers.discard(None)
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code in handlers:
            return True
        tb = tb.tb_next
    return False


def _code_of(handler: Any) -> types.CodeType | None:
    """The code a signal handler runs: a function's, a method's, a
    partial's function's, a callable object's ``__call__``'s; None for
    SIG_DFL, SIG_IGN and handlers written in C."""
    while isinstance(handler, functools.partial):
        handler = handler.func
    handler = getattr(handler, "__func__", handler)  # a bound method's function
    if not isinstance(handler, types.FunctionType) and callable(handler):
        handler = type(handler).__call__
    return handler.__code__ if isinstance(handler, types.FunctionType) else None


def _pydantic_fault(exc: Any) -> str:
    """The first fault a pydantic ValidationError names, with the field's path."""
    return _pydantic_error(exc.errors()[0])


def _pydantic_error(error: Any) -> str:
    """One of the faults of a pydantic ValidationError, with the field's path."""
    loc = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error["loc"])
    msg: str = error["msg"]
    if error["type"] == "enum" and isinstance(error["input"], list):
        msg += (
            " (msgpack, like JSON, carries a tuple as a list, and pydantic takes no "
            "list for an enum whose values are tuples, in its own JSON round trip "
            "either: give the enum values of another type, such as strings)"
        )
    # msgspec appends " - at `$...`" (where the model is); _path_of joins both.
    return f"{msg} ({_FIELD} {loc})" if loc else msg


def _enc_hook(value: Any) -> Any:
    cls: Any = type(value)
    if _pydantic_model(cls):
        # Python mode keeps datetimes, bytes, UUIDs... as objects msgpack
        # encodes natively: no round trip through JSON text. By field name, as
        # _dec_hook validates: an alias may be one-sided (serialization only).
        # warnings=False: a wrongly typed field is reported by the validation
        # that follows, as an ArgumentTypeError with its path, not as a warning.
        dump = value.model_dump(mode="python", round_trip=True, warnings=False)
        return _pydantic_encoded(value, dump)
    numpy = sys.modules.get("numpy")  # imported only by programs that use it
    if (
        numpy is not None
        and isinstance(value, (numpy.number, numpy.bool_))
        and not isinstance(value, numpy.timedelta64)  # an integer to numpy
    ):
        # What numpy's reductions return (np.float64 even subclasses float): the
        # Python scalar, which the validating decode then checks against the
        # declared type, so np.float64 where int is declared is still refused.
        # Numbers only: a datetime64 or timedelta64 in ns would become an int.
        # A longdouble stays one (item() keeps its precision): refused below.
        plain = value.item()
        if not isinstance(plain, numpy.generic):
            return plain
    # A subclass of int, float, str or bytes (np.bytes_; bool and enums never
    # reach the hook): its plain value. Not str(value): a subclass may
    # override __str__.
    if isinstance(value, int):
        return int.__int__(value)
    if isinstance(value, float):
        return float.__float__(value)
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, bytes):
        return bytes.__bytes__(value)
    # A TypeError, which EncapType.encode reports as an ArgumentTypeError.
    if numpy is not None and isinstance(value, numpy.ndarray):
        raise TypeError(
            "msgspec cannot encode ndarray values: pass a.tolist() where a list is "
            "declared, a.tobytes() where bytes are, or declare a netmcore.SharedArray "
            "(the handle of an array in shared memory: netmcore.SharedArray.from_array(a) "
            "copies it there)"
        )
    raise TypeError(
        f"msgspec cannot encode {type(value).__name__} values, which cannot cross to "
        "another process: pass plain data of the declared type (numbers, str, bytes, "
        "lists, tuples, dicts, Structs, dataclasses, ...)"
    )


# How to make a buffer msgspec (or a Buffer) can take out of one that is not
# C-contiguous, such as a slice with a step or a transposed array.
CONTIGUOUS_FIX = "pass a contiguous copy: bytes(view), or numpy.ascontiguousarray(a)"


def _encode_fix(exc: BaseException) -> str:
    """The fix for what msgspec could not encode, where its message lacks one."""
    if isinstance(exc, RecursionError):
        return "; nest it less deeply, or break the cycle if it contains itself"
    if isinstance(exc, BufferError):  # "memoryview: underlying buffer is not C-contiguous"
        return f"; {CONTIGUOUS_FIX}"
    if "serialize ints" in str(exc):
        return "; pass such an int as a str"
    if isinstance(exc, UnicodeEncodeError) and "surrogates" in exc.reason:
        # What os.listdir, os.walk and sys.argv make of bytes that are not UTF-8.
        return (
            "; a str must be valid Unicode, and this one holds a lone surrogate, as "
            "os.listdir or os.walk give a file name that is not UTF-8: pass such a name "
            "as bytes (os.fsencode(name), typed bytes), or os.fsencode(name).decode("
            "errors='replace') if it is only shown"
        )
    return ""


def _dataclasses_dumped(value: Any) -> Any:
    """``value`` with each pydantic dataclass in it (itself, or in its lists,
    tuples, sets and dicts, where a type's parts put one) as pydantic dumps
    it, as _enc_hook does a model: msgspec encodes a dataclass itself, field
    by field, never calling _enc_hook, and could not encode a Path, URL or IP
    address in one, nor apply its serializers."""
    cls: Any = type(value)
    if _pydantic_dataclass(cls):
        stand_in = _validated_by_pydantic(cls)
        dump = stand_in.adapter.dump_python(value, mode="python", round_trip=True, warnings=False)
        if stand_in.not_init and isinstance(dump, dict):  # not arguments: see _PydanticDataclass
            dump = {k: v for k, v in dump.items() if k not in stand_in.not_init}
        return _pydantic_encoded(value, dump)
    if isinstance(value, list | tuple | set | frozenset):
        return [_dataclasses_dumped(v) for v in value]  # an array to msgpack all the same
    if isinstance(value, dict):
        return {k: _dataclasses_dumped(v) for k, v in value.items()}
    return value


def _jsonable(value: Any) -> Any:
    """A value inside a pydantic dump (a model's or dataclass's) that msgpack
    cannot hold (Path, URL, IP address...), in its JSON form, which the
    receiver's lax validation turns back. Only inside such a dump: a Path where
    ``str`` is declared is still refused."""
    pydantic = sys.modules["pydantic"]
    if isinstance(value, (pydantic.SecretStr, pydantic.SecretBytes)):
        return value.get_secret_value()  # the JSON form would be "**********"
    return sys.modules["pydantic_core"].to_jsonable_python(value)


def _dec_hook(typ: Any, value: Any) -> Any:
    if typ is object:  # msgspec asks about `object` once a hook is set: any value
        return value
    if _pydantic_model(typ):
        validate = typ.model_validate
    elif isinstance(typ, type) and issubclass(typ, _PydanticDataclass):
        validate = typ.adapter.validate_python
        if typ.not_init and isinstance(value, dict):
            value = {k: v for k, v in value.items() if k not in typ.not_init}
    else:
        raise NotImplementedError(f"msgspec cannot decode {typ!r}")
    pydantic = sys.modules["pydantic"]
    try:
        # Lax even for strict models: msgpack has no tuples (they decode as
        # lists); the sender held the values to a strict model (see _enc_hook).
        return validate(value, strict=False, by_alias=False, by_name=True)
    except pydantic.ValidationError as exc:
        raise ValueError(_pydantic_fault(exc)) from None
    except Exception as exc:
        # pydantic makes a ValidationError of a validator's ValueError and
        # AssertionError only, and passes on the rest as they came.
        if _raised_in_a_signal_handler(exc):
            raise
        raise _ValidatorRaised(exc) from exc  # a ValueError: msgspec adds the path


def _schema_hook(typ: Any) -> dict[str, Any]:
    if typ is object:
        # Any value, as for Any: msgspec refuses an empty answer, so a mark that
        # _tidy_schema removes stands for the empty schema.
        return {_ANY: True}
    if _pydantic_model(typ) or (isinstance(typ, type) and issubclass(typ, _PydanticDataclass)):
        schema_of = typ.model_json_schema if _pydantic_model(typ) else typ.adapter.json_schema
        try:
            # By field name, as values travel (see _enc_hook): with the aliases, a
            # model whose field is renamed to its old alias kept its fingerprint.
            schema: dict[str, Any] = schema_of(
                by_alias=False, schema_generator=_pydantic_schema_generator()
            )
        except sys.modules["pydantic"].errors.PydanticInvalidForJsonSchema as exc:
            # A field of an arbitrary class, or a Callable: nothing msgpack can carry.
            raise _NoJsonSchema(
                f"pydantic has no JSON Schema for {typ.__qualname__}: {str(exc).splitlines()[0]}"
            ) from exc
        # Marked, until _tidy_schema, as pydantic's (see _canonical).
        return {**schema, _PYDANTIC: True}
    raise NotImplementedError(f"no JSON Schema for {typ!r}")


class _NoJsonSchema(TypeError):
    """A pydantic model or dataclass of which pydantic can give no JSON Schema."""


@functools.cache
def _pydantic_schema_generator() -> type:
    """pydantic's JSON Schema generator, with the type of a dict's keys (as
    ``propertyNames``), which it leaves out unless they are constrained
    strings: without them ``dict[int, int]`` had the schema of ``dict[str, int]``."""
    json_schema = importlib.import_module("pydantic.json_schema")

    class KeyedSchema(json_schema.GenerateJsonSchema):  # type: ignore[misc, name-defined]
        def dict_schema(self, schema: Any) -> Any:
            json = super().dict_schema(schema)
            if "propertyNames" not in json and "patternProperties" not in json:
                keys = self.generate_inner(schema["keys_schema"]) if "keys_schema" in schema else {}
                if keys != {"type": "string"}:
                    json["propertyNames"] = keys
            return json

    return KeyedSchema


def _unsupported(typ: Any, name: str, exc: TypeError) -> str:
    """Why ``typ`` cannot be a process argument or result, and what to use instead."""
    # msgspec's advice on its schema_hook (which netmcore does not take) ends
    # with the line that names the part it cannot encode.
    why = str(exc).splitlines()[-1] if "schema_hook" in str(exc) else str(exc)
    advice = (
        "use types msgspec can encode: builtins, tuples, lists, dicts, Structs, "
        "dataclasses, TypedDicts, enums, datetimes, bytes, pydantic models"
    )
    packages: set[str] = set()
    handles: list[str] = []

    def note_package(part: Any, owner: type | None) -> None:
        package = getattr(part, "__module__", "").partition(".")[0]
        packages.add(package)
        handle = getattr(typing.get_origin(part) or part, "__qualname__", None)
        if package == "netmcore" and handle in _OPENED_BY:
            handles.append(handle)

    # A Struct, dataclass, TypedDict or model: the part at fault may be a
    # field's type.
    _each_part(
        typ,
        note_package,
        lambda cls: (
            _package(cls) != "builtins"
            and not (_package(cls) == "netmcore" and cls.__qualname__ in _OPENED_BY)
        ),
    )
    if handles:
        what, call = _OPENED_BY[handles[0]]
        advice = (
            f"for a netmcore.{handles[0]}, put its {what} in it instead, and open it in "
            f"the process with netmcore.{call}"
        )
    elif "numpy" in packages:
        advice = (
            "for a numpy array, put a netmcore.SharedArray (the handle of an array in "
            "shared memory, which SharedArray.from_array(a) makes) in it, or the array's "
            "bytes or list (a.tobytes(), a.tolist())"
        )
    elif isinstance(exc, _NoJsonSchema):
        advice = (
            "give the model fields that can cross to another process: plain data, "
            "not a Callable or an instance of an arbitrary class"
        )
    return f"{name} cannot be a process argument or result: {why}; {advice}"


def _package(cls: type) -> str:
    return cls.__module__.partition(".")[0]


def _each_part(
    typ: Any, f: Callable[[Any, type | None], None], into: Callable[[type], bool]
) -> None:
    """Call ``f(part, owner)`` on ``typ`` and, depth first, on every part of
    it: its type arguments (an ``Annotated``'s metadata too) and, for each
    class that ``into`` takes (once), the types of its fields, of which
    ``owner`` is that class (None: a part of ``typ`` itself)."""
    seen: set[int] = set()

    def walk(t: Any, owner: type | None) -> None:
        def visit(part: Any) -> Any:
            f(part, owner)
            cls = typing.get_origin(part) or part
            if isinstance(cls, type) and id(cls) not in seen and into(cls):
                seen.add(id(cls))
                for field in _field_types(cls):
                    walk(field, cls)
            return part

        _map_type(t, visit)

    walk(typ, None)


def _field_types(cls: type) -> list[Any]:
    """The types of the fields of a class (a Struct, dataclass, TypedDict,
    model...), with their ``Annotated`` metadata; none if it has none."""
    # pydantic's own, as pydantic resolved them: a nested model's quoted names
    # were looked up where it was defined, not in its module only.
    fields = getattr(cls, "__pydantic_fields__", None)
    if isinstance(fields, dict):
        return [field.annotation for field in fields.values()]
    try:
        return list(typing.get_type_hints(cls, include_extras=True).values())
    except Exception:  # a name it cannot resolve, or no class of fields
        return []


# Where the Annotated metadata that pydantic reads comes from: msgspec, which
# checks every value outside pydantic's models and dataclasses, skips it.
_PYDANTIC_ONLY = ("annotated_types", "pydantic", "pydantic_core")
# The constraints that annotated_types, pydantic and msgspec.Meta name alike.
_CONSTRAINTS = ("gt", "ge", "lt", "le", "multiple_of", "min_length", "max_length", "pattern")


def _unchecked(typ: Any, name: str) -> str | None:
    """Why values of ``typ`` would cross unchecked where it says they are
    checked, and the fix; None if they would not: pydantic's constraints and
    validators, which msgspec skips, and a pydantic dataclass where msgspec
    decodes it as a plain one (in a field of a Struct, say: _for_msgspec
    reaches only the type's own parts)."""
    found: list[str] = []

    def note(part: Any, owner: type | None) -> None:
        if found:
            return
        where = f" in a field of {type_name(owner)}" if owner is not None else ""
        if owner is not None and _pydantic_dataclass(part):
            found.append(
                f"{type_name(part)} is a pydantic dataclass{where}, which msgspec decodes, "
                "as it decodes a plain dataclass: its pydantic validation would never run; "
                f"make {type_name(owner)} a pydantic model or dataclass too, or "
                f"{type_name(part)} a pydantic BaseModel"
            )
        elif (
            not isinstance(part, type)
            and _package(type(part)) in _PYDANTIC_ONLY
            and not _documentation_only(part)
        ):
            pieces = getattr(part, "metadata", None)  # a pydantic FieldInfo's constraints
            meta = {
                key: getattr(piece, key)
                for piece in (pieces if isinstance(pieces, list) else [part])
                for key in _CONSTRAINTS
                if getattr(piece, key, None) is not None
            }
            spelled = ", ".join(f"{key}={value!r}" for key, value in meta.items())
            model = "declare the value as a field of a pydantic BaseModel, which pydantic checks"
            fix = (
                f"write it as msgspec.Meta({spelled}), which msgspec checks, or {model}"
                if meta
                else f"{model} (or write a constraint as msgspec.Meta(...), which msgspec checks)"
            )
            shown = "Field(...)" if isinstance(pieces, list) else repr(part)
            found.append(
                f"{_clip(_without_addresses(shown))}{where} is Annotated metadata that pydantic "
                "reads and msgspec, which checks this type, skips: values that break it "
                f"would cross unchecked; {fix}"
            )

    # Not into pydantic's own classes, which pydantic validates whole.
    _each_part(
        typ,
        note,
        lambda cls: (
            _package(cls) != "builtins"
            and not _pydantic_model(cls)
            and not _pydantic_dataclass(cls)
        ),
    )
    return f"{name} cannot be a process argument or result: {found[0]}" if found else None


def _classes_named(typ: Any, name: str) -> list[str]:
    """The classes in ``typ`` (at any depth) whose name is ``name``."""
    named: list[str] = []

    def note(part: Any, owner: type | None) -> None:
        cls = typing.get_origin(part) or part
        if isinstance(cls, type) and cls.__name__ == name and type_name(cls) not in named:
            named.append(type_name(cls))

    _each_part(typ, note, lambda cls: _package(cls) != "builtins")
    return named


def _documentation_only(part: Any) -> bool:
    """Whether pydantic metadata checks nothing: a Field with a description, a
    title, examples (no constraint), a WithJsonSchema (pydantic's schema alone)."""
    # Looked up in sys.modules, not as attributes of pydantic: annotated_types
    # may be used without pydantic, and pydantic loads its submodules only on
    # first use (after `import pydantic` alone, `pydantic.fields` is an
    # AttributeError). An object of a class whose module is not loaded yet
    # cannot exist.
    fields = sys.modules.get("pydantic.fields")
    if fields is not None and isinstance(part, fields.FieldInfo):
        return not part.metadata and part.discriminator is None
    json_schema = sys.modules.get("pydantic.json_schema")
    return json_schema is not None and isinstance(part, json_schema.WithJsonSchema)


def _clash(typ: Any, name: str, clash: _NameClash) -> str:
    """What to do about two types of one name, which JSON Schema cannot tell apart."""
    named = _classes_named(typ, clash.name)
    which = f" ({' and '.join(named)})" if len(named) > 1 else ""
    return (
        f"{name} cannot be a process argument or result: it holds two different types "
        f"named {clash.name}{which}, which its JSON Schema, naming each type by its class "
        "name, cannot tell apart; rename one of them"
    )


# netmcore's handles on shared objects hold this process's mapping of the
# object, or are bound to a value type: what names the object travels
# instead, and the receiver opens it with this call.
_RES_ID = "res_id (a netmcore.ResId)"
_NAME = "name (a str)"
_OPENED_BY = {
    "ShmMutex": (_RES_ID, "ShmMutex.open(res_id)"),
    "ShmCondition": (_RES_ID, "ShmCondition.open(res_id)"),
    "Buffer": (_RES_ID, "Buffer.open(res_id)"),
    "Mailbox": (_RES_ID, "Mailbox.open(res_id, T)"),
    "ShmSegment": (_RES_ID, "open_shm(res_id)"),
    "PosixSemaphore": (_RES_ID, "open_sem(res_id)"),
    "ComputeResource": ("id (a netmcore.ResId)", "get_resource(res_id)"),
    "PluginMutex": (_NAME, "PluginMutex(name)"),
    "PluginSemaphore": (_NAME, "PluginSemaphore(name)"),
    "PluginBarrier": ("name (a str) and parties", "PluginBarrier(name, parties)"),
    "SharedVar": (_NAME, "SharedVar(name, T)"),
    "Mbox": (_NAME, "Mbox(name, T)"),
}


def _map_type(typ: Any, f: Callable[[Any], Any]) -> Any:
    """``typ`` with ``f`` applied to it and, depth first, to its type arguments
    (a ``NewType``'s being its supertype)."""
    typ = f(typ)
    if isinstance(typ, typing.NewType):
        # msgspec reads a NewType as its supertype, which may hold what f
        # changes (a pydantic dataclass, that _for_msgspec maps): then the
        # supertype, changed, stands for it.
        inner = _map_type(typ.__supertype__, f)
        return typ if inner is typ.__supertype__ else inner
    args = typing.get_args(typ)
    if not args:
        return typ
    fixed = tuple(_map_type(a, f) for a in args)
    if fixed == args:
        return typ
    origin = typing.get_origin(typ)
    try:
        if origin in (typing.Union, types.UnionType):
            return typing.Union[fixed]  # noqa: UP007 - built at run time
        return origin[fixed]
    except TypeError:
        return typ


def _object_as_any(typ: Any) -> Any:
    """``typ`` with ``object`` spelled ``Any`` in type arguments: msgspec decodes
    both as any value, but leaves out the schema of ``Any`` items (``list[Any]``
    is ``{"type": "array"}``), which _schema_hook cannot do."""
    return _map_type(typ, lambda t: Any if t is object else t)


def _without_metadata(typ: Any) -> Any:
    """``typ`` without its ``Annotated`` metadata, as mypy sees it."""
    return _map_type(
        typ, lambda t: typing.get_args(t)[0] if typing.get_origin(t) is Annotated else t
    )


def same_to_mypy(a: EncapType[Any], b: EncapType[Any]) -> bool:
    """Whether mypy takes a value of either type for the other: the same type
    up to ``Annotated`` metadata, or ``Any`` where the other has a type (a
    value of one is then validated as the other where it is decoded)."""
    if a.fingerprint == b.fingerprint:
        return True
    plain_a, plain_b = _without_metadata(a.type), _without_metadata(b.type)
    if _fits_with_any(plain_a, plain_b):
        return True
    try:
        return EncapType(plain_a).fingerprint == EncapType(plain_b).fingerprint
    except TypeError:
        return False


def _fits_with_any(a: Any, b: Any) -> bool:
    """Whether ``a`` and ``b`` are the same type expression but where either
    has ``Any``: mypy takes ``Any`` for any type, and any type for ``Any``, at
    any depth (``list[Any]`` for ``list[int]``, though ``list`` is invariant)."""
    if a is Any or b is Any or a == b:
        return True
    origin_a, origin_b = (
        typing.Union if o is types.UnionType else o  # int | str, as Union[int, str]
        for o in (typing.get_origin(a), typing.get_origin(b))
    )
    args_a, args_b = typing.get_args(a), typing.get_args(b)
    if origin_a is None or origin_a != origin_b:
        return False
    if origin_a is typing.Union:  # in any order, as mypy reads a union
        return all(any(_fits_with_any(x, y) for y in args_b) for x in args_a) and all(
            any(_fits_with_any(x, y) for x in args_a) for y in args_b
        )
    return len(args_a) == len(args_b) and all(
        _fits_with_any(x, y) for x, y in zip(args_a, args_b, strict=True)
    )


_FIELD = "pydantic field"
_ANY = "netmcore-any-value"
_PYDANTIC = "netmcore-pydantic-schema"
_FIELD_ORDER = "netmcore-field-order"  # in _canonical's schema only, never shown
_encoder = msgspec.msgpack.Encoder(enc_hook=_enc_hook)
_dump_encoder = msgspec.msgpack.Encoder(enc_hook=_jsonable)

# Values of these types are valid exactly when their type is the declared one,
# so they skip the validating decode (which would copy a large bytes value).
_SCALARS: frozenset[Any] = frozenset({bytes, str, int, bool, type(None)})

# Bytes values above this size are kept out of the encoding (see Encap.parts).
_FUSE_MIN = 64 * 1024


@dataclass(frozen=True, slots=True)
class Encap:
    """A value of some type, encoded, tagged with its type's fingerprint.

    ``parts`` are the msgpack encoding in pieces, to be written one after the
    other: a large ``bytes`` value is its msgpack header followed by the value
    itself, so that it is copied once, into shared memory, and not first into
    an encoding. A value received through shared memory is one read-only view
    of the mapping, which lives as long as it.
    """

    type_name: str
    fingerprint: str
    parts: tuple[bytes | memoryview, ...]

    @property
    def data(self) -> bytes | memoryview:
        """The whole msgpack encoding, in one piece."""
        return self.parts[0] if len(self.parts) == 1 else b"".join(self.parts)

    def __repr__(self) -> str:
        return f"Encap({self.type_name}, {sum(len(p) for p in self.parts)} bytes)"


def type_name(typ: Any) -> str:
    """A readable name for a type or type expression, the same however the
    code spells it (``int | None`` for ``Optional[int]`` too), and with no
    memory address of a default repr (an ``Annotated`` marker's, or ``<function
    f at 0x7f...>``): a contract's file holds it, which is checked for drift."""
    origin, args = typing.get_origin(typ), typing.get_args(typ)
    if isinstance(typ, type) and not getattr(typ, "__args__", None):
        return (
            typ.__qualname__
            if typ.__module__ == "builtins"
            else (f"{typ.__module__}.{typ.__qualname__}")
        )
    if origin in (typing.Union, types.UnionType):
        return " | ".join(map(_argument_name, args))
    if origin is Annotated:
        metadata = ", ".join(_without_addresses(repr(m)) for m in args[1:])
        return f"Annotated[{_argument_name(args[0])}, {metadata}]"
    if origin is typing.Literal:
        return f"Literal[{', '.join(map(repr, args))}]"
    if origin is not None and args:
        return f"{type_name(origin)}[{', '.join(map(_argument_name, args))}]"
    return _without_addresses(repr(typ).replace("typing.", ""))


def _argument_name(arg: Any) -> str:
    """The name of a type argument, as Python writes it in a type expression."""
    if arg is type(None):
        return "None"
    if arg is Ellipsis:
        return "..."
    if isinstance(arg, list):  # Callable[[int], str]'s
        return f"[{', '.join(map(_argument_name, arg))}]"
    return type_name(arg)


def _without_addresses(text: str) -> str:
    """``text`` without the memory addresses of default reprs, which change
    with every run."""
    return re.sub(r" at 0x[0-9a-fA-F]+>", ">", text)


# The most bytes (of UTF-8) of a type's name that is kept beside its
# fingerprint, where a fixed room or a message holds it (a Mailbox's header, a
# plugin request), so that a mismatch names the type it found: whole cache
# lines, and longer than any name a reader takes in at a glance.
TYPE_NAME_MAX = 192


def clipped_name(name: str) -> str:
    """``name``, cut (and ended with "...") to fit ``TYPE_NAME_MAX`` bytes of UTF-8."""
    data = name.encode()
    if len(data) <= TYPE_NAME_MAX:
        return name
    # errors="ignore" drops a character the cut went through the middle of.
    return data[: TYPE_NAME_MAX - 3].decode(errors="ignore") + "..."


def fingerprint(schema: dict[str, Any], kinds: Any = None) -> str:
    """A stable hash of a JSON Schema (and of ``kinds``, where the schema alone
    is ambiguous): the same schema gives the same string."""
    canonical = json.dumps(schema, sort_keys=True, separators=(",", ":"))
    if kinds:
        canonical += "|" + json.dumps(kinds, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _map_like(node: msgspec.inspect.Type) -> bool:
    """Whether msgspec encodes a class's values as maps, its fields by name."""
    inspect = msgspec.inspect
    if isinstance(node, inspect.StructType):
        return not node.array_like
    return isinstance(node, inspect.DataclassType | inspect.TypedDictType)


def _kinds_if_ambiguous(typ: Any) -> list[Any] | None:
    """The kinds of the nodes of ``typ`` (with their constraints), if its JSON
    Schema is ambiguous; else None (and the fingerprint is the schema's alone).

    msgspec gives ``datetime`` (unless it must be aware) and ``time`` the schema
    of ``str``, ``{"type": "string"}``, and says nothing of a dict's keys but
    for constrained strings: by the schema alone, a field changed from one to
    another would not change the fingerprint, and a ``dict[str, int]`` was
    unwrapped as a ``dict[date, int]``.

    In the order of neither a union's members nor a map-encoded class's fields,
    which do not change how msgspec decodes a value (see _canonical); classes
    by name, each described once, in the second item.
    """
    inspect = msgspec.inspect
    classes: dict[str, Any] = {}
    names: dict[int, str] = {}
    ambiguous = False

    def described(node: Any) -> Any:
        nonlocal ambiguous
        while isinstance(node, inspect.Metadata):  # for readers and programs, not the wire
            node = node.type
        kind = type(node).__name__
        if isinstance(node, inspect.DateTimeType | inspect.TimeType):
            ambiguous = True
        key = getattr(node, "key_type", None)  # a dict's
        while isinstance(key, inspect.Metadata):
            key = key.type
        if key is not None and not isinstance(key, inspect.StrType):
            ambiguous = True
        cls = getattr(node, "cls", None)
        if cls is not None:
            if id(node) in names:  # described already, or being described: recursive
                return [kind, names[id(node)]]
            name = (typing.get_origin(cls) or cls).__qualname__
            while name in classes:  # another class of that name
                name += "'"
            names[id(node)] = name
            classes[name] = None
        parts: list[Any] = [kind]
        for attr in node.__struct_fields__:
            value = getattr(node, attr)
            items = value if isinstance(value, tuple) else (value,)
            if items and all(isinstance(i, inspect.Type | inspect.Field) for i in items):
                inner = [
                    [i.encode_name, i.required, described(i.type)]
                    if isinstance(i, inspect.Field)
                    else described(i)
                    for i in items
                ]
                if isinstance(node, inspect.UnionType) or (attr == "fields" and _map_like(node)):
                    inner.sort(key=json.dumps)
                parts.append([attr, inner])
            elif all(i is None or isinstance(i, bool | int | float | str) for i in items):
                parts.append([attr, sorted(items, key=repr) if attr == "values" else value])
        if cls is None:
            return parts
        classes[names[id(node)]] = parts
        return [kind, names[id(node)]]

    description = described(inspect.type_info(typ))
    return [description, classes] if ambiguous else None


class EncapType(Generic[T]):
    """Wraps values of one type into :class:`Encap` and back, type-checked.

    Parameters
    ----------
    typ :
        Any type msgspec handles: builtins, tuples, lists, dicts, Structs,
        dataclasses, TypedDicts, enums, datetimes, bytes, and unions of them.

    Raises
    ------
    TypeError
        If msgspec cannot encode values of ``typ``.
    """

    # Two overloads, here and wherever a type is given for T: mypy reads
    # TypeForm from version 2.2 on; under an older one the second is of no use,
    # and the first keeps a plain class (the usual case) inferred as it was.
    @overload
    def __init__(self, typ: type[T]) -> None: ...
    @overload
    def __init__(self, typ: TypeForm[T]) -> None: ...
    def __init__(self, typ: Any) -> None:
        self.type: Any = typ
        self.name = type_name(typ)
        # What a plugin request or a Mailbox header carries, beside the fingerprint.
        self.clipped_name = clipped_name(self.name)
        try:
            self._for_msgspec = for_msgspec = _for_msgspec(typ)
            self.schema: dict[str, Any] = msgspec.json.schema(
                _object_as_any(for_msgspec), schema_hook=_schema_hook
            )
            self._decoder: msgspec.msgpack.Decoder[T] = msgspec.msgpack.Decoder(
                for_msgspec, dec_hook=_dec_hook
            )
        except TypeError as exc:
            # Not chained: msgspec's own advice (a schema_hook, which netmcore does not
            # take) would come first; _unsupported keeps what it says of the type. A
            # pydantic dataclass where msgspec takes it for a plain one fails here when
            # a field's default is a pydantic Field(): what to fix is that (below).
            raise TypeError(
                _unchecked(typ, self.name) or _unsupported(typ, self.name, exc)
            ) from None
        except NameError as exc:  # a field's type named in quotes, and not defined (yet)
            raise TypeError(
                f"{self.name} cannot be a process argument or result yet: {exc}, in the "
                "field types of a class it holds, which are looked up when its process type "
                f"or EncapType is made; define {exc.name or 'that type'} above it"
            ) from exc
        unchecked = _unchecked(typ, self.name)
        if unchecked is not None:
            raise TypeError(unchecked)
        try:
            pydantic_parts = _tidy_schema(
                self.schema, lambda name: len(_classes_named(typ, name)) == 1
            )
        except _NameClash as clash:
            raise TypeError(_clash(typ, self.name, clash)) from None
        _clean_descriptions(self.schema)
        self.fingerprint = fingerprint(
            _canonical(self.schema, pydantic_parts),
            _kinds_if_ambiguous(_object_as_any(for_msgspec)),
        )

    def __repr__(self) -> str:
        return f"EncapType({self.name})"

    def encode(self, value: T, what: str = "value") -> bytes:
        """Encode ``value``, checking it against the type first.

        Raises
        ------
        ArgumentTypeError
            If the value does not match the type; the message names the path.
        """
        try:
            data = self._msgpack(value)
        except _StrictFault as exc:  # before the validation, which is lax: see _enc_hook
            # msgspec's encoding names no place: the model's own, then its field.
            path = (_place_of(value, exc.model) or "$") + _path_of(exc).removeprefix("$")
            raise ArgumentTypeError(
                f"{what} {_short(value)} does not match {self.name}: {exc}", path
            ) from exc
        # Too deep: a RecursionError; a buffer that is not C-contiguous: a BufferError.
        except (TypeError, ValueError, OverflowError, RecursionError, BufferError) as exc:
            raise ArgumentTypeError(
                f"{what} {_short(value)} cannot be encoded as {self.name}: {exc}{_encode_fix(exc)}",
                "$",
            ) from exc
        if type(value) is not self.type or self.type not in _SCALARS:
            try:
                self._decoder.decode(data)
            except msgspec.ValidationError as exc:
                path = _path_of(exc)
                raise ArgumentTypeError(
                    f"{what} {_short(value)} does not match {self.name}: "
                    f"{exc}{_value_there(value, path)}{_hint(exc)}",
                    path,
                ) from _cause(exc)
            except Exception as exc:
                # A validator that raises another kind (a __post_init__'s
                # LookupError), a msgspec.Raw that holds no msgpack: the value's
                # fault all the same, before anything is sent.
                if not _failed_of_its_own(exc):
                    raise
                # The encoding is msgspec's own, but for a msgspec.Raw's bytes.
                fix = (
                    "; a msgspec.Raw must hold one msgpack value, as "
                    "msgspec.Raw(msgspec.msgpack.encode(v)) does"
                    if isinstance(exc, msgspec.DecodeError)
                    else ""
                )
                raise ArgumentTypeError(
                    f"{what} {_short(value)} does not match {self.name}: {_fault(exc)}{fix}", "$"
                ) from exc
        return data

    def _msgpack(self, value: Any) -> bytes:
        """``value`` encoded, unchecked."""
        if self._for_msgspec is not self.type:  # it holds a pydantic dataclass
            value = _dataclasses_dumped(value)
        return _encoder.encode(value)

    def decode(self, data: bytes | memoryview) -> T:
        """Decode and validate bytes made by :meth:`encode`."""
        return self._decoder.decode(data)

    def reencode(self, data: bytes) -> bytes:
        """Bytes made by :meth:`encode` as the value encodes once read back
        (decoded as ``T``): an int given for a float is a float then, say."""
        return self._msgpack(self.decode(data))

    def wrap(self, value: T) -> Encap:
        """Encapsulate ``value``; raises :class:`ArgumentTypeError` if it does not match."""
        return self.wrap_as(value, "value")

    def wrap_as(self, value: T, what: str) -> Encap:
        """:meth:`wrap`, naming ``value`` as ``what`` in the error message."""
        if self.type is bytes and isinstance(value, bytes) and _FUSE_MIN < len(value) < 1 << 32:
            # msgpack's bin 32 is a 5-byte header, then the bytes as they are.
            header = b"\xc6" + len(value).to_bytes(4, "big")
            return Encap(self.name, self.fingerprint, (header, value))
        return Encap(self.name, self.fingerprint, (self.encode(value, what),))

    def decode_error(self, exc: Exception) -> ArgumentTypeError:
        """Describe why :meth:`unwrap` failed, with the path of the fault."""
        if isinstance(exc, ArgumentTypeError):  # unwrap's own, described already
            return exc
        if isinstance(exc, msgspec.ValidationError):
            return ArgumentTypeError(f"value does not match {self.name}: {exc}", _path_of(exc))
        return ArgumentTypeError(f"value does not match {self.name}: {_fault(exc)}", "$")

    def unwrap(self, encap: Encap) -> T:
        """Return the value inside ``encap``.

        Raises
        ------
        TypeError
            If ``encap`` is not an :class:`Encap`.
        EncapTypeMismatch
            If ``encap`` was made by an EncapType of another type.
        ArgumentTypeError
            If the value inside does not decode as this type, though its
            fingerprint is this type's (an Encap built by hand, or a
            validator that refuses here what it took where it was wrapped),
            with the path of the fault.
        """
        if not isinstance(encap, Encap):
            raise TypeError(
                f"{self!r}.unwrap takes an Encap, not {type(encap).__name__} {_short(encap)}: "
                f"pass what {self!r}.wrap(value) returned (msgpack bytes that "
                f"{self!r}.encode made are read by {self!r}.decode(data))"
            )
        if encap.fingerprint != self.fingerprint:
            raise EncapTypeMismatch(
                f"cannot unwrap a value encapsulated as {encap.type_name} "
                f"(fingerprint {encap.fingerprint}) as {self.name} "
                f"(fingerprint {self.fingerprint})"
            )
        try:
            return self.decode(encap.data)
        except Exception as exc:
            # Data of another type under this fingerprint: a pipeline's stage
            # given what the stage before returned, an Encap built by hand, or
            # a validator that refuses here what it took where it was wrapped
            # (raising a ValidationError, or any other kind).
            if not _failed_of_its_own(exc):
                raise
            raise self.decode_error(exc) from _cause(exc)


def _failed_of_its_own(exc: Exception) -> bool:
    """Whether ``exc``, out of a decode, is the value's fault: not a signal
    handler's exception, which goes on as it came (see _wire.failed_of_its_own)."""
    from ._wire import failed_of_its_own  # _wire imports this module

    return failed_of_its_own(exc, 1)


def _fault(exc: Exception) -> str:
    """What a decode that failed otherwise than by msgspec's validation says:
    msgspec's "MessagePack data is malformed", a validator's own exception."""
    return str(exc) if isinstance(exc, msgspec.DecodeError) else f"{type(exc).__name__}: {exc}"


def _cause(exc: Exception) -> BaseException:
    """What the error that reports ``exc`` is chained to: a validator's own
    exception, whole, rather than msgspec's ValidationError that carried it
    (of a _ValidatorRaised from _dec_hook)."""
    carrier = exc.__cause__
    return carrier.raised if isinstance(carrier, _ValidatorRaised) else exc


def _path_of(exc: Exception) -> str:
    # msgspec ends its messages with " - at `$.a[0]`" when the fault is nested;
    # a pydantic model's own field comes before it, as "(pydantic field .x)".
    text = str(exc)
    marker = " - at `"
    path = text[text.rindex(marker) + len(marker) : -1] if marker in text else "$"
    if path.startswith("key` in `"):  # a bad dict key: "- at `key` in `$.d`"
        path = path[len("key` in `") :]
    # Greedy to the last ")" before msgspec's tail: a dict key may hold ")".
    inner = re.search(rf"\({_FIELD} (.*)\)(?: - at `[^`]*`)?$", text, re.DOTALL)
    return path + inner.group(1) if inner else path


def _place_of(value: Any, target: object, path: str = "$") -> str | None:
    """Where ``target`` is in ``value``, first met as msgspec encodes it, in
    msgspec's path style (``$[3].x``; ``[...]`` for any dict's values, which
    a TypedDict's are too); None if it is held otherwise."""
    if value is target:
        return path
    parts: Iterable[tuple[str, Any]]
    if isinstance(value, msgspec.Struct):
        array_like = value.__struct_config__.array_like
        parts = (
            (f"[{i}]" if array_like else f".{field.encode_name}", getattr(value, field.name, None))
            for i, field in enumerate(msgspec.structs.fields(value))
        )
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        parts = (
            (f".{field.name}", getattr(value, field.name, None))
            for field in dataclasses.fields(value)
        )
    elif isinstance(value, dict):
        parts = (("[...]", item) for item in value.values())
    elif isinstance(value, list | tuple | set | frozenset):
        parts = ((f"[{i}]", item) for i, item in enumerate(value))
    else:
        return None
    for step, part in parts:
        found = _place_of(part, target, path + step)
        if found is not None:
            return found
    return None


# A step of a msgspec path: a field (or a dict's str key), or an item.
_STEP = re.compile(r"\.([A-Za-z_]\w*)|\[(\d+)\]")


def _value_there(value: Any, path: str) -> str:
    """The end of a nested fault's message that names the part of
    ``value`` at ``path``, which the message's clipped whole may not show:
    ", where the value is X"; nothing at the top, or where the path does
    not lead to one part (a dict's values, ``[...]``; a set's items)."""
    rest = path.removeprefix("$")
    if not rest or rest == path:
        return ""
    part = value
    while rest:
        step = _STEP.match(rest)
        if step is None:
            return ""
        name, index = step.groups()
        try:
            if index is None and isinstance(part, dict):  # a TypedDict, a dict[str, ...]
                part = part[name]
            elif index is None and isinstance(part, msgspec.Struct):
                fields = msgspec.structs.fields(part)
                part = getattr(part, next(f.name for f in fields if f.encode_name == name))
            elif index is None:  # a dataclass's, a pydantic model's field
                part = getattr(part, name)
            elif isinstance(part, msgspec.Struct):  # array_like, its tag first if it has one
                tagged = part.__struct_config__.tag is not None
                k = int(index) - tagged
                if k < 0:
                    return ""
                part = getattr(part, msgspec.structs.fields(part)[k].name)
            elif isinstance(part, list | tuple):
                part = part[int(index)]
            else:
                return ""
        except Exception:  # a mapping's own __getitem__, a property: no value named
            return ""
        rest = rest[step.end() :]
    return f", where the value is {_short(part)}"


def _hint(exc: msgspec.ValidationError) -> str:
    """The fix for a fault that Python's typing lets pass: mypy takes a bool
    for an int or a float, msgpack keeps them apart."""
    text = str(exc)
    if "got `bool`" in text and ("Expected `int`" in text or "Expected `float`" in text):
        return " (a bool is not taken for a number here: declare bool, or pass int(flag))"
    return ""


def _short(value: object) -> str:
    try:
        text = repr(value)
    except Exception:  # too deep (RecursionError), or a __repr__ that fails: the error stands
        return f"<{type(value).__qualname__} object>"
    return _clip(text)


def _clip(text: str) -> str:
    return text if len(text) <= 60 else text[:57] + "..."


class _NameClash(TypeError):
    """Two different types of one name in one schema (see _clash)."""

    def __init__(self, name: str) -> None:
        super().__init__(f"two different types are named {name} in one schema")
        self.name = name


def _tidy_schema(schema: dict[str, Any], one_class: Callable[[str], bool]) -> set[int]:
    """Move the "$defs" of inlined (pydantic) schemas to the root, where their
    "#/$defs/..." references point; drop the marks of _schema_hook. Return the
    ids of pydantic's schemas in it (whole, or from its "$defs"), for _canonical.

    Two schemas of one name are one class's if ``one_class(name)``: an enum or
    dataclass that msgspec and a pydantic model both hold, each describing it
    its own way; the first kept (msgspec's, at the root), else a _NameClash."""
    found: dict[str, Any] = {}
    pydantic: set[int] = set()

    def walk(node: Any, top: bool) -> None:
        if isinstance(node, dict):
            node.pop(_ANY, None)
            if node.pop(_PYDANTIC, False):
                pydantic.add(id(node))
            if not top and isinstance(node.get("$defs"), dict):
                for name, sub in node.pop("$defs").items():
                    if found.get(name, sub) != sub and not one_class(name):
                        raise _NameClash(name)
                    found.setdefault(name, sub)
            for value in node.values():
                walk(value, False)
        elif isinstance(node, list):
            for value in node:
                walk(value, False)

    walk(schema, True)
    if found:
        root = schema.setdefault("$defs", {})
        for name, sub in found.items():
            if root.get(name, sub) != sub:
                if not one_class(name):
                    raise _NameClash(name)
                continue  # msgspec's kept
            root[name] = sub
            pydantic.add(id(sub))
    return pydantic


# What a schema says for its readers alone, and not about how a value is
# encoded or decoded: a docstring, a msgspec.Meta's or a pydantic Field's
# description.
_DOCUMENTATION = frozenset({"title", "description", "examples", "$comment"})
# The keywords of JSON Schema whose value is a schema, a list of schemas, or
# names mapped to schemas; any other holds data (an "enum", a "default"...).
_SUBSCHEMA = frozenset(
    {"items", "additionalProperties", "propertyNames", "not", "contains", "if", "then", "else"}
    | {"additionalItems", "unevaluatedItems", "unevaluatedProperties"}
)
_SUBSCHEMAS = frozenset({"anyOf", "oneOf", "allOf", "prefixItems"})
_NAMED_SUBSCHEMAS = frozenset(
    {"properties", "patternProperties", "$defs", "definitions", "dependentSchemas"}
)


def _clean_descriptions(schema: dict[str, Any]) -> None:
    """Give the description of each class in ``schema`` (its "$defs"),
    which is its docstring, the indentation of ``inspect.cleandoc``: msgspec
    takes a docstring as it is, which Python 3.13 dedents as it compiles
    it, and the files of ``schemas/`` must not differ with the Python that
    wrote them. (A description given as such, a msgspec.Meta's or a pydantic
    Field's, is left as it was written.)"""
    for sub in schema.get("$defs", {}).values():
        if isinstance(sub, dict) and isinstance(sub.get("description"), str):
            sub["description"] = inspect.cleandoc(sub["description"])


def _canonical(schema: Any, pydantic: set[int], ordered: bool = False) -> Any:
    """``schema`` as its fingerprint hashes it: without what it says for its
    readers alone, and, outside pydantic's schemas (``pydantic``: their ids),
    with "required" and "anyOf" in a fixed order. msgspec decodes a map's
    fields in any order, and a union's member by the kind of the value (it
    takes no union of two members that one kind could be). pydantic may not:
    its smart union tries members in order, laxly, once none matches exactly (a
    str, "1.5", for ``float | Decimal``), and a validator may read the fields
    validated before its own."""
    if not isinstance(schema, dict):
        return schema
    ordered = ordered or id(schema) in pydantic
    canonical: dict[str, Any] = {}
    for key, value in schema.items():
        # But the "title" of pydantic's own schema of a model or dataclass: the
        # one place its class name is, when it is inlined, as a Struct's is in
        # its "$defs" key (else A{x: int} was unwrapped as B{x: int}).
        if key in _DOCUMENTATION and not (key == "title" and id(schema) in pydantic):
            continue
        if key in _SUBSCHEMA:
            value = _canonical(value, pydantic, ordered)
        elif key in _SUBSCHEMAS and isinstance(value, list):
            value = [_canonical(v, pydantic, ordered) for v in value]
            if key == "anyOf" and not ordered:
                value.sort(key=lambda v: json.dumps(v, sort_keys=True))
        elif key in _NAMED_SUBSCHEMAS and isinstance(value, dict):
            if key == "properties" and ordered:
                # A pydantic validator may read the fields validated before its
                # own, and fingerprint() sorts a map's keys.
                canonical[_FIELD_ORDER] = list(value)
            value = {k: _canonical(v, pydantic, ordered) for k, v in value.items()}
        elif key == "required" and not ordered and isinstance(value, list):
            value = sorted(value)
        canonical[key] = value
    return canonical
