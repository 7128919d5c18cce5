"""The device unit's benchmark: ExampleDevice (through pyvisa) against raw SCPI round trips to the same simulator.

Plugin interface: benchkit.py. The instrument answers after LATENCY, as real ones do: the figures say
what the driver adds to a device's own round trip, which is what its users wait for. The simulator runs
in a process of its own (in this one, its thread would share the GIL with the client and with the
serve() driver, and distort both sides), one per bench run, shared by both modes' drivers.
"""

from __future__ import annotations

import atexit
import ctypes
import re
import select
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path

from benchkit import Entry, Round, Target

from jumpstarter_driver_template.device import simulator
from jumpstarter_driver_template.device.client import ExampleDeviceClient

LATENCY = 0.01
"""Seconds the instrument takes to handle a command (real ones: 1-20 ms). At zero latency the figures measure
gRPC and threads, not the driver."""
PR_SET_PDEATHSIG = 1
"""Linux prctl(2): the signal a process gets when the thread that started it ends, even by SIGKILL."""


class Simulator:
    """`python -m ...device.simulator --port 0` with LATENCY, stopped when this process ends, however it ends."""

    def __init__(self) -> None:
        command = [sys.executable, "-m", simulator.__name__, "--port", "0", "--latency", str(LATENCY)]
        # atexit stops it after bench.py's unwinding, which stops the exporter (whose driver switches the
        # output off on close). PDEATHSIG covers what atexit cannot: SIGKILL, bench.py's forced exit.
        prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up here: the child only calls it
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, text=True, preexec_fn=lambda: prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        )
        atexit.register(self.stop)
        self.port = self._listening(timeout=30)

    def _listening(self, timeout: float) -> int:
        """The port of its `simulated power supply listening on 127.0.0.1:PORT` line."""
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.process.stdout], [], [], 0.1)
            if ready:
                line = self.process.stdout.readline()
                if found := re.search(r"listening on [^\s:]+:(\d+)", line):
                    return int(found.group(1))
                if not line:
                    raise RuntimeError(f"the simulator exited with status {self.process.wait()}")
        raise RuntimeError(f"the simulator did not say where it listens within {timeout:g} s")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()


SIMULATOR: list[Simulator] = []
"""The run's simulator, started by the first drivers() call."""


def drivers(workdir: Path) -> dict[str, Entry]:
    """ExampleDevice driving the run's simulator, at its VISA resource string, as for a real instrument."""
    if not SIMULATOR:
        SIMULATOR.append(Simulator())
    # One name per line: the rename makes it longer.
    driver = "jumpstarter_driver_template.device.driver.ExampleDevice"
    resource = f"TCPIP::127.0.0.1::{SIMULATOR[0].port}::SOCKET"
    return {"device": {"type": driver, "config": {"resource": resource}}}


@contextmanager
def raw_exchange() -> Iterator[Callable[[], bytes]]:
    """The device without a driver: what `measure()` asks, two SCPI queries on a TCP connection of its own."""
    with closing(socket.create_connection(("127.0.0.1", SIMULATOR[0].port))) as sock, sock.makefile("rb") as lines:

        def exchange() -> bytes:
            sock.sendall(b"MEAS:VOLT?\n")
            volts = lines.readline()
            sock.sendall(b"MEAS:CURR?\n")
            return volts + lines.readline()

        yield exchange


def measure(run: Round) -> None:
    device, base = run.client("device", ExampleDeviceClient), run.baseline
    with raw_exchange() as raw:
        # A call: measure() against what it cannot avoid, the device's two round trips plus the framework's async
        # call of the same shape (no arguments, a Measurement-shaped reply), one after the other in each baseline
        # sample. The ratio is the driver's own work: the lock, the worker-thread hop, pyvisa, parsing, the models.
        base.set_reply(device.measure().model_dump())
        calls = max(2, run.sizes.calls // 2)  # each call waits LATENCY: half the calls still give a steady median
        run.compare("measure/raw+echo", device.measure, lambda: (raw(), base.echo()), repeat=calls)

        # The stream, per measurement: the driver asks the device for each one (two queries), then the framework
        # sends it, so the baseline is as many raw exchanges plus the framework's streaming call of the same items.
        items = max(1, run.sizes.items // 10)  # 10 in the full run: 0.1 s at LATENCY; 1 in --quick
        raw_us: list[float] = []

        def raw_then_stream() -> None:
            start = time.perf_counter()
            for _ in range(items):
                raw()
            raw_us.append((time.perf_counter() - start) / items * 1e6)
            base.echo_stream(items, 0)

        stream = lambda: sum(1 for _ in device.measure_stream(items, 0))  # noqa: E731
        run.compare("measure_stream/raw+echo_stream", stream, raw_then_stream, per="item", amount=items, repeat=2)
        # The device alone, for reading both ratios: what a raw exchange (two queries) takes at LATENCY.
        run.record("raw exchange", statistics.median(raw_us), "us")


TARGETS = [
    Target(
        "measure/raw+echo",
        "<=",
        1.1,
        "a call costs more than 10% over the device's two round trips plus the framework's call of the same shape",
    ),
    Target(
        "measure_stream/raw+echo_stream",
        "<=",
        1.1,
        "each streamed measurement costs more than 10% over a raw exchange plus the framework's streaming of it",
    ),
]
