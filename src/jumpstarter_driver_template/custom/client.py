"""Client side of ExampleCustom: typed methods, and the `j custom ...` command line.

This module runs where tests and `j` run, which may have none of the exporter's dependencies:
import only `common`, never `driver`.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator, Callable, Generator, Mapping
from contextlib import closing
from pathlib import Path
from typing import Any

import anyio
import click
from anyio import EndOfStream, to_thread
from anyio.abc import ObjectStream
from jumpstarter.client.core import DriverError
from jumpstarter.streams.progress import ProgressAttribute

from ..base_client import BaseClient, driver_group
from ..batching import IO_BATCH, batches
from .common import (
    LEVEL_MAX,
    LEVEL_MIN,
    STREAM_CHUNK,
    Settings,
    State,
    UploadResult,
    check_upload_name,
)

READ_LIMIT = 64 * 1024 * 1024
"""`read_random` returns bytes in memory: above this, use `save_random`."""


class ExampleCustomClient(BaseClient):
    """Client for ExampleCustom: typed methods over its exported methods, and its command line."""

    # Unary calls: `self.call(name, *args)` returns the driver's result, decoded from a protobuf
    # Value (models arrive as dicts, numbers as floats): re-validate it into the shared model.
    def configure(self, label: str, level: int) -> Settings:
        """Store a label (1-100 characters) and a level (0-10) on the device."""
        # A model argument crosses as a dict too: the driver's @validate turns it into Settings, and refuses
        # a bad label or level with INVALID_ARGUMENT naming the field (`settings.level: ...`).
        return Settings.model_validate(self.call("configure", {"label": label, "level": level}))

    # Not `status`: Jumpstarter's client base already has a `status` property (the lease's status).
    def state(self) -> State:
        """Report the device's settings and what the driver is doing."""
        return State.model_validate(self.call("state"))

    def slow_task(self, seconds: float) -> str:
        """Run a task that takes `seconds` on the exporter and return its report."""
        return self.call("slow_task", seconds)

    # Streaming calls: `self.streamingcall(name, *args)` yields each item as the driver yields it. BaseClient
    # cancels the call when the caller stops early; `closing` passes that stop on at once.
    def slow_generator(self, count: int, interval: float = 0.5) -> Generator[int, None, None]:
        """Yield 0 to count-1 as the driver produces them, one every interval seconds."""
        with closing(self.streamingcall("slow_generator", count, interval)) as items:
            for value in items:
                yield int(value)

    # Byte streams: each blocking `receive()` costs a thread hop, so bulk transfers run as one
    # call into the client's event loop (`self.portal.call`) that loops on `stream_async`.
    def read_random(self, size: int) -> bytes:
        """Read `size` random bytes from the device's byte stream."""
        if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size <= READ_LIMIT:
            raise ValueError(f"size must be an integer from 0 to {READ_LIMIT} bytes, got {size!r}: use save_random")
        return self.portal.call(self._read_random_async, size)

    def save_random(self, path: str | os.PathLike[str], size: int) -> int:
        """Write `size` random bytes from the device's byte stream to a local file."""
        if size < 0:
            raise ValueError(f"size must not be negative, got {size}")
        return self.portal.call(self._save_random_async, Path(path), size)

    async def _random_chunks(self, size: int) -> AsyncIterator[bytes]:
        remaining = size
        async with self.stream_async("random_stream") as stream:
            while remaining > 0:
                chunk = (await stream.receive())[:remaining]
                remaining -= len(chunk)
                yield chunk

    async def _read_random_async(self, size: int) -> bytes:
        return b"".join([chunk async for chunk in self._random_chunks(size)])

    async def _save_random_async(self, path: Path, size: int) -> int:
        file = await to_thread.run_sync(path.open, "wb")
        try:
            # File writes block, so they run in a worker thread, a batch of chunks per hop.
            async for batch in batches(self._random_chunks(size)):
                await to_thread.run_sync(file.writelines, batch)
        finally:
            await to_thread.run_sync(file.close)
        return size

    # Uploads: the client offers a stream as a *resource*, and passes its handle to a normal call.
    def upload(self, path: str | os.PathLike[str], name: str | None = None) -> UploadResult:
        """Send a local file to the exporter, stored as `name` (default: the file's name)."""
        path = Path(path)
        if not path.is_file():
            # The driver refuses an upload whose size differs from the one announced: a pipe has none.
            raise ValueError(f"{path} is not a regular file: an upload needs to know its size")
        # Refuse a bad name before sending anything (the driver checks it too).
        return self.portal.call(self._upload_async, path, check_upload_name(name or path.name))

    async def _upload_async(self, path: Path, name: str, declared_size: int | None = None) -> UploadResult:
        source = await to_thread.run_sync(_FileSource, path)
        size = source.size if declared_size is None else declared_size  # tests declare a wrong one
        result, error = None, None
        with anyio.CancelScope() as transfer:
            async with source, anyio.create_task_group() as reader, self.resource_async(source) as handle:
                # Reading and hashing the next batch overlaps with sending this one.
                reader.start_soon(source.read_ahead)
                try:
                    result = UploadResult.model_validate(await self.call_async("upload", handle, name, size))
                except Exception as e:  # raised below, not wrapped in the transfer's ExceptionGroup
                    error = e
                # The call is over: whatever the driver did not read will never be read. Stop copying.
                transfer.cancel()
        if error is not None:
            raise error
        assert result is not None
        if (result.size, result.sha256) != (source.size, source.sha256.hexdigest()):
            raise DriverError(
                f"upload of {path} as {name!r} does not match: sent {source.size} bytes "
                f"sha256 {source.sha256.hexdigest()}, exporter stored {result.size} bytes sha256 {result.sha256}"
            )
        return result

    # A client method can combine calls: clients are where device workflows live.
    def combined_action(self, label: str, level: int, seconds: float = 0.0) -> State:
        """Configure the device, wait for a task to finish, and return its state."""
        self.configure(label, level)
        self.slow_task(seconds)
        return self.state()

    def cli(self) -> click.Group:
        """The `j custom ...` commands. Docstrings become `--help` text."""

        # driver_group: upstream's driver_click_group, whose commands print a refused value or a driver
        # error as one `Error:` line instead of a traceback (exit status 1 through `j`).
        @driver_group(self)
        def base() -> None:
            """Example custom driver"""

        @base.command()
        @click.argument("label")
        @click.argument("level", type=click.IntRange(LEVEL_MIN, LEVEL_MAX))
        def configure(label: str, level: int) -> None:
            """Store a label and a level (0-10) on the device."""
            click.echo(_format_settings(self.configure(label, level)))

        @base.command()
        def state() -> None:
            """Show the device's settings and activity."""
            click.echo(_format_state(self.state()))

        @base.command()
        @click.argument("seconds", type=click.FloatRange(min=0))
        def slow_task(seconds: float) -> None:
            """Run a task that takes SECONDS on the exporter."""
            click.echo(self.slow_task(seconds))

        @base.command()
        @click.option("--count", "-n", type=click.IntRange(min=0), default=5, show_default=True, help="Numbers")
        @click.option("--interval", "-i", type=click.FloatRange(min=0), default=0.5, show_default=True, help="Seconds")
        def slow_generator(count: int, interval: float) -> None:
            """Print numbers as the device produces them."""
            for value in self.slow_generator(count, interval):
                click.echo(value)

        @base.command()
        @click.argument("size", type=click.IntRange(min=0))
        @click.option("--output", "-o", type=click.Path(dir_okay=False, writable=True), help="Write to this file")
        def random(size: int, output: str | None) -> None:
            """Read SIZE random bytes: printed as hex, or written to --output."""
            if output is None:
                if size > READ_LIMIT:
                    raise click.UsageError(f"SIZE over {READ_LIMIT} bytes needs --output FILE")
                click.echo(self.read_random(size).hex())
            else:
                try:
                    written = self.save_random(output, size)
                except OSError as e:  # a directory that does not exist, a read-only file system...
                    raise click.FileError(output, e.strerror) from None
                click.echo(f"wrote {written} bytes to {output}")

        @base.command()
        @click.argument("path", type=click.Path(exists=True, dir_okay=False, readable=True))
        @click.option("--name", help="Name to store the file as (default: the file's name)")
        def upload(path: str, name: str | None) -> None:
            """Send the file at PATH to the exporter's upload directory."""
            result = self.upload(path, name)
            click.echo(f"uploaded {result.name}: {result.size} bytes, sha256 {result.sha256}")

        @base.command()
        @click.argument("label")
        @click.argument("level", type=click.IntRange(LEVEL_MIN, LEVEL_MAX))
        @click.option("--seconds", "-s", type=click.FloatRange(min=0), default=0.0, show_default=True)
        def combined_action(label: str, level: int, seconds: float) -> None:
            """Configure, run a task, and show the resulting state."""
            click.echo(_format_state(self.combined_action(label, level, seconds)))

        return base


def _format_settings(settings: Settings) -> str:
    return f"label={settings.label} level={settings.level}"


def _format_state(state: State) -> str:
    return (
        f"device_id={state.device_id} {_format_settings(state.settings)} "
        f"active_tasks={state.active_tasks} open_streams={state.open_streams}"
    )


class _FileSource(ObjectStream[bytes]):
    """A local file offered as a resource, read and hashed ahead of the transfer by `read_ahead`."""

    def __init__(self, path: Path) -> None:
        self._file = path.open("rb")
        self.size = os.fstat(self._file.fileno()).st_size
        self.sha256 = hashlib.sha256()
        self._error: Exception | None = None
        # Two batches in flight: one being sent, one being read.
        self._ready, self._chunks = anyio.create_memory_object_stream[bytes](2 * IO_BATCH // STREAM_CHUNK)

    def _read(self) -> list[bytes]:
        # Each chunk is one gRPC message (STREAM_CHUNK bytes); a batch of them is one thread hop.
        chunks = []
        for _ in range(IO_BATCH // STREAM_CHUNK):
            chunk = self._file.read(STREAM_CHUNK)
            if not chunk:
                break
            self.sha256.update(chunk)
            chunks.append(chunk)
        return chunks

    async def read_ahead(self) -> None:
        """Read the file in a worker thread, a batch per hop, into the buffer `receive` takes from."""
        async with self._ready:
            try:
                while chunks := await to_thread.run_sync(self._read):
                    for chunk in chunks:
                        await self._ready.send(chunk)
            except Exception as e:  # raised by receive(), where the transfer sees it
                self._error = e

    async def receive(self) -> bytes:
        try:
            return await self._chunks.receive()
        except EndOfStream:
            if self._error is not None:
                raise self._error from None
            raise

    async def send(self, item: Any) -> None:
        pass  # the exporter sends nothing back on an upload

    async def send_eof(self) -> None:
        pass

    async def aclose(self) -> None:
        self._chunks.close()
        self._ready.close()
        self._file.close()

    @property
    def extra_attributes(self) -> Mapping[Any, Callable[[], Any]]:
        # Lets Jumpstarter's transfer progress bar show the total size.
        return {ProgressAttribute.total: lambda: float(self.size)}
