"""The storage mux's client: upstream's StorageMuxFlasherClient, plus what this driver adds.

Upstream's client gives `flash`, `dump`, `host`, `dut`, `off` and their `j storage` commands. This
subclass adds `state` (upstream's interface has no way to tell a card holding a whole image from
one a failed write left half-written) and registers `j storage write-local-file`, which upstream
0.9 declares with `@base.command` without parentheses, so it never reaches the command line. An
exporter running this driver still serves clients that only have upstream's client: the extra
method is all they miss.
"""

from __future__ import annotations

from typing import Any

import click
from jumpstarter_driver_opendal.client import StorageMuxFlasherClient

from .common import StorageState


class ExampleStorageMuxClient(StorageMuxFlasherClient):
    """Upstream's storage mux client, with the card's state and `j storage write-local-file`."""

    def state(self) -> StorageState:
        """Report the card's side, whether it holds a whole image, and the call in progress."""
        return StorageState.model_validate(self.call("state"))

    def write(self, handle: Any) -> None:
        """Write the resource `handle` onto the card, on the host side (flash and write_local_file use it)."""
        super().write(handle)

    def read(self, handle: Any) -> None:
        """Read the whole card, on the host side, into the resource `handle` (dump and read_local_file use it)."""
        super().read(handle)

    # StorageMuxFlasherClient.cli() takes no argument, but mypy compares with its other base's cli(base).
    def cli(self) -> click.Group:  # type: ignore[override]
        """Upstream's `j storage` commands, plus `state` and `write-local-file`."""
        base = super().cli()

        @base.command()
        def state() -> None:
            """Show the card's side, what it holds, and the call in progress."""
            current = self.state()
            click.echo(
                f"side={current.side} image={current.image} written={current.written}"
                + (f" operation={current.operation}" if current.operation else "")
                + (f" error={current.error}" if current.error else "")
            )

        @base.command(name="write-local-file")
        @click.argument("file", type=click.Path(exists=True, dir_okay=False))
        def write_local_file(file: str) -> None:
            """Write FILE onto the card, which must be on the host side (`j storage host` first)."""
            self.write_local_file(file)

        return base
