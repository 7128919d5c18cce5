"""ExamplePower: a *standard interface*. Implement an upstream interface and reuse its client.

Upstream's `PowerInterface` declares `on`, `off` and `read`, and names upstream's `PowerClient` as
the client: `j power on/off/read` and every test helper for power switches work with this driver
without a line of client code here.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import field

import anyio
from jumpstarter.driver import Driver, export
from jumpstarter_driver_power.common import PowerReading
from jumpstarter_driver_power.driver import PowerInterface
from pydantic import ConfigDict, Field
from pydantic.dataclasses import dataclass

from ..commands import Command, run_command
from ..validation import names_its_config_errors, validate


# Exporter YAML `config:` keys become keyword arguments of the driver dataclass. `extra="forbid"`
# turns a typo into an error that names the key; pydantic checks every type. A plain stdlib
# @dataclass would accept both silently.
@names_its_config_errors
@dataclass(kw_only=True, config=ConfigDict(extra="forbid"))
class ExamplePower(PowerInterface, Driver):
    """A power switch: simulated, or backed by the commands you already use (uhubctl, a relay script...)."""

    voltage: float = Field(default=5.0, ge=0)
    """Nominal voltage reported by `read()` while on."""
    current: float = Field(default=1.0, ge=0)
    """Nominal current reported by `read()` while on."""
    on_command: Command | None = None
    """Argument list run by `on()`, e.g. ["uhubctl", "-l", "1-1", "-p", "2", "-a", "on"]. None: simulate.
    It runs in a process group of its own: on timeout, when the client goes away mid-call, or when the
    exporter stops, the command and every process it started get SIGTERM, then SIGKILL."""
    off_command: Command | None = None
    """Argument list run by `off()`, like on_command. None: simulate."""
    command_timeout: float = Field(default=30.0, gt=0)
    """Seconds a command may run before the call fails with DEADLINE_EXCEEDED (and the command is ended)."""

    _powered: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        # Several clients may switch at once: one command at a time, so the state matches the hardware.
        self._switching = anyio.Lock()

    # No `client()` here: PowerInterface.client() already names upstream's PowerClient.

    # An `async def` runs on the exporter's event loop: it must never block. The command runner
    # waits for the command without blocking, so other calls keep being served meanwhile.
    # @validate: a call with arguments is INVALID_ARGUMENT naming them (without it: UNKNOWN, a TypeError).
    @export
    @validate
    async def on(self) -> None:
        """Power on the device."""
        async with self._switching:
            if self.on_command is not None:
                await run_command("on_command", self.on_command, self.command_timeout)
            self._powered = True  # only once the command succeeded: a failure leaves the state as it was
        self.logger.info("power on")

    @export
    @validate
    async def off(self) -> None:
        """Power off the device."""
        async with self._switching:
            if self.off_command is not None:
                await run_command("off_command", self.off_command, self.command_timeout)
            self._powered = False
        self.logger.info("power off")

    # An async generator becomes a *streaming call*: each `yield` is one message to the client.
    # It must end: upstream's `j power read` iterates `read()` to the end for every reading.
    @export
    @validate
    async def read(self) -> AsyncGenerator[PowerReading, None]:
        """Read the current power draw (one reading)."""
        if self._powered:
            yield PowerReading(voltage=self.voltage, current=self.current)
        else:
            yield PowerReading(voltage=0.0, current=0.0)
