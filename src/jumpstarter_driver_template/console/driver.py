"""ExampleConsole: a *byte stream* on upstream's console client. Export `connect`, reuse `PySerialClient`.

Upstream's console client, `PySerialClient` (`jumpstarter-driver-pyserial`), only needs a driver
that exports the byte stream `connect`: pexpect sessions (`client.console.pexpect()`, `open()`),
`j console start-console` and `j console pipe` then work without a line of client code here, as
they do for upstream's own consoles that are not serial ports (Corellium's returns it too).

This console is one that upstream's `PySerial` does not reach: a tool whose stdin and stdout are
the console (`ipmitool -I lanplus ... sol activate`, `ssh` to a console server, conserver's
`console NAME`), or a console server's TCP port (ser2net, a terminal server).
"""

from __future__ import annotations

import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

import anyio
from anyio.abc import ByteStream, SocketAttribute
from jumpstarter.driver import Driver, exportstream
from pydantic import ConfigDict, Field, model_validator
from pydantic.dataclasses import dataclass

from ..commands import Command, end_groups
from ..validation import names_its_config_errors
from .tool import ChunkedStream, attach

SIMULATOR = [sys.executable, "-m", "jumpstarter_driver_template.console.simulator"]
"""The simulated device console (simulator.py), run as the tool: the same path as a real tool's."""


@names_its_config_errors
@dataclass(kw_only=True, config=ConfigDict(extra="forbid"))
class ExampleConsole(Driver):
    """A device's console: a tool's stdin/stdout (ipmitool sol, ssh, conserver) or a console server's TCP port."""

    command: Command | None = None
    """Argument list of the tool whose stdin/stdout is the console, e.g.
    ["ipmitool", "-I", "lanplus", "-H", "bmc1", "-U", "admin", "-f", "/etc/bmc1.pass", "sol", "activate"].
    Each client that connects gets a run of its own, in a process group ended when it leaves."""
    host: str | None = None
    """A console server's address (ser2net, a terminal server), with `port`."""
    port: int | None = Field(default=None, ge=1, le=65535)
    """The console server's TCP port for this device."""
    simulator: bool = False
    """Run the simulated device console (simulator.py) as the tool: for the demo and tests."""
    connect_timeout: float = Field(default=10.0, gt=0)
    """Seconds a TCP connection to the console server may take."""

    @model_validator(mode="after")
    def _one_transport(self) -> ExampleConsole:
        chosen = [name for name, given in self._transports().items() if given]
        if len(chosen) != 1:
            raise ValueError(f"give exactly one of command, host and port, simulator: true (given: {chosen or 'none'})")
        if (self.host is None) != (self.port is None):
            raise ValueError("host and port go together")
        return self

    def _transports(self) -> dict[str, bool]:
        return {"command": self.command is not None, "host": self.host is not None or self.port is not None,
                "simulator": self.simulator}  # fmt: skip

    def __post_init__(self) -> None:
        super().__post_init__()
        # The attached clients' sockets, and their tool's process group, so that close() can end them.
        self._attached: dict[socket.socket, int | None] = {}

    # No client code of our own: upstream's console client works with any driver that exports `connect`.
    @classmethod
    def client(cls) -> str:
        return "jumpstarter_driver_pyserial.client.PySerialClient"

    # @exportstream + an async context manager: the stream it yields is the byte stream the client
    # receives. Jumpstarter forwards it as it is: no encoding, no line splitting, one chunk per message.
    # A second client while one is attached gets a connection of its own, as with upstream's PySerial
    # (which opens the port again for each `connect` and does not arbitrate): what it sees is the
    # console's rule (ser2net refuses or kicks, ipmitool's SOL says "payload already active").
    @exportstream
    @asynccontextmanager
    async def connect(self) -> AsyncIterator[ByteStream]:
        """Attach to the console: its output byte for byte, and what you send, as it is."""
        # In 0.9 an error while a stream opens reaches the client as a bare BrokenResourceError: the driver's
        # log line (which `j` prints, and the exporter's log keeps) is where its reason is read.
        async with self._open() as stream:
            raw: socket.socket = stream.extra(SocketAttribute.raw_socket)
            self._attached[raw] = stream.group
            self.logger.info("console attached (%d attached)", len(self._attached))
            try:
                yield stream
            finally:
                del self._attached[raw]
                self.logger.info("console detached")

    @asynccontextmanager
    async def _open(self) -> AsyncIterator[ChunkedStream]:
        if self.host is not None and self.port is not None:
            try:
                with anyio.fail_after(self.connect_timeout):
                    connection = await anyio.connect_tcp(self.host, self.port)
            except TimeoutError:
                raise self._failed(TimeoutError(f"no connection within {self.connect_timeout:g} s")) from None
            except OSError as e:
                raise self._failed(ConnectionError(e.strerror or str(e))) from None
            async with connection:
                yield ChunkedStream(connection)
        else:
            command = SIMULATOR if self.simulator else self.command
            assert command is not None  # _one_transport
            async with attach("command", command, self.logger) as stream:  # logs why a tool could not start
                yield stream

    def _failed(self, error: Exception) -> Exception:
        """Log why the console could not be reached, for the client to read, and return the error to raise."""
        self.logger.error("console %s:%s: %s", self.host, self.port, error)
        return type(error)(f"console {self.host}:{self.port}: {error}")

    # The session calls close() when a lease ends (sync, on the event loop, in 0.9): it ends the attached
    # connections, and their clients get EOF. A stream that 0.9's client only half-closed (`client.stream()`)
    # is still open here until then, so this ends the tools' groups itself, bounded by the runner's GRACE.
    # (Upstream's PySerial also exports its close(); its client has no method that calls it, so this one is
    # not exported: MCP and `j` would offer nothing for it.)
    def close(self) -> None:
        """End every attached console connection (the clients get EOF)."""
        for raw in list(self._attached):
            with suppress(OSError):  # already gone
                raw.shutdown(socket.SHUT_RDWR)
        end_groups([group for group in self._attached.values() if group is not None])
        super().close()
