"""ExampleDeviceModel: a second implementation of PowerSupplyInterface, an in-memory model with no wire.

It shares ExampleDeviceClient with ExampleDevice, so `j device ...` and every test written against the
client work with it too (conformance_test.py runs the same tests against both). Use one like it where
no instrument is needed: a board's tests, a laptop demo, a CI job.
"""

from __future__ import annotations

from dataclasses import field

from jumpstarter.driver import Driver, export
from pydantic import ConfigDict, Field
from pydantic.dataclasses import dataclass

from ..validation import names_its_config_errors, validate
from .common import Command, DeviceState, Measurement, Volts
from .interface import PowerSupplyInterface
from .simulator import IDN, LOAD_OHMS


@names_its_config_errors
@dataclass(kw_only=True, config=ConfigDict(extra="forbid"))
class ExampleDeviceModel(PowerSupplyInterface, Driver):
    """An in-memory power supply: the interface of ExampleDevice, without an instrument or a protocol."""

    max_voltage: float = Field(default=30.0, ge=0, le=30)
    """The bench's limit: set_voltage refuses more."""

    _voltage: float = field(default=0.0, init=False)
    _output: bool = field(default=False, init=False)

    def reset(self) -> None:
        """Lease start: output off."""
        super().reset()
        self._output = False

    def close(self) -> None:
        """Lease end: output off."""
        self._output = False
        super().close()

    @export
    async def identify(self) -> str:
        """The instrument's identity (maker, model, serial, firmware)."""
        return IDN.replace("SIM-0001", "MODEL-0001")

    @export
    @validate
    async def set_voltage(self, volts: Volts) -> None:
        """Set the output voltage setpoint."""
        if volts > self.max_voltage:
            raise ValueError(f"volts: {volts:g} V is above this bench's max_voltage of {self.max_voltage:g} V")
        self._voltage = volts

    @export
    async def get_voltage(self) -> float:
        """The output voltage setpoint."""
        return self._voltage

    @export
    @validate
    async def set_output(self, enabled: bool) -> None:
        """Switch the output on or off."""
        self._output = enabled

    @export
    async def get_output(self) -> bool:
        """Whether the output is on."""
        return self._output

    @export
    async def measure(self) -> Measurement:
        """Measure voltage and current at the output."""
        volts = self._voltage if self._output else 0.0
        return Measurement(voltage=volts, current=volts / LOAD_OHMS)

    @export
    async def state(self) -> DeviceState:
        """What the driver is doing: its address, its connection, its running streams."""
        return DeviceState(address="memory", connected=True, streams=self._streams)

    # A method this implementation cannot support: NotImplementedError reaches the client as UNIMPLEMENTED
    # (DriverMethodNotImplemented), which says "not this device" rather than "bad arguments" or "device failed".
    @export
    @validate
    async def query(self, command: Command) -> str:
        """Not supported: a model has no protocol to send lines to."""
        raise NotImplementedError("ExampleDeviceModel has no line protocol: query needs an instrument (ExampleDevice)")
