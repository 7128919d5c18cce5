# mypy: allow-untyped-defs
"""The bench board (a supply and a power switch), through whatever exporter serves it (see conftest.py)."""

from jumpstarter_testing.pytest import JumpstarterTest


class TestBoard(JumpstarterTest):
    """The exporter's `board` driver, as `client.board`."""

    selector = "board=my-bench"  # the exporter labels to lease when run through a controller

    def test_power_cycle_brings_the_device_back(self, client):
        """After a power cycle the device answers *IDN? again."""
        try:
            assert client.board.power_cycle() == client.board.device.identify()
        finally:
            client.board.power.off()
