"""ExampleDevice: a driver that talks to a real device, a bench power supply speaking SCPI, through pyvisa.

Read top to bottom: config, the one shared session, unary calls, a streaming call, a byte stream,
then the lease lifecycle. scpi.py wraps pyvisa for the driver's worker threads; simulator.py is an
instrument for development and tests; interface.py declares what this driver and
ExampleDeviceModel (model.py) both export.
"""

from __future__ import annotations

import math
import reprlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import field
from typing import TypeVar

import anyio
import pyvisa.rname
from anyio import to_thread
from anyio.abc import ByteStream
from jumpstarter.driver import Driver, export, exportstream
from pydantic import ConfigDict, Field
from pydantic.dataclasses import dataclass

from ..validation import names_its_config_errors, validate
from .common import COMMAND_MAX, Command, DeviceState, Measurement, Volts, protection_change
from .interface import PowerSupplyInterface
from .scpi import DeviceError, ScpiSession
from .simulator import Simulator

T = TypeVar("T")


# Exporter YAML `config:` keys become keyword arguments: `extra="forbid"` turns a typo into an error
# naming the key, and every value has bounds.
@names_its_config_errors
@dataclass(kw_only=True, config=ConfigDict(extra="forbid"))
class ExampleDevice(PowerSupplyInterface, Driver):
    """A bench power supply speaking SCPI through pyvisa: one shared session, timeouts, its protection, a safe state."""

    # `resource:` in the YAML; named otherwise here because Driver.resource() is the framework's helper for
    # resources a client sends (uploads), which a field of that name would hide.
    visa_resource: str | None = Field(default=None, alias="resource", min_length=1, max_length=256)
    """The instrument's VISA resource string: TCPIP::192.168.1.50::5025::SOCKET, TCPIP::host::INSTR,
    ASRL/dev/ttyUSB0::INSTR, USB0::0x2A8D::0x1102::MY1234::INSTR. Required unless `simulator` is true."""
    simulator: bool = False
    """Start a simulated instrument inside the exporter (127.0.0.1, a free port) and drive it: for development."""
    timeout: float = Field(default=2.0, gt=0, le=60)
    """Seconds the instrument has to answer one command; then the call fails with DEADLINE_EXCEEDED."""
    connect_timeout: float = Field(default=2.0, gt=0, le=60)
    """Seconds opening a session may take."""
    max_voltage: float = Field(default=30.0, ge=0, le=30)
    """The bench's limit (what the device under test tolerates): programmed as the instrument's over-voltage
    protection, so that nothing sent to it, through any method or the console, can set more."""

    _closed: bool = field(default=False, init=False)
    _fresh: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        # Checks that involve several keys go here: pydantic runs "after" validators only after __post_init__,
        # which would have started the simulator already.
        if self.simulator and self.visa_resource is not None:
            raise ValueError("simulator: true starts its own instrument on 127.0.0.1: remove resource")
        if not self.simulator and self.visa_resource is None:
            raise ValueError("resource: required (the instrument's VISA resource string), unless simulator: true")
        if self.visa_resource is not None:
            pyvisa.rname.parse_resource_name(self.visa_resource)  # InvalidResourceName: a ValueError naming it
        self._simulator: Simulator | None = None
        if self.simulator:
            self._simulator = Simulator().start()
            self.visa_resource = self._simulator.resource
            self.logger.info("simulated instrument listening on %s", self.visa_resource)
        assert self.visa_resource is not None
        self._scpi = ScpiSession(self.visa_resource, self.timeout, self.connect_timeout, self._protect, self.logger)
        # One session serves every client of this exporter. Its exchanges are blocking (pyvisa), so they run in
        # worker threads; the lock queues callers on the event loop, one exchange at a time, so 50 waiting clients
        # hold no worker threads (anyio has 40) and never read each other's answers.
        self._lock = anyio.Lock()

    # No `client()` here: PowerSupplyInterface.client() names ExampleDeviceClient.

    # Every exchange: take the lock, then run the blocking steps in a worker thread, bounded by the caller's
    # deadline (a board's power-cycle has one) and the instrument's timeout per command: a TimeoutError reaches
    # the client as DEADLINE_EXCEEDED, and an exchange that did not end cleanly closes the session.
    async def _exchange(self, steps: Callable[[ScpiSession], T]) -> T:
        async with self._lock:
            self._fresh = False
            seconds = anyio.current_effective_deadline() - anyio.current_time()
            return await to_thread.run_sync(self._scpi.run, steps, seconds)

    async def _query(self, command: str) -> str:
        return await self._exchange(lambda scpi: scpi.query(command))

    async def _set(self, command: str) -> None:
        """A setting: no answer, so the error queue says whether the instrument took it."""

        def steps(scpi: ScpiSession) -> None:
            scpi.write(command)
            scpi.check(command)

        await self._exchange(steps)

    def _number(self, command: str, answer: str) -> float:
        """Parse a number the instrument answered; nonsense is a DeviceError, never a ValueError (INVALID_ARGUMENT)."""
        try:
            value = float(answer)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value < 0:
            answered = reprlib.repr(answer)
            raise DeviceError(f"{self.visa_resource} answered {command!r} with {answered}, expected a number")
        return value

    def _protect(self, scpi: ScpiSession) -> None:
        """Program the over-voltage protection at max_voltage, and check it took: at each session's start."""
        command = f"VOLT:PROT {self.max_voltage:.3f}"
        scpi.write(f"*CLS;:{command}")  # *CLS: errors already queued are not this command's
        scpi.check(command)
        level = self._number("VOLT:PROT?", answer := scpi.query("VOLT:PROT?"))
        if abs(level - self.max_voltage) > 1e-3:
            raise DeviceError(f"{self.visa_resource} kept its protection at {answer} V after {command!r}")

    # Unary calls. `async def`: they run on the exporter's event loop and wait without blocking it.
    # @validate checks arguments against their annotations (INVALID_ARGUMENT, naming the argument).
    @export
    async def identify(self) -> str:
        """The instrument's identity (maker, model, serial, firmware)."""
        answer = await self._query("*IDN?")
        if len(answer.split(",")) != 4:
            raise DeviceError(f"{self.visa_resource} answered '*IDN?' with {reprlib.repr(answer)}, expected 4 fields")
        return answer

    @export
    @validate
    async def set_voltage(self, volts: Volts) -> None:
        """Set the output voltage setpoint."""
        if volts > self.max_voltage:  # a limit from the config, so it cannot be in the annotation
            raise ValueError(f"volts: {volts:g} V is above this bench's max_voltage of {self.max_voltage:g} V")
        await self._set(f"VOLT {volts:.3f}")

    @export
    async def get_voltage(self) -> float:
        """The output voltage setpoint."""
        return self._number("VOLT?", await self._query("VOLT?"))

    @export
    @validate
    async def set_output(self, enabled: bool) -> None:
        """Switch the output on or off."""
        await self._set("OUTP ON" if enabled else "OUTP OFF")

    @export
    async def get_output(self) -> bool:
        """Whether the output is on."""
        answer = await self._query("OUTP?")
        if answer not in ("0", "1"):
            raise DeviceError(f"{self.visa_resource} answered 'OUTP?' with {reprlib.repr(answer)}, expected 0 or 1")
        return answer == "1"

    @export
    async def measure(self) -> Measurement:
        """Measure voltage and current at the output."""
        # Two queries in one exchange (one worker-thread hop): no other caller's command comes between them.
        volts, amps = await self._exchange(lambda scpi: (scpi.query("MEAS:VOLT?"), scpi.query("MEAS:CURR?")))
        return Measurement(voltage=self._number("MEAS:VOLT?", volts), current=self._number("MEAS:CURR?", amps))

    @export
    @validate
    async def query(self, command: Command) -> str:
        """Send one SCPI line: a query's answer, as it is; a setting's errors from the instrument's queue."""
        if header := protection_change(command):
            raise ValueError(f"command: {header} would change the over-voltage protection, which max_voltage sets")
        if "?" not in command:  # settings only (a '?' in a string parameter would be mistaken for a query)
            await self._set(command)
            return ""

        def steps(scpi: ScpiSession) -> str:
            try:
                return scpi.query(command)
            except TimeoutError:
                # A query the instrument refused sends no answer: its error queue says why (read on a new session:
                # the late answer, if any, must not be read as the queue's).
                scpi.reopen()
                scpi.check(command)
                raise

        return await self._exchange(steps)

    @export
    async def state(self) -> DeviceState:
        """What the driver is doing: its resource, its session, its running streams."""
        return DeviceState(address=self.visa_resource or "", connected=self._scpi.connected, streams=self._streams)

    # A byte stream, the way consoles are exported: the instrument's raw line interface on a connection of its
    # own (like a terminal), for `j device console` and anything the driver does not model. A raw socket, so
    # only for SOCKET resources; lines that would lift the protection are refused on the way in.
    @exportstream
    @asynccontextmanager
    async def console(self) -> AsyncIterator[ByteStream]:
        """A raw connection to the instrument's SCPI line interface (TCPIP SOCKET resources)."""
        assert self.visa_resource is not None
        parsed = pyvisa.rname.parse_resource_name(self.visa_resource)
        if not isinstance(parsed, pyvisa.rname.TCPIPSocket):
            resource = self.visa_resource
            raise NotImplementedError(f"the console needs a TCPIP::host::port::SOCKET resource, not {resource}")
        try:
            with anyio.fail_after(self.connect_timeout):
                stream = await anyio.connect_tcp(parsed.host_address, int(parsed.port))
        except TimeoutError:
            seconds = self.connect_timeout
            raise TimeoutError(f"cannot connect to {self.visa_resource}: no answer within {seconds:g} s") from None
        except OSError as e:
            reason = e.__cause__ if isinstance(e.__cause__, OSError) else e  # anyio wraps the socket's error
            raise DeviceError(f"cannot connect to {self.visa_resource}: {reason.strerror or reason}") from None
        async with stream, GuardedStream(stream, self.logger.warning) as guarded:
            yield guarded

    # Lifecycle: the exporter calls reset() when a lease starts and close() when it ends (`jmp run` without a
    # controller: one lease for its whole life; `jmp shell --exporter-config`: one per shell). A device must be
    # left safe between leases: output off, protection set, session released. Both are sync and run on the
    # exporter's event loop thread; pyvisa is blocking, so they call the session directly, bounded by its timeouts.
    def reset(self) -> None:
        """Lease start: reset the instrument (*RST: output off, 0 V), clear its errors, program its protection."""
        super().reset()
        if self._fresh:
            # A `ref:` to this driver passes the lease's start on once more: nothing happened since the first.
            self.logger.debug("lease start: %s already reset", self.visa_resource)
            return
        self._fresh = True

        def steps(scpi: ScpiSession) -> None:
            scpi.write("*RST;*CLS")
            if (done := scpi.query("*OPC?")) != "1":  # *RST takes time on a real instrument: wait until done
                raise DeviceError(f"{self.visa_resource} answered '*OPC?' with {reprlib.repr(done)}, expected 1")
            self._protect(scpi)  # *RST set it to the maximum
            if (output := scpi.query("OUTP?")) != "0":
                raise DeviceError(f"{self.visa_resource} kept its output on after *RST (OUTP? answered {output!r})")

        self._lifecycle("lease start", steps)

    def close(self) -> None:
        """Lease end: switch the output off, release the session, stop the simulator. Never raises."""
        self._fresh = False  # the next lease starts with a reset of its own
        try:
            if not self._closed:  # a `ref:` to this driver closes it a second time
                self._closed = True

                def steps(scpi: ScpiSession) -> None:
                    scpi.write("OUTP OFF")
                    scpi.check("OUTP OFF")
                    if (output := scpi.query("OUTP?")) != "0":
                        raise DeviceError(f"{self.visa_resource} kept its output on (OUTP? answered {output!r})")

                self._lifecycle("lease end", steps)
                self._scpi.close()
                if self._simulator is not None:
                    self._simulator.stop()
        except Exception:
            # An exception here would stop the exporter from closing the drivers after this one.
            self.logger.exception("closing %s failed", self.visa_resource)
        super().close()

    def _lifecycle(self, when: str, steps: Callable[[ScpiSession], None]) -> None:
        """Run `steps` on a new session, bounded; log the outcome (an exception from reset() refuses the lease)."""
        self._scpi.drop()
        try:
            self._scpi.run(steps, self.connect_timeout + 8 * self.timeout)
        except Exception as e:
            self.logger.warning("%s: could not make %s safe: %s", when, self.visa_resource, e)
        else:
            self.logger.debug("%s: %s safe, output off", when, self.visa_resource)


class GuardedStream(ByteStream):
    """The console's stream with the protection guard: lines from the client that would change the protection are
    not sent to the instrument; the console closes instead (a raw stream has no way to answer "refused")."""

    def __init__(self, stream: ByteStream, warn: Callable[..., None]) -> None:
        self._stream = stream
        self._warn = warn
        self._partial = b""

    async def send(self, item: bytes) -> None:
        """Forward whole lines from the client, each checked first."""
        *lines, self._partial = (self._partial + item).split(b"\n")
        if len(self._partial) > COMMAND_MAX * 4:
            raise anyio.BrokenResourceError(f"console: a line longer than {COMMAND_MAX * 4} bytes")
        for line in lines:
            if header := protection_change(line.decode(errors="replace")):
                self._warn("console: refused %s, which would change the over-voltage protection: closing", header)
                await self._stream.aclose()
                raise anyio.BrokenResourceError(f"console: {header} refused")
        if lines:
            await self._stream.send(b"".join(line + b"\n" for line in lines))

    async def receive(self, max_bytes: int = 65536) -> bytes:
        """Bytes from the instrument, as they come."""
        return await self._stream.receive(max_bytes)

    async def send_eof(self) -> None:
        """Half-close towards the instrument."""
        await self._stream.send_eof()

    async def aclose(self) -> None:
        """Close the connection to the instrument."""
        await self._stream.aclose()
