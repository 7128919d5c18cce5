"""A benchmark driver: `ExampleCustom` plus bare baselines to compare the example methods against.

The exporter process imports it by the name `bench_driver.BenchDriver` (bench.py puts this directory
on PYTHONPATH), so it is a top-level module, not part of the package.
"""

from __future__ import annotations

import re
import threading
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
from anyio import to_thread
from anyio.abc import ByteStream
from anyio.lowlevel import checkpoint
from jumpstarter.driver import export, exportstream
from pydantic.dataclasses import dataclass

from jumpstarter_driver_template.client import ExampleCustomClient, _FileSource
from jumpstarter_driver_template.common import STREAM_CHUNK
from jumpstarter_driver_template.driver import CONFIG, ExampleCustom, RandomStream


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
    def memory(self, reset: bool) -> dict[str, int]:
        """This process's resident set and its peak, in KiB; `reset` restarts the peak from now."""
        return memory(reset)


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


def memory(reset: bool = False) -> dict[str, int]:
    """VmRSS and VmHWM of this process in KiB (Linux); writing 5 to clear_refs resets VmHWM to VmRSS."""
    if reset:
        Path("/proc/self/clear_refs").write_text("5")
    status = Path("/proc/self/status").read_text()
    return {key: int(re.search(rf"{key}:\s+(\d+)", status).group(1)) for key in ("VmRSS", "VmHWM")}


class BenchClient(ExampleCustomClient):
    """ExampleCustomClient plus the baselines, consumed the same ways as the example's methods."""

    def ping(self) -> None:
        """Call the async baseline."""
        self.call("ping")

    def ping_sync(self) -> None:
        """Call the sync baseline."""
        self.call("ping_sync")

    def count(self, count: int) -> int:
        """Iterate the streaming baseline with the blocking client, as `slow_generator` is."""
        n = 0
        for _ in self.streamingcall("count", count):
            n += 1
        return n

    def memory(self, reset: bool = False) -> dict[str, int]:
        """The exporter process's memory figures."""
        return {k: int(v) for k, v in self.call("memory", reset).items()}

    def drain(self, method: str, size: int) -> int:
        """The in-loop ceiling: read `size` bytes of a byte stream inside the event loop and drop them."""
        return self.portal.call(self._drain_async, method, size)

    async def _drain_async(self, method: str, size: int) -> int:
        received = 0
        async with self._open_stream(method) as stream:
            while received < size:
                received += len(await stream.receive())
        return received

    def stream_until(self, method: str, started: threading.Event, stop: threading.Event) -> int:
        """Read a byte stream inside the event loop at full speed until `stop` is set; return the bytes read."""
        return self.portal.call(self._stream_until_async, method, started, stop)

    async def _stream_until_async(self, method: str, started: threading.Event, stop: threading.Event) -> int:
        received = 0
        async with self._open_stream(method) as stream:
            while not stop.is_set():
                received += len(await stream.receive())
                started.set()
        return received

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
