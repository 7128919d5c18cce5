# mypy: allow-untyped-defs
"""The lab path: the real `jmp run` registered with a controller, the real `jmp shell --selector` leasing it.

Labs run exporters with `endpoint` and `token` in their config; clients lease one by label through the
controller, and every byte goes through a router. tests/lab.py is a controller and router on 127.0.0.1
speaking Jumpstarter's protocol; one lab, one exporter of examples/exporter.yaml (plus hooks that only
log) and one client config serve the whole module. Only here is the client's `drivers.allow` list
checked: the tests use the list the docs give. Nothing here names a driver: the drivers come from the
config, the allowed packages from the package's entry points and what the exporter reports.
"""

import json
import re
import shutil
import signal
import ssl
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from fnmatch import fnmatchcase
from importlib.metadata import distribution
from pathlib import Path
from typing import Any

import anyio
import grpc
import pytest
import yaml
from harness import JMP, PACKAGE, REPORTED, ROOT, child_env, example_config, exported, start, stop_group, wait_for
from jumpstarter.client.exceptions import LeaseError
from jumpstarter.config.client import ClientConfigV1Alpha1
from lab import Lab, LabExporter, lab, lab_exporter, lab_shell, matches, status_name

CLIENT_LABEL = "jumpstarter.dev/client"
ROOT_CLIENT = "jumpstarter_driver_composite.client.CompositeClient"
HOOK = 'echo "{when} $LEASE_NAME $CLIENT_NAME" >> {log}'
HOOK_TIMEOUT = 30


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
            "beforeLease": {"script": HOOK.format(when="before", log=hooks), "timeout": HOOK_TIMEOUT},
            "afterLease": {"script": HOOK.format(when="after", log=hooks), "timeout": HOOK_TIMEOUT},
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
    """README and docs/shipping.md allow the package, the packages of the clients its drivers use, and the root's."""
    documented = documented_allow_lists()
    assert set(documented) == {"README.md", "shipping.md"}, documented
    assert documented["README.md"] == documented["shipping.md"]
    reported = {r.labels[CLIENT_LABEL] for r in bench.lab.exporter(bench.exporter.name).reports}
    # The package's own drivers, by entry point: what an author's own exporter configs may use.
    entry_points = [e for e in distribution(PACKAGE.replace("_", "-")).entry_points if e.group == "jumpstarter.drivers"]
    assert entry_points
    clients = reported | {e.load().client() for e in entry_points} | {ROOT_CLIENT}
    needed = {f"{path.split('.')[0]}.*" for path in clients}
    # The package itself stays allowed where no kept driver returns a client of its own (a copy of the console
    # alone, whose client is upstream's): the author's next driver will.
    assert set(documented["shipping.md"]) == needed | {f"{PACKAGE}.*"}
    assert all(any(fnmatchcase(path, pattern) for pattern in needed) for path in clients)


def test_package_alone_is_refused(bench: Bench, tmp_path: Path):
    """With only the package allowed (the docs' old list), a lab client cannot load the exporter's root client."""
    client = bench.lab.client_config(tmp_path / "client.yaml", "package-only", [f"{PACKAGE}.*"])
    # In this process, as `jmp shell` and `j` build the client (lease, connect): faster than a `jmp shell`.
    # The refused root is a stub whose every use fails as `j --help` does; Jumpstarter 0.9 words a refused
    # client as a missing one ("a version mismatch").
    refused = pytest.raises(ImportError, match=f"Driver '{re.escape(ROOT_CLIENT)}' is not installed")
    lease = ClientConfigV1Alpha1.from_file(client).lease(selector=bench.exporter.selector)
    with lease as leased, leased.connect() as root, refused:
        root.cli()


def test_hooks_run_at_each_lease_start_and_end(bench: Bench):
    """beforeLease and afterLease run once per lease, in order, with the lease's name and client."""
    if not any(lease.end for lease in bench.lab.leases()):  # the module's earlier tests leased it already
        assert bench.shell("true").returncode == 0

    def expected() -> list[str]:
        ended = [lease for lease in bench.lab.leases() if lease.begin is not None and lease.end is not None]
        return [f"{when} {lease.name} {lease.client}" for lease in ended for when in ("before", "after")]

    # A lease released by its client (not by `jmp shell`'s EndSession) ends before its afterLease has run:
    # the exporter runs it once told, and is Available again after it.
    wait_for(lambda: status_name(bench.lab.exporter(bench.exporter.name).status) == "AVAILABLE", HOOK_TIMEOUT + 10)
    assert bench.hooks.read_text().splitlines() == expected()


# A client that dies holding a lease: the lease stays until it expires, then the next client is served.
# Each driver with transfers adds those the dying client has under way, a condition that they are, and what
# must hold once its lease is over (the exporter builds fresh drivers for every lease).
LEASE_SECONDS = 600
"""The dying client's lease: longer than its shell takes to start and its transfers to get under way on any machine.
Once it is killed, the test shortens the lease to HELD_SECONDS (the lab's UpdateLease) rather than wait it out."""
HELD_SECONDS = 3
"""How long the killed client's lease still holds the exporter once the second client waits for it."""
UNDER_WAY: list[tuple[str, str]] = [
    # (shell commands that start transfers, a Python condition that is true once they are under way)
    # unit:custom:start
    # An endless byte stream, and an upload from a FIFO that never ends (announced as half the free space).
    (
        "j custom random 1000000000000 -o /dev/null &\n"
        "mkfifo image.fifo && (cat /dev/zero > image.fifo &)\n"
        "python -c 'from pathlib import Path; from jumpstarter.utils.env import env\n"
        'with env() as c: c.custom.portal.call(c.custom._upload_async, Path("image.fifo"), "disk.img", {free})\' &',
        "client.custom.state().open_streams == 1 and any(Path({uploads!r}).glob('.upload-*.partial'))",
    ),
    # unit:custom:end
    # unit:storage:start
    # A flash of a card-sized image, killed while it writes.
    # Under way once the card holds a byte of it: killed earlier (while the card switches to the host, or before
    # the first batch lands), the write fails with the card unchanged, and nothing is left to check.
    ("j storage flash {image} &", "(s := client.storage.state()).operation == 'writing' and s.written > 0"),
    # unit:storage:end
]
POLL = """
import time
from pathlib import Path
from jumpstarter.utils.env import env
with env() as client:
    while not ({condition}):
        time.sleep(0.1)
print("UNDER WAY", flush=True)
"""


def test_killed_client_holds_the_exporter_until_its_lease_expires(bench: Bench, tmp_path: Path):
    """A lease holder killed mid-transfer: a second client waits (Pending), then is served once the lease expires."""
    exporter = bench.exporter
    fill: dict[str, object] = {"free": shutil.disk_usage(tmp_path).free // 2}
    # unit:custom:start
    uploads = exporter.workdir / example_config()["export"]["custom"]["config"].get("upload_dir", ".uploads")
    uploads.mkdir(exist_ok=True)
    (uploads / "disk.img").write_bytes(b"known good image")
    fill["uploads"] = str(uploads)
    # unit:custom:end
    # unit:storage:start
    fill["image"] = image = tmp_path / "image.img"
    with image.open("wb") as file:
        file.truncate(example_config()["export"]["storage"]["config"]["size"])
    # unit:storage:end
    transfers = "\n".join(start.format(**fill) for start, _ in UNDER_WAY)
    condition = " and ".join(f"({check.format(**fill)})" for _, check in UNDER_WAY) or "True"
    poll = tmp_path / "poll.py"
    poll.write_text(POLL.format(condition=condition))
    if not any(lease.end for lease in bench.lab.leases()):
        assert bench.shell("true").returncode == 0  # the exporter's idle state is the one after a lease
    fds_before = exporter.open_fds()
    log = tmp_path / "dying.log"
    args = [JMP, "shell", "--client-config", str(bench.client), "--selector", exporter.selector]
    args += ["--duration", str(LEASE_SECONDS), "--", "sh", "-c", f"{transfers}\n{sys.executable} {poll}\nsleep 600"]
    with log.open("w") as output:
        dying = start(args, cwd=tmp_path, stdout=output)
    before = len(bench.lab.leases())

    def context() -> str:
        return f"--- {log}:\n{log.read_text(errors='replace')[-3000:]}\n{exporter.log_tail()}"

    try:
        # The clock is the lease's: it starts once the exporter is the dying client's (after any earlier lease's
        # afterLease, and a poll), and its transfers must get under way well before it expires.
        wait_for(lambda: (leases := bench.lab.leases())[before:] and leases[-1].begin, 90, "the lease", context=context)
        wait_for(lambda: "UNDER WAY" in log.read_text(), 120, "transfers under way", context=context)
    finally:
        stop_group(dying, signal.SIGKILL)
    killed = bench.lab.leases()[-1]
    assert killed.end is None  # nobody released it: it holds the exporter
    with (tmp_path / "next.log").open("w") as output:
        waiting = start(lab_shell_args(bench, "true"), cwd=tmp_path, stdout=output)
    try:
        pending = wait_for(
            lambda: next((lease for lease in bench.lab.leases() if lease.created > killed.created), None),
            60,
            "the second client's lease",
        )
        wait_for(lambda: bench.lab.leases()[-1].pending[0] == "NotAvailable", 30, "the second lease waiting")
        bench.lab.shorten(killed.name, HELD_SECONDS)
        assert waiting.wait(timeout=HELD_SECONDS + HOOK_TIMEOUT + 120) == 0, (tmp_path / "next.log").read_text()
    finally:
        stop_group(waiting, signal.SIGKILL)
    killed, served = (lease for lease in bench.lab.leases() if lease.name in (killed.name, pending.name))
    assert killed.ended_by == "Expired"
    assert served.begin is not None and killed.end is not None and served.ended_by == "Released"
    waited = (served.begin - killed.end).total_seconds()
    REPORTED.append(f"lab: after a killed client's lease expired, the next client was served in {waited:.1f} s")
    # Held until the expiry, then the documented bound (docs/running-exporters.md): afterLease, one poll (5 s).
    assert 0 <= waited <= HOOK_TIMEOUT + 5 + 5
    wait_for(
        lambda: exporter.open_fds() <= fds_before,
        what=f"exporter fds back to {fds_before}",
        context=lambda: exporter.fd_targets() + exporter.log_tail(),
    )
    # unit:custom:start
    assert (uploads / "disk.img").read_bytes() == b"known good image"
    assert not list(uploads.glob(".upload-*.partial"))
    # unit:custom:end
    # unit:storage:start
    assert "card.img holds an incomplete" in exporter.log.read_text(), exporter.log_tail()
    # unit:storage:end


# unit:storage:start
def test_a_flash_is_under_way_once_the_card_holds_a_byte(tmp_path: Path):
    """The dying client's storage condition is false while the card switches to the host, before any byte landed."""
    from concurrent.futures import ThreadPoolExecutor

    from harness import drivers_only
    from jumpstarter.common.utils import serve
    from jumpstarter.config.exporter import ExporterConfigV1Alpha1DriverInstance

    # A switching command that waits for the test (bounded by the driver's command_timeout).
    switched = tmp_path / "switched"
    hold = {
        "card": str(tmp_path / "card.img"),
        "host_command": ["sh", "-c", f"until [ -e {switched} ]; do sleep 0.05; done"],
    }
    export = drivers_only("storage", config=example_config({"storage": hold}))["export"]
    root = ExporterConfigV1Alpha1DriverInstance.model_validate({"children": export}).instantiate()
    image = tmp_path / "image.img"
    image.write_bytes(b"\x5a" * 1024 * 1024)
    (condition,) = [check for start, check in UNDER_WAY if "j storage" in start]
    with serve(root) as client, ThreadPoolExecutor(1) as pool:
        flashing = pool.submit(client.storage.flash, image)
        try:
            wait_for(lambda: client.storage.state().operation == "writing", what="the flash switching the card")
            assert not eval(condition, {"client": client})
        finally:
            switched.touch()
        assert flashing.result(timeout=60).image == "complete"


# unit:storage:end
def lab_shell_args(bench: Bench, command: str) -> list[str]:
    """`jmp shell --selector` of the bench's exporter, with the documented client config, running `command`."""
    return [
        JMP,
        "shell",
        "--client-config",
        str(bench.client),
        "--selector",
        bench.exporter.selector,
        "--",
        "sh",
        "-c",
        command,
    ]


# One call an agent makes, per driver: (`j` command, a line its output has). The first exported one runs.
AGENT_CALLS: list[tuple[list[str], str]] = [
    # unit:skeleton:start
    (["template", "hello", "agent"], "Hello, agent!"),
    # unit:skeleton:end
    # unit:power:start
    (["power", "on"], ""),
    # unit:power:end
    # unit:device:start
    (["device", "idn"], ""),
    # unit:device:end
    # unit:custom:start
    (["custom", "state"], "bench-01"),
    # unit:custom:end
    # unit:storage:start
    (["storage", "state"], ""),
    # unit:storage:end
    # unit:console:start
    # Upstream's `pipe` forwards stdin (empty here) and, with --no-output, ends at its EOF: a console never ends.
    (["console", "pipe", "--input", "--no-output"], ""),
    # unit:console:end
]


def test_agent_leases_through_jmp_mcp_serve(bench: Bench, tmp_path: Path):
    """`jmp mcp serve` over stdio leases the exporter, lists every driver with its description, and runs a command."""
    mcp = pytest.importorskip("mcp")
    from mcp.client.stdio import StdioServerParameters, stdio_client

    config = yaml.safe_load(bench.client.read_text())
    env = child_env(
        HOME=str(tmp_path),  # jmp mcp serve logs to ~/.jumpstarter/logs
        JMP_ENDPOINT=config["endpoint"],
        JMP_TOKEN=config["token"],
        JMP_NAMESPACE=config["metadata"]["namespace"],
        JMP_NAME=config["metadata"]["name"],
        JMP_GRPC_INSECURE="1",
        JMP_DRIVERS_ALLOW=",".join(config["drivers"]["allow"]),
    )
    server = StdioServerParameters(command=JMP, args=["mcp", "serve"], env=env, cwd=str(tmp_path))
    exported_config = example_config()["export"]
    calls = [(command, out) for command, out in AGENT_CALLS if command[0] in exported_config]
    assert calls, "AGENT_CALLS has no call of a driver examples/exporter.yaml exports: add one of yours"
    command, expected = calls[0]

    async def agent() -> tuple[dict[str, Any], dict[str, Any]]:
        async with stdio_client(server) as (read, write), mcp.ClientSession(read, write) as session:
            await session.initialize()

            async def tool(name: str, **arguments: Any) -> Any:
                with anyio.fail_after(120):
                    result = await session.call_tool(name, arguments)
                assert not result.isError, result
                return json.loads(result.content[0].text)

            connection = await tool("jmp_connect", selector=bench.exporter.selector, duration_seconds=300)
            assert "connection_id" in connection, connection
            try:
                drivers = await tool("jmp_drivers", connection_id=connection["connection_id"])
                ran = await tool("jmp_run", connection_id=connection["connection_id"], command=command)
            finally:
                await tool("jmp_disconnect", connection_id=connection["connection_id"])
            return {"drivers": drivers}, ran

    listing, ran = anyio.run(agent)
    described = {tuple(d["driver_path"]): d["description"] for d in listing["drivers"]}
    for name in exported_config:
        assert described[(name,)] == description_of(exported_config, name), listing
    assert ran["exit_code"] == 0, ran
    assert expected in ran["stdout"], ran
    wait_for(lambda: bench.lab.leases()[-1].end is not None, 30, "the agent's lease released")


def description_of(export: dict[str, Any], name: str) -> str:
    """A driver's `description` in an `export:` tree; a `ref:` entry has its target's."""
    entry = export[name]
    if "ref" in entry:
        parent, *path = entry["ref"].split(".")
        entry = export[parent]
        for child in path:
            entry = entry["children"][child]
    assert entry.get("description"), f"{name}: give it a description (j --help and agents show it)"
    return entry["description"]


@pytest.mark.parametrize(
    ("selector", "matched"),
    [
        ("bench=one", True),
        ("bench==one", True),
        ("bench=two", False),
        ("bench!=two", True),
        ("bench", True),
        ("!bench", False),
        ("bench=one,rack", False),
        ("bench=one, !rack", True),
    ],
)
def test_lab_selects_exporters_by_label(selector: str, matched: bool):
    """The lab's label selectors: equality, inequality, existence and absence, all of them comma-separated."""
    assert matches(selector, {"bench": "one"}) is matched


def test_a_selector_no_exporter_matches_fails_at_once(bench: Bench, tmp_path: Path):
    """A lease no exporter can ever satisfy is refused at once, not left waiting (upstream: Unsatisfiable)."""
    client = ClientConfigV1Alpha1.from_file(bench.lab.client_config(tmp_path / "c.yaml", "nobody", []))
    with pytest.raises(LeaseError, match="the lease cannot be satisfied"), client.lease(selector="bench=none"):
        pass


def test_lab_keeps_a_connection_that_pings_while_idle():
    """Jumpstarter's channels ping while idle; the lab answers them, as a controller does, not with GOAWAY."""
    pings = [
        ("grpc.keepalive_time_ms", 100),  # Jumpstarter pings every 20 s: at once here, so that strikes come in seconds
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
    ]
    with lab() as bench_lab:
        host, port = bench_lab.endpoint.rsplit(":", 1)
        trusted = grpc.ssl_channel_credentials(ssl.get_server_certificate((host, int(port))).encode())
        with grpc.secure_channel(bench_lab.endpoint, trusted, options=pings) as channel:
            grpc.channel_ready_future(channel).result(timeout=30)
            states: list[grpc.ChannelConnectivity] = []
            channel.subscribe(states.append)
            # grpc's client pings at most once a second: 5 s give 5 pings. grpc's default server answers the fourth
            # with GOAWAY (more than two strikes), and the channel goes IDLE.
            time.sleep(5)
            channel.unsubscribe(states.append)
    assert set(states) == {grpc.ChannelConnectivity.READY}
