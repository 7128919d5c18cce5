"""LineConnection: one TCP connection to a line-protocol device, used without blocking the event loop.

Why a plain socket and not anyio's `connect_tcp` stream: the exporter calls a driver's `reset()`
and `close()` synchronously, on its event loop thread (Jumpstarter 0.9), and an anyio stream can
only be closed with `await`. A non-blocking socket, waited on with `anyio.wait_readable` /
`wait_writable`, does all its I/O asynchronously and can still be closed from sync code:
`anyio.notify_closing` first wakes any task waiting on it.
"""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable
from contextlib import suppress

import anyio
from anyio import to_thread

from .common import ANSWER_MAX


class DeviceError(RuntimeError):
    """The device failed: unreachable, connection lost, or an answer that makes no sense.

    A RuntimeError reaches the client as UNKNOWN (a `DriverError`). Not a ValueError: the client
    would get INVALID_ARGUMENT, blaming its arguments for the device's fault.
    """


class LineConnection:
    """One connection: send a line, read one line back. Exchanges must not overlap (the driver's lock sees to it)."""

    def __init__(self, sock: socket.socket, address: str) -> None:
        sock.setblocking(False)
        self._socket = sock
        self._buffer = bytearray()
        self.address = address
        self.closed = False

    @classmethod
    async def open(cls, host: str, port: int, timeout: float) -> LineConnection:
        """Connect to host:port, waiting at most `timeout` seconds."""
        address = f"{host}:{port}"
        try:
            # create_connection resolves the name and connects, blocking: run it in a worker thread, bounded by
            # its own timeout. Shielded, so that a cancellation waits for the thread and its socket is returned
            # (the driver calls this through `to_completion`, where anyio's shields hold against gRPC's cancel).
            with anyio.CancelScope(shield=True):
                sock = await to_thread.run_sync(socket.create_connection, (host, port), timeout)
        except TimeoutError:
            raise TimeoutError(f"cannot connect to {address}: no answer within {timeout:g} s") from None
        except OSError as e:
            raise DeviceError(f"cannot connect to {address}: {e.strerror or e}") from None
        return cls(sock, address)

    def usable(self) -> bool:
        """Whether the device has neither closed the connection nor sent anything unasked since the last answer."""
        if self.closed or self._buffer:
            return False
        try:
            self._socket.recv(1, socket.MSG_PEEK)  # b"": closed by the device; bytes: sent unasked
        except BlockingIOError:
            return True  # nothing to read: open and quiet, as it should be
        except OSError:
            pass
        return False

    async def exchange(self, line: str) -> str:
        """Send `line` and return the device's one-line answer (without its line ending)."""
        await self._send(line.encode() + b"\n")
        return await self._receive_line()

    async def _send(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                view = view[self._socket.send(view) :]
            except BlockingIOError:
                await self._wait(anyio.wait_writable)
            except OSError as e:
                raise DeviceError(f"{self.address}: sending failed: {e.strerror or e}") from None

    async def _receive_line(self) -> str:
        while (end := self._buffer.find(b"\n")) < 0:
            if len(self._buffer) > ANSWER_MAX:
                raise DeviceError(f"{self.address} sent a line longer than {ANSWER_MAX} bytes")
            await self._wait(anyio.wait_readable)
            try:
                chunk = self._socket.recv(65536)
            except BlockingIOError:
                continue
            except OSError as e:
                raise DeviceError(f"{self.address}: receiving failed: {e.strerror or e}") from None
            if not chunk:
                raise DeviceError(f"{self.address} closed the connection")
            self._buffer += chunk
        if end > ANSWER_MAX:  # a longer line that arrived in one piece
            raise DeviceError(f"{self.address} sent a line longer than {ANSWER_MAX} bytes")
        line = bytes(self._buffer[:end])
        del self._buffer[: end + 1]
        # Never let a decoding error escape: UnicodeDecodeError is a ValueError (INVALID_ARGUMENT to the client).
        return line.decode(errors="replace").removesuffix("\r")

    async def _wait(self, wait: Callable[[socket.socket], Awaitable[None]]) -> None:
        try:
            await wait(self._socket)
        except anyio.ClosedResourceError:
            raise DeviceError(f"{self.address}: connection closed by the driver (lease ended or reset)") from None

    def close(self) -> None:
        """Close now, from sync or async code; a task waiting on the connection fails with DeviceError."""
        if self.closed:
            return
        self.closed = True
        with suppress(RuntimeError):  # RuntimeError: no event loop in this thread, so no task here waits on it
            anyio.notify_closing(self._socket)
        self._socket.close()
