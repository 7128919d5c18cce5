# mypy: allow-untyped-defs
"""ExamplePower through a real gRPC session (`serve()`), and the exact output of upstream's `j power` commands."""

import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from click.testing import CliRunner
from jumpstarter.client.core import DriverError, DriverInvalidArgument
from jumpstarter.common.utils import serve
from jumpstarter.config.exporter import ExporterConfigV1Alpha1DriverInstance
from jumpstarter_driver_power.common import PowerReading
from pydantic import ValidationError

from ..commands_test import running
from .driver import ExamplePower

OFF = PowerReading(voltage=0.0, current=0.0)


@pytest.fixture
def power():
    """A simulated power switch with a 12 V / 0.5 A load."""
    with serve(ExamplePower(voltage=12.0, current=0.5)) as client:
        yield client


def test_power_starts_off(power):
    """A fresh switch reads zero volts and zero amps."""
    assert list(power.read()) == [OFF]


def test_power_on_reports_configured_load(power):
    """While on, read() reports the configured voltage and current."""
    power.on()
    assert list(power.read()) == [PowerReading(voltage=12.0, current=0.5)]
    power.off()
    assert list(power.read()) == [OFF]


def test_power_runs_configured_commands(tmp_path):
    """on_command and off_command run on each call."""
    marker = tmp_path / "powered"
    driver = ExamplePower(on_command=["touch", str(marker)], off_command=["rm", str(marker)])
    with serve(driver) as power:
        power.on()
        assert marker.exists()
        power.off()
        assert not marker.exists()


def test_power_command_failure_reports_stderr_and_keeps_state():
    """A failing command is an error carrying its exit status and stderr; the state does not change."""
    driver = ExamplePower(off_command=["sh", "-c", "echo relay stuck >&2; exit 3"])
    with serve(driver) as power:
        power.on()
        with pytest.raises(DriverError, match=r"off_command sh -c .* exited with status 3: relay stuck"):
            power.off()
        assert list(power.read()) == [PowerReading(voltage=5.0, current=1.0)]


def test_power_command_failure_with_long_stderr_keeps_its_message():
    """A command that writes a lot to stderr still fails with its own message, ending with the stderr's tail."""
    driver = ExamplePower(on_command=["sh", "-c", "yes noise | head -c 50000 >&2; echo last words >&2; exit 1"])
    with serve(driver) as power:
        with pytest.raises(DriverError, match=r"(?s)exited with status 1: \.\.\..*last words") as error:
            power.on()
        assert list(power.read()) == [OFF]
    assert len(str(error.value)) < 2200  # not replaced by RESOURCE_EXHAUSTED on a 16 KiB metadata cap


def test_power_missing_command_is_a_clear_error():
    """A command that does not exist names itself in the error."""
    with serve(ExamplePower(on_command=["/nonexistent/relay-tool"])) as power:
        with pytest.raises(DriverError, match="on_command /nonexistent/relay-tool could not start"):
            power.on()
        assert list(power.read()) == [OFF]


def test_power_command_timeout_is_deadline_exceeded():
    """A command running past command_timeout is stopped and reported as DEADLINE_EXCEEDED."""
    with serve(ExamplePower(on_command=["sleep", "30"], command_timeout=0.2)) as power:
        with pytest.raises(DriverError, match=r"DEADLINE_EXCEEDED: on_command sleep 30 timed out after 0.2 s"):
            power.on()
        assert list(power.read()) == [OFF]


def test_power_command_does_not_block_other_calls(tmp_path):
    """While a command runs, the exporter keeps answering other calls."""
    started, release = tmp_path / "started", tmp_path / "release"
    os.mkfifo(started)
    os.mkfifo(release)
    script = f"echo started > {started}; read line < {release}"
    with serve(ExamplePower(on_command=["sh", "-c", script])) as power, ThreadPoolExecutor(1) as pool:
        turning_on = pool.submit(power.on)
        assert started.read_text() == "started\n"  # returns once the command is running
        assert list(power.read()) == [OFF]  # answered while `on` is still waiting for its command
        release.write_text("go\n")
        turning_on.result(timeout=10)
        assert list(power.read()) == [PowerReading(voltage=5.0, current=1.0)]


@pytest.mark.parametrize("method", ["on", "off", "read"])
def test_power_refuses_arguments(power, method):
    """A call with arguments is INVALID_ARGUMENT naming the extra one, and changes nothing."""
    with pytest.raises(DriverInvalidArgument, match=r"argument 1: Unexpected positional argument \(got 'now'\)"):
        if method == "read":
            list(power.streamingcall(method, "now"))
        else:
            power.call(method, "now")
    assert list(power.read()) == [OFF]


def run(client, *args: str) -> str:
    """Run a CLI command like `j power ARGS...` and return its output; it must succeed."""
    result = CliRunner().invoke(client.cli(), list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_power_cli_on_read_off():
    """`j power on`, `read -n 2 -i 0` and `off` print exactly what upstream's client prints."""
    with serve(ExamplePower(voltage=12.0, current=0.5)) as power:
        assert run(power, "on") == ""
        assert run(power, "read", "-n", "2", "-i", "0") == (
            "voltage=12.0 V  current=0.5 A  apparent_power=6.0 VA\n" * 2
        )
        assert run(power, "off") == ""
        assert run(power, "read", "-i", "0") == "voltage=0.0 V  current=0.0 A  apparent_power=0.0 VA\n"


@pytest.mark.parametrize(
    ("config", "field", "problem"),
    [
        ({"voltage": "twelve"}, "voltage", "valid number"),
        ({"on_command": "uhubctl -a on"}, "on_command", "valid list"),
        ({"on_command": []}, "on_command", "at least 1 item"),
        ({"off_comand": ["true"]}, "off_comand", "Unexpected keyword argument"),
        ({"command_timeout": 0}, "command_timeout", "greater than 0"),
    ],
)
def test_config_errors_name_the_field(config, field, problem):
    """Exporter config with a wrong type or an unknown key fails with the field's name, as the exporter builds it."""
    instance = {"type": "jumpstarter_driver_template.power.driver.ExamplePower", "config": config}
    with pytest.raises(ValidationError) as error:
        ExporterConfigV1Alpha1DriverInstance.model_validate(instance).instantiate()
    assert field in str(error.value)
    assert problem in str(error.value)


def _pid_from(path: Path, seconds: float = 10) -> int:
    """The pid a command wrote to `path`, once it has written it."""
    deadline = time.monotonic() + seconds
    while not (path.exists() and path.read_text().strip()):
        assert time.monotonic() < deadline, f"{path} not written within {seconds} s"
        time.sleep(0.01)
    return int(path.read_text())


def test_timed_out_command_leaves_no_childrunning(tmp_path):
    """A relay script whose child outlives it: on timeout, the call fails and the child is ended too."""
    pid_file = tmp_path / "pid"
    script = f"sleep 300 & echo $! > {pid_file}; wait"
    with serve(ExamplePower(on_command=["sh", "-c", script], command_timeout=1)) as power:
        with pytest.raises(DriverError, match="DEADLINE_EXCEEDED"):
            power.on()
        assert not running(_pid_from(pid_file))
        assert list(power.read()) == [OFF]


def test_client_leaving_mid_command_ends_the_command(tmp_path):
    """A client that goes away while `on` runs (Ctrl-C on `j power on`) ends the command and its children."""
    pid_file = tmp_path / "pid"
    script = f"sleep 300 & echo $! > {pid_file}; wait"
    with serve(ExamplePower(on_command=["sh", "-c", script])) as power:
        call = power.portal.start_task_soon(power.call_async, "on")
        child = _pid_from(pid_file)
        call.cancel()  # gRPC cancels the call on the exporter, which cancels the command
        deadline = time.monotonic() + 10
        while running(child):
            assert time.monotonic() < deadline, "the command's child still runs 10 s after the client left"
            time.sleep(0.01)
        assert list(power.read()) == [OFF]
