# mypy: allow-untyped-defs
"""ExampleDevice end to end: `j device` in local mode, lease boundaries, and a `jmp run` exporter with real clients.

The example config runs the supply's simulator inside the exporter (`simulator: true`). Tests that need to
see the instrument itself (its output between leases) run a simulator here and point the driver at it.
"""

import re
import signal
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from harness import (
    JMP,
    drivers_only,
    exporter_process,
    free_port,
    local_shell,
    run,
    start,
    stop_group,
    wait_for,
    write_config,
)

from jumpstarter_driver_template.device.simulator import IDN, running

# The exporters here serve this driver alone: each `j` loads one client.
CONFIG = drivers_only("device")


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One local session running every `j device` command (each `j` start costs seconds of imports)."""
    config = write_config(tmp_path_factory.mktemp("local"), config=CONFIG)
    return local_shell(
        config,
        """
        j device idn
        j device voltage 12
        j device output on
        j device measure -n 2 -i 0
        j device state
        j device query 'VOLT:PROT?'
        j device query 'VOLT 30' || echo "query VOLT 30 REFUSED"
        j device console '*IDN?' 'MEAS:VOLT?;CURR?'
        echo 'VOLT?' | j device console
        j device voltage 25 || echo "voltage 25 REFUSED"
        """,
    )


def test_device_commands_in_local_mode(session: str):
    """Each `j device` command works against the simulator the driver started, and prints its answer."""
    assert f"{IDN}\n" in session
    assert "voltage=12.000 V  current=1.200 A\n" * 2 in session
    assert re.search(r"^address=TCPIP::127\.0\.0\.1::\d+::SOCKET connected=yes streams=0$", session, re.MULTILINE)
    assert f"\n{IDN}\n12.000;1.200\n12.000\n" in session  # the console: two lines, then one from stdin


def test_bench_limit_from_the_config_reaches_the_terminal(session: str):
    """max_voltage (24 V in the example config) refuses 25 V with one error line; it is the instrument's protection,
    so a raw `query` is refused by the instrument itself."""
    assert "Error: DriverCall 'set_voltage' failed with gRPC INVALID_ARGUMENT: volts: 25 V is above" in session
    assert "voltage 25 REFUSED" in session
    assert "\n24.000\n" in session
    assert "refused 'VOLT 30': -222,'Data out of range;above the over-voltage protection of 24.000 V'" in session
    assert "query VOLT 30 REFUSED" in session


def test_each_lease_ends_and_starts_with_the_output_off(tmp_path: Path):
    """Lease end (close) and lease start (reset) switch the instrument's output off, whatever was left on."""
    with running() as simulator:
        config = write_config(tmp_path, {"device": {"simulator": False, "resource": simulator.resource}}, config=CONFIG)
        local_shell(config, "j device voltage 5\nj device output on\nj device output")
        assert simulator.instrument.output is False  # the shell's lease ended
        simulator.wait_connections(0)
        simulator.instrument.output = True  # someone switched it on by hand between leases
        assert local_shell(config, "j device output").splitlines()[-2] == "off"


def test_unreachable_device_names_its_address(tmp_path: Path):
    """No instrument at the configured address: the shell starts, and `j device idn` says where it looked."""
    resource = f"TCPIP::127.0.0.1::{free_port()}::SOCKET"
    config = write_config(tmp_path, {"device": {"simulator": False, "resource": resource}}, config=CONFIG)
    out = local_shell(config, "j device idn || echo 'idn FAILED'")
    assert f"cannot connect to {resource}: Connection refused" in out
    assert "idn FAILED" in out


def test_simulator_with_an_address_stops_jmp_shell(tmp_path: Path):
    """`simulator: true` with a resource is a config error, before the shell starts."""
    config = write_config(tmp_path, {"device": {"resource": "TCPIP::127.0.0.1::5025::SOCKET"}}, config=CONFIG)
    result = run([JMP, "shell", "--exporter-config", str(config), "--", "echo", "SHELL STARTED"], cwd=tmp_path)
    assert result.returncode != 0
    message = "simulator: true starts its own instrument on 127.0.0.1: remove resource"
    assert message in " ".join(result.stdout.split())  # the terminal wraps the message
    assert "SHELL STARTED" not in result.stdout


def test_jmp_run_serves_clients_and_stops_its_simulator(tmp_path: Path):
    """Through `jmp run`: 50 concurrent clients each get their own answers (a set and a read-back in one line);
    a client killed mid-stream ends the stream on the exporter; stopping the exporter stops its simulator."""
    with exporter_process(tmp_path, config=CONFIG) as exporter, exporter.client() as remote:
        address = remote.device.state().address

        def client(name: int) -> list[str]:
            with exporter.client() as own:
                values = [f"{(name * 4 + i) / 100:.3f}" for i in range(4)]
                return [volts for volts in values if own.device.query(f"VOLT {volts};VOLT?") != volts]

        with ThreadPoolExecutor(50) as pool:
            assert [wrong for wrongs in pool.map(client, range(50)) for wrong in wrongs] == []

        measuring = start(exporter.shell_args("j", "device", "measure", "-n", "10000", "-i", "0.05"))
        try:
            wait_for(lambda: remote.device.state().streams == 1, what="the stream running", timeout=60)
        finally:
            stop_group(measuring, signal.SIGINT)  # Ctrl-C
        wait_for(lambda: remote.device.state().streams == 0, what="the stream ended", context=exporter.log_tail)
    port = int(address.split("::")[2])
    with running(port=port):  # the port is free again: the simulator stopped with the exporter
        pass
