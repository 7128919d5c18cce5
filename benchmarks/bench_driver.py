"""A benchmark driver: `ExampleCustom` plus bare baselines to compare the example methods against.

The exporter process imports it by the name `bench_driver.BenchDriver` (bench.py puts this directory
on PYTHONPATH), so it is a top-level module, not part of the package.
"""

from __future__ import annotations

import re
import resource
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
from anyio import to_thread
from anyio.abc import ByteStream
from anyio.lowlevel import checkpoint
from jumpstarter.driver import export, exportstream
from pydantic.dataclasses import dataclass

# _FileSource: the upload ceiling must read the file exactly as `upload` does, minus the driver's storing.
from jumpstarter_driver_template.custom.client import ExampleCustomClient, _FileSource
from jumpstarter_driver_template.custom.common import STREAM_CHUNK
from jumpstarter_driver_template.custom.driver import CONFIG, ExampleCustom, RandomStream


@dataclass(kw_only=True, config=CONFIG)
class BenchDriver(ExampleCustom):
    """ExampleCustom with do-nothing methods of each kind: the framework's own cost."""

    @classmethod
    def client(cls) -> str:
        """The benchmark client: ExampleCustomClient plus the baselines' methods."""
        return "bench_driver.BenchClient"

    @export
    async def ping(self) -> None:
        """Baseline for async unary calls: does nothing."""

    @export
    def ping_sync(self) -> None:
        """Baseline for sync unary calls: does nothing, in a worker thread like every sync method."""

    # The same arguments and results as configure and state, without their logic: what the framework's
    # encoding of those values costs (pydantic + protobuf Value on both ends).
    @export
    def echo_settings(self, label: str, level: int) -> dict[str, Any]:
        """Baseline for configure: its arguments in, a Settings-shaped dict out, nothing checked or logged."""
        return {"label": label, "level": level}

    @export
    def echo_state(self) -> dict[str, Any]:
        """Baseline for state: a State-shaped dict out."""
        settings = {"label": "default", "level": 0}
        return {"device_id": self.device_id, "settings": settings, "active_tasks": 0, "open_streams": 0}

    @export
    async def count(self, count: int) -> AsyncGenerator[int, None]:
        """Baseline for streaming calls: yields 0 to count-1 with no delay and no checks."""
        for i in range(int(count)):
            yield i

    @exportstream
    @asynccontextmanager
    async def constant_stream(self) -> AsyncIterator[ByteStream]:
        """Baseline for byte streams: the same preallocated chunk forever, so only the transport costs."""
        async with ConstantStream() as stream:
            yield stream

    @exportstream
    @asynccontextmanager
    async def random_stream_64k(self) -> AsyncIterator[ByteStream]:
        """The example's random stream as a naive driver serves it: 64 KiB (anyio's default) per message."""
        async with RandomStream(chunk=64 * 1024) as stream:
            yield stream

    @export
    async def sink(self, source: str) -> int:
        """Baseline for uploads: read a resource to its end and count the bytes, store nothing."""
        received = 0
        async with self.resource(source) as stream:
            async for chunk in stream:
                received += len(chunk)
        return received

    @export
    def usage(self, reset: bool) -> dict[str, float]:
        """This process's resident set and its peak (KiB) and CPU time (s); `reset` restarts the peak."""
        return usage(reset)


class ConstantStream(ByteStream):
    """Endless copies of one preallocated chunk."""

    def __init__(self, chunk: bytes = bytes(STREAM_CHUNK)) -> None:
        self._chunk = chunk
        self._closed = False

    async def receive(self, max_bytes: int = STREAM_CHUNK) -> bytes:
        if self._closed:
            raise anyio.ClosedResourceError
        await checkpoint()
        return self._chunk

    async def send(self, item: bytes) -> None:
        pass

    async def send_eof(self) -> None:
        pass

    async def aclose(self) -> None:
        self._closed = True


def usage(reset: bool = False) -> dict[str, float]:
    """VmRSS and VmHWM (KiB, Linux) and CPU seconds of this process; writing 5 to clear_refs resets VmHWM."""
    if reset:
        Path("/proc/self/clear_refs").write_text("5")
    status = Path("/proc/self/status").read_text()
    figures = {key: float(re.search(rf"{key}:\s+(\d+)", status).group(1)) for key in ("VmRSS", "VmHWM")}
    rusage = resource.getrusage(resource.RUSAGE_SELF)  # all threads: the loop, workers, gRPC's own
    return figures | {"cpu": rusage.ru_utime + rusage.ru_stime}


class BenchClient(ExampleCustomClient):
    """ExampleCustomClient plus the baselines, consumed the same ways as the example's methods."""

    def ping(self) -> None:
        """Call the async baseline."""
        self.call("ping")

    def ping_sync(self) -> None:
        """Call the sync baseline."""
        self.call("ping_sync")

    def echo_settings(self) -> None:
        """Call the payload baseline of configure."""
        self.call("echo_settings", "bench", 3)

    def echo_state(self) -> None:
        """Call the payload baseline of state."""
        self.call("echo_state")

    def count(self, count: int) -> int:
        """Iterate the streaming baseline with the blocking client, as `slow_generator` is."""
        n = 0
        for _ in self.streamingcall("count", count):
            n += 1
        return n

    def usage(self, reset: bool = False) -> dict[str, float]:
        """The exporter process's memory and CPU figures."""
        return self.call("usage", reset)

    def drain(self, method: str, size: int) -> int:
        """The in-loop ceiling: read `size` bytes of a byte stream inside the event loop and drop them."""
        return self.portal.call(self._drain_async, method, size)

    async def _drain_async(self, method: str, size: int) -> int:
        received = 0
        async with self.stream_async(method) as stream:
            while received < size:
                received += len(await stream.receive())
        return received

    def stream_until(self, method: str, started: threading.Event, stop: threading.Event) -> int:
        """Read a byte stream inside the event loop at full speed until `stop` is set; return the bytes read."""
        return self.portal.call(self._stream_until_async, method, started, stop)

    async def _stream_until_async(self, method: str, started: threading.Event, stop: threading.Event) -> int:
        received = 0
        async with self.stream_async(method) as stream:
            while not stop.is_set():
                received += len(await stream.receive())
                started.set()
        return received

    def ping_latencies(self, calls: int, busy_stream: str | None = None) -> list[float]:
        """Seconds of each of `calls` pings made from the event loop, alone or next to a full-speed byte stream."""
        return self.portal.call(self._ping_latencies_async, calls, busy_stream)

    async def _ping_latencies_async(self, calls: int, busy_stream: str | None) -> list[float]:
        result = []
        async with anyio.create_task_group() as tg:
            if busy_stream is not None:
                started = anyio.Event()
                tg.start_soon(self._stream_forever, busy_stream, started)
                await started.wait()
            for _ in range(calls):
                start = time.perf_counter()
                await self.call_async("ping")
                result.append(time.perf_counter() - start)
            tg.cancel_scope.cancel()
        return result

    async def _stream_forever(self, method: str, started: anyio.Event) -> None:
        async with self.stream_async(method) as stream:
            while True:
                await stream.receive()
                started.set()

    def naive_read(self, method: str, size: int) -> int:
        """The slow way: a blocking `receive()` per 64 KiB-ish chunk, one thread hop each."""
        received = 0
        with self.stream(method) as stream:
            while received < size:
                received += len(stream.receive())
        return received

    def upload_sink(self, path: Path) -> int:
        """The upload ceiling: send a local file as a resource to a driver method that only counts it."""
        return self.portal.call(self._sink_async, path)

    async def _sink_async(self, path: Path) -> int:
        source = await to_thread.run_sync(_FileSource, path)
        async with source, anyio.create_task_group() as reader, self.resource_async(source) as handle:
            reader.start_soon(source.read_ahead)
            return int(await self.call_async("sink", handle))
