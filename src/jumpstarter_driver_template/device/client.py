"""ExampleDeviceClient: the client of every PowerSupplyInterface driver (ExampleDevice, ExampleDeviceModel).

This module runs where tests and `j` run, which may have none of the exporter's dependencies: it
imports `common` only, never the drivers or the simulator.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Generator, Iterator
from contextlib import closing, contextmanager
from typing import Any

import anyio
import click
from anyio.from_thread import BlockingPortal
from anyio.streams.buffered import BufferedByteReceiveStream

from ..base_client import BaseClient, driver_group
from .common import ANSWER_MAX, COMMAND_MAX, VOLTS_MAX, DeviceState, Measurement, printable, protection_change


class ExampleDeviceClient(BaseClient):
    """Client for a bench power supply: a typed method for each exported method, and the `j` commands."""

    def identify(self) -> str:
        """The instrument's identity (maker, model, serial, firmware)."""
        return self.call("identify")

    def set_voltage(self, volts: float) -> None:
        """Set the output voltage setpoint."""
        # NaN and infinity cross gRPC as JSON null: the driver would see None. Say what is wrong here.
        if not math.isfinite(volts):
            raise ValueError(f"volts must be a finite number, got {volts}")
        self.call("set_voltage", volts)

    def get_voltage(self) -> float:
        """The output voltage setpoint."""
        return float(self.call("get_voltage"))

    def set_output(self, enabled: bool) -> None:
        """Switch the output on or off."""
        self.call("set_output", enabled)

    def get_output(self) -> bool:
        """Whether the output is on."""
        return bool(self.call("get_output"))

    def measure(self) -> Measurement:
        """Measure voltage and current at the output."""
        return Measurement.model_validate(self.call("measure"))

    def measure_stream(self, count: int, interval: float = 1.0) -> Generator[Measurement, None, None]:
        """Yield `count` measurements, one every `interval` seconds; stopping early stops the driver's stream."""
        with closing(self.streamingcall("measure_stream", count, interval)) as items:
            for item in items:
                yield Measurement.model_validate(item)

    # Not `status`: the client base class already has a `status` property (the lease's status).
    def state(self) -> DeviceState:
        """What the driver is doing: its address, its connection, its running streams."""
        return DeviceState.model_validate(self.call("state"))

    def query(self, command: str) -> str:
        """Send one SCPI line through the driver's session: a query's answer as it is, "" for a setting it took."""
        return self.call("query", command)

    @contextmanager
    def console(self, timeout: float = 5.0) -> Iterator[LineConsole]:
        """Open the instrument's raw SCPI interface (a byte stream on a connection of its own)."""
        with self.portal.wrap_async_context_manager(self.stream_async("console")) as stream:
            console = LineConsole(stream, self.portal, timeout)
            self.portal.call(console.check_open)
            yield console

    def cli(self) -> click.Group:
        """The `j` commands; each docstring is its `--help` text."""

        @driver_group(self)
        def base() -> None:
            """Bench power supply"""

        @base.command()
        def idn() -> None:
            """Print the instrument's identity."""
            click.echo(self.identify())

        @base.command()
        @click.argument("volts", type=click.FloatRange(0, VOLTS_MAX), required=False)
        def voltage(volts: float | None) -> None:
            """Print the voltage setpoint, or set it to VOLTS."""
            if volts is None:
                click.echo(f"{self.get_voltage():.3f}")
            else:
                self.set_voltage(volts)

        @base.command()
        @click.argument("state", type=click.Choice(["on", "off"]), required=False)
        def output(state: str | None) -> None:
            """Print whether the output is on, or switch it on or off."""
            if state is None:
                click.echo("on" if self.get_output() else "off")
            else:
                self.set_output(state == "on")

        @base.command()
        @click.option("--count", "-n", type=click.IntRange(1, 10_000), default=1, show_default=True, help="Readings")
        @click.option("--interval", "-i", type=click.FloatRange(0, 60), default=1.0, show_default=True, help="Seconds")
        def measure(count: int, interval: float) -> None:
            """Print measurements of the output's voltage and current."""
            for reading in self.measure_stream(count, interval):
                click.echo(f"voltage={reading.voltage:.3f} V  current={reading.current:.3f} A")

        @base.command()
        def state() -> None:
            """Show the driver's address, connection and running streams."""
            s = self.state()
            click.echo(f"address={s.address} connected={'yes' if s.connected else 'no'} streams={s.streams}")

        @base.command()
        @click.argument("command")
        def query(command: str) -> None:
            """Send an SCPI COMMAND through the driver; print a query's answer."""
            # Escaped: an instrument's answer is untrusted bytes, and a terminal obeys control sequences.
            if answer := self.query(command):
                click.echo(printable(answer))

        @base.command()
        @click.argument("lines", nargs=-1)
        @click.option("--timeout", "-t", type=click.FloatRange(0.1, 60), default=5.0, show_default=True, help="Seconds")
        def console(lines: tuple[str, ...], timeout: float) -> None:
            """Send each SCPI LINE (or each line of stdin) to the raw console; print each query's answer."""
            source = lines or (line.rstrip("\n") for line in sys.stdin)
            try:
                with self.console(timeout) as raw:
                    for line in source:
                        if (answer := raw.exchange(line)) is not None:
                            click.echo(printable(answer))
            except (TimeoutError, ConnectionError) as e:  # raised here, on the client: not a DriverError
                raise click.ClickException(str(e)) from None

        return base


class LineConsole:
    """The instrument's raw SCPI interface: `exchange` sends one line and returns the answer of a query."""

    def __init__(self, stream: Any, portal: BlockingPortal, timeout: float) -> None:
        self._stream = stream
        self._lines = BufferedByteReceiveStream(stream)
        self._portal = portal
        self._timeout = timeout
        self._out_of_step = False

    def exchange(self, line: str) -> str | None:
        """Send `line`; return its answer if it is a query (has a '?'), None for settings (they send none)."""
        if not line.isprintable() or not line.isascii() or not 0 < len(line) <= COMMAND_MAX:
            raise ValueError(f"a console line is 1 to {COMMAND_MAX} printable ASCII characters, got {line[:50]!r}")
        if header := protection_change(line):  # the driver would refuse it too, by closing the console
            raise ValueError(f"{header} would change the over-voltage protection, which the bench's max_voltage sets")
        if self._out_of_step:
            raise ValueError("an earlier answer never came: reopen the console")
        if "?" not in line:
            self._portal.call(self._send, line)
            return None
        # One call into the client's event loop per exchange, not one per chunk.
        return self._portal.call(self._exchange, line)

    async def check_open(self) -> None:
        """Raise ConnectionError, with the driver's reason, if the driver could not open the console."""
        # In Jumpstarter 0.9 a byte stream the driver failed to open still "opens" on the client, over a gRPC call
        # that has already ended; its status details carry the driver's error.
        call = getattr(getattr(self._stream, "stream", None), "context", None)
        if call is not None and call.done():
            raise ConnectionError(f"the console did not open: {await call.details()}")

    async def _send(self, line: str) -> None:
        try:
            await self._stream.send(line.encode() + b"\n")
        except Exception:
            await self.check_open()
            raise ConnectionError("the console closed") from None

    async def _exchange(self, line: str) -> str:
        try:
            await self._stream.send(line.encode() + b"\n")
            with anyio.fail_after(self._timeout):
                answer = await self._lines.receive_until(b"\n", ANSWER_MAX)
            if len(answer) > ANSWER_MAX:  # receive_until returns a longer line that arrived in one piece
                raise anyio.DelimiterNotFound(ANSWER_MAX)
        except TimeoutError:
            self._out_of_step = True  # a late answer would be taken for the next one
            raise TimeoutError(f"no answer to {line!r} within {self._timeout:g} s") from None
        except anyio.DelimiterNotFound:
            self._out_of_step = True
            raise ConnectionError(f"the answer to {line!r} is longer than {ANSWER_MAX} bytes") from None
        except Exception:
            await self.check_open()
            raise ConnectionError("the console closed") from None
        return answer.decode(errors="replace").removesuffix("\r")
