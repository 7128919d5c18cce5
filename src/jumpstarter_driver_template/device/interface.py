"""PowerSupplyInterface: *your own interface*, for drivers of one kind of device that share one client.

Upstream does this for its standard devices (`PowerInterface` in jumpstarter-driver-power): an
abstract class that names the client and declares the exported methods. Here two drivers implement
it: ExampleDevice (an instrument on TCP) and ExampleDeviceModel (an in-memory model, no wire), and
ExampleDeviceClient works with either. A board (or a test) can ask for "a power supply" without
caring which.

The client's import path returned by `client()` and the method names and signatures below are a
contract between exporters and clients, which upgrade separately: rename a method or change what it
takes or returns, and an old client breaks against a new exporter (or the reverse). Add methods
freely (an old client ignores them); for a breaking change, define a new interface (and client).
"""

from __future__ import annotations

from abc import ABCMeta, abstractmethod
from collections.abc import AsyncGenerator

import anyio
from jumpstarter.driver import export

from ..validation import validate
from .common import Count, DeviceState, Interval, Measurement


class PowerSupplyInterface(metaclass=ABCMeta):
    """A bench power supply: a voltage setpoint, an output switch, measurements."""

    @classmethod
    def client(cls) -> str:
        """Import path of the client every implementation shares."""
        return "jumpstarter_driver_template.device.client.ExampleDeviceClient"

    @abstractmethod
    async def identify(self) -> str:
        """The instrument's identity (maker, model, serial, firmware)."""

    @abstractmethod
    async def set_voltage(self, volts: float) -> None:
        """Set the output voltage setpoint."""

    @abstractmethod
    async def get_voltage(self) -> float:
        """The output voltage setpoint."""

    @abstractmethod
    async def set_output(self, enabled: bool) -> None:
        """Switch the output on or off."""

    @abstractmethod
    async def get_output(self) -> bool:
        """Whether the output is on."""

    @abstractmethod
    async def measure(self) -> Measurement:
        """Measure voltage and current at the output."""

    # A method the interface implements once, on top of an abstract one: every implementation exports it (0.9
    # finds exported methods by their marker, inherited ones too). A streaming call: each `yield` is one message.
    # When the client leaves, gRPC cancels the call: the pending `await` raises and the generator ends.
    _streams: int = 0
    """Streaming calls running now (an implementation reports it in `state()`)."""

    @export
    @validate
    async def measure_stream(self, count: Count, interval: Interval) -> AsyncGenerator[Measurement, None]:
        """Measure `count` times, every `interval` seconds."""
        self._streams += 1
        try:
            for i in range(count):
                if i:
                    await anyio.sleep(interval)
                yield await self.measure()
        finally:
            self._streams -= 1

    @abstractmethod
    async def state(self) -> DeviceState:
        """What the driver is doing: its address, its connection, its running streams."""

    @abstractmethod
    async def query(self, command: str) -> str:
        """Send one protocol line and return the answer. An implementation without a protocol raises
        NotImplementedError, which the client receives as UNIMPLEMENTED."""
