"""The storage unit's benchmark: ExampleStorageMux's `write` through its client, against two other writes.

Plugin interface: benchkit.py. The example's writes go through `ExampleStorageMuxClient.write_local_file`
(what `flash` does before its switch to the device): it checks the file, tells the driver its length, and
streams it with upstream's adapter, which sends 64 KiB messages. That client is the ceiling, measured by a
do-nothing `write` through the same client (NullStorageMux, here). Upstream's own `MockStorageMuxFlasher`,
written through upstream's client, is shown for reference only: both are capped by the client's 64 KiB
messages, so a ratio against it says little (its 1.3x target was retired). The exporter imports
`storage_bench.NullStorageMux` and `storage_bench.UpstreamMock` (benchmarks/ is on its path).
"""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from tempfile import NamedTemporaryFile
from typing import Any

from benchkit import Entry, MiB, Round, Target
from jumpstarter.driver import Driver, export
from jumpstarter_driver_opendal.client import StorageMuxFlasherClient
from jumpstarter_driver_opendal.driver import MockStorageMuxFlasher, StorageMuxFlasherInterface

from jumpstarter_driver_template.storage.client import ExampleStorageMuxClient
from jumpstarter_driver_template.storage.common import StorageState

CARD_SIZE = 256 * MiB
"""The simulated card: room for the memory figure's transfer (the full run's `rss`); sparse until written."""


@dataclass(kw_only=True)
class NullStorageMux(StorageMuxFlasherInterface, Driver):
    """Upstream's interface with a `write` that only reads the image to its end: the framework's and client's cost."""

    @classmethod
    def client(cls) -> str:
        """The example's client: the same client code on both sides of the comparison."""
        return "jumpstarter_driver_template.storage.client.ExampleStorageMuxClient"

    @export
    async def host(self) -> None:
        """Do nothing."""

    @export
    async def dut(self) -> None:
        """Do nothing."""

    @export
    async def off(self) -> None:
        """Do nothing."""

    @export
    async def write(
        self, src: Any, length: int | None = None, compression: Any = None, require_verified: bool = False
    ) -> StorageState:
        """Read the image to its end, store nothing; answer as the example does."""
        written = 0
        async with self.resource(src) as stream:
            async for chunk in stream:
                written += len(chunk)
        return StorageState(side="host", image="complete", written=written)

    @export
    async def read(self, dst: Any) -> None:
        """Not measured."""
        raise NotImplementedError


@dataclass(kw_only=True)
class UpstreamMock(MockStorageMuxFlasher):
    """Upstream's MockStorageMuxFlasher, unchanged, writing into `directory` (tmpfs) instead of the disk's /tmp."""

    directory: str
    file: Any = field(default=None)

    def __post_init__(self) -> None:
        # The driver's file for its life, removed with the scratch directory.
        self.file = NamedTemporaryFile(dir=self.directory, delete=False)  # noqa: SIM115
        super().__post_init__()


def drivers(workdir: Path) -> dict[str, Entry]:
    """The example on a simulated card in this mode's scratch directory, and the two writes it is compared with."""
    # One name per line: the rename makes it longer.
    example = "jumpstarter_driver_template.storage.driver.ExampleStorageMux"
    return {
        "storage": {"type": example, "config": {"card": str(card(workdir)), "size": CARD_SIZE}},
        "storage_null": {"type": "storage_bench.NullStorageMux", "config": {}},
        "storage_upstream": {"type": "storage_bench.UpstreamMock", "config": {"directory": str(workdir)}},
    }


def card(workdir: Path) -> Path:
    return workdir / "storage-card.img"


def measure(run: Round) -> None:
    clients: dict[str, StorageMuxFlasherClient] = {
        name: run.client(name, ExampleStorageMuxClient) for name in ("storage", "storage_null")
    }
    clients["storage_upstream"] = run.client("storage_upstream", StorageMuxFlasherClient)
    clients["storage"].host()  # the first write's switch, untimed (the write switches; no command: simulated)
    # Twice a byte stream's size: an image is larger than a stream's sample.
    size = 2 * run.sizes.bytes
    source = str(run.random_file("storage-source", size))
    for _ in range(run.sizes.blocks):
        # One block gives both ratios: the example, the do-nothing write, upstream's mock, then the reverse
        # order (A B C C B A, what Round.pair does for two), each side's figure the median of its two writes.
        rates: dict[str, list[float]] = {name: [] for name in clients}
        for name in [*clients, *reversed(clients)]:
            start = time.perf_counter()
            clients[name].write_local_file(source)
            rates[name].append(size / (time.perf_counter() - start) / 1e6)
        example = statistics.median(rates["storage"])
        run.record("write time", size / example / 1e3, "ms")
        for name, label in (("storage_null", "write/do-nothing write"), ("storage_upstream", "write/upstream mock")):
            series = run.series(label, "MB/s", higher_is_better=True)
            baseline = statistics.median(rates[name])
            series.method.append(example)
            series.baseline.append(baseline)
            series.relative.append(example / baseline)


def once(run: Round) -> None:
    example, null = run.client("storage", ExampleStorageMuxClient), run.client("storage_null", ExampleStorageMuxClient)
    sparse = run.sparse_file("storage-rss.img", run.sizes.rss)
    # Against the do-nothing write of the same file through the same client (see Round.rss_compare).
    run.rss_compare(
        "write RSS growth", lambda: example.write_local_file(str(sparse)), lambda: null.write_local_file(str(sparse))
    )
    # Give the card's pages back to tmpfs: a punched hole is a sparse file of the same size again.
    os.truncate(card(run.workdir), 0)
    os.truncate(card(run.workdir), CARD_SIZE)


TARGETS = [
    Target(
        "write/do-nothing write", ">=", 0.9, "the example's write reaches less than 0.9x the rate the client sends at"
    ),
    Target(
        "write RSS growth", "<", 32, "the write holds more memory than a do-nothing write: something buffers the image"
    ),
]
