"""Edges of the typed contracts where a value crossed unchecked or was misreported.

1. A ``NewType`` around a pydantic dataclass was decoded by msgspec as a plain
   dataclass: its pydantic validators never ran.
2. A pydantic dataclass with a ``Path``, URL or IP address field could not be
   encoded, though a BaseModel with the same fields could.
3. A strict pydantic model's fault inside a container was reported at ``$``;
   a pydantic dataclass, dumped by pydantic since 2., is held to its strict
   config (and its strict models to theirs) as a model is.
4. A pydantic validator's own exception of a class pydantic passes on (not a
   ValueError or AssertionError) escaped raw from the check (and a Mailbox
   receive), where it is the value's fault; a signal handler's exception,
   whatever its handler's kind of callable, still goes on as it came.
5. A str with a lone surrogate (a file name that is not UTF-8, as os.listdir
   gives it) was refused with UTF-8's error alone, and no fix.
"""

from __future__ import annotations

import dataclasses
import functools
import ipaddress
import os
import signal
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NewType, Optional

import msgspec
import pydantic
import pytest
from pydantic import BaseModel, ConfigDict, field_validator
from scenario import run_scenario

import netmcore
from netmcore import ArgumentTypeError, Encap, EncapType, Mailbox


def _outcome_dict(outcome: object) -> dict[str, Any]:
    fields = {f.name: getattr(outcome, f.name) for f in dataclasses.fields(outcome)}  # type: ignore[arg-type]
    return {"kind": type(outcome).__name__, **fields}


def _encap_of(et: EncapType[Any], value: Any) -> Encap:
    """An Encap of ``et`` holding ``value`` as msgpack, unchecked: as one
    built by hand, or by a sender whose validator took what this one refuses."""
    return Encap(et.name, et.fingerprint, (msgspec.msgpack.encode(value),))


# ==========================================================================
# 1. A NewType around a pydantic dataclass
# ==========================================================================


@pydantic.dataclasses.dataclass
class Parcel:
    qty: int
    label: str = ""

    @field_validator("qty")
    @classmethod
    def at_most_ten(cls, v: int) -> int:
        if v > 10:
            raise ValueError("too many")
        return v

    @field_validator("label")
    @classmethod
    def upper(cls, v: str) -> str:
        return v.upper()


ParcelId = NewType("ParcelId", Parcel)
ParcelIdOfId = NewType("ParcelIdOfId", ParcelId)


class Order(BaseModel):
    qty: int

    @field_validator("qty")
    @classmethod
    def at_most_ten(cls, v: int) -> int:
        if v > 10:
            raise ValueError("too many")
        return v


OrderId = NewType("OrderId", Order)


def _unvalidated_parcel(qty: int, label: str = "") -> ParcelId:
    parcel = Parcel(1)
    parcel.qty, parcel.label = qty, label  # no validate_assignment: unchecked
    return ParcelId(parcel)


@pytest.mark.parametrize(
    ("typ", "wire", "path"),
    [
        (ParcelId, {"qty": 50}, "$.qty"),
        (ParcelIdOfId, {"qty": 50}, "$.qty"),
        (list[ParcelId], [{"qty": 1}, {"qty": 50}], "$[1].qty"),
        (dict[str, ParcelId], {"a": {"qty": 50}}, "$[...].qty"),
        (tuple[int, ParcelId], [1, {"qty": 50}], "$[1].qty"),
        (Optional[ParcelId], {"qty": 50}, "$.qty"),  # noqa: UP045 - the spelling at hand
        (ParcelId | None, {"qty": 50}, "$.qty"),
        (OrderId, {"qty": 50}, "$.qty"),
        (list[OrderId], [{"qty": 50}], "$[0].qty"),
    ],
    ids=["newtype", "of_newtype", "list", "dict", "tuple", "optional", "union", "model", "models"],
)
def test_a_newtype_of_a_pydantic_type_is_validated_by_pydantic(
    typ: Any, wire: Any, path: str
) -> None:
    # A NewType of a pydantic dataclass was unwrapped as Parcel(qty=50).
    et: EncapType[Any] = EncapType(typ)
    with pytest.raises(ArgumentTypeError, match="Value error, too many") as info:
        et.unwrap(_encap_of(et, wire))
    assert info.value.path == path


def test_a_newtype_of_a_pydantic_dataclass_has_the_dataclass_schema() -> None:
    # pydantic's schema, as for the dataclass itself: msgspec's had no constraint.
    assert EncapType(ParcelId).schema == EncapType(Parcel).schema
    assert EncapType(ParcelId).fingerprint == EncapType(Parcel).fingerprint


class Van(msgspec.Struct):
    parcel: ParcelId


def test_a_newtype_of_a_pydantic_dataclass_in_a_struct_field_is_refused() -> None:
    # msgspec decodes it there as a plain dataclass, which _for_msgspec cannot reach.
    with pytest.raises(TypeError) as info:
        EncapType(Van)
    assert str(info.value) == (
        "test_contract_edges.Van cannot be a process argument or result: "
        "test_contract_edges.Parcel is a pydantic dataclass in a field of "
        "test_contract_edges.Van, which msgspec decodes, as it decodes a plain "
        "dataclass: its pydantic validation would never run; make "
        "test_contract_edges.Van a pydantic model or dataclass too, or "
        "test_contract_edges.Parcel a pydantic BaseModel"
    )


@pydantic.dataclasses.dataclass
class Pallet:
    qty: int = pydantic.Field(ge=0)  # a default that msgspec cannot put in a schema


class Truck(msgspec.Struct):
    pallet: Pallet


def test_a_pydantic_dataclass_with_a_field_default_in_a_struct_field_is_refused_so() -> None:
    # msgspec's schema failed first, on the default: "Encoding objects of type
    # FieldInfo is unsupported", which named neither the class nor the fix.
    with pytest.raises(TypeError) as info:
        EncapType(Truck)
    assert str(info.value).startswith(
        "test_contract_edges.Truck cannot be a process argument or result: "
        "test_contract_edges.Pallet is a pydantic dataclass in a field of "
        "test_contract_edges.Truck, which msgspec decodes, as it decodes a plain dataclass"
    ), info.value
    assert EncapType(list[Pallet]).unwrap(EncapType(list[Pallet]).wrap([Pallet(2)])) == [Pallet(2)]


@netmcore.process
def label_of(parcel: ParcelId) -> str:
    return f"{type(parcel).__name__} {parcel.qty} {parcel.label}"


@netmcore.process
def makes_a_bad_parcel(qty: int) -> ParcelId:
    return _unvalidated_parcel(qty)


@netmcore.process
def parcels(_: int) -> dict[str, Any]:
    refused: Any = "not refused"
    try:
        label_of.start(_unvalidated_parcel(50))
    except ArgumentTypeError as exc:
        refused = [exc.path, str(exc)]
    return {
        # The receiver validates too: its validator upper-cases the label.
        "labelled": label_of.result(label_of.start(_unvalidated_parcel(3, "box"))),
        "refused": refused,
        "bad_result": _outcome_dict(makes_a_bad_parcel.join_outcome(makes_a_bad_parcel.start(50))),
    }


def test_a_newtype_of_a_pydantic_dataclass_is_validated_in_every_process() -> None:
    result = run_scenario(parcels, 0)
    assert result["labelled"] == "Parcel 3 BOX"
    assert result["refused"] == [
        "$.qty",
        "argument of label_of.start: Parcel(qty=50, label='') does not match "
        "test_contract_edges.ParcelId: Value error, too many (pydantic field .qty), "
        "where the value is 50",
    ]
    bad = result["bad_result"]
    assert (bad["kind"], bad["path"]) == ("InvalidResult", "$.qty")
    assert "too many" in bad["message"]


# ==========================================================================
# 2. Path, URL and IP address fields of a pydantic dataclass
# ==========================================================================


@pydantic.dataclasses.dataclass
class Site:
    root: Path
    url: pydantic.AnyUrl
    home: pydantic.HttpUrl
    v4: ipaddress.IPv4Address
    v6: ipaddress.IPv6Address
    net: ipaddress.IPv4Network
    mirrors: list[Path] = dataclasses.field(default_factory=list)


class SiteModel(BaseModel):
    root: Path
    url: pydantic.AnyUrl
    home: pydantic.HttpUrl
    v4: ipaddress.IPv4Address
    v6: ipaddress.IPv6Address
    net: ipaddress.IPv4Network
    mirrors: list[Path] = []


_SITE: dict[str, Any] = {
    "root": Path("/srv/site"),
    "url": pydantic.AnyUrl("ftp://files.example/pub"),
    "home": pydantic.HttpUrl("https://example.org/a?b=1"),
    "v4": ipaddress.IPv4Address("192.0.2.1"),
    "v6": ipaddress.IPv6Address("2001:db8::1"),
    "net": ipaddress.IPv4Network("192.0.2.0/24"),
    "mirrors": [Path("/a"), Path("/b")],
}


@pytest.mark.parametrize(
    ("typ", "wrap", "first"),
    [
        (Site, lambda s: s, lambda v: v),
        (SiteModel, lambda s: s, lambda v: v),
        (list[Site], lambda s: [s, s], lambda v: v[1]),
        (Optional[Site], lambda s: s, lambda v: v),  # noqa: UP045
        (dict[str, tuple[int, Site]], lambda s: {"a": (1, s)}, lambda v: v["a"][1]),
    ],
    ids=["dataclass", "model", "list", "optional", "nested"],
)
def test_path_url_and_ip_fields_of_a_pydantic_type_round_trip(
    typ: Any, wrap: Any, first: Any
) -> None:
    # A pydantic dataclass's were an ArgumentTypeError: "msgspec cannot encode PosixPath".
    value = wrap(SiteModel(**_SITE) if typ is SiteModel else Site(**_SITE))
    et: EncapType[Any] = EncapType(typ)
    back = et.unwrap(et.wrap(value))
    assert back == value
    site = first(back)
    assert isinstance(site.root, Path)
    assert isinstance(site.home, pydantic.HttpUrl)
    assert isinstance(site.net, ipaddress.IPv4Network)


def test_a_path_where_str_is_declared_is_still_refused() -> None:
    # Only a pydantic type's own fields travel in their JSON form.
    @dataclasses.dataclass
    class Named:
        name: str

    with pytest.raises(ArgumentTypeError, match="msgspec cannot encode PosixPath values"):
        EncapType(Named).wrap(Named(Path("/x")))  # type: ignore[arg-type]
    with pytest.raises(ArgumentTypeError, match="msgspec cannot encode PosixPath values"):
        EncapType(list[str]).wrap([Path("/x")])  # type: ignore[list-item]


def test_a_pydantic_dataclass_with_path_url_and_ip_fields_has_their_formats() -> None:
    schema = EncapType(Site).schema
    assert schema["title"] == "Site"
    props = schema["properties"]
    assert props["root"] == {"format": "path", "title": "Root", "type": "string"}
    assert props["home"]["format"] == props["url"]["format"] == "uri"
    assert props["home"]["maxLength"] == 2083  # HttpUrl's, not AnyUrl's
    assert (props["v4"]["format"], props["v6"]["format"]) == ("ipv4", "ipv6")
    assert props["net"]["format"] == "ipv4network"
    # The same fields as str are another contract; the model's is its own.
    as_str = pydantic.dataclasses.dataclass(
        type("Site", (), {"__annotations__": {name: str for name in Site.__annotations__}})
    )
    assert EncapType(as_str).fingerprint != EncapType(Site).fingerprint
    assert EncapType(SiteModel).fingerprint != EncapType(Site).fingerprint


@netmcore.process
def site_back(site: Site) -> Site:
    return dataclasses.replace(site, root=site.root / "www")


def test_a_pydantic_dataclass_with_a_path_crosses_to_a_process_and_back() -> None:
    back = run_scenario(site_back, Site(**_SITE))
    assert back == Site(**{**_SITE, "root": Path("/srv/site/www")})


# ==========================================================================
# 3. A strict model's fault inside a container
# ==========================================================================


class StrictItem(BaseModel):
    model_config = ConfigDict(strict=True)
    x: int


class Shelf(msgspec.Struct, rename="camel"):
    top_item: StrictItem


@dataclasses.dataclass
class Bin:
    items: list[StrictItem]


def _bad_item() -> StrictItem:
    item = StrictItem(x=1)
    item.x = "5"  # type: ignore[assignment]  # no validate_assignment: unchecked
    return item


_GOOD = StrictItem(x=1)


@pytest.mark.parametrize(
    ("typ", "value", "path"),
    [
        (StrictItem, _bad_item(), "$.x"),
        (list[StrictItem], [_GOOD, _GOOD, _GOOD, _bad_item()], "$[3].x"),
        (dict[str, StrictItem], {"a": _GOOD, "b": _bad_item()}, "$[...].x"),
        (tuple[int, StrictItem | None], (1, _bad_item()), "$[1].x"),
        (Shelf, Shelf(_bad_item()), "$.topItem.x"),
        (list[Bin], [Bin([_GOOD]), Bin([_GOOD, _bad_item()])], "$[1].items[1].x"),
    ],
    ids=["model", "list", "dict", "tuple", "struct", "dataclass"],
)
def test_a_strict_models_fault_names_where_it_is(typ: Any, value: Any, path: str) -> None:
    # Inside a container it was reported at $.
    with pytest.raises(
        ArgumentTypeError, match=r"StrictItem is strict: Input should be a valid integer"
    ) as info:
        EncapType(typ).wrap(value)
    assert info.value.path == path


@pydantic.dataclasses.dataclass
class Crate:
    item: StrictItem


@pydantic.dataclasses.dataclass(config=ConfigDict(strict=True))
class StrictCrate:
    n: int
    pair: tuple[int, int] = (0, 0)


@pytest.mark.parametrize(
    ("typ", "value", "field", "path"),
    [
        (list[Crate], [Crate(_GOOD), Crate(_bad_item())], "x", "$[1].item.x"),
        (StrictCrate, StrictCrate(1), "n", "$.n"),
    ],
    ids=["model_in_dataclass", "strict_dataclass"],
)
def test_a_pydantic_dataclass_is_held_to_strict_config_in_the_caller(
    typ: Any, value: Any, field: str, path: str
) -> None:
    # Dumped by pydantic (see 2.), a strict model in one went unchecked; a
    # strict dataclass was never held to its config.
    if isinstance(value, StrictCrate):
        value.n = "5"  # type: ignore[assignment]  # unchecked
    et: EncapType[Any] = EncapType(typ)
    with pytest.raises(ArgumentTypeError, match="is strict: Input should be a valid") as info:
        et.wrap(value)
    assert info.value.path == path


def test_a_valid_strict_pydantic_dataclass_is_taken() -> None:
    # Its tuple travels as a list, which its strict config would refuse.
    et = EncapType(list[StrictCrate])
    assert et.unwrap(et.wrap([StrictCrate(1, (2, 3))])) == [StrictCrate(1, (2, 3))]


def test_a_strict_models_fault_is_where_msgspec_would_name_a_lax_one() -> None:
    # The same item, lax: its fault's path is msgspec's, the strict one's alike.
    lax = StrictItem.model_construct(x="five")
    with pytest.raises(ArgumentTypeError) as info:
        EncapType(dict[str, list[StrictItem]]).wrap({"a": [_GOOD, lax]})
    strict = _bad_item()
    with pytest.raises(ArgumentTypeError, match="is strict") as strict_info:
        EncapType(dict[str, list[StrictItem]]).wrap({"a": [_GOOD, strict]})
    assert info.value.path == strict_info.value.path == "$[...][1].x"


# ==========================================================================
# 4. A validator's own exception
# ==========================================================================


class OutOfStock(Exception):
    """An exception class of the program's own, neither ValueError nor AssertionError."""


class Item(BaseModel):
    sku: int

    @field_validator("sku")
    @classmethod
    def in_stock(cls, v: int) -> int:
        if v < 0:
            raise OutOfStock(f"no stock of {v}")
        return v


@pydantic.dataclasses.dataclass
class ItemData:
    sku: int

    @field_validator("sku")
    @classmethod
    def in_stock(cls, v: int) -> int:
        if v < 0:
            raise OutOfStock(f"no stock of {v}")
        return v


class StrictStockItem(Item):
    model_config = ConfigDict(strict=True)


def _bad(cls: Any, sku: int) -> Any:
    value = cls(sku=1)
    value.sku = sku  # unchecked
    return value


@pytest.mark.parametrize(
    ("typ", "value", "path"),
    [
        (Item, _bad(Item, -1), "$"),
        (list[Item], [_bad(Item, 1), _bad(Item, -1)], "$[1]"),
        (ItemData, _bad(ItemData, -1), "$"),
        (dict[str, ItemData], {"a": _bad(ItemData, -1)}, "$[...]"),
        (list[StrictStockItem], [_bad(StrictStockItem, -1)], "$[0]"),
    ],
    ids=["model", "models", "dataclass", "dataclasses", "strict"],
)
def test_a_validators_own_exception_is_an_argument_type_error(
    typ: Any, value: Any, path: str
) -> None:
    # OutOfStock escaped raw from wrap.
    et: EncapType[Any] = EncapType(typ)
    with pytest.raises(ArgumentTypeError, match="does not match") as info:
        et.wrap(value)
    assert info.value.path == path
    assert "OutOfStock: no stock of -1" in str(info.value)
    assert isinstance(info.value.__cause__, OutOfStock)  # the validator's own, whole
    # Received: as from a sender whose validator took it.
    wire = msgspec.msgpack.decode(msgspec.msgpack.encode(value, enc_hook=_plain))
    with pytest.raises(ArgumentTypeError, match="OutOfStock: no stock of -1") as info:
        et.unwrap(_encap_of(et, wire))
    assert info.value.path == path
    assert isinstance(info.value.__cause__, OutOfStock)


def _plain(value: Any) -> Any:
    return value.model_dump()  # a model's fields, unchecked


@netmcore.process
def stock_of(item: Item) -> int:
    return item.sku


@netmcore.process
def returns_a_bad_item(sku: int) -> Item:
    return typing.cast(Item, _bad(Item, sku))


@netmcore.process
def items(_: int) -> dict[str, Any]:
    refused: Any = "not refused"
    try:
        stock_of.start(_bad(Item, -2))
    except ArgumentTypeError as exc:
        refused = [exc.path, str(exc), type(exc.__cause__).__name__]
    outcome = returns_a_bad_item.join_outcome(returns_a_bad_item.start(-3))
    return {"refused": refused, "result": _outcome_dict(outcome)}


def test_a_validators_own_exception_is_an_argument_or_result_fault_in_processes() -> None:
    # start raised OutOfStock, and join_outcome raised it, outcome kept, at every join.
    result = run_scenario(items, 0)
    assert result["refused"] == [
        "$",
        "argument of stock_of.start: Item(sku=-2) does not match test_contract_edges.Item: "
        "OutOfStock: no stock of -2",
        "OutOfStock",
    ]
    assert result["result"] == {
        "kind": "InvalidResult",
        "path": "$",
        "message": "result of returns_a_bad_item.run: Item(sku=-3) does not match "
        "test_contract_edges.Item: OutOfStock: no stock of -3",
    }


class Signalled(BaseModel):
    n: int

    @field_validator("n")
    @classmethod
    def rings(cls, v: int) -> int:
        signal.raise_signal(signal.SIGUSR1)  # its handler runs here, as the call returns
        return v


@dataclasses.dataclass
class SignalledJob:
    n: int

    def __post_init__(self) -> None:
        signal.raise_signal(signal.SIGUSR1)


def _raise_the_handlers(*_: object) -> None:
    raise OutOfStock("the handler's")


class _Timer:
    def on_signal(self, *_: object) -> None:
        raise OutOfStock("the handler's")

    __call__ = on_signal


@pytest.fixture(
    params=[
        _raise_the_handlers,
        functools.partial(_raise_the_handlers, "extra"),
        _Timer().on_signal,
        _Timer(),
    ],
    ids=["function", "partial", "method", "callable"],
)
def raising_handler(request: pytest.FixtureRequest) -> Iterator[None]:
    previous = signal.signal(signal.SIGUSR1, request.param)
    try:
        yield
    finally:
        signal.signal(signal.SIGUSR1, previous)


@pytest.mark.usefixtures("raising_handler")
@pytest.mark.parametrize("cls", [Signalled, SignalledJob])
def test_a_signal_handlers_exception_in_a_validator_goes_on_as_it_came(cls: Any) -> None:
    # Of the same class as a validator's own: what tells them apart is where it was raised.
    et: EncapType[Any] = EncapType(list[cls])
    value = cls.model_construct(n=1) if cls is Signalled else cls.__new__(cls)
    value.n = 1
    with pytest.raises(OutOfStock, match="the handler's"):
        et.wrap([value])
    with pytest.raises(OutOfStock, match="the handler's"):
        et.unwrap(_encap_of(et, [{"n": 1}]))


class Ticket(BaseModel):
    n: int

    @field_validator("n")
    @classmethod
    def not_withdrawn(cls, v: int) -> int:
        if v in WITHDRAWN:
            raise OutOfStock(f"ticket {v} is withdrawn")
        return v


WITHDRAWN: set[int] = set()


@pytest.mark.usefixtures("master_cleanup")
def test_a_mailbox_message_a_validator_refuses_so_is_a_validation_error_once() -> None:
    # It was raised as it came, an OutOfStock, after a second decode.
    box = Mailbox.create(Ticket, slots=4, slot_size=64)
    sender = Mailbox.open(box.res_id, Ticket)
    try:
        sender.send(Ticket(n=1))
        sender.send(Ticket(n=2))
        WITHDRAWN.add(1)  # after the send, whose check decodes it too
        with pytest.raises(msgspec.ValidationError, match="OutOfStock: ticket 1 is withdrawn"):
            box.receive(timeout=0)
        assert box.receive(timeout=0) == Ticket(n=2)
    finally:
        WITHDRAWN.clear()
        sender.release()
        box.release()


@pytest.mark.parametrize("typ", [str, list[str], dict[str, int]], ids=["str", "list", "key"])
def test_a_str_that_is_not_valid_unicode_says_to_pass_bytes(typ: Any) -> None:
    # A porting review's file analyzer stopped on a name that os.walk gave it
    # for the bytes b"caf\xe9" (Latin-1), with "surrogates not allowed" alone.
    name = os.fsdecode(b"/data/caf\xe9.log")
    value = {str: name, list[str]: [name], dict[str, int]: {name: 1}}[typ]
    with pytest.raises(ArgumentTypeError) as caught:
        EncapType(typ).wrap(value)
    message = str(caught.value)
    assert "surrogates not allowed" in message, message
    assert "pass such a name as bytes (os.fsencode(name), typed bytes)" in message, message
    assert EncapType(bytes).unwrap(EncapType(bytes).wrap(os.fsencode(name))) == b"/data/caf\xe9.log"
