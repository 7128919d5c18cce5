"""ExampleCustom: a *custom driver* with its own config, exported methods of every kind, and its own client.

Read top to bottom: each kind of exported method appears once, simplest first.
"""

from __future__ import annotations

import errno
import hashlib
import os
import random
import shutil
import tempfile
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import field
from functools import cache
from pathlib import Path
from typing import Annotated

import anyio
from anyio import to_thread
from anyio.abc import ByteStream
from anyio.lowlevel import checkpoint
from jumpstarter.common.resources import Resource
from jumpstarter.driver import Driver, export, exportstream
from pydantic import ConfigDict, Field
from pydantic.dataclasses import dataclass

from ..batching import batches
from ..cancellation import to_completion
from ..validation import names_its_config_errors, validate
from .common import LEVEL_MIN, STREAM_CHUNK, Settings, State, UploadResult, check_upload_name

# Exporter YAML `config:` keys become keyword arguments of the driver dataclass. `extra="forbid"`
# turns a typo into an error that names the key; pydantic checks every type. A plain stdlib
# @dataclass would accept both silently.
CONFIG = ConfigDict(extra="forbid")

# Bounds of exported methods' arguments, checked by @validate. Numbers arrive as floats: 3.0 passes
# for an int, 2.5 does not.
Count = Annotated[int, Field(ge=0, le=10_000)]
Seconds = Annotated[float, Field(ge=0)]  # and at most the config's max_seconds: see _check_seconds

RANDOM_POOL = 4 * 1024 * 1024
"""Bytes of random data `RandomStream` slices its chunks from."""
PARTIAL_PREFIX, PARTIAL_SUFFIX = ".upload-", ".partial"
"""An upload in progress is `.upload-XXXXXXXX.partial` in upload_dir: a fixed length, whatever the name
(the name plus anything would exceed the file system's 255 bytes for the longest names), and a pattern
no upload can have (names never start with '.'), so reset() can remove what a crash left."""


@names_its_config_errors
@dataclass(kw_only=True, config=CONFIG)
class ExampleCustom(Driver):
    """A custom driver: its own config, exported methods of every kind, and its own client."""

    device_id: str = Field(min_length=1, max_length=255)
    """Required: which device this driver talks to (a serial number, a hostname...)."""
    max_seconds: float = Field(default=10.0, gt=0, le=86_400)
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
            # Fail when the exporter starts, not at the first upload; a ValueError here becomes the config's
            # error, naming the key (an OSError would name neither the key nor the driver).
            try:
                Path(self.upload_dir).mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise ValueError(f"upload_dir: cannot create {self.upload_dir!r}: {e.strerror or e}") from None

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
    #    Arguments come from any client, decoded from protobuf Values: @validate checks them against
    #    the annotations and raises a ValueError naming the argument, which the client receives as
    #    INVALID_ARGUMENT (the exporter keeps serving). A wrong number of arguments too. A pydantic
    #    model argument crosses as a dict: @validate turns it back into the model, bounds checked.
    @export
    @validate
    def configure(self, settings: Settings) -> Settings:
        """Store a label and a level on the device."""
        # Sync calls of concurrent clients run in parallel worker threads: return what *this* call
        # stored, not `self._settings`, which another call may have replaced in the meantime.
        self._settings = settings
        self.logger.debug("configured %r", settings)  # %r: a client's string never reaches a terminal raw
        return settings  # sent as a dict: the client re-validates it into Settings

    @export
    @validate
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
    @validate
    async def slow_task(self, seconds: Seconds) -> str:
        """Wait for a number of seconds without blocking the exporter, then report."""
        self._check_seconds("seconds", seconds)
        self._active_tasks += 1
        try:
            await anyio.sleep(seconds)
        finally:
            self._active_tasks -= 1
        return f"{self.device_id}: done after {seconds:g} s"

    def _check_seconds(self, argument: str, seconds: float) -> None:
        # A bound that comes from the config cannot be an annotation (evaluated once, for the class), and
        # validate_call's validators never see `self`: checked here, in @validate's words.
        if seconds > self.max_seconds:
            raise ValueError(
                f"{argument}: Input should be less than or equal to {self.max_seconds:g}, this driver's max_seconds "
                f"(got {seconds:g})"
            )

    # 3. An async generator: a streaming call. Never write a *sync* generator that blocks: its body
    #    runs on the exporter's event loop and stalls every other call while it waits.
    @export
    @validate
    async def slow_generator(self, count: Count, interval: Seconds) -> AsyncGenerator[int, None]:
        """Count from 0 to count-1, one number every interval seconds."""
        self._check_seconds("interval", interval)
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

    # 5. An upload: the client streams a file as a *resource* and passes its handle to a normal call;
    #    `self.resource(handle)` opens it as a byte stream. This is how flashers get images.
    @export
    @validate  # the argument count and types; the rules for name and size are checked below
    async def upload(self, source: Resource, name: str, size: int) -> UploadResult:
        """Store a file sent by the client under upload_dir, atomically."""
        # Open the resource first: one the driver never opens stays on the exporter, with the chunks
        # already sent (measured: 1-2 of up to 32, until the exporter stops). So a refusal the client
        # can cause with a well-formed call (a name, a size too large for the disk) comes after this.
        # (0.9 annotates resource()'s handle as `str`; what clients send is the dict that Resource describes.)
        async with self.resource(source) as stream:  # type: ignore[arg-type]
            target = self._upload_path(name)
            await self._check_space(target, size)
            # In a task of its own, so that a client leaving mid-upload (gRPC cancels with asyncio's own
            # cancellation, which does not wait for a worker thread) never closes the file under a write.
            result = await to_completion(self._store, stream, target, size)
        self.logger.info("stored %r in %s (%d bytes)", result.name, self.upload_dir, result.size)
        return result

    def _upload_path(self, name: str) -> Path:
        """The path an upload of `name` goes to, refusing names that would escape upload_dir."""
        if self.upload_dir is None:
            raise NotImplementedError("uploads are disabled: set upload_dir in this driver's exporter config")
        return Path(self.upload_dir) / check_upload_name(name)

    async def _check_space(self, target: Path, size: int) -> None:
        """Refuse, before receiving a byte, an upload the disk cannot hold (the old file stays until the rename)."""
        if size < 0:
            raise ValueError(f"size: Input should be greater than or equal to 0 (got {size})")
        free = (await to_thread.run_sync(shutil.disk_usage, target.parent)).free
        if size > free:
            # Not the caller's mistake but the exporter's state: RuntimeError (UNKNOWN), `j` exits 1.
            raise RuntimeError(
                f"not enough space in {self.upload_dir} for {target.name!r}: {size} bytes announced, {free} free"
            )

    async def _store(self, stream: AsyncIterator[bytes], target: Path, size: int) -> UploadResult:
        """Write to a temporary file next to the target, then rename: the old file survives any failure."""
        digest = hashlib.sha256()
        received = 0
        fd, partial = tempfile.mkstemp(dir=target.parent, prefix=PARTIAL_PREFIX, suffix=PARTIAL_SUFFIX)
        self.logger.debug("receiving %r into %s", target.name, partial)
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
        except BaseException as e:
            Path(partial).unlink(missing_ok=True)
            if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):  # filled after _check_space
                raise RuntimeError(f"no space left in {self.upload_dir} after {received} of {size} bytes") from e
            raise
        return UploadResult(name=target.name, size=received, sha256=digest.hexdigest())

    def _remove_partial_uploads(self) -> None:
        """Delete the temporary files of uploads that never finished."""
        if self.upload_dir is not None:
            for partial in Path(self.upload_dir).glob(f"{PARTIAL_PREFIX}*{PARTIAL_SUFFIX}"):
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
