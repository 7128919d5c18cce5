"""ExampleBoard: a *parent driver*. Its children are declared in the exporter config; it checks them and adds one.

Jumpstarter 0.9 builds an entry's `children:` first and passes them to the parent as `children=`, a
dict of driver instances. A parent checks them in `__post_init__` (upstream's UbootConsole does), can
build children of its own (upstream's Dutlink does), and keeps `super()` in `reset()` / `close()`:
that is the only way the children's lifecycle runs. Clients reach children by name
(`j board device idn`, `client.board.power.on()`), and the board's client combines them in workflows.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncGenerator, Callable
from typing import Annotated, Any

import anyio
from anyio import to_thread
from jumpstarter.driver import Driver, export
from jumpstarter_driver_power.common import PowerReading
from jumpstarter_driver_power.driver import PowerInterface
from pydantic import ConfigDict, Field
from pydantic.dataclasses import dataclass

from ..device.interface import PowerSupplyInterface
from ..validation import names_its_config_errors, validate
from .common import BoardTiming

CHILDREN = ("device", "power")
POLL_SECONDS = 0.2
"""How long power_cycle waits between two *IDN? attempts (less near the deadline; each attempt is bounded by what
is left of the wait)."""
OffSeconds = Annotated[float, Field(ge=0, le=60)]
ReadyTimeout = Annotated[float, Field(gt=0, le=600)]


@names_its_config_errors
@dataclass(kw_only=True, config=ConfigDict(extra="forbid"))
class ExampleBoard(Driver):
    """A bench: a power supply (`device`) and a power switch (`power`: the supply's output, unless configured)."""

    off_seconds: float = Field(default=1.0, ge=0, le=60)
    """How long power_cycle keeps the power off."""
    ready_timeout: float = Field(default=10.0, gt=0, le=600)
    """How long power_cycle waits, after power on, for the device to answer."""

    def __post_init__(self) -> None:
        super().__post_init__()
        # A wrong or missing child is a config error that names it, when the exporter starts: not a confusing
        # failure at the first call. Unknown names are refused too (a typo would leave a child unused).
        for name in self.children:
            if name not in CHILDREN:
                raise ValueError(f"children: unknown child {name!r}: an ExampleBoard has {' and '.join(CHILDREN)}")
        device = self.children.get("device")
        if device is None:
            raise ValueError(
                "children: `device` is missing: declare a power supply driver under the board's `children:` "
                "(type: jumpstarter_driver_template.device.driver.ExampleDevice)"
            )
        if not isinstance(device, PowerSupplyInterface):
            raise ValueError(f"children: `device` must be a PowerSupplyInterface driver, got {type(device).__name__}")
        power = self.children.get("power")
        if power is None:
            # Not configured: build it. It switches the supply's output through the supply's own driver, so
            # one instrument is driven over one connection, whichever child a client uses.
            self.children["power"] = DeviceOutputPower(device=device)
        elif not isinstance(power, PowerInterface):
            raise ValueError(f"children: `power` must be a PowerInterface driver, got {type(power).__name__}")
        # One power-cycle at a time: two overlapping ones would cut each other's off time short, and both report
        # success for a device that was never off for as long as asked.
        self._cycling = anyio.Lock()

    @classmethod
    def client(cls) -> str:
        """Import path of the client class: the client side loads it by this name."""
        return "jumpstarter_driver_template.board.client.ExampleBoardClient"

    # Bench-specific knowledge lives in the exporter config; the client's workflow asks for it.
    @export
    async def timing(self) -> BoardTiming:
        """How this bench power-cycles (off time, readiness timeout)."""
        return BoardTiming(off_seconds=self.off_seconds, ready_timeout=self.ready_timeout)

    # A workflow across the children runs here, in the driver, not in the client: one lock serializes it for
    # every client, and one deadline bounds the whole wait (each attempt gets what is left of it).
    @export
    @validate
    async def power_cycle(self, off_seconds: OffSeconds | None = None, timeout: ReadyTimeout | None = None) -> str:
        """Power off, wait, power on, then ask *IDN? until the device answers; return its answer."""
        off_seconds = self.off_seconds if off_seconds is None else off_seconds
        timeout = self.ready_timeout if timeout is None else timeout
        # Checked in __post_init__: a PowerInterface and a PowerSupplyInterface driver.
        power: Any = self.children["power"]
        device: Any = self.children["device"]
        async with self._cycling:
            await _call(power.off)
            await anyio.sleep(off_seconds)
            await _call(power.on)
            deadline = anyio.current_time() + timeout
            last = "none (no attempt ended before the deadline)"
            while (left := deadline - anyio.current_time()) > 0:
                try:
                    with anyio.fail_after(left) as attempt:  # the device's exchange takes its timeout from this
                        return str(await device.identify())
                except (NotImplementedError, ValueError):
                    await _call(power.off)
                    raise  # not a device still booting: asking again cannot help
                except Exception as e:  # not answering yet (refused, timed out, garbage): ask again
                    # An attempt the deadline cut before it could end (on a busy machine, before it even sent)
                    # says nothing about the device: the error of the one before it does.
                    if not attempt.cancelled_caught:
                        last = str(e) or type(e).__name__
                # Closer to the deadline, ask more often: a device ready just before it is found ready.
                await anyio.sleep(min(POLL_SECONDS, max((deadline - anyio.current_time()) / 2, 0.01)))
            # A device that did not come up is left off, not half-booted and powered while nobody watches it.
            try:
                await _call(power.off)
                after = "its power is off again"
            except Exception as e:
                after = f"switching its power off failed too: {e}"
            raise TimeoutError(
                f"the device did not answer *IDN? within {timeout:g} s after power on; {after}; last error: {last}"
            )

    # Driver.reset()/close() pass the lease's start and end down to the children: a parent that overrides
    # them and forgets super() leaves the power supply's output on and its connection open between leases.
    def reset(self) -> None:
        """Lease start: reset every child (the supply's output goes off)."""
        super().reset()
        self.logger.debug("lease start: reset %s", ", ".join(self.children))

    def close(self) -> None:
        """Lease end: close every child."""
        self.logger.debug("lease end: closing %s", ", ".join(self.children))
        super().close()


async def _call(method: Callable[[], Any]) -> None:
    """Call a child's method in-process: await an async one; run a sync one (upstream's are) in a worker thread."""
    if inspect.iscoroutinefunction(method):
        await method()
    else:
        await to_thread.run_sync(method)


@dataclass(kw_only=True, config=ConfigDict(extra="forbid", arbitrary_types_allowed=True))
class DeviceOutputPower(PowerInterface, Driver):
    """Upstream's PowerInterface over a power supply's output: `j board power on/off/read` with upstream's client."""

    device: PowerSupplyInterface
    """The supply whose output this switches: its driver, called in-process (same connection, same lock)."""

    @export
    async def on(self) -> None:
        """Switch the supply's output on."""
        await self.device.set_output(True)

    @export
    async def off(self) -> None:
        """Switch the supply's output off."""
        await self.device.set_output(False)

    # Upstream's `j board power read` reads the stream to the end for each reading: it must end.
    @export
    async def read(self) -> AsyncGenerator[PowerReading, None]:
        """One reading of the output's voltage and current."""
        measurement = await self.device.measure()
        yield PowerReading(voltage=measurement.voltage, current=measurement.current)
