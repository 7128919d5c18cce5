"""Template: your driver's client. Tests and `j template ...` call the driver through it.

This module runs where tests and `j` run, which may have none of the exporter's dependencies:
never import `driver` here.
"""

from __future__ import annotations

from collections.abc import Generator
from contextlib import closing

import click

from .base_client import BaseClient, driver_group


class TemplateClient(BaseClient):
    """Client for Template: a typed method for each exported method, and the `j` commands."""

    def hello(self, name: str) -> str:
        """Greet NAME on the device."""
        return self.call("hello", name)

    def count(self, count: int, interval: float = 0.5) -> Generator[int, None, None]:
        """Yield 0 to count-1 as the device produces them, one every interval seconds."""
        # Numbers cross gRPC as floats: give callers the int they expect.
        with closing(self.streamingcall("count", count, interval)) as numbers:
            for number in numbers:
                yield int(number)

    def cli(self) -> click.Group:
        """The `j` commands; each docstring is its `--help` text."""

        @driver_group(self)
        def base() -> None:
            """Template driver"""

        @base.command()
        @click.argument("name")
        def hello(name: str) -> None:
            """Greet NAME."""
            click.echo(self.hello(name))

        @base.command()
        # Bounded by default: `j template count` ends on its own, so scripts, hooks and agents can call it.
        @click.option("--count", "-n", type=click.IntRange(0, 1000), default=5, show_default=True, help="How many")
        @click.option(
            "--interval", "-i", type=click.FloatRange(0, 60), default=0.5, show_default=True, help="Seconds between"
        )
        def count(count: int, interval: float) -> None:
            """Print numbers as the device counts."""
            for number in self.count(count, interval):
                click.echo(number)

        return base
