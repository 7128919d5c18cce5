"""ExampleStorageMux: a second *standard interface*, a storage mux that flashes images.

A storage mux (SD-wire, USB-SD-Mux, a relay-switched eMMC) connects a card either to the test host,
which writes an image to it, or to the device, which boots from it. Upstream's
`StorageMuxFlasherInterface` (package jumpstarter-driver-opendal) declares `host`, `dut`, `off`,
`write` and `read`, and upstream's `StorageMuxFlasherClient` gives `j storage flash/dump/host/dut/off`
and `client.storage.flash(path)` with no code of ours. The driver names a subclass of it (client.py)
only to add `state`, which the interface lacks.

The card is a path: a disk image file (the simulator) or a real block device (/dev/sdX). The driver
keeps the card's state (common.py: which side it is on, whether it holds a whole image) and refuses
what would hand the device a broken card: writing while the device owns the card, or switching a
half-written card to the device.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import AsyncIterable
from dataclasses import field
from pathlib import Path
from typing import Any, BinaryIO

import anyio
from anyio import to_thread
from anyio.abc import AnyByteStream
from anyio.streams.memory import MemoryObjectSendStream
from jumpstarter.common.storage import wait_for_storage_device
from jumpstarter.driver import Driver, export
from jumpstarter_driver_opendal.driver import StorageMuxFlasherInterface
from pydantic import ConfigDict, Field
from pydantic.dataclasses import dataclass

from ..batching import IO_BATCH, batches
from ..cancellation import to_completion
from ..commands import Command, run_command
from ..validation import names_its_config_errors, validate
from .common import Image, Operation, Side, StorageState

READ_CHUNK = 256 * 1024
"""Bytes per message of a dump: large enough to amortize the per-message cost, far below gRPC's 4 MiB cap."""
CANCEL_GRACE = 0.02
"""Seconds a write waits, from the end of its stream, for the cancellation of a client that died (see
`_write_card`): 20x the longest delay measured, 1 ms over 60 kills by SIGKILL and Ctrl-C, idle and loaded."""
MAX_CARD = 2**50
"""Largest simulated card (1 PiB): a bound, as every config value has one."""


# Exporter YAML `config:` keys become keyword arguments of the driver dataclass. `extra="forbid"`
# turns a typo into an error that names the key; pydantic checks every type.
@names_its_config_errors
@dataclass(kw_only=True, config=ConfigDict(extra="forbid"))
class ExampleStorageMux(StorageMuxFlasherInterface, Driver):
    """A storage mux: write images to a card on the host side, then hand the card to the device."""

    card: str = Field(min_length=1, max_length=4096)
    """The card as the host sees it: a disk image file (the simulator) or a block device (/dev/sda,
    better a stable /dev/disk/by-id/... link). Relative paths start from the exporter's directory."""
    size: int | None = Field(default=None, gt=0, le=MAX_CARD)
    """Bytes of a simulated card: `card` is created as a sparse file of this size if missing, and must have
    this size if it exists. None: `card` is a real device (or an existing image) with a size of its own."""
    host_command: Command | None = None
    """Argument list run by `host()`, e.g. ["usbsdmux", "/dev/sg0", "host"]. None: simulate. Run by the
    package's commands.py: in a process group of its own, ended on timeout or when the client leaves."""
    dut_command: Command | None = None
    """Argument list run by `dut()`, e.g. ["usbsdmux", "/dev/sg0", "dut"]. None: simulate."""
    off_command: Command | None = None
    """Argument list run by `off()`, e.g. ["usbsdmux", "/dev/sg0", "off"]. None: simulate."""
    command_timeout: float = Field(default=30.0, gt=0, le=3600)
    """Seconds a switching command may run before the call fails with DEADLINE_EXCEEDED."""
    ready_timeout: int = Field(default=10, ge=1, le=600)
    """Seconds a write or read waits for the card to appear with a size: a USB card reader shows up on the
    host a few seconds after the mux switched it there."""

    _side: Side = field(default="off", init=False)
    _image: Image = field(default="unknown", init=False)
    _operation: Operation | None = field(default=None, init=False)
    _card_size: int | None = field(default=None, init=False)
    _written: int = field(default=0, init=False)
    _error: str | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.size is not None:
            _create_card(Path(self.card), self.size)  # fail when the exporter starts, not at the first flash
            self._card_size = self.size

    # Upstream's client, subclassed: it adds `state` (and fixes a missing `j` command). A client with
    # upstream's client alone can still use every method of the interface.
    @classmethod
    def client(cls) -> str:
        """Import path of the client class: the client side loads it by this name."""
        return "jumpstarter_driver_template.storage.client.ExampleStorageMuxClient"

    # An extra exported method on a standard interface: what the interface cannot tell.
    @export
    @validate
    async def state(self) -> StorageState:
        """Report the card's side, whether it holds a whole image, and the call in progress."""
        return StorageState(
            side=self._side,
            image=self._image,
            operation=self._operation,
            card_size=self._card_size,
            written=self._written,
            error=self._error,
        )

    # 1. Switching: async methods on the event loop; the command runner waits without blocking it.
    #    @validate: a call with arguments is INVALID_ARGUMENT naming them (without it: UNKNOWN, a TypeError).
    @export
    @validate
    async def host(self) -> None:
        """Connect the card to the test host, to write or read it."""
        await self._switch("host", self.host_command)

    @export
    @validate
    async def dut(self) -> None:
        """Connect the card to the device, to boot from it."""
        await self._switch("dut", self.dut_command)

    @export
    @validate
    async def off(self) -> None:
        """Disconnect the card from both sides."""
        await self._switch("off", self.off_command)

    async def _switch(self, side: Side, command: list[str] | None) -> None:
        """Run the side's command (if any), then record the new side; a failed command leaves the state as it was."""
        self._begin("switching", f"switch the card to {side}")
        try:
            if side == "dut" and self._image == "incomplete":
                # Upstream's `flash` switches to the device even when the write failed (in a `finally`):
                # refusing here is what keeps a half-written card away from the device.
                raise RuntimeError(
                    f"refusing to switch the card to the device: it holds an incomplete image ({self._error}); "
                    "it stays on the host until a write completes (`j storage flash FILE`)"
                )
            if command is not None:
                await run_command(f"{side}_command", command, self.command_timeout)
            self._side = side
        finally:
            self._operation = None
        self.logger.info("card switched to %s", side)

    # 2. Transfers: the client streams the image as a *resource* and passes its handle (a dict) to
    #    `write`; `self.resource(handle)` opens it as a byte stream. For an http(s) URL, upstream's
    #    `flash` hands over a presigned request instead, and `self.resource` downloads it here, on the
    #    exporter. Compressed sources (`flash --compression xz`) arrive decompressed.
    @export
    @validate
    async def write(self, src: Any) -> None:
        """Write an image to the card (on the host side); it is flushed and synced when this returns."""
        async with self.resource(src) as stream:
            # Checked once the resource is open, so that a refused write still releases it.
            self._require_host("write")
            self._begin("writing", "write")
            try:
                await to_completion(self._write_card, stream)
            finally:
                self._operation = None

    @export
    @validate
    async def read(self, dst: Any) -> None:
        """Read the whole card (on the host side) into a resource the client opened (upstream's `dump`)."""
        async with self.resource(dst) as stream:
            self._require_host("read")
            self._begin("reading", "read")
            try:
                await to_completion(self._read_card, stream)
            finally:
                self._operation = None

    async def _write_card(self, stream: AsyncIterable[bytes]) -> None:
        """Copy the stream onto the card, stopping at its size; mark the image incomplete unless all of it landed."""
        file, size = await self._open_card(write=True)
        self._written = 0
        touched = False
        self.logger.info("writing an image to %s (%d bytes)", self.card, size)

        async def receive(send: MemoryObjectSendStream[list[bytes]]) -> None:
            async with send:
                received = 0
                # Upstream's writer (`write_to_storage_device`, and its mocks) hops to a worker thread for
                # every 64 KiB chunk the client sends, which is why upstream's mock flashes at ~0.6x the rate
                # the client sends; one hop per ~1 MiB batch keeps the write within a few percent of it.
                async for batch in batches(stream):
                    received += sum(map(len, batch))
                    if received > size:
                        raise ValueError(
                            f"the image does not fit on the card: {self.card} holds {size} bytes, "
                            f"the image has at least {received}"
                        )
                    await send.send(batch)

        try:
            with file:
                # The next batch arrives while a worker thread writes this one: a card that writes about as
                # fast as the network delivers would otherwise halve the rate, each waiting for the other.
                send, arriving = anyio.create_memory_object_stream[list[bytes]](1)
                async with arriving, anyio.create_task_group() as group:
                    group.start_soon(receive, send)
                    async for batch in arriving:
                        # From the first byte on, the card holds neither the old image nor the new one.
                        self._image, self._error, touched = "incomplete", "write in progress", True
                        await to_thread.run_sync(file.writelines, batch)
                        self._written += sum(map(len, batch))
                if not touched:
                    raise ValueError("the image is empty: nothing to write")
                # A client that dies mid-write ends the stream with an EOF, as a finished one does (Jumpstarter
                # 0.9's RouterStream takes a bare gRPC EOF for the end, and its forwarding turns a broken
                # stream into one); only the cancellation of its call, which gRPC delivers a moment later,
                # tells them apart. Give it CANCEL_GRACE to arrive, while the sync runs: a workaround, measured
                # in local and direct mode only. Without it, 2 of 12 killed clients left a truncated image
                # marked complete.
                deadline = anyio.current_time() + CANCEL_GRACE
                await to_thread.run_sync(_flush_and_sync, file)
            await anyio.sleep_until(deadline)
        except BaseException as e:
            # An error of the receiving task arrives wrapped in an ExceptionGroup: raise the error itself,
            # so that the client gets its message (and INVALID_ARGUMENT for a ValueError).
            error = e.exceptions[0] if isinstance(e, BaseExceptionGroup) and len(e.exceptions) == 1 else e
            reason = str(error) or type(error).__name__
            if isinstance(error, anyio.get_cancelled_exc_class()):
                reason = "call cancelled (the client went away, or the exporter is stopping)"
            if touched:
                self._error = f"write stopped after {self._written} bytes: {reason}"
                self.logger.error("%s: %s holds an incomplete image", self._error, self.card)
            else:  # failed before the first byte: the card holds what it held
                self.logger.error("write failed, %s unchanged: %s", self.card, reason)
            if error is e:
                raise
            raise error from None
        self._image, self._error = "complete", None
        self.logger.info("wrote %d bytes to %s, synced", self._written, self.card)

    async def _read_card(self, stream: AnyByteStream) -> None:
        """Send the whole card, a batch per thread hop, in READ_CHUNK messages."""
        file, size = await self._open_card(write=False)
        with file:
            sent = 0
            while sent < size:
                data = await to_thread.run_sync(file.read, min(IO_BATCH, size - sent))
                if not data:
                    raise RuntimeError(f"{self.card} ended after {sent} of its {size} bytes")
                for offset in range(0, len(data), READ_CHUNK):
                    await stream.send(data[offset : offset + READ_CHUNK])
                sent += len(data)
        # The resource is closed by the framework, but a compressing one (`dump --compression xz`)
        # writes its last block only on send_eof.
        await stream.send_eof()
        self.logger.info("read %d bytes from %s", sent, self.card)

    async def _open_card(self, write: bool) -> tuple[BinaryIO, int]:
        """Wait until the card is there with a size (upstream's helper), open it; return the file and its size."""
        try:
            await wait_for_storage_device(self.card, "wb" if write else "rb", self.ready_timeout, logger=self.logger)
        except TimeoutError:
            raise TimeoutError(f"card {self.card} not ready within {self.ready_timeout} s (missing or empty)") from None
        file, size = await to_thread.run_sync(_open, self.card, write)
        self._card_size = size
        return file, size

    def _require_host(self, action: str) -> None:
        """Refuse a transfer unless the card is on the host side, saying which call fixes it."""
        if self._side != "host":
            where = "switched off" if self._side == "off" else "connected to the device (dut)"
            raise RuntimeError(f"cannot {action} the card: it is {where}; call host() first (`j storage host`)")

    def _begin(self, operation: Operation, action: str) -> None:
        """Claim the card for one call: two calls on one card at once would corrupt it or its state."""
        if self._operation is not None:
            raise RuntimeError(f"cannot {action}: the card is busy {self._operation} for another call")
        self._operation = operation


def _create_card(path: Path, size: int) -> None:
    """Create a simulated card of `size` bytes if missing; refuse an existing file of another size."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("xb") as file:
            file.truncate(size)  # sparse: takes no disk space until written
        return
    if not path.is_file():
        raise ValueError(f"size is for simulated cards, and {path} is not a regular file: leave size out")
    if (actual := path.stat().st_size) != size:
        raise ValueError(f"{path} has {actual} bytes, size says {size}: delete the file to recreate it, or fix size")


def _open(path: str, write: bool) -> tuple[BinaryIO, int]:
    """Open the card without creating or truncating it; return the file and the card's size."""
    flags = os.O_WRONLY if write else os.O_RDONLY
    if stat.S_ISBLK(os.stat(path).st_mode):
        flags |= os.O_EXCL  # Linux: EBUSY while the host has the card mounted (desktops automount cards)
    try:
        fd = os.open(path, flags)
    except OSError as e:
        if e.errno == errno.EBUSY:
            raise RuntimeError(f"card {path} is in use on the host (mounted?): unmount it first") from None
        raise
    size = os.lseek(fd, 0, os.SEEK_END)  # a block device's size, or the image file's
    os.lseek(fd, 0, os.SEEK_SET)
    return os.fdopen(fd, "wb" if write else "rb"), size


def _flush_and_sync(file: BinaryIO) -> None:
    """Push the written bytes to the card itself, not just the page cache: the device may boot from it next."""
    file.flush()
    os.fsync(file.fileno())
