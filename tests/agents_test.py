# mypy: allow-untyped-defs
"""What people and agents read about the drivers: typed, documented client methods, and help text from the config.

Agents find a driver through Jumpstarter's MCP introspection (`jumpstarter_mcp.introspect`), which reads
the *client* class: its public methods, their signatures and docstrings, and the `j` command tree. So
every exported method of every driver of this package needs a client method of the same name with
full annotations and a docstring, and every byte stream a documented client method that reads it.
People read `j --help`, where the exporter config's `description` and `methods_description` replace
the docstrings. Nothing here names a driver: the drivers come from examples/exporter.yaml and from the
package's entry points, their exported methods from the markers `@export` and `@exportstream` set.
"""

import inspect
import json
import re
import sys
from collections.abc import Iterator
from importlib import import_module
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import yaml
from harness import PACKAGE, Exporter, example_config, local_shell
from jumpstarter.driver.decorators import (
    MARKER_DRIVERCALL,
    MARKER_MAGIC,
    MARKER_STREAMCALL,
    MARKER_STREAMING_DRIVERCALL,
)
from jumpstarter_mcp.introspect import get_driver_methods, list_drivers, walk_click_tree

# Run inside `jmp shell`: each driver's `j <driver> --help` (argv: a JSON list of driver paths), rendered as
# `j` renders it (the shell's client, `client.cli()`, given the arguments), then what an agent's MCP server
# reads, as one JSON line. One process instead of a `j` per driver: each `j` start costs a second of imports.
MCP_VIEW = """
import json, sys
from click.testing import CliRunner
from jumpstarter.utils.env import env
from jumpstarter_mcp.introspect import list_drivers, walk_click_tree
with env() as client:
    for path in json.loads(sys.argv[1]):
        result = CliRunner().invoke(client.cli(), [*path, "--help"], prog_name="j")
        assert result.exit_code == 0, result.output
        print("===", " ".join(path))
        print(result.output)
    print("MCP", json.dumps({"drivers": list_drivers(client), "tree": walk_click_tree(client.cli())}, default=str))
"""
KINDS = {MARKER_DRIVERCALL: "call", MARKER_STREAMING_DRIVERCALL: "streaming call", MARKER_STREAMCALL: "byte stream"}


def load(path: str) -> Any:
    """The class at an import path (`package.module.Class`)."""
    module, _, name = path.rpartition(".")
    return getattr(import_module(module), name)


def our_driver_paths(drivers: dict[str, Any], parent: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], str]]:
    """(path in the driver tree, class import path) of each driver of this package in an `export:` tree."""
    for name, entry in drivers.items():
        path = (*parent, name)
        if str(entry.get("type", "")).startswith(f"{PACKAGE}."):
            yield path, entry["type"]
        yield from our_driver_paths(entry.get("children") or {}, path)


def entry(config: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any]:
    """A driver's entry in a config, by its path in the driver tree."""
    found = {"children": config["export"]}
    for name in path:
        found = found["children"][name]
    return found


def exported_methods(driver_class: type) -> dict[str, str]:
    """The methods a client can call on a driver class, by name, with their kind (call, streaming call, byte stream)."""
    found = {}
    for name in dir(driver_class):
        method = getattr(driver_class, name, None)
        for marker, kind in KINDS.items():
            if getattr(method, marker, None) == MARKER_MAGIC:
                found[name] = kind
    return found


def package_drivers() -> list[type]:
    """The driver classes this package registers (entry point group `jumpstarter.drivers`)."""
    return [ep.load() for ep in entry_points(group="jumpstarter.drivers") if ep.value.startswith(f"{PACKAGE}.")]


def annotation_gaps(function: Any) -> list[str]:
    """What a function's signature leaves unannotated: parameters (but self) and the return type."""
    signature = inspect.signature(function, eval_str=True)  # annotations that do not resolve fail here
    gaps = [
        name
        for name, parameter in list(signature.parameters.items())[1:]
        if parameter.annotation is inspect.Parameter.empty
    ]
    return gaps + (["return"] if signature.return_annotation is inspect.Signature.empty else [])


def described(method: dict[str, Any]) -> list[str]:
    """What MCP's description of a client method lacks: a docstring, annotations."""
    problems = [] if (method["docstring"] or "").strip() else ["no docstring"]
    problems += [f"{p['name']} has no type" for p in method["parameters"] if p["annotation"] is None]
    return problems + ([] if method["return_type"] else ["no return type"])


def source_reach(cls: type, name: str, seen: set[str] | None = None) -> str:
    """The source of a client method and of the private helpers it calls (`self._x`, module-level `_x`)."""
    seen = set() if seen is None else seen
    seen.add(name)
    function = inspect.unwrap(getattr(cls, name))
    source = inspect.getsource(function)
    helpers = set(re.findall(r"\bself\.(_\w+)", source)) | set(re.findall(r"(?<![.\w])(_\w+)\(", source))
    for helper in sorted(helpers - seen):
        if inspect.isfunction(getattr(cls, helper, None)):
            source += source_reach(cls, helper, seen)
        elif inspect.isfunction(function.__globals__.get(helper)):
            seen.add(helper)
            source += inspect.getsource(function.__globals__[helper])
    return source


def short_help(listing: str, command: str) -> str:
    """The help text a `--help` listing shows next to a command (click shortens it, ending with ...)."""
    match = re.search(rf"^  {re.escape(command)}\s+(.+)$", listing.split("Commands:", 1)[-1], re.MULTILINE)
    assert match, f"{command} is not listed:\n{listing}"
    return match.group(1).strip().removesuffix("...").strip()


def words(text: str) -> str:
    """Text with its whitespace normalised (click wraps help text)."""
    return " ".join(text.split())


def test_exported_methods_are_fully_typed():
    """Every exported method of every registered driver annotates each argument and its return type (JEP-0011)."""
    drivers = package_drivers()
    assert drivers
    gaps = {
        f"{driver.__qualname__}.{name}": annotation_gaps(getattr(driver, name))
        for driver in drivers
        for name in exported_methods(driver)
    }
    assert gaps
    assert {method: missing for method, missing in gaps.items() if missing} == {}


def defined_here(client_class: type, name: str) -> bool:
    """Whether this package defines the client method `name` (an upstream interface's client is not ours to annotate:
    its methods, inherited by a subclass of ours too, must only exist and say what they do)."""
    return getattr(client_class, name).__module__.startswith(f"{PACKAGE}.")


def test_mcp_lists_a_documented_typed_client_method_for_every_exported_method(exporter: Exporter):
    """Through MCP's introspection of a connected client, each exported method has a typed, documented twin.

    A call or streaming call needs a client method of its name; a byte stream needs a documented client method
    that opens it (its source, or a private helper it calls, names the stream). The clients of this package
    document and type every public method.
    """
    config = example_config()
    drivers = list(our_driver_paths(config["export"]))
    assert drivers
    problems = []
    with exporter.client() as root:
        listed = {tuple(d["driver_path"]): d for d in list_drivers(root)}
        for path, driver_type in drivers:
            where = ".".join(path)
            methods = {m["name"]: m for m in get_driver_methods(root, list(path))["methods"]}
            client_class = load(listed[path]["class"])
            ours = client_class.__module__.startswith(f"{PACKAGE}.")
            for name, kind in exported_methods(load(driver_type)).items():
                if kind != "byte stream":
                    if name not in methods:
                        problems.append(f"{where}: exported {kind} {name} has no client method of that name")
                    else:
                        strict = defined_here(client_class, name)
                        gaps = [p for p in described(methods[name]) if strict or p == "no docstring"]
                        problems += [f"{where}.{name}: {p}" for p in gaps]
                elif not ours:
                    # An upstream client's byte stream is upstream's to document: that client opens it through
                    # upstream's own adapters and commands, not through a method of this package.
                    continue
                elif not any(
                    not described(m) and re.search(rf"[\"']{name}[\"']", source_reach(client_class, m["name"]))
                    for m in methods.values()
                ):
                    problems.append(f"{where}: no documented, typed client method opens the byte stream {name}")
            if ours:
                methods = {name: method for name, method in methods.items() if defined_here(client_class, name)}
                problems += [f"{where}.{m['name']}: {p}" for m in methods.values() for p in described(m)]
    assert sorted(set(problems)) == []


def test_help_text_of_the_exporter_config_reaches_j_and_mcp(exporter: Exporter, tmp_path: Path):
    """`j --help`, `j <driver> --help` and MCP show the config's `description` and `methods_description`.

    Each driver of this package gets both (the example's own, or added here for each of its commands), so a
    client whose `j` commands ignore the config (a plain click group instead of upstream's driver_click_group
    or a wrapper of it) fails. MCP's view is taken as an agent takes it: inside `jmp shell`, through `env()`.
    """
    config = example_config()
    with exporter.client() as root:
        commands_of = commands_by_driver(walk_click_tree(root.cli()))
    drivers = [path for path, _ in our_driver_paths(config["export"])]
    assert drivers
    for path in drivers:
        declared = entry(config, path)
        declared.setdefault("description", f"{' '.join(path)} as this bench's config describes it")
        described_commands = declared.setdefault("methods_description", {})
        for command in commands_of.get(path, {}):
            described_commands.setdefault(command, f"{command} as this bench's config describes it")
    (tmp_path / "exporter.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    script = f"j --help\n{sys.executable} -c '{MCP_VIEW}' '{json.dumps([list(path) for path in drivers])}'\n"

    out = local_shell(tmp_path / "exporter.yaml", script)

    mcp = json.loads(re.search(r"^MCP (.+)$", out, re.MULTILINE).group(1))  # type: ignore[union-attr]
    sections = re.split(r"^=== (.+)$", out.split("\nMCP ", 1)[0], flags=re.MULTILINE)
    top, helps = sections[0], dict(zip(sections[1::2], sections[2::2], strict=True))
    listed = {tuple(d["driver_path"]): d for d in mcp["drivers"]}
    mcp_commands = commands_by_driver(mcp["tree"], help_text=True)
    for path in drivers:
        declared, text = entry(config, path), helps[" ".join(path)]
        if len(path) == 1:
            assert words(declared["description"]).startswith(short_help(top, path[0])), top
        assert words(declared["description"]) in words(text), text
        assert listed[path]["description"] == declared["description"]
        for command, description in declared["methods_description"].items():
            assert words(description).startswith(short_help(text, command)), text
            assert mcp_commands[path][command] == description


def commands_by_driver(tree: dict[str, Any], help_text: bool = False, path: tuple[str, ...] = ()) -> dict:
    """The `j` commands of each driver in a `walk_click_tree` result, by driver path (with their help text)."""
    found: dict[tuple[str, ...], Any] = {}
    for name, node in tree.get("subcommands", {}).items():
        if "subcommands" in node:  # a group: a driver
            found |= commands_by_driver(node, help_text, (*path, name))
        elif path:
            found.setdefault(path, {})[name] = node["help"] if help_text else None
    return found
