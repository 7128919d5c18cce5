"""The framework baselines: a driver whose methods do nothing, one of each kind, and the client that consumes them.

A target compares an example's method with the baseline of the same shape (same kind of method,
same arguments, a result of the same shape), so it measures what the example adds to the
framework's own cost. Nothing here depends on an example unit: the benchmark runs with any of
them, or none. The exporter process imports this module by the name `baseline.Baseline`
(bench.py puts benchmarks/ on PYTHONPATH).
"""

from __future__ import annotations

import re
import resource
import statistics
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import field
from pathlib import Path
from typing import Any

import anyio
from anyio import EndOfStream, to_thread
from anyio.abc import ByteStream, ObjectStream
from anyio.lowlevel import checkpoint
from jumpstarter.client import DriverClient
from jumpstarter.driver import Driver, export, exportstream
from pydantic import ConfigDict
from pydantic.dataclasses import dataclass

CHUNK = 256 * 1024
"""Bytes per message of the baseline streams: the size the examples use (large enough to amortize a message)."""

Opener = Callable[[], AbstractAsyncContextManager[Any]]
"""Opens a byte stream of some driver inside the client's event loop (a client's `stream_async(method)`)."""


@dataclass(kw_only=True, config=ConfigDict(extra="forbid"))
class Baseline(Driver):
    """Do-nothing methods of every kind: what the framework itself costs."""

    _reply: Any = field(default=None, init=False)

    @classmethod
    def client(cls) -> str:
        """The client side loads BaselineClient by this name."""
        return "baseline.BaselineClient"

    @export
    async def ping(self) -> None:
        """Async unary call, no arguments, no result."""

    @export
    def ping_sync(self) -> None:
        """Sync unary call, no arguments, no result (a worker thread, like every sync method)."""

    # The same-shape baselines: a bench module sets the reply once (`set_reply`, untimed), then times its method
    # against `echo`/`echo_sync` called with the method's own arguments. Both return that reply: the framework
    # encodes the same values both ways (pydantic + protobuf Value on each end), and nothing else happens.
    @export
    def set_reply(self, reply: Any) -> None:
        """Set what the echo methods return."""
        self._reply = reply

    @export
    async def echo(self, *args: Any) -> Any:
        """Async unary call of any shape: takes any arguments, returns the reply."""
        return self._reply

    @export
    async def echo_log(self, *args: Any) -> Any:
        """Async unary call of any shape that logs one INFO line, like a method that reports what it did."""
        # The exporter turns each log record into a protobuf message for the clients following its log:
        # a method's decision to log costs that, whatever it does besides.
        self.logger.info("echo")
        return self._reply

    @export
    def echo_sync(self, *args: Any) -> Any:
        """Sync unary call of any shape."""
        return self._reply

    @export
    async def echo_stream(self, count: int, *args: Any) -> AsyncGenerator[Any, None]:
        """Streaming call of any shape: the reply, `count` times."""
        for _ in range(int(count)):
            yield self._reply

    @export
    async def count(self, count: int) -> AsyncGenerator[int, None]:
        """Streaming call: 0 to count-1 with no delay and no checks."""
        for i in range(int(count)):
            yield i

    @exportstream
    @asynccontextmanager
    async def constant_stream(self) -> AsyncIterator[ByteStream]:
        """Byte stream: the same preallocated chunk forever, so only the transport costs (the in-loop ceiling)."""
        async with ConstantStream() as stream:
            yield stream

    @export
    async def sink(self, source: str) -> int:
        """Resource (upload): read it to its end and count the bytes, store nothing."""
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
    """Endless copies of one preallocated chunk; whatever is written is dropped."""

    def __init__(self, chunk: bytes = bytes(CHUNK)) -> None:
        self._chunk = chunk
        self._closed = False

    async def receive(self, max_bytes: int = CHUNK) -> bytes:
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


class ConstantSource(ObjectStream[bytes]):
    """`size` bytes of one preallocated chunk, offered as a resource: an upload that reads no file."""

    def __init__(self, size: int, chunk: bytes = bytes(CHUNK)) -> None:
        self._remaining = size
        self._chunk = chunk

    async def receive(self) -> bytes:
        if self._remaining <= 0:
            raise EndOfStream
        await checkpoint()
        chunk = self._chunk[: self._remaining]
        self._remaining -= len(chunk)
        return chunk

    async def send(self, item: bytes) -> None:
        pass

    async def send_eof(self) -> None:
        pass

    async def aclose(self) -> None:
        self._remaining = 0


class FileSource(ObjectStream[bytes]):
    """A local file offered as a resource, read ahead in a worker thread (`read_ahead`), a batch of chunks per hop.

    The plain way to upload a file, with nothing else done to the bytes: what an upload of a file costs the
    framework, for an example's upload (which may also hash, check or store them) to be compared with.
    """

    def __init__(self, path: Path, batch: int = 4) -> None:
        self._path, self._batch = path, batch
        self._ready, self._chunks = anyio.create_memory_object_stream[bytes](2 * batch)

    async def read_ahead(self) -> None:
        """Read the file into the buffer `receive` takes from; run it in a task next to the transfer."""
        file = await to_thread.run_sync(self._path.open, "rb")
        try:
            async with self._ready:
                read = lambda: [chunk for _ in range(self._batch) if (chunk := file.read(CHUNK))]  # noqa: E731
                while chunks := await to_thread.run_sync(read):
                    for chunk in chunks:
                        await self._ready.send(chunk)
        finally:
            await to_thread.run_sync(file.close)

    async def receive(self) -> bytes:
        return await self._chunks.receive()

    async def send(self, item: bytes) -> None:
        pass

    async def send_eof(self) -> None:
        pass

    async def aclose(self) -> None:
        self._chunks.close()
        self._ready.close()


def usage(reset: bool = False) -> dict[str, float]:
    """VmRSS and VmHWM (KiB, Linux) and CPU seconds of this process; writing 5 to clear_refs resets VmHWM."""
    if reset:
        Path("/proc/self/clear_refs").write_text("5")
    status = Path("/proc/self/status").read_text()
    figures = {}
    for key in ("VmRSS", "VmHWM"):
        found = re.search(rf"{key}:\s+(\d+)", status)
        if found is None:
            raise RuntimeError(f"/proc/self/status has no {key}: the benchmark needs Linux")
        figures[key] = float(found.group(1))
    rusage = resource.getrusage(resource.RUSAGE_SELF)  # all threads: the loop, workers, gRPC's own
    return figures | {"cpu": rusage.ru_utime + rusage.ru_stime}


class BaselineClient(DriverClient):
    """The baselines, consumed the ways the examples' clients consume their methods."""

    def ping(self) -> None:
        """Call the async baseline."""
        self.call("ping")

    def ping_sync(self) -> None:
        """Call the sync baseline."""
        self.call("ping_sync")

    def set_reply(self, reply: Any) -> None:
        """Set the result the echo methods return."""
        self.call("set_reply", reply)

    def echo(self, *args: Any) -> Any:
        """The async same-shape baseline."""
        return self.call("echo", *args)

    def echo_log(self, *args: Any) -> Any:
        """The async same-shape baseline that logs one line at INFO."""
        return self.call("echo_log", *args)

    def echo_sync(self, *args: Any) -> Any:
        """The sync same-shape baseline."""
        return self.call("echo_sync", *args)

    def echo_stream(self, count: int, *args: Any) -> list[Any]:
        """The streaming same-shape baseline, read to its end with the blocking client."""
        return list(self.streamingcall("echo_stream", count, *args))

    def count(self, count: int) -> int:
        """Iterate the streaming baseline with the blocking client; return the items read."""
        return sum(1 for _ in self.streamingcall("count", count))

    def usage(self, reset: bool = False) -> dict[str, float]:
        """The driver process's memory and CPU figures."""
        return self.call("usage", reset)

    @asynccontextmanager
    async def constant(self) -> AsyncIterator[Any]:
        """Open `constant_stream`; leaving the block ends the driver's end of it.

        0.9's `stream_async` only half-closes: the driver's end would stay open until the client
        disconnects. Cancelling the gRPC call releases it (done here, so that the baselines need
        none of the package's support modules).
        """
        async with self.stream_async("constant_stream") as stream:
            try:
                yield stream
            finally:
                call = getattr(getattr(stream, "stream", None), "context", None)
                if call is not None:
                    call.cancel()

    def drain(self, size: int, opener: Opener | None = None) -> int:
        """The in-loop ceiling: read `size` bytes of a byte stream inside the event loop and drop them."""
        return self.portal.call(self._drain, size, opener or self.constant)

    async def _drain(self, size: int, opener: Opener) -> int:
        received = 0
        async with opener() as stream:
            while received < size:
                received += len(await stream.receive())
        return received

    def sink(self, size: int) -> int:
        """The resource path's ceiling: send `size` bytes of a constant chunk as a resource to the do-nothing `sink`."""
        return self.portal.call(self._sink, ConstantSource(size))

    def sink_file(self, path: Path) -> int:
        """A do-nothing upload of a file: read it in batches in a worker thread, send it to `sink`."""
        return self.portal.call(self._sink_file, path)

    async def _sink(self, source: ObjectStream[bytes]) -> int:
        with anyio.CancelScope() as transfer:
            async with self.resource_async(source) as handle:
                received = int(await self.call_async("sink", handle))
                # The call is over: stop copying. Leaving resource_async waits for both directions of its copy,
                # and the driver-to-client one may wait for an end the driver never sends (a run hung here
                # on a loaded machine); the example's upload cancels its transfer the same way.
                transfer.cancel()
        return received

    async def _sink_file(self, path: Path) -> int:
        source = FileSource(path)
        async with anyio.create_task_group() as reader:
            reader.start_soon(source.read_ahead)
            try:
                received = await self._sink(source)
            finally:  # a failed transfer leaves the reader waiting for room in its buffer: stop it
                reader.cancel_scope.cancel()
        return received

    def ping_latency(self, calls: int, busy: Opener | None = None) -> float:
        """Median seconds of `calls` pings made from the event loop, alone or while a byte stream runs at full speed.

        `busy` opens the stream (any client's `stream_async(method)`); another task of the same event
        loop reads it as fast as it can meanwhile, so a stream that blocks the loop shows here.
        """
        return self.portal.call(self._ping_latency, calls, busy)

    async def _ping_latency(self, calls: int, busy: Opener | None) -> float:
        result = []
        async with anyio.create_task_group() as tg:
            if busy is not None:
                started = anyio.Event()
                tg.start_soon(self._read_forever, busy, started)
                await started.wait()
            for _ in range(calls):
                start = time.perf_counter()
                await self.call_async("ping")
                result.append(time.perf_counter() - start)
            tg.cancel_scope.cancel()
        return statistics.median(result)

    @staticmethod
    async def _read_forever(opener: Opener, started: anyio.Event) -> None:
        async with opener() as stream:
            while True:
                await stream.receive()
                started.set()
