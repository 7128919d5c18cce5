"""ExampleBoardClient: a client that combines its children (power switch, power supply) in a workflow.

It subclasses upstream's CompositeClient, which makes the children attributes (`self.power`,
`self.device`), and our BaseClient. Never import the drivers here: clients install without them.
"""

from __future__ import annotations

import click
from jumpstarter.client.base import StubDriverClient
from jumpstarter.client.core import DriverError
from jumpstarter_driver_composite.client import CompositeClient

from ..base_client import BaseClient, driver_group
from .common import BoardTiming


class ExampleBoardClient(CompositeClient, BaseClient):
    """Client for ExampleBoard: its children by name (`power`, `device`), and workflows across them."""

    def timing(self) -> BoardTiming:
        """How this bench power-cycles, from the exporter config."""
        return BoardTiming.model_validate(self.call("timing"))

    def power_cycle(self, off_seconds: float | None = None, timeout: float | None = None) -> str:
        """Power off, wait, power on, then wait until the device answers *IDN?; return its answer.

        The driver runs it (one power-cycle at a time, whichever client asks); None: the bench's config.
        A device that does not answer within `timeout` is switched off again: DriverError (DEADLINE_EXCEEDED).
        """
        return self.call("power_cycle", off_seconds, timeout)

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
            except DriverError as e:  # a timeout's text carries the raw gRPC error ("Caused by"): not for a terminal
                raise click.ClickException(" ".join(e.message.split())) from None

        return base
