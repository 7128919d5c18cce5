"""The console's two transports as one kind of stream: a tool attached on a socket pair, a TCP connection.

`attach` runs a tool whose stdin and stdout are the console, with the command runner's process groups
(`commands.start`, `commands.end_group`): each client's run is a group of its own, ended whole when the
client leaves, when the tool exits, or when the exporter stops. `ChunkedStream` reads either transport
in chunks of the size the framework is fast with. Exporter-side only.
"""

from __future__ import annotations

import logging
import os
import shlex
import socket
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager, suppress
from typing import Any

import anyio
from anyio.abc import ByteStream, UNIXSocketStream

from ..commands import OutputTail, drain, end_group, start

logger = logging.getLogger(__name__)

READ_MAX = 256 * 1024
"""Bytes read at once: one gRPC message each. Jumpstarter forwards a stream with `receive()`'s default size,
64 KiB for anyio's sockets; at 256 KiB a message the framework goes 2-3x faster (1 MiB was slower here)."""
SOCKET_BUFFER = 1024 * 1024
"""Bytes a tool may write ahead of the reader (the kernel caps it at net.core.wmem_max): with the default
(208 KiB) a fast tool waited for the driver at every chunk, and throughput fell from 0.75x to 0.52x of the
framework's ceiling."""


@asynccontextmanager
async def attach(key: str, command: list[str], log: logging.Logger = logger) -> AsyncIterator[ChunkedStream]:
    """Run `command` with its stdin and stdout as the yielded byte stream; end its group when the block ends.

    For tools whose stdin and stdout are the device (`ipmitool sol activate`, `ssh console-server`). The
    bytes pass as they are, and the stream applies back-pressure: a reader that stops reading stops the
    tool at the socket's buffer, nothing piles up here. When the tool exits, its group is ended and the
    stream ends (EOF), even if a daemon it left holds the socket. Its stderr is logged (the last
    16 KiB) with its exit status. A program that cannot start raises RuntimeError.
    """
    described = f"{key} {shlex.join(command)}"
    # A socket pair rather than two pipes: one stream both ways, a half-close (send_eof) the tool sees as
    # EOF on stdin, and one shutdown() that ends the reading side whoever else still holds the other end.
    ours, theirs = socket.socketpair()
    for end in (ours, theirs):
        end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)
    err_read, err_write = os.pipe()
    try:
        with anyio.CancelScope(shield=True):
            process = await start(described, command, stdin=theirs, stdout=theirs, stderr=err_write)
    except BaseException as e:
        if isinstance(e, RuntimeError):  # a stream's error reaches a 0.9 client without its message: log it
            log.error("%s", e)
        ours.close()
        os.close(err_read)
        raise
    finally:
        theirs.close()
        os.close(err_write)
    stderr = OutputTail()
    try:
        stream = await UNIXSocketStream.from_socket(ours)
    except BaseException:
        ours.close()
        raise

    async def watch() -> None:
        """Collect stderr until the tool exits or the block ends; then end its group, and the stream (EOF)."""
        try:
            async with anyio.create_task_group() as group:
                group.start_soon(drain, err_read, stderr)
                await process.wait()
                group.cancel_scope.cancel()
        finally:
            # Here, in a task started before the block: the block ends when gRPC cancels the stream's call
            # (the client left, the exporter stops), with asyncio's own cancellation, which cuts through a
            # shield in the block's task and kills a task started then before it runs. This task gets anyio's.
            with anyio.CancelScope(shield=True):
                await end_group(process)
                with suppress(OSError):
                    ours.shutdown(socket.SHUT_RD)  # EOF, even if a daemon outside the group holds the other end
                await process.aclose()

    try:
        async with anyio.create_task_group() as group:
            group.start_soon(watch)
            try:
                yield ChunkedStream(stream, process.pid)
            finally:
                group.cancel_scope.cancel()
    finally:
        ours.close()  # anyio's stream reads the socket itself: closing it is all its aclose() would do
        stderr.read_available(err_read)
        os.close(err_read)
        text = stderr.text()
        log.info("%s exited with status %s%s", described, process.returncode, f": {text}" if text else "")


class ChunkedStream(ByteStream):
    """A byte stream read in chunks of up to READ_MAX, carrying the process group of the tool behind it, if any."""

    def __init__(self, stream: ByteStream, group: int | None = None) -> None:
        self._stream = stream
        self.group = group
        """The process group of the tool behind the stream (None for a TCP connection)."""

    @property
    def extra_attributes(self) -> Mapping[Any, Callable[[], Any]]:
        return self._stream.extra_attributes

    async def receive(self, max_bytes: int = READ_MAX) -> bytes:
        return await self._stream.receive(max_bytes)

    async def send(self, item: bytes) -> None:
        await self._stream.send(item)

    async def send_eof(self) -> None:
        await self._stream.send_eof()

    async def aclose(self) -> None:
        await self._stream.aclose()
