# mypy: allow-untyped-defs
"""ExamplePower end to end: upstream's `j power` commands through real exporters."""

import signal
from pathlib import Path

from harness import (
    drivers_only,
    exporter_process,
    hooked_exporter,
    hooks_config,
    local_shell,
    running,
    start,
    stop_group,
    wait_for,
    write_config,
)

# The exporters here serve this driver alone: each `j` loads one client.
CONFIG = drivers_only("power")

ON = "voltage=12.0 V  current=0.5 A  apparent_power=6.0 VA"
OFF = "voltage=0.0 V  current=0.0 A  apparent_power=0.0 VA"


def test_power_commands_in_local_mode(tmp_path: Path):
    """`j power on/read/off` drive ExamplePower with the load from the exporter config."""
    out = local_shell(
        write_config(tmp_path, config=CONFIG), "j power on\nj power read\nj power off\necho 'after off:'\nj power read"
    )
    on, off = out.split("after off:")
    assert ON in on and OFF not in on, out
    assert OFF in off, out


def test_power_commands_run_the_configured_tools(tmp_path: Path):
    """With on_command/off_command in the config, `j power on/off` run them."""
    marker = tmp_path / "relay-closed"
    config = write_config(
        tmp_path, {"power": {"on_command": ["touch", str(marker)], "off_command": ["true"]}}, config=CONFIG
    )
    local_shell(config, "j power on")
    assert marker.exists()


def test_client_interrupted_mid_command_ends_the_command(tmp_path: Path):
    """Ctrl-C on `j power on` while the relay script runs ends the script and every process it started."""
    pid_file = tmp_path / "child.pid"
    script = ["sh", "-c", f"sleep 300 & echo $! > {pid_file}; wait"]
    with exporter_process(tmp_path / "exporter", {"power": {"on_command": script}}, config=CONFIG) as exporter:
        client = start(exporter.shell_args("j", "power", "on"), cwd=exporter.workdir)
        try:
            child = int(wait_for(lambda: pid_file.read_text().strip(), timeout=60, what="the relay script's child"))
        finally:
            stop_group(client, signal.SIGINT)  # Ctrl-C reaches the terminal's whole process group
        assert client.returncode != -signal.SIGKILL, "jmp shell ignored Ctrl-C (stop_group had to kill it)"
        wait_for(lambda: not running(child), what="the relay script's child ended", context=exporter.log_tail)
        with exporter.client() as remote:  # in-process: milliseconds, where another `jmp shell` costs seconds
            (reading,) = list(remote.power.read())
        assert (reading.voltage, reading.current) == (0.0, 0.0)  # the state did not change


def test_example_hooks_power_the_device_for_the_lease(tmp_path: Path):
    """examples/exporter-hooks.yaml: beforeLease switches the power on (at its configured voltage), afterLease off."""
    config = hooks_config()
    with hooked_exporter(tmp_path, config) as exporter:
        result = exporter.shell("j", "power", "read", passphrase=None, timeout=180)
        assert result.returncode == 0, result.stdout + exporter.log_tail()
        assert f"voltage={config['export']['power']['config']['voltage']} V" in result.stdout, result.stdout
    after = exporter.log.read_text().split("Executing after-lease hook", 1)[-1]
    assert "power off" in after, exporter.log_tail()  # the driver's log line: afterLease switched it off
