# mypy: allow-untyped-defs
"""The lab path: the real `jmp run` registered with a controller, the real `jmp shell --selector` leasing it.

Labs run exporters with `endpoint` and `token` in their config; clients lease one by label through the
controller, and every byte goes through a router. tests/lab.py is a controller and router on 127.0.0.1
speaking Jumpstarter's protocol; one lab, one exporter of examples/exporter.yaml (plus hooks that only
log) and one client config serve the whole module. Only here is the client's `drivers.allow` list
checked: the tests use the list the docs give. Nothing here names a driver: the drivers come from the
config, the allowed packages from the package's entry points and what the exporter reports.
"""

import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from fnmatch import fnmatchcase
from importlib.metadata import distribution
from pathlib import Path
from typing import Any

import pytest
import yaml
from harness import PACKAGE, REPORTED, ROOT, example_config, exported
from lab import Lab, LabExporter, lab, lab_exporter, lab_shell

CLIENT_LABEL = "jumpstarter.dev/client"
ROOT_CLIENT = "jumpstarter_driver_composite.client.CompositeClient"
HOOK = 'echo "{when} $LEASE_NAME $CLIENT_NAME" >> {log}'


@dataclass
class Bench:
    """The module's lab, its exporter, a client config with the documented allow-list, and the hooks' log."""

    lab: Lab
    exporter: LabExporter
    client: Path
    hooks: Path

    def shell(self, script: str, **kwargs: Any):
        """Run `script` in `jmp shell --selector` (one lease) with the documented client config."""
        kwargs.setdefault("context", self.exporter.log_tail)
        return lab_shell(self.client, self.exporter.selector, script, **kwargs)


def documented_allow_lists() -> dict[str, list[str]]:
    """The `drivers.allow` list of each doc that gives one (README "Installing", docs/shipping.md), by file."""
    lists = {}
    for doc in (ROOT / "README.md", ROOT / "docs" / "shipping.md"):
        for block in re.findall(r"^```yaml\n(.*?)^```", doc.read_text(), re.MULTILINE | re.DOTALL):
            if "allow:" in block:
                lists[doc.name] = yaml.safe_load(block)["drivers"]["allow"]
    return lists


def commands_of(help_text: str) -> list[str]:
    """The command names `j --help` lists."""
    return re.findall(r"^  (\S+)", help_text.split("Commands:", 1)[-1], re.MULTILINE)


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bench]:
    """One lab with one exporter of examples/exporter.yaml, labelled, whose hooks append to a log."""
    workdir = tmp_path_factory.mktemp("lab")
    hooks = workdir / "hooks.log"
    config = example_config() | {
        "hooks": {
            "beforeLease": {"script": HOOK.format(when="before", log=hooks), "timeout": 30},
            "afterLease": {"script": HOOK.format(when="after", log=hooks), "timeout": 30},
        }
    }
    allow = documented_allow_lists()["shipping.md"]
    with lab() as running, lab_exporter(running, workdir / "exporter", config, "bench-1", {"bench": "one"}) as exporter:
        yield Bench(running, exporter, running.client_config(workdir / "client.yaml", "tester", allow), hooks)


def test_every_driver_and_the_hardware_tests_through_a_lease(bench: Bench):
    """Through a lease and the router, `j --help` lists every driver of the config and tests/hardware passes."""
    hardware = f"{sys.executable} -m pytest {ROOT / 'tests' / 'hardware'} -p no:cacheprovider -q --timeout 60"
    result = bench.shell(f"j --help\n{hardware}", timeout=300)
    assert result.returncode == 0, result.stdout
    assert sorted(commands_of(result.stdout)) == sorted(exported()), result.stdout
    summary = re.findall(r"^=*\s*(\d+ \w+(?:, \d+ \w+)*) in [\d.]+s", result.stdout, re.MULTILINE)
    assert summary and re.search(r"\b[1-9]\d* passed\b", summary[-1]), result.stdout
    assert not re.search(r"\b(failed|errors?|skipped)\b", summary[-1]), result.stdout
    assert bench.lab.router.streams >= 2  # the shell's own connection and `j`'s: the router carried them
    REPORTED.append(f"lab: j --help and tests/hardware through one lease: {summary[-1]}")


def test_documented_allow_list_is_what_the_package_needs(bench: Bench):
    """README and docs/shipping.md allow exactly the packages of the clients the drivers use, and the root's."""
    documented = documented_allow_lists()
    assert set(documented) == {"README.md", "shipping.md"}, documented
    assert documented["README.md"] == documented["shipping.md"]
    reported = {r.labels[CLIENT_LABEL] for r in bench.lab.exporter(bench.exporter.name).reports}
    # The package's own drivers, by entry point: what an author's own exporter configs may use.
    entry_points = [e for e in distribution(PACKAGE.replace("_", "-")).entry_points if e.group == "jumpstarter.drivers"]
    assert entry_points
    clients = reported | {e.load().client() for e in entry_points} | {ROOT_CLIENT}
    needed = {f"{path.split('.')[0]}.*" for path in clients}
    assert set(documented["shipping.md"]) == needed
    assert all(any(fnmatchcase(path, pattern) for pattern in needed) for path in clients)


def test_package_alone_is_refused(bench: Bench, tmp_path: Path):
    """With only the package allowed (the docs' old list), a lab client cannot load the exporter's root client."""
    client = bench.lab.client_config(tmp_path / "client.yaml", "package-only", [f"{PACKAGE}.*"])
    result = lab_shell(client, bench.exporter.selector, "j --help", context=bench.exporter.log_tail)
    assert result.returncode != 0, result.stdout
    # Jumpstarter 0.9 words a refused client as a missing one ("a version mismatch"), wrapped in a box.
    squeezed = re.sub(r"[\s│]+", "", result.stdout)
    assert f"Driver'{ROOT_CLIENT}'isnotinstalled." in squeezed, result.stdout


def test_hooks_run_at_each_lease_start_and_end(bench: Bench):
    """beforeLease and afterLease run once per lease, in order, with the lease's name and client."""
    assert bench.shell("true").returncode == 0  # with the module's earlier leases, if any
    ended = [lease for lease in bench.lab.leases() if lease.begin is not None and lease.end is not None]
    expected = [
        line
        for lease in ended
        for line in (f"before {lease.name} {lease.client}", f"after {lease.name} {lease.client}")
    ]
    assert bench.hooks.read_text().splitlines() == expected
