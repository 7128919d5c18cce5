"""Hardware tests: the layer an author copies to test a real device through whatever exporter serves it.

They use `jumpstarter-testing`'s `JumpstarterTest`, whose `client` fixture connects to the exporter
of the surrounding `jmp shell` (the JUMPSTARTER_HOST environment variable). Run them inside one:

    uv run jmp shell --exporter-config examples/exporter.yaml -- pytest tests/hardware
    uv run jmp shell --tls-grpc 127.0.0.1:PORT --tls-grpc-insecure --passphrase SECRET -- pytest tests/hardware
    uv run jmp shell --client default --selector board=my-bench -- pytest tests/hardware

Only direct mode (`--tls-grpc`) and leases pass pytest's exit status on; local mode always exits 0.
Outside a shell these tests are skipped: `uv run pytest` runs them through tests/direct_mode_test.py.
"""

import hashlib
import os
from pathlib import Path

import pytest
from jumpstarter_driver_power.common import PowerReading
from jumpstarter_testing.pytest import JumpstarterTest

# JumpstarterTest would otherwise try to lease an exporter through the default client config; in 0.9 it
# only falls back to that on RuntimeError, and a missing JUMPSTARTER_HOST raises something else.
if "JUMPSTARTER_HOST" not in os.environ:
    pytest.skip(
        "hardware tests run inside a jmp shell: uv run jmp shell --exporter-config examples/exporter.yaml -- "
        "pytest tests/hardware",
        allow_module_level=True,
    )


class TestBench(JumpstarterTest):
    """One bench: the exporter's `power` and `custom` drivers, as `client.power` and `client.custom`."""

    selector = "board=my-bench"  # the exporter labels to lease when run through a controller

    def test_power_cycle(self, client):
        """Power on shows the load; power off drops it to zero."""
        client.power.on()
        # read() is a streaming call: read it to the end (list), never leave it half-read with next().
        readings = list(client.power.read())
        assert readings and all(reading.voltage > 0 for reading in readings)
        client.power.off()
        assert list(client.power.read()) == [PowerReading(voltage=0.0, current=0.0)]

    def test_configure_round_trip(self, client):
        """Settings written to the device read back unchanged."""
        client.custom.configure("hardware-test", 4)
        state = client.custom.state()
        assert (state.settings.label, state.settings.level) == ("hardware-test", 4)

    def test_device_streams_data(self, client):
        """The device's byte stream delivers what was asked."""
        assert len(client.custom.read_random(100_000)) == 100_000

    def test_upload_reaches_the_device(self, client, tmp_path: Path):
        """A file uploaded to the device is stored with the same size and hash."""
        image = tmp_path / "image.bin"
        image.write_bytes(os.urandom(64 * 1024))
        result = client.custom.upload(image, "hardware-test.bin")
        assert (result.size, result.sha256) == (64 * 1024, hashlib.sha256(image.read_bytes()).hexdigest())
