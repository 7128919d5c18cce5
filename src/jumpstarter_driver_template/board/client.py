"""ExampleBoardClient: a client that combines its children (power switch, power supply) in a workflow.

It subclasses upstream's CompositeClient, which makes the children attributes (`self.power`,
`self.device`), and our BaseClient. Never import the drivers here: clients install without them.
"""

from __future__ import annotations

import time

import click
from jumpstarter.client.base import StubDriverClient
from jumpstarter.client.core import DriverError, DriverInvalidArgument, DriverMethodNotImplemented
from jumpstarter_driver_composite.client import CompositeClient

from ..base_client import BaseClient, driver_group
from .common import BoardTiming

POLL_SECONDS = 0.2
"""How often power_cycle asks the device whether it is back."""


class ExampleBoardClient(CompositeClient, BaseClient):
    """Client for ExampleBoard: its children by name (`power`, `device`), and workflows across them."""

    def timing(self) -> BoardTiming:
        """How this bench power-cycles, from the exporter config."""
        return BoardTiming.model_validate(self.call("timing"))

    def power_cycle(self, off_seconds: float | None = None, timeout: float | None = None) -> str:
        """Power off, wait, power on, then wait until the device answers *IDN?; return its answer."""
        timing = self.timing()
        off_seconds = timing.off_seconds if off_seconds is None else off_seconds
        self.power.off()
        time.sleep(off_seconds)
        self.power.on()
        return self.wait_until_ready(timing.ready_timeout if timeout is None else timeout)

    def wait_until_ready(self, timeout: float) -> str:
        """Ask the device *IDN? until it answers, for at most `timeout` seconds; return its answer."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self.device.identify()
            except (DriverInvalidArgument, DriverMethodNotImplemented):
                raise  # not a device still booting: asking again cannot help
            except DriverError as e:  # not answering yet (refused, timed out, garbage): ask again
                if time.monotonic() + POLL_SECONDS > deadline:
                    raise TimeoutError(
                        f"the device did not answer *IDN? within {timeout:g} s after power on; last error: {e.message}"
                    ) from None
            time.sleep(POLL_SECONDS)

    def cli(self) -> click.Group:
        """`j board ...`: each child's commands under its name, and the board's workflows."""

        @driver_group(self)
        def base() -> None:
            """Bench: a power supply and a power switch"""

        for name, child in self.children.items():
            if isinstance(child, StubDriverClient):
                continue  # its client is not installed here: any attribute of a stub raises ImportError
            if callable(commands := getattr(child, "cli", None)):
                base.add_command(commands(), name)

        @base.command()
        @click.option("--off-seconds", type=click.FloatRange(0, 60), help="Seconds off  [default: from the config]")
        @click.option("--timeout", type=click.FloatRange(0.1, 600), help="Seconds to wait  [default: from the config]")
        def power_cycle(off_seconds: float | None, timeout: float | None) -> None:
            """Power off and on, wait until the device answers, print its identity."""
            try:
                click.echo(self.power_cycle(off_seconds, timeout))
            except TimeoutError as e:  # raised here, on the client: not a DriverError
                raise click.ClickException(str(e)) from None

        return base
