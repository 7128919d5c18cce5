# mypy: allow-untyped-defs
"""The simulator on its own: SCPI as instruments speak it, driven by pyvisa and by plain TCP, and each fault."""

import socket
import subprocess
import sys

import pytest
import pyvisa
from pyvisa.errors import VisaIOError

from .simulator import GARBAGE, IDN, QUEUE_MAX, UNASKED, Instrument, running

ABOVE_PROTECTION = "above the over-voltage protection"


@pytest.fixture
def simulator():
    """A simulator in a thread, on a free port."""
    with running() as simulator:
        yield simulator


@pytest.fixture
def visa(simulator):
    """pyvisa with the pyvisa-py backend, on the simulator's TCPIP SOCKET resource, set up as for a real one."""
    manager = pyvisa.ResourceManager("@py")
    instrument = manager.open_resource(simulator.resource, read_termination="\n", write_termination="\n", timeout=2000)
    yield instrument
    instrument.close()
    manager.close()


def exchange(sock: socket.socket, line: str) -> bytes:
    """Send a line on a raw socket and read one line back (b"" if the connection closed instead)."""
    sock.sendall(line.encode() + b"\n")
    return sock.makefile("rb").readline()


def test_pyvisa_drives_it_the_usual_way(visa, simulator):
    """write() for settings, query() and query_ascii_values() for queries, SYST:ERR? after each setting: every
    answer is the one asked for, and nothing is left unread at the end."""
    assert visa.query("*IDN?") == IDN
    visa.write("*RST")
    visa.write("*CLS")
    for setting in ("VOLT 12", "OUTP ON", "SOUR:VOLT:PROT 20"):
        visa.write(setting)
        assert visa.query("SYST:ERR?") == '0,"No error"', setting
    assert visa.query_ascii_values("VOLT?") == [12.0]
    assert visa.query_ascii_values("MEAS:VOLT?;CURR?", separator=";") == [12.0, 1.2]
    assert visa.query("OUTP?") == "1"
    assert visa.query("*OPC?") == "1"
    visa.write("VOLT 25")  # above the protection: refused, the setpoint stays
    assert visa.query("SYST:ERR?") == '-222,"Data out of range;above the over-voltage protection of 20.000 V"'
    assert visa.query("VOLT?") == "12.000"
    visa.timeout = 200
    with pytest.raises(VisaIOError, match="VI_ERROR_TMO"):  # no answer waiting that nobody asked for
        visa.read()
    assert simulator.connections == 1


@pytest.mark.parametrize(
    ("lines", "answer"),
    [
        (["*IDN?"], IDN),
        (["VOLT 12.5", "VOLT?"], "12.500"),  # a setting answers nothing
        (["voltage 7", "Volt?"], "7.000"),  # case-insensitive, long and short forms
        ([":SOURce:VOLTage:LEVel:IMMediate:AMPLitude 3", "SOUR:VOLT?"], "3.000"),  # the optional nodes, spelt out
        (["VOLT 500 mV", "VOLT?"], "0.500"),  # units
        (["VOLT 2.5V;VOLT?"], "2.500"),  # ';' between commands; the path rule keeps VOLT at the root
        (["VOLT MAX", "VOLT?"], "30.000"),
        (["VOLT 4", "VOLT DEF", "VOLT?"], "0.000"),
        (["VOLT? MAX"], "30.000"),
        (["VOLT 12", "MEAS:VOLT?"], "0.000"),  # output off: nothing at the output
        (["VOLT 12", "OUTP ON", "MEAS:VOLT?;CURR?"], "12.000;1.200"),  # CURR? continues from MEAS:
        (["VOLT 12", "OUTPut:STATe 1", "MEASure:SCALar:CURRent:DC?"], "1.200"),
        (["OUTP ON", "VOLT 3", "*RST", "OUTP?;:VOLT?;:VOLT:PROT?"], "0;0.000;33.000"),
        (["VOLT:PROT 10", "VOLT 11", "SYST:ERR?"], f'-222,"Data out of range;{ABOVE_PROTECTION} of 10.000 V"'),
        (
            ["VOLT 11", "VOLT:PROT 10", "SYST:ERR?"],
            '-221,"Settings conflict;protection below the setpoint of 11.000 V"',
        ),
        (["VOLT 31", "SYST:ERR?"], '-222,"Data out of range;31 V is outside 0 to 30 V"'),
        (["VOLT high", "SYST:ERR?"], '-104,"Data type error;high is not a number"'),
        (["VOLT 5 A", "SYST:ERR?"], '-131,"Invalid suffix;A"'),
        (["VOLT", "SYST:ERR?"], '-109,"Missing parameter"'),
        (["OUTP maybe", "SYST:ERR?"], '-224,"Illegal parameter value;maybe is not ON, OFF, 1 or 0"'),
        (["*IDN? 1", "SYST:ERR?"], '-108,"Parameter not allowed"'),
        (["FLY", "SYST:ERR?"], '-113,"Undefined header"'),
        (["VOLT:NONSENSE 1", "SYST:ERR:NEXT?"], '-113,"Undefined header"'),
        (["VOLT#", "SYST:ERR?"], '-102,"Syntax error"'),
        (["SYST:ERR?"], '0,"No error"'),
        (["FLY", "*CLS", "SYST:ERR?"], '0,"No error"'),
        (["FLY", "VOLT 99", "*ESR?"], "48"),  # command error (32) and execution error (16)
        (["FLY", "*ESR?", "*ESR?"], "0"),  # reading clears it
        (["FLY", "*CLS", "*ESR?"], "0"),  # and so does *CLS
        (["*OPC", "*ESR?"], "1"),
        (["*OPC?"], "1"),
        (["*ESE 32", "*ESE?"], "32"),
        (["SYST:VERS?"], "1999.0"),
    ],
)
def test_instrument_scpi(lines, answer):
    """Each query answers one line, settings answer nothing; the last answer is the state the earlier lines left."""
    instrument = Instrument()
    answers = [instrument.handle(line) for line in lines]
    assert answers[-1] == answer
    assert all(a is None for line, a in zip(lines, answers, strict=True) if "?" not in line)


def test_error_queue_overflow_keeps_the_oldest_and_says_so():
    """A full queue keeps its oldest errors; the newest entry becomes -350 (SCPI-99)."""
    instrument = Instrument()
    for _ in range(QUEUE_MAX + 5):
        instrument.handle("FLY")
    errors = [instrument.handle("SYST:ERR?") for _ in range(QUEUE_MAX + 1)]
    assert errors == ['-113,"Undefined header"'] * (QUEUE_MAX - 1) + ['-350,"Queue overflow"', '0,"No error"']


def test_empty_lines_are_ignored(simulator):
    """An empty line is no command: no answer, no error (a client's stray newline does not shift the answers)."""
    with socket.create_connection(("127.0.0.1", simulator.port)) as sock:
        sock.sendall(b"\n\r\n  \n")
        assert exchange(sock, "SYST:ERR?") == b'0,"No error"\n'
    assert simulator.commands == 1


def test_connections_share_one_instrument(simulator):
    """A setting made on one connection is seen on another, as on a real instrument."""
    with (
        socket.create_connection(("127.0.0.1", simulator.port)) as a,
        socket.create_connection(("127.0.0.1", simulator.port)) as b,
    ):
        a.sendall(b"VOLT 5\n")
        assert exchange(a, "*OPC?") == b"1\n"
        assert exchange(b, "VOLT?\r") == b"5.000\n"  # "\r\n" line endings are accepted
    assert simulator.commands == 3


def test_connections_share_one_error_queue(simulator):
    """An error made on one connection is read on another: the queue is the instrument's, as on a real one."""
    with (
        socket.create_connection(("127.0.0.1", simulator.port)) as a,
        socket.create_connection(("127.0.0.1", simulator.port)) as b,
    ):
        a.sendall(b"FLY\n")
        assert exchange(a, "*OPC?") == b"1\n"
        assert exchange(b, "SYST:ERR?") == b'-113,"Undefined header"\n'


def test_wait_connections_is_woken_by_opens_and_closes(simulator):
    """`wait_connections` returns once the count is reached, and names both counts when it is not."""
    with socket.create_connection(("127.0.0.1", simulator.port)) as sock:
        assert exchange(sock, "*IDN?") == IDN.encode() + b"\n"
        simulator.wait_connections(1)
        with pytest.raises(TimeoutError, match=r"1 connections open after 0\.1 s, expected 0"):
            simulator.wait_connections(0, timeout=0.1)
    simulator.wait_connections(0)
    assert simulator.connections == 0


def test_faults_garbage_drop_and_unasked(simulator):
    """`drop` closes the connection instead of answering; `garbage` answers garbage; `unasked` sends a line first."""
    simulator.faults.garbage, simulator.faults.drop, simulator.faults.unasked = 1, 1, 1
    with socket.create_connection(("127.0.0.1", simulator.port)) as sock:
        assert exchange(sock, "*IDN?") == b""  # drop comes first
    with socket.create_connection(("127.0.0.1", simulator.port)) as sock:
        assert exchange(sock, "*IDN?") == GARBAGE
        lines = sock.makefile("rb")
        sock.sendall(b"*IDN?\n")
        assert [lines.readline(), lines.readline()] == [UNASKED, IDN.encode() + b"\n"]
        assert exchange(sock, "*IDN?") == IDN.encode() + b"\n"  # one-shot faults


def test_faults_can_hit_one_command_only(simulator):
    """With `only`, other commands are answered normally and keep the fault for the matching one."""
    simulator.faults.drop, simulator.faults.only = 1, "*IDN?"
    with socket.create_connection(("127.0.0.1", simulator.port)) as sock:
        assert exchange(sock, "OUTP?") == b"0\n"
        assert exchange(sock, "*IDN?") == b""
    assert simulator.faults.drop == 0


def test_fault_slow_answers_late(simulator):
    """`slow` delays the next answer by slow_seconds."""
    simulator.faults.slow = 1
    simulator.faults.slow_seconds = 30
    with socket.create_connection(("127.0.0.1", simulator.port), timeout=0.2) as sock, pytest.raises(TimeoutError):
        exchange(sock, "*IDN?")


def test_too_long_line_is_an_input_buffer_overrun(simulator):
    """A line over 256 bytes: error -363 is queued and the connection closes (the rest cannot be told apart)."""
    with socket.create_connection(("127.0.0.1", simulator.port)) as sock:
        assert exchange(sock, "VOLT " + "1" * 300) == b""
    with socket.create_connection(("127.0.0.1", simulator.port)) as sock:
        assert exchange(sock, "SYST:ERR?") == b'-363,"Input buffer overrun;a line is at most 256 bytes"\n'


def test_runs_from_the_command_line():
    """`python -m ...simulator --port 0` listens, prints where, and answers until stopped."""
    command = [sys.executable, "-m", "jumpstarter_driver_template.device.simulator", "--port", "0"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        banner = process.stdout.readline()
        assert banner.startswith("simulated power supply listening on 127.0.0.1:"), banner
        port = int(banner.split()[5].rpartition(":")[2])
        assert f"(TCPIP::127.0.0.1::{port}::SOCKET;" in banner
        with socket.create_connection(("127.0.0.1", port)) as sock:
            assert exchange(sock, "*IDN?") == IDN.encode() + b"\n"
    finally:
        process.terminate()
        process.wait(timeout=10)
