"""The benchmark's plugin interface, and the tools a bench module measures with.

bench.py finds every `benchmarks/*_bench.py` module (one per driver module of the package, named after
it: `<module>_bench.py`) and names nothing else. The module's stem without `_bench` is its label in the
output (`<module>`). A bench module provides:

    def drivers(workdir: Path) -> dict[str, Entry]
        Its drivers, as exporter config entries: {name: {"type": "module.Class", "config": {...}}}.
        bench.py writes the baseline's entry and every module's entries into one exporter YAML for
        `jmp run`, and builds the same entries as one Composite for serve(): both modes serve the
        same drivers with the same config. `workdir` is a scratch directory of one mode (tmpfs
        when there is one). The type may be a bench-only subclass defined in the bench module
        (one that adds a method to compare with): benchmarks/ is on the path of the exporter
        process too. Names must be unique across modules.

    def measure(run: Round) -> None
        One round of its figures in one mode (serve, then exporter, every round). It compares
        each method with the framework baseline of the same shape (`run.baseline`, see baseline.py)
        through `run.compare(...)`, or `run.pair(...)` for figures it computes itself.

    TARGETS: list[Target]
        What bench.py judges in each mode: a comparison (or value) this module records, a bound,
        and why the bound matters.

    def once(run: Round) -> None        (optional)
        After the rounds, once per mode: costly figures, such as memory growth over 256 MiB
        (`run.rss_compare(...)`).

Verdicts are made to hold on a loaded machine (see `Round.pair`): a method and its baseline are
measured in alternation within small blocks (A B B A ...), each block gives one ratio, and a
target FAILs only when the inter-quartile range of its block ratios misses the bound (`Target.verdict`).
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from baseline import usage

if TYPE_CHECKING:
    from baseline import BaselineClient
    from jumpstarter.client import DriverClient

MiB = 1024 * 1024
Entry = dict[str, Any]
"""An exporter config entry: {"type": "module.Class", "config": {...}}."""
ClientT = TypeVar("ClientT")


@dataclass(frozen=True)
class Sizes:
    """How much each round measures: the full run's or `--quick`'s."""

    blocks: int
    """Blocks per comparison per round: each block alternates the method and its baseline and gives one ratio.
    The full run does one per round, and many rounds, so that a comparison's blocks are spread over the run."""
    calls: int
    """Unary calls of each side per block."""
    items: int
    """Items per streaming call."""
    bytes: int
    """Bytes per transfer (each side moves this twice per block: A B B A)."""
    latency: int
    """Pings per latency figure."""
    rss: int
    """Bytes moved for a memory growth figure (256 MiB in the full run)."""
    rss_runs: int
    """Memory growth figures per mode and figure (judged on their spread, like ratios)."""


@dataclass
class Series:
    """One figure's samples in one mode: a comparison (method, baseline, and how they relate per block) or a value."""

    unit: str
    higher_is_better: bool = False
    relation: Literal["ratio", "difference"] = "ratio"
    """How a comparison's blocks are judged: method/baseline, or method - baseline (memory growth, in `unit`)."""
    method: list[float] = field(default_factory=list)
    baseline: list[float] = field(default_factory=list)
    relative: list[float] = field(default_factory=list)
    """Per block: the ratio (or difference) of the method's figure to the baseline's."""

    @property
    def judged(self) -> list[float]:
        """What a target reads: the per-block ratios (or differences) of a comparison, the samples of a value."""
        return self.relative if self.baseline else self.method

    @property
    def median(self) -> float:
        return statistics.median(self.judged)

    @property
    def quartiles(self) -> tuple[float, float]:
        """The inter-quartile range of the judged samples: the spread a verdict is made against."""
        values = self.judged
        if len(values) < 2:
            return values[0], values[0]
        low, _, high = statistics.quantiles(values, n=4, method="inclusive")
        return low, high


Figures = dict[str, Series]
"""Every series of a run, keyed "<mode> <unit> <name>"."""


@dataclass(frozen=True)
class Target:
    """A bound on one series of a unit, judged in every mode on the spread of its samples (see `verdict`)."""

    name: str
    """The series (as recorded by measure/once), e.g. "configure/echo_sync"; the target's label adds mode and unit."""
    op: Literal["<=", ">=", "<"]
    bound: float
    why: str
    """What a FAIL means, printed with it."""
    explain: Callable[[Callable[[str], Series]], str] | None = None
    """More detail for a FAIL from this run's figures: gets a lookup of the unit's series in the same mode."""
    modes: tuple[str, ...] = ("serve", "exporter")
    """The modes it is judged in (the series is recorded in every mode regardless)."""

    def met(self, value: float) -> bool:
        if self.op == "<=":
            return value <= self.bound
        if self.op == ">=":
            return value >= self.bound
        return value < self.bound

    def verdict(self, series: Series) -> tuple[bool, bool]:
        """(passed, within the spread): a target fails when its whole inter-quartile range misses the bound.

        Why the spread and not the median alone: on a loaded machine the per-block ratios of a
        method whose true cost sits near its bound (a method that logs every call measured 1.07-1.10x
        its echo, against 1.1) land on both sides of it, and so would a verdict on their median,
        from one run to the next. Judged on the quartiles, a FAIL means three quarters of the blocks
        miss the bound: a cost the method clearly adds, found again by every run. A median beyond the
        bound with a quartile within it is a PASS marked "within the spread", shown with its range;
        when that mark persists, the method is worth a look. In --quick (one block) the quartiles
        are the median.
        """
        low, high = series.quartiles
        best = low if self.op in ("<=", "<") else high
        return self.met(best), not self.met(series.median)


Per = Literal["call", "item", "byte"]


@dataclass
class Round:
    """What a bench module's measure() and once() get: one mode's clients, the baselines, sizes and recorders."""

    mode: str
    """"serve" (driver and client in this process) or "exporter" (a `jmp run` process)."""
    unit: str
    clients: Mapping[str, DriverClient]
    """The tree's clients, by exporter config name."""
    baseline: BaselineClient
    sizes: Sizes
    workdir: Path
    figures: Figures

    def client(self, name: str, kind: type[ClientT]) -> ClientT:
        """The client of the driver `name` (from this module's drivers()), checked to be a `kind`."""
        client = self.clients[name]
        if not isinstance(client, kind):
            raise TypeError(f"{name} has a {type(client).__name__} client, not a {kind.__name__}")
        return client

    def random_file(self, name: str, size: int) -> Path:
        """A file of `size` random bytes in this mode's scratch directory, made on first use: a source to send."""
        path = self.workdir / f"{name}-{size}.bin"
        if not path.exists():
            path.write_bytes(os.urandom(size))
        return path

    def sparse_file(self, name: str, size: int) -> Path:
        """A sparse file of `size` bytes: reading it costs no memory, so it suits memory figures."""
        path = self.workdir / name
        with path.open("wb") as file:
            file.truncate(size)
        return path

    def series(self, name: str, unit: str, higher_is_better: bool = False) -> Series:
        key = f"{self.mode} {self.unit} {name}"
        return self.figures.setdefault(key, Series(unit, higher_is_better))

    def record(self, name: str, value: float, unit: str) -> None:
        """A value of this round (no baseline), e.g. a memory growth in MiB."""
        self.series(name, unit).method.append(value)

    def pair(
        self,
        name: str,
        method: Callable[[], float],
        baseline: Callable[[], float],
        *,
        unit: str,
        higher_is_better: bool = False,
        repeat: int = 2,
    ) -> None:
        """Measure two figures in alternation, `sizes.blocks` blocks of `repeat` of each, one ratio per block.

        Why blocks, alternating: on a shared machine the load changes from one second to the next.
        Measured one after the other, a method and its baseline meet different loads, and their
        ratio swings with the load (2x between two runs). Inside a block the two alternate
        (A B, then B A: an ABBA order, so a load that grows or shrinks during the block hits both
        alike), each side's figure is the median of its `repeat` samples (a call that waited for a
        GIL switch or a descheduled thread does not count), and the block gives one ratio. A
        target is judged on those ratios over every block of every round (spread over the whole
        run), so a burst of load spoils a few blocks, not the verdict; see Target.verdict.
        """
        series = self.series(name, unit, higher_is_better)
        for _ in range(self.sizes.blocks):
            a: list[float] = []
            b: list[float] = []
            for i in range(repeat):
                if i % 2:
                    b.append(baseline())
                    a.append(method())
                else:
                    a.append(method())
                    b.append(baseline())
            ma, mb = statistics.median(a), statistics.median(b)
            series.method.append(ma)
            series.baseline.append(mb)
            series.relative.append(ma / mb)

    def compare(
        self,
        name: str,
        method: Callable[[], object],
        baseline: Callable[[], object],
        *,
        per: Per = "call",
        amount: float = 1,
        repeat: int | None = None,
    ) -> None:
        """Time a method against its baseline (see `pair`); both do the same `amount` of work per call.

        per="call": microseconds per call, ratio method/baseline (lower is better); `repeat`
        defaults to `sizes.calls`.
        per="item": microseconds per item of a streaming call that yields `amount` items;
        `repeat` defaults to 4 (A B B A A B B A).
        per="byte": MB/s moving `amount` bytes, ratio method/baseline (higher is better);
        `repeat` defaults to 2 (A B B A).
        """

        def timed(function: Callable[[], object]) -> Callable[[], float]:
            def run() -> float:
                start = time.perf_counter()
                function()
                elapsed = time.perf_counter() - start
                return amount / elapsed / 1e6 if per == "byte" else elapsed / amount * 1e6

            return run

        if repeat is None:
            repeat = {"call": self.sizes.calls, "item": 4, "byte": 2}[per]
        unit = {"call": "us", "item": "us/item", "byte": "MB/s"}[per]
        self.pair(name, timed(method), timed(baseline), unit=unit, higher_is_better=per == "byte", repeat=repeat)

    def growth(self, move: Callable[[], object]) -> float:
        """The peak resident memory growth (MiB) of the most grown process while `move` runs.

        In serve() the driver and the client share this process; through an exporter, both
        processes count and the larger growth is returned.
        """
        local, remote = usage(reset=True), self.baseline.usage(reset=True)
        move()
        local_after, remote_after = usage(), self.baseline.usage()
        grown = (local_after["VmHWM"] - local["VmRSS"]) / 1024
        if self.mode != "serve":
            grown = max(grown, (remote_after["VmHWM"] - remote["VmRSS"]) / 1024)
        return grown

    def rss_growth(self, name: str, move: Callable[[], object]) -> None:
        """Record the memory growth of `move` (a transfer of `sizes.rss` bytes) `rss_runs` times."""
        for _ in range(self.sizes.rss_runs):
            self.record(name, self.growth(move), "MiB")

    def rss_compare(self, name: str, move: Callable[[], object], baseline: Callable[[], object]) -> None:
        """Record the memory growth of `move` minus that of the baseline's transfer of the same size and direction.

        Why a difference: through an exporter, the receiving process's gRPC buffers what arrives
        while that process waits for a CPU, and on a loaded machine that reached 35-80 MiB for the
        framework's own do-nothing download of 256 MiB (10-23 MiB on a quiet one). Measured in
        alternation with the baseline's transfer, what the example adds is what remains.
        """
        series = self.series(name, "MiB")
        series.relation = "difference"
        for i in range(self.sizes.rss_runs):
            if i % 2:
                b = self.growth(baseline)
                a = self.growth(move)
            else:
                a = self.growth(move)
                b = self.growth(baseline)
            series.method.append(a)
            series.baseline.append(b)
            series.relative.append(a - b)
