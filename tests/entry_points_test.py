# mypy: allow-untyped-defs
"""Every driver the package registers imports, with its client; no client method takes a name DriverClient uses."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import re
import tomllib
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest
from jumpstarter.client import DriverClient

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PACKAGE = PYPROJECT["project"]["name"].replace("-", "_")
DECLARED = PYPROJECT["project"]["entry-points"]["jumpstarter.drivers"]


def load(entry_point: EntryPoint) -> type:
    """The class an entry point names; an ImportError is reported as it is, with what to do about it.

    `jmp` reports a driver whose module fails to import as "not installed", whatever the cause: a missing
    upstream package (`jumpstarter_driver_power` for PowerInterface, say) looks like a missing driver.
    """
    try:
        return entry_point.load()
    except ImportError as e:
        hint = ""
        missing = getattr(e, "name", None) or ""
        if missing.startswith("jumpstarter_driver_"):
            distribution = missing.split(".")[0].replace("_", "-")
            hint = f"; add {distribution!r} to pyproject.toml's dependencies (see docs/writing-drivers.md)"
        pytest.fail(f"{entry_point.name} = {entry_point.value!r}: {type(e).__name__}: {e}{hint}", pytrace=False)


def client_class(driver: type) -> type:
    """The client class a driver's client() names, imported as the client side imports it."""
    module, _, name = driver.client().rpartition(".")
    return getattr(importlib.import_module(module), name)


@pytest.mark.parametrize("name", list(DECLARED))
def test_entry_point_and_its_client_import(name: str):
    """The registered driver class loads, and so does the client class its client() names."""
    driver = load(EntryPoint(name, DECLARED[name], "jumpstarter.drivers"))
    assert issubclass(client_class(driver), DriverClient)


# Names a client cannot use


def reserved_names() -> dict[str, str]:
    """What DriverClient and its bases define (attributes, methods, dataclass fields), by name: what each is."""
    names = {f.name: "a field" for f in dataclasses.fields(DriverClient) if not f.name.startswith("_")}
    for name in dir(DriverClient):
        if not name.startswith("_"):
            names.setdefault(name, kind(inspect.getattr_static(DriverClient, name)))
    return names


def kind(value: object) -> str:
    """What a class attribute is, in words."""
    if isinstance(value, property):
        return "a property"
    if isinstance(value, staticmethod | classmethod) or inspect.isfunction(value):
        return "a method"
    return "an attribute"


def parameters(value: object) -> list[str]:
    """A method's parameter names."""
    function = value.__func__ if isinstance(value, staticmethod | classmethod) else value
    return list(inspect.signature(function).parameters) if callable(function) else []  # type: ignore[arg-type]


def clashes(client: type) -> list[str]:
    """The names `client` (and its bases of this package) defines that DriverClient uses for something else.

    Overriding one of DriverClient's methods with the same parameters is allowed (a client that cancels calls does, on
    purpose); a method where DriverClient has a property (`status`), a field (`labels`) or a method of
    other parameters breaks the client, and mypy reports it only for some.
    """
    reserved = reserved_names()
    found = []
    for cls in client.__mro__:
        if not cls.__module__.startswith(f"{PACKAGE}."):
            continue
        for name, value in vars(cls).items():
            if name.startswith("_") or name not in reserved:
                continue
            theirs = inspect.getattr_static(DriverClient, name, None)
            same = kind(value) == "a method" == reserved[name] and parameters(value) == parameters(theirs)
            if not same:
                found.append(
                    f"{cls.__module__}.{cls.__qualname__}.{name} ({kind(value)}) clashes with DriverClient.{name} "
                    f"({reserved[name]}): rename it"
                )
    return found


def package_clients() -> list[type]:
    """Every client class of this package that a registered driver names."""
    found = {}
    for name, value in DECLARED.items():
        client = client_class(load(EntryPoint(name, value, "jumpstarter.drivers")))
        found[f"{client.__module__}.{client.__qualname__}"] = client
    return [client for path, client in sorted(found.items()) if path.startswith(f"{PACKAGE}.")]


@pytest.mark.parametrize("client", package_clients(), ids=lambda c: c.__qualname__)
def test_client_names_do_not_clash_with_driver_client(client: type):
    """No client of the package defines a name that DriverClient uses for something else."""
    assert clashes(client) == []


def test_a_clashing_method_is_refused_by_name():
    """A client method named like DriverClient's `status` property is reported with both."""
    namespace = {"__module__": f"{PACKAGE}.example", "status": lambda self: "on", "labels": lambda self: []}
    clashing = type("ClashingClient", (DriverClient,), namespace)
    assert clashes(clashing) == [
        f"{PACKAGE}.example.ClashingClient.status (a method) clashes with DriverClient.status (a property): rename it",
        f"{PACKAGE}.example.ClashingClient.labels (a method) clashes with DriverClient.labels (a field): rename it",
    ]


def test_the_docs_list_every_name_a_client_cannot_use():
    """docs/writing-drivers.md lists every name DriverClient uses, so an author can avoid them up front."""
    text = (ROOT / "docs" / "writing-drivers.md").read_text()
    section = text.partition("Names a client cannot use")[2].partition("\n#")[0]
    missing = [name for name in reserved_names() if not re.search(rf"`{name}`", section)]
    assert missing == [], f"docs/writing-drivers.md does not list {missing}"
