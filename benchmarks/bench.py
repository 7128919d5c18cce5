"""Benchmark the example drivers against the framework's own baselines, through serve() and a real exporter.

Run from the repository root:

    uv run python benchmarks/bench.py            # the full run (1-3 minutes on 2 cores)
    uv run python benchmarks/bench.py --quick    # one tiny round: proves the benchmark runs
    uv run python benchmarks/bench.py --quick --lab   # ... and through a lab too

Three modes: serve() in this process, a `jmp run` exporter over TCP (direct mode), and (not in --quick
unless --lab) the same exporter registered with the tests' lab double (tests/lab.py, a process of its
own), reached through a lease and its router. The lab's figures are informational: a `LAB` line
gives each transfer rate through the router against the same rate direct.

The framework baselines (baseline.py) need no example. Each example unit adds its measurements in
`benchmarks/<unit>_bench.py` (the plugin interface is described in benchkit.py); this script finds
them by name and names no unit. It prints the targets it will judge (a `TARGETS` line), a table of
every figure, and last a `SUMMARY` line: PASS or FAIL per target, with a reason for each FAIL.

Targets compare a method with the baseline of the same shape, measured in alternation in small
blocks; each FAILs only when the inter-quartile range of its per-block ratios misses the bound
(benchkit.Target.verdict says why), so verdicts hold on a loaded machine. Absolute numbers depend
on the machine; compare ratios. Linux only: memory figures come from /proc.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from types import ModuleType

# Jumpstarter draws a progress bar for every resource transfer unless TERM is "dumb"; child processes inherit it.
os.environ["TERM"] = "dumb"
HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))  # baseline, benchkit and the bench modules, here and in the exporter (PYTHONPATH below)

from anyio.from_thread import start_blocking_portal  # noqa: E402
from baseline import BaselineClient  # noqa: E402
from benchkit import Entry, Figures, MiB, Round, Series, Sizes, Target  # noqa: E402
from jumpstarter.client import DriverClient, client_from_path  # noqa: E402
from jumpstarter.common.utils import serve  # noqa: E402
from jumpstarter.config.exporter import ExporterConfigV1Alpha1DriverInstance  # noqa: E402

# One block of each comparison per round, many rounds: a comparison's blocks are spread over the whole run
# instead of a few seconds, so a stretch of heavy load spoils some of them, not all (with 4 blocks in a row per
# round, a byte stream's fast-helper/naive ratio went from 3.6x to 2.7x in one run of three: its three windows
# were all busy ones).
FULL = Sizes(blocks=1, calls=30, items=100, bytes=32 * MiB, latency=30, rss=256 * MiB, rss_runs=3)
ROUNDS = 12
SCRATCH_NEEDED = 2 * 1024 * MiB
"""Bytes of scratch space a full run uses at its peak (sources, uploads, cards of both modes), with room to spare."""
QUICK = Sizes(blocks=1, calls=4, items=10, bytes=1 * MiB, latency=4, rss=8 * MiB, rss_runs=1)
FRAMEWORK = "framework"
"""The label of the figures and targets of the baselines themselves, which every run has."""


@dataclass(frozen=True)
class Unit:
    """A source of drivers, measurements and targets: the framework itself, or one `*_bench.py` module."""

    name: str
    drivers: Callable[[Path], dict[str, Entry]]
    measure: Callable[[Round], None]
    once: Callable[[Round], None]
    targets: list[Target]


# The framework's own figures: the baselines against each other, for reading the examples' ratios.
def framework_drivers(workdir: Path) -> dict[str, Entry]:
    return {"baseline": {"type": "baseline.Baseline", "config": {}}}


def framework_measure(run: Round) -> None:
    base, size = run.baseline, run.sizes.bytes
    run.compare("ping_sync/ping", base.ping_sync, base.ping)  # what running in a worker thread costs
    run.compare("echo_log/echo", base.echo_log, base.echo)  # what one INFO line per call costs
    run.compare("sink/ceiling", lambda: base.sink(size), lambda: base.drain(size), per="byte", amount=size)


def framework_once(run: Round) -> None:
    run.rss_growth("stream RSS growth", lambda: run.baseline.drain(run.sizes.rss))
    run.rss_growth("resource RSS growth", lambda: run.baseline.sink(run.sizes.rss))


# Judged in serve() only: through an exporter the receiving process's gRPC buffers what arrives while it waits for
# a CPU (35-80 MiB per 256 MiB on a loaded machine, 10-23 MiB on a quiet one), which says how busy the machine
# was, not how the framework streams. The exporter's figures are in the table; examples are judged against them.
RSS_WHY = "memory grows with the size moved: something buffers the transfer instead of streaming it"
FRAMEWORK_TARGETS = [
    Target("stream RSS growth", "<", 32, RSS_WHY, modes=("serve",)),
    Target("resource RSS growth", "<", 32, RSS_WHY, modes=("serve",)),
]
FRAMEWORK_UNIT = Unit(FRAMEWORK, framework_drivers, framework_measure, framework_once, FRAMEWORK_TARGETS)


def discover() -> list[Unit]:
    """The framework, then every `*_bench.py` module of this directory, in name order."""
    units = [FRAMEWORK_UNIT]
    for path in sorted(HERE.glob("*_bench.py")):
        module: ModuleType = importlib.import_module(path.stem)
        name = path.stem.removesuffix("_bench")
        missing = [attr for attr in ("drivers", "measure", "TARGETS") if not hasattr(module, attr)]
        if missing:
            raise SystemExit(f"{path.name} does not provide {', '.join(missing)} (see benchkit.py)")
        once = getattr(module, "once", lambda run: None)
        units.append(Unit(name, module.drivers, module.measure, once, list(module.TARGETS)))
    return units


def client_modules() -> list[str]:
    """The package's client modules (`client.py` at its top and in its subpackages): the ones `j` imports."""
    modules = []
    for package in sorted((ROOT / "src").glob("*/__init__.py")):
        for path in sorted(package.parent.glob("**/client.py")):
            parts = path.relative_to(ROOT / "src").with_suffix("").parts
            modules.append(".".join(parts))
    return modules


# The baseline is what `j` loads before any driver's client: jumpstarter.client, and the client of the root
# driver, which is a Composite for every exporter config (0.9 wraps `export:` in one, local mode too).
IMPORT_CODE = """
import importlib, sys, time
start = time.perf_counter()
import jumpstarter.client
import jumpstarter_driver_composite.client
middle = time.perf_counter()
importlib.import_module(sys.argv[1])
print(middle - start, time.perf_counter() - start)
"""


def measure_import(module: str, figures: Figures) -> None:
    """Import time of what `j` always loads (see IMPORT_CODE), and of `module` on top of it, in a fresh interpreter.

    Both figures come from the same process (timed inside it), so the ratio measures what the
    module adds, not the noise between two interpreters.
    """
    command = [sys.executable, "-c", IMPORT_CODE, module]
    result = subprocess.run(command, check=True, capture_output=True, text=True)
    base, total = (float(value) for value in result.stdout.split())
    series = figures.setdefault(f"client import {module}", Series("s"))
    series.method.append(total)
    series.baseline.append(base)
    series.relative.append(total / base)


def entries(units: list[Unit], workdir: Path) -> dict[str, Entry]:
    """Every unit's exporter config entries, for one mode."""
    result: dict[str, Entry] = {}
    for unit in units:
        for name, entry in unit.drivers(workdir).items():
            if name in result:
                raise SystemExit(f"{unit.name}_bench.py: driver name {name!r} is used twice")
            result[name] = entry
    return result


@contextmanager
def serve_tree(units: list[Unit], workdir: Path) -> Iterator[DriverClient]:
    """serve() the units' drivers as one Composite, built from the same entries an exporter config has."""
    tree = ExporterConfigV1Alpha1DriverInstance.model_validate({"children": entries(units, workdir)})
    with serve(tree.instantiate()) as root:
        yield root


@contextmanager
def exporter_tree(units: list[Unit], workdir: Path) -> Iterator[DriverClient]:
    """Start `jmp run` on a free loopback port with the units' drivers, and connect a client to it."""
    config = workdir / "exporter.yaml"
    export = "".join(f"  {name}: {json.dumps(entry)}\n" for name, entry in entries(units, workdir).items())
    config.write_text(
        "apiVersion: jumpstarter.dev/v1alpha1\nkind: ExporterConfig\n"
        "metadata: {namespace: default, name: bench}\nendpoint: ''\ntoken: ''\n"
        f"export:\n{export}"
    )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    passphrase = secrets.token_hex(16)
    jmp = Path(sys.executable).with_name("jmp")
    if not jmp.exists():
        raise SystemExit(f"{jmp} not found: run with `uv run` (jumpstarter-cli is a dev dependency)")
    command = [str(jmp), "run", "--exporter-config", str(config), "--tls-grpc-listener", f"127.0.0.1:{port}"]
    command += ["--tls-grpc-insecure", "--passphrase", passphrase]
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    log_path = workdir / "exporter.log"
    log = log_path.open("wb")
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    GROUPS.append(process.pid)
    try:
        deadline = time.monotonic() + 60
        while True:  # the exporter imports for a few seconds before it listens
            if process.poll() is not None:
                raise RuntimeError(f"exporter exited: {log_path.read_text()}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("exporter did not listen within 60 s") from None
                time.sleep(0.1)
        # `jmp run` serves from a child it forks into a session (process group) of its own.
        GROUPS.extend(int(pid) for pid in Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split())
        with start_blocking_portal() as portal, ExitStack() as stack:
            # What `jmp shell --tls-grpc HOST:PORT --tls-grpc-insecure` does, with public APIs.
            connect = client_from_path(
                f"127.0.0.1:{port}", portal, stack, allow=[], unsafe=True, insecure=True, passphrase=passphrase
            )
            with portal.wrap_async_context_manager(connect) as root:
                yield root
    finally:
        # `jmp run` forwards SIGTERM to the exporter it forked, then exits.
        process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=15)
        kill_groups()  # what outlived the SIGTERM: jmp run, or the exporter it forked
        process.wait(timeout=5)
        log.close()


@contextmanager
def lab_tree(units: list[Unit], workdir: Path) -> Iterator[DriverClient]:
    """The same exporter registered with the tests' lab double (tests/lab.py), reached through a lease and router."""
    sys.path.insert(0, str(ROOT / "tests"))
    from jumpstarter.config.client import ClientConfigV1Alpha1
    from lab import lab_process

    export = {"apiVersion": "jumpstarter.dev/v1alpha1", "kind": "ExporterConfig", "export": entries(units, workdir)}
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    with lab_process() as lab:  # a process of its own, like a lab's router: it does not share this one's CPU
        config = workdir / "exporter.yaml"
        config.write_text(json.dumps(lab.exporter_config(export, "bench", {"bench": "lab"})))
        log = (workdir / "exporter.log").open("wb")
        jmp = str(Path(sys.executable).with_name("jmp"))
        process = subprocess.Popen(
            [jmp, "run", "--exporter-config", str(config)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=workdir,
            start_new_session=True,
        )
        own = [process.pid]
        GROUPS.append(process.pid)  # killed by on_sigterm's kill_groups too
        try:
            # The bench drivers' clients live in benchmarks/: allow every client, as the other modes do. The
            # lease waits (polling every 5 s) until the exporter has registered.
            client = ClientConfigV1Alpha1.from_file(lab.client_config(workdir / "client.yaml", "bench", ["UNSAFE"]))
            with client.lease(selector="bench=lab", duration=timedelta(hours=2)) as lease, lease.connect() as root:
                own += [
                    int(pid) for pid in Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()
                ]
                GROUPS.extend(own[1:])
                yield root
        finally:
            process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=15)
            for group in own:  # what outlived the SIGTERM; the other modes' exporters are theirs to stop
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(group, signal.SIGKILL)
                if group in GROUPS:
                    GROUPS.remove(group)
            process.wait(timeout=5)
            log.close()


def lab_ratios(figures: Figures) -> str:
    """Each transfer rate through the lab's router against the same rate direct (`jmp run` over TCP)."""
    ratios = []
    for key, series in figures.items():
        mode, _, name = key.partition(" ")
        direct = figures.get(f"exporter {name}")
        if mode == "lab" and series.unit == "MB/s" and direct is not None:
            lab_rate, direct_rate = statistics.median(series.method), statistics.median(direct.method)
            ratios.append(f"{name}: {lab_rate:,.0f} vs {direct_rate:,.0f} MB/s = {lab_rate / direct_rate:.2f}x")
    return "; ".join(ratios)


GROUPS: list[int] = []
"""Process groups started: each `jmp run`, and the exporter it forked into a session of its own."""


def kill_groups() -> None:
    """SIGKILL every process group started, and forget them."""
    while GROUPS:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(GROUPS.pop(), signal.SIGKILL)


def on_sigterm(signum: int, frame: object) -> None:
    """Unwind, which stops the exporter; if the unwinding is stuck, kill the exporters and leave after 20 s."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # `uv run` forwards the SIGTERM it got too: unwind once
    threading.Thread(target=force_exit, args=(128 + signum,), daemon=True).start()
    sys.exit(128 + signum)


def force_exit(status: int) -> None:
    time.sleep(20)  # the unwinding takes a few seconds; a caller may send SIGKILL after 30 (tests/bench_test.py)
    kill_groups()
    os._exit(status)


def number(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def print_table(figures: Figures) -> None:
    """One row per series: the method's and the baseline's medians, and the median and IQR of the judged samples."""
    width = max(len(name) for name in figures)
    print(f"{'figure':<{width}}  {'unit':>7}  {'method':>8}  {'baseline':>8}  {'ratio':>6}  {'IQR':>11}  {'n':>3}")
    # "ratio" is method/baseline per block (or method - baseline for memory growth); n: blocks (or samples).
    for name, series in figures.items():
        method = number(statistics.median(series.method))
        low, high = series.quartiles
        if series.baseline and series.relation == "difference":
            baseline, ratio = number(statistics.median(series.baseline)), f"{series.median:+.1f}"
            spread = f"{low:+.1f} to {high:+.1f}"
        elif series.baseline:
            baseline, ratio = number(statistics.median(series.baseline)), f"{series.median:.2f}x"
            spread = f"{low:.2f}-{high:.2f}"
        else:
            baseline, ratio, spread = "", "", f"{number(low)}-{number(high)}"
        n = len(series.judged)
        print(f"{name:<{width}}  {series.unit:>7}  {method:>8}  {baseline:>8}  {ratio:>6}  {spread:>11}  {n:>3}")


Judged = tuple[str, Target, str, str]
"""A target's label, the target, its unit's label and its mode ("" for a mode-less target)."""


def main() -> None:
    # A SIGTERM (a test's timeout, a CI job cancelled) unwinds normally, so the exporter is stopped too.
    signal.signal(signal.SIGTERM, on_sigterm)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one tiny round, to check the benchmark runs")
    parser.add_argument("--rounds", type=int, default=ROUNDS, help=f"rounds of every figure (default: {ROUNDS})")
    parser.add_argument(
        "--lab",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also measure through a lab (default: not in --quick)",
    )
    args = parser.parse_args()
    rounds, sizes = (1, QUICK) if args.quick else (args.rounds, FULL)
    started = time.monotonic()
    units = discover()
    modes = ("serve", "exporter")
    # Informational, never judged: the lab's router is the tests' double, in Python; labs run upstream's (Go).
    measured = (*modes, "lab") if (not args.quick if args.lab is None else args.lab) else modes
    imports = client_modules()

    # Every target this run judges, announced before measuring: the SUMMARY line has a verdict for each.
    judged: list[Judged] = []
    for mode in modes:
        for unit in units:
            for target in unit.targets:
                if mode in target.modes:
                    judged.append((f"{mode} {unit.name} {target.name}", target, unit.name, mode))
    import_why = "importing the client module costs more than 5% on top of what `j` always imports: `j` starts slower"
    for module in imports:
        judged.append((f"client import {module}", Target(module, "<=", 1.05, import_why), "", ""))
    print("TARGETS " + "; ".join(label for label, *_ in judged), flush=True)

    figures: Figures = {}
    # tmpfs when it has room (a container's is 64 MiB): the upload figures measure the transport, not the disk.
    scratch = "/dev/shm" if Path("/dev/shm").is_dir() and shutil.disk_usage("/dev/shm").free > SCRATCH_NEEDED else None
    with tempfile.TemporaryDirectory(dir=scratch, prefix="jumpstarter-bench-") as tmp, ExitStack() as stack:
        workdir = Path(tmp)
        trees = {}
        for mode, tree in (("serve", serve_tree), ("exporter", exporter_tree), ("lab", lab_tree)):
            if mode in measured:
                (workdir / mode).mkdir()
                trees[mode] = stack.enter_context(tree(units, workdir / mode))

        def run(mode: str, unit: Unit, sizes: Sizes, figures: Figures) -> Round:
            root = trees[mode]
            baseline = root.children["baseline"]
            assert isinstance(baseline, BaselineClient)
            return Round(mode, unit.name, root.children, baseline, sizes, workdir / mode, figures)

        warmup = Sizes(**{k: max(1, v // 8) for k, v in sizes.__dict__.items()} | {"blocks": 1, "rss_runs": 1})
        for mode in measured:  # warm up connections, caches, pools; figures thrown away
            for unit in units:
                unit.measure(run(mode, unit, warmup, {}))
        for round_number in range(rounds):
            if round_number % max(1, rounds // 3) == 0:  # three samples are plenty: they hardly vary
                for module in imports:
                    measure_import(module, figures)
            # The modes take turns going first, so neither always follows the other's heaviest transfers.
            for mode in measured if round_number % 2 == 0 else measured[::-1]:
                for unit in units:
                    unit.measure(run(mode, unit, sizes, figures))
        for mode in modes:
            for unit in units:
                unit.once(run(mode, unit, sizes, figures))

    print_table(figures)
    if "lab" in measured:
        print(
            "LAB (informational: through the tests' Python router; labs run upstream's, in Go) " + lab_ratios(figures)
        )
    blocks = rounds * sizes.blocks
    print(f"({rounds} rounds, {blocks} blocks per comparison, {time.monotonic() - started:.0f} s)")

    verdicts = []
    for label, target, unit_name, mode in judged:
        key = f"{mode} {unit_name} {target.name}" if mode else label
        series = figures.get(key)
        if series is None:
            verdicts.append(f"{label}: no figure (FAIL: nothing recorded {target.name!r})")
            continue
        value, (low, high) = series.median, series.quartiles
        if series.baseline and series.relation == "difference":
            shown = f"{value:+.1f} {series.unit} [IQR {low:+.1f} to {high:+.1f}]"
        elif series.baseline:
            shown = f"{value:.2f}x [IQR {low:.2f}-{high:.2f}]"
        else:
            shown = f"{value:.1f} {series.unit} [IQR {low:.1f}-{high:.1f}]"
        passed, within_spread = target.verdict(series)
        if passed:
            note = ", within the spread" if within_spread else ""
            verdicts.append(f"{label}: {shown} ({target.op}{target.bound:g} PASS{note})")
            continue
        reason = target.why
        if series.baseline:
            reason += (
                f"; method {number(statistics.median(series.method))} vs baseline "
                f"{number(statistics.median(series.baseline))} {series.unit}"
            )
        if target.explain is not None:

            def lookup(name: str, mode: str = mode, unit_name: str = unit_name) -> Series:
                return figures[f"{mode} {unit_name} {name}"]

            reason += "; " + target.explain(lookup)
        # "; " separates verdicts: a reason uses commas.
        verdicts.append(f"{label}: {shown} ({target.op}{target.bound:g} FAIL: {reason.replace(';', ',')})")
    print("SUMMARY " + "; ".join(verdicts))


if __name__ == "__main__":
    main()
