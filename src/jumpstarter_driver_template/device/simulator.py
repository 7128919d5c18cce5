"""A simulated bench power supply on TCP, speaking the line protocol ExampleDevice drives.

Tests start it in a thread (`running()`), the driver starts one inside the exporter when its
config says `simulator: true`, and you can run one by hand:

    uv run python -m jumpstarter_driver_template.device.simulator --port 5025
    printf '*IDN?\\nVOLT 5\\nOUTP ON\\nMEAS?\\n' | nc -q1 127.0.0.1 5025

The protocol is SCPI-like, one line in, exactly one line out ("\\n" ends a line, "\\r\\n" is accepted):

    *IDN?         Jumpstarter,ExampleSupply,SIM-0001,1.0
    *RST          OK            output off, setpoint 0 V
    VOLT <volts>  OK            setpoint, 0 to 30 V
    VOLT?         12.000
    OUTP ON|OFF   OK
    OUTP?         1 | 0
    MEAS?         12.000,1.200  volts,amps at the output (a 10 ohm load; 0,0 while off)
    ECHO <text>   <text>
    anything else ERR <why>

Every connection talks to the same instrument. `Faults` make it misbehave the way real devices
do: answer late, answer garbage, drop the connection. This module is exporter-side only: the
client never imports it.
"""

from __future__ import annotations

import argparse
import math
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass

import anyio
from anyio.abc import SocketAttribute, SocketStream, TaskStatus
from anyio.streams.buffered import BufferedByteReceiveStream

from .common import VOLTS_MAX

IDN = "Jumpstarter,ExampleSupply,SIM-0001,1.0"
LOAD_OHMS = 10.0
MAX_LINE = 256
GARBAGE = b"\xff\xfe#?garbled\n"


@dataclass
class Faults:
    """How the simulator misbehaves. Tests change these while it runs; counts go down as faults happen."""

    latency: float = 0.0
    """Seconds before every answer (real instruments take milliseconds)."""
    slow: int = 0
    """The next `slow` answers come `slow_seconds` late."""
    slow_seconds: float = 5.0
    garbage: int = 0
    """The next `garbage` answers are garbage (not even UTF-8)."""
    drop: int = 0
    """The next `drop` commands close the connection instead of being answered."""
    only: str = ""
    """If set, faults hit only commands that start with it (e.g. "*IDN?": a device that is still booting)."""


class Instrument:
    """The simulated power supply's state and its protocol: one line in, one line out."""

    def __init__(self) -> None:
        self.voltage = 0.0
        self.output = False

    def handle(self, line: str) -> str:
        """Answer one command line."""
        command, _, argument = line.strip().partition(" ")
        argument = argument.strip()
        match command.upper(), argument.upper():
            case "*IDN?", "":
                return IDN
            case "*RST", "":
                self.voltage, self.output = 0.0, False
                return "OK"
            case "VOLT?", "":
                return f"{self.voltage:.3f}"
            case "VOLT", value if value:
                return self._set_voltage(value)
            case "OUTP?", "":
                return "1" if self.output else "0"
            case "OUTP", ("ON" | "1" | "OFF" | "0") as state:
                self.output = state in ("ON", "1")
                return "OK"
            case "MEAS?", "":
                volts = self.voltage if self.output else 0.0
                return f"{volts:.3f},{volts / LOAD_OHMS:.3f}"
            case "ECHO", _:
                return argument
        return f"ERR unknown command: {line.strip()}"

    def _set_voltage(self, value: str) -> str:
        try:
            volts = float(value)
        except ValueError:
            return f"ERR not a number: {value}"
        if not (math.isfinite(volts) and 0 <= volts <= VOLTS_MAX):
            return f"ERR out of range 0-{VOLTS_MAX:g} V: {value}"
        self.voltage = volts
        return "OK"


class Simulator:
    """A TCP server for one simulated Instrument, with switchable faults.

    `await serve()` runs it on the caller's event loop; `start()` / `stop()` (or `running()`) run it on an
    event loop of its own in a daemon thread, for sync code: tests, and the driver's `simulator: true`.
    """

    def __init__(self, faults: Faults | None = None, host: str = "127.0.0.1", port: int = 0) -> None:
        self.instrument = Instrument()
        self.faults = faults or Faults()
        self.host = host
        self.port = port
        """The port it listens on, once started (0 asks for a free one)."""
        self.connections = 0
        """Connections open right now (`wait_connections` waits for a count)."""
        self._connections_changed = threading.Condition()
        self.commands = 0
        """Command lines received so far."""
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None
        # stop() writes a byte here; the server's loop waits for it, so stopping needs no polling.
        self._stop_reader, self._stop_writer = socket.socketpair()

    @property
    def address(self) -> str:
        """host:port it listens on."""
        return f"{self.host}:{self.port}"

    async def serve(self, *, task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED) -> None:
        """Listen and serve until cancelled; reports the port once listening."""
        async with await anyio.create_tcp_listener(local_host=self.host, local_port=self.port) as listener:
            self.port = listener.extra(SocketAttribute.local_port)
            task_status.started(self.port)
            await listener.serve(self._handle)

    def wait_connections(self, count: int, timeout: float = 10.0) -> None:
        """Wait until `count` connections are open; raise TimeoutError naming both counts after `timeout` s."""
        # A client's close reaches the simulator a moment later (it reads the end of the stream on its own
        # loop): tests wait for it here, woken by the change itself.
        with self._connections_changed:
            if not self._connections_changed.wait_for(lambda: self.connections == count, timeout):
                raise TimeoutError(f"{self.connections} connections open after {timeout:g} s, expected {count}")

    def _count_connection(self, change: int) -> None:
        with self._connections_changed:
            self.connections += change
            self._connections_changed.notify_all()

    async def _handle(self, stream: SocketStream) -> None:
        self._count_connection(+1)
        try:
            async with stream:
                lines = BufferedByteReceiveStream(stream)
                while True:
                    try:
                        line = await lines.receive_until(b"\n", MAX_LINE)
                    except anyio.DelimiterNotFound:
                        line = None
                    if line is None or len(line) > MAX_LINE:  # a longer line that came in one piece is returned
                        await stream.send(b"ERR line too long\n")
                        return
                    answer = await self._answer(line)
                    if answer is None:
                        return  # a dropped connection: closed without an answer
                    await stream.send(answer)
        except (anyio.EndOfStream, anyio.IncompleteRead, anyio.BrokenResourceError, OSError):
            pass  # the client went away: a device does not care
        finally:
            self._count_connection(-1)

    async def _answer(self, line: bytes) -> bytes | None:
        self.commands += 1
        faults = self.faults
        if not line.decode(errors="replace").startswith(faults.only):
            faults = Faults(latency=faults.latency)
        if faults.drop > 0:
            faults.drop -= 1
            return None
        delay = faults.latency
        if faults.slow > 0:
            faults.slow -= 1
            delay += faults.slow_seconds
        if delay:
            await anyio.sleep(delay)
        if faults.garbage > 0:
            faults.garbage -= 1
            return GARBAGE
        return (self.instrument.handle(line.decode(errors="replace")) + "\n").encode()

    def start(self, timeout: float = 10.0) -> Simulator:
        """Serve in a daemon thread; returns once listening (the port is then known), or raises why it could not."""
        # A daemon thread: a process that exits without calling stop() (a config error, Ctrl-C) does not hang.
        self._thread = threading.Thread(target=self._run, name=f"simulator {self.host}", daemon=True)
        self._thread.start()
        if not self._started.wait(timeout):
            raise TimeoutError(f"the simulator did not start listening within {timeout:g} s")
        if self._error is not None:
            raise self._error
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving (its connections close) and wait for the thread to end."""
        if self._thread is not None:
            with suppress(OSError):
                self._stop_writer.send(b"x")
            self._thread.join(timeout)
            self._thread = None
        self._stop_reader.close()
        self._stop_writer.close()

    def _run(self) -> None:
        try:
            anyio.run(self._serve_until_stopped)
        except BaseException as e:
            self._error = e
        finally:
            self._started.set()

    async def _serve_until_stopped(self) -> None:
        async with anyio.create_task_group() as tasks:
            await tasks.start(self.serve)
            self._started.set()
            await anyio.wait_readable(self._stop_reader)
            tasks.cancel_scope.cancel()


@contextmanager
def running(faults: Faults | None = None, host: str = "127.0.0.1", port: int = 0) -> Iterator[Simulator]:
    """A simulator serving in a thread for the duration of a `with` block (port 0: a free one)."""
    simulator = Simulator(faults, host, port).start()
    try:
        yield simulator
    finally:
        simulator.stop()


def main(argv: list[str] | None = None) -> None:
    """Run a simulator in the foreground until Ctrl-C."""
    parser = argparse.ArgumentParser(
        prog="python -m jumpstarter_driver_template.device.simulator",
        description="A simulated bench power supply speaking a SCPI-like line protocol on TCP.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument(
        "--port", type=int, default=5025, help="port to listen on, 0: a free one (default: %(default)s)"
    )
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before every answer")
    parser.add_argument("--slow", type=int, default=0, help="make the first N answers late")
    parser.add_argument("--slow-seconds", type=float, default=5.0, help="how late a slow answer is")
    parser.add_argument("--garbage", type=int, default=0, help="answer the first N commands with garbage")
    parser.add_argument("--drop", type=int, default=0, help="drop the connection on the first N commands")
    parser.add_argument("--only", default="", help="faults hit only commands starting with this")
    args = parser.parse_args(argv)
    faults = Faults(args.latency, args.slow, args.slow_seconds, args.garbage, args.drop, args.only)
    simulator = Simulator(faults, args.host, args.port)

    async def serve() -> None:
        async with anyio.create_task_group() as tasks:
            await tasks.start(simulator.serve)
            print(f"simulated power supply listening on {simulator.address} (Ctrl-C stops it)", flush=True)

    with suppress(KeyboardInterrupt):
        anyio.run(serve)


if __name__ == "__main__":
    main()
