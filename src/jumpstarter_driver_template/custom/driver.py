"""ExampleCustom: a *custom driver* with its own config, exported methods of every kind, and its own client.

Read top to bottom: each kind of exported method appears once, simplest first.
"""

from __future__ import annotations

import hashlib
import math
import os
import random
import reprlib
import tempfile
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import field
from functools import cache
from pathlib import Path
from typing import Any

import anyio
from anyio import to_thread
from anyio.abc import ByteStream
from anyio.lowlevel import checkpoint
from jumpstarter.driver import Driver, export, exportstream
from pydantic import ConfigDict, Field
from pydantic.dataclasses import dataclass

from .common import (
    LEVEL_MAX,
    LEVEL_MIN,
    STREAM_CHUNK,
    Settings,
    State,
    UploadResult,
    batches,
    check_upload_name,
)

# Exporter YAML `config:` keys become keyword arguments of the driver dataclass. `extra="forbid"`
# turns a typo into an error that names the key; pydantic checks every type. A plain stdlib
# @dataclass would accept both silently.
CONFIG = ConfigDict(extra="forbid")

RANDOM_POOL = 4 * 1024 * 1024
"""Bytes of random data `RandomStream` slices its chunks from."""


def _integer(name: str, value: Any, low: int, high: int) -> int:
    """Check an integer argument. Numbers cross gRPC as doubles, so 3 arrives as 3.0."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value % 1:
        # reprlib shortens a huge value: error messages travel in gRPC metadata, capped at 16 KiB.
        raise ValueError(f"{name} must be an integer, got {reprlib.repr(value)}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be between {low} and {high}, got {int(value)}")
    return int(value)


def _number(name: str, value: Any, low: float, high: float) -> float:
    """Check a numeric argument."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number, got {reprlib.repr(value)}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be between {low} and {high}, got {value}")
    return float(value)


@dataclass(kw_only=True, config=CONFIG)
class ExampleCustom(Driver):
    """A custom driver: its own config, exported methods of every kind, and its own client."""

    device_id: str = Field(min_length=1)
    """Required: which device this driver talks to (a serial number, a hostname...)."""
    max_seconds: float = Field(default=10.0, gt=0)
    """Longest delay `slow_task` and `slow_generator` accept."""
    upload_dir: str | None = None
    """Directory `upload` stores files in (created if missing). None: uploads are disabled."""

    _settings: Settings = field(init=False)
    _active_tasks: int = field(default=0, init=False)
    _open_streams: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        self._settings = Settings(label="default", level=LEVEL_MIN)
        if self.upload_dir is not None:
            # Fail when the exporter starts, not at the first upload.
            Path(self.upload_dir).mkdir(parents=True, exist_ok=True)

    @classmethod
    def client(cls) -> str:
        """Import path of the client class: the client side loads it by this name."""
        return "jumpstarter_driver_template.custom.client.ExampleCustomClient"

    # Lifecycle: the exporter calls reset() when a lease starts and close() when it ends.
    def reset(self) -> None:
        """Forget the previous lease's settings and any upload a crash left half-written."""
        super().reset()
        self._settings = Settings(label="default", level=LEVEL_MIN)
        self._remove_partial_uploads()

    def close(self) -> None:
        """Release what the driver holds at the end of a lease."""
        self._remove_partial_uploads()
        super().close()

    # 1. A sync unary call. Sync methods run in a worker thread, so blocking I/O is fine here.
    #    Arguments arrive decoded from protobuf Values: check them, and raise ValueError, which
    #    the client receives as INVALID_ARGUMENT (the exporter keeps serving).
    @export
    def configure(self, label: str, level: int) -> Settings:
        """Store a label and a level on the device."""
        if not isinstance(label, str) or not label.strip():
            raise ValueError(f"label must be a non-empty string, got {reprlib.repr(label)}")
        settings = Settings(label=label, level=_integer("level", level, LEVEL_MIN, LEVEL_MAX))
        # Sync calls of concurrent clients run in parallel worker threads: return what *this* call
        # stored, not `self._settings`, which another call may have replaced in the meantime.
        self._settings = settings
        self.logger.debug("configured %s", settings)
        return settings  # sent as a dict: the client re-validates it into Settings

    @export
    def state(self) -> State:
        """Report the device's settings and what the driver is doing."""
        return State(
            device_id=self.device_id,
            settings=self._settings,
            active_tasks=self._active_tasks,
            open_streams=self._open_streams,
        )

    # 2. An async unary call: runs on the event loop, so it waits with `await`, never time.sleep.
    #    If the client goes away, gRPC cancels the call and the await raises a cancellation.
    @export
    async def slow_task(self, seconds: float) -> str:
        """Wait for a number of seconds without blocking the exporter, then report."""
        seconds = _number("seconds", seconds, 0, self.max_seconds)
        self._active_tasks += 1
        try:
            await anyio.sleep(seconds)
        finally:
            self._active_tasks -= 1
        return f"{self.device_id}: done after {seconds:g} s"

    # 3. An async generator: a streaming call. Never write a *sync* generator that blocks: its body
    #    runs on the exporter's event loop and stalls every other call while it waits.
    @export
    async def slow_generator(self, count: int, interval: float) -> AsyncGenerator[int, None]:
        """Count from 0 to count-1, one number every interval seconds."""
        count = _integer("count", count, 0, 10_000)
        interval = _number("interval", interval, 0, self.max_seconds)
        self._active_tasks += 1
        try:
            for i in range(count):
                if i:
                    await anyio.sleep(interval)
                yield i
        finally:
            self._active_tasks -= 1

    # 4. A byte stream: the way to move binary data (serial consoles, images, video). An
    #    @exportstream method is an async context manager that yields an anyio byte stream; the
    #    framework pumps it to and from the client until either side closes, then exits it.
    @exportstream
    @asynccontextmanager
    async def random_stream(self) -> AsyncIterator[ByteStream]:
        """Endless random bytes; whatever the client writes is discarded."""
        self._open_streams += 1
        try:
            async with RandomStream() as stream:
                yield stream
        finally:
            self._open_streams -= 1

    # 5. An upload: the client streams a file as a *resource* and passes its handle to a normal
    #    call; `self.resource(handle)` opens it as a byte stream. This is how flashers get images.
    @export
    async def upload(self, source: str, name: str, size: int) -> UploadResult:
        """Store a file sent by the client under upload_dir, atomically."""
        async with self.resource(source) as stream:
            # Checked once the resource is open, so a refused upload still releases it.
            target = self._upload_path(name)
            size = _integer("size", size, 0, 2**53)
            result = await self._store(stream, target, size)
        self.logger.info("stored %s (%d bytes)", target, result.size)
        return result

    async def _store(self, stream: AsyncIterator[bytes], target: Path, size: int) -> UploadResult:
        """Write to a temporary file next to the target, then rename: the old file survives any failure."""
        digest = hashlib.sha256()
        received = 0
        fd, partial = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".partial")
        try:
            with os.fdopen(fd, "wb") as file:

                def write(chunks: list[bytes]) -> None:
                    for chunk in chunks:
                        digest.update(chunk)
                    file.writelines(chunks)

                # Disk writes and hashing block: do them in a worker thread, off the event loop, a batch
                # of chunks per thread hop. While the thread works, the exporter keeps receiving.
                async for batch in batches(stream):
                    received += sum(map(len, batch))
                    if received > size:
                        raise ValueError(f"upload of {target.name!r} is larger than the {size} bytes announced")
                    await to_thread.run_sync(write, batch)
                if received != size:
                    # A client that dies mid-upload ends the stream early: never store a truncated file.
                    raise ValueError(f"upload of {target.name!r} incomplete: received {received} of {size} bytes")
                await to_thread.run_sync(file.flush)
                await to_thread.run_sync(os.fsync, file.fileno())
            os.replace(partial, target)  # atomic: readers see the old file or the new one
        except BaseException:
            Path(partial).unlink(missing_ok=True)
            raise
        return UploadResult(name=target.name, size=received, sha256=digest.hexdigest())

    def _upload_path(self, name: str) -> Path:
        """The path an upload of `name` goes to, refusing names that would escape upload_dir."""
        if self.upload_dir is None:
            raise NotImplementedError("uploads are disabled: set upload_dir in this driver's exporter config")
        return Path(self.upload_dir) / check_upload_name(name)

    def _remove_partial_uploads(self) -> None:
        """Delete the temporary files of uploads that never finished."""
        if self.upload_dir is not None:
            for partial in Path(self.upload_dir).glob(".*.partial"):
                partial.unlink(missing_ok=True)


class RandomStream(ByteStream):
    """An in-memory byte stream of random data, the stand-in for a device's data source.

    `random.randbytes` makes about 340 MB/s, less than a byte stream carries, so it would measure
    the generator instead of the transport: each chunk is a slice, at a random offset, of a pool
    of random bytes generated once per process (so data repeats: fine for a stand-in).
    """

    def __init__(self, chunk: int = STREAM_CHUNK) -> None:
        self._chunk = chunk
        self._closed = False

    async def __aenter__(self) -> RandomStream:
        await to_thread.run_sync(_random_pool)  # the first stream makes the pool, off the event loop
        return self

    async def receive(self, max_bytes: int | None = None) -> bytes:
        """Return the next chunk of random bytes."""
        # The framework pumps the stream with `async for`, which calls receive() without max_bytes:
        # the chunk size set here is the size of every gRPC message.
        if self._closed:
            raise anyio.ClosedResourceError
        await checkpoint()  # an endless source must still let other tasks run
        pool = _random_pool()
        size = min(max_bytes or self._chunk, len(pool))
        offset = random.randrange(len(pool) - size + 1)
        return pool[offset : offset + size]

    async def send(self, item: bytes) -> None:
        """Discard what the client writes, as /dev/urandom does."""
        if self._closed:
            raise anyio.ClosedResourceError

    async def send_eof(self) -> None:
        """Nothing to do: the client finishing its writes does not end the random data."""

    async def aclose(self) -> None:
        """Close the stream: later reads and writes fail."""
        self._closed = True


@cache
def _random_pool() -> bytes:
    """The random bytes every RandomStream slices its chunks from."""
    return random.randbytes(RANDOM_POOL)
