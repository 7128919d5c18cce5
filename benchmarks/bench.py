"""Benchmark the example drivers against the framework's own baselines, through serve() and a real exporter.

Run from the repository root:

    uv run python benchmarks/bench.py            # the full run (about a minute on 2 cores)
    uv run python benchmarks/bench.py --quick    # one tiny round: proves the benchmark runs

Every round measures each figure once in each mode, in the same order, so a noisy machine slows a
figure and its baseline alike: targets are judged on the median of per-round ratios. Absolute
numbers depend on the machine; the ratios are what to compare. Linux only: memory figures come
from /proc.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

# Jumpstarter draws a progress bar for every resource transfer unless TERM is "dumb"; child processes inherit it.
os.environ["TERM"] = "dumb"
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # bench_driver, here and in the exporter process (PYTHONPATH below)

from anyio.from_thread import start_blocking_portal  # noqa: E402
from bench_driver import BenchClient, BenchDriver, usage  # noqa: E402
from jumpstarter.client import client_from_path  # noqa: E402
from jumpstarter.common.utils import serve  # noqa: E402

MiB = 1024 * 1024
Samples = dict[str, list[float]]


@contextmanager
def exporter_client(workdir: Path, upload_dir: Path) -> Iterator[BenchClient]:
    """Start `jmp run` on a free loopback port with BenchDriver, and connect a client to it."""
    config = workdir / "exporter.yaml"
    config.write_text(
        "apiVersion: jumpstarter.dev/v1alpha1\nkind: ExporterConfig\n"
        "metadata: {namespace: default, name: bench}\nendpoint: ''\ntoken: ''\n"
        f"export:\n  bench:\n    type: bench_driver.BenchDriver\n"
        f"    config: {{device_id: bench-01, upload_dir: '{upload_dir}'}}\n"
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
    log = (workdir / "exporter.log").open("wb")
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:  # the exporter imports for a few seconds before it listens
            if process.poll() is not None:
                raise RuntimeError(f"exporter exited: {(workdir / 'exporter.log').read_text()}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("exporter did not listen within 60 s") from None
                time.sleep(0.1)
        with start_blocking_portal() as portal, ExitStack() as stack:
            # What `jmp shell --tls-grpc HOST:PORT --tls-grpc-insecure` does, with public APIs.
            connect = client_from_path(
                f"127.0.0.1:{port}", portal, stack, allow=[], unsafe=True, insecure=True, passphrase=passphrase
            )
            with portal.wrap_async_context_manager(connect) as root:
                yield root.children["bench"]
    finally:
        # `jmp run` forwards SIGTERM to the exporter it forked (its own process group), then exits.
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
        log.close()


def mb_per_s(function: Callable[[], object], size: int) -> float:
    start = time.perf_counter()
    function()
    return size / (time.perf_counter() - start) / 1e6


def latencies(function: Callable[[], object], calls: int) -> list[float]:
    """Microseconds of each call."""
    result = []
    for _ in range(calls):
        start = time.perf_counter()
        function()
        result.append((time.perf_counter() - start) * 1e6)
    return result


def busy_latency(client: BenchClient, calls: int) -> float:
    """Median latency (us) of `ping` from this thread while the random stream runs at full speed in the loop."""
    started, stop = threading.Event(), threading.Event()
    reader = threading.Thread(target=client.stream_until, args=("random_stream", started, stop))
    reader.start()
    try:
        if not started.wait(30):
            raise RuntimeError("the stream did not start")
        return statistics.median(latencies(client.ping, calls))
    finally:
        stop.set()
        reader.join(30)


IMPORT_CODE = """
import time
start = time.perf_counter()
import jumpstarter.client
middle = time.perf_counter()
import jumpstarter_driver_template.custom.client
print(middle - start, time.perf_counter() - start)
"""


def measure_imports(out: Samples) -> None:
    """Import time of jumpstarter.client, and of this package's client module on top of it, in a fresh interpreter.

    Both figures come from the same process (timed inside it), so the ratio measures what the
    package's module adds, not the noise between two interpreters.
    """
    result = subprocess.run([sys.executable, "-c", IMPORT_CODE], check=True, capture_output=True, text=True)
    base, total = (float(value) for value in result.stdout.split())
    out["import jumpstarter.client s"].append(base)
    out["import driver client s"].append(total)


def measure_round(client: BenchClient, mode: str, sizes: dict[str, int], source: Path, out: Samples) -> None:
    """One round of every figure for one mode, recorded under `out[f"{mode} {figure}"]`."""

    def record(name: str, value: float) -> None:
        out[f"{mode} {name}"].append(value)

    def cpu() -> float:
        """CPU seconds of every process involved: this one, and the exporter when it is another."""
        return usage()["cpu"] + (client.usage()["cpu"] if mode == "exporter" else 0.0)

    def transfer(name: str, move: Callable[[], object], size: int) -> None:
        before = cpu()
        start = time.perf_counter()
        move()
        elapsed = time.perf_counter() - start
        record(f"{name} MB/s", size / elapsed / 1e6)
        record(f"{name} CPU ms/MB", (cpu() - before) * 1e3 / (size / 1e6))

    # Unary calls, interleaved in small blocks so that a burst of load hits every method alike. The median
    # call ignores the rare call that waited a whole GIL switch interval (5 ms) behind another thread.
    unary = {
        "ping us": client.ping,
        "ping_sync us": client.ping_sync,
        "configure us": lambda: client.configure("bench", 3),
        "echo_settings us": client.echo_settings,
        "state us": client.state,
        "echo_state us": client.echo_state,
        "slow_task(0) us": lambda: client.slow_task(0),
    }
    blocks = 10
    calls: dict[str, list[float]] = {name: [] for name in unary}
    for _ in range(blocks):
        for name, function in unary.items():
            calls[name] += latencies(function, max(1, sizes["calls"] // blocks))
    for name, values in calls.items():
        record(name, statistics.median(values))

    items = sizes["items"]
    for name, iterate in [
        ("count items/s", lambda: client.count(items)),
        ("slow_generator items/s", lambda: sum(1 for _ in client.slow_generator(items, 0))),
    ]:
        record(name, items / latencies(iterate, 1)[0] * 1e6)

    size = sizes["bytes"]
    transfer("ceiling", lambda: client.drain("constant_stream", size), size)
    transfer("fast save_random", lambda: client.save_random(os.devnull, size), size)
    transfer("naive 64KiB", lambda: client.naive_read("random_stream_64k", size // 4), size // 4)
    transfer("naive 256KiB", lambda: client.naive_read("random_stream", size // 4), size // 4)
    transfer("upload", lambda: client.upload(source, "bench.bin"), size)
    transfer("upload to sink", lambda: client.upload_sink(source), size)

    n = sizes["latency"]
    record("idle ping latency us", statistics.median(client.ping_latencies(n)) * 1e6)
    record("busy ping latency us", statistics.median(client.ping_latencies(n, "random_stream")) * 1e6)
    record("idle ping latency, other thread us", statistics.median(latencies(client.ping, n)))
    record("busy ping latency, other thread us", busy_latency(client, n))


def sha256_ms_per_mb(source: Path) -> float:
    """CPU cost of hashing fresh data, which an upload does twice (client and driver)."""
    data = source.read_bytes()
    start = time.process_time()
    hashlib.sha256(data)
    return (time.process_time() - start) * 1e3 / (len(data) / 1e6)


def rss_growth(client: BenchClient, mode: str, source: Path, size: int, out: Samples) -> None:
    """Peak resident memory growth in MiB, per process, while moving `size` bytes each way."""
    for name, move in [
        ("save_random", lambda: client.save_random(os.devnull, size)),
        ("upload", lambda: client.upload(source, "rss.bin")),
    ]:
        local, remote = usage(reset=True), client.usage(reset=True)
        move()
        local_after, remote_after = usage(), client.usage()
        if mode == "serve":  # driver and client share this process
            out[f"serve {name} RSS growth MiB"].append((local_after["VmHWM"] - local["VmRSS"]) / 1024)
        else:
            out[f"{mode} {name} client RSS growth MiB"].append((local_after["VmHWM"] - local["VmRSS"]) / 1024)
            out[f"{mode} {name} exporter RSS growth MiB"].append((remote_after["VmHWM"] - remote["VmRSS"]) / 1024)


def ratios(samples: Samples, numerator: str, denominator: str) -> list[float]:
    """Per-round ratios of two figures measured in the same rounds."""
    return [a / b for a, b in zip(samples[numerator], samples[denominator], strict=True)]


def number(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def print_table(rows: dict[str, list[float]]) -> None:
    width = max(len(name) for name in rows)
    print(f"{'figure':<{width}}  {'min':>9}  {'median':>9}  {'max':>9}")
    for name, values in rows.items():
        low, middle, high = (number(v) for v in (min(values), statistics.median(values), max(values)))
        print(f"{name:<{width}}  {low:>9}  {middle:>9}  {high:>9}")


def main() -> None:
    # A SIGTERM (a test's timeout, a CI job cancelled) unwinds normally, so the exporter is stopped too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one tiny round, to check the benchmark runs")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of every figure (default: 5)")
    args = parser.parse_args()
    rounds = 1 if args.quick else args.rounds
    sizes = (
        {"calls": 20, "items": 100, "bytes": 4 * MiB, "latency": 10, "rss": 16 * MiB}
        if args.quick
        else {"calls": 200, "items": 2000, "bytes": 64 * MiB, "latency": 100, "rss": 256 * MiB}
    )
    started = time.monotonic()
    samples: Samples = defaultdict(list)
    # tmpfs when there is one: the upload figures measure the transport, not this machine's disk.
    scratch = "/dev/shm" if Path("/dev/shm").is_dir() else None
    with tempfile.TemporaryDirectory(dir=scratch, prefix="jumpstarter-bench-") as tmp:
        workdir = Path(tmp)
        source = workdir / "source.bin"
        upload_dir = workdir / "uploads"
        with source.open("wb") as file:
            file.write(os.urandom(sizes["bytes"]))
        with (
            serve(BenchDriver(device_id="bench-01", upload_dir=str(upload_dir / "serve"))) as local,
            exporter_client(workdir, upload_dir / "exporter") as remote,
        ):
            clients = {"serve": local, "exporter": remote}
            for client in clients.values():  # warm up connections, caches and the random pool
                measure_round(client, "warmup", {k: max(1, v // 16) for k, v in sizes.items()}, source, samples)
            for _ in range(rounds):
                measure_imports(samples)
                samples["sha256 CPU ms/MB"].append(sha256_ms_per_mb(source))
                for mode, client in clients.items():
                    measure_round(client, mode, sizes, source, samples)
            rss_source = workdir / "rss.bin"
            with rss_source.open("wb") as file:
                file.truncate(sizes["rss"])  # sparse: reading it costs no memory
            for mode, client in clients.items():
                rss_growth(client, mode, rss_source, sizes["rss"], samples)
    rows = {name: values for name, values in samples.items() if not name.startswith("warmup")}
    median = {name: statistics.median(values) for name, values in rows.items()}

    def ratio(numerator: str, denominator: str) -> list[float]:
        return ratios(rows, numerator, denominator)

    def why_upload(mode: str) -> str:
        sink = statistics.median(ratio(f"{mode} upload to sink MB/s", f"{mode} ceiling MB/s"))
        of_sink = statistics.median(ratio(f"{mode} upload MB/s", f"{mode} upload to sink MB/s"))
        cpu = {name: median[f"{mode} {name} CPU ms/MB"] for name in ("upload", "upload to sink", "ceiling")}
        cause = "the framework's resource path caps it" if sink < 0.5 else "reading, hashing and writing cost it"
        return (
            f"{cause}: an upload to a do-nothing sink reaches {sink:.2f}x "
            f"the ceiling, and the example's upload {of_sink:.2f}x that sink; CPU-bound here, upload costs "
            f"{cpu['upload']:.2f} CPU ms/MB (sink {cpu['upload to sink']:.2f}, ceiling {cpu['ceiling']:.2f}), "
            f"sha256 {median['sha256 CPU ms/MB']:.2f} ms/MB on each end"
        )

    def why_payload(mode: str, method: str, echo: str) -> str:
        framework = statistics.median(ratio(f"{mode} {echo} us", f"{mode} ping_sync us"))
        own = statistics.median(ratio(f"{mode} {method} us", f"{mode} {echo} us"))
        return (
            f"its arguments and result cost {framework:.2f}x ping_sync in the framework's encoding alone "
            f"({echo}, same values, no logic); {method}'s own checks, model and log are {own:.2f}x that"
        )

    # Targets, on the median of paired per-round ratios: label, numerator, denominator, op, bound, reason.
    Target = tuple[str, str, str, str, float, Callable[[], str] | None]
    targets: list[Target] = []
    for mode in clients:
        targets += [
            (f"{mode} fast/naive64K", f"{mode} fast save_random MB/s", f"{mode} naive 64KiB MB/s", ">=", 3.0, None),
            (f"{mode} fast/ceiling", f"{mode} fast save_random MB/s", f"{mode} ceiling MB/s", ">=", 0.7, None),
            (
                f"{mode} upload/ceiling",
                f"{mode} upload MB/s",
                f"{mode} ceiling MB/s",
                ">=",
                0.5,
                lambda mode=mode: why_upload(mode),
            ),
            (f"{mode} busy/idle", f"{mode} busy ping latency us", f"{mode} idle ping latency us", "<=", 3.0, None),
            # Sync methods run in a worker thread: compared with the sync baseline, they measure the method.
            (
                f"{mode} configure/ping_sync",
                f"{mode} configure us",
                f"{mode} ping_sync us",
                "<=",
                1.1,
                lambda mode=mode: why_payload(mode, "configure", "echo_settings"),
            ),
            (
                f"{mode} state/ping_sync",
                f"{mode} state us",
                f"{mode} ping_sync us",
                "<=",
                1.1,
                lambda mode=mode: why_payload(mode, "state", "echo_state"),
            ),
            (f"{mode} slow_task/ping", f"{mode} slow_task(0) us", f"{mode} ping us", "<=", 1.1, None),
        ]
    targets.append(("client import", "import driver client s", "import jumpstarter.client s", "<=", 1.05, None))
    info = []
    for mode in clients:
        info += [
            (f"{mode} configure/ping(async)", f"{mode} configure us", f"{mode} ping us"),
            (f"{mode} configure/echo_settings", f"{mode} configure us", f"{mode} echo_settings us"),
            (f"{mode} state/echo_state", f"{mode} state us", f"{mode} echo_state us"),
            (f"{mode} slow_generator/count", f"{mode} slow_generator items/s", f"{mode} count items/s"),
            (f"{mode} sink/ceiling", f"{mode} upload to sink MB/s", f"{mode} ceiling MB/s"),
            (f"{mode} upload/sink", f"{mode} upload MB/s", f"{mode} upload to sink MB/s"),
            (f"{mode} naive256K/ceiling", f"{mode} naive 256KiB MB/s", f"{mode} ceiling MB/s"),
            (
                f"{mode} busy/idle, other thread",
                f"{mode} busy ping latency, other thread us",
                f"{mode} idle ping latency, other thread us",
            ),
        ]
    for label, numerator, denominator, *_ in targets:
        rows[f"ratio {label}"] = ratio(numerator, denominator)
    for label, numerator, denominator in info:
        rows[f"ratio {label}"] = ratio(numerator, denominator)

    print_table(rows)
    print(f"({rounds} rounds, {time.monotonic() - started:.0f} s; medians of per-round ratios below)")

    verdicts = []
    for label, numerator, denominator, op, bound, reason in targets:
        value = statistics.median(ratio(numerator, denominator))
        if value >= bound if op == ">=" else value <= bound:
            verdicts.append(f"{label} {value:.2f}x ({op}{bound:g} PASS)")
        else:
            why = reason() if reason else f"{median[numerator]:.3g} vs {median[denominator]:.3g}"
            verdicts.append(f"{label} {value:.2f}x ({op}{bound:g} FAIL: {why})")
    rss = {name: max(values) for name, values in rows.items() if name.endswith("RSS growth MiB")}
    worst = max(rss, key=rss.__getitem__)
    verdict = "PASS" if rss[worst] < 32 else f"FAIL: {worst}"
    verdicts.append(f"peak RSS growth per process for {sizes['rss'] // MiB} MiB {rss[worst]:.1f} MiB (<32 {verdict})")
    print("SUMMARY " + "; ".join(verdicts))


if __name__ == "__main__":
    main()
