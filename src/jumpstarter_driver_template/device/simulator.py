"""A simulated bench power supply on TCP that speaks SCPI as IEEE 488.2 instruments do.

Tests start it in a thread (`running()`), the driver starts one inside the exporter when its
config says `simulator: true`, and you can run one by hand and drive it with pyvisa, or with nc:

    uv run python -m jumpstarter_driver_template.device.simulator --port 5025
    printf 'VOLT 5\\nOUTP ON\\nMEAS:VOLT?;CURR?\\nSYST:ERR?\\n' | nc -q1 127.0.0.1 5025

pyvisa's resource string for it: `TCPIP::127.0.0.1::5025::SOCKET` (terminations "\\n").

What a real SCPI client relies on, and this simulator does:
- a **setting sends no answer**; only queries (`...?`) answer, one response line per program message
  (the answers of several queries in one message are joined by `;`); an empty line is ignored;
- errors go to the **error queue**, read with `SYST:ERR?` (`0,"No error"` when empty), with the
  standard codes; `*ESR?` reports (and clears) the event status register, `*CLS` clears both;
- headers are case-insensitive, in short or long form (`VOLT`, `voltage`), a leading `:` is the
  root, optional nodes may be left out (`[SOURce:]VOLTage[:LEVel][:IMMediate][:AMPLitude]`);
- numbers take `MIN|MAX|DEF` and units (`5 V`, `500 mV`); booleans `ON|OFF|1|0`;
- **over-voltage protection**: a setpoint above `VOLT:PROT` is refused (-222), as is a protection
  level below the setpoint (-221); the driver programs it from its `max_voltage`.

The grammar is a small part of SCPI-99 (volume 1, chapters 6-7) and IEEE 488.2 (chapters 7-8):
program messages of units separated by `;`, compound headers and the header path rule (after
`MEAS:VOLT?`, a `CURR?` in the same message is `MEAS:CURR?`), common commands, `<NRf>` numbers
with suffixes and `MIN|MAX|DEF`, `<Boolean>` and the error/event queue. Not covered: block and
string data, channel suffixes (`OUTP2`), the status subsystem beyond `*ESR?`/`*ESE`, triggering.
The Python SCPI libraries are the *client* side (pyvisa; the `scpi` package, python-scpi, sends
commands and parses answers over serial or TCP, LGPL, with pyserial): none parses commands as an
instrument, so this part is ours. Keep it small when you add your device's commands to COMMANDS.

Commands (short forms; `?` queries):

    *IDN?  *RST  *CLS  *OPC  *OPC?  *ESR?  *ESE <n>  *ESE?  *WAI  *TST?
    [SOUR:]VOLT <v>|MIN|MAX|DEF   [SOUR:]VOLT? [MIN|MAX|DEF]      setpoint, 0 to 30 V
    [SOUR:]VOLT:PROT <v>|MIN|MAX|DEF   [SOUR:]VOLT:PROT?         protection, 0 to 33 V (*RST: 33)
    OUTP[:STAT] ON|OFF|1|0        OUTP?                         *RST: off
    MEAS[:SCAL]:VOLT[:DC]?        MEAS[:SCAL]:CURR[:DC]?        at the output: a 10 ohm load, 0 while off
    SYST:ERR[:NEXT]?              SYST:VERS?

Every connection talks to the same instrument, with one error queue, as on a real one. `Faults`
make it misbehave the way real devices do: answer late, answer garbage, drop the connection, send
a line nobody asked for. This module is exporter-side only: the client never imports it.
"""

from __future__ import annotations

import argparse
import re
import socket
import threading
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass

import anyio
from anyio.abc import SocketAttribute, SocketStream, TaskStatus
from anyio.streams.buffered import BufferedByteReceiveStream

from .common import VOLTS_MAX

IDN = "Jumpstarter,ExampleSupply,SIM-0001,1.0"
LOAD_OHMS = 10.0
PROTECTION_MAX = 33.0
"""The over-voltage protection's range is 0 to 110% of the output's (*RST sets it to the maximum)."""
MAX_LINE = 256
QUEUE_MAX = 10
"""Error queue length: once full, the newest entry is replaced by -350 (SCPI-99 21.8)."""
GARBAGE = b"\xff\xfe#?garbled\n"
UNASKED = b"unasked: front panel message\n"
NO_ERROR = '0,"No error"'

# SCPI-99 standard errors (volume 2, chapter 21) this instrument raises.
ERRORS = {
    -100: "Command error",
    -102: "Syntax error",
    -104: "Data type error",
    -108: "Parameter not allowed",
    -109: "Missing parameter",
    -113: "Undefined header",
    -131: "Invalid suffix",
    -221: "Settings conflict",
    -222: "Data out of range",
    -224: "Illegal parameter value",
    -350: "Queue overflow",
    -363: "Input buffer overrun",
}
# IEEE 488.2 event status register bits, set by errors of each class and by *OPC.
ESR_OPC, ESR_QYE, ESR_DDE, ESR_EXE, ESR_CME = 1, 4, 8, 16, 32


class ScpiError(Exception):
    """A standard error: its code, and optional detail appended to the standard text after ';'."""

    def __init__(self, code: int, detail: str = "") -> None:
        super().__init__(code, detail)
        self.code = code
        self.text = ERRORS[code] + (f";{detail}" if detail else "")


@dataclass
class Faults:
    """How the simulator misbehaves. Tests change these while it runs; counts go down as faults happen."""

    latency: float = 0.0
    """Seconds before every command is handled (real instruments take milliseconds)."""
    slow: int = 0
    """The next `slow` commands are handled `slow_seconds` late."""
    slow_seconds: float = 5.0
    garbage: int = 0
    """The next `garbage` answers are garbage (not even UTF-8)."""
    drop: int = 0
    """The next `drop` commands close the connection instead of being handled."""
    unasked: int = 0
    """The next `unasked` answers come after a line nobody asked for (UNASKED), in the same packet."""
    only: str = ""
    """If set, faults hit only lines that start with it (e.g. "*IDN?": a device that is still booting)."""


# A header pattern: mnemonics separated by ':', the short form in capitals, optional nodes in brackets.
Handler = Callable[["Instrument", bool, list[str]], "str | None"]


def _nodes(pattern: str) -> list[tuple[str, str, bool]]:
    """`[SOURce:]VOLTage[:LEVel]` -> [("SOUR", "SOURCE", True), ("VOLT", "VOLTAGE", False), ("LEV", "LEVEL", True)]."""
    nodes = []
    for optional, name in re.findall(r"(\[?):?([A-Za-z*]+):?\]?", pattern):
        short = "".join(c for c in name if not c.islower())
        nodes.append((short, name.upper(), bool(optional)))
    return nodes


def _matches(nodes: list[tuple[str, str, bool]], mnemonics: list[str]) -> bool:
    """Whether the typed mnemonics spell the pattern (each in its short or long form, optional nodes left out)."""
    if not nodes:
        return not mnemonics
    (short, long, optional), rest = nodes[0], nodes[1:]
    if mnemonics and mnemonics[0] in (short, long) and _matches(rest, mnemonics[1:]):
        return True
    return optional and _matches(rest, mnemonics)


class Instrument:
    """The simulated power supply's state and its SCPI parser: `handle(line)` returns the response line, if any."""

    def __init__(self) -> None:
        self.errors: deque[tuple[int, str]] = deque()
        self.esr = 0
        self.ese = 0
        self.reset()

    def reset(self) -> None:
        """*RST: output off, setpoint 0 V, protection at its maximum."""
        self.voltage = 0.0
        self.output = False
        self.protection = PROTECTION_MAX

    def error(self, code: int, text: str) -> None:
        """Queue an error (the oldest is read first) and set its event status bit."""
        if len(self.errors) >= QUEUE_MAX:
            self.errors[-1] = (-350, ERRORS[-350])
        else:
            self.errors.append((code, text))
        self.esr |= ESR_CME if code > -200 else ESR_EXE if code > -300 else ESR_DDE if code > -400 else ESR_QYE

    def handle(self, line: str) -> str | None:
        """Run one program message; return its response message (None for settings only, or an empty line)."""
        responses: list[str] = []
        path: list[str] = []  # the header path rule: relative headers continue from the previous one's node
        for unit in _split(line.strip(), ";"):
            if not unit:
                continue
            header, _, arguments = unit.partition(" ")
            try:
                answer, path = self._unit(header, arguments.strip(), path)
            except ScpiError as e:
                self.error(e.code, e.text)
                continue
            if answer is not None:
                responses.append(answer)
        return ";".join(responses) if responses else None

    def _unit(self, header: str, arguments: str, path: list[str]) -> tuple[str | None, list[str]]:
        query = header.endswith("?")
        name = header.removesuffix("?")
        params = [p.strip() for p in _split(arguments, ",")] if arguments else []
        if name.startswith("*"):  # common commands leave the header path alone
            if not re.fullmatch(r"\*[A-Za-z]+", name):
                raise ScpiError(-102)
            handler = COMMON.get((name.upper(), query))
            if handler is None:
                raise ScpiError(-113)
            return handler(self, query, params), path
        if not re.fullmatch(r":?[A-Za-z][A-Za-z0-9_]*(:[A-Za-z][A-Za-z0-9_]*)*", name):
            raise ScpiError(-102)
        mnemonics = [m.upper() for m in name.split(":")]
        mnemonics = mnemonics[1:] if mnemonics[0] == "" else path + mnemonics
        for nodes, handler in COMMANDS:
            if _matches(nodes, mnemonics):
                return handler(self, query, params), mnemonics[:-1]
        raise ScpiError(-113)

    # Handlers: (instrument, query?, parameters) -> answer or None.
    def _voltage(self, query: bool, params: list[str]) -> str | None:
        if query:
            return f"{_limit(params, 0.0, VOLTS_MAX, 0.0, self.voltage):.3f}"
        volts = _number(params, 0.0, VOLTS_MAX, 0.0)
        if volts > self.protection:
            raise ScpiError(-222, f"above the over-voltage protection of {self.protection:.3f} V")
        self.voltage = volts
        return None

    def _protection(self, query: bool, params: list[str]) -> str | None:
        if query:
            return f"{_limit(params, 0.0, PROTECTION_MAX, PROTECTION_MAX, self.protection):.3f}"
        level = _number(params, 0.0, PROTECTION_MAX, PROTECTION_MAX)
        if level < self.voltage:
            raise ScpiError(-221, f"protection below the setpoint of {self.voltage:.3f} V")
        self.protection = level
        return None

    def _output(self, query: bool, params: list[str]) -> str | None:
        if query:
            _no_params(params)
            return "1" if self.output else "0"
        if len(params) != 1:
            raise ScpiError(-109 if not params else -108)
        match params[0].upper():
            case "ON" | "1":
                self.output = True
            case "OFF" | "0":
                self.output = False
            case _:
                raise ScpiError(-224, f"{params[0][:20]} is not ON, OFF, 1 or 0")
        return None

    def _measure_voltage(self, query: bool, params: list[str]) -> str | None:
        _query_only(query, params)
        return f"{self.voltage if self.output else 0.0:.3f}"

    def _measure_current(self, query: bool, params: list[str]) -> str | None:
        _query_only(query, params)
        return f"{(self.voltage if self.output else 0.0) / LOAD_OHMS:.3f}"

    def _error_queue(self, query: bool, params: list[str]) -> str | None:
        _query_only(query, params)
        if not self.errors:
            return NO_ERROR
        code, text = self.errors.popleft()
        return f'{code},"{text}"'

    def _version(self, query: bool, params: list[str]) -> str | None:
        _query_only(query, params)
        return "1999.0"


def _split(text: str, separator: str) -> list[str]:
    """Split at `separator` outside double-quoted strings."""
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    for c in text:
        if c == '"':
            quoted = not quoted
        if c == separator and not quoted:
            parts.append("".join(current).strip())
            current = []
        else:
            current.append(c)
    parts.append("".join(current).strip())
    return parts


NUMBER = re.compile(r"([+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)\s*([A-Za-z]*)")
# Suffixes in SCPI are case-insensitive: "MV" and "mV" are both millivolts (SCPI-99 7.7.3).
VOLT_SUFFIXES = {"": 1.0, "V": 1.0, "MV": 1e-3, "UV": 1e-6, "KV": 1e3}


def _no_params(params: list[str]) -> None:
    if params:
        raise ScpiError(-108)


def _query_only(query: bool, params: list[str]) -> None:
    if not query:
        raise ScpiError(-113)  # a query-only header used as a setting is not defined
    _no_params(params)


def _keyword(value: str, low: float, high: float, default: float) -> float | None:
    return {"MIN": low, "MINIMUM": low, "MAX": high, "MAXIMUM": high, "DEF": default, "DEFAULT": default}.get(
        value.upper()
    )


def _number(params: list[str], low: float, high: float, default: float) -> float:
    """One <numeric_value> in volts: <NRf> with an optional suffix, or MIN|MAX|DEF; -222 outside low..high."""
    if not params:
        raise ScpiError(-109)
    if len(params) > 1:
        raise ScpiError(-108)
    if (keyword := _keyword(params[0], low, high, default)) is not None:
        return keyword
    found = NUMBER.fullmatch(params[0])
    if found is None:
        raise ScpiError(-104, f"{params[0][:20]} is not a number")
    number, suffix = found.groups()
    if suffix.upper() not in VOLT_SUFFIXES:
        raise ScpiError(-131, suffix[:20])
    volts = float(number) * VOLT_SUFFIXES[suffix.upper()]
    if not low <= volts <= high:
        raise ScpiError(-222, f"{volts:g} V is outside {low:g} to {high:g} V")
    return round(volts, 6)


def _limit(params: list[str], low: float, high: float, default: float, value: float) -> float:
    """A setting's query: its value, or with MIN|MAX|DEF the limit asked for."""
    if not params:
        return value
    if len(params) > 1 or (keyword := _keyword(params[0], low, high, default)) is None:
        raise ScpiError(-224, "a query takes MIN, MAX or DEF")
    return keyword


def _idn(instrument: Instrument, query: bool, params: list[str]) -> str | None:
    _no_params(params)
    return IDN


def _rst(instrument: Instrument, query: bool, params: list[str]) -> str | None:
    _no_params(params)
    instrument.reset()
    return None


def _cls(instrument: Instrument, query: bool, params: list[str]) -> str | None:
    _no_params(params)
    instrument.errors.clear()
    instrument.esr = 0
    return None


def _opc(instrument: Instrument, query: bool, params: list[str]) -> str | None:
    _no_params(params)  # every command completes before the next is read: *OPC? answers at once
    if query:
        return "1"
    instrument.esr |= ESR_OPC
    return None


def _esr(instrument: Instrument, query: bool, params: list[str]) -> str | None:
    _no_params(params)
    value, instrument.esr = instrument.esr, 0
    return str(value)


def _ese(instrument: Instrument, query: bool, params: list[str]) -> str | None:
    if query:
        _no_params(params)
        return str(instrument.ese)
    if len(params) != 1 or not params[0].isdigit() or int(params[0]) > 255:
        raise ScpiError(-224, "*ESE takes 0 to 255")
    instrument.ese = int(params[0])
    return None


def _nothing(instrument: Instrument, query: bool, params: list[str]) -> str | None:
    _no_params(params)
    return "0" if query else None  # *WAI does nothing here; *TST? reports a passed self-test


COMMON: dict[tuple[str, bool], Handler] = {
    ("*IDN", True): _idn,
    ("*RST", False): _rst,
    ("*CLS", False): _cls,
    ("*OPC", False): _opc,
    ("*OPC", True): _opc,
    ("*ESR", True): _esr,
    ("*ESE", False): _ese,
    ("*ESE", True): _ese,
    ("*WAI", False): _nothing,
    ("*TST", True): _nothing,
}
# The first pattern the typed header matches wins: longer ones first where a shorter one would also match.
COMMANDS: list[tuple[list[tuple[str, str, bool]], Handler]] = [
    (_nodes("[SOURce:]VOLTage:PROTection[:LEVel]"), Instrument._protection),
    (_nodes("[SOURce:]VOLTage[:LEVel][:IMMediate][:AMPLitude]"), Instrument._voltage),
    (_nodes("OUTPut[:STATe]"), Instrument._output),
    (_nodes("MEASure[:SCALar]:VOLTage[:DC]"), Instrument._measure_voltage),
    (_nodes("MEASure[:SCALar]:CURRent[:DC]"), Instrument._measure_current),
    (_nodes("SYSTem:ERRor[:NEXT]"), Instrument._error_queue),
    (_nodes("SYSTem:VERSion"), Instrument._version),
]


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
        """Non-empty lines received so far."""
        self.received: deque[str] = deque(maxlen=1000)
        """The latest lines received, for tests that check what a client sent."""
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None
        # stop() writes a byte here; the server's loop waits for it, so stopping needs no polling.
        self._stop_reader, self._stop_writer = socket.socketpair()

    @property
    def address(self) -> str:
        """host:port it listens on."""
        return f"{self.host}:{self.port}"

    @property
    def resource(self) -> str:
        """Its VISA resource string, for pyvisa and for the driver's `resource:`."""
        return f"TCPIP::{self.host}::{self.port}::SOCKET"

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
                        overrun = ScpiError(-363, f"a line is at most {MAX_LINE} bytes")
                        self.instrument.error(overrun.code, overrun.text)
                        return  # the rest of the line cannot be told from the next one: hang up
                    if not line.strip():
                        continue  # an empty line is an empty program message: nothing to do, nothing to answer
                    answer = await self._answer(line)
                    if answer is None:
                        return  # a dropped connection: closed without an answer
                    if answer:
                        await stream.send(answer)
        except (anyio.EndOfStream, anyio.IncompleteRead, anyio.BrokenResourceError, OSError):
            pass  # the client went away: a device does not care
        finally:
            self._count_connection(-1)

    async def _answer(self, raw: bytes) -> bytes | None:
        """What to send back for one line: the response (b"" for none), or None to hang up."""
        self.commands += 1
        line = raw.decode(errors="replace")
        self.received.append(line.strip())
        faults = self.faults
        if not line.startswith(faults.only):
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
        response = self.instrument.handle(line)
        if response is None:
            return b""
        if faults.garbage > 0:
            faults.garbage -= 1
            return GARBAGE
        answer = (response + "\n").encode()
        if faults.unasked > 0:
            faults.unasked -= 1
            answer = UNASKED + answer
        return answer

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
        description="A simulated bench power supply speaking SCPI (IEEE 488.2) on TCP.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument(
        "--port", type=int, default=5025, help="port to listen on, 0: a free one (default: %(default)s)"
    )
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before every command is handled")
    parser.add_argument("--slow", type=int, default=0, help="handle the first N commands late")
    parser.add_argument("--slow-seconds", type=float, default=5.0, help="how late a slow command is")
    parser.add_argument("--garbage", type=int, default=0, help="answer the first N queries with garbage")
    parser.add_argument("--drop", type=int, default=0, help="drop the connection on the first N commands")
    parser.add_argument("--unasked", type=int, default=0, help="send an unasked line before the first N answers")
    parser.add_argument("--only", default="", help="faults hit only lines starting with this")
    args = parser.parse_args(argv)
    faults = Faults(args.latency, args.slow, args.slow_seconds, args.garbage, args.drop, args.unasked, args.only)
    simulator = Simulator(faults, args.host, args.port)

    async def serve() -> None:
        async with anyio.create_task_group() as tasks:
            await tasks.start(simulator.serve)
            print(
                f"simulated power supply listening on {simulator.address} ({simulator.resource}; Ctrl-C stops it)",
                flush=True,
            )

    with suppress(KeyboardInterrupt):
        anyio.run(serve)


if __name__ == "__main__":
    main()
