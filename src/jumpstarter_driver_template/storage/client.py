"""The storage mux's client: upstream's StorageMuxFlasherClient, with checked transfers and the card's state.

Upstream's client gives `flash`, `dump`, `host`, `dut`, `off` and their `j storage` commands. This subclass
keeps their names and arguments, and changes what a user would otherwise lose an image or a card to:

- it tells the driver the length of a local file, so that a write cut short is caught (driver.py, source.py);
- a missing local file fails here, in one line, before anything moves the card;
- `flash` lets the driver's `write` switch the card to the host (as upstream's real muxes do), so that a URL
  that answers 404 leaves the card where it was, and hands the card to the device only after a whole image;
- it adds `state` (upstream's interface cannot tell a whole image from a half-written one) and registers
  `j storage write-local-file`, which upstream 0.9 declares with `@base.command` without parentheses;
- every method an agent or `j --help` shows has a docstring and typed parameters.

An exporter running this driver still serves clients that only have upstream's client: their writes carry
no length, so an uncompressed image is reported `unverified`, and `state` is all they miss.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
from jumpstarter.common.exceptions import ArgumentError, FileNotFoundError
from jumpstarter.common.resources import PresignedRequestResource
from jumpstarter.streams.encoding import Compression
from jumpstarter_driver_opendal.adapter import OpendalAdapter
from jumpstarter_driver_opendal.client import StorageMuxFlasherClient, operator_for_path
from jumpstarter_driver_opendal.common import PathBuf
from opendal import Operator
from opendal.exceptions import Error as OpendalError
from opendal.exceptions import NotFound

from .common import StorageState


class ExampleStorageMuxClient(StorageMuxFlasherClient):
    """Upstream's storage mux client, with checked transfers, the card's state and `j storage write-local-file`."""

    def state(self) -> StorageState:
        """Report the card's side, whether it holds a whole image, and the call in progress."""
        return StorageState.model_validate(self.call("state"))

    def write(
        self,
        handle: Any,
        length: int | None = None,
        compression: Compression | None = None,
        require_verified: bool = False,
    ) -> StorageState:
        """Write the resource `handle` to the card (switched to the host first); `length`: bytes it must deliver."""
        return StorageState.model_validate(self.call("write", handle, length, compression, require_verified))

    def read(self, handle: Any) -> None:
        """Read the whole card (switched to the host first) into the resource `handle`."""
        self.call("read", handle)

    def write_file(self, operator: Operator, path: str, compression: Compression | None = None) -> StorageState:
        """Write the file `path` of an opendal `operator` to the card (switched to the host), its length checked."""
        try:
            # The async operator, as upstream's adapter uses: the sync one holds the GIL while it waits.
            metadata = self.portal.call(operator.to_async_operator().stat, path)
        except NotFound:
            raise FileNotFoundError(f"no image at {path}: the card was not touched") from None
        except OpendalError as e:
            raise ArgumentError(f"cannot write {path} to the card: {str(e).splitlines()[0]}") from None
        if metadata.mode.is_dir():
            raise ArgumentError(f"cannot write {path} to the card: it is a directory")
        # The file is sent as it is: the driver decompresses, so that it can check the format's end marker.
        with _one_error(), OpendalAdapter(client=self, operator=operator, path=path, mode="rb") as handle:
            return self.write(handle, metadata.content_length, compression)

    def read_file(self, operator: Operator, path: str) -> None:
        """Read the whole card (switched to the host first) into the file `path` of an opendal `operator`."""
        with _one_error(), OpendalAdapter(client=self, operator=operator, path=path, mode="wb") as handle:
            self.read(handle)

    def write_local_file(self, filepath: str | os.PathLike[str]) -> StorageState:
        """Write a local file to the card, switching it to the host; the card stays there (`dut()` hands it over)."""
        return self.write_file(Operator("fs", root="/"), str(Path(filepath).resolve()))

    def read_local_file(self, filepath: str | os.PathLike[str]) -> None:
        """Read the whole card into a local file, switching the card to the host; it stays there."""
        self.read_file(Operator("fs", root="/"), str(Path(filepath).resolve()))

    # One card, so one image: upstream's StorageMuxFlasherClient narrows FlasherClient.flash the same way.
    def flash(  # type: ignore[override]
        self,
        path: PathBuf,
        *,
        target: str | None = None,
        operator: Operator | None = None,
        compression: Compression | None = None,
        unverified_ok: bool = False,
    ) -> StorageState:
        """Write an image (a local file, or an http(s) URL the exporter downloads) and hand the card to the device.

        A URL whose server sends no length, and is not compressed, is refused unless `unverified_ok`: nothing
        would tell a download cut short from a whole one. The result is the card's state after the write.
        """
        if target is not None:
            raise ArgumentError(f"a storage mux has one card: target {target!r} is not supported")
        if isinstance(path, str) and path.startswith(("http://", "https://")):
            request = PresignedRequestResource(headers={}, url=path, method="GET").model_dump(mode="json")
            written = self.write(request, None, compression, require_verified=not unverified_ok)
        else:
            if operator is None:
                path, operator, _ = operator_for_path(path)
            written = self.write_file(operator, str(path), compression)
        # Only after a write that succeeded: a failed one left the card on the host, or where it was.
        self.dut()
        return written.model_copy(update={"side": "dut"})

    def dump(
        self,
        path: PathBuf,
        *,
        target: str | None = None,
        operator: Operator | None = None,
        compression: Compression | None = None,
    ) -> None:
        """Read the whole card into a file (compressed, if asked), then hand the card back to the device."""
        if target is not None:
            raise ArgumentError(f"a storage mux has one card: target {target!r} is not supported")
        if operator is None:
            path, operator, _ = operator_for_path(path)
        with (
            _one_error(),
            OpendalAdapter(
                client=self, operator=operator, path=str(path), mode="wb", compression=compression
            ) as handle,
        ):
            self.read(handle)
        if self.state().image != "incomplete":  # a half-written card stays on the host (the driver refuses it)
            self.dut()

    # StorageMuxFlasherClient.cli() takes no argument, but mypy compares with its other base's cli(base).
    def cli(self) -> click.Group:  # type: ignore[override]
        """Upstream's `j storage` commands, with a checked `flash`, plus `state` and `write-local-file`."""
        base = super().cli()

        @base.command()
        @click.argument("file")
        @click.option("--compression", type=click.Choice(Compression, case_sensitive=False))
        @click.option("--unverified-ok", is_flag=True, help="Write a URL that sends no length and is not compressed.")
        def flash(file: str, compression: Compression | None, unverified_ok: bool) -> None:
            """Write FILE (a path, or an http(s) URL the exporter downloads), then switch the card to the device."""
            written = self.flash(file, compression=compression, unverified_ok=unverified_ok)
            if written.image == "unverified":
                click.echo(f"Warning: the image is unverified: {written.error}", err=True)

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
            """Write FILE to the card, switching it to the host; the card stays there (`j storage dut` next)."""
            self.write_local_file(file)

        return base


@contextmanager
def _one_error() -> Iterator[None]:
    """Raise a transfer's error itself, not the ExceptionGroup of upstream's transfer task group around it."""
    try:
        yield
    except BaseExceptionGroup as group:
        leaves = _leaves(group)
        if len(leaves) == 1 and isinstance(leaves[0], Exception):
            raise leaves[0] from None
        raise


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    """The exceptions in a group and its nested groups."""
    return [leaf for e in group.exceptions for leaf in (_leaves(e) if isinstance(e, BaseExceptionGroup) else [e])]
