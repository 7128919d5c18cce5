# mypy: allow-untyped-defs
"""The power switch on its device, through whatever exporter serves it (see conftest.py for how to run these)."""

from jumpstarter_driver_power.common import PowerReading
from jumpstarter_testing.pytest import JumpstarterTest


class TestPower(JumpstarterTest):
    """The exporter's `power` driver, as `client.power`."""

    selector = "board=my-bench"  # the exporter labels to lease when run through a controller

    def test_power_cycle(self, client):
        """Power on shows the load; power off drops it to zero."""
        client.power.on()
        # read() is a streaming call: read it to the end (list), never leave it half-read with next().
        readings = list(client.power.read())
        assert readings and all(reading.voltage > 0 for reading in readings)
        client.power.off()
        assert list(client.power.read()) == [PowerReading(voltage=0.0, current=0.0)]
