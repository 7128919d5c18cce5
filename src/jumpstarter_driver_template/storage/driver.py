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
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, contextmanager
from dataclasses import field
from pathlib import Path
from typing import Any, BinaryIO

import anyio
from anyio import to_thread
from anyio.abc import AnyByteStream, TaskGroup
from anyio.streams.memory import MemoryObjectSendStream
from jumpstarter.common.storage import wait_for_storage_device
from jumpstarter.driver import Driver, export
from jumpstarter.streams.encoding import Compression
from jumpstarter_driver_opendal.driver import StorageMuxFlasherInterface
from pydantic import ConfigDict, Field
from pydantic.dataclasses import dataclass

from ..batching import IO_BATCH, batches
from ..cancellation import to_completion
from ..commands import Command, run_command
from ..validation import names_its_config_errors, validate
from .common import Image, Operation, Side, StorageState
from .source import Decoder, Source, open_source

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
    stall_timeout: float = Field(default=30.0, gt=0, le=3600)
    """Seconds a write waits for the source's next byte (or a server's answer) before it fails with
    DEADLINE_EXCEEDED, the card marked incomplete: a stalled download must not hold the card for hours."""

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
        """Claim the card, refuse to hand the device an image that is not whole, and move the card."""
        self._begin("switching", f"switch the card to {side}")
        try:
            if side == "dut" and self._image == "incomplete":
                raise RuntimeError(
                    f"refusing to switch the card to the device: it holds an incomplete image ({self._error}); "
                    "it stays on the host until a write completes (`j storage flash FILE`)"
                )
            await self._move(side, command)
        finally:
            self._operation = None

    async def _move(self, side: Side, command: list[str] | None) -> None:
        """Run the side's command (if any), then record the new side; a failed command leaves the state as it was."""
        if side == self._side and command is None:
            return
        if command is not None:
            await run_command(f"{side}_command", command, self.command_timeout)
        self._side = side
        self.logger.info("card switched to %s", side)

    # 2. Transfers: the client streams the image as a *resource* and passes its handle (a dict) to
    #    `write`; `self.resource(handle)` opens it as a byte stream (source.py). For an http(s) URL the
    #    client passes a request instead, and the exporter downloads it. Like upstream's real muxes
    #    (SDWire, Dutlink), `write` and `read` switch the card to the host themselves, so upstream's
    #    documented `write_local_file(image)` then `dut()` works.
    @export
    @validate
    async def write(
        self,
        src: Any,
        length: int | None = None,
        compression: Compression | None = None,
        require_verified: bool = False,
    ) -> StorageState:
        """Write an image to the card, switched to the host first; return the card's state (is the image verified?)."""
        async with AsyncExitStack() as stack:
            # Opened before the first switch: a URL that answers 404, or does not answer, leaves the card as it was.
            with self._stall("no answer from the source"):
                source = await stack.enter_async_context(
                    open_source(self, src, length, compression, self.stall_timeout)
                )
            if require_verified and not source.checked:
                # This client's `flash` asks for it (upstream's sends no length, and cannot).
                raise ValueError(
                    f"{source.name} sends no length and is not compressed: a transfer cut short would look whole. "
                    "Compress the image or serve it with a Content-Length, or accept an unverified image "
                    "(`j storage flash --unverified-ok`); the card was not touched"
                )
            self._begin("writing", "write")
            side, before = self._side, (self._image, self._error)
            try:
                await self._move("host", self.host_command)
                await to_completion(self._write_card, source)
            except BaseException:
                if (self._image, self._error) == before and self._side != side:
                    # Not a byte written: the card holds what it held; give it back to the side it was on.
                    with anyio.CancelScope(shield=True):
                        try:
                            await self._move(side, self.dut_command if side == "dut" else self.off_command)
                        except Exception as e:  # the write's error is the one to report
                            self.logger.error("could not switch the card back to %s: %s", side, e)
                raise
            finally:
                self._operation = None
        return await self.state()

    @export
    @validate
    async def read(self, dst: Any) -> None:
        """Read the whole card into a resource the client opened, switching the card to the host first."""
        async with self.resource(dst) as stream:
            self._begin("reading", "read")
            try:
                await self._move("host", self.host_command)
                await to_completion(self._read_card, stream)
            finally:
                self._operation = None

    @contextmanager
    def _stall(self, what: str) -> Iterator[None]:
        """Fail with DEADLINE_EXCEEDED, saying `what`, after stall_timeout seconds."""
        try:
            with anyio.fail_after(self.stall_timeout):
                yield
        except TimeoutError:
            raise TimeoutError(f"{what} for {self.stall_timeout:g} s (stall_timeout): the source stalled") from None

    async def _write_card(self, source: Source) -> None:
        """Copy the source onto the card; mark it complete only once the source's end was checked and all landed."""
        file, size = await self._open_card(write=True)
        decoder = Decoder(source.compression) if source.compression else None
        self._written = received = 0
        touched = False
        self.logger.info("writing an image from %s to %s (%d bytes)", source.name, self.card, size)

        last = anyio.current_time()  # when the source's last chunk arrived

        async def stamped() -> AsyncIterator[bytes]:
            nonlocal last
            async for chunk in source.chunks:
                last = anyio.current_time()
                yield chunk

        async def watchdog(reading: anyio.CancelScope, watch: anyio.CancelScope) -> None:
            # One task that sleeps until the source has been silent for stall_timeout: a timeout scope around
            # each chunk's wait would cost ~40 us per 64 KiB message (measured), 4% of a write's time.
            with watch:
                while (silent := anyio.current_time() - last) < self.stall_timeout:
                    await anyio.sleep(self.stall_timeout - silent)
                reading.cancel()

        async def receive(send: MemoryObjectSendStream[list[bytes]], group: TaskGroup) -> None:
            nonlocal received
            with anyio.CancelScope() as reading:
                watch = anyio.CancelScope()
                group.start_soon(watchdog, reading, watch)
                try:
                    async with send:
                        # Upstream's writer (`write_to_storage_device`, and its mocks) hops to a worker thread
                        # for every 64 KiB chunk the client sends, which is why upstream's mock flashes at ~0.6x
                        # the rate the client sends; one hop per ~1 MiB batch keeps the write within a few %.
                        async for batch in batches(stamped()):
                            received += sum(map(len, batch))
                            if source.length is not None and received > source.length:
                                raise ValueError(f"{source.name} sent more than the {source.length} bytes it said")
                            await send.send(batch)
                            if decoder is None and received > size:
                                # Stop reading; put() writes what fits of this batch, then raises. Raising here
                                # would drop the batches still queued: the card would not hold the first bytes.
                                break
                finally:
                    watch.cancel()
            if reading.cancelled_caught:
                stall = f"{self.stall_timeout:g} s (stall_timeout)"
                raise TimeoutError(f"no byte from {source.name} for {stall}: the source stalled")

        def too_large(at_least: int) -> str:
            return (
                f"the image does not fit on the card: {self.card} holds {size} bytes, the image has at least {at_least}"
            )

        def put(batch: list[bytes]) -> None:
            """Write a batch (decompressed, if it is): in a worker thread."""
            nonlocal touched
            pieces = batch if decoder is None else (piece for data in batch for piece in decoder.decode(data))
            for piece in pieces:
                if not touched:
                    # From the first byte on, the card holds neither the old image nor the new one.
                    self._image, self._error, touched = "incomplete", "write in progress", True
                if self._written + len(piece) > size:
                    file.write(piece[: size - self._written])
                    at_least = self._written + len(piece) if decoder is not None else received
                    self._written = size
                    raise ValueError(too_large(at_least))
                file.write(piece)
                self._written += len(piece)

        try:
            with file:
                # The next batch arrives while a worker thread writes this one: a card that writes about as
                # fast as the network delivers would otherwise halve the rate, each waiting for the other.
                send, arriving = anyio.create_memory_object_stream[list[bytes]](1)
                async with arriving, anyio.create_task_group() as group:
                    group.start_soon(receive, send, group)
                    async for batch in arriving:
                        await to_thread.run_sync(put, batch)
                # The checks that tell a whole image from a cut-off one (source.py).
                if decoder is not None:
                    decoder.check_end()
                if source.length is not None and received != source.length:
                    raise ValueError(
                        f"{source.name} ended after {received} of its {source.length} bytes: the image is truncated"
                    )
                if not touched:
                    raise ValueError("the image is empty: nothing to write")
                verified = source.checked
                # A client that dies mid-write ends its stream with an EOF, as a finished one does (Jumpstarter
                # 0.9's RouterStream takes a bare gRPC EOF for the end); only the cancellation of its call, a
                # moment later, tells them apart. A length or an end marker tells it at once; without them,
                # give the cancellation CANCEL_GRACE to arrive, while the sync runs (without it, 2 of 12
                # killed clients left a truncated image marked whole; measured in local and direct mode).
                deadline = anyio.current_time() + (0 if verified else CANCEL_GRACE)
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
                self._image, self._error = "incomplete", f"write stopped after {self._written} bytes: {reason}"
                self.logger.error("%s: %s holds an incomplete image", self._error, self.card)
            else:  # failed before the first byte: the card holds what it held
                self.logger.error("write failed, %s unchanged: %s", self.card, reason)
            if error is e:
                raise
            raise error from None
        if verified:
            self._image, self._error = "complete", None
            self.logger.info("wrote %d bytes to %s, synced", self._written, self.card)
        else:
            self._image = "unverified"
            self._error = (
                f"nothing checked that {source.name} sent the whole image: it declared no length and is not "
                "compressed (flash a compressed image, or serve it with a Content-Length, to have it checked)"
            )
            self.logger.warning("wrote %d bytes to %s, synced, unverified: %s", self._written, self.card, self._error)

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
