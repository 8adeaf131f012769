"""``netmcore schemas``: the contracts between processes, as files, checked for drift.

Every process type and every EncapType defined in the given modules (at module
level or in a class) becomes one JSON file: its qualified name, its schemas and
its fingerprint, with sorted keys and fixed indentation so that a change reads
well in a diff, named ``MODULE.QUALNAME.json``.
``--check`` regenerates them in memory and fails, showing the difference, when
the directory no longer matches the code.

A run concerns the given modules only: it removes (or, with ``--check``,
reports) their contracts that no longer exist, the files named after one of
them, and leaves the other modules' files alone, so that several runs can share
a directory. With ``exact`` the directory holds the given modules' contracts
and no others: a contract of any other module is removed (or reported) too.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
import importlib.util
import json
import os
import pkgutil
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from ._encap import EncapType
from ._process import ProcessDef


def contract(cls: type[ProcessDef[Any, Any]]) -> dict[str, Any]:
    """The contract of a process type: what its file in ``schemas/`` holds."""
    inp, out = cls.input_type, cls.output_type
    return {
        "name": f"{cls.__module__}.{cls.__qualname__}",
        "kind": "process",
        "input": {"type": inp.name, "schema": inp.schema, "fingerprint": inp.fingerprint},
        "output": {"type": out.name, "schema": out.schema, "fingerprint": out.fingerprint},
        "fingerprint": _combined(inp.fingerprint, out.fingerprint),
    }


def encap_contract(name: str, encap: EncapType[Any]) -> dict[str, Any]:
    return {
        "name": name,
        "kind": "encap",
        "type": encap.name,
        "schema": encap.schema,
        "fingerprint": encap.fingerprint,
    }


def _combined(*fingerprints: str) -> str:
    return hashlib.sha256(":".join(fingerprints).encode()).hexdigest()[:16]


class SchemasError(Exception):
    """What the command was asked cannot be done: a module that does not exist,
    an output directory that cannot be written. Told in one line, without a
    traceback (errors inside the imported modules keep theirs)."""


def import_module(spec: str) -> ModuleType:
    """Import a dotted module name, or a ``.py`` file by path.

    Both are found as ``python -m`` finds them, from the current directory
    (the ``netmcore`` command's own directory is what Python puts first). A
    file in a package is imported by its dotted name, so its contracts are
    named as if it were given by that name (and its relative imports work);
    any other file by its stem.
    """
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    if not spec.endswith(".py"):
        if os.path.isfile(spec):  # read as a dotted name, it said "no module named" its stem
            raise SchemasError(
                f"{spec} is a file, not a .py file: pass the path of a Python source file "
                "(NAME.py), or a dotted module name"
            )
        return _import_dotted(spec, spec)
    path = Path(spec).resolve()
    if not path.is_file():
        raise SchemasError(f"{spec}: no such file")
    parts = [path.stem]
    root = path.parent
    while (root / "__init__.py").is_file():  # up to the directory that holds the package
        parts.insert(0, root.name)
        root = root.parent
    name = ".".join(parts)
    if parts[-1] == "__init__":
        name = ".".join(parts[:-1]) or name
    if name in sys.modules:
        known = getattr(sys.modules[name], "__file__", None)
        if known is not None and Path(known).resolve() == path:
            return sys.modules[name]
        raise SchemasError(
            f"{spec} would be imported as module {name!r}, which is already another "
            "module; rename the file, or pass its dotted module name instead"
        )
    if len(parts) > 1:
        if str(root) not in sys.path:
            sys.path.insert(0, str(root))
        return _import_dotted(name, spec)
    loader_spec = importlib.util.spec_from_file_location(name, path)
    if loader_spec is None or loader_spec.loader is None:
        raise SchemasError(f"cannot import {spec}")
    module = importlib.util.module_from_spec(loader_spec)
    sys.modules[name] = module
    loader_spec.loader.exec_module(module)
    return module


def _import_dotted(name: str, spec: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name is None or not (name + ".").startswith(exc.name + "."):
            raise  # a module that the module imports: its traceback says where
        raise SchemasError(
            f"no module named {exc.name!r} (for {spec}); pass a dotted name importable "
            "from the current directory, or the path of a .py file"
        ) from exc


@dataclass(frozen=True)
class Contracts:
    """What :func:`collect` found in the modules it was given."""

    files: dict[str, str]
    """File name -> file text, for every contract in the modules."""
    modules: dict[str, frozenset[str]]
    """The modules' names, each with the names of its submodules (a package's)."""

    def owns(self, file_name: str) -> bool:
        """Whether a file is named after one of the modules, so that a run on them
        may remove it: ``mod.anything.json``, but not ``mod.sub.anything.json``
        when ``mod.sub`` is a submodule of package ``mod`` (it is its own module)."""
        stem = file_name.removesuffix(".json")
        owners = [name for name in self.modules if stem.startswith(name + ".")]
        if not owners:
            return False
        owner = max(owners, key=len)  # of "pkg" and "pkg.sub", both given: "pkg.sub"
        return stem[len(owner) + 1 :].split(".")[0] not in self.modules[owner]


def collect(specs: list[str]) -> Contracts:
    """The contracts in the modules ``specs``, and the modules' names."""
    files: dict[str, str] = {}
    modules: dict[str, frozenset[str]] = {}
    for spec in specs:
        module = import_module(spec)
        path = getattr(module, "__path__", None) or []  # a package's, [] for a module
        modules[module.__name__] = frozenset(info.name for info in pkgutil.iter_modules(path))
        for attr, value in _members(vars(module), module.__name__, ""):
            if (
                isinstance(value, type)
                and issubclass(value, ProcessDef)
                and value.__module__ == module.__name__
                and "input_type" in vars(value)
            ):
                doc = contract(value)
            elif isinstance(value, EncapType):
                doc = encap_contract(f"{module.__name__}.{attr}", value)
            else:
                continue
            files[f"{doc['name']}.json"] = json.dumps(doc, indent=2, sort_keys=True) + "\n"
    return Contracts(files, modules)


def _members(namespace: Mapping[str, Any], module: str, prefix: str) -> Iterator[tuple[str, Any]]:
    """(qualified name, value) of what ``namespace`` holds, and of what the
    classes defined there hold: a process type may be nested in a class (a
    process type's own EncapTypes are in its contract)."""
    for attr, value in sorted(namespace.items()):
        yield prefix + attr, value
        if (
            isinstance(value, type)
            and not issubclass(value, ProcessDef)
            and value.__module__ == module
            and value.__qualname__ == prefix + attr  # defined here, not an alias
        ):
            yield from _members(vars(value), module, f"{value.__qualname__}.")


def write(contracts: Contracts, out: Path, *, exact: bool = False) -> list[str]:
    """Write the files, remove the modules' contracts that no longer exist (with
    ``exact``, every other contract in ``out``); say what changed."""
    _check_directory(out)
    changed = []
    try:
        out.mkdir(parents=True, exist_ok=True)
        for name, text in contracts.files.items():
            path = out / name
            if not path.exists() or path.read_text() != text:
                path.write_text(text)
                changed.append(f"wrote {path}")
        for path in _existing(contracts, out, exact):
            if path.name not in contracts.files:
                path.unlink()
                changed.append(f"removed {path}")
    except OSError as exc:
        raise SchemasError(f"cannot write to {out}: {exc.strerror} ({exc.filename})") from exc
    return changed


def _check_directory(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise SchemasError(f"--out {out} is not a directory")


def _existing(contracts: Contracts, out: Path, exact: bool) -> list[Path]:
    """The contracts in ``out`` that a run on ``contracts`` judges: the modules'
    own, or, with ``exact``, all."""
    paths = sorted(out.glob("*.json")) if out.is_dir() else []
    return [p for p in paths if (exact or contracts.owns(p.name)) and _is_contract(p)]


def _is_contract(path: Path) -> bool:
    """Whether a file is one this tool wrote (other JSON files are left alone)."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return (
        isinstance(doc, dict) and doc.get("kind") in ("process", "encap") and "fingerprint" in doc
    )


def drift(contracts: Contracts, out: Path, *, exact: bool = False) -> list[str]:
    """A readable diff between the contracts and the modules' files in the
    directory (with ``exact``, all its contracts); empty if in sync."""
    _check_directory(out)
    report: list[str] = []
    files = contracts.files
    existing = {p.name: p.read_text() for p in _existing(contracts, out, exact)}
    for name in sorted(files.keys() | existing.keys()):
        old, new = existing.get(name), files.get(name)
        if old == new:
            continue
        report.extend(
            difflib.unified_diff(
                (old or "").splitlines(keepends=True),
                (new or "").splitlines(keepends=True),
                fromfile=os.path.join(str(out), name) if old is not None else "/dev/null",
                tofile=f"generated/{name}" if new is not None else "/dev/null",
            )
        )
    return report
