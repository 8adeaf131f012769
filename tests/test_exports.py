"""The public namespace: ``netmcore.__all__`` lists exactly the public API (as anyio checks)."""

from __future__ import annotations

import inspect
import types

import netmcore


def _defined_in_netmcore(obj: object) -> bool:
    module = getattr(obj, "__module__", None)
    return isinstance(module, str) and (module == "netmcore" or module.startswith("netmcore."))


def test_all_is_a_sorted_tuple_without_duplicates() -> None:
    assert isinstance(netmcore.__all__, tuple)
    assert list(netmcore.__all__) == sorted(netmcore.__all__)
    assert len(set(netmcore.__all__)) == len(netmcore.__all__)
    assert all(isinstance(name, str) for name in netmcore.__all__)


def test_every_name_in_all_exists() -> None:
    missing = [name for name in netmcore.__all__ if not hasattr(netmcore, name)]
    assert not missing


def test_star_import_gives_all() -> None:
    namespace: dict[str, object] = {}
    exec("from netmcore import *", namespace)
    namespace.pop("__builtins__")
    assert set(namespace) == set(netmcore.__all__)


def test_every_public_class_and_function_is_in_all() -> None:
    unlisted = []
    for name, obj in vars(netmcore).items():
        if name.startswith("_") or name == "annotations" or isinstance(obj, types.ModuleType):
            continue
        is_api = inspect.isclass(obj) or inspect.isfunction(obj)
        if is_api and _defined_in_netmcore(obj) and name not in netmcore.__all__:
            unlisted.append(name)
    assert not unlisted, f"public but not in netmcore.__all__: {unlisted}"


def test_exports_report_module_netmcore() -> None:
    wrong = {}
    for name in netmcore.__all__:
        obj = getattr(netmcore, name)
        if not (inspect.isclass(obj) or inspect.isfunction(obj)):
            continue  # e.g. the Outcome type alias, whose __module__ cannot be set
        try:
            obj.__module__ = obj.__module__
        except (AttributeError, TypeError):
            continue  # not settable
        if obj.__module__ != "netmcore":
            wrong[name] = obj.__module__
    assert not wrong, f"exports whose __module__ is not 'netmcore': {wrong}"
