"""Encapsulated values: a msgpack encoding plus the fingerprint of its type.

Upstream's ``Netplex_encap`` makes values of any type travel as one opaque type
and checks, when a value is unwrapped, that it is unwrapped as the type it was
wrapped as. Here the check holds across processes and code versions: the type
is identified by a fingerprint, a hash of its canonical JSON Schema.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Generic, TypeVar, overload

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


def _enc_hook(value: Any) -> Any:
    if _pydantic_model(type(value)):
        # Python mode keeps datetimes, bytes, UUIDs... as objects msgpack
        # encodes natively: no round trip through JSON text. By field name, as
        # _dec_hook validates: an alias may be one-sided (serialization only).
        # warnings=False: a wrongly typed field is reported by the validation
        # that follows, as an ArgumentTypeError with its path, not as a warning.
        dump = value.model_dump(mode="python", round_trip=True, warnings=False)
        return msgspec.Raw(_dump_encoder.encode(dump))
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
    # A subclass of int, float or str (bool and enums never reach the hook): its
    # plain value. Not str(value): a subclass may override __str__.
    if isinstance(value, int):
        return int.__int__(value)
    if isinstance(value, float):
        return float.__float__(value)
    if isinstance(value, str):
        return str.__str__(value)
    # A TypeError, which EncapType.encode reports as an ArgumentTypeError.
    if numpy is not None and isinstance(value, numpy.ndarray):
        raise TypeError(
            "msgspec cannot encode ndarray values: pass a.tolist() where a list is "
            "declared, a.tobytes() where bytes are, or declare a netmcore.SharedArray "
            "(the handle of an array in shared memory)"
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
    return ""


def _jsonable(value: Any) -> Any:
    """A value inside a model dump that msgpack cannot hold (Path, URL, IP
    address...), in its JSON form, which the receiver's lax model_validate turns
    back. Only inside a model: a Path where ``str`` is declared is still refused."""
    pydantic = sys.modules["pydantic"]
    if isinstance(value, (pydantic.SecretStr, pydantic.SecretBytes)):
        return value.get_secret_value()  # the JSON form would be "**********"
    return sys.modules["pydantic_core"].to_jsonable_python(value)


def _dec_hook(typ: Any, value: Any) -> Any:
    if typ is object:  # msgspec asks about `object` once a hook is set: any value
        return value
    if not _pydantic_model(typ):
        raise NotImplementedError(f"msgspec cannot decode {typ!r}")
    pydantic = sys.modules["pydantic"]
    try:
        # Lax even for strict models: msgpack has no tuples (they decode as lists),
        # and the sender's values were typed when it encoded them.
        return typ.model_validate(value, strict=False, by_alias=False, by_name=True)
    except pydantic.ValidationError as exc:
        error = exc.errors()[0]
        loc = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error["loc"])
        msg = error["msg"]
        if error["type"] == "enum" and isinstance(error["input"], list):
            msg += (
                " (msgpack, like JSON, carries a tuple as a list, and pydantic takes no "
                "list for an enum whose values are tuples, in its own JSON round trip "
                "either: give the enum values of another type, such as strings)"
            )
        # msgspec appends " - at `$...`" (where the model is); _path_of joins both.
        raise ValueError(f"{msg} ({_FIELD} {loc})" if loc else msg) from None


def _schema_hook(typ: Any) -> dict[str, Any]:
    if typ is object:
        # Any value, as for Any: msgspec refuses an empty answer, so a mark that
        # _tidy_schema removes stands for the empty schema.
        return {_ANY: True}
    if _pydantic_model(typ):
        schema: dict[str, Any] = typ.model_json_schema()
        return schema
    raise NotImplementedError(f"no JSON Schema for {typ!r}")


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
    seen: set[int] = set()

    def note_package(part: Any) -> Any:
        package = getattr(part, "__module__", "").partition(".")[0]
        packages.add(package)
        handle = getattr(typing.get_origin(part) or part, "__qualname__", None)
        if package == "netmcore" and handle in _OPENED_BY:
            handles.append(handle)
        elif isinstance(part, type) and package != "builtins" and id(part) not in seen:
            # A Struct, dataclass, TypedDict or model: the part at fault may be
            # a field's type.
            seen.add(id(part))
            try:
                fields = list(typing.get_type_hints(part).values())
            except Exception:  # a name it cannot resolve, or no class of fields
                fields = []
            for field in fields:
                _map_type(field, note_package)
        return part

    _map_type(typ, note_package)
    if handles:
        what, call = _OPENED_BY[handles[0]]
        advice = (
            f"for a netmcore.{handles[0]}, put its {what} in it instead, and open it in "
            f"the process with netmcore.{call}"
        )
    elif "numpy" in packages:
        advice = (
            "for a numpy array, put a netmcore.SharedArray (the handle of an array in "
            "shared memory) in it, or the array's bytes or list (a.tobytes(), a.tolist())"
        )
    return f"{name} cannot be a process argument or result: {why}; {advice}"


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
    "SharedVar": (_NAME, "SharedVar(name, T)"),
    "Mbox": (_NAME, "Mbox(name, T)"),
}


def _map_type(typ: Any, f: Callable[[Any], Any]) -> Any:
    """``typ`` with ``f`` applied to it and, depth first, to its type arguments."""
    typ = f(typ)
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
    """A readable name for a type or type expression."""
    if isinstance(typ, type) and not getattr(typ, "__args__", None):
        return (
            typ.__qualname__
            if typ.__module__ == "builtins"
            else (f"{typ.__module__}.{typ.__qualname__}")
        )
    return repr(typ).replace("typing.", "")


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


def fingerprint(schema: dict[str, Any], kinds: list[str] | None = None) -> str:
    """A stable hash of a JSON Schema (and of ``kinds``, where the schema alone
    is ambiguous): the same schema gives the same string."""
    canonical = json.dumps(schema, sort_keys=True, separators=(",", ":"))
    if kinds:
        canonical += "|" + ",".join(kinds)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _kinds_if_ambiguous(typ: Any) -> list[str] | None:
    """The kind of every node of ``typ``, depth first, if its JSON Schema is
    ambiguous; else None (and the fingerprint is the schema's alone).

    msgspec gives ``datetime`` (unless it must be aware) and ``time`` the schema
    of ``str``, ``{"type": "string"}``: by the schema alone, a field changed
    from one to another would not change the fingerprint.
    """
    inspect = msgspec.inspect
    kinds: list[str] = []
    seen: set[int] = set()
    ambiguous = False

    def walk(node: Any) -> None:
        nonlocal ambiguous
        if isinstance(node, inspect.Field):
            node = node.type
        if not isinstance(node, inspect.Type):
            return
        kind = type(node).__name__
        if isinstance(node, (inspect.DateTimeType, inspect.TimeType)):
            ambiguous = True
            kind += f"(tz={node.tz})"
        kinds.append(kind)
        if id(node) in seen:  # a recursive type
            return
        seen.add(id(node))
        for name in node.__struct_fields__:
            value = getattr(node, name)
            for item in value if isinstance(value, tuple) else (value,):
                walk(item)

    walk(inspect.type_info(typ))
    return kinds if ambiguous else None


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
            self.schema: dict[str, Any] = msgspec.json.schema(
                _object_as_any(typ), schema_hook=_schema_hook
            )
            self._decoder: msgspec.msgpack.Decoder[T] = msgspec.msgpack.Decoder(
                typ, dec_hook=_dec_hook
            )
        except TypeError as exc:
            raise TypeError(_unsupported(typ, self.name, exc)) from exc
        _tidy_schema(self.schema)
        self.fingerprint = fingerprint(self.schema, _kinds_if_ambiguous(_object_as_any(typ)))

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
            data = _encoder.encode(value)
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
                    f"{what} {_short(value)} does not match {self.name}: {exc}{_hint(exc)}", path
                ) from exc
        return data

    def decode(self, data: bytes | memoryview) -> T:
        """Decode and validate bytes made by :meth:`encode`."""
        return self._decoder.decode(data)

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
        return ArgumentTypeError(str(exc), "$")

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
        except msgspec.DecodeError as exc:  # its ValidationError too
            # Data of another type under this fingerprint: a pipeline's stage
            # given what the stage before returned, an Encap built by hand, or
            # a validator that refuses here what it took where it was wrapped.
            raise self.decode_error(exc) from exc


def _path_of(exc: msgspec.ValidationError) -> str:
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
    return text if len(text) <= 60 else text[:57] + "..."


def _tidy_schema(schema: dict[str, Any]) -> None:
    """Move the "$defs" of inlined (pydantic) schemas to the root, where their
    "#/$defs/..." references point; drop the marks of _schema_hook's ``object``."""
    found: dict[str, Any] = {}

    def walk(node: Any, top: bool) -> None:
        if isinstance(node, dict):
            node.pop(_ANY, None)
            if not top and isinstance(node.get("$defs"), dict):
                for name, sub in node.pop("$defs").items():
                    if found.get(name, sub) != sub:
                        raise TypeError(f"two different types are named {name} in one schema")
                    found[name] = sub
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
                raise TypeError(f"two different types are named {name} in one schema")
            root[name] = sub
