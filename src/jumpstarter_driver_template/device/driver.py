"""ExampleDevice: a driver that talks to a real device, a bench power supply on TCP (a SCPI-like line protocol).

Read top to bottom: config, the one shared connection, unary calls, a streaming call, a byte
stream, then the lease lifecycle. simulator.py is the device for development and tests;
interface.py declares what this driver and ExampleDeviceModel (model.py) both export.
"""

from __future__ import annotations

import reprlib
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import field

import anyio
from anyio.abc import ByteStream
from jumpstarter.driver import Driver, export, exportstream
from pydantic import ConfigDict, Field, TypeAdapter
from pydantic.dataclasses import dataclass

from ..cancellation import to_completion
from ..lifecycle import run_async_bounded
from ..validation import names_its_config_errors, validate
from .common import Command, DeviceState, Measurement, Volts
from .connection import DeviceError, LineConnection
from .interface import PowerSupplyInterface
from .simulator import Simulator

VOLTS = TypeAdapter(Volts)
"""Parses a voltage the instrument answers; its ValidationError is a ValueError, which _answer_to converts."""


# Exporter YAML `config:` keys become keyword arguments: `extra="forbid"` turns a typo into an error
# naming the key, and every value has bounds.
@names_its_config_errors
@dataclass(kw_only=True, config=ConfigDict(extra="forbid"))
class ExampleDevice(PowerSupplyInterface, Driver):
    """A bench power supply on TCP: one shared connection, timeouts, reconnection, a safe state between leases."""

    host: str | None = Field(default=None, min_length=1, max_length=253)
    """The instrument's host name or address. Required unless `simulator` is true."""
    port: int | None = Field(default=None, ge=1, le=65535)
    """The instrument's TCP port (SCPI instruments use 5025). Required unless `simulator` is true."""
    simulator: bool = False
    """Start a simulated instrument inside the exporter (127.0.0.1, a free port) and drive it: for development."""
    timeout: float = Field(default=2.0, gt=0, le=60)
    """Seconds the instrument has to answer one command; then the call fails with DEADLINE_EXCEEDED."""
    connect_timeout: float = Field(default=2.0, gt=0, le=60)
    """Seconds a connection attempt may take."""
    max_voltage: float = Field(default=30.0, ge=0, le=30)
    """The bench's limit: set_voltage refuses more (what the device under test tolerates)."""

    _closed: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        # Checks that involve several keys go here: pydantic runs "after" validators only after __post_init__,
        # which would have started the simulator already.
        if self.simulator and (self.host is not None or self.port is not None):
            raise ValueError("simulator: true starts its own instrument on 127.0.0.1: remove host and port")
        if not self.simulator and (self.host is None or self.port is None):
            raise ValueError("host and port: both required (the instrument's address), unless simulator: true")
        self._connection: LineConnection | None = None
        self._simulator: Simulator | None = None
        if self.simulator:
            self._simulator = Simulator().start()
            self.host, self.port = self._simulator.host, self._simulator.port
            self.logger.info("simulated instrument listening on %s", self._address)
        # One connection serves every client of this exporter: the lock makes each request and its answer
        # one step, so concurrent calls never read each other's answers.
        self._lock = anyio.Lock()

    @property
    def _address(self) -> str:
        return f"{self.host}:{self.port}"

    # No `client()` here: PowerSupplyInterface.client() names ExampleDeviceClient.

    # The shared connection. Every exchange runs under `fail_after`: a TimeoutError reaches the client as
    # DEADLINE_EXCEEDED. Whatever interrupts an exchange (timeout, device error, the client leaving) drops the
    # connection: its answer may still arrive, and must not be read as the answer to the next command.
    async def _exchange(self, command: str, check: bool = True) -> str:
        async with self._lock:
            connection = await self._connected()
            try:
                with anyio.fail_after(self.timeout):
                    answer = await connection.exchange(command)
            except TimeoutError:
                self._drop(connection)
                # Always give a TimeoutError a message: an empty one reaches the client as "<no details>".
                raise TimeoutError(f"{self._address} did not answer {command!r} within {self.timeout:g} s") from None
            except BaseException:
                self._drop(connection)
                raise
        if check and answer.startswith("ERR"):
            raise DeviceError(f"{self._address} refused {command!r}: {reprlib.repr(answer)}")
        return answer

    async def _connected(self) -> LineConnection:
        """The shared connection: opened on first use, and again after the device closed it."""
        if self._connection is not None and not self._connection.usable():
            self.logger.info("%s closed the connection or sent unasked data: reconnecting", self._address)
            self._drop(self._connection)
        if self._connection is None:
            # In a task of its own, which stores the connection: gRPC's cancellation of a client leaving
            # mid-connect cuts through anyio's shields here, and would drop the socket the worker thread returns.
            await to_completion(self._connect)
        assert self._connection is not None
        return self._connection

    async def _connect(self) -> None:
        assert self.host is not None and self.port is not None  # checked in __post_init__
        self._connection = await LineConnection.open(self.host, self.port, self.connect_timeout)
        self.logger.debug("connected to %s", self._address)

    def _drop(self, connection: LineConnection) -> None:
        connection.close()
        if self._connection is connection:
            self._connection = None

    @contextmanager
    def _answer_to(self, command: str, answer: str, expected: str) -> Iterator[None]:
        """Parse a device's answer: a ValueError (pydantic's ValidationError is one) becomes a DeviceError."""
        try:
            yield
        except ValueError:
            # Left as ValueError, the client would get INVALID_ARGUMENT: its arguments were fine, the device was not.
            raise DeviceError(
                f"{self._address} answered {command!r} with {reprlib.repr(answer)}, expected {expected}"
            ) from None

    async def _expect_ok(self, command: str) -> None:
        answer = await self._exchange(command)
        if answer != "OK":
            raise DeviceError(f"{self._address} answered {command!r} with {reprlib.repr(answer)}, expected OK")

    # Unary calls. `async def`: they run on the exporter's event loop and wait without blocking it.
    # @validate checks arguments against their annotations (INVALID_ARGUMENT, naming the argument).
    @export
    async def identify(self) -> str:
        """The instrument's identity (maker, model, serial, firmware)."""
        answer = await self._exchange("*IDN?")
        if len(answer.split(",")) != 4:
            raise DeviceError(f"{self._address} answered '*IDN?' with {reprlib.repr(answer)}, expected 4 fields")
        return answer

    @export
    @validate
    async def set_voltage(self, volts: Volts) -> None:
        """Set the output voltage setpoint."""
        if volts > self.max_voltage:  # a limit from the config, so it cannot be in the annotation
            raise ValueError(f"volts: {volts:g} V is above this bench's max_voltage of {self.max_voltage:g} V")
        await self._expect_ok(f"VOLT {volts:.3f}")

    @export
    async def get_voltage(self) -> float:
        """The output voltage setpoint."""
        answer = await self._exchange("VOLT?")
        with self._answer_to("VOLT?", answer, "a voltage"):
            return VOLTS.validate_python(answer)

    @export
    @validate
    async def set_output(self, enabled: bool) -> None:
        """Switch the output on or off."""
        await self._expect_ok("OUTP ON" if enabled else "OUTP OFF")

    @export
    async def get_output(self) -> bool:
        """Whether the output is on."""
        answer = await self._exchange("OUTP?")
        if answer not in ("0", "1"):
            raise DeviceError(f"{self._address} answered 'OUTP?' with {reprlib.repr(answer)}, expected 0 or 1")
        return answer == "1"

    @export
    async def measure(self) -> Measurement:
        """Measure voltage and current at the output."""
        answer = await self._exchange("MEAS?")
        with self._answer_to("MEAS?", answer, "volts,amps"):
            volts, amps = answer.split(",")
            return Measurement(voltage=float(volts), current=float(amps))

    @export
    @validate
    async def query(self, command: Command) -> str:
        """Send one protocol line and return the answer as it is (for commands the driver has no method for)."""
        return await self._exchange(command, check=False)

    @export
    async def state(self) -> DeviceState:
        """What the driver is doing: its address, its connection, its running streams."""
        connected = self._connection is not None and self._connection.usable()
        return DeviceState(address=self._address, connected=connected, streams=self._streams)

    # A byte stream, the way consoles are exported: the instrument's raw line interface, on a connection of its
    # own (like a terminal), for `j device console` and anything the driver does not model.
    @exportstream
    @asynccontextmanager
    async def console(self) -> AsyncIterator[ByteStream]:
        """A raw connection to the instrument's line protocol."""
        assert self.host is not None and self.port is not None
        try:
            with anyio.fail_after(self.connect_timeout):
                stream = await anyio.connect_tcp(self.host, self.port)
        except TimeoutError:
            seconds = self.connect_timeout
            raise TimeoutError(f"cannot connect to {self._address}: no answer within {seconds:g} s") from None
        except OSError as e:
            reason = e.__cause__ if isinstance(e.__cause__, OSError) else e  # anyio wraps the socket's error
            raise DeviceError(f"cannot connect to {self._address}: {reason.strerror or reason}") from None
        async with stream:
            yield stream

    # Lifecycle: the exporter calls reset() when a lease starts and close() when it ends (`jmp run` without a
    # controller: one lease for its whole life; `jmp shell --exporter-config`: one per shell). A device must be
    # left safe between leases: output off, connection released.
    def reset(self) -> None:
        """Lease start: switch the output off and start over with a new connection."""
        super().reset()
        self._make_safe("lease start")

    def close(self) -> None:
        """Lease end: switch the output off, release the connection, stop the simulator. Never raises."""
        try:
            if not self._closed:  # a `ref:` to this driver closes it a second time
                self._closed = True
                self._make_safe("lease end")
                if self._simulator is not None:
                    self._simulator.stop()
        except Exception:
            # An exception here would stop the exporter from closing the drivers after this one.
            self.logger.exception("closing %s failed", self._address)
        super().close()

    def _make_safe(self, when: str) -> None:
        if self._connection is not None:
            self._drop(self._connection)  # sync: LineConnection can close without awaiting
        seconds = self.connect_timeout + self.timeout
        error = run_async_bounded(self._output_off, seconds)
        if error is None:
            self.logger.debug("%s: output of %s off", when, self._address)
        else:
            self.logger.warning("%s: could not switch the output of %s off: %s", when, self._address, error)

    async def _output_off(self) -> None:
        """Output off over a connection of its own, on the private event loop of run_async_bounded."""
        assert self.host is not None and self.port is not None
        connection = await LineConnection.open(self.host, self.port, self.connect_timeout)
        try:
            with anyio.fail_after(self.timeout):
                answer = await connection.exchange("OUTP OFF")
        except TimeoutError:
            raise TimeoutError(f"no answer to 'OUTP OFF' within {self.timeout:g} s") from None
        finally:
            connection.close()
        if answer != "OK":
            raise DeviceError(f"answered 'OUTP OFF' with {reprlib.repr(answer)}")
