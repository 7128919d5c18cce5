"""The custom unit's benchmark: every kind of exported method of ExampleCustom against the baseline of its shape.

Plugin interface: benchkit.py. The exporter imports `custom_bench.CustomBench` (benchmarks/ is on its path).
"""

from __future__ import annotations

import hashlib
import os
import statistics
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from anyio.abc import ByteStream
from benchkit import Entry, Round, Series, Target
from jumpstarter.driver import exportstream
from pydantic.dataclasses import dataclass

from jumpstarter_driver_template.custom.client import ExampleCustomClient
from jumpstarter_driver_template.custom.driver import CONFIG, ExampleCustom, RandomStream

NAIVE_CHUNK = 64 * 1024
"""anyio's default read size: what a driver that does not choose its chunk size sends per message."""


@dataclass(kw_only=True, config=CONFIG)
class CustomBench(ExampleCustom):
    """ExampleCustom, unchanged, plus its random stream as a naive driver would serve it."""

    @classmethod
    def client(cls) -> str:
        """The client side loads CustomBenchClient by this name."""
        return "custom_bench.CustomBenchClient"

    @exportstream
    @asynccontextmanager
    async def random_stream_64k(self) -> AsyncIterator[ByteStream]:
        """The example's random stream in 64 KiB messages."""
        async with RandomStream(chunk=NAIVE_CHUNK) as stream:
            yield stream


class CustomBenchClient(ExampleCustomClient):
    """ExampleCustomClient plus the naive way to read a byte stream."""

    def naive_read(self, size: int) -> int:
        """The slow way: a blocking `receive()` per 64 KiB message, one thread hop each."""
        received = 0
        with self.stream("random_stream_64k") as stream:
            while received < size:
                received += len(stream.receive())
        return received


def drivers(workdir: Path) -> dict[str, Entry]:
    """One ExampleCustom (the bench subclass), uploading into this mode's scratch directory."""
    config = {"device_id": "bench-01", "upload_dir": str(workdir / "custom-uploads")}
    return {"custom": {"type": "custom_bench.CustomBench", "config": config}}


def measure(run: Round) -> None:
    custom, base = run.client("custom", CustomBenchClient), run.baseline
    # Unary calls, each against the baseline of its kind (sync or async) called with the same arguments and
    # returning a result of the same shape (the example's own, set once with set_reply): the ratio is the
    # method's own checks, models, logging and the client's re-validation.
    base.set_reply(custom.configure("bench", 3).model_dump())
    settings = {"label": "bench", "level": 3}  # configure sends its Settings as one dict
    run.compare("configure/echo_sync", lambda: custom.configure("bench", 3), lambda: base.echo_sync(settings))
    base.set_reply(custom.state().model_dump())
    run.compare("state/echo_sync", custom.state, base.echo_sync)
    base.set_reply(custom.slow_task(0))
    run.compare("slow_task(0)/echo", lambda: custom.slow_task(0), lambda: base.echo(0))

    items = run.sizes.items
    run.compare(
        "slow_generator/count",
        lambda: sum(1 for _ in custom.slow_generator(items, 0)),
        lambda: base.count(items),
        per="item",
        amount=items,
    )

    size = run.sizes.bytes
    save = lambda: custom.save_random(os.devnull, size)  # noqa: E731
    run.compare("save_random/ceiling", save, lambda: base.drain(size), per="byte", amount=size)
    run.compare("save_random/naive 64KiB", save, lambda: custom.naive_read(size), per="byte", amount=size)
    source = run.random_file("custom-source", size)
    # An upload against a do-nothing upload of the same file: the sink counts the bytes, its client only reads
    # the file. The ratio is what the example adds: sha256 on both ends, the atomic write, the checks.
    upload = lambda: custom.upload(source, "bench.bin")  # noqa: E731
    run.compare("upload/sink", upload, lambda: base.sink_file(source), per="byte", amount=size)

    # Latency of a ping while the example's stream runs at full speed in the same event loop, against the
    # same ping while the framework's constant stream does: a driver stream that blocks the event loop shows.
    calls = run.sizes.latency

    def busy() -> float:
        return base.ping_latency(calls, lambda: custom.stream_async("random_stream")) * 1e6

    def baseline_busy() -> float:
        return base.ping_latency(calls, base.constant) * 1e6

    run.pair("busy ping/baseline stream", busy, baseline_busy, unit="us")
    run.pair("busy/idle ping", busy, lambda: base.ping_latency(calls) * 1e6, unit="us")


def once(run: Round) -> None:
    custom, size = run.client("custom", CustomBenchClient), run.sizes.rss
    data = run.random_file("custom-source", run.sizes.bytes).read_bytes()
    for _ in range(3):  # what an upload pays twice per MB (client and driver), to explain its ratio
        start = time.process_time()
        hashlib.sha256(data)
        run.record("sha256 CPU ms/MB", (time.process_time() - start) * 1e3 / (len(data) / 1e6), "ms/MB")
    sparse = run.sparse_file("custom-rss.bin", size)
    # Against the framework's own transfer of the same size and direction (see Round.rss_compare).
    base = run.baseline
    run.rss_compare("save_random RSS growth", lambda: custom.save_random(os.devnull, size), lambda: base.drain(size))
    run.rss_compare("upload RSS growth", lambda: custom.upload(sparse, "rss.bin"), lambda: base.sink_file(sparse))
    (run.workdir / "custom-uploads" / "rss.bin").unlink()  # its pages, on tmpfs, are memory


def explain_upload(series: Callable[[str], Series]) -> str:
    upload = series("upload/sink")
    upload_ms, sink_ms = (1e3 / statistics.median(values) for values in (upload.method, upload.baseline))
    sha256_ms = series("sha256 CPU ms/MB").median
    return (
        f"an upload takes {upload_ms:.2f} ms/MB and a do-nothing upload of the same file {sink_ms:.2f}: the "
        f"difference is the example's own work, sha256 of every byte on both ends ({sha256_ms:.2f} CPU ms/MB "
        "each here) and the atomic write, done next to the transfer but not hidden by it on this machine"
    )


CALL_WHY = "the method costs more than 10% over the framework's own call of the same shape"
RSS_WHY = "the transfer holds more memory than the framework's own: something buffers it instead of streaming it"
TARGETS = [
    Target("configure/echo_sync", "<=", 1.1, CALL_WHY),
    Target("state/echo_sync", "<=", 1.1, CALL_WHY),
    Target("slow_task(0)/echo", "<=", 1.1, CALL_WHY),
    Target("slow_generator/count", "<=", 1.1, "each item costs more than 10% over the framework's streaming call"),
    Target("save_random/ceiling", ">=", 0.7, "the fast helper reaches less than 0.7x the in-loop ceiling"),
    Target("save_random/naive 64KiB", ">=", 3, "the fast helper is not 3x a blocking 64 KiB loop"),
    Target("upload/sink", ">=", 0.8, "the upload reaches less than 0.8x the do-nothing sink", explain_upload),
    Target("busy ping/baseline stream", "<=", 1.5, "the example's stream slows other calls more than the framework's"),
    Target("save_random RSS growth", "<", 32, RSS_WHY),
    Target("upload RSS growth", "<", 32, RSS_WHY),
]
