# mypy: allow-untyped-defs
"""The bench power supply, through whatever exporter serves it (see conftest.py for how to run these)."""

import pytest
from jumpstarter.client.core import DriverError
from jumpstarter_testing.pytest import JumpstarterTest


class TestDevice(JumpstarterTest):
    """The exporter's `device` driver, as `client.device`: the example's simulator, or your instrument."""

    selector = "board=my-bench"  # the exporter labels to lease when run through a controller

    def test_identifies_itself(self, client):
        """*IDN? answers maker, model, serial and firmware."""
        assert len(client.device.identify().split(",")) == 4

    def test_setpoint_reaches_the_output(self, client):
        """With the output on, the measured voltage follows the setpoint; off, it drops to zero."""
        client.device.set_voltage(3.3)
        client.device.set_output(True)
        try:
            assert client.device.measure().voltage == pytest.approx(3.3, abs=0.05)
        finally:
            client.device.set_output(False)  # leave the bench safe, whatever happened
        assert client.device.measure().voltage == pytest.approx(0, abs=0.05)

    def test_measurement_stream(self, client):
        """The stream delivers the readings asked for, and ends."""
        assert len(list(client.device.measure_stream(3, 0.1))) == 3

    def test_protection_refuses_more_than_max_voltage(self, client):
        """The instrument itself refuses a setpoint above the protection the driver programmed (max_voltage)."""
        client.device.set_output(False)  # nothing reaches the device under test, whatever the instrument does
        level = float(client.device.query("VOLT:PROT?"))
        if level >= 30:
            pytest.skip("max_voltage is the supply's maximum: nothing above it to refuse")
        with pytest.raises(DriverError, match="refused"):
            client.device.query(f"VOLT {level + 0.5:.3f}")
        assert client.device.get_voltage() <= level

    def test_console_reaches_the_same_instrument(self, client):
        """The raw console answers like the driver does."""
        with client.device.console() as console:
            assert console.exchange("*IDN?") == client.device.identify()
