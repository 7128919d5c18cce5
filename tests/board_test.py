# mypy: allow-untyped-defs
"""ExampleBoard end to end: `j board` (children's commands and the workflow) and the `psu` alias, in real exporters."""

from pathlib import Path

import yaml
from harness import JMP, Exporter, drivers_only, local_shell, run, write_config

from jumpstarter_driver_template.device.simulator import IDN

# The exporters here serve this driver alone (and the alias that refers into it): each `j` loads one client.
CONFIG = drivers_only("board", "psu")

ON = "voltage=5.0 V  current=0.5 A  apparent_power=2.5 VA"


def test_board_commands_in_local_mode(tmp_path: Path):
    """Upstream's `j board power` switches the board's supply; `j psu` is the same supply; power-cycle answers."""
    out = local_shell(
        write_config(tmp_path, config=CONFIG),
        """
        j psu voltage 5
        j board device voltage
        j board power on
        j board power read
        j board device output
        j board power-cycle
        j board power off
        j board device output
        """,
    )
    assert "5.000\n" in out
    assert ON in out
    assert f"on\n{IDN}\n" in out  # output after `power on`, then the power-cycle's answer
    assert out.rstrip().splitlines()[-2] == "off", out  # before the shell's DONE line


def test_board_workflow_through_jmp_run(exporter: Exporter):
    """A client of a `jmp run` exporter runs the workflow; the board's supply and `psu` are one driver."""
    with exporter.client() as client:
        assert client.board.power_cycle() == IDN
        assert client.board.device.get_output() is True
        client.psu.set_output(False)
        assert client.board.device.get_output() is False
        assert client.psu.uuid == client.board.device.uuid


def test_board_without_its_supply_stops_jmp_shell(tmp_path: Path):
    """A board whose `device` child is missing fails before the shell starts, naming the child."""
    config = write_config(tmp_path, config=CONFIG)
    parsed = yaml.safe_load(config.read_text())
    del parsed["export"]["board"]["children"]
    del parsed["export"]["psu"]  # a ref: to the missing child would fail first
    config.write_text(yaml.safe_dump(parsed, sort_keys=False))
    result = run([JMP, "shell", "--exporter-config", str(config), "--", "echo", "SHELL STARTED"], cwd=tmp_path)
    assert result.returncode != 0
    assert "children: `device` is missing" in " ".join(result.stdout.split())  # the terminal may wrap it
    assert "SHELL STARTED" not in result.stdout
