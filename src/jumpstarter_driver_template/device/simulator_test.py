# mypy: allow-untyped-defs
"""The simulator on its own: the protocol over plain TCP, and each fault."""

import socket
import subprocess
import sys

import pytest

from .simulator import GARBAGE, IDN, Instrument, running


@pytest.fixture
def simulator():
    """A simulator in a thread, on a free port."""
    with running() as simulator:
        yield simulator


def exchange(sock: socket.socket, line: str) -> bytes:
    """Send a line on a raw socket and read one line back (b"" if the connection closed instead)."""
    sock.sendall(line.encode() + b"\n")
    return sock.makefile("rb").readline()


@pytest.mark.parametrize(
    ("lines", "answer"),
    [
        (["*IDN?"], IDN),
        (["VOLT 12.5", "VOLT?"], "12.500"),
        (["VOLT 12", "MEAS?"], "0.000,0.000"),  # output off: nothing at the output
        (["VOLT 12", "OUTP ON", "MEAS?"], "12.000,1.200"),
        (["OUTP 1", "OUTP?"], "1"),
        (["OUTP ON", "VOLT 3", "*RST", "OUTP?"], "0"),
        (["ECHO hello there"], "hello there"),
        (["VOLT 31"], "ERR out of range 0-30 V: 31"),
        (["VOLT nan"], "ERR out of range 0-30 V: NAN"),
        (["VOLT high"], "ERR not a number: HIGH"),
        (["FLY"], "ERR unknown command: FLY"),
    ],
)
def test_instrument_protocol(lines, answer):
    """Each command line gets one answer line; the last one is the state the earlier ones left."""
    instrument = Instrument()
    assert [instrument.handle(line) for line in lines][-1] == answer


def test_connections_share_one_instrument(simulator):
    """A setting made on one connection is seen on another, as on a real instrument."""
    with (
        socket.create_connection(("127.0.0.1", simulator.port)) as a,
        socket.create_connection(("127.0.0.1", simulator.port)) as b,
    ):
        assert exchange(a, "VOLT 5") == b"OK\n"
        assert exchange(b, "VOLT?\r") == b"5.000\n"  # "\r\n" line endings are accepted
    assert simulator.commands == 2


def test_wait_connections_is_woken_by_opens_and_closes(simulator):
    """`wait_connections` returns once the count is reached, and names both counts when it is not."""
    with socket.create_connection(("127.0.0.1", simulator.port)) as sock:
        assert exchange(sock, "*IDN?") == IDN.encode() + b"\n"
        simulator.wait_connections(1)
        with pytest.raises(TimeoutError, match=r"1 connections open after 0\.1 s, expected 0"):
            simulator.wait_connections(0, timeout=0.1)
    simulator.wait_connections(0)
    assert simulator.connections == 0


def test_faults_garbage_and_drop(simulator):
    """`garbage` answers the next command with garbage; `drop` closes the connection instead of answering."""
    simulator.faults.garbage = 1
    simulator.faults.drop = 1
    with socket.create_connection(("127.0.0.1", simulator.port)) as sock:
        assert exchange(sock, "*IDN?") == b""  # drop comes first
    with socket.create_connection(("127.0.0.1", simulator.port)) as sock:
        assert exchange(sock, "*IDN?") == GARBAGE
        assert exchange(sock, "*IDN?") == IDN.encode() + b"\n"  # one-shot faults


def test_faults_can_hit_one_command_only(simulator):
    """With `only`, other commands are answered normally and keep the fault for the matching one."""
    simulator.faults.drop, simulator.faults.only = 1, "*IDN?"
    with socket.create_connection(("127.0.0.1", simulator.port)) as sock:
        assert exchange(sock, "OUTP ON") == b"OK\n"
        assert exchange(sock, "*IDN?") == b""
    assert simulator.faults.drop == 0


def test_fault_slow_answers_late(simulator):
    """`slow` delays the next answer by slow_seconds."""
    simulator.faults.slow = 1
    simulator.faults.slow_seconds = 30
    with socket.create_connection(("127.0.0.1", simulator.port), timeout=0.2) as sock, pytest.raises(TimeoutError):
        exchange(sock, "*IDN?")


def test_too_long_line_is_refused(simulator):
    """A line over 256 bytes gets an error and the connection closes."""
    with socket.create_connection(("127.0.0.1", simulator.port)) as sock:
        assert exchange(sock, "ECHO " + "x" * 300) == b"ERR line too long\n"


def test_runs_from_the_command_line():
    """`python -m ...simulator --port 0` listens, prints where, and answers until stopped."""
    command = [sys.executable, "-m", "jumpstarter_driver_template.device.simulator", "--port", "0"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        banner = process.stdout.readline()
        assert banner.startswith("simulated power supply listening on 127.0.0.1:"), banner
        port = int(banner.split()[-4].rpartition(":")[2])
        with socket.create_connection(("127.0.0.1", port)) as sock:
            assert exchange(sock, "*IDN?") == IDN.encode() + b"\n"
    finally:
        process.terminate()
        process.wait(timeout=10)
