# mypy: allow-untyped-defs
"""The exact output of every `j device` command, and its errors, through click's CliRunner."""

import pytest
from click.testing import CliRunner
from jumpstarter.common.utils import serve

from . import simulator as simulator_module
from .driver import ExampleDevice
from .simulator import IDN, running


@pytest.fixture
def simulator():
    """A simulated power supply on a free port."""
    with running() as simulator:
        yield simulator


@pytest.fixture
def device(simulator):
    """ExampleDevice on the simulator, with a 24 V bench limit, as `j device` sees it."""
    with serve(ExampleDevice(resource=simulator.resource, timeout=0.5, max_voltage=24)) as client:
        yield client


def run(client, *args: str, stdin: str | None = None) -> str:
    """Run `j device ARGS...` and return its output; it must succeed."""
    result = CliRunner().invoke(client.cli(), list(args), input=stdin, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_help_lists_the_commands(device):
    """`--help` shows each command's docstring."""
    output = run(device, "--help")
    for line in (
        "console  Send each SCPI LINE (or each line of stdin) to the raw console;...",
        "idn      Print the instrument's identity.",
        "measure  Print measurements of the output's voltage and current.",
        "output   Print whether the output is on, or switch it on or off.",
        "query    Send an SCPI COMMAND through the driver; print a query's answer.",
        "state    Show the driver's address, connection and running streams.",
        "voltage  Print the voltage setpoint, or set it to VOLTS.",
    ):
        assert line in output


def test_commands(device, simulator):
    """Set, switch, read back and measure: one line per answer."""
    assert run(device, "idn") == f"{IDN}\n"
    assert run(device, "voltage", "12") == ""
    assert run(device, "voltage") == "12.000\n"
    assert run(device, "output") == "off\n"
    assert run(device, "output", "on") == ""
    assert run(device, "output") == "on\n"
    assert run(device, "measure", "-n", "2", "-i", "0") == "voltage=12.000 V  current=1.200 A\n" * 2
    assert run(device, "query", "OUTP?") == "1\n"
    assert run(device, "query", "VOLT 3") == ""  # a setting: nothing to print, the error queue was empty
    assert run(device, "state") == f"address={simulator.resource} connected=yes streams=0\n"


def test_console_lines_from_arguments_or_stdin(device):
    """`console LINE...` sends each argument; without arguments it reads lines from stdin. Settings print nothing."""
    assert run(device, "console", "VOLT 3", "VOLT?") == "3.000\n"
    refused = '-222,"Data out of range;40 V is outside 0 to 30 V"'
    assert run(device, "console", stdin="*IDN?\nVOLT 40\nSYST:ERR?\n") == f"{IDN}\n{refused}\n"


def test_answers_reach_the_terminal_with_control_characters_escaped(device, monkeypatch):
    """An instrument's answer is untrusted: an OSC sequence or a NUL is printed escaped, by `query` and `console`."""
    monkeypatch.setattr(simulator_module, "IDN", "Evil\x1b]0;owned\x07,\x00,\x7f,1")
    escaped = "Evil\\x1b]0;owned\\x07,\\x00,\\x7f,1\n"
    assert run(device, "query", "*IDN?") == escaped
    assert run(device, "console", "*IDN?") == escaped


@pytest.mark.parametrize(
    ("args", "status", "message"),
    [
        (["voltage", "25"], 2, "volts: 25 V is above this bench's max_voltage of 24 V"),  # refused by the driver
        (["voltage", "31"], 2, "Invalid value for '[VOLTS]': 31.0 is not in the range 0<=x<=30."),
        (["output", "maybe"], 2, "Invalid value for '[on|off]': 'maybe' is not one of 'on', 'off'."),
        (["measure", "-n", "0"], 2, "Invalid value for '--count' / '-n': 0 is not in the range 1<=x<=10000."),
        (["query", "VOLT 1\tVOLT 2"], 2, "command: String should match pattern"),
        (["console", "VOLT \t"], 2, "a console line is 1 to 200 printable ASCII characters"),
        (["console", "VOLT:PROT 30"], 2, "VOLT:PROT would change the over-voltage protection"),
        (["query", "VOLT:PROT MAX"], 2, "VOLT:PROT would change the over-voltage protection"),
    ],
)
def test_bad_input_is_one_error_line(device, args, status, message):
    """Bad input exits with one `Error:` line saying why, never a traceback."""
    result = CliRunner().invoke(device.cli(), args)
    assert result.exit_code == status, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and message in errors[0], result.output
    assert "Traceback" not in result.output


def test_device_errors_are_one_error_line(device, simulator):
    """A device that fails (garbage, no answer) gives one `Error:` line and exit status 1."""
    simulator.faults.garbage = 1
    result = CliRunner().invoke(device.cli(), ["idn"])
    assert result.exit_code == 1, result.output
    assert result.output.startswith("Error: DriverCall 'identify' failed with gRPC UNKNOWN: TCPIP::127.0.0.1::")
    simulator.faults.slow = 1
    result = CliRunner().invoke(device.cli(), ["console", "*IDN?", "--timeout", "0.2"])
    assert (result.exit_code, result.output) == (1, "Error: no answer to '*IDN?' within 0.2 s\n")
